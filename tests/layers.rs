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
