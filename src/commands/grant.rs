//! `grant`: the operator (or the service) issues gift credits to an owner.

use super::{Ctx, limits, owner, require_system_or_operator};
use crate::error::DomainError;
use serde::{Deserialize, Serialize};
use taskledger_events::{AccountId, CreditsGranted, Event, Reason};
use taskledger_projections::{State, money};

#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Grant {
    pub owner_id: AccountId,
    pub amount: u64,
}

impl Grant {
    pub fn decide(&self, state: &State, ctx: Ctx<'_>) -> Result<Vec<Event>, DomainError> {
        require_system_or_operator(ctx)?;
        owner(state, self.owner_id)?;
        if self.amount == 0 || self.amount > limits::GRANT_MAX {
            return Err(DomainError::invalid(
                "amount",
                format!("must be 1..={}", limits::GRANT_MAX),
            ));
        }
        if state.totals.issued.saturating_add(self.amount) > i64::MAX as u64 {
            return Err(DomainError::Conflict(
                "the market cannot issue that many credits".into(),
            ));
        }
        Ok(vec![Event::CreditsGranted(CreditsGranted {
            owner_id: self.owner_id,
            amount: self.amount,
            reason: Reason::Grant,
            transfers: money::grant(self.owner_id, self.amount),
        })])
    }
}

#[cfg(test)]
mod tests {
    use crate::commands::{Command, Grant, testkit::World};
    use taskledger_events::Principal;

    #[test]
    fn owners_cannot_grant_themselves_credits() {
        let mut w = World::new();
        let alice = w.owner("alice");
        let err = w
            .run(
                &Principal::Owner(alice),
                Command::Grant(Grant {
                    owner_id: alice,
                    amount: 5,
                }),
            )
            .unwrap_err();
        assert_eq!(err.code(), "forbidden");
    }

    #[test]
    fn an_operator_grant_is_gift() {
        let mut w = World::new();
        let alice = w.owner("alice");
        w.run(
            &Principal::Operator("ops".into()),
            Command::Grant(Grant {
                owner_id: alice,
                amount: 5,
            }),
        )
        .unwrap();
        assert_eq!(w.state.owners[&alice].wallet.gift, 1005);
    }
}
