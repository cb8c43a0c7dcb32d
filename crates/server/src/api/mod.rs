//! The REST API: routes, errors, the authenticated-caller extractor and the OpenAPI document.

pub mod auth;
pub mod error;
pub mod external;
pub mod extract;
pub mod groups;
pub mod notifications;
pub mod oidc_login;
pub mod openapi;
pub mod users;

use axum::Router;
use axum::routing::{get, post, put};
use utoipa::OpenApi as _;
use utoipa_swagger_ui::SwaggerUi;

use crate::state::AppState;

pub use error::ApiError;
pub use openapi::ApiDoc;

/// The REST routes, `/openapi.json` and `/swagger`.
pub fn router(state: AppState) -> Router {
    // The sign-in routes share a per-IP rate limit (see `crate::rate_limit`).
    let sign_in = Router::new()
        .route("/api/auth/register", post(auth::register))
        .route("/api/auth/login", post(auth::login))
        .route("/api/auth/refresh", post(auth::refresh))
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
        .route("/api/auth/logout", post(auth::logout))
        .route("/.well-known/jwks.json", get(auth::jwks))
        .route(
            "/api/notifications",
            get(notifications::list).post(notifications::publish),
        )
        .route(
            "/api/notifications/{id}/read",
            post(notifications::mark_read),
        )
        .route("/api/users/{id}/presence", get(users::presence))
        .route("/api/groups/{group}/members", get(groups::members))
        .route(
            "/api/groups/{group}/members/{user}",
            put(groups::add_member).delete(groups::remove_member),
        )
        .with_state(state)
        .merge(SwaggerUi::new("/swagger").url("/openapi.json", ApiDoc::openapi()))
}
