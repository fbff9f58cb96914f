//! The tables repctl prints for people: every command's header row, and a header over every column.

mod common;

use common::{Layout, Setup};

/// The header rows of the tables in a command's output, cells joined by " | ", after checking that
/// every line of each table has as many cells as its header.
fn header_rows(command: &str, stdout: &str) -> Vec<String> {
    let cells = |line: &str| -> Vec<String> {
        line.trim()
            .trim_matches('│')
            .split('┆')
            .map(|c| c.trim().to_string())
            .collect()
    };
    let mut headers = Vec::new();
    let mut lines = stdout.lines();
    while let Some(line) = lines.next() {
        if !line.starts_with('┌') {
            continue;
        }
        let header = cells(lines.next().expect("a header under the top border"));
        assert!(
            header.iter().all(|c| !c.is_empty()),
            "{command}: a column without a header: {header:?}\n{stdout}"
        );
        for body in lines.by_ref().take_while(|l| !l.starts_with('└')) {
            if body.starts_with('│') {
                assert_eq!(
                    cells(body).len(),
                    header.len(),
                    "{command}: a row with another number of cells than the header\n{stdout}"
                );
            }
        }
        headers.push(format!("{command}: {}", header.join(" | ")));
    }
    assert!(!headers.is_empty(), "{command} printed no table:\n{stdout}");
    headers
}

/// Every command that prints a table, in a state where each table has rows: a conflict recorded,
/// a row that differs, a repair.
#[test]
fn every_table_has_a_header_over_each_column() {
    let s = Setup::pair(Layout::TwoClusters);
    s.replicate_new_table("t", "id int primary key, v text", &["--mode", "async"]);
    s.node("local").exec("insert into t values (1, 'local')");
    s.node("remote").exec("insert into t values (1, 'remote')");
    let mut out = Vec::new();
    out.extend(header_rows("drain", &s.repctl_ok(&["drain"], 0)));
    out.extend(header_rows("lag", &s.repctl_ok(&["lag"], 0)));
    out.extend(header_rows("status", &s.repctl_ok(&["status"], 0)));
    out.extend(header_rows("conflicts", &s.repctl_ok(&["conflicts"], 1)));
    // A row only one node has: not captured, as the apply path writes.
    s.node("remote").exec(
        "begin; select set_config('repctl.applying', 'on', true); insert into t values (2, 'x'); commit",
    );
    out.extend(header_rows("verify", &s.repctl_ok(&["verify"], 1)));
    out.extend(header_rows(
        "verify --rows",
        &s.repctl_ok(&["verify", "--rows"], 1),
    ));
    out.extend(header_rows(
        "repair",
        &s.repctl_ok(&["repair", "--from", "remote"], 0),
    ));
    // A change the peer refuses, parked.
    s.repctl_ok(&["alter-table", "public.t", "--on-apply-error", "park"], 0);
    s.node("remote")
        .exec("alter table t add constraint not_bad check (v <> 'bad')");
    s.node("local").exec("insert into t values (3, 'bad')");
    s.repctl_ok(&["drain"], 0);
    out.extend(header_rows(
        "queue",
        &s.repctl_ok(&["queue", "--from", "local", "--to", "remote"], 0),
    ));
    out.extend(header_rows(
        "queue parked",
        &s.repctl_ok(&["queue", "parked"], 1),
    ));
    out.extend(header_rows("status", &s.repctl_ok(&["status"], 1)));
    out.extend(header_rows("prune", &s.repctl_ok(&["prune"], 0)));
    insta::assert_snapshot!(out.join("\n"));
}
