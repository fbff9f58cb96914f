//! A pair's queue and its parked changes (`repctl queue`): the head of the queue and where a pair
//! stopped, parking a refused change (drain and run, for a table set to `--on-apply-error park`,
//! or `queue skip`), and sending parked changes again or discarding them. Everything here runs on
//! the origin, which holds the pair's queue and its parked changes.

use anyhow::Result;
use postgres::Client;
use serde::Serialize;
use serde_json::Value;

/// `parked_by` of a change drain or run parked by the table's policy.
pub const BY_POLICY: &str = "on-apply-error park";

/// A time as the listings show it (UTC, RFC 3339): to_char's format.
macro_rules! utc {
    () => {
        "'YYYY-MM-DD\"T\"HH24:MI:SS.US\"Z\"'"
    };
}
const UTC: &str = utc!();

/// Where a pair stopped: the change the peer refused, still queued.
#[derive(Debug, Clone, Serialize)]
pub struct Stop {
    pub seq: i64,
    pub error: String,
    pub at: String,
}

/// A queued or parked change, as the listings show it.
#[derive(Debug, Clone, Serialize)]
pub struct Change {
    pub seq: i64,
    pub table: String,
    pub op: String,
    /// The new row image (null for a delete).
    pub row: Option<Value>,
    /// The old row image (null for an insert).
    pub old: Option<Value>,
    /// When the origin made the change.
    pub at: String,
}

/// The head of a pair's queue.
#[derive(Debug, Serialize)]
pub struct Head {
    pub from: String,
    pub to: String,
    pub pending: i64,
    pub parked: i64,
    pub stopped: Option<Stop>,
    pub head: Vec<Change>,
}

/// A parked change with why and by whom it was set aside.
#[derive(Debug, Serialize)]
pub struct Parked {
    pub from: String,
    pub to: String,
    #[serde(flatten)]
    pub change: Change,
    pub error: String,
    pub sqlstate: Option<String>,
    pub parked_at: String,
    pub parked_by: String,
    pub discarded_at: Option<String>,
    pub discarded_by: Option<String>,
}

/// Whether the table of queued change `seq` is set to park what the peer refuses.
pub fn parks(origin: &mut Client, peer: &str, seq: i64) -> Result<bool> {
    Ok(origin
        .query_one(
            "select coalesce((select t.on_apply_error = 'park' from repctl.queue q join repctl.tables t on t.name = q.tbl
                               where q.peer = $1 and q.seq = $2), false)",
            &[&peer, &seq],
        )?
        .get(0))
}

/// Moves queued change `seq` into the parked changes with the peer's error; false when it is no
/// longer queued. Needs the pair lock.
pub fn park(
    origin: &mut Client,
    peer: &str,
    seq: i64,
    error: &str,
    sqlstate: Option<&str>,
    by: &str,
) -> Result<bool> {
    Ok(origin
        .query_one(
            "select repctl.park($1, $2, $3, $4, $5)",
            &[&peer, &seq, &error, &sqlstate, &by],
        )?
        .get(0))
}

/// Records that the pair stopped at queued change `seq`, for `queue` and `queue skip`.
pub fn record_stop(origin: &mut Client, peer: &str, seq: i64, why: &str) -> Result<()> {
    origin.execute(
        "update repctl.delivery set stopped_seq = $2, stopped_error = $3, stopped_at = now() where peer = $1",
        &[&peer, &seq, &why],
    )?;
    Ok(())
}

/// Where the pair to `peer` stopped, while that change is still queued.
pub fn stopped(origin: &mut Client, peer: &str) -> Result<Option<Stop>> {
    Ok(origin
        .query_opt(
            &format!(
                "select d.stopped_seq, d.stopped_error, to_char(d.stopped_at at time zone 'UTC', {UTC})
                   from repctl.delivery d
                  where d.peer = $1 and exists (select from repctl.queue q where q.peer = d.peer and q.seq = d.stopped_seq)"
            ),
            &[&peer],
        )?
        .map(|r| Stop {
            seq: r.get(0),
            error: r.get(1),
            at: r.get(2),
        }))
}

fn image(text: Option<String>) -> Result<Option<Value>> {
    Ok(text.map(|t| serde_json::from_str(&t)).transpose()?)
}

/// The change's columns, first in every listing's query.
const CHANGE: &str = concat!(
    "seq, tbl, op::text, r::text, o::text, to_char(ts at time zone 'UTC', ",
    utc!(),
    ")"
);

impl Change {
    /// The change from a row that starts with `CHANGE`'s columns.
    fn read(r: &postgres::Row) -> Result<Change> {
        Ok(Change {
            seq: r.get(0),
            table: r.get(1),
            op: r.get(2),
            row: image(r.get(3))?,
            old: image(r.get(4))?,
            at: r.get(5),
        })
    }
}

/// The first `limit` changes queued from `from` for `to`, with the pair's counts and stop.
pub fn head(origin: &mut Client, from: &str, to: &str, limit: i64) -> Result<Head> {
    let counts = origin.query_one(
        "select (select count(*) from repctl.queue where peer = $1),
                (select count(*) from repctl.parked where peer = $1 and discarded_at is null)",
        &[&to],
    )?;
    let head = origin
        .query(
            &format!("select {CHANGE} from repctl.queue where peer = $1 order by seq limit $2"),
            &[&to, &limit],
        )?
        .iter()
        .map(Change::read)
        .collect::<Result<_>>()?;
    Ok(Head {
        from: from.to_string(),
        to: to.to_string(),
        pending: counts.get(0),
        parked: counts.get(1),
        stopped: stopped(origin, to)?,
        head,
    })
}

/// The changes parked on `from` (for peer `to`, or all), oldest first; discarded ones only with
/// `discarded`.
pub fn parked(
    origin: &mut Client,
    from: &str,
    to: Option<&str>,
    discarded: bool,
) -> Result<Vec<Parked>> {
    let rows = origin.query(
        &format!(
            "select {CHANGE}, peer, error, sqlstate, to_char(parked_at at time zone 'UTC', {UTC}), parked_by,
                    to_char(discarded_at at time zone 'UTC', {UTC}), discarded_by
               from repctl.parked
              where ($1::text is null or peer = $1) and ($2 or discarded_at is null)
              order by peer, seq"
        ),
        &[&to, &discarded],
    )?;
    rows.into_iter()
        .map(|r| {
            Ok(Parked {
                from: from.to_string(),
                to: r.get(6),
                change: Change::read(&r)?,
                error: r.get(7),
                sqlstate: r.get(8),
                parked_at: r.get(9),
                parked_by: r.get(10),
                discarded_at: r.get(11),
                discarded_by: r.get(12),
            })
        })
        .collect()
}

/// Parks the change the pair to `peer` is stopped at, with the error it stopped with; None when
/// the pair is not stopped. Needs the pair lock.
pub fn skip(origin: &mut Client, peer: &str) -> Result<Option<Stop>> {
    let Some(stop) = stopped(origin, peer)? else {
        return Ok(None);
    };
    let by: String = origin
        .query_one("select 'queue skip by ' || session_user", &[])?
        .get(0);
    park(origin, peer, stop.seq, &stop.error, None, &by)?;
    Ok(Some(stop))
}

/// Puts parked changes (for `peer`, or all; change `seq`, or all) back at the tail of their queue,
/// oldest first; how many.
pub fn retry(origin: &mut Client, peer: Option<&str>, seq: Option<i64>) -> Result<i64> {
    Ok(origin
        .query_one("select repctl.unpark($1, $2)", &[&peer, &seq])?
        .get(0))
}

/// Marks parked changes (for `peer`, or all; change `seq`, or all) discarded, with when and who
/// (the session's role, and `by`);
/// they are never sent and stay listed (`queue parked --discarded`) until the retention prunes
/// them. How many.
pub fn discard(origin: &mut Client, peer: Option<&str>, seq: Option<i64>, by: &str) -> Result<u64> {
    Ok(origin.execute(
        "update repctl.parked set discarded_at = clock_timestamp(), discarded_by = session_user || ' (' || $3 || ')'
          where discarded_at is null and ($1::text is null or peer = $1) and ($2::bigint is null or seq = $2)",
        &[&peer, &seq, &by],
    )?)
}

/// Whether parked change `seq` (for `peer`, or any) is on this node, not discarded.
pub fn has_parked(origin: &mut Client, peer: Option<&str>, seq: i64) -> Result<bool> {
    Ok(origin
        .query_one(
            "select exists (select from repctl.parked where ($1::text is null or peer = $1) and seq = $2 and discarded_at is null)",
            &[&peer, &seq],
        )?
        .get(0))
}
