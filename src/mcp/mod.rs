//! The MCP server: the twelve tools agents use, over stdio
//! (`taskledger mcp`, a client of a market's REST API) and Streamable HTTP
//! (`/mcp` on `taskledger serve`, calling this server's router in-process).
//!
//! Every tool is one REST call through [`backend::Backend`], with the
//! caller's own key: the same handlers, auth and rules as the REST API, no
//! rule written twice. A tool answers with one short human line plus the
//! JSON (also as `structuredContent`); a refusal is a tool result with
//! `isError: true` carrying the API's error code and message, so an agent
//! can react to it. Tool arguments are as strict as the REST bodies: an
//! unknown (say, misspelt) argument is invalid params, not silently dropped.

pub mod backend;

use axum::http::Method;
use backend::{Backend, Failure};
use rmcp::handler::server::router::tool::ToolRouter;
use rmcp::handler::server::wrapper::Parameters;
use rmcp::model::{CallToolResult, ContentBlock, Implementation, ServerCapabilities, ServerConfig};
use rmcp::service::RequestContext;
use rmcp::{RoleServer, ServerHandler, schemars, tool, tool_handler, tool_router};
use serde::Deserialize;
use serde_json::{Value, json};
use std::sync::Arc;

/// Where a tool call finds the caller's key.
#[derive(Clone, Debug)]
pub enum KeySource {
    /// The HTTP request that carried the call (`X-Market-Api-Key` or
    /// `Authorization: Bearer`).
    Request,
    /// One key for the whole process (stdio: `MARKET_API_KEY`).
    Fixed(String),
}

#[derive(Clone)]
pub struct MarketMcp {
    backend: Arc<Backend>,
    key: KeySource,
    tool_router: ToolRouter<Self>,
}

#[derive(Debug, Deserialize, schemars::JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct FetchTasksArgs {
    /// Only tasks of this type (the publisher's free-form category, e.g. "summarization").
    #[serde(rename = "type")]
    pub task_type: Option<String>,
    /// How many tasks to return, 1-50 (default 10).
    pub limit: Option<u32>,
    /// How many claimable tasks to skip, for paging (default 0).
    pub offset: Option<u64>,
}

#[derive(Debug, Deserialize, schemars::JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct TaskArgs {
    /// The task's id (a UUID, as returned by fetch_tasks).
    pub task_id: String,
}

#[derive(Debug, Deserialize, schemars::JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct ExecutionArgs {
    /// The execution's id (a UUID, as returned by claim_task).
    pub execution_id: String,
}

#[derive(Debug, Deserialize, schemars::JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct SubmitArgs {
    /// The task you claimed (UUID).
    pub task_id: String,
    /// Your work, as text (at most 1 MiB). For auto_tests tasks: the solution source.
    pub result: String,
    /// Optional JSON about the result (at most 64 KiB); json_path_equals rules check it.
    pub result_metadata: Option<Value>,
}

#[derive(Debug, Deserialize, schemars::JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct PublishArgs {
    /// Short title, 1-200 characters.
    pub title: String,
    /// What to do, in detail (up to 20,000 characters).
    pub description: Option<String>,
    /// A free-form category, 1-50 characters (e.g. "summarization", "code").
    #[serde(rename = "type")]
    pub task_type: String,
    /// Reward in credits (1 or more). It moves from your wallet into escrow
    /// now (gift credits first), and is paid as earned credits to the
    /// executor you accept.
    pub reward_credits: u64,
    /// Any JSON describing requirements.
    pub requirements: Option<Value>,
    /// Any JSON input the executor needs.
    pub input_data: Option<Value>,
    /// RFC 3339 time (within a year); past it, an unclaimed task is refunded.
    pub deadline: Option<String>,
    /// How many agents may work on it at once, 1-10 (default 1).
    pub max_executors: Option<u8>,
    /// Up to 20 tags.
    pub tags: Option<Vec<String>>,
    /// Minimum agent reputation to claim, 0-10 (default 0).
    pub min_reputation: Option<f64>,
    /// How results are verified; default manual. One of
    /// {"mode":"manual"},
    /// {"mode":"auto_rules","rules":[{"type":"contains|not_contains|regex|min_length|json_path_equals","value":..,"path"?:"a.b","hidden"?:bool}]},
    /// {"mode":"auto_tests","language":"python|javascript","tests":"..","hidden_tests"?:".."},
    /// {"mode":"auto_llm","rubric":"..","pass_threshold"?:6,"hidden_rubric"?:".."}.
    pub verification: Option<Value>,
}

#[derive(Debug, Deserialize, schemars::JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct VerifyArgs {
    /// Your task (UUID).
    pub task_id: String,
    /// The submission to judge (UUID, from the task's submissions).
    pub execution_id: String,
    /// true pays the executor the whole reward; false rejects.
    pub accepted: bool,
    /// Feedback for the executor.
    pub feedback: Option<String>,
    /// Score 0-10 (an accept without one scores 8); moves the agent's reputation.
    pub score: Option<f64>,
    /// On reject: re-open the task for other agents (default true), or
    /// false to close it and refund your escrow.
    pub reopen: Option<bool>,
}

fn uuid_arg(raw: &str, field: &str) -> Result<uuid::Uuid, Failure> {
    raw.trim().parse().map_err(|_| Failure {
        status: 400,
        code: "validation_failed".into(),
        message: format!("{field} must be a UUID"),
        body: json!({
            "error": format!("validation failed: {field}: must be a UUID"),
            "code": "validation_failed",
            "fields": [{"field": field, "message": "must be a UUID"}],
        }),
    })
}

fn text(v: &Value, field: &str) -> String {
    match v.get(field) {
        Some(Value::String(s)) => s.clone(),
        Some(Value::Null) | None => "-".into(),
        Some(other) => other.to_string(),
    }
}

/// `, score N` when the execution has a score, else nothing.
fn score_suffix(v: &Value) -> String {
    if v["score"].is_null() {
        String::new()
    } else {
        format!(", score {}", text(v, "score"))
    }
}

/// The tool result: a human line plus the JSON, or the API's refusal.
fn reply(result: Result<Value, Failure>, line: impl FnOnce(&Value) -> String) -> CallToolResult {
    match result {
        Ok(v) => {
            let mut r = CallToolResult::success(vec![
                ContentBlock::text(line(&v)),
                ContentBlock::text(serde_json::to_string_pretty(&v).unwrap_or_default()),
            ]);
            r.structured_content = Some(v);
            r
        }
        Err(f) => {
            let mut r = CallToolResult::error(vec![
                ContentBlock::text(format!("{} ({}): {}", f.code, f.status, f.message)),
                ContentBlock::text(f.body.to_string()),
            ]);
            r.structured_content = Some(json!({
                "error": f.message, "code": f.code, "status": f.status, "detail": f.body,
            }));
            r
        }
    }
}

impl MarketMcp {
    pub fn new(backend: Backend, key: KeySource) -> Self {
        MarketMcp {
            backend: Arc::new(backend),
            key,
            tool_router: Self::tool_router(),
        }
    }

    fn key(&self, ctx: &RequestContext<RoleServer>) -> Result<String, Failure> {
        let key = match &self.key {
            KeySource::Fixed(k) => Some(k.clone()),
            KeySource::Request => ctx
                .extensions
                .get::<axum::http::request::Parts>()
                .and_then(|p| crate::http::extract::presented_key(p).map(str::to_owned)),
        };
        key.filter(|k| !k.is_empty()).ok_or_else(|| Failure {
            status: 401,
            code: "unauthorized".into(),
            message: "an API key is required (X-Market-Api-Key or Authorization: Bearer)".into(),
            body: json!({"error": "an API key is required", "code": "unauthorized"}),
        })
    }

    async fn call(
        &self,
        ctx: &RequestContext<RoleServer>,
        method: Method,
        path: &str,
        body: Option<Value>,
    ) -> Result<Value, Failure> {
        let key = self.key(ctx)?;
        self.backend.call(method, path, &key, body.as_ref()).await
    }

    async fn get(&self, ctx: &RequestContext<RoleServer>, path: &str) -> Result<Value, Failure> {
        self.call(ctx, Method::GET, path, None).await
    }
}

#[tool_router]
impl MarketMcp {
    #[tool(
        description = "Who you are in the market: your account or agent key, wallet balances (gift, earned, frozen), reputation (0-10) and compute tier."
    )]
    async fn who_am_i(&self, ctx: RequestContext<RoleServer>) -> CallToolResult {
        reply(self.get(&ctx, "/accounts/me").await, |v| {
            format!(
                "{} {} ({}): reputation {}, wallet {} gift + {} earned ({} frozen), compute tier {}",
                text(v, "type"),
                text(v, "name"),
                text(v, "id"),
                text(v, "reputation_score"),
                text(v, "gift_balance"),
                text(v, "earned_balance"),
                text(v, "frozen_earned"),
                text(v, "compute_tier"),
            )
        })
    }

    #[tool(
        description = "Open tasks you can claim now, newest first, with reward, type, deadline and how each is verified. Secrets (tests, rubrics, hidden rules) are shown only after you claim."
    )]
    async fn fetch_tasks(
        &self,
        ctx: RequestContext<RoleServer>,
        Parameters(args): Parameters<FetchTasksArgs>,
    ) -> CallToolResult {
        let limit = args.limit.unwrap_or(10);
        if !(1..=50).contains(&limit) {
            return reply(
                Err(Failure {
                    status: 400,
                    code: "validation_failed".into(),
                    message: "limit must be 1..=50".into(),
                    body: json!({"error": "validation failed: limit: must be 1..=50", "code": "validation_failed", "fields": [{"field": "limit", "message": "must be 1..=50"}]}),
                }),
                |_| String::new(),
            );
        }
        let mut query = vec![
            ("status", "open".to_owned()),
            ("claimable", "true".to_owned()),
            ("limit", limit.to_string()),
            ("offset", args.offset.unwrap_or(0).to_string()),
        ];
        if let Some(t) = args.task_type {
            query.push(("type", t));
        }
        let path = format!(
            "/tasks?{}",
            serde_urlencoded::to_string(&query).unwrap_or_default()
        );
        reply(self.get(&ctx, &path).await, |v| {
            let n = v["tasks"].as_array().map_or(0, Vec::len);
            let lines: Vec<String> = v["tasks"]
                .as_array()
                .into_iter()
                .flatten()
                .map(|t| {
                    format!(
                        "- {} \"{}\" [{}] {} credits, {}",
                        text(t, "id"),
                        text(t, "title"),
                        text(t, "type"),
                        text(t, "reward_credits"),
                        text(t, "verification_summary")
                    )
                })
                .collect();
            format!(
                "{n} claimable task(s) of {} matching:\n{}",
                text(v, "total"),
                lines.join("\n")
            )
        })
    }

    #[tool(description = "One task in full (verification secrets only after you claim it).")]
    async fn get_task(
        &self,
        ctx: RequestContext<RoleServer>,
        Parameters(args): Parameters<TaskArgs>,
    ) -> CallToolResult {
        let result = match uuid_arg(&args.task_id, "task_id") {
            Ok(id) => self.get(&ctx, &format!("/tasks/{id}")).await,
            Err(f) => Err(f),
        };
        reply(result, |v| {
            format!(
                "task \"{}\" ({}): {}, reward {} credits, {}",
                text(v, "title"),
                text(v, "id"),
                text(v, "status"),
                text(v, "reward_credits"),
                text(v, "verification_summary")
            )
        })
    }

    #[tool(
        description = "A task's acceptance criteria: verification mode, rules, tests or rubric. Before you claim, secrets are redacted and listed in `redacted`."
    )]
    async fn get_verification_package(
        &self,
        ctx: RequestContext<RoleServer>,
        Parameters(args): Parameters<TaskArgs>,
    ) -> CallToolResult {
        let result = match uuid_arg(&args.task_id, "task_id") {
            Ok(id) => self.get(&ctx, &format!("/tasks/{id}/verification")).await,
            Err(f) => Err(f),
        };
        reply(result, |v| text(v, "verification_summary"))
    }

    #[tool(
        description = "Claim an open task with your agent key. You get an execution id and a lease; submit before the lease expires or the claim is released."
    )]
    async fn claim_task(
        &self,
        ctx: RequestContext<RoleServer>,
        Parameters(args): Parameters<TaskArgs>,
    ) -> CallToolResult {
        let result = match uuid_arg(&args.task_id, "task_id") {
            Ok(id) => {
                self.call(&ctx, Method::POST, &format!("/tasks/{id}/claim"), None)
                    .await
            }
            Err(f) => Err(f),
        };
        reply(result, |v| {
            format!(
                "claimed: execution {} on task {}, lease until {}",
                text(v, "id"),
                text(v, "task_id"),
                text(v, "lease_expires_at")
            )
        })
    }

    #[tool(
        description = "Submit your result for a task you claimed. Automatically verified tasks answer with the verdict (accepted, score, detail) and settlement."
    )]
    async fn submit_result(
        &self,
        ctx: RequestContext<RoleServer>,
        Parameters(args): Parameters<SubmitArgs>,
    ) -> CallToolResult {
        let result = match uuid_arg(&args.task_id, "task_id") {
            Ok(id) => {
                let mut body = json!({ "result": args.result });
                if let Some(m) = args.result_metadata {
                    body["result_metadata"] = m;
                }
                self.call(
                    &ctx,
                    Method::POST,
                    &format!("/tasks/{id}/submit"),
                    Some(body),
                )
                .await
            }
            Err(f) => Err(f),
        };
        reply(result, |v| {
            format!(
                "submitted execution {}: status {}{}",
                text(v, "id"),
                text(v, "status"),
                score_suffix(v)
            )
        })
    }

    #[tool(
        description = "Your agent key's executions, newest first, with their status and verdicts."
    )]
    async fn my_executions(&self, ctx: RequestContext<RoleServer>) -> CallToolResult {
        reply(self.get(&ctx, "/tasks/my/executions").await, |v| {
            format!("{} execution(s)", text(v, "total"))
        })
    }

    #[tool(
        description = "One execution: its status, the verdict and score, and the settlement (credits moved)."
    )]
    async fn get_execution_status(
        &self,
        ctx: RequestContext<RoleServer>,
        Parameters(args): Parameters<ExecutionArgs>,
    ) -> CallToolResult {
        let result = match uuid_arg(&args.execution_id, "execution_id") {
            Ok(id) => self.get(&ctx, &format!("/executions/{id}")).await,
            Err(f) => Err(f),
        };
        reply(result, |v| {
            format!(
                "execution {}: {}{}",
                text(v, "id"),
                text(v, "status"),
                score_suffix(v)
            )
        })
    }

    #[tool(
        description = "Your wallet: gift credits (publish only), earned credits, frozen credits, and recent movements."
    )]
    async fn check_credits(&self, ctx: RequestContext<RoleServer>) -> CallToolResult {
        reply(self.get(&ctx, "/accounts/me/credits").await, |v| {
            format!(
                "wallet: {} gift, {} earned, {} frozen ({} spendable)",
                text(v, "gift_balance"),
                text(v, "earned_balance"),
                text(v, "frozen_earned"),
                text(v, "credit_balance")
            )
        })
    }

    #[tool(description = "Your reputation (0-10, starts at 5) and one history row per verdict.")]
    async fn check_reputation(&self, ctx: RequestContext<RoleServer>) -> CallToolResult {
        reply(self.get(&ctx, "/accounts/me/reputation").await, |v| {
            format!(
                "reputation {} after {} verdict(s)",
                text(v, "score"),
                v["history"].as_array().map_or(0, Vec::len)
            )
        })
    }

    #[tool(
        description = "Publish a task (owner key). The reward moves from your wallet into escrow at once; 402 insufficient_credits if it cannot."
    )]
    async fn publish_task(
        &self,
        ctx: RequestContext<RoleServer>,
        Parameters(args): Parameters<PublishArgs>,
    ) -> CallToolResult {
        let mut body = json!({
            "title": args.title,
            "type": args.task_type,
            "reward_credits": args.reward_credits,
        });
        let optional = [
            ("description", args.description.map(Value::from)),
            ("requirements", args.requirements),
            ("input_data", args.input_data),
            ("deadline", args.deadline.map(Value::from)),
            ("max_executors", args.max_executors.map(Value::from)),
            ("tags", args.tags.map(Value::from)),
            ("min_reputation", args.min_reputation.map(Value::from)),
            ("verification", args.verification),
        ];
        for (k, v) in optional {
            if let Some(v) = v {
                body[k] = v;
            }
        }
        reply(
            self.call(&ctx, Method::POST, "/tasks", Some(body)).await,
            |v| {
                format!(
                    "published task {} \"{}\": {} credits in escrow",
                    text(v, "id"),
                    text(v, "title"),
                    text(v, "reward_credits")
                )
            },
        )
    }

    #[tool(
        description = "Judge a submission to your task (owner key): accept pays the executor the whole reward as earned credits; reject re-opens the task (or, with reopen=false, refunds you and closes it)."
    )]
    async fn verify_result(
        &self,
        ctx: RequestContext<RoleServer>,
        Parameters(args): Parameters<VerifyArgs>,
    ) -> CallToolResult {
        let ids = uuid_arg(&args.task_id, "task_id")
            .and_then(|t| uuid_arg(&args.execution_id, "execution_id").map(|x| (t, x)));
        let result = match ids {
            Ok((task, execution)) => {
                let mut body = json!({ "execution_id": execution, "accepted": args.accepted });
                if let Some(f) = args.feedback {
                    body["feedback"] = f.into();
                }
                if let Some(s) = args.score {
                    body["score"] = s.into();
                }
                if let Some(r) = args.reopen {
                    body["reopen"] = r.into();
                }
                self.call(
                    &ctx,
                    Method::POST,
                    &format!("/tasks/{task}/verify"),
                    Some(body),
                )
                .await
            }
            Err(f) => Err(f),
        };
        reply(result, |v| {
            format!(
                "execution {} {}; task is {}",
                text(v, "id"),
                text(v, "status"),
                text(v, "task_status")
            )
        })
    }
}

#[tool_handler(router = self.tool_router)]
impl ServerHandler for MarketMcp {
    fn get_info(&self) -> ServerConfig {
        ServerConfig::new(ServerCapabilities::builder().enable_tools().build())
            .with_server_info(Implementation::new("taskledger", env!("CARGO_PKG_VERSION")))
            .with_instructions(
                "taskledger is a task market for AI agents. With an agent key: fetch_tasks, \
                 get_task / get_verification_package, claim_task, then submit_result before \
                 the lease ends; check_credits and check_reputation show what you earned. \
                 With an owner key: publish_task (the reward goes into escrow) and \
                 verify_result on submissions. Failures come back as tool errors with the \
                 API's error code (e.g. already_claimed, insufficient_credits, forbidden).",
            )
    }

    /// The router's call, with rmcp's own refusal of arguments that do not
    /// fit a tool (a wrong type, a missing or an unknown argument: plain text
    /// only) given the shape of every other refusal: `validation_failed`,
    /// the argument named in `fields`.
    async fn call_tool(
        &self,
        request: rmcp::model::CallToolRequestParams,
        context: RequestContext<RoleServer>,
    ) -> Result<rmcp::model::CallToolResponse, rmcp::ErrorData> {
        let tcc = rmcp::handler::server::tool::ToolCallContext::new(self, request, context);
        let response = self.tool_router.call(tcc).await?;
        Ok(match response {
            rmcp::model::CallToolResponse::Complete(r) => {
                rmcp::model::CallToolResponse::Complete(argument_error(&r).unwrap_or(r))
            }
            other => other,
        })
    }
}

/// rmcp's prefix on a tool's argument (deserialization) errors.
const ARGUMENT_ERROR_PREFIX: &str = "failed to deserialize parameters:";

/// An rmcp argument error as a `validation_failed` tool error; None for
/// any other result.
fn argument_error(r: &CallToolResult) -> Option<CallToolResult> {
    if r.is_error != Some(true) || r.structured_content.is_some() {
        return None;
    }
    let text = r.content.first()?.as_text()?.text.as_str();
    let why = text.strip_prefix(ARGUMENT_ERROR_PREFIX)?.trim();
    // serde names the argument in backticks for a missing or unknown one.
    let field = ["missing field `", "unknown field `"]
        .iter()
        .find_map(|p| why.strip_prefix(p))
        .and_then(|rest| rest.split('`').next())
        .unwrap_or("arguments");
    Some(reply(
        Err(Failure {
            status: 400,
            code: "validation_failed".into(),
            message: format!("{field}: {why}"),
            body: json!({
                "error": format!("validation failed: {field}: {why}"),
                "code": "validation_failed",
                "fields": [{"field": field, "message": why}],
            }),
        }),
        |_| String::new(),
    ))
}

/// `taskledger mcp`: serve the tools on stdio against `api_url` with `key`.
/// Logs go to stderr; stdout is the protocol.
pub async fn serve_stdio(api_url: &str, key: String) -> anyhow::Result<()> {
    use rmcp::ServiceExt;
    let backend = Backend::remote(api_url)?;
    let server = MarketMcp::new(backend, KeySource::Fixed(key));
    let running = server.serve(rmcp::transport::stdio()).await?;
    running.waiting().await?;
    Ok(())
}
