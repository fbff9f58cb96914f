//! Command-line interface: one module per subcommand, each with its `Args` and `run`.

mod add_table;
mod alter_table;
mod bar;
mod conflicts;
#[cfg(feature = "throwaway-clusters")]
mod demo;
mod drain;
mod init;
mod lag;
mod output;
mod prune;
mod queue;
mod remove_table;
mod repair;
mod run;
mod status;
mod verify;

use std::path::PathBuf;

use anyhow::Result;
use clap::{Parser, Subcommand};

use crate::config::Config;

/// Exit codes monitoring can rely on (ripgrep's convention).
pub const EXIT_OK: u8 = 0;
/// A difference was found (verify) or something was left undone.
pub const EXIT_DIFFERENT: u8 = 1;
pub const EXIT_ERROR: u8 = 2;

/// Table-level multi-master replication between PostgreSQL databases, with triggers.
#[derive(Debug, Parser)]
#[command(version, about)]
pub struct Cli {
    /// Config file with the nodes.
    #[arg(
        long,
        global = true,
        env = "REPCTL_CONFIG",
        default_value = "repctl.toml"
    )]
    pub config: PathBuf,
    #[command(subcommand)]
    pub command: Command,
}

#[derive(Debug, Subcommand)]
pub enum Command {
    Init(init::Args),
    AddTable(add_table::Args),
    AlterTable(alter_table::Args),
    RemoveTable(remove_table::Args),
    Verify(verify::Args),
    Repair(repair::Args),
    Drain(drain::Args),
    Lag(lag::Args),
    Conflicts(conflicts::Args),
    Queue(queue::Args),
    Prune(prune::Args),
    Run(run::Args),
    Status(status::Args),
    #[cfg(feature = "throwaway-clusters")]
    Demo(demo::Args),
}

pub fn run(cli: Cli) -> Result<u8> {
    let load = || Config::load(&cli.config);
    match cli.command {
        Command::Init(args) => init::run(&load()?, args),
        Command::AddTable(args) => add_table::run(&load()?, args),
        Command::AlterTable(args) => alter_table::run(&load()?, args),
        Command::RemoveTable(args) => remove_table::run(&load()?, args),
        Command::Verify(args) => verify::run(&load()?, args),
        Command::Repair(args) => repair::run(&load()?, args),
        Command::Drain(args) => drain::run(&load()?, args),
        Command::Lag(args) => lag::run(&load()?, args),
        Command::Conflicts(args) => conflicts::run(&load()?, args),
        Command::Queue(args) => queue::run(&load()?, args),
        Command::Prune(args) => prune::run(&load()?, args),
        Command::Run(args) => run::run(&load()?, args),
        Command::Status(args) => status::run(&load()?, args),
        #[cfg(feature = "throwaway-clusters")]
        Command::Demo(args) => demo::run(args),
    }
}
