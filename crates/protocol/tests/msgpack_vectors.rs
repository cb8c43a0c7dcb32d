//! Byte-exact vectors for the `messagepack` hub protocol (spec §5.4): VarInt framing, array
//! layouts, lenient decoding, chunked input, size limits and malformed input.

// Test helpers outside `#[test]` functions unwrap and panic on purpose.
#![allow(clippy::unwrap_used, clippy::panic)]

use bytes::{Bytes, BytesMut};
use serde::{Deserialize, Serialize};
use signalbox_protocol::framing::{read_varint, write_varint};
use signalbox_protocol::{
    Ack, CancelInvocation, Close, Completion, CompletionOutcome, DecodeError, Headers, HubMessage,
    Invocation, Payload, Protocol, Sequence, StreamInvocation, StreamItem,
};

const P: Protocol = Protocol::MessagePack;

fn hex(text: &str) -> Vec<u8> {
    let digits: Vec<u8> = text.bytes().filter(u8::is_ascii_hexdigit).collect();
    digits
        .chunks(2)
        .map(|pair| u8::from_str_radix(std::str::from_utf8(pair).unwrap(), 16).unwrap())
        .collect()
}

fn encode(message: &HubMessage) -> Vec<u8> {
    P.encode_to_bytes(message).unwrap().to_vec()
}

/// Frames a body with its VarInt length.
fn frame(body: &[u8]) -> Vec<u8> {
    let mut out = Vec::new();
    write_varint(body.len(), &mut out);
    out.extend_from_slice(body);
    out
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

fn decode_body(body: &[u8]) -> Result<Option<HubMessage>, DecodeError> {
    P.decode(&mut BytesMut::from(&frame(body)[..]), None)
}

fn decode_one_body(body: &[u8]) -> HubMessage {
    decode_body(body).unwrap().unwrap()
}

fn raw(payload: &Payload) -> &[u8] {
    match payload {
        Payload::MessagePack(bytes) => bytes,
        other => panic!("not a raw MessagePack payload: {other:?}"),
    }
}

fn headers(pairs: &[(&str, &str)]) -> Headers {
    pairs
        .iter()
        .map(|(k, v)| ((*k).to_owned(), (*v).to_owned()))
        .collect()
}

/// Every message type with its exact framed wire form. Vectors marked "JS" are byte-identical
/// to what the official `@microsoft/signalr-protocol-msgpack` 10.0 client writes for the same
/// message.
fn vectors() -> Vec<(HubMessage, &'static str)> {
    vec![
        // JS
        (
            Invocation::new("Send", vec![Payload::new("hi")]).into(),
            "0e 96 01 80 c0 a4 53656e64 91 a2 6869 90",
        ),
        (
            Invocation {
                headers: headers(&[("a", "b")]),
                invocation_id: Some("0".into()),
                target: "Echo".into(),
                arguments: vec![Payload::new("hi"), Payload::new(42)],
                stream_ids: vec!["1".into()],
            }
            .into(),
            "16 96 01 81 a161 a162 a130 a4 4563686f 92 a26869 2a 91 a131",
        ),
        // empty-string id is written as nil, like .NET
        (
            Invocation {
                invocation_id: Some(String::new()),
                ..Invocation::new("a", vec![])
            }
            .into(),
            "08 96 01 80 c0 a161 90 90",
        ),
        // JS
        (
            StreamItem {
                headers: Headers::new(),
                invocation_id: "1".into(),
                item: Payload::new(42),
            }
            .into(),
            "06 94 02 80 a131 2a",
        ),
        (
            StreamItem {
                headers: Headers::new(),
                invocation_id: "1".into(),
                item: Payload::null(),
            }
            .into(),
            "06 94 02 80 a131 c0",
        ),
        // JS
        (
            Completion::result("0", Payload::new("hi")).into(),
            "09 95 03 80 a130 03 a26869",
        ),
        // JS; what .NET sends for a void hub method
        (
            Completion::result("0", Payload::null()).into(),
            "07 95 03 80 a130 03 c0",
        ),
        // JS
        (
            Completion::error("0", "err").into(),
            "0a 95 03 80 a130 01 a3657272",
        ),
        // JS
        (Completion::void("0").into(), "06 94 03 80 a130 02"),
        (
            Completion {
                headers: headers(&[("k", "v")]),
                invocation_id: "5".into(),
                outcome: CompletionOutcome::Void,
            }
            .into(),
            "0a 94 03 81 a16b a176 a135 02",
        ),
        // JS
        (
            StreamInvocation {
                headers: Headers::new(),
                invocation_id: "2".into(),
                target: "Counter".into(),
                arguments: vec![Payload::new(10), Payload::new(500)],
                stream_ids: vec![],
            }
            .into(),
            "13 96 04 80 a132 a7 436f756e746572 92 0a cd01f4 90",
        ),
        // JS
        (
            CancelInvocation {
                headers: Headers::new(),
                invocation_id: "2".into(),
            }
            .into(),
            "05 93 05 80 a132",
        ),
        // JS
        (HubMessage::Ping, "02 91 06"),
        (Close::default().into(), "04 93 07 c0 c2"),
        (
            Close {
                error: None,
                allow_reconnect: true,
            }
            .into(),
            "04 93 07 c0 c3",
        ),
        (
            Close {
                error: Some("e".into()),
                allow_reconnect: true,
            }
            .into(),
            "05 93 07 a165 c3",
        ),
        // like .NET, an empty error is written as nil
        (
            Close {
                error: Some(String::new()),
                allow_reconnect: false,
            }
            .into(),
            "04 93 07 c0 c2",
        ),
        // JS
        (Ack { sequence_id: 1 }.into(), "03 92 08 01"),
        (Ack { sequence_id: 300 }.into(), "05 92 08 cd012c"),
        (
            Sequence {
                sequence_id: 70_000,
            }
            .into(),
            "07 92 09 ce00011170",
        ),
        // JS
        (
            Sequence {
                sequence_id: 12_345_678_901,
            }
            .into(),
            "0b 92 09 cf00000002dfdc1c35",
        ),
    ]
}

#[test]
fn encodes_every_message_type_exactly() {
    for (message, expected) in vectors() {
        assert_eq!(encode(&message), hex(expected), "{message:?}");
    }
}

#[test]
fn decodes_every_vector_back_to_the_same_bytes() {
    for (message, expected) in vectors() {
        let bytes = hex(expected);
        let decoded = decode_all(&bytes);
        assert_eq!(decoded.len(), 1);
        assert_eq!(decoded[0].message_type(), message.message_type());
        assert_eq!(encode(&decoded[0]), bytes, "{expected}");
    }
}

#[test]
fn varint_length_prefixes() {
    // 53-byte body → 0x35
    let message = HubMessage::Invocation(Invocation::new("x".repeat(45), vec![]));
    let bytes = encode(&message);
    assert_eq!(bytes.len(), 54);
    assert_eq!(bytes[..7], hex("35 96 01 80 c0 d9 2d"));
    // 5248-byte body → 0x80 0x29
    let message = HubMessage::Invocation(Invocation::new("x".repeat(5239), vec![]));
    let bytes = encode(&message);
    assert_eq!(bytes.len(), 5250);
    assert_eq!(bytes[..9], hex("80 29 96 01 80 c0 da 1477"));
    assert_eq!(read_varint(&bytes).unwrap(), Some((5248, 2)));
    let HubMessage::Invocation(back) = decode_all(&bytes).remove(0) else {
        panic!()
    };
    assert_eq!(back.target.len(), 5239);
    // 16384-byte body → 3-byte prefix
    let message = HubMessage::Invocation(Invocation::new("x".repeat(16384 - 9), vec![]));
    let bytes = encode(&message);
    assert_eq!(bytes[..3], hex("80 80 01"));
    assert_eq!(decode_all(&bytes).len(), 1);
}

#[test]
fn decodes_fields() {
    let HubMessage::Invocation(m) = decode_all(&hex(
        "16 96 01 81 a161 a162 a130 a4 4563686f 92 a26869 2a 91 a131",
    ))
    .remove(0) else {
        panic!()
    };
    assert_eq!(m.headers, headers(&[("a", "b")]));
    assert_eq!(m.invocation_id.as_deref(), Some("0"));
    assert_eq!(m.target, "Echo");
    assert_eq!(raw(&m.arguments[0]), hex("a26869"));
    assert_eq!(raw(&m.arguments[1]), [0x2a]);
    assert_eq!(m.arguments[0].deserialize::<String>().unwrap(), "hi");
    assert_eq!(m.arguments[1].deserialize::<u8>().unwrap(), 42);
    assert_eq!(m.stream_ids, ["1"]);

    let HubMessage::Completion(m) = decode_all(&hex("0a 95 03 80 a130 01 a3657272")).remove(0)
    else {
        panic!()
    };
    assert!(matches!(m.outcome, CompletionOutcome::Error(ref e) if e == "err"));

    let HubMessage::Close(m) = decode_all(&hex("05 93 07 a165 c3")).remove(0) else {
        panic!()
    };
    assert_eq!(
        m,
        Close {
            error: Some("e".into()),
            allow_reconnect: true
        }
    );

    let HubMessage::Sequence(m) = decode_all(&hex("0b 92 09 cf00000002dfdc1c35")).remove(0) else {
        panic!()
    };
    assert_eq!(m.sequence_id, 12_345_678_901);
}

/// What the official JS client sends (hex captured from `MessagePackHubProtocol.writeMessage`).
#[test]
fn decodes_official_js_client_output() {
    let from_js = [
        "0e960180c0a453656e6491a2686990",
        "12960180a130a44563686f92a268692a91a131",
        "13960480a132a7436f756e746572920acd01f490",
        "06940280a1312a",
        "09950380a13003a26869",
        "07950380a13003c0",
        "0a950380a13001a3657272",
        "06940380a13002",
        "05930580a132",
        "029106",
        "039207c0",
        "03920801",
        "0b9209cf00000002dfdc1c35",
    ];
    let all: Vec<u8> = from_js.iter().flat_map(|h| hex(h)).collect();
    let messages = decode_all(&all);
    let types: Vec<u8> = messages.iter().map(HubMessage::message_type).collect();
    assert_eq!(types, [1, 1, 4, 2, 3, 3, 3, 3, 5, 6, 7, 8, 9]);
    let HubMessage::Close(close) = &messages[10] else {
        panic!()
    };
    assert_eq!(*close, Close::default());
}

#[test]
fn raw_payload_bytes_are_captured_exactly() {
    // arguments: [{"a": [1, 2.5, nil]}, bin(2), timestamp ext(-1, 4 bytes), "z"]
    let args = [
        hex("81 a161 93 01 cb4004000000000000 c0"),
        hex("c4 02 0102"),
        hex("d6 ff 00000001"),
        hex("a17a"),
    ];
    let mut body = hex("96 01 80 a131 a161 94");
    for a in &args {
        body.extend_from_slice(a);
    }
    body.extend_from_slice(&hex("90"));
    let HubMessage::Invocation(m) = decode_one_body(&body) else {
        panic!()
    };
    assert_eq!(m.arguments.len(), 4);
    for (payload, expected) in m.arguments.iter().zip(&args) {
        assert_eq!(raw(payload), &expected[..]);
    }
    // and they are re-emitted verbatim
    assert_eq!(encode(&HubMessage::Invocation(m)), frame(&body));
}

#[test]
fn lenient_decoding() {
    // message type and sequence ids in any integer width
    for ping in [
        "91 cc06",
        "91 cd0006",
        "91 ce00000006",
        "91 cf0000000000000006",
        "91 d006",
        "91 d30000000000000006",
    ] {
        assert!(
            matches!(decode_one_body(&hex(ping)), HubMessage::Ping),
            "{ping}"
        );
    }
    for (ack, id) in [
        ("92 08 cc ff", 255),
        ("92 08 cd 0100", 256),
        ("92 08 d2 00010000", 65536),
        ("92 08 d3 0000000000000007", 7),
    ] {
        let HubMessage::Ack(a) = decode_one_body(&hex(ack)) else {
            panic!()
        };
        assert_eq!(a.sequence_id, id);
    }
    // array16 / array32 message headers
    assert!(matches!(
        decode_one_body(&hex("dc0001 06")),
        HubMessage::Ping
    ));
    assert!(matches!(
        decode_one_body(&hex("dd00000001 06")),
        HubMessage::Ping
    ));
    // 5-element Invocation / StreamInvocation without stream ids (older clients)
    let HubMessage::Invocation(m) = decode_one_body(&hex("95 01 80 a130 a4 4563686f 91 a26869"))
    else {
        panic!()
    };
    assert_eq!(m.invocation_id.as_deref(), Some("0"));
    assert!(m.stream_ids.is_empty());
    let HubMessage::StreamInvocation(m) = decode_one_body(&hex("95 04 80 a132 a161 90")) else {
        panic!()
    };
    assert_eq!(m.invocation_id, "2");
    // empty-string invocation id = non-blocking
    let HubMessage::Invocation(m) = decode_one_body(&hex("96 01 80 a0 a161 90 90")) else {
        panic!()
    };
    assert_eq!(m.invocation_id, None);
    // nil stream ids, nil headers
    let HubMessage::Invocation(m) = decode_one_body(&hex("96 01 c0 c0 a161 90 c0")) else {
        panic!()
    };
    assert!(m.stream_ids.is_empty() && m.headers.is_empty());
    // str8/str16 strings
    let HubMessage::CancelInvocation(m) = decode_one_body(&hex("93 05 80 d9 01 37")) else {
        panic!()
    };
    assert_eq!(m.invocation_id, "7");
    let HubMessage::CancelInvocation(m) = decode_one_body(&hex("93 05 80 da 0001 37")) else {
        panic!()
    };
    assert_eq!(m.invocation_id, "7");
    // Close with 2 elements (JS) or 3 (.NET)
    assert_eq!(
        match decode_one_body(&hex("92 07 a178")) {
            HubMessage::Close(c) => c,
            other => panic!("{other:?}"),
        },
        Close {
            error: Some("x".into()),
            allow_reconnect: false
        }
    );
    // extra trailing array elements are ignored
    assert!(matches!(
        decode_one_body(&hex("93 06 a178 80")),
        HubMessage::Ping
    ));
    let HubMessage::StreamItem(m) = decode_one_body(&hex("95 02 80 a131 2a c3")) else {
        panic!()
    };
    assert_eq!(raw(&m.item), [0x2a]);
    let HubMessage::Ack(m) = decode_one_body(&hex("93 08 05 a178")) else {
        panic!()
    };
    assert_eq!(m.sequence_id, 5);
    let HubMessage::Completion(m) = decode_one_body(&hex("96 03 80 a130 02 c0 c0")) else {
        panic!()
    };
    assert!(matches!(m.outcome, CompletionOutcome::Void));
    let HubMessage::Invocation(m) = decode_one_body(&hex("97 01 80 c0 a161 90 90 ff")) else {
        panic!()
    };
    assert_eq!(m.target, "a");
}

#[test]
fn unknown_message_types_are_skipped() {
    let mut bytes = frame(&hex("93 63 a178 80")); // type 99
    bytes.extend(frame(&hex("91 00"))); // type 0
    bytes.extend(frame(&hex("91 ff"))); // type -1
    bytes.extend(frame(&hex("91 cf ffffffffffffffff"))); // type u64::MAX
    bytes.extend(hex("02 91 06"));
    let mut buf = BytesMut::from(&bytes[..]);
    assert!(matches!(
        P.decode(&mut buf, None).unwrap(),
        Some(HubMessage::Ping)
    ));
    assert!(buf.is_empty());

    // only unknown: consumed, nothing returned
    let mut buf = BytesMut::from(&frame(&hex("92 0a 01"))[..]);
    assert!(P.decode(&mut buf, None).unwrap().is_none());
    assert!(buf.is_empty());

    // unknown followed by a partial message: the partial one stays buffered
    let mut bytes = frame(&hex("91 0b"));
    bytes.extend(hex("02 91"));
    let mut buf = BytesMut::from(&bytes[..]);
    assert!(P.decode(&mut buf, None).unwrap().is_none());
    assert_eq!(&buf[..], hex("02 91"));
}

#[test]
fn messages_spanning_chunks_byte_by_byte() {
    let all: Vec<u8> = vectors().iter().flat_map(|(_, h)| hex(h)).collect();
    let mut buf = BytesMut::new();
    let mut decoded = Vec::new();
    for &byte in &all {
        buf.extend_from_slice(&[byte]);
        while let Some(m) = P.decode(&mut buf, Some(1024)).unwrap() {
            decoded.push(m);
        }
    }
    assert!(buf.is_empty());
    assert_eq!(decoded.len(), vectors().len());
    let again: Vec<u8> = decoded.iter().flat_map(encode).collect();
    assert_eq!(again, all);

    // a message with a multi-byte prefix, fed one byte at a time
    let big = encode(&HubMessage::Invocation(Invocation::new(
        "x".repeat(5239),
        vec![],
    )));
    let mut buf = BytesMut::new();
    for (i, &byte) in big.iter().enumerate() {
        buf.extend_from_slice(&[byte]);
        let got = P.decode(&mut buf, None).unwrap();
        assert_eq!(got.is_some(), i == big.len() - 1);
    }
}

#[test]
fn oversize_detection() {
    let bytes = encode(&HubMessage::Invocation(Invocation::new(
        "x".repeat(45),
        vec![],
    ))); // 53-byte body
    let mut buf = BytesMut::from(&bytes[..]);
    assert!(P.decode(&mut buf, Some(53)).unwrap().is_some());
    let mut buf = BytesMut::from(&bytes[..]);
    assert!(matches!(
        P.decode(&mut buf, Some(52)),
        Err(DecodeError::MessageTooLarge { limit: 52 })
    ));
    // detected as soon as the length prefix is complete, before the body arrives
    let mut buf = BytesMut::from(&hex("80 29")[..]);
    assert!(matches!(
        P.decode(&mut buf, Some(5000)),
        Err(DecodeError::MessageTooLarge { limit: 5000 })
    ));
    let mut buf = BytesMut::from(&hex("80")[..]);
    assert!(P.decode(&mut buf, Some(5000)).unwrap().is_none());
    // declared length within the limit but body incomplete: wait
    let mut buf = BytesMut::from(&bytes[..20]);
    assert!(P.decode(&mut buf, Some(53)).unwrap().is_none());
    assert_eq!(buf.len(), 20);
    // a 2 GB declaration with no limit just waits (no allocation)
    let mut buf = BytesMut::from(&hex("ff ff ff ff 07 91")[..]);
    assert!(P.decode(&mut buf, None).unwrap().is_none());
    // prefixes over 5 bytes / 2 GB are errors
    let mut buf = BytesMut::from(&hex("ff ff ff ff 08")[..]);
    assert!(matches!(
        P.decode(&mut buf, None),
        Err(DecodeError::MessagePack(_))
    ));
    let mut buf = BytesMut::from(&hex("80 80 80 80 80 01")[..]);
    assert!(P.decode(&mut buf, None).is_err());
}

#[test]
fn malformed_bodies_are_errors() {
    let cases = [
        "",                               // zero-length message
        "c0",                             // not an array
        "90",                             // empty array
        "91",                             // truncated
        "91 a131",                        // type is a string
        "91 ca 3f800000",                 // type is a float
        "95 01 80 c0 a161",               // invocation: arguments missing
        "94 01 80 c0 a161",               // invocation: too few elements
        "96 01 80 c0 a0 90 90",           // empty target
        "96 01 80 c0 c0 90 90",           // nil target
        "96 01 80 c0 01 90 90",           // target is an int
        "96 01 80 c0 a161 80 90",         // arguments is a map
        "96 01 80 c0 a161 91 90",         // argument count beyond the body
        "96 01 80 c0 a161 91 c1 90",      // reserved marker in an argument
        "96 01 80 c0 a161 90 91 01",      // stream id is an int
        "96 01 80 c0 a162ff 90 90",       // target is invalid UTF-8 (and truncated)
        "96 01 80 c0 a2 61ff 90 90",      // target is invalid UTF-8
        "96 01 81 a161 01 c0 a161 90 90", // header value is an int
        "96 01 8f c0 a161 90 90",         // header map count beyond the body
        "96 04 80 c0 a161 90 90",         // stream invocation without id
        "93 02 80 a131",                  // stream item: item missing
        "94 02 80 c0 01",                 // stream item: nil id
        "93 03 80 a131",                  // completion: too few elements
        "95 03 80 a131 04 c0",            // invalid result kind
        "94 03 80 a131 01",               // error kind without error
        "94 03 80 a131 03",               // result kind without result
        "95 03 80 a131 a131 c0",          // result kind is a string
        "92 05 80",                       // cancel without id
        "91 07",                          // close without error element
        "93 07 c0 01",                    // allowReconnect is an int
        "91 08",                          // ack without id
        "92 08 ff",                       // negative sequence id
        "92 09 a131",                     // sequence id is a string
        "dc 00",                          // truncated array16 header
        "dd 00 00 00",                    // truncated array32 header
        "96 01 80 c0 a161 dc ffff 90",    // huge argument count
        "96 01 80 c0 da ffff 61 90 90",   // huge string length
    ];
    for case in cases {
        assert!(decode_body(&hex(case)).is_err(), "{case}");
    }
}

#[test]
fn values_and_json_payloads_are_written_as_msgpack() {
    #[derive(Serialize, Deserialize, Debug, PartialEq)]
    struct Message {
        user: String,
        count: u32,
    }
    let message = HubMessage::Invocation(Invocation::new(
        "R",
        vec![
            Payload::new(Message {
                user: "ann".into(),
                count: 2,
            }),
            Payload::from_json_text(r#"{"k":[1,-1,1.5,null,true,"s"]}"#).unwrap(),
            Payload::new(vec![1u8, 2]),
            Payload::new(Option::<String>::None),
        ],
    ));
    let bytes = encode(&message);
    let body = hex("96 01 80 c0 a152 94
         82 a475736572 a3616e6e a5636f756e74 02
         81 a16b 96 01 ff cb3ff8000000000000 c0 c3 a173
         92 01 02
         c0
         90");
    assert_eq!(bytes, frame(&body));
    // and back again
    let HubMessage::Invocation(m) = decode_all(&bytes).remove(0) else {
        panic!()
    };
    assert_eq!(
        m.arguments[0].deserialize::<Message>().unwrap(),
        Message {
            user: "ann".into(),
            count: 2
        }
    );
    assert_eq!(
        m.arguments[1].deserialize::<serde_json::Value>().unwrap(),
        serde_json::json!({"k":[1,-1,1.5,null,true,"s"]})
    );
    // a raw MessagePack payload also converts to JSON for JSON clients
    let json = Protocol::Json
        .encode_to_bytes(&HubMessage::Invocation(m))
        .unwrap();
    assert_eq!(
        &json[..],
        b"{\"type\":1,\"target\":\"R\",\"arguments\":[{\"user\":\"ann\",\"count\":2},{\"k\":[1,-1,1.5,null,true,\"s\"]},[1,2],null]}\x1e"
    );
}

#[test]
fn encode_appends_to_existing_output() {
    let mut out = vec![0xaa];
    P.encode(&HubMessage::Ping, &mut out).unwrap();
    P.encode(&Ack { sequence_id: 1 }.into(), &mut out).unwrap();
    assert_eq!(out, hex("aa 02 91 06 03 92 08 01"));
}

#[test]
fn payloads_survive_a_round_trip_through_bytes() {
    let bytes = Bytes::from(encode(
        &Completion::result("1", Payload::new(vec!["a", "b"])).into(),
    ));
    let HubMessage::Completion(c) = decode_all(&bytes).remove(0) else {
        panic!()
    };
    let CompletionOutcome::Result(result) = c.outcome else {
        panic!()
    };
    assert_eq!(result.deserialize::<Vec<String>>().unwrap(), ["a", "b"]);
}
