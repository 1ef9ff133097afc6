//! When a node evaluates: the evaluation steps ([`Grid`]) and where a selector reads relative to
//! them ([`TimeShift`]: `offset` and `@`).

use std::fmt;

/// The evaluation steps of a node: `start, start + step, ..., end` (ms, inclusive).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub(crate) struct Grid {
    /// First step (ms).
    pub(crate) start: i64,
    /// Last step (ms), `start + k * step` for some k >= 0.
    pub(crate) end: i64,
    /// Step (ms, > 0).
    pub(crate) step: i64,
}

impl Grid {
    /// A grid; `end` is rounded down onto the grid and a non-positive step becomes 1.
    pub(crate) fn new(start: i64, end: i64, step: i64) -> Self {
        let step = step.max(1);
        let end = if end < start { start } else { start + (end - start) / step * step };
        Grid { start, end, step }
    }

    /// Number of steps.
    pub(crate) fn len(&self) -> usize {
        ((self.end - self.start) / self.step + 1) as usize
    }

    /// The step timestamps.
    pub(crate) fn times(&self) -> impl Iterator<Item = i64> + use<> {
        let g = *self;
        (0..g.len() as i64).map(move |i| g.start + i * g.step)
    }

    /// Index of step timestamp `t`, if `t` is on the grid.
    pub(crate) fn index_of(&self, t: i64) -> Option<usize> {
        if t < self.start || t > self.end || (t - self.start) % self.step != 0 {
            return None;
        }
        Some(((t - self.start) / self.step) as usize)
    }
}

impl fmt::Display for Grid {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        if self.start == self.end {
            write!(f, "t={}", self.start)
        } else {
            write!(f, "t={}..{} step={}", self.start, self.end, self.step)
        }
    }
}

/// Where a selector reads relative to each step: `@` pins the time, `offset` shifts it back.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord, Default)]
pub(crate) struct TimeShift {
    /// `offset` in ms (negative for a negative offset).
    pub(crate) offset: i64,
    /// `@` timestamp in ms (start()/end() already resolved).
    pub(crate) at: Option<i64>,
}

impl TimeShift {
    /// The data time a step `t` reads at.
    pub(crate) fn eval_time(&self, t: i64) -> i64 {
        self.at.unwrap_or(t) - self.offset
    }

    /// Appends ` offset=..` / ` @=..` to a display.
    pub(crate) fn fmt_suffix(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        if self.offset != 0 {
            write!(f, ", offset={}", fmt_duration(self.offset))?;
        }
        if let Some(at) = self.at {
            write!(f, ", @={at}")?;
        }
        Ok(())
    }
}

/// Formats a millisecond duration compactly (`5m`, `90s`, `1500ms`).
pub(crate) fn fmt_duration(ms: i64) -> String {
    let (sign, ms) = if ms < 0 { ("-", -ms) } else { ("", ms) };
    if ms == 0 {
        "0s".into()
    } else if ms % 3_600_000 == 0 {
        format!("{sign}{}h", ms / 3_600_000)
    } else if ms % 60_000 == 0 {
        format!("{sign}{}m", ms / 60_000)
    } else if ms % 1000 == 0 {
        format!("{sign}{}s", ms / 1000)
    } else {
        format!("{sign}{ms}ms")
    }
}

#[cfg(test)]
#[allow(clippy::unwrap_used, clippy::expect_used)]
mod tests {
    use super::*;

    #[test]
    fn grid_steps() {
        let g = Grid::new(10, 35, 10);
        assert_eq!(g.times().collect::<Vec<_>>(), vec![10, 20, 30]);
        assert_eq!(g.index_of(20), Some(1));
        assert_eq!(g.index_of(25), None);
        assert_eq!(fmt_duration(300_000), "5m");
        assert_eq!(fmt_duration(-1500), "-1500ms");
    }
}
