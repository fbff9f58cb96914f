use anyhow::Result;

use super::output::install_or_print;
use crate::catalog::TableName;
use crate::config::Config;
use crate::install::{init, table};

/// Stop replicating a table: removes its triggers, functions and catalog entry on every node.
#[derive(Debug, clap::Args)]
pub struct Args {
    /// The table's replicated name, SCHEMA.TABLE, as given to add-table.
    table: String,
    /// Discard changes still queued for peers instead of refusing.
    #[arg(long)]
    force: bool,
    /// Print the SQL each node would run and change nothing.
    #[arg(long)]
    dry_run: bool,
}

pub fn run(config: &Config, args: Args) -> Result<u8> {
    let name = TableName::parse(&args.table)?;
    let mut clients = init::connect_all(config)?;
    let scripts = table::remove_scripts(&mut clients, &name, args.force)?;
    install_or_print(&mut clients, &scripts, args.dry_run, |_| {
        format!("stopped replicating {name}")
    })
}
