//! Message framing (spec §5.3, §5.4): text records end with `0x1E`, binary messages carry a
//! VarInt length prefix.

use crate::protocol::DecodeError;

/// The record separator that ends every JSON hub message and every handshake message.
pub const RECORD_SEPARATOR: u8 = 0x1E;

/// Largest length a VarInt prefix may declare (2 GB - 1).
pub const MAX_VARINT_LENGTH: usize = 0x7fff_ffff;

/// Most bytes a VarInt length prefix may take.
pub const MAX_VARINT_BYTES: usize = 5;

/// Appends `len` as a little-endian base-128 VarInt (7 bits per byte, MSB = more bytes follow).
///
/// Lengths up to [`MAX_VARINT_LENGTH`] take at most 5 bytes; e.g. 53 → `35`, 5248 → `80 29`.
pub fn write_varint(len: usize, out: &mut Vec<u8>) {
    let mut rest = len;
    loop {
        let low = (rest & 0x7f) as u8;
        rest >>= 7;
        if rest == 0 {
            out.push(low);
            return;
        }
        out.push(low | 0x80);
    }
}

/// Reads a VarInt length prefix from the front of `buf`.
///
/// Returns `Ok(Some((length, prefix_len)))`, `Ok(None)` when the prefix is incomplete, and an
/// error when the prefix is longer than 5 bytes or declares more than [`MAX_VARINT_LENGTH`].
pub fn read_varint(buf: &[u8]) -> Result<Option<(usize, usize)>, DecodeError> {
    let mut length: usize = 0;
    for (index, &byte) in buf.iter().take(MAX_VARINT_BYTES).enumerate() {
        if index == MAX_VARINT_BYTES - 1 && byte > 0x07 {
            return Err(too_large());
        }
        length |= usize::from(byte & 0x7f) << (7 * index);
        if byte & 0x80 == 0 {
            return Ok(Some((length, index + 1)));
        }
    }
    Ok(None)
}

fn too_large() -> DecodeError {
    DecodeError::MessagePack("Messages over 2GB in size are not supported.".to_owned())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn enc(n: usize) -> Vec<u8> {
        let mut v = Vec::new();
        write_varint(n, &mut v);
        v
    }

    #[test]
    fn known_vectors() {
        assert_eq!(enc(0), [0x00]);
        assert_eq!(enc(53), [0x35]);
        assert_eq!(enc(127), [0x7f]);
        assert_eq!(enc(128), [0x80, 0x01]);
        assert_eq!(enc(5248), [0x80, 0x29]);
        assert_eq!(enc(16383), [0xff, 0x7f]);
        assert_eq!(enc(16384), [0x80, 0x80, 0x01]);
        assert_eq!(enc(MAX_VARINT_LENGTH), [0xff, 0xff, 0xff, 0xff, 0x07]);
    }

    #[test]
    fn round_trip() {
        for n in [
            0,
            1,
            53,
            127,
            128,
            255,
            256,
            5248,
            16383,
            16384,
            1 << 21,
            (1 << 28) - 1,
            1 << 28,
            MAX_VARINT_LENGTH,
        ] {
            let bytes = enc(n);
            assert_eq!(read_varint(&bytes).unwrap(), Some((n, bytes.len())));
            // trailing bytes are not part of the prefix
            let mut more = bytes.clone();
            more.extend_from_slice(&[0xff, 0x01]);
            assert_eq!(read_varint(&more).unwrap(), Some((n, bytes.len())));
            // every strict prefix is incomplete
            for cut in 0..bytes.len() {
                assert_eq!(read_varint(&bytes[..cut]).unwrap(), None);
            }
        }
    }

    #[test]
    fn rejects_oversized_prefixes() {
        assert!(read_varint(&[0xff, 0xff, 0xff, 0xff, 0x08]).is_err());
        assert!(read_varint(&[0x80, 0x80, 0x80, 0x80, 0x80]).is_err());
        assert!(read_varint(&[0x80, 0x80, 0x80, 0x80, 0x80, 0x01]).is_err());
        let err = read_varint(&[0xff; 6]).unwrap_err();
        assert_eq!(
            err.to_string(),
            "Error reading MessagePack: Messages over 2GB in size are not supported."
        );
    }
}
