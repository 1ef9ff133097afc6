//! Replica deduplication: the samples of one series from several replicas become one track,
//! merged with Thanos's **penalty** algorithm or **chain** (1:1), with the semantics of Thanos's
//! `pkg/dedup`. The querier uses it for `--query.replica-label` / `replicaLabels[]`, the compactor
//! for vertical compaction with `--deduplication.replica-label` (there without the counter
//! adjustment, as Thanos's compactor).
//!
//! ```text
//!   replica a:  0   10   20   30             70   80   90      (seconds)
//!   replica b:    5    15   25   35   45   55   65   75   85   95
//!   penalty:    0   10   20   30             55   65   75   85   95
//!               └ a until it stops; the other replica is penalised by twice the last step, so
//!                 samples too close to the ones taken are skipped; then b until its end
//!   chain:      every timestamp of a and b (on equal timestamps the first replica's value)
//! ```
//!
//! Penalty, step by step (Thanos's `dedupSeriesIterator`), over two sample iterators `a` and `b`:
//! each step first moves `a` to the first sample after `last_t + pen_a` and `b` to the first after
//! `last_t + pen_b`; the earlier of the two is taken (`a` on ties), and the other replica's penalty
//! becomes twice the distance from the previous taken sample (5000 ms before any sample was
//! taken), while the taken replica's penalty resets to 0. Once one replica ends the other is read
//! to its end. Three or more replicas nest: `dedup(dedup(r0, r1), r2)`, where the nested pair
//! seeks by stepping, never skipping. For the counter functions (`rate`, `increase`, `irate`,
//! `resets`), whenever the taken replica switches, a replica whose current value is below the last
//! value taken is raised by the difference from then on (a counter never goes down, so a replica
//! that missed part of the counter is adjusted; Thanos issue 2401).

use std::str::FromStr;

use crate::labels::Labels;

/// Thanos's penalty for the replica not taken before any sample was taken (ms).
const INITIAL_PENALTY_MS: i64 = 5000;

/// How series that are equal without their replica labels are merged.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum DedupFunc {
    /// Thanos's penalty algorithm: follow one replica, switch when it has a gap.
    #[default]
    Penalty,
    /// Every sample of every replica (Prometheus's chained merge); equal timestamps keep the
    /// first replica's sample.
    Chain,
}

impl FromStr for DedupFunc {
    type Err = String;

    fn from_str(s: &str) -> Result<Self, Self::Err> {
        match s {
            "penalty" => Ok(DedupFunc::Penalty),
            "chain" => Ok(DedupFunc::Chain),
            other => Err(format!("unknown deduplication function {other:?}: use penalty or chain")),
        }
    }
}

impl std::fmt::Display for DedupFunc {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(match self {
            DedupFunc::Penalty => "penalty",
            DedupFunc::Chain => "chain",
        })
    }
}

/// True for the functions whose input Thanos treats as a counter when deduplicating (the
/// querier's `counter` argument of [`merge_replicas`]). Accepts Prometheus's names (`rate`) and
/// the planner's (`Rate`).
pub fn is_counter_func(func: Option<&str>) -> bool {
    func.is_some_and(|f| ["rate", "increase", "irate", "resets"].iter().any(|c| f.eq_ignore_ascii_case(c)))
}

/// `l` without the labels named in `names`.
pub fn without_labels(l: &Labels, names: &[String]) -> Labels {
    if !names.iter().any(|n| l.get(n).is_some()) {
        return l.clone();
    }
    let mut out = l.clone();
    for n in names {
        out.remove(n);
    }
    out
}

/// One replica's samples, sorted by timestamp.
pub type Replica<'a> = (&'a [i64], &'a [f64]);

/// Merges replicas with `func`, appending the result to `out_t`/`out_v`. `counter` enables the
/// penalty algorithm's counter adjustment (see the module docs).
pub fn merge_replicas(
    func: DedupFunc,
    replicas: &[Replica<'_>],
    counter: bool,
    out_t: &mut Vec<i64>,
    out_v: &mut Vec<f64>,
) {
    match (replicas, func) {
        ([], _) => {}
        ([(t, v)], _) => {
            out_t.extend_from_slice(t);
            out_v.extend_from_slice(v);
        }
        (_, DedupFunc::Chain) => chain_merge(replicas, out_t, out_v),
        (_, DedupFunc::Penalty) => penalty_merge(replicas, counter, out_t, out_v),
    }
}

/// Every timestamp of every replica once, in order; on equal timestamps the sample of the replica
/// listed first is kept. Also the union of one series' overlapping pieces.
pub fn chain_merge(replicas: &[Replica<'_>], out_t: &mut Vec<i64>, out_v: &mut Vec<f64>) {
    let mut pos = vec![0usize; replicas.len()];
    out_t.reserve(replicas.iter().map(|r| r.0.len()).max().unwrap_or(0));
    loop {
        let mut best: Option<(i64, usize)> = None;
        for (i, (t, _)) in replicas.iter().enumerate() {
            if let Some(&ti) = t.get(pos[i])
                && best.is_none_or(|(bt, _)| ti < bt)
            {
                best = Some((ti, i));
            }
        }
        let Some((t, i)) = best else { return };
        out_t.push(t);
        out_v.push(replicas[i].1[pos[i]]);
        for (j, (tj, _)) in replicas.iter().enumerate() {
            if tj.get(pos[j]) == Some(&t) {
                pos[j] += 1;
            }
        }
    }
}

/// A float sample iterator with Prometheus's `Next`/`Seek` semantics, plus Thanos's value
/// adjustment hook.
trait SampleIter {
    /// Moves to the next sample; false when there is none.
    fn next(&mut self) -> bool;
    /// Moves to the first sample at or after `t` (staying put when already there); false when
    /// there is none.
    fn seek(&mut self, t: i64) -> bool;
    /// The current timestamp (only valid after `next`/`seek` returned true).
    fn at_t(&self) -> i64;
    /// The current sample.
    fn at(&self) -> (i64, f64);
    /// Thanos's `adjustAtValue`: counters raise themselves to `last` when they are below it.
    fn adjust_at_value(&mut self, last: f64);
}

/// One replica's samples; with `counter`, Thanos's `counterErrAdjustSeriesIterator`.
struct SliceIter<'a> {
    ts: &'a [i64],
    vs: &'a [f64],
    /// Current position; `None` before the first `next`/`seek`.
    idx: Option<usize>,
    counter: bool,
    adjust: f64,
}

impl SampleIter for SliceIter<'_> {
    fn next(&mut self) -> bool {
        let i = self.idx.map_or(0, |i| i + 1);
        self.idx = Some(i);
        i < self.ts.len()
    }

    fn seek(&mut self, t: i64) -> bool {
        let mut i = self.idx.unwrap_or(0);
        if i < self.ts.len() && self.ts[i] < t {
            i += self.ts[i..].partition_point(|&x| x < t);
        }
        self.idx = Some(i);
        i < self.ts.len()
    }

    fn at_t(&self) -> i64 {
        self.idx.and_then(|i| self.ts.get(i)).copied().unwrap_or(i64::MAX)
    }

    fn at(&self) -> (i64, f64) {
        match self.idx {
            Some(i) if i < self.ts.len() => (self.ts[i], self.vs[i] + self.adjust),
            _ => (i64::MAX, f64::NAN),
        }
    }

    fn adjust_at_value(&mut self, last: f64) {
        if !self.counter {
            return;
        }
        let (_, v) = self.at();
        if last > v {
            self.adjust += last - v;
        }
    }
}

/// Thanos's `dedupSeriesIterator` over two iterators (either may itself be one).
struct PenaltyIter<'a> {
    a: Box<dyn SampleIter + 'a>,
    b: Box<dyn SampleIter + 'a>,
    a_ok: bool,
    b_ok: bool,
    last_t: i64,
    /// Which iterator gave the last sample (`lastIter`).
    last_is_a: bool,
    pen_a: i64,
    pen_b: i64,
    use_a: bool,
}

impl<'a> PenaltyIter<'a> {
    fn new(mut a: Box<dyn SampleIter + 'a>, mut b: Box<dyn SampleIter + 'a>) -> Self {
        let a_ok = a.next();
        let b_ok = b.next();
        PenaltyIter { a, b, a_ok, b_ok, last_t: i64::MIN, last_is_a: true, pen_a: 0, pen_b: 0, use_a: true }
    }

    /// The value of the sample taken last, if the replica in use still has one.
    fn last_value(&self) -> Option<f64> {
        let valid = if self.use_a { self.a_ok } else { self.b_ok };
        if !valid {
            return None;
        }
        Some(if self.last_is_a { self.a.at().1 } else { self.b.at().1 })
    }

    fn step(&mut self) -> bool {
        if self.a_ok {
            self.a_ok = self.a.seek(self.last_t.saturating_add(1).saturating_add(self.pen_a));
        }
        if self.b_ok {
            self.b_ok = self.b.seek(self.last_t.saturating_add(1).saturating_add(self.pen_b));
        }
        if !self.a_ok {
            self.use_a = false;
            if self.b_ok {
                self.last_t = self.b.at_t();
                self.last_is_a = false;
                self.pen_b = 0;
            }
            return self.b_ok;
        }
        if !self.b_ok {
            self.use_a = true;
            self.last_t = self.a.at_t();
            self.last_is_a = true;
            self.pen_a = 0;
            return true;
        }
        let (ta, tb) = (self.a.at_t(), self.b.at_t());
        self.use_a = ta <= tb;
        let taken = if self.use_a { ta } else { tb };
        let penalty = if self.last_t != i64::MIN { 2 * (taken - self.last_t) } else { INITIAL_PENALTY_MS };
        if self.use_a {
            self.pen_b = penalty;
            self.pen_a = 0;
        } else {
            self.pen_a = penalty;
            self.pen_b = 0;
        }
        self.last_t = taken;
        self.last_is_a = self.use_a;
        true
    }
}

impl SampleIter for PenaltyIter<'_> {
    fn next(&mut self) -> bool {
        let last = self.last_value();
        let was_a = self.use_a;
        let ok = self.step();
        if self.use_a != was_a
            && let Some(v) = last
        {
            self.adjust_at_value(v);
        }
        ok
    }

    fn seek(&mut self, t: i64) -> bool {
        // Steps instead of seeking the inner iterators, so no gap is jumped over.
        loop {
            let ts = self.at_t();
            if ts >= t {
                return if self.use_a { self.a.seek(ts) } else { self.b.seek(ts) };
            }
            if !self.next() {
                return false;
            }
        }
    }

    fn at_t(&self) -> i64 {
        if self.use_a { self.a.at_t() } else { self.b.at_t() }
    }

    fn at(&self) -> (i64, f64) {
        if self.last_is_a { self.a.at() } else { self.b.at() }
    }

    fn adjust_at_value(&mut self, last: f64) {
        if self.a_ok {
            self.a.adjust_at_value(last);
        }
        if self.b_ok {
            self.b.adjust_at_value(last);
        }
    }
}

/// Thanos's penalty merge of two or more replicas (module docs).
pub fn penalty_merge(replicas: &[Replica<'_>], counter: bool, out_t: &mut Vec<i64>, out_v: &mut Vec<f64>) {
    let mut it = replicas.iter().map(|&(ts, vs)| -> Box<dyn SampleIter + '_> {
        Box::new(SliceIter { ts, vs, idx: None, counter, adjust: 0.0 })
    });
    let Some(first) = it.next() else { return };
    let mut merged: Box<dyn SampleIter + '_> = first;
    for r in it {
        merged = Box::new(PenaltyIter::new(merged, r));
    }
    out_t.reserve(replicas.iter().map(|r| r.0.len()).max().unwrap_or(0));
    while merged.next() {
        let (t, v) = merged.at();
        out_t.push(t);
        out_v.push(v);
    }
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]
    use super::*;

    /// Samples at the given seconds, each valued by its second plus `add`.
    fn rep(secs: &[i64], add: f64) -> (Vec<i64>, Vec<f64>) {
        (secs.iter().map(|s| s * 1000).collect(), secs.iter().map(|&s| s as f64 + add).collect())
    }

    fn run(func: DedupFunc, reps: &[(Vec<i64>, Vec<f64>)], counter: bool) -> Vec<(i64, f64)> {
        let r: Vec<Replica<'_>> = reps.iter().map(|(t, v)| (t.as_slice(), v.as_slice())).collect();
        let (mut t, mut v) = (Vec::new(), Vec::new());
        merge_replicas(func, &r, counter, &mut t, &mut v);
        t.into_iter().zip(v).collect()
    }

    fn secs(out: &[(i64, f64)]) -> Vec<i64> {
        out.iter().map(|p| p.0 / 1000).collect()
    }

    #[test]
    fn penalty_fills_a_gap_of_one_replica_with_the_other() {
        // a scrapes at 0,10,20,30 then has a gap until 70; b scrapes every 10 s offset by 5 s.
        let a = rep(&[0, 10, 20, 30, 70, 80, 90], 0.0);
        let b = rep(&[5, 15, 25, 35, 45, 55, 65, 75, 85, 95], 0.5);
        let out = run(DedupFunc::Penalty, &[a, b], false);
        // 0: a (0 <= 5), b penalised by 5000 -> b seeks past 5 s.
        // 10: a, b penalised by 2*(10-0)=20 s -> b seeks to >= 30.001 s (35).
        // 20: a, pen_b 20 s -> b at 45; 30: a, b at 55.
        // next: a at 70 > b at 55 -> b (55), a penalised by 2*(55-30)=50 s -> a seeks to >= 105 s:
        //   a ends, so b is read to its end: 65, 75, 85, 95.
        assert_eq!(secs(&out), vec![0, 10, 20, 30, 55, 65, 75, 85, 95]);
        assert_eq!(out[3].1, 30.0);
        assert_eq!(out[4].1, 55.5);
    }

    #[test]
    fn penalty_of_identical_replicas_is_one_replica() {
        let a = rep(&[0, 10, 20], 0.0);
        let out = run(DedupFunc::Penalty, &[a.clone(), a.clone()], false);
        assert_eq!(out, vec![(0, 0.0), (10_000, 10.0), (20_000, 20.0)]);
        let out = run(DedupFunc::Chain, &[a.clone(), a], false);
        assert_eq!(out, vec![(0, 0.0), (10_000, 10.0), (20_000, 20.0)]);
    }

    #[test]
    fn penalty_with_different_scrape_offsets_follows_one_replica() {
        // Both replicas scrape every 15 s, b 7 s later.
        let a = rep(&[0, 15, 30, 45, 60], 0.0);
        let b = rep(&[7, 22, 37, 52, 67], 0.25);
        let out = run(DedupFunc::Penalty, &[a, b], false);
        // 0: a (0 <= 7), b penalised by the initial 5 s: it stays at 7 (>= 5.001 s).
        // 7: b (7 < a's 15), a penalised by 2*(7-0)=14 s -> a seeks to >= 21.001 s (30).
        // 22: b (22 < 30), a penalised by 2*(22-7)=30 s -> a to >= 52.001 s (60).
        // 37: b, a to >= 67.001 s: a ends; then b to its end: 52, 67.
        assert_eq!(secs(&out), vec![0, 7, 22, 37, 52, 67]);
        assert_eq!((out[0].1, out[1].1), (0.0, 7.25));
        // Chain takes every sample of both.
        let a = rep(&[0, 15, 30], 0.0);
        let b = rep(&[7, 22, 30], 0.25);
        let out = run(DedupFunc::Chain, &[a, b], false);
        assert_eq!(out, vec![(0, 0.0), (7000, 7.25), (15_000, 15.0), (22_000, 22.25), (30_000, 30.0)]);
    }

    #[test]
    fn penalty_adjusts_counters_when_switching() {
        // a counts 100, 110, 120 and stops; b has counted 50 less (it missed part of the counter).
        let a = (vec![0, 10_000, 20_000], vec![100.0, 110.0, 120.0]);
        let b = (vec![5000, 15_000, 25_000, 35_000, 45_000], vec![46.0, 56.0, 66.0, 76.0, 86.0]);
        // 0, 10, 20 from a (b penalised to 45 s); a ends: switch to b at 45 s. Its 86 is below the
        // last value taken (120), so b is raised by 34 for counters.
        let out = run(DedupFunc::Penalty, &[a.clone(), b.clone()], true);
        assert_eq!(out, vec![(0, 100.0), (10_000, 110.0), (20_000, 120.0), (45_000, 120.0)]);
        let out = run(DedupFunc::Penalty, &[a, b], false);
        assert_eq!(out, vec![(0, 100.0), (10_000, 110.0), (20_000, 120.0), (45_000, 86.0)]);
        // Thanos compares against the value of `a` it has not taken yet on the very first step: b
        // starting earlier and lower is raised to a's first value.
        let a = (vec![10_000, 20_000], vec![100.0, 110.0]);
        let b = (vec![5000], vec![90.0]);
        let out = run(DedupFunc::Penalty, &[a, b], true);
        assert_eq!(out, vec![(5000, 100.0), (20_000, 110.0)]);
    }

    #[test]
    fn three_replicas_nest() {
        // All scrape at the same times; r0 stops after 10 s, r1 after 30 s, r2 after 50 s.
        let r0 = rep(&[0, 10], 0.0);
        let r1 = rep(&[0, 10, 20, 30], 0.1);
        let r2 = rep(&[0, 10, 20, 30, 40, 50], 0.2);
        let out = run(DedupFunc::Penalty, &[r0, r1, r2], false);
        // Inner pair (r0, r1) gives 0, 10 from r0; r2 is penalised by 2*10 s after 10 s, so it seeks
        // to >= 30.001 s while the inner pair ends (r1 was penalised past 30 s as well): 40, 50 from r2.
        assert_eq!(secs(&out), vec![0, 10, 40, 50]);
        assert_eq!(out[2].1, 40.2);
    }

    #[test]
    fn chain_and_penalty_with_empty_and_single_replicas() {
        let a = rep(&[1, 2], 0.0);
        let empty = (vec![], vec![]);
        assert_eq!(secs(&run(DedupFunc::Penalty, &[a.clone(), empty.clone()], false)), vec![1, 2]);
        assert_eq!(secs(&run(DedupFunc::Penalty, &[empty.clone(), a.clone()], false)), vec![1, 2]);
        assert_eq!(secs(&run(DedupFunc::Chain, &[empty, a.clone()], false)), vec![1, 2]);
        assert_eq!(run(DedupFunc::Penalty, std::slice::from_ref(&a), true), run(DedupFunc::Chain, &[a], true));
        assert!(run(DedupFunc::Penalty, &[], false).is_empty());
    }

    #[test]
    fn names_and_labels() {
        assert_eq!("chain".parse::<DedupFunc>().unwrap(), DedupFunc::Chain);
        assert_eq!(DedupFunc::default().to_string(), "penalty");
        assert!("quorum".parse::<DedupFunc>().is_err());
        assert!(is_counter_func(Some("Rate")) && is_counter_func(Some("resets")));
        assert!(!is_counter_func(Some("delta")) && !is_counter_func(None));
        let l = Labels::from_pairs([("__name__", "up"), ("replica", "a"), ("zone", "z")]);
        assert_eq!(without_labels(&l, &["replica".into(), "x".into()]).to_string(), r#"up{zone="z"}"#);
    }
}
