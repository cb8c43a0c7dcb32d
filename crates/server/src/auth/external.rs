//! Signing in with the external OpenID Connect provider: the browser runs the authorization code
//! flow with PKCE against the provider itself and hands the ID token it got to
//! `POST /api/auth/external`, which verifies it and answers with a signalbox session (the same
//! tokens as `/api/auth/login`, so refresh, permissions and the hub work as for local accounts).

use axum::Json;
use axum::extract::State;
use serde::Deserialize;
use serde_json::Value;
use utoipa::ToSchema;

use super::routes::{TokenResponse, session};
use super::store::UserRow;
use crate::api::error::{ApiError, ErrorBody};
use crate::auth::identity::IdentityError;
use crate::auth::oidc::OidcVerifier;
use crate::config::OidcConfig;
use crate::db::StoreError;
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
    let user = sign_in_with_id_token(&state, verifier, config, client_id, &body.id_token, None)
        .await
        .map_err(|refusal| match refusal {
            IdTokenRefusal::Identity(error) => ApiError::from(error),
            IdTokenRefusal::Store(error) => ApiError::from(error),
            other => ApiError::Unauthorized(other.to_string()),
        })?;
    tracing::info!(user = %user.name, "signed in through the external provider");
    Ok(Json(session(&state, &user, None, None).await?))
}

/// Why an ID token of the external provider was not accepted for a sign-in.
#[derive(Debug, thiserror::Error)]
pub(crate) enum IdTokenRefusal {
    /// Bad signature, issuer, expiry, or made for another client (the reason is for logs).
    #[error("the ID token is not valid here")]
    Invalid(&'static str),
    /// The `nonce` is not the one of this sign-in (a replayed or injected token).
    #[error("the ID token does not belong to this sign-in")]
    Nonce,
    /// `email_verified` is false while users are identified by e-mail.
    #[error("the provider has not verified this e-mail address")]
    UnverifiedEmail,
    /// No local user (and none may be created), or storage failed while resolving it.
    #[error(transparent)]
    Identity(#[from] IdentityError),
    /// Storage failed.
    #[error(transparent)]
    Store(#[from] StoreError),
    /// The account was deleted meanwhile.
    #[error("the account no longer exists")]
    Gone,
}

/// Validates an ID token of the external provider for the client `client_id` and finds (or,
/// when allowed, creates) its local user: signature, `iss` and `exp` through the verifier; then
/// `aud` must contain the client id, `azp` (required with several audiences) must be the client
/// id, `nonce` must match when one was sent, and `email_verified` must be true when users
/// are identified by e-mail (a missing claim is no verification). Shared by `POST /api/auth/external` and the server-side code flow.
pub(crate) async fn sign_in_with_id_token(
    state: &AppState,
    verifier: &OidcVerifier,
    config: &OidcConfig,
    client_id: &str,
    id_token: &str,
    nonce: Option<&str>,
) -> Result<UserRow, IdTokenRefusal> {
    let principal = verifier.validate(id_token).await.map_err(|error| {
        tracing::info!(reason = error.reason(), "external sign-in refused");
        IdTokenRefusal::Invalid(error.reason())
    })?;
    // `aud` is checked by the verifier only when `oidc.audience` is set; the page's client id
    // must be among the audiences in every case.
    let audiences = principal.claim_values("aud");
    if !audiences.iter().any(|aud| aud == client_id) {
        tracing::info!("external sign-in refused: the ID token was made for another client");
        return Err(IdTokenRefusal::Invalid("aud"));
    }
    // OpenID Connect Core 3.1.3.7: `azp`, when present, is this client; with several
    // audiences it must be present.
    match principal.claim("azp") {
        Some(Value::String(azp)) if azp == client_id => {}
        None if audiences.len() == 1 => {}
        _ => {
            tracing::info!("external sign-in refused: the ID token's azp is not this client");
            return Err(IdTokenRefusal::Invalid("azp"));
        }
    }
    if let Some(expected) = nonce
        && principal.claim("nonce").and_then(Value::as_str) != Some(expected)
    {
        tracing::info!("external sign-in refused: the ID token's nonce does not match");
        return Err(IdTokenRefusal::Nonce);
    }
    if config.user_claim == "email" && !crate::auth::identity::email_verified(&principal) {
        tracing::info!("external sign-in refused: the e-mail address is not verified");
        return Err(IdTokenRefusal::UnverifiedEmail);
    }
    let name = state.identity.resolve(&principal).await?;
    state.db.user(&name).await?.ok_or(IdTokenRefusal::Gone)
}
