//! Key sequences (serial and identity columns of a replicated table's key) and whether the nodes'
//! progressions are disjoint: interleaved, each node stepping by `STRIDE` from its own offset.

use anyhow::{Context, Result};
use postgres::GenericClient;

use super::TableName;

/// The common step of interleaved sequences: room for this many nodes, so nodes added later get
/// an offset of their own without renumbering the others.
pub const STRIDE: i64 = 10;

/// The sequence owned by one key column on one node.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct KeySequence {
    pub column: String,
    /// Its schema-qualified name as SQL.
    pub sequence: String,
    pub increment: i64,
    /// The last value handed out, or the next one before it is (after a start or restart).
    pub last: i64,
}

impl KeySequence {
    /// Which progression modulo its increment the sequence hands out.
    pub fn residue(&self) -> i64 {
        self.last.rem_euclid(self.increment.max(1))
    }
}

/// The sequences owned by `key`'s columns of `table` (serial, identity).
pub fn key_sequences(
    client: &mut impl GenericClient,
    node: &str,
    table: &TableName,
    key: &[String],
) -> Result<Vec<KeySequence>> {
    let rows = client
        .query(
            "select k.col, pg_catalog.format('%I.%I', n.nspname, c.relname), q.seqincrement
               from unnest($2::text[]) with ordinality as k(col, i)
              cross join lateral (select pg_catalog.pg_get_serial_sequence($1, k.col)::pg_catalog.regclass as seq) s
               join pg_catalog.pg_sequence q on q.seqrelid = s.seq
               join pg_catalog.pg_class c on c.oid = s.seq
               join pg_catalog.pg_namespace n on n.oid = c.relnamespace
              order by k.i",
            &[&table.sql(), &key],
        )
        .with_context(|| format!("node {node}: reading the key sequences of {table}"))?;
    rows.iter()
        .map(|r| {
            let sequence: String = r.get(1);
            // The relation's own last_value: after a restart it is the next value, which
            // pg_sequence_last_value does not show.
            let last: i64 = client
                .query_one(&format!("select last_value from {sequence}"), &[])
                .with_context(|| format!("node {node}: reading sequence {sequence}"))?
                .get(0);
            Ok(KeySequence {
                column: r.get(0),
                sequence,
                increment: r.get(2),
                last,
            })
        })
        .collect()
}

/// This node's offset among interleaved sequences (repctl.meta sequence_offset), if it has one.
pub fn node_offset(client: &mut impl GenericClient, node: &str) -> Result<Option<i64>> {
    let row = client
        .query_opt(
            "select value::bigint from repctl.meta where key = 'sequence_offset'",
            &[],
        )
        .with_context(|| format!("node {node}: reading its sequence offset"))?;
    Ok(row.map(|r| r.get(0)))
}

/// What keeps the key sequences of one table (`per_node`: each node's) from being interleaved:
/// per key column, the nodes concerned and why they can hand out the same values.
pub fn not_interleaved(per_node: &[(String, Vec<KeySequence>)]) -> Vec<(Vec<String>, String)> {
    let mut columns: Vec<&str> = Vec::new();
    for (_, seqs) in per_node {
        for s in seqs {
            if !columns.contains(&s.column.as_str()) {
                columns.push(&s.column);
            }
        }
    }
    let mut problems = Vec::new();
    for column in columns {
        let on: Vec<(&str, &KeySequence)> = per_node
            .iter()
            .filter_map(|(n, seqs)| {
                seqs.iter()
                    .find(|s| s.column == column)
                    .map(|s| (n.as_str(), s))
            })
            .collect();
        if on.len() < 2 {
            continue;
        }
        let nodes: Vec<String> = on.iter().map(|(n, _)| n.to_string()).collect();
        let increments: Vec<i64> = on.iter().map(|(_, s)| s.increment).collect();
        if increments
            .iter()
            .any(|&i| i != increments[0] || i < on.len() as i64)
        {
            problems.push((
                nodes,
                format!(
                    "key column {column}'s sequences step by {} on these nodes: they hand out the same values",
                    increments.iter().map(i64::to_string).collect::<Vec<_>>().join(", ")
                ),
            ));
            continue;
        }
        for (i, (a, sa)) in on.iter().enumerate() {
            if let Some((b, _)) = on[i + 1..]
                .iter()
                .find(|(_, sb)| sb.residue() == sa.residue())
            {
                problems.push((
                    vec![a.to_string(), b.to_string()],
                    format!(
                        "key column {column}'s sequences on nodes {a} and {b} hand out the same values (step {}, offset {})",
                        sa.increment,
                        sa.residue()
                    ),
                ));
                break;
            }
        }
    }
    problems
}

#[cfg(test)]
mod tests {
    use super::*;

    fn seq(increment: i64, last: i64) -> Vec<KeySequence> {
        vec![KeySequence {
            column: "id".into(),
            sequence: "t_id_seq".into(),
            increment,
            last,
        }]
    }

    #[test]
    fn interleaved_means_one_stride_and_distinct_offsets() {
        let nodes = |specs: &[(i64, i64)]| -> Vec<(String, Vec<KeySequence>)> {
            specs
                .iter()
                .enumerate()
                .map(|(i, &(inc, last))| (format!("n{i}"), seq(inc, last)))
                .collect()
        };
        assert!(not_interleaved(&nodes(&[(10, 21), (10, 42), (10, 3)])).is_empty());
        assert_eq!(not_interleaved(&nodes(&[(1, 5), (1, 5)])).len(), 1);
        assert_eq!(
            not_interleaved(&nodes(&[(10, 21), (10, 31)]))[0].0,
            ["n0", "n1"]
        );
        assert_eq!(not_interleaved(&nodes(&[(10, 1), (5, 2)])).len(), 1);
        // One node alone cannot collide.
        assert!(not_interleaved(&nodes(&[(1, 5)])).is_empty());
    }
}
