//! End to end: `strata flight` serves Arrow Flight SQL to real clients that share no code with it
//! (tests/python/flight_clients.py: ADBC DBAPI, pandas, GetObjects, a parameterised query,
//! pyarrow.flight Flight SQL calls, Polars through ADBC, DuckDB and Polars on the bucket files).
//! The data is written here and every expected answer is computed here from that data, never
//! asked from Strata. Also: the read-only rules, `--sql.memory-limit`, `--sql.timeout`, bearer
//! tokens and the refresh when a block appears.

#![allow(clippy::unwrap_used, clippy::expect_used)]

mod common;

use std::collections::BTreeMap;
use std::path::Path;
use std::process::Command;

use common::{Strata, free_port, fs_bucket_config, venv_python};
use engine::{BlockWriter, BlockWriterOptions, Bucket, Labels};

/// One series: labels, timestamps (ms), values.
type Series = (Labels, Vec<i64>, Vec<f64>);

/// Minute-aligned "now" of the data: the last sample is one step before it.
fn data_end() -> i64 {
    let now = chrono::Utc::now().timestamp_millis();
    now - now % 60_000
}

/// `node_load1{instance, job}` and `up{instance, job[, zone]}` for 12 instances, every 15 s over
/// `[start, end)`; values depend on the instance and the time only.
fn fleet(start: i64, end: i64) -> Vec<Series> {
    let mut out = Vec::new();
    for i in 0..12 {
        let inst = format!("host-{i:02}:9100");
        let job = if i % 3 == 0 { "db" } else { "web" };
        let ts: Vec<i64> = (start..end).step_by(15_000).collect();
        let load: Vec<f64> = ts.iter().map(|t| (i as f64) * 0.25 + ((t / 15_000) % 40) as f64 * 0.01).collect();
        out.push((
            Labels::from_pairs([("__name__", "node_load1"), ("instance", inst.as_str()), ("job", job)]),
            ts.clone(),
            load,
        ));
        let mut pairs = vec![("__name__", "up".to_string()), ("instance", inst.clone()), ("job", job.to_string())];
        if i % 4 == 0 {
            pairs.push(("zone", "eu".to_string()));
        }
        let up: Vec<f64> = ts.iter().map(|t| if (t / 15_000 + i) % 97 == 0 { 0.0 } else { 1.0 }).collect();
        out.push((Labels::from_pairs(pairs), ts, up));
    }
    out.sort_by(|a, b| a.0.cmp(&b.0));
    out
}

async fn write_block(bucket: &Bucket, data: &[Series], start: i64, end: i64) {
    let mut w = BlockWriter::new(bucket.clone(), BlockWriterOptions::new(ulid::Ulid::new(), start, end)).unwrap();
    for (l, t, v) in data {
        w.append_series(l, t, v).await.unwrap();
    }
    w.finish().await.unwrap();
}

/// The answers the Python clients must get, computed from `data`.
fn expectations(data: &[Series], cut: i64) -> serde_json::Value {
    let total: usize = data.iter().map(|s| s.1.len()).sum();
    // avg(value), count per instance of node_load1 after `cut` (exclusive).
    let mut avg: BTreeMap<String, (f64, u64)> = BTreeMap::new();
    let mut up_zero = 0u64;
    for (l, t, v) in data {
        if l.metric_name() == Some("node_load1") {
            let e = avg.entry(l.get("instance").unwrap().to_string()).or_default();
            for (t, v) in t.iter().zip(v) {
                if *t > cut {
                    e.0 += v;
                    e.1 += 1;
                }
            }
        }
        if l.metric_name() == Some("up") && l.get("job") == Some("db") {
            up_zero += v.iter().filter(|v| **v == 0.0).count() as u64;
        }
    }
    let avg: BTreeMap<String, serde_json::Value> =
        avg.into_iter().map(|(k, (s, n))| (k, serde_json::json!({"avg": s / n as f64, "count": n}))).collect();
    let one = data
        .iter()
        .find(|s| s.0.get("instance") == Some("host-05:9100") && s.0.metric_name() == Some("node_load1"))
        .unwrap();
    let zone_series = data.iter().filter(|s| s.0.get("zone").is_some()).count();
    serde_json::json!({
        "total_samples": total,
        "series": data.len() / 2 * 2,
        "cut_ms": cut,
        "node_load1_after_cut": avg,
        "up_zero_db": up_zero,
        "host05": {"count": one.1.len(), "sum": one.2.iter().sum::<f64>(), "first_ms": one.1[0], "last_ms": *one.1.last().unwrap()},
        "zone_series": zone_series,
    })
}

fn run_python(py: &Path, script: &str, args: &[&str]) -> String {
    let path = Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/python").join(script);
    let out = Command::new(py).arg(&path).args(args).env("MPLBACKEND", "Agg").output().unwrap();
    let stdout = String::from_utf8_lossy(&out.stdout).to_string();
    assert!(out.status.success(), "{script} failed:\n{stdout}\n{}", String::from_utf8_lossy(&out.stderr));
    stdout
}

fn run_example(py: &Path, script: &str, args: &[&str]) -> String {
    let path = Path::new(env!("CARGO_MANIFEST_DIR")).join("examples").join(script);
    let out = Command::new(py).arg(&path).args(args).env("MPLBACKEND", "Agg").output().unwrap();
    let stdout = String::from_utf8_lossy(&out.stdout).to_string();
    assert!(out.status.success(), "{script} failed:\n{stdout}\n{}", String::from_utf8_lossy(&out.stderr));
    stdout
}

#[tokio::test]
async fn flight_sql_clients_read_the_bucket() {
    let Some(py) = venv_python(&[
        "adbc_driver_flightsql",
        "adbc_driver_manager",
        "pandas",
        "polars",
        "duckdb",
        "pyarrow",
        "matplotlib",
    ]) else {
        return;
    };
    let dir = tempfile::tempdir().unwrap();
    let bucket_dir = dir.path().join("bucket");
    let bucket = Bucket::local(&bucket_dir).unwrap();
    let end = data_end();
    let (start, mid) = (end - 3 * 3_600_000, end - 90 * 60_000);
    let (a, b) = (fleet(start, mid), fleet(mid, end));
    write_block(&bucket, &a, start, mid).await;
    write_block(&bucket, &b, mid, end).await;
    let mut all = a.clone();
    for (i, s) in b.iter().enumerate() {
        assert_eq!(all[i].0, s.0);
        all[i].1.extend(&s.1);
        all[i].2.extend(&s.2);
    }
    let cut = end - 3_600_000;
    let expected = dir.path().join("expected.json");
    std::fs::write(&expected, expectations(&all, cut).to_string()).unwrap();
    let token = dir.path().join("token");
    std::fs::write(&token, "s3cret-token\n").unwrap();

    let cfg = fs_bucket_config(dir.path(), &bucket_dir);
    let grpc = format!("127.0.0.1:{}", free_port());
    let cfg_s = cfg.to_str().unwrap();
    let token_s = token.to_str().unwrap();
    let args = [
        "flight",
        "--objstore.config-file",
        cfg_s,
        "--grpc-address",
        &grpc,
        "--flight.auth-token-file",
        token_s,
        "--sync-block-duration",
        "1s",
    ];
    let server = Strata::start(&args, &dir.path().join("flight.log")).await;

    let out = run_python(
        &py,
        "flight_clients.py",
        &[&format!("grpc://{grpc}"), "s3cret-token", expected.to_str().unwrap(), bucket_dir.to_str().unwrap()],
    );
    assert!(out.contains("flight_clients: all checks passed"), "{out}");

    // examples/: the notebook (ADBC -> pandas -> PNG) and DuckDB on the bucket, over the last hour
    // of data (after the newest sample minus 1 h).
    let last = all.iter().filter_map(|s| s.1.last()).max().copied().unwrap();
    let mut hour: BTreeMap<String, (f64, u64)> = BTreeMap::new();
    for (l, t, v) in all.iter().filter(|s| s.0.metric_name() == Some("node_load1")) {
        let e = hour.entry(l.get("instance").unwrap().to_string()).or_default();
        for (_, v) in t.iter().zip(v).filter(|(t, _)| **t > last - 3_600_000) {
            e.0 += v;
            e.1 += 1;
        }
    }
    let points: u64 = hour.values().map(|e| e.1).sum();
    let png = dir.path().join("load.png");
    let out = run_example(
        &py,
        "notebook_adbc.py",
        &[
            "--uri",
            &format!("grpc://{grpc}"),
            "--token",
            "s3cret-token",
            "--metric",
            "node_load1",
            "--out",
            png.to_str().unwrap(),
        ],
    );
    assert_eq!(out.trim(), format!("wrote {}: {points} points, {} series", png.display(), hour.len()));
    assert!(std::fs::read(&png).unwrap().starts_with(b"\x89PNG\r\n\x1a\n"));
    let out =
        run_example(&py, "duckdb_bucket.py", &["--bucket", bucket_dir.to_str().unwrap(), "--metric", "node_load1"]);
    let lines: Vec<&str> = out.lines().collect();
    assert_eq!(lines.len(), hour.len(), "{out}");
    for (line, (inst, (sum, n))) in lines.iter().zip(&hour) {
        let f: Vec<&str> = line.split(',').collect();
        assert_eq!((f[0], f[2]), (inst.as_str(), n.to_string().as_str()), "{out}");
        let avg: f64 = f[1].parse().unwrap();
        assert!((avg - sum / *n as f64).abs() < 1e-12, "{inst}: {avg} vs {}", sum / *n as f64);
    }

    // A new block shows up after the next sync (1 s): count grows by its samples.
    let newer = fleet(end, end + 600_000);
    write_block(&bucket, &newer, end, end + 600_000).await;
    let added: usize = newer.iter().map(|s| s.1.len()).sum();
    let total: usize = all.iter().map(|s| s.1.len()).sum();
    let want = (total + added).to_string();
    let mut seen = String::new();
    for _ in 0..40 {
        seen = run_python(
            &py,
            "flight_query.py",
            &[&format!("grpc://{grpc}"), "s3cret-token", "SELECT count(*) FROM samples"],
        );
        if seen.trim() == want {
            break;
        }
        tokio::time::sleep(std::time::Duration::from_millis(250)).await;
    }
    assert_eq!(seen.trim(), want);

    let (_, metrics) = server.text("/metrics").await;
    assert!(metrics.contains("strata_flight_sql_statements_total{result=\"forbidden\"}"), "{metrics}");
    assert!(metrics.contains("strata_flight_sql_rows_streamed_total"), "{metrics}");
    server.stop().await;
}

/// `--sql.memory-limit` and `--sql.timeout` end a statement with a clear Flight error; the server
/// keeps serving. One server per limit: under a 4 MiB pool a long scan may also run out of memory
/// (a repartition's buffer grows while one of its consumers waits for a core), so the timeout
/// check runs without a memory limit.
#[tokio::test]
async fn flight_sql_limits_end_statements_not_the_server() {
    let Some(py) = venv_python(&["adbc_driver_flightsql", "adbc_driver_manager", "pyarrow"]) else { return };
    let dir = tempfile::tempdir().unwrap();
    let bucket_dir = dir.path().join("bucket");
    let bucket = Bucket::local(&bucket_dir).unwrap();
    let end = data_end();
    let data = fleet(end - 3_600_000, end);
    write_block(&bucket, &data, end - 3_600_000, end).await;
    let cfg = fs_bucket_config(dir.path(), &bucket_dir);
    for (flag, value, check) in [("--sql.memory-limit", "4MiB", "memory"), ("--sql.timeout", "2s", "timeout")] {
        let grpc = format!("127.0.0.1:{}", free_port());
        let args = ["flight", "--objstore.config-file", cfg.to_str().unwrap(), "--grpc-address", &grpc, flag, value];
        let server = Strata::start(&args, &dir.path().join(format!("flight-{check}.log"))).await;
        let out = run_python(&py, "flight_limits.py", &[&format!("grpc://{grpc}"), check]);
        assert!(out.contains("flight_limits: all checks passed"), "{out}");
        let (_, metrics) = server.text("/metrics").await;
        let counted = format!("strata_flight_sql_statements_total{{result=\"{check}\"}} 1");
        assert!(metrics.contains(&counted), "{metrics}");
        server.stop().await;
    }
}

/// `strata up --flight.grpc-address` serves Flight SQL over its bucket's blocks.
#[tokio::test]
async fn up_serves_flight_sql() {
    let Some(py) = venv_python(&["adbc_driver_flightsql", "adbc_driver_manager", "pyarrow"]) else { return };
    let dir = tempfile::tempdir().unwrap();
    let data = dir.path().join("data");
    let bucket = Bucket::local(data.join("bucket")).unwrap();
    let end = data_end();
    let series = fleet(end - 3_600_000, end);
    write_block(&bucket, &series, end - 3_600_000, end).await;
    let want: usize = series.iter().filter(|s| s.0.get("zone").is_some()).map(|s| s.1.len()).sum();
    let (grpc, flight) = (format!("127.0.0.1:{}", free_port()), format!("127.0.0.1:{}", free_port()));
    let args = ["up", "--data", data.to_str().unwrap(), "--grpc-address", &grpc, "--flight.grpc-address", &flight];
    let server = Strata::start(&args, &dir.path().join("up.log")).await;
    let q = "SELECT count(*) FROM up WHERE zone = 'eu'";
    let mut got = String::new();
    for _ in 0..40 {
        got = run_python(&py, "flight_query.py", &[&format!("grpc://{flight}"), "", q]);
        if got.trim() == want.to_string() {
            break;
        }
        tokio::time::sleep(std::time::Duration::from_millis(250)).await;
    }
    assert_eq!(got.trim(), want.to_string());
    server.stop().await;
}
