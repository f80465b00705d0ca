//! Domain refusals: each has a stable machine code and the HTTP status the
//! API answers it with. Storage failures are not here: they are fatal and
//! live in `writer::WriterError`.

use serde::Serialize;
use thiserror::Error;

/// One bad input field, named as the API names it.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, utoipa::ToSchema)]
pub struct FieldError {
    pub field: String,
    pub message: String,
}

impl FieldError {
    pub fn new(field: impl Into<String>, message: impl Into<String>) -> Self {
        FieldError {
            field: field.into(),
            message: message.into(),
        }
    }
}

#[derive(Clone, Debug, Error, PartialEq, Eq)]
pub enum DomainError {
    #[error("{0}")]
    BadRequest(String),
    #[error("validation failed: {}", .0.iter().map(|f| format!("{}: {}", f.field, f.message)).collect::<Vec<_>>().join("; "))]
    Validation(Vec<FieldError>),
    #[error("{0}")]
    Unauthorized(String),
    #[error("insufficient credits: needs {needed}, has {available}")]
    InsufficientCredits { needed: u64, available: u64 },
    #[error("{0}")]
    Forbidden(String),
    #[error("reputation {actual} is below the task's minimum {required}")]
    ReputationTooLow { required: String, actual: String },
    #[error("{0}")]
    ComputeSourceRequired(String),
    /// A declared compute source the market refuses outright (a consumer
    /// subscription or OAuth login), as opposed to an unknown value (400).
    #[error("{0}")]
    ComputeSourceForbidden(String),
    #[error("{0}")]
    RiskDenied(String),
    #[error("{0} not found")]
    NotFound(String),
    #[error("{0}")]
    Conflict(String),
    #[error("this agent key already claimed the task")]
    AlreadyClaimed,
    #[error("{0}")]
    TaskNotOpen(String),
    #[error("the task has no free executor slot")]
    TaskFull,
    #[error("{0}")]
    TooLarge(String),
    #[error("the command queue is full; retry shortly")]
    Overloaded,
    #[error("{0}")]
    Unavailable(String),
}

impl DomainError {
    /// The stable code clients switch on.
    pub fn code(&self) -> &'static str {
        match self {
            DomainError::BadRequest(_) => "bad_request",
            DomainError::Validation(_) => "validation_failed",
            DomainError::Unauthorized(_) => "unauthorized",
            DomainError::InsufficientCredits { .. } => "insufficient_credits",
            DomainError::Forbidden(_) => "forbidden",
            DomainError::ReputationTooLow { .. } => "reputation_too_low",
            DomainError::ComputeSourceRequired(_) => "compute_source_required",
            DomainError::ComputeSourceForbidden(_) => "compute_source_forbidden",
            DomainError::RiskDenied(_) => "risk_denied",
            DomainError::NotFound(_) => "not_found",
            DomainError::Conflict(_) => "conflict",
            DomainError::AlreadyClaimed => "already_claimed",
            DomainError::TaskNotOpen(_) => "task_not_open",
            DomainError::TaskFull => "task_full",
            DomainError::TooLarge(_) => "too_large",
            DomainError::Overloaded => "overloaded",
            DomainError::Unavailable(_) => "unavailable",
        }
    }

    /// The HTTP status of API.md.
    pub fn status(&self) -> u16 {
        match self {
            DomainError::BadRequest(_) | DomainError::Validation(_) => 400,
            DomainError::Unauthorized(_) => 401,
            DomainError::InsufficientCredits { .. } => 402,
            DomainError::Forbidden(_)
            | DomainError::ReputationTooLow { .. }
            | DomainError::ComputeSourceRequired(_)
            | DomainError::ComputeSourceForbidden(_)
            | DomainError::RiskDenied(_) => 403,
            DomainError::NotFound(_) => 404,
            DomainError::Conflict(_)
            | DomainError::AlreadyClaimed
            | DomainError::TaskNotOpen(_)
            | DomainError::TaskFull => 409,
            DomainError::TooLarge(_) => 413,
            DomainError::Overloaded | DomainError::Unavailable(_) => 503,
        }
    }

    pub fn invalid(field: &str, message: impl Into<String>) -> Self {
        DomainError::Validation(vec![FieldError::new(field, message)])
    }

    pub fn forbidden(message: impl Into<String>) -> Self {
        DomainError::Forbidden(message.into())
    }

    pub fn not_found(what: impl Into<String>) -> Self {
        DomainError::NotFound(what.into())
    }
}
