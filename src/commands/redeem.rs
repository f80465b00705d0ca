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
    use crate::error::DomainError;

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
    fn a_gift_funded_reward_pays_earned_and_gift_never_redeems() {
        // given alice publishing 300 out of her 1000 signup gift, and bob's agent
        let mut w = World::new();
        w.policy.redeem_enabled = true;
        let alice = w.owner("alice");
        let bob = w.owner("bob");
        let key = w.agent(bob);
        let task = w.publish(alice, 300).unwrap();
        assert_eq!(
            (
                w.state.tasks[&task].escrow_gift,
                w.state.tasks[&task].escrow_earned
            ),
            (300, 0),
            "funded entirely with gift"
        );
        // alice cannot collect her own gift through her own agent
        let own = w.agent(alice);
        assert_eq!(w.claim(own, task).unwrap_err().code(), "forbidden");
        // when bob's agent does the work and alice accepts
        let x = w.claim(key, task).unwrap();
        w.submit(key, task, "work").unwrap();
        w.verify(alice, task, x, true, true).unwrap();
        // then bob is paid earned, his own gift untouched; alice's gift is spent
        let (a, b) = (w.state.owners[&alice].wallet, w.state.owners[&bob].wallet);
        assert_eq!((b.earned, b.gift), (300, 1000));
        assert_eq!((a.gift, a.earned), (700, 0));
        assert_eq!(w.state.tasks[&task].escrow(), 0);
        // bob redeems at most what he earned; his gift does not count
        assert_eq!(
            w.redeem(bob, 301).unwrap_err(),
            DomainError::InsufficientCredits {
                needed: 301,
                available: 300
            }
        );
        w.redeem(bob, 300).unwrap();
        // alice holds only gift: nothing of it redeems
        assert_eq!(
            w.redeem(alice, 1).unwrap_err(),
            DomainError::InsufficientCredits {
                needed: 1,
                available: 0
            }
        );
        assert_eq!(w.state.totals.redeemed, 300);
    }

    #[test]
    fn a_refunded_gift_escrow_comes_back_as_gift_not_earned() {
        // given a gift-funded task rejected and closed (reopen false)
        let mut w = World::new();
        w.policy.redeem_enabled = true;
        let alice = w.owner("alice");
        let bob = w.owner("bob");
        let key = w.agent(bob);
        let task = w.publish(alice, 250).unwrap();
        let x = w.claim(key, task).unwrap();
        w.submit(key, task, "work").unwrap();
        w.verify(alice, task, x, false, false).unwrap();
        // then the refund restores her gift, and earned stays 0: no laundering
        let a = w.state.owners[&alice].wallet;
        assert_eq!((a.gift, a.earned), (1000, 0));
        assert_eq!(
            w.redeem(alice, 1).unwrap_err().code(),
            "insufficient_credits"
        );
        // and cancelling a fresh gift-funded task does the same
        let t2 = w.publish(alice, 400).unwrap();
        w.cancel(alice, t2).unwrap();
        let a = w.state.owners[&alice].wallet;
        assert_eq!((a.gift, a.earned), (1000, 0));
    }

    #[test]
    fn redemption_is_off_by_default() {
        let mut w = World::new();
        let alice = w.owner("alice");
        assert_eq!(w.redeem(alice, 1).unwrap_err().code(), "forbidden");
    }
}
