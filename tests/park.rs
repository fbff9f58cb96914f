//! Changes a peer refuses: parked (`--on-apply-error park`) while later changes flow past, or a
//! stopped pair (`stop`, the default) and `repctl queue skip`; listed, retried, discarded.

mod common;

use std::collections::BTreeSet;
use std::time::{Duration, Instant};

use common::run::{start_run, stop_run, total_pending, wait_drained};
use common::{Layout, Setup};
use serde_json::Value;

fn json(s: &Setup, args: &[&str], code: i32) -> Value {
    serde_json::from_str(&s.repctl_ok(args, code)).unwrap()
}

fn ids(n: &common::Node, sql: &str) -> BTreeSet<i64> {
    n.admin()
        .query(sql, &[])
        .unwrap()
        .iter()
        .map(|r| r.get(0))
        .collect()
}

/// Waits until `cond` holds, for up to `within`.
fn wait_for(within: Duration, what: &str, mut cond: impl FnMut() -> bool) {
    let deadline = Instant::now() + within;
    while !cond() {
        assert!(Instant::now() < deadline, "not within {within:?}: {what}");
        std::thread::sleep(Duration::from_millis(100));
    }
}

/// A table `p` on both nodes, async, with the given policy; the peer `remote` alone refuses v >= 100.
fn refusing_peer(args: &[&str]) -> Setup {
    let s = Setup::pair(Layout::OneCluster);
    let mut all = vec!["--mode", "async"];
    all.extend_from_slice(args);
    s.replicate_new_table("p", "id bigint primary key, v int", &all);
    s.node("remote")
        .exec("alter table p add constraint small check (v < 100)");
    s
}

#[test]
fn refused_change_is_parked_while_later_changes_flow_then_retried() {
    let s = refusing_peer(&["--on-apply-error", "park"]);
    let (local, remote) = (s.node("local"), s.node("remote"));
    local.exec("insert into p values (1, 500)");
    let mut c = local.admin();
    for i in 2..=1001 {
        c.execute("insert into p values ($1, 1)", &[&(i as i64)])
            .unwrap();
    }
    let drained = json(&s, &["drain", "--json"], 0);
    let pair = drained
        .as_array()
        .unwrap()
        .iter()
        .find(|p| p["from"] == "local")
        .unwrap();
    assert_eq!(pair["delivered"], 1000, "{drained}");
    assert_eq!(pair["parked"], 1, "{drained}");
    assert_eq!(pair["left"], 0, "{drained}");
    assert_eq!(remote.count("select count(*) from p"), 1000);

    let parked = json(&s, &["queue", "parked", "--json"], 1);
    let parked = parked.as_array().unwrap();
    assert_eq!(parked.len(), 1, "{parked:?}");
    assert_eq!(parked[0]["from"], "local");
    assert_eq!(parked[0]["to"], "remote");
    assert_eq!(parked[0]["row"]["id"], "1");
    assert_eq!(parked[0]["sqlstate"], "23514");
    assert!(
        parked[0]["error"].as_str().unwrap().contains("small"),
        "{parked:?}"
    );
    assert_eq!(parked[0]["parked_by"], "on-apply-error park");
    // Seen everywhere: lag, status, verify --rows.
    let lag = json(&s, &["lag", "--json"], 1);
    let to_remote = lag
        .as_array()
        .unwrap()
        .iter()
        .find(|p| p["from"] == "local")
        .unwrap();
    assert_eq!(to_remote["parked"], 1, "{lag}");
    assert_eq!(to_remote["pending"], 0, "{lag}");
    let status = json(&s, &["status", "--json"], 1);
    assert_eq!(status["pairs"][0]["parked"], 1, "{status}");
    let rows = json(&s, &["verify", "--rows", "--json"], 1);
    assert_eq!(
        rows["tables"][0]["differences"][0]["key"]["id"], "1",
        "{rows}"
    );

    // The cause fixed, retried: the nodes agree and nothing is parked.
    remote.exec("alter table p drop constraint small");
    let retried = json(&s, &["queue", "retry", "--all", "--json"], 0);
    assert_eq!(retried[0]["count"], 1, "{retried}");
    assert_eq!(local.count("select count(*) from repctl.parked"), 0);
    s.repctl_ok(&["drain"], 0);
    s.repctl_ok(&["verify", "--rows"], 0);
    assert_eq!(remote.count("select v::bigint from p where id = 1"), 500);
    s.repctl_ok(&["queue", "parked"], 0);
    s.repctl_ok(&["status"], 0);
    s.repctl_ok(&["lag"], 0);
}

#[test]
fn queue_skip_parks_the_change_a_stopped_pair_is_stopped_at() {
    let s = refusing_peer(&[]);
    let (local, remote) = (s.node("local"), s.node("remote"));
    local.exec("insert into p values (1, 500)");
    local.exec("insert into p select g, 1 from generate_series(2, 11) g");
    // Not stopped yet: nothing to skip.
    let out = s.repctl(&["queue", "skip", "--from", "local", "--to", "remote"]);
    assert_eq!(out.status.code(), Some(2));
    assert!(
        String::from_utf8_lossy(&out.stderr).contains("not stopped"),
        "{out:?}"
    );
    s.repctl_ok(&["drain"], 1);
    let head = json(
        &s,
        &["queue", "--from", "local", "--to", "remote", "--json"],
        1,
    );
    assert_eq!(head["pending"], 11, "{head}");
    let seq = head["stopped"]["seq"].as_i64().unwrap();
    assert_eq!(head["head"][0]["seq"], seq, "{head}");
    assert_eq!(head["head"][0]["row"]["v"], "500", "{head}");
    assert!(
        head["stopped"]["error"]
            .as_str()
            .unwrap()
            .contains("refused change"),
        "{head}"
    );
    let lag = json(&s, &["lag", "--json"], 1);
    assert!(
        lag.as_array()
            .unwrap()
            .iter()
            .any(|p| p["from"] == "local" && p["stopped"].is_string()),
        "{lag}"
    );
    s.repctl_ok(&["status"], 1);

    let skipped = json(
        &s,
        &[
            "queue", "skip", "--from", "local", "--to", "remote", "--json",
        ],
        0,
    );
    assert_eq!(skipped["seq"], seq);
    s.repctl_ok(&["drain"], 0);
    assert_eq!(remote.count("select count(*) from p"), 10);
    let head = json(
        &s,
        &["queue", "--from", "local", "--to", "remote", "--json"],
        0,
    );
    assert!(head["stopped"].is_null(), "{head}");
    assert_eq!(head["parked"], 1, "{head}");
    let parked = json(&s, &["queue", "parked", "--json"], 1);
    assert_eq!(parked[0]["seq"], seq);
    assert!(
        parked[0]["parked_by"]
            .as_str()
            .unwrap()
            .starts_with("queue skip by "),
        "{parked}"
    );

    // Discarded: never sent, still listed with who and when.
    let n = seq.to_string();
    s.repctl_ok(&["queue", "discard", "--seq", &n], 0);
    s.repctl_ok(&["queue", "parked"], 0);
    let kept = json(&s, &["queue", "parked", "--discarded", "--json"], 1);
    assert!(kept[0]["discarded_at"].is_string(), "{kept}");
    assert!(
        kept[0]["discarded_by"]
            .as_str()
            .unwrap()
            .starts_with("postgres (os user "),
        "{kept}"
    );
    // A discarded change is not retried.
    s.repctl_ok(&["queue", "retry", "--seq", &n], 2);
    s.repctl_ok(&["queue", "retry", "--all"], 0);
    assert_eq!(local.count("select count(*) from repctl.queue"), 0);
    s.repctl_ok(&["status"], 0);
}

/// `run` parks refused changes as it goes (one in 25); killed with -9 again and again meanwhile, it loses
/// nothing: every change is on the peer or parked, never both, never twice.
#[test]
fn kill_9_of_run_while_parking_loses_nothing() {
    let s = refusing_peer(&["--on-apply-error", "park"]);
    let (local, remote) = (s.node("local"), s.node("remote"));
    let mut run = start_run(&s, &[]);
    let mut c = local.admin();
    for round in 0..4i64 {
        for i in 0..300i64 {
            let id = round * 1000 + i;
            // Every 25th is refused by the peer.
            let v = if id % 25 == 0 { 500 } else { 1 };
            c.execute("insert into p values ($1, $2)", &[&id, &v])
                .unwrap();
        }
        c.batch_execute(&format!(
            "insert into p select {base} + g, case when ({base} + g) % 25 = 0 then 500 else 1 end from generate_series(300, 599) g",
            base = round * 1000
        ))
        .unwrap();
        run.child().kill().unwrap();
        run.child().wait().unwrap();
        run = start_run(&s, &[]);
    }
    wait_drained(&s, Duration::from_secs(120));
    let log = stop_run(run);
    let origin = ids(local, "select id from p");
    let delivered = ids(remote, "select id from p");
    let parked = ids(local, "select (r ->> 'id')::bigint from repctl.parked");
    assert_eq!(
        local.count("select count(*) from repctl.parked"),
        parked.len() as i64,
        "a change parked twice"
    );
    assert!(delivered.is_disjoint(&parked), "{log}");
    assert_eq!(
        delivered.union(&parked).copied().collect::<BTreeSet<_>>(),
        origin
    );
    assert!(parked.iter().all(|id| id % 25 == 0 && id % 1000 < 600));
    assert_eq!(
        parked.len(),
        origin.iter().filter(|id| *id % 25 == 0).count()
    );
    assert_eq!(total_pending(&s), Some(0));
}

/// Sync mode: the flush the peer refuses leaves the change queued; `run` parks it, and later
/// commits flush again at once.
#[test]
fn refused_sync_flush_is_parked_by_run() {
    let s = Setup::pair(Layout::OneCluster);
    s.replicate_new_table(
        "p",
        "id bigint primary key, v int",
        &["--on-apply-error", "park"],
    );
    let (local, remote) = (s.node("local"), s.node("remote"));
    remote.exec("alter table p add constraint small check (v < 100)");
    let run = start_run(&s, &[]);
    local.exec("insert into p values (1, 500)");
    wait_for(Duration::from_secs(20), "the refused change parked", || {
        local.count("select count(*) from repctl.parked") == 1
    });
    local.exec("insert into p values (2, 1)");
    assert_eq!(
        remote.count("select count(*) from p where id = 2"),
        1,
        "delivered at commit"
    );
    let log = stop_run(run);
    assert!(log.contains("parked"), "{log}");
}

/// `queue skip` while `run` holds the stopped pair: run yields it, the change is parked, run takes
/// the pair back and delivers the rest.
#[test]
fn queue_skip_while_run_runs() {
    let s = refusing_peer(&[]);
    let (local, remote) = (s.node("local"), s.node("remote"));
    let run = start_run(&s, &[]);
    local.exec("insert into p values (1, 500)");
    local.exec("insert into p values (2, 1)");
    wait_for(Duration::from_secs(20), "the pair stopped", || {
        s.repctl(&["queue", "--from", "local", "--to", "remote"])
            .status
            .code()
            == Some(1)
    });
    s.repctl_ok(&["queue", "skip", "--from", "local", "--to", "remote"], 0);
    wait_for(Duration::from_secs(20), "the rest delivered", || {
        remote.count("select count(*) from p") == 1
    });
    let log = stop_run(run);
    assert!(log.contains("yielded"), "{log}");
    assert!(log.contains("taken back"), "{log}");
}

/// `repctl prune` (and `run`, hourly) drops conflict-log rows and discarded changes older than
/// `retention_days`, and keeps the newer ones and every parked change still waiting.
#[test]
fn prune_keeps_the_newest_rows() {
    let s = refusing_peer(&["--on-apply-error", "park"]);
    let local = s.node("local");
    let text = std::fs::read_to_string(&s.config).unwrap();
    std::fs::write(&s.config, format!("retention_days = 7\n{text}")).unwrap();
    local.exec(
        "insert into repctl.conflict (at, tbl, k, kind, origin, rule, winner)
         select now() - (g - 0.5) * interval '1 day', 'public.p', jsonb_build_object('id', g::text), 'update_differs', 'remote', 'origin-wins', 'remote'
           from generate_series(1, 10) g",
    );
    local.exec("insert into p select g, 500 from generate_series(1, 3) g");
    s.repctl_ok(&["drain"], 0);
    s.repctl_ok(&["queue", "discard", "--all", "--to", "remote"], 0);
    local.exec("insert into p values (4, 500)");
    s.repctl_ok(&["drain"], 0);
    // Two discarded long ago, one yesterday; one still parked (not discarded) from long ago.
    local.exec(
        "update repctl.parked set discarded_at = now() - interval '30 days' where (r ->> 'id')::int in (1, 2);
         update repctl.parked set discarded_at = now() - interval '1 day' where (r ->> 'id')::int = 3;
         update repctl.parked set parked_at = now() - interval '30 days' where (r ->> 'id')::int = 4",
    );
    let pruned = json(&s, &["prune", "--json"], 0);
    let count = |what: &str| {
        pruned
            .as_array()
            .unwrap()
            .iter()
            .find(|p| p["node"] == "local" && p["what"] == what)
            .unwrap()["pruned"]
            .clone()
    };
    assert_eq!(count("conflict"), 3, "{pruned}");
    assert_eq!(count("discarded"), 2, "{pruned}");
    assert_eq!(
        ids(local, "select (k ->> 'id')::bigint from repctl.conflict"),
        (1..=7).collect()
    );
    assert_eq!(
        ids(local, "select (r ->> 'id')::bigint from repctl.parked"),
        [3, 4].into()
    );
}
