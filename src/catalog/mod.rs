//! Catalog inspection: what a table looks like on one node.

pub mod ident;
pub mod replicated;

use anyhow::{Context, Result, bail};
use postgres::Client;

pub use ident::TableName;
pub use replicated::{ConflictRule, Mode, OnApplyError, OnPeerFailure, Replicated};

#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize)]
pub struct Column {
    pub name: String,
    /// `format_type` output: valid SQL for a cast.
    #[serde(rename = "type")]
    pub type_sql: String,
    /// `GENERATED ALWAYS AS IDENTITY`: inserts need `OVERRIDING SYSTEM VALUE`.
    pub identity_always: bool,
}

#[derive(Debug, Clone)]
pub struct Table {
    pub name: TableName,
    /// In column order; generated columns are left out (the peer computes its own).
    pub columns: Vec<Column>,
    /// Primary key columns in key order.
    pub key: Vec<String>,
    /// The table's owner: the apply function writes the table with this role's rights.
    pub owner: String,
}

/// Reads a table's columns and primary key; errors name the node and the table.
pub fn inspect(client: &mut Client, node: &str, name: &TableName) -> Result<Table> {
    let mut tx = client.transaction()?;
    // Generated functions run with search_path = pg_catalog, so type names must be qualified the way
    // format_type qualifies them there.
    tx.query_one("select set_config('search_path', 'pg_catalog', true)", &[])?;
    let table = inspect_in(&mut tx, node, name)?;
    tx.commit()?;
    Ok(table)
}

fn inspect_in(
    client: &mut postgres::Transaction<'_>,
    node: &str,
    name: &TableName,
) -> Result<Table> {
    let row = client
        .query_opt(
            "select c.oid, c.relkind::text, pg_get_userbyid(c.relowner)::text
               from pg_class c join pg_namespace n on n.oid = c.relnamespace
              where n.nspname = $1 and c.relname = $2",
            &[&name.schema, &name.table],
        )
        .with_context(|| format!("node {node}: reading the catalog for {name}"))?;
    let Some(row) = row else {
        bail!(
            "node {node}: table {name} does not exist (create it there first, or map another table with --map {node}=SCHEMA.TABLE)"
        );
    };
    let oid: u32 = row.get(0);
    let kind: String = row.get(1);
    let owner: String = row.get(2);
    if kind != "r" {
        bail!(
            "node {node}: {name} is not a plain table (relkind {kind}); repctl replicates ordinary tables"
        );
    }
    let columns = client
        .query(
            "select a.attname::text, format_type(a.atttypid, a.atttypmod), a.attidentity = 'a'
               from pg_attribute a
              where a.attrelid = $1 and a.attnum > 0 and not a.attisdropped and a.attgenerated = ''
              order by a.attnum",
            &[&oid],
        )?
        .iter()
        .map(|r| Column {
            name: r.get(0),
            type_sql: r.get(1),
            identity_always: r.get(2),
        })
        .collect();
    let key: Vec<String> = client
        .query(
            "select a.attname::text
               from pg_index i
               cross join lateral unnest(i.indkey::int2[]) with ordinality as k(attnum, ord)
               join pg_attribute a on a.attrelid = i.indrelid and a.attnum = k.attnum
              where i.indrelid = $1 and i.indisprimary
              order by k.ord",
            &[&oid],
        )?
        .iter()
        .map(|r| r.get(0))
        .collect();
    if key.is_empty() {
        bail!(
            "node {node}: table {name} has no primary key; repctl identifies rows by it (add one: alter table {} add primary key (...))",
            name.sql()
        );
    }
    Ok(Table {
        name: name.clone(),
        columns,
        key,
        owner,
    })
}
