//! The hub handshake (spec §5.1): the client's first message names the hub protocol and
//! version, the server answers `{}` or `{"error":"…"}`. Both are JSON text terminated by `0x1E`,
//! whatever the hub protocol.

use bytes::{Buf, Bytes, BytesMut};
use serde::Deserialize;
use serde::de::IgnoredAny;

use crate::framing::RECORD_SEPARATOR;
use crate::json::write_str;
use crate::protocol::Protocol;

/// The client's handshake request: `{"protocol":"json","version":1}`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct HandshakeRequest {
    /// The requested hub protocol name, as sent (match it with [`Protocol::from_name`]).
    pub protocol: String,
    /// The requested hub protocol version (1, or 2 with stateful reconnect).
    pub version: i32,
}

/// Why a handshake message could not be parsed. The connection must be closed.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum HandshakeError {
    /// No complete handshake message within the maximum message size.
    #[error("The handshake message exceeded the maximum message size.")]
    TooLarge,
    /// The handshake message is malformed or misses a required property.
    #[error("{0}")]
    Invalid(String),
}

#[derive(Deserialize)]
struct RawRequest {
    #[serde(default)]
    protocol: Option<String>,
    #[serde(default)]
    version: Option<i64>,
}

#[derive(Deserialize)]
struct RawResponse {
    #[serde(default)]
    error: Option<String>,
    #[serde(rename = "type", default)]
    kind: Option<IgnoredAny>,
}

/// Finds the end of the first record, honouring `max_size` the same way as the JSON hub
/// protocol (the record body may be up to `max_size` bytes; the separator may follow it).
fn find_record(buf: &BytesMut, max_size: Option<usize>) -> Result<Option<usize>, HandshakeError> {
    let window = match max_size {
        Some(limit) => &buf[..buf.len().min(limit.saturating_add(1))],
        None => &buf[..],
    };
    match window.iter().position(|&b| b == RECORD_SEPARATOR) {
        Some(end) => Ok(Some(end)),
        None if max_size.is_some_and(|limit| buf.len() > limit) => Err(HandshakeError::TooLarge),
        None => Ok(None),
    }
}

fn invalid_json(e: &serde_json::Error) -> HandshakeError {
    HandshakeError::Invalid(format!("Error reading JSON: {e}"))
}

/// Parses a handshake request from the front of `buf`.
///
/// `protocol` (string) and `version` (int32) are required; unknown properties are ignored.
/// `Ok(None)` = incomplete. [`HandshakeError::TooLarge`] if no separator is found within
/// `max_size` bytes (plus the separator). Consumes exactly the request and its separator; any
/// bytes after it (e.g. the first hub messages) stay in `buf`.
pub fn parse_handshake_request(
    buf: &mut BytesMut,
    max_size: Option<usize>,
) -> Result<Option<HandshakeRequest>, HandshakeError> {
    let Some(end) = find_record(buf, max_size)? else {
        return Ok(None);
    };
    let parsed: Result<RawRequest, _> = serde_json::from_slice(&buf[..end]);
    buf.advance(end + 1);
    let raw = parsed.map_err(|e| invalid_json(&e))?;
    let protocol = raw.protocol.ok_or_else(|| {
        HandshakeError::Invalid("Missing required property 'protocol'.".to_owned())
    })?;
    let version = raw.version.ok_or_else(|| {
        HandshakeError::Invalid("Missing required property 'version'.".to_owned())
    })?;
    let version = i32::try_from(version).map_err(|_| {
        HandshakeError::Invalid("The 'version' property is out of range.".to_owned())
    })?;
    Ok(Some(HandshakeRequest { protocol, version }))
}

/// The server's handshake response: `{}` + `0x1E`, or `{"error":"…"}` + `0x1E` (JSON-escaped).
pub fn handshake_response(error: Option<&str>) -> Bytes {
    let mut out = Vec::with_capacity(error.map_or(3, |e| e.len() + 14));
    match error {
        None => out.extend_from_slice(b"{}"),
        Some(error) => {
            out.extend_from_slice(b"{\"error\":");
            write_str(&mut out, error);
            out.push(b'}');
        }
    }
    out.push(RECORD_SEPARATOR);
    Bytes::from(out)
}

/// Parses a handshake response from the front of `buf` (client side: load generators, tests).
///
/// Returns `Ok(Some(Ok(())))` on success, `Ok(Some(Err(error_text)))` when the server refused,
/// `Ok(None)` when incomplete. A response carrying `type` is rejected like the official clients
/// do ("Expected a handshake response from the server."). Bytes after the response stay in `buf`.
pub fn parse_handshake_response(
    buf: &mut BytesMut,
) -> Result<Option<Result<(), String>>, HandshakeError> {
    let Some(end) = find_record(buf, None)? else {
        return Ok(None);
    };
    let parsed: Result<RawResponse, _> = serde_json::from_slice(&buf[..end]);
    buf.advance(end + 1);
    let raw = parsed.map_err(|e| invalid_json(&e))?;
    if raw.kind.is_some() {
        return Err(HandshakeError::Invalid(
            "Expected a handshake response from the server.".to_owned(),
        ));
    }
    Ok(Some(match raw.error {
        Some(error) => Err(error),
        None => Ok(()),
    }))
}

/// The client's handshake request bytes: `{"protocol":"<name>","version":<n>}` + `0x1E`.
pub fn handshake_request(protocol: Protocol, version: i32) -> Bytes {
    let text = format!(
        "{{\"protocol\":\"{}\",\"version\":{version}}}\u{1e}",
        protocol.name()
    );
    Bytes::from(text)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn req(text: &[u8]) -> Result<Option<HandshakeRequest>, HandshakeError> {
        parse_handshake_request(&mut BytesMut::from(text), None)
    }

    #[test]
    fn parses_requests() {
        assert_eq!(
            req(b"{\"protocol\":\"json\",\"version\":1}\x1e").unwrap(),
            Some(HandshakeRequest {
                protocol: "json".into(),
                version: 1
            })
        );
        assert_eq!(
            req(b"{\"version\":2,\"extra\":{\"a\":[1]},\"protocol\":\"messagepack\"}\x1e").unwrap(),
            Some(HandshakeRequest {
                protocol: "messagepack".into(),
                version: 2
            })
        );
        assert_eq!(req(b"{\"protocol\":\"json\",\"version\":1}").unwrap(), None);
        assert_eq!(req(b"").unwrap(), None);
    }

    #[test]
    fn rejects_bad_requests() {
        for text in [
            &b"{\"protocol\":\"json\"}\x1e"[..],
            b"{\"version\":1}\x1e",
            b"{\"protocol\":1,\"version\":1}\x1e",
            b"{\"protocol\":\"json\",\"version\":\"1\"}\x1e",
            b"{\"protocol\":\"json\",\"version\":1.5}\x1e",
            b"{\"protocol\":\"json\",\"version\":4294967296}\x1e",
            b"[]\x1e",
            b"\x1e",
            b"{\x1e",
        ] {
            assert!(
                matches!(req(text), Err(HandshakeError::Invalid(_))),
                "{text:?}"
            );
        }
        let err = req(b"{\"protocol\":\"json\"}\x1e").unwrap_err();
        assert_eq!(err.to_string(), "Missing required property 'version'.");
    }

    #[test]
    fn size_limit() {
        let request = handshake_request(Protocol::Json, 1);
        let body_len = request.len() - 1;
        // exactly at the limit: fine
        let mut buf = BytesMut::from(&request[..]);
        assert!(
            parse_handshake_request(&mut buf, Some(body_len))
                .unwrap()
                .is_some()
        );
        // one byte over: too large once enough bytes arrived
        let mut buf = BytesMut::from(&request[..]);
        assert!(matches!(
            parse_handshake_request(&mut buf, Some(body_len - 1)),
            Err(HandshakeError::TooLarge)
        ));
        // incomplete but still within the limit: wait
        let mut buf = BytesMut::from(&request[..body_len - 1]);
        assert!(
            parse_handshake_request(&mut buf, Some(body_len))
                .unwrap()
                .is_none()
        );
    }

    #[test]
    fn leaves_following_bytes() {
        let mut buf =
            BytesMut::from(&b"{\"protocol\":\"messagepack\",\"version\":1}\x1e\x02\x91\x06"[..]);
        assert!(
            parse_handshake_request(&mut buf, Some(1024))
                .unwrap()
                .is_some()
        );
        assert_eq!(&buf[..], [0x02, 0x91, 0x06]);
    }

    #[test]
    fn responses() {
        assert_eq!(&handshake_response(None)[..], b"{}\x1e");
        assert_eq!(
            &handshake_response(Some("The protocol 'x\"y' is not supported."))[..],
            b"{\"error\":\"The protocol 'x\\\"y' is not supported.\"}\x1e"
        );
        let mut buf = BytesMut::from(&b"{}\x1e{\"type\":6}\x1e"[..]);
        assert_eq!(parse_handshake_response(&mut buf).unwrap(), Some(Ok(())));
        assert_eq!(&buf[..], b"{\"type\":6}\x1e");
        assert!(parse_handshake_response(&mut buf).is_err());
        let mut buf = BytesMut::from(&handshake_response(Some("nope"))[..]);
        assert_eq!(
            parse_handshake_response(&mut buf).unwrap(),
            Some(Err("nope".to_owned()))
        );
        let mut buf = BytesMut::from(&b"{}"[..]);
        assert_eq!(parse_handshake_response(&mut buf).unwrap(), None);
    }

    #[test]
    fn requests() {
        assert_eq!(
            &handshake_request(Protocol::Json, 1)[..],
            b"{\"protocol\":\"json\",\"version\":1}\x1e"
        );
        assert_eq!(
            &handshake_request(Protocol::MessagePack, 2)[..],
            b"{\"protocol\":\"messagepack\",\"version\":2}\x1e"
        );
    }
}
