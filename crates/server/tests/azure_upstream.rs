//! The serverless upstream: connection events and client invocations POSTed, signed, to a
//! webhook receiver, and its answers turned into completions — first through
//! [`Upstream`] directly, then end to end through `/client/?hub=`.

#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

mod common;

use std::collections::{HashMap, VecDeque};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use axum::body::Bytes;
use axum::extract::State;
use axum::http::{HeaderMap, StatusCode, Uri};
use axum::response::{IntoResponse, Response};
use bytes::BytesMut;
use common::azure::{PRIMARY, SECONDARY, now};
use common::{Backend, TestApp};
use futures_util::{SinkExt, StreamExt};
use jsonwebtoken::{Algorithm, EncodingKey, Header};
use serde_json::{Value, json};
use signalbox::protocol::framing::write_varint;
use signalbox::protocol::{
    Completion, CompletionOutcome, HubMessage, Invocation, Payload, Protocol,
};
use signalbox::{InvocationReply, UnknownInvocation};
use signalbox_server::azure::upstream::{ConnectionInfo, Upstream};
use signalbox_server::config::{UpstreamConfig, UpstreamTemplate};
use signalbox_server::webhooks::delivery::{RetryPolicy, hmac_sha256_hex};
use tokio::sync::mpsc;
use tokio_tungstenite::tungstenite::Message;
use tokio_tungstenite::tungstenite::client::IntoClientRequest;

fn keys() -> Vec<String> {
    vec![PRIMARY.to_owned(), SECONDARY.to_owned()]
}

// ---------------------------------------------------------------------------------------------
// The webhook receiver

/// A request the receiver got.
#[derive(Debug)]
struct Received {
    path: String,
    query: Option<String>,
    headers: HeaderMap,
    body: Bytes,
    /// Whether `X-ASRS-Signature` holds, for each configured key, the HMAC of the connection id
    /// (recomputed here from the keys).
    signed: bool,
}

impl Received {
    fn header(&self, name: &str) -> Option<&str> {
        self.headers.get(name).map(|v| v.to_str().unwrap())
    }

    fn event(&self) -> &str {
        self.header("x-asrs-event").unwrap_or_default()
    }
}

/// A scripted answer.
#[derive(Debug, Clone, Copy)]
enum Answer {
    /// This status, no body.
    Status(u16),
    /// `200` with a framed Completion in the request's protocol: the first argument as result.
    Echo,
    /// `200` with a framed Completion carrying this error.
    CompletionError(&'static str),
}

#[derive(Clone)]
struct Receiver {
    events: mpsc::Sender<Received>,
    /// Answers by event, used up in order; afterwards `Echo` for messages, `200` otherwise.
    script: Arc<Mutex<HashMap<String, VecDeque<Answer>>>>,
}

/// A webhook receiver on 127.0.0.1: its URL template, the requests it gets, and its script.
struct Hook {
    template: String,
    events: mpsc::Receiver<Received>,
    script: Arc<Mutex<HashMap<String, VecDeque<Answer>>>>,
}

impl Hook {
    async fn start() -> Hook {
        let (tx, rx) = mpsc::channel(64);
        let script = Arc::new(Mutex::new(HashMap::new()));
        let state = Receiver {
            events: tx,
            script: script.clone(),
        };
        let router = axum::Router::new()
            .route("/{hub}/api/{category}/{event}", axum::routing::post(hook))
            .with_state(state);
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        tokio::spawn(async move { axum::serve(listener, router).await });
        Hook {
            template: format!("http://{addr}/{{hub}}/api/{{category}}/{{event}}?code=function-key"),
            events: rx,
            script,
        }
    }

    /// Answers the next requests of `event` with `answers`, in order.
    fn script(&self, event: &str, answers: &[Answer]) {
        self.script
            .lock()
            .unwrap()
            .entry(event.to_owned())
            .or_default()
            .extend(answers.iter().cloned());
    }

    async fn next(&mut self) -> Received {
        tokio::time::timeout(Duration::from_secs(15), self.events.recv())
            .await
            .expect("an upstream request in time")
            .expect("the receiver runs")
    }

    fn config(&self) -> UpstreamConfig {
        UpstreamConfig {
            templates: vec![UpstreamTemplate::catch_all(self.template.clone())],
            ..UpstreamConfig::default()
        }
    }
}

fn protocol_of(headers: &HeaderMap) -> Protocol {
    match headers.get("content-type").map(|v| v.to_str().unwrap()) {
        Some("application/x-msgpack") => Protocol::MessagePack,
        _ => Protocol::Json,
    }
}

/// Decodes an unframed message body.
fn decode_body(protocol: Protocol, body: &[u8]) -> HubMessage {
    let mut framed = Vec::new();
    match protocol {
        Protocol::Json => {
            framed.extend_from_slice(body);
            framed.push(0x1e);
        }
        Protocol::MessagePack => {
            write_varint(body.len(), &mut framed);
            framed.extend_from_slice(body);
        }
    }
    Protocol::decode(protocol, &mut BytesMut::from(&framed[..]), None)
        .unwrap()
        .expect("one whole message")
}

fn framed(protocol: Protocol, message: &HubMessage) -> Vec<u8> {
    protocol.encode_to_bytes(message).unwrap().to_vec()
}

async fn hook(
    State(state): State<Receiver>,
    uri: Uri,
    headers: HeaderMap,
    body: Bytes,
) -> Response {
    let connection_id = headers
        .get("x-asrs-connection-id")
        .map(|v| v.to_str().unwrap().to_owned())
        .unwrap_or_default();
    let expected: Vec<String> = keys()
        .iter()
        .map(|key| {
            format!(
                "sha256={}",
                hmac_sha256_hex(key.as_bytes(), connection_id.as_bytes())
            )
        })
        .collect();
    let signed = headers
        .get("x-asrs-signature")
        .map(|v| v.to_str().unwrap())
        .is_some_and(|signature| signature == expected.join(","));
    let event = headers
        .get("x-asrs-event")
        .map(|v| v.to_str().unwrap().to_owned())
        .unwrap_or_default();
    let category = headers
        .get("x-asrs-category")
        .map(|v| v.to_str().unwrap().to_owned())
        .unwrap_or_default();
    let answer = state
        .script
        .lock()
        .unwrap()
        .get_mut(&event)
        .and_then(VecDeque::pop_front)
        .unwrap_or(if category == "messages" {
            Answer::Echo
        } else {
            Answer::Status(200)
        });
    let protocol = protocol_of(&headers);
    let response = match answer {
        Answer::Status(code) => StatusCode::from_u16(code).unwrap().into_response(),
        Answer::Echo | Answer::CompletionError(_) => {
            let HubMessage::Invocation(invocation) = decode_body(protocol, &body) else {
                panic!("not an invocation");
            };
            let id = invocation.invocation_id.clone().unwrap_or_default();
            let completion = match answer {
                Answer::CompletionError(text) => Completion::error(id, text),
                _ => Completion::result(
                    id,
                    invocation
                        .arguments
                        .first()
                        .cloned()
                        .unwrap_or_else(Payload::null),
                ),
            };
            framed(protocol, &HubMessage::Completion(completion)).into_response()
        }
    };
    state
        .events
        .send(Received {
            path: uri.path().to_owned(),
            query: uri.query().map(str::to_owned),
            headers,
            body,
            signed,
        })
        .await
        .unwrap();
    response
}

// ---------------------------------------------------------------------------------------------
// The upstream on its own

fn info(connection_id: &str) -> ConnectionInfo {
    ConnectionInfo {
        hub: "app_chat".to_owned(),
        connection_id: connection_id.to_owned(),
        user_id: Some("alice".to_owned()),
        claims: vec![
            ("asrs.s.uid".to_owned(), "alice".to_owned()),
            ("role".to_owned(), "admin".to_owned()),
        ],
        query: Some("hub=chat&id=token-1&access_token=SECRET-TOKEN".to_owned()),
    }
}

/// Fast retries, so that the tests do not wait for the configured backoff.
const FAST: RetryPolicy = RetryPolicy::new(4, Duration::from_millis(10), Duration::from_millis(20));

fn invocation(id: Option<&str>, target: &str, argument: Payload) -> UnknownInvocation {
    let mut invocation = UnknownInvocation::new(target, vec![argument]);
    invocation.invocation_id = id.map(str::to_owned);
    invocation
}

fn result_json(reply: &InvocationReply) -> Value {
    match reply {
        InvocationReply::Result(payload) => payload.deserialize().unwrap(),
        other => panic!("not a result: {other:?}"),
    }
}

fn error_text(reply: &InvocationReply) -> &str {
    match reply {
        InvocationReply::Error(text) => text,
        other => panic!("not an error: {other:?}"),
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn connection_events_are_signed_and_carry_the_connection() {
    let mut hook = Hook::start().await;
    let upstream = Upstream::new(&hook.config(), keys());
    assert!(upstream.is_enabled());

    assert_eq!(upstream.connected(&info("conn-1")).await, Ok(()));
    let connected = hook.next().await;
    assert!(connected.signed, "{connected:?}");
    assert_eq!(connected.path, "/app_chat/api/connections/connected");
    assert_eq!(connected.query.as_deref(), Some("code=function-key"));
    assert_eq!(connected.header("x-asrs-connection-id"), Some("conn-1"));
    assert_eq!(connected.header("x-asrs-hub"), Some("app_chat"));
    assert_eq!(connected.header("x-asrs-category"), Some("connections"));
    assert_eq!(connected.header("x-asrs-event"), Some("connected"));
    assert_eq!(connected.header("x-asrs-user-id"), Some("alice"));
    assert_eq!(
        connected.header("x-asrs-user-claims"),
        Some("asrs.s.uid: alice, role: admin")
    );
    assert_eq!(
        connected.header("x-asrs-client-query"),
        Some("?hub=chat&id=token-1")
    );
    assert_eq!(connected.header("content-type"), Some("application/json"));
    assert_eq!(&connected.body[..], br#"{"type":10}"#);
    assert!(!format!("{:?}", connected.headers).contains("SECRET-TOKEN"));

    upstream.disconnected(&info("conn-1"), Some("boom")).await;
    let disconnected = hook.next().await;
    assert!(disconnected.signed);
    assert_eq!(disconnected.path, "/app_chat/api/connections/disconnected");
    assert_eq!(disconnected.event(), "disconnected");
    assert_eq!(&disconnected.body[..], br#"{"Type":11,"Error":"boom"}"#);
    upstream.disconnected(&info("conn-2"), None).await;
    assert_eq!(&hook.next().await.body[..], br#"{"Type":11}"#);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn invocations_are_answered_with_the_receivers_completion() {
    let mut hook = Hook::start().await;
    let upstream = Upstream::new(&hook.config(), keys());

    // JSON: the body is the invocation without its record separator.
    let reply = upstream
        .invoke(
            &info("c1"),
            Protocol::Json,
            invocation(
                Some("0"),
                "broadcast",
                Payload::from_json_text(r#"{"text":"hi"}"#).unwrap(),
            ),
        )
        .await;
    assert_eq!(result_json(&reply), json!({"text": "hi"}));
    let request = hook.next().await;
    assert!(request.signed);
    assert_eq!(request.path, "/app_chat/api/messages/broadcast");
    assert_eq!(request.header("x-asrs-category"), Some("messages"));
    assert_eq!(request.header("content-type"), Some("application/json"));
    assert_eq!(
        &request.body[..],
        br#"{"type":1,"invocationId":"0","target":"broadcast","arguments":[{"text":"hi"}]}"#
    );

    // MessagePack: the body has no length prefix; the answer is decoded as MessagePack.
    let packed = Payload::MessagePack(Bytes::from(rmp_serde_like_str("packed")));
    let reply = upstream
        .invoke(
            &info("c1"),
            Protocol::MessagePack,
            invocation(Some("7"), "echo", packed),
        )
        .await;
    assert_eq!(result_json(&reply), json!("packed"));
    let request = hook.next().await;
    assert_eq!(
        request.header("content-type"),
        Some("application/x-msgpack")
    );
    let HubMessage::Invocation(Invocation {
        invocation_id,
        target,
        ..
    }) = decode_body(Protocol::MessagePack, &request.body)
    else {
        panic!("not an invocation");
    };
    assert_eq!(invocation_id.as_deref(), Some("7"));
    assert_eq!(target, "echo");

    // An error completion passes through verbatim.
    hook.script("fail", &[Answer::CompletionError("no such thing")]);
    let reply = upstream
        .invoke(
            &info("c1"),
            Protocol::Json,
            invocation(Some("1"), "fail", Payload::null()),
        )
        .await;
    assert_eq!(error_text(&reply), "no such thing");
    hook.next().await;
}

/// The MessagePack encoding of a short string (fixstr).
fn rmp_serde_like_str(text: &str) -> Vec<u8> {
    assert!(text.len() < 32);
    let mut out = vec![0xa0 | u8::try_from(text.len()).unwrap()];
    out.extend_from_slice(text.as_bytes());
    out
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn statuses_become_void_or_error_completions() {
    let mut hook = Hook::start().await;
    let upstream = Upstream::new(&hook.config(), keys());
    hook.script("empty", &[Answer::Status(204), Answer::Status(200)]);
    hook.script("missing", &[Answer::Status(404), Answer::Status(503)]);
    for _ in 0..2 {
        let reply = upstream
            .invoke(
                &info("c1"),
                Protocol::Json,
                invocation(Some("1"), "empty", Payload::null()),
            )
            .await;
        assert!(matches!(reply, InvocationReply::Void), "{reply:?}");
        hook.next().await;
    }
    let reply = upstream
        .invoke(
            &info("c1"),
            Protocol::Json,
            invocation(Some("2"), "missing", Payload::null()),
        )
        .await;
    assert_eq!(error_text(&reply), "Invocation failed, status code 404");
    hook.next().await;
    // Messages are never retried: one request, one error.
    let reply = upstream
        .invoke(
            &info("c1"),
            Protocol::MessagePack,
            invocation(Some("3"), "missing", Payload::null()),
        )
        .await;
    assert_eq!(error_text(&reply), "Invocation failed, status code 503");
    hook.next().await;
    assert!(hook.events.try_recv().is_err());

    // A non-blocking invocation is sent without an id; nobody waits for its answer.
    let reply = upstream
        .invoke(
            &info("c1"),
            Protocol::Json,
            invocation(None, "missing", Payload::null()),
        )
        .await;
    assert!(matches!(reply, InvocationReply::Void), "{reply:?}");
    let request = hook.next().await;
    assert_eq!(
        &request.body[..],
        br#"{"type":1,"target":"missing","arguments":[null]}"#
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_unreachable_upstream_fails_invocations_without_refusing_connections() {
    let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let port = listener.local_addr().unwrap().port();
    drop(listener);
    let config = UpstreamConfig {
        templates: vec![UpstreamTemplate::catch_all(format!(
            "http://127.0.0.1:{port}/{{event}}"
        ))],
        refuse_connections: true,
        ..UpstreamConfig::default()
    };
    let upstream = Upstream::new(&config, keys()).with_retry_policy(FAST);
    assert_eq!(upstream.connected(&info("c1")).await, Ok(()));
    let reply = upstream
        .invoke(
            &info("c1"),
            Protocol::Json,
            invocation(Some("1"), "x", Payload::null()),
        )
        .await;
    let text = error_text(&reply);
    assert!(text.starts_with("Invocation failed, error: "), "{text}");
    assert!(text.ends_with('.'), "{text}");
    assert!(!text.contains("127.0.0.1"), "{text}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn failed_connection_events_are_retried_until_they_succeed() {
    let mut hook = Hook::start().await;
    let upstream = Upstream::new(&hook.config(), keys()).with_retry_policy(FAST);
    hook.script(
        "connected",
        &[
            Answer::Status(503),
            Answer::Status(500),
            Answer::Status(429),
        ],
    );
    hook.script("disconnected", &[Answer::Status(502)]);
    // The connection does not wait for the retries.
    assert_eq!(upstream.connected(&info("c1")).await, Ok(()));
    for _ in 0..4 {
        let request = hook.next().await;
        assert_eq!(request.event(), "connected");
        assert!(request.signed);
    }
    upstream.disconnected(&info("c1"), None).await;
    for _ in 0..2 {
        assert_eq!(hook.next().await.event(), "disconnected");
    }

    // At most 1 + 3 attempts; a 4xx other than 408/429 is not retried.
    hook.script("connected", &[Answer::Status(503); 4]);
    upstream.connected(&info("c2")).await.unwrap();
    for _ in 0..4 {
        assert_eq!(hook.next().await.header("x-asrs-connection-id"), Some("c2"));
    }
    hook.script("connected", &[Answer::Status(400)]);
    upstream.connected(&info("c3")).await.unwrap();
    assert_eq!(hook.next().await.header("x-asrs-connection-id"), Some("c3"));
    upstream.connected(&info("c4")).await.unwrap();
    assert_eq!(hook.next().await.header("x-asrs-connection-id"), Some("c4"));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_refusal_refuses_only_when_enabled() {
    let mut hook = Hook::start().await;
    hook.script(
        "connected",
        &[
            Answer::Status(403),
            Answer::Status(401),
            Answer::Status(403),
        ],
    );
    let refusing = Upstream::new(
        &UpstreamConfig {
            refuse_connections: true,
            ..hook.config()
        },
        keys(),
    );
    let refused = refusing.connected(&info("c1")).await.unwrap_err();
    assert!(refused.contains("403"), "{refused}");
    let refused = refusing.connected(&info("c2")).await.unwrap_err();
    assert!(refused.contains("401"), "{refused}");
    hook.next().await;
    hook.next().await;
    // A refused connection's `disconnected` is not sent; others' are.
    refusing.disconnected(&info("c1"), None).await;
    refusing.disconnected(&info("c9"), None).await;
    let disconnected = hook.next().await;
    assert_eq!(disconnected.event(), "disconnected");
    assert_eq!(disconnected.header("x-asrs-connection-id"), Some("c9"));
    // Off (the default): the upstream is only told.
    let telling = Upstream::new(&hook.config(), keys());
    assert_eq!(telling.connected(&info("c3")).await, Ok(()));
    hook.next().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn templates_route_events_to_the_first_match() {
    let mut hook = Hook::start().await;
    let config = UpstreamConfig {
        templates: vec![
            UpstreamTemplate {
                hub_pattern: "other".to_owned(),
                ..UpstreamTemplate::catch_all("http://127.0.0.1:9/never")
            },
            UpstreamTemplate {
                category_pattern: "messages".to_owned(),
                event_pattern: "send,broadcast".to_owned(),
                ..UpstreamTemplate::catch_all(hook.template.clone())
            },
        ],
        ..UpstreamConfig::default()
    };
    let upstream = Upstream::new(&config, keys());
    // No template for connection events: nothing is sent.
    upstream.connected(&info("c1")).await.unwrap();
    let reply = upstream
        .invoke(
            &info("c1"),
            Protocol::Json,
            invocation(Some("1"), "send", Payload::null()),
        )
        .await;
    assert!(matches!(reply, InvocationReply::Result(_)), "{reply:?}");
    let request = hook.next().await;
    assert_eq!(request.path, "/app_chat/api/messages/send");
    let reply = upstream
        .invoke(
            &info("c1"),
            Protocol::Json,
            invocation(Some("2"), "unrouted", Payload::null()),
        )
        .await;
    assert!(error_text(&reply).starts_with("Invocation failed"));
    assert!(hook.events.try_recv().is_err());
}

// ---------------------------------------------------------------------------------------------
// End to end: clients at /client/?hub=

/// A client token as the Management SDK makes it: HS256 over the key's UTF-8 bytes.
fn client_token(hub: &str, user: &str) -> String {
    let claims = json!({
        "aud": format!("http://localhost/client/?hub={hub}"),
        "exp": now() + 3600,
        "asrs.s.uid": user,
    });
    jsonwebtoken::encode(
        &Header::new(Algorithm::HS256),
        &claims,
        &EncodingKey::from_secret(PRIMARY.as_bytes()).unwrap(),
    )
    .unwrap()
}

type Ws =
    tokio_tungstenite::WebSocketStream<tokio_tungstenite::MaybeTlsStream<tokio::net::TcpStream>>;

/// A raw client of either protocol.
struct Client {
    ws: Ws,
    protocol: Protocol,
    buf: BytesMut,
    connection_id: String,
}

impl Client {
    async fn connect(app: &TestApp, hub: &str, user: &str, protocol: Protocol) -> Client {
        let token = client_token(hub, user);
        let negotiate = app
            .http
            .post(format!(
                "{}/client/negotiate?hub={hub}&negotiateVersion=1",
                app.url
            ))
            .bearer_auth(&token)
            .send()
            .await
            .unwrap();
        assert_eq!(negotiate.status(), 200);
        let body: Value = negotiate.json().await.unwrap();
        let connection_token = body["connectionToken"].as_str().unwrap().to_owned();
        let connection_id = body["connectionId"].as_str().unwrap().to_owned();
        let mut request = format!("ws://{}/client/?hub={hub}&id={connection_token}", app.addr)
            .into_client_request()
            .unwrap();
        request
            .headers_mut()
            .insert("authorization", format!("Bearer {token}").parse().unwrap());
        let (mut ws, _) = tokio_tungstenite::connect_async(request).await.unwrap();
        let handshake = format!(
            "{{\"protocol\":\"{}\",\"version\":1}}\u{1e}",
            protocol.name()
        );
        ws.send(Message::Text(handshake.into())).await.unwrap();
        let answer = tokio::time::timeout(Duration::from_secs(10), ws.next())
            .await
            .unwrap()
            .unwrap()
            .unwrap();
        assert_eq!(answer.into_data().as_ref(), b"{}\x1e");
        Client {
            ws,
            protocol,
            buf: BytesMut::new(),
            connection_id,
        }
    }

    async fn send(&mut self, message: HubMessage) {
        let bytes = framed(self.protocol, &message);
        let frame = match self.protocol {
            Protocol::Json => Message::Text(String::from_utf8(bytes).unwrap().into()),
            Protocol::MessagePack => Message::Binary(bytes.into()),
        };
        self.ws.send(frame).await.unwrap();
    }

    async fn invoke(&mut self, id: &str, target: &str, argument: Payload) {
        self.send(HubMessage::Invocation(Invocation {
            invocation_id: Some(id.to_owned()),
            ..Invocation::new(target, vec![argument])
        }))
        .await;
    }

    /// The next message that is not a ping; `None` when the connection ends.
    async fn next(&mut self) -> Option<HubMessage> {
        loop {
            if let Some(message) = self.protocol.decode(&mut self.buf, None).unwrap() {
                if matches!(message, HubMessage::Ping) {
                    continue;
                }
                return Some(message);
            }
            let frame = tokio::time::timeout(Duration::from_secs(10), self.ws.next())
                .await
                .expect("a message in time")?;
            match frame {
                Ok(Message::Text(text)) => self.buf.extend_from_slice(text.as_bytes()),
                Ok(Message::Binary(data)) => self.buf.extend_from_slice(&data),
                Ok(Message::Close(_)) | Err(_) => return None,
                Ok(_) => {}
            }
        }
    }

    async fn completion(&mut self) -> Completion {
        match self.next().await {
            Some(HubMessage::Completion(completion)) => completion,
            other => panic!("not a completion: {other:?}"),
        }
    }
}

async fn start(hook: &Hook, refuse: bool) -> TestApp {
    let mut upstream = hook.config();
    upstream.refuse_connections = refuse;
    TestApp::start_with(Backend::Sqlite, move |config| {
        config.azure.access_keys = keys();
        config.upstream = upstream;
    })
    .await
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn clients_of_both_protocols_get_the_upstreams_answers() {
    let mut hook = Hook::start().await;
    let app = start(&hook, false).await;
    for protocol in Protocol::ALL {
        let mut client = Client::connect(&app, "Chat", "alice", protocol).await;
        let connected = hook.next().await;
        assert!(connected.signed, "{connected:?}");
        assert_eq!(connected.path, "/chat/api/connections/connected");
        assert_eq!(
            connected.header("x-asrs-connection-id"),
            Some(client.connection_id.as_str())
        );
        assert_eq!(connected.header("x-asrs-user-id"), Some("alice"));

        client.invoke("1", "echo", Payload::new("hello")).await;
        let completion = client.completion().await;
        assert_eq!(completion.invocation_id, "1");
        let CompletionOutcome::Result(value) = completion.outcome else {
            panic!("{protocol}: {:?}", completion.outcome);
        };
        assert_eq!(value.deserialize::<String>().unwrap(), "hello");
        let request = hook.next().await;
        assert!(request.signed);
        assert_eq!(request.path, "/chat/api/messages/echo");
        assert_eq!(protocol_of(&request.headers), protocol);

        hook.script("void", &[Answer::Status(204)]);
        client.invoke("2", "void", Payload::null()).await;
        assert!(matches!(
            client.completion().await.outcome,
            CompletionOutcome::Void
        ));
        hook.next().await;

        hook.script("missing", &[Answer::Status(404)]);
        client.invoke("3", "missing", Payload::null()).await;
        match client.completion().await.outcome {
            CompletionOutcome::Error(text) => {
                assert_eq!(text, "Invocation failed, status code 404");
            }
            other => panic!("{other:?}"),
        }
        hook.next().await;

        let connection_id = client.connection_id.clone();
        client.ws.close(None).await.unwrap();
        let disconnected = hook.next().await;
        assert_eq!(disconnected.event(), "disconnected");
        assert_eq!(
            disconnected.header("x-asrs-connection-id"),
            Some(connection_id.as_str())
        );
        assert!(disconnected.signed);
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_failing_connected_is_retried_without_holding_the_connection() {
    let mut hook = Hook::start().await;
    let app = start(&hook, false).await;
    hook.script("connected", &[Answer::Status(503)]);
    let mut client = Client::connect(&app, "chat", "bob", Protocol::Json).await;
    let first = hook.next().await;
    assert_eq!(first.event(), "connected");
    // The connection works before the retry (at least 0.5 s later) arrives.
    client.invoke("1", "echo", Payload::new(1)).await;
    assert!(matches!(
        client.completion().await.outcome,
        CompletionOutcome::Result(_)
    ));
    assert_eq!(hook.next().await.event(), "echo");
    let retry = hook.next().await;
    assert_eq!(retry.event(), "connected");
    assert_eq!(
        retry.header("x-asrs-connection-id"),
        Some(client.connection_id.as_str())
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_403_refuses_the_connection_when_refusal_is_on() {
    let mut hook = Hook::start().await;
    let app = start(&hook, true).await;
    hook.script("connected", &[Answer::Status(403)]);
    let mut refused = Client::connect(&app, "chat", "mallory", Protocol::Json).await;
    match refused.next().await {
        Some(HubMessage::Close(close)) => {
            assert!(!close.allow_reconnect, "{close:?}");
            assert!(
                close.error.as_deref().unwrap_or_default().contains("403"),
                "{close:?}"
            );
        }
        other => panic!("not a close: {other:?}"),
    }
    assert_eq!(hook.next().await.event(), "connected");
    // The next connection is accepted.
    let mut accepted = Client::connect(&app, "chat", "alice", Protocol::Json).await;
    // A refused connection's `disconnected` is not sent.
    let next = hook.next().await;
    assert_eq!(next.event(), "connected");
    assert_eq!(next.header("x-asrs-user-id"), Some("alice"));
    accepted.invoke("1", "echo", Payload::new("ok")).await;
    assert!(matches!(
        accepted.completion().await.outcome,
        CompletionOutcome::Result(_)
    ));
}
