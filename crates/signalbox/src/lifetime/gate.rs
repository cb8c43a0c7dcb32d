//! Holds back what is sent to a connection while its handshake completes.
//!
//! A connection is registered with the lifetime manager before its handshake response is queued,
//! so that nothing sent to "all" after the client saw the response can miss it; what arrives in
//! between must still reach the client *after* the handshake response. The gate keeps those
//! frames and releases them, in order, when the hub opens it.
//!
//! The gate holds at most `limit` frames (the connection's outbound queue capacity, see
//! [`ConnectionHandle::opening`](super::ConnectionHandle::opening)): more could not be queued
//! when the gate opens anyway. A frame past the limit is refused, and the connection is treated
//! like a slow consumer whose outbound queue is full: it is closed.

use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Mutex, PoisonError};

use bytes::Bytes;

/// Frames held until the connection opens.
#[derive(Debug)]
pub(crate) struct Gate {
    open: AtomicBool,
    held: Mutex<Vec<Bytes>>,
    /// The most frames held at once.
    limit: usize,
}

/// What [`Gate::hold`] did with a frame.
#[derive(Debug, PartialEq, Eq)]
pub(crate) enum Hold {
    /// The gate is open: send the frame now.
    Pass(Bytes),
    /// The frame is held until the gate opens.
    Held,
    /// The gate already holds `limit` frames: the frame was dropped.
    Full,
}

impl Gate {
    /// A closed gate holding at most `limit` frames.
    pub(crate) fn closed(limit: usize) -> Self {
        Self {
            open: AtomicBool::new(false),
            held: Mutex::default(),
            limit,
        }
    }

    /// An open gate: frames pass straight through.
    pub(crate) fn opened() -> Self {
        Self {
            open: AtomicBool::new(true),
            held: Mutex::default(),
            limit: 0,
        }
    }

    /// Keeps `frame` if the gate is still closed and has room; gives it back to be sent now if
    /// the gate is open.
    pub(crate) fn hold(&self, frame: Bytes) -> Hold {
        if self.open.load(Ordering::Acquire) {
            return Hold::Pass(frame);
        }
        let mut held = self.held.lock().unwrap_or_else(PoisonError::into_inner);
        // Re-checked under the lock: `open` flips while the lock is held.
        if self.open.load(Ordering::Acquire) {
            return Hold::Pass(frame);
        }
        if held.len() >= self.limit {
            return Hold::Full;
        }
        held.push(frame);
        Hold::Held
    }

    /// Opens the gate, passing each held frame to `send` in arrival order. Frames sent
    /// concurrently wait for this to finish, so they follow the held ones.
    pub(crate) fn open(&self, mut send: impl FnMut(Bytes)) {
        let mut held = self.held.lock().unwrap_or_else(PoisonError::into_inner);
        for frame in std::mem::take(&mut *held) {
            send(frame);
        }
        self.open.store(true, Ordering::Release);
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::sync::Arc;

    #[test]
    fn holds_until_opened_then_passes_through_in_order() {
        let gate = Gate::closed(8);
        assert_eq!(gate.hold(Bytes::from_static(b"1")), Hold::Held);
        assert_eq!(gate.hold(Bytes::from_static(b"2")), Hold::Held);
        let mut sent = Vec::new();
        gate.open(|frame| sent.push(frame));
        assert_eq!(sent, [Bytes::from_static(b"1"), Bytes::from_static(b"2")]);
        assert_eq!(
            gate.hold(Bytes::from_static(b"3")),
            Hold::Pass(Bytes::from_static(b"3"))
        );
        assert_eq!(
            Gate::opened().hold(Bytes::from_static(b"x")),
            Hold::Pass(Bytes::from_static(b"x"))
        );
    }

    #[test]
    fn holds_at_most_limit_frames() {
        let gate = Gate::closed(2);
        assert_eq!(gate.hold(Bytes::from_static(b"1")), Hold::Held);
        assert_eq!(gate.hold(Bytes::from_static(b"2")), Hold::Held);
        assert_eq!(gate.hold(Bytes::from_static(b"3")), Hold::Full);
        let mut sent = Vec::new();
        gate.open(|frame| sent.push(frame));
        assert_eq!(sent, [Bytes::from_static(b"1"), Bytes::from_static(b"2")]);
        // Once open, the limit no longer applies: the outbound queue bounds what follows.
        assert_eq!(
            gate.hold(Bytes::from_static(b"4")),
            Hold::Pass(Bytes::from_static(b"4"))
        );
    }

    #[test]
    fn an_opening_connection_past_the_limit_is_closed_as_a_slow_consumer() {
        use crate::lifetime::ConnectionHandle;
        use signalbox_protocol::Protocol;
        use tokio_util::sync::CancellationToken;

        // The gate's limit is the outbound queue's capacity.
        let (tx, mut rx) = crate::connection::outbound::channel(3);
        let abort = CancellationToken::new();
        let handle =
            ConnectionHandle::opening(Arc::from("c"), None, Protocol::Json, tx, abort.clone());
        for i in 0..3u8 {
            assert!(handle.try_send(Bytes::from(vec![i])), "frame {i} is held");
        }
        assert!(!abort.is_cancelled());
        assert!(rx.try_recv().is_none(), "nothing passes a closed gate");
        assert!(!handle.try_send(Bytes::from_static(b"x")), "past the limit");
        assert!(abort.is_cancelled(), "the connection is closed");
        handle.open();
        let released: Vec<u8> = std::iter::from_fn(|| rx.try_recv()).map(|b| b[0]).collect();
        assert_eq!(released, [0, 1, 2], "the held frames are kept, in order");
    }

    #[test]
    fn concurrent_senders_never_overtake_held_frames() {
        for _ in 0..200 {
            let gate = Arc::new(Gate::closed(1000));
            let out = Arc::new(Mutex::new(Vec::new()));
            let sender = {
                let (gate, out) = (gate.clone(), out.clone());
                std::thread::spawn(move || {
                    for i in 0..100u8 {
                        if let Hold::Pass(frame) = gate.hold(Bytes::from(vec![i])) {
                            out.lock().unwrap().push(frame);
                        }
                    }
                })
            };
            gate.open(|frame| out.lock().unwrap().push(frame));
            sender.join().unwrap();
            let order: Vec<u8> = out.lock().unwrap().iter().map(|b| b[0]).collect();
            assert_eq!(order, (0..100).collect::<Vec<_>>());
        }
    }
}
