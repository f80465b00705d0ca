//! The HTTP service: every route of API.md on axum, over the same
//! [`Service`] the MCP layer uses.
//!
//! - [`settings`]: flags and `TASKLEDGER_*` variables.
//! - [`extract`]: bodies, the caller, the operator, idempotency keys.
//! - [`error`]: the one error shape.
//! - [`views`]: what each caller may see (redaction lives here only).
//! - [`accounts`], [`tasks`], [`admin`]: the handlers.
//! - [`events`]: Server-Sent Events with resume.
//! - [`metrics`]: Prometheus text.
//! - [`timers`]: lease and deadline expiry as commands through the writer.
//!
//! Handlers never change state themselves: writes go through the single
//! writer ([`Service::execute`]); reads use the read view.

pub mod accounts;
pub mod admin;
pub mod error;
pub mod events;
pub mod extract;
pub mod metrics;
pub mod settings;
pub mod tasks;
pub mod timers;
pub mod views;

use crate::clock::{Clock, SystemClock};
use crate::risk::Risk;
use crate::service::Service;
use crate::verify::pool::Verifier;
use anyhow::Context;
use axum::Router;
use axum::extract::{DefaultBodyLimit, Request, State};
use axum::http::request::Parts;
use axum::response::IntoResponse;
use axum::routing::get;
use error::ApiError;
use governor::clock::{Clock as _, DefaultClock};
use governor::{DefaultKeyedRateLimiter, Quota, RateLimiter};
use serde::Serialize;
use settings::Settings;
use std::num::NonZeroU32;
use std::sync::Arc;
use std::sync::atomic::AtomicUsize;
use taskledger_events::{Principal, Record, SledReader, TaskSpec};
use taskledger_projections::{Execution, Task};
use utoipa::{OpenApi, ToSchema};
use utoipa_axum::router::OpenApiRouter;
use utoipa_axum::routes;

/// Everything a handler needs. Cheap to clone.
#[derive(Clone)]
pub struct AppState(Arc<Inner>);

pub struct Inner {
    pub service: Service,
    /// Acknowledged records: SSE catch-up, and the texts the projections
    /// leave in the log ([`AppState::task_spec`], [`AppState::execution_records`]).
    pub history: SledReader,
    pub settings: Settings,
    pub clock: Arc<dyn Clock>,
    pub metrics: metrics::HttpMetrics,
    limiter: Option<DefaultKeyedRateLimiter<String>>,
    pub sse_clients: AtomicUsize,
    /// Event frame texts, shared by every stream.
    pub frames: events::FrameTexts,
    pub shutdown: tokio::sync::watch::Receiver<bool>,
    /// Ends every MCP stream at shutdown.
    pub mcp_cancel: tokio_util::sync::CancellationToken,
    pub mcp_sessions:
        Arc<rmcp::transport::streamable_http_server::session::local::LocalSessionManager>,
    /// Automatic verification; submit waits on it.
    pub verifier: Verifier,
    /// The risk engine's hooks.
    pub risk: Arc<Risk>,
}

impl std::ops::Deref for AppState {
    type Target = Inner;
    fn deref(&self) -> &Inner {
        &self.0
    }
}

impl AppState {
    pub fn new(
        service: Service,
        history: SledReader,
        settings: Settings,
        clock: Arc<dyn Clock>,
        shutdown: tokio::sync::watch::Receiver<bool>,
    ) -> Self {
        let settings_mcp = settings.clone();
        let risk = Risk::new(service.clone(), settings.risk());
        let verifier = Verifier::new(
            service.clone(),
            history.clone(),
            settings.verify(),
            Some(risk.clone()),
        );
        let limiter = NonZeroU32::new(settings.rate_limit_per_min)
            .map(|n| RateLimiter::keyed(Quota::per_minute(n)));
        AppState(Arc::new(Inner {
            service,
            history,
            settings,
            clock,
            metrics: metrics::HttpMetrics::new(),
            limiter,
            sse_clients: AtomicUsize::new(0),
            frames: events::FrameTexts::new(crate::service::LIVE_RECORDS_MAX),
            shutdown,
            mcp_cancel: tokio_util::sync::CancellationToken::new(),
            mcp_sessions: Arc::new(mcp_session_manager(&settings_mcp)),
            verifier,
            risk,
        }))
    }

    pub fn now_ms(&self) -> u64 {
        self.clock.now_ms()
    }

    /// The acknowledged record at `seq`: from `fresh` (the records of a
    /// command just answered) when it is there, else read from the log.
    /// Everything the read view holds is acknowledged (the writer updates
    /// the view after the flush), so a seq the view names is always there.
    pub fn record(&self, seq: u64, fresh: &[Arc<Record>]) -> Result<Arc<Record>, ApiError> {
        if let Some(r) = fresh.iter().find(|r| r.seq == seq) {
            return Ok(r.clone());
        }
        match self.history.record(seq) {
            Ok(Some(r)) => Ok(Arc::new(r)),
            Ok(None) => Err(ApiError::log_unreadable(seq, "not in the log")),
            Err(e) => Err(ApiError::log_unreadable(seq, e)),
        }
    }

    /// A task's full spec, from the record that published it (see
    /// [`AppState::record`] for `fresh`).
    pub fn task_spec(&self, task: &Task, fresh: &[Arc<Record>]) -> Result<TaskSpec, ApiError> {
        let record = self.record(task.published_seq, fresh)?;
        task.spec_from(&record)
            .cloned()
            .ok_or_else(|| ApiError::log_unreadable(record.seq, "not the publish of this task"))
    }

    /// The records that hold an execution's texts (submission, verdict).
    pub fn execution_records(
        &self,
        x: &Execution,
        fresh: &[Arc<Record>],
    ) -> Result<views::ExecutionRecords, ApiError> {
        let mut out = views::ExecutionRecords::default();
        if let Some(seq) = x.submitted_seq {
            let r = self.record(seq, fresh)?;
            if x.submission_from(&r).is_none() {
                return Err(ApiError::log_unreadable(
                    seq,
                    "not this execution's submission",
                ));
            }
            out.submitted = Some(r);
        }
        if let Some(v) = &x.verdict {
            let r = self.record(v.seq, fresh)?;
            if x.verdict_from(&r).is_none() {
                return Err(ApiError::log_unreadable(
                    v.seq,
                    "not this execution's verdict",
                ));
            }
            out.verdict = Some(r);
        }
        Ok(out)
    }

    /// An execution as the API shows it, texts read from `fresh` or the log.
    pub fn execution_view(
        &self,
        x: &Execution,
        fresh: &[Arc<Record>],
    ) -> Result<views::ExecutionView, ApiError> {
        Ok(views::execution_view(x, &self.execution_records(x, fresh)?))
    }

    /// A task as a caller with `access` may see it, its spec read from
    /// `fresh` or the log.
    pub fn task_view(
        &self,
        access: views::Access,
        task: &Task,
        fresh: &[Arc<Record>],
    ) -> Result<views::TaskView, ApiError> {
        Ok(views::task_view(
            access,
            task,
            &self.task_spec(task, fresh)?,
        ))
    }

    /// The per-principal rate limit; `rate_limited` with `Retry-After`.
    pub fn check_rate(&self, principal: &Principal, _parts: &Parts) -> Result<(), ApiError> {
        let key = match principal {
            Principal::Owner(id) => format!("o:{id}"),
            Principal::Agent(id) => format!("a:{id}"),
            Principal::Operator(n) => format!("op:{n}"),
            Principal::System => return Ok(()),
        };
        self.check_rate_key(key)
    }

    pub fn check_rate_key(&self, key: String) -> Result<(), ApiError> {
        let Some(limiter) = &self.limiter else {
            return Ok(());
        };
        limiter.check_key(&key).map_err(|not_until| {
            let wait = not_until.wait_time_from(DefaultClock::default().now());
            ApiError::rate_limited(wait.as_secs() + 1)
        })
    }

    /// Forget rate-limit state of principals that went quiet.
    pub fn prune_rate_limits(&self) {
        if let Some(l) = &self.limiter {
            l.retain_recent();
        }
    }
}

fn mcp_session_manager(
    settings: &Settings,
) -> rmcp::transport::streamable_http_server::session::local::LocalSessionManager {
    let mut m =
        rmcp::transport::streamable_http_server::session::local::LocalSessionManager::default();
    m.session_config.keep_alive = Some(std::time::Duration::from_secs(
        settings.mcp_session_idle_secs.max(1),
    ));
    m
}

#[derive(OpenApi)]
#[openapi(
    info(
        title = "taskledger",
        description = "An open task market for AI agents on a verifiable, hash-chained event log. \
                       Route and field names follow the earlier Agent Task Market API.",
    ),
    components(schemas(error::ApiError)),
    modifiers(&SecurityAddon),
)]
struct ApiDoc;

struct SecurityAddon;

impl utoipa::Modify for SecurityAddon {
    fn modify(&self, openapi: &mut utoipa::openapi::OpenApi) {
        use utoipa::openapi::security::{ApiKey, ApiKeyValue, HttpAuthScheme, HttpBuilder};
        let components = openapi.components.get_or_insert_with(Default::default);
        components.add_security_scheme(
            "bearer",
            utoipa::openapi::security::SecurityScheme::Http(
                HttpBuilder::new().scheme(HttpAuthScheme::Bearer).build(),
            ),
        );
        components.add_security_scheme(
            "admin_token",
            utoipa::openapi::security::SecurityScheme::ApiKey(ApiKey::Header(ApiKeyValue::new(
                "X-Admin-Token",
            ))),
        );
    }
}

/// The router with its OpenAPI description. Separate from `serve` so tests
/// can drive it directly or through a socket.
pub fn app(state: AppState) -> Router {
    let api = OpenApiRouter::with_openapi(ApiDoc::openapi())
        .routes(routes!(accounts::register))
        .routes(routes!(accounts::me))
        .routes(routes!(accounts::credits))
        .routes(routes!(accounts::ledger))
        .routes(routes!(accounts::reputation))
        .routes(routes!(accounts::redeem))
        .routes(routes!(accounts::rotate_key))
        .routes(routes!(accounts::public_profile))
        .routes(routes!(
            accounts::issue_agent_key,
            accounts::list_agent_keys
        ))
        .routes(routes!(accounts::revoke_agent_key))
        .routes(routes!(accounts::overview))
        .routes(routes!(tasks::publish, tasks::list))
        .routes(routes!(tasks::get_task))
        .routes(routes!(tasks::verification_package))
        .routes(routes!(tasks::claim))
        .routes(routes!(tasks::submit))
        .routes(routes!(tasks::verify))
        .routes(routes!(tasks::cancel))
        .routes(routes!(tasks::submissions))
        .routes(routes!(tasks::my_executions))
        .routes(routes!(tasks::my_published))
        .routes(routes!(tasks::execution))
        .routes(routes!(events::events))
        .routes(routes!(admin::reconcile))
        .routes(routes!(admin::risk_flags))
        .routes(routes!(admin::release_flag))
        .routes(routes!(admin::confirm_flag));
    let (api_router, mut openapi) = api.split_for_parts();
    let (root_router, root_api) = OpenApiRouter::new()
        .routes(routes!(health))
        .routes(routes!(metrics::metrics))
        .split_for_parts();
    // The API's paths carry the prefix in the document as they do on the wire.
    let mut prefixed = utoipa::openapi::path::Paths::new();
    for (path, item) in std::mem::take(&mut openapi.paths.paths) {
        prefixed.paths.insert(format!("/api/v1{path}"), item);
    }
    prefixed.paths.extend(root_api.paths.paths);
    openapi.paths = prefixed;
    if let Some(c) = root_api.components {
        openapi
            .components
            .get_or_insert_with(Default::default)
            .schemas
            .extend(c.schemas);
    }
    let openapi = Arc::new(openapi);
    let body_limit = state.settings.body_limit_bytes;
    let rest = Router::new()
        .nest("/api/v1", api_router)
        .merge(root_router)
        .route(
            "/api/v1/openapi.json",
            get(move || {
                let doc = openapi.clone();
                async move { axum::Json(doc.as_ref().clone()) }
            }),
        )
        .fallback(not_found)
        .method_not_allowed_fallback(method_not_allowed)
        .layer(axum::middleware::from_fn_with_state(
            state.clone(),
            metrics::track,
        ))
        .layer(DefaultBodyLimit::max(body_limit))
        .layer(
            tower_http::trace::TraceLayer::new_for_http()
                .make_span_with(
                    tower_http::trace::DefaultMakeSpan::new().level(tracing::Level::DEBUG),
                )
                .on_response(
                    tower_http::trace::DefaultOnResponse::new().level(tracing::Level::DEBUG),
                ),
        )
        .with_state(state.clone());
    let mcp = mcp_service(&state, rest.clone());
    rest.nest_service(
        "/mcp",
        tower::ServiceBuilder::new()
            .layer(axum::middleware::from_fn_with_state(state, mcp_gate))
            .service(mcp),
    )
}

type McpService = rmcp::transport::streamable_http_server::StreamableHttpService<
    crate::mcp::MarketMcp,
    rmcp::transport::streamable_http_server::session::local::LocalSessionManager,
>;

/// The MCP tools over Streamable HTTP, calling `rest` in-process.
fn mcp_service(state: &AppState, rest: Router) -> McpService {
    use rmcp::transport::streamable_http_server::StreamableHttpServerConfig;
    let backend = crate::mcp::backend::Backend::Local(rest);
    let config = StreamableHttpServerConfig::default()
        .with_allowed_hosts(state.settings.mcp_allowed_hosts.clone())
        .with_max_request_body_bytes(state.settings.body_limit_bytes)
        .with_cancellation_token(state.mcp_cancel.child_token());
    rmcp::transport::streamable_http_server::StreamableHttpService::new(
        move || {
            Ok(crate::mcp::MarketMcp::new(
                backend.clone(),
                crate::mcp::KeySource::Request,
            ))
        },
        state.mcp_sessions.clone(),
        config,
    )
}

/// Before any MCP message is handled: the caller's key must be known, and
/// a new session is refused while the session table is full.
async fn mcp_gate(
    State(app): State<AppState>,
    req: Request,
    next: axum::middleware::Next,
) -> axum::response::Response {
    let (parts, body) = req.into_parts();
    if let Err(e) = extract::authenticate(&parts, &app) {
        return e.into_response();
    }
    let opens_session =
        parts.method == axum::http::Method::POST && !parts.headers.contains_key("mcp-session-id");
    let body = if opens_session {
        let bytes = match axum::body::to_bytes(body, app.settings.body_limit_bytes).await {
            Ok(b) => b,
            Err(_) => {
                return ApiError::new(
                    axum::http::StatusCode::PAYLOAD_TOO_LARGE,
                    "too_large",
                    "the request body is over the size limit",
                )
                .into_response();
            }
        };
        let is_initialize = serde_json::from_slice::<serde_json::Value>(&bytes)
            .ok()
            .is_some_and(|v| v.get("method").and_then(|m| m.as_str()) == Some("initialize"));
        if is_initialize
            && app.mcp_sessions.sessions.read().await.len() >= app.settings.mcp_sessions_max
        {
            return ApiError::from(crate::error::DomainError::Overloaded).into_response();
        }
        axum::body::Body::from(bytes)
    } else {
        body
    };
    next.run(Request::from_parts(parts, body)).await
}

async fn not_found(req: Request) -> ApiError {
    ApiError::not_found(format!("route {} {}", req.method(), req.uri().path()))
}

async fn method_not_allowed(req: Request) -> ApiError {
    ApiError::new(
        axum::http::StatusCode::METHOD_NOT_ALLOWED,
        "bad_request",
        format!("{} is not allowed on {}", req.method(), req.uri().path()),
    )
}

#[derive(Serialize, ToSchema)]
pub struct Health {
    pub status: &'static str,
    pub version: &'static str,
    pub head_seq: u64,
    pub head_hash: String,
}

/// Liveness and the head of the log.
#[utoipa::path(get, path = "/health", tag = "service",
    responses((status = 200, body = Health)))]
pub async fn health(State(app): State<AppState>) -> impl IntoResponse {
    let head = app.service.read().head();
    axum::Json(Health {
        status: "ok",
        version: env!("CARGO_PKG_VERSION"),
        head_seq: head.seq,
        head_hash: views::hex(&head.hash),
    })
}

/// A server started by [`start`]: its address, and how to stop it.
pub struct Running {
    pub addr: std::net::SocketAddr,
    pub service: Service,
    stop: tokio::sync::watch::Sender<bool>,
    task: tokio::task::JoinHandle<anyhow::Result<()>>,
}

impl Running {
    /// Graceful stop: no new connections, streams end, the writer drains,
    /// flushes and stores a snapshot.
    pub async fn stop(self) -> anyhow::Result<()> {
        let _ = self.stop.send(true);
        self.task.await.context("the server task failed")?
    }

    /// Wait until the server ends by itself (it does not, short of a stop).
    pub async fn wait(self) -> anyhow::Result<()> {
        self.task.await.context("the server task failed")?
    }
}

/// 201 for a resource a command created, 200 when an idempotent retry
/// replays that creation.
pub(crate) fn created_status(out: &crate::writer::Outcome) -> axum::http::StatusCode {
    if out.replayed {
        axum::http::StatusCode::OK
    } else {
        axum::http::StatusCode::CREATED
    }
}

/// How long a graceful stop waits for open connections to finish.
pub const SHUTDOWN_GRACE: std::time::Duration = std::time::Duration::from_secs(10);

/// Open the store, start the writer and the timers, and listen on
/// `settings.addr` (port 0 picks a free one).
pub async fn start(settings: Settings) -> anyhow::Result<Running> {
    use taskledger_events::SledStore;
    let data = settings.data.clone();
    if settings.read_only {
        let (store, damage) = tokio::task::spawn_blocking(move || SledStore::open_read_only(&data))
            .await
            .context("the store opener panicked")?
            .with_context(|| format!("cannot open the data dir {}", settings.data.display()))?;
        if let Some(e) = damage {
            tracing::error!(error = %e, "the log is damaged: serving the records before it, read-only");
        }
        let history = store.reader();
        return start_on(settings, Box::new(store), history).await;
    }
    let data = settings.data.clone();
    let store = tokio::task::spawn_blocking(move || SledStore::open(&data))
        .await
        .context("the store opener panicked")?
        .with_context(|| {
            format!(
                "cannot open the data dir {} (a damaged log can still be served, read-only, with --read-only)",
                settings.data.display()
            )
        })?;
    for moved in store.moved_aside() {
        tracing::warn!(file = %moved.display(), "moved an incomplete sled snapshot aside");
    }
    let history = store.reader();
    start_on(settings, Box::new(store), history).await
}

/// [`start`] over a store opened by the caller: the seam through which the
/// storage-fault tests put a `FaultyStore` under a real server. `history`
/// reads the same log (acknowledged records only).
pub async fn start_on(
    settings: Settings,
    store: Box<dyn taskledger_events::LogStore>,
    history: SledReader,
) -> anyhow::Result<Running> {
    let clock: Arc<dyn Clock> = Arc::new(SystemClock);
    let (service, writer) =
        Service::start_with(store, settings.policy(), clock.clone(), settings.writer())
            .context("cannot load the market state")?;
    let (stop_tx, stop_rx) = tokio::sync::watch::channel(false);
    let state = AppState::new(
        service.clone(),
        history,
        settings.clone(),
        clock,
        stop_rx.clone(),
    );
    let listener = tokio::net::TcpListener::bind(settings.addr)
        .await
        .with_context(|| format!("cannot listen on {}", settings.addr))?;
    let addr = listener.local_addr()?;
    tracing::info!(%addr, data = %settings.data.display(), head_seq = service.read().head_seq, "taskledger listening");
    // Nothing that writes runs on a read-only server.
    let writes = !settings.read_only;
    let timers = tokio::spawn({
        let state = state.clone();
        async move {
            if writes {
                timers::run(state).await;
            }
        }
    });
    let rechecks = tokio::spawn({
        let risk = state.risk.clone();
        async move {
            if writes {
                risk.run_rechecks().await;
            }
        }
    });
    if writes {
        state.verifier.start();
    }
    let mcp_cancel = state.mcp_cancel.clone();
    let verifier_stop = state.verifier.clone();
    let router = app(state);
    let svc = service.clone();
    let mut stopped = stop_rx.clone();
    let mut grace_over = stop_rx;
    let task = tokio::spawn(async move {
        let serve = axum::serve(
            listener,
            router.into_make_service_with_connect_info::<std::net::SocketAddr>(),
        )
        .with_graceful_shutdown(async move {
            let _ = stopped.wait_for(|s| *s).await;
            mcp_cancel.cancel();
            // Submit calls waiting for a verdict answer now (pending), and
            // jobs in flight are dropped: the next start verifies them again.
            verifier_stop.stop();
        });
        // A client that stopped reading with its socket full keeps its
        // connection from ever finishing: past the grace, close what is
        // left rather than never exit. The writer drains either way.
        let result = tokio::select! {
            result = serve.into_future() => result,
            _ = async {
                let _ = grace_over.wait_for(|s| *s).await;
                tokio::time::sleep(SHUTDOWN_GRACE).await;
            } => {
                tracing::warn!(grace_secs = SHUTDOWN_GRACE.as_secs(), "connections still open after the shutdown grace; closing them");
                Ok(())
            }
        };
        timers.abort();
        rechecks.abort();
        let drained = svc.shutdown().await;
        let joined = tokio::task::spawn_blocking(move || writer.join()).await;
        result.context("the HTTP server failed")?;
        drained.context("the writer did not shut down cleanly")?;
        match joined {
            Ok(Ok(())) => Ok(()),
            _ => anyhow::bail!("the writer thread panicked"),
        }
    });
    Ok(Running {
        addr,
        service,
        stop: stop_tx,
        task,
    })
}

/// Run the server until SIGINT/SIGTERM, then stop it gracefully.
pub async fn serve(settings: Settings) -> anyhow::Result<()> {
    let running = start(settings).await?;
    shutdown_signal().await;
    tracing::info!("shutting down: no new connections, draining the writer");
    running.stop().await?;
    tracing::info!("stopped cleanly");
    Ok(())
}

async fn shutdown_signal() {
    let ctrl_c = async {
        let _ = tokio::signal::ctrl_c().await;
    };
    #[cfg(unix)]
    let term = async {
        match tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate()) {
            Ok(mut s) => {
                s.recv().await;
            }
            Err(_) => std::future::pending::<()>().await,
        }
    };
    #[cfg(not(unix))]
    let term = std::future::pending::<()>();
    tokio::select! {
        _ = ctrl_c => {},
        _ = term => {},
    }
}
