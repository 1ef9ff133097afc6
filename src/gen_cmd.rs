//! `strata tools gen`: synthetic fleet data as OpenMetrics text on stdout (the generator is
//! `ingest::datagen`), input for `promtool tsdb create-blocks-from openmetrics`.

use std::io::Write;

use clap::Args;
use ingest::datagen::{GenSpec, write_openmetrics};

use crate::CliError;

/// Arguments of `strata tools gen`.
#[derive(Debug, Args)]
pub(crate) struct GenArgs {
    /// Scrape targets (`instance` values); each has the same 20 series (up, request counters,
    /// memory and temperature gauges, build_info, a classic histogram).
    #[arg(long, default_value_t = 10)]
    targets: usize,
    /// Hours of data from the generator's fixed start, 2023-11-14 22:13:20 UTC (unix 1700000000).
    #[arg(long, default_value_t = 4.0)]
    hours: f64,
    /// Scrape interval in seconds.
    #[arg(long, default_value_t = 15.0)]
    interval: f64,
    /// Random seed: the same arguments always give the same bytes.
    #[arg(long, default_value_t = 42)]
    seed: u64,
}

pub(crate) fn run(a: GenArgs) -> Result<(), CliError> {
    let spec = GenSpec::fleet(a.targets, a.hours, a.interval, a.seed)?;
    let stdout = std::io::stdout();
    let mut w = std::io::BufWriter::new(stdout.lock());
    match write_openmetrics(&spec, &mut w).and_then(|()| w.flush()) {
        // A reader that stops early (`| head`) is not an error, as with any Unix filter.
        Err(e) if e.kind() == std::io::ErrorKind::BrokenPipe => Ok(()),
        r => r.map_err(|e| CliError::Failed(format!("writing OpenMetrics to stdout: {e}"))),
    }
}
