//! Query limits: sample limit and timeout end a query with Prometheus's errors.
#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::sync::Arc;
use std::time::Duration;

use async_trait::async_trait;
use engine::{Labels, Matcher, MemSource, SelectRequest, SeriesSource, SeriesStream};
use query::{Engine, EngineOptions, Error};

fn source() -> Arc<MemSource> {
    let src = MemSource::new();
    let ts: Vec<i64> = (0..100).map(|i| i * 15_000).collect();
    let vs: Vec<f64> = (0..100).map(|i| i as f64).collect();
    for j in 0..3 {
        src.add(Labels::from_pairs([("__name__", "m"), ("j", &j.to_string())]), &ts, &vs);
    }
    Arc::new(src)
}

#[tokio::test]
async fn too_many_samples() {
    let opts = EngineOptions { max_samples: 20, ..Default::default() };
    let e = Engine::new(source(), opts);
    // 3 series x 41 steps of an instant selector: 123 samples > 20.
    let err = e.range_query("m", 0, 600_000, 15_000).await.unwrap_err();
    assert!(matches!(err, Error::TooManySamples(_)), "{err:?}");
    assert_eq!(err.to_string(), "query processing would load too many samples into memory in query execution");
    assert_eq!(err.error_type(), "execution");
    // 3 series at one step fit.
    let ok = e.instant_query("m", 600_000).await.unwrap();
    assert!(matches!(ok.value, query::Value::Vector(v) if v.len() == 3));
}

/// A source that takes a second to answer.
#[derive(Debug)]
struct Slow(Arc<MemSource>);

#[async_trait]
impl SeriesSource for Slow {
    async fn select(&self, req: &SelectRequest) -> engine::Result<SeriesStream> {
        tokio::time::sleep(Duration::from_secs(1)).await;
        self.0.select(req).await
    }
    async fn series(&self, m: &[Matcher], a: i64, b: i64) -> engine::Result<Vec<Labels>> {
        self.0.series(m, a, b).await
    }
}

#[tokio::test]
async fn timeout() {
    let opts = EngineOptions { timeout: Duration::from_millis(50), ..Default::default() };
    let e = Engine::new(Arc::new(Slow(source())), opts);
    let err = e.instant_query("sum(m)", 600_000).await.unwrap_err();
    assert!(matches!(err, Error::Timeout(_)), "{err:?}");
    assert_eq!(err.to_string(), "query timed out in query execution");
}
