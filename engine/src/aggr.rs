//! Downsampled series: the rows of `aggregates.parquet` (docs/format.md §4a) as Rust values, and
//! Thanos's counter-reset reading of the `counter` aggregate.
//!
//! ```text
//!   AggrSeries (one series of a downsampled block)
//!     timestamp | count | sum | min | max | counter? | counter_start_ts? counter_start? | counter_end?
//!     batches: a row with counter_start … a row with counter_end
//!        │ counter_chunk(batch) = (start_ts, start), (t, counter)…, (t_last, end)
//!        ▼
//!   CounterResets: one monotonic counter across batches (resets between batches found from the
//!   raw end/start values), as Thanos's ApplyCounterResetsSeriesIterator
//! ```
//!
//! The compactor writes these rows ([`crate::BlockWriter::append_aggr_series`]), the reader reads
//! them back ([`crate::BlockReader::read_aggregates`]), the store turns batches into AggrChunks.

use std::ops::Range;

/// Resolution of 5m-downsampled blocks (ms).
pub const RESOLUTION_5M: i64 = 300_000;
/// Resolution of 1h-downsampled blocks (ms).
pub const RESOLUTION_1H: i64 = 3_600_000;

/// The five aggregates of a downsampled window, in Thanos's order (`AggrType`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum Aggregate {
    /// Samples in the window.
    Count,
    /// Sum of the values.
    Sum,
    /// Smallest value.
    Min,
    /// Largest value.
    Max,
    /// Counter with resets removed.
    Counter,
}

impl Aggregate {
    /// All five, in Thanos's order.
    pub const ALL: [Aggregate; 5] =
        [Aggregate::Count, Aggregate::Sum, Aggregate::Min, Aggregate::Max, Aggregate::Counter];
}

/// The window end a sample at `t` belongs to: `t - t mod res + res - 1` (Thanos's `currentWindow`,
/// Go's truncated remainder).
pub fn window_end(t: i64, res: i64) -> i64 {
    t - t % res + res - 1
}

/// The rows of one series of a downsampled block (columnar, one entry per window).
#[derive(Debug, Clone, Default, PartialEq)]
pub struct AggrSeries {
    /// Row timestamps (ms), strictly increasing.
    pub timestamps: Vec<i64>,
    /// Raw samples per window.
    pub count: Vec<u64>,
    /// Sum per window.
    pub sum: Vec<f64>,
    /// Min per window.
    pub min: Vec<f64>,
    /// Max per window.
    pub max: Vec<f64>,
    /// Counter aggregate per window (None: no counter sample for the window).
    pub counter: Vec<Option<f64>>,
    /// On a batch's first row: the batch's first raw sample (timestamp, value).
    pub counter_start: Vec<Option<(i64, f64)>>,
    /// On a batch's last row: the batch's last raw value.
    pub counter_end: Vec<Option<f64>>,
}

/// One row of an [`AggrSeries`].
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct AggrRow {
    /// Row timestamp (ms).
    pub t: i64,
    /// Samples in the window.
    pub count: u64,
    /// Sum.
    pub sum: f64,
    /// Min.
    pub min: f64,
    /// Max.
    pub max: f64,
    /// Counter aggregate.
    pub counter: Option<f64>,
    /// Batch start marker.
    pub counter_start: Option<(i64, f64)>,
    /// Batch end marker.
    pub counter_end: Option<f64>,
}

impl AggrSeries {
    /// Number of rows.
    pub fn len(&self) -> usize {
        self.timestamps.len()
    }

    /// True without rows.
    pub fn is_empty(&self) -> bool {
        self.timestamps.is_empty()
    }

    /// Removes every row.
    pub fn clear(&mut self) {
        self.timestamps.clear();
        self.count.clear();
        self.sum.clear();
        self.min.clear();
        self.max.clear();
        self.counter.clear();
        self.counter_start.clear();
        self.counter_end.clear();
    }

    /// Makes room for `n` more rows.
    pub fn reserve(&mut self, n: usize) {
        self.timestamps.reserve(n);
        self.count.reserve(n);
        self.sum.reserve(n);
        self.min.reserve(n);
        self.max.reserve(n);
        self.counter.reserve(n);
        self.counter_start.reserve(n);
        self.counter_end.reserve(n);
    }

    /// Bytes one row takes in memory (its eight columns), about six raw samples' worth.
    pub const ROW_BYTES: usize =
        5 * 8 + 2 * std::mem::size_of::<Option<f64>>() + std::mem::size_of::<Option<(i64, f64)>>();

    /// Appends one row.
    pub fn push(&mut self, r: AggrRow) {
        self.timestamps.push(r.t);
        self.count.push(r.count);
        self.sum.push(r.sum);
        self.min.push(r.min);
        self.max.push(r.max);
        self.counter.push(r.counter);
        self.counter_start.push(r.counter_start);
        self.counter_end.push(r.counter_end);
    }

    /// Row `i`.
    pub fn row(&self, i: usize) -> AggrRow {
        AggrRow {
            t: self.timestamps[i],
            count: self.count[i],
            sum: self.sum[i],
            min: self.min[i],
            max: self.max[i],
            counter: self.counter[i],
            counter_start: self.counter_start[i],
            counter_end: self.counter_end[i],
        }
    }

    /// Appends rows `range` of `other`.
    pub fn extend_from(&mut self, other: &AggrSeries, range: Range<usize>) {
        self.timestamps.extend_from_slice(&other.timestamps[range.clone()]);
        self.count.extend_from_slice(&other.count[range.clone()]);
        self.sum.extend_from_slice(&other.sum[range.clone()]);
        self.min.extend_from_slice(&other.min[range.clone()]);
        self.max.extend_from_slice(&other.max[range.clone()]);
        self.counter.extend_from_slice(&other.counter[range.clone()]);
        self.counter_start.extend_from_slice(&other.counter_start[range.clone()]);
        self.counter_end.extend_from_slice(&other.counter_end[range]);
    }

    /// Checks the columns have one length, timestamps increase strictly and batches are well
    /// formed (every batch starts with a `counter_start` row and ends with a `counter_end` row).
    /// Returns what is wrong.
    pub fn check(&self) -> std::result::Result<(), String> {
        let n = self.timestamps.len();
        let lens = [
            self.count.len(),
            self.sum.len(),
            self.min.len(),
            self.max.len(),
            self.counter.len(),
            self.counter_start.len(),
            self.counter_end.len(),
        ];
        if lens.iter().any(|&l| l != n) {
            return Err(format!("columns of unequal length: {n} timestamps, others {lens:?}"));
        }
        if let Some(i) = self.timestamps.windows(2).position(|w| w[0] >= w[1]) {
            return Err(format!(
                "timestamp {} at row {} does not increase after {}",
                self.timestamps[i + 1],
                i + 1,
                self.timestamps[i]
            ));
        }
        let mut open = false;
        for i in 0..n {
            if self.counter_start[i].is_some() {
                if open {
                    return Err(format!("row {i} starts a batch before the previous one ended"));
                }
                open = true;
            }
            if !open {
                return Err(format!("row {i} lies outside a batch (no counter_start before it)"));
            }
            if self.counter_end[i].is_some() {
                open = false;
            }
        }
        if open {
            return Err("the last batch has no counter_end".into());
        }
        Ok(())
    }

    /// Row ranges of the batches (assumes [`AggrSeries::check`] passed).
    pub fn batches(&self) -> Vec<Range<usize>> {
        let mut out = Vec::new();
        let mut start = 0;
        for i in 0..self.len() {
            if self.counter_start[i].is_some() {
                start = i;
            }
            if self.counter_end[i].is_some() {
                out.push(start..i + 1);
            }
        }
        out
    }

    /// Thanos's counter chunk of the batch `range`: the first raw sample, `(t, counter)` of each
    /// row with a counter, then the last row's timestamp with the last raw value.
    pub fn counter_chunk(&self, range: Range<usize>, out: &mut Vec<(i64, f64)>) {
        self.counter_piece(range.clone(), range, out);
    }

    /// The counter chunk of rows `rows` of the batch `batch`: the batch's first raw sample when
    /// `rows` starts the batch, `(t, counter)` of each row with a counter, and the last row's
    /// timestamp with the batch's last raw value when `rows` ends it.
    fn counter_piece(&self, batch: Range<usize>, rows: Range<usize>, out: &mut Vec<(i64, f64)>) {
        if rows.is_empty() {
            return;
        }
        if rows.start == batch.start
            && let Some(s) = self.counter_start[batch.start]
        {
            out.push(s);
        }
        out.extend(rows.clone().filter_map(|i| self.counter[i].map(|c| (self.timestamps[i], c))));
        if rows.end == batch.end
            && let Some(e) = self.counter_end[batch.end - 1]
        {
            out.push((self.timestamps[batch.end - 1], e));
        }
    }

    /// The batches of the series that overlap `[min_t, max_t]` (whole batches: their first and
    /// last rows carry the raw values a counter reader needs).
    pub fn batches_overlapping(&self, min_t: i64, max_t: i64) -> Vec<Range<usize>> {
        self.batches()
            .into_iter()
            .filter(|r| {
                let first = self.counter_start[r.start].map_or(self.timestamps[r.start], |s| s.0);
                first <= max_t && self.timestamps[r.end - 1] >= min_t
            })
            .collect()
    }
}

/// Thanos's `ApplyCounterResetsSeriesIterator` over counter chunks: one counter that only grows,
/// resets inside and between chunks removed. Feed each chunk's samples in order with
/// [`CounterResets::push`] (the last sample of a chunk may repeat the previous timestamp: it
/// carries the chunk's last raw value and is not emitted). NaN values are skipped. Going back in
/// time (overlapping chunks) is skipped as well.
#[derive(Debug, Clone, Default)]
pub struct CounterResets {
    total: u64,
    last_t: i64,
    last_v: f64,
    total_v: f64,
}

impl CounterResets {
    /// A reader at the start of a series.
    pub fn new() -> Self {
        CounterResets::default()
    }

    /// Takes the next sample; returns the sample to emit, if any.
    pub fn push(&mut self, t: i64, v: f64) -> Option<(i64, f64)> {
        if v.is_nan() {
            return None;
        }
        if self.total == 0 {
            self.total = 1;
            self.last_t = t;
            self.last_v = v;
            self.total_v = v;
            return Some((t, v));
        }
        if t > self.last_t {
            if v >= self.last_v {
                self.total_v += v - self.last_v;
            } else {
                self.total_v += v;
            }
            self.last_t = t;
            self.last_v = v;
            self.total += 1;
            return Some((t, self.total_v));
        }
        if t == self.last_t {
            // The chunk's last raw value: kept to compare with the next chunk's first.
            self.last_v = v;
        }
        None
    }

    /// The last raw value seen (the last chunk's end marker, or its last sample).
    pub fn last_raw_value(&self) -> Option<f64> {
        (self.total > 0).then_some(self.last_v)
    }

    /// Timestamp of the last emitted sample.
    pub fn last_t(&self) -> Option<i64> {
        (self.total > 0).then_some(self.last_t)
    }
}

/// Applies [`CounterResets`] across `chunks` (each a counter chunk as
/// [`AggrSeries::counter_chunk`] builds it, or raw counter samples), appending the emitted samples
/// to `out`; returns the last raw value seen.
pub fn apply_counter_resets(chunks: &[Vec<(i64, f64)>], out: &mut Vec<(i64, f64)>) -> Option<f64> {
    // Thanos moves to the next chunk by iterating it from its start (not by seeking), so its
    // samples go through the same rule: only later timestamps are emitted.
    let mut it = CounterResets::new();
    for &(t, v) in chunks.iter().flatten() {
        if let Some(s) = it.push(t, v) {
            out.push(s);
        }
    }
    it.last_raw_value()
}

/// The aggregates Thanos's querier asks for to evaluate function `func` (its `aggrsFromFunc`),
/// the name given either as PromQL spells it (`min_over_time`) or in Strata's plan spelling
/// (`MinOverTime`): `min*` → min, `max*` → max, `count*` → count, `sum_*` → sum, `rate`,
/// `increase`, `irate`, `resets` → counter; everything else (and no function) → count and sum,
/// read as their average.
pub fn aggregates_for_func(func: Option<&str>) -> Vec<Aggregate> {
    let name = func.map(prom_func_name).unwrap_or_default();
    let f = name.as_str();
    if f == "min" || f.starts_with("min_") {
        vec![Aggregate::Min]
    } else if f == "max" || f.starts_with("max_") {
        vec![Aggregate::Max]
    } else if f == "count" || f.starts_with("count_") {
        vec![Aggregate::Count]
    } else if f.starts_with("sum_") {
        vec![Aggregate::Sum]
    } else if matches!(f, "increase" | "rate" | "irate" | "resets") {
        vec![Aggregate::Counter]
    } else {
        vec![Aggregate::Count, Aggregate::Sum]
    }
}

/// Prometheus's name of a function as Strata's planner spells it (`MinOverTime` →
/// `min_over_time`); names already in snake case are kept.
pub fn prom_func_name(s: &str) -> String {
    let mut out = String::with_capacity(s.len() + 4);
    for (i, c) in s.chars().enumerate() {
        if c.is_ascii_uppercase() {
            if i > 0 {
                out.push('_');
            }
            out.push(c.to_ascii_lowercase());
        } else {
            out.push(c);
        }
    }
    out
}

/// Most rows (windows) of a downsampled batch in one chunk a store sends: the raw chunk limit
/// ([`crate::chunkenc::SAMPLES_PER_CHUNK`]); Thanos's compactor cuts its aggregate chunks at fewer
/// than 140 windows on average, so a Thanos querier expects chunks of about this size.
pub const ROWS_PER_CHUNK: usize = crate::chunkenc::SAMPLES_PER_CHUNK;

/// One chunk of a series as a querier receives it (a StoreAPI `AggrChunk`): raw samples, or the
/// aggregate series of (a piece of) a downsampled batch (only those asked for need be present).
#[derive(Debug, Clone, Default, PartialEq)]
pub struct AggrChunkData {
    /// First timestamp of the chunk (`AggrChunk.min_time`): its first raw sample, or its first
    /// window (a counter chunk's raw first sample may lie before it, as in Thanos).
    pub min_time: i64,
    /// Last timestamp of the chunk (`AggrChunk.max_time`): its last sample or window.
    pub max_time: i64,
    /// Raw samples (raw-resolution data).
    pub raw: Option<Vec<(i64, f64)>>,
    /// Count per window.
    pub count: Option<Vec<(i64, f64)>>,
    /// Sum per window.
    pub sum: Option<Vec<(i64, f64)>>,
    /// Min per window.
    pub min: Option<Vec<(i64, f64)>>,
    /// Max per window.
    pub max: Option<Vec<(i64, f64)>>,
    /// Thanos's counter chunk (raw first value, per-window counter, repeated last timestamp with
    /// the raw last value).
    pub counter: Option<Vec<(i64, f64)>>,
}

impl AggrChunkData {
    /// A chunk of raw samples (`ts`, `vs` of equal length, not empty).
    pub fn raw(ts: &[i64], vs: &[f64]) -> Self {
        AggrChunkData {
            min_time: ts.first().copied().unwrap_or(i64::MAX),
            max_time: ts.last().copied().unwrap_or(i64::MIN),
            raw: Some(ts.iter().copied().zip(vs.iter().copied()).collect()),
            ..Default::default()
        }
    }

    /// The chunk of the whole batch `range` of `a` with the `aggregates` asked for.
    pub fn from_batch(a: &AggrSeries, range: Range<usize>, aggregates: &[Aggregate]) -> Self {
        Self::piece(a, range.clone(), range, aggregates)
    }

    /// The batch `batch` of `a` cut into chunks of at most `max_rows` rows (equal sizes, as
    /// Thanos's compactor cuts a series' windows into chunks), appended to `out`. The counter of
    /// the first piece starts with the batch's first raw sample and that of the last piece ends
    /// with the batch's last raw value; the pieces in between carry only their windows' counter
    /// values: the counter of a batch never goes down, so a reader
    /// ([`CounterResets`], Thanos's `ApplyCounterResetsSeriesIterator`) finds no reset between
    /// them and reads the same samples as from the whole batch.
    pub fn pieces(
        a: &AggrSeries,
        batch: Range<usize>,
        aggregates: &[Aggregate],
        max_rows: usize,
        out: &mut Vec<AggrChunkData>,
    ) {
        let n = batch.len();
        if n == 0 {
            return;
        }
        let k = n.div_ceil(max_rows.max(1));
        let (size, extra) = (n / k, n % k);
        let mut at = batch.start;
        for i in 0..k {
            let len = size + usize::from(i < extra);
            out.push(Self::piece(a, batch.clone(), at..at + len, aggregates));
            at += len;
        }
    }

    /// Rows `rows` (inside batch `batch`) of `a` with the `aggregates` asked for.
    fn piece(a: &AggrSeries, batch: Range<usize>, rows: Range<usize>, aggregates: &[Aggregate]) -> Self {
        let col = |v: &[f64]| Some(rows.clone().map(|i| (a.timestamps[i], v[i])).collect::<Vec<_>>());
        let mut c = AggrChunkData {
            min_time: a.timestamps.get(rows.start).copied().unwrap_or(i64::MAX),
            max_time: rows.end.checked_sub(1).and_then(|i| a.timestamps.get(i)).copied().unwrap_or(i64::MIN),
            ..Default::default()
        };
        for agg in aggregates {
            match agg {
                Aggregate::Count => {
                    c.count = Some(rows.clone().map(|i| (a.timestamps[i], a.count[i] as f64)).collect());
                }
                Aggregate::Sum => c.sum = col(&a.sum),
                Aggregate::Min => c.min = col(&a.min),
                Aggregate::Max => c.max = col(&a.max),
                Aggregate::Counter => {
                    let mut v = Vec::new();
                    a.counter_piece(batch.clone(), rows.clone(), &mut v);
                    c.counter = Some(v);
                }
            }
        }
        c
    }

    /// Samples of the chunk: the raw ones, or those of its longest aggregate.
    pub fn num_samples(&self) -> usize {
        [&self.raw, &self.count, &self.sum, &self.min, &self.max, &self.counter]
            .iter()
            .filter_map(|f| f.as_ref().map(Vec::len))
            .max()
            .unwrap_or(0)
    }

    /// True when the chunk's `[min_time, max_time]` overlaps `[min_t, max_t]`.
    pub fn overlaps(&self, min_t: i64, max_t: i64) -> bool {
        self.min_time <= max_t && self.max_time >= min_t
    }

    /// The samples of aggregate `agg`, or the raw ones when the chunk is raw.
    fn get(&self, agg: Aggregate) -> Option<&[(i64, f64)]> {
        let x = match agg {
            Aggregate::Count => &self.count,
            Aggregate::Sum => &self.sum,
            Aggregate::Min => &self.min,
            Aggregate::Max => &self.max,
            Aggregate::Counter => &self.counter,
        };
        x.as_deref().or(self.raw.as_deref())
    }
}

/// Turns a series' chunks (ordered by time) into the samples a PromQL function reads, as
/// Thanos's querier does (`chunkSeries.Iterator`): one aggregate → that aggregate's samples (raw
/// samples for raw chunks), the counter through [`CounterResets`] across all chunks (raw ones
/// included); count and sum → `sum / count` per window (raw samples for raw chunks). Samples
/// going back in time across chunks are skipped. Errors name what is missing.
pub fn chunks_to_samples(
    chunks: &[AggrChunkData],
    aggregates: &[Aggregate],
    ts: &mut Vec<i64>,
    vs: &mut Vec<f64>,
) -> std::result::Result<(), String> {
    let push = |t: i64, v: f64, ts: &mut Vec<i64>, vs: &mut Vec<f64>| {
        if ts.last().is_none_or(|&l| t > l) {
            ts.push(t);
            vs.push(v);
        }
    };
    let missing = |agg: Aggregate| format!("a chunk has neither the {agg:?} aggregate nor raw samples");
    match aggregates {
        [Aggregate::Counter] => {
            let mut it = CounterResets::new();
            for c in chunks {
                for &(t, v) in c.get(Aggregate::Counter).ok_or_else(|| missing(Aggregate::Counter))? {
                    if let Some((t, v)) = it.push(t, v) {
                        push(t, v, ts, vs);
                    }
                }
            }
        }
        [one] => {
            for c in chunks {
                for &(t, v) in c.get(*one).ok_or_else(|| missing(*one))? {
                    push(t, v, ts, vs);
                }
            }
        }
        [Aggregate::Count, Aggregate::Sum] | [Aggregate::Sum, Aggregate::Count] => {
            for c in chunks {
                if let Some(raw) = &c.raw {
                    for &(t, v) in raw {
                        push(t, v, ts, vs);
                    }
                    continue;
                }
                let (Some(count), Some(sum)) = (&c.count, &c.sum) else {
                    return Err("a chunk lacks the count or sum aggregate".into());
                };
                if count.len() != sum.len() {
                    return Err(format!("count and sum chunks differ in length: {} vs {}", count.len(), sum.len()));
                }
                for (&(t, n), &(t2, s)) in count.iter().zip(sum) {
                    if t != t2 {
                        return Err(format!("count and sum chunks disagree on timestamps: {t} vs {t2}"));
                    }
                    push(t, s / n, ts, vs);
                }
            }
        }
        other => return Err(format!("unexpected aggregates {other:?}")),
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]
    use super::*;

    fn row(t: i64, c: Option<f64>, start: Option<(i64, f64)>, end: Option<f64>) -> AggrRow {
        AggrRow { t, count: 1, sum: 1.0, min: 1.0, max: 1.0, counter: c, counter_start: start, counter_end: end }
    }

    #[test]
    fn functions_pick_thanos_s_aggregates() {
        use Aggregate::*;
        assert_eq!(aggregates_for_func(Some("MinOverTime")), vec![Min]);
        assert_eq!(aggregates_for_func(Some("max_over_time")), vec![Max]);
        assert_eq!(aggregates_for_func(Some("CountOverTime")), vec![Count]);
        assert_eq!(aggregates_for_func(Some("SumOverTime")), vec![Sum]);
        for f in ["Rate", "Increase", "Irate", "Resets"] {
            assert_eq!(aggregates_for_func(Some(f)), vec![Counter], "{f}");
        }
        assert_eq!(aggregates_for_func(Some("AvgOverTime")), vec![Count, Sum]);
        assert_eq!(aggregates_for_func(Some("Delta")), vec![Count, Sum]);
        assert_eq!(aggregates_for_func(None), vec![Count, Sum]);
    }

    #[test]
    fn chunks_become_samples_per_aggregate() {
        use Aggregate::*;
        let mut a = AggrSeries::default();
        a.push(AggrRow {
            t: 299,
            count: 2,
            sum: 10.0,
            min: 4.0,
            max: 6.0,
            counter: Some(6.0),
            counter_start: Some((10, 4.0)),
            counter_end: None,
        });
        a.push(AggrRow {
            t: 400,
            count: 4,
            sum: 8.0,
            min: 1.0,
            max: 3.0,
            counter: Some(9.0),
            counter_start: None,
            counter_end: Some(3.0),
        });
        let raw = AggrChunkData { raw: Some(vec![(500, 1.0), (600, 2.0)]), ..Default::default() };
        let run = |aggs: &[Aggregate]| {
            let chunks = vec![AggrChunkData::from_batch(&a, 0..2, aggs), raw.clone()];
            let (mut t, mut v) = (Vec::new(), Vec::new());
            chunks_to_samples(&chunks, aggs, &mut t, &mut v).unwrap();
            t.into_iter().zip(v).collect::<Vec<_>>()
        };
        assert_eq!(run(&[Min]), vec![(299, 4.0), (400, 1.0), (500, 1.0), (600, 2.0)]);
        assert_eq!(run(&[Count, Sum]), vec![(299, 5.0), (400, 2.0), (500, 1.0), (600, 2.0)]);
        // Counter: 4 (raw first), 6, 9, then raw 1 < last raw 3: a reset, +1, then +1.
        assert_eq!(run(&[Counter]), vec![(10, 4.0), (299, 6.0), (400, 9.0), (500, 10.0), (600, 11.0)]);
        let (mut t, mut v) = (Vec::new(), Vec::new());
        let e = chunks_to_samples(&[AggrChunkData::from_batch(&a, 0..2, &[Min])], &[Max], &mut t, &mut v);
        assert!(e.unwrap_err().contains("Max"));
    }

    #[test]
    fn pieces_of_a_batch_read_as_the_whole_batch() {
        use Aggregate::*;
        // 7 windows, a counter reset inside, a window without a counter.
        let mut a = AggrSeries::default();
        let counters = [Some(5.0), Some(9.0), None, Some(12.0), Some(20.0), Some(21.0), Some(30.0)];
        for (i, c) in counters.into_iter().enumerate() {
            let start = (i == 0).then_some((1, 3.0));
            let end = (i == 6).then_some(2.0);
            a.push(AggrRow {
                t: 10 * (i as i64 + 1),
                count: i as u64 + 1,
                sum: i as f64,
                min: -(i as f64),
                max: 2.0 * i as f64,
                counter: c,
                counter_start: start,
                counter_end: end,
            });
        }
        let mut pieces = Vec::new();
        AggrChunkData::pieces(&a, 0..7, &[Counter, Min], 3, &mut pieces);
        // 7 rows at most 3 a piece: 3, 2, 2.
        let spans: Vec<(i64, i64)> = pieces.iter().map(|p| (p.min_time, p.max_time)).collect();
        assert_eq!(spans, vec![(10, 30), (40, 50), (60, 70)]);
        assert_eq!(pieces[0].counter.as_deref(), Some(&[(1, 3.0), (10, 5.0), (20, 9.0)][..]));
        assert_eq!(pieces[1].counter.as_deref(), Some(&[(40, 12.0), (50, 20.0)][..]));
        assert_eq!(pieces[2].counter.as_deref(), Some(&[(60, 21.0), (70, 30.0), (70, 2.0)][..]));
        assert_eq!(pieces[1].min.as_deref(), Some(&[(40, -3.0), (50, -4.0)][..]));
        assert!(pieces.iter().all(|p| p.count.is_none() && p.raw.is_none()));
        assert_eq!(pieces.iter().map(AggrChunkData::num_samples).sum::<usize>(), 3 + 2 + 3);
        let whole = [AggrChunkData::from_batch(&a, 0..7, &[Counter, Min])];
        for aggs in [&[Counter][..], &[Min]] {
            let (mut t1, mut v1, mut t2, mut v2) = (Vec::new(), Vec::new(), Vec::new(), Vec::new());
            chunks_to_samples(&pieces, aggs, &mut t1, &mut v1).unwrap();
            chunks_to_samples(&whole, aggs, &mut t2, &mut v2).unwrap();
            assert_eq!((t1, v1), (t2, v2), "{aggs:?}");
        }
        assert!(pieces[1].overlaps(50, 55) && !pieces[1].overlaps(51, 55) && !pieces[1].overlaps(0, 39));
    }

    #[test]
    fn windows_end_one_ms_before_the_next() {
        assert_eq!(window_end(0, RESOLUTION_5M), 299_999);
        assert_eq!(window_end(299_999, RESOLUTION_5M), 299_999);
        assert_eq!(window_end(300_000, RESOLUTION_5M), 599_999);
        assert_eq!(window_end(3_600_000 + 5, RESOLUTION_1H), 7_199_999);
    }

    #[test]
    fn batches_and_counter_chunks() {
        let mut s = AggrSeries::default();
        s.push(row(10, Some(5.0), Some((3, 2.0)), None));
        s.push(row(20, Some(9.0), None, Some(1.0)));
        s.push(row(30, None, Some((25, 4.0)), Some(4.0)));
        s.check().unwrap();
        assert_eq!(s.batches(), vec![0..2, 2..3]);
        let mut c = Vec::new();
        s.counter_chunk(0..2, &mut c);
        assert_eq!(c, vec![(3, 2.0), (10, 5.0), (20, 9.0), (20, 1.0)]);
        c.clear();
        s.counter_chunk(2..3, &mut c);
        assert_eq!(c, vec![(25, 4.0), (30, 4.0)]);
        assert_eq!(s.batches_overlapping(21, 100), vec![2..3]);
        assert_eq!(s.batches_overlapping(0, 3), vec![0..2]);

        let mut bad = AggrSeries::default();
        bad.push(row(10, None, None, Some(1.0)));
        assert!(bad.check().unwrap_err().contains("outside a batch"));
        let mut bad = AggrSeries::default();
        bad.push(row(10, None, Some((1, 1.0)), None));
        assert!(bad.check().unwrap_err().contains("no counter_end"));
    }

    #[test]
    fn counter_resets_inside_and_between_chunks() {
        // Chunk 1: raw 10 .. 15, a reset to 2 inside (counter aggregate 10, 15, 17), last raw 2.
        // Chunk 2 starts at raw 1: a reset between the chunks (1 < 2).
        let chunks =
            vec![vec![(0, 10.0), (100, 15.0), (200, 17.0), (200, 2.0)], vec![(250, 1.0), (300, 4.0), (300, 4.0)]];
        let mut out = Vec::new();
        let last = apply_counter_resets(&chunks, &mut out);
        assert_eq!(out, vec![(0, 10.0), (100, 15.0), (200, 17.0), (250, 18.0), (300, 21.0)]);
        assert_eq!(last, Some(4.0));
        // No reset between chunks: the second chunk's first raw value 3 >= 2 adds 1.
        let chunks = vec![vec![(0, 1.0), (10, 2.0), (10, 2.0)], vec![(20, 3.0), (30, 5.0), (30, 5.0)]];
        out.clear();
        apply_counter_resets(&chunks, &mut out);
        assert_eq!(out, vec![(0, 1.0), (10, 2.0), (20, 3.0), (30, 5.0)]);
        // NaNs are skipped.
        out.clear();
        apply_counter_resets(&[vec![(0, 1.0), (5, f64::NAN), (10, 3.0)]], &mut out);
        assert_eq!(out, vec![(0, 1.0), (10, 3.0)]);
    }
}
