//! `PromLabelFn`: the label-rewriting functions `label_replace` and `label_join`.
//!
//! ```text
//!   input (labels, t, v)
//!        ▼  label_replace: dst = expand(replacement, regex captures of src)  (if regex matches)
//!        ▼  label_join:    dst = join(sep, src1, src2, ...)
//!   (labels', t, v), series that end up with the same labels merged; the same labels at the
//!   same step is "vector cannot contain metrics with the same labelset"
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
}

/// Parameters of the label function.
#[derive(Debug, Clone, PartialEq, Eq, Hash, PartialOrd)]
pub(crate) struct LabelFnSpec {
    /// The rewrite.
    pub(crate) op: LabelOp,
}

impl LabelFnSpec {
    /// Checks the arguments as Prometheus does, so errors surface at planning time.
    pub(crate) fn validate(&self) -> Result<()> {
        match &self.op {
            LabelOp::Replace { dst, regex, .. } => {
                compile(regex)?;
                if dst.is_empty() {
                    return Err(Error::BadData(format!("invalid destination label name in label_replace(): {dst}")));
                }
            }
            LabelOp::Join { dst, srcs, .. } => {
                if dst.is_empty() {
                    return Err(Error::BadData(format!("invalid destination label name in label_join(): {dst}")));
                }
                if let Some(s) = srcs.iter().find(|s| s.is_empty()) {
                    return Err(Error::BadData(format!("invalid source label name in label_join(): {s}")));
                }
            }
        }
        Ok(())
    }
}

fn compile(re: &str) -> Result<regex::Regex> {
    regex::Regex::new(&format!("^(?s:{re})$"))
        .map_err(|e| Error::BadData(format!("invalid regular expression in label_replace(): {re}: {e}")))
}

impl NodeSpec for LabelFnSpec {
    const NAME: &'static str = "PromLabelFn";

    fn fmt_params(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match &self.op {
            LabelOp::Replace { dst, replacement, src, regex } => {
                write!(f, "label_replace dst={dst:?} replacement={replacement:?} src={src:?} regex={regex:?}")
            }
            LabelOp::Join { dst, sep, srcs } => write!(f, "label_join dst={dst:?} sep={sep:?} src={srcs:?}"),
        }
    }

    fn eval(&self, main: Vec<SeriesData>, _params: &[Vec<SeriesData>], _ctx: &EvalCtx) -> Result<Vec<SeriesData>> {
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
                    }
                    out.push(s);
                }
            }
            LabelOp::Join { dst, sep, srcs } => {
                for mut s in main {
                    let vals: Vec<&str> = srcs.iter().map(|n| s.labels.get(n).unwrap_or("")).collect();
                    let joined = vals.join(sep);
                    s.labels = set(&s.labels, dst, &joined);
                    out.push(s);
                }
            }
        }
        merge_same_labels(out)
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
