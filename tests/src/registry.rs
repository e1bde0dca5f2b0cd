//! A real registry for tests: Debian's `docker-registry` (the CNCF
//! distribution registry) on 127.0.0.1 with a free random port, storage in a
//! temp dir, optional TLS (a CA and server certificate made with the openssl
//! CLI at test time) and optional htpasswd basic auth (`htpasswd -B`). Its
//! access log goes to a file, so tests can check which requests it saw
//! (`ns=`, Range). Killed by PID when dropped.

use std::fs;
use std::net::{TcpListener, TcpStream};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::Duration;

use crate::wait_until;

const REGISTRY_BIN: &str = "/usr/bin/docker-registry";
/// A port picked free can be taken by another test before the registry
/// binds it; starting again on a new port is the cure.
const START_ATTEMPTS: usize = 5;

#[derive(Debug, Clone, Default)]
pub struct RegistryOptions {
    /// Serve HTTPS with a certificate signed by a test CA ([`Registry::ca_cert`]).
    pub tls: bool,
    /// Require HTTP basic auth with this user and password.
    pub basic_auth: Option<(String, String)>,
}

impl RegistryOptions {
    pub fn tls() -> Self {
        Self {
            tls: true,
            ..Self::default()
        }
    }

    pub fn basic_auth(user: &str, password: &str) -> Self {
        Self {
            basic_auth: Some((user.to_owned(), password.to_owned())),
            ..Self::default()
        }
    }
}

pub struct Registry {
    child: Child,
    port: u16,
    options: RegistryOptions,
    dir: tempfile::TempDir,
    log: PathBuf,
}

impl Registry {
    /// Starts a registry and waits (with a deadline) until it serves.
    pub fn start(options: RegistryOptions) -> Self {
        let dir = tempfile::Builder::new()
            .prefix("berth-registry-")
            .tempdir()
            .expect("registry temp dir");
        if options.tls {
            make_tls_files(dir.path());
        }
        if let Some((user, password)) = &options.basic_auth {
            make_htpasswd(&dir.path().join("htpasswd"), user, password);
        }
        let mut last_log = String::new();
        for attempt in 0..START_ATTEMPTS {
            let port = free_port();
            let log = dir.path().join(format!("registry-{attempt}.log"));
            let config = dir.path().join("config.yml");
            fs::write(&config, config_yaml(dir.path(), port, &options)).expect("registry config");
            let log_file = fs::File::create(&log).expect("registry log");
            let mut child = Command::new(REGISTRY_BIN)
                .arg("serve")
                .arg(&config)
                .stdin(Stdio::null())
                .stdout(log_file.try_clone().expect("log fd"))
                .stderr(log_file)
                .spawn()
                .unwrap_or_else(|err| {
                    panic!("starting {REGISTRY_BIN}: {err} (apt-get install docker-registry)")
                });
            if wait_ready(&mut child, &log, port) {
                return Registry {
                    child,
                    port,
                    options,
                    dir,
                    log,
                };
            }
            last_log = fs::read_to_string(&log).unwrap_or_default();
            let _ = child.kill();
            let _ = child.wait();
        }
        panic!(
            "docker-registry did not start after {START_ATTEMPTS} attempts; last log:\n{last_log}"
        );
    }

    /// `127.0.0.1:PORT`: the registry host part of image references.
    pub fn host(&self) -> String {
        format!("127.0.0.1:{}", self.port)
    }

    pub fn port(&self) -> u16 {
        self.port
    }

    /// `http://127.0.0.1:PORT` or `https://…`.
    pub fn url(&self) -> String {
        let scheme = if self.options.tls { "https" } else { "http" };
        format!("{scheme}://{}", self.host())
    }

    /// The CA that signed the server certificate (TLS registries only).
    pub fn ca_cert(&self) -> Option<PathBuf> {
        self.options.tls.then(|| self.dir.path().join("ca.pem"))
    }

    /// Where the registry stores blobs and manifests.
    pub fn storage_dir(&self) -> PathBuf {
        self.dir.path().join("storage")
    }

    /// Everything the registry logged so far, access log included.
    pub fn log(&self) -> String {
        fs::read_to_string(&self.log).unwrap_or_default()
    }

    /// The request targets (`/v2/…?ns=…`) of every request it logged with
    /// `method`.
    pub fn requests(&self, method: &str) -> Vec<String> {
        let marker = format!("\"{method} ");
        self.log()
            .lines()
            .filter_map(|line| {
                let start = line.find(&marker)? + marker.len();
                let rest = &line[start..];
                Some(rest.split(' ').next()?.to_owned())
            })
            .collect()
    }

    /// Arguments for `skopeo copy` to push here.
    pub fn skopeo_dest_args(&self) -> Vec<String> {
        let mut args = vec!["--dest-tls-verify=false".to_owned()];
        if let Some((user, password)) = &self.options.basic_auth {
            args.push(format!("--dest-creds={user}:{password}"));
        }
        args
    }

    /// The same for reading from here (`skopeo inspect`, copies out).
    pub fn skopeo_src_args(&self) -> Vec<String> {
        self.skopeo_dest_args()
            .into_iter()
            .map(|arg| arg.replacen("--dest-", "--src-", 1))
            .collect()
    }

    fn kill(&mut self) {
        // By PID: this child, never anything else's registry.
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

impl Drop for Registry {
    fn drop(&mut self) {
        self.kill();
    }
}

/// `true` once the registry listens on `port`; `false` if it exited (the
/// port was taken meanwhile).
fn wait_ready(child: &mut Child, log: &Path, port: u16) -> bool {
    wait_until(Duration::from_secs(20), "docker-registry to listen", || {
        if let Ok(Some(_)) = child.try_wait() {
            return Some(false);
        }
        let listening = fs::read_to_string(log).is_ok_and(|text| text.contains("listening on"));
        (listening && TcpStream::connect(("127.0.0.1", port)).is_ok()).then_some(true)
    })
}

/// A port the kernel just handed out, released for the registry to take.
pub fn free_port() -> u16 {
    TcpListener::bind("127.0.0.1:0")
        .and_then(|listener| listener.local_addr())
        .expect("binding an ephemeral port")
        .port()
}

fn config_yaml(dir: &Path, port: u16, options: &RegistryOptions) -> String {
    let mut yaml = format!(
        "version: 0.1\n\
         log:\n  level: info\n  formatter: text\n  accesslog:\n    disabled: false\n\
         storage:\n  filesystem:\n    rootdirectory: {}\n  delete:\n    enabled: true\n\
         http:\n  addr: 127.0.0.1:{port}\n  secret: berth-test-secret\n",
        dir.join("storage").display()
    );
    if options.tls {
        yaml.push_str(&format!(
            "  tls:\n    certificate: {}\n    key: {}\n",
            dir.join("server.pem").display(),
            dir.join("server.key").display()
        ));
    }
    if options.basic_auth.is_some() {
        yaml.push_str(&format!(
            "auth:\n  htpasswd:\n    realm: berth-test\n    path: {}\n",
            dir.join("htpasswd").display()
        ));
    }
    yaml
}

fn run(cmd: &mut Command, what: &str) {
    let output = cmd
        .output()
        .unwrap_or_else(|err| panic!("{what}: cannot run {:?}: {err}", cmd.get_program()));
    assert!(
        output.status.success(),
        "{what} failed: {}",
        String::from_utf8_lossy(&output.stderr)
    );
}

/// A test CA (`ca.pem`) and a server certificate for 127.0.0.1/localhost
/// signed by it (`server.pem`, `server.key`), with the extensions rustls
/// insists on (CA:TRUE on the CA, SANs and serverAuth on the leaf).
pub fn make_tls_files(dir: &Path) {
    let ec = [
        "-newkey",
        "ec",
        "-pkeyopt",
        "ec_paramgen_curve:prime256v1",
        "-nodes",
    ];
    run(
        Command::new("openssl")
            .current_dir(dir)
            .args(["req", "-x509"])
            .args(ec)
            .args(["-keyout", "ca.key", "-out", "ca.pem", "-days", "2"])
            .args(["-subj", "/CN=berth test CA"])
            .args(["-addext", "basicConstraints=critical,CA:TRUE"])
            .args(["-addext", "keyUsage=critical,keyCertSign,cRLSign"]),
        "openssl: making the test CA",
    );
    run(
        Command::new("openssl")
            .current_dir(dir)
            .arg("req")
            .args(ec)
            .args(["-keyout", "server.key", "-out", "server.csr"])
            .args(["-subj", "/CN=127.0.0.1"]),
        "openssl: making the server key",
    );
    fs::write(
        dir.join("server.ext"),
        "subjectAltName=IP:127.0.0.1,DNS:localhost\n\
         basicConstraints=CA:FALSE\n\
         keyUsage=critical,digitalSignature\n\
         extendedKeyUsage=serverAuth\n",
    )
    .expect("server.ext");
    run(
        Command::new("openssl")
            .current_dir(dir)
            .args(["x509", "-req", "-in", "server.csr", "-CA", "ca.pem"])
            .args(["-CAkey", "ca.key", "-CAcreateserial", "-out", "server.pem"])
            .args(["-days", "2", "-extfile", "server.ext"]),
        "openssl: signing the server certificate",
    );
}

/// A docker `config.json` with an `auth` entry (base64 `user:password`) per
/// `(host, user, password)`.
pub fn docker_config(entries: &[(&str, &str, &str)]) -> String {
    use base64::Engine as _;
    let auths: Vec<String> = entries
        .iter()
        .map(|(host, user, password)| {
            let auth =
                base64::engine::general_purpose::STANDARD.encode(format!("{user}:{password}"));
            format!(r#""{host}": {{"auth": "{auth}"}}"#)
        })
        .collect();
    format!(r#"{{"auths": {{{}}}}}"#, auths.join(", "))
}

/// Writes a [`docker_config`] for one host as `dir/auth.json`; returns its
/// path, for `--auth-file`.
pub fn write_auth_file(dir: &Path, host: &str, user: &str, password: &str) -> String {
    let path = dir.join("auth.json");
    fs::write(&path, docker_config(&[(host, user, password)])).expect("writing auth.json");
    path.to_str().expect("a UTF-8 temp path").to_owned()
}

/// An htpasswd file with a bcrypt entry (the only hash docker-registry takes).
pub fn make_htpasswd(path: &Path, user: &str, password: &str) {
    let output = Command::new("htpasswd")
        .args(["-Bbn", user, password])
        .output()
        .expect("running htpasswd (apt-get install apache2-utils)");
    assert!(
        output.status.success(),
        "htpasswd: {}",
        String::from_utf8_lossy(&output.stderr)
    );
    fs::write(path, output.stdout).expect("writing htpasswd");
}
