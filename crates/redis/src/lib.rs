//! Redis pub/sub backplane for signalbox.
//!
//! [`RedisBackplane`] is a [`Backplane`] driver: it publishes and subscribes bytes on Redis
//! channels (standalone Redis, RESP2 `SUBSCRIBE` on a dedicated connection plus a multiplexed
//! connection for `PUBLISH`). The cross-node logic lives in
//! [`signalbox::ScaledLifetimeManager`].
//!
//! ```no_run
//! use std::sync::Arc;
//! use signalbox::{Hub, ScaledLifetimeManager};
//! use signalbox_redis::RedisBackplane;
//!
//! # async fn run() -> Result<(), Box<dyn std::error::Error>> {
//! let backplane = RedisBackplane::new("redis://127.0.0.1:6379/")?;
//! let manager = Arc::new(ScaledLifetimeManager::new(backplane, "myapp:chat"));
//! let hub = Hub::builder("chat").lifetime_manager(manager.clone()).build();
//! # Ok(())
//! # }
//! ```
//!
//! One task owns the connections: it connects, subscribes to every channel still wanted, reports
//! [`BackplaneState::Connected`], and forwards messages; when the subscriber connection ends (server
//! restart, network failure) it reports [`BackplaneState::Disconnected`] and reconnects with
//! exponential backoff. While disconnected, publishes fail at once with
//! [`BackplaneError::NotConnected`].

use std::collections::HashSet;
use std::fmt;
use std::sync::{Arc, Mutex, PoisonError};
use std::time::Duration;

use bytes::Bytes;
use futures_util::StreamExt;
use futures_util::future::{BoxFuture, FutureExt};
use redis::aio::{MultiplexedConnection, PubSubSink, PubSubStream};
use signalbox::lifetime::{BackplaneError, BackplaneMessage, BackplaneState, BackplaneStream};
use tokio::sync::{Notify, mpsc, watch};
use tokio::task::JoinHandle;

pub use signalbox::Backplane;

const LOG: &str = "signalbox::backplane";

/// Settings of a [`RedisBackplane`].
#[derive(Debug, Clone)]
#[non_exhaustive]
pub struct RedisOptions {
    /// Time allowed to open a connection. Defaults to 2 seconds.
    pub connect_timeout: Duration,
    /// Time allowed for an answer to `PUBLISH`/`SUBSCRIBE`. Defaults to 2 seconds.
    pub response_timeout: Duration,
    /// First delay before reconnecting; doubled after each failed attempt. Defaults to 100 ms.
    pub reconnect_min_delay: Duration,
    /// Longest delay between reconnection attempts. Defaults to 2 seconds.
    pub reconnect_max_delay: Duration,
    /// Received messages buffered for the lifetime manager. Defaults to 8192.
    pub queue_capacity: usize,
}

impl Default for RedisOptions {
    fn default() -> Self {
        Self {
            connect_timeout: Duration::from_secs(2),
            response_timeout: Duration::from_secs(2),
            reconnect_min_delay: Duration::from_millis(100),
            reconnect_max_delay: Duration::from_secs(2),
            queue_capacity: 8192,
        }
    }
}

impl RedisOptions {
    /// Sets [`connect_timeout`](Self::connect_timeout).
    pub fn connect_timeout(mut self, connect_timeout: Duration) -> Self {
        self.connect_timeout = connect_timeout;
        self
    }

    /// Sets [`response_timeout`](Self::response_timeout).
    pub fn response_timeout(mut self, response_timeout: Duration) -> Self {
        self.response_timeout = response_timeout;
        self
    }

    /// Sets [`reconnect_min_delay`](Self::reconnect_min_delay).
    pub fn reconnect_min_delay(mut self, reconnect_min_delay: Duration) -> Self {
        self.reconnect_min_delay = reconnect_min_delay;
        self
    }

    /// Sets [`reconnect_max_delay`](Self::reconnect_max_delay).
    pub fn reconnect_max_delay(mut self, reconnect_max_delay: Duration) -> Self {
        self.reconnect_max_delay = reconnect_max_delay;
        self
    }

    /// Sets [`queue_capacity`](Self::queue_capacity).
    pub fn queue_capacity(mut self, queue_capacity: usize) -> Self {
        self.queue_capacity = queue_capacity;
        self
    }
}

/// A [`Backplane`] over Redis pub/sub. Create it inside a Tokio runtime; dropping it closes its
/// connections.
pub struct RedisBackplane {
    inner: Arc<Inner>,
    messages: Mutex<Option<mpsc::Receiver<BackplaneMessage>>>,
    task: JoinHandle<()>,
}

struct Inner {
    client: redis::Client,
    options: RedisOptions,
    slot: Mutex<Slot>,
    state: watch::Sender<BackplaneState>,
    /// Asks the connection task to drop its connections and reconnect.
    reconnect: Notify,
}

#[derive(Default)]
struct Slot {
    /// Every channel subscribed through the trait, made again after each reconnect.
    wanted: HashSet<String>,
    sink: Option<PubSubSink>,
    publisher: Option<MultiplexedConnection>,
}

impl fmt::Debug for RedisBackplane {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("RedisBackplane")
            .field("state", &*self.inner.state.borrow())
            .field("channels", &self.inner.lock().wanted.len())
            .finish_non_exhaustive()
    }
}

impl Drop for RedisBackplane {
    fn drop(&mut self) {
        self.task.abort();
    }
}

impl Inner {
    fn lock(&self) -> std::sync::MutexGuard<'_, Slot> {
        // Nothing panics while holding the lock; a poisoned lock still holds consistent data.
        self.slot.lock().unwrap_or_else(PoisonError::into_inner)
    }
}

impl RedisBackplane {
    /// A backplane for the Redis server at `url` (`redis://[user:password@]host:port[/db]`), with
    /// default [`RedisOptions`]. Connects in the background; see [`Backplane::state`].
    pub fn new(url: &str) -> Result<Self, BackplaneError> {
        Self::with_options(url, RedisOptions::default())
    }

    /// A backplane with explicit options.
    pub fn with_options(url: &str, options: RedisOptions) -> Result<Self, BackplaneError> {
        let client = redis::Client::open(url).map_err(BackplaneError::driver)?;
        let (tx, rx) = mpsc::channel(options.queue_capacity.max(1));
        let (state, _) = watch::channel(BackplaneState::Connecting);
        let inner = Arc::new(Inner {
            client,
            options,
            slot: Mutex::new(Slot::default()),
            state,
            reconnect: Notify::new(),
        });
        let task = tokio::spawn(run(inner.clone(), tx));
        Ok(Self {
            inner,
            messages: Mutex::new(Some(rx)),
            task,
        })
    }

    /// Waits until the backplane is connected, at most `timeout`; returns whether it is.
    pub async fn wait_connected(&self, timeout: Duration) -> bool {
        let mut state = self.inner.state.subscribe();
        tokio::time::timeout(timeout, state.wait_for(|s| s.is_connected()))
            .await
            .is_ok_and(|r| r.is_ok())
    }
}

async fn connect(
    inner: &Inner,
) -> Result<(PubSubSink, PubSubStream, MultiplexedConnection), BackplaneError> {
    let timeout = inner.options.connect_timeout;
    let pubsub = tokio::time::timeout(timeout, inner.client.get_async_pubsub())
        .await
        .map_err(|_| BackplaneError::Timeout)?
        .map_err(BackplaneError::driver)?;
    let config = redis::AsyncConnectionConfig::new()
        .set_connection_timeout(Some(timeout))
        .set_response_timeout(Some(inner.options.response_timeout));
    let publisher = tokio::time::timeout(
        timeout,
        inner
            .client
            .get_multiplexed_async_connection_with_config(&config),
    )
    .await
    .map_err(|_| BackplaneError::Timeout)?
    .map_err(BackplaneError::driver)?;
    let (sink, stream) = pubsub.split();
    Ok((sink, stream, publisher))
}

/// The connection task: connect, resubscribe, forward messages, and start again when the
/// subscriber connection ends.
async fn run(inner: Arc<Inner>, tx: mpsc::Sender<BackplaneMessage>) {
    let mut failures: u32 = 0;
    loop {
        match connect(&inner).await {
            Ok((sink, mut stream, publisher)) => {
                let wanted: Vec<String> = {
                    let mut slot = inner.lock();
                    slot.sink = Some(sink.clone());
                    slot.publisher = Some(publisher);
                    slot.wanted.iter().cloned().collect()
                };
                let mut sink = sink;
                let resubscribed = wanted.is_empty()
                    || matches!(
                        tokio::time::timeout(
                            inner.options.response_timeout,
                            sink.subscribe(&wanted)
                        )
                        .await,
                        Ok(Ok(()))
                    );
                if resubscribed {
                    failures = 0;
                    inner.state.send_replace(BackplaneState::Connected);
                    tracing::info!(target: LOG, channels = wanted.len(), "redis backplane connected");
                    loop {
                        tokio::select! {
                            message = stream.next() => match message {
                                Some(message) => {
                                    let message = BackplaneMessage {
                                        channel: message.get_channel_name().to_owned(),
                                        payload: Bytes::copy_from_slice(message.get_payload_bytes()),
                                    };
                                    if tx.send(message).await.is_err() {
                                        // The lifetime manager is gone.
                                        return;
                                    }
                                }
                                None => break,
                            },
                            () = inner.reconnect.notified() => break,
                        }
                    }
                    tracing::warn!(target: LOG, "redis backplane connection lost; reconnecting");
                } else {
                    tracing::warn!(target: LOG, "redis backplane could not resubscribe; reconnecting");
                }
                {
                    let mut slot = inner.lock();
                    slot.sink = None;
                    slot.publisher = None;
                }
                inner.state.send_replace(BackplaneState::Disconnected);
            }
            Err(error) => {
                if failures == 0 {
                    tracing::warn!(target: LOG, %error, "redis backplane cannot connect; retrying");
                } else {
                    tracing::debug!(target: LOG, %error, failures, "redis backplane reconnect failed");
                }
                inner.state.send_if_modified(|state| {
                    if *state == BackplaneState::Connected {
                        *state = BackplaneState::Disconnected;
                        true
                    } else {
                        false
                    }
                });
            }
        }
        failures = failures.saturating_add(1);
        let delay = inner
            .options
            .reconnect_min_delay
            .saturating_mul(1 << failures.min(16).saturating_sub(1))
            .min(inner.options.reconnect_max_delay);
        tokio::time::sleep(delay).await;
    }
}

fn is_connection_error(error: &redis::RedisError) -> bool {
    error.is_io_error() || error.is_connection_dropped() || error.is_unrecoverable_error()
}

impl Backplane for RedisBackplane {
    fn publish<'a>(
        &'a self,
        channel: &'a str,
        payload: Bytes,
    ) -> BoxFuture<'a, Result<(), BackplaneError>> {
        async move {
            let Some(mut publisher) = self.inner.lock().publisher.clone() else {
                return Err(BackplaneError::NotConnected);
            };
            let result: redis::RedisResult<i64> = redis::cmd("PUBLISH")
                .arg(channel)
                .arg(&payload[..])
                .query_async(&mut publisher)
                .await;
            match result {
                Ok(_) => Ok(()),
                Err(error) => {
                    if is_connection_error(&error) {
                        // Wake the connection task only if it is waiting for messages (no permit
                        // is stored), so a stale request never drops a fresh connection.
                        self.inner.reconnect.notify_waiters();
                    }
                    Err(BackplaneError::driver(error))
                }
            }
        }
        .boxed()
    }

    fn subscribe<'a>(
        &'a self,
        channels: &'a [String],
    ) -> BoxFuture<'a, Result<(), BackplaneError>> {
        async move {
            let sink = {
                let mut slot = self.inner.lock();
                slot.wanted.extend(channels.iter().cloned());
                slot.sink.clone()
            };
            let Some(mut sink) = sink else {
                return Err(BackplaneError::NotConnected);
            };
            match tokio::time::timeout(
                self.inner.options.response_timeout,
                sink.subscribe(channels),
            )
            .await
            {
                Ok(Ok(())) => Ok(()),
                Ok(Err(error)) => Err(BackplaneError::driver(error)),
                Err(_) => Err(BackplaneError::Timeout),
            }
        }
        .boxed()
    }

    fn unsubscribe<'a>(
        &'a self,
        channels: &'a [String],
    ) -> BoxFuture<'a, Result<(), BackplaneError>> {
        async move {
            let sink = {
                let mut slot = self.inner.lock();
                for channel in channels {
                    slot.wanted.remove(channel);
                }
                slot.sink.clone()
            };
            let Some(mut sink) = sink else {
                // Not connected: the channels are no longer wanted, so they are not resubscribed.
                return Ok(());
            };
            match tokio::time::timeout(
                self.inner.options.response_timeout,
                sink.unsubscribe(channels),
            )
            .await
            {
                Ok(Ok(())) => Ok(()),
                Ok(Err(error)) => Err(BackplaneError::driver(error)),
                Err(_) => Err(BackplaneError::Timeout),
            }
        }
        .boxed()
    }

    fn messages(&self) -> Option<BackplaneStream> {
        let rx = self
            .messages
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .take()?;
        Some(
            futures_util::stream::unfold(rx, |mut rx| async move {
                rx.recv().await.map(|message| (message, rx))
            })
            .boxed(),
        )
    }

    fn state(&self) -> watch::Receiver<BackplaneState> {
        self.inner.state.subscribe()
    }
}
