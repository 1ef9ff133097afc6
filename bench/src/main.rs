//! `cargo run --release -p bench -- <benchmark>`: Strata's benchmarks. Each prints its measurements
//! and the ratio against a reference measured in the same run.

use std::process::ExitCode;

use clap::{Parser, Subcommand};

mod alloc;
mod convert_bench;
mod format_bench;
mod http_bench;
mod promql_bench;
mod receive_bench;
mod util;

#[global_allocator]
static ALLOC: alloc::Counting = alloc::Counting;

#[derive(Debug, Parser)]
#[command(name = "bench", about = "Strata benchmarks and data generators")]
struct Cli {
    #[command(subcommand)]
    command: Cmd,
}

#[derive(Debug, Subcommand)]
enum Cmd {
    /// Write synthetic fleet data as OpenMetrics text to stdout (input for promtool's backfill).
    Gen {
        /// Scrape targets (each has bench::datagen::SERIES_PER_TARGET series).
        #[arg(long, default_value_t = 10)]
        targets: usize,
        /// Hours of data.
        #[arg(long, default_value_t = 4.0)]
        hours: f64,
        /// Scrape interval in seconds.
        #[arg(long, default_value_t = 15.0)]
        interval: f64,
        /// Random seed.
        #[arg(long, default_value_t = 42)]
        seed: u64,
    },
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
}

fn main() -> ExitCode {
    let cli = Cli::parse();
    let res = match cli.command {
        Cmd::Gen { targets, hours, interval, seed } => {
            let spec = bench::datagen::GenSpec {
                targets,
                duration_ms: (hours * 3_600_000.0) as i64,
                interval_ms: (interval * 1000.0) as i64,
                seed,
                ..Default::default()
            };
            let stdout = std::io::stdout();
            let mut w = std::io::BufWriter::new(stdout.lock());
            bench::datagen::write_openmetrics(&spec, &mut w).map_err(|e| format!("writing OpenMetrics: {e}"))
        }
        Cmd::Convert(a) => convert_bench::run(a),
        Cmd::Format(a) => format_bench::run(a),
        Cmd::Promql(a) => promql_bench::run(a),
        Cmd::Receive(a) => receive_bench::run(a),
        Cmd::Http(a) => http_bench::run(a),
    };
    match res {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("bench: {e}");
            ExitCode::FAILURE
        }
    }
}
