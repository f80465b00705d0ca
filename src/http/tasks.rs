//! Task routes: publish, list, read (redacted), claim, submit, verify,
//! cancel, submissions, the caller's executions and published tasks, and
//! one execution with its settlement.

use super::AppState;
use super::error::{ApiError, ApiResult};
use super::extract::Path;
use super::extract::{Body, Caller, IdempotencyKey, Page, Query, fingerprint, parse_id};
use super::views::{
    self, Access, ExecutionView, LedgerRowView, TaskSummary, TaskView, VerificationView,
};
use crate::commands::{Cancel, Claim, Command, Publish, Submit, Verify};
use crate::error::FieldError;
use crate::risk;
use axum::Json;
use axum::extract::State;
use axum::http::StatusCode;
use serde::{Deserialize, Serialize};
use serde_json::Value;
use std::sync::Arc;
use taskledger_events::{
    Event, ExecutionId, Principal, Record, Rule, RuleKind, TaskId, TaskSpec, TestLanguage,
    Verification,
};
use taskledger_projections::{Execution, State as Market, Task, TaskStatus};
use utoipa::ToSchema;
use uuid::Uuid;

// ---- publish ------------------------------------------------------------------

#[derive(Clone, Copy, Debug, Deserialize, ToSchema)]
#[serde(rename_all = "snake_case")]
pub enum RuleType {
    Contains,
    NotContains,
    Regex,
    MinLength,
    JsonPathEquals,
}

#[derive(Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct RuleBody {
    #[serde(rename = "type")]
    pub kind: RuleType,
    /// Text to look for, a regex, a length (`min_length`) or the expected
    /// JSON value (`json_path_equals`).
    #[schema(value_type = Object)]
    pub value: Value,
    /// Dotted path into `result_metadata` (`json_path_equals` only).
    pub path: Option<String>,
    /// Hidden values are shown to nobody but the publisher.
    pub hidden: Option<bool>,
}

#[derive(Clone, Copy, Debug, Deserialize, ToSchema)]
#[serde(rename_all = "lowercase")]
pub enum Language {
    Python,
    Javascript,
}

/// How submissions are verified. Default: manual review.
#[derive(Deserialize, ToSchema)]
#[serde(tag = "mode", rename_all = "snake_case", deny_unknown_fields)]
pub enum VerificationBody {
    Manual {},
    AutoRules {
        rules: Vec<RuleBody>,
    },
    AutoTests {
        language: Language,
        /// Test source, shown to agents only after they claim.
        tests: String,
        /// Shown to nobody but the publisher.
        hidden_tests: Option<String>,
    },
    AutoLlm {
        /// Shown to agents only after they claim.
        rubric: String,
        /// 0-10, default 6.
        pass_threshold: Option<f64>,
        hidden_rubric: Option<String>,
    },
}

#[derive(Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct PublishBody {
    /// 1-200 characters.
    pub title: String,
    #[serde(default)]
    pub description: String,
    /// Free-form category, 1-50 characters.
    #[serde(rename = "type")]
    pub task_type: String,
    /// Credits moved into escrow now: gift first, then earned.
    pub reward_credits: u64,
    #[schema(value_type = Option<Object>)]
    pub requirements: Option<Value>,
    #[schema(value_type = Option<Object>)]
    pub input_data: Option<Value>,
    /// RFC 3339; within a year.
    pub deadline: Option<String>,
    /// 1-10, default 1.
    pub max_executors: Option<u8>,
    pub tags: Option<Vec<String>>,
    /// 0-10, default 0.
    pub min_reputation: Option<f64>,
    pub verification: Option<VerificationBody>,
}

/// Points (0-10, as JSON numbers) to hundredths, or a field error.
fn hundredths(v: f64, field: &str, errors: &mut Vec<FieldError>) -> u16 {
    if v.is_finite() && (0.0..=10.0).contains(&v) {
        (v * 100.0).round() as u16
    } else {
        errors.push(FieldError::new(field, "must be a number 0..=10"));
        0
    }
}

pub fn parse_time(text: &str) -> Option<u64> {
    chrono::DateTime::parse_from_rfc3339(text)
        .ok()
        .and_then(|t| u64::try_from(t.timestamp_millis()).ok())
}

impl PublishBody {
    /// The spec the command carries; shape errors here, rules in `validate_spec`.
    pub fn into_spec(self) -> Result<TaskSpec, ApiError> {
        let mut errors = Vec::new();
        let deadline_ms = self.deadline.as_deref().and_then(|d| {
            let t = parse_time(d);
            if t.is_none() {
                errors.push(FieldError::new("deadline", "must be an RFC 3339 time"));
            }
            t
        });
        let min_reputation = self
            .min_reputation
            .map_or(0, |v| hundredths(v, "min_reputation", &mut errors));
        let verification = match self.verification {
            None | Some(VerificationBody::Manual {}) => Verification::Manual,
            Some(VerificationBody::AutoRules { rules }) => Verification::AutoRules {
                rules: rules
                    .into_iter()
                    .enumerate()
                    .map(|(i, r)| {
                        let value = match r.value {
                            Value::String(s) => s,
                            Value::Number(n) => n.to_string(),
                            Value::Bool(b) => b.to_string(),
                            other if matches!(r.kind, RuleType::JsonPathEquals) => {
                                other.to_string()
                            }
                            _ => {
                                errors.push(FieldError::new(
                                    format!("verification.rules[{i}].value"),
                                    "must be a string or a number",
                                ));
                                String::new()
                            }
                        };
                        Rule {
                            kind: match r.kind {
                                RuleType::Contains => RuleKind::Contains,
                                RuleType::NotContains => RuleKind::NotContains,
                                RuleType::Regex => RuleKind::Regex,
                                RuleType::MinLength => RuleKind::MinLength,
                                RuleType::JsonPathEquals => RuleKind::JsonPathEquals,
                            },
                            value,
                            path: r.path,
                            hidden: r.hidden.unwrap_or(false),
                        }
                    })
                    .collect(),
            },
            Some(VerificationBody::AutoTests {
                language,
                tests,
                hidden_tests,
            }) => Verification::AutoTests {
                language: match language {
                    Language::Python => TestLanguage::Python,
                    Language::Javascript => TestLanguage::Javascript,
                },
                tests,
                hidden_tests,
            },
            Some(VerificationBody::AutoLlm {
                rubric,
                pass_threshold,
                hidden_rubric,
            }) => Verification::AutoLlm {
                rubric,
                pass_threshold: pass_threshold.map_or(600, |v| {
                    hundredths(v, "verification.pass_threshold", &mut errors)
                }),
                hidden_rubric,
            },
        };
        let spec = TaskSpec {
            title: self.title,
            description: self.description,
            task_type: self.task_type,
            reward: self.reward_credits,
            requirements: self.requirements.map(|v| v.to_string()),
            input_data: self.input_data.map(|v| v.to_string()),
            deadline_ms,
            max_executors: self.max_executors.unwrap_or(1),
            tags: self.tags.unwrap_or_default(),
            min_reputation,
            verification,
        };
        if !errors.is_empty() {
            // Name every bad field at once: add what the spec rules say,
            // checked without the deadline (its rule needs the writer's clock).
            let probe = TaskSpec {
                deadline_ms: None,
                ..spec
            };
            if let Err(crate::error::DomainError::Validation(more)) =
                crate::commands::validate_spec(&probe, 0)
            {
                for f in more {
                    if !errors.iter().any(|e| e.field.starts_with(&f.field)) {
                        errors.push(f);
                    }
                }
            }
            return Err(crate::error::DomainError::Validation(errors).into());
        }
        Ok(spec)
    }
}

fn find_task(state: &Market, id: TaskId) -> ApiResult<&Task> {
    state
        .tasks
        .get(&id)
        .map(|t| &**t)
        .ok_or_else(|| ApiError::not_found(format!("task {id}")))
}

/// Publish a task: the reward moves from the wallet into escrow.
#[utoipa::path(post, path = "/tasks", tag = "tasks", security(("bearer" = [])),
    request_body = PublishBody,
    responses((status = 201, body = TaskView), (status = 400, body = ApiError),
        (status = 402, body = ApiError), (status = 403, body = ApiError)))]
pub async fn publish(
    State(app): State<AppState>,
    caller: Caller,
    idem: IdempotencyKey,
    body: Body<PublishBody>,
) -> ApiResult<(StatusCode, Json<TaskView>)> {
    let owner = caller.require_owner()?;
    let spec = body.value.into_spec()?;
    let task_id = TaskId::random();
    let decision = app.risk.publish(owner, spec.reward, app.now_ms()).await;
    let command = risk::apply(
        decision,
        Command::Publish(Publish { task_id, spec }),
        Some(owner),
        Some(task_id),
        false,
    )?;
    let out = app
        .service
        .execute(caller.0.clone(), idem.with(body.fingerprint), command)
        .await?;
    let id = out
        .events()
        .find_map(|e| match e {
            Event::TaskPublished(t) => Some(t.task_id),
            _ => None,
        })
        .ok_or_else(|| ApiError::bad_request("publish produced no task"))?;
    let pick = {
        let state = app.service.read();
        TaskPick::of(&state, &caller.0, find_task(&state, id)?, None)
    };
    let status = super::created_status(&out);
    Ok((status, Json(pick.view(&app, &out.records)?)))
}

/// What a task's view needs from the read view, copied out under its lock
/// so that the spec is read from the log after the lock is released: the
/// writer takes that lock to apply each flushed batch and must not wait
/// on readers' log reads.
struct TaskPick {
    task: Task,
    access: Access,
    claimability: Option<views::Claimability>,
}

impl TaskPick {
    /// `claim_at`: also how `caller`, an agent key, could claim it then.
    fn of(state: &Market, caller: &Principal, task: &Task, claim_at: Option<u64>) -> Self {
        TaskPick {
            task: task.clone(),
            access: Access::of(state, caller, task),
            claimability: claim_at.map(|now| views::claimability(state, caller, task, now)),
        }
    }

    /// The view, its spec from `fresh` or the log (see [`AppState::record`]).
    fn view(self, app: &AppState, fresh: &[Arc<Record>]) -> ApiResult<TaskView> {
        let mut v = app.task_view(self.access, &self.task, fresh)?;
        v.claimability = self.claimability;
        Ok(v)
    }
}

// ---- list and read ----------------------------------------------------------------

#[derive(Deserialize, utoipa::IntoParams)]
#[serde(deny_unknown_fields)]
pub struct TaskQuery {
    /// A task status, or `all`. Default `open`.
    pub status: Option<String>,
    /// Only tasks of this type.
    #[serde(rename = "type")]
    pub task_type: Option<String>,
    /// `true`: only tasks the calling agent key could claim now.
    pub claimable: Option<bool>,
    /// 1-100, default 50.
    pub limit: Option<u32>,
    pub offset: Option<u64>,
}

#[derive(Serialize, ToSchema)]
pub struct TaskList {
    pub tasks: Vec<TaskView>,
    pub total: usize,
    pub limit: usize,
    pub offset: usize,
}

fn status_filter(raw: Option<&str>) -> ApiResult<Option<TaskStatus>> {
    match raw {
        None => Ok(Some(TaskStatus::Open)),
        Some("all") => Ok(None),
        Some(s) => TaskStatus::parse(s).map(Some).ok_or_else(|| {
            ApiError::invalid(
                "status",
                "must be open, claimed, submitted, completed, failed, cancelled, expired or all",
            )
        }),
    }
}

/// Tasks by status (default open), newest first; secrets redacted. Agent
/// keys also get `claimability` per task.
#[utoipa::path(get, path = "/tasks", tag = "tasks", security(("bearer" = [])),
    params(TaskQuery),
    responses((status = 200, body = TaskList), (status = 401, body = ApiError)))]
pub async fn list(
    State(app): State<AppState>,
    caller: Caller,
    Query(q): Query<TaskQuery>,
) -> ApiResult<Json<TaskList>> {
    let status = status_filter(q.status.as_deref())?;
    let (limit, offset) = Page {
        limit: q.limit,
        offset: q.offset,
    }
    .bounds(50, 100)?;
    let now = app.now_ms();
    let claim_at = caller.agent().map(|_| now);
    let state = app.service.read();
    let wanted = |t: &&Task| {
        q.task_type
            .as_ref()
            .is_none_or(|ty| *t.spec.task_type == **ty)
            && (q.claimable != Some(true)
                || views::claimability(&state, &caller.0, t, now).claimable)
    };
    // Newest first. Open tasks (the default, what agents browse) come from
    // the open-task index, already in publish order; other statuses scan.
    let hits: Vec<&Task> = if status == Some(TaskStatus::Open) {
        state
            .open_tasks
            .values()
            .rev()
            .filter_map(|id| state.tasks.get(id).map(|t| &**t))
            .filter(wanted)
            .collect()
    } else {
        let mut hits: Vec<&Task> = state
            .tasks
            .values()
            .map(|t| &**t)
            .filter(|t| status.is_none_or(|s| t.status() == s))
            .filter(wanted)
            .collect();
        hits.sort_unstable_by_key(|t| std::cmp::Reverse(t.published_seq));
        hits
    };
    let total = hits.len();
    let picks: Vec<TaskPick> = hits
        .into_iter()
        .skip(offset)
        .take(limit)
        .map(|t| TaskPick::of(&state, &caller.0, t, claim_at))
        .collect();
    drop(state);
    let tasks = picks
        .into_iter()
        .map(|p| p.view(&app, &[]))
        .collect::<ApiResult<_>>()?;
    Ok(Json(TaskList {
        tasks,
        total,
        limit,
        offset,
    }))
}

/// One task; secrets shown only to its publisher and (non-hidden ones) to
/// agent keys that claimed it.
#[utoipa::path(get, path = "/tasks/{id}", tag = "tasks", security(("bearer" = [])),
    params(("id" = Uuid, Path, description = "task id")),
    responses((status = 200, body = TaskView), (status = 404, body = ApiError)))]
pub async fn get_task(
    State(app): State<AppState>,
    caller: Caller,
    Path(raw): Path<String>,
) -> ApiResult<Json<TaskView>> {
    let id: TaskId = parse_id(&raw, "id")?;
    let claim_at = caller.agent().map(|_| app.now_ms());
    let pick = {
        let state = app.service.read();
        TaskPick::of(&state, &caller.0, find_task(&state, id)?, claim_at)
    };
    Ok(Json(pick.view(&app, &[])?))
}

#[derive(Serialize, ToSchema)]
pub struct VerificationPackage {
    pub task_id: Uuid,
    pub verification: VerificationView,
    pub verification_summary: String,
}

/// The acceptance criteria, redacted as for the task.
#[utoipa::path(get, path = "/tasks/{id}/verification", tag = "tasks", security(("bearer" = [])),
    params(("id" = Uuid, Path, description = "task id")),
    responses((status = 200, body = VerificationPackage), (status = 404, body = ApiError)))]
pub async fn verification_package(
    State(app): State<AppState>,
    caller: Caller,
    Path(raw): Path<String>,
) -> ApiResult<Json<VerificationPackage>> {
    let id: TaskId = parse_id(&raw, "id")?;
    let TaskPick { task, access, .. } = {
        let state = app.service.read();
        TaskPick::of(&state, &caller.0, find_task(&state, id)?, None)
    };
    let spec = app.task_spec(&task, &[])?;
    Ok(Json(VerificationPackage {
        task_id: id.0,
        verification: views::verification_view(&spec.verification, access),
        verification_summary: views::verification_summary(&task.spec.verification),
    }))
}

// ---- the lifecycle ------------------------------------------------------------------

/// An execution's view after a command: the read view is held only to
/// copy the execution out, not while its texts are read (from `fresh`,
/// the command's own records, or the log), so the writer never waits on
/// a log read to update the view.
fn execution_of(
    app: &AppState,
    id: ExecutionId,
    fresh: &[Arc<Record>],
) -> ApiResult<ExecutionView> {
    let x = app
        .service
        .read()
        .executions
        .get(&id)
        .cloned()
        .ok_or_else(|| ApiError::not_found(format!("execution {id}")))?;
    app.execution_view(&x, fresh)
}

/// Claim an open task with an agent key: a lease starts.
#[utoipa::path(post, path = "/tasks/{id}/claim", tag = "tasks", security(("bearer" = [])),
    params(("id" = Uuid, Path, description = "task id")),
    responses((status = 201, body = ExecutionView), (status = 403, body = ApiError),
        (status = 409, body = ApiError)))]
pub async fn claim(
    State(app): State<AppState>,
    caller: Caller,
    idem: IdempotencyKey,
    Path(raw): Path<String>,
) -> ApiResult<(StatusCode, Json<ExecutionView>)> {
    let task_id: TaskId = parse_id(&raw, "id")?;
    let claim = Command::Claim(Claim {
        task_id,
        execution_id: ExecutionId::random(),
    });
    let command = match caller.agent() {
        Some(key) => {
            let decision = app.risk.claim(key, task_id).await;
            let owner = app.service.read().agent_keys.get(&key).map(|k| k.owner_id);
            risk::apply(decision, claim, owner, Some(task_id), false)?
        }
        None => claim, // refused by the command: only agent keys claim
    };
    let out = app
        .service
        .execute(
            caller.0.clone(),
            idem.with(fingerprint("POST", &format!("/tasks/{task_id}/claim"), b"")),
            command,
        )
        .await?;
    let id = out
        .events()
        .find_map(|e| match e {
            Event::TaskClaimed(c) => Some(c.execution_id),
            _ => None,
        })
        .ok_or_else(|| ApiError::bad_request("claim produced no execution"))?;
    let status = super::created_status(&out);
    Ok((status, Json(execution_of(&app, id, &out.records)?)))
}

#[derive(Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct SubmitBody {
    /// The work, as text (at most 1 MiB).
    pub result: String,
    /// Any JSON (at most 64 KiB); `json_path_equals` rules look here.
    #[schema(value_type = Option<Object>)]
    pub result_metadata: Option<Value>,
}

/// Submit the result of the caller's active execution of the task. For an
/// automatic task the answer carries the verdict (`auto_verified`, `status`,
/// `score`, `verification_detail`) or the fallback reason, when it comes
/// within `TASKLEDGER_VERIFY_WAIT_MS`; otherwise the execution is still
/// `submitted` and the verdict lands later (see `GET /executions/{id}`).
impl SubmitBody {
    /// The command `submit` runs for the task of the path.
    pub fn into_command(self, task_id: TaskId) -> Submit {
        Submit {
            task_id,
            result: self.result,
            result_metadata: self.result_metadata.map(|v| v.to_string()),
        }
    }
}

#[utoipa::path(post, path = "/tasks/{id}/submit", tag = "tasks", security(("bearer" = [])),
    params(("id" = Uuid, Path, description = "task id")),
    request_body = SubmitBody,
    responses((status = 200, body = ExecutionView), (status = 403, body = ApiError),
        (status = 409, body = ApiError)))]
pub async fn submit(
    State(app): State<AppState>,
    caller: Caller,
    idem: IdempotencyKey,
    Path(raw): Path<String>,
    body: Body<SubmitBody>,
) -> ApiResult<Json<ExecutionView>> {
    let task_id: TaskId = parse_id(&raw, "id")?;
    let out = app
        .service
        .execute(
            caller.0.clone(),
            idem.with(body.fingerprint),
            Command::Submit(body.value.into_command(task_id)),
        )
        .await?;
    let id = out
        .events()
        .find_map(|e| match e {
            Event::ResultSubmitted(s) => Some(s.execution_id),
            _ => None,
        })
        .ok_or_else(|| ApiError::bad_request("submit produced no result"))?;
    // An automatic task finalizes on submit: wait (bounded) for the
    // verdict or fallback; past the bound the execution is still
    // `submitted` and the verdict lands later.
    let auto = app
        .service
        .read()
        .tasks
        .get(&task_id)
        .is_some_and(|t| !t.spec.verification.is_manual());
    if auto {
        app.verifier.wait(id, app.verifier.settings().wait).await;
    }
    Ok(Json(execution_of(&app, id, &out.records)?))
}

#[derive(Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct VerifyBody {
    pub execution_id: Uuid,
    pub accepted: bool,
    pub feedback: Option<String>,
    /// 0-10; an accept without one scores 8.
    pub score: Option<f64>,
    /// On reject: re-open the task (default) or close it and refund.
    pub reopen: Option<bool>,
}

impl VerifyBody {
    /// The command `verify` runs for the task of the path; the score must
    /// be 0..=10.
    pub fn into_command(self, task_id: TaskId) -> Result<Verify, ApiError> {
        let mut errors = Vec::new();
        let score = self.score.map(|s| hundredths(s, "score", &mut errors));
        if !errors.is_empty() {
            return Err(crate::error::DomainError::Validation(errors).into());
        }
        Ok(Verify {
            task_id,
            execution_id: ExecutionId(self.execution_id),
            accepted: self.accepted,
            feedback: self.feedback,
            score,
            reopen: self.reopen.unwrap_or(true),
        })
    }
}

#[derive(Serialize, ToSchema)]
pub struct VerifyResponse {
    #[serde(flatten)]
    pub execution: ExecutionView,
    /// The task's status after the verdict.
    pub task_status: &'static str,
    /// The ledger rows this verdict caused.
    pub settlement: Vec<LedgerRowView>,
}

/// The publisher's verdict on a submission. Accept pays the executor's
/// owner (earned); reject re-opens the task or, with `reopen: false`,
/// refunds and closes it.
#[utoipa::path(post, path = "/tasks/{id}/verify", tag = "tasks", security(("bearer" = [])),
    params(("id" = Uuid, Path, description = "task id")),
    request_body = VerifyBody,
    responses((status = 200, body = VerifyResponse), (status = 403, body = ApiError),
        (status = 409, body = ApiError)))]
pub async fn verify(
    State(app): State<AppState>,
    caller: Caller,
    idem: IdempotencyKey,
    Path(raw): Path<String>,
    body: Body<VerifyBody>,
) -> ApiResult<Json<VerifyResponse>> {
    let task_id: TaskId = parse_id(&raw, "id")?;
    let verify = body.value.into_command(task_id)?;
    let (accepted, execution_id) = (verify.accepted, verify.execution_id);
    let verify = Command::Verify(verify);
    // An accept pays: the risk engine's settle hook (a flag holds the
    // payout; a settlement is never refused). Asked only for the task's
    // publisher, so no one else can make the server query the engine.
    let executor = {
        let state = app.service.read();
        let own_task = state
            .tasks
            .get(&task_id)
            .is_some_and(|t| Some(t.publisher_id) == caller.owner());
        own_task
            .then(|| state.executions.get(&execution_id).map(|x| x.owner_id))
            .flatten()
    };
    let command = if let Some(executor) = executor.filter(|_| accepted) {
        let decision = app.risk.settle(task_id, execution_id).await;
        risk::apply(decision, verify, Some(executor), Some(task_id), true)?
    } else {
        verify
    };
    let out = app
        .service
        .execute(caller.0.clone(), idem.with(body.fingerprint), command)
        .await?;
    // The read view is held to copy out what the answer needs, not while
    // the texts are read (see `execution_of`).
    let (x, task_status, settlement) = {
        let state = app.service.read();
        let x = state
            .executions
            .get(&execution_id)
            .cloned()
            .ok_or_else(|| ApiError::not_found(format!("execution {execution_id}")))?;
        let task = find_task(&state, task_id)?;
        let settlement = views::settlement(&state, &x);
        (x, task.status().as_str(), settlement)
    };
    Ok(Json(VerifyResponse {
        execution: app.execution_view(&x, &out.records)?,
        task_status,
        settlement,
    }))
}

/// Cancel an open task with no active execution: full refund.
#[utoipa::path(post, path = "/tasks/{id}/cancel", tag = "tasks", security(("bearer" = [])),
    params(("id" = Uuid, Path, description = "task id")),
    responses((status = 200, body = TaskView), (status = 403, body = ApiError),
        (status = 409, body = ApiError)))]
pub async fn cancel(
    State(app): State<AppState>,
    caller: Caller,
    idem: IdempotencyKey,
    Path(raw): Path<String>,
) -> ApiResult<Json<TaskView>> {
    let task_id: TaskId = parse_id(&raw, "id")?;
    app.service
        .execute(
            caller.0.clone(),
            idem.with(fingerprint(
                "POST",
                &format!("/tasks/{task_id}/cancel"),
                b"",
            )),
            Command::Cancel(Cancel { task_id }),
        )
        .await?;
    let pick = {
        let state = app.service.read();
        TaskPick::of(&state, &caller.0, find_task(&state, task_id)?, None)
    };
    Ok(Json(pick.view(&app, &[])?))
}

#[derive(Serialize, ToSchema)]
pub struct Submission {
    #[serde(flatten)]
    pub execution: ExecutionView,
    /// 1 for the best.
    pub rank: usize,
    /// What the rank sorts on (descending): `agent_reputation` plus the
    /// compute-tier bonus (tier 1 +2.0, tier 2 +0.5, tier 3 or none +0).
    pub ranking_score: f64,
    pub agent_reputation: f64,
    pub compute_tier: Option<u8>,
}

#[derive(Serialize, ToSchema)]
pub struct SubmissionList {
    pub task_id: Uuid,
    /// Ranked: `ranking_score` (reputation plus compute-tier bonus)
    /// descending, then the earlier submit time.
    pub submissions: Vec<Submission>,
}

/// The task's executions, ranked, for its publisher.
#[utoipa::path(get, path = "/tasks/{id}/submissions", tag = "tasks", security(("bearer" = [])),
    params(("id" = Uuid, Path, description = "task id")),
    responses((status = 200, body = SubmissionList), (status = 403, body = ApiError),
        (status = 404, body = ApiError)))]
pub async fn submissions(
    State(app): State<AppState>,
    caller: Caller,
    Path(raw): Path<String>,
) -> ApiResult<Json<SubmissionList>> {
    let id: TaskId = parse_id(&raw, "id")?;
    // Ranked and copied out under the read view's lock; texts read after
    // (see TaskPick): (execution, ranking score, reputation, tier).
    let ranked: Vec<(Execution, f64, f64, Option<u8>)> = {
        let state = app.service.read();
        let task = find_task(&state, id)?;
        if caller.owner() != Some(task.publisher_id) {
            return Err(ApiError::forbidden(
                "only the task's publisher sees its submissions",
            ));
        }
        let mut xs: Vec<_> = task
            .executions
            .iter()
            .filter_map(|x| state.executions.get(x))
            .collect();
        xs.sort_by_key(|x| views::rank_key(&state, x));
        xs.into_iter()
            .map(|x| {
                let key = state.agent_keys.get(&x.agent_key_id);
                (
                    (**x).clone(),
                    views::score_points(views::rank_score(&state, x)),
                    key.map_or(0.0, |k| views::points(k.reputation)),
                    views::execution_tier(&state, x),
                )
            })
            .collect()
    };
    let submissions = ranked
        .into_iter()
        .enumerate()
        .map(|(i, (x, ranking_score, agent_reputation, compute_tier))| {
            Ok(Submission {
                execution: app.execution_view(&x, &[])?,
                rank: i + 1,
                ranking_score,
                agent_reputation,
                compute_tier,
            })
        })
        .collect::<ApiResult<_>>()?;
    Ok(Json(SubmissionList {
        task_id: id.0,
        submissions,
    }))
}

#[derive(Serialize, ToSchema)]
pub struct ExecutionList {
    /// Newest first.
    pub executions: Vec<ExecutionView>,
    pub total: usize,
    pub limit: usize,
    pub offset: usize,
}

/// The calling agent key's executions, newest first.
#[utoipa::path(get, path = "/tasks/my/executions", tag = "tasks", security(("bearer" = [])),
    params(Page),
    responses((status = 200, body = ExecutionList), (status = 403, body = ApiError)))]
pub async fn my_executions(
    State(app): State<AppState>,
    caller: Caller,
    Query(page): Query<Page>,
) -> ApiResult<Json<ExecutionList>> {
    let key_id = caller.require_agent()?;
    let (limit, offset) = page.bounds(50, 100)?;
    // Copied out under the read view's lock; texts read after (see TaskPick).
    let (picks, total) = {
        let state = app.service.read();
        let key = state
            .agent_keys
            .get(&key_id)
            .ok_or_else(|| ApiError::unauthorized("unknown agent key"))?;
        let picks: Vec<Execution> = key
            .executions
            .iter()
            .rev()
            .skip(offset)
            .take(limit)
            .filter_map(|x| state.executions.get(x).map(|x| (**x).clone()))
            .collect();
        (picks, key.executions.len())
    };
    Ok(Json(ExecutionList {
        executions: picks
            .iter()
            .map(|x| app.execution_view(x, &[]))
            .collect::<ApiResult<_>>()?,
        total,
        limit,
        offset,
    }))
}

/// The calling owner's published tasks, newest first.
#[utoipa::path(get, path = "/tasks/my/published", tag = "tasks", security(("bearer" = [])),
    params(Page),
    responses((status = 200, body = TaskList), (status = 403, body = ApiError)))]
pub async fn my_published(
    State(app): State<AppState>,
    caller: Caller,
    Query(page): Query<Page>,
) -> ApiResult<Json<TaskList>> {
    let id = caller.require_owner()?;
    let (limit, offset) = page.bounds(50, 100)?;
    let (picks, total) = {
        let state = app.service.read();
        let owner = super::accounts::account(&state, id)?;
        let picks: Vec<TaskPick> = owner
            .published
            .iter()
            .rev()
            .skip(offset)
            .take(limit)
            .filter_map(|t| state.tasks.get(t))
            .map(|t| TaskPick::of(&state, &caller.0, t, None))
            .collect();
        (picks, owner.published.len())
    };
    Ok(Json(TaskList {
        tasks: picks
            .into_iter()
            .map(|p| p.view(&app, &[]))
            .collect::<ApiResult<_>>()?,
        total,
        limit,
        offset,
    }))
}

#[derive(Serialize, ToSchema)]
pub struct ExecutionDetail {
    #[serde(flatten)]
    pub execution: ExecutionView,
    pub task: TaskSummary,
    pub verification_summary: String,
    /// The ledger rows of this execution's verdict only.
    pub settlement: Vec<LedgerRowView>,
}

/// One execution, for the task's publisher or the executor (the agent key
/// or its owner).
#[utoipa::path(get, path = "/executions/{id}", tag = "tasks", security(("bearer" = [])),
    params(("id" = Uuid, Path, description = "execution id")),
    responses((status = 200, body = ExecutionDetail), (status = 403, body = ApiError),
        (status = 404, body = ApiError)))]
pub async fn execution(
    State(app): State<AppState>,
    caller: Caller,
    Path(raw): Path<String>,
) -> ApiResult<Json<ExecutionDetail>> {
    let id: ExecutionId = parse_id(&raw, "id")?;
    // Copied out under the read view's lock; texts read after (see TaskPick).
    let (x, task, verification_summary, settlement) = {
        let state = app.service.read();
        let x = state
            .executions
            .get(&id)
            .ok_or_else(|| ApiError::not_found(format!("execution {id}")))?;
        let task = find_task(&state, x.task_id)?;
        let allowed = match &caller.0 {
            Principal::Owner(o) => *o == task.publisher_id || *o == x.owner_id,
            Principal::Agent(k) => *k == x.agent_key_id,
            _ => false,
        };
        if !allowed {
            return Err(ApiError::forbidden(
                "only the task's publisher or the executor sees an execution",
            ));
        }
        (
            (**x).clone(),
            views::task_summary(task),
            views::verification_summary(&task.spec.verification),
            views::settlement(&state, x),
        )
    };
    Ok(Json(ExecutionDetail {
        execution: app.execution_view(&x, &[])?,
        task,
        verification_summary,
        settlement,
    }))
}
