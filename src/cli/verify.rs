use anyhow::Result;
use serde_json::json;

use super::output::{connect_reachable, or_dash, print_json, table};
use crate::catalog::TableName;
use crate::config::Config;
use crate::ops::verify;

/// Compare replicated tables across nodes: row count and sum(hashtext(row::text)) over the replicated columns.
#[derive(Debug, clap::Args)]
pub struct Args {
    /// Only this table (its replicated name, SCHEMA.TABLE).
    table: Option<String>,
    /// Print JSON instead of a table.
    #[arg(long)]
    json: bool,
}

/// Exit 0 when all nodes agree, 1 when any differ or cannot be checked, 2 on error.
pub fn run(config: &Config, args: Args) -> Result<u8> {
    let only = args
        .table
        .as_deref()
        .map(TableName::parse)
        .transpose()?
        .map(|t| t.to_string());
    let (mut clients, _) = connect_reachable(config);
    let reports = verify::verify(&mut clients, only.as_deref())?;
    let equal = reports.iter().all(|r| r.equal);
    if args.json {
        print_json(&json!({ "equal": equal, "tables": reports }))?;
    } else {
        let mut t = table(&["table", "node", "local table", "rows", "hash", "state"]);
        for r in &reports {
            for n in &r.nodes {
                let state = match (&n.error, r.equal) {
                    (Some(e), _) => e.clone(),
                    (None, true) => "equal".into(),
                    (None, false) => "DIFFERS".into(),
                };
                t.add_row(vec![
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
        if reports.is_empty() {
            println!("no replicated tables");
        }
    }
    Ok(if equal {
        super::EXIT_OK
    } else {
        super::EXIT_DIFFERENT
    })
}
