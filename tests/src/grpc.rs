//! A small gRPC health server (`grpc.health.v1.Health/Check`) for the
//! `grpc` probe tests: HTTP/2 cleartext on 127.0.0.1, written on the `h2`
//! crate (the messages are one field each). Each service's status can be
//! changed while it runs; a service it does not know gets `NOT_FOUND`, as
//! grpc-go's health server answers.

use std::collections::HashMap;
use std::net::SocketAddr;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};

use bytes::Bytes;

/// `HealthCheckResponse.ServingStatus`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Status {
    Serving,
    NotServing,
}

impl Status {
    fn code(self) -> u8 {
        match self {
            Self::Serving => 1,
            Self::NotServing => 2,
        }
    }
}

#[derive(Default)]
struct Shared {
    statuses: Mutex<HashMap<String, Status>>,
    /// Every service asked about, in order.
    asked: Mutex<Vec<String>>,
    calls: AtomicUsize,
}

pub struct HealthServer {
    pub addr: SocketAddr,
    shared: Arc<Shared>,
    // Dropping the runtime stops the server.
    _runtime: tokio::runtime::Runtime,
}

impl HealthServer {
    /// Listens on a free port of 127.0.0.1.
    pub fn start() -> Self {
        let runtime = tokio::runtime::Builder::new_multi_thread()
            .worker_threads(1)
            .enable_all()
            .build()
            .expect("a runtime for the health server");
        let listener = runtime
            .block_on(tokio::net::TcpListener::bind("127.0.0.1:0"))
            .expect("binding the health server");
        let addr = listener.local_addr().expect("its address");
        let shared = Arc::new(Shared::default());
        let serving = Arc::clone(&shared);
        runtime.spawn(async move {
            while let Ok((socket, _)) = listener.accept().await {
                tokio::spawn(connection(socket, Arc::clone(&serving)));
            }
        });
        Self {
            addr,
            shared,
            _runtime: runtime,
        }
    }

    pub fn port(&self) -> u16 {
        self.addr.port()
    }

    pub fn set(&self, service: &str, status: Status) {
        self.shared
            .statuses
            .lock()
            .expect("statuses")
            .insert(service.to_string(), status);
    }

    /// How many Check calls were answered.
    pub fn calls(&self) -> usize {
        self.shared.calls.load(Ordering::SeqCst)
    }

    /// The services Check was called for, in order.
    pub fn asked(&self) -> Vec<String> {
        self.shared.asked.lock().expect("asked").clone()
    }
}

async fn connection(socket: tokio::net::TcpStream, shared: Arc<Shared>) {
    let Ok(mut conn) = h2::server::handshake(socket).await else {
        return;
    };
    while let Some(Ok((request, respond))) = conn.accept().await {
        tokio::spawn(answer(request, respond, Arc::clone(&shared)));
    }
}

async fn answer(
    request: http::Request<h2::RecvStream>,
    mut respond: h2::server::SendResponse<Bytes>,
    shared: Arc<Shared>,
) {
    let path_ok = request.uri().path() == "/grpc.health.v1.Health/Check";
    let mut body = request.into_body();
    let mut data = Vec::new();
    while let Some(Ok(chunk)) = body.data().await {
        let _ = body.flow_control().release_capacity(chunk.len());
        data.extend_from_slice(&chunk);
    }
    let service = service_of(&data);
    shared.calls.fetch_add(1, Ordering::SeqCst);
    shared.asked.lock().expect("asked").push(service.clone());
    let status = shared
        .statuses
        .lock()
        .expect("statuses")
        .get(&service)
        .copied();
    let head = http::Response::builder()
        .status(200)
        .header("content-type", "application/grpc");
    let (Some(status), true) = (status, path_ok) else {
        // Trailers-only: NOT_FOUND (or UNIMPLEMENTED for another method).
        let code = if path_ok { "5" } else { "12" };
        let response = head
            .header("grpc-status", code)
            .header("grpc-message", "unknown service")
            .body(())
            .expect("a response");
        let _ = respond.send_response(response, true);
        return;
    };
    let response = head.body(()).expect("a response");
    let Ok(mut stream) = respond.send_response(response, false) else {
        return;
    };
    let message = [0u8, 0, 0, 0, 2, 0x08, status.code()];
    let _ = stream.send_data(Bytes::copy_from_slice(&message), false);
    let mut trailers = http::HeaderMap::new();
    trailers.insert("grpc-status", http::HeaderValue::from_static("0"));
    let _ = stream.send_trailers(trailers);
}

/// The `service` of a framed HealthCheckRequest (field 1, a short string).
fn service_of(data: &[u8]) -> String {
    match data.get(5..) {
        Some([0x0a, len, rest @ ..]) if usize::from(*len) <= rest.len() && *len < 0x80 => {
            String::from_utf8_lossy(&rest[..usize::from(*len)]).into_owned()
        }
        _ => String::new(),
    }
}
