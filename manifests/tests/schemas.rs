//! `schemas/` is the checked-in output of `berth schema --out schemas`; this
//! fails when a type changed and the files were not regenerated.

use std::path::Path;

#[test]
fn checked_in_schemas_are_fresh() {
    let dir = Path::new(env!("CARGO_MANIFEST_DIR")).join("../schemas");
    let mut stale = Vec::new();
    for (file_name, schema) in manifests::schema::all_schemas() {
        let expected = manifests::schema::render(&schema);
        let actual = std::fs::read_to_string(dir.join(&file_name)).unwrap_or_default();
        if actual != expected {
            stale.push(file_name);
        }
    }
    let mut on_disk: Vec<String> = std::fs::read_dir(&dir)
        .expect("schemas/ exists")
        .map(|e| {
            e.expect("listing schemas/")
                .file_name()
                .to_string_lossy()
                .into_owned()
        })
        .collect();
    on_disk.sort();
    let mut generated: Vec<String> = manifests::schema::all_schemas()
        .into_iter()
        .map(|(n, _)| n)
        .collect();
    generated.sort();
    assert!(
        stale.is_empty() && on_disk == generated,
        "schemas/ is stale ({stale:?} differ; on disk {on_disk:?}, generated {generated:?}): run `make schemas` (berth schema --out schemas) and commit the result"
    );
}
