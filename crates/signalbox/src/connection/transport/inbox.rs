//! The bytes a WebSocket driver has received and the hub has not taken yet: a hand-over point
//! between two futures of the same connection task, holding no buffer while empty.

use std::pin::Pin;
use std::sync::{Arc, Mutex, MutexGuard};
use std::task::{Context, Poll, Waker};

use bytes::{Bytes, BytesMut};
use futures_util::Stream;

/// Received bytes waiting beyond this stop the driver from reading until the hub takes them.
const LIMIT: usize = 64 * 1024;

/// See the module docs.
#[derive(Debug, Default)]
pub(crate) struct Inbox {
    state: Mutex<State>,
}

#[derive(Debug, Default)]
struct State {
    /// Whole messages' payloads, in order.
    data: BytesMut,
    /// No more data will come.
    ended: bool,
    /// The hub's side, waiting for data.
    reader: Option<Waker>,
    /// The driver, waiting for room.
    driver: Option<Waker>,
}

impl Inbox {
    fn lock(&self) -> MutexGuard<'_, State> {
        self.state
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
    }

    /// Adds a message's payload.
    pub(crate) fn push(&self, payload: BytesMut) {
        let mut state = self.lock();
        if state.ended {
            return;
        }
        // Takes `payload` as is when nothing is waiting.
        state.data.unsplit(payload);
        if let Some(reader) = state.reader.take() {
            reader.wake();
        }
    }

    /// No more data will come.
    pub(crate) fn end(&self) {
        let mut state = self.lock();
        state.ended = true;
        if let Some(reader) = state.reader.take() {
            reader.wake();
        }
    }

    /// Whether the driver may read more; if not, it is woken once the hub took the data.
    pub(crate) fn has_room(&self, cx: &mut Context<'_>) -> bool {
        let mut state = self.lock();
        if state.data.len() < LIMIT {
            return true;
        }
        state.driver = Some(cx.waker().clone());
        false
    }

    fn poll_take(&self, cx: &mut Context<'_>) -> Poll<Option<Bytes>> {
        let mut state = self.lock();
        if !state.data.is_empty() {
            let data = std::mem::take(&mut state.data).freeze();
            if let Some(driver) = state.driver.take() {
                driver.wake();
            }
            return Poll::Ready(Some(data));
        }
        if state.ended {
            return Poll::Ready(None);
        }
        state.reader = Some(cx.waker().clone());
        Poll::Pending
    }
}

/// The hub's side of an [`Inbox`]: the received bytes, in chunks not aligned with messages.
#[derive(Debug)]
pub(crate) struct InboxStream(pub(crate) Arc<Inbox>);

impl Stream for InboxStream {
    type Item = Bytes;

    fn poll_next(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Option<Bytes>> {
        self.0.poll_take(cx)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use futures_util::StreamExt;

    #[tokio::test]
    async fn hands_over_data_then_ends() {
        let inbox = Arc::new(Inbox::default());
        let mut stream = InboxStream(inbox.clone());
        inbox.push(BytesMut::from(&b"ab"[..]));
        inbox.push(BytesMut::from(&b"c"[..]));
        assert_eq!(stream.next().await.as_deref(), Some(&b"abc"[..]));
        inbox.end();
        inbox.push(BytesMut::from(&b"late"[..]));
        assert_eq!(stream.next().await, None);
    }

    #[test]
    fn a_full_inbox_stops_the_driver_until_taken() {
        let inbox = Inbox::default();
        let waker = futures_util::task::noop_waker();
        let mut cx = Context::from_waker(&waker);
        assert!(inbox.has_room(&mut cx));
        inbox.push(BytesMut::from(&vec![0u8; LIMIT][..]));
        assert!(!inbox.has_room(&mut cx));
        assert!(matches!(inbox.poll_take(&mut cx), Poll::Ready(Some(data)) if data.len() == LIMIT));
        assert!(inbox.has_room(&mut cx));
    }
}
