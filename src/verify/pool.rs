//! The verification worker pool: follows the log and turns every submission
//! to an automatic task into an `auto_verdict` or a `fallback` command,
//! sent through the writer like any other command.
//!
//! Nothing here runs on the writer. At start the pool verifies every
//! submission that has neither a verdict nor a fallback (a restart loses no
//! work), then takes `ResultSubmitted` records from the live stream; after
//! falling behind that stream, and every [`RESCAN_EVERY`], it looks at the
//! read view again. A submission is verified by one job at a time; jobs
//! wait for one of `workers` slots. The HTTP submit route waits on
//! [`Verifier::wait`] for a bounded time, so to the agent an automatic task
//! "finalizes on submit".

use super::{llm, rules, sandbox};
use crate::commands::{AutoVerdict, Command, Fallback};
use crate::error::DomainError;
use crate::risk::Risk;
use crate::service::Service;
use crate::writer::ServiceError;
use std::collections::{HashMap, HashSet};
use std::sync::{Arc, Mutex, PoisonError};
use std::time::Duration;
use taskledger_events::{
    Event, ExecutionId, Principal, SledReader, TaskId, TaskSpec, Verification, VerifierKind,
};
use taskledger_projections::{Execution, ExecutionStatus, State};
use tokio::sync::broadcast::error::RecvError;
use tokio::sync::{Semaphore, oneshot};
use tokio_util::sync::CancellationToken;

/// How often the pool looks for submissions it has not verified (a job
/// that gave up on a busy writer is picked up again here).
pub const RESCAN_EVERY: Duration = Duration::from_secs(30);
/// How long a job keeps offering its verdict to a busy writer.
const OVERLOADED_RETRY_FOR: Duration = Duration::from_secs(60);

#[derive(Clone, Debug)]
pub struct VerifySettings {
    /// Verification jobs at once.
    pub workers: usize,
    /// How long the submit call waits for the verdict.
    pub wait: Duration,
    /// Limits of the `auto_tests` sandbox.
    pub tests: sandbox::Limits,
    /// The `auto_llm` judge; `None`: not configured (fallback to manual).
    pub llm: Option<llm::LlmSettings>,
}

impl Default for VerifySettings {
    fn default() -> Self {
        VerifySettings {
            workers: 2,
            wait: Duration::from_secs(30),
            tests: sandbox::Limits::default(),
            llm: None,
        }
    }
}

/// A handle on the pool; cheap to clone.
#[derive(Clone)]
pub struct Verifier(Arc<Inner>);

struct Inner {
    service: Service,
    history: SledReader,
    settings: VerifySettings,
    http: reqwest::Client,
    slots: Semaphore,
    /// Executions a job is verifying now.
    inflight: Mutex<HashSet<ExecutionId>>,
    /// Submit calls waiting for a job to finish.
    waiters: Mutex<HashMap<ExecutionId, Vec<oneshot::Sender<()>>>>,
    /// Ends the follower and every job (a hung judge or test run included),
    /// so a stopped server lets go of its data dir.
    stop: CancellationToken,
    risk: Option<Arc<Risk>>,
}

/// What a job needs, read from the view and the log.
struct Job {
    task_id: TaskId,
    execution_id: ExecutionId,
    spec: TaskSpec,
    result: String,
    result_metadata: Option<String>,
}

impl Verifier {
    /// `risk`: the settle hook for accepted verdicts (`None`: no checks).
    pub fn new(
        service: Service,
        history: SledReader,
        settings: VerifySettings,
        risk: Option<Arc<Risk>>,
    ) -> Self {
        let slots = Semaphore::new(settings.workers.max(1));
        Verifier(Arc::new(Inner {
            service,
            history,
            settings,
            http: reqwest::Client::new(),
            slots,
            inflight: Mutex::default(),
            waiters: Mutex::default(),
            stop: CancellationToken::new(),
            risk,
        }))
    }

    pub fn settings(&self) -> &VerifySettings {
        &self.0.settings
    }

    /// Follow the log until the service stops: verify what is pending now,
    /// then every submission to come.
    pub fn start(&self) -> tokio::task::JoinHandle<()> {
        // Subscribe before the scan, so a submission flushed in between is
        // seen by one or the other (a second dispatch of it is a no-op).
        let mut live = self.0.service.subscribe();
        let me = self.clone();
        tokio::spawn(async move {
            me.dispatch_pending();
            let mut rescan = tokio::time::interval(RESCAN_EVERY);
            rescan.tick().await;
            loop {
                tokio::select! {
                    received = live.recv() => match received {
                        Ok(r) => {
                            if let Event::ResultSubmitted(s) = &r.event {
                                me.dispatch(s.execution_id);
                            }
                        }
                        Err(RecvError::Lagged(_)) => me.dispatch_pending(),
                        Err(RecvError::Closed) => return,
                    },
                    _ = rescan.tick() => me.dispatch_pending(),
                    _ = me.0.stop.cancelled() => return,
                }
            }
        })
    }

    /// Stop following and drop every job in flight (their submissions are
    /// verified again at the next start: nothing was recorded for them).
    pub fn stop(&self) {
        self.0.stop.cancel();
    }

    /// Wait, at most `bound` (and not past [`Verifier::stop`]), until the
    /// execution no longer awaits an automatic verdict. Returns whether it
    /// got one (or a fallback).
    pub async fn wait(&self, id: ExecutionId, bound: Duration) -> bool {
        let (tx, rx) = oneshot::channel();
        lock(&self.0.waiters).entry(id).or_default().push(tx);
        // Registered first, then checked: a job that ends in between has
        // either been seen here or will wake us.
        let settled = if awaits_auto_verdict(&self.0.service.read(), id) {
            tokio::select! {
                woken = tokio::time::timeout(bound, rx) => woken.is_ok(),
                _ = self.0.stop.cancelled() => false,
            }
        } else {
            drop(rx);
            true
        };
        let mut waiters = lock(&self.0.waiters);
        if let Some(list) = waiters.get_mut(&id) {
            list.retain(|s| !s.is_closed());
            if list.is_empty() {
                waiters.remove(&id);
            }
        }
        settled && !awaits_auto_verdict(&self.0.service.read(), id)
    }

    /// Start a job for every execution that awaits an automatic verdict.
    fn dispatch_pending(&self) {
        let pending: Vec<ExecutionId> = {
            let state = self.0.service.read();
            state
                .executions
                .values()
                .filter(|x| awaits(&state, x))
                .map(|x| x.id)
                .collect()
        };
        if !pending.is_empty() {
            tracing::info!(count = pending.len(), "verifying pending submissions");
        }
        for id in pending {
            self.dispatch(id);
        }
    }

    fn dispatch(&self, id: ExecutionId) {
        if !awaits_auto_verdict(&self.0.service.read(), id) || !lock(&self.0.inflight).insert(id) {
            return;
        }
        let me = self.clone();
        tokio::spawn(async move {
            let job = async {
                // A slot bounds the verification work only: the round trip
                // through the writer (a group-commit wait) holds none, or
                // the pool's throughput would be `workers` per batch time.
                let command = match me.0.slots.acquire().await {
                    Ok(_slot) => me.verify(id).await,
                    Err(_) => None,
                };
                if let Some(command) = command {
                    me.send(command).await;
                }
            };
            tokio::select! {
                _ = job => {}
                _ = me.0.stop.cancelled() => {}
            }
            lock(&me.0.inflight).remove(&id);
            for w in lock(&me.0.waiters).remove(&id).unwrap_or_default() {
                let _ = w.send(());
            }
        });
    }

    /// One job: the verdict or fallback for the writer (`None`: the
    /// execution no longer awaits one).
    async fn verify(&self, id: ExecutionId) -> Option<Command> {
        let command = match self.job(id) {
            Ok(Some(job)) => match self.decide(job).await {
                // An accepted verdict pays: the risk engine's settle hook.
                Command::AutoVerdict(v) if v.accepted => self.settle_checked(v).await,
                other => other,
            },
            Ok(None) => return None,
            Err((task_id, why)) => Command::Fallback(Fallback {
                task_id,
                execution_id: id,
                reason: format!("the submission could not be read for verification: {why}"),
            }),
        };
        Some(command)
    }

    async fn settle_checked(&self, v: AutoVerdict) -> Command {
        let Some(risk) = &self.0.risk else {
            return Command::AutoVerdict(v);
        };
        let decision = risk.settle(v.task_id, v.execution_id).await;
        let owner = self
            .0
            .service
            .read()
            .executions
            .get(&v.execution_id)
            .map(|x| x.owner_id);
        let task = v.task_id;
        // A settlement is never refused (the work was accepted): `settle`
        // answers allow or flag, and a flag holds the payout.
        crate::risk::apply(
            decision,
            Command::AutoVerdict(v.clone()),
            owner,
            Some(task),
            true,
        )
        .unwrap_or(Command::AutoVerdict(v))
    }

    fn job(&self, id: ExecutionId) -> Result<Option<Job>, (TaskId, String)> {
        let (task_id, published_seq, submitted_seq) = {
            let state = self.0.service.read();
            let Some(x) = state.executions.get(&id).filter(|x| awaits(&state, x)) else {
                return Ok(None);
            };
            let Some(task) = state.tasks.get(&x.task_id) else {
                return Ok(None);
            };
            let Some(submitted_seq) = x.submitted_seq else {
                return Ok(None);
            };
            (x.task_id, task.published_seq, submitted_seq)
        };
        let read = |seq: u64| match self.0.history.record(seq) {
            Ok(Some(r)) => Ok(r),
            Ok(None) => Err((task_id, format!("seq {seq} is not in the log"))),
            Err(e) => Err((task_id, format!("seq {seq}: {e}"))),
        };
        let (published, submitted) = (read(published_seq)?, read(submitted_seq)?);
        let Event::TaskPublished(p) = published.event else {
            return Err((
                task_id,
                format!("seq {published_seq} is not the task's publish"),
            ));
        };
        let Event::ResultSubmitted(s) = submitted.event else {
            return Err((
                task_id,
                format!("seq {submitted_seq} is not the submission"),
            ));
        };
        Ok(Some(Job {
            task_id,
            execution_id: id,
            spec: p.spec,
            result: s.result,
            result_metadata: s.result_metadata,
        }))
    }

    async fn decide(&self, job: Job) -> Command {
        let verdict = |verifier, accepted, score, feedback: String, detail: serde_json::Value| {
            Command::AutoVerdict(AutoVerdict {
                task_id: job.task_id,
                execution_id: job.execution_id,
                accepted,
                score,
                verifier,
                detail: Some(detail.to_string()),
                feedback: Some(feedback),
            })
        };
        let fallback = |reason: String| {
            Command::Fallback(Fallback {
                task_id: job.task_id,
                execution_id: job.execution_id,
                reason,
            })
        };
        match &job.spec.verification {
            Verification::Manual => fallback("a manual task reached automatic verification".into()),
            Verification::AutoRules { rules } => {
                let v = rules::evaluate(rules, &job.result, job.result_metadata.as_deref());
                verdict(
                    VerifierKind::AutoRules,
                    v.accepted,
                    v.score,
                    v.feedback,
                    v.detail,
                )
            }
            Verification::AutoTests {
                language,
                tests,
                hidden_tests,
            } => {
                let limits = &self.0.settings.tests;
                let run = sandbox::run_tests(
                    *language,
                    &job.result,
                    tests,
                    hidden_tests.as_deref(),
                    limits,
                )
                .await;
                let detail = run.detail(hidden_tests.is_some());
                let isolation = run.isolation;
                match run.outcome {
                    sandbox::TestOutcome::Passed => verdict(
                        VerifierKind::AutoTests,
                        true,
                        1000,
                        format!("auto_tests: the tests pass (isolation: {isolation})"),
                        detail,
                    ),
                    sandbox::TestOutcome::Failed => verdict(
                        VerifierKind::AutoTests,
                        false,
                        0,
                        format!("auto_tests: the tests fail (isolation: {isolation})"),
                        detail,
                    ),
                    sandbox::TestOutcome::TimedOut => fallback(format!(
                        "auto_tests: timed out after {} s (isolation: {isolation}); review by hand",
                        limits.wall.as_secs_f64()
                    )),
                    sandbox::TestOutcome::RunnerMissing(why) => {
                        fallback(format!("auto_tests: no test runner here: {why}"))
                    }
                    sandbox::TestOutcome::SandboxUnavailable(why) => {
                        fallback(format!("auto_tests: no sandbox here: {why}"))
                    }
                }
            }
            Verification::AutoLlm {
                rubric,
                pass_threshold,
                hidden_rubric,
            } => {
                let input = llm::JudgeInput {
                    task_title: &job.spec.title,
                    task_description: &job.spec.description,
                    rubric,
                    hidden_rubric: hidden_rubric.as_deref(),
                    pass_threshold: *pass_threshold,
                    reward: job.spec.reward,
                    result: &job.result,
                    result_metadata: job.result_metadata.as_deref(),
                };
                match llm::judge(self.0.settings.llm.as_ref(), &self.0.http, &input).await {
                    llm::LlmOutcome::Verdict {
                        accepted,
                        score,
                        feedback,
                        detail,
                    } => verdict(VerifierKind::AutoLlm, accepted, score, feedback, detail),
                    llm::LlmOutcome::Fallback { reason, .. } => {
                        fallback(format!("auto_llm: {reason}"))
                    }
                }
            }
        }
    }

    /// Hand a verdict to the writer, offering it again while the writer is
    /// overloaded. A refusal means the execution moved on (nothing to do);
    /// a storage failure stops here (the next start verifies it again).
    async fn send(&self, command: Command) {
        let started = tokio::time::Instant::now();
        let mut pause = Duration::from_millis(20);
        loop {
            match self
                .0
                .service
                .execute(Principal::System, None, command.clone())
                .await
            {
                Ok(_) => return,
                Err(ServiceError::Domain(DomainError::Overloaded))
                    if started.elapsed() < OVERLOADED_RETRY_FOR =>
                {
                    tokio::time::sleep(pause).await;
                    pause = (pause * 2).min(Duration::from_secs(2));
                }
                Err(e) => {
                    tracing::warn!(command = command.name(), error = %e, "verification result not recorded");
                    return;
                }
            }
        }
    }
}

/// Awaiting an automatic verdict: submitted, no fallback, an automatic task.
fn awaits(state: &State, x: &Execution) -> bool {
    x.status == ExecutionStatus::Submitted
        && x.fallback.is_none()
        && state
            .tasks
            .get(&x.task_id)
            .is_some_and(|t| !t.spec.verification.is_manual())
}

fn awaits_auto_verdict(state: &State, id: ExecutionId) -> bool {
    state.executions.get(&id).is_some_and(|x| awaits(state, x))
}

fn lock<T>(m: &Mutex<T>) -> std::sync::MutexGuard<'_, T> {
    m.lock().unwrap_or_else(PoisonError::into_inner)
}
