//! Reading registry responses without trusting them. Every wait on the
//! network is bounded by the stall timeout (no byte for that long: the host
//! is given up, and the next one tried), and a document read whole is
//! capped while it is read, never after, so a broken or hostile host can
//! neither wedge a pull nor make the agent's memory grow.

use std::time::Duration;

use bytes::Bytes;
use reqwest::Response;

use super::RemoteError;

/// A manifest or an index (containerd's limit as well).
pub const MAX_MANIFEST_BYTES: u64 = 4 << 20;
/// An image config blob: real ones are kilobytes, the largest seen a few
/// hundred (long histories); it is parsed whole in memory.
pub const MAX_CONFIG_BYTES: u64 = 8 << 20;
/// A token server's answer (a JWT with its claims is a few kilobytes).
pub const MAX_TOKEN_BYTES: u64 = 1 << 20;
/// How much of an error body is read: enough for the excerpt in the
/// message; the rest is never read.
const ERROR_EXCERPT_BYTES: u64 = 4 << 10;
/// A whole document (manifest, token) must arrive within this, however
/// slowly it trickles: the stall timeout alone would let a host that sends
/// one byte at a time hold a pull for days.
const DOCUMENT_DEADLINE: Duration = Duration::from_secs(120);

/// The next chunk of `response`'s body; `None` at its end.
pub(super) async fn next_chunk(
    response: &mut Response,
    url: &str,
    stall: Duration,
) -> Result<Option<Bytes>, RemoteError> {
    match tokio::time::timeout(stall, response.chunk()).await {
        Ok(Ok(chunk)) => Ok(chunk),
        Ok(Err(err)) => Err(RemoteError::http(url, err)),
        Err(_) => Err(RemoteError::Stalled {
            url: url.to_owned(),
            awaited: "data",
            after: stall,
        }),
    }
}

/// The whole body of `response`, a `what` of at most `limit` bytes. A
/// declared length over the limit is refused before reading; a body that
/// grows past it is refused at that point.
pub(super) async fn read_capped(
    mut response: Response,
    url: &str,
    what: &'static str,
    limit: u64,
    stall: Duration,
) -> Result<Vec<u8>, RemoteError> {
    let too_large = || RemoteError::TooLarge {
        url: url.to_owned(),
        what,
        limit,
    };
    if response.content_length().is_some_and(|len| len > limit) {
        return Err(too_large());
    }
    let read = async {
        let mut body = Vec::new();
        while let Some(chunk) = next_chunk(&mut response, url, stall).await? {
            if (body.len() + chunk.len()) as u64 > limit {
                return Err(too_large());
            }
            body.extend_from_slice(&chunk);
        }
        Ok(body)
    };
    tokio::time::timeout(DOCUMENT_DEADLINE, read)
        .await
        .unwrap_or_else(|_| {
            Err(RemoteError::TooSlow {
                url: url.to_owned(),
                what,
                after: DOCUMENT_DEADLINE,
            })
        })
}

/// The first bytes of an error body, as text: whatever arrives within one
/// stall period, up to a few kilobytes. Never an error: the status is the
/// error, the body only explains it.
pub(super) async fn excerpt(mut response: Response, stall: Duration) -> String {
    let deadline = tokio::time::Instant::now() + stall;
    let mut body = Vec::new();
    while (body.len() as u64) < ERROR_EXCERPT_BYTES {
        match tokio::time::timeout_at(deadline, response.chunk()).await {
            Ok(Ok(Some(chunk))) => body.extend_from_slice(&chunk),
            _ => break,
        }
    }
    body.truncate(usize::try_from(ERROR_EXCERPT_BYTES).unwrap_or(usize::MAX));
    String::from_utf8_lossy(&body).into_owned()
}
