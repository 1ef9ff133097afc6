//! Numeric helpers shared by the PromQL kernels: compensated (Kahan-Neumaier) sums, means,
//! variances, quantiles and least-squares regression, with Prometheus's handling of NaN and Inf.

/// One step of a compensated sum: adds `inc` to `(sum, c)` and returns the new pair. The final
/// sum is `sum + c`. Once the sum is infinite the compensation is dropped.
pub(crate) fn kahan_inc(inc: f64, sum: f64, c: f64) -> (f64, f64) {
    let t = sum + inc;
    if t.is_infinite() {
        (t, 0.0)
    } else if sum.abs() >= inc.abs() {
        (t, c + ((sum - t) + inc))
    } else {
        (t, c + ((inc - t) + sum))
    }
}

/// Compensated sum of `vs`.
pub(crate) fn kahan_sum(vs: impl IntoIterator<Item = f64>) -> f64 {
    let (mut s, mut c) = (0.0, 0.0);
    for v in vs {
        (s, c) = kahan_inc(v, s, c);
    }
    s + c
}

/// Running mean with a compensated sum that falls back to an incremental mean when the sum
/// overflows (so the mean of huge finite values stays finite).
#[derive(Debug, Clone, Default)]
pub(crate) struct MeanAcc {
    count: f64,
    sum: f64,
    c: f64,
    mean: f64,
    incremental: bool,
}

impl MeanAcc {
    /// Adds one value.
    pub(crate) fn add(&mut self, v: f64) {
        self.count += 1.0;
        if !self.incremental {
            let (s, c) = kahan_inc(v, self.sum, self.c);
            if self.count == 1.0 || !s.is_infinite() {
                self.sum = s;
                self.c = c;
                return;
            }
            // The sum overflowed: continue with a mean of the values so far.
            self.incremental = true;
            self.mean = self.sum / (self.count - 1.0);
            self.c /= self.count - 1.0;
        }
        let q = (self.count - 1.0) / self.count;
        let (m, c) = kahan_inc(v / self.count, q * self.mean, q * self.c);
        self.mean = m;
        self.c = c;
    }

    /// Values added so far.
    pub(crate) fn count(&self) -> f64 {
        self.count
    }

    /// The mean (NaN when empty).
    pub(crate) fn mean(&self) -> f64 {
        if self.count == 0.0 {
            f64::NAN
        } else if self.incremental {
            self.mean + self.c
        } else {
            self.sum / self.count + self.c / self.count
        }
    }
}

/// Running population variance with a compensated running mean and sum of squares (Welford).
#[derive(Debug, Clone, Copy, Default)]
pub(crate) struct VarAcc {
    count: f64,
    mean: f64,
    cmean: f64,
    aux: f64,
    caux: f64,
}

impl VarAcc {
    /// Adds one value.
    pub(crate) fn add(&mut self, v: f64) {
        self.count += 1.0;
        let delta = v - (self.mean + self.cmean);
        (self.mean, self.cmean) = kahan_inc(delta / self.count, self.mean, self.cmean);
        (self.aux, self.caux) = kahan_inc(delta * (v - (self.mean + self.cmean)), self.aux, self.caux);
    }

    /// The variance (NaN when empty).
    pub(crate) fn variance(&self) -> f64 {
        if self.count == 0.0 { f64::NAN } else { (self.aux + self.caux) / self.count }
    }
}

/// Population variance with compensated running mean and sum of squares (Welford).
pub(crate) fn variance(vs: impl IntoIterator<Item = f64>) -> f64 {
    let mut acc = VarAcc::default();
    vs.into_iter().for_each(|v| acc.add(v));
    acc.variance()
}

/// Go's `math.Max`: +Inf wins over NaN, NaN wins over everything else, and +0 over -0 (Rust's
/// `f64::max` returns the other argument for a NaN and leaves the sign of zero open).
pub(crate) fn go_max(a: f64, b: f64) -> f64 {
    if a == f64::INFINITY || b == f64::INFINITY {
        f64::INFINITY
    } else if a.is_nan() || b.is_nan() {
        f64::NAN
    } else if a == 0.0 && b == 0.0 {
        if a.is_sign_negative() { b } else { a }
    } else if a > b {
        a
    } else {
        b
    }
}

/// Go's `math.Min`: -Inf wins over NaN, NaN wins over everything else, and -0 over +0.
pub(crate) fn go_min(a: f64, b: f64) -> f64 {
    if a == f64::NEG_INFINITY || b == f64::NEG_INFINITY {
        f64::NEG_INFINITY
    } else if a.is_nan() || b.is_nan() {
        f64::NAN
    } else if a == 0.0 && b == 0.0 {
        if a.is_sign_negative() { a } else { b }
    } else if a < b {
        a
    } else {
        b
    }
}

/// Go's `sort.Search(n, f)`: the smallest index in `[0, n)` at which `f` is true, or `n`,
/// probing in Go's order (so a predicate that is not monotonic, e.g. one comparing with NaN,
/// gives the index Prometheus gets).
pub(crate) fn go_search(n: usize, f: impl Fn(usize) -> bool) -> usize {
    let (mut i, mut j) = (0usize, n);
    while i < j {
        let h = i + (j - i) / 2;
        if f(h) { j = h } else { i = h + 1 }
    }
    i
}

/// Sorts values ascending as Prometheus sorts the samples of a quantile: NaNs first, -0 and +0
/// equal (a stable sort keeps such ties, like Go's insertion sort of short inputs).
pub(crate) fn sort_nan_first(vs: &mut [f64]) {
    vs.sort_by(|a, b| match (a.is_nan(), b.is_nan()) {
        (true, true) => std::cmp::Ordering::Equal,
        (true, false) => std::cmp::Ordering::Less,
        (false, true) => std::cmp::Ordering::Greater,
        _ => a.partial_cmp(b).unwrap_or(std::cmp::Ordering::Equal),
    });
}

/// The φ-quantile of `vs` by linear interpolation between closest ranks; φ < 0 gives -Inf,
/// φ > 1 gives +Inf, NaN φ or no values give NaN.
pub(crate) fn quantile(q: f64, vs: &mut [f64]) -> f64 {
    if vs.is_empty() || q.is_nan() {
        return f64::NAN;
    }
    if q < 0.0 {
        return f64::NEG_INFINITY;
    }
    if q > 1.0 {
        return f64::INFINITY;
    }
    sort_nan_first(vs);
    let n = vs.len() as f64;
    let rank = q * (n - 1.0);
    let lower = rank.floor().max(0.0);
    let upper = (lower + 1.0).min(n - 1.0);
    let w = rank - rank.floor();
    vs[lower as usize] * (1.0 - w) + vs[upper as usize] * w
}

/// Least-squares fit of `(t - intercept_t) / 1000` against values: `(slope, intercept)`.
pub(crate) fn linear_regression(ts: &[i64], vs: &[f64], intercept_t: i64) -> (f64, f64) {
    let n = ts.len() as f64;
    let const_y = vs.windows(2).all(|w| w[0] == w[1]);
    if const_y {
        let y = vs.first().copied().unwrap_or(f64::NAN);
        if y.is_infinite() {
            return (f64::NAN, f64::NAN);
        }
        return (0.0, y);
    }
    let (mut sx, mut cx, mut sy, mut cy, mut sxy, mut cxy, mut sx2, mut cx2) = (0.0, 0.0, 0.0, 0.0, 0.0, 0.0, 0.0, 0.0);
    for (&t, &v) in ts.iter().zip(vs) {
        let x = (t - intercept_t) as f64 / 1000.0;
        (sx, cx) = kahan_inc(x, sx, cx);
        (sy, cy) = kahan_inc(v, sy, cy);
        (sxy, cxy) = kahan_inc(x * v, sxy, cxy);
        (sx2, cx2) = kahan_inc(x * x, sx2, cx2);
    }
    let (sx, sy, sxy, sx2) = (sx + cx, sy + cy, sxy + cxy, sx2 + cx2);
    let cov = sxy - sx * sy / n;
    let var = sx2 - sx * sx / n;
    let slope = cov / var;
    let intercept = sy / n - slope * sx / n;
    (slope, intercept)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn kahan_recovers_cancelled_ones() {
        assert_eq!(kahan_sum([1e100, 1.0, -1e100]), 1.0);
        assert_eq!(kahan_sum([1.0, f64::INFINITY]), f64::INFINITY);
    }

    #[test]
    fn mean_survives_overflow() {
        let mut m = MeanAcc::default();
        m.add(f64::MAX);
        m.add(f64::MAX);
        assert_eq!(m.mean(), f64::MAX);
        let mut m = MeanAcc::default();
        for v in [1.0, 2.0, 4.0] {
            m.add(v);
        }
        assert!((m.mean() - 7.0 / 3.0).abs() < 1e-15);
    }

    #[test]
    fn quantile_interpolates() {
        assert_eq!(quantile(0.5, &mut [4.0, 1.0, 2.0, 3.0]), 2.5);
        assert_eq!(quantile(1.5, &mut [1.0]), f64::INFINITY);
        assert!(quantile(0.5, &mut []).is_nan());
        assert_eq!(variance([2.0, 4.0, 4.0, 4.0, 5.0, 5.0, 7.0, 9.0]), 4.0);
    }

    #[test]
    fn go_max_and_min_special_values() {
        let (nan, inf) = (f64::NAN, f64::INFINITY);
        let b = |v: f64| v.to_bits();
        // (a, b, Go's math.Max(a, b), Go's math.Min(a, b))
        let cases = [
            (1.0, 2.0, 2.0, 1.0),
            (nan, 1.0, nan, nan),
            (1.0, nan, nan, nan),
            (nan, inf, inf, nan),
            (-inf, nan, nan, -inf),
            (inf, -inf, inf, -inf),
            (-0.0, 0.0, 0.0, -0.0),
            (0.0, -0.0, 0.0, -0.0),
            (-0.0, -0.0, -0.0, -0.0),
        ];
        for (x, y, max, min) in cases {
            assert_eq!(b(go_max(x, y)), b(max), "max({x}, {y})");
            assert_eq!(b(go_min(x, y)), b(min), "min({x}, {y})");
        }
    }

    #[test]
    fn go_search_probes_like_go() {
        let v = [1.0, 3.0, 5.0, 7.0];
        assert_eq!(go_search(v.len(), |i| v[i] >= 4.0), 2);
        assert_eq!(go_search(v.len(), |i| v[i] >= 9.0), 4);
        assert_eq!(go_search(0, |_| true), 0);
        // Nothing compares >= NaN: the search runs off the end, where Go's does.
        let nan = f64::NAN;
        assert_eq!(go_search(v.len(), |i| v[i] >= nan), 4);
        // A NaN in the middle: Go probes index 2 first (NaN >= 2 is false), then 3.
        let w = [1.0, 3.0, f64::NAN, 7.0];
        assert_eq!(go_search(w.len(), |i| w[i] >= 2.0), 3);
    }

    #[test]
    fn quantile_sorts_nan_first_and_keeps_signed_zero_ties_in_input_order() {
        let mut v = [2.0, f64::NAN, 1.0];
        sort_nan_first(&mut v);
        assert!(v[0].is_nan() && v[1] == 1.0 && v[2] == 2.0);
        // NaN ranks lowest: the minimum of values with a NaN is the NaN.
        assert!(quantile(0.0, &mut [5.0, f64::NAN, 1.0]).is_nan());
        assert_eq!(quantile(1.0, &mut [5.0, f64::NAN, 1.0]), 5.0);
        // -0 and +0 tie and keep their order (Go's insertion sort of a short input): the top
        // value is the later zero.
        assert_eq!(quantile(1.0, &mut [0.0, -0.0]).to_bits(), (-0.0f64).to_bits());
        assert_eq!(quantile(1.0, &mut [-0.0, 0.0]).to_bits(), 0.0f64.to_bits());
    }

    #[test]
    fn regression_slope() {
        let (s, i) = linear_regression(&[0, 1000, 2000], &[1.0, 3.0, 5.0], 0);
        assert!((s - 2.0).abs() < 1e-12 && (i - 1.0).abs() < 1e-12);
    }
}
