//! `strata`: Prometheus long-term storage on Parquet, DataFusion and Arrow Flight.
//!
//! One binary, one subcommand per component (DESIGN.md §1). This file only parses the command line
//! and wires components together; the logic lives in the workspace crates.

mod cli_tools;
mod compact_cmd;
mod convert_cmd;
mod flight_cmd;
mod gen_cmd;
mod grpc;
mod promql_cmd;
mod query_cmd;
mod receive_cmd;
mod rule_cmd;
mod server;
mod sidecar_cmd;
mod store_cmd;
#[cfg(test)]
mod test_flags;
mod up_cmd;

use std::process::ExitCode;

use clap::{Parser, Subcommand};

/// mimalloc instead of glibc's malloc: a query allocates and frees many small label strings and
/// sample vectors per series, and glibc's allocator (its free-list consolidation in particular)
/// took about half of the CPU time of a small instant query over 1,000 series (docs/benchmarks.md).
#[global_allocator]
static GLOBAL: mimalloc::MiMalloc = mimalloc::MiMalloc;

/// mimalloc v3's `mi_option_purge_delay` (libmimalloc-sys names only some of the options; the
/// value is its place in `mi_option_e`, checked by a test against the option's default).
const MI_OPTION_PURGE_DELAY: libmimalloc_sys::mi_option_t = 15;

/// Makes mimalloc give freed memory back to the system at once instead of after its default delay
/// of one second, unless `MIMALLOC_PURGE_DELAY` is set. `strata compact` frees hundreds of MiB of
/// decoded pages per second: with the delay, a 2-day compaction of 10k series peaked at
/// 0.8-1.4 GiB RSS, without it at about 0.5-0.7 GiB, at the price of 25-45% of its speed
/// (docs/benchmarks.md, Compactor). `strata store` likewise: mimalloc purges on later allocations
/// of the same thread, so the memory freed after a large Series call stayed resident while the
/// gateway was idle (docs/benchmarks.md, Store gateway).
fn purge_freed_memory_at_once() {
    if std::env::var_os("MIMALLOC_PURGE_DELAY").is_none() {
        // SAFETY: sets one integer option of the allocator; called before any other thread exists
        // (mimalloc's option setters are not thread safe).
        unsafe { libmimalloc_sys::mi_option_set(MI_OPTION_PURGE_DELAY, 0) }
    }
}

/// Command line of `strata`.
#[derive(Debug, Parser)]
#[command(name = "strata", version, about = "Prometheus long-term storage on Parquet and DataFusion")]
struct Cli {
    /// Log filtering level (error, warn, info, debug), as Thanos's --log.level.
    #[arg(long = "log.level", default_value = "info", global = true)]
    log_level: String,
    #[command(subcommand)]
    command: Command,
}

#[derive(Debug, Subcommand)]
enum Command {
    /// Prometheus TSDB tools.
    Tsdb {
        #[command(subcommand)]
        command: TsdbCommand,
    },
    /// PromQL tools: explain (and analyze) the DataFusion plan of an expression.
    Promql {
        #[command(subcommand)]
        command: promql_cmd::PromqlCommand,
    },
    /// Operator tools.
    Tools {
        #[command(subcommand)]
        command: ToolsCommand,
    },
    /// The querier: PromQL over StoreAPI endpoints and/or a bucket, as the Prometheus HTTP API v1.
    Query(query_cmd::QueryArgs),
    /// Run Strata in one process on a local directory (the embedded default).
    Up(Box<up_cmd::UpArgs>),
    /// Receive Prometheus remote write into per-tenant heads and cut them into blocks.
    Receive(receive_cmd::ReceiveArgs),
    /// Serve the blocks of a bucket over the Thanos StoreAPI (gRPC): the store gateway.
    Store(store_cmd::StoreArgs),
    /// Evaluate Prometheus recording and alerting rules against query endpoints, store the
    /// results as blocks served over the StoreAPI, and send alerts to Alertmanagers.
    Rule(rule_cmd::RuleArgs),
    /// Compact the blocks of a bucket: merge, deduplicate replicas, downsample, apply retention,
    /// delete marked blocks.
    Compact(compact_cmd::CompactArgs),
    /// Run beside a Prometheus server: upload its blocks to the bucket and serve its recent data
    /// over the StoreAPI (gRPC).
    Sidecar(sidecar_cmd::SidecarArgs),
    /// Serve SQL over the blocks of a bucket with Arrow Flight SQL (ADBC, pyarrow, BI tools).
    Flight(flight_cmd::FlightArgs),
}

#[derive(Debug, Subcommand)]
enum TsdbCommand {
    /// Convert Prometheus TSDB blocks into Strata blocks in a bucket.
    Convert(convert_cmd::ConvertArgs),
}

#[derive(Debug, Subcommand)]
enum ToolsCommand {
    /// Bucket tools: ls, inspect, verify, mark, rewrite.
    Bucket {
        #[command(subcommand)]
        command: cli_tools::BucketCommand,
    },
    /// Write synthetic fleet data as OpenMetrics text to stdout (input for
    /// `promtool tsdb create-blocks-from openmetrics`).
    Gen(gen_cmd::GenArgs),
}

/// Errors the CLI reports before exiting non-zero.
#[derive(Debug, thiserror::Error)]
enum CliError {
    #[error(transparent)]
    Engine(#[from] engine::Error),
    #[error(transparent)]
    Ingest(#[from] ingest::Error),
    #[error("{0}")]
    Usage(String),
    #[error("{0}")]
    Failed(String),
}

fn init_logging(level: &str) {
    // Our crates log at the chosen level; dependencies (DataFusion, object_store, ...) only warn.
    let ours =
        format!("warn,strata={level},engine={level},ingest={level},query={level},compactor={level},flight={level}");
    let filter = tracing_subscriber::EnvFilter::try_from_default_env()
        .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new(ours));
    tracing_subscriber::fmt().with_env_filter(filter).with_writer(std::io::stderr).with_target(false).init();
}

fn main() -> ExitCode {
    let cli = Cli::parse();
    if matches!(cli.command, Command::Compact(_) | Command::Store(_)) {
        purge_freed_memory_at_once();
    }
    init_logging(&cli.log_level);
    let rt = match tokio::runtime::Builder::new_multi_thread().enable_all().build() {
        Ok(rt) => rt,
        Err(e) => {
            eprintln!("strata: cannot start the async runtime: {e}");
            return ExitCode::FAILURE;
        }
    };
    let res = rt.block_on(async {
        match cli.command {
            Command::Tsdb { command: TsdbCommand::Convert(args) } => convert_cmd::run(args).await,
            Command::Tools { command: ToolsCommand::Bucket { command } } => cli_tools::run_bucket(command).await,
            Command::Tools { command: ToolsCommand::Gen(args) } => gen_cmd::run(args),
            Command::Promql { command } => promql_cmd::run(command).await,
            Command::Query(args) => query_cmd::run(args).await,
            Command::Up(args) => up_cmd::run(*args).await,
            Command::Receive(args) => receive_cmd::run(args).await,
            Command::Store(args) => store_cmd::run(args).await,
            Command::Compact(args) => compact_cmd::run(args).await,
            Command::Sidecar(args) => sidecar_cmd::run(args).await,
            Command::Rule(args) => rule_cmd::run(args).await,
            Command::Flight(args) => flight_cmd::run(args).await,
        }
    });
    match res {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("strata: {e}");
            ExitCode::FAILURE
        }
    }
}

/// Parses Thanos-style external label flags (`name="value"`) into a map.
fn parse_labels(flags: &[String]) -> Result<std::collections::BTreeMap<String, String>, CliError> {
    let mut out = std::collections::BTreeMap::new();
    for f in flags {
        let (name, raw) =
            f.split_once('=').ok_or_else(|| CliError::Usage(format!("--label {f:?}: expected name=\"value\"")))?;
        let name = name.trim();
        let valid_name = !name.is_empty()
            && name
                .chars()
                .enumerate()
                .all(|(i, c)| c == '_' || c.is_ascii_alphabetic() || (i > 0 && c.is_ascii_digit()));
        if !valid_name {
            return Err(CliError::Usage(format!("--label {f:?}: invalid label name {name:?}")));
        }
        let value: String = serde_json::from_str(raw.trim())
            .map_err(|_| CliError::Usage(format!("--label {f:?}: the value must be a double-quoted string")))?;
        if out.insert(name.to_string(), value).is_some() {
            return Err(CliError::Usage(format!("--label {f:?}: label {name:?} given twice")));
        }
    }
    Ok(out)
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]
    use super::*;

    /// Option 15 is the purge delay: its documented default (1000 ms in mimalloc v3) until set.
    #[test]
    fn purge_delay_option_is_the_one_set() {
        if std::env::var_os("MIMALLOC_PURGE_DELAY").is_some() {
            return;
        }
        // SAFETY: reads one integer option.
        let before = unsafe { libmimalloc_sys::mi_option_get(MI_OPTION_PURGE_DELAY) };
        assert_eq!(before, 1000);
        purge_freed_memory_at_once();
        // SAFETY: as above.
        assert_eq!(unsafe { libmimalloc_sys::mi_option_get(MI_OPTION_PURGE_DELAY) }, 0);
    }

    #[test]
    fn label_flags() {
        let m = parse_labels(&["cluster=\"eu1\"".into(), "replica=\"a \\\"b\\\"\"".into()]).unwrap();
        assert_eq!(m["cluster"], "eu1");
        assert_eq!(m["replica"], "a \"b\"");
        assert!(parse_labels(&["cluster=eu1".into()]).is_err());
        assert!(parse_labels(&["1x=\"a\"".into()]).is_err());
        assert!(parse_labels(&["a=\"1\"".into(), "a=\"2\"".into()]).is_err());
    }
}
