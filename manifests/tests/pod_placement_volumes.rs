//! downwardAPI and projected volumes, nodeName, nodeSelector and node
//! affinity: what validates and what is refused, with positions.

use std::path::Path;

use manifests::parse_file;

fn diagnostics(text: &str) -> Vec<String> {
    parse_file(Path::new("p.yaml"), text.as_bytes())
        .all_diagnostics()
        .map(ToString::to_string)
        .collect()
}

#[test]
fn downward_api_projected_and_placement_validate_without_warnings() {
    let pod = "\
apiVersion: v1
kind: Pod
metadata: {name: web, labels: {app: web}}
spec:
  nodeName: edge-1
  nodeSelector: {disk: ssd}
  affinity:
    nodeAffinity:
      requiredDuringSchedulingIgnoredDuringExecution:
        nodeSelectorTerms:
          - matchExpressions:
              - {key: zone, operator: In, values: [eu-1]}
              - {key: cores, operator: Gt, values: ['4']}
              - {key: gpu, operator: DoesNotExist}
  containers:
    - name: web
      image: nginx
      volumeMounts: [{name: info, mountPath: /info}, {name: all, mountPath: /all}]
  volumes:
    - name: info
      downwardAPI:
        defaultMode: 0o444
        items:
          - {path: labels, fieldRef: {fieldPath: metadata.labels}}
          - {path: cpu, resourceFieldRef: {containerName: web, resource: limits.cpu, divisor: 1m}}
    - name: all
      projected:
        sources:
          - configMap: {name: cfg, items: [{key: a, path: a.conf}]}
          - secret: {name: tls}
          - downwardAPI: {items: [{path: name, fieldRef: {fieldPath: metadata.name}}]}
";
    assert_eq!(diagnostics(pod), Vec::<String>::new());
}

#[test]
fn what_a_node_cannot_fill_is_refused_with_the_reason() {
    let pod = "\
apiVersion: v1
kind: Pod
metadata: {name: web}
spec:
  affinity:
    nodeAffinity:
      requiredDuringSchedulingIgnoredDuringExecution:
        nodeSelectorTerms:
          - matchExpressions:
              - {key: cores, operator: Gt, values: [many]}
              - {key: zone, operator: In}
  containers:
    - name: web
      image: nginx
  volumes:
    - name: info
      downwardAPI:
        items:
          - {path: ip, fieldRef: {fieldPath: status.podIP}}
          - {path: mem, resourceFieldRef: {resource: limits.memory}}
    - name: all
      projected:
        sources:
          - serviceAccountToken: {path: token}
          - downwardAPI: {items: [{path: ip, fieldRef: {fieldPath: metadata.name}}]}
          - configMap: {name: cfg, items: [{key: a, path: ip}]}
";
    let found = diagnostics(pod);
    let expected = [
        "operator Gt needs an integer, not `many`",
        "operator In needs at least one value",
        "fieldPath `status.podIP` is not supported in a downwardAPI volume",
        "resourceFieldRef in a volume needs containerName",
        "serviceAccountToken cannot be projected: berth has no API server",
        "path `ip` is already written by spec.volumes[1].projected.sources[1].downwardAPI.items[0].path",
    ];
    for needle in expected {
        assert!(
            found
                .iter()
                .any(|d| d.contains("error") && d.contains(needle)),
            "{needle:?} in {found:#?}"
        );
    }
    assert_eq!(found.len(), expected.len(), "{found:#?}");
}
