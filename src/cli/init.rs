use anyhow::Result;

use super::output::install_or_print;
use crate::config::Config;
use crate::install::{init, print_scripts, run_scripts, sequences};

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
            init::render_init(config, node, &init::node_facts(node, client)?)
        })
        .collect::<Result<Vec<_>>>()?;
    let agents = config
        .nodes
        .iter()
        .map(|node| init::render_agent(config, node))
        .collect::<Result<Vec<_>>>()?;
    if args.dry_run {
        print_scripts(&agents);
    } else {
        // One node at a time, each committed: see templates/node/agent.sql.
        for script in &agents {
            run_scripts(&mut clients, std::slice::from_ref(script))?;
        }
    }
    let peers = config.nodes.len() - 1;
    let code = install_or_print(&mut clients, &scripts, args.dry_run, |_| {
        format!(
            "initialized ({peers} peer(s); owned by agent role {}{})",
            config.agent.role,
            if config.agent.superuser {
                ", a superuser"
            } else {
                ""
            }
        )
    })?;
    // A node new to the config gets a sequence offset of its own (see --interleave-sequences).
    if !args.dry_run {
        sequences::assign_offsets(&mut clients, true)?;
    }
    Ok(code)
}
