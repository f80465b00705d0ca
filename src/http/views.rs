//! What the API shows: JSON views of the projected entities, with the field
//! names of the earlier Agent Task Market API. Pure: a view is a function of
//! the read state, of the log records that hold the texts the projection
//! leaves out (a task's full spec, a result, a verdict's feedback and
//! detail; the handler reads them, see `AppState::task_spec` and
//! `AppState::execution_records`) and of who is looking. This is the one
//! place that decides what a caller may see (task secrets are redacted here).

use crate::commands::{Claim, Command, Ctx, Policy, compute, decide};
use serde::Serialize;
use serde_json::Value;
use std::sync::Arc;
use taskledger_events::{
    AgentKeyId, ExecutionId, Principal, Record, ResultSubmitted, Rule, RuleKind, TaskSpec,
    TestLanguage, VerdictRecorded, Verification, VerifierKind,
};
use taskledger_projections::reputation::as_points;
use taskledger_projections::{
    AgentKey, Execution, LedgerRow, Owner, RiskFlag, State, Task, TaskStatus, VerificationSummary,
};
use utoipa::ToSchema;
use uuid::Uuid;

/// RFC 3339 UTC with milliseconds.
pub fn ts(ms: u64) -> String {
    i64::try_from(ms)
        .ok()
        .and_then(chrono::DateTime::from_timestamp_millis)
        .map(|t| t.to_rfc3339_opts(chrono::SecondsFormat::Millis, true))
        .unwrap_or_default()
}

fn ts_opt(ms: Option<u64>) -> Option<String> {
    ms.map(ts)
}

/// Hundredths as points with two decimals (500 -> 5.0).
pub fn points(hundredths: u16) -> f64 {
    as_points(hundredths)
}

fn json_text(text: Option<&str>) -> Option<Value> {
    text.and_then(|t| serde_json::from_str(t).ok())
}

pub fn hex(bytes: &[u8]) -> String {
    bytes.iter().map(|b| format!("{b:02x}")).collect()
}

/// A stored compute source as shown: its name, token plan and tier (the
/// rule is `commands::compute`).
struct ComputeView {
    source: Option<String>,
    token_plan: Option<String>,
    tier: Option<u8>,
}

fn compute_view(stored: Option<&str>) -> ComputeView {
    match stored.map(compute::describe) {
        Some((source, token_plan, tier)) => ComputeView {
            source: Some(source),
            token_plan,
            tier,
        },
        None => ComputeView {
            source: None,
            token_plan: None,
            tier: None,
        },
    }
}

// ---- accounts ---------------------------------------------------------------

#[derive(Serialize, ToSchema)]
pub struct Balances {
    pub gift_balance: u64,
    pub earned_balance: u64,
    pub frozen_earned: u64,
    /// What can be spent on publishing: gift + earned.
    pub credit_balance: u64,
}

impl Balances {
    pub fn of(owner: &Owner) -> Self {
        let w = owner.wallet;
        Balances {
            gift_balance: w.gift,
            earned_balance: w.earned,
            frozen_earned: w.frozen,
            credit_balance: w.spendable(),
        }
    }
}

/// The profile of an owner or of an agent key (`type: agent_key`).
#[derive(Serialize, ToSchema)]
pub struct Profile {
    pub id: Uuid,
    /// `human` or `agent` for an owner account, `agent_key` for an agent key.
    #[serde(rename = "type")]
    pub kind: &'static str,
    pub name: String,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub email: Option<String>,
    /// `local_model`, `payg_api_key`, `token_plan_whitelist`,
    /// `platform_credit` or `unspecified`; absent for a human that declared none.
    pub compute_source: Option<String>,
    /// The whitelisted plan of a `token_plan_whitelist` source.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub token_plan: Option<String>,
    /// 1 local model, 2 pay as you go or a whitelisted plan, 3 platform
    /// credit; none for `unspecified`.
    pub compute_tier: Option<u8>,
    #[serde(flatten)]
    pub balances: Balances,
    /// 0-10. An agent key's own; an owner's is the mean over its agent keys
    /// that have verdicts (5.0 before any).
    pub reputation_score: f64,
    /// For an agent key: the owner whose wallet it earns into.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub owner_id: Option<Uuid>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub counts: Option<Counts>,
    pub created_at: String,
}

#[derive(Serialize, ToSchema)]
pub struct Counts {
    pub claimed: u32,
    pub submitted: u32,
    pub accepted: u32,
    pub rejected: u32,
}

fn counts(k: &AgentKey) -> Counts {
    Counts {
        claimed: k.counts.claimed,
        submitted: k.counts.submitted,
        accepted: k.counts.accepted,
        rejected: k.counts.rejected,
    }
}

pub fn owner_reputation(state: &State, owner: &Owner) -> u16 {
    let rated: Vec<u16> = owner
        .agent_keys
        .iter()
        .filter_map(|id| state.agent_keys.get(id))
        .filter(|k| !k.history.is_empty())
        .map(|k| k.reputation)
        .collect();
    if rated.is_empty() {
        taskledger_projections::reputation::REPUTATION_START
    } else {
        let sum: u32 = rated.iter().map(|r| u32::from(*r)).sum();
        (sum / rated.len() as u32) as u16
    }
}

pub fn owner_profile(state: &State, owner: &Owner, private: bool) -> Profile {
    let c = compute_view(owner.compute_source.as_deref());
    Profile {
        id: owner.id.0,
        kind: match owner.kind {
            taskledger_events::AccountKind::Human => "human",
            taskledger_events::AccountKind::Agent => "agent",
        },
        name: owner.name.clone(),
        email: if private { owner.email.clone() } else { None },
        compute_source: c.source,
        token_plan: c.token_plan,
        compute_tier: c.tier,
        balances: Balances::of(owner),
        reputation_score: points(owner_reputation(state, owner)),
        owner_id: None,
        counts: None,
        created_at: ts(owner.registered_at_ms),
    }
}

pub fn agent_profile(owner: &Owner, key: &AgentKey) -> Profile {
    let c = compute_view(Some(&key.compute_source));
    Profile {
        id: key.id.0,
        kind: "agent_key",
        name: key.name.clone(),
        email: None,
        compute_source: c.source,
        token_plan: c.token_plan,
        compute_tier: c.tier,
        balances: Balances::of(owner),
        reputation_score: points(key.reputation),
        owner_id: Some(owner.id.0),
        counts: Some(counts(key)),
        created_at: ts(key.issued_at_ms),
    }
}

#[derive(Serialize, ToSchema)]
pub struct AgentKeyView {
    pub id: Uuid,
    pub name: String,
    /// `local_model`, `payg_api_key`, `token_plan_whitelist`,
    /// `platform_credit` or `unspecified`.
    pub compute_source: String,
    /// The whitelisted plan of a `token_plan_whitelist` source.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub token_plan: Option<String>,
    /// 1, 2 or 3; none for `unspecified` (such a key cannot claim).
    pub compute_tier: Option<u8>,
    pub reputation_score: f64,
    pub counts: Counts,
    pub revoked: bool,
    pub created_at: String,
    /// Shown once, when the key is issued.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub api_key: Option<String>,
}

pub fn agent_key_view(k: &AgentKey, api_key: Option<String>) -> AgentKeyView {
    let c = compute_view(Some(&k.compute_source));
    AgentKeyView {
        id: k.id.0,
        name: k.name.clone(),
        compute_source: c.source.unwrap_or_default(),
        token_plan: c.token_plan,
        compute_tier: c.tier,
        reputation_score: points(k.reputation),
        counts: counts(k),
        revoked: k.revoked,
        created_at: ts(k.issued_at_ms),
        api_key,
    }
}

#[derive(Serialize, ToSchema)]
pub struct LedgerRowView {
    pub seq: u64,
    pub at: String,
    /// `gift`, `earned` or `frozen`.
    pub class: &'static str,
    pub delta: i64,
    pub balance_after: u64,
    pub reason: &'static str,
    pub task_id: Option<Uuid>,
}

pub fn ledger_row(r: &LedgerRow) -> LedgerRowView {
    LedgerRowView {
        seq: r.seq,
        at: ts(r.at_ms),
        class: r.class.as_str(),
        delta: r.delta,
        balance_after: r.balance_after,
        reason: r.reason.as_str(),
        task_id: r.task_id.map(|t| t.0),
    }
}

// ---- tasks ------------------------------------------------------------------

/// How much of a task a caller may see.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Access {
    /// Anyone else: no verification secrets at all.
    Public,
    /// An agent key that claimed the task: tests, rubric and visible rules,
    /// but never the `hidden_*` parts.
    Claimant,
    /// The publisher: everything.
    Publisher,
}

impl Access {
    pub fn of(state: &State, caller: &Principal, task: &Task) -> Access {
        match caller {
            Principal::Owner(id) if *id == task.publisher_id => Access::Publisher,
            Principal::Agent(key) if has_claimed(state, *key, task) => Access::Claimant,
            _ => Access::Public,
        }
    }
}

fn has_claimed(state: &State, key: AgentKeyId, task: &Task) -> bool {
    task.executions
        .iter()
        .filter_map(|x| state.executions.get(x))
        .any(|x| x.agent_key_id == key)
}

#[derive(Serialize, ToSchema)]
pub struct RuleView {
    #[serde(rename = "type")]
    pub kind: &'static str,
    /// Absent while hidden from the caller.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub value: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub path: Option<String>,
    pub hidden: bool,
}

pub fn rule_kind_name(k: RuleKind) -> &'static str {
    match k {
        RuleKind::Contains => "contains",
        RuleKind::NotContains => "not_contains",
        RuleKind::Regex => "regex",
        RuleKind::MinLength => "min_length",
        RuleKind::JsonPathEquals => "json_path_equals",
    }
}

fn rule_view(r: &Rule, access: Access) -> RuleView {
    let visible = !r.hidden || access == Access::Publisher;
    RuleView {
        kind: rule_kind_name(r.kind),
        value: visible.then(|| r.value.clone()),
        path: r.path.clone(),
        hidden: r.hidden,
    }
}

pub fn mode_name(v: &Verification) -> &'static str {
    match v {
        Verification::Manual => "manual",
        Verification::AutoRules { .. } => "auto_rules",
        Verification::AutoTests { .. } => "auto_tests",
        Verification::AutoLlm { .. } => "auto_llm",
    }
}

pub fn language_name(l: TestLanguage) -> &'static str {
    match l {
        TestLanguage::Python => "python",
        TestLanguage::Javascript => "javascript",
    }
}

/// The verification package as the caller may see it. Fields that are
/// secret to the caller are absent and named in `redacted`.
#[derive(Serialize, ToSchema)]
pub struct VerificationView {
    pub mode: &'static str,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub rules: Option<Vec<RuleView>>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub language: Option<&'static str>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub tests: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub hidden_tests: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub rubric: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub pass_threshold: Option<f64>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub hidden_rubric: Option<String>,
    /// The secret parts withheld from this caller.
    pub redacted: Vec<&'static str>,
}

pub fn verification_view(v: &Verification, access: Access) -> VerificationView {
    let mut out = VerificationView {
        mode: mode_name(v),
        rules: None,
        language: None,
        tests: None,
        hidden_tests: None,
        rubric: None,
        pass_threshold: None,
        hidden_rubric: None,
        redacted: Vec::new(),
    };
    match v {
        Verification::Manual => {}
        Verification::AutoRules { rules } => {
            out.rules = Some(rules.iter().map(|r| rule_view(r, access)).collect());
            if access != Access::Publisher && rules.iter().any(|r| r.hidden) {
                out.redacted.push("rules.value (hidden rules)");
            }
        }
        Verification::AutoTests {
            language,
            tests,
            hidden_tests,
        } => {
            out.language = Some(language_name(*language));
            if access == Access::Public {
                out.redacted.push("tests");
            } else {
                out.tests = Some(tests.clone());
            }
            if let Some(h) = hidden_tests {
                if access == Access::Publisher {
                    out.hidden_tests = Some(h.clone());
                } else {
                    out.redacted.push("hidden_tests");
                }
            }
        }
        Verification::AutoLlm {
            rubric,
            pass_threshold,
            hidden_rubric,
        } => {
            out.pass_threshold = Some(points(*pass_threshold));
            if access == Access::Public {
                out.redacted.push("rubric");
            } else {
                out.rubric = Some(rubric.clone());
            }
            if let Some(h) = hidden_rubric {
                if access == Access::Publisher {
                    out.hidden_rubric = Some(h.clone());
                } else {
                    out.redacted.push("hidden_rubric");
                }
            }
        }
    }
    out
}

/// One line any caller may see about how a task is verified.
pub fn verification_summary(v: &VerificationSummary) -> String {
    match *v {
        VerificationSummary::Manual => "manual review by the publisher".into(),
        VerificationSummary::AutoRules {
            rules,
            hidden_rules: hidden,
        } => {
            format!(
                "auto_rules: {} rule(s), all must pass{}",
                rules,
                if hidden > 0 {
                    format!(" ({hidden} hidden)")
                } else {
                    String::new()
                }
            )
        }
        VerificationSummary::AutoTests {
            language,
            hidden_tests,
        } => format!(
            "auto_tests: {} tests must pass{}",
            language_name(language),
            if hidden_tests {
                " (plus hidden tests)"
            } else {
                ""
            }
        ),
        VerificationSummary::AutoLlm { pass_threshold, .. } => format!(
            "auto_llm: an LLM judge scores against a rubric; pass at {:.1}",
            points(pass_threshold)
        ),
    }
}

/// Whether the caller could claim the task now, decided by the claim rule
/// itself (no rule written twice).
#[derive(Serialize, ToSchema)]
pub struct Claimability {
    pub claimable: bool,
    /// The error code a claim would get.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub reason: Option<&'static str>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub message: Option<String>,
}

pub fn claimability(state: &State, caller: &Principal, task: &Task, now_ms: u64) -> Claimability {
    let command = Command::Claim(Claim {
        task_id: task.id,
        execution_id: ExecutionId::from_u128(0),
    });
    let policy = Policy::default();
    let ctx = Ctx {
        principal: caller,
        now_ms,
        policy: &policy,
    };
    match decide(state, ctx, &command) {
        Ok(_) => Claimability {
            claimable: true,
            reason: None,
            message: None,
        },
        Err(e) => Claimability {
            claimable: false,
            reason: Some(e.code()),
            message: Some(e.to_string()),
        },
    }
}

#[derive(Serialize, ToSchema)]
pub struct TaskView {
    pub id: Uuid,
    pub publisher_id: Uuid,
    pub title: String,
    pub description: String,
    #[serde(rename = "type")]
    pub task_type: String,
    pub reward_credits: u64,
    #[schema(value_type = Option<Object>)]
    pub requirements: Option<Value>,
    #[schema(value_type = Option<Object>)]
    pub input_data: Option<Value>,
    pub deadline: Option<String>,
    pub max_executors: u8,
    pub tags: Vec<String>,
    pub min_reputation: f64,
    pub verification: VerificationView,
    pub verification_summary: String,
    /// `open`, `claimed`, `submitted`, `completed`, `failed`, `cancelled`, `expired`.
    pub status: &'static str,
    pub active_executions: u8,
    pub executions_count: usize,
    /// Escrow by class; 0 once settled.
    pub escrow_gift: u64,
    pub escrow_earned: u64,
    pub reopened: u32,
    pub created_at: String,
    pub closed_at: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub claimability: Option<Claimability>,
}

/// A task as a caller with `access` ([`Access::of`]) may see it. `spec` is
/// the task's full spec, from the record that published it
/// (`AppState::task_spec`).
pub fn task_view(access: Access, task: &Task, spec: &TaskSpec) -> TaskView {
    let s = spec;
    TaskView {
        id: task.id.0,
        publisher_id: task.publisher_id.0,
        title: s.title.clone(),
        description: s.description.clone(),
        task_type: s.task_type.clone(),
        reward_credits: s.reward,
        requirements: json_text(s.requirements.as_deref()),
        input_data: json_text(s.input_data.as_deref()),
        deadline: ts_opt(s.deadline_ms),
        max_executors: s.max_executors,
        tags: s.tags.clone(),
        min_reputation: points(s.min_reputation),
        verification: verification_view(&s.verification, access),
        verification_summary: verification_summary(&task.spec.verification),
        status: task.status().as_str(),
        active_executions: task.active(),
        executions_count: task.executions.len(),
        escrow_gift: task.escrow_gift,
        escrow_earned: task.escrow_earned,
        reopened: task.reopened,
        created_at: ts(task.published_at_ms),
        closed_at: ts_opt(task.closed_at_ms),
        claimability: None,
    }
}

#[derive(Serialize, ToSchema)]
pub struct TaskSummary {
    pub id: Uuid,
    pub title: String,
    #[serde(rename = "type")]
    pub task_type: String,
    pub reward_credits: u64,
    pub status: &'static str,
    pub publisher_id: Uuid,
    pub verification_summary: String,
}

pub fn task_summary(task: &Task) -> TaskSummary {
    TaskSummary {
        id: task.id.0,
        title: task.spec.title.to_string(),
        task_type: task.spec.task_type.to_string(),
        reward_credits: task.spec.reward,
        status: task.status().as_str(),
        publisher_id: task.publisher_id.0,
        verification_summary: verification_summary(&task.spec.verification),
    }
}

pub fn task_status_name(s: TaskStatus) -> &'static str {
    s.as_str()
}

// ---- executions ---------------------------------------------------------------

pub fn verifier_name(v: VerifierKind) -> &'static str {
    match v {
        VerifierKind::Publisher => "publisher",
        VerifierKind::AutoRules => "auto_rules",
        VerifierKind::AutoTests => "auto_tests",
        VerifierKind::AutoLlm => "auto_llm",
        VerifierKind::Operator => "operator",
    }
}

#[derive(Serialize, ToSchema)]
pub struct ExecutionView {
    pub id: Uuid,
    pub task_id: Uuid,
    pub agent_key_id: Uuid,
    pub executor_owner_id: Uuid,
    /// `in_progress`, `submitted`, `accepted`, `rejected`, `superseded`, `released`.
    pub status: &'static str,
    pub claimed_at: String,
    pub lease_expires_at: String,
    pub submitted_at: Option<String>,
    pub result: Option<String>,
    #[schema(value_type = Option<Object>)]
    pub result_metadata: Option<Value>,
    /// blake3 of the result text, hex.
    pub result_hash: Option<String>,
    /// True when an automatic verifier decided.
    pub auto_verified: bool,
    pub score: Option<f64>,
    pub feedback: Option<String>,
    pub verifier: Option<&'static str>,
    #[schema(value_type = Option<Object>)]
    pub verification_detail: Option<Value>,
    pub verified_at: Option<String>,
    /// Why verification fell back to manual review.
    pub fallback_reason: Option<String>,
    pub ended_at: Option<String>,
}

/// The log records that hold an execution's texts: its submission (result
/// and metadata) and its verdict (feedback and detail). Read by
/// `AppState::execution_records`; empty for an execution without either.
#[derive(Clone, Debug, Default)]
pub struct ExecutionRecords {
    pub submitted: Option<Arc<Record>>,
    pub verdict: Option<Arc<Record>>,
}

impl ExecutionRecords {
    pub fn submission<'r>(&'r self, x: &Execution) -> Option<&'r ResultSubmitted> {
        self.submitted.as_ref().and_then(|r| x.submission_from(r))
    }

    pub fn verdict<'r>(&'r self, x: &Execution) -> Option<&'r VerdictRecorded> {
        self.verdict.as_ref().and_then(|r| x.verdict_from(r))
    }
}

/// An execution, with the texts from its records.
pub fn execution_view(x: &Execution, records: &ExecutionRecords) -> ExecutionView {
    let v = x.verdict.as_ref();
    let submission = records.submission(x);
    let verdict = records.verdict(x);
    ExecutionView {
        id: x.id.0,
        task_id: x.task_id.0,
        agent_key_id: x.agent_key_id.0,
        executor_owner_id: x.owner_id.0,
        status: x.status.as_str(),
        claimed_at: ts(x.claimed_at_ms),
        lease_expires_at: ts(x.lease_expires_ms),
        submitted_at: ts_opt(x.submitted_at_ms),
        result: submission.map(|s| s.result.clone()),
        result_metadata: json_text(submission.and_then(|s| s.result_metadata.as_deref())),
        result_hash: x.result_hash.map(|h| hex(&h)),
        auto_verified: v.is_some_and(|v| {
            !matches!(v.verifier, VerifierKind::Publisher | VerifierKind::Operator)
        }),
        score: v.map(|v| points(v.score)),
        feedback: verdict.and_then(|v| v.feedback.clone()),
        verifier: v.map(|v| verifier_name(v.verifier)),
        verification_detail: verdict.and_then(|v| json_text(v.detail.as_deref())),
        verified_at: v.map(|v| ts(v.at_ms)),
        fallback_reason: x.fallback.as_deref().map(str::to_owned),
        ended_at: ts_opt(x.ended_at_ms),
    }
}

/// The ledger rows a verdict on this execution caused: the payout to the
/// executor's owner, or the refund to the publisher when a reject closed the
/// task.
pub fn settlement(state: &State, x: &Execution) -> Vec<LedgerRowView> {
    let Some(v) = &x.verdict else {
        return Vec::new();
    };
    let Some(task) = state.tasks.get(&x.task_id) else {
        return Vec::new();
    };
    let mut rows = Vec::new();
    let mut take = |owner_id, keep: &dyn Fn(&LedgerRow) -> bool| {
        if let Some(o) = state.owners.get(&owner_id) {
            rows.extend(
                o.ledger
                    .iter()
                    .filter(|r| r.task_id == Some(task.id) && keep(r))
                    .map(ledger_row),
            );
        }
    };
    use taskledger_events::Reason;
    if v.accepted {
        take(x.owner_id, &|r| {
            r.reason == Reason::Payout
                || (r.reason == Reason::RiskFreeze && r.seq > v.seq && r.seq <= v.seq + 8)
        });
    } else if task.status() == TaskStatus::Failed {
        take(task.publisher_id, &|r| {
            r.reason == Reason::RefundFailed && r.seq > v.seq
        });
    }
    rows.sort_by_key(|r| r.seq);
    rows
}

/// The compute tier of the key that made an execution.
pub fn execution_tier(state: &State, x: &Execution) -> Option<u8> {
    let key = state.agent_keys.get(&x.agent_key_id)?;
    compute::tier_of(Some(&key.compute_source))
}

/// An execution's ranking score for its publisher, in hundredths: the
/// agent key's reputation plus its compute tier's bonus (tier 1 +2.0,
/// tier 2 +0.5, tier 3 or none +0).
pub fn rank_score(state: &State, x: &Execution) -> u32 {
    let rep = state
        .agent_keys
        .get(&x.agent_key_id)
        .map_or(0, |k| u32::from(k.reputation));
    rep + u32::from(compute::tier_bonus_hundredths(execution_tier(state, x)))
}

/// Sort key of a task's submissions: score descending, then the earlier
/// submit time (not yet submitted last), then the earlier claim, then the
/// id, so the order is total and the same on every read.
pub fn rank_key(state: &State, x: &Execution) -> (std::cmp::Reverse<u32>, u64, u64, Uuid) {
    (
        std::cmp::Reverse(rank_score(state, x)),
        x.submitted_at_ms.unwrap_or(u64::MAX),
        x.claimed_at_ms,
        x.id.0,
    )
}

/// Hundredths (of a ranking score) as points.
pub fn score_points(hundredths: u32) -> f64 {
    f64::from(hundredths) / 100.0
}

// ---- risk -----------------------------------------------------------------------

#[derive(Serialize, ToSchema)]
pub struct FlagView {
    pub id: Uuid,
    pub kind: &'static str,
    pub owner_id: Uuid,
    pub task_id: Option<Uuid>,
    pub reason: String,
    pub frozen: u64,
    /// `open`, `released` or `confirmed`.
    pub status: &'static str,
    pub raised_seq: u64,
    pub raised_at: String,
    pub resolved_by: Option<String>,
    pub resolution_reason: Option<String>,
    pub resolved_at: Option<String>,
}

pub fn flag_view(f: &RiskFlag) -> FlagView {
    let r = f.resolution.as_ref();
    FlagView {
        id: f.id.0,
        kind: f.kind.as_str(),
        owner_id: f.owner_id.0,
        task_id: f.task_id.map(|t| t.0),
        reason: f.reason.clone(),
        frozen: f.frozen,
        status: f.status.as_str(),
        raised_seq: f.raised_seq,
        raised_at: ts(f.raised_at_ms),
        resolved_by: r.map(|r| r.operator.clone()),
        resolution_reason: r.map(|r| r.reason.clone()),
        resolved_at: r.map(|r| ts(r.at_ms)),
    }
}
