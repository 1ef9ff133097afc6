//! `strata query`: the PromQL engine over a bucket, served as the Prometheus HTTP API v1.
//!
//! The bucket's block list is re-read every `--sync-block-duration` (Thanos store's flag), so new
//! blocks are served without a restart; the server is ready once the first sync finished.
//! [`serve_bucket`] is shared with `strata up`.

use std::collections::BTreeMap;
use std::path::PathBuf;
use std::sync::Arc;
use std::time::{Duration, Instant};

use clap::Args;
use engine::bucket::Bucket;
use engine::bucket_source::BucketSource;
use engine::{MergedSource, SeriesSource};
use query::api::params::parse_duration;
use query::api::{ApiConfig, ApiMetrics, ApiState};

use crate::CliError;
use crate::server::{self, Readiness, SyncMetrics};

/// The `--enable-feature` value that turns on Prometheus's experimental PromQL functions.
const EXPERIMENTAL_FUNCTIONS: &str = "promql-experimental-functions";
/// The `--enable-feature` value that turns on Prometheus's delayed `__name__` removal.
const DELAYED_NAME_REMOVAL: &str = "promql-delayed-name-removal";
/// Prometheus's feature that makes `rate`, `increase`, `irate` and `resets` use start timestamps:
/// refused, since bucket blocks, the head and remote write 1.0 store none.
const USE_START_TIMESTAMPS: &str = "use-start-timestamps";

/// Arguments of `strata query`.
#[derive(Debug, Args)]
pub(crate) struct QueryArgs {
    /// Object storage configuration file (Thanos objstore YAML).
    #[arg(long = "objstore.config-file")]
    objstore_config_file: PathBuf,
    /// Listen address of the HTTP API (host:port).
    #[arg(long = "http-address", default_value = "127.0.0.1:10902")]
    http_address: String,
    #[command(flatten)]
    engine: EngineArgs,
}

/// PromQL engine and bucket-sync flags shared by `strata query` and `strata up`.
#[derive(Debug, Clone, Args)]
pub(crate) struct EngineArgs {
    /// Most samples a single query may load into memory at once.
    #[arg(long = "query.max-samples", default_value_t = 50_000_000)]
    max_samples: usize,
    /// Longest a query may run (Prometheus duration, e.g. 2m).
    #[arg(long = "query.timeout", default_value = "2m")]
    timeout: String,
    /// Most queries executing at once; further queries wait in a queue.
    #[arg(long = "query.max-concurrent", default_value_t = 20)]
    max_concurrent: usize,
    /// How far back an instant selector looks for the latest sample.
    #[arg(long = "query.lookback-delta", default_value = "5m")]
    lookback_delta: String,
    /// Optional features, as Prometheus's flag: `promql-experimental-functions`,
    /// `promql-delayed-name-removal` (repeatable or comma-separated).
    #[arg(long = "enable-feature", value_delimiter = ',')]
    features: Vec<String>,
    /// How often the bucket's block list is re-read (new blocks are served without a restart).
    #[arg(long = "sync-block-duration", visible_alias = "sync-interval", default_value = "3m")]
    sync_interval: String,
    /// Memory for decoded sample pages of the bucket's blocks (LRU; e.g. 512MiB, 2GiB; 0 turns
    /// the cache off). Repeated queries over the same data copy from it instead of decoding.
    #[arg(long = "store.page-cache-size", default_value = "512MiB")]
    page_cache_size: String,
}

fn duration_flag(flag: &str, value: &str) -> Result<Duration, CliError> {
    let ms = parse_duration(value).map_err(|e| CliError::Usage(format!("--{flag}: {e}")))?;
    if ms <= 0 {
        return Err(CliError::Usage(format!("--{flag} {value}: must be positive")));
    }
    Ok(Duration::from_millis(ms.unsigned_abs()))
}

impl EngineArgs {
    fn page_cache_bytes(&self) -> Result<usize, CliError> {
        match self.page_cache_size.trim() {
            "0" => Ok(0),
            v => crate::receive_cmd::parse_size("store.page-cache-size", v),
        }
    }

    fn config(&self, mut flags: BTreeMap<String, String>) -> Result<(ApiConfig, Duration), CliError> {
        let timeout = duration_flag("query.timeout", &self.timeout)?;
        let lookback = duration_flag("query.lookback-delta", &self.lookback_delta)?;
        let sync = duration_flag("sync-block-duration", &self.sync_interval)?;
        let (mut experimental, mut delayed_name_removal) = (false, false);
        for f in &self.features {
            match f.trim() {
                EXPERIMENTAL_FUNCTIONS => experimental = true,
                DELAYED_NAME_REMOVAL => delayed_name_removal = true,
                USE_START_TIMESTAMPS => {
                    return Err(CliError::Usage(format!(
                        "--enable-feature {USE_START_TIMESTAMPS}: not supported: bucket blocks, the head and \
                         remote write 1.0 store no start timestamps, so queries cannot use them (docs/promql.md)"
                    )));
                }
                "" => {}
                other => return Err(CliError::Usage(format!("--enable-feature {other:?}: unknown feature"))),
            }
        }
        if self.max_concurrent == 0 {
            return Err(CliError::Usage("--query.max-concurrent must be at least 1".into()));
        }
        let engine = query::EngineOptions {
            lookback_delta_ms: i64::try_from(lookback.as_millis()).unwrap_or(i64::MAX),
            max_samples: self.max_samples,
            timeout,
            enable_experimental_functions: experimental,
            enable_delayed_name_removal: delayed_name_removal,
            // Refused above: bucket blocks and the head store no start timestamps (docs/promql.md).
            use_start_timestamps: false,
            // A query's series are dealt out to one partition per core.
            ..query::EngineOptions::default()
        };
        flags.insert("query.max-samples".into(), self.max_samples.to_string());
        flags.insert("query.timeout".into(), self.timeout.clone());
        flags.insert("query.max-concurrent".into(), self.max_concurrent.to_string());
        flags.insert("query.lookback-delta".into(), self.lookback_delta.clone());
        flags.insert("enable-feature".into(), self.features.join(","));
        flags.insert("sync-block-duration".into(), self.sync_interval.clone());
        flags.insert("store.page-cache-size".into(), self.page_cache_size.clone());
        Ok((ApiConfig { engine, max_concurrent: self.max_concurrent, flags }, sync))
    }
}

/// Runs `strata query`.
pub(crate) async fn run(args: QueryArgs) -> Result<(), CliError> {
    let bucket = Bucket::from_config_file(&args.objstore_config_file)?;
    let flags = BTreeMap::from([
        ("objstore.config-file".to_string(), args.objstore_config_file.display().to_string()),
        ("http-address".to_string(), args.http_address.clone()),
    ]);
    serve_bucket("query", bucket, &args.http_address, &args.engine, flags, None).await
}

/// Remote write served beside the query API (`strata up`): the receive state and its cut interval.
#[derive(Debug)]
pub(crate) struct EmbeddedReceive {
    pub(crate) state: ingest::receive::ReceiveState,
    pub(crate) cut_every: Duration,
}

/// Serves the query API over the raw blocks of `bucket` on `http_address` until SIGINT/SIGTERM,
/// re-syncing the block list in the background. With `receive`, remote write is served on the same
/// address, PromQL sees the heads and the bucket merged, heads are cut into the bucket every
/// `cut_every` (the bucket is re-synced right after a cut, so no sample is ever invisible) and
/// everything left in the heads is cut on shutdown.
pub(crate) async fn serve_bucket(
    component: &'static str,
    bucket: Bucket,
    http_address: &str,
    engine: &EngineArgs,
    flags: BTreeMap<String, String>,
    receive: Option<EmbeddedReceive>,
) -> Result<(), CliError> {
    let (config, sync_interval) = engine.config(flags)?;
    tracing::info!(bucket = %bucket.describe(), component, "serving PromQL over the bucket");
    let mut registry = server::new_registry(component);
    let api_metrics = ApiMetrics::register(&mut registry);
    let sync_metrics = SyncMetrics::register(&mut registry);
    let bucket_source = Arc::new(BucketSource::with_page_cache_bytes(bucket, engine.page_cache_bytes()?));
    registry.register_collector(Box::new(server::PageCacheCollector(bucket_source.clone())));
    let (source, extra_routes): (Arc<dyn SeriesSource>, axum::Router) = match &receive {
        Some(r) => {
            r.state.register_metrics(&mut registry);
            let merged = MergedSource::new(vec![bucket_source.clone(), r.state.source()]);
            (Arc::new(merged), ingest::receive::router(r.state.clone()))
        }
        None => (bucket_source.clone(), axum::Router::new()),
    };
    let state = ApiState::new(source, config, api_metrics);
    let ready = Readiness::default();
    let sync = tokio::spawn(sync_loop(bucket_source.clone(), sync_interval, sync_metrics, ready.clone()));
    let cutter = receive.as_ref().map(|r| {
        let (stop, stopped) = tokio::sync::oneshot::channel::<()>();
        (stop, tokio::spawn(cut_loop(r.state.clone(), bucket_source.clone(), r.cut_every, stopped)))
    });
    let res = server::serve(http_address, query::api::router(state).merge(extra_routes), ready, registry).await;
    sync.abort();
    if let Some((stop, task)) = cutter {
        // let a cut in progress finish rather than abort it half-way
        let _ = stop.send(());
        let _ = task.await;
    }
    if let Some(r) = &receive {
        match r.state.cut_all(true).await {
            Ok(blocks) => tracing::info!(blocks, "heads cut on shutdown"),
            Err(e) => {
                tracing::error!("cutting the heads on shutdown failed (the WAL keeps the samples): {e}");
                return Err(CliError::Ingest(e));
            }
        }
    }
    res
}

/// Cuts finished blocks out of the heads every `every`, and re-syncs the bucket after a cut so the
/// new blocks are served before anything else happens.
async fn cut_loop(
    state: ingest::receive::ReceiveState,
    bucket: Arc<BucketSource>,
    every: Duration,
    mut stop: tokio::sync::oneshot::Receiver<()>,
) {
    loop {
        tokio::select! {
            _ = tokio::time::sleep(every) => {}
            _ = &mut stop => return,
        }
        match state.cut_all(false).await {
            Ok(0) => {}
            Ok(blocks) => {
                tracing::info!(blocks, "cut blocks from the heads");
                if let Err(e) = bucket.sync().await {
                    tracing::warn!("bucket sync after a cut failed: {e}");
                }
            }
            Err(e) => tracing::warn!("cutting the heads failed; will retry: {e}"),
        }
    }
}

/// Re-reads the block list every `interval` (every 5 s at most until the first sync succeeded)
/// and marks the server ready after the first successful sync.
async fn sync_loop(source: Arc<BucketSource>, interval: Duration, metrics: SyncMetrics, ready: Readiness) {
    loop {
        let started = Instant::now();
        match source.sync().await {
            Ok(()) => {
                let blocks = source.blocks().len();
                metrics.observe(true, started.elapsed().as_secs_f64(), blocks);
                if ready.is_ready() {
                    tracing::debug!(blocks, "bucket synced");
                } else {
                    tracing::info!(blocks, ms = started.elapsed().as_millis() as u64, "first bucket sync done; ready");
                    ready.set_ready();
                }
            }
            Err(e) => {
                metrics.observe(false, started.elapsed().as_secs_f64(), 0);
                tracing::warn!(error = %e, "bucket sync failed; will retry");
            }
        }
        let wait = if ready.is_ready() { interval } else { interval.min(Duration::from_secs(5)) };
        tokio::time::sleep(wait).await;
    }
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]
    use super::*;
    use clap::Parser;

    #[derive(Debug, Parser)]
    struct Cli {
        #[command(flatten)]
        engine: EngineArgs,
    }

    #[test]
    fn engine_flags() {
        let cli = Cli::parse_from(["x"]);
        let (cfg, sync) = cli.engine.config(BTreeMap::new()).unwrap();
        assert_eq!(cfg.engine.lookback_delta_ms, 300_000);
        assert_eq!(cfg.engine.max_samples, 50_000_000);
        assert_eq!(cfg.engine.timeout, Duration::from_secs(120));
        assert!(!cfg.engine.enable_experimental_functions);
        assert!(!cfg.engine.enable_delayed_name_removal);
        assert_eq!(cfg.max_concurrent, 20);
        assert_eq!(sync, Duration::from_secs(180));
        assert_eq!(cfg.flags["query.lookback-delta"], "5m");

        let cli = Cli::parse_from([
            "x",
            "--query.lookback-delta=1m30s",
            "--query.timeout=10",
            "--enable-feature=promql-experimental-functions,promql-delayed-name-removal",
            "--sync-interval=15s",
        ]);
        let (cfg, sync) = cli.engine.config(BTreeMap::new()).unwrap();
        assert_eq!(cfg.engine.lookback_delta_ms, 90_000);
        assert_eq!(cfg.engine.timeout, Duration::from_secs(10));
        assert!(cfg.engine.enable_experimental_functions);
        assert!(cfg.engine.enable_delayed_name_removal);
        assert_eq!(sync, Duration::from_secs(15));

        for bad in [["x", "--query.timeout=soon"], ["x", "--enable-feature=nope"], ["x", "--query.max-concurrent=0"]] {
            assert!(Cli::parse_from(bad).engine.config(BTreeMap::new()).is_err(), "{bad:?}");
        }

        // Start timestamps are refused with a reason, also next to a feature Strata has.
        let cli = Cli::parse_from(["x", "--enable-feature=promql-experimental-functions,use-start-timestamps"]);
        let err = cli.engine.config(BTreeMap::new()).unwrap_err().to_string();
        assert!(
            err.contains("use-start-timestamps: not supported") && err.contains("store no start timestamps"),
            "{err}"
        );
    }

    #[test]
    fn page_cache_size_flag() {
        assert_eq!(Cli::parse_from(["x"]).engine.page_cache_bytes().unwrap(), 512 << 20);
        assert_eq!(Cli::parse_from(["x", "--store.page-cache-size=2GiB"]).engine.page_cache_bytes().unwrap(), 2 << 30);
        assert_eq!(Cli::parse_from(["x", "--store.page-cache-size=0"]).engine.page_cache_bytes().unwrap(), 0);
        assert!(Cli::parse_from(["x", "--store.page-cache-size=lots"]).engine.page_cache_bytes().is_err());
    }
}
