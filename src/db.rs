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

/// Connects to a node as configured by `dsn`. When the dsn has no password, it comes from the
/// password file as libpq finds it (`passfile` in the dsn, else `PGPASSFILE`, else `~/.pgpass`).
pub fn connect(node: &Node) -> Result<Client> {
    let parsed = ConnInfo::parse(&node.dsn);
    let shown = parsed.as_ref().map(|c| c.to_string()).unwrap_or_default();
    // The postgres crate does not know libpq's `passfile`: take it out before handing the dsn over.
    let (dsn, passfile) = match parsed {
        Ok(mut c) if c.get("passfile").is_some() => {
            let file = c.remove("passfile");
            (c.to_secret_string(), file)
        }
        _ => (node.dsn.clone(), None),
    };
    let mut config = postgres::Config::from_str(&dsn).with_context(|| {
        format!(
            "node {}: dsn is not a valid connection string ({shown})",
            node.name
        )
    })?;
    let mut from_file = None;
    if config.get_password().is_none()
        && let Some(path) = pgpass::file(passfile.as_deref())
        && let Some(password) = pgpass::lookup_file(&path, &pgpass::targets(&config))
    {
        config.password(password);
        from_file = Some(path);
    }
    if config.get_application_name().is_none() {
        config.application_name("repctl");
    }
    if config.get_connect_timeout().is_none() {
        config.connect_timeout(Duration::from_secs(10));
    }
    let mut client = config.connect(NoTls).with_context(|| {
        let source = from_file
            .map(|p| format!("; password from password file {}", p.display()))
            .unwrap_or_default();
        format!("node {}: cannot connect ({shown}{source})", node.name)
    })?;
    // Admin work waits for locks a bounded time rather than queueing behind a long transaction forever.
    client
        .batch_execute("set lock_timeout = '30s'")
        .with_context(|| format!("node {}: setting up the session", node.name))?;
    Ok(client)
}

/// libpq's password file (`hostname:port:database:username:password` lines), which the postgres
/// crate does not read. Not the postgres_secrets crate (1.0.0): its parser refuses a whole file
/// over one line libpq accepts (an empty field, a port that is not a number), and it has none of
/// the host, socket and permission rules that are most of this; it would add nom, thiserror, home
/// and serde for the ~40 lines of escape-aware splitting it could replace.
pub mod pgpass {
    use std::path::{Path, PathBuf};

    use postgres::config::Host;

    /// What one connection attempt looks up: host, port, database and user as libpq compares them.
    #[derive(Debug, Clone, PartialEq, Eq)]
    pub struct Target {
        pub host: String,
        pub port: String,
        pub dbname: String,
        pub user: String,
    }

    /// Socket directories libpq builds may default to; for these, `localhost` entries match too.
    const DEFAULT_SOCKET_DIRS: [&str; 3] = ["/tmp", "/var/run/postgresql", "/run/postgresql"];

    /// The file to read: the dsn's `passfile`, else `PGPASSFILE`, else `~/.pgpass`.
    pub fn file(passfile: Option<&str>) -> Option<PathBuf> {
        if let Some(p) = passfile.filter(|p| !p.is_empty()) {
            return Some(PathBuf::from(p));
        }
        if let Some(p) = std::env::var_os("PGPASSFILE").filter(|p| !p.is_empty()) {
            return Some(PathBuf::from(p));
        }
        std::env::home_dir().map(|h| h.join(".pgpass"))
    }

    /// The targets of a connection config, one per host in the order they are tried. The host is
    /// matched as libpq does: `host`, else `hostaddr`, else `localhost`; a Unix socket matches its
    /// directory, and `localhost` too when it is the default socket directory.
    pub fn targets(config: &postgres::Config) -> Vec<Target> {
        let user = config
            .get_user()
            .map(str::to_string)
            .or_else(os_user)
            .unwrap_or_default();
        let dbname = config.get_dbname().unwrap_or(&user).to_string();
        let hosts = config.get_hosts();
        let addrs = config.get_hostaddrs();
        let ports = config.get_ports();
        let n = hosts.len().max(addrs.len()).max(1);
        let mut out = Vec::new();
        for i in 0..n {
            let port = ports
                .get(i)
                .or_else(|| ports.first())
                .copied()
                .unwrap_or(5432)
                .to_string();
            let mut names = Vec::new();
            match (hosts.get(i), addrs.get(i)) {
                (Some(Host::Tcp(h)), _) => names.push(h.clone()),
                #[allow(unreachable_patterns)]
                (Some(Host::Unix(dir)), _) => {
                    let dir = dir.to_string_lossy().trim_end_matches('/').to_string();
                    let dir = if dir.is_empty() { "/".to_string() } else { dir };
                    if DEFAULT_SOCKET_DIRS.contains(&dir.as_str()) {
                        names.push("localhost".into());
                    }
                    names.push(dir);
                }
                (None, Some(addr)) => names.push(addr.to_string()),
                (None, None) => names.push("localhost".into()),
            }
            for host in names {
                out.push(Target {
                    host,
                    port: port.clone(),
                    dbname: dbname.clone(),
                    user: user.clone(),
                });
            }
        }
        out
    }

    /// The password for the first target with a matching line, reading `path` if libpq would: a
    /// missing file is no password; one that is not a plain file, or that group or others may
    /// access, is ignored with a warning, as libpq does.
    pub fn lookup_file(path: &Path, targets: &[Target]) -> Option<String> {
        let meta = std::fs::metadata(path).ok()?;
        if !meta.is_file() {
            eprintln!(
                "warning: password file \"{}\" is not a plain file",
                path.display()
            );
            return None;
        }
        #[cfg(unix)]
        {
            use std::os::unix::fs::PermissionsExt;
            if meta.permissions().mode() & 0o077 != 0 {
                eprintln!(
                    "warning: password file \"{}\" has group or world access; permissions should be u=rw (0600) or less",
                    path.display()
                );
                return None;
            }
        }
        let bytes = std::fs::read(path).ok()?;
        let text = String::from_utf8_lossy(&bytes);
        targets.iter().find_map(|t| lookup(&text, t))
    }

    /// The password of the first line matching `target`: four fields compared exactly (`*` alone
    /// matches anything), `\:` and `\\` escaped, `#` lines are comments. An empty password counts
    /// as none, as in libpq.
    pub fn lookup(text: &str, target: &Target) -> Option<String> {
        let wanted = [
            target.host.as_str(),
            target.port.as_str(),
            target.dbname.as_str(),
            target.user.as_str(),
        ];
        for line in text.lines() {
            let line = line.strip_suffix('\r').unwrap_or(line);
            if line.is_empty() || line.starts_with('#') {
                continue;
            }
            let fields = split(line);
            if fields.len() < 5 {
                continue;
            }
            let matches = fields
                .iter()
                .zip(wanted)
                .all(|((value, raw), want)| *raw == "*" || value == want);
            if matches {
                let password = &fields[4].0;
                return (!password.is_empty()).then(|| password.clone());
            }
        }
        None
    }

    /// Splits a line at unescaped colons: each field de-escaped, with its raw text.
    fn split(line: &str) -> Vec<(String, &str)> {
        let mut fields = Vec::new();
        let mut value = String::new();
        let mut start = 0;
        let mut chars = line.char_indices();
        while let Some((i, c)) = chars.next() {
            match c {
                '\\' => match chars.next() {
                    Some((_, e)) => value.push(e),
                    None => value.push('\\'),
                },
                ':' => {
                    fields.push((std::mem::take(&mut value), &line[start..i]));
                    start = i + 1;
                }
                c => value.push(c),
            }
        }
        fields.push((value, &line[start..]));
        fields
    }

    /// The OS user, libpq's (and the postgres crate's) default user name.
    fn os_user() -> Option<String> {
        #[cfg(unix)]
        {
            use std::os::unix::fs::MetadataExt;
            if let Ok(uid) = std::fs::metadata("/proc/self").map(|m| m.uid())
                && let Ok(passwd) = std::fs::read_to_string("/etc/passwd")
            {
                let name = passwd.lines().find_map(|l| {
                    let f: Vec<&str> = l.split(':').collect();
                    (f.len() > 2 && f[2] == uid.to_string()).then(|| f[0].to_string())
                });
                if name.is_some() {
                    return name;
                }
            }
        }
        std::env::var("USER")
            .or_else(|_| std::env::var("LOGNAME"))
            .ok()
    }

    #[cfg(test)]
    mod tests {
        use std::str::FromStr;

        use super::*;

        fn t(host: &str, port: &str, dbname: &str, user: &str) -> Target {
            Target {
                host: host.into(),
                port: port.into(),
                dbname: dbname.into(),
                user: user.into(),
            }
        }

        #[test]
        fn first_matching_line_wins_with_wildcards() {
            let file = "# comment\n\
                        \n\
                        db.example:5432:app:alice:first\n\
                        *:*:app:alice:second\n\
                        *:*:*:*:fallback\n";
            assert_eq!(
                lookup(file, &t("db.example", "5432", "app", "alice")).as_deref(),
                Some("first")
            );
            assert_eq!(
                lookup(file, &t("other", "5441", "app", "alice")).as_deref(),
                Some("second")
            );
            assert_eq!(
                lookup(file, &t("other", "5441", "x", "bob")).as_deref(),
                Some("fallback")
            );
            assert_eq!(lookup("h:1:d:u:p\n", &t("h", "2", "d", "u")), None);
        }

        #[test]
        fn escapes_in_fields_and_password() {
            let file = r"a\:b:5432:d\\b:u:p\:w\\d\:x:ignored";
            assert_eq!(
                lookup(file, &t("a:b", "5432", "d\\b", "u")).as_deref(),
                Some("p:w\\d:x")
            );
            // An escaped star is a literal star, not a wildcard.
            assert_eq!(lookup(r"\*:*:*:*:lit", &t("h", "1", "d", "u")), None);
            assert_eq!(
                lookup(r"\*:*:*:*:lit", &t("*", "1", "d", "u")).as_deref(),
                Some("lit")
            );
            // A star is a wildcard only as a whole field.
            assert_eq!(lookup("h*:*:*:*:p", &t("hx", "1", "d", "u")), None);
        }

        #[test]
        fn short_lines_crlf_and_empty_passwords() {
            assert_eq!(lookup("h:1:d:u\n", &t("h", "1", "d", "u")), None);
            assert_eq!(
                lookup("h:1:d:u:pw\r\n", &t("h", "1", "d", "u")).as_deref(),
                Some("pw")
            );
            // The first match decides, even when its password is empty.
            assert_eq!(
                lookup("h:1:d:u:\nh:1:d:u:pw\n", &t("h", "1", "d", "u")),
                None
            );
            // Unicode survives.
            assert_eq!(
                lookup("*:*:*:*:pä:ß\n", &t("h", "1", "d", "u")).as_deref(),
                Some("pä")
            );
        }

        #[test]
        fn targets_follow_libpq_defaults() {
            let c = postgres::Config::from_str("host=127.0.0.1 port=5441 dbname=d user=u").unwrap();
            assert_eq!(targets(&c), [t("127.0.0.1", "5441", "d", "u")]);
            // No port: 5432; no dbname: the user's name.
            let c = postgres::Config::from_str("host=db user=u").unwrap();
            assert_eq!(targets(&c), [t("db", "5432", "u", "u")]);
            // A socket directory is matched as such; the default one also as localhost.
            let c = postgres::Config::from_str("host=/tmp/x/ user=u").unwrap();
            assert_eq!(targets(&c), [t("/tmp/x", "5432", "u", "u")]);
            let c = postgres::Config::from_str("host=/var/run/postgresql user=u").unwrap();
            assert_eq!(
                targets(&c),
                [
                    t("localhost", "5432", "u", "u"),
                    t("/var/run/postgresql", "5432", "u", "u")
                ]
            );
            // hostaddr without host; several hosts with their ports, in order.
            let c = postgres::Config::from_str("hostaddr=10.0.0.1 user=u").unwrap();
            assert_eq!(targets(&c)[0].host, "10.0.0.1");
            let c = postgres::Config::from_str("host=a,b port=1,2 user=u").unwrap();
            assert_eq!(targets(&c), [t("a", "1", "u", "u"), t("b", "2", "u", "u")]);
            // No user: the OS user.
            let c = postgres::Config::from_str("host=h").unwrap();
            assert!(!targets(&c)[0].user.is_empty());
        }

        #[cfg(unix)]
        #[test]
        fn files_others_may_read_are_ignored() {
            use std::os::unix::fs::PermissionsExt;
            let dir = tempfile::tempdir().unwrap();
            let path = dir.path().join("pgpass");
            std::fs::write(&path, "*:*:*:*:secret\n").unwrap();
            let target = [t("h", "1", "d", "u")];
            for (mode, found) in [(0o600, true), (0o400, true), (0o640, false), (0o604, false)] {
                std::fs::set_permissions(&path, std::fs::Permissions::from_mode(mode)).unwrap();
                assert_eq!(
                    lookup_file(&path, &target).is_some(),
                    found,
                    "mode {mode:o}"
                );
            }
            assert_eq!(lookup_file(&dir.path().join("missing"), &target), None);
            assert_eq!(lookup_file(dir.path(), &target), None);
        }
    }
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

/// The version of repctl's schema (its tables and functions) this repctl installs. A change to
/// an installed schema's shape raises it, with a step in templates/node/migrations.sql that init
/// runs on nodes recording a lower one.
pub const SCHEMA_VERSION: i32 = 3;

/// The schema version a node's repctl.meta records, or None when `repctl init` has not run there.
/// Installs from before versions were recorded count as 0.
pub fn installed_schema(client: &mut Client) -> Result<Option<i32>> {
    if installed_version(client)?.is_none() {
        return Ok(None);
    }
    let recorded: Option<String> = client
        .query_opt(
            "select value from repctl.meta where key = 'schema_version'",
            &[],
        )?
        .map(|r| r.get(0));
    match recorded {
        None => Ok(Some(0)),
        Some(v) => v
            .parse()
            .map(Some)
            .with_context(|| format!("repctl.meta schema_version {v:?} is not a number")),
    }
}

/// Refuses a node whose schema a newer repctl installed: this one's functions would replace
/// that one's and its migrations would not know the newer shape.
pub fn refuse_newer_schema(node: &str, installed: i32) -> Result<()> {
    if installed > SCHEMA_VERSION {
        anyhow::bail!(
            "node {node}: its repctl schema is version {installed}, newer than this repctl's \
             ({SCHEMA_VERSION}, repctl {}); use the repctl that installed it or a newer one",
            env!("CARGO_PKG_VERSION")
        );
    }
    Ok(())
}

/// Fails with what to do when a node has no repctl schema, or one of another version.
pub fn require_installed(client: &mut Client, node: &str) -> Result<()> {
    let Some(installed) = installed_schema(client)? else {
        anyhow::bail!("node {node}: repctl is not installed there; run `repctl init` first");
    };
    refuse_newer_schema(node, installed)?;
    if installed < SCHEMA_VERSION {
        anyhow::bail!(
            "node {node}: its repctl schema is version {installed}, older than this repctl's \
             ({SCHEMA_VERSION}); run `repctl init` to upgrade it"
        );
    }
    Ok(())
}
