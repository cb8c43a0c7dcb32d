//! The HTTP endpoint of one hub: `POST {path}/negotiate`, `GET {path}` (WebSocket upgrade, SSE,
//! long poll), `POST {path}` (send) and `DELETE {path}` (SignalR's `HttpConnectionDispatcher`).

use std::sync::Arc;

use axum::Router;
use axum::body::Body;
use axum::extract::ws::WebSocketUpgrade;
use axum::extract::{FromRequestParts, Request, State};
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use http::header::{ACCEPT, CONTENT_TYPE, UPGRADE, WWW_AUTHENTICATE};
use http::{HeaderMap, HeaderValue, StatusCode, Uri};
use signalbox_protocol::{
    AvailableTransport, NegotiateError, NegotiateResponse, TransferFormat, TransportType,
    select_negotiate_version,
};

use super::HttpRequestInfo;
use super::manager::{AttachError, ConnectionManager, ConnectionState};
use super::websocket::{self, WebSocketSession};
use crate::auth::{AuthError, Principal};
use crate::hub::{Hub, HubInner, handler};

/// The state shared by the routes of one hub.
pub(crate) struct HubEndpoint {
    hub: Arc<HubInner>,
    manager: Arc<ConnectionManager>,
}

/// Adds the hub's routes to `router`.
pub(crate) fn mount<S>(router: Router<S>, path: &str, hub: Hub) -> Router<S>
where
    S: Clone + Send + Sync + 'static,
{
    let path = path.trim_end_matches('/');
    let endpoint = Arc::new(HubEndpoint {
        hub: hub.inner,
        manager: Arc::new(ConnectionManager::default()),
    });
    router
        .route(
            &format!("{path}/negotiate"),
            post(negotiate).with_state(endpoint.clone()),
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

impl HubEndpoint {
    /// Authenticates the request (header, or `access_token` on hub routes) and applies the hub's
    /// policy: 401 with an empty body when unauthenticated, 403 when the policy fails.
    #[allow(clippy::result_large_err)]
    fn authorize(&self, headers: &HeaderMap, uri: &Uri) -> Result<Option<Principal>, Response> {
        let mut invalid = false;
        let principal = match &self.hub.auth {
            Some(auth) => match auth.authenticate(headers, uri.query(), true) {
                Ok(principal) => Some(principal),
                Err(AuthError::Missing) => None,
                Err(error) => {
                    tracing::debug!(target: "signalbox::transport", reason = error.reason(), "bearer token rejected");
                    invalid = true;
                    None
                }
            },
            None => None,
        };
        if self.hub.policy.is_satisfied_by(principal.as_ref()) {
            return Ok(principal);
        }
        if principal.is_some() {
            return Err(StatusCode::FORBIDDEN.into_response());
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

    fn available_transports(&self) -> Vec<AvailableTransport> {
        self.hub
            .connection_options
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
        self.hub.connection_options.transports.contains(&transport)
    }
}

async fn negotiate(
    State(endpoint): State<Arc<HubEndpoint>>,
    headers: HeaderMap,
    uri: Uri,
) -> Response {
    if let Err(response) = endpoint.authorize(&headers, &uri) {
        return response;
    }
    let options = &endpoint.hub.connection_options;
    let requested = query_param(&uri, "negotiateVersion");
    let version =
        match select_negotiate_version(requested.as_deref(), options.minimum_negotiate_version) {
            Ok(version) => version,
            Err(error) => return json_response(&NegotiateError { error }),
        };
    endpoint.manager.ensure_reaper(options.disconnect_timeout);
    let entry = endpoint.manager.create(version);
    tracing::debug!(target: "signalbox::transport", connection_id = %entry.id, version, "negotiated");
    json_response(&NegotiateResponse {
        use_stateful_reconnect: false,
        negotiate_version: version,
        connection_id: entry.id.to_string(),
        connection_token: (version >= 1).then(|| entry.token.clone()),
        available_transports: endpoint.available_transports(),
    })
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

async fn connect(State(endpoint): State<Arc<HubEndpoint>>, request: Request) -> Response {
    let (mut parts, _body) = request.into_parts();
    let wants_sse = parts
        .headers
        .get_all(ACCEPT)
        .iter()
        .filter_map(|v| v.to_str().ok())
        .any(|v| v.contains("text/event-stream"));
    let is_upgrade = parts
        .headers
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
    if !endpoint.transport_enabled(transport) || transport != TransportType::WebSockets {
        return not_supported(transport);
    }
    let principal = match endpoint.authorize(&parts.headers, &parts.uri) {
        Ok(principal) => principal,
        Err(response) => return response,
    };
    let entry = match query_param(&parts.uri, "id") {
        Some(token) => match endpoint.manager.attach(&token, transport) {
            Ok(entry) => entry,
            Err(error) => return attach_error(error),
        },
        None => endpoint.manager.create_active(transport),
    };
    let upgrade = match WebSocketUpgrade::from_request_parts(&mut parts, &()).await {
        Ok(upgrade) => upgrade,
        Err(rejection) => {
            endpoint.manager.remove(&entry.token);
            return rejection.into_response();
        }
    };
    let options = &endpoint.hub.connection_options;
    let request_info = Arc::new(HttpRequestInfo::new(
        parts.uri.path(),
        parts.headers.clone(),
        parts.uri.query(),
    ));
    let session = WebSocketSession {
        id: entry.id.clone(),
        principal,
        request: request_info,
        queue_capacity: endpoint.hub.options.outbound_queue_capacity,
    };
    let token = entry.token.clone();
    let failed_manager = endpoint.manager.clone();
    let failed_token = token.clone();
    let endpoint = endpoint.clone();
    upgrade
        .read_buffer_size(options.websocket_read_buffer_size)
        .write_buffer_size(options.websocket_write_buffer_size)
        .max_message_size(options.websocket_max_message_size)
        .max_frame_size(options.websocket_max_message_size)
        .on_failed_upgrade(move |error| {
            tracing::debug!(target: "signalbox::transport", %error, "websocket upgrade failed");
            failed_manager.remove(&failed_token);
        })
        .on_upgrade(move |socket| async move {
            let (connection, writer) = websocket::connect(socket, session);
            handler::run(endpoint.hub.clone(), connection).await;
            endpoint.manager.remove(&token);
            // The writer ends once it has flushed what the hub queued and closed the socket.
            let _ = writer.await;
        })
}

async fn send(State(endpoint): State<Arc<HubEndpoint>>, uri: Uri) -> Response {
    let Some(token) = query_param(&uri, "id") else {
        return text(StatusCode::BAD_REQUEST, "Connection ID required");
    };
    match endpoint.manager.state(&token) {
        None => text(StatusCode::NOT_FOUND, "No Connection with that ID"),
        Some(ConnectionState::Active(TransportType::WebSockets)) => text(
            StatusCode::METHOD_NOT_ALLOWED,
            "POST requests are not allowed for WebSocket connections.",
        ),
        Some(_) => text(StatusCode::NOT_FOUND, "No Connection with that ID"),
    }
}

async fn delete(State(endpoint): State<Arc<HubEndpoint>>, uri: Uri) -> Response {
    let Some(token) = query_param(&uri, "id") else {
        return text(StatusCode::BAD_REQUEST, "Connection ID required");
    };
    match endpoint.manager.state(&token) {
        None => text(StatusCode::NOT_FOUND, "No Connection with that ID"),
        Some(_) => text(
            StatusCode::BAD_REQUEST,
            "Cannot terminate this connection using the DELETE endpoint.",
        ),
    }
}
