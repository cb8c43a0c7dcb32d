//! Garbage in, errors out: thousands of random and mutated inputs fed to both hub protocol
//! decoders and both handshake parsers must never panic, hang or over-allocate.

// Test helpers outside `#[test]` functions unwrap and panic on purpose.
#![allow(clippy::unwrap_used, clippy::panic)]

use bytes::BytesMut;
use signalbox_protocol::{
    Completion, HubMessage, Invocation, Payload, Protocol, StreamItem, parse_handshake_request,
    parse_handshake_response,
};

/// xorshift64*: tiny, deterministic, good enough to generate garbage.
struct Rng(u64);

impl Rng {
    fn next(&mut self) -> u64 {
        self.0 ^= self.0 >> 12;
        self.0 ^= self.0 << 25;
        self.0 ^= self.0 >> 27;
        self.0.wrapping_mul(0x2545_f491_4f6c_dd1d)
    }

    fn below(&mut self, n: usize) -> usize {
        (self.next() % n as u64) as usize
    }

    fn byte(&mut self) -> u8 {
        self.next() as u8
    }

    fn pick<'a, T>(&mut self, items: &'a [T]) -> &'a T {
        &items[self.below(items.len())]
    }
}

/// Valid messages in both protocols, used as seeds for mutation.
fn seeds() -> Vec<Vec<u8>> {
    let messages: Vec<HubMessage> = vec![
        Invocation::new(
            "Send",
            vec![Payload::new("hi"), Payload::new(vec![1, 2, 3])],
        )
        .into(),
        Invocation {
            invocation_id: Some("12".into()),
            stream_ids: vec!["1".into()],
            ..Invocation::new(
                "Echo",
                vec![Payload::new(
                    serde_json::json!({"a": [1, {"b": null}], "c": 1.5}),
                )],
            )
        }
        .into(),
        StreamItem {
            headers: [("k".to_owned(), "v".to_owned())].into(),
            invocation_id: "3".into(),
            item: Payload::new(7),
        }
        .into(),
        Completion::result("1", Payload::new("x")).into(),
        Completion::error("1", "bad").into(),
        Completion::void("1").into(),
        HubMessage::Ping,
        signalbox_protocol::Close {
            error: Some("e".into()),
            allow_reconnect: true,
        }
        .into(),
        signalbox_protocol::Ack { sequence_id: 300 }.into(),
        signalbox_protocol::Sequence {
            sequence_id: 1 << 40,
        }
        .into(),
    ];
    let mut seeds = Vec::new();
    for p in Protocol::ALL {
        for m in &messages {
            seeds.push(p.encode_to_bytes(m).unwrap().to_vec());
        }
    }
    seeds.push(b"{\"protocol\":\"json\",\"version\":1}\x1e".to_vec());
    seeds.push(b"{\"protocol\":\"messagepack\",\"version\":2,\"x\":[]}\x1e".to_vec());
    seeds.push(b"{}\x1e".to_vec());
    seeds.push(b"{\"error\":\"nope\"}\x1e".to_vec());
    seeds
}

const JSON_TOKENS: &[&str] = &[
    "{",
    "}",
    "[",
    "]",
    ",",
    ":",
    "\"type\"",
    "\"invocationId\"",
    "\"target\"",
    "\"arguments\"",
    "\"item\"",
    "\"result\"",
    "\"error\"",
    "\"headers\"",
    "\"streamIds\"",
    "\"sequenceId\"",
    "\"allowReconnect\"",
    "\"protocol\"",
    "\"version\"",
    "1",
    "3",
    "6",
    "7",
    "-1",
    "1e400",
    "99999999999999999999",
    "0.5",
    "null",
    "true",
    "false",
    "\"x\"",
    "\"\\u0000\"",
    "\"\\ud800\"",
    "\"\\",
    "\u{1e}",
    " ",
    "\u{feff}",
    "\u{2028}",
];

const MSGPACK_BYTES: &[u8] = &[
    0x00, 0x01, 0x03, 0x06, 0x07, 0x09, 0x7f, 0x80, 0x81, 0x8f, 0x90, 0x91, 0x95, 0x96, 0x9f, 0xa0,
    0xa1, 0xbf, 0xc0, 0xc1, 0xc2, 0xc3, 0xc4, 0xc5, 0xc6, 0xc7, 0xc8, 0xc9, 0xca, 0xcb, 0xcc, 0xcd,
    0xce, 0xcf, 0xd0, 0xd3, 0xd4, 0xd8, 0xd9, 0xda, 0xdb, 0xdc, 0xdd, 0xde, 0xdf, 0xe0, 0xff,
];

fn mutate(rng: &mut Rng, seed: &[u8]) -> Vec<u8> {
    let mut v = seed.to_vec();
    for _ in 0..=rng.below(4) {
        match rng.below(6) {
            0 if !v.is_empty() => {
                let i = rng.below(v.len());
                v[i] = rng.byte();
            }
            1 if !v.is_empty() => {
                let i = rng.below(v.len());
                v[i] ^= 1 << rng.below(8);
            }
            2 => {
                let i = rng.below(v.len() + 1);
                v.truncate(i);
            }
            3 => {
                let i = rng.below(v.len() + 1);
                v.insert(i, *rng.pick(MSGPACK_BYTES));
            }
            4 if !v.is_empty() => {
                let i = rng.below(v.len());
                v.remove(i);
            }
            _ => {
                let start = rng.below(v.len() + 1);
                let end = start + rng.below(v.len() - start + 1);
                let copy = v[start..end].to_vec();
                let at = rng.below(v.len() + 1);
                v.splice(at..at, copy);
            }
        }
    }
    v
}

fn generate(rng: &mut Rng, seeds: &[Vec<u8>]) -> Vec<u8> {
    match rng.below(6) {
        5 => rng.pick(seeds).clone(),
        0 => (0..rng.below(80)).map(|_| rng.byte()).collect(),
        1 => (0..rng.below(40))
            .map(|_| *rng.pick(MSGPACK_BYTES))
            .collect(),
        2 => {
            let mut v = Vec::new();
            for _ in 0..rng.below(30) {
                v.extend_from_slice(rng.pick(JSON_TOKENS).as_bytes());
            }
            if rng.below(2) == 0 {
                v.push(0x1e);
            }
            v
        }
        3 => {
            // a random VarInt-framed body of msgpack-ish bytes
            let body: Vec<u8> = (0..rng.below(30))
                .map(|_| *rng.pick(MSGPACK_BYTES))
                .collect();
            let mut v = Vec::new();
            signalbox_protocol::framing::write_varint(body.len(), &mut v);
            v.extend(body);
            v
        }
        _ => {
            let seed = rng.pick(seeds).clone();
            mutate(rng, &seed)
        }
    }
}

/// Decodes everything in `input` (optionally one byte at a time); must never panic or loop.
fn drain(protocol: Protocol, input: &[u8], max: Option<usize>, bytewise: bool) -> usize {
    let mut buf = BytesMut::new();
    let mut decoded = 0;
    let chunks: Vec<&[u8]> = if bytewise {
        input.chunks(1).collect()
    } else {
        vec![input]
    };
    for chunk in chunks {
        buf.extend_from_slice(chunk);
        loop {
            let before = buf.len();
            match protocol.decode(&mut buf, max) {
                Ok(Some(message)) => {
                    assert!(buf.len() < before, "decode made no progress");
                    decoded += 1;
                    exercise(&message);
                }
                Ok(None) => break,
                Err(e) => {
                    let _ = e.to_string();
                    return decoded;
                }
            }
        }
    }
    decoded
}

/// Whatever was decoded must re-encode (or fail cleanly) and its payloads must type cleanly.
fn exercise(message: &HubMessage) {
    for p in Protocol::ALL {
        let _ = p.encode_to_bytes(message);
    }
    let payloads: Vec<&Payload> = match message {
        HubMessage::Invocation(m) => m.arguments.iter().collect(),
        HubMessage::StreamInvocation(m) => m.arguments.iter().collect(),
        HubMessage::StreamItem(m) => vec![&m.item],
        HubMessage::Completion(Completion {
            outcome: signalbox_protocol::CompletionOutcome::Result(r),
            ..
        }) => {
            vec![r]
        }
        _ => vec![],
    };
    for payload in payloads {
        let _ = payload.deserialize::<serde_json::Value>();
        let _ = format!("{payload:?}");
    }
}

fn handshakes(input: &[u8], max: Option<usize>) {
    let mut buf = BytesMut::from(input);
    for _ in 0..input.len() + 1 {
        let before = buf.len();
        match parse_handshake_request(&mut buf, max) {
            Ok(Some(_)) => assert!(buf.len() < before),
            Ok(None) | Err(_) => break,
        }
    }
    let mut buf = BytesMut::from(input);
    for _ in 0..input.len() + 1 {
        let before = buf.len();
        match parse_handshake_response(&mut buf) {
            Ok(Some(_)) => assert!(buf.len() < before),
            Ok(None) | Err(_) => break,
        }
    }
}

#[test]
fn random_and_mutated_input_never_panics() {
    let seeds = seeds();
    let mut rng = Rng(0x5eed_1234_abcd_0001);
    let mut decoded = 0;
    for i in 0..30_000 {
        let input = generate(&mut rng, &seeds);
        let max = match rng.below(3) {
            0 => None,
            1 => Some(rng.below(64)),
            _ => Some(32 * 1024),
        };
        let bytewise = i % 10 == 0;
        for p in Protocol::ALL {
            decoded += drain(p, &input, max, bytewise);
        }
        handshakes(&input, max);
    }
    // mutated seeds are often still valid: make sure the generator reaches the decoders' happy path
    assert!(decoded > 1000, "only {decoded} messages decoded");
}

#[test]
fn concatenated_garbage_streams() {
    let seeds = seeds();
    let mut rng = Rng(42);
    for _ in 0..500 {
        let mut stream = Vec::new();
        for _ in 0..rng.below(20) {
            stream.extend(generate(&mut rng, &seeds));
        }
        for p in Protocol::ALL {
            drain(p, &stream, Some(1024), false);
            drain(p, &stream, None, true);
        }
        handshakes(&stream, None);
    }
}

#[test]
fn deeply_nested_payloads_are_rejected_or_handled() {
    // JSON: the argument is captured raw without recursion; typing it or transcoding it to
    // MessagePack hits serde_json's recursion limit and fails cleanly (no stack overflow)
    let deep = format!(
        "{{\"type\":1,\"target\":\"a\",\"arguments\":[{}{}]}}\u{1e}",
        "[".repeat(10_000),
        "]".repeat(10_000)
    );
    let message = Protocol::Json
        .decode(&mut BytesMut::from(deep.as_bytes()), None)
        .unwrap()
        .unwrap();
    let HubMessage::Invocation(m) = &message else {
        panic!()
    };
    assert!(m.arguments[0].deserialize::<serde_json::Value>().is_err());
    assert!(Protocol::MessagePack.encode_to_bytes(&message).is_err());
    assert_eq!(
        Protocol::Json.encode_to_bytes(&message).unwrap().len(),
        deep.len()
    );

    // MessagePack: the skipper is iterative, so the message decodes; typing the payload hits
    // rmp_serde's depth limit and fails cleanly
    let mut body = vec![0x96, 0x01, 0x80, 0xc0, 0xa1, b'a', 0x91];
    body.extend(std::iter::repeat_n(0x91, 100_000));
    body.push(0x01);
    body.push(0x90);
    let mut framed = Vec::new();
    signalbox_protocol::framing::write_varint(body.len(), &mut framed);
    framed.extend(body);
    let message = Protocol::MessagePack
        .decode(&mut BytesMut::from(&framed[..]), None)
        .unwrap()
        .unwrap();
    let HubMessage::Invocation(m) = &message else {
        panic!()
    };
    assert!(m.arguments[0].deserialize::<serde_json::Value>().is_err());
    assert!(Protocol::Json.encode_to_bytes(&message).is_err());
    // re-encoding as MessagePack copies the raw bytes and succeeds
    assert_eq!(
        Protocol::MessagePack
            .encode_to_bytes(&message)
            .unwrap()
            .len(),
        framed.len()
    );
}
