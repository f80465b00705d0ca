//! `State`: the fold over the log, and `apply`, the strict rule book.
//!
//! `apply` accepts a record only if it is legal in the current state: the
//! next seq on the chain, time not going backwards, and an event the
//! lifecycle rules allow, carrying exactly the transfers the rules demand.
//! Anything else is a [`Violation`] naming the seq, and leaves the state
//! untouched (every handler checks first, then changes). After every record
//! conservation holds and a touched task's escrow equals its unsettled
//! reward; `apply` checks both, always.
//!
//! Two doors, one rule book: [`State::apply`] takes the record, so the few
//! strings the state keeps move out of the event (audit, start-up, rebuild);
//! [`State::apply_ref`] borrows it and clones them (the writer, which keeps
//! the record in an `Arc` for its answers and subscribers). The state is
//! compact (see `model`): large texts stay in the log.
//!
//! Pure: no I/O, no clock, no randomness. The same records give the same
//! state on every machine.

use crate::model::*;
use crate::money;
use crate::reputation::{self, REPUTATION_START};
use serde::{Deserialize, Serialize};
use std::collections::BTreeMap;
use taskledger_events::*;
use thiserror::Error;

/// A record the rules do not allow.
#[derive(Debug, Error, Clone, PartialEq, Eq)]
#[error("seq {seq}: {reason}")]
pub struct Violation {
    pub seq: u64,
    pub reason: String,
}

/// Seat of a violation: `bail!(seq, "...")`.
macro_rules! bail {
    ($seq:expr, $($arg:tt)*) => {
        return Err(Violation { seq: $seq, reason: format!($($arg)*) })
    };
}

/// An event handed to `apply`: owned, so the strings the state keeps can
/// move out of it, or borrowed, so they are cloned. Reads go through `Deref`.
enum Src<'a, E> {
    Owned(E),
    Borrowed(&'a E),
}

impl<E> std::ops::Deref for Src<'_, E> {
    type Target = E;
    fn deref(&self) -> &E {
        match self {
            Src::Owned(e) => e,
            Src::Borrowed(e) => e,
        }
    }
}

/// A field of a [`Src`] event: moved out of an owned one (leaving its
/// default), cloned from a borrowed one. Use after every check.
macro_rules! take {
    ($src:expr, $($field:ident).+) => {
        match &mut $src {
            Src::Owned(e) => std::mem::take(&mut e.$($field).+),
            Src::Borrowed(e) => e.$($field).+.clone(),
        }
    };
}

/// Match a `Src<Event>` by variant, binding `$e` to a `Src` of the variant.
macro_rules! on_event {
    ($event:expr, $e:ident => { $($variant:ident => $body:expr,)* }) => {
        match $event {
            $(
                Src::Owned(Event::$variant(x)) => {
                    #[allow(unused_mut)]
                    let mut $e = Src::Owned(x);
                    $body
                }
                Src::Borrowed(Event::$variant(x)) => {
                    #[allow(unused_mut)]
                    let mut $e = Src::Borrowed(x);
                    $body
                }
            )*
        }
    };
}

/// Everything the log says, folded.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct State {
    pub head_seq: u64,
    pub head_hash: Hash,
    pub last_at_ms: u64,
    pub owners: Map<AccountId, Owner>,
    pub agent_keys: Map<AgentKeyId, AgentKey>,
    /// Active key hashes (owner keys and unrevoked agent keys).
    pub key_index: Map<Hash, Principal>,
    /// Boxed: a map keeps 1/8 to 1/2 of its slots empty, and an empty slot
    /// of a boxed map costs a pointer, not a whole task.
    pub tasks: Map<TaskId, Box<Task>>,
    pub executions: Map<ExecutionId, Box<Execution>>,
    pub flags: Map<FlagId, RiskFlag>,
    pub idempotency: Map<IdempotencyKey, IdempotencyEntry>,
    pub totals: Totals,
    /// Tasks per status, kept in step with every change.
    pub status_counts: [u64; 7],
    /// The open tasks by `published_seq`, kept in step with every change:
    /// listing open tasks (what agents browse) pages through these, not
    /// through every task the market ever had. Derived from `tasks`, so
    /// not in snapshots: [`State::index_open_tasks`] rebuilds it.
    #[serde(skip)]
    pub open_tasks: BTreeMap<u64, TaskId>,
}

fn status_index(s: TaskStatus) -> usize {
    TaskStatus::ALL.iter().position(|x| *x == s).unwrap_or(0)
}

impl State {
    pub fn new() -> Self {
        Self::default()
    }

    pub fn head(&self) -> Head {
        Head {
            seq: self.head_seq,
            hash: self.head_hash,
        }
    }

    /// Rebuild [`State::open_tasks`] from the tasks (after decoding a
    /// snapshot, which does not hold it).
    pub fn index_open_tasks(&mut self) {
        self.open_tasks = self
            .tasks
            .values()
            .filter(|t| t.status() == TaskStatus::Open)
            .map(|t| (t.published_seq, t.id))
            .collect();
    }

    pub fn tasks_with_status(&self, s: TaskStatus) -> u64 {
        self.status_counts[status_index(s)]
    }

    pub fn owner(&self, id: AccountId) -> Option<&Owner> {
        self.owners.get(&id)
    }

    /// Who holds a key, by the key's blake3 hash.
    pub fn principal_for_key_hash(&self, hash: &Hash) -> Option<&Principal> {
        self.key_index.get(hash)
    }

    /// Apply one record, taking it: the strings the state keeps move out
    /// of the event instead of being copied. On `Err` nothing changed.
    pub fn apply(&mut self, record: Record) -> Result<(), Violation> {
        let Record {
            seq,
            at_ms,
            prev,
            hash,
            event,
        } = record;
        self.apply_event(seq, at_ms, prev, hash, Src::Owned(event))
    }

    /// Apply one record someone else keeps (e.g. an `Arc<Record>`): the few
    /// strings the state keeps are cloned. On `Err` nothing changed.
    pub fn apply_ref(&mut self, record: &Record) -> Result<(), Violation> {
        self.apply_event(
            record.seq,
            record.at_ms,
            record.prev,
            record.hash,
            Src::Borrowed(&record.event),
        )
    }

    fn apply_event(
        &mut self,
        seq: u64,
        at: u64,
        prev: Hash,
        hash: Hash,
        event: Src<'_, Event>,
    ) -> Result<(), Violation> {
        if seq != self.head_seq + 1 {
            bail!(
                seq,
                "expected seq {}, the record says {}",
                self.head_seq + 1,
                seq
            );
        }
        if prev != self.head_hash {
            bail!(
                seq,
                "prev does not link to the hash of seq {}",
                self.head_seq
            );
        }
        if at < self.last_at_ms {
            bail!(
                seq,
                "time went backwards ({} ms after {} ms)",
                at,
                self.last_at_ms
            );
        }
        let touched = on_event!(event, e => {
            AccountRegistered => self.account_registered(seq, at, e)?,
            OwnerKeyRotated => self.owner_key_rotated(seq, &e)?,
            AgentKeyIssued => self.agent_key_issued(seq, at, e)?,
            AgentKeyRevoked => self.agent_key_revoked(seq, &e)?,
            CreditsGranted => self.credits_granted(seq, at, &e)?,
            TaskPublished => self.task_published(seq, at, e)?,
            TaskClaimed => self.task_claimed(seq, at, &e)?,
            ResultSubmitted => self.result_submitted(seq, at, &e)?,
            VerdictRecorded => self.verdict_recorded(seq, at, &e)?,
            VerificationFallback => self.verification_fallback(seq, e)?,
            ExecutionSuperseded => self.execution_superseded(seq, at, &e)?,
            LeaseReleased => self.lease_released(seq, at, &e)?,
            TaskReopened => self.task_reopened(seq, &e)?,
            TaskClosed => {
                self.task_refunded(seq, at, e.task_id, &e.transfers, TaskStatus::Failed)?
            },
            TaskCancelled => {
                self.task_refunded(seq, at, e.task_id, &e.transfers, TaskStatus::Cancelled)?
            },
            TaskExpired => {
                self.task_refunded(seq, at, e.task_id, &e.transfers, TaskStatus::Expired)?
            },
            CreditsRedeemed => self.credits_redeemed(seq, at, &e)?,
            RiskFlagRaised => self.risk_flag_raised(seq, at, e)?,
            RiskFlagReleased => self.risk_flag_released(seq, at, e)?,
            RiskFlagConfirmed => self.risk_flag_confirmed(seq, at, e)?,
            IdempotencyRecorded => self.idempotency_recorded(seq, e)?,
        });
        self.head_seq = seq;
        self.head_hash = hash;
        self.last_at_ms = at;
        // The invariants, after every record. A failure here is a bug in a
        // handler above (they check before they change), so it is loud.
        assert!(
            self.totals.balanced(),
            "seq {seq}: conservation broken: {:?}",
            self.totals
        );
        if let Some(t) = touched.and_then(|id| self.tasks.get(&id)) {
            assert_eq!(
                t.escrow(),
                t.unsettled_reward(),
                "seq {seq}: escrow of task {} off",
                t.id
            );
        }
        Ok(())
    }

    // ---- accounts and keys -------------------------------------------------

    fn key_unused(&self, seq: u64, hash: &Hash) -> Result<(), Violation> {
        if self.key_index.contains_key(hash) {
            bail!(seq, "key hash already in use");
        }
        Ok(())
    }

    fn account_registered(
        &mut self,
        seq: u64,
        at: u64,
        mut e: Src<'_, AccountRegistered>,
    ) -> Result<Option<TaskId>, Violation> {
        if self.owners.contains_key(&e.account_id) {
            bail!(seq, "account {} already registered", e.account_id);
        }
        self.key_unused(seq, &e.key_hash)?;
        self.key_index
            .insert(e.key_hash, Principal::Owner(e.account_id));
        self.owners.insert(
            e.account_id,
            Owner {
                id: e.account_id,
                kind: e.kind,
                name: take!(e, name),
                email: take!(e, email),
                compute_source: take!(e, compute_source),
                compute_attestation: take!(e, compute_attestation),
                metadata: take!(e, metadata),
                key_hash: e.key_hash,
                client_addr: take!(e, client_addr),
                registered_at_ms: at,
                wallet: Wallet::default(),
                ledger: Vec::new(),
                agent_keys: Vec::new(),
                published: Vec::new(),
            },
        );
        Ok(None)
    }

    fn owner_key_rotated(
        &mut self,
        seq: u64,
        e: &OwnerKeyRotated,
    ) -> Result<Option<TaskId>, Violation> {
        let Some(owner) = self.owners.get(&e.account_id) else {
            bail!(seq, "unknown account {}", e.account_id);
        };
        self.key_unused(seq, &e.key_hash)?;
        let old = owner.key_hash;
        self.key_index.remove(&old);
        self.key_index
            .insert(e.key_hash, Principal::Owner(e.account_id));
        if let Some(owner) = self.owners.get_mut(&e.account_id) {
            owner.key_hash = e.key_hash;
        }
        Ok(None)
    }

    fn agent_key_issued(
        &mut self,
        seq: u64,
        at: u64,
        mut e: Src<'_, AgentKeyIssued>,
    ) -> Result<Option<TaskId>, Violation> {
        if !self.owners.contains_key(&e.owner_id) {
            bail!(seq, "unknown owner {}", e.owner_id);
        }
        if self.agent_keys.contains_key(&e.key_id) {
            bail!(seq, "agent key {} already issued", e.key_id);
        }
        self.key_unused(seq, &e.key_hash)?;
        self.key_index
            .insert(e.key_hash, Principal::Agent(e.key_id));
        self.agent_keys.insert(
            e.key_id,
            AgentKey {
                id: e.key_id,
                owner_id: e.owner_id,
                name: take!(e, name),
                compute_source: take!(e, compute_source),
                key_hash: e.key_hash,
                issued_at_ms: at,
                revoked: false,
                reputation: REPUTATION_START,
                history: Vec::new(),
                counts: ExecutionCounts::default(),
                executions: Vec::new(),
            },
        );
        if let Some(owner) = self.owners.get_mut(&e.owner_id) {
            owner.agent_keys.push(e.key_id);
        }
        Ok(None)
    }

    fn agent_key_revoked(
        &mut self,
        seq: u64,
        e: &AgentKeyRevoked,
    ) -> Result<Option<TaskId>, Violation> {
        let Some(key) = self.agent_keys.get_mut(&e.key_id) else {
            bail!(seq, "unknown agent key {}", e.key_id);
        };
        if key.owner_id != e.owner_id {
            bail!(seq, "agent key {} is not owned by {}", e.key_id, e.owner_id);
        }
        if key.revoked {
            bail!(seq, "agent key {} already revoked", e.key_id);
        }
        key.revoked = true;
        let hash = key.key_hash;
        self.key_index.remove(&hash);
        Ok(None)
    }

    // ---- credits -----------------------------------------------------------

    fn credits_granted(
        &mut self,
        seq: u64,
        at: u64,
        e: &CreditsGranted,
    ) -> Result<Option<TaskId>, Violation> {
        if !self.owners.contains_key(&e.owner_id) {
            bail!(seq, "unknown owner {}", e.owner_id);
        }
        if e.amount == 0 {
            bail!(seq, "a grant of 0 credits");
        }
        if !matches!(e.reason, Reason::SignupGift | Reason::Grant) {
            bail!(seq, "a grant cannot have reason {}", e.reason.as_str());
        }
        expect_transfers(seq, &e.transfers, &money::grant(e.owner_id, e.amount))?;
        self.move_credits(seq, at, e.reason, None, &e.transfers)?;
        Ok(None)
    }

    fn credits_redeemed(
        &mut self,
        seq: u64,
        at: u64,
        e: &CreditsRedeemed,
    ) -> Result<Option<TaskId>, Violation> {
        let Some(owner) = self.owners.get(&e.owner_id) else {
            bail!(seq, "unknown owner {}", e.owner_id);
        };
        if e.amount == 0 {
            bail!(seq, "a redemption of 0 credits");
        }
        if owner.wallet.earned < e.amount {
            bail!(
                seq,
                "redeems {} but only {} earned",
                e.amount,
                owner.wallet.earned
            );
        }
        expect_transfers(seq, &e.transfers, &money::redeem(e.owner_id, e.amount))?;
        self.move_credits(seq, at, Reason::Redeem, None, &e.transfers)?;
        Ok(None)
    }

    // ---- tasks and executions ----------------------------------------------

    fn task_published(
        &mut self,
        seq: u64,
        at: u64,
        mut e: Src<'_, TaskPublished>,
    ) -> Result<Option<TaskId>, Violation> {
        if self.tasks.contains_key(&e.task_id) {
            bail!(seq, "task {} already published", e.task_id);
        }
        let Some(publisher) = self.owners.get(&e.publisher_id) else {
            bail!(seq, "unknown publisher {}", e.publisher_id);
        };
        let spec = &e.spec;
        if spec.reward == 0 {
            bail!(seq, "a task with no reward");
        }
        if !(1..=10).contains(&spec.max_executors) {
            bail!(seq, "max_executors {} outside 1..=10", spec.max_executors);
        }
        if spec.min_reputation > reputation::REPUTATION_MAX {
            bail!(
                seq,
                "min_reputation {} above the scale",
                spec.min_reputation
            );
        }
        if let Some(deadline) = spec.deadline_ms
            && deadline <= at
        {
            bail!(seq, "deadline {deadline} is not after publish time {at}");
        }
        let Some(expected) = money::publish(publisher, e.task_id, spec.reward) else {
            bail!(seq, "publisher cannot cover the reward of {}", spec.reward);
        };
        expect_transfers(seq, &e.transfers, &expected)?;
        let spec = SpecSummary {
            title: take!(e, spec.title).into_boxed_str(),
            task_type: take!(e, spec.task_type).into_boxed_str(),
            reward: e.spec.reward,
            deadline_ms: e.spec.deadline_ms,
            max_executors: e.spec.max_executors,
            min_reputation: e.spec.min_reputation,
            verification: VerificationSummary::of(&e.spec.verification),
        };
        self.tasks.insert(
            e.task_id,
            Box::new(Task {
                id: e.task_id,
                publisher_id: e.publisher_id,
                spec,
                published_seq: seq,
                published_at_ms: at,
                escrow_gift: 0,
                escrow_earned: 0,
                closed: None,
                closed_at_ms: None,
                executions: Vec::new(),
                in_progress: 0,
                submitted: 0,
                winner: None,
                reopened: 0,
            }),
        );
        self.status_counts[status_index(TaskStatus::Open)] += 1;
        self.open_tasks.insert(seq, e.task_id);
        // Cannot fail: the transfers are exactly the ones `money::publish`
        // computed from this wallet.
        self.move_credits(seq, at, Reason::Publish, Some(e.task_id), &e.transfers)?;
        if let Some(p) = self.owners.get_mut(&e.publisher_id) {
            p.published.push(e.task_id);
        }
        Ok(Some(e.task_id))
    }

    fn task_claimed(
        &mut self,
        seq: u64,
        at: u64,
        e: &TaskClaimed,
    ) -> Result<Option<TaskId>, Violation> {
        let Some(task) = self.tasks.get(&e.task_id) else {
            bail!(seq, "unknown task {}", e.task_id);
        };
        let Some(key) = self.agent_keys.get(&e.agent_key_id) else {
            bail!(seq, "unknown agent key {}", e.agent_key_id);
        };
        if self.executions.contains_key(&e.execution_id) {
            bail!(seq, "execution {} already exists", e.execution_id);
        }
        if let Some(s) = task.closed {
            bail!(seq, "task {} is {}", task.id, s.as_str());
        }
        if key.revoked {
            bail!(seq, "agent key {} is revoked", key.id);
        }
        if key.owner_id == task.publisher_id {
            bail!(seq, "agent key {} belongs to the publisher", key.id);
        }
        if !compute_source_declared(&key.compute_source) {
            bail!(seq, "agent key {} has no compute source", key.id);
        }
        if key.reputation < task.spec.min_reputation {
            bail!(
                seq,
                "reputation {} below the task's minimum {}",
                key.reputation,
                task.spec.min_reputation
            );
        }
        if task.active() >= task.spec.max_executors {
            bail!(
                seq,
                "task {} already has {} active executions",
                task.id,
                task.active()
            );
        }
        if let Some(deadline) = task.spec.deadline_ms
            && at >= deadline
        {
            bail!(seq, "task {} is past its deadline", task.id);
        }
        if e.lease_expires_ms <= at {
            bail!(
                seq,
                "lease ends at {} ms, not after the claim at {at} ms",
                e.lease_expires_ms
            );
        }
        let executions = &self.executions;
        if task
            .executions
            .iter()
            .any(|x| executions.get(x).map(|x| x.agent_key_id) == Some(key.id))
        {
            bail!(
                seq,
                "agent key {} already has an execution of task {}",
                key.id,
                task.id
            );
        }
        let owner_id = key.owner_id;
        self.with_task_status(e.task_id, |t| {
            t.in_progress += 1;
            // Exact capacity: most tasks only ever have one execution.
            t.executions.reserve_exact(1);
            t.executions.push(e.execution_id);
        });
        if let Some(key) = self.agent_keys.get_mut(&e.agent_key_id) {
            key.counts.claimed += 1;
            key.executions.push(e.execution_id);
        }
        self.executions.insert(
            e.execution_id,
            Box::new(Execution {
                id: e.execution_id,
                task_id: e.task_id,
                agent_key_id: e.agent_key_id,
                owner_id,
                status: ExecutionStatus::InProgress,
                claimed_seq: seq,
                claimed_at_ms: at,
                lease_expires_ms: e.lease_expires_ms,
                submitted_seq: None,
                submitted_at_ms: None,
                result_hash: None,
                verdict: None,
                fallback: None,
                ended_at_ms: None,
            }),
        );
        Ok(Some(e.task_id))
    }

    /// The execution, checked to belong to the task.
    fn execution_of(
        &self,
        seq: u64,
        task_id: TaskId,
        execution_id: ExecutionId,
    ) -> Result<&Execution, Violation> {
        let Some(x) = self.executions.get(&execution_id) else {
            bail!(seq, "unknown execution {execution_id}");
        };
        if x.task_id != task_id {
            bail!(seq, "execution {execution_id} is not of task {task_id}");
        }
        Ok(x)
    }

    /// The execution of `task_id`, which must be in status `want`.
    fn execution_in(
        &self,
        seq: u64,
        task_id: TaskId,
        execution_id: ExecutionId,
        want: ExecutionStatus,
    ) -> Result<&Execution, Violation> {
        let x = self.execution_of(seq, task_id, execution_id)?;
        if x.status != want {
            bail!(
                seq,
                "execution {} is {}, not {}",
                x.id,
                x.status.as_str(),
                want.as_str()
            );
        }
        Ok(x)
    }

    fn result_submitted(
        &mut self,
        seq: u64,
        at: u64,
        e: &ResultSubmitted,
    ) -> Result<Option<TaskId>, Violation> {
        let x = self.execution_in(seq, e.task_id, e.execution_id, ExecutionStatus::InProgress)?;
        if *blake3::hash(e.result.as_bytes()).as_bytes() != e.result_hash {
            bail!(seq, "result_hash does not match the result");
        }
        let key_id = x.agent_key_id;
        self.with_task_status(e.task_id, |t| {
            t.in_progress -= 1;
            t.submitted += 1;
        });
        if let Some(x) = self.executions.get_mut(&e.execution_id) {
            x.status = ExecutionStatus::Submitted;
            x.submitted_seq = Some(seq);
            x.submitted_at_ms = Some(at);
            x.result_hash = Some(e.result_hash);
        }
        if let Some(key) = self.agent_keys.get_mut(&key_id) {
            key.counts.submitted += 1;
        }
        Ok(Some(e.task_id))
    }

    fn verdict_recorded(
        &mut self,
        seq: u64,
        at: u64,
        e: &VerdictRecorded,
    ) -> Result<Option<TaskId>, Violation> {
        let x = self.execution_in(seq, e.task_id, e.execution_id, ExecutionStatus::Submitted)?;
        if e.score > reputation::REPUTATION_MAX {
            bail!(seq, "score {} above the scale", e.score);
        }
        let (key_id, owner_id) = (x.agent_key_id, x.owner_id);
        let Some(task) = self.tasks.get(&e.task_id) else {
            bail!(seq, "unknown task {}", e.task_id);
        };
        if let Some(s) = task.closed {
            bail!(seq, "task {} is already {}", task.id, s.as_str());
        }
        let expected = if e.accepted {
            money::payout(task, owner_id)
        } else {
            Vec::new()
        };
        expect_transfers(seq, &e.transfers, &expected)?;
        let outcome = if e.accepted { e.score } else { 0 };

        self.move_credits(seq, at, Reason::Payout, Some(e.task_id), &e.transfers)?;
        self.with_task_status(e.task_id, |t| {
            t.submitted -= 1;
            if e.accepted {
                t.closed = Some(TaskStatus::Completed);
                t.closed_at_ms = Some(at);
                t.winner = Some(e.execution_id);
            }
        });
        if let Some(x) = self.executions.get_mut(&e.execution_id) {
            x.status = if e.accepted {
                ExecutionStatus::Accepted
            } else {
                ExecutionStatus::Rejected
            };
            x.ended_at_ms = Some(at);
            x.verdict = Some(Verdict {
                seq,
                at_ms: at,
                accepted: e.accepted,
                score: e.score,
                verifier: e.verifier,
            });
        }
        if let Some(key) = self.agent_keys.get_mut(&key_id) {
            if e.accepted {
                key.counts.accepted += 1;
            } else {
                key.counts.rejected += 1;
            }
            key.reputation = reputation::ema(key.reputation, outcome);
            key.history.push(ReputationRow {
                seq,
                at_ms: at,
                execution_id: e.execution_id,
                outcome,
                score_after: key.reputation,
            });
        }
        Ok(Some(e.task_id))
    }

    fn verification_fallback(
        &mut self,
        seq: u64,
        mut e: Src<'_, VerificationFallback>,
    ) -> Result<Option<TaskId>, Violation> {
        let x = self.execution_in(seq, e.task_id, e.execution_id, ExecutionStatus::Submitted)?;
        if x.fallback.is_some() {
            bail!(seq, "execution {} already fell back to manual review", x.id);
        }
        if let Some(x) = self.executions.get_mut(&e.execution_id) {
            x.fallback = Some(take!(e, reason).into_boxed_str());
        }
        Ok(Some(e.task_id))
    }

    fn execution_superseded(
        &mut self,
        seq: u64,
        at: u64,
        e: &ExecutionSuperseded,
    ) -> Result<Option<TaskId>, Violation> {
        let x = self.execution_of(seq, e.task_id, e.execution_id)?;
        if !x.status.is_active() {
            bail!(
                seq,
                "execution {} is {}, not active",
                x.id,
                x.status.as_str()
            );
        }
        let was = x.status;
        let completed =
            self.tasks.get(&e.task_id).and_then(|t| t.closed) == Some(TaskStatus::Completed);
        if !completed {
            bail!(
                seq,
                "task {} is not completed: nothing supersedes execution {}",
                e.task_id,
                x.id
            );
        }
        self.end_execution(
            e.task_id,
            e.execution_id,
            was,
            ExecutionStatus::Superseded,
            at,
        );
        Ok(Some(e.task_id))
    }

    fn lease_released(
        &mut self,
        seq: u64,
        at: u64,
        e: &LeaseReleased,
    ) -> Result<Option<TaskId>, Violation> {
        let x = self.execution_in(seq, e.task_id, e.execution_id, ExecutionStatus::InProgress)?;
        if at < x.lease_expires_ms {
            bail!(
                seq,
                "lease of execution {} runs until {} ms, released at {at} ms",
                x.id,
                x.lease_expires_ms
            );
        }
        self.end_execution(
            e.task_id,
            e.execution_id,
            ExecutionStatus::InProgress,
            ExecutionStatus::Released,
            at,
        );
        Ok(Some(e.task_id))
    }

    fn end_execution(
        &mut self,
        task: TaskId,
        id: ExecutionId,
        was: ExecutionStatus,
        now: ExecutionStatus,
        at: u64,
    ) {
        self.with_task_status(task, |t| match was {
            ExecutionStatus::InProgress => t.in_progress -= 1,
            _ => t.submitted -= 1,
        });
        if let Some(x) = self.executions.get_mut(&id) {
            x.status = now;
            x.ended_at_ms = Some(at);
        }
    }

    fn task_reopened(&mut self, seq: u64, e: &TaskReopened) -> Result<Option<TaskId>, Violation> {
        let Some(task) = self.tasks.get(&e.task_id) else {
            bail!(seq, "unknown task {}", e.task_id);
        };
        if let Some(s) = task.closed {
            bail!(seq, "task {} is {}", task.id, s.as_str());
        }
        if task.active() > 0 {
            bail!(seq, "task {} still has active executions", task.id);
        }
        let executions = &self.executions;
        let rejected = task
            .executions
            .iter()
            .filter(|x| {
                executions
                    .get(x)
                    .is_some_and(|x| x.status == ExecutionStatus::Rejected)
            })
            .count() as u64;
        if rejected <= u64::from(task.reopened) {
            bail!(
                seq,
                "task {} has no rejection left to reopen after",
                task.id
            );
        }
        self.with_task_status(e.task_id, |t| t.reopened += 1);
        Ok(Some(e.task_id))
    }

    /// Failed (close after reject), cancelled or expired: escrow refunded.
    fn task_refunded(
        &mut self,
        seq: u64,
        at: u64,
        task_id: TaskId,
        transfers: &[Transfer],
        to: TaskStatus,
    ) -> Result<Option<TaskId>, Violation> {
        let Some(task) = self.tasks.get(&task_id) else {
            bail!(seq, "unknown task {task_id}");
        };
        if let Some(s) = task.closed {
            bail!(seq, "task {} is already {}", task.id, s.as_str());
        }
        if task.active() > 0 {
            bail!(seq, "task {} still has active executions", task.id);
        }
        if to == TaskStatus::Expired {
            match task.spec.deadline_ms {
                Some(d) if at >= d => {}
                Some(d) => bail!(
                    seq,
                    "task {} expired at {at} ms, before its deadline {d} ms",
                    task.id
                ),
                None => bail!(seq, "task {} has no deadline to expire", task.id),
            }
        }
        expect_transfers(seq, transfers, &money::refund(task))?;
        let reason = match to {
            TaskStatus::Failed => Reason::RefundFailed,
            TaskStatus::Cancelled => Reason::RefundCancelled,
            _ => Reason::RefundExpired,
        };
        self.move_credits(seq, at, reason, Some(task_id), transfers)?;
        self.with_task_status(task_id, |t| {
            t.closed = Some(to);
            t.closed_at_ms = Some(at);
        });
        Ok(Some(task_id))
    }

    /// Change a task and keep `status_counts` and `open_tasks` in step.
    fn with_task_status(&mut self, id: TaskId, f: impl FnOnce(&mut Task)) {
        if let Some(t) = self.tasks.get_mut(&id) {
            let before = t.status();
            f(t);
            let after = t.status();
            if before != after {
                self.status_counts[status_index(before)] -= 1;
                self.status_counts[status_index(after)] += 1;
                if before == TaskStatus::Open {
                    self.open_tasks.remove(&t.published_seq);
                }
                if after == TaskStatus::Open {
                    self.open_tasks.insert(t.published_seq, id);
                }
            }
        }
    }

    // ---- risk --------------------------------------------------------------

    fn risk_flag_raised(
        &mut self,
        seq: u64,
        at: u64,
        mut e: Src<'_, RiskFlagRaised>,
    ) -> Result<Option<TaskId>, Violation> {
        if self.flags.contains_key(&e.flag_id) {
            bail!(seq, "flag {} already raised", e.flag_id);
        }
        let Some(owner) = self.owners.get(&e.owner_id) else {
            bail!(seq, "unknown owner {}", e.owner_id);
        };
        if let Some(t) = e.task_id
            && !self.tasks.contains_key(&t)
        {
            bail!(seq, "unknown task {t}");
        }
        let frozen: u64 = e.transfers.iter().map(|t| t.amount).sum();
        if frozen > owner.wallet.earned {
            bail!(
                seq,
                "freezes {frozen} but only {} earned",
                owner.wallet.earned
            );
        }
        expect_transfers(seq, &e.transfers, &money::freeze(e.owner_id, frozen))?;
        self.move_credits(seq, at, Reason::RiskFreeze, e.task_id, &e.transfers)?;
        self.flags.insert(
            e.flag_id,
            RiskFlag {
                id: e.flag_id,
                kind: e.kind,
                owner_id: e.owner_id,
                task_id: e.task_id,
                reason: take!(e, reason),
                frozen,
                status: FlagStatus::Open,
                raised_seq: seq,
                raised_at_ms: at,
                resolution: None,
            },
        );
        Ok(None)
    }

    fn open_flag(&self, seq: u64, id: FlagId) -> Result<&RiskFlag, Violation> {
        let Some(flag) = self.flags.get(&id) else {
            bail!(seq, "unknown flag {id}");
        };
        if flag.status != FlagStatus::Open {
            bail!(seq, "flag {id} is already {}", flag.status.as_str());
        }
        Ok(flag)
    }

    fn risk_flag_released(
        &mut self,
        seq: u64,
        at: u64,
        mut e: Src<'_, RiskFlagReleased>,
    ) -> Result<Option<TaskId>, Violation> {
        let flag = self.open_flag(seq, e.flag_id)?;
        expect_transfers(
            seq,
            &e.transfers,
            &money::unfreeze(flag.owner_id, flag.frozen),
        )?;
        let task = flag.task_id;
        self.move_credits(seq, at, Reason::RiskRelease, task, &e.transfers)?;
        self.resolve_flag(
            e.flag_id,
            FlagStatus::Released,
            take!(e, operator),
            take!(e, reason),
            seq,
            at,
        );
        Ok(None)
    }

    fn risk_flag_confirmed(
        &mut self,
        seq: u64,
        at: u64,
        mut e: Src<'_, RiskFlagConfirmed>,
    ) -> Result<Option<TaskId>, Violation> {
        self.open_flag(seq, e.flag_id)?;
        self.resolve_flag(
            e.flag_id,
            FlagStatus::Confirmed,
            take!(e, operator),
            take!(e, reason),
            seq,
            at,
        );
        Ok(None)
    }

    fn resolve_flag(
        &mut self,
        id: FlagId,
        status: FlagStatus,
        operator: String,
        reason: String,
        seq: u64,
        at: u64,
    ) {
        if let Some(flag) = self.flags.get_mut(&id) {
            flag.status = status;
            flag.resolution = Some(Resolution {
                operator,
                reason,
                seq,
                at_ms: at,
            });
        }
    }

    // ---- idempotency -------------------------------------------------------

    fn idempotency_recorded(
        &mut self,
        seq: u64,
        mut e: Src<'_, IdempotencyRecorded>,
    ) -> Result<Option<TaskId>, Violation> {
        let principal = match &mut e {
            Src::Owned(x) => std::mem::replace(&mut x.principal, Principal::System),
            Src::Borrowed(x) => x.principal.clone(),
        };
        let key = (principal, take!(e, key));
        if self.idempotency.contains_key(&key) {
            bail!(seq, "idempotency key already recorded for this principal");
        }
        if e.events == 0 || u64::from(e.events) >= seq {
            bail!(
                seq,
                "idempotency record covers {} events before seq {seq}",
                e.events
            );
        }
        let first_seq = seq - u64::from(e.events);
        self.idempotency.insert(
            key,
            IdempotencyEntry {
                request_hash: e.request_hash,
                first_seq,
                events: e.events,
            },
        );
        Ok(None)
    }

    // ---- the money mover ---------------------------------------------------

    /// Apply transfers already checked against the rules. Checks every
    /// balance first, then moves, so a failure changes nothing.
    fn move_credits(
        &mut self,
        seq: u64,
        at: u64,
        reason: Reason,
        task: Option<TaskId>,
        transfers: &[Transfer],
    ) -> Result<(), Violation> {
        // Check: every debit is covered, taking earlier transfers of this
        // event into account (there are at most two).
        for (i, t) in transfers.iter().enumerate() {
            check_classes(seq, t)?;
            if t.debit == Account::Issuer {
                continue;
            }
            let earlier: u64 = transfers[..i]
                .iter()
                .filter(|u| u.debit == t.debit && u.class == t.class)
                .map(|u| u.amount)
                .sum();
            let have = self.balance(t.debit, t.class).ok_or_else(|| Violation {
                seq,
                reason: format!("transfer from unknown account {:?}", t.debit),
            })?;
            if have < earlier.saturating_add(t.amount) {
                bail!(
                    seq,
                    "{:?} holds {have} {:?}, cannot pay {}",
                    t.debit,
                    t.class,
                    t.amount
                );
            }
            if self.balance(t.credit, t.class).is_none() {
                bail!(seq, "transfer to unknown account {:?}", t.credit);
            }
        }
        if let Some(sum) = transfers.iter().try_fold(self.totals.issued, |acc, t| {
            if t.debit == Account::Issuer {
                acc.checked_add(t.amount)
            } else {
                Some(acc)
            }
        }) {
            if sum > i64::MAX as u64 {
                bail!(seq, "issuing past {} credits", i64::MAX);
            }
        } else {
            bail!(seq, "issued credits overflow");
        }
        // Move.
        for t in transfers {
            self.change(seq, at, reason, task, t.debit, t.class, -(t.amount as i128));
            self.change(seq, at, reason, task, t.credit, t.class, t.amount as i128);
        }
        Ok(())
    }

    /// A balance in the class a transfer of `class` touches; `None` if the
    /// account does not exist.
    fn balance(&self, account: Account, class: CreditClass) -> Option<u64> {
        Some(match account {
            Account::Issuer => 0,
            Account::Redeemed => self.totals.redeemed,
            Account::Gift(o) => self.owners.get(&o)?.wallet.gift,
            Account::Earned(o) => self.owners.get(&o)?.wallet.earned,
            Account::Frozen(o) => self.owners.get(&o)?.wallet.frozen,
            Account::Escrow(t) => {
                let t = self.tasks.get(&t)?;
                match class {
                    CreditClass::Gift => t.escrow_gift,
                    CreditClass::Earned => t.escrow_earned,
                }
            }
        })
    }

    /// One side of a transfer. Amounts are checked by `move_credits` and
    /// bounded by `i64::MAX` issued credits, so the arithmetic cannot wrap.
    #[allow(clippy::too_many_arguments)]
    fn change(
        &mut self,
        seq: u64,
        at: u64,
        reason: Reason,
        task: Option<TaskId>,
        account: Account,
        class: CreditClass,
        delta: i128,
    ) {
        let add = |v: &mut u64| *v = (*v as i128 + delta) as u64;
        let totals = &mut self.totals;
        let (owner, wallet_class) = match account {
            Account::Issuer => {
                totals.issued = (totals.issued as i128 - delta) as u64;
                return;
            }
            Account::Redeemed => {
                add(&mut totals.redeemed);
                return;
            }
            Account::Escrow(t) => {
                add(&mut totals.escrow);
                if let Some(t) = self.tasks.get_mut(&t) {
                    match class {
                        CreditClass::Gift => add(&mut t.escrow_gift),
                        CreditClass::Earned => add(&mut t.escrow_earned),
                    }
                }
                return;
            }
            Account::Gift(o) => (o, WalletClass::Gift),
            Account::Earned(o) => (o, WalletClass::Earned),
            Account::Frozen(o) => (o, WalletClass::Frozen),
        };
        let Some(owner) = self.owners.get_mut(&owner) else {
            return;
        };
        let (balance, total) = match wallet_class {
            WalletClass::Gift => (&mut owner.wallet.gift, &mut totals.gift),
            WalletClass::Earned => (&mut owner.wallet.earned, &mut totals.earned),
            WalletClass::Frozen => (&mut owner.wallet.frozen, &mut totals.frozen),
        };
        add(balance);
        add(total);
        let balance_after = *balance;
        owner.ledger.push(LedgerRow {
            seq,
            at_ms: at,
            class: wallet_class,
            delta: delta as i64,
            balance_after,
            reason,
            task_id: task,
        });
    }
}

/// Which classes each account may send and receive. Wallet accounts hold
/// one class; escrow holds both; a payout may land a gift-funded escrow part
/// in an earned wallet; the issuer only issues gift.
fn check_classes(seq: u64, t: &Transfer) -> Result<(), Violation> {
    use CreditClass::*;
    if t.amount == 0 {
        bail!(seq, "a transfer of 0 credits");
    }
    let debit_ok = match t.debit {
        Account::Issuer => t.class == Gift,
        Account::Redeemed => false,
        Account::Gift(_) => t.class == Gift,
        Account::Earned(_) | Account::Frozen(_) => t.class == Earned,
        Account::Escrow(_) => true,
    };
    let credit_ok = match t.credit {
        Account::Issuer => false,
        Account::Redeemed => t.class == Earned,
        Account::Gift(_) => t.class == Gift,
        Account::Earned(_) => t.class == Earned || matches!(t.debit, Account::Escrow(_)),
        Account::Frozen(_) => t.class == Earned,
        Account::Escrow(_) => true,
    };
    if !debit_ok || !credit_ok || t.debit == t.credit {
        bail!(
            seq,
            "illegal transfer {:?} -> {:?} of {:?}",
            t.debit,
            t.credit,
            t.class
        );
    }
    Ok(())
}

fn expect_transfers(seq: u64, actual: &[Transfer], expected: &[Transfer]) -> Result<(), Violation> {
    if actual != expected {
        bail!(
            seq,
            "transfers {actual:?} are not the ones the rules demand: {expected:?}"
        );
    }
    Ok(())
}

/// An agent key may claim only with a declared compute source.
pub fn compute_source_declared(source: &str) -> bool {
    !source.is_empty() && source != "unspecified"
}
