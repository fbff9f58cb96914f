use std::time::Duration;

use anyhow::{Context, Result, bail};
use clap::Subcommand;
use postgres::Client;

use super::output::{connect_installed, or_dash, print_json, table};
use crate::config::Config;
use crate::db;
use crate::locks;
use crate::ops::queue::{self, Change, Parked};

/// Show the head of a pair's queue and, for a stopped pair, the change the peer refused; park,
/// list, retry or discard refused changes.
#[derive(Debug, clap::Args)]
#[command(args_conflicts_with_subcommands = true)]
pub struct Args {
    #[command(subcommand)]
    action: Option<Action>,
    /// The pair's origin (the node whose queue it is).
    #[arg(long)]
    from: Option<String>,
    /// The pair's peer.
    #[arg(long)]
    to: Option<String>,
    /// How many of the oldest queued changes to list.
    #[arg(long, default_value_t = 10)]
    limit: i64,
    /// Print JSON: {from, to, pending, parked, stopped: {seq, error, at} | null, head: [{seq, table, op, row, old, at}]}.
    #[arg(long)]
    json: bool,
}

#[derive(Debug, Subcommand)]
enum Action {
    /// Park the change the pair is stopped at (the peer refused it), so the pair goes on.
    Skip {
        /// The stopped pair's origin.
        #[arg(long)]
        from: String,
        /// The stopped pair's peer.
        #[arg(long)]
        to: String,
        /// Print JSON: the change's {seq, error, at}.
        #[arg(long)]
        json: bool,
    },
    /// List parked changes, oldest first, on every node (or one origin, one peer).
    Parked {
        /// Only changes parked on this origin.
        #[arg(long)]
        from: Option<String>,
        /// Only changes parked for this peer.
        #[arg(long)]
        to: Option<String>,
        /// Include discarded changes.
        #[arg(long)]
        discarded: bool,
        /// Print JSON: an array of {from, to, seq, table, op, row, old, at, error, sqlstate,
        /// parked_at, parked_by, discarded_at, discarded_by}.
        #[arg(long)]
        json: bool,
    },
    /// Send parked changes again, oldest first, behind what is queued (fix the cause first).
    Retry(Selection),
    /// Never send parked changes; they stay listed (`queue parked --discarded`) with who
    /// discarded them and when, until the retention prunes them.
    Discard(Selection),
}

/// Which parked changes: one by sequence number, or all (of one origin, one peer).
#[derive(Debug, clap::Args)]
struct Selection {
    /// The parked change's sequence number (as `queue parked` lists it).
    #[arg(long, required_unless_present = "all", conflicts_with = "all")]
    seq: Option<i64>,
    /// Every parked change (of --from, to --to).
    #[arg(long)]
    all: bool,
    /// Only changes parked on this origin.
    #[arg(long)]
    from: Option<String>,
    /// Only changes parked for this peer.
    #[arg(long)]
    to: Option<String>,
    /// Print JSON: [{from, count}].
    #[arg(long)]
    json: bool,
}

pub fn run(config: &Config, args: Args) -> Result<u8> {
    match args.action {
        None => {
            let (Some(from), Some(to)) = (&args.from, &args.to) else {
                bail!(
                    "repctl queue needs --from NODE --to NODE (or a subcommand: skip, parked, retry, discard)"
                );
            };
            show(config, from, to, args.limit, args.json)
        }
        Some(Action::Skip { from, to, json }) => skip(config, &from, &to, json),
        Some(Action::Parked {
            from,
            to,
            discarded,
            json,
        }) => list(config, from.as_deref(), to.as_deref(), discarded, json),
        Some(Action::Retry(sel)) => select(config, &sel, "queued again", |c, peer, seq| {
            queue::retry(c, peer, seq)
        }),
        Some(Action::Discard(sel)) => {
            let by = who();
            select(config, &sel, "discarded", |c, peer, seq| {
                Ok(queue::discard(c, peer, seq, &by)? as i64)
            })
        }
    }
}

/// The origin's client, checked installed, after checking both nodes are in the config.
fn origin(config: &Config, from: &str, to: &str) -> Result<Client> {
    config.node(to)?;
    if from == to {
        bail!("--from and --to name the same node {from}");
    }
    let mut c = db::connect(config.node(from)?)?;
    db::require_installed(&mut c, from)?;
    Ok(c)
}

fn shown(c: &Change) -> String {
    let image = c.row.as_ref().or(c.old.as_ref());
    format!(
        "{} {}",
        c.table,
        image.map_or_else(String::new, |i| i.to_string())
    )
}

/// Exit 1 when the pair is stopped.
fn show(config: &Config, from: &str, to: &str, limit: i64, json: bool) -> Result<u8> {
    let mut c = origin(config, from, to)?;
    let h = queue::head(&mut c, from, to, limit.max(0))?;
    if json {
        print_json(&h)?;
    } else {
        println!(
            "{from} -> {to}: {} change(s) queued, {} parked",
            h.pending, h.parked
        );
        if let Some(s) = &h.stopped {
            println!(
                "stopped at seq {} since {}: {}\n(fix the cause and the pair goes on, or park it: repctl queue skip --from {from} --to {to})",
                s.seq, s.at, s.error
            );
        }
        let mut t = table(["seq", "op", "at", "change"]);
        for ch in &h.head {
            t.row([ch.seq.to_string(), ch.op.clone(), ch.at.clone(), shown(ch)]);
        }
        println!("{t}");
    }
    Ok(if h.stopped.is_some() {
        super::EXIT_DIFFERENT
    } else {
        super::EXIT_OK
    })
}

fn skip(config: &Config, from: &str, to: &str, json: bool) -> Result<u8> {
    let mut c = origin(config, from, to)?;
    // A `repctl run` holding the pair lets go of it within a second, and takes it back after.
    if !locks::lock_pair(&mut c, to, Duration::from_secs(30))? {
        bail!(
            "pair {from} -> {to}: another drain has held it for over 30 s; try again when it is done"
        );
    }
    let skipped = queue::skip(&mut c, to);
    locks::unlock_pair(&mut c, to)?;
    let Some(stop) = skipped? else {
        bail!(
            "pair {from} -> {to} is not stopped at a refused change (run `repctl drain --from {from} --to {to}`, \
             which stops at one and names it)"
        );
    };
    if json {
        print_json(&stop)?;
    } else {
        println!(
            "{from} -> {to}: parked change seq {} ({}); see `repctl queue parked`",
            stop.seq, stop.error
        );
    }
    Ok(super::EXIT_OK)
}

/// Exit 1 when any change is listed.
fn list(
    config: &Config,
    from: Option<&str>,
    to: Option<&str>,
    discarded: bool,
    json: bool,
) -> Result<u8> {
    for n in from.iter().chain(to.iter()) {
        config.node(n)?;
    }
    let mut all: Vec<Parked> = Vec::new();
    for (node, c) in connect_installed(config)?.iter_mut() {
        if from.is_none_or(|f| f == node) {
            all.extend(queue::parked(c, node, to, discarded)?);
        }
    }
    if json {
        print_json(&all)?;
    } else {
        let mut t = table([
            "from",
            "to",
            "seq",
            "op",
            "at",
            "change",
            "error",
            "parked",
            "discarded",
        ]);
        for p in &all {
            t.row([
                p.from.clone(),
                p.to.clone(),
                p.change.seq.to_string(),
                p.change.op.clone(),
                p.change.at.clone(),
                shown(&p.change),
                p.error.clone(),
                format!("{} by {}", p.parked_at, p.parked_by),
                or_dash(
                    p.discarded_at
                        .as_ref()
                        .map(|at| format!("{at} by {}", p.discarded_by.as_deref().unwrap_or("?"))),
                ),
            ]);
        }
        println!("{t}");
    }
    Ok(if all.is_empty() {
        super::EXIT_OK
    } else {
        super::EXIT_DIFFERENT
    })
}

/// Who discards, beside the database role repctl connects as: the operating system user.
fn who() -> String {
    let os = std::env::var("USER")
        .or_else(|_| std::env::var("LOGNAME"))
        .unwrap_or_else(|_| "unknown".into());
    format!("os user {os}")
}

/// Applies `act` to the selected parked changes on each origin; `--seq` must name one change.
fn select(
    config: &Config,
    sel: &Selection,
    done: &str,
    act: impl Fn(&mut Client, Option<&str>, Option<i64>) -> Result<i64>,
) -> Result<u8> {
    for n in sel.from.iter().chain(sel.to.iter()) {
        config.node(n)?;
    }
    let mut clients: Vec<(String, Client)> = connect_installed(config)?
        .into_iter()
        .filter(|(n, _)| sel.from.as_ref().is_none_or(|f| f == n))
        .collect();
    if let Some(seq) = sel.seq {
        let mut holders = Vec::new();
        for (node, c) in clients.iter_mut() {
            if queue::has_parked(c, sel.to.as_deref(), seq)? {
                holders.push(node.clone());
            }
        }
        match holders.len() {
            0 => bail!("no parked change seq {seq} (see `repctl queue parked`)"),
            1 => clients.retain(|(n, _)| *n == holders[0]),
            _ => bail!(
                "parked change seq {seq} is on nodes {}: say which with --from NODE",
                holders.join(", ")
            ),
        }
    }
    let mut counts = Vec::new();
    for (node, c) in clients.iter_mut() {
        let n = act(c, sel.to.as_deref(), sel.seq).with_context(|| format!("node {node}"))?;
        counts.push(serde_json::json!({"from": node, "count": n}));
        if !sel.json {
            println!("node {node}: {n} parked change(s) {done}");
        }
    }
    if sel.json {
        print_json(&counts)?;
    }
    Ok(super::EXIT_OK)
}
