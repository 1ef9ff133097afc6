//! `bench receive`: the same remote-write load against Strata (`strata up`), Prometheus 2.42
//! (`--web.enable-remote-write-receiver`) and VictoriaMetrics, each started fresh on loopback.
//!
//! Load: `--series` series split over `--clients` concurrent writers; each request carries
//! `--series-per-request` series with `--samples-per-series` samples each (timestamps advance 1 s per
//! sample, starting 50 minutes ago so every system accepts them). The generator costs little, and
//! the same for every system: each request's protobuf is encoded once, before the clock starts, as a
//! template with fixed-width timestamp and value fields; per send it only patches those bytes in
//! place and snappy-compresses the result. Printed per system: acknowledged
//! samples/s, p50/p99 request latency, resident memory growth per active series (at the end, and once
//! every system holds the same `--memory-at-samples-per-series` samples per series), and (Strata) bytes
//! per sample of the block cut at shutdown; then the ratios Strata/Prometheus and Strata/VM.

use std::path::{Path, PathBuf};
use std::process::Command;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant};

use engine::Labels;

use ingest::testkit::{Daemon, dir_bytes, free_port};

use crate::util::is_parquet;

/// Arguments of `bench receive`.
#[derive(Debug, Clone, clap::Args)]
pub(crate) struct Args {
    /// Active series.
    #[arg(long, default_value_t = 20_000)]
    series: usize,
    /// Concurrent writers.
    #[arg(long, default_value_t = 8)]
    clients: usize,
    /// Series per request.
    #[arg(long, default_value_t = 100)]
    series_per_request: usize,
    /// Samples per series per request.
    #[arg(long, default_value_t = 10)]
    samples_per_series: usize,
    /// Seconds of load per system.
    #[arg(long, default_value_t = 15)]
    seconds: u64,
    /// Samples per series at which resident memory is also taken, so systems are compared holding
    /// the same data (a faster system holds more samples at the end of the timed load).
    #[arg(long, default_value_t = 300)]
    memory_at_samples_per_series: u64,
    /// The strata binary (default: next to this bench binary).
    #[arg(long)]
    strata: Option<PathBuf>,
}

fn rss_bytes(pid: u32) -> u64 {
    std::fs::read_to_string(format!("/proc/{pid}/status"))
        .ok()
        .and_then(|s| {
            s.lines().find(|l| l.starts_with("VmRSS:")).and_then(|l| l.split_whitespace().nth(1)?.parse::<u64>().ok())
        })
        .map(|kb| kb * 1024)
        .unwrap_or(0)
}

struct Target {
    proc: Daemon,
    log: PathBuf,
    write_url: String,
    ready_url: String,
}

fn start(name: &'static str, a: &Args, dir: &Path) -> Result<Target, String> {
    let port = free_port().map_err(|e| e.to_string())?;
    let addr = format!("127.0.0.1:{port}");
    let base = format!("http://{addr}");
    let log = dir.with_extension("log");
    let spawn = |cmd: &mut Command| Daemon::spawn(cmd, &log);
    let (child, write, ready) = match name {
        "strata" => {
            let bin = match &a.strata {
                Some(b) => b.clone(),
                None => std::env::current_exe().map_err(|e| e.to_string())?.with_file_name("strata"),
            };
            let grpc = format!("127.0.0.1:{}", free_port().map_err(|e| e.to_string())?);
            let c = spawn(
                Command::new(&bin)
                    .args(["up", "--data"])
                    .arg(dir)
                    .args(["--http-address", &addr])
                    .args(["--grpc-address", &grpc]),
            )
            .map_err(|e| format!("{}: {e} (build it with cargo build --release)", bin.display()))?;
            (c, format!("{base}/api/v1/write"), format!("{base}/-/ready"))
        }
        "prometheus" => {
            let cfg = dir.join("prometheus.yml");
            std::fs::create_dir_all(dir).map_err(|e| e.to_string())?;
            std::fs::write(&cfg, "global:\n  scrape_interval: 1h\n").map_err(|e| e.to_string())?;
            let c = spawn(
                Command::new("prometheus")
                    .arg(format!("--config.file={}", cfg.display()))
                    .arg(format!("--storage.tsdb.path={}", dir.join("data").display()))
                    .arg(format!("--web.listen-address={addr}"))
                    .arg("--web.enable-remote-write-receiver"),
            )
            .map_err(|e| format!("prometheus (Debian package `prometheus`): {e}"))?;
            (c, format!("{base}/api/v1/write"), format!("{base}/-/ready"))
        }
        _ => {
            let c = spawn(
                Command::new("victoria-metrics")
                    .arg(format!("-httpListenAddr={addr}"))
                    .arg(format!("-storageDataPath={}", dir.display()))
                    .arg("-search.latencyOffset=0s"),
            )
            .map_err(|e| format!("victoria-metrics (Debian package `victoria-metrics`): {e}"))?;
            (c, format!("{base}/api/v1/write"), format!("{base}/health"))
        }
    };
    Ok(Target { proc: child, log, write_url: write, ready_url: ready })
}

/// Timestamps between 2^35 and 2^42 ms (1971 to 2109) take exactly 6 varint bytes, so they can be
/// patched in place.
const TS_VARINT_LEN: usize = 6;

/// A pre-encoded `prometheus.WriteRequest` whose sample timestamps and values are patched per send.
struct Template {
    proto: Vec<u8>,
    /// Offsets of each sample's 6-byte timestamp varint and 8-byte value, per series in order.
    slots: Vec<(usize, usize)>,
    samples_per_series: usize,
    samples: usize,
}

fn put_uvarint(b: &mut Vec<u8>, mut x: u64) {
    while x >= 0x80 {
        b.push((x as u8) | 0x80);
        x >>= 7;
    }
    b.push(x as u8);
}

fn put_len_field(b: &mut Vec<u8>, tag: u8, body: &[u8]) {
    b.push(tag);
    put_uvarint(b, body.len() as u64);
    b.extend_from_slice(body);
}

impl Template {
    /// Encodes the series with placeholder samples; every sample has both fields present (protobuf
    /// allows default values on the wire), the timestamp as a 6-byte varint.
    fn new(series: &[Labels], samples_per_series: usize) -> Template {
        let mut proto = Vec::new();
        let mut slots = Vec::new();
        for l in series {
            let mut ts = Vec::new();
            for lab in l.iter() {
                let mut lb = Vec::new();
                put_len_field(&mut lb, 0x0a, lab.name.as_bytes());
                put_len_field(&mut lb, 0x12, lab.value.as_bytes());
                put_len_field(&mut ts, 0x0a, &lb);
            }
            let mut rel = Vec::new();
            for _ in 0..samples_per_series {
                // Sample: field 1 value (fixed64), field 2 timestamp (varint): 2 + 8 + 1 + 6 bytes.
                ts.push(0x12);
                ts.push((1 + 8 + 1 + TS_VARINT_LEN) as u8);
                ts.push(0x09);
                let v_at = ts.len();
                ts.extend_from_slice(&[0; 8]);
                ts.push(0x10);
                let t_at = ts.len();
                ts.extend_from_slice(&[0x80, 0x80, 0x80, 0x80, 0x80, 0x01]);
                rel.push((t_at, v_at));
            }
            proto.push(0x0a);
            put_uvarint(&mut proto, ts.len() as u64);
            let base = proto.len();
            proto.extend_from_slice(&ts);
            slots.extend(rel.into_iter().map(|(t, v)| (base + t, base + v)));
        }
        Template { proto, slots, samples_per_series, samples: series.len() * samples_per_series }
    }

    /// The snappy-compressed body of one send: sample `k` of every series at `base_t + k s`, value
    /// `round * 7 + k`. `None` when a timestamp does not fit the fixed width.
    fn body(&mut self, base_t: i64, round: i64) -> Option<Vec<u8>> {
        for (i, &(t_at, v_at)) in self.slots.iter().enumerate() {
            let k = (i % self.samples_per_series) as i64;
            let t = u64::try_from(base_t + k * 1000).ok().filter(|t| (1u64 << 35..1u64 << 42).contains(t))?;
            let mut x = t;
            for j in 0..TS_VARINT_LEN {
                let last = j + 1 == TS_VARINT_LEN;
                self.proto[t_at + j] = (x & 0x7f) as u8 | if last { 0 } else { 0x80 };
                x >>= 7;
            }
            self.proto[v_at..v_at + 8].copy_from_slice(&((round * 7 + k) as f64).to_le_bytes());
        }
        ingest::remote_write::compress(&self.proto).ok()
    }
}

/// One system's results.
#[derive(Debug, Default, Clone)]
struct Outcome {
    samples_per_s: f64,
    p50_ms: f64,
    p99_ms: f64,
    rss_per_series: f64,
    /// RSS growth per series when `memory_at_samples_per_series` samples per series were acknowledged
    /// (None when the load never got there).
    rss_per_series_equal: Option<f64>,
    bytes_per_sample: Option<f64>,
}

async fn run_one(name: &'static str, a: &Args) -> Result<Outcome, String> {
    let work = tempfile::tempdir().map_err(|e| e.to_string())?;
    let dir = work.path().join(name);
    let mut t = start(name, a, &dir)?;
    t.proc.wait_http_ok(&t.ready_url, Duration::from_secs(60), &t.log).await.map_err(|e| format!("{name}: {e}"))?;
    let client = reqwest::Client::new();
    let pid = t.proc.0.id();
    let idle_rss = rss_bytes(pid);
    let now_ms =
        std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).map_err(|e| e.to_string())?.as_millis()
            as i64;
    let start_ts = now_ms - 50 * 60_000;
    let acked = Arc::new(AtomicU64::new(0));
    let stop_at = Instant::now() + Duration::from_secs(a.seconds);
    // Resident memory once every system holds the same number of samples.
    let equal_target = a.memory_at_samples_per_series.saturating_mul(a.series as u64);
    let watcher = {
        let acked = acked.clone();
        tokio::spawn(async move {
            while Instant::now() < stop_at {
                if acked.load(Ordering::Relaxed) >= equal_target {
                    return Some(rss_bytes(pid));
                }
                tokio::time::sleep(Duration::from_millis(20)).await;
            }
            None
        })
    };
    let mut tasks = Vec::new();
    for c in 0..a.clients {
        let (client, url, acked) = (client.clone(), t.write_url.clone(), acked.clone());
        let a = a.clone();
        let mine: Vec<Labels> = (c..a.series)
            .step_by(a.clients)
            .map(|i| {
                Labels::from_pairs([
                    ("__name__", format!("bench_metric_{}", i % 50)),
                    ("instance", format!("host-{:05}", i / 50)),
                    ("job", "bench".to_string()),
                ])
            })
            .collect();
        let mut templates: Vec<Template> =
            mine.chunks(a.series_per_request.max(1)).map(|g| Template::new(g, a.samples_per_series)).collect();
        tasks.push(tokio::spawn(async move {
            let mut lat = Vec::new();
            let mut round = 0i64;
            'outer: while Instant::now() < stop_at {
                for tpl in &mut templates {
                    let base_t = start_ts + round * a.samples_per_series as i64 * 1000;
                    let Some(body) = tpl.body(base_t, round) else { break 'outer };
                    let t0 = Instant::now();
                    let r = ingest::remote_write::post(&client, &url, body).send().await;
                    lat.push(t0.elapsed().as_secs_f64());
                    if let Ok(r) = r
                        && r.status().is_success()
                    {
                        acked.fetch_add(tpl.samples as u64, Ordering::Relaxed);
                    }
                    if Instant::now() >= stop_at {
                        break 'outer;
                    }
                }
                round += 1;
            }
            lat
        }));
    }
    let mut lat = Vec::new();
    for t in tasks {
        lat.extend(t.await.map_err(|e| e.to_string())?);
    }
    let elapsed = a.seconds as f64;
    lat.sort_by(f64::total_cmp);
    let pct = |p: f64| lat.get(((lat.len() as f64 - 1.0) * p).round() as usize).copied().unwrap_or(0.0) * 1000.0;
    let rss = rss_bytes(pid);
    let mut out = Outcome {
        samples_per_s: acked.load(Ordering::Relaxed) as f64 / elapsed,
        p50_ms: pct(0.5),
        p99_ms: pct(0.99),
        rss_per_series: rss.saturating_sub(idle_rss) as f64 / a.series as f64,
        rss_per_series_equal: watcher
            .await
            .map_err(|e| e.to_string())?
            .map(|r| r.saturating_sub(idle_rss) as f64 / a.series as f64),
        bytes_per_sample: None,
    };
    if name == "strata" {
        // SIGTERM: strata up cuts its heads into a block; then measure the Parquet bytes.
        t.proc.terminate(Duration::from_secs(120)).await.map_err(|e| format!("strata up: {e}"))?;
        let bytes = dir_bytes(&dir.join("bucket"), &is_parquet);
        let samples = acked.load(Ordering::Relaxed).max(1);
        out.bytes_per_sample = Some(bytes as f64 / samples as f64);
    }
    Ok(out)
}

pub(crate) fn run(a: Args) -> Result<(), String> {
    let rt = crate::util::runtime()?;
    let mut results = Vec::new();
    for name in ["strata", "prometheus", "victoria-metrics"] {
        eprintln!("bench receive: {name} ...");
        let o = rt.block_on(run_one(name, &a))?;
        results.push((name, o));
    }
    println!(
        "bench receive: {} series, {} clients, {} samples per request, {} s per system",
        a.series,
        a.clients,
        a.series_per_request * a.samples_per_series,
        a.seconds
    );
    let equal_col = format!("RSS B/s @{}", a.memory_at_samples_per_series);
    println!(
        "{:<18} {:>14} {:>9} {:>9} {:>14} {:>14} {:>14}",
        "system", "samples/s", "p50 ms", "p99 ms", "RSS B/series", equal_col, "disk B/sample"
    );
    let show = |x: Option<f64>, digits: usize| x.map(|b| format!("{b:.digits$}")).unwrap_or_else(|| "n/a".into());
    for (n, o) in &results {
        println!(
            "{n:<18} {:>14.0} {:>9.2} {:>9.2} {:>14.0} {:>14} {:>14}",
            o.samples_per_s,
            o.p50_ms,
            o.p99_ms,
            o.rss_per_series,
            show(o.rss_per_series_equal, 0),
            show(o.bytes_per_sample, 3)
        );
    }
    println!(
        "(RSS B/series: growth at the end of the timed load, when faster systems hold more samples; RSS B/s @{0}: \
         growth per series once {0} samples per series were acknowledged, the same data for every system)",
        a.memory_at_samples_per_series
    );
    let s = &results[0].1;
    for (n, o) in &results[1..] {
        let equal = match (s.rss_per_series_equal, o.rss_per_series_equal) {
            (Some(x), Some(y)) => format!("{:.2}x", x / y.max(1e-9)),
            _ => "n/a".into(),
        };
        println!(
            "strata / {n:<17} throughput {:.2}x (target >= {}), p99 {:.2}x, RSS per series {:.2}x, at equal samples {equal} (target < 1)",
            s.samples_per_s / o.samples_per_s.max(1e-9),
            if *n == "prometheus" { "1.5" } else { "1.0" },
            s.p99_ms / o.p99_ms.max(1e-9),
            s.rss_per_series / o.rss_per_series.max(1e-9)
        );
    }
    Ok(())
}

#[cfg(test)]
#[allow(clippy::unwrap_used, clippy::expect_used)]
mod tests {
    use super::*;

    #[test]
    fn template_decodes_like_the_encoded_request() {
        let series: Vec<Labels> = (0..3)
            .map(|i| Labels::from_pairs([("__name__", "m".to_string()), ("instance", format!("h{i}"))]))
            .collect();
        let mut tpl = Template::new(&series, 4);
        let base = 1_800_000_000_000;
        for round in [0i64, 5] {
            let body = tpl.body(base + round, round).unwrap();
            let got = ingest::remote_write::decode_write_request(&body, 1 << 20).unwrap();
            let want: Vec<ingest::remote_write::Series> = series
                .iter()
                .map(|l| (l.clone(), (0..4).map(|k| (base + round + k * 1000, (round * 7 + k) as f64)).collect()))
                .collect();
            assert_eq!(got, ingest::remote_write::to_write_request(&want));
        }
        assert_eq!(tpl.samples, 12);
        assert!(tpl.body(1 << 42, 0).is_none(), "a timestamp wider than 6 varint bytes is refused");
    }
}
