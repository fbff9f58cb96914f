//! `verify --rows` and `repair`: differences planted on one node are listed key by key, repaired
//! from another node, and changes in transit are not mistaken for differences.

mod common;

use std::collections::BTreeMap;
use std::time::{Duration, Instant};

use common::{Layout, Node, Setup};
use serde_json::Value;

/// Runs SQL on a node without replication: the capture triggers skip what they see under this flag.
fn plant(node: &Node, sql: &str) {
    node.exec(&format!(
        "begin; select set_config('repctl.applying', 'on', true); {sql}; commit;"
    ));
}

/// `verify --rows --json` for one table: key (as JSON text) -> node -> state.
fn rows(s: &Setup, table: &str, code: i32) -> (BTreeMap<String, BTreeMap<String, String>>, Value) {
    let out = s.repctl_ok(&["verify", "--rows", "--json", table], code);
    let v: Value = serde_json::from_str(&out).expect("verify --rows --json prints JSON");
    let t = v["tables"][0].clone();
    assert!(t["error"].is_null(), "{t}");
    let listed = t["differences"]
        .as_array()
        .unwrap()
        .iter()
        .map(|d| {
            let states = d["nodes"]
                .as_object()
                .unwrap()
                .iter()
                .map(|(n, st)| (n.clone(), st.as_str().unwrap().to_string()))
                .collect();
            (d["key"].to_string(), states)
        })
        .collect();
    (listed, t)
}

fn key(id: i64) -> String {
    format!("{{\"id\":\"{id}\"}}")
}

fn states(local: &str, remote: &str) -> BTreeMap<String, String> {
    [("local", local), ("remote", remote)]
        .into_iter()
        .map(|(n, s)| (n.to_string(), s.to_string()))
        .collect()
}

/// The same rows on both nodes, written before replication starts (so nothing is queued).
fn same_table(s: &Setup, table: &str, rows: i64) {
    for n in &s.nodes {
        n.exec(&format!(
            "create table {table} (id int primary key, a text, b int, c timestamptz);
             insert into {table} select g, md5(g::text), g % 1000, '2020-01-01'::timestamptz + g * interval '1 second'
               from generate_series(1, {rows}) g;
             analyze {table}"
        ));
    }
}

/// Plants `per_kind` missing, changed and extra rows on remote; returns what verify must list.
fn plant_differences(
    s: &Setup,
    table: &str,
    rows: i64,
    per_kind: i64,
) -> BTreeMap<String, BTreeMap<String, String>> {
    let remote = s.node("remote");
    let step = rows / (3 * per_kind);
    let mut expected = BTreeMap::new();
    let (mut missing, mut changed, mut extra) = (vec![], vec![], vec![]);
    for i in 0..per_kind {
        missing.push(1 + i * 3 * step);
        changed.push(2 + i * 3 * step);
        extra.push(rows + 1 + i * 7);
    }
    let list = |v: &[i64]| v.iter().map(i64::to_string).collect::<Vec<_>>().join(",");
    plant(
        remote,
        &format!(
            "delete from {table} where id in ({m});
             update {table} set b = b + 1 where id in ({c});
             insert into {table} select g, 'extra', 0, now() from unnest(array[{e}]) g",
            m = list(&missing),
            c = list(&changed),
            e = list(&extra)
        ),
    );
    for id in missing {
        expected.insert(key(id), states("present", "missing"));
    }
    for id in changed {
        expected.insert(key(id), states("present", "differs"));
    }
    for id in extra {
        expected.insert(key(id), states("absent", "extra"));
    }
    expected
}

/// The issue's scenario: 1,000,000 rows, 100 differences planted on one node (missing rows,
/// changed values, extra rows); verify --rows lists exactly those, repair fixes them.
#[test]
fn million_rows_planted_differences_listed_and_repaired() {
    let s = Setup::pair(Layout::TwoClusters);
    same_table(&s, "big_rows", 1_000_000);
    s.repctl_ok(&["init"], 0);
    s.repctl_ok(&["add-table", "public.big_rows", "--mode", "async"], 0);
    let mut expected = plant_differences(&s, "big_rows", 1_000_000, 33);
    // One more changed row, to make it 100.
    plant(
        s.node("remote"),
        "update big_rows set a = 'changed' where id = 500000",
    );
    expected.insert(key(500000), states("present", "differs"));
    assert_eq!(expected.len(), 100);

    let started = Instant::now();
    s.repctl_ok(&["verify", "public.big_rows"], 1);
    let verify_time = started.elapsed();
    let started = Instant::now();
    let (listed, report) = rows(&s, "public.big_rows", 1);
    let rows_time = started.elapsed();
    eprintln!(
        "1,000,000 rows, 100 differences: verify {verify_time:.2?}, verify --rows {rows_time:.2?} ({} blocks, {} read)",
        report["blocks"], report["blocks_read"]
    );
    assert_eq!(listed, expected);
    assert_eq!(report["pending_count"], 0);

    // --limit stops the search early and says so.
    let out = s.repctl_ok(&["verify", "--rows", "--limit", "10", "--json"], 1);
    let v: Value = serde_json::from_str(&out).unwrap();
    assert_eq!(v["tables"][0]["differences"].as_array().unwrap().len(), 10);
    assert_eq!(v["tables"][0]["truncated"], true);

    // A dry run prints the statements and changes nothing.
    let dry = s.repctl_ok(
        &["repair", "--from", "local", "public.big_rows", "--dry-run"],
        0,
    );
    assert!(
        dry.contains("repctl.applying")
            && dry.contains("delete from")
            && dry.contains("insert into"),
        "{dry}"
    );
    s.repctl_ok(&["verify", "public.big_rows"], 1);

    let out = s.repctl_ok(&["repair", "--from", "local", "public.big_rows"], 0);
    assert!(out.contains("remote"), "{out}");
    s.repctl_ok(&["verify", "public.big_rows"], 0);
    // Repair wrote with replication suppressed: nothing was queued back to local.
    assert_eq!(
        s.node("remote")
            .count("select count(*) from repctl.queue where tbl = 'public.big_rows'"),
        0
    );
}

/// A composite key with awkward text, a --where subset, and repair from the other side.
#[test]
fn composite_key_and_where_subset() {
    let s = Setup::pair(Layout::OneCluster);
    for n in &s.nodes {
        n.exec(
            "create table odd (k1 int, k2 text, v text, primary key (k1, k2));
             insert into odd select g / 10, 'x,\"y'' ' || (g % 10), md5(g::text) from generate_series(1, 20000) g",
        );
    }
    s.repctl_ok(&["init"], 0);
    s.repctl_ok(&["add-table", "public.odd", "--where", "k1 < 1500"], 0);
    let local = s.node("local");
    plant(
        local,
        "delete from odd where k1 = 7 and k2 = 'x,\"y'' 3';
         update odd set v = null where k1 = 1200 and k2 = 'x,\"y'' 0';
         insert into odd values (-1, 'new\\nline', 'e');
         update odd set v = 'outside the subset' where k1 = 1800",
    );
    let (listed, report) = rows(&s, "public.odd", 1);
    assert_eq!(listed.len(), 3, "{report}");
    assert_eq!(
        listed[r#"{"k1":"7","k2":"x,\"y' 3"}"#],
        states("absent", "extra")
    );
    assert_eq!(
        listed[r#"{"k1":"1200","k2":"x,\"y' 0"}"#],
        states("present", "differs")
    );
    assert_eq!(
        listed[r#"{"k1":"-1","k2":"new\\nline"}"#],
        states("present", "missing")
    );
    // Make local match remote.
    s.repctl_ok(&["repair", "--from", "remote"], 0);
    s.repctl_ok(&["verify"], 0);
    assert_eq!(
        local.count("select count(*) from odd where v = 'outside the subset'"),
        10,
        "rows outside --where are not touched"
    );
}

/// Changes queued (async) or being written (sync, a busy writer) are pending, not differences.
#[test]
fn changes_in_transit_are_not_differences() {
    let s = Setup::pair(Layout::TwoClusters);
    same_table(&s, "busy", 50_000);
    same_table(&s, "queued", 1_000);
    s.repctl_ok(&["init"], 0);
    s.repctl_ok(&["add-table", "public.busy"], 0);
    s.repctl_ok(&["add-table", "public.queued", "--mode", "async"], 0);
    let expected = plant_differences(&s, "busy", 50_000, 5);

    // Async: queued changes show as pending, and exit 0 (nothing differs but what is in transit).
    s.node("local")
        .exec("update queued set b = -1 where id <= 20; delete from queued where id = 999");
    let (listed, report) = rows(&s, "public.queued", 0);
    assert!(listed.is_empty(), "{report}");
    assert_eq!(report["pending_count"], 21);
    s.repctl_ok(&["verify", "public.queued"], 1);

    // Sync: a writer keeps updating rows while verify runs; only the planted keys are listed.
    let stop = std::sync::atomic::AtomicBool::new(false);
    std::thread::scope(|scope| {
        let (s, stop) = (&s, &stop);
        scope.spawn(move || {
            let mut c = s.node("local").admin();
            let mut i = 0;
            while !stop.load(std::sync::atomic::Ordering::SeqCst) {
                // Skips the planted keys (ids 1 and 2 modulo 3 * step are planted ones).
                let id = 3 + (i * 7919) % 49_000 / 3 * 3;
                c.batch_execute(&format!(
                    "update busy set a = md5(random()::text) where id = {id}"
                ))
                .unwrap();
                i += 1;
            }
        });
        for _ in 0..3 {
            let (listed, report) = rows(s, "public.busy", 1);
            assert_eq!(listed, expected, "{report}");
        }
        std::thread::sleep(Duration::from_millis(50));
        stop.store(true, std::sync::atomic::Ordering::SeqCst);
    });
}

/// Odd names, and columns named like the aliases the generated queries use.
#[test]
fn odd_names_and_alias_like_columns() {
    let s = Setup::pair(Layout::OneCluster);
    for n in &s.nodes {
        n.exec(
            r#"create schema "My Schema";
               create table "My Schema"."Odd, Name" ("k 1" int, t text, c int, k text, b int, r text, i int,
                 v text, s text, l text, q text, n int, h int, repctl_rn int, repctl_hash int,
                 primary key ("k 1", t));
               insert into "My Schema"."Odd, Name"
               select g, 'x' || (g % 3), g, 'k', g, 'r', g, 'v', 's', 'l', 'q', g, g, g, g
                 from generate_series(1, 3000) g"#,
        );
    }
    s.repctl_ok(&["init"], 0);
    s.repctl_ok(
        &[
            "add-table",
            r#""My Schema"."Odd, Name""#,
            "--where",
            "c > 0 and k = 'k'",
        ],
        0,
    );
    plant(
        s.node("remote"),
        r#"update "My Schema"."Odd, Name" set h = -1 where "k 1" = 10;
           delete from "My Schema"."Odd, Name" where "k 1" = 2000;
           insert into "My Schema"."Odd, Name" values (-7, 'y', 1, 'k', 0, '', 0, '', '', '', '', 0, 0, 0, 0)"#,
    );
    let (listed, report) = rows(&s, r#""My Schema"."Odd, Name""#, 1);
    let keys: Vec<&String> = listed.keys().collect();
    assert_eq!(
        keys,
        [
            r#"{"k 1":"-7","t":"y"}"#,
            r#"{"k 1":"10","t":"x1"}"#,
            r#"{"k 1":"2000","t":"x2"}"#
        ],
        "{report}"
    );
    s.repctl_ok(&["repair", "--from", "local"], 0);
    s.repctl_ok(&["verify"], 0);
}
