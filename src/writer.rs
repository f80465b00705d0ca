//! The single writer: the only code that appends to the log.
//!
//! It runs on its own thread and owns the working `State` and the store.
//! Commands arrive on a bounded queue with a reply channel. The writer
//! drains what is queued (up to [`BATCH_COMMANDS_MAX`]), decides each in
//! order against the working state, seals and applies its events, appends
//! the whole batch with one flush (group commit), then applies the batch to
//! the read view, broadcasts the records and answers. A command is answered
//! only after the flush that holds its events.
//!
//! A failed append is fatal: the writer poisons itself and answers every
//! later command `unavailable`, rather than guess what is on disk. It must
//! never: run slow work (verification, network calls), read the clock
//! anywhere but at the start of a batch, or answer before the flush.

use crate::clock::Clock;
use crate::commands::{Command, Ctx, Policy, decide};
use crate::error::DomainError;
use std::sync::atomic::Ordering;
use std::sync::{Arc, RwLock};
use taskledger_events::store::LogStore;
use taskledger_events::{Event, IdempotencyRecorded, Principal, Record, Sealed, seal_record};
use taskledger_projections::{State, snapshot};
use tokio::sync::{broadcast, mpsc, oneshot};

/// Commands decided and flushed together at most.
pub const BATCH_COMMANDS_MAX: usize = 512;
/// Records after which the writer stores a projection snapshot, by default.
pub const SNAPSHOT_EVERY_RECORDS: u64 = 250_000;

/// How the writer runs, apart from the market's rules.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct WriterSettings {
    /// Store a projection snapshot every this many records (a restart
    /// replays at most about this many); 0: only at shutdown.
    pub snapshot_every_records: u64,
}

impl Default for WriterSettings {
    fn default() -> Self {
        WriterSettings {
            snapshot_every_records: SNAPSHOT_EVERY_RECORDS,
        }
    }
}

/// An idempotency key and the fingerprint of the request it came with.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Idempotency {
    pub key: String,
    pub request_hash: [u8; 32],
}

/// What a command produced: its records, in order. `replayed` is true when
/// an idempotency key matched an earlier command and nothing was appended.
#[derive(Clone, Debug)]
pub struct Outcome {
    pub records: Vec<Arc<Record>>,
    pub replayed: bool,
}

impl Outcome {
    pub fn events(&self) -> impl Iterator<Item = &Event> {
        self.records.iter().map(|r| &r.event)
    }
}

/// Why a command got no outcome.
#[derive(Clone, Debug, thiserror::Error, PartialEq, Eq)]
pub enum ServiceError {
    #[error(transparent)]
    Domain(#[from] DomainError),
    /// The store failed; the writer has stopped taking commands.
    #[error("storage failure, the market is read-only: {0}")]
    Storage(String),
}

impl ServiceError {
    pub fn code(&self) -> &'static str {
        match self {
            ServiceError::Domain(e) => e.code(),
            ServiceError::Storage(_) => "unavailable",
        }
    }
}

pub type Reply = oneshot::Sender<Result<Outcome, ServiceError>>;

/// A staged command's place in the batch (first record, count), or its refusal.
type Staged = Result<(usize, usize), ServiceError>;

pub struct Request {
    pub principal: Principal,
    pub idempotency: Option<Idempotency>,
    pub command: Command,
    pub reply: Reply,
}

pub(crate) enum Message {
    Command(Box<Request>),
    /// Flush, store a snapshot, stop; answered when done.
    Shutdown(oneshot::Sender<Result<(), ServiceError>>),
}

pub(crate) struct Writer {
    state: State,
    store: Box<dyn LogStore>,
    policy: Policy,
    settings: WriterSettings,
    clock: Arc<dyn Clock>,
    view: Arc<RwLock<State>>,
    live: broadcast::Sender<Arc<Record>>,
    poisoned: Option<String>,
    last_snapshot_seq: u64,
    /// The snapshot being encoded on its own thread, when one is.
    snapshot: Option<std::sync::mpsc::Receiver<Encoded>>,
    metrics: Arc<crate::service::WriterMetrics>,
}

/// A snapshot's seq and its bytes, or why encoding failed.
type Encoded = (u64, Result<Vec<u8>, String>);

impl Writer {
    #[allow(clippy::too_many_arguments)]
    pub(crate) fn new(
        state: State,
        store: Box<dyn LogStore>,
        policy: Policy,
        settings: WriterSettings,
        clock: Arc<dyn Clock>,
        view: Arc<RwLock<State>>,
        live: broadcast::Sender<Arc<Record>>,
        last_snapshot_seq: u64,
        metrics: Arc<crate::service::WriterMetrics>,
    ) -> Self {
        metrics
            .snapshot_seq
            .store(last_snapshot_seq, Ordering::Relaxed);
        Writer {
            state,
            store,
            policy,
            settings,
            clock,
            view,
            live,
            poisoned: None,
            last_snapshot_seq,
            snapshot: None,
            metrics,
        }
    }

    /// The writer loop; returns when shut down or when every sender is gone.
    pub(crate) fn run(mut self, mut rx: mpsc::Receiver<Message>) {
        let mut batch = Vec::with_capacity(BATCH_COMMANDS_MAX);
        while let Some(first) = rx.blocking_recv() {
            let mut shutdown = None;
            match first {
                Message::Command(r) => batch.push(*r),
                Message::Shutdown(done) => shutdown = Some(done),
            }
            while shutdown.is_none() && batch.len() < BATCH_COMMANDS_MAX {
                match rx.try_recv() {
                    Ok(Message::Command(r)) => batch.push(*r),
                    Ok(Message::Shutdown(done)) => shutdown = Some(done),
                    Err(_) => break,
                }
            }
            if !batch.is_empty() {
                self.process(std::mem::take(&mut batch));
            }
            if let Some(done) = shutdown {
                // Commands still queued behind the shutdown are refused, not lost:
                // nothing of theirs was appended.
                rx.close();
                while let Ok(m) = rx.try_recv() {
                    if let Message::Command(r) = m {
                        let _ = r.reply.send(Err(DomainError::Unavailable(
                            "the market is shutting down".into(),
                        )
                        .into()));
                    }
                }
                let _ = done.send(self.finish());
                return;
            }
        }
        let _ = self.finish();
    }

    fn finish(&mut self) -> Result<(), ServiceError> {
        if self.poisoned.is_some() {
            return Err(ServiceError::Storage(
                "not flushed: the store failed earlier".into(),
            ));
        }
        self.store
            .flush()
            .map_err(|e| ServiceError::Storage(e.to_string()))?;
        if self.state.head_seq > self.last_snapshot_seq {
            let bytes =
                snapshot::encode(&self.state).map_err(|e| ServiceError::Storage(e.to_string()))?;
            self.store_snapshot(self.state.head_seq, &bytes)?;
        }
        Ok(())
    }

    /// Store a snapshot that came back encoded; every
    /// [`WriterSettings::snapshot_every_records`], start the next one on a
    /// thread of its own, which copies the read view and encodes the copy:
    /// on a big market encoding takes hundreds of milliseconds and belongs
    /// nowhere near the writer, which meanwhile decides and flushes (only
    /// applying a batch to the view waits, and only for the copy).
    fn snapshot_between_batches(&mut self) {
        if let Some(encoding) = &self.snapshot {
            match encoding.try_recv() {
                Err(std::sync::mpsc::TryRecvError::Empty) => return,
                Err(std::sync::mpsc::TryRecvError::Disconnected) => self.snapshot = None,
                Ok((seq, encoded)) => {
                    self.snapshot = None;
                    let stored = encoded.and_then(|bytes| {
                        self.store_snapshot(seq, &bytes).map_err(|e| e.to_string())
                    });
                    if let Err(e) = stored {
                        tracing::warn!(error = %e, "snapshot failed; will retry at the next interval");
                    }
                }
            }
        }
        let every = self.settings.snapshot_every_records;
        if every == 0 || self.state.head_seq < self.last_snapshot_seq.saturating_add(every) {
            return;
        }
        let (back, encoding) = std::sync::mpsc::channel();
        let view = self.view.clone();
        let spawned = std::thread::Builder::new()
            .name("taskledger-snapshot".into())
            .spawn(move || {
                let state = view.read().unwrap_or_else(|p| p.into_inner()).clone();
                let encoded = snapshot::encode(&state).map_err(|e| e.to_string());
                let _ = back.send((state.head_seq, encoded));
            });
        match spawned {
            Ok(_) => self.snapshot = Some(encoding),
            Err(e) => tracing::warn!(error = %e, "cannot start the snapshot thread"),
        }
    }

    /// Store a snapshot unless a newer one is stored already.
    fn store_snapshot(&mut self, seq: u64, bytes: &[u8]) -> Result<(), ServiceError> {
        if seq <= self.last_snapshot_seq {
            return Ok(());
        }
        self.store
            .put_snapshot(seq, bytes)
            .map_err(|e| ServiceError::Storage(e.to_string()))?;
        tracing::info!(seq, bytes = bytes.len(), "snapshot stored");
        self.last_snapshot_seq = seq;
        self.metrics.snapshot_seq.store(seq, Ordering::Relaxed);
        Ok(())
    }

    fn process(&mut self, batch: Vec<Request>) {
        if let Some(why) = self.poisoned.as_deref().or(self.store.read_only()) {
            for r in batch {
                let _ = r.reply.send(Err(ServiceError::Storage(why.to_owned())));
            }
            return;
        }
        let durable_seq = self.state.head_seq;
        // Time never goes backwards, whatever the machine's clock does.
        let now = self.clock.now_ms().max(self.state.last_at_ms);
        let mut bytes: Vec<Sealed> = Vec::new();
        let mut pending: Vec<Arc<Record>> = Vec::new();
        // (reply, first index into `pending`, count) or an immediate answer.
        let mut answers: Vec<(Reply, Staged)> = Vec::with_capacity(batch.len());
        let mut replays: Vec<(Reply, Result<Outcome, ServiceError>)> = Vec::new();
        for req in batch {
            let _span = tracing::debug_span!("command", name = req.command.name(), principal = ?req.principal).entered();
            if let Some(idem) = &req.idempotency {
                let key = (req.principal.clone(), idem.key.clone());
                if let Some(entry) = self.state.idempotency.get(&key) {
                    let answer = if entry.request_hash != idem.request_hash {
                        Err(DomainError::Conflict(
                            "idempotency key reused for a different request".into(),
                        )
                        .into())
                    } else {
                        self.replay(entry.first_seq, entry.events, durable_seq, &pending)
                    };
                    replays.push((req.reply, answer));
                    continue;
                }
            }
            let ctx = Ctx {
                principal: &req.principal,
                now_ms: now,
                policy: &self.policy,
            };
            let mut events = match decide(&self.state, ctx, &req.command) {
                Ok(events) => events,
                Err(e) => {
                    answers.push((req.reply, Err(e.into())));
                    continue;
                }
            };
            // The answer is the command's own events, without the marker.
            let answer_len = events.len();
            if let Some(idem) = req.idempotency {
                let n = events.len() as u32;
                events.push(Event::IdempotencyRecorded(IdempotencyRecorded {
                    principal: req.principal.clone(),
                    key: idem.key,
                    request_hash: idem.request_hash,
                    events: n,
                }));
            }
            let start = pending.len();
            match self.stage(now, events, &mut bytes, &mut pending) {
                Ok(()) => answers.push((req.reply, Ok((start, answer_len)))),
                Err(e) => {
                    // decide and apply disagree: a bug. Undo this command's
                    // events and refuse it; the rest of the batch stands.
                    tracing::error!(error = %e, "decided events failed apply; command refused");
                    bytes.truncate(start);
                    pending.truncate(start);
                    self.restore(&pending);
                    answers.push((
                        req.reply,
                        Err(DomainError::Conflict(format!("internal rule conflict: {e}")).into()),
                    ));
                }
            }
        }
        if !bytes.is_empty() {
            let started = std::time::Instant::now();
            if let Err(e) = self.store.append_sealed(&bytes) {
                let why = format!("append of {} records failed: {e}", bytes.len());
                tracing::error!(%why, "store failed; the writer stops taking commands");
                self.poisoned = Some(why.clone());
                for (reply, _) in answers {
                    let _ = reply.send(Err(ServiceError::Storage(why.clone())));
                }
                for (reply, _) in replays {
                    let _ = reply.send(Err(ServiceError::Storage(why.clone())));
                }
                return;
            }
            self.metrics.record_batch(
                answers.len() + replays.len(),
                pending.len(),
                started.elapsed(),
            );
            {
                // Poisoning of the lock cannot leave a half-applied view
                // behind: apply either completes or panics the writer.
                let mut view = self.view.write().unwrap_or_else(|p| p.into_inner());
                for r in &pending {
                    if let Err(v) = view.apply_ref(r) {
                        // The working state accepted this record; the view
                        // must too. Stop rather than serve a wrong view.
                        panic!("read view rejected a record the writer applied: {v}");
                    }
                }
            }
            for r in &pending {
                let _ = self.live.send(r.clone());
            }
        }
        for (reply, answer) in answers {
            let outcome = answer.map(|(start, n)| Outcome {
                records: pending[start..start + n].to_vec(),
                replayed: false,
            });
            let _ = reply.send(outcome);
        }
        for (reply, answer) in replays {
            let _ = reply.send(answer);
        }
        self.snapshot_between_batches();
    }

    /// Seal and apply a command's events to the working state.
    fn stage(
        &mut self,
        now: u64,
        events: Vec<Event>,
        bytes: &mut Vec<Sealed>,
        pending: &mut Vec<Arc<Record>>,
    ) -> Result<(), String> {
        for event in events {
            // Encoded and hashed once here; the store appends these bytes
            // without hashing them again.
            let (record, b) =
                seal_record(self.state.head(), now, event).map_err(|e| e.to_string())?;
            self.state.apply_ref(&record).map_err(|v| v.to_string())?;
            bytes.push(b);
            pending.push(Arc::new(record));
        }
        Ok(())
    }

    /// Rebuild the working state as the read view (everything durable) plus
    /// `pending`. Rare: only after a decide/apply disagreement.
    fn restore(&mut self, pending: &[Arc<Record>]) {
        let mut state = self.view.read().unwrap_or_else(|p| p.into_inner()).clone();
        for r in pending {
            if let Err(v) = state.apply_ref(r) {
                panic!("restoring the working state failed: {v}");
            }
        }
        self.state = state;
    }

    /// The records a command with this idempotency key appended before.
    fn replay(
        &self,
        first_seq: u64,
        events: u32,
        durable_seq: u64,
        pending: &[Arc<Record>],
    ) -> Result<Outcome, ServiceError> {
        let last = first_seq + u64::from(events) - 1;
        let mut records = Vec::with_capacity(events as usize);
        let mut bad = None;
        if first_seq <= durable_seq {
            self.store
                .scan(first_seq, last.min(durable_seq), &mut |_, b| {
                    match taskledger_events::RawRecord::parse(b).and_then(|r| r.decode()) {
                        Ok(r) => records.push(Arc::new(r)),
                        Err(e) => bad = Some(e.to_string()),
                    }
                    std::ops::ControlFlow::Continue(())
                })
                .map_err(|e| ServiceError::Storage(e.to_string()))?;
        }
        if let Some(e) = bad {
            return Err(ServiceError::Storage(e));
        }
        records.extend(
            pending
                .iter()
                .filter(|r| r.seq >= first_seq && r.seq <= last)
                .cloned(),
        );
        Ok(Outcome {
            records,
            replayed: true,
        })
    }
}
