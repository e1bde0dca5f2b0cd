//! Helpers for tests that run `berth pull`: write a `certs.d` tree, run a
//! pull and read its JSON result, look into the content store.

use std::path::{Path, PathBuf};
use std::process::Output;

use crate::TestDirs;

/// Writes `<certs_d>/<host>/hosts.toml`.
pub fn write_hosts_toml(certs_d: &Path, host: &str, toml: &str) {
    let dir = certs_d.join(host);
    std::fs::create_dir_all(&dir).expect("creating a certs.d host dir");
    std::fs::write(dir.join("hosts.toml"), toml).expect("writing hosts.toml");
}

/// Configures `registry_host` to be served by `server` alone (a plain-HTTP
/// test registry, or a proxy in front of one).
pub fn use_server(dirs: &TestDirs, registry_host: &str, server: &str) {
    write_hosts_toml(
        &certs_d(dirs),
        registry_host,
        &format!("server = \"{server}\"\n"),
    );
}

/// The certs.d directory `berth pull --hosts-dir` reads in these tests.
pub fn certs_d(dirs: &TestDirs) -> PathBuf {
    dirs.temp.path().join("certs.d")
}

/// `berth pull --hosts-dir <certs_d> -o json <extra…> IMAGE`.
pub fn pull(dirs: &TestDirs, image: &str, extra: &[&str]) -> Output {
    let certs_d = certs_d(dirs);
    let certs_d = certs_d.to_str().expect("utf-8 temp path");
    let mut args = vec!["pull", "--hosts-dir", certs_d, "-o", "json"];
    args.extend_from_slice(extra);
    args.push(image);
    std::fs::create_dir_all(certs_d).expect("creating certs.d");
    dirs.berth(&args)
}

/// A pull that must succeed; returns its JSON result.
pub fn pull_ok(dirs: &TestDirs, image: &str, extra: &[&str]) -> serde_json::Value {
    let output = pull(dirs, image, extra);
    assert!(
        output.status.success(),
        "berth pull {image} failed:\n{}",
        String::from_utf8_lossy(&output.stderr)
    );
    serde_json::from_slice(&output.stdout).unwrap_or_else(|err| {
        panic!(
            "berth pull -o json printed no JSON ({err}):\n{}",
            String::from_utf8_lossy(&output.stdout)
        )
    })
}

/// A pull that must fail; returns its stderr.
pub fn pull_err(dirs: &TestDirs, image: &str, extra: &[&str]) -> String {
    let output = pull(dirs, image, extra);
    let stderr = String::from_utf8_lossy(&output.stderr).into_owned();
    assert!(
        !output.status.success(),
        "berth pull {image} should have failed; stdout:\n{}",
        String::from_utf8_lossy(&output.stdout)
    );
    stderr
}

/// The bytes of a verified blob in the content store, if stored.
pub fn stored_blob(dirs: &TestDirs, digest: &str) -> Option<Vec<u8>> {
    let hex = digest.strip_prefix("sha256:").expect("a sha256 digest");
    std::fs::read(dirs.root.join("content/sha256").join(hex)).ok()
}

/// Partial downloads left in the content store's ingest directory.
pub fn partial_files(dirs: &TestDirs) -> Vec<PathBuf> {
    match std::fs::read_dir(dirs.root.join("content/ingest")) {
        Ok(entries) => entries.filter_map(|e| Some(e.ok()?.path())).collect(),
        Err(_) => Vec::new(),
    }
}

/// The partial file of `digest`, if a download of it was interrupted.
pub fn partial_file(dirs: &TestDirs, digest: &str) -> PathBuf {
    let hex = digest.strip_prefix("sha256:").expect("a sha256 digest");
    dirs.root
        .join("content/ingest")
        .join(format!("{hex}.partial"))
}

/// `json[key]` as a string (panics naming the key when absent).
pub fn field<'a>(json: &'a serde_json::Value, key: &str) -> &'a str {
    json[key]
        .as_str()
        .unwrap_or_else(|| panic!("pull result has no string {key:?}: {json}"))
}
