//! `bench http`: query-API latency, Strata (`strata query` over converted blocks) vs Prometheus 2.42
//! serving the same promtool-made TSDB blocks, measured in the same run over loopback HTTP.
//!
//! Each request runs `--runs` times per system; the best wall time is kept and the ratio
//! Strata/Prometheus printed (issue 4 targets: every ratio <= 1.0, heavy aggregations <= 0.5).
//! Strata's first run is printed too: it is the cold one, before Strata's decoded-page cache
//! holds the pages the request touches. The `gzip` rows send `Accept-Encoding: gzip` to both.

use std::path::Path;
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use engine::bucket::Bucket;
use ingest::convert::{ConvertOptions, convert_path};

use crate::util::{Proc, free_port, promtool_blocks, spec};

/// Arguments of `bench http`.
#[derive(Debug, clap::Args)]
pub(crate) struct Args {
    /// Scrape targets (28 series each; 360 gives about 10k series).
    #[arg(long, default_value_t = 360)]
    targets: usize,
    /// Hours of data.
    #[arg(long, default_value_t = 24.0)]
    hours: f64,
    /// Scrape interval in seconds.
    #[arg(long, default_value_t = 60.0)]
    interval: f64,
    /// Repetitions per request (best kept).
    #[arg(long, default_value_t = 3)]
    runs: usize,
}

fn copy_dir(from: &Path, to: &Path) -> Result<(), String> {
    std::fs::create_dir_all(to).map_err(|e| format!("{}: {e}", to.display()))?;
    for e in std::fs::read_dir(from).map_err(|e| format!("{}: {e}", from.display()))?.flatten() {
        let t = to.join(e.file_name());
        if e.path().is_dir() {
            copy_dir(&e.path(), &t)?;
        } else {
            std::fs::copy(e.path(), &t).map_err(|err| format!("{}: {err}", e.path().display()))?;
        }
    }
    Ok(())
}

async fn wait_ready(client: &reqwest::Client, base: &str, what: &str) -> Result<(), String> {
    let deadline = Instant::now() + Duration::from_secs(120);
    loop {
        if let Ok(r) = client.get(format!("{base}/-/ready")).send().await
            && r.status().is_success()
        {
            return Ok(());
        }
        if Instant::now() > deadline {
            return Err(format!("{what} did not get ready"));
        }
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
}

/// Runs `url` `runs` times; returns the first (cold) and the best wall time in seconds. With
/// `gzip` the request asks for gzip and the compressed body is read as is.
async fn timed(client: &reqwest::Client, url: &str, runs: usize, gzip: bool) -> Result<(f64, f64), String> {
    let (mut first, mut best) = (None, f64::MAX);
    for _ in 0..runs.max(1) {
        let t = Instant::now();
        let mut req = client.get(url);
        if gzip {
            req = req.header("accept-encoding", "gzip");
        }
        let r = req.send().await.map_err(|e| format!("{url}: {e}"))?;
        let status = r.status();
        let compressed = r.headers().get("content-encoding").is_some_and(|v| v.as_bytes() == b"gzip");
        let body = r.bytes().await.map_err(|e| format!("{url}: {e}"))?;
        let elapsed = t.elapsed().as_secs_f64();
        let ok = if compressed {
            gzip && body.starts_with(&[0x1f, 0x8b])
        } else {
            body.windows(9).take(64).any(|w| w == b"\"success\"")
        };
        if !status.is_success() || !ok {
            return Err(format!("{url}: {status} {}", String::from_utf8_lossy(&body[..body.len().min(300)])));
        }
        first.get_or_insert(elapsed);
        best = best.min(elapsed);
    }
    Ok((first.unwrap_or(best), best))
}

fn enc(s: &str) -> String {
    s.bytes()
        .map(|b| match b {
            b'a'..=b'z' | b'A'..=b'Z' | b'0'..=b'9' | b'-' | b'_' | b'.' | b'~' => (b as char).to_string(),
            _ => format!("%{b:02X}"),
        })
        .collect()
}

pub(crate) fn run(a: Args) -> Result<(), String> {
    let work = tempfile::tempdir().map_err(|e| e.to_string())?;
    let spec = spec(a.targets, a.hours, a.interval);
    let prom_blocks = promtool_blocks("http", &spec, work.path(), "blocks")?;
    let rt = tokio::runtime::Builder::new_multi_thread().enable_all().build().map_err(|e| e.to_string())?;

    // Prometheus on a copy of the blocks
    let prom_data = work.path().join("prom");
    copy_dir(&prom_blocks, &prom_data)?;
    let cfg = work.path().join("prometheus.yml");
    std::fs::write(&cfg, "global:\n  scrape_interval: 1h\n").map_err(|e| e.to_string())?;
    let pport = free_port()?;
    let _prom = Proc(
        Command::new("prometheus")
            .arg(format!("--config.file={}", cfg.display()))
            .arg(format!("--storage.tsdb.path={}", prom_data.display()))
            .arg(format!("--web.listen-address=127.0.0.1:{pport}"))
            .arg("--storage.tsdb.retention.time=100y")
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .map_err(|e| format!("prometheus: {e}"))?,
    );
    // Strata over the converted blocks
    let bdir = work.path().join("bucket");
    let bucket = Bucket::local(&bdir).map_err(|e| e.to_string())?;
    let report = rt
        .block_on(convert_path(&prom_blocks, &bucket, &ConvertOptions::default(), &|_| {}))
        .map_err(|e| e.to_string())?;
    if let Some((p, e)) = report.failed.first() {
        return Err(format!("convert {}: {e}", p.display()));
    }
    let bcfg = work.path().join("bucket.yml");
    std::fs::write(&bcfg, format!("type: FILESYSTEM\nconfig:\n  directory: {}\n", bdir.display()))
        .map_err(|e| e.to_string())?;
    let sport = free_port()?;
    let strata_bin = std::env::current_exe().map_err(|e| e.to_string())?.with_file_name("strata");
    let _strata = Proc(
        Command::new(&strata_bin)
            .args(["query", "--objstore.config-file"])
            .arg(&bcfg)
            .args(["--http-address", &format!("127.0.0.1:{sport}")])
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .map_err(|e| format!("{}: {e} (cargo build --release first)", strata_bin.display()))?,
    );
    let client = reqwest::Client::new();
    let (pbase, sbase) = (format!("http://127.0.0.1:{pport}"), format!("http://127.0.0.1:{sport}"));
    rt.block_on(wait_ready(&client, &pbase, "prometheus"))?;
    rt.block_on(wait_ready(&client, &sbase, "strata query"))?;

    let start = spec.start_ms / 1000 + 600;
    let end = (spec.start_ms + spec.duration_ms) / 1000 - 60;
    let hour = end - 3600;
    let range = |q: &str, from: i64| format!("/api/v1/query_range?query={}&start={from}&end={end}&step=60", enc(q));
    // (name, path, heavy aggregation, ask for gzip)
    let cases: Vec<(&str, String, bool, bool)> = vec![
        ("selector 1 series, 1h", range("up{instance=\"host-00000:9100\"}", hour), false, false),
        ("selector 1 series, 1d", range("up{instance=\"host-00000:9100\"}", start), false, false),
        ("selector 100 series, 1h", range("up{instance=~\"host-000[0-9][0-9]:9100\"}", hour), false, false),
        ("selector 100 series, 1d", range("up{instance=~\"host-000[0-9][0-9]:9100\"}", start), false, false),
        ("selector all series, 1h", range("{job=~\".+\"}", hour), false, false),
        ("selector all series, 1d", range("{job=~\".+\"}", start), false, false),
        ("sum by (job) (rate[5m]), 1d", range("sum by (job) (rate(http_requests_total[5m]))", start), true, false),
        (
            "histogram_quantile, 1d",
            range("histogram_quantile(0.9, sum by (le) (rate(request_duration_seconds_bucket[5m])))", start),
            true,
            false,
        ),
        ("topk(10, rate[5m]), 1d", range("topk(10, rate(http_requests_total[5m]))", start), true, false),
        ("label values (instance)", "/api/v1/label/instance/values".to_string(), false, false),
        ("series match[]=up", format!("/api/v1/series?match[]=up&start={start}&end={end}"), false, false),
        ("selector 100 series, 1d, gzip", range("up{instance=~\"host-000[0-9][0-9]:9100\"}", start), false, true),
        ("selector all series, 1d, gzip", range("{job=~\".+\"}", start), false, true),
    ];
    println!(
        "bench http: {} series, {} samples, {} h at {} s; best of {}",
        a.targets * bench::datagen::SERIES_PER_TARGET,
        report.samples,
        a.hours,
        a.interval,
        a.runs
    );
    println!(
        "{:<32} {:>10} {:>13} {:>14} {:>8}  target",
        "request", "strata ms", "strata 1st ms", "prometheus ms", "ratio"
    );
    for (name, path, heavy, gzip) in cases {
        let (s_first, s) = rt.block_on(timed(&client, &format!("{sbase}{path}"), a.runs, gzip))?;
        let (_, p) = rt.block_on(timed(&client, &format!("{pbase}{path}"), a.runs, gzip))?;
        println!(
            "{name:<32} {:>10.1} {:>13.1} {:>14.1} {:>8.2}  <= {}",
            s * 1000.0,
            s_first * 1000.0,
            p * 1000.0,
            s / p.max(1e-9),
            if heavy { "0.5" } else { "1.0" }
        );
    }
    Ok(())
}
