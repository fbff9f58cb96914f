//! The rendered SQL of verify, verify --rows, repair, the initial copy and drain's batch read, as
//! exact text, for a table with awkward names, a two-column key and a `--where` condition (`cargo
//! insta review` on change).

use repctl::catalog::{Column, TableName};
use repctl::install::copy::render_copy;
use repctl::ops::diff::side::{Slots, TableOn, render_query};
use repctl::ops::repair::{Fix, render_begin, render_statement};
use repctl::ops::verify::{self, Checksum, ColumnHash, Described, Mode};
use serde_json::{Map, Value};

fn table() -> TableOn {
    let col = |name: &str, ty: &str| Column {
        name: name.into(),
        type_sql: ty.into(),
        identity_always: false,
    };
    TableOn {
        logical: "My Schema.Odd, Name".into(),
        name: TableName {
            schema: "My Schema".into(),
            table: "Odd, Name".into(),
        },
        columns: vec![
            col("k 1", "integer"),
            col("K\"2", "text"),
            col("v", "timestamp(0) without time zone"),
            col("repctl_hash", "bytea"),
        ],
        key: vec![col("k 1", "integer"), col("K\"2", "text")],
        where_clause: Some("\"k 1\" > 0".into()),
        checksum: Checksum {
            mode: Mode::Hash,
            columns: hashed_columns(),
        },
    }
}

/// The table's columns as hash mode hashes them: by their hash function, through a record, as text.
fn hashed_columns() -> Vec<ColumnHash> {
    let column = |name: &str, nullable: bool, how: &str, func: Option<&str>| ColumnHash {
        name: name.into(),
        nullable,
        how: how.into(),
        schema: func.map(|_| "pg_catalog".into()),
        func: func.map(Into::into),
    };
    vec![
        column("k 1", false, "direct", Some("hashint4extended")),
        column("K\"2", false, "direct", Some("hashtextextended")),
        column("v", true, "record", Some("timestamp_hash_extended")),
        column("repctl_hash", true, "text", None),
    ]
}

#[test]
fn diff_queries() {
    let t = table();
    let mut all = String::new();
    for (query, slots) in [
        (
            "bounds",
            Slots {
                lo: Some(1),
                hi: Some(2),
                limit: Some(3),
                step: Some(4),
            },
        ),
        (
            "range_rows",
            Slots {
                lo: Some(1),
                ..Slots::default()
            },
        ),
        ("range_sum", Slots::default()),
        ("blocks_sum", Slots::default()),
        ("recheck", Slots::default()),
        ("images", Slots::default()),
        ("queued", Slots::default()),
    ] {
        all.push_str(&format!("-- ===== {query}\n"));
        all.push_str(&render_query(&t, query, &slots).unwrap());
    }
    insta::assert_snapshot!("diff_queries", all);
}

#[test]
fn verify_queries() {
    let t = table();
    let node = Described {
        table: repctl::catalog::Replicated {
            logical: t.logical.clone(),
            local: t.name.clone(),
            columns: t.column_names(),
            key: t.key.iter().map(|c| c.name.clone()).collect(),
            history: Default::default(),
            table_columns: None,
            settings: repctl::catalog::Settings {
                where_clause: t.where_clause.clone(),
                ..Default::default()
            },
        },
        version: 150000,
        columns: hashed_columns(),
    };
    let (mode, agreed) = verify::agree([&node]);
    assert_eq!(mode, Mode::Hash);
    let mut all = verify::checksum_sql(&node.table, &node.checksum(Mode::Text, &[])).unwrap();
    all.push_str(&verify::checksum_sql(&node.table, &node.checksum(mode, &agreed)).unwrap());
    insta::assert_snapshot!("verify_queries", all);
}

fn image(pairs: &[(&str, Option<&str>)]) -> Map<String, Value> {
    pairs
        .iter()
        .map(|(k, v)| (k.to_string(), v.map_or(Value::Null, |v| v.into())))
        .collect()
}

#[test]
fn repair_statements() {
    let t = table();
    let row = image(&[
        ("k 1", Some("7")),
        ("K\"2", Some("it's \\ odd")),
        ("v", Some("2020-01-01 00:00:00")),
        ("repctl_hash", None),
    ]);
    let key = image(&[("k 1", Some("8")), ("K\"2", Some("x"))]);
    let mut all = render_begin("remote", &t.logical, "local").unwrap();
    all.push_str(
        &render_statement(&t, Fix::Delete, &[(key, -5)])
            .unwrap()
            .unwrap(),
    );
    all.push_str(
        &render_statement(&t, Fix::Update, &[(row.clone(), 42)])
            .unwrap()
            .unwrap(),
    );
    all.push_str(
        &render_statement(&t, Fix::Insert, &[(row, 0)])
            .unwrap()
            .unwrap(),
    );
    assert!(render_statement(&t, Fix::Insert, &[]).unwrap().is_none());
    insta::assert_snapshot!("repair_statements", all);
}

#[test]
fn copy_statements() {
    let t = table();
    let columns = t.column_names();
    let mut all = String::new();
    for query in ["has_rows", "count", "lock", "empty", "copy_out", "copy_in"] {
        all.push_str(&render_copy(query, &t.name, &columns, t.where_clause.as_deref()).unwrap());
    }
    all.push_str(&render_copy("empty", &t.name, &columns, None).unwrap());
    insta::assert_snapshot!("copy_statements", all);
}
