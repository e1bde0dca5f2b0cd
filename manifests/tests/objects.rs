//! Objects as the agent uses them: keys, canonical JSON, hashing, redaction,
//! conflicts between files, relative paths, and the Registry forms.

use std::path::Path;

use manifests::types::{Capability, RegistryHost};
use manifests::{Kind, Object, ParsedFile, find_conflicts, parse_file};

fn parse(path: &str, text: &str) -> ParsedFile {
    let parsed = parse_file(Path::new(path), text.as_bytes());
    assert!(
        !parsed.has_errors(),
        "{path}: {:?}",
        parsed
            .all_diagnostics()
            .map(ToString::to_string)
            .collect::<Vec<_>>()
    );
    parsed
}

fn only_object(parsed: &ParsedFile) -> &Object {
    let objects: Vec<&Object> = parsed.objects().collect();
    assert_eq!(objects.len(), 1, "{parsed:#?}");
    objects[0]
}

const SECRET: &str = "\
apiVersion: v1
kind: Secret
metadata:
  name: creds
  namespace: prod
data:
  password: c2VjcmV0LXZhbHVl
stringData:
  token: plain-token
";

#[test]
fn keys_name_kind_namespace_and_name() {
    let secret = parse("s.yaml", SECRET);
    assert_eq!(only_object(&secret).key().to_string(), "Secret/prod/creds");
    let image = parse(
        "i.yaml",
        "apiVersion: berth/v1\nkind: Image\nmetadata: {name: busybox}\nspec: {image: busybox}\n",
    );
    let key = only_object(&image).key();
    assert_eq!((key.kind, key.namespace.as_str()), (Kind::Image, ""));
    assert_eq!(key.to_string(), "Image/busybox");
}

#[test]
fn canonical_json_ignores_formatting_and_round_trips() {
    let a = parse(
        "a.yaml",
        "apiVersion: v1\nkind: Pod\nmetadata: {name: web, labels: {b: '2', a: '1'}}\nspec:\n  containers: [{name: web, image: nginx, args: []}]\n",
    );
    let b = parse(
        "b.json",
        r#"{"kind": "Pod", "apiVersion": "v1", "spec": {"containers": [{"image": "nginx", "name": "web"}]},
            "metadata": {"labels": {"a": "1", "b": "2"}, "name": "web"}}"#,
    );
    let (a, b) = (only_object(&a), only_object(&b));
    assert_eq!(a.canonical_json(), b.canonical_json());
    assert_eq!(a.content_hash(), b.content_hash());
    let back: Object = serde_json::from_slice(&a.canonical_json()).expect("reads back");
    assert_eq!(&back, a);

    let changed = parse(
        "c.yaml",
        "apiVersion: v1\nkind: Pod\nmetadata: {name: web, labels: {b: '2', a: '1'}}\nspec:\n  containers: [{name: web, image: 'nginx:1.27'}]\n",
    );
    assert_ne!(only_object(&changed).content_hash(), a.content_hash());
}

#[test]
fn secret_values_never_print() {
    let parsed = parse("s.yaml", SECRET);
    let secret = only_object(&parsed);
    let debug = format!("{secret:?}");
    assert!(
        !debug.contains("c2VjcmV0") && !debug.contains("plain-token"),
        "{debug}"
    );
    assert!(
        debug.contains("password") && debug.contains("token"),
        "keys are shown: {debug}"
    );
    let shown = String::from_utf8(secret.redacted().canonical_json()).expect("UTF-8");
    assert!(
        !shown.contains("c2VjcmV0") && !shown.contains("plain-token"),
        "{shown}"
    );
    let Object::Secret(secret) = secret else {
        panic!("a Secret")
    };
    let contents = secret.contents();
    assert_eq!(contents["password"], b"secret-value");
    assert_eq!(contents["token"], b"plain-token");
}

#[test]
fn the_same_object_in_two_files_conflicts_on_both() {
    let pod = "apiVersion: v1\nkind: Pod\nmetadata: {name: web}\nspec: {containers: [{name: a, image: nginx}]}\n";
    let first = parse("a.yaml", pod);
    let second = parse(
        "b.yaml",
        &format!("apiVersion: v1\nkind: ConfigMap\nmetadata: {{name: other}}\n---\n{pod}"),
    );
    let third = parse(
        "c.yaml",
        "apiVersion: v1\nkind: Pod\nmetadata: {name: web, namespace: other}\nspec: {containers: [{name: a, image: nginx}]}\n",
    );
    let conflicts: Vec<String> = find_conflicts([&first, &second, &third])
        .iter()
        .map(ToString::to_string)
        .collect();
    assert_eq!(
        conflicts,
        [
            "b.yaml:5:1: error: Pod/default/web is already defined at a.yaml:1; this definition is ignored until one of them is removed",
            "a.yaml:1:1: error: Pod/default/web is defined again at b.yaml:5; this definition (the first) is used",
        ]
    );
}

#[test]
fn relative_host_paths_resolve_against_the_manifest_directory() {
    let image = parse(
        "/etc/agent.d/images/offline.yaml",
        "apiVersion: berth/v1\nkind: Image\nmetadata: {name: x}\nspec: {image: busybox, source: busybox.tar}\n",
    );
    let Object::Image(image) = only_object(&image) else {
        panic!("an Image")
    };
    assert_eq!(
        image.spec.source.as_deref(),
        Some("/etc/agent.d/images/busybox.tar")
    );
}

#[test]
fn registry_server_is_a_url_or_a_host_mapping() {
    let short = parse(
        "r.yaml",
        "apiVersion: berth/v1\nkind: Registry\nmetadata: {name: docker.io}\nspec:\n  server: https://registry-1.docker.io\n  hosts:\n    - url: https://mirror.local\n      capabilities: [pull]\n",
    );
    let Object::Registry(registry) = only_object(&short) else {
        panic!("a Registry")
    };
    assert_eq!(
        registry.spec.server,
        Some(RegistryHost::url("https://registry-1.docker.io"))
    );
    assert!(registry.spec.hosts[0].can(Capability::Pull));
    assert!(!registry.spec.hosts[0].can(Capability::Resolve));
    assert_eq!(only_object(&short).key().to_string(), "Registry/docker.io");

    let long = parse_file(
        Path::new("r.yaml"),
        b"apiVersion: berth/v1\nkind: Registry\nmetadata: {name: docker.io}\nspec:\n  server:\n    url: https://r.example\n    skipVerfy: true\n",
    );
    let messages: Vec<String> = long.all_diagnostics().map(ToString::to_string).collect();
    assert_eq!(
        messages,
        [
            "r.yaml:7:5: error: unknown field `skipVerfy` in `spec.server`; did you mean `skipVerify`?"
        ]
    );
}

#[test]
fn oversized_and_flat_but_huge_documents_are_refused() {
    let big = vec![b'#'; usize::try_from(manifests::MAX_FILE_BYTES).expect("fits") + 1];
    let parsed = parse_file(Path::new("big.yaml"), &big);
    let d: Vec<String> = parsed.all_diagnostics().map(ToString::to_string).collect();
    assert_eq!(d.len(), 1);
    assert!(
        d[0].starts_with("big.yaml:1:1: error: file is 4194305 bytes, over the 4 MiB limit"),
        "{d:?}"
    );

    // Small text, many values: the node budget stops it.
    let many = format!(
        "apiVersion: v1\nkind: ConfigMap\nmetadata: {{name: x}}\ndata: {{a: \"1\"}}\nextra: [{}]\n",
        "0,".repeat(300_000)
    );
    let parsed = parse_file(Path::new("many.yaml"), many.as_bytes());
    let d: Vec<String> = parsed.all_diagnostics().map(ToString::to_string).collect();
    assert!(
        d.len() == 1 && d[0].contains("document refused: it has more than 200000 values"),
        "{d:?}"
    );
}

#[test]
fn defaults_follow_kubernetes() {
    let parsed = parse(
        "p.yaml",
        "apiVersion: v1\nkind: Pod\nmetadata: {name: p}\nspec:\n  containers:\n    - {name: a, image: nginx}\n    - {name: b, image: 'nginx:1.27'}\n    - {name: c, image: nginx, imagePullPolicy: Never}\n",
    );
    let Object::Pod(pod) = only_object(&parsed) else {
        panic!("a Pod")
    };
    use manifests::types::{ImagePullPolicy, RestartPolicy};
    let policies: Vec<ImagePullPolicy> = pod
        .spec
        .containers
        .iter()
        .map(|c| c.image_pull_policy_or_default())
        .collect();
    assert_eq!(
        policies,
        [
            ImagePullPolicy::Always,
            ImagePullPolicy::IfNotPresent,
            ImagePullPolicy::Never
        ]
    );
    assert_eq!(pod.spec.restart_policy_or_default(), RestartPolicy::Always);
    assert_eq!(pod.spec.termination_grace_period_seconds_or_default(), 30);
}

#[test]
fn docker_config_secrets_are_checked_without_quoting_them() {
    let bad = parse_file(
        Path::new("s.yaml"),
        b"apiVersion: v1\nkind: Secret\nmetadata: {name: pull}\ntype: kubernetes.io/dockerconfigjson\nstringData:\n  .dockerconfigjson: '{\"not-auths\": 1}'\n",
    );
    let messages: Vec<String> = bad.all_diagnostics().map(ToString::to_string).collect();
    assert_eq!(messages.len(), 1, "{messages:?}");
    assert!(
        messages[0]
            .starts_with("s.yaml:6:22: error: `.dockerconfigjson` must be a JSON docker config"),
        "{messages:?}"
    );
    assert!(!messages[0].contains("not-auths"));
    parse(
        "ok.yaml",
        "apiVersion: v1\nkind: Secret\nmetadata: {name: pull}\ntype: kubernetes.io/dockerconfigjson\nstringData:\n  .dockerconfigjson: '{\"auths\": {\"r.local\": {\"auth\": \"dTpw\"}}}'\n",
    );
}
