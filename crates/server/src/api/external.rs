//! Signing in with the external OpenID Connect provider: the browser runs the authorization code
//! flow with PKCE against the provider itself and hands the ID token it got to
//! `POST /api/auth/external`, which verifies it and answers with a signalbox session (the same
//! tokens as `/api/auth/login`, so refresh, permissions and the hub work as for local accounts).

use axum::Json;
use axum::extract::State;
use serde::Deserialize;
use serde_json::Value;
use utoipa::ToSchema;

use super::auth::{TokenResponse, session};
use super::error::{ApiError, ErrorBody};
use crate::state::AppState;

/// An ID token from the external provider.
#[derive(Debug, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct ExternalLogin {
    /// The provider's ID token (a JWT signed by the issuer, for this service's client id).
    pub id_token: String,
}

/// Trades an ID token of the configured OpenID Connect issuer for a signalbox session. The token
/// must be signed by a key the issuer publishes, unexpired, and made for the page's client id
/// (`oidc.client_id`, else `oidc.audience`); an `email_verified: false` claim is refused when the
/// user is identified by e-mail. Unknown users get an account when `oidc.auto_create_users` is on.
#[utoipa::path(
    post, path = "/api/auth/external", tag = "auth",
    request_body = ExternalLogin,
    responses(
        (status = 200, description = "Signed in", body = TokenResponse),
        (status = 401, description = "Invalid token, or no local user for it", body = ErrorBody),
        (status = 404, description = "No external provider is configured", body = ErrorBody),
        (status = 429, description = "Too many requests from this address (see `Retry-After`)", body = ErrorBody),
    )
)]
pub async fn external_login(
    State(state): State<AppState>,
    Json(body): Json<ExternalLogin>,
) -> Result<Json<TokenResponse>, ApiError> {
    let (Some(verifier), Some(config)) = (state.identity.oidc(), state.config.oidc.as_ref()) else {
        return Err(ApiError::NotFound(
            "no external OpenID Connect provider is configured".to_owned(),
        ));
    };
    let Some(client_id) = config.browser_client_id() else {
        return Err(ApiError::NotFound(
            "external sign-in needs oidc.client_id or oidc.audience".to_owned(),
        ));
    };
    let refused = || ApiError::Unauthorized("the ID token is not valid here".to_owned());
    let principal = verifier.validate(&body.id_token).await.map_err(|error| {
        tracing::info!(reason = error.reason(), "external sign-in refused");
        refused()
    })?;
    // `aud` is checked by the verifier only when `oidc.audience` is set; the page's client id
    // must be among the audiences in every case.
    if !principal
        .claim_values("aud")
        .iter()
        .any(|aud| aud == client_id)
    {
        tracing::info!("external sign-in refused: the ID token was made for another client");
        return Err(refused());
    }
    let unverified = match principal.claim("email_verified") {
        Some(Value::Bool(verified)) => !verified,
        Some(Value::String(verified)) => verified != "true",
        _ => false,
    };
    if config.user_claim == "email" && unverified {
        tracing::info!("external sign-in refused: the e-mail address is not verified");
        return Err(ApiError::Unauthorized(
            "the provider has not verified this e-mail address".to_owned(),
        ));
    }
    let name = state.identity.resolve(&principal).await?;
    let user = state
        .db
        .user(&name)
        .await?
        .ok_or_else(|| ApiError::Unauthorized("the account no longer exists".to_owned()))?;
    tracing::info!(user = %user.name, "signed in through the external provider");
    Ok(Json(session(&state, &user, None, None).await?))
}
