//! The upstream requests (headers and bodies) and how invocation answers become replies.
//!
//! Headers of every request: `X-ASRS-Connection-Id`, `X-ASRS-Hub`, `X-ASRS-Category`,
//! `X-ASRS-Event`, `X-ASRS-Signature` (`sha256=<HEX>` of the connection id per access key,
//! joined by `,`), `Content-Type`; `X-ASRS-User-Id` when the connection has a user id,
//! `X-ASRS-User-Claims` (`type: value` items joined by `", "`) when it has claims, and
//! `X-ASRS-Client-Query` when its connect request had a query. The client query is sent with a
//! leading `?` and without its `access_token` parameter: the token stays with the service.
//! Control characters in header values are replaced by spaces.
//!
//! Bodies: `connected` is `{"type":10}`, `disconnected` `{"Type":11}` or
//! `{"Type":11,"Error":"…"}` (Azure's casing), both `application/json`; a message is the
//! client's Invocation message re-encoded in the client's protocol without its framing (no
//! `0x1E`, no MessagePack length prefix), `application/json` or `application/x-msgpack`.

use axum::body::Bytes;
use bytes::BytesMut;
use reqwest::StatusCode;
use reqwest::header::{CONTENT_TYPE, HeaderMap, HeaderName, HeaderValue};
use signalbox::protocol::framing::{RECORD_SEPARATOR, read_varint};
use signalbox::protocol::{CompletionOutcome, EncodeError, HubMessage, Invocation, Protocol};
use signalbox::{InvocationReply, UnknownInvocation};

use super::ConnectionInfo;
use crate::webhooks::delivery::{Attempt, DeliveryError, signature_header};

/// The category of connection events.
pub const CONNECTIONS: &str = "connections";
/// The category of client invocations.
pub const MESSAGES: &str = "messages";
/// The event of a new connection.
pub const CONNECTED: &str = "connected";
/// The event of a closed connection.
pub const DISCONNECTED: &str = "disconnected";

/// `X-ASRS-Connection-Id`.
pub const CONNECTION_ID_HEADER: &str = "x-asrs-connection-id";
/// `X-ASRS-Hub`.
pub const HUB_HEADER: &str = "x-asrs-hub";
/// `X-ASRS-Category`.
pub const CATEGORY_HEADER: &str = "x-asrs-category";
/// `X-ASRS-Event`.
pub const EVENT_HEADER: &str = "x-asrs-event";
/// `X-ASRS-Signature`.
pub const SIGNATURE_HEADER: &str = "x-asrs-signature";
/// `X-ASRS-User-Id`.
pub const USER_ID_HEADER: &str = "x-asrs-user-id";
/// `X-ASRS-User-Claims`.
pub const USER_CLAIMS_HEADER: &str = "x-asrs-user-claims";
/// `X-ASRS-Client-Query`.
pub const CLIENT_QUERY_HEADER: &str = "x-asrs-client-query";

/// The content type of JSON bodies.
pub const JSON: &str = "application/json";
/// The content type of MessagePack bodies.
pub const MSGPACK: &str = "application/x-msgpack";

/// The reply when the upstream answered neither `2xx` nor with a body it could not read.
pub fn status_error(status: StatusCode) -> String {
    format!("Invocation failed, status code {}", status.as_u16())
}

/// The reply when the answer exceeded the size limit.
pub const TOO_LARGE: &str = "Invocation failed, response too large.";

/// The content type of a message body in `protocol`.
pub fn content_type(protocol: Protocol) -> &'static str {
    match protocol {
        Protocol::Json => JSON,
        Protocol::MessagePack => MSGPACK,
    }
}

/// The headers of a request about `info`'s connection.
pub fn headers(
    info: &ConnectionInfo,
    category: &str,
    event: &str,
    keys: &[String],
    content_type: &'static str,
) -> HeaderMap {
    let mut headers = HeaderMap::new();
    headers.insert(CONTENT_TYPE, HeaderValue::from_static(content_type));
    let mut put = |name: &'static str, value: &str| {
        if let Some(value) = header_value(value) {
            headers.insert(HeaderName::from_static(name), value);
        }
    };
    put(CONNECTION_ID_HEADER, &info.connection_id);
    put(HUB_HEADER, &info.hub);
    put(CATEGORY_HEADER, category);
    put(EVENT_HEADER, event);
    put(
        SIGNATURE_HEADER,
        &signature_header(keys, &info.connection_id),
    );
    if let Some(user) = info.user_id.as_deref().filter(|user| !user.is_empty()) {
        put(USER_ID_HEADER, user);
    }
    if !info.claims.is_empty() {
        put(USER_CLAIMS_HEADER, &claims_header(&info.claims));
    }
    if let Some(query) = info.query.as_deref().and_then(client_query) {
        put(CLIENT_QUERY_HEADER, &query);
    }
    headers
}

/// A header value: control characters replaced by spaces.
fn header_value(text: &str) -> Option<HeaderValue> {
    let clean: String = text
        .chars()
        .map(|c| if c.is_control() { ' ' } else { c })
        .collect();
    HeaderValue::from_bytes(clean.as_bytes()).ok()
}

/// Claims as `type: value` items joined by `", "`.
pub fn claims_header(claims: &[(String, String)]) -> String {
    claims
        .iter()
        .map(|(claim, value)| format!("{claim}: {value}"))
        .collect::<Vec<_>>()
        .join(", ")
}

/// The `X-ASRS-Client-Query` value of a connect request's query (given without `?`): with a
/// leading `?`, without `access_token`; `None` when nothing is left.
pub fn client_query(query: &str) -> Option<String> {
    let kept: Vec<&str> = query
        .trim_start_matches('?')
        .split('&')
        .filter(|pair| !pair.is_empty())
        .filter(|pair| {
            let key = pair.split_once('=').map_or(*pair, |(key, _)| key);
            !form_urlencoded::parse(key.as_bytes())
                .next()
                .is_some_and(|(key, _)| key.eq_ignore_ascii_case("access_token"))
        })
        .collect();
    (!kept.is_empty()).then(|| format!("?{}", kept.join("&")))
}

/// The body of `connected`.
pub fn connected_body() -> Bytes {
    Bytes::from_static(br#"{"type":10}"#)
}

/// The body of `disconnected`, with the connection's error if it had one.
pub fn disconnected_body(error: Option<&str>) -> Bytes {
    // Written by hand: `Type` comes first, as Azure writes it.
    let body = match error {
        Some(error) => format!(
            r#"{{"Type":11,"Error":{}}}"#,
            serde_json::Value::String(error.to_owned())
        ),
        None => r#"{"Type":11}"#.to_owned(),
    };
    Bytes::from(body)
}

/// The body of a message: `invocation` encoded in `protocol` without framing.
pub fn invocation_body(
    protocol: Protocol,
    invocation: &UnknownInvocation,
) -> Result<Bytes, EncodeError> {
    let message = HubMessage::Invocation(Invocation {
        headers: invocation.headers.clone(),
        invocation_id: invocation.invocation_id.clone(),
        target: invocation.target.clone(),
        arguments: invocation.arguments.clone(),
        stream_ids: Vec::new(),
    });
    let mut framed = Vec::new();
    protocol.encode(&message, &mut framed)?;
    Ok(Bytes::from(unframe(protocol, framed)))
}

/// One encoded message without its framing.
fn unframe(protocol: Protocol, mut framed: Vec<u8>) -> Vec<u8> {
    match protocol {
        Protocol::Json => {
            if framed.last() == Some(&RECORD_SEPARATOR) {
                framed.pop();
            }
            framed
        }
        Protocol::MessagePack => match read_varint(&framed) {
            Ok(Some((_, prefix))) => framed.split_off(prefix),
            _ => framed,
        },
    }
}

/// The reply to an invocation (with an id) from the upstream's answer:
///
/// * `200` with a body: the body is a framed hub message in the client's protocol, a
///   Completion, whose result or error is the reply;
/// * `200` without a body, or `204`: no value;
/// * another status: `Invocation failed, status code N`;
/// * a body over the size limit: `Invocation failed, response too large.`;
/// * no answer: `Invocation failed, error: <what happened>.`.
pub fn invocation_reply(protocol: Protocol, attempt: &Attempt) -> InvocationReply {
    match attempt {
        Attempt::Response { status, body } if *status == StatusCode::OK && !body.is_empty() => {
            completion_reply(protocol, body)
        }
        Attempt::Response { status, .. }
            if *status == StatusCode::OK || *status == StatusCode::NO_CONTENT =>
        {
            InvocationReply::Void
        }
        Attempt::Response { status, .. } => InvocationReply::Error(status_error(*status)),
        Attempt::Failed(DeliveryError::TooLarge { .. }) => {
            InvocationReply::Error(TOO_LARGE.to_owned())
        }
        Attempt::Failed(error) => {
            InvocationReply::Error(format!("Invocation failed, error: {error}."))
        }
    }
}

/// The reply carried by a framed Completion message (a JSON body without its final `0x1E` is
/// accepted too).
fn completion_reply(protocol: Protocol, body: &[u8]) -> InvocationReply {
    let mut buffer = BytesMut::from(body);
    if protocol == Protocol::Json && body.last() != Some(&RECORD_SEPARATOR) {
        buffer.extend_from_slice(&[RECORD_SEPARATOR]);
    }
    match protocol.decode(&mut buffer, None) {
        Ok(Some(HubMessage::Completion(completion))) => match completion.outcome {
            CompletionOutcome::Result(value) => InvocationReply::Result(value),
            CompletionOutcome::Error(error) => InvocationReply::Error(error),
            CompletionOutcome::Void => InvocationReply::Void,
        },
        Ok(_) | Err(_) => InvocationReply::Error(
            "Invocation failed, error: the response is not a Completion message.".to_owned(),
        ),
    }
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used, clippy::panic)]

    use signalbox::protocol::{Completion, Payload};

    use super::*;
    use crate::webhooks::delivery::hmac_sha256_hex;

    fn info() -> ConnectionInfo {
        ConnectionInfo {
            hub: "app_chat".to_owned(),
            connection_id: "conn-1".to_owned(),
            user_id: Some("alice".to_owned()),
            claims: vec![
                ("asrs.s.uid".to_owned(), "alice".to_owned()),
                ("role".to_owned(), "a".to_owned()),
                ("role".to_owned(), "b".to_owned()),
            ],
            query: Some("hub=chat&id=abc&access_token=SECRET&x=1".to_owned()),
        }
    }

    fn header<'a>(headers: &'a HeaderMap, name: &str) -> Option<&'a str> {
        headers.get(name).map(|v| v.to_str().unwrap())
    }

    #[test]
    fn request_headers() {
        let keys = vec!["key-one".to_owned(), "key-two".to_owned()];
        let headers = headers(&info(), MESSAGES, "broadcast", &keys, MSGPACK);
        assert_eq!(header(&headers, "content-type"), Some(MSGPACK));
        assert_eq!(header(&headers, "X-ASRS-Connection-Id"), Some("conn-1"));
        assert_eq!(header(&headers, "X-ASRS-Hub"), Some("app_chat"));
        assert_eq!(header(&headers, "X-ASRS-Category"), Some("messages"));
        assert_eq!(header(&headers, "X-ASRS-Event"), Some("broadcast"));
        assert_eq!(header(&headers, "X-ASRS-User-Id"), Some("alice"));
        assert_eq!(
            header(&headers, "X-ASRS-User-Claims"),
            Some("asrs.s.uid: alice, role: a, role: b")
        );
        assert_eq!(
            header(&headers, "X-ASRS-Client-Query"),
            Some("?hub=chat&id=abc&x=1")
        );
        let expected = format!(
            "sha256={},sha256={}",
            hmac_sha256_hex(b"key-one", b"conn-1"),
            hmac_sha256_hex(b"key-two", b"conn-1")
        );
        assert_eq!(
            header(&headers, "X-ASRS-Signature"),
            Some(expected.as_str())
        );
    }

    #[test]
    fn optional_headers_are_left_out() {
        let info = ConnectionInfo {
            user_id: Some(String::new()),
            claims: Vec::new(),
            query: Some("access_token=SECRET".to_owned()),
            ..info()
        };
        let headers = headers(&info, CONNECTIONS, CONNECTED, &["k".to_owned()], JSON);
        for name in [USER_ID_HEADER, USER_CLAIMS_HEADER, CLIENT_QUERY_HEADER] {
            assert!(headers.get(name).is_none(), "{name}");
        }
        assert!(!format!("{headers:?}").contains("SECRET"));
    }

    #[test]
    fn control_characters_do_not_break_headers() {
        let info = ConnectionInfo {
            user_id: Some("a\r\nX-Injected: 1".to_owned()),
            ..info()
        };
        let headers = headers(&info, CONNECTIONS, CONNECTED, &[], JSON);
        assert_eq!(header(&headers, USER_ID_HEADER), Some("a  X-Injected: 1"));
    }

    #[test]
    fn client_queries() {
        assert_eq!(client_query(""), None);
        assert_eq!(client_query("access_token=x"), None);
        assert_eq!(client_query("ACCESS_TOKEN=x&a"), Some("?a".to_owned()));
        assert_eq!(
            client_query("access%5Ftoken=x&b=2"),
            Some("?b=2".to_owned())
        );
        assert_eq!(client_query("?hub=chat"), Some("?hub=chat".to_owned()));
    }

    #[test]
    fn connection_bodies() {
        assert_eq!(&connected_body()[..], br#"{"type":10}"#);
        assert_eq!(&disconnected_body(None)[..], br#"{"Type":11}"#);
        assert_eq!(
            &disconnected_body(Some("went \"away\""))[..],
            br#"{"Type":11,"Error":"went \"away\""}"#
        );
    }

    #[test]
    fn message_bodies_have_no_framing() {
        let mut invocation = UnknownInvocation::new(
            "broadcast",
            vec![Payload::from_json_text("\"hi\"").unwrap()],
        );
        invocation.invocation_id = Some("0".to_owned());
        assert_eq!(
            &invocation_body(Protocol::Json, &invocation).unwrap()[..],
            br#"{"type":1,"invocationId":"0","target":"broadcast","arguments":["hi"]}"#
        );
        invocation.invocation_id = None;
        assert_eq!(
            &invocation_body(Protocol::Json, &invocation).unwrap()[..],
            br#"{"type":1,"target":"broadcast","arguments":["hi"]}"#
        );
        let msgpack = UnknownInvocation::new(
            "echo",
            vec![Payload::MessagePack(Bytes::from_static(&[0x05]))],
        );
        // [1, {}, nil, "echo", [5], []], without the length prefix.
        let body = invocation_body(Protocol::MessagePack, &msgpack).unwrap();
        assert_eq!(
            &body[..],
            &[
                0x96, 0x01, 0x80, 0xc0, 0xa4, b'e', b'c', b'h', b'o', 0x91, 0x05, 0x90
            ]
        );
    }

    fn answer(status: u16, body: &[u8]) -> Attempt {
        Attempt::Response {
            status: StatusCode::from_u16(status).unwrap(),
            body: Bytes::copy_from_slice(body),
        }
    }

    fn framed(protocol: Protocol, completion: Completion) -> Vec<u8> {
        protocol
            .encode_to_bytes(&HubMessage::Completion(completion))
            .unwrap()
            .to_vec()
    }

    fn json_result(reply: &InvocationReply) -> String {
        match reply {
            InvocationReply::Result(value) => {
                let mut out = Vec::new();
                value.write_json(&mut out).unwrap();
                String::from_utf8(out).unwrap()
            }
            other => panic!("not a result: {other:?}"),
        }
    }

    fn error_text(reply: &InvocationReply) -> String {
        match reply {
            InvocationReply::Error(text) => text.clone(),
            other => panic!("not an error: {other:?}"),
        }
    }

    #[test]
    fn replies_from_completions() {
        for protocol in Protocol::ALL {
            let body = framed(
                protocol,
                Completion::result("0", Payload::new(serde_json::json!({"n": 1}))),
            );
            let reply = invocation_reply(protocol, &answer(200, &body));
            assert_eq!(json_result(&reply), r#"{"n":1}"#, "{protocol}");
            let body = framed(protocol, Completion::error("0", "nope"));
            let reply = invocation_reply(protocol, &answer(200, &body));
            assert_eq!(error_text(&reply), "nope");
            let body = framed(protocol, Completion::void("0"));
            let reply = invocation_reply(protocol, &answer(200, &body));
            assert!(matches!(reply, InvocationReply::Void));
        }
        // JSON without the record separator.
        let reply = invocation_reply(
            Protocol::Json,
            &answer(200, br#"{"type":3,"invocationId":"0","result":"x"}"#),
        );
        assert_eq!(json_result(&reply), r#""x""#);
    }

    #[test]
    fn replies_from_statuses_and_failures() {
        assert!(matches!(
            invocation_reply(Protocol::Json, &answer(204, b"")),
            InvocationReply::Void
        ));
        assert!(matches!(
            invocation_reply(Protocol::MessagePack, &answer(200, b"")),
            InvocationReply::Void
        ));
        assert_eq!(
            error_text(&invocation_reply(Protocol::Json, &answer(404, b"not here"))),
            "Invocation failed, status code 404"
        );
        assert_eq!(
            error_text(&invocation_reply(Protocol::Json, &answer(201, b""))),
            "Invocation failed, status code 201"
        );
        let too_large = Attempt::Failed(DeliveryError::TooLarge {
            status: StatusCode::OK,
            limit: 1,
        });
        assert_eq!(
            error_text(&invocation_reply(Protocol::Json, &too_large)),
            TOO_LARGE
        );
        let refused = Attempt::Failed(DeliveryError::Transport("connection refused".to_owned()));
        assert_eq!(
            error_text(&invocation_reply(Protocol::Json, &refused)),
            "Invocation failed, error: connection refused."
        );
        let garbage = invocation_reply(Protocol::Json, &answer(200, b"hello"));
        assert!(error_text(&garbage).starts_with("Invocation failed, error:"));
    }
}
