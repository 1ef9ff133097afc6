//! End to end: storage format v2 and v1 read by DuckDB, Polars and pyarrow (tests/python/read_blocks.py,
//! no Strata code), checked bit for bit against `promtool tsdb dump` of the source blocks; and
//! `strata tools bucket rewrite` between the formats, killed in the middle and resumed.
#![allow(clippy::unwrap_used, clippy::expect_used)]

mod common;

use std::path::Path;
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use common::*;
use engine::bucket::Bucket;

/// Fleet data, irregular values (rates, ratios, float sums, short decimals) and special floats.
fn openmetrics() -> String {
    let generate = |f: fn(&ingest::datagen::GenSpec, &mut Vec<u8>) -> std::io::Result<()>, targets| {
        let spec =
            ingest::datagen::GenSpec { targets, duration_ms: 9 * 3_600_000, interval_ms: 30_000, ..Default::default() };
        let mut buf = Vec::new();
        f(&spec, &mut buf).unwrap();
        let mut text = String::from_utf8(buf).unwrap();
        text.truncate(text.len() - "# EOF\n".len());
        text
    };
    let mut text = generate(ingest::datagen::write_openmetrics, 8);
    text.push_str(&generate(ingest::datagen::write_irregular_openmetrics, 3));
    text.push_str("# TYPE special gauge\n");
    let t0 = ingest::datagen::GenSpec::default().start_ms / 1000;
    let specials = ["NaN", "+Inf", "-Inf", "0", "-0.0", "1e-300", "4.9e-324", "123456789.123456789", "0.1", "1e22"];
    for (i, v) in specials.iter().enumerate() {
        text.push_str(&format!("special{{kind=\"edge\"}} {v} {}\n", t0 + 60 * i as i64));
    }
    text.push_str("# EOF\n");
    text
}

/// The expected samples as JSON for the Python readers: key -> [[t, "<bits hex>"], ...].
fn expected_json(d: &Dump, path: &Path) {
    let m: serde_json::Map<String, serde_json::Value> = d
        .iter()
        .map(|(k, v)| {
            let rows: Vec<serde_json::Value> =
                v.iter().map(|(t, x)| serde_json::json!([t, format!("{:016x}", x.to_bits())])).collect();
            (k.clone(), serde_json::Value::Array(rows))
        })
        .collect();
    std::fs::write(path, serde_json::to_vec(&m).unwrap()).unwrap();
}

fn run_python(py: &Path, expected: &Path, bucket: &Path, version: &str) {
    let script = Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/python/read_blocks.py");
    let out = Command::new(py).arg(script).arg(expected).arg(bucket).arg(version).output().unwrap();
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(
        out.status.success(),
        "python readers of format {version} failed:\n{stdout}\n{}",
        String::from_utf8_lossy(&out.stderr)
    );
    for reader in ["duckdb", "polars", "pyarrow"] {
        assert!(stdout.lines().any(|l| l.starts_with(reader) && l.ends_with("samples equal")), "{stdout}");
    }
}

fn metas(bucket_dir: &Path) -> Vec<serde_json::Value> {
    let mut v: Vec<serde_json::Value> = std::fs::read_dir(bucket_dir)
        .unwrap()
        .filter_map(|e| std::fs::read(e.unwrap().path().join("meta.json")).ok())
        .map(|b| serde_json::from_slice(&b).unwrap())
        .collect();
    v.sort_by_key(|m| m["ulid"].as_str().unwrap().to_string());
    v
}

fn marked(bucket_dir: &Path, ulid: &str) -> bool {
    bucket_dir.join(ulid).join("deletion-mark.json").exists()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn every_reader_reads_both_formats_and_rewrite_resumes_after_a_kill() {
    let Some(promtool) = peer("promtool") else { return };
    let Some(py) = venv_python(&["duckdb", "polars", "pyarrow"]) else { return };
    let tmp = tempfile::tempdir().unwrap();
    let data = tmp.path().join("prom");
    promtool_blocks(&promtool, &openmetrics(), tmp.path(), &data);
    let expected = promtool_dump(&promtool, &data, &tmp.path().join("dump"));
    let expected_path = tmp.path().join("expected.json");
    expected_json(&expected, &expected_path);

    // v2: what convert writes.
    let v2_dir = tmp.path().join("v2");
    let v2_cfg_dir = tmp.path().join("v2cfg");
    std::fs::create_dir_all(&v2_cfg_dir).unwrap();
    let v2_cfg = fs_bucket_config(&v2_cfg_dir, &v2_dir);
    let c2 = v2_cfg.to_str().unwrap();
    strata_ok(&["tsdb", "convert", "--tsdb.path", data.to_str().unwrap(), "--objstore.config-file", c2]);
    let v2_blocks = metas(&v2_dir);
    assert!(v2_blocks.len() >= 4, "{} blocks", v2_blocks.len());
    assert!(v2_blocks.iter().all(|m| m["strata"]["format_version"] == 2));
    let v = strata_ok(&["tools", "bucket", "verify", "--objstore.config-file", c2]);
    assert!(v.contains(&format!("verify: {} block(s) ok", v2_blocks.len())), "{v}");
    run_python(&py, &expected_path, &v2_dir, "2");

    // v1: the same bucket rewritten to format 1 (old blocks deletion-marked).
    let out = strata_ok(&["tools", "bucket", "rewrite", "--to-format", "1", "--objstore.config-file", c2]);
    assert!(out.contains(&format!("rewrite: {} block(s) rewritten to format 1", v2_blocks.len())), "{out}");
    assert!(v2_blocks.iter().all(|m| marked(&v2_dir, m["ulid"].as_str().unwrap())));
    let v = strata_ok(&["tools", "bucket", "verify", "--objstore.config-file", c2]);
    assert!(v.contains(&format!("verify: {} block(s) ok", v2_blocks.len())), "{v}");
    // Only the v1 blocks: a bucket without deletion-marked blocks (as after the cleanup delay).
    let v1_dir = tmp.path().join("v1");
    let v1_ulids: Vec<String> = metas(&v2_dir)
        .iter()
        .filter(|m| m["strata"]["format_version"] == 1)
        .map(|m| m["ulid"].as_str().unwrap().to_string())
        .collect();
    assert_eq!(v1_ulids.len(), v2_blocks.len());
    for u in &v1_ulids {
        copy_dir(&v2_dir.join(u), &v1_dir.join(u));
    }
    run_python(&py, &expected_path, &v1_dir, "1");
    let v1_cfg_dir = tmp.path().join("v1cfg");
    std::fs::create_dir_all(&v1_cfg_dir).unwrap();
    let v1_cfg = fs_bucket_config(&v1_cfg_dir, &v1_dir);
    let bucket = Bucket::from_config_file(&v1_cfg).unwrap();
    assert_same(&expected, &bucket_dump(&bucket, &[]).await);

    // v1 -> v2, killed once the first new block is uploaded, then run again to the end.
    let c1 = v1_cfg.to_str().unwrap();
    let mut killed_midway = false;
    for _attempt in 0..3 {
        let mut child = Command::new(strata_bin())
            .args(["tools", "bucket", "rewrite", "--to-format", "2", "--objstore.config-file", c1])
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .unwrap();
        let deadline = Instant::now() + Duration::from_secs(120);
        loop {
            let new_blocks = metas(&v1_dir).iter().filter(|m| m["strata"]["format_version"] == 2).count();
            if new_blocks >= 1 || Instant::now() > deadline {
                break;
            }
            std::thread::sleep(Duration::from_millis(2));
        }
        let still_running = child.try_wait().unwrap().is_none();
        let _ = child.kill();
        let _ = child.wait();
        let done = v1_ulids.iter().filter(|u| marked(&v1_dir, u)).count();
        if still_running && done < v1_ulids.len() {
            killed_midway = true;
            break;
        }
        eprintln!("rewrite finished before the kill ({done} blocks marked); trying again on a fresh copy");
        std::fs::remove_dir_all(&v1_dir).unwrap();
        for u in &v1_ulids {
            copy_dir(&v2_dir.join(u), &v1_dir.join(u));
        }
    }
    assert!(killed_midway, "could not stop the rewrite in the middle in 3 attempts");
    // What is visible after the kill is whole, and holds every sample (old and new blocks overlap).
    let v = strata(&["tools", "bucket", "verify", "--objstore.config-file", c1]);
    assert!(v.status.success(), "{}", String::from_utf8_lossy(&v.stdout));
    assert_same(&expected, &bucket_dump(&bucket, &[]).await);

    let out = strata_ok(&["tools", "bucket", "rewrite", "--to-format", "2", "--objstore.config-file", c1]);
    assert!(out.starts_with("rewrite: "), "{out}");
    let all = metas(&v1_dir);
    let new: Vec<&serde_json::Value> = all.iter().filter(|m| m["strata"]["format_version"] == 2).collect();
    assert_eq!(new.len(), v1_ulids.len(), "one new block per old block, no duplicates");
    let mut parents: Vec<String> =
        new.iter().map(|m| m["compaction"]["parents"][0]["ulid"].as_str().unwrap().to_string()).collect();
    parents.sort();
    assert_eq!(parents, v1_ulids);
    for m in &new {
        let old = m["compaction"]["parents"][0]["ulid"].as_str().unwrap();
        assert!(marked(&v1_dir, old), "{old} not marked for deletion");
        assert!(!marked(&v1_dir, m["ulid"].as_str().unwrap()));
        assert_eq!(m["compaction"]["sources"], all.iter().find(|x| x["ulid"] == old).unwrap()["compaction"]["sources"]);
        assert_eq!(m["thanos"]["source"], "bucket.rewrite");
    }
    let mark: serde_json::Value =
        serde_json::from_slice(&std::fs::read(v1_dir.join(&v1_ulids[0]).join("deletion-mark.json")).unwrap()).unwrap();
    assert_eq!(mark["id"], v1_ulids[0].as_str());
    assert_eq!(mark["version"], 1);
    assert!(mark["deletion_time"].as_i64().unwrap() > 1_700_000_000);
    let v = strata_ok(&["tools", "bucket", "verify", "--objstore.config-file", c1]);
    assert!(v.contains(&format!("verify: {} block(s) ok", v1_ulids.len())), "{v}");
    assert_same(&expected, &bucket_dump(&bucket, &[]).await);
    run_python(&py, &expected_path, &v1_dir, "2");
    // Nothing left to do.
    let out = strata_ok(&["tools", "bucket", "rewrite", "--to-format", "2", "--objstore.config-file", c1]);
    assert!(out.contains("rewrite: 0 block(s) rewritten to format 2, 0 resumed"), "{out}");
}
