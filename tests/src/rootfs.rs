//! Minimal container root filesystems built from Debian's `busybox-static`,
//! as overlay lower directories, so runtime tests need no registry and no
//! image store.
//!
//! The bottom layer is a usable system: `/bin/busybox` with a symlink per
//! applet, the usual empty mount points, and `/etc/passwd` + `/etc/group`
//! with a root user, an unprivileged `app` user (1000:1000, also a member of
//! the `extra` group, 2000) and `nobody`. The top layer adds a marker file, so
//! every container runs on a real multi-layer overlay.

use std::os::unix::fs::symlink;
use std::path::{Path, PathBuf};
use std::process::Command;

/// Where Debian's busybox-static puts the binary.
pub const BUSYBOX: &str = "/bin/busybox";

/// The file the top layer adds; tests read it to prove the overlay is the root.
pub const MARKER_PATH: &str = "/etc/berth-test-layer";
/// The marker file's content.
pub const MARKER_CONTENT: &str = "top layer\n";

pub const PASSWD: &str = "root:x:0:0:root:/root:/bin/sh\n\
app:x:1000:1000:app user:/home/app:/bin/sh\n\
nobody:x:65534:65534:nobody:/nonexistent:/bin/false\n";

pub const GROUP: &str = "root:x:0:\n\
app:x:1000:\n\
extra:x:2000:app\n\
nogroup:x:65534:\n";

/// Builds the two busybox layers under `parent` and returns them as overlay
/// lowerdirs, top layer first (the order a snapshotter returns).
pub fn busybox_layers(parent: &Path) -> Vec<PathBuf> {
    let base = parent.join("layer-base");
    let top = parent.join("layer-top");
    build_base_layer(&base);
    std::fs::create_dir_all(top.join("etc")).expect("creating the top layer");
    std::fs::write(
        top.join(MARKER_PATH.trim_start_matches('/')),
        MARKER_CONTENT,
    )
    .expect("writing the marker file");
    vec![top, base]
}

/// `count` lowerdirs, top first: the busybox base at the bottom and
/// `count - 1` layers above it that each add `/layers/<n>`. Long lists like
/// this exceed the one-page limit of the classic mount options string.
pub fn many_layers(parent: &Path, count: usize) -> Vec<PathBuf> {
    assert!(count >= 1, "a rootfs needs at least one layer");
    let base = parent.join("layer-base");
    build_base_layer(&base);
    let mut layers = vec![base];
    for n in 1..count {
        // Long directory names on purpose: like content-addressed snapshot
        // directories, they make the lowerdir list far longer than a page.
        let layer = parent.join(format!("layer-{n:03}-{}", "f".repeat(48)));
        let dir = layer.join("layers");
        std::fs::create_dir_all(&dir).expect("creating a layer");
        std::fs::write(dir.join(n.to_string()), format!("{n}\n")).expect("writing a layer file");
        layers.push(layer);
    }
    layers.reverse();
    layers
}

fn build_base_layer(base: &Path) {
    for dir in [
        "bin", "etc", "tmp", "proc", "sys", "dev", "root", "home/app", "var", "run",
    ] {
        std::fs::create_dir_all(base.join(dir)).expect("creating a base layer directory");
    }
    let busybox = base.join("bin/busybox");
    std::fs::copy(BUSYBOX, &busybox)
        .unwrap_or_else(|err| panic!("copying {BUSYBOX} (install busybox-static): {err}"));
    for applet in applets() {
        let link = base.join("bin").join(&applet);
        if applet != "busybox" && !link.exists() {
            symlink("busybox", &link).expect("linking a busybox applet");
        }
    }
    std::fs::write(base.join("etc/passwd"), PASSWD).expect("writing /etc/passwd");
    std::fs::write(base.join("etc/group"), GROUP).expect("writing /etc/group");
    set_mode(&base.join("tmp"), 0o1777);
}

fn applets() -> Vec<String> {
    let out = Command::new(BUSYBOX)
        .arg("--list")
        .output()
        .expect("running busybox --list");
    assert!(out.status.success(), "busybox --list failed");
    String::from_utf8_lossy(&out.stdout)
        .lines()
        .filter(|name| !name.is_empty() && !name.contains('/'))
        .map(str::to_owned)
        .collect()
}

fn set_mode(path: &Path, mode: u32) {
    use std::os::unix::fs::PermissionsExt;
    std::fs::set_permissions(path, std::fs::Permissions::from_mode(mode))
        .expect("setting permissions");
}
