//! The HTTP server every Strata component shares: `/-/healthy`, `/-/ready`, `/metrics` (the
//! process's own health in the Prometheus/OpenMetrics text format), request logging, the readiness
//! gate in front of the API (503 `Service Unavailable` until ready, as Prometheus), and graceful
//! shutdown on SIGINT/SIGTERM.
//!
//! ```text
//!   component router (API) ──► readiness gate ──┐
//!   /-/healthy  /-/ready  /metrics ─────────────┼──► request log ──► axum::serve(listener)
//!                                               └── until SIGINT / SIGTERM, then drain
//! ```
//!
//! A component serving gRPC as well shares one [`Shutdown`] between both servers.

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::time::Instant;

use axum::Router;
use axum::body::Body;
use axum::extract::{Request, State};
use axum::http::{HeaderValue, StatusCode, header};
use axum::middleware::{self, Next};
use axum::response::{IntoResponse, Response};
use axum::routing::get;
use engine::bucket_source::BucketSource;
use prometheus_client::collector::Collector;
use prometheus_client::encoding::{DescriptorEncoder, EncodeMetric};
use prometheus_client::metrics::counter::{ConstCounter, Counter};
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::gauge::{ConstGauge, Gauge};
use prometheus_client::metrics::histogram::{Histogram, exponential_buckets};
use prometheus_client::registry::Registry;

use crate::CliError;

/// Readiness of a server: false until the component says it can answer (e.g. the first bucket
/// sync finished).
#[derive(Debug, Clone, Default)]
pub(crate) struct Readiness(Arc<AtomicBool>);

impl Readiness {
    /// Marks the server ready.
    pub(crate) fn set_ready(&self) {
        self.0.store(true, Ordering::Release);
    }

    /// True once ready.
    pub(crate) fn is_ready(&self) -> bool {
        self.0.load(Ordering::Acquire)
    }

    /// The flag itself, for servers outside this module (the StoreAPI's Info fails until ready).
    pub(crate) fn flag(&self) -> Arc<AtomicBool> {
        self.0.clone()
    }
}

/// The shutdown signal of a process, shared by its servers: every clone resolves once SIGINT or
/// SIGTERM arrived.
#[derive(Debug, Clone)]
pub(crate) struct Shutdown(tokio::sync::watch::Receiver<bool>);

impl Shutdown {
    /// Starts listening for SIGINT/SIGTERM.
    pub(crate) fn on_signal() -> Self {
        Self::when(shutdown_signal())
    }

    /// Shuts down once `trigger` resolves (e.g. a signal or the end of a one-shot job).
    pub(crate) fn when(trigger: impl std::future::Future<Output = ()> + Send + 'static) -> Self {
        let (tx, rx) = tokio::sync::watch::channel(false);
        tokio::spawn(async move {
            trigger.await;
            let _ = tx.send(true);
        });
        Shutdown(rx)
    }

    /// Resolves once the signal arrived.
    pub(crate) async fn wait(mut self) {
        // An error means the listener is gone without a signal: there is nothing left to wait for.
        let _ = self.0.wait_for(|&stop| stop).await;
    }
}

/// Metrics of the periodic bucket sync.
#[derive(Debug, Clone)]
pub(crate) struct SyncMetrics {
    syncs: Family<[(&'static str, &'static str); 1], Counter>,
    blocks_loaded: Gauge,
    last_success: Gauge<f64, AtomicU64>,
    duration: Histogram,
}

impl SyncMetrics {
    /// Creates and registers the sync metrics (`bucket_syncs{result}`, `bucket_blocks_loaded`,
    /// `bucket_last_successful_sync_timestamp_seconds`, `bucket_sync_duration_seconds`).
    pub(crate) fn register(registry: &mut Registry) -> Self {
        let m = SyncMetrics {
            syncs: Family::default(),
            blocks_loaded: Gauge::default(),
            last_success: Gauge::default(),
            duration: Histogram::new(exponential_buckets(0.01, 3.0, 10)),
        };
        registry.register("bucket_syncs", "Bucket block-list syncs by result (success, failure)", m.syncs.clone());
        registry.register("bucket_blocks_loaded", "Blocks currently loaded from the bucket", m.blocks_loaded.clone());
        registry.register(
            "bucket_last_successful_sync_timestamp_seconds",
            "Unix time of the last successful bucket sync",
            m.last_success.clone(),
        );
        registry.register("bucket_sync_duration_seconds", "Duration of bucket syncs", m.duration.clone());
        m
    }

    /// Records one sync: its outcome, its duration and the blocks loaded afterwards.
    pub(crate) fn observe(&self, ok: bool, seconds: f64, blocks_loaded: usize) {
        self.syncs.get_or_create(&[("result", if ok { "success" } else { "failure" })]).inc();
        self.duration.observe(seconds);
        if ok {
            self.blocks_loaded.set(i64::try_from(blocks_loaded).unwrap_or(i64::MAX));
            let now = std::time::SystemTime::now()
                .duration_since(std::time::UNIX_EPOCH)
                .map(|d| d.as_secs_f64())
                .unwrap_or(0.0);
            self.last_success.set(now);
        }
    }
}

/// What [`sync_every`] logs: after the first successful sync (info), after each later one
/// (debug; None logs nothing), after a failure (warn, with the error).
#[derive(Debug, Clone, Copy)]
pub(crate) struct SyncLog {
    pub(crate) first: &'static str,
    pub(crate) again: Option<&'static str>,
    pub(crate) failed: &'static str,
}

/// Runs `sync` (which answers the blocks loaded) every `interval`, every 5 s at most until it first
/// succeeded; records each run in `metrics` and marks `ready` after the first success.
pub(crate) async fn sync_every<F, Fut, E>(
    interval: std::time::Duration,
    metrics: SyncMetrics,
    ready: Readiness,
    log: SyncLog,
    mut sync: F,
) where
    F: FnMut() -> Fut,
    Fut: std::future::Future<Output = Result<usize, E>>,
    E: std::fmt::Display,
{
    loop {
        let started = Instant::now();
        match sync().await {
            Ok(blocks) => {
                metrics.observe(true, started.elapsed().as_secs_f64(), blocks);
                if !ready.is_ready() {
                    tracing::info!(blocks, ms = started.elapsed().as_millis() as u64, "{}", log.first);
                    ready.set_ready();
                } else if let Some(again) = log.again {
                    tracing::debug!(blocks, "{again}");
                }
            }
            Err(e) => {
                metrics.observe(false, started.elapsed().as_secs_f64(), 0);
                tracing::warn!(error = %e, "{}", log.failed);
            }
        }
        let wait = if ready.is_ready() { interval } else { interval.min(std::time::Duration::from_secs(5)) };
        tokio::time::sleep(wait).await;
    }
}

/// The bucket source's caches on `/metrics`, read at each scrape: the decoded-page cache's
/// `page_cache_hits_total`, `page_cache_misses_total` (page lookups), `page_cache_bytes`,
/// `page_cache_pages` (held now) and `page_cache_capacity_bytes` (`--store.page-cache-size`), and
/// `label_index_bytes`, the loaded blocks' label indexes (names, values, postings).
#[derive(Debug)]
pub(crate) struct PageCacheCollector(pub(crate) Arc<BucketSource>);

impl Collector for PageCacheCollector {
    fn encode(&self, mut enc: DescriptorEncoder) -> Result<(), std::fmt::Error> {
        let s = self.0.page_cache_stats();
        let open = self.0.stats();
        let counters = [
            ("page_cache_hits", "Decoded-page cache lookups answered from the cache", s.hits),
            ("page_cache_misses", "Decoded-page cache lookups that read and decoded the page", s.misses),
        ];
        for (name, help, v) in counters {
            let c = ConstCounter::new(v);
            c.encode(enc.encode_descriptor(name, help, None, c.metric_type())?)?;
        }
        let as_i64 = |v: usize| i64::try_from(v).unwrap_or(i64::MAX);
        let gauges = [
            ("page_cache_bytes", "Bytes of decoded pages held", as_i64(s.bytes)),
            ("page_cache_pages", "Decoded pages held", as_i64(s.pages)),
            (
                "page_cache_capacity_bytes",
                "Most bytes the decoded-page cache may hold",
                as_i64(self.0.page_cache_capacity()),
            ),
            (
                "label_index_bytes",
                "Heap bytes of the loaded blocks' label indexes (label names, values and postings)",
                as_i64(self.0.label_index_bytes()),
            ),
            ("bucket_open_blocks", "Blocks open (series table and samples footer in memory)", as_i64(open.open_blocks)),
            ("bucket_open_bytes", "Heap bytes of the open blocks", as_i64(open.open_bytes)),
        ];
        for (name, help, v) in gauges {
            let g = ConstGauge::new(v);
            g.encode(enc.encode_descriptor(name, help, None, g.metric_type())?)?;
        }
        Ok(())
    }
}

/// The store gateway's block metrics under Thanos's names (register in a [`thanos_registry`]):
/// blocks served, and the lazy opens and closes of their series tables, which play the part of
/// Thanos's lazily loaded index headers. The open blocks' count and bytes are Strata's own
/// (`strata_bucket_open_blocks`, `strata_bucket_open_bytes`, from [`PageCacheCollector`]).
#[derive(Debug)]
pub(crate) struct BucketStoreCollector(pub(crate) Arc<BucketSource>);

impl Collector for BucketStoreCollector {
    fn encode(&self, mut enc: DescriptorEncoder) -> Result<(), std::fmt::Error> {
        let s = self.0.stats();
        let g = ConstGauge::new(i64::try_from(s.blocks).unwrap_or(i64::MAX));
        g.encode(enc.encode_descriptor(
            "thanos_bucket_store_blocks_loaded",
            "Number of currently loaded blocks.",
            None,
            g.metric_type(),
        )?)?;
        let counters = [
            (
                "thanos_bucket_store_indexheader_lazy_load",
                "Total number of index-header lazy load operations (Strata: block series tables opened on first use).",
                s.opens,
            ),
            (
                "thanos_bucket_store_indexheader_lazy_load_failed",
                "Total number of failed index-header lazy load operations.",
                s.open_failures,
            ),
            (
                "thanos_bucket_store_indexheader_lazy_unload",
                "Total number of index-header lazy unload operations (Strata: closed beyond --index-cache-size).",
                s.closes,
            ),
        ];
        for (name, help, v) in counters {
            let c = ConstCounter::new(v);
            c.encode(enc.encode_descriptor(name, help, None, c.metric_type())?)?;
        }
        Ok(())
    }
}

/// A new registry with Strata's metric prefix and a `build_info` gauge.
pub(crate) fn new_registry(component: &'static str) -> Registry {
    let mut r = Registry::with_prefix("strata");
    let info = Family::<[(&'static str, &'static str); 2], Gauge>::default();
    info.get_or_create(&[("version", env!("CARGO_PKG_VERSION")), ("component", component)]).set(1);
    r.register("build_info", "Strata build information (always 1)", info);
    r
}

#[derive(Debug, Clone)]
struct ServerState {
    ready: Readiness,
    /// Registries served one after the other on /metrics (each may have its own prefix).
    registries: Arc<Vec<Registry>>,
}

async fn healthy() -> &'static str {
    "Strata is Healthy.\n"
}

async fn ready_check(State(s): State<ServerState>) -> Response {
    if s.ready.is_ready() {
        (StatusCode::OK, "Strata is Ready.\n").into_response()
    } else {
        (StatusCode::SERVICE_UNAVAILABLE, "Service Unavailable").into_response()
    }
}

/// The registries in the OpenMetrics text format, one `# EOF` at the end.
fn encode_all(registries: &[Registry]) -> Result<String, std::fmt::Error> {
    let mut text = String::new();
    for r in registries {
        prometheus_client::encoding::text::encode(&mut text, r)?;
        if let Some(body) = text.strip_suffix("# EOF\n") {
            text.truncate(body.len());
        }
    }
    text.push_str("# EOF\n");
    Ok(text)
}

/// A registry without Strata's prefix, for the metrics that keep Thanos's names (`thanos_*`) because
/// they mean the same as Thanos's.
pub(crate) fn thanos_registry() -> Registry {
    Registry::default()
}

async fn metrics(State(s): State<ServerState>) -> Response {
    match encode_all(&s.registries) {
        Ok(text) => {
            let mut resp = Response::new(Body::from(text));
            resp.headers_mut().insert(
                header::CONTENT_TYPE,
                HeaderValue::from_static("application/openmetrics-text; version=1.0.0; charset=utf-8"),
            );
            resp
        }
        Err(e) => (StatusCode::INTERNAL_SERVER_ERROR, format!("cannot encode metrics: {e}")).into_response(),
    }
}

/// Answers API requests with a plain 503 until ready, as Prometheus does while starting.
async fn readiness_gate(State(r): State<Readiness>, req: Request, next: Next) -> Response {
    if r.is_ready() {
        return next.run(req).await;
    }
    let mut resp = (StatusCode::SERVICE_UNAVAILABLE, "Service Unavailable").into_response();
    resp.headers_mut().insert("X-Prometheus-Stopping", HeaderValue::from_static("false"));
    resp
}

/// Logs every request at debug level (method, path, status, duration).
async fn log_requests(req: Request, next: Next) -> Response {
    let (method, path) = (req.method().clone(), req.uri().path().to_string());
    let started = Instant::now();
    let resp = next.run(req).await;
    tracing::debug!(%method, %path, status = resp.status().as_u16(), ms = started.elapsed().as_millis() as u64, "http");
    resp
}

/// Resolves on SIGINT or SIGTERM.
pub(crate) async fn shutdown_signal() {
    let ctrl_c = async {
        if let Err(e) = tokio::signal::ctrl_c().await {
            tracing::warn!("cannot listen for SIGINT: {e}");
            std::future::pending::<()>().await;
        }
    };
    #[cfg(unix)]
    let term = async {
        match tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate()) {
            Ok(mut s) => {
                s.recv().await;
            }
            Err(e) => {
                tracing::warn!("cannot listen for SIGTERM: {e}");
                std::future::pending::<()>().await;
            }
        }
    };
    #[cfg(not(unix))]
    let term = std::future::pending::<()>();
    tokio::select! {
        () = ctrl_c => tracing::info!("SIGINT received, shutting down"),
        () = term => tracing::info!("SIGTERM received, shutting down"),
    }
}

/// Binds `address` (e.g. `127.0.0.1:10902`), serves `api` behind the readiness gate plus the
/// shared endpoints, and returns after a graceful shutdown once `shutdown` resolves (e.g.
/// [`Shutdown::on_signal`]); several registries go on `/metrics` (e.g. one from
/// [`thanos_registry`] next to Strata's).
pub(crate) async fn serve_until(
    address: &str,
    api: Router,
    ready: Readiness,
    registries: Vec<Registry>,
    shutdown: Shutdown,
) -> Result<(), CliError> {
    let listener = tokio::net::TcpListener::bind(address)
        .await
        .map_err(|e| CliError::Failed(format!("--http-address {address}: cannot listen: {e}")))?;
    let local = listener.local_addr().map_err(|e| CliError::Failed(format!("--http-address {address}: {e}")))?;
    let state = ServerState { ready: ready.clone(), registries: Arc::new(registries) };
    let app = api
        .layer(middleware::from_fn_with_state(ready, readiness_gate))
        .merge(
            Router::new()
                .route("/-/healthy", get(healthy))
                .route("/-/ready", get(ready_check))
                .route("/metrics", get(metrics))
                .with_state(state),
        )
        .layer(middleware::from_fn(log_requests));
    tracing::info!(address = %local, "HTTP server listening");
    axum::serve(listener, app)
        .with_graceful_shutdown(shutdown.wait())
        .await
        .map_err(|e| CliError::Failed(format!("HTTP server on {local}: {e}")))?;
    tracing::info!("HTTP server stopped");
    Ok(())
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]
    use super::*;

    #[test]
    fn sync_metrics_exposed() {
        let mut reg = new_registry("query");
        let m = SyncMetrics::register(&mut reg);
        m.observe(true, 0.02, 3);
        m.observe(false, 0.5, 0);
        let mut text = String::new();
        prometheus_client::encoding::text::encode(&mut text, &reg).unwrap();
        assert!(text.contains("strata_bucket_syncs_total{result=\"success\"} 1"), "{text}");
        assert!(text.contains("strata_bucket_syncs_total{result=\"failure\"} 1"), "{text}");
        assert!(text.contains("strata_bucket_blocks_loaded 3"), "{text}");
        assert!(text.contains("strata_build_info{version=\""), "{text}");
    }

    #[test]
    fn page_cache_metrics_exposed() {
        let dir = tempfile::tempdir().unwrap();
        let bucket = engine::bucket::Bucket::local(dir.path()).unwrap();
        let source = Arc::new(BucketSource::with_page_cache_bytes(bucket, 1 << 20));
        let mut reg = new_registry("query");
        reg.register_collector(Box::new(PageCacheCollector(source)));
        let mut text = String::new();
        prometheus_client::encoding::text::encode(&mut text, &reg).unwrap();
        assert!(text.contains("strata_page_cache_hits_total 0\n"), "{text}");
        assert!(text.contains("strata_page_cache_misses_total 0\n"), "{text}");
        assert!(text.contains("strata_page_cache_pages 0\n"), "{text}");
        assert!(text.contains("strata_page_cache_capacity_bytes 1048576\n"), "{text}");
        assert!(text.contains("# TYPE strata_page_cache_bytes gauge"), "{text}");
        assert!(text.contains("strata_label_index_bytes 0\n"), "{text}");
    }

    #[test]
    fn registries_are_served_together_with_one_eof() {
        let a = new_registry("store");
        let mut b = thanos_registry();
        let g: Gauge = Gauge::default();
        g.set(1);
        b.register("thanos_bucket_store_blocks_loaded", "blocks", g);
        let text = encode_all(&[a, b]).unwrap();
        assert_eq!(text.matches("# EOF").count(), 1, "{text}");
        assert!(text.ends_with("# EOF\n"), "{text}");
        assert!(
            text.contains("strata_build_info{") && text.contains("\nthanos_bucket_store_blocks_loaded 1\n"),
            "{text}"
        );
    }

    #[test]
    fn readiness_flag() {
        let r = Readiness::default();
        assert!(!r.is_ready());
        r.clone().set_ready();
        assert!(r.is_ready());
    }
}
