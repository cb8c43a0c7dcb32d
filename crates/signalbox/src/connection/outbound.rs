//! The outbound queue of a connection: whole frames from the hub layer to the transport,
//! bounded. Every connection has one for its whole life, mostly idle, so what an idle queue holds
//! matters: over `flume`, whose bounded channel keeps its frames in a `VecDeque` allocated while
//! frames wait, an idle queue holds about 0.2 KB; a bounded `tokio::sync::mpsc` channel of
//! `Bytes` allocates its first 32-slot block and cache-padded state up front, about 1.6 KB.

use std::future::Future as _;
use std::pin::Pin;
use std::task::{Context, Poll};

use bytes::Bytes;

/// A queue of at most `capacity` frames (at least one).
pub(crate) fn channel(capacity: usize) -> (OutboundSender, OutboundReceiver) {
    let (tx, rx) = flume::bounded(capacity.max(1));
    (OutboundSender(tx), OutboundReceiver { rx, waiting: None })
}

/// Why a frame was not queued.
#[derive(Debug)]
pub(crate) enum TrySendError {
    /// The queue is full (a slow consumer).
    Full,
    /// The transport is gone.
    Closed,
}

/// The transport is gone.
#[derive(Debug)]
pub(crate) struct Closed;

/// The hub layer's end; cheap to clone.
#[derive(Debug, Clone)]
pub(crate) struct OutboundSender(flume::Sender<Bytes>);

impl OutboundSender {
    /// Queues a frame without waiting.
    pub(crate) fn try_send(&self, frame: Bytes) -> Result<(), TrySendError> {
        self.0.try_send(frame).map_err(|error| match error {
            flume::TrySendError::Full(_) => TrySendError::Full,
            flume::TrySendError::Disconnected(_) => TrySendError::Closed,
        })
    }

    /// Queues a frame, waiting for room.
    pub(crate) async fn send(&self, frame: Bytes) -> Result<(), Closed> {
        self.0.send_async(frame).await.map_err(|_| Closed)
    }

    /// The most frames the queue holds.
    pub(crate) fn max_capacity(&self) -> usize {
        self.0.capacity().unwrap_or(usize::MAX)
    }
}

/// The transport's end.
pub(crate) struct OutboundReceiver {
    rx: flume::Receiver<Bytes>,
    /// The pending wait for the next frame, kept between polls.
    waiting: Option<flume::r#async::RecvFut<'static, Bytes>>,
}

impl std::fmt::Debug for OutboundReceiver {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("OutboundReceiver")
            .field("queued", &self.rx.len())
            .finish_non_exhaustive()
    }
}

impl OutboundReceiver {
    /// The next frame if one is queued now.
    pub(crate) fn try_recv(&mut self) -> Option<Bytes> {
        self.rx.try_recv().ok()
    }

    /// The next frame; `None` once every sender is gone and the queue is empty.
    pub(crate) fn poll_recv(&mut self, cx: &mut Context<'_>) -> Poll<Option<Bytes>> {
        if self.waiting.is_none() {
            match self.rx.try_recv() {
                Ok(frame) => return Poll::Ready(Some(frame)),
                Err(flume::TryRecvError::Disconnected) => return Poll::Ready(None),
                Err(flume::TryRecvError::Empty) => {}
            }
        }
        let rx = &self.rx;
        let waiting = self
            .waiting
            .get_or_insert_with(|| rx.clone().into_recv_async());
        match Pin::new(waiting).poll(cx) {
            Poll::Ready(frame) => {
                self.waiting = None;
                Poll::Ready(frame.ok())
            }
            Poll::Pending => Poll::Pending,
        }
    }

    /// The next frame, waiting for one; `None` once every sender is gone and the queue is empty.
    pub(crate) async fn recv(&mut self) -> Option<Bytes> {
        std::future::poll_fn(|cx| self.poll_recv(cx)).await
    }

    /// The frames as a stream.
    pub(crate) fn into_stream(self) -> impl futures_util::Stream<Item = Bytes> + Send + 'static {
        futures_util::stream::unfold(self, |mut rx| async move {
            rx.recv().await.map(|frame| (frame, rx))
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn frames_arrive_in_order_and_the_end_is_seen() {
        let (tx, mut rx) = channel(2);
        assert_eq!(tx.max_capacity(), 2);
        tx.try_send(Bytes::from_static(b"a")).unwrap();
        tx.try_send(Bytes::from_static(b"b")).unwrap();
        assert!(matches!(
            tx.try_send(Bytes::from_static(b"c")),
            Err(TrySendError::Full)
        ));
        assert_eq!(rx.recv().await.as_deref(), Some(&b"a"[..]));
        assert_eq!(rx.try_recv().as_deref(), Some(&b"b"[..]));
        assert_eq!(rx.try_recv(), None);

        // A waiting receiver is woken by the next frame, then by the last sender leaving.
        let waiter = tokio::spawn(async move {
            let first = rx.recv().await;
            let end = rx.recv().await;
            (first, end)
        });
        tokio::task::yield_now().await;
        tx.send(Bytes::from_static(b"d")).await.unwrap();
        drop(tx);
        let (first, end) = waiter.await.unwrap();
        assert_eq!(first.as_deref(), Some(&b"d"[..]));
        assert_eq!(end, None);
    }

    #[tokio::test]
    async fn senders_see_the_transport_go() {
        let (tx, rx) = channel(1);
        drop(rx);
        assert!(matches!(
            tx.try_send(Bytes::from_static(b"a")),
            Err(TrySendError::Closed)
        ));
        assert!(tx.send(Bytes::from_static(b"a")).await.is_err());
    }
}
