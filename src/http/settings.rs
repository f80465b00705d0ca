//! Settings of `taskledger serve`: each a flag and a `TASKLEDGER_*`
//! environment variable, with the defaults operators rely on.

use crate::commands::Policy;
use crate::risk::{EngineKind, RiskSettings};
use crate::verify::llm::LlmSettings;
use crate::verify::pool::VerifySettings;
use crate::verify::sandbox;
use crate::writer::WriterSettings;
use std::net::SocketAddr;
use std::path::PathBuf;
use std::time::Duration;

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
    /// Automatic verifications (rules, sandboxed tests, LLM judge) at once.
    #[arg(long, env = "TASKLEDGER_VERIFY_WORKERS", default_value_t = 2)]
    pub verify_workers: usize,
    /// How long a submit to an automatic task waits for its verdict before
    /// it answers with the pending execution (the verdict still lands).
    #[arg(long, env = "TASKLEDGER_VERIFY_WAIT_MS", default_value_t = 30_000)]
    pub verify_wait_ms: u64,
    /// Wall-clock limit of an `auto_tests` run; past it, manual review.
    #[arg(long, env = "TASKLEDGER_TESTS_TIMEOUT_SECS", default_value_t = 15)]
    pub tests_timeout_secs: u64,
    /// Memory limit of an `auto_tests` run.
    #[arg(long, env = "TASKLEDGER_TESTS_MEMORY_MIB", default_value_t = 256)]
    pub tests_memory_mib: u64,
    /// OpenAI-compatible base URL of the `auto_llm` judge (`{url}/chat/completions`).
    /// Unset: `auto_llm` submissions fall back to manual review.
    #[arg(long, env = "TASKLEDGER_LLM_URL")]
    pub llm_url: Option<String>,
    /// Bearer key of the judge endpoint.
    #[arg(long, env = "TASKLEDGER_LLM_API_KEY", hide_env_values = true)]
    pub llm_api_key: Option<String>,
    /// The judge model.
    #[arg(long, env = "TASKLEDGER_LLM_MODEL", default_value = "gpt-4o-mini")]
    pub llm_model: String,
    /// Seconds a judge call may take.
    #[arg(long, env = "TASKLEDGER_LLM_TIMEOUT_SECS", default_value_t = 20)]
    pub llm_timeout_secs: u64,
    /// Rewards above this many credits need two judges, both passing.
    #[arg(long, env = "TASKLEDGER_LLM_TWO_JUDGES_ABOVE", default_value_t = 100)]
    pub llm_two_judges_above: u64,
    /// The judge may cost at most this percentage of the reward.
    #[arg(long, env = "TASKLEDGER_LLM_COST_CAP_PERCENT", default_value_t = 10)]
    pub llm_cost_cap_percent: u64,
    /// Risk engine: `none`, `local` (built-in rules) or `remote` (HTTP).
    #[arg(
        long,
        env = "TASKLEDGER_RISK_ENGINE",
        value_enum,
        default_value = "none"
    )]
    pub risk_engine: EngineKind,
    /// URL the remote risk engine is POSTed to.
    #[arg(long, env = "TASKLEDGER_RISK_REMOTE_URL")]
    pub risk_remote_url: Option<String>,
    /// Bearer key for the remote risk engine.
    #[arg(long, env = "TASKLEDGER_RISK_REMOTE_KEY", hide_env_values = true)]
    pub risk_remote_key: Option<String>,
    /// How long a remote risk check may take.
    #[arg(
        long,
        env = "TASKLEDGER_RISK_REMOTE_TIMEOUT_MS",
        default_value_t = 2000
    )]
    pub risk_remote_timeout_ms: u64,
    /// How often payouts held for an unreachable remote engine are re-checked.
    #[arg(long, env = "TASKLEDGER_RISK_RECHECK_MS", default_value_t = 60_000)]
    pub risk_recheck_ms: u64,
    /// Local rules: accounts younger than this many days ...
    #[arg(long, env = "TASKLEDGER_RISK_YOUNG_ACCOUNT_DAYS", default_value_t = 7)]
    pub risk_young_account_days: u64,
    /// ... may publish rewards of at most this many credits.
    #[arg(long, env = "TASKLEDGER_RISK_YOUNG_REWARD_CAP", default_value_t = 50)]
    pub risk_young_reward_cap: u64,
    /// Local rules: this many registrations from one address ...
    #[arg(long, env = "TASKLEDGER_RISK_SIGNUP_MAX", default_value_t = 3)]
    pub risk_signup_max: usize,
    /// ... within this many minutes raise `rapid_signup_cluster`.
    #[arg(long, env = "TASKLEDGER_RISK_SIGNUP_WINDOW_MINS", default_value_t = 30)]
    pub risk_signup_window_mins: u64,
    /// Local rules: completed tasks each way between two owners before a
    /// payout between them raises `collusion_suspected`.
    #[arg(long, env = "TASKLEDGER_RISK_RECIPROCAL_MIN", default_value_t = 2)]
    pub risk_reciprocal_min: usize,
    /// Reverse proxies in front of the server whose `X-Forwarded-For`
    /// entries are trusted: the client address is the entry this many
    /// places from the right. 0: the peer address of the connection.
    #[arg(long, env = "TASKLEDGER_TRUSTED_PROXY_HOPS", default_value_t = 0)]
    pub trusted_proxy_hops: usize,
    /// Store a projection snapshot every this many records, so a restart
    /// replays at most about this many; 0: only at shutdown.
    #[arg(
        long,
        env = "TASKLEDGER_SNAPSHOT_EVERY_RECORDS",
        default_value_t = crate::writer::SNAPSHOT_EVERY_RECORDS
    )]
    pub snapshot_every_records: u64,
    /// Serve reads only, refusing every write (503). Also serves a data dir
    /// whose log is damaged, from the records before the first bad one,
    /// which a normal start refuses to do.
    #[arg(long, env = "TASKLEDGER_READ_ONLY", default_value_t = false)]
    pub read_only: bool,
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
            verify_workers: 2,
            verify_wait_ms: 30_000,
            tests_timeout_secs: 15,
            tests_memory_mib: 256,
            llm_url: None,
            llm_api_key: None,
            llm_model: "gpt-4o-mini".into(),
            llm_timeout_secs: 20,
            llm_two_judges_above: 100,
            llm_cost_cap_percent: 10,
            risk_engine: EngineKind::None,
            risk_remote_url: None,
            risk_remote_key: None,
            risk_remote_timeout_ms: 2000,
            risk_recheck_ms: 60_000,
            risk_young_account_days: 7,
            risk_young_reward_cap: 50,
            risk_signup_max: 3,
            risk_signup_window_mins: 30,
            risk_reciprocal_min: 2,
            trusted_proxy_hops: 0,
            snapshot_every_records: crate::writer::SNAPSHOT_EVERY_RECORDS,
            read_only: false,
        }
    }
}

impl Settings {
    pub fn risk(&self) -> RiskSettings {
        RiskSettings {
            engine: self.risk_engine,
            remote_url: self.risk_remote_url.clone(),
            remote_key: self.risk_remote_key.clone(),
            remote_timeout: Duration::from_millis(self.risk_remote_timeout_ms.max(1)),
            recheck_every: Duration::from_millis(self.risk_recheck_ms.max(10)),
            young_account: Duration::from_secs(self.risk_young_account_days.saturating_mul(86_400)),
            young_reward_cap: self.risk_young_reward_cap,
            signup_max: self.risk_signup_max.max(1),
            signup_window: Duration::from_secs(self.risk_signup_window_mins.saturating_mul(60)),
            reciprocal_min: self.risk_reciprocal_min.max(1),
        }
    }

    pub fn verify(&self) -> VerifySettings {
        let llm = self.llm_url.as_ref().map(|url| {
            let mut l = LlmSettings::new(url.clone(), self.llm_model.clone());
            l.api_key = self.llm_api_key.clone();
            l.timeout = Duration::from_secs(self.llm_timeout_secs.max(1));
            l.two_judges_above = self.llm_two_judges_above;
            l.cost_cap_percent = self.llm_cost_cap_percent;
            l
        });
        VerifySettings {
            workers: self.verify_workers.max(1),
            wait: Duration::from_millis(self.verify_wait_ms),
            tests: sandbox::Limits {
                wall: Duration::from_secs(self.tests_timeout_secs.max(1)),
                memory_bytes: self.tests_memory_mib.saturating_mul(1024 * 1024),
                ..sandbox::Limits::default()
            },
            llm,
        }
    }

    pub fn writer(&self) -> WriterSettings {
        WriterSettings {
            snapshot_every_records: self.snapshot_every_records,
        }
    }

    pub fn policy(&self) -> Policy {
        Policy {
            signup_gift: self.signup_gift,
            lease_ms: self.lease_secs.saturating_mul(1000),
            redeem_enabled: self.redeem_enabled,
        }
    }
}
