//! A batch of queued changes as `repctl.apply` takes them: one json array per field, as
//! `repctl.changes_json` builds it (the sync flush builds it that way, in SQL).
//!
//! The origin sends each change's parts as text (`repctl.read_queue`) and the arrays are
//! joined here: the row images travel as the origin's jsonb prints them, never parsed or
//! re-encoded on the way. A batch of one table's inserts (a bulk load) goes as one array of values
//! per column instead (`Columns`), taken from the images on the origin (`repctl.read_columns`)
//! and passed to the peer as received, which inserts them without parsing a json object per row.

use std::collections::{BTreeSet, HashMap};
use std::error::Error;
use std::fmt::Write as _;

use anyhow::Result;
use bytes::BytesMut;
use postgres::types::{FromSql, IsNull, ToSql, Type, to_sql_checked};
use postgres::{Client, Row};

/// Changes read from the origin's queue.
#[derive(Clone)]
pub struct Batch {
    /// Their sequence numbers, oldest first (the payload may hold them in another order, see
    /// `apply_order`).
    pub seqs: Vec<i64>,
    /// No transaction was in progress on the origin when the batch was read: every change
    /// numbered below its last was committed or rolled back by then, so none can be queued late.
    pub settled: bool,
    pub body: Body,
}

#[derive(Clone)]
pub enum Body {
    /// The json object `repctl.apply` takes.
    Images(String),
    /// Inserts into one table, as `repctl.apply`'s `p_changes`, `p_columns` and `p_values`.
    Columns {
        payload: String,
        columns: Vec<String>,
        values: TextArray,
    },
}

impl Batch {
    /// The changes as a message shows them: the row images, or what the column arrays hold.
    pub fn shown(&self) -> String {
        match &self.body {
            Body::Images(payload) => payload.clone(),
            Body::Columns { payload, .. } => {
                format!("{} inserts as column arrays, {payload}", self.seqs.len())
            }
        }
    }
}

/// A `text[]` in PostgreSQL's binary form, passed from one server to another without decoding
/// its (tens of thousands of) elements.
#[derive(Clone, Debug)]
pub struct TextArray(Vec<u8>);

impl<'a> FromSql<'a> for TextArray {
    fn from_sql(_: &Type, raw: &'a [u8]) -> Result<Self, Box<dyn Error + Sync + Send>> {
        Ok(TextArray(raw.to_vec()))
    }

    fn accepts(ty: &Type) -> bool {
        *ty == Type::TEXT_ARRAY
    }
}

impl ToSql for TextArray {
    fn to_sql(&self, _: &Type, out: &mut BytesMut) -> Result<IsNull, Box<dyn Error + Sync + Send>> {
        out.extend_from_slice(&self.0);
        Ok(IsNull::No)
    }

    fn accepts(ty: &Type) -> bool {
        *ty == Type::TEXT_ARRAY
    }

    to_sql_checked!();
}

/// The replicated tables whose changes must keep their order across tables on the peer, because a
/// foreign key links them there (`catalog::links`).
pub type Linked = BTreeSet<String>;

/// No table linked: a batch keeps the queue's order only within each table.
pub const UNLINKED: &Linked = &Linked::new();

/// What the origin returned for the next batch: nothing queued, a batch of column arrays, or the
/// read statement's rows, to `build` a batch of (off the connection).
pub enum Fetched {
    Nothing,
    Columns(Batch),
    Rows(Vec<Row>),
}

impl Fetched {
    pub fn into_batch(self, linked: &Linked) -> Result<Option<Batch>> {
        match self {
            Fetched::Nothing => Ok(None),
            Fetched::Columns(b) => Ok(Some(b)),
            Fetched::Rows(rows) => build(&rows, linked),
        }
    }
}

/// The oldest `size` committed changes queued for `peer`; None when there are none.
pub fn read(origin: &mut Client, peer: &str, size: i64, linked: &Linked) -> Result<Option<Batch>> {
    fetch_after(origin, peer, size, i64::MIN)?.into_batch(linked)
}

/// The same as row images in queue order, whatever the changes are.
pub fn read_images(origin: &mut Client, peer: &str, size: i64) -> Result<Option<Batch>> {
    build(&query_after(origin, peer, size, i64::MIN)?, UNLINKED)
}

/// Every change queued from sequence number `first` to `last`, as row images: a batch of column
/// arrays the peer refused, to be compared and decided on.
pub fn read_images_between(
    origin: &mut Client,
    peer: &str,
    first: i64,
    last: i64,
    linked: &Linked,
) -> Result<Option<Batch>> {
    let mut rows = query_after(origin, peer, last - first + 1, first - 1)?;
    rows.retain(|r| r.get::<_, i64>(0) <= last);
    build(&rows, linked)
}

/// The next `size` changes after sequence number `after`: as column arrays when they are all
/// inserts into one table, else as the rows of the read statement.
pub fn fetch_after(origin: &mut Client, peer: &str, size: i64, after: i64) -> Result<Fetched> {
    let Some(row) = origin.query_typed_opt(
        "select seqs, payload, columns, vals, settled from repctl.read_columns($1, $2, $3)",
        &[
            (&peer, Type::TEXT),
            (&after, Type::INT8),
            (&size, Type::INT8),
        ],
    )?
    else {
        return Ok(Fetched::Nothing);
    };
    let seqs: Vec<i64> = row.get(0);
    // The arrays come from one aggregation pass over the read in queue order; should an executor
    // ever feed it otherwise, the batch's bounds would be wrong, so it goes as row images.
    Ok(match row.get::<_, Option<TextArray>>(3) {
        Some(values) if seqs.is_sorted() => Fetched::Columns(Batch {
            seqs,
            settled: row.get(4),
            body: Body::Columns {
                payload: row.get(1),
                columns: row.get(2),
                values,
            },
        }),
        _ => Fetched::Rows(query_after(origin, peer, size, after)?),
    })
}

/// The fields in repctl.changes_json's order; each array gets one element per change.
const FIELDS: [&str; 8] = ["s", "t", "op", "r", "o", "ts", "resolved", "n"];

/// `array` ready for its next element: opened, or a comma after the last.
fn next(array: &mut String) -> &mut String {
    array.push(if array.is_empty() { '[' } else { ',' });
    array
}

/// `{"field": [...], ...}`.
fn object(fields: &[(&str, String)]) -> String {
    let mut out = String::with_capacity(fields.iter().map(|(_, a)| a.len() + 16).sum());
    for (name, array) in fields {
        let _ = write!(
            out,
            "{}\"{name}\":{array}]",
            if out.is_empty() { '{' } else { ',' }
        );
    }
    out.push('}');
    out
}

/// The read statement's rows of the `size` changes after `after`.
fn query_after(origin: &mut Client, peer: &str, size: i64, after: i64) -> Result<Vec<Row>> {
    Ok(origin.query_typed(
        "select seq, tbl, op, r, o, ts, resolved, n, settled from repctl.read_queue($1, $2, $3)",
        &[
            (&peer, Type::TEXT),
            (&after, Type::INT8),
            (&size, Type::INT8),
        ],
    )?)
}

/// The order the peer applies `rows` in. Changes of tables that no foreign key links are
/// independent across tables: grouped by table (each table's in queue order, after its own
/// truncates), each table's go to its apply function in one step, where a batch of OLTP
/// transactions that each write three tables would make a step of every change (~5 ms each).
/// With a linked table in the batch, as read. A foreign key the peer gained since `linked` was
/// read fails the batch, which then goes a change at a time, in queue order.
fn apply_order(rows: &[Row], linked: &Linked) -> Vec<usize> {
    let mut groups: HashMap<(&str, usize), usize> = HashMap::new();
    let mut truncates: HashMap<&str, usize> = HashMap::new();
    let mut group_of = Vec::with_capacity(rows.len());
    for row in rows {
        let (table, op): (&str, &str) = (row.get(1), row.get(2));
        if linked.contains(table) {
            return (0..rows.len()).collect();
        }
        let seen = truncates.entry(table).or_default();
        *seen += usize::from(op == "T");
        let next = groups.len();
        group_of.push(*groups.entry((table, *seen)).or_insert(next));
    }
    let mut order: Vec<usize> = (0..rows.len()).collect();
    order.sort_by_key(|&i| group_of[i]);
    order
}

/// The batch of the read statement's rows; None when there are none.
fn build(rows: &[Row], linked: &Linked) -> Result<Option<Batch>> {
    if rows.is_empty() {
        return Ok(None);
    }
    let mut fields: [(&str, String); 8] =
        FIELDS.map(|name| (name, String::with_capacity(rows.len() * 16)));
    let mut seqs = Vec::with_capacity(rows.len());
    let settled = rows[0].get::<_, bool>(8);
    // A batch is mostly one table: its name is json-quoted once, not per change.
    let mut quoted: (&str, String) = ("", String::new());
    let [
        (_, s),
        (_, t),
        (_, op),
        (_, r),
        (_, o),
        (_, ts),
        (_, resolved),
        (_, n),
    ] = &mut fields;
    for row in apply_order(rows, linked).into_iter().map(|i| &rows[i]) {
        let seq: i64 = row.get(0);
        let (table, kind): (&str, &str) = (row.get(1), row.get(2));
        if quoted.1.is_empty() || quoted.0 != table {
            quoted = (table, serde_json::to_string(table)?);
        }
        let _ = write!(next(s), "{seq}");
        next(t).push_str(&quoted.1);
        next(op).push_str(&serde_json::to_string(kind)?);
        next(r).push_str(row.get::<_, Option<&str>>(3).unwrap_or("null"));
        next(o).push_str(row.get::<_, Option<&str>>(4).unwrap_or("null"));
        next(ts).push_str(row.get(5));
        next(resolved).push_str(if row.get::<_, bool>(6) {
            "true"
        } else {
            "false"
        });
        match row.get::<_, Option<i32>>(7) {
            Some(count) => _ = write!(next(n), "{count}"),
            None => next(n).push_str("null"),
        }
        seqs.push(seq);
    }
    seqs.sort_unstable();
    Ok(Some(Batch {
        seqs,
        settled,
        body: Body::Images(object(&fields)),
    }))
}
