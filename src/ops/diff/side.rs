//! One node's side of a row-level comparison: the replicated table as that node has it, and the
//! comparison queries of `templates/ops/diff.sql` run against it.

use std::collections::{HashMap, HashSet};

use anyhow::{Context, Result, bail};
use minijinja::context;
use postgres::Client;
use postgres::types::ToSql;

use crate::catalog::{self, Column, Replicated, TableName};
use crate::db;
use crate::ops::verify::{self, Checksum};
use crate::render::{self, safe};

/// A key range: `lo` inclusive, `hi` exclusive, each a key as jsonb text; None is open.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Range {
    pub lo: Option<String>,
    pub hi: Option<String>,
}

/// A replicated table on one node.
#[derive(Debug, Clone)]
pub struct TableOn {
    pub logical: String,
    pub name: TableName,
    /// Replicated columns in the order every node hashes them, with their types on this node.
    pub columns: Vec<Column>,
    /// Primary key columns in key order.
    pub key: Vec<Column>,
    pub where_clause: Option<String>,
    /// How ranges are summed: text mode until every node's catalog has been read (`agree`).
    pub checksum: Checksum,
}

impl TableOn {
    /// Reads what repctl recorded for the table on the node, and the column types from the catalog.
    pub fn load(client: &mut Client, node: &str, logical: &str) -> Result<TableOn> {
        db::require_installed(client, node)?;
        let stored = Replicated::require(client, node, logical)?;
        let name = stored.local;
        let inspected = catalog::inspect(client, node, &name, Some(&stored.key))?;
        let find = |wanted: &String| {
            inspected
                .columns
                .iter()
                .find(|c| &c.name == wanted)
                .cloned()
                .with_context(|| {
                    format!(
                        "node {node}: {name} has no column {wanted:?}, which repctl replicates as {logical}; \
                         restore it, or remove and add the table again"
                    )
                })
        };
        Ok(TableOn {
            checksum: Checksum::text(&stored.columns),
            logical: stored.logical,
            columns: stored.columns.iter().map(find).collect::<Result<_>>()?,
            // An append-only table's rows are compared whole (identical rows count as one).
            key: if stored.settings.append_only {
                &stored.columns
            } else {
                &stored.key
            }
            .iter()
            .map(find)
            .collect::<Result<_>>()?,
            name,
            where_clause: stored.settings.where_clause,
        })
    }

    pub fn column_names(&self) -> Vec<String> {
        self.columns.iter().map(|c| c.name.clone()).collect()
    }
}

/// Bind parameters collected while rendering, so a template names each by its number.
#[derive(Default)]
pub struct Params(Vec<Box<dyn ToSql + Sync + Send>>);

impl Params {
    /// Adds a parameter and returns its placeholder number.
    pub fn add(&mut self, value: impl ToSql + Sync + Send + 'static) -> i64 {
        self.0.push(Box::new(value));
        self.0.len() as i64
    }

    pub fn refs(&self) -> Vec<&(dyn ToSql + Sync)> {
        self.0
            .iter()
            .map(|p| p.as_ref() as &(dyn ToSql + Sync))
            .collect()
    }
}

/// Placeholder numbers a query's template refers to: a range's bounds, and the bounds query's
/// row limit and step.
#[derive(Debug, Default, Clone, Copy)]
pub struct Slots {
    pub lo: Option<i64>,
    pub hi: Option<i64>,
    pub limit: Option<i64>,
    pub step: Option<i64>,
}

impl Slots {
    fn range(range: &Range, p: &mut Params) -> Slots {
        Slots {
            lo: range.lo.clone().map(|k| p.add(k)),
            hi: range.hi.clone().map(|k| p.add(k)),
            ..Slots::default()
        }
    }
}

/// Renders a query of `ops/diff.sql` for a table.
pub fn render_query(table: &TableOn, query: &str, slots: &Slots) -> Result<String> {
    let key: Vec<_> = table
        .key
        .iter()
        .map(|c| context! { name => c.name.clone(), type => safe(c.type_sql.clone()) })
        .collect();
    render::render(
        "ops/diff.sql",
        &context! {
            query,
            table => safe(table.name.sql()),
            key,
            columns => table.column_names(),
            where => table.where_clause.clone().map(safe),
            checksum => table.checksum.context(),
            lo => slots.lo,
            hi => slots.hi,
            limit => slots.limit,
            step => slots.step,
        },
    )
}

/// A node's connection and its copy of the table.
pub struct Side<'c> {
    pub node: String,
    pub client: &'c mut Client,
    pub table: TableOn,
}

impl<'c> Side<'c> {
    /// Prepares the session (text forms pinned as verify pins them; no JIT, whose compile time
    /// dwarfs these short queries) and reads the table's description.
    pub fn open(node: &str, client: &'c mut Client, logical: &str) -> Result<Side<'c>> {
        for (name, value) in db::TEXT_SETTINGS
            .iter()
            .chain(&[("jit", "off"), ("search_path", "pg_catalog")])
        {
            client
                .query_one("select set_config($1, $2, false)", &[name, value])
                .with_context(|| format!("node {node}: setting up the session"))?;
        }
        let table = TableOn::load(client, node, logical)?;
        Ok(Side {
            node: node.to_string(),
            client,
            table,
        })
    }

    fn sql(&self, query: &str, slots: &Slots) -> Result<String> {
        render_query(&self.table, query, slots)
    }

    fn context(&self, what: &str) -> String {
        format!(
            "node {}: {what} of {} ({})",
            self.node, self.table.logical, self.table.name
        )
    }

    /// The planner's estimate of the table's rows (-1 when never analyzed).
    pub fn estimate(&mut self) -> Result<i64> {
        let row = self
            .client
            .query_one(
                "select c.reltuples::int8 from pg_class c join pg_namespace n on n.oid = c.relnamespace
                  where n.nspname = $1 and c.relname = $2",
                &[&self.table.name.schema, &self.table.name.table],
            )
            .with_context(|| self.context("estimating the rows"))?;
        Ok(row.get(0))
    }

    /// Starts of blocks of `step` keys from the range's lower bound on, at most `blocks + 1` of them
    /// (the last, when there, starts the next chunk).
    pub fn bounds(&mut self, range: &Range, step: i64, blocks: i64) -> Result<Vec<String>> {
        let mut p = Params::default();
        let slots = Slots {
            limit: Some(p.add(step * blocks + 1)),
            step: Some(p.add(step)),
            ..Slots::range(range, &mut p)
        };
        let sql = self.sql("bounds", &slots)?;
        let rows = self
            .client
            .query(&sql, &p.refs())
            .with_context(|| self.context("choosing key ranges"))?;
        Ok(rows.iter().map(|r| r.get(0)).collect())
    }

    /// (count, sum of row hashes) of each block, in order.
    pub fn sums(&mut self, blocks: &[Range]) -> Result<Vec<(i64, i64)>> {
        let mut out = vec![(0, 0); blocks.len()];
        // Blocks bounded on both sides go in one statement; the open ends of the table one each.
        let (bounded, open): (Vec<usize>, Vec<usize>) =
            (0..blocks.len()).partition(|&i| blocks[i].lo.is_some() && blocks[i].hi.is_some());
        if !bounded.is_empty() {
            let pairs: Vec<serde_json::Value> = bounded
                .iter()
                .map(|&i| {
                    let parse = |k: &Option<String>| {
                        serde_json::from_str::<serde_json::Value>(k.as_deref().unwrap_or("null"))
                    };
                    Ok(serde_json::json!([
                        parse(&blocks[i].lo)?,
                        parse(&blocks[i].hi)?
                    ]))
                })
                .collect::<Result<_>>()?;
            let sql = self.sql("blocks_sum", &Slots::default())?;
            let arg = serde_json::Value::Array(pairs).to_string();
            let rows = self
                .client
                .query(&sql, &[&arg])
                .with_context(|| self.context("hashing key ranges"))?;
            for r in rows {
                let i: i64 = r.get(0);
                out[bounded[(i - 1) as usize]] = (r.get(1), r.get(2));
            }
        }
        for i in open {
            let mut p = Params::default();
            let sql = self.sql("range_sum", &Slots::range(&blocks[i], &mut p))?;
            let row = self
                .client
                .query_one(&sql, &p.refs())
                .with_context(|| self.context("hashing a key range"))?;
            out[i] = (row.get(0), row.get(1));
        }
        Ok(out)
    }

    /// Every key in the range with its row hash.
    pub fn rows(&mut self, range: &Range) -> Result<Vec<(String, i32)>> {
        let mut p = Params::default();
        let sql = self.sql("range_rows", &Slots::range(range, &mut p))?;
        let rows = self
            .client
            .query(&sql, &p.refs())
            .with_context(|| self.context("reading the keys of a differing range"))?;
        Ok(rows.iter().map(|r| (r.get(0), r.get(1))).collect())
    }

    /// The current row hash of each key (None: no row), in key order.
    pub fn recheck(&mut self, keys: &[String]) -> Result<Vec<(String, Option<i32>)>> {
        let sql = self.sql("recheck", &Slots::default())?;
        let rows = self
            .client
            .query(&sql, &[&keys])
            .with_context(|| self.context("re-reading differing keys"))?;
        Ok(rows.iter().map(|r| (r.get(0), r.get(1))).collect())
    }

    /// The row image (column name to text form or null) of each key that has a row.
    pub fn images(
        &mut self,
        keys: &[String],
    ) -> Result<HashMap<String, serde_json::Map<String, serde_json::Value>>> {
        let sql = self.sql("images", &Slots::default())?;
        let rows = self
            .client
            .query(&sql, &[&keys])
            .with_context(|| self.context("reading rows to copy"))?;
        rows.iter()
            .map(|r| Ok((r.get(0), serde_json::from_str(r.get(1))?)))
            .collect()
    }

    /// Which of the keys have a change of this table queued here for any peer; `true` when a
    /// TRUNCATE is queued (every key is pending then).
    pub fn queued(&mut self, keys: &[String]) -> Result<(bool, HashSet<String>)> {
        let sql = self.sql("queued", &Slots::default())?;
        let rows = self
            .client
            .query(&sql, &[&self.table.logical, &keys])
            .with_context(|| self.context("reading the queue for keys"))?;
        let mut all = false;
        let mut found = HashSet::new();
        for r in rows {
            let k: String = r.get(0);
            if k == "*" {
                all = true;
            } else {
                found.insert(k);
            }
        }
        Ok((all, found))
    }
}

/// Makes every side sum ranges the way verify does on these nodes (`verify::agree`).
pub fn agree(sides: &mut [Side<'_>]) -> Result<()> {
    let described = each(sides, |s| {
        verify::describe(s.client, &s.node, &s.table.logical)
    })?;
    let (mode, agreed) = verify::agree(&described);
    for (side, d) in sides.iter_mut().zip(&described) {
        side.table.checksum = d.checksum(mode, &agreed);
    }
    Ok(())
}

/// Runs `f` on every side at once, one thread each; results in side order.
pub fn each<'c, T: Send>(
    sides: &mut [Side<'c>],
    f: impl Fn(&mut Side<'c>) -> Result<T> + Sync,
) -> Result<Vec<T>> {
    let f = &f;
    std::thread::scope(|scope| {
        let handles: Vec<_> = sides
            .iter_mut()
            .map(|side| scope.spawn(move || f(side)))
            .collect();
        handles
            .into_iter()
            .map(|h| {
                h.join()
                    .unwrap_or_else(|_| bail!("a comparison thread panicked"))
            })
            .collect()
    })
}
