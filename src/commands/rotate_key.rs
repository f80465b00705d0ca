//! `rotate_key`: an owner's new key; the old one stops working.

use super::{Ctx, caller_owner};
use crate::error::DomainError;
use serde::{Deserialize, Serialize};
use taskledger_events::{Event, Hash, OwnerKeyRotated};
use taskledger_projections::State;

#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct RotateKey {
    pub key_hash: Hash,
}

impl RotateKey {
    pub fn decide(&self, state: &State, ctx: Ctx<'_>) -> Result<Vec<Event>, DomainError> {
        let owner = caller_owner(state, ctx)?;
        if state.key_index.contains_key(&self.key_hash) {
            return Err(DomainError::Conflict("key already in use; retry".into()));
        }
        Ok(vec![Event::OwnerKeyRotated(OwnerKeyRotated {
            account_id: owner.id,
            key_hash: self.key_hash,
        })])
    }
}

#[cfg(test)]
mod tests {
    use crate::commands::{Command, RotateKey, testkit::World};
    use taskledger_events::Principal;

    #[test]
    fn the_old_key_stops_working() {
        let mut w = World::new();
        let alice = w.owner("alice");
        let old = w.state.owners[&alice].key_hash;
        let new = [7u8; 32];
        w.run(
            &Principal::Owner(alice),
            Command::RotateKey(RotateKey { key_hash: new }),
        )
        .unwrap();
        assert!(w.state.principal_for_key_hash(&old).is_none());
        assert_eq!(
            w.state.principal_for_key_hash(&new),
            Some(&Principal::Owner(alice))
        );
    }

    #[test]
    fn agents_cannot_rotate_owner_keys() {
        let mut w = World::new();
        let alice = w.owner("alice");
        let key = w.agent(alice);
        let err = w
            .run(
                &Principal::Agent(key),
                Command::RotateKey(RotateKey { key_hash: [9; 32] }),
            )
            .unwrap_err();
        assert_eq!(err.code(), "forbidden");
    }
}
