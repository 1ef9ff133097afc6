//! Golden EXPLAIN output of the PromQL planner, as insta snapshots (`tests/snapshots/`): every
//! plan node appears in at least one, so a planner change shows up as a diff.
//!
//! ```text
//! cargo test -p query --test explain_snapshots          # fails on a difference, writes *.snap.new
//! cargo insta review                                    # (cargo-insta) accept or reject them
//! INSTA_UPDATE=always cargo test -p query --test explain_snapshots   # or accept all at once
//! ```
//!
//! The unit test `plan::registry::tests::every_node_has_an_explain_snapshot` checks the other
//! direction: each registered node's name appears in these snapshots.
#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::sync::Arc;

use engine::{Labels, MemSource};
use query::{Engine, EngineOptions};

/// 10m..20m at 1m: a range query.
const RANGE: (i64, i64, i64) = (600_000, 1_200_000, 60_000);
/// 10m: an instant query.
const INSTANT: (i64, i64, i64) = (600_000, 600_000, 0);

/// Two partitions, whatever the machine's cores, so the physical plans show the in-order merges.
fn engine() -> Engine {
    let opts = EngineOptions { enable_experimental_functions: true, partitions: 2, ..Default::default() };
    Engine::new(Arc::new(MemSource::new()), opts)
}

async fn explain(e: &Engine, q: &str, (start, end, step): (i64, i64, i64)) -> String {
    let text = e.explain(q, start, end, step, false).await.unwrap_or_else(|err| panic!("explain {q}: {err}"));
    format!("query: {q}\nat: start={start} end={end} step={step}\n{text}")
}

/// One snapshot per case: (snapshot name, query, time range).
const CASES: &[(&str, &str, (i64, i64, i64))] = &[
    // Leaves and selectors.
    ("instant_selector", r#"up{job="a", instance=~"x.*"}"#, RANGE),
    ("instant_selector_offset_at", "up offset 5m @ 300", INSTANT),
    ("instant_selector_or_matchers", r#"{__name__="up", job="a" or __name__="up", job="b"}"#, INSTANT),
    ("timestamp_of_selector", "timestamp(up)", INSTANT),
    ("number_literal", "42", RANGE),
    ("time_literal", "time()", RANGE),
    // Range functions, with and without start timestamps; a subquery.
    ("sum_by_job_rate", "sum by (job) (rate(x[5m]))", RANGE),
    ("quantile_over_time_with_param", "quantile_over_time(0.9, x[10m])", INSTANT),
    ("predict_linear", "predict_linear(x[10m], 3600)", INSTANT),
    ("absent_over_time", r#"absent_over_time(x{job="a"}[5m])"#, INSTANT),
    ("subquery_max_over_time", "max_over_time(rate(x[5m])[30m:1m] offset 1m)", INSTANT),
    // Aggregations.
    ("aggregate_without", "avg without (instance) (x)", RANGE),
    ("topk", "topk(3, x)", INSTANT),
    ("count_values", r#"count_values("value", x)"#, INSTANT),
    ("quantile_aggregate", "quantile by (job) (0.5, x)", RANGE),
    // Binary operators.
    ("binary_vector_vector_on_group_left", "x / on (job) group_left (zone) y", RANGE),
    ("binary_vector_scalar_bool", "x > bool 1", INSTANT),
    ("binary_set_operators", "x and y or z unless w", INSTANT),
    (
        "binary_instant_with_subquery",
        "max_over_time(up[10m:1m] offset 1m) > bool on (job) group_left vector(1)",
        INSTANT,
    ),
    // Per-sample and per-step functions.
    ("unary_minus_and_abs", "-abs(x)", INSTANT),
    ("clamp_round", "round(clamp(x, 0, 10), 0.5)", INSTANT),
    ("date_function_without_argument", "hour()", INSTANT),
    ("scalar_of_vector", "scalar(sum(x))", RANGE),
    ("absent", r#"absent(nonexistent{job="a"})"#, INSTANT),
    ("sort_desc", "sort_desc(x)", INSTANT),
    ("sort_by_label", r#"sort_by_label(x, "job", "instance")"#, INSTANT),
    // Label functions.
    ("label_replace", r#"label_replace(x, "dst", "$1", "job", "(.*)")"#, INSTANT),
    ("label_join", r#"label_join(x, "dst", "-", "job", "instance")"#, INSTANT),
    // Classic histograms.
    ("histogram_quantile", "histogram_quantile(0.9, sum by (le) (rate(h_bucket[5m])))", RANGE),
    ("histogram_quantiles", r#"histogram_quantiles(h_bucket, "q", 0.5, 0.9)"#, INSTANT),
    ("histogram_fraction", "histogram_fraction(0, 0.5, h_bucket)", INSTANT),
    // info().
    ("info_with_data_selector", r#"info(up offset 1m, {__name__=~".+_info", k="v"})"#, INSTANT),
];

#[tokio::test]
async fn explain_snapshots() {
    let e = engine();
    for (name, q, range) in CASES {
        let text = explain(&e, q, *range).await;
        insta::assert_snapshot!(*name, text);
    }
}

/// With `use_start_timestamps`, a scan under `rate` reads the start-timestamp column.
#[tokio::test]
async fn explain_snapshot_rate_with_start_timestamps() {
    let opts = EngineOptions { use_start_timestamps: true, partitions: 2, ..Default::default() };
    let e = Engine::new(Arc::new(MemSource::new()), opts);
    let text = explain(&e, "rate(x[5m])", RANGE).await;
    insta::assert_snapshot!("rate_with_start_timestamps", text);
}

#[tokio::test]
async fn explain_analyze_reports_rows() {
    let src = MemSource::new();
    let ts: Vec<i64> = (0..=20).map(|i| i * 60_000).collect();
    let vs: Vec<f64> = (0..=20).map(|i| i as f64).collect();
    src.add(Labels::from_pairs([("__name__", "x"), ("job", "a")]), &ts, &vs);
    let e = Engine::new(Arc::new(src), EngineOptions { partitions: 2, ..Default::default() });
    let text = e.explain("sum by (job) (rate(x[5m]))", 600_000, 1_200_000, 60_000, true).await.unwrap();
    // 15 raw samples in (5m, 20m] scanned, 11 steps of rate and of the sum.
    assert!(
        text.contains(
            "PromSeriesScanExec: {__name__=\"x\"}, range=[300001, 1200000], 2 partitions, metrics=[output_rows=15"
        ),
        "{text}"
    );
    assert!(text.contains("PromMergeExec: 2 partitions, in scan order, metrics=[output_rows=11"), "{text}");
    assert!(
        text.contains(
            "PromAggregateExec: sum by (job), t=600000..1200000 step=60000, partial per batch, metrics=[output_rows=11"
        ),
        "{text}"
    );
}
