//! [`LabelColumn`]: one dictionary label column of the series table with its postings (per value,
//! the ascending ids of the series holding it), and the sorted-list intersection matchers use.

use std::collections::HashMap;

use arrow::array::{Array, AsArray, DictionaryArray};
use arrow::datatypes::Int32Type;

use crate::labels::{MatchOp, Matcher};

/// One label column of the series table: its dictionary (values, keys), the keys of each value
/// and, per dictionary key, the ascending ids of the series holding that value (postings, in CSR
/// layout).
///
/// Memory: 4 bytes per series with the label plus a map entry and 4 bytes per dictionary value,
/// next to the column.
#[derive(Debug, Clone)]
pub(super) struct LabelColumn {
    pub(super) dict: DictionaryArray<Int32Type>,
    /// Value -> its dictionary keys (one, unless the dictionary repeats a value).
    keys_of: HashMap<String, Vec<u32>>,
    /// `ids[offsets[k]..offsets[k + 1]]` are the series whose key is `k`.
    offsets: Vec<u32>,
    ids: Vec<u32>,
}

impl LabelColumn {
    /// Builds the postings by a counting sort of the keys (null keys belong to no list).
    pub(super) fn new(dict: DictionaryArray<Int32Type>) -> Self {
        let n_values = dict.values().len();
        let keys = dict.keys();
        let valid = |i: usize| keys.is_valid(i) && (keys.value(i) as usize) < n_values;
        let mut offsets = vec![0u32; n_values + 1];
        for i in (0..keys.len()).filter(|&i| valid(i)) {
            offsets[keys.value(i) as usize + 1] += 1;
        }
        for k in 0..n_values {
            offsets[k + 1] += offsets[k];
        }
        let mut next = offsets.clone();
        let mut ids = vec![0u32; offsets[n_values] as usize];
        for i in (0..keys.len()).filter(|&i| valid(i)) {
            let k = keys.value(i) as usize;
            ids[next[k] as usize] = i as u32;
            next[k] += 1;
        }
        let mut keys_of: HashMap<String, Vec<u32>> = HashMap::new();
        let values = dict.values().as_string::<i32>();
        for k in (0..values.len()).filter(|&k| values.is_valid(k)) {
            keys_of.entry(values.value(k).to_string()).or_default().push(k as u32);
        }
        LabelColumn { dict, keys_of, offsets, ids }
    }

    /// Approximate heap bytes of the postings and the value lookup (the dictionary itself is part
    /// of the series table).
    pub(super) fn heap_bytes(&self) -> usize {
        let map: usize = self.keys_of.iter().map(|(v, k)| v.len() + 24 + 24 + 4 * k.len()).sum();
        4 * (self.offsets.len() + self.ids.len()) + map
    }

    /// Per dictionary key: does `m` accept its value? An equality matcher looks its value up;
    /// the others run once per distinct value.
    pub(super) fn accepted_keys(&self, m: &Matcher) -> Vec<bool> {
        let values = self.dict.values().as_string::<i32>();
        if m.op == MatchOp::Equal {
            let mut hits = vec![false; values.len()];
            for &k in self.keys_of.get(&m.value).map_or(&[][..], Vec::as_slice) {
                if let Some(h) = hits.get_mut(k as usize) {
                    *h = true;
                }
            }
            return hits;
        }
        (0..values.len()).map(|i| values.is_valid(i) && m.matches(values.value(i))).collect()
    }

    /// Ascending ids of the series whose key is `k`.
    pub(super) fn postings(&self, k: usize) -> &[u32] {
        match (self.offsets.get(k), self.offsets.get(k + 1)) {
            (Some(&a), Some(&b)) => self.ids.get(a as usize..b as usize).unwrap_or(&[]),
            _ => &[],
        }
    }
}

/// The ascending ids present in both ascending lists.
pub(super) fn intersect_sorted(a: &[u32], b: &[u32]) -> Vec<u32> {
    let (mut i, mut j, mut out) = (0, 0, Vec::with_capacity(a.len().min(b.len())));
    while i < a.len() && j < b.len() {
        match a[i].cmp(&b[j]) {
            std::cmp::Ordering::Less => i += 1,
            std::cmp::Ordering::Greater => j += 1,
            std::cmp::Ordering::Equal => {
                out.push(a[i]);
                i += 1;
                j += 1;
            }
        }
    }
    out
}

#[cfg(test)]
#[allow(clippy::unwrap_used, clippy::expect_used)]
mod tests {
    use std::sync::Arc;

    use arrow::array::DictionaryArray;

    use super::*;

    #[test]
    fn postings_list_each_key_in_row_order_and_skip_nulls() {
        let keys = arrow::array::Int32Array::from(vec![Some(1), None, Some(0), Some(1), Some(2), None, Some(1)]);
        let values = arrow::array::StringArray::from(vec!["a", "b", "c"]);
        let col = LabelColumn::new(DictionaryArray::try_new(keys, Arc::new(values)).unwrap());
        assert_eq!(col.postings(0), &[2]);
        assert_eq!(col.postings(1), &[0, 3, 6]);
        assert_eq!(col.postings(2), &[4]);
        assert_eq!(col.postings(3), &[] as &[u32]);
        assert_eq!(intersect_sorted(&[0, 2, 3, 6, 9], &[3, 4, 6]), vec![3, 6]);
        // A dictionary that repeats a value: both keys count.
        let keys = arrow::array::Int32Array::from(vec![0, 1, 2, 0]);
        let values = arrow::array::StringArray::from(vec!["a", "b", "a"]);
        let col = LabelColumn::new(DictionaryArray::try_new(keys, Arc::new(values)).unwrap());
        let eq = Matcher::new(MatchOp::Equal, "x", "a").unwrap();
        assert_eq!(col.accepted_keys(&eq), vec![true, false, true]);
        let re = Matcher::new(MatchOp::RegexMatch, "x", "b|c").unwrap();
        assert_eq!(col.accepted_keys(&re), vec![false, true, false]);
        assert_eq!(col.accepted_keys(&Matcher::new(MatchOp::Equal, "x", "z").unwrap()), vec![false; 3]);
    }
}
