//! `PromLabelFn`: the label-rewriting functions `label_replace` and `label_join`, and the
//! labelling union that ends `histogram_quantiles`.
//!
//! ```text
//!   input (labels, t, v)
//!        ▼  label_replace: dst = expand(replacement, regex captures of src)  (if regex matches)
//!        ▼  label_join:    dst = join(sep, src1, src2, ...)
//!   (labels', t, v), series that end up with the same labels merged; the same labels at the
//!   same step is "vector cannot contain metrics with the same labelset"
//!
//!   histogram_quantiles(v, "q", φ0, φ1, ...):
//!   histogram_quantile(φ0, v) ─┐ q = OpenMetrics text of φ0 at t (`0.0`, `0.25`, `1.0`, `NaN`)
//!   histogram_quantile(φ1, v) ─┤ q = ... φ1 ...
//!   ...        φ0, φ1, ... ────┘
//!        ▼ union, with the same collision check
//! ```
//!
//! The node needs its whole input to detect collisions between rewritten series.

use std::fmt;

use engine::Labels;

use super::{EvalCtx, NodeSpec, SeriesData, merge_same_labels};
use crate::error::{Error, Result};

/// Which rewrite.
#[derive(Debug, Clone, PartialEq, Eq, Hash, PartialOrd)]
pub(crate) enum LabelOp {
    /// `label_replace(v, dst, replacement, src, regex)`.
    Replace { dst: String, replacement: String, src: String, regex: String },
    /// `label_join(v, dst, separator, src...)`.
    Join { dst: String, sep: String, srcs: Vec<String> },
    /// The end of `histogram_quantiles(v, dst, φ...)`: inputs `0..n` are
    /// `histogram_quantile(φ_i, v)`, inputs `n..2n` the scalars `φ_i`; each result gets
    /// `dst` = its φ and all are united.
    QuantileUnion { dst: String, n: usize },
}

/// Parameters of the label function.
#[derive(Debug, Clone, PartialEq, Eq, Hash, PartialOrd)]
pub(crate) struct LabelFnSpec {
    /// The rewrite.
    pub(crate) op: LabelOp,
}

impl LabelFnSpec {
    /// Checks the arguments as Prometheus does before it evaluates the function, in its order
    /// and with its messages. These are evaluation errors (`execution`), not parse errors:
    /// Prometheus's parser accepts any string there. (Names that are not UTF-8 once their
    /// escapes are decoded are caught on the query text, see
    /// `planner::check_label_name_literals`.)
    pub(crate) fn validate(&self) -> Result<()> {
        match &self.op {
            LabelOp::Replace { dst, regex, .. } => {
                compile(regex)?;
                if dst.is_empty() {
                    return Err(Error::Execution(format!("invalid destination label name in label_replace(): {dst}")));
                }
            }
            LabelOp::Join { dst, srcs, .. } => {
                if let Some(s) = srcs.iter().find(|s| s.is_empty()) {
                    return Err(Error::Execution(format!("invalid source label name in label_join(): {s}")));
                }
                if dst.is_empty() {
                    return Err(Error::Execution(format!("invalid destination label name in label_join(): {dst}")));
                }
            }
            LabelOp::QuantileUnion { dst, n } => {
                if dst.is_empty() {
                    return Err(Error::Execution(format!(
                        "invalid quantile label name in histogram_quantiles(): {dst}"
                    )));
                }
                if *n == 0 {
                    return Err(Error::BadData("histogram_quantiles() needs at least one quantile".into()));
                }
            }
        }
        Ok(())
    }
}

/// The regex of `label_replace`, anchored and with `.` matching newlines as in Prometheus 3.
fn compile(re: &str) -> Result<regex::Regex> {
    regex::Regex::new(&format!("^(?s:{re})$"))
        .map_err(|_| Error::Execution(format!("invalid regular expression in label_replace(): {re}")))
}

impl NodeSpec for LabelFnSpec {
    const NAME: &'static str = "PromLabelFn";

    fn fmt_params(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match &self.op {
            LabelOp::Replace { dst, replacement, src, regex } => {
                write!(f, "label_replace dst={dst:?} replacement={replacement:?} src={src:?} regex={regex:?}")
            }
            LabelOp::Join { dst, sep, srcs } => write!(f, "label_join dst={dst:?} sep={sep:?} src={srcs:?}"),
            LabelOp::QuantileUnion { dst, n } => write!(f, "histogram_quantiles label={dst:?} quantiles={n}"),
        }
    }

    fn eval(&self, main: Vec<SeriesData>, params: &[Vec<SeriesData>], _ctx: &EvalCtx) -> Result<Vec<SeriesData>> {
        let mut out = Vec::with_capacity(main.len());
        match &self.op {
            LabelOp::Replace { dst, replacement, src, regex } => {
                let re = compile(regex)?;
                for mut s in main {
                    let sv = s.labels.get(src).unwrap_or("").to_string();
                    if let Some(caps) = re.captures(&sv) {
                        let mut res = String::new();
                        caps.expand(replacement, &mut res);
                        s.labels = set(&s.labels, dst, &res);
                        if dst == "__name__" {
                            // Writing the name keeps it (delayed name removal).
                            s.labels.remove(super::DROP_NAME_MARK);
                        }
                    }
                    out.push(s);
                }
            }
            LabelOp::Join { dst, sep, srcs } => {
                for mut s in main {
                    let vals: Vec<&str> = srcs.iter().map(|n| s.labels.get(n).unwrap_or("")).collect();
                    let joined = vals.join(sep);
                    s.labels = set(&s.labels, dst, &joined);
                    if dst == "__name__" {
                        s.labels.remove(super::DROP_NAME_MARK);
                    }
                    out.push(s);
                }
            }
            LabelOp::QuantileUnion { dst, n } => {
                let n = *n;
                if params.len() + 1 != 2 * n {
                    return Err(Error::Internal(format!(
                        "histogram_quantiles expects {} inputs, got {}",
                        2 * n,
                        params.len() + 1
                    )));
                }
                let results = std::iter::once(&main).chain(&params[..n - 1]);
                for (i, res) in results.enumerate() {
                    let phi = params[n - 1 + i].first();
                    let phi_at = |t: i64| -> f64 {
                        phi.and_then(|p| p.ts.binary_search(&t).ok().map(|k| p.vs[k])).unwrap_or(f64::NAN)
                    };
                    for s in res {
                        // One output series per distinct φ text (φ may vary per step).
                        let mut by_text: Vec<(String, SeriesData)> = Vec::new();
                        for (&t, &v) in s.ts.iter().zip(&s.vs) {
                            let text = open_metrics_float(phi_at(t));
                            let k = match by_text.iter().position(|(x, _)| *x == text) {
                                Some(k) => k,
                                None => {
                                    let l = set(&s.labels, dst, &text);
                                    by_text.push((text, SeriesData::new(l)));
                                    by_text.len() - 1
                                }
                            };
                            by_text[k].1.push(t, v);
                        }
                        out.extend(by_text.into_iter().map(|(_, s)| s));
                    }
                }
            }
        }
        merge_same_labels(out)
    }
}

/// A float as OpenMetrics writes it (Prometheus's `FormatOpenMetricsFloat`): Go's shortest
/// `%g` form, with `.0` added to integers (`0.0`, `1.0`, `0.25`, `1e-05`, `NaN`, `+Inf`).
pub(crate) fn open_metrics_float(f: f64) -> String {
    if f.is_nan() {
        return "NaN".into();
    }
    if f.is_infinite() {
        return if f > 0.0 { "+Inf".into() } else { "-Inf".into() };
    }
    let s = go_format_g(f);
    if s.contains(['.', 'e']) { s } else { format!("{s}.0") }
}

/// A float as Go's `%v` prints it (in Prometheus's error messages): [`go_format_g`], and
/// `NaN`, `+Inf`, `-Inf`.
pub(crate) fn go_format_v(f: f64) -> String {
    if f.is_nan() {
        "NaN".into()
    } else if f.is_infinite() {
        if f > 0.0 { "+Inf".into() } else { "-Inf".into() }
    } else {
        go_format_g(f)
    }
}

/// Go's `strconv.Quote` of a byte string: double quotes; `\"` and `\\` escaped; printable
/// characters as they are; `\a \b \f \n \r \t \v`; other control and format characters as
/// `\xNN` (below U+0080), `\uNNNN` or `\UNNNNNNNN`; bytes that are not UTF-8 as `\xNN`.
pub(crate) fn go_quote(b: &[u8]) -> String {
    use std::fmt::Write;
    let mut out = String::with_capacity(b.len() + 2);
    out.push('"');
    for chunk in b.utf8_chunks() {
        for c in chunk.valid().chars() {
            match c {
                '"' | '\\' => {
                    out.push('\\');
                    out.push(c);
                }
                '\u{7}' => out.push_str("\\a"),
                '\u{8}' => out.push_str("\\b"),
                '\u{c}' => out.push_str("\\f"),
                '\n' => out.push_str("\\n"),
                '\r' => out.push_str("\\r"),
                '\t' => out.push_str("\\t"),
                '\u{b}' => out.push_str("\\v"),
                c if go_is_print(c) => out.push(c),
                c if (c as u32) < 0x80 => {
                    let _ = write!(out, "\\x{:02x}", c as u32);
                }
                c if (c as u32) < 0x10000 => {
                    let _ = write!(out, "\\u{:04x}", c as u32);
                }
                c => {
                    let _ = write!(out, "\\U{:08x}", c as u32);
                }
            }
        }
        for byte in chunk.invalid() {
            let _ = write!(out, "\\x{byte:02x}");
        }
    }
    out.push('"');
    out
}

/// Go's `strconv.IsPrint`, near enough: everything but control characters, spaces other than
/// U+0020, the common format characters and private-use code points.
fn go_is_print(c: char) -> bool {
    let u = c as u32;
    !(c.is_control()
        || (c.is_whitespace() && c != ' ')
        || matches!(u, 0xad | 0x600..=0x605 | 0x61c | 0x6dd | 0x70f | 0x180e | 0x200b..=0x200f | 0x202a..=0x202e)
        || matches!(u, 0x2060..=0x206f | 0xfeff | 0xfff9..=0xfffb | 0xe000..=0xf8ff | 0xf0000..)
        || matches!(u, 0x110bd | 0x110cd | 0x1bca0..=0x1bca3 | 0x1d173..=0x1d17a | 0xe0001 | 0xe0020..=0xe007f))
}

/// Go's `strconv.FormatFloat(f, 'g', -1, 64)` for finite `f`: the shortest round-trip digits,
/// in exponent form (`1e-05`, `1.234567e+06`) when the decimal exponent is below -4 or at
/// least 6, else in plain decimal form.
fn go_format_g(f: f64) -> String {
    if f == 0.0 {
        return if f.is_sign_negative() { "-0".into() } else { "0".into() };
    }
    // Rust's `{:e}` gives the shortest round-trip digits: "-1.2345e-7".
    let e = format!("{f:e}");
    let (mant, exp) = e.split_once('e').unwrap_or((e.as_str(), "0"));
    let exp: i32 = exp.parse().unwrap_or(0);
    let (sign, mant) = mant.strip_prefix('-').map(|m| ("-", m)).unwrap_or(("", mant));
    let digits: String = mant.chars().filter(|c| c.is_ascii_digit()).collect();
    let nd = digits.len() as i32;
    let dp = exp + 1;
    if !(-4..6).contains(&exp) {
        let mut m = digits[..1].to_string();
        if nd > 1 {
            m.push('.');
            m.push_str(&digits[1..]);
        }
        let es = if exp < 0 { '-' } else { '+' };
        return format!("{sign}{m}e{es}{:02}", exp.abs());
    }
    if dp <= 0 {
        format!("{sign}0.{}{digits}", "0".repeat((-dp) as usize))
    } else if dp >= nd {
        format!("{sign}{digits}{}", "0".repeat((dp - nd) as usize))
    } else {
        format!("{sign}{}.{}", &digits[..dp as usize], &digits[dp as usize..])
    }
}

fn set(l: &Labels, name: &str, v: &str) -> Labels {
    let mut l = l.clone();
    l.set(name, v);
    l
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;

    #[test]
    fn open_metrics_float_matches_go() {
        let cases = [
            (0.0, "0.0"),
            (1.0, "1.0"),
            (0.25, "0.25"),
            (-0.1, "-0.1"),
            (1.01, "1.01"),
            (100.0, "100.0"),
            (1e-5, "1e-05"),
            (0.0001, "0.0001"),
            (123456.0, "123456.0"),
            (1234567.0, "1.234567e+06"),
            (1e21, "1e+21"),
            (f64::NAN, "NaN"),
            (f64::NEG_INFINITY, "-Inf"),
        ];
        for (f, want) in cases {
            assert_eq!(open_metrics_float(f), want, "{f}");
        }
    }

    #[test]
    fn go_quote_matches_strconv_quote() {
        let cases: [(&[u8], &str); 8] = [
            (b"plain", r#""plain""#),
            (b"a\xc5z", r#""a\xc5z""#),
            (b"q\"b\\", r#""q\"b\\""#),
            (b"\n\t\x07\x00\x7f", r#""\n\t\a\x00\x7f""#),
            ("é✓".as_bytes(), "\"é✓\""),
            ("\u{a0}\u{200b}".as_bytes(), r#""\u00a0\u200b""#),
            ("\u{e0001}".as_bytes(), r#""\U000e0001""#),
            (b"", r#""""#),
        ];
        for (input, want) in cases {
            assert_eq!(go_quote(input), want, "{input:?}");
        }
        assert_eq!(go_format_v(1e19), "1e+19");
        assert_eq!(go_format_v(123456.0), "123456");
        assert_eq!(go_format_v(f64::NEG_INFINITY), "-Inf");
    }

    #[test]
    fn argument_errors_are_execution_errors_with_prometheus_text() {
        let check = |op: LabelOp| {
            let e = LabelFnSpec { op }.validate().unwrap_err();
            assert_eq!(e.error_type(), "execution", "{e}");
            e.to_string()
        };
        let replace = |dst: &str, regex: &str| LabelOp::Replace {
            dst: dst.into(),
            replacement: "x".into(),
            src: "s".into(),
            regex: regex.into(),
        };
        assert_eq!(check(replace("d", "(.*")), "invalid regular expression in label_replace(): (.*");
        assert_eq!(check(replace("", "(.*)")), "invalid destination label name in label_replace(): ");
        // The regex is checked first.
        assert_eq!(check(replace("", "(")), "invalid regular expression in label_replace(): (");
        let join = |dst: &str, srcs: &[&str]| LabelOp::Join {
            dst: dst.into(),
            sep: ",".into(),
            srcs: srcs.iter().map(|s| s.to_string()).collect(),
        };
        // Sources are checked before the destination.
        assert_eq!(check(join("", &["a", ""])), "invalid source label name in label_join(): ");
        assert_eq!(check(join("", &["a"])), "invalid destination label name in label_join(): ");
    }

    #[test]
    fn quantile_union_labels_and_detects_collisions() {
        let ctx = EvalCtx::new(100);
        let q = |v: f64| vec![SeriesData { labels: Labels::default(), ts: vec![0, 60], vs: vec![v, v] }];
        let r = |l: &[(&str, &str)], v: f64| SeriesData {
            labels: Labels::from_pairs(l.iter().copied()),
            ts: vec![0, 60],
            vs: vec![v, v + 1.0],
        };
        let spec = LabelFnSpec { op: LabelOp::QuantileUnion { dst: "q".into(), n: 2 } };
        spec.validate().unwrap();
        let out =
            spec.eval(vec![r(&[("job", "a")], 1.0)], &[vec![r(&[("job", "a")], 5.0)], q(0.5), q(1.0)], &ctx).unwrap();
        let got: Vec<(String, Vec<f64>)> = out.iter().map(|s| (s.labels.to_string(), s.vs.clone())).collect();
        assert_eq!(
            got,
            vec![
                (r#"{job="a", q="0.5"}"#.to_string(), vec![1.0, 2.0]),
                (r#"{job="a", q="1.0"}"#.to_string(), vec![5.0, 6.0]),
            ]
        );
        // Overwriting a label that told two results apart collides.
        let spec = LabelFnSpec { op: LabelOp::QuantileUnion { dst: "job".into(), n: 1 } };
        let e = spec.eval(vec![r(&[("job", "a")], 1.0), r(&[("job", "b")], 2.0)], &[q(0.5)], &ctx).unwrap_err();
        assert_eq!(e.to_string(), "vector cannot contain metrics with the same labelset");
    }

    #[test]
    fn replace_and_join() {
        let s = SeriesData {
            labels: Labels::from_pairs([("__name__", "up"), ("instance", "host:9090"), ("job", "a")]),
            ts: vec![0],
            vs: vec![1.0],
        };
        let ctx = EvalCtx::new(10);
        let r = LabelFnSpec {
            op: LabelOp::Replace {
                dst: "host".into(),
                replacement: "${1}-x".into(),
                src: "instance".into(),
                regex: "(.*):.*".into(),
            },
        };
        let out = r.eval(vec![s.clone()], &[], &ctx).unwrap();
        assert_eq!(out[0].labels.get("host"), Some("host-x"));
        let j = LabelFnSpec {
            op: LabelOp::Join {
                dst: "j".into(),
                sep: "/".into(),
                srcs: vec!["job".into(), "nope".into(), "job".into()],
            },
        };
        let out = j.eval(vec![s], &[], &ctx).unwrap();
        assert_eq!(out[0].labels.get("j"), Some("a//a"));
        let bad = LabelFnSpec {
            op: LabelOp::Replace { dst: "x".into(), replacement: "".into(), src: "y".into(), regex: "(".into() },
        };
        assert!(bad.validate().is_err());
    }
}
