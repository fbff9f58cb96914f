//! `add-table --copy-from`: the initial copy of a table that already holds rows on one node, while
//! writers keep changing it.

mod common;

use std::sync::atomic::{AtomicBool, AtomicI64, Ordering};
use std::time::{Duration, Instant};

use common::{Layout, Setup};
use serde_json::Value;

fn create(s: &Setup, table: &str) {
    for n in &s.nodes {
        n.exec(&format!(
            "create table {table} (id int primary key, a text, b int, c timestamptz)"
        ));
    }
}

/// Runs `repctl ARGS` while a writer on `source` keeps committing `sql(0)`, `sql(1)`, ..; the
/// writer starts first and goes on for `after` more transactions. Returns how many it committed.
fn add_while_writing(
    s: &Setup,
    source: &str,
    args: &[&str],
    after: i64,
    sql: impl Fn(i64) -> String + Sync,
) -> (i64, String) {
    let stop = AtomicBool::new(false);
    let writes = AtomicI64::new(0);
    let wait_for = |n: i64| {
        while writes.load(Ordering::SeqCst) < n {
            std::thread::sleep(Duration::from_millis(10));
        }
    };
    std::thread::scope(|scope| {
        scope.spawn(|| {
            let mut c = s.node(source).admin();
            let mut i: i64 = 0;
            while !stop.load(Ordering::SeqCst) {
                c.batch_execute(&sql(i)).unwrap();
                i += 1;
                writes.store(i, Ordering::SeqCst);
            }
        });
        wait_for(20);
        let out = s.repctl_ok(args, 0);
        wait_for(writes.load(Ordering::SeqCst) + after);
        stop.store(true, Ordering::SeqCst);
        (writes.load(Ordering::SeqCst), out)
    })
}

/// The scenario: 1,000,000 rows on one node, copied while a writer keeps updating,
/// inserting and deleting there; nothing lost or applied twice, the nodes verify equal.
#[test]
fn million_rows_copied_while_a_writer_keeps_writing() {
    let s = Setup::pair(Layout::TwoClusters);
    create(&s, "seeded");
    let local = s.node("local");
    local.exec(
        "insert into seeded select g, md5(g::text), 0, '2020-01-01'::timestamptz + g * interval '1 second'
           from generate_series(1, 1000000) g;
         analyze seeded",
    );
    s.repctl_ok(&["init"], 0);
    let started = Instant::now();
    let (n, out) = add_while_writing(
        &s,
        "local",
        &["add-table", "public.seeded", "--copy-from", "local"],
        50,
        |i| {
            format!(
                "begin;
                 update seeded set b = b + 1, a = 'w{i}' where id = {id};
                 insert into seeded values ({new}, 'new', 0, now());
                 delete from seeded where id = {old};
                 commit;",
                id = 1 + (i * 7919) % 1_000_000,
                new = 2_000_000 + i,
                old = 1_000_000 - i,
            )
        },
    );
    eprintln!(
        "copy of 1,000,000 rows with a writer: {:.2?}: {out}",
        started.elapsed()
    );
    s.repctl_ok(&["drain"], 0);
    s.repctl_ok(&["verify"], 0);
    s.repctl_ok(&["verify", "--rows"], 0);
    assert!(
        n > 100,
        "the writer wrote during the copy ({n} transactions)"
    );
    let remote = s.node("remote");
    assert_eq!(
        remote.count("select count(*) from seeded"),
        local.count("select count(*) from seeded")
    );
    // Every update of the writer arrived exactly once (b counts them).
    assert_eq!(
        remote.count("select coalesce(sum(b), 0) from seeded"),
        local.count("select coalesce(sum(b), 0) from seeded")
    );
    let status: Value = serde_json::from_str(&s.repctl_ok(&["status", "--json"], 0)).unwrap();
    assert_eq!(status["tables"][0]["mode"], "sync");
}

/// A peer whose table is not empty is refused (nothing changes anywhere), unless --truncate-peers.
#[test]
fn non_empty_peer_is_refused_unless_truncated() {
    let s = Setup::pair(Layout::OneCluster);
    create(&s, "filled");
    s.node("local")
        .exec("insert into filled select g, 'l', g, now() from generate_series(1, 1000) g");
    s.node("remote")
        .exec("insert into filled values (5, 'stray', 0, now()), (5000, 'stray', 0, now())");
    s.repctl_ok(&["init"], 0);
    let out = s.repctl(&["add-table", "public.filled", "--copy-from", "local"]);
    assert_eq!(out.status.code(), Some(2));
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(
        err.contains("node remote") && err.contains("--truncate-peers") && err.contains("filled"),
        "{err}"
    );
    let status: Value = serde_json::from_str(&s.repctl_ok(&["status", "--json"], 0)).unwrap();
    assert_eq!(status["tables"].as_array().unwrap().len(), 0, "{status}");
    assert_eq!(
        s.node("local").count("select count(*) from repctl.queue"),
        0
    );

    s.repctl_ok(
        &[
            "add-table",
            "public.filled",
            "--copy-from",
            "local",
            "--truncate-peers",
            "--mode",
            "async",
        ],
        0,
    );
    s.repctl_ok(&["verify"], 0);
    assert_eq!(
        s.node("remote")
            .count("select count(*) from filled where a = 'stray'"),
        0
    );
    // Replication runs from here on.
    s.node("remote")
        .exec("update filled set a = 'from remote' where id = 7");
    s.repctl_ok(&["drain"], 0);
    assert_eq!(
        s.node("local")
            .count("select count(*) from filled where a = 'from remote'"),
        1
    );
}

/// --where and --columns: only the replicated part is copied; the peer's other rows stay.
#[test]
fn copy_respects_where_and_columns() {
    let s = Setup::pair(Layout::OneCluster);
    for n in &s.nodes {
        n.exec("create table part (id int primary key, v text, note text)");
    }
    s.node("local")
        .exec("insert into part select g, 'v' || g, 'local note' from generate_series(1, 5000) g");
    s.node("remote")
        .exec("insert into part values (-1, 'not replicated', 'remote note')");
    s.repctl_ok(&["init"], 0);
    s.repctl_ok(
        &[
            "add-table",
            "public.part",
            "--columns",
            "id,v",
            "--where",
            "id > 0",
            "--copy-from",
            "local",
        ],
        0,
    );
    s.repctl_ok(&["verify"], 0);
    let remote = s.node("remote");
    assert_eq!(remote.count("select count(*) from part where id > 0"), 5000);
    assert_eq!(
        remote.count("select count(*) from part where note is not null"),
        1
    );
}

/// Three nodes: the copy goes from the middle node to both others at once while a writer keeps
/// writing there; afterwards every node writes (sync mode) and all three verify equal.
#[test]
fn copy_to_two_peers_while_writing() {
    let s = Setup::owned(&["a", "b", "c"], false);
    create(&s, "trio");
    let b = s.node("b");
    b.exec(
        "insert into trio select g, md5(g::text), 0, now() from generate_series(1, 50000) g; analyze trio",
    );
    s.repctl_ok(&["init"], 0);
    add_while_writing(
        &s,
        "b",
        &["add-table", "public.trio", "--copy-from", "b"],
        20,
        |i| {
            format!(
                "begin;
                 update trio set b = b + 1 where id = {id};
                 insert into trio values ({new}, 'new', 0, now());
                 commit;",
                id = 1 + (i * 7919) % 50_000,
                new = 100_000 + i,
            )
        },
    );
    for (k, n) in s.nodes.iter().enumerate() {
        n.exec(&format!(
            "insert into trio values ({}, 'after', 0, now()); update trio set b = b + 1 where id = {}",
            200_000 + k,
            10 + k
        ));
    }
    s.repctl_ok(&["drain"], 0);
    s.repctl_ok(&["verify"], 0);
    s.repctl_ok(&["verify", "--rows"], 0);
    for n in &s.nodes {
        assert_eq!(
            n.count("select coalesce(sum(b), 0) from trio"),
            b.count("select coalesce(sum(b), 0) from trio"),
            "node {}: every update exactly once",
            n.name
        );
        assert_eq!(n.count("select count(*) from trio where a = 'after'"), 3);
    }
}
