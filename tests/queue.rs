//! The queue, drain and lag: outages, recovery, reordering, crashes and concurrency.

mod common;

use std::time::Duration;

use common::{Layout, Setup, TABLES, seed_insert};
use serde_json::Value;

fn lag(s: &Setup) -> Vec<Value> {
    let out = s.repctl(&["lag", "--json"]);
    serde_json::from_slice(&out.stdout).expect("lag --json prints JSON")
}

fn pending(s: &Setup, from: &str, to: &str) -> i64 {
    lag(s)
        .iter()
        .find(|p| p["from"] == from && p["to"] == to)
        .expect("pair in lag")["pending"]
        .as_i64()
        .unwrap()
}

fn seed_pair_on_own_clusters() -> Setup {
    let mut s = Setup::owned(&["local", "remote"], true);
    s.seed_tables();
    s.replicate_seed_tables();
    s
}

/// The seed's steps 3 and 4: the peer refuses logins, writes succeed and queue, drains in two steps.
#[test]
fn seed_steps_three_and_four() {
    let s = seed_pair_on_own_clusters();
    let remote = s.node("remote");
    remote.exec("alter role remote nologin; select pg_terminate_backend(pid) from pg_stat_activity where usename = 'remote'");
    let mut c = s.node("local").login("local", "LOCAL321");
    c.batch_execute(&seed_insert("local.loc_test", 1, 10_000))
        .unwrap();
    assert_eq!(
        s.node("local").count("select count(*) from local.loc_test"),
        10_000
    );
    assert_eq!(pending(&s, "local", "remote"), 10_000);
    let age = lag(&s)[0]["oldest_pending_age_s"]
        .as_f64()
        .expect("age while pending");
    assert!(age >= 0.0);
    remote.exec("alter role remote login");
    s.repctl_ok(&["drain", "--limit", "1000"], 0);
    assert_eq!(pending(&s, "local", "remote"), 9_000);
    assert_eq!(remote.count("select count(*) from remote.rmt_test"), 1_000);
    let out = s.repctl_ok(&["drain", "--json"], 0);
    let report: Vec<Value> = serde_json::from_str(&out).unwrap();
    assert_eq!(
        report
            .iter()
            .map(|r| r["delivered"].as_i64().unwrap())
            .sum::<i64>(),
        9_000
    );
    assert_eq!(pending(&s, "local", "remote"), 0);
    assert!(lag(&s)[0]["oldest_pending_age_s"].is_null());
    assert!(lag(&s)[0]["last_delivery"].is_string());
    s.assert_converged(&TABLES);
    // Back to synchronous delivery once the queue is empty.
    c.batch_execute("update local.loc_test set info = 'after' where pk1 = 1")
        .unwrap();
    assert_eq!(
        remote.count("select count(*) from remote.rmt_test where pk1 = 1 and info = 'after'"),
        1
    );
}

/// The seed's 2.1-2.2: a queued update, then after recovery a delete and re-insert of the same key.
/// The peer must end with the newest row, not the queued one replayed over it.
#[test]
fn no_reordering_after_recovery() {
    let s = seed_pair_on_own_clusters();
    let (local, remote) = (s.node("local"), s.node("remote"));
    local.exec("insert into local.loc_test values (1, 'digoal', 'test', now(), now())");
    remote.exec("alter role remote nologin; select pg_terminate_backend(pid) from pg_stat_activity where usename = 'remote'");
    local.exec("update local.loc_test set info = 'queued update' where pk1 = 1");
    remote.exec("alter role remote login");
    // The peer is back; new changes must queue behind the old one rather than overtake it.
    local.exec("delete from local.loc_test where pk1 = 1 and pk2 = 'digoal'");
    local.exec("insert into local.loc_test values (1, 'digoal', 'DDDDDDDDD', now(), now())");
    assert_eq!(pending(&s, "local", "remote"), 3);
    s.repctl_ok(&["drain"], 0);
    assert_eq!(
        remote.count("select count(*) from remote.rmt_test where info = 'DDDDDDDDD'"),
        1
    );
    s.assert_converged(&TABLES);
}

/// The peer is a stopped cluster: writes succeed, then drain delivers once it is back.
#[test]
fn peer_cluster_stopped_and_started() {
    let s = seed_pair_on_own_clusters();
    s.node("remote").cluster_mut(|c| c.stop()).unwrap();
    let local = s.node("local");
    local.exec(&seed_insert("local.loc_test", 1, 500));
    local.exec("update local.loc_test set info = 'x' where pk1 <= 100");
    local.exec("delete from local.loc_test where pk1 > 400");
    assert!(
        s.repctl_ok(&["drain", "--to", "remote"], 1)
            .contains("unreachable")
    );
    // lag says what the reachable origin's queue holds for the down peer, and marks the peer.
    let pairs: Vec<Value> = serde_json::from_str(&s.repctl_ok(&["lag", "--json"], 1)).unwrap();
    let pair = |from: &str| {
        pairs
            .iter()
            .find(|p| p["from"] == from)
            .unwrap_or_else(|| panic!("pair from {from} in {pairs:?}"))
    };
    let (to_down, from_down) = (pair("local"), pair("remote"));
    assert_eq!(to_down["pending"], 700, "{pairs:?}");
    assert!(to_down["conflicts"].is_null(), "recorded on the down peer");
    assert_eq!(to_down["unreachable"], serde_json::json!(["remote"]));
    assert_eq!(from_down["to"], "local");
    assert!(from_down["pending"].is_null() && from_down["delivered_total"].is_null());
    assert_eq!(from_down["conflicts"], 0, "recorded on the reachable peer");
    assert_eq!(from_down["unreachable"], serde_json::json!(["remote"]));
    let out = s.repctl(&["lag"]);
    assert_eq!(out.status.code(), Some(1));
    let (table, err) = (
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr),
    );
    assert!(
        err.contains("node remote is down") && err.contains("cannot connect"),
        "{err}"
    );
    assert!(
        table
            .lines()
            .any(|l| l.contains("local") && l.contains("remote") && l.contains("700")),
        "{table}"
    );
    s.node("remote").cluster_mut(|c| c.start_again()).unwrap();
    assert_eq!(pending(&s, "local", "remote"), 500 + 100 + 100);
    s.repctl_ok(&["drain"], 0);
    s.assert_converged(&TABLES);
}

/// A peer that refuses connections is reported with the server's reason, not only as unreachable.
#[test]
fn a_refused_login_is_reported_with_the_servers_reason() {
    let s = Setup::pair(Layout::TwoClusters);
    s.replicate_new_table("t", "id int primary key", &["--mode", "async"]);
    s.node("local").exec("insert into t values (1)");
    let remote = s.node("remote");
    let allow = |on: bool| {
        remote
            .with_cluster(|c| {
                c.execute_admin(
                    "postgres",
                    &format!("alter database {} allow_connections {on}", remote.db),
                )
            })
            .unwrap()
    };
    allow(false);
    let report: Vec<Value> = serde_json::from_str(&s.repctl_ok(&["drain", "--json"], 1)).unwrap();
    allow(true);
    for r in &report {
        let error = r["error"].as_str().expect("both pairs failed");
        assert!(
            error.starts_with("unreachable: node remote: cannot connect")
                && error.contains("is not currently accepting connections"),
            "{error}"
        );
    }
    s.repctl_ok(&["drain"], 0);
    assert_eq!(remote.count("select count(*) from t"), 1);
}

/// `--on-peer-failure error`: the local write fails when the peer cannot take it.
#[test]
fn on_peer_failure_error_fails_the_write() {
    let s = Setup::pair(Layout::TwoClusters);
    for n in &s.nodes {
        n.exec("create table strict_t (id int primary key, v text)");
    }
    s.repctl_ok(&["init"], 0);
    s.repctl_ok(
        &["add-table", "public.strict_t", "--on-peer-failure", "error"],
        0,
    );
    s.node("remote")
        .exec("alter table strict_t add constraint short check (length(v) < 5)");
    let err = s
        .node("local")
        .admin()
        .batch_execute("insert into strict_t values (1, 'too long')")
        .unwrap_err();
    assert!(format!("{err:?}").contains("peer remote"), "{err:?}");
    assert_eq!(s.node("local").count("select count(*) from strict_t"), 0);
    s.node("local")
        .exec("insert into strict_t values (2, 'ok')");
    assert_eq!(s.node("remote").count("select count(*) from strict_t"), 1);
}

/// A change the peer rejects stops that pair at that change, names it, and keeps it queued.
#[test]
fn rejected_change_stops_the_pair_and_stays_queued() {
    let s = Setup::pair(Layout::OneCluster);
    s.replicate_new_table("rej", "id int primary key, v text", &["--mode", "async"]);
    s.node("remote")
        .exec("alter table rej add constraint short check (length(v) < 5)");
    let local = s.node("local");
    local.exec("insert into rej values (1, 'ok'), (2, 'ok')");
    local.exec("insert into rej values (3, 'too long')");
    local.exec("insert into rej values (4, 'ok')");
    s.node("remote").exec("insert into rej values (100, 'r')");
    let out = s.repctl_ok(&["drain", "--json"], 1);
    let report: Vec<Value> = serde_json::from_str(&out).unwrap();
    let pair = report.iter().find(|r| r["from"] == "local").unwrap();
    assert_eq!(pair["delivered"], 2);
    assert_eq!(pair["left"], 2);
    let error = pair["error"].as_str().unwrap();
    assert!(
        error.contains("too long") && error.contains("short"),
        "{error}"
    );
    // The other direction went on.
    assert_eq!(local.count("select count(*) from rej where id = 100"), 1);
    s.node("remote")
        .exec("alter table rej drop constraint short");
    s.repctl_ok(&["drain"], 0);
    s.repctl_ok(&["verify"], 0);
}

/// A batch the peer refuses as a whole while each of its changes applies alone (here a peer-side
/// trigger that refuses multi-row statements; in life, a row the peer wrote meanwhile): its
/// changes go one by one, then the pair goes on in batches.
#[test]
fn a_batch_that_fails_only_as_a_whole_is_delivered_one_by_one() {
    let s = Setup::pair(Layout::OneCluster);
    s.replicate_new_table("whole", "id int primary key, v text", &["--mode", "async"]);
    s.node("remote").exec(
        "create function one_at_a_time() returns trigger language plpgsql as $$
         begin
           if (select count(*) from new_rows) > 1 then
             raise exception 'more than one row';
           end if;
           return null;
         end $$;
         create trigger one_at_a_time after insert on whole referencing new table as new_rows
           for each statement execute function one_at_a_time()",
    );
    s.node("local")
        .exec("insert into whole select g, 'v' from generate_series(1, 10) g");
    let out = s.repctl_ok(&["drain", "--json", "--batch-size", "4"], 0);
    let report: Vec<Value> = serde_json::from_str(&out).unwrap();
    let pair = report.iter().find(|r| r["from"] == "local").unwrap();
    assert_eq!(pair["delivered"], 10, "{out}");
    assert!(pair["error"].is_null(), "{out}");
    s.repctl_ok(&["verify"], 0);
}

/// A batch of inserts only is tried as one plain insert; one that inserts a key twice (a row the
/// origin deleted as a third node's change, which it does not forward, then inserted again) fails
/// that and is decided row by row: the last insert wins, and no conflict is made up.
#[test]
fn a_key_inserted_twice_in_a_batch() {
    let s = Setup::pair(Layout::OneCluster);
    s.replicate_new_table(
        "twice",
        "id int primary key, v text",
        &["--mode", "async", "--conflict", "last-write-wins"],
    );
    s.node("local").exec(
        "insert into twice values (1, 'a'), (2, 'a');
         set repctl.applying = on;
         delete from twice where id = 1;
         reset repctl.applying;
         insert into twice values (1, 'b')",
    );
    assert_eq!(pending(&s, "local", "remote"), 3);
    s.repctl_ok(&["drain"], 0);
    s.repctl_ok(&["verify"], 0);
    let remote = s.node("remote");
    assert_eq!(remote.count("select count(*) from twice where v = 'b'"), 1);
    assert_eq!(remote.count("select count(*) from repctl.conflict"), 0);
    assert_eq!(remote.count("select count(*) from repctl.version"), 2);
}

/// Inserts delivered as column arrays record each row's version under last-write-wins, as row
/// images do.
#[test]
fn column_arrays_record_versions() {
    let s = Setup::pair(Layout::OneCluster);
    s.replicate_new_table(
        "stamped",
        "id int primary key, v text, at timestamptz",
        &[
            "--mode",
            "async",
            "--conflict",
            "last-write-wins",
            "--conflict-column",
            "at",
        ],
    );
    let (local, remote) = (s.node("local"), s.node("remote"));
    local.exec(
        "insert into stamped select g, 'a', '2030-01-01 00:00+00' from generate_series(1, 3) g",
    );
    s.repctl_ok(&["drain"], 0);
    assert_eq!(
        remote.count(
            "select count(*) from repctl.version
              where tbl = 'public.stamped' and origin = 'local' and ts = '2030-01-01 00:00+00'
                and k in ('{\"id\": \"1\"}', '{\"id\": \"2\"}', '{\"id\": \"3\"}')"
        ),
        3
    );
    s.repctl_ok(&["verify"], 0);
}

/// Column arrays carry the changes' times only for a table whose rule compares them; a peer whose
/// rule does refuses arrays without them (nodes with different rules), and the changes go as row
/// images, times included.
#[test]
fn column_arrays_carry_times_where_the_rule_compares_them() {
    let s = Setup::pair(Layout::OneCluster);
    s.replicate_new_table(
        "timed",
        "id int primary key, v text",
        &["--mode", "async", "--conflict", "last-write-wins"],
    );
    let (local, remote) = (s.node("local"), s.node("remote"));
    let stamped = || {
        remote.count(
            "select count(*) from repctl.version
              where tbl = 'public.timed' and origin = 'local' and ts > now() - interval '1 hour'",
        )
    };
    local.exec("insert into timed select g, 'a' from generate_series(1, 3) g");
    s.apply_as_column_arrays("local", "remote").unwrap();
    assert_eq!(stamped(), 3);
    // The origin's rule no longer compares times; the peer's still does.
    local.exec("update repctl.tables set conflict = 'origin-wins' where name = 'public.timed'");
    local.exec("insert into timed select g, 'b' from generate_series(4, 6) g");
    let refused = s.apply_as_column_arrays("local", "remote").unwrap_err();
    let message = refused.as_db_error().expect("the peer refuses").message();
    assert!(message.contains("without their times"), "{message}");
    s.repctl_ok(&["drain"], 0);
    assert_eq!(stamped(), 6);
    s.repctl_ok(&["verify"], 0);
}

/// A drain cut off after the peer committed a batch but before the origin deleted it: the next
/// drain sees the peer's record and does not apply that batch again.
#[test]
fn drain_cut_off_after_peer_commit_is_settled() {
    let s = Setup::pair(Layout::OneCluster);
    s.replicate_new_table("cut", "id int primary key, n int", &["--mode", "async"]);
    let (local, remote) = (s.node("local"), s.node("remote"));
    local.exec("insert into cut select g, 0 from generate_series(1, 10) g");
    // What a drain does up to the peer's commit, by hand.
    let batch: (String, Vec<i64>) = {
        let row = local
            .admin()
            .query_one(
                "select repctl.changes_json(array_agg(q order by seq))::text, array_agg(seq order by seq)
                   from repctl.queue q where peer = 'remote'",
                &[],
            )
            .unwrap();
        (row.get(0), row.get(1))
    };
    remote
        .admin()
        .query_one(
            "select repctl.apply('local', $1::text::jsonb, $2)",
            &[&batch.0, &batch.1],
        )
        .unwrap();
    // Meanwhile the origin changes those rows again; the queued originals must not be replayed over it.
    local.exec("update cut set n = n + 1");
    let out = s.repctl_ok(&["drain", "--json"], 0);
    let report: Vec<Value> = serde_json::from_str(&out).unwrap();
    assert_eq!(
        report.iter().find(|r| r["from"] == "local").unwrap()["delivered"],
        10,
        "only the updates: {out}"
    );
    s.repctl_ok(&["verify"], 0);
}

/// While the peer applies a batch, the origin removes the one before (drain's pipeline). A drain
/// cut off after the peer's commit but before that removal must not apply the older batch again,
/// over the newer: here the second batch updates the rows the first inserted, and the removal of
/// the first is held up by a lock until the drain's origin session is killed.
#[test]
fn a_drain_cut_off_while_removing_the_batch_before() {
    use repctl::apply::drain::{Pipeline, deliver_next};
    // Clusters of its own: a batch is left for the next one to remove only when it was read with
    // no transaction in progress on the origin's cluster (`Batch::settled`).
    let s = Setup::owned(&["local", "remote"], false);
    s.replicate_new_table("piped", "id int primary key, n int", &["--mode", "async"]);
    let (local, remote) = (s.node("local"), s.node("remote"));
    local.exec(
        "insert into piped select g, 0 from generate_series(1, 4) g;
         update piped set n = 1;
         insert into piped select g, 0 from generate_series(5, 8) g",
    );
    let (mut origin, mut peer) = (local.admin(), remote.admin());
    let mut pipe = Pipeline::default();
    let deadline = std::time::Instant::now() + Duration::from_secs(20);
    while !repctl::apply::batch::read(&mut origin, "remote", 1, &Default::default())
        .unwrap()
        .unwrap()
        .settled
    {
        assert!(
            std::time::Instant::now() < deadline,
            "the origin never idle"
        );
        std::thread::sleep(Duration::from_millis(20));
    }
    // One batch of 4, reading the next 4 ahead.
    fn step(
        origin: &mut postgres::Client,
        peer: &mut postgres::Client,
        pipe: &mut Pipeline,
    ) -> anyhow::Result<repctl::apply::drain::Delivered> {
        deliver_next(origin, peer, "local", "remote", pipe, 4, |_| 4)
    }
    let first = step(&mut origin, &mut peer, &mut pipe).unwrap();
    assert_eq!(first.count, 4);
    assert!(pipe.ready(), "the updates are read ahead");
    assert_eq!(
        local.count("select count(*) from repctl.queue"),
        12,
        "the first batch stays queued until the second is applied"
    );
    let mut locker = local.admin();
    let mut hold = locker.transaction().unwrap();
    hold.execute(
        "select from repctl.queue where peer = 'remote' and op = 'I' and (r ->> 'id')::int <= 4 for update",
        &[],
    )
    .unwrap();
    let drain_pid: i32 = origin
        .query_one("select pg_backend_pid()", &[])
        .unwrap()
        .get(0);
    let second = std::thread::spawn(move || step(&mut origin, &mut peer, &mut pipe));
    let updated = |c: &mut postgres::Client| -> i64 {
        c.query_one("select count(*) from piped where n = 1", &[])
            .unwrap()
            .get(0)
    };
    let mut watcher = remote.admin();
    while updated(&mut watcher) < 4 {
        assert!(
            std::time::Instant::now() < deadline,
            "the updates were not applied"
        );
        std::thread::sleep(Duration::from_millis(20));
    }
    local.exec(&format!("select pg_terminate_backend({drain_pid})"));
    assert!(
        second.join().unwrap().is_err(),
        "its origin session was killed"
    );
    hold.rollback().unwrap();
    let out = s.repctl_ok(&["drain", "--json"], 0);
    let report: Vec<Value> = serde_json::from_str(&out).unwrap();
    let pair = report.iter().find(|r| r["from"] == "local").unwrap();
    assert_eq!(pair["delivered"], 4, "only the last inserts: {out}");
    s.repctl_ok(&["verify"], 0);
    assert_eq!(updated(&mut watcher), 4);
}

/// drain and run read the queue by its index however stale its statistics are: sequence numbers
/// grow past the last analyze's histogram, where a planner estimating a few rows would scan and
/// sort the peer's whole partition for every batch.
#[test]
fn reading_the_queue_stays_on_its_index() {
    let s = Setup::pair(Layout::OneCluster);
    s.replicate_new_table("stale", "id int primary key", &["--mode", "async"]);
    let local = s.node("local");
    // Statistics of an earlier backlog, delivered and vacuumed away since; then a new one,
    // numbered above them.
    local.exec("insert into stale select generate_series(1, 50000)");
    local.exec("analyze repctl.queue");
    local.exec("delete from repctl.queue");
    local.exec("vacuum repctl.queue");
    local.exec("insert into stale select generate_series(50001, 100000)");
    let after = local.count("select max(seq) - 10000 from repctl.queue");
    let mut c = local.admin();
    let mut tx = c.transaction().unwrap();
    let read = tx
        .query(
            "select * from repctl.read_queue('remote', $1, 1000)",
            &[&after],
        )
        .unwrap();
    assert_eq!(read.len(), 1000);
    let scans: i64 = tx
        .query_one(
            "select coalesce(sum(seq_scan), 0)::bigint from pg_stat_xact_user_tables
              where schemaname = 'repctl' and relname like 'queue%'",
            &[],
        )
        .unwrap()
        .get(0);
    assert_eq!(scans, 0, "the read scanned the queue's partition");
}

/// drain skips its check for changes committed late (below a batch read ahead) only after a batch
/// read while no transaction was in progress: one in progress then may commit such a change.
#[test]
fn a_batch_read_during_a_transaction_is_not_settled() {
    let s = Setup::pair(Layout::OneCluster);
    s.replicate_new_table("late", "id int primary key", &["--mode", "async"]);
    let local = s.node("local");
    local.exec("insert into late select generate_series(1, 10)");
    let mut reader = local.admin();
    let read = |c: &mut postgres::Client| {
        repctl::apply::batch::read(c, "remote", 100, &Default::default())
            .unwrap()
            .expect("changes are queued")
    };
    // Any transaction of the cluster counts (autovacuum's analyze takes one too): retried.
    let settles = |c: &mut postgres::Client| {
        (0..50).any(|_| {
            std::thread::sleep(Duration::from_millis(20));
            read(c).settled
        })
    };
    assert!(settles(&mut reader));
    let mut writer = local.admin();
    let mut tx = writer.transaction().unwrap();
    tx.execute("insert into late values (11)", &[]).unwrap();
    let during = read(&mut reader);
    assert!(!during.settled);
    assert_eq!(during.seqs.len(), 10, "the uncommitted change is not read");
    tx.commit().unwrap();
    assert!(settles(&mut reader));
}

/// `kill -9` of a drain mid-way, then drain again: nothing lost, nothing applied out of order.
#[test]
fn drain_killed_mid_way_then_rerun() {
    let s = Setup::pair(Layout::TwoClusters);
    s.replicate_new_table("big", "id int primary key, n int", &["--mode", "async"]);
    let local = s.node("local");
    local.exec("insert into big select g, 0 from generate_series(1, 50000) g");
    for _ in 0..3 {
        local.exec("update big set n = n + 1 where id % 3 = 0");
    }
    let bin = assert_cmd::cargo::cargo_bin("repctl");
    let mut child = std::process::Command::new(bin)
        .arg("--config")
        .arg(&s.config)
        .args(["drain", "--batch-size", "500"])
        .stdout(std::process::Stdio::null())
        .spawn()
        .unwrap();
    std::thread::sleep(Duration::from_millis(400));
    child.kill().unwrap();
    child.wait().unwrap();
    let left = pending(&s, "local", "remote");
    assert!(
        left < 50000 + 3 * 16667,
        "the drain made progress before it was killed"
    );
    s.repctl_ok(&["drain"], 0);
    s.repctl_ok(&["verify"], 0);
    assert_eq!(
        s.node("remote")
            .count("select count(*) from big where n = 3"),
        16666
    );
}

/// Writers on both nodes, a peer that goes away and comes back, and two drains running at once.
#[test]
fn concurrent_writers_and_drains_converge() {
    let s = seed_pair_on_own_clusters();
    let stop = std::sync::atomic::AtomicBool::new(false);
    std::thread::scope(|scope| {
        for (node, role, pw, table, base) in [
            ("local", "local", "LOCAL321", "local.loc_test", 0),
            ("remote", "postgres", "", "remote.rmt_test", 1_000_000),
        ] {
            let s = &s;
            scope.spawn(move || {
                // The outage below cuts the peers' logins (role remote), not this writer's.
                let mut c = if role == "postgres" { s.node(node).admin() } else { s.node(node).login(role, pw) };
                for i in 0..400 {
                    let k = base + i % 100;
                    c.batch_execute(&format!(
                        "insert into {table} values ({k}, 'k', '{i}', now(), now())
                           on conflict (pk1, pk2) do update set info = excluded.info, mod_time = now();
                         delete from {table} where pk1 = {k} - 50"
                    ))
                    .unwrap();
                }
            });
        }
        for _ in 0..2 {
            let (s, stop) = (&s, &stop);
            scope.spawn(move || {
                while !stop.load(std::sync::atomic::Ordering::SeqCst) {
                    let out = s.repctl(&["drain", "--batch-size", "50"]);
                    assert!(
                        out.status.code() != Some(2),
                        "{}",
                        String::from_utf8_lossy(&out.stderr)
                    );
                }
            });
        }
        let remote = s.node("remote");
        std::thread::sleep(Duration::from_millis(300));
        remote.exec("alter role remote nologin; select pg_terminate_backend(pid) from pg_stat_activity where usename = 'remote'");
        std::thread::sleep(Duration::from_millis(700));
        remote.exec("alter role remote login");
        std::thread::sleep(Duration::from_millis(500));
        stop.store(true, std::sync::atomic::Ordering::SeqCst);
    });
    s.repctl_ok(&["drain"], 0);
    s.assert_converged(&TABLES);
}

/// Switching a table between synchronous and asynchronous delivery keeps its other settings.
#[test]
fn alter_table_switches_mode() {
    let s = Setup::pair(Layout::OneCluster);
    for n in &s.nodes {
        n.exec("create table sw (id int primary key, v text, note text)");
    }
    s.repctl_ok(&["init"], 0);
    s.repctl_ok(
        &[
            "add-table",
            "public.sw",
            "--columns",
            "id,v",
            "--where",
            "id > 0",
        ],
        0,
    );
    s.repctl_ok(&["alter-table", "public.sw", "--mode", "async"], 0);
    let (local, remote) = (s.node("local"), s.node("remote"));
    local.exec("insert into sw values (1, 'a', 'n'), (-1, 'filtered', 'n')");
    assert_eq!(remote.count("select count(*) from sw"), 0);
    assert_eq!(pending(&s, "local", "remote"), 1);
    s.repctl_ok(&["drain"], 0);
    s.repctl_ok(&["alter-table", "public.sw", "--mode", "sync"], 0);
    local.exec("insert into sw values (2, 'b', 'n')");
    assert_eq!(
        remote.count("select count(*) from sw where note is null"),
        2,
        "columns subset kept"
    );
    let status: Value = serde_json::from_str(&s.repctl_ok(&["status", "--json"], 0)).unwrap();
    assert_eq!(status["tables"][0]["mode"], "sync");
    assert_eq!(status["complete"], true);
}
