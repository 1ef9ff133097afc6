//! End-to-end checks of the PromQL engine over a `MemSource`.
#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::sync::Arc;

use engine::{Labels, MemSource};
use query::{Engine, EngineOptions, Value};

fn l(pairs: &[(&str, &str)]) -> Labels {
    Labels::from_pairs(pairs.iter().copied())
}

/// Series `x{job="a"}` = 0,10,20,... every minute and `x{job="b"}` = 0,1,2... every minute, 0..10m.
fn engine() -> Engine {
    let src = MemSource::new();
    let ts: Vec<i64> = (0..=10).map(|i| i * 60_000).collect();
    src.add(l(&[("__name__", "x"), ("job", "a")]), &ts, &ts.iter().map(|t| (t / 6000) as f64).collect::<Vec<_>>());
    src.add(l(&[("__name__", "x"), ("job", "b")]), &ts, &ts.iter().map(|t| (t / 60000) as f64).collect::<Vec<_>>());
    Engine::new(Arc::new(src), EngineOptions::default())
}

#[tokio::test]
async fn instant_selector_and_number() {
    let e = engine();
    let r = e.instant_query("x", 150_000).await.unwrap();
    let Value::Vector(mut v) = r.value else { panic!("not a vector") };
    v.sort_by(|a, b| a.labels.cmp(&b.labels));
    assert_eq!(v.len(), 2);
    assert_eq!((v[0].labels.get("job"), v[0].v, v[0].t), (Some("a"), 20.0, 150_000));
    assert_eq!((v[1].labels.get("job"), v[1].v), (Some("b"), 2.0));
    let r = e.instant_query("42", 1000).await.unwrap();
    assert_eq!(r.value, Value::Scalar { t: 1000, v: 42.0 });
    let r = e.instant_query("\"hi\"", 1000).await.unwrap();
    assert_eq!(r.value, Value::String { t: 1000, v: "hi".into() });
}

#[tokio::test]
async fn range_query_steps_and_lookback() {
    let e = engine();
    // After the last sample at 10m the lookback keeps it visible until 15m (exclusive).
    let r = e.range_query("x{job=\"b\"}", 540_000, 960_000, 60_000).await.unwrap();
    let Value::Matrix(m) = r.value else { panic!("not a matrix") };
    assert_eq!(m.len(), 1);
    let ts: Vec<i64> = m[0].points.iter().map(|p| p.0).collect();
    assert_eq!(ts, vec![540_000, 600_000, 660_000, 720_000, 780_000, 840_000]);
    assert_eq!(m[0].points[5].1, 10.0);
    let r = e.range_query("7", 0, 120_000, 60_000).await.unwrap();
    let Value::Matrix(m) = r.value else { panic!("not a matrix") };
    assert_eq!(m[0].points, vec![(0, 7.0), (60_000, 7.0), (120_000, 7.0)]);
    assert!(m[0].labels.is_empty());
}

#[tokio::test]
async fn parse_errors_are_bad_data() {
    let e = engine();
    let err = e.instant_query("sum(", 0).await.unwrap_err();
    assert_eq!(err.error_type(), "bad_data");
}
