//! Prometheus metrics at `GET /metrics` on the service's own listener.
//!
//! The `signalbox` library records connection, invocation and message metrics through the
//! [`metrics`] facade (names in `signalbox::metrics`); this module installs a Prometheus
//! recorder for them (once per process), adds the service's own, and renders the text format.
//! No label carries a user, connection or notification id.
//!
//! The service's own metrics:
//!
//! | name | kind | labels |
//! |---|---|---|
//! | `signalbox_notifications_published_total` | counter | — (one per stored recipient row) |
//! | `signalbox_notification_delivery_seconds` | histogram | `path` = `live` or `replay` (from `created_at` to the send to the connections) |
//! | `signalbox_inbox_unread` | gauge | — (unread notifications in the database, all nodes; refreshed every 15 s) |
//! | `signalbox_backplane_connected` | gauge | — (1 while connected; see [`backplane`]) |
//! | `signalbox_backplane_lost_messages_total` | counter | — (envelopes that could not be published) |
//! | `signalbox_backplane_messages_published_total` | counter | — (envelopes published by this node's lifetime managers) |
//! | `signalbox_backplane_messages_received_total` | counter | — (envelopes received) |
//! | `signalbox_rate_limited_total` | counter | `endpoint` (see [`crate::rate_limit`]) |
//!
//! Access: `/metrics` answers anyone when `metrics.public` is set; otherwise it needs either the
//! static `metrics.token` as a bearer token (for Prometheus' `authorization` setting) or an
//! access token with the admin role.

use std::collections::VecDeque;
use std::sync::{Arc, Mutex, OnceLock, PoisonError};
use std::time::{Duration, SystemTime};

use axum::Router;
use axum::extract::State;
use axum::http::{HeaderMap, StatusCode, header};
use axum::response::{IntoResponse, Response};
use axum::routing::get;
use metrics_exporter_prometheus::{Matcher, PrometheusBuilder, PrometheusHandle};
use serde::Serialize;
use signalbox::HubContext;

use crate::clock::now_ms;
use crate::db::Db;
use crate::state::AppState;

/// Notifications stored, one per recipient.
pub const NOTIFICATIONS_PUBLISHED: &str = "signalbox_notifications_published_total";
/// From a notification's `created_at` to its send to the recipient's connections.
pub const NOTIFICATION_DELIVERY: &str = "signalbox_notification_delivery_seconds";
/// Unread notifications in the database.
pub const INBOX_UNREAD: &str = "signalbox_inbox_unread";

/// How often the inbox gauge and the dashboard's samples are refreshed.
pub const SAMPLE_INTERVAL: Duration = Duration::from_secs(5);

/// How many samples the dashboard gets (10 minutes at [`SAMPLE_INTERVAL`]).
const SAMPLES_KEPT: usize = 120;

/// The inbox gauge is refreshed every this many samples (15 s).
const INBOX_EVERY: u64 = 3;

/// Buckets of the invocation duration histogram, seconds.
const INVOCATION_BUCKETS: &[f64] = &[
    0.000_5, 0.001, 0.002_5, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0,
];

/// Buckets of the publish-to-delivery histogram, seconds (replays after an absence are long).
const DELIVERY_BUCKETS: &[f64] = &[
    0.001, 0.002_5, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 5.0, 30.0, 300.0, 3600.0,
    86_400.0,
];

/// Metric names of the cluster backplane. `CONNECTED` and `LOST` are kept up to date by
/// [`crate::backplane::ClusterBackplane::spawn_monitor`]; `PUBLISHED` and `RECEIVED` are counted
/// by the library's scaled lifetime manager.
pub mod backplane {
    /// 1 while the backplane is connected, 0 while it is not.
    pub const CONNECTED: &str = crate::backplane::BACKPLANE_CONNECTED;
    /// Envelopes that could not be published to the other nodes.
    pub const LOST: &str = crate::backplane::BACKPLANE_LOST_MESSAGES;
    /// Messages this node published to the backplane.
    pub const PUBLISHED: &str = signalbox::metrics::BACKPLANE_PUBLISHED;
    /// Messages this node received from the backplane.
    pub const RECEIVED: &str = signalbox::metrics::BACKPLANE_RECEIVED;
}

/// Counts notifications stored for `recipients` recipients.
pub fn published(recipients: usize) {
    metrics::counter!(NOTIFICATIONS_PUBLISHED).increment(recipients as u64);
}

/// Records the delivery of a notification created at `created_at_ms`; `replay` when it was
/// delivered on connect rather than live.
pub fn delivered(created_at_ms: i64, replay: bool) {
    let elapsed_ms = (now_ms() - created_at_ms).max(0);
    #[allow(clippy::cast_precision_loss)] // milliseconds: exact far beyond any delay
    let seconds = elapsed_ms as f64 / 1000.0;
    let path = if replay { "replay" } else { "live" };
    metrics::histogram!(NOTIFICATION_DELIVERY, "path" => path).record(seconds);
}

static HANDLE: OnceLock<Option<PrometheusHandle>> = OnceLock::new();

/// Installs the Prometheus recorder as the process's global recorder (once; later calls return
/// the same handle). `None` when another recorder was installed first.
pub fn install() -> Option<PrometheusHandle> {
    HANDLE
        .get_or_init(|| {
            let builder = PrometheusBuilder::new()
                .set_buckets_for_metric(
                    Matcher::Full(signalbox::metrics::INVOCATION_DURATION.to_owned()),
                    INVOCATION_BUCKETS,
                )
                .and_then(|b| {
                    b.set_buckets_for_metric(
                        Matcher::Full(NOTIFICATION_DELIVERY.to_owned()),
                        DELIVERY_BUCKETS,
                    )
                });
            let handle = match builder.map(PrometheusBuilder::install_recorder) {
                Ok(Ok(handle)) => handle,
                Ok(Err(error)) | Err(error) => {
                    tracing::warn!(%error, "cannot install the Prometheus recorder; /metrics will be empty");
                    return None;
                }
            };
            describe();
            Some(handle)
        })
        .clone()
}

fn describe() {
    use signalbox::metrics as lib;
    metrics::describe_gauge!(lib::CONNECTIONS, "Open connections");
    metrics::describe_counter!(lib::CONNECTS, "Connections that completed their handshake");
    metrics::describe_counter!(lib::DISCONNECTS, "Connections that ended, by reason");
    metrics::describe_counter!(
        lib::NEGOTIATIONS,
        "Negotiate requests answered with a connection"
    );
    metrics::describe_counter!(lib::AUTH_FAILURES, "Refused bearer tokens, by reason");
    metrics::describe_counter!(lib::INVOCATIONS, "Hub invocations, by outcome");
    metrics::describe_histogram!(
        lib::INVOCATION_DURATION,
        metrics::Unit::Seconds,
        "Time spent in hub methods"
    );
    metrics::describe_counter!(lib::MESSAGES_RECEIVED, "Hub messages received from clients");
    metrics::describe_counter!(lib::BYTES_RECEIVED, "Bytes received from clients");
    metrics::describe_counter!(lib::MESSAGES_SENT, "Frames queued to connections");
    metrics::describe_counter!(lib::BYTES_SENT, "Bytes written to clients");
    metrics::describe_counter!(
        lib::OUTBOUND_QUEUE_DROPS,
        "Frames dropped because a connection's outbound queue was full"
    );
    metrics::describe_counter!(
        NOTIFICATIONS_PUBLISHED,
        "Notifications stored, one per recipient"
    );
    metrics::describe_histogram!(
        NOTIFICATION_DELIVERY,
        metrics::Unit::Seconds,
        "From a notification's creation to its send to the recipient's connections"
    );
    metrics::describe_gauge!(INBOX_UNREAD, "Unread notifications in the database");
    metrics::describe_counter!(backplane::PUBLISHED, "Messages published to the backplane");
    metrics::describe_counter!(backplane::RECEIVED, "Messages received from the backplane");
    metrics::describe_counter!(
        backplane::LOST,
        "Backplane envelopes that could not be published"
    );
    metrics::describe_gauge!(backplane::CONNECTED, "1 while the backplane is connected");
    metrics::describe_counter!(
        crate::rate_limit::RATE_LIMITED,
        "Requests refused by a rate limit, by endpoint"
    );
    // Registered at zero so they are scraped before the first event.
    metrics::counter!(NOTIFICATIONS_PUBLISHED).absolute(0);
    metrics::counter!(backplane::PUBLISHED).absolute(0);
    metrics::counter!(backplane::RECEIVED).absolute(0);
    metrics::counter!(lib::OUTBOUND_QUEUE_DROPS).absolute(0);
}

/// One point of the dashboard's charts.
#[derive(Debug, Clone, Copy, Serialize)]
pub struct Sample {
    /// Unix time, milliseconds.
    pub at: i64,
    /// Open connections on this node.
    pub connections: f64,
    /// Hub messages received per second since the previous sample.
    pub received_per_second: f64,
    /// Frames sent per second since the previous sample.
    pub sent_per_second: f64,
    /// Invocations that failed (error outcomes) per second since the previous sample.
    pub errors_per_second: f64,
}

#[derive(Debug, Default)]
struct Totals {
    received: f64,
    sent: f64,
    errors: f64,
}

/// The installed recorder plus the dashboard's recent samples; cheap to clone.
#[derive(Debug, Clone)]
pub struct Metrics {
    handle: Option<PrometheusHandle>,
    samples: Arc<Mutex<VecDeque<Sample>>>,
    started: SystemTime,
}

impl Metrics {
    /// Installs the recorder (see [`install`]).
    pub fn new() -> Self {
        Self {
            handle: install(),
            samples: Arc::new(Mutex::new(VecDeque::with_capacity(SAMPLES_KEPT))),
            started: SystemTime::now(),
        }
    }

    /// The Prometheus text format of every metric of the process.
    pub fn render(&self) -> String {
        match &self.handle {
            Some(handle) => {
                handle.run_upkeep();
                handle.render()
            }
            None => String::new(),
        }
    }

    /// Seconds since this service started.
    pub fn uptime(&self) -> Duration {
        self.started.elapsed().unwrap_or_default()
    }

    /// The recent samples, oldest first.
    pub fn samples(&self) -> Vec<Sample> {
        self.samples
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .iter()
            .copied()
            .collect()
    }

    /// Samples the counters every [`SAMPLE_INTERVAL`] for the dashboard and refreshes the inbox
    /// gauge, until the returned task is aborted.
    pub fn spawn_sampler(&self, db: Db, hub: HubContext) -> tokio::task::JoinHandle<()> {
        let this = self.clone();
        tokio::spawn(async move {
            let mut ticker = tokio::time::interval(SAMPLE_INTERVAL);
            let mut previous: Option<(Totals, i64)> = None;
            let mut tick: u64 = 0;
            loop {
                ticker.tick().await;
                if tick.is_multiple_of(INBOX_EVERY) {
                    refresh_inbox_gauge(&db).await;
                }
                tick += 1;
                let text = this.render();
                let totals = Totals {
                    received: sum_metric(&text, signalbox::metrics::MESSAGES_RECEIVED, None),
                    sent: sum_metric(&text, signalbox::metrics::MESSAGES_SENT, None),
                    errors: sum_metric(
                        &text,
                        signalbox::metrics::INVOCATIONS,
                        Some(("outcome", "error")),
                    ),
                };
                let now = now_ms();
                #[allow(clippy::cast_precision_loss)] // a handful of connections per node
                let connections = hub.lifetime_manager().connection_count() as f64;
                if let Some((before, at)) = &previous {
                    #[allow(clippy::cast_precision_loss)] // milliseconds between samples
                    let seconds = ((now - at) as f64 / 1000.0).max(0.001);
                    let sample = Sample {
                        at: now,
                        connections,
                        received_per_second: (totals.received - before.received).max(0.0) / seconds,
                        sent_per_second: (totals.sent - before.sent).max(0.0) / seconds,
                        errors_per_second: (totals.errors - before.errors).max(0.0) / seconds,
                    };
                    let mut samples = this.samples.lock().unwrap_or_else(PoisonError::into_inner);
                    if samples.len() == SAMPLES_KEPT {
                        samples.pop_front();
                    }
                    samples.push_back(sample);
                }
                previous = Some((totals, now));
            }
        })
    }
}

impl Default for Metrics {
    fn default() -> Self {
        Self::new()
    }
}

/// Sets the inbox gauge from the database.
pub async fn refresh_inbox_gauge(db: &Db) {
    match unread_count(db).await {
        #[allow(clippy::cast_precision_loss)] // a gauge
        Ok(n) => metrics::gauge!(INBOX_UNREAD).set(n as f64),
        Err(error) => tracing::debug!(%error, "cannot count unread notifications"),
    }
}

async fn unread_count(db: &Db) -> Result<i64, sqlx::Error> {
    use sqlx::Row as _;
    let row = sqlx::query("SELECT COUNT(*) AS n FROM notifications WHERE read_at IS NULL")
        .fetch_one(db.pool())
        .await?;
    row.try_get("n")
}

/// The sum of every series of counter or gauge `name` in a Prometheus text rendering,
/// optionally only those with label `key="value"`.
pub fn sum_metric(text: &str, name: &str, label: Option<(&str, &str)>) -> f64 {
    let wanted = label.map(|(k, v)| format!("{k}=\"{v}\""));
    text.lines()
        .filter(|line| !line.starts_with('#'))
        .filter_map(|line| {
            let (series, value) = line.rsplit_once(' ')?;
            let (metric, labels) = match series.split_once('{') {
                Some((metric, labels)) => (metric, labels),
                None => (series, ""),
            };
            if metric != name {
                return None;
            }
            if let Some(wanted) = &wanted
                && !labels.contains(wanted.as_str())
            {
                return None;
            }
            value.parse::<f64>().ok()
        })
        .sum()
}

/// `GET /metrics`.
pub fn router(state: AppState) -> Router {
    Router::new()
        .route("/metrics", get(scrape))
        .with_state(state)
}

async fn scrape(State(state): State<AppState>, headers: HeaderMap) -> Response {
    if !state.config.metrics.public
        && !has_metrics_token(&state, &headers)
        && let Err(error) = crate::admin::require_admin(&state, &headers).await
    {
        return error.into_response();
    }
    (
        StatusCode::OK,
        [(
            header::CONTENT_TYPE,
            "text/plain; version=0.0.4; charset=utf-8",
        )],
        state.metrics.render(),
    )
        .into_response()
}

fn has_metrics_token(state: &AppState, headers: &HeaderMap) -> bool {
    let Some(expected) = &state.config.metrics.token else {
        return false;
    };
    let Some(given) = headers
        .get(header::AUTHORIZATION)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.strip_prefix("Bearer "))
    else {
        return false;
    };
    constant_time_eq(given.trim().as_bytes(), expected.as_bytes())
}

fn constant_time_eq(a: &[u8], b: &[u8]) -> bool {
    use sha2::{Digest as _, Sha256};
    // Compare digests so neither the length nor a common prefix shows in the timing.
    let (a, b) = (Sha256::digest(a), Sha256::digest(b));
    a.iter()
        .zip(b.iter())
        .fold(0u8, |acc, (x, y)| acc | (x ^ y))
        == 0
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn sums_series() {
        let text = "# TYPE x counter\nx{a=\"1\",outcome=\"error\"} 2\nx{a=\"2\",outcome=\"ok\"} 3\nxy 7\nx 1\n";
        assert!((sum_metric(text, "x", None) - 6.0).abs() < 1e-9);
        assert!((sum_metric(text, "x", Some(("outcome", "error"))) - 2.0).abs() < 1e-9);
        assert!((sum_metric(text, "nope", None)).abs() < 1e-9);
    }

    #[test]
    fn token_comparison() {
        assert!(constant_time_eq(b"abc", b"abc"));
        assert!(!constant_time_eq(b"abc", b"abd"));
        assert!(!constant_time_eq(b"abc", b"abcd"));
    }
}
