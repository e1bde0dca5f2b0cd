//! Node labels: the well-known ones the kubelet sets, and the labels file
//! (`key=value` per line).

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

/// Larger than any sane labels file; a bigger one is refused.
const MAX_FILE_BYTES: u64 = 256 * 1024;

#[derive(Debug, thiserror::Error)]
pub enum LabelsError {
    #[error("[node] labels: label {key:?}: {problem}")]
    Config { key: String, problem: String },
    #[error("node labels file {}", path.display())]
    Read {
        path: PathBuf,
        source: std::io::Error,
    },
    #[error("node labels file {}:{line}: {problem}", path.display())]
    Line {
        path: PathBuf,
        line: usize,
        problem: String,
    },
}

/// The labels the kubelet gives every node, so manifests that select on
/// them work unchanged (`[node] labels` may override them).
pub fn well_known(name: &str) -> BTreeMap<String, String> {
    let arch = match std::env::consts::ARCH {
        "x86_64" => "amd64",
        "aarch64" => "arm64",
        "powerpc64" => "ppc64le",
        other => other,
    };
    BTreeMap::from([
        ("kubernetes.io/hostname".to_string(), name.to_string()),
        ("kubernetes.io/os".to_string(), "linux".to_string()),
        ("kubernetes.io/arch".to_string(), arch.to_string()),
    ])
}

/// A label as Kubernetes allows it.
pub fn check(key: &str, value: &str) -> Result<(), String> {
    manifests::names::qualified_name(key).map_err(|why| format!("key is not valid: {why}"))?;
    manifests::names::label_value(value)
        .map_err(|why| format!("value {value:?} is not valid: {why}"))
}

/// The labels in `path`; a missing file has none.
pub fn read_file(path: &Path) -> Result<BTreeMap<String, String>, LabelsError> {
    let read_err = |source| LabelsError::Read {
        path: path.to_path_buf(),
        source,
    };
    let text = match read_bounded(path) {
        Ok(text) => text,
        Err(err) if err.kind() == std::io::ErrorKind::NotFound => return Ok(BTreeMap::new()),
        Err(err) => return Err(read_err(err)),
    };
    let text = String::from_utf8(text).map_err(|_| {
        read_err(std::io::Error::new(
            std::io::ErrorKind::InvalidData,
            "not UTF-8",
        ))
    })?;
    parse(&text).map_err(|(line, problem)| LabelsError::Line {
        path: path.to_path_buf(),
        line,
        problem,
    })
}

/// The file's bytes, refusing one larger than [`MAX_FILE_BYTES`].
fn read_bounded(path: &Path) -> std::io::Result<Vec<u8>> {
    use std::io::Read;
    let file = std::fs::File::open(path)?;
    let mut bytes = Vec::new();
    file.take(MAX_FILE_BYTES + 1).read_to_end(&mut bytes)?;
    if u64::try_from(bytes.len()).unwrap_or(u64::MAX) > MAX_FILE_BYTES {
        return Err(std::io::Error::new(
            std::io::ErrorKind::InvalidData,
            format!("larger than {MAX_FILE_BYTES} bytes"),
        ));
    }
    Ok(bytes)
}

/// `key=value` lines; blank lines and `#` comments are skipped. The error
/// is the 1-based line and what is wrong with it.
pub fn parse(text: &str) -> Result<BTreeMap<String, String>, (usize, String)> {
    let mut labels = BTreeMap::new();
    for (i, line) in text.lines().enumerate() {
        let line = line.trim();
        if line.is_empty() || line.starts_with('#') {
            continue;
        }
        let Some((key, value)) = line.split_once('=') else {
            return Err((i + 1, format!("expected key=value, found {line:?}")));
        };
        let (key, value) = (key.trim(), value.trim());
        check(key, value).map_err(|problem| (i + 1, format!("label {key:?}: {problem}")))?;
        labels.insert(key.to_string(), value.to_string());
    }
    Ok(labels)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_labels_file_is_key_value_lines() {
        let labels =
            parse("# written by provisioning\n\ndisk=ssd\n zone = eu-1 \nexample.com/gpu=\n")
                .expect("parses");
        assert_eq!(
            labels,
            BTreeMap::from([
                ("disk".to_string(), "ssd".to_string()),
                ("zone".to_string(), "eu-1".to_string()),
                ("example.com/gpu".to_string(), String::new()),
            ])
        );
        assert_eq!(parse("a=b\nnot a label\n").expect_err("bad").0, 2);
        assert!(parse("bad key=x").is_err());
        assert!(parse("k=bad value").is_err());
    }

    #[test]
    fn a_missing_file_has_no_labels() {
        let dir = tempfile::tempdir().expect("tempdir");
        assert!(
            read_file(&dir.path().join("absent"))
                .expect("ok")
                .is_empty()
        );
        let file = dir.path().join("labels");
        std::fs::write(&file, "x=1\n=2\n").expect("write");
        let err = read_file(&file).expect_err("bad line");
        assert!(err.to_string().contains(":2:"), "{err}");
    }
}
