//! `GET /api/v1/events`: Server-Sent Events of the domain events a caller
//! may see. Publishers see their tasks and their wallet; agent keys see new
//! and re-opened tasks and their own executions. Each frame's `id:` is the
//! record's seq, so a client resumes with `Last-Event-ID` (or `?since=`)
//! and misses nothing and sees nothing twice.
//!
//! How: subscribe to the live records first, then catch up from the log
//! (acknowledged records only) up to its head, then follow the live
//! stream, skipping what catch-up already sent. Falling behind the live
//! stream means more catch-up, unless the client is the one behind (its
//! frame buffer is more than half full): a client too slow to read gets a
//! final `cutoff` frame naming the last seq sent and the stream ends. The
//! writer never waits for a client.

use super::AppState;
use super::error::{ApiError, ApiResult};
use super::extract::{Caller, Query};
use super::views;
use axum::extract::State;
use axum::http::HeaderMap;
use axum::response::sse::{Event as Frame, KeepAlive, Sse};
use futures_util::{Stream, StreamExt};
use serde::Deserialize;
use serde_json::{Value, json};
use std::convert::Infallible;
use std::sync::atomic::Ordering;
use std::sync::{Arc, Mutex, PoisonError};
use std::time::Duration;
use taskledger_events::{Event, ExecutionId, Principal, RawRecord, Record};
use taskledger_projections::State as Market;
use tokio::sync::{broadcast, mpsc, oneshot};
use tokio_stream::wrappers::ReceiverStream;

/// Frames buffered per client before the client counts as slow.
pub const CLIENT_FRAMES_MAX: usize = 1024;
/// Records read from the log per catch-up step. Small: a thousand streams
/// catching up at once on a busy server each hold one step in memory.
const CATCH_UP_RECORDS_MAX: u64 = 128;

/// Every event type a stream may carry (for `?type=`).
pub const TYPES: [&str; 20] = [
    "account_registered",
    "owner_key_rotated",
    "agent_key_issued",
    "agent_key_revoked",
    "credits_granted",
    "task_published",
    "task_claimed",
    "result_submitted",
    "verdict_recorded",
    "verification_fallback",
    "execution_superseded",
    "lease_released",
    "task_reopened",
    "task_closed",
    "task_cancelled",
    "task_expired",
    "credits_redeemed",
    "risk_flag_raised",
    "risk_flag_released",
    "risk_flag_confirmed",
];

#[derive(Deserialize, utoipa::IntoParams)]
#[serde(deny_unknown_fields)]
pub struct EventsQuery {
    /// Send records after this seq (as `Last-Event-ID` does). Without
    /// either, the stream starts at the current head.
    pub since: Option<u64>,
    /// Comma-separated event types to keep, e.g. `task_published,verdict_recorded`.
    #[serde(rename = "type")]
    pub types: Option<String>,
}

/// Keeps the count of open streams honest however a stream ends.
struct ClientSlot(AppState);

impl Drop for ClientSlot {
    fn drop(&mut self) {
        self.0.sse_clients.fetch_sub(1, Ordering::Relaxed);
    }
}

/// Server-Sent Events of the domain events the caller may see.
#[utoipa::path(get, path = "/events", tag = "events", security(("bearer" = [])),
    params(EventsQuery,
        ("Last-Event-ID" = Option<u64>, Header, description = "resume after this seq")),
    responses((status = 200, description = "text/event-stream; `id:` is the seq", content_type = "text/event-stream", body = String),
        (status = 401, body = ApiError), (status = 503, body = ApiError)))]
pub async fn events(
    State(app): State<AppState>,
    caller: Caller,
    headers: HeaderMap,
    Query(q): Query<EventsQuery>,
) -> ApiResult<Sse<impl Stream<Item = Result<Frame, Infallible>>>> {
    let last_event_id = match headers.get("last-event-id") {
        None => None,
        Some(v) => Some(
            v.to_str()
                .ok()
                .and_then(|s| s.trim().parse::<u64>().ok())
                .ok_or_else(|| ApiError::invalid("Last-Event-ID", "must be a record seq"))?,
        ),
    };
    let types = match q.types.as_deref() {
        None => None,
        Some(list) => {
            let mut wanted = Vec::new();
            for t in list.split(',').map(str::trim).filter(|t| !t.is_empty()) {
                let known = TYPES.iter().find(|k| **k == t).ok_or_else(|| {
                    ApiError::invalid("type", format!("unknown event type {t:?}"))
                })?;
                wanted.push(*known);
            }
            Some(wanted)
        }
    };
    let open = app.sse_clients.fetch_add(1, Ordering::Relaxed);
    let slot = ClientSlot(app.clone());
    if open >= app.settings.sse_clients_max {
        return Err(crate::error::DomainError::Overloaded.into());
    }
    // Subscribe before reading the head, so nothing falls between the two.
    let live = app.service.subscribe();
    let since = last_event_id
        .or(q.since)
        .unwrap_or_else(|| app.history.head().seq);
    let (tx, rx) = mpsc::channel(CLIENT_FRAMES_MAX);
    let (last_tx, last_rx) = oneshot::channel();
    let stream = Stream_ {
        app: app.clone(),
        caller: caller.0,
        types,
        sent: since,
        tx,
        last: Some(last_tx),
    };
    tokio::spawn(async move {
        let _slot = slot;
        stream.run(live).await;
    });
    // The frames, then the final `cutoff` or `shutdown` frame if there is
    // one: it needs no room in a full buffer, so a stalled client still
    // gets it once it reads again (a graceful stop waits for that up to
    // `SHUTDOWN_GRACE`).
    let last =
        futures_util::stream::once(last_rx).filter_map(|f| std::future::ready(f.ok().map(Ok)));
    Ok(Sse::new(ReceiverStream::new(rx).chain(last)).keep_alive(
        KeepAlive::new()
            .interval(Duration::from_secs(app.settings.sse_heartbeat_secs.max(1)))
            .text("heartbeat"),
    ))
}

/// One client's stream.
struct Stream_ {
    app: AppState,
    caller: Principal,
    types: Option<Vec<&'static str>>,
    /// The last seq accounted for (sent or filtered out).
    sent: u64,
    tx: mpsc::Sender<Result<Frame, Infallible>>,
    /// The frame that follows everything in `tx` when the stream is cut
    /// off or the server stops.
    last: Option<oneshot::Sender<Frame>>,
}

enum Step {
    Go,
    Stop,
}

impl Stream_ {
    async fn run(mut self, mut live: broadcast::Receiver<Arc<Record>>) {
        let mut shutdown = self.app.shutdown.clone();
        if *shutdown.borrow() {
            return;
        }
        loop {
            if let Step::Stop = self.catch_up_to_live(&mut live).await {
                return;
            }
            if let Step::Stop = self.follow(&mut live, &mut shutdown).await {
                return;
            }
            // This stream fell behind the live records on a busy server
            // while its client kept reading: catch up from the log again.
            live = live.resubscribe();
        }
    }

    /// Catch up until the log's head is reached with the live stream intact.
    async fn catch_up_to_live(&mut self, live: &mut broadcast::Receiver<Arc<Record>>) -> Step {
        loop {
            if let Step::Stop = self.catch_up().await {
                return Step::Stop;
            }
            match live.try_recv() {
                Err(broadcast::error::TryRecvError::Lagged(_)) => *live = live.resubscribe(),
                Ok(r) => return self.offer(&r).await,
                Err(broadcast::error::TryRecvError::Empty) => return Step::Go,
                Err(broadcast::error::TryRecvError::Closed) => return Step::Stop,
            }
        }
    }

    /// Send live records until the server stops (`Stop`) or this stream
    /// falls behind them (`Go`: catch up). A client that is the slow one
    /// is cut off instead.
    async fn follow(
        &mut self,
        live: &mut broadcast::Receiver<Arc<Record>>,
        shutdown: &mut tokio::sync::watch::Receiver<bool>,
    ) -> Step {
        loop {
            let received = tokio::select! {
                _ = shutdown.changed() => {
                    self.end_with(Frame::default().event("shutdown").data("the server is stopping; resume with Last-Event-ID"));
                    return Step::Stop;
                }
                r = live.recv() => r,
            };
            match received {
                Ok(r) => {
                    if let Step::Stop = self.offer(&r).await {
                        return Step::Stop;
                    }
                }
                Err(broadcast::error::RecvError::Lagged(n)) if self.client_behind() => {
                    let body = json!({
                        "error": "the client fell behind the live stream and was cut off",
                        "code": "slow_consumer",
                        "last_seq": self.sent,
                        "skipped": n,
                    });
                    self.end_with(Frame::default().event("cutoff").data(body.to_string()));
                    return Step::Stop;
                }
                Err(broadcast::error::RecvError::Lagged(_)) => return Step::Go,
                Err(broadcast::error::RecvError::Closed) => return Step::Stop,
            }
        }
    }

    /// The stream's final frame, after everything buffered for the client:
    /// it needs no room in a full buffer.
    fn end_with(&mut self, frame: Frame) {
        if let Some(last) = self.last.take() {
            let _ = last.send(frame);
        }
    }

    /// Is the client the slow one: more than half of its frame buffer
    /// unread? (If it is not, this stream's task fell behind on a busy
    /// server, and the client is owed the rest, not a cut-off.)
    fn client_behind(&self) -> bool {
        self.tx.capacity() < CLIENT_FRAMES_MAX / 2
    }

    /// Send everything in the log after `sent`, up to its head.
    async fn catch_up(&mut self) -> Step {
        loop {
            let history = self.app.history.clone();
            let from = self.sent + 1;
            let to = self.sent + CATCH_UP_RECORDS_MAX;
            let chunk = tokio::task::spawn_blocking(move || {
                let mut out = Vec::new();
                let mut failure = None;
                let scanned = history.scan(from, to, &mut |_, bytes| {
                    match RawRecord::parse(bytes).and_then(|r| r.decode()) {
                        Ok(r) => out.push(r),
                        Err(e) => failure = Some(e.to_string()),
                    }
                    if failure.is_some() {
                        std::ops::ControlFlow::Break(())
                    } else {
                        std::ops::ControlFlow::Continue(())
                    }
                });
                match (scanned, failure) {
                    (Err(e), _) => Err(e.to_string()),
                    (_, Some(e)) => Err(e),
                    _ => Ok(out),
                }
            })
            .await;
            let records = match chunk {
                Ok(Ok(r)) => r,
                Ok(Err(e)) => {
                    tracing::error!(error = %e, "event stream cannot read the log");
                    return Step::Stop;
                }
                Err(e) => {
                    tracing::error!(error = %e, "event stream reader failed");
                    return Step::Stop;
                }
            };
            if records.is_empty() {
                return Step::Go;
            }
            for r in &records {
                if let Step::Stop = self.offer(r).await {
                    return Step::Stop;
                }
            }
        }
    }

    /// Send one record if the caller may see it and wants its type.
    async fn offer(&mut self, r: &Record) -> Step {
        if r.seq <= self.sent {
            return Step::Go;
        }
        let frame = {
            let wanted = self
                .types
                .as_ref()
                .is_none_or(|t| t.contains(&r.event.kind()));
            let state = self.app.service.read();
            (wanted && visible(&state, &self.caller, &r.event)).then(|| {
                self.app
                    .frames
                    .text(r.seq, || payload(&state, r).to_string())
            })
        };
        self.sent = r.seq;
        match frame {
            None => Step::Go,
            Some(data) => {
                let frame = Frame::default()
                    .id(r.seq.to_string())
                    .event(r.event.kind())
                    .data(&*data);
                match self.tx.send(Ok(frame)).await {
                    Ok(()) => Step::Go,
                    Err(_) => Step::Stop,
                }
            }
        }
    }
}

fn execution_id(e: &Event) -> Option<ExecutionId> {
    match e {
        Event::TaskClaimed(e) => Some(e.execution_id),
        Event::ResultSubmitted(e) => Some(e.execution_id),
        Event::VerdictRecorded(e) => Some(e.execution_id),
        Event::VerificationFallback(e) => Some(e.execution_id),
        Event::ExecutionSuperseded(e) => Some(e.execution_id),
        Event::LeaseReleased(e) => Some(e.execution_id),
        _ => None,
    }
}

/// The account an account-level event is about.
fn account_of(state: &Market, e: &Event) -> Option<taskledger_events::AccountId> {
    match e {
        Event::AccountRegistered(e) => Some(e.account_id),
        Event::OwnerKeyRotated(e) => Some(e.account_id),
        Event::AgentKeyIssued(e) => Some(e.owner_id),
        Event::AgentKeyRevoked(e) => Some(e.owner_id),
        Event::CreditsGranted(e) => Some(e.owner_id),
        Event::CreditsRedeemed(e) => Some(e.owner_id),
        Event::RiskFlagRaised(e) => Some(e.owner_id),
        Event::RiskFlagReleased(e) => state.flags.get(&e.flag_id).map(|f| f.owner_id),
        Event::RiskFlagConfirmed(e) => state.flags.get(&e.flag_id).map(|f| f.owner_id),
        _ => None,
    }
}

/// May `caller` see this event?
pub fn visible(state: &Market, caller: &Principal, e: &Event) -> bool {
    if matches!(e, Event::IdempotencyRecorded(_)) {
        return false;
    }
    let execution = execution_id(e).and_then(|x| state.executions.get(&x));
    match caller {
        Principal::Owner(me) => {
            let own_task = e
                .task_id()
                .and_then(|t| state.tasks.get(&t))
                .is_some_and(|t| t.publisher_id == *me);
            own_task
                || execution.is_some_and(|x| x.owner_id == *me)
                || account_of(state, e) == Some(*me)
        }
        Principal::Agent(key) => {
            matches!(e, Event::TaskPublished(_) | Event::TaskReopened(_))
                || execution.is_some_and(|x| x.agent_key_id == *key)
        }
        Principal::Operator(_) | Principal::System => true,
    }
}

/// The frame's JSON, the same for every caller [`visible`] lets see it.
/// Task specs never travel here: a frame carries a task summary, and the
/// full task (redacted for the caller) is one GET away.
pub fn payload(state: &Market, r: &Record) -> Value {
    let e = &r.event;
    let data = match e {
        Event::TaskPublished(p) => state
            .tasks
            .get(&p.task_id)
            .map(|t| serde_json::to_value(views::task_summary(t)).unwrap_or(Value::Null))
            .unwrap_or(Value::Null),
        Event::TaskClaimed(c) => json!({
            "agent_key_id": c.agent_key_id.0,
            "lease_expires_at": views::ts(c.lease_expires_ms),
        }),
        Event::ResultSubmitted(s) => json!({ "result_hash": views::hex(&s.result_hash) }),
        Event::VerdictRecorded(v) => json!({
            "accepted": v.accepted,
            "score": views::points(v.score),
            "verifier": views::verifier_name(v.verifier),
        }),
        Event::VerificationFallback(f) => json!({ "reason": f.reason }),
        Event::CreditsGranted(g) => json!({ "amount": g.amount, "reason": g.reason.as_str() }),
        Event::CreditsRedeemed(g) => json!({ "amount": g.amount }),
        Event::RiskFlagRaised(f) => json!({
            "flag_id": f.flag_id.0, "kind": f.kind.as_str(), "reason": f.reason,
        }),
        Event::RiskFlagReleased(f) => json!({ "flag_id": f.flag_id.0 }),
        Event::RiskFlagConfirmed(f) => json!({ "flag_id": f.flag_id.0 }),
        Event::AgentKeyIssued(k) => json!({ "agent_key_id": k.key_id.0, "name": k.name }),
        Event::AgentKeyRevoked(k) => json!({ "agent_key_id": k.key_id.0 }),
        Event::AccountRegistered(a) => json!({ "account_id": a.account_id.0 }),
        _ => json!({}),
    };
    json!({
        "seq": r.seq,
        "at": views::ts(r.at_ms),
        "type": e.kind(),
        "task_id": e.task_id().map(|t| t.0),
        "execution_id": execution_id(e).map(|x| x.0),
        "data": data,
    })
}

/// Frame texts of recent records by seq. A new task goes to every agent's
/// stream; its text is the same for all of them, so it is serialized once,
/// not once per stream. Streams follow the live records closely, so a
/// small ring keeps nearly every text until the last stream has sent it;
/// a stream further behind computes the text again (the same text).
pub struct FrameTexts {
    ring: Vec<Mutex<Option<FrameText>>>,
}

/// A record's seq and its frame text.
type FrameText = (u64, Arc<str>);

impl FrameTexts {
    pub fn new(records: usize) -> Self {
        FrameTexts {
            ring: (0..records.max(1)).map(|_| Mutex::new(None)).collect(),
        }
    }

    /// The text of record `seq`, made by `make` unless already made.
    fn text(&self, seq: u64, make: impl FnOnce() -> String) -> Arc<str> {
        let slot = &self.ring[(seq % self.ring.len() as u64) as usize];
        // Made under the lock: the streams that come for the same record
        // meanwhile wait for this text rather than make their own.
        let mut slot = slot.lock().unwrap_or_else(PoisonError::into_inner);
        match &*slot {
            Some((at, text)) if *at == seq => text.clone(),
            _ => {
                let text: Arc<str> = make().into();
                *slot = Some((seq, text.clone()));
                text
            }
        }
    }
}
