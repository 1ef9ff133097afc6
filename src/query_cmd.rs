//! `strata query`: the querier. PromQL over StoreAPI endpoints (`--endpoint`, Thanos's querier:
//! Info discovery, fan-out, replica deduplication, partial response) and/or a bucket read
//! directly (`--objstore.config-file`), served as the Prometheus HTTP API v1 plus Thanos's
//! `/api/v1/stores`.
//!
//! The bucket's block list is re-read every `--sync-block-duration` (Thanos store's flag), so new
//! blocks are served without a restart; endpoints are asked for their Info every
//! `--endpoint.info-timeout`. The server is ready once the first sync and the first discovery
//! round finished. [`serve_bucket`] is shared with `strata up`.

use std::collections::BTreeMap;
use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;

use clap::Args;
use engine::bucket::Bucket;
use engine::bucket_source::BucketSource;
use engine::{MergedSource, SeriesSource};
use prometheus_client::collector::Collector;
use prometheus_client::encoding::{DescriptorEncoder, EncodeMetric};
use prometheus_client::metrics::gauge::ConstGauge;
use query::api::params::parse_duration;
use query::api::{ApiConfig, ApiMetrics, ApiState};
use query::storeapi::server::{StoreApi, StoreApiMetrics, StoreApiOptions};
use query::storeapi::{DedupFunc, EndpointSet, Proxy, ProxyOptions};

use crate::CliError;
use crate::server::{self, Readiness, Shutdown, SyncMetrics};

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
    /// Object storage configuration file (Thanos objstore YAML) of a bucket to read directly.
    /// At least one of this and --endpoint is required; both may be given.
    #[arg(long = "objstore.config-file")]
    objstore_config_file: Option<PathBuf>,
    /// Listen address of the HTTP API (host:port).
    #[arg(long = "http-address", default_value = "127.0.0.1:10902")]
    http_address: String,
    #[command(flatten)]
    querier: QuerierArgs,
    #[command(flatten)]
    engine: EngineArgs,
}

/// The querier's flags (Thanos's names and defaults).
#[derive(Debug, Clone, Args)]
pub(crate) struct QuerierArgs {
    /// Address (host:port) of a StoreAPI endpoint: a Strata or Thanos store, receiver, sidecar,
    /// ruler or querier (repeatable).
    #[arg(long = "endpoint", value_name = "HOST:PORT")]
    endpoints: Vec<String>,
    /// Label that tells replicas apart: series differing only in it are deduplicated (repeatable
    /// or comma-separated). Requests turn dedup off with dedup=false or name other labels with
    /// replicaLabels[].
    #[arg(long = "query.replica-label", value_delimiter = ',')]
    replica_labels: Vec<String>,
    /// How replicas are merged: penalty (follow one replica, switch at its gaps) or chain (every
    /// sample of every replica).
    #[arg(long = "deduplication.func", default_value = "penalty", value_parser = ["penalty", "chain"])]
    dedup_func: String,
    /// Answer from the endpoints that work, with a warning for the others, when a request has no
    /// partial_response parameter (the default).
    #[arg(long = "query.partial-response", overrides_with = "no_partial_response")]
    partial_response: bool,
    /// Fail a request when any endpoint fails (unless it says partial_response=true).
    #[arg(long = "no-query.partial-response", overrides_with = "partial_response")]
    no_partial_response: bool,
    /// An endpoint that sends nothing for this long is given up on (a partial response warning, or
    /// the error); 0 waits forever.
    #[arg(long = "store.response-timeout", default_value = "0ms")]
    response_timeout: String,
    /// Timeout of the endpoints' Info calls, which are repeated at this interval.
    #[arg(long = "endpoint.info-timeout", default_value = "5s")]
    info_timeout: String,
    /// HTTP header naming the tenant of a request; sent to the endpoints as thanos-tenant.
    #[arg(long = "query.tenant-header", default_value = "THANOS-TENANT")]
    tenant_header: String,
    /// Tenant sent to the endpoints when a request has no tenant header.
    #[arg(long = "query.default-tenant-id", default_value = "default-tenant")]
    default_tenant: String,
}

impl QuerierArgs {
    /// The proxy settings and the endpoint set (None without --endpoint); records the flags.
    fn build(
        &self,
        flags: &mut BTreeMap<String, String>,
    ) -> Result<(ProxyOptions, Option<Arc<EndpointSet>>), CliError> {
        let dedup_func: DedupFunc =
            self.dedup_func.parse().map_err(|e| CliError::Usage(format!("--deduplication.func: {e}")))?;
        let timeout_ms = parse_duration(&self.response_timeout)
            .map_err(|e| CliError::Usage(format!("--store.response-timeout: {e}")))?;
        if timeout_ms < 0 {
            return Err(CliError::Usage("--store.response-timeout must not be negative".into()));
        }
        let info_timeout = duration_flag("endpoint.info-timeout", &self.info_timeout)?;
        let replica_labels: Vec<String> =
            self.replica_labels.iter().map(|l| l.trim().to_string()).filter(|l| !l.is_empty()).collect();
        let opts = ProxyOptions {
            replica_labels: replica_labels.clone(),
            dedup_func,
            partial_response: !self.no_partial_response,
            response_timeout: (timeout_ms > 0).then(|| Duration::from_millis(timeout_ms.unsigned_abs())),
            tenant_header: self.tenant_header.clone(),
            default_tenant: self.default_tenant.clone(),
        };
        let endpoints = if self.endpoints.is_empty() {
            None
        } else {
            Some(Arc::new(EndpointSet::new(&self.endpoints, info_timeout)?))
        };
        flags.insert("endpoint".into(), self.endpoints.join(","));
        flags.insert("query.replica-label".into(), replica_labels.join(","));
        flags.insert("deduplication.func".into(), dedup_func.to_string());
        flags.insert("query.partial-response".into(), opts.partial_response.to_string());
        flags.insert("store.response-timeout".into(), self.response_timeout.clone());
        flags.insert("endpoint.info-timeout".into(), self.info_timeout.clone());
        flags.insert("query.tenant-header".into(), self.tenant_header.clone());
        flags.insert("query.default-tenant-id".into(), self.default_tenant.clone());
        Ok((opts, endpoints))
    }
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
    /// Read downsampled data when a query does not say max_source_resolution: range queries
    /// accept data up to step / 5 coarse (as `max_source_resolution=auto`).
    #[arg(long = "query.auto-downsampling")]
    auto_downsampling: bool,
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

pub(crate) fn duration_flag(flag: &str, value: &str) -> Result<Duration, CliError> {
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

    /// The query API's reader of `bucket`'s blocks, with the `--store.page-cache-size` cache
    /// (not synced yet: the server that serves it syncs it).
    pub(crate) fn bucket_source(&self, bucket: Bucket) -> Result<Arc<BucketSource>, CliError> {
        tracing::info!(bucket = %bucket.describe(), "reading the bucket");
        Ok(Arc::new(BucketSource::with_page_cache_bytes(bucket, self.page_cache_bytes()?)))
    }

    pub(crate) fn config(&self, mut flags: BTreeMap<String, String>) -> Result<(ApiConfig, Duration), CliError> {
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
        flags.insert("query.auto-downsampling".into(), self.auto_downsampling.to_string());
        let config =
            ApiConfig { engine, max_concurrent: self.max_concurrent, flags, auto_downsampling: self.auto_downsampling };
        Ok((config, sync))
    }
}

/// Runs `strata query`.
pub(crate) async fn run(args: QueryArgs) -> Result<(), CliError> {
    if args.objstore_config_file.is_none() && args.querier.endpoints.is_empty() {
        return Err(CliError::Usage(
            "nothing to query: give --endpoint (StoreAPI endpoints) and/or --objstore.config-file (a bucket)".into(),
        ));
    }
    let mut flags = BTreeMap::from([("http-address".to_string(), args.http_address.clone())]);
    let bucket = match &args.objstore_config_file {
        Some(cfg) => {
            flags.insert("objstore.config-file".into(), cfg.display().to_string());
            let bucket = Bucket::from_config_file(cfg)?;
            Some(args.engine.bucket_source(bucket)?)
        }
        None => None,
    };
    let (proxy_opts, endpoints) = args.querier.build(&mut flags)?;
    let parts = Parts { bucket, querier: Querier { opts: proxy_opts, endpoints }, ..Default::default() };
    serve("query", &args.http_address, &args.engine, flags, parts).await
}

/// Remote write served beside the query API (`strata up`): the receive state and its cut interval.
#[derive(Debug)]
pub(crate) struct EmbeddedReceive {
    pub(crate) state: ingest::receive::ReceiveState,
    pub(crate) cut_every: Duration,
    /// More routes served beside remote write (the embedded ruler's API).
    pub(crate) extra_routes: axum::Router,
    /// More registries served on /metrics (the embedded ruler's `prometheus_rule_*`).
    pub(crate) registries: Vec<prometheus_client::registry::Registry>,
    /// Run after each block a head cut is uploaded, before the head drops its samples (e.g. the
    /// Flight SQL tables re-read the bucket).
    pub(crate) after_cut: Option<AfterUpload>,
}

/// A hook run after a head's block is uploaded and the bucket re-synced, before the head drops
/// the block's samples.
#[derive(Clone)]
pub(crate) struct AfterUpload(pub(crate) Arc<dyn Fn() -> futures::future::BoxFuture<'static, ()> + Send + Sync>);

impl std::fmt::Debug for AfterUpload {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("AfterUpload")
    }
}

/// The querier part of a server: its settings and endpoints.
#[derive(Debug, Default)]
struct Querier {
    opts: ProxyOptions,
    endpoints: Option<Arc<EndpointSet>>,
}

/// What a server runs besides the query API.
#[derive(Debug, Default)]
struct Parts<'a> {
    /// A bucket read directly (the server syncs it).
    bucket: Option<Arc<BucketSource>>,
    /// Remote write into heads cut into the bucket (needs `bucket`).
    receive: Option<EmbeddedReceive>,
    /// The StoreAPI served over the local data (bucket, heads).
    grpc_address: Option<&'a str>,
    querier: Querier,
}

/// Serves the query API over the raw blocks of `bucket` (made by [`EngineArgs::bucket_source`]; others
/// may read it too) on `http_address` until SIGINT/SIGTERM, re-syncing its block list in the background. With `receive`, remote write is served on the same
/// address, PromQL sees the heads and the bucket merged, heads are cut into the bucket every
/// `cut_every` (the bucket is re-synced right after a cut, so no sample is ever invisible) and
/// everything left in the heads is cut on shutdown. With `grpc_address`, the same data is served
/// over the StoreAPI there (Info fails until the first sync), shutting down with the HTTP server.
pub(crate) async fn serve_bucket(
    component: &'static str,
    bucket: Arc<BucketSource>,
    http_address: &str,
    engine: &EngineArgs,
    flags: BTreeMap<String, String>,
    receive: Option<EmbeddedReceive>,
    grpc_address: Option<&str>,
) -> Result<(), CliError> {
    let parts = Parts { bucket: Some(bucket), receive, grpc_address, querier: Querier::default() };
    serve(component, http_address, engine, flags, parts).await
}

/// [`serve_bucket`] with an optional bucket and the querier's endpoints: the API reads the local
/// sources and the endpoints through one [`Proxy`]; ready once the bucket synced and the endpoints
/// had their first Info round.
async fn serve(
    component: &'static str,
    http_address: &str,
    engine: &EngineArgs,
    flags: BTreeMap<String, String>,
    parts: Parts<'_>,
) -> Result<(), CliError> {
    let Parts { bucket, mut receive, grpc_address, querier } = parts;
    let extra_registries = receive.as_mut().map(|r| std::mem::take(&mut r.registries)).unwrap_or_default();
    let (config, sync_interval) = engine.config(flags)?;
    let mut registry = server::new_registry(component);
    let mut thanos = server::thanos_registry();
    let api_metrics = ApiMetrics::register(&mut registry);
    let ready = Readiness::default();
    let mut locals: Vec<Arc<dyn SeriesSource>> = Vec::new();
    let mut tasks = Vec::new();
    let bucket_source = match bucket {
        Some(src) => {
            tracing::info!(component, "serving PromQL over the bucket");
            let sync_metrics = SyncMetrics::register(&mut registry);
            registry.register_collector(Box::new(server::PageCacheCollector(src.clone())));
            thanos.register_collector(Box::new(server::BucketStoreCollector(src.clone())));
            let synced = Readiness::default();
            tasks.push(tokio::spawn(sync_loop(src.clone(), sync_interval, sync_metrics, synced.clone())));
            Some((src, synced))
        }
        None => None,
    };
    let extra_routes = match (&receive, &bucket_source) {
        (Some(r), Some((src, _))) => {
            r.state.register_metrics(&mut registry);
            locals.push(Arc::new(MergedSource::new(vec![src.clone(), r.state.source()])));
            ingest::receive::router(r.state.clone()).merge(r.extra_routes.clone())
        }
        (_, Some((src, _))) => {
            locals.push(src.clone());
            axum::Router::new()
        }
        (_, None) => axum::Router::new(),
    };
    if let Some(set) = &querier.endpoints {
        tracing::info!(endpoints = set.len(), component, "querying StoreAPI endpoints");
        registry.register_collector(Box::new(EndpointCollector(set.clone())));
        tasks.push(tokio::spawn(set.clone().run()));
    }
    let local_source = locals.first().cloned();
    let proxy = Proxy::new(locals, querier.endpoints.clone(), querier.opts);
    tasks.push(tokio::spawn(become_ready(
        bucket_source.as_ref().map(|(_, synced)| synced.clone()),
        querier.endpoints.clone(),
        ready.clone(),
    )));
    let storeapi = match (grpc_address, local_source) {
        (Some(address), Some(source)) => {
            let opts = StoreApiOptions {
                component_type: if receive.is_some() { "receive" } else { "store" }.into(),
                ..Default::default()
            };
            let metrics = StoreApiMetrics::register(&mut registry);
            Some((address, StoreApi::new(source, opts, ready.flag(), metrics)))
        }
        _ => None,
    };
    let state = ApiState::with_proxy(proxy, config, api_metrics);
    let cutter = match (&receive, &bucket_source) {
        (Some(r), Some((src, _))) => {
            let (stop, stopped) = tokio::sync::oneshot::channel::<()>();
            let task = cut_loop_then(r.state.clone(), src.clone(), r.cut_every, stopped, r.after_cut.clone());
            Some((stop, tokio::spawn(task)))
        }
        _ => None,
    };
    let shutdown = Shutdown::on_signal();
    let api = query::api::router(state).merge(extra_routes);
    let mut registries = vec![registry, thanos];
    registries.extend(extra_registries);
    let http = server::serve_until(http_address, api, ready, registries, shutdown.clone());
    let res = match &storeapi {
        Some((address, storeapi)) => {
            tokio::try_join!(http, crate::grpc::serve_storeapi(address, storeapi, shutdown)).map(|_| ())
        }
        None => http.await,
    };
    for t in tasks {
        t.abort();
    }
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

/// Marks the server ready once the bucket had its first sync and the endpoints their first Info
/// round (each only if present).
async fn become_ready(bucket_synced: Option<Readiness>, endpoints: Option<Arc<EndpointSet>>, ready: Readiness) {
    loop {
        let bucket_ok = bucket_synced.as_ref().is_none_or(Readiness::is_ready);
        let endpoints_ok = endpoints.as_ref().is_none_or(|e| e.discovered());
        if bucket_ok && endpoints_ok {
            tracing::info!("ready");
            ready.set_ready();
            return;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

/// The endpoints on `/metrics`, read at each scrape: Thanos's
/// `store_nodes_grpc_connections{external_labels, store_type}` (endpoints up, by external label
/// sets and component type) and `endpoint_up{endpoint}` (1 when its last Info call succeeded).
#[derive(Debug)]
struct EndpointCollector(Arc<EndpointSet>);

impl Collector for EndpointCollector {
    fn encode(&self, mut enc: DescriptorEncoder) -> Result<(), std::fmt::Error> {
        let statuses = self.0.statuses();
        let mut up: BTreeMap<(String, String), i64> = BTreeMap::new();
        for s in statuses.iter().filter(|s| s.last_error.is_none()) {
            let sets: Vec<String> = s.label_sets.iter().map(ToString::to_string).collect();
            *up.entry((sets.join(","), s.component.clone())).or_default() += 1;
        }
        let mut fam = enc.encode_descriptor(
            "store_nodes_grpc_connections",
            "Number of gRPC connection to Store APIs. Opened connection means healthy store APIs available for Querier.",
            None,
            prometheus_client::metrics::MetricType::Gauge,
        )?;
        for ((ext, store_type), n) in up {
            let labels = [("external_labels", ext), ("store_type", store_type)];
            ConstGauge::new(n).encode(fam.encode_family(&labels)?)?;
        }
        let mut fam = enc.encode_descriptor(
            "endpoint_up",
            "1 when the endpoint's last Info call succeeded, 0 when it failed",
            None,
            prometheus_client::metrics::MetricType::Gauge,
        )?;
        for s in &statuses {
            let labels = [("endpoint", s.name.clone())];
            ConstGauge::new(i64::from(s.last_error.is_none())).encode(fam.encode_family(&labels)?)?;
        }
        Ok(())
    }
}

/// Cuts finished blocks out of the heads every `every`, re-syncing the bucket after each upload
/// and before the head drops the samples, so they are always served by one or the other.
pub(crate) async fn cut_loop(
    state: impl ingest::receive::CutHeads,
    bucket: Arc<BucketSource>,
    every: Duration,
    stop: tokio::sync::oneshot::Receiver<()>,
) {
    cut_loop_then(state, bucket, every, stop, None).await
}

/// [`cut_loop`], running `after` too after each upload (after the bucket re-sync, before the head
/// drops the samples).
pub(crate) async fn cut_loop_then(
    state: impl ingest::receive::CutHeads,
    bucket: Arc<BucketSource>,
    every: Duration,
    mut stop: tokio::sync::oneshot::Receiver<()>,
    after: Option<AfterUpload>,
) {
    let resync = move || -> futures::future::BoxFuture<'static, ()> {
        let bucket = bucket.clone();
        let after = after.clone();
        Box::pin(async move {
            if let Err(e) = bucket.sync().await {
                tracing::warn!("bucket sync after a cut failed (the block is served after the next sync): {e}");
            }
            if let Some(after) = after {
                (after.0)().await;
            }
        })
    };
    loop {
        tokio::select! {
            _ = tokio::time::sleep(every) => {}
            _ = &mut stop => return,
        }
        match state.cut_heads(false, &resync).await {
            Ok(0) => {}
            Ok(blocks) => tracing::info!(blocks, "cut blocks from the heads"),
            Err(e) => tracing::warn!("cutting the heads failed; will retry: {e}"),
        }
    }
}

/// Re-reads the block list every `interval` (every 5 s at most until the first sync succeeded)
/// and marks the server ready after the first successful sync.
pub(crate) async fn sync_loop(source: Arc<BucketSource>, interval: Duration, metrics: SyncMetrics, ready: Readiness) {
    let log = server::SyncLog {
        first: "first bucket sync done",
        again: Some("bucket synced"),
        failed: "bucket sync failed; will retry",
    };
    server::sync_every(interval, metrics, ready, log, || {
        let source = Arc::clone(&source);
        async move { source.sync().await.map(|()| source.stats().blocks) }
    })
    .await;
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]
    use super::*;
    use crate::test_flags::{parse, try_parse};

    #[test]
    fn engine_flags() {
        let cli = parse::<EngineArgs>(&[]);
        let (cfg, sync) = cli.config(BTreeMap::new()).unwrap();
        assert_eq!(cfg.engine.lookback_delta_ms, 300_000);
        assert_eq!(cfg.engine.max_samples, 50_000_000);
        assert_eq!(cfg.engine.timeout, Duration::from_secs(120));
        assert!(!cfg.engine.enable_experimental_functions);
        assert!(!cfg.engine.enable_delayed_name_removal);
        assert_eq!(cfg.max_concurrent, 20);
        assert_eq!(sync, Duration::from_secs(180));
        assert_eq!(cfg.flags["query.lookback-delta"], "5m");

        let cli = parse::<EngineArgs>(&[
            "--query.lookback-delta=1m30s",
            "--query.timeout=10",
            "--enable-feature=promql-experimental-functions,promql-delayed-name-removal",
            "--sync-interval=15s",
        ]);
        let (cfg, sync) = cli.config(BTreeMap::new()).unwrap();
        assert_eq!(cfg.engine.lookback_delta_ms, 90_000);
        assert_eq!(cfg.engine.timeout, Duration::from_secs(10));
        assert!(cfg.engine.enable_experimental_functions);
        assert!(cfg.engine.enable_delayed_name_removal);
        assert_eq!(sync, Duration::from_secs(15));

        for bad in [["--query.timeout=soon"], ["--enable-feature=nope"], ["--query.max-concurrent=0"]] {
            assert!(parse::<EngineArgs>(&bad).config(BTreeMap::new()).is_err(), "{bad:?}");
        }

        // Start timestamps are refused with a reason, also next to a feature Strata has.
        let cli = parse::<EngineArgs>(&["--enable-feature=promql-experimental-functions,use-start-timestamps"]);
        let err = cli.config(BTreeMap::new()).unwrap_err().to_string();
        assert!(
            err.contains("use-start-timestamps: not supported") && err.contains("store no start timestamps"),
            "{err}"
        );
    }

    #[tokio::test]
    async fn querier_flags() {
        let mut flags = BTreeMap::new();
        let (opts, eps) = parse::<QuerierArgs>(&[]).build(&mut flags).unwrap();
        assert!(eps.is_none());
        assert!(opts.replica_labels.is_empty());
        assert_eq!(opts.dedup_func, DedupFunc::Penalty);
        assert!(opts.partial_response);
        assert_eq!(opts.response_timeout, None);
        assert_eq!((opts.tenant_header.as_str(), opts.default_tenant.as_str()), ("THANOS-TENANT", "default-tenant"));
        assert_eq!(flags["query.partial-response"], "true");

        let cli = parse::<QuerierArgs>(&[
            "--endpoint=127.0.0.1:1",
            "--endpoint",
            "127.0.0.1:2",
            "--query.replica-label=replica,rule_replica",
            "--query.replica-label",
            "prom",
            "--deduplication.func=chain",
            "--no-query.partial-response",
            "--store.response-timeout=30s",
        ]);
        let (opts, eps) = cli.build(&mut flags).unwrap();
        assert_eq!(eps.unwrap().len(), 2);
        assert_eq!(opts.replica_labels, ["replica", "rule_replica", "prom"]);
        assert_eq!(opts.dedup_func, DedupFunc::Chain);
        assert!(!opts.partial_response);
        assert_eq!(opts.response_timeout, Some(Duration::from_secs(30)));
        assert_eq!(flags["endpoint"], "127.0.0.1:1,127.0.0.1:2");
        let (opts, _) = parse::<QuerierArgs>(&["--no-query.partial-response", "--query.partial-response"])
            .build(&mut flags)
            .unwrap();
        assert!(opts.partial_response);

        assert!(try_parse::<QuerierArgs>(&["--deduplication.func=quorum"]).is_err());
        for bad in [["--endpoint=dns+store:1"], ["--store.response-timeout=-1s"], ["--endpoint.info-timeout=0s"]] {
            assert!(parse::<QuerierArgs>(&bad).build(&mut flags).is_err(), "{bad:?}");
        }
    }

    #[test]
    fn page_cache_size_flag() {
        assert_eq!(parse::<EngineArgs>(&[]).page_cache_bytes().unwrap(), 512 << 20);
        assert_eq!(parse::<EngineArgs>(&["--store.page-cache-size=2GiB"]).page_cache_bytes().unwrap(), 2 << 30);
        assert_eq!(parse::<EngineArgs>(&["--store.page-cache-size=0"]).page_cache_bytes().unwrap(), 0);
        assert!(parse::<EngineArgs>(&["--store.page-cache-size=lots"]).page_cache_bytes().is_err());
    }
}
