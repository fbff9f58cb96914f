//! `repctl lag`: per (from, to) pair, what is still queued and how old it is.

use anyhow::Result;
use postgres::Client;
use serde::Serialize;

use crate::config::Config;

/// What is known of a pair: the queue is on the origin and conflicts are recorded on the peer, so
/// with one of them down the other's half is still known; the rest is null.
#[derive(Debug, Clone, Serialize)]
pub struct PairLag {
    pub from: String,
    pub to: String,
    pub pending: Option<i64>,
    /// Seconds since the oldest pending change was made; null when nothing is pending.
    pub oldest_pending_age_s: Option<f64>,
    /// When a drain (or a synchronous commit of more than a few changes) last delivered to this
    /// peer (RFC 3339), null if never.
    pub last_delivery: Option<String>,
    pub delivered_total: Option<i64>,
    /// Conflicts the peer (`to`) detected in changes from `from`.
    pub conflicts: Option<i64>,
    /// Changes the peer refused, parked on the origin (not discarded).
    pub parked: Option<i64>,
    /// The refused change the pair is stopped at (see `repctl queue`), null when it is not.
    pub stopped: Option<String>,
    /// The nodes of the pair that could not be read.
    pub unreachable: Vec<String>,
    /// `last_delivery` as Unix time, for metrics.
    #[serde(skip)]
    pub last_delivery_epoch: Option<f64>,
}

/// Lag of every pair whose origin is `node`.
pub fn node_lag(client: &mut Client, node: &str) -> Result<Vec<PairLag>> {
    let rows = client.query(
        "select p.name,
                (select count(*) from repctl.queue q where q.peer = p.name),
                (select extract(epoch from clock_timestamp() - min(q.ts))::float8 from repctl.queue q where q.peer = p.name),
                to_char(d.last_delivery at time zone 'UTC', 'YYYY-MM-DD\"T\"HH24:MI:SS.US\"Z\"'),
                -- drain's and large synchronous commits' count, then the one that small
                -- synchronous commits keep in a sequence (no row lock to queue on)
                coalesce(d.delivered, 0)
                  + coalesce(pg_sequence_last_value(to_regclass(format('repctl.%I', p.counter))), 0),
                extract(epoch from d.last_delivery)::float8,
                (select count(*) from repctl.parked k where k.peer = p.name and k.discarded_at is null),
                case when exists (select from repctl.queue q where q.peer = p.name and q.seq = d.stopped_seq)
                     then d.stopped_error end
           from repctl.peer p left join repctl.delivery d on d.peer = p.name
          order by p.name",
        &[],
    )?;
    Ok(rows
        .iter()
        .map(|r| PairLag {
            from: node.to_string(),
            to: r.get(0),
            pending: Some(r.get(1)),
            oldest_pending_age_s: r.get(2),
            last_delivery: r.get(3),
            delivered_total: Some(r.get(4)),
            last_delivery_epoch: r.get(5),
            parked: Some(r.get(6)),
            stopped: r.get(7),
            conflicts: None,
            unreachable: vec![],
        })
        .collect())
}

/// Every pair as the reachable nodes know it; `clients` holds None for a node that is down.
pub fn lag(config: &Config, clients: &mut [(String, Option<Client>)]) -> Result<Vec<PairLag>> {
    let mut pairs = Vec::new();
    for (node, client) in clients.iter_mut() {
        match client {
            Some(c) => pairs.extend(node_lag(c, node)?),
            // Its peers are the other nodes of the config, as init installed them.
            None => {
                pairs.extend(
                    config
                        .nodes
                        .iter()
                        .filter(|p| &p.name != node)
                        .map(|p| PairLag {
                            from: node.clone(),
                            to: p.name.clone(),
                            pending: None,
                            oldest_pending_age_s: None,
                            last_delivery: None,
                            delivered_total: None,
                            conflicts: None,
                            parked: None,
                            stopped: None,
                            unreachable: vec![],
                            last_delivery_epoch: None,
                        }),
                )
            }
        }
    }
    for (node, client) in clients.iter_mut() {
        let Some(c) = client else { continue };
        let counts = super::conflicts::counts_by_origin(c)?;
        for p in pairs.iter_mut().filter(|p| &p.to == node) {
            p.conflicts = Some(
                counts
                    .iter()
                    .find(|(origin, _)| origin == &p.from)
                    .map_or(0, |(_, n)| *n),
            );
        }
    }
    let down: Vec<&String> = clients
        .iter()
        .filter(|(_, c)| c.is_none())
        .map(|(n, _)| n)
        .collect();
    for p in &mut pairs {
        p.unreachable = [&p.from, &p.to]
            .into_iter()
            .filter(|n| down.contains(n))
            .cloned()
            .collect();
    }
    Ok(pairs)
}
