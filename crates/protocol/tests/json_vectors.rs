//! Byte-exact vectors for the `json` hub protocol (spec §5.3), lenient decoding, chunked
//! input, size limits and malformed input.

// Test helpers outside `#[test]` functions unwrap and panic on purpose.
#![allow(clippy::unwrap_used, clippy::panic)]

use bytes::{Bytes, BytesMut};
use serde::Serialize;
use signalbox_protocol::{
    Ack, CancelInvocation, Close, Completion, CompletionOutcome, DecodeError, Headers, HubMessage,
    Invocation, Payload, Protocol, Sequence, StreamInvocation, StreamItem,
};

const P: Protocol = Protocol::Json;

fn encode(message: &HubMessage) -> Vec<u8> {
    P.encode_to_bytes(message).unwrap().to_vec()
}

fn framed(text: &str) -> Vec<u8> {
    let mut v = text.as_bytes().to_vec();
    v.push(0x1e);
    v
}

fn decode_all(bytes: &[u8]) -> Vec<HubMessage> {
    let mut buf = BytesMut::from(bytes);
    let mut out = Vec::new();
    while let Some(m) = P.decode(&mut buf, None).unwrap() {
        out.push(m);
    }
    assert!(buf.is_empty(), "left over: {buf:?}");
    out
}

fn decode_one(text: &str) -> HubMessage {
    let mut messages = decode_all(&framed(text));
    assert_eq!(messages.len(), 1, "{text}");
    messages.remove(0)
}

fn try_decode(text: &str) -> Result<Option<HubMessage>, DecodeError> {
    P.decode(&mut BytesMut::from(&framed(text)[..]), None)
}

fn json(text: &str) -> Payload {
    Payload::from_json_text(text).unwrap()
}

fn headers(pairs: &[(&str, &str)]) -> Headers {
    pairs
        .iter()
        .map(|(k, v)| ((*k).to_owned(), (*v).to_owned()))
        .collect()
}

/// Every message type with its exact wire form (what .NET writes for the same message).
fn vectors() -> Vec<(HubMessage, &'static str)> {
    vec![
        (
            Invocation::new("Send", vec![json("\"hi\""), Payload::new(42)]).into(),
            r#"{"type":1,"target":"Send","arguments":["hi",42]}"#,
        ),
        (
            Invocation {
                headers: headers(&[("a", "b"), ("c", "d")]),
                invocation_id: Some("0".into()),
                target: "Echo".into(),
                arguments: vec![],
                stream_ids: vec!["1".into(), "2".into()],
            }
            .into(),
            r#"{"type":1,"headers":{"a":"b","c":"d"},"invocationId":"0","target":"Echo","arguments":[],"streamIds":["1","2"]}"#,
        ),
        (
            StreamItem {
                headers: Headers::new(),
                invocation_id: "1".into(),
                item: json(r#"{"x":1}"#),
            }
            .into(),
            r#"{"type":2,"invocationId":"1","item":{"x":1}}"#,
        ),
        (
            StreamItem {
                headers: Headers::new(),
                invocation_id: "1".into(),
                item: Payload::null(),
            }
            .into(),
            r#"{"type":2,"invocationId":"1","item":null}"#,
        ),
        (
            Completion::result("0", Payload::new("hi")).into(),
            r#"{"type":3,"invocationId":"0","result":"hi"}"#,
        ),
        (
            Completion::result("0", Payload::null()).into(),
            r#"{"type":3,"invocationId":"0","result":null}"#,
        ),
        (
            Completion::error("0", "boom").into(),
            r#"{"type":3,"invocationId":"0","error":"boom"}"#,
        ),
        (
            Completion::void("0").into(),
            r#"{"type":3,"invocationId":"0"}"#,
        ),
        (
            Completion {
                headers: headers(&[("k", "v")]),
                invocation_id: "5".into(),
                outcome: CompletionOutcome::Void,
            }
            .into(),
            r#"{"type":3,"headers":{"k":"v"},"invocationId":"5"}"#,
        ),
        (
            StreamInvocation {
                headers: Headers::new(),
                invocation_id: "2".into(),
                target: "Counter".into(),
                arguments: vec![Payload::new(10), Payload::new(500)],
                stream_ids: vec![],
            }
            .into(),
            r#"{"type":4,"invocationId":"2","target":"Counter","arguments":[10,500]}"#,
        ),
        (
            StreamInvocation {
                headers: Headers::new(),
                invocation_id: "3".into(),
                target: "Up".into(),
                arguments: vec![],
                stream_ids: vec!["4".into()],
            }
            .into(),
            r#"{"type":4,"invocationId":"3","target":"Up","arguments":[],"streamIds":["4"]}"#,
        ),
        (
            CancelInvocation {
                headers: Headers::new(),
                invocation_id: "2".into(),
            }
            .into(),
            r#"{"type":5,"invocationId":"2"}"#,
        ),
        (HubMessage::Ping, r#"{"type":6}"#),
        (Close::default().into(), r#"{"type":7}"#),
        (
            Close {
                error: None,
                allow_reconnect: true,
            }
            .into(),
            r#"{"type":7,"allowReconnect":true}"#,
        ),
        (
            Close {
                error: Some("Connection closed with an error.".into()),
                allow_reconnect: true,
            }
            .into(),
            r#"{"type":7,"error":"Connection closed with an error.","allowReconnect":true}"#,
        ),
        (
            Close {
                error: Some("bye".into()),
                allow_reconnect: false,
            }
            .into(),
            r#"{"type":7,"error":"bye"}"#,
        ),
        (
            Ack { sequence_id: 1 }.into(),
            r#"{"type":8,"sequenceId":1}"#,
        ),
        (
            Sequence {
                sequence_id: 12_345_678_901,
            }
            .into(),
            r#"{"type":9,"sequenceId":12345678901}"#,
        ),
        (
            Sequence {
                sequence_id: u64::MAX,
            }
            .into(),
            r#"{"type":9,"sequenceId":18446744073709551615}"#,
        ),
    ]
}

#[test]
fn encodes_every_message_type_exactly() {
    for (message, text) in vectors() {
        assert_eq!(
            String::from_utf8(encode(&message)).unwrap(),
            format!("{text}\u{1e}")
        );
    }
}

#[test]
fn decodes_every_vector_back_to_the_same_bytes() {
    for (message, text) in vectors() {
        let decoded = decode_one(text);
        assert_eq!(decoded.message_type(), message.message_type());
        assert_eq!(encode(&decoded), framed(text), "{text}");
    }
}

#[test]
fn decodes_fields() {
    let HubMessage::Invocation(m) = decode_one(
        r#"{"type":1,"invocationId":"7","target":"Echo","arguments":["hi",{"a":[1,2]}],"streamIds":["8"]}"#,
    ) else {
        panic!()
    };
    assert_eq!(m.invocation_id.as_deref(), Some("7"));
    assert_eq!(m.target, "Echo");
    assert_eq!(m.arguments.len(), 2);
    assert_eq!(m.arguments[0].deserialize::<String>().unwrap(), "hi");
    assert_eq!(
        m.arguments[1].deserialize::<serde_json::Value>().unwrap(),
        serde_json::json!({"a":[1,2]})
    );
    assert_eq!(m.stream_ids, ["8"]);

    let HubMessage::StreamItem(m) = decode_one(r#"{"type":2,"invocationId":"1","item":null}"#)
    else {
        panic!()
    };
    assert_eq!(m.item.deserialize::<Option<i32>>().unwrap(), None);

    let HubMessage::Completion(m) = decode_one(r#"{"type":3,"invocationId":"1","error":"x"}"#)
    else {
        panic!()
    };
    assert!(matches!(m.outcome, CompletionOutcome::Error(ref e) if e == "x"));

    let HubMessage::Close(m) = decode_one(r#"{"type":7,"error":"e","allowReconnect":true}"#) else {
        panic!()
    };
    assert_eq!(
        m,
        Close {
            error: Some("e".into()),
            allow_reconnect: true
        }
    );
    let HubMessage::Close(m) = decode_one(r#"{"type":7,"error":null,"allowReconnect":false}"#)
    else {
        panic!()
    };
    assert_eq!(m, Close::default());

    let HubMessage::Ack(m) = decode_one(r#"{"type":8,"sequenceId":42}"#) else {
        panic!()
    };
    assert_eq!(m.sequence_id, 42);
    let HubMessage::Sequence(m) = decode_one(r#"{"type":9,"sequenceId":43}"#) else {
        panic!()
    };
    assert_eq!(m.sequence_id, 43);

    let HubMessage::CancelInvocation(m) =
        decode_one(r#"{"type":5,"invocationId":"9","headers":{"h":"v"}}"#)
    else {
        panic!()
    };
    assert_eq!(m.invocation_id, "9");
    assert_eq!(m.headers, headers(&[("h", "v")]));
}

/// What the official JS client (`JsonHubProtocol.writeMessage`) sends.
#[test]
fn decodes_official_js_client_output() {
    let from_js = [
        r#"{"type":1,"target":"Send","arguments":["hi"],"streamIds":[]}"#,
        r#"{"type":1,"invocationId":"0","target":"Echo","arguments":["hi",42],"streamIds":["1"]}"#,
        r#"{"type":4,"invocationId":"2","target":"Counter","arguments":[10,500],"streamIds":[]}"#,
        r#"{"type":2,"invocationId":"1","item":42}"#,
        r#"{"type":3,"invocationId":"0","result":"hi"}"#,
        r#"{"type":3,"invocationId":"0","result":null}"#,
        r#"{"type":3,"invocationId":"0","error":"err"}"#,
        r#"{"type":3,"invocationId":"0"}"#,
        r#"{"type":5,"invocationId":"2"}"#,
        r#"{"type":6}"#,
        r#"{"type":7}"#,
        r#"{"type":8,"sequenceId":1}"#,
        r#"{"type":9,"sequenceId":12345678901}"#,
    ];
    let all: Vec<u8> = from_js.iter().flat_map(|t| framed(t)).collect();
    let messages = decode_all(&all);
    let types: Vec<u8> = messages.iter().map(HubMessage::message_type).collect();
    assert_eq!(types, [1, 1, 4, 2, 3, 3, 3, 3, 5, 6, 7, 8, 9]);
    let HubMessage::Invocation(first) = &messages[0] else {
        panic!()
    };
    assert!(first.invocation_id.is_none());
    assert!(first.stream_ids.is_empty());
}

#[test]
fn lenient_property_order_and_unknown_properties() {
    let HubMessage::Invocation(m) = decode_one(
        r#" { "arguments" : [1, "two", [3]], "extra": {"deep": [{"x": null}]}, "target": "Echo", "invocationId": "3", "headers": {}, "type": 1, "zzz": 1.5e3 } "#,
    ) else {
        panic!()
    };
    assert_eq!(m.target, "Echo");
    assert_eq!(m.invocation_id.as_deref(), Some("3"));
    assert_eq!(m.arguments.len(), 3);
    assert_eq!(m.arguments[2].deserialize::<Vec<i32>>().unwrap(), [3]);

    let HubMessage::Completion(m) = decode_one(r#"{"result":{"a":1},"invocationId":"1","type":3}"#)
    else {
        panic!()
    };
    assert!(matches!(m.outcome, CompletionOutcome::Result(_)));

    let HubMessage::StreamItem(m) =
        decode_one(r#"{"item":[1],"type":2,"invocationId":"x","target":"ignored"}"#)
    else {
        panic!()
    };
    assert_eq!(m.invocation_id, "x");

    // Properties that belong to other message types are ignored.
    assert!(matches!(
        decode_one(r#"{"type":6,"invocationId":"1","arguments":[],"error":"x"}"#),
        HubMessage::Ping
    ));
}

#[test]
fn raw_argument_text_is_preserved() {
    let HubMessage::Invocation(m) =
        decode_one(r#"{"type":1,"target":"a","arguments":[ {"b" : 1.50} ,"\u00e9"]}"#)
    else {
        panic!()
    };
    let Payload::Json(raw) = &m.arguments[0] else {
        panic!()
    };
    assert_eq!(raw.get(), r#"{"b" : 1.50}"#);
    assert_eq!(m.arguments[1].deserialize::<String>().unwrap(), "é");
}

#[test]
fn unknown_message_types_are_skipped() {
    let mut bytes = framed(r#"{"type":99,"target":"x","arguments":[]}"#);
    bytes.extend(framed(r#"{"type":0}"#));
    bytes.extend(framed(r#"{"type":-1}"#));
    bytes.extend(framed(r#"{"type":6}"#));
    let mut buf = BytesMut::from(&bytes[..]);
    assert!(matches!(
        P.decode(&mut buf, None).unwrap(),
        Some(HubMessage::Ping)
    ));
    assert!(buf.is_empty());

    // only unknown messages: consumed, nothing returned
    let mut buf = BytesMut::from(&framed(r#"{"type":10,"sequenceId":1}"#)[..]);
    assert!(P.decode(&mut buf, None).unwrap().is_none());
    assert!(buf.is_empty());

    // unknown message followed by a partial one: the partial one stays buffered
    let mut bytes = framed(r#"{"type":11}"#);
    bytes.extend_from_slice(br#"{"type":6"#);
    let mut buf = BytesMut::from(&bytes[..]);
    assert!(P.decode(&mut buf, None).unwrap().is_none());
    assert_eq!(&buf[..], br#"{"type":6"#);
}

#[test]
fn messages_spanning_chunks_byte_by_byte() {
    let all: Vec<u8> = vectors().iter().flat_map(|(m, _)| encode(m)).collect();
    let mut buf = BytesMut::new();
    let mut decoded = Vec::new();
    for &byte in &all {
        buf.extend_from_slice(&[byte]);
        while let Some(m) = P.decode(&mut buf, Some(1024)).unwrap() {
            decoded.push(m);
        }
    }
    assert!(buf.is_empty());
    let again: Vec<u8> = decoded.iter().flat_map(encode).collect();
    assert_eq!(again, all);
}

#[test]
fn messages_spanning_uneven_chunks() {
    let all: Vec<u8> = vectors().iter().flat_map(|(m, _)| encode(m)).collect();
    for chunk in [2, 3, 7, 16, 64, 1000] {
        let mut buf = BytesMut::new();
        let mut count = 0;
        for piece in all.chunks(chunk) {
            buf.extend_from_slice(piece);
            while P.decode(&mut buf, None).unwrap().is_some() {
                count += 1;
            }
        }
        assert_eq!(count, vectors().len(), "chunk {chunk}");
    }
}

#[test]
fn oversize_detection() {
    let text = r#"{"type":1,"target":"Send","arguments":["0123456789"]}"#;
    let len = text.len();
    // body exactly at the limit: accepted
    let mut buf = BytesMut::from(&framed(text)[..]);
    assert!(P.decode(&mut buf, Some(len)).unwrap().is_some());
    // one byte over: rejected
    let mut buf = BytesMut::from(&framed(text)[..]);
    let err = P.decode(&mut buf, Some(len - 1)).unwrap_err();
    assert!(matches!(err, DecodeError::MessageTooLarge { limit } if limit == len - 1));
    assert_eq!(
        err.to_string(),
        format!(
            "The maximum message size of {}B was exceeded. The message size can be configured in AddHubOptions.",
            len - 1
        )
    );
    // incomplete, still within the limit: wait for more
    let mut buf = BytesMut::from(&text.as_bytes()[..len - 1]);
    assert!(P.decode(&mut buf, Some(len)).unwrap().is_none());
    // incomplete and already past the limit: rejected without waiting for the separator
    let mut buf = BytesMut::from(vec![b' '; 101].as_slice());
    assert!(matches!(
        P.decode(&mut buf, Some(100)),
        Err(DecodeError::MessageTooLarge { limit: 100 })
    ));
    let mut buf = BytesMut::from(vec![b' '; 100].as_slice());
    assert!(P.decode(&mut buf, Some(100)).unwrap().is_none());
    // the limit is per message: many small messages in one buffer are fine
    let mut buf = BytesMut::new();
    for _ in 0..100 {
        buf.extend_from_slice(&framed(r#"{"type":6}"#));
    }
    for _ in 0..100 {
        assert!(P.decode(&mut buf, Some(20)).unwrap().is_some());
    }
    // unlimited
    let big = format!(
        r#"{{"type":1,"target":"a","arguments":["{}"]}}"#,
        "x".repeat(1 << 20)
    );
    let mut buf = BytesMut::from(&framed(&big)[..]);
    assert!(P.decode(&mut buf, None).unwrap().is_some());
}

#[test]
fn malformed_records_are_errors() {
    let cases = [
        "",
        " ",
        "{",
        "[]",
        "null",
        "1",
        r#"{"type":"1"}"#,
        r#"{"type":1.5}"#,
        r#"{"type":1,"target":"a","arguments":{}}"#,
        r#"{"type":1,"target":"a","arguments":[1,]}"#,
        r#"{"type":1,"target":5,"arguments":[]}"#,
        r#"{"type":1,"target":"a","arguments":[],"streamIds":"1"}"#,
        r#"{"type":1,"target":"a","arguments":[],"headers":{"a":1}}"#,
        r#"{"type":1,"target":"a","arguments":[],"headers":[]}"#,
        r#"{"type":7,"allowReconnect":"yes"}"#,
        r#"{"type":8,"sequenceId":-1}"#,
        r#"{"type":8,"sequenceId":"1"}"#,
        r#"{"type":6}{"type":6}"#,
        r#"{"type":6} x"#,
    ];
    for text in cases {
        assert!(try_decode(text).is_err(), "{text}");
    }
    assert!(
        P.decode(
            &mut BytesMut::from(&b"{\"type\":1,\"target\":\"\xff\",\"arguments\":[]}\x1e"[..]),
            None
        )
        .is_err()
    );
}

#[test]
fn result_and_error_are_mutually_exclusive() {
    let err = try_decode(r#"{"type":3,"invocationId":"1","result":1,"error":"x"}"#).unwrap_err();
    assert_eq!(
        err.to_string(),
        "The 'error' and 'result' properties are mutually exclusive."
    );
    let err = try_decode(r#"{"type":3,"invocationId":"1","error":"x","result":null}"#).unwrap_err();
    assert!(matches!(err, DecodeError::Invalid(_)));
}

#[test]
fn missing_properties() {
    let err = try_decode(r#"{"target":"a","arguments":[]}"#).unwrap_err();
    assert_eq!(err.to_string(), "Missing required property 'type'.");
    let err = try_decode(r#"{"type":1,"arguments":[]}"#).unwrap_err();
    assert_eq!(err.to_string(), "Missing required property 'target'.");
    let err = try_decode(r#"{"type":1,"target":"a"}"#).unwrap_err();
    assert_eq!(err.to_string(), "Missing required property 'arguments'.");
    let err = try_decode(r#"{"type":2,"invocationId":"1"}"#).unwrap_err();
    assert_eq!(err.to_string(), "Missing required property 'item'.");
    let err = try_decode(r#"{"type":9}"#).unwrap_err();
    assert_eq!(err.to_string(), "Missing required property 'sequenceId'.");
}

#[test]
fn strings_are_escaped() {
    let message = HubMessage::Invocation(Invocation {
        headers: headers(&[("k\"", "v\n")]),
        invocation_id: Some("a\\b".into()),
        target: "t\u{1e}é☃".into(),
        arguments: vec![Payload::new("x\"\u{1e}y")],
        stream_ids: vec!["\t".into()],
    });
    let bytes = encode(&message);
    assert_eq!(
        String::from_utf8(bytes.clone()).unwrap(),
        "{\"type\":1,\"headers\":{\"k\\\"\":\"v\\n\"},\"invocationId\":\"a\\\\b\",\"target\":\"t\\u001eé☃\",\"arguments\":[\"x\\\"\\u001ey\"],\"streamIds\":[\"\\t\"]}\u{1e}"
    );
    // only the final byte is a record separator
    assert_eq!(bytes.iter().filter(|&&b| b == 0x1e).count(), 1);
    let HubMessage::Invocation(back) = decode_all(&bytes).remove(0) else {
        panic!()
    };
    assert_eq!(back.target, "t\u{1e}é☃");
    assert_eq!(back.invocation_id.as_deref(), Some("a\\b"));
    assert_eq!(back.headers, headers(&[("k\"", "v\n")]));
    assert_eq!(
        back.arguments[0].deserialize::<String>().unwrap(),
        "x\"\u{1e}y"
    );
}

#[test]
fn server_values_and_msgpack_payloads_are_written_as_json() {
    #[derive(Serialize)]
    #[serde(rename_all = "camelCase")]
    struct Message {
        user_name: String,
        count: u32,
        tags: Vec<&'static str>,
    }
    let value = Payload::new(Message {
        user_name: "ann".into(),
        count: 2,
        tags: vec!["a"],
    });
    // {"k": [1, -1, 1.5, nil, true, "s"]} as MessagePack
    let msgpack = Payload::MessagePack(Bytes::from_static(&[
        0x81, 0xa1, b'k', 0x96, 0x01, 0xff, 0xcb, 0x3f, 0xf8, 0, 0, 0, 0, 0, 0, 0xc0, 0xc3, 0xa1,
        b's',
    ]));
    let message = HubMessage::Invocation(Invocation::new("Receive", vec![value, msgpack]));
    assert_eq!(
        String::from_utf8(encode(&message)).unwrap(),
        "{\"type\":1,\"target\":\"Receive\",\"arguments\":[{\"userName\":\"ann\",\"count\":2,\"tags\":[\"a\"]},{\"k\":[1,-1,1.5,null,true,\"s\"]}]}\u{1e}"
    );
}

#[test]
fn encode_appends_to_existing_output() {
    let mut out = b"prefix".to_vec();
    P.encode(&HubMessage::Ping, &mut out).unwrap();
    P.encode(&HubMessage::Ping, &mut out).unwrap();
    assert_eq!(out, b"prefix{\"type\":6}\x1e{\"type\":6}\x1e");
}
