//! The client endpoint of Azure SignalR Service: `POST /client/negotiate?hub=NAME` and the
//! transports at `/client/?hub=NAME` (and `/client?hub=NAME`), where a back end's negotiate
//! sends its clients (`{"url": "https://HOST/client/?hub=chat", "accessToken": …}`).
//!
//! The `hub` query parameter (with `application`, `{application}_{hub}`) names the serverless
//! hub, case-insensitively; it is created on first use, once the client's token has been
//! verified. The request is then handed to the hub's own routes. A missing or invalid `hub` is
//! answered with `400`.

use axum::Router;
use axum::body::Body;
use axum::extract::{Request, State};
use axum::http::header::{CONTENT_TYPE, WWW_AUTHENTICATE};
use axum::http::uri::PathAndQuery;
use axum::http::{HeaderName, HeaderValue, StatusCode, Uri};
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use signalbox::auth::{AuthError, bearer_token};
use tower::ServiceExt as _;

use super::Azure;
use super::hubs::{
    AzureError, AzureHub, CLIENT_PATH, CLIENT_QUERY_HEADER, client_hub_name, internal_hub_name,
    verify_client_token,
};

/// Where clients negotiate.
pub const NEGOTIATE_PATH: &str = "/client/negotiate";

/// The client routes.
pub(super) fn routes(azure: Azure) -> Router {
    Router::new()
        .route(NEGOTIATE_PATH, post(negotiate))
        .route("/client/", get(transport).post(transport).delete(transport))
        .route(
            CLIENT_PATH,
            get(transport).post(transport).delete(transport),
        )
        .with_state(azure)
}

/// Why a client request is refused before it reaches a hub.
#[derive(Debug, thiserror::Error)]
enum ClientError {
    /// No `hub` query parameter.
    #[error("the hub query parameter is required, e.g. /client/?hub=chat")]
    MissingHub,
    /// An invalid hub or application name, or a hub that could not be created.
    #[error(transparent)]
    Hub(#[from] AzureError),
    /// The token of a request that would create a hub was refused.
    #[error("unauthorized")]
    Unauthorized(AuthError),
}

impl IntoResponse for ClientError {
    fn into_response(self) -> Response {
        match self {
            ClientError::MissingHub
            | ClientError::Hub(AzureError::InvalidHub(_) | AzureError::InvalidApplication(_)) => (
                StatusCode::BAD_REQUEST,
                [(
                    CONTENT_TYPE,
                    HeaderValue::from_static("text/plain; charset=utf-8"),
                )],
                self.to_string(),
            )
                .into_response(),
            ClientError::Hub(error) => {
                tracing::error!(target: "signalbox::azure", %error, "cannot create a serverless hub");
                StatusCode::SERVICE_UNAVAILABLE.into_response()
            }
            // As the hub's own routes answer.
            ClientError::Unauthorized(error) => {
                let challenge = if error == AuthError::Missing {
                    HeaderValue::from_static("Bearer")
                } else {
                    HeaderValue::from_static("Bearer error=\"invalid_token\"")
                };
                (
                    StatusCode::UNAUTHORIZED,
                    [(WWW_AUTHENTICATE, challenge)],
                    Body::empty(),
                )
                    .into_response()
            }
        }
    }
}

/// The internal hub name a client request names.
fn requested_hub(uri: &Uri) -> Result<String, ClientError> {
    let mut hub = None;
    let mut application = None;
    for (key, value) in form_urlencoded::parse(uri.query().unwrap_or_default().as_bytes()) {
        if hub.is_none() && key.eq_ignore_ascii_case("hub") {
            hub = Some(value.into_owned());
        } else if application.is_none() && key.eq_ignore_ascii_case("application") {
            application = Some(value.into_owned());
        }
    }
    let hub = hub
        .filter(|hub| !hub.is_empty())
        .ok_or(ClientError::MissingHub)?;
    Ok(match application.filter(|app| !app.is_empty()) {
        Some(app) => internal_hub_name(&hub, Some(&app))?,
        None => client_hub_name(&hub)?,
    })
}

/// The hub a client request names.
enum Found {
    /// It exists.
    Existing(AzureHub),
    /// It does not exist yet; the request's token is good for it.
    New(String),
}

/// The hub a client request names, if it exists, else its name once the request's token is
/// verified (so that only holders of an access key create hubs).
fn find_hub(azure: &Azure, request: &Request) -> Result<Found, ClientError> {
    let name = requested_hub(request.uri())?;
    if let Some(hub) = azure.hubs.existing(&name) {
        return Ok(Found::Existing(hub));
    }
    let token = bearer_token(request.headers(), request.uri().query());
    verify_client_token(&azure.keys, &name, token).map_err(ClientError::Unauthorized)?;
    Ok(Found::New(name))
}

/// The hub [`find_hub`] found, or created under the name it gave.
async fn hub_for(
    azure: &Azure,
    found: Result<Found, ClientError>,
) -> Result<AzureHub, ClientError> {
    match found? {
        Found::Existing(hub) => Ok(hub),
        Found::New(name) => Ok(azure.hubs.hub(&name).await?),
    }
}

/// The query without `access_token`, as the upstream is told it.
fn client_query(query: &str) -> String {
    query
        .split('&')
        .filter(|pair| !pair.is_empty())
        .filter(|pair| {
            let key = pair.split_once('=').map_or(*pair, |(key, _)| key);
            !form_urlencoded::parse(key.as_bytes())
                .next()
                .is_some_and(|(key, _)| key.eq_ignore_ascii_case("access_token"))
        })
        .collect::<Vec<_>>()
        .join("&")
}

/// Hands `request` to `hub`'s routes at `path`, with its query.
async fn forward(hub: &AzureHub, mut request: Request, path: &str) -> Response {
    let query = request.uri().query().map(str::to_owned);
    let path_and_query = match &query {
        Some(query) => format!("{path}?{query}"),
        None => path.to_owned(),
    };
    let mut parts = request.uri().clone().into_parts();
    parts.path_and_query = match PathAndQuery::try_from(path_and_query) {
        Ok(path_and_query) => Some(path_and_query),
        Err(_) => return StatusCode::BAD_REQUEST.into_response(),
    };
    match Uri::from_parts(parts) {
        Ok(uri) => *request.uri_mut() = uri,
        Err(_) => return StatusCode::BAD_REQUEST.into_response(),
    }
    let header = HeaderName::from_static(CLIENT_QUERY_HEADER);
    request.headers_mut().remove(&header);
    if let Some(value) = query
        .as_deref()
        .map(client_query)
        .and_then(|query| HeaderValue::from_str(&query).ok())
    {
        request.headers_mut().insert(header, value);
    }
    match hub.router().oneshot(request).await {
        Ok(response) => response,
        Err(never) => match never {},
    }
}

/// `POST /client/negotiate?hub=…`.
async fn negotiate(State(azure): State<Azure>, request: Request) -> Response {
    let found = find_hub(&azure, &request);
    match hub_for(&azure, found).await {
        Ok(hub) => forward(&hub, request, NEGOTIATE_PATH).await,
        Err(error) => error.into_response(),
    }
}

/// `GET|POST|DELETE /client/?hub=…&id=…`: the transports.
async fn transport(State(azure): State<Azure>, request: Request) -> Response {
    let found = find_hub(&azure, &request);
    match hub_for(&azure, found).await {
        Ok(hub) => forward(&hub, request, CLIENT_PATH).await,
        Err(error) => error.into_response(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn uri(text: &str) -> Uri {
        text.parse().unwrap_or_default()
    }

    #[test]
    fn the_hub_comes_from_the_query() {
        assert_eq!(
            requested_hub(&uri("/client/?hub=Chat&id=x"))
                .ok()
                .as_deref(),
            Some("chat")
        );
        assert_eq!(
            requested_hub(&uri("/client/negotiate?HUB=Chat&application=App"))
                .ok()
                .as_deref(),
            Some("app_chat")
        );
        assert_eq!(
            requested_hub(&uri("/client/?hub=myapp_chat"))
                .ok()
                .as_deref(),
            Some("myapp_chat")
        );
        assert!(matches!(
            requested_hub(&uri("/client/?id=x")),
            Err(ClientError::MissingHub)
        ));
        assert!(matches!(
            requested_hub(&uri("/client/?hub=")),
            Err(ClientError::MissingHub)
        ));
        assert!(matches!(
            requested_hub(&uri("/client/?hub=a%2Fb")),
            Err(ClientError::Hub(AzureError::InvalidHub(_)))
        ));
    }

    #[test]
    fn the_upstream_never_sees_the_token() {
        assert_eq!(
            client_query("hub=chat&id=abc&access_token=secret&x=1"),
            "hub=chat&id=abc&x=1"
        );
        assert_eq!(client_query("ACCESS%5FTOKEN=secret&hub=a"), "hub=a");
    }
}
