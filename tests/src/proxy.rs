//! A tiny loopback HTTP/1.1 proxy for registry tests (std threads, one
//! request per connection, plain HTTP or HTTPS with the kit's test CA):
//! forwards to an upstream registry and records every request (target,
//! every header in order, status, body bytes sent), and can misbehave on
//! request: corrupt a body, cut or stall it after N body bytes, answer with
//! a fixed status (with `Retry-After`), a flood of bytes, a redirect or an
//! echo of its credentials, demand a token (from itself or another proxy)
//! or basic auth, or rewrite a path prefix (for `override_path`).
//!
//! ```ignore
//! let proxy = Proxy::start(&registry.host());
//! proxy.add_fault("/blobs/", Fault::CutAfter(1 << 20), 1);
//! // … pull through proxy.host() …
//! assert_eq!(proxy.body_bytes("/blobs/sha256:…"), layer_size);
//! ```

use std::io::{BufRead, BufReader, Read, Write};
use std::net::{Shutdown, TcpListener, TcpStream};
use std::path::Path;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Condvar, Mutex};
use std::thread::JoinHandle;
use std::time::Duration;

/// How the proxy misbehaves on a matching request.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Fault {
    /// Flip every bit of the body's first bytes (length unchanged).
    Corrupt,
    /// Send the head and this many body bytes, then close the connection.
    CutAfter(u64),
    /// Send the head and this many body bytes, then nothing more while
    /// keeping the connection open (until the client gives up): a stall.
    StallAfter(u64),
    /// Answer with this status and an empty body, without asking upstream.
    Status(u16),
    /// Answer with this status and `Retry-After: seconds` (an overloaded
    /// or restarting registry), without asking upstream.
    RetryAfter { status: u16, seconds: u64 },
    /// Pass the body on at about this many bytes per second: a slow link,
    /// so a test can act while a download is in progress.
    Throttle(u64),
    /// Answer with `status` and filler bytes, without asking upstream:
    /// `length` of them with that `Content-Length`, or with `None` an
    /// endless body without a length, as fast as the client reads.
    Flood { status: u16, length: Option<u64> },
    /// Answer `307` with the same target on `origin` (`http://127.0.0.1:PORT`).
    RedirectTo(String),
    /// Answer with this status and an error body that quotes the request's
    /// `Authorization` header, as some gateways do.
    EchoAuthorization(u16),
    /// Answer with `status` and this JSON body, without asking upstream.
    Answer { status: u16, body: String },
}

impl Fault {
    /// An endless body of filler bytes with `status`.
    pub fn endless(status: u16) -> Self {
        Self::Flood {
            status,
            length: None,
        }
    }
}

#[derive(Debug, Clone)]
struct Rule {
    path_contains: String,
    fault: Fault,
    remaining: usize,
}

/// One request the proxy handled.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ProxiedRequest {
    pub method: String,
    /// The target as the client sent it (`/v2/…?ns=…`), before any rewrite.
    pub target: String,
    /// Every header line, name as sent, in order.
    pub headers: Vec<(String, String)>,
    pub range: Option<String>,
    pub authorization: bool,
    pub status: u16,
    /// Body bytes passed to the client.
    pub body_bytes: u64,
    pub fault: Option<Fault>,
}

impl ProxiedRequest {
    /// The values of header `name` (any case), in the order sent.
    pub fn header_values(&self, name: &str) -> Vec<&str> {
        self.headers
            .iter()
            .filter(|(key, _)| key.eq_ignore_ascii_case(name))
            .map(|(_, value)| value.as_str())
            .collect()
    }
}

#[derive(Default)]
struct Shared {
    rules: Mutex<Vec<Rule>>,
    requests: Mutex<Vec<ProxiedRequest>>,
    rewrite: Mutex<Option<(String, String)>>,
    strip_range: AtomicBool,
    /// The token realm, when the proxy demands bearer tokens.
    token_realm: Mutex<Option<String>>,
    /// Whether `/token` hands out the token.
    serves_tokens: AtomicBool,
    /// The token handed out and demanded; [`TEST_TOKEN`] unless set.
    token: Mutex<Option<String>>,
    /// Whether a request without `Authorization` gets a Basic challenge.
    basic_auth: AtomicBool,
    /// Requests whose target contains this wait before they are forwarded.
    held: Mutex<Option<String>>,
    released: Condvar,
    stop: AtomicBool,
}

/// The token the proxy's token endpoint hands out.
pub const TEST_TOKEN: &str = "berth-test-token";
const TOKEN_PATH: &str = "/token";
/// How often a stalled connection checks whether the proxy is gone.
const STALL_POLL: Duration = Duration::from_millis(100);

pub struct Proxy {
    port: u16,
    tls: bool,
    shared: Arc<Shared>,
    acceptor: Option<JoinHandle<()>>,
}

impl Proxy {
    /// Listens on a random loopback port and forwards to `upstream`
    /// (`127.0.0.1:PORT`, plain HTTP).
    pub fn start(upstream: &str) -> Self {
        Self::listen(upstream, None)
    }

    /// Like [`Proxy::start`], serving HTTPS with the certificate that
    /// [`crate::registry::make_tls_files`] made in `tls_dir` (`server.pem`,
    /// `server.key`; clients trust its `ca.pem`).
    pub fn start_tls(upstream: &str, tls_dir: &Path) -> Self {
        Self::listen(upstream, Some(Arc::new(tls_config(tls_dir))))
    }

    fn listen(upstream: &str, tls: Option<Arc<rustls::ServerConfig>>) -> Self {
        let listener = TcpListener::bind("127.0.0.1:0").expect("proxy listen");
        let port = listener.local_addr().expect("proxy addr").port();
        let shared = Arc::new(Shared::default());
        let is_tls = tls.is_some();
        let acceptor = {
            let shared = shared.clone();
            let upstream = upstream.to_owned();
            std::thread::spawn(move || {
                for stream in listener.incoming() {
                    if shared.stop.load(Ordering::SeqCst) {
                        break;
                    }
                    let Ok(stream) = stream else { continue };
                    let shared = shared.clone();
                    let upstream = upstream.clone();
                    let tls = tls.clone();
                    std::thread::spawn(move || {
                        let Some(conn) = Conn::accept(stream, tls) else {
                            return;
                        };
                        // A client that went away mid-request is not a test failure.
                        let _ = handle(conn, &upstream, &shared);
                    });
                }
            })
        };
        Self {
            port,
            tls: is_tls,
            shared,
            acceptor: Some(acceptor),
        }
    }

    /// `127.0.0.1:PORT`
    pub fn host(&self) -> String {
        format!("127.0.0.1:{}", self.port)
    }

    /// `http://127.0.0.1:PORT` (`https://` for a TLS proxy)
    pub fn url(&self) -> String {
        let scheme = if self.tls { "https" } else { "http" };
        format!("{scheme}://{}", self.host())
    }

    /// Misbehave on the next `times` requests whose target contains
    /// `path_contains` (requests turned away for lack of a token or
    /// credentials do not count).
    pub fn add_fault(&self, path_contains: &str, fault: Fault, times: usize) {
        self.shared.rules.lock().expect("rules lock").push(Rule {
            path_contains: path_contains.to_owned(),
            fault,
            remaining: times,
        });
    }

    /// Requests whose target contains `path_contains` wait, before
    /// anything is sent upstream, until [`Proxy::release`]: a download that
    /// stays in progress for as long as a test needs.
    pub fn hold(&self, path_contains: &str) {
        *self.shared.held.lock().expect("held lock") = Some(path_contains.to_owned());
    }

    /// Lets the held requests (and all later ones) through.
    pub fn release(&self) {
        *self.shared.held.lock().expect("held lock") = None;
        self.shared.released.notify_all();
    }

    /// Forward targets starting with `from` with `to` in its place
    /// (e.g. `/custom-api` → `/v2`).
    pub fn rewrite_prefix(&self, from: &str, to: &str) {
        *self.shared.rewrite.lock().expect("rewrite lock") = Some((from.to_owned(), to.to_owned()));
    }

    /// Drop `Range` headers before forwarding, like a server that does not
    /// support ranges (it answers 200 with the whole body).
    pub fn strip_range(&self) {
        self.shared.strip_range.store(true, Ordering::SeqCst);
    }

    /// Demand a bearer token on every request, as Docker Hub does: answer
    /// 401 with a `Bearer realm=…/token` challenge, and hand out
    /// [`TEST_TOKEN`] anonymously at `/token`.
    pub fn require_bearer_token(&self) {
        self.serve_tokens();
        self.require_bearer_token_from(&self.url());
    }

    /// Demand a bearer token whose realm is `realm_origin`'s `/token` (a
    /// proxy that [`Proxy::serve_tokens`]), as `registry-1.docker.io` names
    /// `auth.docker.io`.
    pub fn require_bearer_token_from(&self, realm_origin: &str) {
        *self.shared.token_realm.lock().expect("realm lock") =
            Some(format!("{realm_origin}{TOKEN_PATH}"));
    }

    /// Hand out [`TEST_TOKEN`] at `/token`, to anyone.
    pub fn serve_tokens(&self) {
        self.shared.serves_tokens.store(true, Ordering::SeqCst);
    }

    /// Hand out and demand `token` instead of [`TEST_TOKEN`] (set it on
    /// the token server and on the proxy that demands it).
    pub fn use_token(&self, token: &str) {
        *self.shared.token.lock().expect("token lock") = Some(token.to_owned());
    }

    /// Answer requests without an `Authorization` header with a Basic
    /// challenge (any credentials then pass through to upstream).
    pub fn require_basic_auth(&self) {
        self.shared.basic_auth.store(true, Ordering::SeqCst);
    }

    /// Every request handled so far, in order of completion.
    pub fn requests(&self) -> Vec<ProxiedRequest> {
        self.shared.requests.lock().expect("requests lock").clone()
    }

    /// The requests whose target contains `path_contains`.
    pub fn requests_for(&self, path_contains: &str) -> Vec<ProxiedRequest> {
        self.requests()
            .into_iter()
            .filter(|r| r.target.contains(path_contains))
            .collect()
    }

    /// Body bytes sent for requests whose target contains `path_contains`.
    pub fn body_bytes(&self, path_contains: &str) -> u64 {
        self.requests_for(path_contains)
            .iter()
            .map(|r| r.body_bytes)
            .sum()
    }
}

impl Drop for Proxy {
    fn drop(&mut self) {
        self.shared.stop.store(true, Ordering::SeqCst);
        self.release();
        // Wake the acceptor so it sees the flag.
        let _ = TcpStream::connect(("127.0.0.1", self.port));
        if let Some(acceptor) = self.acceptor.take() {
            let _ = acceptor.join();
        }
    }
}

fn tls_config(dir: &Path) -> rustls::ServerConfig {
    use rustls::pki_types::pem::PemObject;
    use rustls::pki_types::{CertificateDer, PrivateKeyDer};
    let certs: Vec<CertificateDer<'static>> = CertificateDer::pem_file_iter(dir.join("server.pem"))
        .expect("reading server.pem")
        .collect::<Result<_, _>>()
        .expect("parsing server.pem");
    let key = PrivateKeyDer::from_pem_file(dir.join("server.key")).expect("reading server.key");
    rustls::ServerConfig::builder_with_provider(Arc::new(rustls::crypto::ring::default_provider()))
        .with_safe_default_protocol_versions()
        .expect("TLS versions")
        .with_no_client_auth()
        .with_single_cert(certs, key)
        .expect("the test server certificate")
}

/// A client connection, plain or TLS.
enum Conn {
    Plain(TcpStream),
    Tls(Box<rustls::StreamOwned<rustls::ServerConnection, TcpStream>>),
}

impl Conn {
    fn accept(stream: TcpStream, tls: Option<Arc<rustls::ServerConfig>>) -> Option<Self> {
        Some(match tls {
            None => Self::Plain(stream),
            Some(config) => {
                let session = rustls::ServerConnection::new(config).ok()?;
                Self::Tls(Box::new(rustls::StreamOwned::new(session, stream)))
            }
        })
    }

    fn tcp(&self) -> &TcpStream {
        match self {
            Self::Plain(stream) => stream,
            Self::Tls(stream) => &stream.sock,
        }
    }

    /// Ends the response: TLS close_notify, then the TCP write side.
    fn close(&mut self) {
        if let Self::Tls(stream) = self {
            stream.conn.send_close_notify();
        }
        let _ = self.flush();
        let _ = self.tcp().shutdown(Shutdown::Write);
    }
}

impl Read for Conn {
    fn read(&mut self, buf: &mut [u8]) -> std::io::Result<usize> {
        match self {
            Self::Plain(stream) => stream.read(buf),
            Self::Tls(stream) => stream.read(buf),
        }
    }
}

impl Write for Conn {
    fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
        match self {
            Self::Plain(stream) => stream.write(buf),
            Self::Tls(stream) => stream.write(buf),
        }
    }

    fn flush(&mut self) -> std::io::Result<()> {
        match self {
            Self::Plain(stream) => stream.flush(),
            Self::Tls(stream) => stream.flush(),
        }
    }
}

fn wait_while_held(shared: &Shared, target: &str) {
    let held = shared.held.lock().expect("held lock");
    let _released = shared
        .released
        .wait_while(held, |held| {
            held.as_deref()
                .is_some_and(|pattern| target.contains(pattern))
        })
        .expect("held lock");
}

fn take_fault(shared: &Shared, method: &str, target: &str) -> Option<Fault> {
    if method != "GET" {
        return None;
    }
    let mut rules = shared.rules.lock().expect("rules lock");
    let rule = rules
        .iter_mut()
        .find(|r| r.remaining > 0 && target.contains(&r.path_contains))?;
    rule.remaining -= 1;
    Some(rule.fault.clone())
}

/// Reads an HTTP head (request or response) up to the blank line.
fn read_head(reader: &mut impl BufRead) -> std::io::Result<Vec<String>> {
    let mut lines = Vec::new();
    loop {
        let mut line = String::new();
        if reader.read_line(&mut line)? == 0 {
            return Err(std::io::Error::new(
                std::io::ErrorKind::UnexpectedEof,
                "connection closed in the head",
            ));
        }
        let line = line.trim_end_matches(['\r', '\n']).to_owned();
        if line.is_empty() {
            return Ok(lines);
        }
        lines.push(line);
    }
}

fn header<'a>(lines: &'a [String], name: &str) -> Option<&'a str> {
    lines.iter().skip(1).find_map(|line| {
        let (key, value) = line.split_once(':')?;
        key.trim().eq_ignore_ascii_case(name).then(|| value.trim())
    })
}

/// The head with `Connection: close` in place of any connection header,
/// without the headers named in `drop`.
fn closing_head(lines: &[String], first: &str, drop: &[&str]) -> String {
    let mut head = format!("{first}\r\n");
    for line in lines.iter().skip(1) {
        let name = line.split(':').next().unwrap_or_default().trim();
        let dropped = ["connection", "keep-alive"]
            .iter()
            .chain(drop)
            .any(|d| name.eq_ignore_ascii_case(d));
        if !dropped {
            head.push_str(line);
            head.push_str("\r\n");
        }
    }
    head.push_str("Connection: close\r\n\r\n");
    head
}

/// Writes a whole small response and records it.
fn answer(
    reader: &mut BufReader<Conn>,
    shared: &Shared,
    mut record: ProxiedRequest,
    status: u16,
    extra_headers: &str,
    body: &str,
) -> std::io::Result<()> {
    let client = reader.get_mut();
    write!(
        client,
        "HTTP/1.1 {status} Test\r\n{extra_headers}Content-Length: {}\r\nConnection: close\r\n\r\n{body}",
        body.len()
    )?;
    client.close();
    record.status = status;
    record.body_bytes = body.len() as u64;
    shared.requests.lock().expect("requests lock").push(record);
    Ok(())
}

fn handle(client: Conn, upstream: &str, shared: &Shared) -> std::io::Result<()> {
    let mut reader = BufReader::new(client);
    let request = read_head(&mut reader)?;
    let first = request.first().cloned().unwrap_or_default();
    let mut parts = first.split(' ');
    let method = parts.next().unwrap_or_default().to_owned();
    let target = parts.next().unwrap_or_default().to_owned();
    let version = parts.next().unwrap_or("HTTP/1.1").to_owned();
    let mut record = ProxiedRequest {
        method: method.clone(),
        target: target.clone(),
        headers: request
            .iter()
            .skip(1)
            .filter_map(|line| {
                let (key, value) = line.split_once(':')?;
                Some((key.trim().to_owned(), value.trim().to_owned()))
            })
            .collect(),
        range: header(&request, "range").map(str::to_owned),
        authorization: header(&request, "authorization").is_some(),
        status: 0,
        body_bytes: 0,
        fault: None,
    };
    let token = shared
        .token
        .lock()
        .expect("token lock")
        .clone()
        .unwrap_or_else(|| TEST_TOKEN.to_owned());
    if shared.serves_tokens.load(Ordering::SeqCst) && target.starts_with(TOKEN_PATH) {
        let body = format!(r#"{{"token":"{token}","expires_in":300}}"#);
        let json = "Content-Type: application/json\r\n";
        return answer(&mut reader, shared, record, 200, json, &body);
    }
    let realm = shared.token_realm.lock().expect("realm lock").clone();
    if let Some(realm) = realm
        && header(&request, "authorization") != Some(format!("Bearer {token}").as_str())
    {
        let repository = target
            .strip_prefix("/v2/")
            .and_then(|rest| rest.split("/manifests/").next())
            .and_then(|rest| rest.split("/blobs/").next())
            .unwrap_or_default();
        let challenge = format!(
            "WWW-Authenticate: Bearer realm=\"{realm}\",service=\"berth-test\",scope=\"repository:{repository}:pull\"\r\n"
        );
        return answer(&mut reader, shared, record, 401, &challenge, "");
    }
    if shared.basic_auth.load(Ordering::SeqCst) && !record.authorization {
        let challenge = "WWW-Authenticate: Basic realm=\"berth-test\"\r\n";
        return answer(&mut reader, shared, record, 401, challenge, "");
    }
    wait_while_held(shared, &target);
    record.fault = take_fault(shared, &method, &target);
    match record.fault.clone() {
        Some(Fault::Status(status)) => return answer(&mut reader, shared, record, status, "", ""),
        Some(Fault::RetryAfter { status, seconds }) => {
            let retry = format!("Retry-After: {seconds}\r\n");
            return answer(&mut reader, shared, record, status, &retry, "");
        }
        Some(Fault::RedirectTo(origin)) => {
            let location = format!("Location: {origin}{target}\r\n");
            return answer(&mut reader, shared, record, 307, &location, "");
        }
        Some(Fault::EchoAuthorization(status)) => {
            let echo = format!(
                r#"{{"errors":[{{"code":"DENIED","message":"rejected","detail":"Authorization: {}"}}]}}"#,
                header(&request, "authorization").unwrap_or_default()
            );
            let json = "Content-Type: application/json\r\n";
            return answer(&mut reader, shared, record, status, json, &echo);
        }
        Some(Fault::Answer { status, body }) => {
            let json = "Content-Type: application/json\r\n";
            return answer(&mut reader, shared, record, status, json, &body);
        }
        Some(Fault::Flood { status, length }) => {
            return flood(reader, shared, record, status, length);
        }
        _ => {}
    }

    let forwarded_target = match &*shared.rewrite.lock().expect("rewrite lock") {
        Some((from, to)) if target.starts_with(from.as_str()) => {
            format!("{to}{}", &target[from.len()..])
        }
        _ => target.clone(),
    };
    let mut server = TcpStream::connect(upstream)?;
    let drop: &[&str] = if shared.strip_range.load(Ordering::SeqCst) {
        &["range"]
    } else {
        &[]
    };
    let head = closing_head(
        &request,
        &format!("{method} {forwarded_target} {version}"),
        drop,
    );
    server.write_all(head.as_bytes())?;
    // Registry pulls send no request bodies; uploads go to the registry directly.
    let mut server_reader = BufReader::new(server);
    let response = read_head(&mut server_reader)?;
    record.status = response
        .first()
        .and_then(|line| line.split(' ').nth(1))
        .and_then(|code| code.parse().ok())
        .unwrap_or(0);
    let status_line = response.first().cloned().unwrap_or_default();
    reader
        .get_mut()
        .write_all(closing_head(&response, &status_line, &[]).as_bytes())?;

    let limit = match record.fault {
        Some(Fault::CutAfter(n) | Fault::StallAfter(n)) => n,
        _ => u64::MAX,
    };
    let mut corrupt_left: usize = if record.fault == Some(Fault::Corrupt) {
        64
    } else {
        0
    };
    let (chunk, pause) = match record.fault {
        // Ten small writes a second make the rate.
        Some(Fault::Throttle(rate)) => (
            usize::try_from((rate / 10).max(1)).unwrap_or(usize::MAX),
            Some(Duration::from_millis(100)),
        ),
        _ => (64 * 1024, None),
    };
    let mut buf = vec![0u8; chunk.min(64 * 1024)];
    let result = loop {
        let room =
            usize::try_from((limit - record.body_bytes).min(buf.len() as u64)).unwrap_or(buf.len());
        if room == 0 {
            break Ok(());
        }
        let n = match server_reader.read(&mut buf[..room]) {
            Ok(0) => break Ok(()),
            Ok(n) => n,
            Err(err) => break Err(err),
        };
        let flip = corrupt_left.min(n);
        for byte in &mut buf[..flip] {
            *byte = !*byte;
        }
        corrupt_left -= flip;
        if let Err(err) = reader.get_mut().write_all(&buf[..n]) {
            break Err(err);
        }
        record.body_bytes += n as u64;
        if let Some(pause) = pause {
            // Rate limiting for the simulated slow link, not synchronisation.
            std::thread::sleep(pause);
        }
    };
    let _ = reader.get_mut().flush();
    if matches!(record.fault, Some(Fault::StallAfter(_))) {
        // Recorded now: the test looks while the client still waits.
        shared
            .requests
            .lock()
            .expect("requests lock")
            .push(record.clone());
        hold_open(&mut reader, shared);
        return result;
    }
    reader.get_mut().close();
    shared.requests.lock().expect("requests lock").push(record);
    result
}

/// Sends nothing more until the client closes the connection (or the
/// proxy is dropped).
fn hold_open(reader: &mut BufReader<Conn>, shared: &Shared) {
    if reader
        .get_ref()
        .tcp()
        .set_read_timeout(Some(STALL_POLL))
        .is_err()
    {
        return;
    }
    let mut byte = [0u8; 1];
    while !shared.stop.load(Ordering::SeqCst) {
        match reader.read(&mut byte) {
            Ok(0) => return,
            Ok(_) => {}
            Err(err)
                if matches!(
                    err.kind(),
                    std::io::ErrorKind::WouldBlock | std::io::ErrorKind::TimedOut
                ) => {}
            Err(_) => return,
        }
    }
}

/// Answers `status` with filler bytes: `length` of them, or without end
/// until the client stops reading.
fn flood(
    mut reader: BufReader<Conn>,
    shared: &Shared,
    mut record: ProxiedRequest,
    status: u16,
    length: Option<u64>,
) -> std::io::Result<()> {
    let declared = length.map_or_else(String::new, |n| format!("Content-Length: {n}\r\n"));
    let client = reader.get_mut();
    record.status = status;
    let result = (|| {
        write!(
            client,
            "HTTP/1.1 {status} Flood\r\nContent-Type: application/json\r\n{declared}Connection: close\r\n\r\n"
        )?;
        let filler = vec![b' '; 64 * 1024];
        let mut left = length.unwrap_or(u64::MAX);
        while left > 0 && !shared.stop.load(Ordering::SeqCst) {
            let n = usize::try_from(left.min(filler.len() as u64)).unwrap_or(filler.len());
            client.write_all(&filler[..n])?;
            record.body_bytes += n as u64;
            left -= n as u64;
        }
        Ok(())
    })();
    client.close();
    shared.requests.lock().expect("requests lock").push(record);
    result
}
