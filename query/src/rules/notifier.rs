//! The Alertmanager client: alerts posted to every `--alertmanagers.url` through the Alertmanager
//! v2 API (`POST <url>/api/v2/alerts`, a JSON array of `{labels, annotations, startsAt, endsAt,
//! generatorURL}`), with the ruler's external labels added, `--alert.label-drop` labels removed,
//! and `--alert.query-url` + `/graph?g0.expr=<expr>&g0.tab=1` as the generator URL (Prometheus's
//! link form). Counted as `prometheus_notifications_sent_total` / `_errors_total` per Alertmanager.
//! Alerts wait in a bounded queue (`prometheus_notifications_queue_length` / `_capacity`); those
//! dropped from a full queue or that no Alertmanager took are `prometheus_notifications_dropped_total`.

use std::collections::VecDeque;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex, PoisonError};
use std::time::Duration;

use engine::Labels;
use serde_json::json;

use super::group::Notification;
use super::metrics::RuleMetrics;

/// Settings of the notifier.
#[derive(Debug, Clone, Default)]
pub struct NotifierOptions {
    /// Alertmanager base URLs (`http://host:port[/prefix]`).
    pub urls: Vec<String>,
    /// External labels added to every alert (unless the alert has the label).
    pub external_labels: Labels,
    /// Labels removed from alerts before sending (`--alert.label-drop`).
    pub label_drop: Vec<String>,
    /// Base of the generator URL (`--alert.query-url`); empty: no generator URL.
    pub query_url: String,
    /// Timeout of one POST.
    pub timeout: Duration,
}

/// Alerts a notifier holds at most; when more wait, the oldest are dropped (Thanos's ruler queue).
pub(crate) const QUEUE_CAPACITY: usize = 10_000;
/// Alerts per POST (Thanos's ruler batch size).
pub(crate) const MAX_BATCH: usize = 100;

/// Alerts waiting to be sent, and whether a task is sending them.
#[derive(Debug, Default)]
struct Queue {
    alerts: Mutex<VecDeque<Notification>>,
    draining: AtomicBool,
}

/// Sends alerts to Alertmanagers: [`Notifier::enqueue`] queues them (bounded) and one task at a
/// time sends the queue in batches of [`MAX_BATCH`], so a slow Alertmanager never holds up rule
/// evaluation nor piles up requests.
#[derive(Debug, Clone)]
pub struct Notifier {
    opts: NotifierOptions,
    client: reqwest::Client,
    metrics: RuleMetrics,
    queue: Arc<Queue>,
}

fn rfc3339(ms: i64) -> String {
    chrono::DateTime::from_timestamp_millis(ms)
        .map(|t| t.to_rfc3339_opts(chrono::SecondsFormat::Millis, true))
        .unwrap_or_default()
}

/// Prometheus's `TableLinkForExpression`: `/graph?g0.expr=<escaped>&g0.tab=1`.
fn table_link(expr: &str) -> String {
    let escaped: String = form_urlencoded::byte_serialize(expr.as_bytes()).collect();
    format!("/graph?g0.expr={escaped}&g0.tab=1")
}

impl Notifier {
    /// A notifier; URLs are checked here.
    pub fn new(opts: NotifierOptions, metrics: RuleMetrics) -> Result<Self, String> {
        for u in &opts.urls {
            url::Url::parse(u).map_err(|e| format!("--alertmanagers.url {u}: not a URL: {e}"))?;
        }
        let client = reqwest::Client::builder()
            .timeout(if opts.timeout.is_zero() { Duration::from_secs(10) } else { opts.timeout })
            .build()
            .map_err(|e| format!("cannot build the HTTP client: {e}"))?;
        metrics.notification_queue_capacity.set(QUEUE_CAPACITY as i64);
        Ok(Notifier { opts, client, metrics, queue: Arc::default() })
    }

    fn queued(&self) -> std::sync::MutexGuard<'_, VecDeque<Notification>> {
        self.queue.alerts.lock().unwrap_or_else(PoisonError::into_inner)
    }

    /// Queues `alerts` for every Alertmanager and returns at once; a task sends them. Beyond
    /// [`QUEUE_CAPACITY`] waiting alerts the oldest are dropped (counted and logged).
    pub fn enqueue(&self, alerts: Vec<Notification>) {
        if alerts.is_empty() || self.is_empty() {
            return;
        }
        {
            let mut q = self.queued();
            q.extend(alerts);
            let over = q.len().saturating_sub(QUEUE_CAPACITY);
            if over > 0 {
                q.drain(..over);
                self.metrics.notifications_dropped.inc_by(over as u64);
                tracing::warn!(dropped = over, "alert queue full, dropped the oldest alerts");
            }
            self.metrics.notification_queue_length.set(q.len() as i64);
        }
        if !self.queue.draining.swap(true, Ordering::AcqRel) {
            let me = self.clone();
            tokio::spawn(async move { me.drain().await });
        }
    }

    /// Sends the queue in batches until it is empty.
    async fn drain(&self) {
        loop {
            let batch: Vec<Notification> = {
                let mut q = self.queued();
                let n = q.len().min(MAX_BATCH);
                let batch = q.drain(..n).collect();
                self.metrics.notification_queue_length.set(q.len() as i64);
                batch
            };
            if !batch.is_empty() {
                if !self.send(&batch).await {
                    self.metrics.notifications_dropped.inc_by(batch.len() as u64);
                }
                continue;
            }
            self.queue.draining.store(false, Ordering::Release);
            // an enqueue between the empty pop and the store saw a drainer and started none
            if self.queued().is_empty() || self.queue.draining.swap(true, Ordering::AcqRel) {
                return;
            }
        }
    }

    /// True when there is no Alertmanager to send to.
    pub fn is_empty(&self) -> bool {
        self.opts.urls.is_empty()
    }

    /// The Alertmanager v2 JSON of alerts.
    pub fn payload(&self, alerts: &[Notification]) -> serde_json::Value {
        let items: Vec<serde_json::Value> = alerts
            .iter()
            .map(|a| {
                let mut labels = a.labels.clone();
                for l in self.opts.external_labels.iter() {
                    if labels.get(&l.name).is_none() {
                        labels.set(&l.name, &l.value);
                    }
                }
                for d in &self.opts.label_drop {
                    labels.remove(d);
                }
                let labels: serde_json::Map<String, serde_json::Value> =
                    labels.iter().map(|l| (l.name.clone(), json!(l.value))).collect();
                let mut item = json!({
                    "labels": labels,
                    "annotations": a.annotations,
                    "startsAt": rfc3339(a.starts_at_ms),
                    "endsAt": rfc3339(a.ends_at_ms),
                });
                if !self.opts.query_url.is_empty() {
                    item["generatorURL"] =
                        json!(format!("{}{}", self.opts.query_url.trim_end_matches('/'), table_link(&a.expr)));
                }
                item
            })
            .collect();
        serde_json::Value::Array(items)
    }

    /// Posts `alerts` to every Alertmanager (concurrently) and waits for the answers; failures
    /// are logged and counted. True when at least one Alertmanager took them (or there was
    /// nothing to send).
    async fn send(&self, alerts: &[Notification]) -> bool {
        if alerts.is_empty() || self.is_empty() {
            return true;
        }
        let body = self.payload(alerts).to_string();
        let sends = self.opts.urls.iter().map(|base| {
            let url = format!("{}/api/v2/alerts", base.trim_end_matches('/'));
            let body = body.clone();
            async move {
                let res = self
                    .client
                    .post(&url)
                    .header(reqwest::header::CONTENT_TYPE, "application/json")
                    .body(body)
                    .send()
                    .await;
                let am = [("alertmanager", url.clone())];
                self.metrics.notifications_sent.get_or_create(&am).inc_by(alerts.len() as u64);
                match res {
                    Ok(r) if r.status().is_success() => true,
                    Ok(r) => {
                        let status = r.status();
                        let text = r.text().await.unwrap_or_default();
                        tracing::warn!(%url, %status, "Alertmanager refused {} alerts: {text}", alerts.len());
                        self.metrics.notification_errors.get_or_create(&am).inc_by(alerts.len() as u64);
                        false
                    }
                    Err(e) => {
                        tracing::warn!(%url, "cannot send {} alerts: {e}", alerts.len());
                        self.metrics.notification_errors.get_or_create(&am).inc_by(alerts.len() as u64);
                        false
                    }
                }
            }
        });
        futures::future::join_all(sends).await.into_iter().any(|ok| ok)
    }
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]
    use std::collections::BTreeMap;

    use super::*;

    #[test]
    fn payload_has_amv2_fields() {
        let n = Notifier::new(
            NotifierOptions {
                urls: vec!["http://127.0.0.1:9093".into()],
                external_labels: Labels::from_pairs([("cluster", "eu1"), ("replica", "a"), ("job", "ext")]),
                label_drop: vec!["replica".into()],
                query_url: "http://query:9090/".into(),
                timeout: Duration::from_secs(1),
            },
            RuleMetrics::default(),
        )
        .unwrap();
        let a = Notification {
            labels: Labels::from_pairs([("alertname", "Down"), ("job", "node")]),
            annotations: BTreeMap::from([("summary".to_string(), "it is down".to_string())]),
            starts_at_ms: 1_700_000_000_123,
            ends_at_ms: 1_700_000_240_000,
            expr: "up == 0".into(),
        };
        let p = n.payload(&[a]);
        assert_eq!(p[0]["labels"], json!({"alertname": "Down", "job": "node", "cluster": "eu1"}));
        assert_eq!(p[0]["annotations"]["summary"], "it is down");
        assert_eq!(p[0]["startsAt"], "2023-11-14T22:13:20.123Z");
        assert_eq!(p[0]["endsAt"], "2023-11-14T22:17:20.000Z");
        assert_eq!(p[0]["generatorURL"], "http://query:9090/graph?g0.expr=up+%3D%3D+0&g0.tab=1");
        assert!(
            Notifier::new(
                NotifierOptions { urls: vec!["not a url".into()], ..Default::default() },
                RuleMetrics::default()
            )
            .is_err()
        );
    }

    /// The queue keeps the newest QUEUE_CAPACITY alerts, and a task sends them in batches; alerts
    /// no Alertmanager took count as dropped.
    #[tokio::test]
    async fn queue_is_bounded_and_drained_in_batches() {
        let closed = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        let url = format!("http://{}", closed.local_addr().unwrap());
        drop(closed); // nothing listens: every POST fails at once
        let metrics = RuleMetrics::default();
        let n = Notifier::new(
            NotifierOptions { urls: vec![url.clone()], timeout: Duration::from_secs(1), ..Default::default() },
            metrics.clone(),
        )
        .unwrap();
        let alert = |i: usize| Notification {
            labels: Labels::from_pairs([("alertname", "A"), ("i", &i.to_string())]),
            annotations: BTreeMap::new(),
            starts_at_ms: 0,
            ends_at_ms: 0,
            expr: "up".into(),
        };
        // the sending task cannot run before this test awaits (current-thread runtime)
        n.enqueue((0..QUEUE_CAPACITY + 50).map(alert).collect());
        assert_eq!(metrics.notifications_dropped.get(), 50);
        assert_eq!(metrics.notification_queue_length.get(), QUEUE_CAPACITY as i64);
        assert_eq!(n.queued().front().unwrap().labels.get("i"), Some("50"));
        for _ in 0..600 {
            if metrics.notification_queue_length.get() == 0 && !n.queue.draining.load(Ordering::Acquire) {
                break;
            }
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
        assert_eq!(metrics.notification_queue_length.get(), 0);
        let am = [("alertmanager", format!("{url}/api/v2/alerts"))];
        assert_eq!(metrics.notification_errors.get_or_create(&am).get(), QUEUE_CAPACITY as u64);
        assert_eq!(metrics.notifications_dropped.get(), 50 + QUEUE_CAPACITY as u64);
        // a later enqueue starts a new sender
        n.enqueue(vec![alert(1)]);
        for _ in 0..100 {
            if metrics.notifications_dropped.get() == 51 + QUEUE_CAPACITY as u64 {
                break;
            }
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
        assert_eq!(metrics.notifications_dropped.get(), 51 + QUEUE_CAPACITY as u64);
    }
}
