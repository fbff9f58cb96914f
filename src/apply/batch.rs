//! A batch of queued changes as `repctl.apply` takes them: one json array per field, as
//! `repctl.changes_json` builds it (the sync flush builds it that way, in SQL).
//!
//! The origin sends each change's parts as text (`repctl.read_queue`) and the arrays are
//! joined here: the row images travel as the origin's jsonb prints them, never parsed or
//! re-encoded on the way. A batch of one table's inserts (a bulk load) can also go as one array of
//! values per column (`Columnar`), which the peer inserts without parsing a json object per row.

use std::fmt::Write as _;

use anyhow::Result;
use postgres::{Client, Row};
use serde::de::{Deserialize, Deserializer, MapAccess, Visitor};
use serde_json::value::RawValue;

/// Changes read from the origin's queue, oldest first.
#[derive(Clone)]
pub struct Batch {
    /// The json array `repctl.apply` takes.
    pub payload: String,
    pub seqs: Vec<i64>,
    /// No transaction was in progress on the origin when the batch was read: every change
    /// numbered below its last was committed or rolled back by then, so none can be queued late.
    pub settled: bool,
    /// The same changes as column arrays, when they are all inserts into one table.
    pub columnar: Option<Columnar>,
}

/// Inserts into one table as `repctl.apply`'s `p_columns` and `p_values`: a payload of the table
/// and the changes' times only, the replicated columns in jsonb's key order (shorter names first,
/// then bytewise, as the table's apply function lists them), and each column's values in turn.
#[derive(Clone)]
pub struct Columnar {
    pub payload: String,
    pub columns: Vec<String>,
    /// The values, decoded, one after the other; `spans` cuts them out, column by column.
    text: String,
    spans: Vec<Option<(usize, usize)>>,
}

/// A row image's keys and values as the json text spells them (strings quoted, escapes kept).
struct RawImage<'a>(Vec<(&'a RawValue, &'a RawValue)>);

impl<'de> Deserialize<'de> for RawImage<'de> {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        struct Pairs;
        impl<'de> Visitor<'de> for Pairs {
            type Value = RawImage<'de>;
            fn expecting(&self, f: &mut std::fmt::Formatter) -> std::fmt::Result {
                f.write_str("a row image: a json object of texts")
            }
            fn visit_map<A: MapAccess<'de>>(self, mut map: A) -> Result<RawImage<'de>, A::Error> {
                let mut pairs = Vec::with_capacity(map.size_hint().unwrap_or(8));
                while let Some(key) = map.next_key::<&RawValue>()? {
                    pairs.push((key, map.next_value()?));
                }
                Ok(RawImage(pairs))
            }
        }
        d.deserialize_map(Pairs)
    }
}

/// A json string or null as text: None for null, None too for anything else (no column arrays).
fn decoded(raw: &RawValue) -> Option<Option<std::borrow::Cow<'_, str>>> {
    let json = raw.get();
    match json.as_bytes().first() {
        Some(b'n') if json == "null" => Some(None),
        Some(b'"') if !json.contains('\\') => Some(Some(json[1..json.len() - 1].into())),
        Some(b'"') => serde_json::from_str::<String>(json)
            .ok()
            .map(|s| Some(s.into())),
        _ => None,
    }
}

impl Columnar {
    /// Column arrays of the row images `images` (json text), when every image names the same
    /// columns, in jsonb's key order, with texts or nulls; None otherwise, and the batch goes as
    /// row images only. Only the values are decoded; names are compared as spelled.
    fn of(payload: String, images: &[&str]) -> Option<Columnar> {
        let first: RawImage = serde_json::from_str(images.first()?).ok()?;
        let names: Vec<&str> = first.0.iter().map(|(k, _)| k.get()).collect();
        let columns: Vec<String> = names
            .iter()
            .map(|n| serde_json::from_str::<String>(n).ok())
            .collect::<Option<_>>()?;
        let mut ordered = columns.clone();
        ordered.sort_by(|a, b| a.len().cmp(&b.len()).then_with(|| a.cmp(b)));
        if ordered != columns {
            return None;
        }
        let mut text = String::new();
        let mut by_column: Vec<Vec<Option<(usize, usize)>>> =
            vec![Vec::with_capacity(images.len()); columns.len()];
        for image in images {
            let RawImage(pairs) = serde_json::from_str(image).ok()?;
            if pairs.len() != names.len() {
                return None;
            }
            for ((key, value), (name, spans)) in pairs.iter().zip(names.iter().zip(&mut by_column))
            {
                if key.get() != *name {
                    return None;
                }
                spans.push(decoded(value)?.map(|v| {
                    text.push_str(&v);
                    (text.len() - v.len(), text.len())
                }));
            }
        }
        Some(Columnar {
            payload,
            columns,
            text,
            spans: by_column.concat(),
        })
    }

    /// `p_values`: each column's values in turn.
    pub fn values(&self) -> Vec<Option<&str>> {
        self.spans
            .iter()
            .map(|s| s.map(|(from, to)| &self.text[from..to]))
            .collect()
    }
}

/// The oldest `size` committed changes queued for `peer`; None when there are none.
pub fn read(origin: &mut Client, peer: &str, size: i64) -> Result<Option<Batch>> {
    read_after(origin, peer, size, i64::MIN)
}

/// The fields in repctl.changes_json's order; each array gets one element per change.
const FIELDS: [&str; 7] = ["s", "t", "op", "r", "o", "ts", "resolved"];

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

/// The same, of the changes after sequence number `after`.
pub fn read_after(origin: &mut Client, peer: &str, size: i64, after: i64) -> Result<Option<Batch>> {
    build(&query_after(origin, peer, size, after)?)
}

/// The read statement's rows for `read_after`, to `build` a batch of, off the connection.
pub fn query_after(origin: &mut Client, peer: &str, size: i64, after: i64) -> Result<Vec<Row>> {
    Ok(origin.query(
        "select seq, tbl, op, r, o, ts, resolved, settled from repctl.read_queue($1, $2, $3)",
        &[&peer, &after, &size],
    )?)
}

/// The batch of the read statement's rows; None when there are none.
pub fn build(rows: &[Row]) -> Result<Option<Batch>> {
    if rows.is_empty() {
        return Ok(None);
    }
    let mut fields: [(&str, String); 7] =
        FIELDS.map(|name| (name, String::with_capacity(rows.len() * 16)));
    let mut seqs = Vec::with_capacity(rows.len());
    let settled = rows[0].get::<_, bool>(7);
    let first_table: &str = rows[0].get(1);
    let mut inserts_into_one = true;
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
    ] = &mut fields;
    for row in rows {
        let seq: i64 = row.get(0);
        let (table, kind): (&str, &str) = (row.get(1), row.get(2));
        inserts_into_one &= kind == "I" && table == first_table;
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
        seqs.push(seq);
    }
    let columnar = if inserts_into_one {
        // One table throughout: `quoted` holds its name.
        let payload = format!(
            "{{\"t\":[{}],\"op\":[\"I\"],\"ts\":{}]}}",
            quoted.1, fields[5].1
        );
        let images: Option<Vec<&str>> = rows.iter().map(|r| r.get(3)).collect();
        images.and_then(|i| Columnar::of(payload, &i))
    } else {
        None
    };
    Ok(Some(Batch {
        payload: object(&fields),
        seqs,
        settled,
        columnar,
    }))
}
