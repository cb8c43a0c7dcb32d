//! The `json` hub protocol (spec §5.3): one JSON object per message, terminated by `0x1E`.
//!
//! Writer property order matches the .NET `JsonHubProtocol`; the reader accepts properties in
//! any order, ignores unknown properties and skips messages of unknown type.

use std::sync::Arc;

use bytes::{Buf, BytesMut};
use serde::{Deserialize, Deserializer};
use serde_json::value::RawValue;

use crate::framing::RECORD_SEPARATOR;
use crate::message::{
    Ack, CancelInvocation, Close, Completion, CompletionOutcome, Headers, HubMessage, Invocation,
    Sequence, StreamInvocation, StreamItem,
};
use crate::payload::Payload;
use crate::protocol::{DecodeError, EncodeError};

// ---------------------------------------------------------------------------------------------
// Writing

/// Appends `s` as a JSON string literal (same escaping as `serde_json`; non-ASCII kept as is).
pub(crate) fn write_str(out: &mut Vec<u8>, s: &str) {
    const HEX: &[u8; 16] = b"0123456789abcdef";
    out.push(b'"');
    let bytes = s.as_bytes();
    let mut start = 0;
    for (i, &b) in bytes.iter().enumerate() {
        let short: &[u8] = match b {
            b'"' => b"\\\"",
            b'\\' => b"\\\\",
            b'\n' => b"\\n",
            b'\r' => b"\\r",
            b'\t' => b"\\t",
            0x08 => b"\\b",
            0x0c => b"\\f",
            0x00..=0x1f => &[],
            _ => continue,
        };
        out.extend_from_slice(&bytes[start..i]);
        if short.is_empty() {
            out.extend_from_slice(b"\\u00");
            out.push(HEX[usize::from(b >> 4)]);
            out.push(HEX[usize::from(b & 0x0f)]);
        } else {
            out.extend_from_slice(short);
        }
        start = i + 1;
    }
    out.extend_from_slice(&bytes[start..]);
    out.push(b'"');
}

fn write_u64(out: &mut Vec<u8>, mut n: u64) {
    let mut digits = [0u8; 20];
    let mut i = digits.len();
    loop {
        i -= 1;
        digits[i] = b'0' + (n % 10) as u8;
        n /= 10;
        if n == 0 {
            break;
        }
    }
    out.extend_from_slice(&digits[i..]);
}

fn write_type(out: &mut Vec<u8>, kind: u8) {
    out.extend_from_slice(b"{\"type\":");
    write_u64(out, u64::from(kind));
}

fn write_headers(out: &mut Vec<u8>, headers: &Headers) {
    if headers.is_empty() {
        return;
    }
    out.extend_from_slice(b",\"headers\":{");
    for (i, (key, value)) in headers.iter().enumerate() {
        if i > 0 {
            out.push(b',');
        }
        write_str(out, key);
        out.push(b':');
        write_str(out, value);
    }
    out.push(b'}');
}

fn write_invocation_id(out: &mut Vec<u8>, id: &str) {
    out.extend_from_slice(b",\"invocationId\":");
    write_str(out, id);
}

fn write_call(
    out: &mut Vec<u8>,
    target: &str,
    arguments: &[Payload],
    stream_ids: &[String],
) -> Result<(), EncodeError> {
    out.extend_from_slice(b",\"target\":");
    write_str(out, target);
    out.extend_from_slice(b",\"arguments\":[");
    for (i, argument) in arguments.iter().enumerate() {
        if i > 0 {
            out.push(b',');
        }
        argument.write_json(out)?;
    }
    out.push(b']');
    if !stream_ids.is_empty() {
        out.extend_from_slice(b",\"streamIds\":[");
        for (i, id) in stream_ids.iter().enumerate() {
            if i > 0 {
                out.push(b',');
            }
            write_str(out, id);
        }
        out.push(b']');
    }
    Ok(())
}

/// Appends `message` as a JSON record followed by `0x1E`. May leave partial output on error.
pub(crate) fn encode(message: &HubMessage, out: &mut Vec<u8>) -> Result<(), EncodeError> {
    write_type(out, message.message_type());
    match message {
        HubMessage::Invocation(m) => {
            write_headers(out, &m.headers);
            if let Some(id) = m.invocation_id.as_deref().filter(|id| !id.is_empty()) {
                write_invocation_id(out, id);
            }
            write_call(out, &m.target, &m.arguments, &m.stream_ids)?;
        }
        HubMessage::StreamInvocation(m) => {
            write_headers(out, &m.headers);
            write_invocation_id(out, &m.invocation_id);
            write_call(out, &m.target, &m.arguments, &m.stream_ids)?;
        }
        HubMessage::StreamItem(m) => {
            write_headers(out, &m.headers);
            write_invocation_id(out, &m.invocation_id);
            out.extend_from_slice(b",\"item\":");
            m.item.write_json(out)?;
        }
        HubMessage::Completion(m) => {
            write_headers(out, &m.headers);
            write_invocation_id(out, &m.invocation_id);
            match &m.outcome {
                CompletionOutcome::Error(error) => {
                    out.extend_from_slice(b",\"error\":");
                    write_str(out, error);
                }
                CompletionOutcome::Result(result) => {
                    out.extend_from_slice(b",\"result\":");
                    result.write_json(out)?;
                }
                CompletionOutcome::Void => {}
            }
        }
        HubMessage::CancelInvocation(m) => {
            write_headers(out, &m.headers);
            write_invocation_id(out, &m.invocation_id);
        }
        HubMessage::Ping => {}
        HubMessage::Close(m) => {
            if let Some(error) = &m.error {
                out.extend_from_slice(b",\"error\":");
                write_str(out, error);
            }
            if m.allow_reconnect {
                out.extend_from_slice(b",\"allowReconnect\":true");
            }
        }
        HubMessage::Ack(Ack { sequence_id }) | HubMessage::Sequence(Sequence { sequence_id }) => {
            out.extend_from_slice(b",\"sequenceId\":");
            write_u64(out, *sequence_id);
        }
    }
    out.push(b'}');
    out.push(RECORD_SEPARATOR);
    Ok(())
}

// ---------------------------------------------------------------------------------------------
// Reading

/// Every property any message type may carry; all optional so the type decides what is required.
#[derive(Deserialize)]
struct RawMessage {
    #[serde(rename = "type", default)]
    kind: Option<i64>,
    #[serde(rename = "invocationId", default)]
    invocation_id: Option<String>,
    #[serde(default)]
    target: Option<String>,
    #[serde(default)]
    arguments: Option<Vec<Box<RawValue>>>,
    #[serde(rename = "streamIds", default)]
    stream_ids: Option<Vec<String>>,
    #[serde(default, deserialize_with = "present")]
    item: Option<Box<RawValue>>,
    #[serde(default, deserialize_with = "present")]
    result: Option<Box<RawValue>>,
    #[serde(default)]
    error: Option<String>,
    #[serde(rename = "allowReconnect", default)]
    allow_reconnect: Option<bool>,
    #[serde(rename = "sequenceId", default)]
    sequence_id: Option<u64>,
    #[serde(default)]
    headers: Option<Headers>,
}

/// Distinguishes `"result": null` (present, `Some(raw null)`) from an absent property (`None`).
fn present<'de, D: Deserializer<'de>>(deserializer: D) -> Result<Option<Box<RawValue>>, D::Error> {
    Box::<RawValue>::deserialize(deserializer).map(Some)
}

fn required_id(id: Option<String>) -> Result<String, DecodeError> {
    id.filter(|id| !id.is_empty())
        .ok_or(DecodeError::MissingProperty("invocationId"))
}

fn required_target(target: Option<String>) -> Result<String, DecodeError> {
    target
        .filter(|t| !t.is_empty())
        .ok_or(DecodeError::MissingProperty("target"))
}

/// Stream ids of an invocation; an empty id is refused, as the MessagePack decoder refuses it.
fn stream_ids(ids: Option<Vec<String>>) -> Result<Vec<String>, DecodeError> {
    let ids = ids.unwrap_or_default();
    if ids.iter().any(String::is_empty) {
        return Err(DecodeError::Invalid(
            "Null or empty value in streamIds.".to_owned(),
        ));
    }
    Ok(ids)
}

fn payloads(arguments: Option<Vec<Box<RawValue>>>) -> Result<Vec<Payload>, DecodeError> {
    let arguments = arguments.ok_or(DecodeError::MissingProperty("arguments"))?;
    Ok(arguments.into_iter().map(Payload::from).collect())
}

/// Parses one record (without its separator). `Ok(None)` = unknown message type.
fn parse_record(record: &[u8]) -> Result<Option<HubMessage>, DecodeError> {
    let raw: RawMessage =
        serde_json::from_slice(record).map_err(|e| DecodeError::Json(e.to_string()))?;
    let kind = raw.kind.ok_or(DecodeError::MissingProperty("type"))?;
    let headers = raw.headers.unwrap_or_default();
    let message = match kind {
        1 => {
            let target = required_target(raw.target)?;
            let arguments = payloads(raw.arguments)?;
            HubMessage::Invocation(Invocation {
                headers,
                invocation_id: raw.invocation_id.filter(|id| !id.is_empty()),
                target,
                arguments,
                stream_ids: stream_ids(raw.stream_ids)?,
            })
        }
        2 => {
            let invocation_id = required_id(raw.invocation_id)?;
            let item = raw.item.ok_or(DecodeError::MissingProperty("item"))?;
            HubMessage::StreamItem(StreamItem {
                headers,
                invocation_id,
                item: Payload::Json(Arc::from(item)),
            })
        }
        3 => {
            let invocation_id = required_id(raw.invocation_id)?;
            let outcome = match (raw.error, raw.result) {
                (Some(_), Some(_)) => {
                    return Err(DecodeError::Invalid(
                        "The 'error' and 'result' properties are mutually exclusive.".to_owned(),
                    ));
                }
                (Some(error), None) => CompletionOutcome::Error(error),
                (None, Some(result)) => CompletionOutcome::Result(Payload::Json(Arc::from(result))),
                (None, None) => CompletionOutcome::Void,
            };
            HubMessage::Completion(Completion {
                headers,
                invocation_id,
                outcome,
            })
        }
        4 => {
            let invocation_id = required_id(raw.invocation_id)?;
            let arguments = payloads(raw.arguments)?;
            let target = required_target(raw.target)?;
            HubMessage::StreamInvocation(StreamInvocation {
                headers,
                invocation_id,
                target,
                arguments,
                stream_ids: stream_ids(raw.stream_ids)?,
            })
        }
        5 => HubMessage::CancelInvocation(CancelInvocation {
            headers,
            invocation_id: required_id(raw.invocation_id)?,
        }),
        6 => HubMessage::Ping,
        7 => HubMessage::Close(Close {
            error: raw.error,
            allow_reconnect: raw.allow_reconnect.unwrap_or(false),
        }),
        8 => HubMessage::Ack(Ack {
            sequence_id: raw
                .sequence_id
                .ok_or(DecodeError::MissingProperty("sequenceId"))?,
        }),
        9 => HubMessage::Sequence(Sequence {
            sequence_id: raw
                .sequence_id
                .ok_or(DecodeError::MissingProperty("sequenceId"))?,
        }),
        // Future protocol versions may add message types; they are ignored.
        _ => return Ok(None),
    };
    Ok(Some(message))
}

/// Removes the first complete, known message from `buf` (see [`crate::Protocol::decode`]).
pub(crate) fn decode(
    buf: &mut BytesMut,
    max_message_size: Option<usize>,
) -> Result<Option<HubMessage>, DecodeError> {
    loop {
        let window = match max_message_size {
            Some(limit) => &buf[..buf.len().min(limit.saturating_add(1))],
            None => &buf[..],
        };
        let Some(end) = window.iter().position(|&b| b == RECORD_SEPARATOR) else {
            if let Some(limit) = max_message_size
                && buf.len() > limit
            {
                return Err(DecodeError::MessageTooLarge { limit });
            }
            return Ok(None);
        };
        let parsed = parse_record(&buf[..end]);
        buf.advance(end + 1);
        if let Some(message) = parsed? {
            return Ok(Some(message));
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn decode_one(text: &str) -> Result<Option<HubMessage>, DecodeError> {
        let mut buf = BytesMut::from(text.as_bytes());
        buf.extend_from_slice(&[RECORD_SEPARATOR]);
        decode(&mut buf, None)
    }

    #[test]
    fn string_escaping_matches_serde_json() {
        let mut samples: Vec<String> = vec![
            String::new(),
            "plain".into(),
            "quote\" backslash\\ slash/".into(),
            "\u{0}\u{1}\u{8}\u{9}\u{a}\u{b}\u{c}\u{d}\u{1e}\u{1f}\u{7f}".into(),
            "héllo ☃ 𝄞 \u{2028}".into(),
        ];
        samples.push((0u8..=127).map(char::from).collect());
        for s in samples {
            let mut out = Vec::new();
            write_str(&mut out, &s);
            assert_eq!(
                String::from_utf8(out).unwrap(),
                serde_json::to_string(&s).unwrap()
            );
        }
    }

    #[test]
    fn numbers() {
        for n in [0, 1, 9, 10, 99, 100, 12345, u64::from(u32::MAX), u64::MAX] {
            let mut out = Vec::new();
            write_u64(&mut out, n);
            assert_eq!(out, n.to_string().as_bytes());
        }
    }

    #[test]
    fn result_null_is_present() {
        let Some(HubMessage::Completion(c)) =
            decode_one(r#"{"type":3,"invocationId":"1","result":null}"#).unwrap()
        else {
            panic!("not a completion")
        };
        assert!(
            matches!(c.outcome, CompletionOutcome::Result(Payload::Json(ref r)) if r.get() == "null")
        );
        let Some(HubMessage::Completion(c)) =
            decode_one(r#"{"type":3,"invocationId":"1"}"#).unwrap()
        else {
            panic!("not a completion")
        };
        assert!(matches!(c.outcome, CompletionOutcome::Void));
    }

    #[test]
    fn empty_invocation_id_means_non_blocking() {
        let Some(HubMessage::Invocation(i)) =
            decode_one(r#"{"type":1,"invocationId":"","target":"a","arguments":[]}"#).unwrap()
        else {
            panic!("not an invocation")
        };
        assert_eq!(i.invocation_id, None);
    }

    #[test]
    fn required_properties() {
        let cases = [
            (r#"{"target":"a","arguments":[]}"#, "type"),
            (r#"{"type":1,"arguments":[]}"#, "target"),
            (r#"{"type":1,"target":"","arguments":[]}"#, "target"),
            (r#"{"type":1,"target":"a"}"#, "arguments"),
            (r#"{"type":2,"item":1}"#, "invocationId"),
            (r#"{"type":2,"invocationId":"1"}"#, "item"),
            (r#"{"type":3}"#, "invocationId"),
            (r#"{"type":4,"target":"a","arguments":[]}"#, "invocationId"),
            (r#"{"type":4,"invocationId":"1","target":"a"}"#, "arguments"),
            (r#"{"type":4,"invocationId":"1","arguments":[]}"#, "target"),
            (r#"{"type":5}"#, "invocationId"),
            (r#"{"type":5,"invocationId":""}"#, "invocationId"),
            (r#"{"type":8}"#, "sequenceId"),
            (r#"{"type":9}"#, "sequenceId"),
        ];
        for (text, property) in cases {
            match decode_one(text) {
                Err(DecodeError::MissingProperty(p)) => assert_eq!(p, property, "{text}"),
                other => panic!("{text}: {other:?}"),
            }
        }
    }
}
