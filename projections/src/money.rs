//! The transfers the rules demand. `decide` uses these to write events and
//! `apply` uses them to check events, so the two can never disagree about
//! money. Pure: no I/O, no clock.

use crate::model::{Owner, Task};
use taskledger_events::{Account, AccountId, CreditClass, TaskId, Transfer};

fn push(out: &mut Vec<Transfer>, debit: Account, credit: Account, class: CreditClass, amount: u64) {
    if amount > 0 {
        out.push(Transfer {
            debit,
            credit,
            class,
            amount,
        });
    }
}

/// A grant: new gift credits from the issuer.
pub fn grant(owner: AccountId, amount: u64) -> Vec<Transfer> {
    let mut out = Vec::with_capacity(1);
    push(
        &mut out,
        Account::Issuer,
        Account::Gift(owner),
        CreditClass::Gift,
        amount,
    );
    out
}

/// Publish: the reward into escrow, gift first, then earned. `None` when the
/// wallet cannot cover it.
pub fn publish(publisher: &Owner, task: TaskId, reward: u64) -> Option<Vec<Transfer>> {
    let w = publisher.wallet;
    let gift = w.gift.min(reward);
    let earned = reward - gift;
    if earned > w.earned {
        return None;
    }
    let mut out = Vec::with_capacity(2);
    push(
        &mut out,
        Account::Gift(publisher.id),
        Account::Escrow(task),
        CreditClass::Gift,
        gift,
    );
    push(
        &mut out,
        Account::Earned(publisher.id),
        Account::Escrow(task),
        CreditClass::Earned,
        earned,
    );
    Some(out)
}

/// Accept: the whole escrow to the executor's owner, landing as earned
/// (a gift-funded part is converted: the publisher spent it on work).
pub fn payout(task: &Task, executor_owner: AccountId) -> Vec<Transfer> {
    let mut out = Vec::with_capacity(2);
    let (from, to) = (Account::Escrow(task.id), Account::Earned(executor_owner));
    push(&mut out, from, to, CreditClass::Gift, task.escrow_gift);
    push(&mut out, from, to, CreditClass::Earned, task.escrow_earned);
    out
}

/// Close, cancel or expire: the escrow back to the publisher in its exact split.
pub fn refund(task: &Task) -> Vec<Transfer> {
    let mut out = Vec::with_capacity(2);
    let from = Account::Escrow(task.id);
    push(
        &mut out,
        from,
        Account::Gift(task.publisher_id),
        CreditClass::Gift,
        task.escrow_gift,
    );
    push(
        &mut out,
        from,
        Account::Earned(task.publisher_id),
        CreditClass::Earned,
        task.escrow_earned,
    );
    out
}

/// Redeem: earned credits leave the market.
pub fn redeem(owner: AccountId, amount: u64) -> Vec<Transfer> {
    let mut out = Vec::with_capacity(1);
    push(
        &mut out,
        Account::Earned(owner),
        Account::Redeemed,
        CreditClass::Earned,
        amount,
    );
    out
}

/// A risk hold: earned to frozen.
pub fn freeze(owner: AccountId, amount: u64) -> Vec<Transfer> {
    let mut out = Vec::with_capacity(1);
    push(
        &mut out,
        Account::Earned(owner),
        Account::Frozen(owner),
        CreditClass::Earned,
        amount,
    );
    out
}

/// A released hold: frozen back to earned.
pub fn unfreeze(owner: AccountId, amount: u64) -> Vec<Transfer> {
    let mut out = Vec::with_capacity(1);
    push(
        &mut out,
        Account::Frozen(owner),
        Account::Earned(owner),
        CreditClass::Earned,
        amount,
    );
    out
}
