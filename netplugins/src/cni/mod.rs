//! The `cni` driver (work in progress).

#[derive(Debug, thiserror::Error)]
pub enum CniError {
    #[error("cni: {0}")]
    Other(String),
}
