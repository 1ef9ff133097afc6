//! One rule group and its evaluation, with Prometheus's semantics: evaluation timestamps aligned
//! by the group's hash, rules run in order at one timestamp (minus `query_offset`), recorded series
//! named by `record`, alerts moving inactive -> pending -> firing (`for`, `keep_firing_for`,
//! resolved alerts kept 15 minutes to be sent as resolved), `ALERTS` / `ALERTS_FOR_STATE` series,
//! stale markers for series a rule stopped returning, `limit`, and a failing rule that does not
//! stop the others.
//!
//! ```text
//!   ts ──► rule 1: query(expr, ts - offset) ──► results ──► sink (head)  ──► alerts to notify
//!          rule 2: ...                            (stale markers for series gone since last time)
//! ```

use std::collections::{BTreeMap, HashMap, HashSet};
use std::sync::{Mutex, PoisonError};
use std::time::Instant;

use engine::Labels;
use engine::chunkenc::STALE_NAN_BITS;

use super::file::{GroupSpec, RuleKind, RuleSpec};
use super::template::TemplateData;
use super::{Alert, AlertState, Health, RuleEnv};
use crate::value::Sample;

/// How long a resolved alert is kept (and re-sent as resolved), as Prometheus.
const RESOLVED_RETENTION_MS: i64 = 15 * 60 * 1000;

/// One output sample of a rule: series labels, timestamp (ms), value.
type OutSample = (Labels, i64, f64);

/// Finds the last `ALERTS_FOR_STATE` sample (time ms, value) of an alert (name, labels).
pub type ForStateLookup<'a> = dyn Fn(&str, &Labels) -> Option<(i64, f64)> + 'a;

/// Runtime state of one rule.
#[derive(Debug)]
pub struct RuleState {
    /// The rule as loaded.
    pub spec: RuleSpec,
    /// Health after the last evaluation.
    pub health: Health,
    /// The last evaluation's error.
    pub last_error: Option<String>,
    /// Wall-clock time of the last evaluation (ms since the epoch).
    pub last_eval_ms: Option<i64>,
    /// How long the last evaluation took (seconds).
    pub eval_seconds: f64,
    /// Active alerts by label-set hash (alerting rules).
    pub active: HashMap<u64, Alert>,
    /// False until the `for` state was restored: no ALERTS series are written before.
    pub restored: bool,
    /// Series written by the last evaluation (for stale markers).
    pub(crate) prev_series: HashSet<Labels>,
}

impl RuleState {
    /// A fresh rule; `restored` false delays ALERTS output until [`Group::restore`] ran.
    pub fn new(spec: RuleSpec, restored: bool) -> Self {
        RuleState {
            spec,
            health: Health::Unknown,
            last_error: None,
            last_eval_ms: None,
            eval_seconds: 0.0,
            active: HashMap::new(),
            restored,
            prev_series: HashSet::new(),
        }
    }

    /// `for` of an alerting rule (0 for recording rules).
    pub fn hold_ms(&self) -> i64 {
        match &self.spec.kind {
            RuleKind::Alerting { for_ms, .. } => *for_ms,
            RuleKind::Recording { .. } => 0,
        }
    }
}

/// Mutable state of a group, behind its lock.
#[derive(Debug)]
pub struct GroupState {
    /// The rules in order.
    pub rules: Vec<RuleState>,
    /// Wall-clock time of the last evaluation (ms).
    pub last_eval_ms: Option<i64>,
    /// How long the last evaluation took (seconds).
    pub eval_seconds: f64,
}

/// A rule group: its settings and its state.
#[derive(Debug)]
pub struct Group {
    /// File the group came from.
    pub file: String,
    /// Group name.
    pub name: String,
    /// Evaluation interval (ms).
    pub interval_ms: i64,
    /// `query_offset` (ms).
    pub query_offset_ms: i64,
    /// `limit` (0: none).
    pub limit: usize,
    /// The rules' state.
    pub state: Mutex<GroupState>,
}

/// An alert to send, as it stands after an evaluation.
#[derive(Debug, Clone)]
pub struct Notification {
    /// Labels (alertname included).
    pub labels: Labels,
    /// Expanded annotations.
    pub annotations: BTreeMap<String, String>,
    /// When it started firing (ms).
    pub starts_at_ms: i64,
    /// When it resolved, or until when it is valid (ms).
    pub ends_at_ms: i64,
    /// The rule's expression (for the generator URL).
    pub expr: String,
}

pub(crate) fn now_ms() -> i64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| i64::try_from(d.as_millis()).unwrap_or(i64::MAX))
        .unwrap_or(0)
}

impl Group {
    /// A group from its spec; `restored` as for [`RuleState::new`].
    pub fn new(spec: GroupSpec, restored: bool) -> Self {
        let rules = spec.rules.into_iter().map(|r| RuleState::new(r, restored)).collect();
        Group {
            file: spec.file,
            name: spec.name,
            interval_ms: spec.interval_ms.max(1),
            query_offset_ms: spec.query_offset_ms,
            limit: spec.limit,
            state: Mutex::new(GroupState { rules, last_eval_ms: None, eval_seconds: 0.0 }),
        }
    }

    /// Prometheus's group key, `<file>;<name>` (the `rule_group` metric label).
    pub fn key(&self) -> String {
        format!("{};{}", self.file, self.name)
    }

    /// The state, even after a panic elsewhere (the state is still consistent per rule).
    pub fn lock(&self) -> std::sync::MutexGuard<'_, GroupState> {
        self.state.lock().unwrap_or_else(PoisonError::into_inner)
    }

    /// Takes the series every rule wrote in its last evaluation (left empty), for stale markers
    /// when the rules are gone.
    pub fn take_series(&self) -> Vec<Labels> {
        self.lock().rules.iter_mut().flat_map(|r| std::mem::take(&mut r.prev_series)).collect()
    }

    /// Prometheus's evaluation time at or before `now_ms` for this group: the interval grid
    /// shifted by the hash of `{file, name}` modulo the interval (computed in nanoseconds, as
    /// Prometheus does).
    pub fn eval_timestamp(&self, now_ms: i64) -> i64 {
        let interval_ns = i128::from(self.interval_ms) * 1_000_000;
        let h = Labels::from_pairs([("name", self.name.as_str()), ("file", self.file.as_str())]).stable_hash();
        let offset = i128::from(h) % interval_ns;
        let adj = i128::from(now_ms) * 1_000_000 - offset;
        let next = adj - adj.rem_euclid(interval_ns) + offset;
        i64::try_from(next.div_euclid(1_000_000)).unwrap_or(now_ms)
    }

    /// Evaluates every rule at `ts` (ms), appends the results through `env.sink` and returns the
    /// alerts to send now.
    pub async fn eval(&self, ts: i64, env: &RuleEnv) -> Vec<Notification> {
        let started = Instant::now();
        let wall = now_ms();
        let key = self.key();
        let n = self.lock().rules.len();
        let mut notify = Vec::new();
        for i in 0..n {
            let rule_started = Instant::now();
            let expr = self.lock().rules[i].spec.expr.clone();
            let query_t = ts - self.query_offset_ms;
            env.metrics.evaluations.get_or_create(&[("rule_group", key.clone())]).inc();
            let res = env.querier.query(&expr, query_t).await;
            let out = {
                let mut st = self.lock();
                let rule = &mut st.rules[i];
                let out = res.and_then(|samples| match &rule.spec.kind {
                    RuleKind::Recording { record } => record_samples(record, &rule.spec, samples, query_t, self.limit),
                    RuleKind::Alerting { .. } => alert_samples(rule, samples, ts, query_t, self.limit, env),
                });
                rule.last_eval_ms = Some(wall);
                match out {
                    Ok(out) => {
                        rule.health = Health::Ok;
                        rule.last_error = None;
                        // stale markers for the series this rule no longer returns
                        let now: HashSet<Labels> = out.iter().map(|(l, _, _)| l.clone()).collect();
                        let mut out = out;
                        for gone in rule.prev_series.difference(&now) {
                            out.push((gone.clone(), query_t, f64::from_bits(STALE_NAN_BITS)));
                        }
                        rule.prev_series = now;
                        if matches!(rule.spec.kind, RuleKind::Alerting { .. }) {
                            notify.extend(alerts_to_send(rule, ts, env.resend_delay_ms, self.interval_ms));
                        }
                        Some(out)
                    }
                    Err(e) => {
                        tracing::warn!(group = %self.name, file = %self.file, rule = %rule.spec.name(), "rule evaluation failed: {e}");
                        rule.health = Health::Err;
                        rule.last_error = Some(e);
                        env.metrics.failures.get_or_create(&[("rule_group", key.clone())]).inc();
                        None
                    }
                }
            };
            if let Some(out) = out
                && !out.is_empty()
                && let Err(e) = env.sink.append(out).await
            {
                let mut st = self.lock();
                let rule = &mut st.rules[i];
                tracing::warn!(group = %self.name, rule = %rule.spec.name(), "cannot store rule results: {e}");
                rule.health = Health::Err;
                rule.last_error = Some(format!("storing the results: {e}"));
                env.metrics.failures.get_or_create(&[("rule_group", key.clone())]).inc();
            }
            let secs = rule_started.elapsed().as_secs_f64();
            self.lock().rules[i].eval_seconds = secs;
            env.metrics.rule_duration.observe(secs);
        }
        // one wait for the WAL per group evaluation, not per rule
        if let Err(e) = env.sink.sync().await {
            tracing::warn!(group = %self.name, file = %self.file, "cannot make the rule results durable: {e}");
            env.metrics.failures.get_or_create(&[("rule_group", key.clone())]).inc();
        }
        let secs = started.elapsed().as_secs_f64();
        {
            let mut st = self.lock();
            st.last_eval_ms = Some(wall);
            st.eval_seconds = secs;
        }
        let g = [("rule_group", key)];
        env.metrics.group_last_duration.get_or_create(&g).set(secs);
        env.metrics.group_last_eval.get_or_create(&g).set(ts as f64 / 1000.0);
        env.metrics.group_duration.observe(secs);
        notify
    }

    /// Restores the `for` state of the active alerts from `ALERTS_FOR_STATE` series written before
    /// a restart (Prometheus's `RestoreForState`): `series` maps an alert's labels (without
    /// `__name__`) to the last (time ms, value) found within the outage tolerance; `ts` is now.
    pub fn restore(&self, ts: i64, grace_ms: i64, series: &ForStateLookup<'_>) {
        let mut st = self.lock();
        for rule in st.rules.iter_mut() {
            let hold = rule.hold_ms();
            let RuleKind::Alerting { alert, .. } = &rule.spec.kind else {
                rule.restored = true;
                continue;
            };
            let alert = alert.clone();
            if hold < grace_ms {
                rule.restored = true;
                continue;
            }
            for a in rule.active.values_mut() {
                let Some((down_at, v)) = series(&alert, &a.labels) else { continue };
                if !v.is_finite() {
                    continue;
                }
                let mut active_at = (v as i64) * 1000;
                let spent = down_at / 1000 * 1000 - active_at;
                let remaining = hold - spent;
                if remaining <= 0 {
                } else if remaining < grace_ms {
                    active_at = ts + grace_ms - hold;
                } else {
                    active_at += ts - down_at / 1000 * 1000;
                }
                a.active_at_ms = active_at;
            }
            rule.restored = true;
        }
    }
}

/// The series of a recording rule: the result renamed to `record`, with the rule's labels.
fn record_samples(
    record: &str,
    spec: &RuleSpec,
    samples: Vec<Sample>,
    t: i64,
    limit: usize,
) -> Result<Vec<OutSample>, String> {
    let mut out = Vec::with_capacity(samples.len());
    let mut seen = HashSet::with_capacity(samples.len());
    for s in samples {
        let mut l = s.labels;
        l.set("__name__", record);
        for (k, v) in &spec.labels {
            l.set(k, v.text());
        }
        if !seen.insert(l.stable_hash()) {
            return Err("vector contains metrics with the same labelset after applying rule labels".into());
        }
        out.push((l, t, s.v));
    }
    if limit > 0 && out.len() > limit {
        return Err(format!("exceeded limit of {limit} with {} series", out.len()));
    }
    Ok(out)
}

/// Updates the alerts of an alerting rule from its query result (Prometheus's
/// `AlertingRule.Eval`) and returns its `ALERTS` / `ALERTS_FOR_STATE` samples.
fn alert_samples(
    rule: &mut RuleState,
    samples: Vec<Sample>,
    ts: i64,
    query_t: i64,
    limit: usize,
    env: &RuleEnv,
) -> Result<Vec<OutSample>, String> {
    let RuleKind::Alerting { alert, for_ms, keep_firing_for_ms, annotations } = &rule.spec.kind else {
        return Ok(vec![]);
    };
    let mut fresh: HashMap<u64, Alert> = HashMap::with_capacity(samples.len());
    for s in samples {
        let data = TemplateData {
            labels: s.labels.iter().map(|l| (l.name.as_str(), l.value.as_str())).collect(),
            external_labels: &env.external_labels,
            external_url: &env.external_url,
            value: s.v,
        };
        let expand = |t: &super::template::RuleTemplate| match t.expand(&data) {
            Ok(v) => v,
            Err(e) => {
                tracing::warn!(alert = %alert, "expanding an alert template failed: {e}");
                format!("<error expanding template: {e}>")
            }
        };
        let mut labels = s.labels.clone();
        labels.remove("__name__");
        for (k, t) in &rule.spec.labels {
            labels.set(k, &expand(t));
        }
        labels.set("alertname", alert);
        let annotations: BTreeMap<String, String> = annotations.iter().map(|(k, t)| (k.clone(), expand(t))).collect();
        let h = labels.stable_hash();
        if fresh.contains_key(&h) {
            return Err("vector contains metrics with the same labelset after applying alert labels".into());
        }
        fresh.insert(h, Alert::new(labels, annotations, ts, s.v));
    }
    for (h, a) in fresh.iter() {
        match rule.active.get_mut(h) {
            Some(old) if old.state != AlertState::Inactive => {
                old.value = a.value;
                old.annotations = a.annotations.clone();
            }
            _ => {
                rule.active.insert(*h, a.clone());
            }
        }
    }
    let mut out = Vec::new();
    let mut active_pending = 0usize;
    let mut remove = Vec::new();
    for (h, a) in rule.active.iter_mut() {
        if !fresh.contains_key(h) {
            let mut keep_firing = false;
            if a.state == AlertState::Firing && *keep_firing_for_ms > 0 {
                let since = *a.keep_firing_since_ms.get_or_insert(ts);
                keep_firing = ts - since < *keep_firing_for_ms;
            }
            if a.state == AlertState::Pending || a.resolved_at_ms.is_some_and(|r| ts - r > RESOLVED_RETENTION_MS) {
                remove.push(*h);
            }
            if a.state != AlertState::Inactive && !keep_firing {
                a.state = AlertState::Inactive;
                a.resolved_at_ms = Some(ts);
            }
            if !keep_firing {
                continue;
            }
        } else {
            a.keep_firing_since_ms = None;
        }
        active_pending += 1;
        if a.state == AlertState::Pending && ts - a.active_at_ms >= *for_ms {
            a.state = AlertState::Firing;
            a.fired_at_ms = Some(ts);
        }
        if a.state == AlertState::Firing && ts - a.active_at_ms < *for_ms {
            a.state = AlertState::Pending;
            a.fired_at_ms = None;
            a.last_sent_ms = None;
            a.keep_firing_since_ms = None;
        }
        if rule.restored {
            let mut l = a.labels.clone();
            l.set("__name__", "ALERTS");
            l.set("alertstate", a.state.as_str());
            out.push((l, query_t, 1.0));
            let mut f = a.labels.clone();
            f.set("__name__", "ALERTS_FOR_STATE");
            out.push((f, query_t, a.active_at_ms.div_euclid(1000) as f64));
        }
    }
    for h in remove {
        rule.active.remove(&h);
    }
    if limit > 0 && active_pending > limit {
        rule.active.clear();
        return Err(format!("exceeded limit of {limit} with {active_pending} alerts"));
    }
    Ok(out)
}

/// The alerts of `rule` due to be sent at `ts` (Prometheus's `sendAlerts` / `needsSending`).
fn alerts_to_send(rule: &mut RuleState, ts: i64, resend_delay_ms: i64, interval_ms: i64) -> Vec<Notification> {
    let mut out = Vec::new();
    for a in rule.active.values_mut() {
        let due = match a.state {
            AlertState::Pending => false,
            _ if a.resolved_at_ms.is_some_and(|r| a.last_sent_ms.is_none_or(|s| r > s)) => true,
            _ => a.last_sent_ms.is_none_or(|s| s + resend_delay_ms < ts),
        };
        if !due {
            continue;
        }
        a.last_sent_ms = Some(ts);
        a.valid_until_ms = ts + 4 * resend_delay_ms.max(interval_ms);
        out.push(Notification {
            labels: a.labels.clone(),
            annotations: a.annotations.clone(),
            starts_at_ms: a.fired_at_ms.unwrap_or(a.active_at_ms),
            ends_at_ms: a.resolved_at_ms.unwrap_or(a.valid_until_ms),
            expr: rule.spec.expr.clone(),
        });
    }
    out
}

#[cfg(test)]
pub(super) mod tests {
    #![allow(clippy::unwrap_used)]
    use std::sync::Arc;

    use async_trait::async_trait;

    use super::*;
    use crate::rules::file::parse_file;
    use crate::rules::{EngineQuerier, ResultSink, RuleMetrics};
    use crate::{Engine, EngineOptions};

    #[derive(Debug, Default)]
    pub(crate) struct VecSink(Mutex<Vec<OutSample>>);

    #[async_trait]
    impl ResultSink for VecSink {
        async fn append(&self, samples: Vec<OutSample>) -> Result<(), String> {
            self.0.lock().unwrap().extend(samples);
            Ok(())
        }
        async fn sync(&self) -> Result<(), String> {
            Ok(())
        }
    }

    impl VecSink {
        pub(crate) fn take(&self) -> Vec<String> {
            let mut v: Vec<String> = self
                .0
                .lock()
                .unwrap()
                .drain(..)
                .map(|(l, t, v)| {
                    let v = if v.to_bits() == STALE_NAN_BITS { "stale".to_string() } else { v.to_string() };
                    format!("{l} {t} {v}")
                })
                .collect();
            v.sort();
            v
        }
    }

    pub(crate) fn env(src: Arc<engine::MemSource>, sink: Arc<VecSink>) -> RuleEnv {
        RuleEnv {
            querier: Arc::new(EngineQuerier(Engine::new(src, EngineOptions::default()))),
            sink,
            external_labels: BTreeMap::from([("cluster".to_string(), "eu1".to_string())]),
            external_url: String::new(),
            resend_delay_ms: 60_000,
            metrics: RuleMetrics::default(),
        }
    }

    fn group(text: &str) -> Group {
        Group::new(parse_file("f.yml", text, 60_000).unwrap().remove(0), true)
    }

    const M: i64 = 60_000;

    #[tokio::test]
    async fn recording_rules_and_stale_markers() {
        let src = Arc::new(engine::MemSource::new());
        src.add(Labels::from_pairs([("__name__", "up"), ("job", "a"), ("i", "1")]), &[0, M], &[1.0, 1.0]);
        src.add(Labels::from_pairs([("__name__", "up"), ("job", "b"), ("i", "2")]), &[0], &[0.0]);
        let sink = Arc::new(VecSink::default());
        let env = env(src, sink.clone());
        let g = group(
            "groups:\n- name: g\n  query_offset: 30s\n  rules:\n  - record: job:up:sum\n    expr: sum by (job) (up)\n    labels:\n      team: '{{x}}'\n  - record: bad\n    expr: up[1m]\n",
        );
        g.eval(M + 30_000, &env).await;
        // query at ts - offset = 1m: both series visible (lookback 5m)
        assert_eq!(
            sink.take(),
            [r#"job:up:sum{job="a", team="{{x}}"} 60000 1"#, r#"job:up:sum{job="b", team="{{x}}"} 60000 0"#]
        );
        {
            let st = g.lock();
            assert_eq!(st.rules[0].health, Health::Ok);
            assert_eq!(st.rules[1].health, Health::Err);
            assert!(st.rules[1].last_error.as_deref().unwrap().contains("not a vector or scalar"));
        }
        // at 5m30s (query at 5m) job b's only sample (t=0) left the lookback: its series goes stale
        g.eval(5 * M + 30_000, &env).await;
        assert_eq!(
            sink.take(),
            [r#"job:up:sum{job="a", team="{{x}}"} 300000 1"#, r#"job:up:sum{job="b", team="{{x}}"} 300000 stale"#]
        );
    }

    #[tokio::test]
    async fn alerts_pending_firing_resolved() {
        let src = Arc::new(engine::MemSource::new());
        // value 1 (alerting) from 0 to 3m, 0 from 4m on
        let ts: Vec<i64> = (0..10).map(|i| i * M).collect();
        let vs: Vec<f64> = (0..10).map(|i| if i <= 3 { 1.0 } else { 0.0 }).collect();
        src.add(Labels::from_pairs([("__name__", "err"), ("job", "a")]), &ts, &vs);
        let sink = Arc::new(VecSink::default());
        let env = env(src, sink.clone());
        let g = group(
            "groups:\n- name: g\n  rules:\n  - alert: Errors\n    expr: err > 0\n    for: 2m\n    labels:\n      sev: '{{ $labels.job }}-{{ $externalLabels.cluster }}'\n    annotations:\n      v: '{{ $value }}'\n",
        );
        let n = g.eval(0, &env).await;
        assert!(n.is_empty());
        assert_eq!(
            sink.take(),
            [
                r#"ALERTS_FOR_STATE{alertname="Errors", job="a", sev="a-eu1"} 0 0"#,
                r#"ALERTS{alertname="Errors", alertstate="pending", job="a", sev="a-eu1"} 0 1"#
            ]
        );
        g.eval(M, &env).await;
        assert!(sink.take()[1].contains("pending"));
        let n = g.eval(2 * M, &env).await;
        assert!(sink.take()[1].contains(r#"alertstate="firing""#));
        assert_eq!(n.len(), 1);
        assert_eq!((n[0].starts_at_ms, n[0].ends_at_ms), (2 * M, 2 * M + 4 * M));
        assert_eq!(n[0].annotations["v"], "1");
        assert_eq!(n[0].labels.get("sev"), Some("a-eu1"));
        // resend only after the resend delay (1m): at 3m it is due again (strictly after 2m + 1m? no)
        assert!(g.eval(3 * M, &env).await.is_empty());
        sink.take();
        // resolved at 4m: ALERTS goes stale, a resolved notification is sent
        let n = g.eval(4 * M, &env).await;
        assert_eq!(n.len(), 1);
        assert_eq!(n[0].ends_at_ms, 4 * M);
        let out = sink.take();
        assert!(out.iter().all(|s| s.ends_with("stale")), "{out:?}");
        assert_eq!(out.len(), 2);
        assert_eq!(g.lock().rules[0].active.values().next().unwrap().state, AlertState::Inactive);
    }

    #[tokio::test]
    async fn keep_firing_for_and_limit() {
        let src = Arc::new(engine::MemSource::new());
        src.add(Labels::from_pairs([("__name__", "x"), ("i", "1")]), &[0], &[1.0]);
        src.add(Labels::from_pairs([("__name__", "x"), ("i", "2")]), &[0], &[1.0]);
        let sink = Arc::new(VecSink::default());
        let env = env(src, sink.clone());
        let g =
            group("groups:\n- name: g\n  rules:\n  - alert: A\n    expr: x{i=\"1\"} > 0\n    keep_firing_for: 10m\n");
        g.eval(0, &env).await;
        assert!(sink.take()[1].contains("firing"), "for 0: fires at once");
        // the sample leaves the lookback at 5m; the alert keeps firing until 5m + 10m
        g.eval(6 * M, &env).await;
        assert!(sink.take()[1].contains("firing"));
        g.eval(15 * M, &env).await;
        assert!(sink.take()[1].contains("firing"));
        g.eval(16 * M, &env).await;
        assert!(sink.take().iter().all(|s| s.ends_with("stale")));

        let g = group("groups:\n- name: g\n  limit: 1\n  rules:\n  - alert: A\n    expr: x > 0\n");
        g.eval(0, &env).await;
        let st = g.lock();
        assert_eq!(st.rules[0].last_error.as_deref(), Some("exceeded limit of 1 with 2 alerts"));
        assert!(st.rules[0].active.is_empty());
    }

    #[tokio::test]
    async fn for_state_is_restored() {
        let src = Arc::new(engine::MemSource::new());
        src.add(Labels::from_pairs([("__name__", "x")]), &(0..60).map(|i| i * M).collect::<Vec<_>>(), &[1.0; 60]);
        let sink = Arc::new(VecSink::default());
        let env = env(src, sink.clone());
        let text = "groups:\n- name: g\n  rules:\n  - alert: A\n    expr: x > 0\n    for: 30m\n";
        let g = Group::new(parse_file("f.yml", text, M).unwrap().remove(0), false);
        g.eval(40 * M, &env).await;
        assert!(sink.take().is_empty(), "nothing written before the restore");
        // before the restart it had been active since 5m and was last seen at 20m: 15m spent,
        // 15m remaining (more than the 10m grace) -> active since 5m + (40m - 20m) = 25m
        let found = |alert: &str, l: &Labels| {
            assert_eq!(alert, "A");
            assert_eq!(l.to_string(), r#"{alertname="A"}"#);
            Some((20 * M, 300.0))
        };
        g.restore(40 * M, 10 * M, &found);
        g.eval(41 * M, &env).await;
        let out = sink.take();
        assert_eq!(
            out,
            [
                r#"ALERTS_FOR_STATE{alertname="A"} 2460000 1500"#,
                r#"ALERTS{alertname="A", alertstate="pending"} 2460000 1"#
            ]
        );
        g.eval(55 * M, &env).await;
        assert!(sink.take()[1].contains("firing"));
    }

    #[test]
    fn evaluation_times_align_on_the_group_hash() {
        let g = group("groups:\n- name: g\n  interval: 1m\n  rules: []\n");
        let h = Labels::from_pairs([("name", "g"), ("file", "f.yml")]).stable_hash();
        let offset_ms = ((h % 60_000_000_000) / 1_000_000) as i64;
        for now in [1_700_000_000_000i64, 1_700_000_012_345, 1_700_000_059_999] {
            let t = g.eval_timestamp(now);
            assert!(t <= now && t > now - 60_000, "{t} vs {now}");
            assert_eq!((t - offset_ms).rem_euclid(60_000), 0, "{t}");
        }
    }
}
