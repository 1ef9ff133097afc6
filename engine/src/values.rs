//! Format v2 sample values: a float stored as a decimal-scaled integer where that is exact.
//!
//! ```text
//!   value v (f64) ──► m = round(v · 10^e)  ──► exact?  (m as f64) / 10^e has v's bits, |m| <= 2^53
//!                                               yes: value_int = m, value = NULL
//!                                               no:  value = v (bit for bit), value_int = NULL
//!   value_scale = 10^e on every row of the series
//! ```
//!
//! Decoding is one IEEE division, `value_int / value_scale`, which every SQL engine computes the same
//! way (Int64 to Float64 is exact below 2^53, 10^e is an exact double for e <= 22, and the quotient is
//! correctly rounded), so any reader reproduces the writer's float bits. NaNs (stale markers
//! included), infinities, -0.0 and subnormals never pass the check and stay in the float column.
//!
//! The exponent `e` is chosen per series (see [`choose_exponent`]); the spec is `docs/format.md`.
//! [`decode_columns`] turns the three columns of a batch back into Float64 values.

use arrow::array::{Array, Float64Array, Int64Array};

/// Largest decimal exponent a writer uses (`value_scale` <= 10^18).
pub const MAX_EXPONENT: u8 = 18;

/// Largest exponent a reader accepts: 10^22 is the largest power of ten that is an exact double.
pub const MAX_READ_EXPONENT: u8 = 22;

/// 2^53: mantissas up to this magnitude convert to Float64 exactly.
pub const MAX_MANTISSA: i64 = 1 << 53;

const POW10: [f64; 23] = [
    1e0, 1e1, 1e2, 1e3, 1e4, 1e5, 1e6, 1e7, 1e8, 1e9, 1e10, 1e11, 1e12, 1e13, 1e14, 1e15, 1e16, 1e17, 1e18, 1e19, 1e20,
    1e21, 1e22,
];

/// `10^e` as an exact double (`e` is clamped to [`MAX_READ_EXPONENT`]).
pub fn scale_of(e: u8) -> f64 {
    POW10[usize::from(e.min(MAX_READ_EXPONENT))]
}

/// The exponent `e` when `scale` is exactly `10^e` with `e <= MAX_READ_EXPONENT`.
pub fn exponent_of_scale(scale: f64) -> Option<u8> {
    POW10.iter().position(|p| p.to_bits() == scale.to_bits()).map(|e| e as u8)
}

/// The value of mantissa `m` at `scale`: the one division every reader performs.
#[inline]
pub fn decode(m: i64, scale: f64) -> f64 {
    m as f64 / scale
}

/// `x` rounded to the nearest integer, halves away from zero (as `f64::round`), when
/// `|x| <= 2^53`. Written with a truncating conversion: `f64::round` is a libm call on the
/// baseline x86-64 target, and this runs for every sample a block writer stores.
#[inline]
fn round_mantissa(x: f64) -> Option<i64> {
    if x.is_nan() || x.abs() > MAX_MANTISSA as f64 {
        return None;
    }
    let t = x as i64; // toward zero, exact below 2^53
    let frac = x - t as f64; // exact
    Some(t + i64::from(frac >= 0.5) - i64::from(frac <= -0.5))
}

/// The mantissa of `v` at `scale` (= 10^e) when decoding it gives back `v` bit for bit.
#[inline]
pub fn encode(v: f64, scale: f64) -> Option<i64> {
    // NaN and infinities have no mantissa.
    let x = v * scale;
    let m = round_mantissa(x)?;
    // Early out without the division (most irregular floats leave here). If m / scale rounds to
    // v, then x = m·(1+a)(1+b) with |a|, |b| <= 2^-53, so |x - m| < |x|·2^-51. Both sides are
    // exact (x and m are close; scaling by a power of two), so a larger distance proves that v is
    // not exact at this scale. (`split` tests without it; the tests compare the two.)
    if (x - m as f64).abs() > x.abs() * (2.0 * f64::EPSILON) {
        return None;
    }
    // Decode from the integer: -0.0 rounds to 0, which decodes to +0.0.
    (decode(m, scale).to_bits() == v.to_bits()).then_some(m)
}

/// The smallest exponent (at most [`MAX_EXPONENT`]) at which `v` is exact, if any.
pub fn min_exponent(v: f64) -> Option<u8> {
    min_exponent_upto(v, MAX_EXPONENT)
}

/// The smallest exponent at most `cap` at which `v` is exact, if any.
///
/// Integers take one test. Otherwise the largest exponent that keeps `|m| < 2^53` (at most `cap`)
/// is tried first: a value not exact there is taken as not exact at any (a smaller exponent would
/// only drop digits). Its mantissa's trailing decimal zeros give the candidate (`36.55` at `10^9`
/// is `36550000000`: exponent 2), which is checked, and lowered while a smaller exponent is exact
/// too; the rare candidate that is not exact falls back to trying every exponent.
pub fn min_exponent_upto(v: f64, cap: u8) -> Option<u8> {
    if encode(v, 1.0).is_some() {
        return Some(0);
    }
    if !v.is_finite() || v == 0.0 {
        return None;
    }
    // |v| < 2^k, so |v| · 10^e < 2^53 when e <= (53 - k) · log10(2) (truncation is floor here:
    // the product is not negative; f64::floor is a libm call).
    let top = top_exponent(v, cap) as u8;
    if top == 0 {
        return None;
    }
    let m = encode(v, POW10[usize::from(top)])?;
    Some(min_exponent_from(v, top, m))
}

/// The rest of [`min_exponent_upto`]'s search for a `v` that is not an integer and is exact at
/// `top` (its largest usable exponent) with mantissa `m`.
fn min_exponent_from(v: f64, top: u8, mut m: i64) -> u8 {
    let mut e = top;
    while e > 1 && m % 10 == 0 {
        m /= 10;
        e -= 1;
    }
    if encode(v, POW10[usize::from(e)]).is_none() {
        // `top` itself is exact, so the search ends there at the latest.
        return (1..=top).find(|&e| encode(v, POW10[usize::from(e)]).is_some()).unwrap_or(top);
    }
    while e > 1 && encode(v, POW10[usize::from(e - 1)]).is_some() {
        e -= 1;
    }
    e
}

/// Per exponent `e`, how many of `values` have `e` as their smallest exact exponent.
pub fn exponent_histogram(values: &[f64]) -> [u64; MAX_EXPONENT as usize + 1] {
    exponent_histogram_upto(values, MAX_EXPONENT)
}

/// [`exponent_histogram`] of the exponents up to `cap` ([`min_exponent_upto`]); the counts above
/// `cap` stay 0.
///
/// Two passes per 64 values: a branch-free one tests every value at scale 1 and at the largest
/// usable exponent (the first two tests of [`min_exponent_upto`]), counting the integers; only the
/// values exact at that exponent then take the rest of [`min_exponent_upto`]'s search, from the
/// mantissa found there. The others (most irregular floats) are exact at no exponent up to `cap`,
/// and mixed series cost no mispredicted branch per value. The counts are those of
/// [`min_exponent_upto`] per value.
pub fn exponent_histogram_upto(values: &[f64], cap: u8) -> [u64; MAX_EXPONENT as usize + 1] {
    let cap = cap.min(MAX_EXPONENT);
    let mut h = [0u64; MAX_EXPONENT as usize + 1];
    // The queued values with their largest usable exponent and their mantissa there: the
    // search goes on from where the first pass stopped (min_exponent_upto's first two tests).
    let mut queue = [(0f64, 0u8, 0i64); 64];
    for block in values.chunks(64) {
        let mut n = 0;
        for &v in block {
            let int = exact_at(v, 1.0);
            let top = top_exponent(v, cap);
            let (at_top, m) = mantissa_at(v, POW10[top]);
            h[0] += u64::from(int);
            queue[n] = (v, top as u8, m);
            n += usize::from(top > 0 && at_top && !int);
        }
        for &(v, top, m) in &queue[..n] {
            h[usize::from(min_exponent_from(v, top, m))] += 1;
        }
    }
    h
}

/// True when `v` is exact at `scale` ([`encode`] is `Some`), without a data-dependent branch.
#[inline(always)]
fn exact_at(v: f64, scale: f64) -> bool {
    mantissa_at(v, scale).0
}

/// [`exact_at`] and the rounded mantissa (the one [`encode`] returns when exact).
#[inline(always)]
fn mantissa_at(v: f64, scale: f64) -> (bool, i64) {
    let x = v * scale;
    let in_range = x.abs() <= MAX_MANTISSA as f64;
    let t = if in_range { x as i64 } else { 0 };
    let frac = x - t as f64;
    let r = t + i64::from(frac >= 0.5) - i64::from(frac <= -0.5);
    (in_range && decode(r, scale).to_bits() == v.to_bits(), r)
}

/// The largest exponent `e <= cap` keeping `|v| · 10^e < 2^53` ([`min_exponent_upto`]'s first
/// candidate); 0 for NaN and infinities.
#[inline(always)]
fn top_exponent(v: f64, cap: u8) -> usize {
    let k = ((v.to_bits() >> 52) & 0x7ff) as i32 - 1022;
    let digits = f64::from((53 - k).max(0)) * std::f64::consts::LOG10_2;
    (digits as i32).min(i32::from(cap.min(MAX_READ_EXPONENT))) as usize
}

/// The smallest exponent `e <= cap` at which at least `quantile` of the samples that are exact at
/// some exponent `<= cap` are exact (by their smallest exponent). Samples exact at no exponent do
/// not count: they go to the float column whatever the choice.
pub fn pick_exponent(hist: &[u64], quantile: f64, cap: u8) -> u8 {
    let cap = usize::from(cap).min(hist.len().saturating_sub(1));
    let total: u64 = hist[..=cap].iter().sum();
    let want = (total as f64 * quantile).ceil() as u64;
    let mut acc = 0u64;
    for (e, &n) in hist[..=cap].iter().enumerate() {
        acc += n;
        if acc >= want {
            return e as u8;
        }
    }
    cap as u8
}

/// Quantile of [`choose_exponent`] (chosen by measurement, docs/format.md).
pub const EXPONENT_QUANTILE: f64 = 0.99;
/// Largest exponent [`choose_exponent`] picks (chosen by measurement, docs/format.md: values that
/// need more decimals are mostly noisy 16-digit floats whose mantissas cost more than the floats).
pub const EXPONENT_CAP: u8 = 9;

/// The exponent of a series: [`pick_exponent`] over its [`exponent_histogram`] with the format's
/// quantile and cap.
pub fn choose_exponent(values: &[f64]) -> u8 {
    // Integer-valued series (the common case) need no histogram.
    if values.iter().all(|&v| encode(v, 1.0).is_some() || v.is_nan()) {
        return 0;
    }
    // Only the exponents up to the cap count, so none above it is searched for.
    pick_exponent(&exponent_histogram_upto(values, EXPONENT_CAP), EXPONENT_QUANTILE, EXPONENT_CAP)
}

/// Splits one series' values at `scale`: per value either a mantissa (`ints[i]`, `is_int[i]` true) or
/// the float itself (`floats[i]`). The slot not used holds 0 (it is null in the file). Appends.
///
/// Branch-free per value ([`encode`]'s test with selects), so a series of any mix costs the same.
/// Scale 1 (integer-valued series, and float series exact at no exponent) takes the same test
/// without its multiplication and division by 1, which change no bit.
pub fn split(values: &[f64], scale: f64, ints: &mut Vec<i64>, floats: &mut Vec<f64>, is_int: &mut Vec<bool>) {
    if scale == 1.0 {
        split_at(values, 1.0, ints, floats, is_int);
    } else {
        split_at(values, scale, ints, floats, is_int);
    }
}

/// [`split`]'s loop; inlined, so that a constant `scale` of 1 folds its arithmetic away.
#[inline(always)]
fn split_at(values: &[f64], scale: f64, ints: &mut Vec<i64>, floats: &mut Vec<f64>, is_int: &mut Vec<bool>) {
    let at = ints.len();
    ints.resize(at + values.len(), 0);
    let fat = floats.len();
    floats.resize(fat + values.len(), 0.0);
    let bat = is_int.len();
    is_int.resize(bat + values.len(), false);
    let out = ints[at..].iter_mut().zip(&mut floats[fat..]).zip(&mut is_int[bat..]);
    for (&v, ((m, f), b)) in values.iter().zip(out) {
        let (ok, r) = mantissa_at(v, scale);
        *m = if ok { r } else { 0 };
        *f = if ok { 0.0 } else { v };
        *b = ok;
    }
}

/// Appends the values of a v2 batch to `out`: `value` where it is set, else `value_int / value_scale`.
///
/// Works 64 rows at a time on the validity bitmap of `value`: runs of float rows are copied, runs of
/// integer rows divided without a branch per row; only mixed words select per row. Errors (naming
/// the problem) when the columns differ in length, a row does not have exactly one of `value` and
/// `value_int` set (one XOR of the validity bitmaps) or `value_scale` has nulls.
pub fn decode_columns(
    value: &Float64Array,
    ints: &Int64Array,
    scales: &Float64Array,
    out: &mut Vec<f64>,
) -> Result<(), String> {
    let n = value.len();
    if ints.len() != n || scales.len() != n {
        return Err(format!("value columns differ in length: {n}, {}, {}", ints.len(), scales.len()));
    }
    let valid = |a: Option<&arrow::buffer::NullBuffer>| {
        a.map_or_else(|| arrow::buffer::BooleanBuffer::new_set(n), |b| b.inner().clone())
    };
    let one_each = &valid(value.nulls()) ^ &valid(ints.nulls());
    if one_each.count_set_bits() != n || scales.null_count() != 0 {
        return Err(format!(
            "{} of {n} rows do not have exactly one of value and value_int set, {} have no value_scale \
             (it must be set on every row)",
            n - one_each.count_set_bits(),
            scales.null_count()
        ));
    }
    let (fv, iv, sv) = (value.values(), ints.values(), scales.values());
    out.reserve(n);
    let Some(floats) = value.nulls() else {
        out.extend_from_slice(fv);
        return Ok(());
    };
    let mut run = |word: u64, at: usize, len: usize| {
        let all = if len == 64 { u64::MAX } else { (1u64 << len) - 1 };
        let (f, m, s) = (&fv[at..at + len], &iv[at..at + len], &sv[at..at + len]);
        if word == all {
            out.extend_from_slice(f);
        } else if word == 0 {
            // Integer-valued series (scale 1): dividing by 1 changes no bit, so skip the division.
            if s.iter().all(|&s| s == 1.0) {
                out.extend(m.iter().map(|&m| m as f64));
            } else {
                out.extend(m.iter().zip(s).map(|(&m, &s)| decode(m, s)));
            }
        } else {
            // The floats copied, then the integer rows (clear bits) divided over them: a mixed
            // word divides only its integer rows.
            let at = out.len();
            out.extend_from_slice(f);
            let dst = &mut out[at..];
            let mut ints = !word & all;
            while ints != 0 {
                let k = ints.trailing_zeros() as usize;
                dst[k] = decode(m[k], s[k]);
                ints &= ints - 1;
            }
        }
    };
    let bits = floats.inner();
    let chunks = bits.inner().bit_chunks(bits.offset(), bits.len());
    let mut at = 0;
    for word in chunks.iter() {
        run(word, at, 64);
        at += 64;
    }
    if chunks.remainder_len() > 0 {
        run(chunks.remainder_bits(), at, chunks.remainder_len());
    }
    Ok(())
}

#[cfg(test)]
#[allow(clippy::unwrap_used, clippy::expect_used)]
mod tests {
    use super::*;

    const STALE: u64 = 0x7ff0_0000_0000_0002;

    #[test]
    fn special_values_never_become_integers() {
        for v in [
            f64::NAN,
            f64::from_bits(STALE),
            f64::from_bits(0x7ff8_0000_0000_0001),
            f64::INFINITY,
            f64::NEG_INFINITY,
            -0.0,
            f64::MIN_POSITIVE / 4.0,
            -5e-324,
            1e300,
            (MAX_MANTISSA + 2) as f64,
        ] {
            assert_eq!(min_exponent(v), None, "{v:e} ({:#x})", v.to_bits());
            for e in 0..=MAX_READ_EXPONENT {
                assert_eq!(encode(v, scale_of(e)), None, "{v:e} at e={e}");
            }
        }
        assert_eq!(encode(0.0, 1.0), Some(0));
        assert_eq!(encode(MAX_MANTISSA as f64, 1.0), Some(MAX_MANTISSA));
    }

    #[test]
    fn decimals_get_their_smallest_exponent() {
        for (v, e) in [
            (0.0, 0),
            (1.0, 0),
            (-42.0, 0),
            (1e15, 0),
            (0.1, 1),
            (0.3, 1),
            (36.55, 2),
            (-0.001, 3),
            (123456.789, 3),
            (4.5123e-5, 9),
            (1e-18, 18),
        ] {
            assert_eq!(min_exponent(v), Some(e), "{v}");
            let m = encode(v, scale_of(e)).unwrap();
            assert_eq!(decode(m, scale_of(e)).to_bits(), v.to_bits());
        }
        // 17 significant digits do not fit below 2^53; 0.1 + 0.2 is not a short decimal.
        assert_eq!(min_exponent(0.1 + 0.2), None);
        assert_eq!(min_exponent(1.000_000_000_000_000_2), None);
        // 16 significant digits fit: pi is 3141592653589793 / 10^15.
        assert_eq!(min_exponent(std::f64::consts::PI), Some(15));
        assert_eq!(min_exponent(1e-19), None);
    }

    #[test]
    fn every_decoded_value_is_bit_exact() {
        // A deterministic sweep of short decimals, irregular floats and edge magnitudes.
        let mut x = 0x9e37_79b9_7f4a_7c15u64;
        let mut next = || {
            x ^= x << 13;
            x ^= x >> 7;
            x ^= x << 17;
            x
        };
        for i in 0..200_000 {
            let r = next();
            let v = match i % 4 {
                0 => (r % 1_000_000) as f64 / scale_of((r >> 40) as u8 % 8),
                1 => f64::from_bits(r),
                2 => (r % 1000) as f64 * 0.1,
                _ => ((r >> 11) as f64) * 1e-3,
            };
            for e in [0, 1, 2, 3, 6, 9, 12, 15, 18, 22] {
                if let Some(m) = encode(v, scale_of(e)) {
                    assert!(m.abs() <= MAX_MANTISSA);
                    assert_eq!(decode(m, scale_of(e)).to_bits(), v.to_bits(), "{v:e} at {e}");
                }
            }
            if let Some(e) = min_exponent(v) {
                assert!(encode(v, scale_of(e)).is_some());
                assert!(e == 0 || encode(v, scale_of(e - 1)).is_none(), "{v:e}: {e} is not the smallest");
            }
            // The candidate from trailing zeros finds what trying every exponent finds.
            let every = (0..=MAX_EXPONENT).find(|&e| encode(v, scale_of(e)).is_some());
            if min_exponent(v).is_some() {
                assert_eq!(min_exponent(v), every, "{v:e}");
            }
            // Capped, the search finds what trying every exponent up to the cap finds (and at
            // least what the uncapped search finds there: fewer digits lose no exactness).
            for cap in [0, 2, 9] {
                let got = min_exponent_upto(v, cap);
                if let Some(e) = got {
                    assert_eq!(Some(e), every, "{v:e} capped at {cap}");
                }
                if let Some(e) = min_exponent(v).filter(|&e| e <= cap) {
                    assert_eq!(got, Some(e), "{v:e} capped at {cap}");
                }
            }
            // The rounding without libm is f64::round below 2^53.
            for x in [v, v * 1e3, v * 1e9, (r % 2000) as f64 / 4.0 - 250.0] {
                let want = x.round();
                let got = round_mantissa(x);
                if want.abs() <= MAX_MANTISSA as f64 {
                    assert_eq!(got, Some(want as i64), "{x:e}");
                } else if x.abs() > MAX_MANTISSA as f64 || x.is_nan() {
                    assert_eq!(got, None, "{x:e}");
                }
            }
            // The two-pass histogram counts what min_exponent_upto finds per value.
            for cap in [0, 2, 9, MAX_EXPONENT] {
                let mut want = [0u64; MAX_EXPONENT as usize + 1];
                if let Some(e) = min_exponent_upto(v, cap) {
                    want[usize::from(e)] += 1;
                }
                assert_eq!(exponent_histogram_upto(&[v], cap), want, "{v:e} capped at {cap}");
            }
            // split's branch-free test is encode's.
            let (mut ints, mut floats, mut is_int) = (vec![7], vec![7.0], vec![true]);
            for e in [0, 2, 9] {
                split(&[v], scale_of(e), &mut ints, &mut floats, &mut is_int);
                let last = (ints[ints.len() - 1], floats[floats.len() - 1].to_bits(), is_int[is_int.len() - 1]);
                match encode(v, scale_of(e)) {
                    Some(m) => assert_eq!(last, (m, 0, true), "{v:e} at {e}"),
                    None => assert_eq!(last, (0, v.to_bits(), false), "{v:e} at {e}"),
                }
            }
        }
    }

    #[test]
    fn decode_columns_by_words_and_rows() {
        // Runs longer than a word of each kind, mixed words, a tail, and a sliced (offset) bitmap.
        let vs: Vec<f64> = (0..300)
            .map(|i| match i {
                0..=99 => f64::from(i) * 0.25,
                100..=180 => f64::from(i).sqrt(),
                _ if i % 3 == 0 => f64::from_bits(STALE),
                _ => f64::from(i) - 0.5,
            })
            .collect();
        let scale = scale_of(choose_exponent(&vs));
        let (mut ints, mut floats, mut is_int) = (Vec::new(), Vec::new(), Vec::new());
        split(&vs, scale, &mut ints, &mut floats, &mut is_int);
        let fnull = arrow::buffer::NullBuffer::from_iter(is_int.iter().map(|b| !b));
        let inull = arrow::buffer::NullBuffer::from(is_int.clone());
        let value = Float64Array::new(floats.into(), Some(fnull));
        let int = Int64Array::new(ints.into(), Some(inull));
        let sc = Float64Array::from(vec![scale; vs.len()]);
        for (a, len) in [(0, 300), (3, 290), (70, 1), (100, 81)] {
            let mut out = Vec::new();
            decode_columns(&value.slice(a, len), &int.slice(a, len), &sc.slice(a, len), &mut out).unwrap();
            let want: Vec<u64> = vs[a..a + len].iter().map(|v| v.to_bits()).collect();
            assert_eq!(out.iter().map(|v| v.to_bits()).collect::<Vec<_>>(), want, "slice {a}+{len}");
        }
        // Both columns set in a row is an error.
        let both = Int64Array::from(vec![Some(1); 300]);
        let scales = Float64Array::from(vec![Some(1.0); 300]);
        assert!(decode_columns(&value, &both, &scales, &mut Vec::new()).unwrap_err().contains("exactly one"));
        // One row with both and another with neither: the counts balance, the rows do not.
        let mut f: Vec<Option<f64>> = (0..8).map(|i| (i % 2 == 0).then_some(1.5)).collect();
        let mut m: Vec<Option<i64>> = (0..8).map(|i| (i % 2 == 1).then_some(3)).collect();
        f[1] = Some(2.0);
        m[2] = None;
        f[2] = None;
        let e = decode_columns(
            &Float64Array::from(f),
            &Int64Array::from(m),
            &Float64Array::from(vec![1.0; 8]),
            &mut Vec::new(),
        )
        .unwrap_err();
        assert!(e.starts_with("2 of 8 rows"), "{e}");
    }

    #[test]
    fn histogram_of_long_mixed_series() {
        // 1000 values (blocks of 64 and a tail) mixing integers, short decimals, irregular
        // floats and specials, against the per-value search.
        let vs: Vec<f64> = (0..1000u32)
            .map(|i| match i % 7 {
                0 => f64::from(i),
                1 => f64::from(i) * 0.01,
                2 => f64::from(i).sqrt(),
                3 => f64::from_bits(STALE),
                4 => f64::from(i) / 3.0,
                5 => -f64::from(i) * 0.125,
                _ => f64::from(i) * 1e-7,
            })
            .collect();
        for cap in [0, 3, 9, MAX_EXPONENT] {
            let mut want = [0u64; MAX_EXPONENT as usize + 1];
            for &v in &vs {
                if let Some(e) = min_exponent_upto(v, cap) {
                    want[usize::from(e)] += 1;
                }
            }
            assert_eq!(exponent_histogram_upto(&vs, cap), want, "cap {cap}");
        }
    }

    #[test]
    fn series_exponent_and_split() {
        let vs = [20.5, 20.25, f64::NAN, 21.0, 0.1 + 0.2, -0.0, 19.75];
        let e = choose_exponent(&vs);
        assert_eq!(e, 2);
        let (mut ints, mut floats, mut is_int) = (Vec::new(), Vec::new(), Vec::new());
        split(&vs, scale_of(e), &mut ints, &mut floats, &mut is_int);
        assert_eq!(is_int, [true, true, false, true, false, false, true]);
        assert_eq!(ints[..2], [2050, 2025]);
        for i in 0..vs.len() {
            let back = if is_int[i] { decode(ints[i], scale_of(e)) } else { floats[i] };
            assert_eq!(back.to_bits(), vs[i].to_bits());
        }
        assert_eq!(choose_exponent(&[1.0, 2.0, f64::NAN]), 0);
        // One sample in 200 with more digits does not raise the exponent of the rest.
        let mut many: Vec<f64> = (0..199).map(|i| f64::from(i) * 0.5).collect();
        many.push(0.123);
        assert_eq!(choose_exponent(&many), 1);
        assert_eq!(pick_exponent(&exponent_histogram(&many), 1.0, MAX_EXPONENT), 3);
        assert_eq!(pick_exponent(&exponent_histogram(&many), 1.0, 2), 1);
        assert_eq!(exponent_of_scale(1e6), Some(6));
        assert_eq!(exponent_of_scale(3.0), None);
    }
}
