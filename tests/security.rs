//! Injection, privileges and secrets: a `--where` or a name cannot run SQL, config values cannot
//! break out of the rendered SQL, a writer of a replicated table cannot reach repctl's internals,
//! no password shows in any output or in catalogs ordinary roles read, and `.pgpass` works.

mod common;

use std::path::Path;

use common::{Layout, Node, Setup, toml_str, unique};
use postgres::error::SqlState;

fn qi(s: &str) -> String {
    format!("\"{}\"", s.replace('"', "\"\""))
}

fn ql(s: &str) -> String {
    postgres_protocol::escape::escape_literal(s)
}

/// Exit code, stdout and stderr of repctl run with `config` and extra environment.
fn repctl(config: &Path, args: &[&str], env: &[(&str, &str)]) -> (Option<i32>, String, String) {
    let mut cmd = assert_cmd::Command::cargo_bin("repctl").unwrap();
    cmd.arg("--config").arg(config).args(args);
    cmd.env_remove("PGPASSFILE");
    for (k, v) in env {
        cmd.env(k, v);
    }
    let out = cmd.output().unwrap();
    (
        out.status.code(),
        String::from_utf8_lossy(&out.stdout).to_string(),
        String::from_utf8_lossy(&out.stderr).to_string(),
    )
}

/// A session as `user` over TCP, the password passed as a quoted value.
fn login(n: &Node, user: &str, password: &str) -> postgres::Client {
    let dsn = n.with_cluster(|c| c.tcp_dsn(&n.db, user));
    let mut config: postgres::Config = dsn.parse().unwrap();
    config.password(password);
    config.connect(postgres::NoTls).unwrap()
}

fn user_triggers(n: &Node, table: &str) -> i64 {
    n.count(&format!(
        "select count(*) from pg_trigger where tgrelid = {}::regclass and not tgisinternal",
        ql(table)
    ))
}

// ---------------------------------------------------------------------------------------------
// Injection
// ---------------------------------------------------------------------------------------------

#[test]
fn where_with_a_second_statement_is_refused_and_nothing_is_installed() {
    let s = Setup::pair(Layout::TwoClusters);
    for n in &s.nodes {
        n.exec(
            "create table public.t (id int primary key, v text); create table public.x (id int)",
        );
    }
    s.repctl_ok(&["init"], 0);
    let before: Vec<_> = s.nodes.iter().map(Node::repctl_functions).collect();
    let attempts = [
        "1=1); drop table x; --",
        "1=1); drop table x; select (true",
        "true; drop table x",
        "true) ; drop table x; --",
        "id > 0)\n; drop table x; --",
        "id > 0) --",
        "id > 0) /* */ union all (select from pg_catalog.pg_class where (true",
        "$fn$; drop table x; $fn$",
        "v = $$ $fn$ drop table x; $$",
    ];
    for w in attempts {
        for mode in ["sync", "async"] {
            let out = s.repctl(&["add-table", "public.t", "--mode", mode, "--where", w]);
            let stderr = String::from_utf8_lossy(&out.stderr);
            assert_eq!(out.status.code(), Some(2), "--where {w:?} was accepted");
            // Refused by the check, before any node runs anything, with a message about it.
            assert!(
                stderr.contains("--where") && !stderr.contains("installing failed"),
                "--where {w:?}: unclear error: {stderr}"
            );
            for (n, before) in s.nodes.iter().zip(&before) {
                assert_eq!(
                    n.count("select count(*) from pg_tables where tablename = 'x'"),
                    1,
                    "node {}: table x dropped by --where {w:?}",
                    n.name
                );
                assert_eq!(n.count("select count(*) from repctl.tables"), 0);
                assert_eq!(&n.repctl_functions(), before, "node {}: {w:?}", n.name);
                assert_eq!(user_triggers(n, "public.t"), 0, "node {}: {w:?}", n.name);
            }
        }
    }
    // The two forms of the brief are refused before anything runs, naming --where.
    for w in ["1=1); drop table x; --", "true; drop table x"] {
        let out = s.repctl(&["add-table", "public.t", "--where", w]);
        let stderr = String::from_utf8_lossy(&out.stderr);
        assert!(
            stderr.contains("--where") && !stderr.contains("installing failed"),
            "{stderr}"
        );
    }
    // An honest condition still works, even with the body tag and a comment in a literal.
    s.repctl_ok(
        &[
            "add-table",
            "public.t",
            "--where",
            "v = '$fn$; drop table x; --' or id > 10",
        ],
        0,
    );
    let (l, r) = (s.node("local"), s.node("remote"));
    l.exec("insert into t values (1, '$fn$; drop table x; --'), (2, 'no'), (11, 'yes')");
    assert_eq!(r.count("select count(*) from t"), 2);
    assert_eq!(r.count("select count(*) from t where id in (1, 11)"), 2);
    s.repctl_ok(&["verify"], 0);
    for n in &s.nodes {
        assert_eq!(
            n.count("select count(*) from pg_tables where tablename = 'x'"),
            1
        );
    }
}

/// Schema, table, column and node names that would create a `pwned_*` table if any of them were
/// spliced into SQL unquoted, or could end a dollar-quoted function body. With
/// `check_function_bodies = off` a body cut short would not even be a syntax error at install.
#[test]
fn names_made_of_sql_cannot_run_it() {
    let s = Setup::pair(Layout::TwoClusters);
    let schema = "s'; create table public.pwned_s(); --";
    let table = "t\"; create table pwned_t(); $fn$; create table pwned_u(); $fn$";
    let key = "k'); create table public.pwned_k(); --";
    let col = "c$fn$; create table public.pwned_c(); select $fn$";
    let col2 = "d\\'; create table public.pwned_d(); --";
    let local = "l$fn$; create table public.pwned_n(); select $fn$ --";
    let remote = "r'); create table public.pwned_r(); -- \\";
    s.rename_nodes(local, remote);
    let sql = format!("{}.{}", qi(schema), qi(table));
    for n in &s.nodes {
        n.exec(&format!(
            "alter database {} set check_function_bodies = off",
            qi(&n.db)
        ));
        n.exec(&format!(
            "create schema {}; create table {sql} ({} int primary key, {} text, {} text)",
            qi(schema),
            qi(key),
            qi(col),
            qi(col2)
        ));
    }
    let run = |args: &[&str]| s.repctl_ok(args, 0);
    run(&["init"]);
    run(&["add-table", &sql]);
    let (l, r) = (s.node("local"), s.node("remote"));
    let insert = format!(
        "insert into {sql} ({}, {}, {}) values ($1, $2, $3)",
        qi(key),
        qi(col),
        qi(col2)
    );
    l.admin()
        .execute(&insert, &[&1i32, &"$fn$ '; --", &"\\'"])
        .unwrap();
    r.admin()
        .execute(&insert, &[&2i32, &"it's", &"\"; drop"])
        .unwrap();
    for n in &s.nodes {
        assert_eq!(n.count("select count(*) from repctl.queue"), 0);
        assert_eq!(n.count(&format!("select count(*) from {sql}")), 2);
    }
    run(&["verify"]);
    run(&["verify", &sql]);
    run(&["status"]);
    run(&["status", "--json"]);
    run(&["alter-table", &sql, "--mode", "async"]);
    l.exec(&format!("update {sql} set {} = 'async'", qi(col)));
    run(&["drain"]);
    run(&["lag"]);
    assert_eq!(
        r.count(&format!(
            "select count(*) from {sql} where {} = 'async'",
            qi(col)
        )),
        2
    );
    s.repctl_ok(&["conflicts"], 0);
    run(&["remove-table", &sql]);
    for n in &s.nodes {
        assert_eq!(
            n.count("select count(*) from pg_class where relname like 'pwned%'"),
            0,
            "node {}: a name ran SQL",
            n.name
        );
        assert_eq!(user_triggers(n, &sql), 0);
    }
}

/// Quotes, backslashes and `$fn$` in peer_dsn's dbname, user and password, and in dsn's dbname,
/// reach the foreign server and user mapping as values: replication through them works.
#[test]
fn config_values_with_quotes_and_backslashes_stay_values() {
    let s = Setup::pair(Layout::TwoClusters);
    let tag = unique("x");
    let db = format!("db '{tag}' \"q\" \\ $fn$ --;");
    let role = format!("peer o'{tag} \"r\" \\");
    let password = format!("pa'ss\\word \"q\" $fn$ --; {tag} ' or '1'='1");
    let mut text = s.agent_lines(true);
    for n in &s.nodes {
        n.with_cluster(|c| {
            c.create_database(&db, None).unwrap();
            c.execute_admin(
                "postgres",
                &format!("create role {} login password {}", qi(&role), ql(&password)),
            )
            .unwrap();
            c.execute_admin(&db, "create table public.kv (id int primary key, v text)")
                .unwrap();
            text.push_str(&format!(
                "[nodes.{}]\ndsn = {}\npeer_dsn = {}\npeer_password_env = \"PW_{}\"\n",
                n.name,
                toml_str(&c.dsn(&db, "postgres")),
                toml_str(&c.tcp_dsn(&db, &role)),
                n.name.to_uppercase()
            ));
        });
    }
    let config = s.config.parent().unwrap().join("weird.toml");
    std::fs::write(&config, &text).unwrap();
    let env = [
        ("PW_LOCAL", password.as_str()),
        ("PW_REMOTE", password.as_str()),
    ];
    let ok = |args: &[&str]| {
        let (code, out, err) = repctl(&config, args, &env);
        assert_eq!(code, Some(0), "{args:?}\n{out}\n{err}");
        assert!(
            !out.contains(&password) && !err.contains(&password),
            "{args:?} printed the password:\n{out}\n{err}"
        );
        out
    };
    let dry = ok(&["init", "--dry-run"]);
    assert!(dry.contains("********"), "{dry}");
    ok(&["init"]);
    ok(&["init"]);
    ok(&["add-table", "public.kv"]);
    let admin = |n: &Node| n.with_cluster(|c| c.connect(&db)).unwrap();
    let mut l = admin(s.node("local"));
    l.execute("insert into kv values (1, 'through dblink')", &[])
        .unwrap();
    // Delivered at commit through the foreign server and user mapping: nothing queued.
    let queued: i64 = l
        .query_one("select count(*) from repctl.queue", &[])
        .unwrap()
        .get(0);
    assert_eq!(queued, 0);
    let mut r = admin(s.node("remote"));
    let got: String = r
        .query_one("select v from kv where id = 1", &[])
        .unwrap()
        .get(0);
    assert_eq!(got, "through dblink");
    // The values arrived whole, as option values.
    let opts: Vec<String> = l
        .query_one(
            "select srvoptions::text[] from pg_foreign_server s join repctl.peer p on p.server = s.srvname",
            &[],
        )
        .unwrap()
        .get(0);
    assert!(opts.contains(&format!("dbname={db}")), "{opts:?}");
    let mapping: Vec<String> = l
        .query_one(
            "select umoptions::text[] from pg_user_mappings m join repctl.peer p on p.server = m.srvname",
            &[],
        )
        .unwrap()
        .get(0);
    assert!(mapping.contains(&format!("user={role}")), "{mapping:?}");
    assert!(mapping.contains(&format!("password={password}")));
    ok(&["verify"]);
    ok(&["status"]);
    for (_, n) in [("l", s.node("local")), ("r", s.node("remote"))] {
        assert_eq!(
            n.count("select count(*) from pg_class where relname like 'pwned%'"),
            0
        );
    }
}

// ---------------------------------------------------------------------------------------------
// Privileges
// ---------------------------------------------------------------------------------------------

const WRITER_PW: &str = "Writer's pw \\ 1";

/// The seed's setup plus a non-superuser writer owning a replicated table `w.t` on both nodes;
/// dblink is installed in `public` on `local` first, so its functions are callable by anyone and
/// only the foreign servers' privileges stand between a writer and repctl's peer connections.
fn writer_setup() -> (Setup, String) {
    let mut s = Setup::pair(Layout::TwoClusters);
    s.seed_tables();
    let writer = unique("writer");
    for n in &s.nodes {
        n.with_cluster(|c| {
            let _ = c.execute_admin(
                "postgres",
                &format!(
                    "create role {} login password {}",
                    qi(&writer),
                    ql(WRITER_PW)
                ),
            );
        });
        n.exec(&format!(
            "grant create on database {db} to {w};
             set role {w};
             create schema w;
             create table w.t (id int primary key, v text);",
            db = qi(&n.db),
            w = qi(&writer)
        ));
    }
    s.node("local")
        .exec("create extension dblink schema public");
    s.repctl_ok(&["init"], 0);
    s.repctl_ok(&["add-table", "w.t"], 0);
    (s, writer)
}

fn expect_denied(c: &mut postgres::Client, who: &str, sql: &str) {
    match c.batch_execute(sql) {
        Ok(()) => panic!("{who} could run: {sql}"),
        Err(e) => {
            let message = e.as_db_error().map(|d| d.message().to_string());
            // dblink looks the caller's user mapping up before it checks USAGE on the server.
            let no_mapping = e.code() == Some(&SqlState::UNDEFINED_OBJECT)
                && message
                    .as_deref()
                    .is_some_and(|m| m.starts_with("user mapping not found"));
            assert!(
                e.code() == Some(&SqlState::INSUFFICIENT_PRIVILEGE) || no_mapping,
                "{who}: {sql}: {e} {message:?}"
            );
        }
    }
}

/// What no role but repctl's own may do on a node: run the internals, touch the catalog and queue,
/// use the foreign servers, read the mappings.
fn internals(server: &str) -> Vec<String> {
    let srv = ql(server);
    let mut v: Vec<String> = [
        "select repctl.arm_flush()",
        "select repctl.flush()",
        "select repctl.ensure_server('x', '{}'::jsonb)",
        "select repctl.ensure_user_mapping('x', 'x', '{}'::jsonb)",
        "select repctl.adopt()",
        "select repctl.check_peer('x', 'remote')",
        "select * from repctl.queue",
        "insert into repctl.queue (peer, tbl, op) values ('remote', 'w.t', 'T')",
        "delete from repctl.queue",
        "select * from repctl.tables",
        "update repctl.tables set mode = 'async'",
        "select * from repctl.conflict",
        "delete from repctl.conflict",
        "select * from repctl.peer",
        "select * from repctl.version",
        "select * from repctl.flush_request",
        "select * from pg_catalog.pg_user_mappings",
        "select * from pg_catalog.pg_user_mapping",
    ]
    .iter()
    .map(|s| s.to_string())
    .collect();
    v.extend([
        format!("select public.dblink_connect('spy', {srv})"),
        format!("select public.dblink_connect_u('spy', {srv})"),
        format!("select * from public.dblink({srv}, 'select 1') as t(x int)"),
        format!("select public.dblink_exec({srv}, 'select 1')"),
        // The flush runs in the writer's own session and may leave its connection open there.
        "select public.dblink_get_connections()".to_string(),
        "select * from public.dblink('repctl:remote', 'select 1') as t(x int)".to_string(),
        "select * from public.dblink('repctl:local', 'select 1') as t(x int)".to_string(),
        format!(
            "create user mapping for current_user server {} options (user 'postgres')",
            qi(server)
        ),
        format!(
            "alter server {} options (set dbname 'postgres')",
            qi(server)
        ),
        format!("grant usage on foreign server {} to public", qi(server)),
        format!(
            "select * from public.dblink({srv}, 'select repctl.apply(''x'', ''[]'')') as t(x int)"
        ),
    ]);
    v
}

#[test]
fn a_writer_cannot_reach_repctl_internals() {
    let (s, writer) = writer_setup();
    let local = s.node("local");
    let server: String = local
        .admin()
        .query_one("select server::text from repctl.peer", &[])
        .unwrap()
        .get(0);
    let mut c = login(local, &writer, WRITER_PW);
    // Writing replicates: the capture and flush run for the writer without rights of its own.
    c.batch_execute("insert into w.t values (1, 'by the writer')")
        .unwrap();
    assert_eq!(
        s.node("remote")
            .count("select count(*) from w.t where v = 'by the writer'"),
        1
    );
    let mut denied = internals(&server);
    denied.extend([
        "select repctl.apply('remote', '[]'::jsonb)".to_string(),
        "select repctl.apply('remote', '[]'::jsonb, null)".to_string(),
        format!("set role {}", qi(&s.agent())),
    ]);
    for sql in &denied {
        expect_denied(&mut c, &writer, sql);
    }
    // The peer login may apply, and nothing else.
    let mut peer = login(local, "local", "LOCAL321");
    peer.batch_execute("select repctl.apply('remote', '[]'::jsonb)")
        .unwrap();
    for sql in &internals(&server) {
        expect_denied(&mut peer, "peer role local", sql);
    }
}

/// Everything init and add-table install belongs to the dedicated agent role, which nobody can log
/// in as and which is no superuser when the peers ask for passwords; each table's apply function
/// belongs to the table's owner; only the agent has a user mapping on repctl's servers.
#[test]
fn a_dedicated_agent_owns_repctl() {
    let (s, writer) = writer_setup();
    let agent = s.agent();
    for n in &s.nodes {
        let mut c = n.admin();
        let role = c
            .query_one(
                "select rolsuper, rolcanlogin, rolcreaterole, rolcreatedb, rolreplication, rolbypassrls
                   from pg_roles where rolname = $1",
                &[&agent],
            )
            .unwrap();
        for i in 0..6 {
            assert!(
                !role.get::<_, bool>(i),
                "node {}: agent attribute {i}",
                n.name
            );
        }
        let owners = c
            .query(
                "select 'schema', pg_get_userbyid(nspowner)::text, false from pg_namespace where nspname = 'repctl'
                 union all
                 select c.oid::regclass::text, pg_get_userbyid(c.relowner)::text, false from pg_class c
                  where c.relnamespace = 'repctl'::regnamespace and c.relkind in ('r', 'p', 'S')
                 union all
                 select p.oid::regprocedure::text, pg_get_userbyid(p.proowner)::text, p.prosecdef from pg_proc p
                  where p.pronamespace = 'repctl'::regnamespace
                    -- dblink's, where init installed it into repctl.
                    and not exists (select from pg_depend d where d.objid = p.oid and d.deptype = 'e')",
                &[],
            )
            .unwrap();
        let mut definers = vec![];
        for r in owners {
            let (what, owner, definer): (String, String, bool) = (r.get(0), r.get(1), r.get(2));
            let expected = if what.starts_with("repctl.apply_") {
                writer.as_str()
            } else {
                agent.as_str()
            };
            assert_eq!(owner, expected, "node {}: owner of {what}", n.name);
            if definer {
                definers.push(what.split('(').next().unwrap().to_string());
            }
        }
        definers.sort();
        let shapes: Vec<&str> = definers
            .iter()
            .map(|d| {
                if d.starts_with("repctl.apply_")
                    || d.starts_with("repctl.capture_")
                    || d.starts_with("repctl.read_")
                {
                    &d[..d.find('_').unwrap()]
                } else {
                    d.as_str()
                }
            })
            .collect();
        assert_eq!(
            shapes,
            [
                "repctl.apply",
                "repctl.apply",
                "repctl.arm_flush",
                "repctl.capture",
                "repctl.check_peer",
                "repctl.ddl_guard",
                "repctl.flush",
                "repctl.read",
                "repctl.try_connect"
            ],
            "node {}: SECURITY DEFINER functions",
            n.name
        );
        let mappings: Vec<String> = c
            .query(
                "select usename::text from pg_user_mappings m join repctl.peer p on p.server = m.srvname",
                &[],
            )
            .unwrap()
            .iter()
            .map(|r| r.get(0))
            .collect();
        assert_eq!(mappings, std::slice::from_ref(&agent), "node {}", n.name);
    }
    // A second init keeps it so.
    s.repctl_ok(&["init"], 0);
    let others = s.node("local").count(&format!(
        "select count(*) from pg_proc where pronamespace = 'repctl'::regnamespace
            and proowner not in (select oid from pg_roles where rolname in ({}, {}))",
        ql(&agent),
        ql(&writer)
    ));
    assert_eq!(others, 0);
}

/// A table owner's own triggers (and defaults, checks, index expressions) run inside the apply,
/// which is SECURITY DEFINER: they must not run with repctl's (superuser) rights.
#[test]
fn a_table_owners_trigger_does_not_run_as_superuser_on_the_peer() {
    let (s, writer) = writer_setup();
    let remote = s.node("remote");
    let mut w = login(remote, &writer, WRITER_PW);
    w.batch_execute(
        "create table w.log (who text, su boolean);
         create function w.spy() returns trigger language plpgsql as $$
         begin
           insert into w.log select current_user, rolsuper from pg_roles where rolname = current_user;
           return new;
         end $$;
         create trigger spy before insert on w.t for each row execute function w.spy();",
    )
    .unwrap();
    login(s.node("local"), &writer, WRITER_PW)
        .batch_execute("insert into w.t values (7, 'x')")
        .unwrap();
    let row = remote
        .admin()
        .query_one("select who, su from w.log", &[])
        .unwrap();
    let (who, su): (String, bool) = (row.get(0), row.get(1));
    assert!(
        !su,
        "the writer's trigger ran as superuser {who:?} on the peer"
    );
}

// ---------------------------------------------------------------------------------------------
// Secrets
// ---------------------------------------------------------------------------------------------

/// Every catalog relation `client` may read with a row that contains one of `secrets`.
fn catalog_rows_with(client: &mut postgres::Client, secrets: &[&str]) -> Vec<String> {
    let rels: Vec<String> = client
        .query(
            "select format('%I.%I', n.nspname, c.relname) from pg_class c join pg_namespace n on n.oid = c.relnamespace
              where c.relkind in ('r', 'v', 'm', 'p')
                and (n.nspname in ('pg_catalog', 'repctl', 'public')
                     -- information_schema is pg_catalog again, slowly; its FDW views show options.
                     or (n.nspname = 'information_schema'
                         and (c.relname like '%foreign%' or c.relname like '%user_mapping%')))
                and has_table_privilege(c.oid, 'select')",
            &[],
        )
        .unwrap()
        .iter()
        .map(|r| r.get(0))
        .collect();
    let mut found = Vec::new();
    for rel in rels {
        let sql = format!(
            "select count(*) from {rel} t where exists (select from unnest($1::text[]) s where strpos(t::text, s) > 0)"
        );
        if let Ok(row) = client.query_one(&sql, &[&secrets])
            && row.get::<_, i64>(0) > 0
        {
            found.push(rel);
        }
    }
    found
}

/// Adds ` password=...` to every `dsn` line of a config.
fn with_dsn_password(config: &Path, password: &str) {
    let text = std::fs::read_to_string(config).unwrap();
    let out: Vec<String> = text
        .lines()
        .map(|l| match l.strip_prefix("dsn = ") {
            Some(v) => {
                let dsn: String = toml::from_str::<toml::Value>(&format!("v = {v}")).unwrap()["v"]
                    .as_str()
                    .unwrap()
                    .to_string();
                format!(
                    "dsn = {}",
                    toml_str(&format!(
                        "{dsn} password='{}'",
                        password.replace('\\', "\\\\").replace('\'', "\\'")
                    ))
                )
            }
            None => l.to_string(),
        })
        .collect();
    std::fs::write(config, out.join("\n") + "\n").unwrap();
}

#[test]
fn no_password_in_outputs_or_readable_catalogs() {
    let (s, writer) = writer_setup();
    // repctl's own connections carry a password too (trust authentication ignores it).
    let dsn_secret = "DSN_SECRET 'quoted' \\ 42";
    with_dsn_password(&s.config, dsn_secret);
    let secrets = ["LOCAL321", "REMOTE321", "DSN_SECRET"];
    let check = |args: &[&str], out: &std::process::Output| {
        for text in [&out.stdout, &out.stderr] {
            let text = String::from_utf8_lossy(text);
            for secret in secrets {
                assert!(
                    !text.contains(secret),
                    "repctl {args:?} printed {secret}:\n{text}"
                );
            }
        }
    };
    login(s.node("local"), &writer, WRITER_PW)
        .batch_execute("insert into w.t values (1, 'x')")
        .unwrap();
    s.repctl_ok(&["alter-table", "w.t", "--mode", "async"], 0);
    login(s.node("remote"), &writer, WRITER_PW)
        .batch_execute("insert into w.t values (2, 'y')")
        .unwrap();
    for args in [
        &["init", "--dry-run"][..],
        &["init"],
        &["status"],
        &["status", "--json"],
        &["lag"],
        &["lag", "--json"],
        &["drain"],
        &["verify"],
        &["verify", "--json"],
        &["conflicts"],
        &["conflicts", "--json"],
        &[
            "add-table",
            "local.loc_test",
            "--map",
            "remote=remote.rmt_test",
            "--dry-run",
        ],
        &["alter-table", "w.t", "--mode", "sync", "--dry-run"],
        &["remove-table", "w.t", "--dry-run"],
    ] {
        let out = s.repctl(args);
        assert!(
            matches!(out.status.code(), Some(0 | 1)),
            "repctl {args:?}: {}",
            String::from_utf8_lossy(&out.stderr)
        );
        check(args, &out);
    }
    // Catalogs the writer and the peer login can read hold no password.
    for n in &s.nodes {
        for (role, pw) in [
            (writer.as_str(), WRITER_PW),
            ("local", "LOCAL321"),
            ("remote", "REMOTE321"),
        ] {
            let mut c = login(n, role, pw);
            let found = catalog_rows_with(&mut c, &secrets);
            assert!(
                found.is_empty(),
                "node {}: {role} reads a password in {found:?}",
                n.name
            );
        }
    }
}

/// Errors about connections show the connection string with the password masked.
#[test]
fn connection_errors_do_not_echo_passwords() {
    let s = Setup::pair(Layout::OneCluster);
    let (l, r) = (s.node("local"), s.node("remote"));
    let port = l.with_cluster(|c| c.port());
    let wrong = "WRONG_SECRET 'x' \\ y";
    let enc = "WRONG_SECRET%20%27x%27%20%5C%20y";
    let remote_dsn = r.with_cluster(|c| c.dsn(&r.db, "postgres"));
    let configs = [
        // A wrong password for a role that must log in with one.
        format!(
            "host=127.0.0.1 port={port} dbname={} user=local password='{}'",
            l.db,
            wrong.replace('\\', "\\\\").replace('\'', "\\'")
        ),
        // The same in URL form.
        format!("postgresql://local:{enc}@127.0.0.1:{port}/{}", l.db),
        // Nobody listening.
        "host=127.0.0.1 port=1 dbname=x user=local password=WRONG_SECRET_2".to_string(),
        // An option the driver does not know.
        format!("host=127.0.0.1 port={port} password=WRONG_SECRET_3 bogus_option=1"),
    ];
    let dir = tempfile::tempdir().unwrap();
    for dsn in configs {
        let config = dir.path().join("c.toml");
        std::fs::write(
            &config,
            format!(
                "[nodes.local]\ndsn = {}\n[nodes.remote]\ndsn = {}\n",
                toml_str(&dsn),
                toml_str(&remote_dsn)
            ),
        )
        .unwrap();
        for args in [
            &["status"][..],
            &["status", "--json"],
            &["init"],
            &["init", "--dry-run"],
            &["verify"],
            &["lag"],
            &["lag", "--json"],
            &["drain"],
            &["add-table", "public.t"],
        ] {
            let (code, out, err) = repctl(&config, args, &[]);
            // verify finds no replicated table on the reachable node and says so with exit 0.
            if args != ["verify"] {
                assert_ne!(code, Some(0), "{args:?} with {dsn}");
            }
            for text in [&out, &err] {
                assert!(
                    !text.contains("WRONG_SECRET"),
                    "repctl {args:?} echoed the password of {dsn}:\n{text}"
                );
            }
            assert!(
                err.contains("node local") || out.contains("local"),
                "{args:?}: {out}{err}"
            );
        }
    }
    // A wrong peer password fails init, naming the node, not the password.
    let mut s = s;
    s.seed_tables();
    let config = s.config.clone();
    let (code, out, err) = repctl(
        &config,
        &["init"],
        &[
            ("PW_LOCAL", "PEER_WRONG_SECRET"),
            ("PW_REMOTE", "REMOTE321"),
        ],
    );
    assert_eq!(code, Some(2), "{out}{err}");
    assert!(
        !out.contains("PEER_WRONG_SECRET") && !err.contains("PEER_WRONG_SECRET"),
        "{err}"
    );
}

// ---------------------------------------------------------------------------------------------
// .pgpass
// ---------------------------------------------------------------------------------------------

fn write_private(path: &Path, text: &str, mode: u32) {
    use std::os::unix::fs::PermissionsExt;
    std::fs::write(path, text).unwrap();
    std::fs::set_permissions(path, std::fs::Permissions::from_mode(mode)).unwrap();
}

/// `status --json` as the password-only role `local`, whose dsn has no password.
fn status_json(config: &Path, env: &[(&str, &str)]) -> (serde_json::Value, String) {
    let (code, out, err) = repctl(config, &["status", "--json"], env);
    assert_eq!(code, Some(1), "{out}{err}");
    (serde_json::from_str(&out).unwrap(), err)
}

fn local_reachable(status: &serde_json::Value) -> bool {
    status["nodes"]
        .as_array()
        .unwrap()
        .iter()
        .find(|n| n["node"] == "local")
        .unwrap()["reachable"]
        .as_bool()
        .unwrap()
}

#[test]
fn pgpass_supplies_the_password_of_repctls_own_connection() {
    let s = Setup::pair(Layout::TwoClusters);
    let (l, r) = (s.node("local"), s.node("remote"));
    let port = l.with_cluster(|c| c.port());
    let local_dsn = l.with_cluster(|c| c.tcp_dsn(&l.db, "local"));
    let remote_dsn = r.with_cluster(|c| c.dsn(&r.db, "postgres"));
    let dir = tempfile::tempdir().unwrap();
    let config = dir.path().join("repctl.toml");
    let write_config = |local: &str| {
        std::fs::write(
            &config,
            format!(
                "[nodes.local]\ndsn = {}\n[nodes.remote]\ndsn = {}\n",
                toml_str(local),
                toml_str(&remote_dsn)
            ),
        )
        .unwrap()
    };
    write_config(&local_dsn);
    let passfile = dir.path().join("pgpass");
    let pf = passfile.to_str().unwrap();

    // Without a password file the role cannot log in.
    let (status, _) = status_json(&config, &[("HOME", dir.path().to_str().unwrap())]);
    assert!(!local_reachable(&status), "{status}");

    // PGPASSFILE, first matching line wins; comments, wildcards and other entries around it.
    write_private(
        &passfile,
        &format!(
            "# repctl test\n127.0.0.1:{port}:other_db:local:WRONG_SECRET_A\n127.0.0.1:*:{}:local:LOCAL321\n*:*:*:*:WRONG_SECRET_B\n",
            l.db
        ),
        0o600,
    );
    let (status, err) = status_json(&config, &[("PGPASSFILE", pf)]);
    assert!(local_reachable(&status), "{status}\n{err}");

    // ~/.pgpass when PGPASSFILE is not set.
    let home = dir.path().join("home");
    std::fs::create_dir(&home).unwrap();
    write_private(
        &home.join(".pgpass"),
        &format!("127.0.0.1:{port}:*:local:LOCAL321\n"),
        0o600,
    );
    let (status, _) = status_json(&config, &[("HOME", home.to_str().unwrap())]);
    assert!(local_reachable(&status), "{status}");

    // The dsn's own passfile.
    write_config(&format!("{local_dsn} passfile={pf}"));
    let (status, _) = status_json(&config, &[("HOME", "/nonexistent")]);
    assert!(local_reachable(&status), "{status}");
    write_config(&local_dsn);

    // A password in the dsn wins over the file.
    write_config(&format!("{local_dsn} password=WRONG_SECRET_C"));
    let (status, _) = status_json(&config, &[("PGPASSFILE", pf)]);
    assert!(!local_reachable(&status), "{status}");
    assert!(!status.to_string().contains("WRONG_SECRET"), "{status}");
    write_config(&local_dsn);

    // A file others may read is ignored, with libpq's warning.
    std::fs::set_permissions(
        &passfile,
        std::os::unix::fs::PermissionsExt::from_mode(0o644),
    )
    .unwrap();
    let (status, err) = status_json(&config, &[("PGPASSFILE", pf)]);
    assert!(!local_reachable(&status), "{status}");
    assert!(err.contains("group or world access"), "{err}");

    // A wrong password from the file: the error says where it came from, not what it is.
    write_private(&passfile, "*:*:*:local:WRONG_SECRET_D\n", 0o600);
    let (status, err) = status_json(&config, &[("PGPASSFILE", pf)]);
    assert!(!local_reachable(&status), "{status}");
    let text = format!("{status}{err}");
    assert!(!text.contains("WRONG_SECRET"), "{text}");
    assert!(text.contains("password file"), "{text}");
}

/// The init script carries each peer's password into its user mapping; when a statement of the
/// script fails, PostgreSQL logs the failing query string, so the password must not be in it.
#[test]
fn a_failed_init_writes_no_password_to_the_server_log() {
    let mut s = Setup::pair(Layout::TwoClusters);
    let role = unique("logged");
    let password = format!("LOG_SECRET_{role}");
    let r = s.node("remote");
    r.with_cluster(|c| {
        c.execute_admin(
            "postgres",
            &format!("create role {} login password {}", qi(&role), ql(&password)),
        )
        .unwrap()
    });
    // The peer's database does not exist: its password is right, reaching it fails.
    let peer_dsn = r.with_cluster(|c| c.tcp_dsn("no_such_db", &role));
    let mut text = s.agent_lines(false);
    for n in &s.nodes {
        let dsn = n.with_cluster(|c| c.dsn(&n.db, "postgres"));
        text.push_str(&format!("[nodes.{}]\ndsn = {}\n", n.name, toml_str(&dsn)));
        if n.name == "remote" {
            text.push_str(&format!(
                "peer_dsn = {}\npeer_password_env = \"PW_REMOTE\"\n",
                toml_str(&peer_dsn)
            ));
        }
    }
    std::fs::write(&s.config, text).unwrap();
    let (code, out, err) = repctl(&s.config, &["init"], &[("PW_REMOTE", &password)]);
    assert_eq!(code, Some(2), "{out}{err}");
    assert!(!out.contains(&password) && !err.contains(&password));
    s.write_config(&[]);
    for n in &s.nodes {
        let log = n.with_cluster(|c| c.log_contents());
        assert!(
            !log.contains(&password),
            "node {}: the server log holds the password",
            n.name
        );
    }
}

/// A condition that closes the parenthesis add-table puts around it and opens another is one valid
/// statement where it is checked, but a different expression wherever it is joined with `and`
/// (verify --rows' key ranges: `... and (id < 0) or (true)`).
#[test]
fn where_that_closes_its_parenthesis_is_refused() {
    let s = Setup::pair(Layout::OneCluster);
    for n in &s.nodes {
        n.exec("create table public.t (id int primary key, v text)");
    }
    s.repctl_ok(&["init"], 0);
    for w in ["id > 0) --", "id < 0) or (true"] {
        let out = s.repctl(&["add-table", "public.t", "--where", w]);
        let stderr = String::from_utf8_lossy(&out.stderr);
        assert_eq!(out.status.code(), Some(2), "--where {w:?} accepted");
        assert!(stderr.contains("--where"), "{stderr}");
    }
}

/// A table's apply function belongs to the table's owner, who may ALTER it. In the seed's setup
/// that owner is also the peer login, with USAGE on schema repctl: made SECURITY INVOKER with a
/// search_path of its own, the function would run its owner's planted code with the agent's
/// rights. repctl.apply refuses to call it then, and alter-table puts it back.
#[test]
fn a_tampered_apply_function_is_not_called() {
    let mut s = Setup::pair(Layout::TwoClusters);
    s.seed_tables();
    s.replicate_seed_tables();
    let remote = s.node("remote");
    let apply_fn: String = remote
        .admin()
        .query_one("select apply_fn::text from repctl.tables", &[])
        .unwrap()
        .get(0);
    let mut owner = login(remote, "remote", "REMOTE321");
    owner
        .batch_execute(&format!(
            "create table remote.stolen (who text);
             grant usage on schema remote to public;
             grant all on remote.stolen, remote.rmt_test to public;
             create function remote.jsonb_array_elements(p jsonb) returns setof jsonb language sql as $$
               insert into remote.stolen values (current_user);
               select pg_catalog.jsonb_array_elements(p)
             $$;
             alter function repctl.{}(jsonb, boolean, text, text[], text[])
               security invoker set search_path = remote, pg_catalog;",
            qi(&apply_fn)
        ))
        .unwrap();
    s.node("local")
        .exec("insert into local.loc_test values (1, 'k', 'after tampering', now(), now())");
    assert_eq!(remote.count("select count(*) from remote.stolen"), 0);
    assert_eq!(remote.count("select count(*) from remote.rmt_test"), 0);
    // Refused on the peer: the pair stops at the change (exit 1) and says what to do.
    let out = s.repctl_ok(&["drain"], 1);
    assert!(
        out.contains("is not SECURITY DEFINER")
            && out.contains("run repctl alter-table local.loc_test"),
        "{out}"
    );
    assert_eq!(remote.count("select count(*) from remote.stolen"), 0);
    let status = s.repctl_ok(&["status", "--json"], 1);
    assert!(
        status.contains("apply function (SECURITY DEFINER)"),
        "{status}"
    );
    s.repctl_ok(&["alter-table", "local.loc_test"], 0);
    s.repctl_ok(&["drain"], 0);
    s.assert_converged(&common::TABLES);
    assert_eq!(remote.count("select count(*) from remote.stolen"), 0);
}

/// A table's apply function runs as the table's owner and reads what decides on its batch (queued
/// changes, versions) through the table's read function, which runs as the agent: the owner may
/// call that one, and nothing else of repctl's, another table's read function included.
#[test]
fn a_table_owner_may_call_only_its_own_tables_read_function() {
    let (s, writer) = writer_setup();
    let local = s.node("local");
    local.exec("create table public.other (id int primary key, v text)");
    s.node("remote")
        .exec("create table public.other (id int primary key, v text)");
    s.repctl_ok(
        &["add-table", "public.other", "--conflict", "last-write-wins"],
        0,
    );
    let read_fn = |table: &str| -> String {
        let apply_fn: String = local
            .admin()
            .query_one(
                "select apply_fn from repctl.tables where name = $1",
                &[&table],
            )
            .unwrap()
            .get(0);
        format!("repctl.{}", qi(&apply_fn.replacen("apply_", "read_", 1)))
    };
    let mut w = login(local, &writer, WRITER_PW);
    let batch = r#"{"t":["w.t"],"op":["U"],"r":[{"id":"1","v":"b"}],"o":[{"id":"1","v":"a"}]}"#;
    let own: Option<String> = w
        .query_one(
            &format!("select {}('remote', $1::text::jsonb)::text", read_fn("w.t")),
            &[&batch],
        )
        .unwrap()
        .get(0);
    assert_eq!(own, None, "nothing queued for remote");
    for call in [
        format!("select {}('remote', '{{}}')", read_fn("public.other")),
        "select repctl.apply('remote', '{}')".to_string(),
        "select repctl.table_apply('x', '{}', false, 'remote')".to_string(),
    ] {
        let err = w.batch_execute(&call).unwrap_err();
        let message = err.as_db_error().map(|e| e.message().to_string());
        assert!(
            message
                .as_deref()
                .is_some_and(|m| m.contains("permission denied")),
            "{call}: {message:?}"
        );
    }
}
