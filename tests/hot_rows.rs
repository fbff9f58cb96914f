//! Hot rows: every master writing the same few rows at once, as pgbench's TPC-B transactions do
//! (one account, one of ten tellers, the one branch), with `repctl run` delivering.

mod common;
#[path = "../examples/support/tpcb.rs"]
mod tpcb;

use std::sync::atomic::{AtomicBool, Ordering};
use std::time::{Duration, Instant};

use common::Setup;
use common::run::{start_run, stop_run, wait_drained};

/// A tenth of TPC-B's scale 1.
const ACCOUNTS: i32 = 10_000;

/// TPC-B transactions on `node` until `stop`; returns how many committed and the longest one.
fn writer(node: &common::Node, seed: u64, stop: &AtomicBool) -> (u64, Duration) {
    let mut c = node.admin();
    let (mut rng, mut done, mut longest) = (seed | 1, 0, Duration::ZERO);
    while !stop.load(Ordering::Relaxed) {
        let started = Instant::now();
        tpcb::transaction(&mut c, &mut rng, ACCOUNTS).unwrap();
        longest = longest.max(started.elapsed());
        done += 1;
    }
    (done, longest)
}

/// Two masters on clusters of their own, two TPC-B writers each for 8 s, the tables replicated
/// with `add_table`'s options and `run` delivering throughout: nearly every change of a teller or
/// the branch is a conflict. Every node ends with the same rows, with nothing left queued.
fn tpcb_on_two_masters(add_table: &[&str]) {
    let s = Setup::owned(&["a", "b"], false);
    for n in &s.nodes {
        n.exec(&tpcb::tables(ACCOUNTS));
    }
    s.repctl_ok(&["init"], 0);
    for t in tpcb::TABLES {
        s.repctl_ok(&[&["add-table", t], add_table].concat(), 0);
    }
    let run = start_run(&s, &[]);
    let stop = AtomicBool::new(false);
    let results: Vec<(u64, Duration)> = std::thread::scope(|scope| {
        let writers: Vec<_> = s
            .nodes
            .iter()
            .flat_map(|n| [(n, 1u64), (n, 2u64)])
            .enumerate()
            .map(|(k, (n, _))| {
                let stop = &stop;
                scope.spawn(move || writer(n, 0x9e37_79b9 * (k as u64 + 1), stop))
            })
            .collect();
        std::thread::sleep(Duration::from_secs(8));
        stop.store(true, Ordering::Relaxed);
        writers.into_iter().map(|w| w.join().unwrap()).collect()
    });
    wait_drained(&s, Duration::from_secs(120));
    let out = s.repctl(&["verify", "--json"]);
    assert!(
        out.status.success(),
        "nodes differ after the writers stopped ({add_table:?}, {results:?}):\n{}",
        String::from_utf8_lossy(&out.stdout)
    );
    let conflicts = s
        .node("a")
        .count("select count(*) from repctl.conflict where tbl = 'public.pgbench_branches'")
        + s.node("b")
            .count("select count(*) from repctl.conflict where tbl = 'public.pgbench_branches'");
    assert!(conflicts > 0, "the branch row was written on both nodes");
    let log = stop_run(run);
    assert!(!log.contains("stopped:"), "no pair stopped:\n{log}");
}

/// Last-write-wins, async. Before the apply locked a batch's rows ahead of reading their
/// versions, a writer committing between the two had its newer change overwritten on its own
/// node, and accounts stayed different for good.
#[test]
fn tpcb_on_two_masters_converges() {
    tpcb_on_two_masters(&["--mode", "async", "--conflict", "last-write-wins"]);
}

/// The defaults: synchronous, origin-wins. A flush that met a conflict used to resolve it on the
/// peer while the peer's own change of the row was on its way the other way (queued and read by
/// `run`, or in a flush of its own): each node took the other's change, and the tellers and the
/// branch stayed different for good (3 of 3 runs of this test at aad3efe).
#[test]
fn tpcb_on_two_masters_converges_in_sync_mode() {
    tpcb_on_two_masters(&[]);
}

/// Async origin-wins: `run` read a pair's next batch ahead while the other direction's apply
/// superseded (dropped from the queue) the changes it held, and delivered them anyway.
#[test]
fn tpcb_on_two_masters_converges_with_origin_wins() {
    tpcb_on_two_masters(&["--mode", "async"]);
}

/// With a foreign key between two replicated tables, their changes keep their order across the
/// tables (a parent inserted before its child, the child deleted before its parent); without one,
/// a batch is grouped by table.
#[test]
fn linked_tables_keep_their_order() {
    let s = Setup::owned(&["a", "b"], false);
    for n in &s.nodes {
        n.exec(
            "create table parent (id int primary key, v int);
             create table child (id int primary key, parent int references parent, v int);
             create table loose (id int primary key, v int)",
        );
    }
    s.repctl_ok(&["init"], 0);
    for t in ["public.parent", "public.child", "public.loose"] {
        s.repctl_ok(&["add-table", t, "--mode", "async"], 0);
    }
    let linked = repctl::catalog::links::linked_tables(&mut s.node("b").admin()).unwrap();
    assert_eq!(
        linked.into_iter().collect::<Vec<_>>(),
        ["public.child", "public.parent"]
    );
    let a = s.node("a");
    for i in 0..200 {
        a.exec(&format!(
            "begin;
             insert into parent values ({i}, 0);
             insert into child values ({i}, {i}, 0);
             insert into loose values ({i}, 0);
             commit;
             begin;
             delete from child where id = {i} - 1;
             delete from parent where id = {i} - 1;
             update loose set v = v + 1 where id = {i} - 1;
             commit;"
        ));
    }
    let drained = s.repctl_ok(&["drain", "--json"], 0);
    let pairs: Vec<serde_json::Value> = serde_json::from_str(&drained).unwrap();
    // 200 transactions of three inserts, then of two deletes and an update (none the first time).
    assert_eq!(pairs[0]["delivered"], 200 * 6 - 3, "{drained}");
    assert_eq!(pairs[0]["error"], serde_json::Value::Null, "{drained}");
    s.repctl_ok(&["verify"], 0);
    assert_eq!(s.node("b").count("select count(*) from child"), 1);
}
