//! Golden EXPLAIN output of the PromQL planner: a planner change shows up as a diff here.
#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::sync::Arc;

use engine::{Labels, MemSource};
use query::{Engine, EngineOptions};

const SUM_RATE_GOLDEN: &str = r#"logical plan:
PromAggregate: sum by (job), t=600000..1200000 step=60000, partial per batch
  PromRangeFunc: rate, t=600000..1200000 step=60000, range=5m
    PromSeriesScan: {__name__="x"}, range=[300001, 1200000]
physical plan:
PromAggregateExec: sum by (job), t=600000..1200000 step=60000, partial per batch
  PromRangeFuncExec: rate, t=600000..1200000 step=60000, range=5m
    CooperativeExec
      PromSeriesScanExec: {__name__="x"}, range=[300001, 1200000]
"#;

#[tokio::test]
async fn explain_sum_by_job_rate() {
    let e = Engine::new(Arc::new(MemSource::new()), EngineOptions::default());
    let text = e.explain("sum by (job) (rate(x[5m]))", 600_000, 1_200_000, 60_000, false).await.unwrap();
    assert_eq!(text, SUM_RATE_GOLDEN);
}

#[tokio::test]
async fn explain_instant_binary_and_subquery() {
    let e = Engine::new(Arc::new(MemSource::new()), EngineOptions::default());
    let text = e
        .explain("max_over_time(up[10m:1m] offset 1m) > bool on (job) group_left vector(1)", 600_000, 600_000, 0, false)
        .await
        .unwrap();
    let logical = text.split("physical plan:").next().unwrap();
    assert_eq!(
        logical,
        r#"logical plan:
PromBinary: vector > bool vector, on(job) group_left(), t=600000
  PromRangeFunc: max_over_time, t=600000, range=10m, offset=1m
    PromSubquery: inner t=0..540000 step=60000, range=10m
      PromInstantSelect: t=0..540000 step=60000, lookback=5m
        PromSeriesScan: {__name__="up"}, range=[-299999, 540000]
  PromLiteral: t=600000, value=1
"#
    );
}

#[tokio::test]
async fn explain_analyze_reports_rows() {
    let src = MemSource::new();
    let ts: Vec<i64> = (0..=20).map(|i| i * 60_000).collect();
    let vs: Vec<f64> = (0..=20).map(|i| i as f64).collect();
    src.add(Labels::from_pairs([("__name__", "x"), ("job", "a")]), &ts, &vs);
    let e = Engine::new(Arc::new(src), EngineOptions::default());
    let text = e.explain("sum by (job) (rate(x[5m]))", 600_000, 1_200_000, 60_000, true).await.unwrap();
    // 15 raw samples in (5m, 20m] scanned, 11 steps of rate and of the sum.
    assert!(
        text.contains("PromSeriesScanExec: {__name__=\"x\"}, range=[300001, 1200000], metrics=[output_rows=15"),
        "{text}"
    );
    assert!(
        text.contains(
            "PromAggregateExec: sum by (job), t=600000..1200000 step=60000, partial per batch, metrics=[output_rows=11"
        ),
        "{text}"
    );
}

#[tokio::test]
async fn explain_info_reads_info_series_at_the_reference_time() {
    let opts = EngineOptions { enable_experimental_functions: true, ..Default::default() };
    let e = Engine::new(Arc::new(MemSource::new()), opts);
    let text =
        e.explain("info(up offset 1m, {__name__=~\".+_info\", k=\"v\"})", 600_000, 600_000, 0, false).await.unwrap();
    let logical = text.split("physical plan:").next().unwrap();
    assert_eq!(
        logical,
        r#"logical plan:
PromInfo: t=600000, info={__name__=~".+_info"}, data=[k="v"], join=instance,job, offset=1m
  PromInstantSelect: t=600000, lookback=5m, offset=1m
    PromSeriesScan: {__name__="up"}, range=[240001, 540000]
  PromInstantSelect: t=600000, lookback=5m, offset=1m, emit=sample_timestamp
    PromSeriesScan: {__name__=~".+_info", k="v"}, range=[240001, 540000]
"#
    );
}
