//! The log store seam: the [`LogStore`] trait every store implements, its
//! error type, and the checks all stores share (batch admission at append,
//! tail verification at open, chunked range reads).
//!
//! Owns: what "append", "head", "scan" and "snapshot" mean, independent of
//! where bytes live. Implementations: [`crate::sled_store::SledStore`] (ships),
//! [`crate::mem_store::MemStore`] (tests), [`crate::faulty_store::FaultyStore`]
//! (crash tests). Must never: decide what an event means, read the clock, or
//! hand out bytes of a record that the caller did not ask for by seq.
//!
//! Contract of every store:
//! - `append` takes sealed record bytes (as made by [`crate::record::seal`])
//!   that continue the chain from `head()`: the first has seq `head.seq + 1`,
//!   each links to the previous hash, hashes correctly and does not go back
//!   in time. A batch that does not is refused whole ([`StoreError::Rejected`]),
//!   with nothing written. An accepted batch is written at once and made
//!   durable with exactly one flush (group commit); only then does `append`
//!   return the new head. The caller acknowledges commands after that.
//! - A failed write or flush is fatal: the store refuses all further writes
//!   (it is poisoned) and the caller must stop and reopen.
//! - At open, a store verifies the last [`TAIL_VERIFY_RECORDS`] records; a
//!   torn, partial or corrupt tail is [`StoreError::Corrupt`] naming the first
//!   bad seq, never silently used.

use crate::codec::EVENT_BYTES_MAX;
use crate::record::{ChainVerifier, HEADER_BYTES, Head, RawRecord, Record, Sealed};
use std::collections::VecDeque;
use std::ops::ControlFlow;
use thiserror::Error;

/// How many records at the end of the log are fully verified (parsed,
/// hash-checked, linked, decoded) when a store is opened.
pub const TAIL_VERIFY_RECORDS: u64 = 1024;

/// The largest stored record: the envelope header plus the largest event.
pub const RECORD_BYTES_MAX: usize = HEADER_BYTES + EVENT_BYTES_MAX;

/// How many records a [`RangeIter`] holds in memory at once.
pub const RANGE_CHUNK_RECORDS: u64 = 4096;

/// How a store failed. [`StoreError::Rejected`] is the only one that leaves
/// the store usable; everything else means: stop writing, reopen, look.
#[derive(Debug, Error)]
pub enum StoreError {
    /// The stored log is damaged: `seq` is the first record that is missing,
    /// torn, fails its hash or does not link. Fatal.
    #[error("log corrupt at seq {seq}: {reason}")]
    Corrupt { seq: u64, reason: String },
    /// A batch or call was refused before anything was written: `seq` is the
    /// seq of the offending record (or request). The store is unchanged.
    #[error("refused at seq {seq}: {reason}")]
    Rejected { seq: u64, reason: String },
    /// The data directory holds a store of another format or domain. Fatal.
    #[error("store format: {0}")]
    Format(String),
    /// An earlier write or flush failed; no further writes are accepted.
    #[error("store is poisoned by an earlier failure: {0}")]
    Poisoned(String),
    /// A file-system error outside sled (e.g. moving files aside at open).
    #[error("store I/O: {0}")]
    Io(#[from] std::io::Error),
    /// An error reported by sled (I/O, or sled's own corruption check).
    #[error("sled: {0}")]
    Sled(#[from] sled::Error),
}

/// What sled's I/O error says when another process holds the lock.
pub const SLED_LOCK_MESSAGE: &str = "could not acquire lock";

impl StoreError {
    /// The first bad seq of a [`StoreError::Corrupt`].
    pub fn corrupt_seq(&self) -> Option<u64> {
        match self {
            StoreError::Corrupt { seq, .. } => Some(*seq),
            _ => None,
        }
    }

    /// True when another process holds the data dir's lock (sled refused
    /// after its retries): a running server, usually.
    pub fn is_locked(&self) -> bool {
        matches!(self, StoreError::Sled(sled::Error::Io(e)) if e.to_string().contains(SLED_LOCK_MESSAGE))
    }

    /// True for every error except a refused batch: the writer must stop.
    pub fn is_fatal(&self) -> bool {
        !matches!(self, StoreError::Rejected { .. })
    }

    pub(crate) fn corrupt(seq: u64, reason: impl Into<String>) -> Self {
        StoreError::Corrupt {
            seq,
            reason: reason.into(),
        }
    }

    pub(crate) fn rejected(seq: u64, reason: impl Into<String>) -> Self {
        StoreError::Rejected {
            seq,
            reason: reason.into(),
        }
    }
}

/// The end of the log: its head and the `at_ms` of the head record (the
/// writer must not assign an earlier time after a restart). The empty log is
/// [`Tail::EMPTY`].
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Tail {
    pub head: Head,
    pub at_ms: u64,
}

impl Tail {
    pub const EMPTY: Tail = Tail {
        head: Head::EMPTY,
        at_ms: 0,
    };
}

impl Default for Tail {
    fn default() -> Self {
        Tail::EMPTY
    }
}

/// The visitor of [`LogStore::scan`]: gets `(seq, stored bytes)` in seq
/// order; `Break` stops the scan early.
pub type Visit<'v> = dyn FnMut(u64, &[u8]) -> ControlFlow<()> + 'v;

/// An append-only, hash-chained log of sealed records plus projection
/// snapshots. Object safe: the service may hold a `Box<dyn LogStore>`.
pub trait LogStore: Send {
    /// Durably append sealed record bytes that continue the chain from
    /// [`LogStore::head`]. All records are written at once and flushed once
    /// (group commit); returns the new head. A batch that does not start at
    /// `head.seq + 1`, is not contiguous, does not link, fails its hash, goes
    /// back in time or exceeds [`RECORD_BYTES_MAX`] is refused whole with
    /// [`StoreError::Rejected`] and nothing is written. An empty batch writes
    /// and flushes nothing and returns the head.
    fn append(&mut self, records: &[Vec<u8>]) -> Result<Head, StoreError>;

    /// [`LogStore::append`] for records made by
    /// [`crate::record::seal_record`]: the same contract and checks, except
    /// that their hashes are known to be right and are not computed again
    /// (the writer's path). The default hands their bytes to `append`;
    /// [`crate::SledStore`] checks the chain fields only.
    fn append_sealed(&mut self, records: &[Sealed]) -> Result<Head, StoreError> {
        let bytes: Vec<Vec<u8>> = records.iter().map(|r| r.bytes().to_vec()).collect();
        self.append(&bytes)
    }

    /// The end of the log: head and the head record's `at_ms`.
    fn tail(&self) -> Tail;

    /// `(seq, hash)` of the last record; [`Head::EMPTY`] for an empty log.
    fn head(&self) -> Head {
        self.tail().head
    }

    /// Visit the stored bytes of records `from..=to` in seq order. `from` 0
    /// reads from 1; `to` is clamped to the head, so `scan(n, u64::MAX, ..)`
    /// reads everything from `n`. A seq missing inside the range is
    /// [`StoreError::Corrupt`]. Bytes are handed over as stored: verifying
    /// them is the reader's job ([`crate::record::ChainVerifier`]). Streams:
    /// memory use does not grow with the range.
    fn scan(&self, from: u64, to: u64, visit: &mut Visit<'_>) -> Result<(), StoreError>;

    /// The record at `seq`, read by key: its own hash checked and its event
    /// decoded (its link to the records around it is the audit's business).
    /// `None` for seq 0 and past the head. This is how readers get the texts
    /// the projections leave in the log (a task's spec, a result, a verdict's
    /// detail).
    fn record(&self, seq: u64) -> Result<Option<Record>, StoreError> {
        if seq == 0 || seq > self.head().seq {
            return Ok(None);
        }
        let mut found = None;
        self.scan(seq, seq, &mut |_, bytes| {
            found = Some(decode_stored(seq, bytes));
            ControlFlow::Break(())
        })?;
        found.transpose()
    }

    /// Make everything written so far durable. `append` already flushes;
    /// this is for shutdown and for callers that want a barrier.
    fn flush(&mut self) -> Result<(), StoreError>;

    /// Store a projection snapshot covering records `1..=seq`, durably. `seq`
    /// may not exceed the head. Older snapshots may be pruned.
    fn put_snapshot(&mut self, seq: u64, bytes: &[u8]) -> Result<(), StoreError>;

    /// The snapshot with the highest seq, if any.
    fn latest_snapshot(&self) -> Result<Option<(u64, Vec<u8>)>, StoreError>;

    /// Why this store takes no writes at all (opened read-only), if so. A
    /// writer refuses commands up front instead of deciding them.
    fn read_only(&self) -> Option<&str> {
        None
    }

    /// Iterate over records `from..=to` (clamped as in [`LogStore::scan`]) as
    /// owned `(seq, bytes)`, reading [`RANGE_CHUNK_RECORDS`] at a time.
    fn read_range(&self, from: u64, to: u64) -> RangeIter<'_>
    where
        Self: Sized,
    {
        RangeIter::new(self, from, to)
    }
}

impl<S: LogStore + ?Sized> LogStore for Box<S> {
    fn append(&mut self, records: &[Vec<u8>]) -> Result<Head, StoreError> {
        (**self).append(records)
    }
    fn append_sealed(&mut self, records: &[Sealed]) -> Result<Head, StoreError> {
        (**self).append_sealed(records)
    }
    fn tail(&self) -> Tail {
        (**self).tail()
    }
    fn scan(&self, from: u64, to: u64, visit: &mut Visit<'_>) -> Result<(), StoreError> {
        (**self).scan(from, to, visit)
    }
    fn record(&self, seq: u64) -> Result<Option<Record>, StoreError> {
        (**self).record(seq)
    }
    fn flush(&mut self) -> Result<(), StoreError> {
        (**self).flush()
    }
    fn put_snapshot(&mut self, seq: u64, bytes: &[u8]) -> Result<(), StoreError> {
        (**self).put_snapshot(seq, bytes)
    }
    fn latest_snapshot(&self) -> Result<Option<(u64, Vec<u8>)>, StoreError> {
        (**self).latest_snapshot()
    }
    fn read_only(&self) -> Option<&str> {
        (**self).read_only()
    }
}

/// Chunked iterator over a range of stored records; see
/// [`LogStore::read_range`]. Works on `&dyn LogStore` through
/// [`RangeIter::new`]. After the first error it yields nothing more.
pub struct RangeIter<'a> {
    store: &'a dyn LogStore,
    next: u64,
    to: u64,
    buffered: VecDeque<(u64, Vec<u8>)>,
    failed: bool,
}

impl<'a> RangeIter<'a> {
    pub fn new(store: &'a dyn LogStore, from: u64, to: u64) -> Self {
        let to = to.min(store.head().seq);
        RangeIter {
            store,
            next: from.max(1),
            to,
            buffered: VecDeque::new(),
            failed: false,
        }
    }

    fn refill(&mut self) -> Result<(), StoreError> {
        let chunk_to = self
            .to
            .min(self.next.saturating_add(RANGE_CHUNK_RECORDS - 1));
        let buffered = &mut self.buffered;
        self.store.scan(self.next, chunk_to, &mut |seq, bytes| {
            buffered.push_back((seq, bytes.to_vec()));
            ControlFlow::Continue(())
        })?;
        // A store must hand over every seq of the range or fail; if it did
        // neither, name the first seq it skipped rather than loop forever.
        let expected = chunk_to - self.next + 1;
        if self.buffered.len() as u64 != expected {
            return Err(StoreError::corrupt(
                self.next + self.buffered.len() as u64,
                "store returned fewer records than the range holds",
            ));
        }
        self.next = chunk_to + 1;
        Ok(())
    }
}

impl Iterator for RangeIter<'_> {
    type Item = Result<(u64, Vec<u8>), StoreError>;

    fn next(&mut self) -> Option<Self::Item> {
        if self.failed {
            return None;
        }
        if self.buffered.is_empty() {
            if self.next > self.to {
                return None;
            }
            if let Err(e) = self.refill() {
                self.failed = true;
                return Some(Err(e));
            }
        }
        self.buffered.pop_front().map(Ok)
    }
}

/// Decode the stored bytes of the record at `seq` after checking that they
/// are the record of that seq and hash correctly; anything else is
/// [`StoreError::Corrupt`] at `seq`.
pub fn decode_stored(seq: u64, bytes: &[u8]) -> Result<Record, StoreError> {
    let raw = RawRecord::parse(bytes).map_err(|e| StoreError::corrupt(seq, e.to_string()))?;
    if raw.seq != seq {
        return Err(StoreError::corrupt(
            seq,
            format!("the record stored under seq {seq} says seq {}", raw.seq),
        ));
    }
    raw.verify_hash()
        .map_err(|e| StoreError::corrupt(seq, e.to_string()))?;
    raw.decode()
        .map_err(|e| StoreError::corrupt(seq, e.to_string()))
}

/// Check a batch before anything is written: contiguous seqs from
/// `tail.head.seq + 1`, each linked to the previous hash, hashing correctly,
/// not going back in time and within [`RECORD_BYTES_MAX`]. The event bytes
/// are not decoded here (they were produced by `seal`); readers decode.
/// Returns the tail after the batch.
pub(crate) fn admit_batch(tail: Tail, records: &[Vec<u8>]) -> Result<Tail, StoreError> {
    let mut tail = tail;
    for bytes in records {
        let expected = tail.head.seq + 1;
        if bytes.len() > RECORD_BYTES_MAX {
            return Err(StoreError::rejected(
                expected,
                format!(
                    "record is {} bytes, above the {RECORD_BYTES_MAX}-byte limit",
                    bytes.len()
                ),
            ));
        }
        let raw =
            RawRecord::parse(bytes).map_err(|e| StoreError::rejected(expected, e.to_string()))?;
        if raw.seq != expected {
            return Err(StoreError::rejected(
                expected,
                format!(
                    "batch is not contiguous after the head: found seq {}",
                    raw.seq
                ),
            ));
        }
        if raw.prev != tail.head.hash {
            return Err(StoreError::rejected(
                expected,
                format!("prev does not match the hash of seq {}", tail.head.seq),
            ));
        }
        raw.verify_hash()
            .map_err(|e| StoreError::rejected(expected, e.to_string()))?;
        if raw.at_ms < tail.at_ms {
            return Err(StoreError::rejected(
                expected,
                format!(
                    "time went backwards: {} ms after {} ms",
                    raw.at_ms, tail.at_ms
                ),
            ));
        }
        tail = Tail {
            head: Head {
                seq: raw.seq,
                hash: raw.hash,
            },
            at_ms: raw.at_ms,
        };
    }
    Ok(tail)
}

/// [`admit_batch`] for sealed records: the same checks, except the hash,
/// which sealing computed over these very bytes.
pub(crate) fn admit_sealed(tail: Tail, records: &[Sealed]) -> Result<Tail, StoreError> {
    let mut tail = tail;
    for r in records {
        let expected = tail.head.seq + 1;
        if r.bytes().len() > RECORD_BYTES_MAX {
            return Err(StoreError::rejected(
                expected,
                format!(
                    "record is {} bytes, above the {RECORD_BYTES_MAX}-byte limit",
                    r.bytes().len()
                ),
            ));
        }
        if r.head().seq != expected {
            return Err(StoreError::rejected(
                expected,
                format!(
                    "batch is not contiguous after the head: found seq {}",
                    r.head().seq
                ),
            ));
        }
        if r.prev() != tail.head.hash {
            return Err(StoreError::rejected(
                expected,
                format!("prev does not match the hash of seq {}", tail.head.seq),
            ));
        }
        if r.at_ms() < tail.at_ms {
            return Err(StoreError::rejected(
                expected,
                format!(
                    "time went backwards: {} ms after {} ms",
                    r.at_ms(),
                    tail.at_ms
                ),
            ));
        }
        tail = Tail {
            head: r.head(),
            at_ms: r.at_ms(),
        };
    }
    Ok(tail)
}

/// Verify the last records of a log at open. `first_seq` is the lowest key
/// in the log (must be 1 when the log is not empty); `window` holds the last
/// up to [`TAIL_VERIFY_RECORDS`] records as `(key seq, bytes)` in ascending
/// order. Every record of the window must sit at its key, parse, link to the
/// one before it, hash correctly, not go back in time and decode. Returns
/// the tail, or `Corrupt` naming the first bad seq.
pub(crate) fn verify_tail<'b>(
    first_seq: Option<u64>,
    window: impl IntoIterator<Item = (u64, &'b [u8])>,
) -> Result<Tail, StoreError> {
    let Some(first_seq) = first_seq else {
        return Ok(Tail::EMPTY);
    };
    if first_seq != 1 {
        return Err(StoreError::corrupt(
            1,
            format!("log starts at seq {first_seq}, not 1"),
        ));
    }
    let mut verifier: Option<ChainVerifier> = None;
    let mut tail = Tail::EMPTY;
    for (key, bytes) in window {
        let v = match verifier.as_mut() {
            Some(v) => {
                if key != v.expected_seq() {
                    return Err(StoreError::corrupt(
                        v.expected_seq(),
                        "record missing from the log",
                    ));
                }
                v
            }
            None => {
                // The window's first record links to a record outside the
                // window: trust its `prev` (its own hash covers it).
                let raw =
                    RawRecord::parse(bytes).map_err(|e| StoreError::corrupt(key, e.to_string()))?;
                let start = if key == 1 {
                    ChainVerifier::new()
                } else {
                    ChainVerifier::resume(
                        Head {
                            seq: key - 1,
                            hash: raw.prev,
                        },
                        raw.at_ms,
                    )
                };
                verifier.insert(start)
            }
        };
        let record = v
            .next(bytes)
            .map_err(|e| StoreError::corrupt(key, e.to_string()))?;
        tail = Tail {
            head: record.head(),
            at_ms: record.at_ms,
        };
    }
    if verifier.is_none() {
        return Err(StoreError::corrupt(
            1,
            "log has a first key but no records to verify",
        ));
    }
    Ok(tail)
}

/// Decode an 8-byte big-endian log key.
pub(crate) fn key_seq(key: &[u8]) -> Option<u64> {
    let bytes: [u8; 8] = key.try_into().ok()?;
    Some(u64::from_be_bytes(bytes))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::event::{Event, TaskReopened};
    use crate::ids::TaskId;
    use crate::record::seal;

    fn chain(count: u64) -> Vec<Vec<u8>> {
        let mut head = Head::EMPTY;
        (1..=count)
            .map(|n| {
                let event = Event::TaskReopened(TaskReopened {
                    task_id: TaskId::from_u128(n as u128),
                });
                let (rec, bytes) = seal(head, 100 + n, event).unwrap();
                head = rec.head();
                bytes
            })
            .collect()
    }

    fn window(records: &[Vec<u8>], from: u64) -> Vec<(u64, &[u8])> {
        (from..)
            .zip(records[from as usize - 1..].iter().map(Vec::as_slice))
            .collect()
    }

    #[test]
    fn tail_window_may_start_mid_log() {
        // given a 10-record log whose last 4 are checked
        let records = chain(10);
        // when verified, then the tail is the last record's
        let tail = verify_tail(Some(1), window(&records, 7)).unwrap();
        assert_eq!((tail.head.seq, tail.at_ms), (10, 110));
        assert_eq!(verify_tail(None, Vec::new()).unwrap(), Tail::EMPTY);
    }

    #[test]
    fn tail_window_names_gaps_and_bad_records() {
        let records = chain(10);
        let mut w = window(&records, 5);
        w.remove(3); // seq 8 missing
        assert_eq!(verify_tail(Some(1), w).unwrap_err().corrupt_seq(), Some(8));
        let mut torn = records.clone();
        torn[9].truncate(50);
        assert_eq!(
            verify_tail(Some(1), window(&torn, 5))
                .unwrap_err()
                .corrupt_seq(),
            Some(10)
        );
        assert_eq!(
            verify_tail(Some(2), window(&records, 5))
                .unwrap_err()
                .corrupt_seq(),
            Some(1)
        );
    }

    #[test]
    fn admission_refuses_a_batch_that_goes_back_in_time() {
        let records = chain(2);
        let tail = admit_batch(Tail::EMPTY, &records[..1]).unwrap();
        let late = Tail { at_ms: 500, ..tail };
        let err = admit_batch(late, &records[1..]).unwrap_err();
        assert!(matches!(err, StoreError::Rejected { seq: 2, .. }), "{err}");
    }
}
