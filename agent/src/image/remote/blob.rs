//! Downloading one blob from one endpoint into the content store: streamed
//! (never a whole layer in memory), hashed while written on a blocking
//! thread, resumed with an HTTP Range request from whatever an earlier
//! attempt left in `ingest/`, verified before it becomes visible.

use oci_spec::image::Descriptor;
use reqwest::StatusCode;
use reqwest::header::{self, HeaderMap, HeaderValue};

use super::body::next_chunk;
use super::progress::{LayerTee, TeeSink};
use super::request::shown;
use super::session::Session;
use super::{Progress, RemoteError};
use crate::image::content::{BlobHealth, ContentError, ContentStore, Ingest};

/// Times one endpoint is asked again after a transfer broke off having made
/// progress (each time resuming where it stopped): edge links drop.
const RESUMES_PER_HOST: u32 = 2;
/// Chunks buffered between the network and the writer thread.
const WRITE_QUEUE: usize = 16;

/// What a download did.
pub struct Downloaded {
    /// Body bytes received over the network.
    pub transferred: u64,
}

/// How one blob is downloaded from one host.
#[derive(Clone, Copy)]
pub struct Download<'a> {
    /// Where a transfer from the first byte also goes.
    pub tee: Option<&'a dyn LayerTee>,
    /// Whether this is the last host to try.
    pub last_host: bool,
    /// Re-hash a blob already stored; a corrupt one is deleted and fetched.
    pub verify_stored: bool,
}

/// Downloads `descriptor` from `session` into `store` (skipping it when
/// already stored, unless `verify_stored` finds it corrupt). A broken transfer leaves the bytes received so far in
/// `ingest/` for the next attempt (they are verified with the rest at
/// commit); a digest mismatch leaves nothing. A transfer that starts from
/// the first byte also feeds `tee`, which learns at the end whether the
/// blob verified. A host that stalls is resumed only when it is the
/// `last_host`: otherwise the next host takes over (resuming from what this
/// one sent) rather than waiting out another stall here.
pub async fn download(
    session: &Session<'_>,
    store: &ContentStore,
    descriptor: &Descriptor,
    progress: &dyn Progress,
    how: Download<'_>,
) -> Result<Downloaded, RemoteError> {
    let Download {
        tee,
        last_host,
        verify_stored,
    } = how;
    let digest = descriptor.digest().clone();
    let size = descriptor.size();
    let mut transferred = 0;
    let mut resumes_left = RESUMES_PER_HOST;
    let mut restarted_after_mismatch = false;
    loop {
        let ingest = open_ingest(store, descriptor, verify_stored).await?;
        let Some(ingest) = ingest else {
            return Ok(Downloaded { transferred });
        };
        let offset = ingest.offset();
        // Only a transfer of the whole blob can feed a tee.
        let sink = tee
            .filter(|_| offset == 0)
            .and_then(|tee| tee.open(descriptor));
        let outcome = if offset == size {
            // An earlier attempt got every byte but did not commit.
            Transfer::Complete(ingest, sink)
        } else {
            transfer(
                session,
                ingest,
                sink,
                descriptor,
                progress,
                &mut transferred,
            )
            .await?
        };
        match outcome {
            Transfer::Complete(ingest, sink) => match blocking(move || finish(ingest, sink)).await?
            {
                Ok(()) => return Ok(Downloaded { transferred }),
                // Bytes resumed from an earlier attempt may be what is wrong
                // (another host's, or torn by a crash): try once from zero.
                Err(ContentError::DigestMismatch { .. } | ContentError::SizeMismatch { .. })
                    if offset > 0 && !restarted_after_mismatch =>
                {
                    restarted_after_mismatch = true;
                }
                Err(err) => return Err(RemoteError::content(&digest, err)),
            },
            Transfer::Broken {
                error,
                ingest,
                progressed,
            } => {
                keep_if_not_empty(ingest, descriptor).await?;
                if !progressed || resumes_left == 0 || (error.is_stall() && !last_host) {
                    return Err(error);
                }
                resumes_left -= 1;
                tracing::info!(%digest, endpoint = %session.name(), error = %crate::status::chain(&error), "download broke off; resuming");
            }
        }
    }
}

/// Verifies a complete blob; then hands it to the sink, which commits it
/// with the layer built from the same bytes, or commits it here.
fn finish(ingest: Ingest, sink: Option<Box<dyn TeeSink>>) -> Result<(), ContentError> {
    let verified = ingest.verify()?;
    match sink {
        Some(sink) => sink.finish(Some(verified)),
        None => {
            verified.commit()?;
        }
    }
    Ok(())
}

enum Transfer {
    /// Every byte is in the ingest (and was passed to the sink, if any);
    /// commit verifies them.
    Complete(Ingest, Option<Box<dyn TeeSink>>),
    /// The transfer stopped early (or never started); the ingest holds what
    /// arrived.
    Broken {
        error: RemoteError,
        ingest: Ingest,
        progressed: bool,
    },
}

/// Keeps a partial download for a later resume, but not an empty one: a
/// host that was down must not leave files behind.
async fn keep_if_not_empty(ingest: Ingest, descriptor: &Descriptor) -> Result<(), RemoteError> {
    if ingest.offset() > 0 {
        return Ok(());
    }
    blocking(move || ingest.abort())
        .await?
        .map_err(|err| RemoteError::content(descriptor.digest(), err))
}

async fn open_ingest(
    store: &ContentStore,
    descriptor: &Descriptor,
    verify_stored: bool,
) -> Result<Option<Ingest>, RemoteError> {
    let store = store.clone();
    let digest = descriptor.digest().clone();
    let size = descriptor.size();
    blocking(move || {
        let ingest = store.ingest(&digest, Some(size))?;
        // Another pull may have finished this blob while we waited for it.
        if store.contains(&digest)? {
            // The ingest lock is held: no writer of this blob runs meanwhile.
            match verify_stored.then(|| store.verify(&digest)).transpose()? {
                Some(BlobHealth::Corrupt { actual, .. }) => {
                    tracing::warn!(%digest, %actual, "stored blob is corrupt; fetching it again");
                    store.delete(&digest)?;
                }
                Some(BlobHealth::Missing) => {}
                None | Some(BlobHealth::Intact) => {
                    ingest.abort()?;
                    return Ok(None);
                }
            }
        }
        Ok(Some(ingest))
    })
    .await?
    .map_err(|err| RemoteError::content(descriptor.digest(), err))
}

async fn transfer(
    session: &Session<'_>,
    mut ingest: Ingest,
    mut sink: Option<Box<dyn TeeSink>>,
    descriptor: &Descriptor,
    progress: &dyn Progress,
    transferred: &mut u64,
) -> Result<Transfer, RemoteError> {
    let digest = descriptor.digest();
    let size = descriptor.size();
    let offset = ingest.offset();
    let mut headers = HeaderMap::new();
    if offset > 0 {
        let range = HeaderValue::from_str(&format!("bytes={offset}-"))
            .expect("a byte range is a valid header value");
        headers.insert(header::RANGE, range);
    }
    let broken = |error, ingest| {
        Ok(Transfer::Broken {
            error,
            ingest,
            progressed: false,
        })
    };
    let mut response = match session.get("blobs", digest.as_ref(), headers).await {
        Ok(response) => response,
        Err(error) => return broken(error, ingest),
    };
    let status = response.status();
    let url = shown(response.url());
    match status {
        StatusCode::PARTIAL_CONTENT if offset > 0 => {
            if range_start(response.headers()) != Some(offset) {
                let error = RemoteError::Protocol {
                    url,
                    reason: format!("asked for bytes from {offset}, got another range"),
                };
                return broken(error, ingest);
            }
        }
        StatusCode::OK if offset > 0 => {
            // The server ignored the Range header: start over.
            ingest = blocking(move || ingest.restart().map(|()| ingest))
                .await?
                .map_err(|err| RemoteError::content(digest, err))?;
        }
        StatusCode::OK => {}
        _ => return broken(session.status_error(response).await, ingest),
    }
    let start = ingest.offset();
    progress.blob_progress(digest, start, size);

    let (sender, mut receiver) = tokio::sync::mpsc::channel::<bytes::Bytes>(WRITE_QUEUE);
    let writer = tokio::task::spawn_blocking(move || {
        while let Some(chunk) = receiver.blocking_recv() {
            if let Err(err) = ingest.write_all(&chunk) {
                return (ingest, sink, Err(err));
            }
            // A sink that wants no more is dropped (= not verified).
            if sink.as_mut().is_some_and(|tee| !tee.write(&chunk)) {
                sink = None;
            }
        }
        if let Some(tee) = sink.as_mut() {
            tee.end();
        }
        (ingest, sink, Ok(()))
    });
    let mut received = 0u64;
    let network = loop {
        match next_chunk(&mut response, &url, session.stall()).await {
            Ok(Some(chunk)) => {
                received += chunk.len() as u64;
                *transferred += chunk.len() as u64;
                if start + received > size {
                    break Err(RemoteError::Protocol {
                        url: url.clone(),
                        reason: format!("blob {digest} is longer than its {size} bytes"),
                    });
                }
                if let Some(rate) = session.rate() {
                    rate.take(chunk.len()).await;
                }
                if sender.send(chunk).await.is_err() {
                    break Ok(()); // the writer failed; its error is reported below
                }
                progress.blob_progress(digest, start + received, size);
            }
            Ok(None) => break Ok(()),
            Err(err) => break Err(err),
        }
    };
    drop(sender);
    let (ingest, mut sink, written) = writer.await.map_err(|err| RemoteError::Internal {
        reason: format!("blob writer thread: {err}"),
    })?;
    let complete = written.is_ok() && matches!(network, Ok(())) && ingest.offset() == size;
    if !complete && let Some(sink) = sink.take() {
        sink.finish(None);
    }
    written.map_err(|err| RemoteError::content(digest, err))?;
    match network {
        Ok(()) if ingest.offset() == size => Ok(Transfer::Complete(ingest, sink)),
        Ok(()) => Ok(Transfer::Broken {
            error: RemoteError::Protocol {
                url,
                reason: format!(
                    "the body of blob {digest} ended after {} of {size} bytes",
                    ingest.offset()
                ),
            },
            ingest,
            progressed: received > 0,
        }),
        Err(error) => Ok(Transfer::Broken {
            error,
            ingest,
            progressed: received > 0,
        }),
    }
}

/// The first byte of a `Content-Range: bytes START-END/TOTAL` header.
fn range_start(headers: &HeaderMap) -> Option<u64> {
    let value = headers.get(header::CONTENT_RANGE)?.to_str().ok()?;
    let range = value.trim().strip_prefix("bytes ")?;
    range.split('-').next()?.trim().parse().ok()
}

async fn blocking<T: Send + 'static>(
    work: impl FnOnce() -> T + Send + 'static,
) -> Result<T, RemoteError> {
    tokio::task::spawn_blocking(work)
        .await
        .map_err(|err| RemoteError::Internal {
            reason: format!("blocking task: {err}"),
        })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn content_range_start_is_parsed() {
        let mut headers = HeaderMap::new();
        headers.insert(
            header::CONTENT_RANGE,
            HeaderValue::from_static("bytes 1024-4095/4096"),
        );
        assert_eq!(range_start(&headers), Some(1024));
        headers.insert(
            header::CONTENT_RANGE,
            HeaderValue::from_static("items 1-2/3"),
        );
        assert_eq!(range_start(&headers), None);
        assert_eq!(range_start(&HeaderMap::new()), None);
    }
}
