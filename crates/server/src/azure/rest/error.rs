//! Error answers of the data-plane REST API: a JSON `ErrorDetail` `{"code", "message"}` with the
//! code repeated in the `x-ms-error-code` header (which the Management SDK reads to tell "does
//! not exist" from a failure). Answers to `/api/v1/…` carry the message as plain text instead, as
//! that version of the API did.

use axum::Json;
use axum::http::header::{CONTENT_TYPE, WWW_AUTHENTICATE};
use axum::http::{HeaderName, HeaderValue, StatusCode};
use axum::response::{IntoResponse, Response};
use serde::Serialize;

use crate::azure::keys::KeyError;
use crate::azure::payload::PayloadError;

/// The header carrying the error code.
pub const ERROR_CODE_HEADER: HeaderName = HeaderName::from_static("x-ms-error-code");

/// Error codes (`{level}.{scope}.{kind}`, as the service and the SDKs spell them).
pub mod codes {
    /// A connection asked about does not exist.
    pub const CONNECTION_NOT_EXISTED: &str = "Warning.Connection.NotExisted";
    /// A user asked about has no connection.
    pub const USER_NOT_EXISTED: &str = "Warning.User.NotExisted";
    /// A group asked about has no connection.
    pub const GROUP_NOT_EXISTED: &str = "Warning.Group.NotExisted";
    /// The user is not in the group.
    pub const USER_NOT_IN_GROUP: &str = "Info.User.NotInGroup";
    /// The connection an operation needs does not exist.
    pub const CONNECTION_NOT_EXISTED_ERROR: &str = "Error.Connection.NotExisted";
    /// A parameter or the body is invalid.
    pub const INVALID_REQUEST: &str = "Error.Request.Invalid";
    /// The bearer token is missing or refused.
    pub const UNAUTHORIZED: &str = "Error.Request.Unauthorized";
    /// No operation has this path.
    pub const NO_SUCH_OPERATION: &str = "Error.Request.NotExisted";
    /// The operation exists, with other methods.
    pub const METHOD_NOT_ALLOWED: &str = "Error.Request.MethodNotAllowed";
    /// The body is larger than the limit.
    pub const TOO_LARGE: &str = "Error.Request.TooLarge";
    /// The body type is not supported.
    pub const UNSUPPORTED_MEDIA_TYPE: &str = "Error.Request.UnsupportedMediaType";
    /// The client answered an invocation with an error, or did not answer.
    pub const INVOCATION_FAILED: &str = "Error.Connection.InvocationFailed";
    /// The operation is not supported by this service.
    pub const NOT_SUPPORTED: &str = "Error.Request.NotSupported";
    /// The service failed.
    pub const INTERNAL: &str = "Error.Request.Unknown";
}

/// The JSON body of an error answer.
#[derive(Debug, Clone, Serialize)]
pub struct ErrorDetail {
    /// The error code.
    pub code: String,
    /// What went wrong.
    pub message: String,
}

/// Why a REST request failed.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum RestError {
    /// No bearer token, or one refused.
    #[error("{}", unauthorized_message(.0))]
    Unauthorized(Option<KeyError>),
    /// A parameter is invalid.
    #[error("{0}")]
    BadRequest(String),
    /// The body is not a message.
    #[error(transparent)]
    Payload(#[from] PayloadError),
    /// Something asked about does not exist; `code` goes into `x-ms-error-code`.
    #[error("{message}")]
    NotFound {
        /// The error code.
        code: &'static str,
        /// What does not exist.
        message: String,
    },
    /// No operation has this path.
    #[error("no operation at this path")]
    NoSuchOperation,
    /// The path exists with other methods.
    #[error("method not allowed; allowed: {0}")]
    MethodNotAllowed(&'static str),
    /// The body is larger than the limit.
    #[error("the request body is larger than {0} bytes")]
    TooLarge(usize),
    /// The client invocation failed.
    #[error("{0}")]
    InvocationFailed(String),
    /// The operation is not supported.
    #[error("{0} is not supported by this service")]
    NotSupported(&'static str),
    /// The service failed; the cause is logged, not returned.
    #[error("internal error")]
    Internal(String),
}

fn unauthorized_message(error: &Option<KeyError>) -> String {
    match error {
        None => "a bearer token is required".to_owned(),
        Some(error) => error.to_string(),
    }
}

impl RestError {
    /// A 404 with its code.
    pub fn not_found(code: &'static str, message: impl Into<String>) -> Self {
        RestError::NotFound {
            code,
            message: message.into(),
        }
    }

    /// The status and code of this error.
    pub fn status_and_code(&self) -> (StatusCode, &'static str) {
        match self {
            RestError::Unauthorized(_) => (StatusCode::UNAUTHORIZED, codes::UNAUTHORIZED),
            RestError::BadRequest(_) => (StatusCode::BAD_REQUEST, codes::INVALID_REQUEST),
            RestError::Payload(error) => match error.status() {
                StatusCode::UNSUPPORTED_MEDIA_TYPE => (
                    StatusCode::UNSUPPORTED_MEDIA_TYPE,
                    codes::UNSUPPORTED_MEDIA_TYPE,
                ),
                status => (status, codes::INVALID_REQUEST),
            },
            RestError::NotFound { code, .. } => (StatusCode::NOT_FOUND, code),
            RestError::NoSuchOperation => (StatusCode::NOT_FOUND, codes::NO_SUCH_OPERATION),
            RestError::MethodNotAllowed(_) => {
                (StatusCode::METHOD_NOT_ALLOWED, codes::METHOD_NOT_ALLOWED)
            }
            RestError::TooLarge(_) => (StatusCode::PAYLOAD_TOO_LARGE, codes::TOO_LARGE),
            RestError::InvocationFailed(_) => (StatusCode::BAD_REQUEST, codes::INVOCATION_FAILED),
            RestError::NotSupported(_) => (StatusCode::NOT_IMPLEMENTED, codes::NOT_SUPPORTED),
            RestError::Internal(_) => (StatusCode::INTERNAL_SERVER_ERROR, codes::INTERNAL),
        }
    }

    /// The answer: JSON `ErrorDetail`, or plain text for `/api/v1/…` (`legacy`).
    pub fn into_response_for(self, legacy: bool) -> Response {
        let (status, code) = self.status_and_code();
        if let RestError::Internal(cause) = &self {
            tracing::error!(target: "signalbox::azure", %cause, "REST request failed");
        }
        let message = self.to_string();
        let mut response = if legacy {
            (
                status,
                [(CONTENT_TYPE, "text/plain; charset=utf-8")],
                message,
            )
                .into_response()
        } else {
            (
                status,
                Json(ErrorDetail {
                    code: code.to_owned(),
                    message,
                }),
            )
                .into_response()
        };
        let headers = response.headers_mut();
        headers.insert(ERROR_CODE_HEADER, HeaderValue::from_static(code));
        if let RestError::Unauthorized(error) = &self {
            headers.insert(WWW_AUTHENTICATE, challenge(error.as_ref()));
        }
        if let RestError::MethodNotAllowed(allowed) = &self {
            headers.insert(axum::http::header::ALLOW, HeaderValue::from_static(allowed));
        }
        response
    }
}

impl From<crate::db::StoreError> for RestError {
    fn from(error: crate::db::StoreError) -> Self {
        RestError::Internal(error.to_string())
    }
}

impl IntoResponse for RestError {
    fn into_response(self) -> Response {
        self.into_response_for(false)
    }
}

/// The `WWW-Authenticate` challenge of a 401, as ASP.NET Core's JWT bearer handler writes it.
fn challenge(error: Option<&KeyError>) -> HeaderValue {
    let description = match error {
        None => return HeaderValue::from_static("Bearer"),
        Some(KeyError::InvalidAudience) => "The audience is invalid",
        Some(KeyError::InvalidSignature) => "The signature is invalid",
        Some(KeyError::Expired) => "The token expired",
        Some(KeyError::NotYetValid) => "The token is not valid yet",
        Some(KeyError::InvalidAlgorithm) => "The token algorithm is not accepted",
        Some(KeyError::MissingClaim(_)) => "The token lacks a required claim",
        Some(_) => "The token is invalid",
    };
    HeaderValue::from_str(&format!(
        "Bearer error=\"invalid_token\", error_description=\"{description}\""
    ))
    .unwrap_or_else(|_| HeaderValue::from_static("Bearer error=\"invalid_token\""))
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used, clippy::expect_used)]

    use super::*;

    #[test]
    fn not_found_carries_the_code() {
        let response =
            RestError::not_found(codes::USER_NOT_EXISTED, "no such user").into_response();
        assert_eq!(response.status(), StatusCode::NOT_FOUND);
        assert_eq!(
            response.headers()[ERROR_CODE_HEADER],
            "Warning.User.NotExisted"
        );
        assert_eq!(response.headers()[CONTENT_TYPE], "application/json");
    }

    #[test]
    fn unauthorized_has_a_challenge() {
        let response =
            RestError::Unauthorized(Some(KeyError::InvalidAudience)).into_response_for(true);
        assert_eq!(response.status(), StatusCode::UNAUTHORIZED);
        assert_eq!(
            response.headers()[WWW_AUTHENTICATE],
            "Bearer error=\"invalid_token\", error_description=\"The audience is invalid\""
        );
        assert_eq!(
            response.headers()[CONTENT_TYPE],
            "text/plain; charset=utf-8"
        );
        let response = RestError::Unauthorized(None).into_response();
        assert_eq!(response.headers()[WWW_AUTHENTICATE], "Bearer");
    }
}
