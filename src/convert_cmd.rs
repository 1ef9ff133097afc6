//! `strata tsdb convert`: Prometheus TSDB blocks into Strata blocks, with a progress bar on a terminal
//! and plain log lines otherwise.

use std::io::IsTerminal;
use std::path::PathBuf;
use std::sync::Mutex;

use clap::Args;
use engine::bucket::Bucket;
use indicatif::{ProgressBar, ProgressStyle};
use ingest::convert::{self, ConvertOptions, Outcome, Progress};

use crate::{CliError, parse_labels};

/// Arguments of `strata tsdb convert`.
#[derive(Debug, Args)]
pub(crate) struct ConvertArgs {
    /// Prometheus data directory, or one block directory.
    #[arg(long = "tsdb.path")]
    tsdb_path: PathBuf,
    /// Object storage configuration file (Thanos objstore YAML).
    #[arg(long = "objstore.config-file")]
    objstore_config_file: PathBuf,
    /// External label for the converted blocks, `name="value"` (repeatable).
    #[arg(long = "label")]
    labels: Vec<String>,
}

/// Reports progress on a bar (terminal) or as log lines.
#[derive(Debug)]
struct Reporter {
    bar: Option<ProgressBar>,
    state: Mutex<(u64, u64)>,
}

impl Reporter {
    fn new() -> Self {
        let bar = std::io::stderr().is_terminal().then(|| {
            let b = ProgressBar::new(0);
            let style =
                ProgressStyle::with_template("{prefix} [{bar:30}] {pos}/{len} samples, {msg} ({per_sec}, eta {eta})")
                    .unwrap_or_else(|_| ProgressStyle::default_bar());
            b.set_style(style.progress_chars("=> "));
            b
        });
        Reporter { bar, state: Mutex::new((0, 0)) }
    }

    fn on(&self, p: Progress) {
        let mut st = match self.state.lock() {
            Ok(g) => g,
            Err(e) => e.into_inner(),
        };
        match p {
            // Blocks convert two at a time: the bar counts the samples of every block started.
            Progress::BlockStarted { ulid, series, samples } => {
                st.0 += 1;
                if let Some(b) = &self.bar {
                    b.inc_length(samples);
                    b.set_prefix(format!("{} block(s), last {ulid}", st.0));
                } else {
                    tracing::info!(block = %ulid, series, samples, "converting block");
                }
            }
            Progress::Advanced { series, samples } => {
                st.1 += series;
                if let Some(b) = &self.bar {
                    b.inc(samples);
                    b.set_message(format!("{} series", st.1));
                }
            }
            Progress::BlockFinished { ulid, outcome } => {
                if let Some(b) = &self.bar {
                    b.suspend(|| eprintln!("{}", describe(&ulid, &outcome)));
                } else {
                    match &outcome {
                        Err(e) => tracing::error!(block = %ulid, "conversion failed: {e}"),
                        Ok(_) => tracing::info!("{}", describe(&ulid, &outcome)),
                    }
                }
            }
        }
    }
}

fn describe(ulid: &str, outcome: &Result<Outcome, String>) -> String {
    match outcome {
        Ok(Outcome::Skipped) => format!("block {ulid}: already in the bucket, skipped"),
        Ok(Outcome::Converted { series, samples, elapsed }) => format!(
            "block {ulid}: converted {series} series, {samples} samples in {:.2}s ({:.0} samples/s)",
            elapsed.as_secs_f64(),
            *samples as f64 / elapsed.as_secs_f64().max(1e-9)
        ),
        Err(e) => format!("block {ulid}: FAILED: {e}"),
    }
}

pub(crate) async fn run(a: ConvertArgs) -> Result<(), CliError> {
    let bucket = Bucket::from_config_file(&a.objstore_config_file)?;
    let opts = ConvertOptions { external_labels: parse_labels(&a.labels)?, ..Default::default() };
    let reporter = Reporter::new();
    let report = convert::convert_path(&a.tsdb_path, &bucket, &opts, &|p| reporter.on(p)).await?;
    if let Some(b) = &reporter.bar {
        b.finish_and_clear();
    }
    println!(
        "converted {} block(s) ({} series, {} samples), skipped {}, failed {}",
        report.converted.len(),
        report.series,
        report.samples,
        report.skipped.len(),
        report.failed.len()
    );
    if report.failed.is_empty() {
        Ok(())
    } else {
        let names: Vec<String> = report.failed.iter().map(|(p, e)| format!("{}: {e}", p.display())).collect();
        Err(CliError::Failed(format!("{} block(s) failed:\n  {}", names.len(), names.join("\n  "))))
    }
}
