//! The rule manager: loads the rule files, runs one task per group at Prometheus's aligned
//! evaluation times (missed iterations counted, not caught up), sends alerts, restores `for`
//! state from `ALERTS_FOR_STATE` after a start, and reloads the files on demand (a bad reload
//! keeps the running rules and returns why).

use std::collections::{BTreeMap, HashMap};
use std::sync::{Arc, Mutex, PoisonError};
use std::time::Duration;

use engine::{Labels, Matcher, SelectRequest, SeriesSource};
use futures::TryStreamExt;
use tokio::task::JoinHandle;

use super::file::{RuleKind, expand_globs, load_files};
use super::group::{Group, now_ms};
use super::notifier::Notifier;
use super::{RuleEnv, RuleMetrics};

/// Settings of the manager.
#[derive(Debug, Clone)]
pub struct ManagerOptions {
    /// `--rule-file` patterns (globs).
    pub rule_files: Vec<String>,
    /// `--eval-interval` (ms): the interval of groups that set none.
    pub eval_interval_ms: i64,
    /// `--for-outage-tolerance` (ms).
    pub for_outage_tolerance_ms: i64,
    /// `--for-grace-period` (ms).
    pub for_grace_period_ms: i64,
    /// Where `ALERTS_FOR_STATE` is read back from to restore `for` state (the ruler's own data);
    /// None: no restore.
    pub restore_source: Option<Arc<dyn SeriesSource>>,
}

#[derive(Debug, Default)]
struct Running {
    groups: Vec<Arc<Group>>,
    tasks: Vec<JoinHandle<()>>,
}

/// Runs the rule groups. Share it in an `Arc`.
#[derive(Debug)]
pub struct Manager {
    opts: ManagerOptions,
    env: RuleEnv,
    notifier: Notifier,
    running: Mutex<Running>,
    /// Serialises reloads.
    reload_lock: tokio::sync::Mutex<()>,
}

impl Manager {
    /// A manager that has loaded nothing yet; call [`Manager::reload`] to load and start.
    pub fn new(opts: ManagerOptions, env: RuleEnv, notifier: Notifier) -> Arc<Self> {
        Arc::new(Manager {
            opts,
            env,
            notifier,
            running: Mutex::new(Running::default()),
            reload_lock: tokio::sync::Mutex::new(()),
        })
    }

    /// The metrics.
    pub fn metrics(&self) -> &RuleMetrics {
        &self.env.metrics
    }

    /// The groups running now.
    pub fn groups(&self) -> Vec<Arc<Group>> {
        self.running.lock().unwrap_or_else(PoisonError::into_inner).groups.clone()
    }

    /// Reads the rule files again and replaces the running groups; alert state of rules that are
    /// still there (same file, group, name and expression) carries over. On any error the
    /// running groups stay and the error (every problem, naming file, group and rule) is returned.
    pub async fn reload(self: &Arc<Self>) -> Result<usize, String> {
        let _one = self.reload_lock.lock().await;
        let loaded = expand_globs(&self.opts.rule_files).and_then(|f| load_files(&f, self.opts.eval_interval_ms));
        let specs = match loaded {
            Ok(s) => s,
            Err(e) => {
                self.env.metrics.config_last_reload_success.set(0);
                tracing::error!("loading the rule files failed, keeping the previous rules: {e}");
                return Err(e);
            }
        };
        // the lock is not held across the await below
        let (n, gone) = {
            let mut running = self.running.lock().unwrap_or_else(PoisonError::into_inner);
            let old: HashMap<(String, String), Arc<Group>> =
                running.groups.iter().map(|g| ((g.file.clone(), g.name.clone()), g.clone())).collect();
            let restoring = self.opts.restore_source.is_some();
            let mut groups = Vec::new();
            for spec in specs {
                let prev = old.get(&(spec.file.clone(), spec.name.clone())).cloned();
                let g = Arc::new(Group::new(spec, !restoring || prev.is_some()));
                if let Some(prev) = &prev {
                    carry_over(prev, &g);
                }
                let key = [("rule_group", g.key())];
                self.env.metrics.group_interval.get_or_create(&key).set(g.interval_ms as f64 / 1000.0);
                self.env.metrics.group_rules.get_or_create(&key).set(g.lock().rules.len() as f64);
                // counters exist (at 0) from the start, as Prometheus's
                let m = &self.env.metrics;
                for c in [&m.evaluations, &m.failures, &m.iterations, &m.iterations_missed] {
                    let _ = c.get_or_create(&key);
                }
                groups.push((g, restoring && prev.is_none()));
            }
            for t in running.tasks.drain(..) {
                t.abort();
            }
            // The series of rules that are gone (their own or their group's removal, or a changed
            // expression) end with a stale marker, as Prometheus ends them on reload.
            let gone: Vec<Labels> = running.groups.iter().flat_map(|g| g.take_series()).collect();
            running.groups = groups.iter().map(|(g, _)| g.clone()).collect();
            for (g, restore) in groups {
                let me = self.clone();
                running.tasks.push(tokio::spawn(async move { me.run_group(g, restore).await }));
            }
            let n = running.groups.len();
            (n, gone)
        };
        if !gone.is_empty() {
            let t = now_ms();
            let stale = f64::from_bits(engine::chunkenc::STALE_NAN_BITS);
            let count = gone.len();
            let appended = self.env.sink.append(gone.into_iter().map(|l| (l, t, stale)).collect()).await;
            match appended.and(self.env.sink.sync().await) {
                Ok(()) => tracing::info!(series = count, "stale markers written for removed rules"),
                Err(e) => tracing::warn!("cannot write stale markers for removed rules: {e}"),
            }
        }
        self.env.metrics.config_last_reload_success.set(1);
        self.env.metrics.config_last_reload_seconds.set(now_ms() as f64 / 1000.0);
        tracing::info!(groups = n, "rule files loaded");
        Ok(n)
    }

    /// Stops every group.
    pub fn stop(&self) {
        let mut running = self.running.lock().unwrap_or_else(PoisonError::into_inner);
        for t in running.tasks.drain(..) {
            t.abort();
        }
    }

    async fn iteration(&self, g: &Group, ts: i64) {
        self.env.metrics.iterations.get_or_create(&[("rule_group", g.key())]).inc();
        let alerts = g.eval(ts, &self.env).await;
        self.notifier.enqueue(alerts);
    }

    /// Sleeps until the wall clock reaches `t_ms`.
    async fn sleep_until(t_ms: i64) {
        let wait = t_ms - now_ms();
        if wait > 0 {
            tokio::time::sleep(Duration::from_millis(wait.unsigned_abs())).await;
        }
    }

    /// The next evaluation time after `ts`, counting the iterations missed in between.
    fn next_ts(&self, g: &Group, ts: i64) -> i64 {
        let missed = (now_ms() - ts) / g.interval_ms - 1;
        if missed > 0 {
            let key = [("rule_group", g.key())];
            self.env.metrics.iterations_missed.get_or_create(&key).inc_by(missed.unsigned_abs());
            self.env.metrics.iterations.get_or_create(&key).inc_by(missed.unsigned_abs());
        }
        ts + (missed.max(0) + 1) * g.interval_ms
    }

    async fn run_group(&self, g: Arc<Group>, restore: bool) {
        let mut ts = g.eval_timestamp(now_ms()) + g.interval_ms;
        Self::sleep_until(ts).await;
        self.iteration(&g, ts).await;
        if restore {
            // as Prometheus: one more evaluation first, so recording rules had a chance to run
            Self::sleep_until(ts + g.interval_ms).await;
            ts = self.next_ts(&g, ts);
            self.iteration(&g, ts).await;
            self.restore(&g).await;
        }
        loop {
            Self::sleep_until(ts + g.interval_ms).await;
            ts = self.next_ts(&g, ts);
            self.iteration(&g, ts).await;
        }
    }

    /// Restores `for` state of `g`'s alerts from the `ALERTS_FOR_STATE` series of the last
    /// `--for-outage-tolerance`.
    async fn restore(&self, g: &Group) {
        let Some(source) = &self.opts.restore_source else { return };
        let now = now_ms();
        let names: Vec<String> = g
            .lock()
            .rules
            .iter()
            .filter_map(|r| match &r.spec.kind {
                RuleKind::Alerting { alert, .. } if r.hold_ms() >= self.opts.for_grace_period_ms => Some(alert.clone()),
                _ => None,
            })
            .collect();
        let mut found: BTreeMap<(String, Labels), (i64, f64)> = BTreeMap::new();
        for name in names {
            match last_samples(source.as_ref(), &name, now - self.opts.for_outage_tolerance_ms, now).await {
                Ok(series) => {
                    for (l, t, v) in series {
                        found.insert((name.clone(), l), (t, v));
                    }
                }
                Err(e) => tracing::error!(alert = %name, "cannot restore the 'for' state: {e}"),
            }
        }
        let lookup = |alert: &str, labels: &Labels| found.get(&(alert.to_string(), labels.clone())).copied();
        g.restore(now, self.opts.for_grace_period_ms, &lookup);
        tracing::debug!(group = %g.name, restored = found.len(), "'for' state restored");
    }
}

/// The last sample of each `ALERTS_FOR_STATE{alertname=<alert>}` series in `[min_t, max_t]`, by
/// labels without `__name__`.
async fn last_samples(
    source: &dyn SeriesSource,
    alert: &str,
    min_t: i64,
    max_t: i64,
) -> Result<Vec<(Labels, i64, f64)>, String> {
    let req = SelectRequest {
        matchers: vec![Matcher::equal("__name__", "ALERTS_FOR_STATE"), Matcher::equal("alertname", alert)],
        min_t,
        max_t,
        hints: Default::default(),
    };
    let mut stream = source.select(&req).await.map_err(|e| e.to_string())?;
    let mut out = Vec::new();
    while let Some(batch) = stream.try_next().await.map_err(|e| e.to_string())? {
        for i in 0..batch.num_series() {
            let (labels, ts, vs) = batch.series(i);
            let last = ts.iter().zip(vs).rev().find(|(_, v)| !engine::chunkenc::is_stale_nan(**v));
            if let Some((t, v)) = last {
                let mut l = labels.clone();
                l.remove("__name__");
                out.push((l, *t, *v));
            }
        }
    }
    Ok(out)
}

/// Copies the alerts and health of rules that are still the same from `old` into `new`.
fn carry_over(old: &Group, new: &Group) {
    let mut old_state = old.lock();
    let mut new_state = new.lock();
    for n in new_state.rules.iter_mut() {
        if let Some(o) =
            old_state.rules.iter_mut().find(|o| o.spec.name() == n.spec.name() && o.spec.expr == n.spec.expr)
        {
            n.active = std::mem::take(&mut o.active);
            n.restored = o.restored;
            n.health = o.health;
            n.last_error = o.last_error.clone();
            n.last_eval_ms = o.last_eval_ms;
            n.eval_seconds = o.eval_seconds;
            n.prev_series = std::mem::take(&mut o.prev_series);
        }
    }
    new_state.last_eval_ms = old_state.last_eval_ms;
    new_state.eval_seconds = old_state.eval_seconds;
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]
    use super::*;
    use crate::rules::group::tests::{VecSink, env};
    use crate::rules::notifier::NotifierOptions;

    const M: i64 = 60_000;

    /// Reloading ends the series of rules that are gone with a stale marker, and only those; a
    /// rule kept across reloads keeps its series (ended once its group is removed).
    #[tokio::test]
    async fn reload_marks_the_series_of_removed_rules_stale() {
        let dir = tempfile::tempdir().unwrap();
        let file = dir.path().join("r.yml");
        let rules = |rules: &str| format!("groups:\n- name: g\n  interval: 1h\n  rules:\n{rules}");
        let keep = "  - record: job:up:sum\n    expr: sum by (job) (up)\n";
        let drop = "  - record: up:count\n    expr: count(up)\n";
        std::fs::write(&file, rules(&format!("{keep}{drop}"))).unwrap();

        let src = Arc::new(engine::MemSource::new());
        let now = now_ms();
        src.add(Labels::from_pairs([("__name__", "up"), ("job", "a")]), &[now - M], &[1.0]);
        let sink = Arc::new(VecSink::default());
        let env = env(src, sink.clone());
        let opts = ManagerOptions {
            rule_files: vec![file.to_string_lossy().into_owned()],
            eval_interval_ms: M,
            for_outage_tolerance_ms: 3_600_000,
            for_grace_period_ms: 600_000,
            restore_source: None,
        };
        let notifier = Notifier::new(NotifierOptions::default(), env.metrics.clone()).unwrap();
        let m = Manager::new(opts, env.clone(), notifier);
        assert_eq!(m.reload().await.unwrap(), 1);
        m.groups()[0].eval(now, &env).await;
        let first = sink.take();
        assert_eq!(first.len(), 2, "{first:?}");

        // the second rule is removed: its one series ends, the kept rule's does not
        std::fs::write(&file, rules(keep)).unwrap();
        m.reload().await.unwrap();
        let out = sink.take();
        assert_eq!(out.len(), 1, "{out:?}");
        assert!(out[0].starts_with("up:count ") && out[0].ends_with(" stale"), "{out:?}");

        // a reload without changes writes nothing
        m.reload().await.unwrap();
        assert_eq!(sink.take(), Vec::<String>::new());

        // the group is removed: the kept rule's series (carried over) ends too
        std::fs::write(&file, "groups: []\n").unwrap();
        assert_eq!(m.reload().await.unwrap(), 0);
        let out = sink.take();
        assert_eq!(out.len(), 1, "{out:?}");
        assert!(out[0].starts_with(r#"job:up:sum{job="a"} "#) && out[0].ends_with(" stale"), "{out:?}");
        m.stop();
    }
}
