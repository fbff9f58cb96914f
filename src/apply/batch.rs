//! A batch of queued changes as `repctl.apply` takes them: one json array per field, as
//! `repctl.changes_json` builds it (the sync flush builds it that way, in SQL).
//!
//! The origin sends each change's parts as text (`templates/ops/batch.sql`) and the arrays are
//! joined here: the row images travel as the origin's jsonb prints them, never parsed or
//! re-encoded on the way.

use std::fmt::Write as _;

use anyhow::Result;
use minijinja::context;
use postgres::Client;

use crate::render::{self, names};

/// Changes read from the origin's queue, oldest first.
#[derive(Clone)]
pub struct Batch {
    /// The json array `repctl.apply` takes.
    pub payload: String,
    pub seqs: Vec<i64>,
    /// No transaction was in progress on the origin when the batch was read: every change
    /// numbered below its last was committed or rolled back by then, so none can be queued late.
    pub settled: bool,
}

/// The read statement for `peer`'s queue partition.
pub fn render_read(peer: &str) -> Result<String> {
    render::render(
        "ops/batch.sql",
        &context! { partition => names::queue_partition(peer) },
    )
}

/// The oldest `size` committed changes queued for `peer`; None when there are none.
pub fn read(origin: &mut Client, peer: &str, size: i64) -> Result<Option<Batch>> {
    read_after(origin, peer, size, i64::MIN)
}

/// The same, of the changes after sequence number `after`.
pub fn read_after(origin: &mut Client, peer: &str, size: i64, after: i64) -> Result<Option<Batch>> {
    let rows = origin.query(&render_read(peer)?, &[&size, &after])?;
    if rows.is_empty() {
        return Ok(None);
    }
    // The fields in repctl.changes_json's order; each array gets one element per change.
    let mut fields: [(&str, String); 7] = ["s", "t", "op", "r", "o", "ts", "resolved"]
        .map(|name| (name, String::with_capacity(rows.len() * 16)));
    let mut seqs = Vec::with_capacity(rows.len());
    let settled = rows[0].get::<_, bool>(7);
    for row in &rows {
        let seq: i64 = row.get(0);
        let image = |col: usize| row.get::<_, Option<&str>>(col).unwrap_or("null");
        let values = [
            seq.to_string(),
            serde_json::to_string(row.get::<_, &str>(1))?,
            serde_json::to_string(row.get::<_, &str>(2))?,
            image(3).to_string(),
            image(4).to_string(),
            row.get::<_, &str>(5).to_string(),
            row.get::<_, bool>(6).to_string(),
        ];
        for ((_, array), value) in fields.iter_mut().zip(values) {
            array.push(if array.is_empty() { '[' } else { ',' });
            array.push_str(&value);
        }
        seqs.push(seq);
    }
    let mut payload = String::with_capacity(fields.iter().map(|(_, a)| a.len() + 16).sum());
    for (i, (name, array)) in fields.iter().enumerate() {
        let _ = write!(
            payload,
            "{}\"{name}\":{array}]",
            if i == 0 { '{' } else { ',' }
        );
    }
    payload.push('}');
    Ok(Some(Batch {
        payload,
        seqs,
        settled,
    }))
}
