//! Holds back what is sent to a connection while its handshake completes.
//!
//! A connection is registered with the lifetime manager before its handshake response is queued,
//! so that nothing sent to "all" after the client saw the response can miss it; what arrives in
//! between must still reach the client *after* the handshake response. The gate keeps those
//! frames and releases them, in order, when the hub opens it.

use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Mutex, PoisonError};

use bytes::Bytes;

/// Frames held until the connection opens.
#[derive(Debug, Default)]
pub(crate) struct Gate {
    open: AtomicBool,
    held: Mutex<Vec<Bytes>>,
}

impl Gate {
    /// An open gate: frames pass straight through.
    pub(crate) fn opened() -> Self {
        Self {
            open: AtomicBool::new(true),
            held: Mutex::default(),
        }
    }

    /// Keeps `frame` if the gate is still closed; otherwise gives it back to be sent now.
    pub(crate) fn hold(&self, frame: Bytes) -> Option<Bytes> {
        if self.open.load(Ordering::Acquire) {
            return Some(frame);
        }
        let mut held = self.held.lock().unwrap_or_else(PoisonError::into_inner);
        // Re-checked under the lock: `open` flips while the lock is held.
        if self.open.load(Ordering::Acquire) {
            return Some(frame);
        }
        held.push(frame);
        None
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

    #[test]
    fn holds_until_opened_then_passes_through_in_order() {
        let gate = Gate::default();
        assert_eq!(gate.hold(Bytes::from_static(b"1")), None);
        assert_eq!(gate.hold(Bytes::from_static(b"2")), None);
        let mut sent = Vec::new();
        gate.open(|frame| sent.push(frame));
        assert_eq!(sent, [Bytes::from_static(b"1"), Bytes::from_static(b"2")]);
        assert_eq!(
            gate.hold(Bytes::from_static(b"3")),
            Some(Bytes::from_static(b"3"))
        );
        assert_eq!(
            Gate::opened().hold(Bytes::from_static(b"x")),
            Some(Bytes::from_static(b"x"))
        );
    }

    #[test]
    fn concurrent_senders_never_overtake_held_frames() {
        use std::sync::Arc;
        for _ in 0..200 {
            let gate = Arc::new(Gate::default());
            let out = Arc::new(Mutex::new(Vec::new()));
            let sender = {
                let (gate, out) = (gate.clone(), out.clone());
                std::thread::spawn(move || {
                    for i in 0..100u8 {
                        if let Some(frame) = gate.hold(Bytes::from(vec![i])) {
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
