//! [`BlockReader`]: one block of format v1, opened from a bucket.
//!
//! Opening reads `meta.json`, loads `series.parquet` whole into memory (Arrow, plus the decoded
//! label sets) and the footer and page index of `samples.parquet`. Matchers resolve on the cached
//! series table; samples of the chosen series are read with a Parquet `RowSelection` built from each
//! series' `first_row`/`num_samples`, so only the row groups and pages holding them are fetched.
//!
//! ```text
//!   matchers ──► series table (cached) ──► series ids ──► row ranges ──► samples.parquet pages
//! ```

use std::collections::HashMap;
use std::ops::Range;
use std::sync::Arc;

use arrow::array::{Array, ArrayRef, AsArray, DictionaryArray, Float64Array, Int64Array, MapArray, RecordBatch};
use arrow::datatypes::{DataType, Int32Type};
use bytes::Bytes;
use futures::FutureExt;
use futures::TryStreamExt;
use futures::future::BoxFuture;
use object_store::path::Path as ObjPath;
use object_store::{ObjectStore, ObjectStoreExt};
use parquet::arrow::ProjectionMask;
use parquet::arrow::arrow_reader::{
    ArrowReaderMetadata, ArrowReaderOptions, ParquetRecordBatchReaderBuilder, RowSelection,
};
use parquet::arrow::async_reader::{AsyncFileReader, ParquetRecordBatchStreamBuilder};
use parquet::errors::ParquetError;
use parquet::file::metadata::{PageIndexPolicy, ParquetMetaData, ParquetMetaDataReader};

use crate::bucket::Bucket;
use crate::error::{Error, Result};
use crate::format;
use crate::labels::{Label, Labels, MatchOp, Matcher};
use crate::meta::BlockMeta;

/// The decoded series table of a block: per series its labels and sample bookkeeping, indexed by
/// `series_id`.
#[derive(Debug, Clone)]
pub struct SeriesIndex {
    /// Label sets, sorted (index = series_id).
    pub labels: Vec<Labels>,
    /// `series_hash` column.
    pub hashes: Vec<u64>,
    /// First sample timestamp per series.
    pub min_time: Vec<i64>,
    /// Last sample timestamp per series (inclusive).
    pub max_time: Vec<i64>,
    /// Sample count per series.
    pub num_samples: Vec<u64>,
    /// First row in samples.parquet per series.
    pub first_row: Vec<u64>,
    /// Label name -> its dictionary column and postings, for fast matching.
    columns: HashMap<String, LabelColumn>,
    /// The raw series table as read.
    pub batch: RecordBatch,
    /// Label names and their sorted values, built once at decode.
    label_index: LabelIndex,
}

/// A block's label index: every label name of its series (those with samples) and the sorted
/// distinct values of each, built once when the series table is decoded so that `/labels` and
/// `/label/<name>/values` without matchers never walk the series.
///
/// Memory: one `String` (24 bytes plus the text) per distinct (name, value) pair and per name, so
/// it grows with the distinct values, not with the series: a block of 10,080 series over 360
/// instances holds a few hundred pairs, tens of KB (see [`LabelIndex::heap_bytes`]).
#[derive(Debug, Clone, Default, PartialEq)]
pub struct LabelIndex {
    /// Sorted by name; values sorted, distinct, non-empty.
    names: Vec<(String, Vec<String>)>,
}

impl LabelIndex {
    /// Builds the index over the given label sets.
    fn build<'a>(labels: impl Iterator<Item = &'a Labels>) -> Self {
        let mut by_name: HashMap<&str, std::collections::HashSet<&str>> = HashMap::new();
        for l in labels {
            for Label { name, value } in l.iter() {
                by_name.entry(name.as_str()).or_default().insert(value.as_str());
            }
        }
        let mut names: Vec<(String, Vec<String>)> = by_name
            .into_iter()
            .map(|(n, vs)| {
                let mut vs: Vec<String> = vs.into_iter().map(str::to_string).collect();
                vs.sort_unstable();
                (n.to_string(), vs)
            })
            .collect();
        names.sort_unstable_by(|a, b| a.0.cmp(&b.0));
        LabelIndex { names }
    }

    /// Label names, sorted.
    pub fn names(&self) -> impl Iterator<Item = &str> {
        self.names.iter().map(|(n, _)| n.as_str())
    }

    /// Sorted distinct values of label `name` (empty when no series has it).
    pub fn values(&self, name: &str) -> &[String] {
        match self.names.binary_search_by(|(n, _)| n.as_str().cmp(name)) {
            Ok(i) => &self.names[i].1,
            Err(_) => &[],
        }
    }

    /// Approximate heap footprint in bytes (string bytes plus vector and `String` headers).
    pub fn heap_bytes(&self) -> usize {
        let s = std::mem::size_of::<String>();
        self.names
            .iter()
            .map(|(n, vs)| {
                n.capacity()
                    + std::mem::size_of::<(String, Vec<String>)>()
                    + vs.capacity() * s
                    + vs.iter().map(String::capacity).sum::<usize>()
            })
            .sum()
    }
}

/// One label column of the series table: its dictionary (values, keys), the keys of each value
/// and, per dictionary key, the ascending ids of the series holding that value (postings, in CSR
/// layout).
///
/// Memory: 4 bytes per series with the label plus a map entry and 4 bytes per dictionary value,
/// next to the column.
#[derive(Debug, Clone)]
struct LabelColumn {
    dict: DictionaryArray<Int32Type>,
    /// Value -> its dictionary keys (one, unless the dictionary repeats a value).
    keys_of: HashMap<String, Vec<u32>>,
    /// `ids[offsets[k]..offsets[k + 1]]` are the series whose key is `k`.
    offsets: Vec<u32>,
    ids: Vec<u32>,
}

impl LabelColumn {
    /// Builds the postings by a counting sort of the keys (null keys belong to no list).
    fn new(dict: DictionaryArray<Int32Type>) -> Self {
        let n_values = dict.values().len();
        let keys = dict.keys();
        let valid = |i: usize| keys.is_valid(i) && (keys.value(i) as usize) < n_values;
        let mut offsets = vec![0u32; n_values + 1];
        for i in (0..keys.len()).filter(|&i| valid(i)) {
            offsets[keys.value(i) as usize + 1] += 1;
        }
        for k in 0..n_values {
            offsets[k + 1] += offsets[k];
        }
        let mut next = offsets.clone();
        let mut ids = vec![0u32; offsets[n_values] as usize];
        for i in (0..keys.len()).filter(|&i| valid(i)) {
            let k = keys.value(i) as usize;
            ids[next[k] as usize] = i as u32;
            next[k] += 1;
        }
        let mut keys_of: HashMap<String, Vec<u32>> = HashMap::new();
        let values = dict.values().as_string::<i32>();
        for k in (0..values.len()).filter(|&k| values.is_valid(k)) {
            keys_of.entry(values.value(k).to_string()).or_default().push(k as u32);
        }
        LabelColumn { dict, keys_of, offsets, ids }
    }

    /// Per dictionary key: does `m` accept its value? An equality matcher looks its value up;
    /// the others run once per distinct value.
    fn accepted_keys(&self, m: &Matcher) -> Vec<bool> {
        let values = self.dict.values().as_string::<i32>();
        if m.op == MatchOp::Equal {
            let mut hits = vec![false; values.len()];
            for &k in self.keys_of.get(&m.value).map_or(&[][..], Vec::as_slice) {
                if let Some(h) = hits.get_mut(k as usize) {
                    *h = true;
                }
            }
            return hits;
        }
        (0..values.len()).map(|i| values.is_valid(i) && m.matches(values.value(i))).collect()
    }

    /// Ascending ids of the series whose key is `k`.
    fn postings(&self, k: usize) -> &[u32] {
        match (self.offsets.get(k), self.offsets.get(k + 1)) {
            (Some(&a), Some(&b)) => self.ids.get(a as usize..b as usize).unwrap_or(&[]),
            _ => &[],
        }
    }
}

/// The ascending ids present in both ascending lists.
fn intersect_sorted(a: &[u32], b: &[u32]) -> Vec<u32> {
    let (mut i, mut j, mut out) = (0, 0, Vec::with_capacity(a.len().min(b.len())));
    while i < a.len() && j < b.len() {
        match a[i].cmp(&b[j]) {
            std::cmp::Ordering::Less => i += 1,
            std::cmp::Ordering::Greater => j += 1,
            std::cmp::Ordering::Equal => {
                out.push(a[i]);
                i += 1;
                j += 1;
            }
        }
    }
    out
}

impl SeriesIndex {
    /// Number of series.
    pub fn len(&self) -> usize {
        self.labels.len()
    }

    /// True when the block has no series.
    pub fn is_empty(&self) -> bool {
        self.labels.is_empty()
    }

    /// The block's label index (names and sorted values of the series with samples).
    pub fn label_index(&self) -> &LabelIndex {
        &self.label_index
    }

    /// Names of the label columns (not counting overflow labels), unordered.
    pub fn label_columns(&self) -> impl Iterator<Item = &str> {
        self.columns.keys().map(String::as_str)
    }

    /// The ids among `cand` (all series when `None`) that `m` accepts, ascending. A label absent
    /// from the block (or the series) is `""`. On a dictionary column the matcher runs once per
    /// distinct value (an equality matcher looks its value up); a matcher that rejects `""` then
    /// takes the union of the accepted values' postings (or tests the candidates' keys when they
    /// are fewer), one that accepts `""` tests every candidate's key.
    fn filter(&self, m: &Matcher, cand: Option<Vec<u32>>) -> Vec<u32> {
        let Some(col) = self.columns.get(&m.name) else {
            let ok = |i: u32| self.labels.get(i as usize).is_some_and(|l| m.matches_labels(l));
            return match cand {
                Some(c) => c.into_iter().filter(|&i| ok(i)).collect(),
                None => (0..self.len() as u32).filter(|&i| ok(i)).collect(),
            };
        };
        let hits = col.accepted_keys(m);
        let empty = m.matches("");
        let keys = col.dict.keys();
        let (kv, nulls) = (keys.values(), keys.nulls());
        let ok = |i: usize| match nulls {
            Some(n) if n.is_null(i) => empty,
            _ => kv.get(i).and_then(|&k| hits.get(k as usize)).copied().unwrap_or(false),
        };
        if !empty {
            let lists: Vec<&[u32]> =
                hits.iter().enumerate().filter(|(_, h)| **h).map(|(k, _)| col.postings(k)).collect();
            let total: usize = lists.iter().map(|l| l.len()).sum();
            if let Some(c) = &cand
                && c.len() < total
            {
                return c.iter().copied().filter(|&i| ok(i as usize)).collect();
            }
            let union = match lists.as_slice() {
                [] => return Vec::new(),
                [one] => one.to_vec(),
                many => {
                    let mut u: Vec<u32> = many.iter().flat_map(|l| l.iter().copied()).collect();
                    u.sort_unstable();
                    u
                }
            };
            return match cand {
                Some(c) => intersect_sorted(&c, &union),
                None => union,
            };
        }
        match cand {
            Some(c) => c.into_iter().filter(|&i| ok(i as usize)).collect(),
            None => (0..kv.len()).filter(|&i| ok(i)).map(|i| i as u32).collect(),
        }
    }

    /// Ids of the series accepted by every matcher, ascending. Matchers that select few series
    /// (equality on a non-empty value, then regex matches) run first, so the others only test the
    /// survivors.
    pub fn resolve(&self, matchers: &[Matcher]) -> Vec<u32> {
        let mut order: Vec<&Matcher> = matchers.iter().collect();
        order.sort_by_key(|m| match m.op {
            MatchOp::Equal if !m.value.is_empty() => 0,
            MatchOp::RegexMatch => 1,
            _ => 2,
        });
        let mut cand: Option<Vec<u32>> = None;
        for m in order {
            let next = self.filter(m, cand);
            if next.is_empty() {
                return next;
            }
            cand = Some(next);
        }
        cand.unwrap_or_else(|| (0..self.len() as u32).collect())
    }

    /// Like [`SeriesIndex::resolve`], keeping only series with samples in `[min_t, max_t]`.
    pub fn resolve_in_range(&self, matchers: &[Matcher], min_t: i64, max_t: i64) -> Vec<u32> {
        self.resolve(matchers)
            .into_iter()
            .filter(|&i| self.min_time[i as usize] <= max_t && self.max_time[i as usize] >= min_t)
            .collect()
    }

    pub(crate) fn decode(batch: RecordBatch, path: &str) -> Result<Self> {
        let bad = |reason: String| Error::BadBlockFile { path: path.to_string(), reason };
        let schema = batch.schema();
        let col = |name: &str| -> Result<ArrayRef> {
            batch.column_by_name(name).cloned().ok_or_else(|| bad(format!("missing column {name}")))
        };
        let typed = |name: &str, dt: DataType| -> Result<ArrayRef> {
            let c = col(name)?;
            if c.data_type() != &dt {
                return Err(bad(format!("column {name} has type {} instead of {dt}", c.data_type())));
            }
            Ok(c)
        };
        let ids = typed(format::COL_SERIES_ID, DataType::UInt32)?;
        let ids = ids.as_primitive::<arrow::datatypes::UInt32Type>();
        if let Some(i) = (0..ids.len()).find(|&i| ids.value(i) as usize != i) {
            return Err(bad(format!("series_id at row {i} is {} (ids must be dense 0..n)", ids.value(i))));
        }
        let u64s = |name: &str| -> Result<Vec<u64>> {
            Ok(typed(name, DataType::UInt64)?.as_primitive::<arrow::datatypes::UInt64Type>().values().to_vec())
        };
        let i64s = |name: &str| -> Result<Vec<i64>> {
            Ok(typed(name, DataType::Int64)?.as_primitive::<arrow::datatypes::Int64Type>().values().to_vec())
        };
        let hashes = u64s(format::COL_SERIES_HASH)?;
        let (min_time, max_time) = (i64s(format::COL_MIN_TIME)?, i64s(format::COL_MAX_TIME)?);
        let (num_samples, first_row) = (u64s(format::COL_NUM_SAMPLES)?, u64s(format::COL_FIRST_ROW)?);

        let n = batch.num_rows();
        let mut pairs: Vec<Vec<Label>> = vec![Vec::new(); n];
        let mut columns = HashMap::new();
        for (fi, field) in schema.fields().iter().enumerate() {
            let name = field.name();
            if format::RESERVED_SERIES_COLUMNS.contains(&name.as_str()) {
                continue;
            }
            let arr = batch.column(fi);
            let arr = if arr.data_type() == &format::label_column_type() {
                Arc::clone(arr)
            } else {
                arrow::compute::cast(arr, &format::label_column_type())
                    .map_err(|_| bad(format!("label column {name} has type {}", arr.data_type())))?
            };
            let dict = arr.as_dictionary::<Int32Type>().clone();
            {
                let values = dict.values().as_string::<i32>();
                let keys = dict.keys();
                for (row, p) in pairs.iter_mut().enumerate() {
                    if keys.is_valid(row) {
                        let v = values.value(keys.value(row) as usize);
                        if !v.is_empty() {
                            p.push(Label { name: name.clone(), value: v.to_string() });
                        }
                    }
                }
            }
            columns.insert(name.clone(), LabelColumn::new(dict));
        }
        if let Some(ov) = batch.column_by_name(format::COL_LABELS) {
            let map: &MapArray = ov
                .as_map_opt()
                .ok_or_else(|| bad(format!("column labels has type {} instead of a map", ov.data_type())))?;
            let keys = map.keys().as_string_opt::<i32>().ok_or_else(|| bad("overflow map keys are not Utf8".into()))?;
            let vals =
                map.values().as_string_opt::<i32>().ok_or_else(|| bad("overflow map values are not Utf8".into()))?;
            let offs = map.value_offsets();
            for (row, p) in pairs.iter_mut().enumerate() {
                if map.is_valid(row) {
                    for j in offs[row] as usize..offs[row + 1] as usize {
                        if vals.is_valid(j) && !vals.value(j).is_empty() {
                            p.push(Label { name: keys.value(j).to_string(), value: vals.value(j).to_string() });
                        }
                    }
                }
            }
        }
        let mut labels = Vec::with_capacity(n);
        for (row, p) in pairs.into_iter().enumerate() {
            let l = Labels::try_from_pairs(p.into_iter().map(|l| (l.name, l.value)))
                .map_err(|e| bad(format!("series_id {row}: {e}")))?;
            labels.push(l);
        }
        let label_index = LabelIndex::build(
            labels.iter().enumerate().filter(|(i, _)| num_samples[*i] > 0 && min_time[*i] <= max_time[*i]).map(|p| p.1),
        );
        Ok(SeriesIndex { labels, hashes, min_time, max_time, num_samples, first_row, columns, batch, label_index })
    }
}

/// Reads and decodes a block's `series.parquet` whole.
pub async fn read_series_index(bucket: &Bucket, ulid: &str) -> Result<SeriesIndex> {
    let series_path = Bucket::block_path(ulid, format::SERIES_FILE);
    let bytes = bucket.get(&series_path).await?;
    let builder = ParquetRecordBatchReaderBuilder::try_new(bytes).map_err(|e| Error::parquet(&series_path, e))?;
    let schema = Arc::clone(builder.schema());
    let reader = builder.with_batch_size(64 * 1024).build().map_err(|e| Error::parquet(&series_path, e))?;
    let batches: Vec<RecordBatch> =
        reader.collect::<std::result::Result<_, _>>().map_err(|e| Error::arrow(format!("reading {series_path}"), e))?;
    let batch = arrow::compute::concat_batches(&schema, &batches)
        .map_err(|e| Error::arrow(format!("concatenating {series_path}"), e))?;
    SeriesIndex::decode(batch, series_path.as_ref())
}

/// One opened block. Cheap to share behind an `Arc`.
#[derive(Debug)]
pub struct BlockReader {
    bucket: Bucket,
    meta: BlockMeta,
    index: SeriesIndex,
    samples_path: ObjPath,
    samples_size: u64,
    samples_meta: ArrowReaderMetadata,
    /// Pages of the timestamp column: global row range and min/max timestamp (when known).
    ts_pages: Vec<TsPage>,
    /// Shared cache of decoded pages, if any.
    cache: Option<Arc<PageCache>>,
    /// This open's key in the cache.
    cache_id: u64,
}

/// One data page of the `timestamp` column.
#[derive(Debug, Clone, Copy, PartialEq)]
struct TsPage {
    start: usize,
    end: usize,
    min: Option<i64>,
    max: Option<i64>,
}

/// Pages of the timestamp column from the page index (empty when the file has none).
fn timestamp_pages(md: &ParquetMetaData) -> Vec<TsPage> {
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
    /// Opens block `ulid`: meta.json, series.parquet (loaded whole) and the samples footer.
    pub async fn open(bucket: &Bucket, ulid: &str) -> Result<Self> {
        let meta = bucket.read_meta(ulid).await?;
        let index = read_series_index(bucket, ulid).await?;

        let samples_path = Bucket::block_path(ulid, format::SAMPLES_FILE);
        let samples_size = bucket.head(&samples_path).await?.size;
        let mut r = ObjectReader::new(bucket.store(), &samples_path, samples_size);
        let opts = ArrowReaderOptions::new().with_page_index_policy(PageIndexPolicy::Optional);
        let samples_meta =
            ArrowReaderMetadata::load_async(&mut r, opts).await.map_err(|e| Error::parquet(&samples_path, e))?;
        let want = format::samples_schema();
        for f in want.fields() {
            match samples_meta.schema().field_with_name(f.name()) {
                Ok(g) if g.data_type() == f.data_type() => {}
                _ => {
                    return Err(Error::BadBlockFile {
                        path: samples_path.to_string(),
                        reason: format!("missing column {} of type {}", f.name(), f.data_type()),
                    });
                }
            }
        }
        let ts_pages = timestamp_pages(samples_meta.metadata());
        let cache_id = NEXT_CACHE_ID.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
        Ok(BlockReader {
            bucket: bucket.clone(),
            meta,
            index,
            samples_path,
            samples_size,
            samples_meta,
            ts_pages,
            cache: None,
            cache_id,
        })
    }

    /// Serves sample reads through `cache` (shared with other blocks).
    pub fn with_page_cache(mut self, cache: Arc<PageCache>) -> Self {
        self.cache = Some(cache);
        self
    }

    /// The block's meta.json.
    pub fn meta(&self) -> &BlockMeta {
        &self.meta
    }

    /// The block's ULID.
    pub fn ulid(&self) -> &str {
        &self.meta.ulid
    }

    /// The cached series table.
    pub fn index(&self) -> &SeriesIndex {
        &self.index
    }

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
        let mut wanted: Vec<usize> = Vec::new();
        for r in per_series.iter().flat_map(|s| s.1.iter()) {
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
        if missing.is_empty() {
            return Ok(got);
        }
        let mut ranges: Vec<Range<usize>> = Vec::new();
        for &p in &missing {
            let r = self.ts_pages[p].start..self.ts_pages[p].end;
            match ranges.last_mut() {
                Some(last) if last.end == r.start => last.end = r.end,
                _ => ranges.push(r),
            }
        }
        let (ts, vs) = self.read_rows(&ranges).await?;
        let mut at = 0usize;
        for p in missing {
            let n = self.ts_pages[p].end - self.ts_pages[p].start;
            let d = Arc::new(DecodedPage { ts: ts[at..at + n].to_vec(), vs: vs[at..at + n].to_vec() });
            at += n;
            cache.insert(self.cache_id, p, Arc::clone(&d));
            got.insert(p, d);
        }
        Ok(got)
    }

    /// Timestamps and values of the given ascending, non-adjacent global row ranges, in order.
    async fn read_rows(&self, ranges: &[Range<usize>]) -> Result<(Vec<i64>, Vec<f64>)> {
        let path = &self.samples_path;
        let bad = |reason: String| Error::BadBlockFile { path: path.to_string(), reason };
        // Row groups touched, and the selection relative to them.
        let md = self.samples_meta.metadata();
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
        let selection = RowSelection::from_consecutive_ranges(rel.into_iter(), base);
        let reader = ObjectReader::new(self.bucket.store(), path, self.samples_size);
        let mask =
            ProjectionMask::columns(md.file_metadata().schema_descr(), [format::COL_TIMESTAMP, format::COL_VALUE]);
        let stream = ParquetRecordBatchStreamBuilder::new_with_metadata(reader, self.samples_meta.clone())
            .with_row_groups(groups)
            .with_row_selection(selection)
            .with_projection(mask)
            .with_batch_size(64 * 1024)
            .build()
            .map_err(|e| Error::parquet(path, e))?;
        let batches: Vec<RecordBatch> = stream.try_collect().await.map_err(|e| Error::parquet(path, e))?;
        let want: usize = ranges.iter().map(|r| r.len()).sum();
        let (mut ts, mut vs): (Vec<i64>, Vec<f64>) = (Vec::with_capacity(want), Vec::with_capacity(want));
        for b in &batches {
            let t = b.column_by_name(format::COL_TIMESTAMP).and_then(|c| c.as_any().downcast_ref::<Int64Array>());
            let v = b.column_by_name(format::COL_VALUE).and_then(|c| c.as_any().downcast_ref::<Float64Array>());
            let (Some(t), Some(v)) = (t, v) else { return Err(bad("timestamp/value columns have wrong types".into())) };
            ts.extend_from_slice(t.values());
            vs.extend_from_slice(v.values());
        }
        if ts.len() != want {
            return Err(bad(format!("read {} sample rows, expected {want}", ts.len())));
        }
        Ok((ts, vs))
    }
}

/// An unloaded block takes its cached pages with it.
impl Drop for BlockReader {
    fn drop(&mut self) {
        if let Some(c) = &self.cache {
            c.remove_block(self.cache_id);
        }
    }
}

/// One decoded page of `samples.parquet`: the rows of one `timestamp` data page, both columns.
#[derive(Debug)]
pub struct DecodedPage {
    ts: Vec<i64>,
    vs: Vec<f64>,
}

impl DecodedPage {
    /// Heap bytes held (16 per row plus bookkeeping).
    fn cost(&self) -> usize {
        self.ts.capacity() * 8 + self.vs.capacity() * 8 + 64
    }
}

/// A byte-bounded LRU cache of decoded `samples.parquet` pages, shared by the blocks of a source.
///
/// Blocks are immutable, so an entry never goes stale while its block is loaded; a block leaving
/// the source (deleted, marked for deletion) is dropped with [`PageCache::remove_block`]. Entries are
/// keyed by a per-open id, so a block opened again (even under the same ULID) never sees the pages
/// of an earlier open.
#[derive(Debug)]
pub struct PageCache {
    capacity: usize,
    inner: std::sync::Mutex<LruInner>,
}

#[derive(Debug, Default)]
struct LruInner {
    used: usize,
    tick: u64,
    entries: HashMap<(u64, usize), (Arc<DecodedPage>, u64)>,
    order: std::collections::BTreeMap<u64, (u64, usize)>,
    hits: u64,
    misses: u64,
}

/// Usage of a [`PageCache`].
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct PageCacheStats {
    /// Bytes held.
    pub bytes: usize,
    /// Pages held.
    pub pages: usize,
    /// Lookups answered from the cache.
    pub hits: u64,
    /// Lookups that had to read the page.
    pub misses: u64,
}

static NEXT_CACHE_ID: std::sync::atomic::AtomicU64 = std::sync::atomic::AtomicU64::new(1);

impl PageCache {
    /// A cache holding at most `capacity` bytes of decoded pages (0 disables it).
    pub fn new(capacity: usize) -> Self {
        PageCache { capacity, inner: std::sync::Mutex::new(LruInner::default()) }
    }

    /// The bound in bytes.
    pub fn capacity(&self) -> usize {
        self.capacity
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, LruInner> {
        self.inner.lock().unwrap_or_else(|p| p.into_inner())
    }

    fn get(&self, block: u64, page: usize) -> Option<Arc<DecodedPage>> {
        let mut g = self.lock();
        g.tick += 1;
        let tick = g.tick;
        let Some((d, old)) = g.entries.get_mut(&(block, page)).map(|e| {
            let old = e.1;
            e.1 = tick;
            (Arc::clone(&e.0), old)
        }) else {
            g.misses += 1;
            return None;
        };
        g.order.remove(&old);
        g.order.insert(tick, (block, page));
        g.hits += 1;
        Some(d)
    }

    fn insert(&self, block: u64, page: usize, d: Arc<DecodedPage>) {
        let cost = d.cost();
        if cost > self.capacity {
            return;
        }
        let mut g = self.lock();
        g.tick += 1;
        let tick = g.tick;
        if let Some((old, t)) = g.entries.insert((block, page), (d, tick)) {
            g.used -= old.cost();
            g.order.remove(&t);
        }
        g.order.insert(tick, (block, page));
        g.used += cost;
        while g.used > self.capacity {
            let Some((_, key)) = g.order.pop_first() else { break };
            if let Some((old, _)) = g.entries.remove(&key) {
                g.used -= old.cost();
            }
        }
    }

    /// Drops every page of the block opened with cache id `block`.
    fn remove_block(&self, block: u64) {
        let mut g = self.lock();
        let keys: Vec<((u64, usize), u64)> =
            g.entries.iter().filter(|(k, _)| k.0 == block).map(|(k, (_, t))| (*k, *t)).collect();
        for (k, t) in keys {
            if let Some((old, _)) = g.entries.remove(&k) {
                g.used -= old.cost();
            }
            g.order.remove(&t);
        }
    }

    /// Current usage.
    pub fn stats(&self) -> PageCacheStats {
        let g = self.lock();
        PageCacheStats { bytes: g.used, pages: g.entries.len(), hits: g.hits, misses: g.misses }
    }
}

/// Parquet's async reader over one object of known size (ranged GETs, footer by known size).
#[derive(Debug, Clone)]
pub(crate) struct ObjectReader {
    store: Arc<dyn ObjectStore>,
    path: ObjPath,
    size: u64,
}

impl ObjectReader {
    /// A reader of `path` whose size is `size` bytes.
    pub(crate) fn new(store: &Arc<dyn ObjectStore>, path: &ObjPath, size: u64) -> Self {
        ObjectReader { store: Arc::clone(store), path: path.clone(), size }
    }
}

fn ext_err(e: object_store::Error) -> ParquetError {
    ParquetError::External(Box::new(e))
}

impl AsyncFileReader for ObjectReader {
    fn get_bytes(&mut self, range: Range<u64>) -> BoxFuture<'_, parquet::errors::Result<Bytes>> {
        async move { self.store.get_range(&self.path, range).await.map_err(ext_err) }.boxed()
    }

    fn get_byte_ranges(&mut self, ranges: Vec<Range<u64>>) -> BoxFuture<'_, parquet::errors::Result<Vec<Bytes>>> {
        async move { self.store.get_ranges(&self.path, &ranges).await.map_err(ext_err) }.boxed()
    }

    fn get_metadata<'a>(
        &'a mut self,
        options: Option<&'a ArrowReaderOptions>,
    ) -> BoxFuture<'a, parquet::errors::Result<Arc<ParquetMetaData>>> {
        async move {
            let size = self.size;
            let md =
                ParquetMetaDataReader::new().with_arrow_reader_options(options).load_and_finish(self, size).await?;
            Ok(Arc::new(md))
        }
        .boxed()
    }
}

#[cfg(test)]
#[allow(clippy::unwrap_used, clippy::expect_used)]
mod tests {
    use super::*;
    use crate::format::SamplesEncoding;
    use crate::labels::MatchOp;
    use crate::writer::tests::synthetic;
    use crate::writer::{BlockWriter, BlockWriterOptions};
    use futures::stream::BoxStream;
    use object_store::{
        CopyOptions, GetOptions, GetResult, ListResult, MultipartUpload, ObjectMeta, PutMultipartOptions, PutOptions,
        PutPayload, PutResult,
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

    #[tokio::test]
    async fn page_cache_reads_equal_direct_reads_and_stay_bounded() {
        let bucket = Bucket::from_store(Arc::new(object_store::memory::InMemory::new()), "memory");
        let u = ulid::Ulid::new();
        let enc = SamplesEncoding { row_group_rows: 7_000, page_rows: 500, ..SamplesEncoding::V1 };
        let mut w =
            BlockWriter::with_encoding(bucket.clone(), BlockWriterOptions::new(u, 0, 1_000_000_000), enc).unwrap();
        for s in 0..40u32 {
            let l = crate::labels::Labels::from_pairs([("__name__", format!("s{s:02}"))]);
            let n = 100 + 37 * i64::from(s);
            let ts: Vec<i64> = (0..n).map(|k| k * 10_000 + i64::from(s)).collect();
            let vs: Vec<f64> = (0..n).map(|k| (k as f64) * 0.5 - f64::from(s)).collect();
            w.append_series(&l, &ts, &vs).await.unwrap();
        }
        w.finish().await.unwrap();
        let direct = BlockReader::open(&bucket, &u.to_string()).await.unwrap();
        let cache = Arc::new(PageCache::new(6 * (500 * 16 + 64)));
        let cached = BlockReader::open(&bucket, &u.to_string()).await.unwrap().with_page_cache(Arc::clone(&cache));
        assert!(cached.ts_pages.len() > 20, "{} pages", cached.ts_pages.len());
        let windows = [(i64::MIN, i64::MAX), (0, 1_000_000), (2_000_000, 9_000_000), (15_000_000, 15_000_005)];
        let id_sets: Vec<Vec<u32>> = vec![vec![0], vec![39], vec![3, 4, 5], (0..40).collect(), vec![38, 1, 20, 1]];
        for round in 0..2 {
            for ids in &id_sets {
                for &(a, b) in &windows {
                    let want = direct.read_samples(ids, a, b).await.unwrap();
                    let got = cached.read_samples(ids, a, b).await.unwrap();
                    assert_eq!(got, want, "round {round} ids {ids:?} [{a}, {b}]");
                }
            }
            let st = cache.stats();
            assert!(st.bytes <= cache.capacity() && st.pages <= 6, "{st:?}");
        }
        let st = cache.stats();
        assert!(st.hits > 0 && st.misses > 0, "{st:?}");
        // A repeated small read is answered from the cache alone.
        cached.read_samples(&[2], 0, 500_000).await.unwrap();
        let before = cache.stats();
        assert_eq!(
            cached.read_samples(&[2], 0, 500_000).await.unwrap(),
            direct.read_samples(&[2], 0, 500_000).await.unwrap()
        );
        let after = cache.stats();
        assert_eq!((after.misses, after.hits > before.hits), (before.misses, true));
        // Dropping the block drops its pages.
        drop(cached);
        assert_eq!(cache.stats().pages, 0);
        assert_eq!(cache.stats().bytes, 0);
    }

    #[tokio::test]
    async fn matchers_on_columns_absent_labels_and_overflow() {
        let dir = tempfile::tempdir().unwrap();
        let bucket = Bucket::local(dir.path()).unwrap();
        let data = synthetic(100, 0);
        let u = ulid::Ulid::new();
        crate::writer::tests::write_block(&bucket, u, &[], &data).await;
        let r = BlockReader::open(&bucket, &u.to_string()).await.unwrap();
        assert_eq!(r.index().labels, data.iter().map(|s| s.0.clone()).collect::<Vec<_>>());
        let check = |ms: Vec<Matcher>| {
            let want: Vec<u32> =
                (0..data.len() as u32).filter(|&i| crate::labels::matches_all(&ms, &data[i as usize].0)).collect();
            assert_eq!(r.index().resolve(&ms), want, "{ms:?}");
            want.len()
        };
        let m = |op, n: &str, v: &str| Matcher::new(op, n, v).unwrap();
        assert_eq!(check(vec![m(MatchOp::Equal, "job", "job1")]), 33);
        assert_eq!(check(vec![m(MatchOp::NotEqual, "zone", "")]), 20);
        assert_eq!(check(vec![m(MatchOp::RegexMatch, "zone", "z1|")]), 90);
        assert_eq!(check(vec![m(MatchOp::RegexNoMatch, "__name__", "metric_[1-6]")]), 15);
        assert_eq!(check(vec![m(MatchOp::Equal, "absent", "")]), 100);
        assert_eq!(check(vec![m(MatchOp::RegexMatch, "absent", ".+")]), 0);
        assert_eq!(check(vec![m(MatchOp::Equal, "min_time", "odd")]), 10);
        assert_eq!(check(vec![m(MatchOp::NotEqual, "min_time", "odd"), m(MatchOp::Equal, "job", "job0")]), 30);
        // Several matchers in an order the resolver changes (selective ones first): same answers.
        let n = check(vec![
            m(MatchOp::RegexNoMatch, "zone", "z0"),
            m(MatchOp::RegexMatch, "__name__", ".+"),
            m(MatchOp::Equal, "job", "job1"),
        ]);
        assert!(n > 0 && n < 33, "{n}");
        let n = check(vec![
            m(MatchOp::Equal, "absent", ""),
            m(MatchOp::NotEqual, "job", "job1"),
            m(MatchOp::RegexMatch, "zone", "z1|"),
        ]);
        assert!(n > 0 && n < 90, "{n}");
        assert_eq!(check(vec![m(MatchOp::NotEqual, "zone", ""), m(MatchOp::Equal, "job", "nope")]), 0);
        assert_eq!(check(vec![]), 100);
        // Postings: the union of several values, an intersection with fewer candidates than
        // postings (keys tested) and with more (lists intersected).
        let two_jobs = check(vec![m(MatchOp::RegexMatch, "job", "job0|job2")]);
        assert!(two_jobs > 33 && two_jobs < 100, "{two_jobs}");
        let n = check(vec![m(MatchOp::Equal, "__name__", "metric_3"), m(MatchOp::Equal, "job", "job1")]);
        assert!(n > 0 && n < 10, "{n}");
        let n =
            check(vec![m(MatchOp::RegexMatch, "__name__", "metric_[1-3]"), m(MatchOp::RegexMatch, "job", "job0|job1")]);
        assert!(n > 0 && n < 30, "{n}");
        let n = check(vec![m(MatchOp::RegexMatch, "zone", "z1"), m(MatchOp::RegexMatch, "__name__", "metric_.*")]);
        assert!(n > 0 && n < 100, "{n}");
    }

    #[test]
    fn postings_list_each_key_in_row_order_and_skip_nulls() {
        let keys = arrow::array::Int32Array::from(vec![Some(1), None, Some(0), Some(1), Some(2), None, Some(1)]);
        let values = arrow::array::StringArray::from(vec!["a", "b", "c"]);
        let col = LabelColumn::new(DictionaryArray::try_new(keys, Arc::new(values)).unwrap());
        assert_eq!(col.postings(0), &[2]);
        assert_eq!(col.postings(1), &[0, 3, 6]);
        assert_eq!(col.postings(2), &[4]);
        assert_eq!(col.postings(3), &[] as &[u32]);
        assert_eq!(intersect_sorted(&[0, 2, 3, 6, 9], &[3, 4, 6]), vec![3, 6]);
        // A dictionary that repeats a value: both keys count.
        let keys = arrow::array::Int32Array::from(vec![0, 1, 2, 0]);
        let values = arrow::array::StringArray::from(vec!["a", "b", "a"]);
        let col = LabelColumn::new(DictionaryArray::try_new(keys, Arc::new(values)).unwrap());
        let eq = Matcher::new(MatchOp::Equal, "x", "a").unwrap();
        assert_eq!(col.accepted_keys(&eq), vec![true, false, true]);
        let re = Matcher::new(MatchOp::RegexMatch, "x", "b|c").unwrap();
        assert_eq!(col.accepted_keys(&re), vec![false, true, false]);
        assert_eq!(col.accepted_keys(&Matcher::new(MatchOp::Equal, "x", "z").unwrap()), vec![false; 3]);
    }
}
