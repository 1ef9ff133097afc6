//! End to end: `strata up` takes Prometheus remote write on its HTTP port, answers PromQL over the
//! received samples at once, cuts them into a block on shutdown, and serves the same answers after a
//! restart (from the bucket), without duplicates.
#![allow(clippy::unwrap_used, clippy::expect_used)]

mod common;

use std::path::Path;

use common::*;
use engine::Labels;
use serde_json::Value;

/// `strata up` with a 1 s head cut interval, logging next to its data dir.
struct Up(Strata);

async fn start_up(data: &Path) -> Up {
    let grpc = format!("127.0.0.1:{}", free_port());
    let args = ["up", "--data", data.to_str().unwrap(), "--receive.cut-interval", "1s", "--grpc-address", &grpc];
    Up(Strata::start(&args, &data.with_extension("log")).await)
}

impl Up {
    async fn write(&self, series: &[(Labels, Vec<(i64, f64)>)]) -> (u16, String) {
        self.post_raw(ingest::remote_write::encode(series).unwrap()).await
    }

    async fn post_raw(&self, body: Vec<u8>) -> (u16, String) {
        post_remote_write(&self.0.url("/api/v1/write"), body).await
    }

    async fn query(&self, q: &str, t_ms: i64) -> Value {
        let r = reqwest::Client::new()
            .post(self.0.url("/api/v1/query"))
            .header("Content-Type", "application/x-www-form-urlencoded")
            .body(format!("query={}&time={}", urlencode(q), t_ms as f64 / 1000.0))
            .send()
            .await
            .unwrap();
        let v: Value = serde_json::from_str(&r.text().await.unwrap()).unwrap();
        assert_eq!(v["status"], "success", "{q}: {v}");
        v
    }

    async fn stop(self) {
        self.0.stop().await;
    }
}

fn only_value(v: &Value) -> (Value, f64) {
    let res = v["data"]["result"].as_array().unwrap();
    assert_eq!(res.len(), 1, "{v}");
    (res[0]["metric"].clone(), res[0]["value"][1].as_str().unwrap().parse().unwrap())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn up_receives_remote_write_and_keeps_it_across_restarts() {
    let tmp = tempfile::tempdir().unwrap();
    let data = tmp.path().join("data");
    let up = start_up(&data).await;

    let now = std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).unwrap().as_millis() as i64;
    // The five samples (a minute) inside one 2-hour block range, so that the shutdown cut writes
    // one block whatever the time of day.
    let block_ms = 2 * 3_600_000;
    let mut t0 = now - 120_000;
    if t0 / block_ms != (t0 + 60_000) / block_ms {
        t0 = (t0 + 60_000) / block_ms * block_ms - 90_000;
    }
    let l = Labels::from_pairs([("__name__", "rw_test"), ("job", "a")]);
    let samples: Vec<(i64, f64)> = (0..5).map(|i| (t0 + i * 15_000, (i + 1) as f64)).collect();
    let (code, body) = up.write(&[(l.clone(), samples.clone())]).await;
    assert!((200..300).contains(&code), "{code} {body}");

    // visible at once, with the tenant label
    let at = t0 + 60_000;
    let v = up.query("rw_test", at).await;
    let (metric, value) = only_value(&v);
    assert_eq!(value, 5.0);
    assert_eq!(metric["tenant_id"], "default-tenant");
    assert_eq!(metric["job"], "a");
    let (_, n) = only_value(&up.query("count_over_time(rw_test[10m])", at).await);
    assert_eq!(n, 5.0);

    // an older sample for the same series is out of order: 409, and nothing changes
    let (code, body) = up.write(&[(l.clone(), vec![(t0 - 1000, 9.0)])]).await;
    assert_eq!(code, 409, "{body}");
    assert!(body.contains("rw_test"), "the error names the series: {body}");
    // garbage is a 400
    let (code, _) = up.post_raw(b"not snappy at all".to_vec()).await;
    assert_eq!(code, 400);

    up.stop().await;
    let bucket = engine::Bucket::local(data.join("bucket")).unwrap();
    let blocks = bucket.list_blocks().await.unwrap();
    assert_eq!(blocks.len(), 1, "the shutdown cut writes one block: {blocks:?}");
    let meta = bucket.read_meta(&blocks[0]).await.unwrap();
    assert_eq!(meta.thanos.source, "receive");
    assert_eq!(meta.thanos.labels.get("tenant_id").map(String::as_str), Some("default-tenant"));
    assert_eq!(meta.stats.num_samples, 5);

    // after a restart the same answers come back, once
    let up = start_up(&data).await;
    let (_, value) = only_value(&up.query("rw_test", at).await);
    assert_eq!(value, 5.0);
    let (_, n) = only_value(&up.query("count_over_time(rw_test[10m])", at).await);
    assert_eq!(n, 5.0);
    up.stop().await;
}
