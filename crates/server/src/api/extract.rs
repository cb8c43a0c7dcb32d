//! Extractors that authorize: the authenticated caller of a REST route ([`Caller`]), a caller
//! who may send notifications ([`Notifier`]) and an administrator ([`Admin`]). Each works with
//! any router state that provides the services it needs (axum's `FromRef`).

use std::sync::Arc;

use axum::extract::{FromRef, FromRequestParts};
use axum::http::request::Parts;
use signalbox::Policy;

use super::error::ApiError;
use crate::auth::identity::{Authenticator, Identity};
use crate::config::Config;

/// The caller, authenticated by `Authorization: Bearer` (never a query-string token).
#[derive(Debug, Clone)]
pub struct Caller(pub Identity);

impl<S> FromRequestParts<S> for Caller
where
    S: Send + Sync,
    Authenticator: FromRef<S>,
{
    type Rejection = ApiError;

    async fn from_request_parts(parts: &mut Parts, state: &S) -> Result<Self, ApiError> {
        let identity = Authenticator::from_ref(state);
        Ok(Caller(identity.authenticate(&parts.headers).await?))
    }
}

/// A caller who may send notifications and manage groups: authenticated like [`Caller`] and
/// satisfying the notify policy (`auth.permission_claim` = `auth.notify_permission`). Rejects
/// with 401 without a valid bearer token and 403 without the permission.
#[derive(Debug, Clone)]
pub struct Notifier(pub Identity);

impl<S> FromRequestParts<S> for Notifier
where
    S: Send + Sync,
    Authenticator: FromRef<S>,
    Policy: FromRef<S>,
    Arc<Config>: FromRef<S>,
{
    type Rejection = ApiError;

    async fn from_request_parts(parts: &mut Parts, state: &S) -> Result<Self, ApiError> {
        let Caller(identity) = Caller::from_request_parts(parts, state).await?;
        if Policy::from_ref(state).is_satisfied_by(Some(&identity.principal)) {
            Ok(Notifier(identity))
        } else {
            let config = Arc::<Config>::from_ref(state);
            Err(ApiError::Forbidden(format!(
                "the '{}' claim with value '{}' is required",
                config.auth.permission_claim, config.auth.notify_permission
            )))
        }
    }
}

/// An administrator: the caller, authenticated like [`Caller`], holding the admin role
/// (`admin.role`). Rejects with 401 without a valid bearer token and 403 without the role.
#[derive(Debug, Clone)]
pub struct Admin(pub Identity);

impl<S> FromRequestParts<S> for Admin
where
    S: Send + Sync,
    Authenticator: FromRef<S>,
    Arc<Config>: FromRef<S>,
{
    type Rejection = ApiError;

    async fn from_request_parts(parts: &mut Parts, state: &S) -> Result<Self, ApiError> {
        let Caller(identity) = Caller::from_request_parts(parts, state).await?;
        let config = Arc::<Config>::from_ref(state);
        if identity.principal.is_in_role(&config.admin.role) {
            Ok(Admin(identity))
        } else {
            Err(ApiError::Forbidden(format!(
                "the '{}' role is required",
                config.admin.role
            )))
        }
    }
}
