//! Recent samples from heads (received, not yet cut into blocks) as a DataFusion table that the
//! SQL tables ([`crate::tables`]) union with the bucket's blocks.
//!
//! ```text
//!   RecentHeads::heads() ─► HeadPart{source, block_labels} per head (e.g. per receive tenant)
//!        │ scan: matchers from `metric = '..'` / label equalities, time range from `timestamp` bounds
//!        ▼
//!   head series ──drop samples inside a snapshot block cut from the same head──► rows
//!   (__series_hash, metric, __l_<label>..., __overflow, timestamp, value)
//! ```
//!
//! The boundary rule is the one PromQL's merge of bucket and heads applies (`engine::merge`: the
//! same series at the same timestamp in both, the bucket wins): a head cuts a window into a block
//! and closes the window to new samples, so a head sample whose timestamp lies inside a block of
//! the table snapshot cut from that head (same external labels) is that block's sample, and is
//! left out. Samples stay in the head until their block is uploaded and the tables show it, and
//! a head drops them only after [`crate::SqlCatalog::settle`]: a statement that chose the tables
//! from before the block read the head before the drop, so none is ever missing.
//!
//! The heads are read when the scan is executed, or ahead of it by [`read_heads`] (DoGet does, right
//! after physical planning), once per execution, into one batch reserved in the statement's memory
//! pool: every execution sees the samples received until then, within `--sql.memory-limit`. The
//! head's implementation lives where the heads do (`ingest`, wired in the `strata` binary): this
//! crate only sees [`engine::SeriesSource`]s.

use std::collections::{BTreeMap, BTreeSet};
use std::sync::{Arc, Mutex};

use arrow::array::{
    ArrayRef, Float64Builder, MapBuilder, MapFieldNames, RecordBatch, StringBuilder, TimestampMillisecondArray,
    UInt64Builder,
};
use arrow::datatypes::{DataType, Field, Schema, SchemaRef};
use async_trait::async_trait;
use datafusion::catalog::{Session, TableProvider};
use datafusion::common::ScalarValue;
use datafusion::execution::memory_pool::{MemoryConsumer, MemoryPool, MemoryReservation};
use datafusion::execution::{SendableRecordBatchStream, TaskContext};
use datafusion::logical_expr::{BinaryExpr, Expr, Operator};
use datafusion::physical_plan::{DisplayAs, DisplayFormatType, ExecutionPlan, PlanProperties};
use engine::exec::{incremental_properties, record_stream};
use engine::format;
use engine::source::{SelectRequest, SeriesSource};
use engine::{MatchOp, Matcher};
use futures::StreamExt;
use futures::future::BoxFuture;

use crate::tables::timestamp_type;

/// One head: its series (labels as its blocks store them in `series.parquet`, without external
/// labels) and the external labels of the blocks cut from it.
#[derive(Debug, Clone)]
pub struct HeadPart {
    /// The head's series and samples.
    pub source: Arc<dyn SeriesSource>,
    /// `thanos.labels` of the blocks this head cuts (how its blocks are told from others').
    pub block_labels: BTreeMap<String, String>,
}

/// The heads whose recent samples the SQL tables include (`strata up`, `strata receive`).
#[async_trait]
pub trait RecentHeads: Send + Sync + std::fmt::Debug {
    /// The heads open now.
    async fn heads(&self) -> Vec<HeadPart>;
}

/// Metric name -> label names (without `__name__`) of the series of `heads`: what the tables need
/// to have columns for.
pub(crate) async fn head_label_names(heads: &dyn RecentHeads) -> crate::Result<BTreeMap<String, BTreeSet<String>>> {
    let mut out: BTreeMap<String, BTreeSet<String>> = BTreeMap::new();
    for part in heads.heads().await {
        for l in part.source.series(&[any_metric()?], i64::MIN, i64::MAX).await? {
            let Some(m) = l.metric_name() else { continue };
            let names = out.entry(m.to_string()).or_default();
            names.extend(l.iter().filter(|l| l.name != format::COL_METRIC_NAME).map(|l| l.name.clone()));
        }
    }
    Ok(out)
}

/// `__name__!=""`: every series.
fn any_metric() -> engine::Result<Matcher> {
    Matcher::new(MatchOp::NotEqual, format::COL_METRIC_NAME, "")
}

/// A block of the table snapshot: its external labels and `[min time, max time)`.
pub(crate) type BlockRange = (BTreeMap<String, String>, i64, i64);

/// The heads as one table, in the row shape the bucket views use before their final projection.
#[derive(Debug)]
pub(crate) struct HeadTable {
    reader: Arc<HeadReader>,
}

impl HeadTable {
    /// A table over `heads` with a column per name of `labels`, leaving out samples covered by
    /// `blocks` (external labels, `[min, max)`) cut from the same head.
    pub(crate) fn new(heads: Arc<dyn RecentHeads>, labels: Vec<String>, blocks: Vec<BlockRange>) -> Self {
        let mut fields =
            vec![Field::new("__series_hash", DataType::UInt64, false), Field::new("metric", DataType::Utf8, true)];
        fields.extend(labels.iter().map(|n| Field::new(format!("__l_{n}"), DataType::Utf8, true)));
        fields.push(Field::new("__overflow", format::overflow_column_type(), true));
        fields.push(Field::new("timestamp", timestamp_type(), false));
        fields.push(Field::new("value", DataType::Float64, false));
        let schema = Arc::new(Schema::new(fields));
        HeadTable { reader: Arc::new(HeadReader { heads, labels, blocks, schema }) }
    }

    /// The label a column of the table stands for (`metric` is `__name__`).
    fn label_of(&self, column: &str) -> Option<String> {
        if column == "metric" {
            return Some(format::COL_METRIC_NAME.to_string());
        }
        let name = column.strip_prefix("__l_")?;
        self.reader.labels.iter().any(|l| l == name).then(|| name.to_string())
    }

    /// Matchers and the inclusive time range the filters imply (each a conjunct; what they do not
    /// say selects everything: DataFusion applies every filter again).
    fn selection(&self, filters: &[Expr]) -> engine::Result<(Vec<Matcher>, i64, i64)> {
        let mut matchers = Vec::new();
        let (mut min_t, mut max_t) = (i64::MIN, i64::MAX);
        for f in filters {
            let Expr::BinaryExpr(BinaryExpr { left, op, right }) = f else { continue };
            let (column, op, value) = match (left.as_ref(), right.as_ref()) {
                (Expr::Column(c), Expr::Literal(v, _)) => (c.name.as_str(), *op, v),
                (Expr::Literal(v, _), Expr::Column(c)) => match op.swap() {
                    Some(op) => (c.name.as_str(), op, v),
                    None => continue,
                },
                _ => continue,
            };
            if column == "timestamp" {
                let Some(ms) = timestamp_ms(value) else { continue };
                match op {
                    Operator::Gt => min_t = min_t.max(ms.saturating_add(1)),
                    Operator::GtEq => min_t = min_t.max(ms),
                    Operator::Lt => max_t = max_t.min(ms.saturating_sub(1)),
                    Operator::LtEq => max_t = max_t.min(ms),
                    Operator::Eq => {
                        min_t = min_t.max(ms);
                        max_t = max_t.min(ms);
                    }
                    _ => {}
                }
            } else if op == Operator::Eq
                && let (Some(label), ScalarValue::Utf8(Some(v)) | ScalarValue::Utf8View(Some(v))) =
                    (self.label_of(column), value)
                && !v.is_empty()
            {
                matchers.push(Matcher::equal(label, v.clone()));
            }
        }
        if !matchers.iter().any(|m| m.name == format::COL_METRIC_NAME) {
            matchers.push(any_metric()?);
        }
        Ok((matchers, min_t, max_t))
    }
}

/// What a head scan reads: the heads, the table's label columns and the snapshot's blocks.
#[derive(Debug)]
struct HeadReader {
    heads: Arc<dyn RecentHeads>,
    /// Label names with a column (`__l_<name>`), in column order; others go to `__overflow`.
    labels: Vec<String>,
    /// Blocks of the snapshot: (external labels, min time, max time exclusive).
    blocks: Vec<BlockRange>,
    schema: SchemaRef,
}

/// Bytes a row of a series with labels `labels` adds to the head batch, about: hash, timestamp,
/// value, the label strings and their offsets (what the memory reservation grows by).
fn row_bytes(labels: &engine::Labels) -> usize {
    24 + labels.iter().map(|l| l.name.len() + l.value.len() + 8).sum::<usize>()
}

impl HeadReader {
    /// Reads the matching head samples outside the snapshot's blocks of the same head, growing
    /// `reservation` as the batch grows (a head larger than the statement's memory limit ends the
    /// read with DataFusion's resources-exhausted error before it is all in memory).
    async fn read(
        &self,
        req: &SelectRequest,
        reservation: &mut MemoryReservation,
    ) -> datafusion::error::Result<RecordBatch> {
        // series.parquet's overflow type (format::overflow_column_type): Parquet's map field names.
        let names = MapFieldNames { entry: "key_value".into(), key: "key".into(), value: "value".into() };
        let mut hash = UInt64Builder::new();
        let mut metric = StringBuilder::new();
        let mut cols: Vec<StringBuilder> = self.labels.iter().map(|_| StringBuilder::new()).collect();
        let mut overflow = MapBuilder::new(Some(names), StringBuilder::new(), StringBuilder::new());
        let mut ts: Vec<i64> = Vec::new();
        let mut value = Float64Builder::new();
        let index: BTreeMap<&str, usize> = self.labels.iter().enumerate().map(|(i, n)| (n.as_str(), i)).collect();
        for part in self.heads.heads().await {
            let mut cut: Vec<(i64, i64)> =
                self.blocks.iter().filter(|(l, _, _)| *l == part.block_labels).map(|(_, a, b)| (*a, *b)).collect();
            cut.sort_unstable();
            let in_block = |t: i64| {
                let i = cut.partition_point(|(a, _)| *a <= t);
                i > 0 && t < cut[i - 1].1
            };
            let mut stream =
                part.source.select(req).await.map_err(|e| datafusion::error::DataFusionError::External(e.into()))?;
            while let Some(batch) = stream.next().await {
                let batch = batch.map_err(|e| datafusion::error::DataFusionError::External(e.into()))?;
                for i in 0..batch.num_series() {
                    let (labels, t, v) = batch.series(i);
                    // One pass: the samples outside the blocks go to the batch, their count is
                    // the series' rows (the reservation grows by them before the labels are copied).
                    let before = ts.len();
                    for (t, v) in t.iter().zip(v) {
                        if !in_block(*t) {
                            ts.push(*t);
                            value.append_value(*v);
                        }
                    }
                    let rows = ts.len() - before;
                    if rows == 0 {
                        continue;
                    }
                    reservation.try_grow(rows.saturating_mul(row_bytes(labels)))?;
                    let h = labels.stable_hash();
                    let mut own: Vec<Option<&str>> = vec![None; self.labels.len()];
                    let mut extra: Vec<(&str, &str)> = Vec::new();
                    for l in labels.iter().filter(|l| l.name != format::COL_METRIC_NAME) {
                        match index.get(l.name.as_str()) {
                            Some(&k) => own[k] = Some(l.value.as_str()),
                            None => extra.push((l.name.as_str(), l.value.as_str())),
                        }
                    }
                    for _ in 0..rows {
                        hash.append_value(h);
                        metric.append_option(labels.metric_name());
                        for (c, v) in cols.iter_mut().zip(&own) {
                            c.append_option(*v);
                        }
                        if extra.is_empty() {
                            overflow.append(false)?;
                        } else {
                            for (k, v) in &extra {
                                overflow.keys().append_value(k);
                                overflow.values().append_value(v);
                            }
                            overflow.append(true)?;
                        }
                    }
                }
            }
        }
        let mut columns: Vec<ArrayRef> = vec![Arc::new(hash.finish()), Arc::new(metric.finish())];
        columns.extend(cols.iter_mut().map(|c| Arc::new(c.finish()) as ArrayRef));
        columns.push(Arc::new(overflow.finish()));
        columns.push(Arc::new(TimestampMillisecondArray::from(ts).with_timezone("UTC")));
        columns.push(Arc::new(value.finish()));
        let batch = RecordBatch::try_new(Arc::clone(&self.schema), columns)?;
        reservation.try_resize(batch.get_array_memory_size())?;
        Ok(batch)
    }
}

/// Milliseconds of a timestamp literal (any unit; a timezone does not move the instant).
fn timestamp_ms(v: &ScalarValue) -> Option<i64> {
    match v {
        ScalarValue::TimestampMillisecond(Some(ms), _) => Some(*ms),
        ScalarValue::TimestampSecond(Some(s), _) => s.checked_mul(1000),
        ScalarValue::TimestampMicrosecond(Some(us), _) => Some(us.div_euclid(1000)),
        ScalarValue::TimestampNanosecond(Some(ns), _) => Some(ns.div_euclid(1_000_000)),
        _ => None,
    }
}

#[async_trait]
impl TableProvider for HeadTable {
    fn schema(&self) -> SchemaRef {
        Arc::clone(&self.reader.schema)
    }

    engine::inexact_base_table!();

    async fn scan(
        &self,
        _state: &dyn Session,
        projection: Option<&Vec<usize>>,
        filters: &[Expr],
        _limit: Option<usize>,
    ) -> datafusion::error::Result<Arc<dyn ExecutionPlan>> {
        let (matchers, min_t, max_t) =
            self.selection(filters).map_err(|e| datafusion::error::DataFusionError::External(e.into()))?;
        let req = SelectRequest { matchers, min_t, max_t, hints: Default::default() };
        Ok(Arc::new(HeadScanExec::new(Arc::clone(&self.reader), req, projection.cloned())?))
    }
}

/// The physical scan of the heads: reads them when executed (or ahead, by [`read_heads`]), into
/// one batch accounted in the statement's memory pool.
#[derive(Debug)]
pub(crate) struct HeadScanExec {
    reader: Arc<HeadReader>,
    req: SelectRequest,
    projection: Option<Vec<usize>>,
    props: Arc<PlanProperties>,
    /// The batch [`read_heads`] read ahead and its reservation, taken by the first execution.
    ahead: Mutex<Option<(RecordBatch, MemoryReservation)>>,
}

impl HeadScanExec {
    fn new(
        reader: Arc<HeadReader>,
        req: SelectRequest,
        projection: Option<Vec<usize>>,
    ) -> datafusion::error::Result<Self> {
        let schema = match &projection {
            Some(p) => Arc::new(reader.schema.project(p)?),
            None => Arc::clone(&reader.schema),
        };
        let props = incremental_properties(schema, 1);
        Ok(HeadScanExec { reader, req, projection, props, ahead: Mutex::new(None) })
    }

    /// Reads the heads into memory reserved from `pool`.
    async fn load(&self, pool: &Arc<dyn MemoryPool>) -> datafusion::error::Result<(RecordBatch, MemoryReservation)> {
        load(&self.reader, &self.req, self.projection.as_deref(), pool).await
    }
}

/// The samples `req` selects from the heads of `reader`, projected, in memory reserved from `pool`.
async fn load(
    reader: &HeadReader,
    req: &SelectRequest,
    projection: Option<&[usize]>,
    pool: &Arc<dyn MemoryPool>,
) -> datafusion::error::Result<(RecordBatch, MemoryReservation)> {
    let mut reservation = MemoryConsumer::new("StrataHeadScan").register(pool);
    let batch = reader.read(req, &mut reservation).await?;
    let batch = match projection {
        Some(p) => batch.project(p)?,
        None => batch,
    };
    Ok((batch, reservation))
}

impl DisplayAs for HeadScanExec {
    fn fmt_as(&self, _t: DisplayFormatType, f: &mut std::fmt::Formatter) -> std::fmt::Result {
        let matchers: Vec<String> = self.req.matchers.iter().map(|m| m.to_string()).collect();
        write!(f, "StrataHeadScanExec: matchers={{{}}}", matchers.join(", "))?;
        if self.req.min_t != i64::MIN || self.req.max_t != i64::MAX {
            write!(f, ", time=[{}, {}]", self.req.min_t, self.req.max_t)?;
        }
        Ok(())
    }
}

impl ExecutionPlan for HeadScanExec {
    fn name(&self) -> &str {
        "StrataHeadScanExec"
    }

    engine::leaf_plan!(props);

    fn execute(
        &self,
        _partition: usize,
        context: Arc<TaskContext>,
    ) -> datafusion::error::Result<SendableRecordBatchStream> {
        let ahead = match self.ahead.lock() {
            Ok(mut g) => g.take(),
            Err(poisoned) => poisoned.into_inner().take(),
        };
        let schema = Arc::clone(self.props.eq_properties.schema());
        let load: BoxFuture<'static, datafusion::error::Result<(RecordBatch, MemoryReservation)>> = match ahead {
            Some(loaded) => Box::pin(futures::future::ready(Ok(loaded))),
            None => {
                let (reader, req, projection) = (Arc::clone(&self.reader), self.req.clone(), self.projection.clone());
                Box::pin(async move { load(&reader, &req, projection.as_deref(), context.memory_pool()).await })
            }
        };
        // One batch; its reservation is held until the stream ends.
        enum Step {
            Load(BoxFuture<'static, datafusion::error::Result<(RecordBatch, MemoryReservation)>>),
            Hold(MemoryReservation),
        }
        let batches = futures::stream::unfold(Some(Step::Load(load)), |step| async move {
            match step? {
                Step::Load(load) => match load.await {
                    Ok((batch, reservation)) => Some((Ok(batch), Some(Step::Hold(reservation)))),
                    Err(e) => Some((Err(e), None)),
                },
                Step::Hold(reservation) => {
                    drop(reservation);
                    None
                }
            }
        });
        Ok(record_stream(schema, batches))
    }
}

/// Reads the heads of every head scan in `plan` now, into `pool` (the statement's memory pool):
/// what the plan's execution then streams. A caller that must see the heads at a point in time
/// (before a cut drops samples) reads them ahead with this before executing the plan.
pub async fn read_heads(plan: &Arc<dyn ExecutionPlan>, pool: &Arc<dyn MemoryPool>) -> datafusion::error::Result<()> {
    let mut todo = vec![Arc::clone(plan)];
    while let Some(node) = todo.pop() {
        if let Some(scan) = node.downcast_ref::<HeadScanExec>() {
            let loaded = scan.load(pool).await?;
            match scan.ahead.lock() {
                Ok(mut g) => *g = Some(loaded),
                Err(poisoned) => *poisoned.into_inner() = Some(loaded),
            }
        }
        todo.extend(node.children().into_iter().cloned());
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]
    use super::*;
    use crate::tables::tests::{fleet, write};
    use crate::tables::{HeadInput, register_tables};
    use arrow::array::AsArray;
    use arrow::datatypes::{Float64Type, Int64Type};
    use datafusion::prelude::SessionContext;
    use engine::bucket::Bucket;
    use engine::{Labels, MemSource};

    #[derive(Debug)]
    struct Heads(Vec<HeadPart>);

    #[async_trait]
    impl RecentHeads for Heads {
        async fn heads(&self) -> Vec<HeadPart> {
            self.0.clone()
        }
    }

    async fn one(ctx: &SessionContext, q: &str) -> RecordBatch {
        let b = ctx.sql(q).await.unwrap().collect().await.unwrap();
        arrow::compute::concat_batches(&b[0].schema(), &b).unwrap()
    }

    /// A block [0, 2 h) and a head holding [1 h, 3 h) of the same series (its first hour is the
    /// block's, not dropped yet) plus a metric only the head has: every sample once.
    #[tokio::test]
    async fn head_samples_join_the_blocks_once() {
        let dir = tempfile::tempdir().unwrap();
        let bucket = Bucket::local(dir.path()).unwrap();
        let all = fleet(720); // 3 h of 15 s samples
        let block: Vec<_> = all
            .iter()
            .map(|(l, t, v)| {
                let n = t.iter().filter(|t| **t < 7_200_000).count();
                (l.clone(), t[..n].to_vec(), v[..n].to_vec())
            })
            .collect();
        write(&bucket, ulid::Ulid::from_parts(1, 1), &block).await;
        let head = MemSource::new();
        for (l, t, v) in &all {
            let from = t.iter().position(|t| *t >= 3_600_000).unwrap();
            head.add(l.clone(), &t[from..], &v[from..]);
        }
        let fresh = Labels::from_pairs([("__name__", "fresh"), ("pod", "p1"), ("instance", "x")]);
        head.add(fresh, &[7_200_000, 7_215_000], &[1.0, 2.0]);
        // Another head's samples in the block's range are not the block's: all kept.
        let other = MemSource::new();
        other.add(Labels::from_pairs([("__name__", "fresh"), ("pod", "p2")]), &[1_000, 2_000], &[5.0, 6.0]);
        let heads = Arc::new(Heads(vec![
            HeadPart { source: Arc::new(head), block_labels: BTreeMap::new() },
            HeadPart { source: Arc::new(other), block_labels: BTreeMap::from([("tenant".into(), "b".into())]) },
        ]));
        let ctx = crate::series_join::tests::session();
        let input = HeadInput::read(heads).await.unwrap();
        let set = register_tables(&ctx, &bucket, Some(&input), None).await.unwrap();
        assert_eq!(set.metrics["fresh"], ["instance", "pod"]);

        let n: usize = all.iter().map(|s| s.1.len()).sum::<usize>() + 4;
        let got = one(&ctx, "SELECT count(*) FROM samples").await;
        assert_eq!(got.column(0).as_primitive::<Int64Type>().value(0), n as i64);
        // Per metric, with a label filter and a time filter crossing the boundary.
        let q = "SELECT count(*), sum(value) FROM node_load1 WHERE instance = 'host-03:9100' \
                 AND timestamp >= to_timestamp_millis(7000000) AND timestamp < to_timestamp_millis(7300000)";
        let got = one(&ctx, q).await;
        let s = all
            .iter()
            .find(|s| s.0.get("instance") == Some("host-03:9100") && s.0.metric_name() == Some("node_load1"))
            .unwrap();
        let want: Vec<f64> =
            s.1.iter().zip(&s.2).filter(|(t, _)| **t >= 7_000_000 && **t < 7_300_000).map(|(_, v)| *v).collect();
        assert_eq!(got.column(0).as_primitive::<Int64Type>().value(0), want.len() as i64);
        assert!((got.column(1).as_primitive::<Float64Type>().value(0) - want.iter().sum::<f64>()).abs() < 1e-9);
        // series: one row per series, counts over block and head.
        let got = one(&ctx, "SELECT count(*), sum(num_samples) FROM series").await;
        assert_eq!(got.column(0).as_primitive::<Int64Type>().value(0), all.len() as i64 + 2);
        assert_eq!(got.column(1).as_primitive::<Int64Type>().value(0), n as i64);
        let got = one(&ctx, "SELECT pod, sum(value) FROM fresh WHERE pod = 'p1' GROUP BY pod").await;
        assert_eq!(got.column(1).as_primitive::<Float64Type>().value(0), 3.0);
        let got = one(&ctx, "SELECT count(*) FROM samples WHERE metric = 'fresh' AND labels['instance'] = 'x'").await;
        assert_eq!(got.column(0).as_primitive::<Int64Type>().value(0), 2);
    }

    #[test]
    fn filters_become_matchers_and_a_time_range() {
        let t = HeadTable::new(Arc::new(Heads(vec![])), vec!["job".into()], vec![]);
        use datafusion::logical_expr::{col, lit};
        let ts = |ms| lit(ScalarValue::TimestampMillisecond(Some(ms), Some("UTC".into())));
        let filters = vec![
            col("metric").eq(lit("up")),
            col("__l_job").eq(lit("api")),
            col("timestamp").gt(ts(1000)),
            ts(5000).gt_eq(col("timestamp")),
            col("__l_other").eq(lit("x")),
        ];
        let (m, min_t, max_t) = t.selection(&filters).unwrap();
        assert_eq!(m, vec![Matcher::equal("__name__", "up"), Matcher::equal("job", "api")]);
        assert_eq!((min_t, max_t), (1001, 5000));
    }
}
