//! `repctl status`: nodes, replicated tables, and whether what repctl installed is complete.

use std::collections::BTreeMap;

use anyhow::Result;
use postgres::Client;
use serde::Serialize;

use super::drift::{Drift, table_drift};
use super::replicated_tables;
use crate::catalog::{Replicated, sequences};
use crate::config::Config;
use crate::db;
use crate::render::names;

#[derive(Debug, Serialize)]
pub struct NodeStatus {
    pub node: String,
    pub reachable: bool,
    pub server_version: Option<String>,
    pub repctl_version: Option<String>,
    /// Objects `init` should have created that are missing (peers' servers, mappings, queues).
    pub missing: Vec<String>,
    pub error: Option<String>,
}

#[derive(Debug, Serialize)]
pub struct TableStatus {
    pub table: String,
    pub mode: Option<String>,
    /// Columns applied as increments (`--delta`).
    pub delta: Vec<String>,
    /// Whether an update applies only the columns it changed (`--merge-columns`).
    pub merge_columns: bool,
    /// Node name to its local `schema.table` (absent where the table is not replicated).
    pub nodes: BTreeMap<String, String>,
    /// Node name to objects add-table should have installed there but that are missing.
    pub missing: BTreeMap<String, Vec<String>>,
    pub complete: bool,
    /// Node name to the conflicts it recorded for this table (see `repctl conflicts`).
    pub conflicts: BTreeMap<String, i64>,
    /// Schema differences across nodes and with what repctl replicates, each with its fix.
    pub drift: Vec<Drift>,
    /// Key sequences (serial, identity) that hand out the same values on several nodes.
    pub sequences: Vec<Drift>,
}

/// A pair with changes its peer refused: parked, or the one it is stopped at.
#[derive(Debug, Serialize)]
pub struct PairStatus {
    pub from: String,
    pub to: String,
    pub parked: i64,
    pub stopped: Option<String>,
}

#[derive(Debug, Serialize)]
pub struct Status {
    pub nodes: Vec<NodeStatus>,
    pub tables: Vec<TableStatus>,
    /// Only the pairs with parked changes or stopped.
    pub pairs: Vec<PairStatus>,
    pub complete: bool,
}

pub fn status(
    config: &Config,
    clients: &mut [(String, Option<Client>)],
    errors: &BTreeMap<String, String>,
) -> Result<Status> {
    let mut nodes = Vec::new();
    let mut pairs = Vec::new();
    for (name, client) in clients.iter_mut() {
        let Some(client) = client else {
            nodes.push(NodeStatus {
                node: name.clone(),
                reachable: false,
                server_version: None,
                repctl_version: None,
                missing: vec![],
                error: errors.get(name).cloned(),
            });
            continue;
        };
        let server_version: String = client.query_one("show server_version", &[])?.get(0);
        let repctl_version = db::installed_version(client)?;
        let missing = match repctl_version {
            None => vec!["repctl schema (run repctl init)".to_string()],
            Some(_) => node_missing(config, name, client)?,
        };
        if repctl_version.is_some() {
            pairs.extend(
                super::lag::node_lag(client, name)?
                    .into_iter()
                    .filter(|l| l.stopped.is_some() || l.parked.is_some_and(|n| n > 0))
                    .map(|l| PairStatus {
                        from: l.from,
                        to: l.to,
                        parked: l.parked.unwrap_or(0),
                        stopped: l.stopped,
                    }),
            );
        }
        nodes.push(NodeStatus {
            node: name.clone(),
            reachable: true,
            server_version: Some(server_version),
            repctl_version,
            missing,
            error: None,
        });
    }
    let mut tables = Vec::new();
    for logical in replicated_tables(clients)? {
        let mut t = TableStatus {
            table: logical.clone(),
            mode: None,
            delta: vec![],
            merge_columns: false,
            nodes: BTreeMap::new(),
            missing: BTreeMap::new(),
            complete: true,
            conflicts: BTreeMap::new(),
            drift: Vec::new(),
            sequences: Vec::new(),
        };
        let mut key_sequences = Vec::new();
        for (name, client) in clients.iter_mut() {
            let Some(client) = client else {
                t.complete = false;
                continue;
            };
            if db::installed_version(client)?.is_none() {
                t.missing.insert(name.clone(), vec!["repctl schema".into()]);
                t.complete = false;
                continue;
            }
            match Replicated::load(client, name, &logical)? {
                None => {
                    t.missing
                        .insert(name.clone(), vec!["table not added on this node".into()]);
                    t.complete = false;
                }
                Some(nt) => {
                    t.nodes.insert(name.clone(), nt.local.to_string());
                    if t.mode.is_none() {
                        t.delta = nt.settings.delta.clone();
                        t.merge_columns = nt.settings.merge_columns;
                    }
                    t.mode.get_or_insert(nt.settings.mode.as_str().to_string());
                    let n: i64 = client
                        .query_one(
                            "select count(*) from repctl.conflict where tbl = $1",
                            &[&logical],
                        )?
                        .get(0);
                    t.conflicts.insert(name.clone(), n);
                    key_sequences.push((
                        name.clone(),
                        sequences::key_sequences(client, name, &nt.local, &nt.key)?,
                    ));
                    let missing = table_missing(client, &nt)?;
                    if !missing.is_empty() {
                        t.complete = false;
                        t.missing.insert(name.clone(), missing);
                    }
                }
            }
        }
        t.drift = table_drift(clients, &logical)?;
        t.sequences = sequences::not_interleaved(&key_sequences)
            .into_iter()
            .map(|(nodes, problem)| Drift {
                nodes,
                problem,
                fix: format!("repctl alter-table {logical} --interleave-sequences"),
            })
            .collect();
        t.complete &= t.drift.is_empty() && t.sequences.is_empty();
        tables.push(t);
    }
    let complete = nodes.iter().all(|n| n.reachable && n.missing.is_empty())
        && tables.iter().all(|t| t.complete)
        && pairs.is_empty();
    Ok(Status {
        nodes,
        tables,
        pairs,
        complete,
    })
}

fn node_missing(config: &Config, name: &str, client: &mut Client) -> Result<Vec<String>> {
    let mut missing = Vec::new();
    let node = config.node(name)?;
    let adopted: bool = client
        .query_one(
            "select exists (select from pg_namespace n join pg_roles r on r.oid = n.nspowner
                             where n.nspname = 'repctl' and r.rolname = $1)",
            &[&config.agent.role],
        )?
        .get(0);
    if !adopted {
        missing.push(format!(
            "agent role {} as owner of schema repctl (run repctl init)",
            config.agent.role
        ));
    }
    for peer in config.peers_of(node) {
        let server = names::server(&peer.name);
        let partition = names::queue_partition(&peer.name);
        let row = client.query_one(
            "select exists (select from pg_foreign_server where srvname = $1),
                    exists (select from pg_user_mappings where srvname = $1 and usename = $4),
                    to_regclass(format('repctl.%I', $2::text)) is not null,
                    exists (select from repctl.peer where name = $3)",
            &[&server, &partition, &peer.name, &config.agent.role],
        )?;
        let checks = [
            (0, format!("foreign server {server} for peer {}", peer.name)),
            (
                1,
                format!("user mapping for {} on {server}", config.agent.role),
            ),
            (2, format!("queue partition {partition}")),
            (3, format!("peer row for {}", peer.name)),
        ];
        missing.extend(
            checks
                .into_iter()
                .filter(|(i, _)| !row.get::<_, bool>(*i))
                .map(|(_, what)| what),
        );
    }
    Ok(missing)
}

fn table_missing(client: &mut Client, t: &Replicated) -> Result<Vec<String>> {
    let rows = client.query(
        "select what from (values
                  ('capture function', to_regproc(format('repctl.%I', $1::text)) is not null),
                  ('apply function (SECURITY DEFINER)', exists (select from pg_proc where proname = $2::text
                                             and pronamespace = 'repctl'::regnamespace and prosecdef)),
                  ('table', to_regclass(format('%I.%I', $3::text, $4::text)) is not null)) c(what, ok)
          where not c.ok
         union all
         select 'trigger ' || trg from unnest($5::text[]) trg
          where not exists (select from pg_trigger g where g.tgname = trg
                              and g.tgrelid = to_regclass(format('%I.%I', $3::text, $4::text)))",
        &[
            &names::capture_fn(&t.logical),
            &names::apply_fn(&t.logical),
            &t.local.schema,
            &t.local.table,
            &names::CAPTURE_TRIGGERS.map(|(_, t)| t).to_vec(),
        ],
    )?;
    Ok(rows.iter().map(|r| r.get(0)).collect())
}
