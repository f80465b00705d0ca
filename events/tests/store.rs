//! Log stores: append / reopen round trips, group commit, batch admission,
//! tail verification at open, stale sled snapshot files, snapshots, and the
//! fault-injecting wrapper.

mod common;

use common::{batch, event, fill, read_verified};
use proptest::prelude::*;
use std::ops::ControlFlow;
use std::path::Path;
use taskledger_events::faulty_store::FailedFlush;
use taskledger_events::sled_store::{ASIDE_DIR, STORE_FORMAT_VERSION};
use taskledger_events::*;

/// Write raw bytes under a log key, bypassing SledStore, as a disk fault would.
fn raw_log(dir: &Path, f: impl FnOnce(&sled::Tree)) {
    let db = raw_open(dir);
    let log = db.open_tree("log").unwrap();
    f(&log);
    db.flush().unwrap();
}

/// sled::open, waiting out the moment sled's background threads hold a
/// just-dropped database's lock.
fn raw_open(dir: &Path) -> sled::Db {
    for _ in 0..500 {
        match sled::open(dir) {
            Err(sled::Error::Io(e)) if e.to_string().contains("could not acquire lock") => {
                std::thread::sleep(std::time::Duration::from_millis(10))
            }
            result => return result.unwrap(),
        }
    }
    panic!("sled lock never released");
}

fn stored(log: &sled::Tree, seq: u64) -> Vec<u8> {
    log.get(seq.to_be_bytes()).unwrap().unwrap().to_vec()
}

#[test]
fn sled_batches_survive_reopen_in_order() {
    let dir = tempfile::tempdir().unwrap();
    // given batches of several sizes appended and the store closed
    let mut written = Vec::new();
    let head = {
        let mut store = SledStore::open(dir.path()).unwrap();
        for size in [1u64, 7, 256, 3, 40] {
            let b = batch(store.tail(), size);
            let head = store.append(&b).unwrap();
            assert_eq!(head.seq, written.len() as u64 + size);
            written.extend(b);
        }
        store.head()
    };
    // when reopened, then the head and every record are as written
    let store = SledStore::open(dir.path()).unwrap();
    assert_eq!(store.head(), head);
    assert_eq!(read_verified(&store), written);
    // and a later batch continues the chain
    let mut store = store;
    let more = batch(store.tail(), 5);
    assert_eq!(store.append(&more).unwrap().seq, head.seq + 5);
}

#[test]
fn each_append_is_one_apply_batch_and_one_flush() {
    let dir = tempfile::tempdir().unwrap();
    let mut store = SledStore::open(dir.path()).unwrap();
    fill(&mut store, 10, 25);
    let stats = store.stats();
    assert_eq!(
        (stats.appends, stats.batches_applied, stats.flushes),
        (10, 10, 10)
    );
    // an empty batch writes and flushes nothing
    store.append(&[]).unwrap();
    assert_eq!(store.stats().flushes, 10);
    let mut mem = MemStore::new();
    fill(&mut mem, 4, 9);
    assert_eq!(mem.flushes(), 4);
}

fn refuses_bad_batches(store: &mut dyn LogStore) {
    fill(store, 1, 5);
    let head = store.head();
    let good = batch(store.tail(), 3);
    let cases: Vec<(Vec<Vec<u8>>, u64)> = vec![
        (good[1..].to_vec(), 6),                     // does not start at head + 1
        (vec![good[0].clone(), good[2].clone()], 7), // gap
        (vec![good[0].clone(), good[0].clone()], 7), // duplicate
        (batch(Tail::EMPTY, 1), 6),                  // another chain
        (vec![good[0][..good[0].len() - 1].to_vec()], 6), // torn
        (
            {
                let mut b = good.clone();
                b[2][90] ^= 1;
                b
            },
            8,
        ), // bad hash
    ];
    for (bad, seq) in cases {
        let err = store.append(&bad).unwrap_err();
        assert!(
            matches!(err, StoreError::Rejected { seq: s, .. } if s == seq),
            "{err}"
        );
        assert!(!err.is_fatal());
        assert_eq!(store.head(), head, "a refused batch wrote something");
    }
    assert_eq!(store.append(&good).unwrap().seq, 8);
}

/// Seal `count` records after `tail` for `append_sealed`.
fn sealed_batch(tail: Tail, count: u64) -> Vec<Sealed> {
    let mut head = tail.head;
    (0..count)
        .map(|i| {
            let seq = head.seq + 1;
            let (rec, sealed) =
                seal_record(head, tail.at_ms.max(1_000) + seq + i / 2, event(seq)).unwrap();
            head = rec.head();
            sealed
        })
        .collect()
}

fn sealed_appends_check_the_chain(store: &mut dyn LogStore) {
    // given sealed batches appended, then the log reads back as they were sealed
    let mut written = Vec::new();
    for size in [1u64, 9, 4] {
        let b = sealed_batch(store.tail(), size);
        assert_eq!(store.append_sealed(&b).unwrap(), b.last().unwrap().head());
        written.extend(b.into_iter().map(Sealed::into_bytes));
    }
    assert_eq!(read_verified(&*store), written);
    // and sealed bytes are the bytes `seal` makes, and hash correctly
    for bytes in &written {
        let raw = RawRecord::parse(bytes).unwrap();
        raw.verify_hash().unwrap();
        let (_, resealed) = seal(
            Head {
                seq: raw.seq - 1,
                hash: raw.prev,
            },
            raw.at_ms,
            raw.decode().unwrap().event,
        )
        .unwrap();
        assert_eq!(&resealed, bytes);
    }
    // when a sealed batch does not continue the chain, it is refused whole
    let head = store.head();
    let good = sealed_batch(store.tail(), 3);
    let late = Tail {
        at_ms: store.tail().at_ms + 1_000_000,
        ..store.tail()
    };
    let cases: Vec<(Vec<Sealed>, u64)> = vec![
        (good[1..].to_vec(), head.seq + 1), // not at head + 1
        (vec![good[0].clone(), good[2].clone()], head.seq + 2), // gap
        (vec![good[0].clone(), good[0].clone()], head.seq + 2), // duplicate
        (sealed_batch(Tail::EMPTY, 1), head.seq + 1), // another chain
        (
            sealed_batch(
                Tail {
                    head: Head {
                        seq: head.seq,
                        hash: [7; 32],
                    },
                    ..store.tail()
                },
                1,
            ),
            head.seq + 1,
        ), // wrong prev
        (
            {
                let mut b = sealed_batch(late, 1);
                b.extend(sealed_batch(
                    Tail {
                        head: b[0].head(),
                        at_ms: 1,
                    },
                    1,
                ));
                b
            },
            head.seq + 2,
        ), // time goes backwards
    ];
    for (bad, seq) in cases {
        let err = store.append_sealed(&bad).unwrap_err();
        assert!(
            matches!(err, StoreError::Rejected { seq: s, .. } if s == seq),
            "{err}"
        );
        assert_eq!(store.head(), head, "a refused batch wrote something");
    }
    // and the good batch still goes in
    assert_eq!(store.append_sealed(&good).unwrap(), good[2].head());
    assert!(store.append_sealed(&[]).is_ok());
}

#[test]
fn sealed_batches_are_appended_after_the_same_chain_checks() {
    sealed_appends_check_the_chain(&mut MemStore::new());
    let dir = tempfile::tempdir().unwrap();
    let mut sled = SledStore::open(dir.path()).unwrap();
    sealed_appends_check_the_chain(&mut sled);
    // one apply_batch and one flush per non-empty sealed batch (3 + 1)
    let stats = sled.stats();
    assert_eq!((stats.batches_applied, stats.flushes), (4, 4));
    let head = sled.head();
    drop(sled);
    let reopened = SledStore::open(dir.path()).unwrap();
    assert_eq!(reopened.head(), head);
    assert_eq!(read_verified(&reopened).len(), 17);
}

#[test]
fn stores_refuse_batches_that_do_not_continue_the_chain() {
    refuses_bad_batches(&mut MemStore::new());
    let dir = tempfile::tempdir().unwrap();
    let mut sled = SledStore::open(dir.path()).unwrap();
    refuses_bad_batches(&mut sled);
    drop(sled);
    assert_eq!(
        read_verified(&SledStore::open(dir.path()).unwrap()).len(),
        8
    );
}

#[test]
fn torn_last_record_is_reported_at_open() {
    let dir = tempfile::tempdir().unwrap();
    drop(fill(&mut SledStore::open(dir.path()).unwrap(), 5, 10));
    raw_log(dir.path(), |log| {
        let last = stored(log, 50);
        log.insert(50u64.to_be_bytes(), &last[..last.len() - 3])
            .unwrap();
    });
    let err = SledStore::open(dir.path()).err().unwrap();
    assert_eq!(err.corrupt_seq(), Some(50), "{err}");
}

#[test]
fn flipped_byte_near_the_tail_is_reported_at_open() {
    let dir = tempfile::tempdir().unwrap();
    drop(fill(&mut SledStore::open(dir.path()).unwrap(), 5, 10));
    for offset in [0usize, 9, 20, 60, 81, 85] {
        raw_log(dir.path(), |log| {
            let mut bytes = stored(log, 45);
            bytes[offset] ^= 0x10;
            log.insert(45u64.to_be_bytes(), bytes).unwrap();
        });
        let err = SledStore::open(dir.path()).err().unwrap();
        assert_eq!(err.corrupt_seq(), Some(45), "offset {offset}: {err}");
        raw_log(dir.path(), |log| {
            let mut bytes = stored(log, 45);
            bytes[offset] ^= 0x10;
            log.insert(45u64.to_be_bytes(), bytes).unwrap();
        });
        SledStore::open(dir.path()).unwrap();
    }
}

#[test]
fn missing_record_is_reported_at_open() {
    let dir = tempfile::tempdir().unwrap();
    drop(fill(&mut SledStore::open(dir.path()).unwrap(), 2, 10));
    raw_log(dir.path(), |log| {
        log.remove(17u64.to_be_bytes()).unwrap();
    });
    assert_eq!(
        SledStore::open(dir.path()).err().unwrap().corrupt_seq(),
        Some(17)
    );
}

#[test]
fn wrong_format_version_is_refused() {
    let dir = tempfile::tempdir().unwrap();
    drop(fill(&mut SledStore::open(dir.path()).unwrap(), 1, 3));
    {
        let db = raw_open(dir.path());
        let meta = db.open_tree("meta").unwrap();
        assert_eq!(
            meta.get("format_version").unwrap().unwrap().as_ref(),
            STORE_FORMAT_VERSION.to_le_bytes()
        );
        meta.insert("format_version", &2u32.to_le_bytes()[..])
            .unwrap();
        db.flush().unwrap();
    }
    assert!(matches!(
        SledStore::open(dir.path()),
        Err(StoreError::Format(_))
    ));
}

fn copy_dir(from: &Path, to: &Path) {
    std::fs::create_dir_all(to).unwrap();
    for entry in std::fs::read_dir(from).unwrap() {
        let entry = entry.unwrap();
        let target = to.join(entry.file_name());
        if entry.file_type().unwrap().is_dir() {
            copy_dir(&entry.path(), &target);
        } else {
            std::fs::copy(entry.path(), target).unwrap();
        }
    }
}

#[test]
fn stale_generating_snapshot_is_moved_aside_and_records_survive() {
    let dir = tempfile::tempdir().unwrap();
    let data = dir.path().join("data");
    let written = fill(&mut SledStore::open(&data).unwrap(), 4, 30);
    // given an incomplete sled snapshot, as a kill during open leaves
    let name = "snap.FFFFFFFFFFFFFFFF.generating";
    std::fs::write(data.join(name), b"half a snapshot").unwrap();
    // (plain sled refuses that directory: the test would catch a no-op)
    let copy = dir.path().join("copy");
    copy_dir(&data, &copy);
    assert!(
        sled::open(&copy).is_err(),
        "sled opened despite a stale .generating file"
    );
    // when opened, then it is kept aside and every record is there
    let store = SledStore::open(&data).unwrap();
    let aside = data.join(ASIDE_DIR).join(format!("{name}.aside-0"));
    assert_eq!(store.moved_aside(), std::slice::from_ref(&aside));
    assert_eq!(std::fs::read(&aside).unwrap(), b"half a snapshot");
    assert!(!data.join(name).exists());
    assert_eq!(read_verified(&store), written);
    // and a second stale file gets the next free name
    drop(store);
    std::fs::write(data.join(name), b"again").unwrap();
    let store = SledStore::open(&data).unwrap();
    assert_eq!(
        store.moved_aside(),
        [data.join(ASIDE_DIR).join(format!("{name}.aside-1"))]
    );
}

#[test]
fn snapshots_keep_the_newest_and_survive_reopen() {
    let dir = tempfile::tempdir().unwrap();
    {
        let mut store = SledStore::open(dir.path()).unwrap();
        assert_eq!(store.latest_snapshot().unwrap(), None);
        fill(&mut store, 1, 10);
        for seq in [3u64, 6, 9] {
            store
                .put_snapshot(seq, format!("state@{seq}").as_bytes())
                .unwrap();
        }
        assert!(matches!(
            store.put_snapshot(11, b"future"),
            Err(StoreError::Rejected { seq: 11, .. })
        ));
    }
    let store = SledStore::open(dir.path()).unwrap();
    assert_eq!(
        store.latest_snapshot().unwrap(),
        Some((9, b"state@9".to_vec()))
    );
    let db_snapshots = {
        drop(store);
        let db = raw_open(dir.path());
        db.open_tree("snapshots").unwrap().len()
    };
    assert_eq!(db_snapshots, taskledger_events::sled_store::SNAPSHOTS_KEPT);
}

#[test]
fn scans_clamp_stop_early_and_chunk() {
    let dir = tempfile::tempdir().unwrap();
    let mut store = SledStore::open(dir.path()).unwrap();
    let written = fill(&mut store, 3, 3000);
    let mut seen = Vec::new();
    store
        .scan(0, 5, &mut |seq, _| {
            seen.push(seq);
            ControlFlow::Continue(())
        })
        .unwrap();
    assert_eq!(seen, [1, 2, 3, 4, 5]);
    seen.clear();
    store
        .scan(8990, u64::MAX, &mut |seq, _| {
            seen.push(seq);
            if seq == 8995 {
                ControlFlow::Break(())
            } else {
                ControlFlow::Continue(())
            }
        })
        .unwrap();
    assert_eq!(seen, (8990..=8995).collect::<Vec<_>>());
    let range: Vec<_> = store.read_range(4000, 9500).map(|r| r.unwrap()).collect();
    assert_eq!(range.len(), 5001);
    assert!(range.iter().zip(&written[3999..]).all(|((_, a), b)| a == b));
}

#[test]
fn reader_follows_acknowledged_appends_from_another_thread() {
    let dir = tempfile::tempdir().unwrap();
    let mut store = SledStore::open(dir.path()).unwrap();
    let reader = store.reader();
    for _ in 0..3 {
        let head = store.append(&batch(store.tail(), 4)).unwrap();
        let r = reader.clone();
        let (seen_head, count) = std::thread::spawn(move || {
            let mut n = 0;
            r.scan(1, u64::MAX, &mut |_, _| {
                n += 1;
                ControlFlow::Continue(())
            })
            .unwrap();
            (r.head(), n)
        })
        .join()
        .unwrap();
        assert_eq!((seen_head, count), (head, head.seq));
    }
}

#[test]
fn records_are_read_by_seq_and_checked() {
    let dir = tempfile::tempdir().unwrap();
    // given a sled store, a reader of it and a memory store with the same records
    let mut store = SledStore::open(dir.path()).unwrap();
    let reader = store.reader();
    let mut mem = MemStore::new();
    let written = fill(&mut store, 3, 5);
    mem.append(&written).unwrap();
    // when each record is read by seq, then it is the sealed record
    for (i, bytes) in written.iter().enumerate() {
        let seq = i as u64 + 1;
        let expected = RawRecord::parse(bytes).unwrap().decode().unwrap();
        assert_eq!(store.record(seq).unwrap().as_ref(), Some(&expected));
        assert_eq!(reader.record(seq).unwrap().as_ref(), Some(&expected));
        assert_eq!(mem.record(seq).unwrap().as_ref(), Some(&expected));
    }
    // and seq 0 and seqs past the head are absent, not errors
    for seq in [0, 16, u64::MAX] {
        assert!(store.record(seq).unwrap().is_none());
        assert!(reader.record(seq).unwrap().is_none());
        assert!(mem.record(seq).unwrap().is_none());
    }
    drop((store, reader));
    // when a stored record is damaged on disk, reading it names its seq
    raw_log(dir.path(), |log| {
        let mut bad = stored(log, 7);
        let last = bad.len() - 1;
        bad[last] ^= 1;
        log.insert(7u64.to_be_bytes(), bad).unwrap();
        // and a record stored under another seq's key is refused too
        log.insert(9u64.to_be_bytes(), stored(log, 8)).unwrap();
    });
    // (open verifies only the tail window, which holds every record here,
    // so read the damaged tree through a reader made without that check)
    let db = raw_open(dir.path());
    let log = db.open_tree("log").unwrap();
    for seq in [7u64, 9] {
        let bytes = stored(&log, seq);
        let err = decode_stored(seq, &bytes).unwrap_err();
        assert_eq!(err.corrupt_seq(), Some(seq), "{err}");
    }
    assert!(decode_stored(8, &stored(&log, 8)).is_ok());
}

#[test]
fn torn_write_through_faulty_store_is_caught_on_restart() {
    // in memory
    let mut faulty = FaultyStore::new(MemStore::new());
    fill(&mut faulty, 3, 5);
    faulty.tear_next_append();
    let b = batch(faulty.tail(), 4);
    assert!(faulty.append(&b).unwrap_err().is_fatal());
    assert!(matches!(faulty.append(&b), Err(StoreError::Poisoned(_))));
    assert_eq!(
        faulty.into_inner().reopen().err().unwrap().corrupt_seq(),
        Some(19)
    );
    // on sled
    let dir = tempfile::tempdir().unwrap();
    let mut faulty = FaultyStore::new(SledStore::open(dir.path()).unwrap());
    fill(&mut faulty, 2, 5);
    faulty.tear_next_append();
    let b = batch(faulty.tail(), 1);
    assert!(faulty.append(&b).is_err());
    drop(faulty);
    assert_eq!(
        SledStore::open(dir.path()).err().unwrap().corrupt_seq(),
        Some(11)
    );
}

#[test]
fn flipped_byte_through_faulty_store_is_caught_on_restart() {
    let dir = tempfile::tempdir().unwrap();
    let mut faulty = FaultyStore::new(SledStore::open(dir.path()).unwrap());
    fill(&mut faulty, 2, 10);
    faulty.flip_byte(18, 100).unwrap();
    drop(faulty);
    assert_eq!(
        SledStore::open(dir.path()).err().unwrap().corrupt_seq(),
        Some(18)
    );
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 64, ..ProptestConfig::default() })]

    /// Crash at any flush: every acknowledged record survives a restart, the
    /// chain verifies, and a failed batch is either wholly there or absent.
    #[test]
    fn acknowledged_records_survive_a_failed_flush(
        sizes in proptest::collection::vec(1u64..20, 1..12),
        fail_at in 0u64..12,
        durable in any::<bool>(),
    ) {
        let mut faulty = FaultyStore::new(MemStore::new());
        let model = if durable { FailedFlush::BatchDurable } else { FailedFlush::NothingDurable };
        faulty.fail_after_appends(fail_at).failed_flush_leaves(model);
        let mut acked = Vec::new();
        let mut failed = None;
        for size in sizes {
            let b = batch(faulty.tail(), size);
            match faulty.append(&b) {
                Ok(head) => { acked.extend(b); prop_assert_eq!(head.seq, acked.len() as u64); }
                Err(e) => { prop_assert!(e.is_fatal()); failed = Some(b); break; }
            }
        }
        let restarted = faulty.into_inner().reopen().unwrap();
        let stored = read_verified(&restarted);
        prop_assert_eq!(&stored[..acked.len()], &acked[..]);
        let extra = &stored[acked.len()..];
        match (failed, durable) {
            (Some(b), true) => prop_assert_eq!(extra, &b[..]),
            _ => prop_assert!(extra.is_empty()),
        }
    }
}

#[test]
fn a_store_in_use_keeps_its_snapshot_files_when_another_open_waits() {
    // A server has the store open and may be writing `snap.*.generating`
    // at this moment: a second open (audit, export, flags) must not move
    // that file aside; it waits for sled's lock and then gives up.
    let dir = tempfile::tempdir().unwrap();
    let held = SledStore::open(dir.path()).unwrap();
    let in_flight = dir.path().join("snap.00000000000000AB.generating");
    std::fs::write(&in_flight, b"being written").unwrap();
    let err = SledStore::open(dir.path())
        .err()
        .expect("the store is in use");
    assert!(err.is_locked(), "{err}");
    assert!(in_flight.exists(), "a live snapshot file was moved aside");
    drop(held);
    // Once free, the stale file is moved aside at open, as before.
    let reopened = SledStore::open(dir.path()).unwrap();
    assert_eq!(reopened.moved_aside().len(), 1);
    assert!(!in_flight.exists());
}
