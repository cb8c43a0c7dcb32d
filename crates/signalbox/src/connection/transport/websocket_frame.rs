//! RFC 6455 framing for the server side of a WebSocket: parsing the (masked) frames a client
//! sends and encoding the (unmasked) frames the server sends. No I/O and no buffers of its own.

use bytes::{Buf, BytesMut};

/// Close status codes used by the server (RFC 6455 §7.4.1).
pub(crate) mod close_code {
    /// Normal closure.
    pub(crate) const NORMAL: u16 = 1000;
    /// The peer broke the protocol.
    pub(crate) const PROTOCOL: u16 = 1002;
    /// A text message that is not UTF-8.
    pub(crate) const INVALID_DATA: u16 = 1007;
    /// A message over the size limit.
    pub(crate) const TOO_BIG: u16 = 1009;
}

/// Frame opcodes (RFC 6455 §5.2).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum OpCode {
    Continuation,
    Text,
    Binary,
    Close,
    Ping,
    Pong,
}

impl OpCode {
    fn from_bits(bits: u8) -> Option<Self> {
        Some(match bits {
            0x0 => Self::Continuation,
            0x1 => Self::Text,
            0x2 => Self::Binary,
            0x8 => Self::Close,
            0x9 => Self::Ping,
            0xA => Self::Pong,
            _ => return None,
        })
    }

    fn bits(self) -> u8 {
        match self {
            Self::Continuation => 0x0,
            Self::Text => 0x1,
            Self::Binary => 0x2,
            Self::Close => 0x8,
            Self::Ping => 0x9,
            Self::Pong => 0xA,
        }
    }

    /// Close, ping and pong.
    pub(crate) fn is_control(self) -> bool {
        matches!(self, Self::Close | Self::Ping | Self::Pong)
    }
}

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
    /// The close code to answer with.
    pub(crate) fn close_code(self) -> u16 {
        match self {
            Self::Protocol => close_code::PROTOCOL,
            Self::TooBig => close_code::TOO_BIG,
            Self::InvalidUtf8 => close_code::INVALID_DATA,
        }
    }
}

/// One complete client frame, unmasked.
#[derive(Debug)]
pub(crate) struct Frame {
    pub(crate) fin: bool,
    pub(crate) opcode: OpCode,
    pub(crate) payload: BytesMut,
}

/// Takes one complete frame off the front of `buf`; `Ok(None)` when `buf` holds only part of
/// one (nothing is consumed then). Frames whose payload exceeds `max_payload` are refused before
/// their payload arrives.
pub(crate) fn parse(buf: &mut BytesMut, max_payload: usize) -> Result<Option<Frame>, FrameError> {
    let [b0, b1, ..] = buf[..] else {
        return Ok(None);
    };
    if b0 & 0x70 != 0 {
        return Err(FrameError::Protocol);
    }
    let fin = b0 & 0x80 != 0;
    let opcode = OpCode::from_bits(b0 & 0x0F).ok_or(FrameError::Protocol)?;
    if b1 & 0x80 == 0 {
        // Clients must mask every frame (RFC 6455 §5.1).
        return Err(FrameError::Protocol);
    }
    let (len, header) = match b1 & 0x7F {
        126 => match buf.get(2..4) {
            Some(&[a, b]) => (u64::from(u16::from_be_bytes([a, b])), 4),
            _ => return Ok(None),
        },
        127 => match buf.get(2..10).and_then(|b| <[u8; 8]>::try_from(b).ok()) {
            Some(bytes) => (u64::from_be_bytes(bytes), 10),
            None => return Ok(None),
        },
        len => (u64::from(len), 2),
    };
    if opcode.is_control() && (!fin || len > 125) {
        return Err(FrameError::Protocol);
    }
    let len = usize::try_from(len).map_err(|_| FrameError::TooBig)?;
    if len > max_payload {
        return Err(FrameError::TooBig);
    }
    let Some(&[m0, m1, m2, m3]) = buf.get(header..header + 4) else {
        return Ok(None);
    };
    if buf.len() < header + 4 + len {
        return Ok(None);
    }
    buf.advance(header + 4);
    let mut payload = buf.split_to(len);
    let mask = [m0, m1, m2, m3];
    for (i, byte) in payload.iter_mut().enumerate() {
        *byte ^= mask[i & 3];
    }
    Ok(Some(Frame {
        fin,
        opcode,
        payload,
    }))
}

/// Appends an unmasked, final frame to `out`.
pub(crate) fn encode(out: &mut Vec<u8>, opcode: OpCode, payload: &[u8]) {
    out.push(0x80 | opcode.bits());
    match payload.len() {
        len @ 0..=125 => out.push(len as u8),
        len @ 126..=0xFFFF => {
            out.push(126);
            out.extend_from_slice(&(len as u16).to_be_bytes());
        }
        len => {
            out.push(127);
            out.extend_from_slice(&(len as u64).to_be_bytes());
        }
    }
    out.extend_from_slice(payload);
}

/// Appends a close frame with `code` and no reason.
pub(crate) fn encode_close(out: &mut Vec<u8>, code: u16) {
    encode(out, OpCode::Close, &code.to_be_bytes());
}

/// Checks a client's close frame payload: empty, or a status code and a UTF-8 reason.
pub(crate) fn valid_close_payload(payload: &[u8]) -> bool {
    match payload {
        [] => true,
        [_] => false,
        [a, b, reason @ ..] => {
            let code = u16::from_be_bytes([*a, *b]);
            let code_ok = matches!(code, 1000..=1003 | 1007..=1014 | 3000..=4999);
            code_ok && std::str::from_utf8(reason).is_ok()
        }
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
            assert!(frame.fin);
            assert_eq!(frame.opcode, OpCode::Binary);
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
        // Too big, refused from the header alone.
        let mut head = masked(0x82, &[0; 200]);
        head.truncate(4);
        assert_eq!(parse(&mut head, 100).unwrap_err(), FrameError::TooBig);
    }

    #[test]
    fn encodes_unmasked_frames() {
        let mut out = Vec::new();
        encode(&mut out, OpCode::Text, b"hi");
        assert_eq!(out, [0x81, 2, b'h', b'i']);
        out.clear();
        encode(&mut out, OpCode::Binary, &[7; 300]);
        assert_eq!(&out[..4], &[0x82, 126, 1, 44]);
        assert_eq!(out.len(), 304);
        out.clear();
        encode_close(&mut out, close_code::NORMAL);
        assert_eq!(out, [0x88, 2, 0x03, 0xE8]);
    }

    #[test]
    fn checks_close_payloads() {
        assert!(valid_close_payload(b""));
        assert!(!valid_close_payload(&[3]));
        assert!(valid_close_payload(&[0x03, 0xE8, b'o', b'k']));
        assert!(!valid_close_payload(&[0x03, 0xEC]));
        assert!(!valid_close_payload(&[0x03, 0xE8, 0xFF]));
    }
}
