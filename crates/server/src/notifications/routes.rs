//! The inbox over HTTP, and the publish API for back-end services.

use std::collections::BTreeSet;

use axum::Json;
use axum::extract::{Path, Query, State};
use axum::http::StatusCode;
use serde::{Deserialize, Serialize};
use signalbox::HubContext;
use tracing::Instrument as _;
use utoipa::{IntoParams, ToSchema};

use crate::api::error::{ApiError, ErrorBody};
use crate::api::extract::{Caller, Notifier};
use crate::auth::accounts::Accounts;
use crate::groups::Groups;
use crate::notifications::inbox::{Inbox, InboxItem, MAX_MESSAGE_LENGTH, Stored};

/// Most notifications one listing returns.
const MAX_LIMIT: i64 = 500;

/// Filters for the inbox listing.
#[derive(Debug, Deserialize, IntoParams)]
#[into_params(parameter_in = Query)]
pub struct ListQuery {
    /// Only unread notifications.
    #[serde(default)]
    pub unread: bool,
    /// At most this many, newest first (default 100, maximum 500).
    pub limit: Option<i64>,
}

/// The caller's notifications, newest first.
#[utoipa::path(
    get, path = "/api/notifications", tag = "notifications",
    params(ListQuery),
    security(("bearer" = [])),
    responses(
        (status = 200, description = "Notifications", body = Vec<InboxItem>),
        (status = 401, description = "Not authenticated", body = ErrorBody),
    )
)]
pub async fn list(
    State(inbox): State<Inbox>,
    Caller(identity): Caller,
    Query(query): Query<ListQuery>,
) -> Result<Json<Vec<InboxItem>>, ApiError> {
    let limit = query.limit.unwrap_or(100).clamp(1, MAX_LIMIT);
    Ok(Json(inbox.list(&identity.user, query.unread, limit).await?))
}

/// Marks one of the caller's notifications read.
#[utoipa::path(
    post, path = "/api/notifications/{id}/read", tag = "notifications",
    params(("id" = String, Path, description = "Notification id")),
    security(("bearer" = [])),
    responses(
        (status = 204, description = "Marked read"),
        (status = 401, description = "Not authenticated", body = ErrorBody),
        (status = 404, description = "No such notification for this user", body = ErrorBody),
    )
)]
pub async fn mark_read(
    State(inbox): State<Inbox>,
    Caller(identity): Caller,
    Path(id): Path<String>,
) -> Result<StatusCode, ApiError> {
    if inbox.mark_read(&identity.user, &id).await? {
        Ok(StatusCode::NO_CONTENT)
    } else {
        Err(ApiError::NotFound("no such notification".to_owned()))
    }
}

/// A notification to publish. Name exactly one target: `user`, `users`, `group` or
/// `everyone: true`.
#[derive(Debug, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct PublishRequest {
    /// One user.
    pub user: Option<String>,
    /// Several users.
    pub users: Option<Vec<String>>,
    /// The members of a group (see `/api/groups`).
    pub group: Option<String>,
    /// Every account.
    #[serde(default)]
    pub everyone: bool,
    /// The text (at most 16 KiB).
    pub message: String,
}

/// The stored notifications: one per recipient, or one shared by every account for
/// `everyone: true`.
#[derive(Debug, Serialize, Deserialize, ToSchema)]
pub struct PublishResponse {
    /// Ids of the stored notifications, in recipient order (for `everyone`, the one id every
    /// account sees).
    pub ids: Vec<String>,
    /// Each recipient with its notification id (empty for `everyone`: the notification is
    /// stored once, for every account).
    pub notifications: Vec<StoredNotification>,
}

/// One stored notification and its recipient.
#[derive(Debug, Serialize, Deserialize, ToSchema)]
pub struct StoredNotification {
    /// Notification id.
    pub id: String,
    /// Recipient.
    pub user: String,
}

impl From<Stored> for StoredNotification {
    fn from(s: Stored) -> Self {
        Self {
            id: s.id,
            user: s.user,
        }
    }
}

/// Stores a notification for each recipient (once for every account with `everyone`) and
/// delivers it to those online. Needs the notify permission claim.
#[utoipa::path(
    post, path = "/api/notifications", tag = "notifications",
    request_body = PublishRequest,
    security(("bearer" = [])),
    responses(
        (status = 201, description = "Stored (and delivered to recipients online)", body = PublishResponse),
        (status = 400, description = "No target, several targets, or an invalid message", body = ErrorBody),
        (status = 401, description = "Not authenticated", body = ErrorBody),
        (status = 403, description = "The caller lacks the notify permission", body = ErrorBody),
        (status = 404, description = "Unknown user or empty group", body = ErrorBody),
    )
)]
pub async fn publish(
    State(accounts): State<Accounts>,
    State(groups): State<Groups>,
    State(inbox): State<Inbox>,
    State(hub): State<HubContext>,
    Notifier(caller): Notifier,
    Json(body): Json<PublishRequest>,
) -> Result<(StatusCode, Json<PublishResponse>), ApiError> {
    if body.message.len() > MAX_MESSAGE_LENGTH {
        return Err(ApiError::BadRequest(format!(
            "the message is longer than {MAX_MESSAGE_LENGTH} bytes"
        )));
    }
    let targets = usize::from(body.user.is_some())
        + usize::from(body.users.is_some())
        + usize::from(body.group.is_some())
        + usize::from(body.everyone);
    if targets != 1 {
        return Err(ApiError::BadRequest(
            "name exactly one target: user, users, group or everyone".to_owned(),
        ));
    }
    if body.everyone {
        let stored = inbox
            .send_to_everyone(Some(&caller.user), &body.message)
            .instrument(tracing::info_span!(
                "publish",
                otel.name = "publish notification",
                from = %caller.user,
                everyone = true
            ))
            .await?;
        tracing::info!(from = %caller.user, seq = stored.seq, "notification to everyone published");
        return Ok((
            StatusCode::CREATED,
            Json(PublishResponse {
                ids: vec![stored.id],
                notifications: Vec::new(),
            }),
        ));
    }
    // Recipients read from the users table (a group's members) exist; those named by the caller
    // are checked, all in one query.
    let (recipients, named): (Vec<String>, bool) = if let Some(user) = body.user {
        (vec![user], true)
    } else if let Some(users) = body.users {
        // Deduplicated, in a stable order.
        let users: Vec<String> = users
            .into_iter()
            .collect::<BTreeSet<_>>()
            .into_iter()
            .collect();
        (users, true)
    } else {
        let group = body.group.unwrap_or_default();
        let members = groups.members(&group).await?;
        if members.is_empty() {
            return Err(ApiError::NotFound(format!(
                "group '{group}' has no members"
            )));
        }
        (members, false)
    };
    if recipients.is_empty() {
        return Err(ApiError::BadRequest("no recipients".to_owned()));
    }
    if named {
        let unknown = accounts.unknown(&recipients).await?;
        if !unknown.is_empty() {
            return Err(ApiError::NotFound(format!(
                "unknown user(s): {}",
                unknown.join(", ")
            )));
        }
    }
    let stored = inbox
        .send(&hub, Some(&caller.user), &recipients, &body.message)
        .instrument(tracing::info_span!(
            "publish",
            otel.name = "publish notification",
            from = %caller.user,
            recipients = recipients.len()
        ))
        .await?;
    tracing::info!(from = %caller.user, recipients = stored.len(), "notification published");
    let notifications: Vec<StoredNotification> =
        stored.into_iter().map(StoredNotification::from).collect();
    Ok((
        StatusCode::CREATED,
        Json(PublishResponse {
            ids: notifications.iter().map(|n| n.id.clone()).collect(),
            notifications,
        }),
    ))
}
