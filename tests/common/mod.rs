//! Shared test support: throwaway clusters (shared per test binary where isolation allows, a fresh
//! database pair per test), the real `repctl` binary, and the seed article's own checks.
#![allow(dead_code)]

pub mod run;

use std::path::PathBuf;
use std::process::Output;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Mutex, OnceLock};

use postgres::Client;
use repctl::cluster::{Cluster, ClusterOptions};

/// The seed's table, as created in its article.
pub const SEED_TABLE: &str = "(pk1 int, pk2 text, info text, crt_time timestamp(0), mod_time timestamp(0), primary key (pk1, pk2))";

/// The seed's two tables, by node.
pub const TABLES: [(&str, &str); 2] = [("local", "local.loc_test"), ("remote", "remote.rmt_test")];

/// The seed's bulk insert.
pub fn seed_insert(table: &str, from: i64, to: i64) -> String {
    format!(
        "insert into {table} select generate_series({from}, {to}), 'digoal' || random(), 'test' || random(), now(), clock_timestamp()"
    )
}

/// Both of the seed's layouts.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Layout {
    /// Two databases in one cluster.
    OneCluster,
    /// One database in each of two clusters.
    TwoClusters,
}

/// Two clusters started once per test binary (password auth on, so the seed's roles log in with
/// passwords) and stopped when the binary exits.
fn shared() -> &'static (Cluster, Cluster) {
    static SHARED: OnceLock<(Cluster, Cluster)> = OnceLock::new();
    SHARED.get_or_init(|| {
        let opts = ClusterOptions {
            password_auth: true,
            ..Default::default()
        };
        let a = Cluster::start(&opts).expect("start shared cluster a");
        let b = Cluster::start(&opts).expect("start shared cluster b");
        create_seed_roles(&a);
        create_seed_roles(&b);
        stop_when_process_exits(&a);
        stop_when_process_exits(&b);
        (a, b)
    })
}

/// The seed's roles, non-superusers that log in with passwords.
fn create_seed_roles(c: &Cluster) {
    c.execute_admin("postgres", "create role local login password 'LOCAL321'; create role remote login password 'REMOTE321'")
        .expect("create the seed's roles");
}

/// Statics are never dropped, so a watcher process stops the cluster and removes its files once
/// this test binary has exited.
fn stop_when_process_exits(c: &Cluster) {
    let pg_ctl = c.bindir().join("pg_ctl");
    let data = c.data_dir().to_path_buf();
    let root = data.parent().expect("cluster dir").to_path_buf();
    let as_root = std::process::Command::new("id")
        .arg("-u")
        .output()
        .map(|o| o.stdout == b"0\n")
        .unwrap_or(false);
    let runas = if as_root {
        "runuser -u postgres --"
    } else {
        ""
    };
    let script = format!(
        "while kill -0 {pid} 2>/dev/null; do sleep 0.5; done; {runas} '{pg_ctl}' stop -m immediate -D '{data}' >/dev/null 2>&1; rm -rf '{root}'",
        pid = std::process::id(),
        pg_ctl = pg_ctl.display(),
        data = data.display(),
        root = root.display(),
    );
    // Deliberately not waited for: it outlives this process to clean up after it.
    #[allow(clippy::zombie_processes)]
    std::process::Command::new("sh")
        .arg("-c")
        .arg(script)
        .stdin(std::process::Stdio::null())
        .stdout(std::process::Stdio::null())
        .stderr(std::process::Stdio::null())
        .spawn()
        .expect("spawn cluster watcher");
}

/// A TOML basic string holding `s`.
pub fn toml_str(s: &str) -> String {
    format!("\"{}\"", s.replace('\\', "\\\\").replace('"', "\\\""))
}

/// A unique name per test in this binary.
pub fn unique(prefix: &str) -> String {
    static N: AtomicUsize = AtomicUsize::new(0);
    format!("{prefix}_{}", N.fetch_add(1, Ordering::SeqCst))
}

/// Where a node's database lives.
pub enum Home {
    Shared(&'static Cluster),
    Owned(Mutex<Cluster>),
}

pub struct Node {
    pub name: String,
    pub db: String,
    pub home: Home,
}

impl Node {
    pub fn with_cluster<T>(&self, f: impl FnOnce(&Cluster) -> T) -> T {
        match &self.home {
            Home::Shared(c) => f(c),
            Home::Owned(m) => f(&m.lock().unwrap()),
        }
    }

    pub fn cluster_mut<T>(&self, f: impl FnOnce(&mut Cluster) -> T) -> T {
        match &self.home {
            Home::Shared(_) => panic!(
                "node {} is on a shared cluster; use Setup::owned",
                self.name
            ),
            Home::Owned(m) => f(&mut m.lock().unwrap()),
        }
    }

    /// A superuser session on the node's database.
    pub fn admin(&self) -> Client {
        self.with_cluster(|c| c.connect(&self.db))
            .expect("connect as postgres")
    }

    /// A session as another role, with its password, over TCP (password authentication).
    pub fn login(&self, user: &str, password: &str) -> Client {
        let dsn = self.with_cluster(|c| c.tcp_dsn(&self.db, user));
        postgres::Client::connect(&format!("{dsn} password={password}"), postgres::NoTls)
            .expect("login")
    }

    pub fn exec(&self, sql: &str) {
        self.admin()
            .batch_execute(sql)
            .unwrap_or_else(|e| panic!("node {}: {sql}: {e}", self.name));
    }

    pub fn count(&self, sql: &str) -> i64 {
        self.admin()
            .query_one(sql, &[])
            .unwrap_or_else(|e| panic!("node {}: {sql}: {e}", self.name))
            .get(0)
    }

    /// Every function in schema repctl, with its signature.
    pub fn repctl_functions(&self) -> std::collections::BTreeSet<String> {
        self.admin()
            .query("select p.oid::regprocedure::text from pg_proc p where p.pronamespace = 'repctl'::regnamespace", &[])
            .unwrap()
            .iter()
            .map(|r| r.get(0))
            .collect()
    }

    /// The seed's own comparison: `select sum(hashtext(t.*::text)), count(*) from TABLE t`.
    pub fn seed_checksum(&self, table: &str) -> (Option<i64>, i64) {
        let mut c = self.admin();
        // Under one set of text settings, as repctl verify pins them: nodes' defaults may differ.
        c.batch_execute("set timezone = 'UTC'; set datestyle = 'ISO, YMD'; set extra_float_digits = 3; set bytea_output = 'hex'; set intervalstyle = 'postgres'")
            .unwrap();
        let row = c
            .query_one(
                &format!("select sum(hashtext(t.*::text))::bigint, count(*) from {table} t"),
                &[],
            )
            .unwrap();
        (row.get(0), row.get(1))
    }
}

/// N nodes, a database each, and a config file naming them.
pub struct Setup {
    pub nodes: Vec<Node>,
    pub config: PathBuf,
    /// Environment variables holding peer passwords, handed to every repctl run.
    logins: Vec<(String, String)>,
    _dir: tempfile::TempDir,
}

impl Setup {
    /// Two nodes named `local` and `remote`, in the given layout, on the shared clusters.
    pub fn pair(layout: Layout) -> Setup {
        let (a, b) = shared();
        let (ca, cb) = match layout {
            Layout::OneCluster => (a, a),
            Layout::TwoClusters => (a, b),
        };
        Setup::on(vec![
            ("local", Home::Shared(ca)),
            ("remote", Home::Shared(cb)),
        ])
    }

    /// Nodes named `names`, a database each, all on one shared cluster.
    pub fn one_cluster(names: &[&'static str]) -> Setup {
        let (a, _) = shared();
        Setup::on(names.iter().map(|n| (*n, Home::Shared(a))).collect())
    }

    /// Nodes on clusters of their own, so a test can stop, freeze or restart them. With
    /// `password_auth`, the seed's roles exist and must log in with passwords.
    pub fn owned(names: &[&'static str], password_auth: bool) -> Setup {
        let nodes: Vec<_> = names.iter().map(|n| (*n, None)).collect();
        Setup::owned_on(&nodes, password_auth)
    }

    /// Like [`Setup::owned`], each node on the PostgreSQL of the given bin dir (None: the default).
    pub fn owned_on(nodes: &[(&'static str, Option<PathBuf>)], password_auth: bool) -> Setup {
        let homes = nodes
            .iter()
            .map(|(n, bindir)| {
                let opts = ClusterOptions {
                    password_auth,
                    bindir: bindir.clone(),
                    ..Default::default()
                };
                let c = Cluster::start(&opts).expect("start cluster");
                if password_auth {
                    create_seed_roles(&c);
                }
                (*n, Home::Owned(Mutex::new(c)))
            })
            .collect();
        Setup::on(homes)
    }

    fn on(homes: Vec<(&'static str, Home)>) -> Setup {
        let nodes: Vec<Node> = homes
            .into_iter()
            .map(|(name, home)| {
                let db = unique(name);
                let node = Node {
                    name: name.to_string(),
                    db: db.clone(),
                    home,
                };
                node.with_cluster(|c| c.create_database(&db, None))
                    .expect("create database");
                node
            })
            .collect();
        let dir = tempfile::tempdir().unwrap();
        let config = dir.path().join("repctl.toml");
        let mut s = Setup {
            nodes,
            config,
            logins: vec![],
            _dir: dir,
        };
        s.write_config(&[]);
        s
    }

    /// Rewrites repctl.toml; `logins` gives a node's peer_dsn user and password.
    pub fn write_config(&mut self, logins: &[(&str, &str, &str)]) {
        let all: Vec<String> = self.nodes.iter().map(|n| n.name.clone()).collect();
        self.write_config_for(&all.iter().map(String::as_str).collect::<Vec<_>>(), logins);
    }

    /// Rewrites repctl.toml naming only some of the nodes (a node joins later).
    pub fn write_config_for(&mut self, names: &[&str], logins: &[(&str, &str, &str)]) {
        // dblink lets a non-superuser agent reach only peers that ask for a password.
        let mut text =
            self.agent_lines(names.iter().all(|n| logins.iter().any(|(l, _, _)| l == n)));
        for n in self
            .nodes
            .iter()
            .filter(|n| names.contains(&n.name.as_str()))
        {
            let dsn = n.with_cluster(|c| c.dsn(&n.db, "postgres"));
            text.push_str(&format!("[nodes.{}]\ndsn = {dsn:?}\n", n.name));
            if let Some((_, user, _)) = logins.iter().find(|(node, _, _)| *node == n.name) {
                let peer = n.with_cluster(|c| c.tcp_dsn(&n.db, user));
                text.push_str(&format!(
                    "peer_dsn = {peer:?}\npeer_password_env = \"PW_{}\"\n",
                    n.name.to_uppercase()
                ));
            }
        }
        std::fs::write(&self.config, text).unwrap();
        self.logins = logins
            .iter()
            .map(|(n, _, p)| (format!("PW_{}", n.to_uppercase()), p.to_string()))
            .collect();
    }

    /// The seed's setup on nodes `local` and `remote`: roles `local`/`remote` with passwords own
    /// their databases, schemas and tables `local.loc_test` and `remote.rmt_test`, and the other
    /// node logs in as them (peer_dsn + peer_password_env).
    pub fn seed_tables(&mut self) {
        for (node, role, table) in [
            ("local", "local", "loc_test"),
            ("remote", "remote", "rmt_test"),
        ] {
            let n = self.node(node);
            n.exec(&format!(
                "alter database {db} owner to {role};
                 create schema {role} authorization {role};
                 set role {role};
                 create table {role}.{table} {SEED_TABLE};",
                db = n.db
            ));
        }
        self.write_config(&[
            ("local", "local", "LOCAL321"),
            ("remote", "remote", "REMOTE321"),
        ]);
    }

    /// `repctl init`, then the seed's tables replicated as in its article (`--map`).
    pub fn replicate_seed_tables(&self) {
        self.repctl_ok(&["init"], 0);
        self.repctl_ok(
            &[
                "add-table",
                "local.loc_test",
                "--map",
                "remote=remote.rmt_test",
            ],
            0,
        );
    }

    /// Delivers the inserts queued from `from` to `to` as `drain` sends them first, as column
    /// arrays, with no fallback to row images, then removes them from the queue as drain does.
    pub fn apply_as_column_arrays(&self, from: &str, to: &str) -> Result<(), postgres::Error> {
        let (mut origin, mut peer) = (self.node(from).admin(), self.node(to).admin());
        let batch = repctl::apply::batch::read(&mut origin, to, 1000, &Default::default())
            .unwrap()
            .expect("queued");
        assert!(
            matches!(batch.body, repctl::apply::batch::Body::Columns { .. }),
            "inserts go as column arrays"
        );
        repctl::apply::drain::apply_batch(&mut peer, from, &batch, &batch.seqs)?;
        repctl::apply::drain::settle_applied(&mut origin, &mut peer, from, to).unwrap();
        Ok(())
    }

    /// `create table public.NAME (COLUMNS)` on every node, `init`, then `add-table public.NAME ARGS`.
    pub fn replicate_new_table(&self, name: &str, columns: &str, args: &[&str]) {
        for n in &self.nodes {
            n.exec(&format!("create table {name} ({columns})"));
        }
        self.repctl_ok(&["init"], 0);
        let table = format!("public.{name}");
        let mut all = vec!["add-table", table.as_str()];
        all.extend_from_slice(args);
        self.repctl_ok(&all, 0);
    }

    /// Rewrites the config with other node names for the `local` and `remote` databases.
    pub fn rename_nodes(&self, local: &str, remote: &str) {
        let mut text = self.agent_lines(false);
        for (name, n) in [(local, self.node("local")), (remote, self.node("remote"))] {
            let dsn = n.with_cluster(|c| c.dsn(&n.db, "postgres"));
            text.push_str(&format!(
                "[nodes.{}]\ndsn = {}\n",
                toml_str(name),
                toml_str(&dsn)
            ));
        }
        std::fs::write(&self.config, text).unwrap();
    }

    /// The config's agent settings: a role of this setup's own (tests share clusters, and roles
    /// are per cluster), a superuser unless every peer is reached with a password.
    pub fn agent_lines(&self, passwords: bool) -> String {
        format!(
            "agent_role = \"{}\"\nagent_superuser = {}\n",
            self.agent(),
            !passwords
        )
    }

    /// This setup's agent role.
    pub fn agent(&self) -> String {
        format!("agent_{}", self.nodes[0].db)
    }

    pub fn node(&self, name: &str) -> &Node {
        self.nodes
            .iter()
            .find(|n| n.name == name)
            .unwrap_or_else(|| panic!("no node {name}"))
    }

    /// The real binary against this setup's config, with the peers' passwords, to spawn.
    pub fn command(&self, args: &[&str]) -> std::process::Command {
        let mut cmd = std::process::Command::new(assert_cmd::cargo::cargo_bin("repctl"));
        cmd.arg("--config").arg(&self.config).args(args);
        for (var, pw) in &self.logins {
            cmd.env(var, pw);
        }
        cmd
    }

    /// Runs the real binary against this setup's config.
    pub fn repctl(&self, args: &[&str]) -> Output {
        let mut cmd = assert_cmd::Command::cargo_bin("repctl").unwrap();
        cmd.arg("--config").arg(&self.config).args(args);
        for (var, pw) in &self.logins {
            cmd.env(var, pw);
        }
        cmd.output().unwrap()
    }

    /// Runs repctl and insists on the exit code; returns stdout.
    pub fn repctl_ok(&self, args: &[&str], code: i32) -> String {
        let out = self.repctl(args);
        let stdout = String::from_utf8_lossy(&out.stdout).to_string();
        let stderr = String::from_utf8_lossy(&out.stderr).to_string();
        assert_eq!(
            out.status.code(),
            Some(code),
            "repctl {args:?}\nstdout:\n{stdout}\nstderr:\n{stderr}"
        );
        stdout
    }

    /// Takes a node's database down (no new connection is allowed, repctl's are ended) or back up;
    /// the test's own sessions stay, as a writer's would on a node cut off from its peers.
    pub fn set_down(&self, name: &str, down: bool) {
        let n = self.node(name);
        n.with_cluster(|c| {
            c.execute_admin(
                "postgres",
                &format!(
                    "alter database {db} with allow_connections {allow};
                     select pg_terminate_backend(pid) from pg_stat_activity
                      where datname = '{db}' and application_name like 'repctl%';",
                    db = n.db,
                    allow = !down
                ),
            )
        })
        .expect("set the node down or up");
    }

    /// `repctl verify` exits 0, and the seed's own checksum agrees across nodes.
    pub fn assert_converged(&self, tables: &[(&str, &str)]) {
        self.repctl_ok(&["verify"], 0);
        let sums: Vec<_> = tables
            .iter()
            .map(|(node, t)| self.node(node).seed_checksum(t))
            .collect();
        assert!(
            sums.windows(2).all(|w| w[0] == w[1]),
            "seed checksums differ: {sums:?}"
        );
    }
}
