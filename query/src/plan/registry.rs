//! Registration: how DataFusion's physical planner finds the execution plan of each PromQL
//! logical node.

use std::sync::Arc;

use async_trait::async_trait;
use datafusion::execution::context::QueryPlanner;
use datafusion::logical_expr::{LogicalPlan, UserDefinedLogicalNode};
use datafusion::physical_plan::ExecutionPlan;
use datafusion::physical_planner::{DefaultPhysicalPlanner, ExtensionPlanner, PhysicalPlanner};
use engine::SeriesSource;

use super::{
    EvalCtx, NodeSpec, PromExec, PromLogical, aggregate, binary, histogram, info, instant_fn, instant_select, label_fn,
    literal, range_func, series_scan, step_fn, subquery,
};

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
