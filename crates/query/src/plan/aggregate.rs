//! `PromAggregate`: PromQL aggregation operators (`sum`, `avg`, `min`, `max`, `count`, `group`,
//! `stddev`, `stdvar`, `quantile`, `topk`, `bottomk`, `count_values`, `limitk`, `limit_ratio`)
//! with `by` / `without`, evaluated per step.
//!
//! ```text
//!   input series (labels, t, v)              param (scalar per step, e.g. k of topk)
//!        │ group key = by(labels) or labels − without − __name__
//!        ▼
//!   groups ──► per group, per step: fold the members' values at t
//!        ▼
//!   (group labels, t, agg)      or, for topk/bottomk/limitk/limit_ratio,
//!   (member labels, t, v)       the selected members unchanged
//! ```
//!
//! Sums and means are compensated (Kahan), as in Prometheus 3. For a single-step (instant)
//! evaluation `topk` output is ordered by value (descending) and `bottomk` ascending, as
//! Prometheus returns them.

use std::collections::HashMap;
use std::fmt;

use engine::Labels;

use super::functions::{MeanAcc, kahan_sum, quantile, variance};
use super::{EvalCtx, Grid, NodeSpec, SeriesData, scalar_per_step};
use crate::error::{Error, Result};

/// An aggregation operator.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd)]
pub(crate) enum AggOp {
    Sum,
    Avg,
    Min,
    Max,
    Count,
    Group,
    Stddev,
    Stdvar,
    Quantile,
    Topk,
    Bottomk,
    CountValues,
    Limitk,
    LimitRatio,
}

impl AggOp {
    /// The operator of a PromQL name.
    pub(crate) fn from_name(s: &str) -> Option<AggOp> {
        use AggOp::*;
        Some(match s.to_ascii_lowercase().as_str() {
            "sum" => Sum,
            "avg" => Avg,
            "min" => Min,
            "max" => Max,
            "count" => Count,
            "group" => Group,
            "stddev" => Stddev,
            "stdvar" => Stdvar,
            "quantile" => Quantile,
            "topk" => Topk,
            "bottomk" => Bottomk,
            "count_values" => CountValues,
            "limitk" => Limitk,
            "limit_ratio" => LimitRatio,
            _ => return None,
        })
    }

    fn name(&self) -> &'static str {
        use AggOp::*;
        match self {
            Sum => "sum",
            Avg => "avg",
            Min => "min",
            Max => "max",
            Count => "count",
            Group => "group",
            Stddev => "stddev",
            Stdvar => "stdvar",
            Quantile => "quantile",
            Topk => "topk",
            Bottomk => "bottomk",
            CountValues => "count_values",
            Limitk => "limitk",
            LimitRatio => "limit_ratio",
        }
    }

    /// True for the operators that output selected input series rather than one per group.
    fn selects(&self) -> bool {
        matches!(self, AggOp::Topk | AggOp::Bottomk | AggOp::Limitk | AggOp::LimitRatio)
    }
}

/// Parameters of the aggregation.
#[derive(Debug, Clone, PartialEq, Eq, Hash, PartialOrd)]
pub(crate) struct AggregateSpec {
    /// Evaluation steps.
    pub(crate) grid: Grid,
    /// The operator.
    pub(crate) op: AggOp,
    /// `by` (true) or `without` (false).
    pub(crate) by: bool,
    /// The `by` / `without` labels.
    pub(crate) labels: Vec<String>,
    /// The output label of `count_values`.
    pub(crate) value_label: Option<String>,
}

/// Formats a float like Go's `strconv.FormatFloat(f, 'f', -1, 64)`.
pub(crate) fn go_float(v: f64) -> String {
    if v.is_nan() {
        "NaN".into()
    } else if v == f64::INFINITY {
        "+Inf".into()
    } else if v == f64::NEG_INFINITY {
        "-Inf".into()
    } else {
        format!("{v}")
    }
}

impl AggregateSpec {
    /// The group labels of a series.
    fn group_key(&self, l: &Labels) -> Labels {
        if self.by {
            Labels::from_pairs(
                l.iter()
                    .filter(|x| self.labels.iter().any(|n| n == &x.name))
                    .map(|x| (x.name.clone(), x.value.clone())),
            )
        } else {
            Labels::from_pairs(
                l.iter()
                    .filter(|x| !super::is_name_label(&x.name) && !self.labels.iter().any(|n| n == &x.name))
                    .map(|x| (x.name.clone(), x.value.clone())),
            )
        }
    }

    /// Reads `k` of topk/bottomk/limitk at a step.
    fn k_at(&self, p: f64) -> Result<i64> {
        if p.is_nan() {
            return Err(Error::Execution("Parameter value is NaN".into()));
        }
        // i64::MAX as f64 is 2^63.
        if p >= 9_223_372_036_854_775_808.0 {
            return Err(Error::Execution(format!("Scalar value {p} overflows int64 for {}", self.op.name())));
        }
        Ok(if p < -9_223_372_036_854_775_808.0 { i64::MIN } else { p as i64 })
    }
}

impl NodeSpec for AggregateSpec {
    const NAME: &'static str = "PromAggregate";

    fn fmt_params(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "{} {} ({}), {}",
            self.op.name(),
            if self.by { "by" } else { "without" },
            self.labels.join(", "),
            self.grid
        )?;
        if let Some(l) = &self.value_label {
            write!(f, ", label={l:?}")?;
        }
        Ok(())
    }

    fn eval(&self, main: Vec<SeriesData>, params: &[Vec<SeriesData>], ctx: &EvalCtx) -> Result<Vec<SeriesData>> {
        let nsteps = self.grid.len();
        let param: Vec<f64> = match params.first() {
            Some(p) => scalar_per_step(p, &self.grid),
            None => vec![f64::NAN; nsteps],
        };
        if self.op == AggOp::Quantile {
            param.iter().for_each(|q| ctx.check_quantile(*q));
        }
        match self.op {
            AggOp::Topk | AggOp::Bottomk | AggOp::Limitk => {
                for p in &param {
                    self.k_at(*p)?;
                }
            }
            AggOp::LimitRatio if param.iter().any(|p| p.is_nan()) => {
                return Err(Error::Execution("Ratio value is NaN".into()));
            }
            _ => {}
        }
        // Group the series (first-appearance order).
        let mut gidx: HashMap<Labels, usize> = HashMap::new();
        let mut groups: Vec<(Labels, Vec<usize>)> = Vec::new();
        for (i, s) in main.iter().enumerate() {
            let k = self.group_key(&s.labels);
            match gidx.get(&k) {
                Some(&g) => groups[g].1.push(i),
                None => {
                    gidx.insert(k.clone(), groups.len());
                    groups.push((k, vec![i]));
                }
            }
        }
        let mut out: Vec<SeriesData> = Vec::new();
        // For selecting operators: output series per input series index.
        let mut selected: HashMap<usize, usize> = HashMap::new();
        let mut cv_out: HashMap<Labels, usize> = HashMap::new();
        for (glabels, members) in &groups {
            // Bucket the members' points by step.
            let mut buckets: Vec<Vec<(usize, f64)>> = vec![Vec::new(); nsteps];
            for &m in members {
                let s = &main[m];
                for (&t, &v) in s.ts.iter().zip(&s.vs) {
                    if let Some(i) = self.grid.index_of(t) {
                        buckets[i].push((m, v));
                    }
                }
            }
            let mut agg = SeriesData::new(glabels.clone());
            for (i, b) in buckets.iter_mut().enumerate() {
                if b.is_empty() {
                    continue;
                }
                let t = self.grid.start + i as i64 * self.grid.step;
                let vals = || b.iter().map(|x| x.1);
                let v = match self.op {
                    AggOp::Sum => kahan_sum(vals()),
                    AggOp::Avg => {
                        let mut m = MeanAcc::default();
                        vals().for_each(|v| m.add(v));
                        m.mean()
                    }
                    AggOp::Min => vals().fold(f64::NAN, |m, v| if v < m || m.is_nan() { v } else { m }),
                    AggOp::Max => vals().fold(f64::NAN, |m, v| if v > m || m.is_nan() { v } else { m }),
                    AggOp::Count => b.len() as f64,
                    AggOp::Group => 1.0,
                    AggOp::Stdvar | AggOp::Stddev => {
                        let var = if vals().any(f64::is_infinite) { f64::NAN } else { variance(vals()) };
                        if self.op == AggOp::Stddev { var.sqrt() } else { var }
                    }
                    AggOp::Quantile => quantile(param[i], &mut vals().collect::<Vec<_>>()),
                    AggOp::CountValues => {
                        let name = self.value_label.clone().unwrap_or_default();
                        let mut counts: Vec<(String, usize)> = Vec::new();
                        for v in vals() {
                            let s = go_float(v);
                            match counts.iter_mut().find(|c| c.0 == s) {
                                Some(c) => c.1 += 1,
                                None => counts.push((s, 1)),
                            }
                        }
                        for (s, c) in counts {
                            let mut l = glabels.clone();
                            l.set(&name, &s);
                            let idx = *cv_out.entry(l.clone()).or_insert_with(|| {
                                out.push(SeriesData::new(l));
                                out.len() - 1
                            });
                            out[idx].push(t, c as f64);
                        }
                        continue;
                    }
                    AggOp::Topk | AggOp::Bottomk | AggOp::Limitk => {
                        let k = self.k_at(param[i])?;
                        if k < 1 {
                            continue;
                        }
                        let k = (k as usize).min(b.len());
                        let mut picked: Vec<(usize, f64)> = b.clone();
                        if self.op != AggOp::Limitk {
                            let top = self.op == AggOp::Topk;
                            // NaN ranks last for both.
                            picked.sort_by(|x, y| match (x.1.is_nan(), y.1.is_nan()) {
                                (true, true) => std::cmp::Ordering::Equal,
                                (true, false) => std::cmp::Ordering::Greater,
                                (false, true) => std::cmp::Ordering::Less,
                                _ if top => y.1.total_cmp(&x.1),
                                _ => x.1.total_cmp(&y.1),
                            });
                        }
                        picked.truncate(k);
                        for (m, v) in picked {
                            let idx = *selected.entry(m).or_insert_with(|| {
                                out.push(SeriesData::new(main[m].labels.clone()));
                                out.len() - 1
                            });
                            out[idx].push(t, v);
                        }
                        continue;
                    }
                    AggOp::LimitRatio => {
                        let r = param[i];
                        if r.is_nan() {
                            return Err(Error::Execution("Ratio value is NaN".into()));
                        }
                        let r = r.clamp(-1.0, 1.0);
                        for &(m, v) in b.iter() {
                            let off = main[m].labels.stable_hash() as f64 / u64::MAX as f64;
                            let keep = if r >= 0.0 { off < r } else { off >= 1.0 + r };
                            if keep {
                                let idx = *selected.entry(m).or_insert_with(|| {
                                    out.push(SeriesData::new(main[m].labels.clone()));
                                    out.len() - 1
                                });
                                out[idx].push(t, v);
                            }
                        }
                        continue;
                    }
                };
                agg.push(t, v);
            }
            if !self.op.selects() && self.op != AggOp::CountValues {
                out.push(agg);
            }
        }
        if nsteps == 1 && matches!(self.op, AggOp::Topk | AggOp::Bottomk) {
            let top = self.op == AggOp::Topk;
            out.sort_by(|a, b| {
                let (x, y) = (a.vs.first().copied().unwrap_or(f64::NAN), b.vs.first().copied().unwrap_or(f64::NAN));
                match (x.is_nan(), y.is_nan()) {
                    (true, true) => std::cmp::Ordering::Equal,
                    (true, false) => std::cmp::Ordering::Greater,
                    (false, true) => std::cmp::Ordering::Less,
                    _ if top => y.total_cmp(&x),
                    _ => x.total_cmp(&y),
                }
            });
        }
        ctx.check_samples(out.iter().map(|s| s.ts.len()).sum())?;
        Ok(out)
    }
}

#[cfg(test)]
#[allow(clippy::unwrap_used, clippy::expect_used)]
mod tests {
    use super::*;

    fn s(job: &str, inst: &str, vs: &[f64]) -> SeriesData {
        SeriesData {
            labels: Labels::from_pairs([("__name__", "x"), ("job", job), ("instance", inst)]),
            ts: (0..vs.len() as i64).map(|i| i * 10).collect(),
            vs: vs.to_vec(),
        }
    }

    fn spec(op: AggOp, by: bool, labels: &[&str]) -> AggregateSpec {
        AggregateSpec {
            grid: Grid::new(0, 10, 10),
            op,
            by,
            labels: labels.iter().map(|s| s.to_string()).collect(),
            value_label: None,
        }
    }

    #[test]
    fn sum_by_job_and_without() {
        let input = vec![s("a", "1", &[1.0, 2.0]), s("a", "2", &[3.0, 4.0]), s("b", "1", &[5.0, 6.0])];
        let ctx = EvalCtx::new(100);
        let out = spec(AggOp::Sum, true, &["job"]).eval(input.clone(), &[], &ctx).unwrap();
        assert_eq!(out.len(), 2);
        assert_eq!(out[0].labels, Labels::from_pairs([("job", "a")]));
        assert_eq!(out[0].vs, vec![4.0, 6.0]);
        let out = spec(AggOp::Max, false, &["instance"]).eval(input.clone(), &[], &ctx).unwrap();
        assert_eq!(out[1].labels, Labels::from_pairs([("job", "b")]));
        assert_eq!(out[1].vs, vec![5.0, 6.0]);
        let out = spec(AggOp::Count, true, &[]).eval(input, &[], &ctx).unwrap();
        assert_eq!((out.len(), out[0].vs.clone()), (1, vec![3.0, 3.0]));
    }

    #[test]
    fn topk_keeps_member_labels() {
        let input = vec![s("a", "1", &[1.0, 9.0]), s("a", "2", &[3.0, 4.0])];
        let k = vec![SeriesData { labels: Labels::default(), ts: vec![0, 10], vs: vec![1.0, 1.0] }];
        let out = spec(AggOp::Topk, true, &[]).eval(input, &[k], &EvalCtx::new(100)).unwrap();
        assert_eq!(out.len(), 2);
        assert_eq!((out[0].labels.get("instance"), out[0].ts.clone()), (Some("2"), vec![0]));
        assert_eq!((out[1].labels.get("instance"), out[1].vs.clone()), (Some("1"), vec![9.0]));
    }

    #[test]
    fn go_float_format() {
        assert_eq!(go_float(1.0), "1");
        assert_eq!(go_float(0.5), "0.5");
        assert_eq!(go_float(f64::INFINITY), "+Inf");
        assert_eq!(go_float(1e21), "1000000000000000000000");
    }
}
