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

/// Class of a pair's "wanted" lock on the origin, held (shared) by a command waiting for the
/// pair's drain lock: `repctl run` sees it and yields the pair (`wanted_pairs`).
pub const WANT_LOCK: i32 = 0x7265_7077;

/// Class of the lock `repctl run` holds on every node (second key 0) while it runs: a second run
/// would deliver the two directions of a pair at the same instant, which origin-wins and
/// target-wins cannot order.
pub const RUN_LOCK: i32 = 0x7265_7072;

/// Takes the run lock for the session; when another session holds it, says which.
pub fn take_run_lock(c: &mut Client) -> Result<Option<String>> {
    let row = c.query_one(
        "select pg_try_advisory_lock($1::int, 0),
                (select format('pid %s%s', l.pid, coalesce(' from ' || a.client_addr::text, ''))
                   from pg_locks l left join pg_stat_activity a on a.pid = l.pid
                  where l.locktype = 'advisory' and l.granted and l.pid <> pg_backend_pid()
                    and l.database = (select oid from pg_database where datname = current_database())
                    and l.classid = $1::int::oid and l.objid = 0 and l.objsubid = 2
                  limit 1)",
        &[&RUN_LOCK],
    )?;
    Ok(if row.get(0) {
        None
    } else {
        Some(
            row.get::<_, Option<String>>(1)
                .unwrap_or_else(|| "another session".into()),
        )
    })
}

/// Takes the pair's drain lock on the origin; held for the session, released by `unlock_pair`.
/// While it waits, the pair is marked wanted, so a `repctl run` holding it lets go.
pub fn lock_pair(origin: &mut Client, peer: &str, wait: Duration) -> Result<bool> {
    let deadline = Instant::now() + wait;
    origin.query_one(
        "select pg_advisory_lock_shared($1::int, hashtext('drain:' || $2))",
        &[&WANT_LOCK, &peer],
    )?;
    let got = loop {
        let got: bool = origin
            .query_one(
                "select pg_try_advisory_lock($1::int, hashtext('drain:' || $2))",
                &[&DRAIN_LOCK, &peer],
            )?
            .get(0);
        if got || Instant::now() >= deadline {
            break got;
        }
        std::thread::sleep(Duration::from_millis(50));
    };
    origin.query_one(
        "select pg_advisory_unlock_shared($1::int, hashtext('drain:' || $2))",
        &[&WANT_LOCK, &peer],
    )?;
    Ok(got)
}

/// `repctl run`'s take of the pair's drain lock: not while another command wants it (it would
/// snatch the pair back in the moment between yielding it and the other taking it).
pub fn take_pair_unless_wanted(origin: &mut Client, peer: &str) -> Result<bool> {
    Ok(origin
        .query_one(
            "select case when exists (select from pg_locks l
                                        where l.locktype = 'advisory' and l.database = (select oid from pg_database where datname = current_database())
                                          and l.classid = $1::int::oid and l.objid = hashtext('drain:' || $3)::oid and l.objsubid = 2)
                         then false
                         else pg_try_advisory_lock($2::int, hashtext('drain:' || $3)) end",
            &[&WANT_LOCK, &DRAIN_LOCK, &peer],
        )?
        .get(0))
}

/// The peers whose pairs from this node another command is waiting for.
pub fn wanted_pairs(origin: &mut Client) -> Result<Vec<String>> {
    Ok(origin
        .query(
            "select p.name from repctl.peer p
              where exists (select from pg_locks l
                             where l.locktype = 'advisory' and l.database = (select oid from pg_database where datname = current_database())
                               and l.classid = $1::int::oid and l.objid = hashtext('drain:' || p.name)::oid and l.objsubid = 2)",
            &[&WANT_LOCK],
        )?
        .iter()
        .map(|r| r.get(0))
        .collect())
}

pub fn unlock_pair(origin: &mut Client, peer: &str) -> Result<()> {
    origin.query_one(
        "select pg_advisory_unlock($1::int, hashtext('drain:' || $2))",
        &[&DRAIN_LOCK, &peer],
    )?;
    Ok(())
}
