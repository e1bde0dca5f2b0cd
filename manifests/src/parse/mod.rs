//! Parsing manifest files into objects with positioned diagnostics.
//!
//! For each document:
//! 1. parse it into a position-annotated tree (serde-saphyr, YAML 1.2 core
//!    booleans, budgets on) — syntax errors and hostile input stop here;
//! 2. read `apiVersion` and `kind` from the tree and pick the type;
//! 3. check every field against berth's and Kubernetes' field tables;
//! 4. deserialize the typed object from the same text (type errors carry
//!    serde-saphyr's positions);
//! 5. validate the typed object; issues name field paths, which the tree
//!    turns into line:column.
//!
//! A document gets an object only when it has no error diagnostics.

pub(crate) mod split;
pub(crate) mod tree;

use std::path::{Path, PathBuf};

use serde::de::DeserializeOwned;

use crate::diag::{Diagnostic, Severity};
use crate::files::{MAX_FILE_BYTES, ManifestFile, classify_path};
use crate::object::{Kind, Object, ObjectKey};
use crate::validate::Issue;
use tree::{Node, Pos, Value};

/// The result of parsing one file.
#[derive(Debug, Clone, PartialEq)]
pub struct ParsedFile {
    pub path: PathBuf,
    pub documents: Vec<Document>,
    /// Problems with the file as a whole (too large, not UTF-8).
    pub diagnostics: Vec<Diagnostic>,
}

/// One document of a file.
#[derive(Debug, Clone, PartialEq)]
pub struct Document {
    /// Where the document starts (1-based).
    pub line: usize,
    pub column: usize,
    /// The object, when the document has no errors.
    pub object: Option<Object>,
    /// The key the document declares, when `kind` and `metadata.name` could
    /// be read even if the rest has errors (so status can name the object).
    pub key: Option<ObjectKey>,
    pub diagnostics: Vec<Diagnostic>,
}

impl ParsedFile {
    /// True when the file or any document has an error (warnings do not count).
    pub fn has_errors(&self) -> bool {
        self.all_diagnostics().any(Diagnostic::is_error)
    }

    /// The objects of the documents without errors, in file order.
    pub fn objects(&self) -> impl Iterator<Item = &Object> {
        self.documents.iter().filter_map(|d| d.object.as_ref())
    }

    /// File-level and document diagnostics, in file order.
    pub fn all_diagnostics(&self) -> impl Iterator<Item = &Diagnostic> {
        self.diagnostics
            .iter()
            .chain(self.documents.iter().flat_map(|d| d.diagnostics.iter()))
    }
}

impl Document {
    pub fn has_errors(&self) -> bool {
        self.diagnostics.iter().any(Diagnostic::is_error)
    }
}

/// Parses one manifest file (`*.yaml`, `*.yml`, `*.json`; any other name is
/// read as YAML). `path` is only used to name the file in diagnostics and to
/// resolve relative paths inside objects (`Image.spec.source`, a Registry's
/// `ca`/`client`) against the file's directory.
pub fn parse_file(path: &Path, bytes: &[u8]) -> ParsedFile {
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
    let is_json = matches!(
        classify_path(Path::new(path.file_name().unwrap_or_default())),
        Some(ManifestFile::Json)
    );
    // JSON allows tabs wherever it allows spaces; YAML does not allow them as
    // indentation. Outside strings a tab can only be whitespace in JSON, and
    // inside strings it must be escaped, so swapping them for spaces changes
    // nothing but keeps every column.
    if is_json {
        // YAML accepts more than JSON (trailing commas, comments); a `.json`
        // file must be JSON, as kubectl requires.
        if let Err(err) = serde_json::from_str::<serde::de::IgnoredAny>(text) {
            parsed.diagnostics.push(Diagnostic {
                file: path.to_owned(),
                line: err.line().max(1),
                column: err.column().max(1),
                severity: Severity::Error,
                field: None,
                message: format!("invalid JSON: {}", json_error_message(&err)),
            });
            return parsed;
        }
    }
    let text = if is_json {
        text.replace('\t', " ")
    } else {
        text.to_owned()
    };
    for document in split::split_documents(&text) {
        parsed.documents.push(parse_document(path, document));
    }
    parsed
}

/// serde_json's message without its " at line X column Y" suffix.
fn json_error_message(err: &serde_json::Error) -> String {
    let text = err.to_string();
    match text.rfind(" at line ") {
        Some(i) => text[..i].to_owned(),
        None => text,
    }
}

/// The file as UTF-8 text, or the reason it cannot be parsed at all.
pub(crate) fn file_text<'a>(path: &Path, bytes: &'a [u8]) -> Result<&'a str, Box<Diagnostic>> {
    let file_error = |line, column, message: String| {
        Box::new(Diagnostic {
            file: path.to_owned(),
            line,
            column,
            severity: Severity::Error,
            field: None,
            message,
        })
    };
    let size = u64::try_from(bytes.len()).unwrap_or(u64::MAX);
    if size > MAX_FILE_BYTES {
        return Err(Box::new(crate::files::file_too_large(path, size)));
    }
    let bytes = bytes.strip_prefix(b"\xEF\xBB\xBF").unwrap_or(bytes);
    std::str::from_utf8(bytes).map_err(|err| {
        let valid = &bytes[..err.valid_up_to()];
        let line = valid.iter().filter(|b| **b == b'\n').count() + 1;
        let line_start = valid.iter().rposition(|b| *b == b'\n').map_or(0, |i| i + 1);
        let column = String::from_utf8_lossy(&valid[line_start..])
            .chars()
            .count()
            + 1;
        file_error(line, column, "file is not UTF-8 text".to_owned())
    })
}

/// Parser limits. A manifest is at most 4 MiB; these bound what a small
/// document can expand into (alias bombs) and how deep it may nest, so
/// hostile input costs milliseconds and a few MiB, never a crash.
///
/// Nesting: the deepest Kubernetes Pod field is 12 levels down
/// (`spec.volumes[].projected.sources[].….values[]`). Deserialization
/// recurses once per level, using about 50 KiB of stack per level in debug
/// builds and 7 KiB in release builds, so 24 levels keep [`parse_file`]
/// well inside a 2 MiB thread stack (tokio workers, `spawn_blocking`).
pub const MAX_DEPTH: usize = 24;

pub const MAX_NODES: usize = 200_000;
/// Values replayed through aliases (`*name`) per document.
pub const MAX_ALIAS_REPLAY: usize = 10_000;

fn yaml_options() -> serde_saphyr::Options {
    let mut options = serde_saphyr::options! {
        // YAML 1.2 core booleans: `no`, `on`, `y` stay strings.
        strict_booleans: true,
        budget: serde_saphyr::budget! {
            max_depth: MAX_DEPTH,
            max_nodes: MAX_NODES,
            max_total_scalar_bytes: 8 * 1024 * 1024,
            max_aliases: 1_000,
            max_anchors: 1_000,
            max_documents: 1,
        },
    };
    options.alias_limits.max_total_replayed_events = MAX_ALIAS_REPLAY;
    // `defaultMode: 0644` is octal in Kubernetes manifests (YAML 1.1 rules,
    // as the API machinery reads them), not decimal 644.
    options.legacy_octal_numbers = true;

    options
}

/// Parses one document into a [`Document`].
fn parse_document(path: &Path, document: split::DocumentText<'_>) -> Document {
    let mut out = Document {
        line: document.content_line() + 1,
        column: 1,
        object: None,
        key: None,
        diagnostics: Vec::new(),
    };
    let diag = |pos: Pos, severity, field: Option<String>, message: String| Diagnostic {
        file: path.to_owned(),
        line: pos.line,
        column: pos.column,
        severity,
        field,
        message,
    };

    // 1. The position tree.
    let mut root: Node =
        match serde_saphyr::from_str_with_options::<Option<Node>>(document.text, yaml_options()) {
            Ok(Some(node)) => node,
            Ok(None) => return out,
            Err(err) => {
                let (pos, message) = yaml_error(&err, document.first_line, out.line);
                out.diagnostics
                    .push(diag(pos, Severity::Error, None, message));
                return out;
            }
        };
    root.offset_lines(document.first_line);
    out.line = root.pos.line;
    out.column = root.pos.column;
    if matches!(root.value, Value::Scalar(tree::Scalar::Null)) {
        return out;
    }

    // 2. Which kind.
    let kind = match header(&root) {
        Ok(kind) => kind,
        Err(issue) => {
            out.diagnostics.push(issue_diagnostic(path, &root, issue));
            return out;
        }
    };
    out.key = declared_key(kind, &root);

    // 3. Fields.
    let mut issues = crate::fields::check(kind, &root);

    // 4. Types.
    let object = match kind {
        Kind::Pod => typed(document.text, Object::Pod),
        Kind::ConfigMap => typed(document.text, Object::ConfigMap),
        Kind::Secret => typed(document.text, Object::Secret),
        Kind::Image => typed(document.text, Object::Image),
        Kind::Registry => typed(document.text, Object::Registry),
    };
    let object = match object {
        Ok(object) => Some(object),
        Err(err) => {
            let (pos, message) = yaml_error(&err, document.first_line, out.line);
            let (field, message) = name_the_field(&root, pos, message);
            let message = hide_secret_values(kind, field.as_deref(), message);
            out.diagnostics
                .push(diag(pos, Severity::Error, field, message));
            None
        }
    };

    // 5. Semantics.
    if let Some(object) = &object {
        issues.extend(crate::validate::validate(object));
    }
    out.diagnostics.extend(
        issues
            .into_iter()
            .map(|issue| issue_diagnostic(path, &root, issue)),
    );
    out.diagnostics.sort_by_key(|d| (d.line, d.column));
    // The field check and the typed pass can both object to one value;
    // one message per field is enough.
    out.diagnostics.dedup_by(|later, earlier| {
        later.field.is_some()
            && later.field == earlier.field
            && (later.line, later.column) == (earlier.line, earlier.column)
            && later.is_error()
            && earlier.is_error()
    });

    if !out.has_errors() {
        out.object = object.map(|o| resolve_relative_paths(o, path));
    }
    out
}

fn typed<T: DeserializeOwned>(
    text: &str,
    wrap: fn(T) -> Object,
) -> Result<Object, serde_saphyr::Error> {
    let mut options = yaml_options();
    // Like the API server: `value: 1` or `args: [3600]` where a string
    // belongs is an error (quote it), not a silent conversion.
    options.no_schema = true;
    serde_saphyr::from_str_with_options::<T>(text, options).map(wrap)
}

/// Turns an issue's field path into a positioned diagnostic.
pub(crate) fn issue_diagnostic(path: &Path, root: &Node, issue: Issue) -> Diagnostic {
    let pos = root.locate(&issue.path, issue.at_key);
    Diagnostic {
        file: path.to_owned(),
        line: pos.line,
        column: pos.column,
        severity: issue.severity,
        field: (!issue.path.is_empty()).then_some(issue.path),
        message: issue.message,
    }
}

/// The position and message of a serde-saphyr error, in file coordinates.
fn yaml_error(err: &serde_saphyr::Error, first_line: usize, fallback_line: usize) -> (Pos, String) {
    use serde_saphyr::MessageFormatter as _;
    let message = match budget_breach(err) {
        Some(message) => message,
        None => serde_saphyr::UserMessageFormatter
            .format_message(err)
            .into_owned(),
    };
    // Messages may quote input; keep control characters out of the terminal.
    let message: String = message
        .chars()
        .flat_map(|c| {
            let escaped: Vec<char> = if c.is_control() {
                c.escape_debug().collect()
            } else {
                vec![c]
            };
            escaped
        })
        .collect();
    let pos = match err.location() {
        Some(loc) if loc.line() > 0 => Pos {
            line: usize::try_from(loc.line())
                .unwrap_or(usize::MAX)
                .saturating_add(first_line),
            column: usize::try_from(loc.column()).unwrap_or(usize::MAX).max(1),
        },
        _ => Pos {
            line: fallback_line,
            column: 1,
        },
    };
    (pos, improve_message(message))
}

/// A plain sentence for a breached parsing budget (alias bombs, deep
/// nesting, huge documents).
fn budget_breach(err: &serde_saphyr::Error) -> Option<String> {
    use serde_saphyr::budget::BudgetBreach;
    let mut err = err;
    while let serde_saphyr::Error::WithSnippet { error, .. }
    | serde_saphyr::Error::AliasError { error, .. } = err
    {
        err = error;
    }
    let breach = match err {
        serde_saphyr::Error::Budget { breach, .. } => breach,
        serde_saphyr::Error::AliasReplayLimitExceeded { .. }
        | serde_saphyr::Error::AliasReplayStackDepthExceeded { .. }
        | serde_saphyr::Error::AliasReplayCounterOverflow { .. } => {
            return Some(format!(
                "document refused: its aliases expand to more than {MAX_ALIAS_REPLAY} values (an alias bomb such as \"billion laughs\")"
            ));
        }
        _ => return None,
    };

    let why = match breach {
        BudgetBreach::Depth { .. } => format!("it nests deeper than {MAX_DEPTH} levels"),
        BudgetBreach::Nodes { .. } | BudgetBreach::Events { .. } => {
            format!("it has more than {MAX_NODES} values")
        }

        BudgetBreach::Aliases { .. }
        | BudgetBreach::Anchors { .. }
        | BudgetBreach::AliasAnchorRatio { .. } => "it uses too many anchors or aliases".to_owned(),
        BudgetBreach::ScalarBytes { .. } => "its text values add up to more than 8 MiB".to_owned(),
        other => format!("it breaks a parser limit ({other:?})"),
    };
    Some(format!("document refused: {why}"))
}

/// Rewords serde's terse messages and adds a suggestion to "unknown variant
/// `x`, expected one of A, B".
fn improve_message(message: String) -> String {
    let plain = match message.as_str() {
        "invalid i32" | "invalid i64" | "invalid u32" | "invalid u64" | "invalid u16" => {
            Some("expected a whole number (in range)")
        }
        "expected sequence start" => Some("expected a list"),
        "expected mapping start" => Some("expected a mapping"),
        "invalid boolean (true or false expected)" => Some("expected true or false"),
        "recursion limit exceeded" => Some("document refused: it nests too deeply"),
        "value requires quoting" => {
            Some("a number or true/false where text belongs: quote it, as Kubernetes requires")
        }

        _ => None,
    };
    if let Some(plain) = plain {
        return plain.to_owned();
    }
    let Some(rest) = message.strip_prefix("unknown variant `") else {
        return message;
    };
    let Some((input, expected)) = rest.split_once('`') else {
        return message;
    };
    let expected = expected
        .trim_start_matches(", expected one of ")
        .trim_start_matches(", expected ");
    let candidates: Vec<&str> = expected.split(", ").map(|c| c.trim_matches('`')).collect();
    match crate::fields::did_you_mean(input, candidates.iter().copied()) {
        Some(suggestion) => format!("{message}; did you mean `{suggestion}`?"),
        None => message,
    }
}

/// A type error inside a Secret's `data` or `stringData` quotes the value
/// it found (serde's message does, and so does [`name_the_field`]): say
/// what is wrong without it, so a typo never puts a secret into status,
/// events or logs.
fn hide_secret_values(kind: Kind, field: Option<&str>, message: String) -> String {
    let secret_value = kind == Kind::Secret
        && field.is_some_and(|f| {
            ["data", "stringData"].iter().any(|top| {
                f == *top || f.starts_with(&format!("{top}.")) || f.starts_with(&format!("{top}["))
            })
        });
    match field {
        Some(field) if secret_value => format!(
            "`{field}`: expected a mapping of keys to string values (the value found is not shown: it is part of a Secret)"
        ),
        _ => message,
    }
}

/// Prefixes a type error with the field it is about and the value found.
fn name_the_field(root: &Node, pos: Pos, message: String) -> (Option<String>, String) {
    if message.starts_with("missing field") {
        return match root.mapping_at(pos) {
            Some(path) if !path.is_empty() => {
                (Some(path.clone()), format!("{message} in `{path}`"))
            }
            _ => (None, format!("{message} at the top level")),
        };
    }
    let Some((path, node)) = root.find_at(pos) else {
        return (None, message);
    };
    let found = match &node.value {
        Value::Scalar(tree::Scalar::Null) => " (found nothing)".to_owned(),
        Value::Scalar(scalar) => {
            let text = scalar.to_string();
            if text.chars().count() > 40 || text.contains('\n') {
                String::new()
            } else {
                format!(" (found `{text}`)")
            }
        }
        Value::Seq(_) => " (found a list)".to_owned(),
        Value::Map(_) => " (found a mapping)".to_owned(),
    };
    if path.is_empty() {
        return (None, message);
    }
    if message.starts_with("unknown variant") {
        return (Some(path.clone()), format!("`{path}`: {message}"));
    }
    (Some(path.clone()), format!("`{path}`: {message}{found}"))
}

/// Reads `apiVersion` and `kind` and checks they name a kind berth knows.
fn header(root: &Node) -> Result<Kind, Issue> {
    if !matches!(root.value, Value::Map(_)) {
        return Err(Issue::error(
            "",
            "a manifest must be a mapping with `apiVersion`, `kind` and `metadata`",
        ));
    }
    let Some(kind_text) = root.get_str("kind") else {
        let at = if root.get("kind").is_some() {
            "kind"
        } else {
            ""
        };
        return Err(Issue::error(
            at,
            "missing `kind`: expected Pod, ConfigMap, Secret (apiVersion v1), or Image, Registry (apiVersion berth/v1)",
        ));
    };
    let kind: Kind = match kind_text.parse() {
        Ok(kind) => kind,
        Err(_) => {
            let names = Kind::ALL.map(Kind::as_str);
            let hint = match crate::fields::did_you_mean(kind_text, names) {
                Some(s) => format!("; did you mean `{s}`?"),
                None => String::new(),
            };
            return Err(Issue::error(
                "kind",
                format!(
                    "berth does not run `{kind_text}` objects: kinds are Pod, ConfigMap, Secret, Image and Registry{hint}"
                ),
            ));
        }
    };
    match root.get_str("apiVersion") {
        Some(version) if version == kind.api_version() => Ok(kind),
        Some(version) => Err(Issue::error(
            "apiVersion",
            format!(
                "{kind} is `apiVersion: {}`, not `{version}`",
                kind.api_version()
            ),
        )),
        None => Err(Issue::error_at_key(
            "kind",
            format!("missing `apiVersion: {}`", kind.api_version()),
        )),
    }
}

/// The key a document declares, read from the tree.
fn declared_key(kind: Kind, root: &Node) -> Option<ObjectKey> {
    let metadata = &root.get("metadata")?.value;
    let name = metadata.get_str("name")?;
    let namespace = match kind {
        Kind::Pod | Kind::ConfigMap | Kind::Secret => {
            metadata.get_str("namespace").unwrap_or("default")
        }
        Kind::Image | Kind::Registry => "",
    };
    Some(ObjectKey::new(kind, namespace, name))
}

/// Makes relative host paths in an object absolute against the manifest
/// file's directory, as containerd does for hosts.toml.
pub(crate) fn resolve_relative_paths(object: Object, file: &Path) -> Object {
    let base = file.parent().unwrap_or(Path::new(""));
    let resolve = |p: &mut String| {
        if !p.is_empty() && Path::new(p.as_str()).is_relative() {
            *p = base.join(p.as_str()).to_string_lossy().into_owned();
        }
    };
    match object {
        Object::Image(mut image) => {
            if let Some(source) = &mut image.spec.source {
                resolve(source);
            }
            Object::Image(image)
        }
        Object::Registry(mut registry) => {
            let spec = &mut registry.spec;
            for host in spec.server.iter_mut().chain(spec.hosts.iter_mut()) {
                host.ca.iter_mut().for_each(resolve);
                for client in &mut host.client {
                    resolve(&mut client.cert);
                    if let Some(key) = &mut client.key {
                        resolve(key);
                    }
                }
            }
            Object::Registry(registry)
        }
        other => other,
    }
}

#[cfg(test)]
mod secret_value_tests {
    use super::*;

    #[test]
    fn a_type_error_in_a_secret_never_quotes_its_value() {
        for body in [
            "stringData:\n  pin: 987654\n",
            "stringData: PLANTED-x\n",
            "data:\n  key: [PLANTED-x]\n",
        ] {
            let text = format!("apiVersion: v1\nkind: Secret\nmetadata:\n  name: s\n{body}");
            let parsed = parse_file(std::path::Path::new("s.yaml"), text.as_bytes());
            let messages: Vec<String> = parsed
                .documents
                .iter()
                .flat_map(|d| &d.diagnostics)
                .chain(&parsed.diagnostics)
                .map(|d| d.to_string())
                .collect();
            assert!(!messages.is_empty(), "{body}: an error is reported");
            for message in &messages {
                assert!(
                    !message.contains("987654") && !message.contains("PLANTED"),
                    "{message}"
                );
            }
        }
    }
}
