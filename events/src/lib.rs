//! taskledger-events: the facts of the market and how they are kept.
//!
//! - [`ids`]: typed UUID identifiers and the `Hash` digest type.
//! - [`event`]: the v1 event catalogue, with credit [`event::Transfer`]s inside.
//! - [`codec`]: the one place events become bytes (bincode 2) and back.
//! - [`record`]: the record envelope, the blake3 hash chain and its verifier.
//!
//! This crate knows nothing else of taskledger and reads no clock, network or
//! environment; stores do file I/O only where asked to.

#![deny(clippy::unwrap_used)]
#![cfg_attr(test, allow(clippy::unwrap_used))]

pub mod codec;
pub mod event;
pub mod ids;
pub mod record;

pub use event::*;
pub use ids::*;
pub use record::{ChainVerifier, Head, RawRecord, Record, RecordError, hex, seal};
