//! Arbitrary bytes as an export file (`events/FORMAT.md`), read to the end
//! by the framing reader (`ExportReader::next_raw`), the verifying iterator
//! (`ExportRecords`) and its bytes-only variant (`next_verified_bytes`, what
//! the audit uses). Never panics, never loops: every step consumes input,
//! so the number of steps is bounded by the file size. Every error names
//! the seq expected at the position where it stopped (an in-memory reader
//! has no I/O errors), and a clean end means the footer checked out.

#![no_main]

use libfuzzer_sys::fuzz_target;
use taskledger_events::export::FILE_HEADER_BYTES;
use taskledger_events::record::HEADER_BYTES;
use taskledger_events::{ExportReader, ExportRecords, RawRecord};

/// Most records a file of `len` bytes can frame: each takes a 4-byte
/// prefix and at least a record header.
fn steps_max(len: usize) -> u64 {
    (len.saturating_sub(FILE_HEADER_BYTES) / (4 + HEADER_BYTES)) as u64
}

fuzz_target!(|data: &[u8]| {
    let max = steps_max(data.len());

    // The framing reader.
    match ExportReader::new(data) {
        Err(e) => assert_eq!(e.seq(), Some(1), "{e}"),
        Ok(mut reader) => loop {
            let seq = reader.next_seq();
            match reader.next_raw() {
                Ok(Some(bytes)) => {
                    assert!(bytes.len() >= HEADER_BYTES);
                    assert!(seq <= max, "more records than the file can hold");
                }
                Ok(None) => {
                    let footer = reader.footer().expect("a clean end has a footer");
                    assert_eq!(footer.records, seq - 1);
                    break;
                }
                Err(e) => {
                    assert_eq!(e.seq(), Some(seq), "{e}");
                    break;
                }
            }
        },
    }

    // The verifying iterator.
    if let Ok(reader) = ExportReader::new(data) {
        let mut records = ExportRecords::new(reader);
        let mut good = 0u64;
        let mut failed = false;
        for item in records.by_ref() {
            assert!(!failed, "the iterator went on after an error");
            match item {
                Ok(record) => {
                    good += 1;
                    assert_eq!(record.seq, good);
                    assert!(good <= max, "more records than the file can hold");
                }
                Err(e) => {
                    assert_eq!(e.seq(), Some(good + 1), "{e}");
                    failed = true;
                }
            }
        }
        assert_eq!(records.is_complete(), !failed);
        assert_eq!(records.head().seq, good);
    }

    // Bytes-only verification, decoding each record as the audit does.
    if let Ok(reader) = ExportReader::new(data) {
        let mut records = ExportRecords::new(reader);
        let mut steps = 0u64;
        loop {
            steps += 1;
            assert!(steps <= max + 1, "next_verified_bytes does not end");
            match records.next_verified_bytes() {
                Ok(Some(bytes)) => {
                    let _ = RawRecord::parse(bytes).and_then(|r| r.decode());
                }
                Ok(None) => break,
                Err(e) => {
                    assert_eq!(e.seq(), Some(steps), "{e}");
                    assert!(matches!(records.next_verified_bytes(), Ok(None)));
                    break;
                }
            }
        }
    }
});
