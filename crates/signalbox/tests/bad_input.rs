//! Hostile and broken input over real sockets: every case runs on a fresh connection while a
//! healthy client stays connected, keeps invoking and receives a periodic broadcast; after every
//! case the healthy client must have seen no disruption. Then bad bearer tokens (RFC 8725): each
//! one gets an empty 401 with the exact rejection reason counted in the metrics.

#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

mod common;

use std::collections::BTreeMap;
use std::net::SocketAddr;
use std::sync::OnceLock;
use std::time::{Duration, Instant};

use axum::Router;
use base64::Engine;
use bytes::BytesMut;
use common::{Client, http, serve, ws_connect};
use futures_util::{SinkExt, StreamExt};
use jsonwebtoken::{Algorithm, EncodingKey, Header};
use metrics_util::debugging::{DebugValue, DebuggingRecorder, Snapshotter};
use serde_json::{Value, json};
use signalbox::protocol::{
    CancelInvocation, Close, Completion, CompletionOutcome, HubMessage, Invocation, Payload,
    Protocol, StreamItem, parse_handshake_response,
};
use signalbox::{Caller, Hub, HubContext, HubError, HubOptions, HubRouterExt, JwtAuth, Policy};
use tokio::sync::watch;
use tokio_tungstenite::tungstenite::Message;
use tokio_tungstenite::tungstenite::protocol::frame::Frame;
use tokio_tungstenite::tungstenite::protocol::frame::coding::{Data, OpCode};

const PRIVATE_PEM: &[u8] = include_bytes!("keys/rs256-private.pem");
const PUBLIC_PEM: &[u8] = include_bytes!("keys/rs256-public.pem");
const KID: &str = "bad-input-key-1";
const ISSUER: &str = "https://issuer.signalbox.invalid";
const AUDIENCE: &str = "bad-input-tests";
const HANDSHAKE_TIMEOUT: Duration = Duration::from_millis(500);
const CLOSED: &str = "Connection closed with an error. InvalidDataException: ";
const TOO_LARGE: &str = "The maximum message size of 32768B was exceeded. The message size can be configured in AddHubOptions.";

// ---------------------------------------------------------------------------------------------
// Server, tokens, metrics

fn now() -> u64 {
    common::now()
}

/// An RS256 token from the test key pair; `claims` override the valid defaults (a `null` value
/// removes a claim).
fn rs256(claims: &Value, kid: Option<&str>) -> String {
    let mut all = json!({
        "sub": "healthy",
        "iss": ISSUER,
        "aud": AUDIENCE,
        "exp": now() + 300,
    });
    for (k, v) in claims.as_object().unwrap() {
        if v.is_null() {
            all.as_object_mut().unwrap().remove(k);
        } else {
            all[k] = v.clone();
        }
    }
    let mut header = Header::new(Algorithm::RS256);
    header.kid = kid.map(str::to_owned);
    jsonwebtoken::encode(
        &header,
        &all,
        &EncodingKey::from_rsa_pem(PRIVATE_PEM).unwrap(),
    )
    .unwrap()
}

fn valid_token() -> String {
    rs256(&json!({}), Some(KID))
}

fn b64(bytes: &[u8]) -> String {
    base64::engine::general_purpose::URL_SAFE_NO_PAD.encode(bytes)
}

/// A token with a hand-written header, signed (or not) by `sign` over `header.claims`.
fn forged(header: &Value, claims: &Value, sign: impl Fn(&[u8]) -> Vec<u8>) -> String {
    let signing_input = format!(
        "{}.{}",
        b64(header.to_string().as_bytes()),
        b64(claims.to_string().as_bytes())
    );
    let signature = sign(signing_input.as_bytes());
    format!("{signing_input}.{}", b64(&signature))
}

fn valid_claims() -> Value {
    json!({"sub": "mallory", "iss": ISSUER, "aud": AUDIENCE, "exp": now() + 300})
}

fn hub(options: HubOptions) -> (Hub, HubContext) {
    let auth = JwtAuth::builder()
        .rsa_pem(PUBLIC_PEM, &[Algorithm::RS256], Some(KID))
        .unwrap()
        .issuer(ISSUER)
        .audience(AUDIENCE)
        .build()
        .unwrap();
    let hub = Hub::builder("test")
        .authentication(auth)
        .authorize(Policy::authenticated())
        .options(options)
        .method("Echo", |_c: Caller, (v,): (Value,)| async move {
            Ok::<_, HubError>(v)
        })
        .method("Add", |_c: Caller, (a, b): (i64, i64)| async move {
            Ok::<_, HubError>(a + b)
        })
        .build();
    let context = hub.context();
    (hub, context)
}

async fn server() -> (SocketAddr, HubContext) {
    let (hub, context) = hub(HubOptions::default().handshake_timeout(HANDSHAKE_TIMEOUT));
    (serve(Router::new().map_hub("/hub", hub)).await, context)
}

fn snapshotter() -> &'static Snapshotter {
    static SNAPSHOTTER: OnceLock<Snapshotter> = OnceLock::new();
    SNAPSHOTTER.get_or_init(|| {
        let recorder = DebuggingRecorder::new();
        let snapshotter = recorder.snapshotter();
        recorder.install().unwrap();
        snapshotter
    })
}

/// `signalbox_auth_failures_total` by `reason` since the last call (the debugging recorder's
/// snapshots drain its counters).
fn drain_auth_failures() -> BTreeMap<String, u64> {
    let mut out = BTreeMap::new();
    for (key, _, _, value) in snapshotter().snapshot().into_vec() {
        let key = key.key();
        if key.name() != signalbox::metrics::AUTH_FAILURES {
            continue;
        }
        let DebugValue::Counter(count) = value else {
            panic!("not a counter: {value:?}")
        };
        if count == 0 {
            continue;
        }
        let reason = key
            .labels()
            .find(|l| l.key() == "reason")
            .map(|l| l.value().to_owned())
            .unwrap_or_default();
        *out.entry(reason).or_default() += count;
    }
    out
}

// ---------------------------------------------------------------------------------------------
// The healthy client and the broadcast

/// What the healthy client saw.
#[derive(Debug)]
struct Health {
    answered: u64,
    ticks: Vec<u64>,
    slowest: Duration,
}

/// Invokes `Echo(n)` over and over (checking each answer) and records every `Tick` broadcast,
/// until told how many ticks were sent; then reads until it has them all.
async fn healthy_client(mut c: Client, mut stop: watch::Receiver<Option<u64>>) -> Health {
    let mut health = Health {
        answered: 0,
        ticks: Vec::new(),
        slowest: Duration::ZERO,
    };
    let mut n = 0u64;
    loop {
        let total = *stop.borrow_and_update();
        if let Some(total) = total {
            while (health.ticks.len() as u64) < total {
                match c.recv().await.expect("healthy client disconnected") {
                    HubMessage::Invocation(inv) if inv.target == "Tick" => {
                        health.ticks.push(inv.arguments[0].deserialize().unwrap());
                    }
                    _ => {}
                }
            }
            return health;
        }
        let id = format!("h{n}");
        let started = Instant::now();
        c.send(&HubMessage::Invocation(Invocation {
            invocation_id: Some(id.clone()),
            ..Invocation::new("Echo", vec![Payload::new(n)])
        }))
        .await;
        loop {
            match c.recv().await.expect("healthy client disconnected") {
                HubMessage::Completion(done) if done.invocation_id == id => {
                    match done.outcome {
                        CompletionOutcome::Result(p) => {
                            assert_eq!(p.deserialize::<u64>().unwrap(), n);
                        }
                        other => panic!("healthy invocation failed: {other:?}"),
                    }
                    break;
                }
                HubMessage::Invocation(inv) if inv.target == "Tick" => {
                    health.ticks.push(inv.arguments[0].deserialize().unwrap());
                }
                HubMessage::Ping => {}
                other => panic!("healthy client got {other:?}"),
            }
        }
        health.slowest = health.slowest.max(started.elapsed());
        health.answered += 1;
        n += 1;
        // Sleeping also lets broadcasts pile up between reads.
        let _ = tokio::time::timeout(Duration::from_millis(20), stop.changed()).await;
    }
}

/// A healthy client and a broadcaster running while the cases run.
struct Witness {
    stop_client: watch::Sender<Option<u64>>,
    stop_ticks: watch::Sender<bool>,
    client: tokio::task::JoinHandle<Health>,
    ticker: tokio::task::JoinHandle<u64>,
}

impl Witness {
    async fn start(addr: SocketAddr, context: HubContext) -> Witness {
        let c = Client::connect(addr, "/hub", Some(&valid_token()), Protocol::Json).await;
        let (stop_client, rx) = watch::channel(None);
        let client = tokio::spawn(healthy_client(c, rx));
        let (stop_ticks, mut ticks_rx) = watch::channel(false);
        let ticker = tokio::spawn(async move {
            let mut sent = 0u64;
            while !*ticks_rx.borrow_and_update() {
                context.clients().all().send("Tick", (sent,)).await.unwrap();
                sent += 1;
                let _ = tokio::time::timeout(Duration::from_millis(50), ticks_rx.changed()).await;
            }
            sent
        });
        Witness {
            stop_client,
            stop_ticks,
            client,
            ticker,
        }
    }

    /// Stops both; the healthy client must have had every invocation answered promptly and every
    /// broadcast delivered, in order.
    async fn finish(self) -> Health {
        self.stop_ticks.send(true).unwrap();
        let sent = self.ticker.await.unwrap();
        self.stop_client.send(Some(sent)).unwrap();
        let health = tokio::time::timeout(Duration::from_secs(20), self.client)
            .await
            .expect("healthy client stalled")
            .unwrap();
        assert_eq!(health.ticks, (0..sent).collect::<Vec<_>>(), "broadcasts");
        assert!(health.answered > 0);
        assert!(
            health.slowest < Duration::from_secs(2),
            "an invocation of the healthy client took {:?}",
            health.slowest
        );
        health
    }
}

// ---------------------------------------------------------------------------------------------
// Helpers for the bad connections

async fn connect(addr: SocketAddr, protocol: Protocol) -> Client {
    Client::connect(addr, "/hub", Some(&valid_token()), protocol).await
}

fn p(v: Value) -> Payload {
    Payload::new(v)
}

/// The next message that is not a Ping or a Tick broadcast.
async fn next_reply(c: &mut Client) -> HubMessage {
    loop {
        match c.recv().await.expect("socket closed") {
            HubMessage::Ping => {}
            HubMessage::Invocation(inv) if inv.target == "Tick" => {}
            other => return other,
        }
    }
}

async fn expect_close(c: &mut Client) -> Close {
    loop {
        match c
            .recv()
            .await
            .expect("socket closed without a Close message")
        {
            HubMessage::Close(close) => {
                assert!(c.recv().await.is_none(), "socket ends after the Close");
                return close;
            }
            _ => continue,
        }
    }
}

async fn expect_close_error(c: &mut Client, expected: &str) {
    let close = expect_close(c).await;
    assert_eq!(close.error.as_deref(), Some(expected));
    assert!(!close.allow_reconnect);
}

/// Invokes `Echo` and checks the answer, and that nothing else (a stray completion, an error)
/// arrived first.
async fn assert_usable(c: &mut Client) {
    let id = "usable".to_owned();
    c.send(&HubMessage::Invocation(Invocation {
        invocation_id: Some(id.clone()),
        ..Invocation::new("Echo", vec![p(json!("still here"))])
    }))
    .await;
    match next_reply(c).await {
        HubMessage::Completion(Completion {
            invocation_id,
            outcome: CompletionOutcome::Result(result),
            ..
        }) if invocation_id == id => {
            assert_eq!(result.deserialize::<Value>().unwrap(), json!("still here"));
        }
        other => panic!("expected the Echo completion, got {other:?}"),
    }
}

async fn invoke_error(c: &mut Client, target: &str, args: Vec<Payload>) -> String {
    match c.invoke(target, args).await {
        CompletionOutcome::Error(e) => e,
        other => panic!("expected an error completion, got {other:?}"),
    }
}

async fn send_frame(c: &mut Client, opcode: Data, bytes: Vec<u8>) {
    c.ws.send(Message::Frame(Frame::message(
        bytes,
        OpCode::Data(opcode),
        true,
    )))
    .await
    .unwrap();
}

/// A socket with the upgrade done but no handshake yet.
async fn raw_socket(addr: SocketAddr, protocol: Protocol) -> Client {
    Client::raw(
        ws_connect(addr, "/hub", Some(&valid_token()))
            .await
            .unwrap(),
        protocol,
    )
}

/// Reads the handshake response the server sends before closing, and checks the socket ends.
async fn expect_handshake_error(c: &mut Client) -> String {
    let mut buf = BytesMut::new();
    loop {
        if let Some(response) = parse_handshake_response(&mut buf).unwrap() {
            let error = response.expect_err("handshake unexpectedly accepted");
            let end = tokio::time::timeout(Duration::from_secs(5), async {
                match c.ws.next().await {
                    None | Some(Err(_)) | Some(Ok(Message::Close(_))) => {}
                    Some(Ok(other)) => panic!("frame after a handshake error: {other:?}"),
                }
            })
            .await;
            assert!(end.is_ok(), "socket left open after a handshake error");
            return error;
        }
        match tokio::time::timeout(Duration::from_secs(5), c.ws.next())
            .await
            .expect("no handshake response")
        {
            Some(Ok(Message::Text(t))) => buf.extend_from_slice(t.as_bytes()),
            Some(Ok(Message::Binary(b))) => buf.extend_from_slice(&b),
            Some(Ok(_)) => {}
            other => panic!("socket ended without a handshake response: {other:?}"),
        }
    }
}

fn varint(len: usize) -> Vec<u8> {
    let mut out = Vec::new();
    signalbox::protocol::framing::write_varint(len, &mut out);
    out
}

// ---------------------------------------------------------------------------------------------
// Socket cases

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn bad_input_on_one_connection_never_disrupts_another() {
    let (addr, context) = server().await;
    let witness = Witness::start(addr, context).await;

    for protocol in Protocol::ALL {
        // Truncated messages: a message split over frames is fine; one that never ends just
        // waits, and the client leaving then is an ordinary disconnect.
        let mut c = connect(addr, protocol).await;
        let whole = protocol
            .encode_to_bytes(&HubMessage::Invocation(Invocation {
                invocation_id: Some("split".into()),
                ..Invocation::new("Add", vec![p(json!(40)), p(json!(2))])
            }))
            .unwrap()
            .to_vec();
        for piece in whole.chunks(3) {
            c.send_raw(piece.to_vec()).await;
        }
        match next_reply(&mut c).await {
            HubMessage::Completion(done) => {
                assert_eq!(done.invocation_id, "split");
                let CompletionOutcome::Result(r) = done.outcome else {
                    panic!("{done:?}")
                };
                assert_eq!(r.deserialize::<i64>().unwrap(), 42);
            }
            other => panic!("{other:?}"),
        }
        c.send_raw(whole[..whole.len() - 2].to_vec()).await;
        drop(c);

        // Garbage.
        let mut c = connect(addr, protocol).await;
        match protocol {
            Protocol::Json => {
                c.send_raw(b"{not json at all\x1e".to_vec()).await;
                expect_close_error(
                    &mut c,
                    &format!("{CLOSED}Error reading JSON: key must be a string at line 1 column 2"),
                )
                .await;
            }
            Protocol::MessagePack => {
                c.send_raw(vec![0x05, 0xc1, 0xc1, 0xc1, 0xc1, 0xc1]).await;
                expect_close_error(
                    &mut c,
                    &format!("{CLOSED}Error reading MessagePack: Reading array length for 'message' failed (found Reserved)."),
                )
                .await;
            }
        }

        // Unknown message types are skipped; the connection stays usable.
        let mut c = connect(addr, protocol).await;
        match protocol {
            Protocol::Json => {
                c.send_raw(b"{\"type\":99,\"whatever\":[1,2]}\x1e{\"type\":0}\x1e".to_vec())
                    .await;
            }
            Protocol::MessagePack => {
                // [99], [99, "x", {}]
                c.send_raw(vec![0x02, 0x91, 0x63, 0x05, 0x93, 0x63, 0xa1, b'x', 0x80])
                    .await;
            }
        }
        assert_usable(&mut c).await;

        // Oversized messages: one over the 32 KiB limit.
        let mut c = connect(addr, protocol).await;
        let big = "x".repeat(40_000);
        c.send(&HubMessage::Invocation(Invocation::new(
            "Echo",
            vec![p(json!(big))],
        )))
        .await;
        expect_close_error(&mut c, &format!("{CLOSED}{TOO_LARGE}")).await;

        // Unknown methods, with and without an invocation id.
        let mut c = connect(addr, protocol).await;
        assert_eq!(
            invoke_error(&mut c, "NoSuchMethod", vec![]).await,
            "Unknown hub method 'NoSuchMethod'"
        );
        c.send(&HubMessage::Invocation(Invocation::new(
            "NoSuchMethod",
            vec![],
        )))
        .await;
        assert_usable(&mut c).await;

        // Wrong argument counts and types.
        let bad_arguments = "Failed to invoke 'Add' due to an error on the server.";
        for args in [
            vec![],
            vec![p(json!(1))],
            vec![p(json!(1)), p(json!(2)), p(json!(3))],
            vec![p(json!("1")), p(json!(2))],
            vec![p(json!(1.5)), p(json!(2))],
            vec![p(json!({"a": 1})), p(json!([1]))],
            vec![p(json!(null)), p(json!(2))],
        ] {
            assert_eq!(invoke_error(&mut c, "Add", args).await, bad_arguments);
        }
        assert_eq!(
            invoke_error(&mut c, "Echo", vec![]).await,
            "Failed to invoke 'Echo' due to an error on the server."
        );
        assert_usable(&mut c).await;

        // Stream items, completions and cancellations for ids that do not exist are ignored.
        let mut c = connect(addr, protocol).await;
        c.send(&HubMessage::StreamItem(StreamItem {
            headers: Default::default(),
            invocation_id: "no-such-stream".into(),
            item: p(json!(1)),
        }))
        .await;
        c.send(&HubMessage::Completion(Completion::void("no-such-stream")))
            .await;
        c.send(&HubMessage::Completion(Completion::error(
            "no-such-invocation",
            "boom",
        )))
        .await;
        c.send(&HubMessage::Completion(Completion::result(
            "no-such-invocation",
            p(json!(1)),
        )))
        .await;
        c.send(&HubMessage::CancelInvocation(CancelInvocation {
            headers: Default::default(),
            invocation_id: "no-such-invocation".into(),
        }))
        .await;
        assert_usable(&mut c).await;

        // Ping floods: thousands of pings in one frame and in separate frames.
        let mut c = connect(addr, protocol).await;
        let ping = protocol.encode_to_bytes(&HubMessage::Ping).unwrap();
        c.send_raw(ping.repeat(5_000)).await;
        for _ in 0..2_000 {
            c.send_raw(ping.to_vec()).await;
        }
        assert_usable(&mut c).await;

        // A handshake that never completes is answered and closed after the handshake timeout.
        let mut c = raw_socket(addr, protocol).await;
        let started = Instant::now();
        c.send_raw(b"{\"protocol\":\"json\",\"vers".to_vec()).await;
        assert_eq!(
            expect_handshake_error(&mut c).await,
            "Handshake was canceled."
        );
        let waited = started.elapsed();
        assert!(
            waited >= HANDSHAKE_TIMEOUT - Duration::from_millis(50)
                && waited < HANDSHAKE_TIMEOUT + Duration::from_secs(3),
            "handshake timed out after {waited:?}"
        );

        // A handshake larger than the maximum message size.
        let mut c = raw_socket(addr, protocol).await;
        let mut huge = format!(
            "{{\"protocol\":\"{}\",\"version\":1,\"padding\":\"",
            protocol.name()
        )
        .into_bytes();
        huge.extend(std::iter::repeat_n(b'a', 40_000));
        huge.extend_from_slice(b"\"}\x1e");
        send_frame(&mut c, Data::Text, huge).await;
        assert_eq!(
            expect_handshake_error(&mut c).await,
            "An unexpected error occurred during connection handshake."
        );
    }

    // MessagePack only: huge VarInt length prefixes.
    for (prefix, expected) in [
        // 2 GB - 1 declared: over the 32 KiB limit.
        (vec![0xff, 0xff, 0xff, 0xff, 0x07], TOO_LARGE.to_owned()),
        // 32 KiB + 1 declared, only a few bytes sent.
        (varint(32 * 1024 + 1), TOO_LARGE.to_owned()),
        // More than 2 GB: rejected by the framing itself.
        (
            vec![0xff, 0xff, 0xff, 0xff, 0x0f],
            "Error reading MessagePack: Messages over 2GB in size are not supported.".to_owned(),
        ),
        (
            vec![0x80, 0x80, 0x80, 0x80, 0x80, 0x01],
            "Error reading MessagePack: Messages over 2GB in size are not supported.".to_owned(),
        ),
    ] {
        let mut c = connect(addr, Protocol::MessagePack).await;
        let mut bytes = prefix;
        bytes.extend_from_slice(&[0x96, 0x01, 0x80]);
        c.send_raw(bytes).await;
        expect_close_error(&mut c, &format!("{CLOSED}{expected}")).await;
    }

    // JSON only: a record with no separator that grows past the limit over many frames.
    let mut c = connect(addr, Protocol::Json).await;
    for _ in 0..40 {
        // The server closes as soon as the limit is passed; later sends may fail.
        if c.ws
            .send(Message::Text(" ".repeat(1024).into()))
            .await
            .is_err()
        {
            break;
        }
    }
    expect_close_error(&mut c, &format!("{CLOSED}{TOO_LARGE}")).await;

    // JSON only: invalid UTF-8. In a binary frame the JSON parser rejects it; in a text frame
    // the WebSocket layer does (the frame is not valid text), so there is no Close message.
    let mut c = connect(addr, Protocol::Json).await;
    send_frame(
        &mut c,
        Data::Binary,
        b"{\"type\":1,\"target\":\"Echo\",\"arguments\":[\"\xff\xfe\"]}\x1e".to_vec(),
    )
    .await;
    expect_close_error(
        &mut c,
        &format!("{CLOSED}Error reading JSON: invalid unicode code point at line 1 column 41"),
    )
    .await;
    let mut c = connect(addr, Protocol::Json).await;
    send_frame(
        &mut c,
        Data::Text,
        b"{\"type\":1,\"target\":\"Echo\",\"arguments\":[\"\xff\xfe\"]}\x1e".to_vec(),
    )
    .await;
    assert!(
        c.recv().await.is_none(),
        "the server drops a socket that sends invalid UTF-8 text"
    );

    let health = witness.finish().await;
    eprintln!("healthy client: {health:?}");
}

// ---------------------------------------------------------------------------------------------
// Bearer tokens

/// Negotiate and a WebSocket upgrade with `token` must both be refused; negotiate with an empty
/// 401 and `WWW-Authenticate: Bearer error="invalid_token"`, counted under `reason`.
async fn assert_rejected(addr: SocketAddr, case: &str, token: &str, reason: &str) {
    drain_auth_failures();
    let auth = format!("Bearer {token}");
    let r = http(
        addr,
        "POST",
        "/hub/negotiate?negotiateVersion=1",
        &[("Authorization", &auth)],
        b"",
    )
    .await;
    assert_eq!(r.status, 401, "{case}: {}", r.text());
    assert!(r.body.is_empty(), "{case}");
    assert_eq!(
        r.header("www-authenticate"),
        Some("Bearer error=\"invalid_token\""),
        "{case}"
    );
    assert_eq!(
        drain_auth_failures(),
        BTreeMap::from([(reason.to_owned(), 1)]),
        "{case}: rejection reason"
    );
    assert!(
        ws_connect(addr, "/hub", Some(token)).await.is_err(),
        "{case}: WebSocket upgrade accepted"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn bad_tokens_get_an_empty_401_and_never_disrupt_a_connection() {
    snapshotter();
    let (addr, context) = server().await;
    let witness = Witness::start(addr, context).await;

    // A valid token works (the control case), also in the query string.
    let ok = http(
        addr,
        "POST",
        &format!(
            "/hub/negotiate?negotiateVersion=1&access_token={}",
            valid_token()
        ),
        &[],
        b"",
    )
    .await;
    assert_eq!(ok.status, 200);
    let no_kid = rs256(&json!({}), None);
    let r = http(
        addr,
        "POST",
        "/hub/negotiate?negotiateVersion=1",
        &[("Authorization", &format!("Bearer {no_kid}"))],
        b"",
    )
    .await;
    assert_eq!(
        r.status, 200,
        "a token without kid is tried against the keys"
    );

    // alg none, with and without a signature part.
    let none = forged(
        &json!({"alg": "none", "typ": "JWT"}),
        &valid_claims(),
        |_| vec![],
    );
    assert_rejected(addr, "alg none", &none, "malformed").await;
    let none_upper = forged(
        &json!({"alg": "NONE", "kid": KID}),
        &valid_claims(),
        |_| vec![],
    );
    assert_rejected(addr, "alg NONE", &none_upper, "malformed").await;

    // HS256 signed with the server's RSA public key as the HMAC secret (key confusion).
    let confused = jsonwebtoken::encode(
        &Header {
            kid: Some(KID.to_owned()),
            ..Header::new(Algorithm::HS256)
        },
        &valid_claims(),
        &EncodingKey::from_secret(PUBLIC_PEM).unwrap(),
    )
    .unwrap();
    assert_rejected(addr, "HS256 with the public key", &confused, "algorithm").await;

    // Another RS algorithm than the one pinned for the key, correctly signed.
    let rs512 = jsonwebtoken::encode(
        &Header {
            kid: Some(KID.to_owned()),
            ..Header::new(Algorithm::RS512)
        },
        &valid_claims(),
        &EncodingKey::from_rsa_pem(PRIVATE_PEM).unwrap(),
    )
    .unwrap();
    assert_rejected(addr, "RS512 on an RS256 key", &rs512, "algorithm").await;

    // Time claims (30 s leeway).
    let expired = rs256(&json!({"exp": now() - 3600}), Some(KID));
    assert_rejected(addr, "expired", &expired, "expired").await;
    let just_expired = rs256(&json!({"exp": now() - 60}), Some(KID));
    assert_rejected(addr, "expired past the leeway", &just_expired, "expired").await;
    let future = rs256(&json!({"nbf": now() + 3600}), Some(KID));
    assert_rejected(addr, "not yet valid", &future, "not_yet_valid").await;
    let no_exp = rs256(&json!({"exp": null}), Some(KID));
    assert_rejected(addr, "no exp", &no_exp, "claims").await;

    // Issuer and audience.
    let iss = rs256(&json!({"iss": "https://evil.invalid"}), Some(KID));
    assert_rejected(addr, "wrong iss", &iss, "issuer").await;
    let no_iss = rs256(&json!({"iss": null}), Some(KID));
    assert_rejected(addr, "missing iss", &no_iss, "claims").await;
    let aud = rs256(&json!({"aud": "someone-else"}), Some(KID));
    assert_rejected(addr, "wrong aud", &aud, "audience").await;
    let aud_list = rs256(&json!({"aud": ["a", "b"]}), Some(KID));
    assert_rejected(addr, "wrong aud list", &aud_list, "audience").await;

    // Unknown kid.
    let kid = rs256(&json!({}), Some("some-other-key"));
    assert_rejected(addr, "unknown kid", &kid, "unknown_kid").await;

    // Tampered payload under a valid signature.
    let valid = valid_token();
    let mut parts: Vec<&str> = valid.split('.').collect();
    let admin = b64(
        json!({"sub": "admin", "iss": ISSUER, "aud": AUDIENCE, "exp": now() + 300})
            .to_string()
            .as_bytes(),
    );
    parts[1] = &admin;
    assert_rejected(addr, "tampered claims", &parts.join("."), "signature").await;

    // Garbage.
    for garbage in [
        "garbage",
        "a.b.c",
        "....",
        "eyJhbGciOiJSUzI1NiJ9.eyJzdWIiOiJ4In0",
        "eyJhbGciOiJSUzI1NiJ9.%%%.%%%",
    ] {
        assert_rejected(addr, garbage, garbage, "malformed").await;
    }

    // Oversized: a correctly signed token over the 8 KiB limit.
    let big = rs256(&json!({"padding": "p".repeat(9 * 1024)}), Some(KID));
    assert!(big.len() > signalbox::auth::DEFAULT_MAX_TOKEN_LENGTH);
    assert_rejected(addr, "oversized", &big, "too_large").await;

    // Hub routes accept the token in the query too; bad ones are refused there the same way.
    let r = http(
        addr,
        "POST",
        &format!("/hub/negotiate?negotiateVersion=1&access_token={expired}"),
        &[],
        b"",
    )
    .await;
    assert_eq!(r.status, 401);
    assert!(r.body.is_empty());

    witness.finish().await;
}
