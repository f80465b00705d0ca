//! Operator routes (`X-Admin-Token`): the conservation report and risk
//! review. With no admin token configured they answer 404.

use super::AppState;
use super::error::{ApiError, ApiResult};
use super::extract::Path;
use super::extract::{Body, IdempotencyKey, Operator, Query, parse_id};
use super::views::{self, FlagView};
use crate::commands::{Command, ConfirmFlag, ReleaseFlag};
use axum::Json;
use axum::extract::State;
use axum::http::StatusCode;
use serde::{Deserialize, Serialize};
use taskledger_events::{FlagId, Principal};
use taskledger_projections::FlagStatus;
use utoipa::ToSchema;

#[derive(Serialize, ToSchema)]
pub struct WalletTotals {
    pub gift: u64,
    pub earned: u64,
    pub frozen: u64,
}

#[derive(Serialize, ToSchema)]
pub struct Reconcile {
    /// Everything issued is in a wallet, an escrow or redeemed, and every
    /// task's escrow equals its unsettled reward.
    pub ok: bool,
    pub head_seq: u64,
    pub issued: u64,
    pub wallets: WalletTotals,
    pub escrow: u64,
    pub redeemed: u64,
    /// issued - (wallets + escrow + redeemed); 0 when ok.
    pub diff: i128,
    /// Tasks whose escrow differs from their unsettled reward.
    pub escrow_mismatches: usize,
}

/// The conservation report over balances and escrow: 200 when it holds,
/// 409 when it is broken.
#[utoipa::path(get, path = "/admin/reconcile", tag = "admin", security(("admin_token" = [])),
    responses((status = 200, body = Reconcile), (status = 409, body = Reconcile),
        (status = 404, body = ApiError)))]
pub async fn reconcile(
    State(app): State<AppState>,
    _op: Operator,
) -> ApiResult<(StatusCode, Json<Reconcile>)> {
    let state = app.service.read();
    let t = state.totals;
    // Recount from the entities, not from the running totals, so the
    // report checks the projection rather than echoing it.
    let (mut gift, mut earned, mut frozen) = (0u128, 0u128, 0u128);
    for o in state.owners.values() {
        gift += u128::from(o.wallet.gift);
        earned += u128::from(o.wallet.earned);
        frozen += u128::from(o.wallet.frozen);
    }
    let mut escrow = 0u128;
    let mut escrow_mismatches = 0;
    for task in state.tasks.values() {
        escrow += u128::from(task.escrow());
        if task.escrow() != task.unsettled_reward() {
            escrow_mismatches += 1;
        }
    }
    let held = gift + earned + frozen + escrow + u128::from(t.redeemed);
    let diff = i128::try_from(u128::from(t.issued)).unwrap_or(i128::MAX)
        - i128::try_from(held).unwrap_or(i128::MAX);
    let ok = diff == 0 && escrow_mismatches == 0 && t.balanced();
    let clamp = |v: u128| u64::try_from(v).unwrap_or(u64::MAX);
    let report = Reconcile {
        ok,
        head_seq: state.head_seq,
        issued: t.issued,
        wallets: WalletTotals {
            gift: clamp(gift),
            earned: clamp(earned),
            frozen: clamp(frozen),
        },
        escrow: clamp(escrow),
        redeemed: t.redeemed,
        diff,
        escrow_mismatches,
    };
    let status = if ok {
        StatusCode::OK
    } else {
        StatusCode::CONFLICT
    };
    Ok((status, Json(report)))
}

#[derive(Deserialize, utoipa::IntoParams)]
#[serde(deny_unknown_fields)]
pub struct FlagQuery {
    /// `open`, `released`, `confirmed` or `all` (default `open`).
    pub status: Option<String>,
}

#[derive(Serialize, ToSchema)]
pub struct FlagList {
    /// Oldest first.
    pub flags: Vec<FlagView>,
}

/// Risk flags by status.
#[utoipa::path(get, path = "/admin/risk-flags", tag = "admin", security(("admin_token" = [])),
    params(FlagQuery),
    responses((status = 200, body = FlagList), (status = 404, body = ApiError)))]
pub async fn risk_flags(
    State(app): State<AppState>,
    _op: Operator,
    Query(q): Query<FlagQuery>,
) -> ApiResult<Json<FlagList>> {
    let wanted = match q.status.as_deref().unwrap_or("open") {
        "all" => None,
        "open" => Some(FlagStatus::Open),
        "released" => Some(FlagStatus::Released),
        "confirmed" => Some(FlagStatus::Confirmed),
        _ => {
            return Err(ApiError::invalid(
                "status",
                "must be open, released, confirmed or all",
            ));
        }
    };
    let state = app.service.read();
    let mut flags: Vec<_> = state
        .flags
        .values()
        .filter(|f| wanted.is_none_or(|s| f.status == s))
        .collect();
    flags.sort_by_key(|f| f.raised_seq);
    Ok(Json(FlagList {
        flags: flags.into_iter().map(views::flag_view).collect(),
    }))
}

#[derive(Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct ResolveBody {
    /// Why; recorded in the log with the operator's name.
    pub reason: String,
}

impl ResolveBody {
    /// The command a flag resolution runs: release the hold or confirm it.
    pub fn into_command(self, flag_id: FlagId, release: bool) -> Command {
        let reason = self.reason;
        if release {
            Command::ReleaseFlag(ReleaseFlag { flag_id, reason })
        } else {
            Command::ConfirmFlag(ConfirmFlag { flag_id, reason })
        }
    }
}

async fn resolve(
    app: AppState,
    op: Operator,
    raw: String,
    idem: IdempotencyKey,
    body: Body<ResolveBody>,
    release: bool,
) -> ApiResult<Json<FlagView>> {
    let flag_id: FlagId = parse_id(&raw, "id")?;
    let command = body.value.into_command(flag_id, release);
    app.service
        .execute(
            Principal::Operator(op.0),
            idem.with(body.fingerprint),
            command,
        )
        .await?;
    let state = app.service.read();
    state
        .flags
        .get(&flag_id)
        .map(|f| Json(views::flag_view(f)))
        .ok_or_else(|| ApiError::not_found(format!("risk flag {flag_id}")))
}

/// Release a hold: frozen credits go back to earned.
#[utoipa::path(post, path = "/admin/risk-flags/{id}/release", tag = "admin",
    security(("admin_token" = [])),
    params(("id" = uuid::Uuid, Path, description = "flag id")),
    request_body = ResolveBody,
    responses((status = 200, body = FlagView), (status = 404, body = ApiError),
        (status = 409, body = ApiError)))]
pub async fn release_flag(
    State(app): State<AppState>,
    op: Operator,
    idem: IdempotencyKey,
    Path(raw): Path<String>,
    body: Body<ResolveBody>,
) -> ApiResult<Json<FlagView>> {
    resolve(app, op, raw, idem, body, true).await
}

/// Confirm a hold: the credits stay frozen.
#[utoipa::path(post, path = "/admin/risk-flags/{id}/confirm", tag = "admin",
    security(("admin_token" = [])),
    params(("id" = uuid::Uuid, Path, description = "flag id")),
    request_body = ResolveBody,
    responses((status = 200, body = FlagView), (status = 404, body = ApiError),
        (status = 409, body = ApiError)))]
pub async fn confirm_flag(
    State(app): State<AppState>,
    op: Operator,
    idem: IdempotencyKey,
    Path(raw): Path<String>,
    body: Body<ResolveBody>,
) -> ApiResult<Json<FlagView>> {
    resolve(app, op, raw, idem, body, false).await
}
