//! `bench compact`: the compactor (`strata compact`, run as a child process next to the bench
//! binary) on synthetic data, and PromQL over downsampled vs raw data.
//!
//! ```text
//!   1. 4 x 2h raw blocks (+ a newer one) ─strata compact─► one 8h block
//!   2. 24 x 2h raw blocks (+ a newer one) ─strata compact─► 8h blocks ─► one 2d block ─► its 5m block
//!      each: samples/s (samples read / wall time), peak RSS of the child (VmHWM, polled),
//!      bytes/sample of the source blocks and of the result
//!   3. `--days` of 2d raw blocks ─strata compact─► 5m blocks ─► 14d 5m blocks ─► 1h blocks;
//!      a range query over all of it through query::Engine over BucketSource, raw
//!      (max_source_resolution 0) vs 1h (max_source_resolution 1h): best of `--runs`
//! ```
//!
//! Data: `--series` series (half counters with uneven increments and resets, half gauges), one
//! sample per `--interval-s`; the 30-day part uses `--query-series` series at `--query-interval-s`.

use std::path::Path;
use std::process::{Command, Stdio};
use std::sync::Arc;
use std::time::{Duration, Instant};

use engine::{BlockWriter, BlockWriterOptions, Bucket, BucketSource, Labels};

/// Arguments of `bench compact`.
#[derive(Debug, clap::Args)]
pub(crate) struct Args {
    /// Series of the 8h and 2d compactions.
    #[arg(long, default_value_t = 10_000)]
    series: usize,
    /// Seconds between samples of the 8h and 2d compactions.
    #[arg(long, default_value_t = 15)]
    interval_s: i64,
    /// Days of data of the query part.
    #[arg(long, default_value_t = 30)]
    days: i64,
    /// Series of the query part.
    #[arg(long, default_value_t = 1_000)]
    query_series: usize,
    /// Seconds between samples of the query part.
    #[arg(long, default_value_t = 60)]
    query_interval_s: i64,
    /// Repetitions per query (the best time is reported).
    #[arg(long, default_value_t = 3)]
    runs: usize,
}

const H: i64 = 3_600_000;
/// A multiple of 14 days since the epoch (the compactor's largest window).
const T0: i64 = 1_700_006_400_000 - 1_700_006_400_000 % (14 * 24 * H);

fn labels(i: usize) -> Labels {
    let name = if i.is_multiple_of(2) { "requests_total" } else { "temperature" };
    Labels::from_pairs([
        ("__name__", name.to_string()),
        ("job", format!("job-{}", i % 10)),
        ("instance", format!("i-{i:06}")),
    ])
}

/// The value of series `i` at sample `k`: counters grow unevenly and reset now and then; gauges
/// wander with two decimals.
fn value(i: usize, k: i64) -> f64 {
    let h = (k as u64).wrapping_mul(0x9e37_79b9_7f4a_7c15) ^ (i as u64).wrapping_mul(0xc2b2_ae3d_27d4_eb4f);
    if i.is_multiple_of(2) {
        let cycle = k % 20_000;
        (cycle * 3 + (h % 7) as i64) as f64
    } else {
        ((2000 + (h % 400) as i64) as f64) / 100.0
    }
}

/// Writes a raw block of every series over `[min, max)` at `interval` ms (level `level`).
async fn write_block(
    bucket: &Bucket,
    n: usize,
    min: i64,
    max: i64,
    interval: i64,
    level: u32,
    seq: u128,
) -> Result<(u64, u64), String> {
    let mut series: Vec<Labels> = (0..n).map(labels).collect();
    series.sort();
    let index: std::collections::HashMap<Labels, usize> = (0..n).map(|i| (labels(i), i)).collect();
    let mut o = BlockWriterOptions::new(ulid::Ulid::from_parts(min as u64, seq), min, max);
    o.source = "bench".into();
    o.compaction_level = level;
    o.external_labels = [("region".to_string(), "bench".to_string())].into();
    let mut w = BlockWriter::new(bucket.clone(), o).map_err(|e| e.to_string())?;
    let first = (min - T0 + interval - 1) / interval;
    let last = (max - T0 + interval - 1) / interval;
    let ks: Vec<i64> = (first..last).collect();
    let ts: Vec<i64> = ks.iter().map(|k| T0 + k * interval + 1_000).filter(|&t| t < max).collect();
    let mut total = 0;
    for l in &series {
        let i = index[l];
        let vs: Vec<f64> = ks.iter().take(ts.len()).map(|&k| value(i, k)).collect();
        w.append_series(l, &ts, &vs).await.map_err(|e| e.to_string())?;
        total += ts.len() as u64;
    }
    let meta = w.finish().await.map_err(|e| e.to_string())?;
    Ok((total, meta.thanos.files.iter().filter_map(|f| f.size_bytes).sum()))
}

/// (samples, bytes of block files) of the visible blocks of `resolution`.
async fn stats(bucket: &Bucket, resolution: i64) -> Result<(u64, u64, usize), String> {
    let (mut samples, mut bytes, mut blocks) = (0, 0, 0);
    for id in bucket.list_blocks().await.map_err(|e| e.to_string())? {
        if bucket.read_deletion_mark(&id).await.is_ok() {
            continue;
        }
        let m = bucket.read_meta(&id).await.map_err(|e| e.to_string())?;
        if m.thanos.downsample.resolution != resolution {
            continue;
        }
        samples += m.stats.num_samples;
        bytes += m.thanos.files.iter().filter_map(|f| f.size_bytes).sum::<u64>();
        blocks += 1;
    }
    Ok((samples, bytes, blocks))
}

/// Runs `strata compact` once on the bucket at `dir`; returns (wall seconds, peak RSS bytes).
fn compact(dir: &Path, work: &Path) -> Result<(f64, u64), String> {
    let cfg = work.join("bucket.yml");
    crate::util::write_fs_bucket_config(&cfg, dir)?;
    let bin = std::env::current_exe().map_err(|e| e.to_string())?.with_file_name("strata");
    let started = Instant::now();
    let log = work.join("compact.log");
    let log_f = std::fs::File::create(&log).map_err(|e| format!("{}: {e}", log.display()))?;
    let mut child = Command::new(&bin)
        .args(["compact", "--objstore.config-file"])
        .arg(&cfg)
        .args(["--consistency-delay=0s", "--delete-delay=0s", "--http-address=127.0.0.1:0"])
        .stdout(Stdio::null())
        .stderr(log_f)
        .spawn()
        .map_err(|e| format!("{}: {e} (build the workspace: the bench runs strata next to it)", bin.display()))?;
    let status_path = format!("/proc/{}/status", child.id());
    let mut peak = 0u64;
    let status = loop {
        if let Ok(s) = std::fs::read_to_string(&status_path)
            && let Some(kb) = s.lines().find_map(|l| l.strip_prefix("VmHWM:"))
        {
            let kb: u64 = kb.trim().trim_end_matches("kB").trim().parse().unwrap_or(0);
            peak = peak.max(kb * 1024);
        }
        if let Some(st) = child.try_wait().map_err(|e| e.to_string())? {
            break st;
        }
        std::thread::sleep(Duration::from_millis(20));
    };
    if !status.success() {
        let text = std::fs::read_to_string(&log).unwrap_or_default();
        return Err(format!("strata compact failed ({status}):\n{text}"));
    }
    Ok((started.elapsed().as_secs_f64(), peak))
}

fn mib(b: u64) -> f64 {
    b as f64 / (1u64 << 20) as f64
}

/// One compaction measurement: `blocks` 2h blocks plus a newer one, compacted.
async fn measure_compaction(what: &str, a: &Args, blocks: i64, work: &Path) -> Result<(), String> {
    let dir = work.join(what);
    std::fs::create_dir_all(&dir).map_err(|e| e.to_string())?;
    let bucket = Bucket::local(&dir).map_err(|e| e.to_string())?;
    let interval = a.interval_s * 1000;
    eprintln!("bench compact: writing {} x 2h blocks of {} series ({what}) ...", blocks + 1, a.series);
    // The newest block is never compacted (it only makes the window before it complete).
    let (mut input, mut input_bytes, mut newest_bytes) = (0, 0, 0);
    for b in 0..=blocks {
        let (min, max) = (T0 + b * 2 * H, T0 + (b + 1) * 2 * H);
        let (n, bytes) = write_block(&bucket, a.series, min, max, interval, 1, b as u128 + 1).await?;
        if b < blocks {
            input += n;
            input_bytes += bytes;
        } else {
            newest_bytes = bytes;
        }
    }
    let (raw_samples, _, _) = stats(&bucket, 0).await?;
    let (secs, rss) = compact(&dir, work)?;
    let (after_samples, after_bytes, after_blocks) = stats(&bucket, 0).await?;
    let (ds_rows, ds_bytes, ds_blocks) = stats(&bucket, 300_000).await?;
    let out_bytes = after_bytes - newest_bytes.min(after_bytes);
    println!(
        "{what:<28} {input:>12} {:>12.0} {:>10.1} {:>10.3} {:>10.3} {:>7}",
        input as f64 / secs,
        mib(rss),
        input_bytes as f64 / input.max(1) as f64,
        out_bytes as f64 / input.max(1) as f64,
        after_blocks,
    );
    if ds_blocks > 0 {
        println!(
            "{:<28} 5m blocks: {ds_blocks}, rows {ds_rows}, {:.3} bytes/row, {:.1}x fewer rows than raw samples",
            "",
            ds_bytes as f64 / ds_rows.max(1) as f64,
            input as f64 / ds_rows.max(1) as f64
        );
    }
    if after_samples != raw_samples {
        return Err(format!("{what}: {raw_samples} raw samples before compaction, {after_samples} after"));
    }
    Ok(())
}

/// Best wall time of `expr` over `[start, end]` at `step` with `max_res`, and the series count.
async fn time_query(
    src: Arc<BucketSource>,
    expr: &str,
    (start, end, step): (i64, i64, i64),
    max_res: i64,
    runs: usize,
) -> Result<(f64, usize), String> {
    let opts = query::EngineOptions {
        max_source_resolution_ms: max_res,
        lookback_delta_ms: 300_000.max(if max_res >= H { H } else { 0 }),
        ..query::EngineOptions::default()
    };
    let eng = query::Engine::new(src, opts);
    let mut best = f64::MAX;
    let mut n = 0;
    for _ in 0..runs.max(1) {
        let t = Instant::now();
        let r = eng.range_query(expr, start, end, step).await.map_err(|e| format!("{expr}: {e}"))?;
        best = best.min(t.elapsed().as_secs_f64());
        n = match &r.value {
            query::Value::Matrix(m) => m.len(),
            _ => 0,
        };
    }
    Ok((best, n))
}

async fn measure_queries(a: &Args, work: &Path) -> Result<(), String> {
    let dir = work.join("month");
    std::fs::create_dir_all(&dir).map_err(|e| e.to_string())?;
    let bucket = Bucket::local(&dir).map_err(|e| e.to_string())?;
    let days = a.days.max(11);
    eprintln!("bench compact: writing {days} days of {} series as 2d blocks ...", a.query_series);
    let mut samples = 0;
    let mut b = 0;
    while b * 48 < days * 24 {
        let (min, max) = (T0 + b * 48 * H, T0 + ((b + 1) * 48 * H).min(days * 24 * H));
        samples += write_block(&bucket, a.query_series, min, max, a.query_interval_s * 1000, 3, b as u128 + 1).await?.0;
        b += 1;
    }
    eprintln!("bench compact: downsampling ({samples} raw samples) ...");
    let (secs, rss) = compact(&dir, work)?;
    let (_, _, b5) = stats(&bucket, 300_000).await?;
    let (h_rows, _, b1h) = stats(&bucket, 3_600_000).await?;
    println!(
        "downsampling {days} days: {secs:.1} s, peak RSS {:.1} MiB, 5m blocks {b5}, 1h blocks {b1h} ({h_rows} rows)",
        mib(rss)
    );
    let src = Arc::new(BucketSource::new(bucket));
    src.sync().await.map_err(|e| e.to_string())?;
    let range = (T0 + H, T0 + days * 24 * H - H, H);
    println!("{:<44} {:>10} {:>10} {:>8} {:>7}", "query (30-day range, 1h step)", "raw s", "1h s", "speedup", "series");
    for expr in ["sum(rate(requests_total[2h]))", "max_over_time(temperature[2h])", "avg_over_time(temperature[2h])"] {
        let (raw, n) = time_query(Arc::clone(&src), expr, range, 0, a.runs).await?;
        let (down, m) = time_query(Arc::clone(&src), expr, range, H, a.runs).await?;
        if n != m {
            return Err(format!("{expr}: {n} series raw, {m} downsampled"));
        }
        println!("{expr:<44} {raw:>10.3} {down:>10.3} {:>7.1}x {n:>7}", raw / down.max(1e-9));
    }
    Ok(())
}

/// Runs the benchmark (see the module docs).
pub(crate) fn run(a: Args) -> Result<(), String> {
    let rt = tokio::runtime::Runtime::new().map_err(|e| e.to_string())?;
    rt.block_on(async {
        let work = tempfile::tempdir().map_err(|e| e.to_string())?;
        println!(
            "{:<28} {:>12} {:>12} {:>10} {:>10} {:>10} {:>7}",
            "compaction", "samples in", "samples/s", "peak MiB", "B/s before", "B/s after", "blocks"
        );
        measure_compaction("4 x 2h -> 8h", &a, 4, work.path()).await?;
        measure_compaction("24 x 2h -> 2d (+5m)", &a, 24, work.path()).await?;
        measure_queries(&a, work.path()).await
    })
}
