//! Options for hubs and for the HTTP connection layer, with the ASP.NET Core SignalR defaults.

use std::time::Duration;

use signalbox_protocol::{Protocol, TransportType};

/// Per-hub options (ASP.NET Core `HubOptions`).
#[derive(Debug, Clone)]
pub struct HubOptions {
    /// Interval between server pings. Defaults to 15 seconds.
    pub keep_alive_interval: Duration,
    /// A client that sent nothing for this long (counted from its first message) is closed.
    /// Defaults to 30 seconds.
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
    pub invocation_rate_limit: Option<crate::hub::RateLimit>,
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

/// Options of the HTTP connection layer of one hub endpoint (ASP.NET Core
/// `HttpConnectionDispatcherOptions`).
#[derive(Debug, Clone)]
pub struct ConnectionOptions {
    /// Transports offered, in the order clients should try them. Defaults to WebSockets,
    /// Server-Sent Events and long polling.
    pub transports: Vec<TransportType>,
    /// Lowest negotiate version accepted. Defaults to 0.
    pub minimum_negotiate_version: u32,
    /// A negotiated connection that no transport picks up within this time is discarded.
    /// Defaults to 15 seconds.
    pub disconnect_timeout: Duration,
    /// WebSocket read buffer per connection, in bytes: allocated for each connection's whole life,
    /// and the most read from the socket at once. Defaults to 1 KiB (tungstenite's own default is
    /// 128 KiB): clients of notification hubs mostly send small messages, and a larger message is
    /// read in several reads into a buffer that grows to fit it.
    pub websocket_read_buffer_size: usize,
    /// WebSocket write buffer per connection, in bytes. Defaults to 4 KiB.
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
    /// comes back with a fresh token. Defaults to `false`.
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
    /// self-describing, so a WebSocket may connect to any node, not only the one that negotiated
    /// (no sticky sessions for WebSockets; SSE and long polling still need them). Tokens are
    /// accepted on other nodes for `disconnect_timeout` after negotiate. Defaults to `None`.
    pub connection_token_secret: Option<std::sync::Arc<[u8]>>,
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
        }
    }
}
