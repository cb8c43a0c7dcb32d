//! Accounts and tokens: register, login, refresh (rotating), logout, and the public keys.

use std::sync::Arc;

use axum::Json;
use axum::extract::State;
use axum::http::StatusCode;
use serde::{Deserialize, Serialize};
use utoipa::ToSchema;

use super::store::{AccountStatus, AuthEvent, UserRow};
use crate::api::error::{ApiError, ErrorBody};
use crate::auth::accounts::{Accounts, NewUser, token_claims};
use crate::auth::identity::Authenticator;
use crate::auth::refresh::{IssuedRefreshToken, RefreshTokens};
use crate::auth::tokens::TokenService;
use crate::config::Config;
use crate::db::Db;
use crate::state::AppState;

/// Name and password.
#[derive(Debug, Deserialize, ToSchema)]
pub struct Credentials {
    /// User name.
    pub username: String,
    /// Password.
    pub password: String,
}

/// A refresh token.
#[derive(Debug, Deserialize, ToSchema)]
pub struct RefreshRequest {
    /// The refresh token from the last login or refresh.
    pub refresh_token: String,
}

/// Tokens for a session.
#[derive(Debug, Serialize, Deserialize, ToSchema)]
pub struct TokenResponse {
    /// The access token (a JWT) for `Authorization: Bearer`.
    pub access_token: String,
    /// Always `Bearer`.
    pub token_type: String,
    /// Lifetime of the access token, in seconds.
    pub expires_in: u64,
    /// Single-use token for `POST /api/auth/refresh`.
    pub refresh_token: String,
}

/// A registered account.
#[derive(Debug, Serialize, ToSchema)]
pub struct RegisteredUser {
    /// User name.
    pub username: String,
}

/// Signs in `user`: a new session (refresh-token family) when `refresh` is `None`, else the
/// token `refresh` just rotated to. The access token names the session (`sid`), so that ending
/// the session also ends what its access tokens opened.
pub(crate) async fn session(
    state: &AppState,
    user: &UserRow,
    family: Option<String>,
    refresh: Option<IssuedRefreshToken>,
) -> Result<TokenResponse, ApiError> {
    // Every sign-in comes through here: password, refresh, external provider.
    if state.db.account_status(&user.name).await? == AccountStatus::Disabled {
        return Err(ApiError::Forbidden("this account is disabled".to_owned()));
    }
    // The session row exists before any token names it.
    let refresh = match refresh {
        Some(issued) => issued,
        None => state.refresh.issue(&user.name, family).await?,
    };
    let mut claims = token_claims(user);
    claims.insert("sid".to_owned(), refresh.family.clone().into());
    let access = state.tokens.issue(&user.name, &claims, None)?;
    Ok(TokenResponse {
        access_token: access.token,
        token_type: "Bearer".to_owned(),
        expires_in: access.expires_in,
        refresh_token: refresh.token,
    })
}

/// Creates an account (when registration is open: the admin dashboard's switch once set, else
/// `auth.registration`).
#[utoipa::path(
    post, path = "/api/auth/register", tag = "auth",
    request_body = Credentials,
    responses(
        (status = 201, description = "Account created", body = RegisteredUser),
        (status = 400, description = "Invalid name or password", body = ErrorBody),
        (status = 403, description = "Registration is disabled", body = ErrorBody),
        (status = 409, description = "Name taken", body = ErrorBody),
        (status = 429, description = "Too many requests from this address (see `Retry-After`)", body = ErrorBody),
    )
)]
pub async fn register(
    State(db): State<Db>,
    State(config): State<Arc<Config>>,
    State(accounts): State<Accounts>,
    Json(body): Json<Credentials>,
) -> Result<(StatusCode, Json<RegisteredUser>), ApiError> {
    // The dashboard's switch when an administrator set it, else `auth.registration`.
    if !crate::admin::registration(&db, &config).await?.enabled {
        return Err(ApiError::Forbidden("registration is disabled".to_owned()));
    }
    let user = accounts
        .create(NewUser {
            name: body.username,
            password: Some(body.password),
            ..NewUser::default()
        })
        .await?;
    Ok((
        StatusCode::CREATED,
        Json(RegisteredUser {
            username: user.name,
        }),
    ))
}

/// Signs in with a name and password.
#[utoipa::path(
    post, path = "/api/auth/login", tag = "auth",
    request_body = Credentials,
    responses(
        (status = 200, description = "Signed in", body = TokenResponse),
        (status = 401, description = "Invalid user name or password", body = ErrorBody),
        (status = 429, description = "Too many requests from this address, or too many failed logins for this account (see `Retry-After`)", body = ErrorBody),
    )
)]
pub async fn login(
    State(state): State<AppState>,
    Json(body): Json<Credentials>,
) -> Result<Json<TokenResponse>, ApiError> {
    state.limits.login_attempt(&body.username)?;
    let user = state
        .accounts
        .authenticate(&body.username, body.password)
        .await?;
    state.limits.login_succeeded(&body.username);
    tracing::info!(user = %user.name, "signed in");
    Ok(Json(session(&state, &user, None, None).await?))
}

/// Exchanges a refresh token for new tokens. The refresh token is spent: presenting it again
/// revokes the whole session.
#[utoipa::path(
    post, path = "/api/auth/refresh", tag = "auth",
    request_body = RefreshRequest,
    responses(
        (status = 200, description = "New tokens", body = TokenResponse),
        (status = 401, description = "Invalid, expired or reused refresh token", body = ErrorBody),
        (status = 429, description = "Too many requests from this address (see `Retry-After`)", body = ErrorBody),
    )
)]
pub async fn refresh(
    State(state): State<AppState>,
    Json(body): Json<RefreshRequest>,
) -> Result<Json<TokenResponse>, ApiError> {
    let (user_name, next) = state.refresh.rotate(&body.refresh_token).await?;
    let user = state
        .db
        .user(&user_name)
        .await?
        .ok_or_else(|| ApiError::Unauthorized("the account no longer exists".to_owned()))?;
    Ok(Json(session(&state, &user, None, Some(next)).await?))
}

/// Ends the session of a refresh token: its whole family is revoked, its access tokens are
/// refused from now on, and the hub connections they opened close (on this node at once, on the
/// others within seconds).
#[utoipa::path(
    post, path = "/api/auth/logout", tag = "auth",
    request_body = RefreshRequest,
    responses((status = 204, description = "Signed out"))
)]
pub async fn logout(
    State(refresh): State<RefreshTokens>,
    State(identity): State<Authenticator>,
    Json(body): Json<RefreshRequest>,
) -> Result<StatusCode, ApiError> {
    if let Some(family) = refresh.revoke(&body.refresh_token).await? {
        let closed = identity
            .sessions()
            .end(&AuthEvent::SessionEnded(family))
            .await;
        tracing::info!(closed, "signed out");
    }
    Ok(StatusCode::NO_CONTENT)
}

/// The public keys that verify access tokens (empty with HS256).
#[utoipa::path(
    get, path = "/.well-known/jwks.json", tag = "auth",
    responses((status = 200, description = "JSON Web Key Set", content_type = "application/json", body = Object))
)]
pub async fn jwks(State(tokens): State<Arc<TokenService>>) -> Json<jsonwebtoken::jwk::JwkSet> {
    Json(tokens.jwks().clone())
}
