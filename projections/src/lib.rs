//! taskledger-projections: pure folds over the event log.
//!
//! - [`model`]: the projected entities (owners and wallets, agent keys, tasks,
//!   executions, risk flags, ledger rows, totals).
//! - [`state`]: `State` and its strict `apply`, the rule book an audit replays.
//! - [`money`]: the transfers each rule demands, shared by `decide` and `apply`.
//! - [`reputation`]: the fixed-point EMA.
//! - [`snapshot`]: a `State` as bytes, with the head it covers.
//!
//! Depends on `taskledger-events` only. Nothing here reads a clock, the
//! network, the disk or the environment.

#![deny(clippy::unwrap_used)]
#![cfg_attr(test, allow(clippy::unwrap_used))]

pub mod model;
pub mod money;
pub mod reputation;
pub mod snapshot;
pub mod state;

pub use model::*;
pub use state::{State, Violation, compute_source_declared};
