//! `taskledger flags list|release|confirm`: operator review of risk holds
//! from the command line, against a data dir or a running server.
//!
//! Against a data dir the commands go through the same path as the server:
//! the store is opened, the [`Service`] replays it and its single writer
//! decides and appends `ReleaseFlag` / `ConfirmFlag` as
//! `Principal::Operator(name)`. sled locks the data dir, so while a server
//! holds it this refuses with [`FlagsError::InUse`] rather than waiting.
//! Against a server the commands call the admin routes
//! (`/api/v1/admin/risk-flags...`) with `X-Admin-Token`, naming the
//! operator in `X-Operator-Name`. Both answer the same [`FlagRow`]s and the
//! same refusals (the API's `code` and message). This module never prints:
//! the binary renders the rows and maps errors to exit codes.

use crate::clock::SystemClock;
use crate::commands::{Command, ConfirmFlag, Policy, ReleaseFlag};
use crate::http::views::{self, FlagView};
use crate::service::{OpenError, Service, load_state};
use serde::{Deserialize, Serialize};
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;
use taskledger_events::{FlagId, Principal, SledStore};
use taskledger_projections::{FlagStatus, State};

/// Longest operator name, as the HTTP edge accepts in `X-Operator-Name`.
pub const OPERATOR_CHARS_MAX: usize = 100;
/// How long a call to a server may take before the command gives up.
pub const SERVER_TIMEOUT_MS: u64 = 30_000;

/// Where the flags live.
#[derive(Clone, Debug)]
pub enum Target {
    /// A data dir, opened in-process (no server may hold it).
    Data(PathBuf),
    /// A running server: its base URL (with or without `/api/v1`) and the
    /// admin token.
    Server { url: String, admin_token: String },
}

/// Which flags `list` shows.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, clap::ValueEnum)]
pub enum StatusFilter {
    #[default]
    Open,
    Released,
    Confirmed,
    All,
}

impl StatusFilter {
    /// The `?status=` value of the admin route.
    pub fn as_str(self) -> &'static str {
        match self {
            StatusFilter::Open => "open",
            StatusFilter::Released => "released",
            StatusFilter::Confirmed => "confirmed",
            StatusFilter::All => "all",
        }
    }

    fn wants(self, status: FlagStatus) -> bool {
        match self {
            StatusFilter::Open => status == FlagStatus::Open,
            StatusFilter::Released => status == FlagStatus::Released,
            StatusFilter::Confirmed => status == FlagStatus::Confirmed,
            StatusFilter::All => true,
        }
    }
}

/// What an operator decides about an open flag.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Resolution {
    /// Frozen credits go back to earned.
    Release,
    /// The credits stay frozen.
    Confirm,
}

/// One flag as the admin routes show it (`FlagView`), owned so it can be
/// read back from a server's JSON too.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct FlagRow {
    pub id: uuid::Uuid,
    pub kind: String,
    pub owner_id: uuid::Uuid,
    pub task_id: Option<uuid::Uuid>,
    pub reason: String,
    pub frozen: u64,
    pub status: String,
    pub raised_seq: u64,
    pub raised_at: String,
    pub resolved_by: Option<String>,
    pub resolution_reason: Option<String>,
    pub resolved_at: Option<String>,
}

impl From<FlagView> for FlagRow {
    fn from(v: FlagView) -> Self {
        FlagRow {
            id: v.id,
            kind: v.kind.to_owned(),
            owner_id: v.owner_id,
            task_id: v.task_id,
            reason: v.reason,
            frozen: v.frozen,
            status: v.status.to_owned(),
            raised_seq: v.raised_seq,
            raised_at: v.raised_at,
            resolved_by: v.resolved_by,
            resolution_reason: v.resolution_reason,
            resolved_at: v.resolved_at,
        }
    }
}

/// `list --json`: the admin route's shape, `{"flags": [...]}`.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct FlagList {
    /// Oldest first.
    pub flags: Vec<FlagRow>,
}

/// Why a flags command did nothing.
#[derive(Debug, thiserror::Error)]
pub enum FlagsError {
    /// The market refused: the API's stable code and message (`conflict`
    /// for an already resolved flag, `not_found`, `unauthorized`, ...).
    #[error("{code}: {message}")]
    Refused { code: String, message: String },
    /// Another process (a server) holds the data dir's lock.
    #[error("the data dir {} is in use (is a server running? use --url)", .0.display())]
    InUse(PathBuf),
    /// The data dir could not be opened or replayed.
    #[error("cannot open the data dir {}: {reason}", .dir.display())]
    Open { dir: PathBuf, reason: String },
    /// The server could not be reached or answered something unreadable.
    #[error("{0}")]
    Server(String),
}

impl FlagsError {
    /// The stable code for a refusal, else a code naming the failure.
    pub fn code(&self) -> &str {
        match self {
            FlagsError::Refused { code, .. } => code,
            FlagsError::InUse(_) => "in_use",
            FlagsError::Open { .. } => "unavailable",
            FlagsError::Server(_) => "unavailable",
        }
    }
}

/// The flags with `status`, oldest first.
pub fn list(target: &Target, status: StatusFilter) -> Result<Vec<FlagRow>, FlagsError> {
    match target {
        Target::Data(dir) => {
            let store = open_store(dir)?;
            let (state, _) = load_state(&store).map_err(|e| open_failed(dir, e))?;
            Ok(rows(&state, status))
        }
        Target::Server { url, admin_token } => {
            let client = Client::new(url, admin_token, None)?;
            runtime()?.block_on(client.list(status))
        }
    }
}

/// Release or confirm flag `id` as operator `operator`, for `reason`.
/// Answers the flag as it is afterwards.
pub fn resolve(
    target: &Target,
    id: FlagId,
    resolution: Resolution,
    operator: &str,
    reason: &str,
) -> Result<FlagRow, FlagsError> {
    let operator = operator.trim();
    if operator.is_empty() || operator.chars().count() > OPERATOR_CHARS_MAX {
        return Err(FlagsError::Refused {
            code: "validation_failed".into(),
            message: format!("operator: must be 1..={OPERATOR_CHARS_MAX} characters"),
        });
    }
    match target {
        Target::Data(dir) => resolve_in_dir(dir, id, resolution, operator, reason),
        Target::Server { url, admin_token } => {
            let client = Client::new(url, admin_token, Some(operator))?;
            runtime()?.block_on(client.resolve(id, resolution, reason))
        }
    }
}

/// The flags of `state` with `status`, oldest first (as the admin route).
pub fn rows(state: &State, status: StatusFilter) -> Vec<FlagRow> {
    let mut flags: Vec<_> = state
        .flags
        .values()
        .filter(|f| status.wants(f.status))
        .collect();
    flags.sort_by_key(|f| f.raised_seq);
    flags
        .into_iter()
        .map(|f| views::flag_view(f).into())
        .collect()
}

/// A plain-text table of `rows`, one line each, with a header.
pub fn table(rows: &[FlagRow]) -> String {
    let header = [
        "ID",
        "KIND",
        "OWNER",
        "TASK",
        "FROZEN",
        "STATUS",
        "REASON",
        "RAISED AT",
    ];
    let mut lines: Vec<[String; 8]> = vec![header.map(str::to_owned)];
    for r in rows {
        lines.push([
            r.id.to_string(),
            r.kind.clone(),
            r.owner_id.to_string(),
            r.task_id.map_or_else(|| "-".to_owned(), |t| t.to_string()),
            r.frozen.to_string(),
            r.status.clone(),
            one_line(&r.reason),
            r.raised_at.clone(),
        ]);
    }
    let mut widths = [0usize; 8];
    for line in &lines {
        for (w, cell) in widths.iter_mut().zip(line) {
            *w = (*w).max(cell.chars().count());
        }
    }
    let mut out = String::new();
    for line in &lines {
        let cells: Vec<String> = line
            .iter()
            .zip(widths)
            .enumerate()
            .map(|(i, (cell, w))| {
                // Numbers right-aligned; the last column is not padded.
                if i == 4 {
                    format!("{cell:>w$}")
                } else if i == 7 {
                    cell.clone()
                } else {
                    format!("{cell:<w$}")
                }
            })
            .collect();
        out.push_str(&cells.join("  "));
        out.push('\n');
    }
    out
}

/// The flag after a resolution, in one readable line.
pub fn summary(row: &FlagRow) -> String {
    format!(
        "flag {} is {} (by {}: {}); {} credits {}",
        row.id,
        row.status,
        row.resolved_by.as_deref().unwrap_or("-"),
        one_line(row.resolution_reason.as_deref().unwrap_or("-")),
        row.frozen,
        if row.status == "released" {
            "back to earned"
        } else {
            "stay frozen"
        }
    )
}

/// Reasons are free text: keep a table row on one line.
fn one_line(text: &str) -> String {
    text.split_whitespace().collect::<Vec<_>>().join(" ")
}

fn runtime() -> Result<tokio::runtime::Runtime, FlagsError> {
    tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .map_err(|e| FlagsError::Server(format!("cannot start a runtime: {e}")))
}

/// Open the store, telling "a server holds it" apart from other failures.
/// sled retries its lock for `OPEN_LOCK_WAIT_MS` before giving up.
fn open_store(dir: &Path) -> Result<SledStore, FlagsError> {
    if !dir.join("conf").exists() && !dir.join("db").exists() {
        // Do not create a market where the operator mistyped a path.
        return Err(FlagsError::Open {
            dir: dir.to_path_buf(),
            reason: "no taskledger data there".into(),
        });
    }
    SledStore::open(dir).map_err(|e| {
        if e.is_locked() {
            FlagsError::InUse(dir.to_path_buf())
        } else {
            FlagsError::Open {
                dir: dir.to_path_buf(),
                reason: e.to_string(),
            }
        }
    })
}

fn open_failed(dir: &Path, e: OpenError) -> FlagsError {
    FlagsError::Open {
        dir: dir.to_path_buf(),
        reason: e.to_string(),
    }
}

/// Run the command through an in-process service over the data dir, then
/// drain the writer (flush, snapshot) before returning.
fn resolve_in_dir(
    dir: &Path,
    flag_id: FlagId,
    resolution: Resolution,
    operator: &str,
    reason: &str,
) -> Result<FlagRow, FlagsError> {
    let store = open_store(dir)?;
    let (svc, writer) = Service::start(Box::new(store), Policy::default(), Arc::new(SystemClock))
        .map_err(|e| open_failed(dir, e))?;
    let reason = reason.to_owned();
    let command = match resolution {
        Resolution::Release => Command::ReleaseFlag(ReleaseFlag { flag_id, reason }),
        Resolution::Confirm => Command::ConfirmFlag(ConfirmFlag { flag_id, reason }),
    };
    let rt = runtime()?;
    let outcome = rt.block_on(svc.execute(Principal::Operator(operator.to_owned()), None, command));
    let row = outcome.map(|_| {
        svc.read()
            .flags
            .get(&flag_id)
            .map(|f| FlagRow::from(views::flag_view(f)))
    });
    let stopped = rt.block_on(svc.shutdown());
    drop(svc);
    let joined = writer.join();
    let row = row.map_err(|e| FlagsError::Refused {
        code: e.code().to_owned(),
        message: e.to_string(),
    })?;
    stopped.map_err(|e| FlagsError::Open {
        dir: dir.to_path_buf(),
        reason: format!("the writer did not stop cleanly: {e}"),
    })?;
    joined.map_err(|_| FlagsError::Open {
        dir: dir.to_path_buf(),
        reason: "the writer thread panicked".into(),
    })?;
    // Just decided on this flag, so it exists; say so rather than panic.
    row.ok_or_else(|| FlagsError::Refused {
        code: "not_found".into(),
        message: format!("risk flag {flag_id} not found"),
    })
}

/// A client of a server's admin routes.
struct Client {
    http: reqwest::Client,
    api: String,
    admin_token: String,
    operator: Option<String>,
}

/// The error body every non-success answer carries.
#[derive(Deserialize)]
struct ApiErrorBody {
    error: String,
    code: String,
}

impl Client {
    fn new(url: &str, admin_token: &str, operator: Option<&str>) -> Result<Self, FlagsError> {
        let http = reqwest::Client::builder()
            .timeout(Duration::from_millis(SERVER_TIMEOUT_MS))
            .build()
            .map_err(|e| FlagsError::Server(format!("cannot build an HTTP client: {e}")))?;
        let base = url.trim_end_matches('/');
        let api = if base.ends_with("/api/v1") {
            base.to_owned()
        } else {
            format!("{base}/api/v1")
        };
        Ok(Client {
            http,
            api,
            admin_token: admin_token.to_owned(),
            operator: operator.map(str::to_owned),
        })
    }

    async fn list(&self, status: StatusFilter) -> Result<Vec<FlagRow>, FlagsError> {
        let req = self
            .http
            .get(format!("{}/admin/risk-flags", self.api))
            .query(&[("status", status.as_str())]);
        let body: FlagList = self.send(req).await?;
        Ok(body.flags)
    }

    async fn resolve(
        &self,
        id: FlagId,
        resolution: Resolution,
        reason: &str,
    ) -> Result<FlagRow, FlagsError> {
        let action = match resolution {
            Resolution::Release => "release",
            Resolution::Confirm => "confirm",
        };
        let mut req = self
            .http
            .post(format!("{}/admin/risk-flags/{}/{action}", self.api, id.0))
            .json(&serde_json::json!({ "reason": reason }));
        if let Some(op) = &self.operator {
            req = req.header("x-operator-name", op);
        }
        self.send(req).await
    }

    async fn send<T: serde::de::DeserializeOwned>(
        &self,
        req: reqwest::RequestBuilder,
    ) -> Result<T, FlagsError> {
        let resp = req
            .header("x-admin-token", &self.admin_token)
            .send()
            .await
            .map_err(|e| FlagsError::Server(format!("cannot reach {}: {e}", self.api)))?;
        let status = resp.status();
        let text = resp
            .text()
            .await
            .map_err(|e| FlagsError::Server(format!("reading the answer: {e}")))?;
        if status.is_success() {
            return serde_json::from_str(&text).map_err(|e| {
                FlagsError::Server(format!("unexpected answer ({status}): {e}: {text}"))
            });
        }
        match serde_json::from_str::<ApiErrorBody>(&text) {
            Ok(body) => Err(FlagsError::Refused {
                code: body.code,
                message: body.error,
            }),
            Err(_) => Err(FlagsError::Server(format!(
                "{} answered {status}: {text}",
                self.api
            ))),
        }
    }
}
