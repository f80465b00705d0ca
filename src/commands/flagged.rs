//! `flagged`: a command together with the risk flag a risk engine decided
//! on it, so the decision travels inside the command and the writer never
//! calls an engine. The inner command decides as usual; then a
//! `RiskFlagRaised` follows its events in the same batch. For a settlement
//! the flag freezes what the verdict just paid (pay, then hold).

use super::{Command, Ctx, Fields, decide, limits};
use crate::error::DomainError;
use serde::{Deserialize, Serialize};
use taskledger_events::{Account, AccountId, Event, FlagId, RiskFlagRaised, RiskKind, TaskId};
use taskledger_projections::{State, money};

#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Flagged {
    pub command: Box<Command>,
    pub flag_id: FlagId,
    pub kind: RiskKind,
    /// Whose flag; `None`: the account the inner registration creates.
    pub owner_id: Option<AccountId>,
    pub task_id: Option<TaskId>,
    pub reason: String,
    /// Freeze what the inner command pays the owner as earned.
    pub freeze_payout: bool,
}

impl Flagged {
    pub fn decide(&self, state: &State, ctx: Ctx<'_>) -> Result<Vec<Event>, DomainError> {
        if matches!(*self.command, Command::Flagged(_)) {
            return Err(DomainError::BadRequest("a flag cannot wrap a flag".into()));
        }
        let mut f = Fields::default();
        f.text(&self.reason, "reason", true, limits::REASON_CHARS_MAX);
        f.finish()?;
        if state.flags.contains_key(&self.flag_id) {
            return Err(DomainError::Conflict(
                "flag id already in use; retry".into(),
            ));
        }
        let mut events = decide(state, ctx, &self.command)?;
        let owner_id = match self.owner_id {
            Some(id) => id,
            None => events
                .iter()
                .find_map(|e| match e {
                    Event::AccountRegistered(r) => Some(r.account_id),
                    _ => None,
                })
                .ok_or_else(|| {
                    DomainError::BadRequest("a flag without an owner needs a registration".into())
                })?,
        };
        let paid: u64 = if self.freeze_payout {
            events
                .iter()
                .filter_map(|e| match e {
                    Event::VerdictRecorded(v) => Some(&v.transfers),
                    _ => None,
                })
                .flatten()
                .filter(|t| t.credit == Account::Earned(owner_id))
                .map(|t| t.amount)
                .sum()
        } else {
            0
        };
        events.push(Event::RiskFlagRaised(RiskFlagRaised {
            flag_id: self.flag_id,
            kind: self.kind,
            owner_id,
            task_id: self.task_id,
            reason: self.reason.clone(),
            transfers: money::freeze(owner_id, paid),
        }));
        Ok(events)
    }
}
