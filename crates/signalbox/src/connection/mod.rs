//! The HTTP connection layer: negotiate, the connection table and the transports. It moves bytes
//! and knows nothing of hub messages (TransportProtocols.md; SignalR's `Http.Connections`).

pub(crate) mod endpoint;
mod id;
pub(crate) mod manager;
mod raw;
mod request;
pub(crate) mod resume;
mod token;
mod transport;

use std::sync::Arc;
use std::sync::atomic::AtomicBool;

use bytes::Bytes;
use futures_util::stream::BoxStream;
use signalbox_protocol::TransportType;
use tokio::sync::mpsc;

use crate::auth::Principal;

pub use raw::{ConnectionEndpoint, RawConnection};
pub use request::{HttpRequestInfo, redact_query};

/// A transport connection handed to the hub layer: inbound byte chunks (not aligned with
/// messages), and an outbound queue of frames each holding whole messages only.
pub(crate) struct Connection {
    /// Public connection id.
    pub(crate) id: Arc<str>,
    pub(crate) transport: TransportType,
    pub(crate) principal: Option<Principal>,
    pub(crate) request: Arc<HttpRequestInfo>,
    /// Bytes from the client; ends when the client is gone.
    pub(crate) inbound: BoxStream<'static, Bytes>,
    /// Frames to the client; the transport ends once every sender is dropped.
    pub(crate) outbound: mpsc::Sender<Bytes>,
    /// Set by the hub layer once the protocol is known: send binary frames.
    pub(crate) binary: Arc<AtomicBool>,
    /// Whether the transport can carry binary data.
    pub(crate) supports_binary: bool,
    /// Whether pings and the client timeout apply (not on long polling).
    pub(crate) keep_alive: bool,
    /// Stateful-reconnect state, when negotiated.
    pub(crate) resumable: Option<Arc<resume::Resumable>>,
    /// Cancelled when the transport can no longer deliver (a send timed out, the client left).
    pub(crate) transport_closed: tokio_util::sync::CancellationToken,
}
