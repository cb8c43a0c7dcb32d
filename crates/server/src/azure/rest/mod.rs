//! The data-plane REST API of Azure SignalR Service, for back ends: send to everyone, a group, a
//! user or a connection; manage groups; close connections; ask whether a connection, user or
//! group exists; invoke a client and wait for its result; mint client tokens.
//!
//! Operations live under `/api/hubs/{hub}/…` (API versions 2022-06-01 to 2024-12-01; the
//! `api-version` query parameter is accepted in any form, or missing) and under the older
//! `/api/v1/hubs/{hub}/…` ([`v1`]). Both prefixes serve every operation, and existence checks
//! answer `GET` as well as `HEAD`, as the emulator does. `HEAD|GET /api/health` and
//! `/api/v1/health` need no token.
//!
//! Every other request needs `Authorization: Bearer <JWT>` signed with an access key
//! ([`AccessKeys::verify_rest`](crate::azure::keys::AccessKeys::verify_rest)), else `401` with a
//! `WWW-Authenticate` challenge. Hub names are case-insensitive (`application` makes the hub
//! `{application}_{hub}`); connection ids, users and groups are case-sensitive and
//! percent-decoded from their path segment. Bodies are limited to [`MAX_BODY_BYTES`].
//! Errors are [`ErrorDetail`] JSON with the code in `x-ms-error-code` ([`error`]).

mod connections;
pub mod error;
mod groups;
mod hubs;
mod users;
pub mod v1;

use std::time::Duration;

use axum::Router;
use axum::body::{Body, Bytes};
use axum::extract::{Request, State};
use axum::http::header::{CONTENT_LENGTH, CONTENT_TYPE, HOST};
use axum::http::{HeaderMap, Method, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::routing::{any, get};
use bytes::BytesMut;
use futures_util::StreamExt as _;
use signalbox::Target;
use signalbox::auth::bearer_token;
use signalbox::lifetime::SendError;
use signalbox::protocol::Invocation;

use super::hubs::{AzureError, AzureHub, internal_hub_name};
use super::keys::percent_decode;
use super::{Azure, payload};

pub use error::{ERROR_CODE_HEADER, ErrorDetail, RestError, codes};

/// The largest request body accepted, in bytes (Azure's limit for REST calls).
pub const MAX_BODY_BYTES: usize = 1024 * 1024;

/// How long `:invoke` waits for the client's answer.
pub const INVOKE_TIMEOUT: Duration = Duration::from_secs(60);

/// The longest group or user name, in characters.
pub const MAX_ID_LENGTH: usize = 1024;

/// The REST routes.
pub fn router(azure: Azure) -> Router {
    Router::new()
        .route("/api/health", get(health))
        .route("/api/v1/health", get(health))
        .route("/api/hubs/{*rest}", any(current))
        .route("/api/v1/hubs/{*rest}", any(legacy))
        .route("/api/auth/accessKey", any(access_key))
        .route("/api/v1/auth/accessKey", any(access_key))
        .with_state(azure)
}

/// `GET /api/auth/accessKey`: Entra ID callers fetch a signing key here; access keys are the
/// only credentials of this service, so it answers `501` with an error body.
async fn access_key(uri: axum::http::Uri) -> Response {
    let legacy = uri.path().starts_with("/api/v1/");
    RestError::NotSupported("Microsoft Entra ID authentication (auth/accessKey)")
        .into_response_for(legacy)
}

/// `HEAD|GET /api/health`: the service is up (no token needed).
async fn health() -> StatusCode {
    StatusCode::OK
}

async fn current(State(azure): State<Azure>, request: Request) -> Response {
    serve(azure, request, false)
        .await
        .unwrap_or_else(|error| error.into_response_for(false))
}

async fn legacy(State(azure): State<Azure>, request: Request) -> Response {
    serve(azure, request, true)
        .await
        .unwrap_or_else(|error| error.into_response_for(true))
}

/// An operation of the API, with its path parameters (percent-decoded).
#[derive(Debug, Clone, PartialEq, Eq)]
enum Op {
    Broadcast,
    CloseAll,
    GenerateToken,
    Execute,
    ConnectionExists(String),
    CloseConnection(String),
    SendToConnection(String),
    InvokeConnection(String),
    RemoveConnectionFromAllGroups(String),
    Stream(String),
    GroupExists(String),
    SendToGroup(String),
    CloseGroup(String),
    ListGroupConnections(String),
    AddConnectionToGroup { group: String, connection: String },
    RemoveConnectionFromGroup { group: String, connection: String },
    UserExists(String),
    SendToUser(String),
    CloseUser(String),
    RemoveUserFromAllGroups(String),
    AddUserToGroup { user: String, group: String },
    RemoveUserFromGroup { user: String, group: String },
    UserInGroup { user: String, group: String },
}

/// A matched request: the operation and its success status.
#[derive(Debug, Clone, PartialEq, Eq)]
struct Route {
    op: Op,
    success: StatusCode,
}

const POST: &str = "POST";

/// Finds the operation of `method` on the path `segments` after `/api[/v1]/hubs/{hub}`.
fn route(method: &Method, segments: &[String], legacy: bool) -> Result<Route, RestError> {
    let is_exists = *method == Method::GET || *method == Method::HEAD;
    let ok = |op: Op, success: StatusCode| Ok(Route { op, success });
    let only = |wanted: &Method, op: Op, success: StatusCode, allowed: &'static str| {
        if method == wanted {
            Ok(Route { op, success })
        } else {
            Err(RestError::MethodNotAllowed(allowed))
        }
    };
    let s: Vec<&str> = segments.iter().map(String::as_str).collect();
    let owned = |s: &str| s.to_owned();
    match s.as_slice() {
        [] | [":send"] => only(&Method::POST, Op::Broadcast, StatusCode::ACCEPTED, POST),
        [":closeConnections"] => only(&Method::POST, Op::CloseAll, StatusCode::NO_CONTENT, POST),
        [":generateToken"] => only(&Method::POST, Op::GenerateToken, StatusCode::OK, POST),
        [":execute"] => only(&Method::POST, Op::Execute, StatusCode::ACCEPTED, POST),

        ["connections", id] => match *method {
            _ if is_exists => ok(Op::ConnectionExists(owned(id)), StatusCode::OK),
            Method::DELETE => ok(
                Op::CloseConnection(owned(id)),
                v1::close_connection_status(legacy),
            ),
            Method::POST => ok(Op::SendToConnection(owned(id)), StatusCode::ACCEPTED),
            _ => Err(RestError::MethodNotAllowed("GET, HEAD, DELETE, POST")),
        },
        ["connections", id, ":send"] => only(
            &Method::POST,
            Op::SendToConnection(owned(id)),
            StatusCode::ACCEPTED,
            POST,
        ),
        ["connections", id, ":invoke"] => only(
            &Method::POST,
            Op::InvokeConnection(owned(id)),
            StatusCode::OK,
            POST,
        ),
        ["connections", id, "groups"] => only(
            &Method::DELETE,
            Op::RemoveConnectionFromAllGroups(owned(id)),
            StatusCode::OK,
            "DELETE",
        ),
        ["connections", id, "groups", group] | ["groups", group, "connections", id] => {
            let (group, connection) = (owned(group), owned(id));
            match *method {
                Method::PUT => ok(
                    Op::AddConnectionToGroup { group, connection },
                    StatusCode::OK,
                ),
                Method::DELETE => ok(
                    Op::RemoveConnectionFromGroup { group, connection },
                    StatusCode::OK,
                ),
                _ => Err(RestError::MethodNotAllowed("PUT, DELETE")),
            }
        }
        ["connections", id, "streams", _stream, ":send" | ":complete"] => only(
            &Method::POST,
            Op::Stream(owned(id)),
            StatusCode::ACCEPTED,
            POST,
        ),

        ["groups", group] => match *method {
            _ if is_exists => ok(Op::GroupExists(owned(group)), StatusCode::OK),
            Method::POST => ok(Op::SendToGroup(owned(group)), StatusCode::ACCEPTED),
            _ => Err(RestError::MethodNotAllowed("GET, HEAD, POST")),
        },
        ["groups", group, ":send"] => only(
            &Method::POST,
            Op::SendToGroup(owned(group)),
            StatusCode::ACCEPTED,
            POST,
        ),
        ["groups", group, ":closeConnections"] => only(
            &Method::POST,
            Op::CloseGroup(owned(group)),
            StatusCode::NO_CONTENT,
            POST,
        ),
        ["groups", group, "connections"] => only(
            &Method::GET,
            Op::ListGroupConnections(owned(group)),
            StatusCode::OK,
            "GET",
        ),
        // The older form of the user-group operations: group first, answers 202.
        ["groups", group, "users", user] => user_group(
            method,
            owned(user),
            owned(group),
            v1::USER_GROUP_ALIAS_STATUS,
        ),

        ["users", user] => match *method {
            _ if is_exists => ok(Op::UserExists(owned(user)), StatusCode::OK),
            Method::POST => ok(Op::SendToUser(owned(user)), StatusCode::ACCEPTED),
            _ => Err(RestError::MethodNotAllowed("GET, HEAD, POST")),
        },
        ["users", user, ":send"] => only(
            &Method::POST,
            Op::SendToUser(owned(user)),
            StatusCode::ACCEPTED,
            POST,
        ),
        ["users", user, ":closeConnections"] => only(
            &Method::POST,
            Op::CloseUser(owned(user)),
            StatusCode::NO_CONTENT,
            POST,
        ),
        ["users", user, "groups"] => only(
            &Method::DELETE,
            Op::RemoveUserFromAllGroups(owned(user)),
            v1::remove_user_from_all_groups_status(legacy),
            "DELETE",
        ),
        ["users", user, "groups", group] => user_group(
            method,
            owned(user),
            owned(group),
            (StatusCode::OK, StatusCode::NO_CONTENT),
        ),
        _ => Err(RestError::NoSuchOperation),
    }
}

/// The user-group operations; `(put, delete)` are the success statuses of adding and removing.
fn user_group(
    method: &Method,
    user: String,
    group: String,
    (put, delete): (StatusCode, StatusCode),
) -> Result<Route, RestError> {
    let route = |op, success| Ok(Route { op, success });
    match *method {
        Method::GET | Method::HEAD => route(Op::UserInGroup { user, group }, StatusCode::OK),
        Method::PUT => route(Op::AddUserToGroup { user, group }, put),
        Method::DELETE => route(Op::RemoveUserFromGroup { user, group }, delete),
        _ => Err(RestError::MethodNotAllowed("GET, HEAD, PUT, DELETE")),
    }
}

/// The query parameters the operations read (names compared case-insensitively).
#[derive(Debug, Clone, Default)]
struct Query {
    application: Option<String>,
    excluded: Vec<String>,
    reason: Option<String>,
    ttl: Option<String>,
    user_id: Option<String>,
    minutes_to_expire: Option<String>,
    max_page_size: Option<String>,
    top: Option<String>,
    continuation_token: Option<String>,
    api_version: Option<String>,
    filter: Option<String>,
}

impl Query {
    fn parse(query: Option<&str>) -> Self {
        let mut parsed = Query::default();
        for (name, value) in form_urlencoded::parse(query.unwrap_or_default().as_bytes()) {
            let value = value.into_owned();
            let slot = match name.to_ascii_lowercase().as_str() {
                "excluded" => {
                    parsed.excluded.push(value);
                    continue;
                }
                "application" => &mut parsed.application,
                "reason" => &mut parsed.reason,
                "ttl" => &mut parsed.ttl,
                "userid" => &mut parsed.user_id,
                "minutestoexpire" => &mut parsed.minutes_to_expire,
                "maxpagesize" => &mut parsed.max_page_size,
                "top" => &mut parsed.top,
                "continuationtoken" => &mut parsed.continuation_token,
                "api-version" => &mut parsed.api_version,
                "filter" | "$filter" => &mut parsed.filter,
                _ => continue,
            };
            slot.get_or_insert(value);
        }
        parsed
    }
}

/// One request being served.
struct Call {
    azure: Azure,
    hub: AzureHub,
    query: Query,
    success: StatusCode,
    headers: HeaderMap,
    /// The body of the operations that send a message, read up front.
    body: Bytes,
    /// `scheme://host[:port]` as the caller reached the service.
    base_url: String,
    /// The request path, as received.
    path: String,
}

impl Call {
    /// The success answer, without body.
    fn done(&self) -> Response {
        self.success.into_response()
    }

    /// The body as the message to send.
    fn message(&self) -> Result<Invocation, RestError> {
        let content_type = self
            .headers
            .get(CONTENT_TYPE)
            .map(|v| v.to_str().unwrap_or("invalid"));
        Ok(payload::parse(content_type, &self.body)?)
    }

    /// Sends `invocation` to `target` through the hub.
    async fn send(&self, target: Target, invocation: Invocation) -> Result<Response, RestError> {
        self.hub
            .context()
            .lifetime_manager()
            .send(target, payload::serialized(invocation))
            .await
            .map_err(|error| match error {
                SendError::EmptyGroupName => RestError::BadRequest(error.to_string()),
                other => RestError::Internal(other.to_string()),
            })?;
        Ok(self.done())
    }

    /// The excluded connection ids.
    fn excluded(&self) -> &[String] {
        &self.query.excluded
    }

    /// The close reason.
    fn reason(&self) -> Option<&str> {
        self.query.reason.as_deref().filter(|r| !r.is_empty())
    }
}

async fn serve(azure: Azure, request: Request, legacy: bool) -> Result<Response, RestError> {
    let (parts, body) = request.into_parts();
    let path = parts.uri.path().to_owned();
    let token = bearer_token(&parts.headers, None).ok_or(RestError::Unauthorized(None))?;
    azure
        .keys
        .verify_rest(&token, &path)
        .map_err(|error| RestError::Unauthorized(Some(error)))?;
    let prefix = if legacy {
        "/api/v1/hubs/"
    } else {
        "/api/hubs/"
    };
    let rest = path
        .strip_prefix(prefix)
        .ok_or(RestError::NoSuchOperation)?;
    let rest = rest.strip_suffix('/').unwrap_or(rest);
    let mut segments = Vec::new();
    for segment in rest.split('/') {
        if segment.is_empty() {
            return Err(RestError::BadRequest(
                "empty path segment: ids and names must not be empty".to_owned(),
            ));
        }
        segments.push(percent_decode(segment));
    }
    let Some((hub, segments)) = segments.split_first() else {
        return Err(RestError::NoSuchOperation);
    };
    let Route { op, success } = route(&parts.method, segments, legacy)?;
    check_ids(&op)?;
    let query = Query::parse(parts.uri.query());
    let name = internal_hub_name(hub, query.application.as_deref()).map_err(hub_error)?;
    let hub = azure.hubs.hub(&name).await.map_err(hub_error)?;
    let base_url = base_url(&parts.headers, &parts.uri);
    let body = if reads_body(&op) {
        read_body(&parts.headers, body).await?
    } else {
        Bytes::new()
    };
    let call = Call {
        azure,
        hub,
        query,
        success,
        headers: parts.headers,
        body,
        base_url,
        path,
    };
    match op {
        Op::Broadcast => hubs::broadcast(&call).await,
        Op::CloseAll => hubs::close_all(&call).await,
        Op::GenerateToken => hubs::generate_token(&call),
        Op::Execute => hubs::execute(&call).await,
        Op::ConnectionExists(id) => connections::exists(&call, &id).await,
        Op::CloseConnection(id) => connections::close(&call, &id).await,
        Op::SendToConnection(id) => connections::send(&call, &id).await,
        Op::InvokeConnection(id) => connections::invoke(&call, &id).await,
        Op::RemoveConnectionFromAllGroups(id) => connections::leave_all_groups(&call, &id).await,
        Op::Stream(_) => Err(RestError::NotSupported("Streaming to a connection")),
        Op::GroupExists(group) => groups::exists(&call, &group).await,
        Op::SendToGroup(group) => groups::send(&call, &group).await,
        Op::CloseGroup(group) => groups::close(&call, &group).await,
        Op::ListGroupConnections(group) => groups::list_connections(&call, &group).await,
        Op::AddConnectionToGroup { group, connection } => {
            groups::add_connection(&call, &group, &connection).await
        }
        Op::RemoveConnectionFromGroup { group, connection } => {
            groups::remove_connection(&call, &group, &connection).await
        }
        Op::UserExists(user) => users::exists(&call, &user).await,
        Op::SendToUser(user) => users::send(&call, &user).await,
        Op::CloseUser(user) => users::close(&call, &user).await,
        Op::RemoveUserFromAllGroups(user) => users::leave_all_groups(&call, &user).await,
        Op::AddUserToGroup { user, group } => users::add_to_group(&call, &user, &group).await,
        Op::RemoveUserFromGroup { user, group } => {
            users::remove_from_group(&call, &user, &group).await
        }
        Op::UserInGroup { user, group } => users::in_group(&call, &user, &group).await,
    }
}

/// Whether the operation reads the body.
fn reads_body(op: &Op) -> bool {
    matches!(
        op,
        Op::Broadcast
            | Op::Execute
            | Op::SendToConnection(_)
            | Op::InvokeConnection(_)
            | Op::SendToGroup(_)
            | Op::SendToUser(_)
    )
}

/// Bodies over the limit but at most this large are read to their end (and dropped) before the
/// 413: a server that answers and closes while the client is still sending resets the connection,
/// and the client may see the reset instead of the answer. Larger ones are answered at once.
const DRAIN_BYTES: usize = 8 * MAX_BODY_BYTES;

/// Reads a body of at most [`MAX_BODY_BYTES`]; 413 beyond.
async fn read_body(headers: &HeaderMap, body: Body) -> Result<Bytes, RestError> {
    let declared = headers
        .get(CONTENT_LENGTH)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.parse::<u64>().ok());
    let mut chunks = body.into_data_stream();
    if declared.is_some_and(|len| len > MAX_BODY_BYTES as u64) {
        if declared.is_some_and(|len| len <= DRAIN_BYTES as u64) {
            drain(&mut chunks, 0).await;
        }
        return Err(RestError::TooLarge(MAX_BODY_BYTES));
    }
    let mut read = BytesMut::new();
    while let Some(chunk) = chunks.next().await {
        let chunk = chunk
            .map_err(|error| RestError::BadRequest(format!("cannot read the body: {error}")))?;
        if read.len() + chunk.len() > MAX_BODY_BYTES {
            drain(&mut chunks, read.len() + chunk.len()).await;
            return Err(RestError::TooLarge(MAX_BODY_BYTES));
        }
        read.extend_from_slice(&chunk);
    }
    Ok(read.freeze())
}

/// Reads and drops the rest of a body, up to [`DRAIN_BYTES`] in all (`seen` so far).
async fn drain(chunks: &mut axum::body::BodyDataStream, mut seen: usize) {
    while seen <= DRAIN_BYTES {
        match chunks.next().await {
            Some(Ok(chunk)) => seen += chunk.len(),
            _ => return,
        }
    }
}

fn hub_error(error: AzureError) -> RestError {
    match error {
        AzureError::InvalidHub(_) | AzureError::InvalidApplication(_) => {
            RestError::BadRequest(error.to_string())
        }
        other => RestError::Internal(other.to_string()),
    }
}

/// Checks the lengths of the ids in the path: groups and users 1–1024 characters, groups not
/// only whitespace.
fn check_ids(op: &Op) -> Result<(), RestError> {
    let (user, group) = match op {
        Op::GroupExists(g)
        | Op::SendToGroup(g)
        | Op::CloseGroup(g)
        | Op::ListGroupConnections(g)
        | Op::AddConnectionToGroup { group: g, .. }
        | Op::RemoveConnectionFromGroup { group: g, .. } => (None, Some(g)),
        Op::UserExists(u)
        | Op::SendToUser(u)
        | Op::CloseUser(u)
        | Op::RemoveUserFromAllGroups(u) => (Some(u), None),
        Op::AddUserToGroup { user, group }
        | Op::RemoveUserFromGroup { user, group }
        | Op::UserInGroup { user, group } => (Some(user), Some(group)),
        _ => (None, None),
    };
    if let Some(user) = user
        && user.chars().count() > MAX_ID_LENGTH
    {
        return Err(RestError::BadRequest(format!(
            "a user id has at most {MAX_ID_LENGTH} characters"
        )));
    }
    if let Some(group) = group {
        if group.chars().count() > MAX_ID_LENGTH {
            return Err(RestError::BadRequest(format!(
                "a group name has at most {MAX_ID_LENGTH} characters"
            )));
        }
        if group.trim().is_empty() {
            return Err(RestError::BadRequest(
                "a group name must not be only whitespace".to_owned(),
            ));
        }
    }
    Ok(())
}

/// `scheme://host[:port]` of the request: the `Host` header (or the URI's authority), `https`
/// when `X-Forwarded-Proto` says so.
fn base_url(headers: &HeaderMap, uri: &axum::http::Uri) -> String {
    let host = headers
        .get(HOST)
        .and_then(|v| v.to_str().ok())
        .map(str::to_owned)
        .or_else(|| uri.authority().map(|a| a.as_str().to_owned()))
        .unwrap_or_else(|| "localhost".to_owned());
    let scheme = headers
        .get("x-forwarded-proto")
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.split(',').next())
        .map(str::trim)
        .filter(|v| v.eq_ignore_ascii_case("https"))
        .map_or("http", |_| "https");
    format!("{scheme}://{host}")
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used, clippy::expect_used)]

    use super::*;

    fn segments(path: &str) -> Vec<String> {
        path.split('/')
            .filter(|s| !s.is_empty())
            .map(percent_decode)
            .collect()
    }

    fn op(method: &Method, path: &str) -> Result<Route, RestError> {
        route(method, &segments(path), false)
    }

    #[test]
    fn routes() {
        let r = op(&Method::POST, ":send").unwrap();
        assert_eq!((r.op, r.success), (Op::Broadcast, StatusCode::ACCEPTED));
        assert_eq!(op(&Method::POST, "").unwrap().op, Op::Broadcast);
        assert!(matches!(
            op(&Method::GET, ":send"),
            Err(RestError::MethodNotAllowed(_))
        ));
        assert_eq!(
            op(&Method::HEAD, "users/user%2Fa").unwrap().op,
            Op::UserExists("user/a".to_owned())
        );
        assert_eq!(
            op(&Method::GET, "users/a/groups/g").unwrap().op,
            Op::UserInGroup {
                user: "a".to_owned(),
                group: "g".to_owned()
            }
        );
        let alias = op(&Method::PUT, "groups/g/users/a").unwrap();
        assert_eq!(alias.success, StatusCode::ACCEPTED);
        let current = op(&Method::DELETE, "users/a/groups/g").unwrap();
        assert_eq!(current.success, StatusCode::NO_CONTENT);
        assert_eq!(
            op(&Method::PUT, "connections/c/groups/g").unwrap().op,
            op(&Method::PUT, "groups/g/connections/c").unwrap().op
        );
        let legacy_close = route(&Method::DELETE, &segments("connections/c"), true).unwrap();
        assert_eq!(legacy_close.success, StatusCode::ACCEPTED);
        assert_eq!(
            op(&Method::DELETE, "connections/c").unwrap().success,
            StatusCode::OK
        );
        assert!(matches!(
            op(&Method::GET, "nothing/here"),
            Err(RestError::NoSuchOperation)
        ));
    }

    #[test]
    fn query_names_are_case_insensitive_and_excluded_repeats() {
        let q = Query::parse(Some(
            "excluded=a&excluded=b%2Fc&userId=u&MinutesToExpire=5&api-version=2022-06-01&application=App",
        ));
        assert_eq!(q.excluded, ["a", "b/c"]);
        assert_eq!(q.user_id.as_deref(), Some("u"));
        assert_eq!(q.minutes_to_expire.as_deref(), Some("5"));
        assert_eq!(q.application.as_deref(), Some("App"));
        assert_eq!(q.api_version.as_deref(), Some("2022-06-01"));
    }

    #[test]
    fn ids_are_checked() {
        assert!(check_ids(&Op::SendToGroup(" ".to_owned())).is_err());
        assert!(check_ids(&Op::SendToGroup("g".repeat(1025))).is_err());
        assert!(check_ids(&Op::SendToUser("u".repeat(1024))).is_ok());
        assert!(check_ids(&Op::SendToUser("u".repeat(1025))).is_err());
    }
}
