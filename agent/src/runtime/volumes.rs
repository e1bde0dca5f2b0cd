//! Pod volumes on the host: hostPath type checks, emptyDir directories
//! (tmpfs for `medium: Memory`), directories of files for configMap,
//! secret, downwardAPI and projected volumes (each file with its own mode,
//! each version swapped in through `..data`), the pod's fsGroup owning
//! those and its emptyDirs, and `subPath` mounts that cannot leave their
//! volume.

use std::fs::Permissions;
use std::os::fd::{AsFd, AsRawFd};
use std::os::unix::fs::{DirBuilderExt, FileTypeExt, OpenOptionsExt, PermissionsExt};
use std::path::{Component, Path, PathBuf};

use nix::mount::MsFlags;

use super::mountinfo;
use super::spec::{HostPathType, Volume, VolumeSource};
use crate::paths::Paths;

#[derive(Debug, thiserror::Error)]
pub enum VolumeError {
    #[error("volume {volume:?}: hostPath {path} {problem}")]
    HostPath {
        volume: String,
        path: PathBuf,
        problem: String,
    },
    #[error(transparent)]
    Io(#[from] super::atomic_writer::IoError),
    #[error("volume {volume:?}: mounting a tmpfs at {path}")]
    Tmpfs {
        volume: String,
        path: PathBuf,
        source: nix::errno::Errno,
    },
    #[error("volume {volume:?}: name {name:?} must be a relative path without '..'")]
    BadFileName { volume: String, name: String },
    #[error("volume {volume:?}: subPath {sub_path:?} {problem}")]
    SubPath {
        volume: String,
        sub_path: String,
        problem: String,
    },
    #[error("unmounting {path}")]
    Unmount {
        path: PathBuf,
        source: nix::errno::Errno,
    },
}

/// A pod volume ready to be bind-mounted into containers.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PreparedVolume {
    pub host_path: PathBuf,
    /// Mounted read-only whatever the volumeMount says (configMap, secret).
    pub always_read_only: bool,
}

/// Makes `volume` exist on the host. Idempotent, so a restarted agent can
/// call it again for a running pod.
pub fn prepare(
    paths: &Paths,
    pod_uid: &str,
    volume: &Volume,
) -> Result<PreparedVolume, VolumeError> {
    let name = volume.name.as_str();
    // The name becomes a directory name.
    if !is_plain_relative(name) || name.contains('/') {
        return Err(VolumeError::BadFileName {
            volume: name.to_string(),
            name: name.to_string(),
        });
    }
    match &volume.source {
        VolumeSource::HostPath { path, kind } => {
            check_host_path(name, path, *kind)?;
            Ok(PreparedVolume {
                host_path: path.clone(),
                always_read_only: false,
            })
        }
        VolumeSource::EmptyDir { memory, size_limit } => {
            let dir = if *memory {
                paths.pod_run_dir(pod_uid).join("volumes").join(name)
            } else {
                paths.pod_state_dir(pod_uid).join("volumes").join(name)
            };
            // Like kubelet: world-writable, so any container user can use it.
            make_dir(name, &dir, 0o777)?;
            if *memory {
                mount_tmpfs(name, &dir, 0o777, *size_limit)?;
            }
            // Keeps the setgid bit an fsGroup gave it (see
            // `give_empty_dirs_to_group`): clearing it on every reconcile
            // would let files made meanwhile miss the group.
            let current = std::fs::metadata(&dir)
                .map_err(|source| io_err(name, "inspecting", &dir, source))?
                .permissions()
                .mode();
            let wanted = 0o777 | (current & 0o2000);
            if current & 0o7777 != wanted {
                set_mode(name, &dir, wanted)?;
            }
            Ok(PreparedVolume {
                host_path: dir,
                always_read_only: false,
            })
        }
        VolumeSource::Directory { path } => {
            if !path.is_dir() {
                return Err(io_err(
                    name,
                    "finding the materialised directory",
                    path,
                    std::io::ErrorKind::NotFound.into(),
                ));
            }
            Ok(PreparedVolume {
                host_path: path.clone(),
                always_read_only: true,
            })
        }
    }
}

/// Unmounts and removes every volume directory of a pod (not hostPaths).
pub fn remove_pod_volumes(paths: &Paths, pod_uid: &str) -> Vec<VolumeError> {
    let mut errors = Vec::new();
    let run_volumes = paths.pod_run_dir(pod_uid).join("volumes");
    errors.extend(unmount_under(&run_volumes));
    if !errors.is_empty() {
        // Something may still be mounted there: it stays, with its content.
        return errors;
    }
    for dir in [run_volumes, paths.pod_state_dir(pod_uid)] {
        if let Err(source) = crate::fsutil::remove_dir_all_if_exists(&dir) {
            errors.push(io_err("", "removing", &dir, source));
        }
    }
    errors
}

/// Unmounts everything mounted at or below `dir`, deepest first. Not
/// knowing what is mounted is an error too: the caller must then not
/// delete `dir`.
pub fn unmount_under(dir: &Path) -> Vec<VolumeError> {
    let mounts = match mountinfo::read() {
        Ok(mounts) => mounts,
        Err(source) => {
            return vec![io_err(
                "",
                "reading",
                Path::new("/proc/self/mountinfo"),
                source,
            )];
        }
    };
    mountinfo::mounts_under(&mounts, dir)
        .into_iter()
        .filter_map(|path| {
            nix::mount::umount2(&path, nix::mount::MntFlags::MNT_DETACH)
                .err()
                .filter(|e| *e != nix::errno::Errno::EINVAL && *e != nix::errno::Errno::ENOENT)
                .map(|source| VolumeError::Unmount { path, source })
        })
        .collect()
}

fn check_host_path(volume: &str, path: &Path, kind: HostPathType) -> Result<(), VolumeError> {
    let err = |problem: &str| VolumeError::HostPath {
        volume: volume.to_string(),
        path: path.to_path_buf(),
        problem: problem.to_string(),
    };
    if !path.is_absolute() {
        return Err(err("must be an absolute path"));
    }
    let meta = std::fs::metadata(path).ok();
    let ft = meta.as_ref().map(|m| m.file_type());
    match kind {
        HostPathType::Unchecked => Ok(()),
        HostPathType::DirectoryOrCreate => match ft {
            None => {
                // kubelet creates it 0755, owned by root.
                std::fs::DirBuilder::new()
                    .recursive(true)
                    .mode(0o755)
                    .create(path)
                    .map_err(|e| err(&format!("could not be created: {e}")))
            }
            Some(ft) if ft.is_dir() => Ok(()),
            Some(_) => Err(err(
                "exists but is not a directory (type: DirectoryOrCreate)",
            )),
        },
        HostPathType::Directory => match ft {
            Some(ft) if ft.is_dir() => Ok(()),
            Some(_) => Err(err("is not a directory (type: Directory)")),
            None => Err(err("does not exist (type: Directory)")),
        },
        HostPathType::FileOrCreate => match ft {
            None => {
                if let Some(parent) = path.parent() {
                    std::fs::create_dir_all(parent)
                        .map_err(|e| err(&format!("could not be created: {e}")))?;
                }
                // Should a FIFO or a symlink appear there meanwhile, it is
                // neither waited on nor followed.
                std::fs::OpenOptions::new()
                    .write(true)
                    .create(true)
                    .truncate(false)
                    .mode(0o644)
                    .custom_flags(libc::O_NONBLOCK | libc::O_NOFOLLOW)
                    .open(path)
                    .map(drop)
                    .map_err(|e| err(&format!("could not be created: {e}")))
            }
            Some(ft) if ft.is_file() => Ok(()),
            Some(_) => Err(err("exists but is not a regular file (type: FileOrCreate)")),
        },
        HostPathType::File => expect_type(ft, |t| t.is_file(), "a regular file (type: File)", err),
        HostPathType::Socket => expect_type(ft, |t| t.is_socket(), "a socket (type: Socket)", err),
        HostPathType::CharDevice => expect_type(
            ft,
            |t| t.is_char_device(),
            "a character device (type: CharDevice)",
            err,
        ),
        HostPathType::BlockDevice => expect_type(
            ft,
            |t| t.is_block_device(),
            "a block device (type: BlockDevice)",
            err,
        ),
    }
}

fn expect_type(
    ft: Option<std::fs::FileType>,
    is: impl Fn(&std::fs::FileType) -> bool,
    what: &str,
    err: impl Fn(&str) -> VolumeError,
) -> Result<(), VolumeError> {
    match ft {
        Some(t) if is(&t) => Ok(()),
        Some(_) => Err(err(&format!("is not {what}"))),
        None => Err(err(&format!("does not exist; expected {what}"))),
    }
}

pub use super::atomic_writer::VolumeFile;

/// How [`write_files`] stores a configMap or secret volume.
#[derive(Debug, Clone, Copy)]
pub struct FileOptions {
    /// Keep the files in memory only (secrets): a tmpfs on `dir`.
    pub tmpfs: bool,
    /// Group owning the files and directories (the pod's fsGroup), so a
    /// 0o440 file works for a non-root container user in that group.
    pub gid: Option<u32>,
}

/// Materialises a configMap, secret, downwardAPI or projected volume:
/// `files` (each with its own mode) become the new version in `dir`,
/// swapped in atomically over the old one ([`super::atomic_writer`]).
/// Secrets go to a tmpfs so they never touch the disk. With a `gid`, the
/// directories are group-owned by it with the setgid bit (kubelet's volume
/// ownership).
pub fn write_files(
    volume: &str,
    dir: &Path,
    files: &[VolumeFile],
    options: FileOptions,
) -> Result<(), VolumeError> {
    for file in files {
        if !is_plain_relative(&file.path) {
            return Err(VolumeError::BadFileName {
                volume: volume.to_string(),
                name: file.path.clone(),
            });
        }
    }
    make_dir(volume, dir, 0o755)?;
    if options.tmpfs {
        let total: u64 = files
            .iter()
            .map(|file| u64::try_from(file.data.len()).unwrap_or(u64::MAX))
            .sum();
        // Room for the old version and the new one side by side while
        // `..data` is swapped, and some slack for inodes.
        mount_tmpfs(
            volume,
            dir,
            0o755,
            Some(total.saturating_mul(2).saturating_add(1 << 20)),
        )?;
        grow_tmpfs(volume, dir, total)?;
    }
    super::atomic_writer::write(volume, dir, files, options.gid)?;
    if let Some(gid) = options.gid {
        std::os::unix::fs::chown(dir, None, Some(gid))
            .map_err(|source| io_err(volume, "changing the group of", dir, source))?;
        set_mode(volume, dir, 0o2755)?;
    }
    Ok(())
}

/// Gives the pod's emptyDir volumes to its fsGroup as kubelet does when it
/// sets one up: the directory is group-owned by `gid` with the setgid bit
/// and group rwx (0o2777), so what containers create there belongs to
/// `gid` too. Idempotent (a no-op once applied; [`prepare`] keeps the
/// setgid bit); only the volume's directory is changed, not what
/// containers put in it. Other volumes are left alone (hostPath is never touched;
/// configMap/secret files get their group from [`write_files`]).
pub fn give_empty_dirs_to_group(
    volumes: &[Volume],
    prepared: &std::collections::BTreeMap<String, PreparedVolume>,
    gid: u32,
) -> Result<(), VolumeError> {
    for volume in volumes {
        let (VolumeSource::EmptyDir { .. }, Some(prepared)) =
            (&volume.source, prepared.get(&volume.name))
        else {
            continue;
        };
        let dir = &prepared.host_path;
        let meta = std::fs::metadata(dir)
            .map_err(|source| io_err(&volume.name, "inspecting", dir, source))?;
        if std::os::unix::fs::MetadataExt::gid(&meta) != gid {
            std::os::unix::fs::chown(dir, None, Some(gid))
                .map_err(|source| io_err(&volume.name, "changing the group of", dir, source))?;
        }
        if meta.permissions().mode() & 0o7777 != 0o2777 {
            set_mode(&volume.name, dir, 0o2777)?;
        }
    }
    Ok(())
}

/// Resolves `sub_path` inside `volume_root` (symlinks resolved as if
/// `volume_root` were `/`, so nothing outside can be reached), creating it
/// as a directory if missing, and bind-mounts exactly that file or
/// directory onto `staging`. The container mounts `staging`: a symlink
/// swapped in later cannot redirect it (kubelet's CVE-2017-1002101 fix).
pub fn mount_sub_path(
    volume: &str,
    volume_root: &Path,
    sub_path: &str,
    staging: &Path,
) -> Result<PathBuf, VolumeError> {
    let err = |problem: String| VolumeError::SubPath {
        volume: volume.to_string(),
        sub_path: sub_path.to_string(),
        problem,
    };
    if !is_plain_relative(sub_path) {
        return Err(err("must be a relative path without '..'".into()));
    }
    let root = pathrs::Root::open(volume_root).map_err(|e| {
        err(format!(
            "cannot open the volume at {}: {}",
            volume_root.display(),
            crate::status::chain(&e)
        ))
    })?;
    let handle = match root.resolve(sub_path) {
        Ok(handle) => handle,
        Err(e) if e.kind() == pathrs::error::ErrorKind::OsError(Some(libc::ENOENT)) => root
            .mkdir_all(sub_path, &Permissions::from_mode(0o755))
            .map_err(|e| err(format!("cannot be created: {}", crate::status::chain(&e))))?,
        Err(e) => {
            return Err(err(format!(
                "cannot be resolved: {}",
                crate::status::chain(&e)
            )));
        }
    };
    let fd_path = PathBuf::from(format!("/proc/self/fd/{}", handle.as_fd().as_raw_fd()));
    let is_dir = std::fs::metadata(&fd_path)
        .map_err(|e| err(format!("cannot be inspected: {e}")))?
        .is_dir();
    if let Some(parent) = staging.parent() {
        make_dir(volume, parent, 0o700)?;
    }
    let made = if is_dir {
        std::fs::create_dir(staging)
    } else {
        std::fs::OpenOptions::new()
            .write(true)
            .create(true)
            .truncate(false)
            .open(staging)
            .map(drop)
    };
    match made {
        Err(e) if e.kind() != std::io::ErrorKind::AlreadyExists => {
            return Err(io_err(
                volume,
                "creating the subPath mount point",
                staging,
                e,
            ));
        }
        _ => {}
    }
    nix::mount::mount(
        Some(&fd_path),
        staging,
        None::<&str>,
        MsFlags::MS_BIND | MsFlags::MS_REC,
        None::<&str>,
    )
    .map_err(|e| {
        err(format!(
            "cannot be bind-mounted onto {}: {e}",
            staging.display()
        ))
    })?;
    Ok(staging.to_path_buf())
}

/// Relative, non-empty, and free of `..` (Kubernetes' rule for subPath and
/// for keys of configMap/secret items).
fn is_plain_relative(path: &str) -> bool {
    let p = Path::new(path);
    !path.is_empty()
        && p.components()
            .all(|c| matches!(c, Component::Normal(_) | Component::CurDir))
}

fn mount_tmpfs(volume: &str, dir: &Path, mode: u32, size: Option<u64>) -> Result<(), VolumeError> {
    if mountinfo::is_mounted_at(dir) {
        return Ok(());
    }
    let mut options = format!("mode={mode:o}");
    if let Some(size) = size {
        options.push_str(&format!(",size={size}"));
    }
    nix::mount::mount(
        Some("tmpfs"),
        dir,
        Some("tmpfs"),
        MsFlags::MS_NOSUID | MsFlags::MS_NODEV,
        Some(options.as_str()),
    )
    .map_err(|source| VolumeError::Tmpfs {
        volume: volume.to_string(),
        path: dir.to_path_buf(),
        source,
    })
}

/// Makes the secret tmpfs at `dir` large enough for `incoming` more
/// bytes next to what it holds (a Secret that grew since it was mounted).
fn grow_tmpfs(volume: &str, dir: &Path, incoming: u64) -> Result<(), VolumeError> {
    let stat = rustix::fs::statvfs(dir)
        .map_err(|errno| io_err(volume, "inspecting", dir, errno.into()))?;
    let size = stat.f_blocks.saturating_mul(stat.f_frsize);
    let used = stat
        .f_blocks
        .saturating_sub(stat.f_bfree)
        .saturating_mul(stat.f_frsize);
    let needed = used
        .saturating_add(incoming.saturating_mul(2))
        .saturating_add(1 << 20);
    if size >= needed {
        return Ok(());
    }
    nix::mount::mount(
        None::<&str>,
        dir,
        None::<&str>,
        MsFlags::MS_REMOUNT | MsFlags::MS_NOSUID | MsFlags::MS_NODEV,
        Some(format!("size={needed}").as_str()),
    )
    .map_err(|source| VolumeError::Tmpfs {
        volume: volume.to_string(),
        path: dir.to_path_buf(),
        source,
    })
}

fn make_dir(volume: &str, dir: &Path, mode: u32) -> Result<(), VolumeError> {
    crate::fsutil::create_dir_all_with_mode(dir, mode)
        .map_err(|source| io_err(volume, "creating", dir, source))
}

fn set_mode(volume: &str, path: &Path, mode: u32) -> Result<(), VolumeError> {
    std::fs::set_permissions(path, Permissions::from_mode(mode))
        .map_err(|source| io_err(volume, "setting permissions of", path, source))
}

fn io_err(volume: &str, action: &'static str, path: &Path, source: std::io::Error) -> VolumeError {
    super::atomic_writer::io_err(volume, action, path, source).into()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn host_path(path: &Path, kind: HostPathType) -> Volume {
        Volume {
            name: "data".into(),
            source: VolumeSource::HostPath {
                path: path.to_path_buf(),
                kind,
            },
        }
    }

    #[test]
    fn host_path_types_are_checked() {
        let dir = tempfile::tempdir().expect("tempdir");
        let paths = Paths::new(dir.path(), dir.path());
        let file = dir.path().join("file");
        std::fs::write(&file, "x").expect("write");
        let ok = |p: &Path, k| prepare(&paths, "u", &host_path(p, k));
        assert!(ok(&file, HostPathType::File).is_ok());
        assert!(ok(dir.path(), HostPathType::Directory).is_ok());
        let err = ok(&file, HostPathType::Directory).expect_err("not a dir");
        assert_eq!(
            err.to_string(),
            format!(
                "volume \"data\": hostPath {} is not a directory (type: Directory)",
                file.display()
            )
        );
        let missing = dir.path().join("missing");
        assert!(ok(&missing, HostPathType::Socket).is_err());
        assert!(
            ok(&missing, HostPathType::Unchecked).is_ok(),
            "no type: no check"
        );
        ok(&missing.join("sub"), HostPathType::DirectoryOrCreate).expect("created");
        assert!(missing.join("sub").is_dir());
        ok(&dir.path().join("new/file"), HostPathType::FileOrCreate).expect("created");
        assert!(dir.path().join("new/file").is_file());
        assert!(ok(Path::new("relative"), HostPathType::Unchecked).is_err());
    }

    #[test]
    fn disk_empty_dirs_live_under_the_pod_state() {
        let dir = tempfile::tempdir().expect("tempdir");
        let paths = Paths::new(&dir.path().join("root"), &dir.path().join("run"));
        let volume = Volume {
            name: "cache".into(),
            source: VolumeSource::EmptyDir {
                memory: false,
                size_limit: None,
            },
        };
        let prepared = prepare(&paths, "u1", &volume).expect("prepared");
        assert_eq!(
            prepared.host_path,
            dir.path().join("root/pods/u1/volumes/cache")
        );
        let mode = std::fs::metadata(&prepared.host_path)
            .expect("stat")
            .permissions()
            .mode();
        assert_eq!(mode & 0o777, 0o777);
        assert!(remove_pod_volumes(&paths, "u1").is_empty());
        assert!(!prepared.host_path.exists());
    }

    fn file(path: &str, data: &[u8], mode: u32) -> VolumeFile {
        VolumeFile {
            path: path.into(),
            data: data.to_vec(),
            mode,
        }
    }

    #[test]
    fn file_names_may_not_escape() {
        let dir = tempfile::tempdir().expect("tempdir");
        let options = FileOptions {
            tmpfs: false,
            gid: None,
        };
        for bad in ["../x", "/etc/passwd", "a/../../b", ""] {
            let err = write_files("cfg", dir.path(), &[file(bad, b"", 0o644)], options)
                .expect_err("rejected");
            assert!(
                matches!(err, VolumeError::BadFileName { .. }),
                "{bad}: {err}"
            );
        }
        write_files(
            "cfg",
            dir.path(),
            &[file("a.conf", b"1", 0o644), file("sub/b", b"2", 0o644)],
            options,
        )
        .expect("written");
        assert_eq!(std::fs::read(dir.path().join("sub/b")).expect("read"), b"2");
        // A second version replaces the first.
        write_files("cfg", dir.path(), &[file("c", b"3", 0o644)], options).expect("written");
        assert!(!dir.path().join("a.conf").exists());
        assert_eq!(std::fs::read(dir.path().join("c")).expect("read"), b"3");
    }

    fn mode_and_group(path: &Path) -> (u32, u32) {
        let meta = std::fs::metadata(path).expect("stat");
        (
            meta.permissions().mode() & 0o7777,
            std::os::unix::fs::MetadataExt::gid(&meta),
        )
    }

    #[test]
    fn each_file_gets_its_own_mode_and_the_group() {
        let dir = tempfile::tempdir().expect("tempdir");
        // A group the test process may give files to whoever runs it.
        let gid = nix::unistd::getegid().as_raw();
        let options = FileOptions {
            tmpfs: false,
            gid: Some(gid),
        };
        write_files(
            "cfg",
            dir.path(),
            &[file("a", b"1", 0o440), file("sub/b", b"2", 0o400)],
            options,
        )
        .expect("written");
        assert_eq!(mode_and_group(&dir.path().join("a")), (0o440, gid));
        assert_eq!(mode_and_group(&dir.path().join("sub/b")), (0o400, gid));
        assert_eq!(mode_and_group(&dir.path().join("sub")), (0o2755, gid));
        assert_eq!(mode_and_group(dir.path()), (0o2755, gid));
        assert!(!format!("{:?}", file("k", b"s3cret", 0o400)).contains("s3cret"));
    }
}
