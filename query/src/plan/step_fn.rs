//! `PromStepFn`: functions of the whole vector at each step: `scalar`, `absent` (and thus
//! `absent_over_time`), `sort`, `sort_desc`, `sort_by_label`, `sort_by_label_desc`.
//!
//! ```text
//!   input: all series (labels, t, v)
//!        ▼ per step t, over the samples present at t
//!   scalar: ({}, t, v) if exactly one sample else ({}, t, NaN)
//!   absent: ({absent labels}, t, 1) if no sample at t
//!   sort*:  the input, series ordered by value (one step) or by labels
//! ```
//!
//! Ordering matters only for instant queries: range query results are matrices sorted by
//! labels, as in Prometheus.

use std::cmp::Ordering;
use std::fmt;

use engine::Labels;

use super::{EvalCtx, Grid, NodeSpec, SeriesData};
use crate::error::Result;

/// Which whole-vector function.
#[derive(Debug, Clone, PartialEq, Eq, Hash, PartialOrd)]
pub(crate) enum StepOp {
    /// `scalar(v)`.
    Scalar,
    /// `absent(v)` with the label set its result carries.
    Absent(Vec<(String, String)>),
    /// `sort(v)` (false) / `sort_desc(v)` (true).
    SortByValue(bool),
    /// `sort_by_label(v, labels...)` / `_desc`.
    SortByLabel(Vec<String>, bool),
}

/// Parameters of the step function.
#[derive(Debug, Clone, PartialEq, Eq, Hash, PartialOrd)]
pub(crate) struct StepFnSpec {
    /// Evaluation steps.
    pub(crate) grid: Grid,
    /// The function.
    pub(crate) op: StepOp,
}

/// Compares strings the way people read numbers in them ("a2" < "a10").
pub(crate) fn natural_cmp(a: &str, b: &str) -> Ordering {
    let (mut x, mut y) = (a.as_bytes(), b.as_bytes());
    loop {
        match (x.first(), y.first()) {
            (None, None) => return Ordering::Equal,
            (None, _) => return Ordering::Less,
            (_, None) => return Ordering::Greater,
            (Some(c), Some(d)) if c.is_ascii_digit() && d.is_ascii_digit() => {
                let nx = x.iter().take_while(|c| c.is_ascii_digit()).count();
                let ny = y.iter().take_while(|c| c.is_ascii_digit()).count();
                let (dx, dy) = (&x[..nx], &y[..ny]);
                let tx: &[u8] = {
                    let z = dx.iter().take_while(|c| **c == b'0').count();
                    &dx[z..]
                };
                let ty: &[u8] = {
                    let z = dy.iter().take_while(|c| **c == b'0').count();
                    &dy[z..]
                };
                let o = tx.len().cmp(&ty.len()).then_with(|| tx.cmp(ty)).then_with(|| nx.cmp(&ny));
                if o != Ordering::Equal {
                    return o;
                }
                x = &x[nx..];
                y = &y[ny..];
            }
            (Some(c), Some(d)) => {
                if c != d {
                    return c.cmp(d);
                }
                x = &x[1..];
                y = &y[1..];
            }
        }
    }
}

impl NodeSpec for StepFnSpec {
    const NAME: &'static str = "PromStepFn";

    fn fmt_params(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match &self.op {
            StepOp::Scalar => write!(f, "scalar, {}", self.grid),
            StepOp::Absent(l) => write!(f, "absent {l:?}, {}", self.grid),
            StepOp::SortByValue(d) => write!(f, "{}, {}", if *d { "sort_desc" } else { "sort" }, self.grid),
            StepOp::SortByLabel(l, d) => {
                write!(f, "sort_by_label{} {l:?}, {}", if *d { "_desc" } else { "" }, self.grid)
            }
        }
    }

    fn eval(&self, mut main: Vec<SeriesData>, _params: &[Vec<SeriesData>], _ctx: &EvalCtx) -> Result<Vec<SeriesData>> {
        match &self.op {
            StepOp::Scalar | StepOp::Absent(_) => {
                let n = self.grid.len();
                let mut count = vec![0usize; n];
                let mut value = vec![f64::NAN; n];
                for s in &main {
                    for (&t, &v) in s.ts.iter().zip(&s.vs) {
                        if let Some(i) = self.grid.index_of(t) {
                            count[i] += 1;
                            value[i] = v;
                        }
                    }
                }
                let labels = match &self.op {
                    StepOp::Absent(l) => Labels::from_pairs(l.iter().cloned()),
                    _ => Labels::default(),
                };
                let mut o = SeriesData::new(labels);
                for (i, t) in self.grid.times().enumerate() {
                    match &self.op {
                        StepOp::Scalar => o.push(t, if count[i] == 1 { value[i] } else { f64::NAN }),
                        _ if count[i] == 0 => o.push(t, 1.0),
                        _ => {}
                    }
                }
                Ok(vec![o])
            }
            StepOp::SortByValue(desc) => {
                let key = |s: &SeriesData| s.vs.first().copied().unwrap_or(f64::NAN);
                main.sort_by(|a, b| {
                    let (x, y) = (key(a), key(b));
                    match (x.is_nan(), y.is_nan()) {
                        (true, true) => Ordering::Equal,
                        (true, false) => Ordering::Greater,
                        (false, true) => Ordering::Less,
                        // -0 and +0 tie, as in Prometheus's comparison; the sort is stable.
                        _ if *desc => y.partial_cmp(&x).unwrap_or(Ordering::Equal),
                        _ => x.partial_cmp(&y).unwrap_or(Ordering::Equal),
                    }
                });
                Ok(main)
            }
            StepOp::SortByLabel(names, desc) => {
                main.sort_by(|a, b| {
                    let mut o = Ordering::Equal;
                    for n in names {
                        o = natural_cmp(a.labels.get(n).unwrap_or(""), b.labels.get(n).unwrap_or(""));
                        if o != Ordering::Equal {
                            break;
                        }
                    }
                    let o = o.then_with(|| a.labels.cmp(&b.labels));
                    if *desc { o.reverse() } else { o }
                });
                Ok(main)
            }
        }
    }
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;

    #[test]
    fn natural_order() {
        assert_eq!(natural_cmp("a2", "a10"), Ordering::Less);
        assert_eq!(natural_cmp("1.11.3", "1.2.3"), Ordering::Greater);
        assert_eq!(natural_cmp("4m5", "4m600"), Ordering::Less);
    }

    #[test]
    fn scalar_and_absent() {
        let g = Grid::new(0, 20, 10);
        let a = SeriesData { labels: Labels::from_pairs([("a", "1")]), ts: vec![0, 10], vs: vec![5.0, 6.0] };
        let b = SeriesData { labels: Labels::from_pairs([("a", "2")]), ts: vec![10], vs: vec![7.0] };
        let ctx = EvalCtx::new(10);
        let out = StepFnSpec { grid: g, op: StepOp::Scalar }.eval(vec![a.clone(), b.clone()], &[], &ctx).unwrap();
        assert_eq!(out[0].vs[0], 5.0);
        assert!(out[0].vs[1].is_nan() && out[0].vs[2].is_nan());
        let out = StepFnSpec { grid: g, op: StepOp::Absent(vec![("job".into(), "x".into())]) }
            .eval(vec![a, b], &[], &ctx)
            .unwrap();
        assert_eq!((out[0].ts.clone(), out[0].labels.get("job")), (vec![20], Some("x")));
    }
}
