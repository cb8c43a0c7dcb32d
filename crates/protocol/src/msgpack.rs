//! The `messagepack` hub protocol (spec §5.4): each message is a VarInt length prefix followed
//! by one MessagePack array whose first element is the message type.
//!
//! The reader walks the body with a bounds-checked cursor and captures every argument, item
//! and result as the exact bytes of that value ([`Payload::MessagePack`]); it never allocates
//! based on an untrusted length without first checking it against the bytes actually present.

use std::fmt::Display;

use bytes::{Buf, Bytes, BytesMut};
use rmp::Marker;
use rmp::encode as enc;

use crate::framing::{MAX_VARINT_LENGTH, read_varint, write_varint};
use crate::message::{
    Ack, CancelInvocation, Close, Completion, CompletionOutcome, Headers, HubMessage, Invocation,
    Sequence, StreamInvocation, StreamItem,
};
use crate::payload::Payload;
use crate::protocol::{DecodeError, EncodeError};

const RESULT_KIND_ERROR: u8 = 1;
const RESULT_KIND_VOID: u8 = 2;
const RESULT_KIND_NON_VOID: u8 = 3;

// ---------------------------------------------------------------------------------------------
// Writing

fn write_err(e: impl Display) -> EncodeError {
    EncodeError::MessagePack(e.to_string())
}

fn len_u32(len: usize) -> Result<u32, EncodeError> {
    u32::try_from(len)
        .map_err(|_| EncodeError::MessagePack(format!("collection too large ({len} elements)")))
}

fn write_array_len(out: &mut Vec<u8>, len: usize) -> Result<(), EncodeError> {
    enc::write_array_len(out, len_u32(len)?)
        .map(drop)
        .map_err(write_err)
}

fn write_uint(out: &mut Vec<u8>, n: u64) -> Result<(), EncodeError> {
    enc::write_uint(out, n).map(drop).map_err(write_err)
}

fn write_str(out: &mut Vec<u8>, s: &str) -> Result<(), EncodeError> {
    enc::write_str(out, s).map_err(write_err)
}

fn write_headers(out: &mut Vec<u8>, headers: &Headers) -> Result<(), EncodeError> {
    enc::write_map_len(out, len_u32(headers.len())?).map_err(write_err)?;
    for (key, value) in headers {
        write_str(out, key)?;
        write_str(out, value)?;
    }
    Ok(())
}

fn write_call(
    out: &mut Vec<u8>,
    target: &str,
    arguments: &[Payload],
    stream_ids: &[String],
) -> Result<(), EncodeError> {
    write_str(out, target)?;
    write_array_len(out, arguments.len())?;
    for argument in arguments {
        argument.write_msgpack(out)?;
    }
    write_array_len(out, stream_ids.len())?;
    for id in stream_ids {
        write_str(out, id)?;
    }
    Ok(())
}

fn write_body(message: &HubMessage, out: &mut Vec<u8>) -> Result<(), EncodeError> {
    let kind = u64::from(message.message_type());
    match message {
        HubMessage::Invocation(m) => {
            write_array_len(out, 6)?;
            write_uint(out, kind)?;
            write_headers(out, &m.headers)?;
            match m.invocation_id.as_deref().filter(|id| !id.is_empty()) {
                Some(id) => write_str(out, id)?,
                None => enc::write_nil(out).map_err(write_err)?,
            }
            write_call(out, &m.target, &m.arguments, &m.stream_ids)?;
        }
        HubMessage::StreamInvocation(m) => {
            write_array_len(out, 6)?;
            write_uint(out, kind)?;
            write_headers(out, &m.headers)?;
            write_str(out, &m.invocation_id)?;
            write_call(out, &m.target, &m.arguments, &m.stream_ids)?;
        }
        HubMessage::StreamItem(m) => {
            write_array_len(out, 4)?;
            write_uint(out, kind)?;
            write_headers(out, &m.headers)?;
            write_str(out, &m.invocation_id)?;
            m.item.write_msgpack(out)?;
        }
        HubMessage::Completion(m) => {
            let len = if matches!(m.outcome, CompletionOutcome::Void) {
                4
            } else {
                5
            };
            write_array_len(out, len)?;
            write_uint(out, kind)?;
            write_headers(out, &m.headers)?;
            write_str(out, &m.invocation_id)?;
            match &m.outcome {
                CompletionOutcome::Error(error) => {
                    write_uint(out, u64::from(RESULT_KIND_ERROR))?;
                    write_str(out, error)?;
                }
                CompletionOutcome::Void => write_uint(out, u64::from(RESULT_KIND_VOID))?,
                CompletionOutcome::Result(result) => {
                    write_uint(out, u64::from(RESULT_KIND_NON_VOID))?;
                    result.write_msgpack(out)?;
                }
            }
        }
        HubMessage::CancelInvocation(m) => {
            write_array_len(out, 3)?;
            write_uint(out, kind)?;
            write_headers(out, &m.headers)?;
            write_str(out, &m.invocation_id)?;
        }
        HubMessage::Ping => {
            write_array_len(out, 1)?;
            write_uint(out, kind)?;
        }
        HubMessage::Close(m) => {
            write_array_len(out, 3)?;
            write_uint(out, kind)?;
            // Like .NET, an empty error is written as nil.
            match m.error.as_deref().filter(|e| !e.is_empty()) {
                Some(error) => write_str(out, error)?,
                None => enc::write_nil(out).map_err(write_err)?,
            }
            enc::write_bool(out, m.allow_reconnect).map_err(write_err)?;
        }
        HubMessage::Ack(Ack { sequence_id }) | HubMessage::Sequence(Sequence { sequence_id }) => {
            write_array_len(out, 2)?;
            write_uint(out, kind)?;
            write_uint(out, *sequence_id)?;
        }
    }
    Ok(())
}

/// Appends `message` as VarInt length + MessagePack body. May leave partial output on error.
pub(crate) fn encode(message: &HubMessage, out: &mut Vec<u8>) -> Result<(), EncodeError> {
    let start = out.len();
    write_body(message, out)?;
    let body_len = out.len() - start;
    if body_len > MAX_VARINT_LENGTH {
        return Err(EncodeError::MessagePack(
            "Messages over 2GB in size are not supported.".to_owned(),
        ));
    }
    let mut prefix = Vec::with_capacity(5);
    write_varint(body_len, &mut prefix);
    out.splice(start..start, prefix);
    Ok(())
}

// ---------------------------------------------------------------------------------------------
// Reading

type ReadResult<T> = Result<T, DecodeError>;

fn read_err(msg: impl Into<String>) -> DecodeError {
    DecodeError::MessagePack(msg.into())
}

fn truncated() -> DecodeError {
    read_err("Unexpected end of message data.")
}

/// A bounds-checked cursor over one message body.
struct Reader<'a> {
    buf: &'a [u8],
    pos: usize,
}

impl<'a> Reader<'a> {
    fn new(buf: &'a [u8]) -> Self {
        Reader { buf, pos: 0 }
    }

    fn remaining(&self) -> usize {
        self.buf.len().saturating_sub(self.pos)
    }

    fn take(&mut self, n: usize) -> ReadResult<&'a [u8]> {
        let end = self.pos.checked_add(n).ok_or_else(truncated)?;
        let bytes = self.buf.get(self.pos..end).ok_or_else(truncated)?;
        self.pos = end;
        Ok(bytes)
    }

    fn take_array<const N: usize>(&mut self) -> ReadResult<[u8; N]> {
        let bytes = self.take(N)?;
        let mut array = [0u8; N];
        array.copy_from_slice(bytes);
        Ok(array)
    }

    fn u8(&mut self) -> ReadResult<u8> {
        Ok(self.take_array::<1>()?[0])
    }

    fn u16(&mut self) -> ReadResult<u16> {
        Ok(u16::from_be_bytes(self.take_array()?))
    }

    fn u32(&mut self) -> ReadResult<u32> {
        Ok(u32::from_be_bytes(self.take_array()?))
    }

    fn marker(&mut self) -> ReadResult<Marker> {
        Ok(Marker::from_u8(self.u8()?))
    }

    fn peek_marker(&self) -> ReadResult<Marker> {
        self.buf
            .get(self.pos)
            .map(|&b| Marker::from_u8(b))
            .ok_or_else(truncated)
    }

    fn array_len(&mut self, field: &str) -> ReadResult<usize> {
        let len = match self.marker()? {
            Marker::FixArray(n) => usize::from(n),
            Marker::Array16 => usize::from(self.u16()?),
            Marker::Array32 => self.u32()? as usize,
            other => {
                return Err(read_err(format!(
                    "Reading array length for '{field}' failed (found {other:?})."
                )));
            }
        };
        // Every element needs at least one byte.
        if len > self.remaining() {
            return Err(truncated());
        }
        Ok(len)
    }

    /// A map header; `nil` counts as an empty map.
    fn map_len_or_nil(&mut self, field: &str) -> ReadResult<usize> {
        let len = match self.marker()? {
            Marker::Null => 0,
            Marker::FixMap(n) => usize::from(n),
            Marker::Map16 => usize::from(self.u16()?),
            Marker::Map32 => self.u32()? as usize,
            other => {
                return Err(read_err(format!(
                    "Reading map length for '{field}' failed (found {other:?})."
                )));
            }
        };
        if len > self.remaining() / 2 {
            return Err(truncated());
        }
        Ok(len)
    }

    /// Any integer encoding.
    fn int(&mut self, field: &str) -> ReadResult<i128> {
        Ok(match self.marker()? {
            Marker::FixPos(n) => i128::from(n),
            Marker::FixNeg(n) => i128::from(n),
            Marker::U8 => i128::from(self.u8()?),
            Marker::U16 => i128::from(self.u16()?),
            Marker::U32 => i128::from(self.u32()?),
            Marker::U64 => i128::from(u64::from_be_bytes(self.take_array()?)),
            Marker::I8 => i128::from(i8::from_be_bytes(self.take_array()?)),
            Marker::I16 => i128::from(i16::from_be_bytes(self.take_array()?)),
            Marker::I32 => i128::from(i32::from_be_bytes(self.take_array()?)),
            Marker::I64 => i128::from(i64::from_be_bytes(self.take_array()?)),
            other => {
                return Err(read_err(format!(
                    "Reading '{field}' as Int32 failed (found {other:?})."
                )));
            }
        })
    }

    /// A string, or `None` for `nil`.
    fn str_or_nil(&mut self, field: &str) -> ReadResult<Option<&'a str>> {
        let len = match self.marker()? {
            Marker::Null => return Ok(None),
            Marker::FixStr(n) => usize::from(n),
            Marker::Str8 => usize::from(self.u8()?),
            Marker::Str16 => usize::from(self.u16()?),
            Marker::Str32 => self.u32()? as usize,
            other => {
                return Err(read_err(format!(
                    "Reading '{field}' as String failed (found {other:?})."
                )));
            }
        };
        let bytes = self.take(len)?;
        std::str::from_utf8(bytes).map(Some).map_err(|_| {
            read_err(format!(
                "Reading '{field}' as String failed (invalid UTF-8)."
            ))
        })
    }

    /// A non-empty string (`nil` and `""` are errors, like .NET's `ThrowIfNullOrEmpty`).
    fn required_str(&mut self, field: &str) -> ReadResult<&'a str> {
        match self.str_or_nil(field)? {
            Some(s) if !s.is_empty() => Ok(s),
            _ => Err(DecodeError::Invalid(format!("Null or empty {field}."))),
        }
    }

    fn bool_or_nil(&mut self, field: &str) -> ReadResult<bool> {
        match self.marker()? {
            Marker::True => Ok(true),
            Marker::False | Marker::Null => Ok(false),
            other => Err(read_err(format!(
                "Reading '{field}' as Boolean failed (found {other:?})."
            ))),
        }
    }

    /// Skips one complete value (iteratively, so deep nesting cannot overflow the stack).
    fn skip_value(&mut self) -> ReadResult<()> {
        let mut pending: u64 = 1;
        while pending > 0 {
            pending -= 1;
            let (skip, children): (usize, u64) = match self.marker()? {
                Marker::FixPos(_)
                | Marker::FixNeg(_)
                | Marker::Null
                | Marker::True
                | Marker::False => (0, 0),
                Marker::U8 | Marker::I8 => (1, 0),
                Marker::U16 | Marker::I16 => (2, 0),
                Marker::U32 | Marker::I32 | Marker::F32 => (4, 0),
                Marker::U64 | Marker::I64 | Marker::F64 => (8, 0),
                Marker::FixStr(n) => (usize::from(n), 0),
                Marker::Str8 | Marker::Bin8 => (usize::from(self.u8()?), 0),
                Marker::Str16 | Marker::Bin16 => (usize::from(self.u16()?), 0),
                Marker::Str32 | Marker::Bin32 => (self.u32()? as usize, 0),
                Marker::FixArray(n) => (0, u64::from(n)),
                Marker::Array16 => (0, u64::from(self.u16()?)),
                Marker::Array32 => (0, u64::from(self.u32()?)),
                Marker::FixMap(n) => (0, 2 * u64::from(n)),
                Marker::Map16 => (0, 2 * u64::from(self.u16()?)),
                Marker::Map32 => (0, 2 * u64::from(self.u32()?)),
                Marker::FixExt1 => (2, 0),
                Marker::FixExt2 => (3, 0),
                Marker::FixExt4 => (5, 0),
                Marker::FixExt8 => (9, 0),
                Marker::FixExt16 => (17, 0),
                Marker::Ext8 => (usize::from(self.u8()?) + 1, 0),
                Marker::Ext16 => (usize::from(self.u16()?) + 1, 0),
                Marker::Ext32 => ((self.u32()? as usize).saturating_add(1), 0),
                Marker::Reserved => return Err(read_err("Invalid MessagePack marker 0xc1.")),
            };
            self.take(skip)?;
            pending += children;
            // Every pending value needs at least one more byte.
            if pending > self.remaining() as u64 {
                return Err(truncated());
            }
        }
        Ok(())
    }

    /// The exact bytes of the next value, copied into a [`Payload::MessagePack`].
    fn payload(&mut self) -> ReadResult<Payload> {
        let start = self.pos;
        self.skip_value()?;
        let bytes = self.buf.get(start..self.pos).ok_or_else(truncated)?;
        Ok(Payload::MessagePack(Bytes::copy_from_slice(bytes)))
    }

    fn headers(&mut self) -> ReadResult<Headers> {
        let count = self.map_len_or_nil("headers")?;
        let mut headers = Headers::new();
        for _ in 0..count {
            let key = self.str_or_nil("headers key")?.unwrap_or_default();
            let value = self.str_or_nil("headers value")?.unwrap_or_default();
            headers.insert(key.to_owned(), value.to_owned());
        }
        Ok(headers)
    }

    fn arguments(&mut self) -> ReadResult<Vec<Payload>> {
        let count = self.array_len("arguments")?;
        let mut arguments = Vec::with_capacity(count);
        for _ in 0..count {
            arguments.push(self.payload()?);
        }
        Ok(arguments)
    }

    /// Stream ids; `nil` counts as none.
    fn stream_ids(&mut self) -> ReadResult<Vec<String>> {
        if self.peek_marker()? == Marker::Null {
            self.pos += 1;
            return Ok(Vec::new());
        }
        let count = self.array_len("streamIds")?;
        let mut ids = Vec::with_capacity(count);
        for _ in 0..count {
            ids.push(self.required_str("value in streamIds")?.to_owned());
        }
        Ok(ids)
    }
}

fn need(items: usize, min: usize, name: &str) -> ReadResult<()> {
    if items < min {
        return Err(DecodeError::Invalid(format!(
            "Invalid payload for {name} message."
        )));
    }
    Ok(())
}

/// Parses one message body. `Ok(None)` = unknown message type.
fn parse_body(body: &[u8]) -> ReadResult<Option<HubMessage>> {
    let mut r = Reader::new(body);
    let items = r.array_len("message")?;
    if items == 0 {
        return Err(DecodeError::Invalid(
            "Invalid payload: empty message array.".to_owned(),
        ));
    }
    let kind = r.int("messageType")?;
    let message = match kind {
        1 => {
            need(items, 5, "Invocation")?;
            let headers = r.headers()?;
            let invocation_id = r
                .str_or_nil("invocationId")?
                .filter(|id| !id.is_empty())
                .map(str::to_owned);
            let target = r.required_str("target for Invocation message")?.to_owned();
            let arguments = r.arguments()?;
            let stream_ids = if items > 5 {
                r.stream_ids()?
            } else {
                Vec::new()
            };
            HubMessage::Invocation(Invocation {
                headers,
                invocation_id,
                target,
                arguments,
                stream_ids,
            })
        }
        2 => {
            need(items, 4, "StreamItem")?;
            let headers = r.headers()?;
            let invocation_id = r
                .required_str("invocation ID for StreamItem message")?
                .to_owned();
            let item = r.payload()?;
            HubMessage::StreamItem(StreamItem {
                headers,
                invocation_id,
                item,
            })
        }
        3 => {
            need(items, 4, "Completion")?;
            let headers = r.headers()?;
            let invocation_id = r
                .required_str("invocation ID for Completion message")?
                .to_owned();
            let outcome = match u8::try_from(r.int("resultKind")?) {
                Ok(RESULT_KIND_ERROR) => {
                    need(items, 5, "Completion")?;
                    CompletionOutcome::Error(r.str_or_nil("error")?.unwrap_or_default().to_owned())
                }
                Ok(RESULT_KIND_VOID) => CompletionOutcome::Void,
                Ok(RESULT_KIND_NON_VOID) => {
                    need(items, 5, "Completion")?;
                    CompletionOutcome::Result(r.payload()?)
                }
                _ => {
                    return Err(DecodeError::Invalid(
                        "Invalid invocation result kind.".to_owned(),
                    ));
                }
            };
            HubMessage::Completion(Completion {
                headers,
                invocation_id,
                outcome,
            })
        }
        4 => {
            need(items, 5, "StreamInvocation")?;
            let headers = r.headers()?;
            let invocation_id = r
                .required_str("invocation ID for StreamInvocation message")?
                .to_owned();
            let target = r
                .required_str("target for StreamInvocation message")?
                .to_owned();
            let arguments = r.arguments()?;
            let stream_ids = if items > 5 {
                r.stream_ids()?
            } else {
                Vec::new()
            };
            HubMessage::StreamInvocation(StreamInvocation {
                headers,
                invocation_id,
                target,
                arguments,
                stream_ids,
            })
        }
        5 => {
            need(items, 3, "CancelInvocation")?;
            let headers = r.headers()?;
            let invocation_id = r
                .required_str("invocation ID for CancelInvocation message")?
                .to_owned();
            HubMessage::CancelInvocation(CancelInvocation {
                headers,
                invocation_id,
            })
        }
        6 => HubMessage::Ping,
        7 => {
            need(items, 2, "Close")?;
            let error = r.str_or_nil("error")?.map(str::to_owned);
            let allow_reconnect = if items > 2 {
                r.bool_or_nil("allowReconnect")?
            } else {
                false
            };
            HubMessage::Close(Close {
                error,
                allow_reconnect,
            })
        }
        8 | 9 => {
            need(items, 2, if kind == 8 { "Ack" } else { "Sequence" })?;
            let sequence_id = u64::try_from(r.int("sequenceId")?).map_err(|_| {
                DecodeError::Invalid("Invalid sequenceId: negative or too large.".to_owned())
            })?;
            if kind == 8 {
                HubMessage::Ack(Ack { sequence_id })
            } else {
                HubMessage::Sequence(Sequence { sequence_id })
            }
        }
        // Future protocol versions may add message types; they are ignored.
        _ => return Ok(None),
    };
    Ok(Some(message))
}

/// Removes the first complete, known message from `buf` (see [`crate::Protocol::decode`]).
pub(crate) fn decode(
    buf: &mut BytesMut,
    max_message_size: Option<usize>,
) -> ReadResult<Option<HubMessage>> {
    loop {
        let Some((length, prefix)) = read_varint(buf)? else {
            return Ok(None);
        };
        if let Some(limit) = max_message_size
            && length > limit
        {
            return Err(DecodeError::MessageTooLarge { limit });
        }
        let total = prefix + length;
        let Some(body) = buf.get(prefix..total) else {
            return Ok(None);
        };
        let parsed = parse_body(body);
        buf.advance(total);
        if let Some(message) = parsed? {
            return Ok(Some(message));
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn body(bytes: &[u8]) -> ReadResult<Option<HubMessage>> {
        parse_body(bytes)
    }

    #[test]
    fn skip_value_handles_every_kind() {
        let values: &[&[u8]] = &[
            &[0x00],
            &[0xff],
            &[0xc0],
            &[0xc2],
            &[0xcc, 1],
            &[0xcd, 1, 2],
            &[0xce, 1, 2, 3, 4],
            &[0xcf, 1, 2, 3, 4, 5, 6, 7, 8],
            &[0xd0, 1],
            &[0xd3, 1, 2, 3, 4, 5, 6, 7, 8],
            &[0xca, 1, 2, 3, 4],
            &[0xcb, 1, 2, 3, 4, 5, 6, 7, 8],
            &[0xa2, b'h', b'i'],
            &[0xd9, 2, b'h', b'i'],
            &[0xda, 0, 2, b'h', b'i'],
            &[0xdb, 0, 0, 0, 2, b'h', b'i'],
            &[0xc4, 1, 9],
            &[0xc5, 0, 1, 9],
            &[0xc6, 0, 0, 0, 1, 9],
            &[0x92, 0x01, 0x91, 0x90],
            &[0xdc, 0, 2, 0x01, 0x02],
            &[0xdd, 0, 0, 0, 1, 0x01],
            &[0x81, 0xa1, b'k', 0x80],
            &[0xde, 0, 1, 0x01, 0x02],
            &[0xdf, 0, 0, 0, 1, 0x01, 0x02],
            &[0xd4, 1, 1],
            &[0xd5, 1, 1, 2],
            &[0xd6, 0xff, 1, 2, 3, 4],
            &[0xd7, 0xff, 1, 2, 3, 4, 5, 6, 7, 8],
            &[0xd8, 1, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0],
            &[0xc7, 2, 1, 9, 9],
            &[0xc8, 0, 1, 1, 9],
            &[0xc9, 0, 0, 0, 1, 1, 9],
        ];
        for value in values {
            let mut with_tail = value.to_vec();
            with_tail.push(0x2a);
            let mut r = Reader::new(&with_tail);
            r.skip_value().unwrap();
            assert_eq!(r.pos, value.len(), "{value:02x?}");
            // every truncation is an error, never a panic
            for cut in 0..value.len() {
                let mut r = Reader::new(&value[..cut]);
                assert!(r.skip_value().is_err(), "{value:02x?} cut at {cut}");
            }
        }
        assert!(Reader::new(&[0xc1]).skip_value().is_err());
    }

    #[test]
    fn huge_declared_lengths_are_rejected_without_allocating() {
        // array32 claiming 4 billion elements
        assert!(
            Reader::new(&[0xdd, 0xff, 0xff, 0xff, 0xff, 0x01])
                .skip_value()
                .is_err()
        );
        assert!(
            Reader::new(&[0xdd, 0xff, 0xff, 0xff, 0xff])
                .array_len("x")
                .is_err()
        );
        assert!(
            Reader::new(&[0xdf, 0xff, 0xff, 0xff, 0xff])
                .map_len_or_nil("x")
                .is_err()
        );
        // invocation whose arguments array claims 65535 elements
        let msg = [0x96, 0x01, 0x80, 0xc0, 0xa1, b'a', 0xdc, 0xff, 0xff, 0x90];
        assert!(body(&msg).is_err());
    }

    #[test]
    fn deep_nesting_does_not_overflow() {
        let mut v = vec![0x91; 100_000];
        v.push(0x01);
        let mut r = Reader::new(&v);
        r.skip_value().unwrap();
        assert_eq!(r.pos, v.len());
    }

    #[test]
    fn completion_result_kinds() {
        assert!(matches!(
            body(&[0x94, 0x03, 0x80, 0xa1, b'1', 0x02]).unwrap(),
            Some(HubMessage::Completion(Completion {
                outcome: CompletionOutcome::Void,
                ..
            }))
        ));
        assert!(body(&[0x94, 0x03, 0x80, 0xa1, b'1', 0x03]).is_err());
        assert!(body(&[0x94, 0x03, 0x80, 0xa1, b'1', 0x01]).is_err());
        assert!(body(&[0x95, 0x03, 0x80, 0xa1, b'1', 0x04, 0xc0]).is_err());
        let Some(HubMessage::Completion(c)) =
            body(&[0x95, 0x03, 0x80, 0xa1, b'1', 0x03, 0xc0]).unwrap()
        else {
            panic!("not a completion")
        };
        assert!(
            matches!(c.outcome, CompletionOutcome::Result(Payload::MessagePack(ref b)) if b[..] == [0xc0])
        );
    }

    #[test]
    fn required_ids() {
        // StreamItem with nil id
        assert!(matches!(
            body(&[0x94, 0x02, 0x80, 0xc0, 0x01]),
            Err(DecodeError::Invalid(_))
        ));
        // Cancel with empty id
        assert!(matches!(
            body(&[0x93, 0x05, 0x80, 0xa0]),
            Err(DecodeError::Invalid(_))
        ));
        // too few elements
        assert!(body(&[0x92, 0x05, 0x80]).is_err());
        assert!(body(&[0x90]).is_err());
        // type is not an int
        assert!(body(&[0x91, 0xa1, b'1']).is_err());
    }
}
