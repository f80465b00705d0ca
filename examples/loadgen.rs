//! Load generator: complete task lifecycles over HTTP against a running
//! `taskledger serve`, from N concurrent clients.
//!
//! Each client registers two owners, each with an agent key, then loops
//! until the time is up: owner A publishes (reward 1), B's agent key claims
//! and submits, A accepts; the next round swaps the roles, so credits flow
//! back and forth and no wallet runs dry. Every answer is checked; anything
//! but the expected status counts as an error, by code.
//!
//! ```text
//! TASKLEDGER_RATE_LIMIT_PER_MIN=0 cargo run --release -- serve --data /tmp/load &
//! cargo run --release --example loadgen -- --url http://127.0.0.1:8080 --concurrency 32 --seconds 20
//! ```
//! (Rate limiting is per principal; a lifecycle benchmark must turn it off
//! or every client is throttled to the limit.)

mod common;

use clap::Parser;
use common::{Api, latency_json, print_latency, text};
use hdrhistogram::Histogram;
use serde_json::{Value, json};
use std::collections::BTreeMap;
use std::time::{Duration, Instant};

#[derive(Parser, Debug, Clone)]
#[command(about = "Drive complete task lifecycles over HTTP and report throughput and latency")]
struct Args {
    /// The server's base URL.
    #[arg(long, default_value = "http://127.0.0.1:8080")]
    url: String,
    /// Concurrent clients.
    #[arg(long, default_value_t = 32)]
    concurrency: usize,
    /// How long to run.
    #[arg(long, default_value_t = 20)]
    seconds: u64,
    /// Print the result as JSON too.
    #[arg(long)]
    json: bool,
}

const OPS: [&str; 4] = ["publish", "claim", "submit", "verify"];

struct Stats {
    lifecycles: u64,
    latency: Vec<Histogram<u64>>,
    errors: BTreeMap<String, u64>,
}

impl Stats {
    fn new() -> Self {
        Stats {
            lifecycles: 0,
            latency: OPS
                .iter()
                .map(|_| Histogram::new_with_bounds(1, 60_000_000, 3).expect("valid bounds"))
                .collect(),
            errors: BTreeMap::new(),
        }
    }

    fn merge(&mut self, other: Stats) {
        self.lifecycles += other.lifecycles;
        for (a, b) in self.latency.iter_mut().zip(other.latency) {
            a.add(b).expect("same bounds");
        }
        for (k, v) in other.errors {
            *self.errors.entry(k).or_default() += v;
        }
    }
}

/// The API, with each call checked against the status it should answer.
struct Client(Api);

impl Client {
    /// One request; `Ok(body)` when the status is the expected one.
    async fn call(
        &self,
        method: reqwest::Method,
        path: &str,
        key: Option<&str>,
        body: Option<Value>,
        expect: u16,
    ) -> Result<Value, String> {
        self.0
            .send(method, path, key, body.as_ref())
            .await?
            .expect(expect)
    }
}

async fn setup(c: &Client, n: usize) -> Result<([String; 2], [String; 2]), String> {
    let mut owners = Vec::new();
    let mut agents = Vec::new();
    for side in 0..2 {
        let reg = c
            .call(
                reqwest::Method::POST,
                "/accounts/register",
                None,
                Some(json!({"type": "agent", "name": format!("load-{n}-{side}"), "compute_source": "local_model"})),
                201,
            )
            .await?;
        let owner = text(&reg, "api_key")?;
        let key = c
            .call(
                reqwest::Method::POST,
                "/accounts/me/agent-keys",
                Some(&owner),
                Some(
                    json!({"name": format!("worker-{n}-{side}"), "compute_source": "local_model"}),
                ),
                201,
            )
            .await?;
        agents.push(text(&key, "api_key")?);
        owners.push(owner);
    }
    Ok((
        [owners[0].clone(), owners[1].clone()],
        [agents[0].clone(), agents[1].clone()],
    ))
}

async fn run_client(c: Client, n: usize, until: Instant) -> Stats {
    let mut stats = Stats::new();
    let (owners, agents) = match setup(&c, n).await {
        Ok(x) => x,
        Err(e) => {
            *stats.errors.entry(format!("setup: {e}")).or_default() += 1;
            return stats;
        }
    };
    let mut round = 0usize;
    while Instant::now() < until {
        let publisher = &owners[round % 2];
        let agent = &agents[(round + 1) % 2];
        round += 1;
        let mut timed = |op: usize, started: Instant| {
            let micros = started.elapsed().as_micros() as u64;
            stats.latency[op].record(micros.max(1)).ok();
        };
        let t = Instant::now();
        let task = c
            .call(
                reqwest::Method::POST,
                "/tasks",
                Some(publisher),
                Some(json!({"title": "load", "description": "lifecycle", "type": "load", "reward_credits": 1})),
                201,
            )
            .await
            .and_then(|v| text(&v, "id"));
        timed(0, t);
        let task = match task {
            Ok(t) => t,
            Err(e) => {
                *stats.errors.entry(format!("publish: {e}")).or_default() += 1;
                continue;
            }
        };
        let t = Instant::now();
        let exec = c
            .call(
                reqwest::Method::POST,
                &format!("/tasks/{task}/claim"),
                Some(agent),
                None,
                201,
            )
            .await
            .and_then(|v| text(&v, "id"));
        timed(1, t);
        let exec = match exec {
            Ok(x) => x,
            Err(e) => {
                *stats.errors.entry(format!("claim: {e}")).or_default() += 1;
                continue;
            }
        };
        let t = Instant::now();
        let submitted = c
            .call(
                reqwest::Method::POST,
                &format!("/tasks/{task}/submit"),
                Some(agent),
                Some(json!({"result": "done"})),
                200,
            )
            .await;
        timed(2, t);
        if let Err(e) = submitted {
            *stats.errors.entry(format!("submit: {e}")).or_default() += 1;
            continue;
        }
        let t = Instant::now();
        let verified = c
            .call(
                reqwest::Method::POST,
                &format!("/tasks/{task}/verify"),
                Some(publisher),
                Some(json!({"execution_id": exec, "accepted": true})),
                200,
            )
            .await;
        timed(3, t);
        match verified {
            Ok(_) => stats.lifecycles += 1,
            Err(e) => *stats.errors.entry(format!("verify: {e}")).or_default() += 1,
        }
    }
    stats
}

// One thread: the load tool shares the machine with the server it
// measures, and 32 clients multiplexed on one thread cost less CPU per
// lifecycle (130-155 µs against 155-200 µs measured with the default
// multi-thread runtime) and leave the server more of the machine.
#[tokio::main(flavor = "current_thread")]
async fn main() {
    let args = Args::parse();
    let http = reqwest::Client::builder()
        .pool_max_idle_per_host(args.concurrency * 2)
        .build()
        .expect("an HTTP client");
    let api = Api::new(&args.url, http, Some(Duration::from_secs(30)));
    let started = Instant::now();
    let until = started + Duration::from_secs(args.seconds);
    let tasks: Vec<_> = (0..args.concurrency)
        .map(|n| tokio::spawn(run_client(Client(api.clone()), n, until)))
        .collect();
    let mut total = Stats::new();
    for t in tasks {
        if let Ok(s) = t.await {
            total.merge(s);
        }
    }
    let secs = started.elapsed().as_secs_f64();
    let rate = total.lifecycles as f64 / secs;
    println!(
        "{} clients, {:.1} s: {} lifecycles, {:.0} lifecycles/s ({:.0} writes/s)",
        args.concurrency,
        secs,
        total.lifecycles,
        rate,
        rate * 4.0
    );
    print_latency(&OPS, &total.latency);
    let errors: u64 = total.errors.values().sum();
    println!("errors: {errors}");
    for (k, v) in &total.errors {
        println!("  {v:>8}  {k}");
    }
    if total.errors.keys().any(|k| k.contains("429")) {
        println!(
            "hint: 429s mean per-principal rate limiting is on; start the server with TASKLEDGER_RATE_LIMIT_PER_MIN=0"
        );
    }
    if args.json {
        let per_op = latency_json(&OPS, &total.latency);
        println!(
            "{}",
            json!({
                "clients": args.concurrency,
                "seconds": secs,
                "lifecycles": total.lifecycles,
                "lifecycles_per_second": rate,
                "ops": per_op,
                "errors": total.errors,
            })
        );
    }
}
