//! `issue_agent_key` and `revoke_agent_key`: an owner's keys for its agents.
//!
//! Every key declares a compute source ([`ComputeSource::parse`]), stored
//! in its canonical form; `unspecified` is accepted but cannot claim.

use super::compute::ComputeSource;
use super::{Ctx, Fields, caller_owner, limits};
use crate::error::DomainError;
use serde::{Deserialize, Serialize};
use taskledger_events::{AgentKeyId, AgentKeyIssued, AgentKeyRevoked, Event, Hash};
use taskledger_projections::State;

#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct IssueAgentKey {
    pub key_id: AgentKeyId,
    pub name: String,
    /// A declaration `<source>[:<token_plan>]` (see `commands::compute`).
    pub compute_source: String,
    pub key_hash: Hash,
}

impl IssueAgentKey {
    pub fn decide(&self, state: &State, ctx: Ctx<'_>) -> Result<Vec<Event>, DomainError> {
        let owner = caller_owner(state, ctx)?;
        let mut f = Fields::default();
        f.text(&self.name, "name", true, limits::NAME_CHARS_MAX);
        // A forbidden source is refused at once (403 beats 400).
        let compute_source = match ComputeSource::parse(&self.compute_source) {
            Ok(source) => {
                f.text(
                    &self.compute_source,
                    "compute_source",
                    true,
                    limits::COMPUTE_SOURCE_CHARS_MAX,
                );
                source.canonical()
            }
            Err(DomainError::Validation(errors)) => {
                f.extend(errors);
                String::new()
            }
            Err(e) => return Err(e),
        };
        f.finish()?;
        if owner.agent_keys.len() >= limits::AGENT_KEYS_PER_OWNER_MAX {
            return Err(DomainError::Conflict(format!(
                "an owner may hold at most {} agent keys",
                limits::AGENT_KEYS_PER_OWNER_MAX
            )));
        }
        if state.agent_keys.contains_key(&self.key_id)
            || state.key_index.contains_key(&self.key_hash)
        {
            return Err(DomainError::Conflict(
                "key id or key already in use; retry".into(),
            ));
        }
        Ok(vec![Event::AgentKeyIssued(AgentKeyIssued {
            key_id: self.key_id,
            owner_id: owner.id,
            name: self.name.trim().to_owned(),
            compute_source,
            key_hash: self.key_hash,
        })])
    }
}

#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct RevokeAgentKey {
    pub key_id: AgentKeyId,
}

impl RevokeAgentKey {
    pub fn decide(&self, state: &State, ctx: Ctx<'_>) -> Result<Vec<Event>, DomainError> {
        let owner = caller_owner(state, ctx)?;
        match state.agent_keys.get(&self.key_id) {
            Some(k) if k.owner_id == owner.id => {
                if k.revoked {
                    return Err(DomainError::Conflict("agent key already revoked".into()));
                }
                Ok(vec![Event::AgentKeyRevoked(AgentKeyRevoked {
                    key_id: self.key_id,
                    owner_id: owner.id,
                })])
            }
            // Another owner's key is as invisible as a missing one.
            _ => Err(DomainError::not_found(format!("agent key {}", self.key_id))),
        }
    }
}

#[cfg(test)]
mod tests {
    use crate::commands::{Command, RevokeAgentKey, testkit::World};
    use taskledger_events::Principal;

    #[test]
    fn a_revoked_key_no_longer_authenticates() {
        let mut w = World::new();
        let alice = w.owner("alice");
        let key = w.agent(alice);
        let hash = w.state.agent_keys[&key].key_hash;
        w.run(
            &Principal::Owner(alice),
            Command::RevokeAgentKey(RevokeAgentKey { key_id: key }),
        )
        .unwrap();
        assert!(w.state.principal_for_key_hash(&hash).is_none());
    }

    #[test]
    fn another_owners_key_is_not_found() {
        let mut w = World::new();
        let alice = w.owner("alice");
        let bob = w.owner("bob");
        let key = w.agent(alice);
        let err = w
            .run(
                &Principal::Owner(bob),
                Command::RevokeAgentKey(RevokeAgentKey { key_id: key }),
            )
            .unwrap_err();
        assert_eq!(err.code(), "not_found");
    }

    #[test]
    fn blank_compute_source_is_invalid() {
        let mut w = World::new();
        let alice = w.owner("alice");
        let mut cmd = w.agent_cmd("bot");
        cmd.compute_source = String::new();
        let err = w
            .run(&Principal::Owner(alice), Command::IssueAgentKey(cmd))
            .unwrap_err();
        assert_eq!(err.code(), "validation_failed");
    }

    #[test]
    fn a_whitelisted_plan_is_stored_canonical() {
        // given a token plan declared loosely
        let mut w = World::new();
        let alice = w.owner("alice");
        // when the key is issued
        let key = w.agent_with_source(alice, "Token_Plan_Whitelist:OpenAI-API");
        // then the log holds the canonical declaration, tier 2
        let stored = &w.state.agent_keys[&key].compute_source;
        assert_eq!(stored, "token_plan_whitelist:openai_api");
        assert_eq!(crate::commands::compute::tier_of(Some(stored)), Some(2));
    }

    #[test]
    fn a_consumer_subscription_is_forbidden_and_appends_nothing() {
        let mut w = World::new();
        let alice = w.owner("alice");
        let head = w.state.head_seq;
        let mut cmd = w.agent_cmd("bot");
        cmd.compute_source = "claude max oauth".into();
        let err = w
            .run(&Principal::Owner(alice), Command::IssueAgentKey(cmd))
            .unwrap_err();
        assert_eq!(err.code(), "compute_source_forbidden");
        assert_eq!(w.state.head_seq, head);
    }
}
