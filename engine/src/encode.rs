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
//! groups, pages, statistics, Arrow schema metadata): only the threads differ.

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
    /// Rows handed to the current row group's column writers.
    rows_in_group: usize,
    /// The current row group's column writers (empty when none is open or a batch is in flight).
    writers: Vec<ArrowColumnWriter>,
    /// The batch being encoded: one task per column, in column order.
    in_flight: Vec<Task<ArrowColumnWriter>>,
}

impl std::fmt::Debug for ColumnParallelWriter {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ColumnParallelWriter")
            .field("path", &self.path)
            .field("row_groups", &self.file.flushed_row_groups().len())
            .field("rows_in_group", &self.rows_in_group)
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
            rows_in_group: 0,
            writers: Vec::new(),
            in_flight: Vec::new(),
        })
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
            if self.writers.is_empty() {
                let index = self.file.flushed_row_groups().len();
                self.writers = self.factory.create_column_writers(index).map_err(|e| self.err(e))?;
            }
            let part = batch.slice(at, take);
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
        match first_err {
            Some(e) => {
                self.writers.clear();
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
        let mut chunks = Vec::with_capacity(tasks.len());
        for t in tasks {
            chunks.push(join(t).await.map_err(|e| self.err(e))?);
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
        let _ = self.sink.abort().await;
    }
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
