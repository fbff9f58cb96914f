//! The advisory locks repctl takes on a node, with their keys in one place. A one-key lock and a
//! two-key lock never conflict in PostgreSQL, whatever their values.

use std::time::{Duration, Instant};

use anyhow::Result;
use postgres::Client;

/// Taken (transaction-level) by every changing command, so two repctl runs never interleave on a
/// node; the templates take it as `lock_key`.
pub const LOCK_KEY: i64 = 0x7265_7063_746c;

/// Class of a pair's drain lock on the origin (the second key is a hash of the peer name).
pub const DRAIN_LOCK: i32 = 0x7265_7063;

/// Takes the pair's drain lock on the origin; held for the session, released by `unlock_pair`.
pub fn lock_pair(origin: &mut Client, peer: &str, wait: Duration) -> Result<bool> {
    let deadline = Instant::now() + wait;
    loop {
        let got: bool = origin
            .query_one(
                "select pg_try_advisory_lock($1::int, hashtext('drain:' || $2))",
                &[&DRAIN_LOCK, &peer],
            )?
            .get(0);
        if got || Instant::now() >= deadline {
            return Ok(got);
        }
        std::thread::sleep(Duration::from_millis(50));
    }
}

pub fn unlock_pair(origin: &mut Client, peer: &str) -> Result<()> {
    origin.query_one(
        "select pg_advisory_unlock($1::int, hashtext('drain:' || $2))",
        &[&DRAIN_LOCK, &peer],
    )?;
    Ok(())
}
