//! The durable inbox. A notification is stored, one row per recipient, before it is delivered;
//! a notification to every account is stored once (see [`super::broadcasts`]) and listed, read
//! and expired here with the others.
//! Recipients online on this node get it at once (the row is marked delivered by whoever claims
//! it first); a recipient who was offline gets everything undelivered when a connection comes
//! up, once. Live delivery is at-most-once, as in SignalR; the stored row stays readable through
//! `GET /api/notifications` until the retention period ends.
//!
//! With a backplane, a recipient connected to another node is pushed to through it (its
//! `user:NAME` group spans the cluster). While the backplane is down, notifications for users
//! with connections on other nodes are left undelivered; when it is back, each node delivers the
//! undelivered notifications of its users ([`Inbox::redeliver_local`]).
//!
//! ## Many recipients
//!
//! A notification to many users (a group, a long `users` list) costs a few
//! statements, not a few per recipient:
//!
//! - **Storing**: the rows go in multi-row INSERTs of up to
//!   [`INSERT_CHUNK`](super::store::INSERT_CHUNK) rows in one transaction; the values the rows
//!   share (sender, message, time) are bound once per statement, each row adds its id and
//!   recipient. The `Any` driver binds scalars only (no arrays, so no `unnest` on PostgreSQL);
//!   multi-row VALUES work on both databases and stay far below SQLite's 32,766 parameters.
//! - **Who to push to**: users connected to this node come from memory. Without a backplane
//!   that is all. With a healthy backplane, users connected elsewhere are found by reading the
//!   users online (presence's `connections` table) once for the whole notification, rather than
//!   counting each user's connections; for a handful of recipients the per-user count is
//!   cheaper and kept. While the backplane is down only local users are candidates, and each
//!   is checked for connections elsewhere (degraded mode, bounded by this node's users).
//! - **Claiming**: the rows to push are marked delivered with one set-based UPDATE (`id IN (…)`,
//!   `RETURNING id`); only the ids this call claimed are pushed, so a replay racing with it (a
//!   connection coming up) delivers each row once, whoever wins.
//! - **Pushing**: each row has its own id, so each recipient gets its own message on their
//!   `user:NAME` group; these pushes run concurrently. With a backplane that is one envelope per
//!   recipient online. A single cluster-wide broadcast carrying every (user, id) pair was
//!   considered and not chosen: each node would deserialise the whole list, and the
//!   per-user group already reaches exactly the nodes with that user's connections.

use std::collections::HashSet;
use std::sync::Arc;
use std::time::Duration;

use futures_util::StreamExt as _;

use serde::Serialize;
use signalbox::HubContext;
use tracing::Instrument as _;
use utoipa::ToSchema;

use super::broadcasts::Broadcasts;
use super::store::{BroadcastRow, NotificationRow, ReceivedBroadcast};
use crate::clock::{duration_ms, now_ms, rfc3339};
use crate::cluster::backplane::ClusterBackplane;
use crate::db::coalesce::Coalescer;
use crate::db::{Db, StoreError};
use crate::presence::Presence;

/// Client method that receives [`Notification`].
pub const NOTIFICATION: &str = "Notification";

/// Longest accepted message, in bytes.
pub const MAX_MESSAGE_LENGTH: usize = 16 * 1024;

/// Up to this many recipients connected elsewhere are looked up one by one; more, and the
/// users online anywhere are read once.
const FEW_USERS: usize = 8;

/// Pushes to distinct recipients in flight at once (each may wait for the backplane).
const PUSH_CONCURRENCY: usize = 64;

/// What a recipient's client receives as the single argument of `Notification`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, ToSchema)]
pub struct Notification {
    /// Notification id.
    pub id: String,
    /// The sender's user name, if any.
    pub from: Option<String>,
    /// The text.
    pub message: String,
    /// When it was stored (RFC 3339).
    pub created_at: String,
}

/// A notification as listed by the inbox API.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, ToSchema)]
pub struct InboxItem {
    /// Notification id.
    pub id: String,
    /// The sender's user name, if any.
    pub from: Option<String>,
    /// The text.
    pub message: String,
    /// When it was stored (RFC 3339).
    pub created_at: String,
    /// When it was read (RFC 3339), or null if unread.
    pub read_at: Option<String>,
}

impl From<&NotificationRow> for Notification {
    fn from(row: &NotificationRow) -> Self {
        Self {
            id: row.id.clone(),
            from: row.sender.clone(),
            message: row.message.clone(),
            created_at: rfc3339(row.created_at),
        }
    }
}

impl From<NotificationRow> for InboxItem {
    fn from(row: NotificationRow) -> Self {
        Self {
            id: row.id,
            from: row.sender,
            message: row.message,
            created_at: rfc3339(row.created_at),
            read_at: row.read_at.map(rfc3339),
        }
    }
}

impl From<ReceivedBroadcast> for InboxItem {
    fn from(row: ReceivedBroadcast) -> Self {
        Self {
            id: row.broadcast.id,
            from: row.broadcast.sender,
            message: row.broadcast.message,
            created_at: rfc3339(row.broadcast.created_at),
            read_at: row.read_at.map(rfc3339),
        }
    }
}

/// One stored notification and its recipient.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, ToSchema)]
pub struct Stored {
    /// The notification id.
    pub id: String,
    /// The recipient.
    pub user: String,
}

/// The inbox: storage plus delivery.
#[derive(Debug, Clone)]
pub struct Inbox {
    db: Db,
    presence: Presence,
    backplane: Option<ClusterBackplane>,
    /// Which users have undelivered notifications, asked by many connects in one query.
    undelivered: Arc<Coalescer<()>>,
    /// Notifications to every account.
    broadcasts: Broadcasts,
}

impl Inbox {
    /// An inbox over `db`, delivering to the connections `presence` knows.
    pub fn new(db: Db, presence: Presence) -> Self {
        let undelivered = Coalescer::new(
            db.clone(),
            Arc::new(|db: Db, users: Vec<String>| {
                Box::pin(async move { db.undelivered_recipients(&users).await }) as _
            }),
        );
        Self {
            broadcasts: Broadcasts::new(db.clone()),
            db,
            presence,
            backplane: None,
            undelivered: Arc::new(undelivered),
        }
    }

    /// The notifications to every account.
    pub fn broadcasts(&self) -> &Broadcasts {
        &self.broadcasts
    }

    /// Stores `message` once for every account and delivers it to every connection (see
    /// [`super::broadcasts`]).
    pub async fn send_to_everyone(
        &self,
        from: Option<&str>,
        message: &str,
    ) -> Result<BroadcastRow, StoreError> {
        self.broadcasts.publish(from, message).await
    }

    /// Delivers to recipients on other nodes through `backplane`.
    #[must_use]
    pub fn with_backplane(mut self, backplane: Option<ClusterBackplane>) -> Self {
        self.backplane = backplane;
        self
    }

    /// Which of `users` a notification should be pushed to now: those connected here, and those
    /// connected elsewhere if the backplane can reach them. While the backplane is down, a user
    /// also connected to other nodes is left for [`Inbox::redeliver_local`], so that no
    /// connection misses it. Asks the database at most once for many users (see the module doc).
    async fn deliverable<'a>(&self, users: &[&'a str]) -> Result<HashSet<&'a str>, StoreError> {
        let (here, elsewhere): (Vec<&'a str>, Vec<&'a str>) = users
            .iter()
            .partition(|user| self.presence.is_online_here(user));
        let Some(backplane) = &self.backplane else {
            return Ok(here.into_iter().collect());
        };
        let mut reachable: HashSet<&'a str> = HashSet::with_capacity(users.len());
        if backplane.is_healthy() {
            reachable.extend(here);
            if elsewhere.len() <= FEW_USERS {
                for user in elsewhere {
                    if self.presence.connection_count(user).await? > 0 {
                        reachable.insert(user);
                    }
                }
            } else {
                let online: HashSet<String> =
                    self.presence.online_users().await?.into_iter().collect();
                reachable.extend(elsewhere.into_iter().filter(|u| online.contains(*u)));
            }
        } else {
            for user in here {
                if self.presence.remote_connection_count(user).await? == 0 {
                    reachable.insert(user);
                }
            }
        }
        Ok(reachable)
    }

    /// Delivers the undelivered notifications of every user connected to this node (after the
    /// backplane came back). Returns how many.
    pub async fn redeliver_local(&self, hub: &HubContext) -> Result<usize, StoreError> {
        let mut total = 0;
        for user in self.presence.local_users() {
            total += self.replay(hub, &user).await?;
        }
        Ok(total)
    }

    /// Stores `message` for every recipient (all or none), then delivers it to those online.
    pub async fn send(
        &self,
        hub: &HubContext,
        from: Option<&str>,
        recipients: &[String],
        message: &str,
    ) -> Result<Vec<Stored>, StoreError> {
        let rows = notification_rows(from, recipients, message);
        self.db
            .insert_notifications(&rows)
            .instrument(tracing::info_span!(
                "inbox write",
                otel.kind = "client",
                db.operation.name = "insert",
                notifications = rows.len()
            ))
            .await?;
        crate::ops::metrics::published(rows.len());
        self.deliver(hub, &rows).await?;
        Ok(rows
            .into_iter()
            .map(|r| Stored {
                id: r.id,
                user: r.recipient,
            })
            .collect())
    }

    /// Delivers stored notifications to those of their recipients online (the second half of
    /// [`Inbox::send`]; also used by [`crate::notifications::outbox`] after its own transaction
    /// stored them): finds the recipients to push to, claims their rows with set-based UPDATEs
    /// and pushes each claimed row to its recipient's group, [`PUSH_CONCURRENCY`] at a time.
    pub(crate) async fn deliver(
        &self,
        hub: &HubContext,
        rows: &[NotificationRow],
    ) -> Result<(), StoreError> {
        let users: Vec<&str> = rows.iter().map(|row| row.recipient.as_str()).collect();
        // Offline (or unreachable): left for the replay when a connection comes up.
        let reachable = self.deliverable(&users).await?;
        let ids: Vec<&str> = rows
            .iter()
            .filter(|row| reachable.contains(row.recipient.as_str()))
            .map(|row| row.id.as_str())
            .collect();
        if ids.is_empty() {
            return Ok(());
        }
        let claimed = self
            .db
            .claim_deliveries(&ids, now_ms())
            .instrument(tracing::info_span!(
                "inbox claim",
                otel.kind = "client",
                db.operation.name = "update",
                notifications = ids.len()
            ))
            .await?;
        // A recipient has one row per notification, so the pushes of one call are to distinct
        // users and may run concurrently without reordering anyone's notifications.
        futures_util::stream::iter(rows.iter().filter(|row| claimed.contains(&row.id)))
            .for_each_concurrent(PUSH_CONCURRENCY, |row| async move {
                push(hub, &row.recipient, row).await;
                crate::ops::metrics::delivered(row.created_at, false);
            })
            .await;
        Ok(())
    }

    /// Delivers everything `user` has not received yet (call after the connection joined the
    /// user's group and was registered with presence). Returns how many.
    pub async fn replay(&self, hub: &HubContext, user: &str) -> Result<usize, StoreError> {
        let rows = self.db.claim_undelivered(user, now_ms()).await?;
        for row in &rows {
            push(hub, user, row).await;
            crate::ops::metrics::delivered(row.created_at, true);
        }
        Ok(rows.len())
    }

    /// [`Inbox::replay`] for a connection that just came up, skipped when `user` has nothing
    /// undelivered (asked together with the other connections coming up meanwhile). Exact: the
    /// question is asked after the connection was registered with presence, so a notification
    /// stored after the answer finds the user online and is delivered live.
    pub async fn replay_on_connect(
        &self,
        hub: &HubContext,
        user: &str,
    ) -> Result<usize, StoreError> {
        if self.undelivered.get(user).await?.is_none() {
            return Ok(0);
        }
        self.replay(hub, user).await
    }

    /// The newest notifications of `user` (at most `limit`), optionally only unread ones: its
    /// own and those to every account, merged newest first.
    pub async fn list(
        &self,
        user: &str,
        unread_only: bool,
        limit: i64,
    ) -> Result<Vec<InboxItem>, StoreError> {
        let own = self.db.notifications_for(user, unread_only, limit).await?;
        let broadcasts = self.db.broadcasts_for(user, unread_only, limit).await?;
        let mut items: Vec<(i64, InboxItem)> = own
            .into_iter()
            .map(|row| (row.created_at, InboxItem::from(row)))
            .chain(
                broadcasts
                    .into_iter()
                    .map(|row| (row.broadcast.created_at, InboxItem::from(row))),
            )
            .collect();
        // Newest first; ids are time-ordered, so they break ties the same way.
        items.sort_by(|a, b| (b.0, &b.1.id).cmp(&(a.0, &a.1.id)));
        items.truncate(usize::try_from(limit).unwrap_or(0));
        Ok(items.into_iter().map(|(_, item)| item).collect())
    }

    /// Marks a notification of `user` read (its own or one to every account); `false` if `user`
    /// has no such notification.
    pub async fn mark_read(&self, user: &str, id: &str) -> Result<bool, StoreError> {
        let now = now_ms();
        Ok(self.db.mark_read(user, id, now).await?
            || self.db.mark_broadcast_read(user, id, now).await?)
    }

    /// How many notifications are unread, all users together (a notification to every account
    /// counts once per account there was when it was stored).
    pub async fn unread_total(&self) -> Result<i64, StoreError> {
        Ok(self.db.unread_total().await? + self.db.unread_broadcasts().await?)
    }

    /// Deletes notifications older than `retention`, now and then every `interval`, until the
    /// returned task is aborted.
    pub fn spawn_retention(
        &self,
        retention: Duration,
        interval: Duration,
    ) -> tokio::task::JoinHandle<()> {
        let db = self.db.clone();
        tokio::spawn(async move {
            let mut ticker = tokio::time::interval(interval);
            loop {
                ticker.tick().await;
                let before = now_ms() - duration_ms(retention);
                let deleted = match db.purge_notifications(before).await {
                    Ok(n) => db.purge_broadcasts(before).await.map(|b| n + b),
                    Err(error) => Err(error),
                };
                match deleted {
                    Ok(0) => {}
                    Ok(n) => tracing::info!(deleted = n, "expired notifications deleted"),
                    Err(error) => tracing::warn!(%error, "notification retention failed"),
                }
            }
        })
    }
}

/// The inbox rows of one notification, one per recipient, not yet stored.
pub(crate) fn notification_rows(
    from: Option<&str>,
    recipients: &[String],
    message: &str,
) -> Vec<NotificationRow> {
    let now = now_ms();
    recipients
        .iter()
        .map(|user| NotificationRow {
            id: uuid::Uuid::now_v7().to_string(),
            recipient: user.clone(),
            sender: from.map(str::to_owned),
            message: message.to_owned(),
            created_at: now,
            delivered_at: None,
            read_at: None,
        })
        .collect()
}

/// Sends `Notification` to the user's connections, in a `deliver` span whose trace context
/// (when traced) travels in the invocation's headers so that clients can continue the trace.
async fn push(hub: &HubContext, user: &str, row: &NotificationRow) {
    let span =
        tracing::info_span!("deliver", otel.kind = "producer", notification_id = %row.id, user);
    let headers = signalbox::trace::headers_of(&span);
    let payload = Notification::from(row);
    if let Err(error) = hub
        .clients()
        .user(user)
        .send_with_headers(NOTIFICATION, (payload,), headers)
        .instrument(span)
        .await
    {
        tracing::warn!(%error, user, id = %row.id, "cannot push Notification");
    }
}
