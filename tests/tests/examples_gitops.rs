//! The GitOps example (`examples/gitops/berth-git-sync`) does what its
//! README promises, against a real git repository: a node gets `common/`
//! plus its own `hosts/<name>/`, each commit lands by one symlink swap, a
//! commit that does not validate never lands, and old checkouts go away.

use std::path::{Path, PathBuf};
use std::process::{Command, Output};

use berth_e2e::berth_bin;

const POD: &str = "apiVersion: v1\nkind: Pod\nmetadata:\n  name: NAME\nspec:\n  containers:\n  - name: main\n    image: localhost/berth/busybox:1.35\n";

fn pod(name: &str) -> String {
    POD.replace("NAME", name)
}

fn script() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("../examples/gitops/berth-git-sync")
}

struct Fleet {
    temp: tempfile::TempDir,
}

impl Fleet {
    fn new() -> Self {
        let fleet = Fleet {
            temp: tempfile::tempdir().expect("temp dir"),
        };
        fleet.git(&["init", "--quiet", "--initial-branch=main"]);
        fleet
    }

    fn repo(&self) -> PathBuf {
        self.temp.path().join("fleet")
    }

    fn link(&self) -> PathBuf {
        self.temp.path().join("agent.d")
    }

    fn state(&self) -> PathBuf {
        self.temp.path().join("state")
    }

    fn git(&self, args: &[&str]) {
        std::fs::create_dir_all(self.repo()).expect("repo dir");
        let output = Command::new("git")
            .arg("-C")
            .arg(self.repo())
            .args(["-c", "user.name=test", "-c", "user.email=test@example.com"])
            .args(args)
            .output()
            .expect("running git (scripts/install-deps.sh installs it)");
        assert!(output.status.success(), "git {args:?}: {output:?}");
    }

    /// Writes `files` (path, contents; empty contents deletes) and commits.
    fn commit(&self, files: &[(&str, &str)]) {
        for (path, contents) in files {
            let path = self.repo().join(path);
            if contents.is_empty() {
                std::fs::remove_file(&path).expect("removing a file");
            } else {
                std::fs::create_dir_all(path.parent().expect("parent")).expect("dirs");
                std::fs::write(&path, contents).expect("writing a file");
            }
        }
        self.git(&["add", "--all"]);
        self.git(&["commit", "--quiet", "-m", "change"]);
    }

    fn sync(&self) -> Output {
        Command::new(script())
            .arg(format!("file://{}", self.repo().display()))
            .arg("main")
            .env("BERTH_MANIFESTS", self.link())
            .env("BERTH_GIT_STATE", self.state())
            .env("BERTH_GIT_HOST", "node-a")
            .env("BERTH", berth_bin())
            .output()
            .expect("running berth-git-sync")
    }

    /// What the link points at, and the manifest files there (relative).
    fn applied(&self) -> (PathBuf, Vec<String>) {
        let target = std::fs::read_link(self.link()).expect("the manifest dir is a symlink");
        let mut files = Vec::new();
        collect(&target, &target, &mut files);
        files.sort();
        (target, files)
    }

    fn checkouts(&self) -> usize {
        std::fs::read_dir(self.state().join("revs"))
            .expect("revs")
            .count()
    }
}

fn collect(root: &Path, dir: &Path, out: &mut Vec<String>) {
    for entry in std::fs::read_dir(dir).expect("reading a checkout") {
        let path = entry.expect("entry").path();
        if path.is_dir() {
            collect(root, &path, out);
        } else {
            let relative = path.strip_prefix(root).expect("below the root");
            out.push(relative.display().to_string());
        }
    }
}

fn assert_ok(output: &Output, what: &str) {
    assert!(
        output.status.success(),
        "{what}: {}",
        String::from_utf8_lossy(&output.stderr)
    );
}

#[test]
fn a_node_applies_common_and_its_own_manifests_commit_by_commit() {
    let fleet = Fleet::new();
    fleet.commit(&[
        ("common/hello.yaml", &pod("hello")),
        ("hosts/node-a/web.yaml", &pod("web")),
        ("hosts/node-b/other.yaml", &pod("other")),
        ("README.md", "not a manifest\n"),
    ]);
    assert_ok(&fleet.sync(), "first sync");
    let (first, files) = fleet.applied();
    assert_eq!(files, ["common/hello.yaml", "host/web.yaml"]);

    assert_ok(&fleet.sync(), "sync without a new commit");
    assert_eq!(fleet.applied().0, first, "nothing new: the link stays");

    fleet.commit(&[
        ("hosts/node-a/web.yaml", ""),
        ("common/db.yaml", &pod("db")),
    ]);
    let synced = fleet.sync();
    assert_ok(&synced, "second sync");
    // `berth diff` says what the swap does before it happens.
    let log = String::from_utf8_lossy(&synced.stderr);
    let said = |verb: &str, object: &str| {
        log.lines()
            .any(|l| l.starts_with(verb) && l.contains(object))
    };
    assert!(said("create", "Pod/default/db"), "{log}");
    assert!(said("delete", "Pod/default/web"), "{log}");
    assert!(said("unchanged", "Pod/default/hello"), "{log}");
    let (second, files) = fleet.applied();
    assert_ne!(second, first);
    assert_eq!(files, ["common/db.yaml", "common/hello.yaml"]);

    fleet.commit(&[("common/more.yaml", &pod("more"))]);
    assert_ok(&fleet.sync(), "third sync");
    assert!(!first.exists(), "the checkout two commits back is removed");
    assert!(second.exists(), "the previous checkout stays");
    assert_eq!(fleet.checkouts(), 2);
}

#[test]
fn a_commit_that_does_not_validate_is_not_applied() {
    let fleet = Fleet::new();
    fleet.commit(&[("common/hello.yaml", &pod("hello"))]);
    assert_ok(&fleet.sync(), "first sync");
    let (good, _) = fleet.applied();

    let typo = pod("typo").replace("    image:", "    imagePulPolicy: Always\n    image:");
    fleet.commit(&[("common/typo.yaml", &typo), ("common/ok.yaml", &pod("ok"))]);
    let output = fleet.sync();
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert_eq!(output.status.code(), Some(1), "{stderr}");
    assert!(
        stderr.contains("typo.yaml:") && stderr.contains("imagePullPolicy"),
        "berth's error names the file and the fix: {stderr}"
    );
    assert_eq!(
        fleet.applied().0,
        good,
        "the node keeps the last good commit"
    );

    fleet.commit(&[("common/typo.yaml", "")]);
    assert_ok(&fleet.sync(), "sync after the fix");
    assert_eq!(fleet.applied().1, ["common/hello.yaml", "common/ok.yaml"]);
}

#[test]
fn a_real_manifest_directory_is_left_alone() {
    let fleet = Fleet::new();
    fleet.commit(&[("common/hello.yaml", &pod("hello"))]);
    std::fs::create_dir(fleet.link()).expect("a real directory");
    std::fs::write(fleet.link().join("mine.yaml"), pod("mine")).expect("a file");
    let output = fleet.sync();
    assert_eq!(output.status.code(), Some(2), "{output:?}");
    assert!(fleet.link().join("mine.yaml").is_file());
}
