use anyhow::Result;

use super::bar::Bar;
use super::output::{print_json, table};
use crate::catalog::TableName;
use crate::config::Config;
use crate::install::init;
use crate::ops::repair;

/// Make the other nodes match NODE for the rows that differ (found as verify --rows finds them).
#[derive(Debug, clap::Args)]
pub struct Args {
    /// The node whose rows are right.
    #[arg(long, value_name = "NODE")]
    from: String,
    /// Only this table (its replicated name, SCHEMA.TABLE).
    table: Option<String>,
    /// Print the statements each node would run and change nothing.
    #[arg(long)]
    dry_run: bool,
    /// Print the summary as JSON (the per-key log goes to stderr then).
    #[arg(long)]
    json: bool,
}

/// Exit 0 when every differing row was repaired, 1 when some were left (pending or changed
/// meanwhile), 2 on error.
pub fn run(config: &Config, args: Args) -> Result<u8> {
    config.node(&args.from)?;
    let only = TableName::logical_arg(args.table.as_deref())?;
    let mut clients = init::connect_all(config)?;
    let json = args.json;
    let mut out = |line: String| {
        if json {
            eprintln!("{line}");
        } else {
            println!("{line}");
        }
    };
    let reports = repair::repair(
        &mut clients,
        &args.from,
        only.as_deref(),
        args.dry_run,
        &mut out,
        &mut Bar::default(),
    )?;
    let left = reports
        .iter()
        .any(|r| r.pending > 0 || r.nodes.values().any(|c| c.skipped > 0));
    if json {
        print_json(&reports)?;
    } else if !args.dry_run {
        let mut t = table([
            "table", "node", "inserted", "updated", "deleted", "skipped", "pending",
        ]);
        for r in &reports {
            for (node, c) in &r.nodes {
                t.row([
                    r.table.clone(),
                    node.clone(),
                    c.inserted.to_string(),
                    c.updated.to_string(),
                    c.deleted.to_string(),
                    c.skipped.to_string(),
                    r.pending.to_string(),
                ]);
            }
        }
        println!("{t}");
        if left {
            println!(
                "some rows were left: they changed while being repaired, or changes to them are queued; \
                 run `repctl drain`, then repair again"
            );
        }
    }
    Ok(if left {
        super::EXIT_DIFFERENT
    } else {
        super::EXIT_OK
    })
}
