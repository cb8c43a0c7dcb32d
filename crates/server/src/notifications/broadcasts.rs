//! Notifications to every account (`everyone: true`), stored once and delivered with one message
//! per node, whatever the number of accounts.
//!
//! ## Storing
//!
//! One row in `broadcasts`, numbered by `seq` (see migration 0011: the numbers are drawn in the
//! storing transaction under one row lock, so they commit in order and a node never sees a
//! smaller one appear after a larger). Read marks are kept per account (`broadcast_reads`), only
//! for the broadcasts read; the inbox listing merges the broadcasts an account receives (those
//! stored since it was created) with its own notifications.
//!
//! ## Delivering live
//!
//! Every node runs one pump. It pushes the broadcasts after the last one it pushed (`pushed`),
//! in `seq` order, to the connections of this node that are registered with it, each broadcast
//! serialised once per protocol. The pump wakes when this node stores one, when another node
//! says so over the backplane (a few bytes on `{prefix}:inbox:broadcasts`; the rows come from the
//! database), and every [`POLL_INTERVAL`] in case such a word was lost (backplane down).
//!
//! ## Delivering what was missed
//!
//! Each account has a cursor (`users.broadcast_cursor`): every broadcast up to it was handed to a
//! connection of the account. A connection registers with the pump under the pump's lock, at
//! `pushed` = `w`: from then on it receives every broadcast after `w` live, and none before.
//! What lies between the account's cursor and `w` is claimed by moving the cursor to `w` (compare
//! and set, so of two connections racing one claims) and replayed to that connection. When a
//! connection closes at `pushed` = `t`, it received everything up to `t`, so the cursor moves to
//! `t` if that continues it. A second tab on the same node whose first tab covers the gap moves
//! the cursor without a replay.
//!
//! Nothing is lost: a broadcast after the cursor is either pushed live to a registered connection
//! or replayed on the next connection. A broadcast can be delivered twice to the same account in
//! two cases, both at the seams between nodes: a node that stopped without closing its
//! connections (their closes never moved the cursor), and tabs on two nodes whose pumps were
//! apart when the earlier tab closed. The cursor is read for many connections at once (one
//! query for all the connections coming up together) and not at all before the first broadcast.

use std::collections::HashMap;
use std::sync::{Arc, OnceLock};
use std::time::Duration;

use bytes::Bytes;
use futures_util::StreamExt as _;
use signalbox::HubContext;
use signalbox::lifetime::Backplane as _;
use tokio::sync::{Mutex, Notify, watch};
use tokio::task::JoinHandle;
use tracing::Instrument as _;

use super::inbox::{NOTIFICATION, Notification};
use super::store::{BroadcastCursor, BroadcastRow};
use crate::clock::rfc3339;
use crate::cluster::backplane::{ClusterBackplane, SharedBackplane};
use crate::db::coalesce::Coalescer;
use crate::db::{Db, StoreError};

/// How often the pump looks for broadcasts without being woken.
pub const POLL_INTERVAL: Duration = Duration::from_secs(1);

/// How long storing a broadcast waits for this node's pump to push it (so that a notification
/// published next reaches this node's connections after it).
const LOCAL_PUSH_WAIT: Duration = Duration::from_secs(5);

/// Most broadcasts read at once by the pump.
const FETCH_LIMIT: i64 = 256;

/// Tries of the compare-and-set on an account's cursor before giving up on a replay (each lost
/// try means another connection of the account claimed the broadcasts).
const CLAIM_TRIES: usize = 4;

impl From<&BroadcastRow> for Notification {
    fn from(row: &BroadcastRow) -> Self {
        Self {
            id: row.id.clone(),
            from: row.sender.clone(),
            message: row.message.clone(),
            created_at: rfc3339(row.created_at),
        }
    }
}

/// The connections registered with the pump, by id and by account.
#[derive(Debug, Default)]
struct State {
    /// The newest broadcast pushed to the registered connections (read at first use).
    pushed: Option<i64>,
    /// Connection id → account (the account's name shared with `accounts`).
    connections: HashMap<Arc<str>, Arc<str>>,
    /// Account → its registered connections, each with the `seq` up to which the account had
    /// received every broadcast when that connection started receiving (sized to fit: most
    /// accounts have one connection).
    accounts: HashMap<Arc<str>, Vec<(Arc<str>, i64)>>,
}

impl State {
    /// (The ids are shared with the hub's own tables: see `Caller::shared_connection_id`.)
    fn register(&mut self, connection_id: &Arc<str>, user: &Arc<str>, from: i64) {
        self.connections.insert(connection_id.clone(), user.clone());
        let tabs = self.accounts.entry(user.clone()).or_default();
        tabs.reserve_exact(1);
        tabs.push((connection_id.clone(), from));
    }

    /// The smallest `from` of `user`'s registered connections.
    fn covered_from(&self, user: &str) -> Option<i64> {
        self.accounts
            .get(user)
            .and_then(|tabs| tabs.iter().map(|(_, from)| *from).min())
    }

    fn lower_from(&mut self, connection_id: &str, from: i64) {
        let Some(user) = self.connections.get(connection_id) else {
            return;
        };
        if let Some(tab) = self
            .accounts
            .get_mut(user)
            .and_then(|tabs| tabs.iter_mut().find(|(id, _)| &**id == connection_id))
        {
            tab.1 = tab.1.min(from);
        }
    }

    /// Unregisters a connection: its account and `from`.
    fn unregister(&mut self, connection_id: &str) -> Option<(Arc<str>, i64)> {
        let user = self.connections.remove(connection_id)?;
        let tabs = self.accounts.get_mut(&user)?;
        let index = tabs.iter().position(|(id, _)| &**id == connection_id)?;
        let (_, from) = tabs.swap_remove(index);
        if tabs.is_empty() {
            self.accounts.remove(&user);
        }
        Some((user, from))
    }
}

/// The broadcasts of this node: storing, the pump, and the replay on connect. Cheap to clone.
#[derive(Clone)]
pub struct Broadcasts {
    inner: Arc<Inner>,
}

struct Inner {
    db: Db,
    state: Mutex<State>,
    wake: Notify,
    /// The newest broadcast pushed here, for those waiting for it.
    pushed: watch::Sender<i64>,
    /// Account cursors, read for many connections in one query.
    cursors: Coalescer<BroadcastCursor>,
    /// The backplane connection and channel that tell the other nodes to look.
    nudge: OnceLock<(SharedBackplane, String)>,
    tasks: std::sync::Mutex<Vec<JoinHandle<()>>>,
}

impl std::fmt::Debug for Broadcasts {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Broadcasts").finish_non_exhaustive()
    }
}

impl Broadcasts {
    /// Broadcasts stored in `db` (the pump starts with [`Broadcasts::start`]).
    pub fn new(db: Db) -> Self {
        let cursors = Coalescer::new(
            db.clone(),
            Arc::new(|db: Db, users: Vec<String>| {
                Box::pin(async move { db.broadcast_cursors(&users).await }) as _
            }),
        );
        Self {
            inner: Arc::new(Inner {
                db,
                state: Mutex::new(State::default()),
                wake: Notify::new(),
                pushed: watch::Sender::new(0),
                cursors,
                nudge: OnceLock::new(),
                tasks: std::sync::Mutex::new(Vec::new()),
            }),
        }
    }

    /// Starts the pump pushing to `hub`'s connections; with a `backplane`, tells the other
    /// nodes of each broadcast stored here and listens for theirs on `{prefix}:inbox:broadcasts`.
    pub async fn start(
        &self,
        hub: HubContext,
        backplane: Option<&ClusterBackplane>,
        prefix: &str,
    ) -> Result<(), StoreError> {
        let last = self.inner.db.last_broadcast_seq().await?;
        self.inner.state.lock().await.pushed.get_or_insert(last);
        self.inner.pushed.send_replace(last);
        let mut tasks = Vec::new();
        if let Some(backplane) = backplane {
            match backplane.open_driver().await {
                Ok(driver) => {
                    let channel = format!("{prefix}:inbox:broadcasts");
                    if let Err(error) = driver.subscribe(std::slice::from_ref(&channel)).await {
                        tracing::debug!(%error, "broadcast channel not subscribed yet");
                    }
                    if let Some(mut messages) = driver.messages() {
                        let weak = Arc::downgrade(&self.inner);
                        tasks.push(tokio::spawn(async move {
                            while messages.next().await.is_some() {
                                let Some(inner) = weak.upgrade() else { return };
                                inner.wake.notify_one();
                            }
                        }));
                    }
                    let _ = self.inner.nudge.set((driver, channel));
                }
                // The pump still polls the database.
                Err(error) => tracing::warn!(%error, "no backplane connection for broadcasts"),
            }
        }
        let weak = Arc::downgrade(&self.inner);
        tasks.push(tokio::spawn(pump(weak, hub)));
        self.tasks().extend(tasks);
        Ok(())
    }

    /// Stops the pump.
    pub fn stop(&self) {
        for task in self.tasks().drain(..) {
            task.abort();
        }
    }

    fn tasks(&self) -> std::sync::MutexGuard<'_, Vec<JoinHandle<()>>> {
        self.inner
            .tasks
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
    }

    /// Stores a broadcast from `from`, wakes the pumps of every node and waits (a while) until
    /// this node's has pushed it.
    pub async fn publish(
        &self,
        from: Option<&str>,
        message: &str,
    ) -> Result<BroadcastRow, StoreError> {
        let id = uuid::Uuid::now_v7().to_string();
        let row = self
            .inner
            .db
            .insert_broadcast(&id, from, message, crate::clock::now_ms())
            .instrument(tracing::info_span!(
                "inbox write",
                otel.kind = "client",
                db.operation.name = "insert",
                notifications = 1
            ))
            .await?;
        crate::ops::metrics::published(1);
        let mut pushed = self.inner.pushed.subscribe();
        self.inner.wake.notify_one();
        if let Some((driver, channel)) = self.inner.nudge.get()
            && let Err(error) = driver
                .publish(channel, Bytes::from(row.seq.to_string()))
                .await
        {
            // The other nodes' pumps find it when they next poll.
            tracing::debug!(%error, seq = row.seq, "cannot tell the other nodes of a broadcast");
        }
        if tokio::time::timeout(LOCAL_PUSH_WAIT, pushed.wait_for(|p| *p >= row.seq))
            .await
            .is_err()
        {
            tracing::debug!(seq = row.seq, "broadcast stored, not pushed here yet");
        }
        Ok(row)
    }

    /// Registers a connection of `user` that just came up and replays to it the broadcasts the
    /// account has not received. Returns how many.
    pub async fn connected(
        &self,
        hub: &HubContext,
        shared_connection_id: &Arc<str>,
        shared_user: &Arc<str>,
    ) -> Result<usize, StoreError> {
        let (connection_id, user): (&str, &str) = (shared_connection_id, shared_user);
        let (at, covered_from) = {
            let mut state = self.inner.state.lock().await;
            let at = match state.pushed {
                Some(pushed) => pushed,
                None => {
                    let last = self.inner.db.last_broadcast_seq().await?;
                    state.pushed = Some(last);
                    last
                }
            };
            // Another connection of the account on this node received everything after this.
            let covered_from = state.covered_from(user);
            state.register(shared_connection_id, shared_user, at);
            (at, covered_from)
        };
        if at == 0 {
            return Ok(0); // no broadcast yet
        }
        let Some(account) = self.inner.cursors.get(user).await? else {
            return Ok(0); // no such account (deleted meanwhile)
        };
        let mut cursor = account.cursor;
        for _ in 0..CLAIM_TRIES {
            if cursor >= at {
                return Ok(0);
            }
            // Read before claiming: a claim is only made with the rows in hand.
            let missed = if covered_from.is_some_and(|from| from <= cursor) {
                Vec::new() // the other tab received them
            } else {
                self.inner
                    .db
                    .broadcasts_between(cursor, at, account.created_at)
                    .await?
            };
            if self
                .inner
                .db
                .move_broadcast_cursor(user, cursor, at)
                .await?
            {
                self.set_from(connection_id, cursor).await;
                for row in &missed {
                    push(hub.clients().client(connection_id), row, 1).await;
                    crate::ops::metrics::delivered(row.created_at, true);
                }
                return Ok(missed.len());
            }
            // Another connection of the account moved it: look again.
            cursor = match self
                .inner
                .db
                .broadcast_cursors(&[user.to_owned()])
                .await?
                .get(user)
            {
                Some(account) => account.cursor,
                None => return Ok(0),
            };
        }
        tracing::debug!(
            user,
            "broadcast cursor contended; left to the next connection"
        );
        Ok(0)
    }

    async fn set_from(&self, connection_id: &str, from: i64) {
        let mut state = self.inner.state.lock().await;
        state.lower_from(connection_id, from);
    }

    /// Unregisters a connection that closed: the account received everything pushed meanwhile.
    pub async fn disconnected(&self, connection_id: &str) -> Result<(), StoreError> {
        let ((user, from), upto) = {
            let mut state = self.inner.state.lock().await;
            let Some(registered) = state.unregister(connection_id) else {
                return Ok(());
            };
            (registered, state.pushed.unwrap_or(0))
        };
        if upto > from {
            self.inner
                .db
                .extend_broadcast_cursor(&user, from, upto)
                .await?;
        }
        Ok(())
    }

    /// How many connections of this node are registered.
    pub async fn registered(&self) -> usize {
        self.inner.state.lock().await.connections.len()
    }
}

/// Pushes the broadcasts after `pushed` to the registered connections, oldest first, whenever
/// woken or every [`POLL_INTERVAL`], until the broadcasts are dropped.
async fn pump(inner: std::sync::Weak<Inner>, hub: HubContext) {
    loop {
        let Some(strong) = inner.upgrade() else {
            return;
        };
        let woken = async {
            tokio::select! {
                () = strong.wake.notified() => {}
                () = tokio::time::sleep(POLL_INTERVAL) => {}
            }
        };
        woken.await;
        if let Err(error) = drain(&strong, &hub).await {
            tracing::warn!(%error, "cannot read broadcasts; trying again");
        }
    }
}

/// Pushes every broadcast stored after the last one pushed.
async fn drain(inner: &Inner, hub: &HubContext) -> Result<(), StoreError> {
    loop {
        let after = inner.state.lock().await.pushed.unwrap_or(0);
        let rows = inner.db.broadcasts_after(after, FETCH_LIMIT).await?;
        if rows.is_empty() {
            return Ok(());
        }
        for row in &rows {
            // Under the lock: a connection registers either before (and gets it here) or after
            // (and its replay covers it).
            let mut state = inner.state.lock().await;
            if state.pushed.is_some_and(|pushed| pushed >= row.seq) {
                continue;
            }
            let ids: Vec<String> = state.connections.keys().map(|id| id.to_string()).collect();
            let recipients = ids.len();
            if recipients > 0 {
                push(hub.clients().clients(ids), row, recipients).await;
            }
            state.pushed = Some(row.seq);
            drop(state);
            inner.pushed.send_replace(row.seq);
            // Recorded outside the lock: connections coming up do not wait for the metrics.
            for _ in 0..recipients {
                crate::ops::metrics::delivered(row.created_at, false);
            }
        }
    }
}

/// Sends `Notification` for `row` through `target`, in a `deliver` span whose trace context
/// travels in the invocation's headers.
async fn push(target: signalbox::hub::ClientProxy, row: &BroadcastRow, recipients: usize) {
    let span = tracing::info_span!(
        "deliver",
        otel.kind = "producer",
        notification_id = %row.id,
        recipients
    );
    let headers = signalbox::trace::headers_of(&span);
    if let Err(error) = target
        .send_with_headers(NOTIFICATION, (Notification::from(row),), headers)
        .instrument(span)
        .await
    {
        tracing::warn!(%error, id = %row.id, "cannot push a broadcast");
    }
}

#[cfg(test)]
mod tests {
    use super::State;

    #[test]
    fn registered_connections_are_found_by_account() {
        let mut state = State::default();
        assert_eq!(state.covered_from("ann"), None);
        state.register(&"c1".into(), &"ann".into(), 5);
        state.register(&"c2".into(), &"ann".into(), 7);
        state.register(&"c3".into(), &"bob".into(), 2);
        assert_eq!(state.covered_from("ann"), Some(5));
        assert_eq!(state.covered_from("bob"), Some(2));

        // A replay lowers where a connection's coverage starts, never raises it.
        state.lower_from("c2", 3);
        state.lower_from("c2", 9);
        assert_eq!(state.covered_from("ann"), Some(3));
        state.lower_from("unknown", 0);

        assert_eq!(state.unregister("c2"), Some(("ann".into(), 3)));
        assert_eq!(state.covered_from("ann"), Some(5));
        assert_eq!(state.unregister("c2"), None, "once");
        assert_eq!(state.unregister("c1"), Some(("ann".into(), 5)));
        assert_eq!(state.covered_from("ann"), None);
        assert!(!state.accounts.contains_key("ann"), "no empty entry left");
        assert_eq!(state.connections.len(), 1);
    }
}
