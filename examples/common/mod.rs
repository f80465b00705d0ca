//! What the load tools (`loadgen`, `agents`) share: the API client,
//! reading answers and reporting latency per operation. Not an example
//! itself (no `main`).

use hdrhistogram::Histogram;
use serde_json::{Value, json};
use std::collections::BTreeMap;
use std::time::Duration;

/// The REST API under one base URL (`.../api/v1`), over one connection
/// pool. Cheap to clone.
#[derive(Clone)]
pub struct Api {
    pub http: reqwest::Client,
    pub base: String,
    /// Per request; `None` leaves the client's own (event streams need none).
    timeout: Option<Duration>,
}

/// A status and its JSON body (`Null` when the body was not JSON).
pub struct Answer {
    pub status: u16,
    pub body: Value,
}

impl Answer {
    /// The stable error code of a refusal, or `?`.
    pub fn code(&self) -> &str {
        self.body.get("code").and_then(Value::as_str).unwrap_or("?")
    }

    /// The body when the status is `expect`, else `"<status> <code>"`.
    pub fn expect(self, expect: u16) -> Result<Value, String> {
        if self.status == expect {
            Ok(self.body)
        } else {
            Err(format!("{} {}", self.status, self.code()))
        }
    }
}

impl Api {
    /// `url` is the server's base URL; requests go to `url/api/v1`.
    pub fn new(url: &str, http: reqwest::Client, timeout: Option<Duration>) -> Self {
        Api {
            http,
            base: format!("{}/api/v1", url.trim_end_matches('/')),
            timeout,
        }
    }

    /// One request, with `key` as the bearer token and `body` as JSON.
    /// `Err` only for transport failures.
    pub async fn send(
        &self,
        method: reqwest::Method,
        path: &str,
        key: Option<&str>,
        body: Option<&Value>,
    ) -> Result<Answer, String> {
        let mut req = self.http.request(method, format!("{}{path}", self.base));
        if let Some(t) = self.timeout {
            req = req.timeout(t);
        }
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
}

/// A string field of an answer, or why not.
pub fn text(v: &Value, field: &str) -> Result<String, String> {
    v.get(field)
        .and_then(Value::as_str)
        .map(str::to_owned)
        .ok_or_else(|| format!("answer without {field}"))
}

/// Microseconds as milliseconds.
pub fn ms(micros: u64) -> f64 {
    micros as f64 / 1000.0
}

/// The per-operation latency table: op, count, p50, p99, max (ms).
pub fn print_latency(ops: &[&str], latency: &[Histogram<u64>]) {
    let w = ops.iter().map(|o| o.len()).max().unwrap_or(2).max(2) + 2;
    println!(
        "{:<w$} {:>9} {:>9} {:>9} {:>9}",
        "op", "count", "p50 ms", "p99 ms", "max ms"
    );
    for (op, h) in ops.iter().zip(latency) {
        println!(
            "{:<w$} {:>9} {:>9.2} {:>9.2} {:>9.2}",
            op,
            h.len(),
            ms(h.value_at_quantile(0.5)),
            ms(h.value_at_quantile(0.99)),
            ms(h.max())
        );
    }
}

/// The same as JSON, keyed by operation.
pub fn latency_json(ops: &[&str], latency: &[Histogram<u64>]) -> BTreeMap<String, Value> {
    ops.iter()
        .zip(latency)
        .map(|(op, h)| {
            (
                (*op).to_owned(),
                json!({
                    "count": h.len(),
                    "p50_ms": ms(h.value_at_quantile(0.5)),
                    "p99_ms": ms(h.value_at_quantile(0.99)),
                    "max_ms": ms(h.max()),
                }),
            )
        })
        .collect()
}
