//! `cancel`: the publisher takes an open task back; the escrow is refunded.

use super::{Ctx, caller_owner, task};
use crate::error::DomainError;
use serde::{Deserialize, Serialize};
use taskledger_events::{Event, TaskCancelled, TaskId};
use taskledger_projections::{State, money};

#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Cancel {
    pub task_id: TaskId,
}

impl Cancel {
    pub fn decide(&self, state: &State, ctx: Ctx<'_>) -> Result<Vec<Event>, DomainError> {
        let owner = caller_owner(state, ctx)?;
        let task = task(state, self.task_id)?;
        if task.publisher_id != owner.id {
            return Err(DomainError::forbidden(
                "only the task's publisher may cancel it",
            ));
        }
        if let Some(s) = task.closed {
            return Err(DomainError::TaskNotOpen(format!(
                "the task is already {}",
                s.as_str()
            )));
        }
        if task.active() > 0 {
            return Err(DomainError::Conflict(
                "the task has active executions".into(),
            ));
        }
        Ok(vec![Event::TaskCancelled(TaskCancelled {
            task_id: self.task_id,
            transfers: money::refund(task),
        })])
    }
}

#[cfg(test)]
mod tests {
    use crate::commands::testkit::World;
    use taskledger_projections::TaskStatus;

    #[test]
    fn cancel_refunds_in_full() {
        let mut w = World::new();
        let alice = w.owner("alice");
        let task = w.publish(alice, 400).unwrap();
        w.cancel(alice, task).unwrap();
        assert_eq!(w.state.tasks[&task].status(), TaskStatus::Cancelled);
        assert_eq!(w.state.owners[&alice].wallet.gift, 1000);
    }

    #[test]
    fn a_claimed_task_cannot_be_cancelled() {
        let mut w = World::new();
        let (alice, bob) = (w.owner("alice"), w.owner("bob"));
        let key = w.agent(bob);
        let task = w.publish(alice, 10).unwrap();
        w.claim(key, task).unwrap();
        assert_eq!(w.cancel(alice, task).unwrap_err().code(), "conflict");
        assert_eq!(w.cancel(bob, task).unwrap_err().code(), "forbidden");
    }
}
