//! Shared harness code for the fuzz targets in `fuzz_targets/` (see docs/fuzzing.md).
//!
//! Stream targets read their input as one configuration byte followed by the bytes a client
//! would send. The configuration byte picks the size limit (low two bits) and seeds the
//! pseudo-random chunk sizes the stream is split into (high six bits), so the fuzzer chooses both
//! the bytes and where the transport cuts them.

use bytes::BytesMut;
use signalbox_protocol::{HubMessage, Protocol};

/// The size limit selected by the configuration byte: none, the default 32 KiB, or two small
/// limits that make the "too large" paths reachable with short inputs.
pub fn max_size(config: u8) -> Option<usize> {
    match config & 0b11 {
        0 => None,
        1 => Some(32 * 1024),
        2 => Some(16),
        _ => Some(200),
    }
}

/// Splits `bytes` into chunks of 1..=32 bytes chosen by a xorshift generator seeded from the high
/// six bits of `config` (seed 0 = one chunk holding everything).
pub fn chunks(config: u8, bytes: &[u8]) -> Vec<&[u8]> {
    let seed = u32::from(config >> 2);
    if seed == 0 {
        return vec![bytes];
    }
    let mut state = seed.wrapping_mul(0x9e37_79b9) | 1;
    let mut out = Vec::new();
    let mut rest = bytes;
    while !rest.is_empty() {
        state ^= state << 13;
        state ^= state >> 17;
        state ^= state << 5;
        let take = (state % 32) as usize + 1;
        let (head, tail) = rest.split_at(take.min(rest.len()));
        out.push(head);
        rest = tail;
    }
    out
}

/// What decoding a whole stream produced: the messages (re-encoded, so they can be compared),
/// whether decoding stopped at an error, and the undecoded bytes left when it did not.
#[derive(Debug, PartialEq, Eq)]
pub struct Outcome {
    /// Each decoded message, encoded again with the same protocol.
    pub messages: Vec<Vec<u8>>,
    /// The first decode error, as text.
    pub error: Option<String>,
    /// Bytes still buffered after the last message (only meaningful without an error).
    pub rest: Vec<u8>,
}

fn encode(protocol: Protocol, message: &HubMessage) -> Vec<u8> {
    match protocol.encode_to_bytes(message) {
        Ok(bytes) => bytes.to_vec(),
        Err(e) => panic!("a decoded {protocol} message does not encode again: {e} ({message:?})"),
    }
}

/// Feeds `chunks` one after the other into a buffer, decoding every complete message after each
/// chunk, like the server's read loop; stops at the first error.
pub fn decode_stream(protocol: Protocol, chunks: &[&[u8]], max: Option<usize>) -> Outcome {
    let mut buf = BytesMut::new();
    let mut messages = Vec::new();
    for chunk in chunks {
        buf.extend_from_slice(chunk);
        loop {
            match protocol.decode(&mut buf, max) {
                Ok(Some(message)) => {
                    check_message(protocol, &message);
                    messages.push(encode(protocol, &message));
                }
                Ok(None) => break,
                Err(e) => {
                    return Outcome {
                        messages,
                        error: Some(e.to_string()),
                        rest: Vec::new(),
                    };
                }
            }
        }
    }
    Outcome {
        messages,
        error: None,
        rest: buf.to_vec(),
    }
}

/// Properties of one decoded message:
///
/// * encoding it again and decoding that gives the same bytes (the codec is idempotent), and
/// * whenever it can be encoded in the other protocol, that protocol decodes it again, as one
///   message of the same type (what the server relays to a client of the other protocol, a
///   client of that protocol can read).
pub fn check_message(protocol: Protocol, message: &HubMessage) {
    let once = encode(protocol, message);
    let mut buf = BytesMut::from(&once[..]);
    let again = match protocol.decode(&mut buf, None) {
        Ok(Some(again)) => again,
        other => panic!("re-encoded {protocol} message does not decode: {other:?} ({once:?})"),
    };
    assert!(buf.is_empty(), "re-encoded message left bytes: {buf:?}");
    assert_eq!(
        encode(protocol, &again),
        once,
        "{protocol} encoding is not idempotent"
    );

    let other = match protocol {
        Protocol::Json => Protocol::MessagePack,
        Protocol::MessagePack => Protocol::Json,
    };
    if let Ok(bytes) = other.encode_to_bytes(message) {
        let mut buf = BytesMut::from(&bytes[..]);
        match other.decode(&mut buf, None) {
            Ok(Some(back)) => {
                assert_eq!(back.message_type(), message.message_type());
                assert!(buf.is_empty(), "{other} transcoding left bytes: {buf:?}");
            }
            result => panic!(
                "{protocol} message transcoded to {other} does not decode: {result:?} ({bytes:?})"
            ),
        }
    }
}

/// The whole stream target: decoding the chunks one by one must give the same result as
/// decoding everything at once, and every message must satisfy [`check_message`].
pub fn fuzz_decoder(protocol: Protocol, data: &[u8]) {
    let Some((&config, stream)) = data.split_first() else {
        return;
    };
    let max = max_size(config);
    let split = decode_stream(protocol, &chunks(config, stream), max);
    let whole = decode_stream(protocol, &[stream], max);
    assert_eq!(
        split, whole,
        "decoding in chunks differs from decoding at once"
    );
}
