//! `strata flight`: Arrow Flight SQL over the blocks of a bucket (tables `samples`, `series` and
//! one per metric; see the `flight` crate) on `--grpc-address`; `/metrics`, `/-/healthy` and
//! `/-/ready` on `--http-address`.
//!
//! ```text
//!   bucket ──re-read every --sync-block-duration──► SqlCatalog (rebuilt when blocks change)
//!            └─► StrataFlightSql (+ promql(...) from `query`) ──► gRPC (ready after the first sync)
//! ```
//!
//! Defaults: gRPC 127.0.0.1:10911 and HTTP 127.0.0.1:10912, beside the store gateway's 10901/10902.

use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;

use axum::Router;
use clap::Args;
use engine::bucket::Bucket;
use engine::bucket_source::BucketSource;
use engine::{MergedSource, SeriesSource};
use flight::{
    BlockFilter, FlightSqlMetrics, HeadPart, RecentHeads, SqlCatalog, StatementLimits, StrataFlightSql, TableFunction,
};
use ingest::receive::ReceiveState;
use prometheus_client::registry::Registry;

use crate::CliError;
use crate::server::{self, Readiness, Shutdown, SyncMetrics};

/// The SQL flags shared by `strata flight` and `strata up`.
#[derive(Debug, Clone, Args)]
pub(crate) struct SqlArgs {
    /// Most memory one SQL statement may use (DataFusion memory pool; beyond it the statement
    /// fails with RESOURCE_EXHAUSTED); 0 for no limit (KB, MB, GB, KiB, MiB, GiB).
    #[arg(long = "sql.memory-limit", default_value = "1GiB")]
    sql_memory_limit: String,
    /// Longest a SQL statement may run, planning to last batch (beyond it: DEADLINE_EXCEEDED); 0s
    /// for no limit.
    #[arg(long = "sql.timeout", default_value = "2m")]
    sql_timeout: String,
    /// File holding the bearer token Flight SQL clients must send (`authorization: Bearer
    /// <token>`); without it, no authentication.
    #[arg(long = "flight.auth-token-file")]
    flight_auth_token_file: Option<PathBuf>,
}

impl SqlArgs {
    /// True when no SQL flag differs from its default.
    fn is_default(&self) -> bool {
        self.sql_memory_limit == "1GiB" && self.sql_timeout == "2m" && self.flight_auth_token_file.is_none()
    }

    fn limits(&self) -> Result<StatementLimits, CliError> {
        let memory_limit = match self.sql_memory_limit.trim() {
            "0" => None,
            v => Some(crate::receive_cmd::parse_size("sql.memory-limit", v)?),
        };
        let timeout = match self.sql_timeout.trim() {
            "0" | "0s" => None,
            v => Some(crate::query_cmd::duration_flag("sql.timeout", v)?),
        };
        Ok(StatementLimits { memory_limit, timeout })
    }

    fn token(&self) -> Result<Option<String>, CliError> {
        let Some(path) = &self.flight_auth_token_file else { return Ok(None) };
        let text = std::fs::read_to_string(path)
            .map_err(|e| CliError::Failed(format!("--flight.auth-token-file {}: cannot read: {e}", path.display())))?;
        let token = text.trim().to_string();
        if token.is_empty() {
            return Err(CliError::Usage(format!("--flight.auth-token-file {}: the file is empty", path.display())));
        }
        Ok(Some(token))
    }
}

/// Arguments of `strata flight`.
#[derive(Debug, Args)]
pub(crate) struct FlightArgs {
    /// Object storage configuration file (Thanos objstore YAML).
    #[arg(long = "objstore.config-file")]
    objstore_config_file: PathBuf,
    /// Listen address of Arrow Flight SQL (gRPC, host:port).
    #[arg(long = "grpc-address", default_value = "127.0.0.1:10911")]
    grpc_address: String,
    /// Listen address of /metrics, /-/healthy and /-/ready (host:port).
    #[arg(long = "http-address", default_value = "127.0.0.1:10912")]
    http_address: String,
    /// How often the bucket's block list is re-read (the tables are rebuilt when it changed).
    #[arg(long = "sync-block-duration", default_value = "3m")]
    sync_block_duration: String,
    #[command(flatten)]
    sql: SqlArgs,
}

/// A Flight SQL server ready to serve: its routes, the refresh task to run beside it, its catalog.
pub(crate) struct FlightParts {
    pub(crate) routes: tonic::service::Routes,
    pub(crate) refresh: tokio::task::JoinHandle<()>,
    pub(crate) catalog: SqlCatalog,
    /// The bucket as the table functions read it: re-synced with the tables when this server owns
    /// it, by its owner (the query API beside) when shared.
    pub(crate) source: BlocksRead,
}

/// The bucket reader of the `promql(...)` table function and who syncs it.
#[derive(Debug, Clone)]
pub(crate) enum BlocksRead {
    /// Flight SQL's own reader: it re-syncs it with its tables.
    Own(Arc<BucketSource>),
    /// The reader of a query API served beside (`strata up`), which syncs it (also right after a
    /// cut, before the Flight SQL tables are refreshed).
    Shared(Arc<BucketSource>),
}

impl BlocksRead {
    fn source(&self) -> &Arc<BucketSource> {
        match self {
            BlocksRead::Own(s) | BlocksRead::Shared(s) => s,
        }
    }

    /// Re-reads the block list if this server owns the reader.
    async fn sync_own(&self) -> engine::Result<()> {
        match self {
            BlocksRead::Own(s) => s.sync().await,
            BlocksRead::Shared(_) => Ok(()),
        }
    }
}

/// What a component with heads adds to its Flight SQL tables: the heads' recent samples, which
/// blocks of the bucket are its own (all when `None`), and the heads as one series source that
/// `promql(...)` reads merged with the bucket (as the PromQL HTTP API does).
pub(crate) struct LocalData {
    pub(crate) heads: Arc<dyn RecentHeads>,
    pub(crate) blocks: Option<BlockFilter>,
    pub(crate) source: Arc<dyn SeriesSource>,
}

impl LocalData {
    /// The receive heads of `state`, its blocks those `blocks` accepts (all when `None`).
    pub(crate) fn receive(state: &ReceiveState, blocks: Option<BlockFilter>) -> Self {
        LocalData { heads: Arc::new(ReceiveHeads(state.clone())), blocks, source: state.source() }
    }
}

/// The receive heads (one per tenant) as Flight SQL sees them: each tenant's series as its blocks
/// store them, and the tenant's block labels that tell its blocks apart.
#[derive(Debug)]
pub(crate) struct ReceiveHeads(pub(crate) ReceiveState);

#[async_trait::async_trait]
impl RecentHeads for ReceiveHeads {
    async fn heads(&self) -> Vec<HeadPart> {
        let mut out = Vec::new();
        for (tenant, head) in self.0.heads().await {
            let block_labels =
                self.0.tenant_labels(&tenant).iter().map(|l| (l.name.clone(), l.value.clone())).collect();
            let source: Arc<dyn SeriesSource> = head;
            out.push(HeadPart { source, block_labels });
        }
        out
    }
}

/// A hook re-reading the bucket (the tables of `catalog`, the block list of the table functions'
/// `source` when it is Flight SQL's own) after a head cut a block (before the head drops the
/// block's samples), so that SQL never misses them.
pub(crate) fn refresh_after_cut(catalog: SqlCatalog, source: BlocksRead) -> crate::query_cmd::AfterUpload {
    crate::query_cmd::AfterUpload(Arc::new(move || -> futures::future::BoxFuture<'static, ()> {
        let catalog = catalog.clone();
        let source = source.clone();
        Box::pin(async move {
            if let Err(e) = source.sync_own().await {
                tracing::warn!(error = %e, "re-reading the bucket for promql() after a cut failed (next sync shows the block)");
            }
            if let Err(e) = catalog.refresh().await {
                tracing::warn!(error = %e, "SQL tables refresh after a cut failed (the block shows after the next one)");
            }
            // Statements that chose the tables without the block read the head before it drops.
            catalog.settle().await;
        })
    }))
}

/// Builds the Flight SQL service over `bucket` with the table functions of `functions`, its
/// metrics in `registry`, and starts re-reading the bucket every `interval` (ready after the first
/// read).
pub(crate) fn build(
    bucket: Bucket,
    sql: &SqlArgs,
    functions: SqlFunctions,
    interval: Duration,
    registry: &mut Registry,
    ready: Readiness,
    local: Option<LocalData>,
) -> Result<FlightParts, CliError> {
    let mut catalog =
        SqlCatalog::new(bucket, functions.functions, sql.limits()?).map_err(|e| CliError::Failed(e.to_string()))?;
    let source = functions.source.clone();
    if let Some(local) = local {
        catalog = catalog.with_heads(local.heads);
        if let Some(keep) = local.blocks {
            catalog = catalog.with_block_filter(keep);
        }
    }
    let metrics = FlightSqlMetrics::register(registry);
    let sync_metrics = SyncMetrics::register(registry);
    let service = StrataFlightSql::new(catalog.clone(), metrics).map_err(|e| CliError::Failed(e.to_string()))?;
    let routes = flight::server::routes(service, sql.token()?);
    let refresh = tokio::spawn(refresh_loop(catalog.clone(), functions.source, interval, sync_metrics, ready));
    Ok(FlightParts { routes, refresh, catalog, source })
}

/// Re-reads the bucket every `interval` (every 5 s at most until the first success): the SQL
/// tables and the block list of the table functions' source.
async fn refresh_loop(
    catalog: SqlCatalog,
    source: BlocksRead,
    interval: Duration,
    metrics: SyncMetrics,
    ready: Readiness,
) {
    let log = server::SyncLog {
        first: "SQL tables loaded",
        again: None,
        failed: "reading the bucket for the SQL tables failed; will retry",
    };
    server::sync_every(interval, metrics, ready, log, || {
        let (catalog, source) = (catalog.clone(), source.clone());
        async move {
            source.sync_own().await.map_err(flight::Error::from)?;
            catalog.refresh().await
        }
    })
    .await;
}

/// The table functions Strata's SQL has beside DataFusion's, and the bucket source they read.
pub(crate) struct SqlFunctions {
    functions: Vec<TableFunction>,
    source: BlocksRead,
}

/// `promql(expr, start, end, step)` over the blocks `source` reads, merged with `heads` when the
/// server has heads (the bucket wins on equal timestamps, as in the PromQL HTTP API).
pub(crate) fn table_functions(source: BlocksRead, heads: Option<Arc<dyn SeriesSource>>) -> SqlFunctions {
    let blocks: Arc<dyn SeriesSource> = source.source().clone();
    let read: Arc<dyn SeriesSource> = match heads {
        Some(h) => Arc::new(MergedSource::new(vec![blocks, h])),
        None => blocks,
    };
    let promql = query::sql::promql_table_function(read);
    SqlFunctions { functions: vec![("promql".to_string(), promql)], source }
}

/// How often `strata up` and `strata receive` re-read their bucket for the SQL tables (blocks are
/// cut every 2 h, and the tables are re-read right after each cut).
const UP_REFRESH: Duration = Duration::from_secs(30);

/// What [`serve_beside`] returns: the server to await, its metrics, and (when serving) the hook to
/// run after a head cut a block.
type Beside<F> = (F, Option<Registry>, Option<crate::query_cmd::AfterUpload>);

/// Flight SQL over `bucket` (and `local`'s heads) on `address` beside another component
/// (`strata up`, `strata receive`) until SIGINT/SIGTERM; an empty address serves nothing.
/// `promql(...)` reads the blocks through `shared`, the reader of a query API served beside
/// (which syncs it), or through a reader of its own.
pub(crate) fn serve_beside(
    bucket: Bucket,
    address: &str,
    sql: &SqlArgs,
    local: Option<LocalData>,
    shared: Option<Arc<BucketSource>>,
) -> Result<Beside<impl std::future::Future<Output = Result<(), CliError>>>, CliError> {
    let (parts, registry) = if address.is_empty() {
        if !sql.is_default() {
            return Err(CliError::Usage(
                "--sql.memory-limit, --sql.timeout and --flight.auth-token-file apply to Flight SQL, which only \
                 runs with --flight.grpc-address"
                    .into(),
            ));
        }
        (None, None)
    } else {
        let mut registry = server::new_registry("flight");
        let blocks = match shared {
            Some(s) => BlocksRead::Shared(s),
            None => BlocksRead::Own(Arc::new(BucketSource::new(bucket.clone()))),
        };
        let functions = table_functions(blocks, local.as_ref().map(|l| Arc::clone(&l.source)));
        let parts = build(bucket, sql, functions, UP_REFRESH, &mut registry, Readiness::default(), local)?;
        (Some(parts), Some(registry))
    };
    let after_cut = parts.as_ref().map(|p| refresh_after_cut(p.catalog.clone(), p.source.clone()));
    let address = address.to_string();
    let fut = async move {
        let Some(parts) = parts else { return Ok(()) };
        tracing::info!(grpc = %address, "Flight SQL server starting");
        let res = crate::grpc::serve(&address, parts.routes, None, Shutdown::on_signal()).await;
        parts.refresh.abort();
        res
    };
    Ok((fut, registry, after_cut))
}

/// Runs `strata flight` until SIGINT/SIGTERM.
pub(crate) async fn run(args: FlightArgs) -> Result<(), CliError> {
    let interval = crate::query_cmd::duration_flag("sync-block-duration", &args.sync_block_duration)?;
    let bucket = Bucket::from_config_file(&args.objstore_config_file)?;
    tracing::info!(bucket = %bucket.describe(), grpc = %args.grpc_address, "Flight SQL server starting");
    let mut registry = server::new_registry("flight");
    let ready = Readiness::default();
    let functions = table_functions(BlocksRead::Own(Arc::new(BucketSource::new(bucket.clone()))), None);
    let parts = build(bucket, &args.sql, functions, interval, &mut registry, ready.clone(), None)?;
    let shutdown = Shutdown::on_signal();
    let http = server::serve_until(&args.http_address, Router::new(), ready, vec![registry], shutdown.clone());
    let grpc = crate::grpc::serve(&args.grpc_address, parts.routes, None, shutdown);
    let res = tokio::try_join!(http, grpc);
    parts.refresh.abort();
    res.map(|_| ())
}
