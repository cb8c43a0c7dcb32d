//! `ApiError`: every REST failure, with its HTTP status and a message for the client. Internal
//! causes are logged, never sent.

use axum::Json;
use axum::http::{HeaderValue, StatusCode, header};
use axum::response::{IntoResponse, Response};
use serde::Serialize;
use utoipa::ToSchema;

use crate::auth::accounts::AccountError;
use crate::auth::identity::IdentityError;
use crate::auth::passwords::PasswordError;
use crate::auth::refresh::RefreshError;
use crate::auth::tokens::TokenError;
use crate::db::StoreError;

/// The JSON body of every error response.
#[derive(Debug, Serialize, ToSchema)]
pub struct ErrorBody {
    /// A stable machine-readable code (`unauthorized`, `forbidden`, `not_found`, …).
    pub error: &'static str,
    /// A human-readable explanation.
    pub message: String,
}

/// A REST failure.
#[derive(Debug, thiserror::Error)]
pub enum ApiError {
    /// 400: the request is malformed or invalid.
    #[error("{0}")]
    BadRequest(String),
    /// 401: missing or invalid credentials.
    #[error("{0}")]
    Unauthorized(String),
    /// 403: authenticated but not allowed.
    #[error("{0}")]
    Forbidden(String),
    /// 404.
    #[error("{0}")]
    NotFound(String),
    /// 409.
    #[error("{0}")]
    Conflict(String),
    /// 429: a rate limit refused the request; `Retry-After` says when to try again.
    #[error("{message}")]
    TooManyRequests {
        /// What was limited.
        message: String,
        /// Seconds until a retry may succeed (the `Retry-After` header).
        retry_after: u64,
    },
    /// 500: the cause is logged; the client gets a generic message.
    #[error("internal error: {0}")]
    Internal(String),
}

impl ApiError {
    /// An internal error from any cause.
    pub fn internal(cause: impl std::fmt::Display) -> Self {
        Self::Internal(cause.to_string())
    }
}

impl IntoResponse for ApiError {
    fn into_response(self) -> Response {
        let mut retry_after = None;
        let (status, code, message) = match self {
            ApiError::BadRequest(m) => (StatusCode::BAD_REQUEST, "bad_request", m),
            ApiError::Unauthorized(m) => (StatusCode::UNAUTHORIZED, "unauthorized", m),
            ApiError::Forbidden(m) => (StatusCode::FORBIDDEN, "forbidden", m),
            ApiError::NotFound(m) => (StatusCode::NOT_FOUND, "not_found", m),
            ApiError::Conflict(m) => (StatusCode::CONFLICT, "conflict", m),
            ApiError::TooManyRequests {
                message,
                retry_after: secs,
            } => {
                retry_after = Some(secs);
                (StatusCode::TOO_MANY_REQUESTS, "rate_limited", message)
            }
            ApiError::Internal(cause) => {
                tracing::error!(%cause, "request failed");
                (
                    StatusCode::INTERNAL_SERVER_ERROR,
                    "internal",
                    "something went wrong; the server log has the details".to_owned(),
                )
            }
        };
        let mut response = (
            status,
            Json(ErrorBody {
                error: code,
                message,
            }),
        )
            .into_response();
        if let Some(secs) = retry_after {
            response
                .headers_mut()
                .insert(header::RETRY_AFTER, HeaderValue::from(secs));
        }
        if status == StatusCode::UNAUTHORIZED {
            response.headers_mut().insert(
                header::WWW_AUTHENTICATE,
                HeaderValue::from_static("Bearer error=\"invalid_token\""),
            );
        }
        response
    }
}

impl From<StoreError> for ApiError {
    fn from(error: StoreError) -> Self {
        Self::internal(error)
    }
}

impl From<PasswordError> for ApiError {
    fn from(error: PasswordError) -> Self {
        Self::internal(error)
    }
}

impl From<TokenError> for ApiError {
    fn from(error: TokenError) -> Self {
        Self::internal(error)
    }
}

impl From<AccountError> for ApiError {
    fn from(error: AccountError) -> Self {
        match error {
            AccountError::InvalidName
            | AccountError::WeakPassword
            | AccountError::InvalidClaim(_) => Self::BadRequest(error.to_string()),
            AccountError::NameTaken => Self::Conflict(error.to_string()),
            AccountError::InvalidCredentials => Self::Unauthorized(error.to_string()),
            AccountError::Store(e) => e.into(),
            AccountError::Password(e) => e.into(),
        }
    }
}

impl From<RefreshError> for ApiError {
    fn from(error: RefreshError) -> Self {
        match error {
            RefreshError::Invalid | RefreshError::Reused => Self::Unauthorized(error.to_string()),
            RefreshError::Random(_) => Self::internal(error),
            RefreshError::Store(e) => e.into(),
        }
    }
}

impl From<IdentityError> for ApiError {
    fn from(error: IdentityError) -> Self {
        match error {
            IdentityError::Token(reason) => {
                tracing::debug!(reason = reason.reason(), "bearer token refused");
                Self::Unauthorized("a valid bearer token is required".to_owned())
            }
            IdentityError::NoLocalUser
            | IdentityError::UnverifiedEmail
            | IdentityError::Revoked => Self::Unauthorized(error.to_string()),
            IdentityError::Store(e) => e.into(),
        }
    }
}
