//! `Payload::deserialize` into `serde_json::Value` (what a hub method taking `Value` arguments
//! does with decoded arguments), and transcoding between the protocols (`write_json`,
//! `write_msgpack`: what relaying a value to a client of the other protocol does).
//!
//! Input: one byte (low bit: 0 = the rest is JSON text, 1 = the rest is one MessagePack value),
//! then the value's bytes.
#![no_main]

use bytes::Bytes;
use libfuzzer_sys::fuzz_target;
use serde_json::Value;
use signalbox_protocol::Payload;

fuzz_target!(|data: &[u8]| {
    let Some((&config, rest)) = data.split_first() else {
        return;
    };
    let payload = if config & 1 == 0 {
        let Ok(text) = std::str::from_utf8(rest) else {
            return;
        };
        match Payload::from_json_text(text) {
            Ok(payload) => payload,
            Err(_) => return,
        }
    } else {
        Payload::MessagePack(Bytes::copy_from_slice(rest))
    };

    let value = payload.deserialize::<Value>();

    // JSON output, when produced from a value that types, is valid JSON. (Raw JSON arguments
    // are kept verbatim: text serde_json's raw-value scan accepts but cannot type, such as a lone
    // surrogate escape `"\ud83d"`, is passed through as is; see docs/fuzzing.md.)
    let mut json = Vec::new();
    if payload.write_json(&mut json).is_ok() && value.is_ok() {
        let parsed: Result<Value, _> = serde_json::from_slice(&json);
        assert!(
            parsed.is_ok(),
            "write_json wrote invalid JSON: {:?}",
            String::from_utf8_lossy(&json)
        );
    }

    // MessagePack output, when produced, is one value that types to the same JSON value.
    let mut msgpack = Vec::new();
    if payload.write_msgpack(&mut msgpack).is_ok() {
        let again = Payload::MessagePack(Bytes::from(msgpack)).deserialize::<Value>();
        if let (Ok(value), Payload::Json(_)) = (&value, &payload) {
            match again {
                Ok(again) => assert_eq!(&again, value, "JSON → MessagePack changed the value"),
                Err(e) => panic!("JSON value transcoded to MessagePack does not type back: {e}"),
            }
        }
    }
});
