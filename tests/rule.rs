//! End to end: `strata rule`.
//!
//! - Rule files that `promtool check rules` (Prometheus 2.42) accepts load, and the ones it
//!   rejects are rejected.
//! - `strata rule` evaluates against `strata up` (fed by remote write): recorded series and
//!   `ALERTS` are served over its StoreAPI (read through `strata query --endpoint`); an alert goes
//!   pending, fires, shows in a real Alertmanager's `/api/v2/alerts` with its labels (external
//!   labels added, `--alert.label-drop` removed), templated annotations and generator URL, then
//!   resolves; `/api/v1/rules`, `/api/v1/alerts`, `/metrics`, a bad and a good reload; on shutdown
//!   the head is cut into a block with `thanos.source` "ruler" and the external labels.
//! - A pending alert's `for` state is restored from `ALERTS_FOR_STATE` after a restart.
#![allow(clippy::unwrap_used, clippy::expect_used)]

mod common;

use std::path::Path;
use std::process::Command;
use std::time::{Duration, Instant};

use common::*;
use engine::Labels;
use serde_json::Value;

fn now_ms() -> i64 {
    std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).unwrap().as_millis() as i64
}

#[test]
fn rule_files_are_checked_as_promtool_checks_them() {
    let Some(promtool) = peer("promtool") else { return };
    let tmp = tempfile::tempdir().unwrap();
    let cases: &[(&str, &str)] = &[
        (
            "good_recording",
            "groups:\n- name: g\n  interval: 30s\n  rules:\n  - record: job:up:sum\n    expr: sum by (job) (up)\n    labels:\n      team: a\n",
        ),
        (
            "good_alert",
            "groups:\n- name: g\n  limit: 5\n  rules:\n  - alert: Down\n    expr: up == 0\n    for: 5m\n    keep_firing_for: 1m\n    labels:\n      severity: '{{ if gt $value 1.0 }}page{{ else }}ticket{{ end }}'\n    annotations:\n      summary: '{{ $labels.instance }} down: {{ $value | humanize }} {{ humanizePercentage 0.5 }} {{ printf \"%.1f\" $value }}'\n",
        ),
        (
            "good_two_groups",
            "groups:\n- name: a\n  rules:\n  - record: a\n    expr: vector(1)\n- name: b\n  rules: []\n",
        ),
        ("good_empty", "groups: []\n"),
        ("bad_both", "groups:\n- name: g\n  rules:\n  - record: a\n    alert: b\n    expr: up\n"),
        ("bad_neither", "groups:\n- name: g\n  rules:\n  - expr: up\n"),
        ("bad_expr", "groups:\n- name: g\n  rules:\n  - record: a\n    expr: sum(up\n"),
        ("bad_no_expr", "groups:\n- name: g\n  rules:\n  - record: a\n"),
        ("bad_record_name", "groups:\n- name: g\n  rules:\n  - record: a-b\n    expr: up\n"),
        ("bad_for_on_record", "groups:\n- name: g\n  rules:\n  - record: a\n    expr: up\n    for: 1m\n"),
        (
            "bad_annotation_on_record",
            "groups:\n- name: g\n  rules:\n  - record: a\n    expr: up\n    annotations:\n      x: y\n",
        ),
        ("bad_label_name", "groups:\n- name: g\n  rules:\n  - alert: a\n    expr: up\n    labels:\n      0x: y\n"),
        (
            "bad_template",
            "groups:\n- name: g\n  rules:\n  - alert: a\n    expr: up\n    annotations:\n      x: '{{ $labels.x '\n",
        ),
        ("bad_duplicate_group", "groups:\n- name: g\n  rules: []\n- name: g\n  rules: []\n"),
        ("bad_unknown_field", "groups:\n- name: g\n  rules:\n  - alert: a\n    expr: up\n    fro: 1m\n"),
        ("bad_duration", "groups:\n- name: g\n  interval: often\n  rules: []\n"),
        ("bad_empty_group_name", "groups:\n- name: ''\n  rules: []\n"),
    ];
    for (name, text) in cases {
        let path = tmp.path().join(format!("{name}.yml"));
        std::fs::write(&path, text).unwrap();
        let out = Command::new(&promtool).args(["check", "rules"]).arg(&path).output().unwrap();
        let promtool_ok = out.status.success();
        let ours = query::rules::file::load_files(std::slice::from_ref(&path), 60_000);
        assert_eq!(
            ours.is_ok(),
            promtool_ok,
            "{name}: promtool {} ({}), strata {:?}",
            if promtool_ok { "accepts" } else { "rejects" },
            String::from_utf8_lossy(&out.stderr).trim(),
            ours.map(|g| g.len())
        );
        assert_eq!(promtool_ok, name.starts_with("good"), "{name}: the case is mislabelled");
        if let Err(e) = ours {
            assert!(e.contains(&path.display().to_string()), "{name}: the error does not name the file: {e}");
            // YAML errors name the file, line and column instead
            if text.contains("rules:\n  -") && *name != "bad_unknown_field" {
                assert!(e.contains("group \"g\", rule 1"), "{name}: the error does not name group and rule: {e}");
            }
        }
    }
}

/// A running Alertmanager 0.25 (Debian `prometheus-alertmanager`).
async fn start_alertmanager(dir: &Path) -> Option<(Daemon, String)> {
    let bin = peer("prometheus-alertmanager")?;
    let cfg = dir.join("am.yml");
    std::fs::write(
        &cfg,
        "route:\n  receiver: none\n  group_wait: 1s\n  group_interval: 1s\n  repeat_interval: 1h\nreceivers:\n- name: none\n",
    )
    .unwrap();
    let base = format!("http://127.0.0.1:{}", free_port());
    let mut cmd = Command::new(bin);
    cmd.arg(format!("--config.file={}", cfg.display()))
        .arg(format!("--storage.path={}", dir.join("am-data").display()))
        .arg(format!("--web.listen-address={}", base.trim_start_matches("http://")))
        .arg("--cluster.listen-address=");
    let d = start_daemon(&mut cmd, &base, &dir.join("alertmanager.log")).await;
    Some((d, base))
}

async fn get_json(url: &str) -> Value {
    let r = reqwest::Client::new().get(url).send().await.unwrap();
    let text = r.text().await.unwrap();
    serde_json::from_str(&text).unwrap_or_else(|e| panic!("{url}: {e}: {text}"))
}

/// Polls `f` every 200 ms until it returns Some, for at most `secs` seconds.
async fn wait_for<T, F, Fut>(secs: u64, what: &str, mut f: F) -> T
where
    F: FnMut() -> Fut,
    Fut: std::future::Future<Output = Option<T>>,
{
    let end = Instant::now() + Duration::from_secs(secs);
    loop {
        if let Some(v) = f().await {
            return v;
        }
        assert!(Instant::now() < end, "timed out waiting for {what}");
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
}

const RULES: &str = r#"
groups:
  - name: fast
    interval: 1s
    rules:
      - record: job:temp:max
        expr: max by (job) (temperature)
        labels:
          source: rule
      - alert: TooHot
        expr: temperature > 50
        for: 2s
        labels:
          severity: '{{ if gt $value 80.0 }}page{{ else }}ticket{{ end }}'
        annotations:
          summary: '{{ $labels.instance }} of {{ $labels.job }} is at {{ $value | humanize }} degrees in {{ $externalLabels.cluster }}'
      - record: broken
        expr: temperature[1m]
"#;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn rules_alert_through_alertmanager_and_store_results() {
    let tmp = tempfile::tempdir().unwrap();
    let Some((_am, am_base)) = start_alertmanager(tmp.path()).await else { return };

    // the data: `strata up`, fed by remote write
    let up_grpc = format!("127.0.0.1:{}", free_port());
    let up = Strata::start(
        &["up", "--data", tmp.path().join("up").to_str().unwrap(), "--grpc-address", &up_grpc],
        &tmp.path().join("up.log"),
    )
    .await;
    let write = |value: f64| {
        let url = up.url("/api/v1/write");
        async move {
            let t = now_ms();
            let s: Vec<(Labels, Vec<(i64, f64)>)> = vec![(
                Labels::from_pairs([("__name__", "temperature"), ("job", "oven"), ("instance", "o-1")]),
                vec![(t, value)],
            )];
            let (code, msg) = post_remote_write(&url, ingest::remote_write::encode(&s).unwrap()).await;
            assert_eq!(code, 200, "{msg}");
        }
    };
    write(90.0).await;

    let rules = tmp.path().join("rules");
    std::fs::create_dir_all(&rules).unwrap();
    std::fs::write(rules.join("a.yml"), RULES).unwrap();
    let glob = format!("{}/*.yml", rules.display());
    let rule_grpc = format!("127.0.0.1:{}", free_port());
    let data = tmp.path().join("ruler");
    let bucket = tmp.path().join("bucket");
    let cfg = fs_bucket_config(tmp.path(), &bucket);
    let ruler = Strata::start(
        &[
            "rule",
            "--rule-file",
            &glob,
            "--query",
            &format!("127.0.0.1:{}", free_port()), // nothing listens: the next endpoint answers
            "--query",
            &up.base,
            "--data-dir",
            data.to_str().unwrap(),
            "--objstore.config-file",
            cfg.to_str().unwrap(),
            "--grpc-address",
            &rule_grpc,
            "--label",
            "cluster=\"eu1\"",
            "--label",
            "replica=\"r1\"",
            "--alert.label-drop",
            "replica",
            "--alertmanagers.url",
            &am_base,
            "--alert.query-url",
            "http://query.example:9090",
            "--resend-delay",
            "1s",
        ],
        &tmp.path().join("ruler.log"),
    )
    .await;

    // pending first (for: 2s), then firing
    let pending = wait_for(20, "a pending alert", || async {
        let v = ruler.get("/api/v1/alerts").await.1;
        let a = v["data"]["alerts"].as_array()?.first()?.clone();
        Some(a)
    })
    .await;
    assert_eq!(pending["state"], "pending", "{pending}");
    let firing = wait_for(20, "the alert to fire", || async {
        let v = ruler.get("/api/v1/alerts").await.1;
        let a = v["data"]["alerts"].as_array()?.first()?.clone();
        (a["state"] == "firing").then_some(a)
    })
    .await;
    assert_eq!(firing["labels"]["alertname"], "TooHot");
    assert_eq!(firing["labels"]["severity"], "page");
    assert_eq!(firing["annotations"]["summary"], "o-1 of oven is at 90 degrees in eu1");
    assert_eq!(firing["value"], "9e+01");

    // in Alertmanager, with external labels (replica dropped), annotations and generator URL
    let am_alert = wait_for(20, "the alert in Alertmanager", || async {
        let v = get_json(&format!("{am_base}/api/v2/alerts")).await;
        v.as_array()?.iter().find(|a| a["labels"]["alertname"] == "TooHot").cloned()
    })
    .await;
    let labels = am_alert["labels"].as_object().unwrap();
    let mut names: Vec<&str> = labels.keys().map(String::as_str).collect();
    names.sort();
    // tenant_id: the data's own label (strata up's receive tenant)
    assert_eq!(names, ["alertname", "cluster", "instance", "job", "severity", "tenant_id"], "{am_alert}");
    assert_eq!(am_alert["labels"]["cluster"], "eu1");
    assert_eq!(am_alert["annotations"]["summary"], "o-1 of oven is at 90 degrees in eu1");
    assert_eq!(
        am_alert["generatorURL"], "http://query.example:9090/graph?g0.expr=temperature+%3E+50&g0.tab=1",
        "{am_alert}"
    );
    assert_eq!(am_alert["status"]["state"], "active", "{am_alert}");

    // /api/v1/rules: health per rule, the broken one in error, the others fine
    let (code, rules_json) = ruler.get("/api/v1/rules").await;
    assert_eq!(code, 200);
    let group = &rules_json["data"]["groups"][0];
    assert_eq!((group["name"].as_str(), group["interval"].as_f64()), (Some("fast"), Some(1.0)));
    assert!(group["file"].as_str().unwrap().ends_with("a.yml"));
    let r = group["rules"].as_array().unwrap();
    assert_eq!(r.len(), 3);
    assert_eq!((r[0]["type"].as_str(), r[0]["health"].as_str()), (Some("recording"), Some("ok")));
    assert_eq!((r[1]["type"].as_str(), r[1]["state"].as_str()), (Some("alerting"), Some("firing")));
    assert_eq!(r[1]["duration"], 2.0);
    assert_eq!(r[2]["health"], "err", "{}", r[2]);
    assert!(!r[2]["lastError"].as_str().unwrap().is_empty());
    assert!(group["lastEvaluation"].as_str().unwrap().starts_with("20"));
    let (_, only_alerts) = ruler.get("/api/v1/rules?type=alert").await;
    assert_eq!(only_alerts["data"]["groups"][0]["rules"].as_array().unwrap().len(), 1);
    let (_, by_name) = ruler.get("/api/v1/rules?rule_name[]=broken&file[]=nope").await;
    assert_eq!(by_name["data"]["groups"].as_array().unwrap().len(), 0);
    let (code, _) = ruler.get("/api/v1/rules?type=other").await;
    assert_eq!(code, 400);

    // the results over the StoreAPI, through a querier
    let q = Strata::start(&["query", "--endpoint", &rule_grpc], &tmp.path().join("query.log")).await;
    let recorded = wait_for(20, "the recorded series through the querier", || async {
        let (_, v) = q.get(&format!("/api/v1/query?query=job:temp:max&time={}", now_ms() as f64 / 1000.0)).await;
        let s = v["data"]["result"].as_array()?.first()?.clone();
        Some(s)
    })
    .await;
    assert_eq!(
        recorded["metric"],
        serde_json::json!({"__name__": "job:temp:max", "job": "oven", "source": "rule", "cluster": "eu1", "replica": "r1"})
    );
    assert_eq!(recorded["value"][1], "90");
    let (_, alerts_series) = q.get(&format!("/api/v1/query?query=ALERTS&time={}", now_ms() as f64 / 1000.0)).await;
    let series = alerts_series["data"]["result"].as_array().unwrap();
    assert!(
        series.iter().any(|s| s["metric"]["alertstate"] == "firing" && s["metric"]["alertname"] == "TooHot"),
        "{alerts_series}"
    );

    // /metrics under Prometheus's names
    let (_, metrics) = ruler.text("/metrics").await;
    for want in [
        "prometheus_rule_evaluations_total{rule_group=",
        "prometheus_rule_evaluation_failures_total{rule_group=",
        "prometheus_rule_group_iterations_missed_total{rule_group=",
        "prometheus_rule_group_last_duration_seconds{rule_group=",
        "prometheus_notifications_sent_total{alertmanager=",
    ] {
        assert!(metrics.contains(want), "{want} missing:\n{metrics}");
    }

    // resolve: the temperature drops; Alertmanager no longer lists the alert as active
    write(20.0).await;
    wait_for(30, "the alert to resolve in Alertmanager", || async {
        let v = get_json(&format!("{am_base}/api/v2/alerts")).await;
        let active = v.as_array()?.iter().any(|a| a["labels"]["alertname"] == "TooHot");
        (!active).then_some(())
    })
    .await;
    let (_, v) = ruler.get("/api/v1/alerts").await;
    assert_eq!(v["data"]["alerts"].as_array().unwrap().len(), 0, "{v}");

    // a bad reload keeps the rules; a good one replaces them
    std::fs::write(rules.join("b.yml"), "groups:\n- name: x\n  rules:\n  - record: 1bad\n    expr: up\n").unwrap();
    let r = reqwest::Client::new().post(ruler.url("/-/reload")).send().await.unwrap();
    assert_eq!(r.status().as_u16(), 500);
    let why = r.text().await.unwrap();
    assert!(why.contains("b.yml") && why.contains("invalid recording rule name: 1bad"), "{why}");
    let (_, v) = ruler.get("/api/v1/rules").await;
    assert_eq!(v["data"]["groups"].as_array().unwrap().len(), 1);
    std::fs::write(
        rules.join("b.yml"),
        "groups:\n- name: x\n  interval: 1s\n  rules:\n  - record: one\n    expr: vector(1)\n",
    )
    .unwrap();
    let r = reqwest::Client::new().post(ruler.url("/-/reload")).send().await.unwrap();
    assert_eq!(r.status().as_u16(), 200);
    let (_, v) = ruler.get("/api/v1/rules").await;
    let names: Vec<&str> =
        v["data"]["groups"].as_array().unwrap().iter().map(|g| g["name"].as_str().unwrap()).collect();
    assert_eq!(names, ["fast", "x"]);

    // shutdown cuts the head into a ruler block with the external labels
    ruler.stop().await;
    let b = engine::bucket::Bucket::local(&bucket).unwrap();
    let blocks = b.list_blocks().await.unwrap();
    assert_eq!(blocks.len(), 1, "{blocks:?}");
    let meta = b.read_meta(&blocks[0]).await.unwrap();
    assert_eq!(meta.thanos.source, "ruler");
    assert_eq!(meta.thanos.labels.get("cluster").map(String::as_str), Some("eu1"));
    assert_eq!(meta.thanos.labels.get("replica").map(String::as_str), Some("r1"));
    q.stop().await;
    up.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn strata_up_evaluates_rules_with_its_engine() {
    let tmp = tempfile::tempdir().unwrap();
    let rules = tmp.path().join("up-rules.yml");
    std::fs::write(
        &rules,
        "groups:\n- name: up\n  interval: 1s\n  rules:\n  - record: oven:temperature:max\n    expr: max by (job) (temperature)\n  - alert: Hot\n    expr: temperature > 50\n",
    )
    .unwrap();
    let grpc = format!("127.0.0.1:{}", free_port());
    let up = Strata::start(
        &[
            "up",
            "--data",
            tmp.path().join("up").to_str().unwrap(),
            "--grpc-address",
            &grpc,
            "--rule-file",
            rules.to_str().unwrap(),
        ],
        &tmp.path().join("up.log"),
    )
    .await;
    let s: Vec<(Labels, Vec<(i64, f64)>)> = vec![(
        Labels::from_pairs([("__name__", "temperature"), ("job", "oven"), ("instance", "o-1")]),
        vec![(now_ms(), 70.0)],
    )];
    let (code, msg) = post_remote_write(&up.url("/api/v1/write"), ingest::remote_write::encode(&s).unwrap()).await;
    assert_eq!(code, 200, "{msg}");
    let recorded = wait_for(20, "the recorded series in strata up", || async {
        let (_, v) =
            up.get(&format!("/api/v1/query?query=oven:temperature:max&time={}", now_ms() as f64 / 1000.0)).await;
        v["data"]["result"].as_array()?.first().cloned()
    })
    .await;
    assert_eq!(recorded["metric"]["job"], "oven");
    assert_eq!(recorded["value"][1], "70");
    let (_, alerts) = up.get("/api/v1/alerts").await;
    assert_eq!(alerts["data"]["alerts"][0]["state"], "firing", "{alerts}");
    let (_, v) = up.get("/api/v1/rules?type=record").await;
    assert_eq!(v["data"]["groups"][0]["rules"][0]["health"], "ok", "{v}");
    let (_, metrics) = up.text("/metrics").await;
    assert!(metrics.contains("prometheus_rule_evaluations_total{rule_group="), "{metrics}");
    up.stop().await;
}

/// `activeAt` of the first alert in `/api/v1/alerts` (ms since the epoch) and its state.
async fn first_alert(ruler: &Strata) -> Option<(i64, String)> {
    let v = ruler.get("/api/v1/alerts").await.1;
    let a = v["data"]["alerts"].as_array()?.first()?.clone();
    let at = chrono::DateTime::parse_from_rfc3339(a["activeAt"].as_str()?).ok()?.timestamp_millis();
    Some((at, a["state"].as_str()?.to_string()))
}

/// A pending alert keeps its place across a restart of `strata rule`: the `for` state is read back
/// from the `ALERTS_FOR_STATE` series in the ruler's own WAL/blocks, and its `activeAt` moves by
/// the time the ruler was down (Prometheus's rule), instead of starting again at the restart.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn for_state_is_restored_after_a_restart() {
    let tmp = tempfile::tempdir().unwrap();
    let grpc = format!("127.0.0.1:{}", free_port());
    let up = Strata::start(
        &["up", "--data", tmp.path().join("up").to_str().unwrap(), "--grpc-address", &grpc],
        &tmp.path().join("up.log"),
    )
    .await;
    let s: Vec<(Labels, Vec<(i64, f64)>)> = vec![(
        Labels::from_pairs([("__name__", "temperature"), ("job", "oven"), ("instance", "o-1")]),
        vec![(now_ms(), 90.0)],
    )];
    let (code, msg) = post_remote_write(&up.url("/api/v1/write"), ingest::remote_write::encode(&s).unwrap()).await;
    assert_eq!(code, 200, "{msg}");

    let rules = tmp.path().join("slow.yml");
    std::fs::write(
        &rules,
        "groups:\n- name: slow\n  interval: 1s\n  rules:\n  - alert: Slow\n    expr: temperature > 50\n    for: 10m\n",
    )
    .unwrap();
    let data = tmp.path().join("ruler");
    let args = [
        "rule",
        "--rule-file",
        rules.to_str().unwrap(),
        "--query",
        &up.base,
        "--data-dir",
        data.to_str().unwrap(),
        "--grpc-address",
        &format!("127.0.0.1:{}", free_port()),
        "--for-grace-period",
        "1s",
    ];
    let ruler = Strata::start(&args, &tmp.path().join("ruler1.log")).await;
    let (active_at, state) = wait_for(20, "a pending alert", || first_alert(&ruler)).await;
    assert_eq!(state, "pending");
    // evaluations write ALERTS_FOR_STATE samples (value = activeAt in seconds); long enough that
    // the restored activeAt (moved by the downtime, ~3 s plus the restart) stays before the restart
    tokio::time::sleep(Duration::from_secs(8)).await;
    ruler.stop().await;
    let down = Instant::now();
    tokio::time::sleep(Duration::from_secs(3)).await;

    let restarted_ms = now_ms();
    let ruler = Strata::start(&args, &tmp.path().join("ruler2.log")).await;
    // Right after the start the alert is new (activeAt at the first evaluation); once the state is
    // restored (after the second evaluation) activeAt is the old one plus the time the ruler was
    // down: before the restart, and at least 3 s after the first activeAt.
    let (restored, state) = wait_for(30, "the restored activeAt", || async {
        first_alert(&ruler).await.filter(|(at, _)| *at < restarted_ms)
    })
    .await;
    assert_eq!(state, "pending");
    let down_ms = down.elapsed().as_millis() as i64;
    assert!(restored >= active_at + 3_000, "activeAt {active_at} -> {restored}:\n{}", ruler.log_text());
    assert!(restored <= active_at + down_ms + 2_000, "activeAt {active_at} -> {restored} (down < {down_ms} ms)");
    ruler.stop().await;
    up.stop().await;
}
