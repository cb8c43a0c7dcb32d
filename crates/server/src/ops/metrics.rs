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
//! | `signalbox_connections_ready` | gauge | — (hub connections of this node with presence recorded and missed notifications replayed; see [`crate::presence`]) |
//! | `signalbox_inbox_unread` | gauge | — (unread notifications in the database, all nodes; refreshed every 15 s) |
//! | `signalbox_backplane_connected` | gauge | — (1 while connected; see [`backplane`]) |
//! | `signalbox_backplane_lost_messages_total` | counter | — (envelopes that could not be published) |
//! | `signalbox_backplane_messages_published_total` | counter | — (envelopes published by this node's lifetime managers) |
//! | `signalbox_backplane_messages_received_total` | counter | — (envelopes received) |
//! | `signalbox_backplane_envelopes_in_flight` | gauge | — (received envelopes being handled; bounded, see the library's `ScaledOptions`) |
//! | `signalbox_backplane_envelopes_waited_total` | counter | — (times every handling slot was taken) |
//! | `signalbox_backplane_envelopes_rejected_total` | counter | `reason` = `unknown_version`, `malformed` |
//! | `signalbox_forwarded_requests_total` | counter | `outcome` = `forwarded`, `unknown_node`, `unreachable`, `timeout` (requests for other nodes' connections) |
//! | `signalbox_rate_limited_total` | counter | `endpoint` (see [`crate::rate_limit`]) |
//! | `signalbox_http_requests_total` | counter | `route` (the route template, or `unmatched`), `method`, `status` (`2xx`…) |
//! | `signalbox_http_request_duration_seconds` | histogram | `route`, `method` (until the response head) |
//! | `signalbox_webhook_deliveries_total` | counter | `event`, `outcome` = `delivered`, `retried`, `failed` (one per attempt; see [`crate::webhooks`]) |
//! | `signalbox_webhook_debounced_total` | counter | — (offline/online pairs withdrawn within the webhook debounce) |
//! | `signalbox_webhook_pending` | gauge | — (webhook events waiting for delivery, all nodes) |
//!
//! [`register`] (called by [`Metrics::new`]) describes them and registers every series whose
//! labels are known in advance at zero, so they are exported from the start; the service also
//! calls [`signalbox::metrics::register_hub`] for its hub. HTTP series appear with the first
//! request of each route.
//!
//! Access: `/metrics` answers anyone when `metrics.public` is set; otherwise it needs either the
//! static `metrics.token` as a bearer token (for Prometheus' `authorization` setting) or an
//! access token with the admin role.

use std::collections::VecDeque;
use std::sync::{Arc, Mutex, OnceLock, PoisonError};
use std::time::{Duration, SystemTime};

use axum::Router;
use axum::extract::{FromRequestParts as _, MatchedPath, Request, State};
use axum::http::{HeaderMap, Method, StatusCode, header};
use axum::middleware::Next;
use axum::response::{IntoResponse, Response};
use axum::routing::get;
use metrics_exporter_prometheus::{Matcher, PrometheusBuilder, PrometheusHandle};
use serde::Serialize;
use signalbox::HubContext;

use crate::api::extract::Admin;
use crate::clock::now_ms;
use crate::notifications::inbox::Inbox;
use crate::state::AppState;

/// Notifications stored, one per recipient.
pub const NOTIFICATIONS_PUBLISHED: &str = "signalbox_notifications_published_total";
/// From a notification's `created_at` to its send to the recipient's connections.
pub const NOTIFICATION_DELIVERY: &str = "signalbox_notification_delivery_seconds";
/// Unread notifications in the database.
pub const INBOX_UNREAD: &str = "signalbox_inbox_unread";

/// HTTP requests, by route template, method and status class.
pub const HTTP_REQUESTS: &str = "signalbox_http_requests_total";
/// Time from an HTTP request to its response head, by route template and method.
pub const HTTP_REQUEST_DURATION: &str = "signalbox_http_request_duration_seconds";

/// The `route` label of requests no route matched.
pub const UNMATCHED_ROUTE: &str = "unmatched";

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

/// Buckets of the HTTP request duration histogram, seconds (long polls last up to 100 s).
const HTTP_BUCKETS: &[f64] = &[
    0.001, 0.002_5, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0, 120.0,
];

/// Metric names of the cluster backplane. `CONNECTED` and `LOST` are kept up to date by
/// [`crate::cluster::backplane::ClusterBackplane::spawn_monitor`]; `PUBLISHED` and `RECEIVED` are counted
/// by the library's scaled lifetime manager.
pub mod backplane {
    /// 1 while the backplane is connected, 0 while it is not.
    pub const CONNECTED: &str = crate::cluster::backplane::BACKPLANE_CONNECTED;
    /// Envelopes that could not be published to the other nodes.
    pub const LOST: &str = crate::cluster::backplane::BACKPLANE_LOST_MESSAGES;
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
                })
                .and_then(|b| {
                    b.set_buckets_for_metric(
                        Matcher::Full(HTTP_REQUEST_DURATION.to_owned()),
                        HTTP_BUCKETS,
                    )
                });
            let handle = match builder.map(PrometheusBuilder::install_recorder) {
                Ok(Ok(handle)) => handle,
                Ok(Err(error)) | Err(error) => {
                    tracing::warn!(%error, "cannot install the Prometheus recorder; /metrics will be empty");
                    return None;
                }
            };
            Some(handle)
        })
        .clone()
}

/// Describes the library's and the service's metrics to the installed recorder and registers
/// every series whose labels are known in advance at zero (gauges keep their value), so they are
/// exported before the first event. Idempotent: counters are incremented by 0, never reset.
/// Hub series are registered by [`signalbox::metrics::register_hub`].
pub fn register() {
    signalbox::metrics::register();
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
    metrics::describe_gauge!(
        crate::presence::CONNECTIONS_READY,
        "Hub connections of this node with presence recorded and missed notifications replayed"
    );
    metrics::gauge!(crate::presence::CONNECTIONS_READY).increment(0.0);
    metrics::describe_counter!(
        backplane::LOST,
        "Backplane envelopes that could not be published"
    );
    metrics::describe_gauge!(backplane::CONNECTED, "1 while the backplane is connected");
    metrics::describe_counter!(
        crate::rate_limit::RATE_LIMITED,
        "Requests refused by a rate limit, by endpoint"
    );
    metrics::describe_counter!(
        HTTP_REQUESTS,
        "HTTP requests, by route template, method and status class"
    );
    metrics::describe_histogram!(
        HTTP_REQUEST_DURATION,
        metrics::Unit::Seconds,
        "Time from an HTTP request to its response head, by route template and method"
    );
    metrics::counter!(NOTIFICATIONS_PUBLISHED).increment(0);
    for path in ["live", "replay"] {
        // Registering the histogram exports it with a count of 0.
        let _ = metrics::histogram!(NOTIFICATION_DELIVERY, "path" => path);
    }
    // `signalbox_backplane_connected` stays absent without a backplane: 0 would mean "down".
    metrics::counter!(backplane::LOST).increment(0);
    for endpoint in crate::rate_limit::ENDPOINTS {
        metrics::counter!(crate::rate_limit::RATE_LIMITED, "endpoint" => *endpoint).increment(0);
    }
    crate::webhooks::register_metrics();
    crate::azure::upstream::register_metrics();
    // The reasons the service's authenticator adds to the library's.
    for reason in crate::auth::identity::AUTH_FAILURE_REASONS {
        metrics::counter!(signalbox::metrics::AUTH_FAILURES, "reason" => *reason).increment(0);
    }
}

/// Middleware counting every request in [`HTTP_REQUESTS`] and timing it in
/// [`HTTP_REQUEST_DURATION`], labelled by route template ([`MatchedPath`], never the concrete
/// path; [`UNMATCHED_ROUTE`] when no route matched) and method (`other` for non-standard ones).
/// Add it with `Router::layer` so it sees the matched path.
pub async fn track_http(request: Request, next: Next) -> Response {
    let route = request.extensions().get::<MatchedPath>().map_or_else(
        || UNMATCHED_ROUTE.to_owned(),
        |path| path.as_str().to_owned(),
    );
    let method = method_label(request.method());
    let started = std::time::Instant::now();
    let response = next.run(request).await;
    let elapsed = started.elapsed().as_secs_f64();
    let status = status_class(response.status());
    metrics::counter!(HTTP_REQUESTS, "route" => route.clone(), "method" => method, "status" => status)
        .increment(1);
    metrics::histogram!(HTTP_REQUEST_DURATION, "route" => route, "method" => method)
        .record(elapsed);
    response
}

/// A bounded `method` label.
fn method_label(method: &Method) -> &'static str {
    match *method {
        Method::GET => "GET",
        Method::POST => "POST",
        Method::PUT => "PUT",
        Method::DELETE => "DELETE",
        Method::PATCH => "PATCH",
        Method::HEAD => "HEAD",
        Method::OPTIONS => "OPTIONS",
        _ => "other",
    }
}

/// `1xx` … `5xx`.
fn status_class(status: StatusCode) -> &'static str {
    match status.as_u16() {
        100..=199 => "1xx",
        200..=299 => "2xx",
        300..=399 => "3xx",
        400..=499 => "4xx",
        _ => "5xx",
    }
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
    /// Installs the recorder (see [`install`]) and [`register`]s the metrics.
    pub fn new() -> Self {
        let handle = install();
        register();
        Self {
            handle,
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
    pub fn spawn_sampler(&self, inbox: Inbox, hub: HubContext) -> tokio::task::JoinHandle<()> {
        let this = self.clone();
        tokio::spawn(async move {
            let mut ticker = tokio::time::interval(SAMPLE_INTERVAL);
            let mut previous: Option<(Totals, i64)> = None;
            let mut tick: u64 = 0;
            loop {
                ticker.tick().await;
                if tick.is_multiple_of(INBOX_EVERY) {
                    refresh_inbox_gauge(&inbox).await;
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
pub async fn refresh_inbox_gauge(inbox: &Inbox) {
    match inbox.unread_total().await {
        #[allow(clippy::cast_precision_loss)] // a gauge
        Ok(n) => metrics::gauge!(INBOX_UNREAD).set(n as f64),
        Err(error) => tracing::debug!(%error, "cannot count unread notifications"),
    }
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
pub fn routes() -> Router<AppState> {
    Router::new().route("/metrics", get(scrape))
}

async fn scrape(State(state): State<AppState>, request: Request) -> Response {
    let (mut parts, _body) = request.into_parts();
    if !state.config.metrics.public
        && !has_metrics_token(&state, &parts.headers)
        && let Err(error) = Admin::from_request_parts(&mut parts, &state).await
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
    fn status_classes() {
        assert_eq!(status_class(StatusCode::SWITCHING_PROTOCOLS), "1xx");
        assert_eq!(status_class(StatusCode::CREATED), "2xx");
        assert_eq!(status_class(StatusCode::NOT_MODIFIED), "3xx");
        assert_eq!(status_class(StatusCode::TOO_MANY_REQUESTS), "4xx");
        assert_eq!(status_class(StatusCode::SERVICE_UNAVAILABLE), "5xx");
        assert_eq!(
            Method::from_bytes(b"BREW").ok().map(|m| method_label(&m)),
            Some("other")
        );
    }

    #[test]
    fn token_comparison() {
        assert!(constant_time_eq(b"abc", b"abc"));
        assert!(!constant_time_eq(b"abc", b"abd"));
        assert!(!constant_time_eq(b"abc", b"abcd"));
    }
}
