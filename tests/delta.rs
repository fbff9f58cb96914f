//! Delta columns (issue 17): concurrent increments on every node add up on every node, whatever
//! the rule, the mode, the delivery (sync flush, drain, run) and replays; merge-columns keeps
//! concurrent changes of different columns.

mod common;

use std::time::{Duration, Instant};

use common::Setup;
use common::run::{start_run, stop_run, wait_drained};

const ACCT: &str = "create table public.acct (id int primary key, bal bigint not null, note text);
                    create table public.dlog (d bigint not null)";
const ROWS: i64 = 20;

/// `acct` with ROWS rows of balance 1000 on every node, replicated with `args`.
fn accounts(names: &[&'static str], args: &[&str]) -> Setup {
    let s = Setup::one_cluster(names);
    for n in &s.nodes {
        n.exec(ACCT);
        n.exec(&format!(
            "insert into acct select g, 1000, null from generate_series(1, {ROWS}) g"
        ));
    }
    s.repctl_ok(&["init"], 0);
    let mut all = vec!["add-table", "public.acct", "--delta", "bal"];
    all.extend_from_slice(args);
    s.repctl_ok(&all, 0);
    s
}

/// `clients` writers on every node for `for_`: each transaction adds a random amount (-50..100)
/// to a random hot row and logs it in `dlog` (not replicated), so `dlog` holds exactly the
/// committed deltas. A transaction that fails (a deadlock with an apply) is rolled back whole.
fn spend(s: &Setup, clients: usize, for_: Duration) {
    std::thread::scope(|scope| {
        for (n, node) in s.nodes.iter().enumerate() {
            for w in 0..clients {
                scope.spawn(move || {
                    let mut c = node.admin();
                    let mut x: u64 = 0x9E37_79B9_7F4A_7C15 ^ ((n * 31 + w) as u64 + 1);
                    let until = Instant::now() + for_;
                    while Instant::now() < until {
                        x ^= x << 13;
                        x ^= x >> 7;
                        x ^= x << 17;
                        let d = (x % 151) as i64 - 50;
                        let k = 1 + (x >> 32) as i64 % ROWS;
                        let _ = c.batch_execute(&format!(
                            "begin; update acct set bal = bal + {d} where id = {k}; insert into dlog values ({d}); commit"
                        ));
                        let _ = c.batch_execute("rollback");
                    }
                });
            }
        }
    });
}

/// Every node's `sum(bal)` is the starting total plus every delta committed anywhere.
fn assert_totals(s: &Setup) {
    let committed: i64 = s
        .nodes
        .iter()
        .map(|n| n.count("select coalesce(sum(d), 0)::bigint from dlog"))
        .sum();
    assert_ne!(committed, 0, "the writers committed something");
    for n in &s.nodes {
        assert_eq!(
            n.count("select sum(bal)::bigint from acct"),
            ROWS * 1000 + committed,
            "node {}: sum(bal) is the sum of every node's committed deltas",
            n.name
        );
    }
    s.repctl_ok(&["verify"], 0);
}

fn drain_all(s: &Setup) {
    for _ in 0..3 {
        s.repctl_ok(&["drain"], 0);
    }
}

/// The case: last-write-wins, async, `run`, writers on both nodes.
#[test]
fn increments_add_up_on_two_nodes_with_run() {
    let s = accounts(
        &["a", "b"],
        &["--mode", "async", "--conflict", "last-write-wins"],
    );
    let run = start_run(&s, &[]);
    spend(&s, 2, Duration::from_secs(4));
    wait_drained(&s, Duration::from_secs(60));
    stop_run(run);
    assert_totals(&s);
    assert!(
        s.node("a")
            .count("select count(*) from repctl.conflict where kind = 'merged'")
            > 0,
        "concurrent increments are logged as merged"
    );
}

/// Three nodes, synchronous: flushes at commit (some left queued under row locks), then drain.
#[test]
fn increments_add_up_on_three_nodes_in_sync_mode() {
    let s = accounts(&["a", "b", "c"], &["--conflict", "last-write-wins"]);
    spend(&s, 1, Duration::from_secs(4));
    drain_all(&s);
    assert_totals(&s);
}

/// Three nodes, async, node-priority, delivered by drains of a few changes at a time in between
/// the writes, one node away for a while.
#[test]
fn increments_add_up_on_three_nodes_with_partial_drains_and_an_outage() {
    let s = accounts(
        &["a", "b", "c"],
        &[
            "--mode",
            "async",
            "--conflict",
            "node-priority",
            "--node-priority",
            "c,a,b",
        ],
    );
    std::thread::scope(|scope| {
        scope.spawn(|| spend(&s, 1, Duration::from_secs(4)));
        let until = Instant::now() + Duration::from_secs(4);
        let mut round = 0;
        while Instant::now() < until {
            round += 1;
            if round == 3 {
                s.set_down("b", true);
            }
            if round == 6 {
                s.set_down("b", false);
            }
            // With b away, pairs with it report it and exit 1; the others deliver.
            let _ = s.repctl(&["drain", "--limit", "7"]);
        }
        s.set_down("b", false);
    });
    drain_all(&s);
    assert_totals(&s);
}

/// A delivered batch applied again (a drain cut off after the peer's commit, run again) does not
/// count its increments twice.
#[test]
fn a_replayed_batch_does_not_double_an_increment() {
    let s = accounts(
        &["a", "b"],
        &["--mode", "async", "--conflict", "target-wins"],
    );
    s.node("a").exec(
        "update acct set bal = bal + 5 where id = 1; update acct set bal = bal - 2 where id = 2",
    );
    let (mut origin, mut peer) = (s.node("a").admin(), s.node("b").admin());
    let b = repctl::apply::batch::read_images(&mut origin, "b", 100)
        .unwrap()
        .expect("queued");
    for _ in 0..3 {
        repctl::apply::drain::apply_batch(&mut peer, "a", &b, &b.seqs).unwrap();
    }
    repctl::apply::drain::settle_applied(&mut origin, &mut peer, "a", "b").unwrap();
    drain_all(&s);
    assert_eq!(s.node("b").count("select bal from acct where id = 1"), 1005);
    assert_eq!(s.node("b").count("select bal from acct where id = 2"), 998);
    s.repctl_ok(&["verify"], 0);
}

/// A synchronous flush the peer applied but the origin stopped waiting for leaves the changes
/// queued on the origin; the drain that delivers them again finds the peer's record of the flush.
#[test]
fn a_flush_the_origin_gave_up_on_is_not_applied_twice() {
    let s = accounts(&["a", "b"], &["--mode", "async"]);
    let mut a = s.node("a").admin();
    a.batch_execute("update acct set bal = bal + 7 where id = 3")
        .unwrap();
    // What repctl.flush sends for that transaction, applied on b as the flush applies it.
    let row = a
        .query_one(
            "select (repctl.changes_json(array_agg(q order by q.seq))::jsonb
                      || jsonb_build_object('x', min(q.xid::text), 'h', min(q.xid::text)))::text
               from repctl.queue q where q.peer = 'b'",
            &[],
        )
        .unwrap();
    let payload: String = row.get(0);
    s.node("b")
        .admin()
        .execute("select repctl.apply('a', $1::text::jsonb)", &[&payload])
        .unwrap();
    assert_eq!(s.node("b").count("select bal from acct where id = 3"), 1007);
    drain_all(&s);
    assert_eq!(s.node("b").count("select bal from acct where id = 3"), 1007);
    s.repctl_ok(&["verify"], 0);
}

/// Both nodes change the same row before either is delivered: the increments add up, the note
/// follows the rule, and the merge is in the audit log with both rows.
#[test]
fn a_merged_conflict_is_logged_with_both_values() {
    let s = accounts(
        &["a", "b"],
        &["--mode", "async", "--conflict", "last-write-wins"],
    );
    s.node("a")
        .exec("update acct set bal = bal + 10, note = 'a' where id = 4");
    s.node("b")
        .exec("update acct set bal = bal - 3 where id = 4");
    drain_all(&s);
    for n in ["a", "b"] {
        assert_eq!(s.node(n).count("select bal from acct where id = 4"), 1007);
        assert_eq!(
            s.node(n)
                .count("select count(*) from acct where id = 4 and note = 'a'"),
            1
        );
    }
    let out = s.repctl_ok(&["conflicts", "--json"], 1);
    let v: serde_json::Value = serde_json::from_str(&out).unwrap();
    let merged: Vec<&serde_json::Value> = v
        .as_array()
        .unwrap()
        .iter()
        .filter(|c| c["kind"] == "merged")
        .collect();
    assert!(!merged.is_empty(), "{out}");
    for c in merged {
        assert!(
            !c["local_row"].is_null() && !c["remote_row"].is_null(),
            "both values: {c}"
        );
    }
    s.repctl_ok(&["verify"], 0);
}

/// The rules that drop or send back one node's change (origin-wins, target-wins) still deliver
/// its increment: the change of the note is decided, the increments add up.
#[test]
fn origin_wins_and_target_wins_keep_the_losers_increment() {
    for (rule, note) in [("origin-wins", "a"), ("target-wins", "b")] {
        let s = accounts(&["a", "b"], &["--mode", "async", "--conflict", rule]);
        s.node("a")
            .exec("update acct set bal = bal + 10, note = 'a' where id = 5");
        s.node("b")
            .exec("update acct set bal = bal - 3, note = 'b' where id = 5");
        s.repctl_ok(&["drain", "--from", "a"], 0);
        drain_all(&s);
        for n in ["a", "b"] {
            let mut c = s.node(n).admin();
            let r = c
                .query_one("select bal, note from acct where id = 5", &[])
                .unwrap();
            assert_eq!(
                (r.get::<_, i64>(0), r.get::<_, String>(1)),
                (1007, note.to_string()),
                "{rule} on node {n}"
            );
        }
        s.repctl_ok(&["verify"], 0);
    }
}

/// What delta columns cannot do (README, "Counters and balances"): a check on the sum holds on
/// each node for what it knows, so two nodes can each spend the last unit; delivering either then
/// fails the check on the peer, and the pair stops at that change, naming it.
#[test]
fn two_nodes_spending_the_last_unit_stop_at_the_check() {
    let s = accounts(
        &["a", "b"],
        &["--mode", "async", "--conflict", "last-write-wins"],
    );
    for n in &s.nodes {
        n.exec("alter table acct add constraint acct_nonneg check (bal >= 0)");
    }
    s.node("a").exec("update acct set bal = 1 where id = 6");
    drain_all(&s);
    s.node("a")
        .exec("update acct set bal = bal - 1 where id = 6");
    s.node("b")
        .exec("update acct set bal = bal - 1 where id = 6");
    let out = s.repctl_ok(&["drain"], 1);
    assert!(out.contains("acct_nonneg"), "{out}");
}

/// Changing the rule while writers go on keeps every increment.
#[test]
fn a_rule_change_with_alter_table_keeps_the_totals() {
    let s = accounts(
        &["a", "b"],
        &["--mode", "async", "--conflict", "origin-wins"],
    );
    let run = start_run(&s, &[]);
    std::thread::scope(|scope| {
        scope.spawn(|| spend(&s, 1, Duration::from_secs(5)));
        std::thread::sleep(Duration::from_secs(1));
        s.repctl_ok(
            &[
                "alter-table",
                "public.acct",
                "--conflict",
                "last-write-wins",
            ],
            0,
        );
        std::thread::sleep(Duration::from_secs(2));
        s.repctl_ok(&["alter-table", "public.acct", "--mode", "sync"], 0);
    });
    wait_drained(&s, Duration::from_secs(60));
    stop_run(run);
    assert_totals(&s);
}

/// `kill -9` of run while writers go on: restarted, it settles the last batch through the peer's
/// record, and no increment counts twice.
#[test]
fn kill_9_of_run_keeps_the_totals() {
    let s = accounts(
        &["a", "b"],
        &["--mode", "async", "--conflict", "last-write-wins"],
    );
    std::thread::scope(|scope| {
        scope.spawn(|| spend(&s, 1, Duration::from_secs(5)));
        for _ in 0..4 {
            let mut run = start_run(&s, &[]);
            std::thread::sleep(Duration::from_millis(1100));
            run.child().kill().unwrap();
            run.child().wait().unwrap();
        }
    });
    let run = start_run(&s, &[]);
    wait_drained(&s, Duration::from_secs(60));
    stop_run(run);
    assert_totals(&s);
}

/// With merge-columns, one node setting `note` and the other `qty` on the same row at the same
/// time both survive everywhere; the same column changed on both still follows the rule.
#[test]
fn merge_columns_keeps_concurrent_changes_of_different_columns() {
    let s = Setup::one_cluster(&["a", "b"]);
    for n in &s.nodes {
        n.exec(
            "create table public.item (id int primary key, qty int, note text, bal numeric(12,2))",
        );
        n.exec("insert into item values (1, 0, 'x', 0), (2, 0, 'x', 0)");
    }
    s.repctl_ok(&["init"], 0);
    s.repctl_ok(
        &[
            "add-table",
            "public.item",
            "--mode",
            "async",
            "--merge-columns",
            "--delta",
            "bal",
        ],
        0,
    );
    s.node("a")
        .exec("update item set note = 'from a', bal = bal + 1.50 where id = 1; update item set qty = 1 where id = 2");
    s.node("b")
        .exec("update item set qty = 7, bal = bal + 2.25 where id = 1; update item set qty = 2 where id = 2");
    s.repctl_ok(&["drain", "--from", "a"], 0);
    s.repctl_ok(&["drain", "--from", "b"], 0);
    drain_all(&s);
    for n in ["a", "b"] {
        let mut c = s.node(n).admin();
        let r = c
            .query_one("select qty, note, bal::text from item where id = 1", &[])
            .unwrap();
        assert_eq!(
            (
                r.get::<_, i32>(0),
                r.get::<_, String>(1),
                r.get::<_, String>(2)
            ),
            (7, "from a".to_string(), "3.75".to_string()),
            "node {n}"
        );
    }
    // The same column on both: origin-wins, the change delivered first wins (a -> b first).
    assert_eq!(
        s.node("a")
            .count("select qty::bigint from item where id = 2"),
        s.node("b")
            .count("select qty::bigint from item where id = 2")
    );
    s.repctl_ok(&["verify"], 0);
    let out = s.repctl_ok(&["status", "--json"], 0);
    let v: serde_json::Value = serde_json::from_str(&out).unwrap();
    assert_eq!(v["tables"][0]["delta"], serde_json::json!(["bal"]), "{out}");
    assert_eq!(v["tables"][0]["merge_columns"], true, "{out}");
}

#[test]
fn delta_columns_must_be_numeric_and_merge_columns_needs_a_rule_that_can_merge() {
    let s = Setup::one_cluster(&["a", "b"]);
    for n in &s.nodes {
        n.exec(ACCT);
    }
    s.repctl_ok(&["init"], 0);
    let out = s.repctl(&["add-table", "public.acct", "--delta", "bal,note"]);
    let err = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(2), "{err}");
    assert!(
        err.contains("node a")
            && err.contains("public.acct")
            && err.contains("\"note\"")
            && err.contains("numeric"),
        "{err}"
    );
    let out = s.repctl(&["add-table", "public.acct", "--delta", "nope"]);
    assert!(String::from_utf8_lossy(&out.stderr).contains("\"nope\""));
    let out = s.repctl(&[
        "add-table",
        "public.acct",
        "--merge-columns",
        "--conflict",
        "last-write-wins",
    ]);
    let err = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(2), "{err}");
    assert!(err.contains("--merge-columns"), "{err}");
    s.repctl_ok(&["add-table", "public.acct"], 0);
    s.repctl_ok(&["alter-table", "public.acct", "--delta", "bal"], 0);
    let out = s.repctl_ok(&["status"], 0);
    assert!(out.contains("bal"), "{out}");
}
