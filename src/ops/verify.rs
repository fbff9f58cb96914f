//! `repctl verify`: `count(*)` and a sum of row hashes per node. The row hash is the seed's
//! `hashtext(row::text)` (text forms pinned, so nodes with different session defaults compare), or,
//! when every node can, a chain of the columns' own hash functions, which skips formatting values.

use anyhow::{Context, Result, anyhow};
use minijinja::context;
use postgres::Client;
use serde::Serialize;

use super::chosen_tables;
use crate::catalog::Replicated;
use crate::db;
use crate::render::{self, safe};

/// How rows are hashed: every node must hash the same way for the sums to compare.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum Mode {
    /// `hashtext(row(...)::text)`: any server, any column type.
    Text,
    /// Each column's extended hash function, chained (`templates/ops/checksum.sql`); needs
    /// `hash_record_extended` (PostgreSQL 14) and one major version on every node, whose hash
    /// functions then agree.
    Hash,
}

/// How hash mode hashes one column (see `templates/ops/checksum.sql`).
#[derive(Debug, Clone)]
pub struct ColumnHash {
    pub name: String,
    pub nullable: bool,
    /// "direct", "record" or "text".
    pub how: String,
    pub schema: Option<String>,
    pub func: Option<String>,
}

/// Per replicated column (in the order of `$3`): nullable, and how to hash it. Only types whose
/// hash opclass calls two values equal exactly when their text forms (settings pinned) are equal
/// get their hash function, so hash mode finds the differences text mode finds: not numeric (1.0
/// and 1.00), float (0 and -0), interval ('1 day' and '24 hours'), jsonb, text under a
/// nondeterministic collation, nor types hashed by OID (enums, reg*), nor types without a hash
/// opclass (json, point, xml, ...). Those, domains over them and arrays hash their text form.
const DESCRIBE_COLUMNS: &str = "
select not a.attnotnull,
       case when h.func is null then 'text' when h.arg = b.base then 'direct' else 'record' end,
       h.schema, h.func
  from unnest($3::text[]) with ordinality as c(name, i)
  join pg_attribute a
    on a.attrelid = (select r.oid from pg_class r join pg_namespace n on n.oid = r.relnamespace
                      where n.nspname = $1 and r.relname = $2)
   and a.attname = c.name and not a.attisdropped
  join pg_type t on t.oid = a.atttypid
 cross join lateral (select case when t.typtype = 'd' then t.typbasetype else t.oid end) as b(base)
  left join lateral (
        select n.nspname::text as schema, p.proname::text as func, p.proargtypes[0] as arg
          from pg_opclass o
          join pg_am am on am.oid = o.opcmethod and am.amname = 'hash'
          join pg_amproc ap on ap.amprocfamily = o.opcfamily and ap.amprocnum = 2
                           and ap.amproclefttype = o.opcintype and ap.amprocrighttype = o.opcintype
          join pg_proc p on p.oid = ap.amproc
          join pg_namespace n on n.oid = p.pronamespace
         where o.opcdefault and o.opcintype = b.base
           and b.base = any ('{int2,int4,int8,oid,text,bool,date,time,timetz,timestamp,timestamptz,uuid,bytea}'::regtype[])
           and coalesce((select k.collisdeterministic from pg_collation k where k.oid = a.attcollation), true)
       ) as h on true
 order by c.i";

/// A replicated table as one node has it, and what its checksum needs to know there.
pub struct Described {
    pub table: Replicated,
    /// `server_version_num`.
    pub version: i32,
    pub columns: Vec<ColumnHash>,
}

/// Reads how a node would checksum the table.
pub fn describe(client: &mut Client, node: &str, logical: &str) -> Result<Described> {
    let table = Replicated::require(client, node, logical)?;
    let version: i32 = client
        .query_one("select current_setting('server_version_num')::int4", &[])?
        .get(0);
    let rows = client
        .query(
            DESCRIBE_COLUMNS,
            &[&table.local.schema, &table.local.table, &table.columns],
        )
        .with_context(|| format!("node {node}: reading the column types of {logical}"))?;
    if rows.len() != table.columns.len() {
        anyhow::bail!(
            "node {node}: {} lacks a column repctl replicates as {logical}",
            table.local
        );
    }
    let columns = table
        .columns
        .iter()
        .zip(rows)
        .map(|(name, r)| ColumnHash {
            name: name.clone(),
            nullable: r.get(0),
            how: r.get(1),
            schema: r.get(2),
            func: r.get(3),
        })
        .collect();
    Ok(Described {
        table,
        version,
        columns,
    })
}

/// The mode every node can use, and how to hash each column position on all of them: a column's
/// hash function only where every node has the same one, nullable where any node allows NULL.
pub fn agree<'d>(nodes: impl IntoIterator<Item = &'d Described>) -> (Mode, Vec<ColumnHash>) {
    let nodes: Vec<&Described> = nodes.into_iter().collect();
    let Some(first) = nodes.first() else {
        return (Mode::Text, Vec::new());
    };
    let same_major = nodes
        .iter()
        .all(|n| n.version / 10000 == first.version / 10000);
    let same_columns = nodes.iter().all(|n| n.columns.len() == first.columns.len());
    if first.version < 140000 || !same_major || !same_columns {
        return (Mode::Text, Vec::new());
    }
    let columns = (0..first.columns.len())
        .map(|i| {
            let mut agreed = first.columns[i].clone();
            agreed.nullable = nodes.iter().any(|n| n.columns[i].nullable);
            let hashed = |c: &ColumnHash| (c.how.clone(), c.schema.clone(), c.func.clone());
            if nodes
                .iter()
                .any(|n| hashed(&n.columns[i]) != hashed(&agreed))
            {
                agreed.how = "text".into();
                agreed.schema = None;
                agreed.func = None;
            }
            agreed
        })
        .collect();
    (Mode::Hash, columns)
}

/// How one node hashes its rows (`templates/ops/checksum.sql`): the mode every node agreed on,
/// and the node's own columns in order.
#[derive(Debug, Clone)]
pub struct Checksum {
    pub mode: Mode,
    pub columns: Vec<ColumnHash>,
}

impl Checksum {
    /// Text mode over the named columns.
    pub fn text(columns: &[String]) -> Checksum {
        Checksum {
            mode: Mode::Text,
            columns: columns
                .iter()
                .map(|name| ColumnHash {
                    name: name.clone(),
                    nullable: true,
                    how: "text".into(),
                    schema: None,
                    func: None,
                })
                .collect(),
        }
    }

    /// The `checksum` a template passes to `row_sum`.
    pub fn context(&self) -> minijinja::Value {
        let columns: Vec<_> = self
            .columns
            .iter()
            .map(|c| {
                context! {
                    name => c.name.clone(),
                    nullable => c.nullable,
                    how => c.how.clone(),
                    schema => c.schema.clone(),
                    func => c.func.clone(),
                }
            })
            .collect();
        let mode = match self.mode {
            Mode::Text => "text",
            Mode::Hash => "hash",
        };
        context! { mode, columns }
    }
}

impl Described {
    /// This node's checksum: its own column names, hashed as `agree` decided for every node.
    pub fn checksum(&self, mode: Mode, agreed: &[ColumnHash]) -> Checksum {
        match mode {
            Mode::Text => Checksum::text(&self.table.columns),
            Mode::Hash => Checksum {
                mode,
                columns: self
                    .columns
                    .iter()
                    .zip(agreed)
                    .map(|(own, how)| ColumnHash {
                        name: own.name.clone(),
                        ..how.clone()
                    })
                    .collect(),
            },
        }
    }
}

/// The checksum query for one node.
pub fn checksum_sql(table: &Replicated, checksum: &Checksum) -> Result<String> {
    render::render(
        "ops/verify.sql",
        &context! {
            checksum => checksum.context(),
            table => safe(table.local.sql()),
            where => table.settings.where_clause.clone().map(safe),
        },
    )
}

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
    /// How the nodes hashed their rows (hashes only compare within one mode).
    pub mode: Mode,
    /// Changes of the table still queued on any node: a difference may only be them in transit.
    pub pending: i64,
    pub nodes: Vec<NodeSum>,
    /// Schema differences (see `repctl status`): rows then differ, or cannot be compared, for it.
    pub schema: Vec<super::drift::Drift>,
}

/// Checksums every replicated table (or the one named) on every node.
pub fn verify(
    clients: &mut [(String, Option<Client>)],
    only: Option<&str>,
) -> Result<Vec<TableReport>> {
    let mut reports = Vec::new();
    for logical in &chosen_tables(clients, only)? {
        // The catalogs first: the nodes must agree on how to hash before any of them does.
        let described: Vec<(&str, Result<(&mut Client, Described)>)> = clients
            .iter_mut()
            .map(|(node, client)| {
                let d = match client {
                    None => Err(anyhow!("unreachable")),
                    Some(client) => describe(client, node, logical).map(|d| (client, d)),
                };
                (node.as_str(), d)
            })
            .collect();
        let (mode, agreed) = agree(
            described
                .iter()
                .filter_map(|(_, d)| d.as_ref().ok().map(|(_, d)| d)),
        );
        // Every node at once: the scans dominate, and the nodes are different servers.
        let nodes: Vec<NodeSum> = std::thread::scope(|scope| {
            let handles: Vec<_> = described
                .into_iter()
                .map(|(node, d)| {
                    let agreed = &agreed;
                    scope.spawn(move || {
                        d.and_then(|(client, d)| checksum(client, node, logical, &d, mode, agreed))
                            .unwrap_or_else(|e| NodeSum {
                                node: node.to_string(),
                                table: None,
                                rows: None,
                                hash: None,
                                error: Some(format!("{e:#}")),
                            })
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
        let schema = super::drift::table_drift(clients, logical)?;
        let equal = schema.is_empty()
            && nodes
                .iter()
                .all(|n| n.error.is_none() && (n.rows, n.hash) == (first.rows, first.hash));
        reports.push(TableReport {
            table: logical.clone(),
            equal,
            mode,
            pending,
            nodes,
            schema,
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

fn checksum(
    client: &mut Client,
    node: &str,
    logical: &str,
    described: &Described,
    mode: Mode,
    agreed: &[ColumnHash],
) -> Result<NodeSum> {
    let sql = checksum_sql(&described.table, &described.checksum(mode, agreed))?;
    let mut tx = client.build_transaction().read_only(true).start()?;
    db::pin_text_settings(&mut tx)?;
    let row = tx
        .query_one(&sql, &[])
        .with_context(|| format!("node {node}: checksumming {logical}"))?;
    tx.commit()?;
    Ok(NodeSum {
        node: node.to_string(),
        table: Some(described.table.local.to_string()),
        rows: Some(row.get(0)),
        hash: Some(row.get(1)),
        error: None,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn node(version: i32, columns: &[(&str, bool, &str)]) -> Described {
        Described {
            table: Replicated {
                logical: "public.t".into(),
                local: crate::catalog::TableName {
                    schema: "public".into(),
                    table: "t".into(),
                },
                columns: columns.iter().map(|c| c.0.to_string()).collect(),
                key: vec![columns[0].0.to_string()],
                history: Default::default(),
                table_columns: None,
                settings: Default::default(),
            },
            version,
            columns: columns
                .iter()
                .map(|&(name, nullable, func)| ColumnHash {
                    name: name.into(),
                    nullable,
                    how: if func.is_empty() { "text" } else { "direct" }.into(),
                    schema: (!func.is_empty()).then(|| "pg_catalog".into()),
                    func: (!func.is_empty()).then(|| func.into()),
                })
                .collect(),
        }
    }

    #[test]
    fn hash_mode_needs_14_and_one_major_version() {
        let cols = [("id", false, "hashint4extended")];
        let mode = |versions: &[i32]| {
            let nodes: Vec<_> = versions.iter().map(|&v| node(v, &cols)).collect();
            agree(&nodes).0
        };
        assert_eq!(mode(&[150004, 150010]), Mode::Hash);
        assert_eq!(mode(&[140000, 140011]), Mode::Hash);
        assert_eq!(mode(&[130012, 130012]), Mode::Text);
        assert_eq!(mode(&[150004, 160000]), Mode::Text);
        assert_eq!(mode(&[150004, 130012]), Mode::Text);
    }

    #[test]
    fn columns_hash_as_every_node_can() {
        let a = node(
            150000,
            &[
                ("id", false, "hashint4extended"),
                ("v", false, "citext_hash_extended"),
                ("w", false, ""),
            ],
        );
        let b = node(
            150000,
            &[
                ("id", false, "hashint4extended"),
                ("v", false, ""),
                ("w", true, ""),
            ],
        );
        let (mode, agreed) = agree([&a, &b]);
        assert_eq!(mode, Mode::Hash);
        let how: Vec<_> = agreed
            .iter()
            .map(|c| (c.how.as_str(), c.func.as_deref(), c.nullable))
            .collect();
        assert_eq!(
            how,
            [
                ("direct", Some("hashint4extended"), false),
                ("text", None, false),
                ("text", None, true)
            ]
        );
    }
}
