//! The rendered SQL of every template in every mode, as exact text: a change to generated SQL shows
//! up here for review (`cargo insta review`).

use std::collections::BTreeMap;
use std::path::Path;

use repctl::catalog::{Column, Table, TableName};
use repctl::catalog::{ConflictRule, History, Mode, OnApplyError, OnPeerFailure, Settings};
use repctl::config::Config;
use repctl::install::init::{NodeFacts, render_agent, render_init};
use repctl::install::table::{AddTable, logical_name, render_add, render_remove};

const CONFIG: &str = r#"
[nodes.local]
dsn = "host=/tmp/sock port=5441 dbname=local user=postgres"
peer_dsn = "host=10.1.2.3 port=5441 dbname=local user=local"
peer_password_env = "LOCAL_PW"
[nodes.remote]
dsn = "postgresql://postgres@%2Ftmp%2Fsock:5441/remote"
peer_dsn = "postgresql://remote@10.1.2.3:5441/remote?sslmode=require"
peer_password_env = "REMOTE_PW"
"#;

fn config() -> Config {
    Config::parse(CONFIG, Path::new("repctl.toml"), |v| {
        Some(format!("secret-{v}"))
    })
    .unwrap()
}

#[test]
fn init_masks_passwords_in_dry_run() {
    let c = config();
    let s = render_init(&c, &c.nodes[0], &NodeFacts::default()).unwrap();
    assert!(!s.sql.contains("secret-"), "password in the SQL text");
    let secret = s.secret.as_ref().unwrap();
    assert!(secret.value.contains("secret-REMOTE_PW") && !secret.masked.contains("secret-"));
    insta::assert_snapshot!("init_local_dry_run", s.sql);
}

/// A node's init runs the migrations past the schema version it records, and only those: a node
/// at this version renders as a new one does (but for what only a new table needs).
#[test]
fn init_migrates_only_past_the_recorded_schema_version() {
    let c = config();
    let render = |installed_schema| {
        let facts = NodeFacts {
            installed_schema,
            ..Default::default()
        };
        render_init(&c, &c.nodes[0], &facts).unwrap().sql
    };
    let storage = "alter table repctl.applied alter column seqs set storage external;\n";
    let (new, current, legacy) = (
        render(None),
        render(Some(repctl::db::SCHEMA_VERSION)),
        render(Some(0)),
    );
    let version_1 = render(Some(1));
    let version_2 = render(Some(2));
    assert!(new.contains(storage));
    assert_eq!(current, new.replacen(storage, "", 1));
    let header = format!(
        "-- From schema version 0 to {}.",
        repctl::db::SCHEMA_VERSION
    );
    // Each installed version renders the steps past it, and only those.
    let step_1 = [
        header.as_str(),
        "alter table repctl.tables add column if not exists conflict text",
        "drop function if exists repctl.hold(text, text[], jsonb[], jsonb[], boolean);",
        storage.trim_end_matches(";\n"),
    ];
    let step_2 = ["-- Version 2: repctl.apply passes"];
    let step_3 =
        ["drop function if exists repctl.table_apply(text, jsonb, boolean, text, jsonb, boolean);"];
    for (from, rendered) in [
        (0, &legacy),
        (1, &version_1),
        (2, &version_2),
        (3, &current),
    ] {
        for (version, steps) in [(1, &step_1[..]), (2, &step_2[..]), (3, &step_3[..])] {
            for step in steps {
                assert_eq!(
                    rendered.contains(step),
                    version > from,
                    "installed {from}, step {version}: {step}"
                );
            }
        }
    }
}

#[test]
fn init_with_dblink_already_installed() {
    let c = config();
    // A version whose dblink_connect needs repctl.peer_answers (see templates/node/init.sql).
    let facts = NodeFacts {
        dblink_schema: Some("public".into()),
        server_version_num: 180000,
        ..Default::default()
    };
    let s = render_init(&c, &c.nodes[1], &facts).unwrap();
    assert!(
        s.secret.as_ref().unwrap().value.contains("secret-LOCAL_PW"),
        "the real run carries the peer's password"
    );
    insta::assert_snapshot!("init_remote_dblink_in_public", s.sql);
}

#[test]
fn agent_role_both_ways() {
    let c = config();
    insta::assert_snapshot!("agent_default", render_agent(&c, &c.nodes[0]).unwrap().sql);
    let odd = Config::parse(
        &format!("agent_role = \"Rep\\\"Agent $fn$\"\nagent_superuser = true\n{CONFIG}"),
        Path::new("repctl.toml"),
        |v| Some(format!("secret-{v}")),
    )
    .unwrap();
    insta::assert_snapshot!(
        "agent_odd_name_superuser",
        render_agent(&odd, &odd.nodes[1]).unwrap().sql
    );
}

fn seed_table(schema: &str, table: &str) -> Table {
    let col = |name: &str, ty: &str| Column {
        name: name.into(),
        type_sql: ty.into(),
        identity_always: false,
    };
    Table {
        name: TableName {
            schema: schema.into(),
            table: table.into(),
        },
        columns: vec![
            col("pk1", "integer"),
            col("pk2", "text"),
            col("info", "text"),
            col("crt_time", "timestamp(0) without time zone"),
            col("mod_time", "timestamp(0) without time zone"),
        ],
        key: vec!["pk1".into(), "pk2".into()],
        owner: schema.into(),
        defaults: Default::default(),
    }
}

fn request(mode: Mode, where_clause: Option<&str>) -> AddTable {
    AddTable {
        name: TableName {
            schema: "local".into(),
            table: "loc_test".into(),
        },
        map: BTreeMap::from([(
            "remote".into(),
            TableName {
                schema: "remote".into(),
                table: "rmt_test".into(),
            },
        )]),
        columns: None,
        history: Default::default(),
        key: None,
        settings: Settings {
            where_clause: where_clause.map(str::to_string),
            mode,
            ..Default::default()
        },
    }
}

#[test]
fn add_table_sync_seed_mapping() {
    let req = request(Mode::Sync, None);
    let t = seed_table("remote", "rmt_test");
    let sql = render_add("remote", &logical_name(&req.name), &t, &t.columns, &req).unwrap();
    insta::assert_snapshot!("add_table_sync_remote", sql);
}

/// After alter-table --ddl renamed, dropped and added columns: images queued before are reshaped,
/// merged with this node's row, and a new row takes the added column's default.
#[test]
fn add_table_after_schema_changes() {
    let mut req = request(Mode::Sync, None);
    req.history = History {
        former: BTreeMap::from([
            ("old_info".into(), Some("info".into())),
            ("gone".into(), None),
        ]),
        added: vec!["mod_time".into()],
    };
    let mut t = seed_table("local", "loc_test");
    t.defaults.insert("mod_time".into(), "now()".into());
    let sql = render_add("local", &logical_name(&req.name), &t, &t.columns, &req).unwrap();
    insta::assert_snapshot!("add_table_after_schema_changes", sql);
}

#[test]
fn add_table_async_with_where() {
    let req = request(Mode::Async, Some("pk1 % 2 = 0"));
    let t = seed_table("local", "loc_test");
    let sql = render_add("local", &logical_name(&req.name), &t, &t.columns, &req).unwrap();
    insta::assert_snapshot!("add_table_async_where_local", sql);
}

#[test]
fn add_table_delta_last_write_wins() {
    let mut req = request(Mode::Async, None);
    req.settings.conflict = ConflictRule::LastWriteWins;
    req.settings.delta = vec!["info".into()];
    let mut t = seed_table("local", "loc_test");
    t.columns[2].type_sql = "numeric(12,2)".into();
    req.settings.delta = vec![t.columns[2].name.clone()];
    let sql = render_add("local", &logical_name(&req.name), &t, &t.columns, &req).unwrap();
    insta::assert_snapshot!("add_table_delta_lww_local", sql);
}

#[test]
fn add_table_delta_merge_columns() {
    let mut req = request(Mode::Sync, None);
    let mut t = seed_table("local", "loc_test");
    t.columns[2].type_sql = "bigint".into();
    req.settings.delta = vec![t.columns[2].name.clone()];
    req.settings.merge_columns = true;
    let sql = render_add("local", &logical_name(&req.name), &t, &t.columns, &req).unwrap();
    insta::assert_snapshot!("add_table_delta_merge_local", sql);
}

/// No key: an insert-only capture, before-statement triggers that refuse the rest, a plain insert.
#[test]
fn add_table_append_only() {
    let mut req = request(Mode::Sync, None);
    req.settings.append_only = true;
    req.settings.conflict = ConflictRule::Error;
    req.key = Some(vec![]);
    let mut t = seed_table("local", "loc_test");
    t.key.clear();
    let sql = render_add("local", &logical_name(&req.name), &t, &t.columns, &req).unwrap();
    insta::assert_snapshot!("add_table_append_only_local", sql);
}

#[test]
fn add_table_odd_names_key_only_identity() {
    // A key-only table with hostile names and an identity column: no update list, overriding system value.
    let t = Table {
        name: TableName {
            schema: "My \"Schema\"".into(),
            table: "a.b;drop".into(),
        },
        columns: vec![
            Column {
                name: "s".into(),
                type_sql: "bigint".into(),
                identity_always: true,
            },
            Column {
                name: "d".into(),
                type_sql: "text[]".into(),
                identity_always: false,
            },
        ],
        key: vec!["d".into(), "s".into()],
        owner: "Owner \"O\"".into(),
        defaults: Default::default(),
    };
    let mut req = request(Mode::Sync, None);
    req.name = t.name.clone();
    req.map = BTreeMap::new();
    req.settings.on_peer_failure = OnPeerFailure::Error;
    req.settings.on_apply_error = OnApplyError::Park;
    req.settings.conflict = ConflictRule::Error;
    let sql = render_add("n'1", &logical_name(&req.name), &t, &t.columns, &req).unwrap();
    insta::assert_snapshot!("add_table_odd_names", sql);
}

#[test]
fn remove_table() {
    let name = TableName {
        schema: "local".into(),
        table: "loc_test".into(),
    };
    let sql = render_remove("local", &logical_name(&name), &name, true).unwrap();
    insta::assert_snapshot!("remove_table_local", sql);
    let sql = render_remove("remote", &logical_name(&name), &name, false).unwrap();
    insta::assert_snapshot!("remove_table_dropped", sql);
}

#[test]
fn add_table_every_conflict_rule() {
    let t = seed_table("local", "loc_test");
    for (rule, column, priority) in [
        (ConflictRule::TargetWins, None, vec![]),
        (ConflictRule::LastWriteWins, Some("mod_time"), vec![]),
        (
            ConflictRule::NodePriority,
            None,
            vec!["remote".to_string(), "local".to_string()],
        ),
        (ConflictRule::Error, None, vec![]),
    ] {
        let mut req = request(Mode::Async, None);
        req.settings.conflict = rule;
        req.settings.conflict_column = column.map(str::to_string);
        req.settings.node_priority = priority;
        let sql = render_add("local", &logical_name(&req.name), &t, &t.columns, &req).unwrap();
        insta::assert_snapshot!(format!("add_table_conflict_{}", rule.as_str()), sql);
    }
}
