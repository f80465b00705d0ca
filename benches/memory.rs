//! Projection memory: heap bytes per task of a `State` holding 1,000,000
//! tasks, built through the real command path (decide, seal, apply) with the
//! branch mix of `taskledger demo` (accept, reject and re-open, reject and
//! close, supersede, lapsed lease, deadline expiry, cancel; then redeem and
//! risk holds), the demo's texts and one publisher / one agent owner (two
//! agent keys) per 250 tasks.
//!
//! A counting global allocator tracks live heap bytes. The figure is the
//! heap the finished `State` holds (everything else the simulation made is
//! dropped first), divided by the task count. Two numbers are printed: the
//! bytes requested from the allocator, and an estimate of what glibc malloc
//! spends on them (each chunk: size + 8 rounded up to 16, at least 32).
//!
//! Run: `cargo bench --bench memory` (`TASKLEDGER_MEMORY_TASKS=N` for
//! another size). Figures go in BENCHMARKS.md. Not a criterion bench:
//! criterion measures time, this measures space.

use rand::{Rng, SeedableRng, rngs::StdRng};
use std::alloc::{GlobalAlloc, Layout, System};
use std::sync::atomic::{AtomicI64, Ordering};
use std::time::Instant;
use taskledger::commands::*;
use taskledger_events::*;
use taskledger_projections::{ExecutionStatus, State};

struct Counting;

static LIVE_BYTES: AtomicI64 = AtomicI64::new(0);
static LIVE_CHUNK_BYTES: AtomicI64 = AtomicI64::new(0);
static LIVE_ALLOCS: AtomicI64 = AtomicI64::new(0);

/// What glibc malloc uses for a request of `size` bytes on 64-bit Linux.
fn chunk(size: usize) -> i64 {
    (((size + 8 + 15) & !15).max(32)) as i64
}

// SAFETY: forwards to the system allocator unchanged; only counts.
unsafe impl GlobalAlloc for Counting {
    unsafe fn alloc(&self, layout: Layout) -> *mut u8 {
        let p = unsafe { System.alloc(layout) };
        if !p.is_null() {
            LIVE_BYTES.fetch_add(layout.size() as i64, Ordering::Relaxed);
            LIVE_CHUNK_BYTES.fetch_add(chunk(layout.size()), Ordering::Relaxed);
            LIVE_ALLOCS.fetch_add(1, Ordering::Relaxed);
        }
        p
    }
    unsafe fn dealloc(&self, ptr: *mut u8, layout: Layout) {
        unsafe { System.dealloc(ptr, layout) };
        LIVE_BYTES.fetch_sub(layout.size() as i64, Ordering::Relaxed);
        LIVE_CHUNK_BYTES.fetch_sub(chunk(layout.size()), Ordering::Relaxed);
        LIVE_ALLOCS.fetch_sub(1, Ordering::Relaxed);
    }
    unsafe fn realloc(&self, ptr: *mut u8, layout: Layout, new_size: usize) -> *mut u8 {
        let p = unsafe { System.realloc(ptr, layout, new_size) };
        if !p.is_null() {
            LIVE_BYTES.fetch_add(new_size as i64 - layout.size() as i64, Ordering::Relaxed);
            LIVE_CHUNK_BYTES.fetch_add(chunk(new_size) - chunk(layout.size()), Ordering::Relaxed);
        }
        p
    }
}

#[global_allocator]
static GLOBAL: Counting = Counting;

#[derive(Clone, Copy)]
struct Heap {
    bytes: i64,
    chunk_bytes: i64,
    allocs: i64,
}

fn heap() -> Heap {
    Heap {
        bytes: LIVE_BYTES.load(Ordering::Relaxed),
        chunk_bytes: LIVE_CHUNK_BYTES.load(Ordering::Relaxed),
        allocs: LIVE_ALLOCS.load(Ordering::Relaxed),
    }
}

const LEASE_MS: u64 = 30 * 60 * 1000;
const START_MS: u64 = 1_767_225_600_000;

struct Sim {
    state: State,
    policy: Policy,
    now_ms: u64,
    rng: StdRng,
    publishers: Vec<AccountId>,
    agents: Vec<(AccountId, AgentKeyId)>,
    records: u64,
}

impl Sim {
    fn id(&mut self) -> uuid::Uuid {
        uuid::Uuid::from_u64_pair(self.rng.random(), self.rng.random())
    }

    fn run(&mut self, p: Principal, c: Command) {
        self.now_ms += 1;
        let ctx = Ctx {
            principal: &p,
            now_ms: self.now_ms,
            policy: &self.policy,
        };
        let events =
            decide(&self.state, ctx, &c).unwrap_or_else(|e| panic!("{} refused: {e}", c.name()));
        for e in events {
            let (r, _bytes) = record::seal(self.state.head(), self.now_ms, e).expect("seal");
            self.state.apply(r).expect("applies");
            self.records += 1;
        }
    }

    fn key_hash(&mut self) -> Hash {
        let mut k = [0u8; 32];
        self.rng.fill(&mut k);
        *blake3::hash(&k).as_bytes()
    }

    fn setup(&mut self, tasks: u64) {
        let n_pub = 4 + tasks / 250;
        let n_agent_owners = 4 + tasks / 250;
        for i in 0..n_pub + n_agent_owners {
            let id = AccountId(self.id());
            let key_hash = self.key_hash();
            self.run(
                Principal::System,
                Command::Register(Register {
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
                    key_hash,
                    client_addr: Some(format!("10.0.{}.{}", i / 250, i % 250)),
                }),
            );
            if i < n_pub {
                self.run(
                    Principal::Operator("demo-operator".into()),
                    Command::Grant(Grant {
                        owner_id: id,
                        amount: 120 * tasks / n_pub + 1000,
                    }),
                );
                self.publishers.push(id);
            } else {
                for k in 0..2 {
                    let key_id = AgentKeyId(self.id());
                    let key_hash = self.key_hash();
                    self.run(
                        Principal::Owner(id),
                        Command::IssueAgentKey(IssueAgentKey {
                            key_id,
                            name: format!("agent-{i}-{k}"),
                            compute_source: "local_model".into(),
                            key_hash,
                        }),
                    );
                    self.agents.push((id, key_id));
                }
            }
        }
    }

    fn pick_agent(&mut self, not: Option<AgentKeyId>) -> AgentKeyId {
        loop {
            let k = self.agents[self.rng.random_range(0..self.agents.len())].1;
            if Some(k) != not {
                return k;
            }
        }
    }

    /// One task's life along a random branch, as `taskledger demo` does.
    fn lifecycle(&mut self) {
        let publisher = self.publishers[self.rng.random_range(0..self.publishers.len())];
        let pp = Principal::Owner(publisher);
        let branch = self.rng.random_range(0..100u32);
        let task_id = TaskId(self.id());
        let spec = TaskSpec {
            title: format!("Task {}", &task_id.to_string()[..8]),
            description: "Summarise the input in three sentences.".into(),
            task_type: ["text", "code", "data"][self.rng.random_range(0..3)].into(),
            reward: self.rng.random_range(5..=100),
            requirements: None,
            input_data: Some(r#"{"text":"lorem ipsum"}"#.into()),
            deadline_ms: (65..72)
                .contains(&branch)
                .then_some(self.now_ms + 60 * 60 * 1000),
            max_executors: if (55..65).contains(&branch) { 2 } else { 1 },
            tags: vec!["demo".into()],
            min_reputation: 0,
            verification: Verification::Manual,
        };
        self.run(pp.clone(), Command::Publish(Publish { task_id, spec }));
        if (65..72).contains(&branch) {
            return;
        }
        if branch >= 90 {
            self.run(pp, Command::Cancel(Cancel { task_id }));
            return;
        }
        let claim = |s: &mut Sim, key: AgentKeyId| {
            let execution_id = ExecutionId(s.id());
            s.run(
                Principal::Agent(key),
                Command::Claim(Claim {
                    task_id,
                    execution_id,
                }),
            );
            execution_id
        };
        let submit = |s: &mut Sim, key: AgentKeyId, text: &str| {
            s.run(
                Principal::Agent(key),
                Command::Submit(Submit {
                    task_id,
                    result: text.into(),
                    result_metadata: None,
                }),
            )
        };
        let verify = |s: &mut Sim, x: ExecutionId, accepted: bool, reopen: bool| {
            s.run(
                Principal::Owner(publisher),
                Command::Verify(Verify {
                    task_id,
                    execution_id: x,
                    accepted,
                    feedback: None,
                    score: None,
                    reopen,
                }),
            )
        };
        let key = self.pick_agent(None);
        let x1 = claim(self, key);
        if (72..80).contains(&branch) {
            return;
        }
        submit(self, key, "three sentences");
        match branch {
            0..40 | 80..90 => verify(self, x1, true, true),
            40..50 => {
                verify(self, x1, false, true);
                let k2 = self.pick_agent(Some(key));
                let x2 = claim(self, k2);
                submit(self, k2, "better sentences");
                verify(self, x2, true, true);
            }
            50..55 => verify(self, x1, false, false),
            _ => {
                let k2 = self.pick_agent(Some(key));
                claim(self, k2);
                verify(self, x1, true, true);
            }
        }
    }

    /// Past every lease and deadline: release and expire; then redeem some
    /// earnings and hold some of them, as the demo does.
    fn finish(&mut self) {
        self.now_ms += LEASE_MS * 3;
        let leases: Vec<_> = self
            .state
            .executions
            .values()
            .filter(|x| x.status == ExecutionStatus::InProgress)
            .map(|x| x.id)
            .collect();
        for execution_id in leases {
            self.run(
                Principal::System,
                Command::ExpireLease(ExpireLease { execution_id }),
            );
        }
        let deadlines: Vec<_> = self
            .state
            .tasks
            .values()
            .filter(|t| t.closed.is_none() && t.spec.deadline_ms.is_some())
            .map(|t| t.id)
            .collect();
        for task_id in deadlines {
            self.run(
                Principal::System,
                Command::ExpireDeadline(ExpireDeadline { task_id }),
            );
        }
        let mut earners: Vec<(AccountId, u64)> = self
            .agents
            .iter()
            .map(|(o, _)| (*o, self.state.owners[o].wallet.earned))
            .collect();
        earners.dedup();
        earners.retain(|(_, e)| *e >= 10);
        for (i, (owner, earned)) in earners.into_iter().enumerate() {
            match i % 4 {
                0 => self.run(
                    Principal::Owner(owner),
                    Command::Redeem(Redeem { amount: earned / 2 }),
                ),
                1 | 2 => {
                    let flag_id = FlagId(self.id());
                    self.run(
                        Principal::System,
                        Command::RaiseFlag(RaiseFlag {
                            flag_id,
                            kind: RiskKind::SelfDealingSuspected,
                            owner_id: owner,
                            task_id: None,
                            reason: "demo: same client address as a publisher".into(),
                            freeze: earned / 3,
                        }),
                    );
                    let reason = "demo review".to_string();
                    let ops = Principal::Operator("demo-operator".into());
                    if i % 4 == 1 {
                        self.run(ops, Command::ReleaseFlag(ReleaseFlag { flag_id, reason }));
                    } else {
                        self.run(ops, Command::ConfirmFlag(ConfirmFlag { flag_id, reason }));
                    }
                }
                _ => {}
            }
        }
    }
}

fn main() {
    // `cargo bench` passes `--bench`; a filter that does not match skips us.
    let args: Vec<String> = std::env::args().skip(1).collect();
    if args
        .iter()
        .any(|a| !a.starts_with('-') && !"memory".contains(a.as_str()))
    {
        return;
    }
    let tasks: u64 = std::env::var("TASKLEDGER_MEMORY_TASKS")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(1_000_000);
    let started = Instant::now();
    let before = heap();
    let mut sim = Sim {
        state: State::new(),
        policy: Policy {
            signup_gift: 1000,
            lease_ms: LEASE_MS,
            redeem_enabled: true,
        },
        now_ms: START_MS,
        rng: StdRng::seed_from_u64(7),
        publishers: Vec::new(),
        agents: Vec::new(),
        records: 0,
    };
    sim.setup(tasks);
    for _ in 0..tasks {
        sim.lifecycle();
    }
    sim.finish();
    let records = sim.records;
    let state = std::mem::take(&mut sim.state);
    drop(sim);
    let after = heap();
    let took = started.elapsed();
    assert_eq!(state.tasks.len() as u64, tasks);
    assert!(state.totals.balanced());
    let bytes = after.bytes - before.bytes;
    let chunk_bytes = after.chunk_bytes - before.chunk_bytes;
    let allocs = after.allocs - before.allocs;
    let per = |b: i64| b as f64 / tasks as f64;
    println!(
        "projection_memory/{tasks}_tasks: {records} records applied in {:.1} s",
        took.as_secs_f64()
    );
    println!(
        "  state: {} tasks, {} executions, {} owners, {} agent keys",
        state.tasks.len(),
        state.executions.len(),
        state.owners.len(),
        state.agent_keys.len()
    );
    println!(
        "  heap requested: {bytes} bytes = {:.0} B/task ({allocs} live allocations, {:.2}/task)",
        per(bytes),
        per(allocs)
    );
    println!(
        "  heap with glibc chunk overhead (estimate): {chunk_bytes} bytes = {:.0} B/task",
        per(chunk_bytes)
    );
    breakdown(&state, tasks);
    std::hint::black_box(&state);
}

/// Where the bytes are, by estimate from lengths, capacities and type sizes
/// (map slots as hashbrown lays them out: a power of two of slots, each the
/// entry plus one control byte).
fn breakdown(state: &State, tasks: u64) {
    use std::mem::size_of;
    use taskledger_projections::{Execution, LedgerRow, ReputationRow, Task};
    fn map_bytes<K, V>(m: &taskledger_projections::Map<K, V>) -> usize {
        let slots = (m.capacity() * 8 / 7).next_power_of_two();
        slots * (size_of::<(K, V)>() + 1)
    }
    let per = |b: usize| b as f64 / tasks as f64;
    let texts: usize = state
        .tasks
        .values()
        .map(|t| t.spec.title.len() + t.spec.task_type.len())
        .sum();
    let task_execs: usize = state
        .tasks
        .values()
        .map(|t| t.executions.capacity() * size_of::<ExecutionId>())
        .sum();
    let ledger: usize = state
        .owners
        .values()
        .map(|o| o.ledger.capacity() * size_of::<LedgerRow>())
        .sum();
    let ledger_rows: usize = state.owners.values().map(|o| o.ledger.len()).sum();
    let published: usize = state
        .owners
        .values()
        .map(|o| o.published.capacity() * size_of::<TaskId>())
        .sum();
    let history: usize = state
        .agent_keys
        .values()
        .map(|k| k.history.capacity() * size_of::<ReputationRow>())
        .sum();
    let key_execs: usize = state
        .agent_keys
        .values()
        .map(|k| k.executions.capacity() * size_of::<ExecutionId>())
        .sum();
    let rows = [
        ("tasks map slots", map_bytes(&state.tasks)),
        ("boxed tasks", state.tasks.len() * size_of::<Task>()),
        ("task titles and types", texts),
        ("task execution lists", task_execs),
        ("executions map slots", map_bytes(&state.executions)),
        (
            "boxed executions",
            state.executions.len() * size_of::<Execution>(),
        ),
        ("ledger rows (capacity)", ledger),
        ("published lists", published),
        ("reputation rows (capacity)", history),
        ("agent key execution lists", key_execs),
    ];
    println!(
        "  breakdown (estimate; Task {} B, Execution {} B, LedgerRow {} B, {:.2} ledger rows/task):",
        size_of::<Task>(),
        size_of::<Execution>(),
        size_of::<LedgerRow>(),
        ledger_rows as f64 / tasks as f64
    );
    for (what, bytes) in rows {
        println!("    {what:<28} {:>6.0} B/task", per(bytes));
    }
}
