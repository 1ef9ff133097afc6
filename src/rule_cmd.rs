//! `strata rule`: the ruler (Thanos rule). Evaluates Prometheus rule files (`--rule-file` globs)
//! through Prometheus HTTP API v1 endpoints (`--query`, round robin, the next one on failure),
//! stores recorded series and `ALERTS` / `ALERTS_FOR_STATE` in its own head (WAL under
//! `--data-dir`), cuts the head into blocks (`thanos.source` "ruler", `--label`s) in the bucket
//! (`--objstore.config-file`, default `<data-dir>/bucket`), serves head and own blocks over the
//! StoreAPI (`--grpc-address`), sends alerts to `--alertmanagers.url`, and answers
//! `/api/v1/rules`, `/api/v1/alerts`, `POST /-/reload` (and SIGHUP), `/metrics`, `/-/healthy`,
//! `/-/ready` on `--http-address`.
//!
//! ```text
//!   rule files ─► query::rules::Manager ─query─► --query endpoints
//!                        │ results                     alerts ─► Alertmanagers
//!                        ▼
//!   ingest::own_head::OwnHead (WAL) ──cut──► bucket ──► StoreAPI (head ∪ own blocks)
//! ```

use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;

use async_trait::async_trait;
use clap::Args;
use engine::bucket::Bucket;
use engine::bucket_source::BucketSource;
use engine::{Labels, MergedSource, SeriesSource};
use ingest::own_head::{OwnHead, OwnHeadOptions};
use query::rules::{
    HttpMethod, HttpQuerier, Manager, ManagerOptions, Notifier, NotifierOptions, ResultSink, RuleEnv, RuleMetrics,
    RuleQuerier,
};
use query::storeapi::server::{StoreApi, StoreApiMetrics, StoreApiOptions};

use crate::CliError;
use crate::query_cmd::{cut_loop, duration_flag, sync_loop};
use crate::server::{Readiness, Shutdown, SyncMetrics, new_registry, serve_until, thanos_registry};

/// Arguments of `strata rule`.
#[derive(Debug, Args)]
pub(crate) struct RuleArgs {
    /// Prometheus HTTP API v1 endpoint the rules are evaluated against (`http://host:port` or
    /// `host:port`; repeatable: round robin, the next one when one fails).
    #[arg(long = "query", value_name = "URL", required = true)]
    query: Vec<String>,
    /// HTTP method of the query requests: POST (form body) or GET.
    #[arg(long = "query.http-method", default_value = "POST", value_parser = ["POST", "GET"])]
    query_http_method: String,
    /// Timeout of one query request.
    #[arg(long = "query.timeout", default_value = "2m")]
    query_timeout: String,
    /// Directory of the ruler's head (WAL); the default bucket is `<data-dir>/bucket`.
    #[arg(long = "data-dir", default_value = "./data")]
    data_dir: PathBuf,
    /// Object storage configuration file (Thanos objstore YAML) the blocks are uploaded to.
    #[arg(long = "objstore.config-file")]
    objstore_config_file: Option<PathBuf>,
    /// Listen address of the HTTP API, /metrics and health endpoints (host:port).
    #[arg(long = "http-address", default_value = "127.0.0.1:10902")]
    http_address: String,
    /// Listen address of the StoreAPI (gRPC, host:port) over the recorded series and alerts.
    #[arg(long = "grpc-address", default_value = "127.0.0.1:10901")]
    grpc_address: String,
    /// Length (and alignment) of the blocks cut from the head.
    #[arg(long = "tsdb.block-duration", default_value = "2h")]
    block_duration: String,
    /// External label of the blocks and alerts, `name="value"` (repeatable).
    #[arg(long = "label")]
    labels: Vec<String>,
    #[command(flatten)]
    rules: RuleCoreArgs,
    #[command(flatten)]
    limits: crate::grpc::StoreLimitsArgs,
}

/// Rule flags shared by `strata rule` and `strata up` (which evaluates rules with its embedded
/// engine when given `--rule-file`).
#[derive(Debug, Clone, Args)]
pub(crate) struct RuleCoreArgs {
    /// Rule file (glob patterns allowed; repeatable), Prometheus's YAML.
    #[arg(long = "rule-file", value_name = "PATH")]
    pub(crate) rule_files: Vec<String>,
    /// Evaluation interval of groups that set no `interval`.
    #[arg(long = "eval-interval", default_value = "1m")]
    eval_interval: String,
    /// Alertmanager base URL (repeatable); alerts go to `<url>/api/v2/alerts`.
    #[arg(long = "alertmanagers.url", value_name = "URL")]
    alertmanagers: Vec<String>,
    /// Timeout of one request to an Alertmanager.
    #[arg(long = "alertmanagers.send-timeout", default_value = "10s")]
    alertmanagers_timeout: String,
    /// Label removed from alerts before they are sent (repeatable), e.g. a replica label.
    #[arg(long = "alert.label-drop")]
    label_drop: Vec<String>,
    /// URL of the query UI: alerts' generatorURL is `<url>/graph?g0.expr=...` and templates see it
    /// as `$externalURL`.
    #[arg(long = "alert.query-url", default_value = "")]
    query_url: String,
    /// Least time between two sends of the same firing alert.
    #[arg(long = "resend-delay", default_value = "1m")]
    resend_delay: String,
    /// Longest outage after which `for` state is still restored from ALERTS_FOR_STATE.
    #[arg(long = "for-outage-tolerance", default_value = "1h")]
    for_outage_tolerance: String,
    /// Least time an alert waits after a restart before it fires again (when its `for` is longer).
    #[arg(long = "for-grace-period", default_value = "10m")]
    for_grace_period: String,
}

impl RuleCoreArgs {
    /// Refuses rule flags given without any `--rule-file` (where nothing would use them).
    pub(crate) fn check_used(&self) -> Result<(), CliError> {
        let defaults = self.eval_interval == "1m"
            && self.alertmanagers.is_empty()
            && self.alertmanagers_timeout == "10s"
            && self.label_drop.is_empty()
            && self.query_url.is_empty()
            && self.resend_delay == "1m"
            && self.for_outage_tolerance == "1h"
            && self.for_grace_period == "10m";
        if self.rule_files.is_empty() && !defaults {
            return Err(CliError::Usage(
                "the rule and alert flags (--eval-interval, --alertmanagers.*, --alert.*, --resend-delay, \
                 --for-*) apply only with --rule-file"
                    .into(),
            ));
        }
        Ok(())
    }
}

fn ms(flag: &str, v: &str) -> Result<i64, CliError> {
    Ok(i64::try_from(duration_flag(flag, v)?.as_millis()).unwrap_or(i64::MAX))
}

/// Rule results appended to the ruler's head.
#[derive(Debug)]
struct HeadSink(OwnHead);

#[async_trait]
impl ResultSink for HeadSink {
    async fn append(&self, samples: Vec<(Labels, i64, f64)>) -> Result<(), String> {
        let r = self.0.append_visible(&samples).map_err(|e| e.to_string())?;
        log_rejected(&r, samples.len());
        Ok(())
    }
    async fn sync(&self) -> Result<(), String> {
        self.0.sync().await.map_err(|e| e.to_string())
    }
}

/// As Prometheus: out-of-order or duplicate rule results are logged, the rest is kept.
fn log_rejected(r: &ingest::receive::AppendOutcome, n: usize) {
    if let Some(e) = &r.first_error {
        tracing::warn!(rejected = n - r.accepted, "some rule results were not stored: {e}");
    }
}

impl RuleCoreArgs {
    /// Builds the manager (not started) over `querier` and `sink`; `restore` is read back for
    /// `for` state; `external` are the external labels (`--label`).
    pub(crate) fn manager(
        &self,
        querier: Arc<dyn RuleQuerier>,
        sink: Arc<dyn ResultSink>,
        restore: Option<Arc<dyn SeriesSource>>,
        external: std::collections::BTreeMap<String, String>,
        metrics: RuleMetrics,
    ) -> Result<Arc<Manager>, CliError> {
        let notifier = Notifier::new(
            NotifierOptions {
                urls: self.alertmanagers.clone(),
                external_labels: Labels::from_pairs(external.clone()),
                label_drop: self.label_drop.clone(),
                query_url: self.query_url.clone(),
                timeout: duration_flag("alertmanagers.send-timeout", &self.alertmanagers_timeout)?,
            },
            metrics.clone(),
        )
        .map_err(CliError::Usage)?;
        let env = RuleEnv {
            querier,
            sink,
            external_labels: external,
            external_url: self.query_url.clone(),
            resend_delay_ms: ms("resend-delay", &self.resend_delay)?,
            metrics,
        };
        let opts = ManagerOptions {
            rule_files: self.rule_files.clone(),
            eval_interval_ms: ms("eval-interval", &self.eval_interval)?,
            for_outage_tolerance_ms: ms("for-outage-tolerance", &self.for_outage_tolerance)?,
            for_grace_period_ms: ms("for-grace-period", &self.for_grace_period)?,
            restore_source: restore,
        };
        Ok(Manager::new(opts, env, notifier))
    }
}

/// Rule results appended to the head of one tenant of an embedded receiver (`strata up`).
#[derive(Debug)]
pub(crate) struct TenantSink {
    pub(crate) state: ingest::receive::ReceiveState,
    pub(crate) tenant: String,
}

#[async_trait]
impl ResultSink for TenantSink {
    async fn append(&self, samples: Vec<(Labels, i64, f64)>) -> Result<(), String> {
        let head = self.state.head(&self.tenant).await.map_err(|e| e.to_string())?;
        let points = engine::head::SinglePoints::new(&samples);
        let r = head.append_visible(&points.series()).await.map_err(|e| e.to_string())?;
        log_rejected(&r, samples.len());
        Ok(())
    }
    async fn sync(&self) -> Result<(), String> {
        let head = self.state.head(&self.tenant).await.map_err(|e| e.to_string())?;
        head.sync().await.map_err(|e| e.to_string())
    }
}

/// Reloads the rules on every SIGHUP.
pub(crate) async fn reload_on_sighup(manager: Arc<Manager>) {
    #[cfg(unix)]
    {
        let mut hup = match tokio::signal::unix::signal(tokio::signal::unix::SignalKind::hangup()) {
            Ok(s) => s,
            Err(e) => {
                tracing::warn!("cannot listen for SIGHUP (reload with POST /-/reload): {e}");
                return;
            }
        };
        while hup.recv().await.is_some() {
            tracing::info!("SIGHUP received, reloading the rule files");
            // the manager logs a failed reload and keeps the rules it has
            let _ = manager.reload().await;
        }
    }
    #[cfg(not(unix))]
    std::future::pending::<()>().await;
}

/// Runs `strata rule` until SIGINT/SIGTERM, then cuts the head into blocks.
pub(crate) async fn run(args: RuleArgs) -> Result<(), CliError> {
    std::fs::create_dir_all(&args.data_dir).map_err(|e| {
        CliError::Failed(format!("--data-dir {}: cannot create the directory: {e}", args.data_dir.display()))
    })?;
    let bucket = match &args.objstore_config_file {
        Some(cfg) => Bucket::from_config_file(cfg)?,
        None => Bucket::local(args.data_dir.join("bucket"))?,
    };
    let block_duration_ms = ms("tsdb.block-duration", &args.block_duration)?;
    if args.rules.rule_files.is_empty() {
        return Err(CliError::Usage("--rule-file: at least one rule file is required".into()));
    }
    let external_map = crate::parse_labels(&args.labels)?;
    let external = Labels::from_pairs(external_map.clone());
    let head = OwnHead::open(OwnHeadOptions {
        dir: args.data_dir.join("head"),
        bucket: bucket.clone(),
        external_labels: external,
        source: "ruler".into(),
        block_duration_ms,
    })
    .await?;
    let method = if args.query_http_method == "GET" { HttpMethod::Get } else { HttpMethod::Post };
    let querier = HttpQuerier::new(&args.query, method, duration_flag("query.timeout", &args.query_timeout)?)
        .map_err(CliError::Usage)?;

    // the ruler's own data: its head and the blocks it cut (on shutdown everything is cut, so the
    // `for` state of a restart is read back from both)
    let own = head.clone();
    let blocks = Arc::new(BucketSource::new(bucket).with_block_filter(Arc::new(move |meta| own.is_own_block(meta))));
    let source: Arc<dyn SeriesSource> = Arc::new(MergedSource::new(vec![blocks.clone(), head.source()]));

    let mut registry = new_registry("rule");
    let mut prom = thanos_registry();
    let metrics = RuleMetrics::register(&mut prom);
    let manager = args.rules.manager(
        Arc::new(querier),
        Arc::new(HeadSink(head.clone())),
        Some(source.clone()),
        external_map,
        metrics,
    )?;
    // a bad rule file at start is an error, as Thanos
    manager.reload().await.map_err(|e| CliError::Usage(format!("--rule-file: {e}")))?;
    let sync_metrics = SyncMetrics::register(&mut registry);
    let api_metrics = StoreApiMetrics::register(&mut registry);
    let ready = Readiness::default();
    let opts = StoreApiOptions { component_type: "rule".into(), limits: args.limits.limits(), ..Default::default() };
    let api = StoreApi::new(source, opts, ready.flag(), api_metrics);
    let sync = tokio::spawn(sync_loop(blocks.clone(), Duration::from_secs(180), sync_metrics, ready.clone()));
    let hup = tokio::spawn(reload_on_sighup(manager.clone()));
    let (stop_cutter, stopped) = tokio::sync::oneshot::channel::<()>();
    let cutter = tokio::spawn(cut_loop(head.clone(), blocks, Duration::from_secs(5), stopped));

    let shutdown = Shutdown::on_signal();
    let routes = query::rules::router(manager.clone());
    let http = serve_until(&args.http_address, routes, ready, vec![registry, prom], shutdown.clone());
    let grpc = crate::grpc::serve_storeapi(&args.grpc_address, &api, shutdown);
    let served = tokio::try_join!(http, grpc);

    manager.stop();
    sync.abort();
    hup.abort();
    let _ = stop_cutter.send(());
    let _ = cutter.await;
    let cut = head.cut_then(true, &|| Box::pin(async {})).await;
    served?;
    let blocks = cut?;
    tracing::info!(blocks, "ruler head cut on shutdown");
    Ok(())
}

/// The ruler embedded in `strata up`: rules evaluated by the embedded engine over the bucket and
/// the receive heads, results appended to the default tenant's head (so they are queried, cut and
/// served like received samples). Returns the rules API routes, the registry of the
/// `prometheus_rule_*` metrics and the running manager.
pub(crate) async fn embedded(
    rules: &RuleCoreArgs,
    engine_args: &crate::query_cmd::EngineArgs,
    bucket: Bucket,
    state: ingest::receive::ReceiveState,
    cut_every: Duration,
) -> Result<(axum::Router, prometheus_client::registry::Registry, Arc<Manager>), CliError> {
    let (config, _) = engine_args.config(std::collections::BTreeMap::new())?;
    let blocks = Arc::new(BucketSource::new(bucket));
    if let Err(e) = blocks.sync().await {
        tracing::warn!("the ruler's first bucket sync failed; will retry: {e}");
    }
    // re-read as often as the heads are cut, so that a cut block is seen soon after its samples
    // leave the head
    let syncing = blocks.clone();
    tokio::spawn(async move {
        loop {
            tokio::time::sleep(cut_every).await;
            if let Err(e) = syncing.sync().await {
                tracing::warn!("the ruler's bucket sync failed; will retry: {e}");
            }
        }
    });
    let source: Arc<dyn SeriesSource> = Arc::new(MergedSource::new(vec![blocks, state.source()]));
    let engine = query::Engine::new(source.clone(), config.engine);
    let mut registry = thanos_registry();
    let metrics = RuleMetrics::register(&mut registry);
    let external = state.options().external_labels.iter().map(|l| (l.name.clone(), l.value.clone())).collect();
    let sink = TenantSink { state: state.clone(), tenant: state.options().default_tenant.clone() };
    let manager = rules.manager(
        Arc::new(query::rules::EngineQuerier(engine)),
        Arc::new(sink),
        // heads and bucket: a shutdown cuts the heads, so a restart finds ALERTS_FOR_STATE in blocks
        Some(source),
        external,
        metrics,
    )?;
    manager.reload().await.map_err(|e| CliError::Usage(format!("--rule-file: {e}")))?;
    tokio::spawn(reload_on_sighup(manager.clone()));
    Ok((query::rules::router(manager.clone()), registry, manager))
}
