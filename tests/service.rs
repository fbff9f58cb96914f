//! Operating with `repctl run` going: tables added with --copy-from while it runs, and what it
//! logs when a node goes down and comes back.

mod common;

use std::time::{Duration, Instant};

use common::run::{start_run, stop_run, wait_drained};
use common::{Layout, Setup};

/// `add-table --copy-from` needs the source's pairs: `run` yields them and takes them back.
#[test]
fn copy_from_while_run_runs() {
    let s = Setup::pair(Layout::OneCluster);
    s.replicate_new_table("m", "id bigint primary key, v text", &["--mode", "async"]);
    for n in &s.nodes {
        n.exec("create table c (id bigint primary key, v text)");
    }
    let local = s.node("local");
    local.exec("insert into c select g, 'old' from generate_series(1, 5000) g");
    let run = start_run(&s, &[]);
    local.exec("insert into m select g, 'x' from generate_series(1, 100) g");
    std::thread::sleep(Duration::from_secs(2));
    let started = Instant::now();
    s.repctl_ok(&["add-table", "public.c", "--copy-from", "local"], 0);
    assert!(
        started.elapsed() < Duration::from_secs(20),
        "add-table waited {:?}",
        started.elapsed()
    );
    local.exec("insert into c values (5001, 'new'); insert into m values (101, 'y')");
    wait_drained(&s, Duration::from_secs(30));
    s.repctl_ok(&["verify"], 0);
    let log = stop_run(run);
    assert!(log.contains("yielded"), "{log}");
    assert!(log.contains("taken back"), "{log}");
}

/// A node that goes down is logged within a second or two though nothing was being delivered to
/// it; back, each pair says what is queued for it and when the backlog is drained.
#[test]
fn run_logs_a_node_going_down_and_its_backlog() {
    let s = Setup::owned(&["a", "b"], false);
    for n in &s.nodes {
        n.exec("create table m (id bigint primary key, v text)");
    }
    s.repctl_ok(&["init"], 0);
    s.repctl_ok(&["add-table", "public.m", "--mode", "async"], 0);
    let run = start_run(&s, &[]);
    std::thread::sleep(Duration::from_secs(2));
    s.node("b").cluster_mut(|c| c.stop()).unwrap();
    std::thread::sleep(Duration::from_secs(3));
    s.node("a")
        .exec("insert into m select g, 'x' from generate_series(1, 12000) g");
    let log = stop_run(run);
    assert!(log.contains("node b: connection lost"), "{log}");
    assert!(log.contains("node b: down"), "{log}");

    s.node("b").cluster_mut(|c| c.start_again()).unwrap();
    let run = start_run(&s, &[]);
    wait_drained(&s, Duration::from_secs(60));
    let log = stop_run(run);
    assert!(
        log.contains("a -> b: 12000 change(s) queued; delivering"),
        "{log}"
    );
    assert!(
        log.contains("a -> b: backlog drained (12000 change(s)"),
        "{log}"
    );
}
