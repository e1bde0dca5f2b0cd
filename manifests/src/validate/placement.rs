//! `nodeName`, `nodeSelector` and required node affinity: what the API
//! server would reject (berth evaluates them against its node's labels).

use super::Issues;
use crate::names;
use crate::parse::tree::join_key;
use crate::types::{NodeSelectorOperator, NodeSelectorRequirement, PodSpec};

pub(super) fn validate(spec: &PodSpec, issues: &mut Issues) {
    if let Some(node_name) = &spec.node_name {
        issues.check(
            "spec.nodeName",
            "nodeName",
            node_name,
            names::dns1123_subdomain,
        );
    }
    for (key, value) in &spec.node_selector {
        let at = join_key("spec.nodeSelector", key);
        if let Err(why) = names::qualified_name(key) {
            issues.error_at_key(&at, format!("label key `{key}` is not valid: {why}"));
        }
        if let Err(why) = names::label_value(value) {
            issues.error(&at, format!("label value `{value}` is not valid: {why}"));
        }
    }
    let Some(required) = spec.required_node_affinity() else {
        return;
    };
    let at = "spec.affinity.nodeAffinity.requiredDuringSchedulingIgnoredDuringExecution";
    if required.node_selector_terms.is_empty() {
        issues.error_at_key(at, "nodeSelectorTerms must not be empty");
    }
    for (i, term) in required.node_selector_terms.iter().enumerate() {
        let term_at = format!("{at}.nodeSelectorTerms[{i}]");
        for (j, requirement) in term.match_expressions.iter().enumerate() {
            let req_at = format!("{term_at}.matchExpressions[{j}]");
            if let Err(why) = names::qualified_name(&requirement.key) {
                issues.error(
                    format!("{req_at}.key"),
                    format!("label key `{}` is not valid: {why}", requirement.key),
                );
            }
            values(&req_at, requirement, issues);
        }
        for (j, requirement) in term.match_fields.iter().enumerate() {
            let req_at = format!("{term_at}.matchFields[{j}]");
            if requirement.key != "metadata.name" {
                issues.error(
                    format!("{req_at}.key"),
                    format!(
                        "matchFields key `{}` is not supported: use metadata.name",
                        requirement.key
                    ),
                );
            }
            if !matches!(
                requirement.operator,
                NodeSelectorOperator::In | NodeSelectorOperator::NotIn
            ) || requirement.values.len() != 1
            {
                issues.error_at_key(
                    &req_at,
                    "matchFields needs operator In or NotIn with exactly one value",
                );
            }
        }
    }
}

/// The values an operator needs (Kubernetes' rules).
fn values(at: &str, requirement: &NodeSelectorRequirement, issues: &mut Issues) {
    let op = requirement.operator;
    let n = requirement.values.len();
    match op {
        NodeSelectorOperator::In | NodeSelectorOperator::NotIn if n == 0 => {
            issues.error_at_key(at, format!("operator {op} needs at least one value"));
        }
        NodeSelectorOperator::Exists | NodeSelectorOperator::DoesNotExist if n != 0 => {
            issues.error(
                format!("{at}.values"),
                format!("operator {op} takes no values"),
            );
        }
        NodeSelectorOperator::Gt | NodeSelectorOperator::Lt => {
            if n != 1 {
                issues.error_at_key(at, format!("operator {op} needs exactly one value"));
            } else if requirement.values[0].parse::<i64>().is_err() {
                issues.error(
                    format!("{at}.values[0]"),
                    format!(
                        "operator {op} needs an integer, not `{}`",
                        requirement.values[0]
                    ),
                );
            }
        }
        _ => {}
    }
}
