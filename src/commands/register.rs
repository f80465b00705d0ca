//! `register`: a new owner account, its key, and the signup gift.

use super::{Ctx, Fields, limits};
use crate::error::DomainError;
use serde::{Deserialize, Serialize};
use taskledger_events::{
    AccountId, AccountKind, AccountRegistered, CreditsGranted, Event, Hash, Reason,
};
use taskledger_projections::{State, money};

#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Register {
    /// Made by the caller (random).
    pub account_id: AccountId,
    pub kind: AccountKind,
    pub name: String,
    pub email: Option<String>,
    pub compute_source: Option<String>,
    pub compute_attestation: Option<String>,
    pub metadata: Option<String>,
    /// blake3 of the new key, made by the caller.
    pub key_hash: Hash,
    pub client_addr: Option<String>,
}

impl Register {
    pub fn decide(&self, state: &State, ctx: Ctx<'_>) -> Result<Vec<Event>, DomainError> {
        let mut f = Fields::default();
        f.text(&self.name, "name", true, limits::NAME_CHARS_MAX);
        if let Some(email) = &self.email {
            f.text(email, "email", true, limits::EMAIL_CHARS_MAX);
            f.check(email.contains('@'), "email", "must be an email address");
        }
        if let Some(cs) = &self.compute_source {
            f.text(cs, "compute_source", true, limits::COMPUTE_SOURCE_CHARS_MAX);
        }
        if let Some(att) = &self.compute_attestation {
            f.text(
                att,
                "compute_attestation",
                false,
                limits::ATTESTATION_CHARS_MAX,
            );
        }
        f.json(
            self.metadata.as_deref(),
            "metadata",
            limits::METADATA_BYTES_MAX,
        );
        f.finish()?;
        if state.owners.contains_key(&self.account_id)
            || state.key_index.contains_key(&self.key_hash)
        {
            return Err(DomainError::Conflict(
                "account id or key already in use; retry".into(),
            ));
        }
        let mut events = vec![Event::AccountRegistered(AccountRegistered {
            account_id: self.account_id,
            kind: self.kind,
            name: self.name.trim().to_owned(),
            email: self.email.clone(),
            compute_source: self.compute_source.clone(),
            compute_attestation: self.compute_attestation.clone(),
            metadata: self.metadata.clone(),
            key_hash: self.key_hash,
            client_addr: self.client_addr.clone(),
        })];
        let gift = ctx.policy.signup_gift;
        if gift > 0 {
            events.push(Event::CreditsGranted(CreditsGranted {
                owner_id: self.account_id,
                amount: gift,
                reason: Reason::SignupGift,
                transfers: money::grant(self.account_id, gift),
            }));
        }
        Ok(events)
    }
}

#[cfg(test)]
mod tests {
    use crate::commands::testkit::World;
    use crate::error::DomainError;

    #[test]
    fn registration_grants_the_signup_gift() {
        // given a market with a 1000-credit gift
        let mut w = World::new();
        // when alice registers
        let alice = w.owner("alice");
        // then she holds 1000 gift credits and nothing else
        let o = &w.state.owners[&alice];
        assert_eq!((o.wallet.gift, o.wallet.earned), (1000, 0));
        assert_eq!(w.state.totals.issued, 1000);
    }

    #[test]
    fn blank_name_and_bad_email_are_both_reported() {
        let mut w = World::new();
        let mut cmd = w.register_cmd("x");
        cmd.name = "  ".into();
        cmd.email = Some("nope".into());
        let err = w
            .run_system(crate::commands::Command::Register(cmd))
            .unwrap_err();
        let DomainError::Validation(fields) = err else {
            panic!("{err:?}")
        };
        let names: Vec<_> = fields.iter().map(|f| f.field.as_str()).collect();
        assert_eq!(names, ["name", "email"]);
    }

    #[test]
    fn a_reused_key_is_refused() {
        let mut w = World::new();
        let cmd = w.register_cmd("a");
        let mut again = w.register_cmd("b");
        again.key_hash = cmd.key_hash;
        w.run_system(crate::commands::Command::Register(cmd))
            .unwrap();
        let err = w
            .run_system(crate::commands::Command::Register(again))
            .unwrap_err();
        assert_eq!(err.code(), "conflict");
    }
}
