//! The delivery log on the admin API (the admin role is required):
//!
//! | route | what |
//! |---|---|
//! | `GET /api/admin/webhooks` | whether webhooks are on, the receiver, the pending count and the newest events with their delivery (`?status=pending\|delivered\|failed`, `?limit=` up to 500, default 100) |
//! | `POST /api/admin/webhooks/{id}/retry` | one more attempt of a failed event, at once (409 unless it failed) |

use axum::extract::{Path, Query, State};
use axum::http::StatusCode;
use axum::routing::{get, post};
use axum::{Json, Router};
use serde::{Deserialize, Serialize};

use super::store::{self, DeliveryRow, Status};
use crate::api::ApiError;
use crate::api::extract::Admin;
use crate::clock::{now_ms, rfc3339};
use crate::db::Db;
use crate::state::AppState;
use crate::webhooks::Webhooks;

/// Events listed by default.
const DEFAULT_LIMIT: i64 = 100;
/// Most events listed.
const MAX_LIMIT: i64 = 500;

/// `GET /api/admin/webhooks` query.
#[derive(Debug, Deserialize)]
pub struct LogQuery {
    /// Only events of this status.
    #[serde(default)]
    pub status: Option<String>,
    /// How many (newest first).
    #[serde(default)]
    pub limit: Option<i64>,
}

/// The delivery log.
#[derive(Debug, Serialize)]
pub struct WebhookLog {
    /// Whether webhooks are on (on this node).
    pub enabled: bool,
    /// The receiver, without credentials or query.
    pub url: Option<String>,
    /// The events sent.
    pub events: Vec<&'static str>,
    /// Events waiting for delivery, all nodes.
    pub pending: i64,
    /// The newest events, newest first.
    pub deliveries: Vec<DeliveryView>,
}

/// One event and its delivery.
#[derive(Debug, Serialize)]
pub struct DeliveryView {
    /// The event id (`X-Signalbox-Delivery`).
    pub id: String,
    /// The event type.
    pub event: String,
    /// The user.
    pub user: String,
    /// The connection, for `connection.*` events.
    pub connection_id: Option<String>,
    /// The node that recorded it.
    pub node: String,
    /// `pending`, `delivered` or `failed`.
    pub status: String,
    /// Attempts made.
    pub attempts: i64,
    /// The receiver's status at the last attempt.
    pub last_status: Option<i64>,
    /// What went wrong at the last attempt.
    pub last_error: Option<String>,
    /// When it happened (RFC 3339).
    pub occurred_at: String,
    /// When it was stored.
    pub created_at: String,
    /// When the last attempt ended.
    pub last_attempt_at: Option<String>,
    /// When the next attempt is due (pending events).
    pub next_attempt_at: Option<String>,
    /// When the receiver accepted it.
    pub delivered_at: Option<String>,
}

impl From<DeliveryRow> for DeliveryView {
    fn from(row: DeliveryRow) -> Self {
        let pending = row.status == Status::Pending.as_str();
        Self {
            next_attempt_at: pending.then(|| rfc3339(row.due_at)),
            id: row.id,
            event: row.event,
            user: row.user,
            connection_id: row.connection_id,
            node: row.node,
            status: row.status,
            attempts: row.attempts,
            last_status: row.last_status,
            last_error: row.last_error,
            occurred_at: rfc3339(row.occurred_at),
            created_at: rfc3339(row.created_at),
            last_attempt_at: row.last_attempt_at.map(rfc3339),
            delivered_at: row.delivered_at.map(rfc3339),
        }
    }
}

/// The delivery log's routes.
pub fn routes() -> Router<AppState> {
    Router::new()
        .route("/api/admin/webhooks", get(log))
        .route("/api/admin/webhooks/{id}/retry", post(retry))
}

/// `GET /api/admin/webhooks`.
pub async fn log(
    State(db): State<Db>,
    State(webhooks): State<Webhooks>,
    _admin: Admin,
    Query(query): Query<LogQuery>,
) -> Result<Json<WebhookLog>, ApiError> {
    let status = match query.status.as_deref().map(str::trim) {
        None | Some("" | "all") => None,
        Some(name) => Some(Status::parse(name).ok_or_else(|| {
            ApiError::BadRequest(format!(
                "unknown status {name:?}: use pending, delivered or failed"
            ))
        })?),
    };
    let limit = query.limit.unwrap_or(DEFAULT_LIMIT).clamp(1, MAX_LIMIT);
    let deliveries = store::recent(&db, status, limit).await?;
    Ok(Json(WebhookLog {
        enabled: webhooks.is_enabled(),
        url: webhooks.display_url(),
        events: webhooks
            .events()
            .into_iter()
            .map(super::EventType::as_str)
            .collect(),
        pending: store::pending_count(&db).await?,
        deliveries: deliveries.into_iter().map(DeliveryView::from).collect(),
    }))
}

/// `POST /api/admin/webhooks/{id}/retry`: 202 with the event, now pending; 404 for an unknown
/// event; 409 unless it failed.
pub async fn retry(
    State(db): State<Db>,
    State(webhooks): State<Webhooks>,
    Admin(admin): Admin,
    Path(id): Path<String>,
) -> Result<(StatusCode, Json<DeliveryView>), ApiError> {
    if !store::retry(&db, &id, now_ms()).await? {
        return Err(match store::find(&db, &id).await? {
            None => ApiError::NotFound(format!("no webhook event '{id}'")),
            Some(row) => ApiError::Conflict(format!(
                "webhook event '{id}' is {}: only failed events can be retried",
                row.status
            )),
        });
    }
    tracing::info!(admin = %admin.user, id = %id, "webhook delivery retried by an admin");
    webhooks.wake();
    let row = store::find(&db, &id)
        .await?
        .ok_or_else(|| ApiError::NotFound(format!("no webhook event '{id}'")))?;
    Ok((StatusCode::ACCEPTED, Json(DeliveryView::from(row))))
}
