//! Bad input gets a clear error naming what to fix, exit code 2, and changes nothing.

mod common;

use common::{Layout, Setup};

fn err(s: &Setup, args: &[&str]) -> String {
    let out = s.repctl(args);
    assert_eq!(
        out.status.code(),
        Some(2),
        "repctl {args:?} should fail:\n{}",
        String::from_utf8_lossy(&out.stdout)
    );
    String::from_utf8_lossy(&out.stderr).to_string()
}

fn nothing_installed(s: &Setup) {
    for n in &s.nodes {
        assert_eq!(
            n.count("select count(*) from pg_namespace where nspname = 'repctl'"),
            0,
            "node {}",
            n.name
        );
    }
}

fn no_tables(s: &Setup) {
    for n in &s.nodes {
        assert_eq!(
            n.count("select count(*) from repctl.tables"),
            0,
            "node {}",
            n.name
        );
        assert_eq!(
            n.count("select count(*) from pg_trigger where tgname like 'repctl_capture%'"),
            0,
            "node {}",
            n.name
        );
    }
}

#[test]
fn config_mistakes() {
    let s = Setup::pair(Layout::OneCluster);
    let text = std::fs::read_to_string(&s.config).unwrap();
    std::fs::write(&s.config, text.replace("dsn =", "dns =")).unwrap();
    let e = err(&s, &["init"]);
    assert!(e.contains("dns") && e.contains("unknown field"), "{e}");
    std::fs::write(
        &s.config,
        format!("{text}peer_password_env = \"REPCTL_TEST_UNSET_VAR\"\n"),
    )
    .unwrap();
    let e = err(&s, &["init"]);
    assert!(
        e.contains("node remote") && e.contains("REPCTL_TEST_UNSET_VAR"),
        "{e}"
    );
    std::fs::write(&s.config, text.replacen("port=", "port=1 port=", 1)).unwrap();
    let e = err(&s, &["init"]);
    assert!(
        e.contains("node local") && e.contains("cannot connect"),
        "{e}"
    );
    // Read-only commands go on without an unreachable node, but never call it equal.
    let out = s.repctl(&["verify"]);
    assert_eq!(
        out.status.code(),
        Some(1),
        "{}",
        String::from_utf8_lossy(&out.stdout)
    );
    assert!(String::from_utf8_lossy(&out.stderr).contains("node local could not be checked"));
    nothing_installed(&s);
    let out = assert_cmd::Command::cargo_bin("repctl")
        .unwrap()
        .args(["--config", "/nonexistent/repctl.toml", "status"])
        .output()
        .unwrap();
    let e = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(2));
    assert!(
        e.contains("/nonexistent/repctl.toml") && e.contains("--config"),
        "{e}"
    );
}

#[test]
fn peer_dsn_that_does_not_resolve() {
    let mut s = Setup::pair(Layout::OneCluster);
    s.write_config(&[]);
    let text = std::fs::read_to_string(&s.config).unwrap();
    let broken = text.replacen(
        "[nodes.remote]\n",
        "[nodes.remote]\npeer_dsn = \"host=no-such-host.invalid port=5432 dbname=x user=postgres\"\n",
        1,
    );
    std::fs::write(&s.config, broken).unwrap();
    let e = err(&s, &["init"]);
    assert!(
        e.contains("node local cannot reach peer remote") && e.contains("peer_dsn"),
        "{e}"
    );
    nothing_installed(&s);
}

#[test]
fn table_mistakes() {
    let s = Setup::pair(Layout::TwoClusters);
    s.repctl_ok(&["init"], 0);
    let local = s.node("local");
    let remote = s.node("remote");
    // Missing on one node.
    local.exec("create table only_here (id int primary key)");
    let e = err(&s, &["add-table", "public.only_here"]);
    assert!(
        e.contains("node remote") && e.contains("does not exist"),
        "{e}"
    );
    // No primary key.
    for n in [local, remote] {
        n.exec("create table nopk (id int, v text)");
    }
    let e = err(&s, &["add-table", "public.nopk"]);
    assert!(
        e.contains("no primary key") && e.contains("add primary key"),
        "{e}"
    );
    // Columns or types differ.
    local.exec("create table shape (id int primary key, v text, extra int)");
    remote.exec("create table shape (id int primary key, v varchar(10))");
    let e = err(&s, &["add-table", "public.shape"]);
    assert!(
        e.contains("columns differ") && e.contains("extra integer") && e.contains("--columns"),
        "{e}"
    );
    // Keys differ.
    local.exec("create table keys (a int, b int, primary key (a, b))");
    remote.exec("create table keys (a int primary key, b int)");
    let e = err(&s, &["add-table", "public.keys"]);
    assert!(e.contains("primary keys differ"), "{e}");
    // Unknown node in --map, unknown column in --columns, a --where that is not a condition.
    for n in [local, remote] {
        n.exec("create table ok (id int primary key, v text)");
    }
    let e = err(&s, &["add-table", "public.ok", "--map", "nosuch=public.ok"]);
    assert!(e.contains("nosuch"), "{e}");
    let e = err(&s, &["add-table", "public.ok", "--columns", "id,nope"]);
    assert!(e.contains("nope"), "{e}");
    let e = err(&s, &["add-table", "public.ok", "--columns", "v"]);
    assert!(e.contains("primary key column \"id\""), "{e}");
    let e = err(&s, &["add-table", "public.ok", "--where", "nope > 1"]);
    assert!(e.contains("--where") && e.contains("node local"), "{e}");
    let e = err(
        &s,
        &["add-table", "public.ok", "--conflict", "node-priority"],
    );
    assert!(e.contains("--node-priority"), "{e}");
    no_tables(&s);
    // Already replicated, with other settings.
    s.repctl_ok(&["add-table", "public.ok"], 0);
    s.repctl_ok(&["add-table", "public.ok"], 0);
    let e = err(&s, &["add-table", "public.ok", "--mode", "async"]);
    assert!(
        e.contains("already replicated") && e.contains("alter-table"),
        "{e}"
    );
    // Not replicated.
    let e = err(&s, &["remove-table", "public.nopk"]);
    assert!(e.contains("not replicated"), "{e}");
    for args in [
        &["verify", "public.nopk"][..],
        &["verify", "public.nopk", "--rows"],
    ] {
        let e = err(&s, args);
        assert!(e.contains("table public.nopk is not replicated"), "{e}");
    }
    // A setting this repctl does not know (a newer one wrote it, or a hand edit) is refused, never
    // taken for a default.
    remote.exec("update repctl.tables set conflict = 'newest-wins' where name = 'public.ok'");
    for args in [
        &["alter-table", "public.ok", "--mode", "async"][..],
        &["verify", "public.ok"],
        &["status"],
    ] {
        let e = err(&s, args);
        assert!(
            e.contains("node remote") && e.contains("public.ok") && e.contains("\"newest-wins\""),
            "{args:?}: {e}"
        );
    }
}

/// origin-wins and target-wins judge concurrency pair by pair, which three nodes defeat (the
/// convergence checker finds histories where they end different): refused there, and the
/// default on three nodes compares versions.
#[test]
fn pairwise_rules_need_two_nodes() {
    let s = Setup::one_cluster(&["a", "b", "c"]);
    for n in &s.nodes {
        n.exec("create table t (id int primary key, v text)");
    }
    s.repctl_ok(&["init"], 0);
    for rule in ["origin-wins", "target-wins"] {
        let e = err(&s, &["add-table", "public.t", "--conflict", rule]);
        assert!(
            e.contains(rule) && e.contains("last-write-wins") && e.contains("public.t"),
            "{e}"
        );
    }
    no_tables(&s);
    s.repctl_ok(&["add-table", "public.t"], 0);
    for n in &s.nodes {
        assert_eq!(
            n.count("select count(*) from repctl.tables where conflict = 'last-write-wins'"),
            1,
            "node {}",
            n.name
        );
    }
    let e = err(
        &s,
        &["alter-table", "public.t", "--conflict", "origin-wins"],
    );
    assert!(e.contains("converges only between two nodes"), "{e}");
}

#[test]
fn commands_before_init_say_so() {
    let s = Setup::pair(Layout::OneCluster);
    for n in &s.nodes {
        n.exec("create table t (id int primary key)");
    }
    let e = err(&s, &["add-table", "public.t"]);
    assert!(e.contains("repctl init"), "{e}");
    let e = err(&s, &["lag"]);
    assert!(e.contains("repctl init"), "{e}");
    nothing_installed(&s);
}

#[test]
fn peers_without_a_password_need_a_superuser_agent() {
    let s = Setup::pair(Layout::OneCluster);
    let text = std::fs::read_to_string(&s.config).unwrap();
    std::fs::write(
        &s.config,
        text.replace("agent_superuser = true", "agent_superuser = false"),
    )
    .unwrap();
    let e = err(&s, &["init"]);
    assert!(
        e.contains("node local cannot reach peer remote as agent role")
            && e.contains("not a superuser")
            && e.contains("agent_superuser = true")
            && e.contains("pg_hba.conf"),
        "{e}"
    );
    nothing_installed(&s);
}

#[test]
fn a_login_role_cannot_be_the_agent() {
    let s = Setup::pair(Layout::OneCluster);
    let text = std::fs::read_to_string(&s.config).unwrap();
    std::fs::write(&s.config, text.replace(&s.agent(), "postgres")).unwrap();
    let e = err(&s, &["init"]);
    assert!(
        e.contains("agent_role postgres exists on node local as a login"),
        "{e}"
    );
    nothing_installed(&s);
    let superuser: bool = s
        .node("local")
        .admin()
        .query_one(
            "select rolsuper and rolcanlogin from pg_roles where rolname = 'postgres'",
            &[],
        )
        .unwrap()
        .get(0);
    assert!(superuser, "init changed the postgres role");
}
