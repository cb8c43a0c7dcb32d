//! The client endpoint of Azure SignalR Service compatibility: negotiate and connect at
//! `/client/?hub=NAME` with tokens signed by an access key.

#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

mod common;

use std::time::Duration;

use common::azure::{
    self, AzureClient as Client, OTHER, PRIMARY, RECORD_SEPARATOR, SECONDARY, TokenIn, negotiate,
    now,
};
use common::{Backend, TestApp};
use futures_util::{SinkExt, StreamExt};
use jsonwebtoken::{Algorithm, EncodingKey, Header};
use serde_json::{Value, json};
use signalbox_server::azure::{Azure, AzureHub};
use tokio_tungstenite::tungstenite::Message;

async fn start() -> TestApp {
    azure::start(Backend::Sqlite).await
}

/// A client token as the Management SDK makes it for `hub`, plus `extra` claims.
fn token_with(key: &str, algorithm: Algorithm, hub: &str, exp: u64, extra: Value) -> String {
    let mut claims = json!({
        "aud": format!("https://example.service.signalr.net/client/?hub={hub}"),
        "iat": now(),
        "nbf": now(),
        "exp": exp,
    });
    if let (Some(claims), Value::Object(extra)) = (claims.as_object_mut(), extra) {
        claims.extend(extra);
    }
    jsonwebtoken::encode(
        &Header::new(algorithm),
        &claims,
        &EncodingKey::from_secret(key.as_bytes()).unwrap(),
    )
    .unwrap()
}

/// A one-hour token of user `user` (`asrs.s.uid`) for `hub`.
fn token(hub: &str, user: &str) -> String {
    token_with(
        PRIMARY,
        Algorithm::HS256,
        hub,
        now() + 3600,
        json!({"asrs.s.uid": user}),
    )
}

fn azure(app: &TestApp) -> &Azure {
    app.state.azure.as_ref().expect("Azure compatibility is on")
}

fn hub(app: &TestApp, name: &str) -> AzureHub {
    azure(app)
        .hubs
        .existing(name)
        .unwrap_or_else(|| panic!("hub {name} exists"))
}

/// Sends `Hello(text)` to `user` of `hub` from the back end's side.
async fn hello(hub: &AzureHub, user: &str, text: &str) {
    hub.context()
        .clients()
        .user(user)
        .send("Hello", (text.to_owned(),))
        .await
        .unwrap();
}

async fn expect_hello(client: &mut Client, text: &str) {
    let message = client.next_message().await.expect("a message");
    assert_eq!(message["type"], 1, "{message}");
    assert_eq!(message["target"], "Hello", "{message}");
    assert_eq!(message["arguments"], json!([text]), "{message}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn negotiate_and_connect_with_a_key_signed_token() {
    let app = start().await;
    let (status, body) = negotiate(&app, "hub=chat", Some(&token("chat", "alice"))).await;
    assert_eq!(status, 200, "{body}");
    assert_eq!(body["negotiateVersion"], 1, "{body}");
    let transports: Vec<&str> = body["availableTransports"]
        .as_array()
        .unwrap()
        .iter()
        .filter_map(|t| t["transport"].as_str())
        .collect();
    assert_eq!(
        transports,
        ["WebSockets", "ServerSentEvents", "LongPolling"],
        "{body}"
    );

    // `asrs.s.uid`, token in the header (Node.js clients).
    let mut alice =
        Client::connect(&app, "hub=chat", &token("chat", "alice"), TokenIn::Header).await;
    let chat = hub(&app, "chat");
    let connection = chat.local().connection(&alice.connection_id).unwrap();
    assert_eq!(connection.user_id(), Some("alice"));
    hello(&chat, "alice", "hi alice").await;
    expect_hello(&mut alice, "hi alice").await;

    // `nameid` (hand-made tokens), HS512, signed with the secondary key, token in the query
    // (browsers).
    let bob_token = token_with(
        SECONDARY,
        Algorithm::HS512,
        "chat",
        now() + 3600,
        json!({"nameid": "bob", "sub": "ignored"}),
    );
    let mut bob = Client::connect(&app, "hub=chat", &bob_token, TokenIn::Query).await;
    let connection = chat.local().connection(&bob.connection_id).unwrap();
    assert_eq!(connection.user_id(), Some("bob"));
    hello(&chat, "bob", "hi bob").await;
    expect_hello(&mut bob, "hi bob").await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn tokens_that_are_not_good_are_refused() {
    let app = start().await;
    let expired = token_with(
        PRIMARY,
        Algorithm::HS256,
        "chat",
        now() - 3600,
        json!({"asrs.s.uid": "alice"}),
    );
    let wrong_key = token_with(
        OTHER,
        Algorithm::HS256,
        "chat",
        now() + 3600,
        json!({"asrs.s.uid": "alice"}),
    );
    let other_hub = token("news", "alice");
    for (what, token) in [
        ("expired", Some(expired.as_str())),
        ("wrong key", Some(wrong_key.as_str())),
        ("another hub's", Some(other_hub.as_str())),
        ("garbage", Some("not.a.token")),
        ("missing", None),
    ] {
        // Before the hub exists, and once it does.
        let (status, body) = negotiate(&app, "hub=chat", token).await;
        assert_eq!(status, 401, "{what} token: {body}");
        assert!(azure(&app).hubs.existing("chat").is_none(), "{what}");
    }
    let (status, _) = negotiate(&app, "hub=chat", Some(&token("chat", "alice"))).await;
    assert_eq!(status, 200);
    for (what, token) in [
        ("expired", Some(expired.as_str())),
        ("wrong key", Some(wrong_key.as_str())),
        ("another hub's", Some(other_hub.as_str())),
        ("missing", None),
    ] {
        let (status, body) = negotiate(&app, "hub=chat", token).await;
        assert_eq!(status, 401, "{what} token: {body}");
    }
    // The transport request needs a good token too.
    let (_, body) = negotiate(&app, "hub=chat", Some(&token("chat", "alice"))).await;
    let connection_token = body["connectionToken"].as_str().unwrap();
    let response = app
        .http
        .get(format!(
            "{}/client/?hub=chat&id={connection_token}",
            app.url
        ))
        .bearer_auth(&wrong_key)
        .send()
        .await
        .unwrap();
    assert_eq!(response.status(), 401);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn hub_names_are_case_insensitive_and_take_the_application_prefix() {
    let app = start().await;
    // A token for `Chat` (the audience compares hubs case-insensitively), negotiated as `Chat`,
    // connected as `CHAT`: one hub, `chat`.
    let token = token("Chat", "alice");
    let (status, body) = negotiate(&app, "hub=Chat", Some(&token)).await;
    assert_eq!(status, 200, "{body}");
    let connection_token = body["connectionToken"].as_str().unwrap();
    let request = format!(
        "ws://{}/client?hub=CHAT&id={connection_token}&access_token={token}",
        app.addr
    );
    let (mut ws, _) = tokio_tungstenite::connect_async(request).await.unwrap();
    ws.send(Message::Text(
        format!("{{\"protocol\":\"json\",\"version\":1}}{RECORD_SEPARATOR}").into(),
    ))
    .await
    .unwrap();
    let handshake = ws.next().await.unwrap().unwrap();
    assert_eq!(handshake.into_text().unwrap().as_str(), "{}\u{1e}");
    let hubs: Vec<String> = azure(&app)
        .hubs
        .all()
        .iter()
        .map(|hub| hub.name().to_owned())
        .collect();
    assert_eq!(hubs, ["chat"]);
    assert_eq!(hub(&app, "chat").local().connection_count(), 1);

    // `application=MyApp` makes `myapp_chat`, the name the SDK puts in the client URL.
    let prefixed = token_with(
        PRIMARY,
        Algorithm::HS256,
        "myapp_chat",
        now() + 3600,
        json!({"asrs.s.uid": "alice"}),
    );
    let mut first = Client::connect(
        &app,
        "hub=Chat&application=MyApp",
        &prefixed,
        TokenIn::Header,
    )
    .await;
    let mut second = Client::connect(&app, "hub=myapp_chat", &prefixed, TokenIn::Query).await;
    let app_chat = hub(&app, "myapp_chat");
    assert_eq!(app_chat.local().connection_count(), 2);
    assert_eq!(hub(&app, "chat").local().connection_count(), 1);
    hello(&app_chat, "alice", "prefixed").await;
    expect_hello(&mut first, "prefixed").await;
    expect_hello(&mut second, "prefixed").await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn only_tokens_asking_for_it_close_at_expiry() {
    let app = start().await;
    let exp = now() + 2;
    let closing = token_with(
        PRIMARY,
        Algorithm::HS256,
        "chat",
        exp,
        json!({"asrs.s.uid": "closing", "asrs.s.coae": "true"}),
    );
    let staying = token_with(
        PRIMARY,
        Algorithm::HS256,
        "chat",
        exp,
        json!({"asrs.s.uid": "staying"}),
    );
    let mut closing = Client::connect(&app, "hub=chat", &closing, TokenIn::Header).await;
    let mut staying = Client::connect(&app, "hub=chat", &staying, TokenIn::Header).await;
    // The close arrives once the token expires: the client may come back with a new one.
    let close = closing.next_message().await.expect("a close message");
    assert_eq!(close["type"], 7, "{close}");
    assert_eq!(close["allowReconnect"], true, "{close}");
    assert!(now() >= exp, "closed before the token expired");
    // The other connection outlived its token's expiry too.
    let chat = hub(&app, "chat");
    hello(&chat, "staying", "still here").await;
    expect_hello(&mut staying, "still here").await;
    assert!(chat.local().connection(&staying.connection_id).is_some());
}

async fn stored_groups_apply_to_new_connections(backend: Backend) {
    let app = TestApp::start_with(backend, |config| {
        config.azure.access_keys = vec![PRIMARY.to_owned()];
    })
    .await;
    let store = &azure(&app).store;
    store.add("chat", "dave", "team", None).await.unwrap();
    store
        .add("chat", "dave", "later", Some(Duration::from_secs(3600)))
        .await
        .unwrap();
    // Another hub's membership does not apply.
    store.add("news", "dave", "other", None).await.unwrap();
    let mut dave = Client::connect(&app, "hub=chat", &token("chat", "dave"), TokenIn::Header).await;
    dave.settled().await;
    let chat = hub(&app, "chat");
    for group in ["team", "later"] {
        assert!(
            chat.local().is_in_group(&dave.connection_id, group),
            "{group}"
        );
    }
    assert!(!chat.local().is_in_group(&dave.connection_id, "other"));
    chat.context()
        .clients()
        .group("team")
        .send("Hello", ("team news".to_owned(),))
        .await
        .unwrap();
    expect_hello(&mut dave, "team news").await;
}

on_both_backends!(stored_groups_apply_to_new_connections);

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn invocations_without_an_upstream_get_an_error_completion() {
    let app = start().await;
    let mut client =
        Client::connect(&app, "hub=chat", &token("chat", "alice"), TokenIn::Header).await;
    client
        .send(json!({"type": 1, "invocationId": "7", "target": "broadcast", "arguments": ["hi"]}))
        .await;
    let completion = client.next_message().await.expect("a completion");
    assert_eq!(
        completion,
        json!({"type": 3, "invocationId": "7", "error": "Invocation failed, no upstream is configured"})
    );
    // The connection stays open.
    hello(&hub(&app, "chat"), "alice", "open").await;
    expect_hello(&mut client, "open").await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn messagepack_over_websockets() {
    let app = start().await;
    let token = token("chat", "erin");
    let (status, body) = negotiate(&app, "hub=chat", Some(&token)).await;
    assert_eq!(status, 200, "{body}");
    let connection_token = body["connectionToken"].as_str().unwrap();
    let url = format!(
        "ws://{}/client/?hub=chat&id={connection_token}&access_token={token}",
        app.addr
    );
    let (mut ws, _) = tokio_tungstenite::connect_async(url).await.unwrap();
    ws.send(Message::Text(
        format!("{{\"protocol\":\"messagepack\",\"version\":1}}{RECORD_SEPARATOR}").into(),
    ))
    .await
    .unwrap();
    let handshake = ws.next().await.unwrap().unwrap();
    assert_eq!(handshake.into_data().as_ref(), b"{}\x1e");
    hello(&hub(&app, "chat"), "erin", "packed").await;
    let frame = tokio::time::timeout(Duration::from_secs(10), async {
        loop {
            match ws.next().await.unwrap().unwrap() {
                // Pings are [6]: 2 bytes with their length.
                Message::Binary(data) if data.len() > 3 => return data,
                _ => {}
            }
        }
    })
    .await
    .unwrap();
    // Length 19, then [1, {}, nil, "Hello", ["packed"], []].
    assert_eq!(
        frame.as_ref(),
        b"\x13\x96\x01\x80\xc0\xa5Hello\x91\xa6packed\x90"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn server_sent_events_through_the_client_endpoint() {
    let app = start().await;
    let token = token("chat", "frank");
    let (status, body) = negotiate(&app, "hub=chat", Some(&token)).await;
    assert_eq!(status, 200, "{body}");
    let connection_token = body["connectionToken"].as_str().unwrap();
    // Browsers' EventSource carries the token in the query.
    let url = format!(
        "{}/client/?hub=chat&id={connection_token}&access_token={token}",
        app.url
    );
    let mut events = app
        .http
        .get(&url)
        .header("accept", "text/event-stream")
        .send()
        .await
        .unwrap();
    assert_eq!(events.status(), 200);
    let send = app
        .http
        .post(&url)
        .body(format!(
            "{{\"protocol\":\"json\",\"version\":1}}{RECORD_SEPARATOR}"
        ))
        .send()
        .await
        .unwrap();
    assert_eq!(send.status(), 200);
    let mut received = String::new();
    let mut said_hello = false;
    let deadline = tokio::time::Instant::now() + Duration::from_secs(10);
    while !received.contains("sent as events") {
        let chunk = tokio::time::timeout_at(deadline, events.chunk())
            .await
            .expect("events in time")
            .unwrap()
            .expect("the stream stays open");
        received.push_str(&String::from_utf8_lossy(&chunk));
        if !said_hello && received.contains("data: {}\u{1e}") {
            said_hello = true;
            hello(&hub(&app, "chat"), "frank", "sent as events").await;
        }
    }
    assert!(received.contains("\"target\":\"Hello\""), "{received}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn long_polling_through_the_client_endpoint() {
    let app = start().await;
    let token = token("chat", "carol");
    let (status, body) = negotiate(&app, "hub=chat", Some(&token)).await;
    assert_eq!(status, 200, "{body}");
    let connection_token = body["connectionToken"].as_str().unwrap();
    let url = format!("{}/client/?hub=chat&id={connection_token}", app.url);
    // The first poll sets the connection up and answers at once.
    let poll = app.http.get(&url).bearer_auth(&token).send().await.unwrap();
    assert_eq!(poll.status(), 200);
    assert_eq!(poll.text().await.unwrap(), "");
    let send = app
        .http
        .post(&url)
        .bearer_auth(&token)
        .body(format!(
            "{{\"protocol\":\"json\",\"version\":1}}{RECORD_SEPARATOR}"
        ))
        .send()
        .await
        .unwrap();
    assert_eq!(send.status(), 200);
    let poll = app.http.get(&url).bearer_auth(&token).send().await.unwrap();
    assert_eq!(poll.status(), 200);
    assert_eq!(poll.text().await.unwrap(), "{}\u{1e}");
    let chat = hub(&app, "chat");
    hello(&chat, "carol", "polled").await;
    let poll = app.http.get(&url).bearer_auth(&token).send().await.unwrap();
    let text = poll.text().await.unwrap();
    assert!(text.contains("\"target\":\"Hello\""), "{text}");
    assert!(text.contains("polled"), "{text}");
    let delete = app
        .http
        .delete(&url)
        .bearer_auth(&token)
        .send()
        .await
        .unwrap();
    assert_eq!(delete.status(), 202);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_missing_or_invalid_hub_is_a_bad_request() {
    let app = start().await;
    let token = token("chat", "alice");
    for query in [
        "x=1",
        "hub=",
        "hub=9lives",
        "hub=a%2Fb",
        "hub=chat&application=1app",
    ] {
        let (status, body) = negotiate(&app, query, Some(&token)).await;
        assert_eq!(status, 400, "{query}: {body}");
        let text = body.as_str().unwrap_or_default();
        assert!(
            text.contains("hub") || text.contains("application"),
            "{query}: {text}"
        );
    }
    let response = app
        .http
        .get(format!("{}/client/?id=abc", app.url))
        .bearer_auth(&token)
        .send()
        .await
        .unwrap();
    assert_eq!(response.status(), 400);
    assert!(azure(&app).hubs.all().is_empty());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn without_access_keys_there_is_no_client_endpoint() {
    let app = TestApp::start(Backend::Sqlite).await;
    assert!(app.state.azure.is_none());
    let (status, _) = negotiate(&app, "hub=chat", Some(&token("chat", "alice"))).await;
    assert_eq!(status, 404);
    let response = app
        .http
        .get(format!("{}/client/?hub=chat&id=x", app.url))
        .send()
        .await
        .unwrap();
    assert_eq!(response.status(), 404);
}

/// What the upstream received: path, headers, body.
type Received = (String, axum::http::HeaderMap, bytes::Bytes);

/// A webhook receiver: records each request; refuses `connected` of user `mallory` with 401;
/// answers invocations with the completion `result: "echo"`.
async fn upstream_receiver() -> (String, tokio::sync::mpsc::Receiver<Received>) {
    use axum::extract::State;
    use axum::http::{HeaderMap, StatusCode, Uri};
    use axum::response::IntoResponse;

    async fn hook(
        State(tx): State<tokio::sync::mpsc::Sender<Received>>,
        uri: Uri,
        headers: HeaderMap,
        body: bytes::Bytes,
    ) -> axum::response::Response {
        let user = headers
            .get("x-asrs-user-id")
            .and_then(|v| v.to_str().ok())
            .unwrap_or_default()
            .to_owned();
        let event = headers
            .get("x-asrs-event")
            .and_then(|v| v.to_str().ok())
            .unwrap_or_default()
            .to_owned();
        let invocation: Value = serde_json::from_slice(&body).unwrap_or(Value::Null);
        tx.send((uri.path().to_owned(), headers, body))
            .await
            .unwrap();
        if event == "connected" && user == "mallory" {
            return StatusCode::UNAUTHORIZED.into_response();
        }
        match invocation["invocationId"].as_str() {
            Some(id) if uri.path().contains("/messages/") => {
                format!("{{\"type\":3,\"invocationId\":\"{id}\",\"result\":\"echo\"}}\u{1e}")
                    .into_response()
            }
            _ => StatusCode::OK.into_response(),
        }
    }

    let (tx, rx) = tokio::sync::mpsc::channel(64);
    let router = axum::Router::new()
        .route("/{hub}/api/{category}/{event}", axum::routing::post(hook))
        .with_state(tx);
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    tokio::spawn(async move { axum::serve(listener, router).await });
    (
        format!("http://{addr}/{{hub}}/api/{{category}}/{{event}}"),
        rx,
    )
}

async fn next_event(events: &mut tokio::sync::mpsc::Receiver<Received>) -> Received {
    tokio::time::timeout(Duration::from_secs(10), events.recv())
        .await
        .expect("an upstream request in time")
        .expect("the receiver runs")
}

fn header<'a>(headers: &'a axum::http::HeaderMap, name: &str) -> &'a str {
    headers
        .get(name)
        .and_then(|v| v.to_str().ok())
        .unwrap_or_default()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn connection_events_and_invocations_go_to_the_upstream() {
    let (template, mut events) = upstream_receiver().await;
    let app = TestApp::start_with(Backend::Sqlite, |config| {
        config.azure.access_keys = vec![PRIMARY.to_owned()];
        config.upstream.templates = vec![signalbox_server::config::UpstreamTemplate::catch_all(
            template,
        )];
        config.upstream.refuse_connections = true;
    })
    .await;

    let token = token_with(
        PRIMARY,
        Algorithm::HS256,
        "chat",
        now() + 3600,
        json!({"asrs.s.uid": "alice", "role": ["a", "b"]}),
    );
    let mut alice = Client::connect(&app, "hub=chat&custom=1", &token, TokenIn::Query).await;
    let (path, headers, body) = next_event(&mut events).await;
    assert_eq!(path, "/chat/api/connections/connected");
    assert_eq!(header(&headers, "x-asrs-hub"), "chat");
    assert_eq!(header(&headers, "x-asrs-user-id"), "alice");
    assert_eq!(
        header(&headers, "x-asrs-connection-id"),
        alice.connection_id
    );
    let claims = header(&headers, "x-asrs-user-claims");
    for claim in ["asrs.s.uid: alice", "role: a", "role: b"] {
        assert!(claims.contains(claim), "{claims}");
    }
    assert!(!claims.contains("exp:"), "{claims}");
    let query = header(&headers, "x-asrs-client-query");
    assert!(query.contains("hub=chat"), "{query}");
    assert!(query.contains("custom=1"), "{query}");
    assert!(query.contains("id="), "{query}");
    assert!(!query.contains("access_token"), "{query}");
    assert!(!query.contains(&token), "{query}");
    assert_eq!(body.as_ref(), b"{\"type\":10}");

    alice
        .send(json!({"type": 1, "invocationId": "1", "target": "broadcast", "arguments": ["hi"]}))
        .await;
    let (path, _, body) = next_event(&mut events).await;
    assert_eq!(path, "/chat/api/messages/broadcast");
    let invocation: Value = serde_json::from_slice(&body).unwrap();
    assert_eq!(invocation["arguments"], json!(["hi"]));
    let completion = alice.next_message().await.expect("a completion");
    assert_eq!(
        completion,
        json!({"type": 3, "invocationId": "1", "result": "echo"})
    );

    alice.ws.close(None).await.unwrap();
    let (path, headers, _) = next_event(&mut events).await;
    assert_eq!(path, "/chat/api/connections/disconnected");
    assert_eq!(
        header(&headers, "x-asrs-connection-id"),
        alice.connection_id
    );

    // A refusal closes the connection for good.
    let mut mallory = Client::connect(
        &app,
        "hub=chat",
        &self::token("chat", "mallory"),
        TokenIn::Header,
    )
    .await;
    let close = mallory.next_message().await.expect("a close message");
    assert_eq!(close["type"], 7, "{close}");
    // `allowReconnect` false is left out.
    assert_ne!(close["allowReconnect"], true, "{close}");
    assert!(
        close["error"].as_str().unwrap_or_default().contains("401"),
        "{close}"
    );
}

/// With a backplane, a client negotiated on one node may open its WebSocket on another, and a
/// hub's messages reach it from any node. Needs Redis on 6379 (`SIGNALBOX_TEST_REDIS`).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn hubs_span_the_nodes_of_a_cluster() {
    let redis = std::env::var("SIGNALBOX_TEST_REDIS")
        .unwrap_or_else(|_| "redis://127.0.0.1:6379".to_owned());
    let prefix = format!("azure-test-{}", uuid::Uuid::now_v7().simple());
    let db = common::TestDb::new(Backend::Sqlite).await;
    let node = |db: common::TestDb, name: &str| {
        let mut config = common::test_config(&db);
        config.node = format!("{prefix}-{name}");
        config.backplane = Some(redis.clone());
        config.cluster.channel_prefix = prefix.clone();
        config.connection_token_secret =
            Some("azure-test-connection-token-secret-0123456789".to_owned());
        config.azure.access_keys = vec![PRIMARY.to_owned()];
        TestApp::start_on(db, config)
    };
    let shared = db.share();
    let a = node(db, "a").await;
    let b = node(shared, "b").await;

    let token = token("chat", "alice");
    let (status, body) = negotiate(&a, "hub=chat", Some(&token)).await;
    assert_eq!(status, 200, "{body}");
    let connection_token = body["connectionToken"].as_str().unwrap();
    let url = format!(
        "ws://{}/client/?hub=chat&id={connection_token}&access_token={token}",
        b.addr
    );
    let (ws, _) = tokio_tungstenite::connect_async(url).await.unwrap();
    let mut client = Client::handshake(ws, body["connectionId"].as_str().unwrap().to_owned()).await;
    assert!(
        hub(&b, "chat")
            .local()
            .connection(&client.connection_id)
            .is_some()
    );
    // Node a's hub reaches the connection on node b (again until b's subscriptions are live).
    let from_a = hub(&a, "chat");
    let mut received = false;
    for _ in 0..50 {
        hello(&from_a, "alice", "across nodes").await;
        let next = tokio::time::timeout(Duration::from_millis(200), client.next_message()).await;
        if let Ok(Some(message)) = next {
            assert_eq!(message["arguments"], json!(["across nodes"]), "{message}");
            received = true;
            break;
        }
    }
    assert!(received, "no message crossed the backplane");
}
