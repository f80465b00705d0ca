//! The bad-input catalogue over MCP (issue 7): each tool called through the
//! Streamable HTTP endpoint by a real rmcp client with wrong argument
//! types, missing and unknown arguments, invalid UUIDs, huge strings and
//! numbers, and the wrong kind of key. Each call must come back as a tool
//! error (`isError: true` with the API's code; an argument that does not fit
//! the tool is `validation_failed` naming it), or at worst a JSON-RPC
//! invalid-params error: never a transport failure, a hang or a panic, and
//! the head of the log must not move. The HTTP cases are in
//! `tests/bad_input.rs`.

mod common;

use common::Server;
use reqwest::Method;
use rmcp::model::{CallToolRequestParams, ClientConfig};
use rmcp::service::{RunningService, ServiceError};
use rmcp::transport::StreamableHttpClientTransport;
use rmcp::transport::streamable_http_client::StreamableHttpClientTransportConfig;
use rmcp::{RoleClient, ServiceExt};
use serde_json::{Value, json};
use std::collections::{BTreeMap, HashMap};

type Client = RunningService<RoleClient, ClientConfig>;

/// JSON-RPC "invalid params".
const INVALID_PARAMS: i32 = -32602;

async fn client(s: &Server, key: &str) -> Client {
    let mut headers = HashMap::new();
    headers.insert(
        "x-market-api-key".parse().expect("a header name"),
        key.parse().expect("a header value"),
    );
    let transport = StreamableHttpClientTransport::from_config(
        StreamableHttpClientTransportConfig::with_uri(format!("{}/mcp", s.base))
            .custom_headers(headers),
    );
    ClientConfig::default()
        .serve(transport)
        .await
        .expect("an MCP session")
}

/// What a bad call must come back as.
#[derive(Clone, Copy, Debug)]
enum Want {
    /// `isError: true` with this API code.
    Tool(&'static str),
    /// `isError: true`, `validation_failed`, with `fields` naming this
    /// argument ("" for any: serde's wording of a type error names the
    /// expected type, not always the argument).
    Params(&'static str),
}

struct Case {
    category: &'static str,
    tool: &'static str,
    name: String,
    /// Which client calls: "owner" or "agent".
    who: &'static str,
    args: Value,
    want: Want,
}

fn case(
    category: &'static str,
    who: &'static str,
    tool: &'static str,
    name: &str,
    args: Value,
    want: Want,
) -> Case {
    Case {
        category,
        tool,
        name: name.to_owned(),
        who,
        args,
        want,
    }
}

async fn run(s: &Server, c: &Client, case: &Case) -> Result<(), String> {
    let before = s.head_seq().await;
    let mut params = CallToolRequestParams::new(case.tool.to_owned());
    if let Value::Object(m) = &case.args {
        params = params.with_arguments(m.clone());
    }
    let answer = tokio::time::timeout(std::time::Duration::from_secs(20), c.call_tool(params))
        .await
        .map_err(|_| "no answer within 20 s".to_owned())?;
    let (code, arg) = match case.want {
        Want::Tool(code) => (code, None),
        Want::Params(arg) => ("validation_failed", Some(arg)),
    };
    let r = match answer {
        Ok(r) => r,
        // A JSON-RPC invalid-params error is a clear refusal too.
        Err(ServiceError::McpError(e)) if e.code.0 == INVALID_PARAMS => {
            if arg.is_some_and(|a| !e.message.contains(a)) {
                return Err(format!("invalid params not naming {arg:?}: {e:?}"));
            }
            return check_head(s, before).await;
        }
        Err(e) => return Err(format!("expected {:?}, got {e}", case.want)),
    };
    let sc = r.structured_content.clone().unwrap_or(Value::Null);
    if r.is_error != Some(true) {
        return Err(format!("not a tool error: {sc}"));
    }
    if sc["code"] != code || sc["error"].as_str().is_none_or(str::is_empty) {
        return Err(format!("expected {code}: {sc} {:?}", r.content));
    }
    if let Some(a) = arg.filter(|a| !a.is_empty()) {
        let named = sc["detail"]["fields"]
            .as_array()
            .into_iter()
            .flatten()
            .any(|f| f["field"] == a);
        if !named {
            return Err(format!("fields do not name `{a}`: {sc}"));
        }
    }
    check_head(s, before).await
}

async fn check_head(s: &Server, before: u64) -> Result<(), String> {
    let after = s.head_seq().await;
    if after != before {
        return Err(format!("the log grew from seq {before} to {after}"));
    }
    Ok(())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn every_bad_tool_call_is_a_clear_error_and_appends_nothing() {
    let s = Server::start().await;
    let a = s.register("alice").await;
    let b = s.register("bob").await;
    let bk = s.agent(&b, "bob-1").await;
    let task = s.publish_reward(&a, 10).await;
    let claimed = s.publish_reward(&a, 10).await;
    let x = s.claim(&bk, &claimed).await;
    let owner = client(&s, &a.key).await;
    let agent = client(&s, &bk.key).await;
    let huge = "h".repeat(100_000);
    let publish = json!({"title": "t", "type": "text", "reward_credits": 10});
    let with = |k: &str, v: Value| {
        let mut p = publish.clone();
        p[k] = v;
        p
    };
    use Want::{Params, Tool};

    let mut cases = vec![
        // Missing and wrongly typed arguments: rmcp refuses before the tool runs.
        case(
            "missing",
            "agent",
            "get_task",
            "no task_id",
            json!({}),
            Params("task_id"),
        ),
        case(
            "missing",
            "agent",
            "get_verification_package",
            "no task_id",
            json!({}),
            Params("task_id"),
        ),
        case(
            "missing",
            "agent",
            "claim_task",
            "no task_id",
            json!({}),
            Params("task_id"),
        ),
        case(
            "missing",
            "agent",
            "submit_result",
            "no result",
            json!({"task_id": claimed}),
            Params("result"),
        ),
        case(
            "missing",
            "agent",
            "get_execution_status",
            "no execution_id",
            json!({}),
            Params("execution_id"),
        ),
        case(
            "missing",
            "owner",
            "publish_task",
            "no reward_credits",
            json!({"title": "t", "type": "text"}),
            Params("reward_credits"),
        ),
        case(
            "missing",
            "owner",
            "verify_result",
            "no accepted",
            json!({"task_id": claimed, "execution_id": x}),
            Params("accepted"),
        ),
        case(
            "types",
            "agent",
            "get_task",
            "task_id a number",
            json!({"task_id": 5}),
            Params(""),
        ),
        case(
            "types",
            "agent",
            "claim_task",
            "task_id null",
            json!({"task_id": null}),
            Params(""),
        ),
        case(
            "types",
            "agent",
            "submit_result",
            "result an object",
            json!({"task_id": claimed, "result": {}}),
            Params(""),
        ),
        case(
            "types",
            "agent",
            "fetch_tasks",
            "limit a string",
            json!({"limit": "10"}),
            Params(""),
        ),
        case(
            "types",
            "agent",
            "fetch_tasks",
            "limit -1",
            json!({"limit": -1}),
            Params(""),
        ),
        case(
            "types",
            "agent",
            "fetch_tasks",
            "offset 1.5",
            json!({"offset": 1.5}),
            Params(""),
        ),
        case(
            "types",
            "owner",
            "publish_task",
            "reward_credits a string",
            with("reward_credits", json!("10")),
            Params(""),
        ),
        case(
            "types",
            "owner",
            "publish_task",
            "reward_credits -1",
            with("reward_credits", json!(-1)),
            Params(""),
        ),
        case(
            "types",
            "owner",
            "publish_task",
            "reward_credits 2^64",
            with("reward_credits", json!(18_446_744_073_709_551_616.0)),
            Params(""),
        ),
        case(
            "types",
            "owner",
            "publish_task",
            "reward_credits 1e308",
            with("reward_credits", json!(1e308)),
            Params(""),
        ),
        case(
            "types",
            "owner",
            "publish_task",
            "max_executors 256",
            with("max_executors", json!(256)),
            Params(""),
        ),
        case(
            "types",
            "owner",
            "publish_task",
            "tags a string",
            with("tags", json!("a")),
            Params(""),
        ),
        case(
            "types",
            "owner",
            "publish_task",
            "min_reputation a string",
            with("min_reputation", json!("3")),
            Params(""),
        ),
        case(
            "types",
            "owner",
            "verify_result",
            "accepted a string",
            json!({"task_id": claimed, "execution_id": x, "accepted": "yes"}),
            Params(""),
        ),
        case(
            "types",
            "owner",
            "verify_result",
            "score a string",
            json!({"task_id": claimed, "execution_id": x, "accepted": true, "score": "8"}),
            Params(""),
        ),
        // Unknown arguments are refused as the REST bodies refuse unknown fields.
        case(
            "unknown",
            "agent",
            "get_task",
            "an unknown argument",
            json!({"task_id": task, "bogus": 1}),
            Params("bogus"),
        ),
        case(
            "unknown",
            "agent",
            "fetch_tasks",
            "an unknown argument",
            json!({"bogus": 1}),
            Params("bogus"),
        ),
        case(
            "unknown",
            "agent",
            "submit_result",
            "an unknown argument",
            json!({"task_id": claimed, "result": "r", "bogus": 1}),
            Params("bogus"),
        ),
        case(
            "unknown",
            "owner",
            "publish_task",
            "a misspelt optional argument",
            with("deadlne", json!("2099-01-01T00:00:00Z")),
            Params("deadlne"),
        ),
        case(
            "unknown",
            "owner",
            "verify_result",
            "an unknown argument",
            json!({"task_id": claimed, "execution_id": x, "accepted": false, "bogus": 1}),
            Params("bogus"),
        ),
        // Invalid UUIDs: the tool answers validation_failed.
        case(
            "uuids",
            "agent",
            "get_task",
            "not a UUID",
            json!({"task_id": "not-a-uuid"}),
            Tool("validation_failed"),
        ),
        case(
            "uuids",
            "agent",
            "get_task",
            "empty",
            json!({"task_id": ""}),
            Tool("validation_failed"),
        ),
        case(
            "uuids",
            "agent",
            "get_task",
            "a path",
            json!({"task_id": "../accounts/me"}),
            Tool("validation_failed"),
        ),
        case(
            "uuids",
            "agent",
            "get_task",
            "UUID plus a digit",
            json!({"task_id": format!("{task}0")}),
            Tool("validation_failed"),
        ),
        case(
            "uuids",
            "agent",
            "get_task",
            "100 KB",
            json!({"task_id": huge}),
            Tool("validation_failed"),
        ),
        case(
            "uuids",
            "agent",
            "get_verification_package",
            "not a UUID",
            json!({"task_id": "x"}),
            Tool("validation_failed"),
        ),
        case(
            "uuids",
            "agent",
            "claim_task",
            "not a UUID",
            json!({"task_id": "x"}),
            Tool("validation_failed"),
        ),
        case(
            "uuids",
            "agent",
            "submit_result",
            "not a UUID",
            json!({"task_id": "x", "result": "r"}),
            Tool("validation_failed"),
        ),
        case(
            "uuids",
            "agent",
            "get_execution_status",
            "not a UUID",
            json!({"execution_id": "x"}),
            Tool("validation_failed"),
        ),
        case(
            "uuids",
            "owner",
            "verify_result",
            "execution_id not a UUID",
            json!({"task_id": claimed, "execution_id": "x", "accepted": true}),
            Tool("validation_failed"),
        ),
        case(
            "uuids",
            "agent",
            "get_task",
            "unknown task",
            json!({"task_id": "6f1c1a9e-0000-4000-8000-000000000001"}),
            Tool("not_found"),
        ),
        // Values the API refuses.
        case(
            "values",
            "agent",
            "fetch_tasks",
            "limit 0",
            json!({"limit": 0}),
            Tool("validation_failed"),
        ),
        case(
            "values",
            "agent",
            "fetch_tasks",
            "limit 51",
            json!({"limit": 51}),
            Tool("validation_failed"),
        ),
        case(
            "values",
            "owner",
            "publish_task",
            "reward_credits 0",
            with("reward_credits", json!(0)),
            Tool("validation_failed"),
        ),
        case(
            "values",
            "owner",
            "publish_task",
            "reward_credits u64::MAX",
            with("reward_credits", json!(u64::MAX)),
            Tool("validation_failed"),
        ),
        case(
            "values",
            "owner",
            "publish_task",
            "reward_credits above the wallet",
            with("reward_credits", json!(1001)),
            Tool("insufficient_credits"),
        ),
        case(
            "values",
            "owner",
            "publish_task",
            "max_executors 0",
            with("max_executors", json!(0)),
            Tool("validation_failed"),
        ),
        case(
            "values",
            "owner",
            "publish_task",
            "min_reputation 1e308",
            with("min_reputation", json!(1e308)),
            Tool("validation_failed"),
        ),
        case(
            "values",
            "owner",
            "publish_task",
            "title of 100 KB",
            with("title", json!(huge)),
            Tool("validation_failed"),
        ),
        case(
            "values",
            "owner",
            "publish_task",
            "deadline in the past",
            with("deadline", json!("2000-01-01T00:00:00Z")),
            Tool("validation_failed"),
        ),
        case(
            "values",
            "owner",
            "publish_task",
            "deadline year 9999",
            with("deadline", json!("9999-12-31T23:59:59Z")),
            Tool("validation_failed"),
        ),
        case(
            "values",
            "owner",
            "publish_task",
            "verification a string",
            with("verification", json!("manual")),
            Tool("validation_failed"),
        ),
        case(
            "values",
            "owner",
            "publish_task",
            "verification unknown mode",
            with("verification", json!({"mode": "nope"})),
            Tool("validation_failed"),
        ),
        case(
            "values",
            "owner",
            "publish_task",
            "input_data over 64 KiB",
            with("input_data", json!("i".repeat(64 * 1024))),
            Tool("validation_failed"),
        ),
        case(
            "values",
            "agent",
            "submit_result",
            "result of 1 MiB + 1",
            json!({"task_id": claimed, "result": "r".repeat(1024 * 1024 + 1)}),
            Tool("too_large"),
        ),
        case(
            "values",
            "agent",
            "submit_result",
            "result blank",
            json!({"task_id": claimed, "result": " "}),
            Tool("validation_failed"),
        ),
        case(
            "values",
            "owner",
            "verify_result",
            "score 11",
            json!({"task_id": claimed, "execution_id": x, "accepted": true, "score": 11}),
            Tool("validation_failed"),
        ),
        case(
            "values",
            "owner",
            "verify_result",
            "score -1",
            json!({"task_id": claimed, "execution_id": x, "accepted": true, "score": -1}),
            Tool("validation_failed"),
        ),
        // The wrong kind of key for the tool.
        case(
            "principals",
            "owner",
            "claim_task",
            "an owner key",
            json!({"task_id": task}),
            Tool("forbidden"),
        ),
        case(
            "principals",
            "owner",
            "submit_result",
            "an owner key",
            json!({"task_id": claimed, "result": "r"}),
            Tool("forbidden"),
        ),
        case(
            "principals",
            "owner",
            "my_executions",
            "an owner key",
            json!({}),
            Tool("forbidden"),
        ),
        case(
            "principals",
            "agent",
            "publish_task",
            "an agent key",
            publish.clone(),
            Tool("forbidden"),
        ),
        case(
            "principals",
            "agent",
            "verify_result",
            "an agent key",
            json!({"task_id": claimed, "execution_id": x, "accepted": true}),
            Tool("forbidden"),
        ),
    ];
    cases.sort_by_key(|c| c.who);
    let mut failures = Vec::new();
    let mut counts: BTreeMap<&str, usize> = BTreeMap::new();
    let started = std::time::Instant::now();
    for c in &cases {
        *counts.entry(c.category).or_default() += 1;
        let cl = if c.who == "owner" { &owner } else { &agent };
        if let Err(why) = run(&s, cl, c).await {
            failures.push(format!("[{}] {} {}: {why}", c.category, c.tool, c.name));
        }
    }
    println!(
        "{} cases in {:?}: {counts:?}",
        cases.len(),
        started.elapsed()
    );
    assert!(
        failures.is_empty(),
        "{} of {} cases failed:\n{}",
        failures.len(),
        cases.len(),
        failures.join("\n")
    );
    // The sessions still work after all that.
    for c in [&owner, &agent] {
        let r = c
            .call_tool(CallToolRequestParams::new("who_am_i"))
            .await
            .expect("who_am_i");
        assert_ne!(r.is_error, Some(true), "{:?}", r.content);
    }
    owner.cancel().await.expect("close");
    agent.cancel().await.expect("close");
    s.stop().await;
}

/// Bytes no client library would send, straight at `/mcp`: each answer is a
/// 4xx or a JSON-RPC error, the server stays up, and nothing is appended.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn raw_bad_messages_on_the_mcp_endpoint_are_refused() {
    let s = Server::start().await;
    let a = s.register("alice").await;
    let before = s.head_seq().await;
    let deep = format!(
        "{{\"jsonrpc\":\"2.0\",\"id\":1,\"method\":\"initialize\",\"params\":{{\"x\":{}{}}}}}",
        "[".repeat(10_000),
        "]".repeat(10_000)
    );
    let bodies: Vec<(&str, Vec<u8>)> = vec![
        ("nested 10,000 deep", deep.into_bytes()),
        ("not JSON", b"hello".to_vec()),
        ("non-UTF-8", vec![b'{', 0xff, 0xfe, b'}']),
        (
            "a lone surrogate",
            br#"{"jsonrpc":"2.0","id":1,"method":"\ud800"}"#.to_vec(),
        ),
        ("empty", Vec::new()),
        ("over the body limit", vec![b' '; 2 * 1024 * 1024 + 1]),
    ];
    for (what, body) in bodies {
        let resp = s
            .http
            .post(format!("{}/mcp", s.base))
            .header("x-market-api-key", &a.key)
            .header("content-type", "application/json")
            .header("accept", "application/json, text/event-stream")
            .body(body)
            .send()
            .await
            .unwrap_or_else(|e| panic!("{what}: no answer: {e}"));
        let status = resp.status().as_u16();
        let text = resp.text().await.unwrap_or_default();
        let rpc_error = serde_json::from_str::<Value>(&text)
            .ok()
            .is_some_and(|v| v["error"]["code"].is_i64());
        assert!(
            (400..500).contains(&status) || rpc_error,
            "{what}: {status} {}",
            text.chars().take(200).collect::<String>()
        );
    }
    // Malformed keys on /mcp: refused with the one error shape.
    for (what, name, value) in [
        (
            "two Authorization headers",
            "authorization",
            format!("Bearer {}", a.key),
        ),
        ("Basic", "authorization", format!("Basic {}", a.key)),
        ("a 10 KB key", "x-market-api-key", "k".repeat(10 * 1024)),
    ] {
        let mut req = s
            .http
            .post(format!("{}/mcp", s.base))
            .header(name, &value)
            .header("content-type", "application/json")
            .header("accept", "application/json, text/event-stream");
        if what.starts_with("two") {
            req = req.header("authorization", "Bearer tlo_nope");
        }
        let r = req.body("{}").send().await.expect("an answer");
        assert_eq!(r.status().as_u16(), 401, "{what}");
        let body: Value = r.json().await.expect("a JSON error");
        common::assert_error_shape(&Method::POST, "/mcp", 401, &body, &body.to_string());
    }
    assert_eq!(s.head_seq().await, before, "nothing appended");
    s.get("/accounts/me", &a.key).await.expect(200);
    s.stop().await;
}
