//! Label sets as the batch dictionary holds them: length-prefixed (name, value) pairs, encoded,
//! decoded and read pair by pair without building strings.
//!
//! An encoded set is what [`encode_labels`] writes for a [`Labels`]: pairs in name order (byte
//! order), names unique, no empty values. Kernels that filter or merge encoded pairs keep that
//! order, so equal label sets are equal bytes.

use std::hash::BuildHasher;
use std::sync::Arc;

use arrow::array::{ArrayRef, BinaryArray};
use engine::{Label, Labels};

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

/// Decodes [`encode_labels`]' output (two strings per label, nothing else allocated or sorted).
pub(crate) fn decode_labels(b: &[u8]) -> Result<Labels> {
    let bad = || Error::Internal("corrupt label dictionary in a PromQL batch".into());
    let string = |f: &[u8]| String::from_utf8(f.to_vec()).map_err(|_| bad());
    let mut labels = Vec::with_capacity(encoded_pairs(b).count());
    let mut len = 0;
    for (n, v) in encoded_pairs(b) {
        labels.push(Label { name: string(n)?, value: string(v)? });
        len += 8 + n.len() + v.len();
    }
    // The pairs end where the encoding does; anything after them is a truncated pair.
    if len != b.len() {
        return Err(bad());
    }
    Ok(Labels::from_sorted(labels))
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

/// Finds encoded label sets by content. The sets live in the caller's storage (read through
/// a `get(index)` function): the index holds only their positions, so each set is stored once.
#[derive(Debug, Default)]
pub(crate) struct LabelSetIndex {
    table: hashbrown::HashTable<usize>,
    hasher: hashbrown::DefaultHashBuilder,
}

impl LabelSetIndex {
    /// The position of `set` when it is indexed; otherwise indexes it at position `next`
    /// (which `get` must return once the caller has stored it) and returns `None`.
    pub(crate) fn find_or_insert<'s>(
        &mut self,
        set: &[u8],
        next: usize,
        get: impl Fn(usize) -> &'s [u8],
    ) -> Option<usize> {
        let h = self.hasher.hash_one(set);
        if let Some(&i) = self.table.find(h, |&i| get(i) == set) {
            return Some(i);
        }
        let hasher = &self.hasher;
        self.table.insert_unique(h, next, |&i| hasher.hash_one(get(i)));
        None
    }
}
