//! `repctl conflicts`: the audit log of every node, newest last.

use anyhow::{Context, Result, bail};
use postgres::Client;
use serde::Serialize;
use serde_json::Value;

#[derive(Debug, Serialize)]
pub struct Conflict {
    /// The node that detected and resolved it (the target of the change).
    pub node: String,
    pub at: String,
    pub table: String,
    pub key: Value,
    pub kind: String,
    /// The node the incoming change came from.
    pub origin: String,
    pub local_row: Option<Value>,
    pub remote_row: Option<Value>,
    pub rule: String,
    pub winner: String,
}

/// `90s`, `15m`, `2h`, `3d` as PostgreSQL intervals; anything else is passed to PostgreSQL as is.
pub fn interval(since: &str) -> Result<String> {
    let since = since.trim();
    if since.is_empty() {
        bail!("--since is empty: write e.g. 15m, 2h, 3d or '1 day 2 hours'");
    }
    let (num, unit) = since.split_at(since.len() - 1);
    let unit = match unit {
        "s" => "seconds",
        "m" => "minutes",
        "h" => "hours",
        "d" => "days",
        _ => return Ok(since.to_string()),
    };
    match num.parse::<u64>() {
        Ok(n) => Ok(format!("{n} {unit}")),
        Err(_) => Ok(since.to_string()),
    }
}

pub fn node_conflicts(
    client: &mut Client,
    node: &str,
    table: Option<&str>,
    since: Option<&str>,
) -> Result<Vec<Conflict>> {
    let rows = client
        .query(
            "select to_char(at at time zone 'UTC', 'YYYY-MM-DD\"T\"HH24:MI:SS.US\"Z\"'), tbl, k::text, kind, origin,
                    local_row::text, remote_row::text, rule, winner
               from repctl.conflict
              where ($1::text is null or tbl = $1)
                and ($2::text is null or at > now() - $2::text::interval)
              order by at, id",
            &[&table, &since],
        )
        .with_context(|| format!("node {node}: reading repctl.conflict (is --since a valid interval?)"))?;
    Ok(rows
        .iter()
        .map(|r| Conflict {
            node: node.to_string(),
            at: r.get(0),
            table: r.get(1),
            key: json_text(r.get(2)),
            kind: r.get(3),
            origin: r.get(4),
            local_row: r.get::<_, Option<String>>(5).map(json_text),
            remote_row: r.get::<_, Option<String>>(6).map(json_text),
            rule: r.get(7),
            winner: r.get(8),
        })
        .collect())
}

fn json_text(v: String) -> Value {
    serde_json::from_str(&v).unwrap_or(Value::String(v))
}

/// Conflicts recorded on `node`, per origin.
pub fn counts_by_origin(client: &mut Client) -> Result<Vec<(String, i64)>> {
    Ok(client
        .query(
            "select origin, count(*) from repctl.conflict group by origin",
            &[],
        )?
        .iter()
        .map(|r| (r.get(0), r.get(1)))
        .collect())
}
