//! The hub's heartbeat: one timer for all of a hub's connections on this node, as SignalR's
//! `HubConnectionContext.TickHeartbeat` runs off one server-wide timer. Every tick it sends
//! keep-alive pings, closes connections whose client went silent or whose token expired, and
//! acknowledges what stateful clients sent; when the server shuts down it closes every connection
//! at once. A connection's own future then waits only for its input and its close signal, and
//! holds no timer.

use std::sync::{Arc, Mutex, MutexGuard, OnceLock, Weak};
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use signalbox_protocol::{Ack, HubMessage, Protocol};
use slab::Slab;
use tokio::time::{Instant, MissedTickBehavior};
use tokio_util::sync::CancellationToken;

use super::caller::{Caller, CloseReason};
use crate::connection::outbound::OutboundSender;
use crate::connection::resume::Resumable;

/// The longest time between two ticks: the resolution of the client timeout and of token expiry,
/// and how often stateful clients get their Ack.
const MAX_PERIOD: Duration = Duration::from_secs(1);

/// How often a stateful client is acknowledged what it sent (at most; only when it sent some).
const ACK_INTERVAL: Duration = Duration::from_secs(1);

/// A hub's heartbeat (one per hub, started with its first connection).
pub(crate) struct Heartbeat {
    shared: Arc<Shared>,
    started: OnceLock<()>,
}

struct Shared {
    /// Zero of the heartbeat's clock, in which connections record when they last received.
    epoch: Instant,
    period: Duration,
    /// `None`: no pings and no client timeout for any connection.
    keep_alive: Duration,
    client_timeout: Duration,
    close_on_expiry: bool,
    shutdown: CancellationToken,
    connections: Mutex<Slab<Beat>>,
}

/// What the heartbeat keeps of one connection.
struct Beat {
    caller: Caller,
    outbound: OutboundSender,
    protocol: Protocol,
    /// Pings and the client timeout apply (not on long polling).
    keep_alive: bool,
    /// When to send the next ping (heartbeat clock, milliseconds).
    next_ping: u64,
    /// When the token expires (milliseconds since the Unix epoch; 0: never or not checked), unless
    /// the connection takes authentication refreshes (then the caller knows the current one).
    expires_at: u64,
    /// Stateful reconnect, when negotiated: its Acks.
    resumable: Option<Arc<Resumable>>,
    /// When to send the next Ack, if there is something to acknowledge (heartbeat clock).
    next_ack: u64,
}

/// A connection's place in the heartbeat; dropping it leaves.
pub(crate) struct Registration {
    shared: Weak<Shared>,
    key: usize,
}

impl Drop for Registration {
    fn drop(&mut self) {
        if let Some(shared) = self.shared.upgrade() {
            let mut connections = shared.lock();
            if connections.contains(self.key) {
                connections.remove(self.key);
            }
        }
    }
}

/// How a connection takes part in the heartbeat (see [`Heartbeat::register`]).
pub(crate) struct Member {
    pub(crate) caller: Caller,
    pub(crate) outbound: OutboundSender,
    pub(crate) keep_alive: bool,
    /// The token's expiry (milliseconds since the Unix epoch), if it has one.
    pub(crate) expires_at: Option<u64>,
    pub(crate) resumable: Option<Arc<Resumable>>,
}

impl Heartbeat {
    pub(crate) fn new(
        keep_alive: Duration,
        client_timeout: Duration,
        close_on_expiry: bool,
        shutdown: CancellationToken,
    ) -> Self {
        let period = MAX_PERIOD
            .min(keep_alive)
            .min(client_timeout)
            .max(Duration::from_millis(10));
        Self {
            shared: Arc::new(Shared {
                epoch: Instant::now(),
                period,
                keep_alive,
                client_timeout,
                close_on_expiry,
                shutdown,
                connections: Mutex::new(Slab::new()),
            }),
            started: OnceLock::new(),
        }
    }

    /// The heartbeat clock's time now, in milliseconds (never 0).
    pub(crate) fn now(&self) -> u64 {
        self.shared.now()
    }

    /// Adds a connection; it takes part until the registration is dropped. A connection that
    /// joins after the server began to shut down is closed at once.
    pub(crate) fn register(&self, member: Member) -> Registration {
        self.started.get_or_init(|| {
            tokio::spawn(run(
                Arc::downgrade(&self.shared),
                self.shared.shutdown.clone(),
            ));
        });
        let shared = &self.shared;
        let caller = member.caller.clone();
        let key = shared.lock().insert(Beat {
            caller: member.caller.detached(),
            outbound: member.outbound,
            protocol: caller.protocol(),
            keep_alive: member.keep_alive,
            next_ping: shared.now() + millis(shared.keep_alive),
            expires_at: member
                .expires_at
                .filter(|_| shared.close_on_expiry)
                .unwrap_or(0),
            resumable: member.resumable,
            next_ack: shared.now() + millis(ACK_INTERVAL),
        });
        // After the insert: either the shutdown sweep saw this connection, or this sees the
        // shutdown.
        if shared.shutdown.is_cancelled() {
            caller.close(CloseReason::Shutdown);
        }
        Registration {
            shared: Arc::downgrade(shared),
            key,
        }
    }
}

impl Shared {
    fn now(&self) -> u64 {
        millis(self.epoch.elapsed()).max(1)
    }

    fn lock(&self) -> MutexGuard<'_, Slab<Beat>> {
        self.connections
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
    }

    /// One tick: pings, timeouts, expiry, Acks.
    fn tick(&self) {
        let now = self.now();
        let wall = millis(
            SystemTime::now()
                .duration_since(UNIX_EPOCH)
                .unwrap_or_default(),
        );
        let client_timeout = millis(self.client_timeout);
        let keep_alive = millis(self.keep_alive);
        let mut connections = self.lock();
        for (_, beat) in connections.iter_mut() {
            let caller = &beat.caller;
            if caller.is_closing() {
                continue;
            }
            let expires_at = match caller.refreshed_expiry() {
                Some(current) if self.close_on_expiry => current.unwrap_or(0),
                _ => beat.expires_at,
            };
            if expires_at != 0 && wall >= expires_at {
                tracing::debug!(
                    connection_id = caller.connection_id(),
                    "authentication expired; closing"
                );
                caller.close(CloseReason::AuthenticationExpired);
                continue;
            }
            if beat.keep_alive {
                if caller
                    .last_received()
                    .is_some_and(|last| now >= last.saturating_add(client_timeout))
                {
                    tracing::debug!(connection_id = caller.connection_id(), "client timeout");
                    caller.close(CloseReason::ClientTimeout);
                    continue;
                }
                if now >= beat.next_ping {
                    if let Ok(ping) = beat.protocol.encode_to_bytes(&HubMessage::Ping) {
                        // A full queue means the client is busy receiving already.
                        let _ = beat.outbound.try_send(ping);
                    }
                    beat.next_ping = now + keep_alive;
                }
            }
            if let Some(resumable) = &beat.resumable
                && now >= beat.next_ack
                && resumable.is_enabled()
                && let Some(sequence_id) = resumable.take_client_ack()
                && let Ok(frame) = beat
                    .protocol
                    .encode_to_bytes(&HubMessage::Ack(Ack { sequence_id }))
            {
                // Acks are advisory: a later one covers a dropped one.
                let _ = beat.outbound.try_send(frame);
                beat.next_ack = now + millis(ACK_INTERVAL);
            }
        }
    }

    /// The server is shutting down: every connection closes (and is told it may reconnect).
    fn shut_down(&self) {
        for (_, beat) in self.lock().iter() {
            beat.caller.close(CloseReason::Shutdown);
        }
    }
}

/// Ticks until the hub is gone; closes every connection when the server shuts down.
async fn run(shared: Weak<Shared>, shutdown: CancellationToken) {
    let Some(period) = shared.upgrade().map(|shared| shared.period) else {
        return;
    };
    let mut ticks = tokio::time::interval_at(Instant::now() + period, period);
    ticks.set_missed_tick_behavior(MissedTickBehavior::Delay);
    let mut shut_down = false;
    loop {
        tokio::select! {
            () = shutdown.cancelled(), if !shut_down => {
                shut_down = true;
                let Some(shared) = shared.upgrade() else { return };
                shared.shut_down();
            }
            _ = ticks.tick() => {
                let Some(shared) = shared.upgrade() else { return };
                shared.tick();
            }
        }
    }
}

fn millis(duration: Duration) -> u64 {
    u64::try_from(duration.as_millis()).unwrap_or(u64::MAX)
}
