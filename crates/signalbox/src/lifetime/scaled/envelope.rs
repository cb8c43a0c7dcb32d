//! The envelopes nodes exchange over the backplane, and their binary codec.
//!
//! # Layout
//!
//! Every envelope is one backplane message (the backplane frames it; there is no outer length).
//! Integers are big-endian. Three field shapes recur:
//!
//! * `u8`, `u64`: 1 and 8 bytes.
//! * *bytes*: a `u32` length `n`, then `n` bytes. A *string* is *bytes* holding UTF-8.
//! * *count*: a `u32` number of items, then the items. A decoder refuses a count larger than a
//!   quarter of the bytes left (every item takes at least four), so a count never makes it
//!   reserve more than the input justifies.
//!
//! | offset | size | field |
//! |---|---|---|
//! | 0 | 1 | version: `1` ([`VERSION`]). Anything else is refused as a whole ([`DecodeError::UnknownVersion`]): a node never guesses at a layout it does not know. |
//! | 1 | 1 | kind, one of the rows below |
//! | 2 | … | the kind's fields, in order |
//!
//! | kind | envelope | fields after the kind byte |
//! |---|---|---|
//! | `1` | send | origin node id (string); excluded connection ids (count of strings); JSON frame (bytes, empty if none); MessagePack frame (bytes, empty if none); then optionally the trace context: the byte `1`, a count ≥ 1 of pairs of strings (key, value: `traceparent`, `tracestate`). Nothing may follow; a decoder that finds no byte after the frames reads an untraced send. |
//! | `2` | group change | origin node id (string); request id (`u64`); action (`u8`: `1` add, `2` remove); group (string); connection id (string) |
//! | `3` | ack of a group change | request id (`u64`) |
//! | `4` | client-result invocation | origin node id (string); request id (`u64`); connection id (string); target method (string); arguments (count of pairs: JSON bytes, MessagePack bytes) |
//! | `5` | client-result answer | request id (`u64`); outcome (`u8`): `0` accepted (the owner sent the invocation; the result follows in a second answer), `1` JSON result (string), `2` MessagePack result (bytes), `3` error: error code (`u8`, below) then message (string) |
//! | `6` | abort the connection the channel names | nothing |
//! | `7` | authentication refresh | origin node id (string); request id (`u64`); connection id (string); user id flag (`u8`: `0` none, `1` a string follows); the user id (string, if flagged); JSON claims object (bytes) |
//! | `8` | answer to a refresh | request id (`u64`); status (`u8`: `0` applied, `1` connection not found, `2` the user would change) |
//!
//! Error codes of outcome `3`: `0` connection not found (the message is its id), `1`
//! disconnected, `2` the client answered with an error, `3` invalid result, `4` the target was not
//! a single connection, `5` the invocation could not be sent (also any unknown code).
//!
//! Bytes after the last field of kinds `2` to `8` are ignored. Request ids are chosen by the
//! origin node and only mean something to it; answers go to its `…:internal:ack:{node}` or
//! `…:internal:return:{node}` channel.

use bytes::Bytes;
use signalbox_protocol::{Headers, Payload};

use crate::lifetime::{ClientResultError, RefreshError};

/// The version byte leading every envelope this node writes and the only one it reads.
pub(super) const VERSION: u8 = 1;

/// Marks the optional trace context trailing a `Send` envelope.
const TRACE_CONTEXT: u8 = 1;

/// What a group-change envelope asks of the node owning the connection.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) enum GroupAction {
    Add,
    Remove,
}

/// One answer to a client-result invocation made on another node.
#[derive(Debug)]
pub(super) enum ReturnOutcome {
    /// The owning node has the connection and sent it the invocation.
    Accepted,
    /// The client's answer.
    Done(Result<Payload, ClientResultError>),
}

/// One message between nodes (see the module documentation for each kind's bytes).
#[derive(Debug)]
pub(super) enum Envelope {
    Send {
        origin: String,
        excluded: Vec<String>,
        json: Bytes,
        msgpack: Bytes,
        /// The publisher's trace context (`traceparent`, `tracestate`); empty when untraced.
        /// Optional on the wire: a trailing field that older nodes ignore.
        trace: Headers,
    },
    Group {
        origin: String,
        id: u64,
        action: GroupAction,
        group: String,
        connection_id: String,
    },
    Ack {
        id: u64,
    },
    Invoke {
        origin: String,
        id: u64,
        connection_id: String,
        target: String,
        args: Vec<(Bytes, Bytes)>,
    },
    Return {
        id: u64,
        outcome: ReturnOutcome,
    },
    Abort,
    /// An authentication refresh for a connection of another node (JSON claims).
    Refresh {
        origin: String,
        id: u64,
        connection_id: String,
        user_id: Option<String>,
        claims: Bytes,
    },
    /// The owner's answer to a [`Envelope::Refresh`].
    Refreshed {
        id: u64,
        status: u8,
    },
}

/// Why bytes from the backplane are not an envelope.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub(super) enum DecodeError {
    /// The version byte is not [`VERSION`]: a node speaking another layout (or not a signalbox
    /// envelope at all).
    #[error("envelope version {0} is not supported (this node reads version {VERSION})")]
    UnknownVersion(u8),
    /// The message is empty (not even a version byte).
    #[error("empty envelope")]
    Empty,
    /// The bytes do not follow the layout of their version.
    #[error("malformed envelope: {0}")]
    Malformed(&'static str),
}

struct Writer(Vec<u8>);

impl Writer {
    fn u8(&mut self, v: u8) {
        self.0.push(v);
    }
    fn u64(&mut self, v: u64) {
        self.0.extend_from_slice(&v.to_be_bytes());
    }
    fn bytes(&mut self, v: &[u8]) {
        let len = u32::try_from(v.len()).unwrap_or(u32::MAX);
        self.0.extend_from_slice(&len.to_be_bytes());
        self.0.extend_from_slice(&v[..len as usize]);
    }
    fn str(&mut self, v: &str) {
        self.bytes(v.as_bytes());
    }
    fn count(&mut self, n: usize) {
        let n = u32::try_from(n).unwrap_or(u32::MAX);
        self.0.extend_from_slice(&n.to_be_bytes());
    }
}

struct Reader {
    buf: Bytes,
}

impl Reader {
    fn take(&mut self, n: usize) -> Result<Bytes, DecodeError> {
        if self.buf.len() < n {
            return Err(DecodeError::Malformed("truncated envelope"));
        }
        Ok(self.buf.split_to(n))
    }
    fn u8(&mut self) -> Result<u8, DecodeError> {
        Ok(self.take(1)?[0])
    }
    fn u32(&mut self) -> Result<u32, DecodeError> {
        let b = self.take(4)?;
        Ok(u32::from_be_bytes([b[0], b[1], b[2], b[3]]))
    }
    fn u64(&mut self) -> Result<u64, DecodeError> {
        let b = self.take(8)?;
        let mut a = [0u8; 8];
        a.copy_from_slice(&b);
        Ok(u64::from_be_bytes(a))
    }
    fn bytes(&mut self) -> Result<Bytes, DecodeError> {
        let len = self.u32()? as usize;
        self.take(len)
    }
    fn string(&mut self) -> Result<String, DecodeError> {
        String::from_utf8(self.bytes()?.to_vec())
            .map_err(|_| DecodeError::Malformed("invalid UTF-8"))
    }
    fn count(&mut self) -> Result<usize, DecodeError> {
        let n = self.u32()? as usize;
        // Every item takes at least four bytes; refuse counts the buffer cannot hold.
        if n > self.buf.len() / 4 {
            return Err(DecodeError::Malformed("truncated envelope"));
        }
        Ok(n)
    }
}

const ERR_NOT_FOUND: u8 = 0;
const ERR_DISCONNECTED: u8 = 1;
const ERR_CLIENT: u8 = 2;
const ERR_INVALID_RESULT: u8 = 3;
const ERR_NOT_SINGLE: u8 = 4;
const ERR_SEND: u8 = 5;

const REFRESH_OK: u8 = 0;
const REFRESH_NOT_FOUND: u8 = 1;
const REFRESH_REJECTED: u8 = 2;

/// The status byte of a refresh answer for the owner's result.
pub(super) fn refresh_status(result: &Result<(), RefreshError>) -> u8 {
    match result {
        Ok(()) => REFRESH_OK,
        Err(RefreshError::PermissionChangeRejected) => REFRESH_REJECTED,
        Err(_) => REFRESH_NOT_FOUND,
    }
}

/// The result a refresh answer's status byte stands for (unknown statuses: not found).
pub(super) fn refresh_result(status: u8) -> Result<(), RefreshError> {
    match status {
        REFRESH_OK => Ok(()),
        REFRESH_REJECTED => Err(RefreshError::PermissionChangeRejected),
        _ => Err(RefreshError::NotFound),
    }
}

impl Envelope {
    /// The envelope's bytes (see the module documentation for the layout).
    pub(super) fn encode(&self) -> Bytes {
        let mut w = Writer(Vec::with_capacity(64));
        w.u8(VERSION);
        match self {
            Envelope::Send {
                origin,
                excluded,
                json,
                msgpack,
                trace,
            } => {
                w.u8(1);
                w.str(origin);
                w.count(excluded.len());
                for id in excluded.iter().take(u32::MAX as usize) {
                    w.str(id);
                }
                w.bytes(json);
                w.bytes(msgpack);
                if !trace.is_empty() {
                    w.u8(TRACE_CONTEXT);
                    w.count(trace.len());
                    for (key, value) in trace.iter().take(u32::MAX as usize) {
                        w.str(key);
                        w.str(value);
                    }
                }
            }
            Envelope::Group {
                origin,
                id,
                action,
                group,
                connection_id,
            } => {
                w.u8(2);
                w.str(origin);
                w.u64(*id);
                w.u8(match action {
                    GroupAction::Add => 1,
                    GroupAction::Remove => 2,
                });
                w.str(group);
                w.str(connection_id);
            }
            Envelope::Ack { id } => {
                w.u8(3);
                w.u64(*id);
            }
            Envelope::Invoke {
                origin,
                id,
                connection_id,
                target,
                args,
            } => {
                w.u8(4);
                w.str(origin);
                w.u64(*id);
                w.str(connection_id);
                w.str(target);
                w.count(args.len());
                for (json, msgpack) in args.iter().take(u32::MAX as usize) {
                    w.bytes(json);
                    w.bytes(msgpack);
                }
            }
            Envelope::Return { id, outcome } => {
                w.u8(5);
                w.u64(*id);
                match outcome {
                    ReturnOutcome::Accepted => w.u8(0),
                    ReturnOutcome::Done(Ok(payload)) => match payload {
                        Payload::MessagePack(bytes) => {
                            w.u8(2);
                            w.bytes(bytes);
                        }
                        other => {
                            let mut json = Vec::new();
                            match other.write_json(&mut json) {
                                Ok(()) => {
                                    w.u8(1);
                                    w.bytes(&json);
                                }
                                Err(error) => {
                                    w.u8(3);
                                    w.u8(ERR_INVALID_RESULT);
                                    w.str(&error.to_string());
                                }
                            }
                        }
                    },
                    ReturnOutcome::Done(Err(error)) => {
                        w.u8(3);
                        let (kind, text) = match error {
                            ClientResultError::NotFound(id) => (ERR_NOT_FOUND, id.as_str()),
                            ClientResultError::Disconnected => (ERR_DISCONNECTED, ""),
                            ClientResultError::Client(m) => (ERR_CLIENT, m.as_str()),
                            ClientResultError::InvalidResult(m) => (ERR_INVALID_RESULT, m.as_str()),
                            ClientResultError::NotSingleConnection => (ERR_NOT_SINGLE, ""),
                            ClientResultError::Send(m) => (ERR_SEND, m.as_str()),
                        };
                        w.u8(kind);
                        w.str(text);
                    }
                }
            }
            Envelope::Abort => w.u8(6),
            Envelope::Refresh {
                origin,
                id,
                connection_id,
                user_id,
                claims,
            } => {
                w.u8(7);
                w.str(origin);
                w.u64(*id);
                w.str(connection_id);
                match user_id {
                    Some(user_id) => {
                        w.u8(1);
                        w.str(user_id);
                    }
                    None => w.u8(0),
                }
                w.bytes(claims);
            }
            Envelope::Refreshed { id, status } => {
                w.u8(8);
                w.u64(*id);
                w.u8(*status);
            }
        }
        Bytes::from(w.0)
    }

    /// Reads an envelope; never panics and allocates at most what the input's lengths, checked
    /// against the bytes left, justify.
    pub(super) fn decode(payload: &Bytes) -> Result<Envelope, DecodeError> {
        let mut r = Reader {
            buf: payload.clone(),
        };
        match r.u8() {
            Ok(VERSION) => {}
            Ok(version) => return Err(DecodeError::UnknownVersion(version)),
            Err(_) => return Err(DecodeError::Empty),
        }
        let envelope = match r.u8()? {
            1 => {
                let origin = r.string()?;
                let n = r.count()?;
                let excluded = (0..n).map(|_| r.string()).collect::<Result<_, _>>()?;
                let json = r.bytes()?;
                let msgpack = r.bytes()?;
                // Envelopes of older nodes end here.
                let trace = if r.buf.is_empty() {
                    Headers::new()
                } else {
                    if r.u8()? != TRACE_CONTEXT {
                        return Err(DecodeError::Malformed("unknown trailing field"));
                    }
                    let n = r.count()?;
                    if n == 0 {
                        return Err(DecodeError::Malformed("empty trace context"));
                    }
                    (0..n)
                        .map(|_| Ok((r.string()?, r.string()?)))
                        .collect::<Result<_, DecodeError>>()?
                };
                Envelope::Send {
                    origin,
                    excluded,
                    json,
                    msgpack,
                    trace,
                }
            }
            2 => Envelope::Group {
                origin: r.string()?,
                id: r.u64()?,
                action: match r.u8()? {
                    1 => GroupAction::Add,
                    2 => GroupAction::Remove,
                    _ => return Err(DecodeError::Malformed("unknown group action")),
                },
                group: r.string()?,
                connection_id: r.string()?,
            },
            3 => Envelope::Ack { id: r.u64()? },
            4 => {
                let origin = r.string()?;
                let id = r.u64()?;
                let connection_id = r.string()?;
                let target = r.string()?;
                let n = r.count()?;
                let args = (0..n)
                    .map(|_| Ok((r.bytes()?, r.bytes()?)))
                    .collect::<Result<_, DecodeError>>()?;
                Envelope::Invoke {
                    origin,
                    id,
                    connection_id,
                    target,
                    args,
                }
            }
            5 => {
                let id = r.u64()?;
                let outcome = match r.u8()? {
                    0 => ReturnOutcome::Accepted,
                    1 => {
                        let text = r.string()?;
                        ReturnOutcome::Done(
                            Payload::from_json_text(text)
                                .map_err(|e| ClientResultError::InvalidResult(e.to_string())),
                        )
                    }
                    2 => ReturnOutcome::Done(Ok(Payload::MessagePack(r.bytes()?))),
                    3 => {
                        let kind = r.u8()?;
                        let text = r.string()?;
                        ReturnOutcome::Done(Err(match kind {
                            ERR_NOT_FOUND => ClientResultError::NotFound(text),
                            ERR_DISCONNECTED => ClientResultError::Disconnected,
                            ERR_CLIENT => ClientResultError::Client(text),
                            ERR_INVALID_RESULT => ClientResultError::InvalidResult(text),
                            ERR_NOT_SINGLE => ClientResultError::NotSingleConnection,
                            _ => ClientResultError::Send(text),
                        }))
                    }
                    _ => return Err(DecodeError::Malformed("unknown return outcome")),
                };
                Envelope::Return { id, outcome }
            }
            6 => Envelope::Abort,
            7 => Envelope::Refresh {
                origin: r.string()?,
                id: r.u64()?,
                connection_id: r.string()?,
                user_id: match r.u8()? {
                    0 => None,
                    1 => Some(r.string()?),
                    _ => return Err(DecodeError::Malformed("invalid user id flag")),
                },
                claims: r.bytes()?,
            },
            8 => Envelope::Refreshed {
                id: r.u64()?,
                status: r.u8()?,
            },
            _ => return Err(DecodeError::Malformed("unknown envelope kind")),
        };
        Ok(envelope)
    }
}

/// What [`fuzz_round_trip`] found.
#[doc(hidden)]
#[derive(Debug)]
pub struct EnvelopeRoundTrip {
    /// The decoded envelope, `Debug`-formatted.
    pub decoded: String,
    /// Its encoding.
    pub encoded: Vec<u8>,
    /// Decoding [`encoded`](Self::encoded) again, `Debug`-formatted (or the error).
    pub decoded_again: Result<String, String>,
    /// Encoding that again (empty if it did not decode).
    pub encoded_again: Vec<u8>,
}

/// Fuzzing entry point, not part of the API: decodes `bytes` as an envelope and, if it decodes,
/// encodes it and decodes and encodes the result again. `Err` holds the decode error.
#[doc(hidden)]
pub fn fuzz_round_trip(bytes: &[u8]) -> Result<EnvelopeRoundTrip, String> {
    let envelope = Envelope::decode(&Bytes::copy_from_slice(bytes)).map_err(|e| e.to_string())?;
    let encoded = envelope.encode();
    let (decoded_again, encoded_again) = match Envelope::decode(&encoded) {
        Ok(again) => (Ok(format!("{again:?}")), again.encode().to_vec()),
        Err(error) => (Err(error.to_string()), Vec::new()),
    };
    Ok(EnvelopeRoundTrip {
        decoded: format!("{envelope:?}"),
        encoded: encoded.to_vec(),
        decoded_again,
        encoded_again,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn envelopes_round_trip() {
        let cases = vec![
            Envelope::Send {
                origin: "n1".into(),
                excluded: vec!["a".into(), "b".into()],
                json: Bytes::from_static(b"{}\x1e"),
                msgpack: Bytes::from_static(&[1, 2, 3]),
                trace: Headers::new(),
            },
            Envelope::Group {
                origin: "n1".into(),
                id: 7,
                action: GroupAction::Remove,
                group: "g:1".into(),
                connection_id: "c".into(),
            },
            Envelope::Ack { id: u64::MAX },
            Envelope::Invoke {
                origin: "n".into(),
                id: 3,
                connection_id: "c".into(),
                target: "T".into(),
                args: vec![(Bytes::from_static(b"1"), Bytes::from_static(&[1]))],
            },
            Envelope::Return {
                id: 3,
                outcome: ReturnOutcome::Done(Err(ClientResultError::Client("no".into()))),
            },
            Envelope::Abort,
            Envelope::Refresh {
                origin: "n".into(),
                id: 9,
                connection_id: "c".into(),
                user_id: Some("alice".into()),
                claims: Bytes::from_static(br#"{"sub":"alice"}"#),
            },
            Envelope::Refresh {
                origin: "n".into(),
                id: 10,
                connection_id: "c".into(),
                user_id: None,
                claims: Bytes::from_static(b"{}"),
            },
            Envelope::Refreshed { id: 9, status: 2 },
        ];
        for envelope in cases {
            let bytes = envelope.encode();
            let back = Envelope::decode(&bytes).unwrap();
            assert_eq!(format!("{envelope:?}"), format!("{back:?}"));
            for cut in 0..bytes.len() {
                assert!(
                    Envelope::decode(&bytes.slice(..cut)).is_err(),
                    "cut at {cut}"
                );
            }
        }
    }

    fn send_envelope(trace: Headers) -> Envelope {
        Envelope::Send {
            origin: "n1".into(),
            excluded: vec!["a".into()],
            json: Bytes::from_static(b"{}\x1e"),
            msgpack: Bytes::from_static(&[1, 2, 3]),
            trace,
        }
    }

    #[test]
    fn traced_send_envelopes() {
        let trace: Headers = [
            (
                "traceparent".to_owned(),
                "00-0af7651916cd43dd8448eb211c80319c-b7ad6b7169203331-01".to_owned(),
            ),
            ("tracestate".to_owned(), "congo=t61rcWkgMzE".to_owned()),
        ]
        .into();
        let traced = send_envelope(trace).encode();
        let untraced = send_envelope(Headers::new()).encode();
        assert!(traced.starts_with(&untraced), "the trace context trails");
        let back = Envelope::decode(&traced).unwrap();
        assert_eq!(
            format!("{back:?}"),
            format!("{:?}", send_envelope(trace_of(&back)))
        );
        assert_eq!(trace_of(&back).len(), 2);
        // An envelope of an older node (no trailing field) still decodes, untraced.
        let old = Envelope::decode(&untraced).unwrap();
        assert!(trace_of(&old).is_empty());
        // Any other cut of the trailing field is an error, as are unknown trailing fields.
        for cut in untraced.len() + 1..traced.len() {
            assert!(
                Envelope::decode(&traced.slice(..cut)).is_err(),
                "cut at {cut}"
            );
        }
        let mut unknown = untraced.to_vec();
        unknown.push(9);
        assert!(Envelope::decode(&Bytes::from(unknown)).is_err());
        let mut empty = untraced.to_vec();
        empty.extend_from_slice(&[TRACE_CONTEXT, 0, 0, 0, 0]);
        assert!(Envelope::decode(&Bytes::from(empty)).is_err());
    }

    fn trace_of(envelope: &Envelope) -> Headers {
        match envelope {
            Envelope::Send { trace, .. } => trace.clone(),
            _ => Headers::new(),
        }
    }

    #[test]
    fn unknown_versions_are_refused_as_such() {
        let mut bytes = Envelope::Ack { id: 1 }.encode().to_vec();
        for version in [0, 2, 255] {
            bytes[0] = version;
            let error = Envelope::decode(&Bytes::from(bytes.clone())).unwrap_err();
            assert_eq!(error, DecodeError::UnknownVersion(version));
            assert_eq!(
                error.to_string(),
                format!("envelope version {version} is not supported (this node reads version 1)")
            );
        }
        assert_eq!(
            Envelope::decode(&Bytes::new()).unwrap_err(),
            DecodeError::Empty
        );
        // Only the first byte decides: version 2 with a version-1 body is still refused.
        assert!(matches!(
            Envelope::decode(&Bytes::from_static(&[2, 3, 0, 0, 0, 0, 0, 0, 0, 1])),
            Err(DecodeError::UnknownVersion(2))
        ));
    }

    #[test]
    fn counts_larger_than_the_input_are_refused_before_allocating() {
        // A send envelope claiming 2^32 - 1 excluded ids in a few bytes.
        let mut bytes = vec![VERSION, 1, 0, 0, 0, 1, b'n'];
        bytes.extend_from_slice(&u32::MAX.to_be_bytes());
        bytes.extend_from_slice(&[0; 8]);
        assert_eq!(
            Envelope::decode(&Bytes::from(bytes)).unwrap_err(),
            DecodeError::Malformed("truncated envelope")
        );
        // A string claiming 4 GiB.
        let mut bytes = vec![VERSION, 2];
        bytes.extend_from_slice(&u32::MAX.to_be_bytes());
        assert!(Envelope::decode(&Bytes::from(bytes)).is_err());
    }

    /// Writes a seed corpus for the `envelope` fuzz target (one valid encoding of each kind and
    /// variant) when `SIGNALBOX_WRITE_ENVELOPE_CORPUS` names a directory:
    /// `SIGNALBOX_WRITE_ENVELOPE_CORPUS=$PWD/fuzz/corpus/envelope cargo test -p signalbox --lib envelope_seed_corpus`.
    #[test]
    fn envelope_seed_corpus() {
        let seeds = seed_envelopes();
        for envelope in &seeds {
            let round = fuzz_round_trip(&envelope.encode()).unwrap();
            assert_eq!(round.decoded_again, Ok(round.decoded.clone()));
            assert_eq!(round.encoded_again, round.encoded);
        }
        let Some(dir) = std::env::var_os("SIGNALBOX_WRITE_ENVELOPE_CORPUS") else {
            return;
        };
        let dir = std::path::PathBuf::from(dir);
        std::fs::create_dir_all(&dir).unwrap();
        for (n, envelope) in seeds.iter().enumerate() {
            std::fs::write(dir.join(format!("seed-{n:02}")), envelope.encode()).unwrap();
        }
    }

    fn seed_envelopes() -> Vec<Envelope> {
        let trace: Headers = [(
            "traceparent".to_owned(),
            "00-0af7651916cd43dd8448eb211c80319c-b7ad6b7169203331-01".to_owned(),
        )]
        .into();
        let mut seeds = vec![
            send_envelope(Headers::new()),
            send_envelope(trace),
            Envelope::Group {
                origin: "n1".into(),
                id: 1,
                action: GroupAction::Add,
                group: "room".into(),
                connection_id: "c1".into(),
            },
            Envelope::Group {
                origin: "n1".into(),
                id: 2,
                action: GroupAction::Remove,
                group: "room".into(),
                connection_id: "c1".into(),
            },
            Envelope::Ack { id: 2 },
            Envelope::Invoke {
                origin: "n1".into(),
                id: 3,
                connection_id: "c1".into(),
                target: "Ask".into(),
                args: vec![(Bytes::from_static(b"42"), Bytes::from_static(&[42]))],
            },
            Envelope::Return {
                id: 3,
                outcome: ReturnOutcome::Accepted,
            },
            Envelope::Return {
                id: 3,
                outcome: ReturnOutcome::Done(
                    Payload::from_json_text("{\"a\":1}".to_owned())
                        .map_err(|e| ClientResultError::InvalidResult(e.to_string())),
                ),
            },
            Envelope::Return {
                id: 3,
                outcome: ReturnOutcome::Done(Ok(Payload::MessagePack(Bytes::from_static(&[0xc3])))),
            },
            Envelope::Abort,
            Envelope::Refresh {
                origin: "n1".into(),
                id: 4,
                connection_id: "c1".into(),
                user_id: Some("alice".into()),
                claims: Bytes::from_static(br#"{"sub":"alice"}"#),
            },
            Envelope::Refreshed { id: 4, status: 0 },
        ];
        for error in [
            ClientResultError::NotFound("c1".into()),
            ClientResultError::Disconnected,
            ClientResultError::Client("no".into()),
            ClientResultError::InvalidResult("bad".into()),
            ClientResultError::NotSingleConnection,
            ClientResultError::Send("down".into()),
        ] {
            seeds.push(Envelope::Return {
                id: 5,
                outcome: ReturnOutcome::Done(Err(error)),
            });
        }
        seeds
    }
}
