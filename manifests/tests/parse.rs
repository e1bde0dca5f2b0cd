//! parse_file on small inline manifests: positions, kinds, warnings.

use std::path::Path;

use manifests::{Kind, Object, Severity, parse_file};

fn diagnostics(name: &str, text: &str) -> Vec<String> {
    parse_file(Path::new(name), text.as_bytes())
        .all_diagnostics()
        .map(ToString::to_string)
        .collect()
}

const POD: &str = "\
apiVersion: v1
kind: Pod
metadata:
  name: web
spec:
  containers:
    - name: web
      image: nginx
";

#[test]
fn a_valid_pod_parses_without_diagnostics() {
    let parsed = parse_file(Path::new("web.yaml"), POD.as_bytes());
    assert_eq!(parsed.all_diagnostics().count(), 0, "{parsed:#?}");
    let objects: Vec<&Object> = parsed.objects().collect();
    assert_eq!(objects.len(), 1);
    assert_eq!(objects[0].key().to_string(), "Pod/default/web");
    assert_eq!(parsed.documents[0].line, 1);
}

#[test]
fn every_document_reports_its_own_problems_with_positions() {
    let text = format!(
        "{POD}      imagePulPolicy: Always\n      ports:\n        - containerPort: abc\n---\n{POD}  activeDeadlineSeconds: 5\n---\nkind: [\n---\n{POD}"
    );
    assert_eq!(
        diagnostics("x.yaml", &text),
        [
            "x.yaml:9:7: error: unknown field `imagePulPolicy` in `spec.containers[0]`; did you mean `imagePullPolicy`?",
            "x.yaml:11:26: error: `spec.containers[0].ports[0].containerPort`: expected a whole number (in range) (found `abc`)",
            "x.yaml:21:3: warning: `spec.activeDeadlineSeconds` is a Kubernetes field that berth ignores: not implemented: the pod is not stopped when its deadline passes",
            "x.yaml:23:7: error: unclosed bracket '['",
        ][..],
        "{text}"
    );
    let parsed = parse_file(Path::new("x.yaml"), text.as_bytes());
    let starts: Vec<usize> = parsed.documents.iter().map(|d| d.line).collect();
    assert_eq!(starts, [1, 13, 23, 25]);
    assert!(
        parsed.documents[2].has_errors(),
        "the syntax error is reported"
    );
    assert_eq!(parsed.objects().count(), 2, "documents 2 and 4 are valid");
    assert_eq!(
        parsed.documents[0]
            .key
            .as_ref()
            .map(ToString::to_string)
            .as_deref(),
        Some("Pod/default/web")
    );
    assert!(parsed.objects().all(|o| o.kind() == Kind::Pod));
    let severities: Vec<Severity> = parsed.all_diagnostics().map(|d| d.severity).collect();
    assert!(severities.contains(&Severity::Warning));
}

#[test]
fn json_manifests_with_tabs_parse() {
    let json = "{\n\t\"apiVersion\": \"v1\",\n\t\"kind\": \"ConfigMap\",\n\t\"metadata\": {\"name\": \"c\"},\n\t\"data\": {\"a\": \"1\"}\n}\n";
    let parsed = parse_file(Path::new("c.json"), json.as_bytes());
    assert!(!parsed.has_errors(), "{:?}", parsed.diagnostics);
    assert_eq!(parsed.objects().count(), 1);
}

#[test]
fn windows_line_endings_and_a_byte_order_mark_are_fine() {
    let text = format!("\u{feff}{}", POD.replace('\n', "\r\n"));
    let text = format!(
        "{text}---\r\n{}      imagePulPolicy: Always\r\n",
        POD.replace('\n', "\r\n")
    );
    assert_eq!(
        diagnostics("crlf.yaml", &text),
        [
            "crlf.yaml:18:7: error: unknown field `imagePulPolicy` in `spec.containers[0]`; did you mean `imagePullPolicy`?"
        ]
    );
    let parsed = parse_file(Path::new("crlf.yaml"), text.as_bytes());
    assert_eq!(parsed.objects().count(), 1);
    assert_eq!(parsed.documents[1].line, 10);
}

#[test]
fn comment_only_and_empty_documents_are_skipped() {
    let text = format!("# nothing here\n---\n---\n{POD}---\n# trailing comment\n");
    let parsed = parse_file(Path::new("c.yaml"), text.as_bytes());
    assert_eq!(parsed.documents.len(), 1);
    assert_eq!(parsed.documents[0].line, 4);
    assert!(!parsed.has_errors());
    assert!(
        parse_file(Path::new("empty.yaml"), b"")
            .documents
            .is_empty()
    );
}
