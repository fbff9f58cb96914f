//! Installing what repctl renders: one transaction per node, committed only after every node's
//! script ran, so a failure in a script leaves every node as it was. The commits themselves go node
//! after node: a commit that fails after others succeeded says which nodes committed, and since
//! every script installs over what is there, running the command again completes the others.

pub mod condition;
pub mod copy;
pub mod init;
pub mod schema;
pub mod sequences;
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
    commit_in_order(open)
}

/// Commits each node's open transaction, node after node; a failed commit rolls back the rest and
/// says which nodes had committed.
pub fn commit_in_order(open: Vec<(String, postgres::Transaction<'_>)>) -> Result<()> {
    let mut committed: Vec<String> = Vec::new();
    let mut open = open.into_iter();
    while let Some((name, tx)) = open.next() {
        if let Err(e) = tx.commit() {
            // Dropping the open transactions rolls them back.
            let rolled_back: Vec<String> = open.map(|(n, _)| n).collect();
            let lost = e.as_db_error().is_none();
            let cause = format!("{:#}", anyhow::Error::new(e));
            anyhow::bail!(commit_failed(&name, &cause, lost, &committed, &rolled_back));
        }
        committed.push(name);
    }
    Ok(())
}

/// Which nodes a failed commit left changed, and what to do.
fn commit_failed(
    node: &str,
    cause: &str,
    lost: bool,
    committed: &[String],
    rolled_back: &[String],
) -> String {
    let outcome = if lost {
        "the connection was lost, so it may or may not have committed"
    } else {
        "it did not commit"
    };
    if committed.is_empty() {
        return format!(
            "node {node}: commit failed ({outcome}): {cause}; no other node was changed"
        );
    }
    let not = if rolled_back.is_empty() {
        String::new()
    } else {
        format!("; not committed (rolled back): {}", rolled_back.join(", "))
    };
    format!(
        "node {node}: commit failed ({outcome}): {cause}; these nodes had committed: {}{not}. Running the same \
         command again is safe: it installs over what is there and completes the other nodes",
        committed.join(", ")
    )
}
