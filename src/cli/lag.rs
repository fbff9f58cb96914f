use std::time::Duration;

use anyhow::Result;

use super::output::{connect_installed, or_dash, print_json, table};
use crate::config::Config;
use crate::ops::lag::{self, PairLag};

/// Show, per (from, to) pair, pending changes, the age of the oldest, and the last delivery.
#[derive(Debug, clap::Args)]
pub struct Args {
    /// Print JSON: an array of {from, to, pending, oldest_pending_age_s, last_delivery, delivered_total, conflicts}.
    #[arg(long)]
    json: bool,
    /// Refresh every SECONDS until interrupted.
    #[arg(long, value_name = "SECONDS")]
    watch: Option<f64>,
}

/// Exit 0 when nothing is pending, 1 when something is, 2 when a node cannot be read.
pub fn run(config: &Config, args: Args) -> Result<u8> {
    loop {
        let mut clients = connect_installed(config)?;
        let mut pairs: Vec<PairLag> = Vec::new();
        for (node, c) in clients.iter_mut() {
            pairs.extend(lag::node_lag(c, node)?);
        }
        // Conflicts are recorded where they were detected: on the peer.
        for (node, c) in clients.iter_mut() {
            for (origin, n) in crate::ops::conflicts::counts_by_origin(c)? {
                if let Some(p) = pairs.iter_mut().find(|p| p.from == origin && &p.to == node) {
                    p.conflicts = n;
                }
            }
        }
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
            ]);
            for p in &pairs {
                t.row([
                    p.from.clone(),
                    p.to.clone(),
                    p.pending.to_string(),
                    or_dash(p.oldest_pending_age_s.map(|a| format!("{a:.1}"))),
                    or_dash(p.last_delivery.clone()),
                    p.delivered_total.to_string(),
                    p.conflicts.to_string(),
                ]);
            }
            println!("{t}");
        }
        let Some(secs) = args.watch else {
            return Ok(if pairs.iter().any(|p| p.pending > 0) {
                super::EXIT_DIFFERENT
            } else {
                super::EXIT_OK
            });
        };
        std::thread::sleep(Duration::from_secs_f64(secs.max(0.1)));
    }
}
