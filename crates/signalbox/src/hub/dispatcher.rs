//! Dispatching hub messages of one connection: invocations, server-to-client streams, upload
//! streams, cancellation and client results (SignalR's `DefaultHubDispatcher`).

use crate::connection::outbound::OutboundSender;
use std::collections::HashMap;
use std::sync::{Arc, Mutex};

use futures_util::StreamExt;
use signalbox_protocol::{
    CancelInvocation, Completion, CompletionOutcome, Headers, HubMessage, Invocation, Payload,
    Protocol, StreamInvocation, StreamItem,
};
use tokio::sync::{Semaphore, mpsc};
use tokio::task::JoinSet;
use tokio_util::sync::CancellationToken;
use tracing::Instrument;

use super::args::ArgumentBinder;
use super::rate_limit::TokenBucket;
use super::{
    Arguments, Caller, FallbackHandler, HubInner, InvokeError, MethodDescriptor, MethodKind,
    UnknownInvocation, UploadEvent,
};

/// What an invocation's target resolved to.
enum Resolved {
    /// A declared method.
    Method(MethodDescriptor),
    /// No declared method: the hub's fallback.
    Fallback(FallbackHandler),
}

/// What the connection loop does after a message.
pub(crate) enum Flow {
    Continue,
    /// The client closed gracefully.
    Stop,
}

/// The dispatcher of one connection.
pub(crate) struct Dispatcher {
    hub: Arc<HubInner>,
    protocol: Protocol,
    caller: Caller,
    outbound: OutboundSender,
    /// Running invocations and streams; dropping the set aborts them. This and the next fields
    /// are created on first use: many connections never invoke anything.
    tasks: Option<JoinSet<()>>,
    slots: Option<Arc<Semaphore>>,
    /// (Boxed, as the rate limiter: an idle connection holds a pointer, not an empty table.)
    #[allow(clippy::box_collection)]
    uploads: Option<Box<HashMap<String, mpsc::Sender<UploadEvent>>>>,
    streams: Option<Arc<Mutex<HashMap<String, CancellationToken>>>>,
    rate: Option<Box<TokenBucket>>,
}

impl Dispatcher {
    pub(crate) fn new(
        hub: Arc<HubInner>,
        protocol: Protocol,
        caller: Caller,
        outbound: OutboundSender,
    ) -> Self {
        let rate = hub
            .options
            .invocation_rate_limit
            .map(|limit| Box::new(TokenBucket::new(limit)));
        Self {
            hub,
            protocol,
            caller,
            outbound,
            tasks: None,
            slots: None,
            uploads: None,
            streams: None,
            rate,
        }
    }

    /// Whether invocations or streams are running.
    /// The connection's caller.
    pub(crate) fn caller(&self) -> &Caller {
        &self.caller
    }

    pub(crate) fn has_tasks(&self) -> bool {
        self.tasks.as_ref().is_some_and(|tasks| !tasks.is_empty())
    }

    /// The next invocation or stream to end (never resolves while none runs).
    pub(crate) async fn join_next(&mut self) -> Option<Result<(), tokio::task::JoinError>> {
        match &mut self.tasks {
            Some(tasks) if !tasks.is_empty() => tasks.join_next().await,
            _ => std::future::pending().await,
        }
    }

    fn tasks(&mut self) -> &mut JoinSet<()> {
        self.tasks.get_or_insert_with(JoinSet::new)
    }

    /// The invocation slots (`maximum_parallel_invocations_per_client`).
    fn slots(&mut self) -> Arc<Semaphore> {
        let parallel = self
            .hub
            .options
            .maximum_parallel_invocations_per_client
            .max(1);
        self.slots
            .get_or_insert_with(|| Arc::new(Semaphore::new(parallel)))
            .clone()
    }

    /// The cancellation tokens of running streams, by invocation id.
    fn streams(&mut self) -> Arc<Mutex<HashMap<String, CancellationToken>>> {
        self.streams.get_or_insert_with(Arc::default).clone()
    }

    pub(crate) async fn dispatch(&mut self, message: HubMessage) -> Flow {
        match message {
            HubMessage::Invocation(invocation) => self.invoke(invocation).await,
            HubMessage::StreamInvocation(invocation) => self.start_stream(invocation).await,
            HubMessage::StreamItem(StreamItem {
                invocation_id,
                item,
                ..
            }) => {
                self.upload_item(&invocation_id, UploadEvent::Item(item))
                    .await
            }
            HubMessage::Completion(completion) => self.completion(completion).await,
            HubMessage::CancelInvocation(CancelInvocation { invocation_id, .. }) => {
                if let Some(streams) = &self.streams
                    && let Ok(streams) = streams.lock()
                    && let Some(token) = streams.get(&invocation_id)
                {
                    token.cancel();
                }
            }
            HubMessage::Close(close) => {
                tracing::debug!(error = ?close.error, "client closed the connection");
                return Flow::Stop;
            }
            HubMessage::Ping | HubMessage::Ack(_) | HubMessage::Sequence(_) => {}
        }
        Flow::Continue
    }

    async fn complete(&self, completion: Completion) {
        send(
            &self.outbound,
            self.protocol,
            HubMessage::Completion(completion),
        )
        .await;
    }

    /// Looks up a method and checks the rate limit and its policy; answers the caller when that
    /// fails. Targets no method matches go to the hub's fallback if `fallback` allows it.
    async fn method(
        &mut self,
        target: &str,
        invocation_id: Option<&str>,
        fallback: bool,
    ) -> Option<Resolved> {
        if let Some(bucket) = &mut self.rate
            && !bucket.try_take()
        {
            tracing::debug!(target_method = %target, "invocation over the rate limit");
            crate::metrics::invocation(&self.hub.name, "*", "rate_limited", None);
            if let Some(id) = invocation_id {
                self.complete(Completion::error(
                    id,
                    format!(
                        "Failed to invoke '{target}': rate limit exceeded, too many invocations."
                    ),
                ))
                .await;
            }
            return None;
        }
        let Some(method) = self.hub.methods.get(&target.to_lowercase()).cloned() else {
            if fallback && let Some(handler) = &self.hub.fallback {
                return Some(Resolved::Fallback(handler.clone()));
            }
            tracing::debug!(target_method = %target, "unknown hub method");
            crate::metrics::invocation(&self.hub.name, "*", "unknown_method", None);
            if let Some(id) = invocation_id {
                self.complete(Completion::error(
                    id,
                    format!("Unknown hub method '{target}'"),
                ))
                .await;
            }
            return None;
        };
        if let Some(policy) = &method.policy
            && !policy.is_satisfied_by(self.caller.current_principal().as_ref())
        {
            tracing::debug!(target_method = %target, "invocation denied by policy");
            crate::metrics::invocation(
                &self.hub.name,
                &target.to_lowercase(),
                "unauthorized",
                None,
            );
            if let Some(id) = invocation_id {
                self.complete(Completion::error(
                    id,
                    format!("Failed to invoke '{target}' because user is unauthorized"),
                ))
                .await;
            }
            return None;
        }
        Some(Resolved::Method(method))
    }

    /// Opens the upload streams an invocation announces.
    fn open_uploads(&mut self, stream_ids: Vec<String>, payloads: Vec<Payload>) -> Arguments {
        let provided = payloads.len();
        let streams = stream_ids.len();
        let receivers = stream_ids
            .into_iter()
            .map(|id| {
                let (tx, rx) = mpsc::channel(self.hub.options.stream_buffer_capacity.max(1));
                self.uploads.get_or_insert_default().insert(id, tx);
                rx
            })
            .collect();
        Arguments {
            binder: ArgumentBinder::new(payloads, receivers),
            provided,
            streams,
        }
    }

    async fn upload_item(&mut self, stream_id: &str, event: UploadEvent) {
        let Some(tx) = self
            .uploads
            .as_ref()
            .and_then(|uploads| uploads.get(stream_id))
        else {
            tracing::debug!(stream_id, "item for an unknown stream ignored");
            return;
        };
        // Waiting here applies backpressure to the client, as the official server does.
        if tx.send(event).await.is_err()
            && let Some(uploads) = &mut self.uploads
        {
            uploads.remove(stream_id);
        }
    }

    async fn completion(&mut self, completion: Completion) {
        if let Some(tx) = self
            .uploads
            .as_mut()
            .and_then(|uploads| uploads.remove(&completion.invocation_id))
        {
            if let CompletionOutcome::Error(error) = completion.outcome {
                // The method may have stopped reading; then nobody needs the error.
                let _ = tx.send(UploadEvent::Error(error)).await;
            }
            return;
        }
        let connection_id = self.caller.connection_id().to_owned();
        if !self
            .hub
            .context
            .lifetime_manager()
            .on_client_completion(&connection_id, completion)
        {
            tracing::debug!("completion for an unknown invocation ignored");
        }
    }

    /// The span an invocation runs in. Untraced (no [`crate::trace::TracePropagator`]): the
    /// connection's span when it is enabled, otherwise one naming the connection and the method
    /// (see `handler::hook_span`). Traced: `{Hub}/{Method}` with the attributes of ASP.NET
    /// Core's `Microsoft.AspNetCore.SignalR.Server` activity, a child of the `traceparent` in the
    /// message headers if any, otherwise a root following from the connection's span.
    fn invocation_span(&self, target: &str, headers: &Headers) -> tracing::Span {
        if crate::trace::propagator().is_none() {
            return super::handler::hook_span(&self.hub, &self.caller, target);
        }
        let span = tracing::info_span!(
            target: "signalbox::hub",
            parent: None,
            "invocation",
            otel.name = %format_args!("{}/{}", self.hub.name, target),
            otel.kind = "server",
            rpc.system = "signalr",
            rpc.service = %self.hub.name,
            rpc.method = %target,
            signalr.connection.id = %self.caller.connection_id(),
            signalr.transport = crate::trace::transport_attribute(self.caller.transport()),
        );
        span.follows_from(tracing::Span::current());
        crate::trace::set_parent(&span, headers);
        span
    }

    fn prefix(target: &str) -> String {
        format!("An unexpected error occurred invoking '{target}' on the server.")
    }

    async fn invoke(&mut self, invocation: Invocation) {
        let Invocation {
            headers,
            invocation_id,
            target,
            arguments,
            stream_ids,
        } = invocation;
        // Invocations with upload streams are never handed to the fallback.
        let method = match self
            .method(&target, invocation_id.as_deref(), stream_ids.is_empty())
            .await
        {
            Some(Resolved::Method(method)) => method,
            Some(Resolved::Fallback(handler)) => {
                let invocation = UnknownInvocation {
                    target,
                    invocation_id,
                    arguments,
                    headers,
                };
                self.invoke_fallback(handler, invocation).await;
                return;
            }
            None => return,
        };
        let handler = match &method.kind {
            MethodKind::Unary(handler) => handler.clone(),
            MethodKind::Stream(_) => {
                if let Some(id) = invocation_id {
                    self.complete(Completion::error(
                        id,
                        format!("The client attempted to invoke the streaming '{target}' method with a non-streaming invocation."),
                    ))
                    .await;
                }
                return;
            }
        };
        let args = self.open_uploads(stream_ids, arguments);
        let Ok(permit) = self.slots().acquire_owned().await else {
            return;
        };
        let caller = self.caller.clone();
        let outbound = self.outbound.clone();
        let protocol = self.protocol;
        let texts = ErrorTexts {
            detailed: self.hub.options.enable_detailed_errors,
        };
        let hub_name = self.hub.name.clone();
        let span = self.invocation_span(&target, &headers);
        drop(headers);
        self.tasks().spawn(
            async move {
                let started = tokio::time::Instant::now();
                let result = handler(caller, args).await;
                drop(permit);
                let outcome = match &result {
                    Ok(_) => "ok",
                    Err(InvokeError::Bind(_)) => "bind_error",
                    Err(InvokeError::Hub(_)) => "error",
                };
                crate::metrics::invocation(&hub_name, &target.to_lowercase(), outcome, Some(started.elapsed()));
                let Some(id) = invocation_id else {
                    if let Err(InvokeError::Hub(error)) = &result {
                        tracing::debug!(target_method = %target, %error, "non-blocking invocation failed");
                    }
                    return;
                };
                let completion = match result {
                    Ok(value) => Completion::result(id, value),
                    Err(error) => Completion::error(id, texts.text(&target, &error)),
                };
                send(&outbound, protocol, HubMessage::Completion(completion)).await;
            }
            .instrument(span),
        );
    }

    /// Runs the hub's fallback for an invocation of an undeclared method, under the invocation
    /// slots like a unary method.
    async fn invoke_fallback(&mut self, handler: FallbackHandler, invocation: UnknownInvocation) {
        let Ok(permit) = self.slots().acquire_owned().await else {
            return;
        };
        let caller = self.caller.clone();
        let outbound = self.outbound.clone();
        let protocol = self.protocol;
        let hub_name = self.hub.name.clone();
        let span = self.invocation_span(&invocation.target, &invocation.headers);
        self.tasks().spawn(
            async move {
                let started = tokio::time::Instant::now();
                let invocation_id = invocation.invocation_id.clone();
                let target = invocation_id
                    .is_none()
                    .then(|| invocation.target.clone());
                let reply = handler(caller, invocation).await;
                drop(permit);
                let outcome = if reply.is_error() { "error" } else { "ok" };
                crate::metrics::invocation(
                    &hub_name,
                    crate::metrics::FALLBACK_METHOD,
                    outcome,
                    Some(started.elapsed()),
                );
                let Some(id) = invocation_id else {
                    if let super::InvocationReply::Error(error) = &reply {
                        tracing::debug!(target_method = target.as_deref().unwrap_or_default(), %error, "non-blocking invocation failed");
                    }
                    return;
                };
                send(&outbound, protocol, HubMessage::Completion(reply.into_completion(id))).await;
            }
            .instrument(span),
        );
    }

    async fn start_stream(&mut self, invocation: StreamInvocation) {
        let StreamInvocation {
            headers,
            invocation_id,
            target,
            arguments,
            stream_ids,
        } = invocation;
        let Some(Resolved::Method(method)) =
            self.method(&target, Some(&invocation_id), false).await
        else {
            return;
        };
        let MethodKind::Stream(handler) = &method.kind else {
            self.complete(Completion::error(
                invocation_id,
                format!("The client attempted to invoke the non-streaming '{target}' method with a streaming invocation."),
            ))
            .await;
            return;
        };
        let handler = handler.clone();
        let token = self.caller.cancellation_token();
        let streams = self.streams();
        let registered = match streams.lock() {
            Ok(mut streams) if !streams.contains_key(&invocation_id) => {
                streams.insert(invocation_id.clone(), token.clone());
                true
            }
            _ => false,
        };
        if !registered {
            self.complete(Completion::error(
                invocation_id.clone(),
                format!("Invocation ID '{invocation_id}' is already in use."),
            ))
            .await;
            return;
        }
        let args = self.open_uploads(stream_ids, arguments);
        let caller = self.caller.with_cancellation(token.clone());
        let outbound = self.outbound.clone();
        let protocol = self.protocol;
        let texts = ErrorTexts {
            detailed: self.hub.options.enable_detailed_errors,
        };
        let hub_name = self.hub.name.clone();
        let span = self.invocation_span(&target, &headers);
        drop(headers);
        self.tasks().spawn(
            async move {
                crate::metrics::invocation(&hub_name, &target.to_lowercase(), "stream", None);
                let completion = match handler(caller, args).await {
                    Err(error) => Completion::error(invocation_id.clone(), texts.text(&target, &error)),
                    Ok(mut items) => loop {
                        tokio::select! {
                            biased;
                            () = token.cancelled() => break Completion::void(invocation_id.clone()),
                            item = items.next() => match item {
                                Some(Ok(item)) => {
                                    let message = HubMessage::StreamItem(StreamItem {
                                        headers: Default::default(),
                                        invocation_id: invocation_id.clone(),
                                        item,
                                    });
                                    if !send(&outbound, protocol, message).await {
                                        break Completion::void(invocation_id.clone());
                                    }
                                }
                                Some(Err(error)) => {
                                    break Completion::error(
                                        invocation_id.clone(),
                                        error.render("An error occurred on the server while streaming results.", texts.detailed),
                                    );
                                }
                                None => break Completion::void(invocation_id.clone()),
                            },
                        }
                    },
                };
                if let Ok(mut streams) = streams.lock() {
                    streams.remove(&invocation_id);
                }
                send(&outbound, protocol, HubMessage::Completion(completion)).await;
            }
            .instrument(span),
        );
    }
}

/// Renders invocation errors inside spawned tasks.
#[derive(Clone, Copy)]
struct ErrorTexts {
    detailed: bool,
}

impl ErrorTexts {
    fn text(self, target: &str, error: &InvokeError) -> String {
        match error {
            InvokeError::Bind(error @ super::BindError::StreamCount { .. }) => {
                format!("{} HubException: {error}", Dispatcher::prefix(target))
            }
            InvokeError::Bind(error) => {
                let prefix = format!("Failed to invoke '{target}' due to an error on the server.");
                if self.detailed {
                    format!("{prefix} InvalidDataException: {error}")
                } else {
                    prefix
                }
            }
            InvokeError::Hub(error) => {
                if !error.is_public() {
                    tracing::warn!(target_method = %target, %error, "hub method failed");
                }
                error.render(&Dispatcher::prefix(target), self.detailed)
            }
        }
    }
}

/// Encodes and queues a message, waiting for room; `false` if the connection is gone.
pub(crate) async fn send(
    outbound: &OutboundSender,
    protocol: Protocol,
    message: HubMessage,
) -> bool {
    match protocol.encode_to_bytes(&message) {
        Ok(frame) => outbound.send(frame).await.is_ok(),
        Err(error) => {
            tracing::error!(%error, "failed to encode a message");
            false
        }
    }
}
