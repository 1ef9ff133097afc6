//! `strata sidecar`: runs beside a Prometheus server as Thanos's sidecar does. Ships each
//! completed TSDB block to the bucket (converted to a Strata block) when `--objstore.config-file`
//! is given, and serves the Prometheus's data over the StoreAPI (gRPC on `--grpc-address`) through
//! remote read; `/metrics`, `/-/healthy`, `/-/ready` on `--http-address`. The logic lives in
//! `ingest::sidecar`; the StoreAPI server is the query crate's.
//!
//! ```text
//!   Prometheus ◄─ watch (ready, external labels) ─ Sidecar ─► ready flag (HTTP /-/ready, Info)
//!   --tsdb.path ─► Shipper ─► bucket
//!   gRPC ─► SidecarStore: Series with only external-label matchers ─► InvalidArgument
//!                         plain Series ─► RemoteReadSource::chunk_series (chunks passed through)
//!                         the rest, Info ─► StoreApi over RemoteReadSource (chunks re-encoded)
//! ```

use std::path::PathBuf;
use std::sync::Arc;

use axum::Router;
use clap::Args;
use engine::bucket::Bucket;
use ingest::sidecar::{
    PromClient, PromState, RemoteReadSource, Shipper, ShipperMetrics, Sidecar, WatchMetrics, WatchOptions,
};
use proto::thanos::store_server::{Store, StoreServer};
use proto::thanos::{
    LabelNamesRequest, LabelNamesResponse, LabelValuesRequest, LabelValuesResponse, SeriesRequest, SeriesResponse,
    series_response,
};
use query::storeapi::convert::matchers_from_proto;
use query::storeapi::server::{MAX_MESSAGE_BYTES, SentCounts, StoreApi, StoreApiMetrics, StoreApiOptions};
use tonic::service::Routes;
use tonic::{Request, Response, Status};

use crate::CliError;
use crate::server::{self, Readiness, Shutdown};
use crate::store_cmd::{TimeOrDuration, now_ms};

/// Arguments of `strata sidecar`.
#[derive(Debug, Args)]
pub(crate) struct SidecarArgs {
    /// URL of the Prometheus server to run beside.
    #[arg(long = "prometheus.url", default_value = "http://localhost:9090")]
    prometheus_url: String,
    /// How long to wait for Prometheus to become ready at start before giving up.
    #[arg(long = "prometheus.ready_timeout", default_value = "10m")]
    prometheus_ready_timeout: String,
    /// How often the Prometheus configuration (external labels) is re-read; also the longest
    /// pause between retries while Prometheus is down.
    #[arg(long = "prometheus.get_config_interval", default_value = "30s")]
    prometheus_get_config_interval: String,
    /// Timeout of each call to Prometheus's API (remote read included).
    #[arg(long = "prometheus.get_config_timeout", default_value = "5s")]
    prometheus_get_config_timeout: String,
    /// Prometheus's data directory (its --storage.tsdb.path), where completed blocks appear.
    #[arg(long = "tsdb.path", default_value = "./data")]
    tsdb_path: PathBuf,
    /// Object storage configuration file (Thanos objstore YAML). Without it blocks are not
    /// uploaded and only the StoreAPI is served.
    #[arg(long = "objstore.config-file")]
    objstore_config_file: Option<PathBuf>,
    /// Listen address of the StoreAPI (gRPC, host:port).
    #[arg(long = "grpc-address", default_value = "127.0.0.1:10901")]
    grpc_address: String,
    /// Listen address of /metrics, /-/healthy and /-/ready (host:port).
    #[arg(long = "http-address", default_value = "127.0.0.1:10902")]
    http_address: String,
    /// Also upload compacted blocks (level > 1) already in the TSDB directory: for a one-off
    /// migration of an existing Prometheus history.
    #[arg(long = "shipper.upload-compacted")]
    upload_compacted: bool,
    /// Start of the time range served: RFC3339 or a duration relative to now (-1d, 2h45m). Only
    /// data after it is served over the StoreAPI.
    #[arg(long = "min-time", default_value = "0000-01-01T00:00:00Z")]
    min_time: String,
    #[command(flatten)]
    limits: crate::grpc::StoreLimitsArgs,
}

/// Runs `strata sidecar` until SIGINT/SIGTERM (or until Prometheus is not ready within
/// `--prometheus.ready_timeout`, or has no external labels: errors).
pub(crate) async fn run(args: SidecarArgs) -> Result<(), CliError> {
    let min_time = TimeOrDuration::parse("min-time", &args.min_time)?;
    let ready_timeout = crate::query_cmd::duration_flag("prometheus.ready_timeout", &args.prometheus_ready_timeout)?;
    let config_interval =
        crate::query_cmd::duration_flag("prometheus.get_config_interval", &args.prometheus_get_config_interval)?;
    let call_timeout =
        crate::query_cmd::duration_flag("prometheus.get_config_timeout", &args.prometheus_get_config_timeout)?;
    if !args.tsdb_path.is_dir() {
        return Err(CliError::Usage(format!("--tsdb.path {}: not a directory", args.tsdb_path.display())));
    }
    let bucket = match &args.objstore_config_file {
        Some(p) => Some(Bucket::from_config_file(p)?),
        None => None,
    };
    let prom = PromClient::new(&args.prometheus_url, call_timeout)?;
    tracing::info!(
        prometheus = %args.prometheus_url,
        tsdb = %args.tsdb_path.display(),
        bucket = bucket.as_ref().map_or("none (uploads disabled)", |b| b.describe()),
        "sidecar starting"
    );

    if let Ok(point) = std::env::var(ingest::sidecar::shipper::PAUSE_ENV) {
        tracing::warn!(point, "test hook {} is set: uploads will pause", ingest::sidecar::shipper::PAUSE_ENV);
    }
    let ready = Readiness::default();
    let state = Arc::new(PromState::new(ready.flag(), min_time.at(now_ms())));
    let sidecar = Arc::new(Sidecar::new(prom.clone(), state.clone(), &args.tsdb_path));

    let mut registry = server::new_registry("sidecar");
    let mut thanos = server::thanos_registry();
    let watch_metrics = WatchMetrics::register(&mut thanos);
    let shipper = bucket.map(|b| {
        let m = ShipperMetrics::register(&mut thanos, args.upload_compacted);
        Shipper::new(&args.tsdb_path, b, state.clone(), args.upload_compacted, m)
    });
    let api_metrics = StoreApiMetrics::register(&mut registry);
    let opts = StoreApiOptions { component_type: "sidecar".into(), limits: args.limits.limits(), ..Default::default() };
    let source = Arc::new(RemoteReadSource::new(prom, state.clone()));
    let api = StoreApi::new(source.clone(), opts, ready.flag(), api_metrics);
    let passthrough = args.limits.limits() == Default::default();
    let sidecar_store = SidecarStore { api: api.clone(), state: state.clone(), source, passthrough };
    let frames: query::storeapi::frames::FramedStore = Arc::new(sidecar_store.clone());
    let store = StoreServer::new(sidecar_store)
        .max_decoding_message_size(MAX_MESSAGE_BYTES)
        .max_encoding_message_size(MAX_MESSAGE_BYTES);
    let routes = Routes::new(store).add_service(api.info_server());

    let shutdown = Shutdown::on_signal();
    let watch = {
        let sidecar = sidecar.clone();
        let opts = WatchOptions { ready_timeout, config_interval };
        let min_time: ingest::sidecar::MinTimeFn = Arc::new(move || min_time.at(now_ms()));
        async move { sidecar.watch_prometheus(opts, min_time, watch_metrics).await.map_err(CliError::from) }
    };
    let ship = {
        let sidecar = sidecar.clone();
        async move {
            match shipper {
                Some(s) => sidecar.run_shipper(s).await,
                None => std::future::pending::<()>().await,
            }
            Ok::<(), CliError>(())
        }
    };
    let http = server::serve_until(&args.http_address, Router::new(), ready, vec![registry, thanos], shutdown.clone());
    let grpc = crate::grpc::serve(&args.grpc_address, routes, Some(frames), shutdown.clone());
    let servers = async { tokio::try_join!(http, grpc).map(|_| ()) };
    // The background loops end only with an error (they are dropped at shutdown).
    let background = async { tokio::try_join!(watch, ship).map(|_| ()) };
    tokio::select! {
        res = servers => res,
        res = background => {
            res?;
            Ok(())
        }
    }
}

/// `thanos.Store` of the sidecar: a Series request whose matchers are all on external labels (or
/// that has none) is refused with `InvalidArgument` "no matchers specified (excluding external
/// labels)", as Thanos's sidecar does (one whose external-label matchers reject the labels gets an
/// empty answer first). Plain Series requests (no `skip_chunks`, sharding or hints, and no
/// `--store.limits.*`) get Prometheus's chunks passed through
/// ([`RemoteReadSource::chunk_series`]); the others, LabelNames and LabelValues go to the StoreAPI
/// server over the remote-read source (chunks re-encoded).
#[derive(Debug, Clone)]
struct SidecarStore {
    api: StoreApi,
    state: Arc<PromState>,
    source: Arc<RemoteReadSource>,
    passthrough: bool,
}

impl SidecarStore {
    fn plain(&self, r: &SeriesRequest) -> bool {
        self.passthrough
            && !r.skip_chunks
            && r.hints.is_none()
            && r.shard_info.as_ref().is_none_or(|s| s.total_shards < 1)
            && r.min_time <= r.max_time
    }

    /// Prometheus's chunks as they are, in frames of `response_batch_size` series.
    async fn pass_through(&self, r: SeriesRequest) -> Result<Response<<StoreApi as Store>::SeriesStream>, Status> {
        let started = std::time::Instant::now();
        let res = self.pass_through_frames(r).await;
        match &res {
            Ok((_, sent)) => self.api.record_series_call(tonic::Code::Ok, started, *sent),
            Err(s) => self.api.record_series_call(s.code(), started, SentCounts::default()),
        }
        let (frames, _) = res?;
        Ok(Response::new(Box::pin(futures::stream::iter(frames))))
    }

    /// The frames of a pass-through answer (held whole: remote read's series must be re-sorted
    /// once the external labels are on) and what they carry.
    async fn pass_through_frames(
        &self,
        r: SeriesRequest,
    ) -> Result<(Vec<Result<SeriesResponse, Status>>, SentCounts), Status> {
        if !self.state.is_ready() {
            return Err(Status::unavailable("sidecar is not ready yet"));
        }
        let matchers = matchers_from_proto(&r.matchers).map_err(|e| Status::invalid_argument(e.to_string()))?;
        let limit = usize::try_from(r.limit).unwrap_or(0);
        let series = self
            .source
            .chunk_series(&matchers, r.min_time, r.max_time, &r.without_replica_labels, limit)
            .await
            .map_err(|e| query::storeapi::server::status_of(&query::Error::from(e)))?;
        let sent = SentCounts {
            series: series.len() as u64,
            chunks: series.iter().map(|s| s.chunks.len() as u64).sum(),
            samples: series
                .iter()
                .flat_map(|s| &s.chunks)
                .filter_map(|c| c.raw.as_ref())
                .map(|c| u64::from(engine::chunkenc::num_samples(&c.data).unwrap_or(0)))
                .sum(),
        };
        let batch = usize::try_from(r.response_batch_size).unwrap_or(1).max(1);
        let frames: Vec<Result<SeriesResponse, Status>> = match batch {
            1 => series.into_iter().map(|s| Ok(frame(series_response::Result::Series(s)))).collect(),
            n => {
                let mut out = Vec::new();
                let mut it = series.into_iter().peekable();
                while it.peek().is_some() {
                    let series = it.by_ref().take(n).collect();
                    out.push(Ok(frame(series_response::Result::Batch(proto::thanos::SeriesBatch { series }))));
                }
                out
            }
        };
        Ok((frames, sent))
    }
}

fn frame(r: series_response::Result) -> SeriesResponse {
    SeriesResponse { result: Some(r) }
}

#[tonic::async_trait]
impl Store for SidecarStore {
    type SeriesStream = <StoreApi as Store>::SeriesStream;

    async fn series(&self, request: Request<SeriesRequest>) -> Result<Response<Self::SeriesStream>, Status> {
        let ext = self.state.external_labels();
        let matchers =
            matchers_from_proto(&request.get_ref().matchers).map_err(|e| Status::invalid_argument(e.to_string()))?;
        let rest = engine::labels::non_external(&matchers, |n| ext.get(n));
        if rest.is_some_and(|r| r.is_empty()) && self.state.is_ready() {
            return Err(Status::invalid_argument("no matchers specified (excluding external labels)"));
        }
        match self.plain(request.get_ref()) {
            true => self.pass_through(request.into_inner()).await,
            false => self.api.series(request).await,
        }
    }

    async fn label_names(&self, request: Request<LabelNamesRequest>) -> Result<Response<LabelNamesResponse>, Status> {
        self.api.label_names(request).await
    }

    async fn label_values(
        &self,
        request: Request<LabelValuesRequest>,
    ) -> Result<Response<LabelValuesResponse>, Status> {
        self.api.label_values(request).await
    }
}
