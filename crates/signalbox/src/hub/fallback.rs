//! The fallback for invocations whose target matches no declared method: the invocation as
//! received ([`UnknownInvocation`]) and the handler's answer ([`InvocationReply`]).

use std::sync::Arc;

use futures_util::future::BoxFuture;
use serde::Serialize;
use signalbox_protocol::{Completion, Headers, Payload};

use super::caller::Caller;

/// The handler installed with [`HubBuilder::fallback`](super::HubBuilder::fallback), erased.
pub(crate) type FallbackHandler =
    Arc<dyn Fn(Caller, UnknownInvocation) -> BoxFuture<'static, InvocationReply> + Send + Sync>;

/// An Invocation message whose target matches no method of the hub, handed to the hub's
/// [`fallback`](super::HubBuilder::fallback) as received.
#[derive(Debug, Clone)]
#[non_exhaustive]
pub struct UnknownInvocation {
    /// The method name the client invoked, as sent (not lowercased).
    pub target: String,
    /// The invocation id; `None` for a non-blocking invocation, whose reply is not sent.
    pub invocation_id: Option<String>,
    /// The arguments, unbound: [`Payload::Json`] or [`Payload::MessagePack`] depending on the
    /// connection's protocol ([`Caller::protocol`]).
    pub arguments: Vec<Payload>,
    /// The message headers (for example a `traceparent`).
    pub headers: Headers,
}

impl UnknownInvocation {
    /// An invocation of `target` with `arguments`, no id and no headers (set the public fields to
    /// fill in the rest).
    pub fn new(target: impl Into<String>, arguments: Vec<Payload>) -> Self {
        Self {
            target: target.into(),
            invocation_id: None,
            arguments,
            headers: Headers::new(),
        }
    }
}

/// How a [`fallback`](super::HubBuilder::fallback) answers an invocation. Sent to the caller as a
/// Completion message, unless the invocation was non-blocking (no invocation id).
#[derive(Debug, Clone)]
#[non_exhaustive]
pub enum InvocationReply {
    /// A result value: a Completion with `result` (JSON `null` / MessagePack `nil` included).
    Result(Payload),
    /// No value: a Completion with neither `result` nor `error` (MessagePack result kind 2, "void").
    Void,
    /// A failure: a Completion whose `error` is this text, verbatim.
    Error(String),
}

impl InvocationReply {
    /// A result value, serialised for the caller's protocol when sent.
    pub fn result<T: Serialize + Send + Sync + 'static>(value: T) -> Self {
        InvocationReply::Result(Payload::new(value))
    }

    /// A failure with `text` as the completion's error.
    pub fn error(text: impl Into<String>) -> Self {
        InvocationReply::Error(text.into())
    }

    /// Whether this is [`InvocationReply::Error`].
    pub fn is_error(&self) -> bool {
        matches!(self, InvocationReply::Error(_))
    }

    /// The Completion answering invocation `id`.
    pub(crate) fn into_completion(self, id: String) -> Completion {
        match self {
            InvocationReply::Result(value) => Completion::result(id, value),
            InvocationReply::Void => Completion::void(id),
            InvocationReply::Error(text) => Completion::error(id, text),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use signalbox_protocol::{HubMessage, Protocol};

    fn encode(reply: InvocationReply, protocol: Protocol) -> Vec<u8> {
        protocol
            .encode_to_bytes(&HubMessage::Completion(reply.into_completion("0".into())))
            .unwrap()
            .to_vec()
    }

    #[test]
    fn replies_encode_as_completions_in_json() {
        assert_eq!(
            encode(InvocationReply::Void, Protocol::Json),
            b"{\"type\":3,\"invocationId\":\"0\"}\x1e"
        );
        assert_eq!(
            encode(InvocationReply::result(5), Protocol::Json),
            b"{\"type\":3,\"invocationId\":\"0\",\"result\":5}\x1e"
        );
        assert_eq!(
            encode(InvocationReply::error("no \"x\""), Protocol::Json),
            b"{\"type\":3,\"invocationId\":\"0\",\"error\":\"no \\\"x\\\"\"}\x1e"
        );
    }

    #[test]
    fn replies_encode_as_completions_in_messagepack() {
        // Length prefix, then [3, {}, "0", kind(, value)].
        assert_eq!(
            encode(InvocationReply::Void, Protocol::MessagePack),
            [0x06, 0x94, 0x03, 0x80, 0xa1, b'0', 0x02]
        );
        assert_eq!(
            encode(InvocationReply::result(5), Protocol::MessagePack),
            [0x07, 0x95, 0x03, 0x80, 0xa1, b'0', 0x03, 0x05]
        );
        assert_eq!(
            encode(InvocationReply::error("e"), Protocol::MessagePack),
            [0x08, 0x95, 0x03, 0x80, 0xa1, b'0', 0x01, 0xa1, b'e']
        );
    }
}
