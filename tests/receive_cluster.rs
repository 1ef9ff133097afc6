//! A receive cluster: three `strata receive` processes on loopback share a Thanos hashrings file
//! (endpoints: their gRPC addresses; they forward over thanos.WriteableStore) with replication
//! factor 3 (write quorum 2) and one FILESYSTEM bucket, each with its own
//! `--tsdb.path` and a distinct `receive_replica` external label. Concurrent writers send batches
//! round-robin to the receivers and record which samples got a 2xx answer. One receiver is killed
//! with SIGKILL mid-run: writes through the two others must keep succeeding; it is restarted on its
//! own dir and the writes go on. After SIGTERM of all three (which cuts the heads into blocks) the
//! bucket must hold every acknowledged sample in at least two replicas, and nothing never sent.
#![allow(clippy::unwrap_used, clippy::expect_used)]

mod common;

use std::collections::{BTreeMap, BTreeSet};
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use common::*;
use engine::bucket::Bucket;
use engine::bucket_source::BucketSource;
use engine::{Labels, Matcher, SelectRequest, SeriesBatch, SeriesSource};
use futures::TryStreamExt;

const METRIC: &str = "cluster_test";
const SERIES: usize = 120;
const WRITERS: usize = 4;
const SAMPLES_PER_BATCH: i64 = 3;
const NODES: usize = 3;
/// The receiver that is killed and restarted.
const VICTIM: usize = 1;

fn all_logs(nodes: &[Receiver]) -> String {
    nodes.iter().enumerate().map(|(i, n)| format!("--- receiver {i} ({}) ---\n{}", n.rw, n.log_text())).collect()
}

fn value_of(idx: usize, t: i64, base: i64) -> f64 {
    (idx as i64 * 10_000_000 + (t - base)) as f64
}

fn labels_of(idx: usize) -> Labels {
    Labels::from_pairs([("__name__", METRIC.to_string()), ("s", format!("{idx:03}"))])
}

/// Phase of the run a batch was sent in.
const BEFORE: usize = 0;
const DOWN: usize = 1;
/// The killed receiver is starting again (writes to it may fail or succeed).
const RESTART: usize = 2;
const AFTER: usize = 3;
const PHASES: [&str; 4] = ["before kill", "while down", "while restarting", "after restart"];

/// One batch of a writer: first timestamp, receiver it went to, phase when sent and when answered,
/// HTTP status (None: no answer).
#[derive(Debug, Clone)]
struct Batch {
    writer: usize,
    t0: i64,
    node: usize,
    phase_sent: usize,
    phase_done: usize,
    status: Option<u16>,
    error: String,
}

impl Batch {
    fn acked(&self) -> bool {
        self.status.is_some_and(|s| (200..300).contains(&s))
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn replicated_writes_survive_a_killed_receiver() {
    let tmp = tempfile::tempdir().unwrap();
    let bucket_dir = tmp.path().join("bucket");
    let bucket_cfg = fs_bucket_config(tmp.path(), &bucket_dir);
    let hashrings = tmp.path().join("hashrings.json");
    let mut nodes: Vec<Receiver> = (0..NODES)
        .map(|i| {
            let label = format!("receive_replica=\"{i}\"");
            let mut n = Receiver::new(tmp.path(), &i.to_string(), &bucket_cfg, &["--label", &label]);
            let grpc = n.grpc.clone();
            for a in [
                "--receive.hashrings-file",
                hashrings.to_str().unwrap(),
                "--receive.local-endpoint",
                &grpc,
                "--receive.replication-factor",
                "3",
                "--receive.forward-timeout",
                "5s",
            ] {
                n.args.push(a.to_string());
            }
            n
        })
        .collect();
    let endpoints: Vec<&str> = nodes.iter().map(|n| n.grpc.as_str()).collect();
    std::fs::write(
        &hashrings,
        serde_json::json!([{"hashring": "default", "tenants": [], "endpoints": endpoints}]).to_string(),
    )
    .unwrap();
    for n in &mut nodes {
        n.start().await;
        // ready on HTTP; the remote-write listener is bound before the HTTP server starts
        assert!(std::net::TcpStream::connect(&n.rw).is_ok(), "{} not listening", n.rw);
    }

    let now = std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).unwrap().as_millis() as i64;
    let base = now - 30 * 60_000;
    let phase = Arc::new(AtomicUsize::new(BEFORE));
    let stop = Arc::new(AtomicBool::new(false));
    let ledger: Arc<Mutex<Vec<Batch>>> = Arc::default();
    let urls: Arc<Vec<String>> = Arc::new(nodes.iter().map(|n| format!("http://{}/api/v1/receive", n.rw)).collect());
    let client = reqwest::Client::builder().timeout(Duration::from_secs(15)).build().unwrap();
    let mut writers = Vec::new();
    for w in 0..WRITERS {
        let (client, urls, stop, phase, ledger) =
            (client.clone(), urls.clone(), stop.clone(), phase.clone(), ledger.clone());
        writers.push(tokio::spawn(async move {
            let mine: Vec<usize> = (w..SERIES).step_by(WRITERS).collect();
            let mut t = base;
            let mut k = w;
            while !stop.load(Ordering::SeqCst) {
                let node = k % NODES;
                k += 1;
                let series: Vec<(Labels, Vec<(i64, f64)>)> = mine
                    .iter()
                    .map(|&i| {
                        (labels_of(i), (0..SAMPLES_PER_BATCH).map(|j| (t + j, value_of(i, t + j, base))).collect())
                    })
                    .collect();
                let body = ingest::remote_write::encode(&series).unwrap();
                let phase_sent = phase.load(Ordering::SeqCst);
                let res = ingest::remote_write::post(&client, &urls[node], body).send().await;
                let (status, error) = match res {
                    Ok(r) => {
                        let s = r.status().as_u16();
                        (Some(s), r.text().await.unwrap_or_default())
                    }
                    Err(e) => (None, e.to_string()),
                };
                let b = Batch {
                    writer: w,
                    t0: t,
                    node,
                    phase_sent,
                    phase_done: phase.load(Ordering::SeqCst),
                    status,
                    error,
                };
                ledger.lock().unwrap().push(b);
                t += SAMPLES_PER_BATCH;
                tokio::time::sleep(Duration::from_millis(5)).await;
            }
        }));
    }

    tokio::time::sleep(Duration::from_secs(3)).await;
    phase.store(DOWN, Ordering::SeqCst);
    nodes[VICTIM].kill9();
    let killed_at = Instant::now();
    tokio::time::sleep(Duration::from_secs(3)).await;
    phase.store(RESTART, Ordering::SeqCst);
    nodes[VICTIM].start().await;
    println!("receiver {VICTIM} was down for {:?}", killed_at.elapsed());
    phase.store(AFTER, Ordering::SeqCst);
    tokio::time::sleep(Duration::from_secs(3)).await;
    stop.store(true, Ordering::SeqCst);
    for w in writers {
        w.await.unwrap();
    }
    for n in &mut nodes {
        n.stop().await;
    }
    let logs = all_logs(&nodes);
    let batches = ledger.lock().unwrap().clone();

    // what the writers saw, per phase (batches sent and answered in the same phase)
    let mut per_phase = [[0usize; 2]; 4];
    for b in &batches {
        if b.phase_sent == b.phase_done {
            per_phase[b.phase_sent][usize::from(b.acked())] += 1;
        }
    }
    for (p, name) in PHASES.iter().enumerate() {
        println!("batches {name}: {} acknowledged, {} not", per_phase[p][1], per_phase[p][0]);
    }
    println!("batches in all: {}", batches.len());
    // every batch sent and answered within one phase to a receiver that was up got a 2xx: quorum
    // 2 of 3 holds while one receiver is down
    let victim_down = |b: &Batch| b.node == VICTIM && (b.phase_sent == DOWN || b.phase_sent == RESTART);
    let bad: Vec<&Batch> =
        batches.iter().filter(|b| b.phase_sent == b.phase_done && !victim_down(b) && !b.acked()).collect();
    if let Some(b) = bad.first() {
        panic!(
            "{} writes to live receivers failed, first: to receiver {} in phase {:?}: {:?} {}\n{logs}",
            bad.len(),
            b.node,
            PHASES[b.phase_sent],
            b.status,
            b.error
        );
    }
    // writes to the killed receiver failed (nothing listens)
    let to_dead: Vec<&Batch> =
        batches.iter().filter(|b| b.phase_sent == DOWN && b.phase_done == DOWN && b.node == VICTIM).collect();
    assert!(!to_dead.is_empty(), "no write went to the killed receiver while it was down");
    assert!(to_dead.iter().all(|b| b.status.is_none()), "{:?}", to_dead.iter().find(|b| b.status.is_some()));
    for p in [BEFORE, DOWN, AFTER] {
        assert!(per_phase[p][1] > 0, "no write acknowledged {}\n{logs}", PHASES[p]);
    }

    // expected samples per series: acknowledged (with their phase) and sent
    let mut acked: BTreeMap<(usize, i64), (usize, usize)> = BTreeMap::new();
    let mut sent: BTreeSet<(usize, i64)> = BTreeSet::new();
    for b in &batches {
        for i in (b.writer..SERIES).step_by(WRITERS) {
            for t in b.t0..b.t0 + SAMPLES_PER_BATCH {
                sent.insert((i, t));
                if b.acked() {
                    acked.insert((i, t), (b.phase_sent, b.phase_done));
                }
            }
        }
    }

    // read the shared bucket: one series per (replica, s)
    let bucket = Bucket::local(&bucket_dir).unwrap();
    let blocks = bucket.list_blocks().await.unwrap();
    let mut replicas_with_blocks = BTreeSet::new();
    for ulid in &blocks {
        let meta = bucket.read_meta(ulid).await.unwrap();
        assert_eq!(meta.thanos.source, "receive");
        assert_eq!(meta.thanos.labels.get("tenant_id").map(String::as_str), Some("default-tenant"));
        replicas_with_blocks.insert(meta.thanos.labels.get("receive_replica").cloned().unwrap_or_default());
    }
    let want: BTreeSet<String> = (0..NODES).map(|i| i.to_string()).collect();
    assert_eq!(replicas_with_blocks, want, "every receiver uploaded blocks with its replica label: {blocks:?}\n{logs}");
    let src = BucketSource::new(bucket);
    src.sync().await.unwrap();
    let req = SelectRequest {
        matchers: vec![Matcher::equal("__name__", METRIC)],
        min_t: i64::MIN,
        max_t: i64::MAX,
        ..Default::default()
    };
    let out: Vec<SeriesBatch> = src.select(&req).await.unwrap().try_collect().await.unwrap();
    // (series, t) -> replicas holding it
    let mut copies: BTreeMap<(usize, i64), BTreeSet<usize>> = BTreeMap::new();
    let mut per_replica = [0usize; NODES];
    for sb in &out {
        for k in 0..sb.num_series() {
            let (labels, ts, vs) = sb.series(k);
            let r: usize =
                labels.get("receive_replica").unwrap_or_else(|| panic!("no replica label: {labels}")).parse().unwrap();
            let i: usize = labels.get("s").unwrap().parse().unwrap();
            for (&t, &v) in ts.iter().zip(vs) {
                assert!(sent.contains(&(i, t)), "replica {r}: series {i} has a sample at {t} that was never sent");
                assert_eq!(v, value_of(i, t, base), "replica {r}: series {i} at {t}: wrong value");
                assert!(copies.entry((i, t)).or_default().insert(r), "replica {r}: series {i} at {t} twice");
                per_replica[r] += 1;
            }
        }
    }
    let missing: Vec<_> = acked.keys().filter(|k| !copies.contains_key(k)).collect();
    let under: Vec<_> =
        acked.keys().filter(|k| copies.get(k).is_some_and(|c| c.len() < 2)).map(|k| (k, &copies[k])).collect();
    let mut acked_per_phase = [0usize; 4];
    let mut victim_has = [0usize; 4];
    let mut in_all_three = 0;
    // acknowledged while all three receivers were up (sent and answered before the kill, or after
    // the restart): all three replicas answered, so all three must hold them
    let mut not_in_all: Vec<((usize, i64), &BTreeSet<usize>)> = Vec::new();
    for (k, &(p, done)) in &acked {
        acked_per_phase[p] += 1;
        if let Some(c) = copies.get(k) {
            victim_has[p] += usize::from(c.contains(&VICTIM));
            in_all_three += usize::from(c.len() == NODES);
            if p == done && (p == BEFORE || p == AFTER) && c.len() < NODES {
                not_in_all.push((*k, c));
            }
        }
    }
    println!(
        "samples: {} sent, {} acknowledged (per phase: {acked_per_phase:?}), {} in the union, \
         per replica {per_replica:?}, acknowledged ones in all 3 replicas: {in_all_three}, \
         of those on the killed replica (per phase): {victim_has:?}",
        sent.len(),
        acked.len(),
        copies.len()
    );
    assert!(
        missing.is_empty(),
        "{} acknowledged samples in no replica, first {:?}\n{logs}",
        missing.len(),
        &missing[..missing.len().min(5)]
    );
    assert!(
        under.is_empty(),
        "{} acknowledged samples in fewer than 2 replicas, first {:?}\n{logs}",
        under.len(),
        &under[..under.len().min(5)]
    );
    // the killed receiver kept what it acknowledged before the kill (WAL replay) and took the writes
    // after its restart
    assert!(
        not_in_all.is_empty(),
        "{} samples acknowledged while all receivers were up are not in all 3 replicas, first {:?}\n{logs}",
        not_in_all.len(),
        &not_in_all[..not_in_all.len().min(5)]
    );
    assert!(victim_has[BEFORE] > 0 && victim_has[AFTER] > 0, "{victim_has:?}\n{logs}");
}
