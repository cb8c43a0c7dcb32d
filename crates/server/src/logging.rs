//! Structured logs through `tracing`: human-readable lines or one JSON object per line
//! (`log.format` / `SIGNALBOX_LOG_FORMAT` / `--log-format`), filtered by `RUST_LOG` (default
//! `info,sqlx=warn`), on standard error.
//!
//! Every HTTP request runs in a `request` span with `request_id` (the client's `x-request-id`
//! when it is a sane value, otherwise a new UUID; echoed in the response), the method, the path
//! and the query with `access_token` redacted. Hub connections run in the library's
//! `connection` span (`hub`, `connection_id`, `transport`, `protocol`, `user`). Tokens are never
//! logged: REST routes read them only from the `Authorization` header, which is not recorded.
//!
//! Warnings and errors are also kept in a small in-memory ring ([`recent`]) for the admin
//! dashboard.

use std::collections::VecDeque;
use std::fmt::Write as _;
use std::sync::{Mutex, OnceLock, PoisonError};

use axum::extract::Request;
use axum::http::{HeaderName, HeaderValue};
use axum::middleware::Next;
use axum::response::Response;
use serde::Serialize;
use signalbox::redact_query;
use tracing::field::{Field, Visit};
use tracing::{Event, Level, Span, Subscriber};
use tracing_subscriber::EnvFilter;
use tracing_subscriber::layer::{Context, Layer, SubscriberExt as _};
use tracing_subscriber::util::SubscriberInitExt as _;

use crate::clock::{now_ms, rfc3339};
use crate::config::LogFormat;

/// The request id header, read and written.
pub const REQUEST_ID: HeaderName = HeaderName::from_static("x-request-id");

/// The default filter when `RUST_LOG` is not set.
pub const DEFAULT_FILTER: &str = "info,sqlx=warn";

/// How many warnings and errors [`recent`] keeps.
const RECENT_KEPT: usize = 50;

/// Installs the global subscriber. Call once, before anything logs.
pub fn init(format: LogFormat) {
    let filter = EnvFilter::try_from_default_env().unwrap_or_else(|_| DEFAULT_FILTER.into());
    let registry = tracing_subscriber::registry()
        .with(filter)
        .with(RecentLayer);
    let result = match format {
        LogFormat::Human => registry
            .with(tracing_subscriber::fmt::layer().with_writer(std::io::stderr))
            .try_init(),
        LogFormat::Json => registry
            .with(
                tracing_subscriber::fmt::layer()
                    .json()
                    .with_current_span(true)
                    .with_span_list(true)
                    .flatten_event(true)
                    .with_writer(std::io::stderr),
            )
            .try_init(),
    };
    if let Err(error) = result {
        eprintln!("warning: logging was already initialised: {error}");
    }
}

/// Middleware: makes sure the request has an `x-request-id` (keeping a sane one from the
/// client) and copies it to the response.
pub async fn request_id(mut request: Request, next: Next) -> Response {
    let id = request
        .headers()
        .get(&REQUEST_ID)
        .filter(|v| is_sane_id(v))
        .cloned()
        .unwrap_or_else(|| {
            HeaderValue::from_str(&uuid::Uuid::now_v7().to_string())
                .unwrap_or_else(|_| HeaderValue::from_static("invalid"))
        });
    request.headers_mut().insert(REQUEST_ID, id.clone());
    let mut response = next.run(request).await;
    response.headers_mut().insert(REQUEST_ID, id);
    response
}

fn is_sane_id(value: &HeaderValue) -> bool {
    let bytes = value.as_bytes();
    !bytes.is_empty()
        && bytes.len() <= 128
        && bytes
            .iter()
            .all(|b| b.is_ascii_alphanumeric() || matches!(b, b'-' | b'_' | b'.' | b':'))
}

/// Query parameters that are credentials in an OpenID Connect callback (single use, but never
/// logged): the authorization code, the state, the provider's session state and a fragment-less
/// ID token some providers post back.
const SIGN_IN_PARAMETERS: [&str; 4] = ["code", "state", "session_state", "id_token"];

/// The query as logged: `access_token` (hub requests) and the sign-in callback's credentials
/// redacted.
pub fn loggable_query(query: &str) -> String {
    redact_query(query)
        .split('&')
        .map(|pair| {
            let key = pair.split_once('=').map_or(pair, |(k, _)| k);
            let secret = form_urlencoded::parse(key.as_bytes())
                .next()
                .is_some_and(|(k, _)| {
                    SIGN_IN_PARAMETERS
                        .iter()
                        .any(|name| k.eq_ignore_ascii_case(name))
                });
            if secret {
                format!("{key}=[redacted]")
            } else {
                pair.to_owned()
            }
        })
        .collect::<Vec<_>>()
        .join("&")
}

/// The span of one HTTP request (for `TraceLayer::make_span_with`).
pub fn request_span<B>(request: &axum::http::Request<B>) -> Span {
    // The query is redacted: hub requests may carry `access_token`, sign-in callbacks a code.
    let query = request
        .uri()
        .query()
        .map(loggable_query)
        .unwrap_or_default();
    let request_id = request
        .headers()
        .get(&REQUEST_ID)
        .and_then(|v| v.to_str().ok())
        .unwrap_or_default();
    tracing::info_span!(
        "request",
        request_id = %request_id,
        method = %request.method(),
        path = %request.uri().path(),
        query = %query,
    )
}

/// A warning or error kept for the dashboard.
#[derive(Debug, Clone, Serialize)]
pub struct LoggedEvent {
    /// When (RFC 3339).
    pub at: String,
    /// `WARN` or `ERROR`.
    pub level: String,
    /// The event's target (module).
    pub target: String,
    /// The message and the other fields.
    pub message: String,
}

fn ring() -> &'static Mutex<VecDeque<LoggedEvent>> {
    static RING: OnceLock<Mutex<VecDeque<LoggedEvent>>> = OnceLock::new();
    RING.get_or_init(|| Mutex::new(VecDeque::with_capacity(RECENT_KEPT)))
}

/// The most recent warnings and errors (newest last); empty unless [`init`] was called.
pub fn recent() -> Vec<LoggedEvent> {
    ring()
        .lock()
        .unwrap_or_else(PoisonError::into_inner)
        .iter()
        .cloned()
        .collect()
}

/// Keeps warnings and errors in the ring.
struct RecentLayer;

impl<S: Subscriber> Layer<S> for RecentLayer {
    fn on_event(&self, event: &Event<'_>, _ctx: Context<'_, S>) {
        let level = *event.metadata().level();
        if level > Level::WARN {
            return;
        }
        let mut visitor = MessageVisitor::default();
        event.record(&mut visitor);
        let entry = LoggedEvent {
            at: rfc3339(now_ms()),
            level: level.to_string(),
            target: event.metadata().target().to_owned(),
            message: visitor.text,
        };
        let mut ring = ring().lock().unwrap_or_else(PoisonError::into_inner);
        if ring.len() == RECENT_KEPT {
            ring.pop_front();
        }
        ring.push_back(entry);
    }
}

#[derive(Default)]
struct MessageVisitor {
    text: String,
}

impl Visit for MessageVisitor {
    fn record_debug(&mut self, field: &Field, value: &dyn std::fmt::Debug) {
        if field.name() == "message" {
            let fields = std::mem::take(&mut self.text);
            let _ = write!(self.text, "{value:?}{fields}");
        } else {
            let _ = write!(self.text, " {}={value:?}", field.name());
        }
    }

    fn record_str(&mut self, field: &Field, value: &str) {
        if field.name() == "message" {
            let fields = std::mem::take(&mut self.text);
            self.text = format!("{value}{fields}");
        } else {
            let _ = write!(self.text, " {}={value}", field.name());
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn request_ids() {
        assert!(is_sane_id(&HeaderValue::from_static("abc-123_x.y:z")));
        assert!(!is_sane_id(&HeaderValue::from_static("")));
        assert!(!is_sane_id(&HeaderValue::from_static("a b")));
        assert!(!is_sane_id(
            &HeaderValue::from_str(&"a".repeat(129)).unwrap_or(HeaderValue::from_static(""))
        ));
    }

    #[test]
    fn sign_in_callback_credentials_are_redacted() {
        let logged = loggable_query(
            "code=secret-code&STATE=secret-state&session%5Fstate=s3&iss=https%3A%2F%2Fidp&access_token=t",
        );
        for secret in ["secret-code", "secret-state", "s3", "=t"] {
            assert!(!logged.contains(secret), "{logged}");
        }
        assert!(logged.contains("iss=https%3A%2F%2Fidp"), "{logged}");
        assert_eq!(
            loggable_query("id=abc&error=access_denied"),
            "id=abc&error=access_denied"
        );
    }

    #[test]
    fn span_redacts_the_token() {
        let request = axum::http::Request::builder()
            .uri("/hubs/notifications?id=1&access_token=secret-token")
            .body(())
            .unwrap_or_default();
        let span = request_span(&request);
        // The span exists only with a subscriber; the redaction itself is the library's.
        drop(span);
        assert!(!redact_query("id=1&access_token=secret-token").contains("secret-token"));
    }
}
