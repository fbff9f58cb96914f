use std::time::Duration;

use anyhow::Result;

use super::output::{connect_reachable, or_dash, print_json, table};
use crate::config::Config;
use crate::db;
use crate::ops::lag;

/// Show, per (from, to) pair, pending changes, the age of the oldest, and the last delivery.
#[derive(Debug, clap::Args)]
pub struct Args {
    /// Print JSON: an array of {from, to, pending, oldest_pending_age_s, last_delivery,
    /// delivered_total, conflicts, parked, stopped, unreachable}; what a node that is down holds is null.
    #[arg(long)]
    json: bool,
    /// Refresh every SECONDS until interrupted.
    #[arg(long, value_name = "SECONDS")]
    watch: Option<f64>,
}

/// Exit 0 when nothing is pending or parked, 1 when something is or a node is down (the others'
/// view is shown), 2 on error.
pub fn run(config: &Config, args: Args) -> Result<u8> {
    loop {
        let (mut clients, unreachable) = connect_reachable(config);
        // First, so it is said even when a reachable node then fails the command.
        for (node, err) in &unreachable {
            eprintln!(
                "node {node} is down: what it has queued for its peers, and the conflicts it detected, \
                 are unknown ({err})"
            );
        }
        for (node, c) in clients.iter_mut() {
            if let Some(c) = c {
                db::require_installed(c, node)?;
            }
        }
        let pairs = lag::lag(config, &mut clients)?;
        if args.json {
            print_json(&pairs)?;
        } else {
            let mut t = table([
                "from",
                "to",
                "pending",
                "oldest pending (s)",
                "last delivery",
                "delivered",
                "conflicts",
                "parked",
                "stopped at",
            ]);
            let unknown = |v: Option<i64>| v.map_or_else(|| "?".into(), |v| v.to_string());
            for p in &pairs {
                // The origin's queue holds the age and the last delivery too.
                let queued = |v: Option<String>| {
                    if p.pending.is_some() {
                        or_dash(v)
                    } else {
                        "?".into()
                    }
                };
                t.row([
                    p.from.clone(),
                    p.to.clone(),
                    unknown(p.pending),
                    queued(p.oldest_pending_age_s.map(|a| format!("{a:.1}"))),
                    queued(p.last_delivery.clone()),
                    unknown(p.delivered_total),
                    unknown(p.conflicts),
                    unknown(p.parked),
                    or_dash(p.stopped.clone()),
                ]);
            }
            println!("{t}");
        }
        let Some(secs) = args.watch else {
            let pending = pairs
                .iter()
                .any(|p| p.pending.is_some_and(|n| n > 0) || p.parked.is_some_and(|n| n > 0));
            return Ok(if pending || !unreachable.is_empty() {
                super::EXIT_DIFFERENT
            } else {
                super::EXIT_OK
            });
        };
        std::thread::sleep(Duration::from_secs_f64(secs.max(0.1)));
    }
}
