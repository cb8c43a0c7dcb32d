//! Client-to-server (upload) streams: a hub method parameter fed by StreamItem messages
//! (HubProtocol.md, "Streaming", client-to-server).

use std::marker::PhantomData;
use std::pin::Pin;
use std::task::{Context, Poll};

use futures_util::Stream;
use serde::de::DeserializeOwned;
use signalbox_protocol::Payload;
use tokio::sync::mpsc;

use super::error::HubError;

/// One event of an upload stream, as the connection loop receives it.
#[derive(Debug)]
pub(crate) enum UploadEvent {
    Item(Payload),
    Error(String),
}

/// A stream the client uploads while the method runs. Items that do not match `T` and a client
/// error end the stream with an `Err` (a public [`HubError`]); the client completing it ends it.
/// Backpressure: the connection buffers a few items (`HubOptions::stream_buffer_capacity`) and then
/// waits for the method to read.
pub struct UploadStream<T> {
    rx: mpsc::Receiver<UploadEvent>,
    done: bool,
    _item: PhantomData<fn() -> T>,
}

impl<T> std::fmt::Debug for UploadStream<T> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("UploadStream")
            .field("done", &self.done)
            .finish()
    }
}

impl<T> UploadStream<T> {
    pub(crate) fn new(rx: mpsc::Receiver<UploadEvent>) -> Self {
        Self {
            rx,
            done: false,
            _item: PhantomData,
        }
    }
}

impl<T: DeserializeOwned> Stream for UploadStream<T> {
    type Item = Result<T, HubError>;

    fn poll_next(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Option<Self::Item>> {
        if self.done {
            return Poll::Ready(None);
        }
        match self.rx.poll_recv(cx) {
            Poll::Ready(Some(UploadEvent::Item(payload))) => match payload.deserialize::<T>() {
                Ok(item) => Poll::Ready(Some(Ok(item))),
                Err(error) => {
                    self.done = true;
                    Poll::Ready(Some(Err(HubError::exception(
                        "InvalidDataException",
                        format!("Error binding a stream item: {error}"),
                    ))))
                }
            },
            Poll::Ready(Some(UploadEvent::Error(message))) => {
                self.done = true;
                Poll::Ready(Some(Err(HubError::new(message))))
            }
            Poll::Ready(None) => {
                self.done = true;
                Poll::Ready(None)
            }
            Poll::Pending => Poll::Pending,
        }
    }
}
