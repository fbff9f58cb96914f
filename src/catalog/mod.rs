//! Catalog inspection: what a table looks like on one node.

pub mod history;
pub mod ident;
pub mod links;
pub mod replicated;
pub mod sequences;

use std::collections::BTreeMap;

use anyhow::{Context, Result, bail};
use postgres::Client;

pub use history::History;
pub use ident::TableName;
pub use replicated::{ConflictRule, Mode, OnApplyError, OnPeerFailure, Replicated, Settings};

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
    /// Column name to its default expression (`pg_get_expr`, qualified as for search_path = pg_catalog).
    pub defaults: BTreeMap<String, String>,
}

/// Reads a table's columns and its key: the primary key, or `key` (add-table --key), which a
/// unique index over NOT NULL columns must back. Errors name the node and the table.
pub fn inspect(
    client: &mut Client,
    node: &str,
    name: &TableName,
    key: Option<&[String]>,
) -> Result<Table> {
    let mut tx = client.transaction()?;
    // Generated functions run with search_path = pg_catalog, so type names must be qualified the way
    // format_type qualifies them there.
    tx.query_one("select set_config('search_path', 'pg_catalog', true)", &[])?;
    let table = inspect_in(&mut tx, node, name, key)?;
    tx.commit()?;
    Ok(table)
}

/// As [`inspect`], inside a transaction whose search_path is pinned to pg_catalog.
pub fn inspect_in(
    client: &mut postgres::Transaction<'_>,
    node: &str,
    name: &TableName,
    key: Option<&[String]>,
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
    // No key at all (add-table --append-only) asks for none.
    if let Some(key) = key
        && !key.is_empty()
    {
        check_key(client, node, name, oid, key)?;
    }
    let primary: Vec<String> = client
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
    let defaults = client
        .query(
            "select a.attname::text, pg_get_expr(d.adbin, d.adrelid)
               from pg_attrdef d join pg_attribute a on a.attrelid = d.adrelid and a.attnum = d.adnum
              where d.adrelid = $1 and a.attgenerated = ''",
            &[&oid],
        )?
        .iter()
        .map(|r| (r.get(0), r.get(1)))
        .collect();
    if key.is_none() && primary.is_empty() {
        bail!(
            "node {node}: table {name} has no primary key; repctl identifies rows by it (add one: alter table {} add primary key (...), \
             or name the NOT NULL columns of a unique index with --key COL[,COL]; a table only ever inserted into, \
             such as a log, can replicate without a key: --append-only)",
            name.sql()
        );
    }
    let key = key.map_or(primary, <[String]>::to_vec);
    Ok(Table {
        name: name.clone(),
        columns,
        key,
        owner,
        defaults,
    })
}

/// `key` must be NOT NULL columns over which a unique index (not partial, not on expressions, not
/// deferrable) is built: the apply's `ON CONFLICT` infers that index, as `REPLICA IDENTITY USING
/// INDEX` needs one.
fn check_key(
    client: &mut postgres::Transaction<'_>,
    node: &str,
    name: &TableName,
    oid: u32,
    key: &[String],
) -> Result<()> {
    for c in key {
        let not_null: Option<bool> = client
            .query_opt(
                "select attnotnull from pg_attribute where attrelid = $1 and attname = $2 and attnum > 0 and not attisdropped",
                &[&oid, c],
            )?
            .map(|r| r.get(0));
        match not_null {
            None => bail!("node {node}: --key names {c:?}, which is not a column of {name}"),
            Some(false) => bail!(
                "node {node}: --key column {c:?} of {name} may be null; key columns must be NOT NULL \
                 (alter table {} alter column {} set not null)",
                name.sql(),
                crate::render::quote_ident(c)
            ),
            Some(true) => {}
        }
    }
    let indexed: bool = client
        .query_one(
            "select exists (select from pg_index i
                             where i.indrelid = $1 and i.indisunique and i.indimmediate and i.indpred is null
                               and i.indexprs is null and i.indnkeyatts = cardinality($2::text[])
                               and (select array_agg(a.attname::text order by a.attname)
                                      from unnest((i.indkey::int2[])[0:i.indnkeyatts - 1]) as k(attnum)
                                      join pg_attribute a on a.attrelid = i.indrelid and a.attnum = k.attnum)
                                   = (select array_agg(c order by c) from unnest($2::text[]) as c))",
            &[&oid, &key],
        )?
        .get(0);
    if !indexed {
        bail!(
            "node {node}: no unique index of {name} is over exactly ({}); --key needs one, not partial nor \
             deferrable (create unique index on {} ({}))",
            key.join(", "),
            name.sql(),
            key.iter()
                .map(|c| crate::render::quote_ident(c))
                .collect::<Vec<_>>()
                .join(", ")
        );
    }
    Ok(())
}
