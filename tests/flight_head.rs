//! End to end: Flight SQL in `strata up` and `strata receive` includes the samples received by
//! remote write at once (from the heads), and gives the same answer, without duplicate rows, once
//! the heads cut them into blocks. Clients: ADBC (tests/python/flight_queries.py); expected values
//! are computed here from what the test wrote.

#![allow(clippy::unwrap_used, clippy::expect_used)]

mod common;

use std::path::Path;
use std::process::Command;

use common::{Receiver, Strata, free_port, fs_bucket_config, post_remote_write, venv_python};
use engine::Labels;

type Written = Vec<(Labels, Vec<(i64, f64)>)>;

fn now_ms() -> i64 {
    chrono::Utc::now().timestamp_millis()
}

/// `sqlhead_a{job}` (3 series) every 15 s over the last 10 minutes.
fn recent(now: i64) -> Written {
    (0..3)
        .map(|j| {
            let l = Labels::from_pairs([("__name__", "sqlhead_a"), ("job", format!("j{j}").as_str())]);
            let s = (0..40).map(|k| (now - 600_000 + k * 15_000, (j * 100 + k) as f64 * 0.5)).collect();
            (l, s)
        })
        .collect()
}

/// `sqlhead_b{job, zone}` (2 series) every 15 s over [now - 5 h, now - 4 h 50 m): old enough that
/// the head cuts a block of it within a second of `--receive.cut-interval 1s` once it holds
/// [`recent`] samples too.
fn old(now: i64) -> Written {
    (0..2)
        .map(|j| {
            let l = Labels::from_pairs([("__name__", "sqlhead_b"), ("job", format!("j{j}").as_str()), ("zone", "eu")]);
            let start = now - 5 * 3_600_000;
            let s = (0..40).map(|k| (start + k * 15_000, (j + 1) as f64 * (k % 7) as f64)).collect();
            (l, s)
        })
        .collect()
}

const QUERIES: [&str; 5] = [
    "SELECT count(*) FROM samples WHERE metric LIKE 'sqlhead_%'",
    "SELECT count(*) FROM (SELECT DISTINCT metric, labels['job'], timestamp FROM samples WHERE metric LIKE 'sqlhead_%')",
    "SELECT sum(num_samples) FROM series WHERE metric LIKE 'sqlhead_%'",
    "SELECT sum(value) FROM sqlhead_b WHERE job <> 'j1'",
    "SELECT count(*) FROM series WHERE metric LIKE 'sqlhead_%'",
];

/// What [`QUERIES`] must answer over `data`.
fn expected(data: &Written) -> Vec<f64> {
    let n: usize = data.iter().map(|s| s.1.len()).sum();
    let sum_a: f64 = data
        .iter()
        .filter(|(l, _)| l.metric_name() == Some("sqlhead_b") && l.get("job") != Some("j1"))
        .flat_map(|(_, s)| s.iter().map(|p| p.1))
        .sum();
    vec![n as f64, n as f64, n as f64, sum_a, data.len() as f64]
}

fn ask(py: &Path, flight: &str) -> Vec<f64> {
    ask_these(py, flight, &QUERIES)
}

fn ask_these(py: &Path, flight: &str, queries: &[&str]) -> Vec<f64> {
    let path = Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/python/flight_queries.py");
    let out = Command::new(py).arg(&path).arg(format!("grpc://{flight}")).args(queries).output().unwrap();
    let stdout = String::from_utf8_lossy(&out.stdout).to_string();
    assert!(out.status.success(), "flight_queries.py failed:\n{stdout}\n{}", String::from_utf8_lossy(&out.stderr));
    let v: Vec<serde_json::Value> = serde_json::from_str(stdout.trim()).unwrap();
    v.iter().map(|x| x.as_f64().unwrap_or(f64::NAN)).collect()
}

fn same(got: &[f64], want: &[f64]) -> bool {
    got.len() == want.len() && got.iter().zip(want).all(|(g, w)| (g - w).abs() <= 1e-9 * w.abs().max(1.0))
}

/// Asks until the answer is `want` (a few seconds at most: the server may still be starting).
async fn eventually(py: &Path, flight: &str, want: &[f64], what: &str) {
    let mut got = Vec::new();
    for _ in 0..40 {
        got = ask(py, flight);
        if same(&got, want) {
            return;
        }
        tokio::time::sleep(std::time::Duration::from_millis(250)).await;
    }
    panic!("{what}: got {got:?}, want {want:?}");
}

/// `promql('sqlhead_b', ...)` over the 40 steps of [`old`]'s samples: count and sum of the
/// points, and what they must be (each step falls on a sample of each of the 2 series).
fn promql_check(now: i64) -> ([String; 2], Vec<f64>) {
    let start = now - 5 * 3_600_000;
    let end = start + 39 * 15_000;
    let from = format!("promql('sqlhead_b', to_timestamp_millis({start}), to_timestamp_millis({end}), '15s')");
    let points: Vec<f64> = old(now).iter().flat_map(|(_, s)| s.iter().map(|p| p.1)).collect();
    (
        [format!("SELECT count(*) FROM {from}"), format!("SELECT sum(value) FROM {from}")],
        vec![points.len() as f64, points.iter().sum()],
    )
}

fn blocks_in(dir: &Path) -> usize {
    std::fs::read_dir(dir)
        .map(|d| d.filter_map(|e| e.ok()).filter(|e| e.path().join("meta.json").exists()).count())
        .unwrap_or(0)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn up_flight_sql_sees_the_head_then_the_blocks_once() {
    let Some(py) = venv_python(&["adbc_driver_flightsql", "adbc_driver_manager", "pyarrow"]) else { return };
    let tmp = tempfile::tempdir().unwrap();
    let data = tmp.path().join("data");
    let (grpc, flight) = (format!("127.0.0.1:{}", free_port()), format!("127.0.0.1:{}", free_port()));
    let args = [
        "up",
        "--data",
        data.to_str().unwrap(),
        "--grpc-address",
        &grpc,
        "--flight.grpc-address",
        &flight,
        "--receive.cut-interval",
        "1s",
        "--compact.disable",
    ];
    let up = Strata::start(&args, &tmp.path().join("up.log")).await;
    let now = now_ms();

    // Old samples first: they span 10 minutes, no block can be cut; SQL sees them at once.
    let mut written = old(now);
    let (code, body) =
        post_remote_write(&up.url("/api/v1/write"), ingest::remote_write::encode(&written).unwrap()).await;
    assert!((200..300).contains(&code), "{code} {body}");
    let got = ask(&py, &flight);
    assert_eq!(blocks_in(&data.join("bucket")), 0);
    assert!(same(&got, &expected(&written)), "before any cut: got {got:?}, want {:?}", expected(&written));
    // promql() inside SQL sees the head too (merged with the bucket as the PromQL API does).
    let (promql, promql_want) = promql_check(now);
    let promql: Vec<&str> = promql.iter().map(String::as_str).collect();
    let got = ask_these(&py, &flight, &promql);
    assert_eq!(blocks_in(&data.join("bucket")), 0);
    assert!(same(&got, &promql_want), "promql() before any cut: got {got:?}, want {promql_want:?}");

    // Recent samples of another metric: the head now spans hours and cuts the old ones into a
    // block within a second; the answers stay the same, at once and after the cut.
    let more = recent(now);
    let (code, body) = post_remote_write(&up.url("/api/v1/write"), ingest::remote_write::encode(&more).unwrap()).await;
    assert!((200..300).contains(&code), "{code} {body}");
    written.extend(more);
    let want = expected(&written);
    let got = ask(&py, &flight);
    assert!(same(&got, &want), "at once: got {got:?}, want {want:?}");
    for _ in 0..100 {
        if blocks_in(&data.join("bucket")) > 0 {
            break;
        }
        tokio::time::sleep(std::time::Duration::from_millis(100)).await;
    }
    assert!(blocks_in(&data.join("bucket")) > 0, "no block was cut:\n{}", up.log_text());
    // A cut is followed by a refresh; ask a few times across it: never a duplicate or a gap.
    for _ in 0..5 {
        let got = ask(&py, &flight);
        assert!(same(&got, &want), "after the cut: got {got:?}, want {want:?}\n{}", up.log_text());
        let got = ask_these(&py, &flight, &promql);
        assert!(same(&got, &promql_want), "promql() after the cut: got {got:?}, want {promql_want:?}");
    }
    up.stop().await;

    // After a restart everything left was cut on shutdown: the same answers from the blocks.
    let up = Strata::start(&args, &tmp.path().join("up2.log")).await;
    eventually(&py, &flight, &want, "after the restart").await;
    up.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn receive_serves_flight_sql_over_its_head_and_blocks() {
    let Some(py) = venv_python(&["adbc_driver_flightsql", "adbc_driver_manager", "pyarrow"]) else { return };
    let tmp = tempfile::tempdir().unwrap();
    let bucket_dir = tmp.path().join("bucket");
    let cfg = fs_bucket_config(tmp.path(), &bucket_dir);
    let flight = format!("127.0.0.1:{}", free_port());
    let mut r = Receiver::new(tmp.path(), "a", &cfg, &["--flight.grpc-address", &flight]);
    r.start().await;
    let now = now_ms();
    let mut written = recent(now);
    written.extend(old(now));
    let url = format!("http://{}/api/v1/receive", r.rw);
    let (code, body) = post_remote_write(&url, ingest::remote_write::encode(&written).unwrap()).await;
    assert!((200..300).contains(&code), "{code} {body}");
    let want = expected(&written);
    let got = ask(&py, &flight);
    assert!(same(&got, &want), "at once: got {got:?}, want {want:?}\n{}", r.log_text());
    for _ in 0..100 {
        if blocks_in(&bucket_dir) > 0 {
            break;
        }
        tokio::time::sleep(std::time::Duration::from_millis(100)).await;
    }
    assert!(blocks_in(&bucket_dir) > 0, "no block was cut:\n{}", r.log_text());
    let got = ask(&py, &flight);
    assert!(same(&got, &want), "after the cut: got {got:?}, want {want:?}\n{}", r.log_text());
    r.stop().await;
}
