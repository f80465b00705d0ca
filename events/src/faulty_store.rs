//! [`FaultyStore`]: wraps a store and injects the failures a disk can show,
//! on demand, for crash and corruption tests: a failed flush, a torn write
//! (the last record of a batch stored truncated), a flipped byte.
//!
//! Owns only its fault plan. The damage itself goes through [`Tamper`], a
//! back door that stores implement for tests; the service never calls it and
//! must never wrap its store in a `FaultyStore`.
//!
//! After an injected failed flush or torn write the wrapper is poisoned, as
//! a real store is: every later write fails with [`StoreError::Poisoned`].
//! To "restart", take the inner store with [`FaultyStore::into_inner`] and
//! reopen it (`MemStore::reopen`, or drop a `SledStore` and `SledStore::open`
//! the same directory): that shows exactly what a restarted writer sees.

use crate::record::Head;
use crate::store::{LogStore, StoreError, Tail, Visit};
use std::ops::ControlFlow;

/// Raw write access for fault injection: put bytes under a seq with no
/// checks. Stores implement it for tests only; nothing in the service may
/// call it.
pub trait Tamper {
    /// Store `bytes` as the record of `seq`, which must be an existing seq or
    /// the one after the head. The in-memory head is not updated.
    fn tamper_put(&mut self, seq: u64, bytes: &[u8]) -> Result<(), StoreError>;
}

/// What a failed flush leaves on disk.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub enum FailedFlush {
    /// Nothing of the failed batch is durable (the default).
    #[default]
    NothingDurable,
    /// The batch reached the disk but the flush reported an error: after a
    /// restart the (unacknowledged) records are there.
    BatchDurable,
}

/// A store wrapper that injects faults on demand; see the module doc.
pub struct FaultyStore<S> {
    inner: S,
    /// Appends left to succeed before every later one fails.
    appends_until_failure: Option<u64>,
    failed_flush: FailedFlush,
    tear_next: bool,
    fail_next_flush: bool,
    poisoned: Option<String>,
}

impl<S: LogStore + Tamper> FaultyStore<S> {
    pub fn new(inner: S) -> Self {
        FaultyStore {
            inner,
            appends_until_failure: None,
            failed_flush: FailedFlush::NothingDurable,
            tear_next: false,
            fail_next_flush: false,
            poisoned: None,
        }
    }

    /// Let the next `n` non-empty appends succeed; the one after fails its
    /// flush (and poisons the wrapper). `n = 0` fails the very next append.
    pub fn fail_after_appends(&mut self, n: u64) -> &mut Self {
        self.appends_until_failure = Some(n);
        self
    }

    /// Choose what a failed flush leaves durable.
    pub fn failed_flush_leaves(&mut self, model: FailedFlush) -> &mut Self {
        self.failed_flush = model;
        self
    }

    /// The next non-empty append stores all its records but the last, which
    /// is stored truncated to half its length, then fails (as if the process
    /// died mid-write) and poisons the wrapper.
    pub fn tear_next_append(&mut self) -> &mut Self {
        self.tear_next = true;
        self
    }

    /// The next explicit `flush` or `put_snapshot` fails and poisons.
    pub fn fail_next_flush(&mut self) -> &mut Self {
        self.fail_next_flush = true;
        self
    }

    /// Flip (xor 0xFF) byte `offset` of the stored bytes of `seq`, now.
    pub fn flip_byte(&mut self, seq: u64, offset: usize) -> Result<(), StoreError> {
        let mut stored = None;
        self.inner.scan(seq, seq, &mut |_, bytes| {
            stored = Some(bytes.to_vec());
            ControlFlow::Break(())
        })?;
        let mut bytes =
            stored.ok_or_else(|| StoreError::rejected(seq, "no such record to flip"))?;
        let len = bytes.len();
        let byte = bytes.get_mut(offset).ok_or_else(|| {
            StoreError::rejected(
                seq,
                format!("offset {offset} is past the {len}-byte record"),
            )
        })?;
        *byte ^= 0xFF;
        self.inner.tamper_put(seq, &bytes)
    }

    pub fn is_poisoned(&self) -> bool {
        self.poisoned.is_some()
    }

    pub fn inner(&self) -> &S {
        &self.inner
    }

    /// The wrapped store, as a restart would find it (reopen it to verify).
    pub fn into_inner(self) -> S {
        self.inner
    }

    fn usable(&self) -> Result<(), StoreError> {
        match &self.poisoned {
            Some(why) => Err(StoreError::Poisoned(why.clone())),
            None => Ok(()),
        }
    }

    fn inject(&mut self, what: &str) -> StoreError {
        self.poisoned = Some(format!("injected {what}"));
        StoreError::Io(std::io::Error::other(format!("injected {what}")))
    }
}

impl<S: LogStore + Tamper> LogStore for FaultyStore<S> {
    fn append(&mut self, records: &[Vec<u8>]) -> Result<Head, StoreError> {
        self.usable()?;
        if records.is_empty() {
            return self.inner.append(records);
        }
        if let Some((last, rest)) = records.split_last().filter(|_| self.tear_next) {
            // Check the whole batch first so a torn write is only ever of a
            // batch the store would have taken.
            crate::store::admit_batch(self.inner.tail(), records)?;
            self.tear_next = false;
            let torn_seq = self.inner.head().seq + records.len() as u64;
            self.inner.append(rest)?;
            self.inner.tamper_put(torn_seq, &last[..last.len() / 2])?;
            return Err(self.inject("torn write"));
        }
        match self.appends_until_failure {
            Some(0) => {
                crate::store::admit_batch(self.inner.tail(), records)?;
                if self.failed_flush == FailedFlush::BatchDurable {
                    self.inner.append(records)?;
                }
                Err(self.inject("flush failure"))
            }
            Some(n) => {
                let head = self.inner.append(records)?;
                self.appends_until_failure = Some(n - 1);
                Ok(head)
            }
            None => self.inner.append(records),
        }
    }

    fn tail(&self) -> Tail {
        self.inner.tail()
    }

    fn scan(&self, from: u64, to: u64, visit: &mut Visit<'_>) -> Result<(), StoreError> {
        self.inner.scan(from, to, visit)
    }

    fn flush(&mut self) -> Result<(), StoreError> {
        self.usable()?;
        if std::mem::take(&mut self.fail_next_flush) {
            return Err(self.inject("flush failure"));
        }
        self.inner.flush()
    }

    fn put_snapshot(&mut self, seq: u64, bytes: &[u8]) -> Result<(), StoreError> {
        self.usable()?;
        if std::mem::take(&mut self.fail_next_flush) {
            return Err(self.inject("snapshot flush failure"));
        }
        self.inner.put_snapshot(seq, bytes)
    }

    fn latest_snapshot(&self) -> Result<Option<(u64, Vec<u8>)>, StoreError> {
        self.inner.latest_snapshot()
    }
}
