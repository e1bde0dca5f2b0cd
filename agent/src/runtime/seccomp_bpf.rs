//! Compiled seccomp filters, reused. crun turns the OCI seccomp profile
//! into a BPF program with libseccomp for every container it creates; for
//! the default profile (three architectures, ~370 rules) that is 10-15 ms
//! of each start, the largest part of crun's own work. It leaves the
//! program in its state directory (`<root>/<id>/seccomp.bpf`) and accepts
//! one through the `run.oci.seccomp_bpf_data` annotation (base64; the
//! profile's other settings, such as its flags, still apply). So the first
//! container with a given profile is compiled by crun as usual, and later
//! ones get crun's own program for the same profile, from the same crun
//! binary: the filter is exactly the one crun would have built.
//!
//! Only for crun handlers (runc has no such annotation), and keyed by the
//! runtime binary, its version and the profile's JSON, so a different
//! profile or an upgraded crun compiles anew. The cache lives as long as
//! the agent.

use std::collections::HashMap;
use std::path::Path;
use std::sync::{Arc, Mutex};

use base64::Engine as _;
use oci_spec::runtime::Spec;
use sha2::{Digest, Sha256};

use super::oci::{Handler, RuntimeKind};

/// The annotation crun reads a compiled filter from.
pub const BPF_ANNOTATION: &str = "run.oci.seccomp_bpf_data";
/// Where crun leaves the program it compiled, in a container's state dir.
const BPF_FILE: &str = "seccomp.bpf";
/// One classic BPF instruction (`struct sock_filter`).
const INSTRUCTION_BYTES: usize = 8;
/// The kernel's limit for one filter (`BPF_MAXINSNS`).
const MAX_INSTRUCTIONS: usize = 4096;

/// Filters compiled by crun, by [`Self::key`]. Cheap to share.
#[derive(Debug, Default)]
pub struct BpfCache {
    compiled: Mutex<HashMap<String, Arc<str>>>,
}

/// A profile whose filter is not cached yet: learn it once crun compiled it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Pending {
    key: String,
}

impl BpfCache {
    /// For a crun container with a seccomp profile, adds the compiled
    /// filter to `spec` when it is known; otherwise returns what to
    /// [`Self::learn`] once the container is created.
    pub fn apply(&self, handler: &Handler, spec: &mut Spec) -> Option<Pending> {
        if handler.kind != RuntimeKind::Crun {
            return None;
        }
        let key = Self::key(handler, spec)?;
        let known = self
            .compiled
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .get(&key)
            .cloned();
        match known {
            Some(bpf) => {
                spec.annotations_mut()
                    .get_or_insert_with(Default::default)
                    .insert(BPF_ANNOTATION.to_string(), bpf.to_string());
                None
            }
            None => Some(Pending { key }),
        }
    }

    /// Takes the program crun compiled for container `id` (created just
    /// now with the profile of `pending`). A file that does not look like
    /// a BPF program is ignored: the next container is compiled by crun
    /// again.
    pub fn learn(&self, pending: Pending, handler: &Handler, id: &str) {
        let path = handler.root.join(id).join(BPF_FILE);
        match read_program(&path) {
            Ok(program) => {
                let encoded = base64::engine::general_purpose::STANDARD.encode(program);
                self.compiled
                    .lock()
                    .unwrap_or_else(|p| p.into_inner())
                    .insert(pending.key, encoded.into());
            }
            Err(reason) => {
                tracing::debug!(path = %path.display(), %reason, "no compiled seccomp filter to reuse");
            }
        }
    }

    /// How many compiled filters are known (for tests and diagnostics).
    pub fn len(&self) -> usize {
        self.compiled
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .len()
    }

    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    /// `None` when the spec has no seccomp profile.
    fn key(handler: &Handler, spec: &Spec) -> Option<String> {
        let profile = spec.linux().as_ref()?.seccomp().as_ref()?;
        let json = serde_json::to_vec(profile).ok()?;
        let mut hash = Sha256::new();
        for part in [
            handler.binary.as_os_str().as_encoded_bytes(),
            handler.version.as_bytes(),
            &json,
        ] {
            hash.update(u64::try_from(part.len()).unwrap_or(u64::MAX).to_le_bytes());
            hash.update(part);
        }
        Some(hex::encode(hash.finalize()))
    }
}

fn read_program(path: &Path) -> Result<Vec<u8>, String> {
    let bytes = std::fs::read(path).map_err(|err| err.to_string())?;
    let instructions = bytes.len() / INSTRUCTION_BYTES;
    if bytes.is_empty() || bytes.len() % INSTRUCTION_BYTES != 0 || instructions > MAX_INSTRUCTIONS {
        return Err(format!(
            "{} bytes is not a BPF program of at most {MAX_INSTRUCTIONS} instructions",
            bytes.len()
        ));
    }
    Ok(bytes)
}

#[cfg(test)]
mod tests {
    use std::path::PathBuf;

    use oci_spec::runtime::{LinuxBuilder, LinuxSeccompBuilder, SpecBuilder};

    use super::*;

    fn handler(kind: RuntimeKind, root: PathBuf) -> Handler {
        Handler {
            name: "crun".into(),
            binary: "/usr/bin/crun".into(),
            args: Vec::new(),
            derived: Vec::new(),
            kind,
            version: "crun version 1.8.1".into(),
            root,
        }
    }

    fn spec(seccomp: bool) -> Spec {
        let mut linux = LinuxBuilder::default();
        if seccomp {
            linux = linux.seccomp(LinuxSeccompBuilder::default().build().expect("seccomp"));
        }
        SpecBuilder::default()
            .linux(linux.build().expect("linux"))
            .build()
            .expect("spec")
    }

    fn annotation(spec: &Spec) -> Option<String> {
        spec.annotations()
            .as_ref()
            .and_then(|a| a.get(BPF_ANNOTATION).cloned())
    }

    #[test]
    fn the_second_crun_container_with_a_profile_gets_the_first_ones_filter() {
        let root = tempfile::tempdir().expect("tempdir");
        let crun = handler(RuntimeKind::Crun, root.path().to_path_buf());
        let cache = BpfCache::default();

        let mut first = spec(true);
        let pending = cache.apply(&crun, &mut first).expect("not compiled yet");
        assert_eq!(annotation(&first), None, "crun compiles the first one");
        std::fs::create_dir(root.path().join("c1")).expect("mkdir");
        let program: Vec<u8> = (0..16u8).collect();
        std::fs::write(root.path().join("c1").join(BPF_FILE), &program).expect("bpf");
        cache.learn(pending, &crun, "c1");
        assert_eq!(cache.len(), 1);

        let mut second = spec(true);
        assert_eq!(cache.apply(&crun, &mut second), None);
        let encoded = annotation(&second).expect("annotation");
        assert_eq!(
            base64::engine::general_purpose::STANDARD
                .decode(encoded)
                .expect("base64"),
            program
        );

        let mut unconfined = spec(false);
        assert_eq!(cache.apply(&crun, &mut unconfined), None);
        assert_eq!(annotation(&unconfined), None, "no profile, no filter");

        let runc = handler(RuntimeKind::Runc, root.path().to_path_buf());
        let mut for_runc = spec(true);
        assert_eq!(cache.apply(&runc, &mut for_runc), None);
        assert_eq!(annotation(&for_runc), None, "runc has no such annotation");

        let mut upgraded = crun.clone();
        upgraded.version = "crun version 1.9".into();
        assert!(
            cache.apply(&upgraded, &mut spec(true)).is_some(),
            "another crun compiles anew"
        );
    }

    #[test]
    fn a_file_that_is_no_bpf_program_is_not_reused() {
        let root = tempfile::tempdir().expect("tempdir");
        let crun = handler(RuntimeKind::Crun, root.path().to_path_buf());
        let cache = BpfCache::default();
        std::fs::create_dir(root.path().join("c1")).expect("mkdir");
        std::fs::write(root.path().join("c1").join(BPF_FILE), b"12345").expect("bpf");
        let pending = cache.apply(&crun, &mut spec(true)).expect("pending");
        cache.learn(pending.clone(), &crun, "c1");
        cache.learn(pending, &crun, "missing");
        assert!(cache.is_empty());
    }
}
