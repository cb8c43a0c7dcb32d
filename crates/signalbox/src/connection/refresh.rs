//! Authentication refresh (ASP.NET Core 11, signalr-protocol.md §2.7): `POST {hub}/refresh?id=
//! {connectionToken}` with a new bearer token in the `Authorization` header replaces the principal
//! of a running connection, so that a connection never outlives its authentication and never has
//! to reconnect only to present a fresh token.
//!
//! Answers, as ASP.NET Core's `HttpConnectionDispatcher.ProcessRefresh` (checked in this order):
//!
//! | status | body |
//! |---|---|
//! | 404 | `{"error":"refresh_disabled"}` (the endpoint does not allow refresh) |
//! | 400 | `{"error":"missing_connection_token"}` (no `id`) |
//! | 404 | `{"error":"connection_not_found"}` (no node holds the connection) |
//! | 400 | `{"error":"unsupported_negotiate_version"}` (negotiated with version 0: token = public id) |
//! | 401 | `{"error":"invalid_token"}` (no, or a refused, `Authorization: Bearer` token) |
//! | 403 | `{"error":"permission_change_rejected"}` (another user's token, or the hub's policy fails) |
//! | 500 | `{"error":"internal_server_error"}` (the refresh could not be forwarded to another node) |
//! | 200 | `{"tokenLifetimeSeconds":n}` (`{}` when the new token has no `exp`) |
//!
//! Other methods on the path get `405` from the router.
//!
//! A connection held by another node (a cluster with a backplane and a
//! [`connection_token_secret`](crate::ConnectionOptions::connection_token_secret), whose signed
//! token names the connection) is refreshed there: this node authenticates the new token and
//! applies the hub's policy, then forwards the principal through the hub's lifetime manager
//! ([`HubLifetimeManager::refresh_connection`](crate::HubLifetimeManager::refresh_connection)).

use std::sync::Arc;
use std::time::{Duration, SystemTime};

use axum::response::{IntoResponse, Response};
use futures_util::future::BoxFuture;
use http::header::CONTENT_TYPE;
use http::{HeaderValue, StatusCode, Uri};
use serde::Serialize;
use signalbox_protocol::RefreshResponse;

use super::endpoint::ConnectionHandler;
use super::manager::{ConnectionEntry, ConnectionManager};
use super::{AuthCell, Connection, RefreshError};
use crate::auth::Principal;
use crate::options::ConnectionOptions;

const LOG: &str = "signalbox::transport";

/// Gives a connection about to run its refresh cell, shared with its table entry, when the
/// endpoint allows refresh (version 0 connections cannot be refreshed: they get none).
pub(crate) fn track(
    options: &ConnectionOptions,
    entry: &ConnectionEntry,
    mut connection: Connection,
) -> Connection {
    if options.enable_authentication_refresh && !entry.is_version_zero() {
        let principal = connection.principal.clone();
        let cell = entry
            .auth
            .get_or_init(|| Arc::new(AuthCell::new(principal)))
            .clone();
        connection.auth = Some(cell);
    }
    connection
}

/// Seconds until `principal`'s token expires, for the negotiate answer: `None` when refresh is
/// off or there is no principal or no future `exp`.
pub(crate) fn token_lifetime(
    options: &ConnectionOptions,
    principal: Option<&Principal>,
) -> Option<u64> {
    if !options.enable_authentication_refresh {
        return None;
    }
    lifetime_seconds(principal?)
}

fn lifetime_seconds(principal: &Principal) -> Option<u64> {
    let left = principal
        .expires_at()?
        .duration_since(SystemTime::now())
        .ok()?;
    (left > Duration::ZERO).then_some(left.as_secs())
}

/// The connection a refresh request is for.
#[derive(Debug)]
pub(crate) enum Target {
    /// Running on this node.
    Local { id: Arc<str>, auth: Arc<AuthCell> },
    /// Running on another node (a signed token's connection id).
    Remote { id: String },
}

/// The checks made before authentication: refresh allowed, token given, connection known,
/// negotiate version 1.
#[allow(clippy::result_large_err)]
pub(crate) fn find(
    options: &ConnectionOptions,
    manager: &ConnectionManager,
    uri: &Uri,
) -> Result<Target, Response> {
    if !options.enable_authentication_refresh {
        return Err(error(StatusCode::NOT_FOUND, "refresh_disabled"));
    }
    let Some(token) = connection_token(uri) else {
        return Err(error(StatusCode::BAD_REQUEST, "missing_connection_token"));
    };
    if let Some(entry) = manager.get(&token) {
        if entry.is_version_zero() {
            return Err(error(
                StatusCode::BAD_REQUEST,
                "unsupported_negotiate_version",
            ));
        }
        if let Some(auth) = entry.auth.get() {
            return Ok(Target::Local {
                id: entry.id.clone(),
                auth: auth.clone(),
            });
        }
        // Negotiated here but not (yet) running here: the WebSocket may have gone to another node.
    }
    let remote = options
        .connection_token_secret
        .as_deref()
        // The signature is what matters here, not the token's age: the connection may have run for
        // days. The node holding it still has to know it.
        .and_then(|secret| super::token::verify(secret, &token, Duration::MAX));
    match remote {
        Some(id) => Ok(Target::Remote { id }),
        None => Err(error(StatusCode::NOT_FOUND, "connection_not_found")),
    }
}

/// The request URI without its query: the new token must come in the `Authorization` header, an
/// `access_token` query parameter does not count on this route.
pub(crate) fn without_query(uri: &Uri) -> Uri {
    uri.path().parse().unwrap_or_default()
}

/// What [`ConnectionHandler::refresh_remote`] does by default (raw connection endpoints, which have
/// no lifetime manager): no other node is asked.
pub(crate) fn not_forwarded(
    connection_id: String,
    principal: Principal,
) -> BoxFuture<'static, Result<(), RefreshError>> {
    let _ = (connection_id, principal);
    Box::pin(std::future::ready(Err(RefreshError::NotFound)))
}

/// Applies a refresh once the request is authenticated: `authorized` is the endpoint's
/// authentication and policy result for the new token (header only).
pub(crate) async fn apply(
    target: Target,
    authorized: Result<Option<Principal>, Response>,
    handler: &dyn ConnectionHandler,
) -> Response {
    let principal = match authorized {
        Ok(Some(principal)) => principal,
        // No authenticator, or no token with an anonymous policy: nothing to refresh with.
        Ok(None) => return error(StatusCode::UNAUTHORIZED, "invalid_token"),
        // Authenticated, but the hub's policy refuses the new principal.
        Err(response) if response.status() == StatusCode::FORBIDDEN => {
            return error(StatusCode::FORBIDDEN, "permission_change_rejected");
        }
        Err(_) => return error(StatusCode::UNAUTHORIZED, "invalid_token"),
    };
    let lifetime = lifetime_seconds(&principal);
    let (id, result) = match target {
        Target::Local { id, auth } => (id.to_string(), auth.refresh(principal)),
        Target::Remote { id } => {
            let result = handler.refresh_remote(id.clone(), principal).await;
            (id, result)
        }
    };
    match result {
        Ok(()) => {
            tracing::debug!(target: LOG, connection_id = %id, "authentication refreshed");
            json(
                StatusCode::OK,
                &RefreshResponse {
                    token_lifetime_seconds: lifetime,
                },
            )
        }
        Err(refused) => {
            tracing::debug!(target: LOG, connection_id = %id, reason = %refused, "authentication refresh refused");
            let status = match refused {
                RefreshError::NotFound => StatusCode::NOT_FOUND,
                RefreshError::PermissionChangeRejected => StatusCode::FORBIDDEN,
                RefreshError::Backplane(_) => StatusCode::INTERNAL_SERVER_ERROR,
            };
            error(status, refused.code())
        }
    }
}

/// The `id` query parameter (case-insensitive key, as the other routes), if not empty.
fn connection_token(uri: &Uri) -> Option<String> {
    form_urlencoded::parse(uri.query()?.as_bytes())
        .find(|(k, _)| k.eq_ignore_ascii_case("id"))
        .map(|(_, v)| v.into_owned())
        .filter(|v| !v.is_empty())
}

#[derive(Serialize)]
struct ErrorBody<'a> {
    error: &'a str,
}

fn error(status: StatusCode, code: &str) -> Response {
    json(status, &ErrorBody { error: code })
}

fn json<T: Serialize>(status: StatusCode, body: &T) -> Response {
    match serde_json::to_vec(body) {
        Ok(body) => (
            status,
            [(CONTENT_TYPE, HeaderValue::from_static("application/json"))],
            body,
        )
            .into_response(),
        Err(error) => {
            tracing::error!(target: LOG, %error, "failed to serialise a refresh answer");
            StatusCode::INTERNAL_SERVER_ERROR.into_response()
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::{Value, json};

    fn principal(claims: Value) -> Principal {
        let Value::Object(map) = claims else {
            unreachable!()
        };
        Principal::new(map, "sub")
    }

    #[test]
    fn the_query_never_reaches_authentication() {
        let uri: Uri = "/hub/refresh?id=x&access_token=secret".parse().unwrap();
        let stripped = without_query(&uri);
        assert_eq!(stripped.path(), "/hub/refresh");
        assert_eq!(stripped.query(), None);
        assert_eq!(connection_token(&uri).as_deref(), Some("x"));
        assert_eq!(
            connection_token(&"/r?ID=y".parse().unwrap()).as_deref(),
            Some("y")
        );
        assert_eq!(connection_token(&"/r?id=".parse().unwrap()), None);
    }

    #[test]
    fn lifetime_only_when_enabled_and_in_the_future() {
        let now = SystemTime::now()
            .duration_since(SystemTime::UNIX_EPOCH)
            .unwrap()
            .as_secs();
        let p = principal(json!({"sub": "a", "exp": now + 100}));
        let mut options = ConnectionOptions::default();
        assert_eq!(token_lifetime(&options, Some(&p)), None);
        options.enable_authentication_refresh = true;
        let left = token_lifetime(&options, Some(&p)).unwrap();
        assert!((98..=100).contains(&left), "{left}");
        assert_eq!(token_lifetime(&options, None), None);
        let no_exp = principal(json!({"sub": "a"}));
        assert_eq!(token_lifetime(&options, Some(&no_exp)), None);
        let past = principal(json!({"sub": "a", "exp": now - 10}));
        assert_eq!(token_lifetime(&options, Some(&past)), None);
    }

    #[test]
    fn a_refresh_keeps_the_user() {
        let cell = AuthCell::new(Some(principal(json!({"sub": "a", "v": 1}))));
        assert_eq!(
            cell.refresh(principal(json!({"sub": "b"}))),
            Err(RefreshError::PermissionChangeRejected)
        );
        assert_eq!(cell.get().unwrap().claim("v"), Some(&json!(1)));
        cell.refresh(principal(json!({"sub": "a", "v": 2})))
            .unwrap();
        assert_eq!(cell.get().unwrap().claim("v"), Some(&json!(2)));
        let anonymous = AuthCell::new(None);
        assert_eq!(
            anonymous.refresh(principal(json!({"sub": "a"}))),
            Err(RefreshError::PermissionChangeRejected)
        );
        assert!(anonymous.get().is_none());
    }

    #[test]
    fn checks_before_authentication() {
        let manager = ConnectionManager::default();
        let mut options = ConnectionOptions::default();
        let uri = |q: &str| -> Uri { format!("/h/refresh{q}").parse().unwrap() };
        let status = |r: Result<Target, Response>| r.unwrap_err().status();
        assert_eq!(
            status(find(&options, &manager, &uri("?id=x"))),
            StatusCode::NOT_FOUND
        );
        options.enable_authentication_refresh = true;
        assert_eq!(
            status(find(&options, &manager, &uri(""))),
            StatusCode::BAD_REQUEST
        );
        assert_eq!(
            status(find(&options, &manager, &uri("?id=nope"))),
            StatusCode::NOT_FOUND
        );
        let v0 = manager.create(0, false);
        assert_eq!(
            status(find(&options, &manager, &uri(&format!("?id={}", v0.token)))),
            StatusCode::BAD_REQUEST
        );
        // Negotiated but not running: not found without a cluster secret.
        let v1 = manager.create(1, false);
        assert_eq!(
            status(find(&options, &manager, &uri(&format!("?id={}", v1.token)))),
            StatusCode::NOT_FOUND
        );
        let _ = v1.auth.set(Arc::new(AuthCell::new(None)));
        assert!(matches!(
            find(&options, &manager, &uri(&format!("?id={}", v1.token))),
            Ok(Target::Local { .. })
        ));
        // A token signed with the cluster secret names a connection of another node, however old.
        let secret: Arc<[u8]> = Arc::from(&b"a shared connection token secret"[..]);
        options.connection_token_secret = Some(secret.clone());
        let signed = super::super::token::sign(&secret, "remote-id", None).unwrap();
        match find(&options, &manager, &uri(&format!("?id={signed}"))) {
            Ok(Target::Remote { id }) => assert_eq!(id, "remote-id"),
            other => panic!("{other:?}"),
        }
    }
}
