//! [`LabelColumn`]: one dictionary label column of the series table with its postings (per value,
//! the ascending ids of the series holding it), and the sorted-list intersection matchers use.

use std::borrow::Cow;
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

    /// The dictionary keys whose value `m` accepts. An equality matcher looks its value up, a
    /// regex matcher with a [`Matcher::literal_set`] its strings; the others run once per
    /// distinct value.
    pub(super) fn accepted(&self, m: &Matcher) -> Accepted<'_> {
        let keys = |v: &str| self.keys_of.get(v).map_or(&[][..], Vec::as_slice);
        let values = self.dict.values().as_string::<i32>();
        match (m.op, m.literal_set()) {
            (MatchOp::Equal, _) => Accepted::Keys(Cow::Borrowed(keys(&m.value))),
            (MatchOp::RegexMatch, Some(set)) => {
                let mut ks: Vec<u32> = set.iter().flat_map(|v| keys(v)).copied().collect();
                ks.sort_unstable();
                Accepted::Keys(Cow::Owned(ks))
            }
            (MatchOp::RegexNoMatch, Some(set)) => {
                let mut mask: Vec<bool> = (0..values.len()).map(|i| values.is_valid(i)).collect();
                for &k in set.iter().flat_map(|v| keys(v)) {
                    if let Some(h) = mask.get_mut(k as usize) {
                        *h = false;
                    }
                }
                Accepted::Mask(mask)
            }
            _ => Accepted::Mask((0..values.len()).map(|i| values.is_valid(i) && m.matches(values.value(i))).collect()),
        }
    }

    /// How many series hold `value` (the length of its postings).
    pub(super) fn count_of(&self, value: &str) -> usize {
        self.keys_of.get(value).map_or(0, |ks| ks.iter().map(|&k| self.postings(k as usize).len()).sum())
    }

    /// Ascending ids of the series whose key is `k`.
    pub(super) fn postings(&self, k: usize) -> &[u32] {
        match (self.offsets.get(k), self.offsets.get(k + 1)) {
            (Some(&a), Some(&b)) => self.ids.get(a as usize..b as usize).unwrap_or(&[]),
            _ => &[],
        }
    }
}

/// The dictionary keys a matcher accepts ([`LabelColumn::accepted`]).
pub(super) enum Accepted<'a> {
    /// An equality matcher's or a literal set's: the keys of its values (ascending; one per value
    /// unless the dictionary repeats it), found without visiting the dictionary.
    Keys(Cow<'a, [u32]>),
    /// Any other matcher's: per key, whether it accepts the key's value.
    Mask(Vec<bool>),
}

impl Accepted<'_> {
    /// Does the matcher accept key `k`?
    pub(super) fn contains(&self, k: u32) -> bool {
        match self {
            Accepted::Keys(keys) => keys.binary_search(&k).is_ok(),
            Accepted::Mask(mask) => mask.get(k as usize).copied().unwrap_or(false),
        }
    }

    /// The accepted keys, ascending for a mask.
    pub(super) fn keys(&self) -> Vec<usize> {
        match self {
            Accepted::Keys(keys) => keys.iter().map(|&k| k as usize).collect(),
            Accepted::Mask(mask) => mask.iter().enumerate().filter(|(_, h)| **h).map(|(k, _)| k).collect(),
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
        let accepts = |m: &Matcher| -> Vec<bool> {
            let a = col.accepted(m);
            assert_eq!(a.keys(), (0..3).filter(|&k| a.contains(k as u32)).collect::<Vec<_>>(), "{m:?}");
            (0..3).map(|k| a.contains(k)).collect()
        };
        let eq = Matcher::new(MatchOp::Equal, "x", "a").unwrap();
        assert_eq!(accepts(&eq), vec![true, false, true]);
        assert_eq!(col.count_of("a"), 3);
        assert_eq!((col.count_of("b"), col.count_of("z")), (1, 0));
        let re = Matcher::new(MatchOp::RegexMatch, "x", "b|c").unwrap();
        assert_eq!(accepts(&re), vec![false, true, false]);
        assert_eq!(accepts(&Matcher::new(MatchOp::Equal, "x", "z").unwrap()), vec![false; 3]);
    }

    #[test]
    fn literal_sets_accept_what_the_regex_accepts() {
        let values = ["api", "web", "", "db", "api-eu", "api-us", "web", "x|y", "ap"];
        let keys = arrow::array::Int32Array::from((0..values.len() as i32).chain([0, 4, 4]).collect::<Vec<_>>());
        let col = LabelColumn::new(
            DictionaryArray::try_new(keys, Arc::new(arrow::array::StringArray::from(values.to_vec()))).unwrap(),
        );
        for re in ["api|web", "api-(eu|us)", "nope|db", "|api", r"x\|y", "ap|api", "a.*", "(?i)API"] {
            for op in [MatchOp::RegexMatch, MatchOp::RegexNoMatch] {
                let m = Matcher::new(op, "x", re).unwrap();
                let a = col.accepted(&m);
                for (k, v) in values.iter().enumerate() {
                    assert_eq!(a.contains(k as u32), m.matches(v), "{m} on key {k} ({v:?})");
                }
                assert_eq!(a.keys(), (0..values.len()).filter(|&k| m.matches(values[k])).collect::<Vec<_>>(), "{m}");
            }
        }
        assert_eq!(col.count_of("api-eu"), 3);
    }
}
