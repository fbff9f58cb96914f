//! Synchronous mode's commit path (issue 15): a transaction's first changes are held in the
//! transaction and sent at commit without the queue; past the hold limit, after a statement of an
//! asynchronous table, after an early flush, or behind changes queued earlier, they queue in
//! order; crossing flushes on the same row give up quickly.

mod common;

use std::time::{Duration, Instant};

use common::{Layout, Setup};
use serde_json::Value;

fn pair_with(table: &str, columns: &str, args: &[&str]) -> Setup {
    let s = Setup::pair(Layout::OneCluster);
    s.replicate_new_table(table, columns, args);
    s
}

fn delivered(s: &Setup, from: &str, to: &str) -> i64 {
    let out = s.repctl(&["lag", "--json"]);
    let pairs: Vec<Value> = serde_json::from_slice(&out.stdout).expect("lag --json prints JSON");
    pairs
        .iter()
        .find(|p| p["from"] == from && p["to"] == to)
        .expect("pair in lag")["delivered_total"]
        .as_i64()
        .unwrap()
}

/// A writer on each node, each in a transaction that has updated row 1 of `table` (id, v) and
/// holds its lock; each has opened its cached peer connection before, so their commits only apply.
fn writers_holding_row_1(s: &Setup, table: &str) -> Vec<postgres::Client> {
    let mut writers: Vec<_> = ["local", "remote"]
        .into_iter()
        .enumerate()
        .map(|(i, n)| {
            let mut c = s.node(n).admin();
            c.batch_execute(&format!(
                "update {table} set v = {} where id = 1",
                -1 - i as i32
            ))
            .unwrap();
            c
        })
        .collect();
    for (i, c) in writers.iter_mut().enumerate() {
        c.batch_execute(&format!(
            "begin; update {table} set v = {} where id = 1",
            i + 1
        ))
        .unwrap_or_else(|e| panic!("writer {i}: {e}"));
    }
    writers
}

fn queued(s: &Setup, node: &str) -> i64 {
    s.node(node).count("select count(*) from repctl.queue")
}

/// Issue 14 item 4: changes delivered at commit count in lag's `delivered`, for small
/// transactions (held) and large ones (through the queue) alike.
#[test]
fn lag_counts_what_synchronous_commits_delivered() {
    let s = pair_with("d", "id int primary key, v text", &[]);
    let local = s.node("local");
    for i in 1..=3 {
        local.exec(&format!("insert into d values ({i}, 'one')"));
    }
    local.exec("insert into d select g, 'many' from generate_series(10, 209) g");
    assert_eq!(queued(&s, "local"), 0);
    assert_eq!(s.node("remote").count("select count(*) from d"), 203);
    assert_eq!(delivered(&s, "local", "remote"), 203);
    s.repctl_ok(&["verify"], 0);
}

/// A transaction of many small statements holds the first ones, then queues them all in order
/// and ships them from the queue; key changes, deletes and re-inserts of the same keys survive.
#[test]
fn a_transaction_past_the_hold_limit_keeps_its_order() {
    let s = pair_with("h", "id int primary key, v text", &[]);
    let mut c = s.node("local").admin();
    let mut sql = String::from("begin;");
    for i in 1..=150 {
        sql.push_str(&format!("insert into h values ({i}, 'v{i}');"));
        if i % 7 == 0 {
            sql.push_str(&format!("update h set id = -id where id = {};", i - 3));
        }
        if i % 11 == 0 {
            sql.push_str(&format!(
                "delete from h where id = {i}; insert into h values ({i}, 'again');"
            ));
        }
    }
    sql.push_str("commit;");
    c.batch_execute(&sql).unwrap();
    assert_eq!(queued(&s, "local"), 0);
    s.repctl_ok(&["verify", "--rows"], 0);
}

/// A statement of an asynchronous table queues what the transaction held before it, so the
/// transaction's changes reach the peer in the order they were made; a synchronous table's
/// change after an asynchronous one queues behind it.
#[test]
fn synchronous_and_asynchronous_tables_in_one_transaction_keep_their_order() {
    let s = Setup::pair(Layout::OneCluster);
    s.replicate_new_table("parent", "id int primary key", &[]);
    s.replicate_new_table(
        "child",
        "id int primary key, parent int not null references parent",
        &["--mode", "async"],
    );
    let mut c = s.node("local").admin();
    c.batch_execute(
        "begin; insert into parent values (1); insert into child values (1, 1); insert into parent values (2); commit",
    )
    .unwrap();
    // Shipped at commit, all three, parent first (the peer's foreign key would refuse otherwise).
    assert_eq!(queued(&s, "local"), 0);
    assert_eq!(s.node("remote").count("select count(*) from child"), 1);
    // Asynchronous first: it stays queued, and the synchronous change after it waits behind it.
    c.batch_execute(
        "begin; insert into child values (2, 1); insert into parent values (3); commit",
    )
    .unwrap();
    assert_eq!(queued(&s, "local"), 2);
    assert_eq!(
        s.node("local")
            .count("select count(*) from repctl.queue where tbl = 'public.parent' and seq > (select seq from repctl.queue where tbl = 'public.child')"),
        1
    );
    s.repctl_ok(&["drain"], 0);
    s.repctl_ok(&["verify", "--rows"], 0);
}

/// After a flush fired early (SET CONSTRAINTS ALL IMMEDIATE), the transaction's later changes are
/// queued, not held for a flush that will not come.
#[test]
fn changes_after_an_early_flush_are_queued() {
    let s = pair_with("e", "id int primary key", &[]);
    let mut c = s.node("local").admin();
    c.batch_execute(
        "begin; set constraints all immediate; insert into e values (1); insert into e values (2); commit",
    )
    .unwrap();
    // The flush fired when the first statement armed it, before any change: both are queued.
    assert_eq!(s.node("remote").count("select count(*) from e"), 0);
    assert_eq!(queued(&s, "local"), 2);
    s.repctl_ok(&["drain"], 0);
    s.repctl_ok(&["verify"], 0);
}

/// Two nodes committing changes of the same row at once each hold the row the other's apply
/// waits for: one apply gives up after the flush's short lock_timeout, its changes queue, and
/// neither writer waits anywhere near the 2 s it used to.
#[test]
fn crossing_flushes_on_the_same_row_give_up_quickly() {
    let s = pair_with(
        "x",
        "id int primary key, v int",
        &["--conflict", "last-write-wins"],
    );
    s.node("local").exec("insert into x values (1, 0)");
    let mut writers = writers_holding_row_1(&s, "x");
    // Both rows are locked on their own node; commit both at once.
    let started = Instant::now();
    let took: Vec<Duration> = std::thread::scope(|scope| {
        let handles: Vec<_> = writers
            .iter_mut()
            .map(|c| {
                scope.spawn(move || {
                    c.batch_execute("commit").unwrap();
                    started.elapsed()
                })
            })
            .collect();
        handles.into_iter().map(|h| h.join().unwrap()).collect()
    });
    for t in &took {
        assert!(*t < Duration::from_millis(1500), "a commit took {t:?}");
    }
    // The change that gave up is queued and delivered by a drain. (The two may still end
    // different: an apply decides on the versions it read before waiting for the row lock, see
    // the report of issue 15; not this test's subject.)
    s.repctl_ok(&["drain"], 0);
}

/// Crossing flushes where one apply waits for the row lock while the other node's commit comes and
/// goes: the apply decides on the row as it is once it holds the lock (that commit's change), not
/// as its statement's snapshot saw it, so the conflict is seen and both nodes end with one row.
#[test]
fn an_apply_that_waited_for_the_row_decides_on_its_newest_version() {
    let s = pair_with("y", "id int primary key, v int", &[]);
    s.node("local").exec("insert into y values (1, 0)");
    let mut writers = writers_holding_row_1(&s, "y");
    let (local, remote) = writers.split_at_mut(1);
    std::thread::scope(|scope| {
        // local's apply on remote waits for remote's row lock and gives up after the flush's
        // lock timeout; remote's commit starts meanwhile and its apply on local waits for local's
        // commit, then goes on with a snapshot from before it.
        scope.spawn(|| local[0].batch_execute("commit").unwrap());
        std::thread::sleep(Duration::from_millis(40));
        remote[0].batch_execute("commit").unwrap();
    });
    s.repctl_ok(&["drain"], 0);
    s.repctl_ok(&["verify", "--rows"], 0);
}
