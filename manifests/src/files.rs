//! Which files in a manifest directory count, and as what. The agent's
//! directory source and `berth validate` both ask [`classify_path`], so they
//! never disagree about what is a manifest.

use std::path::{Component, Path};

/// Files larger than this are refused before they are read into the parser,
/// with a clear error (a manifest directory is not a place for data).
pub const MAX_FILE_BYTES: u64 = 4 * 1024 * 1024;

/// The diagnostic for a file over [`MAX_FILE_BYTES`]. Callers that see the
/// size before reading (`metadata().len()`) should report this instead of
/// reading the file; [`crate::parse_file`] reports it for oversized input.
pub fn file_too_large(path: &Path, size: u64) -> crate::Diagnostic {
    crate::Diagnostic {
        file: path.to_owned(),
        line: 1,
        column: 1,
        severity: crate::Severity::Error,
        field: None,
        message: format!(
            "file is {size} bytes, over the {} MiB limit for a manifest; split it or keep data out of the manifest directory",
            MAX_FILE_BYTES / (1024 * 1024)
        ),
    }
}

/// What a path under the manifest directory is.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum ManifestFile {
    /// `*.yaml`, `*.yml`: one or more YAML documents.
    Yaml,
    /// `*.json`: one JSON document.
    Json,
    /// `certs.d/<host>/hosts.toml`: containerd's registry configuration
    /// for `host` (`docker.io`, `registry.local:5000`, `_default`).
    HostsToml { host: String },
}

/// Classifies a path relative to the manifest directory; `None` means
/// "not ours, ignore it".
///
/// Ignored: anything with a hidden component (`.git/`, `.#x`, `.x.swp`,
/// Kubernetes' `..2026_01_01…` snapshot dirs — their files are reached
/// through the `..data` symlink's target names instead, i.e. through the
/// visible symlinks in the parent), editor leftovers (`x~`, vim's `4913`),
/// and every other extension (`web.yaml.bak`, `web.yaml.orig`).
///
/// `certs.d/<host>/hosts.toml` may sit at any depth; containerd's
/// `host_port_` directory spelling (`registry.local_5000_`) names
/// `registry.local:5000`.
pub fn classify_path(relative_path: &Path) -> Option<ManifestFile> {
    let mut names = Vec::new();
    for component in relative_path.components() {
        match component {
            Component::Normal(name) => names.push(name.to_str()?),
            Component::CurDir => {}
            // Absolute or `..` paths are not inside the manifest directory.
            Component::RootDir | Component::Prefix(_) | Component::ParentDir => return None,
        }
    }
    let (file, dirs) = names.split_last()?;
    if names.iter().any(|n| n.starts_with('.')) || is_editor_leftover(file) {
        return None;
    }
    if *file == "hosts.toml" {
        if let [.., certs, host] = dirs
            && *certs == "certs.d"
        {
            return Some(ManifestFile::HostsToml {
                host: host_from_dir_name(host),
            });
        }
        return None;
    }
    // Nothing inside a certs.d tree is a manifest: it holds certificates
    // and hosts.toml files only.
    if dirs.contains(&"certs.d") {
        return None;
    }
    let (_, extension) = file.rsplit_once('.')?;
    match extension {
        "yaml" | "yml" => Some(ManifestFile::Yaml),
        "json" => Some(ManifestFile::Json),
        _ => None,
    }
}

fn is_editor_leftover(name: &str) -> bool {
    name.ends_with('~')
        || name == "4913"
        || name.ends_with(".swp")
        || name.ends_with(".swx")
        || name.starts_with('#') && name.ends_with('#')
}

/// `registry.local_5000_` → `registry.local:5000`; other names unchanged.
fn host_from_dir_name(dir: &str) -> String {
    if let Some(stem) = dir.strip_suffix('_')
        && let Some((host, port)) = stem.rsplit_once('_')
        && !host.is_empty()
        && !port.is_empty()
        && port.bytes().all(|b| b.is_ascii_digit())
    {
        return format!("{host}:{port}");
    }
    dir.to_owned()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn classify(path: &str) -> Option<ManifestFile> {
        classify_path(Path::new(path))
    }

    #[test]
    fn manifests_by_extension_at_any_depth() {
        assert_eq!(classify("web.yaml"), Some(ManifestFile::Yaml));
        assert_eq!(classify("apps/web/pod.yml"), Some(ManifestFile::Yaml));
        assert_eq!(classify("./x.json"), Some(ManifestFile::Json));
        assert_eq!(
            classify("..data/b.yaml"),
            None,
            "reached through the visible symlink instead"
        );
        assert_eq!(classify("b.yaml"), Some(ManifestFile::Yaml));
    }

    #[test]
    fn leftovers_and_other_extensions_are_ignored() {
        for ignored in [
            "web.yaml.bak",
            "web.yaml~",
            ".web.yaml.swp",
            ".#web.yaml",
            "#web.yaml#",
            "4913",
            ".hidden.yaml",
            ".git/config.yaml",
            "..2026_01_01_00_00_00.123/b.yaml",
            "README.md",
            "yaml",
            "../outside.yaml",
            "/abs.yaml",
        ] {
            assert_eq!(classify(ignored), None, "{ignored}");
        }
    }

    #[test]
    fn hosts_toml_under_certs_d() {
        assert_eq!(
            classify("certs.d/docker.io/hosts.toml"),
            Some(ManifestFile::HostsToml {
                host: "docker.io".into()
            })
        );
        assert_eq!(
            classify("mirrors/certs.d/registry.local:5000/hosts.toml"),
            Some(ManifestFile::HostsToml {
                host: "registry.local:5000".into()
            })
        );
        assert_eq!(
            classify("certs.d/registry.local_5000_/hosts.toml"),
            Some(ManifestFile::HostsToml {
                host: "registry.local:5000".into()
            })
        );
        assert_eq!(
            classify("certs.d/_default/hosts.toml"),
            Some(ManifestFile::HostsToml {
                host: "_default".into()
            })
        );
        assert_eq!(classify("hosts.toml"), None);
        assert_eq!(classify("certs.d/hosts.toml"), None);
        assert_eq!(classify("certs.d/docker.io/ca.yaml"), None);
    }
}
