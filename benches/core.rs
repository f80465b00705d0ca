//! Core benchmarks: durable group-committed appends (sled) at batch 1, 16
//! and 256; decide + apply of a whole task lifecycle in memory; and the
//! audit (chain + every rule + conservation) of a 1,000,000-record export.
//!
//! Run: `cargo bench --bench core`. Figures go in BENCHMARKS.md.

use criterion::{BatchSize, Criterion, Throughput, criterion_group, criterion_main};
use taskledger::commands::*;
use taskledger_events::store::LogStore;
use taskledger_events::*;
use taskledger_projections::State;

fn claim_event(n: u64) -> Event {
    Event::TaskClaimed(TaskClaimed {
        task_id: TaskId::from_u128(n as u128),
        execution_id: ExecutionId::from_u128(n as u128 + 1),
        agent_key_id: AgentKeyId::from_u128(7),
        lease_expires_ms: 1_800_000_000_000,
    })
}

fn appends(c: &mut Criterion) {
    let mut group = c.benchmark_group("durable_append");
    for batch in [1usize, 16, 256] {
        let dir = tempfile::tempdir().expect("tempdir");
        let mut store = SledStore::open(dir.path()).expect("open");
        let mut head = store.head();
        group.throughput(Throughput::Elements(batch as u64));
        group.bench_function(format!("batch_{batch}"), |b| {
            // As the writer does: seal (encode and hash once), then append
            // the sealed bytes with one apply_batch and one flush.
            b.iter(|| {
                let mut sealed = Vec::with_capacity(batch);
                for _ in 0..batch {
                    let (r, s) =
                        seal_record(head, 1_700_000_000_000, claim_event(head.seq)).expect("seal");
                    head = r.head();
                    sealed.push(s);
                }
                store.append_sealed(&sealed).expect("append");
            })
        });
    }
    group.finish();
}

/// A market of one publisher and one agent owner, then lifecycles.
struct Sim {
    state: State,
    /// Sealed record bytes, kept only when `keep` is set.
    bytes: Vec<Vec<u8>>,
    keep: bool,
    policy: Policy,
    n: u128,
    publisher: AccountId,
    key: AgentKeyId,
}

impl Sim {
    fn run(&mut self, p: Principal, c: Command) {
        let ctx = Ctx {
            principal: &p,
            now_ms: 1_700_000_000_000,
            policy: &self.policy,
        };
        for e in decide(&self.state, ctx, &c).expect("decides") {
            let (r, b) = record::seal(self.state.head(), 1_700_000_000_000, e).expect("seal");
            self.state.apply(r).expect("applies");
            if self.keep {
                self.bytes.push(b);
            }
        }
    }

    fn new(keep: bool) -> Sim {
        let mut s = Sim {
            state: State::new(),
            bytes: Vec::new(),
            keep,
            policy: Policy {
                signup_gift: 0,
                ..Policy::default()
            },
            n: 10,
            publisher: AccountId::from_u128(1),
            key: AgentKeyId::from_u128(3),
        };
        for (id, h) in [(1u128, 1u8), (2, 2)] {
            s.run(
                Principal::System,
                Command::Register(Register {
                    account_id: AccountId::from_u128(id),
                    kind: AccountKind::Human,
                    name: "o".into(),
                    email: None,
                    compute_source: None,
                    compute_attestation: None,
                    metadata: None,
                    key_hash: [h; 32],
                    client_addr: None,
                }),
            );
        }
        s.run(
            Principal::Operator("ops".into()),
            Command::Grant(Grant {
                owner_id: s.publisher,
                amount: 1_000_000_000,
            }),
        );
        let key = s.key;
        s.run(
            Principal::Owner(AccountId::from_u128(2)),
            Command::IssueAgentKey(IssueAgentKey {
                key_id: key,
                name: "k".into(),
                compute_source: "local_model".into(),
                key_hash: [3; 32],
            }),
        );
        s
    }

    fn lifecycle(&mut self) {
        self.n += 2;
        let task_id = TaskId::from_u128(self.n);
        let execution_id = ExecutionId::from_u128(self.n + 1);
        let spec = TaskSpec::manual(
            "Summarise",
            "Summarise the text in three sentences",
            "text",
            10,
        );
        let (pp, pa) = (Principal::Owner(self.publisher), Principal::Agent(self.key));
        self.run(pp.clone(), Command::Publish(Publish { task_id, spec }));
        self.run(
            pa.clone(),
            Command::Claim(Claim {
                task_id,
                execution_id,
            }),
        );
        self.run(
            pa,
            Command::Submit(Submit {
                task_id,
                result: "three sentences".into(),
                result_metadata: None,
            }),
        );
        let v = Verify {
            task_id,
            execution_id,
            accepted: true,
            feedback: None,
            score: None,
            reopen: true,
        };
        self.run(pp, Command::Verify(v));
    }
}

fn decide_apply(c: &mut Criterion) {
    let mut group = c.benchmark_group("decide_apply");
    group.throughput(Throughput::Elements(4));
    let mut sim = Sim::new(false);
    group.bench_function("lifecycle_4_commands", |b| b.iter(|| sim.lifecycle()));
    group.finish();
}

fn audit(c: &mut Criterion) {
    const LIFECYCLES: usize = 250_000; // 4 records each, plus the set-up: ~1,000,000 records
    let dir = tempfile::tempdir().expect("tempdir");
    let mut sim = Sim::new(true);
    for _ in 0..LIFECYCLES {
        sim.lifecycle();
    }
    let mut store = MemStore::new();
    for chunk in sim.bytes.chunks(4096) {
        store.append(chunk).expect("append");
    }
    let n = sim.bytes.len() as u64;
    drop(sim);
    let path = dir.path().join("audit.log");
    export::write_all(&store, &path).expect("export");

    let mut group = c.benchmark_group("audit");
    group.sample_size(10);
    group.throughput(Throughput::Elements(n));
    group.bench_function("export_1m_records", |b| {
        b.iter_batched(
            || (),
            |_| {
                let report = taskledger::audit::audit_file(&path);
                assert!(report.ok);
            },
            BatchSize::PerIteration,
        )
    });
    group.finish();
}

criterion_group!(benches, appends, decide_apply, audit);
criterion_main!(benches);
