//! What a pod takes from other objects of the desired state: env values
//! from ConfigMaps and Secrets (`env[].valueFrom`, `envFrom`), the pod's own
//! fields (`fieldRef`), the files of configMap/secret volumes, and registry
//! credentials from `imagePullSecrets`. Pure functions of the desired
//! state; errors name the container, variable, object and key.

use std::collections::BTreeMap;

use manifests::types as api;
use manifests::{Kind, Object, ObjectKey};

use crate::desired::DesiredState;
use crate::image::auth::Credentials;
use crate::runtime::spec::EnvVar;
use crate::runtime::volumes::VolumeFile;

#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum InputError {
    #[error("container {container:?}: {what}: {kind} {namespace}/{name} is not in the manifests")]
    MissingObject {
        container: String,
        what: String,
        kind: Kind,
        namespace: String,
        name: String,
    },
    #[error("container {container:?}: {what}: {kind} {namespace}/{name} has no key {key:?}")]
    MissingKey {
        container: String,
        what: String,
        kind: Kind,
        namespace: String,
        name: String,
        key: String,
    },
    #[error(
        "container {container:?}: env {variable}: fieldRef {field:?} is not supported (use metadata.name, metadata.namespace, metadata.uid, metadata.labels['KEY'], metadata.annotations['KEY'], spec.nodeName, spec.serviceAccountName, status.podIP, status.podIPs or status.hostIP)"
    )]
    UnsupportedField {
        container: String,
        variable: String,
        field: String,
    },
    #[error(
        "container {container:?}: env {variable}: the value of {kind} {namespace}/{name} key {key:?} is not UTF-8"
    )]
    NotText {
        container: String,
        variable: String,
        kind: Kind,
        namespace: String,
        name: String,
        key: String,
    },
    #[error("volume {volume:?}: {kind} {namespace}/{name} is not in the manifests")]
    MissingVolumeObject {
        volume: String,
        kind: Kind,
        namespace: String,
        name: String,
    },
    #[error("volume {volume:?}: {kind} {namespace}/{name} has no key {key:?}")]
    MissingVolumeKey {
        volume: String,
        kind: Kind,
        namespace: String,
        name: String,
        key: String,
    },
    #[error("container {container:?}: env {variable}: resourceFieldRef: {problem}")]
    ResourceField {
        container: String,
        variable: String,
        problem: String,
    },
    #[error("volume {volume:?}: file {path:?}: {problem}")]
    VolumeField {
        volume: String,
        path: String,
        problem: String,
    },
    #[error("volume {volume:?}: {problem}")]
    ProjectedSource { volume: String, problem: String },
    #[error("imagePullSecrets: Secret {namespace}/{name} is not in the manifests")]
    MissingPullSecret { namespace: String, name: String },
    #[error("imagePullSecrets: {0}")]
    BadPullSecret(String),
}

pub use super::projection::FieldValues;

/// The keys and values of a ConfigMap or Secret in the desired state.
fn data_of(
    desired: &DesiredState,
    kind: Kind,
    namespace: &str,
    name: &str,
) -> Option<BTreeMap<String, Vec<u8>>> {
    let object = desired.get(&ObjectKey::new(kind, namespace, name))?;
    match object.object.as_ref() {
        Object::ConfigMap(config_map) => Some(config_map.contents()),
        Object::Secret(secret) => Some(secret.contents()),
        _ => None,
    }
}

/// The container's environment in Kubernetes order: `envFrom` sources in
/// order, then `env` entries (a later name replaces an earlier one's value
/// in place, as the kubelet does).
pub fn resolve_env(
    namespace: &str,
    container: &api::Container,
    desired: &DesiredState,
    fields: &FieldValues,
) -> Result<Vec<EnvVar>, InputError> {
    let mut env: Vec<EnvVar> = Vec::new();
    let set = |env: &mut Vec<EnvVar>, name: String, value: String| match env
        .iter_mut()
        .find(|e| e.name == name)
    {
        Some(existing) => existing.value = value,
        None => env.push(EnvVar { name, value }),
    };
    for source in &container.env_from {
        let (kind, reference) = match (&source.config_map_ref, &source.secret_ref) {
            (Some(r), _) => (Kind::ConfigMap, r),
            (None, Some(r)) => (Kind::Secret, r),
            (None, None) => continue,
        };
        let Some(data) = data_of(desired, kind, namespace, &reference.name) else {
            if reference.optional.unwrap_or(false) {
                continue;
            }
            return Err(InputError::MissingObject {
                container: container.name.clone(),
                what: "envFrom".into(),
                kind,
                namespace: namespace.into(),
                name: reference.name.clone(),
            });
        };
        let prefix = source.prefix.as_deref().unwrap_or("");
        for (key, value) in data {
            // Kubernetes skips keys that are not valid variable names; a
            // value that is not text cannot be one either.
            if let Ok(value) = String::from_utf8(value) {
                set(&mut env, format!("{prefix}{key}"), value);
            }
        }
    }
    for var in &container.env {
        let value = match &var.value_from {
            None => Some(var.value.clone().unwrap_or_default()),
            Some(from) => value_from(namespace, container, &var.name, from, desired, fields)?,
        };
        if let Some(value) = value {
            set(&mut env, var.name.clone(), value);
        }
    }
    Ok(env)
}

/// One `valueFrom`; `None` when an optional reference is missing (the
/// variable is left unset).
fn value_from(
    namespace: &str,
    container: &api::Container,
    variable: &str,
    from: &api::EnvVarSource,
    desired: &DesiredState,
    fields: &FieldValues,
) -> Result<Option<String>, InputError> {
    if let Some(resource) = &from.resource_field_ref {
        if fields.stand_ins {
            return Ok(Some(format!("$({})", resource.resource)));
        }
        return super::projection::resource_value(container, resource, fields.capacity)
            .map(Some)
            .map_err(|problem| InputError::ResourceField {
                container: container.name.clone(),
                variable: variable.into(),
                problem,
            });
    }
    if let Some(field) = &from.field_ref {
        return fields.get(&field.field_path).map(Some).ok_or_else(|| {
            InputError::UnsupportedField {
                container: container.name.clone(),
                variable: variable.into(),
                field: field.field_path.clone(),
            }
        });
    }
    let (kind, selector) = match (&from.config_map_key_ref, &from.secret_key_ref) {
        (Some(s), _) => (Kind::ConfigMap, s),
        (None, Some(s)) => (Kind::Secret, s),
        (None, None) => return Ok(None),
    };
    let optional = selector.optional.unwrap_or(false);
    let what = format!("env {variable}");
    let Some(data) = data_of(desired, kind, namespace, &selector.name) else {
        if optional {
            return Ok(None);
        }
        return Err(InputError::MissingObject {
            container: container.name.clone(),
            what,
            kind,
            namespace: namespace.into(),
            name: selector.name.clone(),
        });
    };
    let Some(bytes) = data.get(&selector.key) else {
        if optional {
            return Ok(None);
        }
        return Err(InputError::MissingKey {
            container: container.name.clone(),
            what,
            kind,
            namespace: namespace.into(),
            name: selector.name.clone(),
            key: selector.key.clone(),
        });
    };
    String::from_utf8(bytes.clone())
        .map(Some)
        .map_err(|_| InputError::NotText {
            container: container.name.clone(),
            variable: variable.into(),
            kind,
            namespace: namespace.into(),
            name: selector.name.clone(),
            key: selector.key.clone(),
        })
}

/// The files of a configMap or secret volume.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct VolumeFiles {
    pub name: String,
    /// Each with its mode (`VolumeFile`'s Debug never prints contents).
    pub files: Vec<VolumeFile>,
    /// Kept on a tmpfs (secret, downwardAPI and projected volumes, as
    /// the kubelet does).
    pub secret: bool,
    /// The pod's fsGroup: the group owning the files.
    pub gid: Option<u32>,
}

/// Kubernetes' mode of one projected file: the item's own `mode`, else the
/// volume's `defaultMode`, else 0o644, masked to 0o777. With an fsGroup,
/// kubelet makes every file of these read-only volumes readable by owner
/// and group (`mode | 0o440`, its `roMask`), item modes included: the same
/// manifest must give the same files as on a cluster.
pub fn file_mode(item_mode: Option<i32>, default_mode: Option<i32>, fs_group: Option<u32>) -> u32 {
    let masked = |mode: Option<i32>| mode.and_then(|m| u32::try_from(m).ok()).map(|m| m & 0o777);
    let mode = masked(item_mode)
        .or_else(|| masked(default_mode))
        .unwrap_or(0o644);
    if fs_group.is_some() {
        mode | 0o440
    } else {
        mode
    }
}

/// The files of `volume` if berth writes it (configMap, secret,
/// downwardAPI, projected; `None` for other kinds), for a pod whose
/// fsGroup is `fs_group`. A missing optional object gives no files.
pub fn volume_files(
    namespace: &str,
    volume: &api::Volume,
    desired: &DesiredState,
    fs_group: Option<u32>,
    pod: &super::projection::PodFacts<'_>,
) -> Result<Option<VolumeFiles>, InputError> {
    let files = |files, secret| {
        Ok(Some(VolumeFiles {
            name: volume.name.clone(),
            files,
            secret,
            gid: fs_group,
        }))
    };
    let mode = |default_mode| move |item_mode| file_mode(item_mode, default_mode, fs_group);
    if let Some(c) = &volume.config_map {
        let source = KeySource {
            volume: &volume.name,
            kind: Kind::ConfigMap,
            namespace,
            name: &c.name,
            items: &c.items,
            optional: c.optional.unwrap_or(false),
        };
        return files(source.files(desired, mode(c.default_mode))?, false);
    }
    if let Some(s) = &volume.secret {
        let source = KeySource {
            volume: &volume.name,
            kind: Kind::Secret,
            namespace,
            name: &s.secret_name,
            items: &s.items,
            optional: s.optional.unwrap_or(false),
        };
        return files(source.files(desired, mode(s.default_mode))?, true);
    }
    // The kubelet keeps these on a tmpfs too.
    if let Some(d) = &volume.downward_api {
        return files(
            downward_files(pod, &volume.name, &d.items, mode(d.default_mode))?,
            true,
        );
    }
    if let Some(p) = &volume.projected {
        return files(
            projected(
                namespace,
                &volume.name,
                p,
                desired,
                pod,
                mode(p.default_mode),
            )?,
            true,
        );
    }
    Ok(None)
}

/// The files of projected volume `volume`: its sources in order.
fn projected(
    namespace: &str,
    volume: &str,
    projected: &api::ProjectedVolumeSource,
    desired: &DesiredState,
    pod: &super::projection::PodFacts<'_>,
    mode: impl Fn(Option<i32>) -> u32 + Copy,
) -> Result<Vec<VolumeFile>, InputError> {
    let mut files = Vec::new();
    for source in &projected.sources {
        if let Some(c) = &source.config_map {
            let source = KeySource {
                volume,
                kind: Kind::ConfigMap,
                namespace,
                name: &c.name,
                items: &c.items,
                optional: c.optional.unwrap_or(false),
            };
            files.extend(source.files(desired, mode)?);
        } else if let Some(s) = &source.secret {
            let source = KeySource {
                volume,
                kind: Kind::Secret,
                namespace,
                name: &s.name,
                items: &s.items,
                optional: s.optional.unwrap_or(false),
            };
            files.extend(source.files(desired, mode)?);
        } else if let Some(d) = &source.downward_api {
            files.extend(downward_files(pod, volume, &d.items, mode)?);
        } else if source.service_account_token.is_some() {
            return Err(InputError::ProjectedSource {
                volume: volume.to_string(),
                problem: "serviceAccountToken cannot be projected: there is no API server to issue a token".into(),
            });
        }
    }
    Ok(files)
}

/// The files of downwardAPI `items` of volume `volume`.
fn downward_files(
    pod: &super::projection::PodFacts<'_>,
    volume: &str,
    items: &[api::DownwardApiVolumeFile],
    mode: impl Fn(Option<i32>) -> u32,
) -> Result<Vec<VolumeFile>, InputError> {
    pod.files(items, mode)
        .map_err(|err| InputError::VolumeField {
            volume: volume.to_string(),
            path: err.path,
            problem: err.problem,
        })
}

/// The keys of one ConfigMap or Secret as files (a volume, or a source
/// of a projected volume).
pub(super) struct KeySource<'a> {
    pub volume: &'a str,
    pub kind: Kind,
    pub namespace: &'a str,
    pub name: &'a str,
    pub items: &'a [api::KeyToPath],
    pub optional: bool,
}

impl KeySource<'_> {
    /// Every key (no items) or the items' keys, each file's mode from
    /// `mode(item mode)`.
    pub fn files(
        &self,
        desired: &DesiredState,
        mode: impl Fn(Option<i32>) -> u32,
    ) -> Result<Vec<VolumeFile>, InputError> {
        let file = |path: &str, data: Vec<u8>, item_mode: Option<i32>| VolumeFile {
            path: path.to_string(),
            data,
            mode: mode(item_mode),
        };
        let mut files = Vec::new();
        match data_of(desired, self.kind, self.namespace, self.name) {
            None if self.optional => {}
            None => {
                return Err(InputError::MissingVolumeObject {
                    volume: self.volume.to_string(),
                    kind: self.kind,
                    namespace: self.namespace.into(),
                    name: self.name.to_string(),
                });
            }
            Some(data) if self.items.is_empty() => {
                files.extend(data.into_iter().map(|(key, bytes)| file(&key, bytes, None)))
            }
            Some(data) => {
                for item in self.items {
                    match data.get(&item.key) {
                        Some(bytes) => files.push(file(&item.path, bytes.clone(), item.mode)),
                        None if self.optional => {}
                        None => {
                            return Err(InputError::MissingVolumeKey {
                                volume: self.volume.to_string(),
                                kind: self.kind,
                                namespace: self.namespace.into(),
                                name: self.name.to_string(),
                                key: item.key.clone(),
                            });
                        }
                    }
                }
            }
        }
        Ok(files)
    }
}

/// The registry credentials of the pod's `imagePullSecrets` (`None` when
/// it names none).
pub fn pull_credentials(
    namespace: &str,
    spec: &api::PodSpec,
    desired: &DesiredState,
) -> Result<Option<Credentials>, InputError> {
    if spec.image_pull_secrets.is_empty() {
        return Ok(None);
    }
    let mut merged: Option<Credentials> = None;
    for reference in &spec.image_pull_secrets {
        let key = ObjectKey::new(Kind::Secret, namespace, reference.name.clone());
        let secret = match desired.get(&key).map(|d| d.object.as_ref()) {
            Some(Object::Secret(secret)) => secret,
            _ => {
                return Err(InputError::MissingPullSecret {
                    namespace: namespace.into(),
                    name: reference.name.clone(),
                });
            }
        };
        let credentials = Credentials::from_secret(secret)
            .map_err(|err| InputError::BadPullSecret(crate::status::chain(&err)))?;
        match &mut merged {
            Some(all) => all.merge(credentials),
            None => merged = Some(credentials),
        }
    }
    Ok(merged)
}

/// Whether the pod consumes ConfigMap or Secret `name` (env, envFrom,
/// volumes, imagePullSecrets): a change to it must reach the pod.
pub fn uses(spec: &api::PodSpec, kind: Kind, name: &str) -> bool {
    let containers = spec.init_containers.iter().chain(&spec.containers);
    let in_env = containers.clone().any(|c| {
        c.env
            .iter()
            .filter_map(|e| e.value_from.as_ref())
            .any(|from| match kind {
                Kind::ConfigMap => from
                    .config_map_key_ref
                    .as_ref()
                    .is_some_and(|s| s.name == name),
                Kind::Secret => from.secret_key_ref.as_ref().is_some_and(|s| s.name == name),
                _ => false,
            })
    });
    let in_env_from = containers.flat_map(|c| &c.env_from).any(|from| match kind {
        Kind::ConfigMap => from.config_map_ref.as_ref().is_some_and(|r| r.name == name),
        Kind::Secret => from.secret_ref.as_ref().is_some_and(|r| r.name == name),
        _ => false,
    });
    let in_volumes = spec.volumes.iter().any(|v| match kind {
        Kind::ConfigMap => v.config_map.as_ref().is_some_and(|c| c.name == name),
        Kind::Secret => v.secret.as_ref().is_some_and(|s| s.secret_name == name),
        _ => false,
    });
    let in_projected = spec
        .volumes
        .iter()
        .filter_map(|v| v.projected.as_ref())
        .flat_map(|p| &p.sources)
        .any(|source| match kind {
            Kind::ConfigMap => source.config_map.as_ref().is_some_and(|c| c.name == name),
            Kind::Secret => source.secret.as_ref().is_some_and(|s| s.name == name),
            _ => false,
        });
    let in_pull_secrets =
        kind == Kind::Secret && spec.image_pull_secrets.iter().any(|r| r.name == name);
    in_env || in_env_from || in_volumes || in_projected || in_pull_secrets
}

#[cfg(test)]
mod tests {
    use std::path::Path;
    use std::sync::Arc;

    use super::*;
    use crate::desired::DesiredObject;
    use crate::status::SourceRef;

    fn state(objects: Vec<Object>) -> DesiredState {
        let mut desired = DesiredState::default();
        for object in objects {
            let key = object.key();
            desired.objects.insert(
                key.clone(),
                DesiredObject {
                    key,
                    content_hash: object.content_hash(),
                    object: Arc::new(object),
                    source: SourceRef {
                        file: Path::new("x.yaml").into(),
                        line: 1,
                        column: 1,
                    },
                    generation: 1,
                },
            );
        }
        desired
    }

    /// A pod none of these tests' volumes read fields of.
    fn no_facts() -> crate::pod::projection::PodFacts<'static> {
        static FIELDS: std::sync::LazyLock<FieldValues> =
            std::sync::LazyLock::new(FieldValues::default);
        static SPEC: std::sync::LazyLock<api::PodSpec> =
            std::sync::LazyLock::new(api::PodSpec::default);
        crate::pod::projection::PodFacts {
            fields: &FIELDS,
            spec: &SPEC,
        }
    }

    fn config_map(name: &str, data: &[(&str, &str)]) -> Object {
        Object::ConfigMap(api::ConfigMap {
            metadata: api::ObjectMeta::named(name),
            data: data
                .iter()
                .map(|(k, v)| (k.to_string(), v.to_string()))
                .collect(),
            ..Default::default()
        })
    }

    fn container(json: serde_json::Value) -> api::Container {
        serde_json::from_value(json).expect("container")
    }

    #[test]
    fn env_follows_kubernetes_order_and_sources() {
        let desired = state(vec![config_map("cfg", &[("A", "from-cm"), ("B", "b")])]);
        let c = container(serde_json::json!({
            "name": "app",
            "envFrom": [{"configMapRef": {"name": "cfg"}, "prefix": "CM_"}],
            "env": [
                {"name": "CM_A", "value": "literal wins"},
                {"name": "KEY", "valueFrom": {"configMapKeyRef": {"name": "cfg", "key": "B"}}},
                {"name": "POD", "valueFrom": {"fieldRef": {"fieldPath": "metadata.name"}}},
                {"name": "IP", "valueFrom": {"fieldRef": {"fieldPath": "status.podIP"}}},
                {"name": "GONE", "valueFrom": {"configMapKeyRef": {"name": "nope", "key": "x", "optional": true}}}
            ]
        }));
        let fields = FieldValues {
            name: "web".into(),
            pod_ips: vec!["10.0.0.5".into()],
            ..Default::default()
        };
        let env = resolve_env("default", &c, &desired, &fields).expect("env");
        let pairs: Vec<(&str, &str)> = env
            .iter()
            .map(|e| (e.name.as_str(), e.value.as_str()))
            .collect();
        assert_eq!(
            pairs,
            [
                ("CM_A", "literal wins"),
                ("CM_B", "b"),
                ("KEY", "b"),
                ("POD", "web"),
                ("IP", "10.0.0.5")
            ]
        );
    }

    #[test]
    fn missing_references_name_container_variable_object_and_key() {
        let desired = state(vec![config_map("cfg", &[("A", "1")])]);
        let missing_key = container(serde_json::json!({
            "name": "app",
            "env": [{"name": "X", "valueFrom": {"configMapKeyRef": {"name": "cfg", "key": "nope"}}}]
        }));
        let err = resolve_env("default", &missing_key, &desired, &FieldValues::default())
            .expect_err("missing key");
        let text = err.to_string();
        for needle in ["\"app\"", "env X", "ConfigMap default/cfg", "\"nope\""] {
            assert!(text.contains(needle), "{needle} in {text}");
        }
        let missing_secret = container(serde_json::json!({
            "name": "app",
            "envFrom": [{"secretRef": {"name": "db"}}]
        }));
        let err = resolve_env(
            "default",
            &missing_secret,
            &desired,
            &FieldValues::default(),
        )
        .expect_err("missing secret");
        assert!(err.to_string().contains("Secret default/db"), "{err}");
        let bad_field = container(serde_json::json!({
            "name": "app",
            "env": [{"name": "X", "valueFrom": {"fieldRef": {"fieldPath": "spec.whatever"}}}]
        }));
        assert!(matches!(
            resolve_env("default", &bad_field, &desired, &FieldValues::default()),
            Err(InputError::UnsupportedField { .. })
        ));
    }

    #[test]
    fn volume_files_project_items_and_know_secrets() {
        let secret = Object::Secret(api::Secret {
            metadata: api::ObjectMeta::named("tls"),
            string_data: [("key".to_string(), "s3cret".to_string())].into(),
            ..Default::default()
        });
        let desired = state(vec![config_map("cfg", &[("a", "1"), ("b", "2")]), secret]);
        let volume: api::Volume = serde_json::from_value(serde_json::json!({
            "name": "conf",
            "configMap": {"name": "cfg", "items": [{"key": "b", "path": "sub/b.txt"}], "defaultMode": 0o600}
        }))
        .expect("volume");
        let files = volume_files("default", &volume, &desired, None, &no_facts())
            .expect("files")
            .expect("a configMap volume");
        assert_eq!(
            files.files,
            [VolumeFile {
                path: "sub/b.txt".into(),
                data: b"2".to_vec(),
                mode: 0o600
            }]
        );
        assert!(!files.secret);
        let volume: api::Volume = serde_json::from_value(serde_json::json!({
            "name": "certs", "secret": {"secretName": "tls"}
        }))
        .expect("volume");
        let files = volume_files("default", &volume, &desired, None, &no_facts())
            .expect("files")
            .expect("a secret volume");
        assert!(files.secret);
        assert!(!format!("{files:?}").contains("s3cret"));
        let volume: api::Volume = serde_json::from_value(serde_json::json!({
            "name": "x", "secret": {"secretName": "absent"}
        }))
        .expect("volume");
        assert!(volume_files("default", &volume, &desired, None, &no_facts()).is_err());
    }

    #[test]
    fn an_item_mode_overrides_the_default_mode() {
        // No mode anywhere: Kubernetes' 0644.
        assert_eq!(file_mode(None, None, None), 0o644);
        assert_eq!(file_mode(None, Some(0o440), None), 0o440);
        assert_eq!(file_mode(Some(0o400), Some(0o440), None), 0o400);
        // Masked to the permission bits, like defaultMode.
        assert_eq!(file_mode(Some(0o4755), None, None), 0o755);
        assert_eq!(file_mode(None, Some(0o1600), None), 0o600);
        // A negative mode (rejected by validate) falls back to the default.
        assert_eq!(file_mode(Some(-1), Some(0o600), None), 0o600);
        // fsGroup: owner and group read on every file, as kubelet does.
        assert_eq!(file_mode(None, Some(0o600), Some(2000)), 0o640);
        assert_eq!(file_mode(None, Some(0o440), Some(2000)), 0o440);
        assert_eq!(file_mode(Some(0o400), Some(0o440), Some(2000)), 0o440);
        assert_eq!(file_mode(Some(0o200), None, Some(2000)), 0o640);
    }

    #[test]
    fn items_carry_their_own_modes_and_the_fs_group() {
        let secret = Object::Secret(api::Secret {
            metadata: api::ObjectMeta::named("tls"),
            string_data: [
                ("crt".to_string(), "c".to_string()),
                ("key".to_string(), "k".to_string()),
            ]
            .into(),
            ..Default::default()
        });
        let desired = state(vec![secret]);
        let volume: api::Volume = serde_json::from_value(serde_json::json!({
            "name": "certs",
            "secret": {"secretName": "tls", "defaultMode": 0o400, "items": [
                {"key": "crt", "path": "tls.crt"},
                {"key": "key", "path": "tls.key", "mode": 0o600}
            ]}
        }))
        .expect("volume");
        let modes = |fs_group| {
            let files = volume_files("default", &volume, &desired, fs_group, &no_facts())
                .expect("files")
                .expect("a secret volume");
            let modes: Vec<(String, u32)> = files
                .files
                .iter()
                .map(|f| (f.path.clone(), f.mode))
                .collect();
            (modes, files.gid)
        };
        let owned = |crt, key| vec![("tls.crt".to_string(), crt), ("tls.key".to_string(), key)];
        assert_eq!(modes(None), (owned(0o400, 0o600), None));
        assert_eq!(modes(Some(2000)), (owned(0o440, 0o640), Some(2000)));
    }

    #[test]
    fn env_reads_resource_fields_as_files_do() {
        let app = container(serde_json::json!({
            "name": "app", "image": "x",
            "resources": {"limits": {"memory": "64Mi"}},
            "env": [
                {"name": "MEM", "valueFrom": {"resourceFieldRef": {"resource": "limits.memory", "divisor": "1Mi"}}},
                {"name": "CPUS", "valueFrom": {"resourceFieldRef": {"resource": "limits.cpu"}}}
            ]
        }));
        let fields = FieldValues {
            capacity: crate::node::Capacity {
                cpu_millis: 4000,
                ..Default::default()
            },
            ..FieldValues::default()
        };
        let env = resolve_env("default", &app, &DesiredState::default(), &fields).expect("env");
        let pairs: Vec<(&str, &str)> = env
            .iter()
            .map(|e| (e.name.as_str(), e.value.as_str()))
            .collect();
        assert_eq!(pairs, [("MEM", "64"), ("CPUS", "4")]);
    }

    #[test]
    fn service_account_tokens_are_refused() {
        let volume: api::ProjectedVolumeSource = serde_json::from_value(serde_json::json!({
            "sources": [{"serviceAccountToken": {"path": "token"}}]
        }))
        .expect("volume");
        let err = projected(
            "default",
            "all",
            &volume,
            &DesiredState::default(),
            &no_facts(),
            |_| 0o644,
        )
        .expect_err("refused");
        assert!(err.to_string().contains("no API server"), "{err}");
    }

    #[test]
    fn knows_which_pods_use_an_object() {
        let spec: api::PodSpec = serde_json::from_value(serde_json::json!({
            "containers": [{"name": "a", "env": [{"name": "X", "valueFrom": {"secretKeyRef": {"name": "db", "key": "p"}}}]}],
            "volumes": [{"name": "v", "configMap": {"name": "cfg"}}]
        }))
        .expect("spec");
        assert!(uses(&spec, Kind::Secret, "db"));
        assert!(uses(&spec, Kind::ConfigMap, "cfg"));
        assert!(!uses(&spec, Kind::ConfigMap, "db"));
        assert!(!uses(&spec, Kind::Secret, "other"));
    }
}
