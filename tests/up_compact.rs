//! `strata up` compacts its own bucket in the background: five old 2h blocks put into
//! `<data>/bucket` become an 8h block (plus the newest 2h one) while `up` runs, every sample kept;
//! with `--compact.disable` nothing changes.
#![allow(clippy::unwrap_used, clippy::expect_used)]

mod common;

use std::time::{Duration, Instant};

use common::*;
use engine::{BlockWriter, BlockWriterOptions, Bucket, Labels};

const H: i64 = 3_600_000;
/// A multiple of 8h.
const T0: i64 = 1_700_006_400_000;

/// Five 2h blocks of 10 series, a sample a minute; returns the number of samples.
async fn write_blocks(b: &Bucket) -> u64 {
    let mut n = 0;
    for k in 0..5i64 {
        let (min, max) = (T0 + k * 2 * H, T0 + (k + 1) * 2 * H);
        let o = BlockWriterOptions::new(ulid::Ulid::from_parts(min as u64, k as u128 + 1), min, max);
        let mut w = BlockWriter::new(b.clone(), o).unwrap();
        for i in 0..10 {
            let l = Labels::from_pairs([("__name__", "m"), ("i", &*format!("{i:02}"))]);
            let ts: Vec<i64> = (min..max).step_by(60_000).map(|t| t + 7_000).collect();
            let vs: Vec<f64> = ts.iter().map(|t| (t / 1000 + i) as f64).collect();
            n += ts.len() as u64;
            w.append_series(&l, &ts, &vs).await.unwrap();
        }
        w.finish().await.unwrap();
    }
    n
}

/// (resolution, minTime - T0 in hours, maxTime - T0 in hours, samples) of the visible blocks.
async fn shape(b: &Bucket) -> Vec<(i64, i64, i64, u64)> {
    let mut out = Vec::new();
    for id in b.list_blocks().await.unwrap() {
        if b.read_deletion_mark(&id).await.is_ok() {
            continue;
        }
        let m = b.read_meta(&id).await.unwrap();
        out.push((m.thanos.downsample.resolution, (m.min_time - T0) / H, (m.max_time - T0) / H, m.stats.num_samples));
    }
    out.sort();
    out
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn up_compacts_its_bucket_in_the_background() {
    for disabled in [true, false] {
        let tmp = tempfile::tempdir().unwrap();
        let data = tmp.path().join("data");
        let bucket = Bucket::local(data.join("bucket")).unwrap();
        let total = write_blocks(&bucket).await;
        let grpc = format!("127.0.0.1:{}", free_port());
        let mut args = vec!["up", "--data", data.to_str().unwrap(), "--grpc-address", &grpc];
        args.extend(["--consistency-delay=0s", "--wait-interval=1s", "--sync-block-duration=1s"]);
        if disabled {
            args.push("--compact.disable");
        }
        let up = Strata::start(&args, &tmp.path().join("up.log")).await;
        if disabled {
            tokio::time::sleep(Duration::from_secs(3)).await;
            assert_eq!(shape(&bucket).await.len(), 5, "{}", up.log_text());
        } else {
            let deadline = Instant::now() + Duration::from_secs(60);
            loop {
                let s = shape(&bucket).await;
                if s.iter().any(|b| (b.1, b.2) == (0, 8)) {
                    let per = total / 5;
                    assert_eq!(s, vec![(0, 0, 8, 4 * per), (0, 8, 10, per)], "{}", up.log_text());
                    break;
                }
                assert!(Instant::now() < deadline, "no 8h block: {s:?}\n{}", up.log_text());
                tokio::time::sleep(Duration::from_millis(200)).await;
            }
            assert!(up.log_text().contains("compactor runs in the background"));
        }
        // Queries still answer (every sample of one series at one instant).
        let (st, v) = up.get(&format!("/api/v1/query?query=count(m)&time={}", (T0 + 3 * H) / 1000)).await;
        assert_eq!(st, 200, "{v}");
        assert_eq!(v["data"]["result"][0]["value"][1], "10", "{v}");
        up.stop().await;
    }
}
