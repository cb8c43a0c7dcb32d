//! The admin API handlers (the admin role is required on every one).

use std::collections::BTreeMap;

use axum::Json;
use axum::extract::{Path, State};
use axum::http::StatusCode;
use serde::{Deserialize, Serialize};

use std::sync::Arc;

use signalbox::HubContext;

use crate::api::ApiError;
use crate::api::extract::Admin;
use crate::auth::accounts::{Accounts, NewUser};
use crate::clock::rfc3339;
use crate::config::Config;
use crate::db::Db;
use crate::groups::Groups;
use crate::logging::LoggedEvent;
use crate::notifications::inbox::Inbox;
use crate::notifications::inbox::MAX_MESSAGE_LENGTH;
use crate::ops::metrics::{Sample, sum_metric};
use crate::presence::Presence;
use crate::state::AppState;

/// At most this many online users are listed in the stats.
const ONLINE_LISTED: usize = 200;

/// At most this many groups are listed in the stats.
const GROUPS_LISTED: i64 = 100;

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
    /// Connections of this node fully set up (presence recorded, missed notifications
    /// replayed).
    pub connections_ready: usize,
    /// Connections recorded by presence, all nodes.
    pub connections_total: i64,
    /// How many users are online (all nodes).
    pub online_count: i64,
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
pub async fn stats(State(state): State<AppState>, _admin: Admin) -> Result<Json<Stats>, ApiError> {
    let (online, online_count) = state
        .presence
        .online_summary(i64::try_from(ONLINE_LISTED).unwrap_or(i64::MAX))
        .await?;
    let connections_total = state.presence.connection_total().await?;
    let groups = state
        .groups
        .sizes(GROUPS_LISTED)
        .await?
        .into_iter()
        .map(|(name, members)| GroupSummary { name, members })
        .collect();
    let text = state.metrics.render();
    use signalbox::metrics as lib;
    let totals = Totals {
        messages_received: sum_metric(&text, lib::MESSAGES_RECEIVED, None),
        messages_sent: sum_metric(&text, lib::MESSAGES_SENT, None),
        invocations: sum_metric(&text, lib::INVOCATIONS, None),
        invocation_errors: sum_metric(&text, lib::INVOCATIONS, Some(("outcome", "error"))),
        auth_failures: sum_metric(&text, lib::AUTH_FAILURES, None),
        notifications_published: sum_metric(
            &text,
            crate::ops::metrics::NOTIFICATIONS_PUBLISHED,
            None,
        ),
        queue_drops: sum_metric(&text, lib::OUTBOUND_QUEUE_DROPS, None),
    };
    Ok(Json(Stats {
        node: state.config.node.clone(),
        uptime_seconds: state.metrics.uptime().as_secs(),
        database: state.db.backend().to_string(),
        connections_here: state.hub.lifetime_manager().connection_count(),
        connections_total,
        connections_ready: state.presence.ready_count(),
        online_count,
        online_users: online,
        groups,
        totals,
        samples: state.metrics.samples(),
        recent_errors: crate::logging::recent(),
    }))
}

/// `GET /api/admin/users/{user}/connections`: 404 for an unknown user.
pub async fn user_connections(
    State(presence): State<Presence>,
    _admin: Admin,
    Path(user): Path<String>,
) -> Result<Json<Vec<ConnectionInfo>>, ApiError> {
    let presence = presence
        .lookup(&user)
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
    State(presence): State<Presence>,
    State(hub): State<HubContext>,
    Admin(admin): Admin,
    Path(id): Path<String>,
) -> Result<StatusCode, ApiError> {
    let Some(user) = presence.connection_user(&id).await? else {
        return Err(ApiError::NotFound(format!("no live connection '{id}'")));
    };
    tracing::info!(admin = %admin.user, %user, connection_id = %id, "connection closed by an admin");
    hub.abort_connection(&id).await;
    Ok(StatusCode::NO_CONTENT)
}

/// `PUT /api/admin/groups/{group}/members/{user}` (idempotent).
pub async fn add_member(
    State(groups): State<Groups>,
    State(accounts): State<Accounts>,
    _admin: Admin,
    Path((group, user)): Path<(String, String)>,
) -> Result<StatusCode, ApiError> {
    crate::groups::routes::add(&groups, &accounts, &group, &user).await
}

/// `DELETE /api/admin/groups/{group}/members/{user}`: 404 if not a member.
pub async fn remove_member(
    State(groups): State<Groups>,
    _admin: Admin,
    Path((group, user)): Path<(String, String)>,
) -> Result<StatusCode, ApiError> {
    crate::groups::routes::remove(&groups, &group, &user).await
}

/// At most this many accounts are listed.
const USERS_LISTED: i64 = 500;

/// One account as the dashboard lists it.
#[derive(Debug, Serialize)]
pub struct UserSummary {
    /// User name.
    pub name: String,
    /// Roles.
    pub roles: Vec<String>,
    /// Whether the account carries the notify permission.
    pub can_notify: bool,
    /// Whether the account is disabled.
    pub disabled: bool,
    /// When it was created (RFC 3339).
    pub created_at: String,
}

/// A new account from the dashboard.
#[derive(Debug, Deserialize)]
pub struct NewUserRequest {
    /// User name.
    pub username: String,
    /// Password (at least 8 characters).
    pub password: String,
    /// Give the account the notify permission (`auth.permission_claim` = `auth.notify_permission`).
    #[serde(default)]
    pub notify: bool,
}

/// The created account.
#[derive(Debug, Serialize)]
pub struct CreatedUser {
    /// User name.
    pub username: String,
    /// Whether it may send notifications.
    pub can_notify: bool,
}

/// Whether `POST /api/auth/register` is open, and why.
#[derive(Debug, Serialize)]
pub struct RegistrationState {
    /// The effective value.
    pub enabled: bool,
    /// `dashboard` when an administrator set it (the stored value wins), else `configuration`.
    pub source: &'static str,
    /// The configured value (`auth.registration`), used while the dashboard has not set one.
    pub configured: bool,
}

/// A change of the registration switch.
#[derive(Debug, Deserialize)]
pub struct RegistrationChange {
    /// Open (`true`) or close registration. `null` forgets the dashboard's value: the
    /// configuration decides again.
    pub enabled: Option<bool>,
}

/// A notification sent from the dashboard.
#[derive(Debug, Deserialize)]
pub struct TestNotification {
    /// The recipient; the administrator when absent or empty.
    #[serde(default)]
    pub user: Option<String>,
    /// The text (at most 16 KiB).
    pub message: String,
}

/// The stored notification.
#[derive(Debug, Serialize)]
pub struct SentNotification {
    /// Notification id.
    pub id: String,
    /// Recipient.
    pub user: String,
}

/// `GET /api/admin/users`: the accounts, sorted by name (the first 500).
pub async fn list_users(
    State(accounts): State<Accounts>,
    State(config): State<Arc<Config>>,
    _admin: Admin,
) -> Result<Json<Vec<UserSummary>>, ApiError> {
    let claim = &config.auth.permission_claim;
    let permission = &config.auth.notify_permission;
    let users = accounts
        .summaries(USERS_LISTED)
        .await?
        .into_iter()
        .map(|account| UserSummary {
            can_notify: account
                .claims
                .get(claim)
                .is_some_and(|values| values.iter().any(|v| v == permission)),
            name: account.name,
            roles: account.roles,
            disabled: account.disabled,
            created_at: rfc3339(account.created_at),
        })
        .collect();
    Ok(Json(users))
}

/// `POST /api/admin/users`: creates an account (201; 400 for an invalid name or password, 409
/// when the name is taken).
pub async fn create_user(
    State(config): State<Arc<Config>>,
    State(accounts): State<Accounts>,
    Admin(admin): Admin,
    Json(body): Json<NewUserRequest>,
) -> Result<(StatusCode, Json<CreatedUser>), ApiError> {
    let mut claims = BTreeMap::new();
    if body.notify {
        claims.insert(
            config.auth.permission_claim.clone(),
            vec![config.auth.notify_permission.clone()],
        );
    }
    let user = accounts
        .create(NewUser {
            name: body.username.trim().to_owned(),
            password: Some(body.password),
            roles: Vec::new(),
            claims,
        })
        .await?;
    tracing::info!(admin = %admin.user, user = %user.name, notify = body.notify, "account created by an admin");
    Ok((
        StatusCode::CREATED,
        Json(CreatedUser {
            username: user.name,
            can_notify: body.notify,
        }),
    ))
}

/// `GET /api/admin/registration`.
pub async fn get_registration(
    State(db): State<Db>,
    State(config): State<Arc<Config>>,
    _admin: Admin,
) -> Result<Json<RegistrationState>, ApiError> {
    Ok(Json(super::registration(&db, &config).await?))
}

/// `PUT /api/admin/registration`: `{"enabled": true|false}` opens or closes registration (kept
/// in the database, so across restarts and for every node); `{"enabled": null}` hands the
/// decision back to the configuration.
pub async fn set_registration(
    State(db): State<Db>,
    State(config): State<Arc<Config>>,
    Admin(admin): Admin,
    Json(body): Json<RegistrationChange>,
) -> Result<Json<RegistrationState>, ApiError> {
    match body.enabled {
        Some(enabled) => {
            db.set_setting(
                super::REGISTRATION_SETTING,
                if enabled { "true" } else { "false" },
                crate::clock::now_ms(),
            )
            .await?;
        }
        None => {
            db.delete_setting(super::REGISTRATION_SETTING).await?;
        }
    }
    let now = super::registration(&db, &config).await?;
    tracing::info!(admin = %admin.user, enabled = now.enabled, source = now.source, "registration changed by an admin");
    Ok(Json(now))
}

/// `POST /api/admin/notifications`: stores a notification for one user (the administrator when
/// none is named) and delivers it if they are online, like the publish API.
pub async fn send_notification(
    State(accounts): State<Accounts>,
    State(inbox): State<Inbox>,
    State(hub): State<HubContext>,
    Admin(admin): Admin,
    Json(body): Json<TestNotification>,
) -> Result<(StatusCode, Json<SentNotification>), ApiError> {
    let user = body
        .user
        .map(|u| u.trim().to_owned())
        .filter(|u| !u.is_empty())
        .unwrap_or_else(|| admin.user.clone());
    if body.message.trim().is_empty() {
        return Err(ApiError::BadRequest("the message is empty".to_owned()));
    }
    if body.message.len() > MAX_MESSAGE_LENGTH {
        return Err(ApiError::BadRequest(format!(
            "the message is longer than {MAX_MESSAGE_LENGTH} bytes"
        )));
    }
    if !accounts.exists(&user).await? {
        return Err(ApiError::NotFound(format!("unknown user '{user}'")));
    }
    let stored = inbox
        .send(
            &hub,
            Some(&admin.user),
            std::slice::from_ref(&user),
            &body.message,
        )
        .await?;
    let Some(first) = stored.into_iter().next() else {
        return Err(ApiError::internal("the notification was not stored"));
    };
    tracing::info!(admin = %admin.user, recipient = %first.user, "test notification sent from the dashboard");
    Ok((
        StatusCode::CREATED,
        Json(SentNotification {
            id: first.id,
            user: first.user,
        }),
    ))
}
