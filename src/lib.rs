//! repctl as a library: the CLI is a thin layer over these modules.
//!
//! - `config`, `conninfo`: what the DBA wrote.
//! - `catalog`: what a table looks like on a node.
//! - `render`: generated SQL from `templates/`.
//! - `install`: init, add-table, remove-table on every node.
//! - `apply`: delivering queued changes (drain).
//! - `ops`: verify, status, lag.
//! - `locks`, `progress`: shared by the layers above: advisory locks and their keys, progress
//!   reporting.
//! - `cluster` (feature `throwaway-clusters`, on by default): throwaway PostgreSQL clusters for
//!   the demo, tests and benchmarks; nothing else in the library uses it.

pub mod apply;
pub mod catalog;
pub mod cli;
#[cfg(feature = "throwaway-clusters")]
pub mod cluster;
pub mod config;
pub mod conninfo;
pub mod db;
pub mod install;
pub mod locks;
pub mod ops;
pub mod progress;
pub mod render;
