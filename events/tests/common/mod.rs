//! Helpers shared by the store, crash and export tests.
#![allow(dead_code)]

use taskledger_events::*;

/// A small event whose size varies with `n`.
pub fn event(n: u64) -> Event {
    if n.is_multiple_of(3) {
        Event::TaskReopened(TaskReopened {
            task_id: TaskId::from_u128(n as u128),
        })
    } else {
        Event::VerificationFallback(VerificationFallback {
            task_id: TaskId::from_u128(n as u128),
            execution_id: ExecutionId::from_u128(n as u128 + 1),
            reason: "x".repeat((n % 17) as usize),
        })
    }
}

/// Seal `count` records after `tail`; returns the batch bytes.
pub fn batch(tail: Tail, count: u64) -> Vec<Vec<u8>> {
    let mut head = tail.head;
    let mut out = Vec::new();
    for i in 0..count {
        let seq = head.seq + 1;
        let (rec, bytes) = seal(head, tail.at_ms.max(1_000) + seq + i / 2, event(seq)).unwrap();
        head = rec.head();
        out.push(bytes);
    }
    out
}

/// Append `batches` batches of `size` records; returns every record's bytes.
pub fn fill(store: &mut dyn LogStore, batches: u64, size: u64) -> Vec<Vec<u8>> {
    let mut all = Vec::new();
    for _ in 0..batches {
        let b = batch(store.tail(), size);
        store.append(&b).unwrap();
        all.extend(b);
    }
    all
}

/// Read the whole log and verify the chain; returns every record's bytes.
pub fn read_verified(store: &dyn LogStore) -> Vec<Vec<u8>> {
    let mut v = ChainVerifier::new();
    let mut out = Vec::new();
    for item in RangeIter::new(store, 1, u64::MAX) {
        let (seq, bytes) = item.unwrap();
        let rec = v.next(&bytes).unwrap();
        assert_eq!(rec.seq, seq);
        out.push(bytes);
    }
    assert_eq!(v.head(), store.head());
    out
}
