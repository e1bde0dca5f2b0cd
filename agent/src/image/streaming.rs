//! Streaming unpack: each layer is unpacked while it downloads, in one pass
//! over the network bytes, instead of download-then-unpack.
//!
//! ```text
//! network ─► blob writer ─┬─► content/ingest/<hex>.partial ─► verify digest ─► rename (blob stored)
//!                         └─► channel ─► unpack task: gunzip ─► untar into staging ─► diffID
//! finish: every layer whose blob verified and whose diffID matches the
//!         config is committed, with one syncfs for all, then renamed
//! ```
//!
//! The rules of the two stores hold as before: the content store keeps only
//! verified blobs, and a snapshot appears only after both the blob's digest
//! and the layer's diffID checked out. Anything unusual — a resumed or
//! retried download, a corrupt or hostile layer, an unpack error — throws
//! the streamed work away; the layer is then unpacked from the stored blob
//! by [`ImageService::install_fetched`](super::service::ImageService::install_fetched),
//! which reports the real error. Streaming is only ever a shortcut.
//!
//! As many layers unpack at once as download at once (`max-concurrent-downloads`);
//! the channel's bound makes a download wait for its unpacker.

use std::collections::HashMap;
use std::io;
use std::sync::mpsc::{Receiver, Sender, SyncSender, channel, sync_channel};
use std::sync::{Arc, Mutex};

use oci_spec::image::{Descriptor, Digest, ImageConfiguration};

use super::content::{ContentStore, VerifiedIngest};
use super::meta::{Lease, MetaStore};
use super::remote::{LayerTee, TeeSink};
use super::snapshot::{self, Filled, LayerPlan, SnapshotError, Snapshotter};
use super::unpack::pipe::ChunkReader;

/// Network chunks buffered between a download and its unpacker.
const QUEUE: usize = 64;

type UnpackTask = tokio::task::JoinHandle<Result<Option<Filled>, SnapshotError>>;

/// The [`LayerTee`] of one pull: plans the layers once the config is
/// known, starts an unpack task per layer download, and, in
/// [`StreamingUnpack::finish`], waits for them and records what they built.
pub struct StreamingUnpack<'a> {
    content: &'a ContentStore,
    snapshots: &'a Snapshotter,
    meta: &'a MetaStore,
    lease: &'a Lease,
    /// Layers worth streaming (no snapshot yet), by blob digest.
    plans: Mutex<HashMap<Digest, LayerPlan>>,
    tasks: Mutex<Vec<(LayerPlan, UnpackTask)>>,
    /// Verified layer blobs the downloads handed over, committed with the
    /// layers in [`StreamingUnpack::finish`].
    blobs: Arc<Mutex<Vec<VerifiedIngest>>>,
}

impl<'a> StreamingUnpack<'a> {
    /// Snapshots created are added to `lease` first, so GC keeps them.
    pub fn new(
        content: &'a ContentStore,
        snapshots: &'a Snapshotter,
        meta: &'a MetaStore,
        lease: &'a Lease,
    ) -> Self {
        Self {
            content,
            snapshots,
            meta,
            lease,
            plans: Mutex::new(HashMap::new()),
            tasks: Mutex::new(Vec::new()),
            blobs: Arc::new(Mutex::new(Vec::new())),
        }
    }

    /// Waits for every unpack task, then makes the verified blobs and the
    /// layers built from them durable with one `syncfs` (once no unpack is
    /// writing any more: a sync meanwhile would stall every writer on the
    /// filesystem journal), renames them into place and records the layers'
    /// sizes. Failures are only logged: a layer missing afterwards is
    /// unpacked from the stored blob, and that reports the error. Returns
    /// how many layers were unpacked while they downloaded.
    pub async fn finish(self) -> usize {
        let tasks = std::mem::take(&mut *lock(&self.tasks));
        let mut filled = Vec::new();
        for (plan, task) in tasks {
            match task.await {
                Ok(Ok(Some(layer))) => filled.push((plan.chain_id, layer)),
                Ok(Ok(None)) => {}
                Ok(Err(err)) => tracing::debug!(
                    layer = %plan.blob,
                    error = %crate::status::chain(&err),
                    "streaming unpack failed; the stored blob is unpacked instead"
                ),
                Err(err) => {
                    tracing::warn!(layer = %plan.blob, %err, "a streaming unpack task stopped unexpectedly")
                }
            }
        }
        let blobs = std::mem::take(&mut *lock(&self.blobs));
        if filled.is_empty() && blobs.is_empty() {
            return 0;
        }
        let (content, snapshots, meta) = (
            self.content.clone(),
            self.snapshots.clone(),
            self.meta.clone(),
        );
        let committed = tokio::task::spawn_blocking(move || {
            commit_all(&content, &snapshots, &meta, blobs, filled)
        })
        .await;
        match committed {
            Ok(Ok(layers)) => layers,
            Ok(Err(err)) => {
                tracing::warn!(error = %err, "committing a streamed pull failed; what is missing is fetched or unpacked again");
                0
            }
            Err(err) => {
                tracing::warn!(%err, "committing streamed layers stopped unexpectedly");
                0
            }
        }
    }
}

/// One `syncfs`, then the blobs, then the layers, each directory synced
/// once; then the layers' sizes in one transaction. Returns the layers
/// committed.
fn commit_all(
    content: &ContentStore,
    snapshots: &Snapshotter,
    meta: &MetaStore,
    blobs: Vec<VerifiedIngest>,
    filled: Vec<(Digest, Filled)>,
) -> Result<usize, String> {
    let discard = |filled: Vec<(Digest, Filled)>| {
        for (_, layer) in filled {
            layer.discard();
        }
    };
    if let Err(err) = snapshots.sync_filesystem() {
        discard(filled);
        return Err(crate::status::chain(&err));
    }
    let mut committed_blobs = 0;
    for blob in blobs {
        let digest = blob.digest().clone();
        match blob.commit_synced() {
            Ok(_) => committed_blobs += 1,
            Err(err) => {
                tracing::warn!(%digest, error = %crate::status::chain(&err), "could not store a verified blob")
            }
        }
    }
    if committed_blobs > 0 {
        content
            .sync_blob_dir()
            .map_err(|err| crate::status::chain(&err))?;
    }
    let (chain_ids, layers): (Vec<Digest>, Vec<Filled>) = filled.into_iter().unzip();
    let sizes = snapshots
        .publish_synced(layers)
        .map_err(|err| crate::status::chain(&err))?;
    let recorded: Vec<(&Digest, u64)> = chain_ids
        .iter()
        .zip(sizes)
        .filter_map(|(chain_id, size)| Some((chain_id, size?)))
        .collect();
    // Sizes not recorded are measured when the image is recorded.
    meta.record_snapshots(&recorded)
        .map_err(|err| crate::status::chain(&err))?;
    Ok(recorded.len())
}

fn lock<T>(mutex: &Mutex<T>) -> std::sync::MutexGuard<'_, T> {
    mutex
        .lock()
        .unwrap_or_else(std::sync::PoisonError::into_inner)
}

impl LayerTee for StreamingUnpack<'_> {
    fn begin(&self, config: &ImageConfiguration, layers: &[Descriptor]) {
        let diff_ids: Option<Vec<Digest>> = config
            .rootfs()
            .diff_ids()
            .iter()
            .map(|d| d.parse().ok())
            .collect();
        // A config that does not fit the manifest is reported when the
        // image is recorded; nothing to stream here.
        let Some(diff_ids) = diff_ids.filter(|ids| ids.len() == layers.len()) else {
            return;
        };
        let chain_ids = snapshot::chain_ids(&diff_ids);
        let mut plans = HashMap::new();
        for ((layer, diff_id), chain_id) in layers.iter().zip(diff_ids).zip(chain_ids) {
            if self.snapshots.exists(&chain_id).unwrap_or(true) {
                continue;
            }
            plans.entry(layer.digest().clone()).or_insert(LayerPlan {
                blob: layer.digest().clone(),
                media_type: layer.media_type().to_string(),
                diff_id,
                chain_id,
            });
        }
        let chain_ids: Vec<&Digest> = plans.values().map(|plan| &plan.chain_id).collect();
        if let Err(err) = self.lease.add_all(&[], &chain_ids) {
            tracing::debug!(error = %crate::status::chain(&err), "cannot protect streamed snapshots; not streaming");
            return;
        }
        *lock(&self.plans) = plans;
    }

    fn open(&self, layer: &Descriptor) -> Option<Box<dyn TeeSink>> {
        let plan = lock(&self.plans).get(layer.digest()).cloned()?;
        let runtime = tokio::runtime::Handle::try_current().ok()?;
        let (data, data_rx) = sync_channel(QUEUE);
        let (verdict, verdict_rx) = channel();
        let snapshots = self.snapshots.clone();
        let task_plan = plan.clone();
        let task = runtime
            .spawn_blocking(move || unpack_streamed(&snapshots, &task_plan, data_rx, &verdict_rx));
        lock(&self.tasks).push((plan, task));
        Some(Box::new(Sink {
            data: Some(data),
            verdict,
            blobs: Arc::clone(&self.blobs),
        }))
    }
}

/// The unpack task: fills a staging directory from the streamed bytes and
/// keeps it only when the download says the blob verified.
fn unpack_streamed(
    snapshots: &Snapshotter,
    plan: &LayerPlan,
    data: Receiver<io::Result<bytes::Bytes>>,
    verdict: &Receiver<bool>,
) -> Result<Option<Filled>, SnapshotError> {
    let filled = snapshots.fill_from(ChunkReader::new(data), plan);
    // A dropped sink (a broken download) counts as not verified.
    let verified = verdict.recv().unwrap_or(false);
    match filled? {
        Some(filled) if verified => Ok(Some(filled)),
        Some(filled) => {
            filled.discard();
            Ok(None)
        }
        None => Ok(None),
    }
}

struct Sink {
    data: Option<SyncSender<io::Result<bytes::Bytes>>>,
    verdict: Sender<bool>,
    blobs: Arc<Mutex<Vec<VerifiedIngest>>>,
}

impl TeeSink for Sink {
    fn write(&mut self, chunk: &bytes::Bytes) -> bool {
        // A cheap clone: `Bytes` shares the buffer.
        self.data
            .as_ref()
            .is_some_and(|data| data.send(Ok(chunk.clone())).is_ok())
    }

    fn end(&mut self) {
        self.data = None;
    }

    fn finish(self: Box<Self>, blob: Option<VerifiedIngest>) {
        let Sink {
            data,
            verdict,
            blobs,
        } = *self;
        drop(data);
        let verified = blob.is_some();
        if let Some(blob) = blob {
            lock(&blobs).push(blob);
        }
        // The task may have given up already; then nobody listens.
        let _ = verdict.send(verified);
    }
}
