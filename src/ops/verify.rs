//! `repctl verify`: the seed's `count(*)` and `sum(hashtext(row::text))` per node, with the text
//! forms pinned so nodes with different session defaults compare.

use anyhow::{Context, Result};
use minijinja::context;
use postgres::Client;
use serde::Serialize;

use super::{node_table, replicated_tables};
use crate::db;
use crate::render::{self, safe};

#[derive(Debug, Serialize)]
pub struct NodeSum {
    pub node: String,
    pub table: Option<String>,
    pub rows: Option<i64>,
    pub hash: Option<i64>,
    pub error: Option<String>,
}

#[derive(Debug, Serialize)]
pub struct TableReport {
    pub table: String,
    pub equal: bool,
    /// Changes of the table still queued on any node: a difference may only be them in transit.
    pub pending: i64,
    pub nodes: Vec<NodeSum>,
}

/// Checksums every replicated table (or the one named) on every node.
pub fn verify(
    clients: &mut [(String, Option<Client>)],
    only: Option<&str>,
) -> Result<Vec<TableReport>> {
    let tables = replicated_tables(clients)?;
    if let Some(name) = only
        && !tables.contains(name)
    {
        anyhow::bail!("table {name} is not replicated (see `repctl status`)");
    }
    let mut reports = Vec::new();
    for logical in tables
        .iter()
        .filter(|t| only.is_none_or(|o| o == t.as_str()))
    {
        // Every node at once: the scans dominate, and the nodes are different servers.
        let nodes: Vec<NodeSum> = std::thread::scope(|scope| {
            let handles: Vec<_> = clients
                .iter_mut()
                .map(|(node, client)| {
                    scope.spawn(move || match client {
                        None => NodeSum {
                            node: node.clone(),
                            table: None,
                            rows: None,
                            hash: None,
                            error: Some("unreachable".into()),
                        },
                        Some(client) => {
                            checksum(client, node, logical).unwrap_or_else(|e| NodeSum {
                                node: node.clone(),
                                table: None,
                                rows: None,
                                hash: None,
                                error: Some(format!("{e:#}")),
                            })
                        }
                    })
                })
                .collect();
            handles
                .into_iter()
                .map(|h| h.join().expect("checksum thread"))
                .collect()
        });
        let mut pending = 0;
        for (_, client) in clients.iter_mut() {
            if let Some(client) = client {
                pending += queued(client, logical).unwrap_or(0);
            }
        }
        let first = &nodes[0];
        let equal = nodes
            .iter()
            .all(|n| n.error.is_none() && (n.rows, n.hash) == (first.rows, first.hash));
        reports.push(TableReport {
            table: logical.clone(),
            equal,
            pending,
            nodes,
        });
    }
    Ok(reports)
}

/// Changes of the table queued on this node for any peer.
fn queued(client: &mut Client, logical: &str) -> Result<i64> {
    Ok(client
        .query_one(
            "select count(*) from repctl.queue where tbl = $1",
            &[&logical],
        )?
        .get(0))
}

fn checksum(client: &mut Client, node: &str, logical: &str) -> Result<NodeSum> {
    let t =
        node_table(client, logical)?.with_context(|| format!("not replicated on node {node}"))?;
    let sql = render::render(
        "ops/verify.sql",
        &context! {
            columns => t.columns,
            table => safe(render::qualified(&t.nsp, &t.rel)),
            where => t.where_clause.map(safe),
        },
    )?;
    let mut tx = client.build_transaction().read_only(true).start()?;
    db::pin_text_settings(&mut tx)?;
    let row = tx
        .query_one(&sql, &[])
        .with_context(|| format!("node {node}: checksumming {logical}"))?;
    tx.commit()?;
    Ok(NodeSum {
        node: node.to_string(),
        table: Some(
            crate::catalog::TableName {
                schema: t.nsp,
                table: t.rel,
            }
            .to_string(),
        ),
        rows: Some(row.get(0)),
        hash: Some(row.get(1)),
        error: None,
    })
}
