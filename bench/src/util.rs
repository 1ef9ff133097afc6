//! Pieces the benchmark commands share (processes, ports, copies and sizes come from
//! `ingest::testkit`, which the end-to-end tests use too): the data spec and promtool blocks of it.

use std::path::{Path, PathBuf};
use std::process::Command;

use ingest::testkit::{Daemon, free_port};

use ingest::datagen::{self, GenSpec};

/// True for `*.parquet` files.
pub(crate) fn is_parquet(p: &Path) -> bool {
    p.extension().and_then(|s| s.to_str()) == Some("parquet")
}

/// The spec of `targets` scrape targets over `hours` at `interval` seconds (default seed).
pub(crate) fn spec(targets: usize, hours: f64, interval: f64) -> Result<GenSpec, String> {
    GenSpec::fleet(targets, hours, interval, GenSpec::default().seed).map_err(|e| e.to_string())
}

/// Writes `spec` as OpenMetrics under `work` and makes TSDB blocks of it with
/// `promtool tsdb create-blocks-from openmetrics` into `work/<dir>`; returns that directory.
pub(crate) fn promtool_blocks(bench_name: &str, spec: &GenSpec, work: &Path, dir: &str) -> Result<PathBuf, String> {
    promtool_blocks_from(bench_name, spec, work, dir, datagen::write_openmetrics)
}

/// [`promtool_blocks`] of `spec`'s targets with irregular values
/// (`ingest::datagen::write_irregular_openmetrics`), into `work/irregular`.
pub(crate) fn irregular_blocks(bench_name: &str, spec: &GenSpec, work: &Path) -> Result<PathBuf, String> {
    promtool_blocks_from(bench_name, spec, work, "irregular", datagen::write_irregular_openmetrics)
}

/// A gRPC channel to `addr` (host:port) over plain HTTP/2, connected now: tonic's own client, no
/// Strata transport code.
pub(crate) async fn grpc_channel(addr: &str) -> Result<tonic::transport::Channel, String> {
    tonic::transport::Channel::from_shared(format!("http://{addr}"))
        .map_err(|e| format!("{addr}: {e}"))?
        .connect()
        .await
        .map_err(|e| format!("connect {addr}: {e}"))
}

/// The multi-threaded tokio runtime a benchmark drives its async work on.
pub(crate) fn runtime() -> Result<tokio::runtime::Runtime, String> {
    tokio::runtime::Builder::new_multi_thread().enable_all().build().map_err(|e| e.to_string())
}

/// Like [`promtool_blocks`] with another generator (`ingest::datagen::write_*_openmetrics`).
pub(crate) fn promtool_blocks_from(
    bench_name: &str,
    spec: &GenSpec,
    work: &Path,
    dir: &str,
    generate: fn(&GenSpec, &mut std::io::BufWriter<std::fs::File>) -> std::io::Result<()>,
) -> Result<PathBuf, String> {
    let om = work.join(format!("{dir}.om"));
    {
        let f = std::fs::File::create(&om).map_err(|e| format!("{}: {e}", om.display()))?;
        let mut w = std::io::BufWriter::new(f);
        generate(spec, &mut w).map_err(|e| format!("{}: {e}", om.display()))?;
        std::io::Write::flush(&mut w).map_err(|e| format!("{}: {e}", om.display()))?;
    }
    let out = work.join(dir);
    eprintln!("bench {bench_name}: promtool tsdb create-blocks-from openmetrics ({}) ...", om.display());
    ingest::testkit::promtool_blocks(Path::new("promtool"), &om, &out)
        .map_err(|e| format!("{e} (promtool is in the Debian package `prometheus`)"))?;
    Ok(out)
}

/// Copies the bucket directory `from` to `to` and rewrites every block there into format `format`
/// (the old blocks are then removed), for benchmarks that compare formats on the same data.
pub(crate) async fn format_copy(from: &Path, to: &Path, format: u32) -> Result<(), String> {
    ingest::testkit::copy_dir(from, to).map_err(|e| e.to_string())?;
    let bucket = engine::Bucket::local(to).map_err(|e| e.to_string())?;
    for id in bucket.list_blocks().await.map_err(|e| e.to_string())? {
        if let engine::rewrite::RewriteOutcome::Rewritten { .. } =
            engine::rewrite::rewrite_block(&bucket, &id, format, &|_| {}).await.map_err(|e| e.to_string())?
        {
            bucket.delete_block(&id).await.map_err(|e| e.to_string())?;
        }
    }
    Ok(())
}

/// Bytes of the TSDB blocks under `dir`: `index` and `chunks/` of ULID-named block directories (not
/// the WAL or the head chunks of a Prometheus data directory).
pub(crate) fn tsdb_bytes(dir: &Path) -> u64 {
    ingest::testkit::dir_bytes(dir, &|p| {
        let n = p.file_name().and_then(|s| s.to_str()).unwrap_or("");
        let parent = p.parent().and_then(|d| d.file_name()).and_then(|s| s.to_str()).unwrap_or("");
        let grand = p.parent().and_then(|d| d.parent()).and_then(|d| d.file_name()).and_then(|s| s.to_str());
        (n == "index" && ingest::tsdb::is_block_dir_name(parent))
            || (parent == "chunks" && grand.is_some_and(ingest::tsdb::is_block_dir_name))
    })
}

/// A Prometheus 2.42 serving the TSDB blocks under `tsdb` (nothing scraped, retention long enough to
/// keep every block), logging to `work/prometheus.log`: the daemon, its base URL and its log.
pub(crate) fn prometheus_over(tsdb: &Path, work: &Path) -> Result<(Daemon, String, PathBuf), String> {
    let cfg = work.join("prometheus.yml");
    std::fs::write(&cfg, "global:\n  scrape_interval: 1h\n").map_err(|e| format!("{}: {e}", cfg.display()))?;
    let port = free_port().map_err(|e| e.to_string())?;
    let log = work.join("prometheus.log");
    let d = Daemon::spawn(
        Command::new("prometheus")
            .arg(format!("--config.file={}", cfg.display()))
            .arg(format!("--storage.tsdb.path={}", tsdb.display()))
            .arg(format!("--web.listen-address=127.0.0.1:{port}"))
            .arg("--storage.tsdb.retention.time=100y"),
        &log,
    )
    .map_err(|e| format!("{e} (prometheus is in the Debian package `prometheus`)"))?;
    Ok((d, format!("http://127.0.0.1:{port}"), log))
}

/// The data flags of the benchmarks over a generated fleet (`bench http`, `bench series`).
#[derive(Debug, clap::Args)]
pub(crate) struct FleetArgs {
    /// Scrape targets (`ingest::datagen::SERIES_PER_TARGET` = 20 series each; 500 gives the
    /// issue's 10k series).
    #[arg(long, default_value_t = 500)]
    pub(crate) targets: usize,
    /// Hours of data.
    #[arg(long, default_value_t = 24.0)]
    pub(crate) hours: f64,
    /// Scrape interval in seconds.
    #[arg(long, default_value_t = 60.0)]
    pub(crate) interval: f64,
}

impl FleetArgs {
    /// The spec of the fleet (default seed).
    pub(crate) fn spec(&self) -> Result<GenSpec, String> {
        spec(self.targets, self.hours, self.interval)
    }
}

/// Writes a FILESYSTEM objstore config for the bucket directory `bucket_dir` to `path`.
pub(crate) fn write_fs_bucket_config(path: &Path, bucket_dir: &Path) -> Result<(), String> {
    std::fs::write(path, format!("type: FILESYSTEM\nconfig:\n  directory: {}\n", bucket_dir.display()))
        .map_err(|e| format!("{}: {e}", path.display()))
}

/// Converts the TSDB blocks under `blocks` into a filesystem bucket `work/bucket` (every block or
/// an error) and writes its objstore config `work/bucket.yml`; returns the config's path and the
/// number of blocks written.
pub(crate) fn converted_bucket(
    rt: &tokio::runtime::Runtime,
    blocks: &Path,
    work: &Path,
) -> Result<(PathBuf, usize), String> {
    let bdir = work.join("bucket");
    let bucket = engine::bucket::Bucket::local(&bdir).map_err(|e| e.to_string())?;
    let opts = ingest::convert::ConvertOptions::default();
    let report =
        rt.block_on(ingest::convert::convert_path(blocks, &bucket, &opts, &|_| {})).map_err(|e| e.to_string())?;
    if let Some((p, e)) = report.failed.first() {
        return Err(format!("convert {}: {e}", p.display()));
    }
    let cfg = work.join("bucket.yml");
    write_fs_bucket_config(&cfg, &bdir)?;
    Ok((cfg, report.converted.len()))
}
