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
use std::io::IsTerminal as _;
use std::sync::{Mutex, OnceLock, PoisonError};

use axum::extract::Request;
use axum::http::{HeaderName, HeaderValue};
use axum::middleware::Next;
use axum::response::Response;
use opentelemetry::trace::TraceContextExt as _;
use serde::Serialize;
use signalbox::redact_query;
use tracing::dispatcher::WeakDispatch;
use tracing::field::{Field, Visit};
use tracing::{Dispatch, Event, Level, Span, Subscriber};
use tracing_subscriber::EnvFilter;
use tracing_subscriber::fmt::format::Writer;
use tracing_subscriber::fmt::{FmtContext, FormatEvent, FormatFields};
use tracing_subscriber::layer::{Context, Layer, SubscriberExt as _};
use tracing_subscriber::registry::LookupSpan;
use tracing_subscriber::util::SubscriberInitExt as _;

use crate::clock::{now_ms, rfc3339};
use crate::config::LogFormat;
use crate::telemetry::Telemetry;

/// The request id header, read and written.
pub const REQUEST_ID: HeaderName = HeaderName::from_static("x-request-id");

/// The default filter when `RUST_LOG` is not set.
pub const DEFAULT_FILTER: &str = "info,sqlx=warn";

/// How many warnings and errors [`recent`] keeps.
const RECENT_KEPT: usize = 50;

/// Installs the global subscriber. Call once, before anything logs.
pub fn init(format: LogFormat) {
    init_with(format, None);
}

/// Installs the global subscriber, exporting spans through `telemetry` when given; then every
/// log line inside a traced span carries its `trace_id` and `span_id`. Call once, before
/// anything logs.
pub fn init_with(format: LogFormat, telemetry: Option<&Telemetry>) {
    let filter = EnvFilter::try_from_default_env().unwrap_or_else(|_| DEFAULT_FILTER.into());
    let ids = telemetry.is_some();
    // Colours only on a terminal: a file or a pipe gets plain text (and each span's stored
    // fields stay short: escape codes around every field name would double them).
    let ansi = !ids && std::io::stderr().is_terminal();
    let dispatch = DispatchCell::default();
    let registry = tracing_subscriber::registry()
        .with(filter)
        .with(RecentLayer)
        .with(telemetry.map(Telemetry::layer))
        .with(CaptureDispatch(dispatch.clone()));
    let result = match format {
        LogFormat::Human => registry
            .with(
                tracing_subscriber::fmt::layer()
                    .with_ansi(ansi)
                    // The ids are added through a buffer, without colours: none then.
                    .event_format(TraceIds {
                        inner: tracing_subscriber::fmt::format().with_ansi(ansi),
                        dispatch: ids.then(|| dispatch.clone()),
                        json: false,
                    })
                    .with_writer(std::io::stderr),
            )
            .try_init(),
        LogFormat::Json => registry
            .with(
                tracing_subscriber::fmt::layer()
                    .json()
                    .with_current_span(true)
                    .with_span_list(true)
                    .flatten_event(true)
                    .map_event_format(|inner| TraceIds {
                        inner,
                        dispatch: ids.then_some(dispatch),
                        json: true,
                    })
                    .with_writer(std::io::stderr),
            )
            .try_init(),
    };
    if let Err(error) = result {
        eprintln!("warning: logging was already initialised: {error}");
    }
}

/// An event format that adds the OpenTelemetry `trace_id` and `span_id` of the event's span:
/// the first fields of a JSON line, `trace_id=… span_id=…` at the end of a human one.
struct TraceIds<F> {
    inner: F,
    /// The subscriber, to ask the OpenTelemetry layer for span contexts (from inside an event,
    /// `tracing::dispatcher::get_default` would not give it); `None`: no ids.
    dispatch: Option<DispatchCell>,
    json: bool,
}

/// The subscriber's dispatch, captured when it is registered.
#[derive(Clone, Default)]
struct DispatchCell(std::sync::Arc<OnceLock<WeakDispatch>>);

/// Captures the dispatch into a [`DispatchCell`].
struct CaptureDispatch(DispatchCell);

impl<S: Subscriber> Layer<S> for CaptureDispatch {
    fn on_register_dispatch(&self, subscriber: &Dispatch) {
        let _ = self.0.0.set(subscriber.downgrade());
    }
}

impl<S, N, F> FormatEvent<S, N> for TraceIds<F>
where
    S: Subscriber + for<'a> LookupSpan<'a>,
    N: for<'a> FormatFields<'a> + 'static,
    F: FormatEvent<S, N>,
{
    fn format_event(
        &self,
        ctx: &FmtContext<'_, S, N>,
        mut writer: Writer<'_>,
        event: &Event<'_>,
    ) -> std::fmt::Result {
        let dispatch = self
            .dispatch
            .as_ref()
            .and_then(|cell| cell.0.get())
            .and_then(WeakDispatch::upgrade);
        let ids = dispatch.and_then(|dispatch| {
            let span = ctx.parent_span()?;
            tracing_opentelemetry::get_otel_context(&span.id(), &dispatch)
        });
        let ids = ids.and_then(|context| {
            let span = context.span();
            let span_context = span.span_context();
            span_context
                .is_valid()
                .then(|| (span_context.trace_id(), span_context.span_id()))
        });
        let Some((trace_id, span_id)) = ids else {
            return self.inner.format_event(ctx, writer, event);
        };
        let mut line = String::new();
        self.inner
            .format_event(ctx, Writer::new(&mut line), event)?;
        if self.json && line.starts_with('{') && line.len() > 2 {
            write!(
                writer,
                "{{\"trace_id\":\"{trace_id}\",\"span_id\":\"{span_id}\",{}",
                &line[1..]
            )
        } else {
            let body = line.trim_end_matches('\n');
            writeln!(writer, "{body} trace_id={trace_id} span_id={span_id}")
        }
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
    let span = tracing::info_span!(
        "request",
        request_id = %request_id,
        method = %request.method(),
        path = %request.uri().path(),
        query = %query,
        otel.name = tracing::field::Empty,
        otel.kind = tracing::field::Empty,
    );
    if signalbox::trace::propagator().is_some() {
        // Traced: named as OpenTelemetry's HTTP server spans, a child of the caller's
        // `traceparent` if any.
        span.record(
            "otel.name",
            format!("{} {}", request.method(), request.uri().path()),
        );
        span.record("otel.kind", "server");
        crate::telemetry::set_http_parent(&span, request.headers());
    }
    span
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

    #[derive(Clone, Default)]
    struct Captured(std::sync::Arc<Mutex<Vec<u8>>>);

    impl std::io::Write for Captured {
        fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
            self.0
                .lock()
                .unwrap_or_else(PoisonError::into_inner)
                .extend_from_slice(buf);
            Ok(buf.len())
        }
        fn flush(&mut self) -> std::io::Result<()> {
            Ok(())
        }
    }

    #[test]
    fn json_lines_in_traced_spans_carry_trace_and_span_ids() {
        use opentelemetry::trace::TracerProvider as _;
        let provider = opentelemetry_sdk::trace::SdkTracerProvider::builder().build();
        let captured = Captured::default();
        let writer = captured.clone();
        let dispatch = DispatchCell::default();
        let subscriber = tracing_subscriber::registry()
            .with(tracing_opentelemetry::layer().with_tracer(provider.tracer("test")))
            .with(CaptureDispatch(dispatch.clone()))
            .with(
                tracing_subscriber::fmt::layer()
                    .json()
                    .flatten_event(true)
                    .map_event_format(|inner| TraceIds {
                        inner,
                        dispatch: Some(dispatch),
                        json: true,
                    })
                    .with_writer(move || writer.clone()),
            );
        tracing::subscriber::with_default(subscriber, || {
            tracing::info!("outside");
            let span = tracing::info_span!("traced");
            let _entered = span.enter();
            tracing::info!("inside");
        });
        let text = String::from_utf8(
            captured
                .0
                .lock()
                .unwrap_or_else(PoisonError::into_inner)
                .clone(),
        )
        .unwrap_or_default();
        let lines: Vec<serde_json::Value> = text
            .lines()
            .filter_map(|line| serde_json::from_str(line).ok())
            .collect();
        assert_eq!(lines.len(), 2, "{text}");
        assert!(lines[0].get("trace_id").is_none(), "{text}");
        let trace_id = lines[1]["trace_id"].as_str().unwrap_or_default();
        let span_id = lines[1]["span_id"].as_str().unwrap_or_default();
        assert_eq!(trace_id.len(), 32, "{text}");
        assert_eq!(span_id.len(), 16, "{text}");
        assert_eq!(lines[1]["message"], "inside");
    }

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
