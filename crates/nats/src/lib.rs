//! NATS backplane for signalbox.
//!
//! [`NatsBackplane`] is a [`Backplane`] driver over core NATS (no JetStream): each channel is one
//! subject (characters outside `[A-Za-z0-9_:-]` are percent-escaped, so group and user names may
//! hold dots, spaces or wildcards). The cross-node logic lives in
//! [`signalbox::ScaledLifetimeManager`].
//!
//! ```no_run
//! use std::sync::Arc;
//! use signalbox::{Hub, ScaledLifetimeManager};
//! use signalbox_nats::NatsBackplane;
//!
//! # async fn run() -> Result<(), Box<dyn std::error::Error>> {
//! let backplane = NatsBackplane::connect("nats://127.0.0.1:4222").await?;
//! let manager = Arc::new(ScaledLifetimeManager::new(backplane, "myapp.chat"));
//! let hub = Hub::builder("chat").lifetime_manager(manager.clone()).build();
//! # Ok(())
//! # }
//! ```
//!
//! The `async-nats` client reconnects by itself (forever, with backoff) and subscribes again to
//! every live subscription; its connection events drive [`Backplane::state`]. While disconnected,
//! publishes fail at once with [`BackplaneError::NotConnected`] instead of being buffered.

use std::collections::HashMap;
use std::fmt;
use std::fmt::Write as _;
use std::sync::{Arc, Mutex, PoisonError};
use std::time::Duration;

use async_nats::Event;
use bytes::Bytes;
use futures_util::StreamExt;
use futures_util::future::{BoxFuture, FutureExt};
use signalbox::lifetime::{BackplaneError, BackplaneMessage, BackplaneState, BackplaneStream};
use tokio::sync::{mpsc, watch};
use tokio::task::JoinHandle;

pub use signalbox::Backplane;

const LOG: &str = "signalbox::backplane";

/// Settings of a [`NatsBackplane`].
#[derive(Debug, Clone)]
#[non_exhaustive]
pub struct NatsOptions {
    /// Time allowed to open a connection. Defaults to 2 seconds.
    pub connect_timeout: Duration,
    /// First delay before reconnecting; doubled after each failed attempt. Defaults to 100 ms.
    pub reconnect_min_delay: Duration,
    /// Longest delay between reconnection attempts. Defaults to 2 seconds.
    pub reconnect_max_delay: Duration,
    /// Time allowed for the round trip that confirms new subscriptions. Defaults to 2 seconds.
    pub response_timeout: Duration,
    /// Received messages buffered for the lifetime manager. Defaults to 8192.
    pub queue_capacity: usize,
}

impl Default for NatsOptions {
    fn default() -> Self {
        Self {
            connect_timeout: Duration::from_secs(2),
            reconnect_min_delay: Duration::from_millis(100),
            reconnect_max_delay: Duration::from_secs(2),
            response_timeout: Duration::from_secs(2),
            queue_capacity: 8192,
        }
    }
}

impl NatsOptions {
    /// Sets [`connect_timeout`](Self::connect_timeout).
    pub fn connect_timeout(mut self, connect_timeout: Duration) -> Self {
        self.connect_timeout = connect_timeout;
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

    /// Sets [`response_timeout`](Self::response_timeout).
    pub fn response_timeout(mut self, response_timeout: Duration) -> Self {
        self.response_timeout = response_timeout;
        self
    }

    /// Sets [`queue_capacity`](Self::queue_capacity).
    pub fn queue_capacity(mut self, queue_capacity: usize) -> Self {
        self.queue_capacity = queue_capacity;
        self
    }
}

/// A [`Backplane`] over NATS. Dropping it closes its subscriptions.
pub struct NatsBackplane {
    client: async_nats::Client,
    options: NatsOptions,
    subscriptions: Mutex<HashMap<String, JoinHandle<()>>>,
    tx: mpsc::Sender<BackplaneMessage>,
    rx: Mutex<Option<mpsc::Receiver<BackplaneMessage>>>,
    state: watch::Receiver<BackplaneState>,
}

impl fmt::Debug for NatsBackplane {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("NatsBackplane")
            .field("state", &*self.state.borrow())
            .field("channels", &self.lock().len())
            .finish_non_exhaustive()
    }
}

impl Drop for NatsBackplane {
    fn drop(&mut self) {
        for (_, task) in self.lock().drain() {
            task.abort();
        }
    }
}

/// The NATS subject of a channel: bytes outside `[A-Za-z0-9_:-]` become `%XX`.
pub fn subject_for(channel: &str) -> String {
    let mut subject = String::with_capacity(channel.len());
    for byte in channel.bytes() {
        if byte.is_ascii_alphanumeric() || matches!(byte, b'_' | b':' | b'-') {
            subject.push(char::from(byte));
        } else {
            // Writing to a String cannot fail.
            let _ = write!(subject, "%{byte:02X}");
        }
    }
    subject
}

impl NatsBackplane {
    /// Connects to the NATS server(s) at `url` (`nats://host:port`, comma-separated for several)
    /// with default [`NatsOptions`]. Returns at once even if no server answers yet; the client
    /// keeps trying (see [`Backplane::state`]).
    pub async fn connect(url: &str) -> Result<Self, BackplaneError> {
        Self::connect_with(
            url,
            async_nats::ConnectOptions::new(),
            NatsOptions::default(),
        )
        .await
    }

    /// Connects with explicit `async-nats` options (credentials, TLS, name, …) and backplane options.
    /// The event callback, reconnect delay, retry on initial connect and unlimited reconnects are
    /// set by the backplane.
    pub async fn connect_with(
        url: &str,
        connect_options: async_nats::ConnectOptions,
        options: NatsOptions,
    ) -> Result<Self, BackplaneError> {
        let (state_tx, state_rx) = watch::channel(BackplaneState::Connecting);
        let state_tx = Arc::new(state_tx);
        let events = state_tx.clone();
        // A reconnect is reported only after a round trip, so the server has processed the
        // resubscriptions the client sends on reconnecting before anyone relies on them.
        let reconnected = Arc::new(tokio::sync::Notify::new());
        let reconnected_events = reconnected.clone();
        let (min, max) = (options.reconnect_min_delay, options.reconnect_max_delay);
        let client = connect_options
            .connection_timeout(options.connect_timeout)
            .retry_on_initial_connect()
            .max_reconnects(None)
            .reconnect_delay_callback(move |attempts| {
                let shift = u32::try_from(attempts.min(16)).unwrap_or(16);
                min.saturating_mul(1 << shift.saturating_sub(1)).min(max)
            })
            .event_callback(move |event| {
                let events = events.clone();
                let reconnected = reconnected_events.clone();
                async move {
                    match event {
                        Event::Connected => {
                            tracing::info!(target: LOG, "nats backplane connected");
                            reconnected.notify_one();
                        }
                        Event::Disconnected => {
                            tracing::warn!(target: LOG, "nats backplane connection lost; reconnecting");
                            events.send_replace(BackplaneState::Disconnected);
                        }
                        Event::Closed => {
                            events.send_replace(BackplaneState::Disconnected);
                        }
                        other => tracing::debug!(target: LOG, event = %other, "nats event"),
                    }
                }
            })
            .connect(url)
            .await
            .map_err(BackplaneError::driver)?;
        if client.connection_state() == async_nats::connection::State::Connected {
            state_tx.send_if_modified(|state| {
                let changed = *state == BackplaneState::Connecting;
                if changed {
                    *state = BackplaneState::Connected;
                }
                changed
            });
        }
        let confirm_client = client.clone();
        let confirm_state = state_tx.clone();
        tokio::spawn(async move {
            // Ends when the backplane (the last state receiver) is dropped.
            loop {
                tokio::select! {
                    () = reconnected.notified() => {}
                    () = confirm_state.closed() => return,
                }
                if confirm_client.flush().await.is_ok() {
                    confirm_state.send_replace(BackplaneState::Connected);
                }
            }
        });
        let (tx, rx) = mpsc::channel(options.queue_capacity.max(1));
        Ok(Self {
            client,
            options,
            subscriptions: Mutex::new(HashMap::new()),
            tx,
            rx: Mutex::new(Some(rx)),
            state: state_rx,
        })
    }

    /// The underlying client.
    pub fn client(&self) -> &async_nats::Client {
        &self.client
    }

    /// Waits until the backplane is connected, at most `timeout`; returns whether it is.
    pub async fn wait_connected(&self, timeout: Duration) -> bool {
        let mut state = self.state.clone();
        tokio::time::timeout(timeout, state.wait_for(|s| s.is_connected()))
            .await
            .is_ok_and(|r| r.is_ok())
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, HashMap<String, JoinHandle<()>>> {
        // Nothing panics while holding the lock; a poisoned lock still holds consistent data.
        self.subscriptions
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
    }

    fn is_connected(&self) -> bool {
        self.state.borrow().is_connected()
    }

    /// A round trip to the server: a request nobody answers comes back as "no responders" once
    /// the server has processed everything sent before it (our new subscriptions included).
    async fn sync(&self) {
        let subject = format!(
            "_SIGNALBOX.sync.{}",
            self.client.new_inbox().replace('.', "_")
        );
        // Any answer, "no responders" included, proves the round trip; a timeout just means the
        // subscriptions are confirmed later.
        let _ = tokio::time::timeout(
            self.options.response_timeout,
            self.client.request(subject, Bytes::new()),
        )
        .await;
    }
}

impl Backplane for NatsBackplane {
    fn publish<'a>(
        &'a self,
        channel: &'a str,
        payload: Bytes,
    ) -> BoxFuture<'a, Result<(), BackplaneError>> {
        async move {
            if !self.is_connected() {
                return Err(BackplaneError::NotConnected);
            }
            self.client
                .publish(subject_for(channel), payload)
                .await
                .map_err(BackplaneError::driver)
        }
        .boxed()
    }

    fn subscribe<'a>(
        &'a self,
        channels: &'a [String],
    ) -> BoxFuture<'a, Result<(), BackplaneError>> {
        async move {
            let mut first_error = None;
            for channel in channels {
                if self.lock().contains_key(channel) {
                    continue;
                }
                let mut subscriber = match self.client.subscribe(subject_for(channel)).await {
                    Ok(subscriber) => subscriber,
                    Err(error) => {
                        first_error.get_or_insert(BackplaneError::driver(error));
                        continue;
                    }
                };
                let tx = self.tx.clone();
                let name = channel.clone();
                let task = tokio::spawn(async move {
                    while let Some(message) = subscriber.next().await {
                        let message = BackplaneMessage {
                            channel: name.clone(),
                            payload: message.payload,
                        };
                        if tx.send(message).await.is_err() {
                            // The lifetime manager is gone.
                            return;
                        }
                    }
                });
                if let Some(old) = self.lock().insert(channel.clone(), task) {
                    // A concurrent subscribe to the same channel won the race; keep one.
                    old.abort();
                }
            }
            if let Some(error) = first_error {
                return Err(error);
            }
            if self.is_connected() {
                self.sync().await;
                Ok(())
            } else {
                // async-nats sends the subscriptions once it is connected again.
                Err(BackplaneError::NotConnected)
            }
        }
        .boxed()
    }

    fn unsubscribe<'a>(
        &'a self,
        channels: &'a [String],
    ) -> BoxFuture<'a, Result<(), BackplaneError>> {
        let mut subscriptions = self.lock();
        for channel in channels {
            if let Some(task) = subscriptions.remove(channel) {
                // Dropping the subscriber (with the task) sends UNSUB.
                task.abort();
            }
        }
        drop(subscriptions);
        async { Ok(()) }.boxed()
    }

    fn messages(&self) -> Option<BackplaneStream> {
        let rx = self
            .rx
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
        self.state.clone()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn subjects_escape_separators_and_wildcards() {
        assert_eq!(subject_for("app:group:room-1"), "app:group:room-1");
        assert_eq!(subject_for("a.b *>%"), "a%2Eb%20%2A%3E%25");
        assert_eq!(subject_for("é"), "%C3%A9");
    }
}
