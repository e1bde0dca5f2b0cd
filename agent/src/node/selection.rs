//! Whether this node runs a pod: a pure function of the node's name and
//! labels and the pod's `nodeName`, `nodeSelector` and
//! `affinity.nodeAffinity.requiredDuringSchedulingIgnoredDuringExecution`,
//! with the scheduler's semantics (every nodeSelector entry must match;
//! the affinity's terms are ORed, each term's requirements ANDed).

use std::collections::BTreeMap;

use manifests::types::{NodeSelectorOperator, NodeSelectorRequirement, NodeSelectorTerm, PodSpec};

#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Selection {
    Selected,
    /// Why not, as the pod's status says it after `NotSelected: `.
    NotSelected(String),
}

pub fn select(node_name: &str, labels: &BTreeMap<String, String>, spec: &PodSpec) -> Selection {
    if let Some(wanted) = spec.node_name.as_deref()
        && !wanted.is_empty()
        && wanted != node_name
    {
        return Selection::NotSelected(format!(
            "spec.nodeName is {wanted}, this node is {node_name}"
        ));
    }
    let unmatched: Vec<String> = spec
        .node_selector
        .iter()
        .filter(|(key, value)| labels.get(*key) != Some(*value))
        .map(|(key, value)| format!("{key}={value}"))
        .collect();
    if !unmatched.is_empty() {
        return Selection::NotSelected(format!(
            "node labels do not match nodeSelector {}",
            unmatched.join(",")
        ));
    }
    let Some(required) = spec.required_node_affinity() else {
        return Selection::Selected;
    };
    let mut why = Vec::new();
    for (i, term) in required.node_selector_terms.iter().enumerate() {
        match term_mismatch(node_name, labels, term) {
            None => return Selection::Selected,
            Some(first) => why.push(format!("term {i}: {first}")),
        }
    }
    Selection::NotSelected(format!(
        "node labels do not match nodeAffinity required terms ({})",
        why.join("; ")
    ))
}

/// The first requirement of `term` this node fails, if any. A term with
/// no requirement matches no node (as in Kubernetes).
fn term_mismatch(
    node_name: &str,
    labels: &BTreeMap<String, String>,
    term: &NodeSelectorTerm,
) -> Option<String> {
    if term.match_expressions.is_empty() && term.match_fields.is_empty() {
        return Some("no requirements".to_string());
    }
    let node_fields = BTreeMap::from([("metadata.name".to_string(), node_name.to_string())]);
    term.match_expressions
        .iter()
        .map(|r| (r, labels))
        .chain(term.match_fields.iter().map(|r| (r, &node_fields)))
        .find(|(requirement, values)| !matches(requirement, values))
        .map(|(requirement, _)| describe(requirement))
}

fn matches(requirement: &NodeSelectorRequirement, labels: &BTreeMap<String, String>) -> bool {
    let value = labels.get(&requirement.key);
    let number = |text: &str| text.parse::<i64>().ok();
    let compare = |want: fn(i64, i64) -> bool| match (
        value.and_then(|v| number(v)),
        requirement.values.first().and_then(|v| number(v)),
    ) {
        (Some(have), Some(bound)) if requirement.values.len() == 1 => want(have, bound),
        _ => false,
    };
    match requirement.operator {
        NodeSelectorOperator::In => value.is_some_and(|v| requirement.values.contains(v)),
        NodeSelectorOperator::NotIn => !value.is_some_and(|v| requirement.values.contains(v)),
        NodeSelectorOperator::Exists => value.is_some(),
        NodeSelectorOperator::DoesNotExist => value.is_none(),
        NodeSelectorOperator::Gt => compare(|have, bound| have > bound),
        NodeSelectorOperator::Lt => compare(|have, bound| have < bound),
    }
}

fn describe(requirement: &NodeSelectorRequirement) -> String {
    let key = &requirement.key;
    let op = requirement.operator;
    match op {
        NodeSelectorOperator::Exists | NodeSelectorOperator::DoesNotExist => format!("{key} {op}"),
        _ => format!("{key} {op} [{}]", requirement.values.join(",")),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn spec(json: serde_json::Value) -> PodSpec {
        let mut full = serde_json::json!({"containers": [{"name": "c", "image": "x"}]});
        full.as_object_mut()
            .expect("an object")
            .extend(json.as_object().expect("an object").clone());
        serde_json::from_value(full).expect("a pod spec")
    }

    fn affinity(expressions: serde_json::Value) -> serde_json::Value {
        serde_json::json!({"affinity": {"nodeAffinity": {"requiredDuringSchedulingIgnoredDuringExecution": {
            "nodeSelectorTerms": [{"matchExpressions": expressions}]
        }}}})
    }

    #[test]
    fn selection_table() {
        let labels = BTreeMap::from([
            ("disk".to_string(), "ssd".to_string()),
            ("zone".to_string(), "eu-1".to_string()),
            ("cores".to_string(), "8".to_string()),
        ]);
        let selected = |json: serde_json::Value| select("edge-1", &labels, &spec(json));
        let no = |why: &str| Selection::NotSelected(why.to_string());
        let table: Vec<(&str, serde_json::Value, Selection)> = vec![
            ("nothing asked", serde_json::json!({}), Selection::Selected),
            (
                "nodeName matches",
                serde_json::json!({"nodeName": "edge-1"}),
                Selection::Selected,
            ),
            (
                "nodeName differs",
                serde_json::json!({"nodeName": "edge-2"}),
                no("spec.nodeName is edge-2, this node is edge-1"),
            ),
            (
                "nodeSelector matches",
                serde_json::json!({"nodeSelector": {"disk": "ssd"}}),
                Selection::Selected,
            ),
            (
                "nodeSelector value differs",
                serde_json::json!({"nodeSelector": {"disk": "hdd", "zone": "eu-1"}}),
                no("node labels do not match nodeSelector disk=hdd"),
            ),
            (
                "nodeSelector label missing",
                serde_json::json!({"nodeSelector": {"foo": "bar"}}),
                no("node labels do not match nodeSelector foo=bar"),
            ),
            (
                "In",
                affinity(
                    serde_json::json!([{"key": "zone", "operator": "In", "values": ["eu-1", "eu-2"]}]),
                ),
                Selection::Selected,
            ),
            (
                "In, another value",
                affinity(
                    serde_json::json!([{"key": "zone", "operator": "In", "values": ["us-1"]}]),
                ),
                no("node labels do not match nodeAffinity required terms (term 0: zone In [us-1])"),
            ),
            (
                "NotIn",
                affinity(
                    serde_json::json!([{"key": "zone", "operator": "NotIn", "values": ["us-1"]}]),
                ),
                Selection::Selected,
            ),
            (
                "NotIn, label missing",
                affinity(serde_json::json!([{"key": "gpu", "operator": "NotIn", "values": ["a"]}])),
                Selection::Selected,
            ),
            (
                "NotIn, the value",
                affinity(
                    serde_json::json!([{"key": "zone", "operator": "NotIn", "values": ["eu-1"]}]),
                ),
                no(
                    "node labels do not match nodeAffinity required terms (term 0: zone NotIn [eu-1])",
                ),
            ),
            (
                "Exists",
                affinity(serde_json::json!([{"key": "disk", "operator": "Exists"}])),
                Selection::Selected,
            ),
            (
                "Exists, missing",
                affinity(serde_json::json!([{"key": "gpu", "operator": "Exists"}])),
                no("node labels do not match nodeAffinity required terms (term 0: gpu Exists)"),
            ),
            (
                "DoesNotExist",
                affinity(serde_json::json!([{"key": "gpu", "operator": "DoesNotExist"}])),
                Selection::Selected,
            ),
            (
                "DoesNotExist, present",
                affinity(serde_json::json!([{"key": "disk", "operator": "DoesNotExist"}])),
                no(
                    "node labels do not match nodeAffinity required terms (term 0: disk DoesNotExist)",
                ),
            ),
            (
                "Gt",
                affinity(serde_json::json!([{"key": "cores", "operator": "Gt", "values": ["4"]}])),
                Selection::Selected,
            ),
            (
                "Gt, equal",
                affinity(serde_json::json!([{"key": "cores", "operator": "Gt", "values": ["8"]}])),
                no("node labels do not match nodeAffinity required terms (term 0: cores Gt [8])"),
            ),
            (
                "Lt",
                affinity(serde_json::json!([{"key": "cores", "operator": "Lt", "values": ["16"]}])),
                Selection::Selected,
            ),
            (
                "Lt on a label that is not a number",
                affinity(serde_json::json!([{"key": "zone", "operator": "Lt", "values": ["16"]}])),
                no("node labels do not match nodeAffinity required terms (term 0: zone Lt [16])"),
            ),
            (
                "requirements of a term are ANDed",
                affinity(serde_json::json!([
                    {"key": "disk", "operator": "In", "values": ["ssd"]},
                    {"key": "zone", "operator": "In", "values": ["us-1"]}
                ])),
                no("node labels do not match nodeAffinity required terms (term 0: zone In [us-1])"),
            ),
            (
                "terms are ORed",
                serde_json::json!({"affinity": {"nodeAffinity": {"requiredDuringSchedulingIgnoredDuringExecution": {
                    "nodeSelectorTerms": [
                        {"matchExpressions": [{"key": "gpu", "operator": "Exists"}]},
                        {"matchFields": [{"key": "metadata.name", "operator": "In", "values": ["edge-1"]}]}
                    ]
                }}}}),
                Selection::Selected,
            ),
            (
                "matchFields on another node's name",
                serde_json::json!({"affinity": {"nodeAffinity": {"requiredDuringSchedulingIgnoredDuringExecution": {
                    "nodeSelectorTerms": [{"matchFields": [{"key": "metadata.name", "operator": "In", "values": ["edge-2"]}]}]
                }}}}),
                no(
                    "node labels do not match nodeAffinity required terms (term 0: metadata.name In [edge-2])",
                ),
            ),
            (
                "an empty term matches nothing",
                serde_json::json!({"affinity": {"nodeAffinity": {"requiredDuringSchedulingIgnoredDuringExecution": {
                    "nodeSelectorTerms": [{}]
                }}}}),
                no(
                    "node labels do not match nodeAffinity required terms (term 0: no requirements)",
                ),
            ),
            (
                "preferred-only affinity selects",
                serde_json::json!({"affinity": {"nodeAffinity": {}}}),
                Selection::Selected,
            ),
        ];
        for (case, json, want) in table {
            assert_eq!(selected(json), want, "{case}");
        }
    }
}
