//! Label sets as the batch dictionary holds them: length-prefixed (name, value) pairs, encoded,
//! decoded and read pair by pair without building strings.

use std::sync::Arc;

use arrow::array::{ArrayRef, BinaryArray};
use engine::Labels;

use crate::error::{Error, Result};

/// Encodes a label set as the dictionary value (length-prefixed names and values).
pub(crate) fn encode_labels(l: &Labels, out: &mut Vec<u8>) {
    for lab in l.iter() {
        out.extend_from_slice(&(lab.name.len() as u32).to_le_bytes());
        out.extend_from_slice(lab.name.as_bytes());
        out.extend_from_slice(&(lab.value.len() as u32).to_le_bytes());
        out.extend_from_slice(lab.value.as_bytes());
    }
}

/// Decodes [`encode_labels`]' output.
pub(crate) fn decode_labels(mut b: &[u8]) -> Result<Labels> {
    let bad = || Error::Internal("corrupt label dictionary in a PromQL batch".into());
    let take = |b: &mut &[u8]| -> Result<String> {
        if b.len() < 4 {
            return Err(bad());
        }
        let n = u32::from_le_bytes([b[0], b[1], b[2], b[3]]) as usize;
        if b.len() < 4 + n {
            return Err(bad());
        }
        let s = String::from_utf8(b[4..4 + n].to_vec()).map_err(|_| bad())?;
        *b = &b[4 + n..];
        Ok(s)
    };
    let mut pairs = Vec::new();
    while !b.is_empty() {
        let n = take(&mut b)?;
        let v = take(&mut b)?;
        pairs.push((n, v));
    }
    Ok(Labels::from_pairs(pairs))
}

/// The (name, value) pairs of an encoded label set, without decoding them into strings (a
/// truncated encoding ends the iteration).
pub(crate) fn encoded_pairs(b: &[u8]) -> EncodedPairs<'_> {
    EncodedPairs(b)
}

/// Iterator of [`encoded_pairs`].
pub(crate) struct EncodedPairs<'a>(&'a [u8]);

impl<'a> Iterator for EncodedPairs<'a> {
    type Item = (&'a [u8], &'a [u8]);
    fn next(&mut self) -> Option<Self::Item> {
        fn field<'a>(b: &mut &'a [u8]) -> Option<&'a [u8]> {
            let n = u32::from_le_bytes(b.get(..4)?.try_into().ok()?) as usize;
            let f = b.get(4..4 + n)?;
            *b = &b[4 + n..];
            Some(f)
        }
        let name = field(&mut self.0)?;
        let value = field(&mut self.0)?;
        Some((name, value))
    }
}

/// Appends one encoded (name, value) pair, as [`encode_labels`] writes it.
pub(crate) fn encode_pair(name: &[u8], value: &[u8], out: &mut Vec<u8>) {
    out.extend_from_slice(&(name.len() as u32).to_le_bytes());
    out.extend_from_slice(name);
    out.extend_from_slice(&(value.len() as u32).to_le_bytes());
    out.extend_from_slice(value);
}

/// A label dictionary built from encoded label sets.
pub(crate) fn dictionary_of<'a>(sets: impl IntoIterator<Item = &'a [u8]>) -> Result<ArrayRef> {
    let mut dict = Vec::new();
    let mut offs: Vec<i32> = vec![0];
    for s in sets {
        dict.extend_from_slice(s);
        offs.push(dict.len() as i32);
    }
    let values = BinaryArray::try_new(arrow::buffer::OffsetBuffer::new(offs.into()), dict.into(), None)
        .map_err(|e| Error::Internal(format!("building label dictionary: {e}")))?;
    Ok(Arc::new(values))
}
