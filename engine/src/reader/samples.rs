//! Sample reads of a [`BlockReader`]: series row ranges pruned by the timestamp page index, rows
//! read with a Parquet `RowSelection`, through the [`PageCache`] when one is attached.

use std::collections::HashMap;
use std::ops::Range;
use std::sync::Arc;

use arrow::array::{Array, AsArray};
use arrow::datatypes::{Float64Type, Int64Type, UInt64Type};
use futures::TryStreamExt;
use parquet::arrow::ProjectionMask;
use parquet::arrow::arrow_reader::RowSelection;
use parquet::arrow::async_reader::{ParquetRecordBatchStream, ParquetRecordBatchStreamBuilder};
use parquet::file::metadata::ParquetMetaData;

use super::BlockReader;
use super::object_reader::ObjectReader;
use super::page_cache::{DecodedPage, PageCache};
use crate::aggr::{AggrSeries, Aggregate};
use crate::error::{Error, Result};
use crate::format;

/// Decoded pages by index into `ts_pages`.
type CachedPages = HashMap<usize, Arc<DecodedPage>>;

/// One data page of the `timestamp` column.
#[derive(Debug, Clone, Copy, PartialEq)]
pub(super) struct TsPage {
    start: usize,
    end: usize,
    min: Option<i64>,
    max: Option<i64>,
}

/// Pages of the timestamp column from the page index (empty when the file has none).
pub(super) fn timestamp_pages(md: &ParquetMetaData) -> Vec<TsPage> {
    let (Some(offsets), Some(cols)) = (md.offset_index(), md.column_index()) else { return Vec::new() };
    let Some(ts_col) =
        md.file_metadata().schema_descr().columns().iter().position(|c| c.name() == format::COL_TIMESTAMP)
    else {
        return Vec::new();
    };
    let mut out = Vec::new();
    let mut rg_start = 0usize;
    for (rg, rgm) in md.row_groups().iter().enumerate() {
        let rows = rgm.num_rows() as usize;
        let (Some(oi), Some(ci)) =
            (offsets.get(rg).and_then(|c| c.get(ts_col)), cols.get(rg).and_then(|c| c.get(ts_col)))
        else {
            return Vec::new();
        };
        let locs = oi.page_locations();
        for (p, loc) in locs.iter().enumerate() {
            let start = rg_start + loc.first_row_index as usize;
            let end = locs.get(p + 1).map_or(rg_start + rows, |n| rg_start + n.first_row_index as usize);
            let (min, max) = match ci {
                parquet::file::page_index::column_index::ColumnIndexMetaData::INT64(ix) => {
                    (ix.min_value(p).copied(), ix.max_value(p).copied())
                }
                _ => (None, None),
            };
            out.push(TsPage { start, end, min, max });
        }
        rg_start += rows;
    }
    out
}

/// Samples of one series as read from a block.
#[derive(Debug, Clone, PartialEq)]
pub struct SeriesSamples {
    /// The series id inside the block.
    pub series_id: u32,
    /// Timestamps (ms), ascending.
    pub timestamps: Vec<i64>,
    /// Values, bit-exact as written.
    pub values: Vec<f64>,
}

impl BlockReader {
    /// Rows of series `i` in samples.parquet, without the pages that lie wholly inside the series
    /// and hold only timestamps outside `[min_t, max_t]`.
    fn series_ranges(&self, i: usize, min_t: i64, max_t: i64) -> Vec<Range<usize>> {
        let a = self.index.first_row[i] as usize;
        let b = a + self.index.num_samples[i] as usize;
        let mut out: Vec<Range<usize>> = Vec::new();
        let mut push = |r: Range<usize>| match out.last_mut() {
            Some(last) if last.end == r.start => last.end = r.end,
            _ => out.push(r),
        };
        if self.ts_pages.is_empty() {
            push(a..b);
            return out;
        }
        let first = self.ts_pages.partition_point(|p| p.end <= a);
        for p in self.ts_pages[first..].iter().take_while(|p| p.start < b) {
            let inside = p.start >= a && p.end <= b;
            let outside = matches!((p.min, p.max), (Some(lo), Some(hi)) if hi < min_t || lo > max_t);
            if inside && outside {
                continue;
            }
            push(p.start.max(a)..p.end.min(b));
        }
        out
    }

    /// Reads the samples of `ids` (any order; duplicates ignored) restricted to `[min_t, max_t]`.
    /// Returns one entry per id, ascending by id; series without samples in range are left out.
    ///
    /// With a [`PageCache`] attached, whole timestamp pages are decoded once and later reads copy
    /// from the cache; without one, only the selected rows are decoded.
    pub async fn read_samples(&self, ids: &[u32], min_t: i64, max_t: i64) -> Result<Vec<SeriesSamples>> {
        let mut ids: Vec<u32> = ids.to_vec();
        ids.sort_unstable();
        ids.dedup();
        let path = &self.samples_path;
        let bad = |reason: String| Error::BadBlockFile { path: path.to_string(), reason };
        if self.resolution() > 0 {
            return Err(bad(format!(
                "block of resolution {} ms holds aggregates, not raw samples (read_aggregates)",
                self.resolution()
            )));
        }
        if let Some(&i) = ids.iter().find(|&&i| i as usize >= self.index.len()) {
            return Err(bad(format!("series_id {i} is not in the block ({} series)", self.index.len())));
        }
        ids.retain(|&i| self.index.min_time[i as usize] <= max_t && self.index.max_time[i as usize] >= min_t);
        if ids.is_empty() {
            return Ok(Vec::new());
        }
        // Row ranges of each series minus pages wholly outside the time range.
        let per_series: Vec<(u32, Vec<Range<usize>>)> = ids
            .iter()
            .map(|&i| (i, self.series_ranges(i as usize, min_t, max_t)))
            .filter(|(_, r)| !r.is_empty())
            .collect();
        if per_series.is_empty() {
            return Ok(Vec::new());
        }
        let total_rows = self.total_rows();
        if let Some(end) = per_series.iter().filter_map(|s| s.1.last()).map(|r| r.end).max()
            && end > total_rows
        {
            return Err(bad(format!("series rows end at {end} but the file has {total_rows} rows")));
        }
        let cut = |t: &[i64], v: &[f64], i: u32, out: &mut Vec<SeriesSamples>| {
            let a = t.partition_point(|&x| x < min_t);
            let b = t.partition_point(|&x| x <= max_t);
            if a < b {
                out.push(SeriesSamples { series_id: i, timestamps: t[a..b].to_vec(), values: v[a..b].to_vec() });
            }
        };
        let mut out = Vec::with_capacity(per_series.len());
        match &self.cache {
            Some(cache) if !self.ts_pages.is_empty() => {
                let pages = self.cached_pages(cache, &per_series).await?;
                let (mut t, mut v): (Vec<i64>, Vec<f64>) = (Vec::new(), Vec::new());
                for (i, ranges) in &per_series {
                    t.clear();
                    v.clear();
                    for r in ranges {
                        let first = self.ts_pages.partition_point(|p| p.end <= r.start);
                        for (p, page) in self.ts_pages[first..].iter().enumerate().take_while(|(_, p)| p.start < r.end)
                        {
                            let Some(d) = pages.get(&(first + p)) else {
                                return Err(bad(format!("page {} of rows {r:?} was not read", first + p)));
                            };
                            let (a, b) = (r.start.max(page.start) - page.start, r.end.min(page.end) - page.start);
                            t.extend_from_slice(&d.ts[a..b]);
                            v.extend_from_slice(&d.vs[a..b]);
                        }
                    }
                    cut(&t, &v, *i, &mut out);
                }
            }
            _ => {
                let mut ranges: Vec<Range<usize>> = Vec::new();
                for r in per_series.iter().flat_map(|s| s.1.iter()) {
                    match ranges.last_mut() {
                        Some(last) if last.end == r.start => last.end = r.end,
                        _ => ranges.push(r.clone()),
                    }
                }
                let (ts, vs) = self.read_rows(&ranges).await?;
                let mut at = 0usize;
                for (i, r) in &per_series {
                    let n: usize = r.iter().map(|r| r.len()).sum();
                    cut(&ts[at..at + n], &vs[at..at + n], *i, &mut out);
                    at += n;
                }
            }
        }
        Ok(out)
    }

    /// Reads the rows of `ids` (any order; duplicates ignored) of a downsampled block, keeping the
    /// whole batches (docs/format.md §4a) that overlap `[min_t, max_t]`. Returns one entry per
    /// id, ascending; series without such a batch are left out.
    pub async fn read_aggregates(&self, ids: &[u32], min_t: i64, max_t: i64) -> Result<Vec<(u32, AggrSeries)>> {
        self.read_aggregates_of(ids, min_t, max_t, &Aggregate::ALL).await
    }

    /// Like [`BlockReader::read_aggregates`], decoding only the columns of `aggregates` besides
    /// the timestamps and batch markers (`counter_start*`, `counter_end`): the columns of the
    /// other aggregates hold zeros (`count`, `sum`, `min`, `max`) or `None` (`counter`). For
    /// readers that use only some aggregates (a PromQL function reads one or two).
    pub async fn read_aggregates_of(
        &self,
        ids: &[u32],
        min_t: i64,
        max_t: i64,
        aggregates: &[Aggregate],
    ) -> Result<Vec<(u32, AggrSeries)>> {
        let mut ids: Vec<u32> = ids.to_vec();
        ids.sort_unstable();
        ids.dedup();
        let path = &self.samples_path;
        let bad = |reason: String| Error::BadBlockFile { path: path.to_string(), reason };
        if self.resolution() <= 0 {
            return Err(bad("a raw block holds samples, not aggregates (read_samples)".into()));
        }
        if let Some(&i) = ids.iter().find(|&&i| i as usize >= self.index.len()) {
            return Err(bad(format!("series_id {i} is not in the block ({} series)", self.index.len())));
        }
        ids.retain(|&i| self.index.min_time[i as usize] <= max_t && self.index.max_time[i as usize] >= min_t);
        if ids.is_empty() {
            return Ok(Vec::new());
        }
        let total_rows = self.total_rows();
        let mut ranges: Vec<Range<usize>> = Vec::new();
        for &i in &ids {
            let a = self.index.first_row[i as usize] as usize;
            let r = a..a + self.index.num_samples[i as usize] as usize;
            if r.end > total_rows {
                return Err(bad(format!("series rows end at {} but the file has {total_rows} rows", r.end)));
            }
            match ranges.last_mut() {
                Some(last) if last.end == r.start => last.end = r.end,
                _ => ranges.push(r),
            }
        }
        let sizes: Vec<usize> = ids.iter().map(|&i| self.index.num_samples[i as usize] as usize).collect();
        let all = match &self.cache {
            Some(cache) if !self.ts_pages.is_empty() => self.cached_aggr_rows(cache, &ranges, &sizes).await?,
            _ => self.read_aggr_rows(&ranges, &sizes, aggregates).await?,
        };
        let mut out = Vec::with_capacity(ids.len());
        for (&i, one) in ids.iter().zip(all) {
            one.check().map_err(|e| bad(format!("series_id {i}: {e}")))?;
            let keep = one.batches_overlapping(min_t, max_t);
            if keep.is_empty() {
                continue;
            }
            if keep.len() == one.batches().len() {
                out.push((i, one));
                continue;
            }
            let mut cut = AggrSeries::default();
            for r in keep {
                cut.extend_from(&one, r);
            }
            out.push((i, cut));
        }
        Ok(out)
    }

    /// The rows of `ranges` (ascending, non-adjacent global row ranges) of `aggregates.parquet`,
    /// cut into consecutive series of `sizes` rows (their sum is the rows of `ranges`), decoding
    /// the columns of `aggregates` only (see [`BlockReader::read_aggregates_of`]). Record
    /// batches are converted as they are decoded, so only one is held beside the result.
    async fn read_aggr_rows(
        &self,
        ranges: &[Range<usize>],
        sizes: &[usize],
        aggregates: &[Aggregate],
    ) -> Result<Vec<AggrSeries>> {
        let path = &self.samples_path;
        let bad = |reason: String| Error::BadBlockFile { path: path.to_string(), reason };
        let want = |a: Aggregate| aggregates.contains(&a);
        let mut columns = vec![format::COL_TIMESTAMP, format::COL_COUNTER_START_TS, format::COL_COUNTER_START];
        columns.push(format::COL_COUNTER_END);
        for (a, c) in [
            (Aggregate::Count, format::COL_COUNT),
            (Aggregate::Sum, format::COL_SUM),
            (Aggregate::Min, format::COL_MIN),
            (Aggregate::Max, format::COL_MAX),
            (Aggregate::Counter, format::COL_COUNTER),
        ] {
            if want(a) {
                columns.push(c);
            }
        }
        let mut stream = self.row_stream(ranges, &columns)?;
        let mut out: Vec<AggrSeries> = Vec::with_capacity(sizes.len());
        // The series being filled (index into `sizes`) and the rows it still lacks.
        let mut cur = AggrSeries::default();
        let mut next = 0usize;
        let mut lacking = 0usize;
        let mut read = 0usize;
        while let Some(b) = stream.try_next().await.map_err(|e| Error::parquet(path, e))? {
            let f = |name: &str| b.column_by_name(name).and_then(|c| c.as_primitive_opt::<Float64Type>());
            let i = |name: &str| b.column_by_name(name).and_then(|c| c.as_primitive_opt::<Int64Type>());
            let (Some(t), Some(st), Some(sv), Some(end)) = (
                i(format::COL_TIMESTAMP),
                i(format::COL_COUNTER_START_TS),
                f(format::COL_COUNTER_START),
                f(format::COL_COUNTER_END),
            ) else {
                return Err(bad("aggregate columns are missing or have wrong types".into()));
            };
            // An aggregate asked for: its column, which must be there; otherwise None.
            let opt = |a: Aggregate, c: Option<&arrow::array::PrimitiveArray<Float64Type>>| match (want(a), c) {
                (true, None) => Err(bad(format!("aggregate column {a:?} is missing or has a wrong type"))),
                (true, c) => Ok(c.cloned()),
                (false, _) => Ok(None),
            };
            let count = match (want(Aggregate::Count), b.column_by_name(format::COL_COUNT)) {
                (false, _) => None,
                (true, c) => match c.and_then(|c| c.as_primitive_opt::<UInt64Type>()) {
                    Some(c) => Some(c),
                    None => return Err(bad("aggregate column Count is missing or has a wrong type".into())),
                },
            };
            let sum = opt(Aggregate::Sum, f(format::COL_SUM))?;
            let min = opt(Aggregate::Min, f(format::COL_MIN))?;
            let max = opt(Aggregate::Max, f(format::COL_MAX))?;
            let counter = opt(Aggregate::Counter, f(format::COL_COUNTER))?;
            read += b.num_rows();
            let mut at = 0usize;
            while at < b.num_rows() {
                while lacking == 0 {
                    if next > 0 {
                        out.push(std::mem::take(&mut cur));
                    }
                    let Some(&n) = sizes.get(next) else {
                        return Err(bad(format!(
                            "read more aggregate rows than the {} expected",
                            sizes.iter().sum::<usize>()
                        )));
                    };
                    cur.reserve(n);
                    lacking = n;
                    next += 1;
                }
                let r = at..(at + lacking).min(b.num_rows());
                let len = cur.timestamps.len() + r.len();
                cur.timestamps.extend_from_slice(&t.values()[r.clone()]);
                match count {
                    Some(c) => cur.count.extend_from_slice(&c.values()[r.clone()]),
                    None => cur.count.resize(len, 0),
                }
                for (col, src) in [(&mut cur.sum, &sum), (&mut cur.min, &min), (&mut cur.max, &max)] {
                    match src {
                        Some(c) => col.extend_from_slice(&c.values()[r.clone()]),
                        None => col.resize(len, 0.0),
                    }
                }
                match &counter {
                    Some(c) if c.null_count() == 0 => {
                        cur.counter.extend(c.values()[r.clone()].iter().map(|&v| Some(v)))
                    }
                    Some(c) => cur.counter.extend(r.clone().map(|k| c.is_valid(k).then(|| c.value(k)))),
                    None => cur.counter.resize(len, None),
                }
                for k in r.clone() {
                    cur.counter_start.push(match (st.is_valid(k), sv.is_valid(k)) {
                        (true, true) => Some((st.value(k), sv.value(k))),
                        (false, false) => None,
                        _ => return Err(bad("counter_start_ts and counter_start are not set together".into())),
                    });
                    cur.counter_end.push(end.is_valid(k).then(|| end.value(k)));
                }
                lacking -= r.len();
                at = r.end;
            }
        }
        if next > 0 {
            out.push(cur);
        }
        // Series of no rows after the last row read.
        out.extend(sizes.iter().skip(next).filter(|&&n| n == 0).map(|_| AggrSeries::default()));
        let want: usize = ranges.iter().map(|r| r.len()).sum();
        if read != want || out.len() != sizes.len() || lacking != 0 {
            return Err(bad(format!("read {read} aggregate rows, expected {want}")));
        }
        Ok(out)
    }

    /// Like [`BlockReader::read_aggr_rows`] (every column), through the page cache: the pages of
    /// `aggregates.parquet` that `ranges` touch are decoded whole once (all columns) and later
    /// reads copy from the cache.
    async fn cached_aggr_rows(
        &self,
        cache: &PageCache,
        ranges: &[Range<usize>],
        sizes: &[usize],
    ) -> Result<Vec<AggrSeries>> {
        let path = &self.samples_path;
        let bad = |reason: String| Error::BadBlockFile { path: path.to_string(), reason };
        let (mut got, missing, page_ranges) = self.pages_in_cache(cache, ranges.iter());
        if !missing.is_empty() {
            let lens: Vec<usize> = missing.iter().map(|&p| self.ts_pages[p].end - self.ts_pages[p].start).collect();
            let pages = self.read_aggr_rows(&page_ranges, &lens, &Aggregate::ALL).await?;
            for (p, aggr) in missing.into_iter().zip(pages) {
                let d = Arc::new(DecodedPage { aggr, ..Default::default() });
                cache.insert(self.cache_id, p, Arc::clone(&d));
                got.insert(p, d);
            }
        }
        // Cut the rows of `ranges` into series of `sizes` rows, copying from the pages.
        let mut out: Vec<AggrSeries> = Vec::with_capacity(sizes.len());
        let mut sizes_it = sizes.iter();
        let mut cur = AggrSeries::default();
        let mut lacking = 0usize;
        let mut started = false;
        let mut next_size = |cur: &mut AggrSeries, out: &mut Vec<AggrSeries>, started: &mut bool| {
            if *started {
                out.push(std::mem::take(cur));
            }
            *started = true;
            sizes_it.next().copied()
        };
        for r in ranges {
            let mut at = r.start;
            while at < r.end {
                while lacking == 0 {
                    let Some(n) = next_size(&mut cur, &mut out, &mut started) else {
                        return Err(bad(format!(
                            "row ranges hold more than the {} rows of the series",
                            sizes.iter().sum::<usize>()
                        )));
                    };
                    cur.reserve(n);
                    lacking = n;
                }
                let p = self.ts_pages.partition_point(|p| p.end <= at);
                let (Some(page), Some(d)) = (self.ts_pages.get(p), got.get(&p)) else {
                    return Err(bad(format!("page of row {at} was not read")));
                };
                let end = r.end.min(page.end).min(at + lacking);
                if d.aggr.len() != page.end - page.start {
                    return Err(bad(format!(
                        "page of rows {}..{} decoded {} rows",
                        page.start,
                        page.end,
                        d.aggr.len()
                    )));
                }
                cur.extend_from(&d.aggr, at - page.start..end - page.start);
                lacking -= end - at;
                at = end;
            }
        }
        if started {
            out.push(cur);
        }
        // Series of no rows after the last row.
        out.extend(sizes_it.filter(|&&n| n == 0).map(|_| AggrSeries::default()));
        if out.len() != sizes.len() || lacking != 0 {
            return Err(bad(format!("cut {} series of the {} expected", out.len(), sizes.len())));
        }
        Ok(out)
    }

    /// The pages (by index into `ts_pages`) that `ranges` (ascending row ranges) touch: those in
    /// the cache, the missing ones, and the row ranges of the missing ones (adjacent pages joined).
    fn pages_in_cache<'a>(
        &self,
        cache: &PageCache,
        ranges: impl Iterator<Item = &'a Range<usize>>,
    ) -> (CachedPages, Vec<usize>, Vec<Range<usize>>) {
        let mut wanted: Vec<usize> = Vec::new();
        for r in ranges {
            let first = self.ts_pages.partition_point(|p| p.end <= r.start);
            for p in (first..self.ts_pages.len()).take_while(|&p| self.ts_pages[p].start < r.end) {
                if wanted.last() != Some(&p) {
                    wanted.push(p);
                }
            }
        }
        wanted.dedup();
        let mut got = HashMap::with_capacity(wanted.len());
        let mut missing = Vec::new();
        for p in wanted {
            match cache.get(self.cache_id, p) {
                Some(d) => {
                    got.insert(p, d);
                }
                None => missing.push(p),
            }
        }
        let mut missing_ranges: Vec<Range<usize>> = Vec::new();
        for &p in &missing {
            let r = self.ts_pages[p].start..self.ts_pages[p].end;
            match missing_ranges.last_mut() {
                Some(last) if last.end == r.start => last.end = r.end,
                _ => missing_ranges.push(r),
            }
        }
        (got, missing, missing_ranges)
    }

    fn total_rows(&self) -> usize {
        self.samples_meta.metadata().row_groups().iter().map(|rg| rg.num_rows() as usize).sum()
    }

    /// The decoded timestamp pages (by index into `ts_pages`) that `per_series` touches: from the
    /// cache, the missing ones read in one pass and added to it.
    async fn cached_pages(
        &self,
        cache: &PageCache,
        per_series: &[(u32, Vec<Range<usize>>)],
    ) -> Result<HashMap<usize, Arc<DecodedPage>>> {
        let (mut got, missing, ranges) = self.pages_in_cache(cache, per_series.iter().flat_map(|s| s.1.iter()));
        if missing.is_empty() {
            return Ok(got);
        }
        let (ts, vs) = self.read_rows(&ranges).await?;
        let mut at = 0usize;
        for p in missing {
            let n = self.ts_pages[p].end - self.ts_pages[p].start;
            let d = Arc::new(DecodedPage {
                ts: ts[at..at + n].to_vec(),
                vs: vs[at..at + n].to_vec(),
                ..Default::default()
            });
            at += n;
            cache.insert(self.cache_id, p, Arc::clone(&d));
            got.insert(p, d);
        }
        Ok(got)
    }

    /// A stream of the rows of `ranges` (ascending, non-adjacent global row ranges) of the samples
    /// file, decoding `columns` only, in batches of 64 Ki rows.
    fn row_stream(&self, ranges: &[Range<usize>], columns: &[&str]) -> Result<ParquetRecordBatchStream<ObjectReader>> {
        let path = &self.samples_path;
        let md = self.samples_meta.metadata();
        let (groups, selection) = row_group_selection(md, ranges);
        let reader = ObjectReader::new(self.bucket.store(), path, self.samples_size);
        let mask = ProjectionMask::columns(md.file_metadata().schema_descr(), columns.iter().copied());
        ParquetRecordBatchStreamBuilder::new_with_metadata(reader, self.samples_meta.clone())
            .with_row_groups(groups)
            .with_row_selection(selection)
            .with_projection(mask)
            .with_batch_size(64 * 1024)
            .build()
            .map_err(|e| Error::parquet(path, e))
    }

    /// Timestamps and values of the given ascending, non-adjacent global row ranges, in order.
    async fn read_rows(&self, ranges: &[Range<usize>]) -> Result<(Vec<i64>, Vec<f64>)> {
        let path = &self.samples_path;
        let bad = |reason: String| Error::BadBlockFile { path: path.to_string(), reason };
        let v2 = self.format_version >= 2;
        let columns: &[&str] = if v2 {
            &[format::COL_TIMESTAMP, format::COL_VALUE, format::COL_VALUE_INT, format::COL_VALUE_SCALE]
        } else {
            &[format::COL_TIMESTAMP, format::COL_VALUE]
        };
        let mut stream = self.row_stream(ranges, columns)?;
        let want: usize = ranges.iter().map(|r| r.len()).sum();
        let (mut ts, mut vs): (Vec<i64>, Vec<f64>) = (Vec::with_capacity(want), Vec::with_capacity(want));
        // Batches converted as they are decoded: one held at a time.
        while let Some(b) = stream.try_next().await.map_err(|e| Error::parquet(path, e))? {
            let t = b.column_by_name(format::COL_TIMESTAMP).and_then(|c| c.as_primitive_opt::<Int64Type>());
            let v = b.column_by_name(format::COL_VALUE).and_then(|c| c.as_primitive_opt::<Float64Type>());
            let (Some(t), Some(v)) = (t, v) else { return Err(bad("timestamp/value columns have wrong types".into())) };
            ts.extend_from_slice(t.values());
            if v2 {
                let i = b.column_by_name(format::COL_VALUE_INT).and_then(|c| c.as_primitive_opt::<Int64Type>());
                let s = b.column_by_name(format::COL_VALUE_SCALE).and_then(|c| c.as_primitive_opt::<Float64Type>());
                let (Some(i), Some(s)) = (i, s) else {
                    return Err(bad("value_int/value_scale columns are missing or have wrong types".into()));
                };
                crate::values::decode_columns(v, i, s, &mut vs)
                    .map_err(|e| bad(format!("rows {}..: {e}", ts.len() - t.len())))?;
            } else {
                vs.extend_from_slice(v.values());
            }
        }
        if ts.len() != want {
            return Err(bad(format!("read {} sample rows, expected {want}", ts.len())));
        }
        Ok((ts, vs))
    }
}

/// The row groups that `ranges` (global row ranges) touch and the selection relative to them.
fn row_group_selection(md: &ParquetMetaData, ranges: &[Range<usize>]) -> (Vec<usize>, RowSelection) {
    let mut rg_start = Vec::with_capacity(md.num_row_groups());
    let mut acc = 0usize;
    for rg in md.row_groups() {
        rg_start.push((acc, acc + rg.num_rows() as usize));
        acc += rg.num_rows() as usize;
    }
    let groups: Vec<usize> = rg_start
        .iter()
        .enumerate()
        .filter(|(_, (s, e))| ranges.iter().any(|r| r.start < *e && r.end > *s))
        .map(|(g, _)| g)
        .collect();
    let mut rel: Vec<Range<usize>> = Vec::new();
    let mut base = 0usize;
    for &g in &groups {
        let (s, e) = rg_start[g];
        for r in ranges {
            let (a, b) = (r.start.max(s), r.end.min(e));
            if a < b {
                rel.push(base + a - s..base + b - s);
            }
        }
        base += e - s;
    }
    (groups, RowSelection::from_consecutive_ranges(rel.into_iter(), base))
}

#[cfg(test)]
#[allow(clippy::unwrap_used, clippy::expect_used)]
mod tests {
    use std::sync::Arc;

    use super::*;
    use crate::bucket::Bucket;
    use crate::format::SamplesEncoding;
    use crate::writer::tests::synthetic;
    use crate::writer::{BlockWriter, BlockWriterOptions};
    use futures::stream::BoxStream;
    use object_store::path::Path as ObjPath;
    use object_store::{
        CopyOptions, GetOptions, GetResult, ListResult, MultipartUpload, ObjectMeta, ObjectStore, PutMultipartOptions,
        PutOptions, PutPayload, PutResult,
    };
    use std::sync::atomic::{AtomicU64, Ordering};

    /// Counts bytes fetched by GETs.
    #[derive(Debug)]
    struct Counting {
        inner: object_store::memory::InMemory,
        bytes: AtomicU64,
    }

    impl std::fmt::Display for Counting {
        fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
            write!(f, "Counting")
        }
    }

    #[async_trait::async_trait]
    impl ObjectStore for Counting {
        async fn put_opts(&self, p: &ObjPath, v: PutPayload, o: PutOptions) -> object_store::Result<PutResult> {
            self.inner.put_opts(p, v, o).await
        }
        async fn put_multipart_opts(
            &self,
            p: &ObjPath,
            o: PutMultipartOptions,
        ) -> object_store::Result<Box<dyn MultipartUpload>> {
            self.inner.put_multipart_opts(p, o).await
        }
        async fn get_opts(&self, p: &ObjPath, o: GetOptions) -> object_store::Result<GetResult> {
            let r = self.inner.get_opts(p, o).await?;
            self.bytes.fetch_add(r.range.end - r.range.start, Ordering::Relaxed);
            Ok(r)
        }
        fn delete_stream(
            &self,
            l: BoxStream<'static, object_store::Result<ObjPath>>,
        ) -> BoxStream<'static, object_store::Result<ObjPath>> {
            self.inner.delete_stream(l)
        }
        fn list(&self, p: Option<&ObjPath>) -> BoxStream<'static, object_store::Result<ObjectMeta>> {
            self.inner.list(p)
        }
        async fn list_with_delimiter(&self, p: Option<&ObjPath>) -> object_store::Result<ListResult> {
            self.inner.list_with_delimiter(p).await
        }
        async fn copy_opts(&self, a: &ObjPath, b: &ObjPath, o: CopyOptions) -> object_store::Result<()> {
            self.inner.copy_opts(a, b, o).await
        }
    }

    #[tokio::test]
    async fn row_selection_reads_only_the_needed_pages_and_row_groups() {
        let store = Arc::new(Counting { inner: object_store::memory::InMemory::new(), bytes: AtomicU64::new(0) });
        let bucket = Bucket::from_store(store.clone(), "counting");
        let data = synthetic(600, 0);
        let u = ulid::Ulid::new();
        // Small row groups and pages so that series straddle both.
        let enc = SamplesEncoding { row_group_rows: 5_000, page_rows: 500, ..SamplesEncoding::V1 };
        let mut w = BlockWriter::with_encoding(bucket.clone(), BlockWriterOptions::new(u, 0, 7_200_000), enc).unwrap();
        for (l, t, v) in &data {
            w.append_series(l, t, v).await.unwrap();
        }
        w.finish().await.unwrap();
        let r = BlockReader::open(&bucket, &u.to_string()).await.unwrap();
        let file_size = r.samples_size;
        assert!(r.samples_meta.metadata().num_row_groups() > 10);

        // Every 37th series, a time window: exact values.
        let ids: Vec<u32> = (0..600).step_by(37).collect();
        let got = r.read_samples(&ids, 1_000_000, 5_000_000).await.unwrap();
        let want: Vec<SeriesSamples> = ids
            .iter()
            .filter_map(|&i| {
                let (_, t, v) = &data[i as usize];
                let (a, b) = (t.partition_point(|&x| x < 1_000_000), t.partition_point(|&x| x <= 5_000_000));
                (a < b).then(|| SeriesSamples { series_id: i, timestamps: t[a..b].to_vec(), values: v[a..b].to_vec() })
            })
            .collect();
        assert_eq!(got.len(), want.len());
        for (g, w) in got.iter().zip(&want) {
            assert_eq!((g.series_id, &g.timestamps), (w.series_id, &w.timestamps));
            let bits = |v: &[f64]| v.iter().map(|x| x.to_bits()).collect::<Vec<_>>();
            assert_eq!(bits(&g.values), bits(&w.values));
        }

        // One series: far fewer bytes than the file.
        store.bytes.store(0, Ordering::Relaxed);
        let one = r.read_samples(&[300], i64::MIN, i64::MAX).await.unwrap();
        assert_eq!(one[0].timestamps, data[300].1);
        let read = store.bytes.load(Ordering::Relaxed);
        assert!(read * 10 < file_size, "read {read} bytes of a {file_size}-byte file for one series");
    }

    #[tokio::test]
    async fn time_range_skips_pages_inside_long_series() {
        let bucket = Bucket::from_store(Arc::new(object_store::memory::InMemory::new()), "memory");
        let u = ulid::Ulid::new();
        let enc = SamplesEncoding { row_group_rows: 10_000, page_rows: 500, ..SamplesEncoding::V1 };
        let mut w =
            BlockWriter::with_encoding(bucket.clone(), BlockWriterOptions::new(u, 0, 1_000_000_000), enc).unwrap();
        let mut data = Vec::new();
        for s in 0..3u32 {
            let l = crate::labels::Labels::from_pairs([("__name__", format!("long{s}"))]);
            let ts: Vec<i64> = (0..20_000i64).map(|k| k * 15_000 + i64::from(s)).collect();
            let vs: Vec<f64> = (0..20_000).map(|k| f64::from(k) * 1.5 + f64::from(s)).collect();
            w.append_series(&l, &ts, &vs).await.unwrap();
            data.push((ts, vs));
        }
        w.finish().await.unwrap();
        let r = BlockReader::open(&bucket, &u.to_string()).await.unwrap();
        assert!(r.ts_pages.len() >= 50, "{} pages", r.ts_pages.len());

        let all = r.read_samples(&[1], i64::MIN, i64::MAX).await.unwrap();
        assert_eq!(all[0].timestamps, data[1].0);
        assert_eq!(r.series_ranges(1, i64::MIN, i64::MAX), vec![20_000..40_000]);

        // A window of 1/30 of the series: only the pages around it are selected.
        let (lo, hi) = (100_000_000, 110_000_000);
        let selected: usize = r.series_ranges(1, lo, hi).iter().map(|x| x.len()).sum();
        assert!((667..=3_000).contains(&selected), "{selected} rows selected");
        let part = r.read_samples(&[1, 2], lo, hi).await.unwrap();
        assert_eq!(part.len(), 2);
        for (k, got) in part.iter().enumerate() {
            let (t, v) = &data[k + 1];
            let (a, b) = (t.partition_point(|&x| x < lo), t.partition_point(|&x| x <= hi));
            assert_eq!(got.series_id, k as u32 + 1);
            assert_eq!((&got.timestamps[..], &got.values[..]), (&t[a..b], &v[a..b]));
        }
        assert!(r.read_samples(&[0], 400_000_000, 500_000_000).await.unwrap().is_empty());
    }
}
