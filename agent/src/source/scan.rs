//! One pass over the manifest directory: which files count, and their bytes.
//!
//! Rules (the "which files count" part is `manifests::classify_path`, passed
//! in as `classify`):
//! - hidden entries (`.git`, `..data`, `..2026_…`) are not entered; files a
//!   Kubernetes ConfigMap volume exposes are reached through the visible
//!   symlinks next to `..data`;
//! - symlinks to files are followed (that is how those volumes work);
//!   symlinks to directories are not (no loops, no escaping the tree), except
//!   the manifest directory itself, which the caller resolves first;
//! - only regular files are read (a FIFO would block the agent forever),
//!   and files over `max_file_bytes` are not read at all (one that grows
//!   while being read is cut at `max_file_bytes + 1` bytes, which the parser
//!   reports as too large): the agent never holds a huge file in memory.

use std::fs::{self, File, OpenOptions};
use std::io::{self, Read};
use std::os::unix::fs::OpenOptionsExt;
use std::path::{Path, PathBuf};

use sha2::{Digest, Sha256};

/// Deeper trees are almost certainly a mistake (`--manifests /`).
pub const MAX_DEPTH: usize = 16;
/// More candidate files than this and the scan is refused as a whole.
pub const MAX_FILES: usize = 10_000;

#[derive(Debug, thiserror::Error)]
pub enum ScanError {
    #[error("reading directory {path}")]
    ReadDir {
        path: PathBuf,
        #[source]
        source: io::Error,
    },
    #[error(
        "{root} holds more than {MAX_FILES} manifest files; is --manifests pointing at the right directory?"
    )]
    TooManyFiles { root: PathBuf },
}

/// A candidate file found by the scan.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ScannedFile<C> {
    /// Relative to the manifest directory.
    pub relative: PathBuf,
    /// What `classify` said it is.
    pub class: C,
    pub content: FileContent,
    /// For a symlink: where it resolved when it was read.
    pub symlink_target: Option<PathBuf>,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub enum FileContent {
    /// Up to `max_file_bytes + 1` bytes and their SHA-256 (hex).
    Bytes { bytes: Vec<u8>, hash: String },
    /// Larger than the limit: not read at all.
    TooLarge { size: u64 },
    /// Exists but cannot be read; the message names the problem.
    Unreadable { message: String },
}

impl FileContent {
    /// Identity of the content for change detection.
    pub fn fingerprint(&self) -> String {
        match self {
            FileContent::Bytes { hash, .. } => hash.clone(),
            FileContent::TooLarge { size } => format!("too large: {size}"),
            FileContent::Unreadable { message } => format!("unreadable: {message}"),
        }
    }
}

/// Scans `root` (already resolved). Files that vanish during the scan are
/// left out: a concurrent change is followed by another event and scan.
pub fn scan<C>(
    root: &Path,
    max_file_bytes: u64,
    classify: impl Fn(&Path) -> Option<C>,
) -> Result<Vec<ScannedFile<C>>, ScanError> {
    let mut found = Vec::new();
    let mut pending = vec![(PathBuf::new(), 0usize)];
    while let Some((dir_rel, depth)) = pending.pop() {
        let dir = root.join(&dir_rel);
        let entries = match fs::read_dir(&dir) {
            Ok(entries) => entries,
            Err(err) if err.kind() == io::ErrorKind::NotFound && depth > 0 => continue,
            Err(source) => return Err(ScanError::ReadDir { path: dir, source }),
        };
        for entry in entries {
            let entry = entry.map_err(|source| ScanError::ReadDir {
                path: dir.clone(),
                source,
            })?;
            let name = entry.file_name();
            if name.as_encoded_bytes().first() == Some(&b'.') {
                continue;
            }
            let relative = dir_rel.join(&name);
            let Ok(file_type) = entry.file_type() else {
                continue;
            };
            if file_type.is_dir() {
                if depth + 1 < MAX_DEPTH {
                    pending.push((relative, depth + 1));
                }
                continue;
            }
            if !(file_type.is_file() || file_type.is_symlink()) {
                continue;
            }
            let Some(class) = classify(&relative) else {
                continue;
            };
            let path = root.join(&relative);
            if file_type.is_symlink() && fs::metadata(&path).is_ok_and(|m| m.is_dir()) {
                continue;
            }
            let symlink_target = file_type
                .is_symlink()
                .then(|| fs::canonicalize(&path).ok())
                .flatten();
            let Some(content) = read_bounded(&path, max_file_bytes) else {
                continue;
            };
            found.push(ScannedFile {
                relative,
                class,
                content,
                symlink_target,
            });
            if found.len() > MAX_FILES {
                return Err(ScanError::TooManyFiles {
                    root: root.to_owned(),
                });
            }
        }
    }
    found.sort_by(|a, b| a.relative.cmp(&b.relative));
    Ok(found)
}

/// Whether every symlinked file of a scan still resolves where it did. A
/// Kubernetes `..data` swap between reading two files changes this, and the
/// scan mixed two versions: the caller scans again.
pub fn symlinks_unchanged<C>(root: &Path, files: &[ScannedFile<C>]) -> bool {
    files.iter().all(|file| match &file.symlink_target {
        Some(target) => fs::canonicalize(root.join(&file.relative)).ok().as_ref() == Some(target),
        None => true,
    })
}

/// Reads at most `max + 1` bytes of a regular file; `None` if it is gone.
fn read_bounded(path: &Path, max: u64) -> Option<FileContent> {
    let unreadable = |message: String| Some(FileContent::Unreadable { message });
    // O_NONBLOCK: opening a FIFO must not wait for a writer.
    let file = match OpenOptions::new()
        .read(true)
        .custom_flags(libc::O_NONBLOCK)
        .open(path)
    {
        Ok(file) => file,
        Err(err) if err.kind() == io::ErrorKind::NotFound => return None,
        Err(err) => return unreadable(format!("cannot open {}: {err}", path.display())),
    };
    match file.metadata() {
        Ok(meta) if meta.is_file() && meta.len() > max => {
            return Some(FileContent::TooLarge { size: meta.len() });
        }
        Ok(meta) if meta.is_file() => {}
        Ok(_) => return unreadable(format!("{} is not a regular file", path.display())),
        Err(err) => return unreadable(format!("cannot stat {}: {err}", path.display())),
    }
    let mut bytes = Vec::new();
    if let Err(err) = File::take(file, max.saturating_add(1)).read_to_end(&mut bytes) {
        return unreadable(format!("cannot read {}: {err}", path.display()));
    }
    let hash = hex::encode(Sha256::digest(&bytes));
    Some(FileContent::Bytes { bytes, hash })
}

#[cfg(test)]
mod tests {
    use std::os::unix::fs::symlink;

    use super::*;

    fn yaml_only(path: &Path) -> Option<()> {
        path.extension().is_some_and(|e| e == "yaml").then_some(())
    }

    fn names(files: &[ScannedFile<()>]) -> Vec<String> {
        files
            .iter()
            .map(|f| f.relative.display().to_string())
            .collect()
    }

    #[test]
    fn finds_classified_files_in_path_order_skipping_hidden_entries() {
        let dir = tempfile::tempdir().expect("tempdir");
        let root = dir.path();
        fs::create_dir_all(root.join("apps/web")).expect("mkdir");
        fs::create_dir_all(root.join(".git")).expect("mkdir");
        for file in [
            "b.yaml",
            "a.yaml",
            "apps/web/pod.yaml",
            ".git/x.yaml",
            "notes.txt",
            ".a.yaml",
        ] {
            fs::write(root.join(file), "x: 1\n").expect("write");
        }
        let files = scan(root, 1024, yaml_only).expect("scan");
        assert_eq!(names(&files), ["a.yaml", "apps/web/pod.yaml", "b.yaml"]);
    }

    #[test]
    fn follows_the_configmap_volume_pattern_through_file_symlinks() {
        let dir = tempfile::tempdir().expect("tempdir");
        let root = dir.path();
        fs::create_dir(root.join("..2026_01_01")).expect("mkdir");
        fs::write(root.join("..2026_01_01/b.yaml"), "v: 1\n").expect("write");
        symlink("..2026_01_01", root.join("..data")).expect("symlink");
        symlink("..data/b.yaml", root.join("b.yaml")).expect("symlink");
        let files = scan(root, 1024, yaml_only).expect("scan");
        assert_eq!(names(&files), ["b.yaml"]);
        assert!(
            matches!(&files[0].content, FileContent::Bytes { bytes, .. } if bytes == b"v: 1\n")
        );
    }

    #[test]
    fn a_data_swap_after_the_scan_is_detected() {
        let dir = tempfile::tempdir().expect("tempdir");
        let root = dir.path();
        for version in ["..v1", "..v2"] {
            fs::create_dir(root.join(version)).expect("mkdir");
            fs::write(root.join(version).join("b.yaml"), version).expect("write");
        }
        symlink("..v1", root.join("..data")).expect("symlink");
        symlink("..data/b.yaml", root.join("b.yaml")).expect("symlink");
        let files = scan(root, 1024, yaml_only).expect("scan");
        assert!(symlinks_unchanged(root, &files));
        symlink("..v2", root.join("..data_tmp")).expect("symlink");
        fs::rename(root.join("..data_tmp"), root.join("..data")).expect("swap");
        assert!(!symlinks_unchanged(root, &files));
    }

    #[test]
    fn does_not_follow_directory_symlinks_or_dangling_links() {
        let dir = tempfile::tempdir().expect("tempdir");
        let root = dir.path().join("m");
        fs::create_dir(&root).expect("mkdir");
        symlink(&root, root.join("loop.yaml")).expect("symlink");
        symlink(&root, root.join("loop")).expect("symlink");
        symlink("missing.yaml", root.join("dangling.yaml")).expect("symlink");
        let files = scan(&root, 1024, yaml_only).expect("scan");
        assert!(files.is_empty(), "{:?}", names(&files));
    }

    #[test]
    fn skips_oversized_files_and_never_opens_fifos_blocking() {
        let dir = tempfile::tempdir().expect("tempdir");
        let root = dir.path();
        fs::write(root.join("big.yaml"), vec![b'#'; 5000]).expect("write");
        nix::unistd::mkfifo(
            &root.join("fifo.yaml"),
            nix::sys::stat::Mode::from_bits_truncate(0o600),
        )
        .expect("mkfifo");
        symlink("fifo.yaml", root.join("link-to-fifo.yaml")).expect("symlink");
        let files = scan(root, 100, yaml_only).expect("scan");
        assert_eq!(names(&files), ["big.yaml", "link-to-fifo.yaml"]);
        assert_eq!(files[0].content, FileContent::TooLarge { size: 5000 });
        assert!(
            matches!(&files[1].content, FileContent::Unreadable { message } if message.contains("not a regular file")),
            "{:?}",
            files[1].content
        );
    }

    #[test]
    fn a_missing_root_is_an_error_naming_it() {
        let dir = tempfile::tempdir().expect("tempdir");
        let err = scan(&dir.path().join("nope"), 100, yaml_only).expect_err("missing root");
        assert!(err.to_string().contains("nope"), "{err}");
    }
}
