//! The PromQL answers a careful user checks against Prometheus (issue 12): raw strings, NaN
//! and infinities as Go's math treats them, runtime errors as `execution` errors, vector
//! matching with an empty side, `count_values` grouping. Expected values are worked out by
//! hand from Prometheus's documented behaviour.
#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::sync::Arc;

use engine::{Labels, MemSource};
use query::{Engine, EngineOptions, Value};

const MIN: i64 = 60_000;

/// Samples every minute from 0 to 10m:
/// - `up{job, instance="i0".."i6"}` = 1, jobs a, b, c in turn; `i0` drops to 0 from 5m;
/// - `http_requests_total{instance="i0".."i2", code="200"|"500"}` = 10 (two per instance);
/// - `app_build_info{version="2.3.1"|"203x1"|"2.4.0"}` = 1;
/// - `values{v="a"|"b"|"c"|"d"}` = 1, NaN, 3, -Inf;
/// - `h_bucket{le="1"|"2"|"+Inf"}` = 1, 2, NaN.
fn engine() -> Engine {
    let src = MemSource::new();
    let ts: Vec<i64> = (0..=10).map(|i| i * MIN).collect();
    let at = |v: f64| vec![v; ts.len()];
    for i in 0..7 {
        let job = ["a", "b", "c"][i % 3];
        let inst = format!("i{i}");
        let vs: Vec<f64> = ts.iter().map(|t| if i == 0 && *t >= 5 * MIN { 0.0 } else { 1.0 }).collect();
        src.add(Labels::from_pairs([("__name__", "up"), ("job", job), ("instance", inst.as_str())]), &ts, &vs);
    }
    for i in 0..3 {
        let inst = format!("i{i}");
        for code in ["200", "500"] {
            let l =
                Labels::from_pairs([("__name__", "http_requests_total"), ("instance", inst.as_str()), ("code", code)]);
            src.add(l, &ts, &at(10.0));
        }
    }
    for v in ["2.3.1", "203x1", "2.4.0"] {
        src.add(Labels::from_pairs([("__name__", "app_build_info"), ("version", v)]), &ts, &at(1.0));
    }
    for (v, x) in [("a", 1.0), ("b", f64::NAN), ("c", 3.0), ("d", f64::NEG_INFINITY)] {
        src.add(Labels::from_pairs([("__name__", "values"), ("v", v)]), &ts, &at(x));
    }
    for (le, x) in [("1", 1.0), ("2", 2.0), ("+Inf", f64::NAN)] {
        src.add(Labels::from_pairs([("__name__", "h_bucket"), ("le", le)]), &ts, &at(x));
    }
    let opts = EngineOptions { enable_experimental_functions: true, ..Default::default() };
    Engine::new(Arc::new(src), opts)
}

/// The instant query's vector at 2m as `(labels, value)` pairs in result order, or the error.
async fn instant(e: &Engine, q: &str) -> Result<Vec<(String, f64)>, query::Error> {
    let r = e.instant_query(q, 2 * MIN).await?;
    Ok(match r.value {
        Value::Vector(v) => v.into_iter().map(|s| (s.labels.to_string(), s.v)).collect(),
        Value::Scalar { v, .. } => vec![(String::new(), v)],
        other => panic!("{q}: not a vector: {other:?}"),
    })
}

/// [`instant`] sorted by labels.
async fn sorted(e: &Engine, q: &str) -> Vec<(String, f64)> {
    let mut v = instant(e, q).await.unwrap_or_else(|err| panic!("{q}: {err}"));
    v.sort_by(|a, b| a.0.cmp(&b.0));
    v
}

/// Compares values bit for bit, so that NaN equals NaN and -0 differs from +0.
fn same(got: &[(String, f64)], want: &[(&str, f64)]) -> bool {
    got.len() == want.len()
        && got
            .iter()
            .zip(want)
            .all(|(g, w)| g.0 == w.0 && (g.1.to_bits() == w.1.to_bits() || (g.1.is_nan() && w.1.is_nan())))
}

#[tokio::test]
async fn raw_strings_take_no_escapes() {
    let e = engine();
    let got = sorted(&e, r"app_build_info{version=~`2\.3\..*`}").await;
    assert!(same(&got, &[(r#"app_build_info{version="2.3.1"}"#, 1.0)]), "{got:?}");
    // The same regex as a double-quoted string needs its backslashes doubled.
    let got = sorted(&e, r#"app_build_info{version=~"2\\.3\\..*"}"#).await;
    assert!(same(&got, &[(r#"app_build_info{version="2.3.1"}"#, 1.0)]), "{got:?}");
    let got = sorted(&e, r#"label_replace(app_build_info, "major", "$1", "version", `(\d+)\.\d+\.\d+`)"#).await;
    let names: Vec<&str> = got.iter().map(|g| g.0.as_str()).collect();
    assert_eq!(
        names,
        vec![
            r#"app_build_info{major="2", version="2.3.1"}"#,
            r#"app_build_info{major="2", version="2.4.0"}"#,
            r#"app_build_info{version="203x1"}"#,
        ]
    );
    // In a double-quoted string `\.` is still an unknown escape: a parse error.
    let err = instant(&e, r#"app_build_info{version=~"2\.3"}"#).await.unwrap_err();
    assert_eq!(err.error_type(), "bad_data", "{err}");
}

#[tokio::test]
async fn clamp_and_friends_propagate_nan() {
    let e = engine();
    let nan = f64::NAN;
    let got = sorted(&e, r#"clamp_min(values{v="b"}, 0)"#).await;
    assert!(same(&got, &[(r#"{v="b"}"#, nan)]), "{got:?}");
    let got = sorted(&e, r#"clamp_max(values{v="b"}, 1)"#).await;
    assert!(same(&got, &[(r#"{v="b"}"#, nan)]), "{got:?}");
    let got = sorted(&e, "clamp(values, 0, 2)").await;
    assert!(
        same(&got, &[(r#"{v="a"}"#, 1.0), (r#"{v="b"}"#, nan), (r#"{v="c"}"#, 2.0), (r#"{v="d"}"#, 0.0)]),
        "{got:?}"
    );
    // A NaN bound makes every sample NaN.
    let got = sorted(&e, r#"clamp(values{v=~"a|c"}, 0, NaN)"#).await;
    assert!(same(&got, &[(r#"{v="a"}"#, nan), (r#"{v="c"}"#, nan)]), "{got:?}");
    let got = sorted(&e, r#"clamp_min(values{v="a"}, NaN)"#).await;
    assert!(same(&got, &[(r#"{v="a"}"#, nan)]), "{got:?}");
    // Go's math.Max lets +Inf win over NaN.
    let got = sorted(&e, r#"clamp_min(values{v="b"}, +Inf)"#).await;
    assert!(same(&got, &[(r#"{v="b"}"#, f64::INFINITY)]), "{got:?}");
    assert!(same(&instant(&e, "max_of(NaN, +Inf)").await.unwrap(), &[("", f64::INFINITY)]));
    assert!(same(&instant(&e, "min_of(3, NaN)").await.unwrap(), &[("", nan)]));
    assert!(same(&instant(&e, "min_of(0, -0)").await.unwrap(), &[("", -0.0)]));
}

#[tokio::test]
async fn nan_orders_last_and_ranks_lowest() {
    let e = engine();
    let (nan, inf) = (f64::NAN, f64::INFINITY);
    let got = instant(&e, "sort(values)").await.unwrap();
    let want =
        [(r#"values{v="d"}"#, -inf), (r#"values{v="a"}"#, 1.0), (r#"values{v="c"}"#, 3.0), (r#"values{v="b"}"#, nan)];
    assert!(same(&got, &want), "{got:?}");
    let got = instant(&e, "sort_desc(values)").await.unwrap();
    let want =
        [(r#"values{v="c"}"#, 3.0), (r#"values{v="a"}"#, 1.0), (r#"values{v="d"}"#, -inf), (r#"values{v="b"}"#, nan)];
    assert!(same(&got, &want), "{got:?}");
    // topk/bottomk take NaN last; max/min skip it.
    let got = instant(&e, "topk(3, values)").await.unwrap();
    let want = [(r#"values{v="c"}"#, 3.0), (r#"values{v="a"}"#, 1.0), (r#"values{v="d"}"#, -inf)];
    assert!(same(&got, &want), "{got:?}");
    let got = instant(&e, r#"bottomk(2, values{v=~"a|b"})"#).await.unwrap();
    assert!(same(&got, &[(r#"values{v="a"}"#, 1.0), (r#"values{v="b"}"#, nan)]), "{got:?}");
    assert!(same(&sorted(&e, "max(values)").await, &[("{}", 3.0)]));
    assert!(same(&sorted(&e, "min(values)").await, &[("{}", -inf)]));
    // quantile sorts NaN first: the 0-quantile is NaN, the 1-quantile the largest number.
    assert!(same(&sorted(&e, "quantile(0, values)").await, &[("{}", nan)]));
    assert!(same(&sorted(&e, "quantile(1, values)").await, &[("{}", 3.0)]));
    // stddev of a group with an infinite value is NaN.
    assert!(same(&sorted(&e, "stddev(values)").await, &[("{}", nan)]));
    // A NaN total count: no bucket reaches the rank, the answer is the largest finite bound.
    assert!(same(&sorted(&e, "histogram_quantile(0.5, h_bucket)").await, &[("{}", 2.0)]));
    // Comparisons with NaN never hold.
    assert!(sorted(&e, "values == NaN").await.is_empty());
    assert_eq!(sorted(&e, "values != NaN").await.len(), 4);
}

#[tokio::test]
async fn runtime_errors_are_execution_errors() {
    let e = engine();
    let cases = [
        (r#"label_replace(up, "dst", "$1", "src", "(.*")"#, "invalid regular expression in label_replace(): (.*"),
        (r#"label_replace(up, "", "x", "src", "(.*)")"#, "invalid destination label name in label_replace(): "),
        (
            r#"label_replace(up, "\xff", "x", "src", "(.*)")"#,
            "invalid destination label name in label_replace(): \u{fffd}",
        ),
        (r#"label_join(up, "dst", ",", "a", "")"#, "invalid source label name in label_join(): "),
        (r#"count_values("", up)"#, r#"invalid label name """#),
        (r#"count_values("a\xc5z", up)"#, r#"invalid label name "a\xc5z""#),
        ("topk(NaN, up)", "Parameter value is NaN"),
        ("topk(1e19, up)", "Scalar value 1e+19 overflows int64"),
        ("up - on(job) up", "found duplicate series for the match group"),
    ];
    for (q, want) in cases {
        let err = instant(&e, q).await.unwrap_err();
        assert_eq!(err.error_type(), "execution", "{q}: {err}");
        assert!(err.to_string().starts_with(want), "{q}: {err}");
    }
    // Parse and type errors stay bad_data.
    for q in ["sum(up", r#"label_replace(up, "dst")"#, "rate(up)", r#"count_values(1, up)"#] {
        let err = instant(&e, q).await.unwrap_err();
        assert_eq!(err.error_type(), "bad_data", "{q}: {err}");
    }
}

#[tokio::test]
async fn an_empty_side_matches_nothing_without_a_duplicate_error() {
    let e = engine();
    for q in [
        "nonexistent_metric - on(instance) http_requests_total",
        "http_requests_total - on(instance) nonexistent_metric",
        "nonexistent_metric * on(instance) group_left(code) http_requests_total",
        "http_requests_total * on(instance) group_right nonexistent_metric",
        "nonexistent_metric > on(instance) http_requests_total",
        "nonexistent_metric and on(instance) http_requests_total",
        "http_requests_total and nonexistent_metric",
    ] {
        assert_eq!(sorted(&e, q).await, vec![], "{q}");
    }
    assert_eq!(sorted(&e, "nonexistent_metric or http_requests_total").await.len(), 6);
    assert_eq!(sorted(&e, "http_requests_total unless on(instance) nonexistent_metric").await.len(), 6);
    // With both sides present the duplicates are still an error.
    let err = instant(&e, r#"up{job="a"} - on(instance) http_requests_total"#).await.unwrap_err();
    assert_eq!(
        err.to_string(),
        r#"found duplicate series for the match group {instance="i0"} on the right hand-side of the operation: [{__name__="http_requests_total", code="200", instance="i0"}, {__name__="http_requests_total", code="500", instance="i0"}];many-to-many matching not allowed: matching labels must be unique on one side"#
    );
}

#[tokio::test]
async fn count_values_sets_the_value_label_then_groups() {
    let e = engine();
    assert_eq!(sorted(&e, r#"count_values by (job) ("job", up)"#).await, vec![(r#"{job="1"}"#.to_string(), 7.0)]);
    assert_eq!(
        sorted(&e, r#"count_values by (job) ("value", up)"#).await,
        vec![
            (r#"{job="a", value="1"}"#.to_string(), 3.0),
            (r#"{job="b", value="1"}"#.to_string(), 2.0),
            (r#"{job="c", value="1"}"#.to_string(), 2.0),
        ]
    );
    assert_eq!(sorted(&e, r#"count_values("up", up)"#).await, vec![(r#"{up="1"}"#.to_string(), 7.0)]);
    // A range query: one series per distinct value (i0 drops to 0 from 5m).
    let r = e.range_query(r#"count_values by (job) ("job", up)"#, 0, 10 * MIN, 5 * MIN).await.unwrap();
    let Value::Matrix(m) = r.value else { panic!() };
    let got: Vec<(String, Vec<(i64, f64)>)> = m.into_iter().map(|s| (s.labels.to_string(), s.points)).collect();
    assert_eq!(
        got,
        vec![
            (r#"{job="0"}"#.to_string(), vec![(5 * MIN, 1.0), (10 * MIN, 1.0)]),
            (r#"{job="1"}"#.to_string(), vec![(0, 7.0), (5 * MIN, 6.0), (10 * MIN, 6.0)]),
        ]
    );
}
