use std::collections::BTreeMap;

use anyhow::{Context, Result};

use super::bar::Bar;
use super::output::install_or_print;
use crate::apply::drain;
use crate::catalog::TableName;
use crate::catalog::ident::parse_column_list;
use crate::catalog::{ConflictRule, Mode, OnApplyError, OnPeerFailure, Settings};
use crate::config::Config;
use crate::install::table::{self, AddTable};
use crate::install::{copy, init};
use crate::progress::NoProgress;

/// Replicate a table between all nodes: reads its primary key, installs capture triggers and the apply function.
#[derive(Debug, clap::Args)]
pub struct Args {
    /// The table, SCHEMA.TABLE; also the name every node knows it by.
    table: String,
    /// Use another table on one node, NODE=SCHEMA.TABLE (repeatable).
    #[arg(long = "map", value_name = "NODE=SCHEMA.TABLE")]
    map: Vec<String>,
    /// Replicate only these columns (must include the primary key), comma-separated, names as
    /// they are; double-quote a name holding a comma ("a,b", quotes doubled inside).
    #[arg(long, value_name = "COLUMNS")]
    columns: Option<String>,
    /// Identify rows by these columns instead of the primary key (a table without one): NOT
    /// NULL columns over which a unique index is built, as REPLICA IDENTITY USING INDEX.
    #[arg(long, value_name = "COL[,COL]")]
    key: Option<String>,
    /// A table without a key (a log, an audit trail, pgbench_history): inserts replicate (each
    /// once, a replayed batch included), while an update, delete or truncate of it is refused on
    /// every node, since no other node could tell which row it meant.
    #[arg(long, conflicts_with_all = ["key", "conflict", "conflict_column", "node_priority", "delta", "merge_columns", "interleave_sequences"])]
    append_only: bool,
    /// Replicate only rows matching this SQL condition over the table's columns.
    #[arg(long = "where", value_name = "SQL")]
    where_clause: Option<String>,
    /// sync: ship at commit; async: queue only, delivered by drain.
    #[arg(long, value_enum, default_value = "sync")]
    mode: Mode,
    /// When a peer cannot take a change: keep it queued, or fail the local write.
    #[arg(long, value_enum, default_value = "queue")]
    on_peer_failure: OnPeerFailure,
    /// When a peer refuses a change: stop the pair there, or park the change (see `repctl queue`) and go on.
    #[arg(long, value_enum, default_value = "stop")]
    on_apply_error: OnApplyError,
    /// How conflicts (two nodes changed the same row) are resolved [default: origin-wins with two
    /// nodes, last-write-wins with three or more].
    #[arg(long, value_enum)]
    conflict: Option<ConflictRule>,
    /// With last-write-wins: compare this timestamp column instead of commit times.
    #[arg(long, value_name = "COL")]
    conflict_column: Option<String>,
    /// With node-priority: nodes, highest priority first, comma-separated.
    #[arg(long, value_delimiter = ',', value_name = "NODE,...")]
    node_priority: Vec<String>,
    /// Numeric columns applied as increments (counters, balances): every node ends with the sum
    /// of all nodes' changes, whatever the conflict rule; comma-separated.
    #[arg(long, value_delimiter = ',', value_name = "COL,...")]
    delta: Vec<String>,
    /// An update applies only the columns it changed, so concurrent changes of different columns
    /// of a row all survive (with --conflict origin-wins or error).
    #[arg(long)]
    merge_columns: bool,
    /// Give the sequences owned by the key columns (serial, identity) disjoint progressions per
    /// node: each steps by 10 from the node's own offset (room for 10 nodes), restarted above the
    /// highest key on any node, so inserts on every node never pick the same key.
    #[arg(long)]
    interleave_sequences: bool,
    /// The table already holds rows on NODE: copy them to the other nodes (writers may go on).
    #[arg(long, value_name = "NODE")]
    copy_from: Option<String>,
    /// With --copy-from: discard the rows the other nodes' tables hold instead of refusing.
    #[arg(long, requires = "copy_from")]
    truncate_peers: bool,
    /// Print the SQL each node would run and change nothing.
    #[arg(long)]
    dry_run: bool,
}

pub fn run(config: &Config, args: Args) -> Result<u8> {
    let name = TableName::parse(&args.table)?;
    let mut map = BTreeMap::new();
    for m in &args.map {
        let (node, table) = m
            .split_once('=')
            .with_context(|| format!("--map {m:?}: write NODE=SCHEMA.TABLE"))?;
        config.node(node)?;
        map.insert(node.to_string(), TableName::parse(table)?);
    }
    let req = AddTable {
        name,
        map,
        columns: args.columns.as_deref().map(parse_column_list).transpose()?,
        history: Default::default(),
        key: if args.append_only {
            Some(Vec::new())
        } else {
            args.key.as_deref().map(parse_column_list).transpose()?
        },
        settings: Settings {
            where_clause: args.where_clause,
            mode: args.mode,
            on_peer_failure: args.on_peer_failure,
            on_apply_error: args.on_apply_error,
            // An append-only table has no conflicts: none to resolve, were one to come, stop.
            conflict: args.conflict.unwrap_or(if args.append_only {
                ConflictRule::Error
            } else if config.nodes.len() > 2 {
                ConflictRule::LastWriteWins
            } else {
                ConflictRule::OriginWins
            }),
            conflict_column: args.conflict_column,
            node_priority: args.node_priority,
            delta: args.delta,
            merge_columns: args.merge_columns,
            interleave_sequences: args.interleave_sequences,
            append_only: args.append_only,
        },
    };
    let mut clients = init::connect_all(config)?;
    if let Some(source) = &args.copy_from {
        config.node(source)?;
        if !args.dry_run {
            let c = copy::add_with_copy(
                &mut clients,
                &req,
                source,
                args.truncate_peers,
                &mut Bar::default(),
                &mut |origin, peer, from, to, limit| {
                    let r = drain::drain_pair(
                        origin,
                        peer,
                        from,
                        to,
                        Some(limit),
                        drain::DEFAULT_BATCH,
                        &mut NoProgress,
                    )?;
                    Ok((r.delivered, r.error))
                },
            )?;
            println!(
                "copied {} row(s) of {} from node {source} in {:.1} s; then delivered {} queued change(s) \
                 ({} made during the copy were already in it)",
                c.rows, req.name, c.seconds, c.delivered_after, c.already_copied
            );
            for why in &c.left {
                println!("left queued: {why}");
            }
            for node in &config.nodes {
                println!("node {}: {}", node.name, replicating(&req, &node.name));
            }
            super::alter_table::interleave(&mut clients, &req, false)?;
            return Ok(super::EXIT_OK);
        }
        println!(
            "-- --copy-from {source}: installed in async mode first, rows copied, then switched to {:?}",
            req.settings.mode
        );
    }
    let scripts = table::add_scripts(&mut clients, &req, false)?;
    let code = install_or_print(&mut clients, &scripts, args.dry_run, |node| {
        replicating(&req, node)
    })?;
    super::alter_table::interleave(&mut clients, &req, args.dry_run)?;
    Ok(code)
}

fn replicating(req: &AddTable, node: &str) -> String {
    format!("replicating {} as {}", req.local_name(node), req.name)
}
