//! The HTTP endpoint of one connection handler (a hub, or a raw handler): `POST {path}/negotiate`,
//! `GET {path}` (WebSocket upgrade, SSE, long poll), `POST {path}` (send) and `DELETE {path}`
//! (SignalR's `HttpConnectionDispatcher`). It knows nothing of hubs: what runs on a connection is
//! a [`ConnectionHandler`].

use std::sync::Arc;
use tracing::Instrument as _;

use axum::Router;
use axum::body::Body;
use axum::extract::ws::WebSocketUpgrade;
use axum::extract::{FromRequestParts, Request, State};
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use http::header::{ACCEPT, CONTENT_TYPE, UPGRADE, WWW_AUTHENTICATE};
use http::{HeaderMap, HeaderValue, StatusCode, Uri};
use signalbox_protocol::{
    AvailableTransport, NegotiateError, NegotiateRedirect, NegotiateResponse, TransferFormat,
    TransportType, select_negotiate_version,
};

use super::forward::{self, Forwarder};
use super::manager::{AttachError, Attached, ConnectionEntry, ConnectionManager, ConnectionState};
use super::transport::websocket::{self, WebSocketSession};
use super::transport::websocket_driver::DriverLimits;
use super::transport::websocket_upgrade;
use super::transport::{long_polling, sse};
use super::{Connection, HttpRequestInfo, RefreshError};
use futures_util::future::{BoxFuture, Either, FutureExt as _};
use tokio_util::sync::CancellationToken;

use crate::auth::{AuthError, AuthRequest, Policy, Principal, SharedAuthenticator};
use crate::options::ConnectionOptions;

/// What runs on a connection once a transport is attached: a hub, or a raw handler. The one seam
/// between this layer and the layer above it.
pub(crate) trait ConnectionHandler: Send + Sync + 'static {
    /// Runs the connection until it ends.
    fn run(self: Arc<Self>, connection: Connection) -> BoxFuture<'static, ()>;

    /// Forwards an authentication refresh to the node holding the connection (see `refresh.rs`).
    /// By default no other node is asked.
    fn refresh_remote(
        &self,
        connection_id: String,
        principal: Principal,
    ) -> BoxFuture<'_, Result<(), RefreshError>> {
        super::refresh::not_forwarded(connection_id, principal)
    }
}

/// Decides whether a negotiate request is redirected elsewhere (`{"url": …, "accessToken": …}`).
pub(crate) type NegotiateRedirectHook =
    Arc<dyn Fn(&HttpRequestInfo) -> Option<NegotiateRedirect> + Send + Sync>;

/// Authentication, authorization and transport settings of one endpoint.
pub(crate) struct EndpointSettings {
    pub(crate) auth: Option<SharedAuthenticator>,
    pub(crate) policy: Policy,
    pub(crate) options: ConnectionOptions,
    /// Frames queued for one connection before it counts as a slow consumer.
    pub(crate) queue_capacity: usize,
    pub(crate) negotiate_redirect: Option<NegotiateRedirectHook>,
    /// Cancelled when the endpoint stops taking connections.
    pub(crate) shutdown: CancellationToken,
}

/// The state shared by the routes of one endpoint.
struct Endpoint {
    settings: EndpointSettings,
    handler: Arc<dyn ConnectionHandler>,
    manager: Arc<ConnectionManager>,
    /// Passes requests for connections of other nodes on to them (with a cluster node and a
    /// connection token secret).
    forwarder: Option<Forwarder>,
    /// Every WebSocket driver's limits (shared: each connection holds a pointer, not a copy).
    driver_limits: Arc<DriverLimits>,
}

/// Adds the routes of an endpoint running `handler` on each connection: `POST {path}/negotiate`,
/// `POST {path}/refresh` and the transports at `{path}`.
pub(crate) fn mount<S>(
    router: Router<S>,
    path: &str,
    settings: EndpointSettings,
    handler: Arc<dyn ConnectionHandler>,
) -> Router<S>
where
    S: Clone + Send + Sync + 'static,
{
    let path = path.trim_end_matches('/');
    let forwarder = match (
        &settings.options.cluster_node,
        &settings.options.connection_token_secret,
    ) {
        (Some(node), Some(_)) => Some(Forwarder::new(node.clone(), settings.shutdown.clone())),
        _ => None,
    };
    let options = &settings.options;
    let driver_limits = Arc::new(DriverLimits {
        read_size: options.websocket_read_buffer_size,
        write_batch: options.websocket_write_buffer_size,
        max_message: options.websocket_max_message_size,
        send_timeout: options.transport_send_timeout,
    });
    let endpoint = Arc::new(Endpoint {
        driver_limits,
        settings,
        handler,
        manager: Arc::new(ConnectionManager::default()),
        forwarder,
    });
    router
        .route(
            &format!("{path}/negotiate"),
            post(negotiate).with_state(endpoint.clone()),
        )
        .route(
            &format!("{path}/refresh"),
            post(refresh).with_state(endpoint.clone()),
        )
        .route(
            if path.is_empty() { "/" } else { path },
            get(connect).post(send).delete(delete).with_state(endpoint),
        )
}

fn text(status: StatusCode, body: &'static str) -> Response {
    (
        status,
        [(CONTENT_TYPE, HeaderValue::from_static("text/plain"))],
        body,
    )
        .into_response()
}

fn json_response<T: serde::Serialize>(value: &T) -> Response {
    match serde_json::to_vec(value) {
        Ok(body) => (
            StatusCode::OK,
            [(CONTENT_TYPE, HeaderValue::from_static("application/json"))],
            body,
        )
            .into_response(),
        Err(error) => {
            tracing::error!(target: "signalbox::transport", %error, "failed to serialise a negotiate response");
            StatusCode::INTERNAL_SERVER_ERROR.into_response()
        }
    }
}

fn query_param(uri: &Uri, key: &str) -> Option<String> {
    form_urlencoded::parse(uri.query()?.as_bytes())
        .find(|(k, _)| k.eq_ignore_ascii_case(key))
        .map(|(_, v)| v.into_owned())
}

impl Endpoint {
    /// Authenticates the request (header, or `access_token` on hub routes) and applies the
    /// endpoint's policy: 401 with an empty body when unauthenticated, 403 when the policy fails.
    #[allow(clippy::result_large_err)]
    async fn authorize(
        &self,
        headers: &HeaderMap,
        uri: &Uri,
    ) -> Result<Option<Principal>, Response> {
        let mut invalid = false;
        let principal = match &self.settings.auth {
            Some(auth) => match auth
                .authenticate(AuthRequest::new(headers).with_query(uri.query()))
                .await
            {
                Ok(principal) => Some(principal),
                Err(AuthError::Missing) => None,
                Err(error) => {
                    crate::metrics::auth_failure(error.reason());
                    tracing::debug!(target: "signalbox::transport", reason = error.reason(), "bearer token rejected");
                    invalid = true;
                    None
                }
            },
            None => None,
        };
        if self.settings.policy.is_satisfied_by(principal.as_ref()) {
            return Ok(principal);
        }
        if principal.is_some() {
            crate::metrics::auth_failure("forbidden");
            return Err(StatusCode::FORBIDDEN.into_response());
        }
        if !invalid {
            crate::metrics::auth_failure("missing");
        }
        let challenge = if invalid {
            HeaderValue::from_static("Bearer error=\"invalid_token\"")
        } else {
            HeaderValue::from_static("Bearer")
        };
        Err((
            StatusCode::UNAUTHORIZED,
            [(WWW_AUTHENTICATE, challenge)],
            Body::empty(),
        )
            .into_response())
    }

    /// A WebSocket for a token this node does not know: accepted when the token was signed with the
    /// cluster's shared secret (negotiated on another node) and is recent.
    fn adopt(&self, token: &str) -> Option<Arc<ConnectionEntry>> {
        let secret = self.settings.options.connection_token_secret.as_deref()?;
        let id = super::token::verify(secret, token, self.settings.options.disconnect_timeout)?;
        tracing::debug!(target: "signalbox::transport", connection_id = %id, "accepting a connection negotiated on another node");
        Some(
            self.manager
                .adopt(id, token.to_owned(), TransportType::WebSockets),
        )
    }

    /// Where to pass a request for `token` on to: the forwarder and the owner's id, when this node
    /// does not hold the connection, the token (signed with the cluster's secret) names another
    /// node, and no node forwarded the request already.
    fn owner_elsewhere(&self, token: &str, headers: &HeaderMap) -> Option<(&Forwarder, String)> {
        let forwarder = self.forwarder.as_ref()?;
        if forward::was_forwarded(headers) || self.manager.get(token).is_some() {
            return None;
        }
        let secret = self.settings.options.connection_token_secret.as_deref()?;
        // The signature is what matters, not the token's age: a connection may run for days.
        let owner = super::token::verify_claims(secret, token, std::time::Duration::MAX)?.owner?;
        (owner != forwarder.node_id()).then_some((forwarder, owner))
    }

    /// Forwards `request` (for connection `token`) when another node holds the connection;
    /// otherwise gives it back.
    #[allow(clippy::result_large_err)]
    async fn forward_if_elsewhere(&self, request: Request) -> Result<Response, Request> {
        let Some(token) = query_param(request.uri(), "id") else {
            return Err(request);
        };
        let Some((forwarder, owner)) = self.owner_elsewhere(&token, request.headers()) else {
            return Err(request);
        };
        let timeout = if request.method() == http::Method::GET {
            forward::RESPONSE_TIMEOUT + self.settings.options.long_poll_timeout
        } else {
            forward::RESPONSE_TIMEOUT
        };
        Ok(forwarder.forward(&owner, request, timeout).await)
    }

    fn available_transports(&self) -> Vec<AvailableTransport> {
        self.settings
            .options
            .transports
            .iter()
            .map(|&transport| AvailableTransport {
                transport,
                transfer_formats: match transport {
                    TransportType::ServerSentEvents => vec![TransferFormat::Text],
                    TransportType::WebSockets | TransportType::LongPolling => {
                        vec![TransferFormat::Text, TransferFormat::Binary]
                    }
                },
            })
            .collect()
    }

    fn transport_enabled(&self, transport: TransportType) -> bool {
        self.settings.options.transports.contains(&transport)
    }
}

async fn negotiate(
    State(endpoint): State<Arc<Endpoint>>,
    headers: HeaderMap,
    uri: Uri,
) -> Response {
    if crate::trace::propagator().is_none() {
        return negotiate_in_span(endpoint, headers, uri).await;
    }
    // Traced: a `negotiate` span (a child of the HTTP request's span, when there is one).
    let span = tracing::info_span!(
        target: "signalbox::transport",
        "negotiate",
        otel.name = %format_args!("{} negotiate", uri.path().trim_end_matches("/negotiate")),
        otel.kind = "server",
        rpc.system = "signalr",
        signalr.connection.id = tracing::field::Empty,
    );
    negotiate_in_span(endpoint, headers, uri)
        .instrument(span)
        .await
}

async fn negotiate_in_span(endpoint: Arc<Endpoint>, headers: HeaderMap, uri: Uri) -> Response {
    if endpoint.settings.shutdown.is_cancelled() {
        return text(StatusCode::SERVICE_UNAVAILABLE, "Server is shutting down");
    }
    let principal = match endpoint.authorize(&headers, &uri).await {
        Ok(principal) => principal,
        Err(response) => return response,
    };
    let options = &endpoint.settings.options;
    let requested = query_param(&uri, "negotiateVersion");
    let version =
        match select_negotiate_version(requested.as_deref(), options.minimum_negotiate_version) {
            Ok(version) => version,
            Err(error) => return json_response(&NegotiateError { error }),
        };
    if let Some(redirect) = &endpoint.settings.negotiate_redirect {
        let request = HttpRequestInfo::new(uri.path(), &headers, uri.query());
        if let Some(target) = redirect(&request) {
            return json_response(&target);
        }
    }
    let stateful = options.allow_stateful_reconnect
        && query_param(&uri, "useStatefulReconnect")
            .is_some_and(|v| v.eq_ignore_ascii_case("true"));
    endpoint.manager.ensure_reaper(options.disconnect_timeout);
    let entry = endpoint.manager.create_signed(
        version,
        stateful,
        options.connection_token_secret.as_deref(),
        endpoint.forwarder.as_ref().map(Forwarder::node_id),
    );
    tracing::debug!(target: "signalbox::transport", connection_id = %entry.id, version, stateful, "negotiated");
    tracing::Span::current().record("signalr.connection.id", &*entry.id);
    crate::metrics::negotiated();
    json_response(&NegotiateResponse {
        use_stateful_reconnect: stateful,
        negotiate_version: version,
        connection_id: entry.id.to_string(),
        connection_token: (version >= 1).then(|| entry.token.to_string()),
        available_transports: endpoint.available_transports(),
        token_lifetime_seconds: super::refresh::token_lifetime(options, principal.as_ref()),
    })
}

/// `POST {path}/refresh?id={token}`: authentication refresh (see `refresh.rs`).
async fn refresh(State(endpoint): State<Arc<Endpoint>>, headers: HeaderMap, uri: Uri) -> Response {
    let options = &endpoint.settings.options;
    let target = match super::refresh::find(options, &endpoint.manager, &uri) {
        Ok(target) => target,
        Err(response) => return response,
    };
    // Only the Authorization header counts here: the query (and any access_token) is left out.
    let authorized = endpoint
        .authorize(&headers, &super::refresh::without_query(&uri))
        .await;
    super::refresh::apply(target, authorized, &*endpoint.handler).await
}

fn not_supported(transport: TransportType) -> Response {
    let body = match transport {
        TransportType::WebSockets => "WebSockets transport not supported by this end point type",
        TransportType::ServerSentEvents => {
            "ServerSentEvents transport not supported by this end point type"
        }
        TransportType::LongPolling => "LongPolling transport not supported by this end point type",
    };
    text(StatusCode::NOT_FOUND, body)
}

fn attach_error(error: AttachError) -> Response {
    match error {
        AttachError::NotFound => text(StatusCode::NOT_FOUND, "No Connection with that ID"),
        AttachError::Conflict => text(StatusCode::CONFLICT, "Connection already active"),
        AttachError::TransportMismatch => text(
            StatusCode::BAD_REQUEST,
            "Cannot change transports mid-connection",
        ),
    }
}

/// Runs the handler on a connection until it ends, then removes it from the table.
fn spawn_handler(endpoint: &Arc<Endpoint>, entry: Arc<ConnectionEntry>, connection: Connection) {
    tokio::spawn(run_handler(endpoint.clone(), entry, connection));
}

fn run_handler(
    endpoint: Arc<Endpoint>,
    entry: Arc<ConnectionEntry>,
    connection: Connection,
) -> impl Future<Output = ()> + Send + 'static {
    let connection = super::refresh::track(&endpoint.settings.options, &entry, connection);
    // Started here, not in the block: the block would keep `connection` in its state as well as
    // the handler future it moved into, for the connection's whole life.
    let handler = endpoint.handler.clone().run(connection);
    async move {
        handler.await;
        entry.dispose();
        endpoint.manager.remove(&entry.token);
    }
}

async fn connect(State(endpoint): State<Arc<Endpoint>>, request: Request) -> Response {
    let wants_sse = request
        .headers()
        .get_all(ACCEPT)
        .iter()
        .filter_map(|v| v.to_str().ok())
        .any(|v| v.contains("text/event-stream"));
    let is_upgrade = request
        .headers()
        .get(UPGRADE)
        .and_then(|v| v.to_str().ok())
        .is_some_and(|v| v.eq_ignore_ascii_case("websocket"));
    let transport = if wants_sse {
        TransportType::ServerSentEvents
    } else if is_upgrade {
        TransportType::WebSockets
    } else {
        TransportType::LongPolling
    };
    if !endpoint.transport_enabled(transport) {
        return not_supported(transport);
    }
    // A WebSocket runs wherever it lands; an event stream or a poll runs where the connection is.
    let request = if transport == TransportType::WebSockets {
        request
    } else {
        match endpoint.forward_if_elsewhere(request).await {
            Ok(response) => return response,
            Err(request) => request,
        }
    };
    let (mut parts, _body) = request.into_parts();
    let principal = match endpoint.authorize(&parts.headers, &parts.uri).await {
        Ok(principal) => principal,
        Err(response) => return response,
    };
    let token = query_param(&parts.uri, "id");
    if token.is_none() && transport != TransportType::WebSockets {
        return text(StatusCode::BAD_REQUEST, "Connection ID required");
    }
    let (entry, attached) = match token {
        Some(token) => match endpoint.manager.attach(&token, transport) {
            Ok(attached) => attached,
            Err(AttachError::NotFound) if transport == TransportType::WebSockets => {
                match endpoint.adopt(&token) {
                    Some(entry) => (entry, Attached::First),
                    None => return attach_error(AttachError::NotFound),
                }
            }
            Err(error) => return attach_error(error),
        },
        None => (endpoint.manager.create_active(transport), Attached::First),
    };
    let request_info = Arc::new(HttpRequestInfo::new(
        parts.uri.path(),
        &parts.headers,
        parts.uri.query(),
    ));
    let queue_capacity = endpoint.settings.queue_capacity;
    match (transport, attached) {
        (TransportType::ServerSentEvents, _) => {
            let (connection, response) =
                sse::connect(&entry, principal, request_info, queue_capacity);
            spawn_handler(&endpoint, entry, connection);
            response
        }
        (TransportType::LongPolling, Attached::First) => {
            let (connection, response) =
                long_polling::connect(&entry, principal, request_info, queue_capacity);
            spawn_handler(&endpoint, entry, connection);
            response
        }
        (TransportType::LongPolling, Attached::Again) => {
            long_polling::poll(&entry, endpoint.settings.options.long_poll_timeout).await
        }
        (TransportType::WebSockets, attached) => {
            upgrade_websocket(
                &endpoint,
                &mut parts,
                entry,
                attached,
                principal,
                request_info,
            )
            .await
        }
    }
}

async fn upgrade_websocket(
    endpoint: &Arc<Endpoint>,
    parts: &mut http::request::Parts,
    entry: Arc<ConnectionEntry>,
    attached: Attached,
    principal: Option<Principal>,
    request: Arc<HttpRequestInfo>,
) -> Response {
    if attached == Attached::First && !entry.stateful {
        return websocket_connection(endpoint, parts, entry, principal, request).await;
    }
    let upgrade = match WebSocketUpgrade::from_request_parts(parts, &()).await {
        Ok(upgrade) => upgrade,
        Err(rejection) => {
            if attached == Attached::First {
                endpoint.manager.remove(&entry.token);
            }
            return rejection.into_response();
        }
    };
    let options = &endpoint.settings.options;
    let queue_capacity = endpoint.settings.queue_capacity;
    let buffer_size = options.stateful_reconnect_buffer_size;
    let send_timeout = options.transport_send_timeout;
    let failed_manager = endpoint.manager.clone();
    let failed_token = entry.token.clone();
    let endpoint = endpoint.clone();
    upgrade
        .read_buffer_size(options.websocket_read_buffer_size)
        .write_buffer_size(options.websocket_write_buffer_size)
        .max_message_size(options.websocket_max_message_size)
        .max_write_buffer_size(options.websocket_max_message_size.saturating_mul(4))
        .max_frame_size(options.websocket_max_message_size)
        .on_failed_upgrade(move |error| {
            tracing::debug!(target: "signalbox::transport", %error, "websocket upgrade failed");
            if attached == Attached::First {
                failed_manager.remove(&failed_token);
            }
        })
        .on_upgrade(move |socket| async move {
            if attached == Attached::Again {
                tracing::debug!(target: "signalbox::transport", connection_id = %entry.id, "stateful reconnect");
                websocket::reattach(socket, &entry, queue_capacity, send_timeout);
                return;
            }
            let session = WebSocketSession {
                id: entry.id.clone(),
                principal,
                request,
                queue_capacity,
                send_timeout,
                closed: entry.closed.clone(),
            };
            // The handler runs in a task of its own so that this (larger) upgrade task ends now.
            let connection = websocket::connect_resumable(socket, session, &entry, buffer_size);
            spawn_handler(&endpoint, entry, connection);
        })
}

/// A WebSocket without stateful reconnect: one task runs both the handler and the socket's
/// [`Driver`](super::transport::websocket_driver::Driver).
async fn websocket_connection(
    endpoint: &Arc<Endpoint>,
    parts: &mut http::request::Parts,
    entry: Arc<ConnectionEntry>,
    principal: Option<Principal>,
    request: Arc<HttpRequestInfo>,
) -> Response {
    let accepted = match websocket_upgrade::accept(parts).await {
        Ok(accepted) => accepted,
        Err(response) => {
            endpoint.manager.remove(&entry.token);
            return response;
        }
    };
    let options = &endpoint.settings.options;
    let limits = endpoint.driver_limits.clone();
    let session = WebSocketSession {
        id: entry.id.clone(),
        principal,
        request,
        queue_capacity: endpoint.settings.queue_capacity,
        send_timeout: options.transport_send_timeout,
        closed: entry.closed.clone(),
    };
    let endpoint = endpoint.clone();
    // `then`, not an async block: a block keeps what it captured (the session, the limits) in its
    // state for the connection's whole life, even once they are moved into the driver.
    tokio::spawn(accepted.upgrade.then(move |upgraded| match upgraded {
        Ok(io) => {
            let (connection, driver) = websocket::connect(io, session, limits);
            Either::Left(
                futures_util::future::join(run_handler(endpoint, entry, connection), driver)
                    .map(drop),
            )
        }
        Err(error) => {
            tracing::debug!(target: "signalbox::transport", %error, "websocket upgrade failed");
            endpoint.manager.remove(&entry.token);
            Either::Right(std::future::ready(()))
        }
    }));
    accepted.response
}

async fn send(State(endpoint): State<Arc<Endpoint>>, request: Request) -> Response {
    let request = match endpoint.forward_if_elsewhere(request).await {
        Ok(response) => return response,
        Err(request) => request,
    };
    let (parts, body) = request.into_parts();
    let Some(token) = query_param(&parts.uri, "id") else {
        return text(StatusCode::BAD_REQUEST, "Connection ID required");
    };
    if let Err(response) = endpoint.authorize(&parts.headers, &parts.uri).await {
        return response;
    }
    let Some(entry) = endpoint.manager.get(&token) else {
        return text(StatusCode::NOT_FOUND, "No Connection with that ID");
    };
    if endpoint.manager.state(&token) == Some(ConnectionState::Active(TransportType::WebSockets)) {
        return text(
            StatusCode::METHOD_NOT_ALLOWED,
            "POST requests are not allowed for WebSocket connections.",
        );
    }
    // Data may arrive before the first poll (the official server buffers it too).
    let inbound = entry.inbound().tx.clone();
    let limit = endpoint.settings.options.max_request_body_size;
    let bytes = match axum::body::to_bytes(body, limit).await {
        Ok(bytes) => bytes,
        Err(_) => return text(StatusCode::BAD_REQUEST, "Invalid or oversized request body"),
    };
    if inbound.send(bytes).await.is_err() {
        return text(StatusCode::NOT_FOUND, "No Connection with that ID");
    }
    text(StatusCode::OK, "")
}

async fn delete(State(endpoint): State<Arc<Endpoint>>, request: Request) -> Response {
    let request = match endpoint.forward_if_elsewhere(request).await {
        Ok(response) => return response,
        Err(request) => request,
    };
    let (parts, _body) = request.into_parts();
    let (headers, uri) = (parts.headers, parts.uri);
    let Some(token) = query_param(&uri, "id") else {
        return text(StatusCode::BAD_REQUEST, "Connection ID required");
    };
    if let Err(response) = endpoint.authorize(&headers, &uri).await {
        return response;
    }
    let Some(entry) = endpoint.manager.get(&token) else {
        return text(StatusCode::NOT_FOUND, "No Connection with that ID");
    };
    if endpoint.manager.state(&token) != Some(ConnectionState::Active(TransportType::LongPolling)) {
        return text(
            StatusCode::BAD_REQUEST,
            "Cannot terminate this connection using the DELETE endpoint.",
        );
    }
    tracing::debug!(target: "signalbox::transport", connection_id = %entry.id, "long-polling connection ended by DELETE");
    entry.dispose();
    text(StatusCode::ACCEPTED, "")
}
