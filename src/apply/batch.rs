//! A batch of queued changes as `repctl.apply` takes them: a json array in the form
//! `repctl.change_json` gives one change (the sync flush builds the same array in SQL).
//!
//! The origin sends each change's parts as text (`templates/ops/batch.sql`) and the array is
//! joined here: the row images travel as the origin's jsonb prints them, never parsed or
//! re-encoded on the way.

use std::fmt::Write as _;

use anyhow::Result;
use minijinja::context;
use postgres::Client;

use crate::render::{self, names};

/// Changes read from the origin's queue, oldest first.
pub struct Batch {
    /// The json array `repctl.apply` takes.
    pub payload: String,
    pub seqs: Vec<i64>,
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
    let mut payload = String::with_capacity(rows.len() * 256);
    let mut seqs = Vec::with_capacity(rows.len());
    for (i, row) in rows.iter().enumerate() {
        let seq: i64 = row.get(0);
        let json_str = |col: usize| serde_json::to_string(row.get::<_, &str>(col));
        let image = |col: usize| row.get::<_, Option<&str>>(col).unwrap_or("null");
        let _ = write!(
            payload,
            r#"{}{{"s":{seq},"t":{},"op":{},"r":{},"o":{},"ts":{},"resolved":{}}}"#,
            if i == 0 { '[' } else { ',' },
            json_str(1)?,
            json_str(2)?,
            image(3),
            image(4),
            row.get::<_, &str>(5),
            row.get::<_, bool>(6),
        );
        seqs.push(seq);
    }
    payload.push(']');
    Ok(Some(Batch { payload, seqs }))
}
