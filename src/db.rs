//! Connections to nodes: repctl's own admin sessions, with errors that name the node.

use std::str::FromStr;
use std::time::Duration;

use anyhow::{Context, Result};
use postgres::{Client, NoTls};

use crate::config::Node;
use crate::conninfo::ConnInfo;

/// Settings that shape the text form of values; pinned wherever row images are made, read or hashed,
/// so nodes with different defaults still agree.
pub const TEXT_SETTINGS: &[(&str, &str)] = &[
    ("datestyle", "ISO, YMD"),
    ("intervalstyle", "postgres"),
    ("timezone", "UTC"),
    ("extra_float_digits", "3"),
    ("bytea_output", "hex"),
];

/// Connects to a node as configured by `dsn`.
pub fn connect(node: &Node) -> Result<Client> {
    let shown = ConnInfo::parse(&node.dsn)
        .map(|c| c.to_string())
        .unwrap_or_default();
    let mut config = postgres::Config::from_str(&node.dsn).with_context(|| {
        format!(
            "node {}: dsn is not a valid connection string ({shown})",
            node.name
        )
    })?;
    if config.get_application_name().is_none() {
        config.application_name("repctl");
    }
    if config.get_connect_timeout().is_none() {
        config.connect_timeout(Duration::from_secs(10));
    }
    let mut client = config
        .connect(NoTls)
        .with_context(|| format!("node {}: cannot connect ({shown})", node.name))?;
    // Admin work waits for locks a bounded time rather than queueing behind a long transaction forever.
    client
        .batch_execute("set lock_timeout = '30s'")
        .with_context(|| format!("node {}: setting up the session", node.name))?;
    Ok(client)
}

/// Pins TEXT_SETTINGS for the current transaction.
pub fn pin_text_settings(tx: &mut impl postgres::GenericClient) -> Result<()> {
    for (name, value) in TEXT_SETTINGS {
        tx.query_one("select set_config($1, $2, true)", &[name, value])?;
    }
    Ok(())
}

/// The installed repctl version on a node, or None when `repctl init` has not run there.
pub fn installed_version(client: &mut Client) -> Result<Option<String>> {
    let installed: bool = client
        .query_one("select to_regclass('repctl.meta') is not null", &[])?
        .get(0);
    if !installed {
        return Ok(None);
    }
    Ok(client
        .query_opt("select value from repctl.meta where key = 'version'", &[])?
        .map(|r| r.get(0)))
}

/// Fails with what to do when a node has no repctl schema.
pub fn require_installed(client: &mut Client, node: &str) -> Result<()> {
    if installed_version(client)?.is_none() {
        anyhow::bail!("node {node}: repctl is not installed there; run `repctl init` first");
    }
    Ok(())
}
