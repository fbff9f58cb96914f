//! `add-table --append-only`: a table without a key (a log) replicates its inserts, each once,
//! and refuses updates, deletes and truncates on every node.

mod common;

use common::{Layout, Setup};

const LOG: &str = "aid int, delta int, note text, at timestamptz default now()";

fn count(s: &Setup, node: &str, table: &str) -> i64 {
    s.node(node)
        .count(&format!("select count(*) from public.{table}"))
}

#[test]
fn inserts_replicate_and_nothing_else_changes_the_table() {
    let s = Setup::pair(Layout::TwoClusters);
    for n in &s.nodes {
        n.exec(&format!("create table public.h ({LOG})"));
    }
    s.repctl_ok(&["init"], 0);
    // Without a key the hint says what a table only ever inserted into can do.
    let out = s.repctl(&["add-table", "public.h"]);
    assert_eq!(out.status.code(), Some(2));
    assert!(String::from_utf8_lossy(&out.stderr).contains("--append-only"));
    let out = s.repctl(&[
        "add-table",
        "public.h",
        "--append-only",
        "--conflict",
        "last-write-wins",
    ]);
    assert_eq!(out.status.code(), Some(2));
    s.repctl_ok(&["add-table", "public.h", "--append-only"], 0);
    // Identical rows are rows of their own, on both nodes.
    for node in ["local", "remote"] {
        s.node(node).exec(&format!(
            "insert into public.h (aid, delta, note) values (1, 5, 'same'), (1, 5, 'same');
             insert into public.h (aid, delta, note) select g, g, '{node}' from generate_series(1, 50) g"
        ));
    }
    s.repctl_ok(&["drain"], 0);
    for node in ["local", "remote"] {
        assert_eq!(count(&s, node, "h"), 104);
        assert_eq!(
            s.node(node)
                .count("select count(*) from public.h where note = 'same'"),
            4
        );
    }
    s.repctl_ok(&["verify"], 0);
    s.repctl_ok(&["status"], 0);
    for node in ["local", "remote"] {
        let mut c = s.node(node).admin();
        for sql in [
            "update public.h set delta = 0 where aid = 1",
            "delete from public.h where aid = 2",
            "truncate public.h",
        ] {
            let e = c.batch_execute(sql).expect_err(sql);
            let e = e.as_db_error().expect("a server error");
            assert!(
                e.message().contains("replicated append-only"),
                "{sql}: {e:?}"
            );
            assert!(e.message().contains("no key"), "{sql}: {e:?}");
        }
        assert_eq!(count(&s, node, "h"), 104);
    }
    // An additive schema change keeps it append-only.
    s.repctl_ok(
        &[
            "alter-table",
            "public.h",
            "--ddl",
            "add column z int default 3",
        ],
        0,
    );
    s.node("local")
        .exec("insert into public.h (aid, delta, note, z) values (9, 9, 'z', 4)");
    s.repctl_ok(&["drain"], 0);
    assert_eq!(
        s.node("remote")
            .count("select z::bigint from public.h where note = 'z'"),
        4
    );
    assert!(
        s.node("remote")
            .admin()
            .batch_execute("delete from public.h")
            .is_err()
    );
}

/// A batch the peer applied but the origin did not hear back about comes again: the peer's record
/// of it leaves it out, so no row lands twice; so does a synchronous flush delivered again by a drain.
#[test]
fn a_replayed_batch_or_flush_lands_once() {
    let s = Setup::pair(Layout::TwoClusters);
    for n in &s.nodes {
        n.exec(&format!(
            "create table public.q ({LOG}); create table public.f ({LOG})"
        ));
    }
    s.repctl_ok(&["init"], 0);
    s.repctl_ok(
        &["add-table", "public.q", "--append-only", "--mode", "async"],
        0,
    );
    s.repctl_ok(
        &["add-table", "public.f", "--append-only", "--mode", "async"],
        0,
    );
    s.node("local")
        .exec("insert into public.q (aid, delta) select g, 1 from generate_series(1, 20) g");
    let (mut origin, mut peer) = (s.node("local").admin(), s.node("remote").admin());
    let b = repctl::apply::batch::read_images(&mut origin, "remote", 100)
        .unwrap()
        .expect("queued");
    for _ in 0..3 {
        repctl::apply::drain::apply_batch(&mut peer, "local", &b, &b.seqs).unwrap();
    }
    assert_eq!(count(&s, "remote", "q"), 20);
    s.repctl_ok(&["drain"], 0);
    assert_eq!(count(&s, "remote", "q"), 20);

    // What repctl.flush sends for a transaction (with its record), applied on the peer as the
    // flush applies it; the changes stay queued, as when the origin stopped waiting.
    s.node("local")
        .exec("insert into public.f (aid, delta) values (1, 1), (1, 1), (2, 2)");
    let payload: String = origin
        .query_one(
            "select (repctl.changes_json(array_agg(q order by q.seq))::jsonb
                      || jsonb_build_object('x', min(q.xid::text), 'h', min(q.xid::text)))::text
               from repctl.queue q where q.peer = 'remote'",
            &[],
        )
        .unwrap()
        .get(0);
    peer.execute("select repctl.apply('local', $1::text::jsonb)", &[&payload])
        .unwrap();
    assert_eq!(count(&s, "remote", "f"), 3);
    s.repctl_ok(&["drain"], 0);
    assert_eq!(count(&s, "remote", "f"), 3);
    s.repctl_ok(&["verify"], 0);
}
