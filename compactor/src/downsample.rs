//! Downsampling as Thanos does it: 5m blocks from raw blocks spanning at least 40h, 1h blocks from
//! 5m blocks spanning at least 10 days, each series aggregated per window into count, sum, min,
//! max and counter (docs/format.md §4a), written as a new block of the same stream with
//! `aggregates.parquet`.
//!
//! ```text
//!   raw block ──series by series (bounded: runs of series up to a sample budget)──┐
//!      stale markers dropped; windows t - t%R + R - 1; the aggregator of Thanos    │
//!   5m block ──series by series──► 1h: count Σ, sum Σ, min, max per 1h window;     ├─► BlockWriter
//!      counter through ApplyCounterResets across the 5m batches, last per window   │   (meta.json last)
//!                                                                                  ┘
//! ```
//!
//! Which blocks are downsampled ([`plan_downsampling`]) is Thanos's rule: a block is downsampled
//! when some level-1 block among its `compaction.sources` is not yet among the sources of any block
//! of the next resolution, and it is long enough. The new block keeps the source's time range,
//! labels, level and sources, so the next run sees it as done. Nothing is deleted: retention per
//! resolution removes the raw data later.

use std::collections::HashSet;

use engine::aggr::{AggrRow, AggrSeries, CounterResets, RESOLUTION_1H, RESOLUTION_5M, window_end};
use engine::meta::BlockDesc;
use engine::{BlockMeta, BlockReader, BlockWriter, BlockWriterOptions, Bucket};

use crate::error::{Error, Result};
use crate::hooks;
use crate::merge::StopFlag;
use crate::plan::COMPACTOR_SOURCE;

/// Raw blocks spanning at least this long are downsampled to 5m (Thanos's
/// `ResLevel1DownsampleRange`, 40h).
pub const DOWNSAMPLE_RANGE_5M_MS: i64 = 40 * 3_600_000;
/// 5m blocks spanning at least this long are downsampled to 1h (`ResLevel2DownsampleRange`, 10d).
pub const DOWNSAMPLE_RANGE_1H_MS: i64 = 10 * 24 * 3_600_000;

/// Thanos's per-window aggregator (its `aggregator`): count, sum, min, max of the current window
/// and the counter accumulated since the start of the batch.
#[derive(Debug, Clone, Copy)]
struct Aggregator {
    total: u64,
    count: u64,
    sum: f64,
    min: f64,
    max: f64,
    counter: f64,
    last: f64,
}

impl Aggregator {
    fn new() -> Self {
        Aggregator { total: 0, count: 0, sum: 0.0, min: f64::MAX, max: -f64::MAX, counter: 0.0, last: 0.0 }
    }

    /// Starts a new window (the counter goes on).
    fn reset(&mut self) {
        self.count = 0;
        self.sum = 0.0;
        self.min = f64::MAX;
        self.max = -f64::MAX;
    }

    fn add(&mut self, v: f64) {
        if self.total > 0 {
            if v < self.last {
                // A counter reset: the counter grows by the new value.
                self.counter += v;
            } else {
                self.counter += v - self.last;
            }
        } else {
            self.counter = v;
        }
        self.last = v;
        self.sum += v;
        self.count += 1;
        self.total += 1;
        if v < self.min {
            self.min = v;
        }
        if v > self.max {
            self.max = v;
        }
    }
}

/// Thanos's `downsampleBatch`: walks `(t, v)` in time order, calling `emit(window timestamp, the
/// window's aggregator)` at the end of each window; the last window's timestamp is capped at the
/// last input timestamp. Returns that timestamp (None without input).
fn downsample_batch(data: &[(i64, f64)], res: i64, mut emit: impl FnMut(i64, &Aggregator)) -> Option<i64> {
    let last_t = data.last()?.0;
    let mut aggr = Aggregator::new();
    let mut next_t: Option<i64> = None;
    for &(t, v) in data {
        if next_t.is_none_or(|n| t > n) {
            if let Some(n) = next_t {
                emit(n, &aggr);
            }
            aggr.reset();
            next_t = Some(window_end(t, res).min(last_t));
        }
        aggr.add(v);
    }
    if let Some(n) = next_t {
        emit(n, &aggr);
    }
    next_t
}

/// Downsamples one raw series (timestamps increasing) to `res` as one batch: NaN values (stale
/// markers and any other NaN) dropped, as Thanos's `downsampleRawLoop` since v0.33
/// (thanos-io/thanos#6598), then Thanos's aggregates per window; the batch's first and last raw
/// values are kept for the counter. Empty when nothing but NaNs is left.
pub fn downsample_raw(timestamps: &[i64], values: &[f64], res: i64, out: &mut AggrSeries) {
    out.clear();
    let data: Vec<(i64, f64)> =
        timestamps.iter().copied().zip(values.iter().copied()).filter(|&(_, v)| !v.is_nan()).collect();
    let (Some(&first), Some(&last)) = (data.first(), data.last()) else { return };
    downsample_batch(&data, res, |t, a| {
        out.push(AggrRow {
            t,
            count: a.count,
            sum: a.sum,
            min: a.min,
            max: a.max,
            counter: Some(a.counter),
            counter_start: None,
            counter_end: None,
        })
    });
    out.counter_start[0] = Some(first);
    let n = out.len();
    out.counter_end[n - 1] = Some(last.1);
}

/// Downsamples one series of a downsampled block (all of its batches) to the coarser `res` as
/// one batch, as Thanos's `downsampleAggrBatch`: count = sum of counts, sum = sum of sums, min of
/// mins, max of maxes per window; the counter through [`CounterResets`] across the input batches,
/// the last value per window, the first and last raw values kept.
pub fn downsample_aggr(input: &AggrSeries, res: i64, out: &mut AggrSeries) {
    out.clear();
    if input.is_empty() {
        return;
    }
    // count, sum, min, max share the input rows' windows (their values are never stale markers:
    // Thanos drops those before aggregating).
    let last_t = input.timestamps[input.len() - 1];
    let mut i = 0;
    while i < input.len() {
        let w = window_end(input.timestamps[i], res);
        let mut row = AggrRow {
            t: w.min(last_t),
            count: 0,
            sum: 0.0,
            min: f64::MAX,
            max: -f64::MAX,
            counter: None,
            counter_start: None,
            counter_end: None,
        };
        // Thanos sums counts as floats in its aggregator; integers below 2^53 add exactly.
        while i < input.len() && input.timestamps[i] <= w {
            row.count += input.count[i];
            row.sum += input.sum[i];
            if input.min[i] < row.min {
                row.min = input.min[i];
            }
            if input.max[i] > row.max {
                row.max = input.max[i];
            }
            i += 1;
        }
        out.push(row);
    }
    // The counter: Thanos's chunks of each input batch through ApplyCounterResets.
    let mut it = CounterResets::new();
    let mut buf: Vec<(i64, f64)> = Vec::new();
    let mut chunk = Vec::new();
    for b in input.batches() {
        chunk.clear();
        input.counter_chunk(b, &mut chunk);
        for &(t, v) in &chunk {
            if let Some(s) = it.push(t, v) {
                buf.push(s);
            }
        }
    }
    let n = out.len();
    match (buf.first(), it.last_raw_value()) {
        (Some(&first), Some(last_raw)) => {
            out.counter_start[0] = Some(first);
            let mut row = 0;
            downsample_batch(&buf, res, |t, a| {
                let w = window_end(t, res);
                while row < n && window_end(out.timestamps[row], res) < w {
                    row += 1;
                }
                if row < n {
                    out.counter[row] = Some(a.last);
                }
            });
            out.counter_end[n - 1] = Some(last_raw);
        }
        _ => {
            // No counter value at all (only NaNs): the batch markers carry NaN, which readers skip.
            out.counter_start[0] = Some((out.timestamps[0], f64::NAN));
            out.counter_end[n - 1] = Some(f64::NAN);
        }
    }
}

/// A block to downsample and the resolution to make of it.
#[derive(Debug, Clone, PartialEq)]
pub struct DownsampleJob {
    /// The source block.
    pub meta: BlockMeta,
    /// Target resolution (ms): 300000 or 3600000.
    pub resolution: i64,
}

/// Thanos's choice of blocks to downsample among `metas` (complete, not marked, old enough):
/// raw blocks spanning at least 40h whose sources are not all in 5m blocks yet, and 5m blocks
/// spanning at least 10d whose sources are not all in 1h blocks yet. Blocks of other resolutions
/// are left alone.
pub fn plan_downsampling(metas: &[BlockMeta]) -> Vec<DownsampleJob> {
    let mut sources_5m: HashSet<&str> = HashSet::new();
    let mut sources_1h: HashSet<&str> = HashSet::new();
    for m in metas {
        let set = match m.thanos.downsample.resolution {
            RESOLUTION_5M => &mut sources_5m,
            RESOLUTION_1H => &mut sources_1h,
            _ => continue,
        };
        set.extend(m.compaction.sources.iter().map(String::as_str));
    }
    let mut out = Vec::new();
    for m in metas {
        let (done, range, to) = match m.thanos.downsample.resolution {
            0 => (&sources_5m, DOWNSAMPLE_RANGE_5M_MS, RESOLUTION_5M),
            RESOLUTION_5M => (&sources_1h, DOWNSAMPLE_RANGE_1H_MS, RESOLUTION_1H),
            _ => continue,
        };
        let missing = m.compaction.sources.iter().any(|s| !done.contains(s.as_str()));
        if missing && m.max_time - m.min_time >= range {
            out.push(DownsampleJob { meta: m.clone(), resolution: to });
        }
    }
    out.sort_by(|a, b| (a.meta.min_time, &a.meta.ulid).cmp(&(b.meta.min_time, &b.meta.ulid)));
    out
}

/// What a downsampling did.
#[derive(Debug, Clone, PartialEq)]
pub struct DownsampleOutcome {
    /// The new block's meta.json; `None` when the source had nothing to aggregate.
    pub meta: Option<BlockMeta>,
    /// Samples (raw source) or rows (5m source) read.
    pub rows_in: u64,
}

/// Downsamples block `job.meta` into a new block of `job.resolution` (see the module docs).
/// Reads series in runs of at most `budget` samples (one series always whole), so memory does not
/// grow with the block. Stops at the next run when `stop` is set; on any error nothing visible is
/// left (the new block never gets its meta.json).
pub async fn downsample_block(
    bucket: &Bucket,
    job: &DownsampleJob,
    budget: usize,
    stop: &StopFlag,
) -> Result<DownsampleOutcome> {
    let src = &job.meta;
    let reader = BlockReader::open(bucket, &src.ulid)
        .await
        .map_err(|e| Error::engine(format!("opening block {} to downsample", src.ulid), e))?;
    let from = reader.resolution();
    let ok = matches!((from, job.resolution), (0, RESOLUTION_5M) | (RESOLUTION_5M, RESOLUTION_1H));
    if !ok {
        return Err(Error::Config {
            reason: format!("block {}: cannot downsample resolution {from} ms to {} ms", src.ulid, job.resolution),
        });
    }
    let out = BlockWriterOptions {
        ulid: ulid::Ulid::new(),
        min_time: src.min_time,
        max_time: src.max_time,
        external_labels: src.thanos.labels.clone(),
        source: COMPACTOR_SOURCE.into(),
        compaction_level: src.compaction.level,
        compaction_sources: src.compaction.sources.clone(),
        compaction_parents: vec![BlockDesc { ulid: src.ulid.clone(), min_time: src.min_time, max_time: src.max_time }],
        source_ulid: None,
        resolution: job.resolution,
    };
    let ulid = out.ulid.to_string();
    let mut writer =
        BlockWriter::new(bucket.clone(), out).map_err(|e| Error::engine(format!("new block {ulid}"), e))?;
    match write_downsampled(&reader, &mut writer, job.resolution, budget.max(1) as u64, stop).await {
        Ok((rows_in, 0)) => {
            writer.abort().await;
            Ok(DownsampleOutcome { meta: None, rows_in })
        }
        Ok((rows_in, _)) => {
            let meta = writer
                .finish_after(hooks::pause_at(hooks::POINT_DOWNSAMPLE_FILES))
                .await
                .map_err(|e| Error::engine(format!("finishing block {ulid}"), e))?;
            hooks::pause_at(hooks::POINT_DOWNSAMPLED).await;
            Ok(DownsampleOutcome { meta: Some(meta), rows_in })
        }
        Err(e) => {
            writer.abort().await;
            Err(e)
        }
    }
}

/// The series loop of [`downsample_block`]; returns (rows read, rows written).
async fn write_downsampled(
    reader: &BlockReader,
    writer: &mut BlockWriter,
    res: i64,
    budget: u64,
    stop: &StopFlag,
) -> Result<(u64, u64)> {
    let index = reader.index();
    let read_err = |e| Error::engine(format!("reading block {}", reader.ulid()), e);
    let out_ulid = writer.ulid().to_string();
    let write_err = |e| Error::engine(format!("writing block {out_ulid}"), e);
    let (mut rows_in, mut rows_out) = (0u64, 0u64);
    // The crash-test hook pauses once half the series are written.
    let half = index.len().div_ceil(2);
    let mut written = 0usize;
    let mut agg = AggrSeries::default();
    let weight = crate::merge::row_weight(reader.resolution());
    let mut pos = 0usize;
    while pos < index.len() {
        if stop.is_stopped() {
            return Err(Error::Stopped { what: format!("downsampling block {}", reader.ulid()) });
        }
        let mut ids = Vec::new();
        let mut n = 0u64;
        while pos < index.len() && (ids.is_empty() || n + index.num_samples[pos] * weight <= budget) {
            n += index.num_samples[pos] * weight;
            ids.push(pos as u32);
            pos += 1;
        }
        if reader.resolution() == 0 {
            for s in reader.read_samples(&ids, i64::MIN, i64::MAX).await.map_err(read_err)? {
                rows_in += s.timestamps.len() as u64;
                downsample_raw(&s.timestamps, &s.values, res, &mut agg);
                writer.append_aggr_series(&index.labels[s.series_id as usize], &agg).await.map_err(write_err)?;
                rows_out += agg.len() as u64;
                written += 1;
                if written == half {
                    hooks::pause_at(hooks::POINT_DOWNSAMPLE).await;
                }
            }
        } else {
            for (id, s) in reader.read_aggregates(&ids, i64::MIN, i64::MAX).await.map_err(read_err)? {
                rows_in += s.len() as u64;
                downsample_aggr(&s, res, &mut agg);
                writer.append_aggr_series(&index.labels[id as usize], &agg).await.map_err(write_err)?;
                rows_out += agg.len() as u64;
                written += 1;
                if written == half {
                    hooks::pause_at(hooks::POINT_DOWNSAMPLE).await;
                }
            }
        }
    }
    Ok((rows_in, rows_out))
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]
    use super::*;
    use crate::testutil::{STALE, reference_raw, rows};
    use engine::chunkenc::is_stale_nan;

    #[test]
    fn raw_windows_by_hand() {
        // 5m windows: [0, 300000) and [300000, 600000); a reset from 7 to 2 in the second.
        let ts = [1_000, 100_000, 299_999, 300_000, 420_000, 500_000];
        let vs = [1.0, 3.0, 6.0, 7.0, f64::from_bits(STALE), 2.0];
        let mut a = AggrSeries::default();
        downsample_raw(&ts, &vs, RESOLUTION_5M, &mut a);
        assert_eq!(
            rows(&a),
            vec![
                (299_999, 3, 10.0, 1.0, 6.0, 6.0),
                // Last window: timestamp capped at the last sample; counter 6 + 1 + 2 = 9.
                (500_000, 2, 9.0, 2.0, 7.0, 9.0),
            ]
        );
        assert_eq!(a.counter_start, vec![Some((1_000, 1.0)), None]);
        assert_eq!(a.counter_end, vec![None, Some(2.0)]);
        a.check().unwrap();
        // Only stale markers: nothing.
        downsample_raw(&[5], &[f64::from_bits(STALE)], RESOLUTION_5M, &mut a);
        assert!(a.is_empty());
    }

    #[test]
    fn raw_matches_the_reference_on_messy_series() {
        let mut seed = 0x1234_5678_9abc_def0u64;
        let mut rnd = |n: u64| {
            seed ^= seed << 13;
            seed ^= seed >> 7;
            seed ^= seed << 17;
            seed % n
        };
        for case in 0..40 {
            let mut ts = Vec::new();
            let mut vs = Vec::new();
            let mut t = 1_700_000_000_000 + rnd(600_000) as i64;
            let mut v = 0.0;
            for _ in 0..(1 + rnd(900)) {
                t += 1 + rnd(if case % 3 == 0 { 900_000 } else { 30_000 }) as i64;
                v = match rnd(50) {
                    0 => 0.0,                       // reset
                    1 => f64::from_bits(STALE),     // stale marker
                    2 if case % 5 == 0 => f64::NAN, // a NaN value
                    _ if v.is_nan() || is_stale_nan(v) => rnd(10) as f64,
                    _ => v + rnd(100) as f64 * 0.5,
                };
                ts.push(t);
                vs.push(v);
            }
            let mut a = AggrSeries::default();
            downsample_raw(&ts, &vs, RESOLUTION_5M, &mut a);
            if vs.iter().all(|v| v.is_nan()) {
                assert!(a.is_empty());
                continue;
            }
            let want = reference_raw(&ts, &vs, RESOLUTION_5M);
            let got = rows(&a);
            assert_eq!(got.len(), want.len(), "case {case}");
            for (g, w) in got.iter().zip(&want) {
                let same = |x: f64, y: f64| x.to_bits() == y.to_bits() || (x.is_nan() && y.is_nan()) || x == y;
                assert!(g.0 == w.0 && g.1 == w.1 && same(g.3, w.3) && same(g.4, w.4), "case {case}: {g:?} vs {w:?}");
                // Sums and counters: the reference adds in the same order.
                assert!(same(g.2, w.2) && same(g.5, w.5), "case {case}: {g:?} vs {w:?}");
            }
            a.check().unwrap();
        }
    }

    #[test]
    fn one_hour_from_five_minutes_by_hand() {
        // Two 5m batches (as from two compacted 2d blocks): the second starts after a reset.
        let mut a = AggrSeries::default();
        downsample_raw(&[0, 300_000, 3_599_000, 3_700_000], &[5.0, 8.0, 10.0, 12.0], RESOLUTION_5M, &mut a);
        let mut b = AggrSeries::default();
        downsample_raw(&[7_300_000, 7_500_000], &[1.0, 4.0], RESOLUTION_5M, &mut b);
        let mut both = a.clone();
        both.extend_from(&b, 0..b.len());
        both.check().unwrap();
        let mut h = AggrSeries::default();
        downsample_aggr(&both, RESOLUTION_1H, &mut h);
        h.check().unwrap();
        // The second window holds only the 5m row at 3_700_000; it is not the batch's last, so
        // its timestamp is the window end.
        assert_eq!(h.timestamps, vec![3_599_999, 7_199_999, 7_500_000]);
        assert_eq!(h.count, vec![3, 1, 2]);
        assert_eq!(h.sum, vec![23.0, 12.0, 5.0]);
        assert_eq!(h.min, vec![5.0, 12.0, 1.0]);
        assert_eq!(h.max, vec![10.0, 12.0, 4.0]);
        // Raw counter: 5, 8, 10, 12, reset, 1, 4 -> monotonic 5, 8, 10, 12, 13, 16.
        assert_eq!(h.counter, vec![Some(10.0), Some(12.0), Some(16.0)]);
        assert_eq!(h.counter_start[0], Some((0, 5.0)));
        assert_eq!(h.counter_end[2], Some(4.0));
        // Reading the 1h counter chunk gives the same increase as the raw data: 16 - 5 = 11.
        let mut chunk = Vec::new();
        h.counter_chunk(0..h.len(), &mut chunk);
        let mut out = Vec::new();
        engine::aggr::apply_counter_resets(&[chunk], &mut out);
        assert_eq!(out.last().unwrap().1 - out[0].1, 11.0);
    }

    #[test]
    fn plan_follows_thanos_rules() {
        let meta = |id: &str, res: i64, min: i64, max: i64, sources: &[&str]| {
            let mut m = BlockMeta::parse(
                br#"{"ulid":"01HF7YAT00000000000000001A","minTime":0,"maxTime":1,"version":1}"#,
                "test",
            )
            .unwrap();
            m.ulid = id.into();
            m.min_time = min;
            m.max_time = max;
            m.thanos.downsample.resolution = res;
            m.compaction.sources = sources.iter().map(|s| s.to_string()).collect();
            m
        };
        const H: i64 = 3_600_000;
        let metas = vec![
            meta("A", 0, 0, 48 * H, &["a1", "a2"]),       // 2d raw: to 5m
            meta("B", 0, 48 * H, 56 * H, &["b1"]),        // 8h raw: too short
            meta("C", 0, 96 * H, 144 * H, &["c1", "c2"]), // already has its 5m block D
            meta("D", RESOLUTION_5M, 96 * H, 144 * H, &["c1", "c2"]),
            meta("E", RESOLUTION_5M, 0, 14 * 24 * H, &["e1"]), // 14d 5m: to 1h
            meta("F", RESOLUTION_5M, 0, 9 * 24 * H, &["f1"]),  // 9d 5m: too short
        ];
        let jobs: Vec<(String, i64)> =
            plan_downsampling(&metas).into_iter().map(|j| (j.meta.ulid, j.resolution)).collect();
        assert_eq!(jobs, vec![("A".to_string(), RESOLUTION_5M), ("E".to_string(), RESOLUTION_1H)]);
    }
}
