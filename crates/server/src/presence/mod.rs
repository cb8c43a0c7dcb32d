//! Presence: a user is online while at least one of their connections (tabs, devices) is live.
//! Each connection has a row (connection id, user, node, connected_at, user agent); the user's
//! `last_connected_at` / `last_disconnected_at` change, and `PresenceChanged` is pushed to every
//! client, only on the offline→online and online→offline edges. With several nodes on one
//! database each edge is decided in one transaction (see `store.rs`), so it is pushed once
//! across the cluster; the connections of a dead node are removed by [`crate::cluster`]. The edges and
//! the connections opening and closing are also recorded for the lifecycle webhooks
//! ([`crate::webhooks`]), when they are on.

pub mod store;

use std::collections::{HashMap, HashSet};
use std::hash::{DefaultHasher, Hash, Hasher};
use std::sync::{Arc, Mutex, OnceLock, PoisonError};

use serde::Serialize;
use signalbox::HubContext;
use utoipa::ToSchema;

use crate::clock::{now_ms, rfc3339};
use crate::db::{Db, StoreError};

pub use store::{ConnectionRow, Disconnect, PresenceRow};

/// Client method that receives [`PresenceChanged`].
pub const PRESENCE_CHANGED: &str = "PresenceChanged";

/// Per-user serialisation stripes: connects and disconnects of one user run one at a time so
/// edges are seen exactly once; different users rarely share a stripe.
const STRIPES: usize = 64;

/// Sent to every client when a user goes online or offline.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, ToSchema)]
pub struct PresenceChanged {
    /// The user.
    pub user: String,
    /// Whether the user now has a live connection.
    pub online: bool,
    /// When it changed (RFC 3339).
    pub at: String,
}

#[derive(Debug, Default)]
struct LocalState {
    by_user: HashMap<String, HashSet<String>>,
    by_connection: HashMap<String, String>,
}

/// Tracks the connections of this node and records presence in the database.
#[derive(Debug, Clone)]
pub struct Presence {
    inner: Arc<Inner>,
}

#[derive(Debug)]
struct Inner {
    db: Db,
    node: String,
    // std mutex: never held across an await.
    local: Mutex<LocalState>,
    stripes: Vec<tokio::sync::Mutex<()>>,
    /// Told about every connection and presence edge (lifecycle webhooks).
    webhooks: OnceLock<crate::webhooks::Webhooks>,
}

impl Presence {
    /// A user's presence as stored (connections on every node); `None` for an unknown user.
    pub async fn lookup(&self, user: &str) -> Result<Option<PresenceRow>, StoreError> {
        self.inner.db.presence(user).await
    }

    /// The users online on any node, sorted.
    pub async fn online_users(&self) -> Result<Vec<String>, StoreError> {
        self.inner.db.online_users().await
    }

    /// How many live connections there are, on every node.
    pub async fn connection_total(&self) -> Result<i64, StoreError> {
        self.inner.db.connection_total().await
    }

    /// The user of a live connection on any node; `None` if presence does not know it.
    pub async fn connection_user(&self, connection_id: &str) -> Result<Option<String>, StoreError> {
        self.inner.db.connection_user(connection_id).await
    }

    /// How many live connections `user` has, on every node.
    pub async fn connection_count(&self, user: &str) -> Result<i64, StoreError> {
        self.inner.db.connection_count(user).await
    }

    /// How many live connections `user` has on the other nodes.
    pub async fn remote_connection_count(&self, user: &str) -> Result<i64, StoreError> {
        self.inner
            .db
            .remote_connection_count(user, &self.inner.node)
            .await
    }

    /// Presence for node `node` stored in `db`.
    pub fn new(db: Db, node: impl Into<String>) -> Self {
        Self {
            inner: Arc::new(Inner {
                db,
                node: node.into(),
                local: Mutex::new(LocalState::default()),
                stripes: (0..STRIPES).map(|_| tokio::sync::Mutex::new(())).collect(),
                webhooks: OnceLock::new(),
            }),
        }
    }

    /// Tells `webhooks` about connections and presence edges from now on (once; call before
    /// [`Presence::recover`]).
    pub fn attach_webhooks(&self, webhooks: crate::webhooks::Webhooks) {
        if self.inner.webhooks.set(webhooks).is_err() {
            tracing::warn!("webhooks attached to presence twice; the first stay");
        }
    }

    /// The attached webhooks (off when none were).
    fn webhooks(&self) -> crate::webhooks::Webhooks {
        self.inner.webhooks.get().cloned().unwrap_or_default()
    }

    /// This node's name.
    pub fn node(&self) -> &str {
        &self.inner.node
    }

    fn stripe(&self, user: &str) -> &tokio::sync::Mutex<()> {
        let mut hasher = DefaultHasher::new();
        user.hash(&mut hasher);
        let index = usize::try_from(hasher.finish() % STRIPES as u64).unwrap_or(0);
        &self.inner.stripes[index % self.inner.stripes.len()]
    }

    fn local(&self) -> std::sync::MutexGuard<'_, LocalState> {
        // A panic while holding the lock cannot leave the maps half-updated in a way that
        // matters more than losing presence entirely, so keep going with the data.
        self.inner
            .local
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
    }

    /// Whether `user` has a live connection on this node.
    pub fn is_online_here(&self, user: &str) -> bool {
        self.local()
            .by_user
            .get(user)
            .is_some_and(|c| !c.is_empty())
    }

    /// Every live connection of this node with its user.
    pub fn local_connections(&self) -> Vec<(String, String)> {
        self.local()
            .by_connection
            .iter()
            .map(|(c, u)| (c.clone(), u.clone()))
            .collect()
    }

    /// The users with a live connection on this node.
    pub fn local_users(&self) -> Vec<String> {
        self.local().by_user.keys().cloned().collect()
    }

    /// The user of a live connection of this node.
    pub fn user_of(&self, connection_id: &str) -> Option<String> {
        self.local().by_connection.get(connection_id).cloned()
    }

    /// Removes the rows a previous process of this node left behind (it crashed or was killed)
    /// and marks their users offline. Call once at start.
    pub async fn recover(&self) -> Result<Vec<String>, StoreError> {
        let now = now_ms();
        let offline = self
            .inner
            .db
            .clear_node_connections(&self.inner.node, now)
            .await?;
        let webhooks = self.webhooks();
        for user in &offline {
            webhooks.presence_changed(user, now).await;
        }
        Ok(offline)
    }

    /// Records a new connection of `user`; on the offline→online edge sets `last_connected_at`
    /// and tells every client.
    pub async fn connected(
        &self,
        hub: &HubContext,
        connection_id: &str,
        user: &str,
        user_agent: Option<String>,
    ) -> Result<(), StoreError> {
        let _serial = self.stripe(user).lock().await;
        let now = now_ms();
        let online = self
            .inner
            .db
            .connect_edge(&ConnectionRow {
                connection_id: connection_id.to_owned(),
                user_name: user.to_owned(),
                node: self.inner.node.clone(),
                connected_at: now,
                user_agent,
            })
            .await?;
        {
            let mut local = self.local();
            local
                .by_user
                .entry(user.to_owned())
                .or_default()
                .insert(connection_id.to_owned());
            local
                .by_connection
                .insert(connection_id.to_owned(), user.to_owned());
        }
        // The user's presence event is recorded first: once the connection's event is stored,
        // what the receivers are told about the user is settled.
        let webhooks = self.webhooks();
        if online {
            webhooks.presence_changed(user, now).await;
        }
        webhooks.connection_opened(user, connection_id, now).await;
        if online {
            broadcast(hub, user, true, now).await;
        }
        Ok(())
    }

    /// Forgets a connection; on the online→offline edge sets `last_disconnected_at` and tells
    /// every client. Unknown connections (that never completed `connected`) are ignored.
    pub async fn disconnected(
        &self,
        hub: &HubContext,
        connection_id: &str,
    ) -> Result<(), StoreError> {
        let Some(user) = self.user_of(connection_id) else {
            return Ok(());
        };
        let _serial = self.stripe(&user).lock().await;
        {
            let mut local = self.local();
            local.by_connection.remove(connection_id);
            if let Some(set) = local.by_user.get_mut(&user) {
                set.remove(connection_id);
                if set.is_empty() {
                    local.by_user.remove(&user);
                }
            }
        }
        let now = now_ms();
        let offline = self
            .inner
            .db
            .disconnect_edge(&user, Disconnect::Connection(connection_id), now)
            .await?;
        let webhooks = self.webhooks();
        if offline {
            webhooks.presence_changed(&user, now).await;
        }
        webhooks.connection_closed(&user, connection_id, now).await;
        if offline {
            broadcast(hub, &user, false, now).await;
        }
        Ok(())
    }

    /// Records this node's live connections again (after other nodes took it for dead and
    /// removed its rows); pushes the online edges that makes.
    pub async fn reregister(&self, hub: &HubContext) -> Result<usize, StoreError> {
        let mut online = 0;
        for (connection_id, user) in self.local_connections() {
            let _serial = self.stripe(&user).lock().await;
            if self.user_of(&connection_id).is_none() {
                continue; // gone meanwhile
            }
            let now = now_ms();
            let row = ConnectionRow {
                connection_id,
                user_name: user.clone(),
                node: self.inner.node.clone(),
                connected_at: now,
                user_agent: None,
            };
            if self.inner.db.connect_edge(&row).await? {
                online += 1;
                self.webhooks().presence_changed(&user, now).await;
                broadcast(hub, &user, true, now).await;
            }
        }
        Ok(online)
    }

    /// Removes the rows of dead node `node` for `user`; pushes `PresenceChanged` if that took the
    /// user offline (exactly one node sees the edge). Returns whether it did.
    pub async fn reap(&self, hub: &HubContext, node: &str, user: &str) -> Result<bool, StoreError> {
        let now = now_ms();
        let offline = self
            .inner
            .db
            .disconnect_edge(user, Disconnect::Node(node), now)
            .await?;
        if offline {
            self.webhooks().presence_changed(user, now).await;
            broadcast(hub, user, false, now).await;
        }
        Ok(offline)
    }

    /// Removes every row of this node (graceful shutdown).
    pub async fn shutdown(&self) -> Result<(), StoreError> {
        let users = self.recover().await?;
        let mut local = self.local();
        local.by_user.clear();
        local.by_connection.clear();
        drop(local);
        tracing::debug!(offline = users.len(), "presence rows of this node removed");
        Ok(())
    }
}

async fn broadcast(hub: &HubContext, user: &str, online: bool, at: i64) {
    let event = PresenceChanged {
        user: user.to_owned(),
        online,
        at: rfc3339(at),
    };
    if let Err(error) = hub.clients().all().send(PRESENCE_CHANGED, (event,)).await {
        tracing::warn!(%error, user, "cannot push PresenceChanged");
    }
}
