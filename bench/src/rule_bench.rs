//! `bench rule`: the same recording rules evaluated by Strata (`strata up --rule-file`, the embedded
//! engine) and by Prometheus 2.42 (its own rule manager), both fed the same series by remote write,
//! started fresh on loopback in the same run.
//!
//! Data: `--series` series `bench_requests_total{job, instance, shard}` (10 jobs, 10 shards), one
//! sample per series every 5 s (counters growing at per-series rates), 2 minutes of history written
//! before the rules start. Rules: `--rules` recording rules in `--groups` groups at `--interval`, a
//! mix of `sum/max/avg/count/quantile by (...)` over `rate(...[1m])` or the raw value, each filtered
//! to one shard or job so that no two are the same. Printed per system after `--seconds`: the mean
//! over groups of `prometheus_rule_group_last_duration_seconds` (both expose it), the groups'
//! evaluations and failures, and the process CPU seconds over the timed window (ingest included: the
//! same load for both); then the ratios Strata/Prometheus.

use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::{Duration, Instant};

use engine::Labels;
use ingest::testkit::{Daemon, free_port};

/// Arguments of `bench rule`.
#[derive(Debug, Clone, clap::Args)]
pub(crate) struct Args {
    /// Series written (10 jobs x 10 shards x instances).
    #[arg(long, default_value_t = 10_000)]
    series: usize,
    /// Recording rules.
    #[arg(long, default_value_t = 1_000)]
    rules: usize,
    /// Rule groups the rules are split over.
    #[arg(long, default_value_t = 10)]
    groups: usize,
    /// Evaluation interval (seconds).
    #[arg(long, default_value_t = 15)]
    interval: u64,
    /// Seconds of evaluation measured (after one interval of warm-up).
    #[arg(long, default_value_t = 60)]
    seconds: u64,
    /// The strata binary (default: next to this bench binary).
    #[arg(long)]
    strata: Option<PathBuf>,
}

fn rules_yaml(a: &Args) -> String {
    let aggs = ["sum", "max", "avg", "count", "min"];
    let mut out = String::from("groups:\n");
    let per_group = a.rules.div_ceil(a.groups.max(1));
    for i in 0..a.rules {
        if i % per_group == 0 {
            out.push_str(&format!("  - name: bench_{}\n    interval: {}s\n    rules:\n", i / per_group, a.interval));
        }
        let agg = aggs[i % aggs.len()];
        let by = ["job", "instance", "job, shard"][(i / aggs.len()) % 3];
        let filter = format!("shard=\"s{}\", job=\"j{}\"", i % 10, (i / 10) % 10);
        let expr = match i % 4 {
            0 | 1 => format!("{agg} by ({by}) (rate(bench_requests_total{{{filter}}}[1m]))"),
            2 => format!("{agg} by ({by}) (bench_requests_total{{{filter}}})"),
            _ => format!("quantile by ({by}) (0.9, rate(bench_requests_total{{{filter}}}[1m]))"),
        };
        out.push_str(&format!("      - record: bench:rule_{i}\n        expr: {expr}\n"));
    }
    out
}

fn series_labels(a: &Args) -> Vec<Labels> {
    (0..a.series)
        .map(|i| {
            Labels::from_pairs([
                ("__name__", "bench_requests_total".to_string()),
                ("job", format!("j{}", i % 10)),
                ("shard", format!("s{}", (i / 10) % 10)),
                ("instance", format!("i{}", i / 100)),
            ])
        })
        .collect()
}

fn now_ms() -> i64 {
    std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).map(|d| d.as_millis() as i64).unwrap_or(0)
}

/// utime + stime of a process, in seconds.
fn cpu_seconds(pid: u32) -> f64 {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).unwrap_or_default();
    // fields after the command name (which may hold spaces) start after the last ')'
    let rest = stat.rsplit_once(')').map(|(_, r)| r).unwrap_or("");
    let f: Vec<&str> = rest.split_whitespace().collect();
    let ticks = |i: usize| f.get(i).and_then(|v| v.parse::<f64>().ok()).unwrap_or(0.0);
    // utime and stime are fields 14 and 15 of /proc/pid/stat, 12 and 13 after the name and state
    (ticks(11) + ticks(12)) / 100.0
}

struct System {
    name: &'static str,
    proc: Daemon,
    base: String,
}

fn start(name: &'static str, a: &Args, dir: &Path, rules: &Path) -> Result<System, String> {
    std::fs::create_dir_all(dir).map_err(|e| e.to_string())?;
    let addr = format!("127.0.0.1:{}", free_port().map_err(|e| e.to_string())?);
    let log = dir.with_extension("log");
    let proc = if name == "strata" {
        let bin = match &a.strata {
            Some(b) => b.clone(),
            None => std::env::current_exe().map_err(|e| e.to_string())?.with_file_name("strata"),
        };
        let grpc = format!("127.0.0.1:{}", free_port().map_err(|e| e.to_string())?);
        Daemon::spawn(
            Command::new(&bin)
                .args(["up", "--data"])
                .arg(dir)
                .args(["--http-address", &addr, "--grpc-address", &grpc, "--rule-file"])
                .arg(rules)
                .args(["--eval-interval", &format!("{}s", a.interval)]),
            &log,
        )
        .map_err(|e| format!("{}: {e} (build it with cargo build --release)", bin.display()))?
    } else {
        let cfg = dir.join("prometheus.yml");
        std::fs::write(
            &cfg,
            format!("global:\n  evaluation_interval: {}s\nrule_files:\n  - {}\n", a.interval, rules.display()),
        )
        .map_err(|e| e.to_string())?;
        Daemon::spawn(
            Command::new("prometheus")
                .arg(format!("--config.file={}", cfg.display()))
                .arg(format!("--storage.tsdb.path={}", dir.join("data").display()))
                .arg(format!("--web.listen-address={addr}"))
                .arg("--web.enable-remote-write-receiver"),
            &log,
        )
        .map_err(|e| format!("prometheus (Debian package `prometheus`): {e}"))?
    };
    Ok(System { name, proc, base: format!("http://{addr}") })
}

/// Writes one sample per series at `t` to every system.
async fn write_all(client: &reqwest::Client, systems: &[System], labels: &[Labels], t: i64) -> Result<(), String> {
    let series: Vec<(Labels, Vec<(i64, f64)>)> = labels
        .iter()
        .enumerate()
        .map(|(i, l)| (l.clone(), vec![(t, (t / 1000) as f64 * (1 + i % 7) as f64)]))
        .collect();
    for chunk in series.chunks(2000) {
        let body = ingest::remote_write::encode(chunk).map_err(|e| e.to_string())?;
        for s in systems {
            let url = format!("{}/api/v1/write", s.base);
            let r = ingest::remote_write::post(client, &url, body.clone())
                .send()
                .await
                .map_err(|e| format!("{url}: {e}"))?;
            if !r.status().is_success() {
                return Err(format!("{url}: HTTP {}: {}", r.status(), r.text().await.unwrap_or_default()));
            }
        }
    }
    Ok(())
}

/// Sum and count of `prometheus_rule_group_last_duration_seconds`, and the totals of evaluations and
/// failures, from a system's `/metrics`.
async fn rule_metrics(client: &reqwest::Client, base: &str) -> Result<(f64, usize, f64, f64), String> {
    let text = client
        .get(format!("{base}/metrics"))
        .send()
        .await
        .map_err(|e| e.to_string())?
        .text()
        .await
        .map_err(|e| e.to_string())?;
    let (mut dur, mut n, mut evals, mut fails) = (0.0, 0, 0.0, 0.0);
    for line in text.lines() {
        let value = || line.rsplit(' ').next().and_then(|v| v.parse::<f64>().ok()).unwrap_or(0.0);
        if line.starts_with("prometheus_rule_group_last_duration_seconds{") {
            dur += value();
            n += 1;
        } else if line.starts_with("prometheus_rule_evaluations_total{") {
            evals += value();
        } else if line.starts_with("prometheus_rule_evaluation_failures_total{") {
            fails += value();
        }
    }
    Ok((dur, n, evals, fails))
}

async fn run_async(a: &Args, work: &Path) -> Result<(), String> {
    let rules = work.join("rules.yml");
    std::fs::write(&rules, rules_yaml(a)).map_err(|e| e.to_string())?;
    let labels = series_labels(a);
    let mut systems = vec![
        start("strata", a, &work.join("strata"), &rules)?,
        start("prometheus", a, &work.join("prometheus"), &rules)?,
    ];
    for s in &mut systems {
        let log = work.join(s.name).with_extension("log");
        s.proc
            .wait_http_ok(&format!("{}/-/ready", s.base), Duration::from_secs(120), &log)
            .await
            .map_err(|e| format!("{}: {e}", s.name))?;
    }
    let client = reqwest::Client::new();
    // two minutes of history, so that rate(...[1m]) has data from the first evaluation on
    let now = now_ms();
    for k in (1..=24).rev() {
        write_all(&client, &systems, &labels, now - k * 5000).await?;
    }
    let warmup = Instant::now() + Duration::from_secs(a.interval);
    let end = warmup + Duration::from_secs(a.seconds);
    let mut cpu_start = vec![0.0; systems.len()];
    let mut started = false;
    while Instant::now() < end {
        write_all(&client, &systems, &labels, now_ms()).await?;
        if !started && Instant::now() >= warmup {
            cpu_start = systems.iter().map(|s| cpu_seconds(s.proc.0.id())).collect();
            started = true;
        }
        tokio::time::sleep(Duration::from_secs(5)).await;
    }
    println!(
        "bench rule: {} rules in {} groups every {} s over {} series, {} s measured",
        a.rules, a.groups, a.interval, a.series, a.seconds
    );
    println!(
        "{:<12} {:>22} {:>12} {:>10} {:>12}",
        "system", "group eval mean (ms)", "evaluations", "failures", "CPU s"
    );
    let mut means = Vec::new();
    for (s, c0) in systems.iter().zip(&cpu_start) {
        let (dur, n, evals, fails) = rule_metrics(&client, &s.base).await?;
        let mean_ms = if n > 0 { dur / n as f64 * 1000.0 } else { f64::NAN };
        let cpu = cpu_seconds(s.proc.0.id()) - c0;
        println!("{:<12} {:>22.1} {:>12} {:>10} {:>12.2}", s.name, mean_ms, evals, fails, cpu);
        means.push((mean_ms, cpu));
    }
    println!(
        "ratio strata/prometheus: group evaluation {:.2}x, CPU {:.2}x",
        means[0].0 / means[1].0,
        means[0].1 / means[1].1
    );
    Ok(())
}

/// Runs `bench rule`.
pub(crate) fn run(a: Args) -> Result<(), String> {
    let rt = crate::util::runtime()?;
    let work = tempfile::tempdir().map_err(|e| e.to_string())?;
    rt.block_on(run_async(&a, work.path()))
}
