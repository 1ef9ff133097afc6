//! The hints each selector's scan gives its source: the function or aggregation it sits under,
//! as Prometheus's engine puts it into `SelectHints.Func` (the nearest call or aggregation above,
//! none across a binary operator), and so the downsampled aggregate it reads (Thanos's
//! `aggrsFromFunc`: `max(x)` reads max, `min(x)` min, `count(x)` count, `sum(x)` sum/count).
#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::sync::{Arc, Mutex};

use async_trait::async_trait;
use engine::aggr::Aggregate::{self, *};
use engine::{Labels, Matcher, MemSource, SelectRequest, SeriesSource, SeriesStream};
use query::{Engine, EngineOptions};

/// What a select asked for: metric name, aggregates read, max resolution.
type Seen = (String, Vec<Aggregate>, i64);

/// A source that records the hints of every select.
#[derive(Debug, Default)]
struct Recording {
    mem: MemSource,
    seen: Mutex<Vec<Seen>>,
}

#[async_trait]
impl SeriesSource for Recording {
    async fn select(&self, req: &SelectRequest) -> engine::Result<SeriesStream> {
        let name = req.matchers.iter().find(|m| m.name == "__name__").map(|m| m.value.clone()).unwrap_or_default();
        let h = &req.hints;
        self.seen.lock().unwrap().push((name, h.aggregates.clone(), h.max_resolution_ms));
        self.mem.select(req).await
    }
    async fn series(&self, m: &[Matcher], a: i64, b: i64) -> engine::Result<Vec<Labels>> {
        self.mem.series(m, a, b).await
    }
}

/// `(metric, aggregates read, max resolution)` of every select of `q`, sorted.
async fn hints(q: &str) -> Vec<Seen> {
    let src = Arc::new(Recording::default());
    let ts: Vec<i64> = (0..40).map(|i| i * 60_000).collect();
    let vs: Vec<f64> = (0..40).map(|i| i as f64).collect();
    for n in ["a", "b"] {
        src.mem.add(Labels::from_pairs([("__name__", n)]), &ts, &vs);
    }
    let opts = EngineOptions { max_source_resolution_ms: 300_000, ..Default::default() };
    let e = Engine::new(src.clone(), opts);
    e.range_query(q, 1_200_000, 2_400_000, 60_000).await.unwrap_or_else(|err| panic!("{q}: {err}"));
    let mut out = src.seen.lock().unwrap().clone();
    out.sort();
    out
}

fn one(n: &str, a: &[Aggregate]) -> Seen {
    (n.to_string(), a.to_vec(), 300_000)
}

#[tokio::test]
async fn aggregations_and_functions_pick_the_aggregate_as_thanos() {
    let avg = [Count, Sum];
    assert_eq!(hints("max(a)").await, vec![one("a", &[Max])]);
    assert_eq!(hints("min by (x) (a)").await, vec![one("a", &[Min])]);
    assert_eq!(hints("count(a)").await, vec![one("a", &[Count])]);
    // `sum` reads the average (Thanos: "sum falls through, we want the actual samples").
    assert_eq!(hints("sum(a)").await, vec![one("a", &avg)]);
    assert_eq!(hints("count_values(\"v\", a)").await, vec![one("a", &[Count])]);
    assert_eq!(hints("topk(1, a)").await, vec![one("a", &avg)]);
    // Through parentheses and unary minus; the nearest enclosing name wins.
    assert_eq!(hints("max((-a))").await, vec![one("a", &[Max])]);
    assert_eq!(hints("max(abs(a))").await, vec![one("a", &avg)]);
    assert_eq!(hints("max(rate(a[10m]))").await, vec![one("a", &[Counter])]);
    // A binary operator ends the path: its operands have no function.
    assert_eq!(hints("max(a + b)").await, vec![one("a", &avg), one("b", &avg)]);
    assert_eq!(hints("max(a) - min(b)").await, vec![one("a", &[Max]), one("b", &[Min])]);
    assert_eq!(hints("-a").await, vec![one("a", &avg)]);
    // Subqueries pass the function above them to the selectors inside.
    assert_eq!(hints("max_over_time(a[10m:1m])").await, vec![one("a", &[Max])]);
    assert_eq!(hints("min_over_time(max(a)[10m:1m])").await, vec![one("a", &[Max])]);
    // Functions needing two samples read no coarser than half their range (Thanos's
    // maxResolutionFromSelectHints); others, and subqueries (no range in the hints), are not capped.
    assert_eq!(hints("rate(a[8m])").await, vec![("a".to_string(), vec![Counter], 240_000)]);
    assert_eq!(hints("deriv(a[8m])").await, vec![("a".to_string(), avg.to_vec(), 240_000)]);
    assert_eq!(hints("rate(a[20m])").await, vec![one("a", &[Counter])]);
    assert_eq!(hints("max_over_time(a[8m])").await, vec![one("a", &[Max])]);
    assert_eq!(hints("rate(a[8m:1m])").await, vec![one("a", &[Counter])]);
    // resets() reads raw data, also over a subquery.
    assert_eq!(hints("resets(a[10m:1m])").await, vec![("a".to_string(), vec![], 0)]);
}
