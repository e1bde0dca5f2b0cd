//! The manifest parser `berth validate` and the agent's directory source
//! share (`manifests::parse_file`), as YAML and as JSON.
#![no_main]

use std::path::Path;

use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    for name in ["pods/fuzz.yaml", "pods/fuzz.json"] {
        let parsed = manifests::parse_file(Path::new(name), data);
        berth_fuzz::check_parsed(&parsed, data);
    }
});
