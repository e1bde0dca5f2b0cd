//! Idmapped image layers for pods with `hostUsers: false`: each layer is
//! cloned as an idmapped mount (`open_tree` + `mount_setattr
//! MOUNT_ATTR_IDMAP` with the pod's user namespace) so that its files,
//! owned by IDs 0..65535 on disk, appear owned by the pod's host IDs;
//! the overlay is built on those clones (the kernel cannot idmap an
//! overlay mount itself) and keeps its own references, so the clones are
//! detached right after. The shared layers on disk never change. The
//! container's writable layer is not idmapped (the overlay's mounter
//! could not create its work directory through one): its root is given to
//! the pod's root instead, and what the container writes is stored with
//! its host IDs.

use std::os::fd::{AsFd, AsRawFd};
use std::path::{Path, PathBuf};

use nix::mount::MntFlags;
use rustix::mount::{MoveMountFlags, OpenTreeFlags};

#[derive(Debug, thiserror::Error)]
pub enum IdmapError {
    #[error("opening the user namespace {path}")]
    UserNamespace {
        path: PathBuf,
        source: std::io::Error,
    },
    #[error(
        "idmapping image layer {layer} ({step}); hostUsers: false needs idmapped mounts of the image store's file system (Linux 5.12 or later, ext4, xfs, btrfs, tmpfs from 6.3)"
    )]
    Layer {
        layer: PathBuf,
        step: &'static str,
        source: std::io::Error,
    },
    #[error("{action} {path}")]
    Io {
        action: &'static str,
        path: PathBuf,
        source: std::io::Error,
    },
}

/// Idmapped clones of image layers, mounted at `<under>/<n>`.
#[derive(Debug)]
pub struct IdmappedLayers {
    pub dirs: Vec<PathBuf>,
}

/// Mounts an idmapped clone of every layer of `layers` under `under`.
/// On failure, the clones made so far are undone.
pub fn idmap_layers(
    layers: &[PathBuf],
    userns: &Path,
    under: &Path,
) -> Result<IdmappedLayers, IdmapError> {
    let ns = std::fs::File::open(userns).map_err(|source| IdmapError::UserNamespace {
        path: userns.to_path_buf(),
        source,
    })?;
    let mut made = IdmappedLayers { dirs: Vec::new() };
    for (n, layer) in layers.iter().enumerate() {
        let target = under.join(n.to_string());
        match idmap_one(layer, &ns, &target) {
            Ok(()) => made.dirs.push(target),
            Err(err) => {
                made.release();
                return Err(err);
            }
        }
    }
    Ok(made)
}

impl IdmappedLayers {
    /// Detaches the clones (an overlay built on them keeps its own) and
    /// removes their mount points; best effort: a leftover directory is
    /// removed with the container's layer.
    pub fn release(&self) {
        for dir in &self.dirs {
            let _ = nix::mount::umount2(dir, MntFlags::MNT_DETACH | MntFlags::UMOUNT_NOFOLLOW);
            let _ = std::fs::remove_dir(dir);
        }
    }
}

fn idmap_one(layer: &Path, userns: &std::fs::File, target: &Path) -> Result<(), IdmapError> {
    let fail = |step: &'static str| {
        move |source: std::io::Error| IdmapError::Layer {
            layer: layer.to_path_buf(),
            step,
            source,
        }
    };
    std::fs::create_dir_all(target).map_err(|source| IdmapError::Io {
        action: "creating",
        path: target.to_path_buf(),
        source,
    })?;
    let tree = rustix::mount::open_tree(
        rustix::fs::CWD,
        layer,
        OpenTreeFlags::OPEN_TREE_CLONE | OpenTreeFlags::OPEN_TREE_CLOEXEC,
    )
    .map_err(|e| fail("open_tree")(e.into()))?;
    set_idmap(tree.as_fd(), userns).map_err(fail("mount_setattr"))?;
    rustix::mount::move_mount(
        tree.as_fd(),
        "",
        rustix::fs::CWD,
        target,
        MoveMountFlags::MOVE_MOUNT_F_EMPTY_PATH,
    )
    .map_err(|e| fail("move_mount")(e.into()))
}

/// `struct mount_attr` of `mount_setattr(2)`.
#[repr(C)]
struct MountAttr {
    attr_set: u64,
    attr_clr: u64,
    propagation: u64,
    userns_fd: u64,
}

const MOUNT_ATTR_IDMAP: u64 = 0x0010_0000;

/// Makes the detached mount `tree` idmapped with the user namespace `userns`.
#[allow(unsafe_code)]
fn set_idmap(tree: std::os::fd::BorrowedFd<'_>, userns: &std::fs::File) -> std::io::Result<()> {
    let attr = MountAttr {
        attr_set: MOUNT_ATTR_IDMAP,
        attr_clr: 0,
        propagation: 0,
        userns_fd: u64::try_from(userns.as_raw_fd()).unwrap_or(u64::MAX),
    };
    // SAFETY: the path is a valid empty C string, `attr` is a valid
    // mount_attr of the size passed, and both descriptors stay open for
    // the call; the kernel only reads them.
    let ret = unsafe {
        libc::syscall(
            libc::SYS_mount_setattr,
            tree.as_raw_fd(),
            c"".as_ptr(),
            libc::AT_EMPTY_PATH,
            &attr as *const MountAttr,
            std::mem::size_of::<MountAttr>(),
        )
    };
    if ret < 0 {
        return Err(std::io::Error::last_os_error());
    }
    Ok(())
}
