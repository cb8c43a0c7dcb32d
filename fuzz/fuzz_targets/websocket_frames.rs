//! The WebSocket frame parser of the one-task WebSocket driver
//! (`connection/transport/websocket_frame.rs`, on tungstenite's `FrameHeader`), reached through
//! the hidden `signalbox::__fuzz_websocket_frames`.
//!
//! Input: one configuration byte (size limit, split seed; see `signalbox_fuzz::chunks`), then
//! the bytes a client sends on the socket after the opening handshake.
#![no_main]

use libfuzzer_sys::fuzz_target;
use signalbox::__fuzz_websocket_frames;
use signalbox_fuzz::{chunks, max_size};

fuzz_target!(|data: &[u8]| {
    let Some((&config, stream)) = data.split_first() else {
        return;
    };
    let max_payload = max_size(config).unwrap_or(usize::MAX);
    if let Err(broken) = __fuzz_websocket_frames(max_payload, &chunks(config, stream)) {
        panic!("{broken}");
    }
});
