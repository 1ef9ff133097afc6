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
//! - partial aggregation ([`NodeSpec::accumulator`]): each batch is folded into an
//!   [`Accumulator`] that keeps only what the output needs; the output is emitted at the end;
//! - collecting (the default): the whole first input is decoded into [`SeriesData`] and handed to
//!   [`NodeSpec::eval`] once.
//!
//! The other inputs (scalar parameters) are always collected first.

use std::cmp::Ordering;
use std::fmt;
use std::hash::{Hash, Hasher};
use std::sync::Arc;

use arrow::array::RecordBatch;
use datafusion::common::DFSchemaRef;
use datafusion::common::tree_node::TreeNodeRecursion;
use datafusion::error::DataFusionError;
use datafusion::execution::{SendableRecordBatchStream, TaskContext};
use datafusion::logical_expr::{Expr, LogicalPlan, UserDefinedLogicalNodeCore};
use datafusion::physical_expr::{EquivalenceProperties, PhysicalExpr};
use datafusion::physical_plan::execution_plan::{Boundedness, EmissionType};
use datafusion::physical_plan::metrics::{BaselineMetrics, ExecutionPlanMetricsSet, MetricsSet};
use datafusion::physical_plan::stream::RecordBatchStreamAdapter;
use datafusion::physical_plan::{
    DisplayAs, DisplayFormatType, Distribution, ExecutionPlan, Partitioning, PlanProperties,
};
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
    /// The execution plan of `spec` over `children`.
    pub(crate) fn new(spec: S, children: Vec<Arc<dyn ExecutionPlan>>, ctx: EvalCtx) -> Self {
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
