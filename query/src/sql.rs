//! PromQL inside SQL: the table function `promql('expr', start, end, step)`, one row per result
//! point, so SQL can join, filter and aggregate PromQL results.
//!
//! ```text
//!   SELECT labels['instance'], max(value)
//!   FROM promql('rate(http_requests_total[5m])', now() - interval '1 hour', now(), interval '1 minute')
//!   GROUP BY 1
//!
//!   promql(...) ──► PromqlTable ──scan: Engine::range_query──► labels Map<Utf8,Utf8> | timestamp | value
//! ```
//!
//! `start` and `end` are timestamps (or RFC3339 strings, or integer milliseconds); `step` is an
//! interval, a Prometheus duration string (`'30s'`) or a number of seconds. Arguments must be
//! constant (`now()` counts: it is fixed at planning). The query runs when the table is scanned.
//! The Flight SQL server registers it from the root wiring (`flight` does not plan PromQL).

use std::sync::Arc;

use arrow::array::{
    Array, ArrayRef, Float64Builder, MapBuilder, MapFieldNames, RecordBatch, StringBuilder, TimestampMillisecondBuilder,
};
use arrow::datatypes::{DataType, Field, Schema, SchemaRef, TimeUnit};
use async_trait::async_trait;
use datafusion::catalog::{Session, TableFunctionArgs, TableFunctionImpl, TableProvider};
use datafusion::common::{DFSchema, ScalarValue, plan_err};
use datafusion::datasource::TableType;
use datafusion::datasource::memory::MemorySourceConfig;
use datafusion::error::{DataFusionError, Result as DfResult};
use datafusion::logical_expr::Expr;
use datafusion::physical_plan::ExecutionPlan;
use engine::{Labels, SeriesSource};

use crate::engine::{Engine, EngineOptions};
use crate::value::Value;

/// The `promql` table function over `source` (PromQL defaults: 5m lookback, 50M samples, 2m
/// timeout).
pub fn promql_table_function(source: Arc<dyn SeriesSource>) -> Arc<dyn TableFunctionImpl> {
    Arc::new(PromqlFunction { engine: Engine::new(source, EngineOptions::default()) })
}

#[derive(Debug)]
struct PromqlFunction {
    engine: Engine,
}

fn labels_builder() -> MapBuilder<StringBuilder, StringBuilder> {
    let names = MapFieldNames { entry: "entries".into(), key: "key".into(), value: "value".into() };
    MapBuilder::new(Some(names), StringBuilder::new(), StringBuilder::new())
}

/// `(labels, timestamp, value)`.
fn promql_schema() -> SchemaRef {
    let labels = labels_builder().finish().data_type().clone();
    Arc::new(Schema::new(vec![
        Field::new("labels", labels, false),
        Field::new("timestamp", DataType::Timestamp(TimeUnit::Millisecond, Some("UTC".into())), false),
        Field::new("value", DataType::Float64, false),
    ]))
}

/// Evaluates a constant argument.
fn constant(session: &dyn Session, e: &Expr, what: &str) -> DfResult<ScalarValue> {
    let schema = DFSchema::empty();
    let phys = session.create_physical_expr(e.clone(), &schema)?;
    let batch = RecordBatch::try_new_with_options(
        Arc::new(Schema::empty()),
        vec![],
        &arrow::array::RecordBatchOptions::new().with_row_count(Some(1)),
    )?;
    match phys.evaluate(&batch)? {
        datafusion::logical_expr::ColumnarValue::Scalar(s) => Ok(s),
        datafusion::logical_expr::ColumnarValue::Array(a) if a.len() == 1 => ScalarValue::try_from_array(&a, 0),
        _ => plan_err!("promql(): {what} must be a constant, got {e}"),
    }
}

fn time_ms(v: ScalarValue, what: &str) -> DfResult<i64> {
    let ts = v.cast_to(&DataType::Timestamp(TimeUnit::Millisecond, None))?;
    match ts {
        ScalarValue::TimestampMillisecond(Some(ms), _) => Ok(ms),
        other => plan_err!("promql(): {what} must be a timestamp, got {other}"),
    }
}

fn step_ms(v: ScalarValue) -> DfResult<i64> {
    let ms = match v {
        ScalarValue::IntervalMonthDayNano(Some(i)) if i.months == 0 => {
            i64::from(i.days) * 86_400_000 + i.nanoseconds / 1_000_000
        }
        ScalarValue::IntervalDayTime(Some(i)) => i64::from(i.days) * 86_400_000 + i64::from(i.milliseconds),
        ScalarValue::Utf8(Some(s)) | ScalarValue::LargeUtf8(Some(s)) | ScalarValue::Utf8View(Some(s)) => {
            crate::api::params::parse_duration(&s)
                .map_err(|e| DataFusionError::Plan(format!("promql(): step {s:?}: {e}")))?
        }
        ScalarValue::Int64(Some(s)) => s.saturating_mul(1000),
        ScalarValue::Float64(Some(s)) => (s * 1000.0) as i64,
        other => return plan_err!("promql(): step must be an interval, a duration string or seconds, got {other}"),
    };
    if ms <= 0 {
        return plan_err!("promql(): step must be positive");
    }
    Ok(ms)
}

impl TableFunctionImpl for PromqlFunction {
    fn call_with_args(&self, args: TableFunctionArgs) -> DfResult<Arc<dyn TableProvider>> {
        let exprs = args.exprs();
        let session = args.session();
        let [expr, start, end, step] = exprs else {
            return plan_err!("promql() takes 4 arguments ('expr', start, end, step), got {}", exprs.len());
        };
        let expr = match constant(session, expr, "the expression")? {
            ScalarValue::Utf8(Some(s)) | ScalarValue::LargeUtf8(Some(s)) | ScalarValue::Utf8View(Some(s)) => s,
            other => return plan_err!("promql(): the expression must be a string, got {other}"),
        };
        let start = time_ms(constant(session, start, "start")?, "start")?;
        let end = time_ms(constant(session, end, "end")?, "end")?;
        let step = step_ms(constant(session, step, "step")?)?;
        Ok(Arc::new(PromqlTable { engine: self.engine.clone(), expr, start, end, step }))
    }
}

/// One `promql(...)` call: the query runs at scan time.
#[derive(Debug)]
struct PromqlTable {
    engine: Engine,
    expr: String,
    start: i64,
    end: i64,
    step: i64,
}

fn append_labels(b: &mut MapBuilder<StringBuilder, StringBuilder>, l: &Labels) -> DfResult<()> {
    for label in l.iter() {
        b.keys().append_value(&label.name);
        b.values().append_value(&label.value);
    }
    b.append(true)?;
    Ok(())
}

#[async_trait]
impl TableProvider for PromqlTable {
    fn schema(&self) -> SchemaRef {
        promql_schema()
    }

    fn table_type(&self) -> TableType {
        TableType::Temporary
    }

    async fn scan(
        &self,
        _state: &dyn Session,
        projection: Option<&Vec<usize>>,
        _filters: &[Expr],
        _limit: Option<usize>,
    ) -> DfResult<Arc<dyn ExecutionPlan>> {
        let result = self
            .engine
            .range_query(&self.expr, self.start, self.end, self.step)
            .await
            .map_err(|e| DataFusionError::Execution(format!("promql({:?}): {e}", self.expr)))?;
        let (mut labels, mut ts, mut vs) =
            (labels_builder(), TimestampMillisecondBuilder::new().with_timezone("UTC"), Float64Builder::new());
        match result.value {
            Value::Matrix(series) => {
                for s in &series {
                    for (t, v) in &s.points {
                        append_labels(&mut labels, &s.labels)?;
                        ts.append_value(*t);
                        vs.append_value(*v);
                    }
                }
            }
            Value::Vector(samples) => {
                for s in &samples {
                    append_labels(&mut labels, &s.labels)?;
                    ts.append_value(s.t);
                    vs.append_value(s.v);
                }
            }
            Value::Scalar { t, v } => {
                append_labels(&mut labels, &Labels::default())?;
                ts.append_value(t);
                vs.append_value(v);
            }
            Value::String { .. } => return plan_err!("promql({:?}): a string result has no rows", self.expr),
        }
        let schema = promql_schema();
        let columns: Vec<ArrayRef> = vec![Arc::new(labels.finish()), Arc::new(ts.finish()), Arc::new(vs.finish())];
        let batch = RecordBatch::try_new(Arc::clone(&schema), columns)?;
        Ok(MemorySourceConfig::try_new_exec(&[vec![batch]], schema, projection.cloned())?)
    }
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]
    use super::*;
    use arrow::array::AsArray;
    use arrow::datatypes::Float64Type;
    use datafusion::prelude::SessionContext;

    #[tokio::test]
    async fn promql_rows_join_sql() {
        let src = Arc::new(engine::MemSource::new());
        let ts: Vec<i64> = (0..=20).map(|k| k * 60_000).collect();
        for (inst, slope) in [("a", 1.0), ("b", 3.0)] {
            let vs: Vec<f64> = ts.iter().map(|t| slope * (*t as f64) / 1000.0).collect();
            src.add(Labels::from_pairs([("__name__", "c_total"), ("instance", inst)]), &ts, &vs);
        }
        let ctx = SessionContext::new();
        ctx.register_udtf("promql", promql_table_function(src));
        let q = "SELECT labels['instance'] AS i, count(*) AS n, avg(value) AS v \
                 FROM promql('rate(c_total[5m])', to_timestamp_millis(600000), to_timestamp_millis(1200000), interval '1 minute') \
                 GROUP BY 1 ORDER BY 1";
        let b = ctx.sql(q).await.unwrap().collect().await.unwrap();
        assert_eq!(b[0].num_rows(), 2);
        // rate of a counter rising `slope` per second is `slope`; 11 steps from 600 s to 1200 s.
        assert_eq!(b[0].column(1).as_primitive::<arrow::datatypes::Int64Type>().value(0), 11);
        let v = b[0].column(2).as_primitive::<Float64Type>();
        assert!((v.value(0) - 1.0).abs() < 1e-9 && (v.value(1) - 3.0).abs() < 1e-9, "{v:?}");
        // Step as a duration string, a bad expression as a clear error.
        let q = "SELECT count(*) FROM promql('c_total', to_timestamp_millis(0), to_timestamp_millis(1200000), '5m')";
        let b = ctx.sql(q).await.unwrap().collect().await.unwrap();
        assert_eq!(b[0].column(0).as_primitive::<arrow::datatypes::Int64Type>().value(0), 10);
        let e =
            ctx.sql("SELECT * FROM promql('rate(', now(), now(), '1m')").await.unwrap().collect().await.unwrap_err();
        assert!(e.to_string().contains("promql(\"rate(\")"), "{e}");
    }
}
