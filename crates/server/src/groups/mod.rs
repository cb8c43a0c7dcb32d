//! Groups: named sets of users the publish API can address, managed under
//! `/api/groups/{group}/members` ([`mod@routes`]) and stored in `group_members` ([`store`]).

pub mod routes;
pub mod store;

use axum::Router;
use axum::routing::{get, put};

use crate::state::AppState;

/// The routes of this feature.
pub fn routes() -> Router<AppState> {
    Router::new()
        .route("/api/groups/{group}/members", get(routes::members))
        .route(
            "/api/groups/{group}/members/{user}",
            put(routes::add_member).delete(routes::remove_member),
        )
}
