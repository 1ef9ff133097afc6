//! `PromLiteral`: a leaf producing a scalar at every step: a number literal, `time()` or `pi()`.
//!
//! ```text
//!   (no input) ──► PromLiteral(grid, 42) ──► ({}, t0, 42), ({}, t1, 42), ...
//!   (no input) ──► PromLiteral(grid, time) ──► ({}, t0, t0/1000), ({}, t1, t1/1000), ...
//! ```
//!
//! A scalar is one series with an empty label set (see the batch layout in [`super::batch`]).

use std::fmt;

use engine::Labels;

use super::{EvalCtx, F64, Grid, NodeSpec, SeriesData};
use crate::error::Result;

/// What the literal yields.
#[derive(Debug, Clone, PartialEq, Eq, Hash, PartialOrd)]
pub(crate) enum LiteralKind {
    /// The same number at every step.
    Number(F64),
    /// The step's time in seconds (`time()`).
    Time,
}

/// Parameters of the literal.
#[derive(Debug, Clone, PartialEq, Eq, Hash, PartialOrd)]
pub(crate) struct LiteralSpec {
    /// Evaluation steps.
    pub(crate) grid: Grid,
    /// The value source.
    pub(crate) kind: LiteralKind,
}

impl NodeSpec for LiteralSpec {
    const NAME: &'static str = "PromLiteral";

    fn fmt_params(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match &self.kind {
            LiteralKind::Number(v) => write!(f, "{}, value={}", self.grid, v.0),
            LiteralKind::Time => write!(f, "{}, value=time()", self.grid),
        }
    }

    fn eval(&self, _main: Vec<SeriesData>, _params: &[Vec<SeriesData>], _ctx: &EvalCtx) -> Result<Vec<SeriesData>> {
        let mut s = SeriesData::new(Labels::default());
        for t in self.grid.times() {
            let v = match &self.kind {
                LiteralKind::Number(v) => v.0,
                LiteralKind::Time => t as f64 / 1000.0,
            };
            s.push(t, v);
        }
        Ok(vec![s])
    }
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;

    #[test]
    fn time_literal_is_step_seconds() {
        let spec = LiteralSpec { grid: Grid::new(1000, 3000, 1000), kind: LiteralKind::Time };
        let out = spec.eval(vec![], &[], &EvalCtx::new(10)).unwrap();
        assert_eq!(out[0].vs, vec![1.0, 2.0, 3.0]);
        assert!(out[0].labels.is_empty());
    }
}
