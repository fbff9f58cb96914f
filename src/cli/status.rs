use anyhow::Result;

use super::output::{connect_reachable, or_dash, print_json, table};
use crate::config::Config;
use crate::ops::status;

/// Show nodes (reachable, versions), replicated tables per node, whether installed objects are complete, and schema drift.
#[derive(Debug, clap::Args)]
pub struct Args {
    /// Print JSON instead of tables.
    #[arg(long)]
    json: bool,
}

/// Exit 0 when everything is reachable and complete and no pair has refused changes (parked or
/// stopped at), 1 otherwise.
pub fn run(config: &Config, args: Args) -> Result<u8> {
    let (mut clients, errors) = connect_reachable(config);
    let s = status::status(config, &mut clients, &errors)?;
    if args.json {
        print_json(&s)?;
    } else {
        let mut nodes = table(["node", "reachable", "server", "repctl", "missing"]);
        for n in &s.nodes {
            let missing = n.error.clone().unwrap_or_else(|| n.missing.join(", "));
            nodes.row([
                n.node.clone(),
                n.reachable.to_string(),
                or_dash(n.server_version.clone()),
                or_dash(n.repctl_version.clone()),
                missing,
            ]);
        }
        println!("{nodes}");
        let mut tables = table([
            "table",
            "mode",
            "delta",
            "node",
            "local table",
            "conflicts",
            "missing",
        ]);
        for t in &s.tables {
            for node in &config.nodes {
                let missing = t
                    .missing
                    .get(&node.name)
                    .map(|m| m.join(", "))
                    .unwrap_or_default();
                tables.row([
                    t.table.clone(),
                    or_dash(t.mode.clone()),
                    columns_shown(t),
                    node.name.clone(),
                    or_dash(t.nodes.get(&node.name)),
                    or_dash(t.conflicts.get(&node.name)),
                    missing,
                ]);
            }
        }
        println!("{tables}");
        if !s.pairs.is_empty() {
            let mut pairs = table(["pair", "parked", "stopped at"]);
            for p in &s.pairs {
                pairs.row([
                    format!("{} -> {}", p.from, p.to),
                    p.parked.to_string(),
                    or_dash(p.stopped.clone()),
                ]);
            }
            println!("{pairs}\n(see `repctl queue`)");
        }
        problems(&s.tables, "schema drift", |t| &t.drift);
        problems(&s.tables, "key sequences", |t| &t.sequences);
    }
    Ok(if s.complete {
        super::EXIT_OK
    } else {
        super::EXIT_DIFFERENT
    })
}

/// One table of the tables' problems of one kind, when there are any.
fn problems(
    tables: &[status::TableStatus],
    what: &str,
    of: impl Fn(&status::TableStatus) -> &Vec<crate::ops::drift::Drift>,
) {
    let mut shown = table(["table", "nodes", what, "fix"]);
    let mut any = false;
    for t in tables {
        for d in of(t) {
            any = true;
            shown.row([
                t.table.clone(),
                d.nodes.join(", "),
                d.problem.clone(),
                d.fix.clone(),
            ]);
        }
    }
    if any {
        println!("{shown}");
    }
}

/// The delta columns, and whether updates merge by column.
fn columns_shown(t: &status::TableStatus) -> String {
    let mut shown = t.delta.join(",");
    if t.merge_columns {
        shown.push_str(if shown.is_empty() {
            "merge-columns"
        } else {
            " + merge-columns"
        });
    }
    or_dash((!shown.is_empty()).then_some(shown))
}
