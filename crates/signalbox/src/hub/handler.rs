//! One connection's whole hub life: handshake, dispatch loop, keep-alive, client timeout, close
//! (SignalR's `HubConnectionHandler.OnConnectedAsync`).

use std::sync::Arc;
use std::sync::atomic::Ordering;

use bytes::{Bytes, BytesMut};
use futures_util::StreamExt;
use signalbox_protocol::{
    Close, Completion, HubMessage, Invocation, Protocol, StreamInvocation, TransferFormat,
    handshake_response, parse_handshake_request,
};
use tokio::sync::Semaphore;
use tokio::task::JoinSet;
use tokio::time::{Instant, sleep_until};
use tokio_util::sync::CancellationToken;
use tracing::Instrument;

use super::{Caller, HubInner, InvokeError};
use crate::connection::Connection;
use crate::lifetime::ConnectionHandle;

const CLOSED_WITH_ERROR: &str = "Connection closed with an error.";

/// Runs a connection until it ends.
pub(crate) async fn run(hub: Arc<HubInner>, connection: Connection) {
    let span = tracing::info_span!(
        target: "signalbox::hub",
        "connection",
        hub = %hub.name,
        connection_id = %connection.id,
        transport = connection.transport.name(),
        protocol = tracing::field::Empty,
        user = tracing::field::Empty,
    );
    run_connection(hub, connection).instrument(span).await;
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

async fn run_connection(hub: Arc<HubInner>, mut connection: Connection) {
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
    let protocol = match handshake
        .and_then(|(protocol, version)| check_protocol(&hub, &connection, protocol, version))
    {
        Ok(protocol) => protocol,
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
    if connection
        .outbound
        .send(handshake_response(None))
        .await
        .is_err()
    {
        return;
    }

    // 2. Register the connection.
    let user_id: Option<Arc<str>> = connection
        .principal
        .as_ref()
        .and_then(|p| p.user_id())
        .map(Arc::from);
    if let Some(user) = &user_id {
        tracing::Span::current().record("user", &**user);
    }
    let abort = CancellationToken::new();
    let aborted_by_hub = CancellationToken::new();
    let lifetime = hub.context.lifetime_manager().clone();
    lifetime
        .on_connected(ConnectionHandle::new(
            connection.id.clone(),
            user_id.clone(),
            protocol,
            connection.outbound.clone(),
            abort.clone(),
        ))
        .await;
    let caller = Caller::new(
        connection.id.clone(),
        connection.principal.clone(),
        user_id,
        connection.request.clone(),
        connection.transport,
        protocol,
        hub.context.clone(),
        abort.clone(),
        aborted_by_hub.clone(),
    );
    tracing::debug!("connected");

    // 3. The hub's on_connected, then the loop.
    let close = match &hub.on_connected {
        Some(hook) => match hook(caller.clone()).await {
            Ok(()) => None,
            Err(error) => {
                tracing::warn!(%error, "on_connected failed; closing");
                Some(Close {
                    error: Some(error.render(CLOSED_WITH_ERROR, options.enable_detailed_errors)),
                    allow_reconnect: false,
                })
            }
        },
        None => None,
    };
    let close = match close {
        Some(close) => Some(close),
        None => {
            let mut session = Session {
                hub: &hub,
                protocol,
                caller: &caller,
                outbound: connection.outbound.clone(),
                invocations: JoinSet::new(),
                slots: Arc::new(Semaphore::new(
                    options.maximum_parallel_invocations_per_client.max(1),
                )),
            };
            session
                .run(&mut connection, &mut buf, &abort, &aborted_by_hub)
                .await
        }
    };

    // 4. Close and clean up.
    if let Some(close) = close
        && let Ok(frame) = protocol.encode_to_bytes(&HubMessage::Close(close))
    {
        // Best effort: a full or closed queue means the client cannot be told anyway.
        let _ = connection.outbound.try_send(frame);
    }
    abort.cancel();
    if let Some(hook) = &hub.on_disconnected
        && let Err(error) = hook(caller.clone()).await
    {
        tracing::warn!(%error, "on_disconnected failed");
    }
    lifetime.on_disconnected(&connection.id).await;
    tracing::debug!("disconnected");
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

struct Session<'a> {
    hub: &'a Arc<HubInner>,
    protocol: Protocol,
    caller: &'a Caller,
    outbound: tokio::sync::mpsc::Sender<Bytes>,
    invocations: JoinSet<()>,
    slots: Arc<Semaphore>,
}

/// What the loop does after a message.
enum Flow {
    Continue,
    /// The client closed gracefully.
    Stop,
}

impl Session<'_> {
    /// The receive loop; returns the Close message to send, if any.
    async fn run(
        &mut self,
        connection: &mut Connection,
        buf: &mut BytesMut,
        abort: &CancellationToken,
        aborted_by_hub: &CancellationToken,
    ) -> Option<Close> {
        let options = &self.hub.options;
        let max = options.maximum_receive_message_size;
        let keep_alive = connection.keep_alive;
        let ping = self.protocol.encode_to_bytes(&HubMessage::Ping).ok();
        let mut next_ping = Instant::now() + options.keep_alive_interval;
        let mut last_received: Option<Instant> = None;
        let far = Instant::now() + std::time::Duration::from_secs(86_400 * 365);
        let timer = sleep_until(if keep_alive { next_ping } else { far });
        tokio::pin!(timer);

        // Messages that arrived together with the handshake.
        if !buf.is_empty() {
            last_received = Some(Instant::now());
            if let Some(close) = self.drain(buf, max).await {
                return close;
            }
        }

        loop {
            tokio::select! {
                biased;
                () = abort.cancelled() => {
                    return Some(Close {
                        error: None,
                        allow_reconnect: !aborted_by_hub.is_cancelled(),
                    });
                }
                chunk = connection.inbound.next() => {
                    let chunk = chunk?;
                    last_received = Some(Instant::now());
                    buf.extend_from_slice(&chunk);
                    if let Some(close) = self.drain(buf, max).await {
                        return close;
                    }
                }
                () = &mut timer, if keep_alive => {
                    let now = Instant::now();
                    if now >= next_ping {
                        if let Some(ping) = &ping {
                            // A full queue means the client is busy receiving already.
                            let _ = self.outbound.try_send(ping.clone());
                        }
                        next_ping = now + options.keep_alive_interval;
                    }
                    let mut deadline = next_ping;
                    if let Some(last) = last_received {
                        let timeout_at = last + options.client_timeout_interval;
                        if now >= timeout_at {
                            tracing::debug!("client timeout");
                            let detail = if options.enable_detailed_errors {
                                format!("{CLOSED_WITH_ERROR} OperationCanceledException: Client hasn't sent a message/ping within the configured ClientTimeoutInterval.")
                            } else {
                                CLOSED_WITH_ERROR.to_owned()
                            };
                            return Some(Close { error: Some(detail), allow_reconnect: true });
                        }
                        deadline = deadline.min(timeout_at);
                    }
                    timer.as_mut().reset(deadline);
                }
                Some(result) = self.invocations.join_next(), if !self.invocations.is_empty() => {
                    if let Err(error) = result
                        && error.is_panic()
                    {
                        tracing::error!("a hub method panicked");
                    }
                }
            }
        }
    }

    /// Decodes and dispatches every complete message in `buf`. `Some(close)` ends the connection.
    async fn drain(&mut self, buf: &mut BytesMut, max: Option<usize>) -> Option<Option<Close>> {
        loop {
            match self.protocol.decode(buf, max) {
                Ok(Some(message)) => match self.dispatch(message).await {
                    Flow::Continue => {}
                    Flow::Stop => return Some(None),
                },
                Ok(None) => return None,
                Err(error) => {
                    tracing::warn!(%error, "invalid message from client; closing");
                    return Some(Some(Close {
                        error: Some(format!("{CLOSED_WITH_ERROR} InvalidDataException: {error}")),
                        allow_reconnect: false,
                    }));
                }
            }
        }
    }

    async fn dispatch(&mut self, message: HubMessage) -> Flow {
        match message {
            HubMessage::Invocation(invocation) => self.invoke(invocation).await,
            HubMessage::StreamInvocation(StreamInvocation {
                invocation_id,
                target,
                ..
            }) => {
                let error = if self.hub.methods.contains_key(&target.to_lowercase()) {
                    format!(
                        "The client attempted to invoke the non-streaming '{target}' method with a streaming invocation."
                    )
                } else {
                    format!("Unknown hub method '{target}'")
                };
                self.complete(Completion::error(invocation_id, error)).await;
            }
            HubMessage::Close(close) => {
                tracing::debug!(error = ?close.error, "client closed the connection");
                return Flow::Stop;
            }
            HubMessage::Ping
            | HubMessage::StreamItem(_)
            | HubMessage::Completion(_)
            | HubMessage::CancelInvocation(_)
            | HubMessage::Ack(_)
            | HubMessage::Sequence(_) => {}
        }
        Flow::Continue
    }

    async fn complete(&self, completion: Completion) {
        send_completion(&self.outbound, self.protocol, completion).await;
    }

    async fn invoke(&mut self, invocation: Invocation) {
        let Invocation {
            invocation_id,
            target,
            arguments,
            ..
        } = invocation;
        let Some(method) = self.hub.methods.get(&target.to_lowercase()).cloned() else {
            tracing::debug!(target_method = %target, "unknown hub method");
            if let Some(id) = invocation_id {
                self.complete(Completion::error(
                    id,
                    format!("Unknown hub method '{target}'"),
                ))
                .await;
            }
            return;
        };
        if let Some(policy) = &method.policy
            && !policy.is_satisfied_by(self.caller.principal())
        {
            tracing::debug!(target_method = %target, "invocation denied by policy");
            if let Some(id) = invocation_id {
                self.complete(Completion::error(
                    id,
                    format!("Failed to invoke '{target}' because user is unauthorized"),
                ))
                .await;
            }
            return;
        }
        let Ok(permit) = self.slots.clone().acquire_owned().await else {
            return;
        };
        let caller = self.caller.clone();
        let outbound = self.outbound.clone();
        let protocol = self.protocol;
        let detailed = self.hub.options.enable_detailed_errors;
        self.invocations.spawn(
            async move {
                let result = (method.handler)(caller, arguments).await;
                drop(permit);
                let Some(id) = invocation_id else {
                    if let Err(InvokeError::Hub(error)) = &result {
                        tracing::debug!(target_method = %target, %error, "non-blocking invocation failed");
                    }
                    return;
                };
                let completion = match result {
                    Ok(value) => Completion::result(id, value),
                    Err(InvokeError::Bind(error)) => {
                        let prefix = format!("Failed to invoke '{target}' due to an error on the server.");
                        let text = if detailed {
                            format!("{prefix} InvalidDataException: {error}")
                        } else {
                            prefix
                        };
                        Completion::error(id, text)
                    }
                    Err(InvokeError::Hub(error)) => {
                        if !error.is_public() {
                            tracing::warn!(target_method = %target, %error, "hub method failed");
                        }
                        let prefix = format!("An unexpected error occurred invoking '{target}' on the server.");
                        Completion::error(id, error.render(&prefix, detailed))
                    }
                };
                send_completion(&outbound, protocol, completion).await;
            }
            .in_current_span(),
        );
    }
}

async fn send_completion(
    outbound: &tokio::sync::mpsc::Sender<Bytes>,
    protocol: Protocol,
    completion: Completion,
) {
    match protocol.encode_to_bytes(&HubMessage::Completion(completion)) {
        Ok(frame) => {
            // A closed queue means the connection is gone; the result has nowhere to go.
            let _ = outbound.send(frame).await;
        }
        Err(error) => tracing::error!(%error, "failed to encode a completion"),
    }
}
