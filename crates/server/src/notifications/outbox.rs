//! Transactional publish (PostgreSQL only): notifications an application publishes from its own
//! database transaction with the SQL function `signalbox_publish(...)` (migration 0006; see
//! docs/transactional-publish.md).
//!
//! The function stores a row in `publish_requests` and sends a NOTIFY on [`CHANNEL`]; both take
//! effect only when the application's transaction commits, so a rollback publishes nothing. Every
//! node runs one worker that LISTENs on a dedicated connection and, when woken (and every
//! [`SWEEP_INTERVAL`], and after each (re)connection, since a NOTIFY can be missed), claims
//! pending requests (`FOR UPDATE SKIP LOCKED`, so nodes never wait on one another) and completes
//! each in one transaction: the inbox rows are inserted and the request is marked done together,
//! so a request is stored in the inbox exactly once. Delivery then goes through
//! `Inbox::deliver`, as for `POST /api/notifications`; a node that dies before delivering
//! leaves the rows undelivered and the inbox replays them when the recipient connects. A claim
//! held longer than [`CLAIM_TIMEOUT`] by a request not done belongs to a node presumed dead and
//! is taken over by the next sweep of another node.

use std::time::Duration;

use signalbox::HubContext;
use sqlx::postgres::PgListener;
use tokio::task::JoinHandle;

use super::store::{ListenError, PublishRequestRow, listen_publish_requests};
use crate::db::{Backend, Db};
use crate::notifications::inbox::{Inbox, notification_rows};

/// The NOTIFY channel `signalbox_publish(...)` signals on (its payload is the request id).
pub const CHANNEL: &str = "signalbox_publish";

/// How often each node looks for pending requests without being notified: the longest a missed
/// NOTIFY (a node restarting, the listening connection lost) delays a notification.
pub const SWEEP_INTERVAL: Duration = Duration::from_secs(5);

/// How long a claimed request may stay not done before another node takes it over.
pub const CLAIM_TIMEOUT: Duration = Duration::from_secs(30);

/// Most requests claimed at once.
const BATCH: i64 = 100;

/// How long done requests are kept (for inspection) before they are deleted.
const DONE_RETENTION: Duration = Duration::from_secs(24 * 60 * 60);

/// How often done requests older than [`DONE_RETENTION`] are deleted.
const PURGE_INTERVAL: Duration = Duration::from_secs(10 * 60);

/// What the worker needs.
#[derive(Debug, Clone)]
pub struct OutboxServices {
    /// Storage (PostgreSQL).
    pub db: Db,
    /// The database URL, for the dedicated listening connection.
    pub database_url: String,
    /// This node's id: the `claimed_by` of its claims.
    pub node: String,
    /// The inbox, which delivers what was stored.
    pub inbox: Inbox,
    /// The notification hub's clients.
    pub hub: HubContext,
}

/// The running worker of this node.
#[derive(Debug)]
pub struct Outbox {
    task: JoinHandle<()>,
    db: Db,
    node: String,
}

impl Outbox {
    /// Starts the worker; `None` on SQLite, which has no transactional publish.
    pub fn start(services: OutboxServices) -> Option<Self> {
        if services.db.backend() != Backend::Postgres {
            return None;
        }
        let db = services.db.clone();
        let node = services.node.clone();
        let task = tokio::spawn(Worker(services).run());
        Some(Self { task, db, node })
    }

    /// Stops the worker and gives up the claims it still holds (another node takes them at once
    /// rather than after [`CLAIM_TIMEOUT`]).
    pub async fn stop(self) {
        self.task.abort();
        // Cancelled (the expected outcome) or finished: either way it is done.
        let _ = self.task.await;
        match self.db.release_publish_claims(&self.node).await {
            Ok(0) => {}
            Ok(released) => tracing::info!(released, "publish request claims released"),
            Err(error) => tracing::warn!(%error, "cannot release this node's publish claims"),
        }
    }
}

/// The worker's loop and steps.
struct Worker(OutboxServices);

impl Worker {
    async fn run(self) {
        let mut sweep = tokio::time::interval(SWEEP_INTERVAL);
        sweep.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        let mut purge = tokio::time::interval(PURGE_INTERVAL);
        purge.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        let mut listener: Option<PgListener> = None;
        loop {
            if listener.is_none() {
                listener = self.listen().await;
                // Whatever was published while nobody here listened.
                self.drain().await;
            }
            tokio::select! {
                received = recv(&mut listener) => match received {
                    Ok(true) => {}
                    Ok(false) => tracing::warn!(
                        "the connection listening for publish requests was lost; reconnecting"
                    ),
                    Err(error) => {
                        tracing::warn!(%error, "cannot listen for publish requests; retrying");
                        listener = None;
                        // Not a busy loop while the database is down.
                        sweep.tick().await;
                    }
                },
                _ = sweep.tick() => {}
                _ = purge.tick() => {
                    self.purge().await;
                    continue;
                }
            }
            self.drain().await;
        }
    }

    /// A connection listening on [`CHANNEL`], or `None` (logged) if it cannot be opened now.
    async fn listen(&self) -> Option<PgListener> {
        match listen_publish_requests(&self.0.database_url, CHANNEL).await {
            Ok(listener) => {
                tracing::debug!(channel = CHANNEL, "listening for publish requests");
                Some(listener)
            }
            Err(ListenError::Connect(error)) => {
                tracing::warn!(%error, "cannot connect to listen for publish requests");
                None
            }
            Err(ListenError::Listen(error)) => {
                tracing::warn!(%error, "cannot listen for publish requests");
                None
            }
        }
    }

    /// Claims and completes pending requests until none is left.
    async fn drain(&self) {
        loop {
            let claimed = match self
                .0
                .db
                .claim_publish_requests(&self.0.node, CLAIM_TIMEOUT, BATCH)
                .await
            {
                Ok(claimed) => claimed,
                Err(error) => {
                    tracing::warn!(%error, "cannot claim publish requests; retrying at the next sweep");
                    return;
                }
            };
            let full = i64::try_from(claimed.len()).is_ok_and(|n| n >= BATCH);
            for request in claimed {
                self.complete(request).await;
            }
            if !full {
                return;
            }
        }
    }

    /// Stores one claimed request in the inbox (marking it done in the same transaction), then
    /// delivers it.
    async fn complete(&self, request: PublishRequestRow) {
        let rows = notification_rows(None, &request.recipients, &request.message);
        let stored = match self
            .0
            .db
            .complete_publish_request(&request.id, &self.0.node, rows)
            .await
        {
            Ok(Some(stored)) => stored,
            Ok(None) => {
                tracing::debug!(request = %request.id, "publish request done by another node");
                return;
            }
            Err(error) => {
                tracing::warn!(%error, request = %request.id,
                    "cannot store a publish request; retried once its claim times out");
                return;
            }
        };
        crate::ops::metrics::published(stored.len());
        tracing::info!(request = %request.id, recipients = stored.len(), "transactional notification published");
        if let Err(error) = self.0.inbox.deliver(&self.0.hub, &stored).await {
            // Stored: the recipients get it from the inbox's replay.
            tracing::warn!(%error, request = %request.id, "cannot deliver a stored notification");
        }
    }

    /// Deletes old done requests.
    async fn purge(&self) {
        match self.0.db.purge_publish_requests(DONE_RETENTION).await {
            Ok(0) => {}
            Ok(deleted) => tracing::info!(deleted, "done publish requests deleted"),
            Err(error) => tracing::warn!(%error, "cannot delete done publish requests"),
        }
    }
}

/// The next notification: `Ok(true)` for one, `Ok(false)` when the connection was lost (the next
/// call reconnects). Never resolves without a listener.
async fn recv(listener: &mut Option<PgListener>) -> Result<bool, sqlx::Error> {
    match listener {
        Some(listener) => Ok(listener.try_recv().await?.is_some()),
        None => std::future::pending().await,
    }
}
