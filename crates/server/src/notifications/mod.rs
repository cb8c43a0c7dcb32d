//! Notifications: the durable inbox ([`inbox`]), notifications to every account stored once
//! ([`broadcasts`]), the publish API and the inbox over HTTP
//! ([`mod@routes`]), the notification hub ([`hub`]), transactional publish from an application's
//! own PostgreSQL transaction ([`outbox`]) and their tables ([`store`]).

pub mod broadcasts;
pub mod hub;
pub mod inbox;
pub mod outbox;
pub mod routes;
pub mod store;

use axum::Router;
use axum::routing::{get, post};

use crate::state::AppState;

/// The routes of this feature.
pub fn routes() -> Router<AppState> {
    Router::new()
        .route(
            "/api/notifications",
            get(routes::list).post(routes::publish),
        )
        .route("/api/notifications/{id}/read", post(routes::mark_read))
}
