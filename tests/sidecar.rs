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
        let nanos = std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).unwrap().as_nanos();
        let log = dir.join(format!("prometheus-{nanos}.log"));
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
    let mut out = BTreeMap::new();
    for (key, pts) in raw_series(v, drop) {
        assert!(out.insert(key, pts).is_none(), "series twice in {v}");
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
        &[
            "--prometheus.url",
            &prom.url(),
            "--tsdb.path",
            prom.data.to_str().unwrap(),
            "--objstore.config-file",
            cfg.to_str().unwrap(),
        ],
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
    // The state file is written at the end of the sync that uploaded the block.
    let state_file = prom.data.join("thanos.shipper.json");
    let listed = || -> bool {
        let state: Value =
            serde_json::from_slice(&std::fs::read(&state_file).unwrap_or_default()).unwrap_or(Value::Null);
        state["version"] == 1 && state["uploaded"].as_array().is_some_and(|u| u.iter().any(|u| u == ulid))
    };
    wait_for("the block in thanos.shipper.json", Duration::from_secs(30), async || listed(), &[&slog]).await;
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
    let both =
        Strata::start(&["query", "--endpoint", &sgrpc, "--endpoint", &store_grpc], &tmp.path().join("q.log")).await;
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
        {"name": "gen_reencoded", "kind": "series", "min_time": block_min, "max_time": at, "matchers": [[0, "job", "gen"], [2, "__name__", "gen_.*"]], "shard_info": {"shard_index": 0, "total_shards": 1, "by": false, "labels": []}, "response_batch_size": 2},
        {"name": "values", "kind": "label_values", "label": "cluster", "start": block_min, "end": at, "matchers": []},
    ]);
    let grpc = sgrpc.clone();
    let sent_before = metric(shttp, "strata_storeapi_samples_sent_total");
    let res = tokio::task::spawn_blocking(move || python_client(&py, &grpc, &requests)).await.unwrap();
    let res = res.unwrap_or_else(|e| panic!("{e}\nsidecar log:\n{}", read_log(&slog)));
    let info = &res["info"];
    assert_eq!(info["component_type"], "sidecar", "{info}");
    assert_eq!(info["label_sets"], json!([[["cluster", "c1"], ["prom", "p0"]]]), "{info}");
    assert_eq!(info["min_time"].as_i64().unwrap(), block_min, "{info}");
    assert_eq!(info["max_time"].as_i64().unwrap(), i64::MAX, "{info}");
    assert_eq!(res["only_external"]["error"]["code"], "INVALID_ARGUMENT", "{res}");
    assert!(
        res["only_external"]["error"]["details"]
            .as_str()
            .unwrap()
            .contains("no matchers specified (excluding external labels)")
    );
    assert_eq!(res["other_cluster"]["series"], json!([]), "{res}");
    let gen_series = res["gen"]["series"].as_array().unwrap();
    assert_eq!(gen_series.len(), 3, "{}", res["gen"]);
    for s in gen_series {
        let l: Vec<&str> = s["labels"].as_array().unwrap().iter().map(|p| p[0].as_str().unwrap()).collect();
        assert_eq!(l, vec!["__name__", "cluster", "instance", "job", "kind", "prom"], "{s}");
    }
    assert_eq!(res["values"]["values"], json!(["c1"]), "{res}");
    // The plain Series call "gen" got Prometheus's chunks passed through, the sharded
    // "gen_reencoded" chunks re-encoded by the StoreAPI server: both hold the same samples in the
    // range, and both are counted in the server's metrics (whole passed-through chunks, which may
    // reach beyond the range).
    let in_range = |v: &Value| -> Vec<(String, Vec<(i64, u64)>)> {
        v["series"]
            .as_array()
            .unwrap()
            .iter()
            .map(|s| {
                let pts = s["chunks"].as_array().unwrap().iter().flat_map(|c| c.as_array().unwrap().clone());
                let pts = pts.map(|p| (p[0].as_i64().unwrap(), p[1].as_u64().unwrap()));
                (s["labels"].to_string(), pts.filter(|p| p.0 >= block_min && p.0 <= at).collect())
            })
            .collect()
    };
    assert_eq!(in_range(&res["gen"]), in_range(&res["gen_reencoded"]));
    assert_eq!(res["gen_reencoded"]["batch_frames"], 2, "{}", res["gen_reencoded"]);
    let reencoded: usize = in_range(&res["gen_reencoded"]).iter().map(|s| s.1.len()).sum();
    let passed: usize = res["gen"]["series"]
        .as_array()
        .unwrap()
        .iter()
        .flat_map(|s| s["chunks"].as_array().unwrap())
        .map(|c| c.as_array().unwrap().len())
        .sum();
    assert_eq!(metric(shttp, "strata_storeapi_samples_sent_total") - sent_before, (reencoded + passed) as f64);

    store_only.stop().await;
    both.stop().await;
    store.stop().await;
    let st = sidecar.terminate(Duration::from_secs(30)).await.unwrap();
    assert!(st.success(), "sidecar exit {st}:\n{}", read_log(&slog));
    drop(prom);
}

/// `/metrics` value of an unlabelled sample, 0 when absent.
fn metric(port: u16, name: &str) -> f64 {
    let (_, text) = http_get(port, "/metrics");
    text.lines()
        .find_map(|l| l.strip_prefix(name).and_then(|r| r.strip_prefix(' ')).map(|v| v.trim().parse().unwrap()))
        .unwrap_or(0.0)
}

/// Waits (up to `within`) until the `/metrics` value `name` of `port` is at least `at_least`.
async fn wait_metric(port: u16, name: &str, at_least: f64, within: Duration, log: &Path) {
    wait_for(&format!("{name} >= {at_least}"), within, async || metric(port, name) >= at_least, &[log]).await;
}

/// Waits until the sidecar logging to `log` stops at its upload pause point.
async fn wait_paused(log: &Path) {
    wait_for("the pause", Duration::from_secs(60), async || read_log(log).contains("paused at upload"), &[log]).await;
}

/// The sidecar flags of the shipper tests: Prometheus at `prom_url`, TSDB `tsdb`, bucket config `cfg`.
fn shipper_args<'a>(prom_url: &'a str, tsdb: &'a Path, cfg: &'a Path) -> [&'a str; 6] {
    [
        "--prometheus.url",
        prom_url,
        "--tsdb.path",
        tsdb.to_str().unwrap(),
        "--objstore.config-file",
        cfg.to_str().unwrap(),
    ]
}

fn info_labels(py: &Path, grpc: &str) -> Value {
    let res = python_client(py, grpc, &json!([{"name": "info", "kind": "info"}])).unwrap();
    match res["info"].get("label_sets") {
        Some(l) => l.clone(),
        None => res["info"]["error"]["code"].clone(),
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sidecar_waits_for_prometheus_and_follows_its_restarts() {
    let Some(prom_bin) = peer("prometheus") else { return };
    let Some(py) = venv_python(&["grpc", "grpc_tools"]) else { return };
    let tmp = tempfile::tempdir().unwrap();
    let target = start_target();
    let port = free_port();
    let data = tmp.path().join("data");
    std::fs::create_dir_all(&data).unwrap();
    let slog = tmp.path().join("sidecar.log");
    let url = format!("http://127.0.0.1:{port}");
    let (mut sidecar, shttp, sgrpc) =
        spawn_sidecar(&["--prometheus.url", &url, "--tsdb.path", data.to_str().unwrap()], &[], &slog);
    // Up, not ready, while Prometheus is not there.
    wait_for("healthy", Duration::from_secs(30), async || http_get(shttp, "/-/healthy").0 == 200, &[&slog]).await;
    tokio::time::sleep(Duration::from_secs(2)).await;
    assert_eq!(http_get(shttp, "/-/ready").0, 503);
    assert_eq!(metric(shttp, "thanos_sidecar_prometheus_up"), 0.0);
    assert_eq!(info_labels(&py, &sgrpc), json!("UNAVAILABLE"));
    assert!(read_log(&slog).contains("Is Prometheus running? Retrying"), "{}", read_log(&slog));

    // Prometheus comes: ready, with its external labels.
    let prom = Prom::start(&prom_bin, tmp.path(), port, "    cluster: c1\n", target).await;
    wait_for("ready", Duration::from_secs(30), async || http_get(shttp, "/-/ready").0 == 200, &[&slog]).await;
    assert_eq!(info_labels(&py, &sgrpc), json!([[["cluster", "c1"]]]));
    assert_eq!(metric(shttp, "thanos_sidecar_prometheus_up"), 1.0);

    // Prometheus goes away: not ready; back with other external labels: ready with them.
    let Prom { mut daemon, .. } = prom;
    daemon.terminate(Duration::from_secs(30)).await.unwrap();
    wait_for("not ready", Duration::from_secs(30), async || http_get(shttp, "/-/ready").0 == 503, &[&slog]).await;
    let _prom = Prom::start(&prom_bin, tmp.path(), port, "    cluster: c2\n", target).await;
    wait_for("ready again", Duration::from_secs(30), async || http_get(shttp, "/-/ready").0 == 200, &[&slog]).await;
    let py2 = py.clone();
    let g = sgrpc.clone();
    wait_for(
        "the new external labels",
        Duration::from_secs(30),
        async || info_labels(&py2, &g) == json!([[["cluster", "c2"]]]),
        &[&slog],
    )
    .await;
    let st = sidecar.terminate(Duration::from_secs(30)).await.unwrap();
    assert!(st.success(), "sidecar exit {st}:\n{}", read_log(&slog));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sidecar_refuses_a_prometheus_without_external_labels() {
    let Some(prom_bin) = peer("prometheus") else { return };
    let tmp = tempfile::tempdir().unwrap();
    let prom = Prom::start(&prom_bin, tmp.path(), free_port(), "", start_target()).await;
    let slog = tmp.path().join("sidecar.log");
    let (mut sidecar, _, _) =
        spawn_sidecar(&["--prometheus.url", &prom.url(), "--tsdb.path", prom.data.to_str().unwrap()], &[], &slog);
    let deadline = Instant::now() + Duration::from_secs(30);
    let status = loop {
        if let Some(st) = sidecar.0.try_wait().unwrap() {
            break st;
        }
        assert!(Instant::now() < deadline, "sidecar did not exit:\n{}", read_log(&slog));
        tokio::time::sleep(Duration::from_millis(100)).await;
    };
    assert!(!status.success());
    let log = read_log(&slog);
    assert!(
        log.contains("no external labels configured on Prometheus server, uniquely identifying external labels must be configured"),
        "{log}"
    );
}

/// Promtool-made TSDB blocks (3 blocks of fleet data, stale markers and special values) in `dir`,
/// and promtool's dump of them.
fn promtool_tsdb(promtool: &Path, tmp: &Path, dir: &Path) -> Dump {
    let now_s = chrono::Utc::now().timestamp() / 7200 * 7200;
    let spec = ingest::datagen::GenSpec {
        targets: 2,
        start_ms: (now_s - 5 * 3600) * 1000,
        duration_ms: 5 * 3_600_000,
        interval_ms: 30_000,
        ..Default::default()
    };
    std::fs::create_dir_all(tmp.join("work")).unwrap();
    promtool_blocks(promtool, &openmetrics_with_specials(&spec), &tmp.join("work"), dir);
    promtool_dump(promtool, dir, &tmp.join("dump"))
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sidecar_upload_survives_sigkill_and_block_deletion() {
    let Some(prom_bin) = peer("prometheus") else { return };
    let Some(promtool) = peer("promtool") else { return };
    let tmp = tempfile::tempdir().unwrap();
    let prom = Prom::start(&prom_bin, tmp.path(), free_port(), "    cluster: c1\n", start_target()).await;
    // The shipper reads a TSDB directory of promtool-made blocks (no need to wait for Prometheus
    // to cut blocks); readiness and external labels come from the Prometheus.
    let tsdb = tmp.path().join("tsdb");
    let expected = promtool_tsdb(&promtool, tmp.path(), &tsdb);
    let metas = local_metas(&tsdb);
    assert!(metas.len() >= 3, "{metas:?}");
    let ulids: Vec<String> = metas.iter().map(|m| m["ulid"].as_str().unwrap().to_string()).collect();
    let bucket_dir = tmp.path().join("bucket");
    let cfg = fs_bucket_config(tmp.path(), &bucket_dir);
    let prom_url = prom.url();
    let args = shipper_args(&prom_url, &tsdb, &cfg);

    // SIGKILL in the middle of the first upload: nothing complete in the bucket.
    let log1 = tmp.path().join("sidecar1.log");
    let (mut s1, _, _) = spawn_sidecar(&args, &[("STRATA_SIDECAR_TEST_PAUSE_AT", "upload")], &log1);
    wait_paused(&log1).await;
    s1.kill().unwrap();
    assert!(bucket_metas(&bucket_dir).is_empty(), "{:?}", bucket_metas(&bucket_dir));

    // Restart, pause again in the same (oldest) block, and delete it as retention would: the
    // upload, from hard links, completes whole.
    let resume = tmp.path().join("resume");
    let log2 = tmp.path().join("sidecar2.log");
    let env =
        [("STRATA_SIDECAR_TEST_PAUSE_AT", "upload"), ("STRATA_SIDECAR_TEST_RESUME_FILE", resume.to_str().unwrap())];
    let (mut s2, http2, _) = spawn_sidecar(&args, &env, &log2);
    wait_paused(&log2).await;
    std::fs::remove_dir_all(tsdb.join(&ulids[0])).unwrap();
    std::fs::write(&resume, "").unwrap();
    wait_for(
        "every block uploaded",
        Duration::from_secs(120),
        async || bucket_metas(&bucket_dir).len() == ulids.len(),
        &[&log2],
    )
    .await;
    let got = bucket_metas(&bucket_dir);
    let mut sorted = ulids.clone();
    sorted.sort();
    assert_eq!(got.keys().cloned().collect::<Vec<_>>(), sorted);
    assert_eq!(bucket_dirs(&bucket_dir), sorted, "no partial block directories");
    for want in &metas {
        let m = &got[want["ulid"].as_str().unwrap()];
        assert_eq!(m["thanos"]["source"], "sidecar");
        assert_eq!(m["thanos"]["labels"], json!({"cluster": "c1"}));
        assert_eq!(m["stats"]["numSamples"], want["stats"]["numSamples"], "{m}");
    }
    let bucket = engine::bucket::Bucket::local(&bucket_dir).unwrap();
    assert_same(&expected, &bucket_dump(&bucket, &["cluster"]).await);
    wait_metric(http2, "thanos_shipper_dir_syncs_total", 1.0, Duration::from_secs(10), &log2).await;
    assert_eq!(metric(http2, "thanos_shipper_uploads_total"), ulids.len() as f64);
    // The state file lists the blocks still on disk (the next sync drops the deleted one).
    let state_file = tsdb.join("thanos.shipper.json");
    let read_state =
        || -> Value { serde_json::from_slice(&std::fs::read(&state_file).unwrap_or_default()).unwrap_or(Value::Null) };
    let want_state = json!({"version": 1, "uploaded": ulids[1..]});
    wait_for("the state file", Duration::from_secs(30), async || read_state() == want_state, &[&log2]).await;
    assert!(std::fs::read_dir(tsdb.join("thanos/upload")).unwrap().next().is_none(), "upload leftovers");
    let st = s2.terminate(Duration::from_secs(30)).await.unwrap();
    assert!(st.success(), "{}", read_log(&log2));

    // A restart, even without the state file, uploads nothing again.
    std::fs::remove_file(&state_file).unwrap();
    let log3 = tmp.path().join("sidecar3.log");
    let (mut s3, http3, _) = spawn_sidecar(&args, &[], &log3);
    wait_metric(http3, "thanos_shipper_dir_syncs_total", 1.0, Duration::from_secs(60), &log3).await;
    assert_eq!(metric(http3, "thanos_shipper_uploads_total"), 0.0);
    assert_eq!(read_state(), want_state);
    s3.terminate(Duration::from_secs(30)).await.unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sidecar_retries_uploads_while_the_bucket_is_down() {
    let Some(prom_bin) = peer("prometheus") else { return };
    let Some(promtool) = peer("promtool") else { return };
    let Some(moto) = peer("moto_server") else { return };
    let tmp = tempfile::tempdir().unwrap();
    let prom = Prom::start(&prom_bin, tmp.path(), free_port(), "    cluster: c1\n", start_target()).await;
    let tsdb = tmp.path().join("tsdb");
    let expected = promtool_tsdb(&promtool, tmp.path(), &tsdb);
    let ulids: Vec<String> = local_metas(&tsdb).iter().map(|m| m["ulid"].as_str().unwrap().to_string()).collect();
    // The S3 server is not running yet.
    let port = free_port();
    let cfg = tmp.path().join("s3.yml");
    std::fs::write(
        &cfg,
        format!(
            "type: S3\nconfig:\n  bucket: shipped\n  endpoint: 127.0.0.1:{port}\n  region: us-east-1\n  access_key: test\n  secret_key: test\n  insecure: true\n"
        ),
    )
    .unwrap();
    let slog = tmp.path().join("sidecar.log");
    let prom_url = prom.url();
    let args = shipper_args(&prom_url, &tsdb, &cfg);
    let (mut sidecar, shttp, _) = spawn_sidecar(&args, &[], &slog);
    wait_metric(shttp, "thanos_shipper_dir_sync_failures_total", 1.0, Duration::from_secs(240), &slog).await;
    assert_eq!(metric(shttp, "thanos_shipper_uploads_total"), 0.0);
    // The S3 server comes up: every block is uploaded, once, whole.
    let _moto = Daemon(
        Command::new(moto)
            .args(["-H", "127.0.0.1", "-p", &port.to_string()])
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .unwrap(),
    );
    wait_for("moto", Duration::from_secs(30), async || std::net::TcpStream::connect(("127.0.0.1", port)).is_ok(), &[])
        .await;
    create_s3_bucket(port, "shipped");
    wait_for(
        "every block uploaded",
        Duration::from_secs(120),
        async || metric(shttp, "thanos_shipper_uploads_total") == ulids.len() as f64,
        &[&slog],
    )
    .await;
    let bucket = engine::bucket::Bucket::from_config_file(&cfg).unwrap();
    let mut sorted = ulids.clone();
    sorted.sort();
    assert_eq!(bucket.list_blocks().await.unwrap(), sorted);
    assert!(bucket.list_partial_blocks().await.unwrap().is_empty());
    assert_same(&expected, &bucket_dump(&bucket, &["cluster"]).await);
    let st = sidecar.terminate(Duration::from_secs(30)).await.unwrap();
    assert!(st.success(), "{}", read_log(&slog));
}
