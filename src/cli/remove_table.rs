use anyhow::Result;

use crate::catalog::TableName;
use crate::config::Config;
use crate::install::{self, init, table};

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
    if args.dry_run {
        install::print_scripts(&scripts);
        return Ok(super::EXIT_OK);
    }
    install::run_scripts(&mut clients, &scripts)?;
    for s in &scripts {
        println!("node {}: stopped replicating {name}", s.node);
    }
    Ok(super::EXIT_OK)
}
