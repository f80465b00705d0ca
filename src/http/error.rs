//! One error shape for every HTTP answer that is not a success:
//! `{"error": "<message>", "code": "<stable_code>", "fields"?: [...]}`.
//!
//! Domain refusals, storage failures, bad bodies, rate limits and unknown
//! routes all become an [`ApiError`]; nothing here guesses a 500 for a
//! business rule.

use crate::error::{DomainError, FieldError};
use crate::writer::ServiceError;
use axum::http::{HeaderValue, StatusCode, header};
use axum::response::{IntoResponse, Response};
use serde::Serialize;

/// `{"error", "code", "fields"?}`; `fields` lists bad input fields.
#[derive(Debug, Serialize, utoipa::ToSchema)]
pub struct ApiError {
    #[serde(skip)]
    pub status: StatusCode,
    pub error: String,
    /// Stable: `bad_request`, `validation_failed` (400); `unauthorized`
    /// (401); `insufficient_credits` (402); `forbidden`,
    /// `reputation_too_low`, `compute_source_required`,
    /// `compute_source_forbidden`, `risk_denied` (403); `not_found` (404);
    /// `conflict`, `already_claimed`, `task_not_open`, `task_full` (409);
    /// `too_large` (413); `rate_limited` (429); `overloaded`,
    /// `unavailable` (503).
    pub code: &'static str,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub fields: Option<Vec<FieldError>>,
    #[serde(skip)]
    pub retry_after_secs: Option<u64>,
}

impl ApiError {
    pub fn new(status: StatusCode, code: &'static str, message: impl Into<String>) -> Self {
        ApiError {
            status,
            error: message.into(),
            code,
            fields: None,
            retry_after_secs: None,
        }
    }

    pub fn bad_request(message: impl Into<String>) -> Self {
        Self::new(StatusCode::BAD_REQUEST, "bad_request", message)
    }

    pub fn not_found(what: impl Into<String>) -> Self {
        DomainError::not_found(what).into()
    }

    pub fn forbidden(message: impl Into<String>) -> Self {
        DomainError::forbidden(message).into()
    }

    pub fn unauthorized(message: impl Into<String>) -> Self {
        DomainError::Unauthorized(message.into()).into()
    }

    pub fn invalid(field: &str, message: impl Into<String>) -> Self {
        DomainError::invalid(field, message).into()
    }

    /// A record the read view points at could not be read back from the
    /// log (I/O, or a record that fails its own hash): a storage problem.
    pub fn log_unreadable(seq: u64, why: impl std::fmt::Display) -> Self {
        Self::new(
            StatusCode::SERVICE_UNAVAILABLE,
            "unavailable",
            format!("cannot read seq {seq} of the log: {why}"),
        )
    }

    pub fn rate_limited(retry_after_secs: u64) -> Self {
        let mut e = Self::new(
            StatusCode::TOO_MANY_REQUESTS,
            "rate_limited",
            format!("too many requests; retry in {retry_after_secs} s"),
        );
        e.retry_after_secs = Some(retry_after_secs);
        e
    }
}

impl From<DomainError> for ApiError {
    fn from(e: DomainError) -> Self {
        let status = StatusCode::from_u16(e.status()).unwrap_or(StatusCode::INTERNAL_SERVER_ERROR);
        let fields = match &e {
            DomainError::Validation(f) => Some(f.clone()),
            _ => None,
        };
        let mut out = ApiError::new(status, e.code(), e.to_string());
        out.fields = fields;
        if matches!(e, DomainError::Overloaded) {
            out.retry_after_secs = Some(1);
        }
        out
    }
}

impl From<ServiceError> for ApiError {
    fn from(e: ServiceError) -> Self {
        match e {
            ServiceError::Domain(d) => d.into(),
            ServiceError::Storage(why) => ApiError::new(
                StatusCode::SERVICE_UNAVAILABLE,
                "unavailable",
                format!("storage failure, the market is read-only: {why}"),
            ),
        }
    }
}

impl IntoResponse for ApiError {
    fn into_response(self) -> Response {
        let status = self.status;
        let retry = self.retry_after_secs;
        let mut response = (status, axum::Json(self)).into_response();
        if let Some(secs) = retry {
            response
                .headers_mut()
                .insert(header::RETRY_AFTER, HeaderValue::from(secs));
        }
        response
    }
}

pub type ApiResult<T> = Result<T, ApiError>;
