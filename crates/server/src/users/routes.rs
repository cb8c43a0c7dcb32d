//! Users: presence.

use axum::Json;
use axum::extract::{Path, State};
use serde::{Deserialize, Serialize};
use utoipa::ToSchema;

use crate::api::error::{ApiError, ErrorBody};
use crate::api::extract::Caller;
use crate::clock::rfc3339;
use crate::presence::Presence;

/// One live connection of a user.
#[derive(Debug, Serialize, Deserialize, ToSchema)]
pub struct ConnectionInfo {
    /// The SignalR connection id.
    pub connection_id: String,
    /// The server node holding it.
    pub node: String,
    /// When it connected (RFC 3339).
    pub connected_at: String,
    /// The client's User-Agent.
    pub user_agent: Option<String>,
}

/// A user's presence.
#[derive(Debug, Serialize, Deserialize, ToSchema)]
pub struct PresenceResponse {
    /// The user.
    pub user: String,
    /// Whether at least one connection is live.
    pub online: bool,
    /// The live connections.
    pub connections: Vec<ConnectionInfo>,
    /// When the user last went online (RFC 3339).
    pub last_connected_at: Option<String>,
    /// When the user last went offline (RFC 3339).
    pub last_disconnected_at: Option<String>,
}

/// A user's presence: online while at least one connection is live.
#[utoipa::path(
    get, path = "/api/users/{id}/presence", tag = "users",
    params(("id" = String, Path, description = "User name")),
    security(("bearer" = [])),
    responses(
        (status = 200, description = "Presence", body = PresenceResponse),
        (status = 401, description = "Not authenticated", body = ErrorBody),
        (status = 404, description = "Unknown user", body = ErrorBody),
    )
)]
pub async fn presence(
    State(presence): State<Presence>,
    _caller: Caller,
    Path(id): Path<String>,
) -> Result<Json<PresenceResponse>, ApiError> {
    let row = presence
        .lookup(&id)
        .await?
        .ok_or_else(|| ApiError::NotFound(format!("unknown user '{id}'")))?;
    Ok(Json(PresenceResponse {
        user: row.user_name,
        online: !row.connections.is_empty(),
        connections: row
            .connections
            .into_iter()
            .map(|c| ConnectionInfo {
                connection_id: c.connection_id,
                node: c.node,
                connected_at: rfc3339(c.connected_at),
                user_agent: c.user_agent,
            })
            .collect(),
        last_connected_at: row.last_connected_at.map(rfc3339),
        last_disconnected_at: row.last_disconnected_at.map(rfc3339),
    }))
}
