//! Request extractors: the JSON body (strict, with field-level errors), the
//! authenticated caller, the operator, the client address and the
//! idempotency key. Every refusal is an [`ApiError`].

use super::AppState;
use super::error::ApiError;
use crate::writer::Idempotency;
use axum::body::Bytes;
use axum::extract::rejection::BytesRejection;
use axum::extract::{ConnectInfo, FromRequest, FromRequestParts, Request};
use axum::http::StatusCode;
use axum::http::request::Parts;
use serde::de::DeserializeOwned;
use std::net::{IpAddr, SocketAddr};
use taskledger_events::{AccountId, AgentKeyId, Principal};

/// Longest idempotency key accepted.
pub const IDEMPOTENCY_KEY_CHARS_MAX: usize = 200;

/// A JSON body, parsed strictly. A declared Content-Type other than JSON,
/// bad syntax or anything after the JSON value is `bad_request`; a wrong
/// type, a missing or an unknown field is `validation_failed` naming the
/// field; a body over the limit is `too_large`. `fingerprint` identifies the
/// request (method, path, body) for idempotency.
pub struct Body<T> {
    pub value: T,
    pub fingerprint: [u8; 32],
}

impl<T: DeserializeOwned, S: Send + Sync> FromRequest<S> for Body<T> {
    type Rejection = ApiError;

    async fn from_request(req: Request, state: &S) -> Result<Self, Self::Rejection> {
        // A missing Content-Type is taken as JSON; a declared other one is
        // refused, so a browser form or a `text/plain` "simple request" from
        // another site cannot post to the API.
        if let Some(ct) = req.headers().get(axum::http::header::CONTENT_TYPE)
            && !is_json_content_type(ct)
        {
            return Err(ApiError::bad_request(
                "Content-Type must be application/json",
            ));
        }
        let method = req.method().clone();
        let path = req.uri().path().to_owned();
        let bytes = Bytes::from_request(req, state)
            .await
            .map_err(bytes_rejection)?;
        let fingerprint = fingerprint(method.as_str(), &path, &bytes);
        let value = parse_json(&bytes)?;
        Ok(Body { value, fingerprint })
    }
}

/// `application/json` or `application/<something>+json`, any parameters.
fn is_json_content_type(value: &axum::http::HeaderValue) -> bool {
    let Ok(text) = value.to_str() else {
        return false;
    };
    let mime = text
        .split(';')
        .next()
        .unwrap_or("")
        .trim()
        .to_ascii_lowercase();
    mime == "application/json" || (mime.starts_with("application/") && mime.ends_with("+json"))
}

fn bytes_rejection(e: BytesRejection) -> ApiError {
    if e.status() == StatusCode::PAYLOAD_TOO_LARGE {
        ApiError::new(
            StatusCode::PAYLOAD_TOO_LARGE,
            "too_large",
            "the request body is over the size limit",
        )
    } else {
        ApiError::bad_request(format!("cannot read the request body: {e}"))
    }
}

/// Parse a JSON body, naming the field at fault. Two passes, so that each
/// error has one meaning: the text must be exactly one JSON value (syntax,
/// UTF-8, nesting depth, no trailing bytes: `bad_request`), then it must
/// have the body's shape (`validation_failed` with the field's path;
/// serde_json alone reports some wrong types, e.g. a number for an enum, as
/// syntax). The second pass reads the text again rather than a parsed
/// `Value`, which would silently keep the last of two duplicate keys.
pub fn parse_json<T: DeserializeOwned>(bytes: &[u8]) -> Result<T, ApiError> {
    if bytes.is_empty() {
        return Err(ApiError::bad_request("a JSON body is required"));
    }
    // A full `Value`: `IgnoredAny` would skip strings unchecked (bad
    // escapes, lone surrogates) and nest without the recursion limit.
    serde_json::from_slice::<serde_json::Value>(bytes)
        .map_err(|e| ApiError::bad_request(format!("malformed JSON: {e}")))?;
    let mut de = serde_json::Deserializer::from_slice(bytes);
    serde_path_to_error::deserialize(&mut de).map_err(|e| {
        let path = e.path().to_string();
        let message = e.into_inner().to_string();
        ApiError::invalid(&field_at_fault(&path, &message), message)
    })
}

/// The field an error is about: the path serde reached, and for a missing
/// or repeated field (reported at its parent) the field's own name.
fn field_at_fault(path: &str, message: &str) -> String {
    let named = ["missing field `", "duplicate field `"]
        .iter()
        .find_map(|p| message.strip_prefix(p))
        .and_then(|rest| rest.split('`').next());
    match (path, named) {
        (".", Some(name)) => name.to_owned(),
        (".", None) => "body".to_owned(),
        (parent, Some(name)) => format!("{parent}.{name}"),
        (parent, None) => parent.to_owned(),
    }
}

/// What identifies a request for idempotency: method, path and body.
pub fn fingerprint(method: &str, path: &str, body: &[u8]) -> [u8; 32] {
    let mut h = blake3::Hasher::new();
    h.update(method.as_bytes());
    h.update(&[0]);
    h.update(path.as_bytes());
    h.update(&[0]);
    h.update(body);
    *h.finalize().as_bytes()
}

/// The `Idempotency-Key` header, if any.
pub struct IdempotencyKey(pub Option<String>);

impl IdempotencyKey {
    pub fn with(self, fingerprint: [u8; 32]) -> Option<Idempotency> {
        self.0.map(|key| Idempotency {
            key,
            request_hash: fingerprint,
        })
    }
}

impl<S: Send + Sync> FromRequestParts<S> for IdempotencyKey {
    type Rejection = ApiError;

    async fn from_request_parts(parts: &mut Parts, _: &S) -> Result<Self, Self::Rejection> {
        let Some(v) = parts.headers.get("idempotency-key") else {
            return Ok(IdempotencyKey(None));
        };
        let key = v
            .to_str()
            .map_err(|_| ApiError::invalid("Idempotency-Key", "must be visible ASCII"))?
            .trim();
        if key.is_empty() || key.chars().count() > IDEMPOTENCY_KEY_CHARS_MAX {
            return Err(ApiError::invalid(
                "Idempotency-Key",
                format!("must be 1..={IDEMPOTENCY_KEY_CHARS_MAX} characters"),
            ));
        }
        Ok(IdempotencyKey(Some(key.to_owned())))
    }
}

/// The key a request carries: `Authorization: Bearer <key>` or
/// `X-Market-Api-Key: <key>`.
/// A header sent more than once counts as no key: which copy is meant is
/// ambiguous, and a proxy might act on another one than we do.
pub fn presented_key(parts: &Parts) -> Option<&str> {
    let single = |name| {
        let mut all = parts.headers.get_all(name).iter();
        match (all.next(), all.next()) {
            (Some(v), None) => Ok(Some(v)),
            (None, _) => Ok(None),
            (Some(_), Some(_)) => Err(()),
        }
    };
    if let Some(v) = single("x-market-api-key").ok()? {
        return v.to_str().ok().map(str::trim);
    }
    let v = single(axum::http::header::AUTHORIZATION.as_str()).ok()??;
    let v = v.to_str().ok()?.trim();
    let (scheme, rest) = v.split_once(' ')?;
    scheme.eq_ignore_ascii_case("bearer").then_some(rest.trim())
}

/// The hash under which a key is known. Keys are never stored.
pub fn key_hash(key: &str) -> [u8; 32] {
    *blake3::hash(key.as_bytes()).as_bytes()
}

/// An authenticated owner or agent key. Checks the per-principal rate limit.
#[derive(Clone, Debug)]
pub struct Caller(pub Principal);

impl Caller {
    pub fn owner(&self) -> Option<AccountId> {
        match self.0 {
            Principal::Owner(id) => Some(id),
            _ => None,
        }
    }

    pub fn agent(&self) -> Option<AgentKeyId> {
        match self.0 {
            Principal::Agent(id) => Some(id),
            _ => None,
        }
    }

    pub fn require_owner(&self) -> Result<AccountId, ApiError> {
        self.owner()
            .ok_or_else(|| ApiError::forbidden("this needs an owner (account) key"))
    }

    pub fn require_agent(&self) -> Result<AgentKeyId, ApiError> {
        self.agent()
            .ok_or_else(|| ApiError::forbidden("this needs an agent key"))
    }
}

impl FromRequestParts<AppState> for Caller {
    type Rejection = ApiError;

    async fn from_request_parts(
        parts: &mut Parts,
        app: &AppState,
    ) -> Result<Self, Self::Rejection> {
        let caller = authenticate(parts, app)?;
        app.check_rate(&caller.0, parts)?;
        Ok(caller)
    }
}

/// Who holds the key the request carries, without the rate limit.
pub fn authenticate(parts: &Parts, app: &AppState) -> Result<Caller, ApiError> {
    let key = presented_key(parts)
        .filter(|k| !k.is_empty())
        .ok_or_else(|| {
            ApiError::unauthorized(
                "an API key is required (Authorization: Bearer <key> or X-Market-Api-Key)",
            )
        })?;
    let hash = key_hash(key);
    let view = app.service.read();
    view.principal_for_key_hash(&hash)
        .cloned()
        .map(Caller)
        .ok_or_else(|| ApiError::unauthorized("unknown or revoked API key"))
}

/// The operator: `X-Admin-Token` equal to the configured admin token. With
/// no token configured, operator routes do not exist (404).
pub struct Operator(pub String);

impl FromRequestParts<AppState> for Operator {
    type Rejection = ApiError;

    async fn from_request_parts(
        parts: &mut Parts,
        app: &AppState,
    ) -> Result<Self, Self::Rejection> {
        let Some(expected) = app.settings.admin_token.as_deref() else {
            return Err(ApiError::not_found(format!("route {}", parts.uri.path())));
        };
        let given = parts
            .headers
            .get("x-admin-token")
            .and_then(|v| v.to_str().ok())
            .or_else(|| presented_key(parts))
            .ok_or_else(|| ApiError::unauthorized("X-Admin-Token is required"))?;
        // Compare hashes so the time taken says nothing about the token.
        if key_hash(given) != key_hash(expected) {
            return Err(ApiError::unauthorized("wrong admin token"));
        }
        let name = parts
            .headers
            .get("x-operator-name")
            .and_then(|v| v.to_str().ok())
            .map(str::trim)
            .filter(|n| !n.is_empty() && n.chars().count() <= 100)
            .unwrap_or("operator");
        Ok(Operator(name.to_owned()))
    }
}

/// The client's address: the peer of the connection or, behind
/// `trusted_proxy_hops` reverse proxies, the `X-Forwarded-For` entry that
/// many places from the right (each trusted proxy appends the address it
/// saw; entries further left are the client's own claims and not trusted).
pub struct ClientAddr(pub Option<IpAddr>);

impl FromRequestParts<AppState> for ClientAddr {
    type Rejection = ApiError;

    async fn from_request_parts(
        parts: &mut Parts,
        app: &AppState,
    ) -> Result<Self, Self::Rejection> {
        let peer = parts
            .extensions
            .get::<ConnectInfo<SocketAddr>>()
            .map(|c| c.0.ip());
        let forwarded = parts
            .headers
            .get_all("x-forwarded-for")
            .iter()
            .filter_map(|v| v.to_str().ok());
        Ok(ClientAddr(client_ip(
            peer,
            forwarded,
            app.settings.trusted_proxy_hops,
        )))
    }
}

/// See [`ClientAddr`]. With fewer forwarded entries than trusted hops, the
/// left-most entry; with none, the peer; an unparsable entry is unknown.
pub fn client_ip<'h>(
    peer: Option<IpAddr>,
    forwarded: impl Iterator<Item = &'h str>,
    hops: usize,
) -> Option<IpAddr> {
    if hops == 0 {
        return peer;
    }
    let entries: Vec<&str> = forwarded
        .flat_map(|h| h.split(','))
        .map(str::trim)
        .filter(|e| !e.is_empty())
        .collect();
    if entries.is_empty() {
        return peer; // no proxy on this path
    }
    entries[entries.len().saturating_sub(hops)].parse().ok()
}

/// Query parameters, with the one error shape on bad input.
pub struct Query<T>(pub T);

impl<T: DeserializeOwned, S: Send + Sync> FromRequestParts<S> for Query<T> {
    type Rejection = ApiError;

    async fn from_request_parts(parts: &mut Parts, _: &S) -> Result<Self, Self::Rejection> {
        axum::extract::Query::<T>::try_from_uri(&parts.uri)
            .map(|q| Query(q.0))
            .map_err(|e| ApiError::invalid("query", e.body_text()))
    }
}

/// Path parameters, with the one error shape on bad input (axum's own
/// rejection is plain text, e.g. for percent-encoded invalid UTF-8).
pub struct Path<T>(pub T);

impl<T: DeserializeOwned + Send, S: Send + Sync> FromRequestParts<S> for Path<T> {
    type Rejection = ApiError;

    async fn from_request_parts(parts: &mut Parts, state: &S) -> Result<Self, Self::Rejection> {
        use axum::extract::path::ErrorKind;
        use axum::extract::rejection::PathRejection;
        match axum::extract::Path::<T>::from_request_parts(parts, state).await {
            Ok(p) => Ok(Path(p.0)),
            Err(PathRejection::FailedToDeserializePathParams(e)) => {
                let field = match e.kind() {
                    ErrorKind::InvalidUtf8InPathParam { key }
                    | ErrorKind::ParseErrorAtKey { key, .. }
                    | ErrorKind::DeserializeError { key, .. } => key.clone(),
                    _ => "path".to_owned(),
                };
                Err(ApiError::invalid(&field, "must be a UUID"))
            }
            Err(e) => Err(ApiError::invalid("path", e.body_text())),
        }
    }
}

/// Parse a path id, naming the parameter on failure.
pub fn parse_id<T: std::str::FromStr>(raw: &str, name: &str) -> Result<T, ApiError> {
    raw.parse()
        .map_err(|_| ApiError::invalid(name, "must be a UUID"))
}

/// `limit` and `offset`, checked against the route's bounds.
#[derive(Clone, Copy, Debug, serde::Deserialize, utoipa::IntoParams)]
pub struct Page {
    /// 1..=100, default 50.
    pub limit: Option<u32>,
    /// Default 0.
    pub offset: Option<u64>,
}

impl Page {
    pub fn bounds(&self, default: u32, max: u32) -> Result<(usize, usize), ApiError> {
        let limit = self.limit.unwrap_or(default);
        if !(1..=max).contains(&limit) {
            return Err(ApiError::invalid("limit", format!("must be 1..={max}")));
        }
        let offset = usize::try_from(self.offset.unwrap_or(0))
            .map_err(|_| ApiError::invalid("offset", "too large"))?;
        Ok((limit as usize, offset))
    }
}

#[cfg(test)]
mod client_ip_tests {
    use super::client_ip;
    use std::net::IpAddr;

    fn ip(s: &str) -> Option<IpAddr> {
        s.parse().ok()
    }

    #[test]
    fn trusted_hops_pick_the_entry_that_many_places_from_the_right() {
        let peer = ip("10.0.0.1");
        let xff = ["203.0.113.9, 198.51.100.7", "192.0.2.3"];
        assert_eq!(client_ip(peer, xff.iter().copied(), 0), peer);
        assert_eq!(client_ip(peer, xff.iter().copied(), 1), ip("192.0.2.3"));
        assert_eq!(client_ip(peer, xff.iter().copied(), 2), ip("198.51.100.7"));
        assert_eq!(client_ip(peer, xff.iter().copied(), 9), ip("203.0.113.9"));
        assert_eq!(client_ip(peer, std::iter::empty(), 1), peer);
        assert_eq!(client_ip(peer, ["not-an-ip"].into_iter(), 1), None);
    }
}
