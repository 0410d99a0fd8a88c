//! Incremental UTF-8 validation for text messages that arrive in pieces (RFC 6455 §8.1,
//! <https://www.rfc-editor.org/rfc/rfc6455#section-8.1>).
//!
//! A text message may be split across fragments and a fragment across reads, and a character may
//! straddle either boundary. [`Utf8Validator`] carries at most three bytes of an unfinished
//! character between pieces and reports an invalid sequence as soon as its first wrong byte is
//! seen ("fail fast"), so a peer cannot make us buffer a message that is already doomed.

/// Validates a byte stream as UTF-8 piece by piece.
#[derive(Debug, Default, Clone)]
pub struct Utf8Validator {
    /// Bytes of a character whose remaining bytes have not arrived yet.
    carry: [u8; 4],
    /// How many bytes of `carry` are in use (0–3).
    carry_len: usize,
}

/// The stream is not UTF-8.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct InvalidUtf8;

impl Utf8Validator {
    /// A validator at the start of a message.
    pub fn new() -> Self {
        Self::default()
    }

    /// Feeds the next piece of the stream.
    ///
    /// # Errors
    /// [`InvalidUtf8`] as soon as the bytes seen so far cannot be the start of valid UTF-8.
    pub fn feed(&mut self, mut input: &[u8]) -> Result<(), InvalidUtf8> {
        if self.carry_len > 0 {
            let width = char_width(self.carry[0]).ok_or(InvalidUtf8)?;
            let take = (width - self.carry_len).min(input.len());
            self.carry[self.carry_len..self.carry_len + take].copy_from_slice(&input[..take]);
            self.carry_len += take;
            input = &input[take..];
            match std::str::from_utf8(&self.carry[..self.carry_len]) {
                Ok(_) => self.carry_len = 0,
                Err(e) if e.error_len().is_none() => return Ok(()),
                Err(_) => return Err(InvalidUtf8),
            }
        }
        match std::str::from_utf8(input) {
            Ok(_) => Ok(()),
            Err(e) => match e.error_len() {
                Some(_) => Err(InvalidUtf8),
                None => {
                    let rest = &input[e.valid_up_to()..];
                    self.carry[..rest.len()].copy_from_slice(rest);
                    self.carry_len = rest.len();
                    Ok(())
                }
            },
        }
    }

    /// Ends the stream.
    ///
    /// # Errors
    /// [`InvalidUtf8`] when the stream stops in the middle of a character.
    pub fn finish(&mut self) -> Result<(), InvalidUtf8> {
        let complete = self.carry_len == 0;
        self.carry_len = 0;
        if complete { Ok(()) } else { Err(InvalidUtf8) }
    }
}

/// The encoded length of a character from its first byte, if it can start one.
fn char_width(first: u8) -> Option<usize> {
    match first {
        0x00..=0x7f => Some(1),
        0xc2..=0xdf => Some(2),
        0xe0..=0xef => Some(3),
        0xf0..=0xf4 => Some(4),
        _ => None,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn feed_split(bytes: &[u8], at: &[usize]) -> Result<(), InvalidUtf8> {
        let mut v = Utf8Validator::new();
        let mut start = 0;
        for &cut in at {
            v.feed(&bytes[start..cut])?;
            start = cut;
        }
        v.feed(&bytes[start..])?;
        v.finish()
    }

    #[test]
    fn valid_text_passes_whatever_the_split() {
        let text = "Hello-µ@ßöäüàá-UTF-8!! κόσμε 𝄞".as_bytes();
        for a in 0..=text.len() {
            for b in a..=text.len() {
                assert_eq!(feed_split(text, &[a, b]), Ok(()), "split {a} {b}");
            }
        }
    }

    #[test]
    fn truncated_character_fails_at_finish() {
        let mut v = Utf8Validator::new();
        assert_eq!(v.feed(&[0xce]), Ok(()));
        assert_eq!(v.finish(), Err(InvalidUtf8));
    }

    #[test]
    fn invalid_byte_fails_fast_before_the_message_ends() {
        // κόσμε followed by a UTF-16 surrogate (ED A0 80), which is not UTF-8.
        let mut v = Utf8Validator::new();
        assert_eq!(v.feed("κόσμε".as_bytes()), Ok(()));
        assert_eq!(v.feed(&[0xed]), Ok(()));
        assert_eq!(v.feed(&[0xa0]), Err(InvalidUtf8));
    }

    #[test]
    fn code_points_above_u10ffff_fail_on_the_second_byte() {
        let mut v = Utf8Validator::new();
        assert_eq!(v.feed(&[0xf4]), Ok(()));
        assert_eq!(v.feed(&[0x90]), Err(InvalidUtf8));
    }

    #[test]
    fn invalid_lead_bytes_fail_immediately() {
        for b in [0x80u8, 0xc0, 0xc1, 0xf5, 0xff] {
            assert_eq!(Utf8Validator::new().feed(&[b]), Err(InvalidUtf8), "{b:#x}");
        }
    }

    #[test]
    fn a_character_split_over_three_pieces_is_accepted() {
        let clef = "𝄞".as_bytes();
        assert_eq!(feed_split(clef, &[1, 2]), Ok(()));
        assert_eq!(feed_split(clef, &[1, 3]), Ok(()));
    }
}
