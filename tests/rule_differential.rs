//! Differential: the same rule file evaluated by a real Prometheus 2.42 and by `strata rule`
//! (querying that Prometheus) gives the same recorded series and the same `ALERTS` states at the
//! same evaluation timestamps. The expressions depend only on the evaluation time (`time()`), so
//! any difference is a difference in evaluation timing (the group's hash offset) or in alert
//! state handling (`for`, resolve, restore gating), not in the data.
#![allow(clippy::unwrap_used, clippy::expect_used)]

mod common;

use std::collections::BTreeMap;
use std::process::Command;
use std::time::Duration;

use common::*;
use serde_json::Value;

const RULES: &str = r#"groups:
  - name: diff
    interval: 1s
    rules:
      - record: eval_time_seconds
        expr: vector(time())
      - record: eval_time_mod
        expr: vector(time()) % 7
        labels:
          kind: mod
      - alert: HalfTheTime
        expr: (vector(time()) % 8) < 4
        for: 2s
        labels:
          severity: ticket
"#;

fn now_s() -> f64 {
    std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).unwrap().as_secs_f64()
}

/// Raw samples of `selector[range]` at `t` from a Prometheus HTTP API: series key -> points.
async fn raw(base: &str, selector: &str, t: f64, drop: &[&str]) -> BTreeMap<String, Vec<(i64, String)>> {
    let url = format!("{base}/api/v1/query?query={}&time={t}", urlencode(selector));
    let v: Value = serde_json::from_str(&reqwest::get(&url).await.unwrap().text().await.unwrap()).unwrap();
    assert_eq!(v["status"], "success", "{url}: {v}");
    let mut out = BTreeMap::new();
    for (key, pts) in raw_series(&v, drop) {
        out.entry(key).or_insert_with(Vec::new).extend(pts);
    }
    out
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn rule_results_agree_with_prometheus_2_42() {
    let Some(prometheus) = peer("prometheus") else { return };
    let tmp = tempfile::tempdir().unwrap();
    // both read the file by the same path: the group's evaluation offset hashes file and name
    let rules = tmp.path().join("diff.yml");
    std::fs::write(&rules, RULES).unwrap();
    let cfg = tmp.path().join("prometheus.yml");
    std::fs::write(
        &cfg,
        format!("global:\n  evaluation_interval: 1s\nrule_files:\n  - {}\nscrape_configs: []\n", rules.display()),
    )
    .unwrap();
    let prom = format!("http://127.0.0.1:{}", free_port());
    let mut cmd = Command::new(prometheus);
    cmd.arg(format!("--config.file={}", cfg.display()))
        .arg(format!("--storage.tsdb.path={}", tmp.path().join("prom").display()))
        .arg(format!("--web.listen-address={}", prom.trim_start_matches("http://")));
    let _prom = start_daemon(&mut cmd, &prom, &tmp.path().join("prometheus.log")).await;

    let grpc = format!("127.0.0.1:{}", free_port());
    let ruler = Strata::start(
        &[
            "rule",
            "--rule-file",
            rules.to_str().unwrap(),
            "--query",
            &prom,
            "--data-dir",
            tmp.path().join("ruler").to_str().unwrap(),
            "--grpc-address",
            &grpc,
        ],
        &tmp.path().join("ruler.log"),
    )
    .await;
    let started = now_s();
    let q = Strata::start(&["query", "--endpoint", &grpc], &tmp.path().join("query.log")).await;
    tokio::time::sleep(Duration::from_secs(14)).await;

    let t = now_s() - 1.0;
    let window = format!("{}s", (t - started).floor() as i64 + 1);
    for selector in ["eval_time_seconds", "eval_time_mod", "ALERTS", "ALERTS_FOR_STATE"] {
        let sel = format!("{selector}[{window}]");
        let p = raw(&prom, &sel, t, &[]).await;
        let s = raw(&q.base, &sel, t, &[]).await;
        // strata started later: compare from its third evaluation on (its first two come before
        // the `for` state restore, when Prometheus too writes no ALERTS)
        let first = s.values().flat_map(|v| v.iter().map(|p| p.0)).min().unwrap_or(i64::MAX);
        let from = first + 2000;
        let cut = |m: &BTreeMap<String, Vec<(i64, String)>>| -> BTreeMap<String, Vec<(i64, String)>> {
            m.iter()
                .map(|(k, v)| (k.clone(), v.iter().filter(|p| p.0 >= from).cloned().collect::<Vec<_>>()))
                .filter(|(_, v)| !v.is_empty())
                .collect()
        };
        let (p, s) = (cut(&p), cut(&s));
        assert!(!p.is_empty(), "{selector}: Prometheus recorded nothing after {from}");
        let n: usize = s.values().map(Vec::len).sum();
        assert!(n >= 2, "{selector}: strata recorded only {n} samples: {s:?}");
        assert_eq!(p, s, "{selector}: Prometheus (left) and strata rule (right) differ");
    }
    q.stop().await;
    ruler.stop().await;
}
