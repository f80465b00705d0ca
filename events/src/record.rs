//! The record envelope and the blake3 hash chain.
//!
//! A record is `{ seq, at_ms, prev, hash, event }`. Its stored bytes are
//! (all integers little-endian; see `events/FORMAT.md`):
//!
//! ```text
//! offset size field
//!      0    8 seq        u64, starts at 1, no gaps
//!      8    8 at_ms      u64, writer's clock in ms since the Unix epoch, never decreases
//!     16   32 prev       hash of the previous record (32 zero bytes for seq 1)
//!     48   32 hash       blake3(DOMAIN_TAG || prev || seq || at_ms || event bytes)
//!     80    4 event_len  u32
//!     84    n event      bincode 2 bytes of the `Event` (see `codec`)
//! ```
//!
//! The hash covers the event bytes exactly as stored, so verification never
//! depends on re-encoding. Pure: no I/O, no clock.

use crate::codec::{self, CodecError};
use crate::event::Event;
use crate::ids::Hash;
use thiserror::Error;

/// Domain separation for the record hash. Bumped on any format change.
pub const DOMAIN_TAG: &[u8] = b"taskledger/record/v1";

/// Bytes before the event in a stored record.
pub const HEADER_BYTES: usize = 84;

/// The `prev` of the first record.
pub const GENESIS_PREV: Hash = [0u8; 32];

/// `(seq, hash)` of the last record: names the whole history. seq 0 with the
/// genesis hash is the empty log.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub struct Head {
    pub seq: u64,
    pub hash: Hash,
}

impl Head {
    pub const EMPTY: Head = Head {
        seq: 0,
        hash: GENESIS_PREV,
    };

    pub fn hash_hex(&self) -> String {
        hex(&self.hash)
    }
}

/// Lower-case hex of a digest.
pub fn hex(bytes: &[u8]) -> String {
    const DIGITS: &[u8; 16] = b"0123456789abcdef";
    let mut out = String::with_capacity(bytes.len() * 2);
    for b in bytes {
        out.push(DIGITS[(b >> 4) as usize] as char);
        out.push(DIGITS[(b & 15) as usize] as char);
    }
    out
}

/// A decoded record.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Record {
    pub seq: u64,
    pub at_ms: u64,
    pub prev: Hash,
    pub hash: Hash,
    pub event: Event,
}

impl Record {
    pub fn head(&self) -> Head {
        Head {
            seq: self.seq,
            hash: self.hash,
        }
    }
}

/// Why a record's bytes or its place in the chain are wrong.
#[derive(Debug, Error, Clone, PartialEq, Eq)]
pub enum RecordError {
    #[error("record is {len} bytes, shorter than its {HEADER_BYTES}-byte header")]
    ShortHeader { len: usize },
    #[error("record says its event is {declared} bytes but {actual} follow the header")]
    EventLength { declared: usize, actual: usize },
    #[error("bad event bytes: {0}")]
    Codec(#[from] CodecError),
    #[error("hash mismatch: stored {stored}, computed {computed}")]
    HashMismatch { stored: String, computed: String },
    #[error("expected seq {expected}, found {found}")]
    SeqMismatch { expected: u64, found: u64 },
    #[error("prev does not match the hash of seq {prev_seq}")]
    PrevMismatch { prev_seq: u64 },
    #[error("time went backwards: {at_ms} ms after {prev_at_ms} ms")]
    TimeBackwards { at_ms: u64, prev_at_ms: u64 },
}

/// The record hash: `blake3(DOMAIN_TAG || prev || seq_le || at_ms_le || event_bytes)`.
pub fn record_hash(prev: &Hash, seq: u64, at_ms: u64, event_bytes: &[u8]) -> Hash {
    let mut h = blake3::Hasher::new();
    h.update(DOMAIN_TAG);
    h.update(prev);
    h.update(&seq.to_le_bytes());
    h.update(&at_ms.to_le_bytes());
    h.update(event_bytes);
    *h.finalize().as_bytes()
}

/// Seal an event onto the chain after `prev_head`: the new record and its
/// stored bytes.
pub fn seal(prev_head: Head, at_ms: u64, event: Event) -> Result<(Record, Vec<u8>), CodecError> {
    seal_record(prev_head, at_ms, event).map(|(record, sealed)| (record, sealed.bytes))
}

/// Seal an event onto the chain after `prev_head`: the new record and its
/// [`Sealed`] bytes, which a store can append without hashing them again
/// ([`crate::store::LogStore::append_sealed`]). The event is encoded once,
/// straight into the record bytes after the header.
pub fn seal_record(
    prev_head: Head,
    at_ms: u64,
    event: Event,
) -> Result<(Record, Sealed), CodecError> {
    let seq = prev_head.seq + 1;
    let mut bytes = Vec::with_capacity(HEADER_BYTES + 64);
    bytes.extend_from_slice(&seq.to_le_bytes());
    bytes.extend_from_slice(&at_ms.to_le_bytes());
    bytes.extend_from_slice(&prev_head.hash);
    bytes.extend_from_slice(&[0u8; 32]); // the hash, filled in below
    bytes.extend_from_slice(&[0u8; 4]); // the event length, filled in below
    codec::encode_event_into(&event, &mut bytes)?;
    let event_len = bytes.len() - HEADER_BYTES;
    // encode_event_into bounds the event by EVENT_BYTES_MAX, below u32::MAX.
    bytes[80..84].copy_from_slice(&(event_len as u32).to_le_bytes());
    let hash = record_hash(&prev_head.hash, seq, at_ms, &bytes[HEADER_BYTES..]);
    bytes[48..80].copy_from_slice(&hash);
    let record = Record {
        seq,
        at_ms,
        prev: prev_head.hash,
        hash,
        event,
    };
    let sealed = Sealed {
        bytes,
        prev: prev_head.hash,
        head: record.head(),
        at_ms,
    };
    Ok((record, sealed))
}

/// Stored record bytes made by [`seal_record`], with the envelope fields a
/// store checks. Only sealing makes one and its bytes cannot be changed
/// afterwards, so its hash is known to be right: a store appending it checks
/// that it continues the chain (seq, prev, time) but need not hash it again.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Sealed {
    bytes: Vec<u8>,
    prev: Hash,
    head: Head,
    at_ms: u64,
}

impl Sealed {
    /// The stored bytes, exactly as [`seal`] returns them.
    pub fn bytes(&self) -> &[u8] {
        &self.bytes
    }

    pub fn into_bytes(self) -> Vec<u8> {
        self.bytes
    }

    /// `(seq, hash)` of this record.
    pub fn head(&self) -> Head {
        self.head
    }

    /// The hash this record links to.
    pub fn prev(&self) -> Hash {
        self.prev
    }

    pub fn at_ms(&self) -> u64 {
        self.at_ms
    }
}

/// The envelope fields of stored record bytes, without decoding the event.
#[derive(Clone, Copy, Debug)]
pub struct RawRecord<'a> {
    pub seq: u64,
    pub at_ms: u64,
    pub prev: Hash,
    pub hash: Hash,
    pub event_bytes: &'a [u8],
}

impl<'a> RawRecord<'a> {
    /// Split stored bytes into envelope fields; checks lengths only.
    pub fn parse(bytes: &'a [u8]) -> Result<Self, RecordError> {
        if bytes.len() < HEADER_BYTES {
            return Err(RecordError::ShortHeader { len: bytes.len() });
        }
        let u64_at = |o: usize| {
            let mut b = [0u8; 8];
            b.copy_from_slice(&bytes[o..o + 8]);
            u64::from_le_bytes(b)
        };
        let mut prev = [0u8; 32];
        prev.copy_from_slice(&bytes[16..48]);
        let mut hash = [0u8; 32];
        hash.copy_from_slice(&bytes[48..80]);
        let mut len = [0u8; 4];
        len.copy_from_slice(&bytes[80..84]);
        let declared = u32::from_le_bytes(len) as usize;
        let event_bytes = &bytes[HEADER_BYTES..];
        if declared != event_bytes.len() {
            return Err(RecordError::EventLength {
                declared,
                actual: event_bytes.len(),
            });
        }
        Ok(RawRecord {
            seq: u64_at(0),
            at_ms: u64_at(8),
            prev,
            hash,
            event_bytes,
        })
    }

    /// Recompute the hash over the stored bytes and compare.
    pub fn verify_hash(&self) -> Result<(), RecordError> {
        let computed = record_hash(&self.prev, self.seq, self.at_ms, self.event_bytes);
        if computed != self.hash {
            return Err(RecordError::HashMismatch {
                stored: hex(&self.hash),
                computed: hex(&computed),
            });
        }
        Ok(())
    }

    pub fn decode(&self) -> Result<Record, RecordError> {
        let event = codec::decode_event(self.event_bytes)?;
        Ok(Record {
            seq: self.seq,
            at_ms: self.at_ms,
            prev: self.prev,
            hash: self.hash,
            event,
        })
    }
}

/// Follows a chain record by record: each must be the next seq, link to the
/// previous hash, hash correctly and not go back in time.
#[derive(Clone, Debug)]
pub struct ChainVerifier {
    head: Head,
    last_at_ms: u64,
}

impl Default for ChainVerifier {
    fn default() -> Self {
        Self::new()
    }
}

impl ChainVerifier {
    pub fn new() -> Self {
        ChainVerifier {
            head: Head::EMPTY,
            last_at_ms: 0,
        }
    }

    /// Continue a chain from a known head (e.g. a snapshot's).
    pub fn resume(head: Head, last_at_ms: u64) -> Self {
        ChainVerifier { head, last_at_ms }
    }

    pub fn head(&self) -> Head {
        self.head
    }

    /// The seq the next record must have; errors are reported against it.
    pub fn expected_seq(&self) -> u64 {
        self.head.seq + 1
    }

    /// Verify the next stored record without decoding its event: seq, link,
    /// hash and time. For callers that decode elsewhere (the export audit
    /// decodes on another thread); they must still decode every record and
    /// treat a failure as a bad record at its seq.
    pub fn verify<'b>(&mut self, bytes: &'b [u8]) -> Result<RawRecord<'b>, RecordError> {
        let raw = RawRecord::parse(bytes)?;
        self.check(&raw)?;
        self.head = Head {
            seq: raw.seq,
            hash: raw.hash,
        };
        self.last_at_ms = raw.at_ms;
        Ok(raw)
    }

    /// Verify the next stored record and decode it.
    pub fn next(&mut self, bytes: &[u8]) -> Result<Record, RecordError> {
        let raw = RawRecord::parse(bytes)?;
        self.check(&raw)?;
        let record = raw.decode()?;
        self.head = Head {
            seq: raw.seq,
            hash: raw.hash,
        };
        self.last_at_ms = raw.at_ms;
        Ok(record)
    }

    fn check(&self, raw: &RawRecord<'_>) -> Result<(), RecordError> {
        let expected = self.expected_seq();
        if raw.seq != expected {
            return Err(RecordError::SeqMismatch {
                expected,
                found: raw.seq,
            });
        }
        if raw.prev != self.head.hash {
            return Err(RecordError::PrevMismatch {
                prev_seq: self.head.seq,
            });
        }
        raw.verify_hash()?;
        if raw.at_ms < self.last_at_ms {
            return Err(RecordError::TimeBackwards {
                at_ms: raw.at_ms,
                prev_at_ms: self.last_at_ms,
            });
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::event::{Event, TaskReopened};
    use crate::ids::TaskId;

    fn ev(n: u128) -> Event {
        Event::TaskReopened(TaskReopened {
            task_id: TaskId::from_u128(n),
        })
    }

    #[test]
    fn sealed_records_verify_in_order() {
        // given three sealed records
        let mut head = Head::EMPTY;
        let mut stored = Vec::new();
        for n in 0..3 {
            let (rec, bytes) = seal(head, 1000 + n as u64, ev(n)).unwrap();
            head = rec.head();
            stored.push(bytes);
        }
        // when verified in order, then each decodes to its event
        let mut v = ChainVerifier::new();
        for (n, bytes) in stored.iter().enumerate() {
            let rec = v.next(bytes).unwrap();
            assert_eq!(rec.seq, n as u64 + 1);
            assert_eq!(rec.event, ev(n as u128));
        }
        assert_eq!(v.head(), head);
    }

    #[test]
    fn every_flipped_byte_is_detected() {
        let (_, bytes) = seal(Head::EMPTY, 7, ev(1)).unwrap();
        for i in 0..bytes.len() {
            for bit in [0x01u8, 0x80] {
                let mut bad = bytes.clone();
                bad[i] ^= bit;
                let mut v = ChainVerifier::new();
                assert!(
                    v.next(&bad).is_err(),
                    "flip of byte {i} bit {bit:#x} went unnoticed"
                );
            }
        }
    }

    #[test]
    fn time_may_not_go_backwards() {
        let (r1, b1) = seal(Head::EMPTY, 10, ev(1)).unwrap();
        let (_, b2) = seal(r1.head(), 9, ev(2)).unwrap();
        let mut v = ChainVerifier::new();
        v.next(&b1).unwrap();
        assert!(matches!(
            v.next(&b2),
            Err(RecordError::TimeBackwards { .. })
        ));
    }
}
