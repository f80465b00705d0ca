//! `fallback`: automatic verification could not decide; the submission
//! waits for the publisher's review, with the reason on record.

use super::{Ctx, Fields, execution, limits, require_system};
use crate::error::DomainError;
use serde::{Deserialize, Serialize};
use taskledger_events::{Event, ExecutionId, TaskId, VerificationFallback};
use taskledger_projections::{ExecutionStatus, State};

#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Fallback {
    pub task_id: TaskId,
    pub execution_id: ExecutionId,
    pub reason: String,
}

impl Fallback {
    pub fn decide(&self, state: &State, ctx: Ctx<'_>) -> Result<Vec<Event>, DomainError> {
        require_system(ctx)?;
        let mut f = Fields::default();
        f.text(&self.reason, "reason", true, limits::REASON_CHARS_MAX);
        f.finish()?;
        let x = execution(state, self.task_id, self.execution_id)?;
        if x.status != ExecutionStatus::Submitted || x.fallback.is_some() {
            return Err(DomainError::Conflict(
                "the execution is not awaiting verification".into(),
            ));
        }
        Ok(vec![Event::VerificationFallback(VerificationFallback {
            task_id: self.task_id,
            execution_id: self.execution_id,
            reason: self.reason.clone(),
        })])
    }
}

#[cfg(test)]
mod tests {
    use crate::commands::{Command, Fallback, testkit::World};
    use taskledger_events::{Principal, Verification};

    #[test]
    fn after_a_fallback_the_publisher_may_review() {
        // given an auto_tests task whose verification fell back
        let mut w = World::new();
        let (alice, bob) = (w.owner("alice"), w.owner("bob"));
        let key = w.agent(bob);
        let mut spec = w.spec(10);
        spec.verification = Verification::AutoTests {
            language: taskledger_events::TestLanguage::Python,
            tests: "def test_x(): pass".into(),
            hidden_tests: None,
        };
        let task = w.publish_spec(alice, spec).unwrap();
        let x = w.claim(key, task).unwrap();
        w.submit(key, task, "x").unwrap();
        assert_eq!(
            w.verify(alice, task, x, true, true).unwrap_err().code(),
            "conflict"
        );
        let fb = Command::Fallback(Fallback {
            task_id: task,
            execution_id: x,
            reason: "runner missing".into(),
        });
        w.run(&Principal::System, fb).unwrap();
        // when she accepts, then it pays
        w.verify(alice, task, x, true, true).unwrap();
        assert_eq!(w.state.owners[&bob].wallet.earned, 10);
    }
}
