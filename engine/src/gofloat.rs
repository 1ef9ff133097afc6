//! Floats written as Prometheus (Go's `strconv`) writes them: the one place Strata formats a float
//! for a Prometheus-facing text (HTTP API JSON values, label values PromQL makes, promtool input).

use std::fmt::Write;

/// Formats a sample value as Prometheus does (Go `strconv.FormatFloat` shortest, `'f'` notation
/// unless |v| < 1e-6 or |v| >= 1e21, then `'e'` with a signed two-digit exponent).
///
/// ```
/// use engine::gofloat::format_sample_value;
/// assert_eq!(format_sample_value(1.5), "1.5");
/// assert_eq!(format_sample_value(1e-7), "1e-07");
/// assert_eq!(format_sample_value(1e21), "1e+21");
/// assert_eq!(format_sample_value(f64::NEG_INFINITY), "-Inf");
/// ```
pub fn format_sample_value(v: f64) -> String {
    let mut s = String::new();
    write_sample_value(&mut s, v);
    s
}

/// Largest magnitude below which every integer is exactly representable in an f64 (2^53).
const EXACT_INT: f64 = 9_007_199_254_740_992.0;

/// Appends [`format_sample_value`]`(v)` to `out` without allocating. Integral values (most counters and
/// gauges) take an integer fast path whose digits equal Go's shortest `'f'` formatting.
pub fn write_sample_value(out: &mut String, v: f64) {
    if v.is_nan() {
        out.push_str("NaN");
        return;
    }
    if v.is_infinite() {
        out.push_str(if v > 0.0 { "+Inf" } else { "-Inf" });
        return;
    }
    let a = v.abs();
    if v.fract() == 0.0 && a < EXACT_INT && !(v == 0.0 && v.is_sign_negative()) {
        out.push_str(itoa::Buffer::new().format(v as i64));
        return;
    }
    if a == 0.0 || (1e-6..1e21).contains(&a) {
        let _ = write!(out, "{v}");
        return;
    }
    // Rust's `{:e}` is shortest round-trip too ("1.5e-7"); Go writes the exponent signed and at
    // least two digits wide ("1.5e-07").
    let s = format!("{v:e}");
    match s.split_once('e') {
        Some((mant, exp)) => {
            let (sign, digits) = match exp.strip_prefix('-') {
                Some(d) => ('-', d),
                None => ('+', exp),
            };
            let _ = write!(out, "{mant}e{sign}{digits:0>2}");
        }
        None => out.push_str(&s),
    }
}

/// Formats a float like Go's `strconv.FormatFloat(v, 'f', -1, 64)`: shortest round-trip digits,
/// never an exponent; `NaN`, `+Inf`, `-Inf`. PromQL's `count_values` writes its label values so.
///
/// ```
/// use engine::gofloat::format_fixed;
/// assert_eq!(format_fixed(0.5), "0.5");
/// assert_eq!(format_fixed(1e21), "1000000000000000000000");
/// assert_eq!(format_fixed(f64::INFINITY), "+Inf");
/// ```
pub fn format_fixed(v: f64) -> String {
    if v.is_nan() {
        "NaN".into()
    } else if v.is_infinite() {
        if v > 0.0 { "+Inf" } else { "-Inf" }.into()
    } else {
        format!("{v}")
    }
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]
    use super::*;

    #[test]
    fn values_like_go() {
        let cases: [(f64, &str); 16] = [
            (0.0, "0"),
            (-0.0, "-0"),
            (1.0, "1"),
            (-2.5, "-2.5"),
            (0.1, "0.1"),
            (1e-6, "0.000001"),
            (9.99e-7, "9.99e-07"),
            (1e20, "100000000000000000000"),
            (1e21, "1e+21"),
            (1.5e300, "1.5e+300"),
            (5e-324, "5e-324"),
            (0.1 + 0.2, "0.30000000000000004"),
            (1.0 / 3.0, "0.3333333333333333"),
            (f64::NAN, "NaN"),
            (f64::INFINITY, "+Inf"),
            (-1e-100, "-1e-100"),
        ];
        for (v, want) in cases {
            assert_eq!(format_sample_value(v), want, "{v:?}");
        }
    }

    #[test]
    fn integer_fast_path_agrees_with_float_formatting() {
        let mut ints: Vec<f64> = vec![1.0, -1.0, 42.0, 1e15, -1e15, 9_007_199_254_740_991.0, -9_007_199_254_740_991.0];
        ints.extend((0..2000).map(|i| f64::from(i) * 12_345.0 - 7_000_000.0));
        ints.extend((0..60).map(|e| 2f64.powi(e)));
        for v in ints {
            let mut out = String::new();
            write_sample_value(&mut out, v);
            assert_eq!(out, format!("{v}"), "{v:?}");
        }
        // Beyond 2^53 the float path answers, still in 'f' notation below 1e21.
        assert_eq!(format_sample_value(9_007_199_254_740_994.0), "9007199254740994");
        assert_eq!(format_sample_value(1e20 + 65_536.0), format!("{}", 1e20 + 65_536.0));
    }

    #[test]
    fn fixed_never_uses_an_exponent() {
        assert_eq!(format_fixed(1.0), "1");
        assert_eq!(format_fixed(1e-7), "0.0000001");
        assert_eq!(format_fixed(f64::NEG_INFINITY), "-Inf");
        assert_eq!(format_fixed(f64::NAN), "NaN");
    }
}
