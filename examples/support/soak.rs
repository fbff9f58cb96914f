//! `bench --soak MINUTES`: hours of writes in minutes' time, to see what grows. A 3-node mesh (three
//! databases in one throwaway cluster), one table replicated async with last-write-wins (so
//! `repctl.version` and, from a small range of keys every node writes, `repctl.conflict` get rows),
//! `repctl run` delivering, and one writer per node: single-row upserts, and every fifth
//! transaction a small batch (10 upserts, 5 deletes), paced at `--soak-tps` per node (0: as fast
//! as they go). A line a minute: TPS per node, pending changes per pair, `run`'s resident memory,
//! and per table of repctl's on node `a`: size on disk (heap and TOAST, then its indexes) and dead
//! tuples.

use std::fmt::Write as _;
use std::process::{Command, Stdio};
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::time::{Duration, Instant};

use anyhow::{Context, Result};
use postgres::Client;
use repctl::cluster::{Cluster, ClusterOptions};

const NODES: [&str; 3] = ["a", "b", "c"];
/// Keys each node writes alone, and keys every node writes (conflicts).
const OWN_KEYS: u64 = 20_000;
const SHARED_KEYS: u64 = 100;

/// xorshift64*: enough randomness for picking keys, no dependency.
struct Rng(u64);

impl Rng {
    fn below(&mut self, n: u64) -> u64 {
        self.0 ^= self.0 >> 12;
        self.0 ^= self.0 << 25;
        self.0 ^= self.0 >> 27;
        self.0.wrapping_mul(0x2545_f491_4f6c_dd1d) % n
    }
}

/// `repctl run` as a child, killed if the soak fails before stopping it.
struct Run(std::process::Child);

impl Drop for Run {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

/// One writer's loop until `stop`; counts its transactions.
fn write(mut c: Client, k: u64, tps: u32, stop: &AtomicBool, done: &AtomicU64) -> Result<()> {
    let mut rng = Rng(0x9e37_79b9_7f4a_7c15 ^ (k + 1));
    let base = (k + 1) * 1_000_000;
    let node = NODES[k as usize];
    let pace = (tps > 0).then(|| Duration::from_secs_f64(1.0 / f64::from(tps)));
    let started = Instant::now();
    let upsert = c.prepare(
        "insert into soak.t values ($1, $2, 1, md5(random()::text)) on conflict (id) do update set n = soak.t.n + 1, node = excluded.node",
    )?;
    let mut i: u64 = 0;
    while !stop.load(Ordering::Relaxed) {
        if i % 20 == 7 {
            c.execute(&upsert, &[&(rng.below(SHARED_KEYS) as i64), &node])?;
        } else if i % 5 == 0 {
            let ids: Vec<i64> = (0..10)
                .map(|_| (base + rng.below(OWN_KEYS)) as i64)
                .collect();
            let gone: Vec<i64> = (0..5)
                .map(|_| (base + rng.below(OWN_KEYS)) as i64)
                .collect();
            let mut tx = c.transaction()?;
            tx.execute(
                "insert into soak.t select distinct id, $2, 1, 'batch' from unnest($1::bigint[]) id
                 on conflict (id) do update set n = soak.t.n + 1, node = excluded.node",
                &[&ids, &node],
            )?;
            tx.execute("delete from soak.t where id = any($1)", &[&gone])?;
            tx.commit()?;
        } else {
            c.execute(&upsert, &[&((base + rng.below(OWN_KEYS)) as i64), &node])?;
        }
        i += 1;
        done.fetch_add(1, Ordering::Relaxed);
        if let Some(p) = pace {
            let due = started + p * i as u32;
            if let Some(wait) = due.checked_duration_since(Instant::now()) {
                std::thread::sleep(wait);
            }
        }
    }
    Ok(())
}

/// Per table of repctl's (a queue's partitions together): heap + TOAST kB, index kB, dead tuples.
fn sizes(c: &mut Client) -> Result<Vec<(String, i64, i64, i64)>> {
    Ok(c.query(
        "select case when c.relispartition then 'queue' else c.relname::text end as name,
                (sum(pg_table_size(c.oid)) / 1024)::bigint, (sum(pg_indexes_size(c.oid)) / 1024)::bigint,
                sum(coalesce(s.n_dead_tup, 0))::bigint
           from pg_class c left join pg_stat_all_tables s on s.relid = c.oid
          where c.relnamespace = 'repctl'::regnamespace and c.relkind = 'r'
          group by 1 order by 1",
        &[],
    )?
    .iter()
    .map(|r| {
        (
            r.get(0),
            r.get::<_, Option<i64>>(1).unwrap_or(0),
            r.get::<_, Option<i64>>(2).unwrap_or(0),
            r.get::<_, Option<i64>>(3).unwrap_or(0),
        )
    })
    .collect())
}

fn rss_mb(pid: u32) -> f64 {
    std::fs::read_to_string(format!("/proc/{pid}/status"))
        .ok()
        .and_then(|s| {
            s.lines()
                .find_map(|l| l.strip_prefix("VmRSS:"))
                .and_then(|v| v.split_whitespace().next()?.parse::<f64>().ok())
        })
        .map_or(0.0, |kb| kb / 1024.0)
}

pub fn soak(repctl: &[std::ffi::OsString], minutes: u32, tps: u32) -> Result<()> {
    let cluster = Cluster::start(&ClusterOptions {
        extra_settings: vec![("synchronous_commit".into(), "on".into())],
        ..Default::default()
    })
    .context("starting the cluster")?;
    super::stop_when_process_exits(&cluster);
    let work = tempfile::tempdir()?;
    let mut config = String::from("agent_superuser = true\n");
    for n in NODES {
        cluster.create_database(n, None)?;
        cluster.execute_admin(
            n,
            "create schema soak; create table soak.t (id bigint primary key, node text, n int, note text)",
        )?;
        let _ = writeln!(
            config,
            "[nodes.{n}]\ndsn = {:?}\npeer_dsn = {:?}",
            cluster.dsn(n, "postgres"),
            cluster.tcp_dsn(n, "postgres")
        );
    }
    let path = work.path().join("repctl.toml");
    std::fs::write(&path, config)?;
    let cli = |args: &[&str]| -> Command {
        let mut cmd = Command::new(&repctl[0]);
        cmd.args(&repctl[1..]).arg("--config").arg(&path).args(args);
        cmd
    };
    let ok = |args: &[&str]| -> Result<()> {
        let out = cli(args).output()?;
        anyhow::ensure!(
            out.status.success(),
            "repctl {args:?}: {}",
            String::from_utf8_lossy(&out.stderr)
        );
        Ok(())
    };
    ok(&["init"])?;
    ok(&[
        "add-table",
        "soak.t",
        "--mode",
        "async",
        "--conflict",
        "last-write-wins",
    ])?;
    let log = work.path().join("run.log");
    let mut run = Run(cli(&["run", "--stats-every", "60"])
        .stdout(Stdio::null())
        .stderr(std::fs::File::create(&log)?)
        .spawn()?);
    let stop = Arc::new(AtomicBool::new(false));
    let counts: Arc<Vec<AtomicU64>> = Arc::new(NODES.iter().map(|_| AtomicU64::new(0)).collect());
    let writers: Vec<_> = (0..NODES.len())
        .map(|k| {
            let (c, stop, counts) = (cluster.connect(NODES[k])?, stop.clone(), counts.clone());
            Ok(std::thread::spawn(move || {
                let written = write(c, k as u64, tps, &stop, &counts[k]);
                if let Err(e) = &written {
                    eprintln!("soak: writer on {}: {e:#}", NODES[k]);
                }
                written
            }))
        })
        .collect::<Result<_>>()?;
    let mut observers: Vec<Client> = NODES
        .iter()
        .map(|n| cluster.connect(n))
        .collect::<Result<_>>()?;
    eprintln!(
        "soak: {minutes} min, {} per node; run's log in {}",
        if tps > 0 {
            format!("{tps} TPS offered")
        } else {
            "unpaced writers".into()
        },
        log.display()
    );
    let mut last: Vec<u64> = vec![0; NODES.len()];
    let started = Instant::now();
    let mut header = false;
    for minute in 1..=minutes {
        let due = started + Duration::from_secs(60 * u64::from(minute));
        std::thread::sleep(due.saturating_duration_since(Instant::now()));
        let now: Vec<u64> = counts.iter().map(|c| c.load(Ordering::Relaxed)).collect();
        let tps_now: Vec<String> = now
            .iter()
            .zip(&last)
            .map(|(n, l)| format!("{:.0}", (n - l) as f64 / 60.0))
            .collect();
        last = now;
        let mut lags = Vec::new();
        for (n, c) in NODES.iter().zip(observers.iter_mut()) {
            for r in c.query(
                "select p.name, (select count(*) from repctl.queue q where q.peer = p.name) from repctl.peer p order by 1",
                &[],
            )? {
                lags.push(format!("{n}→{}: {}", r.get::<_, String>(0), r.get::<_, i64>(1)));
            }
        }
        let tables = sizes(&mut observers[0])?;
        if !header {
            header = true;
            let names: Vec<&str> = tables.iter().map(|t| t.0.as_str()).collect();
            println!(
                "| min | TPS a / b / c | pending per pair | run RSS MB | {} |",
                names.join(" | ")
            );
            println!("|--:|---|---|--:|{}", "--:|".repeat(names.len()));
        }
        println!(
            "| {minute} | {} | {} | {:.1} | {} |",
            tps_now.join(" / "),
            lags.join(", "),
            rss_mb(run.0.id()),
            tables
                .iter()
                .map(|(_, heap, idx, dead)| format!("{heap}+{idx} kB, {dead} dead"))
                .collect::<Vec<_>>()
                .join(" | ")
        );
    }
    stop.store(true, Ordering::Relaxed);
    for w in writers {
        w.join().expect("writer thread")?;
    }
    Command::new("kill")
        .args(["-TERM", &run.0.id().to_string()])
        .status()?;
    run.0.wait()?;
    let text = std::fs::read_to_string(&log)?;
    let warnings = text.lines().filter(|l| l.contains("WARN")).count();
    eprintln!("soak: run logged {warnings} warning(s); last lines:");
    for l in text
        .lines()
        .rev()
        .take(5)
        .collect::<Vec<_>>()
        .into_iter()
        .rev()
    {
        eprintln!("  {l}");
    }
    // The mesh converges once the writers stop: `repctl verify` after a drain.
    let drained = cli(&["drain"]).output()?;
    let out = cli(&["verify"]).output()?;
    eprintln!(
        "soak: drain exit {:?}, verify exit {:?}:\n{}",
        drained.status.code(),
        out.status.code(),
        String::from_utf8_lossy(&out.stdout)
    );
    Ok(())
}
