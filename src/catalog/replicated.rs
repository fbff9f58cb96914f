//! A replicated table as one node's `repctl.tables` records it: the one reader of that catalog,
//! and the settings' types.

use anyhow::{Context, Result, bail};
use postgres::{GenericClient, Row};

use super::{History, TableName};

#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum, serde::Serialize)]
#[serde(rename_all = "kebab-case")]
pub enum Mode {
    /// Ship each transaction's changes to the peers at commit.
    Sync,
    /// Only queue changes; `drain` (or `run`) delivers them.
    Async,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum, serde::Serialize)]
#[serde(rename_all = "kebab-case")]
pub enum OnPeerFailure {
    /// Keep the change queued for the peer; the local write succeeds.
    Queue,
    /// Fail the local write when a peer cannot take it.
    Error,
}

/// What drain and run do with a change the peer refuses (a constraint or trigger only the peer
/// has, a value it rejects).
#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum, serde::Serialize)]
#[serde(rename_all = "kebab-case")]
pub enum OnApplyError {
    /// Stop the pair at the change; it stays queued (`repctl queue skip` parks it).
    Stop,
    /// Move the change into repctl.parked on the origin with the peer's error; the pair goes on.
    Park,
}

/// How a conflict (two nodes changed the same row before exchanging changes) is resolved.
#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum, serde::Serialize)]
#[serde(rename_all = "kebab-case")]
pub enum ConflictRule {
    /// The incoming change wins; this node's own pending change of that row is dropped.
    OriginWins,
    /// This node's row is kept; the incoming change is dropped.
    TargetWins,
    /// The newer version wins (commit time, or --conflict-column); ties go to the node name that sorts first.
    LastWriteWins,
    /// The version from the node listed first in --node-priority wins; same node: the newer.
    NodePriority,
    /// Stop the pair at the change, keep it queued, and report it.
    Error,
}

/// Settings are stored under their clap spelling; `parse` reads them back.
macro_rules! setting {
    ($t:ty { $($variant:ident => $name:literal),+ $(,)? }) => {
        impl $t {
            pub fn as_str(self) -> &'static str {
                match self {
                    $(<$t>::$variant => $name),+
                }
            }

            pub fn parse(s: &str) -> Option<$t> {
                match s {
                    $($name => Some(<$t>::$variant),)+
                    _ => None,
                }
            }
        }
    };
}
setting!(Mode { Sync => "sync", Async => "async" });
setting!(OnPeerFailure { Queue => "queue", Error => "error" });
setting!(OnApplyError { Stop => "stop", Park => "park" });
setting!(ConflictRule {
    OriginWins => "origin-wins",
    TargetWins => "target-wins",
    LastWriteWins => "last-write-wins",
    NodePriority => "node-priority",
    Error => "error",
});

impl ConflictRule {
    /// Rules that compare who wrote a row's current version and when.
    pub fn versioned(self) -> bool {
        matches!(
            self,
            ConflictRule::LastWriteWins | ConflictRule::NodePriority
        )
    }
}

/// One row of a node's `repctl.tables`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Replicated {
    /// The name every node knows the table by (`schema.table` as add-table was given it).
    pub logical: String,
    /// The node's own table replicated under `logical` (differs with `--map`).
    pub local: TableName,
    /// Replicated columns, in the order every node uses.
    pub columns: Vec<String>,
    /// Primary key columns in key order.
    pub key: Vec<String>,
    /// What earlier schema changes (alter-table --ddl) left images queued before them with.
    pub history: History,
    /// Every column the table had when repctl last installed it, replicated or not (None before
    /// this was recorded): a column not in it was added since.
    pub table_columns: Option<Vec<String>>,
    pub settings: Settings,
}

/// How a table replicates: what add-table is asked for and repctl.tables stores, the same on
/// every node.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Settings {
    /// Only rows matching it replicate (`--where`).
    pub where_clause: Option<String>,
    pub mode: Mode,
    pub on_peer_failure: OnPeerFailure,
    pub on_apply_error: OnApplyError,
    pub conflict: ConflictRule,
    /// For last-write-wins: a timestamp column (e.g. the seed's mod_time) instead of commit time.
    pub conflict_column: Option<String>,
    /// For node-priority: node names, highest priority first.
    pub node_priority: Vec<String>,
    /// Numeric columns applied as increments (`--delta`: counters, balances), whatever the rule.
    pub delta: Vec<String>,
    /// An update applies only the columns it changed (`--merge-columns`).
    pub merge_columns: bool,
    /// The key columns' sequences are interleaved across nodes (`--interleave-sequences`, see
    /// `install::sequences`).
    pub interleave_sequences: bool,
    /// No key: inserts replicate, updates, deletes and truncates are refused (`--append-only`).
    pub append_only: bool,
}

const SELECT: &str = "select name, nsp::text as nsp, rel::text as rel, columns, key_columns, where_clause, mode,
        on_peer_failure, on_apply_error, conflict, conflict_column, coalesce(node_priority, '{}') as node_priority, delta_columns,
        merge_columns, former_columns::text as former_columns, added_columns, table_columns,
        interleave_sequences, append_only
   from repctl.tables";

impl Replicated {
    /// The table replicated as `logical` on this node, if it is.
    pub fn load(
        client: &mut impl GenericClient,
        node: &str,
        logical: &str,
    ) -> Result<Option<Replicated>> {
        client
            .query_opt(&format!("{SELECT} where name = $1"), &[&logical])
            .with_context(|| format!("node {node}: reading repctl.tables"))?
            .map(|r| Replicated::from_row(&r, node))
            .transpose()
    }

    /// Like `load`, for a table the command needs on this node.
    pub fn require(
        client: &mut impl GenericClient,
        node: &str,
        logical: &str,
    ) -> Result<Replicated> {
        Replicated::load(client, node, logical)?.with_context(|| {
            format!("node {node}: table {logical} is not replicated there (see `repctl status`)")
        })
    }

    /// Every table this node replicates, by logical name.
    pub fn all(client: &mut impl GenericClient, node: &str) -> Result<Vec<Replicated>> {
        client
            .query(&format!("{SELECT} order by name"), &[])
            .with_context(|| format!("node {node}: reading repctl.tables"))?
            .iter()
            .map(|r| Replicated::from_row(r, node))
            .collect()
    }

    fn from_row(r: &Row, node: &str) -> Result<Replicated> {
        let logical: String = r.get("name");
        Ok(Replicated {
            local: TableName {
                schema: r.get("nsp"),
                table: r.get("rel"),
            },
            columns: r.get("columns"),
            key: r.get("key_columns"),
            history: History::parse(r.get("former_columns"), r.get("added_columns")),
            table_columns: r.get("table_columns"),
            settings: Settings::from_row(r, node, &logical)?,
            logical,
        })
    }
}

/// add-table's settings between two nodes given no options.
impl Default for Settings {
    fn default() -> Settings {
        Settings {
            where_clause: None,
            mode: Mode::Sync,
            on_peer_failure: OnPeerFailure::Queue,
            on_apply_error: OnApplyError::Stop,
            conflict: ConflictRule::OriginWins,
            conflict_column: None,
            node_priority: Vec::new(),
            delta: Vec::new(),
            merge_columns: false,
            interleave_sequences: false,
            append_only: false,
        }
    }
}

impl Settings {
    /// Reads a repctl.tables row's settings, refusing a stored value this repctl does not know.
    fn from_row(r: &Row, node: &str, logical: &str) -> Result<Settings> {
        fn parsed<T>(
            value: String,
            parse: fn(&str) -> Option<T>,
            node: &str,
            logical: &str,
            what: &str,
        ) -> Result<T> {
            match parse(&value) {
                Some(v) => Ok(v),
                None => bail!(
                    "node {node}: table {logical} has {what} {value:?} in repctl.tables, which this repctl \
                     does not know (a newer repctl installed it, or the catalog was edited): upgrade repctl, \
                     or set it again with `repctl alter-table {logical} --{what} ...`"
                ),
            }
        }
        Ok(Settings {
            where_clause: r.get("where_clause"),
            mode: parsed(r.get("mode"), Mode::parse, node, logical, "mode")?,
            on_peer_failure: parsed(
                r.get("on_peer_failure"),
                OnPeerFailure::parse,
                node,
                logical,
                "on-peer-failure",
            )?,
            on_apply_error: parsed(
                r.get("on_apply_error"),
                OnApplyError::parse,
                node,
                logical,
                "on-apply-error",
            )?,
            conflict: parsed(
                r.get("conflict"),
                ConflictRule::parse,
                node,
                logical,
                "conflict",
            )?,
            conflict_column: r.get("conflict_column"),
            node_priority: r.get("node_priority"),
            delta: r.get("delta_columns"),
            merge_columns: r.get("merge_columns"),
            interleave_sequences: r.get("interleave_sequences"),
            append_only: r.get("append_only"),
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn settings_round_trip_through_their_stored_names() {
        // The stored names are clap's spellings, which the CLI and `--json` show.
        for rule in <ConflictRule as clap::ValueEnum>::value_variants() {
            let clap_name = clap::ValueEnum::to_possible_value(rule).unwrap();
            assert_eq!(rule.as_str(), clap_name.get_name());
            assert_eq!(ConflictRule::parse(rule.as_str()), Some(*rule));
        }
        assert_eq!(ConflictRule::LastWriteWins.as_str(), "last-write-wins");
        assert_eq!(Mode::Async.as_str(), "async");
        assert_eq!(OnPeerFailure::Error.as_str(), "error");
        assert_eq!(OnApplyError::parse("park"), Some(OnApplyError::Park));
        assert_eq!(Mode::parse("semi"), None);
    }
}
