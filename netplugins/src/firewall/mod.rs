//! nftables: berth's own table per bridge network, applied through
//! `nft -j -f -` (the `nft` binary is a runtime dependency; [`check_nft`]
//! says so clearly at start), plus a look at other tables' forward chains,
//! whose drop policy would silently break pod traffic.

pub mod ruleset;

use std::process::Stdio;

use tokio::io::AsyncWriteExt;
use tokio::process::Command;

pub use ruleset::{FirewallSpec, RenderError, render};

const NFT: &str = "nft";

#[derive(Debug, thiserror::Error)]
pub enum FirewallError {
    /// The cause is in the message, before the hint, and so not a `source()`.
    #[error(
        "the `nft` program is needed for NAT and hostPorts but could not be run ({error}); install nftables (Debian: apt-get install nftables)"
    )]
    NftMissing { error: std::io::Error },
    #[error("`nft --version` failed: {stderr}")]
    NftBroken { stderr: String },
    #[error(transparent)]
    Render(#[from] RenderError),
    #[error("applying nftables table {table}: nft failed: {stderr}")]
    Apply { table: String, stderr: String },
    #[error("running nft for table {table}")]
    Spawn {
        table: String,
        source: std::io::Error,
    },
    #[error("listing nftables {what}: {detail}")]
    List { what: String, detail: String },
}

/// Fails with an installation hint unless `nft` runs.
pub async fn check_nft() -> Result<String, FirewallError> {
    let output = Command::new(NFT)
        .arg("--version")
        .stdin(Stdio::null())
        .output()
        .await
        .map_err(|error| FirewallError::NftMissing { error })?;
    if !output.status.success() {
        return Err(FirewallError::NftBroken {
            stderr: String::from_utf8_lossy(&output.stderr).trim().to_string(),
        });
    }
    Ok(String::from_utf8_lossy(&output.stdout).trim().to_string())
}

/// Makes the kernel's table exactly `spec` in one atomic transaction.
pub async fn apply(spec: &FirewallSpec) -> Result<(), FirewallError> {
    let batch = render(spec)?;
    let payload = serde_json::to_vec(&batch).expect("an nftables batch always serialises");
    let spawn_err = |source| FirewallError::Spawn {
        table: spec.table.clone(),
        source,
    };
    let mut child = Command::new(NFT)
        .args(["-j", "-f", "-"])
        .stdin(Stdio::piped())
        .stdout(Stdio::null())
        .stderr(Stdio::piped())
        .spawn()
        .map_err(spawn_err)?;
    if let Some(mut stdin) = child.stdin.take() {
        stdin.write_all(&payload).await.map_err(spawn_err)?;
    }
    let output = child.wait_with_output().await.map_err(spawn_err)?;
    if !output.status.success() {
        return Err(FirewallError::Apply {
            table: spec.table.clone(),
            stderr: String::from_utf8_lossy(&output.stderr).trim().to_string(),
        });
    }
    Ok(())
}

/// Runs `nft -j <args>` and parses its JSON output.
async fn list_json(args: &[&str]) -> Result<Option<serde_json::Value>, FirewallError> {
    let what = args.join(" ");
    let output = Command::new(NFT)
        .arg("-j")
        .args(args)
        .stdin(Stdio::null())
        .output()
        .await
        .map_err(|error| FirewallError::NftMissing { error })?;
    if !output.status.success() {
        let stderr = String::from_utf8_lossy(&output.stderr).trim().to_string();
        // "No such file or directory": the table does not exist.
        if stderr.contains("No such file or directory") {
            return Ok(None);
        }
        return Err(FirewallError::List {
            what,
            detail: stderr,
        });
    }
    serde_json::from_slice(&output.stdout)
        .map(Some)
        .map_err(|err| FirewallError::List {
            what,
            detail: err.to_string(),
        })
}

/// How many rules berth's table `table` holds (0 when it does not exist).
pub async fn rule_count(table: &str) -> Result<usize, FirewallError> {
    let Some(value) = list_json(&["list", "table", "ip", table]).await? else {
        return Ok(0);
    };
    Ok(objects(&value)
        .filter(|obj| obj.get("rule").is_some())
        .count())
}

/// Whether the table exists.
pub async fn table_exists(table: &str) -> Result<bool, FirewallError> {
    Ok(list_json(&["list", "table", "ip", table]).await?.is_some())
}

fn objects(value: &serde_json::Value) -> impl Iterator<Item = &serde_json::Value> {
    value
        .get("nftables")
        .and_then(|v| v.as_array())
        .into_iter()
        .flatten()
}

/// A base chain of someone else's table (docker, firewalld, a host
/// firewall) that drops forwarded packets by default.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ForeignDrop {
    pub family: String,
    pub table: String,
    pub chain: String,
}

impl std::fmt::Display for ForeignDrop {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(
            f,
            "chain {} of table {} {} drops forwarded packets by default",
            self.chain, self.family, self.table
        )
    }
}

impl ForeignDrop {
    /// A warning that says what breaks and how to allow the bridge.
    pub fn warning(&self, bridge: &str) -> String {
        format!(
            "{self}, so pod egress and hostPorts from other machines through bridge {bridge} are dropped; allow them with \
             `nft insert rule {f} {t} {c} iifname {bridge} accept` and \
             `nft insert rule {f} {t} {c} oifname {bridge} ct state established,related accept` \
             (with docker: `iptables -I DOCKER-USER -i {bridge} -j ACCEPT` and \
             `iptables -I DOCKER-USER -o {bridge} -m conntrack --ctstate RELATED,ESTABLISHED -j ACCEPT`)",
            f = self.family,
            t = self.table,
            c = self.chain,
        )
    }
}

/// Forward-hook base chains with a drop policy in `nft -j list chains`
/// output, other than berth's own `own_table`.
pub fn foreign_forward_drops(chains: &serde_json::Value, own_table: &str) -> Vec<ForeignDrop> {
    objects(chains)
        .filter_map(|obj| obj.get("chain"))
        .filter(|chain| chain["hook"] == "forward" && chain["policy"] == "drop")
        .filter(|chain| matches!(chain["family"].as_str(), Some("ip" | "inet")))
        .filter(|chain| chain["table"] != own_table)
        .map(|chain| ForeignDrop {
            family: chain["family"].as_str().unwrap_or_default().to_string(),
            table: chain["table"].as_str().unwrap_or_default().to_string(),
            chain: chain["name"].as_str().unwrap_or_default().to_string(),
        })
        .collect()
}

/// The live ruleset's forward drops (see [`foreign_forward_drops`]).
pub async fn detect_foreign_forward_drops(
    own_table: &str,
) -> Result<Vec<ForeignDrop>, FirewallError> {
    let chains = list_json(&["list", "chains"]).await?.unwrap_or_default();
    Ok(foreign_forward_drops(&chains, own_table))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn docker_style_forward_drop_is_found_and_explained() {
        let chains = serde_json::json!({"nftables": [
            {"metainfo": {"version": "1.0.6", "json_schema_version": 1}},
            {"chain": {"family": "ip", "table": "filter", "name": "FORWARD", "handle": 1,
                       "type": "filter", "hook": "forward", "prio": 0, "policy": "drop"}},
            {"chain": {"family": "ip", "table": "filter", "name": "INPUT", "handle": 2,
                       "type": "filter", "hook": "input", "prio": 0, "policy": "drop"}},
            {"chain": {"family": "inet", "table": "firewalld", "name": "filter_FORWARD",
                       "type": "filter", "hook": "forward", "prio": 10, "policy": "accept"}},
            {"chain": {"family": "ip", "table": "bt_own", "name": "forward",
                       "type": "filter", "hook": "forward", "prio": 0, "policy": "drop"}},
            {"chain": {"family": "bridge", "table": "x", "name": "forward",
                       "type": "filter", "hook": "forward", "prio": 0, "policy": "drop"}},
            {"chain": {"family": "ip", "table": "filter", "name": "DOCKER-USER", "handle": 9}}
        ]});
        let drops = foreign_forward_drops(&chains, "bt_own");
        assert_eq!(
            drops,
            vec![ForeignDrop {
                family: "ip".into(),
                table: "filter".into(),
                chain: "FORWARD".into()
            }]
        );
        let warning = drops[0].warning("berth0");
        assert!(
            warning.contains("FORWARD") && warning.contains("iifname berth0 accept"),
            "{warning}"
        );
        assert!(foreign_forward_drops(&serde_json::Value::Null, "x").is_empty());
    }
}
