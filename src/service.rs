//! The in-process service: opens the store, loads the newest snapshot and
//! replays the tail, starts the single writer on its own thread, and hands
//! out a cloneable [`Service`] that the HTTP and MCP layers call.
//!
//! Writes go through the writer's bounded queue (a full queue answers
//! `overloaded` at once); reads use the read view, which the writer updates
//! after each flushed batch, so readers never wait on a flush.

use crate::clock::Clock;
use crate::commands::{Command, Policy};
use crate::error::DomainError;
use crate::writer::{Idempotency, Message, Outcome, Request, ServiceError, Writer, WriterSettings};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, RwLock, RwLockReadGuard};
use std::time::Duration;
use taskledger_events::store::LogStore;
use taskledger_events::{ChainVerifier, Principal, Record};
use taskledger_projections::{State, snapshot};
use tokio::sync::{broadcast, mpsc, oneshot};

/// Commands waiting for the writer at most; past that, `overloaded`.
pub const QUEUE_COMMANDS_MAX: usize = 4096;
/// Records kept for slow live subscribers before they lag.
pub const LIVE_RECORDS_MAX: usize = 4096;

/// Counters the writer keeps for `/metrics` and benchmarks.
#[derive(Debug, Default)]
pub struct WriterMetrics {
    pub batches: AtomicU64,
    pub commands: AtomicU64,
    pub records: AtomicU64,
    pub append_micros: AtomicU64,
    /// Seq of the newest stored projection snapshot (0: none yet).
    pub snapshot_seq: AtomicU64,
    /// Flushed batches by record count: bucket `i` holds batches of at most
    /// `BATCH_BUCKETS[i]` records.
    pub batch_buckets: [AtomicU64; BATCH_BUCKETS.len()],
}

/// Upper bounds of the batch-size buckets; the last catches the rest.
pub const BATCH_BUCKETS: [u64; 12] = [1, 2, 4, 8, 16, 32, 64, 128, 256, 512, 1024, u64::MAX];

impl WriterMetrics {
    pub(crate) fn record_batch(&self, commands: usize, records: usize, took: Duration) {
        self.batches.fetch_add(1, Ordering::Relaxed);
        self.commands.fetch_add(commands as u64, Ordering::Relaxed);
        self.records.fetch_add(records as u64, Ordering::Relaxed);
        self.append_micros
            .fetch_add(took.as_micros() as u64, Ordering::Relaxed);
        let i = BATCH_BUCKETS
            .iter()
            .position(|b| records as u64 <= *b)
            .unwrap_or(BATCH_BUCKETS.len() - 1);
        self.batch_buckets[i].fetch_add(1, Ordering::Relaxed);
    }

    /// Batches per size bucket, as `(upper bound, count)`; cumulative like a
    /// Prometheus histogram (`+Inf` last).
    pub fn batch_sizes(&self) -> Vec<(String, u64)> {
        let mut total = 0;
        BATCH_BUCKETS
            .iter()
            .zip(&self.batch_buckets)
            .map(|(b, c)| {
                total += c.load(Ordering::Relaxed);
                let le = if *b == u64::MAX {
                    "+Inf".to_owned()
                } else {
                    b.to_string()
                };
                (le, total)
            })
            .collect()
    }
}

#[derive(Debug, thiserror::Error)]
pub enum OpenError {
    #[error(transparent)]
    Store(#[from] taskledger_events::StoreError),
    #[error("snapshot at seq {seq} is unusable: {reason}")]
    Snapshot { seq: u64, reason: String },
    #[error("log does not replay: {0}")]
    Replay(String),
}

/// Load the newest snapshot (if it matches the log) and replay the tail. A
/// snapshot of an older `State` layout is skipped: the state is replayed
/// from genesis, and the writer stores a current snapshot later.
pub fn load_state(store: &dyn LogStore) -> Result<(State, u64), OpenError> {
    let mut state = State::new();
    let mut snapshot_seq = 0;
    let latest = match store.latest_snapshot()? {
        Some((seq, bytes)) if !snapshot::is_current(&bytes) => {
            tracing::warn!(
                seq,
                "the stored snapshot is of an older state layout; replaying from genesis"
            );
            None
        }
        latest => latest,
    };
    if let Some((seq, bytes)) = latest {
        let s = snapshot::decode(&bytes).map_err(|e| OpenError::Snapshot {
            seq,
            reason: e.to_string(),
        })?;
        let mut stored_hash = None;
        store.scan(seq, seq, &mut |_, b| {
            stored_hash = taskledger_events::RawRecord::parse(b).ok().map(|r| r.hash);
            std::ops::ControlFlow::Break(())
        })?;
        if s.head_seq != seq || stored_hash != Some(s.head_hash) {
            return Err(OpenError::Snapshot {
                seq,
                reason: "does not match the log's record at its seq".into(),
            });
        }
        state = s;
        snapshot_seq = seq;
    }
    replay_into(store, &mut state, u64::MAX)?;
    Ok((state, snapshot_seq))
}

/// Verify and apply stored records after `state`'s head, up to `to`.
pub fn replay_into(store: &dyn LogStore, state: &mut State, to: u64) -> Result<(), OpenError> {
    let mut verifier = ChainVerifier::resume(state.head(), state.last_at_ms);
    let mut failure = None;
    store.scan(state.head_seq + 1, to, &mut |_, b| {
        let step = verifier
            .next(b)
            .map_err(|e| format!("seq {}: {e}", verifier.expected_seq()));
        match step.and_then(|r| state.apply(r).map_err(|v| v.to_string())) {
            Ok(()) => std::ops::ControlFlow::Continue(()),
            Err(e) => {
                failure = Some(e);
                std::ops::ControlFlow::Break(())
            }
        }
    })?;
    match failure {
        Some(e) => Err(OpenError::Replay(e)),
        None => Ok(()),
    }
}

/// A handle on the running market. Cheap to clone.
#[derive(Clone)]
pub struct Service {
    tx: mpsc::Sender<Message>,
    view: Arc<RwLock<State>>,
    live: broadcast::Sender<Arc<Record>>,
    metrics: Arc<WriterMetrics>,
}

impl Service {
    /// Start the writer over `store` with the default [`WriterSettings`].
    /// Must be called inside a tokio runtime only for the async methods;
    /// the writer itself is a plain thread.
    pub fn start(
        store: Box<dyn LogStore>,
        policy: Policy,
        clock: Arc<dyn Clock>,
    ) -> Result<(Service, std::thread::JoinHandle<()>), OpenError> {
        Self::start_with(store, policy, clock, WriterSettings::default())
    }

    /// [`Service::start`] with the writer's own settings.
    pub fn start_with(
        store: Box<dyn LogStore>,
        policy: Policy,
        clock: Arc<dyn Clock>,
        settings: WriterSettings,
    ) -> Result<(Service, std::thread::JoinHandle<()>), OpenError> {
        let (state, snapshot_seq) = load_state(store.as_ref())?;
        let view = Arc::new(RwLock::new(state.clone()));
        let (live, _) = broadcast::channel(LIVE_RECORDS_MAX);
        let (tx, rx) = mpsc::channel(QUEUE_COMMANDS_MAX);
        let metrics = Arc::new(WriterMetrics::default());
        let writer = Writer::new(
            state,
            store,
            policy,
            settings,
            clock,
            view.clone(),
            live.clone(),
            snapshot_seq,
            metrics.clone(),
        );
        let handle = std::thread::Builder::new()
            .name("taskledger-writer".into())
            .spawn(move || writer.run(rx))
            .map_err(|e| OpenError::Replay(format!("cannot start the writer thread: {e}")))?;
        Ok((
            Service {
                tx,
                view,
                live,
                metrics,
            },
            handle,
        ))
    }

    /// Run a command; answered after the flush that holds its events.
    pub async fn execute(
        &self,
        principal: Principal,
        idempotency: Option<Idempotency>,
        command: Command,
    ) -> Result<Outcome, ServiceError> {
        let (reply, rx) = oneshot::channel();
        let msg = Message::Command(Box::new(Request {
            principal,
            idempotency,
            command,
            reply,
        }));
        self.tx.try_send(msg).map_err(|e| match e {
            mpsc::error::TrySendError::Full(_) => ServiceError::Domain(DomainError::Overloaded),
            mpsc::error::TrySendError::Closed(_) => {
                DomainError::Unavailable("the writer has stopped".into()).into()
            }
        })?;
        rx.await
            .map_err(|_| ServiceError::Storage("the writer stopped before answering".into()))?
    }

    /// The read view: everything flushed so far.
    pub fn read(&self) -> RwLockReadGuard<'_, State> {
        self.view.read().unwrap_or_else(|p| p.into_inner())
    }

    /// Records as they are flushed.
    pub fn subscribe(&self) -> broadcast::Receiver<Arc<Record>> {
        self.live.subscribe()
    }

    /// Commands waiting in the writer's queue.
    pub fn queue_depth(&self) -> usize {
        self.tx.max_capacity() - self.tx.capacity()
    }

    pub fn metrics(&self) -> &WriterMetrics {
        &self.metrics
    }

    /// Stop taking commands, flush, store a snapshot.
    pub async fn shutdown(&self) -> Result<(), ServiceError> {
        let (done, rx) = oneshot::channel();
        self.tx
            .send(Message::Shutdown(done))
            .await
            .map_err(|_| ServiceError::Storage("the writer has already stopped".into()))?;
        rx.await
            .map_err(|_| ServiceError::Storage("the writer stopped before answering".into()))?
    }
}
