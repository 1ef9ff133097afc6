//! `PromHistogram`: `histogram_quantile(φ, buckets)` and `histogram_fraction(lo, hi, buckets)`
//! over classic histogram buckets (series with an `le` label).
//!
//! ```text
//!   bucket series (labels + le, t, cumulative count)      φ / lo, hi: scalar per step
//!        ▼ group by labels − le − __name__
//!   per group and step: buckets sorted by le, equal bounds merged, counts made monotonic
//!        ▼
//!   (group labels, t, quantile or fraction) by linear interpolation inside a bucket
//! ```

use std::collections::HashMap;
use std::fmt;

use engine::Labels;

use super::{EvalCtx, Grid, NodeSpec, SeriesData, scalar_per_step};
use crate::error::Result;

/// Which histogram function.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd)]
pub(crate) enum HistFn {
    /// `histogram_quantile(φ, v)`: params [φ].
    Quantile,
    /// `histogram_fraction(lo, hi, v)`: params [lo, hi].
    Fraction,
}

/// Parameters of the histogram function.
#[derive(Debug, Clone, PartialEq, Eq, Hash, PartialOrd)]
pub(crate) struct HistogramSpec {
    /// Evaluation steps.
    pub(crate) grid: Grid,
    /// The function.
    pub(crate) func: HistFn,
}

/// Parses an `le` value like Go's ParseFloat (accepting `+Inf`).
fn parse_le(s: &str) -> Option<f64> {
    match s.trim() {
        "+Inf" | "Inf" | "+inf" | "inf" => Some(f64::INFINITY),
        "-Inf" | "-inf" => Some(f64::NEG_INFINITY),
        t => t.parse::<f64>().ok(),
    }
}

/// Sorts the buckets by upper bound and merges equal bounds; `None` without a +Inf bucket.
fn prepare(mut b: Vec<(f64, f64)>) -> Option<Vec<(f64, f64)>> {
    b.sort_by(|x, y| x.0.total_cmp(&y.0));
    if b.last().map(|l| l.0) != Some(f64::INFINITY) {
        return None;
    }
    let mut merged: Vec<(f64, f64)> = Vec::with_capacity(b.len());
    for (ub, c) in b {
        match merged.last_mut() {
            Some(l) if l.0 == ub => l.1 += c,
            _ => merged.push((ub, c)),
        }
    }
    Some(merged)
}

/// Relative difference below which Prometheus takes two bucket counts as equal.
const SMALL_DELTA_TOLERANCE: f64 = 1e-12;

/// Prometheus's `almost.Equal`: both NaN, equal, or differing by less than `eps` relative to
/// their magnitude (absolutely, near zero).
fn almost_equal(a: f64, b: f64, eps: f64) -> bool {
    if (a.is_nan() && b.is_nan()) || a == b {
        return true;
    }
    let abs_sum = a.abs() + b.abs();
    let diff = (a - b).abs();
    if a == 0.0 || b == 0.0 || abs_sum < f64::MIN_POSITIVE {
        return diff < eps * f64::MIN_POSITIVE;
    }
    diff / abs_sum.min(f64::MAX) < eps
}

/// Makes sorted cumulative counts monotonic as Prometheus does: a count within the tolerance
/// of the last kept one takes its value (in either direction), a smaller one is raised to it.
/// True when a decrease had to be removed (Prometheus's monotonicity info).
fn ensure_monotonic(b: &mut [(f64, f64)]) -> bool {
    let mut forced = false;
    let Some(mut prev) = b.first().map(|x| x.1) else { return false };
    for x in b.iter_mut().skip(1) {
        let cur = x.1;
        if cur == prev {
            continue;
        }
        if almost_equal(prev, cur, SMALL_DELTA_TOLERANCE) {
            x.1 = prev;
            continue;
        }
        if cur < prev {
            x.1 = prev;
            forced = true;
            continue;
        }
        prev = cur;
    }
    forced
}

/// The φ-quantile of cumulative buckets, and whether their counts had to be made monotonic.
pub(crate) fn bucket_quantile(q: f64, buckets: Vec<(f64, f64)>) -> (f64, bool) {
    if q.is_nan() {
        return (f64::NAN, false);
    }
    if q < 0.0 {
        return (f64::NEG_INFINITY, false);
    }
    if q > 1.0 {
        return (f64::INFINITY, false);
    }
    let Some(mut b) = prepare(buckets) else { return (f64::NAN, false) };
    let forced = ensure_monotonic(&mut b);
    let n = b.len();
    if n < 2 {
        return (f64::NAN, forced);
    }
    let total = b[n - 1].1;
    if total == 0.0 {
        return (f64::NAN, forced);
    }
    let mut rank = q * total;
    // The first bucket (of all but the last) holding the rank; with a NaN total or count,
    // Go's binary search decides.
    let i = super::functions::go_search(n - 1, |i| b[i].1 >= rank);
    if i == n - 1 {
        return (b[n - 2].0, forced);
    }
    if i == 0 && b[0].0 <= 0.0 {
        return (b[0].0, forced);
    }
    let (mut start, end, mut count) = (0.0, b[i].0, b[i].1);
    if i > 0 {
        start = b[i - 1].0;
        count -= b[i - 1].1;
        rank -= b[i - 1].1;
    }
    (start + (end - start) * (rank / count), forced)
}

/// The fraction of observations between `lo` and `hi` in cumulative buckets.
pub(crate) fn bucket_fraction(lo: f64, hi: f64, buckets: Vec<(f64, f64)>) -> f64 {
    // Unlike the quantile, the fraction takes the counts as they are.
    let Some(b) = prepare(buckets) else { return f64::NAN };
    let n = b.len();
    let total = b[n - 1].1;
    if total == 0.0 || lo.is_nan() || hi.is_nan() {
        return f64::NAN;
    }
    if lo >= hi {
        return 0.0;
    }
    // Observations below `x`: the count of the buckets below the first bucket reaching past
    // `x`, plus a linear share of that bucket; none of a bucket without a finite lower bound
    // (first bucket at or below zero) or of the +Inf bucket. More than the total (counts that
    // are not monotonic) counts as the total.
    let capped = |r: f64| if r > total { total } else { r };
    let below = |x: f64| -> f64 {
        let mut prev = 0.0;
        let mut lb = if b[0].0 <= 0.0 { f64::NEG_INFINITY } else { 0.0 };
        for &(ub, count) in &b {
            if lb >= x {
                return capped(prev);
            }
            if ub > x {
                let r = if lb == f64::NEG_INFINITY { count } else { prev + (count - prev) * (x - lb) / (ub - lb) };
                return capped(r);
            }
            prev = count;
            lb = ub;
        }
        total
    };
    (below(hi) - below(lo)) / total
}

impl NodeSpec for HistogramSpec {
    const NAME: &'static str = "PromHistogram";

    fn fmt_params(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let n = match self.func {
            HistFn::Quantile => "histogram_quantile",
            HistFn::Fraction => "histogram_fraction",
        };
        write!(f, "{n}, {}", self.grid)
    }

    fn eval(&self, main: Vec<SeriesData>, params: &[Vec<SeriesData>], ctx: &EvalCtx) -> Result<Vec<SeriesData>> {
        let pv: Vec<Vec<f64>> = params.iter().map(|p| scalar_per_step(p, &self.grid)).collect();
        let p = |k: usize, i: usize| pv.get(k).map(|x| x[i]).unwrap_or(f64::NAN);
        if self.func == HistFn::Quantile
            && let Some(q) = pv.first()
        {
            q.iter().for_each(|q| ctx.check_quantile(*q));
        }
        let mut gidx: HashMap<Labels, usize> = HashMap::new();
        // (group labels, per step: (upper bound, cumulative count) of each bucket)
        type Buckets = Vec<Vec<(f64, f64)>>;
        let mut groups: Vec<(Labels, Buckets, String)> = Vec::new();
        for s in &main {
            let name = s.labels.metric_name().unwrap_or("").to_string();
            let Some(le) = s.labels.get("le").and_then(parse_le) else {
                ctx.warn(format!(
                    "PromQL warning: bucket label \"le\" is missing or has a malformed value of \"{}\" for metric name \"{name}\"",
                    s.labels.get("le").unwrap_or("")
                ));
                continue;
            };
            let mut key = s.labels.clone();
            key.remove("le");
            let g = match gidx.get(&key) {
                Some(&g) => g,
                None => {
                    gidx.insert(key.clone(), groups.len());
                    groups.push((key, vec![Vec::new(); self.grid.len()], name));
                    groups.len() - 1
                }
            };
            for (&t, &v) in s.ts.iter().zip(&s.vs) {
                if let Some(i) = self.grid.index_of(t) {
                    groups[g].1[i].push((le, v));
                }
            }
        }
        let mut out = Vec::with_capacity(groups.len());
        for (mut labels, steps, name) in groups {
            super::drop_name_or_mark(&mut labels, ctx);
            let mut o = SeriesData::new(labels);
            for (i, b) in steps.into_iter().enumerate() {
                if b.is_empty() {
                    continue;
                }
                let t = self.grid.start + i as i64 * self.grid.step;
                let v = match self.func {
                    HistFn::Quantile => {
                        let (v, forced) = bucket_quantile(p(0, i), b);
                        if forced {
                            ctx.info(format!(
                                "PromQL info: input to histogram_quantile needed to be fixed for monotonicity (see https://prometheus.io/docs/prometheus/latest/querying/functions/#histogram_quantile) for metric name \"{name}\""
                            ));
                        }
                        v
                    }
                    HistFn::Fraction => bucket_fraction(p(0, i), p(1, i), b),
                };
                o.push(t, v);
            }
            out.push(o);
        }
        super::merge_same_labels(out)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn quantile_interpolates_in_bucket() {
        let b = vec![(0.1, 10.0), (0.5, 30.0), (1.0, 40.0), (f64::INFINITY, 40.0)];
        // rank 20 falls in (0.1, 0.5] halfway.
        assert!((bucket_quantile(0.5, b.clone()).0 - 0.3).abs() < 1e-12);
        assert_eq!(bucket_quantile(1.0, b.clone()).0, 1.0);
        assert!(bucket_quantile(0.5, vec![(1.0, 1.0)]).0.is_nan());
        assert!((bucket_fraction(0.0, 0.5, b) - 0.75).abs() < 1e-12);
    }

    #[test]
    fn quantile_special_values_follow_prometheus() {
        let nan = f64::NAN;
        // A NaN total: no bucket reaches the rank, so the answer is the largest finite bound.
        let b = vec![(1.0, 1.0), (2.0, 2.0), (f64::INFINITY, nan)];
        assert_eq!(bucket_quantile(0.5, b), (2.0, false));
        // A zero total is NaN; φ outside [0, 1] is ±Inf, NaN φ is NaN, without the info.
        assert!(bucket_quantile(0.5, vec![(1.0, 0.0), (f64::INFINITY, 0.0)]).0.is_nan());
        let b = vec![(1.0, 5.0), (2.0, 3.0), (f64::INFINITY, 6.0)];
        assert_eq!(bucket_quantile(-0.5, b.clone()), (f64::NEG_INFINITY, false));
        assert_eq!(bucket_quantile(1.5, b.clone()), (f64::INFINITY, false));
        assert!(bucket_quantile(nan, b.clone()).0.is_nan());
        // A real decrease is forced away (and reported)...
        assert!(bucket_quantile(0.5, b).1);
        // ...while a difference within 1e-12 (relative) in either direction is not reported,
        // and the count is flattened: rank 0.5 * 3 = 1.5 lands in the second bucket.
        let tiny = vec![(1.0, 1.0), (2.0, 3.0), (3.0, 3.0 * (1.0 - 1e-15)), (f64::INFINITY, 3.0)];
        let (q, forced) = bucket_quantile(0.5, tiny);
        assert!(!forced);
        assert!((q - 1.25).abs() < 1e-12, "{q}");
    }

    #[test]
    fn fraction_takes_counts_as_they_are() {
        // Not monotonic: Prometheus does not repair counts for the fraction, and caps a rank
        // above the total at the total.
        let b = vec![(1.0, 4.0), (2.0, 8.0), (f64::INFINITY, 6.0)];
        // Below 1.5: 4 + (8 - 4) * 0.5 = 6 of 6.
        assert_eq!(bucket_fraction(f64::NEG_INFINITY, 1.5, b.clone()), 1.0);
        // Below 2: 8, capped at 6.
        assert_eq!(bucket_fraction(0.0, 2.0, b.clone()), 1.0);
        assert_eq!(bucket_fraction(0.5, 1.0, b.clone()), 2.0 / 6.0);
        // NaN bounds are NaN, an empty interval is 0.
        assert!(bucket_fraction(f64::NAN, 1.0, b.clone()).is_nan());
        assert_eq!(bucket_fraction(2.0, 1.0, b), 0.0);
        // A bound exactly at a bucket boundary takes that bucket's count without interpolation.
        let b = vec![(0.1, 1.0), (0.3, 3.0), (f64::INFINITY, 3.0)];
        assert_eq!(bucket_fraction(f64::NEG_INFINITY, 0.3, b), 1.0);
    }
}
