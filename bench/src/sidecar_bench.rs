//! `bench sidecar`: what the sidecar costs, on promtool-made TSDB blocks of the fleet generator.
//!
//! - Upload: each block is moved (renamed) into the sidecar's `--tsdb.path` as Prometheus completes
//!   one; the lag until its `meta.json` is in the bucket and the sidecar's CPU-seconds (from
//!   `/proc/<pid>/stat`) per million samples shipped, against the plain `strata tsdb convert` of
//!   the same blocks (CPU-seconds of that process) in the same run.
//! - Query: PromQL range queries through `strata query --endpoint <sidecar>` (every sample read by
//!   remote read from the Prometheus, re-encoded as StoreAPI chunks, decoded by the querier) against
//!   the same queries on the Prometheus's own API, as medians of `--runs` alternating runs; the
//!   ratio is the overhead a Thanos-style deployment pays for data still in Prometheus.

use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use ingest::testkit::{Daemon, copy_dir, free_port};

use crate::http_bench::{median, timed};
use crate::util::{promtool_blocks, spec};

/// Arguments of `bench sidecar`.
#[derive(Debug, clap::Args)]
pub(crate) struct Args {
    /// Scrape targets (20 series each).
    #[arg(long, default_value_t = 200)]
    targets: usize,
    /// Hours of data (promtool cuts 2h blocks).
    #[arg(long, default_value_t = 6.0)]
    hours: f64,
    /// Scrape interval in seconds.
    #[arg(long, default_value_t = 15.0)]
    interval: f64,
    /// Timed runs per query and system after one warm-up (the median is kept).
    #[arg(long, default_value_t = 5)]
    runs: usize,
}

/// Clock ticks per second of `/proc/<pid>/stat` (Linux's USER_HZ).
const TICKS: f64 = 100.0;

/// Fields of `/proc/<pid>/stat` after the command name, by index: utime 11, stime 12, cutime 13,
/// cstime 14.
fn proc_stat(pid: &str) -> Result<Vec<u64>, String> {
    let text = std::fs::read_to_string(format!("/proc/{pid}/stat")).map_err(|e| format!("/proc/{pid}/stat: {e}"))?;
    let rest = text.rsplit_once(')').map(|(_, r)| r).ok_or_else(|| format!("/proc/{pid}/stat: no command"))?;
    Ok(rest.split_whitespace().map(|f| f.parse().unwrap_or(0)).collect())
}

/// CPU-seconds (user + system) the process `pid` used so far.
fn cpu_of(pid: u32) -> Result<f64, String> {
    let f = proc_stat(&pid.to_string())?;
    Ok((f.get(11).copied().unwrap_or(0) + f.get(12).copied().unwrap_or(0)) as f64 / TICKS)
}

/// CPU-seconds of this process's waited-for children so far.
fn children_cpu() -> Result<f64, String> {
    let f = proc_stat("self")?;
    Ok((f.get(13).copied().unwrap_or(0) + f.get(14).copied().unwrap_or(0)) as f64 / TICKS)
}

/// The block directories of a TSDB dir with their sample counts and time range, by min time.
fn blocks(dir: &Path) -> Result<Vec<(PathBuf, u64, i64, i64)>, String> {
    let mut out = Vec::new();
    for d in ingest::tsdb::list_blocks(dir).map_err(|e| e.to_string())? {
        let b = ingest::Block::open(&d).map_err(|e| e.to_string())?;
        let m = b.meta();
        out.push((d.clone(), m.stats.num_samples, m.min_time, m.max_time));
    }
    out.sort_by_key(|b| b.2);
    Ok(out)
}

fn bucket_cfg(work: &Path, name: &str) -> Result<PathBuf, String> {
    let p = work.join(format!("{name}.yml"));
    crate::util::write_fs_bucket_config(&p, &work.join(name))?;
    Ok(p)
}

async fn wait_ok(url: &str, within: Duration) -> Result<(), String> {
    let deadline = Instant::now() + within;
    loop {
        if reqwest::get(url).await.is_ok_and(|r| r.status().is_success()) {
            return Ok(());
        }
        if Instant::now() > deadline {
            return Err(format!("{url} not ready after {within:?}"));
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

pub(crate) fn run(a: Args) -> Result<(), String> {
    let work = tempfile::tempdir().map_err(|e| format!("temp dir: {e}"))?;
    let w = work.path();
    let rt = crate::util::runtime()?;
    let prom_blocks = promtool_blocks("sidecar", &spec(a.targets, a.hours, a.interval)?, w, "prom")?;
    let blocks = blocks(&prom_blocks)?;
    let samples: u64 = blocks.iter().map(|b| b.1).sum();
    let strata = std::env::current_exe().map_err(|e| e.to_string())?.with_file_name("strata");

    // Reference: strata tsdb convert of the same blocks.
    let cfg_convert = bucket_cfg(w, "bucket-convert")?;
    let cpu0 = children_cpu()?;
    let t = Instant::now();
    let st = Command::new(&strata)
        .args(["tsdb", "convert", "--tsdb.path"])
        .arg(&prom_blocks)
        .arg("--objstore.config-file")
        .arg(&cfg_convert)
        .args(["--label", "cluster=\"bench\""])
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .status()
        .map_err(|e| format!("{}: {e}", strata.display()))?;
    let convert_wall = t.elapsed().as_secs_f64();
    let convert_cpu = children_cpu()? - cpu0;
    if !st.success() {
        return Err(format!("strata tsdb convert failed: {st}"));
    }

    // Prometheus over a copy of the blocks, with external labels; no scraping, no compaction.
    let promdata = w.join("promdata");
    for b in &blocks {
        let name = b.0.file_name().ok_or("block dir without a name")?;
        copy_dir(&b.0, &promdata.join(name)).map_err(|e| e.to_string())?;
    }
    let pcfg = w.join("prometheus.yml");
    std::fs::write(&pcfg, "global:\n  scrape_interval: 1h\n  external_labels:\n    cluster: bench\n")
        .map_err(|e| e.to_string())?;
    let pport = free_port().map_err(|e| e.to_string())?;
    let purl = format!("http://127.0.0.1:{pport}");
    let _prom = Daemon::spawn(
        Command::new("prometheus")
            .arg(format!("--config.file={}", pcfg.display()))
            .arg(format!("--storage.tsdb.path={}", promdata.display()))
            .arg(format!("--web.listen-address=127.0.0.1:{pport}"))
            .args(["--storage.tsdb.retention.time=100y", "--storage.tsdb.min-block-duration=2h"])
            .arg("--storage.tsdb.max-block-duration=2h"),
        &w.join("prometheus.log"),
    )
    .map_err(|e| format!("{e} (prometheus is in the Debian package `prometheus`)"))?;
    rt.block_on(wait_ok(&format!("{purl}/-/ready"), Duration::from_secs(120)))?;

    // The sidecar ships the blocks as they appear in its (initially empty) --tsdb.path.
    let ship = w.join("ship");
    std::fs::create_dir_all(&ship).map_err(|e| e.to_string())?;
    let cfg_ship = bucket_cfg(w, "bucket-sidecar")?;
    let (shttp, sgrpc) = (
        format!("127.0.0.1:{}", free_port().map_err(|e| e.to_string())?),
        format!("127.0.0.1:{}", free_port().map_err(|e| e.to_string())?),
    );
    let sidecar = Daemon::spawn(
        Command::new(&strata)
            .args(["sidecar", "--prometheus.url", &purl, "--tsdb.path"])
            .arg(&ship)
            .arg("--objstore.config-file")
            .arg(&cfg_ship)
            .args(["--http-address", &shttp, "--grpc-address", &sgrpc, "--prometheus.get_config_interval=1s"]),
        &w.join("sidecar.log"),
    )
    .map_err(|e| e.to_string())?;
    rt.block_on(wait_ok(&format!("http://{shttp}/-/ready"), Duration::from_secs(60)))?;
    let pid = sidecar.0.id();
    let (mut lags, mut sidecar_cpu) = (Vec::new(), 0.0);
    for (dir, _, _, _) in &blocks {
        let name = dir.file_name().ok_or("block dir without a name")?.to_string_lossy().into_owned();
        let staging = ship.join(format!("{name}.tmp-for-creation"));
        copy_dir(dir, &staging).map_err(|e| e.to_string())?;
        let before = cpu_of(pid)?;
        let t = Instant::now();
        std::fs::rename(&staging, ship.join(&name)).map_err(|e| e.to_string())?;
        let meta = w.join("bucket-sidecar").join(&name).join("meta.json");
        while !meta.exists() {
            if t.elapsed() > Duration::from_secs(600) {
                return Err(format!("block {name} not uploaded after 10 minutes"));
            }
            std::thread::sleep(Duration::from_millis(5));
        }
        lags.push(t.elapsed().as_secs_f64());
        sidecar_cpu += cpu_of(pid)? - before;
    }
    let m = samples as f64 / 1e6;
    println!(
        "bench sidecar: {} blocks, {samples} samples ({} targets, {} h at {} s)",
        blocks.len(),
        a.targets,
        a.hours,
        a.interval
    );
    println!(
        "  strata tsdb convert (reference): {convert_wall:.2} s wall, {convert_cpu:.2} CPU-s, {:.3} CPU-s per million samples",
        convert_cpu / m
    );
    let max_lag = lags.iter().copied().fold(0.0, f64::max);
    println!(
        "  sidecar upload: lag per block median {:.2} s, max {max_lag:.2} s (block completed -> meta.json in the bucket; a store sees it at its next sync); {sidecar_cpu:.2} CPU-s, {:.3} CPU-s per million samples = {:.2}x convert",
        median(&mut lags.clone()),
        sidecar_cpu / m,
        sidecar_cpu / convert_cpu.max(1e-9)
    );

    // Query latency through the sidecar vs Prometheus's own API.
    let qhttp = format!("127.0.0.1:{}", free_port().map_err(|e| e.to_string())?);
    let _query = Daemon::spawn(
        Command::new(&strata).args(["query", "--endpoint", &sgrpc, "--http-address", &qhttp]),
        &w.join("query.log"),
    )
    .map_err(|e| e.to_string())?;
    rt.block_on(wait_ok(&format!("http://{qhttp}/-/ready"), Duration::from_secs(60)))?;
    let (start, end) = (blocks[0].2 / 1000, blocks[blocks.len() - 1].3 / 1000 - 1);
    let queries = [
        ("sum by (job) (rate[5m])", "sum by (job) (rate(http_requests_total[5m]))"),
        ("count_over_time(up[10m])", "count_over_time(up[10m])"),
    ];
    let client = reqwest::Client::new();
    for (name, q) in queries {
        let path =
            format!("/api/v1/query_range?query={}&start={start}&end={end}&step=60", ingest::testkit::urlencode(q));
        let (via, direct) = (format!("http://{qhttp}{path}"), format!("{purl}{path}"));
        let (mut s, mut p) = (Vec::new(), Vec::new());
        rt.block_on(async {
            timed(&client, &via, false).await?;
            timed(&client, &direct, false).await?;
            for _ in 0..a.runs {
                s.push(timed(&client, &via, false).await?);
                p.push(timed(&client, &direct, false).await?);
            }
            Ok::<(), String>(())
        })?;
        let (ms, mp) = (median(&mut s), median(&mut p));
        println!(
            "  query {name}, {} h at 60 s: via sidecar {:.1} ms, Prometheus {:.1} ms, ratio {:.2}x",
            a.hours,
            ms * 1e3,
            mp * 1e3,
            ms / mp.max(1e-9)
        );
    }
    Ok(())
}
