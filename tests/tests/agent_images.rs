//! The agent's image side end to end: the real `berth run` with Image and
//! Registry objects in its manifest directory, real `docker-registry`
//! servers (and the kit's recording proxy as a mirror), and the real CLI
//! (`berth status`, `images`, `prune`) reading the same store.

use std::fs;
use std::path::{Path, PathBuf};

use berth_e2e::agent::{AgentProcess, REACT, file, object};
use berth_e2e::images::{
    Entry, ImageSpec, OciLayout, PushFormat, PushedImage, busybox_entries, busybox_image,
    push_image,
};
use berth_e2e::proxy::Proxy;
use berth_e2e::pull::stored_blob;
use berth_e2e::registry::{Registry, RegistryOptions, free_port};
use berth_e2e::wait_until;
use berth_e2e::{TestDirs, require_root};

/// What the image manager logs once per archive it imports.
const IMPORTED: &str = "imported an image archive";
use serde_json::Value;

fn image_yaml(name: &str, reference: &str, extra: &str) -> String {
    format!(
        "apiVersion: berth/v1\nkind: Image\nmetadata:\n  name: {name}\nspec:\n  image: {reference}\n{extra}"
    )
}

/// A Registry object for `host` with `mirrors` tried before `server`.
fn registry_yaml(host: &str, mirrors: &[String], server: &str) -> String {
    let mut yaml = format!(
        "apiVersion: berth/v1\nkind: Registry\nmetadata:\n  name: \"{host}\"\nspec:\n  server: {server}\n"
    );
    if !mirrors.is_empty() {
        yaml.push_str("  hosts:\n");
        for mirror in mirrors {
            yaml.push_str(&format!("    - url: {mirror}\n"));
        }
    }
    yaml
}

/// An agent config file under the test's temp dir.
fn agent_config(dirs: &TestDirs, toml: &str) -> PathBuf {
    let path = dirs.temp.path().join("agent.toml");
    fs::write(&path, toml).expect("agent config");
    path
}

fn start_agent(dirs: &TestDirs, config: &Path) -> AgentProcess {
    AgentProcess::start(dirs, &["--config", config.to_str().expect("utf-8 path")])
}

/// Waits for the Image `name` to be Ready with `digest` in its message.
fn wait_ready(agent: &AgentProcess, dirs: &TestDirs, name: &str, digest: &str) -> Value {
    let status = agent.wait_for_status(dirs, &format!("Image/{name} Ready with {digest}"), |s| {
        object(s, "Image", "", name).is_some_and(|o| {
            o["phase"] == "Ready"
                && o["lastError"].is_null()
                && o["message"].as_str().is_some_and(|m| m.contains(digest))
        })
    });
    object(&status, "Image", "", name)
        .expect("the object")
        .clone()
}

fn images_json(dirs: &TestDirs) -> Vec<Value> {
    dirs.berth_json(&["images"])
        .as_array()
        .expect("a list")
        .clone()
}

fn listed<'a>(images: &'a [Value], name: &str) -> Option<&'a Value> {
    images.iter().find(|image| image["name"] == name)
}

fn prune(dirs: &TestDirs) -> Value {
    dirs.berth_json(&["prune"])
}

/// Every blob of the pushed image's (single) manifest.
fn blobs_of(image: &PushedImage) -> Vec<String> {
    let built = &image.manifests[0];
    let mut blobs = vec![built.manifest.digest.clone(), built.config.digest.clone()];
    blobs.extend(built.layers.iter().map(|l| l.digest.clone()));
    blobs
}

/// A one-layer busybox image whose marker file makes it distinct.
fn marked_image(registry: &Registry, name: &str, marker: &str) -> PushedImage {
    let mut entries = busybox_entries();
    entries.push(Entry::file("etc/berth-marker", marker));
    push_image(
        registry,
        name,
        &[ImageSpec::new(vec![entries])],
        PushFormat::Oci,
    )
}

/// `server: http://REGISTRY` for the registry's own host, as a hosts.toml in
/// the manifest directory (the test registries speak plain HTTP).
fn plain_http(dirs: &TestDirs, registry: &Registry) {
    dirs.write_manifest(
        &format!("certs.d/{}/hosts.toml", registry.host()),
        &format!("server = \"{}\"\n", registry.url()),
    );
}

/// The first error the agent reports for Image `name`.
fn last_error(agent: &AgentProcess, dirs: &TestDirs, name: &str) -> String {
    let status = agent.wait_for_status(dirs, "the error", |s| {
        object(s, "Image", "", name).is_some_and(|o| o["lastError"].is_string())
    });
    object(&status, "Image", "", name).expect("image")["lastError"]
        .as_str()
        .expect("error")
        .to_owned()
}

fn count(haystack: &str, needle: &str) -> usize {
    haystack.matches(needle).count()
}

#[test]
fn an_image_object_pre_pulls_pins_and_follows_a_changed_reference() {
    require_root();
    let registry = Registry::start(RegistryOptions::default());
    let first = busybox_image(&registry, "berth/agent-first");
    let second = marked_image(&registry, "berth/agent-second", "second");
    let dirs = TestDirs::new();
    plain_http(&dirs, &registry);
    dirs.write_manifest("images.yaml", &image_yaml("app", &first.reference, ""));
    let agent = start_agent(&dirs, &agent_config(&dirs, ""));

    let status = wait_ready(&agent, &dirs, "app", &first.digest);
    assert!(
        status["message"]
            .as_str()
            .is_some_and(|m| m.contains("linux/") && m.contains("MB compressed")),
        "{status}"
    );
    let images = images_json(&dirs);
    let listed_first = listed(&images, &first.reference).expect("berth images lists it");
    assert_eq!(listed_first["pinnedBy"], serde_json::json!(["Image/app"]));
    assert!(listed_first["unpackedSize"].as_u64().is_some_and(|s| s > 0));

    // A new reference is pulled and pinned; the old one is unpinned but kept.
    dirs.write_manifest("images.yaml", &image_yaml("app", &second.reference, ""));
    wait_ready(&agent, &dirs, "app", &second.digest);
    let images = images_json(&dirs);
    assert_eq!(
        listed(&images, &second.reference).expect("the new image")["pinnedBy"],
        serde_json::json!(["Image/app"])
    );
    assert_eq!(
        listed(&images, &first.reference).expect("the old image stays")["pinnedBy"],
        serde_json::json!([])
    );
    let pruned = prune(&dirs);
    assert_eq!(pruned["images"], serde_json::json!([first.reference]));
}

#[test]
fn a_pinned_image_survives_prune_and_gc_and_is_collectable_once_the_image_is_deleted() {
    require_root();
    let registry = Registry::start(RegistryOptions::default());
    let image = busybox_image(&registry, "berth/agent-pinned");
    let dirs = TestDirs::new();
    plain_http(&dirs, &registry);
    dirs.write_manifest("pinned.yaml", &image_yaml("pinned", &image.reference, ""));
    let config = agent_config(&dirs, "[store]\ngc-interval = \"1s\"\n");
    let agent = start_agent(&dirs, &config);
    wait_ready(&agent, &dirs, "pinned", &image.digest);

    let pruned = prune(&dirs);
    assert_eq!(pruned["images"], serde_json::json!([]), "{pruned}");
    // Two more of the agent's own GC runs after the prune.
    let runs = count(&agent.log(), "garbage collection finished");
    wait_until(REACT, "two more GC runs in the agent", || {
        (count(&agent.log(), "garbage collection finished") >= runs + 2).then_some(())
    });
    assert!(listed(&images_json(&dirs), &image.reference).is_some());
    for blob in blobs_of(&image) {
        assert!(stored_blob(&dirs, &blob).is_some(), "{blob} was collected");
    }

    fs::remove_file(dirs.manifests.join("pinned.yaml")).expect("deleting the Image");
    agent.wait_for_status(&dirs, "Image/pinned to be gone", |s| {
        object(s, "Image", "", "pinned").is_none()
    });
    let images = images_json(&dirs);
    assert_eq!(
        listed(&images, &image.reference).expect("unpinned, still stored")["pinnedBy"],
        serde_json::json!([])
    );
    let pruned = prune(&dirs);
    assert_eq!(pruned["images"], serde_json::json!([image.reference]));
    for blob in blobs_of(&image) {
        assert!(
            stored_blob(&dirs, &blob).is_none(),
            "{blob} outlived its image"
        );
    }
}

#[test]
fn an_air_gapped_image_imports_its_source_archive_once_per_change() {
    require_root();
    let dirs = TestDirs::new();
    let archive = dirs.manifests.join("archives/app.tar");
    fs::create_dir_all(archive.parent().expect("parent")).expect("archive dir");
    let write_archive = |marker: &str| -> String {
        let layout_dir = dirs.temp.path().join(format!("layout-{marker}"));
        let mut layout = OciLayout::create(&layout_dir);
        let mut entries = busybox_entries();
        entries.push(Entry::file("etc/berth-marker", marker));
        let built = layout.add_image(&ImageSpec::new(vec![entries]));
        layout.tag("latest", &built.manifest);
        let temp = archive.with_extension("partial");
        layout.write_archive(&temp);
        fs::rename(&temp, &archive).expect("replacing the archive");
        built.manifest.digest
    };
    let first = write_archive("one");
    // No registry exists: the reference's host does not even resolve.
    let reference = "registry.invalid/berth/airgap:1";
    let airgap = image_yaml(
        "airgap",
        reference,
        "  source: archives/app.tar\n  pullPolicy: Never\n",
    );
    dirs.write_manifest("airgap.yaml", &airgap);
    // Archives are not manifests: a changed one is noticed at the next
    // reconcile, which the relist brings.
    let config = agent_config(&dirs, "[controller]\nrelist-interval = \"1s\"\n");
    let agent = start_agent(&dirs, &config);
    let status = wait_ready(&agent, &dirs, "airgap", &first);
    assert!(
        status["message"]
            .as_str()
            .is_some_and(|m| m.contains("(imported)")),
        "{status}"
    );
    assert_eq!(count(&agent.log(), IMPORTED), 1);

    // Re-applying the object (a label changed) does not import again.
    dirs.write_manifest(
        "airgap.yaml",
        &airgap.replace(
            "  name: airgap\n",
            "  name: airgap\n  labels:\n    touched: \"yes\"\n",
        ),
    );
    agent.wait_for_status(&dirs, "the edited Image applied", |s| {
        object(s, "Image", "", "airgap")
            .is_some_and(|o| o["observedGeneration"] == 2 && o["phase"] == "Ready")
    });
    assert_eq!(
        count(&agent.log(), IMPORTED),
        1,
        "unchanged archive re-imported"
    );

    // Relists reconcile it every second; the unchanged archive stays as is.
    let relists = count(&agent.log(), "periodic relist");
    wait_until(REACT, "a few relists", || {
        (count(&agent.log(), "periodic relist") >= relists + 3).then_some(())
    });
    assert_eq!(
        count(&agent.log(), IMPORTED),
        1,
        "unchanged archive re-imported"
    );

    // A new archive is imported at the next reconcile.
    let second = write_archive("two");
    wait_ready(&agent, &dirs, "airgap", &second);
    assert_eq!(count(&agent.log(), IMPORTED), 2);
    assert_eq!(
        listed(&images_json(&dirs), reference).expect("listed")["manifestDigest"],
        second
    );
}

/// An import that fails shows its cause in the object's status once: the
/// archive's error leaves it to its source, the status prints the chain.
#[test]
fn a_source_archive_that_cannot_be_read_says_why_once_in_the_status() {
    require_root();
    let dirs = TestDirs::new();
    fs::create_dir_all(dirs.manifests.join("archives/app.tar")).expect("a directory");
    dirs.write_manifest(
        "airgap.yaml",
        &image_yaml(
            "airgap",
            "registry.invalid/berth/airgap:1",
            "  source: archives/app.tar\n  pullPolicy: Never\n",
        ),
    );
    let config = agent_config(&dirs, "");
    let agent = start_agent(&dirs, &config);
    let error = last_error(&agent, &dirs, "airgap");
    assert!(error.contains("reading archive"), "{error}");
    assert_eq!(count(&error, "Is a directory"), 1, "{error}");
}

#[test]
fn a_registry_object_added_or_edited_applies_to_the_next_pull_without_a_restart() {
    require_root();
    let registry = Registry::start(RegistryOptions::default());
    let before = busybox_image(&registry, "berth/agent-before");
    let after = marked_image(&registry, "berth/agent-after", "after");
    let mirror = Proxy::start(&registry.host());
    let dirs = TestDirs::new();
    dirs.write_manifest(
        "registry.yaml",
        &registry_yaml(&registry.host(), &[], &registry.url()),
    );
    dirs.write_manifest("before.yaml", &image_yaml("before", &before.reference, ""));
    let agent = start_agent(&dirs, &agent_config(&dirs, ""));
    wait_ready(&agent, &dirs, "before", &before.digest);
    let key_status = agent.wait_for_status(&dirs, "the Registry Ready", |s| {
        object(s, "Registry", "", &registry.host()).is_some_and(|o| o["phase"] == "Ready")
    });
    let message =
        object(&key_status, "Registry", "", &registry.host()).expect("registry")["message"]
            .as_str()
            .expect("message")
            .to_owned();
    assert_eq!(message, format!("only {}/v2 (server)", registry.url()));
    assert!(mirror.requests().is_empty(), "no mirror configured yet");

    // Edit: a pull-only mirror first. The next pull goes through it.
    dirs.write_manifest(
        "registry.yaml",
        &registry_yaml(&registry.host(), &[mirror.url()], &registry.url()).replace(
            &format!("    - url: {}\n", mirror.url()),
            &format!(
                "    - url: {}\n      capabilities: [pull, resolve]\n",
                mirror.url()
            ),
        ),
    );
    agent.wait_for_status(&dirs, "the Registry lists the mirror", |s| {
        object(s, "Registry", "", &registry.host()).is_some_and(|o| {
            o["message"]
                == format!(
                    "{}/v2 [pull, resolve], then {}/v2 (server)",
                    mirror.url(),
                    registry.url()
                )
        })
    });
    dirs.write_manifest("after.yaml", &image_yaml("after", &after.reference, ""));
    wait_ready(&agent, &dirs, "after", &after.digest);
    let through_mirror = mirror.requests_for("/v2/berth/agent-after/");
    assert!(
        through_mirror
            .iter()
            .any(|r| r.target.contains(&format!("ns={}", registry.host())) && r.status == 200),
        "the pull went through the mirror with ns=: {through_mirror:?}"
    );
    let layer = &after.manifests[0].layers[0].digest;
    assert_eq!(mirror.requests_for(&format!("/blobs/{layer}")).len(), 1);
}

#[test]
fn a_broken_registry_config_is_loud_and_pulls_keep_the_last_valid_one() {
    require_root();
    let registry = Registry::start(RegistryOptions::default());
    let images: Vec<PushedImage> = ["one", "two", "three"]
        .iter()
        .map(|m| marked_image(&registry, &format!("berth/agent-broken-{m}"), m))
        .collect();
    let mirror = Proxy::start(&registry.host());
    let dirs = TestDirs::new();
    let hosts_toml = format!("certs.d/{}/hosts.toml", registry.host());
    let good = format!(
        "server = \"{}\"\n[host.\"{}\"]\n  capabilities = [\"pull\", \"resolve\"]\n",
        registry.url(),
        mirror.url()
    );
    dirs.write_manifest(&hosts_toml, &good);
    dirs.write_manifest("one.yaml", &image_yaml("one", &images[0].reference, ""));
    let agent = start_agent(&dirs, &agent_config(&dirs, ""));
    wait_ready(&agent, &dirs, "one", &images[0].digest);
    let pulled_via_mirror = |image: &PushedImage| {
        let layer = &image.manifests[0].layers[0].digest;
        mirror
            .requests_for(&format!("/blobs/{layer}"))
            .iter()
            .any(|r| r.status == 200)
    };
    assert!(pulled_via_mirror(&images[0]));
    // A new Image object for the next image: whether it came via the mirror.
    let pull_next = |n: usize| {
        let name = ["one", "two", "three"][n];
        dirs.write_manifest(
            &format!("{name}.yaml"),
            &image_yaml(name, &images[n].reference, ""),
        );
        wait_ready(&agent, &dirs, name, &images[n].digest);
        pulled_via_mirror(&images[n])
    };

    // 1. The hosts.toml stops parsing: the file's status says so, and the
    //    last valid version (with the mirror) stays in effect.
    dirs.write_manifest(&hosts_toml, &good.replace("[host.", "[host"));
    let status = agent.wait_for_status(&dirs, "the hosts.toml error in status", |s| {
        file(s, &dirs, &hosts_toml).is_some_and(|f| {
            f["lastKnownGood"] == true
                && f["diagnostics"]
                    .as_array()
                    .is_some_and(|d| d.iter().any(|d| d["severity"] == "error"))
        })
    });
    let file_status = file(&status, &dirs, &hosts_toml).expect("file status");
    assert!(
        pull_next(1),
        "the last valid config (the mirror) was used; file status: {file_status}"
    );

    // 2. It parses, but names a CA that does not exist: the Registry's own
    //    status fails loudly, naming the file and host; pulls keep the
    //    previous configuration.
    let missing_ca = dirs.temp.path().join("no-such-ca.pem");
    dirs.write_manifest(
        &hosts_toml,
        &format!(
            "server = \"{}\"\n[host.\"http://127.0.0.1:{}\"]\n  ca = \"{}\"\n",
            registry.url(),
            free_port(),
            missing_ca.display()
        ),
    );
    let status = agent.wait_for_status(&dirs, "the Registry error", |s| {
        object(s, "Registry", "", &registry.host()).is_some_and(|o| o["lastError"].is_string())
    });
    let error = object(&status, "Registry", "", &registry.host()).expect("registry")["lastError"]
        .as_str()
        .expect("error")
        .to_owned();
    for part in [
        hosts_toml.as_str(),
        registry.host().as_str(),
        missing_ca.to_str().expect("utf-8"),
        "the previous configuration stays in effect",
    ] {
        assert!(error.contains(part), "{part:?} missing from: {error}");
    }
    assert!(pull_next(2), "the previous config stays in effect");
}

#[test]
fn two_image_objects_naming_the_same_reference_download_it_once() {
    require_root();
    let registry = Registry::start(RegistryOptions::default());
    let image = busybox_image(&registry, "berth/agent-shared");
    let proxy = Proxy::start(&registry.host());
    let dirs = TestDirs::new();
    dirs.write_manifest(
        &format!("certs.d/{}/hosts.toml", registry.host()),
        &format!("server = \"{}\"\n", proxy.url()),
    );
    dirs.write_manifest(
        "both.yaml",
        &format!(
            "{}---\n{}",
            image_yaml("first", &image.reference, ""),
            image_yaml("second", &image.reference, "")
        ),
    );
    let agent = start_agent(&dirs, &agent_config(&dirs, ""));
    wait_ready(&agent, &dirs, "first", &image.digest);
    wait_ready(&agent, &dirs, "second", &image.digest);
    for blob in blobs_of(&image).iter().skip(1) {
        let gets: Vec<_> = proxy
            .requests_for(&format!("/blobs/{blob}"))
            .into_iter()
            .filter(|r| r.method == "GET")
            .collect();
        assert_eq!(gets.len(), 1, "blob {blob} downloaded once: {gets:?}");
    }
    let images = images_json(&dirs);
    let mut pinned_by: Vec<String> = listed(&images, &image.reference).expect("listed")["pinnedBy"]
        .as_array()
        .expect("pins")
        .iter()
        .map(|p| p.as_str().expect("owner").to_owned())
        .collect();
    pinned_by.sort();
    assert_eq!(pinned_by, ["Image/first", "Image/second"]);
}

#[test]
fn a_failed_pull_names_every_host_and_is_retried_until_it_succeeds() {
    require_root();
    let registry = Registry::start(RegistryOptions::default());
    let dirs = TestDirs::new();
    let down = format!("http://127.0.0.1:{}", free_port());
    dirs.write_manifest(
        "registry.yaml",
        &registry_yaml(
            &registry.host(),
            std::slice::from_ref(&down),
            &registry.url(),
        ),
    );
    let reference = format!("{}/berth/agent-later:latest", registry.host());
    dirs.write_manifest("later.yaml", &image_yaml("later", &reference, ""));
    let config = agent_config(
        &dirs,
        "[controller.backoff]\ninitial = \"200ms\"\nmax = \"1s\"\n",
    );
    let agent = start_agent(&dirs, &config);
    let error = last_error(&agent, &dirs, "later");
    for host in [down.as_str(), registry.url().as_str()] {
        assert!(error.contains(host), "{host} missing from: {error}");
    }
    // The image appears in the registry; the retries pick it up.
    let image = busybox_image(&registry, "berth/agent-later");
    wait_ready(&agent, &dirs, "later", &image.digest);
}
