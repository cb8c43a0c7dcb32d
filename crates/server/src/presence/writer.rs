//! Group commit of presence changes: connects and disconnects are queued to one writer task,
//! which applies everything queued meanwhile (up to [`MAX_BATCH`]) in one transaction
//! ([`Db::apply_presence_changes`]) and answers each caller with its own edge. Changes are
//! applied in the order they were queued, so a connect and a disconnect of one user in the
//! same batch keep their order. If a batch fails (a lock timeout, a serialization failure),
//! its changes are applied one by one, each with its own transaction and its own error.

use std::sync::OnceLock;

use tokio::sync::{mpsc, oneshot};

use super::store::{Change, Disconnect};
use crate::clock::now_ms;
use crate::db::{Db, StoreError};

/// Most changes in one transaction.
pub const MAX_BATCH: usize = 512;

/// Most changes waiting for the writer; past it, callers wait for room.
pub const QUEUE_LIMIT: usize = 16 * 1024;

/// What a change did: whether it was the user's edge, and the time stored for it (ms).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Applied {
    /// The user went online (connect) or offline (disconnect).
    pub edge: bool,
    /// The time recorded for the edge.
    pub at: i64,
}

type Queued = (Change, oneshot::Sender<Result<Applied, StoreError>>);

/// The queue of the presence writer (started on first use).
#[derive(Debug)]
pub struct Writer {
    db: Db,
    queue: OnceLock<mpsc::Sender<Queued>>,
}

impl Writer {
    /// A writer applying changes to `db`.
    pub fn new(db: Db) -> Self {
        Self {
            db,
            queue: OnceLock::new(),
        }
    }

    /// Queues `change` and waits until it is committed.
    pub async fn apply(&self, change: Change) -> Result<Applied, StoreError> {
        let queue = self.queue.get_or_init(|| {
            let (tx, rx) = mpsc::channel(QUEUE_LIMIT);
            tokio::spawn(run(self.db.clone(), rx));
            tx
        });
        let (tx, rx) = oneshot::channel();
        match queue.send((change.clone(), tx)).await {
            // Without an answer (the writer stopped), apply it here: both changes are
            // idempotent.
            Ok(()) => match rx.await {
                Ok(result) => result,
                Err(_) => apply_one(&self.db, change).await,
            },
            // The writer is gone (shutting down): apply it here.
            Err(mpsc::error::SendError((change, _))) => apply_one(&self.db, change).await,
        }
    }
}

/// Applies the queued changes in batches until every sender is gone.
async fn run(db: Db, mut rx: mpsc::Receiver<Queued>) {
    let mut batch: Vec<Queued> = Vec::with_capacity(MAX_BATCH);
    while let Some(first) = rx.recv().await {
        batch.push(first);
        while batch.len() < MAX_BATCH {
            match rx.try_recv() {
                Ok(queued) => batch.push(queued),
                Err(_) => break,
            }
        }
        let changes: Vec<Change> = batch.iter().map(|(c, _)| c.clone()).collect();
        let now = now_ms();
        match db.apply_presence_changes(&changes, now).await {
            Ok(edges) => {
                for ((_, reply), edge) in batch.drain(..).zip(edges) {
                    let _ = reply.send(Ok(Applied { edge, at: now }));
                }
            }
            Err(error) => {
                tracing::warn!(%error, changes = batch.len(), "presence batch failed; applying its changes one by one");
                for (change, reply) in batch.drain(..) {
                    let _ = reply.send(apply_one(&db, change).await);
                }
            }
        }
    }
}

/// One change in its own transaction.
async fn apply_one(db: &Db, change: Change) -> Result<Applied, StoreError> {
    match change {
        Change::Connect(row) => {
            let at = row.connected_at;
            let edge = db.connect_edge(&row).await?;
            Ok(Applied { edge, at })
        }
        Change::Disconnect {
            user,
            connection_id,
        } => {
            let at = now_ms();
            let edge = db
                .disconnect_edge(&user, Disconnect::Connection(&connection_id), at)
                .await?;
            Ok(Applied { edge, at })
        }
    }
}
