//! The handshake request parser (and, for the client side, the response parser) over a byte
//! stream split at fuzzer-chosen points.
//!
//! Input: one configuration byte (size limit, split seed; see `signalbox_fuzz::chunks`), then
//! the bytes a client sends first.
#![no_main]

use bytes::BytesMut;
use libfuzzer_sys::fuzz_target;
use signalbox_protocol::{
    HandshakeRequest, Protocol, handshake_request, parse_handshake_request,
    parse_handshake_response,
};

/// Feeds the chunks until the parser decides; returns the result and what stayed buffered.
fn parse(
    chunks: &[&[u8]],
    max: Option<usize>,
) -> (Option<Result<HandshakeRequest, String>>, Vec<u8>) {
    let mut buf = BytesMut::new();
    for (i, chunk) in chunks.iter().enumerate() {
        buf.extend_from_slice(chunk);
        match parse_handshake_request(&mut buf, max) {
            Ok(Some(request)) => {
                // The transport keeps reading: later chunks land behind what the parser left.
                for later in &chunks[i + 1..] {
                    buf.extend_from_slice(later);
                }
                return (Some(Ok(request)), buf.to_vec());
            }
            Ok(None) => {}
            Err(e) => return (Some(Err(e.to_string())), Vec::new()),
        }
    }
    (None, buf.to_vec())
}

fuzz_target!(|data: &[u8]| {
    let Some((&config, stream)) = data.split_first() else {
        return;
    };
    let max = signalbox_fuzz::max_size(config);
    let split = parse(&signalbox_fuzz::chunks(config, stream), max);
    let whole = parse(&[stream], max);
    assert_eq!(
        split, whole,
        "parsing in chunks differs from parsing at once"
    );

    if let (Some(Ok(request)), rest) = &whole {
        // Exactly the request and its separator are consumed; later bytes stay for the hub
        // protocol.
        let end = stream
            .iter()
            .position(|&b| b == 0x1e)
            .expect("a parsed request ends with 0x1E");
        assert_eq!(&rest[..], &stream[end + 1..]);
        if let Some(body_limit) = max {
            assert!(
                end <= body_limit,
                "accepted a {end}-byte handshake over the {body_limit} limit"
            );
        }
        // A request the server accepts round-trips through the client's encoder.
        if let Some(protocol) = Protocol::from_name(&request.protocol) {
            let mut again = BytesMut::from(&handshake_request(protocol, request.version)[..]);
            let back = parse_handshake_request(&mut again, None)
                .ok()
                .flatten()
                .expect("an encoded handshake request parses");
            assert_eq!(back.version, request.version);
            assert!(back.protocol.eq_ignore_ascii_case(&request.protocol));
        }
    }

    // The client-side response parser must not panic on the same bytes either.
    let mut buf = BytesMut::from(stream);
    while let Ok(Some(_)) = parse_handshake_response(&mut buf) {}
});
