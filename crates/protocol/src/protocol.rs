//! The hub protocols (`json`, `messagepack`): names, versions, transfer formats, and the
//! framed encode / streaming decode entry points (spec §5.1–§5.4).

use bytes::{Bytes, BytesMut};

use crate::message::HubMessage;
use crate::{json, msgpack};

/// How a transport must carry a protocol's bytes: as text (UTF-8) or binary frames.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, serde::Serialize, serde::Deserialize)]
pub enum TransferFormat {
    /// UTF-8 text (JSON hub protocol). Serialised as `"Text"`.
    Text,
    /// Arbitrary bytes (MessagePack hub protocol). Serialised as `"Binary"`.
    Binary,
}

impl TransferFormat {
    /// `"Text"` or `"Binary"`, as written in negotiate responses and handshake errors.
    pub fn name(self) -> &'static str {
        match self {
            TransferFormat::Text => "Text",
            TransferFormat::Binary => "Binary",
        }
    }
}

/// A hub protocol, selected by the client in the handshake.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Protocol {
    /// `json`: UTF-8 JSON records terminated by `0x1E`.
    Json,
    /// `messagepack`: VarInt-length-prefixed MessagePack arrays.
    MessagePack,
}

/// The highest hub protocol version the server accepts (2 = stateful reconnect capable).
pub const MAX_PROTOCOL_VERSION: i32 = 2;

impl Protocol {
    /// Every supported protocol.
    pub const ALL: [Protocol; 2] = [Protocol::Json, Protocol::MessagePack];

    /// Looks a protocol up by its handshake name (`json`, `messagepack`), ignoring ASCII case.
    pub fn from_name(name: &str) -> Option<Protocol> {
        Protocol::ALL
            .into_iter()
            .find(|p| p.name().eq_ignore_ascii_case(name))
    }

    /// The handshake name: `"json"` or `"messagepack"`.
    pub fn name(self) -> &'static str {
        match self {
            Protocol::Json => "json",
            Protocol::MessagePack => "messagepack",
        }
    }

    /// [`TransferFormat::Text`] for JSON, [`TransferFormat::Binary`] for MessagePack.
    pub fn transfer_format(self) -> TransferFormat {
        match self {
            Protocol::Json => TransferFormat::Text,
            Protocol::MessagePack => TransferFormat::Binary,
        }
    }

    /// Whether a handshake `version` is accepted: like .NET, any version `<= 2`.
    pub fn is_version_supported(self, version: i32) -> bool {
        version <= MAX_PROTOCOL_VERSION
    }

    /// Appends one framed message to `out`: JSON + `0x1E`, or VarInt length + MessagePack body.
    ///
    /// On error nothing is appended (`out` is truncated back to its original length).
    pub fn encode(self, message: &HubMessage, out: &mut Vec<u8>) -> Result<(), EncodeError> {
        let start = out.len();
        let result = match self {
            Protocol::Json => json::encode(message, out),
            Protocol::MessagePack => msgpack::encode(message, out),
        };
        if result.is_err() {
            out.truncate(start);
        }
        result
    }

    /// Encodes one framed message into a new buffer.
    pub fn encode_to_bytes(self, message: &HubMessage) -> Result<Bytes, EncodeError> {
        let mut out = Vec::new();
        self.encode(message, &mut out)?;
        Ok(Bytes::from(out))
    }

    /// Removes and returns the first complete message from the front of `buf`.
    ///
    /// `Ok(None)` means more bytes are needed (`buf` keeps any partial message). Messages of an
    /// unknown type are consumed and skipped, and decoding continues with the next one.
    ///
    /// If no complete message fits within `max_message_size` bytes (JSON: no `0x1E` within the
    /// first `max + 1` bytes; MessagePack: declared length `> max`) the result is
    /// [`DecodeError::MessageTooLarge`]. `None` = unlimited.
    ///
    /// On any error the caller should close the connection; the content of `buf` after an
    /// error is unspecified.
    pub fn decode(
        self,
        buf: &mut BytesMut,
        max_message_size: Option<usize>,
    ) -> Result<Option<HubMessage>, DecodeError> {
        match self {
            Protocol::Json => json::decode(buf, max_message_size),
            Protocol::MessagePack => msgpack::decode(buf, max_message_size),
        }
    }
}

impl std::fmt::Display for Protocol {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.name())
    }
}

impl std::fmt::Display for TransferFormat {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.name())
    }
}

/// Why incoming bytes could not be decoded into a hub message. The connection must be closed.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum DecodeError {
    /// A message exceeded the configured maximum size.
    #[error(
        "The maximum message size of {limit}B was exceeded. The message size can be configured in AddHubOptions."
    )]
    MessageTooLarge {
        /// The configured limit in bytes.
        limit: usize,
    },
    /// Malformed JSON.
    #[error("Error reading JSON: {0}")]
    Json(String),
    /// Malformed MessagePack.
    #[error("Error reading MessagePack: {0}")]
    MessagePack(String),
    /// A property required by the message type is missing (or empty).
    #[error("Missing required property '{0}'.")]
    MissingProperty(&'static str),
    /// Structurally valid but semantically invalid message.
    #[error("{0}")]
    Invalid(String),
}

/// Why a message could not be encoded (a payload value failed to serialise).
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum EncodeError {
    /// JSON serialisation failed.
    #[error("{0}")]
    Json(#[from] serde_json::Error),
    /// MessagePack serialisation failed.
    #[error("{0}")]
    MessagePack(String),
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::message::Invocation;
    use crate::payload::Payload;

    #[test]
    fn names_and_formats() {
        assert_eq!(Protocol::from_name("json"), Some(Protocol::Json));
        assert_eq!(Protocol::from_name("JSON"), Some(Protocol::Json));
        assert_eq!(
            Protocol::from_name("MessagePack"),
            Some(Protocol::MessagePack)
        );
        assert_eq!(
            Protocol::from_name("messagepack"),
            Some(Protocol::MessagePack)
        );
        assert_eq!(Protocol::from_name("msgpack"), None);
        assert_eq!(Protocol::from_name(""), None);
        assert_eq!(Protocol::Json.name(), "json");
        assert_eq!(Protocol::MessagePack.name(), "messagepack");
        assert_eq!(Protocol::Json.transfer_format(), TransferFormat::Text);
        assert_eq!(
            Protocol::MessagePack.transfer_format(),
            TransferFormat::Binary
        );
        assert_eq!(TransferFormat::Binary.name(), "Binary");
        assert_eq!(Protocol::MessagePack.to_string(), "messagepack");
        assert_eq!(TransferFormat::Text.to_string(), "Text");
        assert_eq!(
            serde_json::to_string(&TransferFormat::Text).unwrap(),
            "\"Text\""
        );
        assert_eq!(
            serde_json::from_str::<TransferFormat>("\"Binary\"").unwrap(),
            TransferFormat::Binary
        );
    }

    #[test]
    fn versions() {
        for p in Protocol::ALL {
            assert!(p.is_version_supported(0));
            assert!(p.is_version_supported(1));
            assert!(p.is_version_supported(2));
            assert!(!p.is_version_supported(3));
        }
    }

    #[test]
    fn failed_encode_leaves_output_untouched() {
        struct Bad;
        impl serde::Serialize for Bad {
            fn serialize<S: serde::Serializer>(&self, _: S) -> Result<S::Ok, S::Error> {
                Err(serde::ser::Error::custom("nope"))
            }
        }
        let msg = HubMessage::Invocation(Invocation::new("x", vec![Payload::new(Bad)]));
        for p in Protocol::ALL {
            let mut out = vec![1, 2, 3];
            assert!(p.encode(&msg, &mut out).is_err());
            assert_eq!(out, [1, 2, 3]);
        }
    }

    #[test]
    fn error_strings() {
        assert_eq!(
            DecodeError::MessageTooLarge { limit: 32768 }.to_string(),
            "The maximum message size of 32768B was exceeded. The message size can be configured in AddHubOptions."
        );
        assert_eq!(
            DecodeError::MissingProperty("target").to_string(),
            "Missing required property 'target'."
        );
    }
}
