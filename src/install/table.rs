//! `repctl add-table` / `remove-table`: capture triggers and apply functions for one table on every node.

use std::collections::BTreeMap;

use anyhow::{Context, Result, bail};
use minijinja::context;
use minijinja::value::Value;
use postgres::Client;

use super::Script;
use crate::catalog::{self, Column, ConflictRule, History, Replicated, Settings, Table, TableName};
use crate::db;
use crate::render::{self, names, safe};

/// What add-table was asked for.
#[derive(Clone)]
pub struct AddTable {
    pub name: TableName,
    /// Node name to the local table replicated under `name`.
    pub map: BTreeMap<String, TableName>,
    pub columns: Option<Vec<String>>,
    /// What earlier schema changes (alter-table --ddl) left images queued before them with.
    pub history: History,
    /// The key columns when they are not the primary key (--key): a unique index's, NOT NULL.
    pub key: Option<Vec<String>>,
    pub settings: Settings,
}

impl AddTable {
    pub fn local_name(&self, node: &str) -> &TableName {
        self.map.get(node).unwrap_or(&self.name)
    }
}

/// The settings add-table stored for a table, read back from every node's catalog.
pub fn stored_request(clients: &mut [(String, Client)], name: &TableName) -> Result<AddTable> {
    let logical = logical_name(name);
    let mut req: Option<AddTable> = None;
    let mut map = BTreeMap::new();
    for (node, client) in clients.iter_mut() {
        db::require_installed(client, node)?;
        // A node added to the config since add-table does not have it yet; alter-table adds it there.
        let Some(stored) = Replicated::load(client, node, &logical)? else {
            continue;
        };
        if stored.local != *name {
            map.insert(node.clone(), stored.local.clone());
        }
        req.get_or_insert_with(|| AddTable {
            name: name.clone(),
            map: BTreeMap::new(),
            columns: Some(stored.columns),
            history: stored.history,
            key: Some(stored.key),
            settings: stored.settings,
        });
    }
    let mut req = req.with_context(|| {
        format!("table {logical} is not replicated on any node (see `repctl status`)")
    })?;
    req.map = map;
    Ok(req)
}

/// The logical name every node knows the table by.
pub fn logical_name(name: &TableName) -> String {
    name.to_string()
}

/// Inspects the table on every node, checks they agree, and renders each node's script.
/// With `replace`, the table's objects are re-rendered with the request's settings (alter-table),
/// and a node that does not replicate it yet (one just added to the config) gets it; without
/// `replace`, the table must be new everywhere.
pub fn add_scripts(
    clients: &mut [(String, Client)],
    req: &AddTable,
    replace: bool,
) -> Result<Vec<Script>> {
    for node in req.map.keys() {
        if !clients.iter().any(|(n, _)| n == node) {
            bail!("--map names node {node:?}, which is not in the config");
        }
    }
    if let Some(w) = &req.settings.where_clause {
        super::condition::check(w)?;
    }
    check_conflict_settings(clients, req)?;
    let logical = logical_name(&req.name);
    let mut tables = Vec::new();
    let mut sequenced = false;
    for (node, client) in clients.iter_mut() {
        db::require_installed(client, node)?;
        let local = req.local_name(node);
        let stored = Replicated::load(client, node, &logical)?;
        let table = catalog::inspect(client, node, local, req.key.as_deref())?;
        let table = select_columns(table, req.columns.as_deref(), node)?;
        // An add-table cut off between nodes' commits is finished by running it again; anything
        // else already replicated is a mistake.
        if let Some(stored) = &stored
            && !replace
            && !same_settings(stored, &table, req)
        {
            bail!(
                "node {node}: table {logical} is already replicated with other settings; change them with \
                 `repctl alter-table`, or run `repctl remove-table {logical}` first"
            );
        }
        if let Some(c) = &req.settings.conflict_column
            && !table.columns.iter().any(|x| &x.name == c)
        {
            bail!(
                "node {node}: --conflict-column {c:?} is not a replicated column of {}",
                table.name
            );
        }
        check_delta(node, &table, req)?;
        if req.settings.interleave_sequences {
            sequenced |=
                !catalog::sequences::key_sequences(client, node, local, &table.key)?.is_empty();
        }
        if let Some(w) = &req.settings.where_clause {
            // Parsing the condition against the table proves it is one expression over its columns.
            let mut tx = client.transaction()?;
            tx.query_one("select set_config('search_path', 'pg_catalog', true)", &[])?;
            tx.prepare(&format!("select from only {} where ({w})", table.name.sql())).with_context(|| {
                format!(
                    "node {node}: --where {w:?} is not a valid condition on {} (it runs with search_path = pg_catalog: \
                     schema-qualify your own functions and types)",
                    table.name
                )
            })?;
            tx.rollback()?;
        }
        tables.push(table);
    }
    if req.settings.interleave_sequences && !sequenced {
        bail!(
            "--interleave-sequences: no key column of {logical} is a serial or identity column on any node"
        );
    }
    let nodes: Vec<String> = clients.iter().map(|(n, _)| n.clone()).collect();
    check_same_shape(&nodes, &tables)?;
    let reference = &tables[0];
    clients
        .iter()
        .zip(&tables)
        .map(|((node, _), table)| {
            let sql = render_add(node, &logical, table, &reference.columns, req)?;
            Ok(Script {
                node: node.clone(),
                sql,
                secret: None,
            })
        })
        .collect()
}

/// Whether a node's catalog already holds exactly this request for the table.
fn same_settings(stored: &Replicated, table: &Table, req: &AddTable) -> bool {
    let mut columns = stored.columns.clone();
    let mut wanted: Vec<String> = table.columns.iter().map(|c| c.name.clone()).collect();
    columns.sort();
    wanted.sort();
    stored.local == table.name && columns == wanted && stored.settings == req.settings
}

fn check_conflict_settings(clients: &[(String, Client)], req: &AddTable) -> Result<()> {
    if req.settings.append_only
        && (req.settings.conflict != ConflictRule::Error
            || !req.settings.delta.is_empty()
            || req.settings.merge_columns
            || req.settings.interleave_sequences)
    {
        bail!(
            "{} is replicated append-only: only inserts replicate, so there is no conflict rule, delta, \
             merge-columns or key sequence to set",
            logical_name(&req.name)
        );
    }
    // Without versions, "concurrent" is judged pair by pair (a change queued for the origin): with
    // three nodes a third one's changes arrive in different orders on the other two, and the nodes
    // can end different.
    if clients.len() > 2
        && !req.settings.conflict.versioned()
        && req.settings.conflict != ConflictRule::Error
    {
        bail!(
            "--conflict {} converges only between two nodes, and the config names {}: use \
             --conflict last-write-wins or node-priority (which compare versions) for {}",
            req.settings.conflict.as_str(),
            clients.len(),
            logical_name(&req.name)
        );
    }
    if req.settings.conflict == ConflictRule::NodePriority && req.settings.node_priority.is_empty()
    {
        bail!(
            "--conflict node-priority needs --node-priority NODE,NODE,... (highest priority first)"
        );
    }
    for n in &req.settings.node_priority {
        if !clients.iter().any(|(name, _)| name == n) {
            bail!("--node-priority names node {n:?}, which is not in the config");
        }
    }
    if req.settings.conflict_column.is_some()
        && req.settings.conflict != ConflictRule::LastWriteWins
    {
        bail!("--conflict-column goes with --conflict last-write-wins");
    }
    if req.settings.merge_columns
        && !matches!(
            req.settings.conflict,
            ConflictRule::OriginWins | ConflictRule::Error
        )
    {
        bail!(
            "--merge-columns goes with --conflict origin-wins or error: {} keeps one version of the whole row, \
             which cannot decide two columns changed by different nodes apart (nodes would diverge)",
            req.settings.conflict.as_str()
        );
    }
    Ok(())
}

/// The base types whose changes add up as increments.
const DELTA_TYPES: [&str; 6] = [
    "smallint",
    "integer",
    "bigint",
    "numeric",
    "real",
    "double precision",
];

/// `--delta` names replicated, non-key columns of a numeric type.
fn check_delta(node: &str, table: &Table, req: &AddTable) -> Result<()> {
    for d in &req.settings.delta {
        let Some(c) = table.columns.iter().find(|c| &c.name == d) else {
            bail!(
                "node {node}: --delta {d:?} is not a replicated column of {}",
                table.name
            );
        };
        if table.key.contains(d) || req.settings.conflict_column.as_ref() == Some(d) {
            bail!(
                "node {node}: --delta {d:?} of {} is its primary key or --conflict-column; a delta column must be an ordinary column",
                table.name
            );
        }
        let base = c.type_sql.split('(').next().unwrap_or_default().trim();
        if !DELTA_TYPES.contains(&base) {
            bail!(
                "node {node}: --delta {d:?} of {} is of type {}; delta columns must be numeric ({})",
                table.name,
                c.type_sql,
                DELTA_TYPES.join(", ")
            );
        }
    }
    Ok(())
}

pub(super) fn select_columns(
    mut table: Table,
    wanted: Option<&[String]>,
    node: &str,
) -> Result<Table> {
    let Some(wanted) = wanted else {
        return Ok(table);
    };
    for w in wanted {
        if !table.columns.iter().any(|c| &c.name == w) {
            bail!(
                "node {node}: table {} has no column {w:?} (named in --columns)",
                table.name
            );
        }
    }
    for k in &table.key {
        if !wanted.contains(k) {
            bail!(
                "--columns must include the primary key column {k:?} of {}",
                table.name
            );
        }
    }
    table.columns.retain(|c| wanted.contains(&c.name));
    Ok(table)
}

/// Every node (`nodes`, in the order of `tables`) must replicate the same columns with the same
/// types and the same key.
pub(super) fn check_same_shape(nodes: &[String], tables: &[Table]) -> Result<()> {
    let first = &tables[0];
    let sorted = |t: &Table| {
        let mut cols: Vec<(String, String)> = t
            .columns
            .iter()
            .map(|c| (c.name.clone(), c.type_sql.clone()))
            .collect();
        cols.sort();
        cols
    };
    for (node, t) in nodes.iter().zip(tables).skip(1) {
        if t.key != first.key {
            bail!(
                "primary keys differ: {} on node {} has ({}), {} on node {node} has ({})",
                first.name,
                nodes[0],
                first.key.join(", "),
                t.name,
                t.key.join(", ")
            );
        }
        let (a, b) = (sorted(first), sorted(t));
        if a != b {
            let only_a: Vec<String> = a
                .iter()
                .filter(|c| !b.contains(c))
                .map(|(n, ty)| format!("{n} {ty}"))
                .collect();
            let only_b: Vec<String> = b
                .iter()
                .filter(|c| !a.contains(c))
                .map(|(n, ty)| format!("{n} {ty}"))
                .collect();
            bail!(
                "columns differ between node {} ({}) and node {node} ({}): only on {}: [{}]; only on {node}: [{}] \
                 (align the tables, or replicate the common columns with --columns)",
                nodes[0],
                first.name,
                t.name,
                nodes[0],
                only_a.join(", "),
                only_b.join(", ")
            );
        }
    }
    Ok(())
}

fn column_values(columns: &[Column]) -> Vec<Value> {
    columns
        .iter()
        .map(|c| context! { name => c.name.clone(), type => safe(c.type_sql.clone()) })
        .collect()
}

/// The text settings the replicated columns' text forms depend on. Each SET clause costs on every
/// call of the generated functions, so a table of integers and text pins none; a type repctl does
/// not know (an enum, a domain, a range, a composite) pins them all.
fn text_settings(columns: &[Column]) -> Vec<(&'static str, &'static str)> {
    let mut wanted: Vec<&str> = Vec::new();
    for c in columns {
        // The type without its modifier, e.g. "timestamp(3) with time zone" -> "timestamp with time zone".
        let mut depth = 0;
        let base: String = c
            .type_sql
            .trim_end_matches("[]")
            .chars()
            .filter(|ch| {
                depth += i32::from(*ch == '(') - i32::from(*ch == ')');
                depth == 0 && *ch != ')'
            })
            .collect();
        let needs: &[&str] = match base.trim() {
            "integer" | "bigint" | "smallint" | "text" | "character varying" | "character"
            | "boolean" | "numeric" | "uuid" | "json" | "jsonb" | "oid" | "inet" | "cidr"
            | "macaddr" | "name" => &[],
            "date" | "timestamp without time zone" | "time without time zone" => &["datestyle"],
            "timestamp with time zone" | "time with time zone" => &["datestyle", "timezone"],
            "interval" => &["intervalstyle"],
            "real" | "double precision" => &["extra_float_digits"],
            "bytea" => &["bytea_output"],
            _ => return db::TEXT_SETTINGS.to_vec(),
        };
        wanted.extend(needs);
    }
    db::TEXT_SETTINGS
        .iter()
        .filter(|(name, _)| wanted.contains(name))
        .copied()
        .collect()
}

/// `columns` is the reference node's column order, used on every node so hashes compare.
pub fn render_add(
    node: &str,
    logical: &str,
    table: &Table,
    columns: &[Column],
    req: &AddTable,
) -> Result<String> {
    let names_taken: Vec<String> = columns.iter().map(|c| c.name.clone()).collect();
    let update_columns: Vec<String> = names_taken
        .iter()
        .filter(|c| !table.key.contains(c))
        .cloned()
        .collect();
    // Images queued before a schema change may still carry former names: a key is what is left
    // when every other name is taken away.
    let former_names: Vec<String> = req.history.former.keys().cloned().collect();
    let non_key_columns: Vec<String> = update_columns
        .iter()
        .chain(&former_names)
        .cloned()
        .collect();
    let renames: Vec<Value> = req
        .history
        .former
        .iter()
        .filter_map(|(old, new)| new.as_ref().map(|new| context! { old, new }))
        .collect();
    // Only columns added since images were queued may be missing from one: they take the default.
    let with_defaults: Vec<Value> = columns
        .iter()
        .map(|c| {
            let default = req
                .history
                .added
                .contains(&c.name)
                .then(|| table.defaults.get(&c.name))
                .flatten()
                .map(|d| safe(d.clone()));
            context! { name => c.name.clone(), type => safe(c.type_sql.clone()), default }
        })
        .collect();
    let key_columns: Vec<Column> = table
        .key
        .iter()
        .filter_map(|k| columns.iter().find(|c| &c.name == k).cloned())
        .collect();
    // The order of a jsonb object's keys, which column arrays follow: shorter first, then bytewise.
    let mut columnar = columns.to_vec();
    columnar.sort_by(|a, b| {
        a.name
            .len()
            .cmp(&b.name.len())
            .then_with(|| a.name.cmp(&b.name))
    });
    // The non-key columns an update sets, each delta column with the name of its increment.
    let target = |(i, c): (usize, &Column)| {
        let inc = req
            .settings
            .delta
            .contains(&c.name)
            .then(|| format!("inc_{i}"));
        context! { name => c.name.clone(), type => safe(c.type_sql.clone()), inc }
    };
    let non_key = || {
        columns
            .iter()
            .enumerate()
            .filter(|(_, c)| !table.key.contains(&c.name))
    };
    let merge_targets: Vec<Value> = non_key().map(target).collect();
    let delta_columns: Vec<Value> = non_key()
        .filter(|(_, c)| req.settings.delta.contains(&c.name))
        .map(target)
        .collect();
    render::render(
        "table/add.sql",
        &context! {
            name => logical,
            node => node.to_string(),
            table => safe(table.name.sql()),
            table_owner => table.owner.clone(),
            nsp => table.name.schema.clone(),
            rel => table.name.table.clone(),
            columns => with_defaults,
            column_names => names_taken.clone(),
            column_types => columns.iter().map(|c| c.type_sql.clone()).collect::<Vec<_>>(),
            former_names,
            renames,
            former_json => serde_json::to_string(&req.history.former)?,
            added => req.history.added.clone(),
            key_columns => table.key.clone(),
            update_columns => update_columns.clone(),
            overriding => table.columns.iter().any(|c| c.identity_always),
            where => req.settings.where_clause.clone().map(safe),
            mode => req.settings.mode.as_str(),
            on_peer_failure => req.settings.on_peer_failure.as_str(),
            on_apply_error => req.settings.on_apply_error.as_str(),
            capture_fn => names::capture_fn(logical),
            apply_fn => names::apply_fn(logical),
            read_fn => names::read_fn(logical),
            reads => !req.settings.append_only && req.settings.conflict != ConflictRule::Error,
            key_column_types => column_values(&key_columns),
            non_key_columns,
            conflict => req.settings.conflict.as_str(),
            conflict_column => req.settings.conflict_column.clone(),
            node_priority => req.settings.node_priority.clone(),
            versioned => req.settings.conflict.versioned(),
            text_settings => text_settings(columns),
            columnar => column_values(&columnar),
            ts_alias => names::free_alias("ts", &names_taken),
            merging => !req.settings.delta.is_empty() || req.settings.merge_columns,
            merge_columns => req.settings.merge_columns,
            interleave_sequences => req.settings.interleave_sequences,
            append_only => req.settings.append_only,
            delta_columns => delta_columns,
            plain_columns => update_columns.iter().filter(|c| !req.settings.delta.contains(c)).cloned().collect::<Vec<_>>(),
            merge_targets => merge_targets,
        },
    )
}

/// Renders remove-table for one node; function names are derived as add-table derived them.
pub fn render_remove(
    node: &str,
    logical: &str,
    table: &TableName,
    table_exists: bool,
) -> Result<String> {
    render::render(
        "table/remove.sql",
        &context! {
            name => logical,
            node,
            table => safe(table.sql()),
            table_exists,
            capture_fn => names::capture_fn(logical),
            apply_fn => names::apply_fn(logical),
            read_fn => names::read_fn(logical),
        },
    )
}

/// Renders remove-table for every node; a node that does not replicate the table is left out.
pub fn remove_scripts(
    clients: &mut [(String, Client)],
    name: &TableName,
    force: bool,
) -> Result<Vec<Script>> {
    let logical = logical_name(name);
    let mut scripts = Vec::new();
    let mut found = false;
    for (node, client) in clients.iter_mut() {
        db::require_installed(client, node)?;
        let Some(stored) = Replicated::load(client, node, &logical)? else {
            continue;
        };
        found = true;
        let row = client.query_one(
            "select to_regclass(format('%I.%I', $1::text, $2::text)) is not null,
                    (select count(*) from repctl.queue q where q.tbl = $3)",
            &[&stored.local.schema, &stored.local.table, &logical],
        )?;
        let pending: i64 = row.get(1);
        if pending > 0 && !force {
            bail!(
                "node {node}: {pending} change(s) of {logical} are still queued for peers; run `repctl drain` first, \
                 or pass --force to discard them"
            );
        }
        let sql = render_remove(node, &logical, &stored.local, row.get(0))?;
        scripts.push(Script {
            node: node.clone(),
            sql,
            secret: None,
        });
    }
    if !found {
        bail!("table {logical} is not replicated on any node (see `repctl status`)");
    }
    Ok(scripts)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn col(type_sql: &str) -> Column {
        Column {
            name: "c".into(),
            type_sql: type_sql.into(),
            identity_always: false,
        }
    }

    #[test]
    fn settings_follow_the_column_types() {
        let names = |types: &[&str]| -> Vec<&str> {
            text_settings(&types.iter().map(|t| col(t)).collect::<Vec<_>>())
                .iter()
                .map(|(n, _)| *n)
                .collect()
        };
        assert!(names(&["integer", "text", "numeric(10,2)", "character varying(5)[]"]).is_empty());
        assert_eq!(names(&["timestamp(0) without time zone"]), ["datestyle"]);
        assert_eq!(
            names(&["timestamp(3) with time zone"]),
            ["datestyle", "timezone"]
        );
        assert_eq!(
            names(&["double precision", "bytea"]),
            ["extra_float_digits", "bytea_output"]
        );
        assert_eq!(names(&["public.mood"]).len(), db::TEXT_SETTINGS.len());
    }
}
