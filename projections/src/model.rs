//! The projected entities: owners and their wallets, agent keys, tasks,
//! executions, risk flags, and the credit-ledger rows. Plain data with
//! derived accessors; the rules that change them live in `state`.
//!
//! Compact by design: the projection keeps what the rules, the lists and
//! the counters need, and leaves large texts in the log. A task keeps a
//! [`SpecSummary`] and the seq of the record that published it; an
//! execution keeps the hash and seq of its submission and the outcome and
//! seq of its verdict. Whoever needs the full text (a task's description,
//! tests or rubric, a result, a verdict's feedback and detail) reads that
//! record from the log by seq and takes the text from it with
//! [`Task::spec_from`], [`Execution::submission_from`] or
//! [`Execution::verdict_from`]. Pure: no I/O here; the caller reads.

use rustc_hash::FxHashMap;
use serde::{Deserialize, Serialize};
use taskledger_events::{
    AccountId, AccountKind, AgentKeyId, CreditClass, Event, ExecutionId, FlagId, Hash, Principal,
    Reason, Record, ResultSubmitted, RiskKind, TaskId, TaskSpec, TestLanguage, VerdictRecorded,
    Verification, VerifierKind,
};

/// A map keyed by random UUIDs: Fx hashing is fast and, with random keys,
/// collision-resistant enough.
pub type Map<K, V> = FxHashMap<K, V>;

/// An owner's wallet. Gift holds gift credits, earned and frozen hold earned.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct Wallet {
    pub gift: u64,
    pub earned: u64,
    pub frozen: u64,
}

impl Wallet {
    /// What the owner can spend on publishing.
    pub fn spendable(&self) -> u64 {
        self.gift + self.earned
    }
}

/// Which wallet balance a ledger row is about.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub enum WalletClass {
    Gift,
    Earned,
    Frozen,
}

impl WalletClass {
    pub fn as_str(self) -> &'static str {
        match self {
            WalletClass::Gift => "gift",
            WalletClass::Earned => "earned",
            WalletClass::Frozen => "frozen",
        }
    }
}

/// One movement of one wallet balance, derived from the transfers.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct LedgerRow {
    pub seq: u64,
    pub at_ms: u64,
    pub class: WalletClass,
    pub delta: i64,
    pub balance_after: u64,
    pub reason: Reason,
    pub task_id: Option<TaskId>,
}

#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Owner {
    pub id: AccountId,
    pub kind: AccountKind,
    pub name: String,
    pub email: Option<String>,
    pub compute_source: Option<String>,
    pub compute_attestation: Option<String>,
    pub metadata: Option<String>,
    pub key_hash: Hash,
    pub client_addr: Option<String>,
    pub registered_at_ms: u64,
    pub wallet: Wallet,
    pub ledger: Vec<LedgerRow>,
    pub agent_keys: Vec<AgentKeyId>,
    pub published: Vec<TaskId>,
}

/// One verdict's effect on an identity's reputation.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct ReputationRow {
    pub seq: u64,
    pub at_ms: u64,
    pub execution_id: ExecutionId,
    pub outcome: u16,
    pub score_after: u16,
}

#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct ExecutionCounts {
    pub claimed: u32,
    pub submitted: u32,
    pub accepted: u32,
    pub rejected: u32,
}

#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct AgentKey {
    pub id: AgentKeyId,
    pub owner_id: AccountId,
    pub name: String,
    pub compute_source: String,
    pub key_hash: Hash,
    pub issued_at_ms: u64,
    pub revoked: bool,
    /// Hundredths, 0..=1000.
    pub reputation: u16,
    pub history: Vec<ReputationRow>,
    pub counts: ExecutionCounts,
    pub executions: Vec<ExecutionId>,
}

/// Task status as the API names it.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
pub enum TaskStatus {
    Open,
    Claimed,
    Submitted,
    Completed,
    Failed,
    Cancelled,
    Expired,
}

impl TaskStatus {
    pub const ALL: [TaskStatus; 7] = [
        TaskStatus::Open,
        TaskStatus::Claimed,
        TaskStatus::Submitted,
        TaskStatus::Completed,
        TaskStatus::Failed,
        TaskStatus::Cancelled,
        TaskStatus::Expired,
    ];

    pub fn as_str(self) -> &'static str {
        match self {
            TaskStatus::Open => "open",
            TaskStatus::Claimed => "claimed",
            TaskStatus::Submitted => "submitted",
            TaskStatus::Completed => "completed",
            TaskStatus::Failed => "failed",
            TaskStatus::Cancelled => "cancelled",
            TaskStatus::Expired => "expired",
        }
    }

    pub fn parse(s: &str) -> Option<Self> {
        Self::ALL.into_iter().find(|st| st.as_str() == s)
    }

    pub fn is_terminal(self) -> bool {
        matches!(
            self,
            TaskStatus::Completed
                | TaskStatus::Failed
                | TaskStatus::Cancelled
                | TaskStatus::Expired
        )
    }
}

/// How a task is verified, without the texts (rule values, tests, rubric):
/// what the rules and the one-line summary need.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub enum VerificationSummary {
    Manual,
    /// How many rules, and how many of them are hidden.
    AutoRules {
        rules: u16,
        hidden_rules: u16,
    },
    AutoTests {
        language: TestLanguage,
        hidden_tests: bool,
    },
    /// `pass_threshold` in hundredths.
    AutoLlm {
        pass_threshold: u16,
        hidden_rubric: bool,
    },
}

impl VerificationSummary {
    pub fn of(v: &Verification) -> Self {
        match v {
            Verification::Manual => VerificationSummary::Manual,
            Verification::AutoRules { rules } => VerificationSummary::AutoRules {
                rules: u16::try_from(rules.len()).unwrap_or(u16::MAX),
                hidden_rules: u16::try_from(rules.iter().filter(|r| r.hidden).count())
                    .unwrap_or(u16::MAX),
            },
            Verification::AutoTests {
                language,
                hidden_tests,
                ..
            } => VerificationSummary::AutoTests {
                language: *language,
                hidden_tests: hidden_tests.is_some(),
            },
            Verification::AutoLlm {
                pass_threshold,
                hidden_rubric,
                ..
            } => VerificationSummary::AutoLlm {
                pass_threshold: *pass_threshold,
                hidden_rubric: hidden_rubric.is_some(),
            },
        }
    }

    pub fn is_manual(&self) -> bool {
        matches!(self, VerificationSummary::Manual)
    }
}

/// What the projection keeps of a [`TaskSpec`]. The rest (description,
/// requirements, input data, tags, rule values, tests, rubric) is in the
/// record at [`Task::published_seq`]: see [`Task::spec_from`].
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct SpecSummary {
    pub title: Box<str>,
    pub task_type: Box<str>,
    pub reward: u64,
    pub deadline_ms: Option<u64>,
    pub max_executors: u8,
    /// Hundredths, 0..=1000.
    pub min_reputation: u16,
    pub verification: VerificationSummary,
}

impl SpecSummary {
    /// The summary of a spec, taking its title and type.
    pub fn take(spec: TaskSpec) -> Self {
        SpecSummary {
            verification: VerificationSummary::of(&spec.verification),
            title: spec.title.into_boxed_str(),
            task_type: spec.task_type.into_boxed_str(),
            reward: spec.reward,
            deadline_ms: spec.deadline_ms,
            max_executors: spec.max_executors,
            min_reputation: spec.min_reputation,
        }
    }

    /// The summary of a spec someone else keeps.
    pub fn of(spec: &TaskSpec) -> Self {
        SpecSummary {
            verification: VerificationSummary::of(&spec.verification),
            title: spec.title.as_str().into(),
            task_type: spec.task_type.as_str().into(),
            reward: spec.reward,
            deadline_ms: spec.deadline_ms,
            max_executors: spec.max_executors,
            min_reputation: spec.min_reputation,
        }
    }
}

#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Task {
    pub id: TaskId,
    pub publisher_id: AccountId,
    pub spec: SpecSummary,
    /// The record that published the task: it holds the full spec.
    pub published_seq: u64,
    pub published_at_ms: u64,
    /// The escrow, by class. Equals the reward until the task settles, then 0.
    pub escrow_gift: u64,
    pub escrow_earned: u64,
    /// `Some` once the task reached a terminal status.
    pub closed: Option<TaskStatus>,
    pub closed_at_ms: Option<u64>,
    /// Every execution of the task, in claim order (kept at exact capacity:
    /// most tasks have one).
    pub executions: Vec<ExecutionId>,
    /// Active executions by status.
    pub in_progress: u8,
    pub submitted: u8,
    pub winner: Option<ExecutionId>,
    pub reopened: u32,
}

impl Task {
    pub fn status(&self) -> TaskStatus {
        match self.closed {
            Some(s) => s,
            None if self.submitted > 0 => TaskStatus::Submitted,
            None if self.in_progress > 0 => TaskStatus::Claimed,
            None => TaskStatus::Open,
        }
    }

    pub fn active(&self) -> u8 {
        self.in_progress + self.submitted
    }

    pub fn escrow(&self) -> u64 {
        self.escrow_gift + self.escrow_earned
    }

    /// The escrow the rules demand: the whole reward until settled.
    pub fn unsettled_reward(&self) -> u64 {
        if self.closed.is_some() {
            0
        } else {
            self.spec.reward
        }
    }

    /// The full spec, from the record at [`Task::published_seq`]; `None`
    /// if `record` is not the one that published this task.
    pub fn spec_from<'r>(&self, record: &'r Record) -> Option<&'r TaskSpec> {
        match &record.event {
            Event::TaskPublished(p) if record.seq == self.published_seq && p.task_id == self.id => {
                Some(&p.spec)
            }
            _ => None,
        }
    }
}

#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, Serialize, Deserialize)]
pub enum ExecutionStatus {
    InProgress,
    Submitted,
    Accepted,
    Rejected,
    Superseded,
    Released,
}

impl ExecutionStatus {
    pub fn as_str(self) -> &'static str {
        match self {
            ExecutionStatus::InProgress => "in_progress",
            ExecutionStatus::Submitted => "submitted",
            ExecutionStatus::Accepted => "accepted",
            ExecutionStatus::Rejected => "rejected",
            ExecutionStatus::Superseded => "superseded",
            ExecutionStatus::Released => "released",
        }
    }

    pub fn is_active(self) -> bool {
        matches!(
            self,
            ExecutionStatus::InProgress | ExecutionStatus::Submitted
        )
    }
}

/// A verdict's outcome. Its feedback and detail are in the record at `seq`:
/// see [`Execution::verdict_from`].
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Verdict {
    pub seq: u64,
    pub at_ms: u64,
    pub accepted: bool,
    pub score: u16,
    pub verifier: VerifierKind,
}

#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Execution {
    pub id: ExecutionId,
    pub task_id: TaskId,
    pub agent_key_id: AgentKeyId,
    pub owner_id: AccountId,
    pub status: ExecutionStatus,
    pub claimed_seq: u64,
    pub claimed_at_ms: u64,
    pub lease_expires_ms: u64,
    /// The record of the submission: it holds the result and its metadata.
    pub submitted_seq: Option<u64>,
    pub submitted_at_ms: Option<u64>,
    pub result_hash: Option<Hash>,
    pub verdict: Option<Verdict>,
    /// Why verification fell back to manual review.
    pub fallback: Option<Box<str>>,
    pub ended_at_ms: Option<u64>,
}

impl Execution {
    /// The submission (result and metadata), from the record at
    /// [`Execution::submitted_seq`]; `None` if `record` is not it.
    pub fn submission_from<'r>(&self, record: &'r Record) -> Option<&'r ResultSubmitted> {
        match &record.event {
            Event::ResultSubmitted(s)
                if Some(record.seq) == self.submitted_seq && s.execution_id == self.id =>
            {
                Some(s)
            }
            _ => None,
        }
    }

    /// The verdict (with feedback and detail), from the record at the
    /// verdict's seq; `None` if `record` is not it.
    pub fn verdict_from<'r>(&self, record: &'r Record) -> Option<&'r VerdictRecorded> {
        match &record.event {
            Event::VerdictRecorded(v)
                if self.verdict.map(|v| v.seq) == Some(record.seq) && v.execution_id == self.id =>
            {
                Some(v)
            }
            _ => None,
        }
    }
}

#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, Serialize, Deserialize)]
pub enum FlagStatus {
    Open,
    Released,
    Confirmed,
}

impl FlagStatus {
    pub fn as_str(self) -> &'static str {
        match self {
            FlagStatus::Open => "open",
            FlagStatus::Released => "released",
            FlagStatus::Confirmed => "confirmed",
        }
    }
}

#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Resolution {
    pub operator: String,
    pub reason: String,
    pub seq: u64,
    pub at_ms: u64,
}

#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct RiskFlag {
    pub id: FlagId,
    pub kind: RiskKind,
    pub owner_id: AccountId,
    pub task_id: Option<TaskId>,
    pub reason: String,
    pub frozen: u64,
    pub status: FlagStatus,
    pub raised_seq: u64,
    pub raised_at_ms: u64,
    pub resolution: Option<Resolution>,
}

/// The records that answered a command sent with an idempotency key.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct IdempotencyEntry {
    pub request_hash: Hash,
    pub first_seq: u64,
    pub events: u32,
}

/// Credits per place. `issued` equals the sum of the others after every record.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct Totals {
    pub issued: u64,
    pub gift: u64,
    pub earned: u64,
    pub frozen: u64,
    pub escrow: u64,
    pub redeemed: u64,
}

impl Totals {
    pub fn held(&self) -> u128 {
        u128::from(self.gift)
            + u128::from(self.earned)
            + u128::from(self.frozen)
            + u128::from(self.escrow)
            + u128::from(self.redeemed)
    }

    /// Conservation: everything issued is somewhere, nothing else exists.
    pub fn balanced(&self) -> bool {
        self.held() == u128::from(self.issued)
    }
}

/// Key of the idempotency table.
pub type IdempotencyKey = (Principal, String);

/// Payload classes as the API names them.
pub fn class_name(class: CreditClass) -> &'static str {
    match class {
        CreditClass::Gift => "gift",
        CreditClass::Earned => "earned",
    }
}

#[cfg(test)]
mod tests {
    use crate::{State, money};
    use taskledger_events::*;

    fn seal_apply(state: &mut State, event: Event) -> Record {
        let (record, _) = record::seal(state.head(), 1_000, event).unwrap();
        state.apply_ref(&record).unwrap();
        record
    }

    #[test]
    fn the_full_spec_comes_only_from_the_publishing_record() {
        // given a task published with texts the projection does not keep
        let mut state = State::new();
        let owner = AccountId::from_u128(1);
        let task_id = TaskId::from_u128(2);
        seal_apply(
            &mut state,
            Event::AccountRegistered(AccountRegistered {
                account_id: owner,
                kind: AccountKind::Human,
                name: "o".into(),
                email: None,
                compute_source: None,
                compute_attestation: None,
                metadata: None,
                key_hash: [1; 32],
                client_addr: None,
            }),
        );
        let grant = seal_apply(
            &mut state,
            Event::CreditsGranted(CreditsGranted {
                owner_id: owner,
                amount: 50,
                reason: Reason::Grant,
                transfers: money::grant(owner, 50),
            }),
        );
        let spec = TaskSpec {
            title: "t".into(),
            description: "a long description".into(),
            task_type: "text".into(),
            reward: 10,
            requirements: Some("{}".into()),
            input_data: None,
            deadline_ms: None,
            max_executors: 1,
            tags: vec!["x".into()],
            min_reputation: 0,
            verification: Verification::AutoRules {
                rules: vec![
                    Rule {
                        kind: RuleKind::Contains,
                        value: "secret".into(),
                        path: None,
                        hidden: true,
                    },
                    Rule {
                        kind: RuleKind::MinLength,
                        value: "3".into(),
                        path: None,
                        hidden: false,
                    },
                ],
            },
        };
        let transfers = money::publish(state.owner(owner).unwrap(), task_id, 10).unwrap();
        let published = seal_apply(
            &mut state,
            Event::TaskPublished(TaskPublished {
                task_id,
                publisher_id: owner,
                spec: spec.clone(),
                transfers,
            }),
        );
        let task = &state.tasks[&task_id];
        // then the projection keeps the summary
        assert_eq!(&*task.spec.title, "t");
        assert_eq!(
            task.spec.verification,
            crate::VerificationSummary::AutoRules {
                rules: 2,
                hidden_rules: 1
            }
        );
        // and the publishing record, and no other, gives the full spec back
        assert_eq!(task.spec_from(&published), Some(&spec));
        assert_eq!(task.spec_from(&grant), None);
    }
}
