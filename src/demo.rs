//! `taskledger demo`: a simulated market driven through the real service
//! (writer, group commit, sled), so its log exercises every branch: accept,
//! reject with re-open, reject and close, supersede, lease expiry, deadline
//! expiry, cancel, redeem, and a frozen then released (and a confirmed) risk
//! hold, and the three automatic verification modes (rules, sandboxed
//! tests, LLM judge, each falling back to the publisher's review when it
//! cannot decide). Time is a manual clock the simulation moves.

use crate::clock::ManualClock;
use crate::commands::*;
use crate::http::views::verifier_name;
use crate::service::Service;
use crate::verify::llm::LlmSettings;
use crate::verify::pool::{Verifier, VerifySettings};
use crate::writer::{Outcome, ServiceError};
use rand::{Rng, SeedableRng, rngs::StdRng};
use std::path::Path;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use taskledger_events::*;
use taskledger_projections::ExecutionStatus;

/// Simulated market participants working at once.
pub const DEMO_WORKERS: u64 = 32;
const LEASE_MS: u64 = 30 * 60 * 1000;

pub fn run(data: &Path, tasks: u64, seed: u64) -> Result<(), Box<dyn std::error::Error>> {
    let rt = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()?;
    rt.block_on(run_async(data, tasks, seed))
}

fn key_hash(rng: &mut StdRng) -> Hash {
    let mut k = [0u8; 32];
    rng.fill(&mut k);
    *blake3::hash(&k).as_bytes()
}

struct Market {
    svc: Service,
    verifier: Verifier,
    publishers: Vec<AccountId>,
    agents: Vec<(AccountId, AgentKeyId)>,
    /// `auto_tests` tasks still to publish: each runs real code in the
    /// sandbox, so the demo keeps them few.
    tests_left: AtomicU64,
}

/// How long a demo submission waits for its automatic verdict.
const DEMO_VERIFY_WAIT: std::time::Duration = std::time::Duration::from_secs(120);

impl Market {
    async fn exec(&self, p: Principal, c: Command) -> Result<Outcome, ServiceError> {
        self.svc.execute(p, None, c).await
    }
}

async fn run_async(data: &Path, tasks: u64, seed: u64) -> Result<(), Box<dyn std::error::Error>> {
    let store = SledStore::open(data)?;
    let start_ms = store.tail().at_ms.max(1_767_225_600_000);
    let clock = Arc::new(ManualClock::new(start_ms));
    let policy = Policy {
        signup_gift: 1000,
        lease_ms: LEASE_MS,
        redeem_enabled: true,
    };
    let history = store.reader();
    let (svc, writer) = Service::start(Box::new(store), policy, clock.clone())?;
    // Automatic verification as the server runs it. The LLM judge is used
    // when TASKLEDGER_LLM_URL names one; otherwise auto_llm submissions
    // fall back to the publisher's review, as on a server without a judge.
    let mut verify = VerifySettings::default();
    if let Ok(url) = std::env::var("TASKLEDGER_LLM_URL") {
        let model = std::env::var("TASKLEDGER_LLM_MODEL").unwrap_or_else(|_| "gpt-4o-mini".into());
        let mut llm = LlmSettings::new(url, model);
        llm.api_key = std::env::var("TASKLEDGER_LLM_API_KEY").ok();
        verify.llm = Some(llm);
    }
    let verifier = Verifier::new(svc.clone(), history, verify, None);
    verifier.start();
    let mut rng = StdRng::seed_from_u64(seed);
    let sys = Principal::System;
    let ops = Principal::Operator("demo-operator".into());

    let n_pub = 4 + tasks / 250;
    let n_agent_owners = 4 + tasks / 250;
    let mut m = Market {
        svc,
        verifier,
        publishers: vec![],
        agents: vec![],
        tests_left: AtomicU64::new((2 + tasks / 1000).min(12)),
    };
    for i in 0..n_pub + n_agent_owners {
        let id = AccountId(uuid::Uuid::from_u64_pair(rng.random(), rng.random()));
        let cmd = Command::Register(Register {
            account_id: id,
            kind: if i < n_pub {
                AccountKind::Human
            } else {
                AccountKind::Agent
            },
            name: format!("owner-{i}"),
            email: None,
            compute_source: (i >= n_pub).then(|| "local_model".into()),
            compute_attestation: None,
            metadata: None,
            key_hash: key_hash(&mut rng),
            client_addr: Some(format!("10.0.{}.{}", i / 250, i % 250)),
        });
        m.exec(sys.clone(), cmd).await?;
        if i < n_pub {
            // Enough to fund their share of the tasks.
            let amount = 120 * tasks / n_pub + 1000;
            m.exec(
                ops.clone(),
                Command::Grant(Grant {
                    owner_id: id,
                    amount,
                }),
            )
            .await?;
            m.publishers.push(id);
        } else {
            for k in 0..2 {
                let key_id = AgentKeyId(uuid::Uuid::from_u64_pair(rng.random(), rng.random()));
                let cmd = Command::IssueAgentKey(IssueAgentKey {
                    key_id,
                    name: format!("agent-{i}-{k}"),
                    compute_source: "local_model".into(),
                    key_hash: key_hash(&mut rng),
                });
                m.exec(Principal::Owner(id), cmd).await?;
                m.agents.push((id, key_id));
            }
        }
    }
    let m = Arc::new(m);
    let mut handles = Vec::new();
    for w in 0..DEMO_WORKERS {
        let m = m.clone();
        let seed = seed.wrapping_mul(1_000_003).wrapping_add(w);
        let clock = clock.clone();
        handles.push(tokio::spawn(async move {
            let mut rng = StdRng::seed_from_u64(seed);
            let mut i = w;
            while i < tasks {
                lifecycle(&m, &mut rng, &clock).await?;
                i += DEMO_WORKERS;
            }
            Ok::<(), ServiceError>(())
        }));
    }
    for h in handles {
        h.await??;
    }
    // Timers: past every lease and deadline, release and expire.
    clock.advance(LEASE_MS * 3);
    let (leases, deadlines) = {
        let s = m.svc.read();
        let leases: Vec<_> = s
            .executions
            .values()
            .filter(|x| x.status == ExecutionStatus::InProgress)
            .map(|x| x.id)
            .collect();
        let deadlines: Vec<_> = s
            .tasks
            .values()
            .filter(|t| t.closed.is_none() && t.spec.deadline_ms.is_some())
            .map(|t| t.id)
            .collect();
        (leases, deadlines)
    };
    for id in leases {
        m.exec(
            sys.clone(),
            Command::ExpireLease(ExpireLease { execution_id: id }),
        )
        .await?;
    }
    for id in deadlines {
        m.exec(
            sys.clone(),
            Command::ExpireDeadline(ExpireDeadline { task_id: id }),
        )
        .await?;
    }
    // Redeem some earnings; hold and review some of them.
    let earners: Vec<(AccountId, u64)> = {
        let s = m.svc.read();
        let mut v: Vec<_> = m
            .agents
            .iter()
            .map(|(o, _)| (*o, s.owners[o].wallet.earned))
            .collect();
        v.dedup();
        v.into_iter().filter(|(_, e)| *e >= 10).collect()
    };
    for (i, (owner, earned)) in earners.iter().enumerate() {
        match i % 4 {
            0 => {
                m.exec(
                    Principal::Owner(*owner),
                    Command::Redeem(Redeem { amount: earned / 2 }),
                )
                .await?;
            }
            1 | 2 => {
                let flag_id = FlagId(uuid::Uuid::from_u64_pair(rng.random(), rng.random()));
                let raise = Command::RaiseFlag(RaiseFlag {
                    flag_id,
                    kind: RiskKind::SelfDealingSuspected,
                    owner_id: *owner,
                    task_id: None,
                    reason: "demo: same client address as a publisher".into(),
                    freeze: earned / 3,
                });
                m.exec(sys.clone(), raise).await?;
                let reason = "demo review".to_string();
                let resolve = if i % 4 == 1 {
                    Command::ReleaseFlag(ReleaseFlag { flag_id, reason })
                } else {
                    Command::ConfirmFlag(ConfirmFlag { flag_id, reason })
                };
                m.exec(ops.clone(), resolve).await?;
            }
            _ => {}
        }
    }
    let head = m.svc.read().head();
    let verified = verification_counts(&m.svc.read());
    m.verifier.stop();
    m.svc.shutdown().await?;
    drop(m);
    writer.join().map_err(|_| "writer thread panicked")?;
    println!(
        "demo: {tasks} tasks simulated; {} records, head {}",
        head.seq,
        hex(&head.hash)
    );
    println!("demo: verification: {verified}");
    Ok(())
}

/// Verdicts per verifier and fallbacks, for the closing line.
fn verification_counts(s: &taskledger_projections::State) -> String {
    let mut counts: std::collections::BTreeMap<&str, (u64, u64)> = Default::default();
    let mut fallbacks = 0;
    for x in s.executions.values() {
        fallbacks += u64::from(x.fallback.is_some());
        if let Some(v) = &x.verdict {
            let c = counts.entry(verifier_name(v.verifier)).or_default();
            if v.accepted {
                c.0 += 1;
            } else {
                c.1 += 1;
            }
        }
    }
    let mut parts: Vec<String> = counts
        .iter()
        .map(|(k, (a, r))| format!("{k} {a} accepted / {r} rejected"))
        .collect();
    parts.push(format!("{fallbacks} fallbacks to manual review"));
    parts.join(", ")
}

/// Which automatic mode a lifecycle uses, and a good and a bad answer.
fn auto_mode(
    m: &Market,
    rng: &mut StdRng,
    branch: u32,
) -> Option<(Verification, &'static str, &'static str)> {
    match branch {
        0..8 => Some((
            Verification::AutoRules {
                rules: vec![
                    Rule {
                        kind: RuleKind::MinLength,
                        value: "12".into(),
                        path: None,
                        hidden: false,
                    },
                    Rule {
                        kind: RuleKind::Regex,
                        value: r"(?i)\bsentences?\b".into(),
                        path: None,
                        hidden: false,
                    },
                    Rule {
                        kind: RuleKind::NotContains,
                        value: "lorem".into(),
                        path: None,
                        hidden: true,
                    },
                ],
            },
            "three sentences, in order",
            "lorem ipsum",
        )),
        8..11 => Some((
            Verification::AutoLlm {
                rubric: "Three sentences that summarise the input.".into(),
                pass_threshold: 600,
                hidden_rubric: None,
            },
            "Three sentences. They summarise. The input.",
            "no",
        )),
        11..13
            if m.tests_left
                .fetch_update(Ordering::SeqCst, Ordering::SeqCst, |n| n.checked_sub(1))
                .is_ok() =>
        {
            if rng.random_bool(0.5) {
                Some((
                    Verification::AutoTests {
                        language: TestLanguage::Python,
                        tests: "from solution import add\n\ndef test_add():\n    assert add(2, 3) == 5\n".into(),
                        hidden_tests: None,
                    },
                    "def add(a, b):\n    return a + b\n",
                    "def add(a, b):\n    return a * b\n",
                ))
            } else {
                Some((
                    Verification::AutoTests {
                        language: TestLanguage::Javascript,
                        tests: "const assert = require('assert');\nassert.strictEqual(require('./solution.js').add(2, 3), 5);\n".into(),
                        hidden_tests: None,
                    },
                    "exports.add = (a, b) => a + b;\n",
                    "exports.add = (a, b) => a * b;\n",
                ))
            }
        }
        _ => None,
    }
}

fn pick_agent(m: &Market, rng: &mut StdRng, not: &[AgentKeyId]) -> AgentKeyId {
    loop {
        let k = m.agents[rng.random_range(0..m.agents.len())].1;
        if !not.contains(&k) {
            return k;
        }
    }
}

/// One task's whole life, along a branch picked at random.
async fn lifecycle(m: &Market, rng: &mut StdRng, clock: &ManualClock) -> Result<(), ServiceError> {
    use taskledger_events::ExecutionId as X;
    let publisher = m.publishers[rng.random_range(0..m.publishers.len())];
    let pp = Principal::Owner(publisher);
    let branch = rng.random_range(0..100u32);
    let task_id = TaskId(uuid::Uuid::from_u64_pair(rng.random(), rng.random()));
    let max_executors = if (55..65).contains(&branch) { 2 } else { 1 };
    let deadline_ms = (65..72)
        .contains(&branch)
        .then(|| clock_now(clock) + 60 * 60 * 1000);
    let auto = auto_mode(m, rng, branch);
    let spec = TaskSpec {
        title: format!("Task {}", &task_id.to_string()[..8]),
        description: "Summarise the input in three sentences.".into(),
        task_type: ["text", "code", "data"][rng.random_range(0..3)].into(),
        reward: rng.random_range(5..=100),
        requirements: None,
        input_data: Some(r#"{"text":"lorem ipsum"}"#.into()),
        deadline_ms,
        max_executors,
        tags: vec!["demo".into()],
        min_reputation: 0,
        verification: auto
            .as_ref()
            .map_or(Verification::Manual, |(v, _, _)| v.clone()),
    };
    m.exec(pp.clone(), Command::Publish(Publish { task_id, spec }))
        .await?;
    if (65..72).contains(&branch) {
        return Ok(()); // left to expire at its deadline
    }
    if branch >= 90 {
        m.exec(pp, Command::Cancel(Cancel { task_id })).await?;
        return Ok(());
    }
    let key = pick_agent(m, rng, &[]);
    let claim = |key: AgentKeyId, x: X| {
        m.exec(
            Principal::Agent(key),
            Command::Claim(Claim {
                task_id,
                execution_id: x,
            }),
        )
    };
    let submit = |key: AgentKeyId, text: &str| {
        m.exec(
            Principal::Agent(key),
            Command::Submit(Submit {
                task_id,
                result: text.into(),
                result_metadata: None,
            }),
        )
    };
    let verify = |x: X, accepted: bool, reopen: bool| {
        let cmd = Verify {
            task_id,
            execution_id: x,
            accepted,
            feedback: None,
            score: None,
            reopen,
        };
        m.exec(Principal::Owner(publisher), Command::Verify(cmd))
    };
    let x1 = X(uuid::Uuid::from_u64_pair(rng.random(), rng.random()));
    claim(key, x1).await?;
    if let Some((_, good, bad)) = auto {
        // Verified automatically; the publisher steps in only after a
        // fallback (no judge, no runner, a timeout).
        submit(key, if rng.random_bool(0.75) { good } else { bad }).await?;
        m.verifier.wait(x1, DEMO_VERIFY_WAIT).await;
        let fell_back = m
            .svc
            .read()
            .executions
            .get(&x1)
            .is_some_and(|x| x.fallback.is_some());
        if fell_back {
            verify(x1, true, true).await?;
        }
        return Ok(());
    }
    if (72..80).contains(&branch) {
        return Ok(()); // the claim lapses; the lease timer releases it
    }
    submit(key, "three sentences").await?;
    match branch {
        0..40 | 80..90 => {
            verify(x1, true, true).await?;
        }
        40..50 => {
            // reject, re-open, then another agent gets it accepted
            verify(x1, false, true).await?;
            let k2 = pick_agent(m, rng, &[key]);
            let x2 = X(uuid::Uuid::from_u64_pair(rng.random(), rng.random()));
            claim(k2, x2).await?;
            submit(k2, "better sentences").await?;
            verify(x2, true, true).await?;
        }
        50..55 => {
            verify(x1, false, false).await?;
        }
        _ => {
            // two executors: one wins, the other is superseded
            let k2 = pick_agent(m, rng, &[key]);
            let x2 = X(uuid::Uuid::from_u64_pair(rng.random(), rng.random()));
            claim(k2, x2).await?;
            verify(x1, true, true).await?;
        }
    }
    Ok(())
}

fn clock_now(clock: &ManualClock) -> u64 {
    use crate::clock::Clock;
    clock.now_ms()
}
