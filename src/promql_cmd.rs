//! `strata promql explain '<expr>'`: the DataFusion plans a PromQL expression becomes, and with
//! `--analyze` the same plan run against a bucket with per-operator rows and times.

use std::path::PathBuf;
use std::sync::Arc;

use clap::{Args, Subcommand};
use engine::bucket::Bucket;
use engine::bucket_source::BucketSource;
use engine::{MemSource, SeriesSource};
use query::api::params::{parse_duration, parse_time};

use crate::CliError;

/// PromQL tools.
#[derive(Debug, Subcommand)]
pub(crate) enum PromqlCommand {
    /// Print the logical and physical plans of an expression (and run it with --analyze).
    Explain(ExplainArgs),
}

/// Arguments of `strata promql explain`.
#[derive(Debug, Args)]
pub(crate) struct ExplainArgs {
    /// The PromQL expression.
    expr: String,
    /// Run the plan against the bucket and print per-operator metrics (needs --objstore.config-file).
    #[arg(long)]
    analyze: bool,
    /// Bucket to run against (Thanos objstore YAML).
    #[arg(long = "objstore.config-file")]
    objstore_config_file: Option<PathBuf>,
    /// Evaluation time of an instant query (RFC3339 or unix seconds); default now.
    #[arg(long)]
    time: Option<String>,
    /// Start of a range query (with --end and --step).
    #[arg(long, requires_all = ["end", "step"], conflicts_with = "time")]
    start: Option<String>,
    /// End of a range query.
    #[arg(long, requires_all = ["start", "step"])]
    end: Option<String>,
    /// Step of a range query (duration or float seconds).
    #[arg(long, requires_all = ["start", "end"])]
    step: Option<String>,
}

fn usage(flag: &str, e: impl std::fmt::Display) -> CliError {
    CliError::Usage(format!("--{flag}: {e}"))
}

pub(crate) async fn run(cmd: PromqlCommand) -> Result<(), CliError> {
    let PromqlCommand::Explain(a) = cmd;
    let (start, end, step) = match (&a.start, &a.end, &a.step) {
        (Some(s), Some(e), Some(st)) => (
            parse_time(s).map_err(|e| usage("start", e))?,
            parse_time(e).map_err(|e| usage("end", e))?,
            parse_duration(st).map_err(|e| usage("step", e))?,
        ),
        _ => {
            let t = match &a.time {
                Some(t) => parse_time(t).map_err(|e| usage("time", e))?,
                None => chrono::Utc::now().timestamp_millis(),
            };
            (t, t, 0)
        }
    };
    let source: Arc<dyn SeriesSource> = match &a.objstore_config_file {
        Some(cfg) => {
            let s = BucketSource::new(Bucket::from_config_file(cfg)?);
            s.sync().await?;
            Arc::new(s)
        }
        None if a.analyze => {
            return Err(CliError::Usage("--analyze runs the query: give --objstore.config-file".into()));
        }
        // Planning needs no data: an empty source shows the same plan shape.
        None => Arc::new(MemSource::new()),
    };
    let engine = query::Engine::new(source, query::EngineOptions::default());
    let text = engine
        .explain(&a.expr, start, end, step, a.analyze)
        .await
        .map_err(|e| CliError::Failed(format!("{}: {e}", e.error_type())))?;
    println!("{text}");
    Ok(())
}
