//! Nodes of different PostgreSQL major versions, replicated both ways: the README's "Upgrading
//! PostgreSQL with repctl", step by step. The second version's bin directory comes from
//! `REPCTL_PG_BIN_OTHER` (`.ci/run` sets it); without it the test says so and passes.

mod common;

use std::io::Write;
use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::Duration;

use common::Setup;
use common::run::{start_run, stop_run, wait_drained};

const OTHER_ENV: &str = "REPCTL_PG_BIN_OTHER";

/// The major version of the server in `bindir`, from `postgres --version`
/// ("postgres (PostgreSQL) 18.6").
fn major(bindir: &Path) -> u32 {
    let out = Command::new(bindir.join("postgres"))
        .arg("--version")
        .output()
        .expect("postgres --version");
    let text = String::from_utf8_lossy(&out.stdout);
    text.split(')')
        .nth(1)
        .and_then(|v| v.trim().split(['.', ' ']).next())
        .and_then(|v| v.parse().ok())
        .unwrap_or_else(|| panic!("no version in {text:?}"))
}

/// Column types whose text forms could differ between versions, with awkward values.
const TABLE_A: &str = "create table public.a (id int primary key, v text, n numeric, f float8, t timestamptz, \
     iv interval, j jsonb, b bytea, arr int[], r int4range)";
const TABLE_B: &str = "create table public.b (id int primary key, v text)";

fn insert_a(from: i32, to: i32, v: &str) -> String {
    format!(
        "insert into a select g, '{v}' || g, g / 7.0, g * 0.1::float8, '2024-02-29 12:00+05'::timestamptz + g * interval '1 hour', \
         make_interval(days => g, secs => g / 3.0), jsonb_build_object('g', g, 'k', array[1.50, -0.0]), \
         decode(md5(g::text), 'hex'), array[g, null], int4range(g, g + 10) from generate_series({from}, {to}) g"
    )
}

#[test]
fn upgrade_from_an_old_major_to_a_new_one() {
    let Some(other) = std::env::var_os(OTHER_ENV)
        .filter(|v| !v.is_empty())
        .map(PathBuf::from)
    else {
        // Written past the test harness's capture (eprintln! would be), so it shows in every run.
        writeln!(
            std::io::stderr(),
            "tests/versions.rs skipped: no second PostgreSQL version; set {OTHER_ENV} to its bin \
             directory (e.g. {OTHER_ENV}=/path/to/pg18/bin) to replicate between two majors"
        )
        .unwrap();
        return;
    };
    let default = repctl::cluster::pg_bindir().expect("pg_bindir");
    let (old_bin, new_bin) = if major(&default) <= major(&other) {
        (default, other)
    } else {
        (other, default)
    };
    let (old_major, new_major) = (major(&old_bin), major(&new_bin));
    assert_ne!(
        old_major, new_major,
        "{OTHER_ENV} names the same major version as the default PostgreSQL"
    );
    eprintln!("old node on PostgreSQL {old_major}, new node on {new_major}");
    let mut s = Setup::owned_on(&[("old", Some(old_bin)), ("new", Some(new_bin))], true);

    // 1. The application's tables and rows on the old node; the schema alone on the new one.
    for n in &s.nodes {
        n.exec(TABLE_A);
        n.exec(TABLE_B);
    }
    let old = s.node("old");
    old.exec(&insert_a(1, 2000, "old"));
    old.exec("insert into b select g, 'b' || g from generate_series(1, 2000) g");

    // 2. Both nodes in repctl.toml, init, and each table copied from the old node while it goes on
    // serving: one table synchronous, one asynchronous.
    s.write_config(&[
        ("old", "local", "LOCAL321"),
        ("new", "remote", "REMOTE321"),
    ]);
    s.repctl_ok(&["init"], 0);
    s.repctl_ok(&["add-table", "public.a", "--copy-from", "old"], 0);
    s.repctl_ok(
        &["add-table", "public.b", "--copy-from", "old", "--mode", "async"],
        0,
    );
    s.repctl_ok(&["verify", "--rows"], 0);

    // 3. Writes on both sides: the synchronous table's reach the other node at commit, the
    // asynchronous table's are delivered by `run`.
    let (old, new) = (s.node("old"), s.node("new"));
    old.exec(&insert_a(2001, 2100, "old"));
    old.exec("update a set v = 'old', n = n * 3 where id <= 10");
    new.exec(&insert_a(3001, 3100, "new"));
    new.exec("update a set v = 'new', j = j || '{\"n\": 1e-7}' where id between 11 and 20");
    new.exec("delete from a where id between 21 and 30");
    for n in [old, new] {
        assert_eq!(
            n.count("select count(*) from repctl.queue where tbl = 'public.a'"),
            0,
            "node {}: synchronous changes left queued",
            n.name
        );
    }
    old.exec("insert into b select g, 'old' from generate_series(4001, 4100) g");
    new.exec("insert into b select g, 'new' from generate_series(5001, 5100) g; update b set v = 'new' where id <= 100");
    let run = start_run(&s, &[]);
    wait_drained(&s, Duration::from_secs(60));
    stop_run(run);
    s.repctl_ok(&["verify"], 0);

    // 4. An outage of the new node: writers on the old one go on, their changes queue, and a
    // drain delivers them once it is back.
    new.cluster_mut(|c| c.stop()).unwrap();
    old.exec(&insert_a(6001, 6100, "outage"));
    old.exec("update b set v = 'during the outage' where id <= 50");
    assert!(old.count("select count(*) from repctl.queue") > 0);
    new.cluster_mut(|c| c.start_again()).unwrap();
    s.repctl_ok(&["drain"], 0);

    // 5. A conflict: one row changed on both nodes before either change is delivered.
    old.exec("update b set v = 'from old' where id = 7");
    new.exec("update b set v = 'from new' where id = 7");
    s.repctl_ok(&["drain"], 0);
    let conflicts: i64 = s
        .nodes
        .iter()
        .map(|n| n.count("select count(*) from repctl.conflict where tbl = 'public.b'"))
        .sum();
    assert!(conflicts >= 1, "no conflict recorded");
    s.repctl_ok(&["verify"], 0);
    s.repctl_ok(&["verify", "--rows"], 0);

    // 6. The writers move to the new node; once everything is delivered and equal, replication
    // is removed and the old node goes.
    new.exec(&insert_a(7001, 7100, "moved"));
    new.exec("update b set v = 'moved' where id <= 20");
    s.repctl_ok(&["drain"], 0);
    s.repctl_ok(&["lag"], 0);
    s.repctl_ok(&["verify", "--rows"], 0);
    let rows = new.count("select count(*) from a");
    assert_eq!(rows, old.count("select count(*) from a"));
    s.repctl_ok(&["remove-table", "public.a"], 0);
    s.repctl_ok(&["remove-table", "public.b"], 0);
    let agent = s.agent();
    new.exec(&format!(
        "drop schema repctl cascade; drop owned by \"{agent}\"; drop role \"{agent}\""
    ));
    old.cluster_mut(|c| c.stop()).unwrap();
    new.exec("insert into a (id, v) values (100000, 'no replication left')");
    assert_eq!(new.count("select count(*) from a"), rows + 1);
}
