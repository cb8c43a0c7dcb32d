//! The outbound queue of a connection: whole frames from the hub layer to the transport,
//! bounded. Every connection has one for its whole life, mostly idle, so what an idle queue holds
//! matters: here one allocation of about 100 bytes (the shared state behind a mutex), as the list
//! of frames is allocated while frames wait and released once the transport took them all. (A
//! bounded `tokio::sync::mpsc` channel of `Bytes` allocates its first 32-slot block and
//! cache-padded state up front, about 1.6 KB; `flume`'s keeps its last list of frames and a
//! waiter record, about 0.4 KB.)
//!
//! One receiver (the transport), any number of senders (the hub, the lifetime manager). Senders
//! that find the queue full either give up ([`OutboundSender::try_send`]) or wait for room
//! ([`OutboundSender::send`]); the receiver wakes them as it takes frames.

use std::collections::VecDeque;
use std::sync::{Arc, Mutex, MutexGuard};
use std::task::{Context, Poll, Waker};

use bytes::Bytes;

/// A queue of at most `capacity` frames (at least one).
pub(crate) fn channel(capacity: usize) -> (OutboundSender, OutboundReceiver) {
    let shared = Arc::new(Shared {
        capacity: capacity.max(1),
        state: Mutex::new(State {
            frames: VecDeque::new(),
            senders: 1,
            receiver_alive: true,
            receiver: None,
            waiting_senders: Vec::new(),
            holding: false,
            sealed: false,
        }),
    });
    (OutboundSender(shared.clone()), OutboundReceiver { shared })
}

struct Shared {
    capacity: usize,
    state: Mutex<State>,
}

struct State {
    /// Frames not taken yet; unallocated while empty.
    frames: VecDeque<Bytes>,
    /// Live senders: the queue ends once the last one is gone and the frames are taken.
    senders: usize,
    receiver_alive: bool,
    /// The receiver, waiting for a frame.
    receiver: Option<Waker>,
    /// Senders waiting for room.
    waiting_senders: Vec<Waker>,
    /// Frames are queued but not handed to the receiver yet (see [`OutboundSender::hold`]).
    holding: bool,
    /// The last frame was queued (see [`OutboundSender::try_send_last`]): senders find the
    /// queue closed.
    sealed: bool,
}

impl Shared {
    fn lock(&self) -> MutexGuard<'_, State> {
        // Nothing panics while holding the lock; a poisoned state is still consistent.
        self.state
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
    }
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
pub(crate) struct OutboundSender(Arc<Shared>);

impl std::fmt::Debug for OutboundSender {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("OutboundSender")
            .field("capacity", &self.0.capacity)
            .finish_non_exhaustive()
    }
}

impl Clone for OutboundSender {
    fn clone(&self) -> Self {
        self.0.lock().senders += 1;
        Self(self.0.clone())
    }
}

impl Drop for OutboundSender {
    fn drop(&mut self) {
        let receiver = {
            let mut state = self.0.lock();
            state.senders -= 1;
            if state.senders > 0 {
                return;
            }
            state.receiver.take()
        };
        // The last sender: the receiver sees the end once it took the frames.
        if let Some(receiver) = receiver {
            receiver.wake();
        }
    }
}

impl OutboundSender {
    /// Queues `frame` if there is room; hands it back when the queue is full.
    fn push(
        &self,
        frame: Bytes,
        cx: Option<&mut Context<'_>>,
    ) -> Result<(), (Bytes, TrySendError)> {
        let receiver = {
            let mut state = self.0.lock();
            if !state.receiver_alive || state.sealed {
                return Err((frame, TrySendError::Closed));
            }
            if state.frames.len() >= self.0.capacity {
                if let Some(cx) = cx
                    && !state
                        .waiting_senders
                        .iter()
                        .any(|w| w.will_wake(cx.waker()))
                {
                    state.waiting_senders.push(cx.waker().clone());
                }
                return Err((frame, TrySendError::Full));
            }
            state.frames.push_back(frame);
            state.receiver.take()
        };
        if let Some(receiver) = receiver {
            receiver.wake();
        }
        Ok(())
    }

    /// Queues `frame` as the last one: nothing is queued after it (senders find the queue
    /// closed), so that a Close message is the last thing the client receives. A full queue
    /// drops it, as [`OutboundSender::try_send`] would.
    pub(crate) fn try_send_last(&self, frame: Bytes) -> Result<(), TrySendError> {
        let receiver = {
            let mut state = self.0.lock();
            if !state.receiver_alive || state.sealed {
                return Err(TrySendError::Closed);
            }
            state.sealed = true;
            if state.frames.len() >= self.0.capacity {
                return Err(TrySendError::Full);
            }
            state.frames.push_back(frame);
            state.receiver.take()
        };
        if let Some(receiver) = receiver {
            receiver.wake();
        }
        Ok(())
    }

    /// Holds what is queued from now on back from the receiver until
    /// [`OutboundSender::release_after`]: a hub connection is registered (and may be sent to)
    /// before its handshake response is queued, and what is sent to it meanwhile must follow the
    /// response. Held frames count against the capacity like any other.
    pub(crate) fn hold(&self) {
        self.0.lock().holding = true;
    }

    /// Queues `first` ahead of everything held (whatever the capacity), then hands the frames to
    /// the receiver again.
    pub(crate) fn release_after(&self, first: Bytes) -> Result<(), Closed> {
        let receiver = {
            let mut state = self.0.lock();
            state.holding = false;
            if !state.receiver_alive {
                return Err(Closed);
            }
            state.frames.push_front(first);
            state.receiver.take()
        };
        if let Some(receiver) = receiver {
            receiver.wake();
        }
        Ok(())
    }

    /// Queues a frame without waiting.
    pub(crate) fn try_send(&self, frame: Bytes) -> Result<(), TrySendError> {
        self.push(frame, None).map_err(|(_, error)| error)
    }

    /// Queues a frame, waiting for room.
    pub(crate) async fn send(&self, frame: Bytes) -> Result<(), Closed> {
        let mut frame = Some(frame);
        std::future::poll_fn(|cx| {
            let Some(next) = frame.take() else {
                return Poll::Ready(Err(Closed));
            };
            match self.push(next, Some(cx)) {
                Ok(()) => Poll::Ready(Ok(())),
                Err((_, TrySendError::Closed)) => Poll::Ready(Err(Closed)),
                Err((next, TrySendError::Full)) => {
                    frame = Some(next);
                    Poll::Pending
                }
            }
        })
        .await
    }

    /// The most frames the queue holds.
    #[cfg(test)]
    pub(crate) fn max_capacity(&self) -> usize {
        self.0.capacity
    }
}

/// The transport's end.
pub(crate) struct OutboundReceiver {
    shared: Arc<Shared>,
}

impl std::fmt::Debug for OutboundReceiver {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("OutboundReceiver")
            .field("queued", &self.shared.lock().frames.len())
            .finish_non_exhaustive()
    }
}

impl Drop for OutboundReceiver {
    fn drop(&mut self) {
        let (frames, senders) = {
            let mut state = self.shared.lock();
            state.receiver_alive = false;
            (
                std::mem::take(&mut state.frames),
                std::mem::take(&mut state.waiting_senders),
            )
        };
        drop(frames);
        // Waiting senders see that the transport is gone.
        for sender in senders {
            sender.wake();
        }
    }
}

impl OutboundReceiver {
    /// Takes the next frame; with `cx`, registers to be woken when there is none yet.
    fn take(&mut self, cx: Option<&mut Context<'_>>) -> Poll<Option<Bytes>> {
        let (frame, senders) = {
            let mut state = self.shared.lock();
            let next = if state.holding {
                None
            } else {
                state.frames.pop_front()
            };
            match next {
                Some(frame) => {
                    if state.frames.is_empty() {
                        // Release the list: an idle queue holds none.
                        state.frames = VecDeque::new();
                    }
                    (frame, std::mem::take(&mut state.waiting_senders))
                }
                None if state.senders == 0 => return Poll::Ready(None),
                None => {
                    if let Some(cx) = cx {
                        match &mut state.receiver {
                            Some(waker) if waker.will_wake(cx.waker()) => {}
                            slot => *slot = Some(cx.waker().clone()),
                        }
                    }
                    return Poll::Pending;
                }
            }
        };
        // Room again: the waiting senders retry (those still without room wait again).
        for sender in senders {
            sender.wake();
        }
        Poll::Ready(Some(frame))
    }

    /// The next frame if one is queued now.
    pub(crate) fn try_recv(&mut self) -> Option<Bytes> {
        match self.take(None) {
            Poll::Ready(frame) => frame,
            Poll::Pending => None,
        }
    }

    /// The next frame; `None` once every sender is gone and the queue is empty.
    pub(crate) fn poll_recv(&mut self, cx: &mut Context<'_>) -> Poll<Option<Bytes>> {
        self.take(Some(cx))
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
    async fn nothing_follows_the_last_frame() {
        let (tx, mut rx) = channel(4);
        tx.try_send(Bytes::from_static(b"a")).unwrap();
        tx.try_send_last(Bytes::from_static(b"close")).unwrap();
        assert!(matches!(
            tx.try_send(Bytes::from_static(b"late")),
            Err(TrySendError::Closed)
        ));
        assert!(tx.send(Bytes::from_static(b"later")).await.is_err());
        assert!(matches!(
            tx.try_send_last(Bytes::from_static(b"again")),
            Err(TrySendError::Closed)
        ));
        assert_eq!(rx.try_recv().as_deref(), Some(&b"a"[..]));
        assert_eq!(rx.try_recv().as_deref(), Some(&b"close"[..]));
        drop(tx);
        assert_eq!(rx.recv().await, None);
    }

    #[tokio::test]
    async fn held_frames_follow_the_first_one_released() {
        let (tx, mut rx) = channel(2);
        tx.hold();
        tx.try_send(Bytes::from_static(b"a")).unwrap();
        tx.try_send(Bytes::from_static(b"b")).unwrap();
        // Held frames count against the capacity.
        assert!(matches!(
            tx.try_send(Bytes::from_static(b"c")),
            Err(TrySendError::Full)
        ));
        assert_eq!(rx.try_recv(), None, "nothing is handed over while held");
        {
            let mut next = std::pin::pin!(rx.recv());
            assert!(futures_util::poll!(next.as_mut()).is_pending());
            // The first frame goes ahead of the held ones, whatever the capacity.
            tx.release_after(Bytes::from_static(b"first")).unwrap();
            assert_eq!(next.await.as_deref(), Some(&b"first"[..]));
        }
        assert_eq!(rx.try_recv().as_deref(), Some(&b"a"[..]));
        assert_eq!(rx.try_recv().as_deref(), Some(&b"b"[..]));
        assert_eq!(rx.try_recv(), None);
        drop(rx);
        assert!(tx.release_after(Bytes::from_static(b"late")).is_err());
    }

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

    #[tokio::test]
    async fn a_sender_waiting_for_room_gets_in_once_a_frame_is_taken() {
        let (tx, mut rx) = channel(1);
        tx.try_send(Bytes::from_static(b"a")).unwrap();
        let tx2 = tx.clone();
        let sender = tokio::spawn(async move { tx2.send(Bytes::from_static(b"b")).await });
        tokio::task::yield_now().await;
        assert!(!sender.is_finished());
        assert_eq!(rx.recv().await.as_deref(), Some(&b"a"[..]));
        sender.await.unwrap().unwrap();
        assert_eq!(rx.recv().await.as_deref(), Some(&b"b"[..]));
        // A clone keeps the queue open; the last sender gone ends it.
        drop(tx);
        assert_eq!(rx.recv().await, None);
    }

    #[tokio::test]
    async fn a_sender_waiting_for_room_sees_the_transport_go() {
        let (tx, rx) = channel(1);
        tx.try_send(Bytes::from_static(b"a")).unwrap();
        let sender = tokio::spawn(async move { tx.send(Bytes::from_static(b"b")).await });
        tokio::task::yield_now().await;
        drop(rx);
        assert!(sender.await.unwrap().is_err());
    }

    #[test]
    fn an_idle_queue_holds_no_list_of_frames() {
        let (tx, mut rx) = channel(4);
        tx.try_send(Bytes::from_static(b"a")).unwrap();
        assert!(rx.shared.lock().frames.capacity() > 0);
        assert!(rx.try_recv().is_some());
        assert_eq!(rx.shared.lock().frames.capacity(), 0);
    }
}
