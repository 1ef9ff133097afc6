//! Strata's PromQL plan nodes and the machinery they share.
//!
//! Every PromQL operator is a DataFusion extension node: a logical node ([`PromLogical`], an
//! `UserDefinedLogicalNodeCore`) holding the operator's parameters (a [`NodeSpec`]), and an
//! execution plan ([`PromExec`]) that runs the operator's kernel. [`PromExtensionPlanner`] turns
//! the one into the other inside a DataFusion `SessionContext`. The leaf that reads a
//! `SeriesSource` ([`series_scan`]) has its own execution plan because it is asynchronous.
//!
//! # Batch layout
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
//!
//! # How a node consumes its input
//!
//! [`PromExec`] runs a [`NodeSpec`] in one of three ways, chosen by the spec:
//!
//! - streaming ([`NodeSpec::streaming`]): each batch of the first input is mapped to one output
//!   batch by [`NodeSpec::map_batch`]; hot nodes read the batch through a [`BatchView`] and build
//!   the output with a [`BatchBuilder`] against the input's (or a rewritten) label dictionary, so
//!   labels are never decoded;
//! - partial aggregation ([`NodeSpec::accumulator`]): each batch is folded into an
//!   [`Accumulator`] that keeps only what the output needs; the output is emitted at the end;
//! - collecting (the default): the whole first input is decoded into [`SeriesData`] and handed to
//!   [`NodeSpec::eval`] once.
//!
//! The other inputs (scalar parameters) are always collected first.

use std::cmp::Ordering;
use std::fmt;
use std::hash::{Hash, Hasher};
use std::sync::{Arc, OnceLock};

use arrow::array::{Array, ArrayRef, BinaryArray, DictionaryArray, Float64Array, Int64Array, RecordBatch, UInt32Array};
use arrow::datatypes::{DataType, Field, Schema, SchemaRef, UInt32Type};
use async_trait::async_trait;
use datafusion::common::tree_node::TreeNodeRecursion;
use datafusion::common::{DFSchema, DFSchemaRef};
use datafusion::error::DataFusionError;
use datafusion::execution::context::QueryPlanner;
use datafusion::execution::{SendableRecordBatchStream, TaskContext};
use datafusion::logical_expr::{Expr, LogicalPlan, UserDefinedLogicalNode, UserDefinedLogicalNodeCore};
use datafusion::physical_expr::{EquivalenceProperties, PhysicalExpr};
use datafusion::physical_plan::execution_plan::{Boundedness, EmissionType};
use datafusion::physical_plan::metrics::{BaselineMetrics, ExecutionPlanMetricsSet, MetricsSet};
use datafusion::physical_plan::stream::RecordBatchStreamAdapter;
use datafusion::physical_plan::{
    DisplayAs, DisplayFormatType, Distribution, ExecutionPlan, Partitioning, PlanProperties,
};
use datafusion::physical_planner::{DefaultPhysicalPlanner, ExtensionPlanner, PhysicalPlanner};
use engine::{Labels, SeriesSource};
use futures::{StreamExt, TryStreamExt};

use crate::error::{Error, Result};

pub(crate) mod aggregate;
pub(crate) mod binary;
pub(crate) mod functions;
pub(crate) mod histogram;
pub(crate) mod info;
pub(crate) mod instant_fn;
pub(crate) mod instant_select;
pub(crate) mod label_fn;
pub(crate) mod literal;
pub(crate) mod range_func;
pub(crate) mod series_scan;
pub(crate) mod step_fn;
pub(crate) mod subquery;

/// Bit pattern of Prometheus's stale marker NaN.
pub(crate) const STALE_NAN_BITS: u64 = 0x7ff0_0000_0000_0002;

/// True when `v` is a stale marker (not any NaN: exactly Prometheus's bit pattern).
pub(crate) fn is_stale(v: f64) -> bool {
    v.to_bits() == STALE_NAN_BITS
}

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

/// The evaluation steps of a node: `start, start + step, ..., end` (ms, inclusive).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub(crate) struct Grid {
    /// First step (ms).
    pub(crate) start: i64,
    /// Last step (ms), `start + k * step` for some k >= 0.
    pub(crate) end: i64,
    /// Step (ms, > 0).
    pub(crate) step: i64,
}

impl Grid {
    /// A grid; `end` is rounded down onto the grid and a non-positive step becomes 1.
    pub(crate) fn new(start: i64, end: i64, step: i64) -> Self {
        let step = step.max(1);
        let end = if end < start { start } else { start + (end - start) / step * step };
        Grid { start, end, step }
    }

    /// Number of steps.
    pub(crate) fn len(&self) -> usize {
        ((self.end - self.start) / self.step + 1) as usize
    }

    /// The step timestamps.
    pub(crate) fn times(&self) -> impl Iterator<Item = i64> + use<> {
        let g = *self;
        (0..g.len() as i64).map(move |i| g.start + i * g.step)
    }

    /// Index of step timestamp `t`, if `t` is on the grid.
    pub(crate) fn index_of(&self, t: i64) -> Option<usize> {
        if t < self.start || t > self.end || (t - self.start) % self.step != 0 {
            return None;
        }
        Some(((t - self.start) / self.step) as usize)
    }
}

impl fmt::Display for Grid {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        if self.start == self.end {
            write!(f, "t={}", self.start)
        } else {
            write!(f, "t={}..{} step={}", self.start, self.end, self.step)
        }
    }
}

/// Where a selector reads relative to each step: `@` pins the time, `offset` shifts it back.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord, Default)]
pub(crate) struct TimeShift {
    /// `offset` in ms (negative for a negative offset).
    pub(crate) offset: i64,
    /// `@` timestamp in ms (start()/end() already resolved).
    pub(crate) at: Option<i64>,
}

impl TimeShift {
    /// The data time a step `t` reads at.
    pub(crate) fn eval_time(&self, t: i64) -> i64 {
        self.at.unwrap_or(t) - self.offset
    }

    /// Appends ` offset=..` / ` @=..` to a display.
    pub(crate) fn fmt_suffix(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        if self.offset != 0 {
            write!(f, ", offset={}", fmt_duration(self.offset))?;
        }
        if let Some(at) = self.at {
            write!(f, ", @={at}")?;
        }
        Ok(())
    }
}

/// Formats a millisecond duration compactly (`5m`, `90s`, `1500ms`).
pub(crate) fn fmt_duration(ms: i64) -> String {
    let (sign, ms) = if ms < 0 { ("-", -ms) } else { ("", ms) };
    if ms == 0 {
        "0s".into()
    } else if ms % 3_600_000 == 0 {
        format!("{sign}{}h", ms / 3_600_000)
    } else if ms % 60_000 == 0 {
        format!("{sign}{}m", ms / 60_000)
    } else if ms % 1000 == 0 {
        format!("{sign}{}s", ms / 1000)
    } else {
        format!("{sign}{ms}ms")
    }
}

/// An f64 that can sit in a hashed, ordered plan node (compared by bits).
#[derive(Debug, Clone, Copy)]
pub(crate) struct F64(pub(crate) f64);

impl PartialEq for F64 {
    fn eq(&self, o: &Self) -> bool {
        self.0.to_bits() == o.0.to_bits()
    }
}
impl Eq for F64 {}
impl Hash for F64 {
    fn hash<H: Hasher>(&self, h: &mut H) {
        self.0.to_bits().hash(h)
    }
}
impl PartialOrd for F64 {
    fn partial_cmp(&self, o: &Self) -> Option<Ordering> {
        Some(self.cmp(o))
    }
}
impl Ord for F64 {
    fn cmp(&self, o: &Self) -> Ordering {
        self.0.total_cmp(&o.0)
    }
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

/// Splits a record batch of [`prom_schema`] back into series.
pub(crate) fn batch_to_series(b: &RecordBatch) -> Result<Vec<SeriesData>> {
    let bad = |what: &str| Error::Internal(format!("PromQL batch has a bad {what} column"));
    let dict = b.column(0).as_any().downcast_ref::<DictionaryArray<UInt32Type>>().ok_or_else(|| bad("labels"))?;
    let values = dict.values().as_any().downcast_ref::<BinaryArray>().ok_or_else(|| bad("labels"))?;
    let ts = b.column(1).as_any().downcast_ref::<Int64Array>().ok_or_else(|| bad("timestamp"))?.values();
    let vs = b.column(2).as_any().downcast_ref::<Float64Array>().ok_or_else(|| bad("value"))?.values();
    let keys = dict.keys().values();
    let mut out: Vec<SeriesData> = Vec::new();
    let mut i = 0;
    while i < keys.len() {
        let k = keys[i];
        let mut j = i;
        while j < keys.len() && keys[j] == k {
            j += 1;
        }
        let idx = k as usize;
        if idx >= values.len() {
            return Err(bad("labels"));
        }
        out.push(SeriesData {
            labels: decode_labels(values.value(idx))?,
            ts: ts[i..j].to_vec(),
            vs: vs[i..j].to_vec(),
        });
        i = j;
    }
    Ok(out)
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

/// Merges series that share a label set (as Prometheus does when it builds a result matrix by
/// label hash); two of them with a point at the same step is the PromQL error
/// "vector cannot contain metrics with the same labelset".
pub(crate) fn merge_same_labels(mut series: Vec<SeriesData>) -> Result<Vec<SeriesData>> {
    series.retain(|s| !s.ts.is_empty());
    let mut idx: std::collections::HashMap<Labels, usize> = std::collections::HashMap::new();
    let mut out: Vec<SeriesData> = Vec::with_capacity(series.len());
    for s in series {
        match idx.get(&s.labels) {
            Some(&i) => {
                let o = &mut out[i];
                let mut pts: Vec<(i64, f64)> = o.ts.iter().copied().zip(o.vs.iter().copied()).collect();
                pts.extend(s.ts.iter().copied().zip(s.vs.iter().copied()));
                pts.sort_by_key(|p| p.0);
                if pts.windows(2).any(|w| w[0].0 == w[1].0) {
                    return Err(Error::Execution("vector cannot contain metrics with the same labelset".into()));
                }
                o.ts = pts.iter().map(|p| p.0).collect();
                o.vs = pts.iter().map(|p| p.1).collect();
            }
            None => {
                idx.insert(s.labels.clone(), out.len());
                out.push(s);
            }
        }
    }
    Ok(out)
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

/// Per-node context handed to a kernel at execution time.
#[derive(Debug, Clone)]
pub(crate) struct EvalCtx {
    /// The query's sample limit.
    pub(crate) max_samples: usize,
    /// Delayed `__name__` removal (see [`DROP_NAME_MARK`]).
    pub(crate) delayed_name_removal: bool,
    /// Where the running query collects its warnings and infos.
    pub(crate) ann: Option<Arc<Annotations>>,
}

/// Warnings and infos of one query (Prometheus's annotations), shared by its operators through
/// the session config of the query's task context.
#[derive(Debug, Default)]
pub(crate) struct Annotations {
    warnings: std::sync::Mutex<Vec<String>>,
    infos: std::sync::Mutex<Vec<String>>,
}

impl Annotations {
    fn add(list: &std::sync::Mutex<Vec<String>>, msg: String) {
        let mut g = match list.lock() {
            Ok(g) => g,
            Err(p) => p.into_inner(),
        };
        if !g.contains(&msg) {
            g.push(msg);
        }
    }
    /// Adds a warning (once).
    pub(crate) fn warn(&self, msg: String) {
        Self::add(&self.warnings, msg)
    }
    /// Adds an info (once).
    pub(crate) fn info(&self, msg: String) {
        Self::add(&self.infos, msg)
    }
    /// The collected (warnings, infos).
    pub(crate) fn take(&self) -> (Vec<String>, Vec<String>) {
        let take = |l: &std::sync::Mutex<Vec<String>>| match l.lock() {
            Ok(mut g) => std::mem::take(&mut *g),
            Err(p) => std::mem::take(&mut *p.into_inner()),
        };
        (take(&self.warnings), take(&self.infos))
    }
}

impl EvalCtx {
    /// A context with a sample limit and no annotation sink.
    pub(crate) fn new(max_samples: usize) -> Self {
        EvalCtx { max_samples, delayed_name_removal: false, ann: None }
    }

    /// Records a PromQL warning for the running query.
    pub(crate) fn warn(&self, msg: impl Into<String>) {
        if let Some(a) = &self.ann {
            a.warn(msg.into());
        }
    }

    /// Records a PromQL info for the running query.
    pub(crate) fn info(&self, msg: impl Into<String>) {
        if let Some(a) = &self.ann {
            a.info(msg.into());
        }
    }

    /// Warns about a quantile parameter outside [0, 1].
    pub(crate) fn check_quantile(&self, q: f64) {
        if !(0.0..=1.0).contains(&q) {
            self.warn(format!(
                "PromQL warning: quantile value should be between 0 and 1, got {}",
                aggregate::go_float(q)
            ));
        }
    }

    /// Fails with Prometheus's error when `n` samples exceed the limit.
    pub(crate) fn check_samples(&self, n: usize) -> Result<()> {
        if n > self.max_samples {
            return Err(Error::TooManySamples(
                "query processing would load too many samples into memory in query execution".into(),
            ));
        }
        Ok(())
    }
}

/// The parameters and kernel of one PromQL operator. Implemented once per plan-node file.
pub(crate) trait NodeSpec: fmt::Debug + Clone + Hash + Eq + PartialOrd + Send + Sync + 'static {
    /// Logical node name, e.g. `PromInstantSelect`; the physical node adds `Exec`.
    const NAME: &'static str;
    /// Writes the parameters for EXPLAIN.
    fn fmt_params(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result;
    /// True when the kernel maps the first input batch by batch (series are independent);
    /// false when it needs the whole first input at once.
    fn streaming(&self) -> bool {
        false
    }
    /// Runs the kernel: `main` is the first input (one batch when streaming, everything
    /// otherwise, nothing for leaves), `params` the other inputs, fully collected.
    fn eval(&self, main: Vec<SeriesData>, params: &[Vec<SeriesData>], ctx: &EvalCtx) -> Result<Vec<SeriesData>>;
    /// Maps one batch of the first input (nodes that are [`NodeSpec::streaming`]). The default
    /// decodes the batch into series, runs [`NodeSpec::eval`] and encodes the result; nodes on
    /// the hot path override it to work on the batch's columns and dictionary directly.
    fn map_batch(&self, batch: &RecordBatch, params: &[Vec<SeriesData>], ctx: &EvalCtx) -> Result<RecordBatch> {
        let series = batch_to_series(batch)?;
        let out = self.eval(series, params, ctx)?;
        series_to_batch(&out)
    }
    /// For nodes that fold their first input batch by batch (partial aggregation): a fresh
    /// accumulator, given the other inputs. `None` (the default) makes the node collect its
    /// whole first input and call [`NodeSpec::eval`] once.
    fn accumulator(&self, _params: &[Vec<SeriesData>], _ctx: &EvalCtx) -> Result<Option<Box<dyn Accumulator>>> {
        Ok(None)
    }
}

/// The running state of a node that folds its input batch by batch (see
/// [`NodeSpec::accumulator`]): it keeps only what its output needs, not the input.
pub(crate) trait Accumulator: Send {
    /// Folds one batch of the first input.
    fn update(&mut self, batch: &RecordBatch) -> Result<()>;
    /// The output, once the input is exhausted.
    fn finish(self: Box<Self>) -> Result<Vec<SeriesData>>;
}

/// The logical plan node of a PromQL operator: a [`NodeSpec`] plus its inputs.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub(crate) struct PromLogical<S: NodeSpec> {
    pub(crate) spec: S,
    pub(crate) inputs: Vec<LogicalPlan>,
    schema: DFSchemaRef,
}

impl<S: NodeSpec> PromLogical<S> {
    /// Wraps the node into a logical plan.
    pub(crate) fn plan(spec: S, inputs: Vec<LogicalPlan>) -> LogicalPlan {
        Self::plan_with_schema(spec, inputs, prom_df_schema())
    }

    /// Wraps the node into a logical plan whose output has `schema` (a scan reading start
    /// timestamps, see [`prom_schema_with_start_timestamps`]).
    pub(crate) fn plan_with_schema(spec: S, inputs: Vec<LogicalPlan>, schema: DFSchemaRef) -> LogicalPlan {
        LogicalPlan::Extension(datafusion::logical_expr::Extension {
            node: Arc::new(PromLogical { spec, inputs, schema }),
        })
    }
}

impl<S: NodeSpec> PartialOrd for PromLogical<S> {
    fn partial_cmp(&self, o: &Self) -> Option<Ordering> {
        match self.spec.partial_cmp(&o.spec) {
            Some(Ordering::Equal) => self.inputs.partial_cmp(&o.inputs),
            c => c,
        }
    }
}

impl<S: NodeSpec> UserDefinedLogicalNodeCore for PromLogical<S> {
    fn name(&self) -> &str {
        S::NAME
    }
    fn inputs(&self) -> Vec<&LogicalPlan> {
        self.inputs.iter().collect()
    }
    fn schema(&self) -> &DFSchemaRef {
        &self.schema
    }
    fn expressions(&self) -> Vec<Expr> {
        vec![]
    }
    fn fmt_for_explain(&self, f: &mut fmt::Formatter) -> fmt::Result {
        write!(f, "{}: ", S::NAME)?;
        self.spec.fmt_params(f)
    }
    fn with_exprs_and_inputs(&self, _exprs: Vec<Expr>, inputs: Vec<LogicalPlan>) -> datafusion::error::Result<Self> {
        Ok(PromLogical { spec: self.spec.clone(), inputs, schema: self.schema.clone() })
    }
}

/// Plan properties shared by all PromQL execution plans: one partition, bounded, final output.
pub(crate) fn prom_properties() -> Arc<PlanProperties> {
    Arc::new(PlanProperties::new(
        EquivalenceProperties::new(prom_schema()),
        Partitioning::UnknownPartitioning(1),
        EmissionType::Final,
        Boundedness::Bounded,
    ))
}

/// The execution plan of a PromQL operator: runs its [`NodeSpec`] kernel over its inputs.
#[derive(Debug)]
pub(crate) struct PromExec<S: NodeSpec> {
    spec: S,
    children: Vec<Arc<dyn ExecutionPlan>>,
    ctx: EvalCtx,
    props: Arc<PlanProperties>,
    metrics: ExecutionPlanMetricsSet,
}

impl<S: NodeSpec> PromExec<S> {
    fn new(spec: S, children: Vec<Arc<dyn ExecutionPlan>>, ctx: EvalCtx) -> Self {
        PromExec { spec, children, ctx, props: prom_properties(), metrics: ExecutionPlanMetricsSet::new() }
    }
}

impl<S: NodeSpec> DisplayAs for PromExec<S> {
    fn fmt_as(&self, _t: DisplayFormatType, f: &mut fmt::Formatter) -> fmt::Result {
        write!(f, "{}Exec: ", S::NAME)?;
        self.spec.fmt_params(f)
    }
}

/// Collects a stream into series.
async fn collect_series(s: SendableRecordBatchStream) -> datafusion::error::Result<Vec<SeriesData>> {
    let batches: Vec<RecordBatch> = s.try_collect().await?;
    let mut out = Vec::new();
    for b in &batches {
        out.extend(batch_to_series(b).map_err(to_df)?);
    }
    Ok(out)
}

/// Wraps a query error so it travels through DataFusion and comes back out intact.
pub(crate) fn to_df(e: Error) -> DataFusionError {
    DataFusionError::External(Box::new(e))
}

impl<S: NodeSpec> ExecutionPlan for PromExec<S> {
    fn name(&self) -> &str {
        S::NAME
    }
    fn properties(&self) -> &Arc<PlanProperties> {
        &self.props
    }
    fn required_input_distribution(&self) -> Vec<Distribution> {
        vec![Distribution::SinglePartition; self.children.len()]
    }
    fn children(&self) -> Vec<&Arc<dyn ExecutionPlan>> {
        self.children.iter().collect()
    }
    fn apply_expressions(
        &self,
        _f: &mut dyn FnMut(&Arc<dyn PhysicalExpr>) -> datafusion::error::Result<TreeNodeRecursion>,
    ) -> datafusion::error::Result<TreeNodeRecursion> {
        Ok(TreeNodeRecursion::Continue)
    }
    fn with_new_children(
        self: Arc<Self>,
        children: Vec<Arc<dyn ExecutionPlan>>,
    ) -> datafusion::error::Result<Arc<dyn ExecutionPlan>> {
        Ok(Arc::new(PromExec::new(self.spec.clone(), children, self.ctx.clone())))
    }
    fn metrics(&self) -> Option<MetricsSet> {
        Some(self.metrics.clone_inner())
    }
    fn execute(
        &self,
        partition: usize,
        context: Arc<TaskContext>,
    ) -> datafusion::error::Result<SendableRecordBatchStream> {
        let mut streams = Vec::with_capacity(self.children.len());
        for c in &self.children {
            streams.push(c.execute(0, context.clone())?);
        }
        let spec = self.spec.clone();
        let mut ctx = self.ctx.clone();
        ctx.ann = context.session_config().get_extension::<Annotations>();
        let baseline = BaselineMetrics::new(&self.metrics, partition);
        let schema = prom_schema();
        let mut streams = streams.into_iter();
        let main = streams.next();
        let rest: Vec<SendableRecordBatchStream> = streams.collect();
        let fut = async move {
            let mut params = Vec::with_capacity(rest.len());
            for s in rest {
                params.push(collect_series(s).await?);
            }
            let acc = match &main {
                Some(_) if !spec.streaming() => spec.accumulator(&params, &ctx).map_err(to_df)?,
                _ => None,
            };
            let out: futures::stream::BoxStream<'static, datafusion::error::Result<RecordBatch>> = match (main, acc) {
                (Some(main), _) if spec.streaming() => {
                    let baseline = baseline.clone();
                    main.map(move |b| {
                        let b = b?;
                        let timer = baseline.elapsed_compute().timer();
                        let rb = spec.map_batch(&b, &params, &ctx).map_err(to_df)?;
                        timer.done();
                        baseline.record_output(rb.num_rows());
                        Ok(rb)
                    })
                    .boxed()
                }
                (Some(mut main), Some(mut acc)) => {
                    while let Some(b) = main.next().await {
                        let b = b?;
                        let timer = baseline.elapsed_compute().timer();
                        acc.update(&b).map_err(to_df)?;
                        timer.done();
                    }
                    let timer = baseline.elapsed_compute().timer();
                    let out = acc.finish().map_err(to_df)?;
                    let rb = series_to_batch(&out).map_err(to_df)?;
                    timer.done();
                    baseline.record_output(rb.num_rows());
                    futures::stream::once(async move { Ok(rb) }).boxed()
                }
                (main, _) => {
                    let series = match main {
                        Some(m) => collect_series(m).await?,
                        None => Vec::new(),
                    };
                    let timer = baseline.elapsed_compute().timer();
                    let out = spec.eval(series, &params, &ctx).map_err(to_df)?;
                    let rb = series_to_batch(&out).map_err(to_df)?;
                    timer.done();
                    baseline.record_output(rb.num_rows());
                    futures::stream::once(async move { Ok(rb) }).boxed()
                }
            };
            Ok::<_, DataFusionError>(out)
        };
        let stream = futures::stream::once(fut).try_flatten();
        Ok(Box::pin(RecordBatchStreamAdapter::new(schema, stream)))
    }
}

/// Turns Strata's logical PromQL nodes into their execution plans.
#[derive(Debug)]
pub(crate) struct PromExtensionPlanner {
    pub(crate) source: Arc<dyn SeriesSource>,
    pub(crate) ctx: EvalCtx,
}

impl PromExtensionPlanner {
    fn try_plan<S: NodeSpec>(
        &self,
        node: &dyn UserDefinedLogicalNode,
        inputs: &[Arc<dyn ExecutionPlan>],
    ) -> Option<Arc<dyn ExecutionPlan>> {
        node.as_any().downcast_ref::<PromLogical<S>>().map(|n| {
            Arc::new(PromExec::new(n.spec.clone(), inputs.to_vec(), self.ctx.clone())) as Arc<dyn ExecutionPlan>
        })
    }
}

#[async_trait]
impl ExtensionPlanner for PromExtensionPlanner {
    async fn plan_extension(
        &self,
        _planner: &dyn PhysicalPlanner,
        node: &dyn UserDefinedLogicalNode,
        _logical_inputs: &[&LogicalPlan],
        physical_inputs: &[Arc<dyn ExecutionPlan>],
        _session: &dyn datafusion::catalog::Session,
        _planning_ctx: &datafusion::logical_expr::physical_planning_context::PhysicalPlanningContext,
    ) -> datafusion::error::Result<Option<Arc<dyn ExecutionPlan>>> {
        if let Some(n) = node.as_any().downcast_ref::<series_scan::SeriesScan>() {
            return Ok(Some(Arc::new(series_scan::SeriesScanExec::new(
                n.clone(),
                self.source.clone(),
                self.ctx.clone(),
            ))));
        }
        let p = physical_inputs;
        let planned = self
            .try_plan::<instant_select::InstantSelectSpec>(node, p)
            .or_else(|| self.try_plan::<literal::LiteralSpec>(node, p))
            .or_else(|| self.try_plan::<range_func::RangeFuncSpec>(node, p))
            .or_else(|| self.try_plan::<aggregate::AggregateSpec>(node, p))
            .or_else(|| self.try_plan::<binary::BinarySpec>(node, p))
            .or_else(|| self.try_plan::<instant_fn::InstantFnSpec>(node, p))
            .or_else(|| self.try_plan::<label_fn::LabelFnSpec>(node, p))
            .or_else(|| self.try_plan::<step_fn::StepFnSpec>(node, p))
            .or_else(|| self.try_plan::<histogram::HistogramSpec>(node, p))
            .or_else(|| self.try_plan::<subquery::SubquerySpec>(node, p))
            .or_else(|| self.try_plan::<info::InfoSpec>(node, p));
        Ok(planned)
    }
}

/// The session's query planner: DataFusion's planner plus [`PromExtensionPlanner`].
#[derive(Debug)]
pub(crate) struct PromQueryPlanner {
    pub(crate) ext: Arc<PromExtensionPlanner>,
}

#[async_trait]
impl QueryPlanner for PromQueryPlanner {
    async fn create_physical_plan(
        &self,
        logical_plan: &LogicalPlan,
        session_state: &dyn datafusion::catalog::Session,
    ) -> datafusion::error::Result<Arc<dyn ExecutionPlan>> {
        let planner = DefaultPhysicalPlanner::with_extension_planners(vec![self.ext.clone()]);
        planner.create_physical_plan(logical_plan, session_state).await
    }
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
    fn grid_steps() {
        let g = Grid::new(10, 35, 10);
        assert_eq!(g.times().collect::<Vec<_>>(), vec![10, 20, 30]);
        assert_eq!(g.index_of(20), Some(1));
        assert_eq!(g.index_of(25), None);
        assert_eq!(fmt_duration(300_000), "5m");
        assert_eq!(fmt_duration(-1500), "-1500ms");
    }

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
