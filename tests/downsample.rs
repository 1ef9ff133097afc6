//! Downsampling end to end: 50 hours of 2h blocks (counters with resets, gauges) compacted and
//! downsampled by the real `strata compact`, then the same PromQL asked of the raw data
//! (`max_source_resolution=0`) and of the 5m data (`max_source_resolution=5m`), from `strata
//! query` over the bucket and from `strata query` over a `strata store` (StoreAPI). Expected
//! values are computed in this file from the generated samples, not by the code under test.
//!
//! What Thanos's downsampled answers are, and so what is asserted (ranges are whole hours at
//! hour-aligned steps, no raw sample lies on a window boundary):
//! * `max_over_time`, `min_over_time`: exact; `sum_over_time`: equal within 1e-9 relative (the
//!   sums are added in another order).
//! * `count_over_time`: the number of 5m windows (12 per hour), as Thanos (it counts samples of
//!   the count aggregate).
//! * `avg_over_time` and plain selectors read sum / count per window: with a sample every 15 s
//!   every window has 20 samples, so `avg_over_time` is the raw average (1e-9); a plain selector
//!   at `t` is the average of the raw samples of the window before `t`.
//! * `rate`, `increase`: the counter aggregate holds the reset-corrected counter at each window's
//!   last sample; the answer is asserted within 10% of the raw one (extrapolation from 12 instead
//!   of 240 samples), and `irate` exactly: the counter increase over the last two windows' last
//!   samples divided by 300 s.
//! * `resets()`: always read from raw data (the counter aggregate hides resets): equal to raw.
#![allow(clippy::unwrap_used, clippy::expect_used)]

mod common;

use std::collections::BTreeMap;
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use common::*;
use engine::{Bucket, Labels};

const TARGETS: usize = 3;
/// One day in ms.
const D: i64 = 24 * H;
/// The start of the 16-day data of the 1h tests: a multiple of 14 days.
const W: i64 = 1_700_697_600_000;
/// The external labels of the written blocks.
const REGION: [(&str, &str); 1] = [("region", "eu")];

/// `requests_total` counters (uneven increments, a reset every ~7 h, one right at a block
/// boundary) and `temperature` gauges, one sample every 15 s at 5 s past the step (never on a
/// window boundary), over 50 hours.
fn data() -> Vec<Series> {
    data_over(T0, 50 * H, STEP)
}

/// The data of [`data`] from `t0` over `span` ms, a sample every `step` ms at 5 s past it; a
/// counter reset every 1680 samples and at `t0` + 10 h.
fn data_over(t0: i64, span: i64, step: i64) -> Vec<Series> {
    let mut rng = engine::testkit::XorShift(0x5eed_1234_abcd_0001);
    let mut out = Vec::new();
    for i in 0..TARGETS {
        let inst = format!("host-{i}");
        let (mut ts, mut c, mut g) = (Vec::new(), Vec::new(), Vec::new());
        let (mut cv, mut gv) = (0.0f64, 20.0f64);
        let mut t = t0 + 5_000;
        while t < t0 + span {
            let k = (t - t0) / step;
            if k % 1680 == 1000 || t == t0 + 10 * H + 5_000 {
                cv = (rng.next_u64() % 5) as f64; // counter reset
            } else {
                cv += (rng.next_u64() % 10) as f64;
            }
            gv = ((gv + ((rng.next_u64() % 21) as f64 - 10.0) / 100.0) * 100.0).round() / 100.0;
            ts.push(t);
            c.push(cv);
            g.push(gv);
            t += step;
        }
        out.push((Labels::from_pairs([("__name__", "requests_total"), ("instance", &inst)]), ts.clone(), c));
        out.push((Labels::from_pairs([("__name__", "temperature"), ("instance", &inst)]), ts, g));
    }
    out.sort_by(|a, b| a.0.cmp(&b.0));
    out
}

/// Writes the data as 25 level-1 2h blocks (old ULIDs: past any consistency delay).
async fn write_2h_blocks(bucket: &Bucket, data: &[Series]) {
    write_blocks(bucket, data, T0, (25, 2 * H), 1, &REGION).await;
}

/// `/api/v1/query_range` answer: the series' labels and points.
async fn range_matrix(
    q: &Strata,
    expr: &str,
    start: i64,
    end: i64,
    step_s: i64,
    res: &str,
) -> Vec<(serde_json::Value, Vec<(i64, f64)>)> {
    let path = format!(
        "/api/v1/query_range?query={}&start={}&end={}&step={step_s}&max_source_resolution={res}",
        urlencode(expr),
        start / 1000,
        end / 1000
    );
    let (st, v) = q.get(&path).await;
    assert_eq!(st, 200, "{expr} ({res}): {v}\nlog:\n{}", q.log_text());
    matrix(&v)
}

/// `/api/v1/query_range` answer as instance -> [(t ms, value)].
async fn range(
    q: &Strata,
    expr: &str,
    start: i64,
    end: i64,
    step_s: i64,
    res: &str,
) -> BTreeMap<String, Vec<(i64, f64)>> {
    let m = range_matrix(q, expr, start, end, step_s, res).await;
    m.into_iter().map(|(labels, points)| (labels["instance"].as_str().unwrap().to_string(), points)).collect()
}

/// `/api/v1/query_range` answer holding one series (an aggregation without grouping): its points.
async fn one_series(q: &Strata, expr: &str, start: i64, end: i64, step_s: i64, res: &str) -> Vec<(i64, f64)> {
    let m = range_matrix(q, expr, start, end, step_s, res).await;
    assert_eq!(m.len(), 1, "{expr} ({res}): {m:?}");
    m.into_iter().next().unwrap().1
}

/// The raw samples of `name` for `inst`.
fn raw<'a>(data: &'a [Series], name: &str, inst: &str) -> (&'a [i64], &'a [f64]) {
    let s = data.iter().find(|s| s.0.get("__name__") == Some(name) && s.0.get("instance") == Some(inst)).unwrap();
    (&s.1, &s.2)
}

/// The reset-corrected counter at each raw sample (the first value, then + v or + (v - prev)).
fn corrected(vs: &[f64]) -> Vec<f64> {
    let mut out = Vec::with_capacity(vs.len());
    let mut acc = 0.0;
    for (i, &v) in vs.iter().enumerate() {
        acc = if i == 0 {
            v
        } else if v < vs[i - 1] {
            acc + v
        } else {
            acc + (v - vs[i - 1])
        };
        out.push(acc);
    }
    out
}

fn close(a: f64, b: f64, rel: f64) -> bool {
    (a - b).abs() <= rel * a.abs().max(b.abs()).max(1e-12)
}

/// Checks the answers of one querier (see the module docs).
async fn check(q: &Strata, data: &[Series]) {
    let (start, end) = (T0 + 2 * H, T0 + 46 * H);
    let step = 3600;
    let both = |expr: &'static str| async move {
        (range(q, expr, start, end, step, "0s").await, range(q, expr, start, end, step, "5m").await)
    };
    let insts: Vec<String> = (0..TARGETS).map(|i| format!("host-{i}")).collect();

    for expr in ["max_over_time(temperature[1h])", "min_over_time(temperature[1h])"] {
        let (r, d) = both(expr).await;
        assert_eq!(r, d, "{expr}");
        assert_eq!(r.len(), TARGETS);
    }
    for expr in ["sum_over_time(temperature[1h])", "avg_over_time(temperature[1h])"] {
        let (r, d) = both(expr).await;
        for i in &insts {
            assert_eq!(r[i].len(), d[i].len(), "{expr}");
            for (a, b) in r[i].iter().zip(&d[i]) {
                assert!(a.0 == b.0 && close(a.1, b.1, 1e-9), "{expr} {i}: raw {a:?} vs 5m {b:?}");
            }
        }
    }
    let (r, d) = both("count_over_time(temperature[1h])").await;
    for i in &insts {
        assert!(r[i].iter().all(|p| p.1 == 240.0), "raw count: {:?}", r[i]);
        assert!(d[i].iter().all(|p| p.1 == 12.0), "5m count is the number of windows: {:?}", d[i]);
    }
    // resets() reads raw data whatever the resolution asked.
    let (r, d) = both("resets(requests_total[3h])").await;
    assert_eq!(r, d);
    assert!(r.values().flatten().any(|p| p.1 > 0.0), "the data has resets: {r:?}");
    for expr in ["rate(requests_total[1h])", "increase(requests_total[1h])"] {
        let (r, d) = both(expr).await;
        let mut worst = 0.0f64;
        for i in &insts {
            assert_eq!(r[i].len(), d[i].len(), "{expr}");
            for (a, b) in r[i].iter().zip(&d[i]) {
                worst = worst.max((a.1 - b.1).abs() / a.1.abs().max(1e-12));
                assert!(a.0 == b.0 && close(a.1, b.1, 0.10), "{expr} {i}: raw {a:?} vs 5m {b:?}");
            }
        }
        eprintln!("{expr}: largest relative difference raw vs 5m {worst:.4}");
    }
    // irate on 5m data: the counter increase between the last samples of the last two windows.
    let d = range(q, "irate(requests_total[1h])", start, end, step, "5m").await;
    for i in &insts {
        let (ts, vs) = raw(data, "requests_total", i);
        let c = corrected(vs);
        for &(t, got) in &d[i] {
            let last = ts.partition_point(|&x| x < t) - 1;
            let prev = ts.partition_point(|&x| x < t - 300_000) - 1;
            let want = (c[last] - c[prev]) / 300.0;
            // The samples sit at the windows' end timestamps (t - 1 ms and t - 5m - 1 ms).
            assert!(close(got, want, 1e-9), "irate {i} at {t}: {got} vs {want}");
        }
    }
    // A plain selector reads sum / count: the average of the window before t.
    let d = range(q, "temperature", start, end, step, "5m").await;
    for i in &insts {
        let (ts, vs) = raw(data, "temperature", i);
        for &(t, got) in &d[i] {
            let (a, z) = (ts.partition_point(|&x| x < t - 300_000), ts.partition_point(|&x| x < t));
            let want = vs[a..z].iter().sum::<f64>() / (z - a) as f64;
            assert!(close(got, want, 1e-9), "temperature {i} at {t}: {got} vs {want}");
        }
    }
    // Aggregation operators pick the aggregate by their name as in Thanos (Prometheus puts the
    // enclosing aggregation into SelectHints.Func; `aggrsFromFunc`): `max(x)` reads each window's
    // max, `min(x)` its min, `sum(x)` its average, `count_values` its count. Raw data: the last
    // sample before t. 5m data: the window before t, [t - 5m, t).
    let at = |i: &String, t: i64, down: bool| -> Vec<f64> {
        let (ts, vs) = raw(data, "temperature", i);
        let z = ts.partition_point(|&x| x <= t);
        let a = if down { ts.partition_point(|&x| x < t - 300_000) } else { z - 1 };
        let z = if down { ts.partition_point(|&x| x < t) } else { z };
        vs[a..z].to_vec()
    };
    let fold = |v: Vec<f64>, f: fn(f64, f64) -> f64| v.into_iter().reduce(f).unwrap();
    type Rule = (&'static str, fn(Vec<f64>) -> f64);
    let rules: [Rule; 3] = [
        ("max", |v| v.into_iter().fold(f64::MIN, f64::max)),
        ("min", |v| v.into_iter().fold(f64::MAX, f64::min)),
        ("sum", |v| v.iter().sum::<f64>() / v.len() as f64),
    ];
    for (op, window) in rules {
        for (res, down) in [("0s", false), ("5m", true)] {
            let expr = format!("{op}(temperature)");
            let got = one_series(q, &expr, start, end, step, res).await;
            assert_eq!(got.len() as i64, (end - start) / H + 1, "{expr} {res}");
            for (t, v) in got {
                let per: Vec<f64> = insts.iter().map(|i| window(at(i, t, down))).collect();
                let want = match op {
                    "max" => fold(per, f64::max),
                    "min" => fold(per, f64::min),
                    _ => per.iter().sum(),
                };
                assert!(close(v, want, 1e-9), "{expr} ({res}) at {t}: {v} vs {want}");
            }
        }
    }
    let path = |res: &str| {
        format!(
            "/api/v1/query?query={}&time={}&max_source_resolution={res}",
            urlencode("count_values(\"n\", temperature)"),
            (start + 5 * H) / 1000
        )
    };
    let t = start + 5 * H;
    for (res, down) in [("0s", false), ("5m", true)] {
        let (st, v) = q.get(&path(res)).await;
        assert_eq!(st, 200, "{v}");
        let mut got = BTreeMap::new();
        for s in v["data"]["result"].as_array().unwrap() {
            got.insert(s["metric"]["n"].as_str().unwrap().to_string(), s["value"][1].as_str().unwrap().to_string());
        }
        // Raw: the temperatures themselves; 5m: the count aggregate (20 samples in each window).
        let mut want: BTreeMap<String, usize> = BTreeMap::new();
        for i in &insts {
            let w = at(i, t, down);
            let x = if down { w.len() as f64 } else { w[0] };
            *want.entry(format!("{x}")).or_default() += 1;
        }
        let want: BTreeMap<String, String> = want.into_iter().map(|(k, n)| (k, n.to_string())).collect();
        assert_eq!(got, want, "count_values ({res})");
    }

    // `auto` with a 30m step reads up to 6m: the 5m data.
    let a = range(q, "count_over_time(temperature[1h])", start, end, 1800, "auto").await;
    assert!(a.values().flatten().all(|p| p.1 == 12.0), "{a:?}");
}

/// A `strata store` over the bucket of `cfg` and a `strata query --endpoint` to it (logs in
/// `logs`: `store.log` and `query_log`), once the querier answers `count(temperature)` at
/// `time_s`; returns the store, its gRPC address and the querier.
async fn store_and_querier(
    cfg: &str,
    logs: &std::path::Path,
    query_log: &str,
    time_s: i64,
) -> (Daemon, String, Strata) {
    let (grpc_port, http_port) = (free_port(), free_port());
    let grpc = format!("127.0.0.1:{grpc_port}");
    let mut store_cmd = Command::new(strata_bin());
    store_cmd
        .args(["store", "--objstore.config-file", cfg, "--grpc-address", &grpc])
        .args(["--http-address", &format!("127.0.0.1:{http_port}")])
        .stdout(Stdio::null());
    let store = start_daemon(&mut store_cmd, &format!("http://127.0.0.1:{http_port}"), &logs.join("store.log")).await;
    let q = Strata::start(&["query", "--endpoint", &grpc], &logs.join(query_log)).await;
    let deadline = Instant::now() + Duration::from_secs(30);
    loop {
        let (_, v) = q.get(&format!("/api/v1/query?query=count(temperature)&time={time_s}")).await;
        if v["data"]["result"].as_array().is_some_and(|r| !r.is_empty()) {
            break;
        }
        assert!(Instant::now() < deadline, "querier never saw the store: {v}\n{}", q.log_text());
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    (store, grpc, q)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn downsampled_answers_match_the_raw_data_as_thanos_s_do() {
    let lb = LocalBucket::new();
    let (tmp, cfg_s, bucket) = (&lb.tmp, lb.cfg_str(), &lb.bucket);
    let data = data();
    write_2h_blocks(bucket, &data).await;
    compact_now(cfg_s);
    // The 2d raw block [T0, T0 + 48h) got its 5m block; the compacted sources are gone.
    assert_eq!(
        block_hours(bucket, T0).await,
        vec![(0, 0, 48), (0, 48, 50), (300_000, 0, 48)],
        "blocks after compaction"
    );
    strata_ok(&["tools", "bucket", "verify", "--objstore.config-file", cfg_s]);

    // The querier over the bucket.
    let q = Strata::start(&["query", "--objstore.config-file", cfg_s], &tmp.path().join("query.log")).await;
    check(&q, &data).await;
    q.stop().await;

    // The same through a store gateway and the StoreAPI.
    let (_store, grpc, q) = store_and_querier(cfg_s, tmp.path(), "query2.log", 1_700_100_000).await;
    check(&q, &data).await;
    q.stop().await;

    // The store's AggrChunks to a client sharing no code with Strata, checked against aggregates
    // computed in Python from the raw samples the store serves.
    if let Some(py) = venv_python(&["grpc", "grpc_tools"]) {
        let spec = serde_json::json!({
            "min_time": T0, "max_time": T0 + 50 * H, "resolution": 300_000,
            "matchers": [[2, "__name__", "requests_total|temperature"]],
            "batches": [[T0, T0 + 48 * H]],
            "sub_range": [T0 + 10 * H, T0 + 12 * H],
        });
        let report = python_storeapi_script(&py, "storeapi_downsampled.py", &grpc, &spec).unwrap_or_else(|e| {
            panic!("{e}\nstore log:\n{}", std::fs::read_to_string(tmp.path().join("store.log")).unwrap_or_default())
        });
        eprintln!("python check of the AggrChunks: {report}");
        assert_eq!(report["series"], 4 * 2 * TARGETS, "{report}");
        assert_eq!(report["windows"], 4 * 2 * TARGETS * 48 * 12, "{report}");
        assert_eq!(report["sub_range_series"], 2 * TARGETS, "{report}");
    }
}

/// The blocks of the bucket a reader sees (`meta.json` present, no deletion mark), their metas,
/// and the directories without `meta.json` (unfinished uploads).
async fn visible(bucket: &Bucket, dir: &std::path::Path) -> (Vec<engine::BlockMeta>, Vec<String>) {
    let mut metas = Vec::new();
    let mut partial = Vec::new();
    for e in std::fs::read_dir(dir).unwrap() {
        let p = e.unwrap().path();
        let id = p.file_name().unwrap().to_string_lossy().to_string();
        if ulid::Ulid::from_string(&id).is_err() {
            continue;
        }
        if !p.join("meta.json").exists() {
            partial.push(id);
        } else if !p.join("deletion-mark.json").exists() {
            metas.push(bucket.read_meta(&id).await.unwrap());
        }
    }
    metas.sort_by_key(|m| (m.thanos.downsample.resolution, m.min_time));
    (metas, partial)
}

/// Every raw sample of the visible raw blocks per series (duplicates across blocks dropped).
async fn raw_samples(bucket: &Bucket, metas: &[engine::BlockMeta]) -> Vec<Series> {
    let mut out: BTreeMap<Labels, BTreeMap<i64, u64>> = BTreeMap::new();
    for m in metas.iter().filter(|m| m.thanos.downsample.resolution == 0) {
        let r = engine::BlockReader::open(bucket, &m.ulid).await.unwrap();
        let ids: Vec<u32> = (0..r.index().len() as u32).collect();
        for s in r.read_samples(&ids, i64::MIN, i64::MAX).await.unwrap() {
            let e = out.entry(r.index().labels[s.series_id as usize].clone()).or_default();
            for (t, v) in s.timestamps.iter().zip(&s.values) {
                let old = e.insert(*t, v.to_bits());
                assert!(old.is_none_or(|o| o == v.to_bits()), "block {}: two values at {t}", m.ulid);
            }
        }
    }
    out.into_iter()
        .map(|(l, s)| (l, s.keys().copied().collect(), s.values().map(|b| f64::from_bits(*b)).collect()))
        .collect()
}

/// The series of a downsampled block with all their rows.
async fn aggregates(bucket: &Bucket, ulid: &str) -> Vec<(Labels, engine::AggrSeries)> {
    let r = engine::BlockReader::open(bucket, ulid).await.unwrap();
    let ids: Vec<u32> = (0..r.index().len() as u32).collect();
    let rows = r.read_aggregates(&ids, i64::MIN, i64::MAX).await.unwrap();
    rows.into_iter().map(|(id, a)| (r.index().labels[id as usize].clone(), a)).collect()
}

/// The compactor flags of the SIGKILL tests.
const QUICK: [&str; 4] =
    ["--consistency-delay=0s", "--delete-delay=0s", "--log.level=info", "--http-address=127.0.0.1:0"];

/// Runs `strata compact` with [`QUICK`]'s flags over `b` to the end.
fn compact(b: &LocalBucket) {
    compact_now_with(b.cfg_str(), &["--log.level=info"]);
}

/// Runs `strata compact` with [`QUICK`] over `b` and SIGKILLs it at the test hook's `point`.
async fn compact_killed(b: &LocalBucket, point: &str) {
    let mut cmd = Command::new(strata_bin());
    cmd.args(["compact", "--objstore.config-file", b.cfg_str()]).args(QUICK);
    compact_killed_at(&mut cmd, point, &b.tmp.path().join("killed.log")).await;
}

/// Resolution and time range (in days from [`W`]) of each block.
fn days(metas: &[engine::BlockMeta]) -> Vec<(i64, i64, i64)> {
    metas.iter().map(|m| (m.thanos.downsample.resolution, (m.min_time - W) / D, (m.max_time - W) / D)).collect()
}

/// Resolution, time range and number of source blocks of each block.
fn layout(metas: &[engine::BlockMeta]) -> Vec<(i64, i64, i64, usize)> {
    metas.iter().map(|m| (m.thanos.downsample.resolution, m.min_time, m.max_time, m.compaction.sources.len())).collect()
}

/// The bucket of a compactor killed at `point`: `tools bucket verify` passes and every raw
/// sample is there; returns the visible blocks and the unfinished uploads.
async fn while_killed(b: &LocalBucket, point: &str, data: &[Series]) -> (Vec<engine::BlockMeta>, Vec<String>) {
    let (metas, partial) = visible(&b.bucket, &b.dir).await;
    strata_ok(&["tools", "bucket", "verify", "--objstore.config-file", b.cfg_str()]);
    assert_eq!(raw_samples(&b.bucket, &metas).await, data, "{point}: raw samples while killed");
    (metas, partial)
}

/// The downsampling step to `res` that `point` (`downsample`, `downsample-files`, `downsampled`,
/// with an optional `#occurrence`) stopped: its block is there only once its meta.json is, with
/// the rows `want`; stopped between the files, the block's directory holds them but no meta.json;
/// stopped with half the series appended, nothing or a directory without meta.json (rows are
/// buffered).
async fn assert_step_stopped(
    b: &LocalBucket,
    point: &str,
    metas: &[engine::BlockMeta],
    partial: &[String],
    res: i64,
    want: &[(Labels, engine::AggrSeries)],
) {
    let made: Vec<&engine::BlockMeta> = metas.iter().filter(|m| m.thanos.downsample.resolution == res).collect();
    match point.split('#').next() {
        Some("downsampled") => {
            assert_eq!(made.len(), 1, "{point}");
            assert!(partial.is_empty(), "{point}: {partial:?}");
            assert_eq!(aggregates(&b.bucket, &made[0].ulid).await, want, "{point}");
        }
        Some("downsample-files") => {
            assert!(made.is_empty(), "{point}: {made:?}");
            assert_eq!(partial.len(), 1, "{point}: the unfinished block {partial:?}");
            for f in ["aggregates.parquet", "series.parquet"] {
                assert!(b.dir.join(&partial[0]).join(f).exists(), "{point}: {f} of {partial:?}");
            }
        }
        _ => {
            assert!(made.is_empty(), "{point}: {made:?}");
            assert!(partial.len() <= 1, "{point}: {partial:?}");
        }
    }
}

/// The rerun after a kill at `point`: the blocks of the uninterrupted run (`want_metas`, its
/// downsampled blocks' rows `want_down` in [`visible`]'s order), nothing half done, every raw
/// sample once, `tools bucket verify` passes.
async fn assert_rerun_finishes(
    b: &LocalBucket,
    point: &str,
    data: &[Series],
    want_metas: &[engine::BlockMeta],
    want_down: &[Vec<(Labels, engine::AggrSeries)>],
) {
    compact(b);
    let (metas, partial) = visible(&b.bucket, &b.dir).await;
    assert!(partial.is_empty(), "{point}: unfinished uploads left {partial:?}");
    assert_eq!(layout(&metas), layout(want_metas), "{point}: blocks after the rerun");
    let down: Vec<&engine::BlockMeta> = metas.iter().filter(|m| m.thanos.downsample.resolution > 0).collect();
    assert_eq!(down.len(), want_down.len(), "{point}: downsampled blocks after the rerun");
    for (m, want) in down.iter().zip(want_down) {
        assert_eq!(&aggregates(&b.bucket, &m.ulid).await, want, "{point}: block {} after the rerun", m.ulid);
    }
    assert_eq!(raw_samples(&b.bucket, &metas).await, data, "{point}: raw samples after the rerun");
    strata_ok(&["tools", "bucket", "verify", "--objstore.config-file", b.cfg_str()]);
}

/// SIGKILL while downsampling, at every downsampling pause point of the compactor's test hook,
/// then a rerun: while killed, readers (`tools bucket verify`, the engine's block reader) see only
/// complete blocks and every raw sample; after the rerun the bucket holds exactly the blocks of an
/// uninterrupted run, its 5m block with the same aggregates, and every raw sample once.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sigkill_while_downsampling_leaves_no_partial_block_and_the_rerun_finishes_it() {
    let data = data();
    // The uninterrupted run.
    let b = LocalBucket::new();
    write_2h_blocks(&b.bucket, &data).await;
    compact(&b);
    let (want_metas, _) = visible(&b.bucket, &b.dir).await;
    let want_5m = aggregates(&b.bucket, &want_metas[2].ulid).await;
    assert_eq!(want_metas[2].thanos.downsample.resolution, 300_000);
    assert_eq!(want_5m.len(), data.len());

    for point in ["downsample", "downsample-files", "downsampled"] {
        let b = LocalBucket::new();
        write_2h_blocks(&b.bucket, &data).await;
        compact_killed(&b, point).await;

        // While killed: complete blocks only, every raw sample, the 5m block there only once its
        // meta.json is.
        let (metas, partial) = while_killed(&b, point, &data).await;
        assert_step_stopped(&b, point, &metas, &partial, 300_000, &want_5m).await;
        for m in &metas {
            if m.thanos.downsample.resolution > 0 {
                aggregates(&b.bucket, &m.ulid).await;
            }
        }

        // The rerun: the uninterrupted run's blocks, nothing half done left.
        assert_rerun_finishes(&b, point, &data, &want_metas, std::slice::from_ref(&want_5m)).await;
    }
}

/// SIGKILL during the 5m -> 1h step, at the three downsampling pause points, then a rerun. 16
/// days of 2d raw blocks: the first run's downsampling makes the two 5m blocks (occurrences 1 and
/// 2 of each point) and then the 1h block of the 14d 5m block (occurrence 3), so `<point>#3`
/// stops inside the 1h step. While killed: complete blocks only (`tools bucket verify`, both 5m
/// blocks whole, no 1h block before its meta.json), every raw sample; after the rerun: the blocks
/// of an uninterrupted run, the 1h (and 5m) aggregates equal to its rows, every raw sample once.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sigkill_while_downsampling_to_1h_leaves_no_partial_block_and_the_rerun_finishes_it() {
    const R: i64 = 3_600_000;
    let data = data_over(W, 16 * D, 60_000);
    // The uninterrupted run: raw 14d + 2d, their 5m blocks, the 1h block of the 14d 5m block.
    let b = LocalBucket::new();
    write_blocks(&b.bucket, &data, W, (8, 2 * D), 3, &REGION).await;
    compact(&b);
    let (want_metas, _) = visible(&b.bucket, &b.dir).await;
    assert_eq!(days(&want_metas), vec![(0, 0, 14), (0, 14, 16), (300_000, 0, 14), (300_000, 14, 16), (R, 0, 14)]);
    let mut want_down = Vec::new();
    for m in &want_metas[2..] {
        want_down.push(aggregates(&b.bucket, &m.ulid).await);
    }
    assert_eq!(want_down[2].len(), data.len());
    assert!(want_down[2].iter().all(|(_, a)| a.len() == 14 * 24), "one 1h row per hour of 14 days");

    for point in ["downsample#3", "downsample-files#3", "downsampled#3"] {
        let b = LocalBucket::new();
        write_blocks(&b.bucket, &data, W, (8, 2 * D), 3, &REGION).await;
        compact_killed(&b, point).await;

        // While killed: the raw and 5m blocks whole, the 1h block there only with its meta.json.
        let (metas, partial) = while_killed(&b, point, &data).await;
        let five: Vec<&engine::BlockMeta> =
            metas.iter().filter(|m| m.thanos.downsample.resolution == 300_000).collect();
        assert_eq!(five.len(), 2, "{point}: both 5m blocks are done before the 1h step");
        for (m, want) in five.iter().zip(&want_down) {
            assert_eq!(&aggregates(&b.bucket, &m.ulid).await, want, "{point}: 5m block {}", m.ulid);
        }
        assert_step_stopped(&b, point, &metas, &partial, R, &want_down[2]).await;

        // The rerun: the uninterrupted run's blocks, nothing half done left.
        assert_rerun_finishes(&b, point, &data, &want_metas, &want_down).await;
    }
}

/// 1h resolution end to end: 16 days of data (a sample a minute) as 2d raw blocks, `strata
/// compact` run twice: the raw blocks of the 14-day window [W, W + 14d) become one 14d block
/// (the window is over: a block lies after it), both raw blocks get 5m blocks, and the 14d 5m
/// block (>= 10 days) its 1h block in the second downsampling pass; the second run changes
/// nothing. Queried at `max_source_resolution=1h` through `strata store` and `strata query
/// --endpoint`, the answers are those of 1h windows computed here from the raw samples.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn one_hour_blocks_from_ten_days_of_5m_data_answer_at_1h() {
    const R: i64 = 3_600_000;
    assert_eq!(W % (14 * D), 0);
    let lb = LocalBucket::new();
    let (tmp, dir, cfg_s, bucket) = (&lb.tmp, &lb.dir, lb.cfg_str(), &lb.bucket);
    let data = data_over(W, 16 * D, 60_000);
    write_blocks(bucket, &data, W, (8, 2 * D), 3, &REGION).await;
    compact_now(cfg_s);
    let (first, partial) = visible(bucket, dir).await;
    assert!(partial.is_empty());
    let want = vec![(0, 0, 14), (0, 14, 16), (300_000, 0, 14), (300_000, 14, 16), (R, 0, 14)];
    assert_eq!(days(&first), want, "blocks after the first run");
    compact_now(cfg_s);
    let (second, _) = visible(bucket, dir).await;
    assert_eq!(
        second.iter().map(|m| &m.ulid).collect::<Vec<_>>(),
        first.iter().map(|m| &m.ulid).collect::<Vec<_>>(),
        "the second run has nothing left to do"
    );
    strata_ok(&["tools", "bucket", "verify", "--objstore.config-file", cfg_s]);

    let (_store, _grpc, q) = store_and_querier(cfg_s, tmp.path(), "query.log", (W + D) / 1000).await;

    // Hour-aligned steps over [W + 1d, W + 13d]: only the 1h block answers. Samples lie at 5 s
    // past the minute, so (t - 6h, t] holds the raw samples of the six 1h windows before t.
    let (start, end, step) = (W + D, W + 13 * D, 6 * 3600);
    let insts: Vec<String> = (0..TARGETS).map(|i| format!("host-{i}")).collect();
    let window = |name: &str, i: &String, lo: i64, hi: i64| -> Vec<f64> {
        let (ts, vs) = raw(&data, name, i);
        vs[ts.partition_point(|&x| x < lo)..ts.partition_point(|&x| x < hi)].to_vec()
    };
    let points = (end - start) / (step * 1000) + 1;
    let c = range(&q, "count_over_time(temperature[6h])", start, end, step, "1h").await;
    assert!(c.values().flatten().all(|p| p.1 == 6.0), "six 1h windows in 6h: {c:?}");
    type Rule = (&'static str, fn(&[f64]) -> f64, f64);
    let rules: [Rule; 4] = [
        ("max_over_time(temperature[6h])", |v| v.iter().copied().fold(f64::MIN, f64::max), 0.0),
        ("min_over_time(temperature[6h])", |v| v.iter().copied().fold(f64::MAX, f64::min), 0.0),
        ("sum_over_time(temperature[6h])", |v| v.iter().sum(), 1e-9),
        ("avg_over_time(temperature[6h])", |v| v.iter().sum::<f64>() / v.len() as f64, 1e-9),
    ];
    for (expr, f, tol) in rules {
        let got = range(&q, expr, start, end, step, "1h").await;
        assert_eq!(got.len(), TARGETS, "{expr}");
        for i in &insts {
            assert_eq!(got[i].len() as i64, points, "{expr} {i}");
            for &(t, v) in &got[i] {
                let want = f(&window("temperature", i, t - 6 * H, t));
                assert!(close(v, want, tol), "{expr} {i} at {t}: {v} vs {want}");
            }
        }
    }
    // A plain selector: the average of the hour before t; max(): the largest hourly max.
    let got = range(&q, "temperature", start, end, step, "1h").await;
    let m = one_series(&q, "max(temperature)", start, end, step, "1h").await;
    assert_eq!(m.len() as i64, points);
    for (k, &(t, v)) in m.iter().enumerate() {
        let mut want = f64::MIN;
        for i in &insts {
            let w = window("temperature", i, t - H, t);
            let avg = w.iter().sum::<f64>() / w.len() as f64;
            assert!(close(got[i][k].1, avg, 1e-9), "temperature {i} at {t}: {} vs {avg}", got[i][k].1);
            want = want.max(w.iter().copied().fold(f64::MIN, f64::max));
        }
        assert_eq!(v, want, "max(temperature) at {t}");
    }
    // irate: the reset-corrected counter increase over the last hour's last sample.
    let d = range(&q, "irate(requests_total[6h])", start, end, step, "1h").await;
    for i in &insts {
        let (ts, vs) = raw(&data, "requests_total", i);
        let c = corrected(vs);
        assert_eq!(d[i].len() as i64, points, "irate {i}");
        for &(t, got) in &d[i] {
            let last = ts.partition_point(|&x| x < t) - 1;
            let prev = ts.partition_point(|&x| x < t - H) - 1;
            let want = (c[last] - c[prev]) / 3600.0;
            assert!(close(got, want, 1e-9), "irate {i} at {t}: {got} vs {want}");
        }
    }
    q.stop().await;
}
