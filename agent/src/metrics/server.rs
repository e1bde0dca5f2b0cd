//! The HTTP side of the endpoint: `GET /metrics` on a TCP address or a
//! unix socket, HTTP/1.1, a bounded number of connections at once, and a
//! deadline for each request's headers, so a slow or idle client costs a
//! file descriptor for a while at most.

use std::convert::Infallible;
use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;

use bytes::Bytes;
use http_body_util::Full;
use hyper::{Method, Request, Response, StatusCode, body::Incoming, header};
use hyper_util::rt::{TokioIo, TokioTimer};
use tokio::io::{AsyncRead, AsyncWrite};
use tokio::net::{TcpListener, UnixListener};
use tokio::sync::Semaphore;
use tokio_util::sync::CancellationToken;

use super::ListenAddr;
use super::endpoint::Endpoint;
use super::exposition::CONTENT_TYPE;

/// Connections served at once; more wait to be accepted.
const MAX_CONNECTIONS: usize = 16;
const HEADER_TIMEOUT: Duration = Duration::from_secs(10);

#[derive(Debug, thiserror::Error)]
#[error("listening for metrics on {addr}")]
pub struct BindError {
    addr: ListenAddr,
    source: std::io::Error,
}

pub enum Listener {
    Tcp(TcpListener),
    /// The socket file is removed when serving stops.
    Unix(UnixListener, PathBuf),
}

/// Binds `addr`. A unix socket left by an earlier agent is replaced; the
/// new one is for its owner only (0600).
pub async fn bind(addr: &ListenAddr) -> Result<Listener, BindError> {
    let fail = |source| BindError {
        addr: addr.clone(),
        source,
    };
    match addr {
        ListenAddr::Tcp(socket) => TcpListener::bind(socket)
            .await
            .map(Listener::Tcp)
            .map_err(fail),
        ListenAddr::Unix(path) => {
            use std::os::unix::fs::{FileTypeExt, PermissionsExt};
            if std::fs::symlink_metadata(path).is_ok_and(|m| m.file_type().is_socket()) {
                std::fs::remove_file(path).map_err(fail)?;
            }
            let listener = UnixListener::bind(path).map_err(fail)?;
            std::fs::set_permissions(path, std::fs::Permissions::from_mode(0o600)).map_err(fail)?;
            Ok(Listener::Unix(listener, path.clone()))
        }
    }
}

/// Serves scrapes until `stop`.
pub async fn serve(listener: Listener, endpoint: Endpoint, stop: CancellationToken) {
    accept_until(&listener, endpoint, stop).await;
    if let Listener::Unix(_, path) = &listener {
        let _ = std::fs::remove_file(path);
    }
}

async fn accept_until(listener: &Listener, endpoint: Endpoint, stop: CancellationToken) {
    let slots = Arc::new(Semaphore::new(MAX_CONNECTIONS));
    loop {
        let permit = tokio::select! {
            () = stop.cancelled() => return,
            permit = Arc::clone(&slots).acquire_owned() => permit,
        };
        let Ok(permit) = permit else {
            return;
        };
        let accepted = tokio::select! {
            () = stop.cancelled() => return,
            accepted = accept(listener) => accepted,
        };
        match accepted {
            Ok(stream) => {
                let endpoint = endpoint.clone();
                tokio::spawn(async move {
                    serve_connection(stream, endpoint).await;
                    drop(permit);
                });
            }
            Err(err) => {
                // Out of descriptors and the like: back off instead of spinning.
                tracing::warn!(error = %err, "accepting a metrics connection");
                tokio::time::sleep(Duration::from_millis(100)).await;
            }
        }
    }
}

trait Stream: AsyncRead + AsyncWrite + Unpin + Send + 'static {}
impl<T: AsyncRead + AsyncWrite + Unpin + Send + 'static> Stream for T {}

async fn accept(listener: &Listener) -> std::io::Result<Box<dyn Stream>> {
    Ok(match listener {
        Listener::Tcp(l) => Box::new(l.accept().await?.0),
        Listener::Unix(l, _) => Box::new(l.accept().await?.0),
    })
}

async fn serve_connection(stream: Box<dyn Stream>, endpoint: Endpoint) {
    let service = hyper::service::service_fn(move |request| {
        let endpoint = endpoint.clone();
        async move { Ok::<_, Infallible>(respond(&endpoint, &request).await) }
    });
    let served = hyper::server::conn::http1::Builder::new()
        .timer(TokioTimer::new())
        .header_read_timeout(HEADER_TIMEOUT)
        .serve_connection(TokioIo::new(stream), service)
        .await;
    if let Err(err) = served {
        tracing::debug!(error = %err, "metrics connection ended");
    }
}

async fn respond(endpoint: &Endpoint, request: &Request<Incoming>) -> Response<Full<Bytes>> {
    if request.uri().path() != "/metrics" {
        return plain(StatusCode::NOT_FOUND, "only /metrics is served here\n");
    }
    if request.method() != Method::GET && request.method() != Method::HEAD {
        return plain(StatusCode::METHOD_NOT_ALLOWED, "use GET\n");
    }
    match endpoint.scrape().await {
        Ok(text) => {
            let mut response = Response::new(Full::new(Bytes::from(text.as_bytes().to_vec())));
            response.headers_mut().insert(
                header::CONTENT_TYPE,
                header::HeaderValue::from_static(CONTENT_TYPE),
            );
            response
        }
        Err(why) => plain(StatusCode::SERVICE_UNAVAILABLE, why),
    }
}

fn plain(status: StatusCode, text: &'static str) -> Response<Full<Bytes>> {
    let mut response = Response::new(Full::new(Bytes::from_static(text.as_bytes())));
    *response.status_mut() = status;
    response
}
