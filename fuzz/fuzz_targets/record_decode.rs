//! Arbitrary bytes as one stored record (`events/FORMAT.md`): the envelope
//! parser, the store's `decode_stored`, the chain verifier and the event
//! codec must answer `Ok` or `Err`, never panic. A record that decodes must
//! survive a round trip: its envelope with the event re-encoded decodes to
//! the same record, and a record whose hash checks out re-seals to exactly
//! the stored bytes (the encoding is canonical).

#![no_main]

use libfuzzer_sys::fuzz_target;
use taskledger_events::record::HEADER_BYTES;
use taskledger_events::{ChainVerifier, Head, RawRecord, codec, decode_stored, seal};

fuzz_target!(|data: &[u8]| {
    let _ = ChainVerifier::new().next(data);
    let Ok(raw) = RawRecord::parse(data) else {
        return;
    };
    let stored = decode_stored(raw.seq, data);
    let hash_ok = raw.verify_hash().is_ok();
    let Ok(record) = raw.decode() else {
        assert!(
            stored.is_err(),
            "decode_stored accepted what decode refused"
        );
        return;
    };
    if hash_ok {
        assert_eq!(
            stored.as_ref().ok(),
            Some(&record),
            "decode_stored disagrees"
        );
    } else {
        assert!(stored.is_err(), "decode_stored accepted a bad hash");
    }

    // Re-encode: the same envelope around the event encoded again.
    let event_bytes = codec::encode_event(&record.event).expect("a decoded event encodes");
    let mut bytes = Vec::with_capacity(HEADER_BYTES + event_bytes.len());
    bytes.extend_from_slice(&record.seq.to_le_bytes());
    bytes.extend_from_slice(&record.at_ms.to_le_bytes());
    bytes.extend_from_slice(&record.prev);
    bytes.extend_from_slice(&record.hash);
    let event_len = u32::try_from(event_bytes.len()).expect("the codec bounds events");
    bytes.extend_from_slice(&event_len.to_le_bytes());
    bytes.extend_from_slice(&event_bytes);
    let again = RawRecord::parse(&bytes)
        .and_then(|r| r.decode())
        .expect("re-encoded record decodes");
    assert_eq!(again, record, "round trip changed the record");

    // A genuine record (its hash checks out) re-seals to its stored bytes.
    if hash_ok && record.seq >= 1 {
        let prev = Head {
            seq: record.seq - 1,
            hash: record.prev,
        };
        let (sealed, sealed_bytes) =
            seal(prev, record.at_ms, record.event.clone()).expect("a decoded event seals");
        assert_eq!(sealed, record, "re-sealing changed the record");
        assert_eq!(sealed_bytes, data, "re-sealing changed the bytes");
    }
});
