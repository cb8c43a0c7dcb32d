//! The REST API: the routes of every feature in one router, with the errors, the authorizing
//! extractors and the OpenAPI document they share.

pub mod error;
pub mod extract;
pub mod openapi;

use axum::Router;
use utoipa::OpenApi as _;
use utoipa_swagger_ui::SwaggerUi;

use crate::state::AppState;

pub use error::ApiError;
pub use openapi::ApiDoc;

/// The REST routes of every feature (auth, users, notifications, groups, admin with the webhook
/// log, health and metrics), `/openapi.json` and `/swagger`.
pub fn router(state: AppState) -> Router {
    Router::new()
        .merge(crate::auth::routes(&state))
        .merge(crate::users::routes())
        .merge(crate::notifications::routes())
        .merge(crate::groups::routes())
        .merge(crate::admin::routes())
        .merge(crate::webhooks::admin::routes())
        .merge(crate::ops::routes())
        .with_state(state)
        .merge(SwaggerUi::new("/swagger").url("/openapi.json", ApiDoc::openapi()))
}
