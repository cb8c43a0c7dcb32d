//! Concurrent lookups by key answered by one query: while a query runs, the keys asked for
//! meanwhile queue up, and the next query takes up to [`MAX_KEYS`] of them at once
//! (`… WHERE key IN (…)`). Nothing is cached: every answer comes from a query that started
//! after it was asked for, so it is as fresh as a lookup of its own.

use std::collections::HashMap;
use std::sync::{Arc, OnceLock};

use futures_util::future::BoxFuture;
use tokio::sync::{mpsc, oneshot};

use super::{Db, StoreError};

/// Most keys in one query.
pub const MAX_KEYS: usize = 512;

/// Most lookups waiting for a query; past it, callers wait for room.
pub const QUEUE_LIMIT: usize = 16 * 1024;

/// The query: the values of the keys that have one (a key left out has none).
pub type Lookup<V> = Arc<
    dyn Fn(Db, Vec<String>) -> BoxFuture<'static, Result<HashMap<String, V>, StoreError>>
        + Send
        + Sync,
>;

type Waiter<V> = (String, oneshot::Sender<Option<Option<V>>>);

/// Lookups by key, coalesced into queries of up to [`MAX_KEYS`] keys.
pub struct Coalescer<V> {
    db: Db,
    lookup: Lookup<V>,
    /// Started on first use (inside the runtime).
    queue: OnceLock<mpsc::Sender<Waiter<V>>>,
}

impl<V> std::fmt::Debug for Coalescer<V> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Coalescer").finish_non_exhaustive()
    }
}

impl<V: Clone + Send + 'static> Coalescer<V> {
    /// Lookups in `db` answered by `lookup`.
    pub fn new(db: Db, lookup: Lookup<V>) -> Self {
        Self {
            db,
            lookup,
            queue: OnceLock::new(),
        }
    }

    fn queue(&self) -> &mpsc::Sender<Waiter<V>> {
        self.queue.get_or_init(|| {
            let (tx, rx) = mpsc::channel(QUEUE_LIMIT);
            tokio::spawn(run(self.db.clone(), self.lookup.clone(), rx));
            tx
        })
    }

    /// The value of `key` (`None`: it has none). When the shared query fails, the key is looked
    /// up alone, so the error returned is this key's own.
    pub async fn get(&self, key: &str) -> Result<Option<V>, StoreError> {
        let (tx, rx) = oneshot::channel();
        if self.queue().send((key.to_owned(), tx)).await.is_ok()
            && let Ok(Some(answer)) = rx.await
        {
            return Ok(answer);
        }
        let mut alone = (self.lookup)(self.db.clone(), vec![key.to_owned()]).await?;
        Ok(alone.remove(key))
    }
}

/// Answers the queued lookups, up to [`MAX_KEYS`] per query, until every sender is gone.
async fn run<V: Clone + Send + 'static>(
    db: Db,
    lookup: Lookup<V>,
    mut rx: mpsc::Receiver<Waiter<V>>,
) {
    let mut batch: Vec<Waiter<V>> = Vec::with_capacity(MAX_KEYS);
    while let Some(first) = rx.recv().await {
        batch.push(first);
        while batch.len() < MAX_KEYS {
            match rx.try_recv() {
                Ok(waiter) => batch.push(waiter),
                Err(_) => break,
            }
        }
        let mut keys: Vec<String> = batch.iter().map(|(k, _)| k.clone()).collect();
        keys.sort_unstable();
        keys.dedup();
        match lookup(db.clone(), keys).await {
            Ok(values) => {
                for (key, reply) in batch.drain(..) {
                    let _ = reply.send(Some(values.get(&key).cloned()));
                }
            }
            Err(error) => {
                tracing::debug!(%error, keys = batch.len(), "coalesced lookup failed; each key alone");
                for (_, reply) in batch.drain(..) {
                    let _ = reply.send(None);
                }
            }
        }
    }
}
