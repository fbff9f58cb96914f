//! Schema drift: a replicated table's columns, types and key compared across nodes and with what
//! repctl replicates, each difference with the command that fixes it.

use std::collections::BTreeMap;

use anyhow::Result;
use postgres::Client;
use serde::Serialize;

use crate::catalog::{self, Replicated, Table};
use crate::render::quote_ident;

#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Drift {
    /// The nodes it concerns.
    pub nodes: Vec<String>,
    pub problem: String,
    /// The command that fixes it.
    pub fix: String,
}

/// The drift of table `logical` over the reachable nodes that replicate it.
pub fn table_drift(clients: &mut [(String, Option<Client>)], logical: &str) -> Result<Vec<Drift>> {
    let mut seen: Vec<(String, Replicated, Table)> = Vec::new();
    let mut drift = Vec::new();
    for (node, client) in clients.iter_mut() {
        let Some(client) = client else { continue };
        if crate::db::installed_version(client)?.is_none() {
            continue;
        }
        let Some(stored) = Replicated::load(client, node, logical)? else {
            continue;
        };
        match catalog::inspect(client, node, &stored.local, Some(&stored.key)) {
            Ok(table) => seen.push((node.clone(), stored, table)),
            Err(e) => drift.push(Drift {
                nodes: vec![node.clone()],
                problem: format!("{e:#}"),
                fix: format!(
                    "restore the table on node {node}, or stop replicating it: repctl remove-table {logical} --force"
                ),
            }),
        }
    }
    drift.extend(compare(logical, &seen));
    Ok(drift)
}

/// Each node's stored settings and its table as it is now (a key no longer backed by a unique
/// index fails the inspection, reported by the caller).
fn compare(logical: &str, seen: &[(String, Replicated, Table)]) -> Vec<Drift> {
    let Some((_, stored, _)) = seen.first() else {
        return Vec::new();
    };
    let all: Vec<String> = seen.iter().map(|s| s.0.clone()).collect();
    let replicated = &stored.columns;
    let mut drift = Vec::new();
    // Column name to each node's type, in the order the columns first appear.
    let mut columns: Vec<(String, BTreeMap<String, String>)> = Vec::new();
    for (node, _, table) in seen {
        for c in &table.columns {
            match columns.iter_mut().find(|(n, _)| n == &c.name) {
                Some((_, types)) => {
                    types.insert(node.clone(), c.type_sql.clone());
                }
                None => columns.push((
                    c.name.clone(),
                    BTreeMap::from([(node.clone(), c.type_sql.clone())]),
                )),
            }
        }
    }
    let with = |list: &[String], extra: &str| -> String {
        list.iter()
            .map(String::as_str)
            .chain([extra])
            .filter(|c| !c.is_empty())
            .collect::<Vec<_>>()
            .join(",")
    };
    for (name, types) in &columns {
        let is_replicated = replicated.contains(name);
        let (first_node, first_type) = types.iter().next().expect("seen on a node");
        let lacking: Vec<String> = all
            .iter()
            .filter(|n| !types.contains_key(*n))
            .cloned()
            .collect();
        if !lacking.is_empty() {
            let on: Vec<String> = types.keys().cloned().collect();
            let add = seen
                .iter()
                .filter(|(n, _, _)| lacking.contains(n))
                .map(|(n, s, _)| {
                    format!(
                        "on node {n}: alter table {} add column {} {first_type}",
                        s.local.sql(),
                        quote_ident(name)
                    )
                })
                .collect::<Vec<_>>()
                .join("; ");
            drift.push(Drift {
                nodes: lacking.clone(),
                problem: format!(
                    "column {name} {first_type} is on node(s) {} only{}",
                    on.join(", "),
                    if is_replicated {
                        " and is replicated"
                    } else {
                        ""
                    }
                ),
                fix: if is_replicated {
                    format!("{add} (as a superuser, after set repctl.allow_ddl = on)")
                } else {
                    format!(
                        "{add}; then to replicate it: repctl alter-table {logical} --columns {}",
                        with(replicated, name)
                    )
                },
            });
            continue;
        }
        if types.values().any(|t| t != first_type) {
            let each: Vec<String> = types.iter().map(|(n, t)| format!("{t} on {n}")).collect();
            drift.push(Drift {
                nodes: all.clone(),
                problem: format!("column {name} has different types: {}", each.join(", ")),
                fix: format!(
                    "repctl alter-table {logical} --ddl 'alter column {c} type {first_type} using {c}::{first_type}' \
                     (the type node {first_node} has)",
                    c = quote_ident(name)
                ),
            });
            continue;
        }
        let added_since = seen.iter().all(|(_, s, _)| {
            s.table_columns
                .as_ref()
                .is_none_or(|known| !known.contains(name))
        });
        if !is_replicated && added_since {
            drift.push(Drift {
                nodes: all.clone(),
                problem: format!(
                    "column {name} {first_type} was added since add-table and is not replicated"
                ),
                fix: format!(
                    "repctl alter-table {logical} --columns {} (rows written before differ there until \
                     repctl repair --from NODE {logical})",
                    with(replicated, name)
                ),
            });
        }
    }
    for c in replicated {
        if !columns.iter().any(|(n, _)| n == c) {
            drift.push(Drift {
                nodes: all.clone(),
                problem: format!("replicated column {c} is on no node"),
                fix: format!(
                    "repctl alter-table {logical} --columns {}",
                    replicated
                        .iter()
                        .filter(|x| *x != c)
                        .cloned()
                        .collect::<Vec<_>>()
                        .join(",")
                ),
            });
        }
    }
    drift
}
