//! The three transports (TransportProtocols.md): WebSockets, Server-Sent Events and long polling.

mod inbox;
pub(crate) mod long_polling;
pub(crate) mod sse;
pub(crate) mod websocket;
pub(crate) mod websocket_driver;
mod websocket_frame;
pub(crate) mod websocket_upgrade;

pub use websocket_frame::fuzz_frames;

use bytes::Bytes;
use futures_util::Stream;
use tokio::sync::mpsc;

/// A receiver as a stream.
pub(crate) fn receiver_stream(
    rx: mpsc::Receiver<Bytes>,
) -> impl Stream<Item = Bytes> + Send + 'static {
    futures_util::stream::unfold(rx, |mut rx| async move {
        rx.recv().await.map(|item| (item, rx))
    })
}
