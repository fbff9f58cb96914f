//! Retention: the conflict log and discarded changes older than `retention_days` go
//! (`repctl.prune`, see templates/node/prune.sql).

use anyhow::Result;
use postgres::Client;
use serde::Serialize;

#[derive(Debug, Clone, Serialize)]
pub struct Pruned {
    pub node: String,
    /// `conflict` or `discarded`.
    pub what: String,
    pub pruned: i64,
}

/// Prunes one node's rows older than `days` days.
pub fn prune(client: &mut Client, node: &str, days: u32) -> Result<Vec<Pruned>> {
    let keep = format!("{days} days");
    Ok(client
        .query(
            "select what, pruned from repctl.prune($1::text::interval)",
            &[&keep],
        )?
        .iter()
        .map(|r| Pruned {
            node: node.to_string(),
            what: r.get(0),
            pruned: r.get(1),
        })
        .collect())
}
