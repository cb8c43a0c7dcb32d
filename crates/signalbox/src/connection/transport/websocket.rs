//! The WebSockets transport (TransportProtocols.md, "WebSockets").
//!
//! Incoming text and binary frames are passed up as a byte stream; every outgoing frame carries the
//! whole messages queued by the hub, as text frames for JSON and binary frames for MessagePack.
//! With stateful reconnect the connection outlives its socket (see `resume`); such sockets are
//! axum's (tungstenite). Every other socket is driven by [`Driver`], which holds no buffers while
//! the connection is idle.

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::task::Poll;
use std::time::Duration;

use axum::extract::ws::{CloseFrame, Message, Utf8Bytes, WebSocket, close_code};
use bytes::Bytes;
use futures_util::stream::{SplitSink, SplitStream};
use futures_util::{SinkExt, StreamExt};
use hyper::upgrade::Upgraded;
use signalbox_protocol::TransportType;
use tokio::sync::mpsc;
use tokio_util::sync::CancellationToken;

use super::inbox::{Inbox, InboxStream};
use super::receiver_stream;
use super::websocket_driver::{Driver, DriverLimits};
use crate::auth::Principal;
use crate::connection::manager::ConnectionEntry;
use crate::connection::resume::{self, Resumable};
use crate::connection::{Connection, HttpRequestInfo};

/// Everything the transport needs besides the socket.
pub(crate) struct WebSocketSession {
    pub(crate) id: Arc<str>,
    pub(crate) principal: Option<Principal>,
    pub(crate) request: Arc<HttpRequestInfo>,
    pub(crate) queue_capacity: usize,
    pub(crate) send_timeout: Duration,
    /// The connection entry's token: cancelled when the connection is disposed, and by the
    /// writer when the socket fails.
    pub(crate) closed: CancellationToken,
}

enum Inbound {
    Data(Bytes),
    Skip,
    /// A close frame: the client ended the connection.
    Closed,
    /// The socket failed or ended without a close frame.
    Dropped,
}

fn classify(message: Result<Message, axum::Error>) -> Inbound {
    match message {
        Ok(Message::Text(text)) => Inbound::Data(Bytes::from(text)),
        Ok(Message::Binary(data)) => Inbound::Data(data),
        Ok(Message::Ping(_) | Message::Pong(_)) => Inbound::Skip,
        Ok(Message::Close(_)) => Inbound::Closed,
        Err(error) => {
            tracing::debug!(target: "signalbox::transport", %error, "websocket read failed");
            Inbound::Dropped
        }
    }
}

/// A connection over a raw upgraded socket: the [`Connection`] for the hub layer and the
/// [`Driver`] that moves its bytes. Both run in one task (see `endpoint`); the driver ends once
/// it has sent what the hub queued and closed the socket.
pub(crate) fn connect(
    io: Upgraded,
    session: WebSocketSession,
    limits: Arc<DriverLimits>,
) -> (Connection, Driver) {
    let (tx, rx) = crate::connection::outbound::channel(session.queue_capacity);
    let binary = Arc::new(AtomicBool::new(false));
    let inbox = Arc::new(Inbox::default());
    let driver = Driver::new(
        io,
        rx,
        inbox.clone(),
        binary.clone(),
        limits,
        session.closed.clone(),
    );
    let connection = Connection {
        id: session.id,
        transport: TransportType::WebSockets,
        principal: session.principal,
        auth: None,
        request: session.request,
        inbound: InboxStream(inbox).boxed(),
        outbound: tx,
        binary,
        supports_binary: true,
        keep_alive: true,
        resumable: None,
        transport_closed: session.closed,
    };
    (connection, driver)
}

/// The first socket of a connection that negotiated stateful reconnect: the hub gets a connection
/// that survives socket drops; `sockets` takes later sockets' writer queues.
pub(crate) fn connect_resumable(
    socket: WebSocket,
    session: WebSocketSession,
    entry: &Arc<ConnectionEntry>,
    buffer_size: usize,
) -> Connection {
    let resumable = Arc::new(Resumable::new(buffer_size));
    // Set once: this is the first socket of the connection.
    let _ = entry.resumable.set(resumable.clone());
    let (inbound_tx, inbound_rx) = entry.take_inbound();
    let (outbound_tx, outbound_rx) = crate::connection::outbound::channel(session.queue_capacity);
    let (sockets_tx, sockets_rx) = mpsc::channel(1);
    let binary = Arc::new(AtomicBool::new(false));
    let _ = resumable.handoff.set((sockets_tx.clone(), binary.clone()));
    tokio::spawn(resume::pump(
        resumable.clone(),
        outbound_rx,
        sockets_rx,
        binary.clone(),
    ));
    attach_socket(
        socket,
        entry,
        &resumable,
        inbound_tx.clone(),
        &sockets_tx,
        binary.clone(),
        SocketLimits {
            queue_capacity: session.queue_capacity,
            send_timeout: session.send_timeout,
        },
    );
    Connection {
        id: session.id,
        transport: TransportType::WebSockets,
        principal: session.principal,
        auth: None,
        request: session.request,
        inbound: receiver_stream(inbound_rx)
            .take_until(entry.closed.clone().cancelled_owned())
            .boxed(),
        outbound: outbound_tx,
        binary,
        supports_binary: true,
        keep_alive: true,
        resumable: Some(resumable),
        transport_closed: entry.closed.clone(),
    }
}

/// Hands a new socket to a stateful connection; it replaces the previous socket.
pub(crate) fn reattach(
    socket: WebSocket,
    entry: &Arc<ConnectionEntry>,
    queue_capacity: usize,
    send_timeout: Duration,
) {
    let (Some(resumable), Some(inbound)) = (entry.resumable.get(), entry.inbound_sender()) else {
        return;
    };
    let Some((sockets, binary)) = resumable.handoff.get() else {
        return;
    };
    attach_socket(
        socket,
        entry,
        resumable,
        inbound.clone(),
        sockets,
        binary.clone(),
        SocketLimits {
            queue_capacity,
            send_timeout,
        },
    );
}

/// Per-socket limits.
#[derive(Clone, Copy)]
struct SocketLimits {
    queue_capacity: usize,
    send_timeout: Duration,
}

fn attach_socket(
    socket: WebSocket,
    entry: &Arc<ConnectionEntry>,
    resumable: &Arc<Resumable>,
    inbound: mpsc::Sender<Bytes>,
    sockets: &mpsc::Sender<mpsc::Sender<Bytes>>,
    binary: Arc<AtomicBool>,
    limits: SocketLimits,
) {
    let token = resumable.replace_socket();
    let (sink, stream) = socket.split();
    let (writer_tx, writer_rx) = mpsc::channel(limits.queue_capacity.max(1));
    let send_timeout = limits.send_timeout;
    if sockets.try_send(writer_tx).is_err() {
        tracing::debug!(target: "signalbox::transport", "connection ended before the socket attached");
        return;
    }
    let writer_token = token.clone();
    let peer_closed = CancellationToken::new();
    let writer_peer_closed = peer_closed.clone();
    tokio::spawn(async move {
        tokio::select! {
            () = write_loop(sink, writer_rx, binary, send_timeout, CancellationToken::new(), writer_peer_closed) => {}
            () = writer_token.cancelled() => {}
        }
    });
    tokio::spawn(read_loop(
        stream,
        inbound,
        entry.clone(),
        resumable.clone(),
        token,
        peer_closed,
    ));
}

async fn read_loop(
    mut stream: SplitStream<WebSocket>,
    inbound: mpsc::Sender<Bytes>,
    entry: Arc<ConnectionEntry>,
    resumable: Arc<Resumable>,
    token: CancellationToken,
    peer_closed: CancellationToken,
) {
    loop {
        let message = tokio::select! {
            () = token.cancelled() => return,
            () = entry.closed.cancelled() => return,
            message = stream.next() => message,
        };
        match message.map(classify) {
            Some(Inbound::Data(data)) => {
                if inbound.send(data).await.is_err() {
                    return;
                }
            }
            Some(Inbound::Skip) => {}
            Some(Inbound::Closed) => {
                peer_closed.cancel();
                resumable.disable();
                entry.dispose();
                return;
            }
            Some(Inbound::Dropped) | None => {
                if resumable.is_enabled() {
                    tracing::debug!(target: "signalbox::transport", "socket dropped; waiting for the client to reconnect");
                    resumable.park(&token);
                } else {
                    entry.dispose();
                }
                return;
            }
        }
    }
}

/// Writes queued frames, batching what is ready into one flush. A batch that cannot be written
/// within `send_timeout` (a client that stopped reading) ends the socket and cancels `failed`.
///
/// Once the queue ends, or as soon as the reader saw the client's close frame (`peer_closed`),
/// the socket is closed: with 1000 when the server closes first, and with the client's own
/// status code and reason when answering its close (RFC 6455 §5.5.1; tungstenite queues that
/// echo when it reads the client's frame, and sends it in place of ours). Frames still queued
/// then are dropped: a closing peer takes no more data.
///
/// A function returning an `async move` block rather than an `async fn`, so that the arguments
/// are not kept twice in the (long-lived) state.
#[allow(clippy::manual_async_fn)]
fn write_loop(
    mut sink: SplitSink<WebSocket, Message>,
    mut rx: mpsc::Receiver<Bytes>,
    binary: Arc<AtomicBool>,
    send_timeout: Duration,
    failed: CancellationToken,
    peer_closed: CancellationToken,
) -> impl Future<Output = ()> + Send + 'static {
    async move {
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
        loop {
            let data = tokio::select! {
                biased;
                () = peer_closed.cancelled() => break,
                data = rx.recv() => match data {
                    Some(data) => data,
                    None => break,
                },
            };
            let batch = async {
                let mut bytes = data.len();
                let mut ok = match frame(data) {
                    Some(message) => sink.feed(message).await.is_ok(),
                    None => true,
                };
                // Batch whatever else is queued into the same flush.
                while ok {
                    match rx.try_recv() {
                        Ok(data) => {
                            bytes += data.len();
                            if let Some(message) = frame(data) {
                                ok = sink.feed(message).await.is_ok();
                            }
                        }
                        Err(_) => break,
                    }
                }
                (ok && sink.flush().await.is_ok(), bytes)
            };
            // Boxed: the batch future is only alive while writing, so an idle connection's
            // writer task stays small. Most batches complete on their first poll (the socket
            // had room); only one that has to wait is given a timer.
            let mut batch = Box::pin(batch);
            let first = std::future::poll_fn(|cx| Poll::Ready(batch.as_mut().poll(cx))).await;
            let outcome = match first {
                Poll::Ready(done) => Ok(done),
                Poll::Pending => tokio::time::timeout(send_timeout, batch).await,
            };
            match outcome {
                Ok((true, bytes)) => {
                    crate::metrics::bytes_sent(TransportType::WebSockets, bytes as u64);
                }
                Ok((false, _)) => {
                    tracing::debug!(target: "signalbox::transport", "websocket write failed");
                    failed.cancel();
                    return;
                }
                Err(_) => {
                    tracing::warn!(target: "signalbox::transport", "websocket send timed out; closing the connection");
                    failed.cancel();
                    return;
                }
            }
        }
        // The hub is done with this connection, or the client closed it: close normally, or echo
        // the client's close frame (see above). The peer may already be gone.
        let _ = sink
            .send(Message::Close(Some(CloseFrame {
                code: close_code::NORMAL,
                reason: Utf8Bytes::from_static(""),
            })))
            .await;
        let _ = sink.close().await;
    }
}
