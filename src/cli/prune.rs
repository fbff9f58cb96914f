use anyhow::Result;

use super::output::{connect_installed, print_json, table};
use crate::config::Config;
use crate::ops::prune::{self, Pruned};

/// Delete conflict-log entries and discarded changes older than `retention_days` (repctl.toml,
/// default 30) on every node; `repctl run` does the same hourly.
#[derive(Debug, clap::Args)]
pub struct Args {
    /// Print JSON: an array of {node, what, pruned}.
    #[arg(long)]
    json: bool,
}

pub fn run(config: &Config, args: Args) -> Result<u8> {
    let mut all: Vec<Pruned> = Vec::new();
    for (node, c) in connect_installed(config)?.iter_mut() {
        all.extend(prune::prune(c, node, config.retention_days)?);
    }
    if args.json {
        print_json(&all)?;
    } else {
        let mut t = table(["node", "what", "pruned"]);
        for p in &all {
            t.row([p.node.clone(), p.what.clone(), p.pruned.to_string()]);
        }
        println!(
            "older than {} day(s) (retention_days):\n{t}",
            config.retention_days
        );
    }
    Ok(super::EXIT_OK)
}
