//! A query answers the same, bit for bit and in the same order, whatever the number of
//! partitions its series are dealt out to (`EngineOptions::partitions`).
#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::sync::Arc;

use engine::{Labels, MemSource};
use query::{Engine, EngineOptions, QueryResult, Value};

/// 600 series of 300 points (180k samples: several batches of 65,536 samples, so every
/// partition gets some), with fractional values whose sums depend on the order they are added
/// in, a few gaps and stale markers.
fn source() -> Arc<MemSource> {
    let src = MemSource::new();
    let ts: Vec<i64> = (0..300).map(|i| i * 15_000).collect();
    for s in 0..600u64 {
        let labels = Labels::from_pairs([
            ("__name__", if s % 3 == 0 { "b".to_string() } else { "a".to_string() }),
            ("job", format!("job-{}", s % 7)),
            ("instance", format!("i-{:04}", s / 3)),
            ("zone", format!("z{}", s % 2)),
        ]);
        let mut x = s.wrapping_mul(0x9e37_79b9_7f4a_7c15) | 1;
        let (mut t, mut v) = (Vec::new(), Vec::new());
        let mut counter = 0.0;
        for &tt in &ts {
            x ^= x << 13;
            x ^= x >> 7;
            x ^= x << 17;
            if x % 23 == 0 {
                continue;
            }
            counter += (x % 1000) as f64 / 7.0 + 1e-3 * (s as f64);
            t.push(tt);
            v.push(if x % 97 == 0 {
                f64::from_bits(0x7ff0_0000_0000_0002)
            } else {
                counter * 1e10_f64.powi((s % 3) as i32)
            });
        }
        src.add(labels, &t, &v);
    }
    Arc::new(src)
}

fn bits(r: &QueryResult) -> Vec<(String, Vec<(i64, u64)>)> {
    match &r.value {
        Value::Matrix(m) => {
            m.iter().map(|s| (s.labels.to_string(), s.points.iter().map(|p| (p.0, p.1.to_bits())).collect())).collect()
        }
        Value::Vector(v) => v.iter().map(|s| (s.labels.to_string(), vec![(s.t, s.v.to_bits())])).collect(),
        Value::Scalar { t, v } => vec![(String::new(), vec![(*t, v.to_bits())])],
        Value::String { .. } => vec![],
    }
}

#[tokio::test]
async fn partitions_answer_like_one() {
    let src = source();
    let opts = |p| EngineOptions { partitions: p, enable_experimental_functions: true, ..Default::default() };
    let one = Engine::new(src.clone(), opts(1));
    let many = [Engine::new(src.clone(), opts(2)), Engine::new(src, opts(3))];
    let queries = [
        "a",
        "rate(a[1m])",
        "sum by (job) (rate(a[2m]))",
        "avg without (instance) (a)",
        "stddev by (zone) (a)",
        "quantile by (job) (0.3, a)",
        "topk(5, rate(a[2m]))",
        "bottomk by (job) (2, a)",
        "limitk(3, a)",
        "count_values by (zone) (\"v\", floor(a / 1e25))",
        "sort_desc(a)",
        "a / on(instance) group_left(zone) b",
        "a * on(instance, zone) b",
        "a > 1e12 and on(job) b",
        "a unless b or b",
        "rate(a[1m]) * 60 + 1",
        "clamp_max(a, 1e12)",
        "label_replace(a, \"x\", \"$1\", \"instance\", \"i-(.*)\")",
        "max_over_time(rate(a[1m])[5m:30s])",
        "{__name__=\"a\", zone=\"z0\" or __name__=\"b\", job=\"job-1\"}",
        "absent(nonexistent)",
        "scalar(sum(a)) * b",
    ];
    let mut answered = 0;
    for q in queries {
        let want_range = one.range_query(q, 600_000, 4_400_000, 30_000).await.unwrap();
        let want_instant = one.instant_query(q, 4_000_000).await.unwrap();
        answered += usize::from(!bits(&want_range).is_empty());
        for e in &many {
            let got = e.range_query(q, 600_000, 4_400_000, 30_000).await.unwrap();
            assert_eq!(bits(&got), bits(&want_range), "range {q}");
            let got = e.instant_query(q, 4_000_000).await.unwrap();
            assert_eq!(bits(&got), bits(&want_instant), "instant {q}");
        }
    }
    assert_eq!(answered, queries.len());
    // Errors are the same too.
    let q = "a + on(job) b";
    let want = one.range_query(q, 600_000, 4_400_000, 30_000).await.unwrap_err().to_string();
    for e in &many {
        assert_eq!(e.range_query(q, 600_000, 4_400_000, 30_000).await.unwrap_err().to_string(), want);
    }
}
