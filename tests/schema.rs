//! Schema changes of replicated tables: `alter-table --ddl` with writers running on every node,
//! and DDL outside repctl refused where it would break capture or apply.

mod common;

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::thread;
use std::time::Duration;

use common::{Layout, Setup};

const TABLE: &str =
    "id int primary key, n int not null default 0, v text default 'd', w int default 0";

/// Every column of every row, as text, in key order: the whole table, not just what verify compares.
fn rows(s: &Setup, node: &str) -> Vec<String> {
    s.node(node)
        .admin()
        .query("select t::text from public.t t order by id", &[])
        .unwrap()
        .iter()
        .map(|r| r.get(0))
        .collect()
}

fn assert_same_everywhere(s: &Setup) {
    s.repctl_ok(&["drain"], 0);
    s.repctl_ok(&["verify"], 0);
    assert_eq!(rows(&s, "local"), rows(&s, "remote"));
}

/// A writer per node, on keys of its own (odd on local, even on remote): inserts, updates, deletes
/// through statements valid in every shape of the table. Returns the errors they met.
fn writers(s: &Setup, stop: &Arc<AtomicBool>) -> Vec<thread::JoinHandle<Vec<String>>> {
    ["local", "remote"]
        .iter()
        .enumerate()
        .map(|(i, node)| {
            let mut c = s.node(node).admin();
            let stop = stop.clone();
            thread::spawn(move || {
                let mut errors = Vec::new();
                let mut k = 1000 + i as i32;
                while !stop.load(Ordering::SeqCst) {
                    k += 2;
                    for sql in [
                        format!("insert into public.t (id) values ({k})"),
                        format!(
                            "update public.t set n = n + 1 where id in ({k}, {})",
                            k - 20
                        ),
                        format!("delete from public.t where id = {}", k - 40),
                    ] {
                        if let Err(e) = c.batch_execute(&sql) {
                            errors.push(format!("{sql}: {e:?}"));
                        }
                    }
                }
                errors
            })
        })
        .collect()
}

/// Every kind of change, one after another, while both nodes write; before each, changes of the
/// columns it touches are made on local, so they are queued or on their way across the change.
fn every_change_with_writers(mode: &str) {
    let s = Setup::pair(Layout::TwoClusters);
    s.replicate_new_table("t", TABLE, &["--mode", mode]);
    s.node("local").exec(
        "insert into public.t (id, v, w) select g, 'v' || g, g from generate_series(1, 100) g",
    );
    s.repctl_ok(&["drain"], 0);
    let stop = Arc::new(AtomicBool::new(false));
    let running = writers(&s, &stop);
    let steps: [(&str, &str); 4] = [
        (
            "update public.t set v = 'before z ' || id where id <= 50",
            "add column z int default 7",
        ),
        (
            "update public.t set v = 'before rename ' || id where id <= 50",
            "rename column v to v2",
        ),
        (
            "update public.t set w = id * 3 where id <= 50",
            "alter column w type bigint using w::bigint",
        ),
        (
            "update public.t set z = id, w = 5 where id <= 50",
            "drop column z",
        ),
    ];
    for (write, ddl) in steps {
        s.node("local").exec(write);
        thread::sleep(Duration::from_millis(300));
        s.repctl_ok(&["alter-table", "public.t", "--ddl", ddl], 0);
        thread::sleep(Duration::from_millis(300));
    }
    stop.store(true, Ordering::SeqCst);
    let errors: Vec<String> = running
        .into_iter()
        .flat_map(|w| w.join().unwrap())
        .collect();
    assert!(errors.is_empty(), "writers failed: {errors:#?}");
    assert_same_everywhere(&s);
    let local = s.node("local");
    assert_eq!(
        local.count(
            "select count(*) from public.t where id <= 50 and v2 = 'before rename ' || id and w = 5"
        ),
        50
    );
    assert_eq!(
        local.count("select count(*) from repctl.tables where columns = '{id,n,v2,w}'"),
        1
    );
}

#[test]
fn alter_table_ddl_with_writers_sync() {
    every_change_with_writers("sync");
}

#[test]
fn alter_table_ddl_with_writers_async() {
    every_change_with_writers("async");
}

/// Changes queued behind a down peer, in the old shape, apply after the change; with the peer
/// still down, alter-table changes no node.
#[test]
fn alter_table_ddl_with_a_peer_down() {
    let s = Setup::owned(&["local", "remote"], false);
    s.replicate_new_table("t", TABLE, &[]);
    let local = s.node("local");
    local.exec(
        "insert into public.t (id, v, w) select g, 'v' || g, g from generate_series(1, 20) g",
    );
    s.node("remote").cluster_mut(|c| c.stop()).unwrap();
    local.exec("update public.t set v = 'while down ' || id, w = -id; insert into public.t (id, v, w) values (21, 'new', 21)");
    let out = s.repctl(&["alter-table", "public.t", "--ddl", "rename column v to v2"]);
    assert_eq!(out.status.code(), Some(2));
    assert!(String::from_utf8_lossy(&out.stderr).contains("remote"));
    assert_eq!(
        local.count("select count(*) from pg_attribute where attrelid = 'public.t'::regclass and attname = 'v'"),
        1,
        "local unchanged"
    );
    s.node("remote").cluster_mut(|c| c.start_again()).unwrap();
    for ddl in [
        "rename column v to v2",
        "add column z int default 7",
        "alter column w type text using w::text",
        "drop column n",
    ] {
        s.repctl_ok(&["alter-table", "public.t", "--ddl", ddl], 0);
    }
    assert_same_everywhere(&s);
    let remote = s.node("remote");
    assert_eq!(
        remote.count("select count(*) from public.t where v2 = 'while down ' || id and w = (-id)::text and z = 7"),
        20
    );
    assert_eq!(
        remote.count("select count(*) from public.t where id = 21 and v2 = 'new'"),
        1
    );
}

/// A column added since keeps the peer's value when a change from before lacks it; a new row
/// takes the default. Changes queued before the change are delivered by its last drain.
#[test]
fn an_added_column_missing_from_an_old_image() {
    let s = Setup::pair(Layout::TwoClusters);
    s.replicate_new_table("t", TABLE, &["--mode", "async"]);
    let (local, remote) = (s.node("local"), s.node("remote"));
    local.exec("insert into public.t (id, v) values (1, 'a'), (2, 'b')");
    s.repctl_ok(&["drain"], 0);
    local.exec("update public.t set v = 'changed' where id = 1; insert into public.t (id, v) values (3, 'c')");
    let out = s.repctl_ok(
        &[
            "alter-table",
            "public.t",
            "--ddl",
            "add column z int default 7",
            "--dry-run",
        ],
        0,
    );
    assert!(
        out.contains("node local")
            && out.contains("node remote")
            && out.contains("column z integer added"),
        "{out}"
    );
    assert_eq!(
        local.count("select count(*) from pg_attribute where attrelid = 'public.t'::regclass and attname = 'z'"),
        0,
        "a dry run changes nothing"
    );
    s.repctl_ok(
        &[
            "alter-table",
            "public.t",
            "--ddl",
            "add column z int default 7",
        ],
        0,
    );
    assert_eq!(
        remote.count("select count(*) from public.t where id = 1 and v = 'changed' and z = 7"),
        1
    );
    assert_eq!(
        remote.count("select count(*) from public.t where id = 3 and z = 7"),
        1
    );
    s.repctl_ok(&["verify"], 0);
    // An old image arriving now: the update keeps remote's z, the insert takes the default.
    remote.exec("begin; select set_config('repctl.applying', 'on', true); update public.t set z = 9 where id = 2; commit");
    let old = r#"{"s":[1,2],"t":["public.t","public.t"],"op":["U","I"],
        "r":[{"id":"2","n":"0","v":"old shape","w":"0"},{"id":"4","n":"0","v":"new row","w":"0"}],
        "o":[{"id":"2","n":"0","v":"b","w":"0"},null],"ts":["2020-01-01T00:00:00+00:00","2020-01-01T00:00:00+00:00"],
        "resolved":[false,false],"n":[null,null]}"#;
    remote.exec(&format!("select repctl.apply('local', '{old}')"));
    assert_eq!(
        remote.count("select count(*) from public.t where id = 2 and v = 'old shape' and z = 9"),
        1
    );
    assert_eq!(
        remote.count("select count(*) from public.t where id = 4 and v = 'new row' and z = 7"),
        1
    );
}

/// DDL outside repctl that would break replication is refused with the command to use; additive
/// DDL passes; a superuser can bypass the check deliberately, nobody else.
#[test]
fn ddl_outside_repctl_is_refused_unless_additive() {
    let s = Setup::pair(Layout::OneCluster);
    s.replicate_new_table("t", TABLE, &[]);
    let local = s.node("local");
    let mut c = local.admin();
    for ddl in [
        "alter table public.t drop column w",
        "alter table public.t rename column v to v2",
        "alter table public.t alter column w type bigint",
        "alter table public.t drop constraint t_pkey",
        "alter table public.t rename to t2",
        "drop table public.t",
    ] {
        let e = c.batch_execute(ddl).expect_err(ddl);
        let db = e.as_db_error().expect("a server error");
        assert!(db.message().contains("public.t"), "{ddl}: {}", db.message());
        assert!(
            db.hint()
                .unwrap_or_default()
                .contains("repctl alter-table public.t --ddl"),
            "{ddl}: {:?}",
            db.hint()
        );
    }
    for ddl in [
        "alter table public.t add column z int default 7",
        "create index on public.t (v)",
        "alter table public.t alter column v set default 'x'",
    ] {
        c.batch_execute(ddl)
            .unwrap_or_else(|e| panic!("{ddl}: {e}"));
    }
    local.exec("insert into public.t (id) values (1)");
    // Only for a superuser: a table owner who sets it is still refused.
    local.exec(
        "create role schema_owner login password 'pw'; alter table public.t owner to schema_owner",
    );
    let mut owner = local.login("schema_owner", "pw");
    let e = owner
        .batch_execute("set repctl.allow_ddl = on; alter table public.t drop column w")
        .expect_err("not a superuser");
    assert!(e.to_string().contains("db error"), "{e}");
    c.batch_execute("set repctl.allow_ddl = on; alter table public.t drop column w")
        .unwrap();
}

fn status_json(s: &Setup, code: i32) -> serde_json::Value {
    serde_json::from_str(&s.repctl_ok(&["status", "--json"], code)).unwrap()
}

fn drift(s: &Setup) -> Vec<(String, String)> {
    status_json(s, 1)["tables"][0]["drift"]
        .as_array()
        .unwrap()
        .iter()
        .map(|d| {
            (
                d["problem"].as_str().unwrap().to_string(),
                d["fix"].as_str().unwrap().to_string(),
            )
        })
        .collect()
}

/// status reports a column on some nodes only, one added since add-table, a type mismatch, each
/// with a fix that works; verify names a schema difference as such; a column left out with
/// --columns is no drift.
#[test]
fn status_reports_drift_with_the_fix() {
    let s = Setup::pair(Layout::OneCluster);
    s.replicate_new_table("t", TABLE, &[]);
    let other = "public.u";
    for n in &s.nodes {
        n.exec("create table public.u (id int primary key, secret text)");
    }
    s.repctl_ok(&["add-table", other, "--columns", "id"], 0);
    status_json(&s, 0);
    s.node("local")
        .exec("alter table public.t add column z int");
    let d = drift(&s);
    assert_eq!(d.len(), 1, "{d:?}");
    assert!(
        d[0].0.contains("column z integer is on node(s) local only"),
        "{d:?}"
    );
    assert!(
        d[0].1
            .contains("on node remote: alter table \"public\".\"t\" add column \"z\" integer"),
        "{d:?}"
    );
    s.node("remote")
        .exec("alter table public.t add column z int");
    let d = drift(&s);
    assert!(
        d[0].0
            .contains("added since add-table and is not replicated"),
        "{d:?}"
    );
    assert!(
        d[0].1
            .contains("repctl alter-table public.t --columns id,n,v,w,z"),
        "{d:?}"
    );
    s.repctl_ok(&["alter-table", "public.t", "--columns", "id,n,v,w,z"], 0);
    status_json(&s, 0);
    // A superuser's deliberate bypass on one node only.
    s.node("remote")
        .exec("set repctl.allow_ddl = on; alter table public.t alter column w type bigint");
    let d = drift(&s);
    assert!(
        d[0].0
            .contains("column w has different types: integer on local, bigint on remote"),
        "{d:?}"
    );
    let out = s.repctl_ok(&["verify", "public.t"], 1);
    assert!(
        out.contains("SCHEMA DIFFERS") && out.contains("schema differs"),
        "{out}"
    );
    let v: serde_json::Value =
        serde_json::from_str(&s.repctl_ok(&["verify", "--json"], 1)).unwrap();
    assert!(
        v["tables"]
            .as_array()
            .unwrap()
            .iter()
            .any(|t| !t["schema"].as_array().unwrap().is_empty())
    );
    assert!(d[0].1.contains("repctl alter-table public.t --ddl 'alter column \"w\" type integer using \"w\"::integer'"), "{d:?}");
    s.repctl_ok(
        &[
            "alter-table",
            "public.t",
            "--ddl",
            "alter column w type integer using w::integer",
        ],
        0,
    );
    status_json(&s, 0);
    s.node("local")
        .exec("insert into public.t (id, w, z) values (1, 2, 3)");
    s.repctl_ok(&["verify"], 0);
}

/// A table without a primary key replicates by a unique index over NOT NULL columns (--key);
/// a batch applied twice ends in the same state; the guard keeps that index.
#[test]
fn a_unique_index_as_the_key() {
    let s = Setup::pair(Layout::TwoClusters);
    for n in &s.nodes {
        n.exec("create table public.h (id int not null, v text, n int); create unique index h_id on public.h (id)");
    }
    s.repctl_ok(&["init"], 0);
    let out = s.repctl(&["add-table", "public.h"]);
    assert!(String::from_utf8_lossy(&out.stderr).contains("--key COL[,COL]"));
    let out = s.repctl(&["add-table", "public.h", "--key", "n"]);
    assert!(
        String::from_utf8_lossy(&out.stderr).contains("may be null"),
        "{out:?}"
    );
    s.repctl_ok(
        &["add-table", "public.h", "--key", "id", "--mode", "async"],
        0,
    );
    let (local, remote) = (s.node("local"), s.node("remote"));
    local.exec("insert into public.h select g, 'v' || g from generate_series(1, 10) g; update public.h set v = 'u' where id = 3");
    remote.exec("insert into public.h values (11, 'remote'); delete from public.h where id = 11");
    let payload: String = local
        .admin()
        .query_one(
            "select repctl.changes_json(array_agg(q order by q.seq))::text from repctl.queue q",
            &[],
        )
        .unwrap()
        .get(0);
    for _ in 0..2 {
        remote.exec(&format!(
            "select repctl.apply('local', {})",
            repctl::render::quote_literal(&payload)
        ));
    }
    assert_eq!(remote.count("select count(*) from public.h"), 10);
    s.repctl_ok(&["drain"], 0);
    local.exec("update public.h set v = 'again' where id = 3; delete from public.h where id = 4");
    s.repctl_ok(&["drain"], 0);
    s.repctl_ok(&["verify"], 0);
    s.repctl_ok(&["verify", "--rows"], 0);
    status_json(&s, 0);
    assert_eq!(
        remote.count("select count(*) from public.h where id = 3 and v = 'again'"),
        1
    );
    let e = local
        .admin()
        .batch_execute("drop index public.h_id")
        .expect_err("the key's index");
    assert!(
        e.as_db_error().unwrap().message().contains("public.h"),
        "{e}"
    );
}
