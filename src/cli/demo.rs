use std::time::Instant;

use anyhow::{Context, Result};
use clap::Parser;

use crate::cluster::{Cluster, ClusterOptions};

/// Run the seed article's scenario on two throwaway local clusters: init, add-table, writes on both sides, verify.
#[derive(Debug, clap::Args)]
pub struct Args {
    /// Rows to insert on each side.
    #[arg(long, default_value_t = 10_000)]
    rows: i64,
}

const SEED_TABLE: &str = "(pk1 int, pk2 text, info text, crt_time timestamp(0), mod_time timestamp(0), primary key (pk1, pk2))";

pub fn run(args: Args) -> Result<u8> {
    println!("starting two throwaway clusters (node local, node remote)...");
    let local = Cluster::start(&ClusterOptions::default()).context("starting cluster local")?;
    let remote = Cluster::start(&ClusterOptions::default()).context("starting cluster remote")?;
    for (cluster, db, table) in [
        (&local, "local", "loc_test"),
        (&remote, "remote", "rmt_test"),
    ] {
        cluster.create_database(db, None)?;
        cluster.execute_admin(
            db,
            &format!("create schema {db}; create table {db}.{table} {SEED_TABLE}"),
        )?;
    }
    let dir = tempfile::tempdir()?;
    let config = dir.path().join("repctl.toml");
    std::fs::write(
        &config,
        format!(
            // Throwaway clusters trust local connections: only a superuser agent may use dblink there.
            "agent_superuser = true\n[nodes.local]\ndsn = {:?}\n[nodes.remote]\ndsn = {:?}\n",
            local.dsn("local", "postgres"),
            remote.dsn("remote", "postgres")
        ),
    )?;
    println!(
        "config {}:\n{}",
        config.display(),
        std::fs::read_to_string(&config)?
    );
    let repctl = |args: &[&str]| -> Result<u8> {
        println!("\n$ repctl {}", args.join(" "));
        let mut argv = vec!["repctl", "--config", config.to_str().unwrap_or_default()];
        argv.extend_from_slice(args);
        super::run(super::Cli::try_parse_from(argv)?)
    };
    repctl(&["init"])?;
    repctl(&[
        "add-table",
        "local.loc_test",
        "--map",
        "remote=remote.rmt_test",
    ])?;
    let write = |cluster: &Cluster, db: &str, sql: &str| -> Result<()> {
        let started = Instant::now();
        cluster.execute_admin(db, sql)?;
        println!(
            "\n{db}=> {sql}\n  ({:.3} s, replicated at commit)",
            started.elapsed().as_secs_f64()
        );
        Ok(())
    };
    let n = args.rows;
    write(
        &local,
        "local",
        &format!(
            "insert into local.loc_test select generate_series(1, {n}), 'digoal' || random(), 'test' || random(), now(), clock_timestamp()"
        ),
    )?;
    write(
        &remote,
        "remote",
        "update remote.rmt_test set info = pk2 where pk1 % 2 = 0",
    )?;
    write(
        &remote,
        "remote",
        &format!(
            "insert into remote.rmt_test select generate_series({}, {}), 'digoal' || random(), 'test' || random(), now(), clock_timestamp()",
            n + 1,
            2 * n
        ),
    )?;
    write(
        &local,
        "local",
        "delete from local.loc_test where pk1 < 1000",
    )?;
    repctl(&["verify"])
}
