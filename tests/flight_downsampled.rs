//! End to end: the real `strata compact` downsamples a 2-day raw block to 5m, and a 14-day one to
//! 5m and then 1h; `strata flight` serves them as tables `samples_5m` and `samples_1h` (count,
//! sum, min, max, counter per series and window), read through ADBC
//! (tests/python/flight_queries.py). Every expected value is computed here from the raw samples
//! the test wrote.

#![allow(clippy::unwrap_used, clippy::expect_used)]

mod common;

use std::path::Path;
use std::process::Command;

use common::{
    H, LocalBucket, STEP, Series, Strata, T0, block_hours, compact_now, free_port, venv_python, write_blocks,
};
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
    compact_now(cfg_s);
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
        2.0,
    ];
    check(&py, &grpc, &queries, &want);
    server.stop().await;
}

/// Runs `queries` through ADBC against the Flight SQL server at `grpc`; each answers one number,
/// which must equal its `want` (relative tolerance 1e-9).
fn check(py: &Path, grpc: &str, queries: &[String], want: &[f64]) {
    let path = Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/python/flight_queries.py");
    let out = Command::new(py).arg(&path).arg(format!("grpc://{grpc}")).args(queries).output().unwrap();
    let stdout = String::from_utf8_lossy(&out.stdout).to_string();
    assert!(out.status.success(), "flight_queries.py failed:\n{stdout}\n{}", String::from_utf8_lossy(&out.stderr));
    let got: Vec<serde_json::Value> = serde_json::from_str(stdout.trim()).unwrap();
    assert_eq!(got.len(), want.len(), "{got:?}");
    for ((q, g), w) in queries.iter().zip(&got).zip(want) {
        let g = g.as_f64().unwrap();
        assert!((g - w).abs() <= 1e-9 * w.abs().max(1.0), "{q}: got {g}, want {w}");
    }
}

/// 16 days of `temp{instance="host-<i>"}` (2 instances, a sample a minute) as eight 2d raw
/// blocks; `strata compact` makes a 14d raw block, its 5m block and that 5m block's 1h block
/// (Thanos downsamples 5m blocks of >= 10 days to 1h). `samples_1h` then holds one row per instance and hour of the 14 days, its aggregates
/// those of the raw samples of each hour.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn one_hour_blocks_are_a_sql_table() {
    const D: i64 = 24 * H;
    const R: i64 = H;
    /// A multiple of 14 days (the compactor's 14d windows are aligned to the epoch).
    const W: i64 = 1_700_697_600_000;
    let Some(py) = venv_python(&["adbc_driver_flightsql", "adbc_driver_manager", "pyarrow"]) else { return };
    assert_eq!(W % (14 * D), 0);
    let lb = LocalBucket::new();
    let (tmp, cfg_s, bucket) = (&lb.tmp, lb.cfg_str(), &lb.bucket);
    let data: Vec<Series> = (0..2)
        .map(|i| {
            let ts: Vec<i64> = (0..).map(|k| W + 5_000 + k * 60_000).take_while(|t| *t < W + 16 * D).collect();
            let vs: Vec<f64> = ts.iter().map(|t| (((t - W) / 60_000 * 11 + i * 17) % 97) as f64 / 8.0).collect();
            (Labels::from_pairs([("__name__", "temp"), ("instance", format!("host-{i}").as_str())]), ts, vs)
        })
        .collect();
    write_blocks(bucket, &data, W, (8, 2 * D), 3, &[]).await;
    compact_now(cfg_s);
    let d = |h: i64| h / 24;
    let blocks: Vec<(i64, i64, i64)> =
        block_hours(bucket, W).await.into_iter().map(|(res, from, to)| (res, d(from), d(to))).collect();
    assert_eq!(blocks, vec![(0, 0, 14), (0, 14, 16), (300_000, 0, 14), (300_000, 14, 16), (R, 0, 14)]);

    // Expected from host-1's raw samples of [W, W + 14 d): per 1h window (a sample at t is in the
    // window ending at t - t mod R + R - 1) and over all of them.
    let host1 = &data[1];
    let raw: Vec<(i64, f64)> =
        host1.1.iter().zip(&host1.2).filter(|(t, _)| **t < W + 14 * D).map(|(t, v)| (*t, *v)).collect();
    let window = |t: i64| t - t.rem_euclid(R) + R - 1;
    let (n, sum) = (raw.len() as f64, raw.iter().map(|p| p.1).sum::<f64>());
    let min = raw.iter().map(|p| p.1).fold(f64::INFINITY, f64::min);
    let max = raw.iter().map(|p| p.1).fold(f64::NEG_INFINITY, f64::max);
    let w100 = W + 100 * R + R - 1;
    let in_w100: Vec<f64> = raw.iter().filter(|(t, _)| window(*t) == w100).map(|p| p.1).collect();
    assert_eq!(in_w100.len(), 60);

    let grpc = format!("127.0.0.1:{}", free_port());
    let server = Strata::start(
        &["flight", "--objstore.config-file", cfg_s, "--grpc-address", &grpc],
        &tmp.path().join("flight.log"),
    )
    .await;
    let host1 = "labels['instance'] = 'host-1'";
    let queries = [
        "SELECT count(*) FROM samples_1h".to_string(),
        format!("SELECT count(*) FROM samples_1h WHERE metric = 'temp' AND {host1}"),
        format!("SELECT sum(\"count\") FROM samples_1h WHERE {host1}"),
        format!("SELECT sum(\"sum\") FROM samples_1h WHERE {host1}"),
        format!("SELECT min(\"min\") FROM samples_1h WHERE {host1}"),
        format!("SELECT max(\"max\") FROM samples_1h WHERE {host1}"),
        format!("SELECT \"count\" FROM samples_1h WHERE {host1} AND timestamp = to_timestamp_millis({w100})"),
        format!("SELECT \"sum\" FROM samples_1h WHERE {host1} AND timestamp = to_timestamp_millis({w100})"),
        format!("SELECT \"max\" FROM samples_1h WHERE {host1} AND timestamp = to_timestamp_millis({w100})"),
        format!("SELECT count(*) FROM samples_1h WHERE {host1} AND timestamp < to_timestamp_millis({})", W + 7 * D),
    ];
    let want = [
        2.0 * 14.0 * 24.0,
        14.0 * 24.0,
        n,
        sum,
        min,
        max,
        60.0,
        in_w100.iter().sum::<f64>(),
        in_w100.iter().copied().fold(f64::NEG_INFINITY, f64::max),
        7.0 * 24.0,
    ];
    check(&py, &grpc, &queries, &want);
    server.stop().await;
}
