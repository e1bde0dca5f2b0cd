//! Container root filesystems: one overlay mount per container, from the
//! image's unpacked layers (lowerdirs, top first, as the snapshotter returns
//! them) plus the container's own writable layer under
//! `Paths::container_layer(id)` (`upper/`, `work/`), mounted at the bundle's
//! `rootfs/`.
//!
//! The classic `mount(2)` takes all options in one page (4 KiB), which a
//! long list of absolute snapshot paths overflows. So the overlay is built
//! with the new mount API, one `fsconfig("lowerdir+")` call per layer (Linux
//! ≥ 6.8). Older kernels get the containerd trick instead: short relative
//! names (here: symlinks `0`, `1`, … to the layers, which overlayfs follows)
//! resolved against a working directory set on a throw-away thread.

use std::os::unix::fs::symlink;
use std::path::{Path, PathBuf};

use nix::mount::{MntFlags, MsFlags};
use rustix::mount::{FsMountFlags, FsOpenFlags, MountAttrFlags, MoveMountFlags};

use super::mountinfo;
use crate::fsutil::{create_dir_all_with_mode, remove_dir_all_if_exists};
use crate::paths::Paths;

#[derive(Debug, thiserror::Error)]
pub enum RootfsError {
    #[error("container {id} has no image layers to mount")]
    NoLayers { id: String },
    #[error("image layer {path} is missing or not a directory")]
    MissingLayer { path: PathBuf },
    #[error("creating {path}")]
    Create {
        path: PathBuf,
        source: std::io::Error,
    },
    #[error("mounting the overlay at {target} ({step})")]
    Mount {
        target: PathBuf,
        step: &'static str,
        source: std::io::Error,
    },
    #[error("unmounting {target}")]
    Unmount {
        target: PathBuf,
        source: nix::errno::Errno,
    },
    #[error("removing {path}")]
    Remove {
        path: PathBuf,
        source: std::io::Error,
    },
    #[error(transparent)]
    Idmap(#[from] super::idmap::IdmapError),
    #[error("giving {path} to the pod's root (host ID {id})")]
    Chown {
        path: PathBuf,
        id: u32,
        source: std::io::Error,
    },
}

/// The user namespace a container's files are seen through
/// (`hostUsers: false`).
#[derive(Debug, Clone, Copy)]
pub struct Idmap<'a> {
    /// The pod's user namespace file.
    pub userns: &'a Path,
    /// The host ID of the pod's root.
    pub host_id: u32,
}

/// How an overlay was mounted.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum MountMethod {
    /// `fsopen` + one `fsconfig("lowerdir+")` per layer (Linux ≥ 6.8).
    LowerdirPlus,
    /// Classic `mount(2)` with short relative names for the layers.
    ShortNames,
}

/// A container's mounted root filesystem.
#[derive(Debug, Clone)]
pub struct ContainerRootfs {
    /// Where the overlay is mounted (the bundle's `rootfs/`).
    pub mount_point: PathBuf,
    /// `containers/<id>/`: `upper/` and `work/`.
    pub layer_dir: PathBuf,
    pub method: MountMethod,
}

/// Creates the writable layer of container `id` and mounts the overlay of
/// `lowerdirs` (top first) at `mount_point`; with `idmap`, of idmapped
/// clones of them (see `idmap`).
pub fn create(
    paths: &Paths,
    id: &str,
    lowerdirs: &[PathBuf],
    mount_point: &Path,
    idmap: Option<Idmap<'_>>,
) -> Result<ContainerRootfs, RootfsError> {
    if lowerdirs.is_empty() {
        return Err(RootfsError::NoLayers { id: id.to_string() });
    }
    let layer_dir = paths.container_layer(id);
    // Only root may look into a container's writable layer; the upper dir
    // itself becomes the container's `/` and keeps the usual 0755.
    make_dir(&layer_dir, 0o700)?;
    let upper = layer_dir.join("upper");
    let work = layer_dir.join("work");
    make_dir(&upper, 0o755)?;
    make_dir(&work, 0o700)?;
    make_dir(mount_point, 0o755)?;
    let method = match idmap {
        None => mount_overlay(lowerdirs, &upper, &work, mount_point)?,
        Some(idmap) => {
            check_layers(lowerdirs)?;
            std::os::unix::fs::chown(&upper, Some(idmap.host_id), Some(idmap.host_id)).map_err(
                |source| RootfsError::Chown {
                    path: upper.clone(),
                    id: idmap.host_id,
                    source,
                },
            )?;
            let layers =
                super::idmap::idmap_layers(lowerdirs, idmap.userns, &layer_dir.join("idmapped"))?;
            let mounted = mount_overlay(&layers.dirs, &upper, &work, mount_point);
            layers.release();
            mounted?
        }
    };
    Ok(ContainerRootfs {
        mount_point: mount_point.to_path_buf(),
        layer_dir,
        method,
    })
}

/// Unmounts the rootfs of container `id` (if mounted) and deletes its
/// writable layer. Returns every failure. While the overlay may still be
/// mounted, the layer under it stays.
pub fn remove(paths: &Paths, id: &str, mount_point: &Path) -> Vec<RootfsError> {
    let mut errors = Vec::new();
    if let Err(err) = unmount(mount_point) {
        errors.push(err);
        return errors;
    }
    let layer_dir = paths.container_layer(id);
    if let Err(source) = remove_dir_all_if_exists(&layer_dir) {
        errors.push(RootfsError::Remove {
            path: layer_dir,
            source,
        });
    }
    errors
}

/// Mounts the overlay, with the new mount API where the kernel has it.
pub fn mount_overlay(
    lowerdirs: &[PathBuf],
    upper: &Path,
    work: &Path,
    target: &Path,
) -> Result<MountMethod, RootfsError> {
    check_layers(lowerdirs)?;
    match mount_lowerdir_plus(lowerdirs, upper, work, target) {
        Ok(()) => Ok(MountMethod::LowerdirPlus),
        // ENOSYS: no fsopen at all; EINVAL: a kernel without "lowerdir+".
        Err(RootfsError::Mount { source, .. })
            if matches!(source.raw_os_error(), Some(libc::ENOSYS | libc::EINVAL)) =>
        {
            mount_short_names(lowerdirs, upper, work, target)?;
            Ok(MountMethod::ShortNames)
        }
        Err(err) => Err(err),
    }
}

fn check_layers(lowerdirs: &[PathBuf]) -> Result<(), RootfsError> {
    match lowerdirs.iter().find(|dir| !dir.is_dir()) {
        Some(path) => Err(RootfsError::MissingLayer { path: path.clone() }),
        None => Ok(()),
    }
}

/// The new mount API: one `lowerdir+` per layer, so no length limit.
pub fn mount_lowerdir_plus(
    lowerdirs: &[PathBuf],
    upper: &Path,
    work: &Path,
    target: &Path,
) -> Result<(), RootfsError> {
    let fail = |step: &'static str| {
        move |err: rustix::io::Errno| RootfsError::Mount {
            target: target.to_path_buf(),
            step,
            source: err.into(),
        }
    };
    let fs =
        rustix::mount::fsopen("overlay", FsOpenFlags::FSOPEN_CLOEXEC).map_err(fail("fsopen"))?;
    for dir in lowerdirs {
        rustix::mount::fsconfig_set_string(&fs, "lowerdir+", dir.as_path())
            .map_err(fail("fsconfig lowerdir+"))?;
    }
    rustix::mount::fsconfig_set_string(&fs, "upperdir", upper)
        .map_err(fail("fsconfig upperdir"))?;
    rustix::mount::fsconfig_set_string(&fs, "workdir", work).map_err(fail("fsconfig workdir"))?;
    rustix::mount::fsconfig_create(&fs).map_err(fail("fsconfig create"))?;
    let mnt = rustix::mount::fsmount(&fs, FsMountFlags::FSMOUNT_CLOEXEC, MountAttrFlags::empty())
        .map_err(fail("fsmount"))?;
    rustix::mount::move_mount(
        &mnt,
        "",
        rustix::fs::CWD,
        target,
        MoveMountFlags::MOVE_MOUNT_F_EMPTY_PATH,
    )
    .map_err(fail("move_mount"))
}

/// Classic `mount(2)` for kernels before 6.8: the layers are reached
/// through symlinks `0`, `1`, … in a directory next to `work`, and the
/// mount runs on a throw-away thread whose working directory is that
/// directory, so the options stay short however long the real paths are.
pub fn mount_short_names(
    lowerdirs: &[PathBuf],
    upper: &Path,
    work: &Path,
    target: &Path,
) -> Result<(), RootfsError> {
    let links = work.with_file_name("lower-links");
    remove_dir_all_if_exists(&links).map_err(|source| RootfsError::Remove {
        path: links.clone(),
        source,
    })?;
    make_dir(&links, 0o700)?;
    for (n, dir) in lowerdirs.iter().enumerate() {
        let link = links.join(n.to_string());
        symlink(dir, &link).map_err(|source| RootfsError::Create { path: link, source })?;
    }
    let names: Vec<String> = (0..lowerdirs.len()).map(|n| n.to_string()).collect();
    let options = format!(
        "lowerdir={},upperdir={},workdir={}",
        names.join(":"),
        upper.display(),
        work.display()
    );
    let mount_error = |step: &'static str, source: std::io::Error| RootfsError::Mount {
        target: target.to_path_buf(),
        step,
        source,
    };
    let result = std::thread::scope(|scope| {
        std::thread::Builder::new()
            .name("overlay-mount".into())
            .spawn_scoped(scope, || {
                // The working directory is per process unless this thread
                // gets its own copy of the fs context first.
                nix::sched::unshare(nix::sched::CloneFlags::CLONE_FS)
                    .map_err(|e| mount_error("unshare CLONE_FS", e.into()))?;
                std::env::set_current_dir(&links).map_err(|e| mount_error("chdir", e))?;
                nix::mount::mount(
                    Some("overlay"),
                    target,
                    Some("overlay"),
                    MsFlags::empty(),
                    Some(options.as_str()),
                )
                .map_err(|e| mount_error("mount", e.into()))
            })
            .map_err(|e| mount_error("spawning the mount thread", e))?
            .join()
            .map_err(|_| mount_error("mount thread", std::io::Error::other("panicked")))?
    });
    // Overlayfs resolved the links at mount time; they are not needed now.
    let _ = std::fs::remove_dir_all(&links);
    result
}

/// Unmounts `target` if something is mounted there (stacked mounts too).
pub fn unmount(target: &Path) -> Result<(), RootfsError> {
    loop {
        let mounts = mountinfo::read().map_err(|source| RootfsError::Remove {
            path: PathBuf::from("/proc/self/mountinfo"),
            source,
        })?;
        if !mountinfo::is_mount_point(&mounts, target) {
            return Ok(());
        }
        match nix::mount::umount2(target, MntFlags::UMOUNT_NOFOLLOW) {
            Ok(()) => {}
            // Busy (a process still has its cwd inside): detach it now, the
            // kernel finishes when the last user goes.
            Err(nix::errno::Errno::EBUSY) => {
                nix::mount::umount2(target, MntFlags::MNT_DETACH | MntFlags::UMOUNT_NOFOLLOW)
                    .map_err(|source| RootfsError::Unmount {
                        target: target.to_path_buf(),
                        source,
                    })?;
            }
            Err(nix::errno::Errno::EINVAL | nix::errno::Errno::ENOENT) => return Ok(()),
            Err(source) => {
                return Err(RootfsError::Unmount {
                    target: target.to_path_buf(),
                    source,
                });
            }
        }
    }
}

fn make_dir(path: &Path, mode: u32) -> Result<(), RootfsError> {
    create_dir_all_with_mode(path, mode).map_err(|source| RootfsError::Create {
        path: path.to_path_buf(),
        source,
    })
}
