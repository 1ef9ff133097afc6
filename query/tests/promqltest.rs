//! PromQL conformance: runs every upstream Prometheus promqltest script (the current set) against
//! Strata's PromQL engine, with the data in `MemSource` and again through the real storage paths
//! the servers query (a head, Parquet blocks in a FILESYSTEM bucket, and both merged as `strata up`
//! does; see `promqltest/storage.rs`).
//!
//! The script language and upstream runner behaviour are described in
//! `shared/spec/promqltest-format.md`. Each `eval` block is one case; an instant eval includes
//! upstream's extra checks (the `@`-pinned re-runs and the range-mode re-check). The test fails on
//! any failing eval. Checked-in lists, each asserted exactly (an entry appearing or disappearing
//! fails the test and says how to update it):
//!
//! - `promqltest-skip.txt`: evals not run (native histograms, syntax promql-parser cannot parse);
//! - `promqltest-unchecked.txt`: instant evals whose `@` or range-mode re-check cannot be built;
//! - `promqltest-storage-differences.txt`: evals that legitimately differ on a storage path, with why;
//! - `promqltest-baseline.txt`: the pass counts per path (a record).
//!
//! `start_timestamps.test` needs start timestamps, which only `MemSource` stores: its evals run on
//! the engine alone and are reported as "engine-only", never counted as passes.
//!
//! The scripts are Prometheus's `promql/promqltest/testdata/*.test`, looked for in
//! `STRATA_PROMQLTEST_DIR`, else `../shared/promqltest-upstream` beside the repository. Without
//! them the test runs only its self-checks and says where the scripts go; under `CI=true` a
//! missing set fails.
//!
//! ```text
//! cargo test -p query --test promqltest            # run; prints per-file counts and a summary
//! STRATA_PROMQLTEST_DIR=/path     the directory of the .test files (PROMQLTEST_DIR also works)
//! PROMQLTEST_VERBOSE=1            every failure in full (default: 5 per file, messages shortened)
//! PROMQLTEST_WRITE_LISTS=1        rewrite the checked-in lists and the baseline from this run
//! PROMQLTEST_FILTER=subquery      only files whose name contains this (list checks off)
//! PROMQLTEST_PATHS=memsource,head only these storage paths (memsource, head, bucket, head+bucket;
//!                                 list checks off)
//! PROMQLTEST_LOOSE_ANNOTATIONS=1  `expect warn|info` lines only require some annotation of the kind
//! PROMQLTEST_TIMEOUT_SECS=10      per-query timeout
//! ```
#![allow(clippy::unwrap_used, clippy::expect_used)]

#[path = "promqltest/check.rs"]
mod check;
#[path = "promqltest/script.rs"]
mod script;
#[path = "promqltest/storage.rs"]
mod storage;

use std::collections::BTreeMap;
use std::future::Future;
use std::io::Write;
use std::path::{Path, PathBuf};
use std::pin::Pin;
use std::sync::{Arc, OnceLock};
use std::time::{Duration, Instant, SystemTime};

use engine::Labels;
use promql_parser::parser::{AtModifier, Expr, VectorSelector};
use query::{QueryResult, Sample, Value};

use script::{Cmd, EvalCmd, LoadCmd, SeqVal};
use storage::{LoadSeries, StoragePath, Store};

/// Failure details printed per file unless `PROMQLTEST_VERBOSE=1`.
const MAX_DETAILS_PER_FILE: usize = 5;
/// Name of the runtime threads that run engine queries (panics there are reported, not printed).
const ENGINE_THREAD: &str = "promqltest-engine";

fn env_on(name: &str) -> bool {
    std::env::var(name).is_ok_and(|v| !v.is_empty() && v != "0")
}

/// `PROMQLTEST_VERBOSE=1`.
pub(crate) fn verbose() -> bool {
    static V: OnceLock<bool> = OnceLock::new();
    *V.get_or_init(|| env_on("PROMQLTEST_VERBOSE"))
}

fn query_timeout() -> Duration {
    let secs = std::env::var("PROMQLTEST_TIMEOUT_SECS").ok().and_then(|s| s.parse().ok()).unwrap_or(10);
    Duration::from_secs(secs)
}

// ---------------------------------------------------------------------------------------------
// The engine under test.
// ---------------------------------------------------------------------------------------------

type QueryFuture = Pin<Box<dyn Future<Output = Result<QueryResult, String>> + Send>>;

/// What the runner needs from a PromQL engine. Errors are the engine's error texts.
trait Backend: Send + Sync {
    fn instant(&self, expr: String, t_ms: i64) -> QueryFuture;
    fn range(&self, expr: String, start_ms: i64, end_ms: i64, step_ms: i64) -> QueryFuture;
}

// ==== ENGINE WIRING: the only place that names `query::Engine`. ===============================
struct StrataEngine(Arc<query::Engine>);

impl Backend for StrataEngine {
    fn instant(&self, expr: String, t_ms: i64) -> QueryFuture {
        let e = self.0.clone();
        Box::pin(async move { e.instant_query(&expr, t_ms).await.map_err(|e| e.to_string()) })
    }
    fn range(&self, expr: String, start_ms: i64, end_ms: i64, step_ms: i64) -> QueryFuture {
        let e = self.0.clone();
        Box::pin(async move { e.range_query(&expr, start_ms, end_ms, step_ms).await.map_err(|e| e.to_string()) })
    }
}

/// A fresh engine over `source`, with the settings the upstream files assume (5m lookback,
/// experimental functions, delayed `__name__` removal and start timestamps on, as upstream's
/// test engine has them). The engine's own timeout is upstream's 100 s; the runner's per-query timeout is
/// shorter.
fn new_backend(source: Arc<dyn engine::SeriesSource>) -> Arc<dyn Backend> {
    let opts = query::EngineOptions {
        lookback_delta_ms: 5 * 60 * 1000,
        timeout: Duration::from_secs(100),
        enable_experimental_functions: true,
        enable_delayed_name_removal: true,
        use_start_timestamps: true,
        ..Default::default()
    };
    Arc::new(StrataEngine(Arc::new(query::Engine::new(source, opts))))
}
// ==== END ENGINE WIRING =========================================================================

/// The outcome of one query.
enum Outcome {
    Ok(QueryResult),
    /// The engine returned an error.
    Err(String),
    /// The engine panicked or hung; always a failure.
    Crash(String),
}

async fn exec(fut: QueryFuture) -> Outcome {
    let handle = tokio::spawn(fut);
    let abort = handle.abort_handle();
    let limit = query_timeout();
    match tokio::time::timeout(limit, handle).await {
        Err(_) => {
            abort.abort();
            Outcome::Crash(format!("query timed out after {limit:?} (runner limit)"))
        }
        Ok(Err(join)) => {
            let msg = if join.is_panic() {
                let p = join.into_panic();
                p.downcast_ref::<&str>()
                    .map(|s| s.to_string())
                    .or_else(|| p.downcast_ref::<String>().cloned())
                    .unwrap_or_else(|| "<non-string panic>".into())
            } else {
                join.to_string()
            };
            Outcome::Crash(format!("engine panicked: {msg}"))
        }
        Ok(Ok(Ok(r))) => Outcome::Ok(r),
        Ok(Ok(Err(e))) => Outcome::Err(e),
    }
}

// ---------------------------------------------------------------------------------------------
// Upstream's extra checks for instant evals.
// ---------------------------------------------------------------------------------------------

/// Functions whose result changes with the evaluation time even with step-invariant arguments;
/// an instant eval calling one is not re-run with `@`.
const AT_UNSAFE_FUNCTIONS: &[&str] = &[
    "days_in_month",
    "day_of_month",
    "day_of_week",
    "day_of_year",
    "hour",
    "minute",
    "month",
    "year",
    "predict_linear",
    "time",
    "timestamp",
    "start",
    "end",
    "range",
    "step",
];

fn pin_at(e: &mut Expr, at: &AtModifier, unsafe_fn: &mut bool) {
    let needs = |a: &Option<AtModifier>| !matches!(a, Some(AtModifier::At(_)));
    match e {
        Expr::Aggregate(a) => {
            pin_at(&mut a.expr, at, unsafe_fn);
            if let Some(p) = a.param.as_mut() {
                pin_at(p, at, unsafe_fn);
            }
        }
        Expr::Unary(u) => pin_at(&mut u.expr, at, unsafe_fn),
        Expr::Binary(b) => {
            pin_at(&mut b.lhs, at, unsafe_fn);
            pin_at(&mut b.rhs, at, unsafe_fn);
        }
        Expr::Paren(p) => pin_at(&mut p.expr, at, unsafe_fn),
        // The subquery gets the timestamp; nothing inside it is touched (or inspected).
        Expr::Subquery(s) => {
            if needs(&s.at) {
                s.at = Some(at.clone());
            }
        }
        Expr::VectorSelector(v) => {
            if needs(&v.at) {
                v.at = Some(at.clone());
            }
        }
        Expr::MatrixSelector(m) => {
            if needs(&m.vs.at) {
                m.vs.at = Some(at.clone());
            }
        }
        Expr::Call(c) => {
            *unsafe_fn |= AT_UNSAFE_FUNCTIONS.contains(&c.func.name);
            for a in c.args.args.iter_mut() {
                pin_at(a, at, unsafe_fn);
            }
        }
        Expr::NumberLiteral(_) | Expr::StringLiteral(_) | Expr::Extension(_) => {}
    }
}

/// The `@`-pinned variants of an instant eval: every selector and subquery without a fixed `@`
/// gets `@ <eval time>`, evaluated at -10T, 0, T/5, T, 10T (or -1s, 0, 1s when T = 0). None when
/// the query calls a function upstream exempts (its result depends on the evaluation time) or
/// is invalid and expected to fail. `Err` (listed in `promqltest-unchecked.txt`) when the
/// variants cannot be built: promql-parser cannot read the query (the engine reads it through
/// its own fallback), or the re-printed query does not parse back to the same expression.
fn at_variants(ev: &EvalCmd) -> Result<Vec<(String, i64)>, String> {
    let (expr, t) = (ev.expr.as_str(), ev.eval_t);
    let mut ast = match promql_parser::parser::parse(expr) {
        Ok(a) => a,
        Err(_) if ev.is_fail() => return Ok(Vec::new()),
        Err(e) => return Err(format!("@ re-check: promql-parser cannot parse the query: {}", one_line(&e, 100))),
    };
    let offset = Duration::from_millis(t.unsigned_abs());
    let when =
        if t >= 0 { SystemTime::UNIX_EPOCH.checked_add(offset) } else { SystemTime::UNIX_EPOCH.checked_sub(offset) };
    let Some(when) = when else {
        return Err(format!("@ re-check: eval time {t} ms is out of range"));
    };
    let mut unsafe_fn = false;
    pin_at(&mut ast, &AtModifier::At(when), &mut unsafe_fn);
    if unsafe_fn {
        return Ok(Vec::new());
    }
    let text = ast.to_string();
    match promql_parser::parser::parse(&text) {
        Ok(mut again) => {
            sort_matchers(&mut again);
            sort_matchers(&mut ast);
            if again != ast {
                return Err(format!("@ re-check: re-printed query {text:?} parses to a different expression"));
            }
        }
        Err(e) => return Err(format!("@ re-check: re-printed query {text:?} does not parse: {}", one_line(&e, 100))),
    }
    let text = restore_byte_escapes(expr, text);
    let times = if t == 0 { vec![-1000, 0, 1000] } else { vec![-10 * t, 0, t / 5, t, 10 * t] };
    Ok(times.into_iter().map(|et| (text.clone(), et)).collect())
}

/// Puts string literals written with byte escapes (`"\xff"`, `"\377"`) back into a re-printed
/// query. Upstream's printer quotes the literal's bytes, so the escape survives; promql-parser
/// decodes such an escape to a character (`ÿ`) and prints that, which would turn an invalid
/// label name into a valid one in the @-variants.
fn restore_byte_escapes(original: &str, mut printed: String) -> String {
    let b = original.as_bytes();
    let mut i = 0;
    while i < b.len() {
        let q = b[i];
        if !matches!(q, b'"' | b'\'') {
            i += 1;
            continue;
        }
        let mut j = i + 1;
        let mut byte_escape = false;
        while j < b.len() && b[j] != q {
            if b[j] == b'\\' {
                byte_escape |= matches!(b.get(j + 1), Some(b'x' | b'0'..=b'7'));
                j += 1;
            }
            j += 1;
        }
        let raw = &original[i..(j + 1).min(b.len())];
        if byte_escape && let Ok(lit) = promql_parser::parser::parse(raw) {
            printed = printed.replace(&lit.to_string(), raw);
        }
        i = j + 1;
    }
    printed
}

/// Puts the matchers of every selector in one order (the printer reorders them).
fn sort_matchers(e: &mut Expr) {
    let sort = |vs: &mut VectorSelector| {
        let key = |m: &promql_parser::label::Matcher| (m.name.clone(), m.op.to_string(), m.value.clone());
        vs.matchers.matchers.sort_by_key(key);
        for g in vs.matchers.or_matchers.iter_mut() {
            g.sort_by_key(key);
        }
    };
    match e {
        Expr::Aggregate(a) => {
            sort_matchers(&mut a.expr);
            if let Some(p) = a.param.as_mut() {
                sort_matchers(p);
            }
        }
        Expr::Unary(u) => sort_matchers(&mut u.expr),
        Expr::Binary(b) => {
            sort_matchers(&mut b.lhs);
            sort_matchers(&mut b.rhs);
        }
        Expr::Paren(p) => sort_matchers(&mut p.expr),
        Expr::Subquery(s) => sort_matchers(&mut s.expr),
        Expr::VectorSelector(v) => sort(v),
        Expr::MatrixSelector(m) => sort(&mut m.vs),
        Expr::Call(c) => c.args.args.iter_mut().for_each(|a| sort_matchers(a)),
        Expr::NumberLiteral(_) | Expr::StringLiteral(_) | Expr::Extension(_) => {}
    }
}

fn uses_query_context_fn(expr: &str) -> bool {
    static R: OnceLock<regex::Regex> = OnceLock::new();
    R.get_or_init(|| regex::Regex::new(r"(start|end|range|step)\(\)").expect("regex")).is_match(expr)
}

/// Runs the query of an eval and checks failure and annotation expectations: `Ok(Some)` is a
/// result to compare, `Ok(None)` an expected failure that happened as expected.
async fn eval_query(ev: &EvalCmd, fut: QueryFuture, loose: bool) -> Result<Option<QueryResult>, String> {
    let res = match exec(fut).await {
        Outcome::Crash(m) => return Err(m),
        Outcome::Err(e) if ev.is_fail() => return check::check_expected_failure(ev, &e).map(|()| None),
        Outcome::Err(e) => return Err(format!("error evaluating query: {e}")),
        Outcome::Ok(r) => r,
    };
    if ev.is_fail() {
        return Err(format!("expected an error but got none (result {})", check::fmt_value(&res.value)));
    }
    check::check_annotations(ev, &res, loose)?;
    Ok(Some(res))
}

/// One instant query of an eval plus its range-mode re-check.
async fn run_instant(ev: &EvalCmd, be: &Arc<dyn Backend>, q: &str, t: i64, loose: bool) -> Result<(), String> {
    let Some(res) = eval_query(ev, be.instant(q.to_string(), t), loose).await? else {
        return Ok(());
    };
    check::compare_result(ev, &res.value)?;
    if ev.exclude_from_range || uses_query_context_fn(q) {
        return Ok(());
    }
    let rr = match exec(be.range(q.to_string(), t - 60_000, t + 60_000, 60_000)).await {
        Outcome::Crash(m) => return Err(format!("range mode: {m}")),
        Outcome::Err(e) => return Err(format!("error evaluating query in range mode: {e}")),
        Outcome::Ok(r) => r,
    };
    if ev.is_ordered() {
        return Ok(());
    }
    let Value::Matrix(m) = &rr.value else {
        return Err(format!("range mode: expected a matrix, got {}", check::fmt_value(&rr.value)));
    };
    check::assert_matrix_sorted(m).map_err(|e| format!("range mode: {e}"))?;
    let vec: Vec<Sample> = m
        .iter()
        .filter_map(|s| s.points.iter().find(|p| p.0 == t).map(|p| Sample { labels: s.labels.clone(), t, v: p.1 }))
        .collect();
    let r = if matches!(res.value, Value::Scalar { .. }) {
        match vec.first() {
            Some(s) => check::compare_result(ev, &Value::Scalar { t, v: s.v }),
            None => Err("no point at the evaluation time".into()),
        }
    } else {
        check::compare_vector(ev, &vec)
    };
    r.map_err(|e| format!("range mode: {e}"))
}

/// Runs one eval with all its checks; `Ok` = pass.
async fn run_eval(ev: &EvalCmd, be: &Arc<dyn Backend>, stats: &mut FileReport) -> Result<(), String> {
    let loose = env_on("PROMQLTEST_LOOSE_ANNOTATIONS");
    if ev.is_range {
        let end = ev.end.unwrap_or(ev.start);
        return match eval_query(ev, be.range(ev.expr.clone(), ev.start, end, ev.step), loose).await? {
            Some(res) => check::compare_result(ev, &res.value),
            None => Ok(()),
        };
    }
    let variants = match at_variants(ev) {
        Ok(v) => v,
        Err(e) => {
            stats.unchecked.push((ev.line, e));
            Vec::new()
        }
    };
    run_instant(ev, be, &ev.expr, ev.eval_t, loose).await?;
    for (q, t) in variants {
        run_instant(ev, be, &q, t, loose).await.map_err(|e| format!("[@-variant `{q}` at t={t}ms] {e}"))?;
    }
    Ok(())
}

// ---------------------------------------------------------------------------------------------
// Skip detection.
// ---------------------------------------------------------------------------------------------

fn selectors<'a>(e: &'a Expr, out: &mut Vec<&'a VectorSelector>) {
    match e {
        Expr::Aggregate(a) => {
            selectors(&a.expr, out);
            if let Some(p) = &a.param {
                selectors(p, out);
            }
        }
        Expr::Unary(u) => selectors(&u.expr, out),
        Expr::Binary(b) => {
            selectors(&b.lhs, out);
            selectors(&b.rhs, out);
        }
        Expr::Paren(p) => selectors(&p.expr, out),
        Expr::Subquery(s) => selectors(&s.expr, out),
        Expr::VectorSelector(v) => out.push(v),
        Expr::MatrixSelector(m) => out.push(&m.vs),
        Expr::Call(c) => c.args.args.iter().for_each(|a| selectors(a, out)),
        Expr::NumberLiteral(_) | Expr::StringLiteral(_) | Expr::Extension(_) => {}
    }
}

fn selector_matches(vs: &VectorSelector, l: &Labels) -> bool {
    let val = |n: &str| l.get(n).unwrap_or("").to_string();
    if let Some(n) = &vs.name
        && val("__name__") != *n
    {
        return false;
    }
    let all = |ms: &[promql_parser::label::Matcher]| ms.iter().all(|m| m.is_match(&val(&m.name)));
    all(&vs.matchers.matchers) && (vs.matchers.or_matchers.is_empty() || vs.matchers.or_matchers.iter().any(|g| all(g)))
}

fn one_line(s: &str, max: usize) -> String {
    let s: String = s.split_whitespace().collect::<Vec<_>>().join(" ");
    if s.len() <= max {
        return s;
    }
    let mut cut = max;
    while !s.is_char_boundary(cut) {
        cut -= 1;
    }
    format!("{}...", &s[..cut])
}

/// Names the construct promql-parser 0.11 fails on (heuristic, for the skip list).
fn unparsable_construct(expr: &str, err: &str) -> String {
    static CHECKS: OnceLock<Vec<(regex::Regex, &'static str)>> = OnceLock::new();
    let checks = CHECKS.get_or_init(|| {
        [
            (r"\b(anchored|smoothed)\b", "extended range selector modifier (anchored/smoothed)"),
            (r"\b(fill|fill_left|fill_right)\s*\(", "binary-operator fill modifier (fill/fill_left/fill_right)"),
            (r"[<>]/", "histogram trim operator (</ or >/)"),
            (r"(?i)\b(step|range|min_of|max_of)\s*\(", "duration expression with step()/range()/min_of()/max_of()"),
            (
                r"\[[^\]:]*[-+*/%^()][^\]]*\]|\[[^\]]*:[^\]]*[-+*/%^()][^\]]*\]|offset\s*\(|offset\s+-?\s*[0-9a-z]+\s*[-+*/%^]|@\s*\(",
                "duration expression (arithmetic in range/offset/@)",
            ),
            (
                r"\[\s*[0-9.]+\s*[:\]]|\[[^\]]*:\s*[0-9.]+\s*\]|offset\s+-?[0-9.]+(\s|\)|$)",
                "number without unit used as duration",
            ),
            (r"__type__|__unit__", "type/unit label selectors"),
        ]
        .into_iter()
        .map(|(p, n)| (regex::Regex::new(p).expect("regex"), n))
        .collect()
    });
    if let Some(i) = err.find("unknown function with name") {
        return one_line(&err[i..], 80);
    }
    for (r, name) in checks {
        if r.is_match(expr) {
            return (*name).to_string();
        }
    }
    format!("other syntax (parser: {})", one_line(err, 100))
}

/// Why an eval cannot run on Strata yet, if it cannot: native histograms (in the expected result
/// or among the series its selectors match), or syntax promql-parser 0.11 cannot parse.
fn skip_reason(ev: &EvalCmd, hist_series: &[Labels]) -> Option<String> {
    if ev.expects_histograms() {
        return Some("native histograms: expected result has histogram values".into());
    }
    let parsed = std::panic::catch_unwind(|| promql_parser::parser::parse(&ev.expr))
        .unwrap_or_else(|_| Err("promql-parser panicked".to_string()));
    let ast = match parsed {
        Ok(a) => a,
        // A query upstream rejects too is a normal `expect fail` case for Strata's engine, unless
        // the expected message names a construct promql-parser cannot read at all.
        Err(e) if ev.is_fail() && check::check_expected_failure(ev, &e).is_ok() => return None,
        // The engine reads an `info()` label selector whose matchers all match the empty string
        // (promql-parser alone rejects it); native-histogram detection does not apply to them.
        Err(e) if ev.expr.contains("info(") && e.contains("at least one non-empty matcher") => return None,
        Err(e) => return Some(format!("promql-parser 0.11 cannot parse: {}", unparsable_construct(&ev.expr, &e))),
    };
    let mut sels = Vec::new();
    selectors(&ast, &mut sels);
    for vs in sels {
        if let Some(l) = hist_series.iter().find(|l| selector_matches(vs, l)) {
            return Some(format!("native histograms: selects {}", one_line(&l.to_string(), 80)));
        }
    }
    None
}

// ---------------------------------------------------------------------------------------------
// Running files.
// ---------------------------------------------------------------------------------------------

/// The file whose evals need start timestamps, which only `MemSource` stores: they run on the
/// engine alone and are reported apart, never counted as conformance passes.
const ENGINE_ONLY_FILE: &str = "start_timestamps.test";

#[derive(Debug, Default)]
struct FileReport {
    name: String,
    path: Option<StoragePath>,
    passed: usize,
    /// Passing evals of [`ENGINE_ONLY_FILE`] (engine-only, not counted).
    engine_only: usize,
    failed: usize,
    /// (line, expression, message)
    failures: Vec<(usize, String, String)>,
    /// (line, reason)
    skips: Vec<(usize, String)>,
    /// Instant evals whose `@` re-check could not be built: (line, reason).
    unchecked: Vec<(usize, String)>,
    /// Loads the storage did not take as given: (line of the load, message).
    load_problems: Vec<(usize, String)>,
    runner_error: Option<String>,
    elapsed: Duration,
}

/// The data of one `clear` scope.
struct Scope {
    store: Store,
    hist_series: Vec<Labels>,
    backend: Option<Arc<dyn Backend>>,
}

impl Scope {
    async fn new(path: StoragePath) -> Result<Self, String> {
        Ok(Scope { store: Store::new(path).await?, hist_series: Vec::new(), backend: None })
    }

    async fn load(&mut self, cmd: &LoadCmd) -> Result<(), String> {
        let mut batch: Vec<LoadSeries> = Vec::new();
        for s in &cmd.series {
            let (mut ts, mut vs, mut sts) = (Vec::new(), Vec::new(), Vec::new());
            let mut hist = false;
            for (i, v) in s.vals.iter().enumerate() {
                match v {
                    SeqVal::Float(f) => {
                        let t = i as i64 * cmd.interval;
                        ts.push(t);
                        vs.push(*f);
                        // `@st` offsets are relative to the sample's time; none = unknown (0).
                        sts.push(s.st.as_ref().and_then(|o| o.get(i).copied().flatten()).map_or(0, |o| t + o));
                    }
                    SeqVal::Hist => hist = true,
                    SeqVal::Omitted => {}
                }
            }
            if hist && !self.hist_series.contains(&s.labels) {
                self.hist_series.push(s.labels.clone());
            }
            if !ts.is_empty() {
                batch.push((s.labels.clone(), ts, vs, sts));
            }
        }
        if cmd.with_nhcb {
            for s in &cmd.series {
                if let Some(base) = nhcb_base(&s.labels)
                    && !self.hist_series.contains(&base)
                {
                    self.hist_series.push(base);
                }
            }
        }
        self.backend = None;
        self.store.load(&batch).await
    }

    fn backend(&mut self) -> Arc<dyn Backend> {
        let source = self.store.source();
        self.backend.get_or_insert_with(|| new_backend(source)).clone()
    }
}

/// The NHCB series a `load_with_nhcb` builds from a classic-histogram series, if any.
fn nhcb_base(l: &Labels) -> Option<Labels> {
    let name = l.metric_name()?;
    let base = if let Some(b) = name.strip_suffix("_bucket") {
        let le: f64 = l.get("le")?.trim().parse().ok()?;
        if le.is_nan() {
            return None;
        }
        b
    } else if let Some(b) = name.strip_suffix("_count") {
        b
    } else {
        name.strip_suffix("_sum")?
    };
    let mut out = l.clone();
    out.remove("le");
    out.set("__name__", base);
    Some(out)
}

async fn run_file(name: String, text: String, path: StoragePath) -> FileReport {
    let started = Instant::now();
    let mut rep = FileReport { name, path: Some(path), ..Default::default() };
    let cmds = match script::parse_script(&text) {
        Ok(c) => c,
        Err(e) => {
            rep.runner_error = Some(format!("{}: parse error: {e}", rep.name));
            return rep;
        }
    };
    let engine_only = rep.name == ENGINE_ONLY_FILE;
    let mut scope = match Scope::new(path).await {
        Ok(s) => s,
        Err(e) => {
            rep.runner_error = Some(format!("{} [{}]: {e}", rep.name, path.name()));
            return rep;
        }
    };
    for cmd in &cmds {
        match cmd {
            Cmd::Clear => match Scope::new(path).await {
                Ok(s) => scope = s,
                Err(e) => {
                    rep.runner_error = Some(format!("{} [{}]: {e}", rep.name, path.name()));
                    return rep;
                }
            },
            Cmd::Load(l) => {
                if let Err(e) = scope.load(l).await {
                    rep.load_problems.push((l.line, e));
                }
            }
            Cmd::Eval(ev) => {
                if let Some(reason) = skip_reason(ev, &scope.hist_series) {
                    rep.skips.push((ev.line, reason));
                    continue;
                }
                let be = scope.backend();
                match run_eval(ev, &be, &mut rep).await {
                    Ok(()) if engine_only => rep.engine_only += 1,
                    Ok(()) => rep.passed += 1,
                    Err(msg) => {
                        rep.failed += 1;
                        rep.failures.push((ev.line, ev.expr.clone(), msg));
                    }
                }
            }
        }
    }
    rep.elapsed = started.elapsed();
    rep
}

/// The directory of Prometheus's promqltest scripts: `STRATA_PROMQLTEST_DIR` (or the older
/// `PROMQLTEST_DIR`), else `../shared/promqltest-upstream` beside the repository.
fn test_dir() -> PathBuf {
    for var in ["STRATA_PROMQLTEST_DIR", "PROMQLTEST_DIR"] {
        if let Ok(d) = std::env::var(var)
            && !d.is_empty()
        {
            return PathBuf::from(d);
        }
    }
    // query/ -> the repository -> beside it.
    let repo = Path::new(env!("CARGO_MANIFEST_DIR")).parent().unwrap_or(Path::new(".."));
    repo.parent().unwrap_or(Path::new("..")).join("shared/promqltest-upstream")
}

fn tests_path(file: &str) -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("tests").join(file)
}

/// A checked-in list: `<key> <reason>` per line, `#` comments. Keys are `<file>:<line>`, or
/// `<path> <file>:<line>` in the storage-differences list (`key_words` = 2).
fn read_list(path: &Path, key_words: usize) -> BTreeMap<String, String> {
    let text = std::fs::read_to_string(path).unwrap_or_default();
    let mut out = BTreeMap::new();
    for (n, l) in text.lines().enumerate() {
        let l = l.trim();
        if l.is_empty() || l.starts_with('#') {
            continue;
        }
        let mut parts = l.splitn(key_words + 1, ' ');
        let key: Vec<&str> = parts.by_ref().take(key_words).collect();
        let reason = parts.next().unwrap_or("").trim();
        let ok = key.len() == key_words
            && key.last().and_then(|k| k.rsplit_once(':')).is_some_and(|(_, ln)| ln.parse::<usize>().is_ok());
        assert!(ok, "{}:{}: malformed line {l:?}", path.display(), n + 1);
        out.insert(key.join(" "), reason.to_string());
    }
    out
}

/// How to regenerate the checked-in lists.
const WRITE_HINT: &str = "regenerate the lists with PROMQLTEST_WRITE_LISTS=1 cargo test -p query --test promqltest \
                          and review the diff";

/// Compares a detected set with a checked-in list (exactly), or rewrites the list.
fn check_list(
    file: &str,
    header: &str,
    detected: &BTreeMap<String, String>,
    keep_reasons: bool,
    problems: &mut Vec<String>,
) {
    let path = tests_path(file);
    let listed = read_list(&path, if file.contains("storage") { 2 } else { 1 });
    if env_on("PROMQLTEST_WRITE_LISTS") {
        let mut text = String::from(header);
        // In file order: `<file>:<line>` sorted by file, then line number.
        let order = |k: &String| {
            let (f, l) = k.rsplit_once(':').unwrap_or((k.as_str(), "0"));
            (f.to_string(), l.parse::<usize>().unwrap_or(0))
        };
        let mut entries: Vec<(&String, &String)> = detected.iter().collect();
        entries.sort_by_key(|(k, _)| order(k));
        for (k, why) in entries {
            // Hand-written reasons (investigated differences) survive a rewrite.
            let why = if keep_reasons { listed.get(k).unwrap_or(why) } else { why };
            text.push_str(&format!("{k} {why}\n"));
        }
        std::fs::write(&path, text).unwrap_or_else(|e| panic!("writing {}: {e}", path.display()));
        eprintln!("promqltest: wrote {} entries to {}", detected.len(), path.display());
        return;
    }
    for (k, why) in detected {
        if !listed.contains_key(k) {
            problems.push(format!("{k} ({why}) is not in {file}: {WRITE_HINT}"));
        }
    }
    for (k, why) in &listed {
        if !detected.contains_key(k) {
            problems.push(format!("{k} is in {file} ({why}) but does not apply any more: {WRITE_HINT}"));
        }
    }
}

fn report(out: &mut impl Write, reps: &[FileReport], differences: &BTreeMap<String, String>) {
    for r in reps {
        let path = r.path.map_or("?", StoragePath::name);
        let listed = |line: usize| differences.contains_key(&format!("{path} {}:{line}", r.name));
        let unlisted: Vec<_> = r.failures.iter().filter(|f| !listed(f.0)).collect();
        let engine_only = if r.engine_only > 0 {
            format!(", {} engine-only (MemSource only, not counted)", r.engine_only)
        } else {
            String::new()
        };
        let differ = r.failures.len() - unlisted.len();
        let differ = if differ > 0 { format!(", {differ} listed storage differences") } else { String::new() };
        let _ = writeln!(
            out,
            "[{path}] {}: {} passed, {} failed, {} skipped{engine_only}{differ} ({:.1}s)",
            r.name,
            r.passed,
            unlisted.len(),
            r.skips.len(),
            r.elapsed.as_secs_f64()
        );
        let n = if verbose() { usize::MAX } else { MAX_DETAILS_PER_FILE };
        for (line, expr, msg) in unlisted.iter().take(n) {
            let _ = writeln!(out, "  FAIL [{path}] {}:{}: {}\n       {}", r.name, line, expr, msg);
        }
        if unlisted.len() > n {
            let _ = writeln!(out, "  ... {} more failures (PROMQLTEST_VERBOSE=1 shows all)", unlisted.len() - n);
        }
        for (line, msg) in &r.load_problems {
            let _ = writeln!(out, "  load [{path}] {}:{}: {}", r.name, line, msg);
        }
    }
}

/// The storage paths to run (`PROMQLTEST_PATHS=memsource,head,...`; default all).
fn selected_paths() -> Vec<StoragePath> {
    match std::env::var("PROMQLTEST_PATHS") {
        Ok(v) if !v.trim().is_empty() => v
            .split(',')
            .map(|s| {
                StoragePath::from_name(s.trim()).unwrap_or_else(|| {
                    panic!("PROMQLTEST_PATHS: unknown path {s:?} (memsource, head, bucket, head+bucket)")
                })
            })
            .collect(),
        _ => StoragePath::ALL.to_vec(),
    }
}

/// Whether a file also runs through the real storage paths: every file except the one needing
/// start timestamps, which the head, blocks and remote write 1.0 do not store.
fn runs_on_storage(file: &str) -> bool {
    file != ENGINE_ONLY_FILE
}

#[test]
fn promqltest() {
    script::self_check();
    check::self_check();

    let dir = test_dir();
    if !dir.is_dir() {
        let msg = format!(
            "promqltest: the upstream PromQL test scripts are not at {}.\n\
             They are Prometheus's own promqltest files: copy the *.test files of Prometheus's \
             promql/promqltest/testdata directory (github.com/prometheus/prometheus) into that directory, \
             or point STRATA_PROMQLTEST_DIR at a directory holding them.",
            dir.display()
        );
        assert!(!env_on("CI"), "{msg}\nCI=true: a missing script set fails the test.");
        // Straight to stderr: cargo's test harness hides `eprintln!` output of a passing test.
        let _ = writeln!(
            std::io::stderr(),
            "{msg}\nOnly the runner's self-checks ran; the conformance run was left out (it fails under CI=true)."
        );
        return;
    }
    let filter = std::env::var("PROMQLTEST_FILTER").unwrap_or_default();
    let mut files: Vec<PathBuf> = std::fs::read_dir(&dir)
        .unwrap_or_else(|e| panic!("promqltest: cannot read {}: {e}", dir.display()))
        .filter_map(|e| e.ok().map(|e| e.path()))
        .filter(|p| p.is_file() && p.extension().is_some_and(|x| x == "test"))
        .collect();
    files.sort();
    assert!(!files.is_empty(), "promqltest: no .test files in {}", dir.display());
    let files: Vec<PathBuf> = files
        .into_iter()
        .filter(|p| filter.is_empty() || p.file_name().is_some_and(|n| n.to_string_lossy().contains(&filter)))
        .collect();
    let paths = selected_paths();

    // Engine panics are reported as failures; keep their default panic output off the terminal.
    let default_hook = std::panic::take_hook();
    std::panic::set_hook(Box::new(move |info| {
        if std::thread::current().name() != Some(ENGINE_THREAD) {
            default_hook(info);
        }
    }));
    let rt = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(4)
        .thread_name(ENGINE_THREAD)
        .enable_all()
        .build()
        .expect("tokio runtime");
    let started = Instant::now();
    let reports: Vec<FileReport> = rt.block_on(async {
        let mut handles = Vec::new();
        for p in &files {
            let name = p.file_name().map(|n| n.to_string_lossy().into_owned()).unwrap_or_default();
            let text = std::fs::read_to_string(p).unwrap_or_else(|e| panic!("cannot read {}: {e}", p.display()));
            for &path in &paths {
                if path != StoragePath::Mem && !runs_on_storage(&name) {
                    continue;
                }
                let (name, text) = (name.clone(), text.clone());
                handles.push((name.clone(), path, tokio::spawn(run_file(name, text, path))));
            }
        }
        let mut out = Vec::new();
        for (name, path, h) in handles {
            out.push(h.await.unwrap_or_else(|e| FileReport {
                runner_error: Some(format!("{name} [{}]: runner task failed: {e}", path.name())),
                name,
                path: Some(path),
                ..Default::default()
            }));
        }
        out
    });
    rt.shutdown_background();

    let full_run = filter.is_empty() && paths == StoragePath::ALL;
    let mut problems: Vec<String> = reports.iter().filter_map(|r| r.runner_error.clone()).collect();
    let key = |r: &FileReport, line: usize| format!("{}:{line}", r.name);
    let of_path = |p: StoragePath| reports.iter().filter(move |r| r.path == Some(p));

    // Storage paths: an eval failing there is a listed, investigated difference or a failure.
    let differences_file = "promqltest-storage-differences.txt";
    let listed_differences = read_list(&tests_path(differences_file), 2);
    let mut differences: BTreeMap<String, String> = BTreeMap::new();
    for r in reports.iter().filter(|r| r.path != Some(StoragePath::Mem)) {
        let path = r.path.map_or("?", StoragePath::name);
        for (line, _, msg) in &r.failures {
            differences.insert(format!("{path} {}", key(r, *line)), format!("UNINVESTIGATED: {}", one_line(msg, 160)));
        }
    }
    let mut err = std::io::stderr();
    report(&mut err, &reports, &listed_differences);

    let mut counts: Vec<(String, usize)> = Vec::new();
    for &p in &paths {
        let passed: usize = of_path(p).map(|r| r.passed).sum();
        let failed: usize = of_path(p).map(|r| r.failed).sum();
        let skipped: usize = of_path(p).map(|r| r.skips.len()).sum();
        let engine_only: usize = of_path(p).map(|r| r.engine_only).sum();
        let listed = of_path(p)
            .flat_map(|r| r.failures.iter().map(move |f| format!("{} {}", p.name(), key(r, f.0))))
            .filter(|k| listed_differences.contains_key(k))
            .count();
        let _ = writeln!(
            err,
            "promqltest [{}]: {passed} passed, {failed} failed ({listed} of them listed storage differences), \
             {skipped} skipped{}",
            p.name(),
            if p == StoragePath::Mem {
                let unchecked: usize = of_path(p).map(|r| r.unchecked.len()).sum();
                format!(
                    ", {engine_only} engine-only passes in {ENGINE_ONLY_FILE} (MemSource only, not counted), \
                     {unchecked} instant evals without their @ re-check (promqltest-unchecked.txt)"
                )
            } else {
                String::new()
            }
        );
        counts.push((p.name().to_string(), passed));
        if p == StoragePath::Mem {
            counts.push(("engine-only".into(), engine_only));
            // The engine's own run: any failure fails the test.
            for r in of_path(p) {
                for (line, expr, msg) in &r.failures {
                    problems.push(format!("[memsource] {}: {expr}: {}", key(r, *line), one_line(msg, 200)));
                }
            }
        } else {
            for r in of_path(p) {
                for (line, expr, msg) in &r.failures {
                    let k = format!("{} {}", p.name(), key(r, *line));
                    if !listed_differences.contains_key(&k) && !full_run {
                        problems.push(format!("[{}] {}: {expr}: {}", p.name(), key(r, *line), one_line(msg, 200)));
                    }
                }
            }
        }
    }

    if full_run {
        let skipped: BTreeMap<String, String> = of_path(StoragePath::Mem)
            .flat_map(|r| r.skips.iter().map(move |(l, why)| (key(r, *l), why.clone())))
            .collect();
        check_list(
            "promqltest-skip.txt",
            "# Upstream promqltest evals Strata skips: <file>:<line> <reason>. Only two reasons are allowed:\n\
             # native histograms, and syntax promql-parser 0.11 cannot parse. This list only shrinks.\n\
             # Checked exactly by cargo test -p query --test promqltest; PROMQLTEST_WRITE_LISTS=1 rewrites it.\n",
            &skipped,
            false,
            &mut problems,
        );
        let unchecked: BTreeMap<String, String> = of_path(StoragePath::Mem)
            .flat_map(|r| r.unchecked.iter().map(move |(l, why)| (key(r, *l), why.clone())))
            .collect();
        check_list(
            "promqltest-unchecked.txt",
            "# Instant evals whose upstream re-checks (the @-pinned re-runs, the range-mode re-check) the\n\
             # runner cannot build: <file>:<line> <reason>. The eval itself runs and must pass.\n\
             # Checked exactly by cargo test -p query --test promqltest; PROMQLTEST_WRITE_LISTS=1 rewrites it.\n",
            &unchecked,
            false,
            &mut problems,
        );
        check_list(
            differences_file,
            "# Evals that pass on MemSource but not through a real storage path (head, bucket blocks, or\n\
             # both merged as `strata up` does): <path> <file>:<line> <why>. Each entry is investigated;\n\
             # the reason says why the real path legitimately differs. Checked exactly; PROMQLTEST_WRITE_LISTS=1\n\
             # rewrites it keeping the reasons written here (new entries say UNINVESTIGATED).\n\
             # The head runs with an out-of-order window covering every script (receive's\n\
             # --tsdb.out-of-order.time-window): each load block starts at t = 0 again. Without one it\n\
             # rejects three loads as too old (at_modifier.test:5, selectors.test:131 and :135: older than\n\
             # the head's newest sample minus 1h, as Prometheus's head does) and at_modifier.test:70 fails.\n",
            &differences,
            true,
            &mut problems,
        );
        let mut text = String::from(
            "# Passing upstream promqltest evals per storage path (a record; checked exactly).\n\
             # engine-only: start_timestamps.test evals that pass on MemSource, not counted as passes.\n",
        );
        for (name, n) in &counts {
            text.push_str(&format!("{name} {n}\n"));
        }
        let base_path = tests_path("promqltest-baseline.txt");
        if env_on("PROMQLTEST_WRITE_LISTS") {
            std::fs::write(&base_path, &text).unwrap_or_else(|e| panic!("writing {}: {e}", base_path.display()));
        } else if std::fs::read_to_string(&base_path).unwrap_or_default() != text {
            problems.push(format!("the pass counts differ from promqltest-baseline.txt (now:\n{text}): {WRITE_HINT}"));
        }
    } else {
        let _ = writeln!(
            err,
            "promqltest: PROMQLTEST_FILTER or PROMQLTEST_PATHS set: the lists are not checked, and every \
             failure counts"
        );
    }

    let _ = writeln!(err, "promqltest: {} file runs in {:.1}s", reports.len(), started.elapsed().as_secs_f64());
    for p in &problems {
        let _ = writeln!(err, "promqltest: ERROR {p}");
    }
    assert!(problems.is_empty(), "promqltest: {} problem(s), see above", problems.len());
}
