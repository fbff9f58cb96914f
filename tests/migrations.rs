//! `repctl init` migrates a node from the schema version its repctl.meta records, and refuses a
//! node a newer repctl installed (templates/node/migrations.sql).

mod common;

use common::{Layout, Setup};
use repctl::db::SCHEMA_VERSION;

/// repctl's tables and functions on a node as a set of lines: every column with its type,
/// default, nullability and storage, every table's options and indexes, every function's
/// signature (the queue's partitions, named for the peer, left out).
fn shape(s: &Setup, node: &str) -> Vec<String> {
    let mut c = s.node(node).admin();
    let mut lines: Vec<String> = c
        .query(
            "select format('%s.%s %s %s %s %s', c.relname, a.attname, format_type(a.atttypid, a.atttypmod),
                           a.attnotnull, pg_get_expr(d.adbin, d.adrelid), a.attstorage)
               from pg_attribute a join pg_class c on c.oid = a.attrelid
               left join pg_attrdef d on d.adrelid = a.attrelid and d.adnum = a.attnum
              where c.relnamespace = 'repctl'::regnamespace and c.relkind in ('r', 'p') and not c.relispartition
                and a.attnum > 0 and not a.attisdropped
             union all
             select format('%s %s', c.relname, c.reloptions) from pg_class c
              where c.relnamespace = 'repctl'::regnamespace and c.relkind in ('r', 'p') and not c.relispartition
             union all
             select format('%s %s', c.relname, t.reloptions) from pg_class c join pg_class t on t.oid = c.reltoastrelid
              where c.relnamespace = 'repctl'::regnamespace and not c.relispartition
             union all
             select pg_get_indexdef(i.indexrelid) from pg_index i join pg_class c on c.oid = i.indrelid
              where c.relnamespace = 'repctl'::regnamespace and not c.relispartition
             union all
             select p.oid::regprocedure::text from pg_proc p where p.pronamespace = 'repctl'::regnamespace",
            &[],
        )
        .unwrap()
        .iter()
        .map(|r| r.get(0))
        .collect();
    lines.sort();
    lines
}

fn schema_version(s: &Setup, node: &str) -> Option<String> {
    s.node(node)
        .admin()
        .query_opt(
            "select value from repctl.meta where key = 'schema_version'",
            &[],
        )
        .unwrap()
        .map(|r| r.get(0))
}

#[test]
fn init_upgrades_a_node_installed_before_schema_versions_were_recorded() {
    let s = Setup::pair(Layout::OneCluster);
    s.replicate_new_table("t", "id int primary key, v text", &[]);
    let fresh = shape(&s, "remote");
    assert_eq!(shape(&s, "local"), fresh);
    let apply_fn: String = s
        .node("local")
        .admin()
        .query_one(
            "select apply_fn from repctl.tables where name = 'public.t'",
            &[],
        )
        .unwrap()
        .get(0);
    // `local` as an install from before versions were recorded left it: no version, columns
    // and table options added since missing, functions of old signatures beside the new ones.
    s.node("local").exec(&format!(
        "delete from repctl.meta where key = 'schema_version';
         alter table repctl.tables drop column on_apply_error, drop column former_columns;
         alter table repctl.queue drop column resolved;
         alter table repctl.delivery drop column stopped_seq, reset (fillfactor);
         alter table repctl.applied alter column seqs set storage extended;
         drop index repctl.version_hash;
         create function repctl.hold(text, text[], jsonb[], jsonb[], boolean) returns void language sql as '';
         create function repctl.apply(text, jsonb, bigint[]) returns integer language sql as 'select 0';
         create function repctl.{apply_fn}(jsonb, boolean, text, jsonb) returns void language sql as '';
         create function repctl.{apply_fn}(jsonb, boolean, text, jsonb, text[], text[], boolean) returns void
           language sql as '';
         create function repctl.table_apply(text, jsonb, boolean, text, jsonb, boolean) returns void language sql as '';"
    ));
    assert_ne!(shape(&s, "local"), fresh);
    // Other commands send it to init first.
    let out = s.repctl(&["lag"]);
    assert!(
        String::from_utf8_lossy(&out.stderr).contains(&format!(
            "node local: its repctl schema is version 0, older than this repctl's ({SCHEMA_VERSION}); run `repctl init` to upgrade it"
        )),
        "{out:?}"
    );
    s.repctl_ok(&["init"], 0);
    assert_eq!(shape(&s, "local"), fresh, "migrated as a new install is");
    assert_eq!(
        schema_version(&s, "local"),
        Some(SCHEMA_VERSION.to_string())
    );
    // And it replicates both ways.
    s.node("local")
        .exec("insert into t values (1, 'from local')");
    s.node("remote")
        .exec("insert into t values (2, 'from remote')");
    s.repctl_ok(&["drain"], 0);
    s.repctl_ok(&["verify"], 0);
    assert_eq!(s.node("remote").count("select count(*) from t"), 2);
}

/// Version 1 read a batch's versions keyed by k and had no index by the key's hash: init brings
/// such a node to this version, and once alter-table rendered the table's apply function again,
/// last-write-wins decides by the versions at the changes' positions.
#[test]
fn init_upgrades_a_version_1_node() {
    let s = Setup::pair(Layout::OneCluster);
    s.replicate_new_table(
        "t",
        "id int primary key, v text",
        &["--mode", "async", "--conflict", "last-write-wins"],
    );
    let fresh = shape(&s, "remote");
    s.node("local").exec(
        "update repctl.meta set value = '1' where key = 'schema_version';
         drop index repctl.version_hash;",
    );
    assert_ne!(shape(&s, "local"), fresh);
    let out = s.repctl(&["lag"]);
    assert!(
        String::from_utf8_lossy(&out.stderr).contains(&format!(
            "node local: its repctl schema is version 1, older than this repctl's ({SCHEMA_VERSION})"
        )),
        "{out:?}"
    );
    s.repctl_ok(&["init"], 0);
    assert_eq!(shape(&s, "local"), fresh, "migrated as a new install is");
    assert_eq!(
        schema_version(&s, "local"),
        Some(SCHEMA_VERSION.to_string())
    );
    s.repctl_ok(&["alter-table", "public.t"], 0);
    s.node("local").exec("insert into t values (1, 'first')");
    s.repctl_ok(&["drain"], 0);
    // Both change the row, local last: its version is the newer, on both nodes.
    s.node("remote")
        .exec("update t set v = 'older' where id = 1");
    s.node("local")
        .exec("update t set v = 'newer' where id = 1");
    s.repctl_ok(&["drain"], 0);
    s.repctl_ok(&["verify"], 0);
    assert_eq!(
        s.node("remote")
            .count("select count(*) from t where v = 'newer'"),
        1
    );
}

#[test]
fn init_refuses_a_node_a_newer_repctl_installed() {
    let s = Setup::pair(Layout::OneCluster);
    s.repctl_ok(&["init"], 0);
    s.node("remote").exec(&format!(
        "update repctl.meta set value = '{}' where key = 'schema_version'",
        SCHEMA_VERSION + 1
    ));
    s.node("local")
        .exec("update repctl.meta set value = 'before' where key = 'version'");
    let out = s.repctl(&["init"]);
    assert!(!out.status.success());
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(
        stderr.contains(&format!(
            "node remote: its repctl schema is version {}, newer than this repctl's ({SCHEMA_VERSION}",
            SCHEMA_VERSION + 1
        )),
        "{stderr}"
    );
    // Refused before any node changed.
    let version: String = s
        .node("local")
        .admin()
        .query_one("select value from repctl.meta where key = 'version'", &[])
        .unwrap()
        .get(0);
    assert_eq!(version, "before");
    // The other commands refuse it too.
    let out = s.repctl(&["lag"]);
    assert!(
        String::from_utf8_lossy(&out.stderr).contains(&format!(
            "node remote: its repctl schema is version {}, newer",
            SCHEMA_VERSION + 1
        )),
        "{out:?}"
    );
}
