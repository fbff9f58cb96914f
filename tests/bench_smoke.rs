//! The benchmark (examples/bench.rs) at a tiny size, so it cannot rot: every delivery runs every
//! workload, the peer becomes equal each time (the bench fails otherwise), and the report renders.

#[path = "../examples/bench.rs"]
#[allow(dead_code)]
mod bench;

use bench::{Delivery, Opts, Scale, Workload};

#[test]
fn bench_runs_at_tiny_size() {
    let mut opts = Opts::new(Scale::Tiny, vec![env!("CARGO_BIN_EXE_repctl").into()]);
    opts.verbose = false;
    let report = bench::run(&opts).expect("the bench runs at tiny size");

    assert!(report.deliveries.contains(&Delivery::None));
    assert!(report.deliveries.contains(&Delivery::Native));
    assert!(report.deliveries.contains(&Delivery::Sync));
    assert!(report.deliveries.contains(&Delivery::AsyncDrain));
    assert!(report.deliveries.contains(&Delivery::Seed));
    let [small, big] = report.sizes.bulk;
    for &d in &report.deliveries {
        for n in [small, big] {
            for w in [Workload::W1, Workload::W2, Workload::W3, Workload::W4] {
                let write = report.value(d, w, n);
                assert!(
                    write.is_some_and(|s| s >= 0.0),
                    "{d:?} {w:?} {n}: {write:?}"
                );
                assert!(report.ratio(d, w, n).is_some(), "{d:?} {w:?} {n}: no ratio");
                assert_eq!(
                    report.lag(d, w, n).is_some(),
                    !matches!(d, Delivery::None | Delivery::RowTrigger),
                    "{d:?} {w:?} {n}: peer lag"
                );
            }
        }
        for &clients in &report.sizes.w5_clients {
            let tps = report.value(d, Workload::W5, i64::from(clients));
            assert!(tps.is_some_and(|t| t > 0.0), "{d:?} W5 {clients}: {tps:?}");
            let latency = report.latency(d, i64::from(clients));
            assert!(
                latency.is_some_and(|l| l[0] > 0.0 && l[1] >= l[0]),
                "{d:?} W5 {clients}: latency {latency:?}"
            );
        }
    }
    let drain = report.drain(Workload::W1, big).expect("drain measured");
    assert_eq!(drain.1, big, "the drain delivered the queued inserts");
    assert_eq!(report.verify.len(), 1);
    assert!(report.verify_ratio().is_some_and(|r| r > 0.0));

    let md = report.markdown();
    for heading in [
        "## Run of",
        "### W1",
        "### W5",
        "### Drain",
        "### verify",
        "### Targets (issue 15)",
        "### Targets (issue 5)",
    ] {
        assert!(md.contains(heading), "{heading} missing from:\n{md}");
    }
    // The targets lead.
    assert!(
        md.find("### Targets") < md.find("### W1"),
        "targets first:\n{md}"
    );
    assert!(md.contains("the seed's row trigger + dblink_exec"), "{md}");
    assert!(
        md.contains("PostgreSQL 15") || md.contains("PostgreSQL 1"),
        "{md}"
    );

    // --write keeps what was written by hand around the generated section.
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("BENCHMARKS.md");
    bench::write_markdown(&path, &md).unwrap();
    let first = std::fs::read_to_string(&path).unwrap();
    std::fs::write(&path, format!("{first}\n## Analysis by hand\n\nkept\n")).unwrap();
    bench::write_markdown(&path, "## Run of later\n").unwrap();
    let second = std::fs::read_to_string(&path).unwrap();
    assert!(second.contains("## Run of later"), "{second}");
    assert!(!second.contains("### W5"), "old section replaced: {second}");
    assert!(
        second.contains("<!-- bench:end -->\n\n## Analysis by hand\n\nkept"),
        "{second}"
    );
    assert!(second.starts_with("# Benchmarks"), "{second}");
}
