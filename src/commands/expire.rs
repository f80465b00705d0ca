//! Timers, as commands of the service itself so their effects are in the
//! log: `expire_lease` releases a claim whose lease lapsed (no reputation
//! change); `expire_deadline` refunds a task past its deadline once no
//! execution is active.

use super::{Ctx, require_system, task};
use crate::error::DomainError;
use serde::{Deserialize, Serialize};
use taskledger_events::{Event, ExecutionId, LeaseReleased, TaskExpired, TaskId};
use taskledger_projections::{ExecutionStatus, State, money};

#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct ExpireLease {
    pub execution_id: ExecutionId,
}

impl ExpireLease {
    pub fn decide(&self, state: &State, ctx: Ctx<'_>) -> Result<Vec<Event>, DomainError> {
        require_system(ctx)?;
        let x = state
            .executions
            .get(&self.execution_id)
            .ok_or_else(|| DomainError::not_found(format!("execution {}", self.execution_id)))?;
        if x.status != ExecutionStatus::InProgress {
            return Err(DomainError::Conflict(format!(
                "the execution is {}",
                x.status.as_str()
            )));
        }
        if ctx.now_ms < x.lease_expires_ms {
            return Err(DomainError::Conflict("the lease has not lapsed".into()));
        }
        Ok(vec![Event::LeaseReleased(LeaseReleased {
            task_id: x.task_id,
            execution_id: x.id,
        })])
    }
}

#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct ExpireDeadline {
    pub task_id: TaskId,
}

impl ExpireDeadline {
    pub fn decide(&self, state: &State, ctx: Ctx<'_>) -> Result<Vec<Event>, DomainError> {
        require_system(ctx)?;
        let task = task(state, self.task_id)?;
        if let Some(s) = task.closed {
            return Err(DomainError::TaskNotOpen(format!(
                "the task is already {}",
                s.as_str()
            )));
        }
        match task.spec.deadline_ms {
            Some(d) if ctx.now_ms >= d => {}
            _ => {
                return Err(DomainError::Conflict(
                    "the task is not past a deadline".into(),
                ));
            }
        }
        if task.active() > 0 {
            return Err(DomainError::Conflict(
                "the task has active executions".into(),
            ));
        }
        Ok(vec![Event::TaskExpired(TaskExpired {
            task_id: self.task_id,
            transfers: money::refund(task),
        })])
    }
}

#[cfg(test)]
mod tests {
    use crate::commands::{Command, ExpireDeadline, ExpireLease, testkit::World};
    use taskledger_events::Principal;
    use taskledger_projections::{ExecutionStatus, TaskStatus};

    #[test]
    fn a_lapsed_lease_releases_the_claim_and_reopens() {
        let mut w = World::new();
        let (alice, bob) = (w.owner("alice"), w.owner("bob"));
        let key = w.agent(bob);
        let task = w.publish(alice, 10).unwrap();
        let x = w.claim(key, task).unwrap();
        let early = Command::ExpireLease(ExpireLease { execution_id: x });
        assert_eq!(
            w.run(&Principal::System, early.clone()).unwrap_err().code(),
            "conflict"
        );
        w.now += w.policy.lease_ms;
        w.run(&Principal::System, early).unwrap();
        assert_eq!(w.state.executions[&x].status, ExecutionStatus::Released);
        assert_eq!(w.state.tasks[&task].status(), TaskStatus::Open);
        assert_eq!(w.state.agent_keys[&key].reputation, 500);
    }

    #[test]
    fn a_deadline_refunds_an_idle_task() {
        let mut w = World::new();
        let alice = w.owner("alice");
        let mut spec = w.spec(70);
        spec.deadline_ms = Some(w.now + 1000);
        let task = w.publish_spec(alice, spec).unwrap();
        let cmd = Command::ExpireDeadline(ExpireDeadline { task_id: task });
        assert_eq!(
            w.run(&Principal::System, cmd.clone()).unwrap_err().code(),
            "conflict"
        );
        w.now += 1000;
        w.run(&Principal::System, cmd).unwrap();
        assert_eq!(w.state.tasks[&task].status(), TaskStatus::Expired);
        assert_eq!(w.state.owners[&alice].wallet.gift, 1000);
    }
}
