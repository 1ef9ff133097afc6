//! The PromQL [`Engine`]: parses an expression, plans it into a DataFusion logical plan of
//! Strata's extension nodes, runs the physical plan against the engine's one `SessionState`
//! (built once, never cloned per query) and turns the output batches into a [`QueryResult`].

use std::sync::Arc;
use std::time::Duration;

use std::collections::HashMap;

use arrow::array::RecordBatch;
use datafusion::execution::TaskContext;
use datafusion::execution::session_state::{SessionState, SessionStateBuilder};
use datafusion::physical_optimizer::PhysicalOptimizerRule;
use datafusion::physical_optimizer::ensure_coop::EnsureCooperative;
use datafusion::physical_optimizer::sanity_checker::SanityCheckPlan;
use datafusion::physical_plan::{ExecutionPlan, collect, displayable, execute_stream};
use datafusion::prelude::SessionConfig;
use engine::SeriesSource;
use futures::StreamExt;
use promql_parser::parser::{self, value::ValueType};

use crate::error::{Error, Result};
use crate::plan::partitions::merged;
use crate::plan::{
    Annotations, BatchView, EvalCtx, Grid, PromExtensionPlanner, PromQueryPlanner, SameLabelsMerge, decode_labels,
    encode_labels, has_drop_mark_bytes, remove_marked_name,
};
use crate::planner::Planner;
use crate::value::{QueryResult, Sample, Series, Value};

/// Engine settings, with Prometheus's defaults.
#[derive(Debug, Clone)]
pub struct EngineOptions {
    /// How far back an instant selector looks for a sample (ms); default 5 minutes.
    pub lookback_delta_ms: i64,
    /// Most samples a query may hold (Prometheus `--query.max-samples`); default 50,000,000.
    pub max_samples: usize,
    /// Longest a query may run (Prometheus `--query.timeout`); default 2 minutes.
    pub timeout: Duration,
    /// Allow the functions and aggregations Prometheus marks experimental; default off.
    pub enable_experimental_functions: bool,
    /// Delayed `__name__` removal (Prometheus's `promql-delayed-name-removal` feature); default
    /// off. Name-dropping operators only mark their output series and the metric name is removed
    /// from the marked series when the result is built, so `label_replace`/`label_join` can still
    /// read or keep it and `by (__name__)` still sees it.
    pub enable_delayed_name_removal: bool,
    /// Use the samples' start timestamps where the source has them (Prometheus's
    /// `use-start-timestamps`, 3.12); default off. `rate`, `increase`, `irate` and `resets` then
    /// also see a counter reset where a start timestamp says one happened, and `rate`/`increase`
    /// count from a zero at the first sample's start time instead of extrapolating to the left.
    pub use_start_timestamps: bool,
    /// Partitions a query's series are dealt out to, each run on its own task, so that a query
    /// over many series uses several cores; default: the machine's cores. 1 runs every query
    /// on one task.
    pub partitions: usize,
    /// Coarsest downsampled resolution (ms) the query may read (Thanos's `max_source_resolution`;
    /// 0 = raw data only, the default). Selectors ask their sources for the aggregates their
    /// function needs ([`engine::aggr::aggregates_for_func`]); `resets()` always reads raw data.
    pub max_source_resolution_ms: i64,
}

impl Default for EngineOptions {
    fn default() -> Self {
        EngineOptions {
            lookback_delta_ms: 300_000,
            max_samples: 50_000_000,
            timeout: Duration::from_secs(120),
            enable_experimental_functions: false,
            enable_delayed_name_removal: false,
            use_start_timestamps: false,
            partitions: crate::plan::partitions::default_partitions(),
            max_source_resolution_ms: 0,
        }
    }
}

struct Inner {
    opts: EngineOptions,
    state: SessionState,
    parsed: ParseCache,
}

/// Query texts up to this long are kept parsed ...
const PARSE_CACHE_TEXT: usize = 4 << 10;
/// ... this many of them at most (then the cache starts over).
const PARSE_CACHE_ENTRIES: usize = 1024;

/// Query texts already parsed (and type-checked), so that a dashboard's expressions, sent again
/// with every refresh, skip promql-parser: for a small query its lexer and LR parser cost about as
/// much as planning it. Only texts that parsed are kept; bounded by [`PARSE_CACHE_TEXT`] and
/// [`PARSE_CACHE_ENTRIES`] (at most ~4 MiB of text).
#[derive(Default)]
struct ParseCache {
    map: std::sync::Mutex<HashMap<String, parser::Expr>>,
}

impl ParseCache {
    fn get(&self, text: &str) -> Option<parser::Expr> {
        self.map.lock().unwrap_or_else(|p| p.into_inner()).get(text).cloned()
    }

    fn put(&self, text: &str, ast: &parser::Expr) {
        if text.len() > PARSE_CACHE_TEXT {
            return;
        }
        let mut map = self.map.lock().unwrap_or_else(|p| p.into_inner());
        if map.len() >= PARSE_CACHE_ENTRIES {
            map.clear();
        }
        map.insert(text.to_string(), ast.clone());
    }
}

impl std::fmt::Debug for Inner {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Engine").field("opts", &self.opts).finish_non_exhaustive()
    }
}

/// A PromQL engine over one series source. Cheap to clone.
///
/// ```
/// # tokio::runtime::Runtime::new().unwrap().block_on(async {
/// use std::sync::Arc;
/// let src = Arc::new(engine::MemSource::new());
/// src.add(engine::Labels::from_pairs([("__name__", "up"), ("job", "a")]), &[0, 60_000], &[1.0, 0.0]);
/// let e = query::Engine::new(src, query::EngineOptions::default());
/// let r = e.instant_query("up * 2", 60_000).await.unwrap();
/// let query::Value::Vector(v) = r.value else { panic!() };
/// assert_eq!((v.len(), v[0].v), (1, 0.0));
/// # });
/// ```
#[derive(Debug, Clone)]
pub struct Engine {
    inner: Arc<Inner>,
    /// Read instead of the source the engine was built with (see [`Engine::with_source`]).
    source: Option<Arc<dyn SeriesSource>>,
}

/// Default resolution of subqueries without a step (`x[5m:]`), as Prometheus's default
/// evaluation interval.
const DEFAULT_SUBQUERY_STEP_MS: i64 = 60_000;

impl Engine {
    /// An engine reading from `source`.
    pub fn new(source: Arc<dyn SeriesSource>, opts: EngineOptions) -> Self {
        let mut ctx = EvalCtx::new(opts.max_samples);
        ctx.delayed_name_removal = opts.enable_delayed_name_removal;
        ctx.partitions = opts.partitions.max(1);
        let ext = Arc::new(PromExtensionPlanner { source, ctx });
        let cfg = SessionConfig::new().with_target_partitions(1);
        // PromQL plans are trees of Strata's extension nodes only, which DataFusion's logical
        // analyzer and optimizer rules cannot rewrite: running them is pure per-query overhead.
        // They are lowered by `PromQueryPlanner` itself, which does what the two
        // physical rules kept here do (leaves yield to the runtime, so a timeout can fire; debug
        // builds check the plan); the rules serve a plan that falls back to DataFusion's planner.
        // Every node wants its inputs in one partition or merges them itself, so no repartition
        // or sort is ever inserted; DataFusion's join, aggregate, limit, filter, window and
        // projection rewrites have nothing to act on.
        let physical_rules: Vec<Arc<dyn PhysicalOptimizerRule + Send + Sync>> =
            vec![Arc::new(EnsureCooperative::new()), Arc::new(SanityCheckPlan::new())];
        let state = SessionStateBuilder::new()
            .with_config(cfg)
            .with_analyzer_rules(vec![])
            .with_optimizer_rules(vec![])
            .with_physical_optimizer_rules(physical_rules)
            .with_query_planner(Arc::new(PromQueryPlanner { ext }))
            .build();
        Engine { inner: Arc::new(Inner { opts, state, parsed: ParseCache::default() }), source: None }
    }

    /// This engine reading `source` instead of the source it was built with: same settings and
    /// session, nothing rebuilt (the querier gives each request its own view of its sources).
    pub fn with_source(&self, source: Arc<dyn SeriesSource>) -> Engine {
        Engine { inner: Arc::clone(&self.inner), source: Some(source) }
    }

    /// A task context for one query: the engine's settings plus `ann`, which the plan's nodes
    /// report annotations to. PromQL operators look no functions up by name, so the context gets
    /// no function registries (copying them cost more than the rest of a small query's setup).
    fn task_ctx(&self, ann: Option<Arc<Annotations>>) -> Arc<TaskContext> {
        let state = &self.inner.state;
        let mut cfg = state.config().clone();
        if let Some(ann) = ann {
            cfg.set_extension(ann);
        }
        if let Some(src) = &self.source {
            cfg.set_extension(Arc::new(crate::plan::series_scan::ScanSource(Arc::clone(src))));
        }
        Arc::new(TaskContext::new(
            None,
            state.session_id().to_string(),
            cfg,
            HashMap::new(),
            HashMap::new(),
            HashMap::new(),
            HashMap::new(),
            Arc::clone(state.runtime_env()),
        ))
    }

    /// Evaluates `expr` at `t_ms`.
    pub async fn instant_query(&self, expr: &str, t_ms: i64) -> Result<QueryResult> {
        self.run(expr, t_ms, t_ms, 1, false).await
    }

    /// Evaluates `expr` at every step from `start_ms` to `end_ms`; the result is a matrix.
    pub async fn range_query(&self, expr: &str, start_ms: i64, end_ms: i64, step_ms: i64) -> Result<QueryResult> {
        if step_ms <= 0 {
            return Err(Error::BadData(
                "zero or negative query resolution step widths are not accepted. Try a positive integer".into(),
            ));
        }
        if end_ms < start_ms {
            return Err(Error::BadData("end timestamp must not be before start time".into()));
        }
        self.run(expr, start_ms, end_ms, step_ms, true).await
    }

    /// Logical and physical plan text; with `analyze`, runs the query and includes per-operator
    /// metrics. `step_ms` <= 0 or `start_ms == end_ms` plans an instant query.
    pub async fn explain(&self, expr: &str, start_ms: i64, end_ms: i64, step_ms: i64, analyze: bool) -> Result<String> {
        let ast = self.parse(expr)?;
        crate::planner::check_label_name_literals(expr)?;
        let is_range = start_ms != end_ms && step_ms > 0;
        let grid = Grid::new(start_ms, end_ms, if is_range { step_ms } else { 1 });
        let plan = self.planner(start_ms, end_ms, if is_range { step_ms } else { 0 }).plan_top(&ast, grid)?;
        let state = &self.inner.state;
        let optimized = state.optimize(&plan)?;
        let physical = merged(state.query_planner().create_physical_plan(&optimized, state).await?);
        let mut out = String::new();
        out.push_str("logical plan:\n");
        out.push_str(&optimized.display_indent().to_string());
        out.push_str("\nphysical plan:\n");
        if analyze {
            self.execute(physical.clone()).await?;
            out.push_str(&displayable(physical.as_ref()).indent(true).to_string());
            out.push_str("\nmetrics:\n");
            out.push_str(
                &datafusion::physical_plan::display::DisplayableExecutionPlan::with_metrics(physical.as_ref())
                    .indent(true)
                    .to_string(),
            );
        } else {
            out.push_str(&displayable(physical.as_ref()).indent(true).to_string());
        }
        Ok(out)
    }

    /// Parses and type-checks `expr` (`bad_data` errors).
    fn parse(&self, expr: &str) -> Result<parser::Expr> {
        if let Some(ast) = self.inner.parsed.get(expr) {
            return Ok(ast);
        }
        let ast = crate::planner::parse(expr).map_err(Error::BadData)?;
        crate::planner::check_experimental(&ast, self.inner.opts.enable_experimental_functions)?;
        self.inner.parsed.put(expr, &ast);
        Ok(ast)
    }

    fn planner(&self, start: i64, end: i64, step: i64) -> Planner {
        Planner {
            lookback: self.inner.opts.lookback_delta_ms,
            query_start: start,
            query_end: end,
            query_step: step,
            default_subquery_step: DEFAULT_SUBQUERY_STEP_MS,
            use_start_timestamps: self.inner.opts.use_start_timestamps,
            max_source_resolution: self.inner.opts.max_source_resolution_ms,
            enclosing_func: None,
        }
    }

    async fn execute(&self, physical: Arc<dyn ExecutionPlan>) -> Result<Vec<RecordBatch>> {
        self.execute_in(physical, self.task_ctx(None)).await
    }

    async fn execute_in(&self, physical: Arc<dyn ExecutionPlan>, task: Arc<TaskContext>) -> Result<Vec<RecordBatch>> {
        match tokio::time::timeout(self.inner.opts.timeout, collect(physical, task)).await {
            Ok(r) => Ok(r?),
            Err(_) => Err(Error::Timeout("query timed out in query execution".into())),
        }
    }

    async fn run(&self, expr: &str, start: i64, end: i64, step: i64, is_range: bool) -> Result<QueryResult> {
        let ast = self.parse(expr)?;
        let vt = ast.value_type();
        if is_range && !matches!(vt, ValueType::Scalar | ValueType::Vector) {
            return Err(Error::BadData(format!(
                "invalid expression type \"{}\" for range query, must be Scalar or instant Vector",
                type_name(vt)
            )));
        }
        // Evaluation errors come after every parse and type error, as in Prometheus.
        crate::planner::check_label_name_literals(expr)?;
        let grid = Grid::new(start, end, step);
        let planner = self.planner(start, end, if is_range { step } else { 0 });
        if let Some(s) = planner.top_string(&ast) {
            return Ok(QueryResult { value: Value::String { t: start, v: s }, warnings: vec![], infos: vec![] });
        }
        let plan = planner.plan_top(&ast, grid)?;
        let ann = Arc::new(Annotations::default());
        // The logical analyzer and optimizer have no rules (see `Engine::new`): plan physically
        // straight away.
        let state = &self.inner.state;
        let physical = merged(state.query_planner().create_physical_plan(&plan, state).await?);
        // Output batches are folded into series one by one and dropped, so the result is not held
        // twice (as batches and as series) at its peak.
        let mut collector =
            SeriesCollector { delayed_name_removal: self.inner.opts.enable_delayed_name_removal, ..Default::default() };
        let task = self.task_ctx(Some(Arc::clone(&ann)));
        let fold = async {
            let mut stream = execute_stream(physical, task)?;
            while let Some(b) = stream.next().await {
                collector.add(&b?)?;
            }
            Ok::<(), Error>(())
        };
        match tokio::time::timeout(self.inner.opts.timeout, fold).await {
            Ok(r) => r?,
            Err(_) => return Err(Error::Timeout("query timed out in query execution".into())),
        }
        let (warnings, infos) = ann.take();
        let mut warnings = crate::planner::position_annotations(expr, warnings);
        let infos = crate::planner::position_annotations(expr, infos);
        if is_range && uses_sort(&ast) {
            warnings.push(format!(
                "PromQL warning: sort is ineffective for range queries since results are always ordered by labels{}",
                sort_position(expr)
            ));
        }
        let series = collector.finish()?;
        let value = match (is_range, vt) {
            (false, ValueType::Scalar) => {
                let v = series.first().and_then(|s| s.points.first()).map_or(f64::NAN, |p| p.1);
                Value::Scalar { t: start, v }
            }
            (false, ValueType::Vector) => Value::Vector(
                series
                    .into_iter()
                    .filter_map(|s| {
                        let v = s.points.first()?.1;
                        Some(Sample { labels: s.labels, t: start, v })
                    })
                    .collect(),
            ),
            _ => {
                let mut m = series;
                m.sort_by(|a, b| a.labels.cmp(&b.labels));
                Value::Matrix(m)
            }
        };
        Ok(QueryResult { value, warnings, infos })
    }
}

/// Folds the plan's output batches into result series: rows of one label set (a run of equal
/// dictionary keys) become one series; the same label set in several batches is merged by
/// [`SameLabelsMerge`] (two points of one label set at the same time are Prometheus's "same
/// labelset" error).
///
/// With delayed name removal, this is where marked series lose their metric name (see
/// `plan::DROP_NAME_MARK`); series that end up with one label set are merged the same way.
#[derive(Default)]
struct SeriesCollector {
    merge: SameLabelsMerge,
    delayed_name_removal: bool,
}

impl SeriesCollector {
    fn add(&mut self, b: &RecordBatch) -> Result<()> {
        for series in BatchView::new(b)?.series() {
            self.merge.insert(series.labels, series.ts.iter().copied().zip(series.vs.iter().copied()));
        }
        Ok(())
    }

    fn finish(mut self) -> Result<Vec<Series>> {
        if self.delayed_name_removal && self.merge.keys().any(has_drop_mark_bytes) {
            self.remove_marked_names()?;
        }
        let out = self.merge.finish()?;
        out.into_iter().map(|(key, points)| Ok(Series { labels: decode_labels(&key)?, points })).collect()
    }

    /// Removes the metric name from the series marked for it and merges the series that then
    /// share a label set (in first-seen order).
    fn remove_marked_names(&mut self) -> Result<()> {
        for (key, points) in self.merge.take() {
            if has_drop_mark_bytes(&key) {
                let mut l = decode_labels(&key)?;
                remove_marked_name(&mut l);
                let mut k = Vec::with_capacity(key.len());
                encode_labels(&l, &mut k);
                self.merge.insert(&k, points.into_iter());
            } else {
                self.merge.insert(&key, points.into_iter());
            }
        }
        Ok(())
    }
}

/// ` (line:column)` of the first sorting function call in the query text, as Prometheus
/// positions annotations; empty when it cannot be found.
fn sort_position(text: &str) -> String {
    let bytes = text.as_bytes();
    let is_ident = |c: u8| c.is_ascii_alphanumeric() || c == b'_' || c == b':';
    let mut i = 0;
    while let Some(off) = text[i..].find("sort") {
        let at = i + off;
        let mut end = at + 4;
        while end < bytes.len() && is_ident(bytes[end]) {
            end += 1;
        }
        let word = &text[at..end];
        let before_ok = at == 0 || !is_ident(bytes[at - 1]);
        let after = text[end..].trim_start();
        if before_ok
            && matches!(word, "sort" | "sort_desc" | "sort_by_label" | "sort_by_label_desc")
            && after.starts_with('(')
        {
            let line = text[..at].matches('\n').count() + 1;
            let col = at - text[..at].rfind('\n').map(|p| p + 1).unwrap_or(0) + 1;
            return format!(" ({line}:{col})");
        }
        i = end;
    }
    String::new()
}

/// True when the expression calls one of the sorting functions.
fn uses_sort(e: &parser::Expr) -> bool {
    let mut found = false;
    crate::planner::walk(e, &mut |e| {
        if let parser::Expr::Call(c) = e {
            found |= matches!(c.func.name, "sort" | "sort_desc" | "sort_by_label" | "sort_by_label_desc");
        }
    });
    found
}

/// Prometheus's name of a value type in error messages.
pub(crate) fn type_name(t: ValueType) -> &'static str {
    match t {
        ValueType::Vector => "instant vector",
        ValueType::Scalar => "scalar",
        ValueType::Matrix => "range vector",
        ValueType::String => "string",
    }
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]
    use super::*;

    /// The cache gives back what was parsed, keeps only texts up to its length bound, and starts
    /// over once it holds its most entries.
    #[test]
    fn parse_cache_is_bounded() {
        let cache = ParseCache::default();
        let ast = crate::planner::parse("sum(rate(up[5m]))").unwrap();
        cache.put("sum(rate(up[5m]))", &ast);
        assert_eq!(cache.get("sum(rate(up[5m]))").map(|e| e.to_string()), Some(ast.to_string()));
        assert!(cache.get("sum(rate(up[1m]))").is_none());
        let long = format!("up{{job=\"{}\"}}", "x".repeat(PARSE_CACHE_TEXT));
        cache.put(&long, &crate::planner::parse(&long).unwrap());
        assert!(cache.get(&long).is_none(), "too long to keep");
        for i in 0..PARSE_CACHE_ENTRIES {
            cache.put(&format!("up + {i}"), &ast);
        }
        let held = cache.map.lock().unwrap().len();
        assert_eq!(held, 1, "full at {PARSE_CACHE_ENTRIES}: emptied, then the last text added");
    }
}
