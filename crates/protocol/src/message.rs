//! The nine SignalR hub message types (spec §5.2) as Rust values.
//!
//! Messages are protocol-agnostic: [`crate::Protocol::encode`] and [`crate::Protocol::decode`]
//! convert them to and from the JSON and MessagePack wire forms.

use std::collections::BTreeMap;

use crate::payload::Payload;

/// Message headers (`headers` property / MessagePack map of string to string).
pub type Headers = BTreeMap<String, String>;

/// Type 1: a call of `target` with `arguments`.
///
/// Without an `invocation_id` the call is non-blocking and the callee must not answer.
#[derive(Debug, Clone)]
pub struct Invocation {
    /// Message headers (usually empty).
    pub headers: Headers,
    /// The caller-chosen id the callee echoes in its [`Completion`]; `None` = non-blocking.
    pub invocation_id: Option<String>,
    /// The method (server side) or handler (client side) name.
    pub target: String,
    /// The arguments, in order.
    pub arguments: Vec<Payload>,
    /// Ids of client-to-server upload streams that feed stream parameters.
    pub stream_ids: Vec<String>,
}

impl Invocation {
    /// A non-blocking invocation (no id), the shape the server sends to clients.
    pub fn new(target: impl Into<String>, arguments: Vec<Payload>) -> Self {
        Invocation {
            headers: Headers::new(),
            invocation_id: None,
            target: target.into(),
            arguments,
            stream_ids: Vec::new(),
        }
    }
}

/// Type 4: a call of a streaming method; the callee answers with [`StreamItem`]s and a
/// final [`Completion`].
#[derive(Debug, Clone)]
pub struct StreamInvocation {
    /// Message headers (usually empty).
    pub headers: Headers,
    /// The caller-chosen id used by the items and the completion.
    pub invocation_id: String,
    /// The streaming method name.
    pub target: String,
    /// The arguments, in order.
    pub arguments: Vec<Payload>,
    /// Ids of client-to-server upload streams that feed stream parameters.
    pub stream_ids: Vec<String>,
}

/// Type 2: one item of a stream (server-to-client result stream or client upload stream).
#[derive(Debug, Clone)]
pub struct StreamItem {
    /// Message headers (usually empty).
    pub headers: Headers,
    /// The stream invocation id, or the upload stream id.
    pub invocation_id: String,
    /// The item value (may be null).
    pub item: Payload,
}

/// How an invocation or stream ended.
#[derive(Debug, Clone)]
pub enum CompletionOutcome {
    /// `result` present (may be null): MessagePack ResultKind 3.
    Result(Payload),
    /// `error` present: MessagePack ResultKind 1.
    Error(String),
    /// Neither (void, or the end of a stream): MessagePack ResultKind 2.
    Void,
}

/// Type 3: the end of an invocation or a stream.
#[derive(Debug, Clone)]
pub struct Completion {
    /// Message headers (usually empty).
    pub headers: Headers,
    /// The id of the invocation or stream that ended.
    pub invocation_id: String,
    /// Result, error or nothing.
    pub outcome: CompletionOutcome,
}

impl Completion {
    /// A completion carrying a result value (use [`Payload::null`] for a void .NET-style result).
    pub fn result(id: impl Into<String>, value: Payload) -> Self {
        Completion {
            headers: Headers::new(),
            invocation_id: id.into(),
            outcome: CompletionOutcome::Result(value),
        }
    }

    /// A completion carrying an error message.
    pub fn error(id: impl Into<String>, msg: impl Into<String>) -> Self {
        Completion {
            headers: Headers::new(),
            invocation_id: id.into(),
            outcome: CompletionOutcome::Error(msg.into()),
        }
    }

    /// A completion with neither result nor error (end of a stream, void client result).
    pub fn void(id: impl Into<String>) -> Self {
        Completion {
            headers: Headers::new(),
            invocation_id: id.into(),
            outcome: CompletionOutcome::Void,
        }
    }
}

/// Type 5: the caller cancels a stream invocation.
#[derive(Debug, Clone)]
pub struct CancelInvocation {
    /// Message headers (usually empty).
    pub headers: Headers,
    /// The id of the invocation to cancel.
    pub invocation_id: String,
}

/// Type 7: the sender is closing the connection.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Close {
    /// Why, when the close is caused by an error.
    pub error: Option<String>,
    /// Whether the client may reconnect automatically.
    pub allow_reconnect: bool,
}

/// Type 8: stateful reconnect acknowledgement (highest trackable message id received).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Ack {
    /// The id of the last trackable message received and processed.
    pub sequence_id: u64,
}

/// Type 9: stateful reconnect resend marker (id of the first message being replayed).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Sequence {
    /// The id of the next trackable message the sender transmits.
    pub sequence_id: u64,
}

/// Any hub message.
#[derive(Debug, Clone)]
pub enum HubMessage {
    /// Type 1.
    Invocation(Invocation),
    /// Type 2.
    StreamItem(StreamItem),
    /// Type 3.
    Completion(Completion),
    /// Type 4.
    StreamInvocation(StreamInvocation),
    /// Type 5.
    CancelInvocation(CancelInvocation),
    /// Type 6: keep-alive.
    Ping,
    /// Type 7.
    Close(Close),
    /// Type 8.
    Ack(Ack),
    /// Type 9.
    Sequence(Sequence),
}

impl HubMessage {
    /// The numeric `type` of the message on the wire (1–9).
    pub fn message_type(&self) -> u8 {
        match self {
            HubMessage::Invocation(_) => 1,
            HubMessage::StreamItem(_) => 2,
            HubMessage::Completion(_) => 3,
            HubMessage::StreamInvocation(_) => 4,
            HubMessage::CancelInvocation(_) => 5,
            HubMessage::Ping => 6,
            HubMessage::Close(_) => 7,
            HubMessage::Ack(_) => 8,
            HubMessage::Sequence(_) => 9,
        }
    }

    /// Whether stateful reconnect numbers and buffers the message (types 1–5).
    pub fn is_trackable(&self) -> bool {
        self.message_type() <= 5
    }

    /// The message's headers (types 1–5), if it has any.
    pub fn headers(&self) -> Option<&Headers> {
        match self {
            HubMessage::Invocation(m) => Some(&m.headers),
            HubMessage::StreamItem(m) => Some(&m.headers),
            HubMessage::Completion(m) => Some(&m.headers),
            HubMessage::StreamInvocation(m) => Some(&m.headers),
            HubMessage::CancelInvocation(m) => Some(&m.headers),
            HubMessage::Ping
            | HubMessage::Close(_)
            | HubMessage::Ack(_)
            | HubMessage::Sequence(_) => None,
        }
    }
}

macro_rules! impl_from {
    ($($ty:ident),*) => {$(
        impl From<$ty> for HubMessage {
            fn from(m: $ty) -> Self {
                HubMessage::$ty(m)
            }
        }
    )*};
}
impl_from!(
    Invocation,
    StreamItem,
    Completion,
    StreamInvocation,
    CancelInvocation,
    Close,
    Ack,
    Sequence
);

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn types_and_trackability() {
        let msgs: Vec<HubMessage> = vec![
            Invocation::new("a", vec![]).into(),
            StreamItem {
                headers: Headers::new(),
                invocation_id: "1".into(),
                item: Payload::null(),
            }
            .into(),
            Completion::void("1").into(),
            StreamInvocation {
                headers: Headers::new(),
                invocation_id: "1".into(),
                target: "s".into(),
                arguments: vec![],
                stream_ids: vec![],
            }
            .into(),
            CancelInvocation {
                headers: Headers::new(),
                invocation_id: "1".into(),
            }
            .into(),
            HubMessage::Ping,
            Close::default().into(),
            Ack { sequence_id: 1 }.into(),
            Sequence { sequence_id: 1 }.into(),
        ];
        for (i, m) in msgs.iter().enumerate() {
            assert_eq!(usize::from(m.message_type()), i + 1);
            assert_eq!(m.is_trackable(), i < 5);
            assert_eq!(m.headers().is_some(), i < 5);
        }
    }

    #[test]
    fn constructors() {
        let inv = Invocation::new("Send", vec![Payload::new("x")]);
        assert!(inv.invocation_id.is_none());
        assert_eq!(inv.target, "Send");
        assert!(
            matches!(Completion::error("7", "bad").outcome, CompletionOutcome::Error(ref e) if e == "bad")
        );
        assert!(matches!(
            Completion::result("7", Payload::null()).outcome,
            CompletionOutcome::Result(_)
        ));
        assert_eq!(Completion::void("7").invocation_id, "7");
    }
}
