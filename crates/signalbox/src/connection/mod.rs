//! The HTTP connection layer: negotiate, the connection table and the transports. It moves bytes
//! and knows nothing of hub messages (TransportProtocols.md; SignalR's `Http.Connections`).

pub(crate) mod endpoint;
mod forward;
mod id;
pub(crate) mod manager;
mod node_directory;
pub(crate) mod outbound;
mod raw;
pub(crate) mod refresh;
mod refresh_error;
mod request;
pub(crate) mod resume;
mod token;
mod transport;

use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, RwLock};
use std::time::UNIX_EPOCH;

use bytes::Bytes;
use futures_util::stream::BoxStream;
use signalbox_protocol::TransportType;

use crate::auth::Principal;

pub use node_directory::{ClusterNode, NodeDirectory};
pub use raw::{ConnectionEndpoint, RawConnection};
pub use refresh_error::RefreshError;
pub use request::{HttpRequestInfo, redact_query};
#[doc(hidden)]
pub use transport::fuzz_frames as __fuzz_websocket_frames;

/// A transport connection handed to the hub layer: inbound byte chunks (not aligned with
/// messages), and an outbound queue of frames each holding whole messages only.
pub(crate) struct Connection {
    /// Public connection id.
    pub(crate) id: Arc<str>,
    pub(crate) transport: TransportType,
    pub(crate) principal: Option<Principal>,
    /// The replaceable principal, when authentication refresh is enabled (see [`AuthCell`]).
    pub(crate) auth: Option<Arc<AuthCell>>,
    pub(crate) request: Arc<HttpRequestInfo>,
    /// Bytes from the client; ends when the client is gone.
    pub(crate) inbound: BoxStream<'static, Bytes>,
    /// Frames to the client; the transport ends once every sender is dropped.
    pub(crate) outbound: outbound::OutboundSender,
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

/// The principal of one connection, replaceable by an authentication refresh
/// (`POST {hub}/refresh`). One per connection, allocated only when
/// [`ConnectionOptions::enable_authentication_refresh`](crate::ConnectionOptions) is on; shared by
/// the connection table entry, the hub caller and the lifetime manager's handle.
#[derive(Debug)]
pub(crate) struct AuthCell {
    principal: RwLock<Option<Principal>>,
    /// When the current principal's token expires, in milliseconds since the Unix epoch (0: it
    /// does not): what the hub's heartbeat compares against, without taking the lock.
    expires_at: AtomicU64,
}

/// `principal`'s expiry in milliseconds since the Unix epoch; 0 when it has none.
pub(crate) fn expiry_millis(principal: Option<&Principal>) -> u64 {
    principal
        .and_then(Principal::expires_at)
        .and_then(|at| at.duration_since(UNIX_EPOCH).ok())
        .map_or(0, |at| {
            u64::try_from(at.as_millis()).unwrap_or(u64::MAX).max(1)
        })
}

impl AuthCell {
    pub(crate) fn new(principal: Option<Principal>) -> Self {
        Self {
            expires_at: AtomicU64::new(expiry_millis(principal.as_ref())),
            principal: RwLock::new(principal),
        }
    }

    /// The current principal.
    pub(crate) fn get(&self) -> Option<Principal> {
        match self.principal.read() {
            Ok(principal) => principal.clone(),
            Err(poisoned) => poisoned.into_inner().clone(),
        }
    }

    /// When the current principal's token expires (milliseconds since the Unix epoch), if it does.
    pub(crate) fn expires_at(&self) -> Option<u64> {
        Some(self.expires_at.load(Ordering::Acquire)).filter(|&at| at != 0)
    }

    /// Replaces the principal with `new`, which must have the same user id: a refresh never
    /// changes the user (an anonymous connection cannot become an authenticated one either).
    pub(crate) fn refresh(&self, new: Principal) -> Result<(), RefreshError> {
        let mut current = match self.principal.write() {
            Ok(current) => current,
            Err(poisoned) => poisoned.into_inner(),
        };
        match current.as_ref() {
            Some(old) if old.user_id() == new.user_id() => {}
            _ => return Err(RefreshError::PermissionChangeRejected),
        }
        self.expires_at
            .store(expiry_millis(Some(&new)), Ordering::Release);
        *current = Some(new);
        Ok(())
    }
}
