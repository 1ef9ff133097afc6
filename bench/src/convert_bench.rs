//! `bench convert`: on the same promtool-made data, bytes per sample of the Strata blocks in format v2
//! (what convert writes) and v1 vs the source TSDB blocks (index + chunks), TSDB decode throughput,
//! end-to-end conversion throughput and read throughput of both formats. Two data sets: the fleet
//! generator and the irregular-value generator (`ingest::datagen`).
//!
//! Targets (issues 2 and 13): v2 ≤ 0.35× the TSDB bytes on fleet data and ≤ 0.6× on irregular values;
//! ≥ 10M samples/s converted on a 2-core machine; v2 reads no slower than v1.

use std::time::Instant;

use engine::bucket::Bucket;
use ingest::convert::{ConvertOptions, convert_path};

use ingest::testkit::dir_bytes;

use crate::util::{format_copy, irregular_blocks, is_parquet, promtool_blocks, spec, tsdb_bytes};

/// Arguments of `bench convert`.
#[derive(Debug, clap::Args)]
pub(crate) struct Args {
    /// Scrape targets (each has ingest::datagen::SERIES_PER_TARGET series).
    #[arg(long, default_value_t = 200)]
    targets: usize,
    /// Hours of data (promtool cuts 2h blocks).
    #[arg(long, default_value_t = 12.0)]
    hours: f64,
    /// Scrape interval in seconds.
    #[arg(long, default_value_t = 15.0)]
    interval: f64,
    /// Targets of the irregular-value data set (24 series each); 0 skips it.
    #[arg(long, default_value_t = 100)]
    irregular_targets: usize,
    /// Keep the work directory (printed) instead of deleting it.
    #[arg(long)]
    keep: bool,
}

/// Reads every sample of every block of `dir` with `BlockReader` (no page cache); samples/s.
async fn read_rate(dir: &std::path::Path) -> Result<f64, String> {
    let bucket = Bucket::local(dir).map_err(|e| e.to_string())?;
    let t = Instant::now();
    let mut n = 0u64;
    for id in bucket.list_blocks().await.map_err(|e| e.to_string())? {
        let r = engine::BlockReader::open(&bucket, &id).await.map_err(|e| e.to_string())?;
        let ids: Vec<u32> = (0..r.index().len() as u32).collect();
        for s in r.read_samples(&ids, i64::MIN, i64::MAX).await.map_err(|e| e.to_string())? {
            n += s.timestamps.len() as u64;
        }
    }
    Ok(n as f64 / t.elapsed().as_secs_f64())
}

pub(crate) fn run(a: Args) -> Result<(), String> {
    let work = tempfile::tempdir().map_err(|e| format!("temp dir: {e}"))?;
    let rt = crate::util::runtime()?;
    let fleet = spec(a.targets, a.hours, a.interval)?;
    let prom = promtool_blocks("convert", &fleet, work.path(), "prom")?;
    measure(&rt, work.path(), "fleet", &prom, 0.35)?;
    if a.irregular_targets > 0 {
        let irregular = spec(a.irregular_targets, a.hours, a.interval)?;
        let dir = irregular_blocks("convert", &irregular, work.path())?;
        measure(&rt, work.path(), "irregular", &dir, 0.6)?;
    }
    if a.keep {
        let kept = work.keep();
        println!("work dir kept: {}", kept.display());
    }
    Ok(())
}

fn measure(
    rt: &tokio::runtime::Runtime,
    work: &std::path::Path,
    name: &str,
    prom: &std::path::Path,
    target: f64,
) -> Result<(), String> {
    let tsdb_bytes = tsdb_bytes(prom);

    // 1. decode only (TSDB reader)
    let t = Instant::now();
    let mut decoded = 0u64;
    for dir in ingest::tsdb::list_blocks(prom).map_err(|e| e.to_string())? {
        let b = ingest::tsdb::Block::open(&dir).map_err(|e| e.to_string())?;
        for s in b.series() {
            decoded += s.map_err(|e| e.to_string())?.timestamps.len() as u64;
        }
    }
    let decode_s = t.elapsed().as_secs_f64();

    // 2. full conversion into a local bucket (format v2)
    let bdir = work.join(format!("bucket-{name}"));
    let bucket = Bucket::local(&bdir).map_err(|e| e.to_string())?;
    let t = Instant::now();
    let report =
        rt.block_on(convert_path(prom, &bucket, &ConvertOptions::default(), &|_| {})).map_err(|e| e.to_string())?;
    let convert_s = t.elapsed().as_secs_f64();
    if let Some((p, e)) = report.failed.first() {
        return Err(format!("conversion of {} failed: {e}", p.display()));
    }
    let samples = report.samples;
    if samples != decoded {
        return Err(format!("sample counts differ: decoded {decoded}, converted {samples}"));
    }
    // 3. the same blocks in format v1
    let v1dir = work.join(format!("bucket-{name}-v1"));
    rt.block_on(format_copy(&bdir, &v1dir, 1))?;
    let v2_bytes = dir_bytes(&bdir, &is_parquet);
    let v1_bytes = dir_bytes(&v1dir, &is_parquet);
    // 4. reads, alternating formats, best of 3
    let (mut r1, mut r2) = (0f64, 0f64);
    for _ in 0..3 {
        r1 = r1.max(rt.block_on(read_rate(&v1dir))?);
        r2 = r2.max(rt.block_on(read_rate(&bdir))?);
    }

    let per = |b: u64| b as f64 / samples as f64;
    let tsdb_bps = per(tsdb_bytes);
    let rate = samples as f64 / convert_s;
    println!(
        "\nbench convert, {name}: {} series, {samples} samples in {} blocks",
        report.series,
        report.converted.len()
    );
    println!("{:<36} {:>14} {:>14} {:>8}", "measure", "strata", "reference", "ratio");
    println!(
        "{:<36} {:>14.3} {:>14.3} {:>8.3}   (target <= {target}; reference: Prometheus TSDB index+chunks)",
        "bytes/sample, format v2",
        per(v2_bytes),
        tsdb_bps,
        per(v2_bytes) / tsdb_bps
    );
    println!(
        "{:<36} {:>14.3} {:>14.3} {:>8.3}   (v2 / v1: {:.3})",
        "bytes/sample, format v1",
        per(v1_bytes),
        tsdb_bps,
        per(v1_bytes) / tsdb_bps,
        v2_bytes as f64 / v1_bytes as f64
    );
    println!(
        "{:<36} {:>14.0} {:>14.0} {:>8.3}   (target >= 1.0; reference: 10M samples/s)",
        "convert samples/s (end to end, v2)",
        rate,
        10e6,
        rate / 10e6
    );
    println!(
        "{:<36} {:>14.0} {:>14.0} {:>8.3}   (target >= 1.0; reference: v1 read samples/s)",
        "read samples/s (v2 vs v1, best of 3)",
        r2,
        r1,
        r2 / r1
    );
    println!("{:<36} {:>14.0}", "TSDB decode samples/s (1 thread)", decoded as f64 / decode_s);
    Ok(())
}
