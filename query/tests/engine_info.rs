//! The experimental functions `info()` and `histogram_quantiles()`, and the positions
//! Prometheus gives annotations, end to end over a `MemSource`.
#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::sync::Arc;

use engine::{Labels, MemSource};
use query::{Engine, EngineOptions, Value};

const MIN: i64 = 60_000;

/// Every minute from 0 to 8m:
/// * `up{instance="a",job="j"}` = 0, 1, ..., 8 and `up{instance="b",job="j"}` = 10, 11, ...;
/// * `target_info{instance="a",job="j",version="old"}` until 2m, then a stale marker at 3m;
///   `version="new"` from 3m;
/// * `build_info{instance="a",job="j",rev="r1"}` throughout;
/// * classic buckets `lat_bucket{le=...}` 10, 20, 40 (+Inf) at every minute.
fn engine() -> Engine {
    let src = MemSource::new();
    let ts: Vec<i64> = (0..=8).map(|i| i * MIN).collect();
    let up = |inst: &str| Labels::from_pairs([("__name__", "up"), ("instance", inst), ("job", "j")]);
    src.add(up("a"), &ts, &ts.iter().map(|t| (t / MIN) as f64).collect::<Vec<_>>());
    src.add(up("b"), &ts, &ts.iter().map(|t| (t / MIN) as f64 + 10.0).collect::<Vec<_>>());
    let ti =
        |v: &str| Labels::from_pairs([("__name__", "target_info"), ("instance", "a"), ("job", "j"), ("version", v)]);
    let stale = f64::from_bits(0x7ff0_0000_0000_0002);
    src.add(ti("old"), &[0, MIN, 2 * MIN, 3 * MIN], &[1.0, 1.0, 1.0, stale]);
    src.add(ti("new"), &ts[3..], &[1.0; 6]);
    src.add(
        Labels::from_pairs([("__name__", "build_info"), ("instance", "a"), ("job", "j"), ("rev", "r1")]),
        &ts,
        &vec![1.0; ts.len()],
    );
    for (le, v) in [("0.1", 10.0), ("1", 20.0), ("+Inf", 40.0)] {
        src.add(Labels::from_pairs([("__name__", "lat_bucket"), ("le", le)]), &ts, &vec![v; ts.len()]);
    }
    Engine::new(Arc::new(src), EngineOptions { enable_experimental_functions: true, ..Default::default() })
}

fn vector(v: Value) -> Vec<(String, f64)> {
    let Value::Vector(mut s) = v else { panic!("not a vector: {v:?}") };
    s.sort_by(|a, b| a.labels.cmp(&b.labels));
    s.into_iter().map(|s| (s.labels.to_string(), s.v)).collect()
}

fn matrix(v: Value) -> Vec<(String, Vec<(i64, f64)>)> {
    let Value::Matrix(m) = v else { panic!("not a matrix: {v:?}") };
    m.into_iter().map(|s| (s.labels.to_string(), s.points)).collect()
}

#[tokio::test]
async fn info_adds_target_info_data_labels_per_step() {
    let e = engine();
    // instance b has no target_info: it passes through unchanged (no data matcher requires a value).
    let m = matrix(e.range_query("info(up)", 2 * MIN, 4 * MIN, MIN).await.unwrap().value);
    assert_eq!(
        m,
        vec![
            ("up{instance=\"a\", job=\"j\", version=\"new\"}".into(), vec![(3 * MIN, 3.0), (4 * MIN, 4.0)]),
            ("up{instance=\"a\", job=\"j\", version=\"old\"}".into(), vec![(2 * MIN, 2.0)]),
            ("up{instance=\"b\", job=\"j\"}".into(), vec![(2 * MIN, 12.0), (3 * MIN, 13.0), (4 * MIN, 14.0)]),
        ]
    );
    // A data matcher that needs a value drops what no info series enriches.
    let v = vector(e.instant_query("info(up, {version=~\".+\"})", 5 * MIN).await.unwrap().value);
    assert_eq!(v, vec![("up{instance=\"a\", job=\"j\", version=\"new\"}".into(), 5.0)]);
    // A selector whose matchers all match the empty string parses (as in Prometheus) and keeps
    // what no info series enriches.
    let v = vector(e.instant_query("info(up, {version=~\".*\"})", 5 * MIN).await.unwrap().value);
    assert_eq!(
        v,
        vec![
            ("up{instance=\"a\", job=\"j\", version=\"new\"}".into(), 5.0),
            ("up{instance=\"b\", job=\"j\"}".into(), 15.0),
        ]
    );
    // Several info metrics at once; the info series themselves are not enriched.
    let v = vector(e.instant_query("info({job=\"j\"}, {__name__=~\".+_info\"})", 5 * MIN).await.unwrap().value);
    assert_eq!(
        v,
        vec![
            ("build_info{instance=\"a\", job=\"j\", rev=\"r1\"}".into(), 1.0),
            ("target_info{instance=\"a\", job=\"j\", version=\"new\"}".into(), 1.0),
            ("up{instance=\"a\", job=\"j\", rev=\"r1\", version=\"new\"}".into(), 5.0),
            ("up{instance=\"b\", job=\"j\"}".into(), 15.0),
        ]
    );
}

#[tokio::test]
async fn info_reads_info_series_at_the_reference_time() {
    let e = engine();
    // `@ 120` pins the lookup of target_info too: "old" at every step, though it went stale.
    let m = matrix(e.range_query("info(up{instance=\"a\"} @ 120)", 6 * MIN, 7 * MIN, MIN).await.unwrap().value);
    assert_eq!(
        m,
        vec![("up{instance=\"a\", job=\"j\", version=\"old\"}".into(), vec![(6 * MIN, 2.0), (7 * MIN, 2.0)])]
    );
    // offset shifts it per step: at 5m the base and info series are read at 2m, at 6m at 3m.
    let m = matrix(e.range_query("info(up{instance=\"a\"} offset 3m)", 5 * MIN, 6 * MIN, MIN).await.unwrap().value);
    assert_eq!(
        m,
        vec![
            ("up{instance=\"a\", job=\"j\", version=\"new\"}".into(), vec![(6 * MIN, 3.0)]),
            ("up{instance=\"a\", job=\"j\", version=\"old\"}".into(), vec![(5 * MIN, 2.0)]),
        ]
    );
    // Paths that disagree (`@ 120` and no modifier) fall back to the step itself.
    let v = vector(
        e.instant_query("info(up{instance=\"a\"} @ 120 + on() group_left vector(0))", 6 * MIN).await.unwrap().value,
    );
    assert_eq!(v, vec![("{instance=\"a\", job=\"j\", version=\"new\"}".into(), 2.0)]);
}

#[tokio::test]
async fn info_errors_and_plan() {
    let e = engine();
    let r = e.instant_query("info(up, {__name__=~\".+_info\", version=\"x\"} )", 5 * MIN).await.unwrap();
    assert!(vector(r.value).is_empty());
    let src = MemSource::new();
    for (n, x) in [("a_info", "1"), ("b_info", "2")] {
        src.add(Labels::from_pairs([("__name__", n), ("instance", "i"), ("x", x)]), &[0], &[1.0]);
    }
    src.add(Labels::from_pairs([("__name__", "m"), ("instance", "i")]), &[0], &[1.0]);
    let e2 = Engine::new(Arc::new(src), EngineOptions { enable_experimental_functions: true, ..Default::default() });
    let err = e2.instant_query("info(m, {__name__=~\".+_info\"})", 0).await.unwrap_err();
    assert_eq!(err.to_string(), "conflicting label: x");
    assert_eq!(err.error_type(), "execution");
    // Without the experimental flag the function is rejected like Prometheus does.
    let plain = Engine::new(Arc::new(MemSource::new()), EngineOptions::default());
    let err = plain.instant_query("info(up)", 0).await.unwrap_err();
    assert!(err.to_string().contains("function \"info\" is not enabled"), "{err}");
}

#[tokio::test]
async fn histogram_quantiles_labels_each_quantile() {
    let e = engine();
    let r = e.instant_query("histogram_quantiles(lat_bucket, \"q\", 0, 0.25, 1)", MIN).await.unwrap();
    // 40 observations: 10 <= 0.1, 10 in (0.1, 1], 20 above 1.
    assert_eq!(
        vector(r.value),
        vec![("{q=\"0.0\"}".into(), 0.0), ("{q=\"0.25\"}".into(), 0.1), ("{q=\"1.0\"}".into(), 1.0)]
    );
    assert!(r.warnings.is_empty(), "{:?}", r.warnings);
    let r = e.instant_query("histogram_quantiles(lat_bucket, \"q\", 1.5)", MIN).await.unwrap();
    assert_eq!(vector(r.value), vec![("{q=\"1.5\"}".into(), f64::INFINITY)]);
    assert_eq!(
        r.warnings,
        vec!["PromQL warning: quantile value should be between 0 and 1, got 1.5 (1:38)".to_string()]
    );
    // The same quantile twice gives the same label set twice.
    let err = e.instant_query("histogram_quantiles(lat_bucket, \"le\", 0.5, 0.5)", MIN).await.unwrap_err();
    assert_eq!(err.to_string(), "vector cannot contain metrics with the same labelset");
}

#[tokio::test]
async fn annotations_carry_the_argument_position() {
    let e = engine();
    let r = e.instant_query("histogram_quantile(0.5,\n  up)", MIN).await.unwrap();
    assert_eq!(
        r.warnings,
        vec![
            "PromQL warning: bucket label \"le\" is missing or has a malformed value of \"\" for metric name \"up\" (2:3)"
                .to_string()
        ]
    );
}
