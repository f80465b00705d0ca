//! Concurrent agents: many agent keys, each holding one Server-Sent Events
//! stream for the whole run, claiming and submitting tasks that a few
//! publishers keep posting, against a running `taskledger serve`.
//!
//! Set-up registers `--publishers` owners and `--agents` owners with one
//! agent key each (bounded concurrency). Then every agent opens
//! `GET /api/v1/events?type=task_published,task_reopened` and loops: take a
//! random task id it has seen on its stream (falling back to
//! `GET /tasks?status=open&claimable=true` when it has none), claim it,
//! submit. Publishers keep `--backlog` tasks open between them (they learn
//! claims from their own event streams); half of them publish `manual`
//! tasks and accept each submission they see on their stream
//! (`POST /tasks/:id/verify`), the other half publish `auto_rules` tasks
//! that the server accepts on submit.
//!
//! Every answer is checked. Claim races (`409 task_not_open`, `task_full`,
//! `already_claimed`, `conflict`) and `429` are documented refusals and
//! counted apart; anything else (other statuses, transport errors, an event
//! stream that ends or is cut off before the end) is an error.
//!
//! With `--server-pid` the server's VmRSS is sampled every second; with
//! `--stop-server` it is stopped with SIGTERM at the end, and with
//! `--audit-data DIR` the tool then runs `--bin audit --data DIR`.
//!
//! ```text
//! TASKLEDGER_RATE_LIMIT_PER_MIN=0 TASKLEDGER_SIGNUP_GIFT=1000000 \
//!   ./target/release/taskledger serve --data /tmp/agents-load --addr 127.0.0.1:18090 &
//! cargo run --release --example agents -- --url http://127.0.0.1:18090 \
//!   --agents 1000 --publishers 20 --seconds 60 --server-pid $! \
//!   --stop-server --audit-data /tmp/agents-load --bin ./target/release/taskledger
//! ```
//! (Registration is rate limited per client address and every principal per
//! minute: the run needs `TASKLEDGER_RATE_LIMIT_PER_MIN=0`. A publisher
//! spends `--reward` per task from its signup gift, and publishers earn
//! nothing, so the gift must cover the run: the tool prints the budget.)

mod common;

use clap::Parser;
use common::{latency_json, print_latency, text};
use futures_util::StreamExt;
use hdrhistogram::Histogram;
use rand::Rng;
use serde_json::{Value, json};
use std::collections::{BTreeMap, HashSet};
use std::path::PathBuf;
use std::sync::atomic::{AtomicBool, AtomicI64, AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};
use tokio::sync::Notify;
use uuid::Uuid;

#[derive(Parser, Debug, Clone)]
#[command(about = "Run many SSE-connected agents claiming and submitting, and report")]
struct Args {
    /// The server's base URL.
    #[arg(long, default_value = "http://127.0.0.1:8080")]
    url: String,
    /// Agent keys (one owner each), each with its own event stream.
    #[arg(long, default_value_t = 1000)]
    agents: usize,
    /// Publishing owners; even ones publish manual tasks, odd ones auto_rules.
    #[arg(long, default_value_t = 20)]
    publishers: usize,
    /// Concurrent publish loops per publisher.
    #[arg(long, default_value_t = 4)]
    publish_loops: usize,
    /// Open tasks the publishers keep between them (default: one per agent).
    #[arg(long)]
    backlog: Option<usize>,
    /// Reward per task.
    #[arg(long, default_value_t = 1)]
    reward: u64,
    /// How long to run (after set-up).
    #[arg(long, default_value_t = 60)]
    seconds: u64,
    /// Registrations in flight at once during set-up.
    #[arg(long, default_value_t = 32)]
    register_concurrency: usize,
    /// Sample this process's VmRSS / VmHWM every second (the server).
    #[arg(long)]
    server_pid: Option<i32>,
    /// Send SIGTERM to --server-pid at the end and wait for it to exit.
    #[arg(long, requires = "server_pid")]
    stop_server: bool,
    /// After the run (and --stop-server), audit this data directory.
    #[arg(long, requires = "stop_server")]
    audit_data: Option<PathBuf>,
    /// The taskledger binary that runs the audit.
    #[arg(long, default_value = "taskledger")]
    bin: PathBuf,
    /// Print the result as JSON too.
    #[arg(long)]
    json: bool,
}

/// Timed operations, in report order.
const OPS: [&str; 6] = [
    "publish",
    "claim",
    "claim-refused",
    "submit",
    "verify",
    "list-open",
];
const PUBLISH: usize = 0;
const CLAIM: usize = 1;
const CLAIM_REFUSED: usize = 2;
const SUBMIT: usize = 3;
const VERIFY: usize = 4;
const LIST: usize = 5;

/// Task ids an agent remembers from its stream; past this a random one is
/// replaced (most remembered ids are long claimed by then).
const POOL_IDS_MAX: usize = 1024;
/// How long an idle agent waits for a frame before listing open tasks.
const IDLE_WAIT: Duration = Duration::from_secs(1);
/// First back-off step after a lost claim race; doubles up to 64x.
const CLAIM_BACKOFF_MS: u64 = 16;
/// Per-request timeout (not for the event streams, which live all run);
/// above the server's `TASKLEDGER_VERIFY_WAIT_MS` (30 s), which an
/// automatic submit may wait under load.
const REQUEST_TIMEOUT: Duration = Duration::from_secs(60);
/// Verifications in flight per manual publisher.
const VERIFY_IN_FLIGHT_MAX: usize = 8;
/// How long publishers keep verifying after the end.
const DRAIN_WAIT: Duration = Duration::from_secs(15);

/// Per-task counters and histograms; one per agent or publisher, merged at
/// the end.
struct Stats {
    latency: Vec<Histogram<u64>>,
    claims: u64,
    submits: u64,
    accepted: u64,
    refusals: BTreeMap<String, u64>,
    errors: BTreeMap<String, u64>,
}

impl Stats {
    fn new() -> Self {
        Stats {
            latency: OPS
                .iter()
                .map(|_| Histogram::new_with_bounds(1, 60_000_000, 3).expect("valid bounds"))
                .collect(),
            claims: 0,
            submits: 0,
            accepted: 0,
            refusals: BTreeMap::new(),
            errors: BTreeMap::new(),
        }
    }

    fn merge(&mut self, other: Stats) {
        for (a, b) in self.latency.iter_mut().zip(other.latency) {
            a.add(b).expect("same bounds");
        }
        self.claims += other.claims;
        self.submits += other.submits;
        self.accepted += other.accepted;
        for (k, v) in other.refusals {
            *self.refusals.entry(k).or_default() += v;
        }
        for (k, v) in other.errors {
            *self.errors.entry(k).or_default() += v;
        }
    }

    fn time(&mut self, op: usize, started: Instant) {
        let micros = started.elapsed().as_micros() as u64;
        self.latency[op].record(micros.max(1)).ok();
    }

    /// File a failed call under refusals or errors.
    fn fail(&mut self, op: &str, e: Failure) {
        let map = if e.refusal {
            &mut self.refusals
        } else {
            &mut self.errors
        };
        *map.entry(format!("{op}: {}", e.what)).or_default() += 1;
    }
}

/// A call that did not get the expected status.
struct Failure {
    what: String,
    /// A documented refusal (claim race or rate limit), not an error.
    refusal: bool,
}

/// The REST API under `--url`, over one connection pool. Cheap to clone.
#[derive(Clone)]
struct Client {
    http: reqwest::Client,
    /// `<url>/api/v1`.
    api: String,
}

/// A status and its JSON body (`Null` when the body was not JSON).
struct Answer {
    status: u16,
    body: Value,
}

impl Answer {
    /// The stable error code of a refusal, or `?`.
    fn code(&self) -> &str {
        self.body.get("code").and_then(Value::as_str).unwrap_or("?")
    }
}

impl Client {
    /// One request, with `key` as the bearer token and `body` as JSON.
    /// `Err` only for transport failures.
    async fn send(
        &self,
        method: reqwest::Method,
        path: &str,
        key: Option<&str>,
        body: Option<&Value>,
    ) -> Result<Answer, String> {
        let mut req = self
            .http
            .request(method, format!("{}{path}", self.api))
            .timeout(REQUEST_TIMEOUT);
        if let Some(k) = key {
            req = req.bearer_auth(k);
        }
        if let Some(b) = body {
            req = req.json(b);
        }
        let resp = req
            .send()
            .await
            .map_err(|e| format!("transport: {}", e.without_url()))?;
        let status = resp.status().as_u16();
        let body = resp.json().await.unwrap_or(Value::Null);
        Ok(Answer { status, body })
    }

    /// One request; `Ok(body)` when the status is the expected one.
    async fn call(
        &self,
        method: reqwest::Method,
        path: &str,
        key: &str,
        body: Option<Value>,
        expect: u16,
    ) -> Result<Value, Failure> {
        let answer = self
            .send(method, path, Some(key), body.as_ref())
            .await
            .map_err(|what| Failure {
                what,
                refusal: false,
            })?;
        if answer.status == expect {
            return Ok(answer.body);
        }
        let code = answer.code();
        let refusal = answer.status == 429
            || (answer.status == 409
                && matches!(
                    code,
                    "task_not_open" | "task_full" | "already_claimed" | "conflict"
                ));
        Err(Failure {
            what: format!("{} {code}", answer.status),
            refusal,
        })
    }

    async fn register(&self, body: Value) -> Result<String, String> {
        let answer = self
            .send(
                reqwest::Method::POST,
                "/accounts/register",
                None,
                Some(&body),
            )
            .await
            .map_err(|e| format!("register: {e}"))?;
        if answer.status != 201 {
            return Err(format!("register: {} {}", answer.status, answer.code()));
        }
        text(&answer.body, "api_key")
    }
}

/// Task ids seen on an agent's stream and not yet tried.
#[derive(Default)]
struct Pool {
    ids: Mutex<Vec<Uuid>>,
    ready: Notify,
}

impl Pool {
    fn add(&self, id: Uuid) {
        {
            let mut ids = self.ids.lock().expect("pool lock not poisoned");
            if ids.len() >= POOL_IDS_MAX {
                let i = rand::rng().random_range(0..ids.len());
                ids[i] = id;
            } else {
                ids.push(id);
            }
        }
        self.ready.notify_one();
    }

    fn take(&self) -> Option<Uuid> {
        let mut ids = self.ids.lock().expect("pool lock not poisoned");
        if ids.is_empty() {
            return None;
        }
        let i = rand::rng().random_range(0..ids.len());
        Some(ids.swap_remove(i))
    }
}

/// One parsed SSE frame: its `event:` and the `task_id` / `execution_id`
/// of its data, found by text search (no full JSON parse per frame).
struct Frame<'a> {
    event: &'a str,
    task_id: Option<Uuid>,
    execution_id: Option<Uuid>,
}

fn field_uuid(data: &str, name: &str) -> Option<Uuid> {
    let key = format!("\"{name}\":\"");
    let at = data.find(&key)? + key.len();
    data.get(at..at + 36).and_then(|s| Uuid::parse_str(s).ok())
}

fn parse_frame(raw: &str) -> Option<Frame<'_>> {
    let mut event = None;
    let mut data = "";
    for line in raw.lines() {
        if let Some(v) = line.strip_prefix("event:") {
            event = Some(v.trim());
        } else if let Some(v) = line.strip_prefix("data:") {
            data = v.trim_start();
        }
    }
    // Comment-only frames (`: heartbeat`) carry no event.
    let event = event?;
    Some(Frame {
        event,
        task_id: field_uuid(data, "task_id"),
        execution_id: field_uuid(data, "execution_id"),
    })
}

/// Counters shared by all event streams.
#[derive(Default)]
struct SseTotals {
    frames: AtomicU64,
    heartbeats: AtomicU64,
    /// Streams whose response came back 200 and whose body is being read.
    alive: AtomicI64,
    cutoffs: AtomicU64,
    shutdowns: AtomicU64,
    ended: AtomicU64,
    failed_to_open: AtomicU64,
}

/// Open `GET /events` with `key` and hand each frame to `on_frame` until
/// the stream ends. Returns once the stream is open (200) or failed.
async fn open_stream<F>(
    c: &Client,
    key: &str,
    query: &str,
    totals: Arc<SseTotals>,
    stop: Arc<AtomicBool>,
    mut on_frame: F,
) -> Result<tokio::task::JoinHandle<()>, String>
where
    F: FnMut(Frame<'_>) + Send + 'static,
{
    let resp = c
        .http
        .get(format!("{}/events{query}", c.api))
        .bearer_auth(key)
        .send()
        .await
        .map_err(|e| format!("events: transport: {e}"))?;
    if resp.status().as_u16() != 200 {
        totals.failed_to_open.fetch_add(1, Ordering::Relaxed);
        return Err(format!("events: {}", resp.status().as_u16()));
    }
    totals.alive.fetch_add(1, Ordering::Relaxed);
    Ok(tokio::spawn(async move {
        let mut body = resp.bytes_stream();
        let mut buf: Vec<u8> = Vec::new();
        while let Some(chunk) = body.next().await {
            let Ok(chunk) = chunk else { break };
            buf.extend_from_slice(&chunk);
            // Frames end with a blank line; axum writes `\n` line ends.
            // Parse every whole frame in place, then drop them at once.
            let mut start = 0;
            while let Some(len) = buf[start..].windows(2).position(|w| w == b"\n\n") {
                let raw = String::from_utf8_lossy(&buf[start..start + len]);
                start += len + 2;
                match parse_frame(&raw) {
                    None => {
                        totals.heartbeats.fetch_add(1, Ordering::Relaxed);
                    }
                    Some(f) => {
                        totals.frames.fetch_add(1, Ordering::Relaxed);
                        match f.event {
                            "cutoff" => {
                                totals.cutoffs.fetch_add(1, Ordering::Relaxed);
                            }
                            "shutdown" => {
                                totals.shutdowns.fetch_add(1, Ordering::Relaxed);
                            }
                            _ => on_frame(f),
                        }
                    }
                }
            }
            buf.drain(..start);
        }
        totals.alive.fetch_sub(1, Ordering::Relaxed);
        if !stop.load(Ordering::Relaxed) {
            totals.ended.fetch_add(1, Ordering::Relaxed);
        }
    }))
}

/// The agent loop: claim a task seen on the stream, submit, repeat.
async fn run_agent(
    c: Client,
    key: String,
    pool: Arc<Pool>,
    until: Instant,
    lifecycles: Arc<AtomicU64>,
) -> Stats {
    let mut stats = Stats::new();
    let mut refused_in_a_row = 0u32;
    while Instant::now() < until {
        let task = match pool.take() {
            Some(t) => t,
            None => {
                let waited = tokio::time::timeout(IDLE_WAIT, pool.ready.notified()).await;
                if waited.is_ok() || Instant::now() >= until {
                    continue;
                }
                // Nothing on the stream for a while: ask for open tasks.
                let t = Instant::now();
                let listed = c
                    .call(
                        reqwest::Method::GET,
                        "/tasks?status=open&claimable=true&limit=10",
                        &key,
                        None,
                        200,
                    )
                    .await;
                stats.time(LIST, t);
                match listed {
                    Ok(v) => {
                        for task in v["tasks"].as_array().into_iter().flatten() {
                            if let Some(id) = task["id"].as_str().and_then(|s| s.parse().ok()) {
                                pool.add(id);
                            }
                        }
                    }
                    Err(e) => stats.fail("list-open", e),
                }
                continue;
            }
        };
        let t = Instant::now();
        let claimed = c
            .call(
                reqwest::Method::POST,
                &format!("/tasks/{task}/claim"),
                &key,
                None,
                201,
            )
            .await;
        match claimed {
            Ok(_) => {
                stats.time(CLAIM, t);
                stats.claims += 1;
                refused_in_a_row = 0;
            }
            Err(e) => {
                stats.time(if e.refusal { CLAIM_REFUSED } else { CLAIM }, t);
                stats.fail("claim", e);
                // Lost a race: back off with jitter, as any client under
                // contention should, so idle agents do not hammer the
                // writer with claims on tasks already taken.
                refused_in_a_row = (refused_in_a_row + 1).min(6);
                let cap_ms = CLAIM_BACKOFF_MS << refused_in_a_row;
                let wait = rand::rng().random_range(0..=cap_ms);
                tokio::time::sleep(Duration::from_millis(wait)).await;
                continue;
            }
        }
        // A claimed task is always submitted, even past the end.
        let t = Instant::now();
        let submitted = c
            .call(
                reqwest::Method::POST,
                &format!("/tasks/{task}/submit"),
                &key,
                Some(json!({"result": "done: the work"})),
                200,
            )
            .await;
        stats.time(SUBMIT, t);
        match submitted {
            Ok(v) => {
                stats.submits += 1;
                // A manual task's submit may already read `accepted` when its
                // publisher was quicker than this answer: only automatic
                // verdicts are counted here, manual ones by the publisher.
                match v["status"].as_str() {
                    Some("accepted") if v["auto_verified"].as_bool() == Some(true) => {
                        stats.accepted += 1;
                        lifecycles.fetch_add(1, Ordering::Relaxed);
                    }
                    Some("submitted" | "accepted") => {} // manual: the publisher decides
                    other => {
                        *stats
                            .errors
                            .entry(format!("submit: status {other:?}"))
                            .or_default() += 1
                    }
                }
            }
            Err(e) => stats.fail("submit", e),
        }
    }
    stats
}

/// What a publisher shares between its stream and its loops.
struct Publisher {
    key: String,
    manual: bool,
    /// Its open tasks (published, not yet claimed).
    open: AtomicI64,
    room: Notify,
    /// Manual submissions seen on the stream, waiting for a verdict.
    to_verify: tokio::sync::mpsc::UnboundedSender<(Uuid, Uuid)>,
}

async fn publish_loop(
    c: Client,
    p: Arc<Publisher>,
    target: i64,
    reward: u64,
    until: Instant,
    published: Arc<AtomicU64>,
) -> Stats {
    let mut stats = Stats::new();
    let verification = if p.manual {
        json!({"mode": "manual"})
    } else {
        json!({"mode": "auto_rules", "rules": [{"type": "contains", "value": "done"}]})
    };
    while Instant::now() < until {
        if p.open.fetch_add(1, Ordering::Relaxed) >= target {
            p.open.fetch_sub(1, Ordering::Relaxed);
            let _ = tokio::time::timeout(IDLE_WAIT, p.room.notified()).await;
            continue;
        }
        let t = Instant::now();
        let res = c
            .call(
                reqwest::Method::POST,
                "/tasks",
                &p.key,
                Some(json!({
                    "title": "agents load",
                    "description": "claim and submit",
                    "type": "load",
                    "reward_credits": reward,
                    "verification": verification,
                })),
                201,
            )
            .await;
        stats.time(PUBLISH, t);
        match res {
            Ok(_) => {
                published.fetch_add(1, Ordering::Relaxed);
            }
            Err(e) => {
                p.open.fetch_sub(1, Ordering::Relaxed);
                stats.fail("publish", e);
                tokio::time::sleep(Duration::from_millis(100)).await;
            }
        }
    }
    stats
}

/// Accept every manual submission the publisher's stream reports, a few
/// at a time.
async fn verify_loop(
    c: Client,
    key: String,
    rx: tokio::sync::mpsc::UnboundedReceiver<(Uuid, Uuid)>,
    lifecycles: Arc<AtomicU64>,
) -> Stats {
    let queue = futures_util::stream::unfold(rx, |mut rx| async move {
        rx.recv().await.map(|item| (item, rx))
    });
    let answers = queue
        .map(|(task, exec)| {
            let (c, key) = (&c, &key);
            async move {
                let t = Instant::now();
                let res = c
                    .call(
                        reqwest::Method::POST,
                        &format!("/tasks/{task}/verify"),
                        key,
                        Some(json!({"execution_id": exec, "accepted": true})),
                        200,
                    )
                    .await;
                (t, res)
            }
        })
        .buffer_unordered(VERIFY_IN_FLIGHT_MAX);
    let mut answers = std::pin::pin!(answers);
    let mut stats = Stats::new();
    while let Some((t, res)) = answers.next().await {
        stats.time(VERIFY, t);
        match res {
            Ok(_) => {
                stats.accepted += 1;
                lifecycles.fetch_add(1, Ordering::Relaxed);
            }
            Err(e) => stats.fail("verify", e),
        }
    }
    stats
}

/// `(VmRSS, VmHWM)` in KiB of a process.
fn memory_kib(pid: i32) -> Option<(u64, u64)> {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).ok()?;
    let field = |name: &str| {
        status
            .lines()
            .find(|l| l.starts_with(name))
            .and_then(|l| l.split_whitespace().nth(1))
            .and_then(|v| v.parse::<u64>().ok())
    };
    Some((field("VmRSS:")?, field("VmHWM:")?))
}

fn load_average() -> String {
    std::fs::read_to_string("/proc/loadavg")
        .map(|s| s.split_whitespace().take(3).collect::<Vec<_>>().join(" "))
        .unwrap_or_else(|_| "?".into())
}

/// Raise the open-files limit to its hard maximum: each agent holds an
/// event stream and a pooled request connection.
fn raise_nofile() -> u64 {
    let mut lim = libc::rlimit {
        rlim_cur: 0,
        rlim_max: 0,
    };
    // SAFETY: getrlimit/setrlimit only read and write the struct passed.
    unsafe {
        if libc::getrlimit(libc::RLIMIT_NOFILE, &mut lim) == 0 && lim.rlim_cur < lim.rlim_max {
            lim.rlim_cur = lim.rlim_max;
            libc::setrlimit(libc::RLIMIT_NOFILE, &lim);
        }
    }
    lim.rlim_cur
}

fn mib(kib: u64) -> f64 {
    kib as f64 / 1024.0
}

#[tokio::main]
async fn main() {
    let args = Args::parse();
    let nofile = raise_nofile();
    let needed = (args.agents + args.publishers) as u64 * 2 + 64;
    if nofile < needed {
        eprintln!("open-files limit {nofile} < {needed}: run `ulimit -n 65536` first");
        std::process::exit(2);
    }
    // No client-wide timeout: it would cut the event streams. Requests set
    // their own.
    let http = reqwest::Client::builder()
        .pool_max_idle_per_host(args.agents + args.publishers * (args.publish_loops + 1))
        .connect_timeout(Duration::from_secs(10))
        .build()
        .expect("an HTTP client");
    let c = Client {
        http,
        api: format!("{}/api/v1", args.url.trim_end_matches('/')),
    };
    let rss_before = args.server_pid.and_then(memory_kib);
    println!(
        "load average at start: {} (open-files limit {nofile})",
        load_average()
    );

    // Set-up: publishers, then agents (owner + agent key), bounded.
    let t = Instant::now();
    let publisher_keys: Vec<String> = futures_util::stream::iter(0..args.publishers)
        .map(|n| {
            let c = c.clone();
            async move {
                c.register(json!({"type": "human", "name": format!("publisher-{n}")}))
                    .await
            }
        })
        .buffer_unordered(args.register_concurrency)
        .collect::<Vec<_>>()
        .await
        .into_iter()
        .collect::<Result<_, _>>()
        .unwrap_or_else(|e| panic!("publisher set-up failed: {e}"));
    let agent_keys: Vec<String> = futures_util::stream::iter(0..args.agents)
        .map(|n| {
            let c = c.clone();
            async move {
                let owner = c
                    .register(json!({"type": "agent", "name": format!("agent-owner-{n}"), "compute_source": "local_model"}))
                    .await?;
                let key = c
                    .call(
                        reqwest::Method::POST,
                        "/accounts/me/agent-keys",
                        &owner,
                        Some(json!({"name": format!("agent-{n}"), "compute_source": "local_model"})),
                        201,
                    )
                    .await
                    .map_err(|e| format!("agent key: {}", e.what))?;
                text(&key, "api_key")
            }
        })
        .buffer_unordered(args.register_concurrency)
        .collect::<Vec<_>>()
        .await
        .into_iter()
        .collect::<Result<_, _>>()
        .unwrap_or_else(|e| panic!("agent set-up failed: {e}"));
    let budget = match c
        .call(
            reqwest::Method::GET,
            "/accounts/me",
            &publisher_keys[0],
            None,
            200,
        )
        .await
    {
        Ok(v) => v["credit_balance"].as_u64().unwrap_or(0),
        Err(e) => panic!("publisher profile: {}", e.what),
    };
    println!(
        "set-up: {} publishers, {} agent keys in {:.1} s; each publisher can fund {} tasks at reward {}",
        args.publishers,
        args.agents,
        t.elapsed().as_secs_f64(),
        budget / args.reward.max(1),
        args.reward
    );
    let rss_setup = args.server_pid.and_then(memory_kib);

    // Event streams: every agent and every publisher.
    let stop = Arc::new(AtomicBool::new(false));
    let totals = Arc::new(SseTotals::default());
    let lifecycles = Arc::new(AtomicU64::new(0));
    let published = Arc::new(AtomicU64::new(0));
    let t = Instant::now();
    let pools: Vec<Arc<Pool>> = (0..args.agents).map(|_| Arc::default()).collect();
    let mut streams = Vec::new();
    let opened: Vec<_> = futures_util::stream::iter(agent_keys.iter().zip(&pools))
        .map(|(key, pool)| {
            let pool = pool.clone();
            open_stream(
                &c,
                key,
                "?type=task_published,task_reopened",
                totals.clone(),
                stop.clone(),
                move |f| {
                    if let Some(id) = f.task_id {
                        pool.add(id);
                    }
                },
            )
        })
        .buffer_unordered(args.register_concurrency)
        .collect()
        .await;
    for s in opened {
        streams.push(s.unwrap_or_else(|e| panic!("agent event stream: {e}")));
    }
    let backlog = args.backlog.unwrap_or(args.agents).max(1);
    let target = backlog.div_ceil(args.publishers.max(1)) as i64;
    let mut publishers = Vec::new();
    let mut verifiers = Vec::new();
    for (n, key) in publisher_keys.iter().enumerate() {
        let (tx, rx) = tokio::sync::mpsc::unbounded_channel();
        let p = Arc::new(Publisher {
            key: key.clone(),
            manual: n % 2 == 0,
            open: AtomicI64::new(0),
            room: Notify::new(),
            to_verify: tx,
        });
        let seen = p.clone();
        let mut verified: HashSet<Uuid> = HashSet::new();
        let s = open_stream(
            &c,
            key,
            "",
            totals.clone(),
            stop.clone(),
            move |f| match f.event {
                "task_claimed" => {
                    seen.open.fetch_sub(1, Ordering::Relaxed);
                    seen.room.notify_waiters();
                }
                "task_reopened" => {
                    seen.open.fetch_add(1, Ordering::Relaxed);
                }
                "result_submitted" if seen.manual => {
                    if let (Some(task), Some(exec)) = (f.task_id, f.execution_id)
                        && verified.insert(exec)
                    {
                        let _ = seen.to_verify.send((task, exec));
                    }
                }
                _ => {}
            },
        )
        .await
        .unwrap_or_else(|e| panic!("publisher event stream: {e}"));
        streams.push(s);
        verifiers.push(tokio::spawn(verify_loop(
            c.clone(),
            key.clone(),
            rx,
            lifecycles.clone(),
        )));
        publishers.push(p);
    }
    let streams_total = streams.len();
    println!(
        "{} event streams open in {:.1} s",
        totals.alive.load(Ordering::Relaxed),
        t.elapsed().as_secs_f64()
    );
    let rss_streams = args.server_pid.and_then(memory_kib);

    // The run.
    let started = Instant::now();
    let until = started + Duration::from_secs(args.seconds);
    let samples = Arc::new(Mutex::new(Vec::new()));
    let sampler = args.server_pid.map(|pid| {
        let published = published.clone();
        let samples = samples.clone();
        tokio::spawn(async move {
            let mut tick = tokio::time::interval(Duration::from_secs(1));
            loop {
                tick.tick().await;
                let Some(m) = memory_kib(pid) else { break };
                samples.lock().expect("samples lock not poisoned").push((
                    started.elapsed().as_secs_f64(),
                    published.load(Ordering::Relaxed),
                    m,
                ));
                if Instant::now() >= until + DRAIN_WAIT {
                    break;
                }
            }
        })
    });
    let mut loops = Vec::new();
    for p in &publishers {
        for _ in 0..args.publish_loops {
            loops.push(tokio::spawn(publish_loop(
                c.clone(),
                p.clone(),
                target,
                args.reward,
                until,
                published.clone(),
            )));
        }
    }
    for (key, pool) in agent_keys.into_iter().zip(pools) {
        loops.push(tokio::spawn(run_agent(
            c.clone(),
            key,
            pool,
            until,
            lifecycles.clone(),
        )));
    }
    let mut total = Stats::new();
    for l in loops {
        if let Ok(s) = l.await {
            total.merge(s);
        }
    }
    let secs = started.elapsed().as_secs_f64();
    // Give publishers time to review the last manual submissions.
    let drain = Instant::now();
    let alive_at_end = totals.alive.load(Ordering::Relaxed);
    let ended_early = totals.ended.load(Ordering::Relaxed);
    let failed_to_open = totals.failed_to_open.load(Ordering::Relaxed);
    let cutoffs = totals.cutoffs.load(Ordering::Relaxed);
    let frames_at_end = totals.frames.load(Ordering::Relaxed);
    let expected_accepts = total.submits;
    while lifecycles.load(Ordering::Relaxed) < expected_accepts && drain.elapsed() < DRAIN_WAIT {
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    stop.store(true, Ordering::Relaxed);
    for s in streams {
        s.abort();
    }
    for p in publishers {
        drop(p);
    }
    for v in verifiers {
        // The sender lives in the aborted stream's closure and in the
        // publisher: both gone now, so the loop ends.
        if let Ok(s) = v.await {
            total.merge(s);
        }
    }
    if let Some(s) = sampler {
        s.abort();
    }
    let samples = std::mem::take(&mut *samples.lock().expect("samples lock not poisoned"));
    let rss_end = args.server_pid.and_then(memory_kib);
    let load_end = load_average();

    // Report.
    let accepted = total.accepted;
    let lifecycle_rate = accepted as f64 / secs;
    println!(
        "{} agents, {} publishers, {:.1} s: {} tasks published, {} claims ({:.0}/s), {} submits ({:.0}/s), {} accepted = {:.0} lifecycles/s",
        args.agents,
        args.publishers,
        secs,
        published.load(Ordering::Relaxed),
        total.claims,
        total.claims as f64 / secs,
        total.submits,
        total.submits as f64 / secs,
        accepted,
        lifecycle_rate
    );
    if accepted < total.submits {
        println!(
            "  {} submissions still unreviewed after the drain",
            total.submits - accepted
        );
    }
    print_latency(&OPS, &total.latency);
    println!(
        "event streams: {streams_total} opened, {alive_at_end} alive at the end, {ended_early} ended early, {cutoffs} cut off as slow; {frames_at_end} frames received, {} heartbeats",
        totals.heartbeats.load(Ordering::Relaxed)
    );
    let refusals: u64 = total.refusals.values().sum();
    println!("refusals (documented): {refusals}");
    for (k, v) in &total.refusals {
        println!("  {v:>8}  {k}");
    }
    let sse_errors = (streams_total as u64).saturating_sub(alive_at_end.max(0) as u64);
    let errors: u64 = total.errors.values().sum::<u64>() + sse_errors;
    println!("errors: {errors}");
    for (k, v) in &total.errors {
        println!("  {v:>8}  {k}");
    }
    if sse_errors > 0 {
        println!(
            "  {sse_errors:>8}  event streams not alive at the end ({ended_early} ended, {cutoffs} cut off, {failed_to_open} failed to open)"
        );
    }
    let kib = |m: Option<(u64, u64)>| m.map(|(rss, _)| mib(rss));
    if let Some(pid) = args.server_pid {
        let peak_rss = samples.iter().map(|s| s.2.0).max().unwrap_or(0);
        let hwm = rss_end.map(|m| m.1).unwrap_or(0);
        println!(
            "server {pid} RSS MiB: before set-up {:.1?}, after set-up {:.1?}, with streams open {:.1?}, at the end {:.1?}; peak sampled {:.1}, VmHWM {:.1}",
            kib(rss_before),
            kib(rss_setup),
            kib(rss_streams),
            kib(rss_end),
            mib(peak_rss),
            mib(hwm)
        );
        if let (Some(first), Some(last)) = (samples.first(), samples.last())
            && last.1 > first.1
        {
            let per_k = (last.2.0 as f64 - first.2.0 as f64) / ((last.1 - first.1) as f64 / 1000.0);
            println!(
                "  RSS growth over the run: {:.1} MiB for {} tasks = {:.0} KiB per 1k tasks",
                mib(last.2.0.saturating_sub(first.2.0)),
                last.1 - first.1,
                per_k
            );
        }
        for s in samples.iter().step_by(10) {
            println!(
                "  t={:>5.1}s published={:>7} rss={:.1} MiB",
                s.0,
                s.1,
                mib(s.2.0)
            );
        }
    }
    println!("load average at the end: {load_end}");

    let mut audit_ok = None;
    if args.stop_server
        && let Some(pid) = args.server_pid
    {
        // SAFETY: kill(2) with a pid the operator named; no memory involved.
        unsafe {
            libc::kill(pid, libc::SIGTERM);
        }
        let t = Instant::now();
        while std::path::Path::new(&format!("/proc/{pid}")).exists()
            && t.elapsed() < Duration::from_secs(60)
        {
            // A child of our shell lingers as a zombie; its status shows it.
            let zombie = std::fs::read_to_string(format!("/proc/{pid}/stat"))
                .map(|s| s.contains(") Z "))
                .unwrap_or(true);
            if zombie {
                break;
            }
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
        println!(
            "server stopped with SIGTERM in {:.1} s",
            t.elapsed().as_secs_f64()
        );
        if let Some(dir) = &args.audit_data {
            let t = Instant::now();
            let out = std::process::Command::new(&args.bin)
                .arg("audit")
                .arg("--data")
                .arg(dir)
                .output();
            match out {
                Ok(o) => {
                    print!("{}", String::from_utf8_lossy(&o.stdout));
                    eprint!("{}", String::from_utf8_lossy(&o.stderr));
                    println!(
                        "audit: {} in {:.1} s",
                        if o.status.success() {
                            "PASSED"
                        } else {
                            "FAILED"
                        },
                        t.elapsed().as_secs_f64()
                    );
                    audit_ok = Some(o.status.success());
                }
                Err(e) => {
                    println!("audit: could not run {}: {e}", args.bin.display());
                    audit_ok = Some(false);
                }
            }
        }
    }

    if args.json {
        let per_op = latency_json(&OPS, &total.latency);
        println!(
            "{}",
            json!({
                "agents": args.agents,
                "publishers": args.publishers,
                "seconds": secs,
                "published": published.load(Ordering::Relaxed),
                "claims": total.claims,
                "submits": total.submits,
                "accepted": accepted,
                "lifecycles_per_second": lifecycle_rate,
                "ops": per_op,
                "sse": {
                    "opened": streams_total,
                    "alive_at_end": alive_at_end,
                    "frames": frames_at_end,
                    "cutoffs": cutoffs,
                    "ended_early": ended_early,
                },
                "refusals": total.refusals,
                "errors": total.errors,
                "server_rss_kib": {
                    "before": rss_before.map(|m| m.0),
                    "after_setup": rss_setup.map(|m| m.0),
                    "streams_open": rss_streams.map(|m| m.0),
                    "end": rss_end.map(|m| m.0),
                    "hwm": rss_end.map(|m| m.1),
                },
                "audit_ok": audit_ok,
            })
        );
    }
    if errors > 0 || audit_ok == Some(false) {
        std::process::exit(1);
    }
}
