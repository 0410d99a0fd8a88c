//! The slice of MessagePack the hub protocol needs, plus SignalR's VarInt length prefix.
//!
//! Writers append to a `Vec<u8>`; the [`Reader`] borrows its input and never panics on
//! malformed bytes (every read is bounds-checked and returns a [`MsgpackError`]).

use std::fmt;

/// Why a MessagePack value could not be read.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum MsgpackError {
    /// The input ended inside a value.
    Truncated,
    /// A value of another type than the one asked for.
    UnexpectedType(u8),
    /// Nesting deeper than the reader follows.
    TooDeep,
}

impl fmt::Display for MsgpackError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Self::Truncated => f.write_str("msgpack value truncated"),
            Self::UnexpectedType(marker) => write!(f, "unexpected msgpack marker 0x{marker:02x}"),
            Self::TooDeep => f.write_str("msgpack nesting too deep"),
        }
    }
}

impl std::error::Error for MsgpackError {}

/// Appends an array header for `len` elements.
pub fn write_array_len(out: &mut Vec<u8>, len: usize) {
    if len < 16 {
        out.push(0x90 | len as u8);
    } else if let Ok(len) = u16::try_from(len) {
        out.push(0xdc);
        out.extend_from_slice(&len.to_be_bytes());
    } else {
        out.push(0xdd);
        out.extend_from_slice(&(len as u32).to_be_bytes());
    }
}

/// Appends a map header for `len` pairs.
pub fn write_map_len(out: &mut Vec<u8>, len: usize) {
    if len < 16 {
        out.push(0x80 | len as u8);
    } else if let Ok(len) = u16::try_from(len) {
        out.push(0xde);
        out.extend_from_slice(&len.to_be_bytes());
    } else {
        out.push(0xdf);
        out.extend_from_slice(&(len as u32).to_be_bytes());
    }
}

/// Appends `nil`.
pub fn write_nil(out: &mut Vec<u8>) {
    out.push(0xc0);
}

/// Appends an unsigned integer in its smallest form.
pub fn write_uint(out: &mut Vec<u8>, value: u64) {
    if value < 128 {
        out.push(value as u8);
    } else if let Ok(v) = u8::try_from(value) {
        out.extend_from_slice(&[0xcc, v]);
    } else if let Ok(v) = u16::try_from(value) {
        out.push(0xcd);
        out.extend_from_slice(&v.to_be_bytes());
    } else if let Ok(v) = u32::try_from(value) {
        out.push(0xce);
        out.extend_from_slice(&v.to_be_bytes());
    } else {
        out.push(0xcf);
        out.extend_from_slice(&value.to_be_bytes());
    }
}

/// Appends a string (fixstr, str8, str16 or str32).
pub fn write_str(out: &mut Vec<u8>, value: &[u8]) {
    let len = value.len();
    if len < 32 {
        out.push(0xa0 | len as u8);
    } else if let Ok(len) = u8::try_from(len) {
        out.extend_from_slice(&[0xd9, len]);
    } else if let Ok(len) = u16::try_from(len) {
        out.push(0xda);
        out.extend_from_slice(&len.to_be_bytes());
    } else {
        out.push(0xdb);
        out.extend_from_slice(&(len as u32).to_be_bytes());
    }
    out.extend_from_slice(value);
}

/// Appends SignalR's length prefix: 7 bits per byte, least significant group first.
pub fn write_varint(out: &mut Vec<u8>, mut len: usize) {
    loop {
        let low = (len & 0x7f) as u8;
        len >>= 7;
        if len == 0 {
            out.push(low);
            return;
        }
        out.push(low | 0x80);
    }
}

/// Reads a SignalR length prefix: `Ok(None)` if more bytes are needed, else the body length
/// and the prefix length. More than 5 bytes, or a 5th byte above `0x07`, is an error (2 GB).
pub fn read_varint(input: &[u8]) -> Result<Option<(usize, usize)>, VarIntError> {
    let mut len = 0usize;
    for (i, &byte) in input.iter().enumerate().take(5) {
        if i == 4 && byte > 0x07 {
            return Err(VarIntError);
        }
        len |= usize::from(byte & 0x7f) << (7 * i);
        if byte & 0x80 == 0 {
            return Ok(Some((len, i + 1)));
        }
    }
    if input.len() >= 5 {
        return Err(VarIntError);
    }
    Ok(None)
}

/// A length prefix that announces a message of 2 GB or more.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct VarIntError;

impl fmt::Display for VarIntError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("messages of 2 GB or more are not supported")
    }
}

impl std::error::Error for VarIntError {}

/// A value read by [`Reader::read_scalar`]: what a hub message's argument or result can be
/// as far as the load generator cares.
#[derive(Debug, Clone, Copy, PartialEq)]
pub enum Scalar<'a> {
    /// A string (raw UTF-8 bytes).
    Str(&'a [u8]),
    /// An integer.
    Int(i64),
    /// `nil`.
    Nil,
    /// Anything else (skipped).
    Other,
}

/// A bounds-checked cursor over MessagePack bytes.
#[derive(Debug)]
pub struct Reader<'a> {
    input: &'a [u8],
    pos: usize,
}

const MAX_DEPTH: usize = 64;

impl<'a> Reader<'a> {
    /// A reader at the start of `input`.
    pub fn new(input: &'a [u8]) -> Self {
        Self { input, pos: 0 }
    }

    fn byte(&mut self) -> Result<u8, MsgpackError> {
        let b = *self.input.get(self.pos).ok_or(MsgpackError::Truncated)?;
        self.pos += 1;
        Ok(b)
    }

    fn take(&mut self, len: usize) -> Result<&'a [u8], MsgpackError> {
        let end = self.pos.checked_add(len).ok_or(MsgpackError::Truncated)?;
        let bytes = self
            .input
            .get(self.pos..end)
            .ok_or(MsgpackError::Truncated)?;
        self.pos = end;
        Ok(bytes)
    }

    fn be(&mut self, len: usize) -> Result<u64, MsgpackError> {
        Ok(self
            .take(len)?
            .iter()
            .fold(0u64, |acc, &b| (acc << 8) | u64::from(b)))
    }

    /// Reads an array header.
    pub fn read_array_len(&mut self) -> Result<usize, MsgpackError> {
        match self.byte()? {
            m @ 0x90..=0x9f => Ok(usize::from(m & 0x0f)),
            0xdc => Ok(self.be(2)? as usize),
            0xdd => Ok(self.be(4)? as usize),
            m => Err(MsgpackError::UnexpectedType(m)),
        }
    }

    /// Reads an integer (any width, signed or not).
    pub fn read_int(&mut self) -> Result<i64, MsgpackError> {
        let marker = self.input.get(self.pos).copied();
        match self.read_scalar()? {
            Scalar::Int(v) => Ok(v),
            _ => Err(MsgpackError::UnexpectedType(marker.unwrap_or(0))),
        }
    }

    /// Reads a string, or `None` for nil.
    pub fn read_opt_str(&mut self) -> Result<Option<&'a [u8]>, MsgpackError> {
        let marker = self.input.get(self.pos).copied();
        match self.read_scalar()? {
            Scalar::Str(s) => Ok(Some(s)),
            Scalar::Nil => Ok(None),
            _ => Err(MsgpackError::UnexpectedType(marker.unwrap_or(0))),
        }
    }

    /// Reads one value as a [`Scalar`], skipping containers and other types whole.
    pub fn read_scalar(&mut self) -> Result<Scalar<'a>, MsgpackError> {
        let marker = self.byte()?;
        Ok(match marker {
            0x00..=0x7f => Scalar::Int(i64::from(marker)),
            0xe0..=0xff => Scalar::Int(i64::from(marker as i8)),
            0xa0..=0xbf => Scalar::Str(self.take(usize::from(marker & 0x1f))?),
            0xd9 => {
                let len = self.be(1)? as usize;
                Scalar::Str(self.take(len)?)
            }
            0xda => {
                let len = self.be(2)? as usize;
                Scalar::Str(self.take(len)?)
            }
            0xdb => {
                let len = self.be(4)? as usize;
                Scalar::Str(self.take(len)?)
            }
            0xc0 => Scalar::Nil,
            0xcc => Scalar::Int(self.be(1)? as i64),
            0xcd => Scalar::Int(self.be(2)? as i64),
            0xce => Scalar::Int(self.be(4)? as i64),
            0xcf => Scalar::Int(self.be(8)? as i64),
            0xd0 => Scalar::Int(i64::from(self.be(1)? as u8 as i8)),
            0xd1 => Scalar::Int(i64::from(self.be(2)? as u16 as i16)),
            0xd2 => Scalar::Int(i64::from(self.be(4)? as u32 as i32)),
            0xd3 => Scalar::Int(self.be(8)? as i64),
            _ => {
                self.pos -= 1;
                self.skip(0)?;
                Scalar::Other
            }
        })
    }

    /// Skips one value of any type.
    pub fn skip_value(&mut self) -> Result<(), MsgpackError> {
        self.skip(0)
    }

    fn skip(&mut self, depth: usize) -> Result<(), MsgpackError> {
        if depth > MAX_DEPTH {
            return Err(MsgpackError::TooDeep);
        }
        let marker = self.byte()?;
        let (items, skip_bytes) = match marker {
            0x00..=0x7f | 0xe0..=0xff | 0xc0 | 0xc2 | 0xc3 => (0, 0),
            0x80..=0x8f => (2 * usize::from(marker & 0x0f), 0),
            0x90..=0x9f => (usize::from(marker & 0x0f), 0),
            0xa0..=0xbf => (0, usize::from(marker & 0x1f)),
            0xc4 | 0xd9 => (0, self.be(1)? as usize),
            0xc5 | 0xda => (0, self.be(2)? as usize),
            0xc6 | 0xdb => (0, self.be(4)? as usize),
            0xc7 => (0, self.be(1)? as usize + 1),
            0xc8 => (0, self.be(2)? as usize + 1),
            0xc9 => (0, self.be(4)? as usize + 1),
            0xca => (0, 4),
            0xcb => (0, 8),
            0xcc | 0xd0 => (0, 1),
            0xcd | 0xd1 => (0, 2),
            0xce | 0xd2 => (0, 4),
            0xcf | 0xd3 => (0, 8),
            0xd4 => (0, 2),
            0xd5 => (0, 3),
            0xd6 => (0, 5),
            0xd7 => (0, 9),
            0xd8 => (0, 17),
            0xdc => (self.be(2)? as usize, 0),
            0xdd => (self.be(4)? as usize, 0),
            0xde => (2 * self.be(2)? as usize, 0),
            0xdf => (2 * self.be(4)? as usize, 0),
            m => return Err(MsgpackError::UnexpectedType(m)),
        };
        self.take(skip_bytes)?;
        for _ in 0..items {
            self.skip(depth + 1)?;
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn varint(len: usize) -> Vec<u8> {
        let mut out = Vec::new();
        write_varint(&mut out, len);
        out
    }

    #[test]
    fn varint_prefixes_match_the_protocol_examples() {
        assert_eq!(varint(0), [0x00]);
        assert_eq!(varint(127), [0x7f]);
        assert_eq!(varint(128), [0x80, 0x01]);
        assert_eq!(varint(300), [0xac, 0x02]);
        assert_eq!(varint(16383), [0xff, 0x7f]);
        assert_eq!(varint(16384), [0x80, 0x80, 0x01]);
        assert_eq!(varint(32768), [0x80, 0x80, 0x02]);
        assert_eq!(varint(0x7fff_ffff), [0xff, 0xff, 0xff, 0xff, 0x07]);
    }

    #[test]
    fn varint_prefixes_read_back_with_their_length() {
        for len in [0, 1, 127, 128, 300, 5248, 16384, 32000, 0x7fff_ffff] {
            let bytes = varint(len);
            assert_eq!(read_varint(&bytes), Ok(Some((len, bytes.len()))));
        }
        assert_eq!(read_varint(&[0x80, 0x29]), Ok(Some((5248, 2))));
    }

    #[test]
    fn a_varint_cut_short_asks_for_more_bytes() {
        assert_eq!(read_varint(&[]), Ok(None));
        assert_eq!(read_varint(&[0x80]), Ok(None));
        assert_eq!(read_varint(&[0xff, 0xff, 0xff, 0xff]), Ok(None));
    }

    #[test]
    fn a_varint_of_2gb_or_more_is_refused() {
        assert_eq!(
            read_varint(&[0xff, 0xff, 0xff, 0xff, 0x08]),
            Err(VarIntError)
        );
        assert_eq!(
            read_varint(&[0xff, 0xff, 0xff, 0xff, 0x87, 0x01]),
            Err(VarIntError)
        );
    }

    #[test]
    fn strings_use_the_smallest_header_and_read_back() {
        for len in [0usize, 31, 32, 255, 256, 65535, 65536] {
            let value = vec![b'a'; len];
            let mut out = Vec::new();
            write_str(&mut out, &value);
            let expected_header = match len {
                0..=31 => 1,
                32..=255 => 2,
                256..=65535 => 3,
                _ => 5,
            };
            assert_eq!(out.len(), len + expected_header);
            let mut reader = Reader::new(&out);
            assert_eq!(reader.read_scalar(), Ok(Scalar::Str(&value[..])));
        }
    }

    #[test]
    fn integers_read_back_in_every_width() {
        for value in [0u64, 127, 128, 255, 256, 65535, 65536, 1 << 40] {
            let mut out = Vec::new();
            write_uint(&mut out, value);
            assert_eq!(Reader::new(&out).read_int(), Ok(value as i64));
        }
        assert_eq!(Reader::new(&[0xff]).read_int(), Ok(-1));
        assert_eq!(Reader::new(&[0xd0, 0x80]).read_int(), Ok(-128));
    }

    #[test]
    fn skipping_steps_over_nested_containers() {
        // [{"a": [1, 2.0, bin(2)]}, "next"]
        let bytes = [
            0x92, 0x81, 0xa1, b'a', 0x93, 0x01, 0xcb, 0, 0, 0, 0, 0, 0, 0, 0, 0xc4, 0x02, 9, 9,
            0xa4, b'n', b'e', b'x', b't',
        ];
        let mut reader = Reader::new(&bytes);
        assert_eq!(reader.read_array_len(), Ok(2));
        reader.skip_value().unwrap();
        assert_eq!(reader.read_scalar(), Ok(Scalar::Str(b"next")));
    }

    #[test]
    fn truncated_input_is_an_error_not_a_panic() {
        let mut reader = Reader::new(&[0xda, 0x01]);
        assert_eq!(reader.read_scalar(), Err(MsgpackError::Truncated));
        let mut reader = Reader::new(&[0xa5, b'a']);
        assert_eq!(reader.read_scalar(), Err(MsgpackError::Truncated));
        let mut reader = Reader::new(&[0x92, 0x01]);
        assert_eq!(reader.skip_value(), Err(MsgpackError::Truncated));
    }
}
