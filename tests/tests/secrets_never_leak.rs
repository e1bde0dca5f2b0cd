//! No credential or Secret value ever reaches what berth writes or prints:
//! one unique value is planted as a Secret value (env, envFrom, volume), a
//! registry password (htpasswd registry, node config.json and an image pull
//! secret), a bearer token, inside malformed `.dockerconfigjson` Secrets and
//! a malformed config.json, and echoed back by a registry's error body.
//! Then everything berth wrote — the agent's debug log, `--root` and
//! `--run-root` recursively, `status`, `events`, `inspect`, `ps` — is
//! searched for the value and its base64 forms.
//!
//! Excluded from the search, because they hold the value by design and the
//! test checks that they do: the running pod's secret volume (its files are
//! the Secret's keys) and the OCI bundle `config.json` of its container
//! (`process.env` carries the variables resolved from the Secret).

use std::path::{Path, PathBuf};

use base64::Engine as _;
use berth_e2e::images::busybox_image;
use berth_e2e::pods::PodWorld;
use berth_e2e::proxy::{Fault, Proxy};
use berth_e2e::pull::write_hosts_toml;
use berth_e2e::registry::{Registry, RegistryOptions, docker_config};
use berth_e2e::{TestDirs, agent::AgentProcess};

fn b64(text: &str) -> String {
    base64::engine::general_purpose::STANDARD.encode(text)
}

/// A value no test fixture or image contains by chance.
fn planted() -> String {
    let nanos = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .expect("clock after 1970")
        .as_nanos();
    format!("PLANTED-{:x}{nanos:x}", std::process::id())
}

/// The byte strings that must never appear: the value, and the base64 of
/// it and of the `user:value` pair (Basic auth), without padding so a
/// padded or unpadded copy matches.
fn needles(value: &str, user: &str) -> Vec<String> {
    [b64(value), b64(&format!("{user}:{value}"))]
        .into_iter()
        .map(|encoded| encoded.trim_end_matches('=').to_owned())
        // The last character of unpadded base64 depends on what follows.
        .map(|encoded| encoded[..encoded.len() - 1].to_owned())
        .chain([value.to_owned()])
        .collect()
}

fn found_in(haystack: &[u8], needles: &[String]) -> Option<String> {
    needles
        .iter()
        .find(|needle| {
            haystack
                .windows(needle.len())
                .any(|window| window == needle.as_bytes())
        })
        .cloned()
}

/// Every regular file below `dir`, not following symlinks.
fn files_below(dir: &Path) -> Vec<PathBuf> {
    let mut files = Vec::new();
    let mut pending = vec![dir.to_path_buf()];
    while let Some(current) = pending.pop() {
        let Ok(entries) = std::fs::read_dir(&current) else {
            continue;
        };
        for entry in entries.flatten() {
            let path = entry.path();
            match std::fs::symlink_metadata(&path) {
                Ok(meta) if meta.is_dir() => pending.push(path),
                Ok(meta) if meta.is_file() => files.push(path),
                _ => {}
            }
        }
    }
    files
}

#[test]
fn planted_secret_never_appears_in_anything_berth_writes_or_prints() {
    let secret = planted();
    let user = "berth";
    let needles = needles(&secret, user);
    let mut world = PodWorld::new("runc");

    // A private registry whose password is the planted value.
    let private = Registry::start(RegistryOptions::basic_auth(user, &secret));
    let image = busybox_image(&private, "berth/private");
    // Mirrors tried first: one echoes the request's Authorization in a
    // 500; one names a token realm that answers with the value in a
    // field of the wrong type (serde would quote it).
    let echo = Proxy::start(&private.host());
    echo.require_basic_auth();
    echo.add_fault("/manifests/", Fault::EchoAuthorization(500), usize::MAX);
    let bad_realm = Proxy::start(&private.host());
    bad_realm.add_fault(
        "/token",
        Fault::Answer {
            status: 200,
            body: format!(r#"{{"expires_in": "{secret}"}}"#),
        },
        usize::MAX,
    );
    let wants_token = Proxy::start(&private.host());
    wants_token.require_bearer_token_from(&bad_realm.url());
    let certs_d = world.dirs.temp.path().join("certs.d");
    write_hosts_toml(
        &certs_d,
        &private.host(),
        &format!(
            "server = \"{}\"\n[host.\"{}\"]\n[host.\"{}\"]\n",
            private.url(),
            echo.url(),
            wants_token.url()
        ),
    );
    // The world's own image comes through a proxy whose bearer token holds
    // the value.
    let tokens = Proxy::start(&world.registry.host());
    tokens.use_token(&format!("{secret}-token"));
    tokens.require_bearer_token();
    write_hosts_toml(
        &certs_d,
        &world.registry.host(),
        &format!("server = \"{}\"\n", tokens.url()),
    );
    // The node's config.json has the value for the registry and its mirrors.
    let auth_file = world.dirs.temp.path().join("config.json");
    std::fs::write(
        &auth_file,
        docker_config(&[
            (&private.host(), user, &secret),
            (&echo.host(), user, &secret),
            (&wants_token.host(), user, &secret),
        ]),
    )
    .expect("writing config.json");
    let config = std::fs::read_to_string(&world.config).expect("agent config");
    std::fs::write(
        &world.config,
        config.replacen(
            "[images]\n",
            &format!("[images]\nauth-file = {auth_file:?}\n"),
            1,
        ),
    )
    .expect("agent config with auth-file");

    world.write_manifest(
        "secrets.yaml",
        &format!(
            "apiVersion: v1\nkind: Secret\nmetadata:\n  name: app-secret\nstringData:\n  password: \"{secret}\"\n---\n\
             apiVersion: v1\nkind: Secret\nmetadata:\n  name: regcred\ntype: kubernetes.io/dockerconfigjson\n\
             stringData:\n  .dockerconfigjson: '{}'\n---\n\
             apiVersion: v1\nkind: Secret\nmetadata:\n  name: wrong-shape\ntype: kubernetes.io/dockerconfigjson\n\
             stringData:\n  .dockerconfigjson: '{{\"auths\": {{\"{}\": \"{secret}\"}}}}'\n---\n\
             apiVersion: v1\nkind: Secret\nmetadata:\n  name: bad-base64\ntype: kubernetes.io/dockerconfigjson\n\
             stringData:\n  .dockerconfigjson: '{{\"auths\": {{\"{}\": {{\"auth\": \"{secret}!\"}}}}}}'\n",
            docker_config(&[(&private.host(), user, &secret)]),
            private.host(),
            private.host(),
        ),
    );
    // Not even valid base64: a file error, never quoting the value.
    world.write_manifest(
        "broken-secret.yaml",
        &format!(
            "apiVersion: v1\nkind: Secret\nmetadata:\n  name: broken\ndata:\n  password: \"{secret}\"\n"
        ),
    );
    // Type errors: serde quotes what it found.
    world.write_manifest(
        "mistyped-secret.yaml",
        &format!(
            "apiVersion: v1\nkind: Secret\nmetadata:\n  name: mistyped\nstringData: {secret}\n---\n\
             apiVersion: v1\nkind: Secret\nmetadata:\n  name: listed\nstringData:\n  password: [{secret}]\n"
        ),
    );
    let missing = image.reference.replace(":latest", ":missing");
    let uses_secret = "  imagePullSecrets: [{name: regcred}]\n  volumes:\n  - name: creds\n    secret: {secretName: app-secret}\n";
    let app_container = format!(
        "{}    env:\n    - name: PASSWORD\n      valueFrom: {{secretKeyRef: {{name: app-secret, key: password}}}}\n    envFrom:\n    - secretRef: {{name: app-secret}}\n    volumeMounts:\n    - {{name: creds, mountPath: /creds}}\n",
        world
            .shell_container("app", "sleep 3600")
            .replace(&world.image.reference, &image.reference)
    );
    world.write_manifest(
        "app.yaml",
        &world.pod_yaml("app", uses_secret, &app_container),
    );
    world.write_manifest(
        "token-pod.yaml",
        &world.pod_yaml(
            "token-pod",
            "",
            &world.shell_container("main", "sleep 3600"),
        ),
    );
    world.write_manifest(
        "missing.yaml",
        &world.pod_yaml(
            "missing",
            "  imagePullSecrets: [{name: regcred}]\n",
            &world
                .shell_container("main", "true")
                .replace(&world.image.reference, &missing),
        ),
    );
    for (pod, pull_secret) in [("wrong-shape", "wrong-shape"), ("bad-base64", "bad-base64")] {
        world.write_manifest(
            &format!("{pod}.yaml"),
            &world.pod_yaml(
                pod,
                &format!("  imagePullSecrets: [{{name: {pull_secret}}}]\n"),
                &world
                    .shell_container("main", "true")
                    .replace(&world.image.reference, &image.reference),
            ),
        );
    }

    // The same failing pull as an Image object, whose status carries the
    // whole per-host report.
    world.write_manifest(
        "image.yaml",
        &format!("apiVersion: berth/v1\nkind: Image\nmetadata:\n  name: missing\nspec:\n  image: {missing}\n"),
    );

    world.start_agent();
    world.wait_pod("app", "running", |p| p["phase"] == "Running");
    world.wait_pod("token-pod", "running", |p| p["phase"] == "Running");
    world.wait_pod("missing", "a failed pull", |p| {
        p["message"]
            .as_str()
            .is_some_and(|m| m.contains("ImagePullBackOff"))
    });
    let failed_image = world
        .agent()
        .wait_for_status(&world.dirs, "the Image's failed pull", |s| {
            berth_e2e::agent::object(s, "Image", "", "missing")
                .and_then(|o| o["lastError"].as_str())
                .is_some_and(|m| m.contains("every host failed"))
        });
    let message = berth_e2e::agent::object(&failed_image, "Image", "", "missing")
        .and_then(|o| o["lastError"].as_str())
        .unwrap_or_default()
        .to_owned();
    assert!(
        message.contains(&echo.url())
            && message.contains("status 500")
            && message.contains("Authorization: Basic <redacted>"),
        "the echoing mirror's error is in the status, scrubbed: {message}"
    );
    for pod in ["wrong-shape", "bad-base64"] {
        world.wait_pod(pod, "its pull secret refused", |p| {
            p["message"].as_str().is_some_and(|m| m.contains("Secret"))
        });
    }
    assert!(
        echo.requests_for("/manifests/")
            .iter()
            .any(|r| r.status == 500 && r.authorization),
        "the echo mirror was sent credentials and echoed them"
    );
    assert!(
        !bad_realm.requests_for("/token").is_empty(),
        "the bad token realm was asked"
    );

    // What berth prints.
    let mut printed = Vec::new();
    for args in [
        vec!["status", "-o", "json"],
        vec!["status"],
        vec!["events", "-o", "json"],
        vec!["events"],
        vec!["ps", "-a", "-o", "json"],
        vec!["inspect", "app"],
        vec!["inspect", "missing"],
        vec!["inspect", "wrong-shape"],
        vec!["inspect", "token-pod"],
    ] {
        let output = world.dirs.berth(&args);
        assert!(
            output.status.success(),
            "berth {args:?}: {}",
            String::from_utf8_lossy(&output.stderr)
        );
        printed.push((format!("berth {}", args.join(" ")), output.stdout));
        printed.push((format!("berth {} (stderr)", args.join(" ")), output.stderr));
    }
    // The files the value may legitimately be in: found, and excluded.
    let status = berth_e2e::agent::status_json(&world.dirs).expect("status");
    let app = berth_e2e::agent::object(&status, "Pod", "default", "app").expect("app status");
    let container_id =
        berth_e2e::pods::container(app, "app").expect("app container")["containerId"]
            .as_str()
            .map(str::to_owned);
    let excluded = legitimate_holders(&world.dirs, container_id.as_deref());
    for path in &excluded {
        let bytes = std::fs::read(path).expect("reading an excluded file");
        assert!(
            found_in(&bytes, &needles).is_some(),
            "{} should hold the value (else the exclusion hides nothing)",
            path.display()
        );
    }

    printed.push(("the agent log".to_owned(), world.agent().log().into_bytes()));
    let mut leaks = Vec::new();
    for (what, bytes) in &printed {
        if let Some(needle) = found_in(bytes, &needles) {
            let text = String::from_utf8_lossy(bytes);
            let line = text.lines().find(|l| l.contains(needle.as_str()));
            leaks.push(format!("{what}: {}", line.unwrap_or_default()));
        }
    }
    for dir in [&world.dirs.root, &world.dirs.run_root] {
        for path in files_below(dir) {
            if excluded.contains(&path) {
                continue;
            }
            let Ok(bytes) = std::fs::read(&path) else {
                continue;
            };
            if let Some(needle) = found_in(&bytes, &needles) {
                leaks.push(format!("{} holds {needle}", path.display()));
            }
        }
    }
    assert!(
        leaks.is_empty(),
        "the planted value leaked:\n{}",
        leaks.join("\n")
    );

    // A malformed config.json, at `berth pull` and at agent start.
    let bad_config = world.dirs.temp.path().join("bad-config.json");
    std::fs::write(
        &bad_config,
        format!(r#"{{"auths": {{"{}": "{secret}"}}}}"#, private.host()),
    )
    .expect("writing a bad config.json");
    let output = world.dirs.berth(&[
        "pull",
        "--auth-file",
        bad_config.to_str().expect("utf-8"),
        &image.reference,
    ]);
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert!(!output.status.success());
    assert!(stderr.contains("bad-config.json"), "{stderr}");
    assert!(found_in(stderr.as_bytes(), &needles).is_none(), "{stderr}");
    assert_agent_refuses_bad_auth_file(&bad_config, &needles);
}

/// The running app's secret volume files and its bundle's config.json.
fn legitimate_holders(dirs: &TestDirs, container_id: Option<&str>) -> Vec<PathBuf> {
    let mut holders: Vec<PathBuf> = files_below(&dirs.run_root.join("pods"))
        .into_iter()
        .filter(|path| {
            path.components()
                .collect::<Vec<_>>()
                .windows(2)
                .any(|pair| pair[0].as_os_str() == "volumes" && pair[1].as_os_str() == "creds")
        })
        .collect();
    let id = container_id.expect("the app container has an id");
    holders.push(dirs.run_root.join("bundles").join(id).join("config.json"));
    assert!(holders.len() >= 2, "secret volume files found: {holders:?}");
    holders
}

fn assert_agent_refuses_bad_auth_file(bad_config: &Path, needles: &[String]) {
    let dirs = TestDirs::new();
    let config = dirs.temp.path().join("agent.toml");
    std::fs::write(&config, format!("[images]\nauth-file = {bad_config:?}\n")).expect("config");
    let mut agent = AgentProcess::start(&dirs, &["--config", config.to_str().expect("utf-8")]);
    let status = agent.wait_exit(berth_e2e::agent::REACT);
    let log = agent.log();
    assert!(
        !status.success(),
        "the agent refuses a malformed auth file:\n{log}"
    );
    assert!(log.contains("bad-config.json"), "{log}");
    assert!(found_in(log.as_bytes(), needles).is_none(), "{log}");
}
