//! The binary framing's VarInt length reader (`framing::read_varint`).
//!
//! Input: the bytes at the front of a MessagePack stream.
#![no_main]

use libfuzzer_sys::fuzz_target;
use signalbox_protocol::framing::{MAX_VARINT_BYTES, MAX_VARINT_LENGTH, read_varint, write_varint};

fuzz_target!(|data: &[u8]| {
    match read_varint(data) {
        Ok(Some((length, used))) => {
            assert!((1..=MAX_VARINT_BYTES).contains(&used) && used <= data.len());
            assert!(length <= MAX_VARINT_LENGTH, "{length} over the 2 GB limit");
            assert_eq!(
                data[used - 1] & 0x80,
                0,
                "the last prefix byte has no continuation bit"
            );
            assert!(data[..used - 1].iter().all(|b| b & 0x80 != 0));
            // Every shorter prefix is incomplete.
            for cut in 0..used {
                assert!(
                    matches!(read_varint(&data[..cut]), Ok(None)),
                    "prefix {cut}"
                );
            }
            // The canonical encoding reads back to the same length and is never longer.
            let mut canonical = Vec::new();
            write_varint(length, &mut canonical);
            assert_eq!(
                read_varint(&canonical).ok().flatten(),
                Some((length, canonical.len()))
            );
            assert!(canonical.len() <= used);
        }
        Ok(None) => {
            assert!(data.len() < MAX_VARINT_BYTES, "5 bytes always decide");
            assert!(
                data.iter().all(|b| b & 0x80 != 0),
                "incomplete = all continuation bits"
            );
        }
        Err(_) => {
            assert!(
                data.len() >= MAX_VARINT_BYTES,
                "only the 5th byte can overflow"
            );
        }
    }
    // Writing any length up to the limit and reading it back is the identity.
    if data.len() >= 4 {
        let length =
            u32::from_le_bytes([data[0], data[1], data[2], data[3]]) as usize & MAX_VARINT_LENGTH;
        let mut encoded = Vec::new();
        write_varint(length, &mut encoded);
        assert_eq!(
            read_varint(&encoded).ok().flatten(),
            Some((length, encoded.len()))
        );
    }
});
