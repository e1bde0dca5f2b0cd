//! The same object defined twice.

use std::collections::HashMap;
use std::path::Path;

use crate::diag::{Diagnostic, Severity};
use crate::object::ObjectKey;
use crate::parse::ParsedFile;

/// Finds objects defined more than once across `files` (and within one
/// file). The order of `files` decides who wins: the first definition keeps
/// the object, and both the first and every later definition get an error
/// naming the other's file and line. Only documents that produced an object
/// take part (a broken document defines nothing).
///
/// The agent passes its files in its own precedence order (e.g. sorted by
/// path); `berth validate` passes them in the order it found them.
pub fn find_conflicts<'a>(files: impl IntoIterator<Item = &'a ParsedFile>) -> Vec<Diagnostic> {
    struct Definition<'a> {
        file: &'a Path,
        line: usize,
        column: usize,
    }
    let mut first: HashMap<ObjectKey, Definition<'a>> = HashMap::new();
    let mut out = Vec::new();
    for file in files {
        for document in &file.documents {
            let Some(object) = &document.object else {
                continue;
            };
            let key = object.key();
            let here = Definition {
                file: &file.path,
                line: document.line,
                column: document.column,
            };
            match first.get(&key) {
                None => {
                    first.insert(key, here);
                }
                Some(winner) => {
                    out.push(conflict(
                        &here,
                        format!(
                            "{key} is already defined at {}:{}; this definition is ignored until one of them is removed",
                            winner.file.display(),
                            winner.line
                        ),
                    ));
                    out.push(conflict(
                        winner,
                        format!(
                            "{key} is defined again at {}:{}; this definition (the first) is used",
                            here.file.display(),
                            here.line
                        ),
                    ));
                }
            }
        }
    }

    fn conflict(at: &Definition<'_>, message: String) -> Diagnostic {
        Diagnostic {
            file: at.file.to_owned(),
            line: at.line,
            column: at.column,
            severity: Severity::Error,
            field: None,
            message,
        }
    }
    out
}
