//! The [`Backplane`] trait: a thin pub/sub driver that carries bytes between the nodes of one
//! logical hub (Redis, NATS, …). All cross-node logic lives once in
//! [`ScaledLifetimeManager`](super::ScaledLifetimeManager); a driver only publishes, subscribes and
//! reports whether it is connected (like socketioxide's adapter `Driver`).
//!
//! [`MemoryBackplane`] connects managers inside one process; it is meant for tests and examples.

use std::collections::{HashMap, HashSet};
use std::fmt;
use std::sync::{Arc, Mutex, PoisonError};

use bytes::Bytes;
use futures_util::StreamExt;
use futures_util::future::{BoxFuture, FutureExt};
use futures_util::stream::BoxStream;
use tokio::sync::{mpsc, watch};

/// One message received on a subscribed channel.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct BackplaneMessage {
    /// The channel it was published on (as given to [`Backplane::subscribe`]).
    pub channel: String,
    /// The published bytes.
    pub payload: Bytes,
}

/// A stream of the messages of every subscribed channel (see [`Backplane::messages`]).
pub type BackplaneStream = BoxStream<'static, BackplaneMessage>;

/// The connection state of a backplane.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[non_exhaustive]
pub enum BackplaneState {
    /// Not connected yet (first connection attempt under way).
    Connecting,
    /// Connected, and every requested subscription is active.
    Connected,
    /// The connection was lost; the driver is reconnecting by itself.
    Disconnected,
}

impl BackplaneState {
    /// Whether messages can be published and received.
    pub fn is_connected(self) -> bool {
        self == BackplaneState::Connected
    }
}

impl fmt::Display for BackplaneState {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            BackplaneState::Connecting => "connecting",
            BackplaneState::Connected => "connected",
            BackplaneState::Disconnected => "disconnected",
        })
    }
}

/// Errors of a backplane driver.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum BackplaneError {
    /// The driver is not connected right now (it reconnects by itself).
    #[error("the backplane is not connected")]
    NotConnected,
    /// The server did not answer in time.
    #[error("the backplane did not answer in time")]
    Timeout,
    /// An error of the underlying client.
    #[error("backplane error: {0}")]
    Driver(#[source] Box<dyn std::error::Error + Send + Sync>),
}

impl BackplaneError {
    /// Wraps an error of the underlying client.
    pub fn driver(error: impl std::error::Error + Send + Sync + 'static) -> Self {
        BackplaneError::Driver(Box::new(error))
    }
}

/// A pub/sub connection shared by the nodes of one logical hub.
///
/// Channel names are arbitrary UTF-8 strings chosen by the manager (`{prefix}:group:{name}`, …);
/// a driver whose server restricts names (NATS subjects) escapes them and gives them back
/// unescaped in [`BackplaneMessage::channel`].
///
/// A driver reconnects by itself after losing its server and then subscribes again to every
/// channel still subscribed; [`state`](Backplane::state) reports the connection state (only
/// [`BackplaneState::Connected`] once the subscriptions are back). Use one driver per hub: the
/// message stream is taken once.
#[diagnostic::on_unimplemented(
    message = "`{Self}` is not a signalbox backplane driver",
    note = "drivers live in the `signalbox-redis` and `signalbox-nats` crates"
)]
pub trait Backplane: Send + Sync + 'static {
    /// Publishes `payload` on `channel`. Fails fast with [`BackplaneError::NotConnected`] while
    /// disconnected (nothing is buffered: live delivery is at-most-once).
    fn publish<'a>(
        &'a self,
        channel: &'a str,
        payload: Bytes,
    ) -> BoxFuture<'a, Result<(), BackplaneError>>;

    /// Subscribes to `channels` (idempotent). The subscriptions are remembered even if this fails
    /// (for example while disconnected) and are made again after every reconnect. When it returns
    /// `Ok`, messages published afterwards on these channels are received.
    fn subscribe<'a>(&'a self, channels: &'a [String])
    -> BoxFuture<'a, Result<(), BackplaneError>>;

    /// Unsubscribes from `channels` (idempotent); they are forgotten even if this fails.
    fn unsubscribe<'a>(
        &'a self,
        channels: &'a [String],
    ) -> BoxFuture<'a, Result<(), BackplaneError>>;

    /// The messages of every subscribed channel, in publication order per channel. Returns the
    /// stream on the first call and `None` afterwards.
    fn messages(&self) -> Option<BackplaneStream>;

    /// Watches the connection state.
    fn state(&self) -> watch::Receiver<BackplaneState>;
}

impl<B: Backplane + ?Sized> Backplane for Arc<B> {
    fn publish<'a>(
        &'a self,
        channel: &'a str,
        payload: Bytes,
    ) -> BoxFuture<'a, Result<(), BackplaneError>> {
        (**self).publish(channel, payload)
    }

    fn subscribe<'a>(
        &'a self,
        channels: &'a [String],
    ) -> BoxFuture<'a, Result<(), BackplaneError>> {
        (**self).subscribe(channels)
    }

    fn unsubscribe<'a>(
        &'a self,
        channels: &'a [String],
    ) -> BoxFuture<'a, Result<(), BackplaneError>> {
        (**self).unsubscribe(channels)
    }

    fn messages(&self) -> Option<BackplaneStream> {
        (**self).messages()
    }

    fn state(&self) -> watch::Receiver<BackplaneState> {
        (**self).state()
    }
}

/// Capacity of each in-memory subscriber's queue; a full queue drops the message (at-most-once).
const MEMORY_QUEUE: usize = 4096;

/// An in-process pub/sub bus: every [`MemoryBackplane`] created from the same bus sees the others'
/// messages. For tests and single-process examples; [`MemoryBus::set_connected`] simulates an
/// outage.
#[derive(Clone, Default)]
pub struct MemoryBus {
    inner: Arc<Mutex<BusInner>>,
}

#[derive(Default)]
struct BusInner {
    next_id: u64,
    down: bool,
    nodes: HashMap<u64, BusNode>,
}

struct BusNode {
    channels: HashSet<String>,
    tx: mpsc::Sender<BackplaneMessage>,
    state: watch::Sender<BackplaneState>,
}

impl fmt::Debug for MemoryBus {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("MemoryBus").finish_non_exhaustive()
    }
}

impl MemoryBus {
    /// A new, empty bus.
    pub fn new() -> Self {
        Self::default()
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, BusInner> {
        // Nothing panics while holding the lock; a poisoned lock still holds consistent data.
        self.inner.lock().unwrap_or_else(PoisonError::into_inner)
    }

    /// A new driver attached to this bus.
    pub fn backplane(&self) -> MemoryBackplane {
        let (tx, rx) = mpsc::channel(MEMORY_QUEUE);
        let mut inner = self.lock();
        let initial = if inner.down {
            BackplaneState::Disconnected
        } else {
            BackplaneState::Connected
        };
        let (state, _) = watch::channel(initial);
        let id = inner.next_id;
        inner.next_id += 1;
        inner.nodes.insert(
            id,
            BusNode {
                channels: HashSet::new(),
                tx,
                state,
            },
        );
        MemoryBackplane {
            bus: self.clone(),
            id,
            rx: Mutex::new(Some(rx)),
        }
    }

    /// Takes the bus down (`false`: publishes fail, nothing is delivered) or brings it back.
    pub fn set_connected(&self, connected: bool) {
        let mut inner = self.lock();
        inner.down = !connected;
        let state = if connected {
            BackplaneState::Connected
        } else {
            BackplaneState::Disconnected
        };
        for node in inner.nodes.values() {
            node.state.send_replace(state);
        }
    }
}

/// A [`Backplane`] over a [`MemoryBus`].
pub struct MemoryBackplane {
    bus: MemoryBus,
    id: u64,
    rx: Mutex<Option<mpsc::Receiver<BackplaneMessage>>>,
}

impl fmt::Debug for MemoryBackplane {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("MemoryBackplane")
            .field("id", &self.id)
            .finish_non_exhaustive()
    }
}

impl Drop for MemoryBackplane {
    fn drop(&mut self) {
        self.bus.lock().nodes.remove(&self.id);
    }
}

impl Backplane for MemoryBackplane {
    fn publish<'a>(
        &'a self,
        channel: &'a str,
        payload: Bytes,
    ) -> BoxFuture<'a, Result<(), BackplaneError>> {
        let inner = self.bus.lock();
        let result = if inner.down {
            Err(BackplaneError::NotConnected)
        } else {
            for node in inner.nodes.values() {
                if node.channels.contains(channel) {
                    // A full queue drops the message for that node, like a slow pub/sub client.
                    let _ = node.tx.try_send(BackplaneMessage {
                        channel: channel.to_owned(),
                        payload: payload.clone(),
                    });
                }
            }
            Ok(())
        };
        drop(inner);
        async move { result }.boxed()
    }

    fn subscribe<'a>(
        &'a self,
        channels: &'a [String],
    ) -> BoxFuture<'a, Result<(), BackplaneError>> {
        if let Some(node) = self.bus.lock().nodes.get_mut(&self.id) {
            node.channels.extend(channels.iter().cloned());
        }
        async { Ok(()) }.boxed()
    }

    fn unsubscribe<'a>(
        &'a self,
        channels: &'a [String],
    ) -> BoxFuture<'a, Result<(), BackplaneError>> {
        if let Some(node) = self.bus.lock().nodes.get_mut(&self.id) {
            for channel in channels {
                node.channels.remove(channel);
            }
        }
        async { Ok(()) }.boxed()
    }

    fn messages(&self) -> Option<BackplaneStream> {
        let rx = self
            .rx
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .take()?;
        Some(StreamExt::boxed(futures_util::stream::unfold(
            rx,
            |mut rx| async move { rx.recv().await.map(|message| (message, rx)) },
        )))
    }

    fn state(&self) -> watch::Receiver<BackplaneState> {
        match self.bus.lock().nodes.get(&self.id) {
            Some(node) => node.state.subscribe(),
            None => watch::channel(BackplaneState::Disconnected).1,
        }
    }
}
