//! End to end: `strata sidecar` beside a real Prometheus 2.42 (Debian package) that scrapes itself
//! and a target served by this test, with one-minute blocks (`--storage.tsdb.min-block-duration =
//! max-block-duration = 1m`: Prometheus cuts a block once its head spans 1.5 minutes, so the first
//! block appears about 100 s after start).
//!
//! Checked against independent sources: the blocks in the bucket against the Prometheus's own
//! block metas; `strata query` over the sidecar and a `strata store` on the bucket against the
//! Prometheus's own HTTP API (raw samples of a range spanning uploaded blocks and the head); the
//! StoreAPI through the Python client (tests/python/storeapi_client.py, no shared code); crash and
//! fault behaviour (SIGKILL mid-upload, block deleted mid-upload, Prometheus down and back with new
//! external labels, Prometheus without external labels) against promtool's dump of the blocks.
#![allow(clippy::unwrap_used, clippy::expect_used)]

mod common;

use std::collections::BTreeMap;
use std::io::{Read, Write};
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant};

use common::*;
use ingest::testkit::Daemon;
use serde_json::{Value, json};

/// A scrape target of the test: `gen_counter` grows by 1.5 per scrape, `gen_gauge` moves.
fn start_target() -> u16 {
    let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let port = listener.local_addr().unwrap().port();
    let n = Arc::new(AtomicU64::new(0));
    std::thread::spawn(move || {
        for conn in listener.incoming() {
            let Ok(mut s) = conn else { continue };
            let mut buf = [0u8; 4096];
            let _ = s.read(&mut buf);
            let i = n.fetch_add(1, Ordering::SeqCst) as f64;
            let body = format!(
                "# TYPE gen_counter counter\ngen_counter{{kind=\"a\"}} {}\ngen_counter{{kind=\"b\"}} {}\n\
                 # TYPE gen_gauge gauge\ngen_gauge{{kind=\"a\"}} {}\n",
                i * 1.5,
                i * 0.1,
                (i * 0.37).sin() * 100.0
            );
            let _ = write!(
                s,
                "HTTP/1.1 200 OK\r\nContent-Type: text/plain; version=0.0.4\r\nContent-Length: {}\r\nConnection: close\r\n\r\n{body}",
                body.len()
            );
        }
    });
    port
}

/// A Prometheus 2.42 with one-minute blocks, scraping itself and `target` every second.
struct Prom {
    daemon: Daemon,
    port: u16,
    data: PathBuf,
    log: PathBuf,
}

impl Prom {
    async fn start(bin: &Path, dir: &Path, port: u16, external: &str, target: u16) -> Prom {
        let cfg = dir.join("prometheus.yml");
        let ext = match external {
            "" => String::new(),
            e => format!("  external_labels:\n{e}"),
        };
        std::fs::write(
            &cfg,
            format!(
                "global:\n  scrape_interval: 1s\n{ext}scrape_configs:\n  - job_name: prom\n    static_configs:\n      \
                 - targets: ['127.0.0.1:{port}']\n  - job_name: gen\n    static_configs:\n      - targets: ['127.0.0.1:{target}']\n"
            ),
        )
        .unwrap();
        let data = dir.join("data");
        let log = dir.join(format!("prometheus-{}.log", std::time::SystemTime::now().elapsed().map_or(0, |d| d.as_nanos())));
        let mut cmd = Command::new(bin);
        cmd.arg(format!("--config.file={}", cfg.display()))
            .arg(format!("--storage.tsdb.path={}", data.display()))
            .arg(format!("--web.listen-address=127.0.0.1:{port}"))
            .args(["--storage.tsdb.min-block-duration=1m", "--storage.tsdb.max-block-duration=1m"])
            .arg("--storage.tsdb.retention.time=100y")
            .stdout(Stdio::null());
        let mut daemon = Daemon::spawn(&mut cmd, &log).unwrap();
        daemon.wait_http_ok(&format!("http://127.0.0.1:{port}/-/ready"), Duration::from_secs(60), &log).await.unwrap();
        Prom { daemon, port, data, log }
    }

    fn url(&self) -> String {
        format!("http://127.0.0.1:{}", self.port)
    }

    async fn api(&self, path_and_query: &str) -> Value {
        let r = reqwest::get(format!("{}{path_and_query}", self.url())).await.unwrap();
        serde_json::from_str(&r.text().await.unwrap()).unwrap()
    }
}

/// The metas of the block directories of a TSDB directory, by min time.
fn local_metas(dir: &Path) -> Vec<Value> {
    let mut out: Vec<Value> = std::fs::read_dir(dir)
        .map(|rd| {
            rd.flatten()
                .filter(|e| e.file_name().to_str().is_some_and(|n| n.len() == 26))
                .filter_map(|e| std::fs::read(e.path().join("meta.json")).ok())
                .map(|b| serde_json::from_slice(&b).unwrap())
                .collect()
        })
        .unwrap_or_default();
    out.sort_by_key(|m| m["minTime"].as_i64().unwrap());
    out
}

/// Metas of the complete blocks in a filesystem bucket, by ULID.
fn bucket_metas(bucket: &Path) -> BTreeMap<String, Value> {
    let mut out = BTreeMap::new();
    let Ok(rd) = std::fs::read_dir(bucket) else { return out };
    for e in rd.flatten() {
        if let Ok(b) = std::fs::read(e.path().join("meta.json")) {
            out.insert(e.file_name().to_string_lossy().into_owned(), serde_json::from_slice(&b).unwrap());
        }
    }
    out
}

/// Block directories of a filesystem bucket (complete or not).
fn bucket_dirs(bucket: &Path) -> Vec<String> {
    let Ok(rd) = std::fs::read_dir(bucket) else { return vec![] };
    let mut v: Vec<String> = rd.flatten().map(|e| e.file_name().to_string_lossy().into_owned()).collect();
    v.sort();
    v
}

async fn wait_for(what: &str, within: Duration, mut cond: impl AsyncFnMut() -> bool, logs: &[&Path]) {
    let deadline = Instant::now() + within;
    while !cond().await {
        if Instant::now() > deadline {
            let text: Vec<String> = logs.iter().map(|l| format!("{}:\n{}", l.display(), read_log(l))).collect();
            panic!("timed out waiting for {what}\n{}", text.join("\n"));
        }
        tokio::time::sleep(Duration::from_millis(250)).await;
    }
}

fn read_log(p: &Path) -> String {
    ingest::testkit::read_log(p)
}

/// Starts `strata sidecar` (not waiting for readiness) on free ports: (daemon, http port, grpc).
fn spawn_sidecar(args: &[&str], env: &[(&str, &str)], log: &Path) -> (Daemon, u16, String) {
    let http = free_port();
    let grpc = format!("127.0.0.1:{}", free_port());
    let mut cmd = Command::new(strata_bin());
    cmd.arg("sidecar")
        .args(args)
        .args(["--http-address", &format!("127.0.0.1:{http}"), "--grpc-address", &grpc])
        .args(["--prometheus.get_config_interval=1s", "--log.level=debug"])
        .env("RUST_LOG", "info");
    for (k, v) in env {
        cmd.env(k, v);
    }
    (Daemon::spawn(&mut cmd, log).unwrap(), http, grpc)
}

/// Raw samples (matrix) of an instant query's range selector, labels without `drop`.
fn raw_matrix(v: &Value, drop: &[&str]) -> BTreeMap<String, Vec<(i64, String)>> {
    assert_eq!(v["status"], "success", "{v}");
    let mut out = BTreeMap::new();
    for s in v["data"]["result"].as_array().unwrap() {
        let mut m = s["metric"].as_object().unwrap().clone();
        for d in drop {
            m.remove(*d);
        }
        let pts: Vec<(i64, String)> = s["values"]
            .as_array()
            .unwrap()
            .iter()
            .map(|p| ((p[0].as_f64().unwrap() * 1000.0).round() as i64, p[1].as_str().unwrap().to_string()))
            .collect();
        assert!(out.insert(Value::Object(m).to_string(), pts).is_none(), "series twice in {v}");
    }
    out
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sidecar_ships_blocks_and_serves_the_head_like_prometheus() {
    let Some(prom_bin) = peer("prometheus") else { return };
    let Some(py) = venv_python(&["grpc", "grpc_tools"]) else { return };
    let tmp = tempfile::tempdir().unwrap();
    let target = start_target();
    let prom = Prom::start(&prom_bin, tmp.path(), free_port(), "    cluster: c1\n    prom: p0\n", target).await;
    let bucket_dir = tmp.path().join("bucket");
    let cfg = fs_bucket_config(tmp.path(), &bucket_dir);
    let slog = tmp.path().join("sidecar.log");
    let (mut sidecar, shttp, sgrpc) = spawn_sidecar(
        &["--prometheus.url", &prom.url(), "--tsdb.path", prom.data.to_str().unwrap(), "--objstore.config-file", cfg.to_str().unwrap()],
        &[],
        &slog,
    );
    sidecar.wait_http_ok(&format!("http://127.0.0.1:{shttp}/-/ready"), Duration::from_secs(60), &slog).await.unwrap();

    // The first block Prometheus cuts is uploaded, converted, under the same ULID.
    wait_for(
        "a block in the bucket",
        Duration::from_secs(300),
        async || !bucket_metas(&bucket_dir).is_empty(),
        &[&slog, &prom.log],
    )
    .await;
    let local = local_metas(&prom.data);
    let uploaded = bucket_metas(&bucket_dir);
    let first = &local[0];
    let ulid = first["ulid"].as_str().unwrap();
    let meta = &uploaded[ulid];
    assert_eq!(meta["thanos"]["source"], "sidecar", "{meta}");
    assert_eq!(meta["thanos"]["labels"], json!({"cluster": "c1", "prom": "p0"}));
    assert_eq!((&meta["minTime"], &meta["maxTime"]), (&first["minTime"], &first["maxTime"]));
    assert_eq!(meta["stats"]["numSamples"], first["stats"]["numSamples"]);
    assert_eq!(meta["stats"]["numSeries"], first["stats"]["numSeries"]);
    let state: Value = serde_json::from_slice(&std::fs::read(prom.data.join("thanos.shipper.json")).unwrap()).unwrap();
    assert_eq!(state["version"], 1);
    assert!(state["uploaded"].as_array().unwrap().iter().any(|u| u == ulid), "{state}");
    let (_, metrics) = http_get(shttp, "/metrics");
    assert!(metrics.contains("thanos_shipper_uploads_total "), "{metrics}");
    assert!(metrics.contains("thanos_sidecar_prometheus_up 1"), "{metrics}");

    // A querier over the sidecar and a store gateway on the bucket answers a range spanning the
    // uploaded block and the head exactly as Prometheus does.
    let store_grpc = format!("127.0.0.1:{}", free_port());
    let store = Strata::start(
        &["store", "--objstore.config-file", cfg.to_str().unwrap(), "--grpc-address", &store_grpc],
        &tmp.path().join("store.log"),
    )
    .await;
    let both = Strata::start(&["query", "--endpoint", &sgrpc, "--endpoint", &store_grpc], &tmp.path().join("q.log")).await;
    let store_only = Strata::start(&["query", "--endpoint", &store_grpc], &tmp.path().join("q2.log")).await;
    let block_min = first["minTime"].as_i64().unwrap();
    let block_max = first["maxTime"].as_i64().unwrap();
    let at = chrono::Utc::now().timestamp_millis() / 1000 * 1000 - 3000;
    assert!(at > block_max + 10_000, "the head must hold data after the block");
    let range_s = (at - block_min) / 1000 + 20;
    for sel in ["{job=\"gen\"}", "up", "{__name__=~\"prometheus_tsdb_head_(series|chunks)\"}"] {
        let q = format!("/api/v1/query?query={}&time={}", urlencode(&format!("{sel}[{range_s}s]")), at as f64 / 1000.0);
        let want = raw_matrix(&prom.api(&q).await, &[]);
        assert!(!want.is_empty(), "{sel}: Prometheus has no data");
        let got = raw_matrix(&both.get(&q).await.1, &["cluster", "prom"]);
        assert_eq!(got, want, "{sel}: querier over sidecar + store differs from Prometheus");
        // The store alone holds exactly the block's part.
        let part = raw_matrix(&store_only.get(&q).await.1, &["cluster", "prom"]);
        let want_part: BTreeMap<String, Vec<(i64, String)>> = want
            .iter()
            .map(|(k, v)| (k.clone(), v.iter().filter(|p| p.0 < block_max).cloned().collect::<Vec<_>>()))
            .filter(|(_, v)| !v.is_empty())
            .collect();
        assert_eq!(part, want_part, "{sel}: store gateway differs from Prometheus's block");
    }

    // The StoreAPI on the wire, read by a client sharing no code with Strata.
    let requests = json!([
        {"name": "info", "kind": "info"},
        {"name": "only_external", "kind": "series", "min_time": 0, "max_time": i64::MAX, "matchers": [[0, "cluster", "c1"]]},
        {"name": "other_cluster", "kind": "series", "min_time": 0, "max_time": i64::MAX, "matchers": [[0, "cluster", "c2"]]},
        {"name": "gen", "kind": "series", "min_time": block_min, "max_time": at, "matchers": [[0, "job", "gen"], [2, "__name__", "gen_.*"], [0, "cluster", "c1"]]},
        {"name": "values", "kind": "label_values", "label": "cluster", "start": block_min, "end": at, "matchers": []},
    ]);
    let grpc = sgrpc.clone();
    let res = tokio::task::spawn_blocking(move || python_client(&py, &grpc, &requests)).await.unwrap();
    let res = res.unwrap_or_else(|e| panic!("{e}\nsidecar log:\n{}", read_log(&slog)));
    let info = &res["info"];
    assert_eq!(info["component_type"], "sidecar", "{info}");
    assert_eq!(info["label_sets"], json!([[["cluster", "c1"], ["prom", "p0"]]]), "{info}");
    assert_eq!(info["min_time"].as_i64().unwrap(), block_min, "{info}");
    assert_eq!(info["max_time"].as_i64().unwrap(), i64::MAX, "{info}");
    assert_eq!(res["only_external"]["error"]["code"], "INVALID_ARGUMENT", "{res}");
    assert!(res["only_external"]["error"]["details"].as_str().unwrap().contains("no matchers specified (excluding external labels)"));
    assert_eq!(res["other_cluster"]["series"], json!([]), "{res}");
    let gen_series = res["gen"]["series"].as_array().unwrap();
    assert_eq!(gen_series.len(), 3, "{}", res["gen"]);
    for s in gen_series {
        let l: Vec<&str> = s["labels"].as_array().unwrap().iter().map(|p| p[0].as_str().unwrap()).collect();
        assert_eq!(l, vec!["__name__", "cluster", "instance", "job", "kind", "prom"], "{s}");
    }
    assert_eq!(res["values"]["values"], json!(["c1"]), "{res}");

    store_only.stop().await;
    both.stop().await;
    store.stop().await;
    let st = sidecar.terminate(Duration::from_secs(30)).await.unwrap();
    assert!(st.success(), "sidecar exit {st}:\n{}", read_log(&slog));
    drop(prom);
}

fn urlencode(s: &str) -> String {
    ingest::testkit::urlencode(s)
}
