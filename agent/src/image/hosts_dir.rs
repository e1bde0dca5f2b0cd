//! Reading registry configuration from disk into a [`HostsConfig`]:
//! - a containerd `certs.d` directory: one subdirectory per registry host
//!   (`docker.io`, `registry.local:5000` or `registry.local_5000_`,
//!   `_default`), each with a `hosts.toml` or, as containerd also accepts,
//!   Docker's certificate files (`*.crt` CAs, `*.cert` + `*.key` pairs);
//! - a manifest directory, as `berth pull` sees it: every `certs.d/*/hosts.toml`
//!   and every `berth/v1 Registry` object in it (the files the agent reads,
//!   chosen by the same `manifests::classify_path`).

use std::path::{Path, PathBuf};

use manifests::{ManifestFile, Object};

use super::hosts::{ClientCert, ClientSettings, HostEntry, HostsConfig, HostsError, RegistryHosts};

#[derive(Debug, thiserror::Error)]
pub enum HostsDirError {
    #[error("reading {path}")]
    Read {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
    /// Every diagnostic of a hosts.toml that does not parse, one per line
    /// (`path:line:col: error: message`).
    #[error("{}", .diagnostics.join("\n"))]
    Invalid { diagnostics: Vec<String> },
    #[error(transparent)]
    Hosts(#[from] HostsError),
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
        // The manifests crate owns the directory-name rules (`host_port_`).
        let Some(ManifestFile::HostsToml { host }) =
            manifests::classify_path(&Path::new("certs.d").join(&name).join("hosts.toml"))
        else {
            continue;
        };
        let registry = match std::fs::read(&file) {
            Ok(bytes) => parse_hosts_file(&file, &host, &bytes)?,
            Err(err) if err.kind() == std::io::ErrorKind::NotFound => docker_cert_files(&host_dir)?,
            Err(err) => return Err(read_err(&file)(err)),
        };
        config.insert(host, registry);
    }
    Ok(config)
}

/// The registry configuration in a manifest directory: its hosts.toml
/// files and Registry objects. A hosts.toml or a Registry document that does
/// not parse is an error naming it; other manifests' problems are not this
/// reader's business (`berth validate` reports them).
pub fn load_manifest_dir(dir: &Path) -> Result<HostsConfig, HostsDirError> {
    let mut config = HostsConfig::new();
    let mut pending = vec![dir.to_path_buf()];
    while let Some(current) = pending.pop() {
        let read_err = |source| HostsDirError::Read {
            path: current.clone(),
            source,
        };
        let mut entries: Vec<PathBuf> = std::fs::read_dir(&current)
            .map_err(read_err)?
            .map(|entry| entry.map(|e| e.path()))
            .collect::<Result<_, _>>()
            .map_err(read_err)?;
        entries.sort();
        for path in entries {
            let relative = path.strip_prefix(dir).unwrap_or(&path);
            if relative
                .file_name()
                .and_then(|n| n.to_str())
                .is_some_and(|n| n.starts_with('.'))
            {
                continue;
            }
            if path.is_dir() {
                pending.push(path);
                continue;
            }
            match manifests::classify_path(relative) {
                Some(ManifestFile::HostsToml { host }) => {
                    let bytes = read_small(&path)?;
                    config.insert(host.clone(), parse_hosts_file(&path, &host, &bytes)?);
                }
                Some(ManifestFile::Yaml | ManifestFile::Json) => {
                    let bytes = read_small(&path)?;
                    for (host, registry) in registry_objects(&path, &bytes)? {
                        config.insert(host, registry);
                    }
                }
                None => {}
            }
        }
    }
    Ok(config)
}

fn read_small(path: &Path) -> Result<Vec<u8>, HostsDirError> {
    let read_err = |source| HostsDirError::Read {
        path: path.to_path_buf(),
        source,
    };
    let size = std::fs::metadata(path).map_err(read_err)?.len();
    if size > manifests::MAX_FILE_BYTES {
        return Err(HostsDirError::Invalid {
            diagnostics: vec![manifests::file_too_large(path, size).to_string()],
        });
    }
    std::fs::read(path).map_err(read_err)
}

/// The Registry objects of one manifest file, by configured host.
fn registry_objects(
    path: &Path,
    bytes: &[u8],
) -> Result<Vec<(String, RegistryHosts)>, HostsDirError> {
    let parsed = manifests::parse_file(path, bytes);
    let mut found = Vec::new();
    for document in &parsed.documents {
        let is_registry = document
            .key
            .as_ref()
            .is_some_and(|key| key.kind == manifests::Kind::Registry);
        if is_registry && document.has_errors() {
            return Err(HostsDirError::Invalid {
                diagnostics: document
                    .diagnostics
                    .iter()
                    .filter(|d| d.is_error())
                    .map(ToString::to_string)
                    .collect(),
            });
        }
        if let Some(Object::Registry(registry)) = &document.object {
            let source = format!("Registry/{} ({})", registry.host(), path.display());
            found.push((
                registry.host().to_owned(),
                RegistryHosts::from_registry(registry, &source)?,
            ));
        }
    }
    Ok(found)
}

/// One hosts.toml, through the manifests crate's parser (positions, typo
/// suggestions), into the resolver's form.
pub fn parse_hosts_file(
    file: &Path,
    host: &str,
    bytes: &[u8],
) -> Result<RegistryHosts, HostsDirError> {
    let parsed = manifests::parse_hosts_toml(file, host, bytes);
    if parsed.has_errors() {
        return Err(HostsDirError::Invalid {
            diagnostics: parsed
                .all_diagnostics()
                .filter(|d| d.is_error())
                .map(ToString::to_string)
                .collect(),
        });
    }
    let registry = parsed.objects().find_map(|object| match object {
        Object::Registry(registry) => Some(registry),
        _ => None,
    });
    match registry {
        Some(registry) => Ok(RegistryHosts::from_registry(
            registry,
            &file.display().to_string(),
        )?),
        None => Err(HostsDirError::Invalid {
            diagnostics: vec![format!(
                "{}: holds no registry configuration",
                file.display()
            )],
        }),
    }
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

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn hosts_toml_gives_endpoints_in_file_order_with_every_setting() {
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
        let file = Path::new("/etc/certs.d/registry.example/hosts.toml");
        let hosts = parse_hosts_file(file, "registry.example", text.as_bytes()).expect("parse");
        assert_eq!(hosts.source, file.display().to_string());
        let mut config = HostsConfig::new();
        config.insert("registry.example", hosts);
        let endpoints = config.endpoints("registry.example").expect("endpoints");
        let roots: Vec<String> = endpoints.iter().map(|e| e.display_name()).collect();
        assert_eq!(
            roots,
            [
                "https://zz-mirror.local/v2",
                "http://aa-mirror.local:5000/prefix",
                "https://registry.example/v2"
            ]
        );
        let [first, second, server] = endpoints.as_slice() else {
            panic!("three endpoints");
        };
        assert!(first.capabilities.pull && !first.capabilities.resolve);
        assert_eq!(
            first.client.client_certs,
            [ClientCert {
                cert: PathBuf::from("/etc/certs.d/registry.example/client.cert"),
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
        assert_eq!(
            first.client.dial_timeout,
            Some(std::time::Duration::from_secs(90))
        );
        assert!(second.client.skip_verify);
        assert_eq!(second.namespace.as_deref(), Some("registry.example"));
        assert_eq!(
            server.client.ca,
            [PathBuf::from("/etc/certs.d/registry.example/root.pem")]
        );
        assert!(server.is_server && server.namespace.is_none());
    }

    #[test]
    fn a_bad_hosts_toml_is_an_error_with_file_line_and_column() {
        let text = "[host.\"https://m\"]\ncapabilities = [\"fly\"]\n";
        let err = parse_hosts_file(Path::new("/x/hosts.toml"), "m", text.as_bytes())
            .expect_err("unknown capability");
        let message = err.to_string();
        assert!(message.starts_with("/x/hosts.toml:2:"), "{message}");
        assert!(message.contains("fly"), "{message}");

        let text = "[host.\"https://m\"]\ndial_timeout = \"soon\"\n";
        let err = parse_hosts_file(Path::new("/x/hosts.toml"), "m", text.as_bytes())
            .expect_err("bad duration");
        assert!(err.to_string().contains("soon"), "{err}");
    }

    #[test]
    fn a_registry_object_converts_like_its_hosts_toml() {
        let yaml = r#"
apiVersion: berth/v1
kind: Registry
metadata:
  name: docker.io
spec:
  hosts:
    - url: http://mirror.local:5000
      capabilities: [pull, resolve]
"#;
        let parsed = manifests::parse_file(Path::new("/m/registry.yaml"), yaml.as_bytes());
        assert!(
            !parsed.has_errors(),
            "{:?}",
            parsed.all_diagnostics().collect::<Vec<_>>()
        );
        let Some(Object::Registry(registry)) = parsed.objects().next() else {
            panic!("a Registry object");
        };
        let hosts = RegistryHosts::from_registry(registry, "Registry/docker.io").expect("convert");
        let mut config = HostsConfig::new();
        config.insert(registry.host(), hosts);
        let endpoints = config.endpoints("docker.io").expect("endpoints");
        let urls: Vec<String> = endpoints
            .iter()
            .map(|e| e.url("library/busybox", "manifests", "1"))
            .collect();
        assert_eq!(
            urls,
            [
                "http://mirror.local:5000/v2/library/busybox/manifests/1?ns=docker.io",
                "https://registry-1.docker.io/v2/library/busybox/manifests/1"
            ]
        );
        assert!(!endpoints[0].capabilities.push);
    }

    #[test]
    fn a_manifest_dir_gives_its_hosts_toml_files_and_registry_objects() {
        let dir = tempfile::tempdir().expect("tempdir");
        let certs = dir.path().join("site/certs.d/quay.io");
        std::fs::create_dir_all(&certs).expect("mkdir");
        std::fs::write(
            certs.join("hosts.toml"),
            "server = \"http://quay-mirror\"\n",
        )
        .expect("write");
        std::fs::write(
            dir.path().join("registries.yaml"),
            "apiVersion: berth/v1\nkind: Registry\nmetadata:\n  name: docker.io\n\
             spec:\n  hosts:\n    - url: http://hub-mirror\n---\n\
             apiVersion: v1\nkind: ConfigMap\nmetadata:\n  name: other\n",
        )
        .expect("write");
        std::fs::write(dir.path().join("broken-pod.yaml"), "kind: Pod\nspec: [").expect("write");
        std::fs::write(dir.path().join("notes.yaml.bak"), "kind: Registry").expect("write");

        let config = load_manifest_dir(dir.path()).expect("load");
        let quay = config.endpoints("quay.io").expect("quay");
        assert_eq!(quay[0].origin, "http://quay-mirror");
        let hub = config.endpoints("docker.io").expect("hub");
        assert_eq!(hub[0].origin, "http://hub-mirror");
        assert!(
            hub[0].source.contains("registries.yaml"),
            "{}",
            hub[0].source
        );

        std::fs::write(
            dir.path().join("bad-registry.yaml"),
            "apiVersion: berth/v1\nkind: Registry\nmetadata:\n  name: ghcr.io\n\
             spec:\n  hosts:\n    - url: http://m\n      capabilites: [pull]\n",
        )
        .expect("write");
        let err = load_manifest_dir(dir.path()).expect_err("typo in a Registry");
        assert!(err.to_string().contains("bad-registry.yaml"), "{err}");
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
