//! The receive service: Prometheus remote write 1.0 into per-tenant heads, with Thanos's tenancy,
//! hashring placement and replication.
//!
//! ```text
//!  POST /api/v1/receive | /api/v1/write
//!     │ body ≤ max  (413)      tenant = THANOS-TENANT header or the default tenant
//!     ▼
//!  decode + validate (400) ──► series ──hashring (hashmod, rf replicas)──┬─► local endpoint: tenant head append
//!                                                                          └─► other receivers: gRPC
//!                                                        thanos.WriteableStore/RemoteWrite, replica n+1 (no re-forward)
//!  answer: 200 all written │ 400 invalid series / too old │ 409 out of order or duplicate
//!          500 local WAL/disk failure │ 503 write quorum (floor(rf/2)+1; 1 for rf=2) not reached (retried)
//! ```
//!
//! Partial success is kept: when some series or samples are rejected (400/409) the valid ones of
//! the same request are already durable in the head; the answer names the first rejected series.
//! Prometheus does not retry 4xx answers, so nothing is written twice.
//!
//! Each tenant has its own head under `<tsdb.path>/<tenant>/`, opened on its first write (or at
//! start for tenants found on disk) by a [`HeadFactory`]; its blocks carry the external labels plus
//! `tenant_id=<tenant>`. [`ReceiveState::source`] is one [`SeriesSource`] over every tenant's head,
//! each series labelled with its tenant's external labels, so queries see received samples at once.
//! [`ReceiveState::cut_all`] cuts (and uploads) finished blocks of every head; `strata receive` calls
//! it every few seconds and once with `force` on shutdown.
//!
//! Answers use 200 on success, as Thanos receive does (Prometheus's own receiver answers 204; senders
//! accept any 2xx). The same writes arrive over gRPC from other receivers ([`crate::receive_grpc`]),
//! which is also how this receiver forwards to its hashring peers.

use std::collections::BTreeMap;
use std::fmt;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;

use async_trait::async_trait;
use axum::Router;
use axum::body::Body;
use axum::extract::State;
use axum::http::{HeaderMap, HeaderValue, StatusCode, header};
use axum::response::{IntoResponse, Response};
use axum::routing::post;
use engine::bucket::Bucket;
use engine::head::{AppendSeries, Head, HeadOptions};
use engine::labels::{Labels, Matcher};
use engine::source::{SelectRequest, SeriesBatch, SeriesSource, SeriesStream};
use futures::TryStreamExt;
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::gauge::Gauge;
use prometheus_client::registry::Registry;

use crate::error::{Error, Result};
use crate::hashring::{Hashrings, write_quorum};
use crate::receive_grpc::{ForwardError, Peers};
use crate::remote_write;

/// Default tenant header (`--receive.tenant-header`), as Thanos.
pub const DEFAULT_TENANT_HEADER: &str = "THANOS-TENANT";
/// Default tenant (`--receive.default-tenant-id`), as Thanos.
pub const DEFAULT_TENANT: &str = "default-tenant";
/// Label naming the tenant on blocks and on query results (`--receive.tenant-label-name`).
pub const DEFAULT_TENANT_LABEL: &str = "tenant_id";
/// Header carrying the replica number (1-based) on an HTTP remote write that was already placed by
/// another receiver (Thanos's `--receive.replica-header`); such a request is written locally and
/// never forwarded again. Receivers forward to each other over gRPC, where the replica is a field.
pub const REPLICA_HEADER: &str = "THANOS-REPLICA";

/// What one head append did: samples accepted and rejected by cause.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct AppendOutcome {
    /// Samples written (durable when the append returned).
    pub accepted: usize,
    /// Samples older than the newest of their series beyond the out-of-order window.
    pub out_of_order: usize,
    /// Samples at an existing timestamp with a different value.
    pub duplicate: usize,
    /// Samples older than the head accepts at all.
    pub too_old: usize,
    /// The first rejection, naming the series.
    pub first_error: Option<String>,
}

impl From<engine::AppendReport> for AppendOutcome {
    fn from(r: engine::AppendReport) -> Self {
        AppendOutcome {
            accepted: r.accepted,
            out_of_order: r.out_of_order,
            duplicate: r.duplicate,
            too_old: r.too_old,
            first_error: r.first_error,
        }
    }
}

/// Heads that are cut into blocks now and then: the receive service's tenants, a component's own
/// head ([`crate::own_head::OwnHead`]).
#[async_trait]
pub trait CutHeads: Send + Sync {
    /// Cuts finished blocks (all data when `force`), awaiting `uploaded()` after each upload and
    /// before the samples leave the head; returns the blocks written.
    async fn cut_heads(&self, force: bool, uploaded: &UploadHook) -> Result<usize>;
}

#[async_trait]
impl CutHeads for ReceiveState {
    async fn cut_heads(&self, force: bool, uploaded: &UploadHook) -> Result<usize> {
        self.cut_all_then(force, uploaded).await
    }
}

/// A tenant's head as the receiver uses it: append, cut, and read.
#[async_trait]
pub trait TenantHead: SeriesSource {
    /// Appends samples; durable when it returns. Rejected samples are counted, not errors; an error
    /// means the write failed as a whole (WAL or disk).
    async fn append(&self, series: &[AppendSeries<'_>]) -> Result<AppendOutcome>;
    /// Appends samples that are queryable when it returns and durable after the next
    /// [`TenantHead::sync`] (rule results: Prometheus's rule manager does not wait for its WAL
    /// either).
    async fn append_visible(&self, series: &[AppendSeries<'_>]) -> Result<AppendOutcome>;
    /// Waits until everything appended before is durable.
    async fn sync(&self) -> Result<()>;
    /// Cuts finished blocks (all data when `force`) and uploads them, awaiting `uploaded()` after
    /// each upload and before the head drops the block's samples; returns the blocks written.
    async fn cut(&self, force: bool, uploaded: &UploadHook) -> Result<usize>;
}

/// Called after a block is uploaded and before the head drops its samples (see
/// [`ReceiveState::cut_all_then`]).
pub type UploadHook = dyn Fn() -> futures::future::BoxFuture<'static, ()> + Send + Sync;

/// Opens the head of a tenant.
#[async_trait]
pub trait HeadFactory: Send + Sync + fmt::Debug {
    /// Opens (replaying its WAL) or creates the head in `dir`, whose blocks carry `external_labels`.
    async fn open(&self, tenant: &str, dir: &Path, external_labels: &Labels) -> Result<Arc<dyn TenantHead>>;
}

/// The production [`HeadFactory`]: an [`engine::Head`] per tenant, cutting blocks into `bucket`.
#[derive(Debug, Clone)]
pub struct EngineHeads {
    /// Where cut blocks are uploaded.
    pub bucket: Bucket,
    /// `--tsdb.block-duration` in ms.
    pub block_duration_ms: i64,
    /// `--tsdb.out-of-order.time-window` in ms (0 disables).
    pub out_of_order_window_ms: i64,
}

/// An [`engine::Head`] with the bucket its blocks go to.
#[derive(Debug)]
struct EngineHead {
    head: Arc<Head>,
    bucket: Bucket,
}

#[async_trait]
impl HeadFactory for EngineHeads {
    async fn open(&self, _tenant: &str, dir: &Path, external_labels: &Labels) -> Result<Arc<dyn TenantHead>> {
        let opts = HeadOptions {
            dir: dir.to_path_buf(),
            block_duration_ms: self.block_duration_ms,
            external_labels: external_labels.iter().map(|l| (l.name.clone(), l.value.clone())).collect(),
            source: "receive".into(),
            out_of_order_window_ms: self.out_of_order_window_ms,
        };
        let head = Head::open(opts).await?;
        Ok(Arc::new(EngineHead { head, bucket: self.bucket.clone() }))
    }
}

#[async_trait]
impl SeriesSource for EngineHead {
    async fn select(&self, req: &SelectRequest) -> engine::Result<SeriesStream> {
        self.head.select(req).await
    }
    async fn series(&self, matchers: &[Matcher], min_t: i64, max_t: i64) -> engine::Result<Vec<Labels>> {
        self.head.series(matchers, min_t, max_t).await
    }
    async fn data_ranges(&self) -> Vec<engine::DataRange> {
        self.head.data_ranges().await
    }
}

#[async_trait]
impl TenantHead for EngineHead {
    async fn append(&self, series: &[AppendSeries<'_>]) -> Result<AppendOutcome> {
        Ok(self.head.append_series(series).await?.into())
    }
    async fn append_visible(&self, series: &[AppendSeries<'_>]) -> Result<AppendOutcome> {
        Ok(self.head.submit_series(series)?.0.into())
    }
    async fn sync(&self) -> Result<()> {
        Ok(self.head.sync().await?)
    }
    async fn cut(&self, force: bool, uploaded: &UploadHook) -> Result<usize> {
        Ok(self.head.cut_then(&self.bucket, force, uploaded).await?.len())
    }
}

/// Configuration of the receive service.
#[derive(Debug, Clone)]
pub struct ReceiveOptions {
    /// `--tsdb.path`: tenant heads live in `<tsdb_path>/<tenant>/`.
    pub tsdb_path: PathBuf,
    /// `--receive.tenant-header`.
    pub tenant_header: String,
    /// `--receive.default-tenant-id`.
    pub default_tenant: String,
    /// `--receive.tenant-label-name`.
    pub tenant_label: String,
    /// `--label`: external labels of every tenant's blocks.
    pub external_labels: Labels,
    /// `--receive.max-body-size` in bytes (compressed body and decompressed message).
    pub max_body_bytes: usize,
    /// `--receive.replication-factor`.
    pub replication_factor: u64,
    /// `--receive.hashrings-file`, parsed; None: every series is written locally.
    pub hashrings: Option<Hashrings>,
    /// `--receive.local-endpoint`: this receiver's address in the hashrings.
    pub local_endpoint: Option<String>,
    /// Timeout of a forward to another receiver (gRPC `thanos.WriteableStore/RemoteWrite`).
    pub forward_timeout: Duration,
}

impl Default for ReceiveOptions {
    fn default() -> Self {
        ReceiveOptions {
            tsdb_path: PathBuf::from("./data"),
            tenant_header: DEFAULT_TENANT_HEADER.into(),
            default_tenant: DEFAULT_TENANT.into(),
            tenant_label: DEFAULT_TENANT_LABEL.into(),
            external_labels: Labels::default(),
            max_body_bytes: remote_write::DEFAULT_MAX_BODY_BYTES,
            replication_factor: 1,
            hashrings: None,
            local_endpoint: None,
            forward_timeout: Duration::from_secs(5),
        }
    }
}

/// Metrics of the receive service (`strata_receive_*` once registered under the `strata` prefix).
#[derive(Debug, Clone, Default)]
struct ReceiveMetrics {
    requests: Family<[(&'static str, String); 1], Counter>,
    samples_accepted: Counter,
    samples_rejected: Family<[(&'static str, &'static str); 1], Counter>,
    series_invalid: Counter,
    forwards: Family<[(&'static str, &'static str); 1], Counter>,
    grpc_writes: Family<[(&'static str, String); 1], Counter>,
    tenants: Gauge,
}

struct Inner {
    opts: ReceiveOptions,
    factory: Arc<dyn HeadFactory>,
    heads: tokio::sync::Mutex<BTreeMap<String, Arc<dyn TenantHead>>>,
    peers: Peers,
    metrics: ReceiveMetrics,
}

/// Shared state of the receive service (cheap to clone).
#[derive(Clone)]
pub struct ReceiveState(Arc<Inner>);

impl fmt::Debug for ReceiveState {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("ReceiveState").field("opts", &self.0.opts).field("factory", &self.0.factory).finish()
    }
}

/// Checks a tenant id before it becomes a directory name.
pub fn validate_tenant(tenant: &str) -> Result<()> {
    let bad = |reason: &str| Error::BadTenant { tenant: tenant.to_string(), reason: reason.to_string() };
    if tenant.is_empty() || tenant.len() > 255 {
        return Err(bad("must be 1 to 255 characters"));
    }
    if tenant == "." || tenant == ".." {
        return Err(bad("is not a valid directory name"));
    }
    if !tenant.bytes().all(|b| b.is_ascii_alphanumeric() || matches!(b, b'_' | b'-' | b'.')) {
        return Err(bad("may only hold ASCII letters, digits, '_', '-' and '.'"));
    }
    Ok(())
}

impl ReceiveState {
    /// A receive service with these options, opening heads with `factory`. Fails when a hashring is
    /// configured but the local endpoint is missing from it, or has fewer endpoints than the
    /// replication factor.
    pub fn new(opts: ReceiveOptions, factory: Arc<dyn HeadFactory>) -> Result<Self> {
        if let Some(h) = &opts.hashrings {
            let what = "--receive.hashrings-file".to_string();
            let local = opts.local_endpoint.as_deref().ok_or_else(|| Error::Hashring {
                path: what.clone(),
                reason: "--receive.local-endpoint is required with a hashring".into(),
            })?;
            if !h.all_endpoints().iter().any(|e| e == local) {
                return Err(Error::Hashring {
                    path: what,
                    reason: format!("the local endpoint {local:?} (--receive.local-endpoint) is in no hashring"),
                });
            }
            for r in h.rings() {
                if (r.endpoints.len() as u64) < opts.replication_factor {
                    return Err(Error::Hashring {
                        path: what,
                        reason: format!(
                            "hashring {:?} has {} endpoints, fewer than --receive.replication-factor {}",
                            r.name,
                            r.endpoints.len(),
                            opts.replication_factor
                        ),
                    });
                }
            }
        }
        if opts.replication_factor == 0 {
            return Err(Error::Hashring {
                path: "--receive.replication-factor".into(),
                reason: "must be at least 1".into(),
            });
        }
        let peers = Peers::new(opts.forward_timeout);
        Ok(ReceiveState(Arc::new(Inner {
            opts,
            factory,
            heads: tokio::sync::Mutex::new(BTreeMap::new()),
            peers,
            metrics: ReceiveMetrics::default(),
        })))
    }

    /// The options.
    pub fn options(&self) -> &ReceiveOptions {
        &self.0.opts
    }

    /// Registers the service's metrics: `receive_requests{code}`, `receive_samples_accepted`,
    /// `receive_samples_rejected{reason}`, `receive_series_invalid`, `receive_forwards{result}`,
    /// `receive_grpc_writes{grpc_code}` and `receive_tenants`.
    pub fn register_metrics(&self, registry: &mut Registry) {
        let m = &self.0.metrics;
        registry.register(
            "receive_requests",
            "Remote-write requests answered, by HTTP status code",
            m.requests.clone(),
        );
        registry.register("receive_samples_accepted", "Samples written to a local head", m.samples_accepted.clone());
        registry.register(
            "receive_samples_rejected",
            "Samples rejected by a local head (out_of_order, duplicate, too_old)",
            m.samples_rejected.clone(),
        );
        registry.register("receive_series_invalid", "Series rejected for invalid labels", m.series_invalid.clone());
        registry.register(
            "receive_forwards",
            "Requests forwarded to other receivers over gRPC, by result",
            m.forwards.clone(),
        );
        registry.register(
            "receive_grpc_writes",
            "thanos.WriteableStore/RemoteWrite writes answered, by gRPC code",
            m.grpc_writes.clone(),
        );
        registry.register("receive_tenants", "Tenants with an open head", m.tenants.clone());
    }

    /// External labels of a tenant's blocks: `--label`s plus the tenant label.
    pub fn tenant_labels(&self, tenant: &str) -> Labels {
        let mut l = self.0.opts.external_labels.clone();
        l.set(&self.0.opts.tenant_label, tenant);
        l
    }

    /// Whether a block in the bucket is one this receiver's heads cut (or one of a receiver with the
    /// same `--label`s): source `receive`, labels exactly the `--label`s plus the tenant label. A
    /// receiver serves these over the StoreAPI beside its heads, as Thanos receive serves its local
    /// blocks; give each receiver a distinct replica label so that it serves only its own.
    pub fn is_own_block(&self, meta: &engine::meta::BlockMeta) -> bool {
        let (ext, labels) = (&self.0.opts.external_labels, &meta.thanos.labels);
        meta.thanos.source == "receive"
            && labels.contains_key(&self.0.opts.tenant_label)
            && labels.len() == ext.len() + 1
            && ext.iter().all(|l| labels.get(&l.name) == Some(&l.value))
    }

    /// The head of `tenant`, opened on first use.
    pub async fn head(&self, tenant: &str) -> Result<Arc<dyn TenantHead>> {
        validate_tenant(tenant)?;
        let mut heads = self.0.heads.lock().await;
        if let Some(h) = heads.get(tenant) {
            return Ok(h.clone());
        }
        let dir = self.0.opts.tsdb_path.join(tenant);
        std::fs::create_dir_all(&dir).map_err(|e| Error::io(&dir, e))?;
        let h = self.0.factory.open(tenant, &dir, &self.tenant_labels(tenant)).await?;
        tracing::info!(tenant, dir = %dir.display(), "opened tenant head");
        heads.insert(tenant.to_string(), h.clone());
        self.0.metrics.tenants.set(i64::try_from(heads.len()).unwrap_or(i64::MAX));
        Ok(h)
    }

    /// Opens the heads of every tenant directory already under `--tsdb.path` (replaying their WALs),
    /// so data of a previous run is queryable and gets cut. Returns the tenants opened.
    pub async fn open_existing(&self) -> Result<Vec<String>> {
        let root = &self.0.opts.tsdb_path;
        let mut out = Vec::new();
        let rd = match std::fs::read_dir(root) {
            Ok(rd) => rd,
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(out),
            Err(e) => return Err(Error::io(root, e)),
        };
        for e in rd {
            let e = e.map_err(|e| Error::io(root, e))?;
            let is_dir = e.file_type().map_err(|err| Error::io(e.path(), err))?.is_dir();
            let Some(name) = e.file_name().to_str().map(str::to_string) else { continue };
            if is_dir && validate_tenant(&name).is_ok() {
                self.head(&name).await?;
                out.push(name);
            }
        }
        out.sort();
        Ok(out)
    }

    /// Snapshot of the open heads.
    pub async fn heads(&self) -> Vec<(String, Arc<dyn TenantHead>)> {
        self.0.heads.lock().await.iter().map(|(t, h)| (t.clone(), h.clone())).collect()
    }

    /// Cuts every tenant's head (all data when `force`); returns the blocks written. Every head is
    /// tried; the first error is returned after the others were cut.
    pub async fn cut_all(&self, force: bool) -> Result<usize> {
        self.cut_all_then(force, &|| Box::pin(async {})).await
    }

    /// [`ReceiveState::cut_all`], awaiting `uploaded()` after each block is in the bucket and before
    /// its head drops the samples: re-reading the bucket there keeps every sample visible to a
    /// reader of both (the StoreAPI of `strata receive` and `strata up`).
    pub async fn cut_all_then(&self, force: bool, uploaded: &UploadHook) -> Result<usize> {
        let mut n = 0;
        let mut first_err = None;
        for (tenant, h) in self.heads().await {
            match h.cut(force, uploaded).await {
                Ok(k) => {
                    if k > 0 {
                        tracing::info!(tenant, blocks = k, force, "cut head blocks");
                    }
                    n += k;
                }
                Err(e) => {
                    tracing::error!(tenant, "cutting the head failed: {e}");
                    first_err.get_or_insert(e);
                }
            }
        }
        match first_err {
            Some(e) => Err(e),
            None => Ok(n),
        }
    }

    /// One [`SeriesSource`] over every tenant's head.
    pub fn source(&self) -> Arc<dyn SeriesSource> {
        Arc::new(ReceiveSource { state: self.clone() })
    }

    /// Writes decoded series of `tenant` (placing and replicating them unless `forwarded`) and
    /// returns the per-endpoint-group results.
    async fn write(&self, tenant: &str, series: &[AppendSeries<'_>], forwarded: bool) -> WriteResult {
        let opts = &self.0.opts;
        let rf = opts.replication_factor;
        let (ring, local) = match (&opts.hashrings, &opts.local_endpoint, forwarded) {
            (Some(h), Some(l), false) => (h, l.as_str()),
            _ => {
                let n = series.len();
                let r = self.write_local(tenant, series).await;
                return WriteResult { per_series: vec![vec![r]; n.min(1)], quorum: 1 };
            }
        };
        // group series by (endpoint, replica number)
        let mut groups: BTreeMap<(String, u64), Vec<usize>> = BTreeMap::new();
        for (i, s) in series.iter().enumerate() {
            let hash = crate::hashring::series_hash_pairs(tenant, s.labels);
            match ring.replicas_for_hash(tenant, hash, rf) {
                Ok(eps) => {
                    for (n, ep) in eps.into_iter().enumerate() {
                        groups.entry((ep.to_string(), n as u64)).or_default().push(i);
                    }
                }
                Err(e) => {
                    let r = Outcome::Internal(e.to_string());
                    return WriteResult { per_series: vec![vec![r]], quorum: 1 };
                }
            }
        }
        // the local groups are written as one append
        let mut local_idx: Vec<usize> = Vec::new();
        let mut remote: Vec<(String, u64, Vec<usize>)> = Vec::new();
        for ((ep, n), idx) in groups {
            if ep == local {
                local_idx.extend(idx);
            } else {
                remote.push((ep, n, idx));
            }
        }
        local_idx.sort_unstable();
        let local_fut = async {
            if local_idx.is_empty() {
                return None;
            }
            let batch: Vec<AppendSeries<'_>> = local_idx.iter().map(|&i| series[i]).collect();
            Some(self.write_local(tenant, &batch).await)
        };
        let remote_fut = futures::future::join_all(remote.iter().map(|(ep, n, idx)| {
            let batch: Vec<AppendSeries<'_>> = idx.iter().map(|&i| series[i]).collect();
            async move { self.forward(tenant, ep, *n + 1, &batch).await }
        }));
        let (local_res, remote_res) = tokio::join!(local_fut, remote_fut);
        let mut per_series: Vec<Vec<Outcome>> = vec![Vec::new(); series.len()];
        if let Some(r) = local_res {
            for &i in &local_idx {
                per_series[i].push(r.clone());
            }
        }
        for ((_, _, idx), r) in remote.iter().zip(remote_res) {
            for &i in idx {
                per_series[i].push(r.clone());
            }
        }
        WriteResult { per_series, quorum: write_quorum(rf) as usize }
    }

    async fn write_local(&self, tenant: &str, series: &[AppendSeries<'_>]) -> Outcome {
        let head = match self.head(tenant).await {
            Ok(h) => h,
            Err(e @ Error::BadTenant { .. }) => return Outcome::BadRequest(e.to_string()),
            Err(e) => return Outcome::Internal(e.to_string()),
        };
        match head.append(series).await {
            Err(e) => Outcome::Internal(format!("tenant {tenant:?}: write failed: {e}")),
            Ok(r) => {
                let m = &self.0.metrics;
                m.samples_accepted.inc_by(r.accepted as u64);
                for (reason, n) in
                    [("out_of_order", r.out_of_order), ("duplicate", r.duplicate), ("too_old", r.too_old)]
                {
                    if n > 0 {
                        m.samples_rejected.get_or_create(&[("reason", reason)]).inc_by(n as u64);
                    }
                }
                let first = r.first_error.clone().unwrap_or_default();
                let counts = format!(
                    "tenant {tenant:?}: {} samples accepted, {} out of order, {} duplicate, {} too old; first rejected: {first}",
                    r.accepted, r.out_of_order, r.duplicate, r.too_old
                );
                if r.too_old > 0 {
                    Outcome::BadRequest(counts)
                } else if r.out_of_order + r.duplicate > 0 {
                    Outcome::Conflict(counts)
                } else {
                    Outcome::Ok
                }
            }
        }
    }

    async fn forward(&self, tenant: &str, endpoint: &str, replica: u64, series: &[AppendSeries<'_>]) -> Outcome {
        let fail = |reason: String| Error::Forward { endpoint: endpoint.to_string(), reason }.to_string();
        let res = self.0.peers.forward(endpoint, tenant, replica, series).await;
        let result = if res.is_ok() { "success" } else { "error" };
        self.0.metrics.forwards.get_or_create(&[("result", result)]).inc();
        match res {
            Ok(()) => Outcome::Ok,
            Err(ForwardError::Conflict(m)) => Outcome::Conflict(fail(m)),
            Err(ForwardError::Failed(m)) => Outcome::Unavailable(fail(m)),
        }
    }

    /// Counts a `thanos.WriteableStore/RemoteWrite` answer.
    pub(crate) fn count_grpc_write(&self, code: tonic::Code) {
        let code = match code {
            tonic::Code::Ok => "OK".to_string(),
            c => format!("{c:?}"),
        };
        self.0.metrics.grpc_writes.get_or_create(&[("grpc_code", code)]).inc();
    }

    /// Parses a decompressed remote-write message of `tenant` and writes it (placing and
    /// replicating it unless `forwarded`): the answer's HTTP status and message, or the parse error.
    pub(crate) async fn write_message(
        &self,
        tenant: &str,
        raw: &[u8],
        forwarded: bool,
    ) -> Result<(StatusCode, String)> {
        let decoded = remote_write::parse(raw)?;
        if decoded.histograms_dropped + decoded.exemplars_dropped > 0 {
            tracing::debug!(
                tenant,
                histograms = decoded.histograms_dropped,
                exemplars = decoded.exemplars_dropped,
                "remote write: native histograms and exemplars are not stored yet"
            );
        }
        let result = if decoded.is_empty() {
            WriteResult { per_series: vec![], quorum: 1 }
        } else {
            self.write(tenant, &decoded.series(), forwarded).await
        };
        self.0.metrics.series_invalid.inc_by(decoded.rejected.len() as u64);
        Ok(answer(&result, &decoded.rejected))
    }
}

/// Result of writing one series to one endpoint.
#[derive(Debug, Clone, PartialEq, Eq)]
enum Outcome {
    Ok,
    /// Written, some samples rejected as out of order or duplicate (409).
    Conflict(String),
    /// Written, some samples rejected as too old, or the data is invalid (400).
    BadRequest(String),
    /// Not written: endpoint unreachable or failing (503 unless quorum is reached).
    Unavailable(String),
    /// Not written: local WAL/disk failure or misconfiguration (500 unless quorum is reached).
    Internal(String),
}

impl Outcome {
    fn written(&self) -> bool {
        matches!(self, Outcome::Ok | Outcome::Conflict(_) | Outcome::BadRequest(_))
    }
    fn message(&self) -> &str {
        match self {
            Outcome::Ok => "",
            Outcome::Conflict(m) | Outcome::BadRequest(m) | Outcome::Unavailable(m) | Outcome::Internal(m) => m,
        }
    }
}

/// Outcomes of every replica of every series of a request.
#[derive(Debug)]
struct WriteResult {
    /// Per series (or one shared entry when all series went to one local append): its replicas' outcomes.
    per_series: Vec<Vec<Outcome>>,
    quorum: usize,
}

/// The HTTP answer of a request: its status and message.
fn answer(result: &WriteResult, rejected: &[Error]) -> (StatusCode, String) {
    let mut failed: Option<(bool, String)> = None; // (all internal, first message)
    let mut bad: Option<String> = rejected.first().map(|e| {
        if rejected.len() > 1 { format!("{e} (and {} more invalid series)", rejected.len() - 1) } else { e.to_string() }
    });
    let mut conflict: Option<String> = None;
    for outs in &result.per_series {
        let written = outs.iter().filter(|o| o.written()).count();
        if written < result.quorum {
            let all_internal = outs.iter().filter(|o| !o.written()).all(|o| matches!(o, Outcome::Internal(_)));
            let msg = outs.iter().find(|o| !o.written()).map(|o| o.message().to_string()).unwrap_or_default();
            match &mut failed {
                None => failed = Some((all_internal, msg)),
                Some((ai, _)) => *ai &= all_internal,
            }
            continue;
        }
        for o in outs {
            match o {
                Outcome::BadRequest(m) if bad.is_none() => bad = Some(m.clone()),
                Outcome::Conflict(m) if conflict.is_none() => conflict = Some(m.clone()),
                _ => {}
            }
        }
    }
    if let Some((all_internal, msg)) = failed {
        return if all_internal {
            (StatusCode::INTERNAL_SERVER_ERROR, msg)
        } else {
            (StatusCode::SERVICE_UNAVAILABLE, format!("write quorum of {} not reached: {msg}", result.quorum))
        };
    }
    if let Some(m) = bad {
        return (StatusCode::BAD_REQUEST, m);
    }
    if let Some(m) = conflict {
        return (StatusCode::CONFLICT, m);
    }
    (StatusCode::OK, String::new())
}

/// Maps an error of the decoding stage to its HTTP status (the one place that does).
pub fn http_status(e: &Error) -> StatusCode {
    match e {
        Error::BodyTooLarge { .. } => StatusCode::PAYLOAD_TOO_LARGE,
        Error::BadSnappy { .. } | Error::BadProtobuf { .. } | Error::InvalidSeries { .. } | Error::BadTenant { .. } => {
            StatusCode::BAD_REQUEST
        }
        Error::Forward { .. } | Error::InsufficientNodes { .. } => StatusCode::SERVICE_UNAVAILABLE,
        _ => StatusCode::INTERNAL_SERVER_ERROR,
    }
}

fn plain(status: StatusCode, msg: String) -> Response {
    if !msg.is_empty() {
        if status.is_server_error() {
            tracing::warn!(status = status.as_u16(), "remote write: {msg}");
        } else {
            tracing::debug!(status = status.as_u16(), "remote write: {msg}");
        }
    }
    let mut r = (status, if msg.is_empty() { msg } else { msg + "\n" }).into_response();
    r.headers_mut().insert(header::CONTENT_TYPE, HeaderValue::from_static("text/plain; charset=utf-8"));
    r
}

async fn handle_write(State(st): State<ReceiveState>, headers: HeaderMap, body: Body) -> Response {
    let resp = write_request(&st, &headers, body).await;
    st.0.metrics.requests.get_or_create(&[("code", resp.status().as_u16().to_string())]).inc();
    resp
}

async fn write_request(st: &ReceiveState, headers: &HeaderMap, body: Body) -> Response {
    let opts = st.options();
    let max = opts.max_body_bytes;
    if let Some(len) =
        headers.get(header::CONTENT_LENGTH).and_then(|v| v.to_str().ok()).and_then(|v| v.parse::<u64>().ok())
        && len > max as u64
    {
        let e = Error::BodyTooLarge { what: "request body", size: len, limit: max as u64 };
        return plain(http_status(&e), e.to_string());
    }
    if let Some(ct) = headers.get(header::CONTENT_TYPE).and_then(|v| v.to_str().ok())
        && ct.contains("io.prometheus.write.v2")
    {
        return plain(
            StatusCode::UNSUPPORTED_MEDIA_TYPE,
            format!("remote write: content type {ct:?} (remote write 2.0) is not supported yet; send remote write 1.0"),
        );
    }
    if let Some(ce) = headers.get(header::CONTENT_ENCODING).and_then(|v| v.to_str().ok())
        && !ce.eq_ignore_ascii_case("snappy")
    {
        return plain(
            StatusCode::BAD_REQUEST,
            format!("remote write: content encoding {ce:?} is not supported (snappy only)"),
        );
    }
    let bytes = match axum::body::to_bytes(body, max).await {
        Ok(b) => b,
        Err(read) => {
            let e = Error::BodyTooLarge { what: "request body", size: max as u64 + 1, limit: max as u64 };
            return plain(http_status(&e), format!("{e} ({read})"));
        }
    };
    let tenant = headers
        .get(opts.tenant_header.as_str())
        .and_then(|v| v.to_str().ok())
        .map(str::trim)
        .filter(|t| !t.is_empty())
        .unwrap_or(&opts.default_tenant)
        .to_string();
    if let Err(e) = validate_tenant(&tenant) {
        return plain(http_status(&e), e.to_string());
    }
    let forwarded = match headers.get(REPLICA_HEADER).map(|v| v.to_str().map(|s| s.trim().parse::<u64>())) {
        None => false,
        Some(Ok(Ok(n))) if n >= 1 && n <= opts.replication_factor => true,
        Some(_) => {
            return plain(
                StatusCode::BAD_REQUEST,
                format!(
                    "remote write: header {REPLICA_HEADER} must be a replica number from 1 to the replication factor {}",
                    opts.replication_factor
                ),
            );
        }
    };
    let raw = match remote_write::decompress(&bytes, max) {
        Ok(r) => r,
        Err(e) => return plain(http_status(&e), e.to_string()),
    };
    drop(bytes);
    match st.write_message(&tenant, &raw, forwarded).await {
        Ok((status, msg)) => plain(status, msg),
        Err(e) => plain(http_status(&e), e.to_string()),
    }
}

/// The receive HTTP API: `POST /api/v1/receive` (Thanos's path) and `POST /api/v1/write`
/// (Prometheus's path), both remote write 1.0.
pub fn router(state: ReceiveState) -> Router {
    Router::new()
        .route("/api/v1/receive", post(handle_write))
        .route("/api/v1/write", post(handle_write))
        .with_state(state)
}

/// [`SeriesSource`] over every tenant's head; each series carries its tenant's external labels
/// (the `--label`s and `tenant_id`). Matchers on those labels select tenants.
#[derive(Debug, Clone)]
struct ReceiveSource {
    state: ReceiveState,
}

impl ReceiveSource {
    /// The heads whose external labels pass the matchers on external label names, with the
    /// matchers left for the head.
    async fn tenants(&self, matchers: &[Matcher]) -> Vec<(Labels, Arc<dyn TenantHead>, Vec<Matcher>)> {
        let mut out = Vec::new();
        for (tenant, h) in self.state.heads().await {
            let ext = self.state.tenant_labels(&tenant);
            let mut rest = Vec::new();
            let mut ok = true;
            for m in matchers {
                match ext.get(&m.name) {
                    Some(v) => ok &= m.matches(v),
                    None => rest.push(m.clone()),
                }
            }
            if ok {
                out.push((ext, h, rest));
            }
        }
        out
    }
}

fn with_labels(mut l: Labels, ext: &Labels) -> Labels {
    for e in ext.iter() {
        if l.get(&e.name).is_none() {
            l.set(&e.name, &e.value);
        }
    }
    l
}

#[async_trait]
impl SeriesSource for ReceiveSource {
    async fn select(&self, req: &SelectRequest) -> engine::Result<SeriesStream> {
        let mut streams: Vec<SeriesStream> = Vec::new();
        for (ext, head, rest) in self.tenants(&req.matchers).await {
            let sub = SelectRequest { matchers: rest, ..req.clone() };
            let batches: Vec<SeriesBatch> = head.select(&sub).await?.try_collect().await?;
            // adding labels may change the order: re-sort this tenant's series
            let mut all: Vec<(Labels, Vec<i64>, Vec<f64>)> = Vec::new();
            for b in &batches {
                for i in 0..b.num_series() {
                    let (l, t, v) = b.series(i);
                    all.push((with_labels(l.clone(), &ext), t.to_vec(), v.to_vec()));
                }
            }
            all.sort_by(|a, b| a.0.cmp(&b.0));
            if !all.is_empty() {
                let batch = SeriesBatch::from_series(all)?;
                streams.push(Box::pin(futures::stream::iter([Ok(batch)])));
            }
        }
        if streams.is_empty() {
            return Ok(Box::pin(futures::stream::empty()));
        }
        Ok(engine::merge_series_streams(streams))
    }

    /// Each tenant head's ranges, labelled with the tenant's external labels.
    async fn data_ranges(&self) -> Vec<engine::DataRange> {
        let mut out = Vec::new();
        for (tenant, head) in self.state.heads().await {
            let ext = self.state.tenant_labels(&tenant);
            out.extend(
                head.data_ranges()
                    .await
                    .into_iter()
                    .map(|r| engine::DataRange { labels: with_labels(r.labels, &ext), ..r }),
            );
        }
        out
    }

    async fn series(&self, matchers: &[Matcher], min_t: i64, max_t: i64) -> engine::Result<Vec<Labels>> {
        let mut out = Vec::new();
        for (ext, head, rest) in self.tenants(matchers).await {
            out.extend(head.series(&rest, min_t, max_t).await?.into_iter().map(|l| with_labels(l, &ext)));
        }
        out.sort();
        out.dedup();
        Ok(out)
    }
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used, clippy::expect_used)]
    use axum::http::Request;
    use engine::labels::MatchOp;
    use proto::prometheus::{Label, Sample, TimeSeries, WriteRequest};
    use tower::ServiceExt;

    use super::*;

    const H: i64 = 3600 * 1000;

    struct Fixture {
        _dir: tempfile::TempDir,
        bucket_dir: PathBuf,
        state: ReceiveState,
    }

    async fn fixture(f: impl FnOnce(&mut ReceiveOptions)) -> Fixture {
        let dir = tempfile::tempdir().unwrap();
        let bucket_dir = dir.path().join("bucket");
        let bucket = Bucket::local(&bucket_dir).unwrap();
        let mut opts = ReceiveOptions {
            tsdb_path: dir.path().join("tsdb"),
            external_labels: Labels::from_pairs([("cluster", "eu1")]),
            ..Default::default()
        };
        f(&mut opts);
        let factory = Arc::new(EngineHeads { bucket, block_duration_ms: 2 * H, out_of_order_window_ms: 0 });
        let state = ReceiveState::new(opts, factory).unwrap();
        Fixture { _dir: dir, bucket_dir, state }
    }

    fn ts(pairs: &[(&str, &str)], samples: &[(i64, f64)]) -> TimeSeries {
        TimeSeries {
            labels: pairs.iter().map(|(n, v)| Label { name: n.to_string(), value: v.to_string() }).collect(),
            samples: samples.iter().map(|&(timestamp, value)| Sample { value, timestamp }).collect(),
            ..Default::default()
        }
    }

    fn body(series: Vec<TimeSeries>) -> Vec<u8> {
        remote_write::encode_write_request(&WriteRequest { timeseries: series, metadata: vec![] }).unwrap()
    }

    async fn post(st: &ReceiveState, path: &str, tenant: Option<&str>, body: Vec<u8>) -> (u16, String) {
        let mut b =
            Request::post(path).header("Content-Encoding", "snappy").header("Content-Type", "application/x-protobuf");
        if let Some(t) = tenant {
            b = b.header("THANOS-TENANT", t);
        }
        let resp = router(st.clone()).oneshot(b.body(Body::from(body)).unwrap()).await.unwrap();
        let status = resp.status().as_u16();
        let text = axum::body::to_bytes(resp.into_body(), 1 << 20).await.unwrap();
        (status, String::from_utf8(text.to_vec()).unwrap())
    }

    /// Every series of the merged source as `labels -> [(t, v)]`.
    async fn dump(src: &dyn SeriesSource, matchers: Vec<Matcher>) -> BTreeMap<String, Vec<(i64, f64)>> {
        let req = SelectRequest { matchers, min_t: i64::MIN, max_t: i64::MAX, ..Default::default() };
        let batches: Vec<SeriesBatch> = src.select(&req).await.unwrap().try_collect().await.unwrap();
        let mut out = BTreeMap::new();
        for b in &batches {
            for i in 0..b.num_series() {
                let (l, t, v) = b.series(i);
                out.insert(l.to_string(), t.iter().copied().zip(v.iter().copied()).collect());
            }
        }
        out
    }

    #[tokio::test]
    async fn writes_per_tenant_and_serves_them_labelled() {
        let fx = fixture(|_| {}).await;
        let up = ts(&[("__name__", "up"), ("job", "prometheus")], &[(1000, 1.0), (2000, 1.0)]);
        assert_eq!(post(&fx.state, "/api/v1/receive", None, body(vec![up.clone()])).await, (200, String::new()));
        assert_eq!(post(&fx.state, "/api/v1/write", Some("team-b"), body(vec![up])).await.0, 200);
        let src = fx.state.source();
        let all = dump(src.as_ref(), vec![]).await;
        let want_a = r#"up{cluster="eu1", job="prometheus", tenant_id="default-tenant"}"#;
        let want_b = r#"up{cluster="eu1", job="prometheus", tenant_id="team-b"}"#;
        assert_eq!(all.keys().collect::<Vec<_>>(), vec![want_a, want_b]);
        assert_eq!(all[want_a], vec![(1000, 1.0), (2000, 1.0)]);
        // matchers on the tenant label select tenants
        let only_b = dump(src.as_ref(), vec![Matcher::equal("tenant_id", "team-b")]).await;
        assert_eq!(only_b.keys().collect::<Vec<_>>(), vec![want_b]);
        let re = Matcher::new(MatchOp::RegexMatch, "tenant_id", "default.*").unwrap();
        assert_eq!(dump(src.as_ref(), vec![re, Matcher::equal("job", "prometheus")]).await.len(), 1);
        assert_eq!(
            src.label_values("tenant_id", &[], i64::MIN, i64::MAX).await.unwrap(),
            vec!["default-tenant", "team-b"]
        );
        assert!(fx.state.options().tsdb_path.join("team-b").join("wal").is_dir());

        // a forced cut uploads one block per tenant, labelled with the tenant
        assert_eq!(fx.state.cut_all(true).await.unwrap(), 2);
        let bucket = Bucket::local(&fx.bucket_dir).unwrap();
        let mut tenants = Vec::new();
        for ulid in bucket.list_blocks().await.unwrap() {
            let mut meta = bucket.read_meta(&ulid).await.unwrap();
            assert!(fx.state.is_own_block(&meta), "{meta:?}");
            let text = serde_json::to_value(&meta).unwrap();
            let labels = &text["thanos"]["labels"];
            assert_eq!(labels["cluster"], "eu1");
            tenants.push(labels["tenant_id"].as_str().unwrap().to_string());
            // another receiver's block (other external labels) or another component's is not ours
            meta.thanos.labels.insert("replica".into(), "b".into());
            assert!(!fx.state.is_own_block(&meta));
            meta.thanos.labels.remove("replica");
            meta.thanos.source = "compactor".into();
            assert!(!fx.state.is_own_block(&meta));
        }
        tenants.sort();
        assert_eq!(tenants, vec!["default-tenant", "team-b"]);
    }

    #[tokio::test]
    async fn heads_reopen_from_disk() {
        let Fixture { _dir: dir, bucket_dir, state } = fixture(|_| {}).await;
        let s = ts(&[("__name__", "m")], &[(5, 2.5)]);
        assert_eq!(post(&state, "/api/v1/receive", Some("t1"), body(vec![s])).await.0, 200);
        let opts = state.options().clone();
        drop(state);
        let factory = Arc::new(EngineHeads {
            bucket: Bucket::local(&bucket_dir).unwrap(),
            block_duration_ms: 2 * H,
            out_of_order_window_ms: 0,
        });
        let again = ReceiveState::new(opts, factory).unwrap();
        assert_eq!(again.open_existing().await.unwrap(), vec!["t1"]);
        let all = dump(again.source().as_ref(), vec![]).await;
        assert_eq!(all[r#"m{cluster="eu1", tenant_id="t1"}"#], vec![(5, 2.5)]);
        drop(dir);
    }

    #[tokio::test]
    async fn conflicts_keep_valid_samples() {
        let fx = fixture(|_| {}).await;
        let a = ts(&[("__name__", "a")], &[(10_000, 1.0)]);
        assert_eq!(post(&fx.state, "/api/v1/receive", None, body(vec![a])).await.0, 200);
        // out of order for `a`, new series `b` fine
        let (status, msg) = post(
            &fx.state,
            "/api/v1/receive",
            None,
            body(vec![ts(&[("__name__", "a")], &[(5_000, 2.0)]), ts(&[("__name__", "b")], &[(5_000, 3.0)])]),
        )
        .await;
        assert_eq!(status, 409, "{msg}");
        assert!(msg.contains("1 out of order") && msg.contains('a'), "{msg}");
        // duplicate: same timestamp, other value
        let (status, msg) =
            post(&fx.state, "/api/v1/receive", None, body(vec![ts(&[("__name__", "a")], &[(10_000, 9.0)])])).await;
        assert_eq!(status, 409, "{msg}");
        assert!(msg.contains("1 duplicate"), "{msg}");
        // too old: more than half a block behind the newest sample
        let (status, _) =
            post(&fx.state, "/api/v1/receive", None, body(vec![ts(&[("__name__", "c")], &[(10 * H, 1.0)])])).await;
        assert_eq!(status, 200);
        let (status, msg) =
            post(&fx.state, "/api/v1/receive", None, body(vec![ts(&[("__name__", "d")], &[(1_000, 1.0)])])).await;
        assert_eq!(status, 400, "{msg}");
        assert!(msg.contains("1 too old"), "{msg}");

        let all = dump(fx.state.source().as_ref(), vec![]).await;
        assert_eq!(all[r#"a{cluster="eu1", tenant_id="default-tenant"}"#], vec![(10_000, 1.0)]);
        assert_eq!(all[r#"b{cluster="eu1", tenant_id="default-tenant"}"#], vec![(5_000, 3.0)]);
        assert!(!all.keys().any(|k| k.starts_with("d{")));

        let mut reg = Registry::with_prefix("strata");
        fx.state.register_metrics(&mut reg);
        let mut text = String::new();
        prometheus_client::encoding::text::encode(&mut text, &reg).unwrap();
        for want in [
            r#"strata_receive_requests_total{code="200"} 2"#,
            r#"strata_receive_requests_total{code="409"} 2"#,
            r#"strata_receive_requests_total{code="400"} 1"#,
            "strata_receive_samples_accepted_total 3",
            r#"strata_receive_samples_rejected_total{reason="out_of_order"} 1"#,
            r#"strata_receive_samples_rejected_total{reason="duplicate"} 1"#,
            r#"strata_receive_samples_rejected_total{reason="too_old"} 1"#,
            "strata_receive_tenants 1",
        ] {
            assert!(text.contains(want), "{want} missing in\n{text}");
        }
    }

    #[tokio::test]
    async fn bad_requests() {
        let fx = fixture(|o| o.max_body_bytes = 4096).await;
        // invalid series rejected with 400 naming it, valid one kept
        let (status, msg) = post(
            &fx.state,
            "/api/v1/receive",
            None,
            body(vec![
                ts(&[("__name__", "ok")], &[(1, 1.0)]),
                ts(&[("__name__", "bad"), ("z", "1"), ("a", "2")], &[(1, 1.0)]),
            ]),
        )
        .await;
        assert_eq!(status, 400);
        assert!(msg.contains(r#"bad{z="1", a="2"}"#) && msg.contains("not sorted"), "{msg}");
        assert_eq!(dump(fx.state.source().as_ref(), vec![]).await.len(), 1);

        let (status, msg) = post(&fx.state, "/api/v1/receive", None, b"not snappy at all".to_vec()).await;
        assert_eq!(status, 400);
        assert!(msg.contains("snappy"), "{msg}");
        let junk = snap::raw::Encoder::new().compress_vec(&[0x0a, 0x40, 0x01]).unwrap();
        let (status, msg) = post(&fx.state, "/api/v1/receive", None, junk).await;
        assert_eq!(status, 400);
        assert!(msg.contains("protobuf"), "{msg}");

        // too large: by the real body and by the decompressed size
        let (status, msg) = post(&fx.state, "/api/v1/receive", None, vec![0u8; 5000]).await;
        assert_eq!(status, 413, "{msg}");
        let big = body(vec![ts(&[("__name__", &"x".repeat(10_000))], &[(1, 1.0)])]);
        assert!(big.len() < 4096);
        let (status, msg) = post(&fx.state, "/api/v1/receive", None, big).await;
        assert_eq!(status, 413, "{msg}");
        assert!(msg.contains("decompressed message"), "{msg}");

        let (status, msg) = post(&fx.state, "/api/v1/receive", Some("../etc"), body(vec![])).await;
        assert_eq!(status, 400);
        assert!(msg.contains("../etc"), "{msg}");
        // empty request: fine
        assert_eq!(post(&fx.state, "/api/v1/receive", None, body(vec![])).await.0, 200);

        // a replica header beyond the replication factor (1): a misconfigured ring, as Thanos
        for replica in ["2", "0", "x"] {
            let req = Request::post("/api/v1/receive")
                .header("Content-Encoding", "snappy")
                .header(REPLICA_HEADER, replica)
                .body(Body::from(body(vec![ts(&[("__name__", "r")], &[(1, 1.0)])])))
                .unwrap();
            let resp = router(fx.state.clone()).oneshot(req).await.unwrap();
            assert_eq!(resp.status().as_u16(), 400, "{replica}");
        }
        let req = Request::post("/api/v1/receive")
            .header("Content-Encoding", "snappy")
            .header(REPLICA_HEADER, "1")
            .body(Body::from(body(vec![ts(&[("__name__", "r")], &[(1, 1.0)])])))
            .unwrap();
        assert_eq!(router(fx.state.clone()).oneshot(req).await.unwrap().status().as_u16(), 200);

        let req = Request::post("/api/v1/write")
            .header("Content-Type", "application/x-protobuf;proto=io.prometheus.write.v2.Request")
            .body(Body::from(body(vec![])))
            .unwrap();
        assert_eq!(router(fx.state.clone()).oneshot(req).await.unwrap().status().as_u16(), 415);
    }

    /// Serves a receiver's `thanos.WriteableStore` (gRPC) on a free loopback port; returns its address.
    async fn serve(st: ReceiveState) -> String {
        let l = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = l.local_addr().unwrap().to_string();
        let incoming = tonic::transport::server::TcpIncoming::from(l);
        let svc = crate::receive_grpc::writeable_store(st);
        tokio::spawn(async move {
            tonic::transport::Server::builder().add_service(svc).serve_with_incoming(incoming).await
        });
        addr
    }

    fn free_addr() -> String {
        let l = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        l.local_addr().unwrap().to_string()
    }

    #[tokio::test]
    async fn replicates_to_peers_and_checks_quorum() {
        // peer receiver B (no hashring: it writes what it gets; replica numbers up to its
        // replication factor, which must cover the senders' as in a real ring)
        let b = fixture(|o| o.replication_factor = 3).await;
        let b_addr = serve(b.state.clone()).await;
        let a_addr = free_addr();
        let down = free_addr(); // nothing listens there

        // rf=2 over {A, B}: every series on both
        let ring = Hashrings::single(vec![a_addr.clone(), b_addr.clone()]);
        let a = fixture(|o| {
            o.hashrings = Some(ring.clone());
            o.local_endpoint = Some(a_addr.clone());
            o.replication_factor = 2;
        })
        .await;
        let series: Vec<TimeSeries> =
            (0..20).map(|i| ts(&[("__name__", "m"), ("i", &i.to_string())], &[(1000, i as f64)])).collect();
        let (status, msg) = post(&a.state, "/api/v1/receive", Some("t"), body(series.clone())).await;
        assert_eq!(status, 200, "{msg}");
        let on_a = dump(a.state.source().as_ref(), vec![]).await;
        let on_b = dump(b.state.source().as_ref(), vec![]).await;
        assert_eq!(on_a.len(), 20);
        assert_eq!(on_a, on_b);

        // rf=1 over {A, B}: each series on exactly the endpoint hashmod picks
        let b2 = fixture(|_| {}).await;
        let b2_addr = serve(b2.state.clone()).await;
        let ring = Hashrings::single(vec![a_addr.clone(), b2_addr.clone()]);
        let a2 = fixture(|o| {
            o.hashrings = Some(ring.clone());
            o.local_endpoint = Some(a_addr.clone());
        })
        .await;
        assert_eq!(post(&a2.state, "/api/v1/receive", Some("t"), body(series.clone())).await.0, 200);
        let on_a = dump(a2.state.source().as_ref(), vec![]).await;
        let on_b = dump(b2.state.source().as_ref(), vec![]).await;
        assert_eq!(on_a.len() + on_b.len(), 20);
        assert!(!on_a.is_empty() && !on_b.is_empty(), "{} / {}", on_a.len(), on_b.len());
        for i in 0..20 {
            let l = Labels::from_pairs([("__name__", "m".to_string()), ("i", i.to_string())]);
            let key = format!(r#"m{{cluster="eu1", i="{i}", tenant_id="t"}}"#);
            let want_a = ring.get_n("t", &l, 0).unwrap() == a_addr;
            assert_eq!(on_a.contains_key(&key), want_a, "{key}");
            assert_eq!(on_b.contains_key(&key), !want_a, "{key}");
        }

        // rf=2 over {A, down}: quorum 1 (Thanos's rule for rf=2), A's copy suffices -> 200
        let a3 = fixture(|o| {
            o.hashrings = Some(Hashrings::single(vec![a_addr.clone(), down.clone()]));
            o.local_endpoint = Some(a_addr.clone());
            o.replication_factor = 2;
        })
        .await;
        let (status, msg) = post(&a3.state, "/api/v1/receive", None, body(series.clone())).await;
        assert_eq!(status, 200, "{msg}");
        // rf=3 over {A, down, down2}: quorum 2 cannot be reached -> 503 (Prometheus retries)
        let a3 = fixture(|o| {
            o.hashrings = Some(Hashrings::single(vec![a_addr.clone(), down.clone(), free_addr()]));
            o.local_endpoint = Some(a_addr.clone());
            o.replication_factor = 3;
        })
        .await;
        let (status, msg) = post(&a3.state, "/api/v1/receive", None, body(series.clone())).await;
        assert_eq!(status, 503, "{msg}");
        assert!(msg.contains("quorum") && msg.contains("code = Unavailable"), "{msg}");

        // rf=3 over {A, B, down}: quorum 2 reached -> 200
        let a4 = fixture(|o| {
            o.hashrings = Some(Hashrings::single(vec![a_addr.clone(), b_addr.clone(), down.clone()]));
            o.local_endpoint = Some(a_addr.clone());
            o.replication_factor = 3;
        })
        .await;
        let s2: Vec<TimeSeries> =
            (0..5).map(|i| ts(&[("__name__", "q"), ("i", &i.to_string())], &[(1000, 1.0)])).collect();
        let (status, msg) = post(&a4.state, "/api/v1/receive", None, body(s2)).await;
        assert_eq!(status, 200, "{msg}");
        assert_eq!(dump(b.state.source().as_ref(), vec![Matcher::equal("__name__", "q")]).await.len(), 5);
    }

    #[tokio::test]
    async fn configuration_is_checked() {
        let dir = tempfile::tempdir().unwrap();
        let factory = Arc::new(EngineHeads {
            bucket: Bucket::local(dir.path().join("b")).unwrap(),
            block_duration_ms: 2 * H,
            out_of_order_window_ms: 0,
        });
        let ring = Hashrings::single(vec!["a:1".into(), "b:1".into()]);
        let opts = |local: Option<&str>, rf: u64| ReceiveOptions {
            hashrings: Some(ring.clone()),
            local_endpoint: local.map(str::to_string),
            replication_factor: rf,
            ..Default::default()
        };
        assert!(ReceiveState::new(opts(None, 1), factory.clone()).unwrap_err().to_string().contains("local-endpoint"));
        assert!(ReceiveState::new(opts(Some("c:1"), 1), factory.clone()).unwrap_err().to_string().contains("\"c:1\""));
        assert!(
            ReceiveState::new(opts(Some("a:1"), 3), factory.clone())
                .unwrap_err()
                .to_string()
                .contains("replication-factor 3")
        );
        assert!(ReceiveState::new(opts(Some("a:1"), 2), factory).is_ok());
        assert!(validate_tenant("team-a.prod_1").is_ok());
        for bad in ["", ".", "..", "a/b", "a b", "ü"] {
            assert!(validate_tenant(bad).is_err(), "{bad:?}");
        }
    }
}
