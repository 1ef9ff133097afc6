//! End to end: promtool-made TSDB blocks → `strata tsdb convert` → bucket, checked sample by sample
//! against `promtool tsdb dump`; bucket tools; idempotent re-runs; corrupt blocks; interrupted runs; S3.
#![allow(clippy::unwrap_used, clippy::expect_used)]

mod common;

use std::path::{Path, PathBuf};
use std::sync::Arc;

use common::*;
use engine::bucket::Bucket;
use engine::bucket_source::BucketSource;
use engine::{MatchOp, Matcher, SelectRequest, SeriesSource};
use futures::TryStreamExt;

/// Generated fleet data plus a family with special float values.
fn test_openmetrics() -> String {
    openmetrics_with_specials(&ingest::datagen::GenSpec {
        targets: 6,
        duration_ms: 5 * 3_600_000,
        interval_ms: 30_000,
        ..Default::default()
    })
}

/// Reads every series of the bucket through the engine and renders it like promtool's dump,
/// dropping the external labels that the converter put into meta.json.
async fn bucket_dump(bucket: &Bucket, drop_labels: &[&str]) -> Dump {
    let src = BucketSource::new(bucket.clone());
    src.sync().await.unwrap();
    let req = SelectRequest {
        matchers: vec![Matcher::new(MatchOp::RegexMatch, "__name__", ".+").unwrap()],
        min_t: i64::MIN,
        max_t: i64::MAX,
        ..Default::default()
    };
    let batches: Vec<engine::SeriesBatch> = src.select(&req).await.unwrap().try_collect().await.unwrap();
    let mut out = Dump::new();
    for b in &batches {
        for i in 0..b.num_series() {
            let (l, t, v) = b.series(i);
            let mut l = l.clone();
            for d in drop_labels {
                l.remove(d);
            }
            let e = out.entry(dump_key(&l)).or_default();
            e.extend(t.iter().copied().zip(v.iter().copied()));
        }
    }
    out
}

fn assert_same(expected: &Dump, got: &Dump) {
    assert_eq!(expected.len(), got.len(), "series count differs");
    for (k, want) in expected {
        let have = got.get(k).unwrap_or_else(|| panic!("series {k} missing after conversion"));
        assert_eq!(want.len(), have.len(), "sample count differs for {k}");
        for (w, h) in want.iter().zip(have) {
            assert_eq!(w.0, h.0, "timestamp differs for {k}");
            assert!(
                w.1.to_bits() == h.1.to_bits() || (w.1.is_nan() && h.1.is_nan()) || w.1 == h.1,
                "value differs for {k} at {}: {} vs {}",
                w.0,
                w.1,
                h.1
            );
        }
    }
}

fn block_dirs(data: &Path) -> Vec<String> {
    let mut v: Vec<String> = std::fs::read_dir(data)
        .unwrap()
        .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
        .filter(|n| n.len() == 26)
        .collect();
    v.sort();
    v
}

/// The common set-up: promtool blocks of [`test_openmetrics`] in `<tmp>/prom` (their ULIDs) and a
/// FILESYSTEM bucket config for `<tmp>/bucket`.
struct Fixture {
    data: PathBuf,
    ulids: Vec<String>,
    bdir: PathBuf,
    cfg: PathBuf,
}

fn fixture(promtool: &Path, tmp: &Path) -> Fixture {
    let data = tmp.join("prom");
    promtool_blocks(promtool, &test_openmetrics(), tmp, &data);
    let ulids = block_dirs(&data);
    let bdir = tmp.join("bucket");
    let cfg = fs_bucket_config(tmp, &bdir);
    Fixture { data, ulids, bdir, cfg }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn convert_matches_promtool_dump_and_tools_work() {
    let Some(promtool) = peer("promtool") else { return };
    let tmp = tempfile::tempdir().unwrap();
    let Fixture { data, ulids, bdir, cfg } = fixture(&promtool, tmp.path());
    assert!(ulids.len() >= 3, "expected several 2h blocks, got {ulids:?}");
    let expected = promtool_dump(&promtool, &data, &tmp.path().join("dump"));
    let cfg_s = cfg.to_str().unwrap();
    let out = strata_ok(&[
        "tsdb",
        "convert",
        "--tsdb.path",
        data.to_str().unwrap(),
        "--objstore.config-file",
        cfg_s,
        "--label",
        "cluster=\"eu1\"",
    ]);
    assert!(out.contains(&format!("converted {} block(s)", ulids.len())), "{out}");

    let bucket = Bucket::from_config_file(&cfg).unwrap();
    let got = bucket_dump(&bucket, &["cluster"]).await;
    assert_same(&expected, &got);
    // the external label is visible on every series read through the engine
    let with_ext = bucket_dump(&bucket, &[]).await;
    assert!(with_ext.keys().all(|k| k.contains("cluster=\"eu1\"")));

    // ls / inspect: same ULIDs as the source blocks, with labels and counts
    let ls: serde_json::Value =
        serde_json::from_str(&strata_ok(&["tools", "bucket", "ls", "--objstore.config-file", cfg_s, "-o", "json"]))
            .unwrap();
    let mut listed: Vec<String> =
        ls.as_array().unwrap().iter().map(|m| m["ulid"].as_str().unwrap().to_string()).collect();
    listed.sort();
    assert_eq!(listed, ulids);
    for m in ls.as_array().unwrap() {
        assert_eq!(m["thanos"]["labels"]["cluster"], "eu1");
        assert_eq!(m["strata"]["source_ulid"], m["ulid"]);
        let src: serde_json::Value =
            serde_json::from_slice(&std::fs::read(data.join(m["ulid"].as_str().unwrap()).join("meta.json")).unwrap())
                .unwrap();
        assert_eq!(m["minTime"], src["minTime"]);
        assert_eq!(m["maxTime"], src["maxTime"]);
        assert_eq!(m["stats"]["numSamples"], src["stats"]["numSamples"]);
    }
    let total: u64 = expected.values().map(|v| v.len() as u64).sum();
    let table = strata_ok(&["tools", "bucket", "inspect", "--objstore.config-file", cfg_s]);
    assert!(table.starts_with("ULID"), "{table}");
    assert_eq!(table.lines().count(), ulids.len() + 1);
    let table_samples: u64 =
        table.lines().skip(1).map(|l| l.split_whitespace().nth(5).unwrap().parse::<u64>().unwrap()).sum();
    assert_eq!(table_samples, total);
    let v = strata_ok(&["tools", "bucket", "verify", "--objstore.config-file", cfg_s]);
    assert!(v.contains(&format!("verify: {} block(s) ok", ulids.len())), "{v}");

    // the plan of a query, run against the converted bucket with per-operator metrics
    let first: i64 = ls[0]["minTime"].as_i64().unwrap();
    let (start, end) = ((first / 1000 + 600).to_string(), (first / 1000 + 3600).to_string());
    let q = "sum by (job) (rate(http_requests_total[5m]))";
    let plan = strata_ok(&[
        "promql",
        "explain",
        q,
        "--analyze",
        "--objstore.config-file",
        cfg_s,
        "--start",
        &start,
        "--end",
        &end,
        "--step",
        "60",
    ]);
    for node in [
        "logical plan:",
        "PromAggregate",
        "PromRangeFunc",
        "PromSeriesScan",
        "physical plan:",
        "metrics:",
        "output_rows",
    ] {
        assert!(plan.contains(node), "{node} missing from:\n{plan}");
    }
    let bad = strata(&["promql", "explain", "sum(", "--time", &start]);
    assert!(!bad.status.success());
    assert!(String::from_utf8_lossy(&bad.stderr).contains("bad_data"));

    // re-running skips everything
    let again = strata_ok(&["tsdb", "convert", "--tsdb.path", data.to_str().unwrap(), "--objstore.config-file", cfg_s]);
    assert!(again.contains(&format!("converted 0 block(s) (0 series, 0 samples), skipped {}", ulids.len())), "{again}");

    // verify finds a damaged block and exits non-zero naming it
    let victim = &ulids[0];
    let samples_file = bdir.join(victim).join("samples.parquet");
    let mut bytes = std::fs::read(&samples_file).unwrap();
    bytes.truncate(bytes.len() / 2);
    std::fs::write(&samples_file, bytes).unwrap();
    let bad = strata(&["tools", "bucket", "verify", "--objstore.config-file", cfg_s]);
    assert!(!bad.status.success());
    let text = String::from_utf8_lossy(&bad.stdout);
    assert!(text.lines().any(|l| l.starts_with(victim.as_str()) && l.contains("samples.parquet")), "{text}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn corrupt_block_fails_alone_and_interrupted_runs_complete() {
    let Some(promtool) = peer("promtool") else { return };
    let tmp = tempfile::tempdir().unwrap();
    let Fixture { data, ulids, bdir, cfg } = fixture(&promtool, tmp.path());
    let cfg_s = cfg.to_str().unwrap();

    // Corrupt one chunk byte of the second block: its CRC check must fail.
    let bad = &ulids[1];
    let seg = data.join(bad).join("chunks").join("000001");
    let mut b = std::fs::read(&seg).unwrap();
    let at = b.len() / 2;
    b[at] ^= 0x5a;
    std::fs::write(&seg, b).unwrap();
    // A leftover of an interrupted run: files of the first block without meta.json.
    let partial = bdir.join(&ulids[0]);
    std::fs::create_dir_all(&partial).unwrap();
    std::fs::write(partial.join("samples.parquet"), b"half-written").unwrap();

    let out = strata(&["tsdb", "convert", "--tsdb.path", data.to_str().unwrap(), "--objstore.config-file", cfg_s]);
    assert!(!out.status.success(), "a corrupt block must fail the run");
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(stderr.contains(bad.as_str()) && stderr.contains("000001"), "error must name block and file: {stderr}");
    assert!(!bdir.join(bad).join("meta.json").exists(), "failed block must not be visible");
    for u in ulids.iter().filter(|u| *u != bad) {
        assert!(bdir.join(u).join("meta.json").exists(), "block {u} should have converted");
    }
    let v = strata_ok(&["tools", "bucket", "verify", "--objstore.config-file", cfg_s]);
    assert!(v.contains(&format!("verify: {} block(s) ok", ulids.len() - 1)), "{v}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn killed_conversion_leaves_no_visible_partial_block() {
    let Some(promtool) = peer("promtool") else { return };
    let tmp = tempfile::tempdir().unwrap();
    let Fixture { data, ulids, bdir, cfg } = fixture(&promtool, tmp.path());
    let cfg_s = cfg.to_str().unwrap();
    // Kill the converter at several points in its run; whatever is visible must verify.
    for delay_ms in [30u64, 120, 300] {
        let mut child = std::process::Command::new(strata_bin())
            .args(["tsdb", "convert", "--tsdb.path", data.to_str().unwrap(), "--objstore.config-file", cfg_s])
            .stdout(std::process::Stdio::null())
            .stderr(std::process::Stdio::null())
            .spawn()
            .unwrap();
        std::thread::sleep(std::time::Duration::from_millis(delay_ms));
        let _ = child.kill();
        let _ = child.wait();
        if bdir.exists() {
            let v = strata(&["tools", "bucket", "verify", "--objstore.config-file", cfg_s]);
            assert!(v.status.success(), "visible blocks must be whole: {}", String::from_utf8_lossy(&v.stdout));
        }
    }
    let out = strata_ok(&["tsdb", "convert", "--tsdb.path", data.to_str().unwrap(), "--objstore.config-file", cfg_s]);
    assert!(out.contains("failed 0"), "{out}");
    let expected = promtool_dump(&promtool, &data, &tmp.path().join("dump"));
    let bucket = Bucket::from_config_file(&cfg).unwrap();
    assert_same(&expected, &bucket_dump(&bucket, &[]).await);
    assert_eq!(bucket.list_blocks().await.unwrap().len(), ulids.len());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn convert_into_s3() {
    let Some(promtool) = peer("promtool") else { return };
    let Some((_moto, port)) = start_moto() else { return };
    create_s3_bucket(port, "strata-test");
    let tmp = tempfile::tempdir().unwrap();
    let data = tmp.path().join("prom");
    promtool_blocks(&promtool, &test_openmetrics(), tmp.path(), &data);
    let cfg = tmp.path().join("s3.yml");
    std::fs::write(
        &cfg,
        format!(
            "type: S3\nconfig:\n  bucket: strata-test\n  endpoint: 127.0.0.1:{port}\n  region: us-east-1\n  access_key: test\n  secret_key: test\n  insecure: true\n"
        ),
    )
    .unwrap();
    let cfg_s = cfg.to_str().unwrap();
    strata_ok(&["tsdb", "convert", "--tsdb.path", data.to_str().unwrap(), "--objstore.config-file", cfg_s]);
    let v = strata_ok(&["tools", "bucket", "verify", "--objstore.config-file", cfg_s]);
    assert!(v.contains(&format!("verify: {} block(s) ok", block_dirs(&data).len())), "{v}");
    let expected = promtool_dump(&promtool, &data, &tmp.path().join("dump"));
    let bucket = Arc::new(Bucket::from_config_file(&cfg).unwrap());
    assert_same(&expected, &bucket_dump(&bucket, &[]).await);
}

/// `strata tools gen` (the quick start's first command): deterministic OpenMetrics text with the
/// asked-for targets, range and interval, which promtool turns into blocks holding every sample.
#[test]
fn tools_gen_writes_data_promtool_accepts() {
    let args = ["tools", "gen", "--targets", "3", "--hours", "2.5", "--interval", "30", "--seed", "9"];
    let text = strata_ok(&args);
    assert_eq!(strata_ok(&args), text, "same arguments, same bytes");
    assert_ne!(strata_ok(&["tools", "gen", "--targets", "3", "--hours", "2.5", "--interval", "30"]), text);
    assert!(text.ends_with("# EOF\n"));
    let samples: Vec<&str> = text.lines().filter(|l| !l.starts_with('#')).collect();
    // 3 targets x 20 series x 2.5 h / 30 s
    assert_eq!(samples.len(), 3 * 20 * 300);
    let t0 = 1_700_000_000.0;
    let mut instances = std::collections::BTreeSet::new();
    for l in &samples {
        let t: f64 = l.rsplit(' ').next().unwrap().parse().unwrap();
        assert!((t0..t0 + 9000.0).contains(&t), "{l}");
        let i = l.find("instance=\"").unwrap() + 10;
        instances.insert(&l[i..i + 15]);
    }
    assert_eq!(instances.len(), 3, "{instances:?}");

    let bad = strata(&["tools", "gen", "--interval", "0"]);
    assert!(!bad.status.success());
    assert!(String::from_utf8_lossy(&bad.stderr).contains("--interval"), "{}", String::from_utf8_lossy(&bad.stderr));

    let Some(promtool) = peer("promtool") else { return };
    let tmp = tempfile::tempdir().unwrap();
    promtool_blocks(&promtool, &text, tmp.path(), &tmp.path().join("prom"));
    let dump = promtool_dump(&promtool, &tmp.path().join("prom"), &tmp.path().join("dump"));
    assert_eq!(dump.len(), 60);
    assert_eq!(dump.values().map(Vec::len).sum::<usize>(), samples.len());
}
