//! `repctl run`: delivers every pair's queue continuously, woken by LISTEN/NOTIFY.
//!
//! One connection per node serves as origin (it holds the pair locks and LISTENs) and as peer. Each
//! round delivers at most one bounded batch per pair, so a large backlog never becomes one giant
//! transaction and no pair starves the others. A node that goes away is retried with capped
//! exponential backoff; its pairs wait, nothing else stops. Killed at any point, a restarted run
//! settles the last batch through the peer's record exactly as `drain` does.

use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use anyhow::{Result, bail};
use log::{debug, info, warn};
use postgres::Client;
use postgres::fallible_iterator::FallibleIterator;

use super::drain::{self, Pipeline, pair_clients};
use crate::config::{Config, Node};
use crate::db;
use crate::locks;
use crate::ops::lag::{self, PairLag};
use crate::ops::prune;
use crate::render::{self, names};

pub struct RunOptions {
    /// Changes per batch.
    pub batch: i64,
    /// How often to log a throughput line.
    pub stats_every: Duration,
    /// Shared with the metrics endpoint, refreshed every second when present.
    pub metrics: Option<Arc<Mutex<Metrics>>>,
}

/// What the metrics endpoint serves.
#[derive(Debug, Default, Clone)]
pub struct Metrics {
    pub pairs: Vec<PairLag>,
    /// (from, to) -> apply errors seen by this run.
    pub apply_errors: Vec<((String, String), u64)>,
}

struct NodeConn {
    node: Node,
    client: Option<Client>,
    backoff: Duration,
    retry_at: Instant,
    was_up: bool,
    /// Whether this run has held the node's run lock (see `locks::take_run_lock`).
    held_once: bool,
    /// Since when another session has held it while this run never had it.
    refused_since: Option<Instant>,
    /// When this run last pruned the node (retention_days); None: not yet.
    pruned_at: Option<Instant>,
}

/// Per ordered pair: whether run holds its lock, and whether it is working off a backlog.
#[derive(Default, Clone)]
struct PairState {
    locked: bool,
    /// Given up to another command that wanted it (add-table --copy-from, drain, queue skip);
    /// taken back once nobody wants it.
    yielded: bool,
    /// Working off a backlog: since when, and how much of it is delivered.
    backlog: Option<(Instant, i64)>,
    /// Its nodes just connected: the next round says how much is queued.
    announce: bool,
    /// Carried from one round to the next while run holds the pair lock.
    pipe: Pipeline,
    /// The last round found nothing queued: the pair is looked at again when its origin
    /// notifies, or at the idle sweep, not every round (each look is a query on the origin).
    quiet: bool,
    errors: u64,
    refused: Option<String>,
}

const MAX_BACKOFF: Duration = Duration::from_secs(30);
const PRUNE_EVERY: Duration = Duration::from_secs(3600);
/// A safety net for changes queued without a notification (e.g. before run started).
const IDLE_SWEEP: Duration = Duration::from_secs(1);

pub fn run(config: &Config, opts: &RunOptions, stop: &AtomicBool) -> Result<()> {
    let mut nodes: Vec<NodeConn> = config
        .nodes
        .iter()
        .map(|n| NodeConn {
            node: n.clone(),
            client: None,
            backoff: Duration::from_millis(500),
            retry_at: Instant::now(),
            was_up: false,
            held_once: false,
            refused_since: None,
            pruned_at: None,
        })
        .collect();
    let n = nodes.len();
    let mut pairs = vec![vec![PairState::default(); n]; n];
    let (mut window_delivered, mut window_start) = (0i64, Instant::now());
    let mut last_sweep = Instant::now();
    let mut last_check = Instant::now();
    let mut last_metrics = Instant::now() - Duration::from_secs(10);
    let mut visit = vec![true; n];
    info!("run: delivering between {} nodes", n);
    while !stop.load(Ordering::SeqCst) {
        reconnect(&mut nodes, &mut pairs)?;
        let mut clients: Vec<(String, Option<Client>)> = nodes
            .iter_mut()
            .map(|c| (c.node.name.clone(), c.client.take()))
            .collect();
        let mut busy = false;
        for i in 0..n {
            for j in 0..n {
                if i == j || stop.load(Ordering::SeqCst) || pairs[i][j].quiet && !visit[i] {
                    continue;
                }
                let (from, to) = (clients[i].0.clone(), clients[j].0.clone());
                let Some((origin, peer)) = pair_clients(&mut clients, i, j) else {
                    continue;
                };
                let state = &mut pairs[i][j];
                match deliver_round(origin, peer, &from, &to, opts.batch, state) {
                    Ok(round) => {
                        let count = round.delivered;
                        window_delivered += count;
                        let more = state.pipe.ready() || round.again || state.pipe.ramping();
                        busy |= count == opts.batch || more;
                        state.quiet = count == 0 && !more;
                        if count > 0 {
                            pairs[j][i].pipe.drop_ahead();
                        }
                    }
                    Err(e) => {
                        state.quiet = false;
                        state.errors += 1;
                        warn!("{from} -> {to}: {e:#}");
                    }
                }
            }
        }
        for (conn, (_, client)) in nodes.iter_mut().zip(clients) {
            conn.client = client.filter(|c| !c.is_closed());
        }
        if let Some(metrics) = &opts.metrics
            && last_metrics.elapsed() >= Duration::from_secs(1)
        {
            last_metrics = Instant::now();
            refresh_metrics(&mut nodes, &pairs, metrics);
        }
        if window_start.elapsed() >= opts.stats_every {
            log_throughput(window_delivered, window_start);
            log_backlogs(&mut nodes, &pairs);
            (window_delivered, window_start) = (0, Instant::now());
        }
        if last_check.elapsed() >= IDLE_SWEEP {
            last_check = Instant::now();
            probe(&mut nodes);
            yield_wanted(&mut nodes, &mut pairs);
            prune_due(&mut nodes, config.retention_days);
        }
        let wait = if busy { Duration::ZERO } else { IDLE_SWEEP };
        visit = woken(&mut nodes, stop, &mut last_sweep, wait);
    }
    // A run shorter than --stats-every still says what it delivered.
    log_throughput(window_delivered, window_start);
    info!("run: stopping (signal); the current batch finished");
    for (i, conn) in nodes.iter_mut().enumerate() {
        if let Some(c) = conn.client.as_mut() {
            for (j, state) in pairs[i].iter_mut().enumerate() {
                if state.locked {
                    let peer = &config.nodes[j].name;
                    if let Err(e) = state.pipe.finish(c, peer) {
                        warn!(
                            "{} -> {peer}: removing the last batch delivered: {e:#}",
                            conn.node.name
                        );
                    }
                    let _ = locks::unlock_pair(c, peer);
                }
            }
        }
    }
    Ok(())
}

fn log_throughput(delivered: i64, since: Instant) {
    let secs = since.elapsed().as_secs_f64();
    info!(
        "delivered {delivered} change(s) in {secs:.0} s ({:.0} rows/s)",
        delivered as f64 / secs
    );
}

/// What a round did for a pair.
struct Round {
    delivered: i64,
    /// A refused change was parked, or the batch found the peer's rows locked: the pair has more
    /// to do at once.
    again: bool,
}

/// One batch for one pair; takes the pair lock (and settles a cut-off batch) the first time.
fn deliver_round(
    origin: &mut Client,
    peer: &mut Client,
    from: &str,
    to: &str,
    batch: i64,
    state: &mut PairState,
) -> Result<Round> {
    let idle = Round {
        delivered: 0,
        again: false,
    };
    if !state.locked {
        if !locks::take_pair_unless_wanted(origin, to)? {
            debug!("{from} -> {to}: another command holds or wants the pair; skipping this round");
            return Ok(idle);
        }
        if std::mem::take(&mut state.yielded) {
            info!("{from} -> {to}: taken back");
        }
        state.locked = true;
        drain::settle_applied(origin, peer, from, to)?;
    }
    if std::mem::take(&mut state.announce) {
        let queued = queued(origin, to)?;
        if queued > 0 {
            info!("{from} -> {to}: {queued} change(s) queued; delivering");
            state.backlog = Some((Instant::now(), 0));
        }
    }
    let d = drain::deliver_next(origin, peer, from, to, &mut state.pipe, batch, |_| batch)?;
    if let Some((_, delivered)) = &mut state.backlog {
        *delivered += d.count;
    }
    if let Some(why) = &d.busy {
        debug!("{from} -> {to}: rows locked on {to}, batch goes again: {why}");
        return Ok(Round {
            delivered: d.count,
            again: true,
        });
    }
    if let Some(why) = &d.parked {
        warn!("{from} -> {to}: parked (see repctl queue parked): {why}");
        return Ok(Round {
            delivered: d.count,
            again: true,
        });
    }
    if let Some(why) = &d.refused {
        if state.refused.as_ref() != Some(why) {
            warn!("{from} -> {to}: stopped: {why}");
            state.errors += 1;
        }
        state.refused = d.refused;
        return Ok(Round {
            delivered: d.count,
            ..idle
        });
    }
    if state.refused.take().is_some() {
        info!("{from} -> {to}: the refused change went through");
    }
    if d.count == batch {
        state.backlog.get_or_insert((Instant::now(), d.count));
    } else if !state.pipe.ready()
        && let Some((since, delivered)) = state.backlog.take()
    {
        info!(
            "{from} -> {to}: backlog drained ({delivered} change(s) in {:.1} s)",
            since.elapsed().as_secs_f64()
        );
    }
    debug!("{from} -> {to}: delivered {}", d.count);
    Ok(Round {
        delivered: d.count,
        ..idle
    })
}

fn queued(origin: &mut Client, peer: &str) -> Result<i64> {
    Ok(origin
        .query_one(
            "select count(*) from repctl.queue where peer = $1",
            &[&peer],
        )?
        .get(0))
}

/// Gives up the pairs another command waits for (see `locks::lock_pair`), with the last batch
/// delivered removed from the queue first; looked at once a second.
fn yield_wanted(nodes: &mut [NodeConn], pairs: &mut [Vec<PairState>]) {
    let names: Vec<String> = nodes.iter().map(|c| c.node.name.clone()).collect();
    for (i, conn) in nodes.iter_mut().enumerate() {
        let Some(c) = conn.client.as_mut() else {
            continue;
        };
        let wanted = match locks::wanted_pairs(c) {
            Ok(w) => w,
            Err(e) => {
                debug!("node {}: reading wanted pairs: {e:#}", conn.node.name);
                continue;
            }
        };
        for (j, state) in pairs[i].iter_mut().enumerate() {
            if !state.locked || !wanted.contains(&names[j]) {
                continue;
            }
            let to = &names[j];
            let released = state
                .pipe
                .finish(c, to)
                .and_then(|()| locks::unlock_pair(c, to));
            match released {
                Ok(()) => info!(
                    "{} -> {to}: yielded to another repctl command (add-table --copy-from, drain, queue)",
                    conn.node.name
                ),
                Err(e) => warn!("{} -> {to}: yielding the pair: {e:#}", conn.node.name),
            }
            state.locked = false;
            state.yielded = true;
            state.pipe = Pipeline::default();
        }
    }
}

/// Prunes each node's conflict log and discarded changes at start and then hourly.
fn prune_due(nodes: &mut [NodeConn], days: u32) {
    for conn in nodes.iter_mut() {
        let Some(c) = conn.client.as_mut() else {
            continue;
        };
        if conn.pruned_at.is_some_and(|t| t.elapsed() < PRUNE_EVERY) {
            continue;
        }
        match prune::prune(c, &conn.node.name, days) {
            Ok(pruned) => {
                conn.pruned_at = Some(Instant::now());
                for p in pruned.iter().filter(|p| p.pruned > 0) {
                    info!(
                        "node {}: pruned {} {} row(s) older than {days} day(s)",
                        p.node, p.pruned, p.what
                    );
                }
            }
            Err(e) => warn!("node {}: pruning: {e:#}", conn.node.name),
        }
    }
}

/// Finds a node that went away without the connection noticing (no query ran on it since): a
/// cheap round trip to every node once a second, so its loss is logged at once.
fn probe(nodes: &mut [NodeConn]) {
    for conn in nodes.iter_mut() {
        if let Some(c) = conn.client.as_mut()
            && c.is_valid(Duration::from_secs(5)).is_err()
        {
            conn.client = None;
        }
    }
}

/// Says how far each pair working off a backlog has come, with the throughput line.
fn log_backlogs(nodes: &mut [NodeConn], pairs: &[Vec<PairState>]) {
    let names: Vec<String> = nodes.iter().map(|c| c.node.name.clone()).collect();
    for (i, conn) in nodes.iter_mut().enumerate() {
        let Some(c) = conn.client.as_mut() else {
            continue;
        };
        for (j, state) in pairs[i].iter().enumerate() {
            if let Some((since, delivered)) = state.backlog
                && let Ok(left) = queued(c, &names[j])
            {
                info!(
                    "{} -> {}: backlog: {delivered} change(s) delivered in {:.0} s, {left} left",
                    names[i],
                    names[j],
                    since.elapsed().as_secs_f64()
                );
            }
        }
    }
}

/// How long a run that never held a node's run lock waits for it (a run just killed may still hold
/// it until its session ends) before it gives up: another run delivers to and from that node.
const RUN_LOCK_WAIT: Duration = Duration::from_secs(5);

fn reconnect(nodes: &mut [NodeConn], pairs: &mut [Vec<PairState>]) -> Result<()> {
    for (i, conn) in nodes.iter_mut().enumerate() {
        if conn.client.is_some() {
            continue;
        }
        if conn.was_up {
            warn!(
                "node {}: connection lost; retrying with backoff",
                conn.node.name
            );
            conn.was_up = false;
            // Its session locks died with it; pairs it is origin of must lock (and settle) again.
            pairs[i].iter_mut().for_each(|p| {
                p.locked = false;
                p.pipe = Pipeline::default();
            });
            conn.retry_at = Instant::now();
        }
        if Instant::now() < conn.retry_at {
            continue;
        }
        match db::connect(&conn.node).and_then(|mut c| {
            c.batch_execute(&format!(
                "listen {}",
                render::quote_ident(names::NOTIFY_CHANNEL)
            ))?;
            Ok(c)
        }) {
            Ok(mut c) => {
                match locks::take_run_lock(&mut c) {
                    Err(e) => {
                        warn!("node {}: taking its run lock: {e:#}", conn.node.name);
                        conn.retry_at = Instant::now() + conn.backoff;
                        continue;
                    }
                    Ok(Some(holder)) if conn.held_once => {
                        // This run's own lost session may hold it until the server notices.
                        warn!(
                            "node {}: its run lock is still held by {holder}; retrying",
                            conn.node.name
                        );
                        conn.retry_at = Instant::now() + conn.backoff;
                        conn.backoff = (conn.backoff * 2).min(MAX_BACKOFF);
                        continue;
                    }
                    Ok(Some(holder))
                        if conn
                            .refused_since
                            .is_none_or(|t| t.elapsed() < RUN_LOCK_WAIT) =>
                    {
                        // A run that has just stopped may hold it a moment longer.
                        conn.refused_since.get_or_insert_with(Instant::now);
                        debug!("node {}: its run lock is held by {holder}", conn.node.name);
                        conn.retry_at = Instant::now() + Duration::from_millis(200);
                        continue;
                    }
                    Ok(Some(holder)) => {
                        bail!(
                            "node {}: another repctl run is delivering to and from it (its session: {holder}); \
                             two would deliver the two directions of a pair at once, which origin-wins and \
                             target-wins cannot order: stop the other run first",
                            conn.node.name
                        );
                    }
                    Ok(None) => {
                        conn.held_once = true;
                        conn.refused_since = None;
                    }
                }
                info!("node {}: connected", conn.node.name);
                conn.client = Some(c);
                conn.was_up = true;
                conn.backoff = Duration::from_millis(500);
                // Changes may have been queued both ways, unnotified, while it was away.
                for row in pairs.iter_mut() {
                    row[i].announce = true;
                    row[i].quiet = false;
                }
                pairs[i].iter_mut().for_each(|p| {
                    p.announce = true;
                    p.quiet = false;
                });
            }
            Err(e) => {
                debug!("node {}: {e:#}", conn.node.name);
                if conn.backoff == Duration::from_millis(500) {
                    warn!("node {}: down ({e:#})", conn.node.name);
                }
                conn.retry_at = Instant::now() + conn.backoff;
                conn.backoff = (conn.backoff * 2).min(MAX_BACKOFF);
            }
        }
    }
    Ok(())
}

/// Whether `c` has notifications, waiting up to `wait` for one; consumes them.
fn notified(c: &mut Client, wait: Duration) -> bool {
    fn any(mut it: impl FallibleIterator) -> bool {
        let mut woke = false;
        while let Ok(Some(_)) = it.next() {
            woke = true;
        }
        woke
    }
    let mut notes = c.notifications();
    // A zero timeout still waits for the runtime's next timer tick (about 1 ms per node, between
    // every two batches of a backlog); the plain iterator only reads what has arrived.
    if wait.is_zero() {
        any(notes.iter())
    } else {
        any(notes.timeout_iter(wait))
    }
}

/// Per node, whether its pairs must be looked at whatever their last round found: it notified,
/// or the idle sweep is due (all of them). Waits up to `wait` for a notification when none is in,
/// and no longer once a connection is lost, so the next round reconnects.
fn woken(
    nodes: &mut [NodeConn],
    stop: &AtomicBool,
    last_sweep: &mut Instant,
    wait: Duration,
) -> Vec<bool> {
    let started = Instant::now();
    loop {
        if stop.load(Ordering::SeqCst) || last_sweep.elapsed() >= IDLE_SWEEP {
            *last_sweep = Instant::now();
            return vec![true; nodes.len()];
        }
        let per_node = wait.min(Duration::from_millis(2));
        let mut lost = false;
        let woke: Vec<bool> = nodes
            .iter_mut()
            .map(|conn| {
                let Some(c) = conn.client.as_mut() else {
                    return false;
                };
                let woke = notified(c, per_node);
                if c.is_closed() {
                    conn.client = None;
                    lost = true;
                }
                woke
            })
            .collect();
        if lost || woke.contains(&true) || started.elapsed() >= wait {
            return woke;
        }
        if nodes.iter().all(|c| c.client.is_none()) {
            std::thread::sleep(Duration::from_millis(100));
        }
    }
}

fn refresh_metrics(
    nodes: &mut [NodeConn],
    pairs: &[Vec<PairState>],
    metrics: &Arc<Mutex<Metrics>>,
) {
    let mut lags = Vec::new();
    for conn in nodes.iter_mut() {
        if let Some(c) = conn.client.as_mut() {
            match lag::node_lag(c, &conn.node.name) {
                Ok(l) => lags.extend(l),
                Err(e) => debug!("node {}: reading lag: {e:#}", conn.node.name),
            }
        }
    }
    let names: Vec<String> = nodes.iter().map(|c| c.node.name.clone()).collect();
    let mut errors = Vec::new();
    for (i, row) in pairs.iter().enumerate() {
        for (j, p) in row.iter().enumerate() {
            if i != j {
                errors.push(((names[i].clone(), names[j].clone()), p.errors));
            }
        }
    }
    let mut m = metrics.lock().expect("metrics lock");
    // Keep the last known lag of a node that is down rather than dropping its pairs.
    for l in lags {
        match m
            .pairs
            .iter_mut()
            .find(|p| p.from == l.from && p.to == l.to)
        {
            Some(p) => *p = l,
            None => m.pairs.push(l),
        }
    }
    m.apply_errors = errors;
}
