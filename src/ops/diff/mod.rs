//! Row-level comparison: which keys differ between nodes, without pulling whole tables.
//!
//! A table is compared in blocks of primary-key ranges. One reference node (the one with the most
//! rows) walks its key index a chunk at a time and names the start of every BLOCK_ROWS-th key;
//! every node then hashes the same ranges (count and sum of row hashes, as `repctl verify` does),
//! one index range scan per block, all nodes at once. Only blocks that differ are looked into: a
//! small one is read key by key on every node, and one where some node holds many more rows than
//! the reference is split again, with that node choosing the boundaries. The work is one pass over
//! each node's table plus the differing blocks; memory is one chunk of boundaries and one block of
//! keys per node, whatever the table's size.

pub mod settle;
pub mod side;

use std::collections::HashMap;

use anyhow::Result;
use serde::Serialize;

use side::{Range, Side, each};

use crate::progress::Progress;

/// Rows per block: differing blocks of about this size are read key by key.
pub const BLOCK_ROWS: i64 = 1000;
/// Blocks per round trip of the reference's walk (and per step of the progress bar).
const BLOCKS_PER_CHUNK: i64 = 100;
/// A differing block where some node has more rows than this is split rather than read.
const LEAF_MAX: i64 = 4 * BLOCK_ROWS;
/// Candidate keys settled together (one pause between re-reads per batch).
const SETTLE_BATCH: usize = 10_000;
/// Near a sink's limit, smaller batches end the search sooner; not tiny ones, each costs a pause.
const MIN_SETTLE_BATCH: usize = 16;

/// A key (jsonb text of its key columns) with each node's row hash, None where it has no row.
#[derive(Debug, Clone)]
pub struct KeyRows {
    pub key: String,
    pub hashes: Vec<Option<i32>>,
}

pub enum Flow {
    Go,
    Stop,
}

/// Where the comparison's findings go, batch by batch, so nothing has to hold them all.
pub trait Sink {
    /// Keys that differ (re-read just now). `sides` is the comparison's own connections.
    fn differ(&mut self, sides: &mut [Side<'_>], rows: Vec<KeyRows>) -> Result<Flow>;
    /// Keys left out because a change to them is queued or was being written.
    fn pending(&mut self, keys: Vec<String>);
    /// How many more differences the sink takes, if it has a limit: candidates are settled as
    /// soon as there are that many, so a limit also ends the search early.
    fn wanted(&self) -> Option<usize> {
        None
    }
}

#[derive(Debug, Clone, Default, Serialize)]
pub struct Stats {
    /// Rows per node, in side order (complete unless stopped).
    pub rows: Vec<i64>,
    pub blocks: u64,
    /// Blocks read key by key.
    pub blocks_read: u64,
    /// Keys that differed in the block pass, before settling.
    pub candidates: u64,
    /// The sink asked to stop (e.g. a limit was reached); more differences may exist.
    pub stopped: bool,
}

/// Compares one table across `sides` (every node, the same logical table), feeding `sink`.
pub fn diff_table(
    sides: &mut [Side<'_>],
    sink: &mut dyn Sink,
    progress: &mut dyn Progress,
) -> Result<Stats> {
    // The blocks pass is itself the checksum (an equal table costs one pass, as `verify` does), so
    // the reference is chosen by the planner's row estimate.
    side::agree(sides)?;
    let estimates = each(sides, |s| s.estimate())?;
    let reference = heaviest(&estimates);
    progress.start(&sides[0].table.logical, estimates[reference].max(0) as u64);
    let mut walk = Walk {
        stats: Stats {
            rows: vec![0; sides.len()],
            ..Stats::default()
        },
        sides,
        sink,
        progress,
        candidates: Vec::new(),
    };
    let flow = walk.range(Range::default(), reference, true)?;
    if let Flow::Go = flow {
        walk.settle()?;
    }
    walk.progress.finish();
    Ok(walk.stats)
}

fn heaviest(counts: &[i64]) -> usize {
    (0..counts.len()).max_by_key(|&i| counts[i]).unwrap_or(0)
}

struct Walk<'a, 'c> {
    sides: &'a mut [Side<'c>],
    sink: &'a mut dyn Sink,
    progress: &'a mut dyn Progress,
    /// Keys that differed in the block pass, waiting to be settled.
    candidates: Vec<String>,
    stats: Stats,
}

impl Walk<'_, '_> {
    /// Compares `range` block by block, with blocks chosen on side `reference`.
    fn range(&mut self, range: Range, reference: usize, top: bool) -> Result<Flow> {
        let mut lo = range.lo.clone();
        loop {
            let chunk = Range {
                lo: lo.clone(),
                hi: range.hi.clone(),
            };
            let starts = self.sides[reference].bounds(&chunk, BLOCK_ROWS, BLOCKS_PER_CHUNK)?;
            let next = starts.get(BLOCKS_PER_CHUNK as usize).cloned();
            let blocks = blocks(
                &chunk,
                &starts[..starts.len().min(BLOCKS_PER_CHUNK as usize)],
                &next,
            );
            let sums = each(self.sides, |s| s.sums(&blocks))?;
            for (j, block) in blocks.iter().enumerate() {
                self.stats.blocks += 1;
                let counts: Vec<i64> = sums.iter().map(|s| s[j].0).collect();
                if sums.iter().all(|s| s[j] == sums[0][j]) {
                    continue;
                }
                let flow = if counts.iter().all(|&c| c <= LEAF_MAX) {
                    self.read(block)?
                } else {
                    // Some node has far more rows here than the reference: let it split the block.
                    self.range(block.clone(), heaviest(&counts), false)?
                };
                if let Flow::Stop = flow {
                    return Ok(Flow::Stop);
                }
            }
            if top {
                for (i, s) in sums.iter().enumerate() {
                    self.stats.rows[i] += s.iter().map(|b| b.0).sum::<i64>();
                }
                let covered: i64 = sums[reference].iter().map(|s| s.0).sum();
                self.progress.advance(covered.max(0) as u64);
            }
            match next {
                Some(n) => lo = Some(n),
                None => return Ok(Flow::Go),
            }
        }
    }

    /// Reads a differing block key by key on every node and queues the keys that differ.
    fn read(&mut self, block: &Range) -> Result<Flow> {
        self.stats.blocks_read += 1;
        let per_side = each(self.sides, |s| s.rows(block))?;
        let n = per_side.len();
        let mut hashes: HashMap<String, Vec<Option<i32>>> = HashMap::new();
        for (i, rows) in per_side.into_iter().enumerate() {
            for (key, h) in rows {
                hashes.entry(key).or_insert_with(|| vec![None; n])[i] = Some(h);
            }
        }
        let before = self.candidates.len();
        self.candidates.extend(
            hashes
                .into_iter()
                .filter(|(_, h)| h.iter().any(|x| *x != h[0]))
                .map(|(k, _)| k),
        );
        self.stats.candidates += (self.candidates.len() - before) as u64;
        let batch = self
            .sink
            .wanted()
            .map_or(SETTLE_BATCH, |w| w.clamp(MIN_SETTLE_BATCH, SETTLE_BATCH));
        while self.candidates.len() >= batch {
            if let Flow::Stop = self.settle_batch()? {
                return Ok(Flow::Stop);
            }
        }
        Ok(Flow::Go)
    }

    /// Settles every candidate left.
    fn settle(&mut self) -> Result<Flow> {
        while !self.candidates.is_empty() {
            if let Flow::Stop = self.settle_batch()? {
                return Ok(Flow::Stop);
            }
        }
        Ok(Flow::Go)
    }

    /// Settles up to SETTLE_BATCH candidates and hands the findings to the sink.
    fn settle_batch(&mut self) -> Result<Flow> {
        let n = self.candidates.len().min(SETTLE_BATCH);
        let keys: Vec<String> = self.candidates.drain(..n).collect();
        let settled = settle::settle(self.sides, keys)?;
        if !settled.pending.is_empty() {
            self.sink.pending(settled.pending);
        }
        if settled.differ.is_empty() {
            return Ok(Flow::Go);
        }
        let flow = self.sink.differ(self.sides, settled.differ)?;
        if let Flow::Stop = flow {
            self.stats.stopped = true;
        }
        Ok(flow)
    }
}

/// The blocks of one chunk: block j runs from `starts[j]` to `starts[j + 1]`, except that the
/// first starts at the chunk's own lower bound and the last ends where the next chunk starts (or
/// at the chunk's upper bound), so keys the reference lacks are covered too.
fn blocks(chunk: &Range, starts: &[String], next: &Option<String>) -> Vec<Range> {
    let n = starts.len().max(1);
    (0..n)
        .map(|j| Range {
            lo: if j == 0 {
                chunk.lo.clone()
            } else {
                Some(starts[j].clone())
            },
            hi: if j + 1 < n {
                Some(starts[j + 1].clone())
            } else {
                next.clone().or_else(|| chunk.hi.clone())
            },
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn r(lo: Option<&str>, hi: Option<&str>) -> Range {
        Range {
            lo: lo.map(str::to_string),
            hi: hi.map(str::to_string),
        }
    }

    #[test]
    fn blocks_cover_the_chunk_without_gaps() {
        let starts = vec!["a".to_string(), "c".to_string(), "e".to_string()];
        let got = blocks(&r(None, Some("z")), &starts, &Some("g".into()));
        assert_eq!(
            got,
            vec![
                r(None, Some("c")),
                r(Some("c"), Some("e")),
                r(Some("e"), Some("g"))
            ]
        );
        let got = blocks(&r(Some("g"), None), &["h".to_string()], &None);
        assert_eq!(got, vec![r(Some("g"), None)]);
        // The reference has nothing in the range: one block, the whole range.
        assert_eq!(
            blocks(&r(Some("a"), Some("b")), &[], &None),
            vec![r(Some("a"), Some("b"))]
        );
    }
}
