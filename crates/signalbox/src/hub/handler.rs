//! One connection's whole hub life: handshake, dispatch loop, keep-alive, client timeout, close
//! (SignalR's `HubConnectionHandler.OnConnectedAsync`).

use std::sync::Arc;
use std::sync::atomic::Ordering;

use bytes::BytesMut;
use futures_util::StreamExt;
use signalbox_protocol::{
    Close, HubMessage, Protocol, TransferFormat, handshake_response, parse_handshake_request,
};
use tokio_util::sync::CancellationToken;
use tracing::Instrument;

use super::caller::CloseReason;
use super::dispatcher::{Dispatcher, Flow};
use super::heartbeat::Member;
use super::{Caller, HubInner};
use crate::connection::resume::Resumable;
use crate::connection::{Connection, expiry_millis};
use crate::lifetime::ConnectionHandle;
use crate::metrics::DisconnectReason;

const CLOSED_WITH_ERROR: &str = "Connection closed with an error.";

/// Runs a connection until it ends.
///
/// Not an `async fn`: an async fn keeps its moved arguments in its state next to the copies it
/// moves them into, and this future lives as long as the connection.
pub(crate) fn run(
    hub: Arc<HubInner>,
    connection: Connection,
) -> impl Future<Output = ()> + Send + 'static {
    // No parent: a parent span stays open (and keeps its fields) as long as its children, and
    // this one lives as long as the connection; it follows from the request that opened it.
    // Untraced, it is a debug span: a log subscriber keeps every enabled span's fields for as
    // long as the span lives, which at info level would be the largest part of an idle
    // connection. Events at info and above then name their connection themselves, and hooks and
    // invocations run in short-lived spans of their own (see `hook_span`).
    macro_rules! connection_span {
        ($level:expr) => {
            tracing::span!(
                target: "signalbox::hub",
                parent: None,
                $level,
                "connection",
                hub = %hub.name,
                connection_id = %connection.id,
                transport = connection.transport.name(),
                protocol = tracing::field::Empty,
                user = tracing::field::Empty,
                otel.name = tracing::field::Empty,
                otel.kind = tracing::field::Empty,
                rpc.system = tracing::field::Empty,
                rpc.service = tracing::field::Empty,
                signalr.connection.id = tracing::field::Empty,
                signalr.transport = tracing::field::Empty,
            )
        };
    }
    let span = if crate::trace::propagator().is_some() {
        connection_span!(tracing::Level::INFO)
    } else {
        connection_span!(tracing::Level::DEBUG)
    };
    span.follows_from(tracing::Span::current());
    if crate::trace::propagator().is_some() {
        // Traced: the OpenTelemetry names (recorded only then, so logs stay as they were).
        span.record("otel.name", format!("{}/connection", hub.name));
        span.record("otel.kind", "server");
        span.record("rpc.system", "signalr");
        span.record("rpc.service", hub.name.as_str());
        span.record("signalr.connection.id", &*connection.id);
        span.record(
            "signalr.transport",
            crate::trace::transport_attribute(connection.transport),
        );
    }
    run_connection(hub, connection).instrument(span)
}

enum HandshakeFailure {
    /// The client went away.
    Closed,
    /// Answer with this error and close.
    Error(String),
}

async fn read_handshake(
    connection: &mut Connection,
    buf: &mut BytesMut,
    max: Option<usize>,
) -> Result<(Protocol, i32), HandshakeFailure> {
    let request = loop {
        match parse_handshake_request(buf, max) {
            Ok(Some(request)) => break request,
            Ok(None) => match connection.inbound.next().await {
                Some(chunk) => buf.extend_from_slice(&chunk),
                None => return Err(HandshakeFailure::Closed),
            },
            Err(error) => {
                tracing::debug!(%error, "invalid handshake");
                return Err(HandshakeFailure::Error(
                    "An unexpected error occurred during connection handshake.".to_owned(),
                ));
            }
        }
    };
    Ok((
        Protocol::from_name(&request.protocol).ok_or_else(|| {
            HandshakeFailure::Error(format!(
                "The protocol '{}' is not supported.",
                request.protocol
            ))
        })?,
        request.version,
    ))
}

/// Written as a function returning an `async move` block, not an `async fn`: the block uses its
/// captured arguments in place, while an async fn would keep them twice in its state.
#[allow(clippy::manual_async_fn)]
fn run_connection(
    hub: Arc<HubInner>,
    mut connection: Connection,
) -> impl Future<Output = ()> + Send + 'static {
    async move {
        let options = &hub.options;
        let max = options.maximum_receive_message_size;
        let mut buf = BytesMut::new();

        // 1. Handshake.
        let handshake = tokio::time::timeout(
            options.handshake_timeout,
            read_handshake(&mut connection, &mut buf, max),
        )
        .await
        .unwrap_or_else(|_| {
            Err(HandshakeFailure::Error(
                "Handshake was canceled.".to_owned(),
            ))
        });
        let (protocol, version) = match handshake.and_then(|(protocol, version)| {
            check_protocol(&hub, &connection, protocol, version).map(|p| (p, version))
        }) {
            Ok(chosen) => chosen,
            Err(HandshakeFailure::Closed) => return,
            Err(HandshakeFailure::Error(error)) => {
                tracing::debug!(%error, "handshake failed");
                // The connection is closed right after; nothing else to do if the client is gone.
                let _ = connection
                    .outbound
                    .send(handshake_response(Some(&error)))
                    .await;
                return;
            }
        };
        tracing::Span::current().record("protocol", protocol.name());
        connection.binary.store(
            protocol.transfer_format() == TransferFormat::Binary,
            Ordering::Release,
        );
        if let Some(resumable) = &connection.resumable {
            // Stateful reconnect needs handshake version 2; older clients silently go without.
            if version >= 2 {
                resumable.enable(protocol);
            } else {
                resumable.disable();
            }
        }
        // Cancelled when the hub or the server ends the connection, and with the transport: what
        // the receive loop waits for (one wait instead of two) and what hub methods see as
        // `Caller::closed`.
        let abort = connection.transport_closed.child_token();
        // 2. Register the connection before the client can see the handshake response, so that a
        //    message sent to everyone once the client is connected cannot miss it. What is sent to
        //    it meanwhile is held and follows the handshake response.
        //    (A block: what only the start needs is not kept in the connection's long-lived
        //    state.)
        let caller = {
            let user_id: Option<Arc<str>> = connection
                .principal
                .as_ref()
                .and_then(|p| p.user_id())
                .map(Arc::from);
            if let Some(user) = &user_id {
                tracing::Span::current().record("user", &**user);
            }
            let lifetime = hub.context.lifetime_manager();
            // Held back from the transport until the handshake response is queued ahead of it.
            connection.outbound.hold();
            let handle = ConnectionHandle::new(
                connection.id.clone(),
                user_id.clone(),
                protocol,
                connection.outbound.clone(),
                abort.clone(),
            )
            .with_auth(connection.auth.clone());
            lifetime.on_connected(handle).await;
            if let Some(hook) = &hub.initial_groups {
                for group in hook(connection.principal.clone()).await {
                    if let Err(error) = lifetime.add_to_group(&connection.id, &group).await {
                        tracing::warn!(%error, group, connection_id = %connection.id, "cannot join an initial group");
                    }
                }
            }
            if connection
                .outbound
                .release_after(handshake_response(None))
                .is_err()
            {
                lifetime.on_disconnected(&connection.id).await;
                return;
            }
            Caller::new(
                connection.id.clone(),
                connection.principal.clone(),
                connection.auth.clone(),
                user_id,
                connection.request.clone(),
                connection.transport,
                protocol,
                hub.context.clone(),
                abort.clone(),
            )
        };
        tracing::debug!("connected");
        crate::metrics::connected(&hub.name, connection.transport, protocol);
        // Pings, the client timeout, token expiry and shutdown come from the hub's heartbeat,
        // which closes the connection through `abort` (see `Caller::close`).
        let heartbeat = hub.heartbeat.register(Member {
            caller: caller.clone(),
            outbound: connection.outbound.clone(),
            keep_alive: connection.keep_alive,
            expires_at: Some(expiry_millis(connection.principal.as_ref())).filter(|&at| at != 0),
            resumable: connection.resumable.clone().filter(|r| r.is_enabled()),
        });

        // 3. The hub's on_connected, then the loop.
        let close = match connected(&hub, &caller).await {
            Some(close) => Some(close),
            None => {
                let mut dispatcher = Dispatcher::new(
                    hub.clone(),
                    protocol,
                    caller.clone(),
                    connection.outbound.clone(),
                );
                receive_loop(
                    &hub,
                    &mut dispatcher,
                    protocol,
                    &mut connection,
                    &mut buf,
                    &abort,
                    &caller,
                )
                .await
            }
        };

        // 4. Close and clean up.
        let reason = match &close {
            None => DisconnectReason::ClientClosed,
            Some(close) if close.error.is_some() => DisconnectReason::Error,
            Some(_) if hub.context.shutdown_token().is_cancelled() => DisconnectReason::Shutdown,
            Some(_) => DisconnectReason::Aborted,
        };
        crate::metrics::disconnected(&hub.name, connection.transport, protocol, reason);
        if let Some(close) = close
            && let Ok(frame) = protocol.encode_to_bytes(&HubMessage::Close(close))
        {
            // Best effort: a full or closed queue means the client cannot be told anyway. The last
            // frame: nothing sent to the connection meanwhile follows the Close.
            let _ = connection.outbound.try_send_last(frame);
        }
        abort.cancel();
        drop(heartbeat);
        if let Some(hook) = &hub.on_disconnected
            && let Err(error) = hook(caller.clone())
                .instrument(hook_span(&hub, &caller, "on_disconnected"))
                .await
        {
            tracing::warn!(%error, connection_id = caller.connection_id(), user = caller.user_id(), "on_disconnected failed");
        }
        hub.context
            .lifetime_manager()
            .on_disconnected(&connection.id)
            .await;
        tracing::debug!("disconnected");
    }
}

/// The span a hook or an invocation runs in: the connection's when it is enabled, otherwise (at
/// the default level, untraced) a short-lived one naming the connection, its user and `what`.
pub(crate) fn hook_span(hub: &HubInner, caller: &Caller, what: &str) -> tracing::Span {
    let current = tracing::Span::current();
    if !current.is_disabled() {
        return current;
    }
    tracing::info_span!(
        target: "signalbox::hub",
        "connection",
        hub = %hub.name,
        connection_id = caller.connection_id(),
        user = caller.user_id(),
        call = what,
    )
}

/// Runs the hub's `on_connected`; `Some(close)` when it failed and the connection must end.
async fn connected(hub: &HubInner, caller: &Caller) -> Option<Close> {
    let hook = hub.on_connected.as_ref()?;
    match hook(caller.clone())
        .instrument(hook_span(hub, caller, "on_connected"))
        .await
    {
        Ok(()) => None,
        Err(error) => {
            tracing::warn!(%error, connection_id = caller.connection_id(), user = caller.user_id(), "on_connected failed; closing");
            Some(Close {
                error: Some(error.render(CLOSED_WITH_ERROR, hub.options.enable_detailed_errors)),
                allow_reconnect: false,
            })
        }
    }
}

fn check_protocol(
    hub: &HubInner,
    connection: &Connection,
    protocol: Protocol,
    version: i32,
) -> Result<Protocol, HandshakeFailure> {
    if !hub.options.supported_protocols.contains(&protocol) {
        return Err(HandshakeFailure::Error(format!(
            "The protocol '{}' is not supported.",
            protocol.name()
        )));
    }
    if !protocol.is_version_supported(version) {
        return Err(HandshakeFailure::Error(format!(
            "The server does not support version {version} of the '{}' protocol.",
            protocol.name()
        )));
    }
    if protocol.transfer_format() == TransferFormat::Binary && !connection.supports_binary {
        return Err(HandshakeFailure::Error(format!(
            "Cannot use the '{}' protocol on the current transport. The transport does not support 'Binary' transfer format.",
            protocol.name()
        )));
    }
    Ok(protocol)
}

/// Sequence bookkeeping of the messages a stateful client sends (HubProtocol.md, "Stateful
/// Reconnect"): duplicates replayed after a reconnect are dropped; the hub's heartbeat sends the
/// Acks (about once a second).
struct Incoming {
    resumable: Arc<Resumable>,
    /// Id of the next trackable message received.
    next_id: u64,
    /// Highest id processed.
    received: u64,
}

impl Incoming {
    /// Whether to process a message; handles Ack and Sequence itself.
    fn accept(&mut self, message: &HubMessage) -> Result<bool, String> {
        match message {
            HubMessage::Ack(ack) => {
                self.resumable.ack(ack.sequence_id);
                Ok(false)
            }
            HubMessage::Sequence(sequence) => {
                if sequence.sequence_id > self.received + 1 {
                    return Err(
                        "Sequence ID greater than amount of messages we've received.".to_owned(),
                    );
                }
                self.next_id = sequence.sequence_id;
                Ok(false)
            }
            message if message.is_trackable() => {
                let id = self.next_id;
                self.next_id += 1;
                if id <= self.received {
                    return Ok(false);
                }
                self.received = id;
                self.resumable.received_from_client(id);
                Ok(true)
            }
            _ => Ok(true),
        }
    }
}

/// The receive loop; returns the Close message to send, if any.
///
/// It waits for two things only (and for invocations it started): input and `abort`. What else
/// ends a connection (the hub, the heartbeat, the server shutting down, the transport) cancels
/// `abort`, and the caller's close reason says why.
async fn receive_loop(
    hub: &HubInner,
    dispatcher: &mut Dispatcher,
    protocol: Protocol,
    connection: &mut Connection,
    buf: &mut BytesMut,
    abort: &CancellationToken,
    caller: &Caller,
) -> Option<Close> {
    let max = hub.options.maximum_receive_message_size;
    let mut incoming = connection
        .resumable
        .clone()
        .filter(|r| r.is_enabled())
        .map(|resumable| Incoming {
            resumable,
            next_id: 1,
            received: 0,
        });

    // Messages that arrived together with the handshake.
    if !buf.is_empty() {
        caller.mark_received(hub.heartbeat.now());
        if let Some(close) =
            Box::pin(drain(dispatcher, protocol, buf, max, incoming.as_mut())).await
        {
            return close;
        }
    }

    loop {
        tokio::select! {
            biased;
            () = abort.cancelled() => return closing(hub, connection, caller),
            chunk = connection.inbound.next() => {
                let chunk = chunk?;
                crate::metrics::received(protocol, 0, chunk.len() as u64);
                caller.mark_received(hub.heartbeat.now());
                buf.extend_from_slice(&chunk);
                if let Some(close) = Box::pin(drain(dispatcher, protocol, buf, max, incoming.as_mut())).await {
                    return close;
                }
            }
            Some(result) = dispatcher.join_next(), if dispatcher.has_tasks() => {
                if let Err(error) = result
                    && error.is_panic()
                {
                    tracing::error!(connection_id = caller.connection_id(), "a hub method panicked");
                }
            }
        }
    }
}

/// The Close message for a connection whose `abort` was cancelled (`None`: the client is gone).
fn closing(hub: &HubInner, connection: &Connection, caller: &Caller) -> Option<Close> {
    let reason = caller.close_reason();
    // A child of the transport's token: the transport may be what closed.
    if connection.transport_closed.is_cancelled() && reason != Some(CloseReason::Hub) {
        tracing::debug!("transport closed");
        return None;
    }
    let error = match reason {
        Some(CloseReason::ClientTimeout) => Some(if hub.options.enable_detailed_errors {
            format!(
                "{CLOSED_WITH_ERROR} OperationCanceledException: Client hasn't sent a message/ping within the configured ClientTimeoutInterval."
            )
        } else {
            CLOSED_WITH_ERROR.to_owned()
        }),
        Some(CloseReason::Shutdown) => {
            tracing::debug!("server shutting down; closing");
            None
        }
        _ => None,
    };
    Some(Close {
        error,
        allow_reconnect: reason != Some(CloseReason::Hub),
    })
}

/// Decodes and dispatches every complete message in `buf`. `Some(close)` ends the connection.
///
/// Callers box this future: it is large and only alive while messages are processed, so an idle
/// connection does not carry its size.
async fn drain(
    dispatcher: &mut Dispatcher,
    protocol: Protocol,
    buf: &mut BytesMut,
    max: Option<usize>,
    incoming: Option<&mut Incoming>,
) -> Option<Option<Close>> {
    let mut decoded = 0;
    let result = drain_counted(dispatcher, protocol, buf, max, incoming, &mut decoded).await;
    crate::metrics::received(protocol, decoded, 0);
    result
}

async fn drain_counted(
    dispatcher: &mut Dispatcher,
    protocol: Protocol,
    buf: &mut BytesMut,
    max: Option<usize>,
    mut incoming: Option<&mut Incoming>,
    decoded: &mut u64,
) -> Option<Option<Close>> {
    loop {
        match protocol.decode(buf, max) {
            Ok(Some(message)) => {
                *decoded += 1;
                if let Some(incoming) = incoming.as_deref_mut() {
                    match incoming.accept(&message) {
                        Ok(true) => {}
                        Ok(false) => continue,
                        Err(error) => {
                            return Some(Some(Close {
                                error: Some(format!(
                                    "{CLOSED_WITH_ERROR} InvalidOperationException: {error}"
                                )),
                                allow_reconnect: false,
                            }));
                        }
                    }
                }
                match dispatcher.dispatch(message).await {
                    Flow::Continue => {}
                    Flow::Stop => {
                        if let Some(incoming) = incoming {
                            incoming.resumable.disable();
                        }
                        return Some(None);
                    }
                }
            }
            Ok(None) => return None,
            Err(error) => {
                tracing::warn!(%error, connection_id = dispatcher.caller().connection_id(), "invalid message from client; closing");
                return Some(Some(Close {
                    error: Some(format!("{CLOSED_WITH_ERROR} InvalidDataException: {error}")),
                    allow_reconnect: false,
                }));
            }
        }
    }
}
