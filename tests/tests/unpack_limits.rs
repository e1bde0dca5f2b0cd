//! Hostile layers that try to wedge, crash or bloat the store, built by the
//! test and handed to the real `berth pull` (through a real registry) and
//! `berth import` (as OCI archives): a 256 MiB PAX header, a 256 MiB GNU
//! long name, a tree deeper than the limit, too many entries, sparse-file
//! bombs, an over-size layer and one that would fill the store's disk.
//! Each is refused with an error naming the layer's digest and the limit,
//! the berth process's peak memory (the kernel's count, from `wait4`)
//! stays bounded, nothing of the layer is left in the store, and a good
//! image still goes in afterwards.

use std::path::{Path, PathBuf};

use berth_e2e::images::{self, PushFormat};
use berth_e2e::layers::{
    GZIP, GzipBomb, LayerBuilder, Measured, RawLayer, Tmpfs, busybox_layer, run_measured,
    write_oci_layout, write_oci_layout_raw,
};
use berth_e2e::pull::{certs_d, use_server};
use berth_e2e::registry::{Registry, RegistryOptions};
use berth_e2e::{TestDirs, require_root};
use tar::EntryType;

/// The most memory a refused bomb may cost the berth process. A pull or
/// import of a small image peaks near 30 MB (debug build); the bombs below
/// took 275 MB to 3.7 GB before their limits existed.
const MEMORY_BOUND: u64 = 100 << 20;
const MIB: u64 = 1 << 20;

/// A PAX header of `size` bytes: one valid `comment` record that long.
fn pax_bomb(size: u64) -> RawLayer {
    let prefix = format!("{size} comment=");
    GzipBomb::new()
        .header(GzipBomb::entry_header(
            EntryType::XHeader,
            b"PaxHeaders/big",
            size,
        ))
        .bytes(prefix.as_bytes())
        .repeat(b"a", size - prefix.len() as u64 - 1)
        .bytes(b"\n")
        .pad()
        .header(GzipBomb::entry_header(EntryType::Regular, b"big", 0))
        .end()
        .build()
}

/// A GNU long name of `size` bytes: `a/a/a/…/f`, a path 128 Mi levels deep.
fn gnu_long_name_bomb(size: u64) -> RawLayer {
    GzipBomb::new()
        .header(GzipBomb::entry_header(
            EntryType::GNULongName,
            b"././@LongLink",
            size,
        ))
        .repeat(b"a/", size - 2)
        .bytes(b"f\0")
        .pad()
        .header(GzipBomb::entry_header(
            EntryType::Regular,
            b"placeholder",
            0,
        ))
        .end()
        .build()
}

/// An image of `layers` written as an OCI archive under the test's dir.
fn archive(dirs: &TestDirs, name: &str, layers: &[RawLayer]) -> PathBuf {
    let layout = write_oci_layout_raw(
        &dirs.temp.path().join(format!("layout-{name}")),
        "1",
        layers,
    );
    let path = dirs.temp.path().join(format!("{name}.tar"));
    layout.write_archive(&path);
    path
}

/// An image whose one layer is the ordinary tar `layer`, as an archive.
fn plain_archive(dirs: &TestDirs, name: &str, layer: &berth_e2e::layers::Layer) -> PathBuf {
    let layout = write_oci_layout(
        &dirs.temp.path().join(format!("layout-{name}")),
        "1",
        &[(layer, GZIP)],
    );
    let path = dirs.temp.path().join(format!("{name}.tar"));
    layout.write_archive(&path);
    path
}

/// `berth import` of `archive` as `localhost/<name>:1`, with the agent
/// config `config` if any, measured.
fn import(dirs: &TestDirs, archive: &Path, name: &str, config: Option<&Path>) -> Measured {
    let reference = format!("localhost/{name}:1");
    let mut args = vec![
        "import",
        archive.to_str().expect("utf-8 path"),
        "--name",
        &reference,
    ];
    if let Some(config) = config {
        args.extend(["--config", config.to_str().expect("utf-8 path")]);
    }
    run_measured(dirs.berth_command(&args))
}

fn config(dirs: &TestDirs, toml: &str) -> PathBuf {
    let path = dirs.temp.path().join("agent.toml");
    std::fs::write(&path, toml).expect("writing the agent config");
    path
}

/// The command failed naming `layer` and `limit`, within the memory bound.
fn assert_refused(measured: &Measured, layer_digest: &str, limit: &str) {
    assert_refused_with(measured, &format!("layer {layer_digest} refused: {limit}"));
}

/// The command failed with `expected` in its error, within the memory
/// bound.
fn assert_refused_with(measured: &Measured, expected: &str) {
    assert!(
        !measured.status.success(),
        "the hostile input was accepted: {}",
        measured.stdout
    );
    assert!(
        measured.stderr.contains(expected),
        "expected `{expected}` in:\n{}",
        measured.stderr
    );
    assert_memory_bounded(measured);
}

fn assert_memory_bounded(measured: &Measured) {
    eprintln!("berth peaked at {} KiB", measured.max_rss >> 10);
    assert!(
        measured.max_rss < MEMORY_BOUND,
        "berth peaked at {} MiB (bound {} MiB)",
        measured.max_rss / MIB,
        MEMORY_BOUND / MIB
    );
}

/// No image recorded, no snapshot and no staging directory left; and the
/// store still takes a good image.
fn assert_store_clean_and_working(dirs: &TestDirs) {
    let images = dirs.berth_json(&["images"]);
    assert_eq!(images, serde_json::json!([]), "no image was recorded");
    let snapshots = dirs.root.join("snapshots");
    let mut names: Vec<String> = std::fs::read_dir(&snapshots)
        .expect("snapshots dir")
        .map(|e| e.expect("entry").file_name().to_string_lossy().into_owned())
        .collect();
    names.sort();
    assert_eq!(
        names,
        [".staging"],
        "snapshots left in {}",
        snapshots.display()
    );
    let staging: Vec<_> = std::fs::read_dir(snapshots.join(".staging"))
        .expect("staging dir")
        .collect();
    assert!(staging.is_empty(), "staging leftovers: {staging:?}");

    let good = plain_archive(dirs, "good", &busybox_layer());
    let measured = import(dirs, &good, "good", None);
    assert!(
        measured.status.success(),
        "a good image after a refused one: {}",
        measured.stderr
    );
    let images = dirs.berth_json(&["images"]);
    assert_eq!(images[0]["name"], "localhost/good:1", "{images}");
}

#[test]
fn header_bombs_pulled_from_a_registry_are_refused_in_bounded_memory() {
    require_root();
    let registry = Registry::start(RegistryOptions::default());
    let dirs = TestDirs::new();
    use_server(&dirs, &registry.host(), &registry.url());
    let bombs = [
        (
            "pax",
            pax_bomb(256 * MIB),
            "a PAX header of 268435456 bytes exceeds the limit of 1 MiB",
        ),
        (
            "gnu",
            gnu_long_name_bomb(256 * MIB),
            "a GNU long name of 268435456 bytes exceeds the limit of 1 MiB",
        ),
    ];
    for (name, layer, limit) in &bombs {
        let layout = write_oci_layout_raw(
            &dirs.temp.path().join(format!("layout-{name}")),
            "latest",
            std::slice::from_ref(layer),
        );
        images::push(&layout, "latest", &registry, name, PushFormat::Oci);
        let reference = format!("{}/{name}:latest", registry.host());
        let certs_d = certs_d(&dirs);
        let measured = run_measured(dirs.berth_command(&[
            "pull",
            "--hosts-dir",
            certs_d.to_str().expect("utf-8 path"),
            &reference,
        ]));
        assert_refused(&measured, &layer.digest(), limit);
    }
    assert_store_clean_and_working(&dirs);
}

#[test]
fn a_gnu_long_name_bomb_imported_is_refused_in_bounded_memory() {
    require_root();
    let dirs = TestDirs::new();
    let layer = gnu_long_name_bomb(256 * MIB);
    let measured = import(
        &dirs,
        &archive(&dirs, "gnu", std::slice::from_ref(&layer)),
        "gnu",
        None,
    );
    assert_refused(
        &measured,
        &layer.digest(),
        "a GNU long name of 268435456 bytes exceeds the limit of 1 MiB",
    );
    assert_store_clean_and_working(&dirs);
}

#[test]
fn a_tree_deeper_than_the_limit_is_refused() {
    require_root();
    let dirs = TestDirs::new();
    let deep = format!("{}file", "d/".repeat(300));
    let layer = LayerBuilder::new()
        .file("shallow", b"fine", 0o644)
        .file(&deep, b"too deep", 0o644)
        .build();
    let digest = images::sha256(&layer.gzip());
    let measured = import(&dirs, &plain_archive(&dirs, "deep", &layer), "deep", None);
    assert_refused(&measured, &digest, "entry `d/d/d/");
    assert!(
        measured
            .stderr
            .contains("is 301 levels deep, more than the limit of 256"),
        "{}",
        measured.stderr
    );
    assert_store_clean_and_working(&dirs);
}

#[test]
fn a_layer_with_too_many_entries_is_refused() {
    require_root();
    let dirs = TestDirs::new();
    let config = config(&dirs, "[store]\nmax-layer-entries = 1000\n");
    let mut builder = LayerBuilder::new().dir("many", 0o755);
    for i in 0..1000 {
        builder = builder.file(&format!("many/{i}"), b"", 0o644);
    }
    let layer = builder.build();
    let digest = images::sha256(&layer.gzip());
    let measured = import(
        &dirs,
        &plain_archive(&dirs, "many", &layer),
        "many",
        Some(&config),
    );
    assert_refused(
        &measured,
        &digest,
        "it has more than the limit of 1000 entries",
    );
    assert_store_clean_and_working(&dirs);
}

/// An old GNU sparse entry `path` with `regions` (offset, length) in its
/// header and extension blocks, claiming `real_size`; the data follows.
fn gnu_sparse(path: &[u8], regions: &[(u64, u64)], real_size: u64) -> GzipBomb {
    let stored: u64 = regions.iter().map(|&(_, length)| length).sum();
    let mut head = GzipBomb::entry_header(EntryType::GNUSparse, path, stored);
    let gnu = head.as_gnu_mut().expect("a GNU header");
    let (inline, rest) = regions.split_at(regions.len().min(4));
    for (slot, &(offset, length)) in gnu.sparse.iter_mut().zip(inline) {
        slot.set_offset(offset);
        slot.set_length(length);
    }
    gnu.set_real_size(real_size);
    gnu.set_is_extended(!rest.is_empty());
    let mut bomb = GzipBomb::new().header(head);
    let blocks: Vec<&[(u64, u64)]> = rest.chunks(21).collect();
    for (i, block) in blocks.iter().enumerate() {
        let mut ext = tar::GnuExtSparseHeader::new();
        for (slot, &(offset, length)) in ext.sparse_mut().iter_mut().zip(*block) {
            slot.set_offset(offset);
            slot.set_length(length);
        }
        ext.set_is_extended(i + 1 < blocks.len());
        bomb = bomb.bytes(ext.as_bytes());
    }
    bomb.repeat(b"s", stored)
}

#[test]
fn sparse_file_bombs_are_refused() {
    require_root();
    let dirs = TestDirs::new();
    // One 512-byte region in a file that claims to be 1 TiB: written out,
    // it would be a terabyte of zeros.
    let huge = gnu_sparse(b"huge", &[(0, 512)], 1 << 40).end().build();
    let measured = import(
        &dirs,
        &archive(&dirs, "huge", std::slice::from_ref(&huge)),
        "huge",
        None,
    );
    assert_refused(
        &measured,
        &huge.digest(),
        "its files exceed the limit of 64 GiB (at entry `huge`)",
    );
    // 100,000 regions: a sparse map that would grow without bound.
    let regions: Vec<(u64, u64)> = (0..100_000).map(|i| (i * 1024, 1)).collect();
    let many = gnu_sparse(b"regions", &regions, 100_000 * 1024)
        .end()
        .build();
    let measured = import(
        &dirs,
        &archive(&dirs, "regions", std::slice::from_ref(&many)),
        "regions",
        None,
    );
    assert_refused(
        &measured,
        &many.digest(),
        "sparse file `regions` has more than the limit of 65536 regions",
    );
    assert_store_clean_and_working(&dirs);
}

#[test]
fn an_over_size_layer_is_refused_by_its_files_or_its_stream() {
    require_root();
    let dirs = TestDirs::new();
    let config = config(&dirs, "[store]\nmax-layer-size = \"16MiB\"\n");
    let big_file = GzipBomb::new()
        .header(GzipBomb::entry_header(EntryType::Regular, b"big", 32 * MIB))
        .repeat(b"\0", 32 * MIB)
        .end()
        .build();
    let measured = import(
        &dirs,
        &archive(&dirs, "big", std::slice::from_ref(&big_file)),
        "big",
        Some(&config),
    );
    assert_refused(
        &measured,
        &big_file.digest(),
        "its files exceed the limit of 16 MiB (at entry `big`)",
    );
    // A small tar followed by 64 MiB of zeros: a decompression bomb that
    // only the stream's length gives away.
    let trailing = GzipBomb::new()
        .header(GzipBomb::entry_header(EntryType::Regular, b"small", 5))
        .bytes(b"small")
        .end()
        .repeat(b"\0", 64 * MIB)
        .build();
    let measured = import(
        &dirs,
        &archive(&dirs, "trailing", std::slice::from_ref(&trailing)),
        "trailing",
        Some(&config),
    );
    assert_refused(
        &measured,
        &trailing.digest(),
        "its uncompressed tar stream exceeds the limit of 16 MiB",
    );
    assert_store_clean_and_working(&dirs);
}

#[test]
fn a_layer_that_would_fill_the_store_is_refused_before_it_does() {
    require_root();
    let dirs = TestDirs::new();
    let _store = Tmpfs::mount(&dirs.root, "64m");
    let layer = GzipBomb::new()
        .header(GzipBomb::entry_header(EntryType::Regular, b"big", 62 * MIB))
        .repeat(b"\0", 62 * MIB)
        .end()
        .build();
    let measured = import(
        &dirs,
        &archive(&dirs, "fill", std::slice::from_ref(&layer)),
        "fill",
        None,
    );
    assert_refused(
        &measured,
        &layer.digest(),
        "entry `big` needs 62 MiB, which would leave less than",
    );
    assert!(
        measured.stderr.contains("free on the store's file system"),
        "{}",
        measured.stderr
    );
    assert_store_clean_and_working(&dirs);
}

#[test]
fn a_header_bomb_in_the_archive_itself_is_refused_in_bounded_memory() {
    require_root();
    let dirs = TestDirs::new();
    // The archive, not a layer in it: `berth import` reads its tar first.
    let size = 256 * MIB;
    let bomb = pax_bomb(size);
    let archive = dirs.temp.path().join("bomb.tar.gz");
    std::fs::write(&archive, &bomb.blob).expect("writing the archive");
    let measured = import(&dirs, &archive, "bomb", None);
    assert_refused_with(
        &measured,
        &format!(
            "archive {} refused: a PAX header of {size} bytes exceeds the limit of 1 MiB",
            archive.display()
        ),
    );
    assert_store_clean_and_working(&dirs);
}

#[test]
fn a_compressed_archive_whose_blob_would_fill_the_store_is_refused() {
    require_root();
    let dirs = TestDirs::new();
    let _store = Tmpfs::mount(&dirs.root, "64m");
    // 62 MiB of zeros named as a layout blob, in a gzip archive of a few
    // KiB: refused before the content store writes it.
    let path = format!("blobs/sha256/{}", "0".repeat(64));
    let archive = dirs.temp.path().join("fill.tar.gz");
    let bomb = GzipBomb::new()
        .header(GzipBomb::entry_header(
            EntryType::Regular,
            path.as_bytes(),
            62 * MIB,
        ))
        .repeat(b"\0", 62 * MIB)
        .end()
        .build();
    std::fs::write(&archive, &bomb.blob).expect("writing the archive");
    let measured = import(&dirs, &archive, "fill", None);
    assert_refused_with(
        &measured,
        &format!(
            "archive {} refused: entry `{path}` needs 62 MiB, which would leave less than",
            archive.display()
        ),
    );
    assert_store_clean_and_working(&dirs);
}
