//! Registration: the list of PromQL plan nodes ([`PromNode`]) and how DataFusion's physical
//! planner finds the execution plan of each.
//!
//! Adding a node, checked by the compiler at every step:
//!
//! 1. write its file (`plan/<node>.rs`): a spec type implementing [`NodeSpec`];
//! 2. add one line to the `prom_nodes!` list below: the [`PromNode`] variant and its spec type.
//!    Only a registered spec can be put into a plan (`PromLogical::plan` takes `impl Into<PromNode>`);
//! 3. add its arm to [`PromNode::execution_plan`]; that `match` has no wildcard, so a node
//!    without an execution arm does not compile.

use std::fmt;
use std::sync::Arc;

use async_trait::async_trait;
use datafusion::execution::context::QueryPlanner;
use datafusion::logical_expr::{LogicalPlan, UserDefinedLogicalNode};
use datafusion::physical_plan::ExecutionPlan;
use datafusion::physical_planner::{DefaultPhysicalPlanner, ExtensionPlanner, PhysicalPlanner};
use engine::SeriesSource;

use super::{
    EvalCtx, NodeSpec, PromExec, PromLogical, aggregate, binary, histogram, info, instant_fn, instant_select, label_fn,
    literal, partitions, range_func, series_scan, step_fn, subquery,
};

/// Declares [`PromNode`] with one variant per listed spec type, a `From` impl per spec, and the
/// node's name and EXPLAIN parameters (each spec's `NAME` and `fmt_params`).
macro_rules! prom_nodes {
    ($($(#[doc = $doc:literal])* $variant:ident($spec:ty),)+) => {
        /// Every PromQL plan node: the spec (parameters) of one operator. The one place nodes are
        /// registered (see the module docs).
        #[derive(Debug, Clone, PartialEq, Eq, Hash, PartialOrd)]
        pub(crate) enum PromNode {
            $($(#[doc = $doc])* $variant($spec),)+
        }

        $(impl From<$spec> for PromNode {
            fn from(spec: $spec) -> Self {
                PromNode::$variant(spec)
            }
        })+

        impl PromNode {
            /// The names of all registered nodes.
            #[cfg(test)]
            pub(crate) const NAMES: &'static [&'static str] = &[$(<$spec>::NAME,)+];

            /// The logical node name, e.g. `PromInstantSelect` (the physical node adds `Exec`).
            pub(crate) fn name(&self) -> &'static str {
                match self {
                    $(PromNode::$variant(_) => <$spec>::NAME,)+
                }
            }

            /// Writes the node's parameters for EXPLAIN.
            pub(crate) fn fmt_params(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                match self {
                    $(PromNode::$variant(s) => s.fmt_params(f),)+
                }
            }
        }
    };
}

prom_nodes! {
    /// The leaf reading a `SeriesSource` ([`series_scan`]).
    SeriesScan(series_scan::ScanSpec),
    /// Instant vector selector ([`instant_select`]).
    InstantSelect(instant_select::InstantSelectSpec),
    /// Number literal, `time()` ([`literal`]).
    Literal(literal::LiteralSpec),
    /// Range functions over windows ([`range_func`]).
    RangeFunc(range_func::RangeFuncSpec),
    /// Aggregations ([`aggregate`]).
    Aggregate(aggregate::AggregateSpec),
    /// Binary operators ([`binary`]).
    Binary(binary::BinarySpec),
    /// Per-sample functions ([`instant_fn`]).
    InstantFn(instant_fn::InstantFnSpec),
    /// `label_replace`, `label_join` ([`label_fn`]).
    LabelFn(label_fn::LabelFnSpec),
    /// Whole-vector functions per step ([`step_fn`]).
    StepFn(step_fn::StepFnSpec),
    /// Classic-histogram functions ([`histogram`]).
    Histogram(histogram::HistogramSpec),
    /// Subquery boundary ([`subquery`]).
    Subquery(subquery::SubquerySpec),
    /// `info()` ([`info`]).
    Info(info::InfoSpec),
}

impl PromNode {
    /// The execution plan of this node over `inputs`. No wildcard arm: a registered node without
    /// an execution plan does not compile.
    pub(crate) fn execution_plan(
        &self,
        inputs: &[Arc<dyn ExecutionPlan>],
        source: &Arc<dyn SeriesSource>,
        ctx: &EvalCtx,
    ) -> Arc<dyn ExecutionPlan> {
        /// A streaming node runs on each partition of its first input; every other input is
        /// merged back into one partition, in order.
        fn kernel<S: NodeSpec>(s: &S, inputs: &[Arc<dyn ExecutionPlan>], ctx: &EvalCtx) -> Arc<dyn ExecutionPlan> {
            let inputs = inputs
                .iter()
                .enumerate()
                .map(|(i, c)| if i == 0 && s.streaming() { c.clone() } else { partitions::merged(c.clone()) })
                .collect();
            Arc::new(PromExec::new(s.clone(), inputs, ctx.clone()))
        }
        match self {
            PromNode::SeriesScan(s) => {
                Arc::new(series_scan::SeriesScanExec::new(s.clone(), source.clone(), ctx.partitions))
            }
            PromNode::InstantSelect(s) => kernel(s, inputs, ctx),
            PromNode::Literal(s) => kernel(s, inputs, ctx),
            PromNode::RangeFunc(s) => kernel(s, inputs, ctx),
            PromNode::Aggregate(s) => kernel(s, inputs, ctx),
            PromNode::Binary(s) => kernel(s, inputs, ctx),
            PromNode::InstantFn(s) => kernel(s, inputs, ctx),
            PromNode::LabelFn(s) => kernel(s, inputs, ctx),
            PromNode::StepFn(s) => kernel(s, inputs, ctx),
            PromNode::Histogram(s) => kernel(s, inputs, ctx),
            PromNode::Subquery(s) => kernel(s, inputs, ctx),
            PromNode::Info(s) => kernel(s, inputs, ctx),
        }
    }
}

/// Turns Strata's logical PromQL nodes into their execution plans.
#[derive(Debug)]
pub(crate) struct PromExtensionPlanner {
    pub(crate) source: Arc<dyn SeriesSource>,
    pub(crate) ctx: EvalCtx,
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
        Ok(node
            .as_any()
            .downcast_ref::<PromLogical>()
            .map(|n| n.node.execution_plan(physical_inputs, &self.source, &self.ctx)))
    }
}

/// The session's query planner. A PromQL plan is a tree of [`PromLogical`] nodes only, so it is
/// lowered here directly, node by node, with [`PromNode::execution_plan`]: DataFusion's physical
/// planner would walk the same tree through its generic machinery (concurrent child planning,
/// invariant checks before and after, the physical optimizer's tree rewrites), which cost more
/// than the rest of planning a small query. What its rules did for these plans is done here:
/// every leaf is wrapped in a `CooperativeExec` (as `EnsureCooperative` does: scans yield to the
/// runtime, so a timeout can fire), and debug builds still run DataFusion's sanity check over
/// the result (every node's input distribution and order requirement is met). A plan holding
/// any other logical node goes to DataFusion's planner whole.
#[derive(Debug)]
pub(crate) struct PromQueryPlanner {
    pub(crate) ext: Arc<PromExtensionPlanner>,
}

impl PromQueryPlanner {
    /// The execution plan of `plan` when every node of it is a [`PromLogical`].
    fn lower(&self, plan: &LogicalPlan) -> Option<Arc<dyn ExecutionPlan>> {
        let LogicalPlan::Extension(e) = plan else { return None };
        let node = e.node.as_any().downcast_ref::<PromLogical>()?;
        let inputs = node.inputs.iter().map(|i| self.lower(i)).collect::<Option<Vec<_>>>()?;
        let exec = node.node.execution_plan(&inputs, &self.ext.source, &self.ext.ctx);
        if exec.children().is_empty() {
            return Some(Arc::new(datafusion::physical_plan::coop::CooperativeExec::new(exec)));
        }
        Some(exec)
    }
}

#[async_trait]
impl QueryPlanner for PromQueryPlanner {
    async fn create_physical_plan(
        &self,
        logical_plan: &LogicalPlan,
        session_state: &dyn datafusion::catalog::Session,
    ) -> datafusion::error::Result<Arc<dyn ExecutionPlan>> {
        let Some(plan) = self.lower(logical_plan) else {
            let planner = DefaultPhysicalPlanner::with_extension_planners(vec![self.ext.clone()]);
            return planner.create_physical_plan(logical_plan, session_state).await;
        };
        if cfg!(debug_assertions) {
            use datafusion::physical_optimizer::PhysicalOptimizerRule;
            let check = datafusion::physical_optimizer::sanity_checker::SanityCheckPlan::new();
            return check.optimize(plan, session_state.config_options());
        }
        Ok(plan)
    }
}

#[cfg(test)]
#[allow(clippy::unwrap_used, clippy::expect_used)]
mod tests {
    use super::*;

    /// Every registered node shows in the golden EXPLAIN snapshots of
    /// `tests/explain_snapshots.rs`, logically and physically.
    #[test]
    fn every_node_has_an_explain_snapshot() {
        let dir = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/snapshots");
        let mut all = String::new();
        for e in std::fs::read_dir(&dir).unwrap() {
            let p = e.unwrap().path();
            if p.file_name().is_some_and(|n| n.to_string_lossy().starts_with("explain_snapshots__")) {
                all.push_str(&std::fs::read_to_string(&p).unwrap());
            }
        }
        for name in PromNode::NAMES {
            assert!(
                all.contains(&format!("\n{name}: ")) || all.contains(&format!(" {name}: ")),
                "no snapshot shows {name}"
            );
            assert!(all.contains(&format!("{name}Exec: ")), "no snapshot shows {name}Exec");
        }
    }
}
