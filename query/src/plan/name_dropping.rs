//! Dropping the metric name: which labels go with it, delayed `__name__` removal (the marker a
//! name-dropping operator adds instead), and the same on a batch's label dictionary.

use arrow::array::ArrayRef;
use engine::Labels;

use super::{BatchView, EvalCtx, dictionary_of, encode_pair, encoded_pairs};
use crate::error::Result;

/// True for the labels PromQL drops with the metric name: `__name__` and the type-and-unit
/// labels `__type__` / `__unit__` (present only when ingest adds them), plus the
/// [`DROP_NAME_MARK`] of delayed name removal, which goes with them.
pub(crate) fn is_name_label(n: &str) -> bool {
    matches!(n, "__name__" | "__type__" | "__unit__" | DROP_NAME_MARK)
}

/// Removes the metric name (and its companions, see [`is_name_label`]).
pub(crate) fn drop_name(l: &mut Labels) {
    if l.iter().any(|x| is_name_label(&x.name)) {
        for n in ["__name__", "__type__", "__unit__", DROP_NAME_MARK] {
            l.remove(n);
        }
    }
}

/// Delayed `__name__` removal (Prometheus's `promql-delayed-name-removal`): instead of dropping
/// the metric name, a name-dropping operator keeps it and adds this marker pair to the label
/// set; the name is removed only where the query's result is built (and at a subquery, whose
/// series become raw samples). The marker's name is a lone NUL character: it sorts first in
/// every encoded label set (the empty name, which would sort before it, never occurs in one),
/// and no series or query names it in practice (the empty name could not be used: PromQL reads
/// it as an absent source label in `label_replace`). Matching signatures and `without`
/// groupings skip it like the name itself.
pub(crate) const DROP_NAME_MARK: &str = "\u{0}";

/// The value of the [`DROP_NAME_MARK`] pair (any non-empty value; empty values are dropped).
const DROP_NAME_MARK_VALUE: &str = "1";

/// The [`DROP_NAME_MARK`] pair as [`encode_labels`] writes it (always first, see there).
const DROP_NAME_MARK_ENCODED: [u8; 10] = [1, 0, 0, 0, 0, 1, 0, 0, 0, b'1'];

/// True when a label set carries the [`DROP_NAME_MARK`].
pub(crate) fn has_drop_mark(l: &Labels) -> bool {
    l.get(DROP_NAME_MARK).is_some()
}

/// [`has_drop_mark`] on an encoded label set.
pub(crate) fn has_drop_mark_bytes(encoded: &[u8]) -> bool {
    encoded.starts_with(&DROP_NAME_MARK_ENCODED)
}

/// Marks a label set for delayed name removal; a set without a metric name (or its
/// companions) has nothing to remove and stays unmarked.
pub(crate) fn mark_drop_name(l: &mut Labels) {
    if l.iter().any(|x| is_name_label(&x.name)) {
        l.set(DROP_NAME_MARK, DROP_NAME_MARK_VALUE);
    }
}

/// [`mark_drop_name`] on the encoded label set `out[start..]` (the last one written to `out`):
/// the marker goes first, when the set has a name label and no marker yet.
pub(crate) fn mark_drop_name_encoded(out: &mut Vec<u8>, start: usize) {
    let set = &out[start..];
    if !has_drop_mark_bytes(set) && encoded_pairs(set).any(|(n, _)| is_name_label_bytes(n)) {
        out.splice(start..start, DROP_NAME_MARK_ENCODED);
    }
}

/// Removes the metric name now, or (with delayed name removal) marks it for removal.
pub(crate) fn drop_name_or_mark(l: &mut Labels, ctx: &EvalCtx) {
    if ctx.delayed_name_removal { mark_drop_name(l) } else { drop_name(l) }
}

/// Applies a delayed name removal: a marked label set loses its metric name and the marker.
pub(crate) fn remove_marked_name(l: &mut Labels) {
    if has_drop_mark(l) {
        drop_name(l);
    }
}

/// A label set without the [`DROP_NAME_MARK`] (what Prometheus prints and hashes: the flag is
/// not a label there).
pub(crate) fn without_drop_mark(l: &Labels) -> std::borrow::Cow<'_, Labels> {
    if has_drop_mark(l) {
        let mut c = l.clone();
        c.remove(DROP_NAME_MARK);
        std::borrow::Cow::Owned(c)
    } else {
        std::borrow::Cow::Borrowed(l)
    }
}

/// The dictionary of `view` with the metric name (see [`is_name_label`]) removed from every
/// label set.
pub(crate) fn dictionary_without_name(view: &BatchView<'_>) -> Result<ArrayRef> {
    let n = view.dictionary_len();
    let any = (0..n).any(|k| encoded_pairs(view.dictionary_value(k)).any(|(name, _)| is_name_label_bytes(name)));
    if !any {
        return Ok(view.dictionary().clone());
    }
    let mut sets: Vec<Vec<u8>> = Vec::with_capacity(n);
    for k in 0..n {
        let mut out = Vec::new();
        for (name, value) in encoded_pairs(view.dictionary_value(k)) {
            if !is_name_label_bytes(name) {
                encode_pair(name, value, &mut out);
            }
        }
        sets.push(out);
    }
    dictionary_of(sets.iter().map(Vec::as_slice))
}

/// The dictionary of `view` with the metric name removed from every label set or, with delayed
/// name removal, every label set that has one marked (see [`DROP_NAME_MARK`]).
pub(crate) fn dictionary_dropping_name(view: &BatchView<'_>, ctx: &EvalCtx) -> Result<ArrayRef> {
    if !ctx.delayed_name_removal {
        return dictionary_without_name(view);
    }
    let n = view.dictionary_len();
    let needs = |k: usize| {
        let v = view.dictionary_value(k);
        !has_drop_mark_bytes(v) && encoded_pairs(v).any(|(name, _)| is_name_label_bytes(name))
    };
    if !(0..n).any(needs) {
        return Ok(view.dictionary().clone());
    }
    let mut sets: Vec<Vec<u8>> = Vec::with_capacity(n);
    for k in 0..n {
        let v = view.dictionary_value(k);
        let mut out = Vec::with_capacity(v.len() + DROP_NAME_MARK_ENCODED.len());
        if needs(k) {
            out.extend_from_slice(&DROP_NAME_MARK_ENCODED);
        }
        out.extend_from_slice(v);
        sets.push(out);
    }
    dictionary_of(sets.iter().map(Vec::as_slice))
}

/// [`is_name_label`] on an encoded name.
pub(crate) fn is_name_label_bytes(n: &[u8]) -> bool {
    matches!(n, b"__name__" | b"__type__" | b"__unit__" | b"\0")
}

#[cfg(test)]
#[allow(clippy::unwrap_used, clippy::expect_used)]
mod tests {
    use super::*;
    use crate::plan::{SeriesData, decode_labels, encode_labels, series_to_batch};
    use arrow::array::{Array, BinaryArray};

    #[test]
    fn delayed_name_removal_marks_then_removes() {
        let named =
            SeriesData { labels: Labels::from_pairs([("__name__", "x"), ("a", "b")]), ts: vec![1], vs: vec![1.0] };
        let unnamed = SeriesData { labels: Labels::from_pairs([("a", "c")]), ts: vec![1], vs: vec![2.0] };
        let rb = series_to_batch(&[named.clone(), unnamed.clone()]).unwrap();
        let view = BatchView::new(&rb).unwrap();
        let mut ctx = EvalCtx::new(10);
        // Off: the name goes at once.
        let d = dictionary_dropping_name(&view, &ctx).unwrap();
        let d = d.as_any().downcast_ref::<BinaryArray>().unwrap();
        assert_eq!(decode_labels(d.value(0)).unwrap(), Labels::from_pairs([("a", "b")]));
        // On: the named set is marked (the marker encodes first, as `Labels` sorts it); a set
        // without a name is left alone.
        ctx.delayed_name_removal = true;
        let d = dictionary_dropping_name(&view, &ctx).unwrap();
        let d = d.as_any().downcast_ref::<BinaryArray>().unwrap();
        let mut marked = named.labels.clone();
        mark_drop_name(&mut marked);
        let mut enc = Vec::new();
        encode_labels(&marked, &mut enc);
        assert_eq!(d.value(0), enc.as_slice());
        assert!(has_drop_mark_bytes(d.value(0)) && has_drop_mark(&marked));
        assert_eq!(d.value(1), view.dictionary_value(1));
        let mut plain = unnamed.labels.clone();
        mark_drop_name(&mut plain);
        assert!(!has_drop_mark(&plain));
        assert_eq!(without_drop_mark(&marked).as_ref(), &named.labels);
        remove_marked_name(&mut marked);
        assert_eq!(marked, Labels::from_pairs([("a", "b")]));
        // An already marked input keeps its one marker.
        let mut again = named.clone();
        mark_drop_name(&mut again.labels);
        let rb = series_to_batch(&[again]).unwrap();
        let view = BatchView::new(&rb).unwrap();
        let d = dictionary_dropping_name(&view, &ctx).unwrap();
        assert_eq!(d.as_any().downcast_ref::<BinaryArray>().unwrap().value(0), enc.as_slice());
    }
}
