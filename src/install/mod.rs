//! Installing what repctl renders: one transaction per node, all committed only after every node's
//! script ran, so a failure on any node leaves every node as it was.

pub mod copy;
pub mod init;
pub mod table;

use anyhow::{Context, Result};
use postgres::Client;

/// The SQL one node would run.
pub struct Script {
    pub node: String,
    pub sql: String,
}

/// Prints scripts as a dry run does: per node, exactly what would run.
pub fn print_scripts(scripts: &[Script]) {
    for s in scripts {
        println!("-- ===== node {} =====", s.node);
        println!("begin;");
        print!("{}", s.sql);
        println!("commit;");
    }
}

/// Runs each script in its own transaction on its node; commits only when all succeeded.
pub fn run_scripts(clients: &mut [(String, Client)], scripts: &[Script]) -> Result<()> {
    let mut open = Vec::new();
    for (name, client) in clients.iter_mut() {
        let Some(script) = scripts.iter().find(|s| &s.node == name) else {
            continue;
        };
        let mut tx = client
            .transaction()
            .with_context(|| format!("node {name}: begin"))?;
        tx.batch_execute(&script.sql).with_context(|| {
            format!("node {name}: installing failed; no node was changed (the SQL is shown by --dry-run)")
        })?;
        open.push((name.clone(), tx));
    }
    for (name, tx) in open {
        tx.commit()
            .with_context(|| format!("node {name}: commit failed"))?;
    }
    Ok(())
}
