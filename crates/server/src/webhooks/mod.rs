//! Outgoing webhooks: signed HTTP POSTs to configured receivers ([`delivery`]), and the
//! notification service's lifecycle webhooks (see docs/webhooks.md).
//!
//! Lifecycle events: `user.online` / `user.offline` on the presence edges (see
//! [`crate::presence`]; each edge is seen by one node of the cluster), `connection.connected` /
//! `connection.disconnected` for the notification hub's connections. [`Webhooks`] stores every
//! event in the database before anything is sent ([`store`]); a [`WebhookWorker`] on each node
//! claims due events with a lease, POSTs them signed, and retries with backoff until the receiver
//! answers `2xx` or the attempts are used up, so delivery is at least once, across restarts, and
//! never concurrent for one event. Presence events are debounced: `user.offline` is due only
//! after `webhooks.debounce`, and a user who comes back before it is sent withdraws it instead of
//! causing a `user.online`. A user's presence events are delivered in order.
//!
//! Metrics (registered at zero from the start by [`register_metrics`]):
//!
//! | name | kind | labels |
//! |---|---|---|
//! | `signalbox_webhook_deliveries_total` | counter | `event` (type), `outcome` = `delivered`, `retried` (failed, another attempt is scheduled) or `failed` (given up) — one per attempt |
//! | `signalbox_webhook_debounced_total` | counter | — (offline/online pairs withdrawn within the debounce) |
//! | `signalbox_webhook_pending` | gauge | — (events waiting for delivery in the database, all nodes) |

pub mod admin;
pub mod delivery;
mod event;
pub mod store;
mod worker;

use std::sync::Arc;

use reqwest::Url;
use tokio::sync::Notify;

pub use event::{EventBody, EventType};
pub use worker::WebhookWorker;

use crate::clock::{duration_ms, now_ms, rfc3339};
use crate::config::WebhooksConfig;
use crate::db::Db;
use delivery::{Delivery, RetryPolicy};
use store::{NewEvent, PresencePolicy, PresenceRecord};

/// Delivery attempts, by event type and outcome.
pub const DELIVERIES: &str = "signalbox_webhook_deliveries_total";
/// Offline/online pairs withdrawn within the debounce.
pub const DEBOUNCED: &str = "signalbox_webhook_debounced_total";
/// Events waiting for delivery, all nodes.
pub const PENDING: &str = "signalbox_webhook_pending";

/// The `outcome` labels of [`DELIVERIES`].
pub const OUTCOMES: &[&str] = &["delivered", "retried", "failed"];

/// Describes the webhook metrics and registers every series at zero.
pub fn register_metrics() {
    metrics::describe_counter!(
        DELIVERIES,
        "Webhook delivery attempts, by event type and outcome (delivered, retried, failed)"
    );
    metrics::describe_counter!(
        DEBOUNCED,
        "Webhook offline/online pairs withdrawn because the user came back within the debounce"
    );
    metrics::describe_gauge!(PENDING, "Webhook events waiting for delivery (all nodes)");
    for event in EventType::NAMES {
        for outcome in OUTCOMES {
            metrics::counter!(DELIVERIES, "event" => *event, "outcome" => *outcome).increment(0);
        }
    }
    metrics::counter!(DEBOUNCED).increment(0);
    metrics::gauge!(PENDING).increment(0.0);
}

/// The webhooks cannot be set up.
#[derive(Debug, thiserror::Error)]
pub enum WebhookError {
    /// The URL is not an absolute `http://` or `https://` URL.
    #[error("webhooks.url is not an http:// or https:// URL")]
    InvalidUrl,
    /// A URL without a secret.
    #[error("webhooks.url is set but webhooks.secret is not")]
    MissingSecret,
}

/// The lifecycle webhooks of this node: records events and wakes the worker; cheap to clone. A
/// no-op when webhooks are off.
#[derive(Clone, Default)]
pub struct Webhooks {
    inner: Option<Arc<Inner>>,
}

impl std::fmt::Debug for Webhooks {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Webhooks")
            .field(
                "url",
                &self.inner.as_ref().map(|i| delivery::display_url(&i.url)),
            )
            .finish_non_exhaustive()
    }
}

/// What the handle and the worker share.
pub(crate) struct Inner {
    pub(crate) db: Db,
    pub(crate) node: String,
    pub(crate) config: WebhooksConfig,
    pub(crate) url: Url,
    pub(crate) secret: String,
    pub(crate) delivery: Delivery,
    pub(crate) policy: RetryPolicy,
    /// Wakes the worker: an event was stored or made due.
    pub(crate) wake: Notify,
}

impl Webhooks {
    /// The webhooks of `config` for node `node`, storing events in `db`; off (every method a
    /// no-op) when no URL is configured.
    pub fn new(db: Db, config: &WebhooksConfig, node: &str) -> Result<Self, WebhookError> {
        let Some(url) = &config.url else {
            return Ok(Self::disabled());
        };
        let url = Url::parse(url.trim())
            .ok()
            .filter(|u| matches!(u.scheme(), "http" | "https") && u.host_str().is_some())
            .ok_or(WebhookError::InvalidUrl)?;
        let secret = config.secret.clone().ok_or(WebhookError::MissingSecret)?;
        Ok(Self {
            inner: Some(Arc::new(Inner {
                db,
                node: node.to_owned(),
                delivery: Delivery::new(config.timeout),
                policy: RetryPolicy::new(config.max_attempts, config.backoff, config.backoff_max),
                config: config.clone(),
                url,
                secret,
                wake: Notify::new(),
            })),
        })
    }

    /// Webhooks that are off.
    pub fn disabled() -> Self {
        Self { inner: None }
    }

    /// Whether webhooks are on.
    pub fn is_enabled(&self) -> bool {
        self.inner.is_some()
    }

    /// The receiver, for display (no credentials, query or fragment).
    pub fn display_url(&self) -> Option<String> {
        self.inner.as_ref().map(|i| delivery::display_url(&i.url))
    }

    /// The event types sent (none when off).
    pub fn events(&self) -> Vec<EventType> {
        self.inner
            .as_ref()
            .map(|i| i.config.events.clone())
            .unwrap_or_default()
    }

    /// Starts this node's delivery worker; `None` when webhooks are off.
    pub fn start(&self) -> Option<WebhookWorker> {
        self.inner.clone().map(WebhookWorker::start)
    }

    /// Tells the worker that an event may be due (e.g. after a retry was requested).
    pub fn wake(&self) {
        if let Some(inner) = &self.inner {
            inner.wake.notify_one();
        }
    }

    /// Records what a presence edge of `user` (at `at`, ms) means for the receivers: in one
    /// transaction under the lock of the user's row, the user's recorded presence (live
    /// connections on any node) is compared with what receivers were last told; online now, told
    /// offline: a `user.offline` not yet due and never attempted (the user came back within the
    /// debounce) is withdrawn and nothing is sent, otherwise a `user.online` due at once is
    /// stored; offline now, told online: a `user.offline` due after the debounce is stored.
    /// Reading the presence rather than trusting the edge keeps receivers right when two nodes
    /// record a user's edges in the opposite order. Failures are logged: presence goes on
    /// without webhooks.
    pub async fn presence_changed(&self, user: &str, at: i64) {
        let Some(inner) = &self.inner else {
            return;
        };
        let policy = PresencePolicy {
            online: inner.config.sends(EventType::UserOnline),
            offline: inner.config.sends(EventType::UserOffline),
            debounce_ms: duration_ms(inner.config.debounce),
        };
        if !policy.online && !policy.offline {
            return;
        }
        let make = |event: EventType| {
            let id = new_id();
            let body = inner.body(&id, event, user, None, at);
            (id, body)
        };
        match store::record_presence(&inner.db, user, now_ms(), policy, make, &inner.node, at).await
        {
            Ok(PresenceRecord::Stored(event)) => {
                tracing::debug!(user, %event, "webhook event stored");
                inner.wake.notify_one();
            }
            Ok(PresenceRecord::Debounced) => {
                tracing::debug!(user, "user back within the webhook debounce: nothing sent");
                metrics::counter!(DEBOUNCED).increment(1);
            }
            Ok(PresenceRecord::Unchanged | PresenceRecord::NotSent) => {}
            Err(error) => {
                tracing::warn!(%error, user, "cannot record a webhook presence event");
            }
        }
    }

    /// Records `connection.connected` for a new connection of `user` (at `at`, ms).
    pub async fn connection_opened(&self, user: &str, connection_id: &str, at: i64) {
        self.connection_event(EventType::ConnectionConnected, user, connection_id, at)
            .await;
    }

    /// Records `connection.disconnected` for a closed connection of `user` (at `at`, ms).
    pub async fn connection_closed(&self, user: &str, connection_id: &str, at: i64) {
        self.connection_event(EventType::ConnectionDisconnected, user, connection_id, at)
            .await;
    }

    async fn connection_event(&self, event: EventType, user: &str, connection_id: &str, at: i64) {
        let Some(inner) = &self.inner else {
            return;
        };
        if !inner.config.sends(event) {
            return;
        }
        let id = new_id();
        let body = inner.body(&id, event, user, Some(connection_id), at);
        let now = now_ms();
        let stored = store::insert_connection_event(
            &inner.db,
            &NewEvent {
                id: &id,
                event,
                user,
                connection_id: Some(connection_id),
                node: &inner.node,
                occurred_at: at,
                body: &body,
                seq: None,
                due_at: now,
                now,
            },
        )
        .await;
        match stored {
            Ok(()) => inner.wake.notify_one(),
            Err(error) => {
                tracing::warn!(%error, user, %event, "cannot record a webhook connection event");
            }
        }
    }
}

impl Inner {
    /// The JSON body of an event.
    fn body(
        &self,
        id: &str,
        event: EventType,
        user: &str,
        connection_id: Option<&str>,
        at: i64,
    ) -> String {
        EventBody {
            id: id.to_owned(),
            event_type: event.as_str(),
            occurred_at: rfc3339(at),
            user: user.to_owned(),
            connection_id: connection_id.map(str::to_owned),
            node: self.node.clone(),
        }
        .to_json()
    }
}

/// A new event id: a UUID v7 (time-ordered).
fn new_id() -> String {
    uuid::Uuid::now_v7().to_string()
}

/// The `X-Signalbox-Signature` value: `sha256=` and the lower-case hex of
/// HMAC-SHA256(`secret`, `timestamp` + `.` + `body`).
pub fn signature(secret: &str, timestamp: &str, body: &str) -> String {
    let signed = format!("{timestamp}.{body}");
    format!(
        "sha256={}",
        delivery::hmac_sha256_hex(secret.as_bytes(), signed.as_bytes()).to_ascii_lowercase()
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn signature_is_lower_case_hmac_of_timestamp_dot_body() {
        // Python: hmac.new(b"key", b'1700000000.{"id":"e1"}', hashlib.sha256).hexdigest()
        assert_eq!(
            signature("key", "1700000000", r#"{"id":"e1"}"#),
            "sha256=bef8ad98fc8bc281e228c29d99d0b38086051703dbf3bbb8b3fee5b801ad1976"
        );
    }
}
