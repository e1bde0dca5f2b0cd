//! No error type prints the cause it also returns from `source()`: the
//! chain is printed once, where it is shown to a person
//! (`status::chain`), and such a message would say every cause twice.
//! `scripts/error-chains.py` reads every `thiserror` type of the crates.

use std::path::Path;
use std::process::{Command, Output};

fn scan(dirs: &[&Path]) -> Output {
    let repo = concat!(env!("CARGO_MANIFEST_DIR"), "/..");
    Command::new("python3")
        .arg("scripts/error-chains.py")
        .args(dirs)
        .current_dir(repo)
        .output()
        .expect("running scripts/error-chains.py (python3)")
}

#[test]
fn no_error_type_prints_the_cause_it_returns_from_source() {
    let dirs = ["agent/src", "manifests/src", "netplugins/src", "shim/src"].map(Path::new);
    let out = scan(&dirs);
    assert!(
        out.status.success(),
        "{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
}

/// Every way a format can read the source field is flagged (`Bad*`), and
/// nothing else is (`Good*`): a check that misses a form passes for the
/// wrong reason.
const FIXTURE: &str = r#"
use std::io;

#[derive(Debug, thiserror::Error)]
pub enum Fixture {
    #[error("reading {path}: {source}")]
    BadNamed { path: String, source: io::Error },
    #[error("reading: {0}")]
    BadTupleFrom(#[from] io::Error),
    #[error("reading {}: {}", .path, .source)]
    BadPositional { path: String, source: io::Error },
    #[error("reading ({err:?})")]
    BadMarked {
        #[source]
        err: io::Error,
    },
    #[error("reading: {}", err.kind())]
    BadBound {
        #[source]
        err: io::Error,
    },
    #[error("reading: {kind}", kind = .1.kind())]
    BadNamedArg(String, #[source] io::Error),
    #[error(transparent)]
    GoodTransparent(#[from] std::fmt::Error),
    #[error("reading {path}")]
    GoodContext { path: String, source: io::Error },
    #[error("reading {0}")]
    GoodTuple(String, #[source] io::Error),
    #[error("reading {}", .other.source)]
    GoodOtherField { other: Other, #[source] err: io::Error },
    #[error("parsing {0}: {1}")]
    GoodNoSource(String, String),
}

/// A struct, with a doc comment that says {source}.
#[derive(Debug, thiserror::Error)]
#[error("writing {path}: {source}")]
pub struct BadStruct {
    path: String,
    source: io::Error, // "{source}" in a comment
}

#[derive(Debug, thiserror::Error)]
#[error("writing {path}")]
pub struct GoodStruct {
    path: String,
    source: io::Error,
}
"#;

#[test]
fn the_check_flags_every_form_of_a_printed_source_and_nothing_else() {
    let dir = tempfile::tempdir().expect("a temporary directory");
    std::fs::write(dir.path().join("fixture.rs"), FIXTURE).expect("writing the fixture");
    let out = scan(&[dir.path()]);
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert_eq!(
        out.status.code(),
        Some(1),
        "{stdout}{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let flagged: Vec<&str> = stdout
        .lines()
        .filter_map(|line| line.split(": ").nth(1))
        .filter_map(|what| what.split(' ').next())
        .collect();
    assert_eq!(
        flagged,
        [
            "Fixture::BadNamed",
            "Fixture::BadTupleFrom",
            "Fixture::BadPositional",
            "Fixture::BadMarked",
            "Fixture::BadBound",
            "Fixture::BadNamedArg",
            "BadStruct",
        ],
        "{stdout}"
    );
}
