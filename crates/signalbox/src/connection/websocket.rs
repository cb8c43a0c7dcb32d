//! The WebSockets transport (TransportProtocols.md, "WebSockets").
//!
//! Incoming text and binary frames are passed up as a byte stream; every outgoing frame carries the
//! whole messages queued by the hub, as text frames for JSON and binary frames for MessagePack.

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};

use axum::extract::ws::{CloseFrame, Message, Utf8Bytes, WebSocket, close_code};
use bytes::Bytes;
use futures_util::stream::SplitSink;
use futures_util::{SinkExt, StreamExt, future};
use signalbox_protocol::TransportType;
use tokio::sync::mpsc;

use super::{Connection, HttpRequestInfo};
use crate::auth::Principal;

/// Everything the transport needs besides the socket.
pub(crate) struct WebSocketSession {
    pub(crate) id: Arc<str>,
    pub(crate) principal: Option<Principal>,
    pub(crate) request: Arc<HttpRequestInfo>,
    pub(crate) queue_capacity: usize,
}

enum Inbound {
    Data(Bytes),
    Skip,
    End,
}

/// Splits the socket into a [`Connection`] for the hub layer and a writer task. Returns the
/// connection and the writer's handle.
pub(crate) fn connect(
    socket: WebSocket,
    session: WebSocketSession,
) -> (Connection, tokio::task::JoinHandle<()>) {
    let (sink, stream) = socket.split();
    let (tx, rx) = mpsc::channel(session.queue_capacity.max(1));
    let binary = Arc::new(AtomicBool::new(false));
    let writer = tokio::spawn(write_loop(sink, rx, binary.clone()));
    let inbound = stream
        .map(|message| match message {
            Ok(Message::Text(text)) => Inbound::Data(Bytes::from(text)),
            Ok(Message::Binary(data)) => Inbound::Data(data),
            Ok(Message::Ping(_) | Message::Pong(_)) => Inbound::Skip,
            Ok(Message::Close(_)) => Inbound::End,
            Err(error) => {
                tracing::debug!(target: "signalbox::transport", %error, "websocket read failed");
                Inbound::End
            }
        })
        .take_while(|item| future::ready(!matches!(item, Inbound::End)))
        .filter_map(|item| {
            future::ready(match item {
                Inbound::Data(data) => Some(data),
                Inbound::Skip | Inbound::End => None,
            })
        })
        .boxed();
    let connection = Connection {
        id: session.id,
        transport: TransportType::WebSockets,
        principal: session.principal,
        request: session.request,
        inbound,
        outbound: tx,
        binary,
        supports_binary: true,
        keep_alive: true,
    };
    (connection, writer)
}

async fn write_loop(
    mut sink: SplitSink<WebSocket, Message>,
    mut rx: mpsc::Receiver<Bytes>,
    binary: Arc<AtomicBool>,
) {
    let frame = |data: Bytes| -> Option<Message> {
        if binary.load(Ordering::Acquire) {
            Some(Message::Binary(data))
        } else {
            match Utf8Bytes::try_from(data) {
                Ok(text) => Some(Message::Text(text)),
                Err(_) => {
                    tracing::error!(target: "signalbox::transport", "dropping a text frame that is not UTF-8");
                    None
                }
            }
        }
    };
    while let Some(data) = rx.recv().await {
        let mut ok = match frame(data) {
            Some(message) => sink.feed(message).await.is_ok(),
            None => true,
        };
        // Batch whatever else is queued into the same flush.
        while ok {
            match rx.try_recv() {
                Ok(data) => {
                    if let Some(message) = frame(data) {
                        ok = sink.feed(message).await.is_ok();
                    }
                }
                Err(_) => break,
            }
        }
        if !ok || sink.flush().await.is_err() {
            tracing::debug!(target: "signalbox::transport", "websocket write failed");
            return;
        }
    }
    // The hub is done with this connection: close normally. The peer may already be gone.
    let _ = sink
        .send(Message::Close(Some(CloseFrame {
            code: close_code::NORMAL,
            reason: Utf8Bytes::from_static(""),
        })))
        .await;
    let _ = sink.close().await;
}
