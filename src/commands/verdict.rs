//! `verify` (the publisher's review) and `auto_verdict` (a verification
//! worker's): accept pays the whole escrow to the executor's owner as earned
//! and supersedes the other active executions; reject ends the execution and,
//! if no other is active, re-opens the task (escrow kept) or closes it as
//! failed with the escrow refunded in its exact split.

use super::{Ctx, Fields, caller_owner, execution, limits, require_system, task};
use crate::error::DomainError;
use serde::{Deserialize, Serialize};
use taskledger_events::{
    Event, ExecutionId, ExecutionSuperseded, TaskClosed, TaskId, TaskReopened, VerdictRecorded,
    VerifierKind,
};
use taskledger_projections::{ExecutionStatus, State, money, reputation};

#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Verify {
    pub task_id: TaskId,
    pub execution_id: ExecutionId,
    pub accepted: bool,
    pub feedback: Option<String>,
    /// Hundredths, 0..=1000; an accept without one scores 8.00.
    pub score: Option<u16>,
    /// On reject: re-open the task (default) or close it and refund.
    pub reopen: bool,
}

impl Verify {
    pub fn decide(&self, state: &State, ctx: Ctx<'_>) -> Result<Vec<Event>, DomainError> {
        let publisher = caller_owner(state, ctx)?;
        let task = task(state, self.task_id)?;
        if task.publisher_id != publisher.id {
            return Err(DomainError::forbidden(
                "only the task's publisher may review it",
            ));
        }
        let x = execution(state, self.task_id, self.execution_id)?;
        if !task.spec.verification.is_manual() && x.fallback.is_none() {
            return Err(DomainError::Conflict(
                "this task is verified automatically; review is possible after a fallback".into(),
            ));
        }
        let mut f = Fields::default();
        if let Some(fb) = &self.feedback {
            f.text(fb, "feedback", false, limits::FEEDBACK_CHARS_MAX);
        }
        if let Some(s) = self.score {
            f.check(s <= reputation::REPUTATION_MAX, "score", "must be 0..=10");
        }
        f.finish()?;
        let score = self.score.unwrap_or(if self.accepted {
            reputation::MANUAL_ACCEPT_SCORE
        } else {
            0
        });
        settle(
            state,
            self.task_id,
            self.execution_id,
            Settle {
                accepted: self.accepted,
                score,
                feedback: self.feedback.clone(),
                verifier: VerifierKind::Publisher,
                detail: None,
                reopen: self.reopen,
            },
        )
    }
}

#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct AutoVerdict {
    pub task_id: TaskId,
    pub execution_id: ExecutionId,
    pub accepted: bool,
    /// Hundredths, 0..=1000.
    pub score: u16,
    pub verifier: VerifierKind,
    /// JSON text.
    pub detail: Option<String>,
    pub feedback: Option<String>,
}

impl AutoVerdict {
    pub fn decide(&self, state: &State, ctx: Ctx<'_>) -> Result<Vec<Event>, DomainError> {
        require_system(ctx)?;
        if self.verifier == VerifierKind::Publisher {
            return Err(DomainError::BadRequest(
                "an automatic verdict needs an automatic verifier".into(),
            ));
        }
        let mut f = Fields::default();
        f.check(
            self.score <= reputation::REPUTATION_MAX,
            "score",
            "must be 0..=10",
        );
        f.json(self.detail.as_deref(), "detail", limits::DETAIL_BYTES_MAX);
        f.finish()?;
        settle(
            state,
            self.task_id,
            self.execution_id,
            Settle {
                accepted: self.accepted,
                score: self.score,
                feedback: self.feedback.clone(),
                verifier: self.verifier,
                detail: self.detail.clone(),
                reopen: true,
            },
        )
    }
}

struct Settle {
    accepted: bool,
    score: u16,
    feedback: Option<String>,
    verifier: VerifierKind,
    detail: Option<String>,
    reopen: bool,
}

fn settle(
    state: &State,
    task_id: TaskId,
    execution_id: ExecutionId,
    s: Settle,
) -> Result<Vec<Event>, DomainError> {
    let task = task(state, task_id)?;
    let x = execution(state, task_id, execution_id)?;
    if x.status != ExecutionStatus::Submitted {
        return Err(DomainError::Conflict(format!(
            "the execution is {}",
            x.status.as_str()
        )));
    }
    if let Some(st) = task.closed {
        return Err(DomainError::Conflict(format!(
            "the task is already {}",
            st.as_str()
        )));
    }
    let transfers = if s.accepted {
        money::payout(task, x.owner_id)
    } else {
        Vec::new()
    };
    let mut events = vec![Event::VerdictRecorded(VerdictRecorded {
        task_id,
        execution_id,
        accepted: s.accepted,
        score: s.score,
        feedback: s.feedback,
        verifier: s.verifier,
        detail: s.detail,
        transfers,
    })];
    let others: Vec<ExecutionId> = task
        .executions
        .iter()
        .filter(|id| **id != execution_id)
        .filter(|id| {
            state
                .executions
                .get(id)
                .is_some_and(|o| o.status.is_active())
        })
        .copied()
        .collect();
    if s.accepted {
        events.extend(others.into_iter().map(|id| {
            Event::ExecutionSuperseded(ExecutionSuperseded {
                task_id,
                execution_id: id,
            })
        }));
    } else if others.is_empty() {
        events.push(if s.reopen {
            Event::TaskReopened(TaskReopened { task_id })
        } else {
            Event::TaskClosed(TaskClosed {
                task_id,
                transfers: money::refund(task),
            })
        });
    }
    Ok(events)
}

#[cfg(test)]
mod tests {
    use crate::commands::testkit::World;
    use taskledger_events::{Principal, VerifierKind};
    use taskledger_projections::{ExecutionStatus, TaskStatus};

    #[test]
    fn accept_pays_the_whole_reward_as_earned() {
        // given a submitted execution of a gift-funded task
        let mut w = World::new();
        let (alice, bob) = (w.owner("alice"), w.owner("bob"));
        let key = w.agent(bob);
        let task = w.publish(alice, 100).unwrap();
        let x = w.claim(key, task).unwrap();
        w.submit(key, task, "done").unwrap();
        // when alice accepts
        w.verify(alice, task, x, true, true).unwrap();
        // then bob's owner wallet holds 100 earned, escrow is empty, the task completed
        assert_eq!(w.state.owners[&bob].wallet.earned, 100);
        assert_eq!(w.state.tasks[&task].escrow(), 0);
        assert_eq!(w.state.tasks[&task].status(), TaskStatus::Completed);
        assert_eq!(w.state.agent_keys[&key].reputation, 545);
    }

    #[test]
    fn reject_reopens_with_escrow_kept() {
        let mut w = World::new();
        let (alice, bob) = (w.owner("alice"), w.owner("bob"));
        let key = w.agent(bob);
        let task = w.publish(alice, 100).unwrap();
        let x = w.claim(key, task).unwrap();
        w.submit(key, task, "bad").unwrap();
        w.verify(alice, task, x, false, true).unwrap();
        let t = &w.state.tasks[&task];
        assert_eq!((t.status(), t.escrow()), (TaskStatus::Open, 100));
        assert_eq!(w.state.executions[&x].status, ExecutionStatus::Rejected);
        assert_eq!(w.state.agent_keys[&key].reputation, 425);
    }

    #[test]
    fn reject_without_reopen_refunds_the_exact_split() {
        let mut w = World::new();
        let (alice, bob) = (w.owner("alice"), w.owner("bob"));
        w.give_earned(alice, 50);
        let key = w.agent(bob);
        let task = w.publish(alice, 1020).unwrap();
        let x = w.claim(key, task).unwrap();
        w.submit(key, task, "bad").unwrap();
        w.verify(alice, task, x, false, false).unwrap();
        assert_eq!(w.state.tasks[&task].status(), TaskStatus::Failed);
        let wallet = w.state.owners[&alice].wallet;
        assert_eq!((wallet.gift, wallet.earned), (1000, 50));
    }

    #[test]
    fn accept_supersedes_the_other_executions() {
        let mut w = World::new();
        let (alice, bob, carol) = (w.owner("alice"), w.owner("bob"), w.owner("carol"));
        let (kb, kc) = (w.agent(bob), w.agent(carol));
        let task = w
            .publish_spec(alice, {
                let mut s = w.spec(30);
                s.max_executors = 2;
                s
            })
            .unwrap();
        let xb = w.claim(kb, task).unwrap();
        let xc = w.claim(kc, task).unwrap();
        w.submit(kb, task, "b").unwrap();
        w.verify(alice, task, xb, true, true).unwrap();
        assert_eq!(w.state.executions[&xc].status, ExecutionStatus::Superseded);
        assert_eq!(w.state.owners[&carol].wallet.earned, 0);
        // a second verdict on the paid task changes nothing
        assert_eq!(
            w.verify(alice, task, xb, true, true).unwrap_err().code(),
            "conflict"
        );
        assert_eq!(w.state.owners[&bob].wallet.earned, 30);
    }

    #[test]
    fn only_the_publisher_reviews() {
        let mut w = World::new();
        let (alice, bob) = (w.owner("alice"), w.owner("bob"));
        let key = w.agent(bob);
        let task = w.publish(alice, 10).unwrap();
        let x = w.claim(key, task).unwrap();
        w.submit(key, task, "x").unwrap();
        assert_eq!(
            w.verify(bob, task, x, true, true).unwrap_err().code(),
            "forbidden"
        );
    }

    #[test]
    fn auto_verdicts_come_only_from_the_service() {
        let mut w = World::new();
        let (alice, bob) = (w.owner("alice"), w.owner("bob"));
        let key = w.agent(bob);
        let task = w.publish(alice, 10).unwrap();
        let x = w.claim(key, task).unwrap();
        w.submit(key, task, "x").unwrap();
        let cmd = w.auto_cmd(task, x, true, VerifierKind::AutoRules);
        assert_eq!(
            w.run(&Principal::Owner(alice), cmd.clone())
                .unwrap_err()
                .code(),
            "forbidden"
        );
        w.run(&Principal::System, cmd).unwrap();
        assert_eq!(w.state.owners[&bob].wallet.earned, 10);
        assert_eq!(w.state.agent_keys[&key].reputation, 575);
    }
}
