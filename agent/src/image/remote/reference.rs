//! Image references for pulls: the manifests crate owns the grammar and the
//! normalisation (`busybox` → `docker.io/library/busybox:latest`), so that
//! what `berth validate` accepts is exactly what the puller resolves.

pub use manifests::reference::{ImageReference, ReferenceError};
