//! `PromInstantFn`: functions applied to every sample on its own: math (`abs`, `ceil`, `exp`,
//! `ln`, `sqrt`, trig, ...), `round`, `clamp*`, `timestamp`, date functions, unary minus.
//!
//! ```text
//!   input (labels, t, v)           scalar params, one series each (e.g. min/max of clamp)
//!        ▼                              ▼
//!   (labels − __name__, t, f(v, params at t))
//! ```
//!
//! Series are independent, so the node streams batch by batch; scalar parameters are
//! collected first.

use std::fmt;

use super::functions::{go_max, go_min};
use super::{EvalCtx, Grid, NodeSpec, SeriesData, scalar_per_step};
use crate::error::Result;

/// A per-sample function.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd)]
pub(crate) enum InstFn {
    Abs,
    Ceil,
    Floor,
    Exp,
    Sqrt,
    Ln,
    Log2,
    Log10,
    Sgn,
    Deg,
    Rad,
    Sin,
    Cos,
    Tan,
    Asin,
    Acos,
    Atan,
    Sinh,
    Cosh,
    Tanh,
    Asinh,
    Acosh,
    Atanh,
    /// Unary minus.
    Neg,
    /// `round(v, to_nearest)`.
    Round,
    /// `clamp(v, min, max)`.
    Clamp,
    ClampMin,
    ClampMax,
    /// `timestamp(v)` of a computed vector: the step time.
    Timestamp,
    /// Only drops the metric name (e.g. after a selector that emitted sample timestamps).
    DropName,
    DayOfMonth,
    DayOfWeek,
    DayOfYear,
    DaysInMonth,
    Hour,
    Minute,
    Month,
    Year,
}

impl InstFn {
    /// The function of a PromQL name.
    pub(crate) fn from_name(s: &str) -> Option<InstFn> {
        use InstFn::*;
        Some(match s {
            "abs" => Abs,
            "ceil" => Ceil,
            "floor" => Floor,
            "exp" => Exp,
            "sqrt" => Sqrt,
            "ln" => Ln,
            "log2" => Log2,
            "log10" => Log10,
            "sgn" => Sgn,
            "deg" => Deg,
            "rad" => Rad,
            "sin" => Sin,
            "cos" => Cos,
            "tan" => Tan,
            "asin" => Asin,
            "acos" => Acos,
            "atan" => Atan,
            "sinh" => Sinh,
            "cosh" => Cosh,
            "tanh" => Tanh,
            "asinh" => Asinh,
            "acosh" => Acosh,
            "atanh" => Atanh,
            "round" => Round,
            "clamp" => Clamp,
            "clamp_min" => ClampMin,
            "clamp_max" => ClampMax,
            "timestamp" => Timestamp,
            "day_of_month" => DayOfMonth,
            "day_of_week" => DayOfWeek,
            "day_of_year" => DayOfYear,
            "days_in_month" => DaysInMonth,
            "hour" => Hour,
            "minute" => Minute,
            "month" => Month,
            "year" => Year,
            _ => return None,
        })
    }

    /// True for the date functions (whose argument defaults to `vector(time())`).
    pub(crate) fn is_date(&self) -> bool {
        use InstFn::*;
        matches!(self, DayOfMonth | DayOfWeek | DayOfYear | DaysInMonth | Hour | Minute | Month | Year)
    }
}

/// Parameters of the per-sample function.
#[derive(Debug, Clone, PartialEq, Eq, Hash, PartialOrd)]
pub(crate) struct InstantFnSpec {
    /// Evaluation steps (to read scalar parameters).
    pub(crate) grid: Grid,
    /// The function.
    pub(crate) func: InstFn,
}

/// Days since 1970-01-01 to (year, month 1-12, day 1-31), proleptic Gregorian.
fn civil_from_days(z: i64) -> (i64, u32, u32) {
    let z = z + 719_468;
    let era = z.div_euclid(146_097);
    let doe = z.rem_euclid(146_097);
    let yoe = (doe - doe / 1460 + doe / 36_524 - doe / 146_096) / 365;
    let y = yoe + era * 400;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let d = (doy - (153 * mp + 2) / 5 + 1) as u32;
    let m = if mp < 10 { mp + 3 } else { mp - 9 } as u32;
    (if m <= 2 { y + 1 } else { y }, m, d)
}

fn is_leap(y: i64) -> bool {
    (y % 4 == 0 && y % 100 != 0) || y % 400 == 0
}

/// A date field of a Unix time in seconds (UTC). The seconds are truncated towards zero, as
/// Prometheus converts them (`int64(v)`), so -0.5 is still 1970-01-01 00:00:00. A time that is
/// not finite or does not fit an int64 gives NaN (Go's conversion of it is platform-defined).
fn date_part(f: InstFn, secs: f64) -> f64 {
    // i64::MAX as f64 is 2^63.
    if !secs.is_finite() || secs.abs() >= 9_223_372_036_854_775_808.0 {
        return f64::NAN;
    }
    let s = secs.trunc() as i64;
    let days = s.div_euclid(86_400);
    let sod = s.rem_euclid(86_400);
    let (y, m, d) = civil_from_days(days);
    let month_len = |y: i64, m: u32| match m {
        2 if is_leap(y) => 29,
        2 => 28,
        4 | 6 | 9 | 11 => 30,
        _ => 31,
    };
    match f {
        InstFn::DayOfMonth => d as f64,
        InstFn::DayOfWeek => (days + 4).rem_euclid(7) as f64,
        InstFn::DayOfYear => {
            let before: u32 = (1..m).map(|mm| month_len(y, mm)).sum();
            (before + d) as f64
        }
        InstFn::DaysInMonth => month_len(y, m) as f64,
        InstFn::Hour => (sod / 3600) as f64,
        InstFn::Minute => ((sod % 3600) / 60) as f64,
        InstFn::Month => m as f64,
        InstFn::Year => y as f64,
        _ => f64::NAN,
    }
}

impl InstantFnSpec {
    fn apply(&self, v: f64, t: i64, p: &dyn Fn(usize) -> f64) -> Option<f64> {
        use InstFn::*;
        Some(match self.func {
            Abs => v.abs(),
            Ceil => v.ceil(),
            Floor => v.floor(),
            Exp => v.exp(),
            Sqrt => v.sqrt(),
            Ln => v.ln(),
            Log2 => v.log2(),
            Log10 => v.log10(),
            Sgn => {
                if v > 0.0 {
                    1.0
                } else if v < 0.0 {
                    -1.0
                } else {
                    v
                }
            }
            // Prometheus multiplies first and divides then, which rounds differently from
            // `to_degrees` / `to_radians` (and overflows for huge values).
            Deg => v * 180.0 / std::f64::consts::PI,
            Rad => v * std::f64::consts::PI / 180.0,
            Sin => v.sin(),
            Cos => v.cos(),
            Tan => v.tan(),
            Asin => v.asin(),
            Acos => v.acos(),
            Atan => v.atan(),
            Sinh => v.sinh(),
            Cosh => v.cosh(),
            Tanh => v.tanh(),
            Asinh => v.asinh(),
            Acosh => v.acosh(),
            Atanh => v.atanh(),
            Neg => -v,
            Round => {
                let inv = 1.0 / p(0);
                (v * inv + 0.5).floor() / inv
            }
            // Go's math.Max(min, math.Min(max, v)): a NaN sample or bound gives NaN, except
            // where an infinite bound wins (clamp_min(NaN, +Inf) is +Inf).
            Clamp => {
                let (lo, hi) = (p(0), p(1));
                if hi < lo {
                    return None;
                }
                go_max(lo, go_min(hi, v))
            }
            ClampMin => go_max(p(0), go_min(f64::INFINITY, v)),
            ClampMax => go_max(f64::NEG_INFINITY, go_min(p(0), v)),
            Timestamp => t as f64 / 1000.0,
            DropName => v,
            f => date_part(f, v),
        })
    }
}

impl NodeSpec for InstantFnSpec {
    const NAME: &'static str = "PromInstantFn";

    fn fmt_params(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{:?}, {}", self.func, self.grid)
    }

    fn streaming(&self) -> bool {
        true
    }

    fn eval(&self, main: Vec<SeriesData>, params: &[Vec<SeriesData>], ctx: &EvalCtx) -> Result<Vec<SeriesData>> {
        let pv: Vec<Vec<f64>> = params.iter().map(|p| scalar_per_step(p, &self.grid)).collect();
        let mut out = Vec::with_capacity(main.len());
        for s in main {
            let mut labels = s.labels;
            super::drop_name_or_mark(&mut labels, ctx);
            let mut o = SeriesData::new(labels);
            for (&t, &v) in s.ts.iter().zip(&s.vs) {
                let i = self.grid.index_of(t);
                let p = |k: usize| i.and_then(|i| pv.get(k).map(|x| x[i])).unwrap_or(f64::NAN);
                if let Some(r) = self.apply(v, t, &p) {
                    o.push(t, r);
                }
            }
            out.push(o);
        }
        Ok(out)
    }
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;
    use engine::Labels;

    #[test]
    fn dates_and_rounding() {
        // 2024-02-29T13:45:00Z = 1709214300
        let t = 1_709_214_300.0;
        assert_eq!(date_part(InstFn::Year, t), 2024.0);
        assert_eq!(date_part(InstFn::Month, t), 2.0);
        assert_eq!(date_part(InstFn::DayOfMonth, t), 29.0);
        assert_eq!(date_part(InstFn::DaysInMonth, t), 29.0);
        assert_eq!(date_part(InstFn::DayOfYear, t), 60.0);
        assert_eq!(date_part(InstFn::DayOfWeek, t), 4.0);
        assert_eq!(date_part(InstFn::Hour, t), 13.0);
        assert_eq!(date_part(InstFn::Minute, t), 45.0);
        assert_eq!(date_part(InstFn::DayOfWeek, 0.0), 4.0);
    }

    /// `func(v, params)` at one step.
    fn at(func: InstFn, v: f64, params: &[f64]) -> Option<f64> {
        let spec = InstantFnSpec { grid: Grid::new(0, 0, 1), func };
        spec.apply(v, 0, &|k| params.get(k).copied().unwrap_or(f64::NAN))
    }

    #[test]
    fn clamp_propagates_nan_as_go_does() {
        let (nan, inf) = (f64::NAN, f64::INFINITY);
        let b = |v: Option<f64>| v.map(f64::to_bits);
        // (function, sample, params, Prometheus's result: math.Max(min, math.Min(max, v)))
        let cases: &[(InstFn, f64, &[f64], Option<f64>)] = &[
            (InstFn::ClampMin, nan, &[0.0], Some(nan)),
            (InstFn::ClampMax, nan, &[1.0], Some(nan)),
            (InstFn::Clamp, nan, &[0.0, 1.0], Some(nan)),
            (InstFn::ClampMin, 5.0, &[nan], Some(nan)),
            (InstFn::ClampMax, 5.0, &[nan], Some(nan)),
            (InstFn::Clamp, 5.0, &[0.0, nan], Some(nan)),
            (InstFn::Clamp, 5.0, &[nan, 0.0], Some(nan)),
            // An infinite bound in its own direction wins over NaN.
            (InstFn::ClampMin, nan, &[inf], Some(inf)),
            (InstFn::ClampMax, nan, &[-inf], Some(-inf)),
            (InstFn::ClampMin, -inf, &[0.0], Some(0.0)),
            (InstFn::ClampMax, inf, &[1.0], Some(1.0)),
            // Signed zeros: Max prefers +0, Min -0.
            (InstFn::ClampMin, -0.0, &[0.0], Some(0.0)),
            (InstFn::ClampMax, 0.0, &[-0.0], Some(-0.0)),
            (InstFn::Clamp, -0.0, &[0.0, 0.0], Some(0.0)),
            // max < min: no sample.
            (InstFn::Clamp, 1.0, &[5.0, -5.0], None),
        ];
        for (f, v, p, want) in cases {
            assert_eq!(b(at(*f, *v, p)), b(*want), "{f:?}({v}, {p:?})");
        }
    }

    #[test]
    fn degrees_and_radians_round_like_prometheus() {
        // Prometheus computes v*180/Pi and v*Pi/180, not v*(180/Pi) and v*(Pi/180).
        for v in [1.0, 3.0, 0.1, 123.456, 1e300, -7.25] {
            assert_eq!(at(InstFn::Deg, v, &[]), Some(v * 180.0 / std::f64::consts::PI), "deg({v})");
            assert_eq!(at(InstFn::Rad, v, &[]), Some(v * std::f64::consts::PI / 180.0), "rad({v})");
        }
        // The orders differ in the last bit for 0.1 (degrees) and 3 (radians), so the test
        // tells them apart; and v*180 overflows for 1e307 where v*(180/Pi) does not.
        assert_ne!(0.1f64.to_degrees(), 0.1 * 180.0 / std::f64::consts::PI);
        assert_ne!(3.0f64.to_radians(), 3.0 * std::f64::consts::PI / 180.0);
        assert_eq!(at(InstFn::Deg, 1e307, &[]), Some(f64::INFINITY));
        assert!(at(InstFn::Sgn, f64::NAN, &[]).unwrap().is_nan());
        assert_eq!(at(InstFn::Sgn, -0.0, &[]).map(f64::to_bits), Some((-0.0f64).to_bits()));
        assert_eq!(at(InstFn::Sgn, -f64::INFINITY, &[]), Some(-1.0));
    }

    #[test]
    fn date_functions_truncate_towards_zero() {
        // Prometheus converts the seconds with int64(v): -0.5 is 1970-01-01T00:00:00.
        assert_eq!(date_part(InstFn::Year, -0.5), 1970.0);
        assert_eq!(date_part(InstFn::Minute, -0.5), 0.0);
        assert_eq!(date_part(InstFn::Year, -1.5), 1969.0);
        assert_eq!(date_part(InstFn::Minute, 59.9), 0.0);
        assert!(date_part(InstFn::Year, f64::NAN).is_nan());
        assert!(date_part(InstFn::Hour, f64::INFINITY).is_nan());
    }

    #[test]
    fn clamp_with_params_drops_name() {
        let spec = InstantFnSpec { grid: Grid::new(0, 10, 10), func: InstFn::Clamp };
        let s = SeriesData {
            labels: Labels::from_pairs([("__name__", "x"), ("a", "b")]),
            ts: vec![0, 10],
            vs: vec![-5.0, 50.0],
        };
        let lo = SeriesData { labels: Labels::default(), ts: vec![0, 10], vs: vec![0.0, 0.0] };
        let hi = SeriesData { labels: Labels::default(), ts: vec![0, 10], vs: vec![10.0, -1.0] };
        let out = spec.eval(vec![s], &[vec![lo], vec![hi]], &EvalCtx::new(10)).unwrap();
        // step 2 has max < min: no output.
        assert_eq!((out[0].ts.clone(), out[0].vs.clone()), (vec![0], vec![0.0]));
        assert_eq!(out[0].labels.get("__name__"), None);
    }
}
