//! `bench sql`: SQL over a bucket, Strata's Flight SQL server (queried with the ADBC Flight SQL
//! client) vs DuckDB reading the same Parquet files, measured in the same run by the same Python
//! harness (`bench/python/sql_bench.py`).
//!
//! The data: one metric `node_cpu` with `--series` series (labels `instance` x `cpu`, 10 CPUs per
//! instance), a sample every `--interval` seconds over `--hours`, one block per 2 h. The questions
//! (the same on both sides, answers compared by row count):
//!
//! ```text
//!   aggregate  avg(value) GROUP BY instance, date_bin('5 minutes', timestamp)
//!   filter     every sample of one instance (a label filter)
//!   top-N      the 10 instances with the highest max(value)
//!   stream     every sample of the last hour, streamed to the client (rows/s)
//! ```

use std::path::PathBuf;
use std::process::Command;
use std::time::Instant;

use engine::{BlockWriter, BlockWriterOptions, Bucket, Labels};
use flight::{FlightSqlMetrics, SqlCatalog, StatementLimits, StrataFlightSql};

/// Arguments of `bench sql`.
#[derive(Debug, clap::Args)]
pub(crate) struct Args {
    /// Series (10 per instance).
    #[arg(long, default_value_t = 10_000)]
    series: usize,
    /// Hours of data (one block per 2 h).
    #[arg(long, default_value_t = 24)]
    hours: u32,
    /// Seconds between samples.
    #[arg(long, default_value_t = 15)]
    interval: u32,
    /// Timed runs per question and system (the best is reported).
    #[arg(long, default_value_t = 3)]
    runs: u32,
    /// Python with adbc-driver-flightsql and duckdb (scripts/install-test-deps makes it).
    #[arg(long, default_value = "/var/tmp/strata-venv/bin/python")]
    python: PathBuf,
}

const BLOCK_MS: i64 = 2 * 3_600_000;

async fn write_bucket(bucket: &Bucket, args: &Args) -> Result<u64, String> {
    let step = i64::from(args.interval) * 1000;
    let end = i64::from(args.hours) * 3_600_000;
    let mut labels: Vec<Labels> = (0..args.series)
        .map(|i| {
            let inst = format!("host-{:05}", i / 10);
            let cpu = format!("{}", i % 10);
            Labels::from_pairs([("__name__", "node_cpu"), ("cpu", cpu.as_str()), ("instance", inst.as_str())])
        })
        .collect();
    labels.sort();
    let mut samples = 0u64;
    let mut start = 0;
    while start < end {
        let stop = (start + BLOCK_MS).min(end);
        let opts = BlockWriterOptions::new(ulid::Ulid::new(), start, stop);
        let mut w = BlockWriter::new(bucket.clone(), opts).map_err(|e| e.to_string())?;
        let ts: Vec<i64> = (start..stop).step_by(step as usize).collect();
        for (i, l) in labels.iter().enumerate() {
            // A gauge between 0 and 100 with two decimals, different per series and time.
            let vs: Vec<f64> = ts.iter().map(|t| ((t / step + i as i64 * 7919) % 10_000) as f64 / 100.0).collect();
            w.append_series(l, &ts, &vs).await.map_err(|e| e.to_string())?;
            samples += ts.len() as u64;
        }
        w.finish().await.map_err(|e| e.to_string())?;
        start = stop;
    }
    Ok(samples)
}

/// Runs `bench sql`.
pub(crate) fn run(args: Args) -> Result<(), String> {
    let rt = crate::util::runtime()?;
    rt.block_on(run_async(args))
}

async fn run_async(args: Args) -> Result<(), String> {
    let work = tempfile::tempdir().map_err(|e| e.to_string())?;
    let bucket_dir = work.path().join("bucket");
    let bucket = Bucket::local(&bucket_dir).map_err(|e| e.to_string())?;
    let t = Instant::now();
    let samples = write_bucket(&bucket, &args).await?;
    println!(
        "bench sql: {} series x {} h every {} s = {samples} samples in {} blocks, written in {:.1} s",
        args.series,
        args.hours,
        args.interval,
        args.hours.div_ceil(2),
        t.elapsed().as_secs_f64()
    );

    let catalog = SqlCatalog::new(bucket, vec![], StatementLimits::default()).map_err(|e| e.to_string())?;
    catalog.refresh().await.map_err(|e| e.to_string())?;
    let service = StrataFlightSql::new(catalog, FlightSqlMetrics::default()).map_err(|e| e.to_string())?;
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.map_err(|e| e.to_string())?;
    let addr = listener.local_addr().map_err(|e| e.to_string())?;
    let routes = flight::server::routes(service, None);
    let server = tokio::spawn(
        tonic::transport::Server::builder()
            .add_routes(routes)
            .serve_with_incoming(tonic::transport::server::TcpIncoming::from(listener)),
    );

    let script = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("python/sql_bench.py");
    let end_ms = i64::from(args.hours) * 3_600_000;
    let py = args.python.clone();
    let bucket_s = bucket_dir.display().to_string();
    let runs = args.runs.to_string();
    let uri = format!("grpc://{addr}");
    let out = tokio::task::spawn_blocking(move || {
        Command::new(&py).arg(&script).args([&uri, &bucket_s, &end_ms.to_string(), &runs]).output()
    })
    .await
    .map_err(|e| e.to_string())?
    .map_err(|e| format!("{}: {e}", args.python.display()))?;
    server.abort();
    print!("{}", String::from_utf8_lossy(&out.stdout));
    if !out.status.success() {
        return Err(format!("sql_bench.py failed: {}", String::from_utf8_lossy(&out.stderr)));
    }
    Ok(())
}
