//! `bench <benchmark>` (built with `cargo build --release --workspace`, run from the target dir):
//! Strata's benchmarks. Each prints its measurements and the ratio against a reference measured in
//! the same run.

use std::process::ExitCode;

use clap::{Parser, Subcommand};

mod alloc;
mod compact_bench;
mod convert_bench;
mod format_bench;
mod http_bench;
mod promql_bench;
mod receive_bench;
mod rule_bench;
mod series_bench;
mod sidecar_bench;
mod sql_bench;
mod store_bench;
mod util;

#[global_allocator]
static ALLOC: alloc::Counting = alloc::Counting;

#[derive(Debug, Parser)]
#[command(name = "bench", about = "Strata benchmarks (synthetic data: `strata tools gen`)")]
struct Cli {
    #[command(subcommand)]
    command: Cmd,
}

#[derive(Debug, Subcommand)]
enum Cmd {
    /// Compactor: 8h and 2-day compactions (samples/s, peak RSS, bytes/sample) and 30-day PromQL on 1h-downsampled vs raw data.
    Compact(compact_bench::Args),
    /// Storage engine: bytes per sample and conversion throughput vs the Prometheus TSDB block.
    Convert(convert_bench::Args),
    /// Storage format: bytes/sample of value layouts on promtool-made and real Prometheus blocks.
    Format(format_bench::Args),
    /// PromQL engine latency, throughput and peak memory over a bucket (10k-series queries).
    Promql(promql_bench::Args),
    /// Remote-write throughput, latency, memory per series and disk bytes: Strata vs Prometheus 2.42 and VictoriaMetrics.
    Receive(receive_bench::Args),
    /// Query-API latency: strata query vs Prometheus 2.42 on the same TSDB blocks.
    Http(http_bench::Args),
    /// StoreAPI Series() throughput as XOR chunks: strata store vs Prometheus 2.42 remote read.
    Series(series_bench::Args),
    /// Sidecar: upload lag and CPU per million samples vs `strata tsdb convert`; query latency
    /// through the sidecar vs Prometheus 2.42's own API.
    Sidecar(sidecar_bench::Args),
    /// Recording rules: evaluation duration per group and CPU, strata up vs Prometheus 2.42.
    Rule(rule_bench::Args),
    /// SQL over a bucket: Flight SQL (ADBC client) vs DuckDB on the same Parquet files.
    Sql(sql_bench::Args),
    /// Store gateway over many blocks: start to ready and memory, strata store vs Prometheus 2.42.
    Store(store_bench::Args),
}

fn main() -> ExitCode {
    let cli = Cli::parse();
    // Warnings of the in-process engine (convert, promql) go to stderr; RUST_LOG overrides.
    let filter = tracing_subscriber::EnvFilter::try_from_default_env()
        .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new("warn"));
    tracing_subscriber::fmt().with_env_filter(filter).with_writer(std::io::stderr).with_target(false).init();
    let res = match cli.command {
        Cmd::Compact(a) => compact_bench::run(a),
        Cmd::Convert(a) => convert_bench::run(a),
        Cmd::Format(a) => format_bench::run(a),
        Cmd::Promql(a) => promql_bench::run(a),
        Cmd::Receive(a) => receive_bench::run(a),
        Cmd::Http(a) => http_bench::run(a),
        Cmd::Series(a) => series_bench::run(a),
        Cmd::Store(a) => store_bench::run(a),
        Cmd::Sidecar(a) => sidecar_bench::run(a),
        Cmd::Rule(a) => rule_bench::run(a),
        Cmd::Sql(a) => sql_bench::run(a),
    };
    match res {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("bench: {e}");
            ExitCode::FAILURE
        }
    }
}
