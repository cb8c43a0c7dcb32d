//! The bodies of the REST send and invoke operations: the message a back end sends to clients.
//!
//! * JSON (`application/json`, any charset parameter): a `PayloadMessage`
//!   `{"target": "method", "arguments": [...]}`. Property names are matched case-insensitively:
//!   the .NET SDK writes `Target` / `Arguments`, the documentation `target` / `arguments`.
//!   A missing body type is read as JSON.
//! * Binary (`application/octet-stream`, `application/x-msgpack`): what the SDK sends when the
//!   application configured its own hub protocols, a MessagePack map from protocol name (`json`,
//!   `messagepack`) to the complete framed InvocationMessage in that protocol. The JSON form is
//!   read when present, else the MessagePack one; each client then receives the message encoded
//!   in its own protocol.

use std::collections::BTreeMap;
use std::sync::Arc;

use axum::http::StatusCode;
use bytes::BytesMut;
use serde_json::value::RawValue;
use signalbox::lifetime::SerializedMessage;
use signalbox::protocol::{HubMessage, Invocation, Payload, Protocol};

/// Why a request body is not a message.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum PayloadError {
    /// The body type is neither JSON nor one of the binary types.
    #[error(
        "unsupported content type {0:?}: use application/json, application/x-msgpack or application/octet-stream"
    )]
    UnsupportedContentType(String),
    /// The JSON body is not a message object.
    #[error("invalid JSON message: {0}")]
    Json(String),
    /// The message has no (or an empty) target.
    #[error("the message needs a non-empty target")]
    MissingTarget,
    /// The binary body is not a map of framed invocation messages.
    #[error("invalid binary message: {0}")]
    Binary(String),
}

impl PayloadError {
    /// The HTTP status of the answer: 415 for an unsupported body type, 400 otherwise.
    pub fn status(&self) -> StatusCode {
        match self {
            PayloadError::UnsupportedContentType(_) => StatusCode::UNSUPPORTED_MEDIA_TYPE,
            _ => StatusCode::BAD_REQUEST,
        }
    }
}

/// The body's kind, from its `Content-Type`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Kind {
    Json,
    Binary,
}

fn kind(content_type: Option<&str>) -> Result<Kind, PayloadError> {
    let Some(content_type) = content_type else {
        return Ok(Kind::Json);
    };
    let essence = content_type
        .split(';')
        .next()
        .unwrap_or_default()
        .trim()
        .to_ascii_lowercase();
    match essence.as_str() {
        "" | "application/json" | "text/json" | "text/plain" => Ok(Kind::Json),
        "application/octet-stream" | "application/x-msgpack" | "application/msgpack" => {
            Ok(Kind::Binary)
        }
        other if other.ends_with("+json") => Ok(Kind::Json),
        _ => Err(PayloadError::UnsupportedContentType(
            content_type.to_owned(),
        )),
    }
}

/// Reads the message of a send or invoke body: an Invocation without invocation id.
pub fn parse(content_type: Option<&str>, body: &[u8]) -> Result<Invocation, PayloadError> {
    let mut invocation = match kind(content_type)? {
        Kind::Json => parse_json(body)?,
        Kind::Binary => parse_binary(body)?,
    };
    if invocation.target.is_empty() {
        return Err(PayloadError::MissingTarget);
    }
    invocation.invocation_id = None;
    invocation.stream_ids.clear();
    Ok(invocation)
}

/// The message to hand to a hub's lifetime manager.
pub fn serialized(invocation: Invocation) -> Arc<SerializedMessage> {
    Arc::new(SerializedMessage::new(HubMessage::Invocation(invocation)))
}

fn parse_json(body: &[u8]) -> Result<Invocation, PayloadError> {
    let json_error = |e: serde_json::Error| PayloadError::Json(e.to_string());
    let fields: BTreeMap<String, Box<RawValue>> =
        serde_json::from_slice(body).map_err(json_error)?;
    let mut target = None;
    let mut arguments = Vec::new();
    for (name, value) in fields {
        if name.eq_ignore_ascii_case("target") {
            let text: Option<String> = serde_json::from_str(value.get())
                .map_err(|_| PayloadError::Json("target must be a string".to_owned()))?;
            target = text;
        } else if name.eq_ignore_ascii_case("arguments") {
            let items: Option<Vec<Box<RawValue>>> = serde_json::from_str(value.get())
                .map_err(|_| PayloadError::Json("arguments must be an array".to_owned()))?;
            arguments = items
                .unwrap_or_default()
                .into_iter()
                .map(|raw| Payload::Json(Arc::from(raw)))
                .collect();
        }
    }
    let target = target.ok_or(PayloadError::MissingTarget)?;
    Ok(Invocation::new(target, arguments))
}

fn parse_binary(body: &[u8]) -> Result<Invocation, PayloadError> {
    let frames = binary_frames(body)?;
    let (protocol, frame) = frames
        .iter()
        .find(|(protocol, _)| *protocol == Protocol::Json)
        .or_else(|| frames.first())
        .ok_or_else(|| {
            PayloadError::Binary("no json or messagepack message in the map".to_owned())
        })?;
    let mut buf = BytesMut::from(*frame);
    match protocol.decode(&mut buf, None) {
        Ok(Some(HubMessage::Invocation(invocation))) => Ok(invocation),
        Ok(Some(_)) => Err(PayloadError::Binary(format!(
            "the {protocol} message is not an invocation"
        ))),
        Ok(None) => Err(PayloadError::Binary(format!(
            "the {protocol} message is incomplete"
        ))),
        Err(error) => Err(PayloadError::Binary(format!("{protocol}: {error}"))),
    }
}

/// The `(protocol, framed message)` entries of the binary body's map, in body order; unknown
/// protocol names are skipped.
fn binary_frames(body: &[u8]) -> Result<Vec<(Protocol, &[u8])>, PayloadError> {
    let bad = |what: &str| PayloadError::Binary(what.to_owned());
    let mut rest = body;
    let entries = rmp::decode::read_map_len(&mut rest)
        .map_err(|_| bad("the body is not a MessagePack map"))?;
    let mut frames = Vec::new();
    for _ in 0..entries {
        let name = read_bytes(&mut rest).ok_or_else(|| bad("a map key is not a string"))?;
        let frame = read_bytes(&mut rest).ok_or_else(|| bad("a map value is not binary"))?;
        let protocol = std::str::from_utf8(name)
            .ok()
            .and_then(|name| Protocol::from_name(&name.to_ascii_lowercase()));
        if let Some(protocol) = protocol {
            frames.push((protocol, frame));
        }
    }
    Ok(frames)
}

/// Reads a MessagePack `str` or `bin` value; advances `rest` past it.
fn read_bytes<'a>(rest: &mut &'a [u8]) -> Option<&'a [u8]> {
    let marker = *rest.first()?;
    let len = match marker {
        0xa0..=0xbf | 0xd9..=0xdb => rmp::decode::read_str_len(rest).ok()?,
        0xc4..=0xc6 => rmp::decode::read_bin_len(rest).ok()?,
        _ => return None,
    };
    let len = usize::try_from(len).ok()?;
    if rest.len() < len {
        return None;
    }
    let (value, tail) = rest.split_at(len);
    *rest = tail;
    Some(value)
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used, clippy::expect_used)]

    use super::*;

    fn json_of(invocation: &Invocation) -> String {
        let bytes = Protocol::Json
            .encode_to_bytes(&HubMessage::Invocation(invocation.clone()))
            .unwrap();
        String::from_utf8(bytes.to_vec()).unwrap()
    }

    #[test]
    fn sdk_json_body() {
        let invocation = parse(
            Some("application/json; charset=utf-8"),
            br#"{"Target":"newMessage","Arguments":["hi",{"a":1},null]}"#,
        )
        .unwrap();
        assert_eq!(
            json_of(&invocation),
            "{\"type\":1,\"target\":\"newMessage\",\"arguments\":[\"hi\",{\"a\":1},null]}\u{1e}"
        );
    }

    #[test]
    fn documented_json_body() {
        let invocation = parse(None, br#"{"target":"m","arguments":[1]}"#).unwrap();
        assert_eq!(invocation.target, "m");
        assert_eq!(invocation.arguments.len(), 1);
        let invocation = parse(Some("application/json"), br#"{"TARGET":"m"}"#).unwrap();
        assert!(invocation.arguments.is_empty());
        let invocation = parse(
            Some("application/json"),
            br#"{"target":"m","arguments":null}"#,
        )
        .unwrap();
        assert!(invocation.arguments.is_empty());
    }

    #[test]
    fn bad_json_bodies() {
        let json = Some("application/json");
        assert!(matches!(parse(json, b"nope"), Err(PayloadError::Json(_))));
        assert!(matches!(parse(json, b"[1]"), Err(PayloadError::Json(_))));
        assert_eq!(parse(json, b"{}").err(), Some(PayloadError::MissingTarget));
        assert_eq!(
            parse(json, br#"{"target":""}"#).err(),
            Some(PayloadError::MissingTarget)
        );
        assert!(matches!(
            parse(json, br#"{"target":1}"#),
            Err(PayloadError::Json(_))
        ));
        assert!(matches!(
            parse(json, br#"{"target":"m","arguments":"x"}"#),
            Err(PayloadError::Json(_))
        ));
        let error = parse(Some("text/xml"), b"<a/>").unwrap_err();
        assert_eq!(error.status(), StatusCode::UNSUPPORTED_MEDIA_TYPE);
        assert_eq!(
            PayloadError::MissingTarget.status(),
            StatusCode::BAD_REQUEST
        );
    }

    /// The SDK's binary body: a map of protocol name to framed message, as MessagePack-CSharp
    /// writes it (str keys, bin values).
    fn binary_body(entries: &[(&str, &[u8])]) -> Vec<u8> {
        let mut out = Vec::new();
        rmp::encode::write_map_len(&mut out, u32::try_from(entries.len()).unwrap()).unwrap();
        for (name, frame) in entries {
            rmp::encode::write_str(&mut out, name).unwrap();
            rmp::encode::write_bin(&mut out, frame).unwrap();
        }
        out
    }

    fn frame(protocol: Protocol, target: &str, argument: &str) -> Vec<u8> {
        let invocation = Invocation::new(target, vec![Payload::new(argument.to_owned())]);
        protocol
            .encode_to_bytes(&HubMessage::Invocation(invocation))
            .unwrap()
            .to_vec()
    }

    #[test]
    fn sdk_binary_body_prefers_json() {
        let json = frame(Protocol::Json, "fromJson", "a");
        let msgpack = frame(Protocol::MessagePack, "fromMessagePack", "b");
        let body = binary_body(&[("messagepack", &msgpack), ("json", &json)]);
        let invocation = parse(Some("application/octet-stream"), &body).unwrap();
        assert_eq!(invocation.target, "fromJson");
        let body = binary_body(&[("messagepack", &msgpack)]);
        let invocation = parse(Some("application/x-msgpack"), &body).unwrap();
        assert_eq!(invocation.target, "fromMessagePack");
        assert_eq!(
            json_of(&invocation),
            "{\"type\":1,\"target\":\"fromMessagePack\",\"arguments\":[\"b\"]}\u{1e}"
        );
    }

    #[test]
    fn binary_invocation_ids_are_dropped() {
        let invocation = Invocation {
            invocation_id: Some("7".to_owned()),
            ..Invocation::new("m", Vec::new())
        };
        let json = Protocol::Json
            .encode_to_bytes(&HubMessage::Invocation(invocation))
            .unwrap();
        let body = binary_body(&[("json", &json)]);
        let parsed = parse(Some("application/octet-stream"), &body).unwrap();
        assert_eq!(parsed.invocation_id, None);
    }

    #[test]
    fn bad_binary_bodies() {
        let binary = Some("application/octet-stream");
        assert!(matches!(parse(binary, b"{}"), Err(PayloadError::Binary(_))));
        assert!(matches!(
            parse(binary, &binary_body(&[])),
            Err(PayloadError::Binary(_))
        ));
        assert!(matches!(
            parse(binary, &binary_body(&[("xml", b"<a/>")])),
            Err(PayloadError::Binary(_))
        ));
        assert!(matches!(
            parse(binary, &binary_body(&[("json", b"{\"type\":6}\x1e")])),
            Err(PayloadError::Binary(_))
        ));
        assert!(matches!(
            parse(binary, &binary_body(&[("json", b"{\"type\":1")])),
            Err(PayloadError::Binary(_))
        ));
        // A truncated map.
        let mut body = binary_body(&[("json", &frame(Protocol::Json, "m", "a"))]);
        body.truncate(body.len() - 3);
        assert!(matches!(parse(binary, &body), Err(PayloadError::Binary(_))));
    }
}
