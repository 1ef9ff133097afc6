//! `PromRangeFunc`: range-vector windows and the functions over them (`rate`, `increase`,
//! `delta`, `irate`, `idelta`, `deriv`, `predict_linear`, `changes`, `resets`, the
//! `*_over_time` family, `double_exponential_smoothing`), plus the raw window of a top-level
//! range selector (`Matrix`).
//!
//! ```text
//!   raw samples of series s (stale markers dropped)      scalar params (one series each)
//!   ──●──●──●──●──●──●──●──►                              e.g. φ of quantile_over_time
//!        (te-range ......... te]    te = (@ or t) - offset
//!        └── window slice ──┘
//!                 ▼  kernel(ts[a..b], vs[a..b], te, range, params at t)
//!   (labels', t, f(window)) one row per step whose window yields a value
//! ```
//!
//! Windows are left-open, as in Prometheus 3. Each window is a pair of indices into the
//! series' sorted timestamp array found with two moving pointers, and the kernels work on the
//! slices directly. `labels'` drops `__name__` except for `last_over_time`, `first_over_time`
//! and the raw window. Series are independent, so the node streams batch by batch: it reads the
//! batch's columns in place and its output shares the input's label dictionary (with the metric
//! name removed once per label set), so labels are never decoded here.

use std::fmt;

use arrow::array::{Array, Int64Array, RecordBatch};

use super::functions::{MeanAcc, kahan_sum, linear_regression, quantile, variance};
use super::{
    BatchBuilder, BatchView, EvalCtx, Grid, NodeSpec, SeriesData, TimeShift, dictionary_dropping_name, encoded_pairs,
    fmt_duration, is_stale,
};
use crate::error::{Error, Result};

/// A function over a range window.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd)]
pub(crate) enum RangeFn {
    Rate,
    Increase,
    Delta,
    Irate,
    Idelta,
    Deriv,
    PredictLinear,
    Changes,
    Resets,
    AvgOverTime,
    MinOverTime,
    MaxOverTime,
    SumOverTime,
    CountOverTime,
    LastOverTime,
    FirstOverTime,
    PresentOverTime,
    StddevOverTime,
    StdvarOverTime,
    QuantileOverTime,
    MadOverTime,
    TsOfFirstOverTime,
    TsOfLastOverTime,
    TsOfMaxOverTime,
    TsOfMinOverTime,
    DoubleExponentialSmoothing,
    /// The raw samples of the window (a top-level range selector of an instant query).
    Matrix,
}

impl RangeFn {
    /// The function of a PromQL name.
    pub(crate) fn from_name(name: &str) -> Option<RangeFn> {
        use RangeFn::*;
        Some(match name {
            "rate" => Rate,
            "increase" => Increase,
            "delta" => Delta,
            "irate" => Irate,
            "idelta" => Idelta,
            "deriv" => Deriv,
            "predict_linear" => PredictLinear,
            "changes" => Changes,
            "resets" => Resets,
            "avg_over_time" => AvgOverTime,
            "min_over_time" => MinOverTime,
            "max_over_time" => MaxOverTime,
            "sum_over_time" => SumOverTime,
            "count_over_time" => CountOverTime,
            "last_over_time" => LastOverTime,
            "first_over_time" => FirstOverTime,
            "present_over_time" => PresentOverTime,
            "stddev_over_time" => StddevOverTime,
            "stdvar_over_time" => StdvarOverTime,
            "quantile_over_time" => QuantileOverTime,
            "mad_over_time" => MadOverTime,
            "ts_of_first_over_time" => TsOfFirstOverTime,
            "ts_of_last_over_time" => TsOfLastOverTime,
            "ts_of_max_over_time" => TsOfMaxOverTime,
            "ts_of_min_over_time" => TsOfMinOverTime,
            "double_exponential_smoothing" => DoubleExponentialSmoothing,
            _ => return None,
        })
    }

    fn name(&self) -> &'static str {
        use RangeFn::*;
        match self {
            Rate => "rate",
            Increase => "increase",
            Delta => "delta",
            Irate => "irate",
            Idelta => "idelta",
            Deriv => "deriv",
            PredictLinear => "predict_linear",
            Changes => "changes",
            Resets => "resets",
            AvgOverTime => "avg_over_time",
            MinOverTime => "min_over_time",
            MaxOverTime => "max_over_time",
            SumOverTime => "sum_over_time",
            CountOverTime => "count_over_time",
            LastOverTime => "last_over_time",
            FirstOverTime => "first_over_time",
            PresentOverTime => "present_over_time",
            StddevOverTime => "stddev_over_time",
            StdvarOverTime => "stdvar_over_time",
            QuantileOverTime => "quantile_over_time",
            MadOverTime => "mad_over_time",
            TsOfFirstOverTime => "ts_of_first_over_time",
            TsOfLastOverTime => "ts_of_last_over_time",
            TsOfMaxOverTime => "ts_of_max_over_time",
            TsOfMinOverTime => "ts_of_min_over_time",
            DoubleExponentialSmoothing => "double_exponential_smoothing",
            Matrix => "matrix",
        }
    }

    /// Whether the output keeps the metric name.
    fn keeps_name(&self) -> bool {
        matches!(self, RangeFn::LastOverTime | RangeFn::FirstOverTime | RangeFn::Matrix)
    }
}

/// Parameters of the range function node.
#[derive(Debug, Clone, PartialEq, Eq, Hash, PartialOrd)]
pub(crate) struct RangeFuncSpec {
    /// Evaluation steps.
    pub(crate) grid: Grid,
    /// Window length (ms).
    pub(crate) range: i64,
    /// `offset` / `@` of the selector.
    pub(crate) shift: TimeShift,
    /// The function.
    pub(crate) func: RangeFn,
}

impl NodeSpec for RangeFuncSpec {
    const NAME: &'static str = "PromRangeFunc";

    fn fmt_params(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}, {}, range={}", self.func.name(), self.grid, fmt_duration(self.range))?;
        self.shift.fmt_suffix(f)
    }

    fn streaming(&self) -> bool {
        true
    }

    fn eval(&self, main: Vec<SeriesData>, params: &[Vec<SeriesData>], ctx: &EvalCtx) -> Result<Vec<SeriesData>> {
        let pvals = self.param_values(params, ctx);
        let mut out = Vec::with_capacity(main.len());
        let (mut total, mut max_window) = (0usize, 0usize);
        for s in main {
            let mut labels = s.labels;
            if !self.func.keeps_name() {
                super::drop_name_or_mark(&mut labels, ctx);
            }
            let mut o = SeriesData::new(labels);
            let w = self.eval_series(&s.ts, &s.vs, None, &pvals, &mut |t, v| o.push(t, v))?.0;
            max_window = max_window.max(w);
            total += o.ts.len();
            ctx.check_samples(total + max_window)?;
            out.push(o);
        }
        Ok(out)
    }

    fn map_batch(&self, batch: &RecordBatch, params: &[Vec<SeriesData>], ctx: &EvalCtx) -> Result<RecordBatch> {
        let view = BatchView::new(batch)?;
        let pvals = self.param_values(params, ctx);
        let mut out = BatchBuilder::with_capacity(self.grid.len().min(batch.num_rows()));
        let mut max_window = 0usize;
        // Start timestamps, when the scan below reads them (0 = unknown, also under nulls).
        let sts = batch.columns().get(3).and_then(|c| c.as_any().downcast_ref::<Int64Array>()).map(|a| a.values());
        for s in view.series() {
            let st = sts.and_then(|a| a.get(s.row..s.row + s.ts.len()));
            let (w, overlap) = self.eval_series(s.ts, s.vs, st, &pvals, &mut |t, v| out.push(s.key, t, v))?;
            if overlap {
                let name = encoded_pairs(s.labels).find(|(n, _)| *n == b"__name__").map(|(_, v)| v).unwrap_or_default();
                ctx.warn(format!(
                    "PromQL warning: sample has start time that overlaps with previous sample timestamp for metric \"{}\"",
                    String::from_utf8_lossy(name)
                ));
            }
            max_window = max_window.max(w);
            ctx.check_samples(out.len() + max_window)?;
        }
        // Labels join late: the output shares the input's label sets, minus the metric name.
        let dict =
            if self.func.keeps_name() { view.dictionary().clone() } else { dictionary_dropping_name(&view, ctx)? };
        out.finish(dict)
    }
}

impl RangeFuncSpec {
    /// Scalar parameters, one value per step (NaN where absent).
    fn param_values(&self, params: &[Vec<SeriesData>], ctx: &EvalCtx) -> Vec<Vec<f64>> {
        let pvals: Vec<Vec<f64>> = params.iter().map(|p| super::scalar_per_step(p, &self.grid)).collect();
        if self.func == RangeFn::QuantileOverTime
            && let Some(q) = pvals.first()
        {
            q.iter().for_each(|q| ctx.check_quantile(*q));
        }
        pvals
    }

    /// Evaluates one series at every step, handing each output point to `emit`; returns the
    /// largest window seen (in samples) and whether a window had a start timestamp overlapping
    /// the previous sample (Prometheus's warning). `sts` are the samples' start timestamps
    /// (0 = unknown), when the scan reads them.
    fn eval_series(
        &self,
        ts: &[i64],
        vs: &[f64],
        sts: Option<&[i64]>,
        pvals: &[Vec<f64>],
        emit: &mut dyn FnMut(i64, f64),
    ) -> Result<(usize, bool)> {
        // Stale markers are not samples for range functions.
        let filtered: (Vec<i64>, Vec<f64>);
        let filtered_st: Vec<i64>;
        let (ts, vs, sts) = if vs.iter().any(|v| is_stale(*v)) {
            filtered = ts.iter().zip(vs).filter(|p| !is_stale(*p.1)).map(|(t, v)| (*t, *v)).unzip();
            let sts = match sts {
                Some(st) => {
                    filtered_st = st.iter().zip(vs).filter(|p| !is_stale(*p.1)).map(|p| *p.0).collect();
                    Some(filtered_st.as_slice())
                }
                None => None,
            };
            (filtered.0.as_slice(), filtered.1.as_slice(), sts)
        } else {
            (ts, vs, sts)
        };
        // A series without any start timestamp behaves as without the column.
        let sts = sts.filter(|st| st.len() == ts.len() && st.iter().any(|&x| x != 0));
        let mut overlap = false;
        let mut max_window = 0usize;
        let (mut lo, mut hi) = (0usize, 0usize);
        for (i, t) in self.grid.times().enumerate() {
            let te = self.shift.eval_time(t);
            let start = te - self.range;
            if self.shift.at.is_some() || i == 0 {
                lo = ts.partition_point(|&x| x <= start);
                hi = ts.partition_point(|&x| x <= te);
            } else {
                while lo < ts.len() && ts[lo] <= start {
                    lo += 1;
                }
                while hi < ts.len() && ts[hi] <= te {
                    hi += 1;
                }
            }
            let hi_c = hi.max(lo);
            let (wt, wv) = (&ts[lo..hi_c], &vs[lo..hi_c]);
            max_window = max_window.max(wt.len());
            if self.func == RangeFn::Matrix {
                for (&t, &v) in wt.iter().zip(wv) {
                    emit(t, v);
                }
                continue;
            }
            if wt.is_empty() {
                continue;
            }
            let p = |k: usize| pvals.get(k).and_then(|v| v.get(i)).copied().unwrap_or(f64::NAN);
            let wst = sts.map(|st| &st[lo..hi_c]);
            if let Some(v) = self.kernel(wt, wv, wst, start, te, t, &p, &mut overlap)? {
                emit(t, v);
            }
        }
        Ok((max_window, overlap))
    }

    /// Applies the function to one non-empty window; `sts` are the window's start timestamps
    /// (read by `rate`, `increase`, `irate` and `resets`), `overlap` is set when `rate` or
    /// `increase` sees a start timestamp overlapping the previous sample.
    #[allow(clippy::too_many_arguments)]
    fn kernel(
        &self,
        ts: &[i64],
        vs: &[f64],
        sts: Option<&[i64]>,
        range_start: i64,
        range_end: i64,
        intercept_t: i64,
        p: &dyn Fn(usize) -> f64,
        overlap: &mut bool,
    ) -> Result<Option<f64>> {
        use RangeFn::*;
        let n = vs.len();
        let last = vs[n - 1];
        // A counter reset between samples i-1 and i: the value drops, or the start timestamp says so.
        let reset = |i: usize| vs[i] < vs[i - 1] || sts.is_some_and(|s| st_reset(s[i - 1], ts[i - 1], s[i], ts[i]));
        Ok(match self.func {
            Rate | Increase => {
                if let Some(s) = sts
                    && !*overlap
                {
                    *overlap = (1..n).any(|i| s[i] != 0 && s[i] < ts[i - 1] && s[i] != s[i - 1]);
                }
                extrapolated_rate(ts, vs, sts, range_start, range_end, true, self.func == Rate)
            }
            Delta => extrapolated_rate(ts, vs, None, range_start, range_end, false, false),
            Irate | Idelta => {
                if n < 2 {
                    return Ok(None);
                }
                let dt = ts[n - 1] - ts[n - 2];
                if dt == 0 {
                    return Ok(None);
                }
                let (prev, cur) = (vs[n - 2], vs[n - 1]);
                let dv = if self.func == Irate && reset(n - 1) { cur } else { cur - prev };
                if self.func == Idelta { Some(dv) } else { Some(dv / (dt as f64 / 1000.0)) }
            }
            Deriv => {
                if n < 2 {
                    return Ok(None);
                }
                Some(linear_regression(ts, vs, ts[0]).0)
            }
            PredictLinear => {
                if n < 2 {
                    return Ok(None);
                }
                let (slope, intercept) = linear_regression(ts, vs, intercept_t);
                Some(intercept + slope * p(0))
            }
            Changes => {
                Some(vs.windows(2).filter(|w| !(w[0] == w[1] || (w[0].is_nan() && w[1].is_nan()))).count() as f64)
            }
            Resets => Some((1..n).filter(|&i| reset(i)).count() as f64),
            AvgOverTime => {
                let mut m = MeanAcc::default();
                vs.iter().for_each(|v| m.add(*v));
                Some(m.mean())
            }
            MinOverTime => Some(vs.iter().fold(f64::NAN, |m, &v| if v < m || m.is_nan() { v } else { m })),
            MaxOverTime => Some(vs.iter().fold(f64::NAN, |m, &v| if v > m || m.is_nan() { v } else { m })),
            SumOverTime => Some(kahan_sum(vs.iter().copied())),
            CountOverTime => Some(n as f64),
            LastOverTime => Some(last),
            FirstOverTime => Some(vs[0]),
            PresentOverTime => Some(1.0),
            StddevOverTime => Some(variance(vs.iter().copied()).sqrt()),
            StdvarOverTime => Some(variance(vs.iter().copied())),
            QuantileOverTime => Some(quantile(p(0), &mut vs.to_vec())),
            MadOverTime if vs.iter().any(|v| v.is_nan()) => Some(f64::NAN),
            MadOverTime => {
                let mut w = vs.to_vec();
                let med = quantile(0.5, &mut w);
                let mut dev: Vec<f64> = vs.iter().map(|v| (v - med).abs()).collect();
                Some(quantile(0.5, &mut dev))
            }
            TsOfFirstOverTime => Some(ts[0] as f64 / 1000.0),
            TsOfLastOverTime => Some(ts[n - 1] as f64 / 1000.0),
            TsOfMaxOverTime | TsOfMinOverTime => {
                let mut best = 0usize;
                for i in 1..n {
                    let (b, v) = (vs[best], vs[i]);
                    let better = if self.func == TsOfMaxOverTime { v >= b } else { v <= b };
                    if better || b.is_nan() {
                        best = i;
                    }
                }
                Some(ts[best] as f64 / 1000.0)
            }
            DoubleExponentialSmoothing => {
                // As in Prometheus, a NaN factor passes the check (and makes the result NaN).
                let (sf, tf) = (p(0), p(1));
                if sf <= 0.0 || sf >= 1.0 {
                    return Err(Error::Execution(format!(
                        "invalid smoothing factor. Expected: 0 < sf < 1, got: {}",
                        go_fixed6(sf)
                    )));
                }
                if tf <= 0.0 || tf >= 1.0 {
                    return Err(Error::Execution(format!(
                        "invalid trend factor. Expected: 0 < tf < 1, got: {}",
                        go_fixed6(tf)
                    )));
                }
                if n < 2 {
                    return Ok(None);
                }
                let (mut s0, mut s1) = (0.0, vs[0]);
                let mut b = vs[1] - vs[0];
                for (i, &v) in vs.iter().enumerate().skip(1) {
                    if i > 1 {
                        b = tf * (s1 - s0) + (1.0 - tf) * b;
                    }
                    let next = sf * v + (1.0 - sf) * (s1 + b);
                    s0 = s1;
                    s1 = next;
                }
                Some(s1)
            }
            Matrix => None,
        })
    }
}

/// A float as Go's `%f` prints it: six decimals, `NaN`, `+Inf`, `-Inf`.
fn go_fixed6(f: f64) -> String {
    if f.is_infinite() {
        return if f > 0.0 { "+Inf".into() } else { "-Inf".into() };
    }
    format!("{f:.6}")
}

/// Whether a start timestamp says a counter reset happened between the previous sample
/// (`prev_st`, `prev_t`) and the current one (`st`, `t`), as Prometheus 3.12 decides it: an
/// unknown (0), invalid (after `t`) or OpenTelemetry "unknown start" (= `t`) start time is no
/// reset, nor one before the previous sample; one after it is; one exactly at it is a reset
/// for a delta series (the previous sample had a valid start time of its own) and not for a
/// cumulative series whose start is unknown.
fn st_reset(prev_st: i64, prev_t: i64, st: i64, t: i64) -> bool {
    if st == 0 || st >= t || st < prev_t {
        return false;
    }
    if st > prev_t {
        return true;
    }
    prev_st <= prev_t && prev_st != 0 && prev_st != prev_t
}

/// `rate`, `increase` and `delta` with Prometheus 3's extrapolation: towards each window edge
/// by at most half the average sample interval unless the samples reach within 1.1 intervals
/// of it, and (counters) never below the point where the counter would have been zero.
///
/// With start timestamps (`sts`, 0 = unknown; counters only) a start timestamp can mark a
/// counter reset, and when the first sample's start time lies inside the window the counter
/// counts from a zero there instead of being extrapolated to the left (so one sample is
/// enough).
fn extrapolated_rate(
    ts: &[i64],
    vs: &[f64],
    sts: Option<&[i64]>,
    range_start: i64,
    range_end: i64,
    counter: bool,
    rate: bool,
) -> Option<f64> {
    let n = vs.len();
    if n == 0 {
        return None;
    }
    let sts = sts.filter(|_| counter);
    let mut result = vs[n - 1] - vs[0];
    if counter {
        for i in 1..n {
            if vs[i] < vs[i - 1] || sts.is_some_and(|s| st_reset(s[i - 1], ts[i - 1], s[i], ts[i])) {
                result += vs[i - 1];
            }
        }
    }
    let mut to_start = (ts[0] - range_start) as f64 / 1000.0;
    let mut to_end = (range_end - ts[n - 1]) as f64 / 1000.0;
    let mut sampled = (ts[n - 1] - ts[0]) as f64 / 1000.0;
    let avg = if n > 1 { sampled / (n - 1) as f64 } else { 0.0 };
    let threshold = avg * 1.1;
    match sts.map(|s| s[0]) {
        Some(st0) if st0 != 0 && st0 > range_start && st0 < ts[0] => {
            // A zero at the first sample's start time replaces the extrapolation to the left.
            to_start = 0.0;
            sampled = (ts[n - 1] - st0) as f64 / 1000.0;
            result += vs[0];
        }
        _ if n == 1 => return None,
        _ => {
            if to_start >= threshold {
                to_start = avg / 2.0;
            }
            if counter && result > 0.0 && vs[0] >= 0.0 {
                let to_zero = sampled * (vs[0] / result);
                if to_zero < to_start {
                    to_start = to_zero;
                }
            }
        }
    }
    if to_end >= threshold {
        to_end = avg / 2.0;
    }
    let mut factor = if sampled != 0.0 { (sampled + to_start + to_end) / sampled } else { 1.0 };
    if rate {
        factor /= (range_end - range_start) as f64 / 1000.0;
    }
    Some(result * factor)
}

#[cfg(test)]
#[allow(clippy::unwrap_used, clippy::expect_used)]
mod tests {
    use super::*;
    use engine::Labels;

    fn run(func: RangeFn, grid: Grid, range: i64, ts: Vec<i64>, vs: Vec<f64>) -> SeriesData {
        let spec = RangeFuncSpec { grid, range, shift: TimeShift::default(), func };
        let s = SeriesData { labels: Labels::from_pairs([("__name__", "x"), ("a", "b")]), ts, vs };
        spec.eval(vec![s], &[], &EvalCtx::new(1000)).unwrap().remove(0)
    }

    #[test]
    fn rate_of_a_steady_counter() {
        // 0, 10, 20, ... every 15s: 10 per 15 s = 2/3 per second.
        let ts: Vec<i64> = (0..40).map(|i| i * 15_000).collect();
        let vs: Vec<f64> = (0..40).map(|i| i as f64 * 10.0).collect();
        let o = run(RangeFn::Rate, Grid::new(300_000, 300_000, 1), 60_000, ts.clone(), vs.clone());
        assert!((o.vs[0] - 10.0 / 15.0).abs() < 1e-12, "{}", o.vs[0]);
        assert_eq!(o.labels.get("__name__"), None);
        let o = run(RangeFn::Increase, Grid::new(300_000, 300_000, 1), 60_000, ts, vs);
        assert!((o.vs[0] - 40.0).abs() < 1e-9, "{}", o.vs[0]);
    }

    #[test]
    fn start_timestamp_resets_follow_prometheus() {
        let m = 60_000;
        // Unknown, invalid, OpenTelemetry "unknown start" (= t) and before-the-previous-sample
        // start times are no resets.
        assert!(!st_reset(0, m, 0, 2 * m));
        assert!(!st_reset(0, m, 3 * m, 2 * m));
        assert!(!st_reset(0, m, 2 * m, 2 * m));
        assert!(!st_reset(m / 2, m, m / 2, 2 * m));
        // After the previous sample: a reset.
        assert!(st_reset(0, m, m + 1, 2 * m));
        // Exactly at the previous sample: a delta point when the previous start time is valid,
        // not when it is unknown, equal to its time, or after it.
        assert!(!st_reset(0, m, m, 2 * m) && !st_reset(m, m, m, 2 * m));
        assert!(!st_reset(2 * m, m, m, 2 * m));
        assert!(st_reset(1, m, m, 2 * m));
        // Without start timestamps the rate is the one of plain extrapolation.
        let ts = [60_000, 120_000];
        let plain = extrapolated_rate(&ts, &[1.0, 2.0], None, 0, 120_000, true, false);
        let unknown = extrapolated_rate(&ts, &[1.0, 2.0], Some(&[0, 0]), 0, 120_000, true, false);
        assert_eq!(plain, unknown);
        // A start time inside the window replaces the left extrapolation by a zero there.
        let st = extrapolated_rate(&ts, &[1.0, 2.0], Some(&[30_000, 30_000]), 0, 120_000, true, false);
        assert_eq!(st, Some(2.0));
    }

    #[test]
    fn counter_reset_and_window_is_left_open() {
        let ts = vec![10_000, 20_000, 30_000, 40_000];
        let vs = vec![5.0, 10.0, 2.0, 4.0];
        let o = run(RangeFn::Resets, Grid::new(40_000, 40_000, 1), 30_000, ts.clone(), vs.clone());
        // window (10s, 40s]: 10, 2, 4 -> one reset.
        assert_eq!(o.vs, vec![1.0]);
        let o = run(RangeFn::CountOverTime, Grid::new(40_000, 40_000, 1), 30_000, ts.clone(), vs.clone());
        assert_eq!(o.vs, vec![3.0]);
        let o = run(RangeFn::LastOverTime, Grid::new(40_000, 40_000, 1), 30_000, ts, vs);
        assert_eq!((o.vs[0], o.labels.get("__name__")), (4.0, Some("x")));
    }

    #[test]
    fn batch_path_matches_series_path_and_drops_the_name_late() {
        let stale = f64::from_bits(crate::plan::STALE_NAN_BITS);
        let mk = |name: &str, inst: &str, vs: Vec<f64>| SeriesData {
            labels: Labels::from_pairs([("__name__", name), ("instance", inst)]),
            ts: (0..vs.len() as i64).map(|i| i * 15_000).collect(),
            vs,
        };
        let input = vec![
            mk("a", "1", vec![1.0, 2.0, 3.0, 10.0, 1.0, 2.0]),
            mk("b", "2", vec![5.0, stale, 6.0, 7.0, 8.0, 9.0]),
            mk("c", "3", vec![1.0]),
        ];
        for func in [RangeFn::Rate, RangeFn::LastOverTime, RangeFn::CountOverTime] {
            let spec = RangeFuncSpec {
                grid: Grid::new(30_000, 75_000, 15_000),
                range: 45_000,
                shift: TimeShift::default(),
                func,
            };
            let ctx = EvalCtx::new(1000);
            let want = spec.eval(input.clone(), &[], &ctx).unwrap();
            let rb = spec.map_batch(&crate::plan::series_to_batch(&input).unwrap(), &[], &ctx).unwrap();
            let got = crate::plan::batch_to_series(&rb).unwrap();
            let want: Vec<SeriesData> = want.into_iter().filter(|s| !s.ts.is_empty()).collect();
            assert_eq!(got, want, "{func:?}");
            assert_eq!(got[0].labels.get("__name__"), if func.keeps_name() { Some("a") } else { None });
        }
        // The stale marker is not a sample: 2 samples in (0s, 45s] for series b at 45s.
        let spec = RangeFuncSpec {
            grid: Grid::new(45_000, 45_000, 1),
            range: 45_000,
            shift: TimeShift::default(),
            func: RangeFn::CountOverTime,
        };
        let out = spec.eval(input, &[], &EvalCtx::new(100)).unwrap();
        assert_eq!(out[1].vs, vec![2.0]);
    }

    #[test]
    fn smoothing_factors_are_checked_as_prometheus_does() {
        let spec = |sf: f64, tf: f64| {
            let s = RangeFuncSpec {
                grid: Grid::new(30_000, 30_000, 1),
                range: 60_000,
                shift: TimeShift::default(),
                func: RangeFn::DoubleExponentialSmoothing,
            };
            let p = |v: f64| vec![SeriesData { labels: Labels::default(), ts: vec![30_000], vs: vec![v] }];
            let x = SeriesData {
                labels: Labels::from_pairs([("a", "b")]),
                ts: vec![0, 15_000, 30_000],
                vs: vec![1.0, 2.0, 4.0],
            };
            s.eval(vec![x], &[p(sf), p(tf)], &EvalCtx::new(100))
        };
        assert_eq!(
            spec(1.0, 0.5).unwrap_err().to_string(),
            "invalid smoothing factor. Expected: 0 < sf < 1, got: 1.000000"
        );
        assert_eq!(
            spec(0.5, f64::NEG_INFINITY).unwrap_err().to_string(),
            "invalid trend factor. Expected: 0 < tf < 1, got: -Inf"
        );
        // A NaN factor is not rejected (no comparison with NaN holds); the result is NaN.
        assert!(spec(f64::NAN, 0.5).unwrap()[0].vs[0].is_nan());
        assert!(spec(0.5, f64::NAN).unwrap()[0].vs[0].is_nan());
    }

    #[test]
    fn windows_follow_steps() {
        let ts: Vec<i64> = (0..10).map(|i| i * 10_000).collect();
        let vs: Vec<f64> = (0..10).map(|i| i as f64).collect();
        let o = run(RangeFn::SumOverTime, Grid::new(20_000, 90_000, 35_000), 20_000, ts, vs);
        // t=20s: (0,20] = 1+2; t=55s: (35,55] = 4+5; t=90s: (70,90] = 8+9
        assert_eq!(o.ts, vec![20_000, 55_000, 90_000]);
        assert_eq!(o.vs, vec![3.0, 9.0, 17.0]);
    }
}
