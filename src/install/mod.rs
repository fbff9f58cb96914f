//! Installing what repctl renders: one transaction per node, all committed only after every node's
//! script ran, so a failure on any node leaves every node as it was.

pub mod condition;
pub mod copy;
pub mod init;
pub mod table;

use anyhow::{Context, Result};
use postgres::Client;

/// The SQL one node would run.
pub struct Script {
    pub node: String,
    pub sql: String,
    /// A value the script reads with current_setting(): bound as a parameter before it runs.
    pub secret: Option<Secret>,
}

/// Secret input to a script (passwords): set transaction-locally, shown masked in a dry run.
pub struct Secret {
    pub setting: &'static str,
    pub value: String,
    pub masked: String,
}

/// Prints scripts as a dry run does: per node, exactly what would run.
pub fn print_scripts(scripts: &[Script]) {
    for s in scripts {
        println!("-- ===== node {} =====", s.node);
        println!("begin;");
        if let Some(secret) = &s.secret {
            println!(
                "select set_config({}, {}, true);  -- bound as a parameter; passwords masked here",
                crate::render::quote_literal(secret.setting),
                crate::render::quote_literal(&secret.masked)
            );
        }
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
        if let Some(secret) = &script.secret {
            tx.query_one(
                "select set_config($1, $2, true)",
                &[&secret.setting, &secret.value],
            )
            .with_context(|| format!("node {name}: passing {}", secret.setting))?;
        }
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
