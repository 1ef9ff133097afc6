//! `bench promql`: engine-only PromQL latency over a bucket of Strata blocks (issue 3's base numbers).
//!
//! Data: `c_total` counters (10k series: 10 jobs x 1000 instances) and a classic histogram
//! `h_bucket` (1250 instances x 8 buckets = 10k series), one sample per 60 s for `--hours`, written
//! as 2h blocks with the engine's BlockWriter into a local bucket. Each query runs through
//! `query::Engine` over `BucketSource`; the bench prints wall time, input samples per second
//! processed and the peak heap growth during the query (measured by a counting allocator).

use std::sync::Arc;
use std::time::Instant;

use engine::{BlockWriter, BlockWriterOptions, Bucket, BucketSource, Labels};

use crate::alloc::{current, peak, reset_peak};

/// Arguments of `bench promql`.
#[derive(Debug, clap::Args)]
pub(crate) struct Args {
    /// Hours of data.
    #[arg(long, default_value_t = 24)]
    hours: i64,
    /// Instances per job for the counter (10 jobs).
    #[arg(long, default_value_t = 1000)]
    instances: usize,
    /// Repetitions per query (the best time is reported).
    #[arg(long, default_value_t = 3)]
    runs: usize,
    /// Storage format versions to write the data in; each query runs on each, in the same run.
    #[arg(long, value_delimiter = ',', default_value = "2,1")]
    formats: Vec<u32>,
    /// Partition counts to run every query with (`query::EngineOptions::partitions`), comma
    /// separated; default: 1 and the machine's cores, to show what the second core buys.
    #[arg(long, value_delimiter = ',')]
    partitions: Vec<usize>,
}

const STEP_MS: i64 = 60_000;
const BLOCK_MS: i64 = 2 * 3_600_000;
const START_MS: i64 = 1_700_006_400_000; // a multiple of 2h
const BUCKETS: [&str; 8] = ["0.005", "0.01", "0.05", "0.1", "0.5", "1", "5", "+Inf"];

fn series_set(instances: usize) -> Vec<(Labels, u64)> {
    let mut v = Vec::new();
    for j in 0..10 {
        for i in 0..instances {
            let l = Labels::from_pairs([
                ("__name__", "c_total".to_string()),
                ("job", format!("job-{j}")),
                ("instance", format!("i-{i:05}")),
            ]);
            v.push((l, (j * instances + i) as u64));
        }
    }
    for i in 0..(instances * 10 / BUCKETS.len()) {
        for (b, le) in BUCKETS.iter().enumerate() {
            let l = Labels::from_pairs([
                ("__name__", "h_bucket".to_string()),
                ("job", format!("job-{}", i % 10)),
                ("instance", format!("h-{i:05}")),
                ("le", le.to_string()),
            ]);
            v.push((l, (b as u64 + 1) * 7 + i as u64));
        }
    }
    v.sort_by(|a, b| a.0.cmp(&b.0));
    v
}

async fn build_bucket(bucket: &Bucket, a: &Args, format: u32) -> Result<u64, String> {
    let enc = engine::rewrite::encoding_for(format).map_err(|e| e.to_string())?;
    let series = series_set(a.instances);
    let mut total = 0u64;
    let blocks = (a.hours * 3_600_000 + BLOCK_MS - 1) / BLOCK_MS;
    for blk in 0..blocks {
        let min_t = START_MS + blk * BLOCK_MS;
        let max_t = (min_t + BLOCK_MS).min(START_MS + a.hours * 3_600_000);
        let ulid = ulid::Ulid::from_parts(min_t as u64, blk as u128 + 1);
        let mut w = BlockWriter::with_encoding(bucket.clone(), BlockWriterOptions::new(ulid, min_t, max_t), enc)
            .map_err(|e| e.to_string())?;
        let ts: Vec<i64> = (min_t..max_t).step_by(STEP_MS as usize).collect();
        for (l, seed) in &series {
            // a counter growing by an uneven but deterministic amount per step
            let base = (blk * ts.len() as i64) as f64;
            let vs: Vec<f64> =
                (0..ts.len()).map(|k| ((base + k as f64) * ((seed % 13) as f64 + 1.0)).floor()).collect();
            w.append_series(l, &ts, &vs).await.map_err(|e| e.to_string())?;
            total += ts.len() as u64;
        }
        w.finish().await.map_err(|e| e.to_string())?;
    }
    Ok(total)
}

pub(crate) fn run(a: Args) -> Result<(), String> {
    let rt = crate::util::runtime()?;
    let mut sources: Vec<(u32, Arc<dyn engine::SeriesSource>)> = Vec::new();
    let mut dirs = Vec::new();
    for &format in &a.formats {
        let dir = tempfile::tempdir().map_err(|e| e.to_string())?;
        let bucket = Bucket::local(dir.path()).map_err(|e| e.to_string())?;
        let t = Instant::now();
        let total = rt.block_on(build_bucket(&bucket, &a, format))?;
        let bytes = ingest::testkit::dir_bytes(dir.path(), &crate::util::is_parquet);
        eprintln!(
            "bench promql: format {format}: wrote {total} samples in {:.1}s, {:.3} bytes/sample",
            t.elapsed().as_secs_f64(),
            bytes as f64 / total as f64
        );
        let src = BucketSource::new(bucket);
        rt.block_on(src.sync()).map_err(|e| e.to_string())?;
        sources.push((format, Arc::new(src)));
        dirs.push(dir);
    }
    let mut partitions = a.partitions.clone();
    if partitions.is_empty() {
        partitions = vec![1, query::EngineOptions::default().partitions];
        partitions.dedup();
    }

    let end = START_MS + a.hours * 3_600_000 - STEP_MS;
    let per_series = (a.hours * 3_600_000 / STEP_MS) as f64;
    let counters = 10.0 * a.instances as f64;
    let hist = (a.instances * 10 / BUCKETS.len() * BUCKETS.len()) as f64;
    let cases: Vec<(&str, String, f64)> = vec![
        ("selector 10k series, 1d @60s", "c_total".into(), counters * per_series),
        ("sum by (job) (rate(c[5m]))", "sum by (job) (rate(c_total[5m]))".into(), counters * per_series),
        (
            "histogram_quantile(0.9, ...)",
            "histogram_quantile(0.9, sum by (le) (rate(h_bucket[5m])))".into(),
            hist * per_series,
        ),
        ("topk(10, rate(c[5m]))", "topk(10, rate(c_total[5m]))".into(), counters * per_series),
    ];
    println!(
        "{:<32} {:>6} {:>10} {:>10} {:>16} {:>14} {:>10}",
        "range query at 60s step", "format", "partitions", "best ms", "samples/s", "peak heap MiB", "series"
    );
    for ((name, q, input), &parts) in cases.iter().flat_map(|c| partitions.iter().map(move |p| (c, p))) {
        let opts = query::EngineOptions { partitions: parts.max(1), ..query::EngineOptions::default() };
        let engines: Vec<(u32, query::Engine)> =
            sources.iter().map(|(f, src)| (*f, query::Engine::new(Arc::clone(src), opts.clone()))).collect();
        // Runs alternate between the formats so that a busy moment hits both alike.
        let mut best = vec![f64::MAX; engines.len()];
        let mut peak_mib = vec![0.0f64; engines.len()];
        let mut nseries = vec![0usize; engines.len()];
        for _ in 0..a.runs.max(1) {
            for (i, (_, engine)) in engines.iter().enumerate() {
                let before = current();
                reset_peak();
                let t = Instant::now();
                let r = rt.block_on(engine.range_query(q, START_MS, end, STEP_MS)).map_err(|e| format!("{q}: {e}"))?;
                best[i] = best[i].min(t.elapsed().as_secs_f64());
                peak_mib[i] = peak_mib[i].max((peak().saturating_sub(before)) as f64 / (1024.0 * 1024.0));
                if let query::Value::Matrix(m) = &r.value {
                    nseries[i] = m.len();
                }
            }
        }
        for (i, (format, _)) in engines.iter().enumerate() {
            println!(
                "{name:<32} {format:>6} {parts:>10} {:>10.1} {:>16.0} {:>14.1} {:>10}",
                best[i] * 1000.0,
                input / best[i],
                peak_mib[i],
                nseries[i]
            );
        }
    }
    drop(dirs);
    Ok(())
}
