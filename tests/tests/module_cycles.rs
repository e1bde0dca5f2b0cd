//! No module of the agent imports another that imports it back, at any
//! level (`agent/src`'s top-level modules, and the children of each):
//! `scripts/module-cycles.py` walks the `crate::`/`super::` paths.

use std::process::Command;

#[test]
fn no_import_circle_between_the_agents_modules() {
    let repo = concat!(env!("CARGO_MANIFEST_DIR"), "/..");
    let out = Command::new("python3")
        .arg("scripts/module-cycles.py")
        .arg("agent/src")
        .current_dir(repo)
        .output()
        .expect("running scripts/module-cycles.py (python3)");
    assert!(
        out.status.success(),
        "{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
}
