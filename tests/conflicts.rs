//! Conflicts: two nodes change the same row before exchanging changes. Every rule converges, and
//! every conflict is recorded.

mod common;

use std::collections::BTreeSet;
use std::time::Duration;

use common::{Layout, Setup};
use serde_json::Value;

const RULES: [&[&str]; 5] = [
    &["--conflict", "origin-wins"],
    &["--conflict", "target-wins"],
    &["--conflict", "last-write-wins"],
    &[
        "--conflict",
        "last-write-wins",
        "--conflict-column",
        "mod_time",
    ],
    &[
        "--conflict",
        "node-priority",
        "--node-priority",
        "remote,local",
    ],
];

/// Both nodes with table `kv`, async so changes wait in the queues until drained.
fn pair(rule: &[&str]) -> Setup {
    let s = Setup::pair(Layout::OneCluster);
    for n in &s.nodes {
        n.exec("create table kv (id int primary key, v text, mod_time timestamptz not null default clock_timestamp())");
    }
    s.repctl_ok(&["init"], 0);
    let mut args = vec!["add-table", "public.kv", "--mode", "async"];
    args.extend_from_slice(rule);
    s.repctl_ok(&args, 0);
    s
}

fn conflicts(s: &Setup) -> Vec<Value> {
    serde_json::from_slice(&s.repctl(&["conflicts", "--json"]).stdout).expect("conflicts --json")
}

fn conflict_keys(s: &Setup) -> BTreeSet<i64> {
    conflicts(s)
        .iter()
        .map(|c| c["key"]["id"].as_str().unwrap().parse().unwrap())
        .collect()
}

/// Many short transactions on both nodes at once on the same keys, then delivery: every rule
/// converges and every key both sides changed is in the audit log.
#[test]
fn concurrent_updates_of_the_same_keys_converge_with_every_rule() {
    for rule in RULES {
        let s = pair(rule);
        s.node("local")
            .exec("insert into kv (id, v) select g, 'init' from generate_series(1, 20) g");
        s.repctl_ok(&["drain"], 0);
        std::thread::scope(|scope| {
            for node in &s.nodes {
                scope.spawn(move || {
                    let mut c = node.admin();
                    for i in 0..60 {
                        let id = 1 + (i * 7 + if node.name == "local" { 0 } else { 3 }) % 20;
                        c.batch_execute(&format!("update kv set v = '{}-{i}', mod_time = clock_timestamp() where id = {id}", node.name))
                            .unwrap();
                    }
                });
            }
        });
        let both: BTreeSet<i64> = {
            let changed = |n: &str| -> BTreeSet<i64> {
                s.node(n)
                    .admin()
                    .query(
                        "select distinct (coalesce(r, o) ->> 'id')::bigint from repctl.queue",
                        &[],
                    )
                    .unwrap()
                    .iter()
                    .map(|r| r.get(0))
                    .collect()
            };
            changed("local")
                .intersection(&changed("remote"))
                .copied()
                .collect()
        };
        assert!(!both.is_empty(), "the workload made no conflicting changes");
        s.repctl_ok(&["drain"], 0);
        s.repctl_ok(&["drain"], 0);
        let out = s.repctl(&["verify"]);
        assert_eq!(
            out.status.code(),
            Some(0),
            "{rule:?} did not converge:\n{}",
            String::from_utf8_lossy(&out.stdout)
        );
        assert_eq!(conflict_keys(&s), both, "{rule:?}: audit log keys");
        // At most one entry per key on each node.
        let log = conflicts(&s);
        let per_node: BTreeSet<(String, String)> = log
            .iter()
            .map(|c| {
                (
                    c["node"].as_str().unwrap().to_string(),
                    c["key"].to_string(),
                )
            })
            .collect();
        assert_eq!(
            per_node.len(),
            log.len(),
            "{rule:?}: duplicate entries {log:#?}"
        );
    }
}

/// Runs one two-sided scenario: `setup` on both nodes (delivered), then `on_local` and
/// `on_remote` before they exchange anything, then delivery.
fn scenario(rule: &[&str], setup: &str, on_local: &str, on_remote: &str) -> Setup {
    let s = pair(rule);
    if !setup.is_empty() {
        s.node("local").exec(setup);
        s.repctl_ok(&["drain"], 0);
    }
    s.node("local").exec(on_local);
    std::thread::sleep(Duration::from_millis(20));
    s.node("remote").exec(on_remote);
    s.repctl_ok(&["drain"], 0);
    s.repctl_ok(&["drain"], 0);
    s
}

#[test]
fn each_kind_of_conflict_with_every_rule() {
    let cases: [(&str, &str, &str, &str); 4] = [
        (
            "insert_exists",
            "",
            "insert into kv (id, v) values (5, 'L')",
            "insert into kv (id, v) values (5, 'R')",
        ),
        (
            "update_missing",
            "insert into kv (id, v) values (5, 'x')",
            "update kv set v = 'L', mod_time = clock_timestamp() where id = 5",
            "delete from kv where id = 5",
        ),
        (
            "delete_differs",
            "insert into kv (id, v) values (5, 'x')",
            "delete from kv where id = 5",
            "update kv set v = 'R', mod_time = clock_timestamp() where id = 5",
        ),
        (
            "delete_differs",
            "insert into kv (id, v) values (5, 'x')",
            "update kv set id = 100 where id = 5",
            "update kv set v = 'R', mod_time = clock_timestamp() where id = 5",
        ),
    ];
    for rule in RULES {
        for (kind, setup, l, r) in cases {
            let s = scenario(rule, setup, l, r);
            let out = s.repctl(&["verify"]);
            assert_eq!(
                out.status.code(),
                Some(0),
                "{rule:?} {l} / {r}:\n{}",
                String::from_utf8_lossy(&out.stdout)
            );
            let log = conflicts(&s);
            assert!(
                log.iter()
                    .any(|c| c["kind"] == kind && c["key"]["id"] == "5"),
                "{rule:?} {l} / {r}: {log:#?}"
            );
            // Who won follows the rule: remote's change came last and remote has priority.
            let rows: Vec<(i32, String)> = s
                .node("local")
                .admin()
                .query("select id, v from kv order by id", &[])
                .unwrap()
                .iter()
                .map(|r| (r.get(0), r.get(1)))
                .collect();
            let remote_won = rows.iter().any(|(_, v)| v == "R")
                || (r.starts_with("delete") && !rows.iter().any(|(id, _)| *id == 5));
            let expect_remote = match rule[1] {
                "origin-wins" => false, // local's change is delivered first and wins at remote
                "target-wins" => true,  // remote keeps its row and sends it back
                _ => true,              // newer (remote's) / remote has priority
            };
            assert_eq!(
                remote_won, expect_remote,
                "{rule:?} {l} / {r}: rows {rows:?}"
            );
        }
    }
}

/// A change made on one node outside replication (as a DBA's manual fix would be).
const UNREPLICATED: &str = "select set_config('repctl.applying', 'on', true);";

/// Rule `error`: the pair stops at the conflicting change and keeps it; other pairs continue; once
/// the user fixes the row, a drain converges.
#[test]
fn error_rule_stops_the_pair_until_fixed() {
    let s = pair(&["--conflict", "error"]);
    for n in &s.nodes {
        n.exec("create table other (id int primary key)");
    }
    s.repctl_ok(&["add-table", "public.other", "--mode", "async"], 0);
    s.node("local")
        .exec("insert into kv (id, v) values (1, 'x'), (2, 'x')");
    s.repctl_ok(&["drain"], 0);
    s.node("remote").exec(&format!(
        "begin; {UNREPLICATED} update kv set v = 'X' where id = 1; commit"
    ));
    s.node("local").exec("update kv set v = 'L' where id = 1");
    s.node("local").exec("update kv set v = 'L2' where id = 2");
    s.node("remote").exec("insert into other values (7)");
    let report: Vec<Value> = serde_json::from_str(&s.repctl_ok(&["drain", "--json"], 1)).unwrap();
    let l2r = report.iter().find(|r| r["from"] == "local").unwrap();
    assert_eq!(l2r["delivered"], 0);
    assert_eq!(l2r["left"], 2);
    let error = l2r["error"].as_str().unwrap();
    assert!(
        error.contains("update_differs") && error.contains("\"X\""),
        "{error}"
    );
    // Nothing after the conflicting change on that pair went through; the other pair did.
    assert_eq!(
        s.node("remote")
            .count("select count(*) from kv where v = 'L2'"),
        0
    );
    assert_eq!(s.node("local").count("select count(*) from other"), 1);
    // Again: still stopped, still queued.
    s.repctl_ok(&["drain"], 1);
    // The user decides local is right and puts the row back on remote, outside replication.
    s.node("remote").exec(&format!(
        "begin; {UNREPLICATED} update kv set v = 'x' where id = 1; commit"
    ));
    s.repctl_ok(&["drain"], 0);
    s.repctl_ok(&["verify"], 0);
    assert_eq!(
        s.node("remote")
            .count("select count(*) from kv where v in ('L', 'L2')"),
        2
    );
}

/// A unique constraint besides the primary key: the pair stops with a clear error, never a
/// silent skip.
#[test]
fn other_unique_constraint_stops_the_pair_with_a_clear_error() {
    let s = pair(&[]);
    for n in &s.nodes {
        n.exec("alter table kv add constraint v_unique unique (v)");
    }
    s.node("local")
        .exec("insert into kv (id, v) values (1, 'same')");
    s.node("remote")
        .exec("insert into kv (id, v) values (2, 'same')");
    let report: Vec<Value> = serde_json::from_str(&s.repctl_ok(&["drain", "--json"], 1)).unwrap();
    let err = report
        .iter()
        .find_map(|r| r["error"].as_str())
        .unwrap()
        .to_string();
    assert!(
        err.contains("v_unique") && err.contains("refused change"),
        "{err}"
    );
    let lag: Vec<Value> = serde_json::from_slice(&s.repctl(&["lag", "--json"]).stdout).unwrap();
    assert!(lag.iter().any(|p| p["pending"].as_i64().unwrap() > 0));
}
