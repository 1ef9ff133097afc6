//! Pieces the benchmark commands share: child processes killed on drop, free loopback ports,
//! directory sizes, and synthetic data turned into real TSDB blocks by promtool.

use std::path::{Path, PathBuf};
use std::process::{Child, Command};

/// A child process, killed and reaped on drop.
#[derive(Debug)]
pub(crate) struct Proc(pub(crate) Child);

impl Drop for Proc {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

/// A free loopback TCP port.
pub(crate) fn free_port() -> Result<u16, String> {
    std::net::TcpListener::bind("127.0.0.1:0")
        .and_then(|l| l.local_addr())
        .map(|a| a.port())
        .map_err(|e| format!("no free port: {e}"))
}

/// Bytes of the files under `p` (recursively) that `filter` accepts.
pub(crate) fn dir_bytes(p: &Path, filter: &dyn Fn(&Path) -> bool) -> u64 {
    let mut n = 0;
    if let Ok(rd) = std::fs::read_dir(p) {
        for e in rd.flatten() {
            let path = e.path();
            if path.is_dir() {
                n += dir_bytes(&path, filter);
            } else if filter(&path) {
                n += e.metadata().map(|m| m.len()).unwrap_or(0);
            }
        }
    }
    n
}

/// True for `*.parquet` files.
pub(crate) fn is_parquet(p: &Path) -> bool {
    p.extension().and_then(|s| s.to_str()) == Some("parquet")
}

/// The spec of `targets` scrape targets over `hours` at `interval` seconds.
pub(crate) fn spec(targets: usize, hours: f64, interval: f64) -> bench::datagen::GenSpec {
    bench::datagen::GenSpec {
        targets,
        duration_ms: (hours * 3_600_000.0) as i64,
        interval_ms: (interval * 1000.0) as i64,
        ..Default::default()
    }
}

/// Writes `spec` as OpenMetrics under `work` and makes TSDB blocks of it with
/// `promtool tsdb create-blocks-from openmetrics` into `work/<dir>`; returns that directory.
pub(crate) fn promtool_blocks(
    bench_name: &str,
    spec: &bench::datagen::GenSpec,
    work: &Path,
    dir: &str,
) -> Result<PathBuf, String> {
    promtool_blocks_from(bench_name, spec, work, dir, bench::datagen::write_openmetrics)
}

/// Like [`promtool_blocks`] with another generator (`bench::datagen::write_*_openmetrics`).
pub(crate) fn promtool_blocks_from(
    bench_name: &str,
    spec: &bench::datagen::GenSpec,
    work: &Path,
    dir: &str,
    generate: fn(&bench::datagen::GenSpec, &mut std::io::BufWriter<std::fs::File>) -> std::io::Result<()>,
) -> Result<PathBuf, String> {
    let om = work.join(format!("{dir}.om"));
    {
        let f = std::fs::File::create(&om).map_err(|e| format!("{}: {e}", om.display()))?;
        let mut w = std::io::BufWriter::new(f);
        generate(spec, &mut w).map_err(|e| format!("{}: {e}", om.display()))?;
        std::io::Write::flush(&mut w).map_err(|e| format!("{}: {e}", om.display()))?;
    }
    let out = work.join(dir);
    eprintln!("bench {bench_name}: promtool tsdb create-blocks-from openmetrics ({}) ...", om.display());
    let st = Command::new("promtool")
        .args(["tsdb", "create-blocks-from", "openmetrics"])
        .arg(&om)
        .arg(&out)
        .output()
        .map_err(|e| format!("running promtool (Debian package `prometheus`): {e}"))?;
    if !st.status.success() {
        return Err(format!("promtool failed: {}", String::from_utf8_lossy(&st.stderr)));
    }
    Ok(out)
}

/// Copies the bucket directory `from` to `to` and rewrites every block there into format `format`
/// (the old blocks are then removed), for benchmarks that compare formats on the same data.
pub(crate) async fn format_copy(from: &Path, to: &Path, format: u32) -> Result<(), String> {
    copy_tree(from, to)?;
    let bucket = engine::Bucket::local(to).map_err(|e| e.to_string())?;
    for id in bucket.list_blocks().await.map_err(|e| e.to_string())? {
        if let engine::rewrite::RewriteOutcome::Rewritten { .. } =
            engine::rewrite::rewrite_block(&bucket, &id, format, &|_| {}).await.map_err(|e| e.to_string())?
        {
            bucket.delete_block(&id).await.map_err(|e| e.to_string())?;
        }
    }
    Ok(())
}

/// Recursively copies a directory.
pub(crate) fn copy_tree(from: &Path, to: &Path) -> Result<(), String> {
    std::fs::create_dir_all(to).map_err(|e| format!("{}: {e}", to.display()))?;
    for e in std::fs::read_dir(from).map_err(|e| format!("{}: {e}", from.display()))?.flatten() {
        let t = to.join(e.file_name());
        if e.path().is_dir() {
            copy_tree(&e.path(), &t)?;
        } else {
            std::fs::copy(e.path(), &t).map_err(|err| format!("{}: {err}", e.path().display()))?;
        }
    }
    Ok(())
}

/// Bytes of the TSDB blocks under `dir`: `index` and `chunks/` of ULID-named block directories (not
/// the WAL or the head chunks of a Prometheus data directory).
pub(crate) fn tsdb_bytes(dir: &Path) -> u64 {
    dir_bytes(dir, &|p| {
        let n = p.file_name().and_then(|s| s.to_str()).unwrap_or("");
        let parent = p.parent().and_then(|d| d.file_name()).and_then(|s| s.to_str()).unwrap_or("");
        let grand = p.parent().and_then(|d| d.parent()).and_then(|d| d.file_name()).and_then(|s| s.to_str());
        (n == "index" && ingest::tsdb::is_block_dir_name(parent))
            || (parent == "chunks" && grand.is_some_and(ingest::tsdb::is_block_dir_name))
    })
}
