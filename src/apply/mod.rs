//! Delivering queued changes to peers through the one apply path (`repctl.apply` on the peer).

pub mod batch;
pub mod drain;
pub mod metrics;
pub mod run;
