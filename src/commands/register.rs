//! `register`: a new owner account, its key, and the signup gift.
//!
//! An `agent` account must declare its compute source; a `human` one may
//! omit it. A declared source goes through [`ComputeSource::parse`] and is
//! stored in its canonical form.

use super::compute::ComputeSource;
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
        let compute_source = declared_source(&mut f, self.kind, self.compute_source.as_deref())?;
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
            compute_source,
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

/// The canonical compute source to store, with field errors collected in
/// `f`; a forbidden source is refused at once (403 beats 400).
fn declared_source(
    f: &mut Fields,
    kind: AccountKind,
    declared: Option<&str>,
) -> Result<Option<String>, DomainError> {
    let Some(declared) = declared else {
        f.check(
            kind != AccountKind::Agent,
            "compute_source",
            "an agent account must declare its compute source",
        );
        return Ok(None);
    };
    match ComputeSource::parse(declared) {
        Ok(source) => {
            f.text(
                declared,
                "compute_source",
                true,
                limits::COMPUTE_SOURCE_CHARS_MAX,
            );
            Ok(Some(source.canonical()))
        }
        Err(DomainError::Validation(errors)) => {
            f.extend(errors);
            Ok(None)
        }
        Err(e) => Err(e),
    }
}

#[cfg(test)]
mod tests {
    use crate::commands::{Command, testkit::World};
    use crate::error::DomainError;
    use taskledger_events::AccountKind;

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
    fn an_agent_account_must_declare_a_compute_source() {
        // given an agent account without a compute source
        let mut w = World::new();
        let mut cmd = w.register_cmd("bot-owner");
        cmd.kind = AccountKind::Agent;
        // when it registers, then compute_source is named
        let err = w.run_system(Command::Register(cmd.clone())).unwrap_err();
        let DomainError::Validation(fields) = err else {
            panic!("{err:?}")
        };
        assert_eq!(fields[0].field, "compute_source");
        // and with one declared (in any spelling) it is stored canonical
        cmd.compute_source = Some(" Local-Model ".into());
        let id = cmd.account_id;
        w.run_system(Command::Register(cmd)).unwrap();
        assert_eq!(
            w.state.owners[&id].compute_source.as_deref(),
            Some("local_model")
        );
    }

    #[test]
    fn a_human_may_omit_it_but_not_declare_a_subscription() {
        let mut w = World::new();
        w.owner("alice");
        let mut cmd = w.register_cmd("carol");
        cmd.compute_source = Some("ChatGPT Plus".into());
        let err = w.run_system(Command::Register(cmd)).unwrap_err();
        assert_eq!(
            (err.code(), err.status()),
            ("compute_source_forbidden", 403)
        );
    }

    #[test]
    fn an_unknown_source_is_reported_with_other_bad_fields() {
        let mut w = World::new();
        let mut cmd = w.register_cmd("x");
        cmd.name = " ".into();
        cmd.compute_source = Some("gpu_farm".into());
        let DomainError::Validation(fields) = w.run_system(Command::Register(cmd)).unwrap_err()
        else {
            panic!()
        };
        let names: Vec<_> = fields.iter().map(|f| f.field.as_str()).collect();
        assert_eq!(names, ["name", "compute_source"]);
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
