//! What every DataFusion node and table of Strata's own has in common, in one place: the plan
//! properties of a bounded node emitting batches as it goes, the stream wrapper, and macros for
//! the trait methods whose answer is the same for all of them (no physical expressions; a leaf
//! has no children and is rebuilt as itself; the metrics set; a base table pruning with every
//! filter inexactly).
//!
//! Used by the PromQL plan nodes (`query`), the head scan of `strata flight` (`flight`) and the
//! bucket tables of [`crate::sql`]. The macros expand inside an `impl ExecutionPlan` or
//! `impl TableProvider` block and name DataFusion through this crate, so the caller needs no
//! imports for them.

use std::sync::Arc;

use arrow::datatypes::SchemaRef;
use arrow::record_batch::RecordBatch;
use datafusion::execution::SendableRecordBatchStream;
use datafusion::physical_expr::EquivalenceProperties;
use datafusion::physical_plan::execution_plan::{Boundedness, EmissionType};
use datafusion::physical_plan::stream::RecordBatchStreamAdapter;
use datafusion::physical_plan::{Partitioning, PlanProperties};
use futures::Stream;

#[doc(hidden)]
pub use datafusion as __datafusion;

/// The properties of a bounded node with `partitions` partitions that emits each batch of
/// `schema` as soon as it has it.
pub fn incremental_properties(schema: SchemaRef, partitions: usize) -> Arc<PlanProperties> {
    Arc::new(PlanProperties::new(
        EquivalenceProperties::new(schema),
        Partitioning::UnknownPartitioning(partitions),
        EmissionType::Incremental,
        Boundedness::Bounded,
    ))
}

/// `stream` as the record batch stream of one partition of a node whose output is `schema`.
pub fn record_stream<S>(schema: SchemaRef, stream: S) -> SendableRecordBatchStream
where
    S: Stream<Item = datafusion::error::Result<RecordBatch>> + Send + 'static,
{
    Box::pin(RecordBatchStreamAdapter::new(schema, stream))
}

/// `ExecutionPlan::apply_expressions` of a node that evaluates no physical expression: nothing
/// to visit.
#[macro_export]
macro_rules! plan_without_expressions {
    () => {
        fn apply_expressions(
            &self,
            _f: &mut dyn FnMut(
                &::std::sync::Arc<dyn $crate::exec::__datafusion::physical_expr::PhysicalExpr>,
            ) -> $crate::exec::__datafusion::error::Result<
                $crate::exec::__datafusion::common::tree_node::TreeNodeRecursion,
            >,
        ) -> $crate::exec::__datafusion::error::Result<$crate::exec::__datafusion::common::tree_node::TreeNodeRecursion>
        {
            Ok($crate::exec::__datafusion::common::tree_node::TreeNodeRecursion::Continue)
        }
    };
}

/// The `ExecutionPlan` methods of a leaf without expressions whose properties are in field
/// `$props` (an `Arc<PlanProperties>`): no children, nothing to visit, and rebuilt as itself
/// (DataFusion only ever gives a leaf its own, empty, children back).
#[macro_export]
macro_rules! leaf_plan {
    ($props:ident) => {
        fn properties(&self) -> &::std::sync::Arc<$crate::exec::__datafusion::physical_plan::PlanProperties> {
            &self.$props
        }
        fn children(&self) -> Vec<&::std::sync::Arc<dyn $crate::exec::__datafusion::physical_plan::ExecutionPlan>> {
            vec![]
        }
        $crate::plan_without_expressions!();
        fn with_new_children(
            self: ::std::sync::Arc<Self>,
            _children: Vec<::std::sync::Arc<dyn $crate::exec::__datafusion::physical_plan::ExecutionPlan>>,
        ) -> $crate::exec::__datafusion::error::Result<
            ::std::sync::Arc<dyn $crate::exec::__datafusion::physical_plan::ExecutionPlan>,
        > {
            Ok(self)
        }
    };
}

/// `ExecutionPlan::metrics` of a node whose metrics are in field `$metrics` (an
/// `ExecutionPlanMetricsSet`).
#[macro_export]
macro_rules! plan_metrics {
    ($metrics:ident) => {
        fn metrics(&self) -> Option<$crate::exec::__datafusion::physical_plan::metrics::MetricsSet> {
            Some(self.$metrics.clone_inner())
        }
    };
}

/// The `TableProvider` methods of a base table whose scan prunes with every filter it is given
/// but does not promise to apply them exactly (DataFusion filters its rows again).
#[macro_export]
macro_rules! inexact_base_table {
    () => {
        fn table_type(&self) -> $crate::exec::__datafusion::datasource::TableType {
            $crate::exec::__datafusion::datasource::TableType::Base
        }

        fn supports_filters_pushdown(
            &self,
            filters: &[&$crate::exec::__datafusion::logical_expr::Expr],
        ) -> $crate::exec::__datafusion::error::Result<
            Vec<$crate::exec::__datafusion::logical_expr::TableProviderFilterPushDown>,
        > {
            Ok(vec![$crate::exec::__datafusion::logical_expr::TableProviderFilterPushDown::Inexact; filters.len()])
        }
    };
}
