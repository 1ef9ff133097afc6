//! The Alertmanager client: alerts posted to every `--alertmanagers.url` through the Alertmanager
//! v2 API (`POST <url>/api/v2/alerts`, a JSON array of `{labels, annotations, startsAt, endsAt,
//! generatorURL}`), with the ruler's external labels added, `--alert.label-drop` labels removed,
//! and `--alert.query-url` + `/graph?g0.expr=<expr>&g0.tab=1` as the generator URL (Prometheus's
//! link form). Counted as `prometheus_notifications_sent_total` / `_errors_total` per Alertmanager.

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

/// Sends alerts to Alertmanagers.
#[derive(Debug, Clone)]
pub struct Notifier {
    opts: NotifierOptions,
    client: reqwest::Client,
    metrics: RuleMetrics,
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
        Ok(Notifier { opts, client, metrics })
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

    /// Posts `alerts` to every Alertmanager (concurrently); failures are logged and counted.
    pub async fn send(&self, alerts: &[Notification]) {
        if alerts.is_empty() || self.is_empty() {
            return;
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
                    Ok(r) if r.status().is_success() => {}
                    Ok(r) => {
                        let status = r.status();
                        let text = r.text().await.unwrap_or_default();
                        tracing::warn!(%url, %status, "Alertmanager refused {} alerts: {text}", alerts.len());
                        self.metrics.notification_errors.get_or_create(&am).inc_by(alerts.len() as u64);
                    }
                    Err(e) => {
                        tracing::warn!(%url, "cannot send {} alerts: {e}", alerts.len());
                        self.metrics.notification_errors.get_or_create(&am).inc_by(alerts.len() as u64);
                    }
                }
            }
        });
        futures::future::join_all(sends).await;
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
}
