//! Result comparison with upstream promqltest's rules (float tolerance, label sets, ordering,
//! matrix points, scalars, strings, annotations and expected failures).

use std::collections::BTreeSet;

use engine::Labels;
use query::{QueryResult, Sample, Value};

use super::script::{EvalCmd, ExpectKind, SeqVal, TextMatch, is_stale};

/// Relative error allowed between expected and actual floats.
pub(crate) const EPSILON: f64 = 1e-6;

/// Float equality as upstream's test helper defines it: stale == stale only, NaN == NaN, `==`,
/// else a relative error below `eps` (absolute, scaled by the smallest normal, near zero).
pub(crate) fn almost_equal(a: f64, b: f64, eps: f64) -> bool {
    if is_stale(a) || is_stale(b) {
        return is_stale(a) && is_stale(b);
    }
    if a.is_nan() && b.is_nan() {
        return true;
    }
    if a == b {
        return true;
    }
    let abs_sum = a.abs() + b.abs();
    let diff = (a - b).abs();
    if a == 0.0 || b == 0.0 || abs_sum < f64::MIN_POSITIVE {
        return diff < eps * f64::MIN_POSITIVE;
    }
    diff / abs_sum.min(f64::MAX) < eps
}

fn short(s: String) -> String {
    const MAX: usize = 600;
    if s.len() <= MAX || super::verbose() {
        return s;
    }
    let mut cut = MAX;
    while !s.is_char_boundary(cut) {
        cut -= 1;
    }
    format!("{}... ({} more bytes)", &s[..cut], s.len() - cut)
}

fn fmt_points(p: &[(i64, f64)]) -> String {
    let v: Vec<String> = p.iter().map(|(t, v)| format!("{v} @[{t}]")).collect();
    format!("{} points [{}]", p.len(), v.join(", "))
}

fn fmt_vals(v: &[SeqVal]) -> String {
    let s: Vec<String> = v
        .iter()
        .map(|x| match x {
            SeqVal::Omitted => "_".to_string(),
            SeqVal::Float(f) => f.to_string(),
            SeqVal::Hist => "{{histogram}}".to_string(),
        })
        .collect();
    s.join(" ")
}

/// Formats a value briefly for messages.
pub(crate) fn fmt_value(v: &Value) -> String {
    match v {
        Value::Scalar { t, v } => format!("scalar {v} @[{t}]"),
        Value::String { v, .. } => format!("string {v:?}"),
        Value::Vector(s) => {
            let items: Vec<String> = s.iter().map(|x| format!("{} => {}", x.labels, x.v)).collect();
            format!("vector [{}]", items.join(", "))
        }
        Value::Matrix(m) => {
            let items: Vec<String> = m.iter().map(|s| format!("{} => {}", s.labels, fmt_points(&s.points))).collect();
            format!("matrix [{}]", items.join(", "))
        }
    }
}

/// Checks that a matrix is sorted by label set.
pub(crate) fn assert_matrix_sorted(m: &[query::Series]) -> Result<(), String> {
    for (i, w) in m.windows(2).enumerate() {
        if w[0].labels > w[1].labels {
            return Err(format!(
                "matrix results should be sorted by labels, but series {} ({}) sorts before series {} ({})",
                i + 1,
                w[1].labels,
                i,
                w[0].labels
            ));
        }
    }
    Ok(())
}

/// Compares a result value with the eval's expectations.
pub(crate) fn compare_result(ev: &EvalCmd, value: &Value) -> Result<(), String> {
    let r = compare_inner(ev, value);
    r.map_err(short)
}

fn compare_inner(ev: &EvalCmd, value: &Value) -> Result<(), String> {
    match value {
        Value::Matrix(m) => {
            if ev.is_ordered() {
                return Err("expected ordered result, but query returned a matrix".into());
            }
            if ev.expect_scalar.is_some() {
                return Err(format!("expected scalar result, but got {}", fmt_value(value)));
            }
            assert_matrix_sorted(m)?;
            let mut seen = BTreeSet::new();
            for s in m {
                let Some(exp) = ev.expected.get(&s.labels) else {
                    return Err(format!("unexpected metric {} in result, has {}", s.labels, fmt_points(&s.points)));
                };
                seen.insert(&s.labels);
                let mut want: Vec<(i64, f64)> = Vec::new();
                for (i, e) in exp.vals.iter().enumerate() {
                    let t = ev.start + i as i64 * ev.step;
                    if ev.end.is_none_or(|end| t > end) {
                        return Err(format!(
                            "expected {} points for {}, but query time range cannot return this many points",
                            exp.vals.len(),
                            s.labels
                        ));
                    }
                    match e {
                        SeqVal::Float(f) => want.push((t, *f)),
                        SeqVal::Omitted => {}
                        SeqVal::Hist => return Err("histogram expectations are not supported".into()),
                    }
                }
                if want.len() != s.points.len() {
                    return Err(format!(
                        "expected {} float points for {}: {}, but got {}",
                        want.len(),
                        s.labels,
                        fmt_points(&want),
                        fmt_points(&s.points)
                    ));
                }
                for (i, (w, a)) in want.iter().zip(&s.points).enumerate() {
                    if w.0 != a.0 {
                        return Err(format!(
                            "expected point {i} of {} at t={}, but it had t={} (result has {})",
                            s.labels,
                            w.0,
                            a.0,
                            fmt_points(&s.points)
                        ));
                    }
                    if !almost_equal(a.1, w.1, EPSILON) {
                        return Err(format!(
                            "expected point {i} (t={}) of {} to be {}, but got {} (result has {})",
                            a.0,
                            s.labels,
                            w.1,
                            a.1,
                            fmt_points(&s.points)
                        ));
                    }
                }
            }
            for (l, e) in &ev.expected {
                if !seen.contains(l) {
                    return Err(format!("expected metric {l} with [{}] not found", fmt_vals(&e.vals)));
                }
            }
            Ok(())
        }
        Value::Vector(v) => compare_vector(ev, v),
        Value::Scalar { v, .. } => {
            let Some(want) = ev.expect_scalar else {
                return Err(format!("expected vector or matrix result, but got {}", fmt_value(value)));
            };
            if !almost_equal(want, *v, EPSILON) {
                return Err(format!("expected scalar {want} but got {v}"));
            }
            Ok(())
        }
        Value::String { v, .. } => {
            let want = ev.expected_string.as_deref().unwrap_or("");
            if want != v {
                return Err(format!("expected string {want:?} but got {v:?}"));
            }
            Ok(())
        }
    }
}

/// Compares an instant vector.
pub(crate) fn compare_vector(ev: &EvalCmd, v: &[Sample]) -> Result<(), String> {
    if ev.expect_scalar.is_some() {
        return Err(short(format!("expected scalar result, but got {}", fmt_value(&Value::Vector(v.to_vec())))));
    }
    let mut seen: BTreeSet<&Labels> = BTreeSet::new();
    for (pos, s) in v.iter().enumerate() {
        let Some(exp) = ev.expected.get(&s.labels) else {
            return Err(short(format!("unexpected metric {} in result, has value {}", s.labels, s.v)));
        };
        if ev.is_ordered() && exp.pos != pos + 1 {
            return Err(format!("expected metric {} at position {} but was at {}", s.labels, exp.pos, pos + 1));
        }
        match exp.vals.first() {
            Some(SeqVal::Float(f)) => {
                if !almost_equal(*f, s.v, EPSILON) {
                    return Err(format!("expected {f} for {} but got {}", s.labels, s.v));
                }
            }
            Some(SeqVal::Hist) => return Err(format!("expected a histogram for {} but got float {}", s.labels, s.v)),
            // `_` (or nothing) as the only value: upstream compares against the zero value.
            Some(SeqVal::Omitted) | None => {
                if !almost_equal(0.0, s.v, EPSILON) {
                    return Err(format!("expected 0 for {} but got {}", s.labels, s.v));
                }
            }
        }
        seen.insert(&s.labels);
    }
    for (l, e) in &ev.expected {
        if !seen.contains(l) {
            return Err(short(format!("expected metric {l} with [{}] not found", fmt_vals(&e.vals))));
        }
    }
    Ok(())
}

/// Checks an engine error against the expected failure.
pub(crate) fn check_expected_failure(ev: &EvalCmd, err: &str) -> Result<(), String> {
    if let Some(m) = &ev.fail_message
        && m != err
    {
        return Err(format!("expected error {m:?}, but got: {err}"));
    }
    if let Some(r) = &ev.fail_regexp
        && !r.is_match(err)
    {
        return Err(format!("expected error matching {:?}, but got: {err}", r.as_str()));
    }
    if let Some(tm) = ev.expects_of(ExpectKind::Fail).first()
        && !tm.matches(err)
    {
        return Err(format!("expected error matching {tm}, but got: {err}"));
    }
    Ok(())
}

fn with_prefix(prefix: &str, s: &str) -> String {
    if s.starts_with(prefix) { s.to_string() } else { format!("{prefix}{s}") }
}

fn check_kind(expected: &[&TextMatch], actual: &[String], kind: &str, loose: bool) -> Result<(), String> {
    if expected.is_empty() {
        return Ok(());
    }
    if actual.is_empty() {
        return Err(format!("expected {kind} annotations but none were found"));
    }
    if loose {
        return Ok(());
    }
    for e in expected {
        if !actual.iter().any(|a| e.matches(a)) {
            return Err(format!("expected {kind} annotation matching {e} but found only {actual:?}"));
        }
    }
    for a in actual {
        if !expected.iter().any(|e| e.matches(a)) {
            return Err(format!("unexpected {kind} annotation {a:?}"));
        }
    }
    Ok(())
}

/// Checks warnings and infos against `eval_warn`/`eval_info`/`expect (no_)warn|info` lines.
/// Annotations are compared in upstream's text form (`PromQL warning: ...`, `PromQL info: ...`);
/// the prefix is added when the engine leaves it out. With `loose`, `expect warn|info` only
/// require that some annotation of that kind exists.
pub(crate) fn check_annotations(ev: &EvalCmd, res: &QueryResult, loose: bool) -> Result<(), String> {
    let warnings: Vec<String> = res.warnings.iter().map(|w| with_prefix("PromQL warning: ", w)).collect();
    let infos: Vec<String> = res.infos.iter().map(|w| with_prefix("PromQL info: ", w)).collect();
    if ev.warn && warnings.is_empty() {
        return Err("expected warnings but got none".into());
    }
    if ev.info && infos.is_empty() {
        return Err("expected info annotations but got none".into());
    }
    check_kind(&ev.expects_of(ExpectKind::Warn), &warnings, "warn", loose)?;
    check_kind(&ev.expects_of(ExpectKind::Info), &infos, "info", loose)?;
    if !ev.expects_of(ExpectKind::NoWarn).is_empty() && !warnings.is_empty() {
        return Err(format!("unexpected warning annotations: {warnings:?}"));
    }
    if !ev.expects_of(ExpectKind::NoInfo).is_empty() && !infos.is_empty() {
        return Err(format!("unexpected info annotations: {infos:?}"));
    }
    Ok(())
}

/// Self-checks of the comparison helpers.
pub(crate) fn self_check() {
    let stale = f64::from_bits(super::script::STALE_NAN_BITS);
    assert!(almost_equal(f64::NAN, f64::NAN, EPSILON));
    assert!(!almost_equal(stale, f64::NAN, EPSILON));
    assert!(almost_equal(stale, stale, EPSILON));
    assert!(almost_equal(f64::INFINITY, f64::INFINITY, EPSILON));
    assert!(!almost_equal(f64::INFINITY, f64::NEG_INFINITY, EPSILON));
    assert!(almost_equal(1.0, 1.0 + 1e-9, EPSILON));
    assert!(!almost_equal(1.0, 1.001, EPSILON));
    assert!(!almost_equal(0.0, 1e-300, EPSILON));
    assert!(almost_equal(0.0, -0.0, EPSILON));
    assert!(almost_equal(0.333333333, 1.0 / 3.0, EPSILON));
}
