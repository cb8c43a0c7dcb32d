//! Fixtures of the Azure SignalR Service compatibility tests: the access keys, a service with
//! them configured, and a raw JSON-protocol client connected at `/client/?hub=NAME`.

use std::time::{Duration, SystemTime, UNIX_EPOCH};

use futures_util::{SinkExt, StreamExt};
use serde_json::{Value, json};
use tokio::net::TcpStream;
use tokio_tungstenite::tungstenite::Message;
use tokio_tungstenite::tungstenite::client::IntoClientRequest;

use super::{Backend, TestApp};

/// The emulator's key (44 characters, like Azure's).
pub const PRIMARY: &str = "ABCDEFGHIJKLMNOPQRSTUVWXYZ0123456789ABCDEFGH";
/// The second configured key.
pub const SECONDARY: &str = "secondary-key-0123456789abcdefghijklmnopqr";
/// A key the service does not know.
pub const OTHER: &str = "not-a-configured-key-0123456789abcdefghijk";

/// Ends every JSON-protocol record.
pub const RECORD_SEPARATOR: char = '\u{1e}';

/// The service on `backend` with [`PRIMARY`] and [`SECONDARY`] as its access keys.
pub async fn start(backend: Backend) -> TestApp {
    TestApp::start_with(backend, |config| {
        config.azure.access_keys = vec![PRIMARY.to_owned(), SECONDARY.to_owned()];
    })
    .await
}

/// Unix seconds.
pub fn now() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .unwrap()
        .as_secs()
}

/// `POST /client/negotiate?{query}&negotiateVersion=1` with `Authorization: Bearer token`.
pub async fn negotiate(app: &TestApp, query: &str, token: Option<&str>) -> (u16, Value) {
    let mut request = app.http.post(format!(
        "{}/client/negotiate?{query}&negotiateVersion=1",
        app.url
    ));
    if let Some(token) = token {
        request = request.bearer_auth(token);
    }
    let response = request.send().await.unwrap();
    let status = response.status().as_u16();
    let text = response.text().await.unwrap();
    (
        status,
        serde_json::from_str(&text).unwrap_or(Value::String(text)),
    )
}

/// The client's WebSocket.
pub type Ws = tokio_tungstenite::WebSocketStream<tokio_tungstenite::MaybeTlsStream<TcpStream>>;

/// How the token travels on the WebSocket request.
#[derive(Clone, Copy)]
pub enum TokenIn {
    /// `Authorization: Bearer …`.
    Header,
    /// `access_token=…` in the query string, as browsers send it.
    Query,
}

/// A raw JSON-protocol client on a WebSocket at `/client/`.
pub struct AzureClient {
    /// The socket.
    pub ws: Ws,
    buf: String,
    /// The connection id negotiate gave.
    pub connection_id: String,
}

impl AzureClient {
    /// Negotiates at `/client/negotiate?{query}` and connects at `/client/?{query}&id=…`, as the
    /// JavaScript client does after a back end's redirect to `/client/?{query}`.
    pub async fn connect(app: &TestApp, query: &str, token: &str, token_in: TokenIn) -> Self {
        let (status, body) = negotiate(app, query, Some(token)).await;
        assert_eq!(status, 200, "{body}");
        let connection_token = body["connectionToken"].as_str().unwrap().to_owned();
        let connection_id = body["connectionId"].as_str().unwrap().to_owned();
        let mut url = format!("ws://{}/client/?{query}&id={connection_token}", app.addr);
        if let TokenIn::Query = token_in {
            url.push_str(&format!("&access_token={token}"));
        }
        let mut request = url.into_client_request().unwrap();
        if let TokenIn::Header = token_in {
            request
                .headers_mut()
                .insert("authorization", format!("Bearer {token}").parse().unwrap());
        }
        let (ws, _) = tokio_tungstenite::connect_async(request).await.unwrap();
        Self::handshake(ws, connection_id).await
    }

    /// Does the JSON-protocol handshake on an open socket of connection `connection_id`.
    pub async fn handshake(ws: Ws, connection_id: String) -> Self {
        let mut client = Self {
            ws,
            buf: String::new(),
            connection_id,
        };
        client.send(json!({"protocol": "json", "version": 1})).await;
        let handshake = client.next_record().await.expect("handshake response");
        assert_eq!(handshake, json!({}), "the handshake succeeds");
        client
    }

    /// Sends one JSON record.
    pub async fn send(&mut self, message: Value) {
        self.ws
            .send(Message::Text(format!("{message}{RECORD_SEPARATOR}").into()))
            .await
            .unwrap();
    }

    /// The next record within 10 seconds; `None` when the socket ends or nothing comes.
    pub async fn next_record(&mut self) -> Option<Value> {
        let deadline = tokio::time::Instant::now() + Duration::from_secs(10);
        loop {
            if let Some(i) = self.buf.find(RECORD_SEPARATOR) {
                let record: String = self.buf.drain(..=i).collect();
                return Some(
                    serde_json::from_str(record.trim_end_matches(RECORD_SEPARATOR)).unwrap(),
                );
            }
            match tokio::time::timeout_at(deadline, self.ws.next())
                .await
                .ok()??
            {
                Ok(Message::Text(text)) => self.buf.push_str(text.as_str()),
                Ok(Message::Close(_)) | Err(_) => return None,
                Ok(_) => {}
            }
        }
    }

    /// The next message that is not a ping.
    pub async fn next_message(&mut self) -> Option<Value> {
        loop {
            let record = self.next_record().await?;
            if record["type"] != 6 {
                return Some(record);
            }
        }
    }

    /// Returns once the hub's `on_connected` has finished (stored groups applied): the hub
    /// answers invocations only after it.
    pub async fn settled(&mut self) {
        self.send(
            json!({"type": 1, "invocationId": "settled", "target": "settled", "arguments": []}),
        )
        .await;
        let completion = self.next_message().await.expect("a completion");
        assert_eq!(completion["invocationId"], "settled", "{completion}");
    }

    /// The next message must be an invocation of `target` with `arguments`.
    pub async fn expect(&mut self, target: &str, arguments: Value) {
        let message = self.next_message().await.expect("a message");
        assert_eq!(
            message,
            json!({"type": 1, "target": target, "arguments": arguments}),
        );
    }

    /// The next message must be a Close; then the socket ends.
    pub async fn expect_close(&mut self) -> Value {
        let message = self.next_message().await.expect("a Close message");
        assert_eq!(message["type"], 7, "{message}");
        message
    }
}
