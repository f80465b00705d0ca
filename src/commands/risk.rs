//! Risk holds: `raise_flag` (the risk engine or an operator; may freeze
//! earned credits), `release_flag` (frozen back to earned) and
//! `confirm_flag` (stays frozen). Each resolution names the operator.

use super::{Ctx, Fields, limits, owner, require_system_or_operator};
use crate::error::DomainError;
use serde::{Deserialize, Serialize};
use taskledger_events::{
    AccountId, Event, FlagId, Principal, RiskFlagConfirmed, RiskFlagRaised, RiskFlagReleased,
    RiskKind, TaskId,
};
use taskledger_projections::{FlagStatus, RiskFlag, State, money};

#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct RaiseFlag {
    pub flag_id: FlagId,
    pub kind: RiskKind,
    pub owner_id: AccountId,
    pub task_id: Option<TaskId>,
    pub reason: String,
    /// Earned credits to hold; capped at what the owner has earned.
    pub freeze: u64,
}

impl RaiseFlag {
    pub fn decide(&self, state: &State, ctx: Ctx<'_>) -> Result<Vec<Event>, DomainError> {
        require_system_or_operator(ctx)?;
        let mut f = Fields::default();
        f.text(&self.reason, "reason", true, limits::REASON_CHARS_MAX);
        f.finish()?;
        let owner = owner(state, self.owner_id)?;
        if let Some(t) = self.task_id {
            super::task(state, t)?;
        }
        if state.flags.contains_key(&self.flag_id) {
            return Err(DomainError::Conflict(
                "flag id already in use; retry".into(),
            ));
        }
        let freeze = self.freeze.min(owner.wallet.earned);
        Ok(vec![Event::RiskFlagRaised(RiskFlagRaised {
            flag_id: self.flag_id,
            kind: self.kind,
            owner_id: self.owner_id,
            task_id: self.task_id,
            reason: self.reason.clone(),
            transfers: money::freeze(self.owner_id, freeze),
        })])
    }
}

fn operator_name(ctx: Ctx<'_>) -> Result<String, DomainError> {
    match ctx.principal {
        Principal::Operator(name) => Ok(name.clone()),
        _ => Err(DomainError::forbidden(
            "only an operator may resolve a risk flag",
        )),
    }
}

fn open_flag(state: &State, id: FlagId) -> Result<&RiskFlag, DomainError> {
    let flag = state
        .flags
        .get(&id)
        .ok_or_else(|| DomainError::not_found(format!("risk flag {id}")))?;
    if flag.status != FlagStatus::Open {
        return Err(DomainError::Conflict(format!(
            "the flag is already {}",
            flag.status.as_str()
        )));
    }
    Ok(flag)
}

fn reason_ok(reason: &str) -> Result<(), DomainError> {
    let mut f = Fields::default();
    f.text(reason, "reason", true, limits::REASON_CHARS_MAX);
    f.finish()
}

#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct ReleaseFlag {
    pub flag_id: FlagId,
    pub reason: String,
}

impl ReleaseFlag {
    pub fn decide(&self, state: &State, ctx: Ctx<'_>) -> Result<Vec<Event>, DomainError> {
        let operator = operator_name(ctx)?;
        reason_ok(&self.reason)?;
        let flag = open_flag(state, self.flag_id)?;
        Ok(vec![Event::RiskFlagReleased(RiskFlagReleased {
            flag_id: self.flag_id,
            operator,
            reason: self.reason.clone(),
            transfers: money::unfreeze(flag.owner_id, flag.frozen),
        })])
    }
}

#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct ConfirmFlag {
    pub flag_id: FlagId,
    pub reason: String,
}

impl ConfirmFlag {
    pub fn decide(&self, state: &State, ctx: Ctx<'_>) -> Result<Vec<Event>, DomainError> {
        let operator = operator_name(ctx)?;
        reason_ok(&self.reason)?;
        open_flag(state, self.flag_id)?;
        Ok(vec![Event::RiskFlagConfirmed(RiskFlagConfirmed {
            flag_id: self.flag_id,
            operator,
            reason: self.reason.clone(),
        })])
    }
}

#[cfg(test)]
mod tests {
    use crate::commands::{Command, ConfirmFlag, RaiseFlag, ReleaseFlag, testkit::World};
    use taskledger_events::{FlagId, Principal, RiskKind};

    fn raise(w: &mut World, owner: taskledger_events::AccountId, freeze: u64) -> FlagId {
        let flag_id = FlagId::random();
        let cmd = Command::RaiseFlag(RaiseFlag {
            flag_id,
            kind: RiskKind::SelfDealingSuspected,
            owner_id: owner,
            task_id: None,
            reason: "same address".into(),
            freeze,
        });
        w.run(&Principal::System, cmd).unwrap();
        flag_id
    }

    #[test]
    fn release_unfreezes_and_a_second_release_conflicts() {
        let mut w = World::new();
        let alice = w.owner("alice");
        w.give_earned(alice, 60);
        let flag = raise(&mut w, alice, 50);
        assert_eq!(
            (
                w.state.owners[&alice].wallet.earned,
                w.state.owners[&alice].wallet.frozen
            ),
            (10, 50)
        );
        let ops = Principal::Operator("ops".into());
        let rel = Command::ReleaseFlag(ReleaseFlag {
            flag_id: flag,
            reason: "checked".into(),
        });
        w.run(&ops, rel.clone()).unwrap();
        assert_eq!(w.state.owners[&alice].wallet.earned, 60);
        assert_eq!(w.run(&ops, rel).unwrap_err().code(), "conflict");
    }

    #[test]
    fn confirm_keeps_the_hold_and_needs_an_operator() {
        let mut w = World::new();
        let alice = w.owner("alice");
        w.give_earned(alice, 60);
        let flag = raise(&mut w, alice, 100);
        assert_eq!(
            w.state.owners[&alice].wallet.frozen, 60,
            "a freeze is capped at what was earned"
        );
        let conf = Command::ConfirmFlag(ConfirmFlag {
            flag_id: flag,
            reason: "fraud".into(),
        });
        assert_eq!(
            w.run(&Principal::Owner(alice), conf.clone())
                .unwrap_err()
                .code(),
            "forbidden"
        );
        w.run(&Principal::Operator("ops".into()), conf).unwrap();
        assert_eq!(w.state.owners[&alice].wallet.frozen, 60);
    }
}
