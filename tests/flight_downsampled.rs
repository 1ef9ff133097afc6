//! End to end: the real `strata compact` downsamples a 2-day raw block to 5m; `strata flight`
//! serves it as table `samples_5m` (count, sum, min, max, counter per series and window), read
//! through ADBC (tests/python/flight_queries.py). Every expected value is computed here from the
//! raw samples the test wrote.

#![allow(clippy::unwrap_used, clippy::expect_used)]

mod common;

use std::path::Path;
use std::process::Command;

use common::{H, LocalBucket, STEP, Series, Strata, T0, block_hours, free_port, strata_ok, venv_python, write_blocks};
use engine::Labels;

const R: i64 = 300_000;

/// `temp{instance="host-<i>"}` for 3 instances every 15 s over [T0, T0 + 50 h).
fn data() -> Vec<Series> {
    (0..3)
        .map(|i| {
            let ts: Vec<i64> = (0..).map(|k| T0 + 5_000 + k * STEP).take_while(|t| *t < T0 + 50 * H).collect();
            let vs: Vec<f64> = ts.iter().map(|t| (((t - T0) / STEP * 7 + i * 13) % 101) as f64 / 4.0).collect();
            (Labels::from_pairs([("__name__", "temp"), ("instance", format!("host-{i}").as_str())]), ts, vs)
        })
        .collect()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn downsampled_blocks_are_sql_tables() {
    let Some(py) = venv_python(&["adbc_driver_flightsql", "adbc_driver_manager", "pyarrow"]) else { return };
    let lb = LocalBucket::new();
    let (tmp, cfg_s, bucket) = (&lb.tmp, lb.cfg_str(), &lb.bucket);
    let data = data();
    // 25 level-1 2h blocks.
    write_blocks(bucket, &data, T0, (25, 2 * H), 1, &[]).await;
    strata_ok(&["compact", "--objstore.config-file", cfg_s, "--consistency-delay=0s", "--delete-delay=0s"]);
    assert_eq!(
        block_hours(bucket, T0).await,
        vec![(0, 0, 48), (0, 48, 50), (300_000, 0, 48)],
        "blocks after compaction"
    );

    // Expected, from the raw samples of the downsampled range [T0, T0 + 48 h): per instance the
    // 5m windows (a sample at t is in the window ending at t - t mod R + R - 1), count, sum, min,
    // max; and the windows ending before `cut`.
    let cut = T0 + 20 * H + 7 * R;
    let host1 = &data[1];
    let raw: Vec<(i64, f64)> =
        host1.1.iter().zip(&host1.2).filter(|(t, _)| **t < T0 + 48 * H).map(|(t, v)| (*t, *v)).collect();
    let mut windows: Vec<i64> = raw.iter().map(|(t, _)| t - t.rem_euclid(R) + R - 1).collect();
    windows.dedup();
    let before_cut = windows.iter().filter(|w| **w < cut).count();
    let (n, sum) = (raw.len(), raw.iter().map(|p| p.1).sum::<f64>());
    let min = raw.iter().map(|p| p.1).fold(f64::INFINITY, f64::min);
    let max = raw.iter().map(|p| p.1).fold(f64::NEG_INFINITY, f64::max);
    let in_window: Vec<f64> =
        raw.iter().filter(|(t, _)| t - t.rem_euclid(R) + R - 1 == windows[10]).map(|p| p.1).collect();
    let all_rows: usize = data.len() * windows.len();

    let grpc = format!("127.0.0.1:{}", free_port());
    let server = Strata::start(
        &["flight", "--objstore.config-file", cfg_s, "--grpc-address", &grpc],
        &tmp.path().join("flight.log"),
    )
    .await;
    let w10 = windows[10];
    let queries = [
        "SELECT count(*) FROM samples_5m".to_string(),
        "SELECT count(*) FROM samples_5m WHERE metric = 'temp' AND labels['instance'] = 'host-1'".into(),
        "SELECT sum(\"count\") FROM samples_5m WHERE labels['instance'] = 'host-1'".into(),
        "SELECT sum(\"sum\") FROM samples_5m WHERE labels['instance'] = 'host-1'".into(),
        "SELECT min(\"min\") FROM samples_5m WHERE labels['instance'] = 'host-1'".into(),
        "SELECT max(\"max\") FROM samples_5m WHERE labels['instance'] = 'host-1'".into(),
        format!(
            "SELECT count(*) FROM samples_5m WHERE labels['instance'] = 'host-1' AND timestamp < to_timestamp_millis({cut})"
        ),
        format!(
            "SELECT \"sum\" / \"count\" FROM samples_5m WHERE labels['instance'] = 'host-1' AND timestamp = to_timestamp_millis({w10})"
        ),
        "SELECT count(*) FROM samples_1h".into(),
        "SELECT count(*) FROM information_schema.tables WHERE table_name IN ('samples_5m', 'samples_1h')".into(),
    ];
    let want = [
        all_rows as f64,
        windows.len() as f64,
        n as f64,
        sum,
        min,
        max,
        before_cut as f64,
        in_window.iter().sum::<f64>() / in_window.len() as f64,
        0.0,
        2.0,
    ];
    let path = Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/python/flight_queries.py");
    let out = Command::new(&py).arg(&path).arg(format!("grpc://{grpc}")).args(&queries).output().unwrap();
    let stdout = String::from_utf8_lossy(&out.stdout).to_string();
    assert!(out.status.success(), "flight_queries.py failed:\n{stdout}\n{}", String::from_utf8_lossy(&out.stderr));
    let got: Vec<serde_json::Value> = serde_json::from_str(stdout.trim()).unwrap();
    for ((q, g), w) in queries.iter().zip(&got).zip(want) {
        let g = g.as_f64().unwrap();
        assert!((g - w).abs() <= 1e-9 * w.abs().max(1.0), "{q}: got {g}, want {w}");
    }
    server.stop().await;
}
