//! `taskledger demo`: a simulated market driven through the real service
//! (writer, group commit, sled), so its log exercises every branch: accept,
//! reject with re-open, reject and close, supersede, lease expiry, deadline
//! expiry, cancel, redeem, and a frozen then released (and a confirmed) risk
//! hold. Time is a manual clock the simulation moves.

use crate::clock::ManualClock;
use crate::commands::*;
use crate::service::Service;
use crate::writer::{Outcome, ServiceError};
use rand::{Rng, SeedableRng, rngs::StdRng};
use std::path::Path;
use std::sync::Arc;
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
    publishers: Vec<AccountId>,
    agents: Vec<(AccountId, AgentKeyId)>,
}

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
    let (svc, writer) = Service::start(Box::new(store), policy, clock.clone())?;
    let mut rng = StdRng::seed_from_u64(seed);
    let sys = Principal::System;
    let ops = Principal::Operator("demo-operator".into());

    let n_pub = 4 + tasks / 250;
    let n_agent_owners = 4 + tasks / 250;
    let mut m = Market {
        svc,
        publishers: vec![],
        agents: vec![],
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
    m.svc.shutdown().await?;
    drop(m);
    writer.join().map_err(|_| "writer thread panicked")?;
    println!(
        "demo: {tasks} tasks simulated; {} records, head {}",
        head.seq,
        hex(&head.hash)
    );
    Ok(())
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
        verification: Verification::Manual,
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
