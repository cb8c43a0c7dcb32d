//! The connection table, keyed by connection token, with one reaper for abandoned negotiations
//! (SignalR's `HttpConnectionManager`).

use crate::connection::outbound::OutboundReceiver;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex, OnceLock, Weak};
use std::time::Duration;

use bytes::Bytes;
use dashmap::DashMap;
use signalbox_protocol::TransportType;
use tokio::sync::mpsc;
use tokio::time::Instant;
use tokio_util::sync::CancellationToken;

use super::AuthCell;
use super::id::new_id;
use super::resume::Resumable;

/// Where a connection is in its life.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum ConnectionState {
    /// Negotiated; no transport yet.
    Pending,
    /// A transport is attached.
    Active(TransportType),
}

/// One entry of the table.
#[derive(Debug)]
pub(crate) struct ConnectionEntry {
    pub(crate) id: Arc<str>,
    /// Shared with the table's key (and, for negotiate version 0, with `id`).
    pub(crate) token: Arc<str>,
    /// Stateful reconnect was negotiated.
    pub(crate) stateful: bool,
    created: Instant,
    state: Mutex<ConnectionState>,
    /// Cancelled when the connection is disposed: ends the hub's inbound stream and any poll.
    pub(crate) closed: CancellationToken,
    /// Where POSTed bytes go (SSE and long polling; created on first use, so data POSTed before
    /// the first poll is kept).
    /// (Boxed, as the long-polling state: a WebSocket connection never uses either.)
    inbound: OnceLock<Box<Inbound>>,
    /// Long-polling state.
    pub(crate) long_poll: OnceLock<Box<LongPoll>>,
    /// Stateful-reconnect state (WebSockets).
    pub(crate) resumable: OnceLock<Arc<Resumable>>,
    /// The running connection's replaceable principal: set when the hub starts on it, only when
    /// authentication refresh is enabled (`POST {hub}/refresh` finds it here by token).
    pub(crate) auth: OnceLock<Arc<AuthCell>>,
}

/// The outbound side of a long-polling connection, shared by its successive polls.
#[derive(Debug)]
pub(crate) struct LongPoll {
    /// Frames waiting for the next poll; one poll holds the lock at a time.
    pub(crate) frames: tokio::sync::Mutex<OutboundReceiver>,
    /// The poll in progress; a newer poll cancels it (it answers 204).
    pub(crate) current: Mutex<CancellationToken>,
    /// Polls in flight.
    pub(crate) active: AtomicUsize,
    /// When the last poll ended.
    pub(crate) idle_since: Mutex<Instant>,
}

impl LongPoll {
    pub(crate) fn new(frames: OutboundReceiver) -> Self {
        Self {
            frames: tokio::sync::Mutex::new(frames),
            current: Mutex::new(CancellationToken::new()),
            active: AtomicUsize::new(0),
            idle_since: Mutex::new(Instant::now()),
        }
    }

    fn idle_for(&self, now: Instant) -> Option<Duration> {
        if self.active.load(Ordering::Acquire) > 0 {
            return None;
        }
        self.idle_since.lock().ok().map(|t| now.duration_since(*t))
    }
}

/// Inbound chunks buffered per connection before senders wait.
pub(crate) const INBOUND_CAPACITY: usize = 16;

/// The client-to-server byte queue of a connection whose transport is not a plain WebSocket.
#[derive(Debug)]
pub(crate) struct Inbound {
    pub(crate) tx: mpsc::Sender<Bytes>,
    rx: Mutex<Option<mpsc::Receiver<Bytes>>>,
}

impl ConnectionEntry {
    /// The inbound queue, created on first use.
    pub(crate) fn inbound(&self) -> &Inbound {
        self.inbound.get_or_init(|| {
            let (tx, rx) = mpsc::channel(INBOUND_CAPACITY);
            Box::new(Inbound {
                tx,
                rx: Mutex::new(Some(rx)),
            })
        })
    }

    /// The inbound queue's sender, if the queue exists.
    pub(crate) fn inbound_sender(&self) -> Option<&mpsc::Sender<Bytes>> {
        self.inbound.get().map(|inbound| &inbound.tx)
    }

    /// Takes the inbound queue's receiving end (once, for the transport that starts the hub).
    pub(crate) fn take_inbound(&self) -> (mpsc::Sender<Bytes>, mpsc::Receiver<Bytes>) {
        let inbound = self.inbound();
        let rx = inbound.rx.lock().ok().and_then(|mut rx| rx.take());
        match rx {
            Some(rx) => (inbound.tx.clone(), rx),
            // Only one transport request starts a connection; a second taker gets a dead queue.
            None => mpsc::channel(1),
        }
    }

    /// Whether the connection was negotiated with version 0 (its token is its public id), so
    /// that knowing the id would be enough to refresh it.
    pub(crate) fn is_version_zero(&self) -> bool {
        self.id == self.token
    }

    /// Ends the connection: the hub sees its inbound stream end.
    pub(crate) fn dispose(&self) {
        self.closed.cancel();
    }
}

/// How a transport request relates to the connection.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Attached {
    /// The first transport request: start the connection.
    First,
    /// A later request of the same transport (a long poll, a stateful reconnect).
    Again,
}

/// Why a transport could not attach to a connection.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum AttachError {
    NotFound,
    Conflict,
    TransportMismatch,
}

/// The table of connections of one hub endpoint.
#[derive(Debug, Default)]
pub(crate) struct ConnectionManager {
    entries: DashMap<Arc<str>, Arc<ConnectionEntry>>,
    reaper_started: AtomicBool,
}

impl ConnectionManager {
    /// Creates a connection; for negotiate version 0 the token is the id.
    pub(crate) fn create(&self, negotiate_version: u32, stateful: bool) -> Arc<ConnectionEntry> {
        self.create_signed(negotiate_version, stateful, None, None)
    }

    /// Creates a connection whose token (negotiate version 1) is signed with `secret`, when given,
    /// and names `owner`, this node (see `token.rs`).
    pub(crate) fn create_signed(
        &self,
        negotiate_version: u32,
        stateful: bool,
        secret: Option<&[u8]>,
        owner: Option<&str>,
    ) -> Arc<ConnectionEntry> {
        let id: Arc<str> = Arc::from(new_id());
        let token = if negotiate_version >= 1 {
            Arc::from(
                secret
                    .and_then(|secret| super::token::sign(secret, &id, owner))
                    .unwrap_or_else(new_id),
            )
        } else {
            id.clone()
        };
        self.insert(id, token, stateful, ConnectionState::Pending)
    }

    /// Adopts a connection negotiated on another node (its token verified by the caller).
    pub(crate) fn adopt(
        &self,
        id: String,
        token: String,
        transport: TransportType,
    ) -> Arc<ConnectionEntry> {
        self.insert(
            Arc::from(id),
            Arc::from(token),
            false,
            ConnectionState::Active(transport),
        )
    }

    fn insert(
        &self,
        id: Arc<str>,
        token: Arc<str>,
        stateful: bool,
        state: ConnectionState,
    ) -> Arc<ConnectionEntry> {
        let entry = Arc::new(ConnectionEntry {
            id,
            token: token.clone(),
            stateful,
            created: Instant::now(),
            state: Mutex::new(state),
            closed: CancellationToken::new(),
            inbound: OnceLock::new(),
            long_poll: OnceLock::new(),
            resumable: OnceLock::new(),
            auth: OnceLock::new(),
        });
        self.entries.insert(token, entry.clone());
        entry
    }

    /// Creates a connection that is immediately active (WebSockets with skipNegotiation).
    pub(crate) fn create_active(&self, transport: TransportType) -> Arc<ConnectionEntry> {
        let entry = self.create(0, false);
        if let Ok(mut state) = entry.state.lock() {
            *state = ConnectionState::Active(transport);
        }
        entry
    }

    /// Attaches a transport request to a connection.
    pub(crate) fn attach(
        &self,
        token: &str,
        transport: TransportType,
    ) -> Result<(Arc<ConnectionEntry>, Attached), AttachError> {
        let entry = self
            .entries
            .get(token)
            .map(|e| e.clone())
            .ok_or(AttachError::NotFound)?;
        let mut state = entry.state.lock().map_err(|_| AttachError::NotFound)?;
        match *state {
            ConnectionState::Pending => {
                *state = ConnectionState::Active(transport);
                drop(state);
                Ok((entry, Attached::First))
            }
            ConnectionState::Active(TransportType::LongPolling)
                if transport == TransportType::LongPolling =>
            {
                drop(state);
                Ok((entry, Attached::Again))
            }
            // Stateful reconnect: a new socket takes over from the previous one, also when the
            // server has not yet noticed that the previous one died (the client often notices
            // first and reconnects at once); the previous socket is then cancelled, as ASP.NET
            // Core cancels the previous transport.
            ConnectionState::Active(TransportType::WebSockets)
                if transport == TransportType::WebSockets
                    && entry
                        .resumable
                        .get()
                        .is_some_and(|r| r.is_parked() || r.is_enabled()) =>
            {
                drop(state);
                Ok((entry, Attached::Again))
            }
            ConnectionState::Active(current) if current == transport => Err(AttachError::Conflict),
            ConnectionState::Active(_) => Err(AttachError::TransportMismatch),
        }
    }

    /// The state of a connection.
    pub(crate) fn state(&self, token: &str) -> Option<ConnectionState> {
        let entry = self.entries.get(token)?;
        entry.state.lock().ok().map(|s| *s)
    }

    /// A connection by token.
    pub(crate) fn get(&self, token: &str) -> Option<Arc<ConnectionEntry>> {
        self.entries.get(token).map(|e| e.clone())
    }

    /// Removes a connection.
    pub(crate) fn remove(&self, token: &str) {
        self.entries.remove(token);
    }

    /// Disposes connections inactive for `timeout`: negotiated but never picked up, long polling
    /// without a poll, stateful WebSockets without a socket. Returns how many.
    pub(crate) fn reap(&self, timeout: Duration) -> usize {
        let now = Instant::now();
        let before = self.entries.len();
        self.entries.retain(|_, entry| {
            let pending = entry
                .state
                .lock()
                .map(|s| *s == ConnectionState::Pending)
                .unwrap_or(true);
            let expired = if pending {
                now.duration_since(entry.created) >= timeout
            } else if let Some(poll) = entry.long_poll.get() {
                poll.idle_for(now).is_some_and(|idle| idle >= timeout)
            } else if let Some(resumable) = entry.resumable.get() {
                resumable
                    .parked_for(now)
                    .is_some_and(|idle| idle >= timeout)
            } else {
                false
            };
            if expired {
                entry.dispose();
            }
            !expired
        });
        before - self.entries.len()
    }

    /// Starts the once-a-second reaper the first time it is called (inside a runtime). The task
    /// ends when the manager is dropped.
    pub(crate) fn ensure_reaper(self: &Arc<Self>, timeout: Duration) {
        if self.reaper_started.swap(true, Ordering::AcqRel) {
            return;
        }
        let weak: Weak<Self> = Arc::downgrade(self);
        tokio::spawn(async move {
            let mut tick = tokio::time::interval(Duration::from_secs(1));
            tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
            loop {
                tick.tick().await;
                let Some(manager) = weak.upgrade() else { break };
                let reaped = manager.reap(timeout);
                if reaped > 0 {
                    tracing::debug!(target: "signalbox::transport", reaped, "discarded negotiated connections no transport picked up");
                }
            }
        });
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn version_zero_uses_the_id_as_token() {
        let m = ConnectionManager::default();
        let v0 = m.create(0, false);
        assert_eq!(&*v0.id, &*v0.token);
        assert!(v0.is_version_zero());
        let v1 = m.create(1, false);
        assert_ne!(&*v1.id, &*v1.token);
        assert!(!v1.is_version_zero());
        assert_eq!(m.entries.len(), 2);
    }

    #[test]
    fn attach_once_then_conflict_or_mismatch() {
        let m = ConnectionManager::default();
        let e = m.create(1, false);
        assert_eq!(
            m.attach("nope", TransportType::WebSockets).unwrap_err(),
            AttachError::NotFound
        );
        m.attach(&e.token, TransportType::WebSockets).unwrap();
        assert_eq!(
            m.attach(&e.token, TransportType::WebSockets).unwrap_err(),
            AttachError::Conflict
        );
        assert_eq!(
            m.attach(&e.token, TransportType::LongPolling).unwrap_err(),
            AttachError::TransportMismatch
        );
        let lp = m.create(1, false);
        assert_eq!(
            m.attach(&lp.token, TransportType::LongPolling).unwrap().1,
            Attached::First
        );
        assert_eq!(
            m.attach(&lp.token, TransportType::LongPolling).unwrap().1,
            Attached::Again
        );
        assert_eq!(
            m.state(&e.token),
            Some(ConnectionState::Active(TransportType::WebSockets))
        );
        m.remove(&e.token);
        assert_eq!(m.state(&e.token), None);
    }

    #[tokio::test(start_paused = true)]
    async fn reaps_only_old_pending_connections() {
        let m = ConnectionManager::default();
        let pending = m.create(1, false);
        let active = m.create(1, false);
        m.attach(&active.token, TransportType::WebSockets).unwrap();
        tokio::time::advance(Duration::from_secs(10)).await;
        assert_eq!(m.reap(Duration::from_secs(15)), 0);
        tokio::time::advance(Duration::from_secs(6)).await;
        assert_eq!(m.reap(Duration::from_secs(15)), 1);
        assert_eq!(m.state(&pending.token), None);
        assert!(m.state(&active.token).is_some());
    }
}
