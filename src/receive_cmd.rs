//! `strata receive`: the Prometheus remote-write receiver (Thanos receive). Remote write 1.0 on
//! `--remote-write.address` (`/api/v1/receive` and `/api/v1/write`), one head per tenant under
//! `--tsdb.path`, blocks of `--tsdb.block-duration` cut every few seconds into the bucket (and all
//! data on shutdown), `/metrics`, `/-/healthy` and `/-/ready` on `--http-address` (the shared
//! server of [`crate::server`]).
//!
//! On `--grpc-address` it serves the Thanos StoreAPI (`thanos.Store`, `thanos.info.Info`) over every
//! tenant's head and the blocks it cut (each tenant's series carry the `--label`s and the tenant
//! label; Info lists one label set per tenant; ready after the first read of the bucket) and
//! `thanos.WriteableStore/RemoteWrite`, the gRPC write of receivers among themselves. With
//! `--receive.hashrings-file`, series are placed and replicated across receivers like Thanos's
//! `hashmod` hashring, forwarded to the peers' gRPC addresses, so Strata and Thanos receivers can
//! share a hashring.
//!
//! ```text
//!   remote write (HTTP) ─┐                      ┌─► local tenant heads ──cut──► bucket (own blocks)
//!   RemoteWrite (gRPC) ──┴─► hashring placement ─┤                                   │
//!                                                └─► peers: RemoteWrite (gRPC)        │
//!   StoreAPI (gRPC) ◄── heads ∪ own blocks (re-read after every cut) ◄───────────────┘
//! ```

use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;

use axum::Router;
use clap::Args;
use engine::bucket::Bucket;
use engine::bucket_source::BucketSource;
use engine::{Labels, MergedSource, SeriesSource};
use ingest::hashring::Hashrings;
use ingest::receive::{self, EngineHeads, ReceiveOptions, ReceiveState};
use ingest::receive_grpc::writeable_store;
use query::storeapi::server::{StoreApi, StoreApiMetrics, StoreApiOptions};

use crate::CliError;
use crate::query_cmd::{cut_loop_then, sync_loop};
use crate::server::{
    BucketStoreCollector, PageCacheCollector, Readiness, Shutdown, SyncMetrics, new_registry, serve_until,
    thanos_registry,
};

/// Arguments of `strata receive`.
#[derive(Debug, Args)]
pub(crate) struct ReceiveArgs {
    /// Listen address of the remote-write API (host:port).
    #[arg(long = "remote-write.address", default_value = "127.0.0.1:19291")]
    remote_write_address: String,
    /// Listen address of /metrics, /-/healthy and /-/ready (host:port).
    #[arg(long = "http-address", default_value = "127.0.0.1:10902")]
    http_address: String,
    /// Listen address of the StoreAPI and of thanos.WriteableStore (gRPC, host:port); hashring
    /// peers forward here.
    #[arg(long = "grpc-address", default_value = "127.0.0.1:10901")]
    grpc_address: String,
    /// Directory of the tenant heads (WAL and state), one subdirectory per tenant.
    #[arg(long = "tsdb.path", default_value = "./data")]
    tsdb_path: PathBuf,
    /// Object storage configuration file (Thanos objstore YAML); default: a FILESYSTEM bucket in
    /// `<tsdb.path>/bucket`.
    #[arg(long = "objstore.config-file")]
    objstore_config_file: Option<PathBuf>,
    #[command(flatten)]
    core: ReceiveCoreArgs,
    /// Hashrings file (Thanos JSON); without it every series is written locally.
    #[arg(long = "receive.hashrings-file")]
    hashrings_file: Option<PathBuf>,
    /// This receiver's endpoint as the hashrings name it: the host:port of its --grpc-address.
    #[arg(long = "receive.local-endpoint")]
    local_endpoint: Option<String>,
    /// How many receivers store each series; a write needs floor(rf/2)+1 of them (1 for rf=2).
    #[arg(long = "receive.replication-factor", default_value_t = 1)]
    replication_factor: u64,
    /// Timeout of a write forwarded to another receiver (gRPC).
    #[arg(long = "receive.forward-timeout", default_value = "5s")]
    forward_timeout: String,
    #[command(flatten)]
    limits: crate::grpc::StoreLimitsArgs,
    /// Listen address of Arrow Flight SQL over this receiver's heads and the blocks they cut
    /// (gRPC, host:port, e.g. 127.0.0.1:10911); empty: not served. The --sql.* and --flight.*
    /// flags apply to it.
    #[arg(long = "flight.grpc-address", default_value = "")]
    flight_grpc_address: String,
    #[command(flatten)]
    sql: crate::flight_cmd::SqlArgs,
}

/// Receive flags shared by `strata receive` and `strata up`.
#[derive(Debug, Clone, Args)]
pub(crate) struct ReceiveCoreArgs {
    /// External label of the blocks, `name="value"` (repeatable).
    #[arg(long = "label")]
    labels: Vec<String>,
    /// Length (and alignment) of the blocks cut from the heads.
    #[arg(long = "tsdb.block-duration", default_value = "2h")]
    block_duration: String,
    /// How far behind the newest sample out-of-order samples are accepted (0s disables).
    #[arg(long = "tsdb.out-of-order.time-window", default_value = "0s")]
    out_of_order_window: String,
    /// HTTP header naming the tenant of a request.
    #[arg(long = "receive.tenant-header", default_value = receive::DEFAULT_TENANT_HEADER)]
    tenant_header: String,
    /// Tenant of requests without the tenant header.
    #[arg(long = "receive.default-tenant-id", default_value = receive::DEFAULT_TENANT)]
    default_tenant: String,
    /// Label naming the tenant on blocks and query results.
    #[arg(long = "receive.tenant-label-name", default_value = receive::DEFAULT_TENANT_LABEL)]
    tenant_label: String,
    /// Largest accepted request, compressed and decompressed (bytes, or with KiB/MiB/GiB).
    #[arg(long = "receive.max-body-size", default_value = "32MiB")]
    max_body_size: String,
    /// How often finished blocks are cut from the heads and uploaded.
    #[arg(long = "receive.cut-interval", default_value = "5s")]
    cut_interval: String,
}

/// Where this receiver sits in a hashring (receive only; `strata up` is a single receiver).
#[derive(Debug, Default)]
pub(crate) struct RingOptions {
    hashrings: Option<Hashrings>,
    local_endpoint: Option<String>,
    replication_factor: u64,
    forward_timeout: Duration,
}

impl ReceiveCoreArgs {
    /// Opens the receive state under `tsdb_path` (replaying the heads found there) and returns it
    /// with the cut interval.
    pub(crate) async fn open(
        &self,
        tsdb_path: &Path,
        bucket: Bucket,
        ring: RingOptions,
    ) -> Result<(ReceiveState, Duration), CliError> {
        let block_duration_ms = duration_ms("tsdb.block-duration", &self.block_duration)?;
        if block_duration_ms <= 0 {
            return Err(CliError::Usage(format!("--tsdb.block-duration {:?}: must be positive", self.block_duration)));
        }
        let out_of_order_window_ms = duration_ms("tsdb.out-of-order.time-window", &self.out_of_order_window)?;
        let cut_every = Duration::from_millis(duration_ms("receive.cut-interval", &self.cut_interval)?.max(100) as u64);
        let max_body_bytes = parse_size("receive.max-body-size", &self.max_body_size)?;
        let external_labels = Labels::from_pairs(crate::parse_labels(&self.labels)?);
        if external_labels.get(&self.tenant_label).is_some() {
            return Err(CliError::Usage(format!(
                "--label {}: the tenant label is set per tenant by the receiver",
                self.tenant_label
            )));
        }
        std::fs::create_dir_all(tsdb_path).map_err(|e| {
            CliError::Failed(format!("--tsdb.path {}: cannot create the directory: {e}", tsdb_path.display()))
        })?;
        let opts = ReceiveOptions {
            tsdb_path: tsdb_path.to_path_buf(),
            tenant_header: self.tenant_header.clone(),
            default_tenant: self.default_tenant.clone(),
            tenant_label: self.tenant_label.clone(),
            external_labels,
            max_body_bytes,
            replication_factor: ring.replication_factor.max(1),
            hashrings: ring.hashrings,
            local_endpoint: ring.local_endpoint,
            forward_timeout: ring.forward_timeout,
        };
        let factory = Arc::new(EngineHeads { bucket, block_duration_ms, out_of_order_window_ms });
        let state = ReceiveState::new(opts, factory)?;
        let tenants = state.open_existing().await?;
        if !tenants.is_empty() {
            tracing::info!(?tenants, "replayed the heads found under the tsdb path");
        }
        Ok((state, cut_every))
    }
}

fn duration_ms(flag: &str, v: &str) -> Result<i64, CliError> {
    query::api::params::parse_duration(v).map_err(|e| CliError::Usage(format!("--{flag} {v:?}: {e}")))
}

/// Parses a size: bytes, or a number with `B`, `KB`, `MB`, `GB`, `KiB`, `MiB`, `GiB`.
pub(crate) fn parse_size(flag: &str, v: &str) -> Result<usize, CliError> {
    let t = v.trim();
    let split = t.find(|c: char| !c.is_ascii_digit()).unwrap_or(t.len());
    let (num, unit) = t.split_at(split);
    let mult: usize = match unit.trim() {
        "" | "B" => 1,
        "KB" => 1000,
        "MB" => 1000 * 1000,
        "GB" => 1000 * 1000 * 1000,
        "KiB" => 1 << 10,
        "MiB" => 1 << 20,
        "GiB" => 1 << 30,
        other => return Err(CliError::Usage(format!("--{flag} {v:?}: unknown unit {other:?}"))),
    };
    num.parse::<usize>()
        .ok()
        .and_then(|n| n.checked_mul(mult))
        .filter(|&n| n > 0)
        .ok_or_else(|| CliError::Usage(format!("--{flag} {v:?}: expected a positive size like 32MiB")))
}

/// How often the receiver re-reads the bucket for its own blocks besides right after each cut (a
/// restart, or blocks a previous run uploaded on shutdown).
const BLOCK_SYNC_INTERVAL: Duration = Duration::from_secs(180);

/// Runs `strata receive` until SIGINT/SIGTERM, then cuts every head into blocks.
pub(crate) async fn run(args: ReceiveArgs) -> Result<(), CliError> {
    let bucket = match &args.objstore_config_file {
        Some(cfg) => Bucket::from_config_file(cfg)?,
        None => Bucket::local(args.tsdb_path.join("bucket"))?,
    };
    let ring = RingOptions {
        hashrings: args.hashrings_file.as_deref().map(Hashrings::from_file).transpose()?,
        local_endpoint: args.local_endpoint.clone(),
        replication_factor: args.replication_factor,
        forward_timeout: Duration::from_millis(
            duration_ms("receive.forward-timeout", &args.forward_timeout)?.max(1) as u64
        ),
    };
    let (state, cut_every) = args.core.open(&args.tsdb_path, bucket.clone(), ring).await?;

    // the StoreAPI data: the heads and the blocks this receiver cut
    let own = state.clone();
    let blocks =
        Arc::new(BucketSource::new(bucket.clone()).with_block_filter(Arc::new(move |meta| own.is_own_block(meta))));
    let source: Arc<dyn SeriesSource> = Arc::new(MergedSource::new(vec![blocks.clone(), state.source()]));
    let mut registry = new_registry("receive");
    state.register_metrics(&mut registry);
    let sync_metrics = SyncMetrics::register(&mut registry);
    registry.register_collector(Box::new(PageCacheCollector(blocks.clone())));
    let mut thanos = thanos_registry();
    thanos.register_collector(Box::new(BucketStoreCollector(blocks.clone())));
    let api_metrics = StoreApiMetrics::register(&mut registry);
    let ready = Readiness::default();
    let opts = StoreApiOptions { component_type: "receive".into(), limits: args.limits.limits(), ..Default::default() };
    let api = StoreApi::new(source, opts, ready.flag(), api_metrics);
    let routes = crate::grpc::storeapi_routes(&api).add_service(writeable_store(state.clone()));
    let sync = tokio::spawn(sync_loop(blocks.clone(), BLOCK_SYNC_INTERVAL, sync_metrics, ready.clone()));

    let listener = tokio::net::TcpListener::bind(&args.remote_write_address).await.map_err(|e| {
        CliError::Failed(format!("--remote-write.address {}: cannot listen: {e}", args.remote_write_address))
    })?;
    let rw_local = listener
        .local_addr()
        .map_err(|e| CliError::Failed(format!("--remote-write.address {}: {e}", args.remote_write_address)))?;
    let (stop_rw, stop_rw_rx) = tokio::sync::oneshot::channel::<()>();
    let rw_router = receive::router(state.clone());
    let rw_server = tokio::spawn(async move {
        axum::serve(listener, rw_router)
            .with_graceful_shutdown(async move {
                let _ = stop_rw_rx.await;
            })
            .await
    });
    tracing::info!(address = %rw_local, "remote write listening on /api/v1/receive and /api/v1/write");
    let own = state.clone();
    let local = crate::flight_cmd::LocalData::receive(&state, Some(Arc::new(move |meta| own.is_own_block(meta))));
    let (flight, flight_registry, after_cut) =
        crate::flight_cmd::serve_beside(bucket, &args.flight_grpc_address, &args.sql, Some(local), None)?;
    let (stop_cutter, stopped) = tokio::sync::oneshot::channel::<()>();
    let cutter = tokio::spawn(cut_loop_then(state.clone(), blocks, cut_every, stopped, after_cut));

    let shutdown = Shutdown::on_signal();
    let mut registries = vec![registry, thanos];
    registries.extend(flight_registry);
    let http = serve_until(&args.http_address, Router::new(), ready, registries, shutdown.clone());
    let grpc = crate::grpc::serve(&args.grpc_address, routes, Some(crate::grpc::storeapi_frames(&api)), shutdown);
    let served = tokio::try_join!(http, grpc, flight);

    // shutdown: stop taking writes, stop the periodic cutter, then cut everything
    sync.abort();
    let _ = stop_rw.send(());
    match rw_server.await {
        Ok(Ok(())) => {}
        Ok(Err(e)) => tracing::warn!("remote write server on {rw_local}: {e}"),
        Err(e) => tracing::warn!("remote write server task: {e}"),
    }
    let _ = stop_cutter.send(());
    let _ = cutter.await;
    let cut = state.cut_all(true).await;
    served?;
    let blocks = cut?;
    tracing::info!(blocks, "heads cut on shutdown");
    Ok(())
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]
    use super::*;

    #[test]
    fn sizes() {
        assert_eq!(parse_size("x", "32MiB").unwrap(), 32 << 20);
        assert_eq!(parse_size("x", "1000").unwrap(), 1000);
        assert_eq!(parse_size("x", "2KB").unwrap(), 2000);
        assert!(parse_size("x", "0").is_err());
        assert!(parse_size("x", "5 parsecs").is_err());
        assert!(parse_size("x", "MiB").is_err());
    }
}
