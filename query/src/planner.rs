//! The PromQL planner: walks a promql-parser AST and builds a DataFusion logical plan out of
//! Strata's extension nodes (see [`crate::plan`]). Every AST node is dispatched here to the plan
//! node that implements it; the planner also works out each selector's data range, resolves
//! `@ start()` / `@ end()` and the evaluation grid of subqueries.

use std::time::{Duration, SystemTime, UNIX_EPOCH};

use datafusion::logical_expr::LogicalPlan;
use promql_parser::label::MatchOp;
use promql_parser::parser::value::ValueType;
use promql_parser::parser::{
    AggregateExpr, AtModifier, BinaryExpr, Call, Expr, LabelModifier, Offset, VectorMatchCardinality, VectorSelector,
};

use crate::error::{Error, Result};
use crate::plan::aggregate::{AggOp, AggregateSpec};
use crate::plan::binary::{BinOp, BinarySpec, Card};
use crate::plan::histogram::{HistFn, HistogramSpec};
use crate::plan::info::InfoSpec;
use crate::plan::instant_fn::{InstFn, InstantFnSpec};
use crate::plan::instant_select::InstantSelectSpec;
use crate::plan::label_fn::{LabelFnSpec, LabelOp};
use crate::plan::literal::{LiteralKind, LiteralSpec};
use crate::plan::range_func::{RangeFn, RangeFuncSpec};
use crate::plan::series_scan::{self, MatcherSpec, ScanSpec};
use crate::plan::step_fn::{StepFnSpec, StepOp};
use crate::plan::subquery::SubquerySpec;
use crate::plan::{F64, Grid, PromLogical, TimeShift};

/// The reference time of an `info()` argument (see [`Planner::info_reference`]).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum InfoRef {
    /// No vector-producing path (scalars only).
    None,
    /// Every vector-producing path reads at this shift of the step.
    One(TimeShift),
    /// Paths disagree: the step itself.
    Mixed,
}

impl InfoRef {
    /// Combines the references of two paths.
    fn and(self, o: InfoRef) -> InfoRef {
        match (self, o) {
            (InfoRef::None, x) | (x, InfoRef::None) => x,
            (InfoRef::One(a), InfoRef::One(b)) if a == b => InfoRef::One(a),
            _ => InfoRef::Mixed,
        }
    }
}

/// Plans one query.
#[derive(Debug, Clone)]
pub(crate) struct Planner {
    /// Lookback delta (ms).
    pub(crate) lookback: i64,
    /// Start of the whole query (`@ start()`), ms.
    pub(crate) query_start: i64,
    /// End of the whole query (`@ end()`), ms.
    pub(crate) query_end: i64,
    /// Step of the whole query (ms, 0 for instant queries).
    pub(crate) query_step: i64,
    /// Resolution of subqueries that give none (ms).
    pub(crate) default_subquery_step: i64,
    /// Scans under `rate`, `increase`, `irate` and `resets` read start timestamps.
    pub(crate) use_start_timestamps: bool,
    /// Coarsest downsampled resolution scans may read (ms; 0 = raw only).
    pub(crate) max_source_resolution: i64,
    /// The function or aggregation the expression being planned sits under, as Prometheus puts
    /// it into `SelectHints.Func` (`extractFuncFromPath`): the nearest call or aggregation above,
    /// through parentheses, unary minus and subqueries, none across a binary operator. Instant
    /// selectors pass it to their scan: over downsampled data it picks the aggregate read
    /// (Thanos's `aggrsFromFunc`: `max(x)` reads max, `count(x)` count, `sum(x)` sum/count).
    pub(crate) enclosing_func: Option<&'static str>,
}

/// Milliseconds of a parser duration.
pub(crate) fn dur_ms(d: &Duration) -> i64 {
    d.as_millis() as i64
}

/// Milliseconds since the epoch of a parser timestamp (negative before 1970).
fn time_ms(t: &SystemTime) -> i64 {
    match t.duration_since(UNIX_EPOCH) {
        Ok(d) => d.as_millis() as i64,
        Err(e) => -(e.duration().as_millis() as i64),
    }
}

/// Functions and aggregations a stock Prometheus 3 marks experimental.
const EXPERIMENTAL_FUNCS: &[&str] = &[
    "double_exponential_smoothing",
    "mad_over_time",
    "ts_of_first_over_time",
    "ts_of_last_over_time",
    "ts_of_max_over_time",
    "ts_of_min_over_time",
    "sort_by_label",
    "sort_by_label_desc",
    "info",
    "histogram_quantiles",
    "start",
    "end",
    "range",
    "step",
    "min_of",
    "max_of",
    "start_timestamp",
];

/// Rejects experimental functions unless enabled, with Prometheus's message.
pub(crate) fn check_experimental(e: &Expr, enabled: bool) -> Result<()> {
    if enabled {
        return Ok(());
    }
    let mut err = None;
    walk(e, &mut |e| {
        if err.is_some() {
            return;
        }
        match e {
            Expr::Call(c) if EXPERIMENTAL_FUNCS.contains(&c.func.name) => {
                err = Some(Error::BadData(format!(
                    "function \"{}\" is not enabled (enable with --enable-feature=promql-experimental-functions)",
                    c.func.name
                )));
            }
            Expr::Aggregate(a) if matches!(a.op.to_string().as_str(), "limitk" | "limit_ratio") => {
                err = Some(Error::BadData(format!(
                    "limitk() and limit_ratio() are experimental and must be enabled with --enable-feature=promql-experimental-functions (got {})",
                    a.op
                )));
            }
            _ => {}
        }
    });
    match err {
        Some(e) => Err(e),
        None => Ok(()),
    }
}

/// Visits every AST node, parents first.
pub(crate) fn walk(e: &Expr, f: &mut dyn FnMut(&Expr)) {
    f(e);
    match e {
        Expr::Aggregate(a) => {
            if let Some(p) = &a.param {
                walk(p, f);
            }
            walk(&a.expr, f);
        }
        Expr::Unary(u) => walk(&u.expr, f),
        Expr::Binary(b) => {
            walk(&b.lhs, f);
            walk(&b.rhs, f);
        }
        Expr::Paren(p) => walk(&p.expr, f),
        Expr::Subquery(s) => walk(&s.expr, f),
        Expr::Call(c) => {
            for a in &c.args.args {
                walk(a, f);
            }
        }
        _ => {}
    }
}

/// Strips parentheses.
pub(crate) fn unparen(e: &Expr) -> &Expr {
    match e {
        Expr::Paren(p) => unparen(&p.expr),
        e => e,
    }
}

impl Planner {
    /// The value of a top-level string expression, if it is one.
    pub(crate) fn top_string(&self, e: &Expr) -> Option<String> {
        match unparen(e) {
            Expr::StringLiteral(s) => Some(s.val.clone()),
            _ => None,
        }
    }

    /// Plans the whole query on `grid`.
    pub(crate) fn plan_top(&self, e: &Expr, grid: Grid) -> Result<LogicalPlan> {
        self.plan(e, grid)
    }

    /// Resolves `offset` and `@` of a selector or subquery.
    pub(crate) fn shift(&self, offset: &Option<Offset>, at: &Option<AtModifier>) -> TimeShift {
        let offset = match offset {
            Some(Offset::Pos(d)) => dur_ms(d),
            Some(Offset::Neg(d)) => -dur_ms(d),
            None => 0,
        };
        let at = at.as_ref().map(|a| match a {
            AtModifier::Start => self.query_start,
            AtModifier::End => self.query_end,
            AtModifier::At(t) => time_ms(t),
        });
        TimeShift { offset, at }
    }

    /// Inclusive data range a selector needs: `(first te - window, last te]`.
    pub(crate) fn data_range(grid: Grid, shift: TimeShift, window: i64) -> (i64, i64) {
        let (lo, hi) = match shift.at {
            Some(_) => (shift.eval_time(grid.start), shift.eval_time(grid.start)),
            None => (shift.eval_time(grid.start), shift.eval_time(grid.end)),
        };
        (lo - window + 1, hi)
    }

    /// The scan of a selector's matchers over `[min_t, max_t]`.
    pub(crate) fn scan(
        &self,
        vs: &VectorSelector,
        min_t: i64,
        max_t: i64,
        range_ms: i64,
        step_ms: i64,
        func: Option<&str>,
    ) -> Result<LogicalPlan> {
        let conv = |ms: &[promql_parser::label::Matcher]| -> Result<Vec<MatcherSpec>> {
            let mut out: Vec<MatcherSpec> = ms
                .iter()
                .map(|m| {
                    let op = match &m.op {
                        MatchOp::Equal => "=",
                        MatchOp::NotEqual => "!=",
                        MatchOp::Re(_) => "=~",
                        MatchOp::NotRe(_) => "!~",
                    };
                    let spec = MatcherSpec { name: m.name.clone(), op: op.into(), value: m.value.clone() };
                    spec.to_matcher()?;
                    Ok(spec)
                })
                .collect::<Result<_>>()?;
            if let Some(n) = &vs.name
                && !out.iter().any(|m| m.name == "__name__" && m.op == "=" && &m.value == n)
            {
                out.insert(0, MatcherSpec { name: "__name__".into(), op: "=".into(), value: n.clone() });
            }
            Ok(out)
        };
        let mut sets = Vec::new();
        if !vs.matchers.matchers.is_empty() || vs.matchers.or_matchers.is_empty() {
            sets.push(conv(&vs.matchers.matchers)?);
        }
        for o in &vs.matchers.or_matchers {
            sets.push(conv(o)?);
        }
        // Range functions come in the plan's spelling (`Rate`), enclosing names in PromQL's.
        let start_timestamps =
            self.use_start_timestamps && matches!(func, Some("Rate" | "Increase" | "Irate" | "Resets"));
        let prom_func = func.map(engine::aggr::prom_func_name);
        let resets = prom_func.as_deref() == Some("resets");
        // Thanos's `maxResolutionFromSelectHints`: a function that needs two samples in its range
        // reads no coarser than half the range.
        let mut max_resolution = if resets { 0 } else { self.max_source_resolution };
        if range_ms > 0 && prom_func.as_deref().is_some_and(|f| TWO_SAMPLE_FUNCS.contains(&f)) {
            max_resolution = max_resolution.min(range_ms / 2);
        }
        let spec = ScanSpec {
            matcher_sets: sets,
            min_t,
            max_t,
            range_ms,
            step_ms,
            func: func.map(str::to_string),
            start_timestamps,
            // resets() reads raw data only: the counter aggregate hides the resets it counts
            // (Thanos answers 0 there, thanos-io/thanos#3644).
            max_resolution_ms: max_resolution,
        };
        Ok(series_scan::plan(spec))
    }

    /// A scalar literal on `grid`.
    pub(crate) fn number(&self, v: f64, grid: Grid) -> LogicalPlan {
        PromLogical::plan(LiteralSpec { grid, kind: LiteralKind::Number(F64(v)) }, vec![])
    }

    /// An instant vector selector on `grid`.
    pub(crate) fn instant_selector(
        &self,
        vs: &VectorSelector,
        grid: Grid,
        sample_timestamp: bool,
    ) -> Result<LogicalPlan> {
        let shift = self.shift(&vs.offset, &vs.at);
        let (min_t, max_t) = Self::data_range(grid, shift, self.lookback);
        let scan = self.scan(vs, min_t, max_t, 0, grid.step, self.enclosing_func)?;
        let spec = InstantSelectSpec { grid, lookback: self.lookback, shift, sample_timestamp };
        Ok(PromLogical::plan(spec, vec![scan]))
    }

    /// This planner for the operands of `func` (see [`Planner::enclosing_func`]).
    fn under(&self, func: Option<&'static str>) -> Planner {
        Planner { enclosing_func: func, ..self.clone() }
    }

    /// Plans `e` evaluated on `grid`.
    pub(crate) fn plan(&self, e: &Expr, grid: Grid) -> Result<LogicalPlan> {
        match e {
            Expr::NumberLiteral(n) => Ok(self.number(n.val, grid)),
            Expr::Paren(p) => self.plan(&p.expr, grid),
            Expr::VectorSelector(vs) => self.instant_selector(vs, grid, false),
            Expr::MatrixSelector(_) | Expr::Subquery(_) => {
                // Only valid as the whole query: its raw window at the (single) step.
                self.range_arg(e, RangeFn::Matrix, vec![], grid)
            }
            Expr::StringLiteral(_) => {
                Err(Error::BadData("a string is only allowed as a function argument or the whole query".into()))
            }
            Expr::Unary(u) => {
                let inner = self.plan(&u.expr, grid)?;
                Ok(PromLogical::plan(InstantFnSpec { grid, func: InstFn::Neg }, vec![inner]))
            }
            Expr::Binary(b) => self.under(None).plan_binary(b, grid),
            Expr::Aggregate(a) => self.under(agg_name(&a.op.to_string())).plan_aggregate(a, grid),
            Expr::Call(c) => self.under(Some(c.func.name)).plan_call(c, grid),
            Expr::Extension(_) => Err(Error::BadData("unsupported extension expression".into())),
        }
    }

    fn plan_binary(&self, b: &BinaryExpr, grid: Grid) -> Result<LogicalPlan> {
        let op_text = b.op.to_string();
        let op = BinOp::from_token(&op_text)
            .ok_or_else(|| Error::BadData(format!("unsupported binary operator {op_text:?}")))?;
        let lhs_scalar = b.lhs.value_type() == ValueType::Scalar;
        let rhs_scalar = b.rhs.value_type() == ValueType::Scalar;
        let (mut on, mut matching, mut card, mut include) = (false, Vec::new(), Card::OneToOne, Vec::new());
        let mut return_bool = false;
        let (mut fill_left, mut fill_right) = (None, None);
        if let Some(m) = &b.modifier {
            return_bool = m.return_bool;
            fill_left = m.fill_values.lhs.map(F64);
            fill_right = m.fill_values.rhs.map(F64);
            if let Some(lm) = &m.matching {
                on = matches!(lm, LabelModifier::Include(_));
                matching = lm.labels().labels.clone();
            }
            card = match &m.card {
                VectorMatchCardinality::OneToOne => Card::OneToOne,
                VectorMatchCardinality::ManyToOne(l) => {
                    include = l.labels.clone();
                    Card::ManyToOne
                }
                VectorMatchCardinality::OneToMany(l) => {
                    include = l.labels.clone();
                    Card::OneToMany
                }
                VectorMatchCardinality::ManyToMany => Card::ManyToMany,
            };
        }
        if matches!(op, BinOp::And | BinOp::Or | BinOp::Unless) {
            card = Card::ManyToMany;
        }
        let l = self.plan(&b.lhs, grid)?;
        let r = self.plan(&b.rhs, grid)?;
        let spec = BinarySpec {
            grid,
            op,
            lhs_scalar,
            rhs_scalar,
            return_bool,
            on,
            matching,
            card,
            include,
            fill_left,
            fill_right,
        };
        Ok(PromLogical::plan(spec, vec![l, r]))
    }

    fn plan_aggregate(&self, a: &AggregateExpr, grid: Grid) -> Result<LogicalPlan> {
        let name = a.op.to_string();
        let op = AggOp::from_name(&name).ok_or_else(|| Error::BadData(format!("unsupported aggregation {name:?}")))?;
        let (by, labels) = match &a.modifier {
            Some(LabelModifier::Include(l)) => (true, l.labels.clone()),
            Some(LabelModifier::Exclude(l)) => (false, l.labels.clone()),
            None => (true, vec![]),
        };
        let mut inputs = vec![self.plan(&a.expr, grid)?];
        let mut value_label = None;
        if let Some(p) = &a.param {
            if op == AggOp::CountValues {
                match unparen(p) {
                    Expr::StringLiteral(s) => {
                        // An evaluation error in Prometheus, raised before anything is read.
                        if s.val.is_empty() {
                            return Err(Error::Execution(format!(
                                "invalid label name {}",
                                crate::plan::label_fn::go_quote(s.val.as_bytes())
                            )));
                        }
                        value_label = Some(s.val.clone())
                    }
                    _ => return Err(Error::BadData("count_values needs a string parameter".into())),
                }
            } else {
                inputs.push(self.plan(p, grid)?);
            }
        }
        let spec = AggregateSpec { grid, op, by, labels, value_label };
        Ok(PromLogical::plan(spec, inputs))
    }

    /// A range-vector argument (matrix selector or subquery) feeding range function `func`.
    fn range_arg(&self, e: &Expr, func: RangeFn, params: Vec<LogicalPlan>, grid: Grid) -> Result<LogicalPlan> {
        match unparen(e) {
            Expr::MatrixSelector(ms) => {
                let shift = self.shift(&ms.vs.offset, &ms.vs.at);
                let range = dur_ms(&ms.range);
                let (min_t, max_t) = Self::data_range(grid, shift, range);
                let fname = format!("{func:?}");
                let scan = self.scan(&ms.vs, min_t, max_t, range, grid.step, Some(&fname))?;
                let mut inputs = vec![scan];
                inputs.extend(params);
                Ok(PromLogical::plan(RangeFuncSpec { grid, range, shift, func }, inputs))
            }
            Expr::Subquery(sq) => {
                let shift = self.shift(&sq.offset, &sq.at);
                let range = dur_ms(&sq.range);
                let step = sq.step.as_ref().map(dur_ms).filter(|s| *s > 0).unwrap_or(self.default_subquery_step);
                let (first_te, last_te) = match shift.at {
                    Some(_) => (shift.eval_time(grid.start), shift.eval_time(grid.start)),
                    None => (shift.eval_time(grid.start), shift.eval_time(grid.end)),
                };
                let inner = SubquerySpec::inner_grid(first_te, last_te, range, step);
                let inner_plan = self.plan(&sq.expr, inner)?;
                let sub = PromLogical::plan(SubquerySpec { inner, range }, vec![inner_plan]);
                let mut inputs = vec![sub];
                inputs.extend(params);
                Ok(PromLogical::plan(RangeFuncSpec { grid, range, shift, func }, inputs))
            }
            other => Err(Error::BadData(format!(
                "expected type range vector in call to function, got {}",
                crate::engine::type_name(other.value_type())
            ))),
        }
    }

    /// The label set `absent()` reports for a selector: its equality matchers except the name.
    fn absent_labels(vs: &VectorSelector) -> Vec<(String, String)> {
        // A label is reported when exactly one matcher names it and that matcher is `=`.
        let ms = &vs.matchers.matchers;
        ms.iter()
            .filter(|m| m.name != "__name__" && m.op == MatchOp::Equal)
            .filter(|m| ms.iter().filter(|o| o.name == m.name).count() == 1)
            .map(|m| (m.name.clone(), m.value.clone()))
            .collect()
    }

    fn string_arg(c: &Call, i: usize) -> Result<String> {
        match c.args.args.get(i).map(|a| unparen(a)) {
            Some(Expr::StringLiteral(s)) => Ok(s.val.clone()),
            _ => Err(Error::BadData(format!("expected a string literal as argument {} of {}()", i + 1, c.func.name))),
        }
    }

    /// `info(v [, {selector}])`: `v` joined with the info series, which are read as instant
    /// vectors (emitting each sample's timestamp) at the reference time of `v`.
    fn plan_info(&self, c: &Call, grid: Grid) -> Result<LogicalPlan> {
        let args = &c.args.args;
        let Some(base_expr) = args.first() else {
            return Err(Error::BadData("missing argument 1 of info()".into()));
        };
        let mut matchers = Vec::new();
        if let Some(sel) = args.get(1) {
            let Expr::VectorSelector(vs) = unparen(sel) else {
                return Err(Error::BadData("expected label selectors as the second argument to info function".into()));
            };
            if !vs.matchers.or_matchers.is_empty() {
                return Err(Error::BadData("info() does not support \"or\" in its label selector".into()));
            }
            for m in vs.matchers.matchers.iter().filter(|m| m.name != INFO_SELECTOR_FILLER) {
                let op = match &m.op {
                    MatchOp::Equal => "=",
                    MatchOp::NotEqual => "!=",
                    MatchOp::Re(_) => "=~",
                    MatchOp::NotRe(_) => "!~",
                };
                matchers.push(MatcherSpec { name: m.name.clone(), op: op.into(), value: m.value.clone() });
            }
            if let Some(n) = &vs.name
                && !matchers.iter().any(|m| m.name == "__name__" && m.op == "=" && &m.value == n)
            {
                matchers.insert(0, MatcherSpec { name: "__name__".into(), op: "=".into(), value: n.clone() });
            }
        }
        let reference = match self.info_reference(base_expr) {
            InfoRef::One(s) => s,
            InfoRef::None | InfoRef::Mixed => TimeShift::default(),
        };
        let spec = InfoSpec::from_selector(grid, matchers, reference)?;
        let base = self.plan(base_expr, grid)?;
        let (min_t, max_t) = Self::data_range(grid, reference, self.lookback);
        let scan = ScanSpec {
            matcher_sets: vec![spec.scan_matchers()],
            min_t,
            max_t,
            range_ms: 0,
            step_ms: grid.step,
            func: Some("info".into()),
            start_timestamps: false,
            max_resolution_ms: 0,
        };
        let scan = series_scan::plan(scan);
        let select = InstantSelectSpec { grid, lookback: self.lookback, shift: reference, sample_timestamp: true };
        let info = PromLogical::plan(select, vec![scan]);
        Ok(PromLogical::plan(spec, vec![base, info]))
    }

    /// When `info()` reads its info series relative to each step: the `@`/`offset` shared by
    /// every vector-producing path of its argument (an `@` time with an offset is normalised to
    /// the plain time it reads at, so `@ 180 offset 1m` equals `@ 120`).
    fn info_reference(&self, e: &Expr) -> InfoRef {
        fn norm(s: TimeShift) -> TimeShift {
            match s.at {
                Some(at) => TimeShift { at: Some(at - s.offset), offset: 0 },
                None => s,
            }
        }
        match e {
            Expr::NumberLiteral(_) | Expr::StringLiteral(_) | Expr::Extension(_) => InfoRef::None,
            Expr::Paren(p) => self.info_reference(&p.expr),
            Expr::Unary(u) => self.info_reference(&u.expr),
            Expr::VectorSelector(vs) => InfoRef::One(norm(self.shift(&vs.offset, &vs.at))),
            Expr::MatrixSelector(ms) => InfoRef::One(norm(self.shift(&ms.vs.offset, &ms.vs.at))),
            Expr::Subquery(sq) => {
                let outer = self.shift(&sq.offset, &sq.at);
                match self.info_reference(&sq.expr) {
                    InfoRef::One(inner) if inner.at.is_some() => InfoRef::One(inner),
                    InfoRef::One(inner) => {
                        InfoRef::One(norm(TimeShift { at: outer.at, offset: outer.offset + inner.offset }))
                    }
                    other => other,
                }
            }
            Expr::Aggregate(a) => self.info_reference(&a.expr),
            Expr::Binary(b) => {
                if e.value_type() == ValueType::Scalar {
                    return InfoRef::None;
                }
                self.info_reference(&b.lhs).and(self.info_reference(&b.rhs))
            }
            Expr::Call(c) => {
                if e.value_type() == ValueType::Scalar {
                    return InfoRef::None;
                }
                let r = c
                    .args
                    .args
                    .iter()
                    .filter(|a| matches!(a.value_type(), ValueType::Vector | ValueType::Matrix))
                    .take(if c.func.name == "info" { 1 } else { usize::MAX })
                    .fold(InfoRef::None, |acc, a| acc.and(self.info_reference(a)));
                match r {
                    // A vector made without any selector (`vector(1)`, `hour()`) reads at the step.
                    InfoRef::None => InfoRef::One(TimeShift::default()),
                    r => r,
                }
            }
        }
    }

    fn plan_call(&self, c: &Call, grid: Grid) -> Result<LogicalPlan> {
        let name = c.func.name;
        let args = &c.args.args;
        let arg = |i: usize| -> Result<&Expr> {
            args.get(i)
                .map(|b| b.as_ref())
                .ok_or_else(|| Error::BadData(format!("missing argument {} of {name}()", i + 1)))
        };
        if let Some(func) = RangeFn::from_name(name) {
            let (mi, pis): (usize, &[usize]) = match func {
                RangeFn::QuantileOverTime => (1, &[0]),
                RangeFn::PredictLinear => (0, &[1]),
                RangeFn::DoubleExponentialSmoothing => (0, &[1, 2]),
                _ => (0, &[]),
            };
            let params = pis.iter().map(|&i| self.plan(arg(i)?, grid)).collect::<Result<Vec<_>>>()?;
            return self.range_arg(arg(mi)?, func, params, grid);
        }
        if let Some(func) = InstFn::from_name(name) {
            if func == InstFn::Timestamp
                && let Expr::VectorSelector(vs) = unparen(arg(0)?)
            {
                let sel = self.instant_selector(vs, grid, true)?;
                return Ok(PromLogical::plan(InstantFnSpec { grid, func: InstFn::DropName }, vec![sel]));
            }
            let main = if func.is_date() && args.is_empty() {
                PromLogical::plan(LiteralSpec { grid, kind: LiteralKind::Time }, vec![])
            } else {
                self.plan(arg(0)?, grid)?
            };
            let mut inputs = vec![main];
            match func {
                InstFn::Round => inputs.push(match args.get(1) {
                    Some(a) => self.plan(a, grid)?,
                    None => self.number(1.0, grid),
                }),
                InstFn::Clamp => {
                    inputs.push(self.plan(arg(1)?, grid)?);
                    inputs.push(self.plan(arg(2)?, grid)?);
                }
                InstFn::ClampMin | InstFn::ClampMax => inputs.push(self.plan(arg(1)?, grid)?),
                _ => {}
            }
            return Ok(PromLogical::plan(InstantFnSpec { grid, func }, inputs));
        }
        match name {
            "time" => Ok(PromLogical::plan(LiteralSpec { grid, kind: LiteralKind::Time }, vec![])),
            "pi" => Ok(self.number(std::f64::consts::PI, grid)),
            "start" => Ok(self.number(self.query_start as f64 / 1000.0, grid)),
            "end" => Ok(self.number(self.query_end as f64 / 1000.0, grid)),
            "range" => Ok(self.number((self.query_end - self.query_start) as f64 / 1000.0, grid)),
            "step" => Ok(self.number(self.query_step as f64 / 1000.0, grid)),
            "min_of" | "max_of" => {
                let l = self.plan(arg(0)?, grid)?;
                let r = self.plan(arg(1)?, grid)?;
                let op = if name == "min_of" { BinOp::MinOf } else { BinOp::MaxOf };
                let spec = BinarySpec {
                    grid,
                    op,
                    lhs_scalar: true,
                    rhs_scalar: true,
                    return_bool: false,
                    on: false,
                    matching: vec![],
                    card: Card::OneToOne,
                    include: vec![],
                    fill_left: None,
                    fill_right: None,
                };
                Ok(PromLogical::plan(spec, vec![l, r]))
            }
            "vector" => self.plan(arg(0)?, grid),
            "scalar" => {
                let inner = self.plan(arg(0)?, grid)?;
                Ok(PromLogical::plan(StepFnSpec { grid, op: StepOp::Scalar }, vec![inner]))
            }
            "absent" => {
                let a = arg(0)?;
                let labels = match unparen(a) {
                    Expr::VectorSelector(vs) => Self::absent_labels(vs),
                    _ => vec![],
                };
                let inner = self.plan(a, grid)?;
                Ok(PromLogical::plan(StepFnSpec { grid, op: StepOp::Absent(labels) }, vec![inner]))
            }
            "absent_over_time" => {
                let a = arg(0)?;
                let labels = match unparen(a) {
                    Expr::MatrixSelector(ms) => Self::absent_labels(&ms.vs),
                    _ => vec![],
                };
                let inner = self.range_arg(a, RangeFn::CountOverTime, vec![], grid)?;
                Ok(PromLogical::plan(StepFnSpec { grid, op: StepOp::Absent(labels) }, vec![inner]))
            }
            "sort" | "sort_desc" => {
                let inner = self.plan(arg(0)?, grid)?;
                Ok(PromLogical::plan(StepFnSpec { grid, op: StepOp::SortByValue(name == "sort_desc") }, vec![inner]))
            }
            "sort_by_label" | "sort_by_label_desc" => {
                let inner = self.plan(arg(0)?, grid)?;
                let labels = (1..args.len()).map(|i| Self::string_arg(c, i)).collect::<Result<Vec<_>>>()?;
                let op = StepOp::SortByLabel(labels, name == "sort_by_label_desc");
                Ok(PromLogical::plan(StepFnSpec { grid, op }, vec![inner]))
            }
            "label_replace" => {
                let inner = self.plan(arg(0)?, grid)?;
                let spec = LabelFnSpec {
                    op: LabelOp::Replace {
                        dst: Self::string_arg(c, 1)?,
                        replacement: Self::string_arg(c, 2)?,
                        src: Self::string_arg(c, 3)?,
                        regex: Self::string_arg(c, 4)?,
                    },
                };
                spec.validate()?;
                Ok(PromLogical::plan(spec, vec![inner]))
            }
            "label_join" => {
                let inner = self.plan(arg(0)?, grid)?;
                let srcs = (3..args.len()).map(|i| Self::string_arg(c, i)).collect::<Result<Vec<_>>>()?;
                let spec = LabelFnSpec {
                    op: LabelOp::Join { dst: Self::string_arg(c, 1)?, sep: Self::string_arg(c, 2)?, srcs },
                };
                spec.validate()?;
                Ok(PromLogical::plan(spec, vec![inner]))
            }
            "info" => self.plan_info(c, grid),
            "histogram_quantile" => {
                let phi = self.plan(arg(0)?, grid)?;
                let inner = self.plan(arg(1)?, grid)?;
                Ok(PromLogical::plan(HistogramSpec { grid, func: HistFn::Quantile }, vec![inner, phi]))
            }
            "histogram_quantiles" => {
                let dst = Self::string_arg(c, 1)?;
                let phis = args.get(2..).unwrap_or_default();
                let mut inputs = Vec::with_capacity(2 * phis.len());
                let mut phi_plans = Vec::with_capacity(phis.len());
                for a in phis {
                    let phi = self.plan(a, grid)?;
                    let inner = self.plan(arg(0)?, grid)?;
                    inputs.push(PromLogical::plan(
                        HistogramSpec { grid, func: HistFn::Quantile },
                        vec![inner, phi.clone()],
                    ));
                    phi_plans.push(phi);
                }
                inputs.extend(phi_plans);
                let spec = LabelFnSpec { op: LabelOp::QuantileUnion { dst, n: phis.len() } };
                spec.validate()?;
                Ok(PromLogical::plan(spec, inputs))
            }
            "histogram_fraction" => {
                let lo = self.plan(arg(0)?, grid)?;
                let hi = self.plan(arg(1)?, grid)?;
                let inner = self.plan(arg(2)?, grid)?;
                Ok(PromLogical::plan(HistogramSpec { grid, func: HistFn::Fraction }, vec![inner, lo, hi]))
            }
            other => Err(Error::BadData(format!("function {other:?} is not supported by Strata yet"))),
        }
    }
}

/// Functions that need two samples in their range (Thanos's `promqlFuncRequiresTwoSamples`): over
/// downsampled data their range selectors read no coarser resolution than half the range.
const TWO_SAMPLE_FUNCS: &[&str] = &[
    "rate",
    "irate",
    "increase",
    "delta",
    "idelta",
    "deriv",
    "predict_linear",
    "holt_winters",
    "double_exponential_smoothing",
];

/// The name of an aggregation operator as PromQL spells it (a static string for
/// [`Planner::enclosing_func`]); `None` for an operator not listed.
fn agg_name(op: &str) -> Option<&'static str> {
    const OPS: &[&str] = &[
        "sum",
        "avg",
        "count",
        "min",
        "max",
        "group",
        "stddev",
        "stdvar",
        "topk",
        "bottomk",
        "count_values",
        "quantile",
        "limitk",
        "limit_ratio",
    ];
    OPS.iter().copied().find(|o| *o == op)
}

/// Label name of the matcher [`parse`] adds to an `info()` label selector whose matchers all
/// match the empty string; [`Planner`] drops it again when it plans `info()`.
const INFO_SELECTOR_FILLER: &str = "__strata_info_selector__";

/// Parses a query with promql-parser, reading string literals as Prometheus does (see
/// [`go_string_literals`]). Prometheus accepts an `info()` label selector whose
/// matchers all match the empty string (`info(x, {data=~".*"})`), which promql-parser rejects
/// like any such selector; on that error each `info()` selector gets a filler matcher that does
/// not match the empty string, and the query is parsed again. Errors are the parser's text for
/// the query as written.
pub(crate) fn parse(text: &str) -> std::result::Result<Expr, String> {
    let text = go_string_literals(text);
    let text = text.as_ref();
    let err = match promql_parser::parser::parse(text) {
        Ok(e) => return Ok(e),
        Err(e) => e,
    };
    if !err.contains("at least one non-empty matcher") {
        return Err(err);
    }
    let mut filled = text.to_string();
    let mut changed = false;
    // Back to front, so earlier offsets stay valid.
    let mut sites: Vec<(usize, bool)> = call_sites(text)
        .iter()
        .filter(|c| c.name == "info")
        .filter_map(|c| c.args.get(1))
        .filter(|(_, a)| a.starts_with('{') && a.ends_with('}'))
        .map(|(at, a)| (at + a.len() - 1, a[1..a.len() - 1].trim().is_empty()))
        .collect();
    sites.sort_unstable();
    for (close, empty) in sites.into_iter().rev() {
        let sep = if empty { "" } else { ", " };
        filled.insert_str(close, &format!("{sep}{INFO_SELECTOR_FILLER}!=\"\""));
        changed = true;
    }
    if !changed {
        return Err(err);
    }
    promql_parser::parser::parse(&filled).map_err(|_| err)
}

/// The query text with the string literals promql-parser 0.11 reads differently from
/// Prometheus rewritten into double-quoted literals it reads right:
///
/// - raw strings (`` `...` ``) take no escapes in PromQL (as in Go), so
///   ``{version=~`2\.3\..*`}`` is the regex `2\.3\..*`; promql-parser's lexer reads the
///   backslashes as escapes and fails ("unknown escape sequence");
/// - `\xNN` and octal escapes stand for bytes in PromQL, so `"\xc3\xbf"` is `ÿ`;
///   promql-parser decodes each to a character of its own (`Ã¿`). Literals whose bytes are not
///   UTF-8 stay as they are (see [`check_label_name_literals`]).
///
/// Other text, comments included, is unchanged; a query without such literals is returned as
/// it is.
pub(crate) fn go_string_literals(text: &str) -> std::borrow::Cow<'_, str> {
    let b = text.as_bytes();
    let mut out = String::new();
    let (mut copied, mut i) = (0usize, 0usize);
    while i < b.len() {
        match b[i] {
            b'#' => {
                i = skip_space(b, i);
                continue;
            }
            q @ (b'"' | b'\'' | b'`') => {
                let end = skip_string(b, i);
                let lit = &text[i..end];
                let rewrite = if q == b'`' {
                    lit.len() >= 2 && lit.ends_with('`') && lit.contains('\\')
                } else {
                    has_byte_escape(lit)
                };
                if rewrite
                    && let Some(bytes) = go_unquote(lit)
                    && let Ok(value) = String::from_utf8(bytes)
                {
                    out.push_str(&text[copied..i]);
                    out.push_str(&double_quoted(&value));
                    copied = end;
                }
                i = end;
            }
            _ => i += 1,
        }
    }
    if copied == 0 {
        return std::borrow::Cow::Borrowed(text);
    }
    out.push_str(&text[copied..]);
    std::borrow::Cow::Owned(out)
}

/// True when a quoted literal holds a `\xNN` or octal escape.
fn has_byte_escape(lit: &str) -> bool {
    let b = lit.as_bytes();
    let mut i = 1;
    while i + 1 < b.len() {
        if b[i] == b'\\' {
            if matches!(b[i + 1], b'x' | b'0'..=b'7') {
                return true;
            }
            i += 2;
        } else {
            i += 1;
        }
    }
    false
}

/// `value` as a double-quoted literal with only the escapes promql-parser reads as Go does.
fn double_quoted(value: &str) -> String {
    let mut out = String::with_capacity(value.len() + 2);
    out.push('"');
    for c in value.chars() {
        match c {
            '"' => out.push_str("\\\""),
            '\\' => out.push_str("\\\\"),
            '\n' => out.push_str("\\n"),
            '\r' => out.push_str("\\r"),
            '\t' => out.push_str("\\t"),
            c if c.is_control() => out.push_str(&format!("\\u{:04x}", c as u32)),
            c => out.push(c),
        }
    }
    out.push('"');
    out
}

/// Rejects label-name arguments whose string literal is not valid UTF-8 once its escapes are
/// decoded (e.g. `label_replace(x, "\xff", ...)`). Prometheus decodes `\xNN` and octal escapes
/// to raw bytes and then finds such a name invalid when it evaluates the function (an
/// `execution` error, with Prometheus's message); promql-parser decodes them to characters
/// (`"\xff"` becomes `ÿ`), so the check is made on the query text. Label names checked, in
/// Prometheus's order: `label_replace`'s destination (after its regex, which the planner
/// checks), `label_join`'s sources and then destination, `histogram_quantiles`' quantile
/// label and `count_values`' label. Where an earlier argument is wrong in another way
/// (an invalid regex, an empty source name) the planner reports that instead.
pub(crate) fn check_label_name_literals(text: &str) -> Result<()> {
    // Only an escape can put a non-UTF-8 byte into a literal of a UTF-8 query text.
    if !text.contains('\\') {
        return Ok(());
    }
    let decoded = |arg: Option<&(usize, &str)>| arg.and_then(|(_, a)| go_unquote(a));
    let invalid = |bytes: &[u8]| std::str::from_utf8(bytes).is_err();
    let lossy = |bytes: &[u8]| String::from_utf8_lossy(bytes).into_owned();
    for c in call_sites(text) {
        match c.name {
            "label_replace" => {
                let regex_ok = match decoded(c.args.get(4)).map(String::from_utf8) {
                    Some(Ok(re)) => regex::Regex::new(&format!("^(?s:{re})$")).is_ok(),
                    _ => true,
                };
                if let Some(dst) = decoded(c.args.get(1))
                    && regex_ok
                    && invalid(&dst)
                {
                    return Err(Error::Execution(format!(
                        "invalid destination label name in label_replace(): {}",
                        lossy(&dst)
                    )));
                }
            }
            "label_join" => {
                let mut empty_src = false;
                for i in 3..c.args.len() {
                    match decoded(c.args.get(i)) {
                        // The planner reports the empty source first.
                        Some(src) if src.is_empty() => {
                            empty_src = true;
                            break;
                        }
                        Some(src) if invalid(&src) => {
                            return Err(Error::Execution(format!(
                                "invalid source label name in label_join(): {}",
                                lossy(&src)
                            )));
                        }
                        _ => {}
                    }
                }
                if !empty_src
                    && let Some(dst) = decoded(c.args.get(1))
                    && invalid(&dst)
                {
                    return Err(Error::Execution(format!(
                        "invalid destination label name in label_join(): {}",
                        lossy(&dst)
                    )));
                }
            }
            "histogram_quantiles" => {
                if let Some(dst) = decoded(c.args.get(1))
                    && invalid(&dst)
                {
                    return Err(Error::Execution(format!(
                        "invalid quantile label name in histogram_quantiles(): {}",
                        lossy(&dst)
                    )));
                }
            }
            "count_values" => {
                if let Some(l) = decoded(c.args.first())
                    && invalid(&l)
                {
                    return Err(Error::Execution(format!(
                        "invalid label name {}",
                        crate::plan::label_fn::go_quote(&l)
                    )));
                }
            }
            _ => {}
        }
    }
    Ok(())
}

/// The bytes a Go string literal (`"..."` or `'...'` with Go's escapes, or a raw `` `...` ``)
/// stands for; `None` when `lit` is not one whole string literal or an escape is malformed.
fn go_unquote(lit: &str) -> Option<Vec<u8>> {
    let b = lit.as_bytes();
    let q = *b.first()?;
    if !matches!(q, b'"' | b'\'' | b'`') || b.len() < 2 || b[b.len() - 1] != q {
        return None;
    }
    let body = &b[1..b.len() - 1];
    if q == b'`' {
        return Some(body.to_vec());
    }
    let hex = |s: &[u8]| std::str::from_utf8(s).ok().and_then(|s| u32::from_str_radix(s, 16).ok());
    let mut out = Vec::with_capacity(body.len());
    let mut i = 0;
    while i < body.len() {
        if body[i] != b'\\' {
            out.push(body[i]);
            i += 1;
            continue;
        }
        let e = *body.get(i + 1)?;
        i += 2;
        match e {
            b'a' => out.push(7),
            b'b' => out.push(8),
            b'f' => out.push(12),
            b'n' => out.push(b'\n'),
            b'r' => out.push(b'\r'),
            b't' => out.push(b'\t'),
            b'v' => out.push(11),
            b'\\' | b'"' | b'\'' => out.push(e),
            b'x' => {
                out.push(u8::try_from(hex(body.get(i..i + 2)?)?).ok()?);
                i += 2;
            }
            b'0'..=b'7' => {
                let d = body.get(i - 1..i + 2)?;
                let v = std::str::from_utf8(d).ok().and_then(|s| u32::from_str_radix(s, 8).ok())?;
                out.push(u8::try_from(v).ok()?);
                i += 2;
            }
            b'u' | b'U' => {
                let n = if e == b'u' { 4 } else { 8 };
                let ch = char::from_u32(hex(body.get(i..i + n)?)?)?;
                let mut buf = [0u8; 4];
                out.extend_from_slice(ch.encode_utf8(&mut buf).as_bytes());
                i += n;
            }
            _ => return None,
        }
    }
    Some(out)
}

/// A function or aggregation call found in the query text: its name and each top-level
/// argument's byte offset and text.
#[derive(Debug)]
struct CallSite<'a> {
    name: &'a str,
    args: Vec<(usize, &'a str)>,
}

/// Skips a string literal starting at `i` (a quote); returns the offset after it.
fn skip_string(b: &[u8], i: usize) -> usize {
    let q = b[i];
    let mut j = i + 1;
    while j < b.len() && b[j] != q {
        if b[j] == b'\\' && q != b'`' {
            j += 1;
        }
        j += 1;
    }
    (j + 1).min(b.len())
}

/// Skips whitespace and `#` comments from `i`.
fn skip_space(b: &[u8], mut i: usize) -> usize {
    while i < b.len() {
        if b[i].is_ascii_whitespace() {
            i += 1;
        } else if b[i] == b'#' {
            while i < b.len() && b[i] != b'\n' {
                i += 1;
            }
        } else {
            break;
        }
    }
    i
}

fn is_ident_byte(c: u8) -> bool {
    c.is_ascii_alphanumeric() || c == b'_' || c == b':'
}

/// Splits the parenthesised list opening at `open` into top-level arguments; returns them and
/// the offset after the closing parenthesis.
fn split_args(text: &str, open: usize) -> (Vec<(usize, &str)>, usize) {
    fn push<'a>(text: &'a str, s: usize, e: usize, args: &mut Vec<(usize, &'a str)>) {
        let s = skip_space(text.as_bytes(), s);
        if s < e {
            args.push((s, text[s..e].trim_end()));
        }
    }
    let b = text.as_bytes();
    let (mut depth, mut i, mut start) = (0usize, open + 1, open + 1);
    let mut args = Vec::new();
    while i < b.len() {
        match b[i] {
            b'"' | b'\'' | b'`' => {
                i = skip_string(b, i);
                continue;
            }
            b'(' | b'[' | b'{' => depth += 1,
            b')' | b']' | b'}' if depth > 0 => depth -= 1,
            b')' => {
                push(text, start, i, &mut args);
                return (args, i + 1);
            }
            b',' if depth == 0 => {
                push(text, start, i, &mut args);
                start = i + 1;
            }
            _ => {}
        }
        i += 1;
    }
    push(text, start, b.len(), &mut args);
    (args, b.len())
}

/// Every call in the query text (functions, and aggregations with or without a leading
/// `by`/`without` clause), in textual order, outside strings and comments.
fn call_sites(text: &str) -> Vec<CallSite<'_>> {
    let b = text.as_bytes();
    let mut out = Vec::new();
    let mut i = 0;
    while i < b.len() {
        let c = b[i];
        if matches!(c, b'"' | b'\'' | b'`') {
            i = skip_string(b, i);
            continue;
        }
        if c == b'#' {
            i = skip_space(b, i);
            continue;
        }
        if !(c.is_ascii_alphabetic() || c == b'_') || (i > 0 && is_ident_byte(b[i - 1])) {
            i += 1;
            continue;
        }
        let mut end = i;
        while end < b.len() && is_ident_byte(b[end]) {
            end += 1;
        }
        let name = &text[i..end];
        let mut j = skip_space(b, end);
        // `sum by (job) (x)`: step over the grouping clause.
        for kw in ["by", "without"] {
            if text[j..].starts_with(kw) && !b.get(j + kw.len()).is_some_and(|c| is_ident_byte(*c)) {
                let k = skip_space(b, j + kw.len());
                if b.get(k) == Some(&b'(') {
                    j = skip_space(b, split_args(text, k).1);
                }
            }
        }
        if b.get(j) == Some(&b'(')
            && !matches!(name, "by" | "without" | "on" | "ignoring" | "group_left" | "group_right")
        {
            out.push(CallSite { name, args: split_args(text, j).0 });
        }
        i = end;
    }
    out
}

/// `line:column` (1-based, bytes) of a byte offset.
fn line_col(text: &str, at: usize) -> String {
    let line = text[..at].matches('\n').count() + 1;
    let col = at - text[..at].rfind('\n').map(|p| p + 1).unwrap_or(0) + 1;
    format!("{line}:{col}")
}

/// Parses a PromQL number literal the way the quantile warning prints it.
fn literal_value(s: &str) -> Option<f64> {
    let s = s.trim();
    let (neg, body) = match s.strip_prefix('-') {
        Some(r) => (true, r.trim_start()),
        None => (false, s.strip_prefix('+').unwrap_or(s).trim_start()),
    };
    let v = match body.to_ascii_lowercase().as_str() {
        "nan" => f64::NAN,
        "inf" => f64::INFINITY,
        b => b.parse::<f64>().ok()?,
    };
    Some(if neg { -v } else { v })
}

/// The argument Prometheus positions an annotation at, found in the query text.
fn annotation_position(text: &str, calls: &[CallSite<'_>], msg: &str) -> Option<String> {
    if let Some(got) = msg.split("quantile value should be between 0 and 1, got ").nth(1) {
        let args: Vec<(usize, &str)> = calls
            .iter()
            .flat_map(|c| {
                let idx: Vec<usize> = match c.name {
                    "histogram_quantile" | "quantile" | "quantile_over_time" => vec![0],
                    "histogram_quantiles" => (2..c.args.len()).collect(),
                    _ => vec![],
                };
                idx.into_iter().filter_map(|i| c.args.get(i).copied()).collect::<Vec<_>>()
            })
            .collect();
        let by_value =
            args.iter().find(|(_, a)| literal_value(a).is_some_and(|v| engine::gofloat::format_fixed(v) == got.trim()));
        return by_value.or(args.first()).map(|(at, _)| line_col(text, *at));
    }
    if msg.contains("start time that overlaps with previous sample timestamp") {
        // Prometheus positions it at the range argument of `rate` / `increase`.
        let metric = msg.split("for metric \"").nth(1).and_then(|r| r.split('"').next()).unwrap_or("");
        let args: Vec<(usize, &str)> = calls
            .iter()
            .filter(|c| matches!(c.name, "rate" | "increase"))
            .filter_map(|c| c.args.first().copied())
            .collect();
        let by_name = args.iter().find(|(_, a)| !metric.is_empty() && a.contains(metric));
        return by_name.or(args.first()).map(|(at, _)| line_col(text, *at));
    }
    let histogram_vector = msg.contains("bucket label \"le\" is missing")
        || msg.contains("needed to be fixed for monotonicity")
        || msg.contains("mix of classic and native histograms");
    if histogram_vector {
        let metric = msg.split("for metric name \"").nth(1).and_then(|r| r.split('"').next()).unwrap_or("");
        let args: Vec<(usize, &str)> = calls
            .iter()
            .filter_map(|c| match c.name {
                "histogram_quantile" => c.args.get(1).copied(),
                "histogram_quantiles" => c.args.first().copied(),
                "histogram_fraction" => c.args.get(2).copied(),
                _ => None,
            })
            .collect();
        let by_name = args.iter().find(|(_, a)| !metric.is_empty() && a.contains(metric));
        return by_name.or(args.first()).map(|(at, _)| line_col(text, *at));
    }
    None
}

/// True when an annotation already ends with a ` (line:col)` position.
fn has_position(msg: &str) -> bool {
    let Some(inner) = msg.strip_suffix(')').and_then(|m| m.rsplit_once(" (")).map(|(_, p)| p) else {
        return false;
    };
    inner.split_once(':').is_some_and(|(l, c)| {
        !l.is_empty() && !c.is_empty() && l.bytes().all(|x| x.is_ascii_digit()) && c.bytes().all(|x| x.is_ascii_digit())
    })
}

/// Adds Prometheus's ` (line:col)` position of the offending argument to the annotations that
/// carry one (invalid quantile, bad `le` label, forced bucket monotonicity, mixed classic and
/// native histograms). The parser's AST has no positions, so they are found in the query text.
pub(crate) fn position_annotations(text: &str, msgs: Vec<String>) -> Vec<String> {
    let calls = call_sites(text);
    msgs.into_iter()
        .map(|m| {
            if has_position(&m) {
                return m;
            }
            match annotation_position(text, &calls, &m) {
                Some(p) => format!("{m} ({p})"),
                None => m,
            }
        })
        .collect()
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;

    #[test]
    fn go_string_literals_decode_to_bytes() {
        assert_eq!(go_unquote(r#""\xff""#), Some(vec![0xff]));
        assert_eq!(go_unquote(r#""\377a\n""#), Some(vec![0xff, b'a', b'\n']));
        assert_eq!(go_unquote(r#"'\u00ff'"#), Some("ÿ".as_bytes().to_vec()));
        assert_eq!(go_unquote(r#""\xc3\xbf""#), Some("ÿ".as_bytes().to_vec()));
        assert_eq!(go_unquote("`\\xff`"), Some(b"\\xff".to_vec()));
        assert_eq!(go_unquote("x"), None);
        assert_eq!(go_unquote(r#""\q""#), None);
    }

    #[test]
    fn label_name_literals_must_be_utf8() {
        let err = check_label_name_literals(r#"label_replace(m, "\xff", "", "src", "(.*)")"#).unwrap_err();
        assert_eq!(err.to_string(), "invalid destination label name in label_replace(): \u{fffd}");
        assert_eq!(err.error_type(), "execution");
        // An invalid regex is reported first (by the planner).
        check_label_name_literals(r#"label_replace(m, "\xff", "", "src", "(.*")"#).unwrap();
        let err = check_label_name_literals(r#"label_join(m, "d", ",", "a", "\200")"#).unwrap_err();
        assert_eq!(err.to_string(), "invalid source label name in label_join(): \u{fffd}");
        // An empty source before it is the planner's error, and then the destination is not looked at.
        check_label_name_literals(r#"label_join(m, "\xff", ",", "", "\200")"#).unwrap();
        let err = check_label_name_literals(r#"count_values("a\xc5z", m)"#).unwrap_err();
        assert_eq!(err.to_string(), r#"invalid label name "a\xc5z""#);
        assert_eq!(err.error_type(), "execution");
        // Valid names, and byte escapes elsewhere (a replacement value), are the engine's business.
        check_label_name_literals(r#"label_replace(m, "\xc3\xbf", "\xff", "src", "(.*)")"#).unwrap();
        check_label_name_literals(r#"label_replace(m, "ÿ", "", "src", "(.*)")"#).unwrap();
    }

    #[test]
    fn raw_strings_take_no_escapes() {
        // Prometheus reads the backslashes of a raw string as they are.
        let e = parse(r"app_build_info{version=~`2\.3\..*`}").unwrap();
        let Expr::VectorSelector(vs) = e else { panic!("{e:?}") };
        let m = vs.matchers.matchers.iter().find(|m| m.name == "version").unwrap();
        assert_eq!(m.value, r"2\.3\..*");
        assert!(matches!(&m.op, MatchOp::Re(re) if re.is_match("2.3.1") && !re.is_match("203x1")));
        let Expr::Call(c) = parse(r#"label_replace(x, "d", `$1\n`, "s", `(\w+)"`)"#).unwrap() else { panic!() };
        let strings: Vec<String> = c
            .args
            .args
            .iter()
            .filter_map(|a| match a.as_ref() {
                Expr::StringLiteral(s) => Some(s.val.clone()),
                _ => None,
            })
            .collect();
        assert_eq!(strings, vec!["d", r"$1\n", "s", r#"(\w+)""#]);
        // Escapes in double-quoted strings still work, and a bad one is still an error.
        let Expr::StringLiteral(s) = parse(r#""a\tb\\""#).unwrap() else { panic!() };
        assert_eq!(s.val, "a\tb\\");
        assert!(parse(r#"x{a="2\.3"}"#).unwrap_err().contains("unknown escape sequence"));
    }

    #[test]
    fn byte_escapes_are_bytes() {
        // "\xc3\xbf" is the two bytes of ÿ, in Prometheus as in Go.
        let Expr::StringLiteral(s) = parse(r#""\xc3\xbf\303\277""#).unwrap() else { panic!() };
        assert_eq!(s.val, "ÿÿ");
        let Expr::VectorSelector(vs) = parse(r#"x{a="\xc3\xa9t\xc3\xa9"}"#).unwrap() else { panic!() };
        assert_eq!(vs.matchers.matchers[0].value, "été");
    }

    #[test]
    fn string_literal_rewriting_leaves_other_text_alone() {
        assert!(matches!(go_string_literals(r#"up{a="b"} # `c\d`"#), std::borrow::Cow::Borrowed(_)));
        assert_eq!(go_string_literals(r"x{a=~`\d`} + y{b=`\`}"), r#"x{a=~"\\d"} + y{b="\\"}"#);
        assert_eq!(go_string_literals("`a\\\"b\n`"), r#""a\\\"b\n""#);
        assert_eq!(go_string_literals(r#"'\xc3\xa9' # "\xff""#), r#""é" # "\xff""#);
        // Bytes that are not UTF-8 stay as written (they are checked elsewhere).
        assert_eq!(go_string_literals(r#""\xff""#), r#""\xff""#);
        // An unterminated literal is the parser's business.
        assert_eq!(go_string_literals(r"x{a=`\d"), r"x{a=`\d");
    }

    #[test]
    fn info_selectors_matching_empty_parse() {
        let e = parse("info(x, {data=~\".*\"}) + info(y, {})").unwrap();
        let shown = e.to_string();
        assert_eq!(shown.matches(INFO_SELECTOR_FILLER).count(), 2, "{shown}");
        // Elsewhere such a selector is still the parser's error, with its text.
        let err = parse("{data=~\".*\"}").unwrap_err();
        assert!(err.contains("at least one non-empty matcher"), "{err}");
        assert!(parse("info(x, {a=~\".*\"}) + {b=\"\"}").is_err());
    }

    #[test]
    fn annotation_positions_point_at_the_argument() {
        let pos = |q: &str, m: &str| position_annotations(q, vec![m.to_string()]).remove(0);
        let w = "PromQL warning: quantile value should be between 0 and 1, got NaN";
        assert_eq!(pos("histogram_quantile(NaN, x)", w), format!("{w} (1:20)"));
        assert_eq!(pos("quantile without(point)(NaN, data)", w), format!("{w} (1:25)"));
        assert_eq!(pos("histogram_quantiles(x, \"q\", 0.5, NaN)", w), format!("{w} (1:34)"));
        let le = "PromQL warning: bucket label \"le\" is missing or has a malformed value of \"\" for metric name \"series\"";
        assert_eq!(pos("histogram_quantile(0.8, series)", le), format!("{le} (1:25)"));
        assert_eq!(pos("histogram_quantiles(series, \"q\", 0.1)", le), format!("{le} (1:21)"));
        assert_eq!(pos("histogram_fraction(-Inf, 1, series)", le), format!("{le} (1:29)"));
        assert_eq!(
            pos("sum(histogram_quantile(0.5, other{a=\"(\"})) + histogram_quantile(0.5,\n  series)", le),
            format!("{le} (2:3)")
        );
        let st = "PromQL warning: sample has start time that overlaps with previous sample timestamp for metric \"c\"";
        assert_eq!(pos("sum(rate(b[1m])) + increase(\n c[5m])", st), format!("{st} (2:2)"));
        // Unknown annotations and ones with a position stay as they are.
        assert_eq!(pos("sort(x)", "PromQL warning: something (1:1)"), "PromQL warning: something (1:1)");
        assert_eq!(pos("x", "PromQL info: other"), "PromQL info: other");
    }
}
