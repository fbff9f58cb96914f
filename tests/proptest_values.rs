//! Any value survives replication: random rows of many types (text with any character but NUL,
//! bytea, numeric with extreme scales and NaN/±Infinity, float8 with NaN/±Infinity/-0, arrays with
//! NULL elements and odd bounds, json/jsonb, ranges, an enum, domains, timestamptz, interval, NULLs)
//! are written on one node, in sync and async mode, and the peer ends with exactly the same values,
//! compared as `t::text` row by row under pinned settings.
//!
//! float8 `-0`: its text form is `-0` (and `0` only with extra_float_digits < 1, which repctl never
//! uses), so `-0` arrives as `-0`, and an update from `0` to `-0` (equal in SQL) is still a change
//! that travels; see `negative_zero_is_kept`.

mod common;

use std::sync::atomic::{AtomicI64, Ordering};

use common::{Layout, Node, Setup};
use postgres::types::ToSql;
use proptest::prelude::*;
use proptest::test_runner::{Config, TestRunner};
use serde_json::Value as Json;

const TYPES: &str = r#"
    create type mood as enum ('ok', 'it''s, {odd}', 'NULL', 'Ünï 🙂', ' ', 'back\slash "q"');
    create domain posint as int check (value > 0);
    create domain dtext as text check (value <> 'forbidden')"#;

const COLUMNS: &str = "(
    id int8 primary key,
    t text, b bytea, n numeric, f float8, ta text[], ia int[], j json, jb jsonb,
    r int4range, tr tsrange, m mood, d posint, dt dtext, ts timestamptz, iv interval
  )";

const MOODS: [&str; 6] = [
    "ok",
    "it's, {odd}",
    "NULL",
    "Ünï 🙂",
    " ",
    "back\\slash \"q\"",
];

/// The settings that shape text forms, pinned for the comparison.
const PINNED: &str = "set timezone = 'UTC'; set extra_float_digits = 3; set datestyle = 'ISO, YMD';
                      set intervalstyle = 'postgres'; set bytea_output = 'hex'";

/// The writer's session disagrees with the pinned settings on every one of them.
const WRITER: &str = "set timezone = 'Pacific/Chatham'; set extra_float_digits = -15;
                      set datestyle = 'SQL, DMY'; set intervalstyle = 'iso_8601'; set bytea_output = 'escape'";

/// A timestamp bound: -infinity < a value (microseconds from 2000-01-01) < infinity.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
enum Ts {
    NegInf,
    At(i64),
    PosInf,
}

#[derive(Debug, Clone)]
struct Row {
    t: Option<String>,
    b: Option<Vec<u8>>,
    n: Option<String>,
    f: Option<f64>,
    ta: Option<Vec<Option<String>>>,
    ia: Option<String>,
    j: Option<String>,
    jb: Option<String>,
    /// Bounds (None: unbounded) and the bound kinds.
    r: Option<(Option<i32>, Option<i32>, &'static str)>,
    tr: Option<(Option<Ts>, Option<Ts>, &'static str)>,
    m: Option<&'static str>,
    d: Option<i32>,
    dt: Option<String>,
    ts: Option<String>,
    iv: Option<String>,
}

/// Any text PostgreSQL can store: every character but NUL.
fn text() -> impl Strategy<Value = String> {
    let ch = prop_oneof![
        4 => any::<char>().prop_filter("no NUL", |c| *c != '\0'),
        1 => prop::sample::select(vec!['\'', '"', '\\', ',', '{', '}', '(', ')', '$', ';', '\n', '\t', ' ', 'N']),
    ];
    prop::collection::vec(ch, 0..12).prop_map(|v| v.into_iter().collect())
}

fn digits(n: std::ops::Range<usize>) -> impl Strategy<Value = String> {
    prop::collection::vec(0u8..10, n).prop_map(|v| v.iter().map(|d| char::from(b'0' + d)).collect())
}

fn numeric() -> impl Strategy<Value = String> {
    prop_oneof![
        1 => prop::sample::select(vec!["NaN", "Infinity", "-Infinity", "-0", "0.000", "-0.0e-1000"]).prop_map(str::to_string),
        // Plain decimals; trailing zeros are part of the value's scale.
        4 => (any::<bool>(), digits(1..40), prop::option::of(digits(0..40)))
            .prop_map(|(neg, i, f)| format!("{}{i}{}", if neg { "-" } else { "" }, f.map(|f| format!(".{f}")).unwrap_or_default())),
        // Scientific notation at the exponent limits.
        2 => (any::<bool>(), digits(1..20), -1000i32..=1000)
            .prop_map(|(neg, m, e)| format!("{}{}.{}e{e}", if neg { "-" } else { "" }, &m[..1], &m[1..])),
        // The largest display scale, and a long integer part.
        1 => (0usize..16370, digits(1..10)).prop_map(|(zeros, d)| format!("0.{}{d}", "0".repeat(zeros))),
        1 => digits(1..1000).prop_map(|d| format!("9{d}")),
    ]
}

fn float() -> impl Strategy<Value = f64> {
    prop_oneof![
        4 => any::<f64>(),
        1 => prop::sample::select(vec![f64::NAN, f64::INFINITY, f64::NEG_INFINITY, -0.0, 0.0, f64::MIN_POSITIVE, 5e-324, f64::MAX, 0.1]),
    ]
}

/// int[] as text: one-dimensional with NULLs, with other lower bounds, or two-dimensional.
fn int_array() -> impl Strategy<Value = String> {
    let elems = prop::collection::vec(prop::option::of(any::<i32>()), 0..6);
    let list = |v: &[Option<i32>]| {
        v.iter()
            .map(|e| e.map_or("NULL".to_string(), |i| i.to_string()))
            .collect::<Vec<_>>()
            .join(",")
    };
    prop_oneof![
        3 => elems.clone().prop_map(move |v| format!("{{{}}}", list(&v))),
        1 => (elems.clone().prop_filter("not empty", |v| !v.is_empty()), -5i32..5)
            .prop_map(move |(v, lb)| format!("[{lb}:{}]={{{}}}", lb + v.len() as i32 - 1, list(&v))),
        1 => (any::<[i32; 4]>()).prop_map(|a| format!("{{{{{},{}}},{{{},{}}}}}", a[0], a[1], a[2], a[3])),
    ]
}

fn json_value() -> impl Strategy<Value = Json> {
    let leaf = prop_oneof![
        Just(Json::Null),
        any::<bool>().prop_map(Json::Bool),
        any::<i64>().prop_map(Json::from),
        any::<f64>()
            .prop_filter("finite", |f| f.is_finite())
            .prop_map(Json::from),
        text().prop_map(Json::String),
    ];
    leaf.prop_recursive(3, 16, 4, |inner| {
        prop_oneof![
            prop::collection::vec(inner.clone(), 0..4).prop_map(Json::Array),
            prop::collection::vec((text(), inner), 0..4)
                .prop_map(|kv| Json::Object(kv.into_iter().collect())),
        ]
    })
}

/// json keeps its text as written: whitespace, key order, duplicate keys, escapes.
fn json_text() -> impl Strategy<Value = String> {
    prop_oneof![
        3 => json_value().prop_map(|v| v.to_string()),
        1 => json_value().prop_map(|v| serde_json::to_string_pretty(&v).unwrap()),
        1 => prop::sample::select(vec![
            r#"{"a": 1, "a": 2}"#,
            "  [1 ,2 ]  ",
            r#""\u0000 and \ud83d\ude00""#,
            "1e400",
            "-0",
            r#"{"k": "NULL", "": null}"#,
        ]).prop_map(str::to_string),
    ]
}

fn jsonb_text() -> impl Strategy<Value = String> {
    prop_oneof![
        4 => json_value().prop_map(|v| v.to_string()),
        1 => prop::sample::select(vec![
            "1e400",
            "-0.000",
            "123456789012345678901234567890.123456789012345678901234567890",
            r#"{"b": 1, "a": [true, null, "\ud83d\ude00\n"]}"#,
        ]).prop_map(str::to_string),
    ]
}

fn int_range() -> impl Strategy<Value = (Option<i32>, Option<i32>, &'static str)> {
    (
        prop::option::of(any::<i32>()),
        prop::option::of(any::<i32>()),
        prop::sample::select(vec!["[)", "[]", "()", "(]"]),
    )
        .prop_map(|(a, b, k)| match (a, b) {
            (Some(a), Some(b)) => (Some(a.min(b)), Some(a.max(b)), k),
            _ => (a, b, k),
        })
}

fn ts_bound() -> impl Strategy<Value = Ts> {
    prop_oneof![
        1 => Just(Ts::NegInf),
        1 => Just(Ts::PosInf),
        // 4000 BC .. 9999 AD, to the microsecond.
        6 => (-188_000_000_000_000_000i64..252_000_000_000_000_000).prop_map(Ts::At),
    ]
}

fn ts_range() -> impl Strategy<Value = (Option<Ts>, Option<Ts>, &'static str)> {
    (
        prop::option::of(ts_bound()),
        prop::option::of(ts_bound()),
        prop::sample::select(vec!["[)", "[]", "()", "(]"]),
    )
        .prop_map(|(a, b, k)| match (a, b) {
            (Some(a), Some(b)) => (Some(a.min(b)), Some(a.max(b)), k),
            _ => (a, b, k),
        })
}

/// timestamptz as text with a UTC offset, BC years, fractions, and the infinities.
fn timestamptz() -> impl Strategy<Value = String> {
    prop_oneof![
        1 => prop::sample::select(vec!["infinity", "-infinity"]).prop_map(str::to_string),
        8 => (1u32..=9999, 1u32..=12, 1u32..=28, 0u32..24, 0u32..60, 0u32..60, 0u32..1_000_000, -14i32..=14, 0u32..60, prop::bool::weighted(0.2))
            .prop_map(|(y, mo, d, h, mi, s, us, oh, om, bc)| {
                let y = if bc { y.min(4000) } else { y };
                format!("{y:04}-{mo:02}-{d:02} {h:02}:{mi:02}:{s:02}.{us:06}{}{:02}:{om:02}{}",
                    if oh < 0 { '-' } else { '+' }, oh.abs(), if bc { " BC" } else { "" })
            }),
    ]
}

fn interval() -> impl Strategy<Value = String> {
    (
        -100_000i32..100_000,
        -1_000_000i32..1_000_000,
        -100_000_000_000_000i64..100_000_000_000_000,
    )
        .prop_map(|(m, d, us)| format!("{m} mons {d} days {us} microseconds"))
}

fn row() -> impl Strategy<Value = Row> {
    use prop::option::of;
    (
        (
            of(text()),
            of(prop::collection::vec(any::<u8>(), 0..24)),
            of(numeric()),
            of(float()),
            of(prop::collection::vec(of(text()), 0..5)),
            of(int_array()),
            of(json_text()),
            of(jsonb_text()),
        ),
        (
            of(int_range()),
            of(ts_range()),
            of(prop::sample::select(MOODS.to_vec())),
            of(1..=i32::MAX),
            of(text().prop_filter("domain check", |t| t != "forbidden")),
            of(timestamptz()),
            of(interval()),
        ),
    )
        .prop_map(
            |((t, b, n, f, ta, ia, j, jb), (r, tr, m, d, dt, ts, iv))| Row {
                t,
                b,
                n,
                f,
                ta,
                ia,
                j,
                jb,
                r,
                tr,
                m,
                d,
                dt,
                ts,
                iv,
            },
        )
}

/// SQL for a timestamp bound in parameters $k (kind) and $k+1 (microseconds).
fn ts_sql(k: usize) -> String {
    format!(
        "case ${k}::text when 'v' then timestamp '2000-01-01' + ${}::int8 * interval '1 microsecond'
                         when '-' then timestamp '-infinity' when '+' then timestamp 'infinity' end",
        k + 1
    )
}

/// The column values of `row` as SQL expressions over bind parameters from $2 on, and the
/// parameters; every value travels as a parameter and is cast in SQL.
fn values(row: &Row) -> (Vec<String>, Vec<Box<dyn ToSql + Sync>>) {
    let mut p: Vec<Box<dyn ToSql + Sync>> = Vec::new();
    let next = |v: Box<dyn ToSql + Sync>, p: &mut Vec<Box<dyn ToSql + Sync>>| {
        p.push(v);
        p.len() + 1
    };
    let mut e = Vec::new();
    let i = next(Box::new(row.t.clone()), &mut p);
    e.push(format!("${i}::text"));
    let i = next(Box::new(row.b.clone()), &mut p);
    e.push(format!("${i}::bytea"));
    let i = next(Box::new(row.n.clone()), &mut p);
    e.push(format!("${i}::text::numeric"));
    let i = next(Box::new(row.f), &mut p);
    e.push(format!("${i}::float8"));
    let i = next(Box::new(row.ta.clone()), &mut p);
    e.push(format!("${i}::text[]"));
    let i = next(Box::new(row.ia.clone()), &mut p);
    e.push(format!("${i}::text::int[]"));
    let i = next(Box::new(row.j.clone()), &mut p);
    e.push(format!("${i}::text::json"));
    let i = next(Box::new(row.jb.clone()), &mut p);
    e.push(format!("${i}::text::jsonb"));
    let (has, lo, hi, k) = match row.r {
        Some((lo, hi, k)) => (true, lo, hi, k),
        None => (false, None, None, "[)"),
    };
    let a = next(Box::new(has), &mut p);
    let b = next(Box::new(lo), &mut p);
    let c = next(Box::new(hi), &mut p);
    let d = next(Box::new(k.to_string()), &mut p);
    e.push(format!(
        "case when ${a}::bool then int4range(${b}::int4, ${c}::int4, ${d}::text) end"
    ));
    let (has, lo, hi, k) = match row.tr {
        Some((lo, hi, k)) => (true, lo, hi, k),
        None => (false, None, None, "[)"),
    };
    let split = |t: Option<Ts>| match t {
        None => (None, None),
        Some(Ts::NegInf) => (Some("-".to_string()), None),
        Some(Ts::PosInf) => (Some("+".to_string()), None),
        Some(Ts::At(us)) => (Some("v".to_string()), Some(us)),
    };
    let a = next(Box::new(has), &mut p);
    let (lk, lu) = split(lo);
    let lo_k = next(Box::new(lk), &mut p);
    next(Box::new(lu), &mut p);
    let (hk, hu) = split(hi);
    let hi_k = next(Box::new(hk), &mut p);
    next(Box::new(hu), &mut p);
    let d = next(Box::new(k.to_string()), &mut p);
    e.push(format!(
        "case when ${a}::bool then tsrange({}, {}, ${d}::text) end",
        ts_sql(lo_k),
        ts_sql(hi_k)
    ));
    let i = next(Box::new(row.m.map(str::to_string)), &mut p);
    e.push(format!("${i}::text::mood"));
    let i = next(Box::new(row.d), &mut p);
    e.push(format!("${i}::int4::posint"));
    let i = next(Box::new(row.dt.clone()), &mut p);
    e.push(format!("${i}::text::dtext"));
    let i = next(Box::new(row.ts.clone()), &mut p);
    e.push(format!("${i}::text::timestamptz"));
    let i = next(Box::new(row.iv.clone()), &mut p);
    e.push(format!("${i}::text::interval"));
    (e, p)
}

const NAMES: &str = "t, b, n, f, ta, ia, j, jb, r, tr, m, d, dt, ts, iv";

fn insert(c: &mut postgres::Transaction<'_>, table: &str, id: i64, row: &Row) {
    let (exprs, params) = values(row);
    let sql = format!(
        "insert into {table} (id, {NAMES}) values ($1, {})",
        exprs.join(", ")
    );
    let mut all: Vec<&(dyn ToSql + Sync)> = vec![&id];
    all.extend(params.iter().map(|p| p.as_ref()));
    c.execute(&sql, &all)
        .unwrap_or_else(|e| panic!("{sql}: {e:?}\n{row:?}"));
}

fn update(c: &mut postgres::Transaction<'_>, table: &str, id: i64, row: &Row) {
    let (exprs, params) = values(row);
    let sql = format!(
        "update {table} set ({NAMES}) = (select {}) where id = $1",
        exprs.join(", ")
    );
    let mut all: Vec<&(dyn ToSql + Sync)> = vec![&id];
    all.extend(params.iter().map(|p| p.as_ref()));
    c.execute(&sql, &all)
        .unwrap_or_else(|e| panic!("{sql}: {e:?}\n{row:?}"));
}

fn dump(n: &Node, table: &str) -> Vec<String> {
    let mut c = n.admin();
    c.batch_execute(PINNED).unwrap();
    c.query(&format!("select x::text from {table} x order by id"), &[])
        .unwrap()
        .iter()
        .map(|r| r.get(0))
        .collect()
}

/// Two clusters with the value types, and the tables `(name, add-table options)` of COLUMNS,
/// replicated.
fn value_tables(tables: &[(&str, &[&str])]) -> Setup {
    let s = Setup::pair(Layout::TwoClusters);
    for n in &s.nodes {
        n.exec(TYPES);
        for (table, _) in tables {
            n.exec(&format!("create table {table} {COLUMNS}"));
        }
    }
    s.repctl_ok(&["init"], 0);
    for (table, options) in tables {
        s.repctl_ok(&[&["add-table", table], *options].concat(), 0);
    }
    s
}

/// `cases` cases, shrunk a little, nothing persisted (the clusters are gone after the run).
fn runner(cases: u32) -> TestRunner {
    TestRunner::new(Config {
        cases,
        max_shrink_iters: 64,
        failure_persistence: None,
        ..Config::default()
    })
}

#[test]
fn any_value_arrives_unchanged_in_both_modes() {
    let s = value_tables(&[
        ("public.vals_sync", &[]),
        ("public.vals_async", &["--mode", "async"]),
    ]);
    let ids = AtomicI64::new(1);
    let mut runner = runner(24);
    let case = (
        any::<bool>(),
        prop::collection::vec(row(), 1..6),
        row(),
        any::<bool>(),
    );
    runner
        .run(&case, |(from_remote, rows, changed, delete_one)| {
            let (writer, peer) = if from_remote {
                (s.node("remote"), s.node("local"))
            } else {
                (s.node("local"), s.node("remote"))
            };
            let first = ids.fetch_add(rows.len() as i64, Ordering::SeqCst);
            let mut c = writer.admin();
            c.batch_execute(WRITER).unwrap();
            for table in ["public.vals_sync", "public.vals_async"] {
                // A batch of rows in one transaction, then an update and a delete in another.
                let mut tx = c.transaction().unwrap();
                for (i, row) in rows.iter().enumerate() {
                    insert(&mut tx, table, first + i as i64, row);
                }
                tx.commit().unwrap();
                let mut tx = c.transaction().unwrap();
                update(&mut tx, table, first, &changed);
                if delete_one && rows.len() > 1 {
                    tx.execute(
                        &format!("delete from {table} where id = $1"),
                        &[&(first + rows.len() as i64 - 1)],
                    )
                    .unwrap();
                }
                tx.commit().unwrap();
            }
            // Sync: there at commit. Async: there after a drain.
            prop_assert_eq!(
                dump(writer, "public.vals_sync"),
                dump(peer, "public.vals_sync")
            );
            prop_assert!(
                writer.count("select count(*) from repctl.queue where tbl = 'public.vals_async'")
                    > 0
            );
            s.repctl_ok(&["drain"], 0);
            prop_assert_eq!(
                dump(writer, "public.vals_async"),
                dump(peer, "public.vals_async")
            );
            prop_assert_eq!(
                dump(writer, "public.vals_sync"),
                dump(writer, "public.vals_async")
            );
            s.repctl_ok(&["verify"], 0);
            Ok(())
        })
        .unwrap();
}

/// A batch of inserts goes to the peer as column arrays (the values' texts, unparsed on the way):
/// every value must arrive as it left, taken that way alone, with no fallback to row images.
#[test]
fn any_value_arrives_unchanged_as_column_arrays() {
    let s = value_tables(&[("public.vals_bulk", &["--mode", "async"])]);
    let (local, remote) = (s.node("local"), s.node("remote"));
    let ids = AtomicI64::new(1);
    let mut runner = runner(12);
    runner
        .run(&prop::collection::vec(row(), 1..12), |rows| {
            let first = ids.fetch_add(rows.len() as i64, Ordering::SeqCst);
            let mut c = local.admin();
            c.batch_execute(WRITER).unwrap();
            let mut tx = c.transaction().unwrap();
            for (i, row) in rows.iter().enumerate() {
                insert(&mut tx, "public.vals_bulk", first + i as i64, row);
            }
            tx.commit().unwrap();
            s.apply_as_column_arrays("local", "remote")
                .unwrap_or_else(|e| panic!("{e:?}\n{rows:?}"));
            prop_assert_eq!(
                dump(local, "public.vals_bulk"),
                dump(remote, "public.vals_bulk")
            );
            Ok(())
        })
        .unwrap();
    s.repctl_ok(&["verify"], 0);
}

#[test]
fn negative_zero_is_kept() {
    let s = Setup::pair(Layout::OneCluster);
    for n in &s.nodes {
        n.exec("create table public.z (id int primary key, f float8, n numeric)");
    }
    s.repctl_ok(&["init"], 0);
    s.repctl_ok(&["add-table", "public.z"], 0);
    let (l, r) = (s.node("local"), s.node("remote"));
    l.exec("insert into z values (1, '-0', '-0'), (2, 0, 0)");
    // 0 and -0 are equal in SQL, but their text forms differ: the change travels.
    l.exec("update z set f = '-0' where id = 2");
    assert_eq!(dump(r, "public.z"), ["(1,-0,0)", "(2,-0,0)"]);
    assert_eq!(
        r.count("select count(*) from z where f::text = '-0' and f = 0"),
        2
    );
    assert_eq!(dump(l, "public.z"), dump(r, "public.z"));
    s.repctl_ok(&["verify"], 0);
}
