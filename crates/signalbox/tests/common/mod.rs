//! Test helpers: serve a router on 127.0.0.1:0, raw HTTP requests, and a raw WebSocket SignalR
//! client.

#![allow(
    dead_code,
    unreachable_pub,
    missing_docs,
    clippy::unwrap_used,
    clippy::expect_used,
    clippy::panic
)]

use std::net::SocketAddr;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use axum::Router;
use bytes::BytesMut;
use futures_util::{SinkExt, StreamExt};
use serde_json::Value;
use signalbox::protocol::{HubMessage, Protocol, handshake_request, parse_handshake_response};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;
use tokio_tungstenite::tungstenite::Message;
use tokio_tungstenite::tungstenite::client::IntoClientRequest;

pub const SECRET: &str = "integration-test-secret-integration-test-secret";

pub async fn serve(app: Router) -> SocketAddr {
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    tokio::spawn(async move {
        axum::serve(listener, app).await.unwrap();
    });
    addr
}

pub fn now() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .unwrap()
        .as_secs()
}

pub fn token(claims: Value) -> String {
    let mut claims = claims;
    if claims.get("exp").is_none() {
        claims["exp"] = Value::from(now() + 300);
    }
    jsonwebtoken::encode(
        &jsonwebtoken::Header::new(jsonwebtoken::Algorithm::HS256),
        &claims,
        &jsonwebtoken::EncodingKey::from_secret(SECRET.as_bytes()).unwrap(),
    )
    .unwrap()
}

/// A parsed HTTP response.
#[derive(Debug)]
pub struct HttpResponse {
    pub status: u16,
    pub headers: Vec<(String, String)>,
    pub body: Vec<u8>,
}

impl HttpResponse {
    pub fn header(&self, name: &str) -> Option<&str> {
        self.headers
            .iter()
            .find(|(k, _)| k.eq_ignore_ascii_case(name))
            .map(|(_, v)| v.as_str())
    }
    pub fn json(&self) -> Value {
        serde_json::from_slice(&self.body).unwrap()
    }
    pub fn text(&self) -> String {
        String::from_utf8_lossy(&self.body).into_owned()
    }
}

/// Sends one HTTP/1.1 request with `Connection: close` and reads the whole response.
pub async fn http(
    addr: SocketAddr,
    method: &str,
    path: &str,
    headers: &[(&str, &str)],
    body: &[u8],
) -> HttpResponse {
    let mut stream = TcpStream::connect(addr).await.unwrap();
    let mut request = format!(
        "{method} {path} HTTP/1.1\r\nHost: {addr}\r\nConnection: close\r\nContent-Length: {}\r\n",
        body.len()
    );
    for (k, v) in headers {
        request.push_str(&format!("{k}: {v}\r\n"));
    }
    request.push_str("\r\n");
    stream.write_all(request.as_bytes()).await.unwrap();
    stream.write_all(body).await.unwrap();
    let mut raw = Vec::new();
    tokio::time::timeout(Duration::from_secs(10), stream.read_to_end(&mut raw))
        .await
        .unwrap()
        .unwrap();
    let split = raw.windows(4).position(|w| w == b"\r\n\r\n").unwrap();
    let head = String::from_utf8_lossy(&raw[..split]).into_owned();
    let mut body = raw[split + 4..].to_vec();
    let mut lines = head.split("\r\n");
    let status_line = lines.next().unwrap();
    let status: u16 = status_line.split(' ').nth(1).unwrap().parse().unwrap();
    let headers: Vec<(String, String)> = lines
        .filter_map(|l| l.split_once(':'))
        .map(|(k, v)| (k.trim().to_owned(), v.trim().to_owned()))
        .collect();
    if headers
        .iter()
        .any(|(k, v)| k.eq_ignore_ascii_case("transfer-encoding") && v.contains("chunked"))
    {
        body = dechunk(&body);
    }
    HttpResponse {
        status,
        headers,
        body,
    }
}

fn dechunk(mut raw: &[u8]) -> Vec<u8> {
    let mut out = Vec::new();
    while let Some(eol) = raw.windows(2).position(|w| w == b"\r\n") {
        let size =
            usize::from_str_radix(std::str::from_utf8(&raw[..eol]).unwrap().trim(), 16).unwrap();
        if size == 0 {
            break;
        }
        out.extend_from_slice(&raw[eol + 2..eol + 2 + size]);
        raw = &raw[eol + 2 + size + 2..];
    }
    out
}

pub type Ws = tokio_tungstenite::WebSocketStream<tokio_tungstenite::MaybeTlsStream<TcpStream>>;

/// Opens a WebSocket to `path` (with query) with an optional bearer header.
pub async fn ws_connect(
    addr: SocketAddr,
    path: &str,
    bearer: Option<&str>,
) -> Result<Ws, tokio_tungstenite::tungstenite::Error> {
    let mut request = format!("ws://{addr}{path}").into_client_request().unwrap();
    if let Some(token) = bearer {
        request
            .headers_mut()
            .insert("authorization", format!("Bearer {token}").parse().unwrap());
    }
    tokio_tungstenite::connect_async(request)
        .await
        .map(|(ws, _)| ws)
}

/// A raw SignalR client over a WebSocket.
pub struct Client {
    pub ws: Ws,
    pub protocol: Protocol,
    buf: BytesMut,
    next_id: u64,
}

impl Client {
    /// Negotiates (v1), connects and completes the handshake.
    pub async fn connect(
        addr: SocketAddr,
        hub: &str,
        bearer: Option<&str>,
        protocol: Protocol,
    ) -> Client {
        let mut headers = vec![];
        let auth;
        if let Some(t) = bearer {
            auth = format!("Bearer {t}");
            headers.push(("Authorization", auth.as_str()));
        }
        let negotiate = http(
            addr,
            "POST",
            &format!("{hub}/negotiate?negotiateVersion=1"),
            &headers,
            b"",
        )
        .await;
        assert_eq!(negotiate.status, 200, "negotiate: {}", negotiate.text());
        let token = negotiate.json()["connectionToken"]
            .as_str()
            .unwrap()
            .to_owned();
        let ws = ws_connect(addr, &format!("{hub}?id={token}"), bearer)
            .await
            .unwrap();
        let mut client = Client {
            ws,
            protocol,
            buf: BytesMut::new(),
            next_id: 0,
        };
        client.handshake(1).await.unwrap();
        client
    }

    /// Wraps an open socket without a handshake.
    pub fn raw(ws: Ws, protocol: Protocol) -> Client {
        Client {
            ws,
            protocol,
            buf: BytesMut::new(),
            next_id: 0,
        }
    }

    /// Sends the handshake; returns the server's error if it refused.
    pub async fn handshake(&mut self, version: i32) -> Result<(), String> {
        let request = handshake_request(self.protocol, version);
        self.ws
            .send(Message::Text(
                String::from_utf8(request.to_vec()).unwrap().into(),
            ))
            .await
            .unwrap();
        loop {
            if let Some(result) = parse_handshake_response(&mut self.buf).unwrap() {
                return result;
            }
            let frame = self
                .next_frame()
                .await
                .expect("socket closed during handshake");
            self.buf.extend_from_slice(&frame);
        }
    }

    async fn next_frame(&mut self) -> Option<Vec<u8>> {
        loop {
            match tokio::time::timeout(Duration::from_secs(10), self.ws.next())
                .await
                .expect("timed out waiting for a frame")
            {
                Some(Ok(Message::Text(t))) => return Some(t.as_bytes().to_vec()),
                Some(Ok(Message::Binary(b))) => {
                    if self.protocol == Protocol::Json {
                        // Handshake responses for MessagePack arrive in binary frames only.
                        assert!(b.contains(&0x1e));
                    }
                    return Some(b.to_vec());
                }
                Some(Ok(Message::Close(_))) | None | Some(Err(_)) => return None,
                Some(Ok(_)) => {}
            }
        }
    }

    /// The next hub message; `None` once the socket is closed.
    pub async fn recv(&mut self) -> Option<HubMessage> {
        loop {
            if let Some(message) = self.protocol.decode(&mut self.buf, None).unwrap() {
                return Some(message);
            }
            let frame = self.next_frame().await?;
            self.buf.extend_from_slice(&frame);
        }
    }

    /// The next message other than a Ping.
    pub async fn recv_non_ping(&mut self) -> Option<HubMessage> {
        loop {
            match self.recv().await? {
                HubMessage::Ping => continue,
                other => return Some(other),
            }
        }
    }

    pub async fn send(&mut self, message: &HubMessage) {
        let bytes = self.protocol.encode_to_bytes(message).unwrap();
        self.send_raw(bytes.to_vec()).await;
    }

    pub async fn send_raw(&mut self, bytes: Vec<u8>) {
        let message = match self.protocol {
            Protocol::Json => match String::from_utf8(bytes) {
                Ok(s) => Message::Text(s.into()),
                Err(e) => Message::Binary(e.into_bytes().into()),
            },
            Protocol::MessagePack => Message::Binary(bytes.into()),
        };
        self.ws.send(message).await.unwrap();
    }

    /// Invokes `target` and waits for its completion, skipping other messages.
    pub async fn invoke(
        &mut self,
        target: &str,
        args: Vec<signalbox::protocol::Payload>,
    ) -> signalbox::protocol::CompletionOutcome {
        let id = self.next_id.to_string();
        self.next_id += 1;
        let invocation = signalbox::protocol::Invocation {
            invocation_id: Some(id.clone()),
            ..signalbox::protocol::Invocation::new(target, args)
        };
        self.send(&HubMessage::Invocation(invocation)).await;
        loop {
            match self.recv().await.expect("closed before completion") {
                HubMessage::Completion(c) if c.invocation_id == id => return c.outcome,
                _ => {}
            }
        }
    }
}

/// How long [`eventually`] waits before failing.
pub const EVENTUALLY: Duration = Duration::from_secs(10);

/// Polls `check` every few milliseconds until it holds; panics with `what` after [`EVENTUALLY`].
pub async fn eventually<F, Fut>(what: &str, check: F)
where
    F: FnMut() -> Fut,
    Fut: std::future::Future<Output = bool>,
{
    eventually_within(EVENTUALLY, what, check).await;
}

/// [`eventually`] with another deadline, for conditions that take long by design.
pub async fn eventually_within<F, Fut>(deadline: Duration, what: &str, mut check: F)
where
    F: FnMut() -> Fut,
    Fut: std::future::Future<Output = bool>,
{
    eventually_some_within(deadline, what, || {
        let attempt = check();
        async move { attempt.await.then_some(()) }
    })
    .await;
}

/// Polls `probe` until it returns `Some`; panics with `what` after [`EVENTUALLY`].
pub async fn eventually_some<T, F, Fut>(what: &str, probe: F) -> T
where
    F: FnMut() -> Fut,
    Fut: std::future::Future<Output = Option<T>>,
{
    eventually_some_within(EVENTUALLY, what, probe).await
}

/// [`eventually_some`] with another deadline.
pub async fn eventually_some_within<T, F, Fut>(deadline: Duration, what: &str, mut probe: F) -> T
where
    F: FnMut() -> Fut,
    Fut: std::future::Future<Output = Option<T>>,
{
    let until = tokio::time::Instant::now() + deadline;
    loop {
        if let Some(found) = probe().await {
            return found;
        }
        assert!(
            tokio::time::Instant::now() < until,
            "timed out after {deadline:?} waiting for {what}"
        );
        // The poll interval: the one place these tests wait on the clock.
        tokio::time::sleep(Duration::from_millis(5)).await;
    }
}
