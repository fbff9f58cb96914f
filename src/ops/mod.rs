//! Operating a running replication: comparing nodes, showing state.

pub mod conflicts;
pub mod diff;
pub mod lag;
pub mod queue;
pub mod repair;
pub mod status;
pub mod verify;
pub mod verify_rows;

use std::collections::BTreeSet;

use anyhow::Result;
use postgres::Client;

/// A replicated table as one node's catalog records it.
pub struct NodeTable {
    pub nsp: String,
    pub rel: String,
    pub columns: Vec<String>,
    pub where_clause: Option<String>,
    pub mode: String,
}

pub fn node_table(client: &mut Client, logical: &str) -> Result<Option<NodeTable>> {
    Ok(client
        .query_opt(
            "select nsp::text, rel::text, columns, where_clause, mode from repctl.tables where name = $1",
            &[&logical],
        )?
        .map(|r| NodeTable { nsp: r.get(0), rel: r.get(1), columns: r.get(2), where_clause: r.get(3), mode: r.get(4) }))
}

/// The replicated tables a command works on: all, or only the one named (an error if no node
/// replicates it).
pub fn chosen_tables(
    clients: &mut [(String, Option<Client>)],
    only: Option<&str>,
) -> Result<Vec<String>> {
    let tables = replicated_tables(clients)?;
    match only {
        None => Ok(tables.into_iter().collect()),
        Some(name) if tables.contains(name) => Ok(vec![name.to_string()]),
        Some(name) => anyhow::bail!("table {name} is not replicated (see `repctl status`)"),
    }
}

/// Logical names of the tables any reachable, initialized node replicates.
pub fn replicated_tables(clients: &mut [(String, Option<Client>)]) -> Result<BTreeSet<String>> {
    let mut names = BTreeSet::new();
    for (_, client) in clients.iter_mut() {
        let Some(client) = client else { continue };
        if crate::db::installed_version(client)?.is_none() {
            continue;
        }
        for row in client.query("select name from repctl.tables", &[])? {
            names.insert(row.get(0));
        }
    }
    Ok(names)
}
