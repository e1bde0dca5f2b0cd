//! Lets the root of a pod with `hostUsers: false` reach its mount
//! sources. runc 1.1 and crun 1.8 mount a container's root file system and
//! bind mounts after entering its user namespace, as the pod's root (a
//! host ID without privileges over berth's 0700 state directories), so
//! each directory on the way to a source gets a POSIX ACL entry that lets
//! exactly that host ID search it (`user:<id>:--x`): nobody else gains
//! anything, and nothing in those directories becomes readable. The
//! entries of directories the pod shares with others (the run root,
//! `bundles/`, `pods/`) are removed with the pod.

use std::path::{Path, PathBuf};

use oci_spec::runtime::Spec;
use rustix::fs::XattrFlags;

const ACL_XATTR: &str = "system.posix_acl_access";
const ACL_VERSION: u32 = 2;
const TAG_USER_OBJ: u16 = 0x01;
const TAG_USER: u16 = 0x02;
const TAG_GROUP_OBJ: u16 = 0x04;
const TAG_MASK: u16 = 0x10;
const TAG_OTHER: u16 = 0x20;
const SEARCH: u16 = 0x1;

#[derive(Debug, thiserror::Error)]
#[error("letting the pod's root (host ID {id}) search {path}")]
pub struct TraverseError {
    pub path: PathBuf,
    pub id: u32,
    pub source: std::io::Error,
}

/// The directories the runtime passes through to mount `spec`'s root
/// file system and bind sources, from the outermost in (`/` left out).
pub fn directories(bundle: &Path, spec: &Spec) -> Vec<PathBuf> {
    let mut targets = vec![bundle.join("rootfs")];
    for mount in spec.mounts().iter().flatten() {
        let bind = mount.typ().as_deref() == Some("bind")
            || mount
                .options()
                .iter()
                .flatten()
                .any(|o| o == "bind" || o == "rbind");
        if let Some(source) = mount.source().as_ref().filter(|_| bind) {
            targets.push(source.clone());
        }
    }
    let mut dirs: Vec<PathBuf> = Vec::new();
    for target in targets {
        for dir in target.ancestors().skip(1) {
            if dir != Path::new("/") && dir.is_absolute() && !dirs.iter().any(|d| d == dir) {
                dirs.push(dir.to_path_buf());
            }
        }
    }
    dirs.sort_by_key(|d| d.components().count());
    dirs
}

/// Adds `user:<id>:--x` to every directory of `dirs` that others cannot
/// search already.
pub fn grant(dirs: &[PathBuf], id: u32) -> Result<(), TraverseError> {
    for dir in dirs {
        let err = |source| TraverseError {
            path: dir.clone(),
            id,
            source,
        };
        let meta = std::fs::metadata(dir).map_err(err)?;
        let mode = std::os::unix::fs::PermissionsExt::mode(&meta.permissions());
        if mode & 0o001 != 0 {
            continue;
        }
        let mut acl = read_acl(dir, mode).map_err(err)?;
        acl.retain(|e| !(e.0 == TAG_USER && e.2 == id));
        acl.push((TAG_USER, SEARCH, id));
        write_acl(dir, acl).map_err(err)?;
    }
    Ok(())
}

/// Removes `id`'s entries from `dirs` (missing directories are fine).
pub fn revoke(dirs: &[PathBuf], id: u32) {
    for dir in dirs {
        let Ok(meta) = std::fs::metadata(dir) else {
            continue;
        };
        let mode = std::os::unix::fs::PermissionsExt::mode(&meta.permissions());
        let Ok(mut acl) = read_acl(dir, mode) else {
            continue;
        };
        let before = acl.len();
        acl.retain(|e| !(e.0 == TAG_USER && e.2 == id));
        if acl.len() != before {
            let _ = write_acl(dir, acl);
        }
    }
}

/// (tag, perm, id) entries: the directory's ACL, or its mode as one.
type Entry = (u16, u16, u32);

fn read_acl(dir: &Path, mode: u32) -> std::io::Result<Vec<Entry>> {
    let mut buf = vec![0u8; 4096];
    match rustix::fs::getxattr(dir, ACL_XATTR, &mut buf) {
        Ok(len) => {
            let body = buf.get(4..len).unwrap_or_default();
            Ok(body
                .chunks_exact(8)
                .map(|c| {
                    (
                        u16::from_le_bytes([c[0], c[1]]),
                        u16::from_le_bytes([c[2], c[3]]),
                        u32::from_le_bytes([c[4], c[5], c[6], c[7]]),
                    )
                })
                .collect())
        }
        Err(rustix::io::Errno::NODATA) => {
            let bits = |shift: u32| u16::try_from((mode >> shift) & 7).unwrap_or(0);
            Ok(vec![
                (TAG_USER_OBJ, bits(6), u32::MAX),
                (TAG_GROUP_OBJ, bits(3), u32::MAX),
                (TAG_OTHER, bits(0), u32::MAX),
            ])
        }
        Err(errno) => Err(errno.into()),
    }
}

/// Writes `acl` with a mask that lets named entries take effect and
/// keeps the owning group's permissions.
fn write_acl(dir: &Path, mut acl: Vec<Entry>) -> std::io::Result<()> {
    let group = acl.iter().find(|e| e.0 == TAG_GROUP_OBJ).map_or(0, |e| e.1);
    acl.retain(|e| e.0 != TAG_MASK);
    if acl.iter().any(|e| e.0 == TAG_USER) {
        acl.push((TAG_MASK, group | SEARCH, u32::MAX));
    }
    // The kernel wants entries ordered by tag, named ones by id.
    acl.sort_by_key(|e| (e.0, e.2));
    let mut blob = ACL_VERSION.to_le_bytes().to_vec();
    for (tag, perm, id) in acl {
        blob.extend_from_slice(&tag.to_le_bytes());
        blob.extend_from_slice(&perm.to_le_bytes());
        blob.extend_from_slice(&id.to_le_bytes());
    }
    rustix::fs::setxattr(dir, ACL_XATTR, &blob, XattrFlags::empty()).map_err(Into::into)
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::os::unix::fs::PermissionsExt;

    #[test]
    fn directories_are_every_ancestor_of_the_sources_outermost_first() {
        let spec: Spec = serde_json::from_value(serde_json::json!({
            "ociVersion": "1.0.2",
            "mounts": [
                {"destination": "/proc", "type": "proc", "source": "proc"},
                {"destination": "/etc/hosts", "type": "bind", "source": "/run/b/pods/u/etc/hosts", "options": ["rbind"]},
            ]
        }))
        .expect("spec");
        let dirs = directories(Path::new("/run/b/bundles/c1"), &spec);
        let want: Vec<PathBuf> = [
            "/run",
            "/run/b",
            "/run/b/bundles",
            "/run/b/pods",
            "/run/b/bundles/c1",
            "/run/b/pods/u",
            "/run/b/pods/u/etc",
        ]
        .iter()
        .map(PathBuf::from)
        .collect();
        assert_eq!(dirs, want);
    }

    #[test]
    fn grant_lets_only_that_id_search_and_revoke_takes_it_back() {
        let dir = tempfile::tempdir().expect("tempdir");
        let private = dir.path().join("private");
        std::fs::create_dir(&private).expect("mkdir");
        std::fs::set_permissions(&private, std::fs::Permissions::from_mode(0o700)).expect("chmod");
        grant(std::slice::from_ref(&private), 131072).expect("grant");
        let acl = read_acl(&private, 0o700).expect("acl");
        assert!(acl.contains(&(TAG_USER, SEARCH, 131072)), "{acl:?}");
        assert!(
            acl.contains(&(TAG_OTHER, 0, u32::MAX)),
            "others still nothing"
        );
        let mode = std::fs::metadata(&private)
            .expect("stat")
            .permissions()
            .mode();
        assert_eq!(mode & 0o007, 0);
        revoke(std::slice::from_ref(&private), 131072);
        let acl = read_acl(&private, 0o700).expect("acl");
        assert!(!acl.iter().any(|e| e.0 == TAG_USER), "{acl:?}");
    }
}
