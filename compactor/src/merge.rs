//! The streaming merge: source blocks in, one block out, with memory bounded by a sample budget
//! (not by the size of the blocks).
//!
//! ```text
//!   block 0 series table ─┐   cursors walk each block's series in label order; samples are read
//!   block 1 series table ─┼─► in runs of consecutive series (≤ budget / blocks samples per read)
//!   block k series table ─┘
//!        │ smallest label set first: its samples from every block that has it
//!        ▼
//!   per replica: the blocks' samples by time (equal timestamps once: the earlier block's)
//!        ▼
//!   across replicas: chain (every timestamp once) or penalty (Thanos's dedup)   [vertical only]
//!        ▼
//!   BlockWriter::append_series ──► samples.parquet (row groups as they fill) ... finish: meta.json
//! ```
//!
//! Series ids are re-assigned by the writer (dense, in label order); stale markers and NaNs are
//! values like any other and kept bit for bit. Memory: the series tables of the sources (one row
//! per series), the read-ahead buffers (at most [`MergeOptions::budget_samples`] samples across all
//! blocks, an aggregate row counting as the raw samples its memory holds, but always at least one
//! whole series per block) and the writer's current row group.
//! A single series is always held whole (the writer takes series whole), so one series larger
//! than the budget is read in one go.

use std::collections::VecDeque;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};

use engine::aggr::AggrSeries;
use engine::dedup::{DedupFunc, Replica, chain_merge, merge_replicas};
use engine::reader::SeriesSamples;
use engine::{BlockMeta, BlockReader, BlockWriter, BlockWriterOptions, Bucket, Labels};

use crate::error::{Error, Result};
use crate::hooks;

/// Default sample budget of the read-ahead buffers (about 64 MiB of timestamps and values).
pub const DEFAULT_BUDGET_SAMPLES: usize = 4 << 20;

/// How a merge reads and combines.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct MergeOptions {
    /// How replicas of one series are combined (vertical compaction); within one replica,
    /// equal timestamps always keep the earlier block's sample.
    pub func: DedupFunc,
    /// Samples read ahead across all source blocks.
    pub budget_samples: usize,
}

impl Default for MergeOptions {
    fn default() -> Self {
        MergeOptions { func: DedupFunc::Chain, budget_samples: DEFAULT_BUDGET_SAMPLES }
    }
}

/// One input block and the replica it belongs to (0 when not deduplicating); replicas are
/// combined in their number's order.
#[derive(Debug, Clone, PartialEq)]
pub struct MergeSource {
    /// The block.
    pub meta: BlockMeta,
    /// Replica number.
    pub replica: usize,
}

/// What a merge did.
#[derive(Debug, Clone, PartialEq)]
pub struct MergeOutcome {
    /// The new block's meta.json; `None` when the sources held no sample (nothing was written).
    pub meta: Option<BlockMeta>,
    /// Samples read from the sources.
    pub samples_in: u64,
    /// Series read from the sources (a series in two blocks counts twice).
    pub series_in: u64,
}

/// A flag that asks long work to stop at the next safe point. Cheap to clone; clones share it.
#[derive(Debug, Clone, Default)]
pub struct StopFlag(Arc<(AtomicBool, tokio::sync::Notify)>);

impl StopFlag {
    /// Asks the work to stop and wakes whoever waits in [`StopFlag::stopped`].
    pub fn stop(&self) {
        self.0.0.store(true, Ordering::Release);
        self.0.1.notify_waiters();
    }

    /// True once asked to stop.
    pub fn is_stopped(&self) -> bool {
        self.0.0.load(Ordering::Acquire)
    }

    /// Resolves once asked to stop.
    pub async fn stopped(&self) {
        loop {
            let notified = self.0.1.notified();
            tokio::pin!(notified);
            notified.as_mut().enable();
            if self.is_stopped() {
                return;
            }
            notified.await;
        }
    }
}

/// One series read ahead: raw samples, or the rows of a downsampled block.
enum Piece {
    Raw(SeriesSamples),
    Aggr(u32, AggrSeries),
}

impl Piece {
    fn series_id(&self) -> u32 {
        match self {
            Piece::Raw(s) => s.series_id,
            Piece::Aggr(id, _) => *id,
        }
    }
}

/// One source block walked series by series.
struct Cursor {
    reader: BlockReader,
    replica: usize,
    /// The next series id to hand out.
    pos: usize,
    /// Series `pos..` read ahead (ascending ids; series without samples absent).
    buf: VecDeque<Piece>,
    /// Samples to read ahead at a time.
    budget: u64,
}

impl Cursor {
    fn head(&self) -> Option<&Labels> {
        self.reader.index().labels.get(self.pos)
    }

    /// The samples of series `pos` (`None` if it has none), then moves to the next series.
    async fn take(&mut self) -> Result<Option<Piece>> {
        let pos = self.pos;
        while self.buf.front().is_some_and(|s| (s.series_id() as usize) < pos) {
            self.buf.pop_front();
        }
        if self.buf.is_empty() {
            self.refill().await?;
        }
        self.pos += 1;
        if self.buf.front().is_some_and(|s| s.series_id() as usize == pos) {
            return Ok(self.buf.pop_front());
        }
        Ok(None)
    }

    /// Reads series `pos..` up to the budget (at least one series).
    async fn refill(&mut self) -> Result<()> {
        let index = self.reader.index();
        let weight = row_weight(self.reader.resolution());
        let mut ids = Vec::new();
        let mut n = 0u64;
        let mut i = self.pos;
        while i < index.len() {
            let k = index.num_samples[i] * weight;
            if !ids.is_empty() && n + k > self.budget {
                break;
            }
            ids.push(i as u32);
            n += k;
            i += 1;
        }
        self.buf.clear();
        if ids.is_empty() {
            return Ok(());
        }
        let err = |e| Error::engine(format!("reading block {}", self.reader.ulid()), e);
        if self.reader.resolution() > 0 {
            let got = self.reader.read_aggregates(&ids, i64::MIN, i64::MAX).await.map_err(err)?;
            self.buf.extend(got.into_iter().map(|(id, a)| Piece::Aggr(id, a)));
        } else {
            let got = self.reader.read_samples(&ids, i64::MIN, i64::MAX).await.map_err(err)?;
            self.buf.extend(got.into_iter().map(Piece::Raw));
        }
        Ok(())
    }
}

/// What one row of a block of `resolution` weighs against the sample budget: 1 for a raw sample
/// (16 bytes in memory), the aggregate row's size in raw samples for a downsampled block (an
/// [`AggrSeries`] row holds eight columns), so a budget bounds bytes whatever the resolution.
pub(crate) fn row_weight(resolution: i64) -> u64 {
    if resolution > 0 { AggrSeries::ROW_BYTES.div_ceil(16) as u64 } else { 1 }
}

/// Appends the union of `tracks` (each sorted by time) to `out`; on equal timestamps the earlier
/// track's sample is kept. Tracks that follow each other in time are simply concatenated.
fn union(tracks: &[Replica<'_>], out_t: &mut Vec<i64>, out_v: &mut Vec<f64>) {
    let disjoint = tracks.windows(2).all(|w| match (w[0].0.last(), w[1].0.first()) {
        (Some(a), Some(b)) => a < b,
        _ => true,
    });
    if disjoint {
        for (t, v) in tracks {
            out_t.extend_from_slice(t);
            out_v.extend_from_slice(v);
        }
    } else {
        chain_merge(tracks, out_t, out_v);
    }
}

/// Merges `sources` into one new block described by `out` (see the module docs). Sources are
/// combined in the order given within a replica (put them in `(minTime, ULID)` order: on equal
/// timestamps the earlier one's sample is kept, as the bucket's readers do). Stops at the next
/// series when `stop` is set, aborting the upload. On any error nothing visible is left: the
/// new block never gets its `meta.json`.
pub async fn merge_blocks(
    bucket: &Bucket,
    sources: &[MergeSource],
    out: BlockWriterOptions,
    opts: &MergeOptions,
    stop: &StopFlag,
) -> Result<MergeOutcome> {
    let ulid = out.ulid.to_string();
    let budget = (opts.budget_samples / sources.len().max(1)).max(1) as u64;
    let mut cursors = Vec::with_capacity(sources.len());
    let mut total_series = 0usize;
    for s in sources {
        let reader = BlockReader::open(bucket, &s.meta.ulid)
            .await
            .map_err(|e| Error::engine(format!("opening block {}", s.meta.ulid), e))?;
        total_series += reader.index().len();
        cursors.push(Cursor { reader, replica: s.replica, pos: 0, buf: VecDeque::new(), budget });
    }
    let replicas = sources.iter().map(|s| s.replica).max().map_or(1, |m| m + 1);
    let aggregated = out.resolution > 0;
    if let Some(c) = cursors.iter().find(|c| c.reader.resolution() != out.resolution) {
        return Err(Error::Config {
            reason: format!(
                "block {} of resolution {} ms cannot go into a block of resolution {} ms",
                c.reader.ulid(),
                c.reader.resolution(),
                out.resolution
            ),
        });
    }
    let mut writer =
        BlockWriter::new(bucket.clone(), out).map_err(|e| Error::engine(format!("new block {ulid}"), e))?;
    let res = if aggregated {
        merge_aggr_into(&mut cursors, &mut writer, stop, total_series).await
    } else {
        merge_into(&mut cursors, replicas, &mut writer, opts, stop, total_series).await
    };
    let (samples_in, series_in, samples_out) = match res {
        Ok(counts) => counts,
        Err(e) => {
            writer.abort().await;
            return Err(e);
        }
    };
    if samples_out == 0 {
        writer.abort().await;
        return Ok(MergeOutcome { meta: None, samples_in, series_in });
    }
    let meta = writer.finish().await.map_err(|e| Error::engine(format!("finishing block {ulid}"), e))?;
    Ok(MergeOutcome { meta: Some(meta), samples_in, series_in })
}

/// The merge loop; returns (samples in, series in, samples out).
async fn merge_into(
    cursors: &mut [Cursor],
    replicas: usize,
    writer: &mut BlockWriter,
    opts: &MergeOptions,
    stop: &StopFlag,
    total_series: usize,
) -> Result<(u64, u64, u64)> {
    let (mut samples_in, mut series_in, mut samples_out) = (0u64, 0u64, 0u64);
    let mut series_done = 0usize;
    let mut paused = false;
    // Per replica: the pieces of the current series, in source order.
    let mut pieces: Vec<Vec<SeriesSamples>> = (0..replicas).map(|_| Vec::new()).collect();
    let (mut rep_t, mut rep_v): (Vec<Vec<i64>>, Vec<Vec<f64>>) =
        (vec![Vec::new(); replicas], vec![Vec::new(); replicas]);
    let (mut ts, mut vs): (Vec<i64>, Vec<f64>) = (Vec::new(), Vec::new());
    loop {
        if stop.is_stopped() {
            return Err(Error::Stopped { what: format!("writing block {}", writer.ulid()) });
        }
        let Some(min) = cursors.iter().filter_map(Cursor::head).min().cloned() else { break };
        for p in &mut pieces {
            p.clear();
        }
        for c in cursors.iter_mut() {
            if c.head() != Some(&min) {
                continue;
            }
            series_done += 1;
            if let Some(Piece::Raw(s)) = c.take().await? {
                samples_in += s.timestamps.len() as u64;
                series_in += 1;
                pieces[c.replica].push(s);
            }
        }
        ts.clear();
        vs.clear();
        if replicas == 1 {
            let tracks: Vec<Replica<'_>> =
                pieces[0].iter().map(|s| (s.timestamps.as_slice(), s.values.as_slice())).collect();
            union(&tracks, &mut ts, &mut vs);
        } else {
            for (r, p) in pieces.iter().enumerate() {
                rep_t[r].clear();
                rep_v[r].clear();
                let tracks: Vec<Replica<'_>> =
                    p.iter().map(|s| (s.timestamps.as_slice(), s.values.as_slice())).collect();
                union(&tracks, &mut rep_t[r], &mut rep_v[r]);
            }
            let tracks: Vec<Replica<'_>> = rep_t
                .iter()
                .zip(&rep_v)
                .filter(|(t, _)| !t.is_empty())
                .map(|(t, v)| (t.as_slice(), v.as_slice()))
                .collect();
            // Thanos's compactor merges replicas without the counter adjustment.
            merge_replicas(opts.func, &tracks, false, &mut ts, &mut vs);
        }
        writer
            .append_series(&min, &ts, &vs)
            .await
            .map_err(|e| Error::engine(format!("writing block {}", writer.ulid()), e))?;
        samples_out += ts.len() as u64;
        if !paused && series_done * 2 >= total_series {
            paused = true;
            hooks::pause_at(hooks::POINT_MERGE).await;
        }
    }
    Ok((samples_in, series_in, samples_out))
}

/// The merge loop of downsampled blocks; returns (rows in, series in, rows out). A series'
/// batches (docs/format.md §4a) are taken whole, by their first timestamp; a batch overlapping
/// one already taken (replicas, overlapping blocks) is left out, so every window is once in the
/// output and counter batches stay intact.
async fn merge_aggr_into(
    cursors: &mut [Cursor],
    writer: &mut BlockWriter,
    stop: &StopFlag,
    total_series: usize,
) -> Result<(u64, u64, u64)> {
    let (mut rows_in, mut series_in, mut rows_out) = (0u64, 0u64, 0u64);
    let mut series_done = 0usize;
    let mut paused = false;
    let mut pieces: Vec<AggrSeries> = Vec::new();
    let mut out = AggrSeries::default();
    loop {
        if stop.is_stopped() {
            return Err(Error::Stopped { what: format!("writing block {}", writer.ulid()) });
        }
        let Some(min) = cursors.iter().filter_map(Cursor::head).min().cloned() else { break };
        pieces.clear();
        for c in cursors.iter_mut() {
            if c.head() != Some(&min) {
                continue;
            }
            series_done += 1;
            if let Some(Piece::Aggr(_, a)) = c.take().await? {
                rows_in += a.len() as u64;
                series_in += 1;
                pieces.push(a);
            }
        }
        // (first timestamp, last timestamp, piece, rows) of every batch, earlier source first on ties.
        let mut batches: Vec<(i64, i64, usize, std::ops::Range<usize>)> = Vec::new();
        for (p, a) in pieces.iter().enumerate() {
            for r in a.batches() {
                batches.push((a.timestamps[r.start], a.timestamps[r.end - 1], p, r));
            }
        }
        batches.sort_by_key(|b| (b.0, b.2));
        out.clear();
        let mut end = i64::MIN;
        for (first, last, p, r) in batches {
            if !out.is_empty() && first <= end {
                continue;
            }
            out.extend_from(&pieces[p], r);
            end = last;
        }
        writer
            .append_aggr_series(&min, &out)
            .await
            .map_err(|e| Error::engine(format!("writing block {}", writer.ulid()), e))?;
        rows_out += out.len() as u64;
        if !paused && series_done * 2 >= total_series {
            paused = true;
            hooks::pause_at(hooks::POINT_MERGE).await;
        }
    }
    Ok((rows_in, series_in, rows_out))
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]
    use super::*;

    #[test]
    fn union_keeps_the_earlier_track_on_equal_timestamps() {
        let (a_t, a_v) = (vec![1, 2, 3], vec![1.0, 2.0, 3.0]);
        let (b_t, b_v) = (vec![3, 4], vec![30.0, 4.0]);
        let (mut t, mut v) = (Vec::new(), Vec::new());
        union(&[(&a_t, &a_v), (&b_t, &b_v)], &mut t, &mut v);
        assert_eq!((t, v), (vec![1, 2, 3, 4], vec![1.0, 2.0, 3.0, 4.0]));
        let (c_t, c_v) = (vec![5, 6], vec![5.0, 6.0]);
        let (mut t, mut v) = (Vec::new(), Vec::new());
        union(&[(&a_t, &a_v), (&c_t, &c_v)], &mut t, &mut v);
        assert_eq!(t, vec![1, 2, 3, 5, 6]);
    }
}
