//! `strata compact` end to end: promtool-made blocks converted into a filesystem bucket, compacted by
//! the real binary, and the bucket checked sample by sample against `promtool tsdb dump` of the
//! original blocks (no sample lost, none duplicated, values bit for bit). Covers the one-shot and
//! `--wait` runs with their `/metrics`, the halt on overlapping blocks (process stays up, exit on
//! SIGTERM), vertical compaction, `tools bucket mark`, and SIGKILL at every test-hook pause point
//! followed by a rerun (crash safety).
#![allow(clippy::unwrap_used, clippy::expect_used)]

mod common;

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::{Duration, Instant};

use common::*;

/// Start of the generated data (the generator's fixed start, 20 s past a minute).
const T0_MS: i64 = 1_700_000_000_000;
const H: i64 = 3_600_000;

/// Samples keyed by series as promtool prints them; values as bits (NaN-safe equality).
type Bits = BTreeMap<String, Vec<(i64, u64)>>;

fn bits(d: &Dump) -> Bits {
    d.iter().map(|(k, v)| (k.clone(), v.iter().map(|(t, x)| (*t, x.to_bits())).collect())).collect()
}

/// A bucket made from generated data: the promtool blocks, their dump and the bucket config.
struct Fixture {
    tmp: tempfile::TempDir,
    bucket: PathBuf,
    cfg: PathBuf,
    want: Bits,
}

/// Generates `hours` of data for `targets` targets with `seed`, cuts it into 2h TSDB blocks with
/// promtool, dumps them (the expected samples) and converts them into a fresh bucket with the
/// external labels `labels`.
fn fixture(promtool: &Path, hours: i64, targets: usize, seed: u64, labels: &[&str]) -> Fixture {
    let tmp = tempfile::tempdir().unwrap();
    let bucket = tmp.path().join("bucket");
    let cfg = fs_bucket_config(tmp.path(), &bucket);
    let want = add_blocks(promtool, tmp.path(), &cfg, "in", hours, targets, seed, labels);
    Fixture { tmp, bucket, cfg, want }
}

/// Generates and converts more blocks into the bucket of `cfg`; returns their dump.
#[allow(clippy::too_many_arguments)]
fn add_blocks(
    promtool: &Path,
    work: &Path,
    cfg: &Path,
    name: &str,
    hours: i64,
    targets: usize,
    seed: u64,
    labels: &[&str],
) -> Bits {
    let spec = ingest::datagen::GenSpec {
        targets,
        start_ms: T0_MS,
        duration_ms: hours * H,
        interval_ms: 15_000,
        jitter_ms: 3,
        seed,
    };
    let mut buf = Vec::new();
    ingest::datagen::write_openmetrics(&spec, &mut buf).unwrap();
    let dir = work.join(name);
    std::fs::create_dir_all(&dir).unwrap();
    let blocks = dir.join("blocks");
    promtool_blocks(promtool, &String::from_utf8(buf).unwrap(), &dir, &blocks);
    let want = bits(&promtool_dump(promtool, &blocks, &dir.join("dump")));
    let mut args = vec!["tsdb", "convert", "--tsdb.path", blocks.to_str().unwrap(), "--objstore.config-file"];
    args.push(cfg.to_str().unwrap());
    let label_args: Vec<String> = labels.iter().map(|l| format!("--label={l}")).collect();
    args.extend(label_args.iter().map(String::as_str));
    strata_ok(&args);
    want
}

/// What a reader of the bucket sees: ULIDs of the directories with `meta.json` and without
/// `deletion-mark.json`, and the directories without `meta.json` (partial uploads).
fn listing(bucket: &Path) -> (Vec<String>, Vec<String>, Vec<String>) {
    let (mut visible, mut partial, mut marked) = (Vec::new(), Vec::new(), Vec::new());
    for e in std::fs::read_dir(bucket).unwrap() {
        let p = e.unwrap().path();
        let id = p.file_name().unwrap().to_string_lossy().to_string();
        if ulid::Ulid::from_string(&id).is_err() {
            continue;
        }
        let has_meta = p.join("meta.json").exists();
        if p.join("deletion-mark.json").exists() {
            marked.push(id.clone());
        }
        if !has_meta {
            partial.push(id);
        } else if !p.join("deletion-mark.json").exists() {
            visible.push(id);
        }
    }
    visible.sort();
    partial.sort();
    marked.sort();
    (visible, partial, marked)
}

/// Every sample of the visible blocks, per series as promtool names it, in time order, duplicates
/// kept (read with the engine's block reader, not the compactor).
async fn visible_samples(bucket: &Path) -> Bits {
    let b = engine::Bucket::local(bucket).unwrap();
    let mut out: Bits = BTreeMap::new();
    for id in listing(bucket).0 {
        let r = engine::BlockReader::open(&b, &id).await.unwrap();
        let ids: Vec<u32> = (0..r.index().len() as u32).collect();
        for s in r.read_samples(&ids, i64::MIN, i64::MAX).await.unwrap() {
            let e = out.entry(dump_key(&r.index().labels[s.series_id as usize])).or_default();
            e.extend(s.timestamps.iter().zip(&s.values).map(|(t, v)| (*t, v.to_bits())));
        }
    }
    for v in out.values_mut() {
        v.sort();
    }
    out
}

/// The metas of the visible blocks, by minTime.
fn metas(bucket: &Path) -> Vec<serde_json::Value> {
    let mut out: Vec<serde_json::Value> = listing(bucket)
        .0
        .iter()
        .map(|id| serde_json::from_str(&std::fs::read_to_string(bucket.join(id).join("meta.json")).unwrap()).unwrap())
        .collect();
    out.sort_by_key(|m| m["minTime"].as_i64().unwrap());
    out
}

/// `series="value"` lines of a /metrics text, e.g. `thanos_compact_halted` → "1".
fn metric(text: &str, series: &str) -> Option<f64> {
    text.lines().find_map(|l| l.strip_prefix(series)?.strip_prefix(' ')?.parse().ok())
}

async fn metrics_text(s: &Strata) -> String {
    reqwest::get(s.url("/metrics")).await.unwrap().text().await.unwrap()
}

/// Polls /metrics until `series` reaches `want` (60 s at most).
async fn wait_metric(s: &Strata, series: &str, want: f64) -> String {
    let deadline = Instant::now() + Duration::from_secs(60);
    loop {
        let text = metrics_text(s).await;
        if metric(&text, series) == Some(want) {
            return text;
        }
        assert!(Instant::now() < deadline, "{series} never reached {want}:\n{text}\nlog:\n{}", s.log_text());
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

const QUICK: [&str; 4] = ["--consistency-delay=0s", "--delete-delay=0s", "--log.level=info", "--wait-interval=1h"];

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn compact_waits_serves_metrics_and_keeps_every_sample() {
    let Some(promtool) = peer("promtool") else { return };
    // 26 h from 22:13:20: blocks [22:13, 0h), [0h, 2h) ... [0h, 0:13) of the next day.
    let f = fixture(&promtool, 26, 5, 11, &[r#"region="eu""#]);
    let before = listing(&f.bucket).0;
    assert_eq!(before.len(), 14);
    assert_eq!(visible_samples(&f.bucket).await, f.want);

    let mut args = vec!["compact", "--wait", "--objstore.config-file", f.cfg.to_str().unwrap()];
    args.extend(QUICK);
    let s = Strata::start(&args, &f.tmp.path().join("compact.log")).await;
    let text = wait_metric(&s, "thanos_compact_iterations_total", 1.0).await;
    // Two 8h windows ([0h, 8h) and [8h, 16h)) are complete before the newest block; [16h, 24h)
    // is not (its blocks end after the second newest block's start).
    assert_eq!(metric(&text, r#"thanos_compact_group_compactions_total{resolution="0"}"#), Some(2.0), "{text}");
    assert_eq!(metric(&text, "thanos_compact_halted"), Some(0.0), "{text}");
    assert_eq!(metric(&text, "thanos_compact_blocks_cleaned_total"), Some(8.0), "{text}");
    assert_eq!(metric(&text, "thanos_delete_delay_seconds"), Some(0.0), "{text}");
    assert!(text.contains("strata_build_info{"), "{text}");
    assert!(reqwest::get(s.url("/-/healthy")).await.unwrap().status().is_success());
    let log = s.log_text();
    assert!(log.contains("compacted blocks") && log.contains("compaction iteration done"), "{log}");
    s.stop().await;

    let (visible, partial, marked) = listing(&f.bucket);
    assert_eq!((visible.len(), partial.len(), marked.len()), (8, 0, 0), "{visible:?} {partial:?} {marked:?}");
    let m = metas(&f.bucket);
    let shape: Vec<(i64, u64, usize)> = m
        .iter()
        .map(|m| {
            let span = (m["maxTime"].as_i64().unwrap() - m["minTime"].as_i64().unwrap()) / H;
            (span, m["compaction"]["level"].as_u64().unwrap(), m["compaction"]["sources"].as_array().unwrap().len())
        })
        .collect();
    assert_eq!(shape[1..3], [(7, 2, 4), (7, 2, 4)], "{shape:?}");
    assert_eq!(m[1]["thanos"]["source"], "compactor");
    assert_eq!(m[1]["thanos"]["labels"]["region"], "eu");
    assert_eq!(visible_samples(&f.bucket).await, f.want, "samples changed by compaction");
    strata_ok(&["tools", "bucket", "verify", "--objstore.config-file", f.cfg.to_str().unwrap()]);

    // A second run finds nothing to do.
    let mut args = vec!["compact", "--objstore.config-file", f.cfg.to_str().unwrap(), "--http-address=127.0.0.1:0"];
    args.extend(QUICK);
    strata_ok(&args);
    assert_eq!(listing(&f.bucket).0, visible);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn overlapping_blocks_halt_until_vertical_compaction_merges_them() {
    let Some(promtool) = peer("promtool") else { return };
    let f = fixture(&promtool, 3, 2, 21, &[]);
    // Same series, same hours, other samples: overlapping blocks of one stream.
    let other = add_blocks(&promtool, f.tmp.path(), &f.cfg, "other", 3, 2, 22, &[]);
    let blocks = listing(&f.bucket).0;
    assert_eq!(blocks.len(), 4);
    let cfg = f.cfg.to_str().unwrap();

    // One-shot: fails naming the blocks, changes nothing.
    let mut args = vec!["compact", "--objstore.config-file", cfg, "--http-address=127.0.0.1:0"];
    args.extend(QUICK);
    let out = strata(&args);
    assert!(!out.status.success());
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(err.contains("overlapping blocks") && blocks.iter().all(|b| err.contains(b.as_str())), "{err}");
    assert_eq!(listing(&f.bucket).0, blocks);

    // --wait: the process stays up, halted, serving /metrics; SIGTERM ends it cleanly.
    let mut args = vec!["compact", "--wait", "--objstore.config-file", cfg];
    args.extend(QUICK);
    let s = Strata::start(&args, &f.tmp.path().join("halt.log")).await;
    let text = wait_metric(&s, "thanos_compact_halted", 1.0).await;
    assert_eq!(metric(&text, r#"thanos_compact_group_compactions_failures_total{resolution="0"}"#), Some(1.0));
    assert!(reqwest::get(s.url("/-/healthy")).await.unwrap().status().is_success());
    s.stop().await;
    assert_eq!(listing(&f.bucket).0, blocks);

    // Vertical compaction: every timestamp of both once per series.
    args.retain(|a| *a != "--wait");
    args.extend(["--compact.enable-vertical-compaction", "--http-address=127.0.0.1:0"]);
    strata_ok(&args);
    let got = visible_samples(&f.bucket).await;
    assert_eq!(got.keys().collect::<Vec<_>>(), f.want.keys().collect::<Vec<_>>());
    for (series, samples) in &got {
        let (a, b) = (&f.want[series], &other[series]);
        let mut want_ts: Vec<i64> = a.iter().chain(b).map(|x| x.0).collect();
        want_ts.sort();
        want_ts.dedup();
        assert_eq!(samples.iter().map(|x| x.0).collect::<Vec<_>>(), want_ts, "{series}");
        for (t, v) in samples {
            let from = |s: &Vec<(i64, u64)>| s.iter().any(|x| x == &(*t, *v));
            assert!(from(a) || from(b), "{series} at {t}: a value neither block had");
        }
    }
    assert!(listing(&f.bucket).0.len() < 4);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn marks_written_by_tools_bucket_mark_are_honoured() {
    let Some(promtool) = peer("promtool") else { return };
    let f = fixture(&promtool, 26, 1, 31, &[]);
    let cfg = f.cfg.to_str().unwrap();
    let blocks = listing(&f.bucket).0;
    let m = metas(&f.bucket);
    // The second block ([0h, 2h)) is kept out of compaction; the first is deleted.
    let keep = m[1]["ulid"].as_str().unwrap().to_string();
    let gone = m[0]["ulid"].as_str().unwrap().to_string();
    let mark = |id: &str, marker: &str| {
        let args = ["tools", "bucket", "mark", "--objstore.config-file", cfg, "--id", id, "--marker", marker];
        strata(&[&args[..], &["--details", "test"]].concat())
    };
    assert!(mark(&keep, "no-compact-mark.json").status.success());
    assert!(mark(&gone, "deletion-mark.json").status.success());
    let nc: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(f.bucket.join(&keep).join("no-compact-mark.json")).unwrap())
            .unwrap();
    assert_eq!(
        (nc["id"].as_str(), nc["version"].as_i64(), nc["details"].as_str()),
        (Some(&*keep), Some(1), Some("test"))
    );
    assert!(!mark("nope", "deletion-mark.json").status.success(), "not a ULID");
    assert!(!mark("01J00000000000000000000000", "deletion-mark.json").status.success(), "no such block");

    let mut args = vec!["compact", "--objstore.config-file", cfg, "--http-address=127.0.0.1:0"];
    args.extend(QUICK);
    strata_ok(&args);
    let after = listing(&f.bucket).0;
    assert!(after.contains(&keep), "no-compact block was compacted");
    assert!(!f.bucket.join(&gone).exists(), "deletion-marked block still there");
    assert!(after.len() < blocks.len() - 1);
    let m = metas(&f.bucket);
    assert!(
        m.iter()
            .all(|x| x["compaction"]["sources"].as_array().unwrap().iter().all(|s| s != &*keep) || x["ulid"] == *keep)
    );
}

/// Runs `strata compact` with the test hook pausing at `point`, kills it with SIGKILL there, checks
/// what readers see, reruns it to the end and checks the bucket again.
async fn kill_at(promtool: &Path, point: &str) {
    let f = fixture(promtool, 26, 3, 41, &[]);
    let cfg = f.cfg.to_str().unwrap();
    let log = f.tmp.path().join("killed.log");
    let mut cmd = Command::new(strata_bin());
    cmd.args(["compact", "--objstore.config-file", cfg, "--http-address=127.0.0.1:0"])
        .args(QUICK)
        .env("RUST_LOG", "info");
    compact_killed_at(&mut cmd, point, &log).await;

    // Readers see complete blocks only, and every original sample (a compacted block beside its
    // unmarked sources repeats samples; nothing is missing or different).
    let (visible, partial, _) = listing(&f.bucket);
    strata_ok(&["tools", "bucket", "verify", "--objstore.config-file", cfg]);
    let seen = visible_samples(&f.bucket).await;
    let mut deduped = seen.clone();
    for v in deduped.values_mut() {
        v.dedup();
    }
    assert_eq!(deduped, f.want, "{point}: samples lost or changed while killed ({visible:?}, partial {partial:?})");
    match point {
        "merge" | "merge#2" => assert_eq!(visible.len(), if point == "merge" { 14 } else { 11 }, "{point}"),
        "uploaded" => assert_ne!(seen, f.want, "{point}: the new block beside its sources"),
        "deleting" => assert_eq!(partial.len(), 1, "{point}: the half-deleted block"),
        _ => {}
    }

    // The rerun finishes the job: every sample exactly once, nothing half done left.
    let mut args = vec!["compact", "--objstore.config-file", cfg, "--http-address=127.0.0.1:0"];
    args.extend(QUICK);
    strata_ok(&args);
    let (visible, partial, marked) = listing(&f.bucket);
    assert_eq!((partial.len(), marked.len()), (0, 0), "{point}: {partial:?} {marked:?}");
    assert_eq!(visible.len(), 8, "{point}: {visible:?}");
    assert_eq!(visible_samples(&f.bucket).await, f.want, "{point}: samples lost or duplicated after the rerun");
    strata_ok(&["tools", "bucket", "verify", "--objstore.config-file", cfg]);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sigkill_at_every_step_loses_and_duplicates_nothing() {
    let Some(promtool) = peer("promtool") else { return };
    for point in ["merge", "uploaded", "marked#2", "merge#2", "deleting", "deleting#3"] {
        kill_at(&promtool, point).await;
    }
}
