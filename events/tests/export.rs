//! The export file: round trip, and detection of every single-byte flip,
//! every truncation, swapped, dropped and duplicated records, each named by
//! the seq expected at the position where the file goes wrong.

mod common;

use common::fill;
use proptest::prelude::*;
use std::io::Cursor;
use taskledger_events::export::{self, ExportFault, ExportReader, FILE_HEADER_BYTES, FOOTER_BYTES};
use taskledger_events::*;

const RECORDS: u64 = 20;

/// An export of `RECORDS` records, the store's records, and each framed
/// record's `[start, end)` in the file (length prefix included).
struct Sample {
    file: Vec<u8>,
    records: Vec<Vec<u8>>,
    spans: Vec<(usize, usize)>,
}

fn sample() -> Sample {
    let mut store = MemStore::new();
    let records = fill(&mut store, 4, RECORDS / 4);
    let mut file = Vec::new();
    let head = export::write(&store, &mut file).unwrap();
    assert_eq!(head, store.head());
    let mut spans = Vec::new();
    let mut at = FILE_HEADER_BYTES;
    for r in &records {
        spans.push((at, at + 4 + r.len()));
        at += 4 + r.len();
    }
    assert_eq!(at + FOOTER_BYTES, file.len());
    Sample {
        file,
        records,
        spans,
    }
}

impl Sample {
    /// The seq expected at file position `pos`.
    fn seq_at(&self, pos: usize) -> u64 {
        if pos < FILE_HEADER_BYTES {
            return 1;
        }
        self.spans
            .iter()
            .position(|(s, e)| (*s..*e).contains(&pos))
            .map_or(RECORDS + 1, |i| i as u64 + 1)
    }

    fn framed(&self, seq: u64) -> &[u8] {
        let (s, e) = self.spans[seq as usize - 1];
        &self.file[s..e]
    }

    /// A file from the header, the given framed records (by seq) and the footer.
    fn rebuild(&self, seqs: &[u64]) -> Vec<u8> {
        let mut out = self.file[..FILE_HEADER_BYTES].to_vec();
        for seq in seqs {
            out.extend_from_slice(self.framed(*seq));
        }
        out.extend_from_slice(&self.file[self.file.len() - FOOTER_BYTES..]);
        out
    }
}

fn verify(bytes: &[u8]) -> Result<Head, ExportError> {
    export::verify_reader(ExportReader::new(Cursor::new(bytes))?)
}

fn bad_seq(bytes: &[u8]) -> u64 {
    let err = verify(bytes).expect_err("tampered export verified");
    err.seq()
        .unwrap_or_else(|| panic!("error without seq: {err}"))
}

#[test]
fn export_round_trips_through_file() {
    let dir = tempfile::tempdir().unwrap();
    let mut store = SledStore::open(dir.path().join("db")).unwrap();
    let written = fill(&mut store, 5, 7);
    let path = dir.path().join("log.tlexport");
    let head = export::write_all(&store, &path).unwrap();
    assert!(!dir.path().join("log.tlexport.partial").exists());
    assert_eq!(export::verify(&path).unwrap(), head);
    let mut records = export::records(&path).unwrap();
    let mut verifier = ChainVerifier::new();
    for bytes in &written {
        let expected = verifier.next(bytes).unwrap();
        assert_eq!(records.next().unwrap().unwrap(), expected);
    }
    assert!(records.next().is_none());
    assert!(records.is_complete());
    assert_eq!(records.head(), head);
    // an empty log exports and verifies too
    let mut empty = Vec::new();
    assert_eq!(
        export::write(&MemStore::new(), &mut empty).unwrap(),
        Head::EMPTY
    );
    assert_eq!(verify(&empty).unwrap(), Head::EMPTY);
}

#[test]
fn every_flipped_byte_names_its_records_seq() {
    let s = sample();
    assert_eq!(verify(&s.file).unwrap().seq, RECORDS);
    for pos in 0..s.file.len() {
        for mask in [0x01u8, 0x80, 0xFF] {
            let mut bad = s.file.clone();
            bad[pos] ^= mask;
            assert_eq!(bad_seq(&bad), s.seq_at(pos), "byte {pos} ^ {mask:#x}");
        }
    }
}

#[test]
fn length_prefix_turned_into_footer_marker_names_that_record() {
    let s = sample();
    for seq in 1..=RECORDS {
        let mut bad = s.file.clone();
        let (start, _) = s.spans[seq as usize - 1];
        bad[start..start + 4].copy_from_slice(&[0xFF; 4]);
        assert_eq!(bad_seq(&bad), seq);
    }
}

#[test]
fn huge_length_prefix_is_refused_without_allocating() {
    let s = sample();
    let mut bad = s.file.clone();
    let (start, _) = s.spans[2];
    bad[start..start + 4].copy_from_slice(&0xFFFF_FFFEu32.to_le_bytes());
    let err = verify(&bad).unwrap_err();
    assert_eq!(err.seq(), Some(3));
    assert!(
        matches!(err.fault(), Some(ExportFault::Length { .. })),
        "{err}"
    );
}

#[test]
fn every_truncation_names_the_incomplete_or_missing_record() {
    let s = sample();
    for len in 0..s.file.len() {
        let want = s.seq_at(len);
        assert_eq!(bad_seq(&s.file[..len]), want, "truncated to {len} bytes");
    }
    // the whole last record and the footer gone: names the last record
    let (last_start, _) = s.spans[RECORDS as usize - 1];
    assert_eq!(bad_seq(&s.file[..last_start]), RECORDS);
    // only the footer gone: names the seq after the last record
    assert_eq!(bad_seq(&s.file[..s.file.len() - FOOTER_BYTES]), RECORDS + 1);
}

#[test]
fn swapped_records_name_the_first_swapped_position() {
    let s = sample();
    for i in 1..=RECORDS {
        for j in i + 1..=RECORDS {
            let mut order: Vec<u64> = (1..=RECORDS).collect();
            order.swap(i as usize - 1, j as usize - 1);
            assert_eq!(bad_seq(&s.rebuild(&order)), i, "swap {i} and {j}");
        }
    }
}

#[test]
fn dropped_or_duplicated_records_are_named() {
    let s = sample();
    assert_eq!(s.rebuild(&(1..=RECORDS).collect::<Vec<_>>()), s.file);
    for i in 1..=RECORDS {
        let dropped: Vec<u64> = (1..=RECORDS).filter(|n| *n != i).collect();
        assert_eq!(bad_seq(&s.rebuild(&dropped)), i, "drop {i}");
        let mut duplicated: Vec<u64> = (1..=RECORDS).collect();
        duplicated.insert(i as usize, i);
        assert_eq!(bad_seq(&s.rebuild(&duplicated)), i + 1, "duplicate {i}");
    }
}

#[test]
fn bytes_after_the_footer_are_refused() {
    let s = sample();
    let mut bad = s.file.clone();
    bad.push(0);
    let err = verify(&bad).unwrap_err();
    assert_eq!(
        (err.seq(), err.fault()),
        (Some(RECORDS + 1), Some(&ExportFault::Trailing))
    );
}

#[test]
fn a_corrupt_store_is_not_exported() {
    let mut store = MemStore::new();
    fill(&mut store, 2, 5);
    let mut faulty = FaultyStore::new(store);
    faulty.flip_byte(7, 30).unwrap();
    let err = export::write(&faulty, &mut Vec::new()).unwrap_err();
    assert_eq!(err.seq(), Some(7), "{err}");
}

#[test]
fn records_before_a_fault_are_yielded_then_the_fault() {
    let s = sample();
    let mut bad = s.file.clone();
    let (start, _) = s.spans[11];
    bad[start + 40] ^= 1;
    let reader = ExportReader::new(Cursor::new(&bad[..])).unwrap();
    let results: Vec<_> = ExportRecords::new(reader).collect();
    assert_eq!(results.len(), 12);
    assert!(results[..11].iter().all(Result::is_ok));
    assert_eq!(results[11].as_ref().unwrap_err().seq(), Some(12));
    assert_eq!(s.records.len(), RECORDS as usize);
}

proptest! {
    #[test]
    fn random_damage_is_named_at_its_position(pos_frac in 0.0f64..1.0, mask in 1u8..=255) {
        let s = sample();
        let pos = ((s.file.len() as f64) * pos_frac) as usize;
        let mut bad = s.file.clone();
        bad[pos] ^= mask;
        prop_assert_eq!(bad_seq(&bad), s.seq_at(pos));
    }
}

/// Throughput of the verifying reader. Run with
/// `cargo test --release -p taskledger-events --test export -- --ignored --nocapture`.
#[test]
#[ignore]
fn verify_throughput() {
    let mut store = MemStore::new();
    fill(&mut store, 1000, 1000);
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("big.tlexport");
    let t = std::time::Instant::now();
    export::write_all(&store, &path).unwrap();
    let write_s = t.elapsed().as_secs_f64();
    let t = std::time::Instant::now();
    let head = export::verify(&path).unwrap();
    let read_s = t.elapsed().as_secs_f64();
    println!(
        "{} records, {} bytes: write {:.0} records/s, verify+decode {:.0} records/s",
        head.seq,
        std::fs::metadata(&path).unwrap().len(),
        head.seq as f64 / write_s,
        head.seq as f64 / read_s
    );
}
