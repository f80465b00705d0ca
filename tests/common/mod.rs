//! Shared helpers of the HTTP integration tests: a real server on
//! `127.0.0.1:0` over a temporary data dir, a real `reqwest` client, the
//! usual steps (register, issue an agent key, publish, claim, submit,
//! verify) and a reader of Server-Sent Events frames.
//!
//! Every answer with a status of 400 or more goes through [`Server::call`],
//! which asserts the one error shape (`error` and `code`, plus a non-empty
//! `fields` for `validation_failed`), so each test checks it for free.

#![allow(dead_code)]

use futures_util::StreamExt;
use reqwest::Method;
use serde_json::{Value, json};
use std::time::{Duration, Instant};
use taskledger::http::settings::Settings;
use taskledger::http::{Running, start};

/// The admin token of servers started by [`Server::start`].
pub const ADMIN_TOKEN: &str = "test-admin-token";

/// How long a poll for a timer effect may take before the test fails.
pub const POLL_DEADLINE: Duration = Duration::from_secs(10);

/// A started server, its client and its data dir (removed on drop).
pub struct Server {
    running: Option<Running>,
    pub base: String,
    pub http: reqwest::Client,
    /// What it was started with, for [`Server::restart`].
    settings: Settings,
    _dir: tempfile::TempDir,
}

/// An answer: status, raw text, the JSON (Null when not JSON) and headers.
#[derive(Debug)]
pub struct Resp {
    pub status: u16,
    pub text: String,
    pub body: Value,
    pub headers: reqwest::header::HeaderMap,
}

impl Resp {
    /// The error code, or "" for a success.
    pub fn code(&self) -> &str {
        self.body["code"].as_str().unwrap_or("")
    }

    /// Assert the status, showing the body when it differs.
    #[track_caller]
    pub fn expect(self, status: u16) -> Self {
        assert_eq!(self.status, status, "unexpected answer: {}", self.text);
        self
    }

    /// Assert an error status and code.
    #[track_caller]
    pub fn expect_err(self, status: u16, code: &str) -> Self {
        assert_eq!(
            (self.status, self.code()),
            (status, code),
            "unexpected answer: {}",
            self.text
        );
        self
    }

    /// The names in `fields` of a `validation_failed` answer.
    pub fn fields(&self) -> Vec<String> {
        self.body["fields"]
            .as_array()
            .map(|a| {
                a.iter()
                    .filter_map(|f| f["field"].as_str().map(str::to_owned))
                    .collect()
            })
            .unwrap_or_default()
    }
}

/// An owner account: its id and key.
#[derive(Clone, Debug)]
pub struct Owner {
    pub id: String,
    pub key: String,
}

/// An agent key: its id, the key and its owner's id.
#[derive(Clone, Debug)]
pub struct Agent {
    pub id: String,
    pub key: String,
    pub owner_id: String,
}

/// Wallet balances as `/accounts/me` reports them.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Wallet {
    pub gift: u64,
    pub earned: u64,
    pub frozen: u64,
}

/// A wallet with nothing frozen.
pub fn wallet(gift: u64, earned: u64) -> Wallet {
    Wallet {
        gift,
        earned,
        frozen: 0,
    }
}

/// Settings for a test server: everything on `127.0.0.1:0`, an admin
/// token, no rate limit, a fast timer tick. The lease is long unless a test
/// is about leases, so slow machines do not lose claims mid-test.
pub fn settings(data: &std::path::Path) -> Settings {
    Settings {
        data: data.to_path_buf(),
        addr: "127.0.0.1:0".parse().expect("an address"),
        admin_token: Some(ADMIN_TOKEN.into()),
        rate_limit_per_min: 0,
        lease_secs: 1800,
        timer_tick_ms: 100,
        ..Default::default()
    }
}

impl Server {
    /// A server with [`settings`].
    pub async fn start() -> Server {
        Self::start_with(|_| {}).await
    }

    /// A server with [`settings`], changed by `tweak`.
    pub async fn start_with(tweak: impl FnOnce(&mut Settings)) -> Server {
        let dir = tempfile::tempdir().expect("a temp dir");
        let mut s = settings(&dir.path().join("data"));
        tweak(&mut s);
        let running = start(s.clone()).await.expect("the server starts");
        let base = format!("http://{}", running.addr);
        let http = reqwest::Client::builder()
            .no_proxy()
            .timeout(Duration::from_secs(30))
            .build()
            .expect("a client");
        Server {
            running: Some(running),
            base,
            http,
            settings: s,
            _dir: dir,
        }
    }

    /// Stop gracefully and start again on the same data dir, with the same
    /// settings changed by `tweak` (a new port).
    pub async fn restart(&mut self, tweak: impl FnOnce(&mut Settings)) {
        if let Some(r) = self.running.take() {
            r.stop().await.expect("a clean stop");
        }
        tweak(&mut self.settings);
        let running = start(self.settings.clone())
            .await
            .expect("the server starts again");
        self.base = format!("http://{}", running.addr);
        self.running = Some(running);
    }

    /// The running server (for its service handle).
    pub fn running(&self) -> &Running {
        self.running.as_ref().expect("running")
    }

    /// Graceful stop; fails the test if the server does not stop cleanly.
    pub async fn stop(mut self) {
        if let Some(r) = self.running.take() {
            r.stop().await.expect("a clean stop");
        }
    }

    /// `/health` and `/metrics` are at the root; everything else under `/api/v1`.
    pub fn url(&self, path: &str) -> String {
        if path.starts_with("/api/") || path.starts_with("/health") || path.starts_with("/metrics")
        {
            format!("{}{path}", self.base)
        } else {
            format!("{}/api/v1{path}", self.base)
        }
    }

    /// One request. `key` goes in `Authorization: Bearer`; `headers` are
    /// added as given. Checks the error shape of every error answer.
    pub async fn call(
        &self,
        method: Method,
        path: &str,
        key: Option<&str>,
        body: Option<Value>,
        headers: &[(&str, &str)],
    ) -> Resp {
        let mut req = self.http.request(method.clone(), self.url(path));
        if let Some(k) = key {
            req = req.bearer_auth(k);
        }
        for (name, value) in headers {
            req = req.header(*name, *value);
        }
        if let Some(b) = body {
            req = req.json(&b);
        }
        let resp = req
            .send()
            .await
            .unwrap_or_else(|e| panic!("{method} {path}: {e}"));
        let status = resp.status().as_u16();
        let headers = resp.headers().clone();
        let text = resp.text().await.expect("a body");
        let body = serde_json::from_str(&text).unwrap_or(Value::Null);
        if status >= 400 {
            assert_error_shape(&method, path, status, &body, &text);
        }
        Resp {
            status,
            text,
            body,
            headers,
        }
    }

    pub async fn get(&self, path: &str, key: &str) -> Resp {
        self.call(Method::GET, path, Some(key), None, &[]).await
    }

    pub async fn post(&self, path: &str, key: &str, body: Value) -> Resp {
        self.call(Method::POST, path, Some(key), Some(body), &[])
            .await
    }

    /// A POST without a body (claim, cancel, rotate-key).
    pub async fn post_empty(&self, path: &str, key: &str) -> Resp {
        self.call(Method::POST, path, Some(key), None, &[]).await
    }

    /// The head of the log from `/health`.
    pub async fn head_seq(&self) -> u64 {
        let r = self
            .call(Method::GET, "/health", None, None, &[])
            .await
            .expect(200);
        r.body["head_seq"].as_u64().expect("head_seq")
    }

    /// The conservation report; asserts it holds.
    pub async fn assert_reconciled(&self) -> Value {
        let r = self
            .call(
                Method::GET,
                "/admin/reconcile",
                None,
                None,
                &[("X-Admin-Token", ADMIN_TOKEN)],
            )
            .await;
        assert_eq!(r.status, 200, "reconcile: {}", r.text);
        assert_eq!(r.body["ok"], true, "reconcile: {}", r.text);
        assert_eq!(r.body["diff"], 0, "reconcile: {}", r.text);
        r.body
    }

    /// Register an owner account (201, gift granted).
    pub async fn register(&self, name: &str) -> Owner {
        let r = self
            .call(
                Method::POST,
                "/accounts/register",
                None,
                Some(json!({"type": "human", "name": name})),
                &[],
            )
            .await
            .expect(201);
        Owner {
            id: r.body["id"].as_str().expect("id").to_owned(),
            key: r.body["api_key"].as_str().expect("api_key").to_owned(),
        }
    }

    /// Issue an agent key with a declared compute source (201).
    pub async fn agent(&self, owner: &Owner, name: &str) -> Agent {
        let r = self
            .post(
                "/accounts/me/agent-keys",
                &owner.key,
                json!({"name": name, "compute_source": "local_model"}),
            )
            .await
            .expect(201);
        Agent {
            id: r.body["id"].as_str().expect("id").to_owned(),
            key: r.body["api_key"].as_str().expect("api_key").to_owned(),
            owner_id: owner.id.clone(),
        }
    }

    /// Publish `body` (201); the task's id.
    pub async fn publish(&self, owner: &Owner, body: Value) -> String {
        let r = self.post("/tasks", &owner.key, body).await.expect(201);
        r.body["id"].as_str().expect("task id").to_owned()
    }

    /// Publish a manually reviewed task worth `reward` (201); its id.
    pub async fn publish_reward(&self, owner: &Owner, reward: u64) -> String {
        self.publish(owner, task_body(reward)).await
    }

    /// Claim (201); the execution's id.
    pub async fn claim(&self, agent: &Agent, task: &str) -> String {
        let r = self
            .post_empty(&format!("/tasks/{task}/claim"), &agent.key)
            .await
            .expect(201);
        assert_eq!(r.body["status"], "in_progress", "{}", r.text);
        r.body["id"].as_str().expect("execution id").to_owned()
    }

    /// Submit a result (200).
    pub async fn submit(&self, agent: &Agent, task: &str, result: &str) -> Resp {
        let r = self
            .post(
                &format!("/tasks/{task}/submit"),
                &agent.key,
                json!({"result": result}),
            )
            .await
            .expect(200);
        assert_eq!(r.body["status"], "submitted", "{}", r.text);
        r
    }

    /// The publisher's verdict, answered as it comes.
    pub async fn verify(&self, owner: &Owner, task: &str, body: Value) -> Resp {
        self.post(&format!("/tasks/{task}/verify"), &owner.key, body)
            .await
    }

    /// Claim, submit and get accepted (with `score` if given); the execution id.
    pub async fn complete(
        &self,
        publisher: &Owner,
        agent: &Agent,
        task: &str,
        score: Option<f64>,
    ) -> String {
        let x = self.claim(agent, task).await;
        self.submit(agent, task, "done").await;
        let mut body = json!({"execution_id": x, "accepted": true});
        if let Some(s) = score {
            body["score"] = json!(s);
        }
        self.verify(publisher, task, body).await.expect(200);
        x
    }

    /// The wallet of the owner behind `key` (an owner or an agent key).
    pub async fn wallet(&self, key: &str) -> Wallet {
        let r = self.get("/accounts/me", key).await.expect(200);
        let n = |f: &str| {
            r.body[f]
                .as_u64()
                .unwrap_or_else(|| panic!("{f}: {}", r.text))
        };
        let w = Wallet {
            gift: n("gift_balance"),
            earned: n("earned_balance"),
            frozen: n("frozen_earned"),
        };
        assert_eq!(n("credit_balance"), w.gift + w.earned, "{}", r.text);
        w
    }

    /// A task as `key` sees it (200).
    pub async fn task(&self, key: &str, task: &str) -> Value {
        self.get(&format!("/tasks/{task}"), key)
            .await
            .expect(200)
            .body
    }

    /// An execution as `key` sees it (200).
    pub async fn execution(&self, key: &str, x: &str) -> Value {
        self.get(&format!("/executions/{x}"), key)
            .await
            .expect(200)
            .body
    }

    /// Poll `GET path` as `key` until `done` holds for the body, or fail
    /// after [`POLL_DEADLINE`]. Returns the last body.
    pub async fn poll(&self, path: &str, key: &str, done: impl Fn(&Value) -> bool) -> Value {
        let deadline = Instant::now() + POLL_DEADLINE;
        loop {
            let r = self.get(path, key).await.expect(200);
            if done(&r.body) {
                return r.body;
            }
            assert!(
                Instant::now() < deadline,
                "GET {path} never reached the expected state: {}",
                r.text
            );
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    }

    /// Open `/api/v1/events` as `key` with `query` (e.g. `?since=0`) and
    /// extra headers; asserts 200 and a `text/event-stream`.
    pub async fn events(&self, key: &str, query: &str, headers: &[(&str, &str)]) -> SseReader {
        let mut req = self
            .http
            .get(self.url(&format!("/events{query}")))
            .bearer_auth(key);
        for (name, value) in headers {
            req = req.header(*name, *value);
        }
        let resp = req.send().await.expect("GET /events");
        assert_eq!(resp.status().as_u16(), 200, "GET /events{query}");
        let ct = resp
            .headers()
            .get(reqwest::header::CONTENT_TYPE)
            .and_then(|v| v.to_str().ok())
            .unwrap_or_default()
            .to_owned();
        assert!(ct.starts_with("text/event-stream"), "content-type {ct}");
        SseReader {
            stream: Box::pin(resp.bytes_stream()),
            buf: String::new(),
            raw: String::new(),
        }
    }
}

#[track_caller]
pub fn assert_error_shape(method: &Method, path: &str, status: u16, body: &Value, text: &str) {
    let what = format!("{method} {path} -> {status}: {text}");
    assert!(
        body["error"].as_str().is_some_and(|e| !e.is_empty()),
        "an error body needs `error`: {what}"
    );
    let code = body["code"].as_str();
    assert!(
        code.is_some_and(|c| !c.is_empty()),
        "an error body needs `code`: {what}"
    );
    if code == Some("validation_failed") {
        assert!(
            body["fields"].as_array().is_some_and(|f| !f.is_empty()),
            "validation_failed needs `fields`: {what}"
        );
    }
    let expected = match code {
        Some("bad_request" | "validation_failed") => &[400, 405][..],
        Some("unauthorized") => &[401],
        Some("insufficient_credits") => &[402],
        Some(
            "forbidden"
            | "reputation_too_low"
            | "compute_source_required"
            | "compute_source_forbidden"
            | "risk_denied",
        ) => &[403],
        Some("not_found") => &[404],
        Some("conflict" | "already_claimed" | "task_not_open" | "task_full") => &[409],
        Some("too_large") => &[413],
        Some("rate_limited") => &[429],
        Some("overloaded" | "unavailable") => &[503],
        _ => &[],
    };
    assert!(
        expected.contains(&status),
        "code and status disagree with API.md: {what}"
    );
}

/// A manual-review task body worth `reward`.
pub fn task_body(reward: u64) -> Value {
    json!({
        "title": "Summarise a paper",
        "description": "Three sentences.",
        "type": "text",
        "reward_credits": reward,
    })
}

/// RFC 3339 (UTC, milliseconds) `ms` from now.
pub fn rfc3339_in(ms: i64) -> String {
    (chrono::Utc::now() + chrono::Duration::milliseconds(ms))
        .to_rfc3339_opts(chrono::SecondsFormat::Millis, true)
}

/// One Server-Sent Events frame.
#[derive(Clone, Debug, Default)]
pub struct Frame {
    pub id: Option<u64>,
    pub event: Option<String>,
    pub data: String,
}

impl Frame {
    pub fn json(&self) -> Value {
        serde_json::from_str(&self.data).unwrap_or(Value::Null)
    }
}

/// The body of an event stream. `reqwest` and `axum` share `bytes::Bytes`.
type ByteStream =
    std::pin::Pin<Box<dyn futures_util::Stream<Item = reqwest::Result<axum::body::Bytes>> + Send>>;

/// Reads frames off an open event stream. Dropping it disconnects.
pub struct SseReader {
    stream: ByteStream,
    buf: String,
    /// Everything received, for searching the raw text.
    pub raw: String,
}

impl SseReader {
    /// The next frame with data (heartbeat comments are skipped), or None
    /// when the stream ends or nothing comes within `wait`.
    pub async fn next(&mut self, wait: Duration) -> Option<Frame> {
        let deadline = tokio::time::Instant::now() + wait;
        loop {
            if let Some(frame) = self.take_frame() {
                if frame.id.is_none() && frame.event.is_none() && frame.data.is_empty() {
                    continue;
                }
                return Some(frame);
            }
            let chunk = tokio::time::timeout_at(deadline, self.stream.next())
                .await
                .ok()??
                .expect("the event stream broke");
            let text = std::str::from_utf8(chunk.as_ref()).expect("UTF-8 frames");
            self.raw.push_str(text);
            self.buf.push_str(&text.replace("\r\n", "\n"));
        }
    }

    /// Frames until one with `id >= seq` arrives (included); fails after
    /// `wait` without it.
    pub async fn until_seq(&mut self, seq: u64, wait: Duration) -> Vec<Frame> {
        let mut out = Vec::new();
        loop {
            let f = self
                .next(wait)
                .await
                .unwrap_or_else(|| panic!("no frame with id >= {seq}; got {out:?}"));
            let id = f.id;
            out.push(f);
            if id.is_some_and(|i| i >= seq) {
                return out;
            }
        }
    }

    fn take_frame(&mut self) -> Option<Frame> {
        let end = self.buf.find("\n\n")?;
        let block: String = self.buf.drain(..end + 2).collect();
        let mut f = Frame::default();
        let mut data = Vec::new();
        for line in block.lines() {
            if line.starts_with(':') {
                continue;
            }
            let (field, value) = line.split_once(':').unwrap_or((line, ""));
            let value = value.strip_prefix(' ').unwrap_or(value);
            match field {
                "id" => f.id = Some(value.parse().expect("a numeric id")),
                "event" => f.event = Some(value.to_owned()),
                "data" => data.push(value.to_owned()),
                _ => {}
            }
        }
        f.data = data.join("\n");
        Some(f)
    }
}
