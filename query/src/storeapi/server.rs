//! The StoreAPI server: any [`SeriesSource`] served as Thanos's `thanos.Store` (Series, LabelNames,
//! LabelValues) and `thanos.info.Info` (spec `storeapi.md` §2, §3), wire-compatible with a Thanos
//! querier.
//!
//! ```text
//!   SeriesRequest ─► matchers: on a configured external label → decided here (no match: empty
//!   stream), the others → the source; without_replica_labels + external labels → Relabel
//!        │
//!        ▼
//!   source.select_relabelled ─► batches (Arrow) ─► per series: shard filter, limit, request limits,
//!        samples ─XorEncoder─► chunks of ≤ 120 samples (AggrChunk.raw, XOR = 0, xxhash64)
//!   (downsampled: source.select_downsampled_chunks ─► AggrChunk.count|sum|min|max|counter)
//!        ─► SeriesResponse frames (one series, or `batch` of up to response_batch_size) ─► client
//! ```
//!
//! Series go out sorted by their final labels, whole, labels sorted. Entries the source yields with
//! equal labels (the replicas of a series once `without_replica_labels` took their replica label
//! away) go out as ONE series holding the chunks of all of them sorted by min time, possibly
//! overlapping, as Thanos's store gateway sends them: a Thanos querier splits overlapping chunks back
//! into replicas and deduplicates them. Memory stays bounded by a source batch and one series:
//! frames go through a channel of [`FRAMES_AHEAD`], produced in the response's own task until it
//! fills, then by a task of their own running ahead of the client (`crate::ahead`).
//!
//! Request hints (`hintspb.*RequestHints`) are checked (a wrong type or a bad block matcher is
//! `InvalidArgument`, as in Thanos) but their block matchers are not applied: the source has no
//! notion of blocks here, which the spec allows. No response hints are sent (they would have to
//! name the blocks queried).
//!
//! With `max_resolution_window` > 0 a bucket source reads downsampled blocks too (Thanos's choice of
//! blocks: the coarsest resolution allowed first, gaps filled from finer ones) and each series is
//! answered as Thanos's store gateway answers from a downsampled block
//! ([`SeriesSource::select_downsampled_chunks`]): chunks of raw blocks in `raw`; each downsampled
//! batch cut into chunks of at most [`engine::aggr::ROWS_PER_CHUNK`] windows, each chunk with
//! exactly the requested `aggregates` filled (`count`, `sum`, `min`, `max`, `counter`; XOR, with
//! hashes), `min_time`/`max_time` its first and last window. The counter chunk of a batch's first
//! chunk starts with the batch's first raw sample, that of its last chunk ends with the last
//! window's timestamp repeated carrying the last raw value (docs/format.md §4a). A request with
//! no aggregates (or only `RAW`) gets those of its hint function (`aggrsFromFunc`; Thanos would
//! send empty chunks).

use std::collections::BTreeMap;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Instant;

use engine::aggr::AggrChunkData;
use engine::chunkenc::{SAMPLES_PER_CHUNK, XorEncoder};
use engine::{DataRange, Labels, Matcher, Relabel, SelectHints, SelectRequest, SeriesSource};
use futures::StreamExt;
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::histogram::{Histogram, exponential_buckets};
use prometheus_client::registry::Registry;
use proto::hintspb;
use proto::prometheus::LabelMatcher as PbMatcher;
use proto::thanos::info::info_server::{Info, InfoServer};
use proto::thanos::info::{InfoRequest, InfoResponse, StoreInfo, TsdbInfo};
use proto::thanos::store_server::{Store, StoreServer};
use proto::thanos::{
    AggrChunk, Chunk, LabelNamesRequest, LabelNamesResponse, LabelValuesRequest, LabelValuesResponse, SeriesRequest,
    SeriesResponse, ShardInfo, ZLabelSet, chunk, series_response,
};
use tonic::{Code, Request, Response, Status};

use super::convert::{labels_to_proto, matchers_from_proto};
use crate::error::{Error, Result};

/// Largest gRPC message sent or accepted: 2^31 - 1 bytes, as Thanos (its Series frames and
/// replication requests can be large; tonic's default decode limit is 4 MiB).
pub const MAX_MESSAGE_BYTES: usize = i32::MAX as usize;

/// Frames produced ahead of the client by a Series request.
pub const FRAMES_AHEAD: usize = 4;

/// Request limits (`--store.limits.request-series`, `--store.limits.request-samples`, Thanos's flags);
/// 0 = unlimited. A Series request that would send more fails with `ResourceExhausted`.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct RequestLimits {
    /// Most series one Series request may return.
    pub series: u64,
    /// Most samples one Series request may return.
    pub samples: u64,
}

/// What a [`StoreApi`] serves besides its source.
#[derive(Debug, Clone, Default)]
pub struct StoreApiOptions {
    /// `InfoResponse.ComponentType`: `store`, `receive`, `sidecar`, `rule`, ...
    pub component_type: String,
    /// Labels put on every series (replacing same-named series labels) and advertised in Info.
    /// Matchers on them are decided here and not passed to the source. Sources that carry their
    /// own external labels (bucket blocks, receive tenants) need none.
    pub external_labels: Labels,
    /// Series request limits.
    pub limits: RequestLimits,
}

/// StoreAPI request metrics: `grpc_server_handled{grpc_service, grpc_method, grpc_code}`,
/// `grpc_server_handling_seconds{grpc_service, grpc_method}` (go-grpc-prometheus's names and
/// labels, as Thanos exports them) and the data sent by Series: `storeapi_series_sent`,
/// `storeapi_chunks_sent`, `storeapi_samples_sent`.
#[derive(Debug, Clone)]
pub struct StoreApiMetrics {
    handled: Family<[(&'static str, String); 3], Counter>,
    seconds: Family<[(&'static str, &'static str); 2], Histogram>,
    series: Counter,
    chunks: Counter,
    samples: Counter,
}

impl StoreApiMetrics {
    /// Creates the metrics and registers them in `registry`.
    pub fn register(registry: &mut Registry) -> Self {
        let m = StoreApiMetrics {
            handled: Family::default(),
            seconds: Family::new_with_constructor(|| Histogram::new(exponential_buckets(0.001, 4.0, 10))),
            series: Counter::default(),
            chunks: Counter::default(),
            samples: Counter::default(),
        };
        registry.register("grpc_server_handled", "gRPC calls completed, by method and status code", m.handled.clone());
        registry.register("grpc_server_handling_seconds", "Time to complete a gRPC call", m.seconds.clone());
        registry.register("storeapi_series_sent", "Series sent by StoreAPI Series calls", m.series.clone());
        registry.register("storeapi_chunks_sent", "XOR chunks sent by StoreAPI Series calls", m.chunks.clone());
        registry.register("storeapi_samples_sent", "Samples sent by StoreAPI Series calls", m.samples.clone());
        m
    }

    fn observe(&self, service: &'static str, method: &'static str, code: Code, started: Instant) {
        let code = match code {
            Code::Ok => "OK".to_string(),
            c => format!("{c:?}"),
        };
        self.handled
            .get_or_create(&[
                ("grpc_service", service.to_string()),
                ("grpc_method", method.to_string()),
                ("grpc_code", code),
            ])
            .inc();
        self.seconds
            .get_or_create(&[("grpc_service", service), ("grpc_method", method)])
            .observe(started.elapsed().as_secs_f64());
    }
}

/// What one Series call sent, for [`StoreApi::record_series_call`].
#[derive(Debug, Clone, Copy, Default)]
pub struct SentCounts {
    /// Series sent.
    pub series: u64,
    /// Chunks sent.
    pub chunks: u64,
    /// Samples in those chunks.
    pub samples: u64,
}

/// The gRPC status of a query error: the one place mapping [`Error`]s to gRPC codes.
pub fn status_of(e: &Error) -> Status {
    let code = match e {
        Error::BadData(_) => Code::InvalidArgument,
        Error::LimitExceeded(_) | Error::TooManySamples(_) => Code::ResourceExhausted,
        Error::Timeout(_) => Code::DeadlineExceeded,
        Error::Canceled(_) => Code::Cancelled,
        Error::Execution(_) | Error::Storage(_) | Error::Internal(_) => Code::Internal,
    };
    Status::new(code, e.to_string())
}

/// The StoreAPI over a [`SeriesSource`]: implements `thanos.Store` and `thanos.info.Info`.
///
/// ```
/// use std::sync::{Arc, atomic::AtomicBool};
/// use query::storeapi::server::{StoreApi, StoreApiMetrics, StoreApiOptions};
///
/// let source = Arc::new(engine::MemSource::new());
/// let metrics = StoreApiMetrics::register(&mut prometheus_client::registry::Registry::default());
/// let opts = StoreApiOptions { component_type: "store".into(), ..Default::default() };
/// let api = StoreApi::new(source, opts, Arc::new(AtomicBool::new(true)), metrics);
/// // Hand these to a tonic server (message limits already raised to 2 GiB):
/// let (_store, _info) = (api.store_server(), api.info_server());
/// ```
#[derive(Debug, Clone)]
pub struct StoreApi {
    inner: Arc<Inner>,
}

#[derive(Debug)]
struct Inner {
    source: Arc<dyn SeriesSource>,
    opts: StoreApiOptions,
    ready: Arc<AtomicBool>,
    metrics: StoreApiMetrics,
}

/// Matchers split between the configured external labels and the source.
#[derive(Debug)]
struct Plan {
    /// False when a matcher on an external label rejects it: nothing can match.
    possible: bool,
    /// The matchers left for the source.
    matchers: Vec<Matcher>,
    /// External labels on, replica labels off.
    relabel: Relabel,
}

const STORE: &str = "thanos.Store";
const INFO: &str = "thanos.info.Info";

impl StoreApi {
    /// Serves `source`; every call answers `Unavailable` until `ready` is true.
    pub fn new(
        source: Arc<dyn SeriesSource>,
        opts: StoreApiOptions,
        ready: Arc<AtomicBool>,
        metrics: StoreApiMetrics,
    ) -> Self {
        StoreApi { inner: Arc::new(Inner { source, opts, ready, metrics }) }
    }

    /// Counts a Series call answered beside this server (the sidecar's chunk pass-through) in the
    /// same `grpc_server_*` and `storeapi_*_sent` metrics as the calls this server answers.
    pub fn record_series_call(&self, code: Code, started: Instant, sent: SentCounts) {
        let m = &self.inner.metrics;
        m.series.inc_by(sent.series);
        m.chunks.inc_by(sent.chunks);
        m.samples.inc_by(sent.samples);
        m.observe(STORE, "Series", code, started);
    }

    /// The `thanos.Store` service, message limits at [`MAX_MESSAGE_BYTES`].
    pub fn store_server(&self) -> StoreServer<StoreApi> {
        StoreServer::new(self.clone())
            .max_decoding_message_size(MAX_MESSAGE_BYTES)
            .max_encoding_message_size(MAX_MESSAGE_BYTES)
    }

    /// The `thanos.info.Info` service, message limits at [`MAX_MESSAGE_BYTES`].
    pub fn info_server(&self) -> InfoServer<StoreApi> {
        InfoServer::new(self.clone())
            .max_decoding_message_size(MAX_MESSAGE_BYTES)
            .max_encoding_message_size(MAX_MESSAGE_BYTES)
    }

    fn check_ready(&self) -> Result<(), Status> {
        if self.inner.ready.load(Ordering::Acquire) {
            Ok(())
        } else {
            Err(Status::unavailable(format!("{} is not ready yet", self.inner.opts.component_type)))
        }
    }

    /// Splits the request's matchers: those on external labels are decided now.
    fn plan(&self, matchers: &[PbMatcher], without: &[String]) -> Result<Plan> {
        let ext = &self.inner.opts.external_labels;
        let mut plan = Plan {
            possible: true,
            matchers: Vec::with_capacity(matchers.len()),
            relabel: Relabel { set: ext.clone(), remove: without.to_vec() },
        };
        for m in matchers_from_proto(matchers)? {
            match ext.get(&m.name) {
                Some(v) => plan.possible &= m.matches(v),
                None => plan.matchers.push(m),
            }
        }
        Ok(plan)
    }

    /// Info's label sets with their time ranges (the source's, external labels put on, one per
    /// distinct label set) and its TSDB infos (one per range the source lists: a bucket's blocks).
    async fn ranges(&self) -> (BTreeMap<Labels, (i64, i64)>, Vec<TsdbInfo>) {
        let set = Relabel { set: self.inner.opts.external_labels.clone(), remove: Vec::new() };
        let mut out: BTreeMap<Labels, (i64, i64)> = BTreeMap::new();
        let mut infos = Vec::new();
        for DataRange { mut labels, min_t, max_t } in self.inner.source.data_ranges().await {
            set.apply(&mut labels);
            infos.push(TsdbInfo {
                labels: Some(ZLabelSet { labels: labels_to_proto(&labels) }),
                min_time: min_t,
                max_time: max_t,
            });
            let e = out.entry(labels).or_insert((i64::MAX, i64::MIN));
            *e = (e.0.min(min_t), e.1.max(max_t));
        }
        (out, infos)
    }

    async fn label_names_inner(&self, req: LabelNamesRequest) -> Result<LabelNamesResponse> {
        if let Some(h) = &req.hints {
            check_block_matchers(&unpack::<hintspb::LabelNamesRequestHints>(h)?.block_matchers)?;
        }
        let plan = self.plan(&req.matchers, &req.without_replica_labels)?;
        if !plan.possible {
            return Ok(LabelNamesResponse::default());
        }
        let mut names = self.inner.source.label_names(&plan.matchers, req.start, req.end).await?;
        if !names.is_empty() {
            names.extend(self.inner.opts.external_labels.iter().map(|l| l.name.clone()));
        }
        names.retain(|n| !plan.relabel.remove.contains(n));
        names.sort_unstable();
        names.dedup();
        truncate(&mut names, req.limit);
        Ok(LabelNamesResponse { names, ..Default::default() })
    }

    async fn label_values_inner(&self, req: LabelValuesRequest) -> Result<LabelValuesResponse> {
        if req.label.is_empty() {
            return Err(Error::BadData("label name parameter cannot be empty".into()));
        }
        if let Some(h) = &req.hints {
            check_block_matchers(&unpack::<hintspb::LabelValuesRequestHints>(h)?.block_matchers)?;
        }
        let plan = self.plan(&req.matchers, &req.without_replica_labels)?;
        if !plan.possible || plan.relabel.remove.contains(&req.label) {
            return Ok(LabelValuesResponse::default());
        }
        let source = &self.inner.source;
        let mut values = match self.inner.opts.external_labels.get(&req.label) {
            // Every series carries the external value: it is the answer if any series matches.
            Some(v) => match source.label_names(&plan.matchers, req.start, req.end).await?.is_empty() {
                true => Vec::new(),
                false => vec![v.to_string()],
            },
            None => source.label_values(&req.label, &plan.matchers, req.start, req.end).await?,
        };
        truncate(&mut values, req.limit);
        Ok(LabelValuesResponse { values, ..Default::default() })
    }

    async fn info_inner(&self) -> InfoResponse {
        let (ranges, tsdb_infos) = self.ranges().await;
        let (mut min_t, mut max_t) = (i64::MAX, i64::MIN);
        let mut label_sets = Vec::with_capacity(ranges.len());
        for (labels, (lo, hi)) in ranges {
            min_t = min_t.min(lo);
            max_t = max_t.max(hi);
            label_sets.push(ZLabelSet { labels: labels_to_proto(&labels) });
        }
        let ext = &self.inner.opts.external_labels;
        if label_sets.is_empty() && !ext.is_empty() {
            label_sets.push(ZLabelSet { labels: labels_to_proto(ext) });
        }
        InfoResponse {
            label_sets,
            component_type: self.inner.opts.component_type.clone(),
            store: Some(StoreInfo {
                min_time: min_t,
                max_time: max_t,
                supports_sharding: true,
                supports_without_replica_labels: true,
                tsdb_infos,
                supports_projections: false,
            }),
            ..Default::default()
        }
    }

    /// Checks a Series request and starts its producer.
    async fn series_inner(&self, req: SeriesRequest) -> Result<SeriesFrames> {
        if let Some(h) = &req.hints {
            check_block_matchers(&unpack::<hintspb::SeriesRequestHints>(h)?.block_matchers)?;
        }
        let plan = self.plan(&req.matchers, &req.without_replica_labels)?;
        let shard = Shard::new(req.shard_info.as_ref());
        let (tx, rx) = tokio::sync::mpsc::channel(FRAMES_AHEAD);
        let mut out = Frames {
            tx,
            batch_size: usize::try_from(req.response_batch_size).unwrap_or(usize::MAX).max(1),
            batch: Vec::new(),
            limits: self.inner.opts.limits,
            series: 0,
            chunks: 0,
            samples: 0,
        };
        let api = self.clone();
        let started = Instant::now();
        // Made here, not in the producer: a producer dropped before its first poll drops it too.
        let unfinished = Unfinished { api: api.clone(), started, finished: false };
        let producer = async move {
            // The whole guard moves in (a use of its field alone would capture a copy of the bool).
            let mut unfinished = unfinished;
            let res = match plan.possible && req.min_time <= req.max_time {
                false => Ok(()),
                true if req.skip_chunks => api.labels_only(&req, &plan, &shard, &mut out).await,
                true => api.with_chunks(&req, plan, &shard, &mut out).await,
            };
            let res = match res {
                Ok(()) => out.flush().await,
                Err(e) => Err(e),
            };
            let code = match res {
                Ok(()) => Code::Ok,
                Err(Sent::Gone) => Code::Cancelled,
                Err(Sent::Failed(e)) => {
                    let status = status_of(&e);
                    let code = status.code();
                    tracing::debug!(error = %e, "StoreAPI Series failed");
                    let _ = out.tx.send(Err(status)).await;
                    code
                }
            };
            unfinished.finished = true;
            let m = &api.inner.metrics;
            m.series.inc_by(out.series);
            m.chunks.inc_by(out.chunks);
            m.samples.inc_by(out.samples);
            m.observe(STORE, "Series", code, started);
            tracing::debug!(
                series = out.series,
                chunks = out.chunks,
                samples = out.samples,
                ms = started.elapsed().as_millis() as u64,
                ?code,
                "StoreAPI Series"
            );
        };
        // Small answers are produced in the response's own task; large ones on a task ahead of it.
        Ok(Box::pin(crate::ahead::drive(producer, rx)))
    }

    /// `skip_chunks`: the label sets only, from the source's label index.
    async fn labels_only(&self, req: &SeriesRequest, plan: &Plan, shard: &Shard, out: &mut Frames) -> Result<(), Sent> {
        let mut all =
            self.inner.source.series(&plan.matchers, req.min_time, req.max_time).await.map_err(Error::from)?;
        if !plan.relabel.is_identity() {
            for l in &mut all {
                plan.relabel.apply(l);
            }
            all.sort();
        }
        all.dedup();
        let limit = usize::try_from(req.limit).ok().filter(|&n| n > 0).unwrap_or(usize::MAX);
        for l in all.into_iter().filter(|l| shard.contains(l)).take(limit) {
            out.count_series()?;
            out.push(proto::thanos::Series { labels: labels_to_proto(&l), chunks: Vec::new() }).await?;
        }
        Ok(())
    }

    /// Series with their samples as XOR chunks, streamed batch by batch from the source.
    async fn with_chunks(&self, req: &SeriesRequest, plan: Plan, shard: &Shard, out: &mut Frames) -> Result<(), Sent> {
        let hints = req.query_hints.as_ref();
        let select = SelectRequest {
            matchers: plan.matchers,
            min_t: req.min_time,
            max_t: req.max_time,
            hints: SelectHints {
                step_ms: hints.map_or(req.step, |h| h.step_millis),
                range_ms: hints.and_then(|h| h.range.as_ref()).map_or(req.range, |r| r.millis),
                func: hints.and_then(|h| h.func.as_ref()).map(|f| f.name.clone()).filter(|f| !f.is_empty()),
                max_resolution_ms: req.max_resolution_window.max(0),
                aggregates: super::convert::aggregates_from_proto(&req.aggregates),
            },
        };
        let source = &self.inner.source;
        let mut series = Pending::new(req.limit);
        if select.hints.max_resolution_ms > 0
            && let Some(mut stream) =
                source.select_downsampled_chunks(&select, &plan.relabel).await.map_err(Error::from)?
        {
            'chunks: while let Some(group) = stream.next().await {
                for (labels, chunks) in group.map_err(Error::from)? {
                    let p = match series.entry(&labels, shard, out).await? {
                        Entry::Add(p) => p,
                        Entry::Skip => continue,
                        Entry::Stop => break 'chunks,
                    };
                    for c in &chunks {
                        out.count_samples(c.num_samples())?;
                        encode_aggr_chunk(c, p).map_err(Error::from)?;
                    }
                }
            }
            return series.finish(out).await;
        }
        let mut stream = match plan.relabel.is_identity() {
            true => source.select(&select).await,
            false => source.select_relabelled(&select, &plan.relabel).await,
        }
        .map_err(Error::from)?;
        'read: while let Some(batch) = stream.next().await {
            let batch = batch.map_err(Error::from)?;
            for i in 0..batch.num_series() {
                let (labels, ts, vs) = batch.series(i);
                let p = match series.entry(labels, shard, out).await? {
                    Entry::Add(p) => p,
                    Entry::Skip => continue,
                    Entry::Stop => break 'read,
                };
                out.count_samples(ts.len())?;
                encode_chunks(ts, vs, p).map_err(Error::from)?;
            }
        }
        series.finish(out).await
    }
}

/// The series a Series call is assembling: entries with equal labels (replicas once
/// `without_replica_labels` took their replica label away) join it; it is sent when an entry
/// with other labels begins. Counts series against the request's `limit` and the limits.
struct Pending {
    /// The series' labels and chunks so far.
    series: Option<(Labels, Vec<AggrChunk>)>,
    started: u64,
    limit: u64,
}

/// What to do with an entry of the source's answer.
enum Entry<'a> {
    /// Its chunks go here.
    Add(&'a mut Vec<AggrChunk>),
    /// Outside the shard: left out.
    Skip,
    /// The series limit is reached: the call ends.
    Stop,
}

impl Pending {
    fn new(limit: i64) -> Self {
        Pending { series: None, started: 0, limit: u64::try_from(limit).ok().filter(|&n| n > 0).unwrap_or(u64::MAX) }
    }

    /// Where the chunks of the entry `labels` go.
    async fn entry(&mut self, labels: &Labels, shard: &Shard, out: &mut Frames) -> Result<Entry<'_>, Sent> {
        let joins = self.series.as_ref().is_some_and(|p| &p.0 == labels);
        if !joins {
            if !shard.contains(labels) {
                return Ok(Entry::Skip);
            }
            if let Some((l, chunks)) = self.series.take() {
                out.push_series(&l, chunks).await?;
            }
            if self.started == self.limit {
                return Ok(Entry::Stop);
            }
            self.started += 1;
            out.count_series()?;
        }
        let p = self.series.get_or_insert_with(|| (labels.clone(), Vec::new()));
        Ok(Entry::Add(&mut p.1))
    }

    /// Sends the last series.
    async fn finish(self, out: &mut Frames) -> Result<(), Sent> {
        if let Some((l, chunks)) = self.series {
            out.push_series(&l, chunks).await?;
        }
        Ok(())
    }
}

/// Why a Series producer stopped early.
#[derive(Debug)]
enum Sent {
    /// The client went away.
    Gone,
    /// The request failed; the status goes to the client.
    Failed(Error),
}

impl From<Error> for Sent {
    fn from(e: Error) -> Self {
        Sent::Failed(e)
    }
}

use super::frames::SeriesFrames;

/// The frames of one Series call, with the counts the request limits check.
struct Frames {
    tx: tokio::sync::mpsc::Sender<Result<SeriesResponse, Status>>,
    batch_size: usize,
    batch: Vec<proto::thanos::Series>,
    limits: RequestLimits,
    series: u64,
    chunks: u64,
    samples: u64,
}

impl Frames {
    fn count_series(&mut self) -> Result<(), Sent> {
        self.series += 1;
        if self.limits.series > 0 && self.series > self.limits.series {
            return Err(Sent::Failed(Error::LimitExceeded(format!(
                "exceeded series limit: more than {} series (--store.limits.request-series)",
                self.limits.series
            ))));
        }
        Ok(())
    }

    fn count_samples(&mut self, n: usize) -> Result<(), Sent> {
        self.samples += n as u64;
        if self.limits.samples > 0 && self.samples > self.limits.samples {
            return Err(Sent::Failed(Error::LimitExceeded(format!(
                "exceeded samples limit: more than {} samples (--store.limits.request-samples)",
                self.limits.samples
            ))));
        }
        Ok(())
    }

    /// Sends one series, its chunks sorted by min time (stable: one entry's chunks keep their
    /// order).
    async fn push_series(&mut self, labels: &Labels, mut chunks: Vec<AggrChunk>) -> Result<(), Sent> {
        chunks.sort_by_key(|c| c.min_time);
        self.chunks += chunks.len() as u64;
        self.push(proto::thanos::Series { labels: labels_to_proto(labels), chunks }).await
    }

    async fn push(&mut self, s: proto::thanos::Series) -> Result<(), Sent> {
        if self.batch_size <= 1 {
            return self.send(series_response::Result::Series(s)).await;
        }
        self.batch.push(s);
        if self.batch.len() >= self.batch_size {
            return self.flush().await;
        }
        Ok(())
    }

    /// Sends the series batched so far.
    async fn flush(&mut self) -> Result<(), Sent> {
        if self.batch.is_empty() {
            return Ok(());
        }
        let series = std::mem::take(&mut self.batch);
        self.send(series_response::Result::Batch(proto::thanos::SeriesBatch { series })).await
    }

    async fn send(&mut self, r: series_response::Result) -> Result<(), Sent> {
        self.tx.send(Ok(SeriesResponse { result: Some(r) })).await.map_err(|_| Sent::Gone)
    }
}

/// Appends the samples as XOR chunks of at most [`SAMPLES_PER_CHUNK`] samples, encoded straight
/// from the slices, each with its xxhash64.
fn encode_chunks(ts: &[i64], vs: &[f64], out: &mut Vec<AggrChunk>) -> engine::Result<()> {
    for (ts, vs) in ts.chunks(SAMPLES_PER_CHUNK).zip(vs.chunks(SAMPLES_PER_CHUNK)) {
        let (Some(&first), Some(&last)) = (ts.first(), ts.last()) else { continue };
        out.push(AggrChunk {
            min_time: first,
            max_time: last,
            raw: Some(xor_chunk(ts.iter().copied().zip(vs.iter().copied()), ts.len())?),
            ..Default::default()
        });
    }
    Ok(())
}

/// A chunk of a downsampled read as Thanos's store gateway sends it: raw samples in `raw`, or
/// each aggregate present in its own field (`count`, `sum`, `min`, `max`, `counter`), XOR encoded
/// with its xxhash64.
fn encode_aggr_chunk(c: &AggrChunkData, out: &mut Vec<AggrChunk>) -> engine::Result<()> {
    if let Some(raw) = &c.raw {
        let (ts, vs): (Vec<i64>, Vec<f64>) = raw.iter().copied().unzip();
        return encode_chunks(&ts, &vs, out);
    }
    let field = |s: &Option<Vec<(i64, f64)>>| s.as_ref().map(|s| xor_chunk(s.iter().copied(), s.len())).transpose();
    out.push(AggrChunk {
        min_time: c.min_time,
        max_time: c.max_time,
        raw: None,
        count: field(&c.count)?,
        sum: field(&c.sum)?,
        min: field(&c.min)?,
        max: field(&c.max)?,
        counter: field(&c.counter)?,
    });
    Ok(())
}

/// One XOR chunk of `n` samples with its xxhash64.
fn xor_chunk(samples: impl Iterator<Item = (i64, f64)>, n: usize) -> engine::Result<Chunk> {
    // About 1.4 bytes per regular sample; the buffer grows for irregular ones.
    let mut e = XorEncoder::with_capacity(16 + n * 2);
    for (t, v) in samples {
        e.append(t, v)?;
    }
    let data = e.into_bytes().into_vec();
    let hash = xxhash_rust::xxh64::xxh64(&data, 0);
    Ok(Chunk { r#type: chunk::Encoding::Xor as i32, data, hash })
}

/// `SeriesRequest.shard_info` (spec §2.1): a series belongs to shard `index` of `total` when the
/// xxhash64 of `name 0xff value 0xff` over its labels in `labels` (`by`) or not in them (`!by`),
/// modulo `total`, is `index`.
#[derive(Debug)]
struct Shard(Option<ShardInfo>);

impl Shard {
    fn new(info: Option<&ShardInfo>) -> Self {
        Shard(info.filter(|s| s.total_shards >= 1).cloned())
    }

    fn contains(&self, l: &Labels) -> bool {
        let Some(s) = &self.0 else { return true };
        let mut h = xxhash_rust::xxh64::Xxh64::new(0);
        for x in l.iter().filter(|x| s.labels.contains(&x.name) == s.by) {
            h.update(x.name.as_bytes());
            h.update(&[0xff]);
            h.update(x.value.as_bytes());
            h.update(&[0xff]);
        }
        // total_shards >= 1 (checked in `new`), so the cast is exact
        h.digest() % (s.total_shards as u64) == s.shard_index as u64
    }
}

/// Unpacks request hints of type `M`; another type or bad bytes are `InvalidArgument`.
fn unpack<M: proto::prost::Name + Default>(any: &prost_types::Any) -> Result<M> {
    any.to_msg::<M>().map_err(|e| Error::BadData(format!("unmarshal request hints {:?}: {e}", any.type_url)))
}

/// Hints' block matchers must be valid matchers (they are not applied, see the module docs).
fn check_block_matchers(ms: &[PbMatcher]) -> Result<()> {
    matchers_from_proto(ms).map(|_| ()).map_err(|e| Error::BadData(format!("request hints block matchers: {e}")))
}

fn truncate(v: &mut Vec<String>, limit: i64) {
    if let Ok(n) = usize::try_from(limit)
        && n > 0
    {
        v.truncate(n);
    }
}

#[tonic::async_trait]
impl Store for StoreApi {
    type SeriesStream = SeriesFrames;

    async fn series(&self, request: Request<SeriesRequest>) -> Result<Response<SeriesFrames>, Status> {
        let started = Instant::now();
        let res = match self.check_ready() {
            Ok(()) => self.series_inner(request.into_inner()).await.map_err(|e| status_of(&e)),
            Err(s) => Err(s),
        };
        // Success is counted when the stream ends.
        if let Err(s) = &res {
            self.inner.metrics.observe(STORE, "Series", s.code(), started);
        }
        res.map(Response::new)
    }

    async fn label_names(&self, request: Request<LabelNamesRequest>) -> Result<Response<LabelNamesResponse>, Status> {
        let started = Instant::now();
        let res = match self.check_ready() {
            Ok(()) => self.label_names_inner(request.into_inner()).await.map_err(|e| status_of(&e)),
            Err(s) => Err(s),
        };
        self.inner.metrics.observe(STORE, "LabelNames", res.as_ref().map_or_else(Status::code, |_| Code::Ok), started);
        res.map(Response::new)
    }

    async fn label_values(
        &self,
        request: Request<LabelValuesRequest>,
    ) -> Result<Response<LabelValuesResponse>, Status> {
        let started = Instant::now();
        let res = match self.check_ready() {
            Ok(()) => self.label_values_inner(request.into_inner()).await.map_err(|e| status_of(&e)),
            Err(s) => Err(s),
        };
        self.inner.metrics.observe(STORE, "LabelValues", res.as_ref().map_or_else(Status::code, |_| Code::Ok), started);
        res.map(Response::new)
    }
}

#[tonic::async_trait]
impl Info for StoreApi {
    async fn info(&self, _request: Request<InfoRequest>) -> Result<Response<InfoResponse>, Status> {
        let started = Instant::now();
        let res = match self.check_ready() {
            Ok(()) => Ok(self.info_inner().await),
            Err(s) => Err(s),
        };
        self.inner.metrics.observe(INFO, "Info", res.as_ref().map_or_else(Status::code, |_| Code::Ok), started);
        res.map(Response::new)
    }
}

/// A Series producer dropped before it finished (the client went away while the answer was still
/// produced in the response's own task): the call counts as `Cancelled` in the gRPC metrics, as a
/// finished producer that saw the client gone does.
struct Unfinished {
    api: StoreApi,
    started: Instant,
    finished: bool,
}

impl Drop for Unfinished {
    fn drop(&mut self) {
        if !self.finished {
            self.api.inner.metrics.observe(STORE, "Series", Code::Cancelled, self.started);
        }
    }
}

#[cfg(test)]
mod tests;
