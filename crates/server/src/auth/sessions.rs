//! Sign-ins that end before their tokens expire. An access token names its session (`sid`, the
//! refresh-token family of the login); signing out, a reused refresh token, and removing or
//! disabling an account end sessions. From then on the session's tokens are refused
//! ([`Sessions::check`], on every REST call and hub request), and its open connections close:
//! at once on the node that ended it, and within [`WATCH_INTERVAL`] on every other node, which
//! read the `auth_events` log (so an account removed with the CLI, another process, is covered
//! too).

use std::collections::HashMap;
use std::sync::{Arc, Mutex, OnceLock, PoisonError};
use std::time::Duration;

use signalbox::HubContext;

use super::store::{AccountStatus, AuthEvent};
use crate::clock::{duration_ms, now_ms};
use crate::db::coalesce::Coalescer;
use crate::db::{Db, StoreError};

/// How often each node reads the events other processes wrote.
pub const WATCH_INTERVAL: Duration = Duration::from_secs(2);

/// How far back each read reaches past the previous one: events committed late, or stamped by a
/// node whose clock is a little behind, are still seen. Handling an event twice is harmless.
const OVERLAP: Duration = Duration::from_secs(10);

/// How long events are kept.
const EVENT_RETENTION: Duration = Duration::from_secs(24 * 3600);

/// Why a sign-in no longer stands.
#[derive(Debug, thiserror::Error)]
pub enum SessionError {
    /// The account was removed (or never existed).
    #[error("the account does not exist")]
    UnknownUser,
    /// The account is disabled, or the session was ended.
    #[error("the session has ended")]
    Revoked,
    /// Storage failed.
    #[error(transparent)]
    Store(#[from] StoreError),
}

#[derive(Debug)]
struct Tracked {
    user: Arc<str>,
    session: Option<Box<str>>,
}

#[derive(Debug)]
struct Inner {
    db: Db,
    /// Account checks of concurrent requests, answered by one query (never cached).
    accounts: Coalescer<AccountStatus>,
    hub: OnceLock<HubContext>,
    // std mutex: never held across an await.
    local: Mutex<HashMap<Arc<str>, Tracked>>,
}

/// The sessions of this node's connections, and the checks every request goes through.
#[derive(Debug, Clone)]
pub struct Sessions {
    inner: Arc<Inner>,
}

impl Sessions {
    /// Sessions stored in `db`.
    pub fn new(db: Db) -> Self {
        Self {
            inner: Arc::new(Inner {
                accounts: Coalescer::new(
                    db.clone(),
                    Arc::new(|db: Db, names: Vec<String>| {
                        Box::pin(async move { db.account_statuses(&names).await }) as _
                    }),
                ),
                db,
                hub: OnceLock::new(),
                local: Mutex::new(HashMap::new()),
            }),
        }
    }

    /// The hub whose connections end with their sessions (set once, after the hub is built).
    pub fn attach_hub(&self, hub: HubContext) {
        if self.inner.hub.set(hub).is_err() {
            tracing::warn!("sessions: a hub was attached twice; keeping the first");
        }
    }

    fn local(&self) -> std::sync::MutexGuard<'_, HashMap<Arc<str>, Tracked>> {
        self.inner
            .local
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
    }

    /// Whether `user`'s sign-in (with session `session`, when the token names one) still stands.
    pub async fn check(&self, user: &str, session: Option<&str>) -> Result<(), SessionError> {
        match self
            .inner
            .accounts
            .get(user)
            .await?
            .unwrap_or(AccountStatus::Missing)
        {
            AccountStatus::Missing => return Err(SessionError::UnknownUser),
            AccountStatus::Disabled => return Err(SessionError::Revoked),
            AccountStatus::Active => {}
        }
        if let Some(session) = session
            && self.inner.db.session_revoked(session).await?
        {
            return Err(SessionError::Revoked);
        }
        Ok(())
    }

    /// Remembers a connection of this node, so that it closes when its session or user ends.
    /// (The ids are shared with the hub's own tables: see `Caller::shared_connection_id`.)
    pub fn track(&self, connection_id: Arc<str>, user: Arc<str>, session: Option<&str>) {
        self.local().insert(
            connection_id,
            Tracked {
                user,
                session: session.map(Into::into),
            },
        );
    }

    /// Forgets a connection that ended.
    pub fn untrack(&self, connection_id: &str) {
        self.local().remove(connection_id);
    }

    /// The connections of this node that `event` ends.
    fn ended_by(&self, event: &AuthEvent) -> Vec<String> {
        self.local()
            .iter()
            .filter(|(_, tracked)| match event {
                AuthEvent::SessionEnded(session) => {
                    tracked.session.as_deref() == Some(session.as_str())
                }
                AuthEvent::UserEnded(user) => *tracked.user == **user,
            })
            .map(|(id, _)| id.to_string())
            .collect()
    }

    /// Closes this node's connections that `event` ends; returns how many.
    pub async fn end(&self, event: &AuthEvent) -> usize {
        let Some(hub) = self.inner.hub.get() else {
            return 0;
        };
        let ended = self.ended_by(event);
        for connection_id in &ended {
            let user = self
                .local()
                .remove(connection_id.as_str())
                .map(|tracked| tracked.user);
            tracing::info!(
                user = user.as_deref().unwrap_or_default(),
                connection_id = %connection_id,
                reason = match event {
                    AuthEvent::SessionEnded(_) => "session ended",
                    AuthEvent::UserEnded(_) => "account removed or disabled",
                },
                "closing a connection whose sign-in ended"
            );
            hub.abort_connection(connection_id).await;
        }
        ended.len()
    }

    /// Reads the events every [`WATCH_INTERVAL`] and closes the connections they end.
    pub fn spawn_watch(&self) -> tokio::task::JoinHandle<()> {
        let sessions = self.clone();
        tokio::spawn(async move {
            let mut since = now_ms();
            let mut ticks: u64 = 0;
            let mut interval = tokio::time::interval(WATCH_INTERVAL);
            interval.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
            loop {
                interval.tick().await;
                let started = now_ms();
                let from = since.saturating_sub(duration_ms(OVERLAP));
                match sessions.inner.db.auth_events_since(from).await {
                    Ok(events) => {
                        since = started;
                        if !sessions.local().is_empty() {
                            for event in &events {
                                sessions.end(event).await;
                            }
                        }
                    }
                    Err(error) => tracing::warn!(%error, "cannot read ended sessions"),
                }
                ticks = ticks.wrapping_add(1);
                if ticks.is_multiple_of(1800) {
                    let before = now_ms().saturating_sub(duration_ms(EVENT_RETENTION));
                    if let Err(error) = sessions.inner.db.purge_auth_events(before).await {
                        tracing::warn!(%error, "cannot purge old session events");
                    }
                }
            }
        })
    }
}
