//! `bench http`: query-API latency, Strata (`strata query` over converted blocks) vs Prometheus 2.42
//! serving the same promtool-made TSDB blocks, measured in the same run over loopback HTTP. With
//! `--via-store` Strata answers as Thanos is deployed: `strata query --endpoint` in front of a
//! `strata store` gateway over the blocks, every sample crossing the StoreAPI (XOR chunks; the Series
//! call over Series frames, the StoreAPI's messages without HTTP/2, which Strata's querier uses with a
//! Strata store).
//!
//! Each request is sent once to each system as a warm-up, then `--runs` more times to each,
//! alternating Strata and Prometheus so that a busy moment of the machine hits both alike. The
//! median of the timed runs is kept and the ratio of the medians Strata/Prometheus printed (issue 4
//! targets: every ratio <= 1.0, heavy aggregations <= 0.5). Strata's warm-up time is printed too:
//! it is the cold one, before Strata's decoded-page cache holds the pages the request touches. The
//! `gzip` rows send `Accept-Encoding: gzip` to both.
//!
//! With `--via-store` a last table times the hop alone, for the `selector 1 series, 1h` row: rounds
//! of Prometheus answering the row's query, a second `strata query` reading the bucket itself
//! answering it, then gRPC calls from tonic's own client to the `strata store`: `Info` (a round trip
//! with no data) and the `Series` call the querier makes for the row, and that `Series` call once
//! more over Series frames, as Strata's querier sends it to a Strata store
//! (`query::storeapi::frames`). The querier through the store costs about the direct answer plus
//! the `Series` call over frames, the last column's ratio.

use std::process::Command;
use std::time::{Duration, Instant};

use engine::bucket::Bucket;
use ingest::convert::{ConvertOptions, convert_path};

use ingest::testkit::{Daemon, copy_dir, free_port, urlencode};
use proto::prometheus::{LabelMatcher, label_matcher};
use proto::thanos::info::InfoRequest;
use proto::thanos::info::info_client::InfoClient;
use proto::thanos::store_client::StoreClient;
use proto::thanos::{SeriesRequest, series_response};
use query::storeapi::frames::FramesClient;

use crate::util::{FleetArgs, format_copy, grpc_channel, prometheus_over, promtool_blocks, write_fs_bucket_config};

/// Arguments of `bench http`.
#[derive(Debug, clap::Args)]
pub(crate) struct Args {
    #[command(flatten)]
    fleet: FleetArgs,
    /// Timed repetitions per request and system after one warm-up (the median is kept).
    #[arg(long, default_value_t = 51)]
    runs: usize,
    /// Time budget in seconds per request and system: slow requests get fewer timed runs (at least 3).
    #[arg(long, default_value_t = 15.0)]
    budget: f64,
    /// Run only the requests whose name contains this text.
    #[arg(long)]
    only: Option<String>,
    /// Storage format versions of the Strata buckets: one `strata query` per format, each request
    /// timed on every one of them against Prometheus in the same run.
    #[arg(long, value_delimiter = ',', default_value = "2,1")]
    formats: Vec<u32>,
    /// Query through the StoreAPI: `strata query --endpoint` over a `strata store` of the blocks,
    /// instead of `strata query` reading the bucket itself.
    #[arg(long)]
    via_store: bool,
}

/// Sends `url` once and returns its wall time in seconds, with the body read whole. With `gzip` the
/// request asks for gzip and the compressed body is read as is.
pub(crate) async fn timed(client: &reqwest::Client, url: &str, gzip: bool) -> Result<f64, String> {
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
    Ok(elapsed)
}

/// Median of `v` (the mean of the middle two for an even count); 0 for an empty slice.
pub(crate) fn median(v: &mut [f64]) -> f64 {
    v.sort_by(f64::total_cmp);
    match v.len() {
        0 => 0.0,
        n if n % 2 == 1 => v[n / 2],
        n => (v[n / 2 - 1] + v[n / 2]) / 2.0,
    }
}

/// Times one request on both systems: one warm-up each, then timed runs alternating between them,
/// `runs` of them or as many as `budget` seconds allow at the slower warm-up time (at least 3).
/// Returns (Strata warm-up, Strata median, Prometheus median, timed runs) in seconds.
async fn compare(
    client: &reqwest::Client,
    strata: &str,
    prom: &str,
    runs: usize,
    budget: f64,
    gzip: bool,
) -> Result<(f64, f64, f64, usize), String> {
    let cold = timed(client, strata, gzip).await?;
    let warm = timed(client, prom, gzip).await?.max(cold);
    let n = ((budget / warm.max(1e-6)) as usize).clamp(3, runs.max(3));
    let (mut s, mut p) = (Vec::with_capacity(n), Vec::with_capacity(n));
    for _ in 0..n {
        s.push(timed(client, strata, gzip).await?);
        p.push(timed(client, prom, gzip).await?);
    }
    Ok((cold, median(&mut s), median(&mut p), n))
}

/// With `--via-store`: the store gateway behind a querier.
struct Hop {
    _store: Daemon,
    /// The store's gRPC address.
    grpc: String,
    /// Objstore configuration file of the bucket the store serves.
    bucket_cfg: String,
}

/// The medians of [`time_hop`], in seconds.
struct HopTimes {
    direct: f64,
    info: f64,
    series: f64,
    frames: f64,
    prom: f64,
}

/// The hop of `--via-store` alone (see the module docs): one warm-up and `runs` timed rounds of
/// Prometheus answering `path`, the querier on the bucket at `direct` answering it, then `Info`
/// and `series` of the store at `grpc`, then `series` over Series frames.
async fn time_hop(
    client: &reqwest::Client,
    grpc: &str,
    direct: &str,
    prom: &str,
    path: &str,
    series: SeriesRequest,
    runs: usize,
) -> Result<HopTimes, String> {
    let channel = grpc_channel(grpc).await?;
    let mut info = InfoClient::new(channel.clone());
    let mut store = StoreClient::new(channel);
    let frames = FramesClient::new(grpc);
    let direct_url = format!("{direct}{path}");
    let prom_url = format!("{prom}{path}");
    let (mut td, mut ti, mut ts, mut tf, mut tp) = (Vec::new(), Vec::new(), Vec::new(), Vec::new(), Vec::new());
    for round in 0..=runs {
        let p = timed(client, &prom_url, false).await?;
        let d = timed(client, &direct_url, false).await?;
        let t = Instant::now();
        let answer = info.info(InfoRequest {}).await.map_err(|e| format!("{grpc} Info: {e}"))?;
        let i = t.elapsed().as_secs_f64();
        frames.advertised(answer.metadata());
        let t = Instant::now();
        let mut stream = store.series(series.clone()).await.map_err(|e| format!("{grpc} Series: {e}"))?.into_inner();
        let mut chunks = Vec::new();
        while let Some(r) = stream.message().await.map_err(|e| format!("{grpc} Series stream: {e}"))? {
            if let Some(series_response::Result::Series(s)) = r.result {
                chunks.push(s.chunks.len());
            }
        }
        let s = t.elapsed().as_secs_f64();
        let t = Instant::now();
        let mut call = frames
            .call(&series, None)
            .await
            .map_err(|e| format!("{grpc} Series over frames: {e}"))?
            .ok_or_else(|| format!("{grpc}: the store's Info does not advertise Series frames"))?;
        let mut framed = Vec::new();
        while let Some(r) = call.message().await.map_err(|e| format!("{grpc} Series over frames: {e}"))? {
            if let Some(series_response::Result::Series(s)) = r.result {
                framed.push(s.chunks.len());
            }
        }
        let f = t.elapsed().as_secs_f64();
        if chunks.len() != 1 || chunks[0] == 0 || framed != chunks {
            return Err(format!(
                "{grpc} Series: expected one series with chunks both ways, got chunk counts {chunks:?} (gRPC), \
                 {framed:?} (frames)"
            ));
        }
        if round > 0 {
            td.push(d);
            ti.push(i);
            ts.push(s);
            tf.push(f);
            tp.push(p);
        }
    }
    Ok(HopTimes {
        direct: median(&mut td),
        info: median(&mut ti),
        series: median(&mut ts),
        frames: median(&mut tf),
        prom: median(&mut tp),
    })
}

pub(crate) fn run(a: Args) -> Result<(), String> {
    let work = tempfile::tempdir().map_err(|e| e.to_string())?;
    let spec = a.fleet.spec()?;
    let prom_blocks = promtool_blocks("http", &spec, work.path(), "blocks")?;
    let rt = crate::util::runtime()?;

    // Prometheus on a copy of the blocks
    let prom_data = work.path().join("prom");
    copy_dir(&prom_blocks, &prom_data).map_err(|e| e.to_string())?;
    let (mut prom, pbase, prom_log) = prometheus_over(&prom_data, work.path())?;
    // Strata over the converted blocks
    let bdir = work.path().join("bucket");
    let bucket = Bucket::local(&bdir).map_err(|e| e.to_string())?;
    let report = rt
        .block_on(convert_path(&prom_blocks, &bucket, &ConvertOptions::default(), &|_| {}))
        .map_err(|e| e.to_string())?;
    if let Some((p, e)) = report.failed.first() {
        return Err(format!("convert {}: {e}", p.display()));
    }
    let strata_bin = std::env::current_exe().map_err(|e| e.to_string())?.with_file_name("strata");
    let ready = Duration::from_secs(120);
    let spawn = |args: &[&str], log: &std::path::Path| -> Result<Daemon, String> {
        Daemon::spawn(Command::new(&strata_bin).args(args), log)
            .map_err(|e| format!("{e} (cargo build --release --workspace first)"))
    };
    // `strata query` with `source` (its data's flags) on a free port, once ready; and its base URL.
    let start_query = |source: &[&str], log: &std::path::Path| -> Result<(Daemon, String), String> {
        let addr = format!("127.0.0.1:{}", free_port().map_err(|e| e.to_string())?);
        let mut query = spawn(&[&["query"], source, &["--http-address", &addr]].concat(), log)?;
        let base = format!("http://{addr}");
        rt.block_on(query.wait_http_ok(&format!("{base}/-/ready"), ready, log)).map_err(|e| e.to_string())?;
        Ok((query, base))
    };
    let client = reqwest::Client::new();
    rt.block_on(prom.wait_http_ok(&format!("{pbase}/-/ready"), ready, &prom_log)).map_err(|e| e.to_string())?;
    // One `strata query` per format over a copy of the bucket in that format; with --via-store a
    // store gateway over the bucket and the querier in front of it (StoreAPI: Info over gRPC,
    // Series over frames).
    let mut servers = Vec::new();
    for &format in &a.formats {
        let fdir = work.path().join(format!("bucket-v{format}"));
        rt.block_on(format_copy(&bdir, &fdir, format))?;
        let bcfg = work.path().join(format!("bucket-v{format}.yml"));
        write_fs_bucket_config(&bcfg, &fdir)?;
        let bucket_cfg = bcfg.display().to_string();
        let strata_log = work.path().join(format!("strata-v{format}.log"));
        let ((strata, sbase), hop) = if a.via_store {
            let grpc = format!("127.0.0.1:{}", free_port().map_err(|e| e.to_string())?);
            let http = format!("127.0.0.1:{}", free_port().map_err(|e| e.to_string())?);
            let store_log = work.path().join(format!("store-v{format}.log"));
            let args =
                ["store", "--objstore.config-file", &bucket_cfg, "--grpc-address", &grpc, "--http-address", &http];
            let mut store = spawn(&args, &store_log)?;
            rt.block_on(store.wait_http_ok(&format!("http://{http}/-/ready"), ready, &store_log))
                .map_err(|e| e.to_string())?;
            let hop = Hop { _store: store, grpc, bucket_cfg: bucket_cfg.clone() };
            (start_query(&["--endpoint", &hop.grpc], &strata_log)?, Some(hop))
        } else {
            (start_query(&["--objstore.config-file", &bucket_cfg], &strata_log)?, None)
        };
        servers.push((format, sbase, strata, hop));
    }

    let start = spec.start_ms / 1000 + 600;
    let end = (spec.start_ms + spec.duration_ms) / 1000 - 60;
    let hour = end - 3600;
    let range =
        |q: &str, from: i64| format!("/api/v1/query_range?query={}&start={from}&end={end}&step=60", urlencode(q));
    let instant = |q: &str| format!("/api/v1/query?query={}&time={end}", urlencode(q));
    // (name, path, heavy aggregation, ask for gzip)
    let (one_series_name, one_series) = ("selector 1 series, 1h", "up{instance=\"host-00000:9100\"}");
    let cases: Vec<(&str, String, bool, bool)> = vec![
        (one_series_name, range(one_series, hour), false, false),
        ("selector 1 series, 1d", range(one_series, start), false, false),
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
        ("labels", "/api/v1/labels".to_string(), false, false),
        ("label values (__name__)", "/api/v1/label/__name__/values".to_string(), false, false),
        (
            "label values (instance) match[]=up, 1h",
            format!("/api/v1/label/instance/values?match[]=up&start={hour}&end={end}"),
            false,
            false,
        ),
        ("labels match[]=up, 1h", format!("/api/v1/labels?match[]=up&start={hour}&end={end}"), false, false),
        ("series match[]=up", format!("/api/v1/series?match[]=up&start={start}&end={end}"), false, false),
        (
            "group_left join, 1d",
            range("rate(http_requests_total[5m]) * on(instance) group_left(version) build_info", start),
            true,
            false,
        ),
        (
            "ratio vector/vector, 1d",
            range("process_resident_memory_bytes / on(instance, job) node_temperature_celsius", start),
            true,
            false,
        ),
        (
            "ratio instant",
            instant(
                "sum by (instance) (rate(http_requests_total{status=\"500\"}[5m])) / sum by (instance) (rate(http_requests_total[5m]))",
            ),
            true,
            false,
        ),
        (
            "ratio instant, no aggregation",
            instant("process_resident_memory_bytes / node_temperature_celsius"),
            true,
            false,
        ),
        ("and on(instance), 1d", range("http_requests_total and on(instance) up == 1", start), true, false),
        ("selector 100 series, 1d, gzip", range("up{instance=~\"host-000[0-9][0-9]:9100\"}", start), false, true),
        ("selector all series, 1d, gzip", range("{job=~\".+\"}", start), false, true),
    ];
    println!(
        "bench http{}: {} series, {} samples, {} h at {} s; median of up to {} runs ({} s budget) after 1 warm-up, systems alternating",
        if a.via_store { " (strata query -> strata store: Info over gRPC, Series over frames)" } else { "" },
        a.fleet.targets * ingest::datagen::SERIES_PER_TARGET,
        report.samples,
        a.fleet.hours,
        a.fleet.interval,
        a.runs,
        a.budget
    );
    println!(
        "{:<32} {:>6} {:>14} {:>14} {:>14} {:>5} {:>8}  target",
        "request", "format", "strata med ms", "strata cold ms", "prom med ms", "runs", "ratio"
    );
    for (name, path, heavy, gzip) in cases {
        if a.only.as_deref().is_some_and(|o| !name.contains(o)) {
            continue;
        }
        for (format, sbase, _, _) in &servers {
            let (s_first, s, p, n) = rt.block_on(compare(
                &client,
                &format!("{sbase}{path}"),
                &format!("{pbase}{path}"),
                a.runs,
                a.budget,
                gzip,
            ))?;
            println!(
                "{name:<32} {format:>6} {:>14.2} {:>14.2} {:>14.2} {n:>5} {:>8.2}  <= {}",
                s * 1000.0,
                s_first * 1000.0,
                p * 1000.0,
                s / p.max(1e-9),
                if heavy { "0.5" } else { "1.0" }
            );
        }
    }
    if a.via_store && a.only.as_deref().is_none_or(|o| one_series_name.contains(o)) {
        // The samples `selector 1 series, 1h` reads: its range and the 5-minute lookback before it.
        let series = SeriesRequest {
            min_time: hour * 1000 - 300_000 + 1,
            max_time: end * 1000,
            matchers: [("__name__", "up"), ("instance", "host-00000:9100")]
                .map(|(name, value)| LabelMatcher {
                    r#type: label_matcher::Type::Eq as i32,
                    name: name.into(),
                    value: value.into(),
                })
                .into(),
            ..Default::default()
        };
        let path = range(one_series, hour);
        println!(
            "the hop alone (`{one_series_name}`): rounds of Prometheus, `strata query` on the bucket, then Info and Series \
             of `strata store` from tonic's client, then Series over frames (as Strata's querier calls it)"
        );
        println!(
            "{:<32} {:>6} {:>14} {:>14} {:>14} {:>14} {:>14} {:>5} {:>20}",
            "",
            "format",
            "direct med ms",
            "Info med ms",
            "Series med ms",
            "frames med ms",
            "prom med ms",
            "runs",
            "(direct+frames)/prom"
        );
        for (format, _, _, hop) in &servers {
            let Some(hop) = hop else { continue };
            // A querier on the bucket itself, for this table only.
            let direct_log = work.path().join(format!("strata-direct-v{format}.log"));
            let (_direct, direct_base) = start_query(&["--objstore.config-file", &hop.bucket_cfg], &direct_log)?;
            let t = rt.block_on(time_hop(&client, &hop.grpc, &direct_base, &pbase, &path, series.clone(), a.runs))?;
            println!(
                "{:<32} {format:>6} {:>14.2} {:>14.2} {:>14.2} {:>14.2} {:>14.2} {:>5} {:>20.2}",
                one_series_name,
                t.direct * 1000.0,
                t.info * 1000.0,
                t.series * 1000.0,
                t.frames * 1000.0,
                t.prom * 1000.0,
                a.runs,
                (t.direct + t.frames) / t.prom.max(1e-9)
            );
        }
    }
    Ok(())
}
