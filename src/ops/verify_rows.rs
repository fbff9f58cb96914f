//! `repctl verify --rows`: the keys that differ between nodes, and what each node has there.

use std::collections::BTreeMap;
use std::time::Instant;

use anyhow::{Result, bail};
use postgres::Client;
use serde::Serialize;

use super::chosen_tables;
use super::diff::side::Side;
use super::diff::{self, Flow, KeyRows, Sink};
use crate::progress::Progress;

/// Pending keys listed by name; beyond this only counted.
const PENDING_SHOWN: usize = 100;

/// What a node has for a key, next to the reference node (the first configured node).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "kebab-case")]
pub enum RowState {
    /// The reference has the row.
    Present,
    /// The reference has no row.
    Absent,
    Same,
    /// Both have the row, with different values.
    Differs,
    /// The reference has the row, this node does not.
    Missing,
    /// This node has a row the reference does not.
    Extra,
}

impl RowState {
    pub fn of(reference: Option<i32>, here: Option<i32>, is_reference: bool) -> RowState {
        match (is_reference, reference, here) {
            (true, Some(_), _) => RowState::Present,
            (true, None, _) => RowState::Absent,
            (false, Some(_), None) => RowState::Missing,
            (false, None, Some(_)) => RowState::Extra,
            (false, None, None) => RowState::Absent,
            (false, Some(a), Some(b)) if a == b => RowState::Same,
            (false, Some(_), Some(_)) => RowState::Differs,
        }
    }

    pub fn as_str(self) -> &'static str {
        match self {
            RowState::Present => "present",
            RowState::Absent => "absent",
            RowState::Same => "same",
            RowState::Differs => "differs",
            RowState::Missing => "missing",
            RowState::Extra => "extra",
        }
    }
}

#[derive(Debug, Serialize)]
pub struct RowDiff {
    /// The key columns' text forms.
    pub key: serde_json::Value,
    pub nodes: BTreeMap<String, RowState>,
}

#[derive(Debug, Serialize)]
pub struct RowsReport {
    pub table: String,
    /// Node whose rows the others are described against.
    pub reference: String,
    pub equal: bool,
    /// Rows per node (of the part compared, when truncated).
    pub rows: BTreeMap<String, i64>,
    pub differences: Vec<RowDiff>,
    /// The limit was reached: more keys may differ.
    pub truncated: bool,
    /// Keys not compared because a change to them was queued or being written (first few).
    pub pending: Vec<serde_json::Value>,
    pub pending_count: u64,
    /// Key-range blocks compared, and how many of them were read key by key.
    pub blocks: u64,
    pub blocks_read: u64,
    pub seconds: f64,
    pub error: Option<String>,
}

/// Compares every replicated table (or the one named) row by row; lists at most `limit` keys per table.
pub fn verify_rows(
    clients: &mut [(String, Option<Client>)],
    only: Option<&str>,
    limit: Option<usize>,
    progress: &mut dyn Progress,
) -> Result<Vec<RowsReport>> {
    let mut reports = Vec::new();
    for logical in &chosen_tables(clients, only)? {
        let started = Instant::now();
        let mut report = RowsReport {
            table: logical.clone(),
            reference: clients[0].0.clone(),
            equal: false,
            rows: BTreeMap::new(),
            differences: Vec::new(),
            truncated: false,
            pending: Vec::new(),
            pending_count: 0,
            blocks: 0,
            blocks_read: 0,
            seconds: 0.0,
            error: None,
        };
        if let Err(e) = compare(clients, logical, limit, progress, &mut report) {
            report.error = Some(format!("{e:#}"));
            report.equal = false;
        }
        report.seconds = started.elapsed().as_secs_f64();
        reports.push(report);
    }
    Ok(reports)
}

fn compare(
    clients: &mut [(String, Option<Client>)],
    logical: &str,
    limit: Option<usize>,
    progress: &mut dyn Progress,
    report: &mut RowsReport,
) -> Result<()> {
    let mut sides = Vec::new();
    for (node, client) in clients.iter_mut() {
        let Some(client) = client else {
            bail!("node {node} is unreachable; every node is needed to compare rows");
        };
        sides.push(Side::open(node, client, logical)?);
    }
    let nodes: Vec<String> = sides.iter().map(|s| s.node.clone()).collect();
    let mut sink = Listing {
        nodes: nodes.clone(),
        limit,
        report,
    };
    let stats = diff::diff_table(&mut sides, &mut sink, progress)?;
    report.rows = nodes.into_iter().zip(stats.rows).collect();
    report.blocks = stats.blocks;
    report.blocks_read = stats.blocks_read;
    report.truncated = stats.stopped;
    report.equal = report.differences.is_empty() && !stats.stopped;
    Ok(())
}

/// Collects differing keys into the report, up to the limit.
struct Listing<'r> {
    nodes: Vec<String>,
    limit: Option<usize>,
    report: &'r mut RowsReport,
}

impl Sink for Listing<'_> {
    fn differ(&mut self, _: &mut [Side<'_>], rows: Vec<KeyRows>) -> Result<Flow> {
        for k in rows {
            if self
                .limit
                .is_some_and(|l| self.report.differences.len() >= l)
            {
                return Ok(Flow::Stop);
            }
            let nodes = self
                .nodes
                .iter()
                .zip(&k.hashes)
                .enumerate()
                .map(|(i, (node, h))| (node.clone(), RowState::of(k.hashes[0], *h, i == 0)))
                .collect();
            self.report.differences.push(RowDiff {
                key: serde_json::from_str(&k.key)?,
                nodes,
            });
        }
        Ok(Flow::Go)
    }

    fn wanted(&self) -> Option<usize> {
        // One past the limit: finding it tells that the list is truncated.
        self.limit
            .map(|l| (l + 1).saturating_sub(self.report.differences.len()))
    }

    fn pending(&mut self, keys: Vec<String>) {
        self.report.pending_count += keys.len() as u64;
        let room = PENDING_SHOWN.saturating_sub(self.report.pending.len());
        self.report.pending.extend(
            keys.iter()
                .take(room)
                .filter_map(|k| serde_json::from_str(k).ok()),
        );
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn states_against_the_reference() {
        assert_eq!(RowState::of(Some(1), Some(1), true), RowState::Present);
        assert_eq!(RowState::of(None, Some(1), true), RowState::Absent);
        assert_eq!(RowState::of(Some(1), None, false), RowState::Missing);
        assert_eq!(RowState::of(None, Some(1), false), RowState::Extra);
        assert_eq!(RowState::of(Some(1), Some(2), false), RowState::Differs);
        assert_eq!(RowState::of(Some(1), Some(1), false), RowState::Same);
    }
}
