//! A hub message serialised at most once per protocol and shared by every recipient.

use std::sync::OnceLock;

use bytes::Bytes;
use signalbox_protocol::{HubMessage, Protocol};

/// A message to many connections: its frame is encoded lazily, once per protocol in use, and the
/// same [`Bytes`] are handed to every recipient of that protocol.
#[derive(Debug)]
pub struct SerializedMessage {
    message: HubMessage,
    json: OnceLock<Option<Bytes>>,
    msgpack: OnceLock<Option<Bytes>>,
}

impl SerializedMessage {
    /// Wraps a message.
    pub fn new(message: HubMessage) -> Self {
        Self {
            message,
            json: OnceLock::new(),
            msgpack: OnceLock::new(),
        }
    }

    /// The message itself.
    pub fn message(&self) -> &HubMessage {
        &self.message
    }

    /// The framed bytes for `protocol`; `None` if the message cannot be encoded in it (the error is
    /// logged once).
    pub fn bytes(&self, protocol: Protocol) -> Option<Bytes> {
        let cell = match protocol {
            Protocol::Json => &self.json,
            Protocol::MessagePack => &self.msgpack,
        };
        cell.get_or_init(|| match protocol.encode_to_bytes(&self.message) {
            Ok(bytes) => Some(bytes),
            Err(error) => {
                tracing::error!(target: "signalbox::hub", %error, protocol = protocol.name(), "failed to serialise a message");
                None
            }
        })
        .clone()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use signalbox_protocol::{Invocation, Payload};

    #[test]
    fn encodes_once_per_protocol_and_shares_bytes() {
        let msg = SerializedMessage::new(HubMessage::Invocation(Invocation::new(
            "Hello",
            vec![Payload::new("world")],
        )));
        let a = msg.bytes(Protocol::Json).unwrap();
        let b = msg.bytes(Protocol::Json).unwrap();
        assert_eq!(a.as_ptr(), b.as_ptr(), "the same buffer is shared");
        assert_eq!(
            &a[..],
            b"{\"type\":1,\"target\":\"Hello\",\"arguments\":[\"world\"]}\x1e"
        );
        let m = msg.bytes(Protocol::MessagePack).unwrap();
        assert_ne!(&m[..], &a[..]);
    }
}
