//! A full market driven through MCP alone, over both transports: Streamable
//! HTTP on `/mcp` (both protocol generations rmcp speaks) and stdio
//! (`taskledger mcp` as a child process, a client of the REST API).

use rmcp::model::{CallToolRequestParams, CallToolResult, ClientConfig, ProtocolVersion};
use rmcp::service::RunningService;
use rmcp::transport::streamable_http_client::StreamableHttpClientTransportConfig;
use rmcp::transport::{StreamableHttpClientTransport, TokioChildProcess};
use rmcp::{RoleClient, ServiceExt};
use serde_json::{Value, json};
use std::collections::HashMap;

mod common;

use common::Server;

type Client = RunningService<RoleClient, ClientConfig>;

/// Alice (owner key), and an agent key of Bob's.
async fn accounts(s: &Server) -> (String, String) {
    let alice = s.register("Alice").await;
    let bob = s.register("Bob").await;
    (alice.key, s.agent(&bob, "bob-1").await.key)
}

async fn http_client(url: &str, key: &str, version: ProtocolVersion) -> Result<Client, String> {
    let mut headers = HashMap::new();
    headers.insert("x-market-api-key".parse().unwrap(), key.parse().unwrap());
    let transport = StreamableHttpClientTransport::from_config(
        StreamableHttpClientTransportConfig::with_uri(format!("{url}/mcp")).custom_headers(headers),
    );
    ClientConfig::default()
        .with_protocol_version(version)
        .serve(transport)
        .await
        .map_err(|e| e.to_string())
}

async fn stdio_client(url: &str, key: &str) -> Client {
    let mut cmd = tokio::process::Command::new(env!("CARGO_BIN_EXE_taskledger"));
    cmd.arg("mcp")
        .env("MARKET_API_URL", format!("{url}/api/v1"))
        .env("MARKET_API_KEY", key)
        .env("TASKLEDGER_LOG_FILTER", "error");
    let transport = TokioChildProcess::new(cmd).unwrap();
    ClientConfig::default().serve(transport).await.unwrap()
}

async fn call(c: &Client, tool: &str, args: Value) -> CallToolResult {
    let params = CallToolRequestParams::new(tool.to_owned());
    let params = match args {
        Value::Object(m) => params.with_arguments(m),
        _ => params,
    };
    c.call_tool(params).await.unwrap()
}

fn ok(r: &CallToolResult) -> &Value {
    assert_ne!(r.is_error, Some(true), "tool failed: {:?}", r.content);
    assert!(r.content.len() >= 2, "a human line plus the JSON");
    r.structured_content.as_ref().unwrap()
}

fn err_code(r: &CallToolResult) -> String {
    assert_eq!(r.is_error, Some(true), "expected a tool error: {r:?}");
    r.structured_content.as_ref().unwrap()["code"]
        .as_str()
        .unwrap()
        .to_owned()
}

/// The whole market through the tools: publish, find, claim, claim again,
/// submit, a forbidden verdict, the real verdict, and what the agent sees.
async fn market(owner: &Client, agent: &Client) {
    let tools = agent.list_all_tools().await.unwrap();
    let mut names: Vec<_> = tools.iter().map(|t| t.name.to_string()).collect();
    names.sort();
    assert_eq!(
        names,
        [
            "check_credits",
            "check_reputation",
            "claim_task",
            "fetch_tasks",
            "get_execution_status",
            "get_task",
            "get_verification_package",
            "my_executions",
            "publish_task",
            "submit_result",
            "verify_result",
            "who_am_i"
        ]
    );

    let before = ok(&call(agent, "who_am_i", json!({})).await).clone();
    let task = ok(&call(
        owner,
        "publish_task",
        json!({"title": "Summarise", "type": "summarization", "reward_credits": 40}),
    )
    .await)
    .clone();
    let task_id = task["id"].as_str().unwrap().to_owned();

    let found = ok(&call(agent, "fetch_tasks", json!({"limit": 50})).await).clone();
    assert!(
        found["tasks"]
            .as_array()
            .unwrap()
            .iter()
            .any(|t| t["id"] == task_id.as_str()),
        "fetch_tasks shows the new task"
    );
    let claim = ok(&call(agent, "claim_task", json!({"task_id": task_id})).await).clone();
    let execution_id = claim["id"].as_str().unwrap().to_owned();
    assert_eq!(claim["status"], "in_progress");
    assert_eq!(
        err_code(&call(agent, "claim_task", json!({"task_id": task_id})).await),
        "already_claimed"
    );
    let submitted = ok(&call(
        agent,
        "submit_result",
        json!({"task_id": task_id, "result": "A summary."}),
    )
    .await)
    .clone();
    assert_eq!(submitted["status"], "submitted");

    // An agent key may not judge.
    assert_eq!(
        err_code(
            &call(
                agent,
                "verify_result",
                json!({"task_id": task_id, "execution_id": execution_id, "accepted": true}),
            )
            .await
        ),
        "forbidden"
    );
    let verdict = ok(&call(
        owner,
        "verify_result",
        json!({"task_id": task_id, "execution_id": execution_id, "accepted": true, "score": 10}),
    )
    .await)
    .clone();
    assert_eq!(verdict["status"], "accepted");
    assert_eq!(verdict["task_status"], "completed");

    let after = ok(&call(agent, "who_am_i", json!({})).await).clone();
    assert_eq!(
        after["earned_balance"].as_u64().unwrap(),
        before["earned_balance"].as_u64().unwrap() + 40
    );
    let credits = ok(&call(agent, "check_credits", json!({})).await).clone();
    assert_eq!(credits["earned_balance"], after["earned_balance"]);
    assert_eq!(credits["recent"][0]["reason"], "payout");
    let rep = ok(&call(agent, "check_reputation", json!({})).await).clone();
    assert!(rep["score"].as_f64().unwrap() > before["reputation_score"].as_f64().unwrap());
    assert_eq!(rep["history"].as_array().unwrap().len(), 1);
    let status = ok(&call(
        agent,
        "get_execution_status",
        json!({"execution_id": execution_id}),
    )
    .await)
    .clone();
    assert_eq!(status["settlement"][0]["delta"], 40);
    let mine = ok(&call(agent, "my_executions", json!({})).await).clone();
    assert!(mine["total"].as_u64().unwrap() >= 1);
    let package = ok(&call(
        agent,
        "get_verification_package",
        json!({"task_id": task_id}),
    )
    .await)
    .clone();
    assert_eq!(package["verification"]["mode"], "manual");
    let got = ok(&call(owner, "get_task", json!({"task_id": task_id})).await).clone();
    assert_eq!(got["status"], "completed");
    assert_eq!(
        err_code(&call(agent, "get_task", json!({"task_id": "not-a-uuid"})).await),
        "validation_failed"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_market_over_streamable_http_both_protocol_generations() {
    let s = Server::start().await;
    let url = s.base.clone();
    for version in [ProtocolVersion::V_2025_11_25, ProtocolVersion::V_2026_07_28] {
        let (alice, agent_key) = accounts(&s).await;
        let owner = http_client(&url, &alice, version.clone()).await.unwrap();
        let agent = http_client(&url, &agent_key, version.clone())
            .await
            .unwrap();
        market(&owner, &agent).await;
        owner.cancel().await.unwrap();
        agent.cancel().await.unwrap();
    }
    // A bad key is refused before any tool runs.
    for version in [ProtocolVersion::V_2025_11_25, ProtocolVersion::V_2026_07_28] {
        let refused = match http_client(&url, "tlo_not-a-key", version).await {
            Err(_) => true,
            Ok(c) => c.list_all_tools().await.is_err(),
        };
        assert!(refused, "a bad key must not reach the tools");
    }
    let resp = reqwest::Client::new()
        .post(format!("{url}/mcp"))
        .header("accept", "application/json, text/event-stream")
        .json(&json!({"jsonrpc": "2.0", "id": 1, "method": "tools/list"}))
        .send()
        .await
        .unwrap();
    assert_eq!(resp.status(), 401);
    let body: Value = resp.json().await.unwrap();
    assert_eq!(body["code"], "unauthorized");
    s.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_market_over_stdio() {
    let s = Server::start().await;
    let url = s.base.clone();
    let (alice, agent_key) = accounts(&s).await;
    let owner = stdio_client(&url, &alice).await;
    let agent = stdio_client(&url, &agent_key).await;
    market(&owner, &agent).await;
    owner.cancel().await.unwrap();
    agent.cancel().await.unwrap();
    // Over stdio the key comes from the environment: a bad one makes every
    // tool answer `unauthorized`.
    let bad = stdio_client(&url, "tlo_not-a-key").await;
    assert_eq!(
        err_code(&call(&bad, "who_am_i", json!({})).await),
        "unauthorized"
    );
    bad.cancel().await.unwrap();
    s.stop().await;
}
