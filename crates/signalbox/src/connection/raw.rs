//! Raw connections: the transports without the hub protocol, for endpoints that handle bytes
//! themselves (SignalR's `ConnectionHandler`, e.g. the functional tests' echo endpoint).

use std::future::Future;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};

use axum::Router;
use bytes::Bytes;
use futures_util::StreamExt;
use futures_util::future::{BoxFuture, FutureExt};
use futures_util::stream::BoxStream;
use signalbox_protocol::TransportType;
use tokio_util::sync::CancellationToken;

use super::endpoint::{self, ConnectionHandler, EndpointSettings};
use super::{Connection, HttpRequestInfo};
use crate::auth::{Authenticator, Policy, Principal, SharedAuthenticator};
use crate::options::ConnectionOptions;

/// One client connection, as bytes in and out. Every chunk sent reaches the client as one
/// WebSocket message, SSE event or long-poll body.
pub struct RawConnection {
    id: Arc<str>,
    transport: TransportType,
    principal: Option<Principal>,
    request: Arc<HttpRequestInfo>,
    inbound: BoxStream<'static, Bytes>,
    outbound: super::outbound::OutboundSender,
    binary: Arc<AtomicBool>,
    supports_binary: bool,
}

impl std::fmt::Debug for RawConnection {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("RawConnection")
            .field("id", &self.id)
            .field("transport", &self.transport)
            .finish_non_exhaustive()
    }
}

impl RawConnection {
    fn new(connection: Connection) -> Self {
        Self {
            id: connection.id,
            transport: connection.transport,
            principal: connection.principal,
            request: connection.request,
            inbound: connection.inbound,
            outbound: connection.outbound,
            binary: connection.binary,
            supports_binary: connection.supports_binary,
        }
    }

    /// The public connection id.
    pub fn id(&self) -> &str {
        &self.id
    }

    /// The transport in use.
    pub fn transport(&self) -> TransportType {
        self.transport
    }

    /// The authenticated principal, if any.
    pub fn principal(&self) -> Option<&Principal> {
        self.principal.as_ref()
    }

    /// The request that opened the transport.
    pub fn request(&self) -> &HttpRequestInfo {
        &self.request
    }

    /// The next chunk from the client; `None` once it is gone.
    pub async fn recv(&mut self) -> Option<Bytes> {
        self.inbound.next().await
    }

    /// Sends a chunk; `false` if the connection is gone.
    pub fn send(&self, data: Bytes) -> impl Future<Output = bool> + Send + 'static {
        let outbound = self.outbound.clone();
        async move { outbound.send(data).await.is_ok() }
    }

    /// Sends binary (instead of text) WebSocket messages from now on, where the transport can.
    pub fn set_binary(&self, binary: bool) {
        self.binary
            .store(binary && self.supports_binary, Ordering::Release);
    }
}

type RawHandler = Arc<dyn Fn(RawConnection) -> BoxFuture<'static, ()> + Send + Sync>;

struct Runner(RawHandler);

impl ConnectionHandler for Runner {
    fn run(self: Arc<Self>, connection: Connection) -> BoxFuture<'static, ()> {
        (self.0)(RawConnection::new(connection))
    }
}

/// An endpoint that runs a handler on raw connections, with negotiate, every transport,
/// authentication and policies like a hub. Mount it with
/// [`HubRouterExt::map_connection`](crate::HubRouterExt::map_connection).
///
/// ```
/// use signalbox::{ConnectionEndpoint, HubRouterExt};
///
/// let echo = ConnectionEndpoint::new(|mut connection| async move {
///     while let Some(data) = connection.recv().await {
///         if !connection.send(data).await {
///             break;
///         }
///     }
/// });
/// let app: axum::Router = axum::Router::new().map_connection("/echo", echo);
/// ```
pub struct ConnectionEndpoint {
    handler: RawHandler,
    auth: Option<SharedAuthenticator>,
    policy: Policy,
    options: ConnectionOptions,
    queue_capacity: usize,
}

impl std::fmt::Debug for ConnectionEndpoint {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ConnectionEndpoint")
            .field("policy", &self.policy)
            .field("options", &self.options)
            .finish_non_exhaustive()
    }
}

impl ConnectionEndpoint {
    /// An anonymous endpoint with default transport options running `handler` per connection.
    pub fn new<F, Fut>(handler: F) -> Self
    where
        F: Fn(RawConnection) -> Fut + Send + Sync + 'static,
        Fut: Future<Output = ()> + Send + 'static,
    {
        Self {
            handler: Arc::new(move |connection| handler(connection).boxed()),
            auth: None,
            policy: Policy::anonymous(),
            options: ConnectionOptions::default(),
            queue_capacity: 1024,
        }
    }

    /// Authenticates requests with `auth`: a [`JwtAuth`](crate::JwtAuth), a
    /// [`SharedAuthenticator`] or any [`Authenticator`].
    pub fn authentication(mut self, auth: impl Authenticator) -> Self {
        self.auth = Some(SharedAuthenticator::new(auth));
        self
    }

    /// Requires `policy` to negotiate and connect.
    pub fn authorize(mut self, policy: Policy) -> Self {
        self.policy = policy;
        self
    }

    /// Replaces the transport options.
    pub fn options(mut self, options: ConnectionOptions) -> Self {
        self.options = options;
        self
    }

    pub(crate) fn mount<S>(self, router: Router<S>, path: &str) -> Router<S>
    where
        S: Clone + Send + Sync + 'static,
    {
        let settings = EndpointSettings {
            auth: self.auth,
            policy: self.policy,
            options: self.options,
            queue_capacity: self.queue_capacity,
            negotiate_redirect: None,
            shutdown: CancellationToken::new(),
        };
        endpoint::mount(router, path, settings, Arc::new(Runner(self.handler)))
    }
}
