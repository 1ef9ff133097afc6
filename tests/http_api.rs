//! End to end: blocks written into a bucket, the real `strata up` / `strata query` binaries on free
//! loopback ports, and real clients (raw HTTP, promtool 2.42, Python prometheus-api-client) checking
//! real values; new blocks picked up without a restart; graceful shutdown on SIGTERM.
#![allow(clippy::unwrap_used, clippy::expect_used)]

mod common;

use std::path::Path;
use std::process::Command;
use std::time::{Duration, Instant};

use common::*;
use engine::Labels;
use engine::bucket::Bucket;
use engine::writer::{BlockWriter, BlockWriterOptions};
use serde_json::{Value, json};

/// Start of the test data (unix seconds).
const T0: i64 = 1_700_000_000;
/// One sample every 15 s for one hour (241 samples), split over two blocks at T0 + 30m.
const STEP_S: i64 = 15;
const SAMPLES: i64 = 241;
const SPLIT_S: i64 = 1800;

/// The value of a series at sample number `i`.
type ValueAt = Box<dyn Fn(i64) -> f64>;

/// The series of the test data: two counters (10/15s and 5/15s), a gauge and a +Inf series.
fn series() -> Vec<(Labels, ValueAt)> {
    let mut v: Vec<(Labels, ValueAt)> = vec![
        (
            Labels::from_pairs([("__name__", "http_requests_total"), ("instance", "a"), ("job", "api")]),
            Box::new(|i| 10.0 * i as f64),
        ),
        (
            Labels::from_pairs([("__name__", "http_requests_total"), ("instance", "b"), ("job", "api")]),
            Box::new(|i| 5.0 * i as f64),
        ),
        (Labels::from_pairs([("__name__", "temperature"), ("room", "lab")]), Box::new(|_| 20.5)),
        (Labels::from_pairs([("__name__", "special"), ("kind", "inf")]), Box::new(|_| f64::INFINITY)),
    ];
    v.sort_by(|a, b| a.0.cmp(&b.0));
    v
}

/// Writes one block holding samples `i` in `range` of every series, plus `extra` series.
async fn write_block(bucket: &Bucket, range: std::ops::Range<i64>, extra: &[(Labels, f64)]) {
    let (min_t, max_t) = ((T0 + range.start * STEP_S) * 1000, (T0 + range.end * STEP_S) * 1000);
    let mut w = BlockWriter::new(bucket.clone(), BlockWriterOptions::new(ulid::Ulid::new(), min_t, max_t)).unwrap();
    let mut all: Vec<(Labels, Vec<i64>, Vec<f64>)> = series()
        .into_iter()
        .map(|(l, f)| {
            let ts = range.clone().map(|i| (T0 + i * STEP_S) * 1000).collect();
            let vs = range.clone().map(&f).collect();
            (l, ts, vs)
        })
        .collect();
    for (l, v) in extra {
        all.push((l.clone(), vec![min_t], vec![*v]));
    }
    all.sort_by(|a, b| a.0.cmp(&b.0));
    for (l, ts, vs) in &all {
        w.append_series(l, ts, vs).await.unwrap();
    }
    w.finish().await.unwrap();
}

fn float(v: &Value) -> f64 {
    parse_go_float(v.as_str().unwrap())
}

/// The instant-query value of a single-sample answer.
fn only_value(v: &Value) -> f64 {
    assert_eq!(v["status"], "success", "{v}");
    let r = v["data"]["result"].as_array().unwrap();
    assert_eq!(r.len(), 1, "{v}");
    float(&r[0]["value"][1])
}

async fn check_raw_http(s: &Strata) {
    // Instant queries, GET and POST.
    let (st, v) =
        s.get(&format!("/api/v1/query?query={}&time={}", urlencode("sum(http_requests_total)"), T0 + 600)).await;
    assert_eq!(st, 200, "{v}");
    assert_eq!(v["data"], json!({"resultType": "vector", "result": [{"metric": {}, "value": [T0 + 600, "600"]}]}));
    let (_, v) = s
        .post(
            "/api/v1/query",
            &format!("query={}&time={}", urlencode(r#"http_requests_total{instance="a"}"#), T0 + 600),
        )
        .await;
    assert_eq!(
        v["data"]["result"],
        json!([{"metric": {"__name__": "http_requests_total", "instance": "a", "job": "api"}, "value": [T0 + 600, "400"]}])
    );
    // rate over a counter growing 10 per 15 s.
    let (_, v) = s
        .get(&format!(
            "/api/v1/query?query={}&time={}",
            urlencode(r#"rate(http_requests_total{instance="a"}[5m])"#),
            T0 + 600
        ))
        .await;
    assert!((only_value(&v) - 2.0 / 3.0).abs() < 1e-12, "{v}");
    // increase across the block boundary at T0 + 30m: 5 per 15 s over 10 minutes = 200.
    let (_, v) = s
        .get(&format!(
            "/api/v1/query?query={}&time={}",
            urlencode(r#"increase(http_requests_total{instance="b"}[10m])"#),
            T0 + 2100
        ))
        .await;
    assert!((only_value(&v) - 200.0).abs() < 1e-9, "{v}");
    // Special values and RFC 3339 times (T0 + 60 s = 2023-11-14T22:14:20Z).
    let (_, v) = s.get("/api/v1/query?query=special&time=2023-11-14T22:14:20Z").await;
    assert_eq!(v["data"]["result"][0]["value"], json!([T0 + 60, "+Inf"]));
    let (_, v) = s.get(&format!("/api/v1/query?query=temperature&time={}.250", T0 + 60)).await;
    assert_eq!(
        v["data"]["result"][0]["value"],
        json!([serde_json::Number::from_f64((T0 + 60) as f64 + 0.25).unwrap(), "20.5"])
    );

    // Range queries, exact points, also across the block boundary.
    let (st, v) = s
        .get(&format!(
            "/api/v1/query_range?query={}&start={T0}&end={}&step=1m",
            urlencode(r#"http_requests_total{instance="b"}"#),
            T0 + 120
        ))
        .await;
    assert_eq!(st, 200, "{v}");
    assert_eq!(
        v["data"],
        json!({"resultType": "matrix", "result": [{
            "metric": {"__name__": "http_requests_total", "instance": "b", "job": "api"},
            "values": [[T0, "0"], [T0 + 60, "20"], [T0 + 120, "40"]]
        }]})
    );
    let (_, v) = s
        .post(
            "/api/v1/query_range",
            &format!(
                "query={}&start={}&end={}&step=60",
                urlencode("sum(http_requests_total)"),
                T0 + SPLIT_S - 60,
                T0 + SPLIT_S + 60
            ),
        )
        .await;
    assert_eq!(
        v["data"]["result"],
        json!([{"metric": {}, "values": [[T0 + SPLIT_S - 60, "1740"], [T0 + SPLIT_S, "1800"], [T0 + SPLIT_S + 60, "1860"]]}])
    );

    // Metadata endpoints.
    let (_, v) = s.get(&format!("/api/v1/series?match[]={}", urlencode("http_requests_total"))).await;
    assert_eq!(
        v["data"],
        json!([
            {"__name__": "http_requests_total", "instance": "a", "job": "api"},
            {"__name__": "http_requests_total", "instance": "b", "job": "api"},
        ])
    );
    let (_, v) = s.get(&format!("/api/v1/series?match[]={}&limit=1", urlencode("http_requests_total"))).await;
    assert_eq!(v["data"].as_array().unwrap().len(), 1);
    assert_eq!(v["warnings"], json!(["results truncated due to limit"]));
    let (_, v) = s.get("/api/v1/labels").await;
    assert_eq!(v["data"], json!(["__name__", "instance", "job", "kind", "room"]));
    let (_, v) = s.get("/api/v1/label/__name__/values").await;
    assert_eq!(v["data"], json!(["http_requests_total", "special", "temperature"]));
    let (_, v) = s.get(&format!("/api/v1/label/instance/values?match[]={}", urlencode(r#"{job="api"}"#))).await;
    assert_eq!(v["data"], json!(["a", "b"]));
    let (_, v) = s.get("/api/v1/metadata").await;
    assert_eq!(v, json!({"status": "success", "data": {}}));
    let (_, v) = s.get("/api/v1/status/buildinfo").await;
    assert!(v["data"]["version"].is_string());
    let (_, v) = s.get("/api/v1/status/flags").await;
    assert_eq!(v["data"]["query.lookback-delta"], "5m");
    assert_eq!(v["data"]["query.max-samples"], "50000000");

    // Errors: status codes and error types.
    let (st, v) = s.get(&format!("/api/v1/query?query={}", urlencode("sum(http_requests_total"))).await;
    assert_eq!((st, v["errorType"].as_str()), (400, Some("bad_data")), "{v}");
    assert!(v["error"].as_str().unwrap().starts_with("invalid parameter \"query\""), "{v}");
    let (st, v) = s.get(&format!("/api/v1/query_range?query=up&start={T0}&end={}&step=1", T0 + 11_001)).await;
    assert_eq!((st, v["errorType"].as_str()), (400, Some("bad_data")), "{v}");
    let (st, v) = s.get(&format!("/api/v1/query_range?query=up&start={T0}&end={}&step=0", T0 + 10)).await;
    assert_eq!(st, 400, "{v}");
    let (st, v) = s.get("/api/v1/series").await;
    assert_eq!(st, 400, "{v}");

    // Explain: the plan rides along in data.explain.
    let (_, v) =
        s.get(&format!("/api/v1/query?query={}&time={}&explain=true", urlencode("sum(temperature)"), T0 + 60)).await;
    assert_eq!(v["data"]["result"][0]["value"][1], "20.5");
    assert!(v["data"]["explain"].as_str().unwrap().contains("physical plan"), "{v}");

    // Health, readiness and the process's own metrics.
    assert_eq!(s.text("/-/healthy").await.0, 200);
    assert_eq!(s.text("/-/ready").await.0, 200);
    let (st, m) = s.text("/metrics").await;
    assert_eq!(st, 200);
    assert!(m.contains(r#"strata_http_requests_total{handler="/api/v1/query",code="200"}"#), "{m}");
    assert!(m.contains(r#"strata_http_requests_total{handler="/api/v1/query",code="400"} 1"#), "{m}");
    assert!(m.contains("strata_bucket_blocks_loaded 2"), "{m}");
    assert!(m.contains(r#"strata_bucket_syncs_total{result="success"}"#), "{m}");
    // The queries above read sample pages through the decoded-page cache.
    let metric = |name: &str| -> f64 {
        let line = m.lines().find(|l| l.starts_with(&format!("{name} "))).unwrap_or_else(|| panic!("{name}: {m}"));
        line[name.len() + 1..].trim().parse().unwrap()
    };
    assert!(metric("strata_page_cache_misses_total") >= 1.0, "{m}");
    assert!(metric("strata_page_cache_hits_total") >= 1.0, "{m}");
    assert!(metric("strata_page_cache_pages") >= 1.0, "{m}");
    assert_eq!(metric("strata_page_cache_capacity_bytes"), (512u64 << 20) as f64, "{m}");
    // The two blocks' label indexes: at least their distinct label values and names.
    assert!(metric("strata_label_index_bytes") > 100.0, "{m}");
}

fn promtool_out(promtool: &Path, args: &[&str]) -> String {
    let out = Command::new(promtool).args(args).output().unwrap();
    assert!(out.status.success(), "promtool {args:?}: {}", String::from_utf8_lossy(&out.stderr));
    String::from_utf8(out.stdout).unwrap()
}

fn check_promtool(s: &Strata, promtool: &Path) {
    let t = (T0 + 600).to_string();
    let out = promtool_out(promtool, &["query", "instant", "--time", &t, &s.base, "sum(http_requests_total)"]);
    assert_eq!(out.trim(), format!("{{}} => 600 @[{}]", T0 + 600));
    let out = promtool_out(promtool, &["query", "instant", "--time", &t, &s.base, "special * -1"]);
    assert_eq!(out.trim(), format!("{{kind=\"inf\"}} => -Inf @[{}]", T0 + 600));
    let (start, end) = (T0.to_string(), (T0 + 120).to_string());
    let out = promtool_out(
        promtool,
        &[
            "query",
            "range",
            "--start",
            &start,
            "--end",
            &end,
            "--step",
            "1m",
            &s.base,
            r#"http_requests_total{instance="a"}"#,
        ],
    );
    let lines: Vec<&str> = out.lines().map(str::trim).collect();
    assert_eq!(
        lines,
        vec![
            r#"http_requests_total{instance="a", job="api"} =>"#.to_string(),
            format!("0 @[{T0}]"),
            format!("40 @[{}]", T0 + 60),
            format!("80 @[{}]", T0 + 120),
        ],
        "{out}"
    );
    let out = promtool_out(
        promtool,
        &["query", "series", "--match", "temperature", "--start", &start, "--end", &end, &s.base],
    );
    assert_eq!(out.trim(), r#"{__name__="temperature", room="lab"}"#);
    let out = promtool_out(promtool, &["query", "labels", "--start", &start, "--end", &end, &s.base, "instance"]);
    assert_eq!(out.split_whitespace().collect::<Vec<_>>(), vec!["a", "b"]);
}

const PY_CLIENT: &str = r#"
import json, sys
from datetime import datetime, timezone
from prometheus_api_client import PrometheusConnect
url, t0 = sys.argv[1], int(sys.argv[2])
p = PrometheusConnect(url=url, disable_ssl=True)
out = {
    "instant": p.custom_query("sum by (job) (http_requests_total)", params={"time": t0 + 600}),
    "range": p.custom_query_range(
        'http_requests_total{instance="b"}',
        start_time=datetime.fromtimestamp(t0, tz=timezone.utc),
        end_time=datetime.fromtimestamp(t0 + 60, tz=timezone.utc),
        step="30",
    ),
    "metrics": p.all_metrics(),
    "rooms": p.get_label_values("room"),
}
print(json.dumps(out))
"#;

fn check_python(s: &Strata, py: &Path) {
    let out = Command::new(py).args(["-c", PY_CLIENT, &s.base, &T0.to_string()]).output().unwrap();
    assert!(out.status.success(), "python client failed: {}", String::from_utf8_lossy(&out.stderr));
    let v: Value = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!(v["instant"], json!([{"metric": {"job": "api"}, "value": [T0 + 600, "600"]}]));
    assert_eq!(v["range"][0]["values"], json!([[T0, "0"], [T0 + 30, "10"], [T0 + 60, "20"]]));
    assert_eq!(v["metrics"], json!(["http_requests_total", "special", "temperature"]));
    assert_eq!(v["rooms"], json!(["lab"]));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn up_serves_the_prometheus_api() {
    let dir = tempfile::tempdir().unwrap();
    let data = dir.path().join("data");
    let bucket = Bucket::local(data.join("bucket")).unwrap();
    write_block(&bucket, 0..SPLIT_S / STEP_S, &[]).await;
    write_block(&bucket, SPLIT_S / STEP_S..SAMPLES, &[]).await;

    let grpc = format!("127.0.0.1:{}", free_port());
    let s = Strata::start(
        &["up", "--data", data.to_str().unwrap(), "--sync-block-duration", "1s", "--grpc-address", &grpc],
        &dir.path().join("up.log"),
    )
    .await;
    check_raw_http(&s).await;
    if let Some(promtool) = peer("promtool") {
        check_promtool(&s, &promtool);
    }
    if let Some(py) = venv_python(&["prometheus_api_client"]) {
        check_python(&s, &py);
    }

    // A block written while the server runs is served after the next sync, without a restart.
    let late = Labels::from_pairs([("__name__", "late_metric"), ("job", "batch")]);
    write_block(&bucket, SAMPLES..SAMPLES + 4, &[(late, 42.0)]).await;
    let query = format!("/api/v1/query?query=late_metric&time={}", T0 + SAMPLES * STEP_S);
    let deadline = Instant::now() + Duration::from_secs(30);
    loop {
        let (_, v) = s.get(&query).await;
        if v["data"]["result"].as_array().is_some_and(|r| !r.is_empty()) {
            assert_eq!(v["data"]["result"][0]["value"][1], "42");
            break;
        }
        assert!(Instant::now() < deadline, "new block not picked up; log:\n{}", s.log_text());
        tokio::time::sleep(Duration::from_millis(200)).await;
    }

    // Graceful shutdown on SIGTERM: exit status 0 and a log line.
    let log = s.log.clone();
    s.stop().await;
    assert!(read_log(&log).contains("SIGTERM received"), "{}", read_log(&log));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn query_serves_a_configured_bucket() {
    let dir = tempfile::tempdir().unwrap();
    let bucket_dir = dir.path().join("bucket");
    let bucket = Bucket::local(&bucket_dir).unwrap();
    write_block(&bucket, 0..SAMPLES, &[]).await;
    let cfg = fs_bucket_config(dir.path(), &bucket_dir);
    let s = Strata::start(
        &["query", "--objstore.config-file", cfg.to_str().unwrap(), "--query.lookback-delta", "1m"],
        &dir.path().join("query.log"),
    )
    .await;
    // The last sample is at T0 + 3600 s: with a 1m lookback (left-open) it is visible until just
    // before T0 + 3660 s and gone from then on ...
    let (_, v) = s.get(&format!("/api/v1/query?query=temperature&time={}.999", T0 + 3659)).await;
    assert_eq!(only_value(&v), 20.5);
    let (_, v) = s.get(&format!("/api/v1/query?query=temperature&time={}", T0 + 3660)).await;
    assert_eq!(v["data"]["result"], json!([]), "{v}");
    // ... unless the request widens the lookback.
    let (_, v) = s.get(&format!("/api/v1/query?query=temperature&time={}&lookback_delta=5m", T0 + 3660)).await;
    assert_eq!(only_value(&v), 20.5);
    let (_, v) = s.get("/api/v1/status/flags").await;
    assert_eq!(v["data"]["query.lookback-delta"], "1m");

    // A bad flag is a usage error naming the flag.
    let out = strata(&["query", "--objstore.config-file", cfg.to_str().unwrap(), "--query.timeout", "soon"]);
    assert!(!out.status.success());
    assert!(
        String::from_utf8_lossy(&out.stderr).contains("--query.timeout"),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn api_is_unavailable_until_the_first_sync() {
    // An S3 bucket on a port nobody listens on: the first sync cannot finish, so the server is
    // healthy but not ready, and the API answers Prometheus's plain 503.
    let dir = tempfile::tempdir().unwrap();
    let cfg = dir.path().join("bucket.yml");
    let dead_port = free_port();
    std::fs::write(
        &cfg,
        format!(
            "type: S3\nconfig:\n  bucket: nowhere\n  endpoint: 127.0.0.1:{dead_port}\n  region: us-east-1\n  access_key: x\n  secret_key: y\n  insecure: true\n"
        ),
    )
    .unwrap();
    let port = free_port();
    let log = dir.path().join("query.log");
    let mut cmd = Command::new(strata_bin());
    cmd.args([
        "query",
        "--objstore.config-file",
        cfg.to_str().unwrap(),
        "--http-address",
        &format!("127.0.0.1:{port}"),
    ]);
    let mut d = Daemon::spawn(&mut cmd, &log).unwrap();
    let base = format!("http://127.0.0.1:{port}");
    d.wait_http_ok(&format!("{base}/-/healthy"), Duration::from_secs(30), &log).await.unwrap();
    let client = reqwest::Client::new();
    let r = client.get(format!("{base}/-/ready")).send().await.unwrap();
    assert_eq!(r.status(), 503);
    let r = client.get(format!("{base}/api/v1/query?query=1")).send().await.unwrap();
    assert_eq!(r.status(), 503);
    assert_eq!(r.headers()["x-prometheus-stopping"], "false");
    assert_eq!(r.text().await.unwrap(), "Service Unavailable");
    let r = client.get(format!("{base}/metrics")).send().await.unwrap();
    assert_eq!(r.status(), 200);
}
