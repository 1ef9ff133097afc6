//! The ruler's HTTP API in Prometheus's JSON: `/api/v1/rules` (filters `type=alert|record`,
//! `rule_name[]`, `rule_group[]`, `file[]`), `/api/v1/alerts` (pending and firing alerts) and
//! `POST /-/reload` (200 when the files loaded, 500 with the reason and the old rules kept).

use std::collections::BTreeMap;
use std::sync::Arc;

use axum::Router;
use axum::body::Bytes;
use axum::extract::{RawQuery, State};
use axum::http::{HeaderValue, StatusCode, header};
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use serde_json::{Value as Json, json};

use super::file::RuleKind;
use super::group::RuleState;
use super::manager::Manager;
use super::{Alert, AlertState, Health};

/// The routes: `/api/v1/rules`, `/api/v1/alerts` (GET and POST) and `POST /-/reload`.
pub fn router(manager: Arc<Manager>) -> Router {
    Router::new()
        .route("/api/v1/rules", get(rules).post(rules))
        .route("/api/v1/alerts", get(alerts).post(alerts))
        .route("/-/reload", post(reload))
        .with_state(manager)
}

fn time(ms: Option<i64>) -> String {
    ms.and_then(chrono::DateTime::from_timestamp_millis)
        .map(|t| t.to_rfc3339_opts(chrono::SecondsFormat::AutoSi, true))
        .unwrap_or_else(|| "0001-01-01T00:00:00Z".into())
}

/// Go's `strconv.FormatFloat(v, 'e', -1, 64)`, as Prometheus writes an alert's value.
fn float_e(v: f64) -> String {
    super::template::format_e_shortest(v)
}

fn labels_json(l: &engine::Labels) -> Json {
    Json::Object(l.iter().map(|l| (l.name.clone(), json!(l.value))).collect())
}

fn alert_json(a: &Alert) -> Json {
    let mut o = json!({
        "labels": labels_json(&a.labels),
        "annotations": a.annotations,
        "state": a.state.as_str(),
        "activeAt": time(Some(a.active_at_ms)),
        "value": float_e(a.value),
    });
    if let Some(k) = a.keep_firing_since_ms {
        o["keepFiringSince"] = json!(time(Some(k)));
    }
    o
}

fn active_alerts(r: &RuleState) -> Vec<&Alert> {
    let mut v: Vec<&Alert> = r.active.values().filter(|a| a.state != AlertState::Inactive).collect();
    v.sort_by(|a, b| a.labels.cmp(&b.labels));
    v
}

fn rule_json(r: &RuleState) -> Json {
    let health = r.health.as_str();
    let mut o = match &r.spec.kind {
        RuleKind::Recording { record } => {
            let labels: BTreeMap<&str, &str> = r.spec.labels.iter().map(|(k, v)| (k.as_str(), v.text())).collect();
            json!({"name": record, "query": r.spec.expr, "labels": labels, "type": "recording"})
        }
        RuleKind::Alerting { alert, for_ms, keep_firing_for_ms, annotations } => {
            let labels: BTreeMap<&str, &str> = r.spec.labels.iter().map(|(k, v)| (k.as_str(), v.text())).collect();
            let ann: BTreeMap<&str, &str> = annotations.iter().map(|(k, v)| (k.as_str(), v.text())).collect();
            let alerts = active_alerts(r);
            let state = if r.health == Health::Unknown && r.last_eval_ms.is_none() {
                "inactive"
            } else {
                alerts.iter().map(|a| a.state).max().unwrap_or(AlertState::Inactive).as_str()
            };
            json!({
                "state": state,
                "name": alert,
                "query": r.spec.expr,
                "duration": *for_ms as f64 / 1000.0,
                "keepFiringFor": *keep_firing_for_ms as f64 / 1000.0,
                "labels": labels,
                "annotations": ann,
                "alerts": alerts.into_iter().map(alert_json).collect::<Vec<_>>(),
                "type": "alerting",
            })
        }
    };
    o["health"] = json!(health);
    if let Some(e) = &r.last_error {
        o["lastError"] = json!(e);
    }
    o["evaluationTime"] = json!(r.eval_seconds);
    o["lastEvaluation"] = json!(time(r.last_eval_ms));
    o
}

fn json_response(status: StatusCode, body: &Json) -> Response {
    let mut r = (status, body.to_string()).into_response();
    r.headers_mut().insert(header::CONTENT_TYPE, HeaderValue::from_static("application/json"));
    r
}

fn success(data: Json) -> Response {
    json_response(StatusCode::OK, &json!({"status": "success", "data": data}))
}

fn bad_data(msg: String) -> Response {
    json_response(StatusCode::BAD_REQUEST, &json!({"status": "error", "errorType": "bad_data", "error": msg}))
}

/// Query-string and form parameters together.
fn params(query: Option<String>, body: &Bytes) -> Vec<(String, String)> {
    let mut out: Vec<(String, String)> =
        form_urlencoded::parse(query.unwrap_or_default().as_bytes()).into_owned().collect();
    out.extend(form_urlencoded::parse(body).into_owned());
    out
}

async fn rules(State(m): State<Arc<Manager>>, RawQuery(q): RawQuery, body: Bytes) -> Response {
    let ps = params(q, &body);
    let all = |k: &str| -> Vec<String> { ps.iter().filter(|(n, _)| n == k).map(|(_, v)| v.clone()).collect() };
    let kind = ps.iter().find(|(n, _)| n == "type").map(|(_, v)| v.as_str()).unwrap_or("");
    let (want_alert, want_record) = match kind.to_ascii_lowercase().as_str() {
        "" => (true, true),
        "alert" => (true, false),
        "record" => (false, true),
        other => return bad_data(format!("invalid query parameter type='{other}': not supported value")),
    };
    let (names, groups, files) = (all("rule_name[]"), all("rule_group[]"), all("file[]"));
    let filtered = !names.is_empty() || !groups.is_empty() || !files.is_empty() || !kind.is_empty();
    let mut out = Vec::new();
    for g in m.groups() {
        if (!groups.is_empty() && !groups.contains(&g.name)) || (!files.is_empty() && !files.contains(&g.file)) {
            continue;
        }
        let st = g.lock();
        let rules: Vec<Json> = st
            .rules
            .iter()
            .filter(|r| {
                let is_alert = matches!(r.spec.kind, RuleKind::Alerting { .. });
                (if is_alert { want_alert } else { want_record })
                    && (names.is_empty() || names.iter().any(|n| n == r.spec.name()))
            })
            .map(rule_json)
            .collect();
        if filtered && rules.is_empty() {
            continue;
        }
        out.push(json!({
            "name": g.name,
            "file": g.file,
            "rules": rules,
            "interval": g.interval_ms as f64 / 1000.0,
            "limit": g.limit,
            "evaluationTime": st.eval_seconds,
            "lastEvaluation": time(st.last_eval_ms),
        }));
    }
    success(json!({"groups": out}))
}

async fn alerts(State(m): State<Arc<Manager>>) -> Response {
    let mut out = Vec::new();
    for g in m.groups() {
        let st = g.lock();
        for r in &st.rules {
            out.extend(active_alerts(r).into_iter().map(alert_json));
        }
    }
    success(json!({"alerts": out}))
}

async fn reload(State(m): State<Arc<Manager>>) -> Response {
    match m.reload().await {
        Ok(n) => (StatusCode::OK, format!("rule files reloaded: {n} groups\n")).into_response(),
        Err(e) => (
            StatusCode::INTERNAL_SERVER_ERROR,
            format!("failed to reload the rule files (the previous rules stay): {e}\n"),
        )
            .into_response(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn go_e_format() {
        assert_eq!(float_e(1.0), "1e+00");
        assert_eq!(float_e(0.25), "2.5e-01");
        assert_eq!(float_e(12345.0), "1.2345e+04");
        assert_eq!(time(None), "0001-01-01T00:00:00Z");
        assert_eq!(time(Some(1_500)), "1970-01-01T00:00:01.500Z");
    }
}
