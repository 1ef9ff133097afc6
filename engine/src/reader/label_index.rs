//! [`LabelIndex`]: the label names of a block and the sorted distinct values of each.

use std::collections::HashMap;

use crate::labels::{Label, Labels};

/// A block's label index: every label name of its series (those with samples) and the sorted
/// distinct values of each, built once when the series table is decoded so that `/labels` and
/// `/label/<name>/values` without matchers never walk the series.
///
/// Memory: one `String` (24 bytes plus the text) per distinct (name, value) pair and per name, so
/// it grows with the distinct values, not with the series: a block of 10,080 series over 360
/// instances holds a few hundred pairs, tens of KB (see [`LabelIndex::heap_bytes`]).
#[derive(Debug, Clone, Default, PartialEq)]
pub struct LabelIndex {
    /// Sorted by name; values sorted, distinct, non-empty.
    names: Vec<(String, Vec<String>)>,
}

impl LabelIndex {
    /// Builds the index over the given label sets.
    pub(super) fn build<'a>(labels: impl Iterator<Item = &'a Labels>) -> Self {
        let mut by_name: HashMap<&str, std::collections::HashSet<&str>> = HashMap::new();
        for l in labels {
            for Label { name, value } in l.iter() {
                by_name.entry(name.as_str()).or_default().insert(value.as_str());
            }
        }
        let mut names: Vec<(String, Vec<String>)> = by_name
            .into_iter()
            .map(|(n, vs)| {
                let mut vs: Vec<String> = vs.into_iter().map(str::to_string).collect();
                vs.sort_unstable();
                (n.to_string(), vs)
            })
            .collect();
        names.sort_unstable_by(|a, b| a.0.cmp(&b.0));
        LabelIndex { names }
    }

    /// Label names, sorted.
    pub fn names(&self) -> impl Iterator<Item = &str> {
        self.names.iter().map(|(n, _)| n.as_str())
    }

    /// Sorted distinct values of label `name` (empty when no series has it).
    pub fn values(&self, name: &str) -> &[String] {
        match self.names.binary_search_by(|(n, _)| n.as_str().cmp(name)) {
            Ok(i) => &self.names[i].1,
            Err(_) => &[],
        }
    }

    /// Approximate heap footprint in bytes (string bytes plus vector and `String` headers).
    pub fn heap_bytes(&self) -> usize {
        let s = std::mem::size_of::<String>();
        self.names
            .iter()
            .map(|(n, vs)| {
                n.capacity()
                    + std::mem::size_of::<(String, Vec<String>)>()
                    + vs.capacity() * s
                    + vs.iter().map(String::capacity).sum::<usize>()
            })
            .sum()
    }
}
