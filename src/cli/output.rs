//! Shared output: tables for people, JSON for scripts, and connecting to whatever nodes answer.

use std::collections::BTreeMap;

use comfy_table::{ContentArrangement, Table, presets::UTF8_FULL_CONDENSED};
use postgres::Client;
use serde::Serialize;

use crate::config::Config;
use crate::db;

/// A table for people with N columns: every row has a cell under each header (checked when compiled).
pub struct Human<const N: usize>(Table);

impl<const N: usize> Human<N> {
    pub fn row(&mut self, cells: [String; N]) {
        self.0.add_row(cells);
    }
}

impl<const N: usize> std::fmt::Display for Human<N> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        self.0.fmt(f)
    }
}

pub fn table<const N: usize>(header: [&str; N]) -> Human<N> {
    Human(columns(&header))
}

/// A table whose columns are only known at run time (one per node); its rows are built from the
/// same list as its header.
pub fn columns(header: &[&str]) -> Table {
    let mut t = Table::new();
    t.load_style(UTF8_FULL_CONDENSED)
        .set_content_arrangement(ContentArrangement::Dynamic)
        .set_header(header);
    t
}

pub fn print_json(value: &impl Serialize) -> anyhow::Result<()> {
    println!("{}", serde_json::to_string_pretty(value)?);
    Ok(())
}

/// Clients for every node that answers; the others with their error (read-only commands go on without them).
pub type Reachable = (Vec<(String, Option<Client>)>, BTreeMap<String, String>);

pub fn connect_reachable(config: &Config) -> Reachable {
    let mut errors = BTreeMap::new();
    let clients = config
        .nodes
        .iter()
        .map(|n| match db::connect(n) {
            Ok(c) => (n.name.clone(), Some(c)),
            Err(e) => {
                errors.insert(n.name.clone(), format!("{e:#}"));
                (n.name.clone(), None)
            }
        })
        .collect();
    (clients, errors)
}

/// A dry run prints the scripts; otherwise they run (see `install::run_scripts`) and each node
/// that ran one gets a line saying what it now does.
pub fn install_or_print(
    clients: &mut [(String, Client)],
    scripts: &[crate::install::Script],
    dry_run: bool,
    done: impl Fn(&str) -> String,
) -> anyhow::Result<u8> {
    if dry_run {
        crate::install::print_scripts(scripts);
    } else {
        crate::install::run_scripts(clients, scripts)?;
        for s in scripts {
            println!("node {}: {}", s.node, done(&s.node));
        }
    }
    Ok(super::EXIT_OK)
}

/// Every node, connected and with repctl installed, or an error naming the node that is not.
pub fn connect_installed(config: &Config) -> anyhow::Result<Vec<(String, Client)>> {
    let mut clients = crate::install::init::connect_all(config)?;
    for (node, client) in clients.iter_mut() {
        db::require_installed(client, node)?;
    }
    Ok(clients)
}

pub fn or_dash<T: ToString>(v: Option<T>) -> String {
    v.map_or_else(|| "-".into(), |v| v.to_string())
}
