#![doc = include_str!("../README.md")]

pub mod framing;
pub mod handshake;
mod json;
pub mod message;
mod msgpack;
pub mod negotiate;
pub mod payload;
pub mod protocol;

pub use handshake::{
    HandshakeError, HandshakeRequest, handshake_request, handshake_response,
    parse_handshake_request, parse_handshake_response,
};
pub use message::{
    Ack, CancelInvocation, Close, Completion, CompletionOutcome, Headers, HubMessage, Invocation,
    Sequence, StreamInvocation, StreamItem,
};
pub use negotiate::{
    AvailableTransport, NegotiateError, NegotiateRedirect, NegotiateResponse, RefreshResponse,
    TransportType, select_negotiate_version,
};
pub use payload::{Payload, PayloadError};
pub use protocol::{DecodeError, EncodeError, Protocol, TransferFormat};
