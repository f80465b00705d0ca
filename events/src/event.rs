//! The v1 event catalogue: every fact the market can record.
//!
//! Evolution rules (the bytes of old logs must keep decoding and hashing the
//! same): never reorder or remove variants or fields; add new variants at the
//! end of [`Event`]; any other format change bumps the domain tag in
//! [`crate::record`]. Pure data: no I/O, no clock.
//!
//! Credits are integers. Every credit movement is a double-entry [`Transfer`]
//! carried inside the event that causes it, so an auditor sees each movement
//! and the projections re-check that it is exactly the one the rules demand.
//! Free-form JSON (requirements, metadata, verdict detail) is stored as JSON
//! text, so the binary codec never has to understand it.

use crate::ids::{AccountId, AgentKeyId, ExecutionId, FlagId, Hash, TaskId};
use serde::{Deserialize, Serialize};

/// Owner account type, as declared at registration.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, Serialize, Deserialize)]
pub enum AccountKind {
    Human,
    Agent,
}

/// Who issued a command.
#[derive(Clone, Debug, PartialEq, Eq, Hash, Serialize, Deserialize)]
pub enum Principal {
    Owner(AccountId),
    Agent(AgentKeyId),
    /// An operator, by the name they authenticated with.
    Operator(String),
    /// The service itself: timers, verification workers, the risk engine.
    System,
}

/// The class of credits a transfer moves. Gift credits can only be spent on
/// publishing; rewards are always paid as earned.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
pub enum CreditClass {
    Gift,
    Earned,
}

/// A ledger account. Wallet accounts hold one class each (`Gift` holds gift,
/// `Earned` and `Frozen` hold earned); a task's `Escrow` holds both classes,
/// kept apart so a refund returns the exact split. `Issuer` is the only
/// account that may go negative: it is minus everything ever granted.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
pub enum Account {
    Issuer,
    Redeemed,
    Gift(AccountId),
    Earned(AccountId),
    Frozen(AccountId),
    Escrow(TaskId),
}

/// One double-entry movement: `amount` credits of `class` leave `debit` and
/// arrive in `credit`.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, Serialize, Deserialize)]
pub struct Transfer {
    pub debit: Account,
    pub credit: Account,
    pub class: CreditClass,
    pub amount: u64,
}

/// Why credits moved; shown in the ledger view.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, Serialize, Deserialize)]
pub enum Reason {
    SignupGift,
    Grant,
    Publish,
    Payout,
    RefundFailed,
    RefundCancelled,
    RefundExpired,
    Redeem,
    RiskFreeze,
    RiskRelease,
}

impl Reason {
    pub fn as_str(self) -> &'static str {
        match self {
            Reason::SignupGift => "signup_gift",
            Reason::Grant => "grant",
            Reason::Publish => "publish",
            Reason::Payout => "payout",
            Reason::RefundFailed => "refund_failed",
            Reason::RefundCancelled => "refund_cancelled",
            Reason::RefundExpired => "refund_expired",
            Reason::Redeem => "redeem",
            Reason::RiskFreeze => "risk_freeze",
            Reason::RiskRelease => "risk_release",
        }
    }
}

/// How submissions to a task are verified.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub enum Verification {
    Manual,
    AutoRules {
        rules: Vec<Rule>,
    },
    AutoTests {
        language: TestLanguage,
        tests: String,
        hidden_tests: Option<String>,
    },
    /// `pass_threshold` in hundredths (600 = 6.00).
    AutoLlm {
        rubric: String,
        pass_threshold: u16,
        hidden_rubric: Option<String>,
    },
}

#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub enum TestLanguage {
    Python,
    Javascript,
}

/// One `auto_rules` rule. `hidden` values are never shown before a claim.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Rule {
    pub kind: RuleKind,
    pub value: String,
    pub path: Option<String>,
    pub hidden: bool,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub enum RuleKind {
    Contains,
    NotContains,
    Regex,
    MinLength,
    JsonPathEquals,
}

/// Everything a publisher states about a task.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct TaskSpec {
    pub title: String,
    pub description: String,
    pub task_type: String,
    pub reward: u64,
    /// JSON text.
    pub requirements: Option<String>,
    /// JSON text.
    pub input_data: Option<String>,
    pub deadline_ms: Option<u64>,
    pub max_executors: u8,
    pub tags: Vec<String>,
    /// Hundredths, 0..=1000.
    pub min_reputation: u16,
    pub verification: Verification,
}

impl TaskSpec {
    /// A task with only what every task states: one executor, no deadline,
    /// requirements, input, tags or reputation gate, reviewed by its
    /// publisher. Tests, benches and fuzzers start here and change the rest
    /// with struct update syntax.
    pub fn manual(title: &str, description: &str, task_type: &str, reward: u64) -> Self {
        TaskSpec {
            title: title.to_owned(),
            description: description.to_owned(),
            task_type: task_type.to_owned(),
            reward,
            requirements: None,
            input_data: None,
            deadline_ms: None,
            max_executors: 1,
            tags: Vec::new(),
            min_reputation: 0,
            verification: Verification::Manual,
        }
    }
}

/// Who produced a verdict.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, Serialize, Deserialize)]
pub enum VerifierKind {
    Publisher,
    AutoRules,
    AutoTests,
    AutoLlm,
    Operator,
}

/// What a risk flag is about.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, Serialize, Deserialize)]
pub enum RiskKind {
    SelfDealingSuspected,
    RapidSignupCluster,
    CollusionSuspected,
    OperatorHold,
    /// The remote risk engine could not be asked about an accepted
    /// settlement: the payout is held until it answers (fail closed).
    RiskCheckUnavailable,
}

impl RiskKind {
    pub fn as_str(self) -> &'static str {
        match self {
            RiskKind::SelfDealingSuspected => "self_dealing_suspected",
            RiskKind::RapidSignupCluster => "rapid_signup_cluster",
            RiskKind::CollusionSuspected => "collusion_suspected",
            RiskKind::OperatorHold => "operator_hold",
            RiskKind::RiskCheckUnavailable => "risk_check_unavailable",
        }
    }
}

#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct AccountRegistered {
    pub account_id: AccountId,
    pub kind: AccountKind,
    pub name: String,
    pub email: Option<String>,
    /// The canonical declaration `<source>[:<token_plan>]` (for example
    /// `local_model`, `token_plan_whitelist:openai_api`), as checked by the
    /// service's `commands::compute`; absent for a human that declared none.
    pub compute_source: Option<String>,
    pub compute_attestation: Option<String>,
    /// JSON text.
    pub metadata: Option<String>,
    /// blake3 of the owner key; the key itself is never stored.
    pub key_hash: Hash,
    /// The client address seen at registration (for the risk engine).
    pub client_addr: Option<String>,
}

#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct OwnerKeyRotated {
    pub account_id: AccountId,
    pub key_hash: Hash,
}

#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct AgentKeyIssued {
    pub key_id: AgentKeyId,
    pub owner_id: AccountId,
    pub name: String,
    /// The canonical declaration, as in `AccountRegistered::compute_source`.
    pub compute_source: String,
    pub key_hash: Hash,
}

#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct AgentKeyRevoked {
    pub key_id: AgentKeyId,
    pub owner_id: AccountId,
}

#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct CreditsGranted {
    pub owner_id: AccountId,
    pub amount: u64,
    pub reason: Reason,
    pub transfers: Vec<Transfer>,
}

#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct TaskPublished {
    pub task_id: TaskId,
    pub publisher_id: AccountId,
    pub spec: TaskSpec,
    /// The reward moved into escrow: gift first, then earned.
    pub transfers: Vec<Transfer>,
}

#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct TaskClaimed {
    pub task_id: TaskId,
    pub execution_id: ExecutionId,
    pub agent_key_id: AgentKeyId,
    pub lease_expires_ms: u64,
}

#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct ResultSubmitted {
    pub task_id: TaskId,
    pub execution_id: ExecutionId,
    pub result: String,
    /// JSON text.
    pub result_metadata: Option<String>,
    /// blake3 of `result`'s UTF-8 bytes.
    pub result_hash: Hash,
}

#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct VerdictRecorded {
    pub task_id: TaskId,
    pub execution_id: ExecutionId,
    pub accepted: bool,
    /// Hundredths, 0..=1000. The reputation outcome of an accept; a reject
    /// counts 0 whatever this says.
    pub score: u16,
    pub feedback: Option<String>,
    pub verifier: VerifierKind,
    /// JSON text (per-rule outcomes, judge reasoning, isolation used, ...).
    pub detail: Option<String>,
    /// The payout on accept (escrow to the executor's owner, as earned);
    /// empty on reject.
    pub transfers: Vec<Transfer>,
}

#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct VerificationFallback {
    pub task_id: TaskId,
    pub execution_id: ExecutionId,
    pub reason: String,
}

#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct ExecutionSuperseded {
    pub task_id: TaskId,
    pub execution_id: ExecutionId,
}

#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct LeaseReleased {
    pub task_id: TaskId,
    pub execution_id: ExecutionId,
}

#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct TaskReopened {
    pub task_id: TaskId,
}

/// A rejected task closed as `failed`, escrow refunded in its exact split.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct TaskClosed {
    pub task_id: TaskId,
    pub transfers: Vec<Transfer>,
}

#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct TaskCancelled {
    pub task_id: TaskId,
    pub transfers: Vec<Transfer>,
}

#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct TaskExpired {
    pub task_id: TaskId,
    pub transfers: Vec<Transfer>,
}

#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct CreditsRedeemed {
    pub owner_id: AccountId,
    pub amount: u64,
    pub transfers: Vec<Transfer>,
}

#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct RiskFlagRaised {
    pub flag_id: FlagId,
    pub kind: RiskKind,
    pub owner_id: AccountId,
    pub task_id: Option<TaskId>,
    pub reason: String,
    /// The freeze (earned to frozen); empty when nothing is held.
    pub transfers: Vec<Transfer>,
}

#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct RiskFlagReleased {
    pub flag_id: FlagId,
    pub operator: String,
    pub reason: String,
    /// The unfreeze (frozen back to earned).
    pub transfers: Vec<Transfer>,
}

#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct RiskFlagConfirmed {
    pub flag_id: FlagId,
    pub operator: String,
    pub reason: String,
}

/// Closes the events of a command that carried an idempotency key: the
/// `events` records before this one are that command's answer.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct IdempotencyRecorded {
    pub principal: Principal,
    pub key: String,
    /// blake3 of the request, so a reuse of the key for another request is
    /// refused rather than answered with the wrong result.
    pub request_hash: Hash,
    pub events: u32,
}

/// Every event of the v1 catalogue. Append-only: see the module doc.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub enum Event {
    AccountRegistered(AccountRegistered),
    OwnerKeyRotated(OwnerKeyRotated),
    AgentKeyIssued(AgentKeyIssued),
    AgentKeyRevoked(AgentKeyRevoked),
    CreditsGranted(CreditsGranted),
    TaskPublished(TaskPublished),
    TaskClaimed(TaskClaimed),
    ResultSubmitted(ResultSubmitted),
    VerdictRecorded(VerdictRecorded),
    VerificationFallback(VerificationFallback),
    ExecutionSuperseded(ExecutionSuperseded),
    LeaseReleased(LeaseReleased),
    TaskReopened(TaskReopened),
    TaskClosed(TaskClosed),
    TaskCancelled(TaskCancelled),
    TaskExpired(TaskExpired),
    CreditsRedeemed(CreditsRedeemed),
    RiskFlagRaised(RiskFlagRaised),
    RiskFlagReleased(RiskFlagReleased),
    RiskFlagConfirmed(RiskFlagConfirmed),
    IdempotencyRecorded(IdempotencyRecorded),
}

impl Event {
    /// The stable snake_case name used in SSE frames, `?type=` filters and reports.
    pub fn kind(&self) -> &'static str {
        match self {
            Event::AccountRegistered(_) => "account_registered",
            Event::OwnerKeyRotated(_) => "owner_key_rotated",
            Event::AgentKeyIssued(_) => "agent_key_issued",
            Event::AgentKeyRevoked(_) => "agent_key_revoked",
            Event::CreditsGranted(_) => "credits_granted",
            Event::TaskPublished(_) => "task_published",
            Event::TaskClaimed(_) => "task_claimed",
            Event::ResultSubmitted(_) => "result_submitted",
            Event::VerdictRecorded(_) => "verdict_recorded",
            Event::VerificationFallback(_) => "verification_fallback",
            Event::ExecutionSuperseded(_) => "execution_superseded",
            Event::LeaseReleased(_) => "lease_released",
            Event::TaskReopened(_) => "task_reopened",
            Event::TaskClosed(_) => "task_closed",
            Event::TaskCancelled(_) => "task_cancelled",
            Event::TaskExpired(_) => "task_expired",
            Event::CreditsRedeemed(_) => "credits_redeemed",
            Event::RiskFlagRaised(_) => "risk_flag_raised",
            Event::RiskFlagReleased(_) => "risk_flag_released",
            Event::RiskFlagConfirmed(_) => "risk_flag_confirmed",
            Event::IdempotencyRecorded(_) => "idempotency_recorded",
        }
    }

    /// The credit movements this event carries (empty for most).
    pub fn transfers(&self) -> &[Transfer] {
        match self {
            Event::CreditsGranted(e) => &e.transfers,
            Event::TaskPublished(e) => &e.transfers,
            Event::VerdictRecorded(e) => &e.transfers,
            Event::TaskClosed(e) => &e.transfers,
            Event::TaskCancelled(e) => &e.transfers,
            Event::TaskExpired(e) => &e.transfers,
            Event::CreditsRedeemed(e) => &e.transfers,
            Event::RiskFlagRaised(e) => &e.transfers,
            Event::RiskFlagReleased(e) => &e.transfers,
            _ => &[],
        }
    }

    /// The task this event concerns, if any.
    pub fn task_id(&self) -> Option<TaskId> {
        match self {
            Event::TaskPublished(e) => Some(e.task_id),
            Event::TaskClaimed(e) => Some(e.task_id),
            Event::ResultSubmitted(e) => Some(e.task_id),
            Event::VerdictRecorded(e) => Some(e.task_id),
            Event::VerificationFallback(e) => Some(e.task_id),
            Event::ExecutionSuperseded(e) => Some(e.task_id),
            Event::LeaseReleased(e) => Some(e.task_id),
            Event::TaskReopened(e) => Some(e.task_id),
            Event::TaskClosed(e) => Some(e.task_id),
            Event::TaskCancelled(e) => Some(e.task_id),
            Event::TaskExpired(e) => Some(e.task_id),
            Event::RiskFlagRaised(e) => e.task_id,
            _ => None,
        }
    }
}
