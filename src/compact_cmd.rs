//! `strata compact`: the compactor (Thanos compact) over a bucket. One-shot by default; with
//! `--wait` it runs an iteration every `--wait-interval`. `/metrics` (Thanos's `thanos_compact_*`
//! names), `/-/healthy` and `/-/ready` are served on `--http-address` meanwhile. A halt (e.g.
//! overlapping blocks without vertical compaction) ends a one-shot run with the error; with
//! `--wait` the process stays up with `thanos_compact_halted` = 1 until it is stopped.

use std::path::PathBuf;
use std::time::{Duration, Instant};

use axum::Router;
use clap::Args;
use compactor::{Compactor, CompactorOptions, Metrics, Retention};
use engine::bucket::Bucket;
use engine::dedup::DedupFunc;
use prometheus_client::registry::Registry;

use crate::CliError;
use crate::server::{Readiness, Shutdown, new_registry, serve_until, shutdown_signal, thanos_registry};

/// Arguments of `strata compact`.
#[derive(Debug, Args)]
pub(crate) struct CompactArgs {
    /// Object storage configuration file (Thanos objstore YAML).
    #[arg(long = "objstore.config-file")]
    objstore_config_file: PathBuf,
    /// Listen address of /metrics, /-/healthy and /-/ready (host:port).
    #[arg(long = "http-address", default_value = "127.0.0.1:10902")]
    http_address: String,
    /// Do not exit after all compactions have been processed; wait for new work.
    #[arg(short = 'w', long = "wait")]
    wait: bool,
    #[command(flatten)]
    core: CompactCoreArgs,
}

/// Compaction flags shared by `strata compact` and `strata up`.
#[derive(Debug, Clone, Args)]
pub(crate) struct CompactCoreArgs {
    /// Minimum age of fresh (non-compacted) blocks, by ULID time, before they are compacted.
    #[arg(long = "consistency-delay", default_value = "30m")]
    consistency_delay: String,
    /// Time between a block's deletion mark and the deletion of its files; also the age after
    /// which partial uploads (no meta.json) are deleted.
    #[arg(long = "delete-delay", default_value = "48h")]
    delete_delay: String,
    /// Wait between compaction iterations (with --wait, and in `strata up`).
    #[arg(long = "wait-interval", default_value = "5m")]
    wait_interval: String,
    /// Number of groups (streams) compacted at the same time.
    #[arg(long = "compact.concurrency", default_value_t = 1)]
    concurrency: usize,
    /// External label telling replicas apart (repeatable, or comma separated); replica blocks of
    /// one stream are merged into one (vertical compaction). Irreversible.
    #[arg(long = "deduplication.replica-label", value_delimiter = ',')]
    replica_labels: Vec<String>,
    /// How replicas are merged: "" (every sample, equal timestamps once) or "penalty" (Thanos's
    /// penalty algorithm; needs --deduplication.replica-label).
    #[arg(long = "deduplication.func", default_value = "")]
    dedup_func: String,
    /// Merge overlapping blocks of one stream instead of halting on them. Irreversible.
    #[arg(long = "compact.enable-vertical-compaction")]
    vertical: bool,
    /// How long to keep raw blocks after their end; 0d keeps them forever.
    #[arg(long = "retention.resolution-raw", default_value = "0d")]
    retention_raw: String,
    /// How long to keep 5m-downsampled blocks after their end; 0d keeps them forever.
    #[arg(long = "retention.resolution-5m", default_value = "0d")]
    retention_5m: String,
    /// How long to keep 1h-downsampled blocks after their end; 0d keeps them forever.
    #[arg(long = "retention.resolution-1h", default_value = "0d")]
    retention_1h: String,
    /// Do not make 5m and 1h downsampled blocks.
    #[arg(long = "downsampling.disable")]
    downsampling_disable: bool,
    /// Number of blocks downsampled at the same time.
    #[arg(long = "downsample.concurrency", default_value_t = 1)]
    downsample_concurrency: usize,
    /// Highest compaction level: 0=1h, 1=2h, 2=8h, 3=2d, 4=14d (blocks are compacted into the
    /// windows of levels 1 to this one).
    #[arg(long = "debug.max-compaction-level", default_value_t = compactor::plan::MAX_LEVEL, hide = true)]
    max_level: usize,
}

fn duration_ms(flag: &str, v: &str) -> Result<i64, CliError> {
    engine::duration::parse_prometheus_duration(v)
        .ok_or_else(|| CliError::Usage(format!("--{flag} {v:?}: not a duration (e.g. 30m, 48h, 14d)")))
}

impl CompactCoreArgs {
    /// The compactor options the flags ask for, validated.
    pub(crate) fn options(&self) -> Result<CompactorOptions, CliError> {
        let dedup_func = match self.dedup_func.as_str() {
            "" => DedupFunc::Chain,
            "penalty" => DedupFunc::Penalty,
            other => {
                return Err(CliError::Usage(format!(
                    "--deduplication.func {other:?}: unsupported (use \"\" or \"penalty\")"
                )));
            }
        };
        let replica_labels: Vec<String> =
            self.replica_labels.iter().map(|l| l.trim().to_string()).filter(|l| !l.is_empty()).collect();
        let opts = CompactorOptions {
            consistency_delay_ms: duration_ms("consistency-delay", &self.consistency_delay)?,
            delete_delay_ms: duration_ms("delete-delay", &self.delete_delay)?,
            concurrency: self.concurrency,
            replica_labels,
            dedup_func,
            vertical: self.vertical,
            retention: Retention {
                raw_ms: duration_ms("retention.resolution-raw", &self.retention_raw)?,
                res_5m_ms: duration_ms("retention.resolution-5m", &self.retention_5m)?,
                res_1h_ms: duration_ms("retention.resolution-1h", &self.retention_1h)?,
            },
            max_level: self.max_level,
            downsampling: !self.downsampling_disable,
            downsample_concurrency: self.downsample_concurrency,
            ..CompactorOptions::default()
        };
        opts.validated().map_err(|e| CliError::Usage(e.to_string()))
    }

    /// `--wait-interval`.
    pub(crate) fn wait_interval(&self) -> Result<Duration, CliError> {
        let ms = duration_ms("wait-interval", &self.wait_interval)?;
        if ms <= 0 {
            return Err(CliError::Usage("--wait-interval must be positive".into()));
        }
        Ok(Duration::from_millis(ms as u64))
    }

    /// A compactor of `bucket` with these flags, its metrics registered in a new registry
    /// (Thanos's names, no prefix) that is returned beside it.
    pub(crate) fn compactor(&self, bucket: Bucket) -> Result<(Compactor, Registry), CliError> {
        let opts = self.options()?;
        let mut registry = thanos_registry();
        let metrics = Metrics::register(&mut registry);
        let c = Compactor::new(bucket, opts, metrics).map_err(|e| CliError::Usage(e.to_string()))?;
        if let Some((point, n)) = compactor::hooks::configured() {
            tracing::warn!(
                env = compactor::hooks::PAUSE_ENV,
                point,
                occurrence = n,
                "test hook set: the compactor will pause forever at this point"
            );
        }
        let o = c.options();
        if o.vertical {
            tracing::info!(replica_labels = ?o.replica_labels, func = %o.dedup_func, "vertical compaction is enabled");
        }
        for (name, ms) in [("raw", o.retention.raw_ms), ("5m", o.retention.res_5m_ms), ("1h", o.retention.res_1h_ms)] {
            if ms != 0 {
                tracing::info!(resolution = name, ms, "retention policy enabled");
            }
        }
        Ok((c, registry))
    }
}

/// Runs compaction iterations: one (`wait` = None) or one every `wait` until the compactor's stop
/// flag is set. A halt ends a one-shot run with the error; when waiting it sets
/// `thanos_compact_halted` and waits for the stop flag; other errors are retried next time.
pub(crate) async fn compaction_loop(c: Compactor, wait: Option<Duration>) -> Result<(), CliError> {
    let stop = c.stop_flag();
    loop {
        let started = Instant::now();
        match c.run_iteration().await {
            Ok(r) => {
                c.metrics().iterations.inc();
                tracing::info!(
                    compactions = r.compactions,
                    sources_marked = r.sources_marked,
                    covered_marked = r.covered_marked,
                    retention_marked = r.retention_marked,
                    deleted = r.deleted,
                    samples_read = r.samples_read,
                    samples_written = r.samples_written,
                    seconds = format!("{:.3}", started.elapsed().as_secs_f64()),
                    "compaction iteration done"
                );
                if wait.is_none() {
                    return Ok(());
                }
            }
            Err(compactor::Error::Stopped { what }) => {
                tracing::info!(%what, "compaction stopped");
                return Ok(());
            }
            Err(e) if e.is_halt() => {
                tracing::error!(error = %e, "critical error detected; halting");
                if wait.is_none() {
                    return Err(CliError::Failed(e.to_string()));
                }
                c.metrics().halted.set(1);
                stop.stopped().await;
                return Ok(());
            }
            Err(e) => {
                if wait.is_none() {
                    return Err(CliError::Failed(e.to_string()));
                }
                c.metrics().retries.inc();
                tracing::error!(error = %e, "retriable error; trying again after the wait interval");
            }
        }
        let Some(every) = wait else { return Ok(()) };
        tokio::select! {
            _ = tokio::time::sleep(every) => {}
            _ = stop.stopped() => return Ok(()),
        }
    }
}

/// Runs `strata compact`.
pub(crate) async fn run(args: CompactArgs) -> Result<(), CliError> {
    let bucket = Bucket::from_config_file(&args.objstore_config_file)?;
    let wait = if args.wait { Some(args.core.wait_interval()?) } else { None };
    let (c, thanos) = args.core.compactor(bucket.clone())?;
    tracing::info!(bucket = %bucket.describe(), wait = args.wait, "starting compact node");
    let stop = c.stop_flag();
    let (done_tx, done_rx) = tokio::sync::oneshot::channel::<()>();
    let work = tokio::spawn(async move {
        let res = compaction_loop(c, wait).await;
        let _ = done_tx.send(());
        res
    });
    let ready = Readiness::default();
    ready.set_ready();
    let registries = vec![new_registry("compact"), thanos];
    let stop_on_signal = stop.clone();
    let shutdown = Shutdown::when(async move {
        tokio::select! {
            () = shutdown_signal() => stop_on_signal.stop(),
            _ = done_rx => {}
        }
    });
    let served = serve_until(&args.http_address, Router::new(), ready, registries, shutdown).await;
    stop.stop();
    let worked = match work.await {
        Ok(r) => r,
        Err(e) => Err(CliError::Failed(format!("compaction task: {e}"))),
    };
    worked?;
    served
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]
    use super::*;
    use crate::test_flags::parse;

    fn opts(args: &[&str]) -> Result<CompactorOptions, CliError> {
        parse::<CompactCoreArgs>(args).options()
    }

    #[test]
    fn defaults_are_thanos_defaults() {
        let o = opts(&[]).unwrap();
        assert_eq!((o.consistency_delay_ms, o.delete_delay_ms), (30 * 60_000, 48 * 3_600_000));
        assert_eq!((o.concurrency, o.vertical, o.dedup_func), (1, false, DedupFunc::Chain));
        assert_eq!(o.retention, Retention::default());
        assert_eq!(o.max_level, 4);
        assert_eq!(parse::<CompactCoreArgs>(&[]).wait_interval().unwrap(), Duration::from_secs(300));
    }

    #[test]
    fn replica_labels_turn_vertical_compaction_on() {
        let o = opts(&["--deduplication.replica-label=replica,rule_replica", "--deduplication.replica-label", "r3"])
            .unwrap();
        assert_eq!(o.replica_labels, vec!["replica", "rule_replica", "r3"]);
        assert!(o.vertical);
        let o = opts(&["--deduplication.replica-label=replica", "--deduplication.func=penalty"]).unwrap();
        assert_eq!(o.dedup_func, DedupFunc::Penalty);
    }

    #[test]
    fn refuses_what_thanos_refuses() {
        let e = opts(&["--deduplication.func=penalty"]).unwrap_err().to_string();
        assert!(e.contains("replica-label"), "{e}");
        let e = opts(&["--deduplication.func=chain"]).unwrap_err().to_string();
        assert!(e.contains("unsupported"), "{e}");
        let e = opts(&["--retention.resolution-raw=1d"]).unwrap_err().to_string();
        assert!(e.contains("40h"), "{e}");
        let e = opts(&["--retention.resolution-5m=5d"]).unwrap_err().to_string();
        assert!(e.contains("10d"), "{e}");
        assert!(opts(&["--retention.resolution-raw=40h", "--retention.resolution-5m=10d"]).is_ok());
        let e = opts(&["--delete-delay=soon"]).unwrap_err().to_string();
        assert!(e.contains("--delete-delay"), "{e}");
        assert!(opts(&["--compact.concurrency=0"]).is_err());
        assert!(opts(&["--downsample.concurrency=0"]).is_err());
        let o = opts(&["--downsampling.disable", "--downsample.concurrency=3"]).unwrap();
        assert_eq!((o.downsampling, o.downsample_concurrency), (false, 3));
        assert!(opts(&[]).unwrap().downsampling);
        assert!(opts(&["--debug.max-compaction-level=5"]).is_err());
        assert!(parse::<CompactCoreArgs>(&["--wait-interval=0s"]).wait_interval().is_err());
    }
}
