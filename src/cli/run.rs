use std::sync::atomic::AtomicBool;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use anyhow::Result;

use crate::apply::metrics;
use crate::apply::run::{self, Metrics, RunOptions};
use crate::config::Config;

/// Deliver every pair's queue continuously (a foreground service; SIGINT/SIGTERM finish the batch and exit).
#[derive(Debug, clap::Args)]
pub struct Args {
    /// Changes per batch (one transaction on the peer).
    #[arg(long, default_value_t = crate::apply::drain::DEFAULT_BATCH)]
    batch_size: i64,
    /// Serve Prometheus metrics on this address, e.g. 127.0.0.1:9187.
    #[arg(long, value_name = "ADDR")]
    metrics_addr: Option<String>,
    /// Seconds between throughput log lines.
    #[arg(long, default_value_t = 60)]
    stats_every: u64,
    /// More log lines (-v: per batch, -vv: everything).
    #[arg(short, long, action = clap::ArgAction::Count)]
    verbose: u8,
}

pub fn run(config: &Config, args: Args) -> Result<u8> {
    let level = match args.verbose {
        0 => log::LevelFilter::Info,
        1 => log::LevelFilter::Debug,
        _ => log::LevelFilter::Trace,
    };
    env_logger::Builder::new()
        .filter_module("repctl", level)
        .format_target(false)
        .try_init()
        .ok();
    if args.batch_size < 1 {
        anyhow::bail!("--batch-size must be >= 1");
    }
    let stop = Arc::new(AtomicBool::new(false));
    for signal in [signal_hook::consts::SIGINT, signal_hook::consts::SIGTERM] {
        signal_hook::flag::register(signal, stop.clone())?;
    }
    let shared = match &args.metrics_addr {
        Some(addr) => {
            let m = Arc::new(Mutex::new(Metrics::default()));
            metrics::serve(addr, m.clone())?;
            Some(m)
        }
        None => None,
    };
    let opts = RunOptions {
        batch: args.batch_size,
        stats_every: Duration::from_secs(args.stats_every.max(1)),
        metrics: shared,
    };
    run::run(config, &opts, &stop)?;
    Ok(super::EXIT_OK)
}
