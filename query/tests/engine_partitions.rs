//! A query answers the same, bit for bit and in the same order, whatever the number of
//! partitions its series are dealt out to (`EngineOptions::partitions`).
#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::sync::Arc;

use engine::{Labels, MemSource, SeriesSource};
use query::{Engine, EngineOptions, QueryResult, Value};

type Series = (Labels, Vec<i64>, Vec<f64>);

/// 600 series of 300 points (180k samples: several batches of 65,536 samples, so every
/// partition gets some), with fractional values whose sums depend on the order they are added
/// in, a few gaps and stale markers; in label order.
fn series() -> Vec<Series> {
    let mut out = Vec::new();
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
        out.push((labels, t, v));
    }
    out.sort_by(|a, b| a.0.cmp(&b.0));
    out
}

fn source() -> Arc<MemSource> {
    let src = MemSource::new();
    for (l, t, v) in series() {
        src.add(l, &t, &v);
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
    answers_like_one_partition(source()).await;
}

/// The bucket deals its select out to the partitions itself, by label ranges of every block
/// (`SeriesSource::select_dealt`): two overlapping blocks, the second holding a later copy of
/// part of the first (with other values on the same timestamps, which the first block wins) and
/// samples of its own.
#[tokio::test]
async fn partitions_answer_like_one_over_a_bucket() {
    let dir = tempfile::tempdir().unwrap();
    let bucket = engine::Bucket::local(dir.path()).unwrap();
    let all = series();
    for (k, part) in [&all[..], &all[100..450]].into_iter().enumerate() {
        let o = engine::BlockWriterOptions::new(ulid::Ulid::from_parts(1, k as u128 + 1), 0, 7_200_000);
        let mut w = engine::BlockWriter::new(bucket.clone(), o).unwrap();
        for (l, t, v) in part {
            let (t, v): (Vec<i64>, Vec<f64>) = if k == 0 {
                (t.clone(), v.clone())
            } else {
                t.iter().zip(v).skip(t.len() / 3).map(|(&t, &v)| (t + 7_500 * ((t / 15_000) % 2), -v)).unzip()
            };
            w.append_series(l, &t, &v).await.unwrap();
        }
        w.finish().await.unwrap();
    }
    let src = engine::BucketSource::new(bucket);
    src.sync().await.unwrap();
    let req = engine::SelectRequest { min_t: 0, max_t: i64::MAX, ..Default::default() };
    let dealt = src.select_dealt(&req, 2).await.unwrap().expect("a bucket deals its select");
    let mut batches = 0;
    for s in dealt {
        batches += futures::TryStreamExt::try_collect::<Vec<_>>(s).await.unwrap().len();
    }
    assert!(batches >= 3, "{batches} batches: both partitions should get some");
    answers_like_one_partition(Arc::new(src)).await;
}

async fn answers_like_one_partition(src: Arc<dyn SeriesSource>) {
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
