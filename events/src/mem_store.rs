//! [`MemStore`]: an in-memory [`LogStore`] with the same semantics as the
//! sled store (batch admission, clamped scans, snapshots, tail verification
//! on [`MemStore::reopen`]), for tests of everything above the store.
//!
//! Owns only its vectors. Must never be used where records must survive the
//! process: nothing here touches a disk.

use crate::faulty_store::Tamper;
use crate::record::Head;
use crate::sled_store::SNAPSHOTS_KEPT;
use crate::store::{
    LogStore, StoreError, TAIL_VERIFY_RECORDS, Tail, Visit, admit_batch, verify_tail,
};
use std::collections::BTreeMap;

/// An in-memory log: every append is "durable" for as long as the value lives.
#[derive(Clone, Debug, Default)]
pub struct MemStore {
    /// `records[i]` holds seq `i + 1`.
    records: Vec<Vec<u8>>,
    tail: Tail,
    snapshots: BTreeMap<u64, Vec<u8>>,
    flushes: u64,
}

impl MemStore {
    pub fn new() -> Self {
        Self::default()
    }

    /// What a restart would see: verify the last [`TAIL_VERIFY_RECORDS`]
    /// stored records exactly as `SledStore::open` does, and recompute the
    /// tail from them. Use after [`Tamper`]ing or a `FaultyStore` fault.
    pub fn reopen(self) -> Result<Self, StoreError> {
        let first = (!self.records.is_empty()).then_some(1);
        let skip = self
            .records
            .len()
            .saturating_sub(TAIL_VERIFY_RECORDS as usize);
        let window = (skip as u64 + 1..).zip(self.records[skip..].iter().map(Vec::as_slice));
        let tail = verify_tail(first, window)?;
        Ok(MemStore { tail, ..self })
    }

    /// How many flushes appends and snapshots have made (one per non-empty
    /// append, one per snapshot).
    pub fn flushes(&self) -> u64 {
        self.flushes
    }

    /// Number of stored records (including any tampered tail).
    pub fn len(&self) -> usize {
        self.records.len()
    }

    pub fn is_empty(&self) -> bool {
        self.records.is_empty()
    }
}

impl LogStore for MemStore {
    fn append(&mut self, records: &[Vec<u8>]) -> Result<Head, StoreError> {
        if records.is_empty() {
            return Ok(self.tail.head);
        }
        let tail = admit_batch(self.tail, records)?;
        if self.records.len() as u64 != self.tail.head.seq {
            // Someone tampered past the head; a real store would not open.
            return Err(StoreError::Poisoned(
                "stored records disagree with the head; reopen".into(),
            ));
        }
        self.records.extend(records.iter().cloned());
        self.flushes += 1;
        self.tail = tail;
        Ok(tail.head)
    }

    fn tail(&self) -> Tail {
        self.tail
    }

    fn scan(&self, from: u64, to: u64, visit: &mut Visit<'_>) -> Result<(), StoreError> {
        let from = from.max(1);
        let to = to.min(self.tail.head.seq);
        for seq in from..=to {
            let bytes = self
                .records
                .get((seq - 1) as usize)
                .ok_or_else(|| StoreError::corrupt(seq, "record missing from the log"))?;
            if visit(seq, bytes).is_break() {
                break;
            }
        }
        Ok(())
    }

    fn flush(&mut self) -> Result<(), StoreError> {
        self.flushes += 1;
        Ok(())
    }

    fn put_snapshot(&mut self, seq: u64, bytes: &[u8]) -> Result<(), StoreError> {
        if seq > self.tail.head.seq {
            return Err(StoreError::rejected(
                seq,
                format!("snapshot is past the head {}", self.tail.head.seq),
            ));
        }
        self.snapshots.insert(seq, bytes.to_vec());
        while self.snapshots.len() > SNAPSHOTS_KEPT {
            self.snapshots.pop_first();
        }
        self.flushes += 1;
        Ok(())
    }

    fn latest_snapshot(&self) -> Result<Option<(u64, Vec<u8>)>, StoreError> {
        Ok(self
            .snapshots
            .last_key_value()
            .map(|(seq, bytes)| (*seq, bytes.clone())))
    }
}

impl Tamper for MemStore {
    fn tamper_put(&mut self, seq: u64, bytes: &[u8]) -> Result<(), StoreError> {
        let len = self.records.len() as u64;
        if seq == 0 || seq > len + 1 {
            return Err(StoreError::rejected(
                seq,
                format!("cannot tamper at seq {seq} of a {len}-record log"),
            ));
        }
        if seq == len + 1 {
            self.records.push(bytes.to_vec());
        } else {
            self.records[(seq - 1) as usize] = bytes.to_vec();
        }
        Ok(())
    }
}
