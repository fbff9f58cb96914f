use anyhow::Result;

use super::bar::Bar;
use super::output::{connect_reachable, or_dash, print_json, table};
use crate::apply::drain::{self, PairReport};
use crate::config::Config;

/// Deliver queued changes to peers, oldest first, in batches (each batch one transaction on the peer).
#[derive(Debug, clap::Args)]
pub struct Args {
    /// At most this many changes per (origin, peer) pair; all when omitted.
    #[arg(long)]
    limit: Option<i64>,
    /// Only pairs whose origin is this node.
    #[arg(long)]
    from: Option<String>,
    /// Only pairs whose peer is this node.
    #[arg(long)]
    to: Option<String>,
    /// Changes per batch.
    #[arg(long, default_value_t = drain::DEFAULT_BATCH)]
    batch_size: i64,
    /// Print JSON instead of a table.
    #[arg(long)]
    json: bool,
    /// Only what each pair has queued when its drain starts (writers may go on queueing).
    #[arg(skip)]
    queued_only: bool,
}

impl Args {
    /// Every pair, what it has queued now, as a table.
    pub fn queued_now() -> Args {
        Args {
            limit: None,
            from: None,
            to: None,
            batch_size: drain::DEFAULT_BATCH,
            json: false,
            queued_only: true,
        }
    }
}

/// Exit 0 when everything asked was delivered, 1 when a peer failed and changes are left, 2 on error.
pub fn run(config: &Config, args: Args) -> Result<u8> {
    for n in args.from.iter().chain(&args.to) {
        config.node(n)?;
    }
    if args.limit.is_some_and(|l| l < 0) || args.batch_size < 1 {
        anyhow::bail!("--limit must be >= 0 and --batch-size >= 1");
    }
    let mut reports: Vec<PairReport> = Vec::new();
    let (mut clients, unreachable) = connect_reachable(config);
    for i in 0..clients.len() {
        for j in 0..clients.len() {
            let (from, to) = (clients[i].0.clone(), clients[j].0.clone());
            if i == j
                || args.from.as_ref().is_some_and(|f| f != &from)
                || args.to.as_ref().is_some_and(|t| t != &to)
            {
                continue;
            }
            let report = match drain::pair_clients(&mut clients, i, j) {
                Some((origin, peer)) => {
                    let mut bar = Bar::counting("changes");
                    let limit = match args.queued_only {
                        true => drain::pending(origin, &to).map(Some),
                        false => Ok(args.limit),
                    };
                    limit
                        .and_then(|limit| {
                            drain::drain_pair(
                                origin,
                                peer,
                                &from,
                                &to,
                                limit,
                                args.batch_size,
                                &mut bar,
                            )
                        })
                        .unwrap_or_else(|e| failed(&from, &to, format!("{e:#}")))
                }
                // The cause names the node: a refused login says why, in the server's words.
                None => failed(
                    &from,
                    &to,
                    format!(
                        "unreachable: {}",
                        unreachable[if clients[i].1.is_none() { &from } else { &to }]
                    ),
                ),
            };
            reports.push(report);
        }
    }
    if args.json {
        print_json(&reports)?;
    } else {
        let mut t = table([
            "pair",
            "delivered",
            "parked",
            "left",
            "seconds",
            "rows/s",
            "error",
        ]);
        for r in &reports {
            t.row([
                format!("{} -> {}", r.from, r.to),
                r.delivered.to_string(),
                r.parked.to_string(),
                if r.left < 0 {
                    "?".into()
                } else {
                    r.left.to_string()
                },
                format!("{:.2}", r.seconds),
                format!("{:.0}", r.rows_per_s),
                or_dash(r.error.clone()),
            ]);
        }
        println!("{t}");
    }
    Ok(if reports.iter().any(|r| r.error.is_some()) {
        super::EXIT_DIFFERENT
    } else {
        super::EXIT_OK
    })
}

fn failed(from: &str, to: &str, error: String) -> PairReport {
    PairReport {
        from: from.into(),
        to: to.into(),
        delivered: 0,
        left: -1,
        seconds: 0.0,
        rows_per_s: 0.0,
        parked: 0,
        error: Some(error),
    }
}
