//! A tiny loopback HTTP/1.1 proxy for registry tests (std threads, one
//! request per connection): forwards to an upstream registry and records
//! every request (target, Range header, status, body bytes sent), and can
//! misbehave on request: corrupt a body, cut the connection after N body
//! bytes, answer with a fixed status, or rewrite a path prefix (for
//! `override_path`).
//!
//! ```ignore
//! let proxy = Proxy::start(&registry.host());
//! proxy.add_fault("/blobs/", Fault::CutAfter(1 << 20), 1);
//! // … pull through proxy.host() …
//! assert_eq!(proxy.body_bytes("/blobs/sha256:…"), layer_size);
//! ```

use std::io::{BufRead, BufReader, Read, Write};
use std::net::{Shutdown, TcpListener, TcpStream};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::thread::JoinHandle;

/// How the proxy misbehaves on a matching request.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Fault {
    /// Flip every bit of the body's first bytes (length unchanged).
    Corrupt,
    /// Send the head and this many body bytes, then close the connection.
    CutAfter(u64),
    /// Answer with this status and an empty body, without asking upstream.
    Status(u16),
    /// Pass the body on at about this many bytes per second: a slow link,
    /// so a test can act while a download is in progress.
    Throttle(u64),
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
    pub range: Option<String>,
    pub authorization: bool,
    pub status: u16,
    /// Body bytes passed to the client.
    pub body_bytes: u64,
    pub fault: Option<Fault>,
}

#[derive(Default)]
struct Shared {
    rules: Mutex<Vec<Rule>>,
    requests: Mutex<Vec<ProxiedRequest>>,
    rewrite: Mutex<Option<(String, String)>>,
    strip_range: AtomicBool,
    /// The token realm, when the proxy demands anonymous bearer tokens.
    token_realm: Mutex<Option<String>>,
}

/// The token the proxy's token endpoint hands out.
pub const TEST_TOKEN: &str = "berth-test-token";
const TOKEN_PATH: &str = "/token";

pub struct Proxy {
    port: u16,
    shared: Arc<Shared>,
    stop: Arc<AtomicBool>,
    acceptor: Option<JoinHandle<()>>,
}

impl Proxy {
    /// Listens on a random loopback port and forwards to `upstream`
    /// (`127.0.0.1:PORT`, plain HTTP).
    pub fn start(upstream: &str) -> Self {
        let listener = TcpListener::bind("127.0.0.1:0").expect("proxy listen");
        let port = listener.local_addr().expect("proxy addr").port();
        let shared = Arc::new(Shared::default());
        let stop = Arc::new(AtomicBool::new(false));
        let acceptor = {
            let shared = shared.clone();
            let stop = stop.clone();
            let upstream = upstream.to_owned();
            std::thread::spawn(move || {
                for stream in listener.incoming() {
                    if stop.load(Ordering::SeqCst) {
                        break;
                    }
                    let Ok(stream) = stream else { continue };
                    let shared = shared.clone();
                    let upstream = upstream.clone();
                    std::thread::spawn(move || {
                        // A client that went away mid-request is not a test failure.
                        let _ = handle(stream, &upstream, &shared);
                    });
                }
            })
        };
        Self {
            port,
            shared,
            stop,
            acceptor: Some(acceptor),
        }
    }

    /// `127.0.0.1:PORT`
    pub fn host(&self) -> String {
        format!("127.0.0.1:{}", self.port)
    }

    /// `http://127.0.0.1:PORT`
    pub fn url(&self) -> String {
        format!("http://{}", self.host())
    }

    /// Misbehave on the next `times` requests whose target contains
    /// `path_contains`.
    pub fn add_fault(&self, path_contains: &str, fault: Fault, times: usize) {
        self.shared.rules.lock().expect("rules lock").push(Rule {
            path_contains: path_contains.to_owned(),
            fault,
            remaining: times,
        });
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
        *self.shared.token_realm.lock().expect("realm lock") =
            Some(format!("{}{TOKEN_PATH}", self.url()));
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
        self.stop.store(true, Ordering::SeqCst);
        // Wake the acceptor so it sees the flag.
        let _ = TcpStream::connect(("127.0.0.1", self.port));
        if let Some(acceptor) = self.acceptor.take() {
            let _ = acceptor.join();
        }
    }
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
    Some(rule.fault)
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

fn handle(client: TcpStream, upstream: &str, shared: &Shared) -> std::io::Result<()> {
    let mut reader = BufReader::new(client.try_clone()?);
    let request = read_head(&mut reader)?;
    let first = request.first().cloned().unwrap_or_default();
    let mut parts = first.split(' ');
    let method = parts.next().unwrap_or_default().to_owned();
    let target = parts.next().unwrap_or_default().to_owned();
    let version = parts.next().unwrap_or("HTTP/1.1").to_owned();
    let mut record = ProxiedRequest {
        method: method.clone(),
        target: target.clone(),
        range: header(&request, "range").map(str::to_owned),
        authorization: header(&request, "authorization").is_some(),
        status: 0,
        body_bytes: 0,
        fault: take_fault(shared, &method, &target),
    };
    let mut client = client;
    let realm = shared.token_realm.lock().expect("realm lock").clone();
    if let Some(realm) = realm {
        let bearer = format!("Bearer {TEST_TOKEN}");
        if target.starts_with(TOKEN_PATH) {
            let body = format!(r#"{{"token":"{TEST_TOKEN}","expires_in":300}}"#);
            write!(
                client,
                "HTTP/1.1 200 OK\r\nContent-Type: application/json\r\nContent-Length: {}\r\nConnection: close\r\n\r\n{body}",
                body.len()
            )?;
            record.status = 200;
            shared.requests.lock().expect("requests lock").push(record);
            return Ok(());
        }
        if header(&request, "authorization") != Some(bearer.as_str()) {
            let repository = target
                .strip_prefix("/v2/")
                .and_then(|rest| rest.split("/manifests/").next())
                .and_then(|rest| rest.split("/blobs/").next())
                .unwrap_or_default();
            write!(
                client,
                "HTTP/1.1 401 Unauthorized\r\nWWW-Authenticate: Bearer realm=\"{realm}\",service=\"berth-test\",scope=\"repository:{repository}:pull\"\r\nContent-Length: 0\r\nConnection: close\r\n\r\n"
            )?;
            record.status = 401;
            shared.requests.lock().expect("requests lock").push(record);
            return Ok(());
        }
    }
    if let Some(Fault::Status(status)) = record.fault {
        write!(
            client,
            "HTTP/1.1 {status} Injected\r\nContent-Length: 0\r\nConnection: close\r\n\r\n"
        )?;
        record.status = status;
        shared.requests.lock().expect("requests lock").push(record);
        return Ok(());
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
    client.write_all(closing_head(&response, &status_line, &[]).as_bytes())?;

    let limit = match record.fault {
        Some(Fault::CutAfter(n)) => n,
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
            Some(std::time::Duration::from_millis(100)),
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
        if let Err(err) = client.write_all(&buf[..n]) {
            break Err(err);
        }
        record.body_bytes += n as u64;
        if let Some(pause) = pause {
            // Rate limiting for the simulated slow link, not synchronisation.
            std::thread::sleep(pause);
        }
    };
    let _ = client.flush();
    let _ = client.shutdown(Shutdown::Write);
    shared.requests.lock().expect("requests lock").push(record);
    result
}
