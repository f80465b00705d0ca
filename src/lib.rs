//! taskledger: the service and its command line, on top of the event log
//! (`taskledger-events`) and its projections (`taskledger-projections`).
//!
//! - [`error`]: domain refusals with stable codes and HTTP statuses.
//! - [`commands`]: one file per command, each with its pure `decide`.

#![deny(clippy::unwrap_used)]
#![cfg_attr(test, allow(clippy::unwrap_used, clippy::expect_used))]

pub mod commands;
pub mod error;
