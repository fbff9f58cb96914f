//! Hostile identifiers: schemas, tables, columns and node names with quotes, spaces, dots, upper
//! case, reserved words, unicode and 63-byte lengths replicate in both modes, verify, and leave
//! nothing behind on remove-table; names repctl derives from them never collide.

mod common;

use std::collections::BTreeSet;

use common::{Layout, Node, Setup};

/// Quotes an SQL identifier.
fn qi(s: &str) -> String {
    format!("\"{}\"", s.replace('"', "\"\""))
}

/// The settings that shape text forms, pinned for comparisons.
const PINNED: &str = "set timezone = 'UTC'; set extra_float_digits = 3; set datestyle = 'ISO, YMD';
                      set intervalstyle = 'postgres'; set bytea_output = 'hex'";

/// Every row of a table as text, sorted.
fn dump(n: &Node, table: &str) -> Vec<String> {
    let mut c = n.admin();
    c.batch_execute(PINNED).unwrap();
    c.query(&format!("select t::text from {table} t order by 1"), &[])
        .unwrap_or_else(|e| panic!("node {}: dump {table}: {e}", n.name))
        .iter()
        .map(|r| r.get(0))
        .collect()
}

/// User triggers on a table that repctl made (named repctl_* or calling a repctl function).
fn repctl_triggers(n: &Node, table: &str) -> Vec<String> {
    n.admin()
        .query(
            "select g.tgname::text from pg_trigger g join pg_proc p on p.oid = g.tgfoid
              where g.tgrelid = $1::text::regclass and not g.tgisinternal
                and (g.tgname like 'repctl%' or p.pronamespace = 'repctl'::regnamespace)",
            &[&table],
        )
        .unwrap()
        .iter()
        .map(|r| r.get(0))
        .collect()
}

fn queued(n: &Node) -> i64 {
    n.count("select count(*) from repctl.queue")
}

/// After a write: in sync mode nothing may wait in the writer's queue; in async mode the peer has
/// not seen it until a drain.
fn deliver(s: &Setup, mode: &str, writer: &str) {
    if mode == "async" {
        assert!(
            queued(s.node(writer)) > 0,
            "async mode: the write should wait for a drain"
        );
        s.repctl_ok(&["drain"], 0);
    }
    assert_eq!(queued(s.node(writer)), 0, "{mode}: queue on {writer}");
}

/// Columns every hostile table gets; the key is made of a quoted name and a reserved word.
fn hostile_columns() -> Vec<String> {
    vec![
        "Key \"1\"".into(),
        "order".into(),
        "a.b c".into(),
        "ÜNÎ ñ 🙂".into(),
        "$fn$".into(),
        "--".into(),
        "'".into(),
        "X;Y".into(),
        "UPPER".into(),
        "x,y \"z\"".into(),
        // 63 bytes, the longest name PostgreSQL keeps: one ASCII byte and 31 two-byte letters.
        format!("c{}", "é".repeat(31)),
    ]
}

fn create_hostile_table(n: &Node, schema: &str, table: &str) {
    let cols = hostile_columns();
    let defs: Vec<String> = cols
        .iter()
        .enumerate()
        .map(|(i, c)| format!("{} {}", qi(c), if i == 0 { "int" } else { "text" }))
        .collect();
    n.exec(&format!(
        "create schema if not exists {s}; create table {s}.{t} ({}, primary key ({}, {}))",
        defs.join(", "),
        qi(&cols[0]),
        qi(&cols[1]),
        s = qi(schema),
        t = qi(table),
    ));
}

/// Inserts rows through bind parameters: the column list is quoted, values are never spliced.
fn insert_rows(n: &Node, table: &str, rows: &[(i32, &str, &str)]) {
    let cols = hostile_columns();
    let list: Vec<String> = cols.iter().map(|c| qi(c)).collect();
    let params: Vec<String> = (1..=cols.len()).map(|i| format!("${i}")).collect();
    let sql = format!(
        "insert into {table} ({}) values ({})",
        list.join(", "),
        params.join(", ")
    );
    let mut c = n.admin();
    let mut tx = c.transaction().unwrap();
    for (k, order, v) in rows {
        let texts: Vec<String> = (2..cols.len()).map(|i| format!("{v}#{i}")).collect();
        let mut p: Vec<&(dyn postgres::types::ToSql + Sync)> = vec![k, order];
        for t in &texts {
            p.push(t);
        }
        tx.execute(&sql, &p).unwrap();
    }
    tx.commit().unwrap();
}

/// One table through add-table (in `mode`), writes on both nodes, verify, and remove-table.
fn round_trip(s: &Setup, schema: &str, table: &str, mode: &str) {
    let sql = format!("{}.{}", qi(schema), qi(table));
    let before: Vec<BTreeSet<String>> = s.nodes.iter().map(Node::repctl_functions).collect();
    s.repctl_ok(&["add-table", &sql, "--mode", mode], 0);
    for (n, before) in s.nodes.iter().zip(&before) {
        assert_eq!(
            repctl_triggers(n, &sql).len(),
            4,
            "node {}: triggers on {sql}",
            n.name
        );
        assert_eq!(
            n.repctl_functions().len(),
            before.len() + 3,
            "node {}: one capture, one apply and one read function for {sql}",
            n.name
        );
    }
    let (local, remote) = (s.node("local"), s.node("remote"));
    insert_rows(
        local,
        &sql,
        &[
            (1, "a'b\"c", "x; drop table y; --"),
            (2, "$fn$", "$fn$ select 1 $fn$"),
            (3, "日本", "\\ \\\\ '' \""),
        ],
    );
    if mode == "async" {
        // The names must agree between the nodes' apply paths for the column arrays to go.
        s.apply_as_column_arrays("local", "remote").unwrap();
        assert_eq!(queued(local), 0);
    } else {
        deliver(s, mode, "local");
    }
    assert_eq!(dump(local, &sql), dump(remote, &sql));
    assert_eq!(dump(remote, &sql).len(), 3);
    let c3 = qi(&hostile_columns()[2]);
    let c9 = qi(&hostile_columns()[9]);
    remote.exec(&format!(
        "update {sql} set {c3} = 'changed ' || {c3}, {c9} = 'ü' where {} = 1",
        qi("Key \"1\"")
    ));
    deliver(s, mode, "remote");
    assert_eq!(
        dump(local, &sql),
        dump(remote, &sql),
        "{mode} {sql}: after an update"
    );
    // A changed key, on the other side.
    local.exec(&format!(
        "update {sql} set {} = 'moved' where {} = 2",
        qi("order"),
        qi("Key \"1\"")
    ));
    deliver(s, mode, "local");
    remote.exec(&format!("delete from {sql} where {} = 3", qi("Key \"1\"")));
    deliver(s, mode, "remote");
    let rows = dump(local, &sql);
    assert_eq!(rows, dump(remote, &sql), "{mode} {sql}");
    assert_eq!(rows.len(), 2, "{rows:?}");
    assert!(rows.iter().any(|r| r.contains("moved")), "{rows:?}");
    s.repctl_ok(&["verify"], 0);
    // The table as verify takes it, in the quoted form add-table took.
    s.repctl_ok(&["verify", &sql], 0);
    s.repctl_ok(&["status"], 0);

    s.repctl_ok(&["remove-table", &sql], 0);
    for (n, before) in s.nodes.iter().zip(&before) {
        assert_eq!(
            &n.repctl_functions(),
            before,
            "node {}: functions left after remove-table {sql}",
            n.name
        );
        assert!(
            repctl_triggers(n, &sql).is_empty(),
            "node {}: triggers left on {sql}",
            n.name
        );
        assert_eq!(n.count("select count(*) from repctl.tables"), 0);
        assert_eq!(queued(n), 0);
    }
    // The data stays, and writes no longer travel.
    local.exec(&format!("delete from {sql}"));
    assert_eq!(dump(remote, &sql).len(), 2);
    assert_eq!(queued(local), 0);
    remote.exec(&format!("delete from {sql}"));
}

#[test]
fn hostile_schema_table_and_column_names_in_both_modes() {
    let s = Setup::pair(Layout::TwoClusters);
    // Quotes, spaces, a dot, upper case and a reserved word in one schema name.
    let schema = "My \"Odd\" Schema.v1 select";
    let tables = [
        "select".to_string(),
        "Tâblé 🙂 '; drop table x; -- $fn$".to_string(),
        // 63 bytes.
        format!("T{}", "ö".repeat(31)),
        " padded ".to_string(),
    ];
    for n in &s.nodes {
        for t in &tables {
            create_hostile_table(n, schema, t);
        }
    }
    s.repctl_ok(&["init"], 0);
    for mode in ["sync", "async"] {
        for t in &tables {
            round_trip(&s, schema, t, mode);
        }
    }
}

#[test]
fn long_names_sharing_a_prefix_get_distinct_functions() {
    let s = Setup::pair(Layout::OneCluster);
    let schema = "S".repeat(63);
    let (a, b) = (
        format!("{}a", "t".repeat(62)),
        format!("{}b", "t".repeat(62)),
    );
    let sql = |t: &str| format!("{}.{}", qi(&schema), qi(t));
    for n in &s.nodes {
        n.exec(&format!("create schema {}", qi(&schema)));
        for t in [&a, &b] {
            n.exec(&format!(
                "create table {} (id int primary key, v text)",
                sql(t)
            ));
        }
        assert_eq!(
            n.count(&format!(
                "select count(*) from pg_class where relnamespace = {}::regnamespace",
                postgres_protocol::escape::escape_literal(&qi(&schema))
            )),
            4,
            "two tables and their key indexes, no name truncated"
        );
    }
    s.repctl_ok(&["init"], 0);
    let base: Vec<BTreeSet<String>> = s.nodes.iter().map(Node::repctl_functions).collect();
    s.repctl_ok(&["add-table", &sql(&a)], 0);
    s.repctl_ok(&["add-table", &sql(&b), "--mode", "async"], 0);
    for (n, base) in s.nodes.iter().zip(&base) {
        let added: Vec<String> = n.repctl_functions().difference(base).cloned().collect();
        // A capture, an apply and a read function each, none of their names cut short.
        assert_eq!(added.len(), 6, "node {}: {added:?}", n.name);
        assert!(
            added.iter().all(|f| f
                .trim_start_matches("repctl.")
                .split('(')
                .next()
                .unwrap()
                .len()
                <= 63),
            "{added:?}"
        );
        let names: BTreeSet<String> = n
            .admin()
            .query(
                "select capture_fn::text || ' ' || apply_fn::text from repctl.tables",
                &[],
            )
            .unwrap()
            .iter()
            .flat_map(|r| {
                r.get::<_, String>(0)
                    .split(' ')
                    .map(str::to_string)
                    .collect::<Vec<_>>()
            })
            .collect();
        assert_eq!(names.len(), 4, "{names:?}");
        assert!(names.iter().all(|f| f.len() <= 63), "{names:?}");
    }
    let (local, remote) = (s.node("local"), s.node("remote"));
    local.exec(&format!("insert into {} values (1, 'only a')", sql(&a)));
    local.exec(&format!(
        "insert into {} values (1, 'only b'), (2, 'b')",
        sql(&b)
    ));
    s.repctl_ok(&["drain"], 0);
    assert_eq!(dump(remote, &sql(&a)), ["(1,\"only a\")"]);
    assert_eq!(dump(remote, &sql(&b)), ["(1,\"only b\")", "(2,b)"]);
    s.repctl_ok(&["verify"], 0);
    // Removing one leaves the other whole.
    s.repctl_ok(&["remove-table", &sql(&a)], 0);
    for n in &s.nodes {
        assert_eq!(n.count("select count(*) from repctl.tables"), 1);
        assert!(repctl_triggers(n, &sql(&a)).is_empty());
        assert_eq!(repctl_triggers(n, &sql(&b)).len(), 4);
    }
    remote.exec(&format!("update {} set v = 'still' where id = 2", sql(&b)));
    s.repctl_ok(&["drain"], 0);
    assert_eq!(dump(local, &sql(&b)), ["(1,\"only b\")", "(2,still)"]);
    s.repctl_ok(&["verify"], 0);
    s.repctl_ok(&["remove-table", &sql(&b)], 0);
    for (n, base) in s.nodes.iter().zip(&base) {
        assert_eq!(&n.repctl_functions(), base, "node {}", n.name);
    }
}

/// Node names are identifiers too: long ones that share a prefix, and ones full of SQL
/// punctuation, name foreign servers, queue partitions and connections without colliding.
fn odd_node_names(local: &str, remote: &str) {
    let s = Setup::pair(Layout::TwoClusters);
    s.rename_nodes(local, remote);
    for n in &s.nodes {
        n.exec("create table public.kv (id int primary key, v text)");
    }
    s.repctl_ok(&["init"], 0);
    s.repctl_ok(&["status"], 0);
    s.repctl_ok(&["add-table", "public.kv"], 0);
    let (l, r) = (s.node("local"), s.node("remote"));
    // Several sync transactions in one session: the flush reuses its connection to the peer.
    let warnings = std::sync::Arc::new(std::sync::Mutex::new(Vec::<String>::new()));
    let seen = warnings.clone();
    let mut config: postgres::Config = l
        .with_cluster(|c| c.dsn(&l.db, "postgres"))
        .parse()
        .unwrap();
    config.notice_callback(move |n| seen.lock().unwrap().push(n.message().to_string()));
    let mut c = config.connect(postgres::NoTls).unwrap();
    for i in 0..3 {
        c.execute("insert into kv values ($1, 'from local')", &[&i])
            .unwrap();
        assert_eq!(
            queued(l),
            0,
            "transaction {i} from {local:?} stayed queued for {remote:?}: {:?}",
            warnings.lock().unwrap()
        );
    }
    let mut c = r.admin();
    for i in 10..13 {
        c.execute("insert into kv values ($1, 'from remote')", &[&i])
            .unwrap();
        assert_eq!(
            queued(r),
            0,
            "transaction {i} from {remote:?} stayed queued"
        );
    }
    assert_eq!(r.count("select count(*) from kv"), 6);
    s.repctl_ok(&["verify"], 0);
    let out = s.repctl_ok(&["lag", "--json"], 0);
    assert!(out.contains("\"pending\": 0"), "{out}");
    s.repctl_ok(&["alter-table", "public.kv", "--mode", "async"], 0);
    l.exec("update kv set v = 'async'");
    s.repctl_ok(&["drain", "--from", local, "--to", remote], 0);
    assert_eq!(r.count("select count(*) from kv where v = 'async'"), 6);
    s.repctl_ok(&["verify"], 0);
    s.repctl_ok(&["remove-table", "public.kv"], 0);
}

#[test]
fn long_node_names_sharing_a_prefix() {
    let prefix = "node-".repeat(14);
    odd_node_names(&format!("{prefix}local"), &format!("{prefix}remote"));
}

#[test]
fn node_names_full_of_sql_punctuation() {
    odd_node_names(
        "it's \"local\"; drop table kv; -- $fn$",
        "Remote $fn$ '; select 1; --\\",
    );
}

/// Long node names sharing a 70-byte prefix: their foreign servers and queue partitions stay
/// distinct and within 63 bytes, and asynchronous delivery (which does not go through dblink)
/// works both ways.
#[test]
fn long_node_names_sharing_a_prefix_async() {
    let s = Setup::pair(Layout::OneCluster);
    let prefix = "node-".repeat(14);
    let (local, remote) = (format!("{prefix}local"), format!("{prefix}remote"));
    s.rename_nodes(&local, &remote);
    for n in &s.nodes {
        n.exec("create table public.kv (id int primary key, v text)");
    }
    s.repctl_ok(&["init"], 0);
    s.repctl_ok(&["status"], 0);
    for n in &s.nodes {
        let row = n
            .admin()
            .query_one(
                "select p.name, p.server::text, c.relname::text
                   from repctl.peer p
                   join pg_foreign_server f on f.srvname = p.server
                   join pg_inherits i on i.inhparent = 'repctl.queue'::regclass
                   join pg_class c on c.oid = i.inhrelid
                  where pg_get_expr(c.relpartbound, c.oid) like '%' || p.name || '%'",
                &[],
            )
            .unwrap();
        let (peer, server, partition): (String, String, String) =
            (row.get(0), row.get(1), row.get(2));
        assert_ne!(peer, n.name);
        assert!(server.len() <= 63 && partition.len() <= 63);
    }
    let servers: BTreeSet<String> = s
        .nodes
        .iter()
        .map(|n| {
            n.admin()
                .query_one("select server::text from repctl.peer", &[])
                .unwrap()
                .get(0)
        })
        .collect();
    assert_eq!(servers.len(), 2, "one cluster, two servers: {servers:?}");
    s.repctl_ok(&["add-table", "public.kv", "--mode", "async"], 0);
    let (l, r) = (s.node("local"), s.node("remote"));
    l.exec("insert into kv values (1, 'l')");
    r.exec("insert into kv values (2, 'r')");
    s.repctl_ok(&["drain", "--from", &local, "--to", &remote], 0);
    s.repctl_ok(&["drain", "--from", &remote], 0);
    assert_eq!(dump(l, "kv"), dump(r, "kv"));
    assert_eq!(dump(r, "kv").len(), 2);
    s.repctl_ok(&["verify"], 0);
    let out = s.repctl_ok(&["lag", "--json"], 0);
    assert!(out.contains(&local) && out.contains(&remote), "{out}");
}

/// `--columns` takes column names as they are (a comma separates them; a name holding one is
/// double-quoted), and `--map` a quoted SCHEMA.TABLE: both with hostile names, in async mode.
#[test]
fn column_subsets_and_maps_with_hostile_names() {
    let s = Setup::pair(Layout::TwoClusters);
    let schema = "Sch.ema \"x\"";
    let (here, there) = ("select", "Ünï \"T\" 2");
    create_hostile_table(s.node("local"), schema, here);
    create_hostile_table(s.node("remote"), schema, there);
    let cols = hostile_columns();
    // The key, and every other hostile column but "a.b c" and the 63-byte one.
    let wanted: Vec<&str> = cols
        .iter()
        .map(String::as_str)
        .filter(|c| *c != "a.b c" && !c.starts_with('c'))
        .collect();
    let logical = format!("{}.{}", qi(schema), qi(here));
    let mapped = format!("remote={}.{}", qi(schema), qi(there));
    s.repctl_ok(&["init"], 0);
    s.repctl_ok(
        &[
            "add-table",
            &logical,
            "--map",
            &mapped,
            "--columns",
            &wanted
                .iter()
                .map(|c| {
                    if c.contains(',') {
                        qi(c)
                    } else {
                        c.to_string()
                    }
                })
                .collect::<Vec<_>>()
                .join(","),
            "--mode",
            "async",
        ],
        0,
    );
    let (l, r) = (s.node("local"), s.node("remote"));
    let remote_sql = format!("{}.{}", qi(schema), qi(there));
    insert_rows(l, &logical, &[(1, "k", "v"), (2, "k2", "w")]);
    insert_rows(r, &remote_sql, &[(3, "k3", "from remote")]);
    s.repctl_ok(&["drain"], 0);
    for n in [l, r] {
        let t = if n.name == "local" {
            &logical
        } else {
            &remote_sql
        };
        assert_eq!(n.count(&format!("select count(*) from {t}")), 3);
    }
    // Columns left out stay where they were written.
    assert_eq!(
        r.count(&format!(
            "select count(*) from {remote_sql} where {} is null",
            qi("a.b c")
        )),
        2
    );
    let projection: Vec<String> = wanted.iter().map(|c| qi(c)).collect();
    let rows = |n: &Node, t: &str| -> Vec<String> {
        n.admin()
            .query(
                &format!(
                    "select row({})::text from {t} order by 1",
                    projection.join(", ")
                ),
                &[],
            )
            .unwrap()
            .iter()
            .map(|r| r.get(0))
            .collect()
    };
    assert_eq!(rows(l, &logical), rows(r, &remote_sql));
    s.repctl_ok(&["verify"], 0);
    s.repctl_ok(&["verify", &logical], 0);
    s.repctl_ok(&["remove-table", &logical], 0);
    for n in &s.nodes {
        assert_eq!(n.count("select count(*) from repctl.tables"), 0);
    }
    assert!(repctl_triggers(r, &remote_sql).is_empty());
    assert!(repctl_triggers(l, &logical).is_empty());
}

/// An unquoted non-ASCII name means the table psql would take it for: PostgreSQL folds only ASCII
/// letters, so `Äpfel.T` is `"Äpfel".t`, not `"äpfel".t`.
#[test]
fn unquoted_non_ascii_names_fold_as_postgresql_folds_them() {
    let s = Setup::pair(Layout::TwoClusters);
    for n in &s.nodes {
        n.exec(
            r#"create schema "Äpfel"; create table "Äpfel".t (id int primary key);
               create schema "äpfel"; create table "äpfel".t (id int primary key)"#,
        );
    }
    let local = s.node("local");
    let psql: String = local
        .admin()
        .query_one("select 'Äpfel.T'::regclass::text", &[])
        .unwrap()
        .get(0);
    assert_eq!(psql, r#""Äpfel".t"#);
    s.repctl_ok(&["init"], 0);
    s.repctl_ok(&["add-table", "Äpfel.T"], 0);
    local.exec(r#"insert into "Äpfel".t values (1)"#);
    let remote = s.node("remote");
    assert_eq!(remote.count(r#"select count(*) from "Äpfel".t"#), 1);
    assert_eq!(remote.count(r#"select count(*) from "äpfel".t"#), 0);
    s.repctl_ok(&["verify", "Äpfel.T"], 0);
}
