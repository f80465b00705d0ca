//! taskledger-events: the facts of the market and how they are kept.
//!
//! - [`ids`]: typed UUID identifiers and the `Hash` digest type.
//! - [`event`]: the v1 event catalogue, with credit [`event::Transfer`]s inside.
//! - [`codec`]: the one place events become bytes (bincode 2) and back.
//! - [`record`]: the record envelope, the blake3 hash chain and its verifier.
//! - [`store`]: the [`LogStore`] trait (append batch with one flush, head,
//!   scan, snapshots), its errors and the checks every store shares.
//! - [`sled_store`]: [`SledStore`], the store that ships: sled trees `log`,
//!   `meta`, `snapshots`, stale-snapshot recovery and tail verification at open.
//! - [`mem_store`]: [`MemStore`], the same semantics in memory, for tests.
//! - [`faulty_store`]: [`FaultyStore`], injects failed flushes, torn writes and
//!   flipped bytes for crash tests, through the test-only [`Tamper`] door.
//! - [`export`]: the portable export file for auditors: writer, framing
//!   reader and a verifying reader that names the first bad seq.
//!
//! Byte layouts (record envelope, hash input, event encoding, sled trees,
//! export file) are in `events/FORMAT.md`.
//!
//! This crate knows nothing else of taskledger and reads no clock, network or
//! environment; stores do file I/O only where asked to.

#![deny(clippy::unwrap_used)]
#![cfg_attr(test, allow(clippy::unwrap_used))]

pub mod codec;
pub mod event;
pub mod export;
pub mod faulty_store;
pub mod ids;
pub mod mem_store;
pub mod record;
pub mod sled_store;
pub mod store;

pub use event::*;
pub use export::{ExportError, ExportFault, ExportReader, ExportRecords};
pub use faulty_store::{FailedFlush, FaultyStore, Tamper};
pub use ids::*;
pub use mem_store::MemStore;
pub use record::{
    ChainVerifier, Head, RawRecord, Record, RecordError, Sealed, hex, seal, seal_record,
};
pub use sled_store::{SledReader, SledStore};
pub use store::{LogStore, RangeIter, StoreError, Tail, decode_stored};
