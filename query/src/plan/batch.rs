//! The batch layout every PromQL plan node reads and writes, and the in-memory series kernels
//! work on.
//!
//! All nodes exchange Arrow record batches of one fixed schema ([`prom_schema`]):
//!
//! ```text
//!   labels: Dictionary<UInt32, Binary>   timestamp: Int64 (ms)   value: Float64
//!   ─────────────────────────────────    ────────────────────    ──────────────
//!   key 0  ──► {__name__="x", job="a"}   1000                    1.0      ┐ series 0, sorted by time
//!   key 0                                2000                    2.0      ┘
//!   key 1  ──► {__name__="x", job="b"}   1000                    5.0      ] series 1
//! ```
//!
//! Rows are grouped per series and every series is whole inside one batch, sorted by timestamp.
//! The dictionary holds each series' label set exactly once per batch (the per-batch label
//! table), so a series is a run of equal dictionary keys and labels are only decoded by the
//! operators that need them. There is no global sort of samples. The same layout carries raw
//! samples (between a scan and the selector that reads it) and step-aligned values (after a
//! selector: timestamps are the evaluation steps of the node's [`Grid`]). A PromQL scalar is a
//! single series with an empty label set and a value at every step.
//!
//! One exception: a scan that reads start timestamps (`EngineOptions::use_start_timestamps`,
//! under `rate`, `increase`, `irate` and `resets`) adds a fourth, nullable `start_timestamp`
//! column ([`prom_schema_with_start_timestamps`]) that only the range function above it reads.

use std::sync::{Arc, OnceLock};

use arrow::array::{Array, ArrayRef, BinaryArray, DictionaryArray, Float64Array, Int64Array, RecordBatch, UInt32Array};
use arrow::datatypes::{DataType, Field, Schema, SchemaRef, UInt32Type};
use datafusion::common::{DFSchema, DFSchemaRef};
use engine::Labels;

use super::{Grid, LabelSetIndex, decode_labels, encode_labels};
use crate::error::{Error, Result};

/// Bit pattern of Prometheus's stale marker NaN.
pub(crate) use engine::chunkenc::STALE_NAN_BITS;

/// True when `v` is a stale marker (not any NaN: exactly Prometheus's bit pattern).
pub(crate) fn is_stale(v: f64) -> bool {
    v.to_bits() == STALE_NAN_BITS
}

/// The schema all Strata PromQL nodes produce (see the module docs).
pub(crate) fn prom_schema() -> SchemaRef {
    static S: OnceLock<SchemaRef> = OnceLock::new();
    S.get_or_init(|| {
        Arc::new(Schema::new(vec![
            Field::new("labels", DataType::Dictionary(Box::new(DataType::UInt32), Box::new(DataType::Binary)), false),
            Field::new("timestamp", DataType::Int64, false),
            Field::new("value", DataType::Float64, false),
        ]))
    })
    .clone()
}

/// [`prom_schema`] plus `start_timestamp` (Int64 ms, nullable; null = unknown): what a scan
/// that reads start timestamps emits (see [`series_scan`]). Only the range function directly above
/// such a scan reads the extra column; every other node emits [`prom_schema`].
pub(crate) fn prom_schema_with_start_timestamps() -> SchemaRef {
    static S: OnceLock<SchemaRef> = OnceLock::new();
    S.get_or_init(|| {
        let mut fields: Vec<Field> = prom_schema().fields().iter().map(|f| f.as_ref().clone()).collect();
        fields.push(Field::new("start_timestamp", DataType::Int64, true));
        Arc::new(Schema::new(fields))
    })
    .clone()
}

/// [`prom_schema`] as a DataFusion logical schema.
pub(crate) fn prom_df_schema() -> DFSchemaRef {
    static S: OnceLock<DFSchemaRef> = OnceLock::new();
    S.get_or_init(|| match DFSchema::try_from(prom_schema().as_ref().clone()) {
        Ok(s) => Arc::new(s),
        // The schema above has unique field names, so this cannot fail; keep an empty schema
        // rather than panic.
        Err(_) => Arc::new(DFSchema::empty()),
    })
    .clone()
}

/// One series in memory: labels plus points sorted by time.
#[derive(Debug, Clone, PartialEq, Default)]
pub(crate) struct SeriesData {
    /// Label set.
    pub(crate) labels: Labels,
    /// Timestamps (ms), ascending.
    pub(crate) ts: Vec<i64>,
    /// Values, one per timestamp.
    pub(crate) vs: Vec<f64>,
}

impl SeriesData {
    /// A series with no points yet.
    pub(crate) fn new(labels: Labels) -> Self {
        SeriesData { labels, ts: Vec::new(), vs: Vec::new() }
    }
    /// Appends a point.
    pub(crate) fn push(&mut self, t: i64, v: f64) {
        self.ts.push(t);
        self.vs.push(v);
    }
}

/// Builds one record batch from series (series without points are left out).
pub(crate) fn series_to_batch(series: &[SeriesData]) -> Result<RecordBatch> {
    let mut dict = Vec::new();
    let mut dict_offsets: Vec<i32> = vec![0];
    let (mut keys, mut ts, mut vs) = (Vec::new(), Vec::new(), Vec::new());
    for (k, s) in series.iter().filter(|s| !s.ts.is_empty()).enumerate() {
        encode_labels(&s.labels, &mut dict);
        dict_offsets.push(dict.len() as i32);
        keys.extend(std::iter::repeat_n(k as u32, s.ts.len()));
        ts.extend_from_slice(&s.ts);
        vs.extend_from_slice(&s.vs);
    }
    let values = BinaryArray::try_new(arrow::buffer::OffsetBuffer::new(dict_offsets.into()), dict.into(), None)
        .map_err(|e| Error::Internal(format!("building label dictionary: {e}")))?;
    let dict_arr = DictionaryArray::<UInt32Type>::try_new(UInt32Array::from(keys), Arc::new(values))
        .map_err(|e| Error::Internal(format!("building label dictionary: {e}")))?;
    let cols: Vec<ArrayRef> =
        vec![Arc::new(dict_arr), Arc::new(Int64Array::from(ts)), Arc::new(Float64Array::from(vs))];
    RecordBatch::try_new(prom_schema(), cols).map_err(|e| Error::Internal(format!("building batch: {e}")))
}

/// Splits a record batch of [`prom_schema`] back into series (labels decoded, samples copied).
pub(crate) fn batch_to_series(b: &RecordBatch) -> Result<Vec<SeriesData>> {
    BatchView::new(b)?
        .series()
        .map(|s| Ok(SeriesData { labels: decode_labels(s.labels)?, ts: s.ts.to_vec(), vs: s.vs.to_vec() }))
        .collect()
}

/// A borrowed view of one record batch of [`prom_schema`]: the label dictionary and the sample
/// columns, read series by series without decoding labels or copying samples.
pub(crate) struct BatchView<'a> {
    dict: &'a BinaryArray,
    dict_ref: &'a ArrayRef,
    keys: &'a [u32],
    ts: &'a [i64],
    vs: &'a [f64],
}

/// One series of a [`BatchView`]: its dictionary key, encoded labels and samples.
#[derive(Debug, Clone, Copy)]
pub(crate) struct SeriesRef<'a> {
    /// Dictionary key of the series in its batch.
    pub(crate) key: u32,
    /// The label set, as [`encode_labels`] wrote it.
    pub(crate) labels: &'a [u8],
    /// Timestamps (ms), ascending.
    pub(crate) ts: &'a [i64],
    /// Values, one per timestamp.
    pub(crate) vs: &'a [f64],
    /// Row of the series' first sample in the batch.
    pub(crate) row: usize,
}

impl<'a> BatchView<'a> {
    /// Views `b`; fails when the batch does not have the plan's layout.
    pub(crate) fn new(b: &'a RecordBatch) -> Result<Self> {
        let bad = |what: &str| Error::Internal(format!("PromQL batch has a bad {what} column"));
        let dict = b.column(0).as_any().downcast_ref::<DictionaryArray<UInt32Type>>().ok_or_else(|| bad("labels"))?;
        let dict_ref = dict.values();
        let values = dict_ref.as_any().downcast_ref::<BinaryArray>().ok_or_else(|| bad("labels"))?;
        let ts = b.column(1).as_any().downcast_ref::<Int64Array>().ok_or_else(|| bad("timestamp"))?.values();
        let vs = b.column(2).as_any().downcast_ref::<Float64Array>().ok_or_else(|| bad("value"))?.values();
        let keys = dict.keys().values();
        if keys.iter().any(|&k| k as usize >= values.len()) {
            return Err(bad("labels"));
        }
        Ok(BatchView { dict: values, dict_ref, keys, ts, vs })
    }

    /// The label dictionary (shared, to build an output batch with the same label sets).
    pub(crate) fn dictionary(&self) -> &'a ArrayRef {
        self.dict_ref
    }

    /// Number of dictionary entries.
    pub(crate) fn dictionary_len(&self) -> usize {
        self.dict.len()
    }

    /// The encoded labels of dictionary entry `k`.
    pub(crate) fn dictionary_value(&self, k: usize) -> &'a [u8] {
        self.dict.value(k)
    }

    /// The series of the batch, in row order.
    pub(crate) fn series(&self) -> impl Iterator<Item = SeriesRef<'a>> + use<'a> {
        let (keys, ts, vs, dict) = (self.keys, self.ts, self.vs, self.dict);
        let mut i = 0;
        std::iter::from_fn(move || {
            if i >= keys.len() {
                return None;
            }
            let k = keys[i];
            let mut j = i + 1;
            while j < keys.len() && keys[j] == k {
                j += 1;
            }
            let s = SeriesRef { key: k, labels: dict.value(k as usize), ts: &ts[i..j], vs: &vs[i..j], row: i };
            i = j;
            Some(s)
        })
    }
}

/// Builds an output batch row by row against a label dictionary chosen at the end.
#[derive(Debug, Default)]
pub(crate) struct BatchBuilder {
    keys: Vec<u32>,
    ts: Vec<i64>,
    vs: Vec<f64>,
}

impl BatchBuilder {
    /// A builder with room for `n` rows.
    pub(crate) fn with_capacity(n: usize) -> Self {
        BatchBuilder { keys: Vec::with_capacity(n), ts: Vec::with_capacity(n), vs: Vec::with_capacity(n) }
    }
    /// Appends a point of the series with dictionary key `key`.
    pub(crate) fn push(&mut self, key: u32, t: i64, v: f64) {
        self.keys.push(key);
        self.ts.push(t);
        self.vs.push(v);
    }
    /// Rows so far.
    pub(crate) fn len(&self) -> usize {
        self.ts.len()
    }
    /// The batch, with `dict` (a `Binary` array of encoded label sets) as the label dictionary.
    pub(crate) fn finish(self, dict: ArrayRef) -> Result<RecordBatch> {
        let d = DictionaryArray::<UInt32Type>::try_new(UInt32Array::from(self.keys), dict)
            .map_err(|e| Error::Internal(format!("building label dictionary: {e}")))?;
        let cols: Vec<ArrayRef> =
            vec![Arc::new(d), Arc::new(Int64Array::from(self.ts)), Arc::new(Float64Array::from(self.vs))];
        RecordBatch::try_new(prom_schema(), cols).map_err(|e| Error::Internal(format!("building batch: {e}")))
    }
}

/// Merges series that share a label set (as Prometheus does when it builds a result matrix by
/// label hash), through [`SameLabelsMerge`]; series without points are left out.
pub(crate) fn merge_same_labels(series: Vec<SeriesData>) -> Result<Vec<SeriesData>> {
    let mut merge = SameLabelsMerge::default();
    let mut key = Vec::new();
    for s in series.iter().filter(|s| !s.ts.is_empty()) {
        key.clear();
        encode_labels(&s.labels, &mut key);
        merge.insert(&key, s.ts.iter().copied().zip(s.vs.iter().copied()));
    }
    merge
        .finish()?
        .into_iter()
        .map(|(key, points)| {
            let (ts, vs) = points.into_iter().unzip();
            Ok(SeriesData { labels: decode_labels(&key)?, ts, vs })
        })
        .collect()
}

/// An encoded label set with its (timestamp ms, value) points.
pub(crate) type KeyedPoints = (Vec<u8>, Vec<(i64, f64)>);

/// Points of one label set gathered from several places (series of several batches, or series a
/// rewrite gave the same labels), keyed by the encoded label set, in first-seen order. The one
/// place that decides PromQL's "vector cannot contain metrics with the same labelset": two points
/// of one label set at the same time.
#[derive(Debug, Default)]
pub(crate) struct SameLabelsMerge {
    at: LabelSetIndex,
    out: Vec<KeyedPoints>,
    merged: bool,
}

impl SameLabelsMerge {
    /// Appends `points` to the label set `key` (encoded), or starts it.
    pub(crate) fn insert(&mut self, key: &[u8], points: impl Iterator<Item = (i64, f64)>) {
        let out = &self.out;
        match self.at.find_or_insert(key, out.len(), |i| out[i].0.as_slice()) {
            Some(n) => {
                self.out[n].1.extend(points);
                self.merged = true;
            }
            None => self.out.push((key.to_vec(), points.collect())),
        }
    }

    /// The label sets gathered so far.
    pub(crate) fn keys(&self) -> impl Iterator<Item = &[u8]> {
        self.out.iter().map(|(k, _)| k.as_slice())
    }

    /// Takes the entries out (to insert them again under rewritten keys); what was merged stays
    /// merged.
    pub(crate) fn take(&mut self) -> Vec<KeyedPoints> {
        self.at = LabelSetIndex::default();
        std::mem::take(&mut self.out)
    }

    /// The label sets with their points sorted by time.
    pub(crate) fn finish(self) -> Result<Vec<KeyedPoints>> {
        let mut out = self.out;
        if self.merged {
            for (_, pts) in &mut out {
                if pts.windows(2).any(|w| w[0].0 >= w[1].0) {
                    pts.sort_by_key(|p| p.0);
                    if pts.windows(2).any(|w| w[0].0 == w[1].0) {
                        return Err(Error::Execution("vector cannot contain metrics with the same labelset".into()));
                    }
                }
            }
        }
        Ok(out)
    }
}

/// The value of a scalar input (one series, empty labels) at each step of `grid`; NaN where it
/// has no point.
pub(crate) fn scalar_per_step(series: &[SeriesData], grid: &Grid) -> Vec<f64> {
    let mut out = vec![f64::NAN; grid.len()];
    if let Some(s) = series.first() {
        for (&t, &v) in s.ts.iter().zip(&s.vs) {
            if let Some(i) = grid.index_of(t) {
                out[i] = v;
            }
        }
    }
    out
}

#[cfg(test)]
#[allow(clippy::unwrap_used, clippy::expect_used)]
mod tests {
    use super::*;

    #[test]
    fn batch_round_trip_keeps_series_apart() {
        let a = SeriesData {
            labels: Labels::from_pairs([("__name__", "x"), ("job", "a")]),
            ts: vec![1, 2],
            vs: vec![1.0, 2.0],
        };
        let b = SeriesData { labels: Labels::default(), ts: vec![5], vs: vec![f64::from_bits(STALE_NAN_BITS)] };
        let empty = SeriesData::new(Labels::from_pairs([("a", "b")]));
        let rb = series_to_batch(&[a.clone(), empty, b.clone()]).unwrap();
        assert_eq!(rb.num_rows(), 3);
        let back = batch_to_series(&rb).unwrap();
        assert_eq!(back.len(), 2);
        assert_eq!(back[0], a);
        assert_eq!(back[1].labels, b.labels);
        assert!(is_stale(back[1].vs[0]));
    }

    #[test]
    fn merging_same_labels() {
        let l = Labels::from_pairs([("a", "1")]);
        let s1 = SeriesData { labels: l.clone(), ts: vec![1], vs: vec![1.0] };
        let s2 = SeriesData { labels: l.clone(), ts: vec![2], vs: vec![2.0] };
        let m = merge_same_labels(vec![s2.clone(), s1.clone()]).unwrap();
        assert_eq!(m.len(), 1);
        assert_eq!(m[0].ts, vec![1, 2]);
        let e = merge_same_labels(vec![s1.clone(), s1]).unwrap_err();
        assert_eq!(e.to_string(), "vector cannot contain metrics with the same labelset");
    }
}
