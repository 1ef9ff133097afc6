//! End to end: `strata store` (the store gateway) over a bucket converted from promtool-made TSDB
//! blocks, read through the Thanos StoreAPI by a client that shares no code with Strata (Python
//! grpcio with stubs generated from the project's .proto files, its own XOR decoder and xxhash64:
//! tests/python/storeapi_client.py). Every sample is compared with `promtool tsdb dump` of the
//! source blocks. Two copies of the data carry `replica="a"` / `replica="b"`, so deduplication
//! (`without_replica_labels`) sees real replicas.
#![allow(clippy::unwrap_used, clippy::expect_used)]

mod common;

use std::collections::{BTreeMap, BTreeSet};
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use common::*;
use engine::Labels;
use serde_json::{Value, json};

/// Fleet data (4 targets, 5 h at 30 s) plus a family with special float values.
fn openmetrics() -> String {
    openmetrics_with_specials(&ingest::datagen::GenSpec {
        targets: 4,
        duration_ms: 5 * 3_600_000,
        interval_ms: 30_000,
        ..Default::default()
    })
}

/// `strata tsdb convert` of the TSDB blocks in `data` into the bucket of `cfg`, with external labels.
fn convert(data: &Path, cfg: &Path, labels: &[&str]) {
    let mut args = vec!["tsdb", "convert", "--tsdb.path", data.to_str().unwrap()];
    args.extend(["--objstore.config-file", cfg.to_str().unwrap()]);
    for l in labels {
        args.extend(["--label", l]);
    }
    strata_ok(&args);
}

/// `[minTime, maxTime)` of the TSDB blocks in `dir`, from their meta.json, sorted.
fn block_ranges(dir: &Path) -> Vec<(i64, i64)> {
    let mut out: Vec<(i64, i64)> = std::fs::read_dir(dir)
        .unwrap()
        .filter_map(|e| {
            let p = e.unwrap().path().join("meta.json");
            p.exists().then(|| {
                let m: Value = serde_json::from_slice(&std::fs::read(p).unwrap()).unwrap();
                (m["minTime"].as_i64().unwrap(), m["maxTime"].as_i64().unwrap())
            })
        })
        .collect();
    out.sort();
    out
}

/// A promtool dump key (`{__name__="up", job="api"}`) as a label set.
fn dump_labels(key: &str) -> Labels {
    let inner = key.trim_start_matches('{').trim_end_matches('}');
    let mut pairs = Vec::new();
    let mut rest = inner;
    while !rest.is_empty() {
        let eq = rest.find("=\"").unwrap();
        let name = rest[..eq].to_string();
        // The value is a quoted string; find its closing quote (skipping escapes).
        let bytes = rest.as_bytes();
        let mut i = eq + 2;
        while bytes[i] != b'"' {
            i += if bytes[i] == b'\\' { 2 } else { 1 };
        }
        let value: String = serde_json::from_str(&rest[eq + 1..=i]).unwrap();
        pairs.push((name, value));
        rest = rest[i + 1..].trim_start_matches(", ");
    }
    Labels::from_pairs(pairs)
}

/// The expected series: the dump's, with the converter's external labels of a replica.
type Expected = BTreeMap<Labels, Vec<(i64, f64)>>;

fn expected(dump: &Dump, replicas: &[&str]) -> Expected {
    let mut out = Expected::new();
    for (k, samples) in dump {
        for r in replicas {
            let mut l = dump_labels(k);
            l.set("cluster", "eu1");
            l.set("replica", r);
            out.insert(l, samples.clone());
        }
    }
    out
}

fn same_value(a: f64, b: f64) -> bool {
    a.to_bits() == b.to_bits() || (a.is_nan() && b.is_nan())
}

/// A decoded series from the Python client: labels and its samples over all chunks.
#[derive(Debug)]
struct Got {
    labels: Labels,
    chunks: Vec<Vec<(i64, f64)>>,
}

fn got_series(v: &Value) -> Vec<Got> {
    let series = v["series"].as_array().unwrap_or_else(|| panic!("no series in {v}"));
    series
        .iter()
        .map(|s| {
            let labels = Labels::from_pairs(
                s["labels"].as_array().unwrap().iter().map(|p| (p[0].as_str().unwrap(), p[1].as_str().unwrap())),
            );
            let chunks = s["chunks"]
                .as_array()
                .unwrap()
                .iter()
                .map(|c| {
                    c.as_array()
                        .unwrap()
                        .iter()
                        .map(|p| (p[0].as_i64().unwrap(), f64::from_bits(p[1].as_u64().unwrap())))
                        .collect()
                })
                .collect();
            Got { labels, chunks }
        })
        .collect()
}

/// Asserts that `got` is exactly `want` restricted to `[min_t, max_t]` (series with no sample there
/// left out), in label order, every sample equal.
fn assert_series(name: &str, got: &[Got], want: &Expected, min_t: i64, max_t: i64) {
    let want: Vec<(&Labels, Vec<(i64, f64)>)> = want
        .iter()
        .map(|(l, s)| (l, s.iter().copied().filter(|p| p.0 >= min_t && p.0 <= max_t).collect::<Vec<_>>()))
        .filter(|(_, s)| !s.is_empty())
        .collect();
    let got_labels: Vec<&Labels> = got.iter().map(|g| &g.labels).collect();
    let want_labels: Vec<&Labels> = want.iter().map(|w| w.0).collect();
    assert_eq!(got_labels, want_labels, "{name}: series");
    for (g, (l, w)) in got.iter().zip(&want) {
        let samples: Vec<(i64, f64)> = g.chunks.concat();
        assert_eq!(samples.len(), w.len(), "{name}: sample count of {l}");
        for (a, b) in samples.iter().zip(w) {
            assert!(a.0 == b.0 && same_value(a.1, b.1), "{name}: {l} at {}: {a:?} vs {b:?}", b.0);
        }
    }
}

/// The venv python if it has `modules` (a missing one FAILS under CI=true).
fn python() -> Option<PathBuf> {
    venv_python(&["grpc", "grpc_tools"])
}

/// A running `strata store` with its gRPC and HTTP addresses.
struct Store {
    _daemon: Daemon,
    grpc: String,
    http_port: u16,
    log: PathBuf,
}

impl Store {
    fn start(cfg: &Path, extra: &[&str], log: PathBuf) -> Store {
        let (grpc_port, http_port) = (free_port(), free_port());
        let grpc = format!("127.0.0.1:{grpc_port}");
        let child = Command::new(strata_bin())
            .args(["store", "--objstore.config-file", cfg.to_str().unwrap(), "--grpc-address", &grpc])
            .args(["--http-address", &format!("127.0.0.1:{http_port}"), "--sync-block-duration", "1s"])
            .args(extra)
            .env("RUST_LOG", "info")
            .stdout(Stdio::null())
            .stderr(std::fs::File::create(&log).unwrap())
            .spawn()
            .unwrap();
        let s = Store { _daemon: Daemon(child), grpc, http_port, log };
        let deadline = Instant::now() + Duration::from_secs(60);
        while http_get(http_port, "/-/ready").0 != 200 {
            assert!(Instant::now() < deadline, "strata store did not get ready:\n{}", s.log_text());
            std::thread::sleep(Duration::from_millis(100));
        }
        s
    }

    fn log_text(&self) -> String {
        std::fs::read_to_string(&self.log).unwrap_or_default()
    }

    /// Runs the Python client with `requests`; returns its results by request name.
    fn query(&self, py: &Path, requests: &Value) -> Value {
        python_client(py, &self.grpc, requests).unwrap_or_else(|e| panic!("{e}\nstore log:\n{}", self.log_text()))
    }
}

const EQ: i64 = 0;
const NEQ: i64 = 1;
const RE: i64 = 2;
const NRE: i64 = 3;

#[test]
fn store_gateway_serves_the_bucket_to_a_python_grpc_client() {
    let Some(promtool) = peer("promtool") else { return };
    let Some(py) = python() else { return };
    let tmp = tempfile::tempdir().unwrap();
    let om = openmetrics();
    let bdir = tmp.path().join("bucket");
    let cfg = fs_bucket_config(tmp.path(), &bdir);
    let mut ranges: Vec<(i64, i64)> = Vec::new();
    let mut dump = None;
    for r in ["a", "b"] {
        let data = tmp.path().join(format!("prom-{r}"));
        promtool_blocks(&promtool, &om, tmp.path(), &data);
        ranges.extend(block_ranges(&data));
        if dump.is_none() {
            dump = Some(promtool_dump(&promtool, &data, &tmp.path().join("dump")));
        }
        convert(&data, &cfg, &["cluster=\"eu1\"", &format!("replica=\"{r}\"")]);
    }
    let dump = dump.unwrap();
    let both = expected(&dump, &["a", "b"]);
    let min_t = ranges.iter().map(|r| r.0).min().unwrap();
    let max_t = ranges.iter().map(|r| r.1).max().unwrap() - 1;
    let data_min = dump.values().flatten().map(|s| s.0).min().unwrap();
    let data_max = dump.values().flatten().map(|s| s.0).max().unwrap();
    let mid = data_min + (data_max - data_min) / 3;
    let end = data_min + (data_max - data_min) * 2 / 3;

    let store = Store::start(&cfg, &[], tmp.path().join("store.log"));
    let all = |name: &str| {
        json!({"name": name, "kind": "series", "min_time": i64::MIN, "max_time": i64::MAX,
        "matchers": [[RE, "__name__", ".+"]]})
    };
    let mut requests = vec![
        json!({"name": "info", "kind": "info"}),
        json!({"name": "names", "kind": "label_names", "start": i64::MIN, "end": i64::MAX}),
        json!({"name": "names_special", "kind": "label_names", "start": i64::MIN, "end": i64::MAX,
            "matchers": [[EQ, "__name__", "special"]]}),
        json!({"name": "names_limit", "kind": "label_names", "start": i64::MIN, "end": i64::MAX, "limit": 2}),
        json!({"name": "jobs", "kind": "label_values", "label": "job", "start": i64::MIN, "end": i64::MAX}),
        json!({"name": "jobs_re", "kind": "label_values", "label": "job", "start": i64::MIN, "end": i64::MAX,
            "matchers": [[RE, "job", "api|db"]]}),
        json!({"name": "replicas", "kind": "label_values", "label": "replica", "start": i64::MIN, "end": i64::MAX}),
        json!({"name": "no_replica", "kind": "label_values", "label": "replica", "start": i64::MIN, "end": i64::MAX,
            "matchers": [[EQ, "cluster", "us"]]}),
        all("all"),
        json!({"name": "range_regex_neq", "kind": "series", "min_time": mid, "max_time": end,
            "matchers": [[RE, "job", "api|db"], [NEQ, "__name__", "up"], [NRE, "status", "4.."]]}),
        json!({"name": "ext_match", "kind": "series", "min_time": i64::MIN, "max_time": i64::MAX,
            "matchers": [[EQ, "replica", "a"], [EQ, "cluster", "eu1"], [EQ, "__name__", "up"]]}),
        json!({"name": "ext_nomatch", "kind": "series", "min_time": i64::MIN, "max_time": i64::MAX,
            "matchers": [[EQ, "cluster", "us"]]}),
        json!({"name": "skip_chunks", "kind": "series", "min_time": i64::MIN, "max_time": i64::MAX,
            "matchers": [[RE, "__name__", ".+"]], "skip_chunks": true}),
        json!({"name": "limit", "kind": "series", "min_time": i64::MIN, "max_time": i64::MAX,
            "matchers": [[RE, "__name__", ".+"]], "limit": 5}),
        json!({"name": "dedup", "kind": "series", "min_time": i64::MIN, "max_time": i64::MAX,
            "matchers": [[RE, "__name__", ".+"]], "without_replica_labels": ["replica"]}),
        json!({"name": "batched", "kind": "series", "min_time": i64::MIN, "max_time": i64::MAX,
            "matchers": [[RE, "__name__", ".+"]], "response_batch_size": 7,
            "hints_block_matchers": [[EQ, "__block_id", "01ARZ3NDEKTSV4RRFFQ69G5FAV"]]}),
        json!({"name": "bad_regex", "kind": "series", "min_time": 0, "max_time": 1, "matchers": [[RE, "job", "("]]}),
    ];
    for (i, (by, labels)) in [(false, vec![]), (true, vec!["instance"]), (false, vec!["replica"])].iter().enumerate() {
        for index in 0..3 {
            requests.push(json!({"name": format!("shard{i}_{index}"), "kind": "series", "min_time": i64::MIN,
                "max_time": i64::MAX, "matchers": [[RE, "__name__", ".+"]],
                "shard_info": {"shard_index": index, "total_shards": 3, "by": by, "labels": labels}}));
        }
    }
    let res = store.query(&py, &Value::Array(requests));

    // Info: the blocks' external label sets and time range, store flags.
    let info = &res["info"];
    assert_eq!(info["component_type"], "store");
    assert_eq!(info["has_store"], true);
    assert_eq!(
        info["label_sets"],
        json!([[["cluster", "eu1"], ["replica", "a"]], [["cluster", "eu1"], ["replica", "b"]]])
    );
    assert_eq!((info["min_time"].as_i64().unwrap(), info["max_time"].as_i64().unwrap()), (min_t, max_t));
    assert_eq!(info["supports_sharding"], true);
    assert_eq!(info["supports_without_replica_labels"], true);
    // One TSDB info per block (as Thanos's store gateway lists its blocks).
    assert_eq!(info["tsdb_infos"].as_array().unwrap().len(), ranges.len());

    // Label names and values: sorted, distinct, external labels included, matchers honoured.
    let mut names: BTreeSet<String> = BTreeSet::from(["cluster".to_string(), "replica".to_string()]);
    for k in dump.keys() {
        names.extend(dump_labels(k).iter().map(|l| l.name.clone()));
    }
    assert_eq!(res["names"]["names"], json!(names.iter().collect::<Vec<_>>()));
    assert_eq!(res["names_special"]["names"], json!(["__name__", "cluster", "kind", "replica"]));
    assert_eq!(res["names_limit"]["names"], json!(names.iter().take(2).collect::<Vec<_>>()));
    assert_eq!(res["jobs"]["values"], json!(["api", "cache", "db", "web"]));
    assert_eq!(res["jobs_re"]["values"], json!(["api", "db"]));
    assert_eq!(res["replicas"]["values"], json!(["a", "b"]));
    assert_eq!(res["no_replica"]["values"], json!([]));

    // Series: every sample of every series of both replicas, bit for bit against promtool's dump.
    let everything = got_series(&res["all"]);
    assert_eq!(everything.len(), 2 * dump.len());
    assert_series("all", &everything, &both, i64::MIN, i64::MAX);
    assert!(everything.iter().flat_map(|g| &g.chunks).any(|c| c.len() == 120), "chunks are cut at 120 samples");
    let filtered: Expected = both
        .iter()
        .filter(|(l, _)| {
            matches!(l.get("job"), Some("api" | "db"))
                && l.metric_name() != Some("up")
                && !l.get("status").is_some_and(|s| s.starts_with('4'))
        })
        .map(|(l, s)| (l.clone(), s.clone()))
        .collect();
    assert!(filtered.len() > 10);
    assert_series("range_regex_neq", &got_series(&res["range_regex_neq"]), &filtered, mid, end);
    let ups: Expected = expected(&dump, &["a"]).into_iter().filter(|(l, _)| l.metric_name() == Some("up")).collect();
    assert_eq!(ups.len(), 4);
    assert_series("ext_match", &got_series(&res["ext_match"]), &ups, i64::MIN, i64::MAX);
    assert!(got_series(&res["ext_nomatch"]).is_empty());
    let labels_only = got_series(&res["skip_chunks"]);
    assert_eq!(labels_only.iter().map(|g| &g.labels).collect::<Vec<_>>(), both.keys().collect::<Vec<_>>());
    assert!(labels_only.iter().all(|g| g.chunks.is_empty()));
    let limited = got_series(&res["limit"]);
    assert_eq!(limited.iter().map(|g| &g.labels).collect::<Vec<_>>(), both.keys().take(5).collect::<Vec<_>>());
    // Batches of 7 series per frame, the same data; the hints were accepted.
    let batched = &res["batched"];
    let n = everything.len();
    assert_eq!(batched["frames"].as_u64().unwrap() as usize, n.div_ceil(7));
    assert_eq!(batched["batch_frames"], batched["frames"]);
    assert_series("batched", &got_series(batched), &both, i64::MIN, i64::MAX);
    assert_eq!(res["bad_regex"]["error"]["code"], "INVALID_ARGUMENT");

    // Without the replica label: one series per source series, holding both replicas' chunks.
    let dedup = got_series(&res["dedup"]);
    let mut one: Vec<Labels> = expected(&dump, &["a"]).into_keys().collect();
    for l in &mut one {
        l.remove("replica");
    }
    assert_eq!(dedup.iter().map(|g| g.labels.clone()).collect::<Vec<_>>(), one);
    for (g, k) in dedup.iter().zip(dump.keys()) {
        let mins: Vec<i64> = g.chunks.iter().map(|c| c[0].0).collect();
        assert!(mins.is_sorted(), "{}: chunks by min time", g.labels);
        let mut samples: Vec<(i64, u64)> = g.chunks.concat().into_iter().map(|(t, v)| (t, v.to_bits())).collect();
        samples.sort();
        let mut want: Vec<(i64, f64)> = dump[k].iter().chain(&dump[k]).copied().collect();
        want.sort_by_key(|p| p.0);
        assert_eq!(samples.len(), want.len(), "{}", g.labels);
        for (a, b) in samples.iter().zip(&want) {
            assert!(a.0 == b.0 && same_value(f64::from_bits(a.1), b.1), "{}: {a:?} vs {b:?}", g.labels);
        }
    }

    // Shards (membership checked by the client's own hash): each set of 3 partitions the series.
    for i in 0..3 {
        let mut union: Vec<Labels> =
            (0..3).flat_map(|index| got_series(&res[format!("shard{i}_{index}")])).map(|g| g.labels).collect();
        let parts: Vec<usize> = (0..3).map(|index| got_series(&res[format!("shard{i}_{index}")]).len()).collect();
        assert!(parts.iter().all(|&p| p < union.len()), "shard set {i}: {parts:?}");
        union.sort();
        assert_eq!(union, both.keys().cloned().collect::<Vec<_>>(), "shard set {i}");
    }

    // /metrics counts the calls.
    let (status, metrics) = http_get(store.http_port, "/metrics");
    assert_eq!(status, 200);
    assert!(
        metrics.contains(
            r#"strata_grpc_server_handled_total{grpc_service="thanos.Store",grpc_method="Series",grpc_code="OK"}"#
        ),
        "{metrics}"
    );
    assert!(metrics.contains("strata_storeapi_samples_sent_total"), "{metrics}");
    // Every converted block is served; the ones the calls read were opened on first use, none
    // closed (the default --index-cache-size holds them all).
    let metric = |name: &str| -> u64 {
        let line =
            metrics.lines().find(|l| l.starts_with(&format!("{name} "))).unwrap_or_else(|| panic!("{name}: {metrics}"));
        line.rsplit(' ').next().unwrap().parse().unwrap()
    };
    let n_blocks = ranges.len() as u64;
    assert_eq!(metric("thanos_bucket_store_blocks_loaded"), n_blocks, "{metrics}");
    let opened = metric("thanos_bucket_store_indexheader_lazy_load_total");
    assert!((1..=n_blocks).contains(&opened), "{opened} of {n_blocks}: {metrics}");
    assert_eq!(metric("strata_bucket_open_blocks"), opened, "{metrics}");
    assert_eq!(metric("thanos_bucket_store_indexheader_lazy_unload_total"), 0, "{metrics}");
    drop(store);

    // --selector.relabel-config: a gateway keeping only replica "b" serves exactly b's series, and
    // one dropping a block by `__block_id` (from a file) serves one block fewer.
    let keep_b = "- action: keep\n  source_labels: [replica]\n  regex: b\n";
    // With --data-dir, the blocks' meta.json and series.parquet are cached on disk: a restarted
    // gateway reads them from there and downloads none.
    let data_dir = tmp.path().join("store-data");
    let dd = data_dir.to_str().unwrap();
    let counter = |port: u16, name: &str| -> u64 {
        let (_, m) = http_get(port, "/metrics");
        let line = m.lines().find(|l| l.starts_with(&format!("{name} "))).unwrap_or_else(|| panic!("{name}: {m}"));
        line.rsplit(' ').next().unwrap().parse().unwrap()
    };
    for round in 0..2 {
        let store = Store::start(
            &cfg,
            &["--selector.relabel-config", keep_b, "--data-dir", dd],
            tmp.path().join(format!("sel{round}.log")),
        );
        let res = store.query(&py, &json!([all("all")]));
        assert_series("replica b", &got_series(&res["all"]), &expected(&dump, &["b"]), i64::MIN, i64::MAX);
        let (hits, misses) = (
            counter(store.http_port, "strata_store_disk_cache_hits_total"),
            counter(store.http_port, "strata_store_disk_cache_misses_total"),
        );
        if round == 0 {
            assert!(misses > 0, "first start downloads: hits {hits} misses {misses}");
        } else {
            assert!(hits > 0 && misses == 0, "restart reads from disk: hits {hits} misses {misses}");
        }
        drop(store);
    }
    let cached: Vec<_> = std::fs::read_dir(data_dir.join("index-cache")).unwrap().collect();
    assert!(!cached.is_empty() && cached.len() as u64 <= n_blocks, "{cached:?}");
    let ulids: Vec<String> = std::fs::read_dir(&bdir)
        .unwrap()
        .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
        .filter(|n| n.len() == 26)
        .collect();
    assert_eq!(ulids.len() as u64, n_blocks);
    let rules = tmp.path().join("relabel.yml");
    std::fs::write(&rules, format!("- action: drop\n  source_labels: [__block_id]\n  regex: {}\n", ulids[0])).unwrap();
    let store =
        Store::start(&cfg, &["--selector.relabel-config-file", rules.to_str().unwrap()], tmp.path().join("sel2.log"));
    let (_, metrics) = http_get(store.http_port, "/metrics");
    assert!(metrics.contains(&format!("thanos_bucket_store_blocks_loaded {}", n_blocks - 1)), "{metrics}");
    drop(store);
    // A bad rule set is refused at start with the flag named.
    let out = Command::new(strata_bin())
        .args(["store", "--objstore.config-file", cfg.to_str().unwrap()])
        .args(["--selector.relabel-config", "- action: hashmod\n  target_label: s\n"])
        .output()
        .unwrap();
    assert!(!out.status.success());
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(err.contains("--selector.relabel-config") && err.contains("non-zero modulus"), "{err}");
}

#[test]
fn store_gateway_limits_time_window_and_readiness() {
    let Some(promtool) = peer("promtool") else { return };
    let Some(py) = python() else { return };
    let tmp = tempfile::tempdir().unwrap();
    let data = tmp.path().join("prom");
    promtool_blocks(&promtool, &openmetrics(), tmp.path(), &data);
    let dump = promtool_dump(&promtool, &data, &tmp.path().join("dump"));
    let bdir = tmp.path().join("bucket");
    let cfg = fs_bucket_config(tmp.path(), &bdir);
    convert(&data, &cfg, &[]);
    let want: Expected = dump.iter().map(|(k, s)| (dump_labels(k), s.clone())).collect();
    let samples: usize = want.values().map(Vec::len).sum();
    let all = json!([{"name": "all", "kind": "series", "min_time": i64::MIN, "max_time": i64::MAX,
        "matchers": [[RE, "__name__", ".+"]]}]);

    // Request limits: at the limit passes, beyond fails with RESOURCE_EXHAUSTED.
    let n = want.len().to_string();
    let s = Store::start(&cfg, &["--store.limits.request-series", &n], tmp.path().join("a.log"));
    assert_series("at limit", &got_series(&s.query(&py, &all)["all"]), &want, i64::MIN, i64::MAX);
    drop(s);
    let fewer = (want.len() - 1).to_string();
    let s = Store::start(&cfg, &["--store.limits.request-series", &fewer], tmp.path().join("b.log"));
    let e = &s.query(&py, &all)["all"]["error"];
    assert_eq!(e["code"], "RESOURCE_EXHAUSTED", "{e}");
    assert!(e["details"].as_str().unwrap().contains("series"), "{e}");
    drop(s);
    let s =
        Store::start(&cfg, &["--store.limits.request-samples", &(samples - 1).to_string()], tmp.path().join("c.log"));
    assert_eq!(s.query(&py, &all)["all"]["error"]["code"], "RESOURCE_EXHAUSTED");
    drop(s);

    // --min-time/--max-time: only the blocks overlapping the window, and only its samples.
    let metas = block_ranges(&data);
    assert!(metas.len() >= 3, "{metas:?}");
    let (lo, hi) = (metas[1].0, metas[1].1 - 1);
    let rfc = |ms: i64| {
        chrono::DateTime::from_timestamp_millis(ms).unwrap().to_rfc3339_opts(chrono::SecondsFormat::Millis, true)
    };
    let s = Store::start(&cfg, &["--min-time", &rfc(lo), "--max-time", &rfc(hi)], tmp.path().join("d.log"));
    let res = s.query(&py, &json!([{"name": "info", "kind": "info"}, all[0].clone()]));
    assert_eq!((res["info"]["min_time"].as_i64().unwrap(), res["info"]["max_time"].as_i64().unwrap()), (lo, hi));
    assert_series("window", &got_series(&res["all"]), &want, lo, hi);
    drop(s);

    // Info fails (UNAVAILABLE) until the first sync: a bucket that cannot be listed (an S3 endpoint
    // nobody listens on) keeps the store healthy but unready.
    let broken = tmp.path().join("broken.yml");
    let nobody = free_port();
    std::fs::write(
        &broken,
        format!(
            "type: S3\nconfig:\n  bucket: none\n  endpoint: 127.0.0.1:{nobody}\n  insecure: true\n  \
             access_key: x\n  secret_key: y\n  region: us-east-1\n"
        ),
    )
    .unwrap();
    let (grpc_port, http_port) = (free_port(), free_port());
    let grpc = format!("127.0.0.1:{grpc_port}");
    let child = Command::new(strata_bin())
        .args(["store", "--objstore.config-file", broken.to_str().unwrap(), "--grpc-address", &grpc])
        .args(["--http-address", &format!("127.0.0.1:{http_port}")])
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .unwrap();
    let _store = Daemon(child);
    let deadline = Instant::now() + Duration::from_secs(30);
    while http_get(http_port, "/-/healthy").0 != 200 {
        assert!(Instant::now() < deadline, "strata store did not start");
        std::thread::sleep(Duration::from_millis(100));
    }
    assert_eq!(http_get(http_port, "/-/ready").0, 503);
    let res = python_client(&py, &grpc, &json!([{"name": "info", "kind": "info"}])).unwrap();
    assert_eq!(res["info"]["error"]["code"], "UNAVAILABLE", "{res}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn up_serves_its_bucket_and_heads_over_the_storeapi() {
    let Some(py) = python() else { return };
    let tmp = tempfile::tempdir().unwrap();
    let data = tmp.path().join("data");
    // A block in the bucket (no external labels) ...
    let bucket = engine::bucket::Bucket::local(data.join("bucket")).unwrap();
    let old = Labels::from_pairs([("__name__", "old"), ("job", "x")]);
    let old_ts: Vec<i64> = (0..200).map(|i| 1_700_000_000_000 + i * 15_000).collect();
    let old_vs: Vec<f64> = (0..200).map(|i| f64::from(i) * 1.5).collect();
    let mut o = engine::BlockWriterOptions::new(ulid::Ulid::new(), old_ts[0], old_ts[199] + 1);
    o.source = "test".into();
    let mut w = engine::BlockWriter::new(bucket, o).unwrap();
    w.append_series(&old, &old_ts, &old_vs).await.unwrap();
    w.finish().await.unwrap();
    // ... and samples written to the head.
    let (http, grpc) = (format!("127.0.0.1:{}", free_port()), format!("127.0.0.1:{}", free_port()));
    let log = tmp.path().join("up.log");
    let child = Command::new(strata_bin())
        .args(["up", "--data", data.to_str().unwrap(), "--http-address", &http, "--grpc-address", &grpc])
        .stdout(Stdio::null())
        .stderr(std::fs::File::create(&log).unwrap())
        .spawn()
        .unwrap();
    let _up = Daemon(child);
    let port: u16 = http.rsplit(':').next().unwrap().parse().unwrap();
    let deadline = Instant::now() + Duration::from_secs(60);
    while http_get(port, "/-/ready").0 != 200 {
        assert!(Instant::now() < deadline, "strata up did not get ready");
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    let now = chrono::Utc::now().timestamp_millis();
    let new = Labels::from_pairs([("__name__", "new"), ("job", "y")]);
    let samples: Vec<(i64, f64)> = (0..130).map(|i| (now - 130_000 + i * 1000, f64::from(i as i32))).collect();
    let body = ingest::remote_write::encode_write_request(&ingest::remote_write::to_write_request(&[(
        new.clone(),
        samples.clone(),
    )]))
    .unwrap();
    let (status, text) = post_remote_write(&format!("http://{http}/api/v1/write"), body).await;
    assert!((200..300).contains(&status), "{status}: {text}");

    let all = |name: &str, without: &[&str]| {
        json!({"name": name, "kind": "series", "min_time": i64::MIN,
        "max_time": i64::MAX, "matchers": [[RE, "__name__", ".+"]], "without_replica_labels": without})
    };
    let requests = json!([{"name": "info", "kind": "info"}, all("all", &[]), all("no_tenant", &["tenant_id"])]);
    let res = tokio::task::spawn_blocking(move || python_client(&py, &grpc, &requests)).await.unwrap();
    let res = res.unwrap_or_else(|e| panic!("{e}\nup log:\n{}", std::fs::read_to_string(&log).unwrap_or_default()));
    let info = &res["info"];
    assert_eq!(info["component_type"], "receive");
    assert_eq!(info["label_sets"], json!([[], [["tenant_id", "default-tenant"]]]));
    // From the block's first sample; the head keeps growing.
    assert_eq!((info["min_time"].as_i64().unwrap(), info["max_time"].as_i64().unwrap()), (old_ts[0], i64::MAX));
    let mut with_tenant = new.clone();
    with_tenant.set("tenant_id", "default-tenant");
    let old_samples: Vec<(i64, f64)> = old_ts.iter().copied().zip(old_vs.iter().copied()).collect();
    let want: Expected = BTreeMap::from([(old.clone(), old_samples.clone()), (with_tenant, samples.clone())]);
    assert_series("up all", &got_series(&res["all"]), &want, i64::MIN, i64::MAX);
    let want: Expected = BTreeMap::from([(old, old_samples), (new, samples)]);
    assert_series("up without tenant", &got_series(&res["no_tenant"]), &want, i64::MIN, i64::MAX);
}
