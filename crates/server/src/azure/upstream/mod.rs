//! The upstream of the serverless hubs: the webhooks that connection events and client
//! invocations are POSTed to, as Azure SignalR Service does in serverless mode.
//!
//! * `connections/connected`: POSTed when a connection has been accepted, before any of its
//!   messages is handled. Without `azure.upstream_refuse_connections` the connection waits for
//!   the first attempt only; failed attempts are retried in the background
//!   (`azure.upstream_retries`). With it, a `401` or `403` answer to the first attempt refuses
//!   the connection ([`Upstream::connected`] returns the reason); transport errors, timeouts and
//!   other statuses never refuse.
//! * `connections/disconnected`: POSTed in the background after the connection closed, retried
//!   the same way; the answer is ignored. Not sent for a connection the upstream refused.
//! * `messages/{target}`: each invocation of a method the hub does not declare (all of them,
//!   for a serverless hub), sent once; the answer to an invocation with an id becomes its
//!   completion (see [`request::invocation_reply`]).
//!
//! Where each event goes is decided by the templates ([`template`]); how the requests look by
//! [`request`]. Requests time out after `azure.upstream_timeout`; answers over 16 MiB are refused.
//! Logs name the receiver without its query (which may carry a key) and never contain tokens,
//! keys or signatures.
//!
//! Metrics (registered at zero by [`register_metrics`]):
//!
//! | name | kind | labels |
//! |---|---|---|
//! | `signalbox_azure_upstream_requests_total` | counter | `category` = `connections` or `messages`, `outcome` = `success` (`2xx`), `failure` (another status) or `error` (no usable answer) — one per event, after its last attempt |
//! | `signalbox_azure_upstream_attempts_total` | counter | `category` — every HTTP attempt, retries included |

pub mod request;
pub mod template;

use std::collections::HashSet;
use std::sync::{Arc, Mutex, PoisonError};
use std::time::Instant;

use reqwest::StatusCode;
use signalbox::protocol::Protocol;
use signalbox::{InvocationReply, UnknownInvocation};

use crate::config::{UPSTREAM_INITIAL_BACKOFF, UPSTREAM_MAX_BACKOFF, UpstreamConfig};
use crate::webhooks::delivery::{
    Attempt, DEFAULT_MAX_RESPONSE_BYTES, Delivery, Outcome, RetryPolicy, WebhookRequest,
    display_url,
};
use request::{CONNECTED, CONNECTIONS, DISCONNECTED, JSON, MESSAGES};
use template::Templates;

/// Upstream requests, by category and outcome (one per event).
pub const REQUESTS: &str = "signalbox_azure_upstream_requests_total";
/// Upstream HTTP attempts, by category (retries included).
pub const ATTEMPTS: &str = "signalbox_azure_upstream_attempts_total";
/// The `category` labels.
pub const CATEGORIES: [&str; 2] = [CONNECTIONS, MESSAGES];
/// The `outcome` labels.
pub const OUTCOMES: [&str; 3] = ["success", "failure", "error"];

/// The tracing target of upstream logs.
const TARGET: &str = "signalbox::azure::upstream";

/// Describes the upstream metrics and registers every series at zero.
pub fn register_metrics() {
    metrics::describe_counter!(
        REQUESTS,
        "Requests to the serverless upstream, by category and outcome"
    );
    metrics::describe_counter!(
        ATTEMPTS,
        "HTTP attempts to the serverless upstream, by category (retries included)"
    );
    for category in CATEGORIES {
        metrics::counter!(ATTEMPTS, "category" => category).increment(0);
        for outcome in OUTCOMES {
            metrics::counter!(REQUESTS, "category" => category, "outcome" => outcome).increment(0);
        }
    }
}

/// What the upstream is told about a connection.
#[derive(Debug, Clone)]
pub struct ConnectionInfo {
    /// The hub, as in the client's `hub` query, lowercased (with the application prefix).
    pub hub: String,
    /// The connection id.
    pub connection_id: String,
    /// The user id, if the connection has one.
    pub user_id: Option<String>,
    /// The token's claims, in order (arrays flattened).
    pub claims: Vec<(String, String)>,
    /// The connect request's query, without the leading `?` (`access_token` is never sent on).
    pub query: Option<String>,
}

/// The upstream of the serverless hubs. Cheap to clone.
#[derive(Clone)]
pub struct Upstream {
    inner: Arc<Inner>,
}

struct Inner {
    templates: Templates,
    keys: Vec<String>,
    delivery: Delivery,
    retry: RetryPolicy,
    refuse_connections: bool,
    /// Connections refused by the upstream: their `disconnected` is not sent.
    refused: Mutex<HashSet<String>>,
}

/// Most refused connections remembered; beyond, the set starts over.
const MAX_REFUSED: usize = 10_000;

/// Never shows the keys.
impl std::fmt::Debug for Upstream {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Upstream")
            .field("templates", &self.inner.templates)
            .field("keys", &self.inner.keys.len())
            .field("timeout", &self.inner.delivery.timeout())
            .field("retry", &self.inner.retry)
            .field("refuse_connections", &self.inner.refuse_connections)
            .finish()
    }
}

impl Upstream {
    /// The upstream of `config`, signing with `access_keys` (primary first).
    pub fn new(config: &UpstreamConfig, access_keys: Vec<String>) -> Self {
        Self {
            inner: Arc::new(Inner {
                templates: Templates::new(&config.templates),
                keys: access_keys,
                delivery: Delivery::new(config.timeout)
                    .with_max_response_bytes(DEFAULT_MAX_RESPONSE_BYTES),
                retry: RetryPolicy::new(
                    config.retries.saturating_add(1),
                    UPSTREAM_INITIAL_BACKOFF,
                    UPSTREAM_MAX_BACKOFF,
                ),
                refuse_connections: config.refuse_connections,
                refused: Mutex::default(),
            }),
        }
    }

    /// The same upstream with another retry policy for connection events.
    #[must_use]
    pub fn with_retry_policy(self, retry: RetryPolicy) -> Self {
        let inner = &self.inner;
        Self {
            inner: Arc::new(Inner {
                templates: inner.templates.clone(),
                keys: inner.keys.clone(),
                delivery: inner.delivery.clone(),
                retry,
                refuse_connections: inner.refuse_connections,
                refused: Mutex::default(),
            }),
        }
    }

    /// Whether any template is configured.
    pub fn is_enabled(&self) -> bool {
        !self.inner.templates.is_empty()
    }

    /// POSTs `connected`. `Err(reason)` only when refusal is on and the upstream answered
    /// `401` or `403`; retries of a failed attempt go on in the background.
    pub async fn connected(&self, info: &ConnectionInfo) -> Result<(), String> {
        let Some(request) = self.request(
            info,
            CONNECTIONS,
            CONNECTED,
            request::connected_body(),
            JSON,
        ) else {
            return Ok(());
        };
        let started = Instant::now();
        let first = self.inner.delivery.attempt(&request).await;
        count_attempt(CONNECTIONS);
        let outcome = Outcome {
            attempts: 1,
            last: first,
            duration: started.elapsed(),
        };
        if self.inner.refuse_connections
            && let Some(status @ (StatusCode::UNAUTHORIZED | StatusCode::FORBIDDEN)) =
                outcome.status()
        {
            finish(info, CONNECTIONS, CONNECTED, &request, &outcome);
            let mut refused = self
                .inner
                .refused
                .lock()
                .unwrap_or_else(PoisonError::into_inner);
            if refused.len() >= MAX_REFUSED {
                refused.clear();
            }
            refused.insert(info.connection_id.clone());
            return Err(format!(
                "The upstream refused the connection (status code {}).",
                status.as_u16()
            ));
        }
        self.retry_in_background(info, CONNECTED, request, outcome);
        Ok(())
    }

    /// POSTs `disconnected` (with the connection's error, if any) in the background, retried.
    /// Nothing is sent for a connection the upstream refused.
    pub async fn disconnected(&self, info: &ConnectionInfo, error: Option<&str>) {
        if self
            .inner
            .refused
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .remove(&info.connection_id)
        {
            return;
        }
        let body = request::disconnected_body(error);
        let Some(request) = self.request(info, CONNECTIONS, DISCONNECTED, body, JSON) else {
            return;
        };
        let upstream = self.clone();
        let info = info.clone();
        tokio::spawn(async move {
            let started = Instant::now();
            let first = upstream.inner.delivery.attempt(&request).await;
            count_attempt(CONNECTIONS);
            let outcome = Outcome {
                attempts: 1,
                last: first,
                duration: started.elapsed(),
            };
            upstream.retry_in_background(&info, DISCONNECTED, request, outcome);
        });
    }

    /// POSTs the invocation (once) and turns the answer into the reply.
    pub async fn invoke(
        &self,
        info: &ConnectionInfo,
        protocol: Protocol,
        invocation: UnknownInvocation,
    ) -> InvocationReply {
        let body = match request::invocation_body(protocol, &invocation) {
            Ok(body) => body,
            Err(error) => {
                tracing::warn!(target: TARGET, hub = %info.hub, event = %invocation.target, %error, "cannot encode the invocation for the upstream");
                return InvocationReply::Error(format!("Invocation failed, error: {error}."));
            }
        };
        let content_type = request::content_type(protocol);
        let Some(request) = self.request(info, MESSAGES, &invocation.target, body, content_type)
        else {
            return InvocationReply::Error(
                "Invocation failed, no upstream matches this invocation.".to_owned(),
            );
        };
        let started = Instant::now();
        let attempt = self.inner.delivery.attempt(&request).await;
        count_attempt(MESSAGES);
        let outcome = Outcome {
            attempts: 1,
            last: attempt,
            duration: started.elapsed(),
        };
        finish(info, MESSAGES, &invocation.target, &request, &outcome);
        match invocation.invocation_id {
            Some(_) => request::invocation_reply(protocol, &outcome.last),
            // Nobody waits for the reply of a non-blocking invocation.
            None => InvocationReply::Void,
        }
    }

    /// The request of an event, or `None` when no template matches it (or its URL is invalid,
    /// which is logged).
    fn request(
        &self,
        info: &ConnectionInfo,
        category: &str,
        event: &str,
        body: axum::body::Bytes,
        content_type: &'static str,
    ) -> Option<WebhookRequest> {
        let url = match self.inner.templates.url(&info.hub, category, event)? {
            Ok(url) => url,
            Err(error) => {
                tracing::warn!(target: TARGET, hub = %info.hub, category, event, %error, "upstream event not sent");
                return None;
            }
        };
        let headers = request::headers(info, category, event, &self.inner.keys, content_type);
        Some(WebhookRequest { url, headers, body })
    }

    /// Logs and counts `outcome`, or, when it can be retried, retries in a background task
    /// that does so at the end.
    fn retry_in_background(
        &self,
        info: &ConnectionInfo,
        event: &'static str,
        request: WebhookRequest,
        outcome: Outcome,
    ) {
        let retry = self.inner.retry;
        if outcome.is_success()
            || !outcome.last.is_retryable()
            || outcome.attempts >= retry.max_attempts()
        {
            finish(info, CONNECTIONS, event, &request, &outcome);
            return;
        }
        tracing::debug!(
            target: TARGET,
            hub = %info.hub,
            connection_id = %info.connection_id,
            event,
            url = %display_url(&request.url),
            result = %outcome.last.describe(),
            "upstream request failed, retrying in the background"
        );
        let delivery = self.inner.delivery.clone();
        let info = info.clone();
        tokio::spawn(async move {
            let mut outcome = outcome;
            while !outcome.is_success()
                && outcome.last.is_retryable()
                && outcome.attempts < retry.max_attempts()
            {
                // One attempt at a time, so that each is counted.
                let single = RetryPolicy {
                    attempts: outcome.attempts + 1,
                    ..retry
                };
                outcome = delivery.resume(&request, &single, outcome).await;
                count_attempt(CONNECTIONS);
            }
            finish(&info, CONNECTIONS, event, &request, &outcome);
        });
    }
}

fn count_attempt(category: &'static str) {
    metrics::counter!(ATTEMPTS, "category" => category).increment(1);
}

/// Counts and logs the final outcome of an event.
fn finish(
    info: &ConnectionInfo,
    category: &'static str,
    event: &str,
    request: &WebhookRequest,
    outcome: &Outcome,
) {
    let result = match &outcome.last {
        Attempt::Response { status, .. } if status.is_success() => "success",
        Attempt::Response { .. } => "failure",
        Attempt::Failed(_) => "error",
    };
    metrics::counter!(REQUESTS, "category" => category, "outcome" => result).increment(1);
    let url = display_url(&request.url);
    let described = outcome.last.describe();
    let millis = outcome.duration.as_millis();
    if result == "success" {
        tracing::debug!(target: TARGET, hub = %info.hub, connection_id = %info.connection_id, category, event, %url, result = %described, attempts = outcome.attempts, millis, "upstream request");
    } else {
        tracing::warn!(target: TARGET, hub = %info.hub, connection_id = %info.connection_id, category, event, %url, result = %described, attempts = outcome.attempts, millis, "upstream request failed");
    }
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]

    use std::time::Duration;

    use super::*;
    use crate::config::UpstreamTemplate;

    fn config(templates: Vec<UpstreamTemplate>) -> UpstreamConfig {
        UpstreamConfig {
            templates,
            ..UpstreamConfig::default()
        }
    }

    fn info() -> ConnectionInfo {
        ConnectionInfo {
            hub: "chat".to_owned(),
            connection_id: "c1".to_owned(),
            user_id: None,
            claims: Vec::new(),
            query: None,
        }
    }

    #[test]
    fn enabled_with_a_template() {
        assert!(!Upstream::new(&config(Vec::new()), Vec::new()).is_enabled());
        let upstream = Upstream::new(
            &config(vec![UpstreamTemplate::catch_all("http://h/?code=SECRET")]),
            vec!["KEY-SECRET".to_owned()],
        );
        assert!(upstream.is_enabled());
        let shown = format!("{upstream:?}");
        assert!(!shown.contains("SECRET"), "{shown}");
        assert_eq!(upstream.inner.retry.max_attempts(), 4);
        assert_eq!(upstream.inner.retry.initial_backoff, Duration::from_secs(1));
    }

    #[tokio::test]
    async fn unmatched_events_are_not_sent() {
        let only_messages = UpstreamTemplate {
            category_pattern: "messages".to_owned(),
            event_pattern: "send".to_owned(),
            ..UpstreamTemplate::catch_all("http://127.0.0.1:9/")
        };
        let upstream = Upstream::new(&config(vec![only_messages]), Vec::new());
        assert_eq!(upstream.connected(&info()).await, Ok(()));
        let reply = upstream
            .invoke(
                &info(),
                Protocol::Json,
                UnknownInvocation::new("other", Vec::new()),
            )
            .await;
        assert!(
            matches!(&reply, InvocationReply::Error(text) if text.contains("no upstream matches")),
            "{reply:?}"
        );
    }
}
