//! Running the actions of probes and lifecycle hooks ([`Action`]) as
//! kubelet runs them: `exec` through the OCI runtime's exec in the
//! container (its namespaces, user, capabilities, seccomp profile),
//! `httpGet` from the host to the pod (success is a status in 200..=399;
//! HTTPS certificates are not verified, as kubelet does not), `tcpSocket`
//! (a connect), `grpc` (the standard health check, [`super::grpc_health`])
//! and a hook's `sleep`.
//!
//! Results carry text a user can act on: an exec's output (its own, never
//! the container's environment), an HTTP status, a connection error.

use std::net::IpAddr;
use std::sync::{Arc, OnceLock};
use std::time::Duration;

use futures::future::BoxFuture;

use super::action::{Action, Outcome};
use super::host::{ContainerRuntime, Handlers};

/// How much of an exec's output or an HTTP body goes into an event.
const OUTPUT_LIMIT: usize = 1024;
/// How much of each of an exec's output streams is kept at all (kubelet's
/// `maxReadLength`, 10 KiB); the rest is read and dropped.
const EXEC_READ_LIMIT: usize = 10 << 10;

/// Where an action runs: the container (for exec) and the address of the
/// pod (for httpGet and tcpSocket without a `host`).
#[derive(Clone, Copy)]
pub struct Target<'a> {
    pub runtime: &'a dyn ContainerRuntime,
    pub container_id: &'a str,
    pub default_host: IpAddr,
}

/// Runs actions through the container runtime (the host's [`Handlers`]).
pub struct RuntimeHandlers(pub Arc<dyn ContainerRuntime>);

impl Handlers for RuntimeHandlers {
    fn run<'a>(
        &'a self,
        action: &'a Action,
        container_id: &'a str,
        pod_host: IpAddr,
        timeout: Duration,
    ) -> BoxFuture<'a, Outcome> {
        Box::pin(async move {
            let target = Target {
                runtime: self.0.as_ref(),
                container_id,
                default_host: pod_host,
            };
            action.run_outcome(target, timeout).await
        })
    }
}

impl Action {
    /// Runs the action within `timeout`: `Ok` with what it said on
    /// success, `Err` with why it failed.
    pub async fn run(&self, target: Target<'_>, timeout: Duration) -> Result<String, String> {
        self.run_outcome(target, timeout).await.result
    }

    /// [`Self::run`], with the warning a success may carry (to be recorded
    /// as a `ProbeWarning` event, as kubelet does).
    pub async fn run_outcome(&self, target: Target<'_>, timeout: Duration) -> Outcome {
        match tokio::time::timeout(timeout, self.run_untimed(target, timeout)).await {
            Ok(outcome) => outcome,
            Err(_) => Outcome::from(Err(format!(
                "timed out after {}",
                manifests::duration::format(timeout)
            ))),
        }
    }

    async fn run_untimed(&self, target: Target<'_>, timeout: Duration) -> Outcome {
        let result = match self {
            Self::Exec { command } => exec(target, command).await,
            Self::HttpGet {
                https,
                host,
                port,
                path,
                headers,
            } => {
                let host = host_text(host.as_deref(), target.default_host);
                let scheme = if *https { "https" } else { "http" };
                let url = format!("{scheme}://{host}:{port}{path}");
                return get(&url, headers, timeout).await;
            }
            Self::TcpSocket { host, port } => {
                let host = host
                    .clone()
                    .unwrap_or_else(|| target.default_host.to_string());
                tokio::net::TcpStream::connect((host.as_str(), *port))
                    .await
                    .map(|_| format!("connected to {host}:{port}"))
                    .map_err(|err| format!("dial tcp {host}:{port}: {err}"))
            }
            Self::Sleep { seconds } => {
                tokio::time::sleep(Duration::from_secs(*seconds)).await;
                Ok(String::new())
            }
            Self::Grpc { port, service } => {
                let addr = std::net::SocketAddr::new(target.default_host, *port);
                super::grpc_health::check(addr, service).await
            }
        };
        Outcome::from(result)
    }
}

fn host_text(host: Option<&str>, default: IpAddr) -> String {
    match host {
        Some(host) if host.contains(':') && !host.starts_with('[') => format!("[{host}]"),
        Some(host) => host.to_string(),
        None => match default {
            IpAddr::V6(v6) => format!("[{v6}]"),
            IpAddr::V4(v4) => v4.to_string(),
        },
    }
}

/// Text for an event: lossy UTF-8, trimmed, at most [`OUTPUT_LIMIT`] bytes.
fn output_text(bytes: &[u8]) -> String {
    let text = String::from_utf8_lossy(&bytes[..bytes.len().min(OUTPUT_LIMIT)]);
    text.trim().to_string()
}

/// The command through the runtime's exec; its exit code decides. Output is
/// kept up to [`EXEC_READ_LIMIT`] per stream while it is read (the rest is
/// drained and dropped). The runtime's exec process is killed if the
/// timeout drops this future (the command inside may outlive it, as with
/// kubelet).
async fn exec(target: Target<'_>, command: &[String]) -> Result<String, String> {
    let out = target
        .runtime
        .exec(target.container_id, command, EXEC_READ_LIMIT)
        .await
        .map_err(|err| crate::status::chain(&*err))?;
    let mut text = out.stdout;
    text.extend_from_slice(&out.stderr);
    let text = output_text(&text);
    let code = out.exit_code;
    if code == 0 {
        Ok(text)
    } else if text.is_empty() {
        Err(format!("command {command:?} exited with {code}"))
    } else {
        Err(format!("command {command:?} exited with {code}: {text}"))
    }
}

/// One client for every probe: no proxy (probes go to the pod directly),
/// no connection reuse (each probe is a fresh connection, as kubelet's),
/// certificates not verified (kubelet's HTTPS probes do not either).
fn client() -> Result<&'static reqwest::Client, String> {
    static CLIENT: OnceLock<Result<reqwest::Client, String>> = OnceLock::new();
    CLIENT
        .get_or_init(|| {
            crate::image::hosts::install_crypto_provider();
            reqwest::Client::builder()
                .no_proxy()
                .pool_max_idle_per_host(0)
                .tls_danger_accept_invalid_certs(true)
                .redirect(redirect_policy())
                .user_agent(concat!("berth-probe/", env!("CARGO_PKG_VERSION")))
                .build()
                .map_err(|err| {
                    format!("cannot make an HTTP client: {}", crate::status::chain(&err))
                })
        })
        .as_ref()
        .map_err(Clone::clone)
}

/// kubelet's policy: redirects to the same host are followed (at most
/// 10), a redirect to another host is not: its 3xx answer is the result,
/// a success with a warning. A probe cannot be sent somewhere else.
fn redirect_policy() -> reqwest::redirect::Policy {
    reqwest::redirect::Policy::custom(|attempt| {
        let first_host = attempt.previous().first().and_then(|url| url.host_str());
        if attempt.url().host_str() != first_host {
            attempt.stop()
        } else if attempt.previous().len() >= 10 {
            attempt.error("stopped after 10 redirects")
        } else {
            attempt.follow()
        }
    })
}

async fn get(url: &str, headers: &[(String, String)], timeout: Duration) -> Outcome {
    let client = match client() {
        Ok(client) => client,
        Err(err) => return Outcome::from(Err(err)),
    };
    let mut request = client.get(url).timeout(timeout);
    let has_accept = headers
        .iter()
        .any(|(n, _)| n.eq_ignore_ascii_case("accept"));
    if !has_accept {
        request = request.header("Accept", "*/*");
    }
    for (name, value) in headers {
        request = request.header(name.as_str(), value.as_str());
    }
    let response = match request.send().await {
        Ok(response) => response,
        Err(err) => {
            return Outcome::from(Err(format!("Get {url:?}: {}", crate::status::chain(&err))));
        }
    };
    let status = response.status();
    let location = response
        .headers()
        .get(reqwest::header::LOCATION)
        .map(|l| String::from_utf8_lossy(l.as_bytes()).into_owned());
    let body = read_some(response).await;
    let code = status.as_u16();
    let result = if (200..400).contains(&code) {
        Ok(format!("HTTP {status}"))
    } else if body.is_empty() {
        Err(format!(
            "GET {url}: HTTP probe failed with statuscode: {code}"
        ))
    } else {
        Err(format!(
            "GET {url}: HTTP probe failed with statuscode: {code}: {body}"
        ))
    };
    // A 3xx as the final answer: the redirect was not followed.
    let warning = (300..400).contains(&code).then(|| {
        format!(
            "Probe terminated redirects: GET {url} answered {status}{}, not followed; Response body: {body}",
            location.map(|l| format!(" to {l}")).unwrap_or_default()
        )
    });
    Outcome { result, warning }
}

/// The start of a response body, for the event.
async fn read_some(mut response: reqwest::Response) -> String {
    let mut bytes = Vec::new();
    while bytes.len() < OUTPUT_LIMIT {
        match response.chunk().await {
            Ok(Some(chunk)) => bytes.extend_from_slice(&chunk),
            Ok(None) | Err(_) => break,
        }
    }
    output_text(&bytes)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ipv6_hosts_are_bracketed_in_urls() {
        let v6: IpAddr = "fd00::2".parse().expect("ip");
        assert_eq!(host_text(None, v6), "[fd00::2]");
        assert_eq!(host_text(Some("::1"), v6), "[::1]");
        assert_eq!(host_text(Some("example.test"), v6), "example.test");
    }

    #[tokio::test]
    async fn http_get_passes_on_2xx_and_fails_with_the_status_and_body() {
        use tokio::io::{AsyncReadExt, AsyncWriteExt};
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0")
            .await
            .expect("bind");
        let port = listener.local_addr().expect("addr").port();
        let server = tokio::spawn(async move {
            for status in ["200 OK", "404 Not Found"] {
                let (mut conn, _) = listener.accept().await.expect("accept");
                let mut buf = [0u8; 1024];
                let _ = conn.read(&mut buf).await;
                let body = "nothing here";
                let reply = format!(
                    "HTTP/1.1 {status}\r\ncontent-length: {}\r\nconnection: close\r\n\r\n{body}",
                    body.len()
                );
                conn.write_all(reply.as_bytes()).await.expect("write");
            }
        });
        let url = format!("http://127.0.0.1:{port}/");
        let headers = [("X-Probe".to_string(), "1".to_string())];
        let timeout = Duration::from_secs(5);
        assert_eq!(
            get(&url, &headers, timeout).await,
            Outcome::from(Ok("HTTP 200 OK".into()))
        );
        let failed = get(&url, &headers, timeout)
            .await
            .result
            .expect_err("404 fails");
        assert!(
            failed.contains("404") && failed.contains("nothing here"),
            "{failed}"
        );
        server.await.expect("server");
    }

    /// One HTTP/1.1 answer per connection from `replies`, in order;
    /// returns the port and the request lines it saw.
    async fn serve(replies: Vec<String>) -> (u16, tokio::task::JoinHandle<Vec<String>>) {
        use tokio::io::{AsyncReadExt, AsyncWriteExt};
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0")
            .await
            .expect("bind");
        let port = listener.local_addr().expect("addr").port();
        let server = tokio::spawn(async move {
            let mut seen = Vec::new();
            for reply in replies {
                let (mut conn, _) = listener.accept().await.expect("accept");
                let mut buf = [0u8; 1024];
                let n = conn.read(&mut buf).await.expect("read");
                let request = String::from_utf8_lossy(&buf[..n]);
                seen.push(request.lines().next().unwrap_or("").to_string());
                conn.write_all(reply.as_bytes()).await.expect("write");
            }
            seen
        });
        (port, server)
    }

    fn redirect_to(location: &str) -> String {
        format!(
            "HTTP/1.1 302 Found\r\nlocation: {location}\r\ncontent-length: 5\r\nconnection: close\r\n\r\nmoved"
        )
    }

    #[tokio::test]
    async fn http_get_redirected_to_another_host_succeeds_with_a_warning_and_goes_nowhere() {
        // "localhost" is another host than "127.0.0.1", though the same
        // machine: a listener there would see the probe if it were followed.
        let elsewhere = tokio::net::TcpListener::bind("127.0.0.1:0")
            .await
            .expect("bind");
        let other = format!(
            "http://localhost:{}/stolen",
            elsewhere.local_addr().expect("addr").port()
        );
        let (port, server) = serve(vec![redirect_to(&other)]).await;
        let url = format!("http://127.0.0.1:{port}/healthz");
        let outcome = get(&url, &[], Duration::from_secs(5)).await;
        assert_eq!(outcome.result, Ok("HTTP 302 Found".into()));
        let warning = outcome.warning.expect("a warning");
        assert!(
            warning.starts_with("Probe terminated redirects")
                && warning.contains(&other)
                && warning.contains("moved"),
            "{warning}"
        );
        assert_eq!(server.await.expect("server"), ["GET /healthz HTTP/1.1"]);
        let followed = tokio::time::timeout(Duration::from_millis(200), elsewhere.accept()).await;
        assert!(followed.is_err(), "the redirect was followed");
    }

    #[tokio::test]
    async fn http_get_follows_redirects_on_the_same_host() {
        let (port, server) = serve(vec![
            redirect_to("/ready"),
            "HTTP/1.1 200 OK\r\ncontent-length: 0\r\nconnection: close\r\n\r\n".into(),
        ])
        .await;
        let url = format!("http://127.0.0.1:{port}/healthz");
        let outcome = get(&url, &[], Duration::from_secs(5)).await;
        assert_eq!(outcome, Outcome::from(Ok("HTTP 200 OK".into())));
        assert_eq!(
            server.await.expect("server"),
            ["GET /healthz HTTP/1.1", "GET /ready HTTP/1.1"]
        );
    }
}
