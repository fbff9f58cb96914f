//! Faults: each ends with all nodes equal and nothing lost.

mod common;

use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use common::{Layout, Setup};

fn sync_pair() -> Setup {
    let s = Setup::owned(&["local", "remote"], false);
    s.replicate_new_table("f", "id int primary key, v text", &[]);
    s
}

/// The peer stops between a transaction's first write and its commit: the commit succeeds
/// promptly and the change waits in the queue.
#[test]
fn peer_stopped_in_the_middle_of_a_synchronous_transaction() {
    let s = sync_pair();
    let mut c = s.node("local").admin();
    c.batch_execute("insert into f values (0, 'before')")
        .unwrap();
    let mut tx = c.transaction().unwrap();
    tx.batch_execute("insert into f values (1, 'during')")
        .unwrap();
    s.node("remote").cluster_mut(|c| c.stop()).unwrap();
    let started = Instant::now();
    tx.commit().unwrap();
    assert!(
        started.elapsed() < Duration::from_secs(15),
        "commit took {:?}",
        started.elapsed()
    );
    assert_eq!(
        s.node("local").count("select count(*) from repctl.queue"),
        1
    );
    s.node("remote").cluster_mut(|c| c.start_again()).unwrap();
    s.repctl_ok(&["drain"], 0);
    s.repctl_ok(&["verify"], 0);
}

/// A frozen peer (SIGSTOP) answers nothing, though its kernel still accepts the connection and the
/// bytes: a new session's connection gives up after connect_timeout instead of hanging (on 16 and
/// later through repctl.peer_answers, as dblink_connect ignores it there), later commits queue
/// behind the change, and it is delivered once the peer thaws.
#[test]
fn peer_frozen_with_sigstop() {
    let s = sync_pair();
    let local = s.node("local");
    local.exec("insert into f values (1, 'warm the cached connection')");
    s.node("remote").cluster_mut(|c| c.freeze()).unwrap();
    let started = Instant::now();
    local.exec("insert into f values (2, 'while frozen')");
    let took = started.elapsed();
    assert!(took < Duration::from_secs(20), "writer hung for {took:?}");
    assert_eq!(local.count("select count(*) from repctl.queue"), 1);
    // A new session's first connection attempt is bounded by connect_timeout too.
    let started = Instant::now();
    local.exec("insert into f values (3, 'new session')");
    assert!(
        started.elapsed() < Duration::from_secs(20),
        "connect hung for {:?}",
        started.elapsed()
    );
    s.node("remote").cluster_mut(|c| c.thaw()).unwrap();
    s.repctl_ok(&["drain"], 0);
    s.repctl_ok(&["verify"], 0);
}

/// The origin restarts while changes are queued: the queue is durable.
#[test]
fn origin_restarted_with_changes_queued() {
    let s = Setup::owned(&["local", "remote"], false);
    s.replicate_new_table("f", "id int primary key, v text", &["--mode", "async"]);
    s.node("local")
        .exec("insert into f select g, 'q' from generate_series(1, 1000) g");
    s.node("local").cluster_mut(|c| c.restart()).unwrap();
    assert_eq!(
        s.node("local").count("select count(*) from repctl.queue"),
        1000
    );
    s.repctl_ok(&["drain"], 0);
    s.repctl_ok(&["verify"], 0);
}

/// Runs repctl and kills it with SIGKILL after `after`.
fn killed(s: &Setup, args: &[&str], after: Duration) {
    let mut child = Command::new(assert_cmd::cargo::cargo_bin("repctl"))
        .arg("--config")
        .arg(&s.config)
        .args(args)
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .unwrap();
    std::thread::sleep(after);
    let _ = child.kill();
    child.wait().unwrap();
}

/// repctl killed at many points in init, add-table, drain and remove-table: running the command
/// again finishes it (or it had cleanly not happened), and replication works afterwards.
#[test]
fn killed_in_the_middle_of_every_changing_command() {
    let s = Setup::owned(&["local", "remote"], false);
    for n in &s.nodes {
        n.exec("create table f (id int primary key, v text)");
    }
    for ms in [5, 20, 40, 80, 150] {
        let after = Duration::from_millis(ms);
        killed(&s, &["init"], after);
        s.repctl_ok(&["init"], 0);
        killed(&s, &["add-table", "public.f", "--mode", "async"], after);
        s.repctl_ok(&["add-table", "public.f", "--mode", "async"], 0);
        s.repctl_ok(&["status"], 0);
        s.node("local").exec(&format!("insert into f select g, '{ms}' from generate_series({ms} * 100000, {ms} * 100000 + 20000) g"));
        killed(&s, &["drain", "--batch-size", "500"], after);
        s.repctl_ok(&["drain"], 0);
        s.repctl_ok(&["verify"], 0);
        killed(&s, &["remove-table", "public.f"], after);
        let again = s.repctl(&["remove-table", "public.f"]);
        let err = String::from_utf8_lossy(&again.stderr);
        assert!(
            again.status.success() || err.contains("not replicated on any node"),
            "{err}"
        );
        for n in &s.nodes {
            assert_eq!(n.count("select count(*) from repctl.tables"), 0);
            assert_eq!(
                n.count("select count(*) from pg_trigger where tgrelid = 'public.f'::regclass"),
                0
            );
        }
    }
}

/// Makes a later node's commit fail: a deferred trigger on one of repctl's tables refuses at commit.
fn refuse_commits_on(s: &Setup, node: &str, table: &str) {
    s.node(node).exec(&format!(
        "create function public.refuse() returns trigger language plpgsql as
           $$ begin raise exception 'refused at commit'; end $$;
         create constraint trigger refuse after insert or update on {table}
           deferrable initially deferred for each row execute function public.refuse()"
    ));
}

fn allow_commits_on(s: &Setup, node: &str, table: &str) {
    s.node(node).exec(&format!(
        "drop trigger refuse on {table}; drop function public.refuse()"
    ));
}

/// init and add-table commit node after node: a later node failing at commit is reported with the
/// nodes that did commit, and running the command again completes the rest.
#[test]
fn a_later_node_failing_at_commit_says_which_committed() {
    let s = Setup::pair(Layout::TwoClusters);
    for n in &s.nodes {
        n.exec("create table t (id int primary key)");
    }
    s.repctl_ok(&["init"], 0);
    // An upgrade that fails on the second node.
    let remote = s.node("remote");
    remote.exec("update repctl.meta set value = '0.0.1' where key = 'version'");
    refuse_commits_on(&s, "remote", "repctl.meta");
    let failed = |args: &[&str]| {
        let out = s.repctl(args);
        assert_eq!(out.status.code(), Some(2), "{args:?}");
        String::from_utf8_lossy(&out.stderr).to_string()
    };
    let e = failed(&["init"]);
    assert!(
        e.contains(
            "node remote: commit failed (it did not commit): db error: ERROR: refused at commit; \
             these nodes had committed: local."
        ) && e.contains("Running the same command again is safe"),
        "{e}"
    );
    allow_commits_on(&s, "remote", "repctl.meta");
    s.repctl_ok(&["init"], 0);
    assert_eq!(
        remote.count("select count(*) from repctl.meta where key = 'version' and value = '0.0.1'"),
        0
    );
    refuse_commits_on(&s, "remote", "repctl.tables");
    let e = failed(&["add-table", "public.t"]);
    assert!(
        e.contains("refused at commit; these nodes had committed: local."),
        "{e}"
    );
    let replicated = |n: &str| s.node(n).count("select count(*) from repctl.tables");
    assert_eq!((replicated("local"), replicated("remote")), (1, 0));
    allow_commits_on(&s, "remote", "repctl.tables");
    s.repctl_ok(&["add-table", "public.t"], 0);
    s.node("local").exec("insert into t values (1)");
    s.repctl_ok(&["drain"], 0);
    assert_eq!(remote.count("select count(*) from t"), 1);
    s.repctl_ok(&["verify"], 0);
}
