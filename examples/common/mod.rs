//! What the load tools (`loadgen`, `agents`) share: reading answers and
//! reporting latency per operation. Not an example itself (no `main`).

use hdrhistogram::Histogram;
use serde_json::{Value, json};
use std::collections::BTreeMap;

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
