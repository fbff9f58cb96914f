//! `repctl.toml`: the nodes and how to reach them.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

use anyhow::{Context, Result, bail};
use serde::Deserialize;

use crate::conninfo::ConnInfo;

/// The config file as written; unknown keys are errors so a typo never silently changes behaviour.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct File {
    agent_role: Option<String>,
    #[serde(default)]
    agent_superuser: bool,
    retention_days: Option<u32>,
    nodes: BTreeMap<String, NodeFile>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct NodeFile {
    dsn: String,
    peer_dsn: Option<String>,
    peer_password_env: Option<String>,
}

/// One node, resolved: how repctl connects, and how the other nodes' servers reach it.
#[derive(Debug, Clone)]
pub struct Node {
    pub name: String,
    pub dsn: String,
    /// `peer_dsn` (default `dsn`) with the password from `peer_password_env` folded in.
    pub peer: ConnInfo,
}

/// The role init creates on every node to own repctl's objects and run its SECURITY DEFINER
/// functions; nobody logs in as it.
#[derive(Debug, Clone)]
pub struct Agent {
    pub role: String,
    /// dblink lets only superusers connect to a peer that does not ask for a password.
    pub superuser: bool,
}

/// `retention_days` when the config does not say.
pub const DEFAULT_RETENTION_DAYS: u32 = 30;

/// `agent_role` when the config does not name one.
pub const DEFAULT_AGENT_ROLE: &str = "repctl_agent";

#[derive(Debug, Clone)]
pub struct Config {
    pub path: PathBuf,
    pub agent: Agent,
    /// Sorted by name, so every node renders the same peer order.
    pub nodes: Vec<Node>,
    /// How long the conflict log and discarded changes are kept (`repctl prune`, `run`).
    pub retention_days: u32,
}

impl Config {
    pub fn load(path: &Path) -> Result<Config> {
        let text = std::fs::read_to_string(path).with_context(|| {
            format!(
                "cannot read config {}: create it (see README, \"Configuration\") or pass --config / set REPCTL_CONFIG",
                path.display()
            )
        })?;
        Self::parse(&text, path, |var| std::env::var(var).ok())
    }

    /// Parses config text; `env` looks up environment variables (injected so tests need not mutate the process env).
    pub fn parse(text: &str, path: &Path, env: impl Fn(&str) -> Option<String>) -> Result<Config> {
        let file: File = toml::from_str(text)
            .with_context(|| format!("config {} is not valid", path.display()))?;
        if file.nodes.len() < 2 {
            bail!(
                "config {}: {} node(s) configured; replication needs at least two [nodes.NAME] sections",
                path.display(),
                file.nodes.len()
            );
        }
        let role = file.agent_role.unwrap_or_else(|| DEFAULT_AGENT_ROLE.into());
        // PostgreSQL would silently truncate a longer name: init and add-table would disagree.
        if role.is_empty() || role.len() > 63 {
            bail!(
                "config {}: agent_role must be 1 to 63 bytes long, {role:?} is {}",
                path.display(),
                role.len()
            );
        }
        let mut nodes = Vec::new();
        for (name, node) in file.nodes {
            if name.is_empty() {
                bail!("config {}: a node name is empty", path.display());
            }
            ConnInfo::parse(&node.dsn)
                .with_context(|| format!("node {name}: dsn is not a valid connection string"))?;
            let peer_text = node.peer_dsn.as_deref().unwrap_or(&node.dsn);
            let mut peer = ConnInfo::parse(peer_text).with_context(|| {
                format!("node {name}: peer_dsn is not a valid connection string")
            })?;
            if let Some(var) = &node.peer_password_env {
                let password = env(var).with_context(|| {
                    format!("node {name}: peer_password_env names {var}, which is not set: export {var}=<password of the peer_dsn user>")
                })?;
                peer.set("password", &password);
            }
            nodes.push(Node {
                name,
                dsn: node.dsn,
                peer,
            });
        }
        Ok(Config {
            path: path.to_path_buf(),
            agent: Agent {
                role,
                superuser: file.agent_superuser,
            },
            nodes,
            retention_days: file.retention_days.unwrap_or(DEFAULT_RETENTION_DAYS),
        })
    }

    pub fn node(&self, name: &str) -> Result<&Node> {
        self.nodes.iter().find(|n| n.name == name).with_context(|| {
            format!(
                "no node named {name:?} in {}; configured: {}",
                self.path.display(),
                self.nodes
                    .iter()
                    .map(|n| n.name.as_str())
                    .collect::<Vec<_>>()
                    .join(", ")
            )
        })
    }

    pub fn peers_of<'a>(&'a self, node: &'a Node) -> impl Iterator<Item = &'a Node> + 'a {
        self.nodes.iter().filter(move |n| n.name != node.name)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const SEED: &str = r#"
[nodes.local]
dsn = "host=/tmp/sock port=5441 dbname=local user=postgres"   # how repctl connects (may create extensions)
peer_dsn = "host=10.1.2.3 port=5441 dbname=local user=local"   # how the OTHER nodes' servers reach this node (dblink); default: dsn
peer_password_env = "LOCAL_PW"                                  # env var with peer_dsn's password; it goes only into user mappings
[nodes.remote]
dsn = "host=/tmp/sock port=5441 dbname=remote user=postgres"
peer_dsn = "host=10.1.2.3 port=5441 dbname=remote user=remote"
peer_password_env = "REMOTE_PW"
"#;

    fn env(var: &str) -> Option<String> {
        Some(format!("pw-of-{var}"))
    }

    #[test]
    fn accepts_the_documented_form() {
        let c = Config::parse(SEED, Path::new("repctl.toml"), env).unwrap();
        assert_eq!(c.nodes.len(), 2);
        assert_eq!(c.nodes[0].name, "local");
        assert_eq!(c.nodes[0].peer.get("password"), Some("pw-of-LOCAL_PW"));
        assert_eq!(c.nodes[1].peer.get("user"), Some("remote"));
    }

    #[test]
    fn unknown_key_is_an_error_naming_it() {
        let text = SEED.replace(
            "peer_dsn = \"host=10.1.2.3 port=5441 dbname=local",
            "peer_dns = \"host=x",
        );
        let err = format!(
            "{:#}",
            Config::parse(&text, Path::new("r.toml"), env).unwrap_err()
        );
        assert!(err.contains("peer_dns"), "{err}");
    }

    #[test]
    fn missing_env_var_names_node_and_var() {
        let err = format!(
            "{:#}",
            Config::parse(SEED, Path::new("r.toml"), |_| None).unwrap_err()
        );
        assert!(
            err.contains("node local") && err.contains("LOCAL_PW"),
            "{err}"
        );
    }

    #[test]
    fn agent_defaults_and_long_names() {
        let c = Config::parse(SEED, Path::new("r.toml"), env).unwrap();
        assert_eq!(c.agent.role, DEFAULT_AGENT_ROLE);
        assert!(!c.agent.superuser);
        let text = format!(
            "agent_role = \"{}\"\nagent_superuser = true\n{SEED}",
            "a".repeat(64)
        );
        let err = format!(
            "{:#}",
            Config::parse(&text, Path::new("r.toml"), env).unwrap_err()
        );
        assert!(err.contains("agent_role"), "{err}");
        let c = Config::parse(
            &text.replace(&"a".repeat(64), "ops"),
            Path::new("r.toml"),
            env,
        )
        .unwrap();
        assert_eq!(c.agent.role, "ops");
        assert!(c.agent.superuser);
    }

    #[test]
    fn one_node_is_refused() {
        let err = format!(
            "{:#}",
            Config::parse("[nodes.a]\ndsn = \"dbname=a\"\n", Path::new("r.toml"), env).unwrap_err()
        );
        assert!(err.contains("at least two"), "{err}");
    }
}
