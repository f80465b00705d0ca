//! Commands: what a principal asks for, and `decide`, which turns a command
//! into the events that record it, or refuses it with a [`DomainError`].
//!
//! `decide` is pure: the state, the command, the time and the policy in;
//! events or an error out. Ids, key hashes and the time are made by the
//! caller, so a decision can be replayed. One command, one file; each file
//! holds its `decide` and its tests. The writer checks every produced event
//! with `State::apply` before it appends it, so a refusal leaves nothing.
//!
//! Besides the commands, [`compute`] holds the compute-source rule (allowed
//! sources, the token-plan whitelist, refused consumer subscriptions, tiers
//! and the ranking bonus) that register, issue_agent_key, claim and the
//! views share.

mod agent_keys;
mod cancel;
mod claim;
pub mod compute;
mod expire;
mod fallback;
mod flagged;
mod grant;
mod publish;
mod redeem;
mod register;
mod risk;
mod rotate_key;
mod submit;
mod verdict;

#[cfg(test)]
pub(crate) mod testkit;

pub use agent_keys::{IssueAgentKey, RevokeAgentKey};
pub use cancel::Cancel;
pub use claim::Claim;
pub use expire::{ExpireDeadline, ExpireLease};
pub use fallback::Fallback;
pub use flagged::Flagged;
pub use grant::Grant;
pub use publish::{Publish, rule_regex, validate_spec};
pub use redeem::Redeem;
pub use register::Register;
pub use risk::{ConfirmFlag, RaiseFlag, ReleaseFlag};
pub use rotate_key::RotateKey;
pub use submit::Submit;
pub use verdict::{AutoVerdict, Verify};

use crate::error::DomainError;
use serde::{Deserialize, Serialize};
#[cfg(test)]
use taskledger_events::AgentKeyId;
use taskledger_events::{AccountId, Event, ExecutionId, Principal, TaskId};
use taskledger_projections::{AgentKey, Execution, Owner, State, Task};

/// Market settings that decisions depend on. Part of the input, never read
/// from the environment here.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Policy {
    /// Gift credits granted at registration.
    pub signup_gift: u64,
    /// How long a claim holds before the lease timer may release it.
    pub lease_ms: u64,
    /// Whether owners may redeem earned credits.
    pub redeem_enabled: bool,
}

impl Default for Policy {
    fn default() -> Self {
        Policy {
            signup_gift: 1000,
            lease_ms: 30 * 60 * 1000,
            redeem_enabled: false,
        }
    }
}

/// Every command the market takes.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub enum Command {
    Register(Register),
    RotateKey(RotateKey),
    IssueAgentKey(IssueAgentKey),
    RevokeAgentKey(RevokeAgentKey),
    Grant(Grant),
    Publish(Publish),
    Claim(Claim),
    Submit(Submit),
    Verify(Verify),
    AutoVerdict(AutoVerdict),
    Fallback(Fallback),
    Cancel(Cancel),
    ExpireLease(ExpireLease),
    ExpireDeadline(ExpireDeadline),
    Redeem(Redeem),
    RaiseFlag(RaiseFlag),
    ReleaseFlag(ReleaseFlag),
    ConfirmFlag(ConfirmFlag),
    /// A command with the risk flag an engine decided on it.
    Flagged(Flagged),
}

impl Command {
    /// A short name for logs and metrics.
    pub fn name(&self) -> &'static str {
        match self {
            Command::Register(_) => "register",
            Command::RotateKey(_) => "rotate_key",
            Command::IssueAgentKey(_) => "issue_agent_key",
            Command::RevokeAgentKey(_) => "revoke_agent_key",
            Command::Grant(_) => "grant",
            Command::Publish(_) => "publish",
            Command::Claim(_) => "claim",
            Command::Submit(_) => "submit",
            Command::Verify(_) => "verify",
            Command::AutoVerdict(_) => "auto_verdict",
            Command::Fallback(_) => "fallback",
            Command::Cancel(_) => "cancel",
            Command::ExpireLease(_) => "expire_lease",
            Command::ExpireDeadline(_) => "expire_deadline",
            Command::Redeem(_) => "redeem",
            Command::RaiseFlag(_) => "raise_flag",
            Command::ReleaseFlag(_) => "release_flag",
            Command::ConfirmFlag(_) => "confirm_flag",
            Command::Flagged(c) => c.command.name(),
        }
    }
}

/// What `decide` needs besides the state.
#[derive(Clone, Copy, Debug)]
pub struct Ctx<'a> {
    pub principal: &'a Principal,
    pub now_ms: u64,
    pub policy: &'a Policy,
}

/// Decide a command against the state.
pub fn decide(state: &State, ctx: Ctx<'_>, command: &Command) -> Result<Vec<Event>, DomainError> {
    match command {
        Command::Register(c) => c.decide(state, ctx),
        Command::RotateKey(c) => c.decide(state, ctx),
        Command::IssueAgentKey(c) => c.decide(state, ctx),
        Command::RevokeAgentKey(c) => c.decide(state, ctx),
        Command::Grant(c) => c.decide(state, ctx),
        Command::Publish(c) => c.decide(state, ctx),
        Command::Claim(c) => c.decide(state, ctx),
        Command::Submit(c) => c.decide(state, ctx),
        Command::Verify(c) => c.decide(state, ctx),
        Command::AutoVerdict(c) => c.decide(state, ctx),
        Command::Fallback(c) => c.decide(state, ctx),
        Command::Cancel(c) => c.decide(state, ctx),
        Command::ExpireLease(c) => c.decide(state, ctx),
        Command::ExpireDeadline(c) => c.decide(state, ctx),
        Command::Redeem(c) => c.decide(state, ctx),
        Command::RaiseFlag(c) => c.decide(state, ctx),
        Command::ReleaseFlag(c) => c.decide(state, ctx),
        Command::ConfirmFlag(c) => c.decide(state, ctx),
        Command::Flagged(c) => c.decide(state, ctx),
    }
}

// ---- lookups shared by the commands -----------------------------------------

/// The calling owner, or `forbidden` for any other principal.
fn caller_owner<'s>(state: &'s State, ctx: Ctx<'_>) -> Result<&'s Owner, DomainError> {
    match ctx.principal {
        Principal::Owner(id) => state
            .owners
            .get(id)
            .ok_or_else(|| DomainError::Unauthorized("unknown account".into())),
        _ => Err(DomainError::forbidden("this needs an owner (account) key")),
    }
}

/// The calling agent key, or `forbidden` for any other principal.
fn caller_agent<'s>(state: &'s State, ctx: Ctx<'_>) -> Result<&'s AgentKey, DomainError> {
    match ctx.principal {
        Principal::Agent(id) => match state.agent_keys.get(id) {
            Some(k) if !k.revoked => Ok(k),
            _ => Err(DomainError::Unauthorized(
                "unknown or revoked agent key".into(),
            )),
        },
        _ => Err(DomainError::forbidden("this needs an agent key")),
    }
}

/// The service itself (timers, workers) or an operator.
fn require_system_or_operator(ctx: Ctx<'_>) -> Result<(), DomainError> {
    match ctx.principal {
        Principal::System | Principal::Operator(_) => Ok(()),
        _ => Err(DomainError::forbidden("this needs the operator")),
    }
}

fn require_system(ctx: Ctx<'_>) -> Result<(), DomainError> {
    match ctx.principal {
        Principal::System => Ok(()),
        _ => Err(DomainError::forbidden(
            "only the service itself may do this",
        )),
    }
}

fn task(state: &State, id: TaskId) -> Result<&Task, DomainError> {
    state
        .tasks
        .get(&id)
        .map(|t| &**t)
        .ok_or_else(|| DomainError::not_found(format!("task {id}")))
}

fn owner(state: &State, id: AccountId) -> Result<&Owner, DomainError> {
    state
        .owners
        .get(&id)
        .ok_or_else(|| DomainError::not_found(format!("account {id}")))
}

/// The execution, which must belong to `task_id`.
fn execution(state: &State, task_id: TaskId, id: ExecutionId) -> Result<&Execution, DomainError> {
    match state.executions.get(&id) {
        Some(x) if x.task_id == task_id => Ok(&**x),
        _ => Err(DomainError::not_found(format!(
            "execution {id} of task {task_id}"
        ))),
    }
}

/// Collects field errors so a request hears about all its bad fields at once.
#[derive(Default)]
pub(crate) struct Fields(Vec<crate::error::FieldError>);

impl Fields {
    pub fn check(&mut self, ok: bool, field: &str, message: impl Into<String>) {
        if !ok {
            self.0.push(crate::error::FieldError::new(field, message));
        }
    }

    /// Errors found elsewhere (a parser's).
    pub fn extend(&mut self, errors: impl IntoIterator<Item = crate::error::FieldError>) {
        self.0.extend(errors);
    }

    /// A text field: at most `max_chars` characters, and not blank if required.
    pub fn text(&mut self, value: &str, field: &str, required: bool, max_chars: usize) {
        if required && value.trim().is_empty() {
            self.0
                .push(crate::error::FieldError::new(field, "must not be empty"));
        } else if value.chars().count() > max_chars {
            self.0.push(crate::error::FieldError::new(
                field,
                format!("at most {max_chars} characters"),
            ));
        }
    }

    /// Optional JSON text: must parse and stay under `max_bytes`.
    pub fn json(&mut self, value: Option<&str>, field: &str, max_bytes: usize) {
        if let Some(v) = value {
            if v.len() > max_bytes {
                self.0.push(crate::error::FieldError::new(
                    field,
                    format!("at most {max_bytes} bytes"),
                ));
            } else if serde_json::from_str::<serde_json::Value>(v).is_err() {
                self.0
                    .push(crate::error::FieldError::new(field, "must be valid JSON"));
            }
        }
    }

    pub fn finish(self) -> Result<(), DomainError> {
        if self.0.is_empty() {
            Ok(())
        } else {
            Err(DomainError::Validation(self.0))
        }
    }
}

/// Named limits on what a command may carry.
pub mod limits {
    pub const NAME_CHARS_MAX: usize = 100;
    pub const EMAIL_CHARS_MAX: usize = 254;
    pub const COMPUTE_SOURCE_CHARS_MAX: usize = 64;
    pub const ATTESTATION_CHARS_MAX: usize = 2_000;
    pub const METADATA_BYTES_MAX: usize = 16 * 1024;
    pub const TITLE_CHARS_MAX: usize = 200;
    pub const DESCRIPTION_CHARS_MAX: usize = 20_000;
    pub const TASK_TYPE_CHARS_MAX: usize = 50;
    pub const TASK_JSON_BYTES_MAX: usize = 64 * 1024;
    pub const TAGS_MAX: usize = 20;
    pub const TAG_CHARS_MAX: usize = 50;
    pub const RULES_MAX: usize = 50;
    pub const RULE_VALUE_CHARS_MAX: usize = 1_000;
    pub const TESTS_BYTES_MAX: usize = 256 * 1024;
    pub const RUBRIC_CHARS_MAX: usize = 10_000;
    pub const REWARD_MAX: u64 = 1_000_000_000;
    pub const GRANT_MAX: u64 = 1_000_000_000;
    pub const RESULT_BYTES_MAX: usize = 1024 * 1024;
    pub const RESULT_METADATA_BYTES_MAX: usize = 64 * 1024;
    pub const FEEDBACK_CHARS_MAX: usize = 10_000;
    pub const DETAIL_BYTES_MAX: usize = 64 * 1024;
    pub const REASON_CHARS_MAX: usize = 1_000;
    pub const AGENT_KEYS_PER_OWNER_MAX: usize = 100;
    pub const DEADLINE_AHEAD_MS_MAX: u64 = 366 * 24 * 3600 * 1000;
}
