//! Throwaway PostgreSQL clusters for tests, `repctl demo` and benchmarks.
//!
//! Each [`Cluster`] lives in its own temporary directory (data directory,
//! server log and Unix socket), listens on a free port on 127.0.0.1 and is
//! tuned for speed rather than durability (`fsync=off` and friends), so it
//! must never hold data anyone cares about.
//!
//! Clusters are copies of one `initdb` template cached in the temp dir
//! (see `initdb_template`), which makes starting one about 3x faster.
//!
//! `initdb` refuses to run as root, so when we are root the directory is
//! handed to the `postgres` OS user and the server binaries are run through
//! `runuser -u postgres --`. The test process itself keeps running as root
//! and only talks to the server over the socket, so nothing else changes.

use std::fs;
use std::net::TcpListener;
use std::path::{Path, PathBuf};
use std::process::{Command, Output};
use std::sync::OnceLock;

use anyhow::{Context, Result, anyhow, bail};
use postgres::{Client, NoTls};
use tempfile::TempDir;

use crate::conninfo::quote;
use crate::render::quote_ident;

/// OS user that owns the cluster files when we run as root.
const PG_OS_USER: &str = "postgres";

/// How often `start` picks a new port when another process grabbed ours
/// between probing and binding.
const PORT_ATTEMPTS: usize = 5;

/// Settings every cluster gets; they trade durability for startup and
/// write speed, which is all a throwaway cluster needs.
const BASE_SETTINGS: &[(&str, &str)] = &[
    ("listen_addresses", "127.0.0.1"),
    ("fsync", "off"),
    ("synchronous_commit", "off"),
    ("full_page_writes", "off"),
    ("max_connections", "100"),
    ("shared_buffers", "128MB"),
];

/// pg_hba.conf for [`ClusterOptions::password_auth`]: the `postgres`
/// superuser stays trusted so the harness can administer the cluster, every
/// other role needs a SCRAM password on both the socket and TCP.
const PASSWORD_HBA: &str = "\
# Written by repctl::cluster (password_auth).
# TYPE  DATABASE     USER      ADDRESS        METHOD
local   all          postgres                 trust
host    all          postgres  127.0.0.1/32   trust
local   replication  postgres                 trust
host    replication  postgres  127.0.0.1/32   trust
local   all          all                      scram-sha-256
host    all          all       127.0.0.1/32   scram-sha-256
";

/// How to set up a [`Cluster`].
#[derive(Debug, Clone, Default)]
pub struct ClusterOptions {
    /// Extra `-c name=value` server settings, applied after (and so
    /// overriding) the built-in ones. Values are passed verbatim, as with
    /// `postgres -c`.
    pub extra_settings: Vec<(String, String)>,
    /// Require SCRAM passwords for every role except `postgres`, to
    /// reproduce setups where replication roles log in with a password.
    pub password_auth: bool,
    /// Server binaries to use instead of [`pg_bindir`]'s, for clusters of
    /// another PostgreSQL version in the same process.
    pub bindir: Option<PathBuf>,
}

/// A running (or stopped) throwaway PostgreSQL cluster.
///
/// Dropping it kills the server and deletes its directory, unless the
/// thread is panicking: then the directory is kept and its path printed so
/// the log and data of a failed test can be inspected.
pub struct Cluster {
    /// `None` only during `Drop`.
    dir: Option<TempDir>,
    root: PathBuf,
    data: PathBuf,
    log: PathBuf,
    bindir: PathBuf,
    port: u16,
    /// Server settings except the port, as `-c` pairs.
    settings: Vec<(String, String)>,
    as_postgres_user: bool,
    frozen: bool,
}

impl Cluster {
    /// Creates, initialises and starts a new cluster.
    pub fn start(opts: &ClusterOptions) -> Result<Cluster> {
        let bindir = match &opts.bindir {
            Some(dir) => checked_bindir(dir, "ClusterOptions::bindir")?,
            None => pg_bindir()?,
        };
        let as_postgres_user = running_as_root();
        let dir = tempfile::Builder::new()
            .prefix("repctl-pg-")
            .tempdir()
            .context("creating temporary directory for cluster")?;
        let root = dir.path().to_path_buf();
        if as_postgres_user {
            prepare_dir_for_postgres_user(&root)?;
        }

        let mut settings: Vec<(String, String)> = BASE_SETTINGS
            .iter()
            .map(|(k, v)| (k.to_string(), v.to_string()))
            .collect();
        settings.extend(opts.extra_settings.iter().cloned());

        let mut cluster = Cluster {
            data: root.join("data"),
            log: root.join("log"),
            root,
            dir: Some(dir),
            bindir,
            port: 0,
            settings,
            as_postgres_user,
            frozen: false,
        };

        let data = cluster.data.clone();
        // -a keeps the ownership and 0700 mode the server insists on.
        let copied = initdb_template(&cluster.bindir, as_postgres_user).is_some_and(|template| {
            let mut cp = Command::new("cp");
            cp.args(["-a", "--reflink=auto"]).arg(template).arg(&data);
            run_checked(&mut cp, "cp").is_ok() || {
                // E.g. someone cleaned /tmp under us: do it the slow way.
                let _ = fs::remove_dir_all(&data);
                false
            }
        });
        if !copied {
            initdb(&cluster.bindir, as_postgres_user, &cluster.root, &data)?;
        }
        if opts.password_auth {
            // Overwrite in place so the file keeps its owner and mode.
            fs::write(data.join("pg_hba.conf"), PASSWORD_HBA).context("writing pg_hba.conf")?;
        }

        let mut last_err = None;
        for _ in 0..PORT_ATTEMPTS {
            cluster.port = free_port()?;
            let log_len = fs::metadata(&cluster.log).map(|m| m.len()).unwrap_or(0);
            match cluster.pg_ctl_start() {
                Ok(()) => return Ok(cluster),
                Err(e) => {
                    let new_log = cluster
                        .log_contents()
                        .get(log_len as usize..)
                        .unwrap_or("")
                        .to_string();
                    if !new_log.contains("could not bind") {
                        return Err(e);
                    }
                    last_err = Some(e);
                }
            }
        }
        Err(last_err
            .unwrap()
            .context(format!("no free port after {PORT_ATTEMPTS} attempts")))
    }

    /// TCP port the server listens on (also the Unix socket's port number).
    pub fn port(&self) -> u16 {
        self.port
    }

    /// Directory holding the Unix socket (the cluster's temporary dir).
    pub fn socket_dir(&self) -> &Path {
        &self.root
    }

    /// Directory of the server binaries this cluster runs.
    pub fn bindir(&self) -> &Path {
        &self.bindir
    }

    /// The cluster's data directory (`PGDATA`).
    pub fn data_dir(&self) -> &Path {
        &self.data
    }

    /// libpq keyword/value connection string over the Unix socket.
    pub fn dsn(&self, db: &str, user: &str) -> String {
        format!(
            "host={} port={} dbname={} user={}",
            quote(&self.root.to_string_lossy()),
            self.port,
            quote(db),
            quote(user)
        )
    }

    /// Like [`Cluster::dsn`] but over TCP, which is what `host` lines in
    /// pg_hba.conf (and remote replicas) see.
    pub fn tcp_dsn(&self, db: &str, user: &str) -> String {
        format!(
            "host=127.0.0.1 port={} dbname={} user={}",
            self.port,
            quote(db),
            quote(user)
        )
    }

    /// Connects to `db` as the `postgres` superuser over the socket.
    pub fn connect(&self, db: &str) -> Result<Client> {
        Client::connect(&self.dsn(db, "postgres"), NoTls)
            .with_context(|| format!("connecting to database {db:?} on port {}", self.port))
    }

    /// Runs `sql` (may contain several statements) as `postgres` in `db`.
    pub fn execute_admin(&self, db: &str, sql: &str) -> Result<()> {
        self.connect(db)?
            .batch_execute(sql)
            .with_context(|| format!("executing in {db:?}: {sql}"))
    }

    /// Creates database `name`, optionally owned by an existing role.
    pub fn create_database(&self, name: &str, owner: Option<&str>) -> Result<()> {
        let mut sql = format!("CREATE DATABASE {}", quote_ident(name));
        if let Some(owner) = owner {
            sql.push_str(&format!(" OWNER {}", quote_ident(owner)));
        }
        self.execute_admin("postgres", &sql)
    }

    /// Shuts the server down cleanly (`-m fast`); no-op when not running.
    pub fn stop(&mut self) -> Result<()> {
        if !self.is_running() {
            return Ok(());
        }
        self.thaw()?;
        self.pg_ctl_stop("fast")
    }

    /// Starts a stopped server again on the same port; no-op when running.
    pub fn start_again(&mut self) -> Result<()> {
        if self.is_running() {
            return Ok(());
        }
        self.pg_ctl_start()
    }

    /// Stops (`-m fast`) and starts the server, keeping port and settings.
    pub fn restart(&mut self) -> Result<()> {
        self.stop()?;
        self.start_again()
    }

    /// Whether the postmaster process is alive (a frozen one counts).
    pub fn is_running(&self) -> bool {
        match self.postmaster_pid() {
            // A killed postmaster may linger as a zombie when nobody reaps
            // orphans (e.g. in containers), so look at its state too.
            Some(pid) => match fs::read_to_string(format!("/proc/{pid}/stat")) {
                Ok(stat) => proc_stat_field(&stat, 0).is_some_and(|state| state != "Z"),
                Err(_) => false,
            },
            None => false,
        }
    }

    /// Suspends the postmaster and all backends with SIGSTOP, to simulate
    /// an unresponsive (hung, not down) server: connections and queries
    /// block instead of failing. Note that dropping a `postgres::Client`
    /// of a frozen server also blocks (until [`Cluster::thaw`]).
    pub fn freeze(&mut self) -> Result<()> {
        if self.frozen {
            return Ok(());
        }
        let pid = self
            .postmaster_pid()
            .ok_or_else(|| anyhow!("cannot freeze: server is not running"))?;
        // Stop the postmaster first so it cannot fork children we miss.
        send_signal("STOP", &[pid], true)?;
        self.frozen = true;
        send_signal("STOP", &child_pids(pid), false)?;
        Ok(())
    }

    /// Resumes a server suspended by [`Cluster::freeze`]; no-op otherwise.
    pub fn thaw(&mut self) -> Result<()> {
        if !self.frozen {
            return Ok(());
        }
        if let Some(pid) = self.postmaster_pid() {
            send_signal("CONT", &child_pids(pid), false)?;
            send_signal("CONT", &[pid], false)?;
        }
        self.frozen = false;
        Ok(())
    }

    /// The server log so far (empty if it cannot be read).
    pub fn log_contents(&self) -> String {
        fs::read(&self.log)
            .map(|b| String::from_utf8_lossy(&b).into_owned())
            .unwrap_or_default()
    }

    fn postmaster_pid(&self) -> Option<u32> {
        let pidfile = fs::read_to_string(self.data.join("postmaster.pid")).ok()?;
        pidfile.lines().next()?.trim().parse().ok()
    }

    fn pg_command(&self, program: &str) -> Command {
        pg_command(&self.bindir, self.as_postgres_user, &self.root, program)
    }

    fn pg_ctl_start(&mut self) -> Result<()> {
        let mut server_opts = format!(
            "-p {} -k {}",
            self.port,
            shell_quote(&self.root.to_string_lossy())
        );
        for (name, value) in &self.settings {
            // pg_ctl hands -o to /bin/sh, hence the quoting.
            server_opts.push_str(&format!(" -c {}", shell_quote(&format!("{name}={value}"))));
        }
        let (data, log) = (self.data.clone(), self.log.clone());
        let res = run_checked(
            self.pg_command("pg_ctl")
                .args(["start", "-w", "-D"])
                .arg(&data)
                .arg("-l")
                .arg(&log)
                .arg("-o")
                .arg(&server_opts),
            "pg_ctl start",
        );
        res.map(|_| ()).map_err(|e| {
            let log = self.log_contents();
            let tail: Vec<&str> = log.lines().rev().take(20).collect();
            let tail: Vec<&str> = tail.into_iter().rev().collect();
            e.context(format!("server log tail:\n{}", tail.join("\n")))
        })
    }

    fn pg_ctl_stop(&mut self, mode: &str) -> Result<()> {
        let data = self.data.clone();
        run_checked(
            self.pg_command("pg_ctl")
                .args(["stop", "-w", "-m", mode, "-D"])
                .arg(&data),
            "pg_ctl stop",
        )?;
        Ok(())
    }
}

impl Drop for Cluster {
    fn drop(&mut self) {
        if self.frozen {
            let _ = self.thaw();
        }
        if self.is_running()
            && let Err(e) = self.pg_ctl_stop("immediate")
        {
            eprintln!("repctl cluster on port {}: {e:#}", self.port);
        }
        // Otherwise dropping `dir` deletes it.
        if let Some(dir) = self.dir.take()
            && std::thread::panicking()
        {
            let path = dir.keep();
            eprintln!(
                "repctl cluster on port {} kept for inspection: {} (server log: {})",
                self.port,
                path.display(),
                path.join("log").display()
            );
        }
    }
}

/// A command for one of the server binaries, run as the `postgres` OS user
/// when we are root.
fn pg_command(bindir: &Path, as_postgres_user: bool, cwd: &Path, program: &str) -> Command {
    let exe = bindir.join(program);
    let mut cmd = if as_postgres_user {
        let mut c = Command::new("runuser");
        c.args(["-u", PG_OS_USER, "--"]).arg(exe);
        c
    } else {
        Command::new(exe)
    };
    // The caller's cwd (e.g. /root) may be unreadable for `postgres`, which
    // makes initdb and pg_ctl complain; `cwd` is one of our own dirs.
    cmd.current_dir(cwd);
    // Keep the caller's libpq/server environment from leaking in.
    for var in [
        "PGDATA",
        "PGPORT",
        "PGHOST",
        "PGUSER",
        "PGDATABASE",
        "PGOPTIONS",
    ] {
        cmd.env_remove(var);
    }
    cmd
}

fn run_checked(cmd: &mut Command, what: &str) -> Result<Output> {
    let out = cmd
        .output()
        .with_context(|| format!("running {what} ({cmd:?})"))?;
    if !out.status.success() {
        bail!(
            "{what} failed ({}):\n{}{}",
            out.status,
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr)
        );
    }
    Ok(out)
}

fn initdb(bindir: &Path, as_postgres_user: bool, cwd: &Path, data: &Path) -> Result<()> {
    run_checked(
        pg_command(bindir, as_postgres_user, cwd, "initdb")
            .arg("-D")
            .arg(data)
            .args(["-A", "trust", "-U", "postgres", "-N", "-E", "UTF8"])
            .arg("--locale=C"),
        "initdb",
    )?;
    Ok(())
}

/// Bump when the initdb arguments change, so old templates are not reused.
const TEMPLATE_FORMAT: u32 = 1;

/// Data directory of a pristine `initdb` run, shared by all clusters of all
/// processes of this user: copying it takes a fraction of initdb's ~1 s.
///
/// It lives in the temp dir under a name keyed on the server binaries, and
/// appears atomically (built elsewhere, then renamed). A dir with that name
/// that is not ours, or looks incomplete, is ignored. `None` means "run
/// initdb yourself"; errors only cost speed, so they are not reported.
fn initdb_template(bindir: &Path, as_postgres_user: bool) -> Option<PathBuf> {
    type Templates = std::collections::HashMap<PathBuf, Option<PathBuf>>;
    static TEMPLATES: OnceLock<std::sync::Mutex<Templates>> = OnceLock::new();
    // Threads starting their first clusters together wait for one build.
    let mut templates = TEMPLATES.get_or_init(Default::default).lock().ok()?;
    templates
        .entry(bindir.to_path_buf())
        .or_insert_with(|| build_template(bindir, as_postgres_user).ok())
        .clone()
}

fn build_template(bindir: &Path, as_postgres_user: bool) -> Result<PathBuf> {
    use std::hash::{Hash, Hasher};
    use std::os::unix::fs::{MetadataExt, PermissionsExt};

    let euid = effective_uid().ok_or_else(|| anyhow!("unknown uid"))?;
    let mut hasher = std::collections::hash_map::DefaultHasher::new();
    TEMPLATE_FORMAT.hash(&mut hasher);
    for program in ["initdb", "postgres"] {
        let path = bindir.join(program);
        let meta = fs::metadata(&path)?;
        (path, meta.len(), meta.mtime(), meta.mtime_nsec()).hash(&mut hasher);
    }
    let tmp = std::env::temp_dir();
    let name = format!("repctl-pg-template-{euid}-{:016x}", hasher.finish());
    let final_dir = tmp.join(&name);
    let data = final_dir.join("data");

    // Ours means owned by us and writable only by us; the data dir inside is
    // then 0700 and owned by us or `postgres`, so nobody else could have
    // planted it.
    let usable = |dir: &Path| {
        fs::symlink_metadata(dir)
            .is_ok_and(|m| m.is_dir() && m.uid() == euid && m.mode() & 0o022 == 0)
            && dir.join("data/PG_VERSION").is_file()
            && dir.join("data/global/pg_control").is_file()
    };
    if usable(&final_dir) {
        return Ok(data);
    }
    if final_dir.exists() {
        bail!(
            "{} exists but is not a usable template",
            final_dir.display()
        );
    }

    let build = tempfile::Builder::new()
        .prefix(&format!("{name}.build-"))
        .tempdir_in(&tmp)?;
    fs::set_permissions(build.path(), fs::Permissions::from_mode(0o755))?;
    let build_data = build.path().join("data");
    fs::create_dir(&build_data)?;
    if as_postgres_user {
        run_checked(
            Command::new("chown")
                .arg(format!("{PG_OS_USER}:"))
                .arg(&build_data),
            "chown",
        )?;
    }
    initdb(bindir, as_postgres_user, build.path(), &build_data)?;
    // Another process may have won the race; then use its copy.
    if fs::rename(build.path(), &final_dir).is_ok() {
        let _ = build.keep();
    }
    if usable(&final_dir) {
        Ok(data)
    } else {
        bail!("template {} is not usable", final_dir.display())
    }
}

/// Environment variable naming the `bin` directory of the PostgreSQL that
/// tests, `repctl demo` and the bench run.
pub const PG_BIN_ENV: &str = "REPCTL_PG_BIN";

/// Directory with `initdb`, `pg_ctl`, `postgres` (and `pgbench`).
///
/// Uses `$REPCTL_PG_BIN` when set, else `pg_config --bindir`, else the
/// newest /usr/lib/postgresql/*/bin (Debian installs server binaries there,
/// off PATH).
pub fn pg_bindir() -> Result<PathBuf> {
    static BINDIR: OnceLock<Result<PathBuf, String>> = OnceLock::new();
    BINDIR
        .get_or_init(find_bindir)
        .clone()
        .map_err(|e| anyhow!(e))
}

fn find_bindir() -> Result<PathBuf, String> {
    if let Some(dir) = std::env::var_os(PG_BIN_ENV).filter(|d| !d.is_empty()) {
        return checked_bindir(Path::new(&dir), PG_BIN_ENV).map_err(|e| e.to_string());
    }
    // Debian's pg_config wrapper fails unless a -dev package is installed.
    if let Ok(out) = Command::new("pg_config").arg("--bindir").output()
        && out.status.success()
    {
        let dir = PathBuf::from(String::from_utf8_lossy(&out.stdout).trim());
        if dir.join("initdb").is_file() {
            return Ok(dir);
        }
    }
    let mut best: Option<(Vec<u32>, PathBuf)> = None;
    if let Ok(entries) = fs::read_dir("/usr/lib/postgresql") {
        for entry in entries.flatten() {
            let name = entry.file_name().to_string_lossy().into_owned();
            let Ok(version) = name
                .split('.')
                .map(str::parse::<u32>)
                .collect::<Result<Vec<u32>, _>>()
            else {
                continue;
            };
            let bin = entry.path().join("bin");
            if bin.join("initdb").is_file() && best.as_ref().is_none_or(|(v, _)| version > *v) {
                best = Some((version, bin));
            }
        }
    }
    best.map(|(_, bin)| bin).ok_or_else(|| {
        "PostgreSQL server binaries not found: no initdb in `pg_config --bindir` \
         or /usr/lib/postgresql/*/bin (install postgresql-15)"
            .to_string()
    })
}

/// `dir` if it holds `initdb`; `what` names where it came from.
fn checked_bindir(dir: &Path, what: &str) -> Result<PathBuf> {
    if dir.join("initdb").is_file() {
        Ok(dir.to_path_buf())
    } else {
        bail!(
            "{what} = {}: no initdb there (it must name PostgreSQL's bin directory)",
            dir.display()
        )
    }
}

fn running_as_root() -> bool {
    effective_uid() == Some(0)
}

/// Read from /proc (or `id -u`) to avoid a libc dependency.
fn effective_uid() -> Option<u32> {
    static EUID: OnceLock<Option<u32>> = OnceLock::new();
    *EUID.get_or_init(|| {
        if let Ok(status) = fs::read_to_string("/proc/self/status")
            && let Some(line) = status.lines().find(|l| l.starts_with("Uid:"))
        {
            // Uid: real effective saved fs
            return line.split_whitespace().nth(2)?.parse().ok();
        }
        let out = Command::new("id").arg("-u").output().ok()?;
        String::from_utf8_lossy(&out.stdout).trim().parse().ok()
    })
}

/// Hands the (still empty) cluster dir to the `postgres` OS user; 0755 so
/// root-run tools and other users can still reach the socket and log.
fn prepare_dir_for_postgres_user(dir: &Path) -> Result<()> {
    use std::os::unix::fs::PermissionsExt;
    fs::set_permissions(dir, fs::Permissions::from_mode(0o755))
        .with_context(|| format!("chmod 0755 {}", dir.display()))?;
    let out = Command::new("chown")
        .arg("-R")
        .arg(format!("{PG_OS_USER}:"))
        .arg(dir)
        .output()
        .context("running chown")?;
    if !out.status.success() {
        bail!(
            "chown -R {PG_OS_USER}: {} failed (running as root needs a `{PG_OS_USER}` \
             OS user, e.g. `useradd -r -m postgres`): {}",
            dir.display(),
            String::from_utf8_lossy(&out.stderr).trim()
        );
    }
    Ok(())
}

/// A port that was free a moment ago; `Cluster::start` retries if it is
/// taken by the time the server binds it.
fn free_port() -> Result<u16> {
    let listener = TcpListener::bind("127.0.0.1:0").context("probing for a free port")?;
    Ok(listener.local_addr()?.port())
}

/// Field `n` after the `(comm)` field of /proc/<pid>/stat (0 = state,
/// 1 = ppid). comm may contain spaces and parens, so split after the last ')'.
fn proc_stat_field(stat: &str, n: usize) -> Option<&str> {
    stat.rsplit_once(')')?.1.split_whitespace().nth(n)
}

fn child_pids(parent: u32) -> Vec<u32> {
    let parent = parent.to_string();
    let Ok(entries) = fs::read_dir("/proc") else {
        return Vec::new();
    };
    entries
        .flatten()
        .filter_map(|e| e.file_name().to_str()?.parse::<u32>().ok())
        .filter(|pid| {
            fs::read_to_string(format!("/proc/{pid}/stat"))
                .is_ok_and(|stat| proc_stat_field(&stat, 1) == Some(parent.as_str()))
        })
        .collect()
}

/// Sends SIG`sig` with the shell's `kill` builtin, which unlike kill(1)
/// (procps) exists even on minimal images. With `strict`, failure is an
/// error; otherwise it is ignored because a child may have exited since we
/// listed it.
fn send_signal(sig: &str, pids: &[u32], strict: bool) -> Result<()> {
    if pids.is_empty() {
        return Ok(());
    }
    let out = Command::new("sh")
        .args(["-c", "kill -s \"$0\" \"$@\"", sig])
        .args(pids.iter().map(u32::to_string))
        .output()
        .context("running kill")?;
    if strict && !out.status.success() {
        bail!(
            "kill -s {sig} {pids:?} failed: {}",
            String::from_utf8_lossy(&out.stderr).trim()
        );
    }
    Ok(())
}

fn shell_quote(s: &str) -> String {
    format!("'{}'", s.replace('\'', "'\\''"))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn start_connect_create_database_restart() {
        let mut c = Cluster::start(&ClusterOptions::default()).unwrap();
        assert!(c.is_running());
        let mut client = c.connect("postgres").unwrap();
        let row = client.query_one("SHOW fsync", &[]).unwrap();
        assert_eq!(row.get::<_, String>(0), "off");

        c.execute_admin("postgres", "CREATE ROLE app LOGIN")
            .unwrap();
        c.create_database("my db", Some("app")).unwrap();
        c.execute_admin(
            "my db",
            "CREATE TABLE t (x int); INSERT INTO t VALUES (42); GRANT SELECT ON t TO app",
        )
        .unwrap();
        drop(client);

        let port = c.port();
        c.stop().unwrap();
        assert!(!c.is_running());
        assert!(c.connect("postgres").is_err());
        c.stop().unwrap(); // idempotent

        c.start_again().unwrap();
        assert_eq!(c.port(), port);
        let mut client = Client::connect(&c.tcp_dsn("my db", "app"), NoTls).unwrap();
        let x: i32 = client.query_one("SELECT x FROM t", &[]).unwrap().get(0);
        assert_eq!(x, 42);
        drop(client);

        c.restart().unwrap();
        assert!(c.is_running());
        c.connect("my db").unwrap();
        assert!(c.log_contents().contains("database system is ready"));
    }

    #[test]
    fn extra_settings_apply() {
        let opts = ClusterOptions {
            extra_settings: vec![
                ("application_name".into(), "it's a test".into()),
                ("work_mem".into(), "8MB".into()),
            ],
            ..Default::default()
        };
        let c = Cluster::start(&opts).unwrap();
        let mut client = c.connect("postgres").unwrap();
        let wm: String = client.query_one("SHOW work_mem", &[]).unwrap().get(0);
        assert_eq!(wm, "8MB");
    }

    #[test]
    fn password_auth_requires_password_except_for_postgres() {
        let opts = ClusterOptions {
            password_auth: true,
            ..Default::default()
        };
        let c = Cluster::start(&opts).unwrap();
        c.execute_admin(
            "postgres",
            "CREATE ROLE nopw LOGIN; CREATE ROLE withpw LOGIN PASSWORD 'secret'",
        )
        .unwrap();

        // postgres stays trusted on both transports.
        Client::connect(&c.tcp_dsn("postgres", "postgres"), NoTls).unwrap();
        c.connect("postgres").unwrap();

        // Roles without a password are refused over TCP and the socket.
        assert!(Client::connect(&c.tcp_dsn("postgres", "nopw"), NoTls).is_err());
        assert!(Client::connect(&c.dsn("postgres", "nopw"), NoTls).is_err());

        // Wrong password refused, right one accepted.
        let bad = format!("{} password=wrong", c.tcp_dsn("postgres", "withpw"));
        assert!(Client::connect(&bad, NoTls).is_err());
        let good = format!("{} password=secret", c.tcp_dsn("postgres", "withpw"));
        Client::connect(&good, NoTls).unwrap();
        let good_local = format!("{} password=secret", c.dsn("postgres", "withpw"));
        Client::connect(&good_local, NoTls).unwrap();
    }

    #[test]
    fn freeze_blocks_and_thaw_resumes() {
        let mut c = Cluster::start(&ClusterOptions::default()).unwrap();
        let mut client = c.connect("postgres").unwrap();
        c.freeze().unwrap();
        assert!(c.is_running());

        // TCP connects still succeed (kernel backlog) but the startup
        // handshake never completes, and connect_timeout only covers the
        // former, so watch from another thread.
        let (tx, rx) = std::sync::mpsc::channel();
        let dsn = c.tcp_dsn("postgres", "postgres");
        let waiter = std::thread::spawn(move || {
            let res = Client::connect(&dsn, NoTls).map(|_| ());
            let _ = tx.send(res.is_ok());
        });
        let pending = rx.recv_timeout(std::time::Duration::from_millis(500));
        assert!(
            pending.is_err(),
            "connect finished while frozen: {pending:?}"
        );

        c.thaw().unwrap();
        waiter.join().unwrap();
        assert!(rx.recv().unwrap(), "connect should complete after thaw");
        let one: i32 = client.query_one("SELECT 1", &[]).unwrap().get(0);
        assert_eq!(one, 1);
        c.connect("postgres").unwrap();

        // Dropping a frozen cluster must not hang. (Dropping a Client of a
        // frozen server would: it waits for the server to close the socket.)
        drop(client);
        c.freeze().unwrap();
    }

    #[test]
    fn drop_removes_directory() {
        let c = Cluster::start(&ClusterOptions::default()).unwrap();
        let dir = c.socket_dir().to_path_buf();
        assert!(dir.join("data/PG_VERSION").is_file());
        drop(c);
        assert!(!dir.exists());
    }
}
