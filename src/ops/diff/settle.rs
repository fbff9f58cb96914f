//! Settling candidate keys: the block pass reads nodes at slightly different moments, and changes
//! may be queued or on their way. A candidate is re-read twice on every node, a pause apart, and
//! looked up in every node's queue; only a key that still differs, did not change between the
//! re-reads and has nothing queued is a difference. The others are pending.

use std::collections::{HashMap, HashSet};
use std::time::Duration;

use anyhow::Result;

use super::KeyRows;
use super::side::{Side, each};

/// Long enough for a synchronous commit in flight (peer applied, origin not yet committed) to finish.
const PAUSE: Duration = Duration::from_millis(100);

pub struct Settled {
    /// Keys that differ, in key order, with each node's row hash from the last re-read.
    pub differ: Vec<KeyRows>,
    /// Keys with a change queued on some node, or written while they were compared.
    pub pending: Vec<String>,
}

pub fn settle(sides: &mut [Side<'_>], mut keys: Vec<String>) -> Result<Settled> {
    // A key can turn up in two blocks when nodes sort keys differently (collations).
    keys.sort_unstable();
    keys.dedup();
    let mut queued = Queued::default();
    queued.add(sides, &keys)?;
    let first = recheck(sides, &keys)?;
    std::thread::sleep(PAUSE);
    let second = recheck(sides, &keys)?;
    queued.add(sides, &keys)?;
    let before: HashMap<&str, &Vec<Option<i32>>> =
        first.iter().map(|k| (k.key.as_str(), &k.hashes)).collect();
    let mut settled = Settled {
        differ: Vec::new(),
        pending: Vec::new(),
    };
    for k in second {
        let moved = before.get(k.key.as_str()) != Some(&&k.hashes);
        if queued.all || queued.keys.contains(&k.key) || moved {
            settled.pending.push(k.key);
        } else if k.hashes.iter().any(|h| *h != k.hashes[0]) {
            settled.differ.push(k);
        }
    }
    Ok(settled)
}

/// Every node's row hash for each key, in the first node's key order.
fn recheck(sides: &mut [Side<'_>], keys: &[String]) -> Result<Vec<KeyRows>> {
    let per_side = each(sides, |s| s.recheck(keys))?;
    let n = per_side.len();
    let mut order = Vec::new();
    let mut hashes: HashMap<String, Vec<Option<i32>>> = HashMap::new();
    for (i, rows) in per_side.into_iter().enumerate() {
        for (key, h) in rows {
            let slots = hashes.entry(key.clone()).or_insert_with(|| {
                order.push(key);
                vec![None; n]
            });
            slots[i] = h;
        }
    }
    Ok(order
        .into_iter()
        .map(|key| {
            let hashes = hashes.remove(&key).unwrap_or_default();
            KeyRows { key, hashes }
        })
        .collect())
}

#[derive(Default)]
struct Queued {
    all: bool,
    keys: HashSet<String>,
}

impl Queued {
    fn add(&mut self, sides: &mut [Side<'_>], keys: &[String]) -> Result<()> {
        for (all, found) in each(sides, |s| s.queued(keys))? {
            self.all |= all;
            self.keys.extend(found);
        }
        Ok(())
    }
}
