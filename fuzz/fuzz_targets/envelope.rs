//! The backplane envelope codec of the scaled lifetime manager (`lifetime::scaled::envelope`),
//! reached through the hidden `signalbox::lifetime::__fuzz_envelope`.
//!
//! Input: one backplane message, as another node (or anything else publishing on the channel
//! prefix) would send it.
#![no_main]

use libfuzzer_sys::fuzz_target;
use signalbox::lifetime::__fuzz_envelope;

fuzz_target!(|data: &[u8]| {
    let Ok(round) = __fuzz_envelope(data) else {
        // Refused: fine, as long as it did not panic or over-allocate (libFuzzer's
        // -malloc_limit_mb catches that).
        return;
    };
    // Every envelope that decodes re-encodes to bytes that decode to the same envelope...
    assert_eq!(
        round.decoded_again.as_deref(),
        Ok(round.decoded.as_str()),
        "re-encoded as {:?}",
        round.encoded
    );
    // ...and the encoding is canonical from then on.
    assert_eq!(round.encoded_again, round.encoded);
    // The version byte leads, and only the known version decodes.
    assert_eq!(data.first(), round.encoded.first());
    assert_eq!(data[0], 1);
});
