//! The caller of a hub method (SignalR's `HubCallerContext` plus `Clients` and `Groups`).

use std::sync::Arc;
use std::sync::atomic::{AtomicU8, AtomicU64, Ordering};

use signalbox_protocol::{Protocol, TransportType};
use tokio_util::sync::CancellationToken;

use super::clients::{CallerClients, Groups, HubClients};
use crate::auth::Principal;
use crate::connection::{AuthCell, HttpRequestInfo};
use crate::context::HubContext;

/// Who is calling: the connection, its user and the request that opened it, with access to
/// clients and groups. Cheap to clone.
///
/// With authentication refresh ([`ConnectionOptions::enable_authentication_refresh`](crate::ConnectionOptions::enable_authentication_refresh)),
/// the connection's principal may be replaced while it runs (never by another user's): each
/// invocation gets a caller holding the principal current when it started, and a clone takes the
/// principal current at that moment. [`Caller::current_principal`] always reads the latest.
pub struct Caller {
    inner: Arc<CallerInner>,
    cancellation: Option<CancellationToken>,
    /// The principal when this caller was made (see [`Caller::principal`]).
    principal: Option<Principal>,
}

impl Clone for Caller {
    /// A caller with the connection's current principal.
    fn clone(&self) -> Self {
        Self {
            inner: self.inner.clone(),
            cancellation: self.cancellation.clone(),
            principal: self.current_principal(),
        }
    }
}

struct CallerInner {
    connection_id: Arc<str>,
    /// The replaceable principal, when authentication refresh is enabled.
    auth: Option<Arc<AuthCell>>,
    user_id: Option<Arc<str>>,
    request: Arc<HttpRequestInfo>,
    transport: TransportType,
    protocol: Protocol,
    context: HubContext,
    abort: CancellationToken,
    /// Why the connection closes, once something closed it (a [`CloseReason`]; 0 before).
    close_reason: AtomicU8,
    /// When the client last sent something, in the hub heartbeat's milliseconds (0: not yet).
    last_received: AtomicU64,
}

/// Why a connection is closed by the server side: decides what the client is told.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[repr(u8)]
pub(crate) enum CloseReason {
    /// Hub code called [`Caller::abort`]: the client is told not to reconnect.
    Hub = 1,
    /// The client sent nothing within the client timeout.
    ClientTimeout = 2,
    /// The connection's token expired.
    AuthenticationExpired = 3,
    /// The server is shutting down.
    Shutdown = 4,
}

impl CloseReason {
    fn from_u8(value: u8) -> Option<Self> {
        match value {
            1 => Some(Self::Hub),
            2 => Some(Self::ClientTimeout),
            3 => Some(Self::AuthenticationExpired),
            4 => Some(Self::Shutdown),
            _ => None,
        }
    }
}

impl std::fmt::Debug for Caller {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Caller")
            .field("connection_id", &self.inner.connection_id)
            .field("user_id", &self.inner.user_id)
            .field("transport", &self.inner.transport)
            .field("protocol", &self.inner.protocol)
            .finish_non_exhaustive()
    }
}

impl Caller {
    #[allow(clippy::too_many_arguments)]
    pub(crate) fn new(
        connection_id: Arc<str>,
        principal: Option<Principal>,
        auth: Option<Arc<AuthCell>>,
        user_id: Option<Arc<str>>,
        request: Arc<HttpRequestInfo>,
        transport: TransportType,
        protocol: Protocol,
        context: HubContext,
        abort: CancellationToken,
    ) -> Self {
        let principal = match &auth {
            Some(auth) => auth.get(),
            None => principal,
        };
        Self {
            inner: Arc::new(CallerInner {
                connection_id,
                auth,
                user_id,
                request,
                transport,
                protocol,
                context,
                abort,
                close_reason: AtomicU8::new(0),
                last_received: AtomicU64::new(0),
            }),
            cancellation: None,
            principal,
        }
    }

    /// This caller, for one invocation that can be cancelled.
    pub(crate) fn with_cancellation(&self, token: CancellationToken) -> Self {
        Self {
            inner: self.inner.clone(),
            cancellation: Some(token),
            principal: self.current_principal(),
        }
    }

    /// Cancelled when the client cancels this streaming invocation (CancelInvocation) or the
    /// connection closes. For non-streaming invocations it is cancelled when the connection closes.
    pub fn cancellation_token(&self) -> CancellationToken {
        match &self.cancellation {
            Some(token) => token.clone(),
            None => self.inner.abort.child_token(),
        }
    }

    /// The public connection id (`Context.ConnectionId`).
    pub fn connection_id(&self) -> &str {
        &self.inner.connection_id
    }

    /// The user id (`Context.UserIdentifier`), from the configured claim.
    pub fn user_id(&self) -> Option<&str> {
        self.inner.user_id.as_deref()
    }

    /// The connection id as the hub keeps it: for tables of connections, which then share it
    /// instead of copying it (every idle connection has an entry in each).
    pub fn shared_connection_id(&self) -> Arc<str> {
        self.inner.connection_id.clone()
    }

    /// The user id as the hub keeps it (see [`Caller::shared_connection_id`]).
    pub fn shared_user_id(&self) -> Option<Arc<str>> {
        self.inner.user_id.clone()
    }

    /// The authenticated principal, if any (`Context.User`): for the caller of an invocation, the
    /// connection's principal when the invocation started (after an authentication refresh, the
    /// new one). See [`Caller::current_principal`] for code that runs across a refresh.
    pub fn principal(&self) -> Option<&Principal> {
        self.principal.as_ref()
    }

    /// The connection's principal right now: differs from [`Caller::principal`] only when an
    /// authentication refresh replaced it since this caller was made (a long-running stream, the
    /// caller of `on_connected`).
    pub fn current_principal(&self) -> Option<Principal> {
        match &self.inner.auth {
            Some(auth) => auth.get(),
            None => self.principal.clone(),
        }
    }

    /// The request that opened the transport.
    pub fn request(&self) -> &HttpRequestInfo {
        &self.inner.request
    }

    /// The transport in use.
    pub fn transport(&self) -> TransportType {
        self.inner.transport
    }

    /// The hub protocol in use.
    pub fn protocol(&self) -> Protocol {
        self.inner.protocol
    }

    /// Recipients, including the caller-relative ones.
    pub fn clients(&self) -> CallerClients {
        CallerClients::new(
            self.inner.context.clients(),
            self.inner.connection_id.clone(),
        )
    }

    /// Recipients (same as [`HubContext::clients`]).
    pub fn hub_clients(&self) -> HubClients {
        self.inner.context.clients()
    }

    /// Group membership.
    pub fn groups(&self) -> Groups {
        self.inner.context.groups()
    }

    /// A handle usable outside this call.
    pub fn context(&self) -> &HubContext {
        &self.inner.context
    }

    /// Closes this connection (`Context.Abort()`); the client is told not to reconnect.
    pub fn abort(&self) {
        self.close(CloseReason::Hub);
    }

    /// Closes the connection for `reason`; the first reason given is the one that counts.
    pub(crate) fn close(&self, reason: CloseReason) {
        let _ = self.inner.close_reason.compare_exchange(
            0,
            reason as u8,
            Ordering::AcqRel,
            Ordering::Acquire,
        );
        self.inner.abort.cancel();
    }

    /// Why the server side closed the connection, if it did.
    pub(crate) fn close_reason(&self) -> Option<CloseReason> {
        CloseReason::from_u8(self.inner.close_reason.load(Ordering::Acquire))
    }

    /// Whether the connection is closing (for any reason, the transport's included).
    pub(crate) fn is_closing(&self) -> bool {
        self.inner.abort.is_cancelled()
    }

    /// Records that the client sent something at `at` (the hub heartbeat's clock).
    pub(crate) fn mark_received(&self, at: u64) {
        self.inner.last_received.store(at.max(1), Ordering::Relaxed);
    }

    /// When the client last sent something (the hub heartbeat's clock), if it did.
    pub(crate) fn last_received(&self) -> Option<u64> {
        Some(self.inner.last_received.load(Ordering::Relaxed)).filter(|&at| at != 0)
    }

    /// When the connection's current token expires: after an authentication refresh, the new
    /// token's (in milliseconds since the Unix epoch).
    pub(crate) fn refreshed_expiry(&self) -> Option<Option<u64>> {
        self.inner.auth.as_ref().map(|auth| auth.expires_at())
    }

    /// The same connection with no principal or invocation of its own: what the heartbeat keeps.
    pub(crate) fn detached(&self) -> Self {
        Self {
            inner: self.inner.clone(),
            cancellation: None,
            principal: None,
        }
    }

    /// Resolves when the connection is closing.
    pub async fn closed(&self) {
        self.inner.abort.cancelled().await;
    }
}
