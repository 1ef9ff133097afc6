//! Bounds-checked decoding of the TSDB files' primitive fields.
//!
//! Owns the big-endian integers, Go-style (zig-zag) varints and length-prefixed strings every
//! section is built from. A [`Decbuf`] reads from a slice of a file and knows where that slice
//! starts, so each error names the file and absolute byte offset. Nothing here panics on bad input.

use std::path::Path;

use crate::error::{Error, Result};

pub(crate) use engine::chunkenc::uvarint;

/// Undoes zig-zag encoding.
#[inline]
pub(crate) fn unzigzag(u: u64) -> i64 {
    ((u >> 1) as i64) ^ -((u & 1) as i64)
}

/// Reads a big-endian u32 at `pos` of `data`, if the bytes are there.
#[inline]
pub(crate) fn be_u32_at(data: &[u8], pos: usize) -> Option<u32> {
    let b = data.get(pos..pos.checked_add(4)?)?;
    Some(u32::from_be_bytes([b[0], b[1], b[2], b[3]]))
}

/// Reads a big-endian u64 at `pos` of `data`, if the bytes are there.
#[inline]
pub(crate) fn be_u64_at(data: &[u8], pos: usize) -> Option<u64> {
    let b = data.get(pos..pos.checked_add(8)?)?;
    let mut a = [0u8; 8];
    a.copy_from_slice(b);
    Some(u64::from_be_bytes(a))
}

/// A read cursor over part of a file.
#[derive(Debug)]
pub(crate) struct Decbuf<'p, 'a> {
    path: &'p Path,
    data: &'a [u8],
    pos: usize,
    /// File offset of `data[0]`.
    base: u64,
}

impl<'p, 'a> Decbuf<'p, 'a> {
    /// A cursor over `data`, which starts at file offset `base` of `path`.
    pub(crate) fn new(path: &'p Path, data: &'a [u8], base: u64) -> Self {
        Decbuf { path, data, pos: 0, base }
    }

    /// Absolute file offset of the next byte.
    pub(crate) fn offset(&self) -> u64 {
        self.base + self.pos as u64
    }

    /// Bytes left.
    pub(crate) fn remaining(&self) -> usize {
        self.data.len().saturating_sub(self.pos)
    }

    /// A corruption error at the current offset.
    pub(crate) fn err(&self, reason: impl Into<String>) -> Error {
        Error::corrupt(self.path, self.offset(), reason)
    }

    fn truncated(&self, what: &str) -> Error {
        self.err(format!("truncated while reading {what} ({} bytes left)", self.remaining()))
    }

    /// Reads a big-endian u32.
    pub(crate) fn be_u32(&mut self, what: &str) -> Result<u32> {
        let v = be_u32_at(self.data, self.pos).ok_or_else(|| self.truncated(what))?;
        self.pos += 4;
        Ok(v)
    }

    /// Reads an unsigned varint.
    pub(crate) fn uvarint(&mut self, what: &str) -> Result<u64> {
        let rest = self.data.get(self.pos..).unwrap_or_default();
        match uvarint(rest) {
            Some((v, n)) => {
                self.pos += n;
                Ok(v)
            }
            None if rest.len() < 10 && rest.iter().all(|b| b & 0x80 != 0) => Err(self.truncated(what)),
            None => Err(self.err(format!("invalid varint in {what}"))),
        }
    }

    /// Reads a signed (zig-zag) varint.
    pub(crate) fn varint(&mut self, what: &str) -> Result<i64> {
        self.uvarint(what).map(unzigzag)
    }

    /// Reads a uvarint that must fit in a u32 (counts, symbol refs).
    pub(crate) fn uvarint_u32(&mut self, what: &str) -> Result<u32> {
        let at = self.offset();
        let v = self.uvarint(what)?;
        u32::try_from(v).map_err(|_| Error::corrupt(self.path, at, format!("{what} {v} does not fit in 32 bits")))
    }

    /// Takes the next `n` bytes.
    pub(crate) fn bytes(&mut self, n: usize, what: &str) -> Result<&'a [u8]> {
        let end = self.pos.checked_add(n).filter(|&e| e <= self.data.len()).ok_or_else(|| self.truncated(what))?;
        let s = &self.data[self.pos..end];
        self.pos = end;
        Ok(s)
    }

    /// Reads a uvarint length followed by that many bytes of UTF-8.
    pub(crate) fn uvarint_str(&mut self, what: &str) -> Result<&'a str> {
        let at = self.offset();
        let n = self.uvarint(what)?;
        let n = usize::try_from(n).map_err(|_| self.err(format!("{what} length {n} too large")))?;
        let b = self.bytes(n, what)?;
        std::str::from_utf8(b).map_err(|e| Error::corrupt(self.path, at, format!("{what} is not UTF-8: {e}")))
    }
}

#[cfg(test)]
#[allow(clippy::unwrap_used, clippy::expect_used)]
mod tests {
    use super::*;

    #[test]
    fn varints_match_go() {
        assert_eq!(uvarint(&[0x00]), Some((0, 1)));
        assert_eq!(uvarint(&[0xac, 0x02]), Some((300, 2)));
        assert_eq!(uvarint(&[0xff; 9].iter().copied().chain([0x01]).collect::<Vec<_>>()), Some((u64::MAX, 10)));
        // 10th byte > 1 overflows 64 bits
        assert_eq!(uvarint(&[0xff; 9].iter().copied().chain([0x02]).collect::<Vec<_>>()), None);
        assert_eq!(uvarint(&[0x80, 0x80]), None);
        assert_eq!(unzigzag(1), -1);
        assert_eq!(unzigzag(2), 1);
        assert_eq!(unzigzag(3), -2);
    }

    #[test]
    fn decbuf_names_offset_on_truncation() {
        let p = Path::new("/x/index");
        let mut d = Decbuf::new(p, &[0x00, 0x00, 0x01, 0x80], 100);
        assert_eq!(d.be_u32("n").unwrap(), 0x0000_0180);
        let e = d.be_u32("flag").unwrap_err().to_string();
        assert_eq!(e, "corrupt /x/index at offset 104: truncated while reading flag (0 bytes left)");
        let mut d = Decbuf::new(p, &[0x03, b'a', b'b'], 0);
        let e = d.uvarint_str("symbol").unwrap_err().to_string();
        assert!(e.contains("offset 1: truncated while reading symbol"), "{e}");
    }
}
