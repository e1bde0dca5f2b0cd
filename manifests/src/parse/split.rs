//! Splits a YAML stream into its documents by their `---` / `...` marker
//! lines, so each document is parsed on its own: a syntax error in one does
//! not hide the others, and budgets apply per document.
//!
//! YAML forbids a marker line inside any scalar (a `---` at column 0 always
//! ends the document, even in a block scalar), so splitting by lines is exact.

/// One document's text and the 0-based line it starts on in the file.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct DocumentText<'a> {
    pub first_line: usize,
    pub text: &'a str,
}

impl DocumentText<'_> {
    /// True when the document holds nothing but blank lines, comments,
    /// directives and markers.
    pub fn is_empty(&self) -> bool {
        self.text.lines().all(is_insignificant)
    }

    /// The 0-based file line of the document's first content line.
    pub fn content_line(&self) -> usize {
        self.first_line
            + self
                .text
                .lines()
                .position(|line| !is_insignificant(line))
                .unwrap_or(0)
    }
}

fn is_marker(line: &str, marker: &str) -> bool {
    line.strip_prefix(marker)
        .is_some_and(|rest| rest.is_empty() || rest.starts_with([' ', '\t', '\r']))
}

fn is_insignificant(line: &str) -> bool {
    let trimmed = line.trim();
    trimmed.is_empty()
        || trimmed.starts_with('#')
        || line.starts_with('%')
        || is_marker(line, "---") && trimmed == "---"
        || is_marker(line, "...")
}

pub fn split_documents(text: &str) -> Vec<DocumentText<'_>> {
    let mut documents = Vec::new();
    let mut start_offset = 0;
    let mut start_line = 0;
    let mut significant = false;
    let mut marker_seen = false;
    let mut offset = 0;
    for (line_number, line) in text.split_inclusive('\n').enumerate() {
        let content = line.trim_end_matches(['\n', '\r']);
        if is_marker(content, "---") && significant {
            // A new document starts here; the previous one ends before it.
            documents.push(DocumentText {
                first_line: start_line,
                text: &text[start_offset..offset],
            });
            start_offset = offset;
            start_line = line_number;
            significant = false;
        } else if is_marker(content, "---") && marker_seen {
            // `---` after an empty `---` document: the empty one is dropped.
            start_offset = offset;
            start_line = line_number;
        }
        if is_marker(content, "---") {
            marker_seen = true;
        }
        offset += line.len();
        if is_marker(content, "...") {
            // The end marker closes the document; what follows is the next.
            documents.push(DocumentText {
                first_line: start_line,
                text: &text[start_offset..offset],
            });
            start_offset = offset;
            start_line = line_number + 1;
            significant = false;
            marker_seen = false;
            continue;
        }
        if !is_insignificant(content) {
            significant = true;
        }
    }
    documents.push(DocumentText {
        first_line: start_line,
        text: &text[start_offset..],
    });
    documents.retain(|d| !d.is_empty());
    documents
}

#[cfg(test)]
mod tests {
    use super::*;

    fn starts(text: &str) -> Vec<usize> {
        split_documents(text).iter().map(|d| d.first_line).collect()
    }

    #[test]
    fn splits_at_markers() {
        assert_eq!(starts("a: 1\n---\nb: 2\n---\nc: 3\n"), [0, 1, 3]);
        assert_eq!(starts("---\na: 1\n---\nb: 2\n"), [0, 2]);
        assert_eq!(starts("# comment\n---\na: 1\n"), [0]);
        assert_eq!(starts("%YAML 1.2\n---\na: 1\n"), [0]);
        assert_eq!(starts("a: 1\n...\nb: 2\n"), [0, 2]);
        assert_eq!(starts("a: 1\n---\n---\nb: 2\n"), [0, 2]);
        assert_eq!(starts("a: |\n  ---x\n  text\n"), [0]);
        assert_eq!(starts("--- {a: 1}\n--- {b: 2}\n"), [0, 1]);
        assert_eq!(starts(""), Vec::<usize>::new());
        assert_eq!(starts("# only a comment\n---\n"), Vec::<usize>::new());
    }
}
