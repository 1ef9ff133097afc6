//! [`BlockWriter`]: streams one block (format v2 by default, v1 on request) into a [`Bucket`].
//!
//! ```text
//!   append_series(labels, ts, vs) x N  (strictly increasing labels)
//!        │ samples ──► ColumnParallelWriter (one blocking task per column) ──► BufWriter
//!        │             ──► <ulid>/samples.parquet  (row groups as they fill)
//!        │ series rows buffered (small)
//!   finish() ──► samples.parquet closed ──► series.parquet ──► meta.json (last: the block becomes visible)
//!   abort()  ──► deletes whatever was uploaded
//! ```
//!
//! In format v2 each series' values are split by `values`: decimal-scaled integers where exact
//! (`value_int` + `value_scale`, one exponent per series), the rest as floats (`value`).
//!
//! A downsampled block (`resolution` > 0) takes [`AggrSeries`] through
//! [`BlockWriter::append_aggr_series`] and writes `aggregates.parquet` instead of
//! `samples.parquet` (docs/format.md §4a); series.parquet and meta.json are the same.
//!
//! A writer dropped without `finish` never writes `meta.json`, so the block stays invisible; its
//! leftovers are a partial upload that `Bucket::list_partial_blocks` finds and cleanup removes.

use std::collections::{BTreeMap, HashMap};
use std::sync::Arc;

use arrow::array::{
    ArrayRef, MapBuilder, MapFieldNames, RecordBatch, StringBuilder, StringDictionaryBuilder, UInt32Array, UInt64Array,
};
use arrow::array::{Float64Array, Int64Array};
use arrow::buffer::{BooleanBuffer, NullBuffer};
use arrow::datatypes::Int32Type;
use object_store::buffered::BufWriter;
use parquet::arrow::AsyncArrowWriter;
use parquet::errors::ParquetError;
use tokio::task::JoinHandle;

use crate::encode::ColumnParallelWriter;

use crate::aggr::AggrSeries;
use crate::bucket::Bucket;
use crate::error::{Error, Result};
use crate::format::{self, SamplesEncoding};
use crate::labels::{Labels, METRIC_NAME};
use crate::meta::{
    BlockDesc, BlockMeta, BlockStats, Compaction, Downsample, FileMeta, META_FILE, StrataFile, StrataMeta, ThanosMeta,
};
use crate::values;

/// What a new block is: identity, time range, labels and lineage.
#[derive(Debug, Clone, PartialEq)]
pub struct BlockWriterOptions {
    /// The block's ULID (directory name).
    pub ulid: ulid::Ulid,
    /// First covered timestamp (ms, inclusive).
    pub min_time: i64,
    /// End of the covered range (ms, exclusive).
    pub max_time: i64,
    /// External labels (meta.json `thanos.labels`).
    pub external_labels: BTreeMap<String, String>,
    /// Component that wrote the block: `sidecar`, `receive`, `converter`, `compactor` ...
    pub source: String,
    /// Compaction level (1 for fresh blocks).
    pub compaction_level: u32,
    /// Level-1 ULIDs contained; empty means just this block.
    pub compaction_sources: Vec<String>,
    /// Direct parents when produced by compaction.
    pub compaction_parents: Vec<BlockDesc>,
    /// ULID of the Prometheus block this one was converted from.
    pub source_ulid: Option<String>,
    /// Downsampling resolution in ms (0 = raw).
    pub resolution: i64,
}

impl BlockWriterOptions {
    /// Options for a fresh level-1 raw block without external labels.
    pub fn new(ulid: ulid::Ulid, min_time: i64, max_time: i64) -> Self {
        BlockWriterOptions {
            ulid,
            min_time,
            max_time,
            external_labels: BTreeMap::new(),
            source: "strata".into(),
            compaction_level: 1,
            compaction_sources: Vec::new(),
            compaction_parents: Vec::new(),
            source_ulid: None,
            resolution: 0,
        }
    }
}

struct SeriesRow {
    labels: Labels,
    min_time: i64,
    max_time: i64,
    num_samples: u64,
    first_row: u64,
}

/// Streams one block into a bucket. See the module docs.
pub struct BlockWriter {
    bucket: Bucket,
    opts: BlockWriterOptions,
    ulid: String,
    samples: Option<ColumnParallelWriter>,
    /// Format version written (1 or 2).
    version: u32,
    /// True for a downsampled block (rows of `aggregates.parquet`).
    aggregated: bool,
    /// The data file: `samples.parquet` or `aggregates.parquet`.
    data_file: &'static str,
    /// Downsampled blocks: rows not yet handed to the Parquet writer.
    pending_aggr: AggrSeries,
    pending_ids: Vec<u32>,
    pending_ts: Vec<i64>,
    /// The values of the pending rows, as appended.
    pending_vs: Vec<f64>,
    /// Rows per pending series, in order (v2 splits each series at its own scale).
    pending_lens: Vec<usize>,
    /// The previous pending rows being made into a record batch (the v2 split) in a blocking
    /// task, while the caller appends the next ones; written at the next flush.
    in_split: Option<JoinHandle<Result<Split>>>,
    series: Vec<SeriesRow>,
    rows: u64,
}

impl std::fmt::Debug for BlockWriter {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("BlockWriter")
            .field("ulid", &self.ulid)
            .field("series", &self.series.len())
            .field("rows", &self.rows)
            .finish()
    }
}

/// Samples handed to the Parquet writer at a time.
const WRITE_CHUNK_ROWS: usize = 64 * 1024;

impl BlockWriter {
    /// Starts a block of the current format ([`SamplesEncoding::V2`]); nothing is visible until
    /// [`BlockWriter::finish`].
    pub fn new(bucket: Bucket, opts: BlockWriterOptions) -> Result<Self> {
        Self::with_encoding(bucket, opts, SamplesEncoding::V2)
    }

    /// Like [`BlockWriter::new`] with explicit samples encodings: [`SamplesEncoding::V1`] writes a
    /// format v1 block, the other options serve measurements (readers accept any of them).
    pub fn with_encoding(bucket: Bucket, opts: BlockWriterOptions, enc: SamplesEncoding) -> Result<Self> {
        let ulid = opts.ulid.to_string();
        if opts.min_time >= opts.max_time {
            return Err(Error::BadInput {
                block: ulid,
                reason: format!("empty time range: minTime {} >= maxTime {}", opts.min_time, opts.max_time),
            });
        }
        if opts.resolution < 0 {
            return Err(Error::BadInput { block: ulid, reason: format!("negative resolution {}", opts.resolution) });
        }
        let aggregated = opts.resolution > 0;
        let (version, data_file) = if aggregated {
            (format::FORMAT_VERSION, format::AGGREGATES_FILE)
        } else {
            (enc.format_version(), format::SAMPLES_FILE)
        };
        let path = Bucket::block_path(&ulid, data_file);
        let kv = format::key_value_metadata(version, &ulid, &opts.external_labels);
        let (schema, props, alt) = if aggregated {
            (format::aggregates_schema(), format::aggregates_writer_properties(kv), None)
        } else {
            let alt = format::samples_alternative_properties(enc, kv.clone());
            (format::samples_schema(version), format::samples_writer_properties(enc, kv), alt)
        };
        let w = BufWriter::new(Arc::clone(bucket.store()), path.clone());
        let mut samples = ColumnParallelWriter::try_new(w, schema, props, path.as_ref())?;
        if let Some((column, props, min_saving)) = alt {
            samples = samples.with_alternative(column, props, min_saving)?;
        }
        Ok(BlockWriter {
            bucket,
            opts,
            ulid,
            samples: Some(samples),
            version,
            aggregated,
            data_file,
            pending_aggr: AggrSeries::default(),
            pending_ids: Vec::new(),
            pending_ts: Vec::new(),
            pending_vs: Vec::new(),
            pending_lens: Vec::new(),
            in_split: None,
            series: Vec::new(),
            rows: 0,
        })
    }

    /// ULID of the block being written.
    pub fn ulid(&self) -> &str {
        &self.ulid
    }

    /// Format version being written (`strata.format_version`).
    pub fn format_version(&self) -> u32 {
        self.version
    }

    fn bad(&self, reason: String) -> Error {
        Error::BadInput { block: self.ulid.clone(), reason }
    }

    /// Appends one whole series. Series must come in strictly increasing label order, timestamps
    /// strictly increasing inside `[min_time, max_time)`. Values are stored bit for bit (NaNs and
    /// stale markers included). A series without samples is skipped.
    pub async fn append_series(&mut self, labels: &Labels, timestamps: &[i64], values: &[f64]) -> Result<()> {
        if timestamps.len() != values.len() {
            return Err(self.bad(format!(
                "series {labels}: {} timestamps but {} values",
                timestamps.len(),
                values.len()
            )));
        }
        if self.aggregated {
            return Err(self.bad(format!("series {labels}: a downsampled block takes aggregates, not samples")));
        }
        let (Some(&first), Some(&last)) = (timestamps.first(), timestamps.last()) else { return Ok(()) };
        if let Some(i) = timestamps.windows(2).position(|w| w[0] >= w[1]) {
            return Err(self.bad(format!(
                "series {labels}: timestamp {} at index {} does not increase after {}",
                timestamps[i + 1],
                i + 1,
                timestamps[i]
            )));
        }
        let id = self.add_series(labels, first, last, timestamps.len() as u64)?;
        self.pending_ids.extend(std::iter::repeat_n(id, timestamps.len()));
        self.pending_ts.extend_from_slice(timestamps);
        self.pending_vs.extend_from_slice(values);
        self.pending_lens.push(values.len());
        if self.pending_ts.len() >= WRITE_CHUNK_ROWS {
            self.flush_samples(false).await?;
        }
        Ok(())
    }

    /// Checks a new series (order, labels, time range) and records its series row; returns its id.
    fn add_series(&mut self, labels: &Labels, first: i64, last: i64, rows: u64) -> Result<u32> {
        if let Some(prev) = self.series.last()
            && prev.labels >= *labels
        {
            return Err(self.bad(format!("series {labels} does not sort after the previous series {}", prev.labels)));
        }
        if labels.iter().any(|l| l.name.is_empty()) {
            return Err(self.bad(format!("series {labels} has an empty label name")));
        }
        if first < self.opts.min_time || last >= self.opts.max_time {
            return Err(self.bad(format!(
                "series {labels}: samples [{first}, {last}] fall outside the block range [{}, {})",
                self.opts.min_time, self.opts.max_time
            )));
        }
        let id = u32::try_from(self.series.len()).map_err(|_| self.bad("more than 2^32 series".into()))?;
        self.series.push(SeriesRow {
            labels: labels.clone(),
            min_time: first,
            max_time: last,
            num_samples: rows,
            first_row: self.rows,
        });
        self.rows += rows;
        Ok(id)
    }

    /// Appends one whole series of a downsampled block (docs/format.md §4a): rows in strictly
    /// increasing time, well-formed batches ([`AggrSeries::check`]), inside the block's range.
    /// Series come in strictly increasing label order; a series without rows is skipped.
    pub async fn append_aggr_series(&mut self, labels: &Labels, rows: &AggrSeries) -> Result<()> {
        if !self.aggregated {
            return Err(self.bad(format!("series {labels}: a raw block takes samples, not aggregates")));
        }
        if rows.is_empty() {
            return Ok(());
        }
        rows.check().map_err(|e| self.bad(format!("series {labels}: {e}")))?;
        let first = rows.counter_start.iter().flatten().map(|s| s.0).chain(rows.timestamps.first().copied()).min();
        let (Some(first), Some(&last)) = (first, rows.timestamps.last()) else { return Ok(()) };
        let id = self.add_series(labels, first.min(rows.timestamps[0]), last, rows.len() as u64)?;
        self.pending_ids.extend(std::iter::repeat_n(id, rows.len()));
        self.pending_aggr.extend_from(rows, 0..rows.len());
        if self.pending_ids.len() >= WRITE_CHUNK_ROWS {
            self.flush_samples(false).await?;
        }
        Ok(())
    }

    /// The pending rows of a downsampled block as a record batch.
    fn aggr_batch(&mut self) -> Result<RecordBatch> {
        let a = std::mem::take(&mut self.pending_aggr);
        let columns: Vec<ArrayRef> = vec![
            Arc::new(UInt32Array::from(std::mem::take(&mut self.pending_ids))),
            Arc::new(Int64Array::from(a.timestamps)),
            Arc::new(UInt64Array::from(a.count)),
            Arc::new(Float64Array::from(a.sum)),
            Arc::new(Float64Array::from(a.min)),
            Arc::new(Float64Array::from(a.max)),
            Arc::new(Float64Array::from(a.counter)),
            Arc::new(a.counter_start.iter().map(|s| s.map(|x| x.0)).collect::<Int64Array>()),
            Arc::new(a.counter_start.iter().map(|s| s.map(|x| x.1)).collect::<Float64Array>()),
            Arc::new(Float64Array::from(a.counter_end)),
        ];
        RecordBatch::try_new(format::aggregates_schema(), columns)
            .map_err(|e| Error::arrow(format!("aggregates batch of block {}", self.ulid), e))
    }

    /// Hands the pending rows on: a downsampled block's to the Parquet writer, a raw block's to a
    /// blocking task that builds their record batch (the v2 split), after writing the previous
    /// one. `last`: no more rows follow.
    async fn flush_samples(&mut self, last: bool) -> Result<()> {
        if self.aggregated {
            if self.pending_ids.is_empty() {
                return Ok(());
            }
            let batch = self.aggr_batch()?;
            return match self.samples.as_mut() {
                Some(w) => w.write(&batch).await,
                None => Err(self.bad("writer already finished".into())),
            };
        }
        if self.pending_ts.is_empty() {
            return Ok(());
        }
        // The previous rows' batch first: the buffers its split no longer needs take the next rows.
        let mut prev = match self.in_split.take() {
            Some(t) => Some(self.join_split(t).await?),
            None => None,
        };
        // The next rows go into buffers big enough for a whole write chunk (no regrowing copies).
        let cap = if last { 0 } else { WRITE_CHUNK_ROWS + WRITE_CHUNK_ROWS / 2 };
        let (spare_vs, spare_lens, is_int) = match prev {
            Some(Split { ref mut values, ref mut lens, ref mut is_int, .. }) if !last => {
                (std::mem::take(values), std::mem::take(lens), std::mem::take(is_int))
            }
            _ => (Vec::with_capacity(cap), Vec::new(), Vec::new()),
        };
        let ids = std::mem::replace(&mut self.pending_ids, Vec::with_capacity(cap));
        let ts = std::mem::replace(&mut self.pending_ts, Vec::with_capacity(cap));
        let vs = std::mem::replace(&mut self.pending_vs, spare_vs);
        let lens = std::mem::replace(&mut self.pending_lens, spare_lens);
        let (version, ulid) = (self.version, self.ulid.clone());
        self.in_split =
            Some(tokio::task::spawn_blocking(move || samples_batch(version, &ulid, ids, ts, vs, lens, is_int)));
        match prev {
            Some(p) => self.write_batch(&p.batch).await,
            None => Ok(()),
        }
    }

    /// Waits for a [`samples_batch`] task.
    async fn join_split(&mut self, task: JoinHandle<Result<Split>>) -> Result<Split> {
        task.await.map_err(|e| {
            Error::parquet(Bucket::block_path(&self.ulid, self.data_file), ParquetError::External(Box::new(e)))
        })?
    }

    /// Hands a record batch to the Parquet writer.
    async fn write_batch(&mut self, batch: &RecordBatch) -> Result<()> {
        match self.samples.as_mut() {
            Some(w) => w.write(batch).await,
            None => Err(self.bad("writer already finished".into())),
        }
    }

    /// Writes the remaining samples, `series.parquet` and finally `meta.json`; returns the meta.
    /// On error the uploaded files are deleted (best effort).
    pub async fn finish(self) -> Result<BlockMeta> {
        self.finish_after(std::future::ready(())).await
    }

    /// [`BlockWriter::finish`], awaiting `before_meta` once every data file is written and
    /// before `meta.json` is uploaded (the compactor's crash tests pause there).
    pub async fn finish_after(mut self, before_meta: impl std::future::Future<Output = ()>) -> Result<BlockMeta> {
        match self.finish_inner(before_meta).await {
            Ok(m) => Ok(m),
            Err(e) => {
                self.cleanup().await;
                Err(e)
            }
        }
    }

    async fn finish_inner(&mut self, before_meta: impl std::future::Future<Output = ()>) -> Result<BlockMeta> {
        self.flush_samples(true).await?;
        if let Some(t) = self.in_split.take() {
            let last = self.join_split(t).await?;
            self.write_batch(&last.batch).await?;
        }
        let samples_path = Bucket::block_path(&self.ulid, self.data_file);
        let series_path = Bucket::block_path(&self.ulid, format::SERIES_FILE);
        if let Some(w) = self.samples.take() {
            w.finish().await?;
        }
        let batch = self.series_batch()?;
        let props = format::series_writer_properties(format::key_value_metadata(
            self.version,
            &self.ulid,
            &self.opts.external_labels,
        ));
        let w = BufWriter::new(Arc::clone(self.bucket.store()), series_path.clone());
        let mut sw =
            AsyncArrowWriter::try_new(w, batch.schema(), Some(props)).map_err(|e| Error::parquet(&series_path, e))?;
        sw.write(&batch).await.map_err(|e| Error::parquet(&series_path, e))?;
        sw.close().await.map_err(|e| Error::parquet(&series_path, e))?;

        let samples_size = self.bucket.head(&samples_path).await?.size;
        let series_size = self.bucket.head(&series_path).await?.size;
        let o = &self.opts;
        let meta = BlockMeta {
            ulid: self.ulid.clone(),
            min_time: o.min_time,
            max_time: o.max_time,
            stats: BlockStats { num_samples: self.rows, num_series: self.series.len() as u64, ..Default::default() },
            compaction: Compaction {
                level: o.compaction_level.max(1),
                sources: if o.compaction_sources.is_empty() {
                    vec![self.ulid.clone()]
                } else {
                    o.compaction_sources.clone()
                },
                parents: o.compaction_parents.clone(),
                hints: Vec::new(),
            },
            version: 1,
            thanos: ThanosMeta {
                labels: o.external_labels.clone(),
                downsample: Downsample { resolution: o.resolution },
                source: o.source.clone(),
                files: vec![
                    FileMeta { rel_path: META_FILE.into(), size_bytes: None },
                    FileMeta { rel_path: self.data_file.into(), size_bytes: Some(samples_size) },
                    FileMeta { rel_path: format::SERIES_FILE.into(), size_bytes: Some(series_size) },
                ],
            },
            strata: Some(StrataMeta {
                format_version: self.version,
                source_ulid: o.source_ulid.clone(),
                files: vec![
                    StrataFile { name: self.data_file.into(), rows: self.rows, schema_version: self.version },
                    StrataFile {
                        name: format::SERIES_FILE.into(),
                        rows: self.series.len() as u64,
                        schema_version: self.version,
                    },
                ],
            }),
        };
        before_meta.await;
        self.bucket.put(&Bucket::block_path(&self.ulid, META_FILE), meta.to_json().into()).await?;
        Ok(meta)
    }

    /// Chooses the label columns: `__name__` always, then the most frequent names up to
    /// [`format::MAX_LABEL_COLUMNS`]; reserved names never get a column.
    fn label_columns(&self) -> Vec<String> {
        let mut freq: HashMap<&str, usize> = HashMap::new();
        for s in &self.series {
            for l in s.labels.iter() {
                *freq.entry(l.name.as_str()).or_default() += 1;
            }
        }
        let mut cands: Vec<(&str, usize)> = freq
            .into_iter()
            .filter(|(n, _)| *n != METRIC_NAME && !format::RESERVED_SERIES_COLUMNS.contains(n))
            .collect();
        cands.sort_by(|a, b| b.1.cmp(&a.1).then(a.0.cmp(b.0)));
        let mut names: Vec<String> =
            cands.into_iter().take(format::MAX_LABEL_COLUMNS - 1).map(|(n, _)| n.to_string()).collect();
        names.sort();
        let mut out = vec![METRIC_NAME.to_string()];
        out.extend(names);
        out
    }

    fn series_batch(&self) -> Result<RecordBatch> {
        let cols = self.label_columns();
        let col_index: HashMap<&str, usize> = cols.iter().enumerate().map(|(i, n)| (n.as_str(), i)).collect();
        let n = self.series.len();
        let mut label_builders: Vec<StringDictionaryBuilder<Int32Type>> =
            cols.iter().map(|_| StringDictionaryBuilder::new()).collect();
        let names = MapFieldNames { entry: "key_value".into(), key: "key".into(), value: "value".into() };
        let mut overflow = MapBuilder::new(Some(names), StringBuilder::new(), StringBuilder::new());
        let mut row_vals: Vec<Option<&str>> = vec![None; cols.len()];
        for s in &self.series {
            row_vals.iter_mut().for_each(|v| *v = None);
            let mut any_overflow = false;
            for l in s.labels.iter() {
                match col_index.get(l.name.as_str()) {
                    Some(&i) => row_vals[i] = Some(l.value.as_str()),
                    None => {
                        overflow.keys().append_value(&l.name);
                        overflow.values().append_value(&l.value);
                        any_overflow = true;
                    }
                }
            }
            for (b, v) in label_builders.iter_mut().zip(&row_vals) {
                b.append_option(*v);
            }
            overflow.append(any_overflow).map_err(|e| {
                Error::arrow(format!("overflow labels of series {} in block {}", s.labels, self.ulid), e)
            })?;
        }
        let mut arrays: Vec<ArrayRef> = vec![
            Arc::new(UInt32Array::from_iter_values(0..n as u32)),
            Arc::new(UInt64Array::from_iter_values(self.series.iter().map(|s| s.labels.stable_hash()))),
        ];
        arrays.extend(label_builders.iter_mut().map(|b| Arc::new(b.finish()) as ArrayRef));
        arrays.push(Arc::new(overflow.finish()));
        arrays.push(Arc::new(Int64Array::from_iter_values(self.series.iter().map(|s| s.min_time))));
        arrays.push(Arc::new(Int64Array::from_iter_values(self.series.iter().map(|s| s.max_time))));
        arrays.push(Arc::new(UInt64Array::from_iter_values(self.series.iter().map(|s| s.num_samples))));
        arrays.push(Arc::new(UInt64Array::from_iter_values(self.series.iter().map(|s| s.first_row))));
        RecordBatch::try_new(format::series_schema(&cols), arrays)
            .map_err(|e| Error::arrow(format!("series batch of block {}", self.ulid), e))
    }

    async fn cleanup(&mut self) {
        if let Some(w) = self.samples.take() {
            // Abort the multipart upload if one was started (LocalFileSystem keeps a staging file).
            w.abort().await;
        }
        if let Err(e) = self.bucket.delete_block(&self.ulid).await {
            tracing::warn!(block = %self.ulid, error = %e, "cleaning up an unfinished block failed");
        }
    }

    /// Gives up on the block and deletes whatever was uploaded.
    pub async fn abort(mut self) {
        self.cleanup().await;
    }
}

/// A record batch of [`samples_batch`] and the buffers it no longer needs, emptied for the next
/// rows (the values as appended, the rows per series, the split's integer flags).
struct Split {
    batch: RecordBatch,
    values: Vec<f64>,
    lens: Vec<usize>,
    is_int: Vec<bool>,
}

/// The record batch of `samples.parquet` in format `version` for rows of consecutive series
/// (`lens`: rows per series): v1 keeps the values, v2 splits each series at its own scale
/// ([`values::choose_exponent`], [`values::split`]). `is_int` is scratch space.
fn samples_batch(
    version: u32,
    ulid: &str,
    ids: Vec<u32>,
    ts: Vec<i64>,
    mut vs: Vec<f64>,
    mut lens: Vec<usize>,
    mut is_int: Vec<bool>,
) -> Result<Split> {
    let n = vs.len();
    let mut columns: Vec<ArrayRef> = vec![Arc::new(UInt32Array::from(ids)), Arc::new(Int64Array::from(ts))];
    if version == 1 {
        columns.push(Arc::new(Float64Array::from(std::mem::take(&mut vs))));
    } else {
        let (mut ints, mut floats) = (Vec::with_capacity(n), Vec::with_capacity(n));
        let mut scales = Vec::with_capacity(n);
        is_int.clear();
        let mut at = 0;
        for &len in &lens {
            let series = vs.get(at..at + len).unwrap_or_default();
            let scale = values::scale_of(values::choose_exponent(series));
            values::split(series, scale, &mut ints, &mut floats, &mut is_int);
            scales.resize(scales.len() + series.len(), scale);
            at += len;
        }
        let int_bits = BooleanBuffer::from(is_int.as_slice());
        let float_rows = NullBuffer::new(!&int_bits);
        let int_rows = NullBuffer::new(int_bits);
        columns.push(Arc::new(Float64Array::new(floats.into(), Some(float_rows))));
        columns.push(Arc::new(Int64Array::new(ints.into(), Some(int_rows))));
        columns.push(Arc::new(Float64Array::from(scales)));
    }
    let batch = RecordBatch::try_new(format::samples_schema(version), columns)
        .map_err(|e| Error::arrow(format!("samples batch of block {ulid}"), e))?;
    vs.clear();
    lens.clear();
    is_int.clear();
    Ok(Split { batch, values: vs, lens, is_int })
}

#[cfg(test)]
#[allow(clippy::unwrap_used, clippy::expect_used)]
pub(crate) mod tests {
    use super::*;
    use crate::meta::DELETION_MARK_FILE;

    /// The Prometheus stale marker.
    pub(crate) const STALE: u64 = 0x7ff0_0000_0000_0002;

    /// `n` synthetic series (sorted) over `[0, 7_200_000)`: counters, gauges, NaN, stale markers, a
    /// label named like a fixed column (`min_time`) and one only some series have (`zone`).
    pub(crate) fn synthetic(n: usize, t0: i64) -> Vec<(Labels, Vec<i64>, Vec<f64>)> {
        let mut out = Vec::with_capacity(n);
        for i in 0..n {
            let mut pairs = vec![
                ("__name__".to_string(), format!("metric_{}", i % 7)),
                ("job".to_string(), format!("job{}", i % 3)),
                ("instance".to_string(), format!("host-{i:04}")),
            ];
            if i % 5 == 0 {
                pairs.push(("zone".to_string(), format!("z{}", i % 2)));
            }
            if i % 11 == 0 {
                pairs.push(("min_time".to_string(), "odd".to_string()));
            }
            let step = 15_000 + (i as i64 % 4) * 15_000;
            let count = (1 + (i * 37) % 480).min((7_100_000 / step) as usize);
            let ts: Vec<i64> = (0..count as i64).map(|k| t0 + k * step + (k * 7 + i as i64) % 13).collect();
            let vs: Vec<f64> = (0..count)
                .map(|k| match (i % 9, k % 50) {
                    (0, 49) => f64::from_bits(STALE),
                    (1, 10) => f64::NAN,
                    (2, _) => -(k as f64) * 0.25,
                    _ => (i * 1000 + k * (1 + i % 5)) as f64,
                })
                .collect();
            out.push((Labels::from_pairs(pairs), ts, vs));
        }
        out.sort_by(|a, b| a.0.cmp(&b.0));
        out
    }

    pub(crate) async fn write_block(
        bucket: &Bucket,
        ulid: ulid::Ulid,
        ext: &[(&str, &str)],
        series: &[(Labels, Vec<i64>, Vec<f64>)],
    ) -> BlockMeta {
        let mut o = BlockWriterOptions::new(ulid, 0, 7_200_000);
        o.external_labels = ext.iter().map(|(a, b)| (a.to_string(), b.to_string())).collect();
        o.source = "test".into();
        let mut w = BlockWriter::new(bucket.clone(), o).unwrap();
        for (l, t, v) in series {
            w.append_series(l, t, v).await.unwrap();
        }
        w.finish().await.unwrap()
    }

    #[tokio::test]
    async fn writes_meta_last_with_counts_and_sizes() {
        let dir = tempfile::tempdir().unwrap();
        let b = Bucket::local(dir.path()).unwrap();
        let data = synthetic(300, 0);
        let ulid = ulid::Ulid::new();
        let meta = write_block(&b, ulid, &[("replica", "a")], &data).await;
        let total: usize = data.iter().map(|s| s.1.len()).sum();
        assert_eq!(meta.stats.num_samples, total as u64);
        assert_eq!(meta.stats.num_series, 300);
        assert_eq!(meta.compaction.sources, vec![ulid.to_string()]);
        assert_eq!(meta.thanos.labels.get("replica").map(String::as_str), Some("a"));
        let strata = meta.strata.as_ref().unwrap();
        assert_eq!(strata.format_version, 2);
        assert_eq!(strata.files[0].rows, total as u64);
        for f in meta.thanos.files.iter().filter(|f| f.size_bytes.is_some()) {
            let len = std::fs::metadata(dir.path().join(ulid.to_string()).join(&f.rel_path)).unwrap().len();
            assert_eq!(Some(len), f.size_bytes, "{}", f.rel_path);
        }
        assert_eq!(b.read_meta(&ulid.to_string()).await.unwrap(), meta);
        assert_eq!(b.list_blocks().await.unwrap(), vec![ulid.to_string()]);
    }

    #[tokio::test]
    async fn rejects_bad_input_naming_the_series() {
        let dir = tempfile::tempdir().unwrap();
        let b = Bucket::local(dir.path()).unwrap();
        let mut w = BlockWriter::new(b.clone(), BlockWriterOptions::new(ulid::Ulid::new(), 0, 1000)).unwrap();
        let x = Labels::from_pairs([("__name__", "x")]);
        let a = Labels::from_pairs([("__name__", "a")]);
        let e = w.append_series(&x, &[1, 1], &[1.0, 2.0]).await.unwrap_err().to_string();
        assert!(e.contains("x") && e.contains("does not increase"), "{e}");
        let e = w.append_series(&x, &[1, 1000], &[1.0, 2.0]).await.unwrap_err().to_string();
        assert!(e.contains("outside the block range"), "{e}");
        let e = w.append_series(&x, &[1], &[1.0, 2.0]).await.unwrap_err().to_string();
        assert!(e.contains("1 timestamps but 2 values"), "{e}");
        w.append_series(&x, &[], &[]).await.unwrap(); // skipped: no samples
        w.append_series(&x, &[5], &[1.0]).await.unwrap();
        let e = w.append_series(&a, &[5], &[1.0]).await.unwrap_err().to_string();
        assert!(e.contains("a does not sort after the previous series x"), "{e}");
        let e = w.append_series(&x, &[6], &[1.0]).await.unwrap_err().to_string();
        assert!(e.contains("does not sort after"), "{e}");
        let meta = w.finish().await.unwrap();
        assert_eq!((meta.stats.num_series, meta.stats.num_samples), (1, 1));
        assert!(BlockWriter::new(b, BlockWriterOptions::new(ulid::Ulid::new(), 5, 5)).is_err());
    }

    #[tokio::test]
    async fn dropped_or_aborted_writer_leaves_no_visible_block() {
        let dir = tempfile::tempdir().unwrap();
        let b = Bucket::local(dir.path()).unwrap();
        // Big enough that samples reach object storage before the drop.
        let data = synthetic(400, 0);
        let mut w = BlockWriter::new(b.clone(), BlockWriterOptions::new(ulid::Ulid::new(), 0, 7_200_000)).unwrap();
        for (l, t, v) in &data {
            w.append_series(l, t, v).await.unwrap();
        }
        drop(w);
        assert!(b.list_blocks().await.unwrap().is_empty());

        let u = ulid::Ulid::new();
        let mut w = BlockWriter::new(b.clone(), BlockWriterOptions::new(u, 0, 7_200_000)).unwrap();
        for (l, t, v) in &data {
            w.append_series(l, t, v).await.unwrap();
        }
        w.abort().await;
        assert!(b.list_blocks().await.unwrap().is_empty());
        assert!(!b.list_partial_blocks().await.unwrap().contains(&u.to_string()));
        assert!(!b.exists(&Bucket::block_path(&u.to_string(), DELETION_MARK_FILE)).await.unwrap());
    }

    #[tokio::test]
    async fn label_columns_reserved_names_and_limit() {
        let dir = tempfile::tempdir().unwrap();
        let b = Bucket::local(dir.path()).unwrap();
        let u = ulid::Ulid::new();
        let mut w = BlockWriter::new(b.clone(), BlockWriterOptions::new(u, 0, 100)).unwrap();
        // 300 distinct label names besides __name__: l000 on every series, l001.. on fewer.
        let mut series = Vec::new();
        for i in 0..300usize {
            let mut p = vec![("__name__".to_string(), "m".to_string()), (format!("l{i:03}"), "v".to_string())];
            p.push(("l000".into(), format!("{i}")));
            p.push(("series_id".into(), "x".into()));
            series.push(Labels::from_pairs(p));
        }
        series.sort();
        for l in &series {
            w.append_series(l, &[1], &[1.0]).await.unwrap();
        }
        w.finish().await.unwrap();
        let r = crate::reader::BlockReader::open(&b, &u.to_string()).await.unwrap();
        let schema = r.index().batch.schema();
        let names: Vec<&str> = schema.fields().iter().map(|f| f.name().as_str()).collect();
        assert_eq!(names.len(), 2 + format::MAX_LABEL_COLUMNS + 5);
        assert_eq!(&names[..4], &["series_id", "series_hash", "__name__", "l000"]);
        assert_eq!(names.iter().filter(|n| **n == "series_id").count(), 1);
        // Every label set, overflow included, reads back.
        assert_eq!(r.index().labels, series);
    }

    /// A new 5m block over `[0, max_time)` in `b`: its ULID and writer.
    fn aggr_writer(b: &Bucket, max_time: i64) -> (ulid::Ulid, BlockWriter) {
        let u = ulid::Ulid::new();
        let mut o = BlockWriterOptions::new(u, 0, max_time);
        o.resolution = crate::aggr::RESOLUTION_5M;
        (u, BlockWriter::new(b.clone(), o).unwrap())
    }

    #[tokio::test]
    async fn aggregates_of_series_across_record_batches_read_back_whole() {
        use crate::aggr::{AggrRow, AggrSeries};
        // 70 series of 2,000 rows: 140,000 rows, so series straddle the reader's 64Ki-row batches.
        let dir = tempfile::tempdir().unwrap();
        let b = Bucket::local(dir.path()).unwrap();
        let (u, mut w) = aggr_writer(&b, 1_000_000_000);
        let mut series = Vec::new();
        for k in 0..70u64 {
            let mut s = AggrSeries::default();
            for r in 0..2_000u64 {
                let t = 299_999 + r as i64 * 300_000;
                s.push(AggrRow {
                    t,
                    count: k * 10_000 + r,
                    sum: (k * r) as f64,
                    min: -(r as f64),
                    max: k as f64,
                    counter: (r % 7 != 3).then_some(r as f64),
                    counter_start: (r == 0 || r == 1_000).then_some((t - 1, k as f64)),
                    counter_end: (r == 999 || r == 1_999).then_some(r as f64 + 0.5),
                });
            }
            series.push((Labels::from_pairs([("__name__", "m"), ("i", &*format!("{k:03}"))]), s));
        }
        for (l, s) in &series {
            w.append_aggr_series(l, s).await.unwrap();
        }
        w.finish().await.unwrap();
        let r = crate::reader::BlockReader::open(&b, &u.to_string()).await.unwrap();
        // Through a page cache (pages decoded whole, then copied from): the same rows, on the
        // first read (misses) and the next (hits); a cache too small for a page still answers.
        for capacity in [1 << 30, 1 << 10] {
            let cache = Arc::new(crate::reader::PageCache::new(capacity));
            let c = crate::reader::BlockReader::open(&b, &u.to_string()).await.unwrap().with_page_cache(cache.clone());
            for ids in [vec![69, 3, 31, 32, 33, 50], (0..70).collect(), vec![34]] {
                for _ in 0..2 {
                    let got = c.read_aggregates(&ids, i64::MIN, i64::MAX).await.unwrap();
                    assert_eq!(got, r.read_aggregates(&ids, i64::MIN, i64::MAX).await.unwrap(), "{ids:?}");
                }
            }
            let st = cache.stats();
            assert_eq!(st.hits > 0, capacity > 1 << 10, "{st:?}");
        }
        // Every series, then a gapped subset (several row ranges).
        let all: Vec<u32> = (0..70).collect();
        for ids in [all, vec![69, 3, 31, 32, 33, 50]] {
            let got = r.read_aggregates(&ids, i64::MIN, i64::MAX).await.unwrap();
            let mut want_ids = ids.clone();
            want_ids.sort_unstable();
            assert_eq!(got.iter().map(|g| g.0).collect::<Vec<_>>(), want_ids);
            for (id, g) in &got {
                assert_eq!(g, &series[*id as usize].1, "series {id}");
            }
            // One or two aggregates decoded: those columns and the batch markers as written,
            // the others zero / None.
            use crate::aggr::Aggregate::{Count, Counter, Max, Min, Sum};
            for aggs in [vec![Max], vec![Counter], vec![Count, Sum], vec![Min]] {
                let got = r.read_aggregates_of(&ids, i64::MIN, i64::MAX, &aggs).await.unwrap();
                assert_eq!(got.iter().map(|g| g.0).collect::<Vec<_>>(), want_ids);
                for (id, g) in &got {
                    let w = &series[*id as usize].1;
                    let mut want = AggrSeries::default();
                    for k in 0..w.len() {
                        let mut row = w.row(k);
                        (row.count, row.sum, row.min, row.max) = (0, 0.0, 0.0, 0.0);
                        row.counter = None;
                        for a in &aggs {
                            match a {
                                Count => row.count = w.count[k],
                                Sum => row.sum = w.sum[k],
                                Min => row.min = w.min[k],
                                Max => row.max = w.max[k],
                                Counter => row.counter = w.counter[k],
                            }
                        }
                        want.push(row);
                    }
                    assert_eq!(g, &want, "series {id}, {aggs:?}");
                }
            }
        }
    }

    #[tokio::test]
    async fn downsampled_block_round_trips_aggregates() {
        use crate::aggr::{AggrRow, AggrSeries};
        let dir = tempfile::tempdir().unwrap();
        let b = Bucket::local(dir.path()).unwrap();
        let (u, mut w) = aggr_writer(&b, 10_000_000);
        let e = w.append_series(&Labels::from_pairs([("__name__", "a")]), &[1], &[1.0]).await.unwrap_err();
        assert!(e.to_string().contains("takes aggregates"), "{e}");
        let mut series = Vec::new();
        for k in 0..3u64 {
            let mut s = AggrSeries::default();
            // Two batches: rows 0..4 and 4..6; NaN sums and a missing counter kept as written.
            for r in 0..6u64 {
                let t = 299_999 + r as i64 * 300_000;
                s.push(AggrRow {
                    t,
                    count: 10 + r + k,
                    sum: if r == 2 { f64::NAN } else { r as f64 * 1.5 },
                    min: -(r as f64),
                    max: f64::MAX,
                    counter: (r != 3).then_some(100.0 + r as f64),
                    counter_start: (r == 0 || r == 4).then_some((t - 299_000, 7.0 + r as f64)),
                    counter_end: (r == 3 || r == 5).then_some(3.0),
                });
            }
            series.push((Labels::from_pairs([("__name__", "m"), ("i", &*k.to_string())]), s));
        }
        for (l, s) in &series {
            w.append_aggr_series(l, s).await.unwrap();
        }
        let meta = w.finish().await.unwrap();
        assert_eq!(meta.thanos.downsample.resolution, 300_000);
        assert_eq!((meta.stats.num_series, meta.stats.num_samples), (3, 18));
        assert_eq!(meta.strata.as_ref().unwrap().files[0].name, format::AGGREGATES_FILE);
        assert!(dir.path().join(u.to_string()).join(format::AGGREGATES_FILE).exists());
        assert!(!dir.path().join(u.to_string()).join(format::SAMPLES_FILE).exists());
        let r = crate::reader::BlockReader::open(&b, &u.to_string()).await.unwrap();
        assert_eq!(r.resolution(), 300_000);
        assert!(r.read_samples(&[0], 0, i64::MAX).await.is_err());
        let got = r.read_aggregates(&[2, 0, 1], i64::MIN, i64::MAX).await.unwrap();
        assert_eq!(got.len(), 3);
        for ((id, g), (l, want)) in got.iter().zip(&series) {
            assert_eq!(&r.index().labels[*id as usize], l);
            assert_eq!(g.timestamps, want.timestamps);
            assert_eq!(g.count, want.count);
            assert_eq!(
                g.sum.iter().map(|x| x.to_bits()).collect::<Vec<_>>(),
                want.sum.iter().map(|x| x.to_bits()).collect::<Vec<_>>()
            );
            assert_eq!(
                (&g.min, &g.max, &g.counter, &g.counter_end),
                (&want.min, &want.max, &want.counter, &want.counter_end)
            );
            assert_eq!(g.counter_start, want.counter_start);
        }
        // A time range touching only the second batch returns that whole batch.
        let got = r.read_aggregates(&[1], 1_300_000, 1_400_000).await.unwrap();
        assert_eq!(got[0].1.timestamps, vec![1_499_999, 1_799_999]);
        // Malformed batches are refused, naming the series.
        let mut w = BlockWriter::new(b.clone(), {
            let mut o = BlockWriterOptions::new(ulid::Ulid::new(), 0, 10_000_000);
            o.resolution = 300_000;
            o
        })
        .unwrap();
        let mut bad = series[0].1.clone();
        bad.counter_end[5] = None;
        let e = w.append_aggr_series(&series[0].0, &bad).await.unwrap_err().to_string();
        assert!(e.contains("no counter_end") && e.contains("m"), "{e}");
        w.abort().await;
    }
}
