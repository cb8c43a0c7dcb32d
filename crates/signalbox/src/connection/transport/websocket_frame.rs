//! RFC 6455 framing for the server side of a WebSocket, on tungstenite's frame primitives:
//! [`FrameHeader::parse`] reads a client's frame header and [`FrameHeader::format`] writes the
//! server's. What is ours: the buffer (the caller's, taken from only once a whole frame is in it),
//! the rules a server applies to a client's frames (masked, no extensions, short final control
//! frames, the size limit), and unmasking, which tungstenite keeps private.

use std::io::Cursor;

use bytes::{Buf, BytesMut};
use tungstenite::protocol::frame::FrameHeader;
use tungstenite::protocol::frame::coding::{CloseCode, Control, Data, OpCode};

/// A text frame.
pub(crate) const TEXT: OpCode = OpCode::Data(Data::Text);
/// A binary frame.
pub(crate) const BINARY: OpCode = OpCode::Data(Data::Binary);
/// A close frame.
pub(crate) const CLOSE: OpCode = OpCode::Control(Control::Close);
/// A pong frame.
pub(crate) const PONG: OpCode = OpCode::Control(Control::Pong);

/// Why a client's frame was refused; each maps to the close code the server answers with.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
pub(crate) enum FrameError {
    /// Reserved bits, an unknown opcode, an unmasked frame, a fragmented or oversized control
    /// frame, or a continuation out of place.
    #[error("websocket protocol error")]
    Protocol,
    /// A frame or message over the configured maximum.
    #[error("websocket message too big")]
    TooBig,
    /// A text message that is not UTF-8.
    #[error("websocket text message is not UTF-8")]
    InvalidUtf8,
}

impl FrameError {
    /// The close code to answer with: 1002, 1009 or 1007.
    pub(crate) fn close_code(self) -> CloseCode {
        match self {
            Self::Protocol => CloseCode::Protocol,
            Self::TooBig => CloseCode::Size,
            Self::InvalidUtf8 => CloseCode::Invalid,
        }
    }
}

/// One complete client frame, unmasked (its header still holds the mask it came with).
#[derive(Debug)]
pub(crate) struct Frame {
    pub(crate) header: FrameHeader,
    pub(crate) payload: BytesMut,
}

impl Frame {
    /// The last frame of its message.
    pub(crate) fn fin(&self) -> bool {
        self.header.is_final
    }

    /// The frame's opcode.
    pub(crate) fn opcode(&self) -> OpCode {
        self.header.opcode
    }
}

/// Takes one complete frame off the front of `buf`; `Ok(None)` when `buf` holds only part of
/// one (nothing is consumed then). Frames whose payload exceeds `max_payload` are refused once
/// their header is in, before their payload arrives.
pub(crate) fn parse(buf: &mut BytesMut, max_payload: usize) -> Result<Option<Frame>, FrameError> {
    let mut cursor = Cursor::new(&buf[..]);
    // tungstenite refuses reserved opcodes; nothing else can fail reading from memory.
    let Some((header, len)) = FrameHeader::parse(&mut cursor).map_err(|_| FrameError::Protocol)?
    else {
        return Ok(None);
    };
    let header_len = usize::try_from(cursor.position()).map_err(|_| FrameError::Protocol)?;
    // No extension is negotiated, so the reserved bits must be clear (RFC 6455 §5.2).
    if header.rsv1 || header.rsv2 || header.rsv3 {
        return Err(FrameError::Protocol);
    }
    // Clients must mask every frame (RFC 6455 §5.1).
    let Some(mask) = header.mask else {
        return Err(FrameError::Protocol);
    };
    // Control frames are final and carry at most 125 bytes (RFC 6455 §5.5).
    if matches!(header.opcode, OpCode::Control(_)) && (!header.is_final || len > 125) {
        return Err(FrameError::Protocol);
    }
    let len = usize::try_from(len).map_err(|_| FrameError::TooBig)?;
    if len > max_payload {
        return Err(FrameError::TooBig);
    }
    if buf.len() - header_len < len {
        return Ok(None);
    }
    buf.advance(header_len);
    let mut payload = buf.split_to(len);
    unmask(&mut payload, mask);
    Ok(Some(Frame { header, payload }))
}

/// Applies (or removes) a frame mask (RFC 6455 §5.3); tungstenite's own is not public.
fn unmask(payload: &mut [u8], mask: [u8; 4]) {
    for (byte, key) in payload.iter_mut().zip(mask.iter().cycle()) {
        *byte ^= key;
    }
}

/// Appends an unmasked, final frame to `out`.
pub(crate) fn encode(out: &mut Vec<u8>, opcode: OpCode, payload: &[u8]) {
    let header = FrameHeader {
        is_final: true,
        rsv1: false,
        rsv2: false,
        rsv3: false,
        opcode,
        mask: None,
    };
    // Writing to a `Vec` cannot fail; the payload is copied after the header, not into a frame.
    if let Err(error) = header.format(payload.len() as u64, out) {
        tracing::error!(target: "signalbox::transport", %error, "cannot encode a websocket frame");
        return;
    }
    out.extend_from_slice(payload);
}

/// Appends a close frame with `code` and no reason.
pub(crate) fn encode_close(out: &mut Vec<u8>, code: CloseCode) {
    encode(out, CLOSE, &u16::from(code).to_be_bytes());
}

/// Checks a client's close frame payload: empty, or a status code a peer may send (tungstenite's
/// [`CloseCode::is_allowed`]) and a UTF-8 reason.
pub(crate) fn valid_close_payload(payload: &[u8]) -> bool {
    match payload {
        [] => true,
        [_] => false,
        [a, b, reason @ ..] => {
            CloseCode::from(u16::from_be_bytes([*a, *b])).is_allowed()
                && std::str::from_utf8(reason).is_ok()
        }
    }
}

/// Fuzzing entry point, not part of the API: parses a client's byte stream arriving in `chunks`
/// as the driver does (frames are taken off a buffer the chunks are appended to, until the first
/// error) and checks that
/// - parsing the chunks gives the same frames and error as parsing their concatenation, and the
///   same bytes left over when there is no error;
/// - every frame parsed, formatted again by tungstenite (with its mask), parses back to the same
///   header and payload, consuming exactly its bytes;
/// - the server's own encoding of its payload (unmasked) reads back through tungstenite as one
///   final frame of the same opcode and length.
///
/// Returns the number of frames parsed, or which property broke.
#[doc(hidden)]
pub fn fuzz_frames(max_payload: usize, chunks: &[&[u8]]) -> Result<usize, String> {
    let whole = chunks.concat();
    let at_once = parse_stream(&[&whole], max_payload);
    let split = parse_stream(chunks, max_payload);
    if at_once.frames != split.frames || at_once.error != split.error {
        return Err(format!("split {split:?} != at once {at_once:?}"));
    }
    if at_once.error.is_none() && at_once.rest != split.rest {
        return Err(format!(
            "left over: split {:?} != at once {:?}",
            split.rest, at_once.rest
        ));
    }
    for (header, payload) in &at_once.frames {
        let mut formatted = Vec::new();
        tungstenite::protocol::frame::Frame::from_payload(
            header.clone(),
            bytes::Bytes::copy_from_slice(payload),
        )
        .format(&mut formatted)
        .map_err(|e| format!("tungstenite cannot format {header:?}: {e}"))?;
        let mut again = BytesMut::from(&formatted[..]);
        match parse(&mut again, max_payload) {
            Ok(Some(frame)) if frame.header == *header && frame.payload[..] == payload[..] => {}
            other => {
                return Err(format!(
                    "{header:?} formatted as {formatted:?} parses as {other:?}"
                ));
            }
        }
        if !again.is_empty() {
            return Err(format!(
                "{header:?} formatted as {formatted:?} leaves {again:?}"
            ));
        }
        let mut encoded = Vec::new();
        encode(&mut encoded, header.opcode, payload);
        let mut cursor = Cursor::new(&encoded[..]);
        match FrameHeader::parse(&mut cursor) {
            Ok(Some((read, len)))
                if read.is_final
                    && read.opcode == header.opcode
                    && read.mask.is_none()
                    && !(read.rsv1 || read.rsv2 || read.rsv3)
                    && len == payload.len() as u64
                    && cursor.position() + len == encoded.len() as u64 => {}
            other => {
                return Err(format!(
                    "{header:?} encoded as {encoded:?} reads as {other:?}"
                ));
            }
        }
    }
    Ok(at_once.frames.len())
}

/// What [`parse_stream`] found.
#[derive(Debug)]
struct Parsed {
    frames: Vec<(FrameHeader, Vec<u8>)>,
    error: Option<FrameError>,
    rest: Vec<u8>,
}

/// Parses `chunks` as they arrive, up to the first error.
fn parse_stream(chunks: &[&[u8]], max_payload: usize) -> Parsed {
    let mut buf = BytesMut::new();
    let mut frames = Vec::new();
    for chunk in chunks {
        buf.extend_from_slice(chunk);
        loop {
            match parse(&mut buf, max_payload) {
                Ok(Some(frame)) => frames.push((frame.header, frame.payload.to_vec())),
                Ok(None) => break,
                Err(error) => {
                    return Parsed {
                        frames,
                        error: Some(error),
                        rest: buf.to_vec(),
                    };
                }
            }
        }
    }
    Parsed {
        frames,
        error: None,
        rest: buf.to_vec(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn masked(b0: u8, payload: &[u8]) -> BytesMut {
        let mask = [1u8, 2, 3, 4];
        let mut out = BytesMut::new();
        out.extend_from_slice(&[b0]);
        match payload.len() {
            len @ 0..=125 => out.extend_from_slice(&[0x80 | len as u8]),
            len @ 126..=0xFFFF => {
                out.extend_from_slice(&[0x80 | 126]);
                out.extend_from_slice(&(len as u16).to_be_bytes());
            }
            len => {
                out.extend_from_slice(&[0x80 | 127]);
                out.extend_from_slice(&(len as u64).to_be_bytes());
            }
        }
        out.extend_from_slice(&mask);
        out.extend(payload.iter().enumerate().map(|(i, b)| b ^ mask[i % 4]));
        out
    }

    #[test]
    fn parses_masked_frames_of_every_length_encoding() {
        for len in [0usize, 5, 125, 126, 300, 70_000] {
            let payload: Vec<u8> = (0..len).map(|i| i as u8).collect();
            let mut buf = masked(0x82, &payload);
            let frame = parse(&mut buf, usize::MAX).unwrap().unwrap();
            assert!(frame.fin());
            assert_eq!(frame.opcode(), BINARY);
            assert_eq!(&frame.payload[..], &payload[..]);
            assert!(buf.is_empty());
        }
    }

    #[test]
    fn waits_for_the_whole_frame() {
        let whole = masked(0x81, b"hello world");
        for cut in 0..whole.len() {
            let mut buf = BytesMut::from(&whole[..cut]);
            assert!(parse(&mut buf, usize::MAX).unwrap().is_none());
            assert_eq!(buf.len(), cut);
        }
    }

    #[test]
    fn refuses_protocol_violations() {
        // Unmasked.
        let mut buf = BytesMut::from(&[0x81u8, 0x01, b'a'][..]);
        assert_eq!(parse(&mut buf, 100).unwrap_err(), FrameError::Protocol);
        // Reserved bit.
        assert_eq!(
            parse(&mut masked(0xC1, b"a"), 100).unwrap_err(),
            FrameError::Protocol
        );
        // Unknown opcode.
        assert_eq!(
            parse(&mut masked(0x83, b"a"), 100).unwrap_err(),
            FrameError::Protocol
        );
        // Fragmented ping.
        assert_eq!(
            parse(&mut masked(0x09, b"a"), 100).unwrap_err(),
            FrameError::Protocol
        );
        // Oversized ping.
        assert_eq!(
            parse(&mut masked(0x89, &[0; 126]), 1000).unwrap_err(),
            FrameError::Protocol
        );
        // Too big, refused from the header (length and mask) alone.
        let mut head = masked(0x82, &[0; 200]);
        head.truncate(8);
        assert_eq!(parse(&mut head, 100).unwrap_err(), FrameError::TooBig);
    }

    #[test]
    fn encodes_unmasked_frames() {
        let mut out = Vec::new();
        encode(&mut out, TEXT, b"hi");
        assert_eq!(out, [0x81, 2, b'h', b'i']);
        out.clear();
        encode(&mut out, BINARY, &[7; 300]);
        assert_eq!(&out[..4], &[0x82, 126, 1, 44]);
        assert_eq!(out.len(), 304);
        out.clear();
        encode(&mut out, BINARY, &[7; 70_000]);
        assert_eq!(&out[..10], &[0x82, 127, 0, 0, 0, 0, 0, 1, 0x11, 0x70]);
        out.clear();
        encode_close(&mut out, CloseCode::Normal);
        assert_eq!(out, [0x88, 2, 0x03, 0xE8]);
    }

    #[test]
    fn maps_errors_to_close_codes() {
        assert_eq!(u16::from(FrameError::Protocol.close_code()), 1002);
        assert_eq!(u16::from(FrameError::TooBig.close_code()), 1009);
        assert_eq!(u16::from(FrameError::InvalidUtf8.close_code()), 1007);
    }

    #[test]
    fn checks_close_payloads() {
        assert!(valid_close_payload(b""));
        assert!(!valid_close_payload(&[3]));
        assert!(valid_close_payload(&[0x03, 0xE8, b'o', b'k']));
        assert!(valid_close_payload(&[0x0F, 0xA0]));
        // 1004, 1005, 1006 and 1100 are not for peers to send.
        assert!(!valid_close_payload(&[0x03, 0xEC]));
        assert!(!valid_close_payload(&[0x03, 0xED]));
        assert!(!valid_close_payload(&[0x03, 0xEE]));
        assert!(!valid_close_payload(&[0x04, 0x4C]));
        assert!(!valid_close_payload(&[0x03, 0xE8, 0xFF]));
    }

    /// Client frames for the seed corpus of the `websocket_frames` fuzz target.
    fn seed_streams() -> Vec<(u8, BytesMut)> {
        let mut fragmented = masked(0x01, b"hel");
        fragmented.extend_from_slice(&masked(0x89, b"ping"));
        fragmented.extend_from_slice(&masked(0x80, b"lo"));
        let mut handshake_and_close = masked(0x81, b"{\"protocol\":\"json\",\"version\":1}\x1e");
        handshake_and_close.extend_from_slice(&masked(0x88, b"\x03\xe8bye"));
        vec![
            (0, masked(0x81, b"hello")),
            (0, masked(0x82, &[7; 300])),
            (0x05, fragmented),
            (0x09, handshake_and_close),
            (0, masked(0x8A, b"pong")),
            (0, masked(0x88, b"")),
            (0x02, masked(0x82, &[1; 40])),
            (0, BytesMut::from(&[0x81u8, 0x01, b'a'][..])),
            (0, masked(0xC1, b"a")),
        ]
    }

    /// Checks the fuzz properties on the seeds and writes them as the seed corpus of the
    /// `websocket_frames` fuzz target when `SIGNALBOX_WRITE_WEBSOCKET_CORPUS` names a directory:
    /// `SIGNALBOX_WRITE_WEBSOCKET_CORPUS=$PWD/fuzz/corpus/websocket_frames cargo test -p signalbox --lib websocket_frames_seed_corpus`.
    #[test]
    fn websocket_frames_seed_corpus() {
        let seeds = seed_streams();
        for (config, stream) in &seeds {
            let max = match config & 0b11 {
                0 => usize::MAX,
                1 => 32 * 1024,
                2 => 16,
                _ => 200,
            };
            let halves = stream.split_at(stream.len() / 2);
            fuzz_frames(max, &[halves.0, halves.1]).unwrap();
        }
        let Some(dir) = std::env::var_os("SIGNALBOX_WRITE_WEBSOCKET_CORPUS") else {
            return;
        };
        let dir = std::path::PathBuf::from(dir);
        std::fs::create_dir_all(&dir).unwrap();
        for (n, (config, stream)) in seeds.iter().enumerate() {
            let mut input = vec![*config];
            input.extend_from_slice(stream);
            std::fs::write(dir.join(format!("seed-{n:02}")), input).unwrap();
        }
    }
}
