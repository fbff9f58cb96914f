//! Operating a running replication: comparing nodes, showing state.

pub mod conflicts;
pub mod diff;
pub mod drift;
pub mod lag;
pub mod prune;
pub mod queue;
pub mod repair;
pub mod status;
pub mod verify;
pub mod verify_rows;

use std::collections::BTreeSet;

use anyhow::Result;
use postgres::Client;

use crate::catalog::Replicated;

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
    for (node, client) in clients.iter_mut() {
        let Some(client) = client else { continue };
        if crate::db::installed_version(client)?.is_none() {
            continue;
        }
        names.extend(
            Replicated::all(client, node)?
                .into_iter()
                .map(|t| t.logical),
        );
    }
    Ok(names)
}
