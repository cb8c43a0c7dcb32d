//! Argument, stream-item and result values ([`Payload`]).
//!
//! SignalR hub messages carry arbitrary user values (`arguments`, `item`, `result`). The
//! .NET server binds them with an `IInvocationBinder` while parsing; this crate keeps them
//! raw instead and types them later with [`Payload::deserialize`], so the protocol layer never
//! needs to know a hub's method signatures (spec §5.3/§5.4).

use std::fmt;
use std::sync::Arc;

use bytes::Bytes;
use serde_json::value::RawValue;

use crate::protocol::EncodeError;

/// Deepest nesting of arrays / maps accepted when typing or transcoding a MessagePack payload
/// (the same limit `serde_json` applies to JSON), so hostile input cannot overflow the stack.
pub const MAX_PAYLOAD_DEPTH: usize = 128;

fn msgpack_deserializer(
    bytes: &[u8],
) -> rmp_serde::Deserializer<rmp_serde::decode::ReadRefReader<'_, [u8]>> {
    let mut de = rmp_serde::Deserializer::from_read_ref(bytes);
    de.set_max_depth(MAX_PAYLOAD_DEPTH);
    de
}

/// One argument / item / result value.
#[derive(Clone)]
pub enum Payload {
    /// Raw JSON text of one value as received from a JSON client (kept unparsed until typed).
    Json(Arc<RawValue>),
    /// One raw MessagePack-encoded value, as received (exactly the bytes of that value).
    MessagePack(Bytes),
    /// A server-side value, serialised lazily per protocol.
    Value(Arc<dyn erased_serde::Serialize + Send + Sync>),
}

/// Error returned by [`Payload::deserialize`] when a value does not match the requested type.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum PayloadError {
    /// The JSON value (or the JSON form of a server-side value) did not match the type.
    #[error("{0}")]
    Json(#[from] serde_json::Error),
    /// The MessagePack value did not match the type.
    #[error("{0}")]
    MessagePack(#[from] rmp_serde::decode::Error),
}

impl Payload {
    /// Wraps a server-side value; it is serialised when a message carrying it is encoded.
    pub fn new<T: serde::Serialize + Send + Sync + 'static>(value: T) -> Self {
        Payload::Value(Arc::new(value))
    }

    /// The `null` value (JSON `null`, MessagePack `nil`).
    pub fn null() -> Self {
        Payload::Value(Arc::new(()))
    }

    /// Parses `text` as one JSON value and keeps it raw (as if received from a JSON client).
    pub fn from_json_text(text: impl Into<String>) -> Result<Self, PayloadError> {
        let raw = RawValue::from_string(text.into())?;
        Ok(Payload::Json(Arc::from(raw)))
    }

    /// Types the value.
    ///
    /// `Json` is parsed with `serde_json::from_str`, `MessagePack` with `rmp_serde` (structs may
    /// be maps or arrays; nesting is limited to [`MAX_PAYLOAD_DEPTH`]), and `Value` is round-tripped through `serde_json::Value`.
    pub fn deserialize<T: serde::de::DeserializeOwned>(&self) -> Result<T, PayloadError> {
        match self {
            Payload::Json(raw) => Ok(serde_json::from_str(raw.get())?),
            Payload::MessagePack(bytes) => Ok(T::deserialize(&mut msgpack_deserializer(bytes))?),
            Payload::Value(value) => {
                let json = serde_json::to_value(&**value)?;
                Ok(serde_json::from_value(json)?)
            }
        }
    }

    /// Writes the value as JSON text.
    ///
    /// `Json` is copied verbatim, `MessagePack` is transcoded, `Value` is serialised with
    /// `serde_json`. On error `out` may hold a partial value.
    pub fn write_json(&self, out: &mut Vec<u8>) -> Result<(), EncodeError> {
        match self {
            Payload::Json(raw) => {
                out.extend_from_slice(raw.get().as_bytes());
                Ok(())
            }
            Payload::MessagePack(bytes) => {
                let mut de = msgpack_deserializer(bytes);
                let mut ser = serde_json::Serializer::new(&mut *out);
                serde_transcode::transcode(&mut de, &mut ser)?;
                Ok(())
            }
            Payload::Value(value) => {
                serde_json::to_writer(&mut *out, &**value)?;
                Ok(())
            }
        }
    }

    /// Writes the value as exactly one MessagePack value.
    ///
    /// `MessagePack` is copied verbatim, `Json` is transcoded, `Value` is serialised with
    /// `rmp_serde` using `with_struct_map()` so structs become maps keyed by field name (like
    /// the .NET server's contractless resolver). On error `out` may hold a partial value.
    pub fn write_msgpack(&self, out: &mut Vec<u8>) -> Result<(), EncodeError> {
        match self {
            Payload::MessagePack(bytes) => {
                out.extend_from_slice(bytes);
                Ok(())
            }
            Payload::Json(raw) => {
                let mut de = serde_json::Deserializer::from_str(raw.get());
                let mut ser = rmp_serde::Serializer::new(&mut *out).with_struct_map();
                serde_transcode::transcode(&mut de, &mut ser)
                    .map_err(|e| EncodeError::MessagePack(e.to_string()))
            }
            Payload::Value(value) => {
                let mut ser = rmp_serde::Serializer::new(&mut *out).with_struct_map();
                serde::Serialize::serialize(&**value, &mut ser)
                    .map_err(|e| EncodeError::MessagePack(e.to_string()))
            }
        }
    }
}

impl fmt::Debug for Payload {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Payload::Json(raw) => write!(f, "Json({})", raw.get()),
            Payload::MessagePack(bytes) => write!(f, "MessagePack({} bytes)", bytes.len()),
            Payload::Value(_) => f.write_str("Value(<value>)"),
        }
    }
}

impl From<Box<RawValue>> for Payload {
    fn from(raw: Box<RawValue>) -> Self {
        Payload::Json(Arc::from(raw))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde::{Deserialize, Serialize};

    #[derive(Debug, PartialEq, Serialize, Deserialize)]
    struct Point {
        x: i32,
        name: String,
    }

    fn point() -> Point {
        Point {
            x: 3,
            name: "a".into(),
        }
    }

    #[test]
    fn value_round_trips_through_both_formats() {
        let p = Payload::new(point());
        let mut json = Vec::new();
        p.write_json(&mut json).unwrap();
        assert_eq!(json, br#"{"x":3,"name":"a"}"#);
        let mut mp = Vec::new();
        p.write_msgpack(&mut mp).unwrap();
        // map with 2 entries, keyed by field name
        assert_eq!(
            mp,
            [
                0x82, 0xa1, b'x', 0x03, 0xa4, b'n', b'a', b'm', b'e', 0xa1, b'a'
            ]
        );
        assert_eq!(p.deserialize::<Point>().unwrap(), point());
        assert_eq!(
            Payload::MessagePack(Bytes::from(mp))
                .deserialize::<Point>()
                .unwrap(),
            point()
        );
        assert_eq!(
            Payload::from_json_text(String::from_utf8(json).unwrap())
                .unwrap()
                .deserialize::<Point>()
                .unwrap(),
            point()
        );
    }

    #[test]
    fn transcodes_between_formats() {
        let j = Payload::from_json_text(r#"{"a":[1,-2,3.5,null,true,"x"]}"#).unwrap();
        let mut mp = Vec::new();
        j.write_msgpack(&mut mp).unwrap();
        let back = Payload::MessagePack(Bytes::from(mp));
        let mut json = Vec::new();
        back.write_json(&mut json).unwrap();
        assert_eq!(json, br#"{"a":[1,-2,3.5,null,true,"x"]}"#);
    }

    #[test]
    fn null_payload() {
        let mut json = Vec::new();
        Payload::null().write_json(&mut json).unwrap();
        assert_eq!(json, b"null");
        let mut mp = Vec::new();
        Payload::null().write_msgpack(&mut mp).unwrap();
        assert_eq!(mp, [0xc0]);
        assert_eq!(Payload::null().deserialize::<Option<i32>>().unwrap(), None);
    }

    #[test]
    fn type_mismatch_is_an_error() {
        let j = Payload::from_json_text("\"text\"").unwrap();
        assert!(matches!(j.deserialize::<i32>(), Err(PayloadError::Json(_))));
        let m = Payload::MessagePack(Bytes::from_static(&[0xa1, b'x']));
        assert!(matches!(
            m.deserialize::<i32>(),
            Err(PayloadError::MessagePack(_))
        ));
        assert!(Payload::from_json_text("{not json").is_err());
    }

    #[test]
    fn garbage_msgpack_payload_fails_to_transcode() {
        let m = Payload::MessagePack(Bytes::from_static(&[0xdc, 0xff]));
        assert!(m.write_json(&mut Vec::new()).is_err());
    }

    #[test]
    fn msgpack_nesting_is_limited() {
        let nested = |depth: usize| {
            let mut v = vec![0x91; depth];
            v.push(0x01);
            Payload::MessagePack(Bytes::from(v))
        };
        let ok = nested(MAX_PAYLOAD_DEPTH - 1);
        assert!(ok.deserialize::<serde_json::Value>().is_ok());
        let mut json = Vec::new();
        ok.write_json(&mut json).unwrap();
        assert_eq!(json.len(), 2 * (MAX_PAYLOAD_DEPTH - 1) + 1);
        let deep = nested(MAX_PAYLOAD_DEPTH + 1);
        assert!(deep.deserialize::<serde_json::Value>().is_err());
        assert!(deep.write_json(&mut Vec::new()).is_err());
    }

    #[test]
    fn debug_output() {
        let j = Payload::from_json_text("[1]").unwrap();
        assert_eq!(format!("{j:?}"), "Json([1])");
        let m = Payload::MessagePack(Bytes::from_static(&[0x01]));
        assert_eq!(format!("{m:?}"), "MessagePack(1 bytes)");
        assert_eq!(format!("{:?}", Payload::new(1)), "Value(<value>)");
    }
}
