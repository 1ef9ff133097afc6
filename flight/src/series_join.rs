//! The join under every table of [`crate::tables`]: sample rows to their series by (block, series id).
//!
//! DataFusion plans it as a hash join that collects the series rows (the build side, small) and
//! probes it with every sample row, hashing both key columns of each row and comparing them in a
//! hash table. Both keys are small dense integers (the block's position in the snapshot and the
//! series' row number in its block's series.parquet), so [`SeriesJoinRule`] replaces that hash join
//! by [`SeriesJoinExec`], which finds each sample's series through an array per block (a hash map
//! for a block whose ids are sparse in the build side). It keeps what the hash join did for the scan
//! below it: once the series rows are read, the dynamic filter the hash join handed to the samples
//! scan is set to their key ranges (row-group and page pruning on `series_id`). Rows, row order and
//! output schema are the hash join's; duplicate keys on the build side give one row per match.
//!
//! ```text
//!   series rows ──collect once──► per block: series id -> row(s)  ──► dynamic filter: key ranges
//!   sample rows (each partition) ──lookup (block, series id)──► take the series' columns
//! ```

use std::fmt;
use std::sync::Arc;

use arrow::array::{Array, ArrayRef, AsArray, RecordBatch, RecordBatchOptions, UInt32Array};
use arrow::compute::{concat_batches, take};
use arrow::datatypes::{DataType, SchemaRef, UInt32Type};
use datafusion::common::tree_node::{Transformed, TreeNode, TreeNodeRecursion};
use datafusion::common::{JoinType, NullEquality, ScalarValue};
use datafusion::config::ConfigOptions;
use datafusion::error::{DataFusionError, Result};
use datafusion::execution::memory_pool::{MemoryConsumer, MemoryReservation};
use datafusion::execution::runtime_env::RuntimeEnv;
use datafusion::execution::session_state::SessionStateBuilder;
use datafusion::execution::{SendableRecordBatchStream, TaskContext};
use datafusion::logical_expr::Operator;
use datafusion::physical_expr::expressions::{BinaryExpr, Column, DynamicFilterPhysicalExpr, lit};
use datafusion::physical_expr::{PhysicalExpr, PhysicalExprRef};
use datafusion::physical_optimizer::PhysicalOptimizerRule;
use datafusion::physical_plan::joins::{HashJoinExec, PartitionMode};
use datafusion::physical_plan::metrics::{
    BaselineMetrics, Count, ExecutionPlanMetricsSet, MetricBuilder, RecordOutput, Time,
};
use datafusion::physical_plan::{
    ChildrenPropertiesMode, DisplayAs, DisplayFormatType, Distribution, ExecutionPlan, PlanProperties,
    ReplaceChildrenOptions, apply_expression_roots,
};
use datafusion::prelude::{SessionConfig, SessionContext};
use engine::exec::record_stream;
use futures::{StreamExt, TryStreamExt};
use hashbrown::HashMap;
use tokio::sync::OnceCell;

/// Names of the join's key columns on the series side (block index, series id), as
/// [`crate::tables`] projects them.
pub(crate) const SERIES_KEYS: [&str; 2] = ["__block", "__series_id"];
/// Names of the join's key columns on the samples side (block index, series id).
pub(crate) const SAMPLE_KEYS: [&str; 2] = ["__sblock", "__sid"];

/// Physical optimizer rule (runs after DataFusion's own): each inner hash join of series rows to
/// sample rows on ([`SERIES_KEYS`]) = ([`SAMPLE_KEYS`]), both `UInt32`, that collects its series
/// side into one partition, becomes a [`SeriesJoinExec`].
#[derive(Debug, Default)]
pub(crate) struct SeriesJoinRule;

impl PhysicalOptimizerRule for SeriesJoinRule {
    fn optimize(&self, plan: Arc<dyn ExecutionPlan>, _config: &ConfigOptions) -> Result<Arc<dyn ExecutionPlan>> {
        plan.transform_up(|node| match SeriesJoinExec::replacing(&node)? {
            Some(join) => Ok(Transformed::yes(Arc::new(join) as Arc<dyn ExecutionPlan>)),
            None => Ok(Transformed::no(node)),
        })
        .map(|t| t.data)
    }

    fn name(&self) -> &str {
        "strata_series_join"
    }

    fn schema_check(&self) -> bool {
        true
    }
}

/// A session over `runtime` whose plans join samples to series with [`SeriesJoinExec`].
///
/// Its joins collect their build side once instead of hash-repartitioning both sides (the only
/// form the rule replaces): the tables' joins build on series rows (small) and probe with every
/// sample, which a repartition would hash a second time (`bench sql`: 2-3x the scan's cost).
pub(crate) fn sql_session(config: SessionConfig, runtime: Arc<RuntimeEnv>) -> SessionContext {
    let state = SessionStateBuilder::new()
        .with_config(config.with_repartition_joins(false))
        .with_runtime_env(runtime)
        .with_default_features()
        .with_physical_optimizer_rule(Arc::new(SeriesJoinRule))
        .build();
    SessionContext::new_with_state(state)
}

/// Where an output column comes from: a column of the series rows or of the sample rows.
#[derive(Debug, Clone, Copy)]
enum Source {
    Build(usize),
    Probe(usize),
}

/// The join of sample rows to series rows by (block index, series id), in place of a
/// [`HashJoinExec`] (see the module docs).
#[derive(Debug)]
pub(crate) struct SeriesJoinExec {
    /// The hash join this replaces: its children, properties and dynamic filter.
    join: Arc<dyn ExecutionPlan>,
    build_keys: [PhysicalExprRef; 2],
    probe_keys: [PhysicalExprRef; 2],
    columns: Arc<[Source]>,
    /// The hash join's dynamic filter of the samples scan (a `DynamicFilterPhysicalExpr`).
    dynamic_filter: Option<Arc<dyn PhysicalExpr>>,
    /// The series rows and their lookup, read once by whichever partition comes first.
    table: Arc<OnceCell<Arc<Table>>>,
    metrics: ExecutionPlanMetricsSet,
}

impl SeriesJoinExec {
    /// The join that replaces `node`, when `node` is a hash join it can stand in for.
    fn replacing(node: &Arc<dyn ExecutionPlan>) -> Result<Option<Self>> {
        let Some(hj) = node.downcast_ref::<HashJoinExec>() else { return Ok(None) };
        if *hj.join_type() != JoinType::Inner
            || hj.filter().is_some()
            || *hj.partition_mode() != PartitionMode::CollectLeft
            || hj.null_equality() != NullEquality::NullEqualsNothing
            || hj.null_aware
            || hj.fetch().is_some()
            || hj.on().len() != 2
            || hj.left().properties().output_partitioning().partition_count() != 1
        {
            return Ok(None);
        }
        let (left, right) = (hj.left().schema(), hj.right().schema());
        let key = |e: &PhysicalExprRef, name: &str, schema: &SchemaRef| -> Result<bool> {
            Ok(e.downcast_ref::<Column>().is_some_and(|c| c.name() == name) && e.data_type(schema)? == DataType::UInt32)
        };
        for (i, (l, r)) in hj.on().iter().enumerate() {
            if !key(l, SERIES_KEYS[i], &left)? || !key(r, SAMPLE_KEYS[i], &right)? {
                return Ok(None);
            }
        }
        let n_left = left.fields().len();
        let all: Vec<usize> = (0..n_left + right.fields().len()).collect();
        let projection: &[usize] = hj.projection.as_deref().unwrap_or(&all);
        let columns: Arc<[Source]> =
            projection.iter().map(|&i| if i < n_left { Source::Build(i) } else { Source::Probe(i - n_left) }).collect();
        let on = hj.on();
        Ok(Some(SeriesJoinExec {
            join: Arc::clone(node),
            build_keys: [Arc::clone(&on[0].0), Arc::clone(&on[1].0)],
            probe_keys: [Arc::clone(&on[0].1), Arc::clone(&on[1].1)],
            columns,
            dynamic_filter: node
                .dynamic_expressions_produced()
                .into_iter()
                .find(|e| e.downcast_ref::<DynamicFilterPhysicalExpr>().is_some()),
            table: Arc::new(OnceCell::new()),
            metrics: ExecutionPlanMetricsSet::new(),
        }))
    }

    fn build(&self) -> &Arc<dyn ExecutionPlan> {
        self.join.children()[0]
    }

    fn probe(&self) -> &Arc<dyn ExecutionPlan> {
        self.join.children()[1]
    }
}

impl DisplayAs for SeriesJoinExec {
    fn fmt_as(&self, _t: DisplayFormatType, f: &mut fmt::Formatter) -> fmt::Result {
        write!(f, "StrataSeriesJoinExec: on=[")?;
        for (i, (b, p)) in self.build_keys.iter().zip(&self.probe_keys).enumerate() {
            if i > 0 {
                write!(f, ", ")?;
            }
            write!(f, "({b}, {p})")?;
        }
        write!(f, "]")
    }
}

impl ExecutionPlan for SeriesJoinExec {
    fn name(&self) -> &str {
        "StrataSeriesJoinExec"
    }

    fn properties(&self) -> &Arc<PlanProperties> {
        self.join.properties()
    }

    fn required_input_distribution(&self) -> Vec<Distribution> {
        vec![Distribution::SinglePartition, Distribution::UnspecifiedDistribution]
    }

    fn maintains_input_order(&self) -> Vec<bool> {
        vec![false, true]
    }

    fn children(&self) -> Vec<&Arc<dyn ExecutionPlan>> {
        self.join.children()
    }

    fn apply_expressions(
        &self,
        f: &mut dyn FnMut(&Arc<dyn PhysicalExpr>) -> Result<TreeNodeRecursion>,
    ) -> Result<TreeNodeRecursion> {
        apply_expression_roots(self.build_keys.iter().chain(&self.probe_keys).chain(&self.dynamic_filter).cloned(), f)
    }

    fn with_new_children(self: Arc<Self>, children: Vec<Arc<dyn ExecutionPlan>>) -> Result<Arc<dyn ExecutionPlan>> {
        let join = Arc::clone(&self.join)
            .replace_children(children, ReplaceChildrenOptions::new(ChildrenPropertiesMode::Recompute))?;
        match SeriesJoinExec::replacing(&join)? {
            Some(j) => Ok(Arc::new(j)),
            None => Ok(join),
        }
    }

    engine::plan_metrics!(metrics);

    fn execute(&self, partition: usize, context: Arc<TaskContext>) -> Result<SendableRecordBatchStream> {
        let schema = self.schema();
        let (build, probe) = (Arc::clone(self.build()), Arc::clone(self.probe()));
        let (build_keys, probe_keys) = (self.build_keys.clone(), self.probe_keys.clone());
        let (cell, filter, columns) = (Arc::clone(&self.table), self.dynamic_filter.clone(), Arc::clone(&self.columns));
        let build_time = MetricBuilder::new(&self.metrics).subset_time("build_time", partition);
        let build_rows = MetricBuilder::new(&self.metrics).counter("build_input_rows", partition);
        let input_rows = MetricBuilder::new(&self.metrics).counter("input_rows", partition);
        let baseline = BaselineMetrics::new(&self.metrics, partition);
        let out_schema = Arc::clone(&schema);
        let joined = async move {
            let table = cell
                .get_or_try_init(|| {
                    read_series(build, build_keys, probe_keys.clone(), filter, &context, build_time, build_rows)
                })
                .await
                .map(Arc::clone)?;
            // The samples are scanned once the series are read: the scan's dynamic filter is set.
            let rows = probe.execute(partition, context)?;
            Ok::<_, DataFusionError>(rows.map(move |batch| {
                let batch = batch?;
                input_rows.add(batch.num_rows());
                let timer = baseline.elapsed_compute().timer();
                let out = join_batch(&table, &probe_keys, &columns, &out_schema, &batch)?;
                timer.done();
                Ok((out.num_rows() > 0).then(|| out.record_output(&baseline)))
            }))
        };
        let stream = futures::stream::once(joined).try_flatten().try_filter_map(futures::future::ok);
        Ok(record_stream(schema, stream))
    }
}

/// The series rows, and where each (block, series id) is among them.
#[derive(Debug)]
struct Table {
    rows: RecordBatch,
    blocks: HashMap<u32, Ids>,
    /// For keys held by more than one row: the next row with the same key, plus one (0: none).
    /// Empty when every key is held once.
    next: Vec<u32>,
    _reservation: MemoryReservation,
}

/// The series ids of one block: first row holding each id, plus one (0: none).
#[derive(Debug)]
enum Ids {
    /// Indexed by `id - first` (the ids are dense enough for an array).
    Dense {
        first: u32,
        rows: Vec<u32>,
    },
    Sparse(HashMap<u32, u32>),
}

impl Ids {
    fn slot(&mut self, id: u32) -> &mut u32 {
        match self {
            // `id` is within the range the array was made for.
            Ids::Dense { first, rows } => &mut rows[(id - *first) as usize],
            Ids::Sparse(m) => m.entry(id).or_insert(0),
        }
    }
}

/// The key columns of `batch` as `UInt32` arrays.
fn keys_of(keys: &[PhysicalExprRef; 2], batch: &RecordBatch) -> Result<[UInt32Array; 2]> {
    let one = |k: &PhysicalExprRef| -> Result<UInt32Array> {
        let a = k.evaluate(batch)?.into_array(batch.num_rows())?;
        a.as_primitive_opt::<UInt32Type>()
            .cloned()
            .ok_or_else(|| DataFusionError::Internal(format!("series join key {k} is {}, not UInt32", a.data_type())))
    };
    Ok([one(&keys[0])?, one(&keys[1])?])
}

/// Reads the series rows (the build side, one partition), indexes them by (block, series id) and
/// sets the samples scan's dynamic filter to their key ranges.
async fn read_series(
    build: Arc<dyn ExecutionPlan>,
    build_keys: [PhysicalExprRef; 2],
    probe_keys: [PhysicalExprRef; 2],
    filter: Option<Arc<dyn PhysicalExpr>>,
    context: &Arc<TaskContext>,
    build_time: Time,
    build_rows: Count,
) -> Result<Arc<Table>> {
    let reservation = MemoryConsumer::new("StrataSeriesJoin").register(context.memory_pool());
    let mut stream = build.execute(0, Arc::clone(context))?;
    let (mut batches, mut read) = (Vec::new(), 0);
    while let Some(batch) = stream.next().await {
        let batch = batch?;
        read += batch.get_array_memory_size();
        reservation.try_grow(batch.get_array_memory_size())?;
        batches.push(batch);
    }
    let _timer = build_time.timer();
    let rows = concat_batches(&build.schema(), &batches)?;
    reservation.try_grow(rows.get_array_memory_size())?;
    drop(batches);
    reservation.shrink(read);
    let n = rows.num_rows();
    build_rows.add(n);
    if n >= u32::MAX as usize {
        return Err(DataFusionError::ResourcesExhausted(format!("series join: {n} series rows, more than it indexes")));
    }
    let [block, id] = keys_of(&build_keys, &rows)?;
    let valid = |r: usize| block.is_valid(r) && id.is_valid(r);

    // Per block: the least and greatest id and how many rows hold one.
    let mut span: HashMap<u32, (u32, u32, usize)> = HashMap::new();
    for r in (0..n).filter(|&r| valid(r)) {
        let (b, i) = (block.value(r), id.value(r));
        let e = span.entry(b).or_insert((i, i, 0));
        *e = (e.0.min(i), e.1.max(i), e.2 + 1);
    }
    let mut blocks: HashMap<u32, Ids> = HashMap::with_capacity(span.len());
    let mut cells = 0usize;
    for (&b, &(lo, hi, count)) in &span {
        let width = (hi - lo) as usize + 1;
        // An array while it is at most 64 KiB or 8 slots per row (a label filter leaves a few
        // series spread over a block's ids: an array still answers each sample without hashing).
        let ids = if width <= (8 * count).max(1 << 14) {
            cells += width;
            Ids::Dense { first: lo, rows: vec![0; width] }
        } else {
            cells += 2 * count;
            Ids::Sparse(HashMap::with_capacity(count))
        };
        blocks.insert(b, ids);
    }
    reservation.try_grow(cells * std::mem::size_of::<u32>())?;
    let mut next: Vec<u32> = Vec::new();
    for r in (0..n).filter(|&r| valid(r)) {
        let Some(ids) = blocks.get_mut(&block.value(r)) else { continue };
        let slot = ids.slot(id.value(r));
        if *slot != 0 {
            // A second row with this key: chain it in front of the others.
            if next.is_empty() {
                reservation.try_grow(n * std::mem::size_of::<u32>())?;
                next = vec![0; n];
            }
            next[r] = *slot;
        }
        *slot = r as u32 + 1;
    }

    if let Some(filter) = filter.as_ref().and_then(|f| f.downcast_ref::<DynamicFilterPhysicalExpr>()) {
        filter.update(ranges(&probe_keys, &span))?;
        filter.mark_complete();
    }
    Ok(Arc::new(Table { rows, blocks, next, _reservation: reservation }))
}

/// `key0 BETWEEN least block AND greatest block AND key1 BETWEEN least id AND greatest id` over
/// the probe side's keys; `false` when there is no series row.
fn ranges(probe_keys: &[PhysicalExprRef; 2], span: &HashMap<u32, (u32, u32, usize)>) -> Arc<dyn PhysicalExpr> {
    let (Some(b_lo), Some(b_hi)) = (span.keys().min(), span.keys().max()) else {
        return lit(false);
    };
    let i_lo = span.values().map(|s| s.0).min().unwrap_or(0);
    let i_hi = span.values().map(|s| s.1).max().unwrap_or(0);
    let between = |k: &PhysicalExprRef, lo: u32, hi: u32| -> Arc<dyn PhysicalExpr> {
        let ge = Arc::new(BinaryExpr::new(Arc::clone(k), Operator::GtEq, lit(ScalarValue::UInt32(Some(lo)))));
        let le = Arc::new(BinaryExpr::new(Arc::clone(k), Operator::LtEq, lit(ScalarValue::UInt32(Some(hi)))));
        Arc::new(BinaryExpr::new(ge, Operator::And, le))
    };
    Arc::new(BinaryExpr::new(between(&probe_keys[0], *b_lo, *b_hi), Operator::And, between(&probe_keys[1], i_lo, i_hi)))
}

/// The output rows of one batch of sample rows: each row once per series row with its key, in
/// the batch's order.
fn join_batch(
    table: &Table,
    probe_keys: &[PhysicalExprRef; 2],
    columns: &[Source],
    schema: &SchemaRef,
    batch: &RecordBatch,
) -> Result<RecordBatch> {
    let n = batch.num_rows();
    let [block, id] = keys_of(probe_keys, batch)?;
    let nulls = block.null_count() > 0 || id.null_count() > 0;
    let (blocks, ids) = (block.values(), id.values());
    let mut probe_rows: Vec<u32> = Vec::with_capacity(n);
    let mut build_rows: Vec<u32> = Vec::with_capacity(n);
    let mut emit = |r: usize, mut row: u32| {
        if nulls && !(block.is_valid(r) && id.is_valid(r)) {
            return;
        }
        while row != 0 {
            probe_rows.push(r as u32);
            build_rows.push(row - 1);
            row = table.next.get(row as usize - 1).copied().unwrap_or(0);
        }
    };
    // A batch holds runs of one block (usually one run): each run is looked up in its block's ids.
    let mut start = 0;
    while start < n {
        let b = blocks[start];
        let end = blocks[start..].iter().position(|&x| x != b).map_or(n, |k| start + k);
        match table.blocks.get(&b) {
            Some(Ids::Dense { first, rows }) => {
                for (r, &sid) in ids.iter().enumerate().take(end).skip(start) {
                    if let Some(&row) = rows.get(sid.wrapping_sub(*first) as usize)
                        && row != 0
                    {
                        emit(r, row);
                    }
                }
            }
            Some(Ids::Sparse(m)) => {
                for (r, sid) in ids.iter().enumerate().take(end).skip(start) {
                    if let Some(&row) = m.get(sid) {
                        emit(r, row);
                    }
                }
            }
            None => {}
        }
        start = end;
    }
    // Every row matched once, in order: the sample columns go out as they are.
    let whole = probe_rows.len() == n && table.next.is_empty();
    let (probe_rows, build_rows) = (UInt32Array::from(probe_rows), UInt32Array::from(build_rows));
    let out: Vec<ArrayRef> = columns
        .iter()
        .map(|c| match *c {
            Source::Build(i) => take(table.rows.column(i), &build_rows, None),
            Source::Probe(i) if whole => Ok(Arc::clone(batch.column(i))),
            Source::Probe(i) => take(batch.column(i), &probe_rows, None),
        })
        .collect::<std::result::Result<_, _>>()?;
    let options = RecordBatchOptions::new().with_row_count(Some(build_rows.len()));
    Ok(RecordBatch::try_new_with_options(Arc::clone(schema), out, &options)?)
}

#[cfg(test)]
pub(crate) mod tests {
    #![allow(clippy::unwrap_used)]
    use super::*;
    use arrow::array::Int64Array;
    use arrow::datatypes::{Field, Schema};
    use datafusion::datasource::MemTable;

    /// A session as the Flight SQL service makes one.
    pub(crate) fn session() -> SessionContext {
        sql_session(SessionConfig::new(), Arc::new(RuntimeEnv::default()))
    }

    fn table(names: [&str; 3], rows: &[(Option<u32>, Option<u32>, i64)], parts: usize) -> Arc<MemTable> {
        let schema = Arc::new(Schema::new(vec![
            Field::new(names[0], DataType::UInt32, true),
            Field::new(names[1], DataType::UInt32, true),
            Field::new(names[2], DataType::Int64, false),
        ]));
        let chunk = rows.len().div_ceil(parts).max(1);
        let batches: Vec<Vec<RecordBatch>> = rows
            .chunks(chunk)
            .map(|c| {
                let cols: Vec<ArrayRef> = vec![
                    Arc::new(UInt32Array::from(c.iter().map(|r| r.0).collect::<Vec<_>>())),
                    Arc::new(UInt32Array::from(c.iter().map(|r| r.1).collect::<Vec<_>>())),
                    Arc::new(Int64Array::from(c.iter().map(|r| r.2).collect::<Vec<_>>())),
                ];
                vec![RecordBatch::try_new(Arc::clone(&schema), cols).unwrap()]
            })
            .collect();
        Arc::new(MemTable::try_new(schema, batches).unwrap())
    }

    /// `(block, id, value)` rows of `ctx`'s answer to `q`, sorted.
    async fn rows(ctx: &SessionContext, q: &str) -> Vec<(i64, i64)> {
        let mut out = Vec::new();
        for b in ctx.sql(q).await.unwrap().collect().await.unwrap() {
            let (l, r) = (
                b.column(0).as_primitive::<arrow::datatypes::Int64Type>(),
                b.column(1).as_primitive::<arrow::datatypes::Int64Type>(),
            );
            out.extend((0..b.num_rows()).map(|i| (l.value(i), r.value(i))));
        }
        out.sort();
        out
    }

    #[tokio::test]
    async fn joins_as_a_hash_join_would() {
        // Series: block 0 dense ids, block 1 sparse ids, block 2 with a key held twice, a row with
        // a null id; samples: matching rows, unknown ids and blocks, nulls, a gap before a block.
        let mut series = vec![];
        for id in 0..50u32 {
            series.push((Some(0), Some(id), 1000 + i64::from(id)));
        }
        for id in [3u32, 40_000, 4_000_000_000] {
            series.push((Some(1), Some(id), 2000 + i64::from(id % 1000)));
        }
        series.extend([
            (Some(2), Some(7), 3001),
            (Some(2), Some(7), 3002),
            (Some(2), None, 3003),
            (Some(9), Some(1), 4000),
        ]);
        let mut samples = vec![];
        for k in 0..400i64 {
            let id = (k % 60) as u32;
            samples.push((Some((k % 3) as u32), Some(id), k));
        }
        samples.extend([
            (Some(1), Some(40_000), 500),
            (Some(1), Some(4_000_000_000), 501),
            (Some(2), Some(7), 502),
            (None, Some(7), 503),
            (Some(2), None, 504),
            (Some(5), Some(1), 505),
            (Some(9), Some(1), 506),
        ]);
        let q = "SELECT s.v, x.w FROM series s JOIN samples x ON s.__block = x.__sblock AND s.__series_id = x.__sid";
        let joined = session();
        let plain = SessionContext::new_with_config(SessionConfig::new().with_repartition_joins(false));
        for ctx in [&joined, &plain] {
            ctx.register_table("series", table(["__block", "__series_id", "v"], &series, 1)).unwrap();
            ctx.register_table("samples", table(["__sblock", "__sid", "w"], &samples, 3)).unwrap();
        }
        let explain = |ctx: &SessionContext| {
            let ctx = ctx.clone();
            async move {
                let b = ctx.sql(&format!("EXPLAIN {q}")).await.unwrap().collect().await.unwrap();
                arrow::util::pretty::pretty_format_batches(&b).unwrap().to_string()
            }
        };
        let (ours, theirs) = (explain(&joined).await, explain(&plain).await);
        assert!(ours.contains("StrataSeriesJoinExec") && !ours.contains("HashJoinExec"), "{ours}");
        assert!(theirs.contains("HashJoinExec"), "{theirs}");
        let want = rows(&plain, q).await;
        assert_eq!(rows(&joined, q).await, want);
        // Independently: block 0 ids 0..50 and block 2 id 7 (twice) and block 9 id 1 match.
        let mut expected = Vec::new();
        for &(b, id, w) in &samples {
            for &(sb, sid, v) in &series {
                if b.is_some() && id.is_some() && b == sb && id == sid {
                    expected.push((v, w));
                }
            }
        }
        expected.sort();
        assert_eq!(want, expected);
        assert!(expected.iter().filter(|(_, w)| *w == 502).count() == 2);
    }

    #[tokio::test]
    async fn other_joins_stay_hash_joins() {
        let ctx = session();
        ctx.register_table("a", table(["__block", "__series_id", "v"], &[(Some(0), Some(1), 1)], 1)).unwrap();
        ctx.register_table("b", table(["__sblock", "__sid", "w"], &[(Some(0), Some(1), 2)], 1)).unwrap();
        // A left join, and a join on one key only: DataFusion's hash join.
        for q in [
            "SELECT a.v, b.w FROM a LEFT JOIN b ON a.__block = b.__sblock AND a.__series_id = b.__sid",
            "SELECT a.v, b.w FROM a JOIN b ON a.__series_id = b.__sid",
        ] {
            let b = ctx.sql(&format!("EXPLAIN {q}")).await.unwrap().collect().await.unwrap();
            let plan = arrow::util::pretty::pretty_format_batches(&b).unwrap().to_string();
            assert!(plan.contains("HashJoinExec") && !plan.contains("StrataSeriesJoinExec"), "{plan}");
            assert_eq!(rows(&ctx, q).await, vec![(1, 2)]);
        }
    }
}
