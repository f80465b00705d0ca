//! `/metrics`: Prometheus text, for the operator. Request counts and
//! latency by route template (a middleware), and, read at scrape time, the
//! writer's counters, queue depth and batch sizes, tasks by status, credits
//! per place and whether conservation holds.

use super::AppState;
use super::error::ApiResult;
use super::extract::Operator;
use axum::extract::{MatchedPath, Request, State};
use axum::http::header;
use axum::middleware::Next;
use axum::response::{IntoResponse, Response};
use prometheus::{
    Encoder, Gauge, HistogramOpts, HistogramVec, IntCounterVec, IntGauge, IntGaugeVec, Opts,
    Registry, TextEncoder,
};
use std::sync::Mutex;
use std::sync::atomic::Ordering;
use std::time::Instant;
use taskledger_projections::TaskStatus;

pub struct HttpMetrics {
    registry: Registry,
    requests: IntCounterVec,
    latency: HistogramVec,
    head_seq: IntGauge,
    snapshot_seq: IntGauge,
    commands_total: IntGauge,
    records_total: IntGauge,
    batches_total: IntGauge,
    append_seconds: Gauge,
    commands_per_second: Gauge,
    queue_depth: IntGauge,
    batch_records: IntGaugeVec,
    tasks: IntGaugeVec,
    credits: IntGaugeVec,
    conservation_ok: IntGauge,
    sse_clients: IntGauge,
    last_scrape: Mutex<(Instant, u64)>,
}

fn must<T>(r: prometheus::Result<T>) -> T {
    // Metric names and labels below are constants; a failure is a typo
    // caught by the first test that builds the app.
    #[allow(clippy::expect_used)]
    r.expect("valid metric definition")
}

impl HttpMetrics {
    pub fn new() -> Self {
        let registry = Registry::new();
        let requests = must(IntCounterVec::new(
            Opts::new("http_requests_total", "HTTP requests by route template"),
            &["method", "route", "status"],
        ));
        let latency = must(HistogramVec::new(
            HistogramOpts::new(
                "http_request_duration_seconds",
                "HTTP request latency by route template",
            )
            .buckets(vec![
                0.0005, 0.001, 0.002, 0.005, 0.01, 0.02, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 10.0,
            ]),
            &["method", "route"],
        ));
        let gauge = |name: &str, help: &str| must(IntGauge::new(name, help));
        let head_seq = gauge("taskledger_head_seq", "Seq of the last flushed record");
        let snapshot_seq = gauge(
            "taskledger_snapshot_seq",
            "Seq of the newest stored projection snapshot (a restart replays the records after it)",
        );
        let commands_total = gauge("taskledger_commands_total", "Commands the writer took");
        let records_total = gauge("taskledger_records_total", "Records the writer appended");
        let batches_total = gauge("taskledger_batches_total", "Group-commit batches flushed");
        let append_seconds = must(Gauge::new(
            "taskledger_append_seconds_total",
            "Time the writer spent appending and flushing batches",
        ));
        let commands_per_second = must(Gauge::new(
            "taskledger_commands_per_second",
            "Commands per second since the previous scrape",
        ));
        let queue_depth = gauge("taskledger_queue_depth", "Commands waiting for the writer");
        let batch_records = must(IntGaugeVec::new(
            Opts::new(
                "taskledger_batches_by_size",
                "Flushed batches by record count (upper bound of the bucket)",
            ),
            &["le"],
        ));
        let tasks = must(IntGaugeVec::new(
            Opts::new("taskledger_tasks", "Tasks by status"),
            &["status"],
        ));
        let credits = must(IntGaugeVec::new(
            Opts::new("taskledger_credits", "Credits per place"),
            &["place"],
        ));
        let conservation_ok = gauge(
            "taskledger_conservation_ok",
            "1 when everything issued is in a wallet, an escrow or redeemed",
        );
        let sse_clients = gauge("taskledger_sse_clients", "Open event streams");
        for c in [
            Box::new(requests.clone()) as Box<dyn prometheus::core::Collector>,
            Box::new(latency.clone()),
            Box::new(head_seq.clone()),
            Box::new(snapshot_seq.clone()),
            Box::new(commands_total.clone()),
            Box::new(records_total.clone()),
            Box::new(batches_total.clone()),
            Box::new(append_seconds.clone()),
            Box::new(commands_per_second.clone()),
            Box::new(queue_depth.clone()),
            Box::new(batch_records.clone()),
            Box::new(tasks.clone()),
            Box::new(credits.clone()),
            Box::new(conservation_ok.clone()),
            Box::new(sse_clients.clone()),
        ] {
            must(registry.register(c));
        }
        HttpMetrics {
            registry,
            requests,
            latency,
            head_seq,
            snapshot_seq,
            commands_total,
            records_total,
            batches_total,
            append_seconds,
            commands_per_second,
            queue_depth,
            batch_records,
            tasks,
            credits,
            conservation_ok,
            sse_clients,
            last_scrape: Mutex::new((Instant::now(), 0)),
        }
    }
}

impl Default for HttpMetrics {
    fn default() -> Self {
        Self::new()
    }
}

/// Middleware: count and time every request by its route template.
pub async fn track(State(app): State<AppState>, req: Request, next: Next) -> Response {
    let route = req
        .extensions()
        .get::<MatchedPath>()
        .map_or("unmatched", |p| p.as_str())
        .to_owned();
    let method = req.method().as_str().to_owned();
    let started = Instant::now();
    let response = next.run(req).await;
    let m = &app.metrics;
    m.latency
        .with_label_values(&[&method, &route])
        .observe(started.elapsed().as_secs_f64());
    m.requests
        .with_label_values(&[&method, &route, response.status().as_str()])
        .inc();
    response
}

/// Prometheus text exposition (operator only).
#[utoipa::path(get, path = "/metrics", tag = "service", security(("admin_token" = [])),
    responses((status = 200, description = "Prometheus text format", body = String, content_type = "text/plain"),
        (status = 404, body = super::error::ApiError)))]
pub async fn metrics(State(app): State<AppState>, _op: Operator) -> ApiResult<Response> {
    let m = &app.metrics;
    let w = app.service.metrics();
    let commands = w.commands.load(Ordering::Relaxed);
    m.commands_total.set(commands as i64);
    m.records_total
        .set(w.records.load(Ordering::Relaxed) as i64);
    m.batches_total
        .set(w.batches.load(Ordering::Relaxed) as i64);
    m.append_seconds
        .set(w.append_micros.load(Ordering::Relaxed) as f64 / 1e6);
    for (le, count) in w.batch_sizes() {
        m.batch_records.with_label_values(&[&le]).set(count as i64);
    }
    {
        let mut last = m
            .last_scrape
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner);
        let secs = last.0.elapsed().as_secs_f64();
        if secs > 0.0 {
            m.commands_per_second
                .set(commands.saturating_sub(last.1) as f64 / secs);
        }
        *last = (Instant::now(), commands);
    }
    m.queue_depth.set(app.service.queue_depth() as i64);
    m.snapshot_seq
        .set(i64::try_from(w.snapshot_seq.load(Ordering::Relaxed)).unwrap_or(i64::MAX));
    m.sse_clients
        .set(app.sse_clients.load(Ordering::Relaxed) as i64);
    {
        let state = app.service.read();
        m.head_seq.set(state.head_seq as i64);
        for s in TaskStatus::ALL {
            m.tasks
                .with_label_values(&[s.as_str()])
                .set(state.tasks_with_status(s) as i64);
        }
        let t = state.totals;
        for (place, v) in [
            ("issued", t.issued),
            ("gift", t.gift),
            ("earned", t.earned),
            ("frozen", t.frozen),
            ("escrow", t.escrow),
            ("redeemed", t.redeemed),
        ] {
            m.credits
                .with_label_values(&[place])
                .set(i64::try_from(v).unwrap_or(i64::MAX));
        }
        m.conservation_ok.set(i64::from(t.balanced()));
    }
    let mut out = Vec::new();
    TextEncoder::new()
        .encode(&m.registry.gather(), &mut out)
        .map_err(|e| super::error::ApiError::bad_request(format!("cannot encode metrics: {e}")))?;
    Ok((
        [(
            header::CONTENT_TYPE,
            "text/plain; version=0.0.4; charset=utf-8",
        )],
        out,
    )
        .into_response())
}
