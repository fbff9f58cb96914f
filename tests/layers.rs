//! The library's layers point one way: `install` (init, add-table and the initial copy) uses
//! neither `apply` (delivery) nor `ops` (verify, status, lag); what they share lives below them
//! (`locks`, `progress`), and the copy's drain is a callback the CLI wires.

#[test]
fn install_does_not_use_apply_or_ops() {
    let dir = concat!(env!("CARGO_MANIFEST_DIR"), "/src/install");
    for entry in std::fs::read_dir(dir).unwrap() {
        let path = entry.unwrap().path();
        let text = std::fs::read_to_string(&path).unwrap();
        for upward in ["crate::apply", "crate::ops", "crate::cli"] {
            assert!(!text.contains(upward), "{} uses {upward}", path.display());
        }
    }
}

/// Throwaway clusters (`cluster`, behind the feature `throwaway-clusters`) serve the demo, the
/// tests and the bench; nothing that operates real nodes may need them.
#[test]
fn only_the_demo_uses_the_throwaway_clusters() {
    fn walk(dir: &std::path::Path, found: &mut Vec<String>) {
        for entry in std::fs::read_dir(dir).unwrap() {
            let path = entry.unwrap().path();
            if path.is_dir() {
                walk(&path, found);
            } else if std::fs::read_to_string(&path)
                .unwrap()
                .contains("crate::cluster")
            {
                found.push(
                    path.strip_prefix(env!("CARGO_MANIFEST_DIR"))
                        .unwrap()
                        .display()
                        .to_string(),
                );
            }
        }
    }
    let mut found = Vec::new();
    walk(
        concat!(env!("CARGO_MANIFEST_DIR"), "/src").as_ref(),
        &mut found,
    );
    assert_eq!(found, ["src/cli/demo.rs"]);
}
