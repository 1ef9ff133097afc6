//! `PromSubquery`: the boundary where an expression is evaluated on a subquery's own grid.
//!
//! ```text
//!   inner expression planned on the inner grid        outer grid t0 .. tn
//!   (labels, ti, v) at ti = aligned multiples of the subquery step in
//!   (first te - range, last te]
//!        ▼
//!   PromSubquery ──► the same rows, now read as raw samples by the PromRangeFunc above,
//!                    which windows them per outer step: (te - range, te]
//! ```
//!
//! The node holds the inner grid (for EXPLAIN and for checks) and passes the inner series
//! through unchanged; the grid arithmetic (alignment to the step, left-open start, `offset` and
//! `@`) is done by the planner, which builds the inner plan on [`SubquerySpec::inner`].

use std::fmt;

use super::{EvalCtx, Grid, NodeSpec, SeriesData, fmt_duration};
use crate::error::Result;

/// Parameters of a subquery boundary.
#[derive(Debug, Clone, PartialEq, Eq, Hash, PartialOrd)]
pub(crate) struct SubquerySpec {
    /// The grid the inner expression is evaluated on.
    pub(crate) inner: Grid,
    /// The subquery range (ms).
    pub(crate) range: i64,
}

impl SubquerySpec {
    /// The inner grid of a subquery `[range:step]` whose outer data times run from `first_te`
    /// to `last_te`: multiples of `step` after `first_te - range`, up to `last_te`.
    pub(crate) fn inner_grid(first_te: i64, last_te: i64, range: i64, step: i64) -> Grid {
        let lo = first_te - range;
        // Truncating division, then step past `lo`: the window is left-open.
        let mut start = step * (lo / step);
        while start <= lo {
            start += step;
        }
        Grid::new(start, last_te.max(start), step)
    }
}

impl NodeSpec for SubquerySpec {
    const NAME: &'static str = "PromSubquery";

    fn fmt_params(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "inner {}, range={}", self.inner, fmt_duration(self.range))
    }

    fn streaming(&self) -> bool {
        true
    }

    fn eval(&self, mut main: Vec<SeriesData>, _params: &[Vec<SeriesData>], ctx: &EvalCtx) -> Result<Vec<SeriesData>> {
        ctx.check_samples(main.iter().map(|s| s.ts.len()).sum())?;
        if ctx.delayed_name_removal {
            // The inner series become raw samples: a delayed name removal happens here, as
            // Prometheus's subquery result series drop a name they are flagged to drop.
            for s in &mut main {
                super::remove_marked_name(&mut s.labels);
            }
        }
        Ok(main)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn inner_grid_is_aligned_and_left_open() {
        // x[1m:1m] at 10m: (9m, 10m] holds only the 10m step.
        let g = SubquerySpec::inner_grid(600_000, 600_000, 60_000, 60_000);
        assert_eq!(g.times().collect::<Vec<_>>(), vec![600_000]);
        let g = SubquerySpec::inner_grid(100_000, 200_000, 45_000, 30_000);
        assert_eq!((g.start, g.end), (60_000, 180_000));
    }
}
