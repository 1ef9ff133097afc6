//! The endpoint handlers: parse the form, call the engine or the source, encode the answer.

use std::collections::{BTreeMap, BTreeSet};
use std::future::Future;
use std::sync::Arc;
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use axum::body::{Body, Bytes};
use axum::extract::{Path, RawQuery, State};
use axum::http::{HeaderMap, HeaderValue, Method, StatusCode, header};
use axum::response::Response;
use engine::{Labels, Matcher, SeriesSource};
use prometheus_client::metrics::gauge::Gauge;

use super::ApiState;
use super::json::{self, write_str};
use super::params::{
    Form, invalid_param, parse_bool, parse_duration, parse_limit, parse_matches, parse_selector_param, parse_start_end,
    parse_time, unescape_label_name, valid_label_name,
};
use crate::engine::Engine;
use crate::error::{Error, Result};
use crate::storeapi::{ReadOptions, Warnings};
use crate::value::Value;

/// Most points per series a range query may ask for, as Prometheus.
const MAX_POINTS_PER_SERIES: i64 = 11_000;

/// The version reported to clients that pick features by Prometheus version (Grafana): the
/// Prometheus release whose API and PromQL semantics Strata follows.
const PROMETHEUS_COMPAT_VERSION: &str = "3.0.0";

/// The warning Prometheus adds when `limit` cut the results.
const TRUNCATED: &str = "results truncated due to limit";

/// A successful answer: the envelope up to and including the encoded `data` (it starts with
/// [`json::SUCCESS_OPEN`], so big results are written once, straight into the response body),
/// plus annotations.
struct Answer {
    body: String,
    warnings: Vec<String>,
    infos: Vec<String>,
}

impl Answer {
    fn data(data: String) -> Self {
        Answer { body: open_body(&data), warnings: vec![], infos: vec![] }
    }
}

/// A body holding [`json::SUCCESS_OPEN`] followed by `data`.
fn open_body(data: &str) -> String {
    let mut body = String::with_capacity(json::SUCCESS_OPEN.len() + data.len() + 1);
    body.push_str(json::SUCCESS_OPEN);
    body.push_str(data);
    body
}

/// Builds the request form; a POST body counts only when form-encoded, as in Go's `ParseForm`.
fn form(method: &Method, headers: &HeaderMap, raw: Option<String>, body: &Bytes) -> Form {
    let form_body = *method == Method::POST
        && headers
            .get(header::CONTENT_TYPE)
            .and_then(|v| v.to_str().ok())
            .is_some_and(|ct| ct.trim_start().to_ascii_lowercase().starts_with("application/x-www-form-urlencoded"));
    Form::parse(raw.as_deref(), if form_body { body } else { &[] })
}

/// Bodies at least this long are gzip-compressed when the client accepts gzip.
const GZIP_MIN_BYTES: usize = 1024;

/// Bodies at least this long are compressed on the blocking pool, off the async workers.
const GZIP_BLOCKING_BYTES: usize = 256 * 1024;

/// True when `Accept-Encoding` lists `gzip` (or `*`) with a non-zero quality.
fn accepts_gzip(headers: &HeaderMap) -> bool {
    headers.get_all(header::ACCEPT_ENCODING).iter().filter_map(|v| v.to_str().ok()).flat_map(|v| v.split(',')).any(
        |item| {
            let mut parts = item.split(';').map(str::trim);
            let coding = parts.next().unwrap_or("");
            let zero_q = parts
                .any(|p| p.strip_prefix("q=").and_then(|q| q.trim().parse::<f64>().ok()).is_some_and(|q| q <= 0.0));
            (coding.eq_ignore_ascii_case("gzip") || coding == "*") && !zero_q
        },
    )
}

/// gzip at the fastest level: API bodies are large and repetitive, so level 1 already shrinks
/// them several times while costing the least CPU per response.
fn gzip(body: &[u8]) -> std::io::Result<Vec<u8>> {
    use std::io::Write;
    let mut enc = flate2::write::GzEncoder::new(Vec::with_capacity(body.len() / 4), flate2::Compression::fast());
    enc.write_all(body)?;
    enc.finish()
}

async fn respond(
    state: &ApiState,
    handler: &'static str,
    started: Instant,
    headers: &HeaderMap,
    res: Result<Answer>,
) -> Response {
    let (code, body) = match res {
        Ok(mut a) => {
            json::close_success(&mut a.body, &a.warnings, &a.infos);
            (200, a.body)
        }
        Err(e) => {
            tracing::debug!(handler, error = %e, "API request failed");
            (json::http_status(e.error_type()), json::error(&e))
        }
    };
    let mut gzipped = false;
    let bytes: Vec<u8> = if body.len() >= GZIP_MIN_BYTES && accepts_gzip(headers) {
        let compressed = if body.len() >= GZIP_BLOCKING_BYTES {
            tokio::task::spawn_blocking(move || (gzip(body.as_bytes()), body))
                .await
                .map_err(|e| std::io::Error::other(e.to_string()))
        } else {
            Ok((gzip(body.as_bytes()), body))
        };
        match compressed {
            Ok((Ok(z), _)) => {
                gzipped = true;
                z
            }
            Ok((Err(e), body)) => {
                tracing::warn!(handler, error = %e, "gzip failed; answering uncompressed");
                body.into_bytes()
            }
            Err(e) => {
                tracing::warn!(handler, error = %e, "gzip task failed");
                json::error(&Error::Internal(format!("compressing the response: {e}"))).into_bytes()
            }
        }
    } else {
        body.into_bytes()
    };
    state.metrics().observe(handler, code, started.elapsed().as_secs_f64());
    let mut resp = Response::new(Body::from(bytes));
    *resp.status_mut() = StatusCode::from_u16(code).unwrap_or(StatusCode::INTERNAL_SERVER_ERROR);
    let h = resp.headers_mut();
    h.insert(header::CONTENT_TYPE, HeaderValue::from_static("application/json"));
    h.insert(header::VARY, HeaderValue::from_static("Accept-Encoding"));
    if gzipped {
        h.insert(header::CONTENT_ENCODING, HeaderValue::from_static("gzip"));
    }
    resp
}

fn now_ms() -> i64 {
    SystemTime::now().duration_since(UNIX_EPOCH).map(|d| d.as_millis() as i64).unwrap_or(0)
}

fn required_query(f: &Form) -> Result<&str> {
    f.get_non_empty("query").ok_or_else(|| invalid_param("query", "the query must not be empty"))
}

/// Engine errors about the expression are answered as Prometheus does: bad_data naming `query`.
fn engine_err(e: Error) -> Error {
    match e {
        Error::BadData(m) => invalid_param("query", m),
        other => other,
    }
}

/// Storage failures of the metadata endpoints are `execution` errors in Prometheus.
fn storage_err(e: engine::Error) -> Error {
    Error::Execution(e.to_string())
}

/// What one request reads: its view of the API's sources, built from the Thanos read parameters,
/// and the warnings the sources report while answering it.
struct Read {
    source: Arc<dyn SeriesSource>,
    warnings: Warnings,
}

impl Read {
    /// Parses `dedup`, `replicaLabels[]`, `partial_response`, `storeMatch[]` and the tenant header.
    fn parse(s: &ApiState, f: &Form, headers: &HeaderMap) -> Result<Self> {
        let dedup = parse_bool(f, "dedup", true)?;
        let replica = f.get_all("replicaLabels[]");
        let replica_labels = (!replica.is_empty()).then(|| replica.iter().map(|r| r.to_string()).collect());
        let partial_response = match f.get_non_empty("partial_response") {
            Some(_) => Some(parse_bool(f, "partial_response", true)?),
            None => None,
        };
        let proxy = &s.inner.proxy;
        let tenant = headers
            .get(proxy.options().tenant_header.as_str())
            .and_then(|v| v.to_str().ok())
            .filter(|v| !v.is_empty())
            .map(str::to_string);
        let mut store_matchers = Vec::new();
        for sm in f.get_all("storeMatch[]") {
            store_matchers.extend(parse_selector_param("storeMatch[]", sm)?);
        }
        let opts = ReadOptions { dedup, replica_labels, partial_response, tenant, store_matchers };
        let warnings = Warnings::default();
        Ok(Read { source: proxy.read(&opts, &warnings), warnings })
    }
}

/// Per-request query settings.
struct QueryOpts {
    timeout: Duration,
    engine: Option<Engine>,
    limit: Option<usize>,
    stats: bool,
    stats_warning: Option<String>,
    explain: bool,
    analyze: bool,
}

impl QueryOpts {
    fn parse(s: &ApiState, f: &Form, step_ms: i64) -> Result<Self> {
        let server_timeout = s.inner.config.engine.timeout;
        let timeout = match f.get_non_empty("timeout") {
            Some(t) => {
                let ms = parse_duration(t).map_err(|e| invalid_param("timeout", e))?;
                Duration::from_millis(u64::try_from(ms).unwrap_or(0)).min(server_timeout)
            }
            None => server_timeout,
        };
        let lookback = match f.get_non_empty("lookback_delta") {
            Some(d) => {
                let ms = parse_duration(d).map_err(|e| invalid_param("lookback_delta", e))?;
                if ms < 0 {
                    return Err(invalid_param("lookback_delta", "lookback delta must not be negative"));
                }
                Some(ms)
            }
            None => None,
        };
        let max_res = max_source_resolution(f, step_ms, s.inner.config.auto_downsampling)?;
        let engine = if lookback.is_some() || max_res > 0 {
            let mut opts = s.inner.config.engine.clone();
            if let Some(ms) = lookback.filter(|&ms| ms > 0) {
                opts.lookback_delta_ms = ms;
            }
            opts.lookback_delta_ms = dynamic_lookback(opts.lookback_delta_ms, max_res);
            opts.max_source_resolution_ms = max_res;
            Some(Engine::new(Arc::clone(&s.inner.source), opts))
        } else {
            None
        };
        let limit = parse_limit(f)?;
        let stats_param = f.get_non_empty("stats");
        let stats_warning = stats_param
            .filter(|v| *v != "all" && *v != "true")
            .map(|v| format!("stats={v:?} is deprecated; use stats=all"));
        let explain = parse_bool(f, "explain", false)?;
        let analyze = parse_bool(f, "analyze", false)?;
        check_query_params(f)?;
        Ok(QueryOpts { timeout, engine, limit, stats: stats_param.is_some(), stats_warning, explain, analyze })
    }

    fn engine<'a>(&'a self, s: &'a ApiState) -> &'a Engine {
        self.engine.as_ref().unwrap_or(&s.inner.engine)
    }
}

/// Thanos's `max_source_resolution` (ms): a duration, `auto` (range queries: step / 5; instant
/// queries: raw), or with `--query.auto-downsampling` `auto` when the parameter is absent.
/// `step_ms` is 0 for instant queries.
fn max_source_resolution(f: &Form, step_ms: i64, auto_downsampling: bool) -> Result<i64> {
    let param = f.get_non_empty("max_source_resolution");
    let ms = match param {
        Some("auto") => step_ms / 5,
        Some(r) => parse_duration(r).map_err(|e| invalid_param("max_source_resolution", e))?,
        None if auto_downsampling => step_ms / 5,
        None => 0,
    };
    if ms < 0 {
        return Err(invalid_param("max_source_resolution", "negative resolutions are not accepted"));
    }
    Ok(ms)
}

/// Thanos's dynamic lookback delta (`--query.dynamic-lookback-delta`, on by default): reading
/// data coarser than the lookback delta, instant selectors look back one window of that
/// resolution (5m, or 1h once 1h data may be read).
fn dynamic_lookback(lookback_ms: i64, max_res_ms: i64) -> i64 {
    use engine::aggr::{RESOLUTION_1H, RESOLUTION_5M};
    if max_res_ms > lookback_ms.max(RESOLUTION_5M) {
        lookback_ms.max(RESOLUTION_1H)
    } else if max_res_ms > lookback_ms {
        lookback_ms.max(RESOLUTION_5M)
    } else {
        lookback_ms
    }
}

/// Validates the Thanos query parameters of `query` and `query_range` that are not read options
/// (`max_source_resolution` is read by [`max_source_resolution`]).
fn check_query_params(f: &Form) -> Result<()> {
    match f.get_non_empty("engine") {
        None | Some("prometheus" | "thanos") => Ok(()),
        Some(other) => Err(invalid_param("engine", format!("bad engine {other:?}: use prometheus or thanos"))),
    }
}

/// Decrements a gauge when dropped (also when the client goes away mid-query).
struct GaugeGuard<'a>(&'a Gauge);

impl<'a> GaugeGuard<'a> {
    fn new(g: &'a Gauge) -> Self {
        g.inc();
        GaugeGuard(g)
    }
}

impl Drop for GaugeGuard<'_> {
    fn drop(&mut self) {
        self.0.dec();
    }
}

/// Runs `fut` once a concurrency slot is free, all within `timeout`. Returns the output and the
/// seconds spent queued.
async fn run_limited<T>(s: &ApiState, timeout: Duration, fut: impl Future<Output = Result<T>>) -> Result<(T, f64)> {
    let deadline = tokio::time::Instant::now() + timeout;
    let queued_at = Instant::now();
    let permit = {
        let _q = GaugeGuard::new(s.metrics().queued());
        match tokio::time::timeout_at(deadline, s.inner.slots.acquire()).await {
            Ok(Ok(p)) => p,
            Ok(Err(_)) => return Err(Error::Internal("the query slots were closed".into())),
            Err(_) => return Err(Error::Timeout("query timed out in query queue".into())),
        }
    };
    let queue_secs = queued_at.elapsed().as_secs_f64();
    let _r = GaugeGuard::new(s.metrics().running());
    let out = match tokio::time::timeout_at(deadline, fut).await {
        Ok(r) => r.map_err(engine_err)?,
        Err(_) => return Err(Error::Timeout("query timed out in query execution".into())),
    };
    drop(permit);
    Ok((out, queue_secs))
}

/// Cuts a vector or matrix to `limit` series; true when something was cut.
fn apply_limit(v: &mut Value, limit: Option<usize>) -> bool {
    let Some(limit) = limit else { return false };
    match v {
        Value::Vector(s) if s.len() > limit => {
            s.truncate(limit);
            true
        }
        Value::Matrix(m) => {
            m.retain(|s| !s.points.is_empty());
            if m.len() > limit {
                m.truncate(limit);
                true
            } else {
                false
            }
        }
        _ => false,
    }
}

/// Runs an instant (`step_ms == 0`) or range query with its per-request options and encodes it.
async fn run_query(
    s: &ApiState,
    f: &Form,
    headers: &HeaderMap,
    expr: &str,
    (start, end, step_ms): (i64, i64, i64),
) -> Result<Answer> {
    let opts = QueryOpts::parse(s, f, step_ms)?;
    let read = Read::parse(s, f, headers)?;
    let engine = &opts.engine(s).with_source(Arc::clone(&read.source));
    let started = Instant::now();
    let fut = async {
        if step_ms == 0 {
            engine.instant_query(expr, start).await
        } else {
            engine.range_query(expr, start, end, step_ms).await
        }
    };
    let (mut result, queue_secs) = run_limited(s, opts.timeout, fut).await?;
    let eval_secs = started.elapsed().as_secs_f64() - queue_secs;
    let explain = if opts.explain || opts.analyze {
        let fut = engine.explain(expr, start, end, step_ms, opts.analyze);
        Some(run_limited(s, opts.timeout, fut).await?.0)
    } else {
        None
    };
    let mut warnings = read.warnings.take();
    warnings.append(&mut result.warnings);
    if apply_limit(&mut result.value, opts.limit) {
        warnings.push(TRUNCATED.into());
    }
    warnings.extend(opts.stats_warning);
    let mut data = String::from(json::SUCCESS_OPEN);
    json::write_result_open(&mut data, &result.value);
    if opts.stats {
        data.push_str(&format!(
            ",\"stats\":{{\"timings\":{{\"evalTotalTime\":{eval_secs},\"execQueueTime\":{queue_secs},\"execTotalTime\":{}}}}}",
            started.elapsed().as_secs_f64()
        ));
    }
    if let Some(text) = explain {
        data.push_str(",\"explain\":");
        write_str(&mut data, &text);
    }
    data.push('}');
    Ok(Answer { body: data, warnings, infos: result.infos })
}

async fn do_query(s: &ApiState, f: &Form, headers: &HeaderMap) -> Result<Answer> {
    let expr = required_query(f)?;
    let t = match f.get_non_empty("time") {
        Some(t) => parse_time(t).map_err(|e| invalid_param("time", e))?,
        None => now_ms(),
    };
    run_query(s, f, headers, expr, (t, t, 0)).await
}

async fn do_query_range(s: &ApiState, f: &Form, headers: &HeaderMap) -> Result<Answer> {
    let start = parse_time(f.get("start").unwrap_or("")).map_err(|e| invalid_param("start", e))?;
    let end = parse_time(f.get("end").unwrap_or("")).map_err(|e| invalid_param("end", e))?;
    if end < start {
        return Err(invalid_param("end", "end timestamp must not be before start time"));
    }
    let step = parse_duration(f.get("step").unwrap_or("")).map_err(|e| invalid_param("step", e))?;
    if step <= 0 {
        return Err(invalid_param(
            "step",
            "zero or negative query resolution step widths are not accepted. Try a positive integer",
        ));
    }
    if (end - start) / step > MAX_POINTS_PER_SERIES {
        return Err(Error::BadData(
            "exceeded maximum resolution of 11,000 points per timeseries. Try decreasing the query resolution (?step=XX)"
                .into(),
        ));
    }
    let expr = required_query(f)?;
    run_query(s, f, headers, expr, (start, end, step)).await
}

/// Union of the source's series over OR-ed matcher sets.
async fn series_union(src: &dyn SeriesSource, sets: &[Vec<Matcher>], start: i64, end: i64) -> Result<BTreeSet<Labels>> {
    let mut all = BTreeSet::new();
    for set in sets {
        all.extend(src.series(set, start, end).await.map_err(storage_err)?);
    }
    Ok(all)
}

/// A success body whose data is `list` as a JSON array of strings.
fn strings_body(list: &[String]) -> String {
    let mut body =
        String::with_capacity(json::SUCCESS_OPEN.len() + 2 + list.iter().map(|s| s.len() + 3).sum::<usize>());
    body.push_str(json::SUCCESS_OPEN);
    body.push('[');
    for (i, s) in list.iter().enumerate() {
        if i > 0 {
            body.push(',');
        }
        write_str(&mut body, s);
    }
    body.push(']');
    body
}

/// Truncates to `limit` and returns the warnings to report.
fn limit_list<T>(list: &mut Vec<T>, limit: Option<usize>) -> Vec<String> {
    match limit {
        Some(l) if list.len() > l => {
            list.truncate(l);
            vec![TRUNCATED.into()]
        }
        _ => vec![],
    }
}

async fn do_series(s: &ApiState, f: &Form, headers: &HeaderMap) -> Result<Answer> {
    if f.get_all("match[]").is_empty() {
        return Err(Error::BadData("no match[] parameter provided".into()));
    }
    let sets = parse_matches(f)?;
    let (start, end) = parse_start_end(f)?;
    let limit = parse_limit(f)?;
    let read = Read::parse(s, f, headers)?;
    // With dedup the proxy has removed the replica labels already.
    let all = series_union(read.source.as_ref(), &sets, start, end).await?;
    let mut list: Vec<Labels> = all.into_iter().collect();
    let mut warnings = read.warnings.take();
    warnings.extend(limit_list(&mut list, limit));
    let mut data = String::from(json::SUCCESS_OPEN);
    data.push('[');
    for (i, l) in list.iter().enumerate() {
        if i > 0 {
            data.push(',');
        }
        json::write_labels(&mut data, l);
    }
    data.push(']');
    Ok(Answer { body: data, warnings, infos: vec![] })
}

async fn do_labels(s: &ApiState, f: &Form, headers: &HeaderMap) -> Result<Answer> {
    let sets = parse_matches(f)?;
    let (start, end) = parse_start_end(f)?;
    let limit = parse_limit(f)?;
    let read = Read::parse(s, f, headers)?;
    let src = &read.source;
    let mut names: Vec<String> = if sets.is_empty() {
        src.label_names(&[], start, end).await.map_err(storage_err)?
    } else {
        let mut all = BTreeSet::new();
        for set in &sets {
            all.extend(src.label_names(set, start, end).await.map_err(storage_err)?);
        }
        all.into_iter().collect()
    };
    let mut warnings = read.warnings.take();
    warnings.extend(limit_list(&mut names, limit));
    Ok(Answer { body: strings_body(&names), warnings, infos: vec![] })
}

async fn do_label_values(s: &ApiState, f: &Form, headers: &HeaderMap, raw_name: &str) -> Result<Answer> {
    let name = unescape_label_name(raw_name);
    if !valid_label_name(&name) {
        return Err(Error::BadData(format!("invalid label name: {raw_name:?}")));
    }
    let sets = parse_matches(f)?;
    let (start, end) = parse_start_end(f)?;
    let limit = parse_limit(f)?;
    let read = Read::parse(s, f, headers)?;
    let src = &read.source;
    let mut values: Vec<String> = if sets.is_empty() {
        src.label_values(&name, &[], start, end).await.map_err(storage_err)?
    } else {
        let mut all = BTreeSet::new();
        for set in &sets {
            all.extend(src.label_values(&name, set, start, end).await.map_err(storage_err)?);
        }
        all.into_iter().collect()
    };
    let mut warnings = read.warnings.take();
    warnings.extend(limit_list(&mut values, limit));
    Ok(Answer { body: strings_body(&values), warnings, infos: vec![] })
}

/// Go's `time.Time` JSON (RFC 3339 with nanoseconds, trailing zeros dropped), in UTC; Go's zero
/// time for `None`.
fn go_time(t: Option<SystemTime>) -> String {
    let Some(t) = t else { return "0001-01-01T00:00:00Z".into() };
    let dt: chrono::DateTime<chrono::Utc> = t.into();
    let mut out = dt.format("%Y-%m-%dT%H:%M:%S").to_string();
    let nanos = dt.timestamp_subsec_nanos();
    if nanos > 0 {
        let frac = format!("{nanos:09}");
        out.push('.');
        out.push_str(frac.trim_end_matches('0'));
    }
    out.push('Z');
    out
}

/// Thanos's `/api/v1/stores`: the endpoints by component type, each with its address, last
/// successful check, last error, external label sets and time range.
fn do_stores(s: &ApiState) -> Answer {
    let mut groups: BTreeMap<String, Vec<String>> = BTreeMap::new();
    for st in s.inner.proxy.endpoints().map(|e| e.statuses()).unwrap_or_default() {
        let mut o = String::from("{\"name\":");
        write_str(&mut o, &st.name);
        o.push_str(",\"lastCheck\":");
        write_str(&mut o, &go_time(st.last_check));
        o.push_str(",\"lastError\":");
        match &st.last_error {
            Some(e) => write_str(&mut o, e),
            None => o.push_str("null"),
        }
        o.push_str(",\"labelSets\":[");
        for (i, l) in st.label_sets.iter().enumerate() {
            if i > 0 {
                o.push(',');
            }
            json::write_labels(&mut o, l);
        }
        o.push_str(&format!("],\"minTime\":{},\"maxTime\":{}}}", st.min_time, st.max_time));
        groups.entry(st.component).or_default().push(o);
    }
    let mut data = String::from("{");
    for (i, (component, list)) in groups.iter().enumerate() {
        if i > 0 {
            data.push(',');
        }
        write_str(&mut data, component);
        data.push_str(":[");
        data.push_str(&list.join(","));
        data.push(']');
    }
    data.push('}');
    Answer::data(data)
}

fn do_metadata(f: &Form) -> Result<Answer> {
    // No metadata is stored yet: validate the parameters and answer an empty map.
    parse_limit(f)?;
    if let Some(l) = f.get_non_empty("limit_per_metric") {
        l.parse::<i64>().map_err(|_| invalid_param("limit_per_metric", format!("cannot parse {l:?} to an integer")))?;
    }
    Ok(Answer::data("{}".into()))
}

fn parse_expr(f: &Form) -> Result<promql_parser::parser::Expr> {
    let q = required_query(f)?;
    crate::planner::parse(q).map_err(|e| invalid_param("query", e))
}

fn do_format_query(f: &Form) -> Result<Answer> {
    let e = parse_expr(f)?;
    let mut data = String::new();
    write_str(&mut data, &e.prettify());
    Ok(Answer::data(data))
}

fn do_parse_query(f: &Form) -> Result<Answer> {
    let e = parse_expr(f)?;
    Ok(Answer::data(super::ast::to_json(&e).to_string()))
}

fn do_query_exemplars(f: &Form) -> Result<Answer> {
    // No exemplars are stored: check the parameters and answer an empty list.
    parse_expr(f)?;
    parse_start_end(f)?;
    Ok(Answer::data("[]".into()))
}

fn do_buildinfo() -> Answer {
    let v = serde_json::json!({
        "version": PROMETHEUS_COMPAT_VERSION,
        "revision": option_env!("STRATA_GIT_REVISION").unwrap_or("unknown"),
        "branch": option_env!("STRATA_GIT_BRANCH").unwrap_or("unknown"),
        "buildUser": option_env!("STRATA_BUILD_USER").unwrap_or("unknown"),
        "buildDate": option_env!("STRATA_BUILD_DATE").unwrap_or("unknown"),
        "goVersion": "none (Strata is written in Rust)",
        "application": "strata",
        "strataVersion": env!("CARGO_PKG_VERSION"),
    });
    Answer::data(v.to_string())
}

/// Generates a handler that reads the form and answers through `respond`.
macro_rules! form_handler {
    ($name:ident, $path:literal, |$s:ident, $f:ident, $h:ident| $body:expr) => {
        pub(super) async fn $name(
            State($s): State<ApiState>,
            method: Method,
            RawQuery(raw): RawQuery,
            headers: HeaderMap,
            body: Bytes,
        ) -> Response {
            let started = Instant::now();
            let $f = form(&method, &headers, raw, &body);
            let $h = &headers;
            let res = $body;
            respond(&$s, $path, started, $h, res).await
        }
    };
}

form_handler!(query, "/api/v1/query", |s, f, h| do_query(&s, &f, h).await);
form_handler!(query_range, "/api/v1/query_range", |s, f, h| do_query_range(&s, &f, h).await);
form_handler!(series, "/api/v1/series", |s, f, h| do_series(&s, &f, h).await);
form_handler!(labels, "/api/v1/labels", |s, f, h| do_labels(&s, &f, h).await);
form_handler!(metadata, "/api/v1/metadata", |s, f, _h| do_metadata(&f));
form_handler!(format_query, "/api/v1/format_query", |s, f, _h| do_format_query(&f));
form_handler!(parse_query, "/api/v1/parse_query", |s, f, _h| do_parse_query(&f));
form_handler!(query_exemplars, "/api/v1/query_exemplars", |s, f, _h| do_query_exemplars(&f));
form_handler!(buildinfo, "/api/v1/status/buildinfo", |s, f, _h| {
    let _ = &f;
    Ok(do_buildinfo())
});
form_handler!(flags, "/api/v1/status/flags", |s, f, _h| {
    let _ = &f;
    Ok(Answer::data(serde_json::to_string(&s.inner.config.flags).unwrap_or_else(|_| "{}".into())))
});
form_handler!(stores, "/api/v1/stores", |s, f, _h| {
    let _ = &f;
    Ok(do_stores(&s))
});

/// `GET /api/v1/label/<name>/values`.
pub(super) async fn label_values(
    State(s): State<ApiState>,
    Path(name): Path<String>,
    RawQuery(raw): RawQuery,
    headers: HeaderMap,
) -> Response {
    let started = Instant::now();
    let f = Form::parse(raw.as_deref(), &[]);
    let res = do_label_values(&s, &f, &headers, &name).await;
    respond(&s, "/api/v1/label/:name/values", started, &headers, res).await
}

/// `OPTIONS` on any API path: 204, as Prometheus.
pub(super) async fn options() -> StatusCode {
    StatusCode::NO_CONTENT
}

#[cfg(test)]
mod tests;
