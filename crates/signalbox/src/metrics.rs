//! Metrics through the [`metrics`](https://docs.rs/metrics) facade: install any recorder (for
//! example a Prometheus exporter) in the application to collect them. No label carries a user or
//! connection id, so cardinality stays bounded.
//!
//! | name | kind | labels |
//! |---|---|---|
//! | `signalbox_connections` | gauge | `hub`, `transport`, `protocol` |
//! | `signalbox_connects_total` | counter | `hub`, `transport`, `protocol` |
//! | `signalbox_disconnects_total` | counter | `hub`, `reason` |
//! | `signalbox_negotiations_total` | counter | — |
//! | `signalbox_auth_failures_total` | counter | `reason` |
//! | `signalbox_invocations_total` | counter | `hub`, `method`, `outcome` |
//! | `signalbox_invocation_duration_seconds` | histogram | `hub`, `method` |
//! | `signalbox_messages_received_total` | counter | `protocol` |
//! | `signalbox_bytes_received_total` | counter | — |
//! | `signalbox_messages_sent_total` | counter | — (frames queued to connections) |
//! | `signalbox_bytes_sent_total` | counter | `transport` |
//! | `signalbox_outbound_queue_drops_total` | counter | — (slow consumers closed) |
//! | `signalbox_backplane_messages_published_total` | counter | — (envelopes a scaled lifetime manager published) |
//! | `signalbox_backplane_messages_received_total` | counter | — (envelopes it received) |

use std::time::Duration;

use signalbox_protocol::{Protocol, TransportType};

/// Open connections.
pub const CONNECTIONS: &str = "signalbox_connections";
/// Connections that completed their handshake.
pub const CONNECTS: &str = "signalbox_connects_total";
/// Connections that ended, by reason.
pub const DISCONNECTS: &str = "signalbox_disconnects_total";
/// Negotiate requests answered with a connection.
pub const NEGOTIATIONS: &str = "signalbox_negotiations_total";
/// Refused bearer tokens, by reason.
pub const AUTH_FAILURES: &str = "signalbox_auth_failures_total";
/// Hub invocations, by outcome.
pub const INVOCATIONS: &str = "signalbox_invocations_total";
/// Time spent in hub methods.
pub const INVOCATION_DURATION: &str = "signalbox_invocation_duration_seconds";
/// Hub messages received from clients.
pub const MESSAGES_RECEIVED: &str = "signalbox_messages_received_total";
/// Bytes received from clients.
pub const BYTES_RECEIVED: &str = "signalbox_bytes_received_total";
/// Frames queued to connections by sends to clients.
pub const MESSAGES_SENT: &str = "signalbox_messages_sent_total";
/// Bytes written to clients.
pub const BYTES_SENT: &str = "signalbox_bytes_sent_total";
/// Frames dropped because a connection's outbound queue was full.
pub const OUTBOUND_QUEUE_DROPS: &str = "signalbox_outbound_queue_drops_total";
/// Envelopes a [`crate::ScaledLifetimeManager`] published to its backplane.
pub const BACKPLANE_PUBLISHED: &str = "signalbox_backplane_messages_published_total";
/// Envelopes a [`crate::ScaledLifetimeManager`] received from its backplane.
pub const BACKPLANE_RECEIVED: &str = "signalbox_backplane_messages_received_total";

/// Why a connection ended.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum DisconnectReason {
    /// The client closed or went away.
    ClientClosed,
    /// The server closed it because of bad input or a timeout.
    Error,
    /// Aborted by the application, a slow-consumer close, or token expiry.
    Aborted,
    /// The server is shutting down.
    Shutdown,
}

impl DisconnectReason {
    fn label(self) -> &'static str {
        match self {
            DisconnectReason::ClientClosed => "client_closed",
            DisconnectReason::Error => "error",
            DisconnectReason::Aborted => "aborted",
            DisconnectReason::Shutdown => "shutdown",
        }
    }
}

pub(crate) fn connected(hub: &str, transport: TransportType, protocol: Protocol) {
    let labels = [
        ("hub", hub.to_owned()),
        ("transport", transport.name().to_owned()),
        ("protocol", protocol.name().to_owned()),
    ];
    metrics::counter!(CONNECTS, &labels).increment(1);
    metrics::gauge!(CONNECTIONS, &labels).increment(1.0);
}

pub(crate) fn disconnected(
    hub: &str,
    transport: TransportType,
    protocol: Protocol,
    reason: DisconnectReason,
) {
    let labels = [
        ("hub", hub.to_owned()),
        ("transport", transport.name().to_owned()),
        ("protocol", protocol.name().to_owned()),
    ];
    metrics::gauge!(CONNECTIONS, &labels).decrement(1.0);
    metrics::counter!(DISCONNECTS, "hub" => hub.to_owned(), "reason" => reason.label())
        .increment(1);
}

pub(crate) fn negotiated() {
    metrics::counter!(NEGOTIATIONS).increment(1);
}

pub(crate) fn auth_failure(reason: &'static str) {
    metrics::counter!(AUTH_FAILURES, "reason" => reason).increment(1);
}

pub(crate) fn invocation(
    hub: &str,
    method: &str,
    outcome: &'static str,
    elapsed: Option<Duration>,
) {
    metrics::counter!(INVOCATIONS, "hub" => hub.to_owned(), "method" => method.to_owned(), "outcome" => outcome)
        .increment(1);
    if let Some(elapsed) = elapsed {
        metrics::histogram!(INVOCATION_DURATION, "hub" => hub.to_owned(), "method" => method.to_owned())
            .record(elapsed.as_secs_f64());
    }
}

pub(crate) fn received(protocol: Protocol, messages: u64, bytes: u64) {
    if messages > 0 {
        metrics::counter!(MESSAGES_RECEIVED, "protocol" => protocol.name()).increment(messages);
    }
    metrics::counter!(BYTES_RECEIVED).increment(bytes);
}

pub(crate) fn sent(frames: u64) {
    if frames > 0 {
        metrics::counter!(MESSAGES_SENT).increment(frames);
    }
}

pub(crate) fn bytes_sent(transport: TransportType, bytes: u64) {
    metrics::counter!(BYTES_SENT, "transport" => transport.name()).increment(bytes);
}

pub(crate) fn backplane_published() {
    metrics::counter!(BACKPLANE_PUBLISHED).increment(1);
}

pub(crate) fn backplane_received() {
    metrics::counter!(BACKPLANE_RECEIVED).increment(1);
}

pub(crate) fn queue_drop() {
    metrics::counter!(OUTBOUND_QUEUE_DROPS).increment(1);
}
