//! The notification hub at `/hubs/notifications` (authenticated). Each connection joins its
//! user's group, is recorded by presence, and receives the notifications it missed.
//!
//! Server methods: `SendNotification(userId, message)` (needs the notify permission claim),
//! `MarkRead(id)`, `GetOnlineUsers()`, `WatchPresence(users | null)` (returns those of them
//! online; `null`: everyone), `UnwatchPresence(users | null)`. Client methods: `Notification`,
//! `PresenceChanged` (to watchers, see [`crate::presence::watch`]).

use std::sync::Arc;

use signalbox::lifetime::HubLifetimeManager;
use signalbox::{Caller, ClusterNode, ConnectionOptions, Hub, HubError, Policy};

use crate::auth::accounts::Accounts;
use crate::auth::identity::Authenticator;
use crate::db::StoreError;
use crate::notifications::inbox::{Inbox, MAX_MESSAGE_LENGTH};
use crate::presence::{Presence, PresenceError};

/// Where the hub is mounted.
pub const HUB_PATH: &str = "/hubs/notifications";

/// What the hub's methods use.
#[derive(Debug, Clone)]
pub struct HubServices {
    /// Accounts (recipients must exist).
    pub accounts: Accounts,
    /// Principal → local user.
    pub identity: Authenticator,
    /// Presence.
    pub presence: Presence,
    /// The inbox.
    pub inbox: Inbox,
}

fn internal(error: &StoreError) -> HubError {
    tracing::error!(%error, "storage failure in a hub method");
    HubError::internal(error.to_string())
}

fn presence_error(error: PresenceError) -> HubError {
    match error {
        PresenceError::Store(e) => internal(&e),
        PresenceError::Watch(e) => HubError::new(e.to_string()),
    }
}

/// The caller's local user, as recorded when it connected.
fn caller_user(services: &HubServices, caller: &Caller) -> Result<String, HubError> {
    services
        .presence
        .user_of(caller.connection_id())
        .ok_or_else(|| HubError::new("the connection has no user"))
}

/// How the hub spans several nodes.
#[derive(Default)]
pub struct HubScaling {
    /// The backplane's lifetime manager; `None` = in-memory.
    pub lifetime: Option<Arc<dyn HubLifetimeManager>>,
    /// The secret connection tokens are signed with, so WebSockets may connect to any node.
    pub connection_token_secret: Option<String>,
    /// This node and where the others are: with the secret, requests of Server-Sent Events and
    /// long polling that reach another node are forwarded to the one holding the connection.
    pub cluster_node: Option<ClusterNode>,
}

impl std::fmt::Debug for HubScaling {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("HubScaling")
            .field("scaled", &self.lifetime.is_some())
            .field("signed_tokens", &self.connection_token_secret.is_some())
            .field(
                "cluster_node",
                &self.cluster_node.as_ref().map(|node| &node.id),
            )
            .finish()
    }
}

/// Builds the hub: `auth` (the REST API's authenticator) validates tokens and maps them to local
/// users, `notify` gates `SendNotification`. Connections close when their token expires unless
/// the client refreshes them (`POST /hubs/notifications/refresh?id=…`, as ASP.NET Core 11).
pub fn notifications_hub(
    auth: Authenticator,
    notify: Policy,
    services: HubServices,
    scaling: HubScaling,
) -> Hub {
    let on_connect = services.clone();
    let on_disconnect = services.clone();
    let send = services.clone();
    let mark = services.clone();
    let online = services.clone();
    let watch = services.clone();
    let unwatch = services;
    let mut builder = Hub::builder("notifications");
    if let Some(lifetime) = scaling.lifetime {
        builder = builder.lifetime_manager(lifetime);
    }
    builder = builder.connection_options(
        ConnectionOptions::default()
            .close_on_authentication_expiration(true)
            .enable_authentication_refresh(true)
            .connection_token_secret(
                scaling
                    .connection_token_secret
                    .map(|secret| Arc::from(secret.into_bytes().into_boxed_slice())),
            )
            .cluster_node(scaling.cluster_node),
    );
    builder
        .authentication(auth)
        .authorize(Policy::authenticated())
        .on_connected(move |caller: Caller| {
            let s = on_connect.clone();
            async move {
                // The authenticator mapped the token to its local user and checked that the
                // sign-in stands; remember the session so that ending it closes this connection.
                // The tables of connections below share the hub's ids instead of copying them.
                let user = caller
                    .shared_user_id()
                    .ok_or_else(|| HubError::new("authentication required"))?;
                let connection_id = caller.shared_connection_id();
                let session = caller
                    .principal()
                    .and_then(|p| p.claim("sid"))
                    .and_then(serde_json::Value::as_str);
                s.identity
                    .sessions()
                    .track(connection_id.clone(), user.clone(), session);
                // Notifications reach the user's connections as a SignalR user target (the
                // connection's user id is the local account name).
                let hub = caller.context();
                let user_agent = caller.request().header("user-agent").map(str::to_owned);
                s.presence
                    .connected(hub, &connection_id, &user, user_agent)
                    .await
                    .map_err(|e| internal(&e))?;
                let replayed = s
                    .inbox
                    .replay_on_connect(hub, &user)
                    .await
                    .map_err(|e| internal(&e))?
                    + s.inbox
                        .broadcasts()
                        .connected(hub, &connection_id, &user)
                        .await
                        .map_err(|e| internal(&e))?;
                s.presence.set_up(caller.connection_id());
                tracing::debug!(%user, replayed, "connected");
                Ok(())
            }
        })
        .on_disconnected(move |caller: Caller| {
            let s = on_disconnect.clone();
            async move {
                s.identity.sessions().untrack(caller.connection_id());
                if let Err(error) = s
                    .inbox
                    .broadcasts()
                    .disconnected(caller.connection_id())
                    .await
                {
                    tracing::warn!(%error, "cannot record the broadcasts a connection received");
                }
                s.presence
                    .disconnected(caller.context(), caller.connection_id())
                    .await
                    .map_err(|e| internal(&e))
            }
        })
        .method(
            "SendNotification",
            move |caller: Caller, (user_id, message): (String, String)| {
                let s = send.clone();
                async move {
                    let from = caller_user(&s, &caller)?;
                    if message.len() > MAX_MESSAGE_LENGTH {
                        return Err(HubError::new(format!(
                            "the message is longer than {MAX_MESSAGE_LENGTH} bytes"
                        )));
                    }
                    if !s
                        .accounts
                        .exists(&user_id)
                        .await
                        .map_err(|e| internal(&e))?
                    {
                        return Err(HubError::new(format!("unknown user '{user_id}'")));
                    }
                    let stored = s
                        .inbox
                        .send(caller.context(), Some(&from), &[user_id], &message)
                        .await
                        .map_err(|e| internal(&e))?;
                    Ok(stored.into_iter().next().map(|s| s.id).unwrap_or_default())
                }
            },
        )
        .method_policy("SendNotification", notify)
        .method("MarkRead", move |caller: Caller, (id,): (String,)| {
            let s = mark.clone();
            async move {
                let user = caller_user(&s, &caller)?;
                s.inbox
                    .mark_read(&user, &id)
                    .await
                    .map_err(|e| internal(&e))
            }
        })
        .method("GetOnlineUsers", move |_caller: Caller, ()| {
            let s = online.clone();
            async move { s.presence.online_users().await.map_err(|e| internal(&e)) }
        })
        .method(
            "WatchPresence",
            move |caller: Caller, (users,): (Option<Vec<String>>,)| {
                let s = watch.clone();
                async move {
                    s.presence
                        .watch(caller.context(), caller.connection_id(), users.as_deref())
                        .await
                        .map_err(presence_error)
                }
            },
        )
        .method(
            "UnwatchPresence",
            move |caller: Caller, (users,): (Option<Vec<String>>,)| {
                let s = unwatch.clone();
                async move {
                    s.presence
                        .unwatch(caller.context(), caller.connection_id(), users.as_deref())
                        .await
                        .map_err(presence_error)
                }
            },
        )
        .build()
}
