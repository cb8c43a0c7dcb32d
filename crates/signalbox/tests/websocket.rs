//! The hub over real WebSockets with a raw client: negotiate, handshake, dispatch, errors,
//! policies, keep-alive, timeouts and bad input, in both protocols.

#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

mod common;

use std::sync::Arc;
use std::time::Duration;

use axum::Router;
use common::{Client, SECRET, http, serve, token, ws_connect};
use futures_util::future::BoxFuture;
use serde_json::{Value, json};
use signalbox::lifetime::{ClientResultError, ConnectionHandle, SendError, SerializedMessage};
use signalbox::protocol::{Completion, CompletionOutcome, HubMessage, Payload, Protocol};
use signalbox::{
    Caller, Hub, HubError, HubLifetimeManager, HubOptions, HubRouterExt, JwtAuth,
    LocalLifetimeManager, Policy, Target,
};

fn test_hub(options: HubOptions) -> Hub {
    Hub::builder("test")
        .authentication(JwtAuth::hs256(SECRET).unwrap())
        .authorize(Policy::authenticated())
        .options(options)
        .method("Echo", |_c: Caller, (v,): (Value,)| async move {
            Ok::<_, HubError>(v)
        })
        .method(
            "Void",
            |_c: Caller, ()| async move { Ok::<_, HubError>(()) },
        )
        .method("Add", |_c: Caller, (a, b): (i64, i64)| async move {
            Ok::<_, HubError>(a + b)
        })
        .method("WhoAmI", |c: Caller, ()| async move {
            Ok::<_, HubError>(c.user_id().map(str::to_owned))
        })
        .method("Secret", |_c: Caller, ()| async move {
            Ok::<_, HubError>("granted")
        })
        .method_policy(
            "Secret",
            Policy::require_claim_value("permission", ["notify"]),
        )
        .method("Fail", |_c: Caller, (m,): (String,)| async move {
            Err::<(), _>(HubError::new(m))
        })
        .method("Crash", |_c: Caller, ()| async move {
            Err::<(), _>(HubError::exception("InvalidOperationException", "hidden"))
        })
        .method("Broadcast", |c: Caller, (m,): (String,)| async move {
            c.clients().all().send("Message", (m,)).await?;
            Ok::<_, HubError>(())
        })
        .method("Abort", |c: Caller, ()| async move {
            c.abort();
            Ok::<_, HubError>(())
        })
        .build()
}

async fn server(options: HubOptions) -> std::net::SocketAddr {
    serve(Router::new().map_hub("/hub", test_hub(options))).await
}

fn p(v: Value) -> Payload {
    Payload::new(v)
}

fn result_json(outcome: CompletionOutcome) -> Value {
    match outcome {
        CompletionOutcome::Result(p) => p.deserialize().unwrap(),
        other => panic!("expected a result, got {other:?}"),
    }
}

fn error_text(outcome: CompletionOutcome) -> String {
    match outcome {
        CompletionOutcome::Error(e) => e,
        other => panic!("expected an error, got {other:?}"),
    }
}

#[tokio::test]
async fn negotiate_versions_and_errors() {
    let addr = server(HubOptions::default()).await;
    let auth = format!("Bearer {}", token(json!({"sub": "a"})));
    let h = [("Authorization", auth.as_str())];

    let v1 = http(addr, "POST", "/hub/negotiate?negotiateVersion=1", &h, b"").await;
    assert_eq!(v1.status, 200);
    assert_eq!(v1.header("content-type"), Some("application/json"));
    let body = v1.json();
    assert_eq!(body["negotiateVersion"], 1);
    assert_eq!(body["connectionId"].as_str().unwrap().len(), 22);
    assert_ne!(body["connectionId"], body["connectionToken"]);
    assert!(body.get("useStatefulReconnect").is_none());
    assert_eq!(
        body["availableTransports"],
        json!([
            {"transport": "WebSockets", "transferFormats": ["Text", "Binary"]},
            {"transport": "ServerSentEvents", "transferFormats": ["Text"]},
            {"transport": "LongPolling", "transferFormats": ["Text", "Binary"]},
        ])
    );

    let v0 = http(addr, "POST", "/hub/negotiate", &h, b"").await.json();
    assert_eq!(v0["negotiateVersion"], 0);
    assert!(v0.get("connectionToken").is_none());

    let clamped = http(addr, "POST", "/hub/negotiate?NEGOTIATEVERSION=7", &h, b"")
        .await
        .json();
    assert_eq!(clamped["negotiateVersion"], 1);

    let bad = http(addr, "POST", "/hub/negotiate?negotiateVersion=abc", &h, b"").await;
    assert_eq!(bad.status, 200);
    assert_eq!(
        bad.json(),
        json!({"error": "The client requested a non-integer protocol version."})
    );

    let get = http(addr, "GET", "/hub/negotiate", &h, b"").await;
    assert_eq!(get.status, 405);
}

#[tokio::test]
async fn unauthenticated_requests_get_an_empty_401() {
    let addr = server(HubOptions::default()).await;
    let none = http(addr, "POST", "/hub/negotiate?negotiateVersion=1", &[], b"").await;
    assert_eq!(none.status, 401);
    assert!(none.body.is_empty());
    assert_eq!(none.header("www-authenticate"), Some("Bearer"));

    let expired = token(json!({"sub": "a", "exp": common::now() - 3600}));
    let auth = format!("Bearer {expired}");
    let r = http(
        addr,
        "POST",
        "/hub/negotiate?negotiateVersion=1",
        &[("Authorization", &auth)],
        b"",
    )
    .await;
    assert_eq!(r.status, 401);
    assert_eq!(
        r.header("www-authenticate"),
        Some("Bearer error=\"invalid_token\"")
    );

    // The WebSocket upgrade itself is refused too.
    assert!(ws_connect(addr, "/hub", None).await.is_err());
}

#[tokio::test]
async fn access_token_query_is_accepted_on_hub_routes() {
    let addr = server(HubOptions::default()).await;
    let t = token(json!({"sub": "q-user"}));
    let n = http(
        addr,
        "POST",
        &format!("/hub/negotiate?negotiateVersion=1&access_token={t}"),
        &[],
        b"",
    )
    .await;
    assert_eq!(n.status, 200);
    let id = n.json()["connectionToken"].as_str().unwrap().to_owned();
    let ws = ws_connect(addr, &format!("/hub?id={id}&access_token={t}"), None)
        .await
        .unwrap();
    let mut client = Client::raw(ws, Protocol::Json);
    client.handshake(1).await.unwrap();
    assert_eq!(
        result_json(client.invoke("whoami", vec![]).await),
        json!("q-user")
    );
}

#[tokio::test]
async fn invocations_in_both_protocols() {
    let addr = server(HubOptions::default()).await;
    let t = token(json!({"sub": "alice"}));
    for protocol in Protocol::ALL {
        let mut c = Client::connect(addr, "/hub", Some(&t), protocol).await;
        assert_eq!(
            result_json(c.invoke("Echo", vec![p(json!("hi"))]).await),
            json!("hi"),
            "{protocol:?}"
        );
        let nested = json!({"a": [1, 2, {"b": null}], "c": "ü"});
        assert_eq!(
            result_json(c.invoke("echo", vec![p(nested.clone())]).await),
            nested
        );
        assert_eq!(
            result_json(c.invoke("ADD", vec![p(json!(2)), p(json!(40))]).await),
            json!(42)
        );
        assert_eq!(
            result_json(c.invoke("Void", vec![]).await),
            Value::Null,
            "void methods send result: null"
        );
        assert_eq!(
            result_json(c.invoke("WhoAmI", vec![]).await),
            json!("alice")
        );
    }
}

#[tokio::test]
async fn error_completions_keep_the_connection() {
    let addr = server(HubOptions::default()).await;
    let t = token(json!({"sub": "alice"}));
    for protocol in Protocol::ALL {
        let mut c = Client::connect(addr, "/hub", Some(&t), protocol).await;
        assert_eq!(
            error_text(c.invoke("Nope", vec![]).await),
            "Unknown hub method 'Nope'"
        );
        assert_eq!(
            error_text(c.invoke("Fail", vec![p(json!("boom"))]).await),
            "An unexpected error occurred invoking 'Fail' on the server. HubException: boom"
        );
        assert_eq!(
            error_text(c.invoke("Crash", vec![]).await),
            "An unexpected error occurred invoking 'Crash' on the server."
        );
        assert_eq!(
            error_text(c.invoke("Add", vec![p(json!(1))]).await),
            "Failed to invoke 'Add' due to an error on the server."
        );
        assert_eq!(
            error_text(c.invoke("Add", vec![p(json!("x")), p(json!(1))]).await),
            "Failed to invoke 'Add' due to an error on the server."
        );
        assert_eq!(
            error_text(c.invoke("Secret", vec![]).await),
            "Failed to invoke 'Secret' because user is unauthorized"
        );
        assert_eq!(
            result_json(c.invoke("Echo", vec![p(json!(1))]).await),
            json!(1)
        );
    }
    let granted = token(json!({"sub": "bob", "permission": ["read", "notify"]}));
    let mut c = Client::connect(addr, "/hub", Some(&granted), Protocol::Json).await;
    assert_eq!(
        result_json(c.invoke("Secret", vec![]).await),
        json!("granted")
    );
}

#[tokio::test]
async fn detailed_errors_include_the_exception() {
    let addr = server(HubOptions::default().enable_detailed_errors(true)).await;
    let t = token(json!({"sub": "alice"}));
    let mut c = Client::connect(addr, "/hub", Some(&t), Protocol::Json).await;
    assert_eq!(
        error_text(c.invoke("Crash", vec![]).await),
        "An unexpected error occurred invoking 'Crash' on the server. InvalidOperationException: hidden"
    );
    assert_eq!(
        error_text(c.invoke("Add", vec![p(json!(1))]).await),
        "Failed to invoke 'Add' due to an error on the server. InvalidDataException: Invocation provides 1 argument(s) but target expects 2."
    );
}

/// A lifetime manager that takes its time to register a connection, as one with a backplane
/// subscription to make does: 50 ms before the local registration and 50 ms after it.
struct SlowToRegister(LocalLifetimeManager);

impl HubLifetimeManager for SlowToRegister {
    fn on_connected(&self, connection: ConnectionHandle) -> BoxFuture<'_, ()> {
        // The delays are the behaviour under test: registration that takes time.
        Box::pin(async move {
            tokio::time::sleep(Duration::from_millis(50)).await;
            self.0.on_connected(connection).await;
            tokio::time::sleep(Duration::from_millis(50)).await;
        })
    }
    fn on_disconnected<'a>(&'a self, connection_id: &'a str) -> BoxFuture<'a, ()> {
        self.0.on_disconnected(connection_id)
    }
    fn send(
        &self,
        target: Target,
        message: Arc<SerializedMessage>,
    ) -> BoxFuture<'_, Result<(), SendError>> {
        self.0.send(target, message)
    }
    fn add_to_group<'a>(
        &'a self,
        connection_id: &'a str,
        group: &'a str,
    ) -> BoxFuture<'a, Result<(), SendError>> {
        self.0.add_to_group(connection_id, group)
    }
    fn remove_from_group<'a>(
        &'a self,
        connection_id: &'a str,
        group: &'a str,
    ) -> BoxFuture<'a, Result<(), SendError>> {
        self.0.remove_from_group(connection_id, group)
    }
    fn abort_connection<'a>(&'a self, connection_id: &'a str) -> BoxFuture<'a, ()> {
        self.0.abort_connection(connection_id)
    }
    fn invoke_client(
        &self,
        connection_id: String,
        target: String,
        arguments: Vec<Payload>,
    ) -> BoxFuture<'_, Result<Payload, ClientResultError>> {
        self.0.invoke_client(connection_id, target, arguments)
    }
    fn on_client_completion(&self, connection_id: &str, completion: Completion) -> bool {
        self.0.on_client_completion(connection_id, completion)
    }
    fn local_connection_ids(&self) -> Vec<String> {
        self.0.local_connection_ids()
    }
}

/// A message sent to everyone right after a client saw its handshake response reaches it, however
/// long the lifetime manager takes to register the connection: registration happens before the
/// response is queued, and what is sent to the connection meanwhile follows the response.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_broadcast_right_after_the_handshake_is_never_missed() {
    let hub = Hub::builder("slow")
        .authentication(JwtAuth::hs256(SECRET).unwrap())
        .lifetime_manager(Arc::new(SlowToRegister(LocalLifetimeManager::new())))
        .build();
    let context = hub.context();
    let addr = serve(Router::new().map_hub("/hub", hub)).await;
    let t = token(json!({"sub": "alice"}));
    // A broadcaster running throughout, so that messages land while clients register: they must
    // never come before a handshake response (`Client::connect` fails unless it is the first
    // frame).
    let running = context.clone();
    let background = tokio::spawn(async move {
        loop {
            running.clients().all().send("Noise", ((),)).await.unwrap();
            // Paces the background noise; nothing waits on it.
            tokio::time::sleep(Duration::from_millis(2)).await;
        }
    });
    for round in 0..5u32 {
        for protocol in [Protocol::Json, Protocol::MessagePack] {
            let mut c = Client::connect(addr, "/hub", Some(&t), protocol).await;
            context
                .clients()
                .all()
                .send("Hello", (round,))
                .await
                .unwrap();
            let mut noise = 0;
            let deadline = tokio::time::Instant::now() + Duration::from_secs(5);
            loop {
                assert!(
                    tokio::time::Instant::now() < deadline,
                    "round {round}: Hello never arrived"
                );
                match c.recv_non_ping().await.expect("connection closed") {
                    HubMessage::Invocation(inv) if inv.target == "Hello" => {
                        let n: u32 = inv.arguments[0].deserialize().unwrap();
                        assert_eq!(n, round);
                        break;
                    }
                    HubMessage::Invocation(inv) if inv.target == "Noise" => noise += 1,
                    other => panic!("unexpected {other:?}"),
                }
            }
            // Noise sent during the 50 ms after registration was held, then delivered.
            assert!(noise > 0, "round {round}: no noise before Hello");
        }
    }
    background.abort();
}

#[tokio::test]
async fn broadcasts_reach_both_protocols() {
    let addr = server(HubOptions::default()).await;
    let t = token(json!({"sub": "alice"}));
    let mut json_client = Client::connect(addr, "/hub", Some(&t), Protocol::Json).await;
    let mut msgpack_client = Client::connect(addr, "/hub", Some(&t), Protocol::MessagePack).await;
    let mut sender = Client::connect(addr, "/hub", Some(&t), Protocol::Json).await;
    sender.invoke("Broadcast", vec![p(json!("hello"))]).await;
    for c in [&mut json_client, &mut msgpack_client] {
        loop {
            match c.recv_non_ping().await.unwrap() {
                HubMessage::Invocation(inv) if inv.target == "Message" => {
                    assert!(inv.invocation_id.is_none());
                    let v: String = inv.arguments[0].deserialize().unwrap();
                    assert_eq!(v, "hello");
                    break;
                }
                _ => {}
            }
        }
    }
}

#[tokio::test]
async fn handshake_errors() {
    let addr = server(HubOptions::default()).await;
    let t = token(json!({"sub": "a"}));
    let ws = ws_connect(addr, "/hub", Some(&t)).await.unwrap();
    let mut c = Client::raw(ws, Protocol::Json);
    c.send_raw(b"{\"protocol\":\"xml\",\"version\":1}\x1e".to_vec())
        .await;
    let mut buf = bytes::BytesMut::new();
    let frame = loop {
        use futures_util::StreamExt;
        match c.ws.next().await.unwrap().unwrap() {
            tokio_tungstenite::tungstenite::Message::Text(t) => break t,
            _ => continue,
        }
    };
    buf.extend_from_slice(frame.as_bytes());
    let response = signalbox::protocol::parse_handshake_response(&mut buf)
        .unwrap()
        .unwrap();
    assert_eq!(
        response,
        Err("The protocol 'xml' is not supported.".to_owned())
    );

    let ws = ws_connect(addr, "/hub", Some(&t)).await.unwrap();
    let mut c = Client::raw(ws, Protocol::Json);
    assert_eq!(
        c.handshake(3).await,
        Err("The server does not support version 3 of the 'json' protocol.".to_owned())
    );
    let ws = ws_connect(addr, "/hub", Some(&t)).await.unwrap();
    let mut c = Client::raw(ws, Protocol::MessagePack);
    assert_eq!(c.handshake(2).await, Ok(()), "version 2 is accepted");
}

#[tokio::test]
async fn skip_negotiation_unknown_ids_and_conflicts() {
    let addr = server(HubOptions::default()).await;
    let t = token(json!({"sub": "a"}));
    // skipNegotiation: WebSocket without id.
    let ws = ws_connect(addr, "/hub", Some(&t)).await.unwrap();
    let mut c = Client::raw(ws, Protocol::Json);
    c.handshake(1).await.unwrap();
    assert_eq!(
        result_json(c.invoke("Echo", vec![p(json!(5))]).await),
        json!(5)
    );

    let unknown = http(
        addr,
        "GET",
        "/hub?id=nope",
        &[
            ("Authorization", &format!("Bearer {t}")),
            ("Connection", "Upgrade"),
            ("Upgrade", "websocket"),
            ("Sec-WebSocket-Version", "13"),
            ("Sec-WebSocket-Key", "dGhlIHNhbXBsZSBub25jZQ=="),
        ],
        b"",
    )
    .await;
    assert_eq!(unknown.status, 404);
    assert_eq!(unknown.text(), "No Connection with that ID");

    let auth = format!("Bearer {t}");
    let n = http(
        addr,
        "POST",
        "/hub/negotiate?negotiateVersion=1",
        &[("Authorization", &auth)],
        b"",
    )
    .await
    .json();
    let id = n["connectionToken"].as_str().unwrap();
    let _first = ws_connect(addr, &format!("/hub?id={id}"), Some(&t))
        .await
        .unwrap();
    assert!(
        ws_connect(addr, &format!("/hub?id={id}"), Some(&t))
            .await
            .is_err(),
        "second socket for one id is refused"
    );

    let post = http(
        addr,
        "POST",
        &format!("/hub?id={id}"),
        &[("Authorization", &auth)],
        b"x",
    )
    .await;
    assert_eq!(post.status, 405);
    assert_eq!(
        post.text(),
        "POST requests are not allowed for WebSocket connections."
    );
    let missing = http(addr, "POST", "/hub", &[("Authorization", &auth)], b"x").await;
    assert_eq!(
        (missing.status, missing.text().as_str()),
        (400, "Connection ID required")
    );
    let lp = http(
        addr,
        "GET",
        &format!("/hub?id={id}"),
        &[("Authorization", &auth)],
        b"",
    )
    .await;
    assert_eq!(
        (lp.status, lp.text().as_str()),
        (400, "Cannot change transports mid-connection")
    );
}

async fn expect_close(c: &mut Client) -> signalbox::protocol::Close {
    loop {
        match c
            .recv()
            .await
            .expect("socket closed without a Close message")
        {
            HubMessage::Close(close) => return close,
            _ => continue,
        }
    }
}

#[tokio::test]
async fn bad_input_closes_only_that_connection() {
    let addr = server(HubOptions::default()).await;
    let t = token(json!({"sub": "a"}));
    let mut healthy = Client::connect(addr, "/hub", Some(&t), Protocol::Json).await;
    for protocol in Protocol::ALL {
        // Garbage after the handshake.
        let mut c = Client::connect(addr, "/hub", Some(&t), protocol).await;
        let garbage = match protocol {
            Protocol::Json => b"{not json at all\x1e".to_vec(),
            Protocol::MessagePack => vec![0x05, 0xc1, 0xc1, 0xc1, 0xc1, 0xc1],
        };
        c.send_raw(garbage).await;
        let close = expect_close(&mut c).await;
        assert!(
            close
                .error
                .unwrap()
                .starts_with("Connection closed with an error. InvalidDataException:")
        );
        assert!(
            c.recv().await.is_none(),
            "socket closes after the Close message"
        );

        // An oversized message.
        let mut c = Client::connect(addr, "/hub", Some(&t), protocol).await;
        let big = "x".repeat(40_000);
        let invocation = signalbox::protocol::Invocation::new("Echo", vec![p(json!(big))]);
        c.send(&HubMessage::Invocation(invocation)).await;
        let close = expect_close(&mut c).await;
        let error = close.error.unwrap();
        assert!(
            error.contains("The maximum message size of 32768B was exceeded"),
            "{error}"
        );

        assert_eq!(
            result_json(healthy.invoke("Echo", vec![p(json!("still here"))]).await),
            json!("still here")
        );
    }
    // Random bytes in many shapes never take the server down.
    let mut seed = 0x1234_5678u64;
    for _ in 0..20 {
        let ws = ws_connect(addr, "/hub", Some(&t)).await.unwrap();
        let mut c = Client::raw(ws, Protocol::Json);
        let mut bytes = Vec::new();
        for _ in 0..(seed % 300) {
            seed ^= seed << 13;
            seed ^= seed >> 7;
            seed ^= seed << 17;
            bytes.push((seed & 0xff) as u8);
        }
        c.send_raw(bytes).await;
        drop(c);
    }
    assert_eq!(
        result_json(healthy.invoke("Echo", vec![p(json!(1))]).await),
        json!(1)
    );
}

#[tokio::test]
async fn graceful_client_close_and_hub_abort() {
    let addr = server(HubOptions::default()).await;
    let t = token(json!({"sub": "a"}));
    let mut c = Client::connect(addr, "/hub", Some(&t), Protocol::Json).await;
    c.send(&HubMessage::Invocation(
        signalbox::protocol::Invocation::new("Abort", vec![]),
    ))
    .await;
    let close = expect_close(&mut c).await;
    assert_eq!(
        close,
        signalbox::protocol::Close {
            error: None,
            allow_reconnect: false
        }
    );

    let mut c = Client::connect(addr, "/hub", Some(&t), Protocol::MessagePack).await;
    c.send(&HubMessage::Close(signalbox::protocol::Close::default()))
        .await;
    assert!(
        c.recv_non_ping().await.is_none(),
        "server ends the socket after a client Close"
    );
}

#[tokio::test]
async fn keep_alive_pings_and_client_timeout() {
    let addr = server(
        HubOptions::default()
            .keep_alive_interval(Duration::from_millis(100))
            .client_timeout_interval(Duration::from_millis(400)),
    )
    .await;
    let t = token(json!({"sub": "a"}));
    let mut c = Client::connect(addr, "/hub", Some(&t), Protocol::Json).await;
    assert!(
        matches!(c.recv().await, Some(HubMessage::Ping)),
        "server pings an idle client"
    );
    // The timeout starts with the client's first message.
    c.send(&HubMessage::Ping).await;
    let started = std::time::Instant::now();
    let close = expect_close(&mut c).await;
    assert!(started.elapsed() >= Duration::from_millis(350));
    assert_eq!(
        close.error.as_deref(),
        Some("Connection closed with an error.")
    );
    assert!(close.allow_reconnect);
}

fn node(secret: Option<&[u8]>) -> Hub {
    Hub::builder("test")
        .connection_options(
            signalbox::ConnectionOptions::default()
                .connection_token_secret(secret.map(std::sync::Arc::from)),
        )
        .method("Echo", |_c: Caller, (v,): (Value,)| async move {
            Ok::<_, HubError>(v)
        })
        .method("Id", |c: Caller, ()| async move {
            Ok::<_, HubError>(c.connection_id().to_owned())
        })
        .build()
}

#[tokio::test]
async fn signed_tokens_let_websockets_connect_to_another_node() {
    let secret: &[u8] = b"cluster-wide connection token secret";
    let a = serve(Router::new().map_hub("/hub", node(Some(secret)))).await;
    let b = serve(Router::new().map_hub("/hub", node(Some(secret)))).await;
    let negotiated = http(a, "POST", "/hub/negotiate?negotiateVersion=1", &[], b"")
        .await
        .json();
    let id = negotiated["connectionId"].as_str().unwrap();
    let token = negotiated["connectionToken"].as_str().unwrap();
    let ws = ws_connect(b, &format!("/hub?id={token}"), None)
        .await
        .unwrap();
    let mut c = Client::raw(ws, Protocol::Json);
    c.handshake(1).await.unwrap();
    assert_eq!(
        result_json(c.invoke("Id", vec![]).await),
        json!(id),
        "node B keeps the negotiated id"
    );
    assert!(
        ws_connect(b, &format!("/hub?id={token}"), None)
            .await
            .is_err(),
        "a token is used once per node"
    );

    // A node with another secret, or none, does not know the token.
    let other =
        serve(Router::new().map_hub("/hub", node(Some(b"some other secret entirely......")))).await;
    assert!(
        ws_connect(other, &format!("/hub?id={token}"), None)
            .await
            .is_err()
    );
    let plain = serve(Router::new().map_hub("/hub", node(None))).await;
    assert!(
        ws_connect(plain, &format!("/hub?id={token}"), None)
            .await
            .is_err()
    );
    let forged = token.replacen(id, "AAAAAAAAAAAAAAAAAAAAAA", 1);
    assert!(
        ws_connect(b, &format!("/hub?id={forged}"), None)
            .await
            .is_err()
    );
}

#[tokio::test]
async fn graceful_shutdown_closes_with_allow_reconnect() {
    let disconnected = std::sync::Arc::new(std::sync::atomic::AtomicUsize::new(0));
    let counter = disconnected.clone();
    let hub = Hub::builder("test")
        .method("Echo", |_c: Caller, (v,): (Value,)| async move {
            Ok::<_, HubError>(v)
        })
        .on_disconnected(move |_c: Caller| {
            let counter = counter.clone();
            async move {
                counter.fetch_add(1, std::sync::atomic::Ordering::SeqCst);
                Ok(())
            }
        })
        .build();
    let context = hub.context();
    let addr = serve(Router::new().map_hub("/hub", hub)).await;
    let mut clients = Vec::new();
    for protocol in Protocol::ALL {
        let mut c = Client::connect(addr, "/hub", None, protocol).await;
        assert_eq!(
            result_json(c.invoke("Echo", vec![p(json!(1))]).await),
            json!(1)
        );
        clients.push(c);
    }
    let left = context.shutdown(Duration::from_secs(5)).await;
    assert_eq!(left, 0, "every connection closed before the deadline");
    for c in &mut clients {
        let close = expect_close(c).await;
        assert_eq!(
            close,
            signalbox::protocol::Close {
                error: None,
                allow_reconnect: true
            }
        );
    }
    assert_eq!(disconnected.load(std::sync::atomic::Ordering::SeqCst), 2);
    let refused = http(addr, "POST", "/hub/negotiate?negotiateVersion=1", &[], b"").await;
    assert_eq!(refused.status, 503);
}

#[tokio::test]
async fn a_client_that_stops_reading_is_closed_and_others_are_unaffected() {
    let hub = Hub::builder("test")
        .options(HubOptions::default().outbound_queue_capacity(32))
        .connection_options(
            signalbox::ConnectionOptions::default()
                .transport_send_timeout(Duration::from_millis(500)),
        )
        .method("Id", |c: Caller, ()| async move {
            Ok::<_, HubError>(c.connection_id().to_owned())
        })
        .build();
    let context = hub.context();
    let addr = serve(Router::new().map_hub("/hub", hub)).await;
    let mut slow = Client::connect(addr, "/hub", None, Protocol::Json).await;
    let slow_id: String = match slow.invoke("Id", vec![]).await {
        CompletionOutcome::Result(p) => p.deserialize().unwrap(),
        other => panic!("{other:?}"),
    };
    let mut healthy = Client::connect(addr, "/hub", None, Protocol::MessagePack).await;
    let reader = tokio::spawn(async move {
        let mut received = 0usize;
        while received < 400 {
            match healthy.recv().await {
                Some(HubMessage::Invocation(_)) => received += 1,
                Some(_) => {}
                None => break,
            }
        }
        received
    });
    // The slow client never reads again; 400 messages of 16 KiB go to everyone.
    let payload = "x".repeat(16 * 1024);
    for _ in 0..400 {
        context
            .clients()
            .all()
            .send("Big", (payload.clone(),))
            .await
            .unwrap();
        tokio::task::yield_now().await;
    }
    assert_eq!(
        reader.await.unwrap(),
        400,
        "the healthy client got everything"
    );
    common::eventually("the slow client to be closed", || async {
        !context
            .lifetime_manager()
            .local_connection_ids()
            .contains(&slow_id)
    })
    .await;
    drop(slow);
}

#[tokio::test]
async fn invocations_over_the_rate_limit_get_an_error_completion() {
    let hub = Hub::builder("test")
        .options(
            HubOptions::default().invocation_rate_limit(signalbox::hub::RateLimit::new(1.0, 3)),
        )
        .method("Echo", |_c: Caller, (v,): (Value,)| async move {
            Ok::<_, HubError>(v)
        })
        .build();
    let addr = serve(Router::new().map_hub("/hub", hub)).await;
    let mut c = Client::connect(addr, "/hub", None, Protocol::Json).await;
    for i in 0..3 {
        assert_eq!(
            result_json(c.invoke("Echo", vec![p(json!(i))]).await),
            json!(i)
        );
    }
    assert_eq!(
        error_text(c.invoke("Echo", vec![p(json!(4))]).await),
        "Failed to invoke 'Echo': rate limit exceeded, too many invocations."
    );
    // Rejected invocations take no token: retry until the bucket has refilled (1 per second).
    let c = tokio::sync::Mutex::new(c);
    let value = common::eventually_some("the rate limit to let an invocation through", || async {
        match c.lock().await.invoke("Echo", vec![p(json!(5))]).await {
            CompletionOutcome::Result(value) => Some(value.deserialize::<Value>().unwrap()),
            _ => None,
        }
    })
    .await;
    assert_eq!(value, json!(5), "the connection stays usable");
}
