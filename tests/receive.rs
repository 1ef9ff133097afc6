//! End to end, sample for sample: a real Prometheus 2.42 scrapes itself and a fixture target every
//! second and remote-writes to `strata receive`. After SIGTERM the receiver cuts its head into the
//! bucket; every series and every sample (timestamp and value bits, NaN and stale markers included)
//! that Strata stored in a window both have fully must equal what that Prometheus's own TSDB returns
//! over its remote-read API, and nothing may be missing or extra.
//!
//! The window: Prometheus sends, in WAL order over one shard, every sample newer than the moment
//! its remote write started; Strata's oldest sample is newer than that moment, so from it on Strata
//! has everything. At the end, Prometheus has not sent what came after the last batch Strata
//! acknowledged: a margin of 5 s below Strata's newest sample (scrapes commit within milliseconds
//! of their timestamp) leaves only samples every earlier batch carried.
#![allow(clippy::unwrap_used, clippy::expect_used)]

mod common;

use std::collections::BTreeMap;
use std::process::Command;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

use common::*;
use engine::bucket::Bucket;
use engine::bucket_source::BucketSource;
use engine::{MatchOp, Matcher, SelectRequest, SeriesBatch, SeriesSource};
use futures::TryStreamExt;
use tokio::io::{AsyncReadExt, AsyncWriteExt};

/// Series (labels without the receiver's external labels) to their samples as (timestamp, value bits).
type Dump = BTreeMap<String, Vec<(i64, u64)>>;

const STALE_NAN_BITS: u64 = 0x7ff0_0000_0000_0002;

/// The exposition of scrape number `n` of the fixture target: a counter, a series present only on
/// even and one only on odd scrapes (so Prometheus writes stale markers), and special values. (No
/// `-0`: proto3 encoders, Prometheus's too, leave a field equal to 0 out, so remote write sends `-0`
/// as `0`.)
fn fixture_page(n: u64) -> String {
    let mut s = format!(
        "# TYPE fixture_counter_total counter\nfixture_counter_total {}\n\
         # TYPE fixture_gauge gauge\nfixture_gauge {}\n",
        n as f64 * 0.1,
        n as f64 / 3.0
    );
    s.push_str("# TYPE fixture_flap gauge\n");
    if n.is_multiple_of(2) {
        s.push_str("fixture_flap{phase=\"even\"} 1\n");
    } else {
        s.push_str("fixture_flap{phase=\"odd\"} 2\n");
    }
    s.push_str(
        "# TYPE fixture_special gauge\n\
         fixture_special{kind=\"nan\"} NaN\n\
         fixture_special{kind=\"inf\"} +Inf\n\
         fixture_special{kind=\"neginf\"} -Inf\n\
         fixture_special{kind=\"tiny\"} 5e-324\n",
    );
    s
}

/// Serves [`fixture_page`] on a loopback port, counting scrapes; returns the port.
async fn serve_fixture() -> u16 {
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let port = listener.local_addr().unwrap().port();
    let scrapes = Arc::new(AtomicU64::new(0));
    tokio::spawn(async move {
        loop {
            let Ok((mut conn, _)) = listener.accept().await else { return };
            let scrapes = Arc::clone(&scrapes);
            tokio::spawn(async move {
                let mut req = Vec::new();
                let mut buf = [0u8; 4096];
                while !req.windows(4).any(|w| w == b"\r\n\r\n") {
                    match conn.read(&mut buf).await {
                        Ok(0) | Err(_) => return,
                        Ok(n) => req.extend_from_slice(&buf[..n]),
                    }
                }
                let body = fixture_page(scrapes.fetch_add(1, Ordering::SeqCst));
                let resp = format!(
                    "HTTP/1.1 200 OK\r\nContent-Type: text/plain; version=0.0.4\r\nContent-Length: {}\r\nConnection: close\r\n\r\n{body}",
                    body.len()
                );
                let _ = conn.write_all(resp.as_bytes()).await;
                let _ = conn.shutdown().await;
            });
        }
    });
    port
}

fn dump_of(series: impl IntoIterator<Item = (engine::Labels, Vec<(i64, f64)>)>, lo: i64, hi: i64) -> Dump {
    let mut out = Dump::new();
    for (mut l, s) in series {
        l.remove("cluster");
        l.remove("tenant_id");
        let kept: Vec<(i64, u64)> =
            s.into_iter().filter(|&(t, _)| t >= lo && t <= hi).map(|(t, v)| (t, v.to_bits())).collect();
        if !kept.is_empty() {
            assert!(out.insert(l.to_string(), kept).is_none(), "series {l} twice");
        }
    }
    out
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn prometheus_remote_writes_into_strata_receive_sample_for_sample() {
    let Some(prometheus) = peer("prometheus") else { return };
    let dir = tempfile::tempdir().unwrap();
    let bucket_dir = dir.path().join("bucket");
    let bucket_cfg = fs_bucket_config(dir.path(), &bucket_dir);
    let (rw_port, http_port, prom_port) = (free_port(), free_port(), free_port());
    let fixture_port = serve_fixture().await;

    let log = dir.path().join("receive.log");
    let mut cmd = Command::new(strata_bin());
    cmd.args(["receive", "--remote-write.address", &format!("127.0.0.1:{rw_port}")])
        .args(["--http-address", &format!("127.0.0.1:{http_port}")])
        .args(["--grpc-address", &format!("127.0.0.1:{}", free_port())])
        .arg("--tsdb.path")
        .arg(dir.path().join("tsdb"))
        .arg("--objstore.config-file")
        .arg(&bucket_cfg)
        .args(["--label", "cluster=\"e2e\"", "--tsdb.block-duration", "2h"])
        // Debian's Prometheus 2.42 does not send remote_write `headers`, so the tenant comes from
        // the default tenant flag (the header path is covered by the receive handler tests)
        .args(["--receive.default-tenant-id", "e2e-tenant"])
        .env("RUST_LOG", "info");
    let mut receiver = Daemon::spawn(&mut cmd, &log).unwrap();
    receiver
        .wait_http_ok(&format!("http://127.0.0.1:{http_port}/-/ready"), Duration::from_secs(30), &log)
        .await
        .unwrap();
    let metrics = reqwest::get(format!("http://127.0.0.1:{http_port}/metrics")).await.unwrap().text().await.unwrap();
    assert!(metrics.contains("strata_build_info"), "{metrics}");

    // One shard keeps remote write in WAL order (the window argument in the module docs needs it).
    let config = format!(
        "global:\n  scrape_interval: 1s\n  evaluation_interval: 1s\n\
         scrape_configs:\n  - job_name: prometheus\n    static_configs:\n      - targets: ['127.0.0.1:{prom_port}']\n\
         \x20 - job_name: fixture\n    static_configs:\n      - targets: ['127.0.0.1:{fixture_port}']\n\
         remote_write:\n  - url: http://127.0.0.1:{rw_port}/api/v1/receive\n\
         \x20   queue_config:\n      batch_send_deadline: 1s\n      min_shards: 1\n      max_shards: 1\n"
    );
    let cfg_path = dir.path().join("prometheus.yml");
    std::fs::write(&cfg_path, config).unwrap();
    let prom_log = dir.path().join("prometheus.log");
    let mut prom = Daemon::spawn(
        Command::new(prometheus)
            .arg(format!("--config.file={}", cfg_path.display()))
            .arg(format!("--storage.tsdb.path={}", dir.path().join("prom").display()))
            .arg(format!("--web.listen-address=127.0.0.1:{prom_port}")),
        &prom_log,
    )
    .unwrap();
    prom.wait_http_ok(&format!("http://127.0.0.1:{prom_port}/-/ready"), Duration::from_secs(30), &prom_log)
        .await
        .unwrap();
    tokio::time::sleep(Duration::from_secs(25)).await;
    let metrics = reqwest::get(format!("http://127.0.0.1:{http_port}/metrics")).await.unwrap().text().await.unwrap();
    assert!(metrics.contains(r#"strata_receive_requests_total{code="200"}"#), "{metrics}");
    assert!(metrics.contains("strata_receive_tenants 1"), "{metrics}");
    // Every answer was a success: Prometheus drops batches answered 4xx, which would lose samples.
    for line in metrics.lines().filter(|l| l.starts_with("strata_receive_requests_total{")) {
        assert!(line.contains(r#"code="200""#), "{line}");
    }

    // SIGTERM: the receiver stops taking writes and cuts every head into the bucket. Prometheus
    // keeps running (its remote write now fails and retries; its TSDB keeps everything).
    let status = receiver.terminate(Duration::from_secs(60)).await.unwrap();
    let stderr = read_log(&log);
    assert!(status.success(), "strata receive failed: {status}\n{stderr}");

    let bucket = Bucket::local(&bucket_dir).unwrap();
    let blocks = bucket.list_blocks().await.unwrap();
    assert!(!blocks.is_empty(), "no block after the forced cut\n{stderr}");
    for ulid in &blocks {
        let meta = serde_json::to_value(bucket.read_meta(ulid).await.unwrap()).unwrap();
        assert_eq!(meta["thanos"]["labels"]["tenant_id"], "e2e-tenant", "{meta}");
        assert_eq!(meta["thanos"]["labels"]["cluster"], "e2e", "{meta}");
    }

    // Everything Strata stored, raw.
    let src = BucketSource::new(bucket.clone());
    src.sync().await.unwrap();
    let all = Matcher::new(MatchOp::RegexMatch, "__name__", ".+").unwrap();
    let req = SelectRequest { matchers: vec![all.clone()], min_t: i64::MIN, max_t: i64::MAX, ..Default::default() };
    let batches: Vec<SeriesBatch> = src.select(&req).await.unwrap().try_collect().await.unwrap();
    let mut strata_series = Vec::new();
    for b in &batches {
        for i in 0..b.num_series() {
            let (l, ts, vs) = b.series(i);
            assert_eq!(l.get("tenant_id"), Some("e2e-tenant"), "{l}");
            strata_series.push((l.clone(), ts.iter().copied().zip(vs.iter().copied()).collect::<Vec<_>>()));
        }
    }
    let lo = strata_series.iter().filter_map(|s| s.1.first().map(|x| x.0)).min().expect("Strata stored no sample");
    let newest = strata_series.iter().filter_map(|s| s.1.last().map(|x| x.0)).max().unwrap();
    let hi = newest - 5_000;
    assert!(hi - lo >= 8_000, "window [{lo}, {hi}] too short: Strata has samples only in [{lo}, {newest}]");
    let strata = dump_of(strata_series, lo, hi);

    // The same window from Prometheus's own TSDB (remote read returns raw samples, stale markers too).
    let client = reqwest::Client::new();
    let read_url = format!("http://127.0.0.1:{prom_port}/api/v1/read");
    let prom_series = ingest::remote_read::read(&client, &read_url, lo, hi, &[all]).await.unwrap();
    let prom = dump_of(prom_series, lo, hi);

    let only_prom: Vec<&String> = prom.keys().filter(|k| !strata.contains_key(*k)).collect();
    let only_strata: Vec<&String> = strata.keys().filter(|k| !prom.contains_key(*k)).collect();
    assert!(
        only_prom.is_empty() && only_strata.is_empty(),
        "series only in Prometheus: {only_prom:?}; only in Strata: {only_strata:?}"
    );
    let mut samples = 0;
    for (k, want) in &prom {
        assert_eq!(&strata[k], want, "series {k} differs in [{lo}, {hi}] (Strata left, Prometheus right)");
        samples += want.len();
    }
    eprintln!("{} series, {samples} samples equal in [{lo}, {hi}]", prom.len());

    // The comparison covered what it must: both jobs, many series, stale markers and special values.
    assert!(prom.len() > 100, "{} series", prom.len());
    let up_self = format!("up{{instance=\"127.0.0.1:{prom_port}\", job=\"prometheus\"}}");
    let up = &prom[&up_self];
    // Successful self-scrapes (a loaded machine may time one out: up 0, compared like the rest).
    assert!(up.iter().filter(|s| s.1 == 1f64.to_bits()).count() >= 5, "{up:?}");
    let flap = |phase: &str| {
        prom[&format!("fixture_flap{{instance=\"127.0.0.1:{fixture_port}\", job=\"fixture\", phase=\"{phase}\"}}")]
            .clone()
    };
    for phase in ["even", "odd"] {
        assert!(flap(phase).iter().any(|s| s.1 == STALE_NAN_BITS), "no stale marker in fixture_flap {phase}");
    }
    let special = |kind: &str| {
        prom[&format!("fixture_special{{instance=\"127.0.0.1:{fixture_port}\", job=\"fixture\", kind=\"{kind}\"}}")]
            .clone()
    };
    assert!(special("nan").iter().all(|s| f64::from_bits(s.1).is_nan() && s.1 != STALE_NAN_BITS));
    assert!(special("tiny").iter().all(|s| s.1 == 1));
    assert!(special("neginf").iter().all(|s| s.1 == f64::NEG_INFINITY.to_bits()));
}
