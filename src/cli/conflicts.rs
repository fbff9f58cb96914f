use anyhow::Result;

use super::output::{connect_installed, or_dash, print_json, table};
use crate::catalog::TableName;
use crate::config::Config;
use crate::ops::conflicts::{self, Conflict};

/// List the conflicts every node detected and how they were resolved (the audit log).
#[derive(Debug, clap::Args)]
pub struct Args {
    /// Only this table (its replicated name, SCHEMA.TABLE).
    #[arg(long)]
    table: Option<String>,
    /// Only conflicts newer than this: 15m, 2h, 3d, or a PostgreSQL interval.
    #[arg(long, value_name = "DURATION")]
    since: Option<String>,
    /// Print JSON: an array of {node, at, table, key, kind, origin, local_row, remote_row, rule, winner}.
    #[arg(long)]
    json: bool,
}

/// Exit 0 when no conflict matched, 1 when some did, 2 on error.
pub fn run(config: &Config, args: Args) -> Result<u8> {
    let table_name = TableName::logical_arg(args.table.as_deref())?;
    let since = args.since.as_deref().map(conflicts::interval).transpose()?;
    let mut all: Vec<Conflict> = Vec::new();
    for (node, c) in connect_installed(config)?.iter_mut() {
        all.extend(conflicts::node_conflicts(
            c,
            node,
            table_name.as_deref(),
            since.as_deref(),
        )?);
    }
    all.sort_by(|a, b| a.at.cmp(&b.at));
    if args.json {
        print_json(&all)?;
    } else {
        let mut t = table([
            "at",
            "node",
            "table",
            "key",
            "kind",
            "from",
            "rule",
            "winner",
            "local row",
            "incoming row",
        ]);
        for c in &all {
            t.row([
                c.at.clone(),
                c.node.clone(),
                c.table.clone(),
                c.key.to_string(),
                c.kind.clone(),
                c.origin.clone(),
                c.rule.clone(),
                c.winner.clone(),
                or_dash(c.local_row.as_ref()),
                or_dash(c.remote_row.as_ref()),
            ]);
        }
        println!("{t}");
        println!("{} conflict(s)", all.len());
    }
    Ok(if all.is_empty() {
        super::EXIT_OK
    } else {
        super::EXIT_DIFFERENT
    })
}
