//! Names repctl derives for the objects it creates. One function builds them all, with one prefix
//! scheme and a hash of the full source, so two tables never collide and nothing exceeds
//! PostgreSQL's 63-byte limit (where it would be silently truncated).

const MAX_IDENT: usize = 63;

// Fixed names that Rust and the generated SQL share; the templates get them as globals
// (see `render`).

/// The capture triggers add-table puts on a replicated table, by the event each fires on.
pub const CAPTURE_TRIGGERS: [(&str, &str); 4] = [
    ("insert", "repctl_capture_insert"),
    ("update", "repctl_capture_update"),
    ("delete", "repctl_capture_delete"),
    ("truncate", "repctl_capture_truncate"),
];

/// Channel the capture triggers and the flush notify when they leave changes queued; `repctl run`
/// listens on it.
pub const NOTIFY_CHANNEL: &str = "repctl";

/// Transaction-local setting that marks changes applied from a peer (or by repair and the initial
/// copy): the capture triggers do not send them on.
pub const APPLYING_SETTING: &str = "repctl.applying";

/// Transaction-local setting on the peer that marks an apply as a synchronous flush (set by the
/// statement the flush prepares): there a conflict under origin-wins or target-wins is refused, so
/// that the change queues and is resolved in delivery order.
pub const FLUSHING_SETTING: &str = "repctl.flushing";

/// `prefix_readable_hash`: readable part sanitized and cut to fit, the hash over the exact source.
pub fn derived(prefix: &str, source: &str) -> String {
    let hash = format!("{:012x}", fnv1a(source.as_bytes()) & 0xffff_ffff_ffff);
    let readable: String = source
        .chars()
        .map(|c| {
            if c.is_ascii_alphanumeric() {
                c.to_ascii_lowercase()
            } else {
                '_'
            }
        })
        .collect();
    let room = MAX_IDENT - prefix.len() - hash.len() - 2;
    let readable = &readable[..readable.len().min(room)];
    format!("{prefix}_{readable}_{hash}")
}

pub fn capture_fn(table: &str) -> String {
    derived("capture", table)
}

pub fn apply_fn(table: &str) -> String {
    derived("apply", table)
}

/// The function the apply function reads what decides on a batch's rows through (see table/read.sql).
pub fn read_fn(table: &str) -> String {
    derived("read", table)
}

/// The foreign server on one node that reaches `peer`.
pub fn server(peer: &str) -> String {
    derived("repctl", peer)
}

/// The queue partition holding changes for `peer`.
pub fn queue_partition(peer: &str) -> String {
    derived("queue", peer)
}

/// The sequence counting the changes synchronous commits delivered to `peer`.
pub fn delivered_counter(peer: &str) -> String {
    derived("delivered", peer)
}

/// A column alias that no replicated column uses.
pub fn free_alias(base: &str, taken: &[String]) -> String {
    let mut alias = base.to_string();
    while taken.contains(&alias) {
        alias.push('_');
    }
    alias
}

fn fnv1a(bytes: &[u8]) -> u64 {
    bytes.iter().fold(0xcbf2_9ce4_8422_2325, |h, b| {
        (h ^ u64::from(*b)).wrapping_mul(0x0100_0000_01b3)
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn long_and_similar_names_stay_distinct_and_short() {
        let long = "s".repeat(63) + "." + &"t".repeat(63);
        let a = capture_fn(&long);
        let b = capture_fn(&(long.clone() + "x"));
        assert!(a.len() <= 63 && b.len() <= 63);
        assert_ne!(a, b);
        assert_ne!(capture_fn("a.b"), capture_fn("a_b"));
        assert!(capture_fn("local.loc_test").starts_with("capture_local_loc_test_"));
    }

    #[test]
    fn free_alias_avoids_columns() {
        assert_eq!(free_alias("s", &["s".into(), "s_".into()]), "s__");
    }
}
