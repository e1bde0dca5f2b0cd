//! The desired state: the union of all valid objects in the manifest
//! directory, published as one immutable snapshot at a time.
//!
//! Rules this module implements (DESIGN.md "Semantics"):
//! - **Per-file last-known-good.** A file is applied as a whole: when it
//!   has any error (including a half-written one), the objects of its last
//!   error-free version stay in force and its status shows the errors. A new
//!   file that never parsed contributes nothing. A deleted file takes its
//!   objects with it.
//! - **Generations** count content changes of each object (hash of its
//!   canonical JSON), persisted in the metadata DB ([`generations`]).
//! - **Conflicts**: when two files define the same object, the file that
//!   has been in the directory longer keeps it; files present at start-up
//!   rank in path order. Both files report the conflict
//!   (`manifests::find_conflicts`).
//! - Only files whose content hash changed are parsed again.

pub mod generations;

use std::collections::{BTreeMap, HashMap};
use std::fmt;
use std::path::{Path, PathBuf};
use std::sync::Arc;

use manifests::files::ManifestFile;
use manifests::parse::ParsedFile;
use manifests::{Diagnostic, Object, ObjectKey, Severity};
use tracing::warn;

use crate::source::dir::ScanConsumer;
use crate::source::scan::{FileContent, ScannedFile};
use crate::status::{FileStatus, SourceRef, chain};
use generations::Generations;

/// One object of the desired state.
#[derive(Clone)]
pub struct DesiredObject {
    pub key: ObjectKey,
    pub object: Arc<Object>,
    pub source: SourceRef,
    pub generation: u64,
    /// SHA-256 of the object's canonical JSON.
    pub content_hash: String,
}

/// Objects are compared by identity, place and content hash; the content
/// itself is covered by the hash.
impl PartialEq for DesiredObject {
    fn eq(&self, other: &Self) -> bool {
        self.key == other.key
            && self.generation == other.generation
            && self.source == other.source
            && self.content_hash == other.content_hash
    }
}

/// Never prints the object: a Secret's data must not reach logs.
impl fmt::Debug for DesiredObject {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("DesiredObject")
            .field("key", &self.key.to_string())
            .field("generation", &self.generation)
            .field("source", &self.source.to_string())
            .finish_non_exhaustive()
    }
}

/// One consistent desired state.
#[derive(Debug, Clone, PartialEq, Default)]
pub struct DesiredState {
    /// Increments with every published change (0: nothing scanned yet).
    pub revision: u64,
    pub objects: BTreeMap<ObjectKey, DesiredObject>,
    /// Every manifest file, in path order, with its problems.
    pub files: Vec<FileStatus>,
}

impl DesiredState {
    pub fn get(&self, key: &ObjectKey) -> Option<&DesiredObject> {
        self.objects.get(key)
    }

    /// Keys added, removed, or changed (content or source) from `before`
    /// to `self`.
    pub fn changed_keys(&self, before: &DesiredState) -> Vec<ObjectKey> {
        let mut keys: Vec<ObjectKey> = self
            .objects
            .iter()
            .filter(|(key, object)| before.objects.get(*key) != Some(object))
            .map(|(key, _)| key.clone())
            .collect();
        keys.extend(
            before
                .objects
                .keys()
                .filter(|key| !self.objects.contains_key(*key))
                .cloned(),
        );
        keys
    }
}

#[derive(Debug)]
struct FileRecord {
    fingerprint: String,
    parsed: Arc<ParsedFile>,
    /// The last version without errors (the current one if it has none).
    good: Option<Arc<ParsedFile>>,
    /// The scan that first saw the file: earlier files win conflicts.
    since: u64,
}

impl FileRecord {
    /// What the file contributes now: itself, or its last good version.
    fn effective(&self) -> Option<&ParsedFile> {
        self.good.as_deref()
    }
}

/// Turns successive directory scans into desired states.
#[derive(Debug)]
pub struct DesiredStore {
    /// The manifest directory as configured: file paths in diagnostics and
    /// status are under it, stable across symlink swaps of the directory.
    manifests_dir: PathBuf,
    files: BTreeMap<PathBuf, FileRecord>,
    generations: Generations,
    scans: u64,
    current: Arc<DesiredState>,
}

impl DesiredStore {
    pub fn new(manifests_dir: &Path, generations: Generations) -> Self {
        Self {
            manifests_dir: manifests_dir.to_owned(),
            files: BTreeMap::new(),
            generations,
            scans: 0,
            current: Arc::new(DesiredState::default()),
        }
    }

    pub fn current(&self) -> Arc<DesiredState> {
        Arc::clone(&self.current)
    }

    /// Applies a complete scan of the directory. Returns the new desired
    /// state when anything a user or reconciler can see changed.
    pub fn update(&mut self, scanned: Vec<ScannedFile<ManifestFile>>) -> Option<Arc<DesiredState>> {
        let next = self.apply_scan(scanned);
        self.persist_generations();
        next
    }

    /// [`Self::update`] without persisting the generations it assigned:
    /// the caller publishes the state first and then calls
    /// [`Self::persist_generations`], so the database commit (an fsync)
    /// does not delay reconciles. A crash in between loses nothing: the
    /// next start assigns the same generations from the same content.
    pub fn apply_scan(
        &mut self,
        scanned: Vec<ScannedFile<ManifestFile>>,
    ) -> Option<Arc<DesiredState>> {
        self.scans += 1;
        let mut previous = std::mem::take(&mut self.files);
        for file in scanned {
            let path = self.manifests_dir.join(&file.relative);
            let old = previous.remove(&path);
            let record = match old {
                Some(old) if old.fingerprint == file.content.fingerprint() => old,
                old => {
                    let parsed = Arc::new(parse(&path, &file.class, &file.content));
                    let good = if parsed.has_errors() {
                        old.as_ref().and_then(|o| o.good.clone())
                    } else {
                        Some(Arc::clone(&parsed))
                    };
                    FileRecord {
                        fingerprint: file.content.fingerprint(),
                        parsed,
                        good,
                        since: old.map_or(self.scans, |o| o.since),
                    }
                }
            };
            self.files.insert(path, record);
        }

        let next = self.build(self.current.revision);
        if next == *self.current {
            return None;
        }
        self.current = Arc::new(DesiredState {
            revision: self.current.revision + 1,
            ..next
        });
        Some(self.current())
    }

    /// Persists the generations assigned since the last call.
    pub fn persist_generations(&mut self) {
        if let Err(err) = self.generations.commit() {
            warn!(error = %chain(&err), "could not persist object generations; a restart may re-apply objects");
        }
    }

    fn build(&mut self, revision: u64) -> DesiredState {
        let mut ranked: Vec<(&PathBuf, &FileRecord)> = self.files.iter().collect();
        ranked.sort_by(|(pa, a), (pb, b)| a.since.cmp(&b.since).then_with(|| pa.cmp(pb)));
        let effective: Vec<&ParsedFile> =
            ranked.iter().filter_map(|(_, r)| r.effective()).collect();

        let mut conflicts: HashMap<PathBuf, Vec<Diagnostic>> = HashMap::new();
        for diagnostic in manifests::find_conflicts(effective.iter().copied()) {
            conflicts
                .entry(diagnostic.file.clone())
                .or_default()
                .push(diagnostic);
        }

        let mut objects = BTreeMap::new();
        let mut provided: HashMap<&Path, Vec<String>> = HashMap::new();
        for file in &effective {
            for document in &file.documents {
                let Some(object) = &document.object else {
                    continue;
                };
                let key = object.key();
                if objects.contains_key(&key) {
                    continue;
                }
                let content_hash = object.content_hash();
                let generation = self.generations.generation(&key, &content_hash);
                provided
                    .entry(&file.path)
                    .or_default()
                    .push(key.to_string());
                objects.insert(
                    key.clone(),
                    DesiredObject {
                        key,
                        object: Arc::new(object.clone()),
                        source: SourceRef {
                            file: file.path.clone(),
                            line: document.line,
                            column: document.column,
                        },
                        generation,
                        content_hash,
                    },
                );
            }
        }

        let files = self
            .files
            .iter()
            .map(|(path, record)| FileStatus {
                path: path.clone(),
                objects: provided.remove(path.as_path()).unwrap_or_default(),
                diagnostics: record.parsed.all_diagnostics().cloned().collect(),
                conflicts: conflicts.remove(path).unwrap_or_default(),
                last_known_good: record.parsed.has_errors() && record.good.is_some(),
            })
            .collect();
        DesiredState {
            revision,
            objects,
            files,
        }
    }
}

/// Parses one scanned file the way `berth validate` does.
fn parse(path: &Path, class: &ManifestFile, content: &FileContent) -> ParsedFile {
    match content {
        FileContent::Bytes { bytes, .. } => match class {
            ManifestFile::HostsToml { host } => manifests::parse_hosts_toml(path, host, bytes),
            ManifestFile::Yaml | ManifestFile::Json => manifests::parse_file(path, bytes),
        },
        FileContent::TooLarge { size } => file_error(path, manifests::file_too_large(path, *size)),
        FileContent::Unreadable { message } => file_error(
            path,
            Diagnostic {
                file: path.to_owned(),
                line: 0,
                column: 0,
                severity: Severity::Error,
                field: None,
                message: message.clone(),
            },
        ),
    }
}

fn file_error(path: &Path, diagnostic: Diagnostic) -> ParsedFile {
    ParsedFile {
        path: path.to_owned(),
        documents: Vec::new(),
        diagnostics: vec![diagnostic],
    }
}

/// Publishes the desired state of each scan that changed something: the
/// source's consumer. Generations are persisted after the state is
/// published (see [`DesiredStore::apply_scan`]).
pub struct Publisher {
    store: DesiredStore,
    publish: tokio::sync::watch::Sender<Arc<DesiredState>>,
}

impl Publisher {
    /// The publisher, and the receiver of every desired state it publishes.
    pub fn new(store: DesiredStore) -> (Self, tokio::sync::watch::Receiver<Arc<DesiredState>>) {
        let (publish, receiver) = tokio::sync::watch::channel(store.current());
        (Self { store, publish }, receiver)
    }
}

impl ScanConsumer for Publisher {
    fn consume(&mut self, scanned: Vec<ScannedFile<ManifestFile>>) {
        if let Some(state) = self.store.apply_scan(scanned) {
            tracing::info!(
                revision = state.revision,
                objects = state.objects.len(),
                files = state.files.len(),
                "new desired state"
            );
            self.publish.send_replace(state);
        }
        self.store.persist_generations();
    }
}

/// Desired states made from manifest text, for unit tests.
#[cfg(test)]
pub mod testing {
    use std::path::Path;

    use sha2::{Digest, Sha256};

    use super::*;

    /// `text` as the source reads file `relative` of the manifest directory.
    pub fn file(relative: &str, text: &str) -> ScannedFile<ManifestFile> {
        ScannedFile {
            relative: relative.into(),
            class: manifests::classify_path(Path::new(relative)).expect("a manifest path"),
            content: FileContent::Bytes {
                bytes: text.as_bytes().to_vec(),
                hash: hex::encode(Sha256::digest(text.as_bytes())),
            },
            symlink_target: None,
        }
    }

    /// A store over `/m` with generations in memory.
    pub fn store() -> DesiredStore {
        DesiredStore::new(Path::new("/m"), Generations::in_memory())
    }
}

#[cfg(test)]
mod tests {
    use manifests::Kind;

    use super::testing::file;
    use super::*;

    const DIR: &str = "/etc/agent.d";

    fn store() -> DesiredStore {
        DesiredStore::new(Path::new(DIR), Generations::in_memory())
    }

    fn config_map(name: &str, value: &str) -> String {
        format!(
            "apiVersion: v1\nkind: ConfigMap\nmetadata:\n  name: {name}\ndata:\n  k: \"{value}\"\n"
        )
    }

    const BROKEN: &str = "apiVersion: v1\nkind: ConfigMap\nmetadata:\n  name: [unclosed\n";

    fn key(name: &str) -> ObjectKey {
        ObjectKey::new(Kind::ConfigMap, "default", name)
    }

    fn file_status<'a>(state: &'a DesiredState, relative: &str) -> &'a FileStatus {
        let path = Path::new(DIR).join(relative);
        state
            .files
            .iter()
            .find(|f| f.path == path)
            .expect("file in status")
    }

    #[test]
    fn generations_move_with_content_not_with_rescans_or_renames() {
        let mut store = store();
        let first = store
            .update(vec![file("a.yaml", &config_map("x", "1"))])
            .expect("first state");
        assert_eq!(first.revision, 1);
        assert_eq!(first.get(&key("x")).expect("x").generation, 1);

        assert!(
            store
                .update(vec![file("a.yaml", &config_map("x", "1"))])
                .is_none(),
            "nothing changed"
        );

        let edited = store
            .update(vec![file("a.yaml", &config_map("x", "2"))])
            .expect("edit");
        assert_eq!(
            (
                edited.revision,
                edited.get(&key("x")).expect("x").generation
            ),
            (2, 2)
        );

        let renamed = store
            .update(vec![file("b.yaml", &config_map("x", "2"))])
            .expect("rename");
        let x = renamed.get(&key("x")).expect("x");
        assert_eq!(x.generation, 2, "same content, same generation");
        assert_eq!(x.source.file, Path::new(DIR).join("b.yaml"));
        assert_eq!(
            renamed.changed_keys(&edited),
            [key("x")],
            "a new source is worth a reconcile"
        );
    }

    #[test]
    fn a_broken_edit_keeps_the_last_good_objects_and_reports_the_error() {
        let mut store = store();
        let good = store
            .update(vec![file("a.yaml", &config_map("x", "1"))])
            .expect("good");
        let broken = store.update(vec![file("a.yaml", BROKEN)]).expect("broken");
        assert_eq!(
            broken.objects, good.objects,
            "previous objects stay applied, same generation"
        );
        let status = file_status(&broken, "a.yaml");
        assert!(status.last_known_good && status.has_errors());
        assert_eq!(status.objects, ["ConfigMap/default/x"]);
        assert!(
            broken.changed_keys(&good).is_empty(),
            "nothing to reconcile"
        );

        let fixed = store
            .update(vec![file("a.yaml", &config_map("x", "3"))])
            .expect("fixed");
        assert_eq!(fixed.get(&key("x")).expect("x").generation, 2);
        assert!(!file_status(&fixed, "a.yaml").has_errors());
    }

    #[test]
    fn a_file_that_never_parsed_contributes_nothing_and_a_deleted_file_takes_its_objects() {
        let mut store = store();
        let state = store
            .update(vec![
                file("a.yaml", &config_map("x", "1")),
                file("new.yaml", BROKEN),
            ])
            .expect("state");
        assert_eq!(state.objects.len(), 1);
        let status = file_status(&state, "new.yaml");
        assert!(status.has_errors() && !status.last_known_good && status.objects.is_empty());

        let deleted = store
            .update(vec![file("new.yaml", BROKEN)])
            .expect("deleted a.yaml");
        assert!(deleted.objects.is_empty());
        assert_eq!(deleted.changed_keys(&state), [key("x")]);
    }

    #[test]
    fn conflicts_keep_the_older_file_and_are_reported_on_both() {
        let mut store = store();
        let start = store
            .update(vec![
                file("b.yaml", &config_map("x", "from b")),
                file("a.yaml", &config_map("x", "from a")),
            ])
            .expect("start");
        let x = start.get(&key("x")).expect("x");
        assert_eq!(
            x.source.file,
            Path::new(DIR).join("a.yaml"),
            "path order at start-up"
        );
        assert_eq!(file_status(&start, "a.yaml").conflicts.len(), 1);
        assert_eq!(file_status(&start, "b.yaml").conflicts.len(), 1);
        assert!(
            file_status(&start, "b.yaml").conflicts[0]
                .message
                .contains("a.yaml")
        );

        // A newer file sorting first does not take the object over.
        let later = store
            .update(vec![
                file("a.yaml", &config_map("x", "from a")),
                file("b.yaml", &config_map("x", "from b")),
                file("0.yaml", &config_map("x", "from 0")),
            ])
            .expect("later");
        assert_eq!(
            later.get(&key("x")).expect("x").source.file,
            Path::new(DIR).join("a.yaml")
        );
        assert_eq!(later.get(&key("x")).expect("x").generation, 1);
        assert_eq!(file_status(&later, "0.yaml").conflicts.len(), 1);

        // When the holder goes, the next oldest file takes over.
        let handover = store
            .update(vec![
                file("b.yaml", &config_map("x", "from b")),
                file("0.yaml", &config_map("x", "from 0")),
            ])
            .expect("handover");
        assert_eq!(
            handover.get(&key("x")).expect("x").source.file,
            Path::new(DIR).join("b.yaml")
        );
    }

    #[test]
    fn unreadable_files_are_errors_that_keep_the_last_good_version() {
        let mut store = store();
        store
            .update(vec![file("a.yaml", &config_map("x", "1"))])
            .expect("good");
        let unreadable = ScannedFile {
            relative: "a.yaml".into(),
            class: ManifestFile::Yaml,
            content: FileContent::Unreadable {
                message: "cannot open /etc/agent.d/a.yaml: Permission denied".into(),
            },
            symlink_target: None,
        };
        let state = store.update(vec![unreadable]).expect("unreadable");
        assert!(state.get(&key("x")).is_some());
        let status = file_status(&state, "a.yaml");
        assert!(status.last_known_good);
        assert!(status.diagnostics[0].message.contains("Permission denied"));
    }

    #[test]
    fn hosts_toml_files_become_registry_objects() {
        let mut store = store();
        let state = store
            .update(vec![file(
                "certs.d/docker.io/hosts.toml",
                "server = \"https://registry-1.docker.io\"\n[host.\"https://mirror.local\"]\ncapabilities = [\"pull\", \"resolve\"]\n",
            )])
            .expect("state");
        let registry = state
            .get(&ObjectKey::new(Kind::Registry, "", "docker.io"))
            .expect("registry object");
        assert_eq!(
            registry.source.file,
            Path::new(DIR).join("certs.d/docker.io/hosts.toml")
        );
    }

    #[test]
    fn debug_output_never_contains_object_content() {
        let mut store = store();
        let secret = "apiVersion: v1\nkind: Secret\nmetadata:\n  name: s\nstringData:\n  password: hunter2\n";
        let state = store.update(vec![file("s.yaml", secret)]).expect("state");
        let printed = format!("{state:?}");
        assert!(printed.contains("Secret/default/s"), "{printed}");
        assert!(!printed.contains("hunter2"), "{printed}");
    }
}
