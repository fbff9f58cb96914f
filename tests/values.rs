//! Commit-only delivery, primary-key changes, awkward values and keys in any column position.

mod common;

use common::{Layout, Setup};

fn replicated(layout: Layout, ddl: &str, table: &str, extra: &[&str]) -> Setup {
    let s = Setup::pair(layout);
    for n in &s.nodes {
        n.exec(ddl);
    }
    s.repctl_ok(&["init"], 0);
    let mut args = vec!["add-table", table];
    args.extend_from_slice(extra);
    s.repctl_ok(&args, 0);
    s
}

const KV: &str = "create table public.kv (id int primary key, v text)";

#[test]
fn rolled_back_work_reaches_no_peer() {
    let s = replicated(Layout::TwoClusters, KV, "public.kv", &[]);
    let local = s.node("local");
    let mut c = local.admin();
    // A plain rollback.
    c.batch_execute("begin; insert into kv values (1, 'rolled back'); rollback")
        .unwrap();
    // A failing statement aborts the whole transaction.
    assert!(
        c.batch_execute(
            "begin; insert into kv values (2, 'x'); insert into kv values (2, 'dup'); commit"
        )
        .is_err()
    );
    c.batch_execute("rollback").unwrap();
    // A savepoint rolled back inside a committed transaction: only the kept part travels.
    c.batch_execute("begin; insert into kv values (3, 'kept'); savepoint s; insert into kv values (4, 'undone'); rollback to s; commit")
        .unwrap();
    // A deferred constraint that fails at commit.
    local.exec("alter table kv add constraint v_unique unique (v) deferrable initially deferred");
    s.node("remote")
        .exec("alter table kv add constraint v_unique unique (v) deferrable initially deferred");
    assert!(
        c.batch_execute("begin; insert into kv values (5, 'kept'); commit")
            .is_err()
    );
    let remote = s.node("remote");
    assert_eq!(remote.count("select count(*) from kv"), 1);
    assert_eq!(
        remote.count("select count(*) from kv where id = 3 and v = 'kept'"),
        1
    );
    for n in &s.nodes {
        assert_eq!(n.count("select count(*) from repctl.queue"), 0);
    }
    s.assert_converged(&[("local", "kv"), ("remote", "kv")]);
}

#[test]
fn primary_key_updates_including_swaps_and_shifts() {
    let s = replicated(Layout::OneCluster, KV, "public.kv", &[]);
    let local = s.node("local");
    local.exec("insert into kv select g, 'v' || g from generate_series(1, 100) g");
    local.exec("update kv set id = id + 1000");
    local.exec("update kv set id = id - 999");
    local.exec("begin; update kv set id = -2 where id = 2; update kv set id = 2 where id = 3; update kv set id = 3 where id = -2; commit");
    local.exec("update kv set id = -id, v = v || '!' where id % 7 = 0");
    s.node("remote")
        .exec("update kv set id = 1000 where id = 50");
    s.assert_converged(&[("local", "kv"), ("remote", "kv")]);
    assert_eq!(local.count("select count(*) from kv where id = 1000"), 1);
}

/// Every awkward value the seed's string concatenation breaks on, in a key made of non-leading columns.
const AWKWARD: &str = r#"
    create type mood as enum ('ok', 'it''s, {odd}');
    create table public."Odd ""Table"", Name" (
      "Info, Text" text,
      b bytea,
      arr text[],
      j json,
      jb jsonb,
      ts timestamptz,
      n numeric,
      f float8,
      iv interval,
      m mood,
      r int4range,
      "Key 2" text,
      "select" int,
      primary key ("select", "Key 2")
    )"#;

const AWKWARD_ROWS: &str = r#"
    insert into "Odd ""Table"", Name" values
      ('a,b', '\x00ff5c27', array['x,y', '{z}', 'q"uote', 'back\slash', NULL, 'NULL'], '{"k": [1, "x"],  "spaced": true}',
       '{"a": "é"}', '2024-02-29 12:34:56.789+05:30', 1.50000, 0.1, '1 year 2 mons 3 days 04:05:06.5', 'it''s, {odd}', '[1,5)',
       'k,1', 1),
      (NULL, NULL, NULL, NULL, NULL, NULL, NULL, NULL, NULL, NULL, NULL, '{brace}', 2),
      ('NULL', '', '{}', 'null', '[]', 'infinity', 'NaN', 'NaN', '-00:00:01', 'ok', 'empty', E'back\\slash ''quote''', 3),
      ('日本語 ünïcødé 🙂', '\x', '{"{}"}', '"str"', '"str"', '-infinity', 123456789012345678901234567890.123456789, '-Infinity', '0', 'ok', '(,)', '''', 4),
      (E'tab\there\nnewline', '\x5c', '{"a\\b"}', '1e400', '1e2', '1970-01-01 00:00:00+00', -0.0, 1e-300, '1 mon', 'ok', '[-5,-3]', '"', 5)"#;

#[test]
fn awkward_values_and_names_survive_in_both_layouts() {
    for layout in [Layout::OneCluster, Layout::TwoClusters] {
        let ddl = AWKWARD;
        let s = replicated(layout, ddl, r#""Odd ""Table"", Name""#, &[]);
        let local = s.node("local");
        // The writer's session settings differ from the peer's: text forms must not leak into values.
        s.node("remote").exec(&format!(
            "alter database {} set timezone = 'Asia/Tokyo'",
            s.node("remote").db
        ));
        let mut c = local.admin();
        c.batch_execute("set timezone = 'America/New_York'; set datestyle = 'SQL, DMY'; set extra_float_digits = 0; set bytea_output = 'escape'; set intervalstyle = 'sql_standard'").unwrap();
        c.batch_execute(AWKWARD_ROWS).unwrap();
        c.batch_execute(r#"update "Odd ""Table"", Name" set "Key 2" = "Key 2" || ',moved', ts = ts + interval '1 second' where "select" in (1, 3)"#).unwrap();
        let t = r#""Odd ""Table"", Name""#;
        s.assert_converged(&[("local", t), ("remote", t)]);
        // Compare values, not just hashes, under one set of settings.
        let dump = |n: &common::Node| -> Vec<String> {
            let mut c = n.admin();
            c.batch_execute("set timezone = 'UTC'; set extra_float_digits = 3")
                .unwrap();
            c.query(
                &format!("select t::text from {t} t order by \"select\""),
                &[],
            )
            .unwrap()
            .iter()
            .map(|r| r.get(0))
            .collect()
        };
        assert_eq!(dump(local), dump(s.node("remote")));
        assert_eq!(dump(local).len(), 5);
        // And back: a delete from the other side.
        s.node("remote")
            .exec(&format!("delete from {t} where \"select\" = 2"));
        s.assert_converged(&[("local", t), ("remote", t)]);
        assert_eq!(local.count(&format!("select count(*) from {t}")), 4);
    }
}

#[test]
fn subset_of_columns_and_rows() {
    let ddl =
        "create table public.acct (id int primary key, region text, balance numeric, secret text)";
    let s = replicated(
        Layout::OneCluster,
        ddl,
        "public.acct",
        &["--columns", "id,region,balance", "--where", "region = 'eu'"],
    );
    let local = s.node("local");
    local.exec(
        "insert into acct values (1, 'eu', 10, 's1'), (2, 'us', 20, 's2'), (3, 'eu', 30, 's3')",
    );
    let remote = s.node("remote");
    assert_eq!(remote.count("select count(*) from acct"), 2);
    assert_eq!(
        remote.count("select count(*) from acct where secret is not null"),
        0
    );
    // A row leaving the filter is deleted on the peer; one entering it arrives.
    local.exec(
        "update acct set region = 'us' where id = 1; update acct set region = 'eu' where id = 2",
    );
    assert_eq!(
        remote.count("select count(*) from acct where id = 2 and balance = 20"),
        1
    );
    assert_eq!(remote.count("select count(*) from acct where id = 1"), 0);
    // Changing only a column that is not replicated sends nothing.
    local.exec("update acct set secret = 'changed'");
    assert_eq!(local.count("select count(*) from repctl.queue"), 0);
    // A peer-only row outside the filter survives a truncate on the origin.
    remote.exec("insert into acct values (9, 'us', 0, null)");
    local.exec("truncate acct");
    assert_eq!(remote.count("select count(*) from acct"), 1);
    s.repctl_ok(&["verify"], 0);
}

/// verify compares values by their text forms, whichever way it hashes them: a column without a
/// hash opclass (json, point) by its text form, and numeric or float too (1.0 and 1.00 differ, as
/// they do in `verify --rows` and the row images). A value moved between rows is a difference.
#[test]
fn verify_sees_text_differences_in_every_column() {
    let ddl = "create domain positive as int8 check (value > 0);
               create table public.shapes (id int primary key, j json, p point, n numeric, f float8,
               ts timestamptz, d date, b bool, t text, v varchar(10), u uuid, tm time, tz timetz,
               small int2, pos positive)";
    let s = replicated(Layout::OneCluster, ddl, "public.shapes", &[]);
    s.node("local").exec(
        r#"insert into shapes values
             (1, '{"a": 1}', '(1,2)', 1.0, 0, '2024-01-01 00:00+00', '2024-01-01', true, 'x', 'v',
              gen_random_uuid(), '12:00', '12:00+02', 7, 8),
             (2, '[]', '(0,0)', 2, 1.5, null, null, null, null, null, null, null, null, null, null)"#,
    );
    let out = s.repctl_ok(&["verify", "--json"], 0);
    let v: serde_json::Value = serde_json::from_str(&out).unwrap();
    assert_eq!(v["tables"][0]["mode"], "hash", "{out}");
    // Changed on remote alone: the flag the apply sets keeps the change from replicating back.
    let on_remote = |sql: &str| {
        s.node("remote").exec(&format!(
            "begin; select set_config('repctl.applying', 'on', true); {sql}; commit"
        ))
    };
    for (change, undo) in [
        (r#"j = '{"a":1}'"#, r#"j = '{"a": 1}'"#),
        ("p = '(1,3)'", "p = '(1,2)'"),
        ("n = 1.00", "n = 1.0"),
        ("f = '-0'", "f = 0"),
        (
            "ts = ts + interval '1 microsecond'",
            "ts = '2024-01-01 00:00+00'",
        ),
        ("d = null", "d = '2024-01-01'"),
        ("b = false", "b = true"),
        ("t = 'X'", "t = 'x'"),
        ("v = 'v '", "v = 'v'"),
        ("tz = '13:00+03'", "tz = '12:00+02'"),
        ("pos = 9", "pos = 8"),
    ] {
        on_remote(&format!("update shapes set {change} where id = 1"));
        s.repctl_ok(&["verify", "public.shapes"], 1);
        on_remote(&format!("update shapes set {undo} where id = 1"));
        s.repctl_ok(&["verify", "public.shapes"], 0);
    }
    on_remote("update shapes set n = 1.00 where id = 1");
    let rows = s.repctl_ok(&["verify", "--rows", "--json"], 1);
    assert!(rows.contains(r#""differs""#), "{rows}");
    on_remote("update shapes set n = 1.0 where id = 1");
    // Two rows swapping values: every column's total is unchanged, each row's hash is not.
    on_remote(
        "update shapes set n = case id when 1 then 2 else 1.0 end, p = case id when 1 then '(0,0)'::point else '(1,2)' end",
    );
    s.repctl_ok(&["verify", "public.shapes"], 1);
}
