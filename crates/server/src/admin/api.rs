//! The admin API handlers (the admin role is required on every one).

use axum::Json;
use axum::extract::{Path, State};
use axum::http::{HeaderMap, StatusCode};
use serde::Serialize;
use sqlx::Row as _;

use super::require_admin;
use crate::api::ApiError;
use crate::clock::rfc3339;
use crate::logging::LoggedEvent;
use crate::metrics::{Sample, sum_metric};
use crate::state::AppState;

/// At most this many online users are listed in the stats.
const ONLINE_LISTED: usize = 200;

/// What the dashboard shows.
#[derive(Debug, Serialize)]
pub struct Stats {
    /// This node's id.
    pub node: String,
    /// Seconds since this node started.
    pub uptime_seconds: u64,
    /// `sqlite` or `postgres`.
    pub database: String,
    /// Connections open on this node.
    pub connections_here: usize,
    /// Connections recorded by presence, all nodes.
    pub connections_total: i64,
    /// How many users are online (all nodes).
    pub online_count: usize,
    /// The first online users, sorted.
    pub online_users: Vec<String>,
    /// Groups with their member counts.
    pub groups: Vec<GroupSummary>,
    /// Counters of this node since it started.
    pub totals: Totals,
    /// Recent rates (one sample every 5 s), oldest first.
    pub samples: Vec<Sample>,
    /// Recent warnings and errors of this node, newest last.
    pub recent_errors: Vec<LoggedEvent>,
}

/// A group and its size.
#[derive(Debug, Serialize)]
pub struct GroupSummary {
    /// The group.
    pub name: String,
    /// How many members it has.
    pub members: i64,
}

/// Counters of this node since it started.
#[derive(Debug, Serialize)]
pub struct Totals {
    /// Hub messages received.
    pub messages_received: f64,
    /// Frames sent to connections.
    pub messages_sent: f64,
    /// Hub invocations.
    pub invocations: f64,
    /// Hub invocations that failed.
    pub invocation_errors: f64,
    /// Refused tokens on hub routes.
    pub auth_failures: f64,
    /// Notifications stored.
    pub notifications_published: f64,
    /// Frames dropped for slow consumers.
    pub queue_drops: f64,
}

/// One live connection of a user.
#[derive(Debug, Serialize)]
pub struct ConnectionInfo {
    /// The public connection id.
    pub connection_id: String,
    /// The node holding it.
    pub node: String,
    /// When it connected (RFC 3339).
    pub connected_at: String,
    /// The client's `User-Agent`.
    pub user_agent: Option<String>,
}

/// `GET /api/admin/stats`.
pub async fn stats(
    State(state): State<AppState>,
    headers: HeaderMap,
) -> Result<Json<Stats>, ApiError> {
    require_admin(&state, &headers).await?;
    let online = state.db.online_users().await?;
    let pool = state.db.pool();
    let connections_total: i64 = sqlx::query("SELECT COUNT(*) AS n FROM connections")
        .fetch_one(pool)
        .await
        .and_then(|row| row.try_get("n"))
        .map_err(ApiError::internal)?;
    let groups = sqlx::query(
        "SELECT group_name, COUNT(*) AS n FROM group_members GROUP BY group_name \
         ORDER BY group_name LIMIT 100",
    )
    .fetch_all(pool)
    .await
    .map_err(ApiError::internal)?
    .iter()
    .map(|row| {
        Ok(GroupSummary {
            name: row.try_get("group_name")?,
            members: row.try_get("n")?,
        })
    })
    .collect::<Result<Vec<_>, sqlx::Error>>()
    .map_err(ApiError::internal)?;
    let text = state.metrics.render();
    use signalbox::metrics as lib;
    let totals = Totals {
        messages_received: sum_metric(&text, lib::MESSAGES_RECEIVED, None),
        messages_sent: sum_metric(&text, lib::MESSAGES_SENT, None),
        invocations: sum_metric(&text, lib::INVOCATIONS, None),
        invocation_errors: sum_metric(&text, lib::INVOCATIONS, Some(("outcome", "error"))),
        auth_failures: sum_metric(&text, lib::AUTH_FAILURES, None),
        notifications_published: sum_metric(&text, crate::metrics::NOTIFICATIONS_PUBLISHED, None),
        queue_drops: sum_metric(&text, lib::OUTBOUND_QUEUE_DROPS, None),
    };
    Ok(Json(Stats {
        node: state.config.node.clone(),
        uptime_seconds: state.metrics.uptime().as_secs(),
        database: state.db.backend().to_string(),
        connections_here: state.hub.lifetime_manager().local_connection_ids().len(),
        connections_total,
        online_count: online.len(),
        online_users: online.into_iter().take(ONLINE_LISTED).collect(),
        groups,
        totals,
        samples: state.metrics.samples(),
        recent_errors: crate::logging::recent(),
    }))
}

/// `GET /api/admin/users/{user}/connections`: 404 for an unknown user.
pub async fn user_connections(
    State(state): State<AppState>,
    headers: HeaderMap,
    Path(user): Path<String>,
) -> Result<Json<Vec<ConnectionInfo>>, ApiError> {
    require_admin(&state, &headers).await?;
    let presence = state
        .db
        .presence(&user)
        .await?
        .ok_or_else(|| ApiError::NotFound(format!("unknown user '{user}'")))?;
    Ok(Json(
        presence
            .connections
            .into_iter()
            .map(|c| ConnectionInfo {
                connection_id: c.connection_id,
                node: c.node,
                connected_at: rfc3339(c.connected_at),
                user_agent: c.user_agent,
            })
            .collect(),
    ))
}

/// `DELETE /api/admin/connections/{id}`: closes a live connection; 404 if presence does not
/// know it.
pub async fn disconnect(
    State(state): State<AppState>,
    headers: HeaderMap,
    Path(id): Path<String>,
) -> Result<StatusCode, ApiError> {
    let admin = require_admin(&state, &headers).await?;
    let known = sqlx::query("SELECT user_name FROM connections WHERE connection_id = $1")
        .bind(&id)
        .fetch_optional(state.db.pool())
        .await
        .map_err(ApiError::internal)?;
    let Some(row) = known else {
        return Err(ApiError::NotFound(format!("no live connection '{id}'")));
    };
    let user: String = row.try_get("user_name").map_err(ApiError::internal)?;
    tracing::info!(admin = %admin.user, %user, connection_id = %id, "connection closed by an admin");
    state.hub.abort_connection(&id).await;
    Ok(StatusCode::NO_CONTENT)
}

/// `PUT /api/admin/groups/{group}/members/{user}` (idempotent).
pub async fn add_member(
    State(state): State<AppState>,
    headers: HeaderMap,
    Path((group, user)): Path<(String, String)>,
) -> Result<StatusCode, ApiError> {
    require_admin(&state, &headers).await?;
    if group.is_empty() || group.len() > 128 {
        return Err(ApiError::BadRequest(
            "group names are 1 to 128 bytes".to_owned(),
        ));
    }
    if state.db.user(&user).await?.is_none() {
        return Err(ApiError::NotFound(format!("unknown user '{user}'")));
    }
    state.db.add_group_member(&group, &user).await?;
    Ok(StatusCode::NO_CONTENT)
}

/// `DELETE /api/admin/groups/{group}/members/{user}`: 404 if not a member.
pub async fn remove_member(
    State(state): State<AppState>,
    headers: HeaderMap,
    Path((group, user)): Path<(String, String)>,
) -> Result<StatusCode, ApiError> {
    require_admin(&state, &headers).await?;
    if state.db.remove_group_member(&group, &user).await? {
        Ok(StatusCode::NO_CONTENT)
    } else {
        Err(ApiError::NotFound(format!(
            "'{user}' is not a member of '{group}'"
        )))
    }
}
