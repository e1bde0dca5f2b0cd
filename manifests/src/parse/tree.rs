//! A position-annotated view of one YAML document: every mapping key and every
//! value with its line and column. The typed objects carry no positions, so
//! unknown-field checks and semantic validation find their line:column here,
//! by field path.

use std::fmt;

use serde::Deserialize;
use serde::de::{self, Deserializer, MapAccess, SeqAccess, Visitor};
use serde_saphyr::Spanned;

/// 1-based line and column; `(0, 0)` when unknown.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct Pos {
    pub line: usize,
    pub column: usize,
}

impl Pos {
    fn from_location(loc: &serde_saphyr::Location) -> Self {
        Self {
            line: usize::try_from(loc.line()).unwrap_or(usize::MAX),
            column: usize::try_from(loc.column()).unwrap_or(usize::MAX),
        }
    }
}

#[derive(Debug, Clone, PartialEq)]
pub enum Scalar {
    Null,
    Bool(bool),
    Int(i128),
    Float(f64),
    Str(String),
}

impl fmt::Display for Scalar {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Scalar::Null => f.write_str("null"),
            Scalar::Bool(b) => write!(f, "{b}"),
            Scalar::Int(i) => write!(f, "{i}"),
            Scalar::Float(x) => write!(f, "{x:?}"),

            Scalar::Str(s) => f.write_str(s),
        }
    }
}

#[derive(Debug, Clone, PartialEq)]
pub enum Value {
    Scalar(Scalar),
    Seq(Vec<Node>),
    Map(Vec<Entry>),
}

/// One node of the document and where it starts.
#[derive(Debug, Clone, PartialEq)]
pub struct Node {
    pub pos: Pos,
    pub value: Value,
}

/// One mapping entry: the key's text and position, and its value.
#[derive(Debug, Clone, PartialEq)]
pub struct Entry {
    pub key: String,
    pub key_pos: Pos,
    pub value: Node,
}

impl Node {
    /// The entry named `key` when this node is a mapping.
    pub fn get(&self, key: &str) -> Option<&Entry> {
        match &self.value {
            Value::Map(entries) => entries.iter().find(|e| e.key == key),
            _ => None,
        }
    }

    /// The string value of `key` when this node is a mapping holding a scalar there.
    pub fn get_str(&self, key: &str) -> Option<&str> {
        match &self.get(key)?.value.value {
            Value::Scalar(Scalar::Str(s)) => Some(s),
            _ => None,
        }
    }

    /// Shifts every position down by `lines` (a document sliced out of a file).
    pub fn offset_lines(&mut self, lines: usize) {
        self.pos.line += lines;
        match &mut self.value {
            Value::Scalar(_) => {}
            Value::Seq(items) => items.iter_mut().for_each(|n| n.offset_lines(lines)),
            Value::Map(entries) => {
                for entry in entries {
                    entry.key_pos.line += lines;
                    entry.value.offset_lines(lines);
                }
            }
        }
    }

    /// Finds the key position (for a field) or value position (for an item)
    /// named by a dotted path such as `spec.containers[1].image`. Returns the
    /// deepest position reached, so a path into a missing field still points
    /// at its nearest existing parent.
    pub fn locate(&self, path: &str, want_key: bool) -> Pos {
        let mut node = self;
        let mut pos = self.pos;
        for segment in split_path(path) {
            match segment {
                Segment::Key(key) => match node.get(key) {
                    Some(entry) => {
                        pos = if want_key {
                            entry.key_pos
                        } else {
                            entry.value.pos
                        };
                        node = &entry.value;
                    }
                    None => return pos,
                },
                Segment::Index(index) => match &node.value {
                    Value::Seq(items) if index < items.len() => {
                        node = &items[index];
                        pos = node.pos;
                    }
                    _ => return pos,
                },
            }
        }
        pos
    }
}

impl Node {
    /// The path and node of the value that starts at `pos` (the deepest one),
    /// for naming the field a type error is about.
    pub fn find_at(&self, pos: Pos) -> Option<(String, &Node)> {
        let mut found = None;
        self.find_at_inner(pos, String::new(), &mut found);
        found
    }

    /// The path of the mapping that a "missing field" error at `pos` is
    /// about: a mapping starting there, or the mapping holding a key there.
    pub fn mapping_at(&self, pos: Pos) -> Option<String> {
        let mut found = None;
        self.mapping_at_inner(pos, String::new(), &mut found);
        found
    }

    fn mapping_at_inner(&self, pos: Pos, path: String, found: &mut Option<String>) {
        match &self.value {
            Value::Scalar(_) => {}
            Value::Seq(items) => {
                for (i, item) in items.iter().enumerate() {
                    item.mapping_at_inner(pos, format!("{path}[{i}]"), found);
                }
            }
            Value::Map(entries) => {
                if self.pos == pos || entries.iter().any(|e| e.key_pos == pos) {
                    *found = Some(path.clone());
                }
                for entry in entries {
                    entry
                        .value
                        .mapping_at_inner(pos, join_key(&path, &entry.key), found);
                }
            }
        }
    }

    fn find_at_inner<'a>(&'a self, pos: Pos, path: String, found: &mut Option<(String, &'a Node)>) {
        if self.pos == pos {
            *found = Some((path.clone(), self));
        }
        match &self.value {
            Value::Scalar(_) => {}
            Value::Seq(items) => {
                for (i, item) in items.iter().enumerate() {
                    item.find_at_inner(pos, format!("{path}[{i}]"), found);
                }
            }
            Value::Map(entries) => {
                for entry in entries {
                    let child = join_key(&path, &entry.key);
                    if entry.key_pos == pos {
                        *found = Some((child.clone(), &entry.value));
                    }
                    entry.value.find_at_inner(pos, child, found);
                }
            }
        }
    }
}

/// One step of a field path.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Segment<'a> {
    Key(&'a str),
    Index(usize),
}

/// Splits `a.b[2].c` into `a`, `b`, `2`, `c`. Map keys containing dots are
/// written in brackets with quotes: `data["index.html"]`.
pub fn split_path(path: &str) -> Vec<Segment<'_>> {
    let mut out = Vec::new();
    let mut rest = path;
    while !rest.is_empty() {
        if let Some(after) = rest.strip_prefix("[\"") {
            let end = after.find("\"]").unwrap_or(after.len());
            out.push(Segment::Key(&after[..end]));
            rest = after.get(end + 2..).unwrap_or("");
        } else if let Some(after) = rest.strip_prefix('[') {
            let end = after.find(']').unwrap_or(after.len());
            if let Ok(index) = after[..end].parse() {
                out.push(Segment::Index(index));
            }
            rest = after.get(end + 1..).unwrap_or("");
        } else {
            let rest_trimmed = rest.strip_prefix('.').unwrap_or(rest);
            let end = rest_trimmed.find(['.', '[']).unwrap_or(rest_trimmed.len());
            if end > 0 {
                out.push(Segment::Key(&rest_trimmed[..end]));
            }
            rest = &rest_trimmed[end..];
            if end == 0 && !rest.starts_with('[') {
                // A stray dot; skip it so malformed paths still terminate.
                rest = rest.get(1..).unwrap_or("");
            }
        }
    }
    out
}

/// Appends a map key to a path, quoting keys that a dotted path cannot hold.
pub fn join_key(path: &str, key: &str) -> String {
    let plain = !key.is_empty()
        && key
            .chars()
            .all(|c| c.is_ascii_alphanumeric() || c == '_' || c == '-');
    match (path.is_empty(), plain) {
        (true, true) => key.to_owned(),
        (false, true) => format!("{path}.{key}"),
        (_, false) => format!("{path}[\"{key}\"]"),
    }
}

// ---- Deserialization from serde-saphyr, positions via `Spanned`. ----

struct RawValue(Value);

impl<'de> Deserialize<'de> for Node {
    fn deserialize<D: Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        let spanned = Spanned::<RawValue>::deserialize(deserializer)?;
        Ok(Node {
            pos: Pos::from_location(&spanned.referenced),
            value: spanned.value.0,
        })
    }
}

impl<'de> Deserialize<'de> for RawValue {
    fn deserialize<D: Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        deserializer.deserialize_any(ValueVisitor).map(RawValue)
    }
}

struct ValueVisitor;

impl<'de> Visitor<'de> for ValueVisitor {
    type Value = Value;

    fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("any YAML value")
    }
    fn visit_bool<E: de::Error>(self, v: bool) -> Result<Value, E> {
        Ok(Value::Scalar(Scalar::Bool(v)))
    }
    fn visit_i64<E: de::Error>(self, v: i64) -> Result<Value, E> {
        Ok(Value::Scalar(Scalar::Int(v.into())))
    }
    fn visit_u64<E: de::Error>(self, v: u64) -> Result<Value, E> {
        Ok(Value::Scalar(Scalar::Int(v.into())))
    }
    fn visit_i128<E: de::Error>(self, v: i128) -> Result<Value, E> {
        Ok(Value::Scalar(Scalar::Int(v)))
    }
    fn visit_u128<E: de::Error>(self, v: u128) -> Result<Value, E> {
        Ok(Value::Scalar(
            i128::try_from(v).map_or(Scalar::Float(v as f64), Scalar::Int),
        ))
    }
    fn visit_f64<E: de::Error>(self, v: f64) -> Result<Value, E> {
        Ok(Value::Scalar(Scalar::Float(v)))
    }
    fn visit_str<E: de::Error>(self, v: &str) -> Result<Value, E> {
        Ok(Value::Scalar(Scalar::Str(v.to_owned())))
    }
    fn visit_string<E: de::Error>(self, v: String) -> Result<Value, E> {
        Ok(Value::Scalar(Scalar::Str(v)))
    }
    fn visit_bytes<E: de::Error>(self, v: &[u8]) -> Result<Value, E> {
        Ok(Value::Scalar(Scalar::Str(
            String::from_utf8_lossy(v).into_owned(),
        )))
    }
    fn visit_unit<E: de::Error>(self) -> Result<Value, E> {
        Ok(Value::Scalar(Scalar::Null))
    }
    fn visit_none<E: de::Error>(self) -> Result<Value, E> {
        Ok(Value::Scalar(Scalar::Null))
    }
    fn visit_some<D: Deserializer<'de>>(self, d: D) -> Result<Value, D::Error> {
        d.deserialize_any(ValueVisitor)
    }
    fn visit_seq<A: SeqAccess<'de>>(self, mut seq: A) -> Result<Value, A::Error> {
        let mut items = Vec::new();
        while let Some(node) = seq.next_element::<Node>()? {
            items.push(node);
        }
        Ok(Value::Seq(items))
    }
    fn visit_map<A: MapAccess<'de>>(self, mut map: A) -> Result<Value, A::Error> {
        let mut entries = Vec::new();
        while let Some(key) = map.next_key::<Node>()? {
            let Value::Scalar(scalar) = key.value else {
                return Err(de::Error::custom(
                    "a mapping key must be a plain value, not a list or mapping",
                ));
            };
            let value = map.next_value::<Node>()?;
            entries.push(Entry {
                key: scalar.to_string(),
                key_pos: key.pos,
                value,
            });
        }
        Ok(Value::Map(entries))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn parse(text: &str) -> Node {
        serde_saphyr::from_str_with_options(text, serde_saphyr::options! { strict_booleans: true })
            .expect("test YAML parses")
    }

    #[test]
    fn positions_of_keys_and_values() {
        let node = parse("a: 1\nspec:\n  containers:\n    - name: x\n      image: nginx\n");
        assert_eq!(
            node.locate("spec.containers[0].image", true),
            Pos { line: 5, column: 7 }
        );
        assert_eq!(
            node.locate("spec.containers[0].image", false),
            Pos {
                line: 5,
                column: 14
            }
        );
        assert_eq!(
            node.locate("spec.containers[0]", false),
            Pos { line: 4, column: 7 }
        );
        // A missing field points at its nearest parent.
        assert_eq!(
            node.locate("spec.containers[0].ports[2]", true),
            Pos { line: 4, column: 7 }
        );
    }

    #[test]
    fn strict_booleans_keep_no_as_a_string() {
        let node = parse("country: no\nflag: true\n");
        assert_eq!(node.get_str("country"), Some("no"));
        assert_eq!(
            node.get("flag").map(|e| &e.value.value),
            Some(&Value::Scalar(Scalar::Bool(true)))
        );
    }

    #[test]
    fn paths_split_and_join() {
        assert_eq!(
            split_path("data[\"index.html\"]"),
            vec![Segment::Key("data"), Segment::Key("index.html")]
        );
        assert_eq!(
            split_path("spec.containers[10].ports[0].name"),
            vec![
                Segment::Key("spec"),
                Segment::Key("containers"),
                Segment::Index(10),
                Segment::Key("ports"),
                Segment::Index(0),
                Segment::Key("name")
            ]
        );
        assert_eq!(join_key("data", "index.html"), "data[\"index.html\"]");
        assert_eq!(join_key("", "spec"), "spec");
    }
}
