//! Stateful reconnect (HubProtocol.md, "Stateful Reconnect"): the connection outlives its
//! WebSocket. Trackable messages the server sends are numbered and kept until the client acks
//! them; when a socket drops without a close frame the connection is parked, and a new socket for
//! the same token gets a Sequence message and the unacknowledged messages again.

use std::collections::VecDeque;
use std::sync::Mutex;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::time::Duration;

use bytes::Bytes;
use signalbox_protocol::{HubMessage, Protocol, Sequence};
use tokio::sync::{Notify, mpsc};
use tokio::time::Instant;
use tokio_util::sync::CancellationToken;

/// Default limit of unacknowledged bytes kept for replay.
#[cfg(test)]
const DEFAULT_BUFFER_SIZE: usize = 100_000;

#[derive(Debug)]
struct State {
    /// Unacknowledged trackable frames with their sequence ids.
    buffer: VecDeque<(u64, Bytes)>,
    buffered_bytes: usize,
    /// The id the next trackable frame gets.
    next_id: u64,
    protocol: Option<Protocol>,
    /// When the socket dropped; `None` while one is attached.
    parked_since: Option<Instant>,
    /// Cancelled when the current socket is replaced or the connection ends.
    socket: CancellationToken,
}

/// Where a new socket hands its writer queue to the pump, and the frame-type flag it writes with.
pub(crate) type Handoff = (
    mpsc::Sender<mpsc::Sender<Bytes>>,
    std::sync::Arc<AtomicBool>,
);

/// The replay buffer and socket bookkeeping of one stateful connection.
#[derive(Debug)]
pub(crate) struct Resumable {
    state: Mutex<State>,
    enabled: AtomicBool,
    acked: Notify,
    /// The highest id of the client's trackable messages processed, and the highest acknowledged
    /// to the client (the hub's heartbeat sends the Ack when they differ).
    inbound_received: AtomicU64,
    inbound_acked: AtomicU64,
    limit: usize,
    pub(crate) handoff: std::sync::OnceLock<Handoff>,
}

/// Whether a frame holds a trackable message (types 1 to 5). Frames are single messages written by
/// this server, so the type is at a fixed place: `{"type":N` for JSON, after the length prefix and
/// the array header for MessagePack.
pub(crate) fn is_trackable(frame: &[u8], binary: bool) -> bool {
    let message_type = if binary {
        let mut i = 0;
        while i < frame.len() && frame[i] & 0x80 != 0 {
            i += 1;
        }
        i += 1;
        match frame.get(i) {
            Some(0x90..=0x9f) => frame.get(i + 1).copied(),
            Some(0xdc) => frame.get(i + 3).copied(),
            Some(0xdd) => frame.get(i + 5).copied(),
            _ => None,
        }
    } else {
        frame
            .strip_prefix(b"{\"type\":")
            .and_then(|rest| rest.first().copied())
            .filter(u8::is_ascii_digit)
            .map(|d| d - b'0')
            .filter(|_| frame.get(9).is_none_or(|c| !c.is_ascii_digit()))
    };
    matches!(message_type, Some(1..=5))
}

impl Resumable {
    pub(crate) fn new(limit: usize) -> Self {
        Self {
            state: Mutex::new(State {
                buffer: VecDeque::new(),
                buffered_bytes: 0,
                next_id: 1,
                protocol: None,
                parked_since: None,
                socket: CancellationToken::new(),
            }),
            enabled: AtomicBool::new(false),
            acked: Notify::new(),
            inbound_received: AtomicU64::new(0),
            inbound_acked: AtomicU64::new(0),
            limit,
            handoff: std::sync::OnceLock::new(),
        }
    }

    /// Turns buffering on once the handshake (version 2 or later) has chosen the protocol.
    pub(crate) fn enable(&self, protocol: Protocol) {
        if let Ok(mut state) = self.state.lock() {
            state.protocol = Some(protocol);
        }
        self.enabled.store(true, Ordering::Release);
    }

    pub(crate) fn is_enabled(&self) -> bool {
        self.enabled.load(Ordering::Acquire)
    }

    /// Disables resuming (the client closed gracefully, or did not ask for it in the handshake).
    pub(crate) fn disable(&self) {
        self.enabled.store(false, Ordering::Release);
        self.acked.notify_waiters();
    }

    /// Whether the connection currently has no socket.
    pub(crate) fn is_parked(&self) -> bool {
        self.state.lock().is_ok_and(|s| s.parked_since.is_some())
    }

    pub(crate) fn parked_for(&self, now: Instant) -> Option<Duration> {
        let state = self.state.lock().ok()?;
        state.parked_since.map(|t| now.duration_since(t))
    }

    /// The token of the current socket.
    #[cfg(test)]
    fn socket_token(&self) -> CancellationToken {
        self.state
            .lock()
            .map(|s| s.socket.clone())
            .unwrap_or_default()
    }

    /// Marks the socket behind `token` as gone, unless it was already replaced.
    pub(crate) fn park(&self, token: &CancellationToken) {
        if let Ok(mut state) = self.state.lock()
            && !token.is_cancelled()
        {
            state.parked_since = Some(Instant::now());
        }
    }

    /// A new socket takes over: the old one is cancelled. Returns the new socket's token.
    pub(crate) fn replace_socket(&self) -> CancellationToken {
        let Ok(mut state) = self.state.lock() else {
            return CancellationToken::new();
        };
        state.socket.cancel();
        state.socket = CancellationToken::new();
        state.parked_since = None;
        state.socket.clone()
    }

    /// The client's trackable message `id` was processed.
    pub(crate) fn received_from_client(&self, id: u64) {
        self.inbound_received.fetch_max(id, Ordering::AcqRel);
    }

    /// The id to acknowledge to the client, if it sent something new since the last Ack.
    pub(crate) fn take_client_ack(&self) -> Option<u64> {
        let received = self.inbound_received.load(Ordering::Acquire);
        let acked = self.inbound_acked.fetch_max(received, Ordering::AcqRel);
        (received > acked).then_some(received)
    }

    /// The client acknowledged everything up to `sequence_id`.
    pub(crate) fn ack(&self, sequence_id: u64) {
        if let Ok(mut state) = self.state.lock() {
            while state
                .buffer
                .front()
                .is_some_and(|(id, _)| *id <= sequence_id)
            {
                if let Some((_, frame)) = state.buffer.pop_front() {
                    state.buffered_bytes -= frame.len();
                }
            }
        }
        self.acked.notify_waiters();
    }

    /// Records an outgoing frame; waits while the buffer is over its limit.
    async fn record(&self, frame: &Bytes, binary: bool) {
        if !self.is_enabled() || !is_trackable(frame, binary) {
            return;
        }
        loop {
            let notified = self.acked.notified();
            {
                let Ok(mut state) = self.state.lock() else {
                    return;
                };
                if state.buffered_bytes < self.limit || !self.is_enabled() {
                    let id = state.next_id;
                    state.next_id += 1;
                    state.buffered_bytes += frame.len();
                    state.buffer.push_back((id, frame.clone()));
                    return;
                }
            }
            notified.await;
        }
    }

    /// The Sequence message and the frames to replay on a new socket.
    fn replay(&self) -> Vec<Bytes> {
        let Ok(state) = self.state.lock() else {
            return Vec::new();
        };
        let Some(protocol) = state.protocol else {
            return Vec::new();
        };
        let first = state.buffer.front().map_or(state.next_id, |(id, _)| *id);
        let mut frames = Vec::with_capacity(state.buffer.len() + 1);
        match protocol.encode_to_bytes(&HubMessage::Sequence(Sequence { sequence_id: first })) {
            Ok(sequence) => frames.push(sequence),
            Err(error) => {
                tracing::error!(target: "signalbox::transport", %error, "failed to encode a Sequence message")
            }
        }
        frames.extend(state.buffer.iter().map(|(_, frame)| frame.clone()));
        frames
    }
}

/// Moves the hub's frames to whichever socket is attached, recording trackable ones for replay.
/// `sockets` delivers the writer queue of each new socket; the pump ends when the hub is done.
pub(crate) async fn pump(
    resumable: std::sync::Arc<Resumable>,
    mut frames: crate::connection::outbound::OutboundReceiver,
    mut sockets: mpsc::Receiver<mpsc::Sender<Bytes>>,
    binary: std::sync::Arc<AtomicBool>,
) {
    let mut writer: Option<mpsc::Sender<Bytes>> = None;
    let mut first = true;
    loop {
        tokio::select! {
            biased;
            socket = sockets.recv() => {
                let Some(socket) = socket else { return };
                // Only a reconnecting socket gets Sequence and the replay; the first one starts with
                // the handshake response.
                let replay = if first { Vec::new() } else { resumable.replay() };
                first = false;
                let mut ok = true;
                for frame in replay {
                    if socket.send(frame).await.is_err() {
                        ok = false;
                        break;
                    }
                }
                writer = ok.then_some(socket);
            }
            frame = frames.recv() => {
                let Some(frame) = frame else { return };
                resumable.record(&frame, binary.load(Ordering::Acquire)).await;
                if let Some(w) = &writer
                    && w.send(frame).await.is_err()
                {
                    writer = None;
                }
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn json(message: &HubMessage) -> Bytes {
        Protocol::Json.encode_to_bytes(message).unwrap()
    }

    fn msgpack(message: &HubMessage) -> Bytes {
        Protocol::MessagePack.encode_to_bytes(message).unwrap()
    }

    #[test]
    fn trackable_types_are_recognised_in_both_protocols() {
        use signalbox_protocol::{Ack, Completion, Invocation, Payload};
        let invocation = HubMessage::Invocation(Invocation::new("x", vec![Payload::new(1)]));
        let completion = HubMessage::Completion(Completion::void("1"));
        for (message, trackable) in [
            (invocation, true),
            (completion, true),
            (HubMessage::Ping, false),
            (HubMessage::Ack(Ack { sequence_id: 3 }), false),
        ] {
            assert_eq!(
                is_trackable(&json(&message), false),
                trackable,
                "{message:?}"
            );
            assert_eq!(
                is_trackable(&msgpack(&message), true),
                trackable,
                "{message:?}"
            );
        }
        assert!(!is_trackable(b"{}\x1e", false));
    }

    #[tokio::test]
    async fn buffers_until_acked_and_replays_with_sequence() {
        use signalbox_protocol::{Invocation, Payload};
        let r = Resumable::new(DEFAULT_BUFFER_SIZE);
        r.enable(Protocol::Json);
        let frames: Vec<Bytes> = (0..3)
            .map(|i| {
                json(&HubMessage::Invocation(Invocation::new(
                    "m",
                    vec![Payload::new(i)],
                )))
            })
            .collect();
        for f in &frames {
            r.record(f, false).await;
        }
        r.record(&json(&HubMessage::Ping), false).await;
        r.ack(1);
        let replay = r.replay();
        assert_eq!(&replay[0][..], b"{\"type\":9,\"sequenceId\":2}\x1e");
        assert_eq!(&replay[1..], &frames[1..]);
        r.ack(3);
        assert_eq!(&r.replay()[0][..], b"{\"type\":9,\"sequenceId\":4}\x1e");
    }

    #[tokio::test(start_paused = true)]
    async fn a_full_buffer_waits_for_acks() {
        use signalbox_protocol::{Invocation, Payload};
        let r = std::sync::Arc::new(Resumable::new(10));
        r.enable(Protocol::Json);
        let frame = json(&HubMessage::Invocation(Invocation::new(
            "m",
            vec![Payload::new(1)],
        )));
        r.record(&frame, false).await;
        let r2 = r.clone();
        let f2 = frame.clone();
        let waiting = tokio::spawn(async move { r2.record(&f2, false).await });
        // On the paused clock this ends once the spawned send is idle (blocked on the buffer).
        tokio::time::sleep(Duration::from_millis(20)).await;
        assert!(!waiting.is_finished(), "over the limit, sends wait");
        r.ack(1);
        waiting.await.unwrap();
    }

    #[test]
    fn parking_and_replacing_sockets() {
        let r = Resumable::new(DEFAULT_BUFFER_SIZE);
        let first = r.socket_token();
        r.park(&first);
        assert!(r.is_parked());
        let second = r.replace_socket();
        assert!(first.is_cancelled());
        assert!(!r.is_parked());
        r.park(&first);
        assert!(
            !r.is_parked(),
            "a replaced socket cannot park the connection"
        );
        r.park(&second);
        assert!(r.is_parked());
    }
}
