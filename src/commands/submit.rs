//! `submit`: an agent key hands in the result of its claim.

use super::{Ctx, Fields, caller_agent, limits, task};
use crate::error::DomainError;
use serde::{Deserialize, Serialize};
use taskledger_events::{Event, ResultSubmitted, TaskId};
use taskledger_projections::{ExecutionStatus, State};

#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Submit {
    pub task_id: TaskId,
    pub result: String,
    /// JSON text.
    pub result_metadata: Option<String>,
}

impl Submit {
    pub fn decide(&self, state: &State, ctx: Ctx<'_>) -> Result<Vec<Event>, DomainError> {
        let key = caller_agent(state, ctx)?;
        let mut f = Fields::default();
        if self.result.len() > limits::RESULT_BYTES_MAX {
            return Err(DomainError::TooLarge(format!(
                "result is above {} bytes",
                limits::RESULT_BYTES_MAX
            )));
        }
        f.check(
            !self.result.trim().is_empty(),
            "result",
            "must not be empty",
        );
        f.json(
            self.result_metadata.as_deref(),
            "result_metadata",
            limits::RESULT_METADATA_BYTES_MAX,
        );
        f.finish()?;
        let task = task(state, self.task_id)?;
        let executions = &state.executions;
        let mine = task
            .executions
            .iter()
            .filter_map(|x| executions.get(x))
            .find(|x| x.agent_key_id == key.id)
            .ok_or_else(|| DomainError::forbidden("this agent key has not claimed the task"))?;
        if mine.status != ExecutionStatus::InProgress {
            return Err(DomainError::Conflict(format!(
                "the execution is {}",
                mine.status.as_str()
            )));
        }
        if ctx.now_ms >= mine.lease_expires_ms {
            return Err(DomainError::Conflict(
                "the claim's lease has expired".into(),
            ));
        }
        Ok(vec![Event::ResultSubmitted(ResultSubmitted {
            task_id: self.task_id,
            execution_id: mine.id,
            result: self.result.clone(),
            result_metadata: self.result_metadata.clone(),
            result_hash: *blake3::hash(self.result.as_bytes()).as_bytes(),
        })])
    }
}

#[cfg(test)]
mod tests {
    use crate::commands::testkit::World;
    use taskledger_projections::{ExecutionStatus, TaskStatus};

    #[test]
    fn a_submission_is_recorded_with_its_hash() {
        let mut w = World::new();
        let (alice, bob) = (w.owner("alice"), w.owner("bob"));
        let key = w.agent(bob);
        let task = w.publish(alice, 10).unwrap();
        let x = w.claim(key, task).unwrap();
        w.submit(key, task, "done").unwrap();
        let ex = &w.state.executions[&x];
        assert_eq!(ex.status, ExecutionStatus::Submitted);
        assert_eq!(ex.result_hash, Some(*blake3::hash(b"done").as_bytes()));
        assert_eq!(w.state.tasks[&task].status(), TaskStatus::Submitted);
    }

    #[test]
    fn submitting_without_a_claim_is_forbidden() {
        let mut w = World::new();
        let (alice, bob) = (w.owner("alice"), w.owner("bob"));
        let key = w.agent(bob);
        let task = w.publish(alice, 10).unwrap();
        assert_eq!(w.submit(key, task, "x").unwrap_err().code(), "forbidden");
    }

    #[test]
    fn submitting_twice_is_a_conflict() {
        let mut w = World::new();
        let (alice, bob) = (w.owner("alice"), w.owner("bob"));
        let key = w.agent(bob);
        let task = w.publish(alice, 10).unwrap();
        w.claim(key, task).unwrap();
        w.submit(key, task, "one").unwrap();
        assert_eq!(w.submit(key, task, "two").unwrap_err().code(), "conflict");
    }

    #[test]
    fn a_lapsed_lease_cannot_submit() {
        let mut w = World::new();
        let (alice, bob) = (w.owner("alice"), w.owner("bob"));
        let key = w.agent(bob);
        let task = w.publish(alice, 10).unwrap();
        w.claim(key, task).unwrap();
        w.now += w.policy.lease_ms;
        assert_eq!(w.submit(key, task, "late").unwrap_err().code(), "conflict");
    }
}
