//! The node framework: what a PromQL operator implements ([`NodeSpec`]), its logical node
//! ([`PromLogical`]) and the execution plan that runs it ([`PromExec`]), with the context handed
//! to kernels ([`EvalCtx`]).
//!
//! # How a node consumes its input
//!
//! [`PromExec`] runs a [`NodeSpec`] in one of three ways, chosen by the spec:
//!
//! - streaming ([`NodeSpec::streaming`]): each batch of the first input is mapped to one output
//!   batch by [`NodeSpec::map_batch`]; hot nodes read the batch through a [`BatchView`] and build
//!   the output with a [`BatchBuilder`] against the input's (or a rewritten) label dictionary, so
//!   labels are never decoded;
//! - partial aggregation ([`NodeSpec::folds`]): each batch is folded into an
//!   [`Accumulator`] that keeps only what the output needs; the output is emitted at the end;
//! - collecting batches ([`NodeSpec::takes_batches`]): every input is collected whole, as the
//!   record batches that arrived, and handed to [`NodeSpec::eval_batches`] once, which reads
//!   them in place (a binary operator between vectors: labels are never decoded);
//! - collecting (the default): the whole first input is decoded into [`SeriesData`] and handed to
//!   [`NodeSpec::eval`] once.
//!
//! The other inputs (scalar parameters) are collected first, except by a node that collects
//! batches, which collects all its inputs at the same time.

use std::cmp::Ordering;
use std::fmt;
use std::hash::{Hash, Hasher};
use std::sync::Arc;

use arrow::array::RecordBatch;
use datafusion::common::DFSchemaRef;
use datafusion::error::DataFusionError;
use datafusion::execution::{SendableRecordBatchStream, TaskContext};
use datafusion::logical_expr::{Expr, LogicalPlan, UserDefinedLogicalNodeCore};
use datafusion::physical_expr::EquivalenceProperties;
use datafusion::physical_plan::execution_plan::{Boundedness, EmissionType};
use datafusion::physical_plan::metrics::{BaselineMetrics, ExecutionPlanMetricsSet};
use datafusion::physical_plan::{
    DisplayAs, DisplayFormatType, Distribution, ExecutionPlan, Partitioning, PlanProperties,
};
use engine::exec::{incremental_properties, record_stream};
use futures::{StreamExt, TryStreamExt};

use super::{Annotations, PromNode, SeriesData, batch_to_series, prom_df_schema, prom_schema, series_to_batch};
use crate::error::{Error, Result};

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

/// Per-node context handed to a kernel at execution time.
#[derive(Debug, Clone)]
pub(crate) struct EvalCtx {
    /// The query's sample limit.
    pub(crate) max_samples: usize,
    /// Delayed `__name__` removal (see [`DROP_NAME_MARK`]).
    pub(crate) delayed_name_removal: bool,
    /// Where the running query collects its warnings and infos.
    pub(crate) ann: Option<Arc<Annotations>>,
    /// Partitions a scan deals its series out to (see [`super::partitions`]).
    pub(crate) partitions: usize,
}

impl EvalCtx {
    /// A context with a sample limit and no annotation sink.
    pub(crate) fn new(max_samples: usize) -> Self {
        EvalCtx { max_samples, delayed_name_removal: false, ann: None, partitions: 1 }
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
                engine::gofloat::format_fixed(q)
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

/// The parameters and kernel of one PromQL operator. Implemented once per plan-node file and
/// registered as a [`PromNode`] variant.
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
    /// True when the node folds its first input batch by batch into an
    /// [`NodeSpec::accumulator`] (partial aggregation); false (the default) makes a node that is
    /// not [`NodeSpec::streaming`] collect its whole first input and call [`NodeSpec::eval`] once.
    fn folds(&self) -> bool {
        false
    }
    /// True when the node, which needs its whole input, reads it as record batches through
    /// [`NodeSpec::eval_batches`] instead of decoded series through [`NodeSpec::eval`].
    fn takes_batches(&self) -> bool {
        false
    }
    /// For nodes that [`NodeSpec::takes_batches`]: runs the kernel once over every input
    /// collected whole (`inputs[0]` the first input's batches, then the others'), giving one
    /// batch.
    fn eval_batches(&self, _inputs: &[Vec<RecordBatch>], _ctx: &EvalCtx) -> Result<RecordBatch> {
        Err(Error::Internal("this plan node does not read record batches".into()))
    }
    /// For nodes that [`NodeSpec::folds`]: a fresh accumulator, given the other inputs.
    fn accumulator(&self, _params: &[Vec<SeriesData>], _ctx: &EvalCtx) -> Result<Box<dyn Accumulator>> {
        Err(Error::Internal("this plan node does not fold its input".into()))
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

/// The logical plan node of every PromQL operator: one of the registered [`PromNode`]s plus its
/// inputs. There is one logical node type, so the physical planner finds every node's execution
/// plan with one exhaustive `match` (see [`super::registry`]).
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub(crate) struct PromLogical {
    pub(crate) node: PromNode,
    pub(crate) inputs: Vec<LogicalPlan>,
    schema: DFSchemaRef,
}

impl PromLogical {
    /// Wraps a node into a logical plan.
    pub(crate) fn plan(node: impl Into<PromNode>, inputs: Vec<LogicalPlan>) -> LogicalPlan {
        Self::plan_with_schema(node, inputs, prom_df_schema())
    }

    /// Wraps a node into a logical plan whose output has `schema` (a scan reading start
    /// timestamps, see [`super::prom_schema_with_start_timestamps`]).
    pub(crate) fn plan_with_schema(
        node: impl Into<PromNode>,
        inputs: Vec<LogicalPlan>,
        schema: DFSchemaRef,
    ) -> LogicalPlan {
        LogicalPlan::Extension(datafusion::logical_expr::Extension {
            node: Arc::new(PromLogical { node: node.into(), inputs, schema }),
        })
    }
}

impl PartialOrd for PromLogical {
    fn partial_cmp(&self, o: &Self) -> Option<Ordering> {
        match self.node.partial_cmp(&o.node) {
            Some(Ordering::Equal) => self.inputs.partial_cmp(&o.inputs),
            c => c,
        }
    }
}

impl UserDefinedLogicalNodeCore for PromLogical {
    fn name(&self) -> &str {
        self.node.name()
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
        write!(f, "{}: ", self.node.name())?;
        self.node.fmt_params(f)
    }
    fn with_exprs_and_inputs(&self, _exprs: Vec<Expr>, inputs: Vec<LogicalPlan>) -> datafusion::error::Result<Self> {
        Ok(PromLogical { node: self.node.clone(), inputs, schema: self.schema.clone() })
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

/// The other inputs of a node, collected once for all its partitions.
type SharedParams = Arc<tokio::sync::OnceCell<Arc<Vec<Vec<SeriesData>>>>>;

/// The execution plan of a PromQL operator: runs its [`NodeSpec`] kernel over its inputs.
///
/// A streaming node keeps the partitions of its first input (it runs once per partition, see
/// [`super::partitions`]); every other input, and the first input of the other nodes, is one
/// partition (the planner merges partitioned inputs in order first).
#[derive(Debug)]
pub(crate) struct PromExec<S: NodeSpec> {
    spec: S,
    children: Vec<Arc<dyn ExecutionPlan>>,
    ctx: EvalCtx,
    props: Arc<PlanProperties>,
    metrics: ExecutionPlanMetricsSet,
    params: SharedParams,
}

impl<S: NodeSpec> PromExec<S> {
    /// The execution plan of `spec` over `children`.
    pub(crate) fn new(spec: S, children: Vec<Arc<dyn ExecutionPlan>>, ctx: EvalCtx) -> Self {
        let partitions = match children.first() {
            Some(c) if spec.streaming() => super::partitions::partition_count(c),
            _ => 1,
        };
        let props = if partitions > 1 { incremental_properties(prom_schema(), partitions) } else { prom_properties() };
        PromExec {
            spec,
            children,
            ctx,
            props,
            metrics: ExecutionPlanMetricsSet::new(),
            params: SharedParams::default(),
        }
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

/// Collects streams into series, each on its own task, so the inputs of a node are computed
/// at the same time (a binary operator's two sides use two cores).
async fn collect_all(streams: Vec<SendableRecordBatchStream>) -> datafusion::error::Result<Vec<Vec<SeriesData>>> {
    on_tasks(streams.into_iter().map(collect_series)).await
}

/// Runs each future on its own task and gathers their outputs in order.
async fn on_tasks<T: Send + 'static>(
    futures: impl Iterator<Item = impl Future<Output = datafusion::error::Result<T>> + Send + 'static>,
) -> datafusion::error::Result<Vec<T>> {
    let tasks: Vec<_> = futures.map(tokio::spawn).collect();
    let mut out = Vec::with_capacity(tasks.len());
    for t in tasks {
        out.push(t.await.map_err(|e| DataFusionError::External(Box::new(e)))??);
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
        let mut d = vec![Distribution::SinglePartition; self.children.len()];
        if self.spec.streaming()
            && let Some(first) = d.first_mut()
        {
            *first = Distribution::UnspecifiedDistribution;
        }
        d
    }
    fn children(&self) -> Vec<&Arc<dyn ExecutionPlan>> {
        self.children.iter().collect()
    }
    engine::plan_without_expressions!();
    fn with_new_children(
        self: Arc<Self>,
        children: Vec<Arc<dyn ExecutionPlan>>,
    ) -> datafusion::error::Result<Arc<dyn ExecutionPlan>> {
        Ok(Arc::new(PromExec::new(self.spec.clone(), children, self.ctx.clone())))
    }
    engine::plan_metrics!(metrics);
    fn execute(
        &self,
        partition: usize,
        context: Arc<TaskContext>,
    ) -> datafusion::error::Result<SendableRecordBatchStream> {
        let partitioned = self.props.partitioning.partition_count() > 1;
        let main = match self.children.first() {
            Some(c) => Some(c.execute(if partitioned { partition } else { 0 }, context.clone())?),
            None => None,
        };
        // The other inputs are collected once, by whichever partition gets there first.
        let (shared, rest) = (self.params.clone(), self.children.iter().skip(1).cloned().collect::<Vec<_>>());
        let param_ctx = context.clone();
        let spec = self.spec.clone();
        let mut ctx = self.ctx.clone();
        ctx.ann = context.session_config().get_extension::<Annotations>();
        let baseline = BaselineMetrics::new(&self.metrics, partition);
        let schema = prom_schema();
        let fut = async move {
            let collect_params = async {
                let streams = rest.iter().map(|c| c.execute(0, param_ctx.clone())).collect::<Result<Vec<_>, _>>()?;
                collect_all(streams).await.map(Arc::new)
            };
            let params = async { shared.get_or_try_init(|| collect_params).await.cloned() };
            let out: futures::stream::BoxStream<'static, datafusion::error::Result<RecordBatch>> = match main {
                Some(main) if spec.streaming() => {
                    let params = params.await?;
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
                Some(mut main) if spec.folds() => {
                    let params = params.await?;
                    let mut acc = spec.accumulator(&params, &ctx).map_err(to_df)?;
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
                main if spec.takes_batches() => {
                    // Every input collected at the same time, each on its own task.
                    let mut streams: Vec<SendableRecordBatchStream> = main.into_iter().collect();
                    for c in &rest {
                        streams.push(c.execute(0, param_ctx.clone())?);
                    }
                    let inputs = on_tasks(streams.into_iter().map(|s| s.try_collect::<Vec<RecordBatch>>())).await?;
                    let timer = baseline.elapsed_compute().timer();
                    let rb = spec.eval_batches(&inputs, &ctx).map_err(to_df)?;
                    timer.done();
                    baseline.record_output(rb.num_rows());
                    futures::stream::once(async move { Ok(rb) }).boxed()
                }
                main => {
                    // The first input is collected while the others are.
                    let series = async {
                        match main {
                            Some(m) => tokio::spawn(collect_series(m))
                                .await
                                .map_err(|e| DataFusionError::External(Box::new(e)))?,
                            None => Ok(Vec::new()),
                        }
                    };
                    let (params, series) = futures::future::try_join(params, series).await?;
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
        Ok(record_stream(schema, stream))
    }
}
