//! `repctl run`: continuous delivery, meshes of three nodes, outages, kill -9, metrics.

mod common;

use std::io::Read;
use std::time::{Duration, Instant};

use common::Setup;
use common::run::{start_run, stop_run, total_pending, wait_drained};

const T: &str = "create table public.m (id bigint primary key, origin text, n int, note text)";

fn mesh(names: &[&'static str], mode: &str) -> Setup {
    let s = Setup::owned(names, false);
    for n in &s.nodes {
        n.exec(T);
    }
    s.repctl_ok(&["init"], 0);
    s.repctl_ok(&["add-table", "public.m", "--mode", mode], 0);
    s
}

/// Three nodes, async mode, writers on all three at once on disjoint keys, `run` delivering.
#[test]
fn three_node_mesh_converges_under_concurrent_writers() {
    let s = mesh(&["a", "b", "c"], "async");
    let run = start_run(&s, &[]);
    std::thread::scope(|scope| {
        for (k, node) in s.nodes.iter().enumerate() {
            scope.spawn(move || {
                let mut c = node.admin();
                let base = (k as i64 + 1) * 1_000_000;
                for i in 0..300 {
                    let id = base + i % 60;
                    c.batch_execute(&format!(
                        "insert into m values ({id}, '{name}', {i}, null) on conflict (id) do update set n = excluded.n;
                         delete from m where id = {id} - 30",
                        name = node.name
                    ))
                    .unwrap();
                }
                c.batch_execute(&format!("insert into m select {base} + 100 + g, '{}', g, 'bulk' from generate_series(1, 5000) g", node.name))
                    .unwrap();
            });
        }
    });
    wait_drained(&s, Duration::from_secs(60));
    s.repctl_ok(&["verify"], 0);
    // Every node's changes reached the two others exactly once, and nothing was sent back.
    for n in &s.nodes {
        assert_eq!(
            n.count("select count(*) from m where note = 'bulk'"),
            15_000
        );
    }
    let log = stop_run(run);
    assert!(log.contains("delivered"), "{log}");
}

/// With `run` active, a committed single-row change is visible on the peer within a bound.
/// `run` is woken by NOTIFY at commit, so the real figure is milliseconds (see docs/benchmarks.md);
/// the bound here is generous for a loaded CI machine.
#[test]
fn run_delivers_within_a_bound() {
    let s = mesh(&["a", "b"], "async");
    let run = start_run(&s, &[]);
    wait_drained(&s, Duration::from_secs(10));
    let (a, b) = (s.node("a"), s.node("b"));
    let mut peer = b.admin();
    let mut latencies = Vec::new();
    for i in 0..20 {
        a.exec(&format!("insert into m values ({i}, 'a', 0, null)"));
        let started = Instant::now();
        loop {
            let n: i64 = peer
                .query_one("select count(*) from m where id = $1", &[&(i as i64)])
                .unwrap()
                .get(0);
            if n == 1 {
                break;
            }
            assert!(
                started.elapsed() < Duration::from_secs(3),
                "change {i} not on the peer after 3 s"
            );
            std::thread::sleep(Duration::from_millis(1));
        }
        latencies.push(started.elapsed());
    }
    latencies.sort();
    eprintln!(
        "run latency: median {:?}, max {:?}",
        latencies[latencies.len() / 2],
        latencies.last().unwrap()
    );
    stop_run(run);
}

/// kill -9 of `run` in the middle of a backlog, then a new `run`: converges, nothing doubled.
#[test]
fn run_killed_mid_backlog_then_restarted() {
    let s = mesh(&["a", "b"], "async");
    let a = s.node("a");
    a.exec("insert into m select g, 'a', 0, null from generate_series(1, 60000) g");
    a.exec("update m set n = n + 1 where id % 2 = 0");
    let mut run = start_run(&s, &["--batch-size", "1000"]);
    std::thread::sleep(Duration::from_millis(700));
    run.child().kill().unwrap();
    run.child().wait().unwrap();
    let left = total_pending(&s).unwrap();
    eprintln!("left after kill -9: {left}");
    let run = start_run(&s, &["--batch-size", "1000"]);
    wait_drained(&s, Duration::from_secs(60));
    s.repctl_ok(&["verify"], 0);
    assert_eq!(
        s.node("b").count("select count(*) from m where n = 1"),
        30000
    );
    stop_run(run);
}

/// A peer cluster stopped for a while, then started: `run` reconnects by itself and catches up.
#[test]
fn run_survives_a_stopped_peer() {
    let s = mesh(&["a", "b"], "async");
    let run = start_run(&s, &[]);
    let a = s.node("a");
    a.exec("insert into m select g, 'a', 0, null from generate_series(1, 1000) g");
    wait_drained(&s, Duration::from_secs(10));
    s.node("b").cluster_mut(|c| c.stop()).unwrap();
    a.exec("insert into m select g, 'a', 0, null from generate_series(1001, 3000) g");
    a.exec("update m set n = 7 where id <= 10");
    std::thread::sleep(Duration::from_millis(1500));
    s.node("b").cluster_mut(|c| c.start_again()).unwrap();
    wait_drained(&s, Duration::from_secs(60));
    s.repctl_ok(&["verify"], 0);
    let log = stop_run(run);
    assert!(
        log.contains("node b: connection lost") || log.contains("node b: down"),
        "{log}"
    );
    assert!(log.contains("node b: connected"), "{log}");
}

/// Synchronous tables whose peer was down are caught up by `run` too, and metrics are served.
#[test]
fn run_serves_metrics_and_catches_up_sync_tables() {
    let s = mesh(&["a", "b"], "sync");
    s.node("b").cluster_mut(|c| c.stop()).unwrap();
    s.node("a")
        .exec("insert into m select g, 'a', 0, null from generate_series(1, 100) g");
    s.node("b").cluster_mut(|c| c.start_again()).unwrap();
    let port = std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port();
    let addr = format!("127.0.0.1:{port}");
    let run = start_run(&s, &["--metrics-addr", &addr]);
    wait_drained(&s, Duration::from_secs(30));
    s.repctl_ok(&["verify"], 0);
    std::thread::sleep(Duration::from_millis(1200));
    let mut body = String::new();
    let mut stream = std::net::TcpStream::connect(&addr).unwrap();
    std::io::Write::write_all(&mut stream, b"GET /metrics HTTP/1.0\r\n\r\n").unwrap();
    stream.read_to_string(&mut body).unwrap();
    for needle in [
        "repctl_pending_changes{from=\"a\",to=\"b\"} 0",
        "repctl_delivered_total{from=\"a\",to=\"b\"} 100",
        "repctl_oldest_pending_age_seconds",
        "repctl_apply_errors_total",
        "repctl_last_delivery_timestamp_seconds",
    ] {
        assert!(body.contains(needle), "{needle} missing from:\n{body}");
    }
    stop_run(run);
}

/// A third node joins a running pair: writers never stop, `init` and `alter-table` install it,
/// `repair --from` copies the existing rows, and all three end equal.
#[test]
fn a_third_node_joins_without_stopping_writers() {
    use std::sync::atomic::{AtomicBool, Ordering};
    let mut s = Setup::owned(&["a", "b", "c"], false);
    for n in &s.nodes {
        n.exec(T);
    }
    s.write_config_for(&["a", "b"], &[]);
    s.repctl_ok(&["init"], 0);
    s.repctl_ok(
        &[
            "add-table",
            "public.m",
            "--mode",
            "async",
            "--conflict",
            "last-write-wins",
        ],
        0,
    );
    s.node("a")
        .exec("insert into m select g, 'a', 0, null from generate_series(1, 5000) g");
    let run = start_run(&s, &[]);
    let stop = std::sync::Arc::new(AtomicBool::new(false));
    let writer = {
        let mut c = s.node("a").admin();
        let stop = stop.clone();
        std::thread::spawn(move || {
            let mut i = 0;
            while !stop.load(Ordering::SeqCst) {
                i += 1;
                c.batch_execute(&format!(
                    "insert into m values ({}, 'a', 0, null); update m set n = n + 1 where id = {}",
                    10_000 + i,
                    1 + i % 5000
                ))
                .unwrap();
            }
            i
        })
    };
    std::thread::sleep(Duration::from_millis(300));
    // The config now names c: init starts a's and b's queues for it, alter-table installs the
    // table there, repair copies what a already had.
    s.write_config(&[]);
    s.repctl_ok(&["init"], 0);
    s.repctl_ok(&["alter-table", "public.m"], 0);
    stop_run(run);
    // `run` starts again with the new config and delivers while repair fills c; rows the writer
    // changes meanwhile may be left to their queued changes (exit 1); a batch that deadlocks with
    // run's apply is run again.
    let run = start_run(&s, &[]);
    let out = s.repctl(&["repair", "--from", "a", "public.m"]);
    assert!(
        matches!(out.status.code(), Some(0 | 1)),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    std::thread::sleep(Duration::from_millis(300));
    stop.store(true, Ordering::SeqCst);
    let writes = writer.join().unwrap();
    assert!(
        writes > 10,
        "the writer kept writing ({writes} transactions)"
    );
    wait_drained(&s, Duration::from_secs(60));
    // Once the writer stopped and the queues drained, the nodes agree without another repair.
    s.repctl_ok(&["verify"], 0);
    assert_eq!(
        s.node("c").count("select count(*) from m"),
        s.node("a").count("select count(*) from m")
    );
    stop_run(run);
}

/// A second `run` against the same nodes gives up within seconds, naming the node and the run
/// there: two would deliver a pair's two directions at once, which origin-wins cannot order. The
/// first goes on delivering; once it has stopped, another starts at once.
#[test]
fn a_second_run_refuses_while_one_delivers() {
    let s = mesh(&["a", "b"], "async");
    let first = start_run(&s, &[]);
    std::thread::sleep(Duration::from_millis(500));
    let started = Instant::now();
    let second = s.repctl(&["run"]);
    assert_eq!(second.status.code(), Some(2), "the second run exits with an error");
    let err = String::from_utf8_lossy(&second.stderr);
    assert!(
        err.contains("node a: another repctl run is delivering to and from it"),
        "{err}"
    );
    assert!(
        started.elapsed() < Duration::from_secs(15),
        "it gave up within seconds"
    );
    s.node("a").exec("insert into m values (1, 'a', 1, null)");
    wait_drained(&s, Duration::from_secs(30));
    assert_eq!(
        s.node("b").count("select count(*) from m"),
        1,
        "the first run delivers"
    );
    let log = stop_run(first);
    assert!(!log.contains("another repctl run"), "{log}");
    let again = start_run(&s, &[]);
    s.node("b").exec("insert into m values (2, 'b', 1, null)");
    wait_drained(&s, Duration::from_secs(30));
    assert_eq!(
        s.node("a").count("select count(*) from m"),
        2,
        "a new run delivers"
    );
    stop_run(again);
}
