use anyhow::Result;

use crate::config::Config;
use crate::install::{self, init};

/// Install repctl on every node: schema, queue, apply path, a foreign server and user mapping per peer.
#[derive(Debug, clap::Args)]
pub struct Args {
    /// Print the SQL each node would run (passwords masked) and change nothing.
    #[arg(long)]
    dry_run: bool,
}

pub fn run(config: &Config, args: Args) -> Result<u8> {
    let mut clients = init::connect_all(config)?;
    let scripts = config
        .nodes
        .iter()
        .zip(clients.iter_mut())
        .map(|(node, (_, client))| {
            init::render_init(config, node, &init::node_facts(node, client)?, args.dry_run)
        })
        .collect::<Result<Vec<_>>>()?;
    if args.dry_run {
        install::print_scripts(&scripts);
        return Ok(super::EXIT_OK);
    }
    install::run_scripts(&mut clients, &scripts)?;
    for node in &config.nodes {
        println!(
            "node {}: initialized ({} peer(s))",
            node.name,
            config.nodes.len() - 1
        );
    }
    Ok(super::EXIT_OK)
}
