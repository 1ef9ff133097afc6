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

/// Sorts, merges equal bounds and makes counts monotonic; `None` when unusable.
fn prepare(mut b: Vec<(f64, f64)>, min_len: usize) -> Option<Vec<(f64, f64)>> {
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
    let mut max = f64::NEG_INFINITY;
    for x in merged.iter_mut() {
        if x.1 < max {
            x.1 = max;
        } else {
            max = x.1;
        }
    }
    if merged.len() < min_len {
        return None;
    }
    Some(merged)
}

/// True when the cumulative counts, in bound order, decrease by more than a rounding error
/// (so `histogram_quantile` has to force them monotonic).
fn non_monotonic(b: &[(f64, f64)]) -> bool {
    let mut b = b.to_vec();
    b.sort_by(|x, y| x.0.total_cmp(&y.0));
    let mut prev = f64::NEG_INFINITY;
    for &(_, c) in &b {
        if c < prev && (prev - c) > 1e-12 * prev.abs().max(c.abs()) {
            return true;
        }
        prev = prev.max(c);
    }
    false
}

/// The φ-quantile of cumulative buckets.
pub(crate) fn bucket_quantile(q: f64, buckets: Vec<(f64, f64)>) -> f64 {
    if q.is_nan() {
        return f64::NAN;
    }
    if q < 0.0 {
        return f64::NEG_INFINITY;
    }
    if q > 1.0 {
        return f64::INFINITY;
    }
    let Some(b) = prepare(buckets, 2) else { return f64::NAN };
    let n = b.len();
    let total = b[n - 1].1;
    if total == 0.0 || total.is_nan() {
        return f64::NAN;
    }
    let mut rank = q * total;
    let i = b.partition_point(|x| x.1 < rank);
    if i == n - 1 {
        return b[n - 2].0;
    }
    if i == 0 && b[0].0 <= 0.0 {
        return b[0].0;
    }
    let (mut start, end, mut count) = (0.0, b[i].0, b[i].1);
    if i > 0 {
        start = b[i - 1].0;
        count -= b[i - 1].1;
        rank -= b[i - 1].1;
    }
    start + (end - start) * (rank / count)
}

/// The fraction of observations between `lo` and `hi` in cumulative buckets.
pub(crate) fn bucket_fraction(lo: f64, hi: f64, buckets: Vec<(f64, f64)>) -> f64 {
    if lo.is_nan() || hi.is_nan() {
        return f64::NAN;
    }
    let Some(b) = prepare(buckets, 1) else { return f64::NAN };
    let n = b.len();
    let total = b[n - 1].1;
    if total == 0.0 {
        return f64::NAN;
    }
    if lo >= hi {
        return 0.0;
    }
    // Observations below `x`, interpolating linearly inside finite buckets; the observations
    // of a bucket without a finite lower bound sit at -Inf, those of the +Inf bucket at +Inf.
    let below = |x: f64| -> f64 {
        if x == f64::INFINITY {
            return total;
        }
        if x == f64::NEG_INFINITY {
            return 0.0;
        }
        let i = b.partition_point(|y| y.0 < x).min(n - 1);
        let prev = if i == 0 { 0.0 } else { b[i - 1].1 };
        if b[i].0 == f64::INFINITY {
            return prev;
        }
        let lb = if i > 0 {
            b[i - 1].0
        } else if b[0].0 > 0.0 {
            0.0
        } else {
            f64::NEG_INFINITY
        };
        if lb == f64::NEG_INFINITY {
            return b[i].1;
        }
        if x <= lb {
            return prev;
        }
        prev + (b[i].1 - prev) * (x - lb) / (b[i].0 - lb)
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
                        if non_monotonic(&b) {
                            ctx.info(format!(
                                "PromQL info: input to histogram_quantile needed to be fixed for monotonicity (see https://prometheus.io/docs/prometheus/latest/querying/functions/#histogram_quantile) for metric name \"{name}\""
                            ));
                        }
                        bucket_quantile(p(0, i), b)
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
        assert!((bucket_quantile(0.5, b.clone()) - 0.3).abs() < 1e-12);
        assert_eq!(bucket_quantile(1.0, b.clone()), 1.0);
        assert!(bucket_quantile(0.5, vec![(1.0, 1.0)]).is_nan());
        assert!((bucket_fraction(0.0, 0.5, b) - 0.75).abs() < 1e-12);
    }
}
