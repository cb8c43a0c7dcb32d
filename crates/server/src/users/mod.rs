//! Users as other users see them: `GET /api/users/{id}/presence` ([`mod@routes`]), answered by
//! [`crate::presence::Presence`].

pub mod routes;

use axum::Router;
use axum::routing::get;

use crate::state::AppState;

/// The routes of this feature.
pub fn routes() -> Router<AppState> {
    Router::new().route("/api/users/{id}/presence", get(routes::presence))
}
