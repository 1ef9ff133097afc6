//! `strata up`: the embedded default. One process on a local directory: the bucket lives in
//! `<data>/bucket` (a FILESYSTEM bucket, created when missing) unless `--objstore.config-file`
//! names another; Prometheus remote write (`/api/v1/write`, `/api/v1/receive`) and the Prometheus
//! query API are served on the same `--http-address`. Received samples live in per-tenant heads
//! under `<data>/receive` (WAL-backed) and are queryable at once; finished blocks are cut into the
//! bucket. The bucket and the heads together are served over the Thanos StoreAPI (gRPC) on
//! `--grpc-address`, so a querier (Strata's or Thanos's) can read them. Unless
//! `--compact.disable`, the compactor (compaction, downsampling, retention) runs on the bucket in
//! the background every `--wait-interval`, with `strata compact`'s flags.

use std::collections::BTreeMap;
use std::path::PathBuf;

use clap::Args;
use engine::bucket::Bucket;

use crate::CliError;
use crate::compact_cmd::{CompactCoreArgs, compaction_loop};
use crate::query_cmd::{EmbeddedReceive, EngineArgs, serve_bucket};
use crate::receive_cmd::{ReceiveCoreArgs, RingOptions};

/// Arguments of `strata up`.
#[derive(Debug, Args)]
pub(crate) struct UpArgs {
    /// Data directory; the bucket is `<data>/bucket` unless --objstore.config-file is given.
    #[arg(long = "data", default_value = "./data")]
    data: PathBuf,
    /// Listen address of the HTTP API (host:port).
    #[arg(long = "http-address", default_value = "127.0.0.1:10902")]
    http_address: String,
    /// Listen address of the StoreAPI (gRPC, host:port) over the bucket and the heads.
    #[arg(long = "grpc-address", default_value = "127.0.0.1:10901")]
    grpc_address: String,
    /// Object storage configuration file (Thanos objstore YAML) to use instead of `<data>/bucket`.
    #[arg(long = "objstore.config-file")]
    objstore_config_file: Option<PathBuf>,
    #[command(flatten)]
    engine: EngineArgs,
    #[command(flatten)]
    receive: ReceiveCoreArgs,
    /// Do not run the compactor (compaction, downsampling, retention) on the bucket.
    #[arg(long = "compact.disable")]
    compact_disable: bool,
    #[command(flatten)]
    compact: CompactCoreArgs,
    #[command(flatten)]
    rules: crate::rule_cmd::RuleCoreArgs,
    /// Listen address of Arrow Flight SQL over the bucket's blocks and the heads' recent samples
    /// (gRPC, host:port, e.g. 127.0.0.1:10911); empty: not served. The --sql.* and --flight.*
    /// flags apply to it.
    #[arg(long = "flight.grpc-address", default_value = "")]
    flight_grpc_address: String,
    #[command(flatten)]
    sql: crate::flight_cmd::SqlArgs,
}

/// Runs `strata up`.
pub(crate) async fn run(args: UpArgs) -> Result<(), CliError> {
    std::fs::create_dir_all(&args.data)
        .map_err(|e| CliError::Failed(format!("--data {}: cannot create the directory: {e}", args.data.display())))?;
    args.rules.check_used()?;
    let mut flags = BTreeMap::from([
        ("data".to_string(), args.data.display().to_string()),
        ("http-address".to_string(), args.http_address.clone()),
        ("grpc-address".to_string(), args.grpc_address.clone()),
    ]);
    let bucket = match &args.objstore_config_file {
        Some(cfg) => {
            flags.insert("objstore.config-file".into(), cfg.display().to_string());
            Bucket::from_config_file(cfg)?
        }
        None => Bucket::local(args.data.join("bucket"))?,
    };
    let (state, cut_every) =
        args.receive.open(&args.data.join("receive"), bucket.clone(), RingOptions::default()).await?;
    // One reader of the blocks for the query API and Flight SQL's promql(): one page cache, one
    // sync per cut (the query API's, before the Flight SQL tables are refreshed).
    let blocks = args.engine.bucket_source(bucket.clone())?;
    let heads = crate::flight_cmd::LocalData::receive(&state, None);
    let (flight, flight_registry, after_cut) = crate::flight_cmd::serve_beside(
        bucket.clone(),
        &args.flight_grpc_address,
        &args.sql,
        Some(heads),
        Some(blocks.clone()),
    )?;
    let (extra_routes, registries, manager) = if args.rules.rule_files.is_empty() {
        (axum::Router::new(), vec![], None)
    } else {
        let (routes, registry, manager) =
            crate::rule_cmd::embedded(&args.rules, &args.engine, bucket.clone(), state.clone(), cut_every).await?;
        (routes, vec![registry], Some(manager))
    };
    let mut registries = registries;
    registries.extend(flight_registry);
    // The compactor: an iteration every --wait-interval until shutdown; a halt keeps it idle (as
    // `strata compact --wait`), the rest of `up` goes on.
    let compactor = if args.compact_disable {
        None
    } else {
        let every = args.compact.wait_interval()?;
        let (c, registry) = args.compact.compactor(bucket.clone())?;
        registries.push(registry);
        flags.insert("wait-interval".into(), format!("{}s", every.as_secs()));
        let stop = c.stop_flag();
        tracing::info!(every_seconds = every.as_secs(), "compactor runs in the background");
        Some((stop, tokio::spawn(compaction_loop(c, Some(every)))))
    };
    flags.insert("compact.disable".into(), args.compact_disable.to_string());
    let receive = EmbeddedReceive { state, cut_every, extra_routes, registries, after_cut };
    let api =
        serve_bucket("up", blocks, &args.http_address, &args.engine, flags, Some(receive), Some(&args.grpc_address));
    let served = tokio::try_join!(api, flight).map(|_| ());
    if let Some(m) = manager {
        m.stop();
    }
    if let Some((stop, task)) = compactor {
        stop.stop();
        match task.await {
            Ok(Err(e)) => tracing::error!(error = %e, "background compactor failed"),
            Err(e) => tracing::error!(error = %e, "background compactor task failed"),
            Ok(Ok(())) => {}
        }
    }
    served
}
