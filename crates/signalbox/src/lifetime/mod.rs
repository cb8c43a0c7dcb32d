//! Routing messages to connections: all, groups, users, single connections (SignalR's
//! `HubLifetimeManager`). [`LocalLifetimeManager`] keeps everything in memory; a backplane
//! implements the same trait across nodes.

mod backplane;
mod client_results;
mod local;
mod members;
mod scaled;
mod serialized;

use crate::connection::outbound::{OutboundSender, TrySendError};
use std::fmt;
use std::sync::Arc;

use bytes::Bytes;
use futures_util::future::BoxFuture;
use signalbox_protocol::{Completion, Payload, Protocol};
use tokio_util::sync::CancellationToken;

pub use backplane::{
    Backplane, BackplaneError, BackplaneMessage, BackplaneState, BackplaneStream, MemoryBackplane,
    MemoryBus,
};
pub use client_results::{ClientResultError, ClientResults, PendingGuard};
pub use local::LocalLifetimeManager;
#[doc(hidden)]
pub use scaled::{EnvelopeRoundTrip as __EnvelopeRoundTrip, fuzz_round_trip as __fuzz_envelope};
pub use scaled::{ScaledLifetimeManager, ScaledOptions};
pub use serialized::SerializedMessage;

pub use crate::connection::RefreshError;

use crate::auth::Principal;
use crate::connection::AuthCell;

/// Who a message goes to.
#[derive(Debug, Clone, PartialEq, Eq)]
#[non_exhaustive]
pub enum Target {
    /// Every connection of the hub.
    All,
    /// Every connection except these connection ids.
    AllExcept(Vec<String>),
    /// One connection id.
    Connection(String),
    /// Several connection ids.
    Connections(Vec<String>),
    /// The members of a group.
    Group(String),
    /// The members of several groups (a connection in two of them receives the message twice).
    Groups(Vec<String>),
    /// The members of a group except these connection ids.
    GroupExcept(String, Vec<String>),
    /// Every connection of a user.
    User(String),
    /// Every connection of several users.
    Users(Vec<String>),
}

/// Errors from sending through a lifetime manager.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum SendError {
    /// A group name was empty.
    #[error("group names must not be empty")]
    EmptyGroupName,
    /// The message could not be serialised.
    #[error("the message could not be serialised: {0}")]
    Serialize(String),
    /// The backplane failed.
    #[error("backplane error: {0}")]
    Backplane(String),
}

/// What the lifetime manager knows of one local connection: where to write its frames.
#[derive(Clone)]
pub struct ConnectionHandle {
    id: Arc<str>,
    user_id: Option<Arc<str>>,
    protocol: Protocol,
    outbound: OutboundSender,
    abort: CancellationToken,
    /// The connection's replaceable principal (authentication refresh enabled).
    auth: Option<Arc<AuthCell>>,
}

impl fmt::Debug for ConnectionHandle {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("ConnectionHandle")
            .field("id", &self.id)
            .field("user_id", &self.user_id)
            .field("protocol", &self.protocol)
            .finish_non_exhaustive()
    }
}

impl ConnectionHandle {
    /// A handle that sends straight away.
    pub(crate) fn new(
        id: Arc<str>,
        user_id: Option<Arc<str>>,
        protocol: Protocol,
        outbound: OutboundSender,
        abort: CancellationToken,
    ) -> Self {
        Self {
            id,
            user_id,
            protocol,
            outbound,
            abort,
            auth: None,
        }
    }

    /// This handle, able to apply authentication refreshes to the connection's principal.
    pub(crate) fn with_auth(mut self, auth: Option<Arc<AuthCell>>) -> Self {
        self.auth = auth;
        self
    }

    /// Replaces the connection's principal after an authentication refresh: the same user only.
    /// [`RefreshError::NotFound`] when the connection does not take refreshes.
    pub fn refresh_principal(&self, principal: Principal) -> Result<(), RefreshError> {
        match &self.auth {
            Some(auth) => auth.refresh(principal),
            None => Err(RefreshError::NotFound),
        }
    }

    /// The public connection id.
    pub fn id(&self) -> &str {
        &self.id
    }

    /// The connection id, shared rather than copied.
    pub(crate) fn shared_id(&self) -> Arc<str> {
        self.id.clone()
    }

    /// The user id, shared rather than copied.
    pub(crate) fn shared_user_id(&self) -> Option<Arc<str>> {
        self.user_id.clone()
    }

    /// The connection's user id, if authenticated.
    pub fn user_id(&self) -> Option<&str> {
        self.user_id.as_deref()
    }

    /// The connection's hub protocol.
    pub fn protocol(&self) -> Protocol {
        self.protocol
    }

    /// Queues a frame without waiting. A full queue marks the connection as a slow consumer and
    /// closes it; a closed one means the connection is gone. Returns whether the frame was queued.
    ///
    /// (While its handshake completes, a hub connection's queue holds what is sent to it until
    /// the handshake response is queued ahead of it; held frames count against the queue's
    /// capacity.)
    pub fn try_send(&self, frame: Bytes) -> bool {
        match self.outbound.try_send(frame) {
            Ok(()) => true,
            Err(TrySendError::Full) => {
                self.close_slow("outbound queue full; closing slow connection");
                false
            }
            Err(TrySendError::Closed) => false,
        }
    }

    /// Counts a dropped frame and closes the connection as a slow consumer.
    fn close_slow(&self, why: &'static str) {
        crate::metrics::queue_drop();
        tracing::warn!(target: "signalbox::hub", connection_id = %self.id, "{why}");
        self.abort.cancel();
    }

    /// Sends a serialised message in this connection's protocol.
    pub fn send_message(&self, message: &SerializedMessage) -> bool {
        match message.bytes(self.protocol) {
            Some(frame) => self.try_send(frame),
            None => false,
        }
    }

    /// Asks the connection to close.
    pub fn abort(&self) {
        self.abort.cancel();
    }
}

/// Routes messages to connections and keeps group and user membership.
pub trait HubLifetimeManager: Send + Sync + 'static {
    /// A connection finished its handshake on this node.
    fn on_connected(&self, connection: ConnectionHandle) -> BoxFuture<'_, ()>;
    /// A connection of this node ended; it leaves all its groups.
    fn on_disconnected<'a>(&'a self, connection_id: &'a str) -> BoxFuture<'a, ()>;
    /// Sends a message to a target.
    fn send(
        &self,
        target: Target,
        message: Arc<SerializedMessage>,
    ) -> BoxFuture<'_, Result<(), SendError>>;
    /// Adds a connection to a group (idempotent; unknown connections are ignored).
    fn add_to_group<'a>(
        &'a self,
        connection_id: &'a str,
        group: &'a str,
    ) -> BoxFuture<'a, Result<(), SendError>>;
    /// Removes a connection from a group (idempotent).
    fn remove_from_group<'a>(
        &'a self,
        connection_id: &'a str,
        group: &'a str,
    ) -> BoxFuture<'a, Result<(), SendError>>;
    /// Asks a connection to close, wherever it is.
    fn abort_connection<'a>(&'a self, connection_id: &'a str) -> BoxFuture<'a, ()>;
    /// Invokes a client method on one connection and waits for its result (client results).
    fn invoke_client(
        &self,
        connection_id: String,
        target: String,
        arguments: Vec<Payload>,
    ) -> BoxFuture<'_, Result<Payload, ClientResultError>>;
    /// A Completion from a local connection that may answer an `invoke_client`; returns whether it
    /// did.
    fn on_client_completion(&self, connection_id: &str, completion: Completion) -> bool;
    /// Ids of the connections on this node.
    fn local_connection_ids(&self) -> Vec<String>;
    /// The number of connections on this node, without listing them. The default counts
    /// [`local_connection_ids`](Self::local_connection_ids); managers override it with a cheaper
    /// count.
    fn connection_count(&self) -> usize {
        self.local_connection_ids().len()
    }
    /// Applies an authentication refresh to a connection of *another* node (the refresh endpoint
    /// applies it itself to connections of this node): the node holding `connection_id` replaces
    /// its principal with `principal` (already authenticated and authorized by the caller) if the
    /// user is the same. The default, right for a single node, answers [`RefreshError::NotFound`].
    fn refresh_connection(
        &self,
        connection_id: String,
        principal: Principal,
    ) -> BoxFuture<'_, Result<(), RefreshError>> {
        let _ = (connection_id, principal);
        Box::pin(std::future::ready(Err(RefreshError::NotFound)))
    }
}
