//! Reading a containerd `certs.d` directory into a [`HostsConfig`]: one
//! subdirectory per registry host (`docker.io`, `registry.local:5000` or
//! `registry.local_5000_`, `_default`), each with a `hosts.toml` or, as
//! containerd also accepts, Docker's certificate files (`*.crt` CAs,
//! `*.cert` + `*.key` client pairs).

use std::path::{Path, PathBuf};
use std::time::Duration;

use super::hosts::{
    Capabilities, ClientCert, ClientSettings, HostEntry, HostsConfig, RegistryHosts,
    host_from_dir_name,
};

#[derive(Debug, thiserror::Error)]
pub enum HostsDirError {
    #[error("reading {path}: {source}")]
    Read {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
    #[error("{path}: {reason}")]
    Invalid { path: PathBuf, reason: String },
}

/// Reads every host directory under `dir`. Any file that does not parse is
/// an error naming it (the caller keeps its previous config).
pub fn load_certs_d(dir: &Path) -> Result<HostsConfig, HostsDirError> {
    let read_err = |path: &Path| {
        let path = path.to_path_buf();
        move |source| HostsDirError::Read { path, source }
    };
    let mut names = Vec::new();
    for entry in std::fs::read_dir(dir).map_err(read_err(dir))? {
        let entry = entry.map_err(read_err(dir))?;
        if entry.path().is_dir()
            && let Some(name) = entry.file_name().to_str()
            && !name.starts_with('.')
        {
            names.push(name.to_owned());
        }
    }
    // `host_port_` and `host:port` can both exist; containerd prefers the
    // former, so read it last to let it win.
    names.sort_by_key(|name| (name.ends_with('_') && name != "_default", name.clone()));
    let mut config = HostsConfig::new();
    for name in names {
        let host_dir = dir.join(&name);
        let file = host_dir.join("hosts.toml");
        let registry = match std::fs::read(&file) {
            Ok(bytes) => parse_hosts_toml(&file, &bytes)?,
            Err(err) if err.kind() == std::io::ErrorKind::NotFound => docker_cert_files(&host_dir)?,
            Err(err) => return Err(read_err(&file)(err)),
        };
        config.insert(host_from_dir_name(&name), registry);
    }
    Ok(config)
}

/// Docker's layout: every `*.crt` is a CA, every `x.cert` with an `x.key`
/// is a client certificate.
fn docker_cert_files(dir: &Path) -> Result<RegistryHosts, HostsDirError> {
    let mut files: Vec<PathBuf> = std::fs::read_dir(dir)
        .map_err(|source| HostsDirError::Read {
            path: dir.to_path_buf(),
            source,
        })?
        .filter_map(|entry| Some(entry.ok()?.path()))
        .collect();
    files.sort();
    let mut client = ClientSettings::default();
    for file in &files {
        match file.extension().and_then(|e| e.to_str()) {
            Some("crt") => client.ca.push(file.clone()),
            Some("cert") => {
                let key = file.with_extension("key");
                if key.is_file() {
                    client.client_certs.push(ClientCert {
                        cert: file.clone(),
                        key: Some(key),
                    });
                }
            }
            _ => {}
        }
    }
    Ok(RegistryHosts {
        source: dir.display().to_string(),
        hosts: Vec::new(),
        server: HostEntry {
            client,
            ..HostEntry::default()
        },
    })
}

/// Parses one hosts.toml (containerd's format). Relative `ca`/`client`
/// paths resolve against the file's directory.
pub fn parse_hosts_toml(path: &Path, bytes: &[u8]) -> Result<RegistryHosts, HostsDirError> {
    let invalid = |reason: String| HostsDirError::Invalid {
        path: path.to_path_buf(),
        reason,
    };
    let text = std::str::from_utf8(bytes).map_err(|_| invalid("not UTF-8".to_owned()))?;
    let table: toml::Table = toml::from_str(text).map_err(|err| invalid(err.to_string()))?;
    let base = path.parent().unwrap_or(Path::new("."));
    let mut server = entry_from_table("", &table, base).map_err(invalid)?;
    for key in table.keys() {
        if !["server", "host"].contains(&key.as_str()) && !ENTRY_KEYS.contains(&key.as_str()) {
            return Err(invalid(format!("unknown key {key:?}")));
        }
    }
    if let Some(url) = table.get("server") {
        server.url = url
            .as_str()
            .ok_or_else(|| invalid("server must be a string".to_owned()))?
            .to_owned();
    }
    let mut hosts = Vec::new();
    if let Some(host_tables) = table.get("host") {
        let host_tables = host_tables
            .as_table()
            .ok_or_else(|| invalid("host must be a table of [host.\"url\"] tables".to_owned()))?;
        // `preserve_order`: file order is the order hosts are tried in.
        for (url, value) in host_tables {
            let entry = value
                .as_table()
                .ok_or_else(|| invalid(format!("host {url:?} must be a table")))?;
            for key in entry.keys() {
                if !ENTRY_KEYS.contains(&key.as_str()) {
                    return Err(invalid(format!("host {url:?}: unknown key {key:?}")));
                }
            }
            hosts.push(
                entry_from_table(url, entry, base)
                    .map_err(|reason| invalid(format!("host {url:?}: {reason}")))?,
            );
        }
    }
    Ok(RegistryHosts {
        source: path.display().to_string(),
        hosts,
        server,
    })
}

const ENTRY_KEYS: [&str; 7] = [
    "capabilities",
    "ca",
    "client",
    "skip_verify",
    "header",
    "override_path",
    "dial_timeout",
];

fn entry_from_table(url: &str, table: &toml::Table, base: &Path) -> Result<HostEntry, String> {
    let resolve = |p: &str| {
        let p = Path::new(p);
        if p.is_absolute() {
            p.to_path_buf()
        } else {
            base.join(p)
        }
    };
    let strings = |value: &toml::Value, what: &str| -> Result<Vec<String>, String> {
        match value {
            toml::Value::String(s) => Ok(vec![s.clone()]),
            toml::Value::Array(items) => items
                .iter()
                .map(|item| {
                    item.as_str()
                        .map(str::to_owned)
                        .ok_or_else(|| format!("{what} must be strings"))
                })
                .collect(),
            _ => Err(format!("{what} must be a string or an array of strings")),
        }
    };
    let mut entry = HostEntry {
        url: url.to_owned(),
        ..HostEntry::default()
    };
    if let Some(caps) = table.get("capabilities") {
        let mut parsed = Capabilities {
            pull: false,
            resolve: false,
            push: false,
        };
        for cap in strings(caps, "capabilities")? {
            match cap.to_ascii_lowercase().as_str() {
                "pull" => parsed.pull = true,
                "resolve" => parsed.resolve = true,
                "push" => parsed.push = true,
                other => {
                    return Err(format!(
                        "unknown capability {other:?} (pull, resolve, push)"
                    ));
                }
            }
        }
        entry.capabilities = parsed;
    }
    if let Some(ca) = table.get("ca") {
        entry.client.ca = strings(ca, "ca")?.iter().map(|p| resolve(p)).collect();
    }
    if let Some(client) = table.get("client") {
        let pair = |value: &toml::Value| -> Result<ClientCert, String> {
            match value {
                toml::Value::String(cert) => Ok(ClientCert {
                    cert: resolve(cert),
                    key: None,
                }),
                toml::Value::Array(parts) => match parts.as_slice() {
                    [toml::Value::String(cert), toml::Value::String(key)] => Ok(ClientCert {
                        cert: resolve(cert),
                        key: Some(resolve(key)),
                    }),
                    _ => Err("a client pair must be [cert, key]".to_owned()),
                },
                _ => Err("client must be a path, [cert, key], or an array of those".to_owned()),
            }
        };
        // As containerd: a string, or an array whose items are single
        // files (strings) or [cert, key] pairs.
        entry.client.client_certs = match client {
            toml::Value::Array(items) => items.iter().map(pair).collect::<Result<_, _>>()?,
            other => vec![pair(other)?],
        };
    }
    if let Some(skip) = table.get("skip_verify") {
        entry.client.skip_verify = skip
            .as_bool()
            .ok_or_else(|| "skip_verify must be true or false".to_owned())?;
    }
    if let Some(headers) = table.get("header") {
        let headers = headers
            .as_table()
            .ok_or_else(|| "header must be a table of name = value(s)".to_owned())?;
        for (name, values) in headers {
            for value in strings(values, &format!("header {name}"))? {
                entry.client.headers.push((name.clone(), value));
            }
        }
    }
    if let Some(override_path) = table.get("override_path") {
        entry.override_path = override_path
            .as_bool()
            .ok_or_else(|| "override_path must be true or false".to_owned())?;
    }
    if let Some(timeout) = table.get("dial_timeout") {
        let text = timeout
            .as_str()
            .ok_or_else(|| "dial_timeout must be a duration string like \"5s\"".to_owned())?;
        entry.client.dial_timeout = Some(parse_go_duration(text)?);
    }
    Ok(entry)
}

/// Go's `time.ParseDuration` for the units a timeout uses: `500ms`, `5s`,
/// `1m30s`, `1.5s`.
pub fn parse_go_duration(text: &str) -> Result<Duration, String> {
    let bad = || format!("invalid duration {text:?} (e.g. 500ms, 5s, 1m30s)");
    let mut rest = text.trim();
    if rest.is_empty() {
        return Err(bad());
    }
    let mut total = 0f64;
    while !rest.is_empty() {
        let number_len = rest
            .find(|c: char| !(c.is_ascii_digit() || c == '.'))
            .ok_or_else(bad)?;
        let number: f64 = rest[..number_len].parse().map_err(|_| bad())?;
        rest = &rest[number_len..];
        let unit_len = rest
            .find(|c: char| c.is_ascii_digit() || c == '.')
            .unwrap_or(rest.len());
        let seconds = match &rest[..unit_len] {
            "ns" => 1e-9,
            "us" | "µs" => 1e-6,
            "ms" => 1e-3,
            "s" => 1.0,
            "m" => 60.0,
            "h" => 3600.0,
            _ => return Err(bad()),
        };
        total += number * seconds;
        rest = &rest[unit_len..];
    }
    Ok(Duration::from_secs_f64(total))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn hosts_toml_in_file_order_with_every_field() {
        let text = r#"
server = "https://registry.example"
ca = "root.pem"

[host."https://zz-mirror.local"]
  capabilities = ["pull"]
  client = [["client.cert", "/abs/client.key"]]
  header = { X-Token = ["a", "b"] }
  dial_timeout = "1m30s"

[host."http://aa-mirror.local:5000/prefix"]
  capabilities = ["pull", "resolve"]
  skip_verify = true
  override_path = true
  client = "both.pem"
"#;
        let parsed = parse_hosts_toml(Path::new("/etc/certs.d/r/hosts.toml"), text.as_bytes())
            .expect("parse");
        assert_eq!(parsed.server.url, "https://registry.example");
        assert_eq!(
            parsed.server.client.ca,
            [PathBuf::from("/etc/certs.d/r/root.pem")]
        );
        let urls: Vec<&str> = parsed.hosts.iter().map(|h| h.url.as_str()).collect();
        assert_eq!(
            urls,
            [
                "https://zz-mirror.local",
                "http://aa-mirror.local:5000/prefix"
            ]
        );
        let first = &parsed.hosts[0];
        assert!(first.capabilities.pull && !first.capabilities.resolve);
        assert_eq!(
            first.client.client_certs,
            [ClientCert {
                cert: PathBuf::from("/etc/certs.d/r/client.cert"),
                key: Some(PathBuf::from("/abs/client.key")),
            }]
        );
        assert_eq!(
            first.client.headers,
            [
                ("X-Token".to_owned(), "a".to_owned()),
                ("X-Token".to_owned(), "b".to_owned())
            ]
        );
        assert_eq!(first.client.dial_timeout, Some(Duration::from_secs(90)));
        let second = &parsed.hosts[1];
        assert!(second.override_path && second.client.skip_verify);
        assert_eq!(second.client.client_certs[0].key, None);
    }

    #[test]
    fn bad_hosts_toml_names_the_file_and_problem() {
        for (text, fragment) in [
            ("server = 1", "server"),
            ("[host.\"https://m\"]\ncapabilities = [\"fly\"]", "fly"),
            ("[host.\"https://m\"]\nskipverify = true", "skipverify"),
            ("server = ", "TOML"),
        ] {
            let err =
                parse_hosts_toml(Path::new("/x/hosts.toml"), text.as_bytes()).expect_err(text);
            let message = err.to_string();
            assert!(message.contains("/x/hosts.toml"), "{message}");
            assert!(
                message.contains(fragment) || fragment == "TOML",
                "{text}: {message}"
            );
        }
    }

    #[test]
    fn go_durations() {
        assert_eq!(parse_go_duration("500ms"), Ok(Duration::from_millis(500)));
        assert_eq!(parse_go_duration("1.5s"), Ok(Duration::from_millis(1500)));
        assert_eq!(parse_go_duration("2m"), Ok(Duration::from_secs(120)));
        assert!(parse_go_duration("5").is_err());
        assert!(parse_go_duration("fast").is_err());
        assert!(parse_go_duration("").is_err());
    }

    #[test]
    fn certs_d_reads_hosts_toml_and_docker_cert_files() {
        let dir = tempfile::tempdir().expect("tempdir");
        let hub = dir.path().join("docker.io");
        std::fs::create_dir_all(&hub).expect("mkdir");
        std::fs::write(
            hub.join("hosts.toml"),
            "[host.\"http://127.0.0.1:1\"]\ncapabilities = [\"pull\"]\n",
        )
        .expect("write");
        let legacy = dir.path().join("registry.local_5000_");
        std::fs::create_dir_all(&legacy).expect("mkdir");
        std::fs::write(legacy.join("ca.crt"), "pem").expect("write");
        std::fs::write(legacy.join("me.cert"), "pem").expect("write");
        std::fs::write(legacy.join("me.key"), "pem").expect("write");

        let config = load_certs_d(dir.path()).expect("load");
        let hub = config.get("docker.io").expect("docker.io");
        assert_eq!(hub.hosts[0].url, "http://127.0.0.1:1");
        let local = config.get("registry.local:5000").expect("host_port_ form");
        assert_eq!(local.server.client.ca, [legacy.join("ca.crt")]);
        assert_eq!(
            local.server.client.client_certs[0].key,
            Some(legacy.join("me.key"))
        );
    }
}
