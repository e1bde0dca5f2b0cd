//! Who the container's process runs as: the image's `User` (`uid`,
//! `uid:gid`, `name`, `name:group`, …), overridden by `runAsUser` /
//! `runAsGroup`, plus supplementary groups from the image's `/etc/group`
//! and the pod's `supplementalGroups`/`fsGroup`.
//!
//! Names are looked up in the container's own `/etc/passwd` and
//! `/etc/group`, read as untrusted files: resolved inside the rootfs (a
//! symlink in the image cannot make the agent read a host file), regular
//! files only (a FIFO cannot block the agent, a device is never opened),
//! at most 4 MiB.

use std::path::Path;

use crate::fsutil::{UntrustedFileError, read_untrusted};

#[derive(Debug, thiserror::Error)]
pub enum UserError {
    #[error("image user {spec:?}: user {name:?} is not in the image's /etc/passwd")]
    UnknownUser { spec: String, name: String },
    #[error("image user {spec:?}: group {name:?} is not in the image's /etc/group")]
    UnknownGroup { spec: String, name: String },
    #[error("container {container}: {path} in the image {problem}")]
    ImageFile {
        container: String,
        path: &'static str,
        problem: UntrustedFileError,
    },
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ResolvedUser {
    pub uid: u32,
    pub gid: u32,
    pub additional_gids: Vec<u32>,
    /// The home directory from /etc/passwd, for `HOME`.
    pub home: String,
}

/// The two account files of an image, as text.
#[derive(Debug, Clone, Default)]
pub struct AccountFiles {
    pub passwd: String,
    pub group: String,
}

impl AccountFiles {
    /// Reads `/etc/passwd` and `/etc/group` of container `container` from
    /// its root filesystem, as untrusted files (see
    /// [`crate::fsutil::read_untrusted`]); a missing file is empty (scratch
    /// images have none).
    pub fn read(rootfs: &Path, container: &str) -> Result<Self, UserError> {
        let read = |path: &'static str| {
            read_untrusted(rootfs, path, MAX_ACCOUNT_FILE)
                .map(|bytes| String::from_utf8_lossy(&bytes.unwrap_or_default()).into_owned())
                .map_err(|problem| UserError::ImageFile {
                    container: container.to_string(),
                    path,
                    problem,
                })
        };
        Ok(Self {
            passwd: read("/etc/passwd")?,
            group: read("/etc/group")?,
        })
    }

    fn passwd_entries(&self) -> impl Iterator<Item = PasswdEntry<'_>> {
        self.passwd.lines().filter_map(PasswdEntry::parse)
    }

    fn group_entries(&self) -> impl Iterator<Item = GroupEntry<'_>> {
        self.group.lines().filter_map(GroupEntry::parse)
    }
}

/// A limit on what we read from an image: account files are small.
const MAX_ACCOUNT_FILE: u64 = 4 << 20;

struct PasswdEntry<'a> {
    name: &'a str,
    uid: u32,
    gid: u32,
    home: &'a str,
}

impl<'a> PasswdEntry<'a> {
    fn parse(line: &'a str) -> Option<Self> {
        let fields: Vec<&str> = line.split(':').collect();
        if fields.len() < 7 || line.starts_with('#') {
            return None;
        }
        Some(Self {
            name: fields[0],
            uid: fields[2].parse().ok()?,
            gid: fields[3].parse().ok()?,
            home: fields[5],
        })
    }
}

struct GroupEntry<'a> {
    name: &'a str,
    gid: u32,
    members: &'a str,
}

impl<'a> GroupEntry<'a> {
    fn parse(line: &'a str) -> Option<Self> {
        let fields: Vec<&str> = line.split(':').collect();
        if fields.len() < 4 || line.starts_with('#') {
            return None;
        }
        Some(Self {
            name: fields[0],
            gid: fields[2].parse().ok()?,
            members: fields[3],
        })
    }
}

/// The overrides a Pod can apply on top of the image's `User`.
#[derive(Debug, Clone, Default)]
pub struct UserOverrides<'a> {
    pub run_as_user: Option<u32>,
    pub run_as_group: Option<u32>,
    pub supplemental_groups: &'a [u32],
    pub fs_group: Option<u32>,
}

/// Resolves the process identity (see the module doc).
pub fn resolve(
    image_user: Option<&str>,
    overrides: &UserOverrides<'_>,
    files: &AccountFiles,
) -> Result<ResolvedUser, UserError> {
    let spec = image_user.unwrap_or("").trim();
    let (user_part, group_part) = match spec.split_once(':') {
        Some((u, g)) => (u, Some(g)),
        None => (spec, None),
    };

    let mut uid = 0;
    if !user_part.is_empty() {
        uid = match user_part.parse::<u32>() {
            Ok(uid) => uid,
            Err(_) => files
                .passwd_entries()
                .find(|e| e.name == user_part)
                .map(|e| e.uid)
                .ok_or_else(|| UserError::UnknownUser {
                    spec: spec.to_string(),
                    name: user_part.to_string(),
                })?,
        };
    }
    let mut explicit_gid = match group_part.filter(|g| !g.is_empty()) {
        None => None,
        Some(g) => Some(match g.parse::<u32>() {
            Ok(gid) => gid,
            Err(_) => files
                .group_entries()
                .find(|e| e.name == g)
                .map(|e| e.gid)
                .ok_or_else(|| UserError::UnknownGroup {
                    spec: spec.to_string(),
                    name: g.to_string(),
                })?,
        }),
    };
    if let Some(run_as_user) = overrides.run_as_user {
        // Kubernetes: runAsUser replaces the image's user entirely, group
        // included; the group then comes from /etc/passwd (or runAsGroup).
        uid = run_as_user;
        explicit_gid = None;
    }

    let entry = files.passwd_entries().find(|e| e.uid == uid);
    let gid = overrides
        .run_as_group
        .or(explicit_gid)
        .or(entry.as_ref().map(|e| e.gid))
        .unwrap_or(0);
    let mut additional_gids: Vec<u32> = Vec::new();
    if let Some(entry) = &entry {
        additional_gids.extend(
            files
                .group_entries()
                .filter(|g| g.members.split(',').any(|m| m.trim() == entry.name))
                .map(|g| g.gid),
        );
    }
    additional_gids.extend_from_slice(overrides.supplemental_groups);
    additional_gids.extend(overrides.fs_group);
    let mut seen = std::collections::BTreeSet::new();
    additional_gids.retain(|g| seen.insert(*g));
    let home = entry
        .as_ref()
        .map(|e| e.home)
        .filter(|h| !h.is_empty())
        .unwrap_or("/")
        .to_string();
    Ok(ResolvedUser {
        uid,
        gid,
        additional_gids,
        home,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn files() -> AccountFiles {
        AccountFiles {
            passwd: "root:x:0:0:root:/root:/bin/sh\n\
                     app:x:1000:1000:app:/home/app:/bin/sh\n\
                     # a comment\n\
                     web:x:33:33:www:/var/www:/bin/false\n"
                .to_string(),
            group: "root:x:0:\napp:x:1000:\nextra:x:2000:app,web\nwww:x:33:\n".to_string(),
        }
    }

    fn resolve_with(user: Option<&str>, overrides: UserOverrides<'_>) -> ResolvedUser {
        resolve(user, &overrides, &files()).expect("resolves")
    }

    #[test]
    fn no_user_is_root() {
        let u = resolve_with(None, UserOverrides::default());
        assert_eq!((u.uid, u.gid, u.home.as_str()), (0, 0, "/root"));
        assert!(u.additional_gids.is_empty());
    }

    #[test]
    fn names_resolve_through_the_image_files() {
        let u = resolve_with(Some("app"), UserOverrides::default());
        assert_eq!((u.uid, u.gid), (1000, 1000));
        assert_eq!(u.additional_gids, vec![2000]);
        assert_eq!(u.home, "/home/app");
        let u = resolve_with(Some("web:extra"), UserOverrides::default());
        assert_eq!((u.uid, u.gid), (33, 2000));
    }

    #[test]
    fn numeric_users_take_their_group_from_passwd_or_zero() {
        let u = resolve_with(Some("1000"), UserOverrides::default());
        assert_eq!((u.uid, u.gid), (1000, 1000));
        let u = resolve_with(Some("4242"), UserOverrides::default());
        assert_eq!((u.uid, u.gid, u.home.as_str()), (4242, 0, "/"));
        let u = resolve_with(Some("4242:77"), UserOverrides::default());
        assert_eq!((u.uid, u.gid), (4242, 77));
    }

    #[test]
    fn run_as_user_and_group_override_the_image() {
        let overrides = UserOverrides {
            run_as_user: Some(1000),
            ..Default::default()
        };
        let u = resolve_with(Some("web:www"), overrides);
        assert_eq!((u.uid, u.gid), (1000, 1000), "image group dropped");
        let overrides = UserOverrides {
            run_as_user: Some(5000),
            run_as_group: Some(6000),
            supplemental_groups: &[7000, 6000],
            fs_group: Some(8000),
        };
        let u = resolve_with(Some("app"), overrides);
        assert_eq!((u.uid, u.gid), (5000, 6000));
        assert_eq!(u.additional_gids, vec![7000, 6000, 8000]);
    }

    #[test]
    fn unknown_names_are_clear_errors() {
        let err =
            resolve(Some("nobody"), &UserOverrides::default(), &files()).expect_err("unknown user");
        assert_eq!(
            err.to_string(),
            "image user \"nobody\": user \"nobody\" is not in the image's /etc/passwd"
        );
        let err = resolve(Some("app:wheel"), &UserOverrides::default(), &files())
            .expect_err("unknown group");
        assert!(err.to_string().contains("group \"wheel\""), "{err}");
    }

    #[test]
    fn reading_is_confined_to_the_rootfs() {
        let dir = tempfile::tempdir().expect("tempdir");
        let rootfs = dir.path().join("rootfs");
        std::fs::create_dir_all(rootfs.join("etc")).expect("mkdir");
        std::fs::write(dir.path().join("host-passwd"), "evil:x:0:0::/:/bin/sh\n").expect("write");
        // An absolute symlink pointing "outside": inside the rootfs it
        // resolves to <rootfs>/<tempdir>/host-passwd, which does not exist.
        let outside = dir.path().join("host-passwd");
        std::os::unix::fs::symlink(&outside, rootfs.join("etc/passwd")).expect("symlink");
        std::os::unix::fs::symlink(
            "../../../../../../../../host-passwd",
            rootfs.join("etc/group"),
        )
        .expect("symlink");
        let files = AccountFiles::read(&rootfs, "app").expect("read");
        assert!(
            files.passwd.is_empty(),
            "escaped the rootfs: {}",
            files.passwd
        );
        assert!(
            files.group.is_empty(),
            "escaped the rootfs: {}",
            files.group
        );
    }
}
