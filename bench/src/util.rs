//! Pieces the benchmark commands share (processes, ports, copies and sizes come from
//! `ingest::testkit`, which the end-to-end tests use too): the data spec and promtool blocks of it.

use std::path::{Path, PathBuf};

use ingest::datagen::{self, GenSpec};

/// True for `*.parquet` files.
pub(crate) fn is_parquet(p: &Path) -> bool {
    p.extension().and_then(|s| s.to_str()) == Some("parquet")
}

/// The spec of `targets` scrape targets over `hours` at `interval` seconds (default seed).
pub(crate) fn spec(targets: usize, hours: f64, interval: f64) -> Result<GenSpec, String> {
    GenSpec::fleet(targets, hours, interval, GenSpec::default().seed).map_err(|e| e.to_string())
}

/// Writes `spec` as OpenMetrics under `work` and makes TSDB blocks of it with
/// `promtool tsdb create-blocks-from openmetrics` into `work/<dir>`; returns that directory.
pub(crate) fn promtool_blocks(bench_name: &str, spec: &GenSpec, work: &Path, dir: &str) -> Result<PathBuf, String> {
    let om = work.join("fleet.om");
    {
        let f = std::fs::File::create(&om).map_err(|e| format!("{}: {e}", om.display()))?;
        let mut w = std::io::BufWriter::new(f);
        datagen::write_openmetrics(spec, &mut w).map_err(|e| format!("{}: {e}", om.display()))?;
    }
    let out = work.join(dir);
    eprintln!(
        "bench {bench_name}: promtool tsdb create-blocks-from openmetrics ({} samples) ...",
        datagen::total_samples(spec)
    );
    ingest::testkit::promtool_blocks(Path::new("promtool"), &om, &out)
        .map_err(|e| format!("{e} (promtool is in the Debian package `prometheus`)"))?;
    Ok(out)
}
