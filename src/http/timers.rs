//! Timers: lapsed claim leases and passed task deadlines end as commands of
//! the service itself (`expire_lease`, `expire_deadline`) through the
//! writer, so their effects are in the log and replay never reads a clock.
//!
//! The timer keeps a queue of due times, filled by one scan of the read
//! view at start and then from the live records (claims, publishes,
//! re-opens) as they arrive; only after falling behind the live stream
//! (more than `LIVE_RECORDS_MAX` records unread) does it rescan. At each tick
//! it re-checks every due entry against the view before it asks the
//! writer, and the writer's `decide` checks again: a timer can be late,
//! never wrong.

use super::AppState;
use crate::commands::{Command, ExpireDeadline, ExpireLease};
use crate::error::DomainError;
use crate::writer::ServiceError;
use std::collections::{BTreeSet, HashMap};
use std::sync::RwLockReadGuard;
use std::time::Duration;
use taskledger_events::{Event, ExecutionId, Principal, TaskId};
use taskledger_projections::{ExecutionStatus, State};
use tokio::sync::broadcast::error::RecvError;

type ViewGuard<'v> = RwLockReadGuard<'v, State>;

#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord)]
enum Due {
    Lease(ExecutionId),
    Deadline(TaskId),
}

/// When a deadline passed while executions were active, look again after this.
const DEADLINE_RECHECK_MS: u64 = 1_000;
/// Rate-limit state is pruned this often.
const RATE_PRUNE_EVERY_TICKS: u64 = 60;

/// Due entries in time order. A lease entry leaves as soon as its result is
/// submitted, so the queue holds about one entry per running claim and
/// per open task with a deadline, not one per claim ever made.
#[derive(Default)]
struct Queue {
    due: BTreeSet<(u64, Due)>,
    /// When each queued lease is due, to find its entry on submit.
    leases: HashMap<ExecutionId, u64>,
}

impl Queue {
    fn push(&mut self, at_ms: u64, due: Due) {
        if let Due::Lease(id) = due
            && let Some(old) = self.leases.insert(id, at_ms)
        {
            self.due.remove(&(old, due));
        }
        self.due.insert((at_ms, due));
    }

    fn forget_lease(&mut self, id: ExecutionId) {
        if let Some(at) = self.leases.remove(&id) {
            self.due.remove(&(at, Due::Lease(id)));
        }
    }

    fn rebuild(&mut self, state: &State) {
        self.due.clear();
        self.leases.clear();
        for x in state.executions.values() {
            if x.status == ExecutionStatus::InProgress {
                self.push(x.lease_expires_ms, Due::Lease(x.id));
            }
        }
        for t in state.tasks.values() {
            if let (None, Some(d)) = (t.closed, t.spec.deadline_ms) {
                self.push(d, Due::Deadline(t.id));
            }
        }
    }

    /// Take in one live record. `view` is asked only for a re-open (the
    /// deadline is in the task), so the read lock is not taken per record.
    fn learn<'v>(&mut self, event: &Event, view: impl FnOnce() -> ViewGuard<'v>) {
        match event {
            Event::TaskClaimed(c) => self.push(c.lease_expires_ms, Due::Lease(c.execution_id)),
            Event::ResultSubmitted(r) => self.forget_lease(r.execution_id),
            Event::TaskPublished(p) => {
                if let Some(d) = p.spec.deadline_ms {
                    self.push(d, Due::Deadline(p.task_id));
                }
            }
            // A deadline that passed while executions were active may now apply.
            Event::TaskReopened(r) => {
                if let Some(d) = view()
                    .tasks
                    .get(&r.task_id)
                    .and_then(|t| t.spec.deadline_ms)
                {
                    self.push(d, Due::Deadline(r.task_id));
                }
            }
            _ => {}
        }
    }

    fn pop_due(&mut self, now_ms: u64) -> Vec<Due> {
        let mut out = Vec::new();
        while let Some(&(at, due)) = self.due.first() {
            if at > now_ms {
                break;
            }
            self.due.pop_first();
            if let Due::Lease(id) = due {
                self.leases.remove(&id);
            }
            out.push(due);
        }
        out
    }
}

/// What is due now, re-checked against the view: the commands to send, and
/// deadlines to look at again later.
fn commands_for(state: &State, due: &[Due], now_ms: u64) -> (Vec<Command>, Vec<Due>) {
    let mut commands = Vec::new();
    let mut later = Vec::new();
    for d in due {
        match *d {
            Due::Lease(id) => {
                if let Some(x) = state.executions.get(&id)
                    && x.status == ExecutionStatus::InProgress
                    && x.lease_expires_ms <= now_ms
                {
                    commands.push(Command::ExpireLease(ExpireLease { execution_id: id }));
                }
            }
            Due::Deadline(id) => {
                if let Some(t) = state.tasks.get(&id)
                    && t.closed.is_none()
                    && t.spec.deadline_ms.is_some_and(|d| d <= now_ms)
                {
                    if t.active() == 0 {
                        commands.push(Command::ExpireDeadline(ExpireDeadline { task_id: id }));
                    } else {
                        later.push(*d);
                    }
                }
            }
        }
    }
    (commands, later)
}

/// Run until the server stops.
pub async fn run(app: AppState) {
    let mut live = app.service.subscribe();
    let mut queue = Queue::default();
    queue.rebuild(&app.service.read());
    let mut tick = tokio::time::interval(Duration::from_millis(app.settings.timer_tick_ms.max(10)));
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    let mut ticks = 0u64;
    loop {
        // Learn each record as it is flushed; fire what is due on the tick.
        // (Learning only on the tick made a busy server fall more than the
        // live channel behind every second, and rescan the whole state.)
        tokio::select! {
            received = live.recv() => {
                match received {
                    Ok(r) => queue.learn(&r.event, || app.service.read()),
                    Err(RecvError::Lagged(_)) => queue.rebuild(&app.service.read()),
                    Err(RecvError::Closed) => return,
                }
                continue;
            }
            _ = tick.tick() => {}
        }
        ticks += 1;
        if ticks.is_multiple_of(RATE_PRUNE_EVERY_TICKS) {
            app.prune_rate_limits();
        }
        let now = app.now_ms();
        let due = queue.pop_due(now);
        if due.is_empty() {
            continue;
        }
        let (commands, later) = commands_for(&app.service.read(), &due, now);
        for d in later {
            queue.push(now + DEADLINE_RECHECK_MS, d);
        }
        for command in commands {
            match app
                .service
                .execute(Principal::System, None, command.clone())
                .await
            {
                Ok(_) => {}
                Err(ServiceError::Domain(DomainError::Overloaded)) => {
                    // Busy: try again next tick.
                    let again = match command {
                        Command::ExpireLease(c) => Due::Lease(c.execution_id),
                        Command::ExpireDeadline(c) => Due::Deadline(c.task_id),
                        _ => continue,
                    };
                    queue.push(now, again);
                }
                Err(ServiceError::Domain(e)) => {
                    // Raced with a verdict, a submit or a cancel: nothing to do.
                    tracing::debug!(command = command.name(), error = %e, "timer command refused");
                }
                Err(e @ ServiceError::Storage(_)) => {
                    tracing::error!(error = %e, "timers stop: the writer is unavailable");
                    return;
                }
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn due_entries_come_out_in_time_order_and_only_when_due() {
        let mut q = Queue::default();
        let a = ExecutionId::from_u128(1);
        let b = TaskId::from_u128(2);
        q.push(300, Due::Lease(a));
        q.push(100, Due::Deadline(b));
        assert!(q.pop_due(99).is_empty());
        assert_eq!(q.pop_due(100), vec![Due::Deadline(b)]);
        assert_eq!(q.pop_due(1000), vec![Due::Lease(a)]);
        assert!(q.pop_due(u64::MAX).is_empty());
    }

    #[test]
    fn a_submitted_result_takes_its_lease_off_the_queue() {
        let mut q = Queue::default();
        let (a, b) = (ExecutionId::from_u128(1), ExecutionId::from_u128(2));
        q.push(300, Due::Lease(a));
        q.push(400, Due::Lease(a)); // a lease moved: one entry, the later time
        q.push(500, Due::Lease(b));
        assert_eq!(q.due.len(), 2);
        let submitted = Event::ResultSubmitted(taskledger_events::ResultSubmitted {
            task_id: TaskId::from_u128(9),
            execution_id: a,
            result: "done".into(),
            result_metadata: None,
            result_hash: [0; 32],
        });
        q.learn(&submitted, || -> ViewGuard<'_> {
            unreachable!("no view needed")
        });
        assert_eq!(q.pop_due(u64::MAX), vec![Due::Lease(b)]);
        assert!(q.leases.is_empty());
    }

    #[test]
    fn unknown_entries_produce_no_command() {
        let state = State::new();
        let due = [
            Due::Lease(ExecutionId::from_u128(1)),
            Due::Deadline(TaskId::from_u128(2)),
        ];
        let (commands, later) = commands_for(&state, &due, u64::MAX);
        assert!(commands.is_empty() && later.is_empty());
    }
}
