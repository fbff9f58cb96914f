//! The README's quick start, run as written: its fenced blocks under "## Quick start" (the
//! repctl.toml, then the shell steps) against two throwaway clusters, with the example databases'
//! connection strings replaced by the clusters'. An edit that breaks a step fails here.

mod common;

use std::path::Path;
use std::process::Command;

use common::Setup;

/// The connection strings the README's quick start uses for its two databases.
const README_A: &str = "host=/var/run/postgresql port=5432 dbname=shop user=postgres";
const README_B: &str = "host=/var/run/postgresql port=5433 dbname=shop user=postgres";

/// The fenced blocks of one `## ` section, as (info string, body).
fn blocks(readme: &str, section: &str) -> Vec<(String, String)> {
    let start = readme
        .find(&format!("\n## {section}\n"))
        .unwrap_or_else(|| panic!("README has no section {section:?}"));
    let body = &readme[start + 1..];
    let body = &body[..body[3..].find("\n## ").map_or(body.len(), |i| i + 3)];
    let mut out = Vec::new();
    let mut lines = body.lines();
    while let Some(line) = lines.next() {
        if let Some(info) = line.strip_prefix("```") {
            let text: Vec<&str> = lines.by_ref().take_while(|l| *l != "```").collect();
            out.push((info.to_string(), text.join("\n") + "\n"));
        }
    }
    out
}

fn run_script(dir: &Path, script: &str) {
    let repctl = assert_cmd::cargo::cargo_bin("repctl");
    let path = format!(
        "{}:{}:{}",
        repctl.parent().unwrap().display(),
        repctl::cluster::pg_bindir().unwrap().display(),
        std::env::var("PATH").unwrap_or_default()
    );
    let out = Command::new("bash")
        .arg("-euc")
        .arg(script)
        .current_dir(dir)
        .env("PATH", path)
        .env_remove("REPCTL_CONFIG")
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "README step failed:\n{script}\nstdout:\n{}\nstderr:\n{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
}

#[test]
fn the_quick_start_runs_as_written() {
    let readme =
        std::fs::read_to_string(concat!(env!("CARGO_MANIFEST_DIR"), "/README.md")).unwrap();
    let s = Setup::owned(&["a", "b"], false);
    let (a, b) = (s.node("a"), s.node("b"));
    let dsn_a = a.with_cluster(|c| c.dsn(&a.db, "postgres"));
    let dsn_b = b.with_cluster(|c| c.dsn(&b.db, "postgres"));
    let ours = |text: &str| text.replace(README_A, &dsn_a).replace(README_B, &dsn_b);
    let dir = tempfile::tempdir().unwrap();
    let steps = blocks(&readme, "Quick start");
    let (config, scripts): (Vec<_>, Vec<_>) = steps.iter().partition(|(info, _)| info == "toml");
    assert_eq!(config.len(), 1, "one repctl.toml in the quick start");
    assert!(config[0].1.contains(README_A) && config[0].1.contains(README_B));
    std::fs::write(dir.path().join("repctl.toml"), ours(&config[0].1)).unwrap();
    assert!(scripts.iter().all(|(info, _)| info == "sh"), "{scripts:?}");
    assert!(scripts.len() >= 2, "the steps, and the demo");
    for (_, script) in &scripts {
        run_script(dir.path(), &ours(script));
    }
    // What the steps wrote arrived on the other side.
    let rows = |n: &common::Node| {
        n.admin()
            .query(
                "select id, owner, balance::text from accounts order by id",
                &[],
            )
            .unwrap()
            .iter()
            .map(|r| {
                (
                    r.get::<_, i32>(0),
                    r.get::<_, String>(1),
                    r.get::<_, String>(2),
                )
            })
            .collect::<Vec<_>>()
    };
    assert_eq!(rows(a), rows(b));
    assert_eq!(rows(a).len(), 2);
}

/// `repctl ARGS -h`.
fn help(args: &[&str]) -> String {
    let out = Command::new(assert_cmd::cargo::cargo_bin("repctl"))
        .args(args)
        .arg("-h")
        .output()
        .unwrap();
    String::from_utf8(out.stdout).unwrap()
}

/// The names listed under a help text's `HEADING:` (subcommands, or options' long names).
fn listed(help: &str, heading: &str) -> Vec<String> {
    help.split(&format!("\n{heading}:\n"))
        .nth(1)
        .unwrap_or("")
        .lines()
        .take_while(|l| !l.is_empty())
        .filter_map(|l| {
            let l = l.trim_start();
            match heading {
                "Commands" => l.split_whitespace().next().map(str::to_string),
                // An option's own line, not a description mentioning one.
                _ if !l.starts_with('-') => None,
                _ => l
                    .split([' ', ','])
                    .find(|w| w.starts_with("--"))
                    .map(str::to_string),
            }
        })
        .filter(|name| !["help", "--config", "--help", "--version"].contains(&name.as_str()))
        .collect()
}

/// Every command has its section, and its options table lists every option `-h` shows (and its
/// subcommands' options).
#[test]
fn every_command_has_a_section_with_its_options() {
    let readme =
        std::fs::read_to_string(concat!(env!("CARGO_MANIFEST_DIR"), "/README.md")).unwrap();
    for command in listed(&help(&[]), "Commands") {
        let heading = format!("\n### `repctl {command}`\n");
        let start = readme
            .find(&heading)
            .unwrap_or_else(|| panic!("README has no section {heading:?}"));
        let section = &readme[start + heading.len()..];
        let section = &section[..section.find("\n### ").unwrap_or(section.len())];
        let own = help(&[&command]);
        let mut invocations = vec![vec![command.clone()]];
        invocations.extend(
            listed(&own, "Commands")
                .into_iter()
                .map(|sub| vec![command.clone(), sub]),
        );
        for args in invocations {
            let args: Vec<&str> = args.iter().map(String::as_str).collect();
            for option in listed(&help(&args), "Options") {
                assert!(
                    section.lines().any(|l| l.starts_with("| `")
                        && l.split('`')
                            .nth(1)
                            .is_some_and(|o| o.split([' ', ',']).any(|w| w == option))),
                    "README's section on repctl {command} has no row for {args:?} {option}"
                );
            }
        }
    }
}
