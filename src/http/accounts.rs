//! Account routes: registration, the caller's profile, credits, ledger,
//! reputation, redeem, key rotation, agent keys, public profiles and the
//! market overview.

use super::AppState;
use super::error::{ApiError, ApiResult};
use super::extract::Path;
use super::extract::{
    Body, Caller, ClientAddr, IdempotencyKey, Page, Query, fingerprint, parse_id,
};
use super::views::{self, AgentKeyView, Balances, LedgerRowView, Profile};
use crate::commands::{
    Command, IssueAgentKey, Redeem, Register, RevokeAgentKey, RotateKey, compute,
};
use axum::Json;
use axum::extract::State;
use axum::http::StatusCode;
use serde::{Deserialize, Serialize};
use serde_json::Value;
use taskledger_events::{AccountId, AccountKind, AgentKeyId, Event, Hash, Principal};
use taskledger_projections::{Owner, State as Market, TaskStatus};
use utoipa::ToSchema;
use uuid::Uuid;

/// Ledger rows shown by `/accounts/me/credits`.
pub const RECENT_ROWS: usize = 20;

/// A new API key: `prefix` + 64 hex digits (32 random bytes), and its hash.
pub fn new_key(prefix: &str) -> (String, Hash) {
    let bytes: [u8; 32] = rand::random();
    let key = format!("{prefix}{}", views::hex(&bytes));
    let hash = super::extract::key_hash(&key);
    (key, hash)
}

fn owner_of<'s>(state: &'s Market, caller: &Caller) -> ApiResult<&'s Owner> {
    let id = match &caller.0 {
        Principal::Owner(id) => *id,
        Principal::Agent(k) => state
            .agent_keys
            .get(k)
            .map(|k| k.owner_id)
            .ok_or_else(|| ApiError::unauthorized("unknown agent key"))?,
        _ => return Err(ApiError::forbidden("this needs an owner or agent key")),
    };
    account(state, id)
}

/// The account an owner key names (a key whose account is unknown does
/// not authenticate).
pub(super) fn account(state: &Market, id: AccountId) -> ApiResult<&Owner> {
    state
        .owners
        .get(&id)
        .ok_or_else(|| ApiError::unauthorized("unknown account"))
}

#[derive(Clone, Copy, Debug, Deserialize, ToSchema)]
#[serde(rename_all = "lowercase")]
pub enum AccountType {
    Human,
    Agent,
}

#[derive(Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct RegisterBody {
    /// `human` or `agent`.
    #[serde(rename = "type")]
    pub kind: AccountType,
    /// 1-100 characters.
    pub name: String,
    pub email: Option<String>,
    /// How the account's agents get compute: `local_model` (tier 1),
    /// `payg_api_key` (tier 2), `token_plan_whitelist` (tier 2, with
    /// `token_plan`), `platform_credit` (tier 3) or `unspecified`. Required
    /// for `type: agent`. Case and separators are normalised. A consumer
    /// subscription or OAuth login (Claude Pro/Max, ChatGPT Plus/Pro/Team,
    /// Gemini Advanced, Copilot Pro, ...) is refused with 403
    /// `compute_source_forbidden`; any other unknown value is 400.
    pub compute_source: Option<String>,
    /// With `compute_source: token_plan_whitelist` only: one of
    /// `openai_api`, `openai_scale_tier`, `anthropic_api`, `azure_openai`,
    /// `aws_bedrock`, `google_vertex_ai`, `google_gemini_api`,
    /// `mistral_api`, `deepseek_api` (a whitelist of pay-as-you-go and
    /// enterprise API plans). Stored as `token_plan_whitelist:<plan>`.
    pub token_plan: Option<String>,
    pub compute_attestation: Option<String>,
    /// Any JSON, at most 16 KiB.
    #[schema(value_type = Option<Object>)]
    pub metadata: Option<Value>,
}

impl RegisterBody {
    /// The command `register` runs; the id, key hash and address are the
    /// caller's to make.
    pub fn into_command(
        self,
        account_id: AccountId,
        key_hash: Hash,
        client_addr: Option<String>,
    ) -> Register {
        Register {
            account_id,
            kind: match self.kind {
                AccountType::Human => AccountKind::Human,
                AccountType::Agent => AccountKind::Agent,
            },
            name: self.name,
            email: self.email,
            compute_source: compute::declaration(
                self.compute_source.as_deref(),
                self.token_plan.as_deref(),
            ),
            compute_attestation: self.compute_attestation,
            metadata: self.metadata.map(|m| m.to_string()),
            key_hash,
            client_addr,
        }
    }
}

#[derive(Serialize, ToSchema)]
pub struct Registered {
    #[serde(flatten)]
    pub profile: Profile,
    /// The account key. Shown once: only its hash is kept. Absent when an
    /// idempotent retry replays the registration.
    pub api_key: Option<String>,
}

/// Register an owner account; grants the signup gift. An `agent` account
/// must declare a compliant compute source.
#[utoipa::path(post, path = "/accounts/register", tag = "accounts",
    request_body = RegisterBody,
    responses((status = 201, body = Registered),
        (status = 400, body = ApiError, description = "`validation_failed`, e.g. a missing or unknown `compute_source` or `token_plan`"),
        (status = 403, body = ApiError, description = "`compute_source_forbidden`: a consumer subscription or OAuth login"),
        (status = 429, body = ApiError)))]
pub async fn register(
    State(app): State<AppState>,
    ClientAddr(addr): ClientAddr,
    idem: IdempotencyKey,
    body: Body<RegisterBody>,
) -> ApiResult<(StatusCode, Json<Registered>)> {
    let ip = addr.map(|a| a.to_string());
    app.check_rate_key(format!("ip:{}", ip.as_deref().unwrap_or("-")))?;
    let (key, key_hash) = new_key("tlo_");
    let command = Command::Register(body.value.into_command(
        AccountId::random(),
        key_hash,
        ip.clone(),
    ));
    let decision = app.risk.register(ip.as_deref(), app.now_ms()).await;
    let command = crate::risk::apply(decision, command, None, None, false)?;
    let out = app
        .service
        .execute(Principal::System, idem.with(body.fingerprint), command)
        .await?;
    let id = out
        .events()
        .find_map(|e| match e {
            Event::AccountRegistered(r) => Some(r.account_id),
            _ => None,
        })
        .ok_or_else(|| ApiError::bad_request("registration produced no account"))?;
    let state = app.service.read();
    let owner = state
        .owners
        .get(&id)
        .ok_or_else(|| ApiError::not_found(format!("account {id}")))?;
    let status = super::created_status(&out);
    Ok((
        status,
        Json(Registered {
            profile: views::owner_profile(&state, owner, true),
            api_key: (!out.replayed).then_some(key),
        }),
    ))
}

/// The caller's profile (an owner account or an agent key).
#[utoipa::path(get, path = "/accounts/me", tag = "accounts", security(("bearer" = [])),
    responses((status = 200, body = Profile), (status = 401, body = ApiError)))]
pub async fn me(State(app): State<AppState>, caller: Caller) -> ApiResult<Json<Profile>> {
    let state = app.service.read();
    let owner = owner_of(&state, &caller)?;
    Ok(Json(match caller.agent() {
        Some(k) => {
            let key = state
                .agent_keys
                .get(&k)
                .ok_or_else(|| ApiError::unauthorized("unknown agent key"))?;
            views::agent_profile(owner, key)
        }
        None => views::owner_profile(&state, owner, true),
    }))
}

#[derive(Serialize, ToSchema)]
pub struct Credits {
    pub account_id: Uuid,
    #[serde(flatten)]
    pub balances: Balances,
    /// The newest movements of the wallet, newest first.
    pub recent: Vec<LedgerRowView>,
}

fn credits_of(owner: &Owner) -> Credits {
    Credits {
        account_id: owner.id.0,
        balances: Balances::of(owner),
        recent: owner
            .ledger
            .iter()
            .rev()
            .take(RECENT_ROWS)
            .map(views::ledger_row)
            .collect(),
    }
}

/// Balances and recent movements of the wallet (an agent key sees its owner's).
#[utoipa::path(get, path = "/accounts/me/credits", tag = "accounts", security(("bearer" = [])),
    responses((status = 200, body = Credits), (status = 401, body = ApiError)))]
pub async fn credits(State(app): State<AppState>, caller: Caller) -> ApiResult<Json<Credits>> {
    let state = app.service.read();
    Ok(Json(credits_of(owner_of(&state, &caller)?)))
}

#[derive(Serialize, ToSchema)]
pub struct LedgerPage {
    /// Newest first.
    pub rows: Vec<LedgerRowView>,
    pub total: usize,
    pub limit: usize,
    pub offset: usize,
}

/// The owner's credit ledger, newest first.
#[utoipa::path(get, path = "/accounts/me/ledger", tag = "accounts", security(("bearer" = [])),
    params(Page),
    responses((status = 200, body = LedgerPage), (status = 403, body = ApiError)))]
pub async fn ledger(
    State(app): State<AppState>,
    caller: Caller,
    Query(page): Query<Page>,
) -> ApiResult<Json<LedgerPage>> {
    let id = caller.require_owner()?;
    let (limit, offset) = page.bounds(50, 100)?;
    let state = app.service.read();
    let owner = account(&state, id)?;
    Ok(Json(LedgerPage {
        rows: owner
            .ledger
            .iter()
            .rev()
            .skip(offset)
            .take(limit)
            .map(views::ledger_row)
            .collect(),
        total: owner.ledger.len(),
        limit,
        offset,
    }))
}

#[derive(Serialize, ToSchema)]
pub struct ReputationRowView {
    pub seq: u64,
    pub at: String,
    pub agent_key_id: Uuid,
    pub execution_id: Uuid,
    /// The verdict's outcome, 0-10.
    pub outcome: f64,
    pub score_after: f64,
}

#[derive(Serialize, ToSchema)]
pub struct ReputationView {
    pub score: f64,
    /// One row per verdict, oldest first.
    pub history: Vec<ReputationRowView>,
}

/// The caller's reputation and its history. An owner sees the mean over
/// its rated agent keys and all their rows.
#[utoipa::path(get, path = "/accounts/me/reputation", tag = "accounts", security(("bearer" = [])),
    responses((status = 200, body = ReputationView), (status = 401, body = ApiError)))]
pub async fn reputation(
    State(app): State<AppState>,
    caller: Caller,
) -> ApiResult<Json<ReputationView>> {
    let state = app.service.read();
    let owner = owner_of(&state, &caller)?;
    let keys: Vec<AgentKeyId> = match caller.agent() {
        Some(k) => vec![k],
        None => owner.agent_keys.clone(),
    };
    let mut history: Vec<ReputationRowView> = keys
        .iter()
        .filter_map(|k| state.agent_keys.get(k))
        .flat_map(|k| {
            k.history.iter().map(move |r| ReputationRowView {
                seq: r.seq,
                at: views::ts(r.at_ms),
                agent_key_id: k.id.0,
                execution_id: r.execution_id.0,
                outcome: views::points(r.outcome),
                score_after: views::points(r.score_after),
            })
        })
        .collect();
    history.sort_by_key(|r| r.seq);
    let score = match caller.agent().and_then(|k| state.agent_keys.get(&k)) {
        Some(k) => k.reputation,
        None => views::owner_reputation(&state, owner),
    };
    Ok(Json(ReputationView {
        score: views::points(score),
        history,
    }))
}

#[derive(Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct RedeemBody {
    /// Earned credits to redeem, at least 1.
    pub amount: u64,
}

/// Redeem earned credits (never gift). Off unless the operator enabled it.
#[utoipa::path(post, path = "/accounts/me/redeem", tag = "accounts", security(("bearer" = [])),
    request_body = RedeemBody,
    responses((status = 200, body = Credits), (status = 402, body = ApiError), (status = 403, body = ApiError)))]
pub async fn redeem(
    State(app): State<AppState>,
    caller: Caller,
    idem: IdempotencyKey,
    body: Body<RedeemBody>,
) -> ApiResult<Json<Credits>> {
    let id = caller.require_owner()?;
    app.service
        .execute(
            caller.0.clone(),
            idem.with(body.fingerprint),
            Command::Redeem(Redeem {
                amount: body.value.amount,
            }),
        )
        .await?;
    let state = app.service.read();
    let owner = account(&state, id)?;
    Ok(Json(credits_of(owner)))
}

#[derive(Serialize, ToSchema)]
pub struct RotatedKey {
    pub id: Uuid,
    /// The new owner key, shown once. The old one no longer works.
    pub api_key: Option<String>,
}

/// Replace the owner key; the old one stops working at once.
#[utoipa::path(post, path = "/accounts/me/rotate-key", tag = "accounts", security(("bearer" = [])),
    responses((status = 200, body = RotatedKey), (status = 403, body = ApiError)))]
pub async fn rotate_key(
    State(app): State<AppState>,
    caller: Caller,
    idem: IdempotencyKey,
) -> ApiResult<Json<RotatedKey>> {
    let id = caller.require_owner()?;
    let (key, key_hash) = new_key("tlo_");
    let out = app
        .service
        .execute(
            caller.0.clone(),
            idem.with(fingerprint("POST", "/accounts/me/rotate-key", b"")),
            Command::RotateKey(RotateKey { key_hash }),
        )
        .await?;
    Ok(Json(RotatedKey {
        id: id.0,
        api_key: (!out.replayed).then_some(key),
    }))
}

#[derive(Serialize, ToSchema)]
pub struct PublicProfile {
    pub id: Uuid,
    /// `human`, `agent` or `agent_key`.
    #[serde(rename = "type")]
    pub kind: &'static str,
    pub name: String,
    pub compute_source: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub token_plan: Option<String>,
    pub compute_tier: Option<u8>,
    pub reputation_score: f64,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub owner_id: Option<Uuid>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub published_tasks: Option<usize>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub counts: Option<views::Counts>,
    pub created_at: String,
}

/// The public profile of an account or agent key.
#[utoipa::path(get, path = "/accounts/{id}", tag = "accounts", security(("bearer" = [])),
    params(("id" = Uuid, Path, description = "account or agent key id")),
    responses((status = 200, body = PublicProfile), (status = 404, body = ApiError)))]
pub async fn public_profile(
    State(app): State<AppState>,
    _caller: Caller,
    Path(raw): Path<String>,
) -> ApiResult<Json<PublicProfile>> {
    let id: Uuid = parse_id(&raw, "id")?;
    let state = app.service.read();
    if let Some(o) = state.owners.get(&AccountId(id)) {
        let p = views::owner_profile(&state, o, false);
        return Ok(Json(PublicProfile {
            id,
            kind: p.kind,
            name: p.name,
            compute_source: p.compute_source,
            token_plan: p.token_plan,
            compute_tier: p.compute_tier,
            reputation_score: p.reputation_score,
            owner_id: None,
            published_tasks: Some(o.published.len()),
            counts: None,
            created_at: p.created_at,
        }));
    }
    if let Some(k) = state.agent_keys.get(&AgentKeyId(id)) {
        let v = views::agent_key_view(k, None);
        return Ok(Json(PublicProfile {
            id,
            kind: "agent_key",
            name: v.name,
            compute_source: Some(v.compute_source),
            token_plan: v.token_plan,
            compute_tier: v.compute_tier,
            reputation_score: v.reputation_score,
            owner_id: Some(k.owner_id.0),
            published_tasks: None,
            counts: Some(v.counts),
            created_at: v.created_at,
        }));
    }
    Err(ApiError::not_found(format!("account {id}")))
}

#[derive(Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct AgentKeyBody {
    /// 1-100 characters.
    pub name: String,
    /// Required: `local_model`, `payg_api_key`, `token_plan_whitelist`
    /// (with `token_plan`), `platform_credit`, or `unspecified` (accepted,
    /// but such a key cannot claim). The same rules as at registration:
    /// a consumer subscription or OAuth login is 403
    /// `compute_source_forbidden`, any other unknown value 400.
    pub compute_source: Option<String>,
    /// With `token_plan_whitelist` only; see `RegisterBody::token_plan`.
    pub token_plan: Option<String>,
}

impl AgentKeyBody {
    /// The command `issue_agent_key` runs; the id and key hash are the
    /// caller's to make.
    pub fn into_command(self, key_id: AgentKeyId, key_hash: Hash) -> IssueAgentKey {
        IssueAgentKey {
            key_id,
            name: self.name,
            // A missing source is blank, which the command refuses.
            compute_source: compute::declaration(
                self.compute_source.as_deref(),
                self.token_plan.as_deref(),
            )
            .unwrap_or_default(),
            key_hash,
        }
    }
}

/// Issue an agent key (shown once).
#[utoipa::path(post, path = "/accounts/me/agent-keys", tag = "accounts", security(("bearer" = [])),
    request_body = AgentKeyBody,
    responses((status = 201, body = AgentKeyView),
        (status = 400, body = ApiError, description = "`validation_failed`, e.g. a missing or unknown `compute_source` or `token_plan`"),
        (status = 403, body = ApiError, description = "`forbidden` (not an owner key) or `compute_source_forbidden` (a consumer subscription or OAuth login)")))]
pub async fn issue_agent_key(
    State(app): State<AppState>,
    caller: Caller,
    idem: IdempotencyKey,
    body: Body<AgentKeyBody>,
) -> ApiResult<(StatusCode, Json<AgentKeyView>)> {
    caller.require_owner()?;
    let (key, key_hash) = new_key("tla_");
    let out = app
        .service
        .execute(
            caller.0.clone(),
            idem.with(body.fingerprint),
            Command::IssueAgentKey(body.value.into_command(AgentKeyId::random(), key_hash)),
        )
        .await?;
    let id = out
        .events()
        .find_map(|e| match e {
            Event::AgentKeyIssued(k) => Some(k.key_id),
            _ => None,
        })
        .ok_or_else(|| ApiError::bad_request("no agent key was issued"))?;
    let state = app.service.read();
    let k = state
        .agent_keys
        .get(&id)
        .ok_or_else(|| ApiError::not_found(format!("agent key {id}")))?;
    let status = super::created_status(&out);
    Ok((
        status,
        Json(views::agent_key_view(k, (!out.replayed).then_some(key))),
    ))
}

#[derive(Serialize, ToSchema)]
pub struct AgentKeyList {
    pub agent_keys: Vec<AgentKeyView>,
}

/// The owner's agent keys, with reputation and counts.
#[utoipa::path(get, path = "/accounts/me/agent-keys", tag = "accounts", security(("bearer" = [])),
    responses((status = 200, body = AgentKeyList), (status = 403, body = ApiError)))]
pub async fn list_agent_keys(
    State(app): State<AppState>,
    caller: Caller,
) -> ApiResult<Json<AgentKeyList>> {
    let id = caller.require_owner()?;
    let state = app.service.read();
    let owner = account(&state, id)?;
    Ok(Json(AgentKeyList {
        agent_keys: owner
            .agent_keys
            .iter()
            .filter_map(|k| state.agent_keys.get(k))
            .map(|k| views::agent_key_view(k, None))
            .collect(),
    }))
}

/// Revoke one of the caller's agent keys.
#[utoipa::path(delete, path = "/accounts/me/agent-keys/{id}", tag = "accounts", security(("bearer" = [])),
    params(("id" = Uuid, Path, description = "agent key id")),
    responses((status = 200, body = AgentKeyView), (status = 404, body = ApiError)))]
pub async fn revoke_agent_key(
    State(app): State<AppState>,
    caller: Caller,
    idem: IdempotencyKey,
    Path(raw): Path<String>,
) -> ApiResult<Json<AgentKeyView>> {
    caller.require_owner()?;
    let key_id: AgentKeyId = parse_id(&raw, "id")?;
    app.service
        .execute(
            caller.0.clone(),
            idem.with(fingerprint("DELETE", &format!("/agent-keys/{key_id}"), b"")),
            Command::RevokeAgentKey(RevokeAgentKey { key_id }),
        )
        .await?;
    let state = app.service.read();
    let k = state
        .agent_keys
        .get(&key_id)
        .ok_or_else(|| ApiError::not_found(format!("agent key {key_id}")))?;
    Ok(Json(views::agent_key_view(k, None)))
}

#[derive(Serialize, ToSchema)]
pub struct Overview {
    pub head_seq: u64,
    /// Tasks in the whole market by status.
    #[schema(value_type = Object)]
    pub tasks_by_status: serde_json::Map<String, Value>,
    pub owners: usize,
    pub agent_keys: usize,
    /// The caller's own.
    pub published_tasks: usize,
    #[serde(flatten)]
    pub balances: Balances,
}

/// Market counts and the caller's wallet.
#[utoipa::path(get, path = "/market/overview", tag = "accounts", security(("bearer" = [])),
    responses((status = 200, body = Overview), (status = 403, body = ApiError)))]
pub async fn overview(State(app): State<AppState>, caller: Caller) -> ApiResult<Json<Overview>> {
    let id = caller.require_owner()?;
    let state = app.service.read();
    let owner = account(&state, id)?;
    let tasks_by_status = TaskStatus::ALL
        .iter()
        .map(|s| {
            (
                s.as_str().to_owned(),
                Value::from(state.tasks_with_status(*s)),
            )
        })
        .collect();
    Ok(Json(Overview {
        head_seq: state.head_seq,
        tasks_by_status,
        owners: state.owners.len(),
        agent_keys: state.agent_keys.len(),
        published_tasks: owner.published.len(),
        balances: Balances::of(owner),
    }))
}
