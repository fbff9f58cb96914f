//! `repctl repair --from NODE`: makes the other nodes match NODE for the rows that differ, and only
//! those. The differences come from the row-level comparison batch by batch; each batch is one
//! transaction per node with replication suppressed (the capture triggers skip what the apply path
//! marks as `repctl.applying`), logged key by key.

use std::collections::{BTreeMap, HashMap, HashSet};

use anyhow::{Context, Result};
use minijinja::context;
use serde::Serialize;
use serde_json::{Map, Value as Json};

use super::diff::side::{Side, TableOn};
use super::diff::{self, Flow, KeyRows, Sink};
use crate::catalog::Replicated;
use crate::db;
use crate::progress::Progress;
use crate::render::{self, names, safe};

/// What repair did (or, in a dry run, would do) on one node.
#[derive(Debug, Clone, Default, Serialize)]
pub struct Counts {
    pub inserted: u64,
    pub updated: u64,
    pub deleted: u64,
    /// Rows that changed after they were compared (a replicated change won), or whose source row
    /// went away meanwhile: left alone.
    pub skipped: u64,
}

/// The repair of one table, as a sink of the comparison.
pub struct Repair<'o> {
    /// Index of the source among the comparison's sides.
    pub source: usize,
    pub dry_run: bool,
    /// Log lines (and, in a dry run, the statements), as they happen.
    pub out: &'o mut dyn FnMut(String),
    /// Per node.
    pub counts: BTreeMap<String, Counts>,
    pub pending: u64,
}

/// One table's repair.
#[derive(Debug, Serialize)]
pub struct TableRepair {
    pub table: String,
    pub from: String,
    /// Per other node.
    pub nodes: BTreeMap<String, Counts>,
    /// Keys left alone because a change to them was queued or being written.
    pub pending: u64,
}

/// Repairs every table replicated on `source` (or the one named) on the other nodes.
pub fn repair(
    clients: &mut [(String, postgres::Client)],
    source: &str,
    only: Option<&str>,
    dry_run: bool,
    out: &mut dyn FnMut(String),
    progress: &mut dyn Progress,
) -> Result<Vec<TableRepair>> {
    let s = clients
        .iter()
        .position(|(n, _)| n == source)
        .with_context(|| format!("no node named {source:?} in the config"))?;
    db::require_installed(&mut clients[s].1, source)?;
    let mut tables: Vec<String> = Replicated::all(&mut clients[s].1, source)?
        .into_iter()
        .map(|t| t.logical)
        .collect();
    if let Some(name) = only {
        if !tables.iter().any(|t| t == name) {
            anyhow::bail!(
                "node {source}: table {name} is not replicated there (see `repctl status`)"
            );
        }
        tables.retain(|t| t == name);
    }
    let mut reports = Vec::new();
    for logical in tables {
        let mut sides = clients
            .iter_mut()
            .map(|(node, client)| Side::open(node, client, &logical))
            .collect::<Result<Vec<_>>>()?;
        let mut sink = Repair {
            source: s,
            dry_run,
            out: &mut *out,
            counts: BTreeMap::new(),
            pending: 0,
        };
        diff::diff_table(&mut sides, &mut sink, progress)?;
        let mut nodes = sink.counts;
        for side in &sides {
            if side.node != source {
                nodes.entry(side.node.clone()).or_default();
            }
        }
        reports.push(TableRepair {
            table: logical,
            from: source.to_string(),
            nodes,
            pending: sink.pending,
        });
    }
    Ok(reports)
}

/// What a repair statement does to a node's rows.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Fix {
    Delete,
    Update,
    Insert,
}

impl Fix {
    /// The statement's name in `ops/repair.sql`.
    fn as_str(self) -> &'static str {
        match self {
            Fix::Delete => "delete",
            Fix::Update => "update",
            Fix::Insert => "insert",
        }
    }
}

/// The statements of one batch for one node, each with the keys it should change.
struct Planned {
    kind: Fix,
    sql: String,
    keys: Vec<String>,
}

/// Keys per repair transaction on a node.
const BATCH: usize = 1000;

impl Sink for Repair<'_> {
    fn differ(&mut self, sides: &mut [Side<'_>], rows: Vec<KeyRows>) -> Result<Flow> {
        for batch in rows.chunks(BATCH) {
            self.batch(sides, batch)?;
        }
        Ok(Flow::Go)
    }

    fn pending(&mut self, keys: Vec<String>) {
        self.pending += keys.len() as u64;
    }
}

impl Repair<'_> {
    /// One transaction per other node for these keys.
    fn batch(&mut self, sides: &mut [Side<'_>], rows: &[KeyRows]) -> Result<()> {
        let source = self.source;
        let wanted: Vec<String> = rows
            .iter()
            .filter(|r| r.hashes[source].is_some())
            .map(|r| r.key.clone())
            .collect();
        let images = sides[source].images(&wanted)?;
        let source_node = sides[source].node.clone();
        for (i, side) in sides.iter_mut().enumerate() {
            if i == source {
                continue;
            }
            let (planned, gone) = plan(side, source, i, rows, &images)?;
            let counts = self.counts.entry(side.node.clone()).or_default();
            counts.skipped += gone.len() as u64;
            for key in &gone {
                (self.out)(format!(
                    "node {}: {}: skipped {key}: the row left node {source_node} meanwhile",
                    side.node, side.table.logical
                ));
            }
            if planned.is_empty() {
                continue;
            }
            if self.dry_run {
                (self.out)(format!(
                    "-- ===== node {} =====\nbegin;\n{}",
                    side.node,
                    render_begin(&side.node, &side.table.logical, &source_node)?
                ));
                for p in &planned {
                    (self.out)(p.sql.clone());
                    count(counts, p.kind, p.keys.len() as u64);
                }
                (self.out)("commit;".into());
                continue;
            }
            let changed = apply(side, &source_node, &planned)?;
            for (p, done) in planned.iter().zip(changed) {
                count(counts, p.kind, done.len() as u64);
                for key in &p.keys {
                    let line = if done.contains(key) {
                        format!(
                            "node {}: {}: {}d {key}",
                            side.node,
                            side.table.logical,
                            p.kind.as_str()
                        )
                    } else {
                        counts.skipped += 1;
                        format!(
                            "node {}: {}: skipped {key}: it changed after it was compared",
                            side.node, side.table.logical
                        )
                    };
                    (self.out)(line);
                }
            }
        }
        Ok(())
    }
}

fn count(c: &mut Counts, kind: Fix, n: u64) {
    match kind {
        Fix::Insert => c.inserted += n,
        Fix::Update => c.updated += n,
        Fix::Delete => c.deleted += n,
    }
}

/// Statements making side `target` match the source for these keys; also the keys whose source
/// row disappeared since the comparison.
fn plan(
    target: &Side<'_>,
    source: usize,
    t: usize,
    rows: &[KeyRows],
    images: &HashMap<String, Map<String, Json>>,
) -> Result<(Vec<Planned>, Vec<String>)> {
    let mut deletes = Vec::new();
    let mut updates = Vec::new();
    let mut inserts = Vec::new();
    let mut gone = Vec::new();
    for r in rows {
        let (have, here) = (r.hashes[source], r.hashes[t]);
        match (have, here) {
            _ if have == here => {}
            (None, Some(h)) => deletes.push((r.key.clone(), serde_json::from_str(&r.key)?, h)),
            (Some(_), here) => match (images.get(&r.key), here) {
                (None, _) => gone.push(r.key.clone()),
                (Some(img), None) => inserts.push((r.key.clone(), img.clone(), 0)),
                (Some(img), Some(h)) => updates.push((r.key.clone(), img.clone(), h)),
            },
            (None, None) => {}
        }
    }
    let mut planned = Vec::new();
    for (kind, batch) in [
        (Fix::Delete, deletes),
        (Fix::Update, updates),
        (Fix::Insert, inserts),
    ] {
        let images: Vec<(Map<String, Json>, i32)> =
            batch.iter().map(|(_, img, h)| (img.clone(), *h)).collect();
        if let Some(sql) = render_statement(&target.table, kind, &images).with_context(|| {
            format!(
                "node {}: rendering a repair of {}",
                target.node, target.table.logical
            )
        })? {
            let keys = batch.into_iter().map(|(k, _, _)| k).collect();
            planned.push(Planned { kind, sql, keys });
        }
    }
    Ok((planned, gone))
}

/// One repair statement (`delete`, `update` or `insert`) of `ops/repair.sql` for a table: rows are
/// row images (a key's columns suffice for delete) with the row hash each row must still have
/// there (update, delete). None when there is nothing to do.
pub fn render_statement(
    table: &TableOn,
    kind: Fix,
    rows: &[(Map<String, Json>, i32)],
) -> Result<Option<String>> {
    let update_columns: Vec<String> = table
        .columns
        .iter()
        .filter(|c| !table.key.iter().any(|k| k.name == c.name))
        .map(|c| c.name.clone())
        .collect();
    if rows.is_empty() || (kind == Fix::Update && update_columns.is_empty()) {
        return Ok(None);
    }
    let rows: Vec<_> = rows
        .iter()
        .map(|(image, hash)| context! { values => values(table, image, kind == Fix::Delete), hash })
        .collect();
    render::render(
        "ops/repair.sql",
        &context! {
            query => kind.as_str(),
            table => safe(table.name.sql()),
            key => column_values(&table.key),
            columns => column_values(&table.columns),
            update_columns,
            overriding => table.columns.iter().any(|c| c.identity_always),
            hash_alias => names::free_alias("repctl_hash", &table.column_names()),
            rows,
        },
    )
    .map(Some)
}

/// What starts a node's repair transaction: replication suppressed, text forms pinned.
pub fn render_begin(node: &str, logical: &str, source: &str) -> Result<String> {
    render::render(
        "ops/repair.sql",
        &context! {
            query => "begin",
            node,
            name => logical,
            source,
            text_settings => db::TEXT_SETTINGS.to_vec(),
        },
    )
}

fn column_values(columns: &[crate::catalog::Column]) -> Vec<minijinja::Value> {
    columns
        .iter()
        .map(|c| context! { name => c.name.clone(), type => safe(c.type_sql.clone()) })
        .collect()
}

/// A row's values (or only its key's) in the table's column order, each with its type there.
fn values(table: &TableOn, image: &Map<String, Json>, key_only: bool) -> Vec<minijinja::Value> {
    let columns = if key_only { &table.key } else { &table.columns };
    columns
        .iter()
        .map(|c| {
            let value = image
                .get(&c.name)
                .and_then(Json::as_str)
                .map(str::to_string);
            context! { value, type => safe(c.type_sql.clone()) }
        })
        .collect()
}

/// Runs one node's batch in one transaction; returns, per statement, the keys it changed.
/// Deadlocks, serialization failures and lock timeouts: worth running the batch again.
fn transient(e: &postgres::Error) -> bool {
    use postgres::error::SqlState;
    e.code().is_some_and(|c| {
        [
            SqlState::T_R_DEADLOCK_DETECTED,
            SqlState::T_R_SERIALIZATION_FAILURE,
            SqlState::LOCK_NOT_AVAILABLE,
        ]
        .contains(c)
    })
}

fn apply(
    side: &mut Side<'_>,
    source_node: &str,
    planned: &[Planned],
) -> Result<Vec<HashSet<String>>> {
    let what = format!(
        "node {}: repairing {} from node {source_node} (nothing of this batch was changed there)",
        side.node, side.table.logical
    );
    let setup = render_begin(&side.node, &side.table.logical, source_node)?;
    // Each statement only changes rows that still look as they did when compared, so a batch
    // that lost a deadlock (e.g. to `repctl run` applying the same rows) can simply run again.
    let mut attempt = 1;
    let changed = loop {
        let result = (|| -> Result<Vec<HashSet<String>>, postgres::Error> {
            let mut tx = side.client.transaction()?;
            tx.batch_execute(&setup)?;
            let mut changed = Vec::new();
            for p in planned {
                let rows = tx.query(&p.sql, &[])?;
                changed.push(rows.iter().map(|r| r.get(0)).collect());
            }
            tx.commit()?;
            Ok(changed)
        })();
        match result {
            Ok(changed) => break changed,
            Err(e) if attempt < 5 && transient(&e) => {
                std::thread::sleep(std::time::Duration::from_millis(100 * attempt));
                attempt += 1;
            }
            Err(e) => return Err(e).context(what),
        }
    };
    Ok(changed)
}
