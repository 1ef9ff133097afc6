//! The StoreAPI client: one remote endpoint ([`Remote`]: `thanos.Store` and `thanos.info.Info`
//! over one HTTP/2 connection, [`super::transport`]; `Series` over [`super::frames`] instead when
//! the endpoint's Info advertises them), its `Series` stream decoded from XOR chunks into
//! [`SeriesBatch`]es, and [`RemoteSource`], the [`SeriesSource`] over one endpoint.
//!
//! ```text
//!   Series frames: series | batch{series..} | warning | hints      (a series may span frames)
//!        │  SeriesDecoder: chunks outside [min_t, max_t] dropped, the rest sorted by min_time and
//!        │  split into tracks of non-overlapping chunks (Thanos's overlap split); XOR decoded
//!        ▼  straight into the batch's sample vectors, trimmed to [min_t, max_t]
//!   SeriesBatch entries, one per track (a label set repeats when its chunks overlap)
//!        │  received in the consumer's task, or (fan-out, large answers) a task a few batches ahead
//!        ▼
//!   merge::group_merge: tracks of a label set joined (union, or replica dedup in the proxy)
//! ```
//!
//! Native histogram chunks are skipped with a warning naming the series (Strata's engine has no
//! histogram samples yet, and a mixed fleet should still answer for its float series); under
//! `partial_response=false` that warning fails the request, as every store warning does. Chunks
//! holding only downsampled aggregates are an error: Strata always asks for raw data
//! (`max_resolution_window` 0), so a store sending them is not following the request.

use std::sync::Arc;
use std::time::Duration;

use engine::chunkenc;
use engine::{Labels, Matcher, SelectRequest, SeriesBatch, SeriesSource, SeriesStream};
use proto::prometheus::Label as PbLabel;
use proto::thanos::chunk::Encoding;
use proto::thanos::info::info_client::InfoClient;
use proto::thanos::info::{InfoRequest, InfoResponse};
use proto::thanos::series_response::Result as Frame;
use proto::thanos::store_client::StoreClient;
use proto::thanos::{
    AggrChunk, Func, LabelNamesRequest, LabelValuesRequest, PartialResponseStrategy, QueryHints, Range, SeriesRequest,
    SeriesResponse,
};

use super::convert::{labels_from_proto, matchers_to_proto};
use super::frames::{FramesCall, FramesClient};
use super::merge::{BatchBuilder, Combine, group_merge};
use super::proxy::Warnings;
use super::transport::H2Channel;

/// The gRPC metadata key carrying the tenant, as Thanos sends it.
pub const TENANT_METADATA: &str = "thanos-tenant";

/// Largest gRPC message sent or received: Thanos's limit (`math.MaxInt32`).
const MAX_MESSAGE_BYTES: usize = i32::MAX as usize;

/// Series per `batch` frame asked of stores (Thanos's querier default).
const RESPONSE_BATCH_SIZE: i64 = 64;

/// A decoded batch is handed on once it holds this many samples ...
const CLIENT_BATCH_SAMPLES: usize = 1 << 16;
/// ... or this many series.
const CLIENT_BATCH_SERIES: usize = 4096;

/// Decoded batches a receiving task may hold ahead of its consumer.
const CHANNEL_BATCHES: usize = 4;

/// One StoreAPI endpoint: its address and gRPC clients over one lazily connected channel.
#[derive(Debug, Clone)]
pub struct Remote {
    name: String,
    store: StoreClient<H2Channel>,
    info: InfoClient<H2Channel>,
    /// Series over frames when the endpoint's Info advertises them (a Strata component).
    frames: Arc<FramesClient>,
}

/// A StoreAPI failure as an engine error naming the endpoint, in gRPC's wording.
fn rpc_error(endpoint: &str, what: &str, s: &tonic::Status) -> engine::Error {
    engine::Error::Remote {
        endpoint: endpoint.to_string(),
        reason: format!("{what}: rpc error: code = {:?} desc = {}", s.code(), s.message()),
    }
}

impl Remote {
    /// A client of the endpoint at `addr` (`host:port`, as Thanos's `--endpoint`). Nothing is
    /// dialled until the first call; connections are re-established as needed.
    pub fn connect_lazy(addr: &str) -> engine::Result<Self> {
        let bad = |reason: String| engine::Error::Remote { endpoint: addr.to_string(), reason };
        if addr.starts_with("dns+") || addr.starts_with("dnssrv+") {
            return Err(bad("DNS service discovery (dns+, dnssrv+) is not supported; give host:port".into()));
        }
        if addr.contains("://") || !addr.contains(':') {
            return Err(bad("expected host:port".into()));
        }
        let origin: tonic::codegen::http::Uri =
            format!("http://{addr}").parse().map_err(|e| bad(format!("invalid address: {e}")))?;
        let channel = H2Channel::new(addr);
        Ok(Remote {
            name: addr.to_string(),
            store: StoreClient::with_origin(channel.clone(), origin.clone())
                .max_decoding_message_size(MAX_MESSAGE_BYTES)
                .max_encoding_message_size(MAX_MESSAGE_BYTES),
            info: InfoClient::with_origin(channel, origin)
                .max_decoding_message_size(MAX_MESSAGE_BYTES)
                .max_encoding_message_size(MAX_MESSAGE_BYTES),
            frames: FramesClient::new(addr),
        })
    }

    /// The endpoint's address.
    pub fn name(&self) -> &str {
        &self.name
    }

    fn request<T>(&self, msg: T, tenant: Option<&str>) -> engine::Result<tonic::Request<T>> {
        let mut req = tonic::Request::new(msg);
        if let Some(t) = tenant {
            let v = tonic::metadata::MetadataValue::try_from(t).map_err(|_| engine::Error::Remote {
                endpoint: self.name.clone(),
                reason: format!("tenant {t:?} cannot be sent as gRPC metadata"),
            })?;
            req.metadata_mut().insert(TENANT_METADATA, v);
        }
        Ok(req)
    }

    /// `thanos.info.Info/Info`, failing after `timeout`. Its answer also says whether later
    /// Series calls go over frames ([`super::frames`]).
    pub async fn info(&self, timeout: Duration) -> engine::Result<InfoResponse> {
        let mut c = self.info.clone();
        match tokio::time::timeout(timeout, c.info(InfoRequest {})).await {
            Ok(Ok(r)) => {
                self.frames.advertised(r.metadata());
                Ok(r.into_inner())
            }
            Ok(Err(s)) => Err(rpc_error(&self.name, "info", &s)),
            Err(_) => Err(engine::Error::Remote {
                endpoint: self.name.clone(),
                reason: format!("info: no answer within {timeout:?}"),
            }),
        }
    }

    /// `thanos.Store/LabelNames` (`name` None) or `LabelValues` of `name`: the sorted strings and
    /// the store's warnings.
    pub(crate) async fn labels(
        &self,
        name: Option<&str>,
        q: &LabelQuery<'_>,
        tenant: Option<&str>,
    ) -> engine::Result<(Vec<String>, Vec<String>)> {
        let mut c = self.store.clone();
        // LabelValues asks what LabelNames asks, plus the label.
        let names = LabelNamesRequest {
            partial_response_strategy: strategy(q.abort),
            start: q.min_t,
            end: q.max_t,
            matchers: matchers_to_proto(q.matchers),
            without_replica_labels: q.without_replica_labels.to_vec(),
            ..Default::default()
        };
        let answer = match name {
            None => c.label_names(self.request(names, tenant)?).await.map(|r| {
                let r = r.into_inner();
                (r.names, r.warnings)
            }),
            Some(label) => {
                let LabelNamesRequest {
                    partial_response_strategy, start, end, matchers, without_replica_labels, ..
                } = names;
                let req = LabelValuesRequest {
                    label: label.to_string(),
                    partial_response_strategy,
                    start,
                    end,
                    matchers,
                    without_replica_labels,
                    ..Default::default()
                };
                c.label_values(self.request(req, tenant)?).await.map(|r| {
                    let r = r.into_inner();
                    (r.values, r.warnings)
                })
            }
        };
        let what = if name.is_some() { "fetch label values" } else { "fetch label names" };
        answer.map_err(|s| rpc_error(&self.name, what, &s))
    }

    /// Opens `thanos.Store/Series` (over frames where the endpoint serves them, gRPC otherwise)
    /// and returns its frames one by one, each within `frame_timeout`.
    async fn open_series(&self, req: SeriesRequest, opts: &CallOptions) -> engine::Result<FrameReader> {
        let open = async {
            if let Some(call) = self.frames.call(&req, opts.tenant.as_deref()).await? {
                return Ok(Answer::Frames(call));
            }
            let mut c = self.store.clone();
            let req = self
                .request(req, opts.tenant.as_deref())
                .map_err(|e| tonic::Status::invalid_argument(e.to_string()))?;
            c.series(req).await.map(|r| Answer::Grpc(r.into_inner()))
        };
        let answer = match opts.frame_timeout {
            Some(d) => tokio::time::timeout(d, open).await.map_err(|_| self.frame_timeout(d))?,
            None => open.await,
        }
        .map_err(|s| rpc_error(&self.name, "fetch series", &s))?;
        Ok(FrameReader { answer, timeout: opts.frame_timeout })
    }

    fn frame_timeout(&self, d: Duration) -> engine::Error {
        engine::Error::Remote { endpoint: self.name.clone(), reason: format!("failed to receive any data in {d:?}") }
    }

    /// The label sets of a `skip_chunks` Series call, sorted and unique.
    pub(crate) async fn series_labels(
        &self,
        mut req: SeriesRequest,
        opts: &CallOptions,
    ) -> engine::Result<Vec<Labels>> {
        req.skip_chunks = true;
        let mut frames = self.open_series(req, opts).await?;
        let mut out: Vec<Labels> = Vec::new();
        while let Some(frame) = frames.next(self).await? {
            let series = match frame {
                Frame::Series(s) => vec![s],
                Frame::Batch(b) => b.series,
                Frame::Warning(w) => {
                    opts.partial.note(&self.name, w)?;
                    continue;
                }
                Frame::Hints(_) => continue,
            };
            for s in series {
                if out.last().is_none_or(|l| !same_labels(l, &s.labels)) {
                    out.push(labels_from_proto(s.labels));
                }
            }
        }
        out.sort_unstable();
        out.dedup();
        Ok(out)
    }

    /// `thanos.Store/Series`, decoded into replica tracks (see the module docs), received as
    /// `receive` says, a few batches ahead of the consumer at most. A failure follows
    /// `opts.partial`: under WARN it ends the stream with a warning, under ABORT it is the
    /// stream's last item.
    pub(crate) fn series(&self, req: SeriesRequest, opts: CallOptions, receive: Receive) -> SeriesStream {
        let (tx, rx) = tokio::sync::mpsc::channel::<engine::Result<SeriesBatch>>(CHANNEL_BATCHES);
        let this = self.clone();
        let producer = async move {
            match this.stream_series(req, &opts, &tx).await {
                Ok(()) | Err(Stop::Closed) => {}
                Err(Stop::Failed(e)) => {
                    if let Err(e) = opts.partial.fail(e) {
                        let _ = tx.send(Err(e)).await;
                    }
                }
            }
        };
        match receive {
            Receive::Task => {
                tokio::spawn(producer);
                Box::pin(futures::stream::unfold(rx, |mut rx| async move { rx.recv().await.map(|b| (b, rx)) }))
            }
            Receive::Inline => Box::pin(crate::ahead::drive(producer, rx)),
        }
    }

    async fn stream_series(
        &self,
        req: SeriesRequest,
        opts: &CallOptions,
        tx: &tokio::sync::mpsc::Sender<engine::Result<SeriesBatch>>,
    ) -> Result<(), Stop> {
        let mut dec = SeriesDecoder::new(&self.name, req.min_time, req.max_time)
            .with_aggregates(super::convert::aggregates_from_proto(&req.aggregates));
        let mut frames = tokio::select! {
            f = self.open_series(req, opts) => f?,
            () = tx.closed() => return Err(Stop::Closed),
        };
        let mut notes = Vec::new();
        loop {
            // A consumer that went away (the query ended) cancels the call at once.
            let frame = tokio::select! {
                f = frames.next(self) => f?,
                () = tx.closed() => return Err(Stop::Closed),
            };
            let Some(frame) = frame else { break };
            dec.push(frame, &mut notes)?;
            for n in notes.drain(..) {
                opts.partial.note(&self.name, n)?;
            }
            if let Some(b) = dec.take_if_full()? {
                tx.send(Ok(b)).await.map_err(|_| Stop::Closed)?;
            }
        }
        let last = dec.finish(&mut notes)?;
        for n in notes.drain(..) {
            opts.partial.note(&self.name, n)?;
        }
        if let Some(b) = last {
            tx.send(Ok(b)).await.map_err(|_| Stop::Closed)?;
        }
        Ok(())
    }
}

/// Where a Series call is received and decoded.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Receive {
    /// On a task of its own from the start, so that calls fanned out to several endpoints are
    /// all under way at once.
    Task,
    /// In the consumer's task while the answer is small, on a task of its own once it proves
    /// large (`crate::ahead`): a call to a single endpoint.
    Inline,
}

/// Why a receiving task stopped early.
enum Stop {
    /// The consumer went away (the query ended): nothing to report.
    Closed,
    /// The endpoint failed.
    Failed(engine::Error),
}

impl From<engine::Error> for Stop {
    fn from(e: engine::Error) -> Self {
        Stop::Failed(e)
    }
}

/// The frames of one Series call, each awaited at most `timeout` (Thanos's
/// `--store.response-timeout`).
struct FrameReader {
    answer: Answer,
    timeout: Option<Duration>,
}

/// A Series answer on its way in.
enum Answer {
    Grpc(tonic::Streaming<SeriesResponse>),
    Frames(FramesCall),
}

impl Answer {
    async fn message(&mut self) -> Result<Option<SeriesResponse>, tonic::Status> {
        match self {
            Answer::Grpc(s) => s.message().await,
            Answer::Frames(f) => f.message().await,
        }
    }
}

impl FrameReader {
    async fn next(&mut self, remote: &Remote) -> engine::Result<Option<Frame>> {
        loop {
            let msg = match self.timeout {
                Some(d) => tokio::time::timeout(d, self.answer.message()).await.map_err(|_| remote.frame_timeout(d))?,
                None => self.answer.message().await,
            };
            match msg.map_err(|s| rpc_error(&remote.name, "receive series", &s))? {
                None => return Ok(None),
                Some(SeriesResponse { result: Some(f) }) => return Ok(Some(f)),
                Some(SeriesResponse { result: None }) => continue,
            }
        }
    }
}

/// What one request does with a failing endpoint: under WARN (`abort == false`) failures and
/// store warnings become warnings of the answer; under ABORT they fail the request.
#[derive(Debug, Clone)]
pub(crate) struct Partial {
    /// Fail on any endpoint problem (`partial_response=false`).
    pub(crate) abort: bool,
    /// Where warnings go.
    pub(crate) warnings: Warnings,
}

impl Partial {
    /// A warning from an endpoint (a warning frame, a skipped histogram chunk).
    pub(crate) fn note(&self, endpoint: &str, warning: String) -> engine::Result<()> {
        if self.abort {
            return Err(engine::Error::Remote { endpoint: endpoint.to_string(), reason: warning });
        }
        self.warnings.add(format!("{endpoint}: {warning}"));
        Ok(())
    }

    /// An endpoint failure: recorded as a warning under WARN, returned under ABORT.
    pub(crate) fn fail(&self, e: engine::Error) -> engine::Result<()> {
        if self.abort {
            return Err(e);
        }
        tracing::warn!(error = %e, "StoreAPI endpoint failed; answering without it (partial response)");
        self.warnings.add(e.to_string());
        Ok(())
    }
}

/// What a LabelNames or LabelValues call asks.
#[derive(Debug, Clone)]
pub(crate) struct LabelQuery<'a> {
    pub(crate) matchers: &'a [Matcher],
    pub(crate) min_t: i64,
    pub(crate) max_t: i64,
    pub(crate) abort: bool,
    pub(crate) without_replica_labels: &'a [String],
}

/// Per-call settings.
#[derive(Debug, Clone)]
pub(crate) struct CallOptions {
    /// Sent as `thanos-tenant` metadata when set.
    pub(crate) tenant: Option<String>,
    /// Longest wait for any frame (`--store.response-timeout`; None: no limit).
    pub(crate) frame_timeout: Option<Duration>,
    /// What to do with problems.
    pub(crate) partial: Partial,
}

/// The `thanos.Store/Series` request of a select: the coarsest resolution the query accepts
/// (`max_resolution_window`) with the aggregates its function reads, the partial response
/// strategy, PromQL hints, and `without_replica_labels` when given.
pub(crate) fn series_request(req: &SelectRequest, without_replica_labels: Vec<String>, abort: bool) -> SeriesRequest {
    let func = req.hints.func.as_deref().filter(|f| *f != "Matrix").map(engine::aggr::prom_func_name);
    SeriesRequest {
        min_time: req.min_t,
        max_time: req.max_t,
        matchers: matchers_to_proto(&req.matchers),
        max_resolution_window: req.hints.max_resolution_ms.max(0),
        aggregates: if req.hints.max_resolution_ms > 0 {
            super::convert::aggregates_to_proto(&req.hints.aggregates)
        } else {
            Vec::new()
        },
        partial_response_strategy: strategy(abort),
        query_hints: Some(QueryHints {
            step_millis: req.hints.step_ms,
            func: func.map(|name| Func { name }),
            range: (req.hints.range_ms > 0).then_some(Range { millis: req.hints.range_ms }),
            ..Default::default()
        }),
        without_replica_labels,
        response_batch_size: RESPONSE_BATCH_SIZE,
        ..Default::default()
    }
}

/// The wire value of a partial response strategy.
pub(crate) fn strategy(abort: bool) -> i32 {
    if abort { PartialResponseStrategy::Abort as i32 } else { PartialResponseStrategy::Warn as i32 }
}

/// True when the wire labels (sorted, empty values ignored) are the label set `l`.
fn same_labels(l: &Labels, wire: &[PbLabel]) -> bool {
    let mut it = wire.iter().filter(|w| !w.value.is_empty());
    for a in l.iter() {
        match it.next() {
            Some(w) if w.name == a.name && w.value == a.value => {}
            _ => return false,
        }
    }
    it.next().is_none()
}

/// Turns Series frames into batches of replica tracks (module docs).
#[derive(Debug)]
pub(crate) struct SeriesDecoder {
    endpoint: String,
    min_t: i64,
    max_t: i64,
    /// The series being received (its chunks may still continue in the next frame).
    labels: Option<Labels>,
    chunks: Vec<AggrChunk>,
    out: BatchBuilder,
    /// Scratch: the end time of each track, and each chunk's track.
    track_end: Vec<i64>,
    track_of: Vec<usize>,
    /// The aggregates the request asked for (read from downsampled chunks).
    aggregates: Vec<engine::aggr::Aggregate>,
}

impl SeriesDecoder {
    /// A decoder of a Series stream for `[min_t, max_t]` from `endpoint`.
    pub(crate) fn new(endpoint: &str, min_t: i64, max_t: i64) -> Self {
        SeriesDecoder {
            endpoint: endpoint.to_string(),
            min_t,
            max_t,
            labels: None,
            chunks: Vec::new(),
            out: BatchBuilder::default(),
            track_end: Vec::new(),
            track_of: Vec::new(),
            aggregates: Vec::new(),
        }
    }

    /// Reads chunks holding downsampled aggregates (no `raw`) as the samples `aggregates` give
    /// ([`engine::aggr::chunks_to_samples`]); without aggregates such chunks are an error.
    pub(crate) fn with_aggregates(mut self, aggregates: Vec<engine::aggr::Aggregate>) -> Self {
        self.aggregates = aggregates;
        self
    }

    /// A series with downsampled chunks: every chunk (raw or aggregates) decoded, then turned
    /// into the samples the requested aggregates give, as one track.
    fn close_downsampled(&mut self, labels: Labels, mut chunks: Vec<AggrChunk>) -> engine::Result<()> {
        chunks.sort_by_key(|c| c.min_time);
        let mut data = Vec::with_capacity(chunks.len());
        for c in &chunks {
            let dec = |ch: &Option<proto::thanos::Chunk>| -> engine::Result<Option<Vec<(i64, f64)>>> {
                match ch {
                    Some(x) if x.r#type == Encoding::Xor as i32 => chunkenc::decode(&x.data)
                        .map(Some)
                        .map_err(|e| self.err(format!("series {labels}: chunk [{}, {}]: {e}", c.min_time, c.max_time))),
                    _ => Ok(None),
                }
            };
            data.push(engine::aggr::AggrChunkData {
                min_time: c.min_time,
                max_time: c.max_time,
                raw: dec(&c.raw)?,
                count: dec(&c.count)?,
                sum: dec(&c.sum)?,
                min: dec(&c.min)?,
                max: dec(&c.max)?,
                counter: dec(&c.counter)?,
            });
        }
        let (mut ts, mut vs) = (Vec::new(), Vec::new());
        engine::aggr::chunks_to_samples(&data, &self.aggregates, &mut ts, &mut vs)
            .map_err(|e| self.err(format!("series {labels}: {e}")))?;
        let start = self.out.ts.len();
        let (lo, hi) = (ts.partition_point(|&t| t < self.min_t), ts.partition_point(|&t| t <= self.max_t));
        self.out.ts.extend_from_slice(&ts[lo..hi]);
        self.out.vs.extend_from_slice(&vs[lo..hi]);
        self.out.close_series(labels, start);
        Ok(())
    }

    fn err(&self, reason: String) -> engine::Error {
        engine::Error::Remote { endpoint: self.endpoint.clone(), reason }
    }

    /// Takes one frame; warnings for the answer go to `notes`.
    pub(crate) fn push(&mut self, frame: Frame, notes: &mut Vec<String>) -> engine::Result<()> {
        match frame {
            Frame::Series(s) => self.series(s, notes),
            Frame::Batch(b) => {
                for s in b.series {
                    self.series(s, notes)?;
                }
                Ok(())
            }
            Frame::Warning(w) => {
                notes.push(w);
                Ok(())
            }
            Frame::Hints(_) => Ok(()),
        }
    }

    fn series(&mut self, s: proto::thanos::Series, notes: &mut Vec<String>) -> engine::Result<()> {
        if let Some(cur) = &self.labels
            && same_labels(cur, &s.labels)
        {
            self.chunks.extend(s.chunks);
            return Ok(());
        }
        self.close(notes)?;
        self.labels = Some(labels_from_proto(s.labels));
        self.chunks = s.chunks;
        Ok(())
    }

    /// The batch, once it is big enough to hand on.
    pub(crate) fn take_if_full(&mut self) -> engine::Result<Option<SeriesBatch>> {
        if self.out.is_full(CLIENT_BATCH_SAMPLES, CLIENT_BATCH_SERIES) { self.out.take() } else { Ok(None) }
    }

    /// Ends the stream: the last series and what is left of the batch.
    pub(crate) fn finish(&mut self, notes: &mut Vec<String>) -> engine::Result<Option<SeriesBatch>> {
        self.close(notes)?;
        self.out.take()
    }

    /// Decodes the series received so far into one entry per track.
    fn close(&mut self, notes: &mut Vec<String>) -> engine::Result<()> {
        let Some(mut labels) = self.labels.take() else { return Ok(()) };
        let mut chunks = std::mem::take(&mut self.chunks);
        let (min_t, max_t) = (self.min_t, self.max_t);
        chunks.retain(|c| c.max_time >= min_t && c.min_time <= max_t);
        if !self.aggregates.is_empty() && chunks.iter().any(|c| c.raw.is_none()) {
            return self.close_downsampled(labels, chunks);
        }
        let mut histograms = 0usize;
        for c in &chunks {
            match &c.raw {
                Some(raw) => match Encoding::try_from(raw.r#type) {
                    Ok(Encoding::Xor) => {}
                    Ok(Encoding::Histogram | Encoding::FloatHistogram) => histograms += 1,
                    Err(_) => {
                        return Err(self.err(format!(
                            "series {labels}: chunk [{}, {}] has unknown encoding {}",
                            c.min_time, c.max_time, raw.r#type
                        )));
                    }
                },
                None => {
                    return Err(self.err(format!(
                        "series {labels}: chunk [{}, {}] holds downsampled aggregates only, but Strata asked for \
                         raw data (max_resolution_window 0)",
                        c.min_time, c.max_time
                    )));
                }
            }
        }
        if histograms > 0 {
            notes.push(format!(
                "series {labels}: {histograms} native histogram chunk(s) skipped: Strata does not read native \
                 histograms yet"
            ));
            chunks.retain(|c| c.raw.as_ref().is_some_and(|r| r.r#type == Encoding::Xor as i32));
        }
        if !chunks.is_sorted_by_key(|c| c.min_time) {
            chunks.sort_by_key(|c| c.min_time);
        }
        // Thanos's overlap split: each chunk joins the first track that ended before it starts.
        self.track_end.clear();
        self.track_of.clear();
        for c in &chunks {
            match self.track_end.iter().position(|&end| end < c.min_time) {
                Some(t) => {
                    self.track_end[t] = c.max_time;
                    self.track_of.push(t);
                }
                None => {
                    self.track_end.push(c.max_time);
                    self.track_of.push(self.track_end.len() - 1);
                }
            }
        }
        let tracks = self.track_end.len();
        for t in 0..tracks {
            let start = self.out.ts.len();
            for (i, c) in chunks.iter().enumerate() {
                if self.track_of[i] == t {
                    self.decode_chunk(c, &labels)?;
                }
            }
            sort_tail(&mut self.out, start);
            let l = if t + 1 < tracks { labels.clone() } else { std::mem::take(&mut labels) };
            self.out.close_series(l, start);
        }
        Ok(())
    }

    /// Appends the chunk's samples within `[min_t, max_t]` to the batch.
    fn decode_chunk(&mut self, c: &AggrChunk, labels: &Labels) -> engine::Result<()> {
        let Some(raw) = &c.raw else { return Ok(()) };
        let s = self.out.ts.len();
        if let Err(e) = chunkenc::decode_into(&raw.data, &mut self.out.ts, &mut self.out.vs) {
            self.out.ts.truncate(s);
            self.out.vs.truncate(s);
            return Err(self.err(format!("series {labels}: chunk [{}, {}]: {e}", c.min_time, c.max_time)));
        }
        let seg = &self.out.ts[s..];
        let lo = seg.partition_point(|&t| t < self.min_t);
        let hi = seg.partition_point(|&t| t <= self.max_t);
        self.out.ts.truncate(s + hi);
        self.out.vs.truncate(s + hi);
        if lo > 0 {
            self.out.ts.drain(s..s + lo);
            self.out.vs.drain(s..s + lo);
        }
        Ok(())
    }
}

/// Sorts the samples after `start` by timestamp, keeping the first of equal timestamps, if a store
/// sent chunks whose time ranges do not match their samples (cheap check otherwise).
fn sort_tail(out: &mut BatchBuilder, start: usize) {
    if out.ts[start..].windows(2).all(|w| w[0] < w[1]) {
        return;
    }
    let mut pts: Vec<(i64, f64)> = out.ts[start..].iter().copied().zip(out.vs[start..].iter().copied()).collect();
    pts.sort_by_key(|p| p.0);
    pts.dedup_by_key(|p| p.0);
    out.ts.truncate(start);
    out.vs.truncate(start);
    out.ts.extend(pts.iter().map(|p| p.0));
    out.vs.extend(pts.iter().map(|p| p.1));
}

/// A [`SeriesSource`] over one StoreAPI endpoint: series with their chunks merged (overlapping
/// chunks joined by timestamp). Every endpoint problem fails the call (no partial response; the
/// querier's fan-out in [`super::proxy`] has that), except with [`RemoteSource::with_warnings`].
#[derive(Debug, Clone)]
pub struct RemoteSource {
    remote: Remote,
    opts: CallOptions,
}

impl RemoteSource {
    /// The source over `remote`, sending `tenant` (if any) with every call.
    pub fn new(remote: Remote, tenant: Option<String>) -> Self {
        let partial = Partial { abort: true, warnings: Warnings::default() };
        RemoteSource { remote, opts: CallOptions { tenant, frame_timeout: None, partial } }
    }

    /// Endpoint failures and store warnings become entries of `warnings` instead of errors.
    pub fn with_warnings(mut self, warnings: Warnings) -> Self {
        self.opts.partial = Partial { abort: false, warnings };
        self
    }

    /// Label names (`name` None) or values, store warnings and failures handled per the source's
    /// partial response setting.
    async fn labels(
        &self,
        name: Option<&str>,
        matchers: &[Matcher],
        min_t: i64,
        max_t: i64,
    ) -> engine::Result<Vec<String>> {
        let q = LabelQuery { matchers, min_t, max_t, abort: self.opts.partial.abort, without_replica_labels: &[] };
        match self.remote.labels(name, &q, self.opts.tenant.as_deref()).await {
            Ok((list, warnings)) => {
                for w in warnings {
                    self.opts.partial.note(self.remote.name(), w)?;
                }
                Ok(list)
            }
            Err(e) => self.opts.partial.fail(e).map(|()| Vec::new()),
        }
    }
}

#[async_trait::async_trait]
impl SeriesSource for RemoteSource {
    async fn select(&self, req: &SelectRequest) -> engine::Result<SeriesStream> {
        let sr = series_request(req, vec![], self.opts.partial.abort);
        Ok(group_merge(vec![self.remote.series(sr, self.opts.clone(), Receive::Inline)], Combine::Union))
    }

    async fn series(&self, matchers: &[Matcher], min_t: i64, max_t: i64) -> engine::Result<Vec<Labels>> {
        let req = SelectRequest { matchers: matchers.to_vec(), min_t, max_t, ..Default::default() };
        let sr = series_request(&req, vec![], self.opts.partial.abort);
        match self.remote.series_labels(sr, &self.opts).await {
            Ok(l) => Ok(l),
            Err(e) => self.opts.partial.fail(e).map(|()| Vec::new()),
        }
    }

    async fn label_names(&self, matchers: &[Matcher], min_t: i64, max_t: i64) -> engine::Result<Vec<String>> {
        self.labels(None, matchers, min_t, max_t).await
    }

    async fn label_values(
        &self,
        name: &str,
        matchers: &[Matcher],
        min_t: i64,
        max_t: i64,
    ) -> engine::Result<Vec<String>> {
        self.labels(Some(name), matchers, min_t, max_t).await
    }
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]
    use engine::chunkenc::XorEncoder;
    use proto::thanos::{Chunk, Series};

    use super::*;

    fn pb_labels(pairs: &[(&str, &str)]) -> Vec<PbLabel> {
        pairs.iter().map(|(n, v)| PbLabel { name: n.to_string(), value: v.to_string() }).collect()
    }

    /// An XOR chunk of `(t, v)` samples with its time range.
    fn chunk(samples: &[(i64, f64)]) -> AggrChunk {
        let mut e = XorEncoder::new();
        for &(t, v) in samples {
            e.append(t, v).unwrap();
        }
        AggrChunk {
            min_time: samples[0].0,
            max_time: samples[samples.len() - 1].0,
            raw: Some(Chunk { r#type: Encoding::Xor as i32, data: e.bytes().to_vec(), hash: 0 }),
            ..Default::default()
        }
    }

    fn series(pairs: &[(&str, &str)], chunks: Vec<AggrChunk>) -> Frame {
        Frame::Series(Series { labels: pb_labels(pairs), chunks })
    }

    type Entry = (String, Vec<(i64, f64)>);

    fn entries(b: &SeriesBatch) -> Vec<Entry> {
        (0..b.num_series())
            .map(|i| {
                let (l, t, v) = b.series(i);
                (l.to_string(), t.iter().copied().zip(v.iter().copied()).collect())
            })
            .collect()
    }

    /// A select of `up` over `[min_t, max_t]`.
    fn select_up(min_t: i64, max_t: i64) -> SelectRequest {
        SelectRequest { matchers: vec![Matcher::equal("__name__", "up")], min_t, max_t, ..Default::default() }
    }

    fn decode(min_t: i64, max_t: i64, frames: Vec<Frame>) -> (Vec<Entry>, Vec<String>) {
        let mut d = SeriesDecoder::new("store:1", min_t, max_t);
        let mut notes = Vec::new();
        let mut out = Vec::new();
        for f in frames {
            d.push(f, &mut notes).unwrap();
            if let Some(b) = d.take_if_full().unwrap() {
                out.extend(entries(&b));
            }
        }
        if let Some(b) = d.finish(&mut notes).unwrap() {
            out.extend(entries(&b));
        }
        (out, notes)
    }

    #[test]
    fn decodes_trims_and_joins_series_split_across_frames() {
        let a = [("__name__", "x"), ("job", "a")];
        let frames = vec![
            series(&a, vec![chunk(&[(0, 0.0), (10, 1.0), (20, 2.0)])]),
            Frame::Warning("block 01X has no index".into()),
            // the same series continues in the next frame
            series(&a, vec![chunk(&[(30, 3.0), (40, 4.0)])]),
            Frame::Batch(proto::thanos::SeriesBatch {
                series: vec![
                    Series { labels: pb_labels(&[("__name__", "y")]), chunks: vec![chunk(&[(5, 5.0), (15, 15.0)])] },
                    // entirely outside [10, 35]
                    Series { labels: pb_labels(&[("__name__", "z")]), chunks: vec![chunk(&[(50, 1.0)])] },
                ],
            }),
        ];
        let (out, notes) = decode(10, 35, frames);
        assert_eq!(
            out,
            vec![
                (r#"x{job="a"}"#.to_string(), vec![(10, 1.0), (20, 2.0), (30, 3.0)]),
                ("y".to_string(), vec![(15, 15.0)]),
            ]
        );
        assert_eq!(notes, vec!["block 01X has no index".to_string()]);
    }

    #[test]
    fn overlapping_chunks_become_tracks_and_unordered_chunks_are_sorted() {
        let a = [("__name__", "x")];
        // chunk 2 overlaps chunk 1 (another replica's data); chunk 3 comes first in time
        let frames = vec![series(
            &a,
            vec![
                chunk(&[(100, 1.0), (200, 2.0)]),
                chunk(&[(150, 1.5), (250, 2.5)]),
                chunk(&[(10, 0.1), (20, 0.2)]),
                chunk(&[(300, 3.0)]),
            ],
        )];
        let (out, _) = decode(0, 1000, frames);
        assert_eq!(
            out,
            vec![
                ("x".to_string(), vec![(10, 0.1), (20, 0.2), (100, 1.0), (200, 2.0), (300, 3.0)]),
                ("x".to_string(), vec![(150, 1.5), (250, 2.5)]),
            ]
        );
    }

    #[test]
    fn histogram_chunks_are_skipped_with_a_note_and_aggregates_are_errors() {
        let mut h = chunk(&[(0, 1.0)]);
        h.raw.as_mut().unwrap().r#type = Encoding::Histogram as i32;
        let frames = vec![series(&[("__name__", "h")], vec![h, chunk(&[(5, 2.0)])])];
        let (out, notes) = decode(0, 10, frames);
        assert_eq!(out, vec![("h".to_string(), vec![(5, 2.0)])]);
        assert_eq!(notes.len(), 1);
        assert!(notes[0].contains("series h: 1 native histogram chunk(s) skipped"), "{}", notes[0]);

        let mut d = SeriesDecoder::new("store:1", 0, 10);
        let aggr = AggrChunk { min_time: 0, max_time: 9, count: chunk(&[(9, 3.0)]).raw, ..Default::default() };
        d.push(series(&[("__name__", "d")], vec![aggr]), &mut vec![]).unwrap();
        let e = d.finish(&mut vec![]).unwrap_err().to_string();
        assert!(e.starts_with("store:1: series d: chunk [0, 9] holds downsampled aggregates only"), "{e}");

        // Asked for aggregates, a Thanos store's AggrChunks are read as Thanos's querier reads them.
        use engine::aggr::Aggregate;
        let down = |aggs: Vec<Aggregate>| {
            let mut d = SeriesDecoder::new("store:1", 0, 1000).with_aggregates(aggs);
            let a = AggrChunk {
                min_time: 0,
                max_time: 599,
                count: chunk(&[(299, 2.0), (599, 4.0)]).raw,
                sum: chunk(&[(299, 10.0), (599, 8.0)]).raw,
                counter: chunk(&[(5, 3.0), (299, 7.0), (599, 9.0), (599, 2.0)]).raw,
                ..Default::default()
            };
            // A raw chunk after it: its first value 1 < the last raw value 2 is a counter reset.
            let r = chunk(&[(700, 1.0), (800, 4.0)]);
            d.push(series(&[("__name__", "d")], vec![r, a]), &mut vec![]).unwrap();
            entries(&d.finish(&mut vec![]).unwrap().unwrap())
        };
        assert_eq!(
            down(vec![Aggregate::Count, Aggregate::Sum])[0].1,
            vec![(299, 5.0), (599, 2.0), (700, 1.0), (800, 4.0)]
        );
        assert_eq!(
            down(vec![Aggregate::Counter])[0].1,
            vec![(5, 3.0), (299, 7.0), (599, 9.0), (700, 10.0), (800, 13.0)]
        );

        let mut d = SeriesDecoder::new("store:1", 0, 10);
        let mut bad = chunk(&[(0, 1.0), (1, 2.0)]);
        bad.raw.as_mut().unwrap().data.truncate(3);
        d.push(series(&[("__name__", "c")], vec![bad]), &mut vec![]).unwrap();
        let e = d.finish(&mut vec![]).unwrap_err().to_string();
        assert!(e.starts_with("store:1: series c: chunk [0, 1]: bad chunk"), "{e}");
    }

    #[test]
    fn series_request_carries_hints_and_strategy() {
        let req = SelectRequest {
            matchers: vec![Matcher::equal("__name__", "up")],
            min_t: 1,
            max_t: 2,
            hints: engine::SelectHints {
                step_ms: 15_000,
                range_ms: 300_000,
                func: Some("SumOverTime".into()),
                ..Default::default()
            },
        };
        let sr = series_request(&req, vec!["replica".into()], true);
        assert_eq!((sr.min_time, sr.max_time, sr.max_resolution_window), (1, 2, 0));
        assert!(sr.aggregates.is_empty());
        let mut down = req.clone();
        down.hints.max_resolution_ms = 300_000;
        down.hints.aggregates = engine::aggr::aggregates_for_func(Some("AvgOverTime"));
        let ds = series_request(&down, vec![], false);
        assert_eq!(ds.max_resolution_window, 300_000);
        assert_eq!(ds.aggregates, vec![proto::thanos::Aggr::Count as i32, proto::thanos::Aggr::Sum as i32]);
        assert_eq!(sr.partial_response_strategy, PartialResponseStrategy::Abort as i32);
        assert_eq!(sr.without_replica_labels, vec!["replica".to_string()]);
        let h = sr.query_hints.unwrap();
        assert_eq!(
            (h.step_millis, h.func.unwrap().name, h.range.unwrap().millis),
            (15_000, "sum_over_time".into(), 300_000)
        );
        assert_eq!(sr.matchers.len(), 1);
        assert_eq!(engine::aggr::prom_func_name("rate"), "rate");
    }

    #[tokio::test]
    async fn addresses_are_checked() {
        let e = Remote::connect_lazy("dns+store:10901").unwrap_err().to_string();
        assert!(e.contains("not supported"), "{e}");
        assert!(Remote::connect_lazy("http://a:1").is_err());
        assert!(Remote::connect_lazy("nohost").is_err());
    }

    /// A Strata store: the remote asks over gRPC until Info says the port serves frames, then
    /// over frames (a connection kept for the next call), and reads the same samples both ways.
    #[tokio::test]
    async fn series_over_frames_once_info_advertises_them() {
        use std::sync::atomic::AtomicBool;

        use crate::storeapi::server::{StoreApi, StoreApiMetrics, StoreApiOptions};
        let m = engine::MemSource::new();
        for k in 0..3 {
            let ts: Vec<i64> = (0..500).map(|i| i * 15_000).collect();
            let vs: Vec<f64> = (0..500).map(|i| f64::from(i * 3 + k)).collect();
            m.add(Labels::from_pairs([("__name__", "up"), ("i", &k.to_string())]), &ts, &vs);
        }
        let opts = StoreApiOptions { component_type: "store".into(), ..Default::default() };
        let reg = &mut prometheus_client::registry::Registry::default();
        let api = StoreApi::new(Arc::new(m), opts, Arc::new(AtomicBool::new(true)), StoreApiMetrics::register(reg));
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        let routes = tonic::service::Routes::new(api.store_server()).add_service(api.info_server());
        let frames: super::super::frames::FramedStore = Arc::new(api);
        tokio::spawn(super::super::serve::serve(listener, routes, Some(frames), std::future::pending()));

        let remote = Remote::connect_lazy(&addr.to_string()).unwrap();
        let src = RemoteSource::new(remote.clone(), None);
        let req = select_up(100_000, 5_000_000);
        let read = || async {
            let b: Vec<SeriesBatch> =
                futures::TryStreamExt::try_collect(src.select(&req).await.unwrap()).await.unwrap();
            b.iter().flat_map(entries).collect::<Vec<_>>()
        };
        let over_grpc = read().await;
        assert_eq!(remote.frames.idle_connections(), 0, "no Info yet: gRPC");
        assert_eq!(over_grpc.len(), 3);
        let want: Vec<i64> = (7..=333).map(|i| i * 15_000).collect();
        let got: Vec<(i64, f64)> = over_grpc[1].1.clone();
        let want: Vec<(i64, f64)> = want.into_iter().map(|t| (t, f64::from((t / 15_000) as i32 * 3 + 1))).collect();
        assert_eq!(got, want, "samples trimmed to the range");
        remote.info(Duration::from_secs(5)).await.unwrap();
        assert_eq!(read().await, over_grpc);
        assert_eq!(remote.frames.idle_connections(), 1, "the call went over frames");
        assert_eq!(read().await, over_grpc);
        assert_eq!(remote.frames.idle_connections(), 1, "and its connection served the next one");
    }

    #[tokio::test]
    async fn unreachable_endpoint_fails_or_warns() {
        // A port nothing listens on.
        let port = std::net::TcpListener::bind("127.0.0.1:0").unwrap().local_addr().unwrap().port();
        let remote = Remote::connect_lazy(&format!("127.0.0.1:{port}")).unwrap();
        let e = remote.info(Duration::from_secs(5)).await.unwrap_err().to_string();
        assert!(e.starts_with(&format!("127.0.0.1:{port}: info: rpc error: code = Unavailable")), "{e}");
        let src = RemoteSource::new(remote.clone(), None);
        let req = select_up(0, 1);
        let r: engine::Result<Vec<SeriesBatch>> =
            futures::TryStreamExt::try_collect(src.select(&req).await.unwrap()).await;
        assert!(r.unwrap_err().to_string().contains("fetch series: rpc error: code = Unavailable"));
        let w = Warnings::default();
        let src = RemoteSource::new(remote, None).with_warnings(w.clone());
        let r: Vec<SeriesBatch> = futures::TryStreamExt::try_collect(src.select(&req).await.unwrap()).await.unwrap();
        assert!(r.is_empty());
        assert_eq!(src.label_names(&[], 0, 1).await.unwrap(), Vec::<String>::new());
        let got = w.take();
        assert_eq!(got.len(), 2, "{got:?}");
        assert!(got[1].contains("fetch label names"), "{got:?}");
    }
}
