use anyhow::Result;
use serde_json::json;

use super::bar::Bar;
use super::output::{columns, connect_reachable, or_dash, print_json, table};
use crate::catalog::TableName;
use crate::config::Config;
use crate::ops::verify;
use crate::ops::verify_rows::{self, RowsReport};

/// Compare replicated tables across nodes: row count and a sum of row hashes over the replicated
/// columns, equal when the values' text forms are; with --rows, the keys that differ.
#[derive(Debug, clap::Args)]
pub struct Args {
    /// Only this table (its replicated name, SCHEMA.TABLE).
    table: Option<String>,
    /// When checksums differ, find the differing keys and what each node has there.
    #[arg(long)]
    rows: bool,
    /// With --rows: list at most N differing keys per table (the search stops there) [default: 10000].
    #[arg(long, value_name = "N", requires = "rows")]
    limit: Option<usize>,
    /// Print JSON instead of a table.
    #[arg(long)]
    json: bool,
}

/// Differing keys listed per table unless --limit says otherwise: the list is held in memory.
const DEFAULT_LIMIT: usize = 10_000;

/// Exit 0 when all nodes agree, 1 when any differ or cannot be checked, 2 on error.
pub fn run(config: &Config, args: Args) -> Result<u8> {
    let only = TableName::logical_arg(args.table.as_deref())?;
    let (mut clients, unreachable) = connect_reachable(config);
    // A node that cannot be read is never "equal", even when no table is replicated elsewhere.
    for (node, err) in &unreachable {
        eprintln!("node {node} could not be checked: {err}");
    }
    let all_read = unreachable.is_empty();
    if args.rows {
        let reports = verify_rows::verify_rows(
            &mut clients,
            only.as_deref(),
            Some(args.limit.unwrap_or(DEFAULT_LIMIT)),
            &mut Bar::default(),
        )?;
        return Ok(show_rows(&reports, args.json)?.max(exit(all_read)));
    }
    let reports = verify::verify(&mut clients, only.as_deref())?;
    let equal = all_read && reports.iter().all(|r| r.equal);
    if args.json {
        print_json(&json!({ "equal": equal, "tables": reports }))?;
    } else {
        let mut t = table(["table", "node", "local table", "rows", "hash", "state"]);
        for r in &reports {
            for n in &r.nodes {
                let state = match (&n.error, r.equal) {
                    // Rows compare only within one shape: the schema is the difference.
                    _ if !r.schema.is_empty() => "SCHEMA DIFFERS (see below)".into(),
                    (Some(e), _) => e.clone(),
                    (None, true) => "equal".into(),
                    (None, false) if r.pending > 0 => format!(
                        "DIFFERS ({} change(s) queued: drain, or see verify --rows)",
                        r.pending
                    ),
                    (None, false) => "DIFFERS".into(),
                };
                t.row([
                    r.table.clone(),
                    n.node.clone(),
                    or_dash(n.table.clone()),
                    or_dash(n.rows),
                    or_dash(n.hash),
                    state,
                ]);
            }
        }
        println!("{t}");
        for r in &reports {
            for d in &r.schema {
                println!(
                    "{}: schema differs on {}: {}; fix: {}",
                    r.table,
                    d.nodes.join(", "),
                    d.problem,
                    d.fix
                );
            }
        }
        if reports.is_empty() {
            println!("no replicated tables");
        }
    }
    Ok(exit(equal))
}

fn exit(equal: bool) -> u8 {
    if equal {
        super::EXIT_OK
    } else {
        super::EXIT_DIFFERENT
    }
}

fn show_rows(reports: &[RowsReport], as_json: bool) -> Result<u8> {
    let equal = reports.iter().all(|r| r.equal);
    if as_json {
        print_json(&json!({ "equal": equal, "tables": reports }))?;
        return Ok(exit(equal));
    }
    for r in reports {
        let rows: Vec<String> = r.rows.iter().map(|(n, c)| format!("{n} {c}")).collect();
        let verdict = match (&r.error, r.equal) {
            (Some(e), _) => format!("ERROR: {e}"),
            (None, true) => "equal".into(),
            (None, false) => format!(
                "{}{} differing key(s)",
                r.differences.len(),
                if r.truncated { "+" } else { "" }
            ),
        };
        // Row counts add up as the blocks are compared: only complete when the search was.
        let counted = if r.truncated || r.error.is_some() {
            String::new()
        } else {
            format!("rows: {}; ", rows.join(", "))
        };
        println!("{}: {verdict} ({counted}{:.2} s)", r.table, r.seconds);
        if !r.differences.is_empty() {
            let nodes: Vec<&str> = r.rows.keys().map(String::as_str).collect();
            let mut header = vec!["key"];
            header.extend(&nodes);
            let mut t = columns(&header);
            for d in &r.differences {
                let mut row = vec![d.key.to_string()];
                row.extend(nodes.iter().map(|n| {
                    d.nodes
                        .get(*n)
                        .map_or("-".into(), |s| s.as_str().to_string())
                }));
                t.add_row(row);
            }
            println!("{t}");
            println!(
                "states are relative to node {}; `repctl repair --from NODE {}` makes the others match NODE",
                r.reference, r.table
            );
        }
        if r.truncated {
            println!("stopped at --limit; more keys may differ");
        }
        if r.pending_count > 0 {
            println!(
                "{} key(s) not compared: a change to them is queued or was being written (run `repctl drain` and verify again){}",
                r.pending_count,
                if r.pending.is_empty() {
                    String::new()
                } else {
                    format!(
                        ", e.g. {}",
                        r.pending
                            .iter()
                            .take(5)
                            .map(|k| k.to_string())
                            .collect::<Vec<_>>()
                            .join(" ")
                    )
                }
            );
        }
    }
    if reports.is_empty() {
        println!("no replicated tables");
    }
    Ok(exit(equal))
}
