//! `strata store`: the store gateway. Serves the raw blocks of a bucket over the Thanos StoreAPI
//! (`thanos.Store` + `thanos.info.Info`, gRPC on `--grpc-address`) so that any querier, Strata's or
//! Thanos's, can read them; `/metrics`, `/-/healthy` and `/-/ready` on `--http-address`.
//!
//! ```text
//!   bucket ──sync every --sync-block-duration──► BucketSource (blocks in --min-time..--max-time)
//!                                                  └─► StoreApi ─► gRPC (ready after the first sync)
//! ```
//!
//! The block list is re-read every `--sync-block-duration`: new blocks are served, deleted and
//! deletion-marked ones dropped, partial uploads (no `meta.json`) ignored. A sync reads only the
//! new blocks' meta.json: a block's series table and samples footer are opened on first use and
//! closed, least recently used first, beyond `--index-cache-size`. Blocks carry their own
//! external labels (`meta.json`), so the store has no `--label` flag, as in Thanos.
//! `--selector.relabel-config` shards a bucket between gateways: each block's external labels plus
//! `__block_id` go through the relabel rules, and only the blocks they keep are served.

use std::path::PathBuf;
use std::sync::Arc;

use axum::Router;
use clap::Args;
use engine::Labels;
use engine::bucket::Bucket;
use engine::bucket_source::{BlockFilter, BucketSource};
use engine::disk_cache::DiskCachedStore;
use engine::meta::BlockMeta;
use engine::relabel::{BLOCK_ID_LABEL, RelabelConfig};
use query::storeapi::server::{StoreApi, StoreApiMetrics, StoreApiOptions};

use crate::CliError;
use crate::query_cmd::sync_loop;
use crate::server::{self, BucketStoreCollector, PageCacheCollector, Readiness, Shutdown, SyncMetrics};

/// Arguments of `strata store`.
#[derive(Debug, Args)]
pub(crate) struct StoreArgs {
    /// Object storage configuration file (Thanos objstore YAML).
    #[arg(long = "objstore.config-file")]
    objstore_config_file: PathBuf,
    /// Listen address of the StoreAPI (gRPC, host:port).
    #[arg(long = "grpc-address", default_value = "127.0.0.1:10901")]
    grpc_address: String,
    /// Listen address of /metrics, /-/healthy and /-/ready (host:port).
    #[arg(long = "http-address", default_value = "127.0.0.1:10902")]
    http_address: String,
    /// How often the bucket's block list is re-read.
    #[arg(long = "sync-block-duration", default_value = "3m")]
    sync_block_duration: String,
    /// Start of the time range served: RFC3339 or a duration relative to now (-1d, 2h45m; units
    /// ms, s, m, h, d, w, y). Blocks wholly before it are not loaded.
    #[arg(long = "min-time", default_value = "0000-01-01T00:00:00Z")]
    min_time: String,
    /// End of the time range served, like --min-time. Blocks wholly after it are not loaded.
    #[arg(long = "max-time", default_value = "9999-12-31T23:59:59Z")]
    max_time: String,
    /// Local directory caching each block's meta.json and series.parquet, so a restarted gateway
    /// does not download them again (without it, nothing is written locally). Files of blocks that
    /// left the bucket are removed after each sync.
    #[arg(long = "data-dir")]
    data_dir: Option<PathBuf>,
    #[command(flatten)]
    selector: SelectorArgs,
    #[command(flatten)]
    limits: crate::grpc::StoreLimitsArgs,
    /// Most memory the open blocks' series tables (labels, postings) and Parquet footers may hold;
    /// blocks open on first use and the least recently used are closed beyond this (KB, MB, GB,
    /// KiB, MiB, GiB).
    #[arg(long = "index-cache-size", default_value = "250MB")]
    index_cache_size: String,
    /// Memory for decoded sample pages of the blocks (LRU; e.g. 512MiB, 2GiB; 0 turns it off).
    #[arg(long = "store.page-cache-size", default_value = "512MiB")]
    page_cache_size: String,
}

/// `--selector.relabel-config(-file)`: Prometheus relabel rules choosing the blocks served, as
/// Thanos's store gateway takes them to shard a bucket between gateways.
#[derive(Debug, Args)]
pub(crate) struct SelectorArgs {
    /// File with relabel rules (Prometheus `relabel_configs` YAML) applied to each block's external
    /// labels plus `__block_id` (its ULID); blocks the rules drop are not served.
    #[arg(long = "selector.relabel-config-file", conflicts_with = "relabel_config")]
    relabel_config_file: Option<PathBuf>,
    /// The same rules given inline (YAML), instead of --selector.relabel-config-file.
    #[arg(long = "selector.relabel-config", allow_hyphen_values = true)]
    relabel_config: Option<String>,
}

impl SelectorArgs {
    /// The block filter the rules make, or `None` without rules.
    pub(crate) fn block_filter(&self) -> Result<Option<BlockFilter>, CliError> {
        let (text, origin) = match (&self.relabel_config_file, &self.relabel_config) {
            (Some(path), _) => (
                std::fs::read_to_string(path)
                    .map_err(|e| CliError::Usage(format!("--selector.relabel-config-file {}: {e}", path.display())))?,
                format!("--selector.relabel-config-file {}", path.display()),
            ),
            (None, Some(text)) => (text.clone(), "--selector.relabel-config".to_string()),
            (None, None) => return Ok(None),
        };
        let cfg = RelabelConfig::parse(&text, &origin)?;
        if cfg.is_empty() {
            return Ok(None);
        }
        Ok(Some(Arc::new(move |meta: &BlockMeta| {
            let mut labels = Labels::from_pairs(meta.thanos.labels.iter().map(|(k, v)| (k.as_str(), v.as_str())));
            labels.set(BLOCK_ID_LABEL, &meta.ulid);
            cfg.process(&labels).is_some()
        })))
    }
}

/// A `--min-time`/`--max-time` value: a fixed time, or an offset from the current time (evaluated
/// at each use, so the window moves with the clock), as Thanos's `TimeOrDurationValue`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum TimeOrDuration {
    /// Milliseconds since the epoch.
    At(i64),
    /// Milliseconds from now (negative: in the past).
    FromNow(i64),
}

impl TimeOrDuration {
    pub(crate) fn parse(flag: &str, v: &str) -> Result<Self, CliError> {
        if let Ok(t) = chrono::DateTime::parse_from_rfc3339(v) {
            return Ok(TimeOrDuration::At(t.timestamp_millis()));
        }
        let (sign, d) = match v.strip_prefix('-') {
            Some(d) => (-1, d),
            None => (1, v),
        };
        let ms = query::api::params::parse_duration(d).map_err(|_| {
            CliError::Usage(format!("--{flag} {v:?}: expected an RFC3339 time or a duration like -2w or 2h45m"))
        })?;
        Ok(TimeOrDuration::FromNow(sign * ms))
    }

    pub(crate) fn at(self, now_ms: i64) -> i64 {
        match self {
            TimeOrDuration::At(t) => t,
            TimeOrDuration::FromNow(d) => now_ms.saturating_add(d),
        }
    }
}

pub(crate) fn now_ms() -> i64 {
    chrono::Utc::now().timestamp_millis()
}

/// Runs `strata store` until SIGINT/SIGTERM.
pub(crate) async fn run(args: StoreArgs) -> Result<(), CliError> {
    let min_time = TimeOrDuration::parse("min-time", &args.min_time)?;
    let max_time = TimeOrDuration::parse("max-time", &args.max_time)?;
    let now = now_ms();
    if min_time.at(now) > max_time.at(now) {
        return Err(CliError::Usage(format!(
            "--min-time {:?} can't be greater than --max-time {:?}",
            args.min_time, args.max_time
        )));
    }
    let sync_interval = crate::query_cmd::duration_flag("sync-block-duration", &args.sync_block_duration)?;
    let page_cache_bytes = match args.page_cache_size.trim() {
        "0" => 0,
        v => crate::receive_cmd::parse_size("store.page-cache-size", v)?,
    };
    let index_budget = crate::receive_cmd::parse_size("index-cache-size", &args.index_cache_size)?;
    let filter = args.selector.block_filter()?;
    let mut bucket = Bucket::from_config_file(&args.objstore_config_file)?;
    let disk_cache = match &args.data_dir {
        Some(dir) => {
            let cache = Arc::new(DiskCachedStore::new(Arc::clone(bucket.store()), &dir.join("index-cache"))?);
            bucket = Bucket::from_store(cache.clone(), format!("{} + {}", bucket.describe(), dir.display()));
            Some(cache)
        }
        None => None,
    };
    tracing::info!(bucket = %bucket.describe(), grpc = %args.grpc_address, "store gateway starting");
    let mut source = BucketSource::with_page_cache_bytes(bucket, page_cache_bytes)
        .with_index_budget(index_budget)
        .with_time_window(Arc::new(move || {
            let now = now_ms();
            (min_time.at(now), max_time.at(now))
        }));
    if let Some(filter) = filter {
        source = source.with_block_filter(filter);
    }
    let source = Arc::new(source);

    let mut registry = server::new_registry("store");
    let sync_metrics = SyncMetrics::register(&mut registry);
    registry.register_collector(Box::new(PageCacheCollector(source.clone())));
    let mut thanos = server::thanos_registry();
    thanos.register_collector(Box::new(BucketStoreCollector(source.clone())));
    let api_metrics = StoreApiMetrics::register(&mut registry);
    let ready = Readiness::default();
    let prune = disk_cache.map(|cache| {
        registry.register_collector(Box::new(DiskCacheCollector(cache.clone())));
        tokio::spawn(prune_loop(cache, source.clone(), ready.clone(), sync_interval))
    });
    let opts = StoreApiOptions { component_type: "store".into(), limits: args.limits.limits(), ..Default::default() };
    let api = StoreApi::new(source.clone(), opts, ready.flag(), api_metrics);
    let sync = tokio::spawn(sync_loop(source, sync_interval, sync_metrics, ready.clone()));

    let shutdown = Shutdown::on_signal();
    let http = server::serve_until(&args.http_address, Router::new(), ready, vec![registry, thanos], shutdown.clone());
    let grpc = crate::grpc::serve_storeapi(&args.grpc_address, &api, shutdown);
    let res = tokio::try_join!(http, grpc);
    sync.abort();
    if let Some(p) = prune {
        p.abort();
    }
    res.map(|_| ())
}

/// Removes the disk-cached files of blocks that left the bucket (as the store's last sync listed
/// it), once per sync interval; nothing before the first sync succeeded (the store is ready).
async fn prune_loop(
    cache: Arc<DiskCachedStore>,
    source: Arc<BucketSource>,
    synced: Readiness,
    every: std::time::Duration,
) {
    loop {
        tokio::time::sleep(every).await;
        if !synced.is_ready() {
            continue;
        }
        let keep = source.listed_blocks();
        match cache.prune(&keep) {
            Ok(0) => {}
            Ok(n) => tracing::info!(blocks = n, "removed disk-cached files of blocks no longer served"),
            Err(e) => tracing::warn!(error = %e, "disk cache prune failed"),
        }
    }
}

/// `strata_store_disk_cache_{hits,misses}_total` of the `--data-dir` cache.
#[derive(Debug)]
struct DiskCacheCollector(Arc<DiskCachedStore>);

impl prometheus_client::collector::Collector for DiskCacheCollector {
    fn encode(&self, mut enc: prometheus_client::encoding::DescriptorEncoder) -> Result<(), std::fmt::Error> {
        use prometheus_client::encoding::EncodeMetric;
        let s = self.0.stats();
        for (name, help, v) in [
            ("store_disk_cache_hits", "Block index files (meta.json, series.parquet) read from --data-dir", s.hits),
            ("store_disk_cache_misses", "Block index files downloaded from the bucket into --data-dir", s.misses),
        ] {
            let c = prometheus_client::metrics::counter::ConstCounter::new(v);
            c.encode(enc.encode_descriptor(name, help, None, c.metric_type())?)?;
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]
    use super::*;

    #[test]
    fn time_or_duration_flags() {
        let now = 1_700_000_000_000;
        assert_eq!(TimeOrDuration::parse("x", "2023-11-14T22:13:20Z").unwrap().at(0), now);
        assert_eq!(TimeOrDuration::parse("x", "2023-11-14T23:13:20+01:00").unwrap().at(0), now);
        assert_eq!(TimeOrDuration::parse("x", "0000-01-01T00:00:00Z").unwrap().at(now), -62_167_219_200_000);
        assert_eq!(TimeOrDuration::parse("x", "9999-12-31T23:59:59Z").unwrap().at(now), 253_402_300_799_000);
        assert_eq!(TimeOrDuration::parse("x", "-2w").unwrap().at(now), now - 14 * 86_400_000);
        assert_eq!(TimeOrDuration::parse("x", "2h45m").unwrap().at(now), now + 9_900_000);
        assert_eq!(TimeOrDuration::parse("x", "-1d").unwrap(), TimeOrDuration::FromNow(-86_400_000));
        for bad in ["yesterday", "-", "2023-13-01T00:00:00Z", "1x"] {
            assert!(TimeOrDuration::parse("min-time", bad).is_err(), "{bad}");
        }
    }
}
