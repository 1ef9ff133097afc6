//! Differential end to end: the same promtool-made TSDB blocks served by a real Prometheus 2.42 and,
//! after `strata tsdb convert` into a filesystem bucket, by `strata query`; a list of PromQL queries
//! covering every function family is run against both over HTTP (instant queries at a few times,
//! range queries over two hours at 60 s step) and the answers must agree: same result type, same
//! series (labels exactly), same timestamps, values within a relative tolerance of 1e-9 (NaN == NaN);
//! for `topk`/`bottomk`, a different pick between series whose values are equal up to that tolerance
//! is accepted (the same values at every step).
//!
//! Data and times are chosen so that 2.42 and 3.x semantics agree (shared/spec/promql-versions.md):
//! every sample timestamp is 7-10 ms off the whole second, so no window edge (all whole seconds) ever
//! falls on a sample (left-open vs closed ranges, lookback edges); evaluation times are T0 + whole
//! minutes with T0 = 20 s past a minute, so no subquery step point (30 s, 1 m, 5 m, aligned to the
//! epoch) lies on a subquery window edge; counters cover every rate window (no 2.51 extrapolation
//! change); no `holt_winters`/`sort_by_label`/experimental functions, no `__name__` games after
//! name-dropping functions, no duplicate-label-set producing transformations, no newlines in labels.
#![allow(clippy::unwrap_used, clippy::expect_used)]

mod common;

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::process::Command;

use common::*;
use serde_json::Value;

/// Start of the generated data (unix seconds): 2023-11-14T22:13:20Z, i.e. 20 s past a minute.
const T0: i64 = 1_700_000_000;
/// Offset of the first scrape from T0 in ms: with the generator's 0..=3 ms jitter every sample lies
/// 7..10 ms past a whole second.
const FIRST_MS: i64 = 7;
/// Generated range: 6 hours at 15 s.
const HOURS: i64 = 6;

/// Times of the instant queries (all inside the data, away from its ends).
const INSTANT_TIMES: [i64; 3] = [T0 + 5400, T0 + 3 * 3600, T0 + 5 * 3600 + 1800];
/// Range queries: two hours at 60 s step.
const RANGE: (i64, i64, i64) = (T0 + 2 * 3600, T0 + 4 * 3600, 60);

/// Instant times at the data's edges (2 min after its start, 2 and 10 min after its end) and a range
/// over its end: checks lookback at the ends. Queries with extrapolating functions are not run there
/// (series starting/ending inside a rate window extrapolate differently since 2.51, §4.3).
const EDGE_INSTANT_TIMES: [i64; 3] = [T0 + 120, T0 + HOURS * 3600 + 120, T0 + HOURS * 3600 + 600];
const EDGE_RANGE: (i64, i64, i64) = (T0 + HOURS * 3600 - 1200, T0 + HOURS * 3600 + 1200, 60);
/// A second range with a 45 s step (never on a 30 s/1 m/5 m subquery step point) and an instant time
/// with milliseconds.
const ODD_RANGE: (i64, i64, i64) = (T0 + 7200, T0 + 9000, 45);
const ODD_INSTANT: &str = "1700010800.5";

/// Relative tolerance on values (plus a tiny absolute one for results that should be 0).
const REL_TOL: f64 = 1e-9;
const ABS_TOL: f64 = 1e-12;

/// Queries that must give the same answer on Prometheus 2.42 and Strata.
const QUERIES: &[&str] = &[
    // literals and scalars
    "1 + 2 * 3",
    "2 ^ 10 - 5 % 3",
    "\"hello\"",
    "time()",
    "pi()",
    "vector(1)",
    "vector(time())",
    "scalar(up{instance=\"host-00000:9100\"})",
    "scalar(up)",
    "scalar(sum(up))",
    // selectors, each matcher kind
    "up",
    "up{job=\"api\"}",
    "up{job!=\"api\"}",
    "http_requests_total{status=~\"5..\"}",
    "http_requests_total{method=\"GET\",status!~\"2..|4..\"}",
    "{__name__=~\"up|build_info\",job=~\"db|cache\"}",
    "{__name__=\"node_temperature_celsius\",instance=~\"host-0000[12]:9100\"}",
    "node_temperature_celsius{job=\"api\"}[2m]",
    "request_duration_seconds_bucket{le=\"0.1\"}",
    // offset and @
    "node_temperature_celsius offset 5m",
    "node_temperature_celsius offset -10m",
    "rate(http_requests_total{status=\"200\"}[5m] offset 1h)",
    "node_temperature_celsius @ 1700007200",
    "rate(http_requests_total{method=\"GET\"}[5m] @ 1700010000)",
    "node_temperature_celsius @ start()",
    "process_resident_memory_bytes @ end()",
    "sum_over_time(up[10m] @ 1700003600 offset 5m)",
    // counters and gauges over ranges
    "rate(http_requests_total[5m])",
    "rate(http_requests_total[1m])",
    "irate(http_requests_total[5m])",
    "increase(http_requests_total[10m])",
    "increase(request_duration_seconds_count[1h])",
    "delta(node_temperature_celsius[10m])",
    "delta(process_resident_memory_bytes[3m])",
    "idelta(node_temperature_celsius[5m])",
    "deriv(process_resident_memory_bytes[10m])",
    "deriv(node_temperature_celsius[30m])",
    "predict_linear(node_temperature_celsius[30m], 3600)",
    "predict_linear(process_resident_memory_bytes[15m], 600)",
    // *_over_time
    "avg_over_time(node_temperature_celsius[10m])",
    "min_over_time(node_temperature_celsius[10m])",
    "max_over_time(process_resident_memory_bytes[10m])",
    "sum_over_time(up[1h])",
    "count_over_time(http_requests_total[7m])",
    "last_over_time(node_temperature_celsius[3m])",
    "stddev_over_time(node_temperature_celsius[30m])",
    "stdvar_over_time(process_resident_memory_bytes[10m])",
    "quantile_over_time(0.9, node_temperature_celsius[30m])",
    "quantile_over_time(0.25, process_resident_memory_bytes[5m])",
    "present_over_time(up{job=\"web\"}[5m])",
    "changes(node_temperature_celsius[5m])",
    "changes(up[6h])",
    "resets(http_requests_total[1h])",
    "resets(node_temperature_celsius[10m])",
    // math
    "abs(delta(node_temperature_celsius[5m]))",
    "ceil(node_temperature_celsius)",
    "floor(node_temperature_celsius)",
    "round(node_temperature_celsius)",
    "round(node_temperature_celsius, 0.5)",
    "round(process_resident_memory_bytes, 1000)",
    "sqrt(process_resident_memory_bytes)",
    "exp(node_temperature_celsius / 10)",
    "ln(process_resident_memory_bytes)",
    "log2(node_temperature_celsius)",
    "log10(process_resident_memory_bytes)",
    "clamp(node_temperature_celsius, 40, 60)",
    "clamp_min(node_temperature_celsius, 45)",
    "clamp_max(node_temperature_celsius, 45)",
    "sgn(delta(node_temperature_celsius[5m]))",
    "-node_temperature_celsius",
    "node_temperature_celsius * 2 - 1",
    "2 ^ (node_temperature_celsius / 20)",
    "node_temperature_celsius % 7",
    // trigonometry
    "sin(node_temperature_celsius)",
    "cos(node_temperature_celsius)",
    "tan(node_temperature_celsius)",
    "asin(node_temperature_celsius / 100)",
    "acos(node_temperature_celsius / 100)",
    "atan(node_temperature_celsius)",
    "sinh(node_temperature_celsius / 10)",
    "cosh(node_temperature_celsius / 10)",
    "tanh(node_temperature_celsius / 10)",
    "asinh(node_temperature_celsius)",
    "acosh(node_temperature_celsius)",
    "atanh(node_temperature_celsius / 100)",
    "deg(node_temperature_celsius)",
    "rad(node_temperature_celsius)",
    // `v atan2 s` keeps `__name__` in 2.42 (fixed by prometheus#12595 in 2.46), so wrap it in `abs`
    "abs(node_temperature_celsius atan2 10)",
    "2 atan2 1",
    // time and dates
    "timestamp(up)",
    "timestamp(node_temperature_celsius offset 1h)",
    "time() - timestamp(up)",
    "hour()",
    "minute()",
    "month()",
    "year()",
    "day_of_month()",
    "day_of_week()",
    "day_of_year()",
    "days_in_month()",
    "hour(timestamp(up))",
    "minute(timestamp(build_info))",
    "day_of_week(vector(1700000000 + 86400 * 3))",
    "days_in_month(vector(1709251200 - 3600))",
    // absent
    "absent(up)",
    "absent(up{job=\"nope\",instance=~\"x.*\"})",
    "absent(nonexistent_metric)",
    "absent_over_time(up[5m])",
    "absent_over_time(up{job=\"nope\"}[5m])",
    // labels
    "label_replace(up, \"host\", \"$1\", \"instance\", \"(.*):.*\")",
    "label_replace(up, \"host\", \"$1\", \"instance\", \"nomatch(.*)\")",
    "label_replace(node_temperature_celsius, \"port\", \"p$2\", \"instance\", \"host-(.*):(.*)\")",
    "label_join(up, \"foo\", \"-\", \"job\", \"instance\")",
    "label_join(build_info, \"id\", \"/\", \"version\", \"job\")",
    // sorting (instant queries keep the order; compared as ordered)
    "sort(node_temperature_celsius)",
    "sort_desc(process_resident_memory_bytes)",
    "sort_desc(sum by (job) (rate(http_requests_total[5m])))",
    // histograms
    "histogram_quantile(0.9, rate(request_duration_seconds_bucket[5m]))",
    "histogram_quantile(0.5, sum by (le) (rate(request_duration_seconds_bucket[10m])))",
    "histogram_quantile(0.99, sum by (job, le) (rate(request_duration_seconds_bucket[5m])))",
    "histogram_quantile(0.25, request_duration_seconds_bucket)",
    "rate(request_duration_seconds_sum[5m]) / rate(request_duration_seconds_count[5m])",
    // aggregations
    "sum(http_requests_total)",
    "sum by (job) (rate(http_requests_total[5m]))",
    "sum without (method, status) (rate(http_requests_total[5m]))",
    "avg by (status) (rate(http_requests_total[5m]))",
    "avg(node_temperature_celsius)",
    "min by (method) (http_requests_total)",
    "max without (instance) (node_temperature_celsius)",
    "count(up)",
    "count by (status) (http_requests_total)",
    "count without (method, status) (http_requests_total)",
    "group by (job) (http_requests_total)",
    "group(up)",
    "stddev(node_temperature_celsius)",
    "stdvar by (method) (rate(http_requests_total[5m]))",
    "stddev without (status) (rate(http_requests_total[5m]))",
    "topk(3, node_temperature_celsius)",
    "topk by (job) (2, rate(http_requests_total[5m]))",
    "bottomk(2, process_resident_memory_bytes)",
    "bottomk without (method, status) (1, rate(http_requests_total[5m]))",
    "quantile(0.5, node_temperature_celsius)",
    "quantile by (status) (0.9, rate(http_requests_total[5m]))",
    "count_values(\"v\", up)",
    "count_values(\"version\", build_info)",
    "count_values by (job) (\"t\", round(node_temperature_celsius))",
    "sum(rate(http_requests_total[5m])) by (method)",
    // binary operators and vector matching
    "node_temperature_celsius > 50",
    "node_temperature_celsius > bool 50",
    "50 < node_temperature_celsius",
    "up == 1",
    "up != bool 1",
    "process_resident_memory_bytes <= 2e8",
    "node_temperature_celsius >= on (instance, job) (node_temperature_celsius offset 10m)",
    "node_temperature_celsius - node_temperature_celsius offset 10m",
    "rate(http_requests_total{status=\"500\"}[5m]) / ignoring (status) rate(http_requests_total{status=\"200\"}[5m])",
    "rate(http_requests_total{method=\"POST\"}[5m]) / on (instance, status) rate(http_requests_total{method=\"GET\"}[5m])",
    "rate(http_requests_total[5m]) * on (job, instance) group_left (version) build_info",
    "sum by (job, instance) (rate(http_requests_total[5m])) / on (job, instance) group_left process_resident_memory_bytes",
    "build_info * on (instance) group_right (version) sum by (instance) (http_requests_total)",
    "rate(http_requests_total[5m]) / ignoring (method, status) group_left sum without (method, status) (rate(http_requests_total[5m]))",
    "node_temperature_celsius > 50 and on (instance) up",
    "up and node_temperature_celsius",
    "node_temperature_celsius or process_resident_memory_bytes",
    "node_temperature_celsius > 55 or node_temperature_celsius < 35",
    "up unless on (instance) (node_temperature_celsius > 50)",
    "http_requests_total unless http_requests_total{status=\"200\"}",
    "sum(up) + scalar(count(node_temperature_celsius))",
    "node_temperature_celsius / scalar(avg(node_temperature_celsius))",
    // subqueries
    "max_over_time(rate(http_requests_total[5m])[30m:1m])",
    "avg_over_time(node_temperature_celsius[1h:5m])",
    "rate(sum by (job) (http_requests_total)[10m:30s])",
    "min_over_time(deriv(process_resident_memory_bytes[5m])[20m:1m] offset 10m)",
    "quantile_over_time(0.5, node_temperature_celsius[30m:1m])",
    "count_over_time(up[15m:30s])",
    "max_over_time(sum by (job) (rate(http_requests_total[5m]))[1h:5m])",
    "sum_over_time(node_temperature_celsius[10m:])",
    "predict_linear(avg_over_time(node_temperature_celsius[5m])[30m:1m], 600)",
    "absent_over_time(nonexistent{job=\"x\"}[1h:5m])",
    "irate(sum by (instance) (http_requests_total)[5m:30s])",
    // special values, precedence, edge parameters
    "sqrt(node_temperature_celsius - 50)",
    "ln(node_temperature_celsius - 50)",
    "node_temperature_celsius / 0",
    "(up - 1) / (up - 1)",
    "-node_temperature_celsius / 0",
    "-2 ^ 2",
    "2 + 3 * 4 ^ 2 ^ 0.5",
    "+up",
    "(up)",
    "up * -1",
    "1 > bool 2",
    "scalar(vector(1))",
    "time() - 1700000000",
    "minute(node_temperature_celsius)",
    "quantile(0, node_temperature_celsius)",
    "quantile(1, node_temperature_celsius)",
    "quantile(1.5, node_temperature_celsius)",
    "quantile(-0.5, node_temperature_celsius)",
    "histogram_quantile(0, rate(request_duration_seconds_bucket[5m]))",
    "histogram_quantile(1, rate(request_duration_seconds_bucket[5m]))",
    "histogram_quantile(1.5, rate(request_duration_seconds_bucket[5m]))",
    "histogram_quantile(-1, rate(request_duration_seconds_bucket[5m]))",
    "sum by (le) (request_duration_seconds_bucket)",
    "count_values(\"v\", node_temperature_celsius)",
    "count_values(\"job\", up)",
    "absent(sum(nonexistent))",
    "sum without (instance, job) (up)",
    // more matchers
    "up{instance=~\"host-0000\"}",
    "up{instance=~\".*1.*\"}",
    "up{instance!~\"\"}",
    "up{nonexistent=\"\"}",
    "up{job=~\"(?i)API|Web\"}",
    "up{instance=~\"host-0000[0-9]:9100|other\",job!~\"c.*\"}",
    "label_replace(up, \"x\", \"$1\", \"instance\", \"host-0000(.)\")",
    "label_replace(up, \"x\", \"$1-$2\", \"instance\", \"host-0000(.)(.*)\")",
    "label_replace(up, \"job\", \"\", \"job\", \".*\")",
    "label_join(up, \"foo\", \",\")",
    // vector matching edge cases (errors must agree too)
    "http_requests_total * on (instance) build_info",
    "http_requests_total + on (instance) group_left node_temperature_celsius",
    "node_temperature_celsius == bool node_temperature_celsius",
    "up and ignoring (job) node_temperature_celsius",
    "node_temperature_celsius or on (job) process_resident_memory_bytes",
    "up offset 1h @ 1700010000",
    "up @ 1700007200 offset 1h",
    "max_over_time(node_temperature_celsius[10m:1m] @ 1700010000)",
    "last_over_time(rate(http_requests_total{status=\"404\"}[5m])[10m:1m])",
    "changes(round(node_temperature_celsius)[30m:30s])",
    "histogram_quantile(0.5, up)",
    "absent(up{job=\"api\"} offset 1d)",
    "count(count by (job) (up))",
    "avg without () (node_temperature_celsius)",
    "sum by () (up)",
    "max by (job) (node_temperature_celsius) > 40",
    "topk(2, sum by (instance) (rate(http_requests_total[5m])))",
    "rate(http_requests_total[5m]) > bool 1",
    "vector(1) and on () up{job=\"api\"}",
];

/// Queries run and printed but not asserted: each is a known difference with its reason.
const KNOWN_DIFFERENCES: &[(&str, &str)] = &[];

/// One result series: labels and (timestamp ms, value) samples.
type Series = (BTreeMap<String, String>, Vec<(i64, Val)>);

/// An answer reduced to what is compared: result type and series (labels, samples).
#[derive(Debug, Clone, PartialEq)]
enum Answer {
    Error(String),
    Data { kind: String, series: Vec<Series> },
}

/// A float or string sample value.
#[derive(Debug, Clone, PartialEq)]
enum Val {
    F(f64),
    S(String),
}

fn parse_float(s: &str) -> f64 {
    match s {
        "NaN" => f64::NAN,
        "+Inf" | "Inf" => f64::INFINITY,
        "-Inf" => f64::NEG_INFINITY,
        _ => s.parse().unwrap_or_else(|e| panic!("bad float {s:?}: {e}")),
    }
}

fn sample(p: &Value, string: bool) -> (i64, Val) {
    let t = (p[0].as_f64().unwrap() * 1000.0).round() as i64;
    let v = p[1].as_str().unwrap();
    (t, if string { Val::S(v.to_string()) } else { Val::F(parse_float(v)) })
}

fn labels(m: &Value) -> BTreeMap<String, String> {
    m.as_object()
        .map(|o| o.iter().map(|(k, v)| (k.clone(), v.as_str().unwrap().to_string())).collect())
        .unwrap_or_default()
}

/// Reduces an API response; vectors and matrices are sorted by labels unless `ordered`.
fn answer(v: &Value, ordered: bool) -> Answer {
    if v["status"] != "success" {
        return Answer::Error(format!("{}: {}", v["errorType"], v["error"]));
    }
    let data = &v["data"];
    let kind = data["resultType"].as_str().unwrap().to_string();
    let r = &data["result"];
    let mut series = match kind.as_str() {
        "scalar" => vec![(BTreeMap::new(), vec![sample(r, false)])],
        "string" => vec![(BTreeMap::new(), vec![sample(r, true)])],
        "vector" => {
            r.as_array().unwrap().iter().map(|s| (labels(&s["metric"]), vec![sample(&s["value"], false)])).collect()
        }
        "matrix" => r
            .as_array()
            .unwrap()
            .iter()
            .map(|s| {
                let pts = s["values"].as_array().unwrap().iter().map(|p| sample(p, false)).collect();
                (labels(&s["metric"]), pts)
            })
            .collect(),
        other => panic!("unknown resultType {other}"),
    };
    if !ordered || kind != "vector" {
        series.sort_by(|a, b| a.0.cmp(&b.0));
    }
    Answer::Data { kind, series }
}

fn close(a: f64, b: f64) -> bool {
    if a.is_nan() || b.is_nan() {
        return a.is_nan() && b.is_nan();
    }
    if a == b {
        return true;
    }
    let d = (a - b).abs();
    d <= ABS_TOL || d <= REL_TOL * a.abs().max(b.abs())
}

/// True for a query whose outermost operation picks k series by value (`topk`, `bottomk`): which
/// of two series with values equal up to rounding it keeps is decided by their last bits.
fn selects_k(q: &str) -> bool {
    q.starts_with("topk") || q.starts_with("bottomk")
}

/// True when both answers hold, at every timestamp, the same number of samples with pairwise
/// [`close`] values (sorted): a k-selection that kept a different one of two near-equal series.
fn same_values_per_step(p: &Answer, s: &Answer) -> bool {
    use std::collections::BTreeMap;
    let per_step = |a: &Answer| -> Option<BTreeMap<i64, Vec<f64>>> {
        let Answer::Data { series, .. } = a else { return None };
        let mut m: BTreeMap<i64, Vec<f64>> = BTreeMap::new();
        for (_, pts) in series {
            for (t, v) in pts {
                let Val::F(f) = v else { return None };
                m.entry(*t).or_default().push(*f);
            }
        }
        for vs in m.values_mut() {
            vs.sort_by(f64::total_cmp);
        }
        Some(m)
    };
    match (per_step(p), per_step(s)) {
        (Some(a), Some(b)) => {
            a.len() == b.len()
                && a.iter().zip(&b).all(|((ta, va), (tb, vb))| {
                    ta == tb && va.len() == vb.len() && va.iter().zip(vb).all(|(x, y)| close(*x, *y))
                })
        }
        _ => false,
    }
}

/// Why two answers differ, or None when they agree.
fn difference(p: &Answer, s: &Answer) -> Option<String> {
    match (p, s) {
        (Answer::Error(_), Answer::Error(_)) => None,
        (Answer::Error(e), _) => Some(format!("prometheus failed ({e}), strata did not")),
        (_, Answer::Error(e)) => Some(format!("strata failed ({e}), prometheus did not")),
        (Answer::Data { kind: pk, series: ps }, Answer::Data { kind: sk, series: ss }) => {
            if pk != sk {
                return Some(format!("resultType {pk} vs {sk}"));
            }
            let pl: Vec<_> = ps.iter().map(|x| &x.0).collect();
            let sl: Vec<_> = ss.iter().map(|x| &x.0).collect();
            if pl != sl {
                return Some(format!("series differ:\n  prometheus: {pl:?}\n  strata:     {sl:?}"));
            }
            for ((l, pv), (_, sv)) in ps.iter().zip(ss) {
                let pt: Vec<i64> = pv.iter().map(|x| x.0).collect();
                let st: Vec<i64> = sv.iter().map(|x| x.0).collect();
                if pt != st {
                    return Some(format!("timestamps of {l:?} differ:\n  prometheus: {pt:?}\n  strata:     {st:?}"));
                }
                for ((t, a), (_, b)) in pv.iter().zip(sv) {
                    let same = match (a, b) {
                        (Val::F(x), Val::F(y)) => close(*x, *y),
                        (x, y) => x == y,
                    };
                    if !same {
                        return Some(format!("value of {l:?} at {t}: prometheus {a:?}, strata {b:?}"));
                    }
                }
            }
            None
        }
    }
}

/// The HTTP calls a query is compared with: instant queries at [`INSTANT_TIMES`] and
/// [`ODD_INSTANT`], range queries over [`RANGE`] and [`ODD_RANGE`], and the edge times and range
/// for queries without extrapolating functions.
fn calls_of(q: &str) -> Vec<(String, String)> {
    let mut calls: Vec<(String, String)> = INSTANT_TIMES
        .iter()
        .map(|t| (format!("instant at {t}"), format!("/api/v1/query?query={}&time={t}", urlencode(q))))
        .collect();
    calls.push((
        format!("instant at {ODD_INSTANT}"),
        format!("/api/v1/query?query={}&time={ODD_INSTANT}", urlencode(q)),
    ));
    let mut ranges = vec![RANGE, ODD_RANGE];
    if !["rate(", "increase(", "delta("].iter().any(|f| q.contains(f)) {
        ranges.push(EDGE_RANGE);
        calls.extend(
            EDGE_INSTANT_TIMES
                .iter()
                .map(|t| (format!("instant at {t}"), format!("/api/v1/query?query={}&time={t}", urlencode(q)))),
        );
    }
    for (s, e, step) in ranges {
        calls.push((
            format!("range {s}..{e} step {step}"),
            format!("/api/v1/query_range?query={}&start={s}&end={e}&step={step}", urlencode(q)),
        ));
    }
    calls
}

/// The suite's data (4 targets from T0 at 15 s, seed 7) for `hours` cut into TSDB blocks by
/// promtool under `work/blocks`.
fn generated_blocks(promtool: &Path, work: &Path, hours: i64) -> PathBuf {
    let spec = ingest::datagen::GenSpec {
        targets: 4,
        start_ms: T0 * 1000 + FIRST_MS,
        duration_ms: hours * 3_600_000,
        interval_ms: 15_000,
        jitter_ms: 3,
        seed: 7,
    };
    let mut buf = Vec::new();
    ingest::datagen::write_openmetrics(&spec, &mut buf).unwrap();
    let blocks = work.join("blocks");
    promtool_blocks(promtool, &String::from_utf8(buf).unwrap(), work, &blocks);
    blocks
}

async fn fetch(client: &reqwest::Client, base: &str, path_and_query: &str) -> Value {
    let r = client.get(format!("{base}{path_and_query}")).send().await.unwrap();
    let text = r.text().await.unwrap();
    serde_json::from_str(&text).unwrap_or_else(|e| panic!("{e}: {base}{path_and_query}: {text}"))
}

fn short(v: &Value) -> String {
    let s = v.to_string();
    if s.len() > 3000 { format!("{}… ({} chars)", &s[..3000], s.len()) } else { s }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn promql_agrees_with_prometheus_2_42() {
    let Some(promtool) = peer("promtool") else { return };
    let Some(prometheus) = peer("prometheus") else { return };
    let tmp = tempfile::tempdir().unwrap();

    // 1. data → TSDB blocks
    let blocks = generated_blocks(&promtool, tmp.path(), HOURS);

    // 2. a real Prometheus 2.42 over a copy of the blocks
    let client = reqwest::Client::new();
    let prom_data = tmp.path().join("prom");
    copy_dir(&blocks, &prom_data);
    let prom_cfg = tmp.path().join("prometheus.yml");
    std::fs::write(&prom_cfg, "global:\n  evaluation_interval: 1m\n  scrape_interval: 1m\nscrape_configs: []\n")
        .unwrap();
    let prom_base = format!("http://127.0.0.1:{}", free_port());
    let mut cmd = Command::new(prometheus);
    cmd.arg(format!("--config.file={}", prom_cfg.display()))
        .arg(format!("--storage.tsdb.path={}", prom_data.display()))
        .arg(format!("--web.listen-address={}", prom_base.trim_start_matches("http://")))
        .arg("--storage.tsdb.retention.time=100y");
    let _prom = start_daemon(&mut cmd, &prom_base, &tmp.path().join("prometheus.log")).await;

    // 3. the same blocks converted into a filesystem bucket, served by `strata query`
    let cfg = fs_bucket_config(tmp.path(), &tmp.path().join("bucket"));
    strata_ok(&[
        "tsdb",
        "convert",
        "--tsdb.path",
        blocks.to_str().unwrap(),
        "--objstore.config-file",
        cfg.to_str().unwrap(),
    ]);
    let strata_base = format!("http://127.0.0.1:{}", free_port());
    let mut cmd = Command::new(strata_bin());
    cmd.args(["query", "--objstore.config-file", cfg.to_str().unwrap(), "--http-address"])
        .arg(strata_base.trim_start_matches("http://"))
        .env("RUST_LOG", "warn");
    let strata_log: PathBuf = tmp.path().join("strata.log");
    let _strata = start_daemon(&mut cmd, &strata_base, &strata_log).await;

    // sanity: both see all 80 series (4 targets x 20)
    for base in [&prom_base, &strata_base] {
        let v = fetch(
            &client,
            base,
            &format!("/api/v1/query?query={}&time={}", urlencode("count({job=~\".+\"})"), T0 + 3600),
        )
        .await;
        assert_eq!(v["data"]["result"][0]["value"][1], "80", "{base}: {v}");
    }

    // 4. the queries
    let mut failures = Vec::new();
    let mut known = Vec::new();
    let mut checked = 0;
    let mut both_errors = Vec::new();
    let mut always_empty = Vec::new();
    let all = QUERIES.iter().map(|q| (*q, None)).chain(KNOWN_DIFFERENCES.iter().map(|(q, r)| (*q, Some(*r))));
    for (q, known_reason) in all {
        let ordered = q.starts_with("sort");
        let calls = calls_of(q);
        let mut nonempty = false;
        for (what, path) in calls {
            let (pv, sv) = tokio::join!(fetch(&client, &prom_base, &path), fetch(&client, &strata_base, &path));
            let (pa, sa) = (answer(&pv, ordered), answer(&sv, ordered));
            checked += 1;
            nonempty |= matches!(&pa, Answer::Data { series, .. } if !series.is_empty());
            if let (Answer::Error(pe), Answer::Error(se)) = (&pa, &sa) {
                both_errors.push(format!("{q} [{what}]: prometheus {pe} | strata {se}"));
            }
            let why = difference(&pa, &sa).filter(|_| !(selects_k(q) && same_values_per_step(&pa, &sa)));
            if let Some(why) = why {
                let msg =
                    format!("QUERY {q}\n  {what}\n  {why}\n  prometheus: {}\n  strata:     {}", short(&pv), short(&sv));
                match known_reason {
                    Some(r) => known.push(format!("{msg}\n  (known difference: {r})")),
                    None => failures.push(msg),
                }
            }
        }
        if !nonempty {
            always_empty.push(q);
        }
    }
    eprintln!("queries empty at every time: {always_empty:?}");
    eprintln!("{checked} query evaluations compared ({} queries)", QUERIES.len() + KNOWN_DIFFERENCES.len());
    for e in &both_errors {
        eprintln!("both engines rejected: {e}");
    }
    for k in &known {
        eprintln!("KNOWN DIFFERENCE (not asserted):\n{k}\n");
    }
    for f in &failures {
        eprintln!("MISMATCH:\n{f}\n");
    }
    // guard against comparing empty answers: only these queries are meant to select nothing
    assert_eq!(
        always_empty,
        [
            "up{instance=~\"host-0000\"}",
            "http_requests_total * on (instance) build_info",
            "histogram_quantile(0.5, up)"
        ],
        "queries that unexpectedly select nothing (typo?)"
    );
    assert!(failures.is_empty(), "{} of {checked} query evaluations disagree (see above)", failures.len());
}

/// Every query of [`QUERIES`] and [`KNOWN_DIFFERENCES`] answers exactly the same (labels,
/// timestamps, values as printed) from `strata query` over a bucket and over a copy of it that
/// `strata compact` compacted (18 h of data: the 2h blocks of [0h, 8h) become one 8h block, so the
/// query windows cross compacted and uncompacted blocks).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn promql_answers_are_the_same_after_compaction() {
    let Some(promtool) = peer("promtool") else { return };
    let tmp = tempfile::tempdir().unwrap();
    let blocks = generated_blocks(&promtool, tmp.path(), 18);
    let plain = fs_bucket_config(tmp.path(), &tmp.path().join("bucket"));
    strata_ok(
        &["tsdb", "convert", "--tsdb.path", blocks.to_str().unwrap(), "--objstore.config-file"]
            .into_iter()
            .chain([plain.to_str().unwrap()])
            .collect::<Vec<_>>(),
    );
    let compacted_dir = tmp.path().join("compacted");
    std::fs::create_dir_all(&compacted_dir).unwrap();
    copy_dir(&tmp.path().join("bucket"), &compacted_dir.join("bucket"));
    let compacted = fs_bucket_config(&compacted_dir, &compacted_dir.join("bucket"));
    let count = |dir: &Path| std::fs::read_dir(dir).unwrap().filter(|e| e.as_ref().unwrap().path().is_dir()).count();
    let before = count(&compacted_dir.join("bucket"));
    compact_now(compacted.to_str().unwrap());
    let after = count(&compacted_dir.join("bucket"));
    assert_eq!((before, after), (10, 7), "the [0h, 8h) window was not compacted");

    let mut servers = Vec::new();
    for (name, cfg) in [("plain", &plain), ("compacted", &compacted)] {
        let log = tmp.path().join(format!("{name}.log"));
        servers.push(
            Strata::start(&["query", "--objstore.config-file", cfg.to_str().unwrap(), "--log.level=warn"], &log).await,
        );
    }
    let client = reqwest::Client::new();
    let (mut checked, mut nonempty, mut failures) = (0, 0, Vec::new());
    for q in QUERIES.iter().copied().chain(KNOWN_DIFFERENCES.iter().map(|(q, _)| *q)) {
        let ordered = q.starts_with("sort");
        for (what, path) in calls_of(q) {
            let (a, b) = tokio::join!(fetch(&client, &servers[0].base, &path), fetch(&client, &servers[1].base, &path));
            let (a, b) = (answer(&a, ordered), answer(&b, ordered));
            checked += 1;
            nonempty += usize::from(matches!(&a, Answer::Data { series, .. } if !series.is_empty()));
            // Debug text: NaN equals NaN, every other value exactly as printed.
            if format!("{a:?}") != format!("{b:?}") {
                failures.push(format!("QUERY {q} [{what}]\n  uncompacted: {a:?}\n  compacted:   {b:?}"));
            }
        }
    }
    eprintln!("{checked} query evaluations compared, {nonempty} with data");
    for f in &failures {
        eprintln!("MISMATCH:\n{}\n", &f[..f.len().min(3000)]);
    }
    assert!(nonempty * 2 > checked, "most answers should hold data: {nonempty} of {checked}");
    assert!(failures.is_empty(), "{} of {checked} evaluations differ after compaction", failures.len());
    for s in servers {
        s.stop().await;
    }
}
