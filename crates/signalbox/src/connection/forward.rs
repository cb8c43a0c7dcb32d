//! Forwarding the requests of a connection held by another node, so that Server-Sent Events and
//! long polling need no sticky sessions.
//!
//! A WebSocket is one request: whichever node it reaches runs the connection (its signed token
//! is adopted, see `token.rs`). The other transports are many requests per connection (the event
//! stream or each poll, each send, the closing `DELETE`), and a load balancer may spread them over
//! the nodes; the connection lives on the node that negotiated it. With a
//! [`ClusterNode`](super::ClusterNode) configured, the tokens a node issues name it, and a node
//! that gets a request for a connection it does not hold, whose token names another node,
//! passes the request on to that node over HTTP (one hop):
//!
//! - the owner's base URL comes from the [`NodeDirectory`](super::NodeDirectory); the path and
//!   query are kept, so the owner authenticates (the `Authorization` header or `access_token` are
//!   passed on untouched) and looks the connection up as usual;
//! - the request body is streamed to the owner, and the response body back to the client as it
//!   comes, so an event stream flows and a poll stays open until the owner answers it; when the
//!   client goes away, the hop to the owner is dropped too, as if the client had left the owner;
//! - hop-by-hop headers (`Connection` and those it names, `Keep-Alive`, `Transfer-Encoding`,
//!   `TE`, `Trailer`, `Upgrade`, `Proxy-*`) are dropped both ways;
//! - the hop carries [`FORWARDED`] (this node's id), and a request carrying it is never forwarded
//!   again: a node that does not hold the connection answers 404;
//! - an owner that is unknown, unreachable within [`CONNECT_TIMEOUT`], or that does not answer in
//!   time is answered 404 like an unknown connection, which makes the client reconnect;
//! - when this node shuts down, the answers it is streaming through end (as its own connections
//!   close), so an event stream passing through does not hold up the shutdown.
//!
//! Tokens and query strings are never logged.

use std::time::Duration;

use axum::body::Body;
use axum::extract::Request;
use axum::response::{IntoResponse, Response};
use futures_util::StreamExt as _;
use http::header::{
    CONNECTION, CONTENT_TYPE, HOST, PROXY_AUTHENTICATE, PROXY_AUTHORIZATION, TE, TRAILER,
    TRANSFER_ENCODING, UPGRADE,
};
use http::{HeaderMap, HeaderName, HeaderValue, StatusCode, Uri};
use hyper_util::client::legacy::Client;
use hyper_util::client::legacy::connect::HttpConnector;
use hyper_util::rt::TokioExecutor;
use tokio_util::sync::CancellationToken;

use super::ClusterNode;

/// Marks a request forwarded by another node (its value: that node's id).
pub(crate) const FORWARDED: HeaderName = HeaderName::from_static("x-signalbox-forwarded");

/// How long opening a connection to the owner may take.
pub(crate) const CONNECT_TIMEOUT: Duration = Duration::from_secs(5);

/// How long the owner may take to answer a forwarded send or `DELETE`. A forwarded event stream or
/// poll gets the long-poll timeout on top (the owner answers a poll only when it has data or the
/// poll times out).
pub(crate) const RESPONSE_TIMEOUT: Duration = Duration::from_secs(30);

/// Headers that concern one hop only.
const HOP_BY_HOP: [HeaderName; 7] = [
    CONNECTION,
    PROXY_AUTHENTICATE,
    PROXY_AUTHORIZATION,
    TE,
    TRAILER,
    TRANSFER_ENCODING,
    UPGRADE,
];

/// Why a request could not be forwarded.
#[derive(Debug, thiserror::Error)]
pub(crate) enum ForwardError {
    /// The directory does not know the node.
    #[error("the node is unknown")]
    UnknownNode,
    /// The node's base URL and the request's path make no URL.
    #[error("the node's URL is invalid: {0}")]
    InvalidUrl(#[from] http::Error),
    /// The node could not be reached.
    #[error("the node is unreachable: {0}")]
    Unreachable(#[from] hyper_util::client::legacy::Error),
    /// The node did not answer in time.
    #[error("the node did not answer within {0:?}")]
    Timeout(Duration),
}

/// Forwards requests to the other nodes of the cluster.
pub(crate) struct Forwarder {
    node: ClusterNode,
    client: Client<HttpConnector, Body>,
    /// Cancelled when this node shuts down: the answers being streamed through end.
    shutdown: CancellationToken,
}

impl Forwarder {
    /// A forwarder for `node`, with a pool of connections to the other nodes; the answers it
    /// streams through end when `shutdown` is cancelled.
    pub(crate) fn new(node: ClusterNode, shutdown: CancellationToken) -> Self {
        let mut connector = HttpConnector::new();
        connector.set_connect_timeout(Some(CONNECT_TIMEOUT));
        connector.set_nodelay(true);
        let client = Client::builder(TokioExecutor::new()).build(connector);
        Self {
            node,
            client,
            shutdown,
        }
    }

    /// This node's id.
    pub(crate) fn node_id(&self) -> &str {
        &self.node.id
    }

    /// Passes `request` on to node `owner` and streams its answer back; 404 when that fails.
    pub(crate) async fn forward(
        &self,
        owner: &str,
        request: Request,
        response_timeout: Duration,
    ) -> Response {
        let method = request.method().clone();
        match self.try_forward(owner, request, response_timeout).await {
            Ok(response) => {
                crate::metrics::forwarded("forwarded");
                tracing::debug!(target: "signalbox::transport", node = owner, %method, status = %response.status(), "request forwarded to the node holding the connection");
                response
            }
            Err(ForwardError::UnknownNode) => {
                crate::metrics::forwarded("unknown_node");
                tracing::debug!(target: "signalbox::transport", node = owner, %method, "the node holding the connection is unknown");
                not_found()
            }
            Err(error) => {
                crate::metrics::forwarded(match &error {
                    ForwardError::Timeout(_) => "timeout",
                    _ => "unreachable",
                });
                tracing::warn!(target: "signalbox::transport", node = owner, %method, %error, "cannot forward a request to the node holding the connection");
                not_found()
            }
        }
    }

    async fn try_forward(
        &self,
        owner: &str,
        request: Request,
        response_timeout: Duration,
    ) -> Result<Response, ForwardError> {
        let base = self
            .node
            .directory
            .resolve(owner)
            .await
            .ok_or(ForwardError::UnknownNode)?;
        let (mut parts, body) = request.into_parts();
        parts.uri = target(&base, &parts.uri)?;
        parts.version = http::Version::HTTP_11;
        strip_hop_by_hop(&mut parts.headers);
        // The client sets `Host` from the URI.
        parts.headers.remove(HOST);
        if let Ok(node) = HeaderValue::from_str(&self.node.id) {
            parts.headers.insert(FORWARDED, node);
        }
        let request = Request::from_parts(parts, body);
        let response = tokio::time::timeout(response_timeout, self.client.request(request))
            .await
            .map_err(|_| ForwardError::Timeout(response_timeout))??;
        let (mut parts, body) = response.into_parts();
        strip_hop_by_hop(&mut parts.headers);
        let body = Body::new(body)
            .into_data_stream()
            .take_until(self.shutdown.clone().cancelled_owned());
        Ok(Response::from_parts(parts, Body::from_stream(body)))
    }
}

/// Whether `headers` mark a request another node forwarded.
pub(crate) fn was_forwarded(headers: &HeaderMap) -> bool {
    headers.contains_key(FORWARDED)
}

/// The owner's URL for a request to `uri`: the owner's scheme, authority and path prefix, then
/// the request's path and query.
fn target(base: &Uri, uri: &Uri) -> Result<Uri, http::Error> {
    let prefix = base.path().trim_end_matches('/');
    let path_and_query = uri.path_and_query().map_or("/", |p| p.as_str());
    let mut builder = Uri::builder().path_and_query(format!("{prefix}{path_and_query}"));
    if let Some(scheme) = base.scheme() {
        builder = builder.scheme(scheme.clone());
    }
    if let Some(authority) = base.authority() {
        builder = builder.authority(authority.clone());
    }
    builder.build()
}

/// Drops the hop-by-hop headers, including those the `Connection` header names.
fn strip_hop_by_hop(headers: &mut HeaderMap) {
    let named: Vec<HeaderName> = headers
        .get_all(CONNECTION)
        .iter()
        .filter_map(|value| value.to_str().ok())
        .flat_map(|value| value.split(','))
        .filter_map(|name| HeaderName::from_bytes(name.trim().as_bytes()).ok())
        .collect();
    for name in named.iter().chain(HOP_BY_HOP.iter()) {
        headers.remove(name);
    }
    headers.remove("keep-alive");
    headers.remove("proxy-connection");
}

/// What an unknown connection gets.
pub(crate) fn not_found() -> Response {
    (
        StatusCode::NOT_FOUND,
        [(CONTENT_TYPE, HeaderValue::from_static("text/plain"))],
        "No Connection with that ID",
    )
        .into_response()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_target_keeps_path_and_query() {
        let base: Uri = "http://10.0.0.7:8080".parse().unwrap();
        let uri: Uri = "/hubs/chat?id=abc&access_token=t".parse().unwrap();
        assert_eq!(
            target(&base, &uri).unwrap().to_string(),
            "http://10.0.0.7:8080/hubs/chat?id=abc&access_token=t"
        );
        let prefixed: Uri = "http://node-2:8080/app/".parse().unwrap();
        assert_eq!(
            target(&prefixed, &uri).unwrap().to_string(),
            "http://node-2:8080/app/hubs/chat?id=abc&access_token=t"
        );
    }

    #[test]
    fn hop_by_hop_headers_are_dropped() {
        let mut headers = HeaderMap::new();
        headers.insert(
            CONNECTION,
            HeaderValue::from_static("keep-alive, x-private"),
        );
        headers.insert("keep-alive", HeaderValue::from_static("timeout=5"));
        headers.insert("x-private", HeaderValue::from_static("1"));
        headers.insert(TRANSFER_ENCODING, HeaderValue::from_static("chunked"));
        headers.insert(
            http::header::AUTHORIZATION,
            HeaderValue::from_static("Bearer t"),
        );
        strip_hop_by_hop(&mut headers);
        let names: Vec<&str> = headers.keys().map(HeaderName::as_str).collect();
        assert_eq!(names, ["authorization"]);
    }
}
