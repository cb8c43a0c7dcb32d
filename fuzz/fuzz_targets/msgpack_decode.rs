//! The `messagepack` hub protocol decoder (VarInt framing + MessagePack bodies) over a byte
//! stream split at fuzzer-chosen points.
//!
//! Input: one configuration byte (size limit, split seed; see `signalbox_fuzz::chunks`), then
//! the bytes a client sends after the handshake.
#![no_main]

use libfuzzer_sys::fuzz_target;
use signalbox_protocol::Protocol;

fuzz_target!(|data: &[u8]| {
    signalbox_fuzz::fuzz_decoder(Protocol::MessagePack, data);
});
