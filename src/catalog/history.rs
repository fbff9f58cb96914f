//! What schema changes (`repctl alter-table --ddl`) left row images queued before them with:
//! stored in `repctl.tables` (former_columns, added_columns), rendered into the apply function.

use std::collections::BTreeMap;

/// What schema changes left images queued before them with.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct History {
    /// A name images may carry that is no column any more: its new name (renamed) or None (dropped).
    pub former: BTreeMap<String, Option<String>>,
    /// Columns added by alter-table --ddl, which images queued before lack.
    pub added: Vec<String>,
}

impl History {
    /// From repctl.tables' former_columns (jsonb text) and added_columns.
    pub fn parse(former: Option<String>, added: Option<Vec<String>>) -> History {
        History {
            former: former
                .and_then(|f| serde_json::from_str(&f).ok())
                .unwrap_or_default(),
            added: added.unwrap_or_default(),
        }
    }

    pub fn apply(&mut self, change: &Change) {
        match change {
            Change::Dropped(name) => {
                for new in self.former.values_mut() {
                    if new.as_deref() == Some(name) {
                        *new = None;
                    }
                }
                self.former.insert(name.clone(), None);
                self.added.retain(|a| a != name);
            }
            Change::Renamed(old, new) => {
                for to in self.former.values_mut() {
                    if to.as_deref() == Some(old) {
                        *to = Some(new.clone());
                    }
                }
                self.former.remove(new);
                self.former.insert(old.clone(), Some(new.clone()));
                for a in &mut self.added {
                    if a == old {
                        *a = new.clone();
                    }
                }
            }
            Change::Added(name, _) => {
                self.former.remove(name);
                if !self.added.contains(name) {
                    self.added.push(name.clone());
                }
            }
            Change::Retyped(..) => {}
        }
    }
}

/// One column's change, found by comparing attnums before and after the statement.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Change {
    Added(String, String),
    Dropped(String),
    Renamed(String, String),
    Retyped(String, String, String),
}

impl std::fmt::Display for Change {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Change::Added(c, ty) => write!(
                f,
                "column {c} {ty} added and replicated (a change queued before lacks it: an update keeps this node's value, an insert takes the default)"
            ),
            Change::Dropped(c) => write!(
                f,
                "column {c} dropped (its value in changes queued before is ignored)"
            ),
            Change::Renamed(a, b) => write!(
                f,
                "column {a} renamed to {b} (changes queued before apply their {a} to {b})"
            ),
            Change::Retyped(c, from, to) => write!(
                f,
                "column {c} retyped from {from} to {to} (changes queued before are cast from their text form)"
            ),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn history_follows_renames_and_drops() {
        let mut h = History::default();
        h.apply(&Change::Renamed("v".into(), "v2".into()));
        h.apply(&Change::Renamed("v2".into(), "v3".into()));
        assert_eq!(h.former.get("v"), Some(&Some("v3".into())));
        assert_eq!(h.former.get("v2"), Some(&Some("v3".into())));
        h.apply(&Change::Added("z".into(), "integer".into()));
        h.apply(&Change::Dropped("v3".into()));
        assert_eq!(h.former.get("v"), Some(&None));
        h.apply(&Change::Added("v".into(), "text".into()));
        assert!(!h.former.contains_key("v"));
        assert_eq!(h.added, ["z", "v"]);
    }
}
