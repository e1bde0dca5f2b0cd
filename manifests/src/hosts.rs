//! containerd's `certs.d/<host>/hosts.toml`, read into a `Registry` object.
//!
//! The format is containerd's (docs/hosts.md): top-level `server` and the
//! server's own settings, then `[host."<url>"]` tables tried in file order.
//! Settings: `capabilities`, `ca` (a path or array of paths), `client` (a
//! path, an array of paths, or an array of `[cert, key]` pairs), `skip_verify`,
//! `header` (a table of string or string-array values), `override_path`,
//! `dial_timeout`, `proxy`. Relative paths resolve against the file's
//! directory. One deliberate difference: containerd ignores keys it does not
//! know, berth reports them as errors with a suggestion (a misspelt
//! `capabilities` would otherwise trust a mirror to resolve tags).

use std::collections::BTreeMap;
use std::path::Path;

use toml::Spanned;
use toml::de::{DeTable, DeValue};

use crate::diag::{Diagnostic, Severity};
use crate::object::{Kind, Object, ObjectKey};
use crate::parse::tree::{Entry, Node, Pos, Scalar, Value};
use crate::parse::{Document, ParsedFile, file_text, issue_diagnostic};
use crate::types::{Capability, ClientCert, ObjectMeta, Registry, RegistryHost, RegistrySpec};

const SETTINGS: [&str; 8] = [
    "capabilities",
    "ca",
    "client",
    "skip_verify",
    "header",
    "override_path",
    "dial_timeout",
    "proxy",
];

/// Parses `certs.d/<host>/hosts.toml` into one Registry object named `host`.
pub fn parse_hosts_toml(path: &Path, host: &str, bytes: &[u8]) -> ParsedFile {
    let mut parsed = ParsedFile {
        path: path.to_owned(),
        documents: Vec::new(),
        diagnostics: Vec::new(),
    };
    let text = match file_text(path, bytes) {
        Ok(text) => text,
        Err(diagnostic) => {
            parsed.diagnostics.push(*diagnostic);
            return parsed;
        }
    };
    let lines = LineIndex::new(text);
    let mut reader = Reader {
        file: path,
        lines: &lines,
        diagnostics: Vec::new(),
    };
    let mut document = Document {
        line: 1,
        column: 1,
        object: None,
        key: Some(ObjectKey::new(Kind::Registry, "", host)),
        diagnostics: Vec::new(),
    };
    let table = match DeTable::parse(text) {
        Ok(table) => table,
        Err(err) => {
            let pos = err
                .span()
                .map_or(Pos { line: 1, column: 1 }, |s| lines.pos(s.start));
            document.diagnostics.push(reader.diagnostic(
                pos,
                Severity::Error,
                err.message().trim_end().to_owned(),
            ));
            parsed.documents.push(document);
            return parsed;
        }
    };
    let (registry, tree) = reader.registry(host, table.get_ref());
    let mut diagnostics = reader.diagnostics;
    let object = Object::Registry(registry);
    diagnostics.extend(
        crate::validate::validate(&object)
            .into_iter()
            .map(|issue| issue_diagnostic(path, &tree, issue)),
    );
    diagnostics.sort_by_key(|d| (d.line, d.column));
    document.diagnostics = diagnostics;
    if !document.has_errors() {
        document.object = Some(crate::parse::resolve_relative_paths(object, path));
    }
    parsed.documents.push(document);
    parsed
}

/// Byte offset → line and column.
struct LineIndex<'a> {
    text: &'a str,
    starts: Vec<usize>,
}

impl<'a> LineIndex<'a> {
    fn new(text: &'a str) -> Self {
        let starts = std::iter::once(0)
            .chain(text.match_indices('\n').map(|(i, _)| i + 1))
            .collect();
        Self { text, starts }
    }

    fn pos(&self, offset: usize) -> Pos {
        let line = self.starts.partition_point(|&start| start <= offset).max(1);
        let start = self.starts[line - 1];
        let column = self
            .text
            .get(start..offset.min(self.text.len()))
            .map_or(0, |s| s.chars().count())
            + 1;
        Pos { line, column }
    }
}

struct Reader<'a> {
    file: &'a Path,
    lines: &'a LineIndex<'a>,
    diagnostics: Vec<Diagnostic>,
}

type TomlValue<'i> = Spanned<DeValue<'i>>;

impl Reader<'_> {
    fn diagnostic(&self, pos: Pos, severity: Severity, message: String) -> Diagnostic {
        Diagnostic {
            file: self.file.to_owned(),
            line: pos.line,
            column: pos.column,
            severity,
            field: None,
            message,
        }
    }

    fn error(&mut self, span: std::ops::Range<usize>, message: String) {
        let pos = self.lines.pos(span.start);
        self.diagnostics
            .push(self.diagnostic(pos, Severity::Error, message));
    }

    fn pos(&self, span: std::ops::Range<usize>) -> Pos {
        self.lines.pos(span.start)
    }

    /// Builds the Registry and a YAML-shaped position tree (`spec.hosts[0].url`)
    /// so semantic validation can point into the TOML file.
    fn registry(&mut self, host: &str, table: &DeTable<'_>) -> (Registry, Node) {
        let mut server_url: Option<(String, Pos)> = None;
        let mut server_settings = Vec::new();
        let mut hosts = Vec::new();
        let mut host_nodes = Vec::new();
        for (key, value) in table {
            let name = key.get_ref().as_ref();
            match name {
                "server" => {
                    if let Some(url) = self.string(key.get_ref(), value) {
                        server_url = Some((url, self.pos(value.span())));
                    }
                }
                "host" => match value.get_ref() {
                    DeValue::Table(entries) => {
                        for (url, settings) in entries {
                            let (host, node) = self.host(url, settings);
                            hosts.push(host);
                            host_nodes.push(node);
                        }
                    }
                    _ => self.error(
                        value.span(),
                        "`host` must be a table of `[host.\"<url>\"]` entries".into(),
                    ),
                },
                _ if SETTINGS.contains(&name) => server_settings.push((key, value)),
                _ => self.unknown_key(key, &["server", "host"]),
            }
        }

        let mut server_node_entries = Vec::new();
        let server = if server_url.is_some() || !server_settings.is_empty() {
            let mut server = RegistryHost::default();
            if let Some((url, pos)) = &server_url {
                server.url.clone_from(url);
                server_node_entries.push(scalar_entry("url", *pos, url));
            }
            for (key, value) in server_settings {
                if let Some(entry) = self.setting(&mut server, key, value) {
                    server_node_entries.push(entry);
                }
            }
            Some(server)
        } else {
            None
        };

        let origin = Pos { line: 1, column: 1 };
        let mut spec_entries = Vec::new();
        if server.is_some() {
            let pos = server_url.as_ref().map_or(origin, |(_, p)| *p);
            spec_entries.push(entry("server", pos, Value::Map(server_node_entries)));
        }
        spec_entries.push(entry("hosts", origin, Value::Seq(host_nodes)));
        let tree = Node {
            pos: origin,
            value: Value::Map(vec![
                entry(
                    "metadata",
                    origin,
                    Value::Map(vec![scalar_entry("name", origin, host)]),
                ),
                entry("spec", origin, Value::Map(spec_entries)),
            ]),
        };
        let registry = Registry {
            metadata: ObjectMeta::named(host),
            spec: RegistrySpec { server, hosts },
            ..Registry::default()
        };
        (registry, tree)
    }

    fn host(
        &mut self,
        url: &Spanned<toml::de::DeString<'_>>,
        settings: &TomlValue<'_>,
    ) -> (RegistryHost, Node) {
        let url_pos = self.pos(url.span());
        let mut host = RegistryHost::url(url.get_ref().as_ref());
        let mut entries = vec![scalar_entry("url", url_pos, &host.url)];
        match settings.get_ref() {
            DeValue::Table(table) => {
                for (key, value) in table {
                    if SETTINGS.contains(&key.get_ref().as_ref()) {
                        if let Some(entry) = self.setting(&mut host, key, value) {
                            entries.push(entry);
                        }
                    } else {
                        self.unknown_key(key, &[]);
                    }
                }
            }
            _ => self.error(
                settings.span(),
                format!("`host.\"{}\"` must be a table", host.url),
            ),
        }
        (
            host,
            Node {
                pos: url_pos,
                value: Value::Map(entries),
            },
        )
    }

    fn unknown_key(&mut self, key: &Spanned<toml::de::DeString<'_>>, extra: &[&str]) {
        let name = key.get_ref().as_ref();
        let candidates = SETTINGS.iter().chain(extra).copied();
        let hint = crate::fields::did_you_mean(name, candidates)
            .map(|s| format!("; did you mean `{s}`?"))
            .unwrap_or_default();
        self.error(key.span(), format!("unknown hosts.toml key `{name}`{hint}"));
    }

    /// Applies one setting; returns its position entry (camelCase key).
    fn setting(
        &mut self,
        host: &mut RegistryHost,
        key: &Spanned<toml::de::DeString<'_>>,
        value: &TomlValue<'_>,
    ) -> Option<Entry> {
        let name = key.get_ref().as_ref();
        let pos = self.pos(value.span());
        let (yaml_key, node_value) = match name {
            "capabilities" => {
                let mut capabilities = Vec::new();
                for item in self.strings(name, value)? {
                    match item.as_str() {
                        "pull" => capabilities.push(Capability::Pull),
                        "resolve" => capabilities.push(Capability::Resolve),
                        "push" => capabilities.push(Capability::Push),
                        other => self.error(
                            value.span(),
                            format!("unknown capability `{other}`: use pull, resolve and push"),
                        ),
                    }
                }
                host.capabilities = Some(capabilities);
                ("capabilities", Value::Seq(Vec::new()))
            }
            "ca" => {
                host.ca = self.string_or_strings(name, value)?;
                (
                    "ca",
                    Value::Seq(host.ca.iter().map(|_| scalar_node(pos, "")).collect()),
                )
            }
            "client" => {
                host.client = self.client(value)?;
                (
                    "client",
                    Value::Seq(host.client.iter().map(|_| scalar_node(pos, "")).collect()),
                )
            }
            "skip_verify" => {
                host.skip_verify = self.boolean(name, value)?;
                ("skipVerify", Value::Scalar(Scalar::Bool(host.skip_verify)))
            }
            "override_path" => {
                host.override_path = self.boolean(name, value)?;
                (
                    "overridePath",
                    Value::Scalar(Scalar::Bool(host.override_path)),
                )
            }
            "dial_timeout" => {
                host.dial_timeout = Some(self.string(key.get_ref(), value)?);
                ("dialTimeout", Value::Scalar(Scalar::Null))
            }
            "proxy" => {
                host.proxy = Some(self.string(key.get_ref(), value)?);
                ("proxy", Value::Scalar(Scalar::Null))
            }
            "header" => {
                host.header = self.headers(value)?;
                let entries = host
                    .header
                    .keys()
                    .map(|k| scalar_entry(k, pos, ""))
                    .collect();
                ("header", Value::Map(entries))
            }
            _ => return None,
        };
        Some(Entry {
            key: yaml_key.to_owned(),
            key_pos: self.pos(key.span()),
            value: Node {
                pos,
                value: node_value,
            },
        })
    }

    fn string(&mut self, key: &str, value: &TomlValue<'_>) -> Option<String> {
        match value.get_ref() {
            DeValue::String(s) => Some(s.to_string()),
            _ => {
                self.error(value.span(), format!("`{key}` must be a string"));
                None
            }
        }
    }

    fn boolean(&mut self, key: &str, value: &TomlValue<'_>) -> Option<bool> {
        match value.get_ref() {
            DeValue::Boolean(b) => Some(*b),
            _ => {
                self.error(value.span(), format!("`{key}` must be true or false"));
                None
            }
        }
    }

    fn strings(&mut self, key: &str, value: &TomlValue<'_>) -> Option<Vec<String>> {
        let DeValue::Array(items) = value.get_ref() else {
            self.error(value.span(), format!("`{key}` must be an array of strings"));
            return None;
        };
        items.iter().map(|item| self.string(key, item)).collect()
    }

    fn string_or_strings(&mut self, key: &str, value: &TomlValue<'_>) -> Option<Vec<String>> {
        match value.get_ref() {
            DeValue::String(s) => Some(vec![s.to_string()]),
            _ => self.strings(key, value),
        }
    }

    /// `"a.pem"`, `["a.pem", "b.pem"]`, or `[["a.cert", "a.key"], ["b.pem", ""]]`.
    fn client(&mut self, value: &TomlValue<'_>) -> Option<Vec<ClientCert>> {
        let cert_only = |cert: String| ClientCert { cert, key: None };
        match value.get_ref() {
            DeValue::String(s) => Some(vec![cert_only(s.to_string())]),
            DeValue::Array(items) => items
                .iter()
                .map(|item| match item.get_ref() {
                    DeValue::String(s) => Some(cert_only(s.to_string())),
                    DeValue::Array(pair) if pair.len() == 2 => {
                        let cert = self.string("client", &pair[0])?;
                        let key = self.string("client", &pair[1])?;
                        Some(ClientCert {
                            cert,
                            key: (!key.is_empty()).then_some(key),
                        })
                    }
                    _ => {
                        self.error(
                            item.span(),
                            "`client` entries must be a path or a [cert, key] pair".into(),
                        );
                        None
                    }
                })
                .collect(),
            _ => {
                self.error(
                    value.span(),
                    "`client` must be a path, an array of paths, or an array of [cert, key] pairs"
                        .into(),
                );
                None
            }
        }
    }

    fn headers(&mut self, value: &TomlValue<'_>) -> Option<BTreeMap<String, Vec<String>>> {
        let DeValue::Table(table) = value.get_ref() else {
            self.error(
                value.span(),
                "`header` must be a table of name = value(s)".into(),
            );
            return None;
        };
        let mut headers = BTreeMap::new();
        for (name, values) in table {
            let name = name.get_ref().to_string();
            let values = self.string_or_strings(&format!("header.{name}"), values)?;
            headers.insert(name, values);
        }
        Some(headers)
    }
}

fn entry(key: &str, pos: Pos, value: Value) -> Entry {
    Entry {
        key: key.to_owned(),
        key_pos: pos,
        value: Node { pos, value },
    }
}

fn scalar_node(pos: Pos, text: &str) -> Node {
    Node {
        pos,
        value: Value::Scalar(Scalar::Str(text.to_owned())),
    }
}

fn scalar_entry(key: &str, pos: Pos, text: &str) -> Entry {
    entry(key, pos, Value::Scalar(Scalar::Str(text.to_owned())))
}

#[cfg(test)]
mod tests {
    use super::*;

    const HOSTS: &str = r#"server = "https://registry-1.docker.io"

[host."https://mirror.local:5000"]
  capabilities = ["pull", "resolve"]
  ca = "mirror-ca.pem"
  skip_verify = false
  [host."https://mirror.local:5000".header]
    x-custom = ["a", "b"]
    x-single = "one"

[host."http://10.0.0.2:5000/v2/upstream"]
  capabilities = ["pull"]
  client = [["/etc/certs/client.cert", "/etc/certs/client.key"], ["/etc/certs/both.pem", ""]]
  override_path = true
  dial_timeout = "1s"
"#;

    fn registry(parsed: &ParsedFile) -> &Registry {
        match parsed.objects().next() {
            Some(Object::Registry(r)) => r,
            other => panic!(
                "expected a Registry, got {other:?}: {:?}",
                parsed.diagnostics
            ),
        }
    }

    #[test]
    fn reads_containerds_format_in_file_order() {
        let parsed = parse_hosts_toml(
            Path::new("/etc/agent.d/certs.d/docker.io/hosts.toml"),
            "docker.io",
            HOSTS.as_bytes(),
        );
        assert!(
            !parsed.has_errors(),
            "{:?}",
            parsed.all_diagnostics().collect::<Vec<_>>()
        );
        let r = registry(&parsed);
        assert_eq!(r.host(), "docker.io");
        assert_eq!(
            r.spec.server.as_ref().map(|s| s.url.as_str()),
            Some("https://registry-1.docker.io")
        );
        let hosts = &r.spec.hosts;
        assert_eq!(hosts.len(), 2);
        assert_eq!(hosts[0].url, "https://mirror.local:5000");
        assert_eq!(
            hosts[0].capabilities,
            Some(vec![Capability::Pull, Capability::Resolve])
        );
        assert_eq!(
            hosts[0].ca,
            ["/etc/agent.d/certs.d/docker.io/mirror-ca.pem"],
            "relative to the file"
        );
        assert_eq!(hosts[0].header["x-custom"], ["a", "b"]);
        assert_eq!(hosts[0].header["x-single"], ["one"]);
        assert_eq!(hosts[1].url, "http://10.0.0.2:5000/v2/upstream");
        assert!(hosts[1].override_path);
        assert_eq!(hosts[1].dial_timeout.as_deref(), Some("1s"));
        assert_eq!(
            hosts[1].client,
            [
                ClientCert {
                    cert: "/etc/certs/client.cert".into(),
                    key: Some("/etc/certs/client.key".into())
                },
                ClientCert {
                    cert: "/etc/certs/both.pem".into(),
                    key: None
                },
            ]
        );
        assert!(!hosts[1].can(Capability::Resolve));
    }

    #[test]
    fn top_level_settings_apply_to_the_server() {
        let parsed = parse_hosts_toml(
            Path::new("h.toml"),
            "_default",
            b"ca = [\"/a.pem\", \"/b.pem\"]\nclient = \"/c.pem\"\n",
        );
        let r = registry(&parsed);
        let server = r.spec.server.as_ref().expect("server settings");
        assert_eq!(server.url, "");
        assert_eq!(server.ca, ["/a.pem", "/b.pem"]);
        assert_eq!(
            server.client,
            [ClientCert {
                cert: "/c.pem".into(),
                key: None
            }]
        );
    }

    #[test]
    fn errors_carry_line_and_column() {
        let text = "server = \"https://r.example\"\n\n[host.\"https://m\"]\n  capabilites = [\"pull\"]\n  skip_verify = \"yes\"\n";
        let parsed = parse_hosts_toml(Path::new("hosts.toml"), "r.example", text.as_bytes());
        let lines: Vec<String> = parsed.all_diagnostics().map(ToString::to_string).collect();
        assert_eq!(
            lines,
            [
                "hosts.toml:4:3: error: unknown hosts.toml key `capabilites`; did you mean `capabilities`?",
                "hosts.toml:5:17: error: `skip_verify` must be true or false",
            ]
        );
        assert!(parsed.objects().next().is_none());

        let parsed = parse_hosts_toml(Path::new("hosts.toml"), "r", b"server = \n");
        let d = parsed.all_diagnostics().next().expect("syntax error");
        assert_eq!((d.line, d.column), (1, 10), "{d}");
    }
}
