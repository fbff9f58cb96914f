use anyhow::{Context, Result};

use super::output::install_or_print;
use crate::catalog::TableName;
use crate::catalog::ident::parse_column_list;
use crate::catalog::{ConflictRule, Mode, OnApplyError, OnPeerFailure};
use crate::config::Config;
use crate::install::table;
use crate::install::{init, schema, sequences};

/// Change a replicated table's settings on every node (re-renders its triggers and functions); also adds it on nodes new to the config.
#[derive(Debug, clap::Args)]
pub struct Args {
    /// The table's replicated name, SCHEMA.TABLE.
    table: String,
    /// Switch between synchronous and asynchronous delivery.
    #[arg(long, value_enum)]
    mode: Option<Mode>,
    /// When a peer cannot take a change: keep it queued, or fail the local write.
    #[arg(long, value_enum)]
    on_peer_failure: Option<OnPeerFailure>,
    /// When a peer refuses a change: stop the pair there, or park the change and go on.
    #[arg(long, value_enum)]
    on_apply_error: Option<OnApplyError>,
    /// How conflicts are resolved from now on.
    #[arg(long, value_enum)]
    conflict: Option<ConflictRule>,
    /// With last-write-wins: compare this timestamp column instead of commit times.
    #[arg(long, value_name = "COL")]
    conflict_column: Option<String>,
    /// With node-priority: nodes, highest priority first, comma-separated.
    #[arg(long, value_delimiter = ',', value_name = "NODE,...")]
    node_priority: Option<Vec<String>>,
    /// Replicate these columns from now on (must include the primary key), comma-separated, as
    /// add-table's --columns; every node must have them, with the same types.
    #[arg(long, value_name = "COLUMNS", conflicts_with = "ddl")]
    columns: Option<String>,
    /// Numeric columns applied as increments from now on, comma-separated (`--delta ''`: none).
    #[arg(long, value_delimiter = ',', value_name = "COL,...")]
    delta: Option<Vec<String>>,
    /// Whether an update applies only the columns it changed.
    #[arg(long, value_name = "BOOL", num_args = 0..=1, default_missing_value = "true")]
    merge_columns: Option<bool>,
    /// Interleave the key columns' sequences across nodes (as add-table's); each run restarts
    /// them above the highest key on any node, a node new to the config with its own offset.
    /// `--interleave-sequences=false` stops (status no longer flags them; they stay as they are).
    #[arg(long, value_name = "BOOL", num_args = 0..=1, default_missing_value = "true")]
    interleave_sequences: Option<bool>,
    /// For a node that does not replicate the table yet (just added to the config): the table to use there.
    #[arg(long = "map", value_name = "NODE=SCHEMA.TABLE")]
    map: Vec<String>,
    /// Change the table's schema on every node: the ALTER TABLE actions, written without
    /// `ALTER TABLE name` (repctl puts each node's own table, as --map names it, in front), e.g.
    /// 'add column z int default 7', 'drop column w', 'rename column v to v2',
    /// 'alter column w type bigint using w::bigint'. The table's capture and apply functions are
    /// re-rendered in the same transaction per node; writers wait for the statement's lock, none
    /// fails. Changes queued before still apply: a dropped column's value is ignored, a renamed
    /// one goes to the new name, a column added since keeps the peer's value (an insert takes
    /// the peer's default), a retyped one is cast from its text form. Every node must be reachable.
    #[arg(long, value_name = "ACTIONS")]
    ddl: Option<String>,
    /// Print the SQL each node would run and change nothing (with --ddl: the statement runs
    /// and is rolled back, to show the plan per node).
    #[arg(long)]
    dry_run: bool,
}

pub fn run(config: &Config, args: Args) -> Result<u8> {
    let name = TableName::parse(&args.table)?;
    let mut clients = init::connect_all(config)?;
    let mut req = table::stored_request(&mut clients, &name)?;
    for m in &args.map {
        let (node, table) = m
            .split_once('=')
            .with_context(|| format!("--map {m:?}: write NODE=SCHEMA.TABLE"))?;
        config.node(node)?;
        req.map.insert(node.to_string(), TableName::parse(table)?);
    }
    if let Some(c) = &args.columns {
        req.columns = Some(parse_column_list(c)?);
    }
    if let Some(mode) = args.mode {
        req.settings.mode = mode;
    }
    if let Some(p) = args.on_peer_failure {
        req.settings.on_peer_failure = p;
    }
    if let Some(p) = args.on_apply_error {
        req.settings.on_apply_error = p;
    }
    if let Some(c) = args.conflict {
        req.settings.conflict = c;
        // A column or priority list belongs to the rule it was given with.
        req.settings.conflict_column = None;
        req.settings.node_priority.clear();
    }
    if args.conflict_column.is_some() {
        req.settings.conflict_column = args.conflict_column;
    }
    if let Some(p) = args.node_priority {
        req.settings.node_priority = p;
    }
    if let Some(d) = args.delta {
        req.settings.delta = d.into_iter().filter(|c| !c.is_empty()).collect();
    }
    if let Some(m) = args.merge_columns {
        req.settings.merge_columns = m;
    }
    if let Some(i) = args.interleave_sequences {
        req.settings.interleave_sequences = i;
    }
    if let Some(ddl) = &args.ddl {
        return with_ddl(config, &mut clients, &req, ddl, args.dry_run);
    }
    let scripts = table::add_scripts(&mut clients, &req, true)?;
    let code = install_or_print(&mut clients, &scripts, args.dry_run, |_| {
        format!(
            "{name} now {:?}, on peer failure {:?}, on apply error {}, conflicts {}{}{}",
            req.settings.mode,
            req.settings.on_peer_failure,
            req.settings.on_apply_error.as_str(),
            req.settings.conflict.as_str(),
            if req.settings.delta.is_empty() {
                String::new()
            } else {
                format!(", delta {}", req.settings.delta.join(","))
            },
            if req.settings.merge_columns {
                ", merge-columns"
            } else {
                ""
            }
        )
    })?;
    interleave(&mut clients, &req, args.dry_run)?;
    Ok(code)
}

/// With --interleave-sequences: the key sequences' new progressions, run (or printed by a dry run).
pub(super) fn interleave(
    clients: &mut [(String, postgres::Client)],
    req: &table::AddTable,
    dry_run: bool,
) -> Result<()> {
    if !req.settings.interleave_sequences {
        return Ok(());
    }
    for (node, statements) in sequences::interleave(clients, req, dry_run)? {
        for s in statements {
            if dry_run {
                println!("-- node {node}, then: {s};");
            } else {
                println!("node {node}: {s}");
            }
        }
    }
    Ok(())
}

fn with_ddl(
    config: &Config,
    clients: &mut [(String, postgres::Client)],
    req: &table::AddTable,
    ddl: &str,
    dry_run: bool,
) -> Result<u8> {
    let (next, plans) = schema::alter_with_ddl(clients, req, ddl, dry_run)?;
    for p in &plans {
        if dry_run {
            println!("-- ===== node {} =====", p.node);
            println!("begin;\n{};", p.statement);
            for c in &p.changes {
                println!("-- {c}");
            }
            print!("{}", p.script);
            println!("commit;");
        } else {
            println!("node {}: {}", p.node, p.statement);
            for c in &p.changes {
                println!("node {}: {c}", p.node);
            }
        }
    }
    if dry_run {
        return Ok(super::EXIT_OK);
    }
    println!(
        "{} now replicates columns {}",
        req.name,
        next.columns.unwrap_or_default().join(", ")
    );
    // A synchronous flush that met the schema lock left its changes queued; deliver them.
    super::drain::run(config, super::drain::Args::queued_now())
}
