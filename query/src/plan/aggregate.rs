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
//! Sums and means are compensated (Kahan), as in Prometheus 3; `stddev`/`stdvar` use
//! Prometheus's uncompensated Welford update. For a single-step (instant) evaluation `topk`
//! output is ordered by value (descending) and `bottomk` ascending within each group, groups in
//! the order their first series came, as Prometheus returns them. `count_values` sets its value
//! label before grouping, as Prometheus does: `count_values by (job) ("job", up)` counts the
//! values of `up`, whatever its `job`.

use std::cmp::Ordering;
use std::collections::{BinaryHeap, HashMap};
use std::fmt;

use arrow::array::RecordBatch;
use engine::Labels;

use super::functions::{MeanAcc, go_max, go_min, kahan_inc, quantile};
use super::label_fn::go_format_v;
use super::{
    Accumulator, BatchView, EvalCtx, Grid, NodeSpec, SeriesData, decode_labels, encode_pair, encoded_pairs,
    has_drop_mark_bytes, is_name_label_bytes, mark_drop_name, scalar_per_step, without_drop_mark,
};
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

impl AggregateSpec {
    /// Writes the encoded group labels of a series (given encoded) into `out`: the `by` labels,
    /// or all but the `without` labels and the metric name. For `count_values` the value label
    /// is left out: its input value is overwritten before grouping (see
    /// [`AggregateSpec::keeps_value_label`]).
    fn group_key(&self, labels: &[u8], out: &mut Vec<u8>) {
        out.clear();
        let value_label = self.value_label.as_deref().map(str::as_bytes);
        for (n, v) in encoded_pairs(labels) {
            if value_label == Some(n) {
                continue;
            }
            let listed = self.labels.iter().any(|l| l.as_bytes() == n);
            let keep = if self.by { listed } else { !listed && !is_name_label_bytes(n) };
            if keep {
                encode_pair(n, v, out);
            }
        }
    }

    /// Whether `count_values` output carries its value label. Prometheus sets the label on
    /// each input series first and groups afterwards, with the label added to a `by` list: so
    /// the label is always kept with `by`, and with `without` unless it is listed there or is
    /// the metric name (then every value of a group is counted together).
    fn keeps_value_label(&self) -> bool {
        match &self.value_label {
            Some(l) => self.by || !(self.labels.contains(l) || super::is_name_label(l)),
            None => false,
        }
    }

    /// `k` of topk/bottomk/limitk at every step, checked as Prometheus checks the parameter
    /// over the whole query: nothing is selected when it is below 1 at every step (whatever
    /// else it is); otherwise a NaN, or a value beyond int64 at any step, is an error.
    fn ks(&self, param: &[f64]) -> Result<Vec<u64>> {
        let max = param.iter().fold(-f64::MAX, |m, &p| go_max(m, p));
        if max < 1.0 {
            return Ok(vec![0; param.len()]);
        }
        if param.iter().any(|p| p.is_nan()) {
            return Err(Error::Execution("Parameter value is NaN".into()));
        }
        let min = param.iter().fold(f64::MAX, |m, &p| go_min(m, p));
        // -2^63, and the largest float below 2^63: Prometheus's int64 limits.
        if min <= -9_223_372_036_854_775_808.0 {
            return Err(Error::Execution(format!("Scalar value {} underflows int64", go_format_v(min))));
        }
        if max >= 9_223_372_036_854_774_784.0 {
            return Err(Error::Execution(format!("Scalar value {} overflows int64", go_format_v(max))));
        }
        Ok(param.iter().map(|&p| (p as i64).max(0) as u64).collect())
    }
}

impl NodeSpec for AggregateSpec {
    const NAME: &'static str = "PromAggregate";

    fn fmt_params(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "{} {} ({}), {}, partial per batch",
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
        let mut acc = AggAcc::new(self.clone(), params, ctx)?;
        acc.update(&super::series_to_batch(&main)?)?;
        Box::new(acc).finish()
    }

    fn folds(&self) -> bool {
        true
    }

    fn accumulator(&self, params: &[Vec<SeriesData>], ctx: &EvalCtx) -> Result<Box<dyn Accumulator>> {
        Ok(Box::new(AggAcc::new(self.clone(), params, ctx)?))
    }
}

/// Ranks two candidates of topk (`top`) or bottomk: `Less` when `a` comes first. NaN ranks
/// last for both; ties (-0 and +0 included, as Prometheus compares them) go to the series seen
/// first.
fn rank(top: bool, a: (f64, u32), b: (f64, u32)) -> Ordering {
    let by_value = match (a.0.is_nan(), b.0.is_nan()) {
        (true, true) => Ordering::Equal,
        (true, false) => Ordering::Greater,
        (false, true) => Ordering::Less,
        _ if top => b.0.partial_cmp(&a.0).unwrap_or(Ordering::Equal),
        _ => a.0.partial_cmp(&b.0).unwrap_or(Ordering::Equal),
    };
    by_value.then(a.1.cmp(&b.1))
}

/// A topk/bottomk candidate in a bounded heap whose top is the worst kept candidate.
#[derive(Debug, Clone, Copy)]
struct Cand {
    v: f64,
    member: u32,
    top: bool,
}

impl PartialEq for Cand {
    fn eq(&self, o: &Self) -> bool {
        self.cmp(o) == Ordering::Equal
    }
}
impl Eq for Cand {}
impl PartialOrd for Cand {
    fn partial_cmp(&self, o: &Self) -> Option<Ordering> {
        Some(self.cmp(o))
    }
}
impl Ord for Cand {
    fn cmp(&self, o: &Self) -> Ordering {
        rank(self.top, (self.v, self.member), (o.v, o.member))
    }
}

/// The running variance of the `stddev` / `stdvar` aggregations, as Prometheus computes it:
/// Welford's update without compensation; a group whose first value is NaN or infinite stays
/// NaN (a later infinite value makes the sum of squares NaN by itself).
#[derive(Debug, Clone, Copy, Default)]
struct WelfordAcc {
    count: f64,
    mean: f64,
    value: f64,
}

impl WelfordAcc {
    fn add(&mut self, v: f64) {
        if self.count == 0.0 {
            self.count = 1.0;
            self.mean = v;
            self.value = if v.is_finite() { 0.0 } else { f64::NAN };
            return;
        }
        self.count += 1.0;
        let delta = v - self.mean;
        self.mean += delta / self.count;
        self.value += delta * (v - self.mean);
    }

    fn variance(&self) -> f64 {
        self.value / self.count
    }
}

/// Per-step state of one group: only what the operator's output needs.
#[derive(Debug)]
enum Steps {
    /// `sum`: compensated sum and its compensation; `seen` marks steps with a member.
    Sum { s: Vec<f64>, c: Vec<f64>, seen: Vec<bool> },
    /// `avg`.
    Avg(Vec<MeanAcc>),
    /// `min` / `max`.
    MinMax { v: Vec<f64>, seen: Vec<bool> },
    /// `count` / `group`: members per step.
    Count(Vec<u32>),
    /// `stddev` / `stdvar`.
    Var(Vec<WelfordAcc>),
    /// `quantile`: the values of each step.
    Values(Vec<Vec<f64>>),
    /// `count_values`: (value bits, count) per step, in first-seen order.
    CountValues(Vec<Vec<(u64, u32)>>),
    /// `topk` / `bottomk`: the best k candidates per step (worst on top).
    Heap(Vec<BinaryHeap<Cand>>),
    /// `limitk`: the first k members per step; `limit_ratio`: the kept members per step.
    Firsts(Vec<Vec<(u32, f64)>>),
}

impl Steps {
    fn new(op: AggOp, n: usize) -> Steps {
        use AggOp::*;
        match op {
            Sum => Steps::Sum { s: vec![0.0; n], c: vec![0.0; n], seen: vec![false; n] },
            Avg => Steps::Avg(vec![MeanAcc::default(); n]),
            Min | Max => Steps::MinMax { v: vec![f64::NAN; n], seen: vec![false; n] },
            Count | Group => Steps::Count(vec![0; n]),
            Stddev | Stdvar => Steps::Var(vec![WelfordAcc::default(); n]),
            Quantile => Steps::Values(vec![Vec::new(); n]),
            CountValues => Steps::CountValues(vec![Vec::new(); n]),
            Topk | Bottomk => Steps::Heap((0..n).map(|_| BinaryHeap::new()).collect()),
            Limitk | LimitRatio => Steps::Firsts(vec![Vec::new(); n]),
        }
    }
}

/// The partial aggregation: per group, per step accumulators updated by every input batch.
/// Group keys are the encoded group labels, decoded only for the output.
struct AggAcc {
    spec: AggregateSpec,
    ctx: EvalCtx,
    /// The parameter per step (k, φ or ratio), NaN where absent.
    param: Vec<f64>,
    /// `k` per step for topk/bottomk/limitk (0 when it is below 1).
    k: Vec<u64>,
    /// Group key -> index into `groups`.
    gidx: HashMap<Vec<u8>, usize>,
    /// Groups in first-seen order.
    groups: Vec<(Vec<u8>, Steps)>,
    /// Per group: some member is marked for delayed name removal (the group's output then is
    /// too, as Prometheus propagates its `DropName` flag through aggregations).
    marked: Vec<bool>,
    /// Encoded labels of every input series (only for the operators that output members).
    members: Vec<Vec<u8>>,
    key: Vec<u8>,
}

impl AggAcc {
    fn new(spec: AggregateSpec, params: &[Vec<SeriesData>], ctx: &EvalCtx) -> Result<AggAcc> {
        let nsteps = spec.grid.len();
        let param: Vec<f64> = match params.first() {
            Some(p) => scalar_per_step(p, &spec.grid),
            None => vec![f64::NAN; nsteps],
        };
        if spec.op == AggOp::Quantile {
            param.iter().for_each(|q| ctx.check_quantile(*q));
        }
        let mut k = Vec::new();
        match spec.op {
            AggOp::Topk | AggOp::Bottomk | AggOp::Limitk => k = spec.ks(&param)?,
            AggOp::LimitRatio if param.iter().any(|p| p.is_nan()) => {
                return Err(Error::Execution("Ratio value is NaN".into()));
            }
            _ => {}
        }
        Ok(AggAcc {
            spec,
            ctx: ctx.clone(),
            param,
            k,
            gidx: HashMap::new(),
            groups: Vec::new(),
            marked: Vec::new(),
            members: Vec::new(),
            key: Vec::new(),
        })
    }
}

impl Accumulator for AggAcc {
    fn update(&mut self, batch: &RecordBatch) -> Result<()> {
        let view = BatchView::new(batch)?;
        let op = self.spec.op;
        let grid = self.spec.grid;
        let nsteps = grid.len();
        let keep_value = self.spec.keeps_value_label();
        for s in view.series() {
            self.spec.group_key(s.labels, &mut self.key);
            let g = match self.gidx.get(self.key.as_slice()) {
                Some(&g) => g,
                None => {
                    self.gidx.insert(self.key.clone(), self.groups.len());
                    self.groups.push((self.key.clone(), Steps::new(op, nsteps)));
                    self.marked.push(false);
                    self.groups.len() - 1
                }
            };
            if has_drop_mark_bytes(s.labels) {
                self.marked[g] = true;
            }
            let member = self.members.len() as u32;
            // limit_ratio keeps a series at a step by where its label hash falls.
            let mut ratio_offset = 0.0;
            if op.selects() {
                self.members.push(s.labels.to_vec());
                if op == AggOp::LimitRatio {
                    let l = decode_labels(s.labels)?;
                    ratio_offset = without_drop_mark(&l).stable_hash() as f64 / u64::MAX as f64;
                }
            }
            let state = &mut self.groups[g].1;
            // Inputs are step-aligned and sorted, so the next point is usually at the next step.
            let mut next = 0usize;
            for (&t, &v) in s.ts.iter().zip(s.vs) {
                let i = if t == grid.start + next as i64 * grid.step {
                    next
                } else {
                    match grid.index_of(t) {
                        Some(i) => i,
                        None => continue,
                    }
                };
                next = i + 1;
                match state {
                    Steps::Sum { s, c, seen } => {
                        (s[i], c[i]) = kahan_inc(v, s[i], c[i]);
                        seen[i] = true;
                    }
                    Steps::Avg(m) => m[i].add(v),
                    Steps::MinMax { v: m, seen } => {
                        let better = if op == AggOp::Min { v < m[i] } else { v > m[i] };
                        if better || m[i].is_nan() {
                            m[i] = v;
                        }
                        seen[i] = true;
                    }
                    Steps::Count(c) => c[i] += 1,
                    Steps::Var(a) => a[i].add(v),
                    Steps::Values(vals) => vals[i].push(v),
                    Steps::CountValues(cv) => {
                        // Without the value label in the output, all values count together.
                        let bits = if !keep_value {
                            0
                        } else if v.is_nan() {
                            f64::NAN.to_bits()
                        } else {
                            v.to_bits()
                        };
                        match cv[i].iter_mut().find(|c| c.0 == bits) {
                            Some(c) => c.1 += 1,
                            None => cv[i].push((bits, 1)),
                        }
                    }
                    Steps::Heap(h) => {
                        let k = self.k[i];
                        if k == 0 {
                            continue;
                        }
                        let cand = Cand { v, member, top: op == AggOp::Topk };
                        if (h[i].len() as u64) < k {
                            h[i].push(cand);
                        } else if let Some(mut worst) = h[i].peek_mut()
                            && cand < *worst
                        {
                            *worst = cand;
                        }
                    }
                    Steps::Firsts(f) => {
                        if op == AggOp::Limitk {
                            if (f[i].len() as u64) < self.k[i] {
                                f[i].push((member, v));
                            }
                        } else {
                            let r = self.param[i].clamp(-1.0, 1.0);
                            let keep = if r >= 0.0 { ratio_offset < r } else { ratio_offset >= 1.0 + r };
                            if keep {
                                f[i].push((member, v));
                            }
                        }
                    }
                }
            }
        }
        Ok(())
    }

    fn finish(self: Box<Self>) -> Result<Vec<SeriesData>> {
        let AggAcc { spec, ctx, param, groups, marked, members, .. } = *self;
        let grid = spec.grid;
        let nsteps = grid.len();
        let t_of = |i: usize| grid.start + i as i64 * grid.step;
        let mut out: Vec<SeriesData> = Vec::new();
        // For the selecting operators: output series per member.
        let mut selected: HashMap<u32, usize> = HashMap::new();
        let mut select = |out: &mut Vec<SeriesData>, m: u32, t: i64, v: f64| -> Result<()> {
            let idx = match selected.get(&m) {
                Some(&i) => i,
                None => {
                    let labels = decode_labels(members.get(m as usize).map(Vec::as_slice).unwrap_or_default())?;
                    out.push(SeriesData::new(labels));
                    selected.insert(m, out.len() - 1);
                    out.len() - 1
                }
            };
            out[idx].push(t, v);
            Ok(())
        };
        let mut cv_out: HashMap<Labels, usize> = HashMap::new();
        for ((key, state), marked) in groups.into_iter().zip(marked) {
            let glabels = decode_labels(&key)?;
            let mut agg = SeriesData::new(glabels.clone());
            if marked {
                mark_drop_name(&mut agg.labels);
            }
            match state {
                Steps::Sum { s, c, seen } => {
                    for i in (0..nsteps).filter(|&i| seen[i]) {
                        agg.push(t_of(i), s[i] + c[i]);
                    }
                }
                Steps::Avg(m) => {
                    for (i, m) in m.iter().enumerate().filter(|(_, m)| m.count() > 0.0) {
                        agg.push(t_of(i), m.mean());
                    }
                }
                Steps::MinMax { v, seen } => {
                    for i in (0..nsteps).filter(|&i| seen[i]) {
                        agg.push(t_of(i), v[i]);
                    }
                }
                Steps::Count(c) => {
                    for (i, &n) in c.iter().enumerate().filter(|(_, n)| **n > 0) {
                        agg.push(t_of(i), if spec.op == AggOp::Group { 1.0 } else { n as f64 });
                    }
                }
                Steps::Var(a) => {
                    for (i, acc) in a.iter().enumerate().filter(|(_, a)| a.count > 0.0) {
                        let var = acc.variance();
                        agg.push(t_of(i), if spec.op == AggOp::Stddev { var.sqrt() } else { var });
                    }
                }
                Steps::Values(mut vals) => {
                    for (i, vs) in vals.iter_mut().enumerate().filter(|(_, v)| !v.is_empty()) {
                        agg.push(t_of(i), quantile(param[i], vs));
                    }
                }
                Steps::CountValues(cv) => {
                    let name = spec.value_label.clone().unwrap_or_default();
                    let keep_value = spec.keeps_value_label();
                    for (i, counts) in cv.into_iter().enumerate() {
                        for (bits, n) in counts {
                            let mut l = glabels.clone();
                            if keep_value {
                                l.set(&name, &engine::gofloat::format_fixed(f64::from_bits(bits)));
                            }
                            let idx = *cv_out.entry(l.clone()).or_insert_with(|| {
                                out.push(SeriesData::new(l));
                                out.len() - 1
                            });
                            out[idx].push(t_of(i), n as f64);
                        }
                    }
                }
                Steps::Heap(heaps) => {
                    for (i, h) in heaps.into_iter().enumerate() {
                        for c in h.into_sorted_vec() {
                            select(&mut out, c.member, t_of(i), c.v)?;
                        }
                    }
                }
                Steps::Firsts(firsts) => {
                    for (i, f) in firsts.into_iter().enumerate() {
                        for (m, v) in f {
                            select(&mut out, m, t_of(i), v)?;
                        }
                    }
                }
            }
            if !agg.ts.is_empty() {
                out.push(agg);
            }
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

    fn bits(out: &[SeriesData]) -> Vec<(String, Vec<i64>, Vec<u64>)> {
        out.iter().map(|s| (s.labels.to_string(), s.ts.clone(), s.vs.iter().map(|v| v.to_bits()).collect())).collect()
    }

    #[test]
    fn partial_aggregation_over_batches_equals_one_pass() {
        let nan = f64::NAN;
        let input = vec![
            s("a", "1", &[1.0, 5.0, nan]),
            s("a", "2", &[5.0, 1e308, 2.0]),
            s("b", "1", &[5.0, -1.0, f64::INFINITY]),
            s("a", "3", &[nan, 1e308, 2.0]),
            s("b", "2", &[0.1, 0.2, 0.3]),
            s("a", "4", &[5.0, 3.0, -0.0]),
        ];
        let k = vec![SeriesData { labels: Labels::default(), ts: vec![0, 10, 20], vs: vec![2.0, 1.0, 3.0] }];
        let q = vec![SeriesData { labels: Labels::default(), ts: vec![0, 10, 20], vs: vec![0.5, 0.9, 0.1] }];
        use AggOp::*;
        for op in [Sum, Avg, Min, Max, Count, Group, Stddev, Stdvar, Quantile, Topk, Bottomk, CountValues, Limitk] {
            for by in [true, false] {
                let mut sp = spec(op, by, &["job"]);
                sp.grid = Grid::new(0, 20, 10);
                sp.value_label = Some("v".into());
                let params: &[Vec<SeriesData>] = match op {
                    Topk | Bottomk | Limitk => std::slice::from_ref(&k),
                    Quantile => std::slice::from_ref(&q),
                    _ => &[],
                };
                let ctx = EvalCtx::new(1000);
                let whole = sp.eval(input.clone(), params, &ctx).unwrap();
                let mut acc = sp.accumulator(params, &ctx).unwrap();
                for part in input.chunks(2) {
                    acc.update(&crate::plan::series_to_batch(part).unwrap()).unwrap();
                }
                let parts = acc.finish().unwrap();
                assert_eq!(bits(&parts), bits(&whole), "{op:?} by={by}");
                assert!(!whole.is_empty(), "{op:?}");
            }
        }
    }

    #[test]
    fn topk_ties_go_to_the_first_series_and_nan_ranks_last() {
        let nan = f64::NAN;
        let input = vec![s("a", "1", &[nan]), s("a", "2", &[5.0]), s("a", "3", &[5.0]), s("a", "4", &[1.0])];
        let k = |n: f64| vec![SeriesData { labels: Labels::default(), ts: vec![0], vs: vec![n] }];
        let mut sp = spec(AggOp::Topk, true, &[]);
        sp.grid = Grid::new(0, 0, 10);
        let ctx = EvalCtx::new(100);
        let out = sp.eval(input.clone(), &[k(2.0)], &ctx).unwrap();
        let inst: Vec<_> = out.iter().map(|s| s.labels.get("instance").unwrap().to_string()).collect();
        assert_eq!(inst, vec!["2", "3"]);
        sp.op = AggOp::Bottomk;
        let out = sp.eval(input.clone(), &[k(4.0)], &ctx).unwrap();
        let inst: Vec<_> = out.iter().map(|s| s.labels.get("instance").unwrap().to_string()).collect();
        assert_eq!(inst, vec!["4", "2", "3", "1"]);
        // -0 and +0 tie: the first series keeps its place.
        let zeros = vec![s("a", "1", &[-0.0]), s("a", "2", &[0.0])];
        for op in [AggOp::Topk, AggOp::Bottomk] {
            sp.op = op;
            let out = sp.eval(zeros.clone(), &[k(1.0)], &ctx).unwrap();
            assert_eq!(out[0].vs[0].to_bits(), (-0.0f64).to_bits(), "{op:?}");
        }
        sp.op = AggOp::Limitk;
        let out = sp.eval(input, &[k(3.0)], &ctx).unwrap();
        let mut inst: Vec<_> = out.iter().map(|s| s.labels.get("instance").unwrap().to_string()).collect();
        inst.sort();
        assert_eq!(inst, vec!["1", "2", "3"]);
    }

    #[test]
    fn stddev_with_an_infinite_member_is_nan_and_count_values_counts() {
        let input = vec![s("a", "1", &[1.0, f64::INFINITY]), s("a", "2", &[3.0, 1.0]), s("a", "3", &[1.0, 1.0])];
        let ctx = EvalCtx::new(100);
        let out = spec(AggOp::Stddev, true, &[]).eval(input.clone(), &[], &ctx).unwrap();
        assert!((out[0].vs[0] - (8.0f64 / 9.0).sqrt()).abs() < 1e-12, "{}", out[0].vs[0]);
        assert!(out[0].vs[1].is_nan());
        let mut sp = spec(AggOp::CountValues, true, &[]);
        sp.value_label = Some("val".into());
        let out = sp.eval(input, &[], &ctx).unwrap();
        let mut got: Vec<(String, Vec<i64>, Vec<f64>)> =
            out.iter().map(|s| (s.labels.get("val").unwrap().to_string(), s.ts.clone(), s.vs.clone())).collect();
        got.sort_by(|a, b| a.0.cmp(&b.0));
        assert_eq!(
            got,
            vec![
                ("+Inf".to_string(), vec![10], vec![1.0]),
                ("1".to_string(), vec![0, 10], vec![2.0, 2.0]),
                ("3".to_string(), vec![0], vec![1.0]),
            ]
        );
    }

    #[test]
    fn stddev_of_a_first_nan_or_infinite_value_is_nan() {
        let ctx = EvalCtx::new(100);
        let (nan, inf) = (f64::NAN, f64::INFINITY);
        for (vals, want) in [
            (vec![inf, 1.0], f64::NAN),
            (vec![1.0, -inf], f64::NAN),
            (vec![nan, 1.0], f64::NAN),
            (vec![1.0, nan], f64::NAN),
            (vec![2.0, 4.0, 4.0, 4.0, 5.0, 5.0, 7.0, 9.0], 2.0),
            (vec![5.0], 0.0),
        ] {
            let input: Vec<SeriesData> = vals.iter().enumerate().map(|(i, v)| s("a", &i.to_string(), &[*v])).collect();
            let mut sp = spec(AggOp::Stddev, true, &[]);
            sp.grid = Grid::new(0, 0, 1);
            let out = sp.eval(input, &[], &ctx).unwrap();
            let got = out[0].vs[0];
            assert!(got.to_bits() == want.to_bits() || (got.is_nan() && want.is_nan()), "{vals:?}: {got}");
        }
    }

    /// `count_values(label, x)` with `by`/`without` over one step: (labels, count), sorted.
    fn count_values(by: bool, labels: &[&str], label: &str, input: Vec<SeriesData>) -> Vec<(String, f64)> {
        let mut sp = spec(AggOp::CountValues, by, labels);
        sp.grid = Grid::new(0, 0, 1);
        sp.value_label = Some(label.into());
        let out = sp.eval(input, &[], &EvalCtx::new(100)).unwrap();
        let mut got: Vec<(String, f64)> = out.iter().map(|s| (s.labels.to_string(), s.vs[0])).collect();
        got.sort_by(|a, b| a.0.cmp(&b.0));
        got
    }

    #[test]
    fn count_values_sets_the_value_label_before_grouping() {
        // Seven `up` series of three jobs, all 1: Prometheus answers {job="1"} 7.
        let input: Vec<SeriesData> = (0..7).map(|i| s(["a", "b", "c"][i % 3], &i.to_string(), &[1.0])).collect();
        assert_eq!(count_values(true, &["job"], "job", input.clone()), vec![("{job=\"1\"}".into(), 7.0)]);
        // A value label beside the grouping: one series per (job, value).
        let mut mixed = input.clone();
        mixed[0].vs = vec![0.0];
        assert_eq!(
            count_values(true, &["job"], "v", mixed),
            vec![
                ("{job=\"a\", v=\"0\"}".into(), 1.0),
                ("{job=\"a\", v=\"1\"}".into(), 2.0),
                ("{job=\"b\", v=\"1\"}".into(), 2.0),
                ("{job=\"c\", v=\"1\"}".into(), 2.0),
            ]
        );
        // `without` the value label: every value of a group counts together, unlabelled.
        assert_eq!(count_values(false, &["instance", "job"], "job", input.clone()), vec![("{}".into(), 7.0)]);
        // `without` other labels: the value label replaces the input's.
        assert_eq!(count_values(false, &["instance"], "job", input), vec![("{job=\"1\"}".into(), 7.0)]);
    }

    #[test]
    fn count_values_over_a_range_gives_one_series_per_value() {
        let input = vec![s("a", "1", &[1.0, 2.0]), s("b", "2", &[1.0, 1.0])];
        let mut sp = spec(AggOp::CountValues, true, &["job"]);
        sp.value_label = Some("job".into());
        let out = sp.eval(input, &[], &EvalCtx::new(100)).unwrap();
        let mut got: Vec<(String, Vec<i64>, Vec<f64>)> =
            out.iter().map(|s| (s.labels.to_string(), s.ts.clone(), s.vs.clone())).collect();
        got.sort_by(|a, b| a.0.cmp(&b.0));
        assert_eq!(
            got,
            vec![("{job=\"1\"}".into(), vec![0, 10], vec![2.0, 1.0]), ("{job=\"2\"}".into(), vec![10], vec![1.0]),]
        );
    }

    #[test]
    fn topk_parameter_is_checked_over_all_steps_as_prometheus_does() {
        let input = vec![s("a", "1", &[1.0, 2.0])];
        let ctx = EvalCtx::new(100);
        let k = |a: f64, b: f64| vec![SeriesData { labels: Labels::default(), ts: vec![0, 10], vs: vec![a, b] }];
        let run = |a: f64, b: f64| spec(AggOp::Topk, true, &[]).eval(input.clone(), &[k(a, b)], &ctx);
        // Below 1 everywhere: nothing, not even for values beyond int64.
        assert!(run(0.5, -1e300).unwrap().is_empty());
        // Otherwise NaN, and values beyond int64, are errors with Prometheus's messages.
        assert_eq!(run(1.0, f64::NAN).unwrap_err().to_string(), "Parameter value is NaN");
        assert_eq!(run(1.0, 1e19).unwrap_err().to_string(), "Scalar value 1e+19 overflows int64");
        assert_eq!(run(1.0, f64::INFINITY).unwrap_err().to_string(), "Scalar value +Inf overflows int64");
        assert_eq!(run(1.0, -1e19).unwrap_err().to_string(), "Scalar value -1e+19 underflows int64");
        // The largest float below 2^63 is already too big for Prometheus.
        assert!(run(1.0, 9_223_372_036_854_774_784.0).is_err());
        assert_eq!(run(1.0, 9_223_372_036_854_773_760.0).unwrap().len(), 1);
        // k below 1 at one step only: that step selects nothing.
        let out = run(0.0, 1.0).unwrap();
        assert_eq!((out[0].ts.clone(), out[0].vs.clone()), (vec![10], vec![2.0]));
    }

    #[test]
    fn instant_topk_orders_within_each_group() {
        let input = vec![s("b", "1", &[1.0]), s("a", "2", &[5.0]), s("b", "3", &[9.0]), s("a", "4", &[2.0])];
        let k = vec![SeriesData { labels: Labels::default(), ts: vec![0], vs: vec![2.0] }];
        let mut sp = spec(AggOp::Topk, true, &["job"]);
        sp.grid = Grid::new(0, 0, 1);
        let out = sp.eval(input, &[k], &EvalCtx::new(100)).unwrap();
        let inst: Vec<&str> = out.iter().map(|s| s.labels.get("instance").unwrap()).collect();
        // Groups in the order of their first series (b, then a), each sorted by value.
        assert_eq!(inst, vec!["3", "1", "2", "4"]);
    }
}
