//! Which replicated tables a foreign key links on a node: their changes must reach it in the
//! order they were made, across tables.

use std::collections::BTreeSet;

use anyhow::Result;
use postgres::Client;

/// The logical names of the replicated tables that a foreign key links to another replicated
/// table on this node, either way.
pub fn linked_tables(client: &mut Client) -> Result<BTreeSet<String>> {
    Ok(client
        .query(
            "select distinct pg_catalog.unnest(array[a.name, b.name])
               from repctl.tables as a, repctl.tables as b, pg_catalog.pg_constraint as c
              where c.contype = 'f' and a.name <> b.name
                and c.conrelid = pg_catalog.to_regclass(pg_catalog.format('%I.%I', a.nsp, a.rel))
                and c.confrelid = pg_catalog.to_regclass(pg_catalog.format('%I.%I', b.nsp, b.rel))",
            &[],
        )?
        .iter()
        .map(|r| r.get(0))
        .collect())
}
