//! Authentication: accounts and passwords ([`accounts`], [`passwords`]), access tokens
//! ([`tokens`]), rotating refresh tokens ([`refresh`]), sessions that end everywhere at logout or
//! when an account is disabled ([`sessions`]), bearer authentication of REST routes and hubs
//! ([`identity`]), the external OpenID Connect issuer ([`oidc`]) with its browser sign-in
//! ([`external`]) and its server-side sign-in ([`oidc_login`]); the routes under `/api/auth`
//! ([`mod@routes`]) and the tables behind them ([`store`]).

pub mod accounts;
pub mod external;
pub mod identity;
pub mod oidc;
pub mod oidc_login;
pub mod passwords;
pub mod refresh;
pub mod routes;
pub mod sessions;
pub mod store;
pub mod tokens;

use axum::Router;
use axum::routing::{get, post};

use crate::state::AppState;

pub use store::{AccountStatus, AuthEvent, UserRow};

/// The routes of this feature: sign-in (register, login, refresh, external and server-side
/// OpenID Connect, under the per-IP sign-in rate limit), logout and the public keys.
pub fn routes(state: &AppState) -> Router<AppState> {
    // The sign-in routes share a per-IP rate limit (see `crate::rate_limit`).
    let sign_in = Router::new()
        .route("/api/auth/register", post(routes::register))
        .route("/api/auth/login", post(routes::login))
        .route("/api/auth/refresh", post(routes::refresh))
        .route("/api/auth/external", post(external::external_login))
        .route(oidc_login::START_PATH, get(oidc_login::start))
        .route(oidc_login::CALLBACK_PATH, get(oidc_login::callback))
        .route("/api/auth/oidc/session", post(oidc_login::collect_session))
        .route_layer(axum::middleware::from_fn_with_state(
            state.limits.clone(),
            crate::rate_limit::limit_auth,
        ));
    Router::new()
        .merge(sign_in)
        .route("/api/auth/logout", post(routes::logout))
        .route("/.well-known/jwks.json", get(routes::jwks))
}
