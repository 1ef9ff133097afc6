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

use std::cmp::Ordering;
use std::collections::{BinaryHeap, HashMap};
use std::fmt;

use arrow::array::RecordBatch;
use engine::Labels;

use super::functions::{MeanAcc, VarAcc, kahan_inc, quantile};
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
    /// or all but the `without` labels and the metric name.
    fn group_key(&self, labels: &[u8], out: &mut Vec<u8>) {
        out.clear();
        for (n, v) in encoded_pairs(labels) {
            let listed = self.labels.iter().any(|l| l.as_bytes() == n);
            let keep = if self.by { listed } else { !listed && !is_name_label_bytes(n) };
            if keep {
                encode_pair(n, v, out);
            }
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

    fn accumulator(&self, params: &[Vec<SeriesData>], ctx: &EvalCtx) -> Result<Option<Box<dyn Accumulator>>> {
        Ok(Some(Box::new(AggAcc::new(self.clone(), params, ctx)?)))
    }
}

/// Ranks two candidates of topk (`top`) or bottomk: `Less` when `a` comes first. NaN ranks
/// last for both; ties go to the series seen first.
fn rank(top: bool, a: (f64, u32), b: (f64, u32)) -> Ordering {
    let by_value = match (a.0.is_nan(), b.0.is_nan()) {
        (true, true) => Ordering::Equal,
        (true, false) => Ordering::Greater,
        (false, true) => Ordering::Less,
        _ if top => b.0.total_cmp(&a.0),
        _ => a.0.total_cmp(&b.0),
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
    /// `stddev` / `stdvar`, and whether an infinite value was seen.
    Var(Vec<(VarAcc, bool)>),
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
            Stddev | Stdvar => Steps::Var(vec![(VarAcc::default(), false); n]),
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
            AggOp::Topk | AggOp::Bottomk | AggOp::Limitk => {
                for p in &param {
                    k.push(spec.k_at(*p)?.max(0) as u64);
                }
            }
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
                    Steps::Var(a) => {
                        a[i].0.add(v);
                        a[i].1 |= v.is_infinite();
                    }
                    Steps::Values(vals) => vals[i].push(v),
                    Steps::CountValues(cv) => {
                        let bits = if v.is_nan() { f64::NAN.to_bits() } else { v.to_bits() };
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
                    for (i, (acc, inf)) in a.iter().enumerate().filter(|(_, a)| a.0.count() > 0.0) {
                        let var = if *inf { f64::NAN } else { acc.variance() };
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
                    for (i, counts) in cv.into_iter().enumerate() {
                        for (bits, n) in counts {
                            let mut l = glabels.clone();
                            l.set(&name, &engine::gofloat::format_fixed(f64::from_bits(bits)));
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
        if nsteps == 1 && matches!(spec.op, AggOp::Topk | AggOp::Bottomk) {
            let top = spec.op == AggOp::Topk;
            let first = |s: &SeriesData| s.vs.first().copied().unwrap_or(f64::NAN);
            out.sort_by(|a, b| rank(top, (first(a), 0), (first(b), 0)));
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
                let mut acc = sp.accumulator(params, &ctx).unwrap().unwrap();
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
}
