//! `repctl drain`: delivers each (origin, peer) pair's queue, oldest first, in batches.
//!
//! Per batch: read the oldest committed changes on the origin, apply them on the peer in one
//! transaction that also records the batch's sequence numbers there, then delete them on the origin.
//! While the peer applies a batch, the origin reads the next and deletes the one before
//! (`Pipeline`). A drain cut off between the peer's commit and the origin's delete finds the
//! record on its next run and deletes those changes without applying them again. A session
//! advisory lock per pair on the origin keeps a second drain (or `run`) from delivering the same
//! pair at the same time, and writers in synchronous mode queue behind whatever is still queued,
//! so nothing overtakes.

use std::time::{Duration, Instant};

use anyhow::{Context, Result};
use postgres::Client;
use postgres::types::Type;
use serde::Serialize;

use super::batch::{self, Batch, Body, Fetched, Linked};
use crate::catalog::links;
use crate::locks;
use crate::ops::queue;
use crate::progress::Progress;

/// Changes per batch (one transaction on the peer) unless told otherwise.
pub const DEFAULT_BATCH: i64 = 5000;

/// What a batch's apply should take: the peer's rows it writes stay locked that long, and writers
/// there wait for them. Batches are sized by the time the last one took as well as by count.
const BATCH_TIME: Duration = Duration::from_millis(80);
/// The fewest changes a batch sized by time holds, and the size of a pair's first batch (its
/// apply's time unknown yet).
const MIN_PACED: i64 = 20;
const FIRST_PACED: i64 = 500;
/// How long an apply waits for a row lock on the peer (a writer there, a deadlock) before it gives
/// up and its batch goes again, smaller: a writer there waits for an apply no longer than this
/// plus the batch's own time.
const APPLY_LOCK_TIMEOUT: &str = "100ms";
/// How long drain goes on retrying a pair whose batches keep finding the peer's rows locked.
const BUSY_FOR: Duration = Duration::from_secs(30);

/// One pair's outcome.
#[derive(Debug, Clone, Serialize)]
pub struct PairReport {
    pub from: String,
    pub to: String,
    pub delivered: i64,
    pub left: i64,
    pub seconds: f64,
    pub rows_per_s: f64,
    /// Changes the peer refused that were parked (`--on-apply-error park`).
    pub parked: i64,
    /// Why the pair stopped early, naming the change the peer refused.
    pub error: Option<String>,
}

/// Removes from the origin's queue the batch the peer recorded as applied (a drain cut off after
/// the peer's commit). Needs the pair lock.
pub fn settle_applied(
    origin: &mut Client,
    peer_client: &mut Client,
    origin_name: &str,
    peer: &str,
) -> Result<u64> {
    let seqs: Option<Vec<i64>> = peer_client
        .query_opt(
            "select seqs from repctl.applied where origin = $1",
            &[&origin_name],
        )?
        .map(|r| r.get(0));
    let Some(seqs) = seqs else { return Ok(0) };
    Ok(origin.execute(
        "delete from repctl.queue where peer = $1 and seq between ($2::bigint[])[1] and ($2::bigint[])[cardinality($2::bigint[])] and seq = any($2)",
        &[&peer, &seqs],
    )?)
}

pub fn pending(origin: &mut Client, peer: &str) -> Result<i64> {
    Ok(origin
        .query_one(
            "select count(*) from repctl.queue where peer = $1",
            &[&peer],
        )?
        .get(0))
}

/// Applies batch `b` on the peer, recording `seqs` there as applied in the same transaction. Its
/// waits for row locks there are bounded (`APPLY_LOCK_TIMEOUT`, see `busy`).
pub fn apply_batch(
    peer_client: &mut Client,
    origin_name: &str,
    b: &Batch,
    seqs: &[i64],
) -> Result<(), postgres::Error> {
    match &b.body {
        Body::Images(payload) => peer_client.query_typed_one(
            "select repctl.apply($1, $2::text::jsonb, $3)
               from pg_catalog.set_config('lock_timeout', $4, true)",
            &[
                (&origin_name, Type::TEXT),
                (payload, Type::TEXT),
                (&seqs, Type::INT8_ARRAY),
                (&APPLY_LOCK_TIMEOUT, Type::TEXT),
            ],
        ),
        Body::Columns {
            payload,
            columns,
            values,
        } => peer_client.query_typed_one(
            "select repctl.apply($1, $2::text::jsonb, $3, $4, $5)
               from pg_catalog.set_config('lock_timeout', $6, true)",
            &[
                (&origin_name, Type::TEXT),
                (payload, Type::TEXT),
                (&seqs, Type::INT8_ARRAY),
                (columns, Type::TEXT_ARRAY),
                (values, Type::TEXT_ARRAY),
                (&APPLY_LOCK_TIMEOUT, Type::TEXT),
            ],
        ),
    }
    .map(|_| ())
}

/// Inserts as column arrays take one plain insert on the peer; whatever fails it (a key the peer
/// has included) rolls it back, and the same changes go again, as row images, which are compared
/// and decided on. Returns the batch applied, or tried, last; `recorded` goes with it as in
/// `deliver`.
#[allow(clippy::too_many_arguments)]
fn apply_refused_columns(
    origin: &mut Client,
    peer_client: &mut Client,
    origin_name: &str,
    peer: &str,
    b: Batch,
    recorded: &[i64],
    refused: postgres::Error,
    linked: &Linked,
) -> Result<(Batch, Result<(), postgres::Error>)> {
    let (first, last) = (b.seqs[0], *b.seqs.last().expect("a batch is never empty"));
    // A change committed late into an unsettled batch's range comes along: it is older than the
    // batch read ahead, and is delivered and removed with this one.
    let Some(mut images) = batch::read_images_between(origin, peer, first, last, linked)? else {
        return Ok((b, Err(refused)));
    };
    images.settled = b.settled;
    let applied = apply_batch(
        peer_client,
        origin_name,
        &images,
        &[recorded, &images.seqs].concat(),
    );
    Ok((images, applied))
}

/// Deletes a delivered batch from the origin's queue and counts it, in one statement: one round
/// trip where a transaction of two statements took four, between every two applies. With `whole`,
/// every change queued from the batch's first sequence number to its last is in it (a settled
/// batch, see `deliver`), and the range alone finds them.
fn acknowledge(origin: &mut Client, peer: &str, seqs: &[i64], whole: bool) -> Result<()> {
    origin.execute_typed(
        "with acked as (
           delete from repctl.queue where peer = $1 and seq between ($2::bigint[])[1] and ($2::bigint[])[cardinality($2::bigint[])]
              and ($4 or seq = any($2)))
         update repctl.delivery set last_delivery = now(), delivered = delivered + $3 where peer = $1",
        &[
            (&peer, Type::TEXT),
            (&seqs, Type::INT8_ARRAY),
            (&(seqs.len() as i64), Type::INT8),
            (&whole, Type::BOOL),
        ],
    )?;
    Ok(())
}

/// Finds the first change of a refused batch of `size` changes by applying them one at a time (the
/// good ones before it are delivered), then parks it (its table set to `--on-apply-error park`
/// and the peer refused its data) or records the pair as stopped there. Nothing refused when every
/// one applied alone: what failed the batch was passing (a row the peer wrote meanwhile), and the
/// pair goes on.
fn isolate_refused(
    origin: &mut Client,
    peer_client: &mut Client,
    origin_name: &str,
    peer: &str,
    size: usize,
) -> Result<Delivered> {
    let mut count = 0;
    while count < size as i64 {
        let Some(one) = batch::read_images(origin, peer, 1)? else {
            break;
        };
        let seq = one.seqs[0];
        if let Err(e) = apply_batch(peer_client, origin_name, &one, &one.seqs) {
            if let Some(why) = busy(&e) {
                return Ok(Delivered {
                    count,
                    busy: Some(why),
                    ..Delivered::default()
                });
            }
            let Some(db) = e.as_db_error() else {
                return Err(e).with_context(|| {
                    format!("node {peer}: applying change seq {seq} from {origin_name}")
                });
            };
            let why = format!(
                "node {peer} refused change seq {seq} from {origin_name}: {}",
                db.message()
            );
            if parkable(db) && queue::parks(origin, peer, seq)? {
                let error = match db.detail() {
                    Some(detail) => format!("{} ({detail})", db.message()),
                    None => db.message().to_string(),
                };
                queue::park(
                    origin,
                    peer,
                    seq,
                    &error,
                    Some(db.code().code()),
                    queue::BY_POLICY,
                )?;
                return Ok(Delivered {
                    count,
                    parked: Some(why),
                    ..Delivered::default()
                });
            }
            let why = format!("{why}; change: {}", one.shown());
            queue::record_stop(origin, peer, seq, &why)?;
            return Ok(Delivered {
                count,
                refused: Some(why),
                ..Delivered::default()
            });
        }
        acknowledge(origin, peer, &one.seqs, true)?;
        count += 1;
    }
    Ok(Delivered {
        count,
        ..Delivered::default()
    })
}

/// Whether the peer refused the change's data (a constraint, a trigger, a value; a conflict under
/// the rule `error`), which parking sets aside, rather than something that refuses every change
/// (a table or function missing there, a timeout), which parking would only pile up.
fn parkable(e: &postgres::error::DbError) -> bool {
    let class = &e.code().code()[..2];
    let config =
        e.message().starts_with("repctl: ") && !e.message().starts_with("repctl: conflict");
    matches!(class, "22" | "23" | "27" | "44" | "P0") && !config
}

/// What one batch did: how many changes reached the peer, and why the pair stopped if the peer
/// refused one (the changes before it are delivered, it and the rest stay queued), or which change
/// was parked (the rest stay queued, for the next batch).
#[derive(Default)]
pub struct Delivered {
    pub count: i64,
    pub refused: Option<String>,
    pub parked: Option<String>,
    /// The peer's rows were locked (by its writers, or a deadlock with them) longer than an apply
    /// waits: nothing was refused, the changes stay queued and go again in a smaller batch.
    pub busy: Option<String>,
}

/// Whether the peer gave up on a lock (`APPLY_LOCK_TIMEOUT`), broke a deadlock or could not
/// serialize: what it says of the moment, not of the changes.
fn busy(e: &postgres::Error) -> Option<String> {
    let db = e.as_db_error()?;
    matches!(db.code().code(), "55P03" | "40P01" | "40001").then(|| db.message().to_string())
}

/// What carries over from one batch of a pair to the next, so the origin's work overlaps the
/// peer's apply: the next batch, read while the peer applied the last one, and the last delivered
/// batch, removed from the origin's queue while the peer applies the next (at once when there is
/// no next). The peer records that batch's sequence numbers with the next one's, so a drain cut
/// off before the removal still settles both. Valid while the pair lock is held.
///
/// After a refused change is parked, batches start again at one change and double while they go
/// through (`cap`): where refusals are many, a full batch would fail again and again (each failure
/// an apply of the whole batch, rolled back, then one change at a time up to the next refusal).
///
/// `paced` is the batch size the last applies' times allow (`BATCH_TIME`; None before the first).
/// `linked` is read from the peer at the pair's first batch (see `batch::Linked`).
#[derive(Default, Clone)]
pub struct Pipeline {
    ahead: Option<Batch>,
    unacked: Vec<i64>,
    cap: Option<i64>,
    paced: Option<i64>,
    linked: Option<Linked>,
}

impl Pipeline {
    /// Forgets the batch read ahead: applying changes from the peer on the origin can delete
    /// changes they supersede from this pair's queue (origin-wins, target-wins).
    pub fn drop_ahead(&mut self) {
        self.ahead = None;
    }

    /// Whether batches are still growing back after a parked change: more is likely queued.
    pub fn ramping(&self) -> bool {
        self.cap.is_some()
    }

    /// Whether a batch is read ahead (then the batch before may still be in the origin's queue).
    pub fn ready(&self) -> bool {
        self.ahead.is_some()
    }

    /// Sizes batches by the time the last one's apply took: as many as it applied in `BATCH_TIME`,
    /// at most twice the batch before.
    fn pace(&mut self, applied: usize, took: Duration) {
        let applied = applied as i64;
        let fit = (applied as f64 * BATCH_TIME.as_secs_f64()
            / took.max(Duration::from_millis(1)).as_secs_f64()) as i64;
        let grown = self.paced.unwrap_or(applied).max(applied).saturating_mul(2);
        self.paced = Some(fit.clamp(MIN_PACED, grown.max(MIN_PACED)));
    }

    /// Removes the last delivered batch from the origin's queue now.
    pub fn finish(&mut self, origin: &mut Client, peer: &str) -> Result<()> {
        if !self.unacked.is_empty() {
            acknowledge(origin, peer, &self.unacked, true)?;
            self.unacked.clear();
        }
        Ok(())
    }
}

/// Delivers a pair's next batch, the one read ahead, else the oldest `size` queued changes; while
/// the peer applies it, the origin reads the `next(delivered)` changes after it (none when 0) and
/// removes the batch delivered before. Needs the pair lock.
pub fn deliver_next(
    origin: &mut Client,
    peer_client: &mut Client,
    origin_name: &str,
    peer: &str,
    pipe: &mut Pipeline,
    size: i64,
    next: impl Fn(i64) -> i64,
) -> Result<Delivered> {
    let requested = size;
    let cap = pipe
        .cap
        .unwrap_or(i64::MAX)
        .min(pipe.paced.unwrap_or(FIRST_PACED));
    let size = size.min(cap);
    if pipe.linked.is_none() {
        pipe.linked = Some(
            links::linked_tables(peer_client)
                .with_context(|| format!("node {peer}: reading its foreign keys"))?,
        );
    }
    let b = match pipe.ahead.take() {
        Some(b) => b,
        None => {
            // A fresh read starts at the oldest queued change: the delivered batch must be gone.
            pipe.finish(origin, peer)?;
            match batch::read(
                origin,
                peer,
                size,
                pipe.linked.as_ref().unwrap_or(batch::UNLINKED),
            )? {
                Some(b) => b,
                None => return Ok(Delivered::default()),
            }
        }
    };
    // Read ahead as if this batch goes through.
    let next = next(b.seqs.len() as i64).min(cap.saturating_mul(2));
    let d = deliver(origin, peer_client, origin_name, peer, b, next, pipe)?;
    pipe.cap = if d.parked.is_some() {
        Some(1)
    } else {
        pipe.cap
            .map(|c| c.saturating_mul(2))
            .filter(|&c| c < requested)
    };
    Ok(d)
}

/// Delivers batch `b`, the oldest queued changes of a pair not yet delivered (see `Pipeline`).
/// The batch read ahead is kept only if nothing older than it is queued by then: a change
/// committed after `b` was read, with a lower sequence number, goes first.
///
/// That check walks the index entries of the rows just acknowledged (~5 ms a batch of 5,000), so
/// it is skipped when `b` was read with no transaction in progress (`Batch::settled`): changes
/// numbered up to `b`'s last were then all final and in `b` or delivered before it, and one
/// numbered between `b` and the batch read ahead either is in that batch or committed after it
/// was read, so it precedes none of its changes on the same row (a row's later change waits for
/// the earlier one's commit). Such a change was in progress when the batch ahead was read, so
/// the next batch is checked. An unsettled `b` is removed from the queue at once, for the check.
fn deliver(
    origin: &mut Client,
    peer_client: &mut Client,
    origin_name: &str,
    peer: &str,
    b: Batch,
    next: i64,
    pipe: &mut Pipeline,
) -> Result<Delivered> {
    let last = *b.seqs.last().expect("a batch is never empty");
    let before = std::mem::take(&mut pipe.unacked);
    let linked = pipe.linked.as_ref().unwrap_or(batch::UNLINKED);
    let mut took = Duration::ZERO;
    let (applied, origin_side) = std::thread::scope(|s| {
        let origin_side = s.spawn(|| -> Result<Option<Batch>> {
            let fetched = if next > 0 {
                batch::fetch_after(origin, peer, next, last)?
            } else {
                Fetched::Nothing
            };
            // The removal's transaction comes after the read, whose snapshot must not see it in
            // progress (`Batch::settled`), and runs while the batch is built.
            std::thread::scope(|s| {
                let built = s.spawn(|| fetched.into_batch(linked));
                if !before.is_empty() {
                    acknowledge(origin, peer, &before, true)?;
                }
                built.join().expect("building a batch does not panic")
            })
        });
        let started = Instant::now();
        let applied = apply_batch(
            peer_client,
            origin_name,
            &b,
            &[before.as_slice(), &b.seqs].concat(),
        );
        took = started.elapsed();
        (
            applied,
            origin_side
                .join()
                .expect("the origin's thread does not panic"),
        )
    });
    if let Err(e) = &applied
        && let Some(why) = busy(e)
    {
        // Whatever was read ahead is read again after this batch, smaller.
        origin_side?;
        pipe.paced = Some((b.seqs.len() as i64 / 2).max(MIN_PACED));
        return Ok(Delivered {
            busy: Some(why),
            ..Delivered::default()
        });
    }
    let (b, applied) = match applied {
        Err(e) if e.as_db_error().is_some() && matches!(b.body, Body::Columns { .. }) => {
            apply_refused_columns(
                origin,
                peer_client,
                origin_name,
                peer,
                b,
                &before,
                e,
                linked,
            )?
        }
        applied => (b, applied),
    };
    match applied {
        Ok(()) => {
            let ahead = origin_side?;
            let count = b.seqs.len() as i64;
            pipe.pace(b.seqs.len(), took);
            match (b.settled, ahead) {
                (true, Some(a)) => {
                    pipe.ahead = Some(a);
                    pipe.unacked = b.seqs;
                }
                // Nothing to overlap the removal with.
                (true, None) => acknowledge(origin, peer, &b.seqs, true)?,
                (false, ahead) => {
                    acknowledge(origin, peer, &b.seqs, false)?;
                    pipe.ahead = match ahead {
                        Some(a) if !queued_before(origin, peer, a.seqs[0])? => Some(a),
                        _ => None,
                    };
                }
            }
            Ok(Delivered {
                count,
                ..Delivered::default()
            })
        }
        Err(e) if e.as_db_error().is_some() => {
            origin_side?;
            isolate_refused(origin, peer_client, origin_name, peer, b.seqs.len())
        }
        Err(e) => {
            Err(e).with_context(|| format!("node {peer}: applying a batch from {origin_name}"))
        }
    }
}

/// Whether changes older than `seq` are queued for `peer` (committed since the batch before was read).
fn queued_before(origin: &mut Client, peer: &str, seq: i64) -> Result<bool> {
    Ok(origin
        .query_typed_one(
            "select exists (select from repctl.queue where peer = $1 and seq < $2)",
            &[(&peer, Type::TEXT), (&seq, Type::INT8)],
        )?
        .get(0))
}

/// Delivers up to `limit` changes (all when None) from `origin_name` to `peer`, `batch` at a time.
#[allow(clippy::too_many_arguments)]
pub fn drain_pair(
    origin: &mut Client,
    peer_client: &mut Client,
    origin_name: &str,
    peer: &str,
    limit: Option<i64>,
    batch: i64,
    progress: &mut dyn Progress,
) -> Result<PairReport> {
    let started = Instant::now();
    if !locks::lock_pair(origin, peer, Duration::from_secs(30))? {
        anyhow::bail!("pair {origin_name}->{peer}: another drain or run holds it for over 30 s");
    }
    let mut parked = 0;
    let result = (|| -> Result<(i64, Option<String>)> {
        settle_applied(origin, peer_client, origin_name, peer)?;
        let total = pending(origin, peer)?;
        progress.start(
            &format!("{origin_name} -> {peer}"),
            limit.map_or(total, |l| l.min(total)).max(0) as u64,
        );
        let room = |delivered: i64| limit.map_or(batch, |l| (l - delivered).min(batch));
        let (mut delivered, mut pipe) = (0, Pipeline::default());
        let mut busy_since: Option<Instant> = None;
        while room(delivered) > 0 {
            let d = deliver_next(
                origin,
                peer_client,
                origin_name,
                peer,
                &mut pipe,
                room(delivered),
                |size| room(delivered + size),
            )?;
            delivered += d.count;
            progress.advance(d.count.max(0) as u64);
            if let Some(why) = &d.busy {
                let since = *busy_since.get_or_insert_with(Instant::now);
                if since.elapsed() > BUSY_FOR {
                    anyhow::bail!(
                        "pair {origin_name}->{peer}: node {peer} kept the rows of every batch locked for {} s (last: {why}); \
                         its changes stay queued: drain again once the transactions there holding them end",
                        BUSY_FOR.as_secs()
                    );
                }
                std::thread::sleep(Duration::from_millis(20));
                continue;
            }
            busy_since = None;
            if d.parked.is_some() {
                progress.advance(1);
                parked += 1;
            } else if d.refused.is_some() || d.count == 0 {
                return Ok((delivered, d.refused));
            }
        }
        // Read ahead is bounded by the limit, so nothing is carried over; this only makes sure.
        pipe.finish(origin, peer)?;
        Ok((delivered, None))
    })();
    progress.finish();
    let unlocked = locks::unlock_pair(origin, peer);
    let (delivered, error) = result?;
    unlocked?;
    let seconds = started.elapsed().as_secs_f64();
    Ok(PairReport {
        from: origin_name.to_string(),
        to: peer.to_string(),
        delivered,
        left: pending(origin, peer)?,
        seconds,
        rows_per_s: if seconds > 0.0 {
            delivered as f64 / seconds
        } else {
            0.0
        },
        parked,
        error,
    })
}

/// Two distinct clients out of a list of per-node clients, when both nodes are connected.
pub fn pair_clients(
    clients: &mut [(String, Option<Client>)],
    i: usize,
    j: usize,
) -> Option<(&mut Client, &mut Client)> {
    let (a, b) = if i < j {
        let (lo, hi) = clients.split_at_mut(j);
        (&mut lo[i].1, &mut hi[0].1)
    } else {
        let (lo, hi) = clients.split_at_mut(i);
        (&mut hi[0].1, &mut lo[j].1)
    };
    Some((a.as_mut()?, b.as_mut()?))
}
