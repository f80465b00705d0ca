//! `claim`: an agent key takes a slot on a task and holds it for a lease.

use super::compute::ComputeSource;
use super::{Ctx, caller_agent, task};
use crate::error::DomainError;
use serde::{Deserialize, Serialize};
use taskledger_events::{Event, ExecutionId, TaskClaimed, TaskId};
use taskledger_projections::{State, reputation::as_points};

#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Claim {
    pub task_id: TaskId,
    /// Made by the caller (random).
    pub execution_id: ExecutionId,
}

impl Claim {
    pub fn decide(&self, state: &State, ctx: Ctx<'_>) -> Result<Vec<Event>, DomainError> {
        let key = caller_agent(state, ctx)?;
        let task = task(state, self.task_id)?;
        if let Some(s) = task.closed {
            return Err(DomainError::TaskNotOpen(format!(
                "the task is {}",
                s.as_str()
            )));
        }
        if task.spec.deadline_ms.is_some_and(|d| ctx.now_ms >= d) {
            return Err(DomainError::TaskNotOpen(
                "the task is past its deadline".into(),
            ));
        }
        let executions = &state.executions;
        if task
            .executions
            .iter()
            .any(|x| executions.get(x).is_some_and(|x| x.agent_key_id == key.id))
        {
            return Err(DomainError::AlreadyClaimed);
        }
        if key.owner_id == task.publisher_id {
            return Err(DomainError::forbidden(
                "an agent key cannot claim a task of its own owner",
            ));
        }
        if !ComputeSource::parse(&key.compute_source).is_ok_and(ComputeSource::may_claim) {
            return Err(DomainError::ComputeSourceRequired(
                "this agent key has no declared compute source".into(),
            ));
        }
        if key.reputation < task.spec.min_reputation {
            return Err(DomainError::ReputationTooLow {
                required: format!("{:.2}", as_points(task.spec.min_reputation)),
                actual: format!("{:.2}", as_points(key.reputation)),
            });
        }
        if task.active() >= task.spec.max_executors {
            return Err(DomainError::TaskFull);
        }
        if state.executions.contains_key(&self.execution_id) {
            return Err(DomainError::Conflict(
                "execution id already in use; retry".into(),
            ));
        }
        Ok(vec![Event::TaskClaimed(TaskClaimed {
            task_id: self.task_id,
            execution_id: self.execution_id,
            agent_key_id: key.id,
            lease_expires_ms: ctx.now_ms.saturating_add(ctx.policy.lease_ms.max(1)),
        })])
    }
}

#[cfg(test)]
mod tests {
    use crate::commands::testkit::World;
    use taskledger_projections::{ExecutionStatus, TaskStatus};

    #[test]
    fn a_claim_holds_a_lease() {
        // given an open task
        let mut w = World::new();
        let (alice, bob) = (w.owner("alice"), w.owner("bob"));
        let key = w.agent(bob);
        let task = w.publish(alice, 10).unwrap();
        // when bob's agent claims it
        let x = w.claim(key, task).unwrap();
        // then it is in progress with a lease, and the task is claimed
        let ex = &w.state.executions[&x];
        assert_eq!(ex.status, ExecutionStatus::InProgress);
        assert_eq!(ex.lease_expires_ms, w.now + w.policy.lease_ms);
        assert_eq!(w.state.tasks[&task].status(), TaskStatus::Claimed);
    }

    #[test]
    fn claiming_twice_is_already_claimed() {
        let mut w = World::new();
        let (alice, bob) = (w.owner("alice"), w.owner("bob"));
        let key = w.agent(bob);
        let task = w
            .publish_spec(alice, {
                let mut s = w.spec(10);
                s.max_executors = 2;
                s
            })
            .unwrap();
        w.claim(key, task).unwrap();
        assert_eq!(w.claim(key, task).unwrap_err().code(), "already_claimed");
    }

    #[test]
    fn a_full_task_refuses_more_claims() {
        let mut w = World::new();
        let (alice, bob) = (w.owner("alice"), w.owner("bob"));
        let (k1, k2) = (w.agent(bob), w.agent(bob));
        let task = w.publish(alice, 10).unwrap();
        w.claim(k1, task).unwrap();
        assert_eq!(w.claim(k2, task).unwrap_err().code(), "task_full");
    }

    #[test]
    fn own_tasks_cannot_be_claimed() {
        let mut w = World::new();
        let alice = w.owner("alice");
        let key = w.agent(alice);
        let task = w.publish(alice, 10).unwrap();
        assert_eq!(w.claim(key, task).unwrap_err().code(), "forbidden");
    }

    #[test]
    fn reputation_gates_claims() {
        let mut w = World::new();
        let (alice, bob) = (w.owner("alice"), w.owner("bob"));
        let key = w.agent(bob);
        let task = w
            .publish_spec(alice, {
                let mut s = w.spec(10);
                s.min_reputation = 600;
                s
            })
            .unwrap();
        assert_eq!(w.claim(key, task).unwrap_err().code(), "reputation_too_low");
    }

    #[test]
    fn an_unspecified_compute_source_cannot_claim() {
        let mut w = World::new();
        let (alice, bob) = (w.owner("alice"), w.owner("bob"));
        let key = w.agent_with_source(bob, "unspecified");
        let task = w.publish(alice, 10).unwrap();
        assert_eq!(
            w.claim(key, task).unwrap_err().code(),
            "compute_source_required"
        );
    }

    #[test]
    fn owners_cannot_claim() {
        let mut w = World::new();
        let (alice, bob) = (w.owner("alice"), w.owner("bob"));
        let task = w.publish(alice, 10).unwrap();
        assert_eq!(w.claim_as_owner(bob, task).unwrap_err().code(), "forbidden");
    }
}
