//! What a scrape costs the agent: at most one computation per
//! [`FRESH_FOR`] however many scrapers there are (they share it), done on
//! a blocking thread from a copy of the status, so neither the controller
//! nor the pod workers ever wait for a scrape. The image store's size is
//! measured at most every [`STORE_TTL`], each writable layer's at most
//! every [`DISK_TTL`].

use std::sync::{Arc, Mutex, PoisonError};
use std::time::{Duration, Instant};

use super::exposition::{self, StoreBytes};
use super::sample::Sampler;
use crate::image::service::ImageService;
use crate::paths::Paths;
use crate::runtime::CgroupLayout;
use crate::status::StatusStore;

/// Scrapes within this long of the last computation get its text.
pub const FRESH_FOR: Duration = Duration::from_secs(1);
pub const STORE_TTL: Duration = Duration::from_secs(30);
pub const DISK_TTL: Duration = Duration::from_secs(30);

#[derive(Clone)]
pub struct Endpoint {
    inner: Arc<Inner>,
}

struct Inner {
    status: StatusStore,
    sampler: Sampler,
    images: ImageService,
    store: Mutex<Option<(Instant, StoreBytes)>>,
    last: tokio::sync::Mutex<Option<(Instant, Arc<String>)>>,
}

impl Endpoint {
    pub fn new(
        status: StatusStore,
        paths: Paths,
        layout: Option<CgroupLayout>,
        images: ImageService,
    ) -> Self {
        Self {
            inner: Arc::new(Inner {
                status,
                sampler: Sampler::new(paths, layout, DISK_TTL),
                images,
                store: Mutex::default(),
                last: tokio::sync::Mutex::default(),
            }),
        }
    }

    /// The text of a scrape; `Err` only when the agent is shutting down.
    pub async fn scrape(&self) -> Result<Arc<String>, &'static str> {
        let mut last = self.inner.last.lock().await;
        if let Some((at, text)) = &*last
            && at.elapsed() < FRESH_FOR
        {
            return Ok(Arc::clone(text));
        }
        let doc = self.inner.status.snapshot();
        let inner = Arc::clone(&self.inner);
        let text = tokio::task::spawn_blocking(move || {
            let sample = inner.sampler.sample(&doc, |_, _| true);
            exposition::encode(&sample, &doc, inner.store_bytes())
        })
        .await
        .map_err(|_| "the agent is shutting down")?;
        let text = Arc::new(text);
        *last = Some((Instant::now(), Arc::clone(&text)));
        Ok(text)
    }
}

impl Inner {
    fn store_bytes(&self) -> Option<StoreBytes> {
        let mut cached = self.store.lock().unwrap_or_else(PoisonError::into_inner);
        if let Some((at, bytes)) = *cached
            && at.elapsed() < STORE_TTL
        {
            return Some(bytes);
        }
        match measure_store(&self.images) {
            Ok(bytes) => {
                *cached = Some((Instant::now(), bytes));
                Some(bytes)
            }
            Err(err) => {
                tracing::debug!(error = %crate::status::chain(&err), "measuring the image store");
                cached.map(|(_, bytes)| bytes)
            }
        }
    }
}

/// Blob bytes as stored; snapshot bytes as recorded when each layer was
/// unpacked (walking every snapshot would cost far more).
pub fn measure_store(
    images: &ImageService,
) -> Result<StoreBytes, crate::image::service::ServiceError> {
    let content = images.content();
    let mut bytes = StoreBytes::default();
    for digest in content.list()? {
        bytes.content += content.size(&digest)?.unwrap_or(0);
    }
    let meta = images.meta();
    for chain_id in meta.recorded_snapshots()? {
        bytes.snapshots += meta.snapshot_size(chain_id.as_ref())?.unwrap_or(0);
    }
    Ok(bytes)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::status::{AgentInfo, AgentState};

    #[tokio::test]
    async fn scrapes_close_together_share_one_computation() {
        let tmp = tempfile::tempdir().expect("tmp");
        let paths = Paths::new(&tmp.path().join("root"), &tmp.path().join("run"));
        let images = ImageService::open(&paths).expect("a store");
        let status = StatusStore::new(
            AgentInfo {
                pid: 1,
                version: "test".into(),
                state: AgentState::Ready,
                started_at: String::new(),
                updated_at: String::new(),
                manifests: tmp.path().join("m"),
                resolved_manifests: None,
                desired_revision: 0,
                source_error: None,
            },
            None,
        );
        let endpoint = Endpoint::new(status, paths, None, images);
        let (first, second) = tokio::join!(endpoint.scrape(), endpoint.scrape());
        let (first, second) = (first.expect("a scrape"), second.expect("a scrape"));
        assert!(Arc::ptr_eq(&first, &second), "computed twice");
        assert!(
            first.contains("berth_store_bytes{kind=\"content\"} 0"),
            "{first}"
        );
        assert!(first.contains("berth_pods{phase=\"Running\"} 0"), "{first}");
    }
}
