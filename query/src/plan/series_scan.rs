//! `PromSeriesScan`: the leaf of every PromQL plan, reading raw samples from a `SeriesSource`.
//!
//! ```text
//!   SeriesSource.select(matchers, [min_t, max_t])
//!        │  SeriesBatch { labels[i], offsets, timestamp, value }
//!        ▼
//!   PromSeriesScanExec ──► (labels dict, timestamp, value): raw samples, each series whole,
//!                          sorted by time, stale markers kept (the selector above honours them)
//! ```
//!
//! The scan does no PromQL logic: it only converts the source's batches into the plan's batch
//! layout (the label sets become the batch's dictionary, the sample columns pass through
//! untouched). With `or` matcher sets (`{a="1" or b="2"}`) it selects once per set and merges.

use std::fmt;
use std::ops::Range;
use std::sync::{Arc, Mutex};

use arrow::array::{ArrayRef, BinaryArray, DictionaryArray, RecordBatch, UInt32Array};
use arrow::datatypes::UInt32Type;
use datafusion::error::DataFusionError;
use datafusion::execution::{SendableRecordBatchStream, TaskContext};
use datafusion::physical_plan::metrics::{BaselineMetrics, ExecutionPlanMetricsSet};
use datafusion::physical_plan::{DisplayAs, DisplayFormatType, ExecutionPlan, PlanProperties};
use engine::exec::{incremental_properties, record_stream};
use engine::{MatchOp, Matcher, SelectHints, SelectRequest, SeriesBatch, SeriesSource};
use futures::{StreamExt, TryStreamExt};

use super::partitions::{PARTITION_BATCH_SAMPLES, RoundRobin};
use super::{PromLogical, encode_labels, prom_properties, prom_schema, to_df};
use crate::error::{Error, Result};

/// One label matcher as a plain, hashable value.
#[derive(Debug, Clone, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub(crate) struct MatcherSpec {
    /// Label name.
    pub(crate) name: String,
    /// `=`, `!=`, `=~` or `!~`.
    pub(crate) op: String,
    /// Value or regex source.
    pub(crate) value: String,
}

impl MatcherSpec {
    /// Builds the engine matcher (anchored, dot-all regexes as in Prometheus 3).
    pub(crate) fn to_matcher(&self) -> Result<Matcher> {
        let op = match self.op.as_str() {
            "=" => MatchOp::Equal,
            "!=" => MatchOp::NotEqual,
            "=~" => MatchOp::RegexMatch,
            _ => MatchOp::RegexNoMatch,
        };
        Matcher::new(op, self.name.clone(), self.value.clone())
            .map_err(|e| Error::BadData(format!("invalid matcher {}{}{:?}: {e}", self.name, self.op, self.value)))
    }
}

/// Parameters of the scan.
#[derive(Debug, Clone, PartialEq, Eq, Hash, PartialOrd)]
pub(crate) struct ScanSpec {
    /// Alternative matcher sets (`or`); a series matching any set is selected.
    pub(crate) matcher_sets: Vec<Vec<MatcherSpec>>,
    /// Inclusive start of the data range (ms).
    pub(crate) min_t: i64,
    /// Inclusive end of the data range (ms).
    pub(crate) max_t: i64,
    /// Range of the enclosing range selector (ms), 0 for instant selectors.
    pub(crate) range_ms: i64,
    /// Step of the enclosing evaluation (ms).
    pub(crate) step_ms: i64,
    /// Function the selector feeds, if any (a hint for sources).
    pub(crate) func: Option<String>,
    /// Emit the sources' start timestamps as a fourth column (see
    /// [`super::prom_schema_with_start_timestamps`]); null where a source has none.
    pub(crate) start_timestamps: bool,
    /// Coarsest downsampled resolution the scan may read (ms; 0 = raw only).
    pub(crate) max_resolution_ms: i64,
}

/// The logical scan of `spec`, with the four-column schema when it reads start timestamps.
pub(crate) fn plan(spec: ScanSpec) -> datafusion::logical_expr::LogicalPlan {
    if spec.start_timestamps {
        let schema =
            datafusion::common::DFSchema::try_from(super::prom_schema_with_start_timestamps().as_ref().clone())
                .map(Arc::new)
                .unwrap_or_else(|_| super::prom_df_schema());
        PromLogical::plan_with_schema(spec, vec![], schema)
    } else {
        PromLogical::plan(spec, vec![])
    }
}

/// The schema a scan of `spec` emits.
fn scan_schema(spec: &ScanSpec) -> arrow::datatypes::SchemaRef {
    if spec.start_timestamps { super::prom_schema_with_start_timestamps() } else { prom_schema() }
}

impl ScanSpec {
    /// The logical node name.
    pub(crate) const NAME: &'static str = "PromSeriesScan";

    /// Writes the scan's parameters for EXPLAIN.
    pub(crate) fn fmt_params(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        for (i, set) in self.matcher_sets.iter().enumerate() {
            if i > 0 {
                f.write_str(" or ")?;
            }
            f.write_str("{")?;
            for (j, m) in set.iter().enumerate() {
                if j > 0 {
                    f.write_str(", ")?;
                }
                write!(f, "{}{}{:?}", m.name, m.op, m.value)?;
            }
            f.write_str("}")?;
        }
        write!(f, ", range=[{}, {}]", self.min_t, self.max_t)?;
        if self.start_timestamps {
            f.write_str(", start_timestamps")?;
        }
        if self.max_resolution_ms > 0 {
            write!(f, ", max_resolution={}ms", self.max_resolution_ms)?;
        }
        Ok(())
    }
}

/// A per-query replacement of the scans' source, set as a task-context extension: the querier
/// reads each request through its own view of its sources (the request's options, its warnings),
/// while plans are built once against the engine's source.
#[derive(Debug)]
pub(crate) struct ScanSource(pub(crate) Arc<dyn SeriesSource>);

/// The physical scan over a [`SeriesSource`]. With several partitions, a source that deals its
/// select itself ([`SeriesSource::select_dealt`]: the bucket, by label ranges) gives each
/// partition its own stream, read and merged on that partition's task; from any other source the
/// scan's batches of whole series are dealt out to the partitions in turn. Either way taking the
/// partitions' batches in turn gives the scan's order (see [`super::partitions`]).
#[derive(Debug)]
pub(crate) struct SeriesScanExec {
    spec: ScanSpec,
    source: Arc<dyn SeriesSource>,
    partitions: usize,
    /// How the partitions get their batches, decided when the first partition is polled.
    deal: Arc<tokio::sync::OnceCell<Deal>>,
    props: Arc<PlanProperties>,
    metrics: ExecutionPlanMetricsSet,
}

type BatchStream = futures::stream::BoxStream<'static, datafusion::error::Result<RecordBatch>>;

/// How the partitions of a scan get their batches.
enum Deal {
    /// The source dealt its select: partition `p` takes stream `p` (each taken once).
    Source(Vec<Mutex<Option<BatchStream>>>),
    /// The scan's batches dealt out in turn.
    RoundRobin(Arc<RoundRobin>),
}

impl fmt::Debug for Deal {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Deal::Source(s) => write!(f, "Deal::Source({} streams)", s.len()),
            Deal::RoundRobin(r) => write!(f, "Deal::RoundRobin({r:?})"),
        }
    }
}

impl SeriesScanExec {
    /// A scan of `spec` over `source` into `partitions` partitions.
    pub(crate) fn new(spec: ScanSpec, source: Arc<dyn SeriesSource>, partitions: usize) -> Self {
        let partitions = partitions.max(1);
        let props = if spec.start_timestamps || partitions > 1 {
            incremental_properties(scan_schema(&spec), partitions)
        } else {
            prom_properties()
        };
        SeriesScanExec {
            spec,
            source,
            partitions,
            deal: Arc::default(),
            props,
            metrics: ExecutionPlanMetricsSet::new(),
        }
    }
}

impl DisplayAs for SeriesScanExec {
    fn fmt_as(&self, _t: DisplayFormatType, f: &mut fmt::Formatter) -> fmt::Result {
        f.write_str("PromSeriesScanExec: ")?;
        self.spec.fmt_params(f)?;
        if self.partitions > 1 {
            write!(f, ", {} partitions", self.partitions)?;
        }
        Ok(())
    }
}

/// Converts series `range` of a source batch to the plan layout without copying the sample
/// columns; with `start_timestamps`, the source's start timestamps (or nulls) become a fourth
/// column.
fn convert(b: &SeriesBatch, range: Range<usize>, start_timestamps: bool) -> Result<RecordBatch> {
    let row = |i: usize| b.offsets.get(i).copied().unwrap_or(0);
    let (first, rows) = (row(range.start), row(range.end).saturating_sub(row(range.start)));
    let mut dict = Vec::new();
    let mut offs: Vec<i32> = vec![0];
    let mut keys = Vec::with_capacity(rows);
    for (k, i) in range.enumerate() {
        let Some(l) = b.labels.get(i) else { break };
        encode_labels(l, &mut dict);
        offs.push(dict.len() as i32);
        keys.extend(std::iter::repeat_n(k as u32, row(i + 1).saturating_sub(row(i))));
    }
    let values = BinaryArray::try_new(arrow::buffer::OffsetBuffer::new(offs.into()), dict.into(), None)
        .map_err(|e| Error::Internal(format!("scan labels: {e}")))?;
    let d = DictionaryArray::<UInt32Type>::try_new(UInt32Array::from(keys), Arc::new(values))
        .map_err(|e| Error::Internal(format!("scan labels: {e}")))?;
    let whole = first == 0 && rows == b.samples.num_rows();
    let col = |c: &ArrayRef| if whole { c.clone() } else { c.slice(first, rows) };
    let mut cols: Vec<ArrayRef> = vec![Arc::new(d), col(b.samples.column(0)), col(b.samples.column(1))];
    if !start_timestamps {
        return RecordBatch::try_new(prom_schema(), cols).map_err(|e| Error::Internal(format!("scan batch: {e}")));
    }
    cols.push(match b.start_timestamps() {
        Some(st) => Arc::new(st.slice(first, rows)),
        None => arrow::array::new_null_array(&arrow::datatypes::DataType::Int64, rows),
    });
    RecordBatch::try_new(super::prom_schema_with_start_timestamps(), cols)
        .map_err(|e| Error::Internal(format!("scan batch: {e}")))
}

/// Series ranges of `b` holding about [`PARTITION_BATCH_SAMPLES`] samples each (one range for
/// the whole batch when it is not to be cut).
fn cuts(b: &SeriesBatch, cut: bool) -> Vec<Range<usize>> {
    let n = b.num_series();
    if !cut || b.samples.num_rows() <= PARTITION_BATCH_SAMPLES {
        return std::iter::once(0..n).collect();
    }
    let mut out = Vec::new();
    let mut start = 0;
    for i in 0..n {
        if b.offsets[i + 1] - b.offsets[start] >= PARTITION_BATCH_SAMPLES {
            out.push(start..i + 1);
            start = i + 1;
        }
    }
    if start < n {
        out.push(start..n);
    }
    out
}

impl ExecutionPlan for SeriesScanExec {
    fn name(&self) -> &str {
        "PromSeriesScanExec"
    }
    engine::leaf_plan!(props);
    engine::plan_metrics!(metrics);
    fn execute(
        &self,
        partition: usize,
        context: Arc<TaskContext>,
    ) -> datafusion::error::Result<SendableRecordBatchStream> {
        let out_schema = scan_schema(&self.spec);
        let source = match context.session_config().get_extension::<ScanSource>() {
            Some(s) => Arc::clone(&s.0),
            None => self.source.clone(),
        };
        let (spec, baseline) = (self.spec.clone(), BaselineMetrics::new(&self.metrics, partition));
        if self.partitions == 1 {
            return Ok(record_stream(out_schema, batches(spec, source, false, baseline)));
        }
        let (deal, parts) = (Arc::clone(&self.deal), self.partitions);
        let stream = async move {
            let deal = deal.get_or_init(|| dealt(spec, source, parts, baseline)).await;
            match deal {
                Deal::Source(streams) => {
                    let taken = streams.get(partition).and_then(|s| s.lock().unwrap_or_else(|e| e.into_inner()).take());
                    taken.ok_or_else(|| {
                        DataFusionError::Internal(format!(
                            "partition {partition} of a scan executed twice or out of range"
                        ))
                    })
                }
                Deal::RoundRobin(r) => r.partition(partition),
            }
        };
        Ok(record_stream(out_schema, futures::stream::once(stream).try_flatten()))
    }
}

/// The select requests of `spec`: one per matcher set.
fn requests(spec: &ScanSpec) -> datafusion::error::Result<Vec<SelectRequest>> {
    let hints = SelectHints {
        step_ms: spec.step_ms,
        range_ms: spec.range_ms,
        func: spec.func.clone(),
        max_resolution_ms: spec.max_resolution_ms,
        aggregates: if spec.max_resolution_ms > 0 {
            engine::aggr::aggregates_for_func(spec.func.as_deref())
        } else {
            Vec::new()
        },
    };
    let mut reqs = Vec::new();
    for set in &spec.matcher_sets {
        let matchers = set.iter().map(MatcherSpec::to_matcher).collect::<Result<Vec<_>>>().map_err(to_df)?;
        reqs.push(SelectRequest { matchers, min_t: spec.min_t, max_t: spec.max_t, hints: hints.clone() });
    }
    Ok(reqs)
}

/// How `parts` partitions read a scan of `spec`: the source's own deal when it has one (each
/// source batch becomes one batch of the plan, so the partitions' turns stay the source's),
/// otherwise the scan's batches, cut into batches of about [`PARTITION_BATCH_SAMPLES`] samples,
/// dealt out in turn. An error of the source's deal goes to partition 0, whose turn is first.
async fn dealt(spec: ScanSpec, source: Arc<dyn SeriesSource>, parts: usize, baseline: BaselineMetrics) -> Deal {
    let reqs = match requests(&spec) {
        Ok(r) => r,
        Err(e) => return failed(e, parts),
    };
    if let [req] = &reqs[..] {
        match source.select_dealt(req, parts).await {
            Ok(Some(streams)) if streams.len() == parts => {
                let convert_all = |s: engine::SeriesStream| -> Mutex<Option<BatchStream>> {
                    let (baseline, start_timestamps) = (baseline.clone(), spec.start_timestamps);
                    let s = s.map(move |b| {
                        let b = b.map_err(|e| to_df(Error::Storage(e)))?;
                        let rb = convert(&b, 0..b.num_series(), start_timestamps).map_err(to_df)?;
                        baseline.record_output(rb.num_rows());
                        Ok(rb)
                    });
                    Mutex::new(Some(s.boxed()))
                };
                return Deal::Source(streams.into_iter().map(convert_all).collect());
            }
            Ok(_) => {}
            Err(e) => return failed(to_df(Error::Storage(e)), parts),
        }
    }
    Deal::RoundRobin(Arc::new(RoundRobin::new(batches(spec, source, true, baseline), parts)))
}

/// A deal whose partition 0 fails with `e` and whose other partitions are empty.
fn failed(e: DataFusionError, parts: usize) -> Deal {
    let mut streams = vec![Mutex::new(Some(futures::stream::once(async move { Err(e) }).boxed()))];
    streams.extend((1..parts).map(|_| Mutex::new(Some(futures::stream::empty().boxed()))));
    Deal::Source(streams)
}

/// The scan's batches; cut into batches of about [`PARTITION_BATCH_SAMPLES`] samples when `cut`
/// (they are dealt out to several partitions).
fn batches(spec: ScanSpec, source: Arc<dyn SeriesSource>, cut: bool, baseline: BaselineMetrics) -> BatchStream {
    let fut = async move {
        let reqs = requests(&spec)?;
        let out: futures::stream::BoxStream<'static, datafusion::error::Result<RecordBatch>> = if reqs.len() == 1 {
            let s = source.select(&reqs[0]).await.map_err(|e| to_df(Error::Storage(e)))?;
            s.flat_map(move |b| {
                let batches: Vec<datafusion::error::Result<RecordBatch>> = match b {
                    Err(e) => vec![Err(to_df(Error::Storage(e)))],
                    Ok(b) => cuts(&b, cut)
                        .into_iter()
                        .map(|r| {
                            let rb = convert(&b, r, spec.start_timestamps).map_err(to_df)?;
                            baseline.record_output(rb.num_rows());
                            Ok(rb)
                        })
                        .collect(),
                };
                futures::stream::iter(batches)
            })
            .boxed()
        } else {
            // `or` matcher sets: union of the selections, each series once, in label order.
            type Samples = (Vec<i64>, Vec<f64>, Vec<i64>);
            let mut all: std::collections::BTreeMap<engine::Labels, Samples> = Default::default();
            for r in &reqs {
                let s = source.select(r).await.map_err(|e| to_df(Error::Storage(e)))?;
                let batches: Vec<SeriesBatch> = s.try_collect().await.map_err(|e| to_df(Error::Storage(e)))?;
                for b in &batches {
                    for i in 0..b.num_series() {
                        let (l, t, v) = b.series(i);
                        let st = match (spec.start_timestamps, b.start_timestamps()) {
                            (true, Some(st)) => st.values()[b.offsets[i]..b.offsets[i + 1]].to_vec(),
                            _ => vec![0; t.len()],
                        };
                        all.entry(l.clone()).or_insert_with(|| (t.to_vec(), v.to_vec(), st));
                    }
                }
            }
            // Series without samples are left out, as a batch of the plan never holds one.
            let series: Vec<engine::source::SeriesWithStartTimestamps> = all
                .into_iter()
                .filter(|(_, (ts, ..))| !ts.is_empty())
                .map(|(labels, (ts, vs, st))| (labels, ts, vs, st))
                .collect();
            let b = if spec.start_timestamps {
                SeriesBatch::from_series_with_start_timestamps(series)
            } else {
                SeriesBatch::from_series(series.into_iter().map(|(l, t, v, _)| (l, t, v)).collect())
            }
            .map_err(|e| to_df(Error::Storage(e)))?;
            let mut out = Vec::new();
            for r in cuts(&b, cut) {
                let rb = convert(&b, r, spec.start_timestamps).map_err(to_df)?;
                baseline.record_output(rb.num_rows());
                out.push(Ok(rb));
            }
            futures::stream::iter(out).boxed()
        };
        Ok::<_, datafusion::error::DataFusionError>(out)
    };
    futures::stream::once(fut).try_flatten().boxed()
}
