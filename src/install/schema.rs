//! `repctl alter-table --ddl`: a schema change of a replicated table on every node, with the
//! table's capture and apply functions re-rendered in the same transaction, so no statement ever
//! meets a function of the other shape.
//!
//! Each node, in one transaction kept open until every node has run its part: the schema lock
//! (repctl.apply waits on it, then sees the change whole), the statement against the node's own
//! table, the new shape read back and compared column by column (by attnum) with the old, and the
//! table's objects installed for the new shape. Then the nodes commit one after another as every
//! install does. Writers of the table wait for the statement's lock; none fails.
//!
//! Row images queued before the change (behind a down peer, in async mode, or on their way) keep
//! the old shape, and the apply takes them as they are: a renamed column's value under its old
//! name goes to the new one, a dropped column's value is ignored, a column added since is missing
//! from them and keeps this node's value (an insert takes the column's default), a retyped
//! column's text form is cast to the new type. `catalog::History` is what the apply is rendered
//! with for that.

use anyhow::{Context, Result, bail};
use postgres::{Client, Transaction};

use super::table::{self, AddTable};
use crate::catalog::history::Change;
use crate::catalog::{self, Table};

/// What one node does.
pub struct NodePlan {
    pub node: String,
    pub statement: String,
    pub changes: Vec<Change>,
    pub script: String,
}

struct Attr {
    num: i16,
    name: String,
    type_sql: String,
}

fn attrs(tx: &mut Transaction<'_>, oid: u32) -> Result<Vec<Attr>> {
    Ok(tx
        .query(
            "select attnum, attname::text, format_type(atttypid, atttypmod) from pg_attribute
              where attrelid = $1 and attnum > 0 and not attisdropped and attgenerated = '' order by attnum",
            &[&oid],
        )?
        .iter()
        .map(|r| Attr {
            num: r.get(0),
            name: r.get(1),
            type_sql: r.get(2),
        })
        .collect())
}

fn diff(before: &[Attr], after: &[Attr]) -> Vec<Change> {
    let mut changes = Vec::new();
    for b in before {
        match after.iter().find(|a| a.num == b.num) {
            None => changes.push(Change::Dropped(b.name.clone())),
            Some(a) => {
                if a.name != b.name {
                    changes.push(Change::Renamed(b.name.clone(), a.name.clone()));
                }
                if a.type_sql != b.type_sql {
                    changes.push(Change::Retyped(
                        a.name.clone(),
                        b.type_sql.clone(),
                        a.type_sql.clone(),
                    ));
                }
            }
        }
    }
    for a in after {
        if !before.iter().any(|b| b.num == a.num) {
            changes.push(Change::Added(a.name.clone(), a.type_sql.clone()));
        }
    }
    changes
}

fn pin_search_path(tx: &mut Transaction<'_>, path: &str) -> Result<()> {
    tx.query_one("select set_config('search_path', $1, true)", &[&path])?;
    Ok(())
}

/// The request after `changes`: replicated columns renamed, dropped and added, history kept.
/// Refuses what repctl cannot carry over: a change of the key or of the conflict column.
fn changed_request(
    node: &str,
    req: &AddTable,
    key: &[String],
    changes: &[Change],
) -> Result<AddTable> {
    let mut next = req.clone();
    let logical = &req.name;
    let mut columns = req.columns.clone().unwrap_or_default();
    for change in changes {
        let touched = match change {
            Change::Dropped(c) | Change::Renamed(c, _) => Some(c),
            _ => None,
        };
        if let Some(c) = touched {
            if key.contains(c) {
                bail!(
                    "node {node}: the statement drops or renames key column {c} of {logical}; a replicated table's key \
                     cannot change (remove-table, change it, add-table)"
                );
            }
            if req.settings.conflict_column.as_ref() == Some(c) {
                bail!(
                    "node {node}: the statement drops or renames column {c}, the --conflict-column of {logical}; \
                     change the rule first (repctl alter-table {logical} --conflict RULE)"
                );
            }
        }
        match change {
            Change::Dropped(c) => columns.retain(|x| x != c),
            Change::Renamed(a, b) => {
                for x in &mut columns {
                    if x == a {
                        *x = b.clone();
                    }
                }
            }
            Change::Added(c, _) => columns.push(c.clone()),
            Change::Retyped(..) => {}
        }
        next.history.apply(change);
    }
    next.columns = Some(columns);
    Ok(next)
}

/// Runs `actions` (what follows `ALTER TABLE name`) against every node's own table and installs the
/// table's objects for the new shape, all in one transaction per node; commits only when every
/// node got that far (with `dry_run`, none does). Returns each node's plan and the new request.
pub fn alter_with_ddl(
    clients: &mut [(String, Client)],
    req: &AddTable,
    actions: &str,
    dry_run: bool,
) -> Result<(AddTable, Vec<NodePlan>)> {
    let logical = table::logical_name(&req.name);
    let mut open: Vec<(String, Transaction<'_>)> = Vec::new();
    let mut found: Vec<(String, Table, AddTable, String, Vec<Change>)> = Vec::new();
    for (node, client) in clients.iter_mut() {
        let mut tx = client
            .transaction()
            .with_context(|| format!("node {node}: begin"))?;
        let local = req.local_name(node).clone();
        let replicated: bool = tx
            .query_one(
                "select exists (select from repctl.tables where name = $1)",
                &[&logical],
            )?
            .get(0);
        if !replicated {
            bail!(
                "node {node} does not replicate {logical} yet: run `repctl alter-table {logical}` first (it adds it there)"
            );
        }
        tx.query_one("select set_config('repctl.allow_ddl', 'on', true)", &[])?;
        tx.batch_execute("lock table repctl.schema_lock in access exclusive mode")
            .with_context(|| {
                format!(
                    "node {node}: taking the schema lock (run `repctl init` after upgrading repctl)"
                )
            })?;
        let path: String = tx
            .query_one("select current_setting('search_path')", &[])?
            .get(0);
        let oid: u32 = tx
            .query_one("select $1::text::regclass::oid", &[&local.sql()])
            .with_context(|| format!("node {node}: table {local} does not exist"))?
            .get(0);
        pin_search_path(&mut tx, "pg_catalog")?;
        let before = attrs(&mut tx, oid)?;
        let key = catalog::inspect_in(&mut tx, node, &local, req.key.as_deref())?.key;
        // The statement runs with the session's own search_path, as the user wrote it; one
        // statement only (the extended protocol refuses more).
        pin_search_path(&mut tx, &path)?;
        let statement = format!("alter table {} {actions}", local.sql());
        tx.execute(statement.as_str(), &[])
            .with_context(|| format!("node {node}: {statement}"))?;
        pin_search_path(&mut tx, "pg_catalog")?;
        let still: Option<u32> = tx
            .query_one("select to_regclass($1)::oid", &[&local.sql()])?
            .get(0);
        if still != Some(oid) {
            bail!(
                "node {node}: the statement renames or moves {local}; repctl cannot follow a replicated table to another name \
                 (remove-table, rename it, add-table)"
            );
        }
        let changes = diff(&before, &attrs(&mut tx, oid)?);
        let next = changed_request(node, req, &key, &changes)?;
        let after = catalog::inspect_in(&mut tx, node, &local, req.key.as_deref())?;
        if let Some(w) = &req.settings.where_clause {
            tx.prepare(&format!("select from only {} where ({w})", local.sql()))
                .with_context(|| {
                    format!("node {node}: after the statement, --where {w:?} is no valid condition on {local}")
                })?;
        }
        let after = table::select_columns(after, next.columns.as_deref(), node)?;
        found.push((node.clone(), after, next, statement, changes));
        open.push((node.clone(), tx));
    }
    let names: Vec<String> = found.iter().map(|f| f.0.clone()).collect();
    let tables: Vec<Table> = found.iter().map(|f| f.1.clone()).collect();
    table::check_same_shape(&names, &tables)?;
    let next = found[0].2.clone();
    for (node, _, other, _, _) in &found[1..] {
        if other.columns != next.columns || other.history != next.history {
            bail!(
                "the statement changed {logical} differently on node {node} than on node {} (replicated columns {:?} \
                 against {:?}); no node was changed",
                found[0].0,
                other.columns.as_deref().unwrap_or_default(),
                next.columns.as_deref().unwrap_or_default()
            );
        }
    }
    let mut plans = Vec::new();
    for ((node, table, _, statement, changes), (_, tx)) in found.into_iter().zip(open.iter_mut()) {
        let script = table::render_add(&node, &logical, &table, &tables[0].columns, &next)?;
        tx.batch_execute(&script).with_context(|| {
            format!(
                "node {node}: installing {logical} for its new shape failed; no node was changed"
            )
        })?;
        plans.push(NodePlan {
            node,
            statement,
            changes,
            script,
        });
    }
    if !dry_run {
        super::commit_in_order(open)?;
    }
    Ok((next, plans))
}
