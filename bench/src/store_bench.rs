//! `bench store`: the store gateway over many blocks, `strata store` vs Prometheus 2.42 opening the
//! same promtool-made TSDB blocks, measured in the same run: time from start to ready, resident
//! memory once ready (idle), and resident memory after one request that reads every block (StoreAPI
//! Series() over all series and the whole range for Strata; the same as a streamed remote read for
//! Prometheus), with the peak (VmHWM) of the whole run.
//!
//! The data: the fleet generator over `--blocks` x 2 h from a 2 h boundary (promtool cuts one block
//! per 2 h), converted into a filesystem bucket. promtool's backfill parses its whole input once per
//! 2 h window it writes, which is quadratic in the range (1,000 blocks from one file took ~15 minutes
//! on an idle machine), so the range is generated and backfilled in segments of
//! [`BLOCKS_PER_SEGMENT`] blocks, each from its own seed, and the blocks of all segments gathered in
//! one directory: the same blocks in linear time (counters start over at each segment, which a store
//! gateway benchmark does not care about). Issue 11's targets: ready in under 5 s with 1,000 blocks,
//! idle RSS under 200 MiB.
//!
//! The preparation (promtool above all: ~30 minutes of CPU for 1,000 blocks) need not run with the
//! measurement: `--data DIR --prepare-only` makes the blocks and the bucket in DIR and stops (run it
//! at low priority, with any build of the bench), and `--data DIR` later measures over them (the
//! release build, on a quiet machine). Prometheus always opens a copy of the kept blocks, since it
//! compacts the blocks it is given.

use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::{Duration, Instant};

use ingest::testkit::{Daemon, copy_dir, free_port};

use crate::series_bench::{prometheus_read, strata_series};
use ingest::datagen::GenSpec;

use crate::util::{converted_bucket, prometheus_over, promtool_blocks, spec};

/// 2 h, promtool's block range.
const BLOCK_MS: i64 = 2 * 3_600_000;

/// Blocks backfilled by one promtool run (its cost grows with blocks x input size).
const BLOCKS_PER_SEGMENT: usize = 10;

/// Arguments of `bench store`.
#[derive(Debug, clap::Args)]
pub(crate) struct Args {
    /// Number of 2 h blocks.
    #[arg(long, default_value_t = 1000)]
    blocks: usize,
    /// Scrape targets (20 series each).
    #[arg(long, default_value_t = 10)]
    targets: usize,
    /// Scrape interval in seconds.
    #[arg(long, default_value_t = 300.0)]
    interval: f64,
    /// `--index-cache-size` of strata store.
    #[arg(long, default_value = "250MB")]
    index_cache_size: String,
    /// Keep the prepared data (TSDB blocks and the converted bucket) in this directory, and measure
    /// over what an earlier run prepared there with the same --blocks, --targets and --interval
    /// (an empty or new directory is prepared first).
    #[arg(long)]
    data: Option<PathBuf>,
    /// Prepare the data in --data and stop without measuring.
    #[arg(long, requires = "data")]
    prepare_only: bool,
}

/// The file in a `--data` directory that says what was prepared there, written last.
const PREPARED: &str = "prepared.txt";

/// What a preparation made: the TSDB blocks (for Prometheus), the bucket's objstore config (for
/// Strata), and their counts.
#[derive(Debug)]
struct Prepared {
    blocks: PathBuf,
    bucket_cfg: PathBuf,
    n_tsdb: usize,
    converted: usize,
}

impl Prepared {
    /// The parameters a preparation depends on, as the first line of [`PREPARED`].
    fn key(a: &Args) -> String {
        format!("blocks={} targets={} interval={}", a.blocks, a.targets, a.interval)
    }

    /// The preparation kept in `dir` for `a`, if one was finished there.
    fn kept(dir: &Path, a: &Args) -> Result<Option<Prepared>, String> {
        let Ok(text) = std::fs::read_to_string(dir.join(PREPARED)) else { return Ok(None) };
        let mut lines = text.lines();
        if lines.next() != Some(Prepared::key(a).as_str()) {
            return Err(format!(
                "{} holds data prepared with other parameters ({}): give another --data directory",
                dir.display(),
                text.lines().next().unwrap_or_default()
            ));
        }
        let count = |name: &str| -> Result<usize, String> {
            text.lines()
                .find_map(|l| l.strip_prefix(name)?.strip_prefix('='))
                .and_then(|v| v.parse().ok())
                .ok_or_else(|| format!("{}: no {name}= line", dir.join(PREPARED).display()))
        };
        Ok(Some(Prepared {
            blocks: dir.join("blocks"),
            bucket_cfg: dir.join("bucket.yml"),
            n_tsdb: count("tsdb")?,
            converted: count("converted")?,
        }))
    }

    /// Makes the blocks and the bucket of `spec` in `dir` (empty or new) and records them there.
    fn make(dir: &Path, a: &Args, spec: &GenSpec, rt: &tokio::runtime::Runtime) -> Result<Prepared, String> {
        std::fs::create_dir_all(dir).map_err(|e| format!("{}: {e}", dir.display()))?;
        if std::fs::read_dir(dir).map_err(|e| format!("{}: {e}", dir.display()))?.next().is_some() {
            return Err(format!(
                "{} is neither empty nor a finished preparation ({PREPARED} missing): remove it or give another --data directory",
                dir.display()
            ));
        }
        let started = Instant::now();
        let blocks = segmented_blocks(spec, a.blocks, dir)?;
        let n_tsdb = std::fs::read_dir(&blocks)
            .map_err(|e| e.to_string())?
            .flatten()
            .filter(|e| e.path().join("meta.json").is_file())
            .count();
        eprintln!("bench store: {n_tsdb} TSDB blocks made in {:.1} s", started.elapsed().as_secs_f64());
        eprintln!("bench store: converting {n_tsdb} TSDB blocks ...");
        let (bucket_cfg, converted) = converted_bucket(rt, &blocks, dir)?;
        let record = format!("{}\ntsdb={n_tsdb}\nconverted={converted}\n", Prepared::key(a));
        std::fs::write(dir.join(PREPARED), record).map_err(|e| format!("{}: {e}", dir.display()))?;
        Ok(Prepared { blocks, bucket_cfg, n_tsdb, converted })
    }
}

/// `VmRSS` and `VmHWM` of a process, in bytes.
fn rss(pid: u32) -> (u64, u64) {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).unwrap_or_default();
    let field = |name: &str| {
        status
            .lines()
            .find(|l| l.starts_with(name))
            .and_then(|l| l.split_whitespace().nth(1)?.parse::<u64>().ok())
            .map_or(0, |kb| kb * 1024)
    };
    (field("VmRSS:"), field("VmHWM:"))
}

/// What one system measured.
#[derive(Debug, Default)]
struct Measured {
    ready_s: f64,
    idle_rss: u64,
    query_s: f64,
    after_rss: u64,
    peak_rss: u64,
    series: u64,
    samples: u64,
}

/// `spec` over `blocks` x 2 h starting at the first 2 h boundary at or after `spec.start_ms`.
fn whole_range(spec: &GenSpec, blocks: usize) -> GenSpec {
    let start = (spec.start_ms + BLOCK_MS - 1).div_euclid(BLOCK_MS) * BLOCK_MS;
    GenSpec { start_ms: start, duration_ms: blocks as i64 * BLOCK_MS, ..spec.clone() }
}

/// TSDB blocks of `spec` (the range of [`whole_range`], `blocks` x 2 h) made by promtool in
/// segments of [`BLOCKS_PER_SEGMENT`] blocks (see the module docs) and gathered in `work/blocks`.
/// Returns that directory.
fn segmented_blocks(spec: &GenSpec, blocks: usize, work: &Path) -> Result<PathBuf, String> {
    let start = spec.start_ms;
    let out = work.join("blocks");
    std::fs::create_dir_all(&out).map_err(|e| format!("{}: {e}", out.display()))?;
    let segments = blocks.div_ceil(BLOCKS_PER_SEGMENT);
    eprintln!(
        "bench store: promtool tsdb create-blocks-from openmetrics, {segments} segments of {BLOCKS_PER_SEGMENT} blocks ..."
    );
    for i in 0..segments {
        let n = BLOCKS_PER_SEGMENT.min(blocks - i * BLOCKS_PER_SEGMENT);
        let seg = GenSpec {
            start_ms: start + (i * BLOCKS_PER_SEGMENT) as i64 * BLOCK_MS,
            duration_ms: n as i64 * BLOCK_MS,
            seed: spec.seed.wrapping_add(i as u64),
            ..spec.clone()
        };
        let dir = promtool_blocks("store", &seg, work, "segment")?;
        for e in std::fs::read_dir(&dir).map_err(|e| format!("{}: {e}", dir.display()))?.flatten() {
            if e.path().join("meta.json").is_file() {
                let to = out.join(e.file_name());
                std::fs::rename(e.path(), &to)
                    .map_err(|err| format!("{} -> {}: {err}", e.path().display(), to.display()))?;
            }
        }
        std::fs::remove_dir_all(&dir).map_err(|e| format!("{}: {e}", dir.display()))?;
    }
    let om = work.join("segment.om");
    std::fs::remove_file(&om).map_err(|e| format!("{}: {e}", om.display()))?;
    Ok(out)
}

const MIB: f64 = (1u64 << 20) as f64;

pub(crate) fn run(a: Args) -> Result<(), String> {
    if a.blocks == 0 {
        return Err("--blocks must be at least 1".into());
    }
    let work = tempfile::tempdir().map_err(|e| e.to_string())?;
    let spec = whole_range(&spec(a.targets, a.blocks as f64 * 2.0, a.interval)?, a.blocks);
    let rt = crate::util::runtime()?;
    let data = a.data.clone().unwrap_or_else(|| work.path().join("data"));
    let prepared = match Prepared::kept(&data, &a)? {
        Some(p) => {
            eprintln!("bench store: measuring over the data prepared in {}", data.display());
            p
        }
        None => Prepared::make(&data, &a, &spec, &rt)?,
    };
    if a.prepare_only {
        eprintln!("bench store: data prepared in {}", data.display());
        return Ok(());
    }
    let Prepared { blocks: kept_blocks, bucket_cfg: bcfg, n_tsdb, converted } = prepared;
    // Prometheus compacts the blocks it opens: it gets a copy.
    let blocks = work.path().join("prometheus-blocks");
    copy_dir(&kept_blocks, &blocks).map_err(|e| e.to_string())?;
    let (min_t, max_t) = (spec.start_ms, spec.start_ms + spec.duration_ms);
    let port = || free_port().map_err(|e| e.to_string());
    let client = reqwest::Client::new();
    let within = Duration::from_secs(600);

    // Strata first, then Prometheus (never both at once: each gets the machine to itself).
    let strata = {
        let (grpc, http) = (format!("127.0.0.1:{}", port()?), format!("127.0.0.1:{}", port()?));
        let bin = std::env::current_exe().map_err(|e| e.to_string())?.with_file_name("strata");
        let log = work.path().join("store.log");
        let started = Instant::now();
        let mut d = Daemon::spawn(
            Command::new(&bin)
                .args(["store", "--objstore.config-file"])
                .arg(&bcfg)
                .args(["--grpc-address", &grpc, "--http-address", &http])
                .args(["--index-cache-size", &a.index_cache_size]),
            &log,
        )
        .map_err(|e| format!("{e} (cargo build --release --workspace first)"))?;
        rt.block_on(d.wait_http_ok(&format!("http://{http}/-/ready"), within, &log)).map_err(|e| e.to_string())?;
        let ready_s = started.elapsed().as_secs_f64();
        std::thread::sleep(Duration::from_secs(2));
        let pid = d.0.id();
        let idle_rss = rss(pid).0;
        let t = Instant::now();
        let got = rt.block_on(strata_series(&grpc, min_t, max_t))?;
        let query_s = t.elapsed().as_secs_f64();
        let (after_rss, peak_rss) = rss(pid);
        Measured { ready_s, idle_rss, query_s, after_rss, peak_rss, series: got.series, samples: got.samples }
    };
    let prom = {
        let started = Instant::now();
        let (mut d, base, log) = prometheus_over(&blocks, work.path())?;
        rt.block_on(d.wait_http_ok(&format!("{base}/-/ready"), within, &log)).map_err(|e| e.to_string())?;
        let ready_s = started.elapsed().as_secs_f64();
        std::thread::sleep(Duration::from_secs(2));
        let pid = d.0.id();
        let idle_rss = rss(pid).0;
        let t = Instant::now();
        let got = rt.block_on(prometheus_read(&client, &base, min_t, max_t))?;
        let query_s = t.elapsed().as_secs_f64();
        let (after_rss, peak_rss) = rss(pid);
        Measured { ready_s, idle_rss, query_s, after_rss, peak_rss, series: got.series, samples: got.samples }
    };
    if strata.samples != prom.samples || strata.series != prom.series {
        return Err(format!(
            "the answers differ: strata {} series / {} samples, prometheus {} series / {} samples",
            strata.series, strata.samples, prom.series, prom.samples
        ));
    }
    println!(
        "bench store: {} blocks ({} TSDB blocks converted), {} series, {} samples; index-cache-size {}",
        converted, n_tsdb, strata.series, strata.samples, a.index_cache_size
    );
    println!("| | strata store | Prometheus 2.42 | ratio |");
    println!("|---|---|---|---|");
    let row = |what: &str, s: f64, p: f64, unit: &str| {
        println!("| {what} | {s:.2} {unit} | {p:.2} {unit} | {:.2} |", s / p);
    };
    row("start to ready", strata.ready_s, prom.ready_s, "s");
    row("RSS idle (ready + 2 s)", strata.idle_rss as f64 / MIB, prom.idle_rss as f64 / MIB, "MiB");
    row("one read of every series, whole range", strata.query_s, prom.query_s, "s");
    row("RSS after that read", strata.after_rss as f64 / MIB, prom.after_rss as f64 / MIB, "MiB");
    row("peak RSS of the run (VmHWM)", strata.peak_rss as f64 / MIB, prom.peak_rss as f64 / MIB, "MiB");
    Ok(())
}
