//! repctl: trigger-based multi-master replication between PostgreSQL databases.

use std::process::ExitCode;

use clap::Parser;

fn main() -> ExitCode {
    let cli = repctl::cli::Cli::parse();
    match repctl::cli::run(cli) {
        Ok(code) => ExitCode::from(code),
        Err(err) => {
            eprintln!("error: {err:#}");
            ExitCode::from(repctl::cli::EXIT_ERROR)
        }
    }
}
