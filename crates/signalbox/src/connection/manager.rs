//! The connection table, keyed by connection token, with one reaper for abandoned negotiations
//! (SignalR's `HttpConnectionManager`).

use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex, Weak};
use std::time::Duration;

use dashmap::DashMap;
use signalbox_protocol::TransportType;
use tokio::time::Instant;

use super::id::new_id;

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
    pub(crate) token: String,
    created: Instant,
    state: Mutex<ConnectionState>,
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
    entries: DashMap<String, Arc<ConnectionEntry>>,
    reaper_started: AtomicBool,
}

impl ConnectionManager {
    /// Creates a connection; for negotiate version 0 the token is the id.
    pub(crate) fn create(&self, negotiate_version: u32) -> Arc<ConnectionEntry> {
        let id = new_id();
        let token = if negotiate_version >= 1 {
            new_id()
        } else {
            id.clone()
        };
        let entry = Arc::new(ConnectionEntry {
            id: Arc::from(id),
            token: token.clone(),
            created: Instant::now(),
            state: Mutex::new(ConnectionState::Pending),
        });
        self.entries.insert(token, entry.clone());
        entry
    }

    /// Creates a connection that is immediately active (WebSockets with skipNegotiation).
    pub(crate) fn create_active(&self, transport: TransportType) -> Arc<ConnectionEntry> {
        let entry = self.create(0);
        if let Ok(mut state) = entry.state.lock() {
            *state = ConnectionState::Active(transport);
        }
        entry
    }

    /// Attaches a transport to a pending connection.
    pub(crate) fn attach(
        &self,
        token: &str,
        transport: TransportType,
    ) -> Result<Arc<ConnectionEntry>, AttachError> {
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
                Ok(entry)
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

    /// Removes a connection.
    pub(crate) fn remove(&self, token: &str) {
        self.entries.remove(token);
    }

    /// Removes pending connections older than `timeout`; returns how many.
    pub(crate) fn reap(&self, timeout: Duration) -> usize {
        let now = Instant::now();
        let before = self.entries.len();
        self.entries.retain(|_, entry| {
            let pending = entry
                .state
                .lock()
                .map(|s| *s == ConnectionState::Pending)
                .unwrap_or(true);
            !(pending && now.duration_since(entry.created) >= timeout)
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
        let v0 = m.create(0);
        assert_eq!(&*v0.id, v0.token.as_str());
        let v1 = m.create(1);
        assert_ne!(&*v1.id, v1.token.as_str());
        assert_eq!(m.entries.len(), 2);
    }

    #[test]
    fn attach_once_then_conflict_or_mismatch() {
        let m = ConnectionManager::default();
        let e = m.create(1);
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
        let pending = m.create(1);
        let active = m.create(1);
        m.attach(&active.token, TransportType::WebSockets).unwrap();
        tokio::time::advance(Duration::from_secs(10)).await;
        assert_eq!(m.reap(Duration::from_secs(15)), 0);
        tokio::time::advance(Duration::from_secs(6)).await;
        assert_eq!(m.reap(Duration::from_secs(15)), 1);
        assert_eq!(m.state(&pending.token), None);
        assert!(m.state(&active.token).is_some());
    }
}
