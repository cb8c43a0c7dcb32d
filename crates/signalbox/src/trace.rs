//! Distributed tracing without a tracing SDK: a hook that moves W3C trace context
//! (`traceparent`, `tracestate`) between `tracing` spans and string maps.
//!
//! The library creates `tracing` spans for negotiation (`negotiate`), each connection
//! (`connection`), each hub invocation (named `{Hub}/{Method}` through the `otel.name` field, with
//! the `rpc.system`, `rpc.service`, `rpc.method`, `signalr.connection.id` and `signalr.transport`
//! attributes of ASP.NET Core's `Microsoft.AspNetCore.SignalR.Server` activity source) and for
//! messages crossing a backplane (`backplane publish`, `backplane receive`). With
//! `tracing-opentelemetry` installed they become OpenTelemetry spans.
//!
//! What the library cannot do without an OpenTelemetry dependency is read or write a span's
//! trace context. An application that exports traces installs a [`TracePropagator`] once with
//! [`set_propagator`]; then
//!
//! - an `Invocation` or `StreamInvocation` whose SignalR `headers` carry a `traceparent` makes
//!   its `{Hub}/{Method}` span a child of that context (otherwise the span has no parent, as in
//!   ASP.NET Core, and follows from the connection's span);
//! - a message a scaled lifetime manager publishes carries the publishing span's context in its
//!   backplane envelope, and the receiving nodes deliver it in a child span.
//!
//! Without a propagator none of this costs anything: no header is read, nothing is added to
//! envelopes and nothing is allocated per connection.

use std::sync::{Arc, OnceLock};

pub use signalbox_protocol::Headers;

/// The W3C `traceparent` header name.
pub const TRACEPARENT: &str = "traceparent";
/// The W3C `tracestate` header name.
pub const TRACESTATE: &str = "tracestate";

/// Reads and writes the trace context of `tracing` spans (implemented over OpenTelemetry's
/// W3C propagator by an application that exports traces).
pub trait TracePropagator: Send + Sync + 'static {
    /// Makes the trace context in `headers` (`traceparent`, `tracestate`), if any, the parent of
    /// `span`.
    fn set_parent(&self, span: &tracing::Span, headers: &Headers);
    /// Writes the trace context of `span` into `headers` (nothing if it has none).
    fn inject(&self, span: &tracing::Span, headers: &mut Headers);
}

static PROPAGATOR: OnceLock<Arc<dyn TracePropagator>> = OnceLock::new();

/// Installs the process-wide propagator; `false` if one was installed already (it stays).
pub fn set_propagator(propagator: Arc<dyn TracePropagator>) -> bool {
    PROPAGATOR.set(propagator).is_ok()
}

/// The installed propagator, if any.
pub fn propagator() -> Option<&'static dyn TracePropagator> {
    PROPAGATOR.get().map(|p| &**p)
}

/// The trace context of `span` as headers (`traceparent`, `tracestate`), empty without a
/// propagator or when the span is not traced.
pub fn headers_of(span: &tracing::Span) -> Headers {
    let mut headers = Headers::new();
    if let Some(propagator) = propagator() {
        propagator.inject(span, &mut headers);
    }
    headers
}

/// The trace context of the current span as headers; see [`headers_of`].
pub fn current_headers() -> Headers {
    headers_of(&tracing::Span::current())
}

/// Makes the context in `headers` the parent of `span` when a propagator is installed and the
/// headers carry a `traceparent`. Returns whether it did.
pub fn set_parent(span: &tracing::Span, headers: &Headers) -> bool {
    match propagator() {
        Some(propagator) if headers.contains_key(TRACEPARENT) => {
            propagator.set_parent(span, headers);
            true
        }
        _ => false,
    }
}

/// The `signalr.transport` attribute value of a transport (OpenTelemetry semantic conventions).
pub(crate) fn transport_attribute(transport: signalbox_protocol::TransportType) -> &'static str {
    match transport {
        signalbox_protocol::TransportType::WebSockets => "web_sockets",
        signalbox_protocol::TransportType::ServerSentEvents => "server_sent_events",
        signalbox_protocol::TransportType::LongPolling => "long_polling",
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn nothing_without_a_propagator_or_traceparent() {
        // No test in this crate installs a propagator.
        assert!(current_headers().is_empty());
        let span = tracing::Span::none();
        assert!(!set_parent(&span, &Headers::new()));
    }
}
