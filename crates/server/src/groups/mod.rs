//! Groups: named sets of users the publish API can address, managed under
//! `/api/groups/{group}/members` ([`mod@routes`]) and stored in `group_members` ([`store`]).

pub mod routes;
pub mod store;

use axum::Router;
use axum::routing::{get, put};

use crate::db::{Db, StoreError};
use crate::state::AppState;

/// Group membership; cheap to clone.
#[derive(Debug, Clone)]
pub struct Groups {
    db: Db,
}

impl Groups {
    /// Groups stored in `db`.
    pub fn new(db: Db) -> Self {
        Self { db }
    }

    /// The members of `group`, sorted.
    pub async fn members(&self, group: &str) -> Result<Vec<String>, StoreError> {
        self.db.group_members(group).await
    }

    /// Adds `user` to `group` (idempotent).
    pub async fn add_member(&self, group: &str, user: &str) -> Result<(), StoreError> {
        self.db.add_group_member(group, user).await
    }

    /// Removes `user` from `group`; `Ok(false)` if they were not a member.
    pub async fn remove_member(&self, group: &str, user: &str) -> Result<bool, StoreError> {
        self.db.remove_group_member(group, user).await
    }

    /// The first `limit` groups by name, with their member counts.
    pub async fn sizes(&self, limit: i64) -> Result<Vec<(String, i64)>, StoreError> {
        self.db.group_sizes(limit).await
    }
}

/// The routes of this feature.
pub fn routes() -> Router<AppState> {
    Router::new()
        .route("/api/groups/{group}/members", get(routes::members))
        .route(
            "/api/groups/{group}/members/{user}",
            put(routes::add_member).delete(routes::remove_member),
        )
}
