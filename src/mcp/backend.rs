//! Where MCP tools send their calls: the market's own REST API, either
//! in-process (the axum router of this server, for `/mcp`) or over HTTP (a
//! remote market, for `taskledger mcp` on stdio). Either way the request
//! goes through the same handlers, auth and rules as any REST client: the
//! MCP layer has no rules of its own.

use axum::body::Body;
use axum::http::{Method, Request, header};
use serde_json::Value;
use std::time::Duration;
use tower::ServiceExt;

/// Longest a remote call may take.
const REMOTE_TIMEOUT: Duration = Duration::from_secs(60);
/// Largest answer read from the in-process router.
const ANSWER_BYTES_MAX: usize = 64 * 1024 * 1024;

#[derive(Clone)]
pub enum Backend {
    /// This server's router; paths get the `/api/v1` prefix.
    Local(axum::Router),
    /// A market's REST API at `base` (e.g. `http://127.0.0.1:8080/api/v1`).
    Remote { http: reqwest::Client, base: String },
}

/// A refusal as the API words it.
#[derive(Clone, Debug)]
pub struct Failure {
    pub status: u16,
    pub code: String,
    pub message: String,
    pub body: Value,
}

impl Failure {
    fn transport(message: String) -> Self {
        Failure {
            status: 503,
            code: "unavailable".into(),
            message: message.clone(),
            body: serde_json::json!({"error": message, "code": "unavailable"}),
        }
    }

    fn from_answer(status: u16, body: Value) -> Self {
        let code = body
            .get("code")
            .and_then(Value::as_str)
            .unwrap_or("error")
            .to_owned();
        let message = body
            .get("error")
            .and_then(Value::as_str)
            .map(str::to_owned)
            .unwrap_or_else(|| format!("the market answered {status}"));
        Failure {
            status,
            code,
            message,
            body,
        }
    }
}

impl Backend {
    pub fn remote(base: &str) -> Result<Self, reqwest::Error> {
        Ok(Backend::Remote {
            http: reqwest::Client::builder().timeout(REMOTE_TIMEOUT).build()?,
            base: base.trim_end_matches('/').to_owned(),
        })
    }

    /// One API call with the caller's key; the JSON answer or the refusal.
    pub async fn call(
        &self,
        method: Method,
        path: &str,
        key: &str,
        body: Option<&Value>,
    ) -> Result<Value, Failure> {
        let (status, answer) = match self {
            Backend::Local(router) => {
                let mut req = Request::builder()
                    .method(method)
                    .uri(format!("/api/v1{path}"))
                    .header(header::AUTHORIZATION, format!("Bearer {key}"));
                let body = match body {
                    Some(b) => {
                        req = req.header(header::CONTENT_TYPE, "application/json");
                        Body::from(b.to_string())
                    }
                    None => Body::empty(),
                };
                let req = req
                    .body(body)
                    .map_err(|e| Failure::transport(format!("bad request: {e}")))?;
                let resp = router
                    .clone()
                    .oneshot(req)
                    .await
                    .map_err(|e| Failure::transport(e.to_string()))?;
                let status = resp.status().as_u16();
                let bytes = axum::body::to_bytes(resp.into_body(), ANSWER_BYTES_MAX)
                    .await
                    .map_err(|e| Failure::transport(format!("cannot read the answer: {e}")))?;
                (
                    status,
                    serde_json::from_slice(&bytes).unwrap_or(Value::Null),
                )
            }
            Backend::Remote { http, base } => {
                let mut req = http
                    .request(method, format!("{base}{path}"))
                    .bearer_auth(key);
                if let Some(b) = body {
                    req = req.json(b);
                }
                let resp = req.send().await.map_err(|e| {
                    Failure::transport(format!("cannot reach the market at {base}: {e}"))
                })?;
                let status = resp.status().as_u16();
                (status, resp.json().await.unwrap_or(Value::Null))
            }
        };
        if (200..300).contains(&status) {
            Ok(answer)
        } else {
            Err(Failure::from_answer(status, answer))
        }
    }
}
