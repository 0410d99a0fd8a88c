//! Client-to-server payload masking (RFC 6455 §5.3,
//! <https://www.rfc-editor.org/rfc/rfc6455#section-5.3>).
//!
//! Masking is an XOR with a repeating 4-byte key. This module does it in safe Rust over 32-byte
//! chunks, which the compiler turns into vector instructions; `benches/frame.rs` measures it.
//! It owns nothing else: where the key comes from is the frame parser's business.

/// XORs `buf` in place with `key`, as if `buf` started `offset` bytes into the masked payload.
///
/// Unmasking is the same operation as masking. `offset` lets a payload that arrives in pieces be
/// unmasked piece by piece (the key position continues where the previous piece stopped).
pub fn apply_mask(buf: &mut [u8], key: [u8; 4], offset: usize) {
    let rotated = rotate_key(key, offset);
    let mut wide = [0u8; 32];
    for (i, b) in wide.iter_mut().enumerate() {
        *b = rotated[i % 4];
    }
    let mut chunks = buf.chunks_exact_mut(32);
    for chunk in &mut chunks {
        for (b, m) in chunk.iter_mut().zip(wide.iter()) {
            *b ^= m;
        }
    }
    for (b, m) in chunks.into_remainder().iter_mut().zip(wide.iter()) {
        *b ^= m;
    }
}

/// The key as seen by a piece of payload that starts `offset` bytes in.
fn rotate_key(key: [u8; 4], offset: usize) -> [u8; 4] {
    let shift = offset % 4;
    [
        key[shift],
        key[(shift + 1) % 4],
        key[(shift + 2) % 4],
        key[(shift + 3) % 4],
    ]
}

#[cfg(test)]
mod tests {
    use super::*;

    fn naive(buf: &mut [u8], key: [u8; 4], offset: usize) {
        for (i, b) in buf.iter_mut().enumerate() {
            *b ^= key[(i + offset) % 4];
        }
    }

    #[test]
    fn masking_matches_the_rfc_definition_for_every_length_and_offset() {
        let key = [0x37, 0xfa, 0x21, 0x3d];
        for len in 0..100 {
            for offset in 0..4 {
                let original: Vec<u8> = (0..len).map(|i| (i * 7 + 3) as u8).collect();
                let mut fast = original.clone();
                let mut slow = original.clone();
                apply_mask(&mut fast, key, offset);
                naive(&mut slow, key, offset);
                assert_eq!(fast, slow, "len {len} offset {offset}");
            }
        }
    }

    #[test]
    fn rfc_example_hello_unmasks() {
        // RFC 6455 §5.7: a single-frame masked text message containing "Hello".
        let mut payload = [0x7f, 0x9f, 0x4d, 0x51, 0x58];
        apply_mask(&mut payload, [0x37, 0xfa, 0x21, 0x3d], 0);
        assert_eq!(&payload, b"Hello");
    }

    #[test]
    fn unmasking_in_pieces_equals_unmasking_at_once() {
        let key = [1, 2, 3, 4];
        let data: Vec<u8> = (0..77u8).collect();
        let mut whole = data.clone();
        apply_mask(&mut whole, key, 0);
        let mut pieces = data.clone();
        let (a, rest) = pieces.split_at_mut(5);
        let (b, c) = rest.split_at_mut(38);
        apply_mask(a, key, 0);
        apply_mask(b, key, 5);
        apply_mask(c, key, 43);
        assert_eq!(whole, pieces);
    }
}
