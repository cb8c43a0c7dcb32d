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
//! | `signalbox_backplane_envelopes_rejected_total` | counter | `reason` (`unknown_version`, `malformed`) |
//! | `signalbox_backplane_envelopes_in_flight` | gauge | — (received envelopes being handled) |
//! | `signalbox_backplane_envelopes_waited_total` | counter | — (times the receive loop waited for a free slot) |
//! | `signalbox_forwarded_requests_total` | counter | `outcome` (`forwarded`, `unknown_node`, `unreachable`, `timeout`) |
//!
//! Call [`register`] once the recorder is installed and [`register_hub`] for each hub, so every
//! series is exported from the start: counters at 0 and the connection gauges at their current
//! value, for each known label value (transports, protocols, disconnect and auth failure reasons,
//! the hub's methods).

use std::time::Duration;

use signalbox_protocol::{Protocol, TransportType};

use crate::Hub;
use crate::hub::method::MethodKind;

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
/// Envelopes a [`crate::ScaledLifetimeManager`] received but ignored, by reason
/// ([`BACKPLANE_REJECT_REASONS`]).
pub const BACKPLANE_ENVELOPES_REJECTED: &str = "signalbox_backplane_envelopes_rejected_total";
/// Received envelopes a [`crate::ScaledLifetimeManager`] is handling right now (group changes,
/// client-result invocations and refresh answers for its connections); at most
/// [`ScaledOptions::max_envelopes_in_flight`](crate::lifetime::ScaledOptions::max_envelopes_in_flight)
/// per manager.
pub const BACKPLANE_ENVELOPES_IN_FLIGHT: &str = "signalbox_backplane_envelopes_in_flight";
/// Times a [`crate::ScaledLifetimeManager`]'s receive loop found every handling slot taken and
/// stopped reading from the backplane until one was free.
pub const BACKPLANE_ENVELOPES_WAITED: &str = "signalbox_backplane_envelopes_waited_total";
/// Requests of Server-Sent Events and long polling for connections held by another node, passed
/// on to that node, by outcome ([`FORWARD_OUTCOMES`]).
pub const FORWARDED_REQUESTS: &str = "signalbox_forwarded_requests_total";

/// Every `outcome` label of [`FORWARDED_REQUESTS`]: the owner answered (`forwarded`, whatever its
/// status), or the request was answered 404 because the owner is unknown to the node directory
/// (`unknown_node`), could not be reached (`unreachable`) or did not answer in time (`timeout`).
pub const FORWARD_OUTCOMES: &[&str] = &["forwarded", "unknown_node", "unreachable", "timeout"];

/// The `reason` label of [`BACKPLANE_ENVELOPES_REJECTED`] for an envelope whose version byte this
/// node does not read.
pub const REJECTED_UNKNOWN_VERSION: &str = "unknown_version";
/// The `reason` label of [`BACKPLANE_ENVELOPES_REJECTED`] for an envelope that does not follow
/// the layout of its version.
pub const REJECTED_MALFORMED: &str = "malformed";
/// Every `reason` label of [`BACKPLANE_ENVELOPES_REJECTED`].
pub const BACKPLANE_REJECT_REASONS: &[&str] = &[REJECTED_UNKNOWN_VERSION, REJECTED_MALFORMED];

/// The `reason` labels of [`AUTH_FAILURES`] the library itself records (an authenticator may add
/// its own through `AuthError::Rejected`).
pub const AUTH_FAILURE_REASONS: &[&str] = &[
    "missing",
    "too_large",
    "malformed",
    "algorithm",
    "unknown_kid",
    "signature",
    "expired",
    "not_yet_valid",
    "issuer",
    "audience",
    "claims",
    "type",
    "revoked",
    "unknown_user",
    "keys_unavailable",
    "forbidden",
];

/// The `method` label of [`INVOCATIONS`] and [`INVOCATION_DURATION`] for invocations handled by a
/// hub's [`fallback`](crate::HubBuilder::fallback) (whatever their target), with outcomes `ok`
/// (a result or void) and `error`.
pub const FALLBACK_METHOD: &str = "*fallback*";

/// The `outcome` labels of [`INVOCATIONS`] recorded with method `*` (before a method is known).
const UNKNOWN_METHOD_OUTCOMES: &[&str] = &["unknown_method", "rate_limited"];

/// Describes the library's metrics to the installed recorder and registers every series that does
/// not depend on a hub at zero (per transport, protocol and auth failure reason), so they are
/// exported before the first event. Call it after installing the recorder; calling it again is
/// harmless (counters are incremented by 0, never reset).
pub fn register() {
    describe();
    metrics::counter!(NEGOTIATIONS).increment(0);
    for reason in AUTH_FAILURE_REASONS {
        metrics::counter!(AUTH_FAILURES, "reason" => *reason).increment(0);
    }
    for protocol in Protocol::ALL {
        metrics::counter!(MESSAGES_RECEIVED, "protocol" => protocol.name()).increment(0);
    }
    metrics::counter!(BYTES_RECEIVED).increment(0);
    metrics::counter!(MESSAGES_SENT).increment(0);
    for transport in TransportType::ALL {
        metrics::counter!(BYTES_SENT, "transport" => transport.name()).increment(0);
    }
    metrics::counter!(OUTBOUND_QUEUE_DROPS).increment(0);
    metrics::counter!(BACKPLANE_PUBLISHED).increment(0);
    metrics::counter!(BACKPLANE_RECEIVED).increment(0);
    for reason in BACKPLANE_REJECT_REASONS {
        metrics::counter!(BACKPLANE_ENVELOPES_REJECTED, "reason" => *reason).increment(0);
    }
    metrics::gauge!(BACKPLANE_ENVELOPES_IN_FLIGHT).increment(0.0);
    metrics::counter!(BACKPLANE_ENVELOPES_WAITED).increment(0);
    for outcome in FORWARD_OUTCOMES {
        metrics::counter!(FORWARDED_REQUESTS, "outcome" => *outcome).increment(0);
    }
}

/// Registers the series of one hub: [`CONNECTIONS`] (at its current value) and [`CONNECTS`] for
/// every transport and protocol it can carry, [`DISCONNECTS`] for every reason, and
/// [`INVOCATIONS`] / [`INVOCATION_DURATION`] for each of its methods (outcomes `ok` and `error`,
/// or `stream` for streaming methods, plus method `*` with `unknown_method` and `rate_limited`,
/// and [`FALLBACK_METHOD`] when the hub has a fallback). Policy refusals (`unauthorized`) appear
/// on the first one. Call it after [`register`].
pub fn register_hub(hub: &Hub) {
    let name = hub.name();
    for transport in TransportType::ALL {
        for protocol in Protocol::ALL {
            if !transport
                .transfer_formats()
                .contains(&protocol.transfer_format())
            {
                continue;
            }
            let labels = [
                ("hub", name.to_owned()),
                ("transport", transport.name().to_owned()),
                ("protocol", protocol.name().to_owned()),
            ];
            metrics::counter!(CONNECTS, &labels).increment(0);
            metrics::gauge!(CONNECTIONS, &labels).increment(0.0);
        }
    }
    for reason in DisconnectReason::ALL {
        metrics::counter!(DISCONNECTS, "hub" => name.to_owned(), "reason" => reason.label())
            .increment(0);
    }
    for outcome in UNKNOWN_METHOD_OUTCOMES {
        metrics::counter!(INVOCATIONS, "hub" => name.to_owned(), "method" => "*", "outcome" => *outcome)
            .increment(0);
    }
    if hub.inner.fallback.is_some() {
        for outcome in ["ok", "error"] {
            metrics::counter!(INVOCATIONS, "hub" => name.to_owned(), "method" => FALLBACK_METHOD, "outcome" => outcome)
                .increment(0);
        }
        let _ = metrics::histogram!(INVOCATION_DURATION, "hub" => name.to_owned(), "method" => FALLBACK_METHOD);
    }
    let mut methods: Vec<(&String, bool)> = hub
        .inner
        .methods
        .iter()
        .map(|(method, descriptor)| (method, matches!(descriptor.kind, MethodKind::Stream(_))))
        .collect();
    methods.sort();
    for (method, stream) in methods {
        let outcomes: &[&'static str] = if stream {
            &["stream"]
        } else {
            &["ok", "error"]
        };
        for outcome in outcomes {
            metrics::counter!(INVOCATIONS, "hub" => name.to_owned(), "method" => method.clone(), "outcome" => *outcome)
                .increment(0);
        }
        if !stream {
            // Registering the histogram exports it with a count of 0.
            let _ = metrics::histogram!(INVOCATION_DURATION, "hub" => name.to_owned(), "method" => method.clone());
        }
    }
}

fn describe() {
    metrics::describe_gauge!(CONNECTIONS, "Open connections");
    metrics::describe_counter!(CONNECTS, "Connections that completed their handshake");
    metrics::describe_counter!(DISCONNECTS, "Connections that ended, by reason");
    metrics::describe_counter!(
        NEGOTIATIONS,
        "Negotiate requests answered with a connection"
    );
    metrics::describe_counter!(AUTH_FAILURES, "Refused bearer tokens, by reason");
    metrics::describe_counter!(
        FORWARDED_REQUESTS,
        "Requests for connections of other nodes passed on to them, by outcome"
    );
    metrics::describe_counter!(INVOCATIONS, "Hub invocations, by outcome");
    metrics::describe_histogram!(
        INVOCATION_DURATION,
        metrics::Unit::Seconds,
        "Time spent in hub methods"
    );
    metrics::describe_counter!(MESSAGES_RECEIVED, "Hub messages received from clients");
    metrics::describe_counter!(BYTES_RECEIVED, "Bytes received from clients");
    metrics::describe_counter!(MESSAGES_SENT, "Frames queued to connections");
    metrics::describe_counter!(BYTES_SENT, "Bytes written to clients");
    metrics::describe_counter!(
        OUTBOUND_QUEUE_DROPS,
        "Frames dropped because a connection's outbound queue was full"
    );
    metrics::describe_counter!(BACKPLANE_PUBLISHED, "Messages published to the backplane");
    metrics::describe_counter!(BACKPLANE_RECEIVED, "Messages received from the backplane");
    metrics::describe_counter!(
        BACKPLANE_ENVELOPES_REJECTED,
        "Messages from the backplane ignored, by reason"
    );
    metrics::describe_gauge!(
        BACKPLANE_ENVELOPES_IN_FLIGHT,
        "Messages from the backplane being handled"
    );
    metrics::describe_counter!(
        BACKPLANE_ENVELOPES_WAITED,
        "Times the backplane receive loop waited for a free handling slot"
    );
}

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
    const ALL: [DisconnectReason; 4] = [
        DisconnectReason::ClientClosed,
        DisconnectReason::Error,
        DisconnectReason::Aborted,
        DisconnectReason::Shutdown,
    ];

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

pub(crate) fn forwarded(outcome: &'static str) {
    metrics::counter!(FORWARDED_REQUESTS, "outcome" => outcome).increment(1);
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

pub(crate) fn backplane_envelope_rejected(reason: &'static str) {
    metrics::counter!(BACKPLANE_ENVELOPES_REJECTED, "reason" => reason).increment(1);
}

/// Adds `delta` (1 or -1) to [`BACKPLANE_ENVELOPES_IN_FLIGHT`].
pub(crate) fn backplane_envelopes_in_flight(delta: f64) {
    metrics::gauge!(BACKPLANE_ENVELOPES_IN_FLIGHT).increment(delta);
}

pub(crate) fn backplane_envelopes_waited() {
    metrics::counter!(BACKPLANE_ENVELOPES_WAITED).increment(1);
}

pub(crate) fn queue_drop() {
    metrics::counter!(OUTBOUND_QUEUE_DROPS).increment(1);
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::auth::AuthError;

    #[test]
    fn auth_failure_reasons_cover_the_errors() {
        let errors = [
            AuthError::Missing,
            AuthError::TooLarge,
            AuthError::Malformed,
            AuthError::AlgorithmNotAllowed,
            AuthError::UnknownKey,
            AuthError::InvalidSignature,
            AuthError::Expired,
            AuthError::NotYetValid,
            AuthError::InvalidIssuer,
            AuthError::InvalidAudience,
            AuthError::InvalidClaims,
            AuthError::InvalidType,
            AuthError::Revoked,
            AuthError::UnknownUser,
            AuthError::KeysUnavailable,
        ];
        for error in errors {
            assert!(
                AUTH_FAILURE_REASONS.contains(&error.reason()),
                "{}",
                error.reason()
            );
        }
    }
}
