//! [`ColumnParallelWriter`]: a block's data file (`samples.parquet`, `aggregates.parquet`) encoded
//! one column per blocking task, so a block write uses every core while the writer builds the next
//! batch.
//!
//! ```text
//!   write(batch) ──► one spawn_blocking task per column: levels, encodings, statistics, zstd pages
//!        │           (returns at once: the caller builds the next batch while this one encodes)
//!   row group full ──► column chunks appended in column order ──► bytes ──► BufWriter (upload)
//!   finish() ──► last row group, footer (page index, key-value metadata) ──► upload completed
//! ```
//!
//! The file is the one `parquet::arrow::ArrowWriter` writes with the same properties (same row
//! groups, pages, statistics, Arrow schema metadata): only the threads differ. With
//! [`ColumnParallelWriter::with_alternative`], one column is also encoded with other properties
//! (in a task of its own) and each row group keeps the other chunk when it is smaller by more than
//! a given share of the row group's bytes; readers see an ordinary file whose column chunks
//! declare their encodings. The second encoding stops for the rest of a row group once the
//! group's first page of rows shows that column too small a part of the group for any saving
//! to reach that share.

use std::sync::Arc;

use arrow::array::RecordBatch;
use arrow::datatypes::SchemaRef;
use bytes::Bytes;
use object_store::buffered::BufWriter;
use parquet::arrow::ArrowWriter;
use parquet::arrow::arrow_writer::{ArrowColumnChunk, ArrowColumnWriter, ArrowRowGroupWriterFactory, compute_leaves};
use parquet::arrow::async_writer::AsyncFileWriter;
use parquet::errors::ParquetError;
use parquet::file::properties::WriterProperties;
use parquet::file::writer::SerializedFileWriter;
use tokio::task::JoinHandle;

use crate::error::{Error, Result};

type Task<T> = JoinHandle<std::result::Result<T, ParquetError>>;

/// Writes one Parquet file of primitive columns, encoding the columns in parallel. See the module
/// docs.
pub(crate) struct ColumnParallelWriter {
    path: String,
    schema: SchemaRef,
    file: SerializedFileWriter<Vec<u8>>,
    factory: ArrowRowGroupWriterFactory,
    sink: BufWriter,
    /// Rows per row group (the last one may have fewer).
    row_group_rows: usize,
    /// Rows per data page (upper bound): the alternative is judged once a row group has as many.
    page_rows: usize,
    /// Rows handed to the current row group's column writers.
    rows_in_group: usize,
    /// Row groups whose alternative encoding was given up before the group closed.
    alternatives_dropped: usize,
    /// The current row group's column writers (empty when none is open or a batch is in flight).
    writers: Vec<ArrowColumnWriter>,
    /// The batch being encoded: one task per column, in column order.
    in_flight: Vec<Task<ArrowColumnWriter>>,
    /// A column encoded a second way: see [`ColumnParallelWriter::with_alternative`].
    alt: Option<Alternative>,
}

/// The second encoding of one column and its writer in the current row group.
struct Alternative {
    /// Index of the column (a primitive column: its leaf index too).
    column: usize,
    /// The other chunk is kept only when it saves more than this share of the row group's
    /// compressed bytes (0: whenever it is smaller).
    min_saving: f64,
    /// Makes the column writers of the other properties (only `column`'s is used).
    factory: ArrowRowGroupWriterFactory,
    /// The current row group's writer (None when no row group is open or a batch is in flight).
    writer: Option<ArrowColumnWriter>,
    in_flight: Option<Task<ArrowColumnWriter>>,
}

impl std::fmt::Debug for ColumnParallelWriter {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ColumnParallelWriter")
            .field("path", &self.path)
            .field("row_groups", &self.file.flushed_row_groups().len())
            .field("rows_in_group", &self.rows_in_group)
            .field("alternatives_dropped", &self.alternatives_dropped)
            .finish()
    }
}

impl ColumnParallelWriter {
    /// A writer of `schema` (primitive columns only) with `props` into `sink`; `path` names the file
    /// in errors.
    pub(crate) fn try_new(sink: BufWriter, schema: SchemaRef, props: WriterProperties, path: &str) -> Result<Self> {
        if let Some(f) = schema.fields().iter().find(|f| !f.data_type().is_primitive()) {
            return Err(Error::parquet(
                path,
                ParquetError::General(format!("column {} is not primitive ({})", f.name(), f.data_type())),
            ));
        }
        let row_group_rows = props.max_row_group_row_count().unwrap_or(usize::MAX).max(1);
        let page_rows = props.data_page_row_count_limit().max(1);
        // ArrowWriter adds the Arrow schema to the key-value metadata, as every Strata file has it.
        let (file, factory) = ArrowWriter::try_new(Vec::new(), Arc::clone(&schema), Some(props))
            .and_then(|w| w.into_serialized_writer())
            .map_err(|e| Error::parquet(path, e))?;
        Ok(ColumnParallelWriter {
            path: path.to_string(),
            schema,
            file,
            factory,
            sink,
            row_group_rows,
            page_rows,
            rows_in_group: 0,
            alternatives_dropped: 0,
            writers: Vec::new(),
            in_flight: Vec::new(),
            alt: None,
        })
    }

    /// Also encodes column `name` with `props` (which must differ from the file's only in that
    /// column's encoding settings); a row group keeps the second column chunk only when it is
    /// smaller than the first by more than `min_saving` (a share, 0 to 1) of the row group's
    /// compressed bytes (with the first chunk), else the file's own encoding. Costs one more
    /// encoding of that column, given up for the rest of a row group when, after at least a
    /// page's worth of its rows, the column's first chunk is no more than `min_saving` of the
    /// group's bytes so far (no alternative could then save that much on those rows).
    pub(crate) fn with_alternative(mut self, name: &str, props: WriterProperties, min_saving: f64) -> Result<Self> {
        let Some(column) = self.schema.fields().iter().position(|f| f.name() == name) else {
            return Err(self.err(ParquetError::General(format!("no column {name} for an alternative encoding"))));
        };
        let (_, factory) = ArrowWriter::try_new(Vec::new(), Arc::clone(&self.schema), Some(props))
            .and_then(|w| w.into_serialized_writer())
            .map_err(|e| self.err(e))?;
        self.alt = Some(Alternative { column, min_saving, factory, writer: None, in_flight: None });
        Ok(self)
    }

    fn err(&self, e: ParquetError) -> Error {
        Error::parquet(&self.path, e)
    }

    /// Hands `batch` (of the writer's schema) to the column tasks; returns once the previous batch
    /// is encoded, so one batch encodes while the caller builds the next.
    pub(crate) async fn write(&mut self, batch: &RecordBatch) -> Result<()> {
        if batch.schema().fields() != self.schema.fields() {
            return Err(self.err(ParquetError::General("record batch schema differs from the file's".into())));
        }
        let mut at = 0;
        while at < batch.num_rows() {
            let take = (self.row_group_rows - self.rows_in_group).min(batch.num_rows() - at);
            self.settle().await?;
            self.check_alternative();
            if self.writers.is_empty() {
                let index = self.file.flushed_row_groups().len();
                self.writers = self.factory.create_column_writers(index).map_err(|e| self.err(e))?;
                if let Some(a) = self.alt.as_mut() {
                    let mut all = a.factory.create_column_writers(index).map_err(|e| Error::parquet(&self.path, e))?;
                    a.writer = (a.column < all.len()).then(|| all.swap_remove(a.column));
                }
            }
            let part = batch.slice(at, take);
            if let Some(a) = self.alt.as_mut()
                && let Some(mut w) = a.writer.take()
            {
                let (col, field) = (Arc::clone(part.column(a.column)), Arc::clone(&self.schema.fields()[a.column]));
                a.in_flight = Some(tokio::task::spawn_blocking(move || {
                    for leaf in compute_leaves(&field, &col)? {
                        w.write(&leaf)?;
                    }
                    Ok(w)
                }));
            }
            let fields = self.schema.fields().clone();
            self.in_flight = std::mem::take(&mut self.writers)
                .into_iter()
                .zip(part.columns().iter().cloned())
                .zip(fields.iter().cloned())
                .map(|((mut w, col), field)| {
                    tokio::task::spawn_blocking(move || {
                        for leaf in compute_leaves(&field, &col)? {
                            w.write(&leaf)?;
                        }
                        Ok(w)
                    })
                })
                .collect();
            at += take;
            self.rows_in_group += take;
            if self.rows_in_group == self.row_group_rows {
                self.close_row_group().await?;
            }
        }
        Ok(())
    }

    /// Stops encoding the alternative for the rest of the open row group when it can no longer
    /// be kept: once the row group holds a page's worth of rows, an alternative can only save
    /// what the first chunk of its column takes, so when that column is no more than
    /// `min_saving` of the row group's bytes so far (for `timestamp` in a row group of
    /// irregular floats: 3% of it, where the share is 6.25%), the rest of the group keeps the
    /// file's own encoding and the second encoding's CPU is saved. Requires the batch in flight
    /// to be settled.
    fn check_alternative(&mut self) {
        let Some(a) = self.alt.as_mut() else { return };
        if a.writer.is_none() || self.rows_in_group < self.page_rows || a.min_saving <= 0.0 {
            return;
        }
        let Some(mine) = self.writers.get(a.column) else { return };
        let group: usize = self.writers.iter().map(ArrowColumnWriter::get_estimated_total_bytes).sum();
        if mine.get_estimated_total_bytes() as f64 <= a.min_saving * group as f64 {
            a.writer = None;
            self.alternatives_dropped += 1;
        }
    }

    /// Waits for the batch in flight and takes its column writers back.
    async fn settle(&mut self) -> Result<()> {
        let tasks = std::mem::take(&mut self.in_flight);
        let mut first_err = None;
        for t in tasks {
            match join(t).await {
                Ok(w) => self.writers.push(w),
                Err(e) => {
                    first_err.get_or_insert(e);
                }
            }
        }
        if let Some(a) = self.alt.as_mut()
            && let Some(t) = a.in_flight.take()
        {
            match join(t).await {
                Ok(w) => a.writer = Some(w),
                Err(e) => {
                    first_err.get_or_insert(e);
                }
            }
        }
        match first_err {
            Some(e) => {
                self.writers.clear();
                if let Some(a) = self.alt.as_mut() {
                    a.writer = None;
                }
                Err(self.err(e))
            }
            None => Ok(()),
        }
    }

    /// Closes the open row group: the last pages of every column (in parallel), then the chunks
    /// in column order into the file, whose bytes go to the upload.
    async fn close_row_group(&mut self) -> Result<()> {
        self.settle().await?;
        if self.writers.is_empty() {
            return Ok(());
        }
        let tasks: Vec<Task<ArrowColumnChunk>> = std::mem::take(&mut self.writers)
            .into_iter()
            .map(|w| tokio::task::spawn_blocking(move || w.close()))
            .collect();
        let alt = self.alt.as_mut().and_then(|a| Some((a.column, a.min_saving, a.writer.take()?)));
        let alt = alt.map(|(column, share, w)| (column, share, tokio::task::spawn_blocking(move || w.close())));
        let mut chunks = Vec::with_capacity(tasks.len());
        for t in tasks {
            chunks.push(join(t).await.map_err(|e| self.err(e))?);
        }
        if let Some((column, share, t)) = alt {
            let other = join(t).await.map_err(|e| self.err(e))?;
            let size = |c: &ArrowColumnChunk| c.close().metadata.compressed_size();
            let group: i64 = chunks.iter().map(size).sum();
            if let Some(mine) = chunks.get_mut(column)
                && keep_other(size(mine), size(&other), group, share)
            {
                *mine = other;
            }
        }
        let mut group = self.file.next_row_group().map_err(|e| Error::parquet(&self.path, e))?;
        for c in chunks {
            c.append_to_row_group(&mut group).map_err(|e| Error::parquet(&self.path, e))?;
        }
        group.close().map_err(|e| Error::parquet(&self.path, e))?;
        self.rows_in_group = 0;
        self.upload().await
    }

    /// Hands the bytes written so far to the upload.
    async fn upload(&mut self) -> Result<()> {
        // The next row group's bytes are about as many: no regrowing (and copying) of the buffer.
        let buf = self.file.inner_mut();
        let bytes = std::mem::replace(buf, Vec::with_capacity(buf.len()));
        if bytes.is_empty() {
            return Ok(());
        }
        self.sink.write(Bytes::from(bytes)).await.map_err(|e| self.err(e))
    }

    /// Writes the last row group and the footer and completes the upload.
    pub(crate) async fn finish(mut self) -> Result<()> {
        self.close_row_group().await?;
        self.file.finish().map_err(|e| Error::parquet(&self.path, e))?;
        self.upload().await?;
        self.sink.complete().await.map_err(|e| Error::parquet(&self.path, e))
    }

    /// Gives up: aborts the upload (a multipart upload or the local staging file).
    pub(crate) async fn abort(mut self) {
        for t in std::mem::take(&mut self.in_flight) {
            let _ = t.await;
        }
        if let Some(t) = self.alt.as_mut().and_then(|a| a.in_flight.take()) {
            let _ = t.await;
        }
        let _ = self.sink.abort().await;
    }
}

/// Whether a row group of `group` compressed bytes, whose column chunk takes `mine` bytes, keeps
/// the other encoding's chunk of `other` bytes: when it saves more than `share` of the group.
fn keep_other(mine: i64, other: i64, group: i64, share: f64) -> bool {
    other < mine && (mine - other) as f64 > share * group as f64
}

async fn join<T>(t: Task<T>) -> std::result::Result<T, ParquetError> {
    match t.await {
        Ok(r) => r,
        Err(e) => Err(ParquetError::External(Box::new(e))),
    }
}

#[cfg(test)]
#[allow(clippy::unwrap_used, clippy::expect_used)]
mod tests {
    use super::*;
    use crate::format::{self, SamplesEncoding};
    use arrow::array::{ArrayRef, Float64Array, Int64Array, UInt32Array};
    use object_store::memory::InMemory;
    use object_store::path::Path as ObjPath;
    use object_store::{ObjectStore, ObjectStoreExt};

    /// Batches of the v2 samples schema: uneven sizes, nulls in both value columns.
    fn batches(rows: &[usize]) -> Vec<RecordBatch> {
        let mut start = 0usize;
        rows.iter()
            .map(|&n| {
                let r = start..start + n;
                start += n;
                let is_int: Vec<bool> = r.clone().map(|i| i % 7 != 3).collect();
                let cols: Vec<ArrayRef> = vec![
                    Arc::new(UInt32Array::from_iter_values(r.clone().map(|i| (i / 500) as u32))),
                    Arc::new(Int64Array::from_iter_values(r.clone().map(|i| (i % 500) as i64 * 15_000))),
                    Arc::new(Float64Array::from_iter(
                        r.clone().zip(&is_int).map(|(i, b)| (!b).then_some(i as f64 / 3.0)),
                    )),
                    Arc::new(Int64Array::from_iter(r.clone().zip(&is_int).map(|(i, b)| b.then_some((i * i) as i64)))),
                    Arc::new(Float64Array::from_iter_values(r.map(|i| if (i / 500) % 2 == 0 { 1.0 } else { 100.0 }))),
                ];
                RecordBatch::try_new(format::samples_schema(2), cols).unwrap()
            })
            .collect()
    }

    /// Sizes and encodings of column `col` per row group of a Parquet file.
    fn chunks_of(file: Bytes, col: usize) -> Vec<(i64, Vec<parquet::basic::Encoding>)> {
        use parquet::file::reader::FileReader;
        let r = parquet::file::reader::SerializedFileReader::new(file).unwrap();
        r.metadata()
            .row_groups()
            .iter()
            .map(|rg| (rg.column(col).compressed_size(), rg.column(col).encodings().collect()))
            .collect()
    }

    /// `batch` written by ArrowWriter with `props` in slices of 7,000 rows.
    fn arrow_file(batch: &RecordBatch, props: WriterProperties) -> Bytes {
        let mut out = Vec::new();
        let mut w = ArrowWriter::try_new(&mut out, batch.schema(), Some(props)).unwrap();
        for at in (0..batch.num_rows()).step_by(7_000) {
            w.write(&batch.slice(at, 7_000.min(batch.num_rows() - at))).unwrap();
        }
        w.close().unwrap();
        Bytes::from(out)
    }

    /// `batch` written by a [`ColumnParallelWriter`] with `props` and the alternative `alt` (column,
    /// properties, share) in slices of 7,000 rows (as [`arrow_file`]): the file and the number of
    /// row groups whose alternative was given up.
    async fn parallel_file(
        batch: &RecordBatch,
        props: WriterProperties,
        alt: (&str, WriterProperties, f64),
    ) -> (Bytes, usize) {
        let store: Arc<dyn ObjectStore> = Arc::new(InMemory::new());
        let path = ObjPath::from("samples.parquet");
        let sink = BufWriter::new(Arc::clone(&store), path.clone());
        let mut w = ColumnParallelWriter::try_new(sink, batch.schema(), props, "alt")
            .unwrap()
            .with_alternative(alt.0, alt.1, alt.2)
            .unwrap();
        for at in (0..batch.num_rows()).step_by(7_000) {
            w.write(&batch.slice(at, 7_000.min(batch.num_rows() - at))).await.unwrap();
        }
        let dropped = w.alternatives_dropped;
        w.finish().await.unwrap();
        (store.get(&path).await.unwrap().bytes().await.unwrap(), dropped)
    }

    #[tokio::test]
    async fn alternative_encoding_keeps_the_smaller_chunk() {
        use parquet::basic::Encoding;
        let mut enc = SamplesEncoding::V2;
        enc.row_group_rows = 20_000;
        enc.page_rows = 20_000;
        // Row group 1: 40 series of regular 15 s scrapes (deltas win); row groups 2 and 3: 60
        // series sharing the same scrape times, 0-7 ms late (split bytes win).
        let mut ts = Vec::new();
        let mut ids = Vec::new();
        for s in 0..40u32 {
            ts.extend((0..500i64).map(|k| k * 15_000 + i64::from(s)));
            ids.extend(std::iter::repeat_n(s, 500));
        }
        let mut x = 7u64;
        let jittered: Vec<i64> = (0..500i64)
            .map(|k| {
                x = x.wrapping_mul(6_364_136_223_846_793_005).wrapping_add(1_442_695_040_888_963_407);
                k * 15_000 + (x >> 61) as i64
            })
            .collect();
        for s in 40..100u32 {
            ts.extend_from_slice(&jittered);
            ids.extend(std::iter::repeat_n(s, 500));
        }
        let n = ts.len();
        let cols: Vec<ArrayRef> = vec![
            Arc::new(UInt32Array::from(ids)),
            Arc::new(Int64Array::from(ts)),
            Arc::new(Float64Array::from(vec![None; n])),
            Arc::new(Int64Array::from_iter_values((0..n as i64).map(|i| i % 1000))),
            Arc::new(Float64Array::from(vec![1.0; n])),
        ];
        let batch = RecordBatch::try_new(format::samples_schema(2), cols).unwrap();
        let kv = format::key_value_metadata(2, "01TEST", &Default::default());
        let props = format::samples_writer_properties(enc, kv.clone());
        let (name, alt_props, want_share) = format::samples_alternative_properties(enc, kv).unwrap();
        assert_eq!(want_share, format::TIMESTAMP_SPLIT_MIN_SAVING);
        assert_eq!(name, format::COL_TIMESTAMP);

        // Each encoding alone, by ArrowWriter, written in the same slices (pages end alike).
        let delta_file = arrow_file(&batch, props.clone());
        let delta = chunks_of(delta_file.clone(), 1);
        let split = chunks_of(arrow_file(&batch, alt_props.clone()), 1);
        // Bytes of each row group with delta timestamps (all columns).
        let groups: Vec<i64> = {
            use parquet::file::reader::FileReader;
            let r = parquet::file::reader::SerializedFileReader::new(delta_file).unwrap();
            r.metadata().row_groups().iter().map(|rg| rg.compressed_size()).collect()
        };

        // Share 0: the smaller chunk; a share above what split bytes save: deltas everywhere; the
        // share the format uses: whatever the rule says per row group.
        let saved: Vec<f64> =
            delta.iter().zip(&split).zip(&groups).map(|((d, s), g)| (d.0 - s.0) as f64 / *g as f64).collect();
        let most = saved.iter().copied().fold(0.0, f64::max);
        assert!(most > 0.0, "split bytes save nothing here: {saved:?}");
        for (share, want) in
            [(0.0, Some([false, true, true])), (most * 1.01, Some([false, false, false])), (want_share, None)]
        {
            let (got, _) = parallel_file(&batch, props.clone(), (name, alt_props.clone(), share)).await;
            let chosen = chunks_of(got.clone(), 1);
            assert_eq!(chosen.len(), 3);
            let mut kinds = Vec::new();
            for (((c, d), s), g) in chosen.iter().zip(&delta).zip(&split).zip(&groups) {
                let keep = keep_other(d.0, s.0, *g, share);
                assert_eq!(c.0, if keep { s.0 } else { d.0 }, "share {share}: chosen {c:?}, deltas {d:?}, split {s:?}");
                assert_eq!(c.1.contains(&Encoding::BYTE_STREAM_SPLIT), keep, "share {share}: {c:?}");
                kinds.push(keep);
            }
            if let Some(want) = want {
                assert_eq!(kinds, want, "share {share}: {chosen:?} (savings {saved:?})");
            }
            // The file reads back as written.
            let back: Vec<RecordBatch> = parquet::arrow::arrow_reader::ParquetRecordBatchReader::try_new(got, 1 << 20)
                .unwrap()
                .collect::<std::result::Result<_, _>>()
                .unwrap();
            assert_eq!(arrow::compute::concat_batches(&format::samples_schema(2), &back).unwrap(), batch);
        }
        // An unknown column is refused.
        let store: Arc<dyn ObjectStore> = Arc::new(InMemory::new());
        let sink = BufWriter::new(store, ObjPath::from("x"));
        let w =
            ColumnParallelWriter::try_new(sink, format::samples_schema(2), WriterProperties::default(), "x").unwrap();
        assert!(w.with_alternative("nope", WriterProperties::default(), 0.0).unwrap_err().to_string().contains("nope"));
    }

    #[tokio::test]
    async fn alternative_given_up_where_its_column_is_too_small_a_part() {
        // Two row groups of noisy floats scraped on time (timestamps a tiny part of the group),
        // then two of integer series sharing jittered scrape times (split bytes win there).
        let mut enc = SamplesEncoding::V2;
        enc.row_group_rows = 30_000;
        enc.page_rows = 5_000;
        let mut x = 11u64;
        let mut rnd = || {
            x = x.wrapping_mul(6_364_136_223_846_793_005).wrapping_add(1_442_695_040_888_963_407);
            x
        };
        let jittered: Vec<i64> = (0..500i64).map(|k| k * 15_000 + (rnd() >> 61) as i64).collect();
        let regular: Vec<i64> = (0..500i64).map(|k| k * 15_000).collect();
        let (mut ids, mut ts, mut floats) = (Vec::new(), Vec::new(), Vec::new());
        for s in 0..240u32 {
            ids.extend(std::iter::repeat_n(s, 500));
            ts.extend_from_slice(if s < 120 { &regular } else { &jittered });
            floats.extend((0..500).map(|_| (s < 120).then(|| f64::from_bits(rnd() >> 2))));
        }
        let n = ts.len();
        let cols: Vec<ArrayRef> = vec![
            Arc::new(UInt32Array::from(ids)),
            Arc::new(Int64Array::from(ts)),
            Arc::new(Float64Array::from(floats.clone())),
            Arc::new(Int64Array::from_iter(floats.iter().map(|f| f.is_none().then_some(7)))),
            Arc::new(Float64Array::from(vec![1.0; n])),
        ];
        let batch = RecordBatch::try_new(format::samples_schema(2), cols).unwrap();
        let kv = format::key_value_metadata(2, "01TEST", &Default::default());
        let props = format::samples_writer_properties(enc, kv.clone());
        let (name, alt_props, share) = format::samples_alternative_properties(enc, kv).unwrap();
        let write = async |share: f64| parallel_file(&batch, props.clone(), (name, alt_props.clone(), share)).await;
        // Share 0 never gives up: the later row groups, of integers, keep split timestamps.
        let (all, dropped) = write(0.0).await;
        assert_eq!(dropped, 0);
        let kinds: Vec<bool> =
            chunks_of(all, 1).iter().map(|c| c.1.contains(&parquet::basic::Encoding::BYTE_STREAM_SPLIT)).collect();
        assert_eq!(kinds.len(), 4);
        assert!(kinds[2..].contains(&true), "{kinds:?}");
        // The format's share: the float row groups give up after their first page and are the
        // file ArrowWriter writes with deltas; the integer row groups still weigh both (2 dropped).
        let (got, dropped) = write(share).await;
        assert_eq!(dropped, 2);
        let chosen = chunks_of(got.clone(), 1);
        assert!(!chosen[0].1.contains(&parquet::basic::Encoding::BYTE_STREAM_SPLIT), "{chosen:?}");
        assert!(!chosen[1].1.contains(&parquet::basic::Encoding::BYTE_STREAM_SPLIT), "{chosen:?}");
        let want = chunks_of(arrow_file(&batch, props), 1);
        assert_eq!(&chosen[..2], &want[..2]);
    }

    #[tokio::test]
    async fn writes_the_bytes_arrow_writer_writes() {
        let mut enc = SamplesEncoding::V2;
        // Small row groups and pages so that batches straddle row groups.
        enc.row_group_rows = 3000;
        enc.page_rows = 700;
        let kv = format::key_value_metadata(2, "01TEST", &Default::default());
        let props = format::samples_writer_properties(enc, kv);
        let input = batches(&[1000, 2500, 64, 4000, 1, 2435]);

        let mut want = Vec::new();
        let mut aw = ArrowWriter::try_new(&mut want, format::samples_schema(2), Some(props.clone())).unwrap();
        for b in &input {
            aw.write(b).unwrap();
        }
        aw.close().unwrap();

        let store: Arc<dyn ObjectStore> = Arc::new(InMemory::new());
        let path = ObjPath::from("b/samples.parquet");
        let sink = BufWriter::new(Arc::clone(&store), path.clone());
        let mut w = ColumnParallelWriter::try_new(sink, format::samples_schema(2), props.clone(), "b").unwrap();
        for b in &input {
            w.write(b).await.unwrap();
        }
        w.finish().await.unwrap();
        let got = store.get(&path).await.unwrap().bytes().await.unwrap();
        assert_eq!(got.len(), want.len());
        assert!(got == want, "files differ");

        // A batch of another schema is refused; an empty file is still a valid file.
        let sink = BufWriter::new(Arc::clone(&store), ObjPath::from("c"));
        let mut w = ColumnParallelWriter::try_new(sink, format::samples_schema(2), props.clone(), "c").unwrap();
        let v1 = RecordBatch::try_new(
            format::samples_schema(1),
            vec![
                Arc::new(UInt32Array::from(vec![1])) as ArrayRef,
                Arc::new(Int64Array::from(vec![1])),
                Arc::new(Float64Array::from(vec![1.0])),
            ],
        )
        .unwrap();
        assert!(w.write(&v1).await.unwrap_err().to_string().contains("schema differs"));
        w.finish().await.unwrap();
        let empty = store.get(&ObjPath::from("c")).await.unwrap().bytes().await.unwrap();
        let md = parquet::file::reader::SerializedFileReader::new(empty).unwrap();
        assert_eq!(parquet::file::reader::FileReader::metadata(&md).file_metadata().num_rows(), 0);
    }
}
