//! `bench convert`: on the same promtool-made data, bytes per sample of the Strata blocks vs the source
//! TSDB blocks (index + chunks), TSDB decode throughput, and end-to-end conversion throughput.
//!
//! Targets (issue 2): Strata ≤ 0.8× the TSDB bytes; ≥ 10M samples/s converted on a 2-core machine.

use std::time::Instant;

use engine::bucket::Bucket;
use ingest::convert::{ConvertOptions, convert_path};

use ingest::testkit::dir_bytes;

use crate::util::{is_parquet, promtool_blocks, spec};

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
    /// Keep the work directory (printed) instead of deleting it.
    #[arg(long)]
    keep: bool,
}

pub(crate) fn run(a: Args) -> Result<(), String> {
    let work = tempfile::tempdir().map_err(|e| format!("temp dir: {e}"))?;
    let spec = spec(a.targets, a.hours, a.interval)?;
    let prom = promtool_blocks("convert", &spec, work.path(), "prom")?;
    let tsdb_bytes = dir_bytes(&prom, &|p| {
        let n = p.file_name().and_then(|s| s.to_str()).unwrap_or("");
        n == "index" || p.parent().and_then(|d| d.file_name()).and_then(|s| s.to_str()) == Some("chunks")
    });

    let rt = tokio::runtime::Builder::new_multi_thread().enable_all().build().map_err(|e| e.to_string())?;

    // 1. decode only (TSDB reader)
    let t = Instant::now();
    let mut decoded = 0u64;
    for dir in ingest::tsdb::list_blocks(&prom).map_err(|e| e.to_string())? {
        let b = ingest::tsdb::Block::open(&dir).map_err(|e| e.to_string())?;
        for s in b.series() {
            decoded += s.map_err(|e| e.to_string())?.timestamps.len() as u64;
        }
    }
    let decode_s = t.elapsed().as_secs_f64();

    // 2. full conversion into a local bucket
    let bdir = work.path().join("bucket");
    let bucket = Bucket::local(&bdir).map_err(|e| e.to_string())?;
    let t = Instant::now();
    let report =
        rt.block_on(convert_path(&prom, &bucket, &ConvertOptions::default(), &|_| {})).map_err(|e| e.to_string())?;
    let convert_s = t.elapsed().as_secs_f64();
    if let Some((p, e)) = report.failed.first() {
        return Err(format!("conversion of {} failed: {e}", p.display()));
    }
    let strata_bytes = dir_bytes(&bdir, &is_parquet);
    let samples = report.samples;
    if samples != decoded {
        return Err(format!("sample counts differ: decoded {decoded}, converted {samples}"));
    }

    let tsdb_bps = tsdb_bytes as f64 / samples as f64;
    let strata_bps = strata_bytes as f64 / samples as f64;
    let rate = samples as f64 / convert_s;
    println!("bench convert: {} series, {samples} samples in {} blocks", report.series, report.converted.len());
    println!("{:<34} {:>14} {:>14} {:>8}", "measure", "strata", "reference", "ratio");
    println!(
        "{:<34} {:>14.3} {:>14.3} {:>8.3}   (target <= 0.8; reference: Prometheus TSDB index+chunks)",
        "bytes/sample",
        strata_bps,
        tsdb_bps,
        strata_bps / tsdb_bps
    );
    println!(
        "{:<34} {:>14} {:>14} {:>8.3}",
        "bytes total",
        strata_bytes,
        tsdb_bytes,
        strata_bytes as f64 / tsdb_bytes as f64
    );
    println!(
        "{:<34} {:>14.0} {:>14.0} {:>8.3}   (target >= 1.0; reference: 10M samples/s)",
        "convert samples/s (end to end)",
        rate,
        10e6,
        rate / 10e6
    );
    println!("{:<34} {:>14.0}", "TSDB decode samples/s (1 thread)", decoded as f64 / decode_s);
    if a.keep {
        let kept = work.keep();
        println!("work dir kept: {}", kept.display());
    }
    Ok(())
}
