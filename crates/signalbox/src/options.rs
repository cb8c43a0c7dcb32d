//! Options for hubs and for the HTTP connection layer, with the ASP.NET Core SignalR defaults.

use std::sync::Arc;
use std::time::Duration;

use signalbox_protocol::{Protocol, TransportType};

use crate::connection::ClusterNode;
use crate::hub::RateLimit;

/// Per-hub options (ASP.NET Core `HubOptions`): start from [`HubOptions::default`] and change
/// what differs with the chainable setters (or assign the public fields).
///
/// ```
/// use std::time::Duration;
/// use signalbox::{Hub, HubOptions};
///
/// let options = HubOptions::default()
///     .enable_detailed_errors(true)
///     .keep_alive_interval(Duration::from_secs(10))
///     .maximum_receive_message_size(64 * 1024);
/// let hub = Hub::builder("chat").options(options).build();
/// assert!(hub.options().enable_detailed_errors);
/// ```
#[derive(Debug, Clone)]
#[non_exhaustive]
pub struct HubOptions {
    /// Interval between server pings. Defaults to 15 seconds.
    pub keep_alive_interval: Duration,
    /// A client that sent nothing for this long (counted from its first message) is closed.
    /// Defaults to 30 seconds. Checked by the hub's heartbeat, once a second (or at this interval
    /// or the keep-alive interval, when shorter), as ASP.NET Core checks it.
    pub client_timeout_interval: Duration,
    /// Time allowed for the handshake. Defaults to 15 seconds.
    pub handshake_timeout: Duration,
    /// Largest hub message a client may send, in bytes; `None` = unlimited. Defaults to 32 KiB.
    pub maximum_receive_message_size: Option<usize>,
    /// Send exception details to clients in errors. Defaults to `false`.
    pub enable_detailed_errors: bool,
    /// Hub invocations one client may run at once. Defaults to 1.
    pub maximum_parallel_invocations_per_client: usize,
    /// Hub protocols accepted. Defaults to JSON and MessagePack.
    pub supported_protocols: Vec<Protocol>,
    /// Frames queued for one connection before it counts as a slow consumer and is closed.
    /// Defaults to 1024.
    pub outbound_queue_capacity: usize,
    /// Items buffered per upload stream before the connection waits for the method to read.
    /// Defaults to 10.
    pub stream_buffer_capacity: usize,
    /// How often one connection may invoke methods; over it, invocations get an error
    /// completion (non-blocking ones are dropped). Defaults to `None` (no limit).
    pub invocation_rate_limit: Option<RateLimit>,
}

impl Default for HubOptions {
    fn default() -> Self {
        Self {
            keep_alive_interval: Duration::from_secs(15),
            client_timeout_interval: Duration::from_secs(30),
            handshake_timeout: Duration::from_secs(15),
            maximum_receive_message_size: Some(32 * 1024),
            enable_detailed_errors: false,
            maximum_parallel_invocations_per_client: 1,
            supported_protocols: Protocol::ALL.to_vec(),
            outbound_queue_capacity: 1024,
            stream_buffer_capacity: 10,
            invocation_rate_limit: None,
        }
    }
}

impl HubOptions {
    /// Sets [`keep_alive_interval`](Self::keep_alive_interval).
    pub fn keep_alive_interval(mut self, keep_alive_interval: Duration) -> Self {
        self.keep_alive_interval = keep_alive_interval;
        self
    }

    /// Sets [`client_timeout_interval`](Self::client_timeout_interval).
    pub fn client_timeout_interval(mut self, client_timeout_interval: Duration) -> Self {
        self.client_timeout_interval = client_timeout_interval;
        self
    }

    /// Sets [`handshake_timeout`](Self::handshake_timeout).
    pub fn handshake_timeout(mut self, handshake_timeout: Duration) -> Self {
        self.handshake_timeout = handshake_timeout;
        self
    }

    /// Sets [`maximum_receive_message_size`](Self::maximum_receive_message_size): a size in bytes,
    /// or `None` for no limit.
    pub fn maximum_receive_message_size(
        mut self,
        maximum_receive_message_size: impl Into<Option<usize>>,
    ) -> Self {
        self.maximum_receive_message_size = maximum_receive_message_size.into();
        self
    }

    /// Sets [`enable_detailed_errors`](Self::enable_detailed_errors).
    pub fn enable_detailed_errors(mut self, enable_detailed_errors: bool) -> Self {
        self.enable_detailed_errors = enable_detailed_errors;
        self
    }

    /// Sets [`maximum_parallel_invocations_per_client`](Self::maximum_parallel_invocations_per_client).
    pub fn maximum_parallel_invocations_per_client(
        mut self,
        maximum_parallel_invocations_per_client: usize,
    ) -> Self {
        self.maximum_parallel_invocations_per_client = maximum_parallel_invocations_per_client;
        self
    }

    /// Sets [`supported_protocols`](Self::supported_protocols).
    pub fn supported_protocols(mut self, supported_protocols: impl Into<Vec<Protocol>>) -> Self {
        self.supported_protocols = supported_protocols.into();
        self
    }

    /// Sets [`outbound_queue_capacity`](Self::outbound_queue_capacity).
    pub fn outbound_queue_capacity(mut self, outbound_queue_capacity: usize) -> Self {
        self.outbound_queue_capacity = outbound_queue_capacity;
        self
    }

    /// Sets [`stream_buffer_capacity`](Self::stream_buffer_capacity).
    pub fn stream_buffer_capacity(mut self, stream_buffer_capacity: usize) -> Self {
        self.stream_buffer_capacity = stream_buffer_capacity;
        self
    }

    /// Sets [`invocation_rate_limit`](Self::invocation_rate_limit): a limit, or `None` for none.
    pub fn invocation_rate_limit(
        mut self,
        invocation_rate_limit: impl Into<Option<RateLimit>>,
    ) -> Self {
        self.invocation_rate_limit = invocation_rate_limit.into();
        self
    }
}

/// Options of the HTTP connection layer of one hub endpoint (ASP.NET Core
/// `HttpConnectionDispatcherOptions`): start from [`ConnectionOptions::default`] and change what
/// differs with the chainable setters (or assign the public fields).
///
/// ```
/// use signalbox::{ConnectionOptions, Hub, TransportType};
///
/// let options = ConnectionOptions::default()
///     .transports([TransportType::WebSockets, TransportType::LongPolling])
///     .allow_stateful_reconnect(true);
/// let hub = Hub::builder("chat").connection_options(options).build();
/// # let _ = hub;
/// ```
#[derive(Debug, Clone)]
#[non_exhaustive]
pub struct ConnectionOptions {
    /// Transports offered, in the order clients should try them. Defaults to WebSockets,
    /// Server-Sent Events and long polling.
    pub transports: Vec<TransportType>,
    /// Lowest negotiate version accepted. Defaults to 0.
    pub minimum_negotiate_version: u32,
    /// A negotiated connection that no transport picks up within this time is discarded.
    /// Defaults to 15 seconds.
    pub disconnect_timeout: Duration,
    /// The most read from a WebSocket at once, in bytes (at most 8 KiB; the read goes to a
    /// buffer on the stack, kept only while a frame is incomplete; stateful-reconnect sockets
    /// keep tungstenite's read buffer of this size for their whole life). Defaults to 1 KiB:
    /// clients of notification hubs mostly send small messages, and a larger message is read in
    /// several reads.
    pub websocket_read_buffer_size: usize,
    /// WebSocket write batch, in bytes: queued frames are written together up to about this
    /// size (the buffer is released once written; stateful-reconnect sockets keep
    /// tungstenite's write buffer of this size). Defaults to 4 KiB.
    pub websocket_write_buffer_size: usize,
    /// Largest WebSocket message accepted, in bytes. Defaults to 1 MiB; hub messages are limited
    /// separately by [`HubOptions::maximum_receive_message_size`].
    pub websocket_max_message_size: usize,
    /// A WebSocket write that does not complete within this time (a client that stopped reading)
    /// closes the connection. Defaults to 10 seconds.
    pub transport_send_timeout: Duration,
    /// Largest POST body (SSE and long polling sends), in bytes. Defaults to 1 MiB.
    pub max_request_body_size: usize,
    /// How long a long poll waits for data before answering 200 with no content. Defaults to
    /// 90 seconds.
    pub long_poll_timeout: Duration,
    /// Offer stateful reconnect to clients that ask for it. Defaults to `false`.
    pub allow_stateful_reconnect: bool,
    /// Unacknowledged bytes kept per stateful connection for replay; past it, sends wait for acks.
    /// Defaults to 100,000.
    pub stateful_reconnect_buffer_size: usize,
    /// Close a connection (with `allowReconnect`) when its token's `exp` passes, so the client
    /// comes back with a fresh token. Checked by the hub's heartbeat, once a second. Defaults to
    /// `false`.
    pub close_on_authentication_expiration: bool,
    /// Let clients replace a connection's token without reconnecting (ASP.NET Core 11
    /// `EnableAuthenticationRefresh`): negotiate answers carry `tokenLifetimeSeconds` (seconds
    /// until the token's `exp`), and `POST {hub}/refresh?id={connectionToken}` with a new token in
    /// the `Authorization` header (a query `access_token` is not accepted there) replaces the
    /// connection's principal: what [`Caller::principal`](crate::Caller::principal) returns to later
    /// invocations and what method policies check. The new token must be for the same user and
    /// pass the hub's policy. With [`close_on_authentication_expiration`](Self::close_on_authentication_expiration)
    /// the connection then closes at the new token's `exp`. Works across nodes with a backplane
    /// (the refresh is forwarded to the node holding the connection) when
    /// [`connection_token_secret`](Self::connection_token_secret) is set. Connections negotiated
    /// with version 0 cannot be refreshed. Defaults to `false`.
    pub enable_authentication_refresh: bool,
    /// A secret shared by every node of a cluster. With it, connection tokens are signed and
    /// self-describing, so a WebSocket may connect to any node, not only the one that negotiated.
    /// A WebSocket's token is accepted on other nodes for `disconnect_timeout` after negotiate.
    /// With [`cluster_node`](Self::cluster_node) set too, Server-Sent Events and long polling need
    /// no sticky sessions either. Defaults to `None`.
    pub connection_token_secret: Option<Arc<[u8]>>,
    /// This node and where the others are. With
    /// [`connection_token_secret`](Self::connection_token_secret), tokens name the node that
    /// negotiated, and the requests of Server-Sent Events and long polling (the event stream, each
    /// poll, each send, the closing `DELETE`) that reach another node are forwarded to it over
    /// HTTP, so a load balancer may spread them over the nodes. Defaults to `None`: such requests
    /// must reach the negotiating node (sticky sessions).
    pub cluster_node: Option<ClusterNode>,
}

impl Default for ConnectionOptions {
    fn default() -> Self {
        Self {
            transports: vec![
                TransportType::WebSockets,
                TransportType::ServerSentEvents,
                TransportType::LongPolling,
            ],
            minimum_negotiate_version: 0,
            disconnect_timeout: Duration::from_secs(15),
            websocket_read_buffer_size: 1024,
            websocket_write_buffer_size: 4 * 1024,
            websocket_max_message_size: 1024 * 1024,
            transport_send_timeout: Duration::from_secs(10),
            max_request_body_size: 1024 * 1024,
            long_poll_timeout: Duration::from_secs(90),
            allow_stateful_reconnect: false,
            stateful_reconnect_buffer_size: 100_000,
            close_on_authentication_expiration: false,
            enable_authentication_refresh: false,
            connection_token_secret: None,
            cluster_node: None,
        }
    }
}

impl ConnectionOptions {
    /// Sets [`transports`](Self::transports), in the order clients should try them.
    pub fn transports(mut self, transports: impl Into<Vec<TransportType>>) -> Self {
        self.transports = transports.into();
        self
    }

    /// Sets [`minimum_negotiate_version`](Self::minimum_negotiate_version).
    pub fn minimum_negotiate_version(mut self, minimum_negotiate_version: u32) -> Self {
        self.minimum_negotiate_version = minimum_negotiate_version;
        self
    }

    /// Sets [`disconnect_timeout`](Self::disconnect_timeout).
    pub fn disconnect_timeout(mut self, disconnect_timeout: Duration) -> Self {
        self.disconnect_timeout = disconnect_timeout;
        self
    }

    /// Sets [`websocket_read_buffer_size`](Self::websocket_read_buffer_size).
    pub fn websocket_read_buffer_size(mut self, websocket_read_buffer_size: usize) -> Self {
        self.websocket_read_buffer_size = websocket_read_buffer_size;
        self
    }

    /// Sets [`websocket_write_buffer_size`](Self::websocket_write_buffer_size).
    pub fn websocket_write_buffer_size(mut self, websocket_write_buffer_size: usize) -> Self {
        self.websocket_write_buffer_size = websocket_write_buffer_size;
        self
    }

    /// Sets [`websocket_max_message_size`](Self::websocket_max_message_size).
    pub fn websocket_max_message_size(mut self, websocket_max_message_size: usize) -> Self {
        self.websocket_max_message_size = websocket_max_message_size;
        self
    }

    /// Sets [`transport_send_timeout`](Self::transport_send_timeout).
    pub fn transport_send_timeout(mut self, transport_send_timeout: Duration) -> Self {
        self.transport_send_timeout = transport_send_timeout;
        self
    }

    /// Sets [`max_request_body_size`](Self::max_request_body_size).
    pub fn max_request_body_size(mut self, max_request_body_size: usize) -> Self {
        self.max_request_body_size = max_request_body_size;
        self
    }

    /// Sets [`long_poll_timeout`](Self::long_poll_timeout).
    pub fn long_poll_timeout(mut self, long_poll_timeout: Duration) -> Self {
        self.long_poll_timeout = long_poll_timeout;
        self
    }

    /// Sets [`allow_stateful_reconnect`](Self::allow_stateful_reconnect).
    pub fn allow_stateful_reconnect(mut self, allow_stateful_reconnect: bool) -> Self {
        self.allow_stateful_reconnect = allow_stateful_reconnect;
        self
    }

    /// Sets [`stateful_reconnect_buffer_size`](Self::stateful_reconnect_buffer_size).
    pub fn stateful_reconnect_buffer_size(mut self, stateful_reconnect_buffer_size: usize) -> Self {
        self.stateful_reconnect_buffer_size = stateful_reconnect_buffer_size;
        self
    }

    /// Sets [`close_on_authentication_expiration`](Self::close_on_authentication_expiration).
    pub fn close_on_authentication_expiration(
        mut self,
        close_on_authentication_expiration: bool,
    ) -> Self {
        self.close_on_authentication_expiration = close_on_authentication_expiration;
        self
    }

    /// Sets [`enable_authentication_refresh`](Self::enable_authentication_refresh).
    pub fn enable_authentication_refresh(mut self, enable_authentication_refresh: bool) -> Self {
        self.enable_authentication_refresh = enable_authentication_refresh;
        self
    }

    /// Sets [`connection_token_secret`](Self::connection_token_secret): the cluster's shared secret,
    /// or `None` for unsigned tokens.
    pub fn connection_token_secret(
        mut self,
        connection_token_secret: impl Into<Option<Arc<[u8]>>>,
    ) -> Self {
        self.connection_token_secret = connection_token_secret.into();
        self
    }

    /// Sets [`cluster_node`](Self::cluster_node): this node and the directory of the others.
    pub fn cluster_node(mut self, cluster_node: impl Into<Option<ClusterNode>>) -> Self {
        self.cluster_node = cluster_node.into();
        self
    }
}
