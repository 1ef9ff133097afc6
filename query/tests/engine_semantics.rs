//! PromQL semantics end to end over a `MemSource`: range functions, aggregations, binary
//! operators, offset / @, subqueries, and Prometheus's error messages.
#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::sync::Arc;

use engine::{Labels, MemSource};
use query::{Engine, EngineOptions, Value};

/// `c{job="a",i="1"}` counts up 1/s, `c{job="a",i="2"}` 2/s, `c{job="b",i="1"}` 3/s, sampled
/// every 15 s from 0 to 20 min; `info{job="a",team="x"}` = 1.
fn engine() -> Engine {
    let src = MemSource::new();
    let ts: Vec<i64> = (0..=80).map(|i| i * 15_000).collect();
    for (job, i, rate) in [("a", "1", 1.0), ("a", "2", 2.0), ("b", "1", 3.0)] {
        let vs: Vec<f64> = ts.iter().map(|t| *t as f64 / 1000.0 * rate).collect();
        src.add(Labels::from_pairs([("__name__", "c"), ("job", job), ("i", i)]), &ts, &vs);
    }
    src.add(Labels::from_pairs([("__name__", "info"), ("job", "a"), ("team", "x")]), &ts, &vec![1.0; ts.len()]);
    Engine::new(Arc::new(src), EngineOptions { enable_experimental_functions: true, ..Default::default() })
}

fn vector(v: Value) -> Vec<(String, f64)> {
    let Value::Vector(mut s) = v else { panic!("not a vector: {v:?}") };
    s.sort_by(|a, b| a.labels.cmp(&b.labels));
    s.into_iter().map(|s| (s.labels.to_string(), s.v)).collect()
}

fn close(a: f64, b: f64) -> bool {
    (a - b).abs() <= 1e-9 * b.abs().max(1.0)
}

#[tokio::test]
async fn rate_sum_by_and_offset() {
    let e = engine();
    let v = vector(e.instant_query("sum by (job) (rate(c[5m]))", 600_000).await.unwrap().value);
    assert_eq!(v.len(), 2);
    assert_eq!(v[0].0, "{job=\"a\"}");
    assert!(close(v[0].1, 3.0) && close(v[1].1, 3.0), "{v:?}");
    // offset moves the read time back: the counter value of 5 minutes earlier.
    let v = vector(e.instant_query("c{job=\"b\"} offset 5m", 600_000).await.unwrap().value);
    assert_eq!(v, vec![("c{i=\"1\", job=\"b\"}".to_string(), 900.0)]);
    // @ pins it; the value is the same at every step.
    let r = e.range_query("c{job=\"b\"} @ 60", 0, 120_000, 60_000).await.unwrap();
    let Value::Matrix(m) = r.value else { panic!() };
    assert_eq!(m[0].points, vec![(0, 180.0), (60_000, 180.0), (120_000, 180.0)]);
}

#[tokio::test]
async fn subquery_and_over_time() {
    let e = engine();
    // max of rate over the last 10m at 1m resolution: the rate is constant 2/s.
    let v = vector(e.instant_query("max_over_time(rate(c{i=\"2\"}[1m])[10m:1m])", 1_200_000).await.unwrap().value);
    assert_eq!(v.len(), 1);
    assert!(close(v[0].1, 2.0), "{v:?}");
    // (9m, 10m] holds 4 samples at 15 s spacing.
    let v = vector(e.instant_query("count_over_time(c{job=\"b\"}[1m])", 600_000).await.unwrap().value);
    assert_eq!(v, vec![("{i=\"1\", job=\"b\"}".to_string(), 4.0)]);
    let r = e.instant_query("c{job=\"b\"}[30s]", 600_000).await.unwrap();
    let Value::Matrix(m) = r.value else { panic!() };
    assert_eq!(m[0].points, vec![(585_000, 1755.0), (600_000, 1800.0)]);
}

#[tokio::test]
async fn binary_matching() {
    let e = engine();
    let v = vector(e.instant_query("c * on (job) group_left (team) info", 60_000).await.unwrap().value);
    assert_eq!(
        v,
        vec![
            ("{i=\"1\", job=\"a\", team=\"x\"}".to_string(), 60.0),
            ("{i=\"2\", job=\"a\", team=\"x\"}".to_string(), 120.0),
        ]
    );
    let err = e.instant_query("c + on (job) info", 60_000).await.unwrap_err();
    assert_eq!(
        err.to_string(),
        "multiple matches for labels: many-to-one matching must be explicit (group_left/group_right)"
    );
    assert_eq!(err.error_type(), "execution");
    let v = vector(e.instant_query("c > bool 100", 60_000).await.unwrap().value);
    assert_eq!(v.iter().map(|x| x.1).collect::<Vec<_>>(), vec![0.0, 1.0, 1.0]);
    let v = vector(e.instant_query("c unless on (job) info", 60_000).await.unwrap().value);
    assert_eq!(v, vec![("c{i=\"1\", job=\"b\"}".to_string(), 180.0)]);
}

#[tokio::test]
async fn name_dropping_collision_is_an_error() {
    let e = engine();
    let err = e.instant_query("label_replace(c, \"i\", \"same\", \"\", \"\")", 600_000).await.unwrap_err();
    assert_eq!(err.to_string(), "vector cannot contain metrics with the same labelset");
}

#[tokio::test]
async fn scalars_and_absent() {
    let e = engine();
    let r = e.instant_query("scalar(sum(c{job=\"b\"})) * 2", 60_000).await.unwrap();
    assert_eq!(r.value, Value::Scalar { t: 60_000, v: 360.0 });
    let v = vector(e.instant_query("absent(nope{job=\"z\"})", 60_000).await.unwrap().value);
    assert_eq!(v, vec![("{job=\"z\"}".to_string(), 1.0)]);
    let v = vector(e.instant_query("absent(c)", 60_000).await.unwrap().value);
    assert!(v.is_empty());
    let err = e.range_query("c[5m]", 0, 60_000, 15_000).await.unwrap_err();
    assert_eq!(err.error_type(), "bad_data");
}
