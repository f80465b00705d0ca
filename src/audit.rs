//! The offline audit: replay every record, verifying the hash chain and
//! re-checking every rule (`State::apply`) and conservation, from a data
//! dir or from a portable export. Stops at the first bad seq and names it.

use serde::Serialize;
use std::path::Path;
use std::time::{Duration, Instant};
use taskledger_events::store::LogStore;
use taskledger_events::{ChainVerifier, export, hex};
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
        if let (Some(seq), Some(e)) = (self.first_bad_seq, &self.error) {
            out.push_str(&format!("FAILED at seq {seq}: {e}\n"));
        }
        out.push_str(if self.conservation {
            "conservation: ok\n"
        } else {
            "conservation: BROKEN\n"
        });
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

/// Audit a portable export file.
pub fn audit_file(path: &Path) -> Report {
    let mut state = State::new();
    let mut progress = Progress {
        last: Instant::now(),
    };
    let mut records = match export::records(path) {
        Ok(r) => r,
        Err(e) => return Report::of(&state, Some((e.seq().unwrap_or(1), e.to_string()))),
    };
    let mut failure = None;
    for r in records.by_ref() {
        match r {
            Ok(rec) => {
                let seq = rec.seq;
                if let Err(v) = state.apply(rec) {
                    failure = Some((v.seq, v.reason));
                    break;
                }
                progress.tick(seq);
            }
            Err(e) => {
                failure = Some((e.seq().unwrap_or(state.head_seq + 1), e.to_string()));
                break;
            }
        }
    }
    if failure.is_none() && !records.is_complete() {
        failure = Some((
            state.head_seq + 1,
            "export ended without a valid footer".into(),
        ));
    }
    Report::of(&state, failure)
}
