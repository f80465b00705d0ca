//! `redeem`: an owner takes earned credits out of the market. Gift credits
//! are never redeemable. Off unless the policy enables it.

use super::{Ctx, caller_owner, limits};
use crate::error::DomainError;
use serde::{Deserialize, Serialize};
use taskledger_events::{CreditsRedeemed, Event};
use taskledger_projections::{State, money};

#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Redeem {
    pub amount: u64,
}

impl Redeem {
    pub fn decide(&self, state: &State, ctx: Ctx<'_>) -> Result<Vec<Event>, DomainError> {
        let owner = caller_owner(state, ctx)?;
        if !ctx.policy.redeem_enabled {
            return Err(DomainError::forbidden(
                "redemption is not enabled on this market",
            ));
        }
        if self.amount == 0 || self.amount > limits::REWARD_MAX {
            return Err(DomainError::invalid(
                "amount",
                format!("must be 1..={}", limits::REWARD_MAX),
            ));
        }
        if owner.wallet.earned < self.amount {
            return Err(DomainError::InsufficientCredits {
                needed: self.amount,
                available: owner.wallet.earned,
            });
        }
        Ok(vec![Event::CreditsRedeemed(CreditsRedeemed {
            owner_id: owner.id,
            amount: self.amount,
            transfers: money::redeem(owner.id, self.amount),
        })])
    }
}

#[cfg(test)]
mod tests {
    use crate::commands::testkit::World;

    #[test]
    fn only_earned_credits_redeem() {
        // given alice with 1000 gift and 40 earned, redemption enabled
        let mut w = World::new();
        w.policy.redeem_enabled = true;
        let alice = w.owner("alice");
        w.give_earned(alice, 40);
        // when she asks for 41, then it is refused: gift does not count
        assert_eq!(
            w.redeem(alice, 41).unwrap_err().code(),
            "insufficient_credits"
        );
        // when she asks for 40, then it leaves the market
        w.redeem(alice, 40).unwrap();
        assert_eq!(w.state.owners[&alice].wallet.earned, 0);
        assert_eq!(w.state.totals.redeemed, 40);
    }

    #[test]
    fn redemption_is_off_by_default() {
        let mut w = World::new();
        let alice = w.owner("alice");
        assert_eq!(w.redeem(alice, 1).unwrap_err().code(), "forbidden");
    }
}
