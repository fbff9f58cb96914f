//! `--interleave-sequences`: the sequences owned by a table's key columns hand out disjoint
//! progressions on every node, all stepping by `STRIDE`, each node from its own offset, so inserts
//! on several masters never pick the same key.
//!
//! Every node, in one transaction kept open until all have run their part: each key sequence is
//! given the stride first, which takes its lock, so `nextval` waits there until the commit and no
//! value is handed out meanwhile; then the highest value in use (the column's maximum, or the
//! sequence's last value) is read. Every node then restarts its sequence at the first value of its
//! own progression above the highest value on any node, and the nodes commit one after another.

use std::collections::BTreeMap;

use anyhow::{Context, Result, bail};
use postgres::{Client, Transaction};

use super::table::AddTable;
use crate::catalog;
use crate::catalog::sequences::{self, STRIDE};
use crate::render::quote_ident;

/// Gives each node an offset among interleaved sequences (repctl.meta sequence_offset): the one it
/// has, or the lowest no other node has; with `record`, stored where new. Returns them by node.
pub fn assign_offsets(
    clients: &mut [(String, Client)],
    record: bool,
) -> Result<BTreeMap<String, i64>> {
    let mut held: Vec<(String, Option<i64>)> = Vec::new();
    for (node, client) in clients.iter_mut() {
        held.push((node.clone(), sequences::node_offset(client, node)?));
    }
    let mut taken: BTreeMap<String, i64> = BTreeMap::new();
    for (node, offset) in &held {
        if let Some(o) = offset
            && (1..=STRIDE).contains(o)
            && !taken.values().any(|t| t == o)
        {
            taken.insert(node.clone(), *o);
        }
    }
    for (node, client) in clients.iter_mut() {
        if taken.contains_key(node) {
            continue;
        }
        let Some(free) = (1..=STRIDE).find(|o| !taken.values().any(|t| t == o)) else {
            bail!(
                "interleaved sequences leave room for {STRIDE} nodes, and node {node} would be one more"
            );
        };
        if record {
            client
                .execute(
                    "insert into repctl.meta (key, value) values ('sequence_offset', $1)
                     on conflict (key) do update set value = excluded.value",
                    &[&free.to_string()],
                )
                .with_context(|| format!("node {node}: recording its sequence offset"))?;
        }
        taken.insert(node.clone(), free);
    }
    Ok(taken)
}

/// The first value above `high` in the progression of `offset`.
fn restart_above(high: i64, offset: i64) -> i64 {
    let next = high + 1;
    next + (offset - next).rem_euclid(STRIDE)
}

/// Interleaves the key sequences of `req`'s table on every node (with `dry_run`, rolls back).
/// Returns the statements run, per node.
pub fn interleave(
    clients: &mut [(String, Client)],
    req: &AddTable,
    dry_run: bool,
) -> Result<Vec<(String, Vec<String>)>> {
    let offsets = assign_offsets(clients, !dry_run)?;
    let mut open: Vec<(String, Transaction<'_>, Vec<sequences::KeySequence>)> = Vec::new();
    // Key column to the highest value in use on any node.
    let mut high: BTreeMap<String, i64> = BTreeMap::new();
    for (node, client) in clients.iter_mut() {
        let local = req.local_name(node);
        let key = catalog::inspect(client, node, local, req.key.as_deref())?.key;
        let mut tx = client
            .transaction()
            .with_context(|| format!("node {node}: begin"))?;
        // A writer holding a key sequence (its transaction used it) delays this; don't wait forever.
        tx.batch_execute("set local lock_timeout = '10s'")?;
        let seqs = sequences::key_sequences(&mut tx, node, local, &key)?;
        for s in &seqs {
            tx.batch_execute(&format!(
                "alter sequence {} increment by {STRIDE}",
                s.sequence
            ))
            .with_context(|| format!("node {node}: taking sequence {}", s.sequence))?;
            let h: i64 = tx
                .query_one(
                    &format!(
                        // The last value handed out: none since a restart (is_called false).
                        "select greatest(coalesce(max({})::bigint, 0),
                                         coalesce(pg_catalog.pg_sequence_last_value($1::text::pg_catalog.regclass), 0))
                           from only {}",
                        quote_ident(&s.column),
                        local.sql()
                    ),
                    &[&s.sequence],
                )
                .with_context(|| format!("node {node}: reading the highest {} of {local}", s.column))?
                .get(0);
            let e = high.entry(s.column.clone()).or_insert(h);
            *e = (*e).max(h);
        }
        open.push((node.clone(), tx, seqs));
    }
    let mut done = Vec::new();
    let mut txs = Vec::new();
    for (node, mut tx, seqs) in open {
        let mut statements = Vec::new();
        for s in &seqs {
            let statement = format!(
                "alter sequence {} increment by {STRIDE} restart with {}",
                s.sequence,
                restart_above(high[&s.column], offsets[&node])
            );
            tx.batch_execute(&statement)
                .with_context(|| format!("node {node}: {statement}"))?;
            statements.push(statement);
        }
        done.push((node.clone(), statements));
        txs.push((node, tx));
    }
    if !dry_run {
        super::commit_in_order(txs)?;
    }
    Ok(done)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn restarts_in_its_own_progression_above_every_node() {
        assert_eq!(restart_above(0, 1), 1);
        assert_eq!(restart_above(100, 3), 103);
        assert_eq!(restart_above(103, 3), 113);
        assert_eq!(restart_above(109, 10), 110);
        assert_eq!(restart_above(95, 2), 102);
    }
}
