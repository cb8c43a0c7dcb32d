//! The socket side of a WebSocket connection: one future that reads the client's frames into the
//! connection's [`Inbox`] and writes the hub's queued frames, answering pings and close frames.
//!
//! An idle connection holds no buffers: bytes are read into a buffer on the stack and kept only
//! while a frame is incomplete; frames to send are encoded into a buffer that is released once
//! written. The future runs in the connection's own task, next to the hub's handler (see
//! `endpoint::websocket_connection`), so a connection is one task.

use crate::connection::outbound::OutboundReceiver;
use std::pin::Pin;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::task::{Context, Poll};
use std::time::Duration;

use bytes::{Bytes, BytesMut};
use hyper::upgrade::Upgraded;
use hyper_util::rt::TokioIo;
use signalbox_protocol::TransportType;
use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};
use tokio::time::Sleep;
use tokio_util::sync::CancellationToken;

use tungstenite::protocol::frame::coding::{CloseCode, Control, Data, OpCode};

use super::inbox::Inbox;
use super::websocket_frame::{self as frame, FrameError};

/// Bytes read from the socket at once, at most (a buffer on the stack).
const READ_CHUNK: usize = 8 * 1024;
/// Rounds of reading and writing before yielding to other tasks.
const ROUNDS_PER_POLL: usize = 32;

/// Limits of one socket.
#[derive(Debug, Clone, Copy)]
pub(crate) struct DriverLimits {
    /// Bytes read from the socket at once (at most [`READ_CHUNK`]).
    pub(crate) read_size: usize,
    /// Frames taken from the queue are written together up to about this many bytes.
    pub(crate) write_batch: usize,
    /// Largest message accepted from the client.
    pub(crate) max_message: usize,
    /// A batch that cannot be written within this time ends the connection.
    pub(crate) send_timeout: Duration,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum State {
    /// Reading and writing.
    Open,
    /// A close frame is queued: write what is queued, then shut the socket down.
    Closing,
}

/// Drives one WebSocket until it is closed; see the module docs.
pub(crate) struct Driver {
    io: TokioIo<Upgraded>,
    outbound: OutboundReceiver,
    inbox: Arc<Inbox>,
    binary: Arc<AtomicBool>,
    limits: Arc<DriverLimits>,
    /// Cancelled when a write fails or times out: the hub then ends the connection.
    failed: CancellationToken,
    state: State,
    /// The client sent its last byte (or the socket failed).
    read_done: bool,
    /// Encoded frames not written yet; unallocated when idle.
    out: Vec<u8>,
    /// How much of `out` is written.
    written: usize,
    /// Payload bytes in `out`, for the metrics.
    out_payload: usize,
    /// Received bytes that are not a whole frame yet; unallocated when idle.
    partial: BytesMut,
    /// A fragmented message being received: its type and the payload so far (boxed: rare).
    fragments: Option<Box<(OpCode, BytesMut)>>,
    /// Armed while a batch waits for room in the socket.
    timer: Option<Pin<Box<Sleep>>>,
}

impl std::fmt::Debug for Driver {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Driver")
            .field("state", &self.state)
            .field("read_done", &self.read_done)
            .field("out", &self.out.len())
            .field("partial", &self.partial.len())
            .finish_non_exhaustive()
    }
}

impl Driver {
    /// A driver for `io`: data frames go to `inbox`, frames from `outbound` go to the client (as
    /// binary frames once `binary` is set, else as text).
    pub(crate) fn new(
        io: Upgraded,
        outbound: OutboundReceiver,
        inbox: Arc<Inbox>,
        binary: Arc<AtomicBool>,
        limits: Arc<DriverLimits>,
        failed: CancellationToken,
    ) -> Self {
        Self {
            io: TokioIo::new(io),
            outbound,
            inbox,
            binary,
            limits,
            failed,
            state: State::Open,
            read_done: false,
            out: Vec::new(),
            written: 0,
            out_payload: 0,
            partial: BytesMut::new(),
            fragments: None,
            timer: None,
        }
    }

    /// Encodes one queued frame into `out`.
    fn queue(&mut self, data: &Bytes) {
        if self.binary.load(Ordering::Acquire) {
            frame::encode(&mut self.out, frame::BINARY, data);
        } else if std::str::from_utf8(data).is_ok() {
            frame::encode(&mut self.out, frame::TEXT, data);
        } else {
            tracing::error!(target: "signalbox::transport", "dropping a text frame that is not UTF-8");
            return;
        }
        self.out_payload += data.len();
    }

    /// Queues a close frame and stops taking data: nothing more is read or sent after it.
    fn close(&mut self, payload: &[u8]) {
        frame::encode(&mut self.out, frame::CLOSE, payload);
        self.state = State::Closing;
        self.inbox.end();
    }

    fn fail(&mut self, error: FrameError) {
        tracing::debug!(target: "signalbox::transport", %error, "closing the websocket");
        self.close(&u16::from(error.close_code()).to_be_bytes());
    }

    /// Handles the bytes just read: whole data frames go to the inbox, control frames are
    /// answered.
    fn received(&mut self, bytes: &[u8]) {
        self.partial.extend_from_slice(bytes);
        while self.state == State::Open {
            match frame::parse(&mut self.partial, self.limits.max_message) {
                Ok(Some(frame)) => {
                    if let Err(error) = self.frame(frame) {
                        self.fail(error);
                    }
                }
                Ok(None) => break,
                Err(error) => self.fail(error),
            }
        }
        if self.partial.is_empty() {
            // Release the buffer: an idle connection keeps none.
            self.partial = BytesMut::new();
        }
    }

    fn frame(&mut self, frame: frame::Frame) -> Result<(), FrameError> {
        let fin = frame.fin();
        match frame.opcode() {
            OpCode::Data(Data::Text | Data::Binary) if self.fragments.is_some() => {
                Err(FrameError::Protocol)
            }
            opcode @ OpCode::Data(Data::Text | Data::Binary) if fin => {
                self.deliver(opcode, frame.payload)
            }
            opcode @ OpCode::Data(Data::Text | Data::Binary) => {
                self.fragments = Some(Box::new((opcode, frame.payload)));
                Ok(())
            }
            OpCode::Data(Data::Continue) => {
                let Some(mut fragments) = self.fragments.take() else {
                    return Err(FrameError::Protocol);
                };
                let (opcode, message) = &mut *fragments;
                let opcode = *opcode;
                if message.len() + frame.payload.len() > self.limits.max_message {
                    return Err(FrameError::TooBig);
                }
                message.unsplit(frame.payload);
                if fin {
                    let (_, message) = *fragments;
                    self.deliver(opcode, message)
                } else {
                    self.fragments = Some(fragments);
                    Ok(())
                }
            }
            OpCode::Control(Control::Ping) => {
                frame::encode(&mut self.out, frame::PONG, &frame.payload);
                Ok(())
            }
            OpCode::Control(Control::Pong) => Ok(()),
            OpCode::Control(Control::Close) => {
                if !frame::valid_close_payload(&frame.payload) {
                    return Err(FrameError::Protocol);
                }
                // Answer with the client's own status code and reason (RFC 6455 §5.5.1).
                tracing::debug!(target: "signalbox::transport", "the client closed the websocket");
                self.close(&frame.payload);
                Ok(())
            }
            // The parser refuses reserved opcodes already.
            OpCode::Data(Data::Reserved(_)) | OpCode::Control(Control::Reserved(_)) => {
                Err(FrameError::Protocol)
            }
        }
    }

    fn deliver(&mut self, opcode: OpCode, payload: BytesMut) -> Result<(), FrameError> {
        if opcode == frame::TEXT && std::str::from_utf8(&payload).is_err() {
            return Err(FrameError::InvalidUtf8);
        }
        self.inbox.push(payload);
        Ok(())
    }

    /// Writes `out`; `Ready(Ok)` once all of it is written and flushed.
    fn poll_write_out(&mut self, cx: &mut Context<'_>) -> Poll<std::io::Result<()>> {
        while self.written < self.out.len() {
            let rest = self.out.get(self.written..).unwrap_or_default();
            match Pin::new(&mut self.io).poll_write(cx, rest) {
                Poll::Ready(Ok(0)) => {
                    return Poll::Ready(Err(std::io::ErrorKind::WriteZero.into()));
                }
                Poll::Ready(Ok(n)) => self.written += n,
                Poll::Ready(Err(error)) => return Poll::Ready(Err(error)),
                Poll::Pending => return Poll::Pending,
            }
        }
        match Pin::new(&mut self.io).poll_flush(cx) {
            Poll::Ready(Ok(())) => {
                // Release the buffer: an idle connection keeps none.
                self.out = Vec::new();
                self.written = 0;
                Poll::Ready(Ok(()))
            }
            other => other,
        }
    }

    /// Takes frames from the queue into `out`, up to the batch size.
    fn poll_outbound(&mut self, cx: &mut Context<'_>) -> bool {
        match self.outbound.poll_recv(cx) {
            Poll::Ready(Some(data)) => {
                self.queue(&data);
                while self.out.len() < self.limits.write_batch {
                    match self.outbound.try_recv() {
                        Some(data) => self.queue(&data),
                        None => break,
                    }
                }
                true
            }
            Poll::Ready(None) => {
                // The hub is done with this connection: close normally.
                frame::encode_close(&mut self.out, CloseCode::Normal);
                self.state = State::Closing;
                self.inbox.end();
                true
            }
            Poll::Pending => false,
        }
    }

    /// Reads what the socket has; `true` when something happened.
    fn poll_read(&mut self, cx: &mut Context<'_>) -> bool {
        if !self.inbox.has_room(cx) {
            return false;
        }
        let mut chunk = [0u8; READ_CHUNK];
        let size = self.limits.read_size.clamp(1, READ_CHUNK);
        let Some(chunk) = chunk.get_mut(..size) else {
            return false;
        };
        let mut buf = ReadBuf::new(chunk);
        match Pin::new(&mut self.io).poll_read(cx, &mut buf) {
            Poll::Ready(Ok(())) if buf.filled().is_empty() => {
                tracing::debug!(target: "signalbox::transport", "websocket ended without a close frame");
                self.read_done = true;
                self.inbox.end();
                true
            }
            Poll::Ready(Ok(())) => {
                self.received(buf.filled());
                true
            }
            Poll::Ready(Err(error)) => {
                tracing::debug!(target: "signalbox::transport", %error, "websocket read failed");
                self.read_done = true;
                self.inbox.end();
                true
            }
            Poll::Pending => false,
        }
    }
}

impl Future for Driver {
    type Output = ();

    fn poll(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<()> {
        let this = self.get_mut();
        for _ in 0..ROUNDS_PER_POLL {
            let mut progress = false;
            if !this.out.is_empty() {
                match this.poll_write_out(cx) {
                    Poll::Ready(Ok(())) => {
                        this.timer = None;
                        if this.out_payload > 0 {
                            crate::metrics::bytes_sent(
                                TransportType::WebSockets,
                                this.out_payload as u64,
                            );
                            this.out_payload = 0;
                        }
                        progress = true;
                    }
                    Poll::Ready(Err(error)) => {
                        tracing::debug!(target: "signalbox::transport", %error, "websocket write failed");
                        // Once closing, the peer may be gone already: nothing failed then.
                        if this.state == State::Open {
                            this.failed.cancel();
                        }
                        this.inbox.end();
                        return Poll::Ready(());
                    }
                    Poll::Pending => {
                        // Only a batch that has to wait is given a timer.
                        let timeout = this.limits.send_timeout;
                        let timer = this
                            .timer
                            .get_or_insert_with(|| Box::pin(tokio::time::sleep(timeout)));
                        if timer.as_mut().poll(cx).is_ready() {
                            tracing::warn!(target: "signalbox::transport", "websocket send timed out; closing the connection");
                            this.failed.cancel();
                            this.inbox.end();
                            return Poll::Ready(());
                        }
                    }
                }
            }
            if this.out.is_empty() {
                match this.state {
                    State::Closing => {
                        // The peer may already be gone; the socket is dropped either way.
                        let _ = std::task::ready!(Pin::new(&mut this.io).poll_shutdown(cx));
                        return Poll::Ready(());
                    }
                    State::Open => progress |= this.poll_outbound(cx),
                }
            }
            if this.state == State::Open && !this.read_done {
                progress |= this.poll_read(cx);
            }
            if !progress {
                return Poll::Pending;
            }
        }
        // Plenty to do: let other connections run first.
        cx.waker().wake_by_ref();
        Poll::Pending
    }
}

impl Drop for Driver {
    fn drop(&mut self) {
        self.inbox.end();
    }
}
