//! Crash safety of remote write: a load generator (several concurrent writers) sends batches to
//! `strata up` and records exactly which samples got a 2xx answer; the process is killed with
//! SIGKILL while writes are in flight, restarted on the same data dir, and PromQL must return every
//! acknowledged sample (and nothing that was never sent). Two kill rounds, then a clean stop
//! (SIGTERM cuts the heads into blocks) and a last restart that must serve the same samples.
#![allow(clippy::unwrap_used, clippy::expect_used)]

mod common;

use std::collections::{BTreeMap, BTreeSet};
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::{Duration, Instant};

use common::*;
use engine::Labels;
use serde_json::Value;

const METRIC: &str = "crash_test";
const SERIES: usize = 240;
const WRITERS: usize = 6;
const SAMPLES_PER_BATCH: i64 = 4;

struct Up {
    daemon: Daemon,
    base: String,
    log: PathBuf,
}

fn log_of(path: &Path) -> String {
    std::fs::read_to_string(path).unwrap_or_default()
}

async fn start_up(data: &Path, log: &Path) -> Up {
    let addr = format!("127.0.0.1:{}", free_port());
    // append: the log keeps every incarnation of the process
    let log_file = std::fs::OpenOptions::new().create(true).append(true).open(log).unwrap();
    let child = Command::new(strata_bin())
        .args(["up", "--data", data.to_str().unwrap(), "--http-address", &addr, "--receive.cut-interval", "1s"])
        .args(["--grpc-address", &format!("127.0.0.1:{}", free_port())])
        .env("RUST_LOG", "info")
        .stdout(Stdio::null())
        .stderr(log_file)
        .spawn()
        .unwrap();
    let mut up = Up { daemon: Daemon(child), base: format!("http://{addr}"), log: log.to_path_buf() };
    let deadline = Instant::now() + Duration::from_secs(60);
    loop {
        if let Ok(r) = reqwest::get(format!("{}/-/ready", up.base)).await
            && r.status() == 200
        {
            return up;
        }
        if let Some(st) = up.daemon.0.try_wait().unwrap() {
            panic!("strata up exited with {st} before getting ready\n{}", log_of(&up.log));
        }
        assert!(Instant::now() < deadline, "strata up did not get ready within 60 s\n{}", log_of(&up.log));
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

impl Up {
    /// SIGKILL: no shutdown path runs.
    fn kill9(mut self) {
        self.daemon.0.kill().unwrap();
        let st = self.daemon.0.wait().unwrap();
        assert!(!st.success(), "killed process reported success: {st}");
    }

    /// SIGTERM and wait for a clean exit.
    fn stop(mut self) {
        let pid = self.daemon.0.id().to_string();
        assert!(Command::new("kill").args(["-TERM", &pid]).status().unwrap().success());
        let deadline = Instant::now() + Duration::from_secs(60);
        loop {
            if let Some(st) = self.daemon.0.try_wait().unwrap() {
                assert!(st.success(), "strata up exited with {st}\n{}", log_of(&self.log));
                return;
            }
            assert!(Instant::now() < deadline, "strata up did not stop on SIGTERM\n{}", log_of(&self.log));
            std::thread::sleep(Duration::from_millis(50));
        }
    }

    /// Every sample of `METRIC` in the last `range` before `at_ms`, per series index (label `s`).
    async fn samples(&self, at_ms: i64, range: &str) -> BTreeMap<usize, BTreeMap<i64, f64>> {
        let q = format!("{METRIC}[{range}]");
        let r = reqwest::Client::new()
            .post(format!("{}/api/v1/query", self.base))
            .form(&[("query", q.as_str()), ("time", &format!("{:.3}", at_ms as f64 / 1000.0))])
            .send()
            .await
            .unwrap();
        let text = r.text().await.unwrap();
        let v: Value = serde_json::from_str(&text).unwrap_or_else(|e| panic!("{q}: {e}: {text}"));
        assert_eq!(v["status"], "success", "{q}: {text}\n{}", log_of(&self.log));
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
                    let body =
                        ingest::remote_write::encode_write_request(&ingest::remote_write::to_write_request(&series))
                            .unwrap();
                    let res = client
                        .post(&url)
                        .header("Content-Type", "application/x-protobuf")
                        .header("Content-Encoding", "snappy")
                        .header("X-Prometheus-Remote-Write-Version", "0.1.0")
                        .body(body)
                        .send()
                        .await;
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
        log_of(log)
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
        let url = format!("{}/api/v1/write", up.base);
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
        assert!(acked > 0, "round {round}: no batch was acknowledged\n{}", log_of(&log));
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
    up.stop();
    let bucket = engine::Bucket::local(data.join("bucket")).unwrap();
    let blocks = bucket.list_blocks().await.unwrap();
    assert!(!blocks.is_empty(), "SIGTERM cut no block\n{}", log_of(&log));
    let up = start_up(&data, &log).await;
    let found = up.samples(now + 60_000, "1h").await;
    let (n_acked, n_found) = check(&load, &found, "after SIGTERM + restart", &log);
    println!("after SIGTERM + restart: {n_acked} acknowledged, {n_found} found in {} block(s)", blocks.len());
    up.stop();
}
