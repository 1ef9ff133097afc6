//! End to end: `strata receive` over gRPC, real binaries on free loopback ports. Receivers serve the
//! StoreAPI for their tenant heads and the blocks they cut, and forward to their hashring peers over
//! `thanos.WriteableStore/RemoteWrite`:
//! * an HA pair (`replica="a"` / `"b"`), `a` stopped for a third of the writes and restarted:
//!   `strata query --query.replica-label replica` gives one series holding every sample;
//! * a store gateway over the blocks a receiver cut, plus that receiver (holding the newest samples
//!   in its head): a range over the block boundaries gives every sample once;
//! * three receivers in a hashring with replication factor 2: every series is on exactly two of
//!   them, and a deduplicating querier over all three gives each series once;
//! * tenants through the StoreAPI, checked with the Python grpcio client (no Strata code): Info
//!   lists one label set per tenant, the tenant label selects a tenant, the `thanos-tenant`
//!   metadata does not filter (as in Thanos, where tenancy is enforced by the querier's matcher),
//!   and `--store.limits.request-series` holds.
#![allow(clippy::unwrap_used, clippy::expect_used)]

mod common;

use std::collections::BTreeMap;
use std::path::Path;
use std::time::{Duration, Instant};

use common::*;
use engine::Labels;
use engine::bucket::Bucket;
use serde_json::{Value, json};

/// Start of the data (ms; a multiple of 10 minutes, so 10 min blocks start on it).
const T0: i64 = 1_699_999_800_000;
/// Sample interval (ms).
const STEP: i64 = 15_000;

/// Remote-writes `series` to the receiver at `rw` (tenant header when given): status and text.
async fn write(rw: &str, tenant: Option<&str>, series: &[(Labels, Vec<(i64, f64)>)]) -> (u16, String) {
    use ingest::remote_write::{encode_write_request, post, to_write_request};
    let body = encode_write_request(&to_write_request(series)).unwrap();
    let mut req = post(&reqwest::Client::new(), &format!("http://{rw}/api/v1/receive"), body);
    if let Some(t) = tenant {
        req = req.header("THANOS-TENANT", t);
    }
    let r = req.send().await.unwrap();
    (r.status().as_u16(), r.text().await.unwrap())
}

/// Starts `strata query` over `endpoints` with extra flags.
async fn querier(dir: &Path, name: &str, endpoints: &[&str], extra: &[&str]) -> Strata {
    let mut args = vec!["query"];
    for e in endpoints {
        args.extend(["--endpoint", e]);
    }
    args.extend(extra);
    Strata::start(&args, &dir.join(format!("query-{name}.log"))).await
}

/// An instant query's vector as `labels JSON -> value`.
async fn instant(q: &Strata, expr: &str, at_ms: i64, extra: &str) -> BTreeMap<String, f64> {
    let path = format!("/api/v1/query?query={}&time={}{extra}", urlencode(expr), at_ms as f64 / 1000.0);
    let (st, v) = q.get(&path).await;
    assert_eq!(st, 200, "{v}");
    assert_eq!(v["data"]["resultType"], "vector", "{v}");
    v["data"]["result"]
        .as_array()
        .unwrap()
        .iter()
        .map(|r| (r["metric"].to_string(), parse_go_float(r["value"][1].as_str().unwrap())))
        .collect()
}

/// A range query's matrix, at STEP resolution over `[from, to]` (ms).
async fn range(q: &Strata, expr: &str, from: i64, to: i64) -> Vec<(Value, Vec<(i64, f64)>)> {
    let path = format!(
        "/api/v1/query_range?query={}&start={}&end={}&step={}",
        urlencode(expr),
        from / 1000,
        to / 1000,
        STEP / 1000
    );
    let (st, v) = q.get(&path).await;
    assert_eq!(st, 200, "{v}");
    matrix(&v)
}

/// The value written at sample `i`.
fn value(i: i64) -> f64 {
    100.0 + (i % 40) as f64 * 0.25 + (i / 40) as f64
}

/// Samples `from..to` (indexes) of the test series.
fn samples(from: i64, to: i64) -> Vec<(i64, f64)> {
    (from..to).map(|i| (T0 + i * STEP, value(i))).collect()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn ha_pair_of_receivers_deduplicates_without_the_gap() {
    let tmp = tempfile::tempdir().unwrap();
    let cfg = fs_bucket_config(tmp.path(), &tmp.path().join("bucket"));
    let mut a = Receiver::new(tmp.path(), "a", &cfg, &["--label", "replica=\"a\""]);
    let mut b = Receiver::new(tmp.path(), "b", &cfg, &["--label", "replica=\"b\""]);
    a.start().await;
    b.start().await;
    let ha = Labels::from_pairs([("__name__", "ha_temp"), ("room", "lab")]);
    // 30 batches of 8 samples to both; `a` is down for batches 10..20 (samples 80..160): its
    // shutdown cuts its head into a block, which it serves again after the restart
    for batch in 0..30i64 {
        if batch == 10 {
            a.stop().await;
        }
        if batch == 20 {
            a.start().await;
        }
        let series = [(ha.clone(), samples(batch * 8, batch * 8 + 8))];
        let targets = if (10..20).contains(&batch) { vec![&b] } else { vec![&a, &b] };
        for r in targets {
            let (st, msg) = write(&r.rw, None, &series).await;
            assert_eq!(st, 200, "batch {batch}: {msg}\n{}", r.log_text());
        }
    }
    let q = querier(tmp.path(), "ha", &[&a.grpc, &b.grpc], &["--query.replica-label", "replica"]).await;
    let end = T0 + 239 * STEP;

    // dedup: one series without the replica label and a value at every step. Penalty dedup
    // (Thanos's) switching from `a` to `b` at the gap skips `b`'s samples closer than twice the
    // scrape interval to the last one taken, so at the two steps after the switch the value is the
    // last sample taken (at most 2 samples old); everywhere else it is the sample of that step.
    let m = range(&q, "ha_temp", T0, end).await;
    assert_eq!(m.len(), 1, "{m:?}\n{}", q.log_text());
    assert_eq!(m[0].0, json!({"__name__": "ha_temp", "room": "lab", "tenant_id": "default-tenant"}));
    assert_eq!(m[0].1.len(), 240, "a value at every step: {:?}", m[0].1);
    for (i, &(t, v)) in m[0].1.iter().enumerate() {
        let i = i as i64;
        assert_eq!(t, T0 + i * STEP);
        let recent = if (80..82).contains(&i) { i - 2..=i } else { i..=i };
        assert!(recent.clone().any(|j| value(j) == v), "step {i}: {v} is none of the samples {recent:?}");
    }
    // without dedup: the two replicas, `a` missing the 80 samples written while it was down
    let raw = instant(&q, "count_over_time(ha_temp[1h])", end, "&dedup=false").await;
    let by_replica: BTreeMap<String, f64> = raw
        .iter()
        .map(|(l, v)| (serde_json::from_str::<Value>(l).unwrap()["replica"].as_str().unwrap().to_string(), *v))
        .collect();
    assert_eq!(by_replica, BTreeMap::from([("a".to_string(), 160.0), ("b".to_string(), 240.0)]), "{raw:?}");
    // `a`'s data before the stop is in the block it cut on shutdown
    assert!(a.log_text().contains("heads cut on shutdown"), "{}", a.log_text());
    a.stop().await;
    b.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn store_gateway_and_receiver_answer_across_the_block_boundary() {
    let tmp = tempfile::tempdir().unwrap();
    let bucket_dir = tmp.path().join("bucket");
    let cfg = fs_bucket_config(tmp.path(), &bucket_dir);
    let mut r = Receiver::new(tmp.path(), "r", &cfg, &["--label", "site=\"x\"", "--tsdb.block-duration", "10m"]);
    r.start().await;
    let m = Labels::from_pairs([("__name__", "boundary"), ("job", "x")]);
    // 40 minutes: windows [0, 10), [10, 20), [20, 30) min are cut once the head is 15 min past
    // their start; 30..40 min stay in the head
    for batch in 0..16i64 {
        let (st, msg) = write(&r.rw, None, &[(m.clone(), samples(batch * 10, batch * 10 + 10))]).await;
        assert_eq!(st, 200, "{msg}");
    }
    let bucket = Bucket::local(&bucket_dir).unwrap();
    let deadline = Instant::now() + Duration::from_secs(60);
    while bucket.list_blocks().await.unwrap().len() < 3 {
        assert!(Instant::now() < deadline, "the receiver cut no 3 blocks\n{}", r.log_text());
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    let mut ranges = Vec::new();
    for u in bucket.list_blocks().await.unwrap() {
        let meta = bucket.read_meta(&u).await.unwrap();
        ranges.push((meta.min_time, meta.max_time));
    }
    ranges.sort();
    let min = 60_000;
    assert_eq!(ranges, vec![(T0, T0 + 10 * min), (T0 + 10 * min, T0 + 20 * min), (T0 + 20 * min, T0 + 30 * min)]);
    tokio::time::sleep(Duration::from_secs(2)).await; // the receiver re-reads the bucket after a cut

    let store_grpc = format!("127.0.0.1:{}", free_port());
    let _store = Strata::start(
        &["store", "--objstore.config-file", cfg.to_str().unwrap(), "--grpc-address", &store_grpc],
        &tmp.path().join("store.log"),
    )
    .await;
    let end = T0 + 159 * STEP;
    let both = querier(tmp.path(), "both", &[&store_grpc, &r.grpc], &[]).await;
    let series = range(&both, "boundary", T0, end).await;
    assert_eq!(series.len(), 1, "{series:?}");
    assert_eq!(series[0].1, samples(0, 160), "union over the block boundaries");
    let counts = instant(&both, "count_over_time(boundary[40m])", end, "").await;
    assert_eq!(counts.values().copied().collect::<Vec<_>>(), vec![160.0], "no sample twice: {counts:?}");
    // the store alone has the three blocks (0..30 min), the newest 10 minutes are the receiver's head
    let store_only = querier(tmp.path(), "store", &[&store_grpc], &[]).await;
    let counts = instant(&store_only, "count_over_time(boundary[40m])", end, "").await;
    assert_eq!(counts.values().copied().collect::<Vec<_>>(), vec![120.0], "{counts:?}");
    r.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn hashring_of_three_replicates_over_grpc() {
    let tmp = tempfile::tempdir().unwrap();
    let cfg = fs_bucket_config(tmp.path(), &tmp.path().join("bucket"));
    let hashrings = tmp.path().join("hashrings.json");
    let mut nodes: Vec<Receiver> = (0..3)
        .map(|i| {
            let label = format!("receive_replica=\"{i}\"");
            let extra = ["--receive.hashrings-file", hashrings.to_str().unwrap(), "--label", &label];
            let extra = extra.iter().chain(["--receive.replication-factor", "2"].iter()).copied().collect::<Vec<_>>();
            Receiver::new(tmp.path(), &format!("ring{i}"), &cfg, &extra)
        })
        .collect();
    for n in &mut nodes {
        let g = n.grpc.clone();
        n.args.extend(["--receive.local-endpoint".to_string(), g]);
    }
    // endpoints as strings and as {"address"} objects, both Thanos forms
    let ring = json!([{"hashring": "default", "endpoints": [
        nodes[0].grpc, {"address": nodes[1].grpc}, nodes[2].grpc
    ]}]);
    std::fs::write(&hashrings, ring.to_string()).unwrap();
    for n in &mut nodes {
        n.start().await;
    }
    // 30 series of 20 samples; series k enters through receiver k % 3
    for (entry, node) in nodes.iter().enumerate() {
        let series: Vec<(Labels, Vec<(i64, f64)>)> = (0..30usize)
            .filter(|k| k % 3 == entry)
            .map(|k| {
                (Labels::from_pairs([("__name__", "ring_m".to_string()), ("k", format!("{k:02}"))]), samples(0, 20))
            })
            .collect();
        let (st, msg) = write(&node.rw, Some("team-r"), &series).await;
        assert_eq!(st, 200, "{msg}\n{}", node.log_text());
    }
    let grpcs: Vec<&str> = nodes.iter().map(|n| n.grpc.as_str()).collect();
    let q = querier(tmp.path(), "ring", &grpcs, &["--query.replica-label", "receive_replica"]).await;
    let end = T0 + 19 * STEP;
    let dedup = instant(&q, "count_over_time(ring_m[10m])", end, "").await;
    assert_eq!(dedup.len(), 30, "{dedup:?}");
    assert!(dedup.values().all(|&c| c == 20.0), "{dedup:?}");
    // each series on exactly two receivers
    let raw = instant(&q, "count_over_time(ring_m[10m])", end, "&dedup=false").await;
    assert_eq!(raw.len(), 60, "{raw:?}");
    let mut copies: BTreeMap<String, Vec<String>> = BTreeMap::new();
    for l in raw.keys() {
        let v: Value = serde_json::from_str(l).unwrap();
        assert_eq!(v["tenant_id"], "team-r");
        copies.entry(v["k"].as_str().unwrap().into()).or_default().push(v["receive_replica"].as_str().unwrap().into());
    }
    assert_eq!(copies.len(), 30);
    for (k, on) in &copies {
        assert_eq!(on.len(), 2, "series {k} on {on:?}");
        assert_ne!(on[0], on[1], "series {k} on {on:?}");
    }
    // the forwards went over gRPC: every receiver answered RemoteWrite calls
    for n in &nodes {
        let metrics = reqwest::get(format!("http://{}/metrics", n.http)).await.unwrap().text().await.unwrap();
        assert!(metrics.contains(r#"strata_receive_grpc_writes_total{grpc_code="OK"}"#), "{metrics}");
    }
    for n in &mut nodes {
        n.stop().await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn tenants_through_the_storeapi_with_a_python_client() {
    let Some(py) = venv_python(&["grpc", "grpc_tools"]) else { return };
    let tmp = tempfile::tempdir().unwrap();
    let cfg = fs_bucket_config(tmp.path(), &tmp.path().join("bucket"));
    let extra = ["--label", "cluster=\"eu\"", "--store.limits.request-series", "2"];
    let mut r = Receiver::new(tmp.path(), "t", &cfg, &extra);
    r.start().await;
    let written = [(None, "default"), (Some("team-a"), "a"), (Some("team-b"), "b")];
    for (i, (tenant, job)) in written.iter().enumerate() {
        let l = Labels::from_pairs([("__name__", "tenant_m"), ("job", job)]);
        let s = samples(i as i64 * 100, i as i64 * 100 + 30);
        let (st, msg) = write(&r.rw, *tenant, &[(l, s)]).await;
        assert_eq!(st, 200, "{msg}");
    }
    const EQ: i64 = 0;
    const RE: i64 = 2;
    let all = |name: &str, matchers: Value, metadata: Value| {
        json!({"name": name, "kind": "series", "min_time": 0, "max_time": i64::MAX,
               "matchers": matchers, "metadata": metadata})
    };
    let requests = json!([
        {"name": "info", "kind": "info", "metadata": [["thanos-tenant", "team-a"]]},
        all("by_metadata", json!([[EQ, "__name__", "tenant_m"], [RE, "job", "a|default"]]), json!([["thanos-tenant", "team-a"]])),
        all("over_limit", json!([[EQ, "__name__", "tenant_m"]]), json!([])),
        all("by_label", json!([[EQ, "__name__", "tenant_m"], [EQ, "tenant_id", "team-a"]]), json!([])),
        {"name": "tenants", "kind": "label_values", "label": "tenant_id", "start": 0, "end": i64::MAX},
    ]);
    let grpc = r.grpc.clone();
    let res = tokio::task::spawn_blocking(move || python_client(&py, &grpc, &requests)).await.unwrap();
    let res = res.unwrap_or_else(|e| panic!("{e}\n{}", r.log_text()));

    let info = &res["info"];
    assert_eq!(info["component_type"], "receive");
    let mut sets: Vec<Value> = info["label_sets"].as_array().unwrap().clone();
    sets.sort_by_key(|v| v.to_string());
    let want: Vec<Value> =
        ["default-tenant", "team-a", "team-b"].iter().map(|t| json!([["cluster", "eu"], ["tenant_id", t]])).collect();
    assert_eq!(sets, want, "one label set per tenant: {info}");
    assert_eq!(info["max_time"], i64::MAX, "a live head: {info}");
    let tsdbs: Vec<i64> = info["tsdb_infos"].as_array().unwrap().iter().map(|t| t[1].as_i64().unwrap()).collect();
    let mut mins = tsdbs.clone();
    mins.sort();
    assert_eq!(mins, vec![T0, T0 + 100 * STEP, T0 + 200 * STEP], "per-tenant time ranges: {info}");

    // the tenant label selects a tenant; every sample decoded by the Python client is the one written
    let got = res["by_label"]["series"].as_array().unwrap();
    assert_eq!(got.len(), 1, "{got:?}");
    assert_eq!(
        got[0]["labels"],
        json!([["__name__", "tenant_m"], ["cluster", "eu"], ["job", "a"], ["tenant_id", "team-a"]])
    );
    let decoded: Vec<(i64, f64)> = got[0]["chunks"]
        .as_array()
        .unwrap()
        .iter()
        .flat_map(|c| {
            c.as_array().unwrap().iter().map(|p| (p[0].as_i64().unwrap(), f64::from_bits(p[1].as_u64().unwrap())))
        })
        .collect();
    assert_eq!(decoded, samples(100, 130));
    // `thanos-tenant` metadata alone selects nothing: Thanos receive serves every tenant and a Thanos
    // querier always sends the header (`default-tenant` when its client gave none)
    let mut tenants: Vec<&str> = res["by_metadata"]["series"]
        .as_array()
        .unwrap()
        .iter()
        .map(|s| s["labels"].as_array().unwrap().iter().find(|l| l[0] == "tenant_id").unwrap()[1].as_str().unwrap())
        .collect();
    tenants.sort();
    assert_eq!(tenants, vec!["default-tenant", "team-a"]);
    // --store.limits.request-series 2: three series are too many
    assert_eq!(res["over_limit"]["error"]["code"], "RESOURCE_EXHAUSTED", "{}", res["over_limit"]);
    assert_eq!(res["tenants"]["values"], json!(["default-tenant", "team-a", "team-b"]));
    r.stop().await;
}
