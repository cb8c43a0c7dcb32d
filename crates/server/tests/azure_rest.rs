//! The data-plane REST API of Azure SignalR Service compatibility, called as the Management SDK
//! calls it (HS256 tokens signed with the UTF-8 access key, audience without port and with the
//! query, PascalCase bodies), checked through clients connected at `/client/?hub=NAME`.

#![allow(
    clippy::unwrap_used,
    clippy::expect_used,
    clippy::panic,
    clippy::needless_pass_by_value
)]

mod common;

use base64::Engine;
use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use common::azure::{
    AzureClient, OTHER, PRIMARY, RECORD_SEPARATOR, SECONDARY, TokenIn, now, start,
};
use common::{Backend, TestApp};
use jsonwebtoken::{Algorithm, EncodingKey};
use reqwest::Method;
use reqwest::header::HeaderMap;
use serde_json::{Value, json};

const SDK_API_VERSION: &str = "api-version=2022-06-01";

/// A JWT built byte for byte as the .NET SDK builds it: header with a `kid`, then the payload,
/// HMAC over the UTF-8 bytes of `key`.
fn sdk_jwt(key: &str, payload: &Value) -> String {
    let header = URL_SAFE_NO_PAD.encode(r#"{"alg":"HS256","typ":"JWT","kid":"-1185377203"}"#);
    let payload = URL_SAFE_NO_PAD.encode(serde_json::to_vec(payload).unwrap());
    let message = format!("{header}.{payload}");
    let signature = jsonwebtoken::crypto::sign(
        message.as_bytes(),
        &EncodingKey::from_secret(key.as_bytes()).unwrap(),
        Algorithm::HS256,
    )
    .unwrap();
    format!("{message}.{signature}")
}

/// The Management SDK's REST token for `path`: audience `http://localhost{path}?{query}` (the
/// connection string's endpoint without port, the query without `excluded`/`reason`/`ttl`).
fn rest_token_with(key: &str, path: &str, exp: u64) -> String {
    sdk_jwt(
        key,
        &json!({
            "nameid": "BUILD-HOST_0f6e1c1e5b1e4f0a9d4c2b1a09876543",
            "nbf": now(),
            "exp": exp,
            "iat": now(),
            "aud": format!("http://localhost{path}?{SDK_API_VERSION}"),
        }),
    )
}

fn rest_token(path: &str) -> String {
    rest_token_with(PRIMARY, path, now() + 3600)
}

/// A client token as the Management SDK's negotiate makes it.
fn client_token(hub: &str, user: Option<&str>) -> String {
    let mut claims = json!({
        "nbf": now(),
        "exp": now() + 3600,
        "iat": now(),
        "aud": format!("http://localhost/client/?hub={hub}"),
    });
    if let Some(user) = user {
        claims["asrs.s.uid"] = json!(user);
    }
    sdk_jwt(PRIMARY, &claims)
}

/// An answer of the REST API.
#[derive(Debug)]
struct Answer {
    status: u16,
    headers: HeaderMap,
    text: String,
}

impl Answer {
    fn json(&self) -> Value {
        serde_json::from_str(&self.text)
            .unwrap_or_else(|e| panic!("not JSON ({e}): {:?}", self.text))
    }

    fn error_code(&self) -> Option<&str> {
        self.headers
            .get("x-ms-error-code")
            .and_then(|v| v.to_str().ok())
    }

    /// A 404 with this `x-ms-error-code`.
    fn assert_not_found(&self, code: &str) {
        assert_eq!(self.status, 404, "{self:?}");
        assert_eq!(self.error_code(), Some(code), "{self:?}");
    }
}

/// Calls the REST API: `path_and_query` under the service, a token for the path, `body` as the
/// SDK sends it.
async fn call(
    app: &TestApp,
    method: Method,
    path_and_query: &str,
    body: Option<(&str, Vec<u8>)>,
) -> Answer {
    let path = path_and_query.split('?').next().unwrap();
    call_with_token(app, method, path_and_query, body, Some(&rest_token(path))).await
}

async fn call_with_token(
    app: &TestApp,
    method: Method,
    path_and_query: &str,
    body: Option<(&str, Vec<u8>)>,
    token: Option<&str>,
) -> Answer {
    let mut request = app
        .http
        .request(method, format!("{}{path_and_query}", app.url));
    if let Some(token) = token {
        request = request.bearer_auth(token);
    }
    if let Some((content_type, body)) = body {
        request = request.header("content-type", content_type).body(body);
    }
    let response = request.send().await.unwrap();
    Answer {
        status: response.status().as_u16(),
        headers: response.headers().clone(),
        text: response.text().await.unwrap(),
    }
}

/// The .NET SDK's JSON body.
fn sdk_body(target: &str, arguments: Value) -> Option<(&'static str, Vec<u8>)> {
    Some((
        "application/json; charset=utf-8",
        serde_json::to_vec(&json!({"Target": target, "Arguments": arguments})).unwrap(),
    ))
}

async fn post_message(
    app: &TestApp,
    path_and_query: &str,
    target: &str,
    arguments: Value,
) -> Answer {
    call(
        app,
        Method::POST,
        path_and_query,
        sdk_body(target, arguments),
    )
    .await
}

/// A client at `/client/?{query}` with `token` in the query string, its `on_connected` done.
async fn connect_with(app: &TestApp, query: &str, token: &str) -> AzureClient {
    let mut client = AzureClient::connect(app, query, token, TokenIn::Query).await;
    client.settled().await;
    client
}

/// A client of user `user` (or anonymous) on hub `hub`.
async fn connect(app: &TestApp, hub: &str, user: Option<&str>) -> AzureClient {
    connect_with(app, &format!("hub={hub}"), &client_token(hub, user)).await
}

// ---------------------------------------------------------------------------------------------
// Health and authentication

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn health_needs_no_token() {
    let app = start(Backend::Sqlite).await;
    for path in [
        "/api/health?api-version=2022-06-01",
        "/api/health",
        "/api/v1/health",
    ] {
        for method in [Method::HEAD, Method::GET] {
            let answer = call_with_token(&app, method.clone(), path, None, None).await;
            assert_eq!(answer.status, 200, "{method} {path}");
        }
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn tokens_are_checked() {
    let app = start(Backend::Sqlite).await;
    let path = "/api/hubs/chat/:send";
    let send = |token: Option<String>| {
        let app = &app;
        async move {
            call_with_token(
                app,
                Method::POST,
                &format!("{path}?{SDK_API_VERSION}"),
                sdk_body("m", json!([])),
                token.as_deref(),
            )
            .await
        }
    };
    // The SDK's token, signed with either key.
    assert_eq!(send(Some(rest_token(path))).await.status, 202);
    assert_eq!(
        send(Some(rest_token_with(SECONDARY, path, now() + 60)))
            .await
            .status,
        202
    );
    // The documented form of the audience: the URL with port, without query.
    let documented = sdk_jwt(
        PRIMARY,
        &json!({"aud": format!("{}{path}", app.url), "exp": now() + 60}),
    );
    assert_eq!(send(Some(documented)).await.status, 202);

    let missing = send(None).await;
    assert_eq!(missing.status, 401);
    assert_eq!(missing.headers["www-authenticate"], "Bearer");
    assert_eq!(missing.error_code(), Some("Error.Request.Unauthorized"));
    assert_eq!(missing.json()["code"], "Error.Request.Unauthorized");

    let other_key = send(Some(rest_token_with(OTHER, path, now() + 60))).await;
    assert_eq!(other_key.status, 401);
    let expired = send(Some(rest_token_with(PRIMARY, path, now() - 120))).await;
    assert_eq!(expired.status, 401);
    let other_path = send(Some(rest_token("/api/hubs/chat/users/a/:send"))).await;
    assert_eq!(other_path.status, 401);
    assert_eq!(
        other_path.headers["www-authenticate"],
        "Bearer error=\"invalid_token\", error_description=\"The audience is invalid\""
    );
    let no_exp = sdk_jwt(PRIMARY, &json!({"aud": format!("http://localhost{path}")}));
    assert_eq!(send(Some(no_exp)).await.status, 401);
}

// ---------------------------------------------------------------------------------------------
// Sending

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn broadcast_with_exclusions() {
    let app = start(Backend::Sqlite).await;
    let mut a = connect(&app, "chat", Some("alice")).await;
    let mut b = connect(&app, "chat", Some("bob")).await;
    let mut other_hub = connect(&app, "news", Some("alice")).await;

    let answer = post_message(
        &app,
        &format!("/api/hubs/chat/:send?{SDK_API_VERSION}"),
        "newMessage",
        json!(["hello", {"n": 1}]),
    )
    .await;
    assert_eq!(answer.status, 202, "{answer:?}");
    a.expect("newMessage", json!(["hello", {"n": 1}])).await;
    b.expect("newMessage", json!(["hello", {"n": 1}])).await;

    // Repeated `excluded`; hub names are case-insensitive.
    let answer = post_message(
        &app,
        &format!(
            "/api/hubs/Chat/:send?excluded={}&excluded=unknown&{SDK_API_VERSION}",
            a.connection_id
        ),
        "m",
        json!(["not a"]),
    )
    .await;
    assert_eq!(answer.status, 202);
    post_message(&app, "/api/hubs/chat/:send", "m", json!(["all"])).await;
    b.expect("m", json!(["not a"])).await;
    b.expect("m", json!(["all"])).await;
    a.expect("m", json!(["all"])).await;

    // The other hub got nothing of this.
    post_message(&app, "/api/hubs/news/:send", "m", json!(["news"])).await;
    other_hub.expect("m", json!(["news"])).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn send_to_users_connections_and_groups() {
    let app = start(Backend::Sqlite).await;
    let mut a1 = connect(&app, "chat", Some("user/a")).await;
    let mut a2 = connect(&app, "chat", Some("user/a")).await;
    let mut b = connect(&app, "chat", Some("bob")).await;

    // A user id with `/`, escaped as the SDK escapes path segments.
    let answer = post_message(&app, "/api/hubs/chat/users/user%2Fa/:send", "u", json!([1])).await;
    assert_eq!(answer.status, 202, "{answer:?}");
    a1.expect("u", json!([1])).await;
    a2.expect("u", json!([1])).await;

    let path = format!("/api/hubs/chat/connections/{}/:send", b.connection_id);
    assert_eq!(post_message(&app, &path, "c", json!([2])).await.status, 202);
    b.expect("c", json!([2])).await;

    // Unknown targets: still 202.
    for path in [
        "/api/hubs/chat/users/nobody/:send",
        "/api/hubs/chat/connections/nothing/:send",
        "/api/hubs/chat/groups/empty/:send",
    ] {
        assert_eq!(post_message(&app, path, "x", json!([])).await.status, 202);
    }

    // A group, with a `/` in its name.
    for client in [&a1, &b] {
        let path = format!(
            "/api/hubs/chat/groups/group%2Fa/connections/{}",
            client.connection_id
        );
        assert_eq!(call(&app, Method::PUT, &path, None).await.status, 200);
    }
    let path = format!(
        "/api/hubs/chat/groups/group%2Fa/:send?excluded={}",
        b.connection_id
    );
    assert_eq!(
        post_message(&app, &path, "g", json!(["no b"])).await.status,
        202
    );
    post_message(
        &app,
        "/api/hubs/chat/groups/group%2Fa/:send",
        "g",
        json!(["all"]),
    )
    .await;
    a1.expect("g", json!(["no b"])).await;
    a1.expect("g", json!(["all"])).await;
    b.expect("g", json!(["all"])).await;
    // a2 is not in the group: the next thing it sees is this.
    post_message(&app, "/api/hubs/chat/users/user%2Fa/:send", "u", json!([3])).await;
    a2.expect("u", json!([3])).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_application_prefixes_the_hub() {
    let app = start(Backend::Sqlite).await;
    let mut prefixed = connect(&app, "app_chat", Some("alice")).await;
    let mut plain = connect(&app, "chat", Some("alice")).await;
    let answer = post_message(
        &app,
        &format!("/api/hubs/chat/:send?application=App&{SDK_API_VERSION}"),
        "m",
        json!(["prefixed"]),
    )
    .await;
    assert_eq!(answer.status, 202);
    post_message(&app, "/api/hubs/chat/:send", "m", json!(["plain"])).await;
    prefixed.expect("m", json!(["prefixed"])).await;
    plain.expect("m", json!(["plain"])).await;

    let answer = post_message(
        &app,
        "/api/hubs/chat/:send?application=1app",
        "m",
        json!([]),
    )
    .await;
    assert_eq!(answer.status, 400);
    assert_eq!(answer.error_code(), Some("Error.Request.Invalid"));
    let answer = post_message(&app, "/api/hubs/1chat/:send", "m", json!([])).await;
    assert_eq!(answer.status, 400);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn bodies() {
    let app = start(Backend::Sqlite).await;
    let mut client = connect(&app, "chat", None).await;
    let path = "/api/hubs/chat/:send";

    // camelCase, as documented; no charset.
    let body = serde_json::to_vec(&json!({"target": "camel", "arguments": [true]})).unwrap();
    let answer = call(&app, Method::POST, path, Some(("application/json", body))).await;
    assert_eq!(answer.status, 202);
    client.expect("camel", json!([true])).await;

    // The SDK's binary body: a MessagePack map of protocol name to framed message.
    let json_frame = format!(
        "{}{RECORD_SEPARATOR}",
        json!({"type": 1, "target": "binary", "arguments": ["from json"]})
    );
    let mut body = Vec::new();
    rmp::encode::write_map_len(&mut body, 1).unwrap();
    rmp::encode::write_str(&mut body, "json").unwrap();
    rmp::encode::write_bin(&mut body, json_frame.as_bytes()).unwrap();
    let answer = call(
        &app,
        Method::POST,
        path,
        Some(("application/octet-stream", body)),
    )
    .await;
    assert_eq!(answer.status, 202, "{answer:?}");
    client.expect("binary", json!(["from json"])).await;

    // Bad bodies.
    for (content_type, body, status) in [
        ("application/json", b"{".to_vec(), 400),
        ("application/json", br#"{"Arguments":[]}"#.to_vec(), 400),
        (
            "application/json",
            br#"{"Target":"m","Arguments":{}}"#.to_vec(),
            400,
        ),
        ("application/x-msgpack", b"\x01".to_vec(), 400),
        ("text/xml", b"<m/>".to_vec(), 415),
    ] {
        let answer = call(&app, Method::POST, path, Some((content_type, body))).await;
        assert_eq!(answer.status, status, "{answer:?}");
        let detail = answer.json();
        assert!(
            detail["code"].is_string() && detail["message"].is_string(),
            "{detail}"
        );
        assert_eq!(answer.error_code(), detail["code"].as_str());
    }

    // Over 1 MB.
    let big = json!({"Target": "m", "Arguments": ["x".repeat(1024 * 1024)]});
    let answer = call(
        &app,
        Method::POST,
        path,
        Some(("application/json", serde_json::to_vec(&big).unwrap())),
    )
    .await;
    assert_eq!(answer.status, 413);

    // Nothing of the refused bodies arrived.
    post_message(&app, path, "last", json!([])).await;
    client.expect("last", json!([])).await;
}

// ---------------------------------------------------------------------------------------------
// Existence checks and groups

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn existence_checks() {
    let app = start(Backend::Sqlite).await;
    let client = connect(&app, "chat", Some("alice")).await;
    let id = client.connection_id.clone();
    let group_path = format!("/api/hubs/chat/groups/team/connections/{id}");
    assert_eq!(call(&app, Method::PUT, &group_path, None).await.status, 200);

    for method in [Method::HEAD, Method::GET] {
        for prefix in ["/api/hubs/chat", "/api/v1/hubs/chat"] {
            for (path, code) in [
                (format!("connections/{id}"), "Warning.Connection.NotExisted"),
                ("users/alice".to_owned(), "Warning.User.NotExisted"),
                ("groups/team".to_owned(), "Warning.Group.NotExisted"),
                ("users/alice/groups/team".to_owned(), "Info.User.NotInGroup"),
                ("groups/team/users/alice".to_owned(), "Info.User.NotInGroup"),
            ] {
                let answer = call(&app, method.clone(), &format!("{prefix}/{path}"), None).await;
                assert_eq!(answer.status, 200, "{method} {prefix}/{path}: {answer:?}");
                let missing = path
                    .replace(&id, "nothing")
                    .replace("alice", "nobody")
                    .replace("team", "none");
                let answer = call(&app, method.clone(), &format!("{prefix}/{missing}"), None).await;
                answer.assert_not_found(code);
            }
        }
    }
    // Ids are case-sensitive, hub names are not.
    call(&app, Method::HEAD, "/api/hubs/chat/users/Alice", None)
        .await
        .assert_not_found("Warning.User.NotExisted");
    assert_eq!(
        call(&app, Method::HEAD, "/api/hubs/CHAT/users/alice", None)
            .await
            .status,
        200
    );
    let answer = call(&app, Method::GET, "/api/hubs/chat/groups/none", None).await;
    assert_eq!(answer.json()["code"], "Warning.Group.NotExisted");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn connection_group_membership() {
    let app = start(Backend::Sqlite).await;
    let mut client = connect(&app, "chat", Some("alice")).await;
    let id = client.connection_id.clone();

    // Both path forms.
    let add = format!("/api/hubs/chat/groups/one/connections/{id}");
    let alias = format!("/api/hubs/chat/connections/{id}/groups/two");
    assert_eq!(call(&app, Method::PUT, &add, None).await.status, 200);
    assert_eq!(call(&app, Method::PUT, &alias, None).await.status, 200);
    for group in ["one", "two"] {
        let path = format!("/api/hubs/chat/groups/{group}");
        assert_eq!(call(&app, Method::HEAD, &path, None).await.status, 200);
    }
    call(
        &app,
        Method::PUT,
        "/api/hubs/chat/groups/one/connections/nothing",
        None,
    )
    .await
    .assert_not_found("Error.Connection.NotExisted");

    // Leave one; leaving again still succeeds.
    assert_eq!(call(&app, Method::DELETE, &add, None).await.status, 200);
    assert_eq!(call(&app, Method::DELETE, &add, None).await.status, 200);
    call(&app, Method::HEAD, "/api/hubs/chat/groups/one", None)
        .await
        .assert_not_found("Warning.Group.NotExisted");

    // Leave every group.
    assert_eq!(call(&app, Method::PUT, &add, None).await.status, 200);
    let path = format!("/api/hubs/chat/connections/{id}/groups");
    assert_eq!(call(&app, Method::DELETE, &path, None).await.status, 200);
    for group in ["one", "two"] {
        let path = format!("/api/hubs/chat/groups/{group}");
        call(&app, Method::HEAD, &path, None)
            .await
            .assert_not_found("Warning.Group.NotExisted");
    }
    post_message(&app, "/api/hubs/chat/groups/one/:send", "g", json!([])).await;
    post_message(&app, "/api/hubs/chat/:send", "all", json!([])).await;
    client.expect("all", json!([])).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn group_members_page_by_page() {
    let app = start(Backend::Sqlite).await;
    let mut ids = Vec::new();
    let mut clients = Vec::new();
    for user in ["a", "b", "c"] {
        let client = connect(&app, "chat", Some(user)).await;
        let path = format!(
            "/api/hubs/chat/groups/team/connections/{}",
            client.connection_id
        );
        assert_eq!(call(&app, Method::PUT, &path, None).await.status, 200);
        ids.push((client.connection_id.clone(), user.to_owned()));
        clients.push(client);
    }
    ids.sort();
    let expected: Vec<Value> = ids
        .iter()
        .map(|(id, user)| json!({"connectionId": id, "userId": user}))
        .collect();

    let list = "/api/hubs/chat/groups/team/connections";
    let all = call(
        &app,
        Method::GET,
        &format!("{list}?api-version=2024-12-01"),
        None,
    )
    .await;
    assert_eq!(all.status, 200);
    assert_eq!(all.json(), json!({"value": expected}));

    // Two at a time, following nextLink.
    let first = call(&app, Method::GET, &format!("{list}?maxpagesize=2"), None).await;
    let first = first.json();
    assert_eq!(first["value"], json!(expected[..2]));
    let next = first["nextLink"].as_str().expect("a next link");
    let next = next.strip_prefix(&app.url).expect("an absolute link");
    let second = call(&app, Method::GET, next, None).await.json();
    assert_eq!(second, json!({"value": expected[2..]}));

    // `top` bounds the total.
    let first = call(
        &app,
        Method::GET,
        &format!("{list}?top=2&maxpagesize=1"),
        None,
    )
    .await;
    let first = first.json();
    assert_eq!(first["value"], json!(expected[..1]));
    let next = first["nextLink"].as_str().unwrap();
    let second = call(
        &app,
        Method::GET,
        next.strip_prefix(&app.url).unwrap(),
        None,
    )
    .await
    .json();
    assert_eq!(second, json!({"value": expected[1..2]}));

    for bad in ["maxpagesize=0", "top=0", "continuationToken=%25%25"] {
        let answer = call(&app, Method::GET, &format!("{list}?{bad}"), None).await;
        assert_eq!(answer.status, 400, "{bad}");
    }
    let empty = call(
        &app,
        Method::GET,
        "/api/hubs/chat/groups/none/connections",
        None,
    )
    .await;
    assert_eq!(empty.json(), json!({"value": []}));
}

async fn user_groups_with_ttl(backend: Backend) {
    let app = start(backend).await;
    let mut current = connect(&app, "chat", Some("user/a")).await;

    // Without ttl: current connections and later ones.
    let path = "/api/hubs/chat/users/user%2Fa/groups/team";
    assert_eq!(call(&app, Method::PUT, path, None).await.status, 200);
    // ttl = 0: current connections only.
    let now_only = "/api/hubs/chat/users/user%2Fa/groups/now-only?ttl=0";
    assert_eq!(call(&app, Method::PUT, now_only, None).await.status, 200);
    // A ttl, with the group-first path of the older API (202).
    let timed = "/api/v1/hubs/chat/groups/timed/users/user%2Fa?ttl=3600";
    assert_eq!(call(&app, Method::PUT, timed, None).await.status, 202);

    for (path, status) in [
        ("/api/hubs/chat/users/user%2Fa/groups/team", 200),
        ("/api/hubs/chat/users/user%2Fa/groups/now-only", 200),
        ("/api/hubs/chat/users/user%2Fa/groups/timed", 200),
        ("/api/hubs/chat/users/user%2Fa/groups/other", 404),
        ("/api/hubs/chat/users/somebody/groups/team", 404),
    ] {
        // The SDK asks with GET.
        let answer = call(&app, Method::GET, path, None).await;
        assert_eq!(answer.status, status, "{path}");
    }

    let mut later = connect(&app, "chat", Some("user/a")).await;
    for group in ["team", "now-only", "timed"] {
        post_message(
            &app,
            &format!("/api/hubs/chat/groups/{group}/:send"),
            "g",
            json!([group]),
        )
        .await;
    }
    current.expect("g", json!(["team"])).await;
    current.expect("g", json!(["now-only"])).await;
    current.expect("g", json!(["timed"])).await;
    later.expect("g", json!(["team"])).await;
    later.expect("g", json!(["timed"])).await;

    for bad in ["ttl=-1", "ttl=soon", "ttl=2147483648"] {
        let answer = call(
            &app,
            Method::PUT,
            &format!("/api/hubs/chat/users/user%2Fa/groups/team?{bad}"),
            None,
        )
        .await;
        assert_eq!(answer.status, 400, "{bad}");
    }

    // Leave one group (204), then all (204).
    assert_eq!(call(&app, Method::DELETE, path, None).await.status, 204);
    call(&app, Method::GET, path, None)
        .await
        .assert_not_found("Info.User.NotInGroup");
    let all = "/api/hubs/chat/users/user%2Fa/groups";
    assert_eq!(call(&app, Method::DELETE, all, None).await.status, 204);
    call(
        &app,
        Method::HEAD,
        "/api/hubs/chat/users/user%2Fa/groups/timed",
        None,
    )
    .await
    .assert_not_found("Info.User.NotInGroup");
    let mut newest = connect(&app, "chat", Some("user/a")).await;
    for group in ["team", "timed"] {
        post_message(
            &app,
            &format!("/api/hubs/chat/groups/{group}/:send"),
            "g",
            json!([group]),
        )
        .await;
    }
    post_message(
        &app,
        "/api/hubs/chat/users/user%2Fa/:send",
        "done",
        json!([]),
    )
    .await;
    for client in [&mut current, &mut later, &mut newest] {
        client.expect("done", json!([])).await;
    }
    // The older API's user-group paths.
    let v1 = "/api/v1/hubs/chat/groups/timed/users/user%2Fa";
    assert_eq!(call(&app, Method::PUT, v1, None).await.status, 202);
    assert_eq!(call(&app, Method::GET, v1, None).await.status, 200);
    assert_eq!(call(&app, Method::DELETE, v1, None).await.status, 202);
    let v1_all = "/api/v1/hubs/chat/users/user%2Fa/groups";
    assert_eq!(call(&app, Method::DELETE, v1_all, None).await.status, 200);
}

on_both_backends!(user_groups_with_ttl);

// ---------------------------------------------------------------------------------------------
// Closing connections

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn closing_connections() {
    let app = start(Backend::Sqlite).await;
    let mut one = connect(&app, "chat", Some("alice")).await;
    let path = format!(
        "/api/hubs/chat/connections/{}?reason=bye",
        one.connection_id
    );
    assert_eq!(call(&app, Method::DELETE, &path, None).await.status, 200);
    assert_eq!(
        one.expect_close().await,
        json!({"type": 7, "error": "bye", "allowReconnect": true})
    );
    // Unknown connection: still 200; the older API answers 202.
    let path = "/api/hubs/chat/connections/nothing";
    assert_eq!(call(&app, Method::DELETE, path, None).await.status, 200);
    let path = "/api/v1/hubs/chat/connections/nothing";
    assert_eq!(call(&app, Method::DELETE, path, None).await.status, 202);

    // A user's connections but the excluded one.
    let mut a1 = connect(&app, "chat", Some("alice")).await;
    let mut a2 = connect(&app, "chat", Some("alice")).await;
    let path = format!(
        "/api/hubs/chat/users/alice/:closeConnections?excluded={}&reason=user",
        a2.connection_id
    );
    assert_eq!(call(&app, Method::POST, &path, None).await.status, 204);
    assert_eq!(a1.expect_close().await["error"], "user");

    // A group's.
    let mut b = connect(&app, "chat", Some("bob")).await;
    let path = format!("/api/hubs/chat/groups/g/connections/{}", b.connection_id);
    assert_eq!(call(&app, Method::PUT, &path, None).await.status, 200);
    let path = "/api/hubs/chat/groups/g/:closeConnections?reason=group";
    assert_eq!(call(&app, Method::POST, path, None).await.status, 204);
    assert_eq!(b.expect_close().await["error"], "group");

    // Everyone's, without a reason.
    let mut c = connect(&app, "chat", Some("carol")).await;
    let path = "/api/hubs/chat/:closeConnections";
    assert_eq!(call(&app, Method::POST, path, None).await.status, 204);
    assert_eq!(
        a2.expect_close().await,
        json!({"type": 7, "allowReconnect": true})
    );
    assert_eq!(c.expect_close().await["type"], 7);
}

// ---------------------------------------------------------------------------------------------
// Client tokens and invocations

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn generated_tokens_connect() {
    let app = start(Backend::Sqlite).await;
    let answer = call(
        &app,
        Method::POST,
        "/api/hubs/Chat/:generateToken?userId=alice&minutesToExpire=5&api-version=2024-01-01",
        None,
    )
    .await;
    assert_eq!(answer.status, 200, "{answer:?}");
    let token = answer.json()["token"].as_str().unwrap().to_owned();
    let claims: Value = jsonwebtoken::dangerous::insecure_decode_claims(&token).unwrap();
    assert_eq!(claims["asrs.s.uid"], "alice");
    assert_eq!(claims["aud"], format!("{}/client/?hub=chat", app.url));
    assert_eq!(
        claims["exp"].as_u64().unwrap() - claims["iat"].as_u64().unwrap(),
        300
    );
    let mut client = connect_with(&app, "hub=chat", &token).await;
    assert_eq!(
        call(&app, Method::HEAD, "/api/hubs/chat/users/alice", None)
            .await
            .status,
        200
    );
    post_message(&app, "/api/hubs/chat/users/alice/:send", "hi", json!([])).await;
    client.expect("hi", json!([])).await;

    // Defaults: no user, an hour.
    let answer = call(&app, Method::POST, "/api/hubs/chat/:generateToken", None).await;
    let claims: Value =
        jsonwebtoken::dangerous::insecure_decode_claims(answer.json()["token"].as_str().unwrap())
            .unwrap();
    assert!(claims.get("asrs.s.uid").is_none());
    assert_eq!(
        claims["exp"].as_u64().unwrap() - claims["iat"].as_u64().unwrap(),
        3600
    );
    let answer = call(
        &app,
        Method::POST,
        "/api/hubs/chat/:generateToken?minutesToExpire=0",
        None,
    )
    .await;
    assert_eq!(answer.status, 400);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn invoke_a_client_and_get_its_result() {
    let app = start(Backend::Sqlite).await;
    let mut client = connect(&app, "chat", Some("alice")).await;
    let path = format!(
        "/api/hubs/chat/connections/{}/:invoke",
        client.connection_id
    );

    let request = {
        let app_url = app.url.clone();
        let http = app.http.clone();
        let path = path.clone();
        tokio::spawn(async move {
            let response = http
                .post(format!("{app_url}{path}?api-version=2024-12-01"))
                .bearer_auth(rest_token(&path))
                .json(&json!({"target": "echo", "arguments": ["Hello, World!"]}))
                .send()
                .await
                .unwrap();
            (response.status().as_u16(), response.text().await.unwrap())
        })
    };
    let invocation = client.next_message().await.expect("an invocation");
    assert_eq!(invocation["target"], "echo", "{invocation}");
    assert_eq!(invocation["arguments"], json!(["Hello, World!"]));
    let id = invocation["invocationId"]
        .as_str()
        .expect("an invocation id");
    client
        .send(json!({"type": 3, "invocationId": id, "result": {"message": "Hello, World!"}}))
        .await;
    let (status, body) = request.await.unwrap();
    assert_eq!(status, 200, "{body}");
    assert_eq!(
        serde_json::from_str::<Value>(&body).unwrap(),
        json!({"result": {"message": "Hello, World!"}})
    );

    // The client answers with an error.
    let request = {
        let app_url = app.url.clone();
        let http = app.http.clone();
        let path = path.clone();
        tokio::spawn(async move {
            let response = http
                .post(format!("{app_url}{path}"))
                .bearer_auth(rest_token(&path))
                .json(&json!({"Target": "fail", "Arguments": []}))
                .send()
                .await
                .unwrap();
            let code = response
                .headers()
                .get("x-ms-error-code")
                .map(|v| v.to_str().unwrap().to_owned());
            (
                response.status().as_u16(),
                code,
                response.text().await.unwrap(),
            )
        })
    };
    let invocation = client.next_message().await.expect("an invocation");
    let id = invocation["invocationId"].as_str().unwrap();
    client
        .send(json!({"type": 3, "invocationId": id, "error": "no way"}))
        .await;
    let (status, code, body) = request.await.unwrap();
    assert_eq!(status, 400, "{body}");
    assert_eq!(code.as_deref(), Some("Error.Connection.InvocationFailed"));
    assert_eq!(
        serde_json::from_str::<Value>(&body).unwrap()["message"],
        "no way"
    );

    post_message(
        &app,
        "/api/hubs/chat/connections/nothing/:invoke",
        "echo",
        json!([]),
    )
    .await
    .assert_not_found("Error.Connection.NotExisted");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn execute_commands_on_filtered_connections() {
    let app = start(Backend::Sqlite).await;
    let mut l1 = connect(&app, "chat", Some("listener-1")).await;
    let mut l2 = connect(&app, "chat", Some("listener-2")).await;
    let mut other = connect(&app, "chat", Some("other")).await;
    let path = "/api/hubs/chat/:execute?filter=startswith%28userId%2C%20%27listener-%27%29&api-version=2024-01-01";
    let commands = json!([
        {"type": "JoinGroup", "group": "listeners"},
        {"type": "SendMessage", "message": {"target": "hi", "arguments": [1]}},
    ]);
    let answer = call(
        &app,
        Method::POST,
        path,
        Some(("application/json", serde_json::to_vec(&commands).unwrap())),
    )
    .await;
    assert_eq!(answer.status, 202, "{answer:?}");
    l1.expect("hi", json!([1])).await;
    l2.expect("hi", json!([1])).await;
    post_message(
        &app,
        "/api/hubs/chat/groups/listeners/:send",
        "g",
        json!([]),
    )
    .await;
    post_message(&app, "/api/hubs/chat/:send", "all", json!([])).await;
    for listener in [&mut l1, &mut l2] {
        listener.expect("g", json!([])).await;
        listener.expect("all", json!([])).await;
    }
    other.expect("all", json!([])).await;

    // Close the group's members but one.
    let filter = format!(
        "'listeners' in groups and connectionId ne '{}'",
        l2.connection_id
    );
    let path = format!(
        "/api/hubs/chat/:execute?filter={}",
        form_urlencoded::byte_serialize(filter.as_bytes()).collect::<String>()
    );
    let commands = json!([{"Type": "CloseConnection", "Reason": "bye"}]);
    let answer = call(
        &app,
        Method::POST,
        &path,
        Some(("application/json", serde_json::to_vec(&commands).unwrap())),
    )
    .await;
    assert_eq!(answer.status, 202, "{answer:?}");
    assert_eq!(l1.expect_close().await["error"], "bye");

    for (query, body) in [
        ("filter=userId%20eq", json!([])),
        ("", json!([{"type": "Dance"}])),
        ("", json!([{"type": "JoinGroup"}])),
        ("", json!({"type": "JoinGroup", "group": "g"})),
        (
            "",
            json!([{"type": "SendMessage", "message": {"arguments": []}}]),
        ),
    ] {
        let answer = call(
            &app,
            Method::POST,
            &format!("/api/hubs/chat/:execute?{query}"),
            Some(("application/json", serde_json::to_vec(&body).unwrap())),
        )
        .await;
        assert_eq!(answer.status, 400, "{query} {body}");
    }
    // Nothing reached the others meanwhile.
    post_message(&app, "/api/hubs/chat/:send", "last", json!([])).await;
    l2.expect("last", json!([])).await;
    other.expect("last", json!([])).await;
}

// ---------------------------------------------------------------------------------------------
// The older API, other paths

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_older_api() {
    let app = start(Backend::Sqlite).await;
    let mut a = connect(&app, "chat", Some("alice")).await;
    let mut b = connect(&app, "chat", Some("bob")).await;

    let broadcast = format!("/api/v1/hubs/chat?excluded={}", b.connection_id);
    assert_eq!(
        post_message(&app, &broadcast, "all", json!([1]))
            .await
            .status,
        202
    );
    let user = "/api/v1/hubs/chat/users/bob";
    assert_eq!(
        post_message(&app, user, "user", json!([2])).await.status,
        202
    );
    let connection = format!("/api/v1/hubs/chat/connections/{}", a.connection_id);
    assert_eq!(
        post_message(&app, &connection, "conn", json!([3]))
            .await
            .status,
        202
    );
    let join = format!("/api/v1/hubs/chat/groups/g/connections/{}", b.connection_id);
    assert_eq!(call(&app, Method::PUT, &join, None).await.status, 200);
    assert_eq!(
        post_message(&app, "/api/v1/hubs/chat/groups/g", "group", json!([4]))
            .await
            .status,
        202
    );
    // The newer operations are served under the older prefix too.
    assert_eq!(
        post_message(&app, "/api/v1/hubs/chat/:send", "new", json!([5]))
            .await
            .status,
        202
    );
    a.expect("all", json!([1])).await;
    a.expect("conn", json!([3])).await;
    a.expect("new", json!([5])).await;
    b.expect("user", json!([2])).await;
    b.expect("group", json!([4])).await;
    b.expect("new", json!([5])).await;

    // Errors of the older API are plain text.
    let answer = call(
        &app,
        Method::POST,
        "/api/v1/hubs/chat",
        Some(("application/json", b"{".to_vec())),
    )
    .await;
    assert_eq!(answer.status, 400);
    assert_eq!(answer.headers["content-type"], "text/plain; charset=utf-8");
    assert_eq!(answer.error_code(), Some("Error.Request.Invalid"));

    assert_eq!(call(&app, Method::DELETE, &join, None).await.status, 200);
    assert_eq!(
        call(&app, Method::DELETE, &connection, None).await.status,
        202
    );
    assert_eq!(a.expect_close().await["type"], 7);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn unknown_and_unsupported_operations() {
    let app = start(Backend::Sqlite).await;
    let answer = call(&app, Method::GET, "/api/hubs/chat/nothing/here", None).await;
    assert_eq!(answer.status, 404);
    assert_eq!(answer.error_code(), Some("Error.Request.NotExisted"));
    let answer = call(&app, Method::GET, "/api/hubs/chat/:send", None).await;
    assert_eq!(answer.status, 405);
    assert_eq!(answer.headers["allow"], "POST");
    for path in [
        "/api/hubs/chat/connections/c/streams/s/:send",
        "/api/hubs/chat/connections/c/streams/s/:complete",
    ] {
        let answer = call(&app, Method::POST, path, None).await;
        assert_eq!(answer.status, 501, "{path}");
        assert_eq!(answer.json()["code"], "Error.Request.NotSupported");
    }
    let answer = call(
        &app,
        Method::PUT,
        "/api/hubs/chat/groups/%20/connections/c",
        None,
    )
    .await;
    assert_eq!(answer.status, 400);
}

// ---------------------------------------------------------------------------------------------
// Several nodes

/// Two nodes over Redis (`SIGNALBOX_TEST_REDIS`, default `redis://127.0.0.1:6379`) on one
/// database, with the Azure API on both.
async fn two_nodes() -> (TestApp, TestApp) {
    let redis = std::env::var("SIGNALBOX_TEST_REDIS")
        .unwrap_or_else(|_| "redis://127.0.0.1:6379".to_owned());
    let prefix = format!("azure-rest-{}", uuid::Uuid::now_v7().simple());
    let db = common::TestDb::new(Backend::Sqlite).await;
    let node = |db: common::TestDb, name: &str| {
        let mut config = common::test_config(&db);
        config.node = format!("{prefix}-{name}");
        config.backplane = Some(redis.clone());
        config.cluster.channel_prefix = prefix.clone();
        config.connection_token_secret =
            Some("azure-rest-connection-token-secret-0123456789".to_owned());
        config.azure.access_keys = vec![PRIMARY.to_owned()];
        TestApp::start_on(db, config)
    };
    let shared = db.share();
    let a = node(db, "a").await;
    let b = node(shared, "b").await;
    (a, b)
}

/// REST calls on one node see and reach the connections of the other: existence checks, group
/// membership of connections and users, member lists, sends and closes.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn rest_calls_reach_every_node() {
    let (a, b) = two_nodes().await;
    let mut alice = connect(&b, "chat", Some("alice")).await;
    let id = alice.connection_id.clone();

    // Existence, asked on the node without the connection.
    for path in [
        format!("/api/hubs/chat/connections/{id}"),
        "/api/hubs/chat/users/alice".to_owned(),
    ] {
        assert_eq!(
            call(&a, Method::HEAD, &path, None).await.status,
            200,
            "{path}"
        );
    }
    call(&a, Method::HEAD, "/api/hubs/chat/groups/team", None)
        .await
        .assert_not_found("Warning.Group.NotExisted");
    call(&a, Method::HEAD, "/api/hubs/chat/connections/nothing", None)
        .await
        .assert_not_found("Warning.Connection.NotExisted");

    // The connection joins a group from node a.
    let member = format!("/api/hubs/chat/groups/team/connections/{id}");
    assert_eq!(call(&a, Method::PUT, &member, None).await.status, 200);
    assert_eq!(
        call(&a, Method::HEAD, "/api/hubs/chat/groups/team", None)
            .await
            .status,
        200
    );
    assert_eq!(
        call(
            &a,
            Method::GET,
            "/api/hubs/chat/users/alice/groups/team",
            None
        )
        .await
        .status,
        200
    );
    let list = call(
        &a,
        Method::GET,
        "/api/hubs/chat/groups/team/connections",
        None,
    )
    .await;
    assert_eq!(list.status, 200, "{list:?}");
    assert_eq!(
        list.json()["value"],
        json!([{"connectionId": id, "userId": "alice"}])
    );

    // A group send from node a arrives on node b.
    let answer = post_message(
        &a,
        "/api/hubs/chat/groups/team/:send",
        "news",
        json!(["to the team"]),
    )
    .await;
    assert_eq!(answer.status, 202);
    alice.expect("news", json!(["to the team"])).await;

    // The user leaves the group from node a; then the group is gone everywhere.
    let leave = "/api/hubs/chat/users/alice/groups/team";
    assert_eq!(call(&a, Method::DELETE, leave, None).await.status, 204);
    call(&a, Method::HEAD, "/api/hubs/chat/groups/team", None)
        .await
        .assert_not_found("Warning.Group.NotExisted");

    // A batch from node a runs on node b's connections.
    let commands = json!([
        {"type": "SendMessage", "message": {"target": "batch", "arguments": ["b"]}},
    ]);
    let answer = call(
        &a,
        Method::POST,
        "/api/hubs/chat/:execute?filter=userId%20eq%20%27alice%27",
        Some(("application/json", serde_json::to_vec(&commands).unwrap())),
    )
    .await;
    assert_eq!(answer.status, 202, "{answer:?}");
    alice.expect("batch", json!(["b"])).await;

    // Closing the user's connections from node a.
    let close = "/api/hubs/chat/users/alice/:closeConnections?reason=maintenance";
    assert_eq!(call(&a, Method::POST, close, None).await.status, 204);
    assert_eq!(
        alice.expect_close().await,
        json!({"type": 7, "error": "maintenance", "allowReconnect": true})
    );
}
