//! End to end: a real Prometheus 2.42 scrapes itself every second and remote-writes to
//! `strata receive`; after SIGTERM the receiver cuts its head into the bucket, where the series
//! `up{job="prometheus"}` must be found with plausible samples under the configured tenant.
#![allow(clippy::unwrap_used, clippy::expect_used)]

mod common;

use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use common::*;
use engine::bucket::Bucket;
use engine::bucket_source::BucketSource;
use engine::{Matcher, SelectRequest, SeriesBatch, SeriesSource};
use futures::TryStreamExt;

async fn wait_http_ok(url: &str, within: Duration) {
    let client = reqwest::Client::new();
    let deadline = Instant::now() + within;
    loop {
        if let Ok(r) = client.get(url).send().await
            && r.status().is_success()
        {
            return;
        }
        assert!(Instant::now() < deadline, "{url} did not answer 200 within {within:?}");
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn prometheus_remote_writes_into_strata_receive() {
    let Some(prometheus) = peer("prometheus") else { return };
    let dir = tempfile::tempdir().unwrap();
    let bucket_dir = dir.path().join("bucket");
    let bucket_cfg = fs_bucket_config(dir.path(), &bucket_dir);
    let (rw_port, http_port, prom_port) = (free_port(), free_port(), free_port());

    let receiver = Command::new(strata_bin())
        .args(["receive", "--remote-write.address", &format!("127.0.0.1:{rw_port}")])
        .args(["--http-address", &format!("127.0.0.1:{http_port}")])
        .arg("--tsdb.path")
        .arg(dir.path().join("tsdb"))
        .arg("--objstore.config-file")
        .arg(&bucket_cfg)
        .args(["--label", "cluster=\"e2e\"", "--tsdb.block-duration", "2h"])
        // Debian's Prometheus 2.42 does not send remote_write `headers`, so the tenant comes from
        // the default tenant flag (the header path is covered by the receive handler tests)
        .args(["--receive.default-tenant-id", "e2e-tenant"])
        .env("RUST_LOG", "info")
        .stdout(Stdio::null())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    let mut receiver = Daemon(receiver);
    wait_http_ok(&format!("http://127.0.0.1:{http_port}/-/ready"), Duration::from_secs(30)).await;
    let metrics = reqwest::get(format!("http://127.0.0.1:{http_port}/metrics")).await.unwrap().text().await.unwrap();
    assert!(metrics.contains("strata_build_info"), "{metrics}");

    let config = format!(
        "global:\n  scrape_interval: 1s\n  evaluation_interval: 1s\n\
         scrape_configs:\n  - job_name: prometheus\n    static_configs:\n      - targets: ['127.0.0.1:{prom_port}']\n\
         remote_write:\n  - url: http://127.0.0.1:{rw_port}/api/v1/receive\n\
         \x20   queue_config:\n      batch_send_deadline: 1s\n      max_shards: 1\n"
    );
    let cfg_path = dir.path().join("prometheus.yml");
    std::fs::write(&cfg_path, config).unwrap();
    let started_ms = chrono_ms();
    let prom = Command::new(prometheus)
        .arg(format!("--config.file={}", cfg_path.display()))
        .arg(format!("--storage.tsdb.path={}", dir.path().join("prom").display()))
        .arg(format!("--web.listen-address=127.0.0.1:{prom_port}"))
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .unwrap();
    let prom = Daemon(prom);
    wait_http_ok(&format!("http://127.0.0.1:{prom_port}/-/ready"), Duration::from_secs(30)).await;
    tokio::time::sleep(Duration::from_secs(15)).await;
    drop(prom);
    let stopped_ms = chrono_ms();
    let metrics = reqwest::get(format!("http://127.0.0.1:{http_port}/metrics")).await.unwrap().text().await.unwrap();
    assert!(metrics.contains(r#"strata_receive_requests_total{code="200"}"#), "{metrics}");
    assert!(metrics.contains("strata_receive_tenants 1"), "{metrics}");

    // SIGTERM: the receiver stops taking writes and cuts every head into the bucket
    let pid = receiver.0.id().to_string();
    assert!(Command::new("kill").args(["-TERM", &pid]).status().unwrap().success());
    let deadline = Instant::now() + Duration::from_secs(60);
    let status = loop {
        if let Some(s) = receiver.0.try_wait().unwrap() {
            break s;
        }
        assert!(Instant::now() < deadline, "strata receive did not stop after SIGTERM");
        tokio::time::sleep(Duration::from_millis(100)).await;
    };
    let mut stderr = String::new();
    if let Some(mut e) = receiver.0.stderr.take() {
        std::io::Read::read_to_string(&mut e, &mut stderr).unwrap();
    }
    assert!(status.success(), "strata receive failed: {status}\n{stderr}");

    let bucket = Bucket::local(&bucket_dir).unwrap();
    let blocks = bucket.list_blocks().await.unwrap();
    assert!(!blocks.is_empty(), "no block after the forced cut\n{stderr}");
    for ulid in &blocks {
        let meta = serde_json::to_value(bucket.read_meta(ulid).await.unwrap()).unwrap();
        assert_eq!(meta["thanos"]["labels"]["tenant_id"], "e2e-tenant", "{meta}");
        assert_eq!(meta["thanos"]["labels"]["cluster"], "e2e", "{meta}");
    }

    let src = BucketSource::new(bucket.clone());
    src.sync().await.unwrap();
    let req = SelectRequest {
        matchers: vec![Matcher::equal("__name__", "up"), Matcher::equal("job", "prometheus")],
        min_t: i64::MIN,
        max_t: i64::MAX,
        ..Default::default()
    };
    let batches: Vec<SeriesBatch> = src.select(&req).await.unwrap().try_collect().await.unwrap();
    let series: Vec<_> = batches.iter().flat_map(|b| (0..b.num_series()).map(move |i| b.series(i))).collect();
    assert_eq!(series.len(), 1, "{:?}", series.iter().map(|s| s.0.to_string()).collect::<Vec<_>>());
    let (labels, ts, vs) = series[0];
    assert_eq!(labels.get("instance"), Some(format!("127.0.0.1:{prom_port}").as_str()), "{labels}");
    // scraped every second for about 15 s; allow for start-up and the last batch in flight
    assert!(ts.len() >= 5, "only {} samples of up: {ts:?}", ts.len());
    assert!(vs.iter().all(|&v| v == 1.0), "{vs:?}");
    assert!(ts.windows(2).all(|w| w[0] < w[1]), "{ts:?}");
    assert!(
        ts[0] >= started_ms - 1000 && *ts.last().unwrap() <= stopped_ms + 1000,
        "{ts:?} not in [{started_ms}, {stopped_ms}]"
    );
    // a scrape interval of 1 s
    let gaps: Vec<i64> = ts.windows(2).map(|w| w[1] - w[0]).collect();
    assert!(gaps.iter().all(|&g| (500..=3000).contains(&g)), "{gaps:?}");

    // other series of the scrape arrived too
    let names = src.label_values("__name__", &[], i64::MIN, i64::MAX).await.unwrap();
    assert!(names.iter().any(|n| n == "prometheus_build_info"), "{} names", names.len());
    assert!(names.len() > 100, "{} names", names.len());
}

fn chrono_ms() -> i64 {
    std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).unwrap().as_millis() as i64
}
