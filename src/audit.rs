//! The offline audit: replay every record, verifying the hash chain and
//! re-checking every rule (`State::apply`) and conservation, from a data
//! dir or from a portable export. Stops at the first bad seq and names it.
//! The export audit verifies the chain on one thread while it decodes and
//! applies on another (the two halves cost about the same); the order of
//! records and the first-failure semantics are those of a single pass.

use serde::Serialize;
use std::path::Path;
use std::sync::mpsc;
use std::time::{Duration, Instant};
use taskledger_events::store::LogStore;
use taskledger_events::{ChainVerifier, ExportError, ExportFault, RawRecord, export, hex};
use taskledger_projections::{FlagStatus, State, TaskStatus};

/// How often a long audit reports progress on stderr.
pub const PROGRESS_EVERY: Duration = Duration::from_secs(2);

#[derive(Debug, Serialize)]
pub struct Report {
    pub ok: bool,
    pub records: u64,
    pub head_seq: u64,
    pub head_hash: String,
    pub issued: u64,
    pub wallets_gift: u64,
    pub wallets_earned: u64,
    pub escrow: u64,
    pub frozen: u64,
    pub redeemed: u64,
    pub tasks: Vec<(String, u64)>,
    pub open_flags: u64,
    pub conservation: bool,
    /// The first bad seq and why, when `ok` is false.
    pub first_bad_seq: Option<u64>,
    pub error: Option<String>,
}

impl Report {
    fn of(state: &State, failure: Option<(u64, String)>) -> Report {
        let t = state.totals;
        let conservation = t.balanced();
        Report {
            ok: failure.is_none() && conservation,
            records: state.head_seq,
            head_seq: state.head_seq,
            head_hash: hex(&state.head_hash),
            issued: t.issued,
            wallets_gift: t.gift,
            wallets_earned: t.earned,
            escrow: t.escrow,
            frozen: t.frozen,
            redeemed: t.redeemed,
            tasks: TaskStatus::ALL
                .iter()
                .map(|s| (s.as_str().to_owned(), state.tasks_with_status(*s)))
                .collect(),
            open_flags: state
                .flags
                .values()
                .filter(|f| f.status == FlagStatus::Open)
                .count() as u64,
            conservation,
            first_bad_seq: failure.as_ref().map(|f| f.0),
            error: failure.map(|f| f.1),
        }
    }

    /// The human report.
    pub fn text(&self) -> String {
        let mut out = String::new();
        out.push_str(&format!(
            "records: {}\nhead: seq {} hash {}\n",
            self.records, self.head_seq, self.head_hash
        ));
        out.push_str(&format!(
            "credits: issued {}, wallets gift {}, wallets earned {}, escrow {}, frozen {}, redeemed {}\n",
            self.issued, self.wallets_gift, self.wallets_earned, self.escrow, self.frozen, self.redeemed
        ));
        let tasks: Vec<String> = self.tasks.iter().map(|(s, n)| format!("{s} {n}")).collect();
        out.push_str(&format!(
            "tasks: {}\nopen risk flags: {}\n",
            tasks.join(", "),
            self.open_flags
        ));
        // On a failure the figures above are those of the verified prefix
        // (seq 1 ..= head); the verdict on the whole log comes last.
        let scope = if self.first_bad_seq.is_some() {
            format!(" (verified prefix, seq 1..={})", self.head_seq)
        } else {
            String::new()
        };
        let verdict = if self.conservation { "ok" } else { "BROKEN" };
        out.push_str(&format!("conservation{scope}: {verdict}\n"));
        if let (Some(seq), Some(e)) = (self.first_bad_seq, &self.error) {
            out.push_str(&format!("FAILED at seq {seq}: {e}\n"));
        }
        out
    }
}

struct Progress {
    last: Instant,
}

impl Progress {
    fn tick(&mut self, seq: u64) {
        if seq.is_multiple_of(65_536) && self.last.elapsed() >= PROGRESS_EVERY {
            eprintln!("audit: {seq} records verified");
            self.last = Instant::now();
        }
    }
}

/// Audit a store from genesis.
pub fn audit_store(store: &dyn LogStore) -> Report {
    let mut state = State::new();
    let mut verifier = ChainVerifier::new();
    let mut failure = None;
    let mut progress = Progress {
        last: Instant::now(),
    };
    let scanned = store.scan(1, u64::MAX, &mut |_, b| {
        let seq = verifier.expected_seq();
        let step = verifier.next(b).map_err(|e| e.to_string());
        match step.and_then(|r| state.apply(r).map_err(|v| v.reason)) {
            Ok(()) => {
                progress.tick(seq);
                std::ops::ControlFlow::Continue(())
            }
            Err(e) => {
                failure = Some((seq, e));
                std::ops::ControlFlow::Break(())
            }
        }
    });
    if let Err(e) = scanned {
        failure = failure.or(Some((
            e.corrupt_seq().unwrap_or(state.head_seq + 1),
            e.to_string(),
        )));
    }
    Report::of(&state, failure)
}

/// Records the reading thread of [`audit_file`] hands over at once.
pub const AUDIT_BATCH_RECORDS: usize = 1024;
/// Batches in flight between the reading and the applying thread.
pub const AUDIT_BATCHES_IN_FLIGHT: usize = 8;

/// Chain-verified stored records, back to back, as the reader hands them to
/// the applier; the buffers go back and forth, so nothing is allocated per
/// record and nothing allocated by one thread is freed by the other.
#[derive(Default)]
struct RawBatch {
    bytes: Vec<u8>,
    /// End offset of each record in `bytes`.
    ends: Vec<usize>,
    /// The seq of the first record.
    first_seq: u64,
    /// What stopped the reader after these records, if anything did.
    error: Option<ExportError>,
}

/// Audit a portable export file. Two threads, one order: a reader frames
/// and chain-verifies records (seq, link, blake3 hash, time) and hands their
/// bytes over in batches; this thread decodes them and applies them in the
/// same order, with every rule and conservation checked (`State::apply`).
/// The first bad seq either finds ends the audit, as a single pass would.
pub fn audit_file(path: &Path) -> Report {
    let records = match export::records(path) {
        Ok(r) => r,
        Err(e) => return Report::of(&State::new(), Some((e.seq().unwrap_or(1), e.to_string()))),
    };
    let (full_tx, full_rx) = mpsc::sync_channel::<RawBatch>(AUDIT_BATCHES_IN_FLIGHT);
    let (free_tx, free_rx) = mpsc::channel::<RawBatch>();
    let (state, failure) = std::thread::scope(|scope| {
        let reader = std::thread::Builder::new()
            .name("audit-reader".into())
            .spawn_scoped(scope, move || read_batches(records, full_tx, free_rx));
        let reader = match reader {
            Ok(r) => r,
            Err(e) => {
                let why = format!("cannot start the reader thread: {e}");
                return (State::new(), Some((1, why)));
            }
        };
        let mut state = State::new();
        let mut progress = Progress {
            last: Instant::now(),
        };
        let mut failure = None;
        'batches: for batch in full_rx.iter() {
            let mut start = 0;
            for (seq, &end) in (batch.first_seq..).zip(&batch.ends) {
                let decoded = RawRecord::parse(&batch.bytes[start..end]).and_then(|r| r.decode());
                start = end;
                let record = match decoded {
                    Ok(record) => record,
                    Err(e) => {
                        let e = ExportError::Bad {
                            seq,
                            fault: ExportFault::Record(e),
                        };
                        failure = Some((seq, e.to_string()));
                        break 'batches;
                    }
                };
                if let Err(v) = state.apply(record) {
                    failure = Some((v.seq, v.reason));
                    break 'batches;
                }
                progress.tick(seq);
            }
            if let Some(e) = &batch.error {
                failure = Some((e.seq().unwrap_or(state.head_seq + 1), e.to_string()));
                break;
            }
            // The reader may be gone already; then the buffer just drops.
            let _ = free_tx.send(batch);
        }
        // Hanging up stops a reader that is still going.
        drop(full_rx);
        let complete = reader
            .join()
            .unwrap_or_else(|panic| std::panic::resume_unwind(panic));
        if failure.is_none() && !complete {
            failure = Some((
                state.head_seq + 1,
                "export ended without a valid footer".into(),
            ));
        }
        (state, failure)
    });
    Report::of(&state, failure)
}

/// The reading side of [`audit_file`]: send chain-verified record bytes in
/// batches until the file ends, fails or the applier hangs up. Returns
/// whether the footer was reached and checked out.
fn read_batches<R: std::io::Read>(
    mut records: export::ExportRecords<R>,
    full: mpsc::SyncSender<RawBatch>,
    free: mpsc::Receiver<RawBatch>,
) -> bool {
    loop {
        let mut batch = free.try_recv().unwrap_or_default();
        batch.bytes.clear();
        batch.ends.clear();
        batch.first_seq = records.head().seq + 1;
        let mut done = false;
        while batch.ends.len() < AUDIT_BATCH_RECORDS {
            match records.next_verified_bytes() {
                Ok(Some(bytes)) => {
                    batch.bytes.extend_from_slice(bytes);
                    batch.ends.push(batch.bytes.len());
                }
                Ok(None) => {
                    done = true;
                    break;
                }
                Err(e) => {
                    batch.error = Some(e);
                    done = true;
                    break;
                }
            }
        }
        if full.send(batch).is_err() {
            return false;
        }
        if done {
            return records.is_complete();
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use taskledger_events::record::{HEADER_BYTES, record_hash};
    use taskledger_events::{
        AccountId, AccountKind, AccountRegistered, Event, Head, TaskId, TaskReopened, codec,
    };

    fn register(n: u64) -> Event {
        Event::AccountRegistered(AccountRegistered {
            account_id: AccountId::from_u128(n.into()),
            kind: AccountKind::Human,
            name: format!("owner {n}"),
            email: None,
            compute_source: None,
            compute_attestation: None,
            metadata: None,
            key_hash: *blake3::hash(&n.to_le_bytes()).as_bytes(),
            client_addr: None,
        })
    }

    /// Stored record bytes over arbitrary event bytes, hashing correctly.
    fn sealed_bytes(head: Head, event_bytes: &[u8]) -> (Head, Vec<u8>) {
        let seq = head.seq + 1;
        let at_ms = 1_000 + seq;
        let hash = record_hash(&head.hash, seq, at_ms, event_bytes);
        let mut b = Vec::with_capacity(HEADER_BYTES + event_bytes.len());
        b.extend_from_slice(&seq.to_le_bytes());
        b.extend_from_slice(&at_ms.to_le_bytes());
        b.extend_from_slice(&head.hash);
        b.extend_from_slice(&hash);
        b.extend_from_slice(&(event_bytes.len() as u32).to_le_bytes());
        b.extend_from_slice(event_bytes);
        (Head { seq, hash }, b)
    }

    /// An export of `count` records: registrations, except where `special`
    /// gives other event bytes; `corrupt` flips a byte of that seq after
    /// sealing. The footer is valid.
    fn export_file(
        dir: &Path,
        count: u64,
        special: &[(u64, Vec<u8>)],
        corrupt: Option<u64>,
    ) -> std::path::PathBuf {
        let mut out = Vec::new();
        out.extend_from_slice(export::MAGIC);
        out.extend_from_slice(&export::EXPORT_FORMAT_VERSION.to_le_bytes());
        let header: [u8; 12] = out[..12].try_into().unwrap();
        let mut head = Head::EMPTY;
        for seq in 1..=count {
            let event = match special.iter().find(|(s, _)| *s == seq) {
                Some((_, bytes)) => bytes.clone(),
                None => codec::encode_event(&register(seq)).unwrap(),
            };
            let (next, mut bytes) = sealed_bytes(head, &event);
            head = next;
            if corrupt == Some(seq) {
                let last = bytes.len() - 1;
                bytes[last] ^= 0x40;
            }
            out.extend_from_slice(&(bytes.len() as u32).to_le_bytes());
            out.extend_from_slice(&bytes);
        }
        let mut h = blake3::Hasher::new_derive_key(export::FOOTER_CHECKSUM_CONTEXT);
        h.update(&header);
        h.update(&export::FOOTER_MARKER.to_le_bytes());
        h.update(&count.to_le_bytes());
        h.update(&head.hash);
        out.extend_from_slice(&export::FOOTER_MARKER.to_le_bytes());
        out.extend_from_slice(&count.to_le_bytes());
        out.extend_from_slice(&head.hash);
        out.extend_from_slice(h.finalize().as_bytes());
        let path = dir.join(format!("{count}-{special:?}-{corrupt:?}.log").replace(' ', ""));
        std::fs::write(&path, out).unwrap();
        path
    }

    /// The same audit in one pass on one thread: the reference.
    fn single_pass(path: &Path) -> (bool, Option<u64>, u64) {
        let mut state = State::new();
        let mut records = export::records(path).unwrap();
        let mut bad = None;
        for r in records.by_ref() {
            match r
                .map_err(|e| e.seq())
                .and_then(|r| state.apply(r).map_err(|v| Some(v.seq)))
            {
                Ok(()) => {}
                Err(seq) => {
                    bad = seq;
                    break;
                }
            }
        }
        if bad.is_none() && !records.is_complete() {
            bad = Some(state.head_seq + 1);
        }
        (bad.is_none(), bad, state.head_seq)
    }

    fn reopen_unknown_task() -> Vec<u8> {
        codec::encode_event(&Event::TaskReopened(TaskReopened {
            task_id: TaskId::from_u128(9),
        }))
        .unwrap()
    }

    #[test]
    fn the_two_thread_audit_names_the_first_bad_seq_as_one_pass_would() {
        let dir = tempfile::tempdir().unwrap();
        let n = 3 * AUDIT_BATCH_RECORDS as u64 + 17;
        let first = AUDIT_BATCH_RECORDS as u64 + 1;
        // (event bytes at seqs, seq whose hash breaks, expected first bad seq)
        type Case = (Vec<(u64, Vec<u8>)>, Option<u64>, Option<u64>);
        let cases: Vec<Case> = vec![
            // a clean log
            (vec![], None, None),
            // undecodable event bytes that hash correctly, first of a batch
            (vec![(first, vec![0xff; 5])], None, Some(first)),
            // a rule broken before an undecodable record
            (
                vec![(1500, reopen_unknown_task()), (1600, vec![0xff; 3])],
                None,
                Some(1500),
            ),
            // an undecodable record before a broken rule
            (
                vec![(1500, vec![0xff; 3]), (1600, reopen_unknown_task())],
                None,
                Some(1500),
            ),
            // a hash break before a broken rule, and after one
            (vec![(2050, reopen_unknown_task())], Some(2000), Some(2000)),
            (vec![(1990, reopen_unknown_task())], Some(2000), Some(1990)),
            // the last record broken
            (vec![(n, reopen_unknown_task())], None, Some(n)),
        ];
        for (special, corrupt, expected) in cases {
            let path = export_file(dir.path(), n, &special, corrupt);
            let report = audit_file(&path);
            let (ok, bad, head) = single_pass(&path);
            assert_eq!(report.first_bad_seq, expected, "{special:?} {corrupt:?}");
            assert_eq!(
                (report.ok, report.first_bad_seq, report.head_seq),
                (ok, bad, head),
                "differs from one pass: {special:?} {corrupt:?}: {:?}",
                report.error
            );
        }
        // and a file cut inside a record names that record
        let path = export_file(dir.path(), n, &[], None);
        let bytes = std::fs::read(&path).unwrap();
        std::fs::write(&path, &bytes[..bytes.len() - export::FOOTER_BYTES - 3]).unwrap();
        let report = audit_file(&path);
        assert_eq!(report.first_bad_seq, Some(n));
        assert_eq!(single_pass(&path).1, Some(n));
    }
}
