//! The sidecar: runs beside one Prometheus server, as Thanos's sidecar does. It keeps track of
//! the Prometheus ([`Sidecar::watch_prometheus`]: readiness, external labels, oldest data), ships
//! its completed TSDB blocks to the bucket ([`shipper`]) and serves its data through remote read
//! as a [`SeriesSource`](engine::SeriesSource) ([`source`]) for the StoreAPI server.
//!
//! ```text
//!   Prometheus ──/-/ready, /api/v1/status/config, /status/tsdb (every get_config_interval;
//!       │         backoff while down)──► PromState {external labels, min time, ready}
//!       │                                   │                 │
//!       ├──/api/v1/read, /series, /labels──► RemoteReadSource ─► StoreAPI (query crate)
//!   --tsdb.path ──blocks──► Shipper (labels from PromState) ──► bucket (Strata blocks)
//! ```
//!
//! Readiness: the sidecar is ready while the Prometheus answers `/-/ready` and its external labels
//! are known and not empty. At start it waits up to `--prometheus.ready_timeout` and then gives up
//! (the process exits), as Thanos; afterwards a Prometheus that goes away makes the sidecar not
//! ready until it is back (retried with exponential backoff), and a restart or configuration
//! reload with new external labels is picked up at the next check. A Prometheus without external
//! labels is refused with Thanos's message ([`NO_EXTERNAL_LABELS`]).

pub mod prometheus;
pub mod shipper;
pub mod source;

use std::sync::atomic::{AtomicBool, AtomicI64, AtomicU64, Ordering};
use std::sync::{Arc, RwLock};
use std::time::{Duration, Instant};

use engine::Labels;
use prometheus_client::metrics::gauge::Gauge;
use prometheus_client::registry::Registry;

use crate::error::{Error, Result};
pub use prometheus::PromClient;
pub use shipper::{Shipper, ShipperMetrics};
pub use source::RemoteReadSource;

/// Thanos's reason for refusing a Prometheus without external labels.
pub const NO_EXTERNAL_LABELS: &str = "no external labels configured on Prometheus server, uniquely identifying external labels must be configured; see https://thanos.io/tip/thanos/storage.md#external-labels for details.";

/// What the sidecar knows about its Prometheus, shared by the watcher, the shipper and the
/// remote-read source.
#[derive(Debug)]
pub struct PromState {
    labels: RwLock<Labels>,
    min_time: AtomicI64,
    min_time_limit: AtomicI64,
    ready: Arc<AtomicBool>,
}

impl PromState {
    /// A state with no labels yet, not ready; `ready` is the flag the servers read (set here).
    /// `min_time_limit` is the `--min-time` now.
    pub fn new(ready: Arc<AtomicBool>, min_time_limit: i64) -> Self {
        PromState {
            labels: RwLock::new(Labels::default()),
            min_time: AtomicI64::new(min_time_limit),
            min_time_limit: AtomicI64::new(min_time_limit),
            ready,
        }
    }

    /// The external labels last read from Prometheus (empty before the first read).
    pub fn external_labels(&self) -> Labels {
        self.labels.read().unwrap_or_else(|p| p.into_inner()).clone()
    }

    fn set_external_labels(&self, l: Labels) {
        *self.labels.write().unwrap_or_else(|p| p.into_inner()) = l;
    }

    /// Oldest data the Prometheus holds (ms): its oldest local block's min time, else its head's.
    pub fn min_time(&self) -> i64 {
        self.min_time.load(Ordering::Acquire)
    }

    /// `--min-time` (ms): nothing older is served.
    pub fn min_time_limit(&self) -> i64 {
        self.min_time_limit.load(Ordering::Acquire)
    }

    /// True while the Prometheus is ready and its external labels are known.
    pub fn is_ready(&self) -> bool {
        self.ready.load(Ordering::Acquire)
    }
}

/// The sidecar's watch of its Prometheus.
#[derive(Debug, Clone)]
pub struct WatchOptions {
    /// How long to wait for Prometheus at start (`--prometheus.ready_timeout`, 10m).
    pub ready_timeout: Duration,
    /// How often to re-read the external labels (`--prometheus.get_config_interval`, 30s); also
    /// the longest backoff between retries while Prometheus is down.
    pub config_interval: Duration,
}

/// Heartbeat metrics under Thanos's names: `thanos_sidecar_prometheus_up` (1 when the last check
/// succeeded) and `thanos_sidecar_last_heartbeat_success_time_seconds`.
#[derive(Debug, Clone, Default)]
pub struct WatchMetrics {
    up: Gauge,
    last_heartbeat: Gauge<f64, AtomicU64>,
}

impl WatchMetrics {
    /// Creates the metrics and registers them in `registry` (one without a name prefix).
    pub fn register(registry: &mut Registry) -> Self {
        let m = WatchMetrics::default();
        registry.register(
            "thanos_sidecar_prometheus_up",
            "Boolean indicator whether the sidecar can reach its Prometheus peer.",
            m.up.clone(),
        );
        registry.register(
            "thanos_sidecar_last_heartbeat_success_time_seconds",
            "Timestamp of the last successful heartbeat in seconds.",
            m.last_heartbeat.clone(),
        );
        m
    }
}

/// The sidecar's background work over one Prometheus.
#[derive(Debug)]
pub struct Sidecar {
    prom: PromClient,
    state: Arc<PromState>,
    tsdb_path: std::path::PathBuf,
}

/// Resolves `--min-time` at each check (a duration flag moves with the clock).
pub type MinTimeFn = Arc<dyn Fn() -> i64 + Send + Sync>;

impl Sidecar {
    /// A sidecar of the Prometheus `prom` whose TSDB directory is `tsdb_path`.
    pub fn new(prom: PromClient, state: Arc<PromState>, tsdb_path: impl Into<std::path::PathBuf>) -> Self {
        Sidecar { prom, state, tsdb_path: tsdb_path.into() }
    }

    /// The shared state.
    pub fn state(&self) -> &Arc<PromState> {
        &self.state
    }

    /// One check: ready, external labels, oldest data. Returns the labels.
    async fn check(&self) -> Result<Labels> {
        self.prom.ready().await?;
        let labels = self.prom.external_labels().await?;
        let oldest_block = shipper::local_blocks(&self.tsdb_path).ok().and_then(|b| b.first().map(|m| m.min_time));
        let oldest = match oldest_block {
            Some(t) => Some(t),
            None => self.prom.head_min_time().await?,
        };
        if let Some(t) = oldest {
            self.state.min_time.store(t, Ordering::Release);
        }
        Ok(labels)
    }

    /// Watches the Prometheus until the process ends: the first check is retried with backoff
    /// for up to `ready_timeout` (then this returns the error, and the sidecar should exit), as
    /// is a first answer with no external labels ([`NO_EXTERNAL_LABELS`]); later failures make the
    /// sidecar not ready until a check succeeds again.
    pub async fn watch_prometheus(&self, opts: WatchOptions, min_time: MinTimeFn, metrics: WatchMetrics) -> Result<()> {
        let started = Instant::now();
        let mut backoff = Duration::from_millis(250);
        let mut known = false;
        loop {
            self.state.min_time_limit.store(min_time(), Ordering::Release);
            match self.check().await {
                Ok(labels) => {
                    metrics.up.set(1);
                    let now = std::time::SystemTime::now()
                        .duration_since(std::time::UNIX_EPOCH)
                        .map(|d| d.as_secs_f64())
                        .unwrap_or(0.0);
                    metrics.last_heartbeat.set(now);
                    if labels.is_empty() {
                        if !known {
                            return Err(Error::Sidecar { reason: NO_EXTERNAL_LABELS.to_string() });
                        }
                        tracing::warn!("{NO_EXTERNAL_LABELS} (the configuration was changed); not ready");
                        self.state.ready.store(false, Ordering::Release);
                    } else {
                        if labels != self.state.external_labels() {
                            tracing::info!(external_labels = %labels, "successfully loaded prometheus external labels");
                        }
                        self.state.set_external_labels(labels);
                        if !self.state.is_ready() {
                            tracing::info!(prometheus = %self.prom.base(), "Prometheus is ready; sidecar ready");
                        }
                        self.state.ready.store(true, Ordering::Release);
                        known = true;
                    }
                    backoff = Duration::from_millis(250);
                    tokio::time::sleep(opts.config_interval).await;
                }
                Err(e) => {
                    metrics.up.set(0);
                    if self.state.is_ready() {
                        tracing::warn!(error = %e, "Prometheus went away; sidecar not ready, retrying");
                    } else {
                        tracing::warn!(error = %e, "failed to reach Prometheus. Is Prometheus running? Retrying");
                    }
                    self.state.ready.store(false, Ordering::Release);
                    if !known && started.elapsed() >= opts.ready_timeout {
                        return Err(Error::Sidecar {
                            reason: format!(
                                "Prometheus at {} not ready after waiting {:?} (--prometheus.ready_timeout): {e}",
                                self.prom.base(),
                                opts.ready_timeout
                            ),
                        });
                    }
                    tokio::time::sleep(backoff).await;
                    backoff = (backoff * 2).min(opts.config_interval);
                }
            }
        }
    }

    /// Runs the shipper until the process ends: a sync whenever the TSDB directory's blocks
    /// change, every 30 s anyway (as Thanos), and after a failure with exponential backoff (1 s
    /// to 30 s). Nothing is uploaded while the external labels are unknown.
    pub async fn run_shipper(&self, shipper: Shipper) {
        const PERIOD: Duration = Duration::from_secs(30);
        const POLL: Duration = Duration::from_secs(1);
        if let Err(e) = shipper::clean_upload_dir(&self.tsdb_path) {
            tracing::warn!(error = %e, "cannot remove leftovers of interrupted uploads");
        }
        let mut last_listing: Option<Vec<String>> = None;
        let mut next_sync = Instant::now();
        let mut backoff = Duration::from_secs(1);
        let mut waiting_logged = false;
        loop {
            let listing = block_dir_names(&self.tsdb_path);
            let changed = last_listing.as_ref() != Some(&listing);
            if (changed || Instant::now() >= next_sync) && !self.state.external_labels().is_empty() {
                waiting_logged = false;
                match shipper.sync().await {
                    Ok(r) if r.failed == 0 => {
                        last_listing = Some(listing);
                        next_sync = Instant::now() + PERIOD;
                        backoff = Duration::from_secs(1);
                        if !r.uploaded.is_empty() {
                            tracing::debug!(uploaded = r.uploaded.len(), "shipper sync done");
                        }
                    }
                    Ok(r) => {
                        tracing::warn!(failed = r.failed, retry_in = ?backoff, "shipper sync incomplete");
                        last_listing = Some(listing);
                        next_sync = Instant::now() + backoff;
                        backoff = (backoff * 2).min(PERIOD);
                    }
                    Err(e) => {
                        tracing::warn!(error = %e, retry_in = ?backoff, "shipper sync failed");
                        next_sync = Instant::now() + backoff;
                        backoff = (backoff * 2).min(PERIOD);
                        last_listing = Some(listing);
                    }
                }
            } else if self.state.external_labels().is_empty() && !waiting_logged {
                tracing::info!("{}", shipper::NO_LABELS);
                waiting_logged = true;
            }
            tokio::time::sleep(POLL).await;
        }
    }
}

/// Names of the block directories in `dir`, sorted (empty when unreadable).
fn block_dir_names(dir: &std::path::Path) -> Vec<String> {
    let mut out: Vec<String> = std::fs::read_dir(dir)
        .map(|rd| {
            rd.filter_map(|e| e.ok())
                .filter_map(|e| e.file_name().to_str().map(str::to_string))
                .filter(|n| crate::tsdb::is_block_dir_name(n))
                .collect()
        })
        .unwrap_or_default();
    out.sort();
    out
}
