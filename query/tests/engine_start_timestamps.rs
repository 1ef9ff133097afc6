//! Start timestamps (`EngineOptions::use_start_timestamps`, Prometheus's `use-start-timestamps`):
//! each query run with the option off (stock Prometheus) and on, over a `MemSource` that holds
//! start timestamps.
#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::sync::Arc;

use engine::{Labels, MemSource};
use query::{Engine, EngineOptions, Value};

/// `c` at 60 s, 120 s, …, 600 s with values 10, 20, …, 100. The first five samples count from a
/// start at 30 s; the counter restarted at 330 s (the later samples' start time) without its
/// value ever dropping, so only the start timestamps show the reset.
fn engine(use_st: bool) -> Engine {
    let src = MemSource::new();
    let ts: Vec<i64> = (1..=10).map(|i| i * 60_000).collect();
    let vs: Vec<f64> = (1..=10).map(|i| i as f64 * 10.0).collect();
    let sts: Vec<i64> = ts.iter().map(|&t| if t <= 300_000 { 30_000 } else { 330_000 }).collect();
    src.add_with_start_timestamps(Labels::from_pairs([("__name__", "c")]), &ts, &vs, &sts);
    // A series without start timestamps behaves the same with the option on.
    src.add(Labels::from_pairs([("__name__", "plain")]), &ts, &vs);
    Engine::new(Arc::new(src), EngineOptions { use_start_timestamps: use_st, ..Default::default() })
}

/// The value of the only sample of an instant query, or `None` for an empty vector.
async fn one(e: &Engine, q: &str, t: i64) -> Option<f64> {
    let r = e.instant_query(q, t).await.unwrap();
    let Value::Vector(v) = r.value else { panic!("not a vector: {:?}", r.value) };
    assert!(v.len() <= 1, "{q}: {v:?}");
    v.first().map(|s| s.v)
}

fn close(a: Option<f64>, b: f64) -> bool {
    a.is_some_and(|a| (a - b).abs() <= 1e-9 * b.abs().max(1.0))
}

#[tokio::test]
async fn start_timestamps_show_resets_the_values_hide() {
    let (off, on) = (engine(false), engine(true));
    assert_eq!(one(&off, "resets(c[10m])", 600_000).await, Some(0.0));
    assert_eq!(one(&on, "resets(c[10m])", 600_000).await, Some(1.0));
    // Off: 90 over 540 s, extrapolated to the window start (60 s away, the zero point) = 100.
    assert!(close(one(&off, "increase(c[10m])", 600_000).await, 100.0));
    // On: 50 counted from zero at 30 s, then 100 from zero at 330 s: no extrapolation needed.
    assert!(close(one(&on, "increase(c[10m])", 600_000).await, 150.0));
    assert!(close(one(&on, "rate(c[10m])", 600_000).await, 0.25));
    // irate across the reset: the last value over the last interval.
    assert!(close(one(&off, "irate(c[5m])", 360_000).await, 10.0 / 60.0));
    assert!(close(one(&on, "irate(c[5m])", 360_000).await, 1.0));
    // One sample is enough when its start time lies inside the window.
    assert_eq!(one(&off, "increase(c[1m])", 70_000).await, None);
    assert!(close(one(&on, "increase(c[1m])", 70_000).await, 10.0));
    // delta ignores start timestamps; a subquery's samples have none.
    for q in ["delta(c[10m])", "increase(c[10m:1m])", "increase(plain[10m])", "resets(plain[10m])"] {
        assert_eq!(one(&off, q, 600_000).await, one(&on, q, 600_000).await, "{q}");
    }
}

#[tokio::test]
async fn only_counter_function_scans_read_start_timestamps() {
    let plan = |e: Engine, q: &'static str| async move { e.explain(q, 600_000, 600_000, 0, false).await.unwrap() };
    assert!(!plan(engine(false), "rate(c[5m])").await.contains("start_timestamps"));
    assert!(plan(engine(true), "rate(c[5m])").await.contains("start_timestamps"));
    assert!(!plan(engine(true), "sum_over_time(c[5m])").await.contains("start_timestamps"));
    assert!(!plan(engine(true), "c").await.contains("start_timestamps"));
}

#[tokio::test]
async fn overlapping_start_times_warn() {
    let src = MemSource::new();
    // Each start time reaches back before the previous sample: overlapping intervals.
    src.add_with_start_timestamps(
        Labels::from_pairs([("__name__", "x_total")]),
        &[120_000, 180_000, 240_000],
        &[60.0, 120.0, 180.0],
        &[0, 60_000, 60_000 + 1],
    );
    let e = Engine::new(Arc::new(src), EngineOptions { use_start_timestamps: true, ..Default::default() });
    let r = e.instant_query("rate(x_total[3m])", 240_000).await.unwrap();
    assert_eq!(
        r.warnings,
        vec![
            "PromQL warning: sample has start time that overlaps with previous sample timestamp for metric \"x_total\" (1:6)"
                .to_string()
        ]
    );
}
