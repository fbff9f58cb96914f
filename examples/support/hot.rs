//! `bench --hot`: hot rows between two local clusters, async, last-write-wins.
//!
//! 1. Conflict-heavy delivery: every row of a 20,000-row table updated on both nodes, then
//!    `repctl drain` each way: every change delivered is a conflict.
//! 2. Writers on the peer while a drain applies such a backlog there: their longest transaction.
//! 3. TPC-B on both masters (two writers each, the history insert left out) with `repctl run`
//!    delivering: TPS per node, and the time from the writers stopping until `repctl verify`
//!    finds the nodes equal.
//! 4. The same in the default mode (synchronous, origin-wins), `repctl run` delivering what a
//!    crossing flush left queued (issue 15): TPS per node and each node's slowest second.

use std::fmt::Write as _;
use std::process::{Command, Stdio};
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::{Duration, Instant};

use anyhow::{Context, Result, ensure};
use postgres::Client;
use repctl::cluster::{Cluster, ClusterOptions};

use super::tpcb::{self, next};

const ROWS: i64 = 20_000;
const NODES: [&str; 2] = ["a", "b"];
/// TPC-B at scale 1.
const ACCOUNTS: i32 = 100_000;
struct Mesh {
    clusters: Vec<Cluster>,
    cli: Vec<std::ffi::OsString>,
    config: std::path::PathBuf,
    _work: tempfile::TempDir,
}

impl Mesh {
    fn start(cli: &[std::ffi::OsString]) -> Result<Mesh> {
        let opts = ClusterOptions {
            extra_settings: vec![("synchronous_commit".into(), "on".into())],
            ..Default::default()
        };
        let mut clusters = vec![];
        let mut config = String::from("agent_superuser = true\n");
        for n in NODES {
            let c = Cluster::start(&opts).with_context(|| format!("starting cluster {n}"))?;
            super::stop_when_process_exits(&c);
            c.create_database("hot", None)?;
            let _ = writeln!(
                config,
                "[nodes.{n}]\ndsn = {:?}\npeer_dsn = {:?}",
                c.dsn("hot", "postgres"),
                c.tcp_dsn("hot", "postgres")
            );
            clusters.push(c);
        }
        let work = tempfile::tempdir()?;
        let path = work.path().join("repctl.toml");
        std::fs::write(&path, config)?;
        Ok(Mesh {
            clusters,
            cli: cli.to_vec(),
            config: path,
            _work: work,
        })
    }

    fn command(&self, args: &[&str]) -> Command {
        let mut cmd = Command::new(&self.cli[0]);
        cmd.args(&self.cli[1..])
            .arg("--config")
            .arg(&self.config)
            .args(args);
        cmd
    }

    fn ok(&self, args: &[&str]) -> Result<String> {
        let out = self.command(args).output()?;
        ensure!(
            out.status.success(),
            "repctl {args:?}: {}{}",
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr)
        );
        Ok(String::from_utf8_lossy(&out.stdout).into_owned())
    }

    fn connect(&self, node: usize) -> Result<Client> {
        self.clusters[node].connect("hot")
    }

    /// Creates the tables and replicates them with `add_table`'s options.
    fn setup(&self, ddl: &str, tables: &[&str], add_table: &[&str]) -> Result<()> {
        for c in &self.clusters {
            c.execute_admin("hot", ddl)?;
        }
        self.ok(&["init"])?;
        for t in tables {
            self.ok(&[&["add-table", t], add_table].concat())?;
        }
        Ok(())
    }

    /// Changes per second of `repctl drain --from --to`.
    fn drain(&self, from: &str, to: &str) -> Result<(i64, f64)> {
        let out = self.ok(&["drain", "--from", from, "--to", to, "--json"])?;
        let pairs: serde_json::Value = serde_json::from_str(&out)?;
        Ok((
            pairs[0]["delivered"].as_i64().unwrap_or(0),
            pairs[0]["seconds"].as_f64().unwrap_or(0.0),
        ))
    }
}

/// Updates every row of `hot.t` on each node (one statement a node): a conflict per change.
fn both_update_all(m: &Mesh) -> Result<()> {
    for (k, _) in NODES.iter().enumerate() {
        m.connect(k)?.batch_execute(&format!(
            "update hot.t set v = v + {}, note = md5(random()::text)",
            k + 1
        ))?;
    }
    Ok(())
}

/// Single-row updates of random rows of `hot.t` on `node` until `stop`: the longest one.
fn peer_writer(mut c: Client, seed: u64, stop: &AtomicBool) -> Result<Duration> {
    let (mut x, mut longest) = (seed | 1, Duration::ZERO);
    let update = c.prepare("update hot.t set v = v + 1 where id = $1")?;
    while !stop.load(Ordering::Relaxed) {
        let id = (next(&mut x) % ROWS as u64 + 1) as i32;
        let started = Instant::now();
        c.execute(&update, &[&id])?;
        longest = longest.max(started.elapsed());
    }
    Ok(longest)
}

/// Appends a row `| what | figure |` to the report's table.
fn row(report: &mut String, what: &str, figure: String) {
    let _ = writeln!(report, "| {what} | {figure} |");
}

/// TPC-B transactions until `stop`: how many committed in each second from `start`.
fn tpcb(mut c: Client, seed: u64, stop: &AtomicBool, start: Instant) -> Result<Vec<u64>> {
    let (mut rng, mut done) = (seed | 1, vec![]);
    while !stop.load(Ordering::Relaxed) {
        tpcb::transaction(&mut c, &mut rng, ACCOUNTS)?;
        let second = start.elapsed().as_secs() as usize;
        if done.len() <= second {
            done.resize(second + 1, 0);
        }
        done[second] += 1;
    }
    Ok(done)
}

/// A node's TPC-B: its mean TPS and its slowest whole second.
struct Tpcb {
    tps: [f64; 2],
    slowest: [u64; 2],
    /// From the writers stopping until `repctl verify` finds the nodes equal.
    equal: Duration,
}

/// TPC-B on both masters, two writers each, for `seconds`, tables replicated with `add_table`'s
/// options and `repctl run` delivering what is queued.
fn tpcb_both(cli: &[std::ffi::OsString], seconds: u64, add_table: &[&str]) -> Result<Tpcb> {
    let m = Mesh::start(cli)?;
    m.setup(&tpcb::tables(ACCOUNTS), &tpcb::TABLES, add_table)?;
    let log = tempfile::NamedTempFile::new()?;
    let mut run = m
        .command(&["run"])
        .stdout(Stdio::null())
        .stderr(log.reopen()?)
        .spawn()?;
    let stop = AtomicBool::new(false);
    let start = Instant::now();
    let done = std::thread::scope(|s| -> Result<Vec<Vec<u64>>> {
        let writers: Vec<_> = (0..4u64)
            .map(|k| {
                let (c, stop) = (m.connect(k as usize % 2), &stop);
                s.spawn(move || tpcb(c?, 0x2545_f491 * (k + 1), stop, start))
            })
            .collect();
        std::thread::sleep(Duration::from_secs(seconds));
        stop.store(true, Ordering::Relaxed);
        writers
            .into_iter()
            .map(|w| w.join().expect("writer thread"))
            .collect()
    })?;
    let stopped = Instant::now();
    while !m.command(&["verify"]).output()?.status.success() {
        ensure!(
            stopped.elapsed() < Duration::from_secs(600),
            "TPC-B: nodes not equal 10 min after the writers stopped; run's log: {}",
            std::fs::read_to_string(log.path()).unwrap_or_default()
        );
        std::thread::sleep(Duration::from_millis(100));
    }
    let equal = stopped.elapsed();
    let _ = run.kill();
    let _ = run.wait();
    // Per node, its two writers' counts added up second by second; the last, partial second left out.
    let per_second = |node: usize| -> Vec<u64> {
        (0..seconds as usize)
            .map(|i| done[node].get(i).unwrap_or(&0) + done[node + 2].get(i).unwrap_or(&0))
            .collect()
    };
    let (a, b) = (per_second(0), per_second(1));
    let tps = |v: &[u64]| v.iter().sum::<u64>() as f64 / seconds as f64;
    let slowest = |v: &[u64]| v.iter().copied().min().unwrap_or(0);
    Ok(Tpcb {
        tps: [tps(&a), tps(&b)],
        slowest: [slowest(&a), slowest(&b)],
        equal,
    })
}

pub fn hot(cli: &[std::ffi::OsString], seconds: u64) -> Result<()> {
    let mut report = String::from(
        "| hot rows (two local clusters, async, last-write-wins) | figure |\n|---|--:|\n",
    );
    let m = Mesh::start(cli)?;
    m.setup(
        &format!(
            "create schema hot; create table hot.t (id int primary key, v int, note text);
                  insert into hot.t select g, 0, 'x' from generate_series(1, {ROWS}) g"
        ),
        &["hot.t"],
        &["--mode", "async", "--conflict", "last-write-wins"],
    )?;
    both_update_all(&m)?;
    let (ab, ab_s) = m.drain("a", "b")?;
    let (ba, ba_s) = m.drain("b", "a")?;
    row(
        &mut report,
        "conflict-heavy delivery a→b (every change a conflict, loses there), changes/s",
        format!("{:.0}", ab as f64 / ab_s),
    );
    row(
        &mut report,
        "conflict-heavy delivery b→a (every change a conflict, wins there), changes/s",
        format!("{:.0}", ba as f64 / ba_s),
    );
    row(
        &mut report,
        "conflict-heavy delivery, both ways, changes/s",
        format!("{:.0}", (ab + ba) as f64 / (ab_s + ba_s)),
    );

    both_update_all(&m)?;
    let stop = AtomicBool::new(false);
    let (longest, drained) = std::thread::scope(|s| -> Result<(Duration, (i64, f64))> {
        let writers: Vec<_> = (0..2u64)
            .map(|k| {
                let (c, stop) = (m.connect(1), &stop);
                s.spawn(move || peer_writer(c?, 0x9e37_79b9 * (k + 1), stop))
            })
            .collect();
        std::thread::sleep(Duration::from_millis(200));
        let drained = m.drain("a", "b");
        stop.store(true, Ordering::Relaxed);
        let mut longest = Duration::ZERO;
        for w in writers {
            longest = longest.max(w.join().expect("writer thread")?);
        }
        Ok((longest, drained?))
    })?;
    row(
        &mut report,
        &format!(
            "peer writers' longest transaction while a drain applies {} conflicting changes there, ms",
            drained.0
        ),
        format!("{:.0}", longest.as_secs_f64() * 1000.0),
    );
    drop(m);

    let lww = tpcb_both(
        cli,
        seconds,
        &["--mode", "async", "--conflict", "last-write-wins"],
    )?;
    row(
        &mut report,
        &format!("TPC-B {seconds} s on both masters, 2 writers each, `repctl run`: TPS a / b"),
        format!("{:.0} / {:.0}", lww.tps[0], lww.tps[1]),
    );
    row(
        &mut report,
        "TPC-B: nodes equal after the writers stopped, s (verify's own time included)",
        format!("{:.1}", lww.equal.as_secs_f64()),
    );
    let sync = tpcb_both(cli, seconds, &[])?;
    row(
        &mut report,
        &format!(
            "TPC-B {seconds} s as above, default sync mode (origin-wins), `repctl run` too: TPS a / b (ratio)"
        ),
        format!(
            "{:.0} / {:.0} ({:.1}×)",
            sync.tps[0],
            sync.tps[1],
            sync.tps[0].max(sync.tps[1]) / sync.tps[0].min(sync.tps[1]).max(1.0)
        ),
    );
    row(
        &mut report,
        "TPC-B sync: each node's slowest second, transactions a / b",
        format!("{} / {}", sync.slowest[0], sync.slowest[1]),
    );
    row(
        &mut report,
        "TPC-B sync: nodes equal after the writers stopped, s",
        format!("{:.1}", sync.equal.as_secs_f64()),
    );
    println!("{report}");
    Ok(())
}
