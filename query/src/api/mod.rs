//! The Prometheus HTTP API v1 over the PromQL [`Engine`] and a [`SeriesSource`], as an axum
//! [`Router`]: `/api/v1/query`, `query_range`, `series`, `labels`, `label/<name>/values`,
//! `metadata`, `query_exemplars`, `format_query`, `parse_query`, `status/buildinfo` and
//! `status/flags` (contract: `spec/http-api.md`), plus the Thanos query parameters (`dedup`,
//! `replicaLabels[]`, `partial_response`, `storeMatch[]`, `max_source_resolution`) and Thanos's
//! `/api/v1/stores`. Sources are read through a [`Proxy`] per request; the warnings it collects
//! (endpoint failures under partial response) join the answer's `warnings`.
//!
//! ```text
//!   GET/POST form ─► params (times, durations, match[], limit) ─► Engine / SeriesSource
//!                                                                      │
//!   {"status","data","errorType","error","warnings","infos"} ◄─ json ◄─┘
//! ```
//!
//! Serving (listening, health and readiness endpoints, `/metrics`) is the server's business; this
//! module only answers API requests and counts them in [`ApiMetrics`].
//!
//! ```
//! # tokio::runtime::Runtime::new().unwrap().block_on(async {
//! use std::sync::Arc;
//! let src = Arc::new(engine::MemSource::new());
//! let state = query::api::ApiState::new(src, query::api::ApiConfig::default(), query::api::ApiMetrics::unregistered());
//! let router: axum::Router = query::api::router(state);
//! # let _ = router;
//! # });
//! ```

pub mod ast;
mod handlers;
pub mod json;
mod metrics;
pub mod params;

use std::collections::BTreeMap;
use std::sync::Arc;

use axum::Router;
use axum::routing::get;
use engine::SeriesSource;
use tokio::sync::Semaphore;

use crate::engine::{Engine, EngineOptions};
use crate::storeapi::{Proxy, ReadOptions, Warnings};

pub use metrics::ApiMetrics;

/// Settings of the API.
#[derive(Debug, Clone)]
pub struct ApiConfig {
    /// Engine options (lookback delta, sample limit, timeout, experimental functions).
    pub engine: EngineOptions,
    /// Most queries executing at once; the rest wait in a queue (`--query.max-concurrent`).
    pub max_concurrent: usize,
    /// Command-line flags reported by `/api/v1/status/flags` (name without dashes -> value).
    pub flags: BTreeMap<String, String>,
    /// `--query.auto-downsampling`: queries without `max_source_resolution` read downsampled data
    /// as `auto` does (range queries: up to step / 5).
    pub auto_downsampling: bool,
}

impl Default for ApiConfig {
    fn default() -> Self {
        ApiConfig {
            engine: EngineOptions::default(),
            max_concurrent: 20,
            flags: BTreeMap::new(),
            auto_downsampling: false,
        }
    }
}

struct Inner {
    proxy: Proxy,
    /// The source the engine was built with (requests read through their own view of `proxy`).
    source: Arc<dyn SeriesSource>,
    engine: Engine,
    config: ApiConfig,
    metrics: ApiMetrics,
    slots: Semaphore,
}

/// Everything the API handlers share. Cheap to clone.
#[derive(Clone)]
pub struct ApiState {
    inner: Arc<Inner>,
}

impl std::fmt::Debug for ApiState {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ApiState")
            .field("proxy", &self.inner.proxy)
            .field("config", &self.inner.config)
            .finish_non_exhaustive()
    }
}

impl ApiState {
    /// The API over one local `source` (requests may still deduplicate with `replicaLabels[]`),
    /// with one engine built from `config.engine`.
    pub fn new(source: Arc<dyn SeriesSource>, config: ApiConfig, metrics: ApiMetrics) -> Self {
        Self::with_proxy(Proxy::local(source), config, metrics)
    }

    /// The API over a querier's [`Proxy`] (local sources and StoreAPI endpoints): every request
    /// reads through the proxy with its Thanos parameters (`dedup`, `replicaLabels[]`,
    /// `partial_response`, `storeMatch[]`, the tenant header) and answers the proxy's warnings.
    pub fn with_proxy(proxy: Proxy, config: ApiConfig, metrics: ApiMetrics) -> Self {
        let source = proxy.read(&ReadOptions::default(), &Warnings::default());
        let engine = Engine::new(source.clone(), config.engine.clone());
        let slots = Semaphore::new(config.max_concurrent.clamp(1, Semaphore::MAX_PERMITS));
        ApiState { inner: Arc::new(Inner { proxy, source, engine, config, metrics, slots }) }
    }

    /// The API's metrics.
    pub fn metrics(&self) -> &ApiMetrics {
        &self.inner.metrics
    }
}

/// The `/api/v1` routes. GET and form-encoded POST are accepted where Prometheus accepts them;
/// `OPTIONS` answers 204.
pub fn router(state: ApiState) -> Router {
    use handlers::*;
    Router::new()
        .route("/api/v1/query", get(query).post(query).options(options))
        .route("/api/v1/query_range", get(query_range).post(query_range).options(options))
        .route("/api/v1/query_exemplars", get(query_exemplars).post(query_exemplars).options(options))
        .route("/api/v1/format_query", get(format_query).post(format_query).options(options))
        .route("/api/v1/parse_query", get(parse_query).post(parse_query).options(options))
        .route("/api/v1/series", get(series).post(series).options(options))
        .route("/api/v1/labels", get(labels).post(labels).options(options))
        .route("/api/v1/label/{name}/values", get(label_values).options(options))
        .route("/api/v1/metadata", get(metadata).options(options))
        .route("/api/v1/status/buildinfo", get(buildinfo).options(options))
        .route("/api/v1/status/flags", get(flags).options(options))
        .route("/api/v1/stores", get(stores).options(options))
        .with_state(state)
}
