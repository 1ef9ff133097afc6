//! Crash safety of remote write: a load generator (several concurrent writers) sends batches to
//! `strata up` and records exactly which samples got a 2xx answer; the process is killed with
//! SIGKILL while writes are in flight, restarted on the same data dir, and PromQL must return every
//! acknowledged sample (and nothing that was never sent). Two kill rounds, then a clean stop
//! (SIGTERM cuts the heads into blocks) and a last restart that must serve the same samples.
#![allow(clippy::unwrap_used, clippy::expect_used)]

mod common;

use std::collections::{BTreeMap, BTreeSet};
use std::path::Path;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Duration;

use common::*;
use engine::Labels;
use serde_json::Value;

const METRIC: &str = "crash_test";
const SERIES: usize = 240;
const WRITERS: usize = 6;
const SAMPLES_PER_BATCH: i64 = 4;

/// `strata up` with a 1 s head cut interval; its log keeps every incarnation.
struct Up(Strata);

async fn start_up(data: &Path, log: &Path) -> Up {
    let grpc = format!("127.0.0.1:{}", free_port());
    let args = ["up", "--data", data.to_str().unwrap(), "--receive.cut-interval", "1s", "--grpc-address", &grpc];
    Up(Strata::start(&args, log).await)
}

impl Up {
    fn kill9(self) {
        self.0.kill9();
    }

    async fn stop(self) {
        self.0.stop().await;
    }

    /// Every sample of `METRIC` in the last `range` before `at_ms`, per series index (label `s`).
    async fn samples(&self, at_ms: i64, range: &str) -> BTreeMap<usize, BTreeMap<i64, f64>> {
        let q = format!("{METRIC}[{range}]");
        let r = reqwest::Client::new()
            .post(self.0.url("/api/v1/query"))
            .form(&[("query", q.as_str()), ("time", &format!("{:.3}", at_ms as f64 / 1000.0))])
            .send()
            .await
            .unwrap();
        let text = r.text().await.unwrap();
        let v: Value = serde_json::from_str(&text).unwrap_or_else(|e| panic!("{q}: {e}: {text}"));
        assert_eq!(v["status"], "success", "{q}: {text}\n{}", self.0.log_text());
        assert_eq!(v["data"]["resultType"], "matrix", "{q}");
        let mut out: BTreeMap<usize, BTreeMap<i64, f64>> = BTreeMap::new();
        for s in v["data"]["result"].as_array().unwrap() {
            assert_eq!(s["metric"]["__name__"], METRIC, "{s}");
            assert_eq!(s["metric"]["tenant_id"], "default-tenant", "{}", s["metric"]);
            let idx: usize = s["metric"]["s"].as_str().unwrap().parse().unwrap();
            let m = out.entry(idx).or_default();
            for p in s["values"].as_array().unwrap() {
                let t = (p[0].as_f64().unwrap() * 1000.0).round() as i64;
                let v: f64 = p[1].as_str().unwrap().parse().unwrap();
                assert!(m.insert(t, v).is_none(), "series {idx}: timestamp {t} returned twice");
            }
        }
        out
    }
}

/// The value written for series `idx` at `t`: unique and exact in an f64.
fn value_of(idx: usize, t: i64, base: i64) -> f64 {
    (idx as i64 * 10_000_000 + (t - base)) as f64
}

fn labels_of(idx: usize) -> Labels {
    Labels::from_pairs([("__name__", METRIC.to_string()), ("s", format!("{idx:03}")), ("job", "crash".into())])
}

/// The writers' state across rounds: writer w owns series `w, w + WRITERS, ...` and its next timestamp.
struct Load {
    base: i64,
    next_t: Vec<i64>,
    /// per writer: (first timestamp of a batch, acknowledged)
    batches: Vec<Vec<(i64, bool)>>,
}

impl Load {
    fn new(base: i64) -> Self {
        Load { base, next_t: vec![base; WRITERS], batches: vec![Vec::new(); WRITERS] }
    }

    /// Runs the writers against `url` until `stop` is set; returns (batches sent, acknowledged, failed).
    async fn run(&mut self, url: String, stop: Arc<AtomicBool>) -> (usize, usize, usize) {
        let client = reqwest::Client::builder().timeout(Duration::from_secs(10)).build().unwrap();
        let mut tasks = Vec::new();
        for w in 0..WRITERS {
            let (client, url, stop) = (client.clone(), url.clone(), stop.clone());
            let (base, mut t) = (self.base, self.next_t[w]);
            tasks.push(tokio::spawn(async move {
                let mut ledger: Vec<(i64, bool)> = Vec::new();
                let mine: Vec<usize> = (w..SERIES).step_by(WRITERS).collect();
                while !stop.load(Ordering::SeqCst) {
                    let series: Vec<(Labels, Vec<(i64, f64)>)> = mine
                        .iter()
                        .map(|&i| {
                            (labels_of(i), (0..SAMPLES_PER_BATCH).map(|k| (t + k, value_of(i, t + k, base))).collect())
                        })
                        .collect();
                    let body = ingest::remote_write::encode(&series).unwrap();
                    let res = ingest::remote_write::post(&client, &url, body).send().await;
                    let ok = match res {
                        Ok(r) => {
                            let code = r.status();
                            // every sample is new and in order: a 4xx (rejected sample) would be a bug
                            assert!(
                                code.is_success() || code.is_server_error(),
                                "writer {w}: unexpected {code}: {}",
                                r.text().await.unwrap_or_default()
                            );
                            code.is_success()
                        }
                        Err(_) => false,
                    };
                    ledger.push((t, ok));
                    t += SAMPLES_PER_BATCH;
                    if !ok {
                        tokio::time::sleep(Duration::from_millis(20)).await;
                    }
                }
                (ledger, t)
            }));
        }
        let (mut sent, mut acked) = (0, 0);
        for (w, task) in tasks.into_iter().enumerate() {
            let (ledger, t) = task.await.unwrap();
            self.next_t[w] = t;
            for (t0, ok) in ledger {
                sent += 1;
                acked += usize::from(ok);
                self.batches[w].push((t0, ok));
            }
        }
        (sent, acked, sent - acked)
    }

    /// Per series: the acknowledged timestamps and every sent timestamp.
    fn expected(&self) -> (BTreeMap<usize, BTreeSet<i64>>, BTreeMap<usize, BTreeSet<i64>>) {
        let (mut acked, mut sent): (BTreeMap<usize, BTreeSet<i64>>, BTreeMap<usize, BTreeSet<i64>>) =
            Default::default();
        for (w, batches) in self.batches.iter().enumerate() {
            for &(t0, ok) in batches {
                for i in (w..SERIES).step_by(WRITERS) {
                    for t in t0..t0 + SAMPLES_PER_BATCH {
                        sent.entry(i).or_default().insert(t);
                        if ok {
                            acked.entry(i).or_default().insert(t);
                        }
                    }
                }
            }
        }
        (acked, sent)
    }
}

/// Checks found ⊇ acknowledged and found ⊆ sent (with the right values); returns (acked, found).
fn check(load: &Load, found: &BTreeMap<usize, BTreeMap<i64, f64>>, when: &str, log: &Path) -> (usize, usize) {
    let (acked, sent) = load.expected();
    let mut missing: Vec<(usize, i64)> = Vec::new();
    for (&i, ts) in &acked {
        let f = found.get(&i);
        missing.extend(ts.iter().filter(|t| f.is_none_or(|f| !f.contains_key(t))).map(|&t| (i, t)));
    }
    let n_acked: usize = acked.values().map(BTreeSet::len).sum();
    let n_found: usize = found.values().map(BTreeMap::len).sum();
    assert!(
        missing.is_empty(),
        "{when}: {} of {n_acked} acknowledged samples are missing, first: {:?}\n{}",
        missing.len(),
        &missing[..missing.len().min(10)],
        read_log(log)
    );
    for (&i, samples) in found {
        let s = sent.get(&i).unwrap_or_else(|| panic!("{when}: series {i} was never sent"));
        for (&t, &v) in samples {
            assert!(s.contains(&t), "{when}: series {i} has a sample at {t} that was never sent");
            assert_eq!(v, value_of(i, t, load.base), "{when}: series {i} at {t}: wrong value");
        }
    }
    (n_acked, n_found)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn acknowledged_writes_survive_sigkill() {
    let tmp = tempfile::tempdir().unwrap();
    let data = tmp.path().join("data");
    let log = tmp.path().join("up.log");
    let now = std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).unwrap().as_millis() as i64;
    // well inside the head's window (max_t - block/2) and the query range below, never in the future
    let base = now - 30 * 60_000;
    let mut load = Load::new(base);
    let mut up = start_up(&data, &log).await;

    for round in 1..=2 {
        let stop = Arc::new(AtomicBool::new(false));
        let url = up.0.url("/api/v1/write");
        let writers = {
            let stop = stop.clone();
            let load = &mut load;
            async move { load.run(url, stop).await }
        };
        let killer = async {
            tokio::time::sleep(Duration::from_millis(2500)).await;
            // SIGKILL while the writers are still sending
            up.kill9();
            // keep the writers going against the dead port for a moment, then stop them
            tokio::time::sleep(Duration::from_millis(200)).await;
            stop.store(true, Ordering::SeqCst);
        };
        let ((sent, acked, failed), ()) = tokio::join!(writers, killer);
        println!("round {round}: {sent} batches sent, {acked} acknowledged, {failed} not acknowledged");
        assert!(acked > 0, "round {round}: no batch was acknowledged\n{}", read_log(&log));
        assert!(failed > 0, "round {round}: the kill did not interrupt any write");

        up = start_up(&data, &log).await;
        let found = up.samples(now + 60_000, "1h").await;
        let (n_acked, n_found) = check(&load, &found, &format!("after kill {round}"), &log);
        println!(
            "round {round}: after SIGKILL + restart: {n_acked} samples acknowledged, {n_found} found ({} series)",
            found.len()
        );
        assert_eq!(found.len(), SERIES, "every series was acknowledged at least once");
    }

    // a clean stop cuts the heads into blocks; the restart serves the same samples once
    up.stop().await;
    let bucket = engine::Bucket::local(data.join("bucket")).unwrap();
    let blocks = bucket.list_blocks().await.unwrap();
    assert!(!blocks.is_empty(), "SIGTERM cut no block\n{}", read_log(&log));
    let up = start_up(&data, &log).await;
    let found = up.samples(now + 60_000, "1h").await;
    let (n_acked, n_found) = check(&load, &found, "after SIGTERM + restart", &log);
    println!("after SIGTERM + restart: {n_acked} acknowledged, {n_found} found in {} block(s)", blocks.len());
    up.stop().await;
}
