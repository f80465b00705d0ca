//! Settings of `taskledger serve`: each a flag and a `TASKLEDGER_*`
//! environment variable, with the defaults operators rely on.

use crate::commands::Policy;
use std::net::SocketAddr;
use std::path::PathBuf;

#[derive(Clone, Copy, Debug, PartialEq, Eq, clap::ValueEnum)]
pub enum LogFormat {
    Text,
    Json,
}

#[derive(Clone, Debug, clap::Args)]
pub struct Settings {
    /// The data directory (embedded sled).
    #[arg(long, env = "TASKLEDGER_DATA", default_value = "./data")]
    pub data: PathBuf,
    /// Where to listen.
    #[arg(long, env = "TASKLEDGER_ADDR", default_value = "127.0.0.1:8080")]
    pub addr: SocketAddr,
    /// Token for `/api/v1/admin/*` and `/metrics` (X-Admin-Token). Unset:
    /// those routes answer 404.
    #[arg(long, env = "TASKLEDGER_ADMIN_TOKEN", hide_env_values = true)]
    pub admin_token: Option<String>,
    /// Gift credits granted at registration.
    #[arg(long, env = "TASKLEDGER_SIGNUP_GIFT", default_value_t = 1000)]
    pub signup_gift: u64,
    /// How long a claim holds before it is released.
    #[arg(long, env = "TASKLEDGER_LEASE_SECS", default_value_t = 1800)]
    pub lease_secs: u64,
    /// Requests per minute per principal (per client address for
    /// registration); 0 turns rate limiting off.
    #[arg(long, env = "TASKLEDGER_RATE_LIMIT_PER_MIN", default_value_t = 600)]
    pub rate_limit_per_min: u32,
    /// Largest request body accepted.
    #[arg(long, env = "TASKLEDGER_BODY_LIMIT_BYTES", default_value_t = 2 * 1024 * 1024)]
    pub body_limit_bytes: usize,
    /// Log format.
    #[arg(long, env = "TASKLEDGER_LOG", value_enum, default_value = "text")]
    pub log: LogFormat,
    /// Let owners redeem earned credits.
    #[arg(long, env = "TASKLEDGER_REDEEM_ENABLED", default_value_t = false)]
    pub redeem_enabled: bool,
    /// How often the timers look for lapsed leases and deadlines.
    #[arg(long, env = "TASKLEDGER_TIMER_TICK_MS", default_value_t = 1000)]
    pub timer_tick_ms: u64,
    /// Concurrent `/api/v1/events` streams at most.
    #[arg(long, env = "TASKLEDGER_SSE_CLIENTS_MAX", default_value_t = 10_000)]
    pub sse_clients_max: usize,
    /// Seconds between SSE heartbeats.
    #[arg(long, env = "TASKLEDGER_SSE_HEARTBEAT_SECS", default_value_t = 15)]
    pub sse_heartbeat_secs: u64,
    /// `Host` values `/mcp` accepts (DNS-rebinding protection), comma-separated.
    #[arg(
        long,
        env = "TASKLEDGER_MCP_ALLOWED_HOSTS",
        value_delimiter = ',',
        default_value = "localhost,127.0.0.1,::1"
    )]
    pub mcp_allowed_hosts: Vec<String>,
    /// Concurrent MCP sessions (protocol 2025-11-25) at most.
    #[arg(long, env = "TASKLEDGER_MCP_SESSIONS_MAX", default_value_t = 1000)]
    pub mcp_sessions_max: usize,
    /// An MCP session idle this long is closed.
    #[arg(long, env = "TASKLEDGER_MCP_SESSION_IDLE_SECS", default_value_t = 300)]
    pub mcp_session_idle_secs: u64,
}

impl Default for Settings {
    fn default() -> Self {
        Settings {
            data: PathBuf::from("./data"),
            addr: SocketAddr::from(([127, 0, 0, 1], 8080)),
            admin_token: None,
            signup_gift: 1000,
            lease_secs: 1800,
            rate_limit_per_min: 600,
            body_limit_bytes: 2 * 1024 * 1024,
            log: LogFormat::Text,
            redeem_enabled: false,
            timer_tick_ms: 1000,
            sse_clients_max: 10_000,
            sse_heartbeat_secs: 15,
            mcp_allowed_hosts: vec!["localhost".into(), "127.0.0.1".into(), "::1".into()],
            mcp_sessions_max: 1000,
            mcp_session_idle_secs: 300,
        }
    }
}

impl Settings {
    pub fn policy(&self) -> Policy {
        Policy {
            signup_gift: self.signup_gift,
            lease_ms: self.lease_secs.saturating_mul(1000),
            redeem_enabled: self.redeem_enabled,
        }
    }
}
