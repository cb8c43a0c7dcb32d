//! Extractors: the authenticated caller of a REST route, and the administrator.

use axum::extract::FromRequestParts;
use axum::http::request::Parts;

use super::error::ApiError;
use crate::identity::Identity;
use crate::state::AppState;

/// The caller, authenticated by `Authorization: Bearer` (never a query-string token).
#[derive(Debug, Clone)]
pub struct Caller(pub Identity);

impl FromRequestParts<AppState> for Caller {
    type Rejection = ApiError;

    async fn from_request_parts(parts: &mut Parts, state: &AppState) -> Result<Self, ApiError> {
        Ok(Caller(state.identity.authenticate(&parts.headers).await?))
    }
}

impl Caller {
    /// Fails with 403 unless the caller may send notifications.
    pub fn require_notify(&self, state: &AppState) -> Result<(), ApiError> {
        if state.notify.is_satisfied_by(Some(&self.0.principal)) {
            Ok(())
        } else {
            Err(ApiError::Forbidden(format!(
                "the '{}' claim with value '{}' is required",
                state.config.auth.permission_claim, state.config.auth.notify_permission
            )))
        }
    }
}

/// An administrator: the caller, authenticated like [`Caller`], holding the admin role
/// (`admin.role`). Rejects with 401 without a valid bearer token and 403 without the role.
#[derive(Debug, Clone)]
pub struct Admin(pub Identity);

impl FromRequestParts<AppState> for Admin {
    type Rejection = ApiError;

    async fn from_request_parts(parts: &mut Parts, state: &AppState) -> Result<Self, ApiError> {
        let identity = state.identity.authenticate(&parts.headers).await?;
        if identity.principal.is_in_role(&state.config.admin.role) {
            Ok(Admin(identity))
        } else {
            Err(ApiError::Forbidden(format!(
                "the '{}' role is required",
                state.config.admin.role
            )))
        }
    }
}
