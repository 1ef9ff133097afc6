//! End to end: the querier (`strata query --endpoint ...`) in front of real store gateways
//! (`strata store`) over buckets converted from promtool-made TSDB blocks, all real binaries on free
//! loopback ports: an HA pair deduplicated (the gap of one replica filled by the other), partial
//! response when an endpoint goes down, and promtool's answers through the StoreAPI equal to those
//! of `strata query` reading the bucket itself. Needs promtool (FAILS without it under CI=true).
#![allow(clippy::unwrap_used, clippy::expect_used)]

mod common;

use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::{Duration, Instant};

use common::*;
use serde_json::{Value, json};

/// Start of the data (unix seconds); two hours of samples.
const T0: i64 = 1_700_000_000;
const HOURS: i64 = 2;
/// Replica a has no samples in [GAP_FROM, GAP_TO) (seconds after T0).
const GAP_FROM: i64 = 40 * 60;
const GAP_TO: i64 = 70 * 60;

/// The gauge's value at second `s` after T0 (the same for both replicas).
fn temp(s: i64) -> f64 {
    20.0 + (s % 600) as f64 / 8.0
}

/// OpenMetrics text of one replica: `ha_temp{room="lab"}` every 15 s starting at `offset` s,
/// without the samples in `gap`, and a counter `ha_requests_total{job="api"}`.
fn openmetrics(offset: i64, gap: Option<(i64, i64)>) -> String {
    let mut temp_lines = String::from("# TYPE ha_temp gauge\n");
    let mut req_lines = String::from("# TYPE ha_requests counter\n");
    let mut s = offset;
    while s < HOURS * 3600 {
        if gap.is_none_or(|(a, b)| s < a || s >= b) {
            temp_lines.push_str(&format!("ha_temp{{room=\"lab\"}} {} {}\n", temp(s), T0 + s));
            req_lines.push_str(&format!("ha_requests_total{{job=\"api\"}} {} {}\n", s * 2, T0 + s));
        }
        s += 15;
    }
    format!("{temp_lines}{req_lines}# EOF\n")
}

/// A bucket holding one replica's blocks, converted with external label `replica="<name>"`.
fn replica_bucket(promtool: &Path, dir: &Path, name: &str, offset: i64, gap: Option<(i64, i64)>) -> PathBuf {
    let work = dir.join(format!("work-{name}"));
    let tsdb = work.join("tsdb");
    std::fs::create_dir_all(&tsdb).unwrap();
    promtool_blocks(promtool, &openmetrics(offset, gap), &work, &tsdb);
    let cfg = fs_bucket_config(&work, &dir.join(format!("bucket-{name}")));
    let label = format!("replica=\"{name}\"");
    strata_ok(&[
        "tsdb",
        "convert",
        "--tsdb.path",
        tsdb.to_str().unwrap(),
        "--objstore.config-file",
        cfg.to_str().unwrap(),
        "--label",
        &label,
    ]);
    cfg
}

/// A running `strata store` and its gRPC address.
struct Store {
    daemon: Daemon,
    grpc: String,
}

impl Store {
    async fn start(cfg: &Path, log: &Path) -> Store {
        let grpc = format!("127.0.0.1:{}", free_port());
        let http = format!("127.0.0.1:{}", free_port());
        let mut cmd = Command::new(strata_bin());
        cmd.args(["store", "--objstore.config-file", cfg.to_str().unwrap(), "--grpc-address", &grpc])
            .args(["--http-address", &http])
            .env("RUST_LOG", "info");
        let daemon = start_daemon(&mut cmd, &format!("http://{http}"), log).await;
        Store { daemon, grpc }
    }
}

#[tokio::test]
async fn ha_pair_deduplicated_and_partial_response() {
    let Some(promtool) = peer("promtool") else { return };
    let dir = tempfile::tempdir().unwrap();
    // Replica a scrapes on the minute marks and misses 40..70 min; replica b scrapes 7 s later.
    let cfg_a = replica_bucket(&promtool, dir.path(), "a", 0, Some((GAP_FROM, GAP_TO)));
    let cfg_b = replica_bucket(&promtool, dir.path(), "b", 7, None);
    let s1 = Store::start(&cfg_a, &dir.path().join("store-a.log")).await;
    let s2 = Store::start(&cfg_b, &dir.path().join("store-b.log")).await;
    let q = Strata::start(
        &["query", "--endpoint", &s1.grpc, "--endpoint", &s2.grpc, "--query.replica-label", "replica"],
        &dir.path().join("query.log"),
    )
    .await;
    let (start, end) = (T0, T0 + HOURS * 3600 - 60);
    let range = |expr: &str, extra: &str| {
        format!("/api/v1/query_range?query={}&start={start}&end={end}&step=60{extra}", urlencode(expr))
    };

    // Deduplicated: one series without the replica label and a point at every step, the gap of a
    // filled by b. Each step's value is a recent sample of one of the replicas.
    let (st, v) = q.get(&range("ha_temp", "")).await;
    assert_eq!(st, 200, "{v}\n{}", q.log_text());
    let m = matrix(&v);
    assert_eq!(m.len(), 1, "{v}");
    assert_eq!(m[0].0, json!({"__name__": "ha_temp", "room": "lab"}));
    let steps = ((end - start) / 60 + 1) as usize;
    assert_eq!(m[0].1.len(), steps, "every step has a value");
    for &(t, val) in &m[0].1 {
        let s = t / 1000 - T0;
        // the sample in use is at most 5 minutes old, from replica a (on 15 s marks) or b (7 s later)
        let ok = (0..300).any(|age| {
            let at = s - age;
            at >= 0 && (at % 15 == 0 || at % 15 == 7) && temp(at) == val
        });
        assert!(ok, "value {val} at {s} s is no recent sample of either replica");
    }
    // Raw samples: across the gap the data comes from b, nowhere is a hole of more than 4 scrapes.
    let (_, v) = q.get(&format!("/api/v1/query?query={}&time={}", urlencode("ha_temp[3h]"), end + 60)).await;
    let raw = matrix(&v);
    assert_eq!(raw.len(), 1, "{v}");
    let ts: Vec<i64> = raw[0].1.iter().map(|p| p.0 / 1000 - T0).collect();
    assert!(ts.windows(2).all(|w| w[1] - w[0] <= 60), "holes in {ts:?}");
    assert!(ts.iter().any(|s| (GAP_FROM..GAP_TO).contains(s) && s % 15 == 7), "b fills the gap");
    assert!(ts[0] <= 7 && *ts.last().unwrap() >= HOURS * 3600 - 15, "{ts:?}");

    // dedup=false: both replicas, a with its gap (no value in the gap's middle).
    let (_, v) = q.get(&range("ha_temp", "&dedup=false")).await;
    let m = matrix(&v);
    let names: Vec<&Value> = m.iter().map(|s| &s.0["replica"]).collect();
    assert_eq!(names, [&json!("a"), &json!("b")], "{v}");
    // (b's first sample is 7 s after the first step)
    assert!(m[0].1.len() < steps - 1 && m[1].1.len() == steps - 1, "{} {}", m[0].1.len(), m[1].1.len());
    assert!(m[0].1.iter().all(|p| !(GAP_FROM + 300..GAP_TO).contains(&(p.0 / 1000 - T0))));

    // Metadata deduplicated too, and the counter's rate over the pair.
    let (_, v) = q.get(&format!("/api/v1/series?match[]=ha_temp&start={start}&end={end}")).await;
    assert_eq!(v["data"], json!([{"__name__": "ha_temp", "room": "lab"}]));
    let (_, v) = q.get(&format!("/api/v1/series?match[]=ha_temp&start={start}&end={end}&dedup=false")).await;
    assert_eq!(v["data"].as_array().unwrap().len(), 2);
    let (_, v) = q.get("/api/v1/labels").await;
    assert_eq!(v["data"], json!(["__name__", "job", "room"]));
    let (_, v) = q.get("/api/v1/label/replica/values?dedup=false").await;
    assert_eq!(v["data"], json!(["a", "b"]));
    let (_, v) =
        q.get(&format!("/api/v1/query?query={}&time={}", urlencode("rate(ha_requests_total[5m])"), T0 + 3600)).await;
    let r = parse_go_float(v["data"]["result"][0]["value"][1].as_str().unwrap());
    assert!((r - 2.0).abs() < 1e-9, "{v}");
    let (_, v) = q.get("/api/v1/stores").await;
    let stores = v["data"]["store"].as_array().unwrap();
    let mut sets: Vec<&Value> = stores.iter().map(|s| &s["labelSets"]).collect();
    sets.sort_by_key(|s| s.to_string());
    assert_eq!(sets, [&json!([{"replica": "a"}]), &json!([{"replica": "b"}])], "{v}");

    // Partial response: store b goes away. With partial response (the default) the answer is
    // replica a's data plus a warning naming b; with partial_response=false the request fails.
    let down = s2.grpc.clone();
    drop(s2.daemon);
    let deadline = Instant::now() + Duration::from_secs(30);
    let warned = loop {
        let (st, v) = q.get(&range("ha_temp", "")).await;
        assert_eq!(st, 200, "{v}");
        let warnings = v["warnings"].as_array().cloned().unwrap_or_default();
        if warnings.iter().any(|w| w.as_str().unwrap().contains(&down)) {
            break v;
        }
        assert!(Instant::now() < deadline, "no warning about {down}: {v}");
        tokio::time::sleep(Duration::from_millis(200)).await;
    };
    let m = matrix(&warned);
    assert_eq!(m.len(), 1);
    assert!(m[0].1.len() < steps, "only replica a's data, with its gap");
    let (st, v) = q.get(&range("ha_temp", "&partial_response=false")).await;
    assert_eq!((st, &v["status"]), (500, &json!("error")), "{v}");
    assert!(v["error"].as_str().unwrap().contains(&down), "{v}");
    let (st, v) = q.get(&format!("/api/v1/labels?partial_response=false&start={start}&end={end}")).await;
    assert_eq!(st, 422, "{v}");
    // The stores page shows it down.
    let deadline = Instant::now() + Duration::from_secs(30);
    loop {
        let (_, v) = q.get("/api/v1/stores").await;
        let all: Vec<Value> =
            v["data"].as_object().unwrap().values().flat_map(|l| l.as_array().unwrap().clone()).collect();
        if all.iter().any(|s| s["name"] == json!(down) && s["lastError"].is_string()) {
            break;
        }
        assert!(Instant::now() < deadline, "{down} not shown down: {v}");
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    drop(s1);
}

#[tokio::test]
async fn promtool_through_the_storeapi_equals_the_bucket_directly() {
    let Some(promtool) = peer("promtool") else { return };
    let dir = tempfile::tempdir().unwrap();
    let cfg = replica_bucket(&promtool, dir.path(), "a", 0, Some((GAP_FROM, GAP_TO)));
    let store = Store::start(&cfg, &dir.path().join("store.log")).await;
    let via_store = Strata::start(&["query", "--endpoint", &store.grpc], &dir.path().join("q1.log")).await;
    let direct =
        Strata::start(&["query", "--objstore.config-file", cfg.to_str().unwrap()], &dir.path().join("q2.log")).await;
    let (start, end) = (T0.to_string(), (T0 + HOURS * 3600).to_string());
    let exprs = [
        "ha_temp",
        "rate(ha_requests_total[5m])",
        "sum by (replica) (increase(ha_requests_total[10m]))",
        "max_over_time(ha_temp[7m]) - min_over_time(ha_temp[7m])",
        "count_over_time({__name__=~\"ha_.*\"}[3m])",
    ];
    for e in exprs {
        let run = |base: &str| {
            let out = Command::new(&promtool)
                .args(["query", "range", "--start", &start, "--end", &end, "--step", "45s", base, e])
                .output()
                .unwrap();
            assert!(out.status.success(), "promtool {e}: {}", String::from_utf8_lossy(&out.stderr));
            String::from_utf8(out.stdout).unwrap()
        };
        let (a, b) = (run(&via_store.base), run(&direct.base));
        assert!(a.lines().count() > 10, "{e}: {a}");
        assert_eq!(a, b, "{e}");
        let inst = |base: &str| {
            let out = Command::new(&promtool)
                .args(["query", "instant", "--time", &(T0 + 3000).to_string(), base, e])
                .output()
                .unwrap();
            String::from_utf8(out.stdout).unwrap()
        };
        assert_eq!(inst(&via_store.base), inst(&direct.base), "{e}");
    }
    let series = |base: &str| {
        let out = Command::new(&promtool)
            .args(["query", "series", "--match", "{__name__=~\"ha_.*\"}", "--start", &start, "--end", &end, base])
            .output()
            .unwrap();
        String::from_utf8(out.stdout).unwrap()
    };
    let s = series(&via_store.base);
    assert!(s.contains("replica=\"a\""), "{s}");
    assert_eq!(s, series(&direct.base));
}

/// `strata compact --deduplication.replica-label replica --deduplication.func penalty` keeps the
/// same samples as the querier's penalty deduplication of the same HA pair (one block per replica;
/// both use `engine::dedup`, here through their whole real paths: StoreAPI, proxy and merge on one
/// side, the compactor's block merge on the other).
#[tokio::test]
async fn compactor_penalty_dedup_keeps_the_querier_s_samples() {
    let Some(promtool) = peer("promtool") else { return };
    let dir = tempfile::tempdir().unwrap();
    // The pair as above, cut before midnight (T0 + 6400 s) so that each replica is one 2h block.
    let midnight = T0 + 6400;
    let before_midnight = |text: String| -> String {
        text.lines()
            .filter(|l| l.starts_with('#') || l.rsplit(' ').next().unwrap().parse::<i64>().unwrap() < midnight)
            .map(|l| format!("{l}\n"))
            .collect()
    };
    let both = dir.path().join("bucket-both");
    let mut stores = Vec::new();
    for (name, offset, gap) in [("a", 0, Some((GAP_FROM, GAP_TO))), ("b", 7, None)] {
        let work = dir.path().join(format!("work-{name}"));
        let tsdb = work.join("tsdb");
        std::fs::create_dir_all(&tsdb).unwrap();
        promtool_blocks(&promtool, &before_midnight(openmetrics(offset, gap)), &work, &tsdb);
        let cfg = fs_bucket_config(&work, &dir.path().join(format!("bucket-{name}")));
        let replica = format!("replica=\"{name}\"");
        let cfg_s = cfg.to_str().unwrap();
        strata_ok(
            &["tsdb", "convert", "--tsdb.path", tsdb.to_str().unwrap(), "--objstore.config-file", cfg_s]
                .into_iter()
                .chain(["--label", "cluster=\"c1\"", "--label", &replica])
                .collect::<Vec<_>>(),
        );
        copy_dir(&dir.path().join(format!("bucket-{name}")), &both);
        stores.push(Store::start(&cfg, &dir.path().join(format!("store-{name}.log"))).await);
    }
    let q = Strata::start(
        &["query", "--endpoint", &stores[0].grpc, "--endpoint", &stores[1].grpc, "--query.replica-label=replica"],
        &dir.path().join("query.log"),
    )
    .await;

    let cfg = fs_bucket_config(dir.path(), &both);
    compact_now_with(cfg.to_str().unwrap(), &["--deduplication.replica-label=replica", "--deduplication.func=penalty"]);
    let blocks: Vec<PathBuf> = std::fs::read_dir(&both).unwrap().map(|e| e.unwrap().path()).collect();
    assert_eq!(blocks.len(), 1, "{blocks:?}");
    let meta: Value = serde_json::from_str(&std::fs::read_to_string(blocks[0].join("meta.json")).unwrap()).unwrap();
    assert_eq!(meta["thanos"]["labels"], json!({"cluster": "c1"}));
    let compacted =
        Strata::start(&["query", "--objstore.config-file", cfg.to_str().unwrap()], &dir.path().join("q2.log")).await;

    let raw = format!("/api/v1/query?query={}&time={midnight}", urlencode("{__name__=~\"ha_.+\"}[3h]"));
    let (_, v) = q.get(&raw).await;
    let want = matrix(&v);
    let (_, v) = compacted.get(&raw).await;
    let got = matrix(&v);
    assert_eq!(want.len(), 2, "{v}");
    assert_eq!(want[0].0, json!({"__name__": "ha_requests_total", "cluster": "c1", "job": "api"}));
    let bits = |m: &[(Value, Vec<(i64, f64)>)]| -> Vec<(String, Vec<(i64, u64)>)> {
        m.iter().map(|(l, p)| (l.to_string(), p.iter().map(|(t, v)| (*t, v.to_bits())).collect())).collect()
    };
    assert_eq!(bits(&got), bits(&want), "compacted samples differ from the querier's deduplication");
    // Penalty, not chain: b fills a's gap, elsewhere one replica only.
    let ts: Vec<i64> = want[1].1.iter().map(|p| p.0 / 1000 - T0).collect();
    assert!(ts.iter().any(|s| (GAP_FROM..GAP_TO).contains(s)), "the gap is filled");
    let (_, v) = q.get(&format!("{raw}&dedup=false")).await;
    let pair: usize = matrix(&v).iter().filter(|s| s.0["__name__"] == "ha_temp").map(|s| s.1.len()).sum();
    assert!(ts.len() * 3 < pair * 2, "one replica at a time: {} of {pair} samples", ts.len());
    compacted.stop().await;
    q.stop().await;
}

/// Writes one raw block of `series` (each sampled every 15 s over [t0, t0 + 50 min)) into the
/// bucket at `dir`.
async fn write_block(dir: &Path, t0: i64, series: &[engine::Labels]) {
    let bucket = engine::bucket::Bucket::local(dir).unwrap();
    let ts: Vec<i64> = (0..200).map(|i| t0 + i * 15_000).collect();
    let vs: Vec<f64> = (0..200).map(f64::from).collect();
    let mut o = engine::BlockWriterOptions::new(ulid::Ulid::new(), ts[0], ts[199] + 1);
    o.source = "test".into();
    let mut w = engine::BlockWriter::new(bucket, o).unwrap();
    for l in series {
        w.append_series(l, &ts, &vs).await.unwrap();
    }
    w.finish().await.unwrap();
}

/// The querier keeps a store gateway's label answers between its Info rounds; a block the store
/// syncs later (here one inside the time range the store already covers, so only the per-block
/// TSDB infos of its Info change) makes the querier ask again.
#[tokio::test]
async fn label_answers_follow_the_store_s_blocks() {
    let dir = tempfile::tempdir().unwrap();
    let bdir = dir.path().join("bucket");
    let t0 = T0 * 1000;
    let l = |pairs: &[(&str, &str)]| engine::Labels::from_pairs(pairs.iter().copied());
    write_block(&bdir, t0, &[l(&[("__name__", "a"), ("job", "x")])]).await;
    let cfg = fs_bucket_config(dir.path(), &bdir);
    let (grpc, http) = (format!("127.0.0.1:{}", free_port()), format!("127.0.0.1:{}", free_port()));
    let mut cmd = Command::new(strata_bin());
    cmd.args(["store", "--objstore.config-file", cfg.to_str().unwrap(), "--grpc-address", &grpc]).args([
        "--http-address",
        &http,
        "--sync-block-duration",
        "1s",
    ]);
    let _store = start_daemon(&mut cmd, &format!("http://{http}"), &dir.path().join("store.log")).await;
    let q = Strata::start(&["query", "--endpoint", &grpc, "--endpoint.info-timeout", "1s"], &dir.path().join("q.log"))
        .await;
    for _ in 0..3 {
        let (st, v) = q.get("/api/v1/labels").await;
        assert_eq!(st, 200, "{v}");
        assert_eq!(v["data"], json!(["__name__", "job"]));
        let (_, v) = q.get("/api/v1/label/job/values").await;
        assert_eq!(v["data"], json!(["x"]));
    }
    // A second block over the same 50 minutes with a new label name and job value.
    write_block(&bdir, t0, &[l(&[("__name__", "b"), ("job", "y"), ("zone", "z1")])]).await;
    let deadline = Instant::now() + Duration::from_secs(30);
    loop {
        let (_, names) = q.get("/api/v1/labels").await;
        let (_, jobs) = q.get("/api/v1/label/job/values").await;
        if names["data"] == json!(["__name__", "job", "zone"]) && jobs["data"] == json!(["x", "y"]) {
            break;
        }
        assert!(Instant::now() < deadline, "the new block's labels never showed: {names} {jobs}\n{}", q.log_text());
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
}
