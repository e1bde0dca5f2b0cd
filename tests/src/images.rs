//! Test images with real content, built at test time: OCI image layouts
//! whose layers are deterministic gzip-compressed tars (sorted entries, fixed
//! mtimes, uid/gid 0) of real file trees and Debian's static busybox;
//! single-platform images and multi-arch indexes; pushed to a test
//! [`Registry`] with skopeo (as OCI, or converted to Docker schema2), or
//! written as an OCI archive for import tests.
//!
//! ```ignore
//! let registry = Registry::start(RegistryOptions::default());
//! let image = busybox_image(&registry, "berth/busybox");
//! // image.reference = "127.0.0.1:PORT/berth/busybox:latest", image.digest
//! ```

use std::collections::BTreeMap;
use std::fs;
use std::io::Write;
use std::path::{Path, PathBuf};
use std::process::Command;

use flate2::Compression;
use flate2::write::GzEncoder;
use serde_json::json;
use sha2::{Digest as _, Sha256};

use crate::registry::Registry;

pub const OCI_MANIFEST: &str = "application/vnd.oci.image.manifest.v1+json";
pub const OCI_INDEX: &str = "application/vnd.oci.image.index.v1+json";
pub const OCI_CONFIG: &str = "application/vnd.oci.image.config.v1+json";
pub const OCI_LAYER_GZIP: &str = "application/vnd.oci.image.layer.v1.tar+gzip";
/// Debian's busybox-static.
pub const BUSYBOX: &str = "/bin/busybox";

/// One entry of a layer.
#[derive(Debug, Clone)]
pub enum Entry {
    Dir {
        path: String,
        mode: u32,
    },
    File {
        path: String,
        contents: Vec<u8>,
        mode: u32,
    },
    Symlink {
        path: String,
        target: String,
    },
    Hardlink {
        path: String,
        target: String,
    },
    /// A named pipe (an image may hold one where a file is expected).
    Fifo {
        path: String,
    },
    /// A character device node (`1:3` is `/dev/null`).
    CharDevice {
        path: String,
        major: u32,
        minor: u32,
    },
}

impl Entry {
    pub fn dir(path: &str) -> Self {
        Entry::Dir {
            path: path.to_owned(),
            mode: 0o755,
        }
    }

    pub fn file(path: &str, contents: impl Into<Vec<u8>>) -> Self {
        Entry::File {
            path: path.to_owned(),
            contents: contents.into(),
            mode: 0o644,
        }
    }

    pub fn executable(path: &str, contents: impl Into<Vec<u8>>) -> Self {
        Entry::File {
            path: path.to_owned(),
            contents: contents.into(),
            mode: 0o755,
        }
    }

    pub fn symlink(path: &str, target: &str) -> Self {
        Entry::Symlink {
            path: path.to_owned(),
            target: target.to_owned(),
        }
    }

    pub fn hardlink(path: &str, target: &str) -> Self {
        Entry::Hardlink {
            path: path.to_owned(),
            target: target.to_owned(),
        }
    }

    pub fn fifo(path: &str) -> Self {
        Entry::Fifo {
            path: path.to_owned(),
        }
    }

    pub fn char_device(path: &str, major: u32, minor: u32) -> Self {
        Entry::CharDevice {
            path: path.to_owned(),
            major,
            minor,
        }
    }

    /// `size` bytes of deterministic, incompressible noise (so a layer's
    /// compressed size is about `size`: for download and resume tests).
    pub fn noise(path: &str, size: usize, seed: u64) -> Self {
        Entry::file(path, noise(size, seed))
    }

    fn path(&self) -> &str {
        match self {
            Entry::Dir { path, .. }
            | Entry::File { path, .. }
            | Entry::Symlink { path, .. }
            | Entry::Hardlink { path, .. }
            | Entry::Fifo { path }
            | Entry::CharDevice { path, .. } => path,
        }
    }
}

/// xorshift64*: the same bytes for the same seed, on every machine.
pub fn noise(size: usize, seed: u64) -> Vec<u8> {
    let mut state = seed.wrapping_mul(0x9E37_79B9_7F4A_7C15) | 1;
    let mut out = Vec::with_capacity(size + 8);
    while out.len() < size {
        state ^= state >> 12;
        state ^= state << 25;
        state ^= state >> 27;
        out.extend_from_slice(&state.wrapping_mul(0x2545_F491_4F6C_DD1D).to_le_bytes());
    }
    out.truncate(size);
    out
}

/// The entries of a minimal runnable busybox root: `/bin/busybox`, the
/// applets tests use as symlinks, `/etc/passwd`, `/etc/group`, and the
/// mount points a runtime expects.
pub fn busybox_entries() -> Vec<Entry> {
    let busybox = fs::read(BUSYBOX)
        .unwrap_or_else(|err| panic!("reading {BUSYBOX}: {err} (apt-get install busybox-static)"));
    let mut entries = vec![
        Entry::dir("bin"),
        Entry::executable("bin/busybox", busybox),
        Entry::dir("etc"),
        Entry::file(
            "etc/passwd",
            "root:x:0:0:root:/root:/bin/sh\nnobody:x:65534:65534:nobody:/:/bin/false\n",
        ),
        Entry::file("etc/group", "root:x:0:\nnogroup:x:65534:\n"),
        Entry::dir("root"),
        Entry::Dir {
            path: "tmp".to_owned(),
            mode: 0o1777,
        },
        Entry::dir("proc"),
        Entry::dir("sys"),
        Entry::dir("dev"),
        Entry::dir("var"),
    ];
    for applet in [
        "sh", "ls", "cat", "echo", "sleep", "id", "env", "hostname", "httpd", "wget", "ip", "ps",
        "mount", "touch", "mkdir", "rm", "true", "false", "test", "grep", "head", "nc",
    ] {
        entries.push(Entry::symlink(&format!("bin/{applet}"), "busybox"));
    }
    entries
}

/// A deterministic tar of `entries` (sorted by path, mtime 0, uid/gid 0).
pub fn tar(entries: &[Entry]) -> Vec<u8> {
    let mut sorted: Vec<&Entry> = entries.iter().collect();
    sorted.sort_by(|a, b| a.path().cmp(b.path()));
    let mut builder = tar::Builder::new(Vec::new());
    for entry in sorted {
        let mut header = tar::Header::new_ustar();
        header.set_uid(0);
        header.set_gid(0);
        header.set_mtime(0);
        match entry {
            Entry::Dir { path, mode } => {
                header.set_entry_type(tar::EntryType::Directory);
                header.set_mode(*mode);
                header.set_size(0);
                builder
                    .append_data(&mut header, format!("{path}/"), std::io::empty())
                    .expect("tar dir");
            }
            Entry::File {
                path,
                contents,
                mode,
            } => {
                header.set_entry_type(tar::EntryType::Regular);
                header.set_mode(*mode);
                header.set_size(contents.len() as u64);
                builder
                    .append_data(&mut header, path, contents.as_slice())
                    .expect("tar file");
            }
            Entry::Symlink { path, target } | Entry::Hardlink { path, target } => {
                let kind = if matches!(entry, Entry::Symlink { .. }) {
                    tar::EntryType::Symlink
                } else {
                    tar::EntryType::Link
                };
                header.set_entry_type(kind);
                header.set_mode(0o777);
                header.set_size(0);
                builder
                    .append_link(&mut header, path, target)
                    .expect("tar link");
            }
            Entry::Fifo { path } | Entry::CharDevice { path, .. } => {
                let (kind, major, minor) = match entry {
                    Entry::CharDevice { major, minor, .. } => {
                        (tar::EntryType::Char, *major, *minor)
                    }
                    _ => (tar::EntryType::Fifo, 0, 0),
                };
                header.set_entry_type(kind);
                header.set_mode(0o644);
                header.set_size(0);
                header.set_device_major(major).expect("device major");
                header.set_device_minor(minor).expect("device minor");
                builder
                    .append_data(&mut header, path, std::io::empty())
                    .expect("tar node");
            }
        }
    }
    builder.into_inner().expect("finishing tar")
}

pub fn gzip(bytes: &[u8]) -> Vec<u8> {
    let mut encoder = GzEncoder::new(Vec::new(), Compression::fast());
    encoder.write_all(bytes).expect("gzip");
    encoder.finish().expect("gzip")
}

pub fn sha256(bytes: &[u8]) -> String {
    format!("sha256:{}", hex::encode(Sha256::digest(bytes)))
}

/// One platform's image: its layers (base first) and config.
#[derive(Debug, Clone)]
pub struct ImageSpec {
    pub os: String,
    pub architecture: String,
    pub variant: Option<String>,
    pub layers: Vec<Vec<Entry>>,
    pub cmd: Vec<String>,
    pub env: Vec<String>,
}

impl ImageSpec {
    /// An image for this machine's platform.
    pub fn new(layers: Vec<Vec<Entry>>) -> Self {
        let architecture = match std::env::consts::ARCH {
            "x86_64" => "amd64",
            "aarch64" => "arm64",
            other => other,
        };
        Self {
            os: "linux".to_owned(),
            architecture: architecture.to_owned(),
            variant: None,
            layers,
            cmd: vec!["/bin/sh".to_owned()],
            env: vec![
                "PATH=/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin".to_owned(),
            ],
        }
    }

    pub fn platform(mut self, os: &str, architecture: &str, variant: Option<&str>) -> Self {
        self.os = os.to_owned();
        self.architecture = architecture.to_owned();
        self.variant = variant.map(str::to_owned);
        self
    }

    pub fn cmd(mut self, cmd: &[&str]) -> Self {
        self.cmd = cmd.iter().map(|s| (*s).to_owned()).collect();
        self
    }
}

/// A blob written to a layout: digest, size, media type.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Blob {
    pub digest: String,
    pub size: u64,
    pub media_type: String,
}

impl Blob {
    fn descriptor(&self) -> serde_json::Value {
        json!({"mediaType": self.media_type, "digest": self.digest, "size": self.size})
    }
}

/// What [`OciLayout::add_image`] wrote for one platform.
#[derive(Debug, Clone)]
pub struct BuiltManifest {
    pub manifest: Blob,
    pub config: Blob,
    pub layers: Vec<Blob>,
    /// sha256 of each uncompressed layer tar (the config's diff_ids).
    pub diff_ids: Vec<String>,
    pub platform: String,
}

/// An OCI image layout directory (`oci-layout`, `index.json`, `blobs/`).
pub struct OciLayout {
    pub dir: PathBuf,
    refs: BTreeMap<String, Blob>,
}

impl OciLayout {
    pub fn create(dir: &Path) -> Self {
        fs::create_dir_all(dir.join("blobs/sha256")).expect("layout dirs");
        fs::write(dir.join("oci-layout"), r#"{"imageLayoutVersion":"1.0.0"}"#).expect("oci-layout");
        let layout = Self {
            dir: dir.to_path_buf(),
            refs: BTreeMap::new(),
        };
        layout.write_index();
        layout
    }

    pub fn write_blob(&self, bytes: &[u8], media_type: &str) -> Blob {
        let digest = sha256(bytes);
        let path = self.blob_path(&digest);
        fs::write(&path, bytes).unwrap_or_else(|err| panic!("writing {}: {err}", path.display()));
        Blob {
            digest,
            size: bytes.len() as u64,
            media_type: media_type.to_owned(),
        }
    }

    pub fn blob_path(&self, digest: &str) -> PathBuf {
        let hex = digest.strip_prefix("sha256:").expect("a sha256 digest");
        self.dir.join("blobs/sha256").join(hex)
    }

    /// Writes the layers, config and manifest of `spec` (not yet tagged).
    pub fn add_image(&self, spec: &ImageSpec) -> BuiltManifest {
        let mut layers = Vec::new();
        let mut diff_ids = Vec::new();
        for entries in &spec.layers {
            let tar = tar(entries);
            diff_ids.push(sha256(&tar));
            layers.push(self.write_blob(&gzip(&tar), OCI_LAYER_GZIP));
        }
        let mut config = json!({
            "created": "1970-01-01T00:00:00Z",
            "architecture": spec.architecture,
            "os": spec.os,
            "config": {"Cmd": spec.cmd, "Env": spec.env},
            "rootfs": {"type": "layers", "diff_ids": diff_ids},
        });
        if let Some(variant) = &spec.variant {
            config["variant"] = json!(variant);
        }
        let config = self.write_blob(&serde_json::to_vec(&config).expect("config"), OCI_CONFIG);
        let manifest = json!({
            "schemaVersion": 2,
            "mediaType": OCI_MANIFEST,
            "config": config.descriptor(),
            "layers": layers.iter().map(Blob::descriptor).collect::<Vec<_>>(),
        });
        let manifest = self.write_blob(
            &serde_json::to_vec(&manifest).expect("manifest"),
            OCI_MANIFEST,
        );
        let mut platform = format!("{}/{}", spec.os, spec.architecture);
        if let Some(variant) = &spec.variant {
            platform.push('/');
            platform.push_str(variant);
        }
        BuiltManifest {
            manifest,
            config,
            layers,
            diff_ids,
            platform,
        }
    }

    /// Writes an index over `manifests` (with their platforms).
    pub fn add_index(&self, manifests: &[(&BuiltManifest, &ImageSpec)]) -> Blob {
        let entries: Vec<serde_json::Value> = manifests
            .iter()
            .map(|(built, spec)| {
                let mut descriptor = built.manifest.descriptor();
                descriptor["platform"] = json!({"os": spec.os, "architecture": spec.architecture});
                if let Some(variant) = &spec.variant {
                    descriptor["platform"]["variant"] = json!(variant);
                }
                descriptor
            })
            .collect();
        let index = json!({"schemaVersion": 2, "mediaType": OCI_INDEX, "manifests": entries});
        self.write_blob(&serde_json::to_vec(&index).expect("index"), OCI_INDEX)
    }

    /// Points `tag` (in `index.json`) at a manifest or index blob.
    pub fn tag(&mut self, tag: &str, target: &Blob) {
        self.refs.insert(tag.to_owned(), target.clone());
        self.write_index();
    }

    fn write_index(&self) {
        let manifests: Vec<serde_json::Value> = self
            .refs
            .iter()
            .map(|(tag, blob)| {
                let mut descriptor = blob.descriptor();
                descriptor["annotations"] = json!({"org.opencontainers.image.ref.name": tag});
                descriptor
            })
            .collect();
        let index = json!({"schemaVersion": 2, "manifests": manifests});
        fs::write(
            self.dir.join("index.json"),
            serde_json::to_vec(&index).expect("index.json"),
        )
        .expect("writing index.json");
    }

    /// Writes the layout as an OCI archive (a tar of the layout, as
    /// `skopeo copy … oci-archive:` makes), for import tests.
    pub fn write_archive(&self, path: &Path) {
        let file = fs::File::create(path).expect("creating the archive");
        let mut builder = tar::Builder::new(file);
        builder.mode(tar::HeaderMode::Deterministic);
        builder
            .append_dir_all(".", &self.dir)
            .expect("archiving the layout");
        builder.finish().expect("finishing the archive");
    }
}

/// How to push: keep the OCI manifests, or convert to Docker schema2.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum PushFormat {
    Oci,
    DockerSchema2,
}

/// Pushes `layout`'s `tag` to `registry` as `name:tag` (all platforms of an
/// index) and returns the digest the registry now serves for it.
pub fn push(
    layout: &OciLayout,
    tag: &str,
    registry: &Registry,
    name: &str,
    format: PushFormat,
) -> String {
    let digest_file = layout.dir.join(format!("pushed-{tag}.digest"));
    let mut cmd = Command::new("skopeo");
    cmd.args(["copy", "--all", "--quiet", "--retry-times", "2"])
        .arg(format!("--digestfile={}", digest_file.display()))
        .args(registry.skopeo_dest_args());
    if format == PushFormat::DockerSchema2 {
        cmd.args(["--format", "v2s2"]);
    }
    cmd.arg(format!("oci:{}:{tag}", layout.dir.display()))
        .arg(format!("docker://{}/{name}:{tag}", registry.host()));
    let output = cmd
        .output()
        .expect("running skopeo (apt-get install skopeo)");
    assert!(
        output.status.success(),
        "skopeo copy to {}/{name}:{tag} failed: {}",
        registry.host(),
        String::from_utf8_lossy(&output.stderr)
    );
    fs::read_to_string(&digest_file)
        .expect("skopeo --digestfile")
        .trim()
        .to_owned()
}

/// An image pushed to a test registry.
#[derive(Debug)]
pub struct PushedImage {
    /// `127.0.0.1:PORT/name:tag`
    pub reference: String,
    /// The digest the tag resolves to (index digest for multi-arch images).
    pub digest: String,
    pub manifests: Vec<BuiltManifest>,
    /// Keeps the layout (and its blobs) alive for the test.
    pub layout_dir: tempfile::TempDir,
}

impl PushedImage {
    /// `127.0.0.1:PORT/name@sha256:…`
    pub fn by_digest(&self) -> String {
        let repo = self
            .reference
            .rsplit_once(':')
            .map_or(self.reference.as_str(), |(repo, _)| repo);
        format!("{repo}@{}", self.digest)
    }
}

/// Builds `specs` (one → a single manifest, more → an index), pushes it as
/// `name:latest` and returns where it is.
pub fn push_image(
    registry: &Registry,
    name: &str,
    specs: &[ImageSpec],
    format: PushFormat,
) -> PushedImage {
    let layout_dir = tempfile::Builder::new()
        .prefix("berth-image-")
        .tempdir()
        .expect("layout temp dir");
    let mut layout = OciLayout::create(layout_dir.path());
    let manifests: Vec<BuiltManifest> = specs.iter().map(|spec| layout.add_image(spec)).collect();
    let target = match manifests.as_slice() {
        [single] => single.manifest.clone(),
        _ => {
            let pairs: Vec<(&BuiltManifest, &ImageSpec)> = manifests.iter().zip(specs).collect();
            layout.add_index(&pairs)
        }
    };
    layout.tag("latest", &target);
    let digest = push(&layout, "latest", registry, name, format);
    PushedImage {
        reference: format!("{}/{name}:latest", registry.host()),
        digest,
        manifests,
        layout_dir,
    }
}

/// A runnable busybox image (two layers: busybox, then a marker file and
/// `/etc/hostname`) for this machine's platform, pushed as `name:latest`.
pub fn busybox_image(registry: &Registry, name: &str) -> PushedImage {
    busybox_image_with(registry, name, Vec::new())
}

/// [`busybox_image`] whose top layer also holds `extra` (which may replace
/// busybox's own files, e.g. `etc/passwd`; `etc/` exists already).
pub fn busybox_image_with(registry: &Registry, name: &str, extra: Vec<Entry>) -> PushedImage {
    let mut top = vec![
        Entry::dir("etc"),
        Entry::file("etc/berth-test-image", format!("{name}\n")),
    ];
    top.extend(extra);
    let spec = ImageSpec::new(vec![busybox_entries(), top]);
    push_image(registry, name, &[spec], PushFormat::Oci)
}
