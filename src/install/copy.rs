//! `repctl add-table --copy-from NODE`: adds a table whose rows already live on one node, and copies
//! them to the others while writers keep writing there. Every change reaches the peers exactly once,
//! either inside the copy or after it:
//!
//! 1. On the source, the drain locks of its pairs to the peers are taken, so no drain (or `run`)
//!    delivers anything of the source's to them until step 5.
//! 2. Each peer, in one transaction held open: its table locked against writes (reads go on),
//!    checked empty (or emptied with `--truncate-peers`), and the table installed there. Nothing
//!    can arrive for the table, nor be written to it, until this commits.
//! 3. The source installs the table in async mode and commits: from here every committed change is
//!    queued for the peers, in order.
//! 4. One REPEATABLE READ transaction on the source: its snapshot S is kept, and the rows as of S
//!    stream with COPY into every peer; the peers commit.
//! 5. Queued changes of transactions visible in S are already in the copy and are deleted from the
//!    queue; the rest (committed after S, or running at S) stay. The drain locks are released.
//! 6. A drain delivers what is queued; the table switches to the requested mode the way
//!    `alter-table` does, and a last drain delivers what queued meanwhile.

use std::io::{Read, Write};
use std::time::{Duration, Instant};

use anyhow::{Context, Result, bail};
use minijinja::context;
use postgres::{Client, IsolationLevel, Transaction};

use super::Script;
use super::table::{self, AddTable};
use crate::catalog::{Mode, Replicated, TableName};
use crate::db;
use crate::locks;
use crate::progress::Progress;
use crate::render::{self, names, safe};

/// What the copy did.
#[derive(Debug, Clone)]
pub struct Copied {
    pub rows: u64,
    pub seconds: f64,
    /// Changes queued during the copy that it already held, so not delivered again.
    pub already_copied: u64,
    /// Changes delivered on top of the copy (the writers', and anything else queued).
    pub delivered_after: i64,
    /// Pairs a drain could not finish (they stay queued), with why.
    pub left: Vec<String>,
}

/// Delivers up to `limit` changes queued on the origin (first client, named first) for the peer
/// (second): how many it delivered and, when the pair stopped early, why. The caller wires it to
/// the drain, which install does not depend on.
pub type Deliver<'a> =
    &'a mut dyn FnMut(&mut Client, &mut Client, &str, &str, i64) -> Result<(i64, Option<String>)>;

/// Installs the table on every node and copies its rows from `source` (see the module comment).
pub fn add_with_copy(
    clients: &mut [(String, Client)],
    req: &AddTable,
    source: &str,
    truncate_peers: bool,
    progress: &mut dyn Progress,
    deliver: Deliver<'_>,
) -> Result<Copied> {
    let started = Instant::now();
    let mut first = req.clone();
    first.settings.mode = Mode::Async;
    let scripts = table::add_scripts(clients, &first, false)?;
    let s = clients
        .iter()
        .position(|(n, _)| n == source)
        .with_context(|| format!("--copy-from {source}: no such node in the config"))?;
    let logical = table::logical_name(&req.name);
    let peers: Vec<String> = clients
        .iter()
        .map(|(n, _)| n.clone())
        .filter(|n| n != source)
        .collect();
    let (rows, pruned) = {
        let (src, others) = split(clients, s);
        for peer in &peers {
            if !locks::lock_pair(src, peer, Duration::from_secs(30))? {
                bail!(
                    "node {source}: a drain or `repctl run` has held the pair {source}->{peer} for over 30 s; \
                     stop it and run add-table again"
                );
            }
        }
        let local = req.local_name(source).clone();
        let copied = copy_locked(
            src,
            others,
            &scripts,
            (source, &local),
            &logical,
            truncate_peers,
            progress,
        );
        for peer in &peers {
            locks::unlock_pair(src, peer)?;
        }
        copied?
    };
    // Deliver what the writers changed during the copy, then switch to the requested mode.
    let mut delivered_after = 0;
    let mut left = Vec::new();
    drain_all(clients, false, deliver, &mut delivered_after, &mut left)?;
    if req.settings.mode != Mode::Async {
        let scripts = table::add_scripts(clients, req, true)?;
        super::run_scripts(clients, &scripts).with_context(|| {
            format!(
                "the rows were copied, but switching {logical} to {:?} failed; run `repctl alter-table {logical} --mode sync`",
                req.settings.mode
            )
        })?;
        drain_all(clients, true, deliver, &mut delivered_after, &mut left)?;
    }
    Ok(Copied {
        rows,
        already_copied: pruned,
        seconds: started.elapsed().as_secs_f64(),
        delivered_after,
        left,
    })
}

/// The source's client and the peers', in config order.
fn split(clients: &mut [(String, Client)], s: usize) -> (&mut Client, Vec<(&str, &mut Client)>) {
    let (before, rest) = clients.split_at_mut(s);
    let (src, after) = rest.split_first_mut().expect("source index in range");
    let others = before
        .iter_mut()
        .chain(after.iter_mut())
        .map(|(n, c)| (n.as_str(), c))
        .collect();
    (&mut src.1, others)
}

/// Steps 2 to 5, with the source's drain locks held. Returns rows copied and changes pruned.
fn copy_locked(
    src: &mut Client,
    peers: Vec<(&str, &mut Client)>,
    scripts: &[Script],
    (source, local): (&str, &TableName),
    logical: &str,
    truncate_peers: bool,
    progress: &mut dyn Progress,
) -> Result<(u64, u64)> {
    let script = |node: &str| {
        scripts
            .iter()
            .find(|s| s.node == node)
            .map(|s| s.sql.clone())
            .with_context(|| format!("node {node}: no install script rendered"))
    };
    // Step 2: every peer locked, empty and installed, uncommitted.
    let mut open: Vec<(&str, Transaction<'_>, Replicated)> = Vec::new();
    for (node, client) in peers {
        let sql = script(node)?;
        let mut tx = client.transaction()?;
        suppress(&mut tx).with_context(|| format!("node {node}: preparing the copy"))?;
        tx.batch_execute(&sql).with_context(|| {
            format!("node {node}: installing {logical} failed; no node was changed (the SQL is shown by --dry-run)")
        })?;
        let t = Replicated::require(&mut tx, node, logical)?;
        tx.batch_execute(&copy_sql("lock", &t)?)
            .with_context(|| format!("node {node}: locking {} for the copy", t.local))?;
        let has_rows: bool = tx.query_one(&copy_sql("has_rows", &t)?, &[])?.get(0);
        if has_rows && !truncate_peers {
            bail!(
                "node {node}: table {} already has rows{}; the copy from node {source} needs it empty. \
                 Empty it, or pass --truncate-peers to discard its rows. No node was changed",
                t.local,
                if t.settings.where_clause.is_some() {
                    " matching --where"
                } else {
                    ""
                }
            );
        }
        if has_rows {
            tx.batch_execute(&copy_sql("empty", &t)?)
                .with_context(|| format!("node {node}: emptying {} (--truncate-peers)", t.local))?;
        }
        open.push((node, tx, t));
    }
    // Step 3: the source queues every change from here on.
    let sql = script(source)?;
    let mut tx = src.transaction()?;
    tx.batch_execute(&sql).with_context(|| {
        format!("node {source}: installing {logical} failed; no node was changed (the SQL is shown by --dry-run)")
    })?;
    tx.commit()?;
    let mut copied = None;
    let mut committed: Vec<&str> = Vec::new();
    let failed = match stream(src, &mut open, source, logical, progress) {
        Err(e) => Some(e),
        Ok(c) => {
            copied = Some(c);
            open.drain(..).find_map(|(node, tx, _)| match tx.commit() {
                Ok(()) => {
                    committed.push(node);
                    None
                }
                Err(e) => {
                    Some(anyhow::Error::new(e).context(format!("node {node}: committing the copy")))
                }
            })
        }
    };
    if let Some(e) = failed {
        // The peers not committed roll back as their transactions drop.
        drop(open);
        if committed.is_empty() {
            uninstall(src, source, logical, local);
            return Err(e.context(format!(
                "copying {logical} from node {source} failed; the peers were not changed and {logical} \
                 was removed from node {source} again"
            )));
        }
        return Err(e.context(format!(
            "copying {logical} from node {source} failed after node(s) {} committed it; run \
             `repctl remove-table {logical} --force`, then add it again with --copy-from {source} --truncate-peers",
            committed.join(", ")
        )));
    }
    let (rows, snapshot) = copied.expect("the copy succeeded");
    // Step 5: what the copy already holds must not be delivered again.
    let mut pruned = 0;
    for peer in scripts
        .iter()
        .map(|s| s.node.as_str())
        .filter(|n| *n != source)
    {
        pruned += src
            .execute(
                "delete from repctl.queue
                  where peer = $1 and tbl = $2 and pg_visible_in_snapshot(xid, $3::text::pg_snapshot)",
                &[&peer, &logical, &snapshot],
            )
            .with_context(|| {
                format!(
                    "node {source}: the rows were copied, but removing the queued changes the copy already holds failed; \
                     do not drain: run `repctl remove-table {logical} --force`, then add it again with --copy-from {source} --truncate-peers"
                )
            })?;
    }
    Ok((rows, pruned))
}

/// Step 4: the source's rows as of one snapshot, streamed into every peer's open transaction.
/// Returns the rows copied and the snapshot.
fn stream(
    src: &mut Client,
    peers: &mut [(&str, Transaction<'_>, Replicated)],
    source: &str,
    logical: &str,
    progress: &mut dyn Progress,
) -> Result<(u64, String)> {
    let what = || format!("node {source}: reading {logical} for the copy");
    let mut tx = src
        .build_transaction()
        .isolation_level(IsolationLevel::RepeatableRead)
        .read_only(true)
        .start()
        .with_context(what)?;
    suppress(&mut tx).with_context(what)?;
    let snapshot: String = tx
        .query_one("select pg_current_snapshot()::text", &[])?
        .get(0);
    let t = Replicated::require(&mut tx, source, logical)?;
    let total: i64 = tx
        .query_one(&copy_sql("count", &t)?, &[])
        .with_context(what)?
        .get(0);
    progress.start(&format!("copy {logical}"), total.max(0) as u64);
    let mut reader = tx.copy_out(&copy_sql("copy_out", &t)?).with_context(what)?;
    let mut writers = Vec::new();
    for (node, ptx, pt) in peers.iter_mut() {
        let w = ptx
            .copy_in(&copy_sql("copy_in", pt)?)
            .with_context(|| format!("node {node}: starting the copy into {}", pt.local))?;
        writers.push((*node, w));
    }
    let mut buf = vec![0u8; 1 << 16];
    loop {
        let n = reader.read(&mut buf).with_context(what)?;
        if n == 0 {
            break;
        }
        for (node, w) in writers.iter_mut() {
            w.write_all(&buf[..n])
                .with_context(|| format!("node {node}: writing the copy"))?;
        }
        // Text COPY: one line per row (newlines inside values are escaped).
        progress.advance(buf[..n].iter().filter(|b| **b == b'\n').count() as u64);
    }
    drop(reader);
    let mut rows = 0;
    for (node, w) in writers {
        rows = w
            .finish()
            .with_context(|| format!("node {node}: finishing the copy"))?;
    }
    progress.finish();
    tx.commit()?;
    Ok((rows, snapshot))
}

/// Replication suppressed (the capture triggers skip the transaction) and the text forms pinned,
/// on both ends of the copy.
fn suppress(tx: &mut Transaction<'_>) -> Result<()> {
    tx.query_one(
        "select set_config($1, 'on', true)",
        &[&names::APPLYING_SETTING],
    )?;
    tx.query_one("select set_config('search_path', 'pg_catalog', true)", &[])?;
    db::pin_text_settings(tx)
}

fn copy_sql(query: &str, t: &Replicated) -> Result<String> {
    render_copy(
        query,
        &t.local,
        &t.columns,
        t.settings.where_clause.as_deref(),
    )
}

/// A statement of `ops/copy.sql` (`has_rows`, `count`, `lock`, `empty`, `copy_out`, `copy_in`) for
/// a table's replicated columns and rows.
pub fn render_copy(
    query: &str,
    table: &TableName,
    columns: &[String],
    where_clause: Option<&str>,
) -> Result<String> {
    render::render(
        "ops/copy.sql",
        &context! {
            query,
            table => safe(table.sql()),
            columns => columns.to_vec(),
            where => where_clause.map(safe),
        },
    )
}

/// Takes the table off the source again after a failed copy (best effort: the error that caused
/// it is what the caller reports).
fn uninstall(src: &mut Client, source: &str, logical: &str, local: &TableName) {
    let Ok(sql) = table::render_remove(source, logical, local, true) else {
        return;
    };
    if let Ok(mut tx) = src.transaction()
        && tx.batch_execute(&sql).is_ok()
    {
        let _ = tx.commit();
    }
}

/// Delivers every pair's queue. With `chase`, drains again while writers keep adding (in sync mode
/// their changes queue behind a non-empty queue), a bounded number of rounds, so synchronous
/// delivery takes over; without, delivers what is queued now.
fn drain_all(
    clients: &mut [(String, Client)],
    chase: bool,
    deliver: Deliver<'_>,
    delivered: &mut i64,
    left: &mut Vec<String>,
) -> Result<()> {
    for i in 0..clients.len() {
        for j in 0..clients.len() {
            if i == j {
                continue;
            }
            let (a, b) = pair(clients, i, j);
            let (from, to) = (a.0.clone(), b.0.clone());
            for _ in 0..if chase { 20 } else { 1 } {
                let pending: i64 =
                    a.1.query_one("select count(*) from repctl.queue where peer = $1", &[&to])?
                        .get(0);
                if pending == 0 {
                    break;
                }
                let (n, error) = deliver(&mut a.1, &mut b.1, &from, &to, pending)?;
                *delivered += n;
                if let Some(e) = error {
                    left.push(e);
                    break;
                }
            }
        }
    }
    Ok(())
}

fn pair(
    clients: &mut [(String, Client)],
    i: usize,
    j: usize,
) -> (&mut (String, Client), &mut (String, Client)) {
    if i < j {
        let (lo, hi) = clients.split_at_mut(j);
        (&mut lo[i], &mut hi[0])
    } else {
        let (lo, hi) = clients.split_at_mut(i);
        (&mut hi[0], &mut lo[j])
    }
}
