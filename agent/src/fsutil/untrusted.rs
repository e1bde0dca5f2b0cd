//! Reading a small file out of a tree someone else controls (a
//! container's root filesystem).

use std::path::Path;

/// Why a file from an untrusted tree was not read. The message continues
/// the file's name: "/etc/passwd in the image" + " is a FIFO, not a
/// regular file".
#[derive(Debug, thiserror::Error)]
pub enum UntrustedFileError {
    #[error("is {kind}, not a regular file")]
    NotRegular { kind: &'static str },
    #[error("is larger than {limit} bytes")]
    TooLarge { limit: u64 },
    #[error("cannot be opened: {reason}")]
    Open { reason: String },
    #[error("cannot be read: {error}")]
    Read { error: std::io::Error },
}

/// Reads `path` inside `root`, a tree someone else controls (a container's
/// root filesystem): resolved as if `root` were `/` (openat2
/// `RESOLVE_IN_ROOT`: no symlink or `..` leads out of it), checked to be a
/// regular file before it is opened (a FIFO would block the reader
/// forever, a device would be opened on the host), then opened
/// `O_NONBLOCK|O_NOFOLLOW|O_CLOEXEC` and read up to `limit` bytes.
/// `Ok(None)` when it does not exist. Blocking.
pub fn read_untrusted(
    root: &Path,
    path: &str,
    limit: u64,
) -> Result<Option<Vec<u8>>, UntrustedFileError> {
    use pathrs::flags::OpenFlags;
    use std::io::Read;

    // pathrs says what failed ("openat2 failed") and returns why as its
    // source. (status::chain, which is above fsutil.)
    let open_error = |err: pathrs::error::Error| UntrustedFileError::Open {
        reason: netplugins::chain(&err),
    };
    let root = pathrs::Root::open(root).map_err(open_error)?;
    // O_PATH: resolving does not open the file itself.
    let handle = match root.resolve(path) {
        Ok(handle) => handle,
        Err(err) if err.kind() == pathrs::error::ErrorKind::OsError(Some(libc::ENOENT)) => {
            return Ok(None);
        }
        Err(err) => return Err(open_error(err)),
    };
    let stat = rustix::fs::fstat(&handle).map_err(|errno| UntrustedFileError::Open {
        reason: std::io::Error::from(errno).to_string(),
    })?;
    check_regular(rustix::fs::FileType::from_raw_mode(stat.st_mode))?;
    let file = handle
        .reopen(OpenFlags::O_RDONLY | OpenFlags::O_NONBLOCK | OpenFlags::O_NOFOLLOW)
        .map_err(open_error)?;
    // The handle pins the inode, but look again at what was opened.
    let meta = file
        .metadata()
        .map_err(|error| UntrustedFileError::Read { error })?;
    check_regular(rustix::fs::FileType::from_raw_mode(
        std::os::unix::fs::MetadataExt::mode(&meta),
    ))?;
    if meta.len() > limit {
        return Err(UntrustedFileError::TooLarge { limit });
    }
    let mut bytes = Vec::new();
    file.take(limit.saturating_add(1))
        .read_to_end(&mut bytes)
        .map_err(|error| UntrustedFileError::Read { error })?;
    if u64::try_from(bytes.len()).unwrap_or(u64::MAX) > limit {
        // It grew while being read.
        return Err(UntrustedFileError::TooLarge { limit });
    }
    Ok(Some(bytes))
}

fn check_regular(kind: rustix::fs::FileType) -> Result<(), UntrustedFileError> {
    use rustix::fs::FileType;
    let kind = match kind {
        FileType::RegularFile => return Ok(()),
        FileType::Fifo => "a FIFO",
        FileType::CharacterDevice => "a character device",
        FileType::BlockDevice => "a block device",
        FileType::Socket => "a socket",
        FileType::Directory => "a directory",
        FileType::Symlink => "a symbolic link",
        FileType::Unknown => "of an unknown type",
    };
    Err(UntrustedFileError::NotRegular { kind })
}

#[cfg(test)]
mod tests {
    use super::*;

    const LIMIT: u64 = 64;

    fn tree() -> tempfile::TempDir {
        let dir = tempfile::tempdir().expect("tempdir");
        std::fs::create_dir(dir.path().join("etc")).expect("mkdir");
        dir
    }

    fn problem(root: &Path, path: &str) -> String {
        read_untrusted(root, path, LIMIT)
            .expect_err("refused")
            .to_string()
    }

    #[test]
    fn reads_a_small_regular_file_and_reports_a_missing_one() {
        let dir = tree();
        std::fs::write(dir.path().join("etc/passwd"), "root:x:0:0::/:/bin/sh\n").expect("write");
        let bytes = read_untrusted(dir.path(), "/etc/passwd", LIMIT).expect("read");
        assert_eq!(bytes.as_deref(), Some(&b"root:x:0:0::/:/bin/sh\n"[..]));
        assert!(
            read_untrusted(dir.path(), "/etc/group", LIMIT)
                .expect("read")
                .is_none()
        );
        assert!(
            read_untrusted(dir.path(), "/nope/group", LIMIT)
                .expect("read")
                .is_none()
        );
    }

    #[test]
    fn a_fifo_is_refused_without_blocking() {
        let dir = tree();
        nix::unistd::mkfifo(
            &dir.path().join("etc/passwd"),
            nix::sys::stat::Mode::S_IRWXU,
        )
        .expect("mkfifo");
        assert_eq!(
            problem(dir.path(), "/etc/passwd"),
            "is a FIFO, not a regular file"
        );
    }

    #[test]
    fn directories_sockets_devices_and_big_files_are_refused() {
        let dir = tree();
        assert_eq!(
            problem(dir.path(), "/etc"),
            "is a directory, not a regular file"
        );
        let _socket =
            std::os::unix::net::UnixListener::bind(dir.path().join("etc/sock")).expect("bind");
        assert_eq!(
            problem(dir.path(), "/etc/sock"),
            "is a socket, not a regular file"
        );
        std::fs::write(dir.path().join("etc/big"), vec![b'x'; 65]).expect("write");
        assert_eq!(problem(dir.path(), "/etc/big"), "is larger than 64 bytes");
        assert_eq!(
            problem(Path::new("/"), "/dev/null"),
            "is a character device, not a regular file"
        );
    }

    #[test]
    fn symlinks_resolve_inside_the_root() {
        let dir = tree();
        let root = dir.path().join("root");
        std::fs::create_dir_all(root.join("etc")).expect("mkdir");
        let outside = dir.path().join("outside");
        std::fs::write(&outside, "host\n").expect("write");
        // Absolute and `..` escapes both land inside the root.
        std::os::unix::fs::symlink(&outside, root.join("etc/abs")).expect("symlink");
        std::os::unix::fs::symlink("../../../../outside", root.join("etc/rel")).expect("symlink");
        for link in ["/etc/abs", "/etc/rel"] {
            assert!(
                read_untrusted(&root, link, LIMIT).expect("read").is_none(),
                "{link} escaped the root"
            );
        }
        let inside = root.join(outside.strip_prefix("/").expect("absolute"));
        std::fs::create_dir_all(inside.parent().expect("parent")).expect("mkdir");
        std::fs::write(&inside, "inside\n").expect("write");
        let bytes = read_untrusted(&root, "/etc/abs", LIMIT).expect("read");
        assert_eq!(bytes.as_deref(), Some(&b"inside\n"[..]));
    }
}
