//! `repctl lag`: per (from, to) pair, what is still queued and how old it is.

use anyhow::Result;
use postgres::Client;
use serde::Serialize;

#[derive(Debug, Clone, Serialize)]
pub struct PairLag {
    pub from: String,
    pub to: String,
    pub pending: i64,
    /// Seconds since the oldest pending change was made; null when nothing is pending.
    pub oldest_pending_age_s: Option<f64>,
    /// When a drain last delivered to this peer (RFC 3339), null if never.
    pub last_delivery: Option<String>,
    pub delivered_total: i64,
    /// Conflicts the peer (`to`) detected in changes from `from`.
    pub conflicts: i64,
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
                coalesce(d.delivered, 0),
                extract(epoch from d.last_delivery)::float8
           from repctl.peer p left join repctl.delivery d on d.peer = p.name
          order by p.name",
        &[],
    )?;
    Ok(rows
        .iter()
        .map(|r| PairLag {
            from: node.to_string(),
            to: r.get(0),
            pending: r.get(1),
            oldest_pending_age_s: r.get(2),
            last_delivery: r.get(3),
            delivered_total: r.get(4),
            last_delivery_epoch: r.get(5),
            conflicts: 0,
        })
        .collect())
}
