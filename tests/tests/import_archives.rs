//! `berth import` of archives written by skopeo — an OCI archive and a
//! `docker save`-format tarball — produces runnable images: `berth images`
//! lists them, and the unpacked layers mounted as an overlay run
//! `/bin/busybox echo ok` under chroot.

use std::path::{Path, PathBuf};
use std::process::Command;

use berth::image::service::{ImageReference, ImageService};
use berth::paths::Paths;
use berth_e2e::layers::{GZIP, LayerBuilder, OverlayMount, ZSTD, busybox_layer, write_oci_layout};
use berth_e2e::{TestDirs, require_root};

fn skopeo(args: &[&str]) {
    let output = Command::new("skopeo")
        .args(args)
        .output()
        .expect("running skopeo (install Debian's skopeo)");
    assert!(
        output.status.success(),
        "skopeo {args:?} failed: {}",
        String::from_utf8_lossy(&output.stderr)
    );
}

/// A two-layer busybox image (gzip base, `top_media_type` top) as an OCI
/// layout.
fn layout(dirs: &TestDirs, top_media_type: &str) -> PathBuf {
    let dir = dirs.temp.path().join("layout");
    let base = busybox_layer();
    let top = LayerBuilder::new()
        .dir("etc", 0o755)
        .file("etc/motd", b"imported\n", 0o644)
        .build();
    write_oci_layout(&dir, "1.0", &[(&base, GZIP), (&top, top_media_type)]);
    dir
}

/// Imports `archive`, checks `berth images` lists `name`, then mounts the
/// image and runs busybox in it.
fn import_and_run(dirs: &TestDirs, archive: &Path, extra: &[&str], name: &str) {
    let mut args = vec!["import", archive.to_str().expect("utf-8 path")];
    args.extend_from_slice(extra);
    let output = dirs.berth(&args);
    let stdout = String::from_utf8_lossy(&output.stdout);
    assert!(
        output.status.success(),
        "berth import failed: {}{}",
        stdout,
        String::from_utf8_lossy(&output.stderr)
    );
    assert!(
        stdout.contains(name),
        "import output names the image: {stdout}"
    );

    let images = dirs.berth_json(&["images"]);
    let listed: Vec<&str> = images
        .as_array()
        .expect("an array")
        .iter()
        .map(|image| image["name"].as_str().expect("name"))
        .collect();
    assert!(listed.contains(&name), "{name} not in {listed:?}");
    let table = dirs.berth(&["images"]);
    let table = String::from_utf8_lossy(&table.stdout);
    let (repository, tag) = name.rsplit_once(':').expect("tagged name");
    assert!(
        table
            .lines()
            .any(|line| line.starts_with(repository) && line.split_whitespace().nth(1) == Some(tag)),
        "table lacks {name}:\n{table}"
    );

    let service = ImageService::open(&Paths::new(&dirs.root, &dirs.run_root)).expect("open store");
    let reference: ImageReference = name.parse().expect("reference");
    let lowerdirs = service.ensure_unpacked(&reference).expect("lowerdirs");
    assert_eq!(lowerdirs.len(), 2);
    let mount = OverlayMount::new(dirs.temp.path(), &lowerdirs);
    assert!(mount.mountpoint.join("bin/busybox").is_file());
    assert_eq!(
        std::fs::read(mount.mountpoint.join("etc/motd")).expect("top layer file"),
        b"imported\n"
    );
    let output = Command::new("chroot")
        .arg(&mount.mountpoint)
        .args(["/bin/busybox", "echo", "ok"])
        .output()
        .expect("chroot");
    assert_eq!(
        String::from_utf8_lossy(&output.stdout),
        "ok\n",
        "stderr: {}",
        String::from_utf8_lossy(&output.stderr)
    );
}

#[test]
fn oci_archive_from_skopeo_imports_and_runs() {
    require_root();
    let dirs = TestDirs::new();
    let layout = layout(&dirs, ZSTD);
    let archive = dirs.temp.path().join("image.oci.tar");
    skopeo(&[
        "copy",
        &format!("oci:{}:1.0", layout.display()),
        &format!(
            "oci-archive:{}:registry.local/bt/busybox:1.0",
            archive.display()
        ),
    ]);
    import_and_run(&dirs, &archive, &[], "registry.local/bt/busybox:1.0");
}

#[test]
fn docker_archive_from_skopeo_imports_and_runs() {
    require_root();
    let dirs = TestDirs::new();
    // Docker archives cannot carry zstd layers.
    let layout = layout(&dirs, GZIP);
    let archive = dirs.temp.path().join("image.docker.tar");
    skopeo(&[
        "copy",
        &format!("oci:{}:1.0", layout.display()),
        &format!(
            "docker-archive:{}:registry.local/bt/saved:2.0",
            archive.display()
        ),
    ]);
    import_and_run(&dirs, &archive, &[], "registry.local/bt/saved:2.0");
}

#[test]
fn unnamed_archive_needs_a_name() {
    require_root();
    let dirs = TestDirs::new();
    let layout = layout(&dirs, ZSTD);
    let archive = dirs.temp.path().join("unnamed.oci.tar");
    skopeo(&[
        "copy",
        &format!("oci:{}:1.0", layout.display()),
        &format!("oci-archive:{}", archive.display()),
    ]);
    let output = dirs.berth(&["import", archive.to_str().expect("utf-8")]);
    assert!(!output.status.success());
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert!(
        stderr.contains("without a name") && stderr.contains("--name"),
        "{stderr}"
    );
    import_and_run(
        &dirs,
        &archive,
        &["--name", "registry.local/bt/named:3"],
        "registry.local/bt/named:3",
    );
}

/// The cause of a failed import reaches the person once: the archive's
/// error leaves it to its source, and the CLI prints the whole chain.
#[test]
fn an_unreadable_archive_says_why_once() {
    require_root();
    let dirs = TestDirs::new();
    let archive = dirs.temp.path().join("not-an-archive");
    std::fs::create_dir(&archive).expect("a directory where the archive should be");
    let output = dirs.berth(&["import", archive.to_str().expect("utf-8")]);
    assert!(!output.status.success());
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert!(stderr.contains("reading archive"), "{stderr}");
    assert_eq!(stderr.matches("Is a directory").count(), 1, "{stderr}");
}
