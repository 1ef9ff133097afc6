//! Wire compatibility of Strata's StoreAPI client: `strata query --endpoint` against a StoreAPI
//! server sharing no code with Strata (Python grpcio, stubs generated at test time from the
//! project's .proto files, XOR chunks from a Python encoder written from the spec's bit layout:
//! tests/python/storeapi_server.py). The series it serves (one split over two frames, a warning
//! frame, a batch frame, external labels) are computed again here, and the PromQL, series, labels
//! and stores answers compared with them. Needs the venv's grpcio + grpcio-tools (FAILS without them
//! under CI=true).
#![allow(clippy::unwrap_used, clippy::expect_used)]

mod common;

use std::collections::BTreeMap;
use std::io::{BufRead, BufReader};
use std::path::Path;
use std::process::{Command, Stdio};

use common::*;
use serde_json::{Value, json};

/// Data of the Python server, recomputed: see `SERIES` in storeapi_server.py.
const T0: i64 = 1_700_000_000_000;

fn timestamps() -> Vec<i64> {
    (0..240i64).filter(|i| !(100..140).contains(i)).map(|i| T0 + i * 15_000 + (i * 7919) % 997).collect()
}

fn counter(i: i64, k: f64) -> f64 {
    i as f64 * 1.5 * k
}

fn gauge(i: i64) -> f64 {
    if i % 17 != 0 { (i as f64 * 0.1 + 1.0 / 3.0) * if i % 2 == 0 { 1.0 } else { -1.0 } } else { 2.5e-7 * i as f64 }
}

/// The served series (labels with the external `cluster="wire"`) and their samples.
fn expected() -> BTreeMap<String, Vec<(i64, f64)>> {
    let pts = |f: &dyn Fn(i64) -> f64| -> Vec<(i64, f64)> {
        timestamps().into_iter().map(|t| (t, f((t - T0) / 15_000))).collect()
    };
    BTreeMap::from([
        (r#"wire_counter{cluster="wire",instance="1",job="a"}"#.to_string(), pts(&|i| counter(i, 1.0))),
        (r#"wire_counter{cluster="wire",instance="2",job="a"}"#.to_string(), pts(&|i| counter(i, 2.0))),
        (r#"wire_gauge{cluster="wire",job="b"}"#.to_string(), pts(&gauge)),
    ])
}

/// `name{a="b",...}` of a JSON metric object.
fn key(metric: &Value) -> String {
    let m = metric.as_object().unwrap();
    let name = m["__name__"].as_str().unwrap_or("");
    let rest: Vec<String> = m.iter().filter(|(k, _)| *k != "__name__").map(|(k, v)| format!("{k}={}", v)).collect();
    format!("{name}{{{}}}", rest.join(","))
}

/// Milliseconds of a JSON timestamp (seconds with up to 3 decimals).
fn ms(v: &Value) -> i64 {
    (v.as_f64().unwrap() * 1000.0).round() as i64
}

/// Starts the Python StoreAPI server on a free port; returns it once it printed READY.
fn start_python_server(py: &Path, work: &Path) -> (Daemon, u16) {
    let port = free_port();
    let root = Path::new(env!("CARGO_MANIFEST_DIR"));
    let mut child = Command::new(py)
        .arg(root.join("tests/python/storeapi_server.py"))
        .arg(root.join("proto/proto"))
        .arg(work.join("stubs"))
        .arg(port.to_string())
        .stdout(Stdio::piped())
        .stderr(Stdio::inherit())
        .spawn()
        .unwrap();
    let out = child.stdout.take().unwrap();
    let d = Daemon(child);
    let mut line = String::new();
    BufReader::new(out).read_line(&mut line).unwrap();
    assert_eq!(line.trim(), "READY", "the Python StoreAPI server did not start");
    (d, port)
}

#[tokio::test]
async fn strata_query_reads_a_python_storeapi_server() {
    let Some(py) = venv_python(&["grpc", "grpc_tools"]) else { return };
    let dir = tempfile::tempdir().unwrap();
    let (_py_server, port) = start_python_server(&py, dir.path());
    let endpoint = format!("127.0.0.1:{port}");
    let s = Strata::start(&["query", "--endpoint", &endpoint], &dir.path().join("query.log")).await;
    let want = expected();
    let last = timestamps().last().copied().unwrap();
    let end_s = (last + 999) / 1000;

    // Raw samples of every series through a range selector: bit-exact values and timestamps, the
    // split series joined, the 10-minute gap kept, the batch frame read.
    let (st, v) =
        s.get(&format!("/api/v1/query?query={}&time={end_s}", urlencode("{__name__=~\"wire_.*\"}[2h]"))).await;
    assert_eq!(st, 200, "{v}");
    let result = v["data"]["result"].as_array().unwrap();
    let mut got = BTreeMap::new();
    for r in result {
        let pts: Vec<(i64, f64)> = r["values"]
            .as_array()
            .unwrap()
            .iter()
            .map(|p| (ms(&p[0]), parse_go_float(p[1].as_str().unwrap())))
            .collect();
        got.insert(key(&r["metric"]), pts);
    }
    assert_eq!(got.keys().collect::<Vec<_>>(), want.keys().collect::<Vec<_>>());
    for (k, pts) in &want {
        let g = &got[k];
        assert_eq!(g.len(), pts.len(), "{k}");
        for (a, b) in g.iter().zip(pts) {
            assert_eq!(a.0, b.0, "{k}");
            assert_eq!(a.1.to_bits(), b.1.to_bits(), "{k} at {}", a.0);
        }
    }
    // The store's warning frame, with the tenant Strata sent (the default one).
    assert_eq!(v["warnings"], json!([format!("{endpoint}: wire-server warning (tenant default-tenant)")]), "{v}");

    // A range query of the gauge: the last sample at or before each step, less than 5 minutes old
    // (none in the gap's middle).
    let (start_s, step_s) = (T0 / 1000, 60);
    let (st, v) = s
        .get(&format!(
            "/api/v1/query_range?query={}&start={start_s}&end={end_s}&step={step_s}",
            urlencode("wire_gauge")
        ))
        .await;
    assert_eq!(st, 200, "{v}");
    let gauge_pts = &want[r#"wire_gauge{cluster="wire",job="b"}"#];
    let mut expect = Vec::new();
    let mut t = start_s * 1000;
    while t <= end_s * 1000 {
        if let Some(p) = gauge_pts.iter().rev().find(|p| p.0 <= t && t - p.0 < 300_000) {
            expect.push((t, p.1));
        }
        t += step_s * 1000;
    }
    let values = v["data"]["result"][0]["values"].as_array().unwrap();
    let got: Vec<(i64, f64)> = values.iter().map(|p| (ms(&p[0]), parse_go_float(p[1].as_str().unwrap()))).collect();
    assert_eq!(got, expect);
    assert!(expect.len() < ((end_s - start_s) / step_s) as usize, "the gap shows");

    // The sum of the counters' increase over the whole hour; no sample is lost at the frame split.
    let (_, v) = s.get(&format!("/api/v1/query?query={}&time={end_s}", urlencode("sum(wire_counter)"))).await;
    let i_last = (last - T0) / 15_000;
    assert_eq!(parse_go_float(v["data"]["result"][0]["value"][1].as_str().unwrap()), counter(i_last, 3.0));

    // The tenant header reaches the store as thanos-tenant.
    let r = reqwest::Client::new()
        .get(format!("{}/api/v1/query?query=wire_gauge&time={end_s}", s.base))
        .header("THANOS-TENANT", "team-a")
        .send()
        .await
        .unwrap();
    let (_, v) = Strata::decode(r).await;
    assert_eq!(v["warnings"], json!([format!("{endpoint}: wire-server warning (tenant team-a)")]), "{v}");

    // Metadata: series (skip_chunks frames), label names and values, with external labels.
    let (_, v) = s.get(&format!("/api/v1/series?match[]={}", urlencode("{job=\"a\"}"))).await;
    assert_eq!(
        v["data"],
        json!([
            {"__name__": "wire_counter", "cluster": "wire", "instance": "1", "job": "a"},
            {"__name__": "wire_counter", "cluster": "wire", "instance": "2", "job": "a"},
        ])
    );
    let (_, v) = s.get("/api/v1/labels").await;
    assert_eq!(v["data"], json!(["__name__", "cluster", "instance", "job"]));
    let (_, v) = s.get(&format!("/api/v1/label/job/values?match[]={}", urlencode("wire_gauge"))).await;
    assert_eq!(v["data"], json!(["b"]));
    let (_, v) = s.get("/api/v1/label/__name__/values").await;
    assert_eq!(v["data"], json!(["wire_counter", "wire_gauge"]));
    // An external-label matcher the endpoint cannot match: pruned, nothing asked, no warning.
    let (_, v) =
        s.get(&format!("/api/v1/query?query={}&time={end_s}", urlencode("wire_gauge{cluster=\"other\"}"))).await;
    assert_eq!(v["data"]["result"], json!([]));
    assert!(v.get("warnings").is_none(), "{v}");

    // /api/v1/stores as Thanos answers it.
    let (_, v) = s.get("/api/v1/stores").await;
    let stores = v["data"]["store"].as_array().unwrap();
    assert_eq!(stores.len(), 1, "{v}");
    assert_eq!(stores[0]["name"], json!(endpoint));
    assert_eq!(stores[0]["lastError"], Value::Null);
    assert_eq!(stores[0]["labelSets"], json!([{"cluster": "wire"}]));
    assert_eq!(stores[0]["minTime"], json!(T0));
    assert_eq!(stores[0]["maxTime"], json!(last));
    assert!(stores[0]["lastCheck"].as_str().unwrap().ends_with('Z'), "{v}");
    let (_, metrics) = s.text("/metrics").await;
    assert!(
        metrics.contains(
            r#"strata_store_nodes_grpc_connections{external_labels="{cluster=\"wire\"}",store_type="store"} 1"#
        ),
        "{metrics}"
    );
}
