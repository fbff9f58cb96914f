//! The seed article's scenario through the CLI, in both of its layouts, with its roles.

mod common;

use std::time::Instant;

use common::{Layout, SEED_TABLE, Setup, TABLES, seed_insert};

fn seed_setup(layout: Layout) -> Setup {
    let mut s = Setup::pair(layout);
    s.seed_tables();
    s
}

/// Steps 1 and 2 of the seed's test section, written by the non-superuser owners.
fn seed_steps(layout: Layout) {
    let s = seed_setup(layout);
    s.replicate_seed_tables();
    for (writer, table) in TABLES {
        let mut c = s.node(writer).login(
            writer,
            if writer == "local" {
                "LOCAL321"
            } else {
                "REMOTE321"
            },
        );
        let started = Instant::now();
        c.batch_execute(&seed_insert(table, 1, 10_000)).unwrap();
        eprintln!(
            "{layout:?}: 10,000-row insert on {writer} with replication: {:?}",
            started.elapsed()
        );
        s.assert_converged(&TABLES);
        assert_eq!(
            s.node("remote")
                .count("select count(*) from remote.rmt_test"),
            10_000
        );
        c.batch_execute(&format!("update {table} set info = pk2"))
            .unwrap();
        s.assert_converged(&TABLES);
        c.batch_execute(&format!("delete from {table} where pk1 < 1000"))
            .unwrap();
        s.assert_converged(&TABLES);
        assert_eq!(
            s.node("local").count("select count(*) from local.loc_test"),
            9001
        );
        c.batch_execute(&format!("truncate {table}")).unwrap();
        s.assert_converged(&TABLES);
        assert_eq!(
            s.node("local").count("select count(*) from local.loc_test"),
            0
        );
    }
    // Nothing is left queued: every change went at commit.
    for (node, _) in TABLES {
        assert_eq!(
            s.node(node).count("select count(*) from repctl.queue"),
            0,
            "queue on {node}"
        );
    }
}

#[test]
fn seed_steps_two_databases_one_cluster() {
    seed_steps(Layout::OneCluster);
}

#[test]
fn seed_steps_two_clusters() {
    seed_steps(Layout::TwoClusters);
}

#[test]
fn bulk_insert_is_one_remote_round_trip_not_one_commit_per_row() {
    let s = seed_setup(Layout::TwoClusters);
    s.replicate_seed_tables();
    let commits = |s: &Setup| {
        s.node("remote")
            .count("select xact_commit from pg_stat_database where datname = current_database()")
    };
    let before = commits(&s);
    s.node("local")
        .exec(&seed_insert("local.loc_test", 1, 10_000));
    // Stats are flushed lazily; wait for them to show the peer's commits.
    std::thread::sleep(std::time::Duration::from_millis(1200));
    let after = commits(&s);
    assert!(
        after - before < 50,
        "10,000 rows caused {} commits on the peer",
        after - before
    );
    assert_eq!(
        s.node("remote")
            .count("select count(*) from remote.rmt_test"),
        10_000
    );
}

#[test]
fn dry_runs_print_sql_with_passwords_masked_and_change_nothing() {
    let s = seed_setup(Layout::TwoClusters);
    let out = s.repctl_ok(&["init", "--dry-run"], 0);
    assert!(
        out.contains("-- ===== node local =====") && out.contains("-- ===== node remote ====="),
        "{out}"
    );
    assert!(
        out.contains("create user mapping") || out.contains("ensure_user_mapping"),
        "{out}"
    );
    assert!(
        !out.contains("LOCAL321") && !out.contains("REMOTE321"),
        "password in dry run:\n{out}"
    );
    assert!(out.contains("********"));
    assert_eq!(
        s.node("local")
            .count("select count(*) from pg_namespace where nspname = 'repctl'"),
        0
    );
    s.repctl_ok(&["init"], 0);
    let out = s.repctl_ok(
        &[
            "add-table",
            "local.loc_test",
            "--map",
            "remote=remote.rmt_test",
            "--dry-run",
        ],
        0,
    );
    assert!(
        out.contains(
            "create trigger \"repctl_capture_insert\" after insert on \"remote\".\"rmt_test\""
        ),
        "{out}"
    );
    assert_eq!(
        s.node("local").count("select count(*) from repctl.tables"),
        0
    );
    s.repctl_ok(
        &[
            "add-table",
            "local.loc_test",
            "--map",
            "remote=remote.rmt_test",
        ],
        0,
    );
    let out = s.repctl_ok(&["remove-table", "local.loc_test", "--dry-run"], 0);
    assert!(
        out.contains("drop trigger if exists \"repctl_capture_insert\" on \"local\".\"loc_test\""),
        "{out}"
    );
    assert_eq!(
        s.node("local").count("select count(*) from repctl.tables"),
        1
    );
}

/// Object identities and definitions init manages; a second init must leave them all as they were.
const FINGERPRINT: &str = "
    select string_agg(x, E'\\n' order by x) from (
      select format('server %s %s %s', oid, srvname, srvoptions) x from pg_foreign_server
      union all select format('mapping %s %s %s', umid, srvname, umoptions) from pg_user_mappings
      union all select format('rel %s %s %s', c.oid, c.relname, c.relacl) from pg_class c where relnamespace = 'repctl'::regnamespace
      union all select format('fn %s %s %s %s', p.oid, p.proname, md5(p.prosrc), p.proacl) from pg_proc p where pronamespace = 'repctl'::regnamespace
      union all select format('peer %s', p) from repctl.peer p
      union all select format('meta %s', m) from repctl.meta m
    ) f";

#[test]
fn init_is_idempotent() {
    let s = seed_setup(Layout::OneCluster);
    s.repctl_ok(&["init"], 0);
    let before: Vec<String> = s
        .nodes
        .iter()
        .map(|n| n.admin().query_one(FINGERPRINT, &[]).unwrap().get(0))
        .collect();
    s.repctl_ok(&["init"], 0);
    let after: Vec<String> = s
        .nodes
        .iter()
        .map(|n| n.admin().query_one(FINGERPRINT, &[]).unwrap().get(0))
        .collect();
    assert_eq!(before, after);
}

#[test]
fn url_dsns_work() {
    let mut s = Setup::pair(Layout::TwoClusters);
    for n in &s.nodes {
        n.exec(&format!("create table public.t {SEED_TABLE}"));
    }
    s.write_config(&[]);
    // Rewrite each dsn in URL form: postgresql://postgres@%2Fsocket%2Fdir:port/db
    let text = std::fs::read_to_string(&s.config).unwrap();
    let mut url_text = String::new();
    for line in text.lines() {
        if let Some(dsn) = line.strip_prefix("dsn = ") {
            let dsn: String = dsn.trim_matches('"').to_string();
            let kv: std::collections::HashMap<&str, &str> =
                dsn.split(' ').filter_map(|p| p.split_once('=')).collect();
            let host = kv["host"].replace('/', "%2F");
            url_text.push_str(&format!(
                "dsn = \"postgresql://postgres@{host}:{}/{}\"\n",
                kv["port"], kv["dbname"]
            ));
        } else {
            url_text.push_str(line);
            url_text.push('\n');
        }
    }
    std::fs::write(&s.config, url_text).unwrap();
    s.repctl_ok(&["init"], 0);
    s.repctl_ok(&["add-table", "public.t"], 0);
    s.node("local").exec(&seed_insert("public.t", 1, 100));
    s.assert_converged(&[("local", "public.t"), ("remote", "public.t")]);
}

#[test]
fn status_reports_nodes_tables_and_missing_objects() {
    let s = seed_setup(Layout::TwoClusters);
    s.replicate_seed_tables();
    let status: serde_json::Value =
        serde_json::from_str(&s.repctl_ok(&["status", "--json"], 0)).unwrap();
    assert_eq!(status["complete"], true);
    for n in status["nodes"].as_array().unwrap() {
        assert_eq!(n["reachable"], true);
        let node = s.node(n["node"].as_str().unwrap());
        let version: String = node
            .admin()
            .query_one("show server_version", &[])
            .unwrap()
            .get(0);
        assert_eq!(n["server_version"], version.as_str());
        assert_eq!(n["repctl_version"], env!("CARGO_PKG_VERSION"));
    }
    assert_eq!(status["tables"][0]["nodes"]["remote"], "remote.rmt_test");
    assert_eq!(status["tables"][0]["nodes"]["local"], "local.loc_test");
    s.node("remote")
        .exec("drop trigger repctl_capture_delete on remote.rmt_test");
    let status: serde_json::Value =
        serde_json::from_str(&s.repctl_ok(&["status", "--json"], 1)).unwrap();
    assert_eq!(status["complete"], false);
    assert_eq!(
        status["tables"][0]["missing"]["remote"][0],
        "trigger repctl_capture_delete"
    );
    // Re-rendering the table repairs it.
    s.repctl_ok(&["alter-table", "local.loc_test"], 0);
    s.repctl_ok(&["status"], 0);
    // A config naming another agent role than the one init installed.
    let text = std::fs::read_to_string(&s.config).unwrap();
    std::fs::write(&s.config, text.replace(&s.agent(), "other_agent")).unwrap();
    let out = s.repctl_ok(&["status", "--json"], 1);
    assert!(
        out.contains("agent role other_agent as owner of schema repctl (run repctl init)"),
        "{out}"
    );
}
