//! gRPC hosting shared by the components: tonic services served on an address with Thanos's message
//! limits (2^31 - 1 bytes both ways; the services are built with them, see
//! [`query::storeapi::server::MAX_MESSAGE_BYTES`]), a tracing span per call, and a graceful shutdown
//! on the same [`Shutdown`] as the HTTP server (calls in flight finish).
//!
//! ```text
//!   StoreApi ─► thanos.Store + thanos.info.Info ─► Routes ─► serve(--grpc-address) until Shutdown
//! ```

use clap::Args;
use std::sync::Arc;

use query::storeapi::frames::FramedStore;
use query::storeapi::server::{RequestLimits, StoreApi};
use tonic::service::Routes;

use crate::CliError;
use crate::server::Shutdown;

/// Thanos's StoreAPI request limits (`--store.limits.*`), flags of every component serving Series.
#[derive(Debug, Clone, Args)]
pub(crate) struct StoreLimitsArgs {
    /// Most series one Series call may return; beyond it the call fails (0: no limit).
    #[arg(long = "store.limits.request-series", default_value_t = 0)]
    request_series: u64,
    /// Most samples one Series call may return; beyond it the call fails (0: no limit).
    #[arg(long = "store.limits.request-samples", default_value_t = 0)]
    request_samples: u64,
}

impl StoreLimitsArgs {
    /// The limits the StoreAPI server enforces.
    pub(crate) fn limits(&self) -> RequestLimits {
        RequestLimits { series: self.request_series, samples: self.request_samples }
    }
}

/// The StoreAPI services (`thanos.Store`, `thanos.info.Info`) of `api`.
pub(crate) fn storeapi_routes(api: &StoreApi) -> Routes {
    Routes::new(api.store_server()).add_service(api.info_server())
}

/// `api`'s Series for Series frames beside its gRPC services.
pub(crate) fn storeapi_frames(api: &StoreApi) -> FramedStore {
    Arc::new(api.clone())
}

/// [`serve`] of `api`'s StoreAPI services alone, its Series over frames as well.
pub(crate) async fn serve_storeapi(address: &str, api: &StoreApi, shutdown: Shutdown) -> Result<(), CliError> {
    serve(address, storeapi_routes(api), Some(storeapi_frames(api)), shutdown).await
}

/// Binds `address` (`--grpc-address`), serves `routes` until `shutdown`, then lets the calls in
/// flight finish. The connections are served by [`query::storeapi::serve`] (HTTP/2 driven with
/// `h2` directly; TCP_NODELAY, a tracing span per call).
///
/// With `frames` (a StoreAPI port of Strata's), its Series is served over Series frames as well
/// ([`query::storeapi::frames`]), which Strata's querier uses when the port's Info advertises them.
pub(crate) async fn serve(
    address: &str,
    routes: Routes,
    frames: Option<FramedStore>,
    shutdown: Shutdown,
) -> Result<(), CliError> {
    let listener = tokio::net::TcpListener::bind(address)
        .await
        .map_err(|e| CliError::Failed(format!("--grpc-address {address}: cannot listen: {e}")))?;
    let local = listener.local_addr().map_err(|e| CliError::Failed(format!("--grpc-address {address}: {e}")))?;
    tracing::info!(address = %local, "gRPC server listening");
    query::storeapi::serve::serve(listener, routes, frames, shutdown.wait()).await;
    tracing::info!("gRPC server stopped");
    Ok(())
}
