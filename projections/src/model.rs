//! The projected entities: owners and their wallets, agent keys, tasks,
//! executions, risk flags, and the credit-ledger rows. Plain data with
//! derived accessors; the rules that change them live in `state`.

use rustc_hash::FxHashMap;
use serde::{Deserialize, Serialize};
use taskledger_events::{
    AccountId, AccountKind, AgentKeyId, CreditClass, ExecutionId, FlagId, Hash, Principal, Reason,
    RiskKind, TaskId, TaskSpec, VerifierKind,
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

#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Task {
    pub id: TaskId,
    pub publisher_id: AccountId,
    pub spec: TaskSpec,
    pub published_seq: u64,
    pub published_at_ms: u64,
    /// The escrow, by class. Equals the reward until the task settles, then 0.
    pub escrow_gift: u64,
    pub escrow_earned: u64,
    /// `Some` once the task reached a terminal status.
    pub closed: Option<TaskStatus>,
    pub closed_at_ms: Option<u64>,
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

#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Verdict {
    pub seq: u64,
    pub at_ms: u64,
    pub accepted: bool,
    pub score: u16,
    pub feedback: Option<String>,
    pub verifier: VerifierKind,
    pub detail: Option<String>,
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
    pub submitted_seq: Option<u64>,
    pub submitted_at_ms: Option<u64>,
    pub result: Option<String>,
    pub result_metadata: Option<String>,
    pub result_hash: Option<Hash>,
    pub verdict: Option<Verdict>,
    pub fallback: Option<String>,
    pub ended_at_ms: Option<u64>,
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
