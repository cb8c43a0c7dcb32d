//! Presence: a user is online while at least one of their connections (tabs, devices) is live.
//! Each connection has a row (connection id, user, node, connected_at, user agent); the user's
//! `last_connected_at` / `last_disconnected_at` change, and `PresenceChanged` is pushed, only on
//! the offline→online and online→offline edges, to the connections watching that user
//! (`watch.rs`; or to every connection, or to none, as `presence.broadcast` says). With several
//! nodes on one database each edge is decided in one transaction (see `store.rs`; concurrent
//! changes share one, see `writer.rs`), so it is pushed once across the cluster; the connections of a dead node are removed by [`crate::cluster`]. The edges and
//! the connections opening and closing are also recorded for the lifecycle webhooks
//! ([`crate::webhooks`]), when they are on.

pub mod store;
pub mod watch;
pub mod writer;

use std::collections::HashMap;
use std::hash::{DefaultHasher, Hash, Hasher};
use std::sync::{Arc, Mutex, OnceLock, PoisonError};

use serde::Serialize;
use signalbox::HubContext;
use utoipa::ToSchema;

use crate::clock::{now_ms, rfc3339};
use crate::config::PresenceBroadcast;
use crate::db::{Db, StoreError};

pub use store::{Change, ConnectionRow, Disconnect, PresenceRow};
pub use watch::{WATCH_ALL_GROUP, WatchError, Watchers, watch_group};
use writer::Writer;

/// Client method that receives [`PresenceChanged`].
pub const PRESENCE_CHANGED: &str = "PresenceChanged";

/// Per-user serialisation stripes: connects and disconnects of one user run one at a time so
/// edges are seen (and pushed) in order; different users rarely share a stripe, so thousands of
/// users connecting at once can share the writer's transactions.
const STRIPES: usize = 4096;

/// Gauge: connections of this node fully set up (presence recorded, missed notifications
/// replayed).
pub const CONNECTIONS_READY: &str = "signalbox_connections_ready";

/// Sent to the connections watching a user when the user goes online or offline.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, ToSchema)]
pub struct PresenceChanged {
    /// The user.
    pub user: String,
    /// Whether the user now has a live connection.
    pub online: bool,
    /// When it changed (RFC 3339).
    pub at: String,
}

/// This node's live connections. Kept compact, as every idle connection has an entry: the user
/// name is stored once per user, a connection's set-up state is a flag, not a second table.
#[derive(Debug, Default)]
struct LocalState {
    /// Each user with a live connection here, and how many it has.
    by_user: HashMap<Arc<str>, usize>,
    by_connection: HashMap<Arc<str>, LocalConnection>,
    /// How many connections are fully set up.
    ready: usize,
}

#[derive(Debug)]
struct LocalConnection {
    user: Arc<str>,
    /// Set up: its presence recorded and its missed notifications replayed.
    ready: bool,
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
    /// Applies connects and disconnects, many per transaction.
    writer: Writer,
    /// Who watches whose presence.
    watchers: Watchers,
    /// Who is told about edges.
    broadcast: PresenceBroadcast,
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

    /// The first `limit` users online on any node (sorted), and how many there are.
    pub async fn online_summary(&self, limit: i64) -> Result<(Vec<String>, i64), StoreError> {
        let first = self.inner.db.online_users_first(limit).await?;
        let count = self.inner.db.online_count().await?;
        Ok((first, count))
    }

    /// Presence for node `node` stored in `db`, pushing edges as `broadcast` says.
    pub fn new(db: Db, node: impl Into<String>, broadcast: PresenceBroadcast) -> Self {
        Self {
            inner: Arc::new(Inner {
                writer: Writer::new(db.clone()),
                db,
                node: node.into(),
                local: Mutex::new(LocalState::default()),
                stripes: (0..STRIPES).map(|_| tokio::sync::Mutex::new(())).collect(),
                watchers: Watchers::default(),
                broadcast,
                webhooks: OnceLock::new(),
            }),
        }
    }

    /// Who is told about edges.
    pub fn broadcast_mode(&self) -> PresenceBroadcast {
        self.inner.broadcast
    }

    /// Connection `connection_id` starts watching `users` (`None`: everyone). Returns those of
    /// them online now (everyone online, sorted, for `None`): edges after this answer are pushed.
    pub async fn watch(
        &self,
        hub: &HubContext,
        connection_id: &str,
        users: Option<&[String]>,
    ) -> Result<Vec<String>, PresenceError> {
        self.inner
            .watchers
            .watch(hub, self.inner.broadcast, connection_id, users)
            .await?;
        Ok(match users {
            None => self.inner.db.online_users().await?,
            Some(users) => self.inner.db.online_among(users).await?,
        })
    }

    /// Connection `connection_id` stops watching `users` (`None`: anyone).
    pub async fn unwatch(
        &self,
        hub: &HubContext,
        connection_id: &str,
        users: Option<&[String]>,
    ) -> Result<(), PresenceError> {
        Ok(self
            .inner
            .watchers
            .unwatch(hub, connection_id, users)
            .await?)
    }

    /// Marks a connection of this node fully set up (its presence recorded and its missed
    /// notifications replayed); ignored if it already ended.
    pub fn set_up(&self, connection_id: &str) {
        let mut local = self.local();
        if let Some(connection) = local.by_connection.get_mut(connection_id)
            && !connection.ready
        {
            connection.ready = true;
            local.ready += 1;
        }
        ready_gauge(local.ready);
    }

    /// How many connections of this node are fully set up.
    pub fn ready_count(&self) -> usize {
        self.local().ready
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
            .is_some_and(|&count| count > 0)
    }

    /// Every live connection of this node with its user.
    pub fn local_connections(&self) -> Vec<(String, String)> {
        self.local()
            .by_connection
            .iter()
            .map(|(c, connection)| (c.to_string(), connection.user.to_string()))
            .collect()
    }

    /// The users with a live connection on this node.
    pub fn local_users(&self) -> Vec<String> {
        self.local()
            .by_user
            .keys()
            .map(|user| user.to_string())
            .collect()
    }

    /// The user of a live connection of this node.
    pub fn user_of(&self, connection_id: &str) -> Option<String> {
        self.local()
            .by_connection
            .get(connection_id)
            .map(|connection| connection.user.to_string())
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
        shared_connection_id: &Arc<str>,
        shared_user: &Arc<str>,
        user_agent: Option<String>,
    ) -> Result<(), StoreError> {
        let (connection_id, user): (&str, &str) = (shared_connection_id, shared_user);
        let _serial = self.stripe(user).lock().await;
        let applied = self
            .inner
            .writer
            .apply(Change::Connect(ConnectionRow {
                connection_id: connection_id.to_owned(),
                user_name: user.to_owned(),
                node: self.inner.node.clone(),
                connected_at: now_ms(),
                user_agent,
            }))
            .await?;
        let (online, now) = (applied.edge, applied.at);
        {
            let mut local = self.local();
            if !local.by_connection.contains_key(connection_id) {
                let user: Arc<str> = match local.by_user.get_key_value(user) {
                    Some((shared, _)) => shared.clone(),
                    None => Arc::from(user),
                };
                *local.by_user.entry(user.clone()).or_default() += 1;
                local
                    .by_connection
                    .insert(connection_id.into(), LocalConnection { user, ready: false });
            }
        }
        // The user's presence event is recorded first: once the connection's event is stored,
        // what the receivers are told about the user is settled.
        let webhooks = self.webhooks();
        if online {
            webhooks.presence_changed(user, now).await;
        }
        webhooks.connection_opened(user, connection_id, now).await;
        if online {
            self.broadcast(hub, user, true, now).await;
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
        self.inner.watchers.forget(connection_id);
        let Some(user) = self.user_of(connection_id) else {
            return Ok(());
        };
        let _serial = self.stripe(&user).lock().await;
        {
            let mut local = self.local();
            if let Some(connection) = local.by_connection.remove(connection_id) {
                if connection.ready {
                    local.ready -= 1;
                    ready_gauge(local.ready);
                }
                if let Some(count) = local.by_user.get_mut(&*connection.user) {
                    *count -= 1;
                    if *count == 0 {
                        local.by_user.remove(&*connection.user);
                    }
                }
            }
        }
        let applied = self
            .inner
            .writer
            .apply(Change::Disconnect {
                user: user.clone(),
                connection_id: connection_id.to_owned(),
            })
            .await?;
        let (offline, now) = (applied.edge, applied.at);
        let webhooks = self.webhooks();
        if offline {
            webhooks.presence_changed(&user, now).await;
        }
        webhooks.connection_closed(&user, connection_id, now).await;
        if offline {
            self.broadcast(hub, &user, false, now).await;
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
                self.broadcast(hub, &user, true, now).await;
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
            self.broadcast(hub, user, false, now).await;
        }
        Ok(offline)
    }

    /// Removes every row of this node (graceful shutdown).
    pub async fn shutdown(&self) -> Result<(), StoreError> {
        let users = self.recover().await?;
        let mut local = self.local();
        local.by_user.clear();
        local.by_connection.clear();
        local.ready = 0;
        ready_gauge(0);
        drop(local);
        tracing::debug!(offline = users.len(), "presence rows of this node removed");
        Ok(())
    }
    /// Pushes `PresenceChanged` to those `presence.broadcast` names.
    async fn broadcast(&self, hub: &HubContext, user: &str, online: bool, at: i64) {
        let clients = hub.clients();
        let target = match self.inner.broadcast {
            PresenceBroadcast::Off => return,
            PresenceBroadcast::All => clients.all(),
            PresenceBroadcast::Watchers => {
                clients.groups([WATCH_ALL_GROUP.to_owned(), watch_group(user)])
            }
        };
        let event = PresenceChanged {
            user: user.to_owned(),
            online,
            at: rfc3339(at),
        };
        if let Err(error) = target.send(PRESENCE_CHANGED, (event,)).await {
            tracing::warn!(%error, user, "cannot push PresenceChanged");
        }
    }
}

/// Why a watch request failed.
#[derive(Debug, thiserror::Error)]
pub enum PresenceError {
    /// The request was refused.
    #[error(transparent)]
    Watch(#[from] WatchError),
    /// Storage failed.
    #[error(transparent)]
    Store(#[from] StoreError),
}

#[allow(clippy::cast_precision_loss)] // a gauge
fn ready_gauge(ready: usize) {
    metrics::gauge!(CONNECTIONS_READY).set(ready as f64);
}
