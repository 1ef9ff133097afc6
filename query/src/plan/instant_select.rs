//! `PromInstantSelect`: an instant vector selector evaluated at every step, with lookback,
//! staleness, `offset` and `@`.
//!
//! ```text
//!   raw samples of series s          PromInstantSelect(grid, lookback, offset, @)
//!   ──●────●──────●──────────►        for each step t:  te = (@ or t) - offset
//!        t-δ ( ........ ] t           take the last sample with te - lookback < ts <= te;
//!                                     none, or a stale marker: no point at t
//!        ▼
//!   (labels, t, value) one row per step that has a value; timestamps are the steps
//! ```
//!
//! With `sample_timestamp` (the argument of `timestamp()`), the value emitted is the chosen
//! sample's own timestamp in seconds, as Prometheus's `timestamp(v)` does for selectors.
//! Series are independent, so the node streams batch by batch, reading the batch's columns in
//! place; the output shares the input's label dictionary (labels are never decoded here).

use std::fmt;

use arrow::array::RecordBatch;

use super::{BatchBuilder, BatchView, EvalCtx, Grid, NodeSpec, SeriesData, TimeShift, fmt_duration, is_stale};
use crate::error::Result;

/// Parameters of the instant selection.
#[derive(Debug, Clone, PartialEq, Eq, Hash, PartialOrd)]
pub(crate) struct InstantSelectSpec {
    /// Evaluation steps.
    pub(crate) grid: Grid,
    /// Lookback delta (ms).
    pub(crate) lookback: i64,
    /// `offset` / `@`.
    pub(crate) shift: TimeShift,
    /// Emit the sample's timestamp (seconds) instead of its value.
    pub(crate) sample_timestamp: bool,
}

impl NodeSpec for InstantSelectSpec {
    const NAME: &'static str = "PromInstantSelect";

    fn fmt_params(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}, lookback={}", self.grid, fmt_duration(self.lookback))?;
        self.shift.fmt_suffix(f)?;
        if self.sample_timestamp {
            f.write_str(", emit=sample_timestamp")?;
        }
        Ok(())
    }

    fn streaming(&self) -> bool {
        true
    }

    fn eval(&self, main: Vec<SeriesData>, _params: &[Vec<SeriesData>], ctx: &EvalCtx) -> Result<Vec<SeriesData>> {
        let mut out = Vec::with_capacity(main.len());
        let mut total = 0usize;
        for s in main {
            let mut o = SeriesData::new(s.labels);
            self.select_series(&s.ts, &s.vs, &mut |t, v| o.push(t, v));
            total += o.ts.len();
            ctx.check_samples(total)?;
            out.push(o);
        }
        Ok(out)
    }

    fn map_batch(&self, batch: &RecordBatch, _params: &[Vec<SeriesData>], ctx: &EvalCtx) -> Result<RecordBatch> {
        let view = BatchView::new(batch)?;
        let mut out = BatchBuilder::with_capacity(self.grid.len().min(batch.num_rows()));
        for s in view.series() {
            self.select_series(s.ts, s.vs, &mut |t, v| out.push(s.key, t, v));
            ctx.check_samples(out.len())?;
        }
        // The label sets pass through untouched: the output reuses the input's dictionary.
        out.finish(view.dictionary().clone())
    }
}

impl InstantSelectSpec {
    /// Selects one series at every step, handing each output point to `emit`.
    fn select_series(&self, ts: &[i64], vs: &[f64], emit: &mut dyn FnMut(i64, f64)) {
        let mut end = 0usize;
        for t in self.grid.times() {
            let te = self.shift.eval_time(t);
            if self.shift.at.is_some() {
                end = ts.partition_point(|&x| x <= te);
            } else {
                // Without `@` the data time grows with the step: move a cursor forward.
                while end < ts.len() && ts[end] <= te {
                    end += 1;
                }
            }
            if end == 0 {
                continue;
            }
            let i = end - 1;
            if ts[i] <= te - self.lookback || is_stale(vs[i]) {
                continue;
            }
            emit(t, if self.sample_timestamp { ts[i] as f64 / 1000.0 } else { vs[i] });
        }
    }
}

#[cfg(test)]
#[allow(clippy::unwrap_used, clippy::expect_used)]
mod tests {
    use super::*;
    use crate::plan::STALE_NAN_BITS;
    use engine::Labels;

    #[test]
    fn lookback_is_left_open_and_stale_ends_series() {
        let spec = InstantSelectSpec {
            grid: Grid::new(0, 600_000, 60_000),
            lookback: 300_000,
            shift: TimeShift::default(),
            sample_timestamp: false,
        };
        let s = SeriesData {
            labels: Labels::from_pairs([("__name__", "x")]),
            ts: vec![60_000, 120_000, 240_000],
            vs: vec![1.0, 2.0, f64::from_bits(STALE_NAN_BITS)],
        };
        let out = spec.eval(vec![s], &[], &EvalCtx::new(100)).unwrap();
        // 60s: 1, 120s & 180s: 2, 240s..: stale marker hides everything.
        assert_eq!(out[0].ts, vec![60_000, 120_000, 180_000]);
        assert_eq!(out[0].vs, vec![1.0, 2.0, 2.0]);
    }

    #[test]
    fn batch_path_keeps_the_input_dictionary() {
        let spec = InstantSelectSpec {
            grid: Grid::new(0, 180_000, 60_000),
            lookback: 300_000,
            shift: TimeShift { offset: 60_000, at: None },
            sample_timestamp: false,
        };
        let input = vec![
            SeriesData { labels: Labels::from_pairs([("__name__", "x")]), ts: vec![0, 60_000], vs: vec![1.0, 2.0] },
            SeriesData { labels: Labels::from_pairs([("__name__", "y")]), ts: vec![90_000], vs: vec![3.0] },
        ];
        let rb = crate::plan::series_to_batch(&input).unwrap();
        let out = spec.map_batch(&rb, &[], &EvalCtx::new(100)).unwrap();
        let got = crate::plan::batch_to_series(&out).unwrap();
        assert_eq!(got, spec.eval(input, &[], &EvalCtx::new(100)).unwrap());
        assert_eq!(got[0].ts, vec![60_000, 120_000, 180_000]);
        assert_eq!(got[0].vs, vec![1.0, 2.0, 2.0]);
        assert_eq!((got[1].labels.get("__name__"), got[1].ts.clone()), (Some("y"), vec![180_000]));
        assert!(spec.map_batch(&rb, &[], &EvalCtx::new(3)).is_err());
    }

    #[test]
    fn lookback_excludes_sample_exactly_lookback_old() {
        let spec = InstantSelectSpec {
            grid: Grid::new(360_000, 420_000, 60_000),
            lookback: 300_000,
            shift: TimeShift { offset: 0, at: None },
            sample_timestamp: true,
        };
        let s = SeriesData { labels: Labels::default(), ts: vec![60_000], vs: vec![7.0] };
        let out = spec.eval(vec![s.clone()], &[], &EvalCtx::new(100)).unwrap();
        assert!(out[0].ts.is_empty());
        let spec2 = InstantSelectSpec { shift: TimeShift { offset: 60_000, at: None }, ..spec };
        let out = spec2.eval(vec![s], &[], &EvalCtx::new(100)).unwrap();
        assert_eq!(out[0].ts, vec![360_000]);
        assert_eq!(out[0].vs, vec![60.0]);
    }
}
