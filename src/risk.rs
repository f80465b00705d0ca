//! The risk-rules seam: four hooks (register, publish, claim, settle) and
//! three engines (none, local rules, a remote HTTP engine).
//!
//! Hooks run before a command reaches the writer, on the caller's task,
//! never on the writer: a refusal (`risk_denied`) appends nothing, and a
//! flag travels inside the command as [`Flagged`], so the flag (and, for a
//! settlement, the freeze of what was just paid) is in the same batch as
//! what it is about.
//!
//! Postures. Local rules read the read view. The remote engine gets a JSON
//! description of the event-to-be and answers
//! `{"decision": "allow" | "deny" | "flag", "reason"?, "kind"?}`. When it
//! cannot be asked (transport error, timeout, a non-2xx status, an answer
//! that is not that JSON), register, publish and claim fail open (allowed,
//! logged), while an accepted settlement fails closed: it is paid into a
//! hold (`risk_check_unavailable`, frozen) and [`Risk::run_rechecks`] asks
//! again later, releasing the hold when the engine allows it. A settlement
//! cannot be refused after the publisher (or a verifier) accepted the
//! work, so a remote `deny` there also becomes a hold, for the operator.

use crate::commands::{Command, Flagged, ReleaseFlag};
use crate::error::DomainError;
use crate::service::Service;
use serde::Serialize;
use serde_json::Value;
use std::collections::{HashMap, VecDeque};
use std::sync::{Arc, Mutex, PoisonError};
use std::time::Duration;
use taskledger_events::{AccountId, AgentKeyId, ExecutionId, FlagId, Principal, RiskKind, TaskId};
use taskledger_projections::{ExecutionStatus, FlagStatus, State};

/// The operator name on holds the engine itself releases after a re-check.
pub const RECHECK_OPERATOR: &str = "risk-engine";

#[derive(Clone, Copy, Debug, PartialEq, Eq, clap::ValueEnum)]
pub enum EngineKind {
    /// No risk checks.
    None,
    /// The built-in rules.
    Local,
    /// An HTTP engine (`TASKLEDGER_RISK_REMOTE_URL`).
    Remote,
}

#[derive(Clone, Debug)]
pub struct RiskSettings {
    pub engine: EngineKind,
    pub remote_url: Option<String>,
    pub remote_key: Option<String>,
    pub remote_timeout: Duration,
    /// How often held settlements are offered to the remote engine again.
    pub recheck_every: Duration,
    /// Accounts younger than this ...
    pub young_account: Duration,
    /// ... may publish rewards of at most this many credits.
    pub young_reward_cap: u64,
    /// This many registrations from one address within `signup_window`
    /// raise `rapid_signup_cluster` (on the one that reaches the count).
    pub signup_max: usize,
    pub signup_window: Duration,
    /// Completed tasks each way between two owners before a payout between
    /// them raises `collusion_suspected`.
    pub reciprocal_min: usize,
}

impl Default for RiskSettings {
    fn default() -> Self {
        RiskSettings {
            engine: EngineKind::None,
            remote_url: None,
            remote_key: None,
            remote_timeout: Duration::from_secs(2),
            recheck_every: Duration::from_secs(60),
            young_account: Duration::from_secs(7 * 24 * 3600),
            young_reward_cap: 50,
            signup_max: 3,
            signup_window: Duration::from_secs(30 * 60),
            reciprocal_min: 2,
        }
    }
}

#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum Hook {
    Register,
    Publish,
    Claim,
    Settle,
}

/// What an engine decided.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Decision {
    Allow,
    Deny(String),
    Flag { kind: RiskKind, reason: String },
}

/// What the remote engine is told: the hook and the facts of the
/// event-to-be. Ids are UUIDs; absent facts are left out.
#[derive(Clone, Debug, Default, Serialize)]
pub struct Facts {
    pub account_id: Option<AccountId>,
    pub client_addr: Option<String>,
    pub publisher_id: Option<AccountId>,
    pub publisher_addr: Option<String>,
    pub executor_owner_id: Option<AccountId>,
    pub executor_addr: Option<String>,
    pub agent_key_id: Option<AgentKeyId>,
    pub task_id: Option<TaskId>,
    pub execution_id: Option<ExecutionId>,
    pub reward: Option<u64>,
    pub account_age_secs: Option<u64>,
}

pub struct Risk {
    settings: RiskSettings,
    service: Service,
    http: reqwest::Client,
    /// Recent registration times per client address (local rules).
    signups: Mutex<HashMap<String, VecDeque<u64>>>,
}

impl Risk {
    pub fn new(service: Service, settings: RiskSettings) -> Arc<Self> {
        Arc::new(Risk {
            settings,
            service,
            http: reqwest::Client::new(),
            signups: Mutex::default(),
        })
    }

    pub fn settings(&self) -> &RiskSettings {
        &self.settings
    }

    /// Registration of a new account from `client_addr`.
    pub async fn register(&self, client_addr: Option<&str>, now_ms: u64) -> Decision {
        let facts = Facts {
            client_addr: client_addr.map(str::to_owned),
            ..Facts::default()
        };
        match self.settings.engine {
            EngineKind::None => Decision::Allow,
            EngineKind::Local => self.local_register(client_addr, now_ms),
            EngineKind::Remote => self.remote(Hook::Register, &facts).await,
        }
    }

    /// `owner` publishing a task with `reward`.
    pub async fn publish(&self, owner: AccountId, reward: u64, now_ms: u64) -> Decision {
        let remote = match self.settings.engine {
            EngineKind::None => return Decision::Allow,
            EngineKind::Local => false,
            EngineKind::Remote => true,
        };
        let facts = {
            let state = self.service.read();
            let o = state.owners.get(&owner);
            Facts {
                account_id: Some(owner),
                client_addr: o.and_then(|o| o.client_addr.clone()),
                reward: Some(reward),
                account_age_secs: o.map(|o| now_ms.saturating_sub(o.registered_at_ms) / 1000),
                ..Facts::default()
            }
        };
        if remote {
            return self.remote(Hook::Publish, &facts).await;
        }
        let young = facts
            .account_age_secs
            .is_some_and(|age| age < self.settings.young_account.as_secs());
        if young && reward > self.settings.young_reward_cap {
            Decision::Deny(format!(
                "accounts younger than {} days may publish rewards of at most {} credits",
                self.settings.young_account.as_secs() / 86_400,
                self.settings.young_reward_cap
            ))
        } else {
            Decision::Allow
        }
    }

    /// Agent key `key` claiming `task`.
    pub async fn claim(&self, key: AgentKeyId, task: TaskId) -> Decision {
        // Self-dealing is judged at settlement (pay, then hold), not here:
        // only a remote engine has anything to say about a claim.
        if self.settings.engine != EngineKind::Remote {
            return Decision::Allow;
        }
        let facts = {
            let state = self.service.read();
            let k = state.agent_keys.get(&key);
            let t = state.tasks.get(&task);
            Facts {
                agent_key_id: Some(key),
                executor_owner_id: k.map(|k| k.owner_id),
                executor_addr: k
                    .and_then(|k| state.owners.get(&k.owner_id))
                    .and_then(|o| o.client_addr.clone()),
                publisher_id: t.map(|t| t.publisher_id),
                publisher_addr: t
                    .and_then(|t| state.owners.get(&t.publisher_id))
                    .and_then(|o| o.client_addr.clone()),
                task_id: Some(task),
                reward: t.map(|t| t.spec.reward),
                ..Facts::default()
            }
        };
        self.remote(Hook::Claim, &facts).await
    }

    /// An accepted verdict on `execution` of `task` (a rejection moves no
    /// credits to anyone and is not checked).
    pub async fn settle(&self, task: TaskId, execution: ExecutionId) -> Decision {
        let remote = match self.settings.engine {
            EngineKind::None => return Decision::Allow,
            EngineKind::Local => false,
            EngineKind::Remote => true,
        };
        let Some(facts) = settle_facts(&self.service.read(), task, execution) else {
            return Decision::Allow; // the command itself will refuse
        };
        if remote {
            self.remote(Hook::Settle, &facts).await
        } else {
            self.local_settle(&facts)
        }
    }

    fn local_register(&self, client_addr: Option<&str>, now_ms: u64) -> Decision {
        let Some(addr) = client_addr else {
            return Decision::Allow;
        };
        let window_ms = self.settings.signup_window.as_millis() as u64;
        let mut signups = self.signups.lock().unwrap_or_else(PoisonError::into_inner);
        // Forget addresses whose last registration left the window.
        if signups.len() > 10_000 {
            signups.retain(|_, times| times.back().is_some_and(|t| now_ms - t < window_ms));
        }
        let times = signups.entry(addr.to_owned()).or_default();
        while times
            .front()
            .is_some_and(|t| now_ms.saturating_sub(*t) >= window_ms)
        {
            times.pop_front();
        }
        times.push_back(now_ms);
        if times.len() >= self.settings.signup_max {
            Decision::Flag {
                kind: RiskKind::RapidSignupCluster,
                reason: format!(
                    "{} registrations from {addr} within {} minutes",
                    times.len(),
                    window_ms / 60_000
                ),
            }
        } else {
            Decision::Allow
        }
    }

    fn local_settle(&self, facts: &Facts) -> Decision {
        if let (Some(p), Some(e)) = (&facts.publisher_addr, &facts.executor_addr)
            && p == e
        {
            return Decision::Flag {
                kind: RiskKind::SelfDealingSuspected,
                reason: format!("publisher and executor registered from the same address ({p})"),
            };
        }
        let (Some(a), Some(b)) = (facts.publisher_id, facts.executor_owner_id) else {
            return Decision::Allow;
        };
        let state = self.service.read();
        // This payout is one more from a to b.
        let a_to_b = completed_between(&state, a, b) + 1;
        let b_to_a = completed_between(&state, b, a);
        let min = self.settings.reciprocal_min;
        if a_to_b >= min && b_to_a >= min {
            Decision::Flag {
                kind: RiskKind::CollusionSuspected,
                reason: format!(
                    "reciprocal payouts: {a_to_b} task(s) of {a} paid to {b}, {b_to_a} of {b} paid to {a}"
                ),
            }
        } else {
            Decision::Allow
        }
    }

    /// Ask the remote engine, applying the hook's posture when it cannot
    /// answer.
    async fn remote(&self, hook: Hook, facts: &Facts) -> Decision {
        match self.ask(hook, facts).await {
            Ok(Decision::Deny(reason)) if hook == Hook::Settle => Decision::Flag {
                kind: RiskKind::OperatorHold,
                reason: format!("the risk engine objects to this payout: {reason}"),
            },
            Ok(d) => d,
            Err(why) if hook == Hook::Settle => Decision::Flag {
                kind: RiskKind::RiskCheckUnavailable,
                reason: format!(
                    "the risk engine could not be asked ({why}); payout held until it answers"
                ),
            },
            Err(why) => {
                tracing::warn!(hook = ?hook, error = %why, "risk engine unavailable; allowed (fail open)");
                Decision::Allow
            }
        }
    }

    async fn ask(&self, hook: Hook, facts: &Facts) -> Result<Decision, String> {
        let url = self
            .settings
            .remote_url
            .as_deref()
            .ok_or("no TASKLEDGER_RISK_REMOTE_URL")?;
        let mut body = serde_json::to_value(facts).map_err(|e| e.to_string())?;
        body["hook"] = serde_json::json!(hook);
        let mut req = self
            .http
            .post(url)
            .timeout(self.settings.remote_timeout)
            .json(&body);
        if let Some(key) = &self.settings.remote_key {
            req = req.bearer_auth(key);
        }
        let resp = req.send().await.map_err(|e| {
            if e.is_timeout() {
                "timed out".to_owned()
            } else {
                "transport error".to_owned()
            }
        })?;
        if !resp.status().is_success() {
            return Err(format!("HTTP {}", resp.status().as_u16()));
        }
        let answer: Value = resp
            .json()
            .await
            .map_err(|_| "an answer that is not JSON")?;
        parse_answer(&answer).ok_or_else(|| "an unusable answer".to_owned())
    }

    /// Offer held settlements (`risk_check_unavailable`) to the remote
    /// engine again, every `recheck_every`, until the service stops. An
    /// `allow` releases the hold; anything else leaves it to the operator.
    pub async fn run_rechecks(self: Arc<Self>) {
        if self.settings.engine != EngineKind::Remote {
            return;
        }
        let mut answered: std::collections::HashSet<FlagId> = Default::default();
        let mut tick = tokio::time::interval(self.settings.recheck_every);
        loop {
            tick.tick().await;
            let held: Vec<(FlagId, Facts)> = {
                let state = self.service.read();
                state
                    .flags
                    .values()
                    .filter(|f| {
                        f.status == FlagStatus::Open
                            && f.kind == RiskKind::RiskCheckUnavailable
                            && !answered.contains(&f.id)
                    })
                    .filter_map(|f| {
                        let task = state.tasks.get(&f.task_id?)?;
                        settle_facts(&state, task.id, task.winner?).map(|facts| (f.id, facts))
                    })
                    .collect()
            };
            for (flag_id, facts) in held {
                match self.ask(Hook::Settle, &facts).await {
                    Ok(Decision::Allow) => {
                        let release = Command::ReleaseFlag(ReleaseFlag {
                            flag_id,
                            reason: "the risk engine allowed the payout on re-check".into(),
                        });
                        let who = Principal::Operator(RECHECK_OPERATOR.into());
                        match self.service.execute(who, None, release).await {
                            Ok(_) => {
                                answered.insert(flag_id);
                            }
                            Err(e) => tracing::warn!(error = %e, "held payout not released"),
                        }
                    }
                    Ok(_) => {
                        answered.insert(flag_id);
                    }
                    Err(why) => tracing::debug!(error = %why, "risk engine still unavailable"),
                }
            }
        }
    }
}

/// A command as the engine's decision makes it: refused, unchanged, or
/// wrapped with its flag (`owner`: whose flag, `None` for the account a
/// registration creates; `freeze_payout` for a settlement).
pub fn apply(
    decision: Decision,
    command: Command,
    owner: Option<AccountId>,
    task: Option<TaskId>,
    freeze_payout: bool,
) -> Result<Command, DomainError> {
    match decision {
        Decision::Allow => Ok(command),
        Decision::Deny(reason) => Err(DomainError::RiskDenied(reason)),
        Decision::Flag { kind, reason } => Ok(Command::Flagged(Flagged {
            command: Box::new(command),
            flag_id: FlagId::random(),
            kind,
            owner_id: owner,
            task_id: task,
            reason,
            freeze_payout,
        })),
    }
}

fn parse_answer(v: &Value) -> Option<Decision> {
    let reason = v
        .get("reason")
        .and_then(Value::as_str)
        .unwrap_or("no reason given")
        .chars()
        .take(500)
        .collect::<String>();
    match v.get("decision")?.as_str()? {
        "allow" => Some(Decision::Allow),
        "deny" => Some(Decision::Deny(reason)),
        "flag" => {
            let kind = match v.get("kind").and_then(Value::as_str) {
                Some("self_dealing_suspected") => RiskKind::SelfDealingSuspected,
                Some("rapid_signup_cluster") => RiskKind::RapidSignupCluster,
                Some("collusion_suspected") => RiskKind::CollusionSuspected,
                None | Some("operator_hold") => RiskKind::OperatorHold,
                Some(_) => return None,
            };
            Some(Decision::Flag { kind, reason })
        }
        _ => None,
    }
}

fn settle_facts(state: &State, task: TaskId, execution: ExecutionId) -> Option<Facts> {
    let t = state.tasks.get(&task)?;
    let x = state.executions.get(&execution)?;
    let addr = |id: AccountId| state.owners.get(&id).and_then(|o| o.client_addr.clone());
    Some(Facts {
        publisher_id: Some(t.publisher_id),
        publisher_addr: addr(t.publisher_id),
        executor_owner_id: Some(x.owner_id),
        executor_addr: addr(x.owner_id),
        agent_key_id: Some(x.agent_key_id),
        task_id: Some(task),
        execution_id: Some(execution),
        reward: Some(t.spec.reward),
        ..Facts::default()
    })
}

/// Tasks of `publisher` completed by an agent key of `executor`.
fn completed_between(state: &State, publisher: AccountId, executor: AccountId) -> usize {
    let Some(p) = state.owners.get(&publisher) else {
        return 0;
    };
    p.published
        .iter()
        .filter_map(|t| state.tasks.get(t)?.winner)
        .filter_map(|x| state.executions.get(&x))
        .filter(|x| x.status == ExecutionStatus::Accepted && x.owner_id == executor)
        .count()
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn remote_answers_are_read_strictly() {
        assert_eq!(
            parse_answer(&json!({"decision": "allow"})),
            Some(Decision::Allow)
        );
        assert_eq!(
            parse_answer(&json!({"decision": "deny", "reason": "sanctioned"})),
            Some(Decision::Deny("sanctioned".into()))
        );
        assert_eq!(
            parse_answer(
                &json!({"decision": "flag", "kind": "collusion_suspected", "reason": "r"})
            ),
            Some(Decision::Flag {
                kind: RiskKind::CollusionSuspected,
                reason: "r".into()
            })
        );
        for garbage in [
            json!({}),
            json!({"decision": "maybe"}),
            json!({"decision": 1}),
            json!({"decision": "flag", "kind": "unknown_kind"}),
            json!("allow"),
        ] {
            assert_eq!(parse_answer(&garbage), None, "{garbage}");
        }
    }

    #[test]
    fn a_deny_refuses_and_a_flag_wraps() {
        let cmd = Command::Cancel(crate::commands::Cancel {
            task_id: TaskId::from_u128(1),
        });
        assert_eq!(
            apply(Decision::Deny("no".into()), cmd.clone(), None, None, false)
                .unwrap_err()
                .code(),
            "risk_denied"
        );
        assert_eq!(
            apply(Decision::Allow, cmd.clone(), None, None, false).unwrap(),
            cmd
        );
        let flagged = apply(
            Decision::Flag {
                kind: RiskKind::OperatorHold,
                reason: "r".into(),
            },
            cmd,
            None,
            None,
            false,
        )
        .unwrap();
        assert!(matches!(flagged, Command::Flagged(_)));
    }
}
