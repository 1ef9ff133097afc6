//! SQL over a bucket: DataFusion tables `samples` and `series` spanning all complete blocks.
//!
//! ```text
//!   samples: block (Utf8 ULID) | series_id | timestamp | value (Float64, both formats)
//!   series:  block | series_id | series_hash | __name__ | <label columns, union over blocks> | labels
//!            | min_time | max_time | num_samples | first_row
//!
//!   view (column order, `block` first) ─► BlockFilesTable ─► DataSourceExec(ParquetSource)
//!                                          one PartitionedFile per block, partition values =
//!                                          ULID and block index (a cheap join key)
//! ```
//!
//! `samples` reads v1 and v2 files alike: the file table has v2's columns (a v1 file reads NULL for
//! `value_int` and `value_scale`) and the view computes `value` as
//! `coalesce(value, CAST(value_int AS DOUBLE) / value_scale)`, the documented decoding.
//!
//! Scans are DataFusion's own Parquet scan (row-group/page pruning, filter pushdown); the block
//! ULID is a per-file partition value. At planning, a filter on `timestamp` skips the files whose
//! timestamps (footer statistics, read at registration) cannot match, and files fewer than the
//! partitions are split into byte ranges so that every partition decodes a share of them. The
//! tables are a snapshot of the block list at registration; register again to see new blocks. A
//! label column absent from a block reads as NULL there; a label named `block` is exposed as
//! `label_block` (the name `block` is the ULID column).

use std::collections::BTreeSet;
use std::sync::Arc;

use arrow::array::Array;
use arrow::datatypes::{DataType, Field, FieldRef, Schema, SchemaRef};
use async_trait::async_trait;
use datafusion::catalog::{Session, TableProvider};
use datafusion::common::pruning::PrunableStatistics;
use datafusion::common::stats::Precision;
use datafusion::common::{DFSchema, ScalarValue, Statistics};
use datafusion::datasource::listing::PartitionedFile;
use datafusion::datasource::object_store::ObjectStoreUrl;
use datafusion::datasource::physical_plan::{FileGroup, FileGroupPartitioner, FileScanConfigBuilder, ParquetSource};
use datafusion::datasource::source::DataSourceExec;
use datafusion::datasource::table_schema::TableSchema;
use datafusion::functions::expr_fn::coalesce;
use datafusion::logical_expr::utils::conjunction;
use datafusion::logical_expr::{Expr, cast, col};
use datafusion::physical_expr::PhysicalExpr;
use datafusion::physical_optimizer::pruning::PruningPredicateBuilder;
use datafusion::physical_plan::ExecutionPlan;
use datafusion::physical_plan::empty::EmptyExec;
use datafusion::prelude::SessionContext;
use parquet::arrow::arrow_reader::{ArrowReaderMetadata, ArrowReaderOptions};
use parquet::file::metadata::ParquetMetaData;
use parquet::file::statistics::Statistics as ParquetStatistics;

use crate::bucket::Bucket;
use crate::error::{Error, Result};
use crate::format;
use crate::reader::ObjectReader;

/// Name of the block column (ULID of the block a row comes from).
pub const BLOCK_COLUMN: &str = "block";
/// Internal name of the partition column inside the providers.
pub const PARTITION_COLUMN: &str = "__strata_block";
/// Internal name of the second partition column: the block's position in the snapshot's block
/// list (`UInt32`, the same in the samples and series tables of one [`BucketFiles`]), a join key
/// far cheaper to hash and compare than the ULID.
pub const BLOCK_INDEX_COLUMN: &str = "__strata_block_index";

/// A table over one Parquet file per block, with the block ULID as a partition column.
#[derive(Debug)]
pub struct BlockFilesTable {
    url: ObjectStoreUrl,
    file_schema: SchemaRef,
    schema: SchemaRef,
    files: Vec<BlockFile>,
}

/// One block's file of a [`BlockFilesTable`].
#[derive(Debug, Clone)]
struct BlockFile {
    ulid: String,
    path: String,
    size: u64,
    /// Position of the block in the snapshot's block list ([`BLOCK_INDEX_COLUMN`]).
    index: u32,
    /// Least and greatest `timestamp` in the file (exact, from its footer's row-group
    /// statistics); `None` when unknown.
    time_range: Option<(i64, i64)>,
}

impl BlockFilesTable {
    fn new(url: ObjectStoreUrl, file_schema: SchemaRef, files: Vec<BlockFile>) -> Self {
        let mut fields: Vec<FieldRef> = file_schema.fields().iter().cloned().collect();
        fields.extend(partition_fields());
        let schema = Arc::new(Schema::new(fields));
        BlockFilesTable { url, file_schema, schema, files }
    }
}

/// The partition columns: the block ULID and the block index.
fn partition_fields() -> Vec<FieldRef> {
    vec![
        Arc::new(Field::new(PARTITION_COLUMN, DataType::Utf8, false)),
        Arc::new(Field::new(BLOCK_INDEX_COLUMN, DataType::UInt32, false)),
    ]
}

fn is_partition_column(name: &str) -> bool {
    name == PARTITION_COLUMN || name == BLOCK_INDEX_COLUMN
}

#[async_trait]
impl TableProvider for BlockFilesTable {
    fn schema(&self) -> SchemaRef {
        Arc::clone(&self.schema)
    }

    crate::inexact_base_table!();

    async fn scan(
        &self,
        state: &dyn Session,
        projection: Option<&Vec<usize>>,
        filters: &[Expr],
        limit: Option<usize>,
    ) -> datafusion::error::Result<Arc<dyn ExecutionPlan>> {
        // Files whose block is excluded by a filter on the block column are skipped; filters on
        // file columns go to the Parquet scan for row-group and page pruning.
        let mut block_filters = Vec::new();
        let mut file_filters = Vec::new();
        for f in filters {
            let refs = f.column_refs();
            if refs.iter().all(|c| is_partition_column(&c.name)) && !refs.is_empty() {
                block_filters.push(f.clone());
            } else if refs.iter().all(|c| !is_partition_column(&c.name)) {
                file_filters.push(f.clone());
            }
        }
        let table_schema =
            TableSchema::builder(Arc::clone(&self.file_schema)).with_table_partition_cols(partition_fields()).build();
        let mut source = ParquetSource::new(table_schema).with_enable_page_index(true);
        let file_predicate = match conjunction(file_filters) {
            Some(pred) => {
                let df_schema = DFSchema::try_from(Arc::clone(&self.file_schema))?;
                let phys = state.create_physical_expr(pred, &df_schema)?;
                source = source.with_predicate(Arc::clone(&phys));
                Some(phys)
            }
            None => None,
        };
        // The block filters as one predicate over the partition columns, built once for all blocks.
        let block_pred = match conjunction(block_filters) {
            Some(pred) => {
                let part_schema = Arc::new(Schema::new(partition_fields()));
                let df_schema = DFSchema::try_from(Arc::clone(&part_schema))?;
                Some((state.create_physical_expr(pred, &df_schema)?, part_schema))
            }
            None => None,
        };
        let keep_block = |ulid: &str, index: u32| -> datafusion::error::Result<bool> {
            let Some((phys, part_schema)) = &block_pred else { return Ok(true) };
            let batch = arrow::array::RecordBatch::try_new(
                Arc::clone(part_schema),
                vec![
                    Arc::new(arrow::array::StringArray::from(vec![ulid])),
                    Arc::new(arrow::array::UInt32Array::from(vec![index])),
                ],
            )?;
            let v = phys.evaluate(&batch)?.into_array(1)?;
            let b = v.as_any().downcast_ref::<arrow::array::BooleanArray>();
            Ok(b.is_some_and(|b| b.is_valid(0) && b.value(0)))
        };
        let mut kept = Vec::new();
        for f in &self.files {
            if keep_block(&f.ulid, f.index)? {
                kept.push(f);
            }
        }
        if let Some(pred) = &file_predicate {
            kept = self.prune_by_time(pred, kept);
        }
        let files: Vec<PartitionedFile> = kept
            .into_iter()
            .map(|f| {
                PartitionedFile::new(f.path.clone(), f.size).with_partition_values(vec![
                    ScalarValue::Utf8(Some(f.ulid.clone())),
                    ScalarValue::UInt32(Some(f.index)),
                ])
            })
            .collect();
        let groups = file_groups(files, state.config().target_partitions().max(1));
        if groups.is_empty() {
            // No file: one empty partition (a scan of no file group has none, which a join that
            // collects this side cannot plan on).
            let schema = match projection {
                Some(p) => Arc::new(self.schema.project(p)?),
                None => Arc::clone(&self.schema),
            };
            return Ok(Arc::new(EmptyExec::new(schema)));
        }
        let config = FileScanConfigBuilder::new(self.url.clone(), Arc::new(source))
            .with_file_groups(groups)
            .with_projection_indices(projection.cloned())?
            .with_limit(limit)
            .build();
        Ok(DataSourceExec::from_data_source(config))
    }
}

impl BlockFilesTable {
    /// The files of `files` whose `timestamp` range can hold rows `predicate` accepts (all when
    /// the predicate says nothing about `timestamp` or the ranges are unknown): a time filter
    /// skips whole blocks at planning, so that the partitions share the blocks that are left.
    fn prune_by_time<'a>(&self, predicate: &Arc<dyn PhysicalExpr>, files: Vec<&'a BlockFile>) -> Vec<&'a BlockFile> {
        let Ok(ts) = self.file_schema.index_of(format::COL_TIMESTAMP) else { return files };
        if files.iter().all(|f| f.time_range.is_none()) {
            return files;
        }
        let Ok(pruning) = PruningPredicateBuilder::new()
            .with_file_schema(Arc::clone(&self.file_schema))
            .try_build(Arc::clone(predicate))
        else {
            return files;
        };
        let stats: Vec<Arc<Statistics>> = files
            .iter()
            .map(|f| {
                let mut s = Statistics::new_unknown(&self.file_schema);
                if let (Some((lo, hi)), Some(c)) = (f.time_range, s.column_statistics.get_mut(ts)) {
                    c.min_value = Precision::Exact(ScalarValue::Int64(Some(lo)));
                    c.max_value = Precision::Exact(ScalarValue::Int64(Some(hi)));
                }
                Arc::new(s)
            })
            .collect();
        match pruning.prune(&PrunableStatistics::new(stats, Arc::clone(&self.file_schema))) {
            Ok(keep) => files.into_iter().zip(keep).filter_map(|(f, k)| k.then_some(f)).collect(),
            Err(_) => files,
        }
    }
}

/// `files` in `partitions` groups: round robin when there are at least as many files as
/// partitions, else byte ranges of the files (each partition decodes a share of their row groups:
/// a statement over the last hour reads one block, and would otherwise decode it on one core).
fn file_groups(files: Vec<PartitionedFile>, partitions: usize) -> Vec<FileGroup> {
    if files.len() < partitions && !files.is_empty() {
        let one = [FileGroup::new(files.clone())];
        let split = FileGroupPartitioner::new()
            .with_target_partitions(partitions)
            .with_repartition_file_min_size(0)
            .repartition_file_groups(&one);
        if let Some(groups) = split {
            return groups.into_iter().filter(|g| !g.is_empty()).collect();
        }
    }
    let mut groups: Vec<Vec<PartitionedFile>> = vec![Vec::new(); partitions];
    for (i, f) in files.into_iter().enumerate() {
        groups[i % partitions].push(f);
    }
    groups.into_iter().filter(|g| !g.is_empty()).map(FileGroup::new).collect()
}

/// The least and greatest `timestamp` of a Parquet file from its row-group statistics; `None`
/// when it has no such column or a row group lacks them.
fn time_range(md: &ParquetMetaData) -> Option<(i64, i64)> {
    let columns = md.file_metadata().schema_descr().columns();
    let at = columns.iter().position(|c| c.path().parts() == [format::COL_TIMESTAMP])?;
    let mut range: Option<(i64, i64)> = None;
    for rg in md.row_groups() {
        if rg.num_rows() == 0 {
            continue;
        }
        let ParquetStatistics::Int64(s) = rg.column(at).statistics()? else { return None };
        let (lo, hi) = (*s.min_opt()?, *s.max_opt()?);
        range = Some(range.map_or((lo, hi), |(a, b)| (a.min(lo), b.max(hi))));
    }
    range
}

/// The Arrow schema, size and `timestamp` range ([`time_range`]) of a block's Parquet file.
async fn footer(bucket: &Bucket, ulid: &str, name: &str) -> Result<(SchemaRef, u64, Option<(i64, i64)>)> {
    let path = Bucket::block_path(ulid, name);
    let size = bucket.head(&path).await?.size;
    let mut r = ObjectReader::new(bucket.store(), &path, size);
    let md = ArrowReaderMetadata::load_async(&mut r, ArrowReaderOptions::new())
        .await
        .map_err(|e| Error::parquet(&path, e))?;
    Ok((Arc::clone(md.schema()), size, time_range(md.metadata())))
}

/// The per-file tables of a bucket's complete Strata blocks, before any view: what
/// [`register_bucket_tables`] builds its views on, and what other SQL front ends (Flight SQL) shape
/// their own tables from.
#[derive(Debug)]
pub struct BucketFiles {
    /// ULIDs of the blocks the tables span, sorted.
    pub blocks: Vec<String>,
    /// `meta.json` of each block of `blocks`, in the same order.
    pub metas: Vec<crate::meta::BlockMeta>,
    /// Label columns over all blocks: `__name__` first, the others sorted.
    pub label_columns: Vec<String>,
    /// `samples.parquet` of every block: v2's file columns (`value_int`, `value_scale` NULL in v1
    /// files) plus [`PARTITION_COLUMN`].
    pub samples: Arc<BlockFilesTable>,
    /// `series.parquet` of every block: [`format::series_schema`] of `label_columns` plus
    /// [`PARTITION_COLUMN`].
    pub series: Arc<BlockFilesTable>,
}

/// Reads the footers of every complete block of `bucket` into [`BucketFiles`] (a snapshot) and
/// registers the bucket's object store with the context's runtime.
pub async fn bucket_files(ctx: &SessionContext, bucket: &Bucket) -> Result<BucketFiles> {
    bucket_files_where(ctx, bucket, &|_| true).await
}

/// [`bucket_files`] over the blocks whose meta `keep` accepts (e.g. a receiver's own blocks).
pub async fn bucket_files_where(
    ctx: &SessionContext,
    bucket: &Bucket,
    keep: &(dyn Fn(&crate::meta::BlockMeta) -> bool + Send + Sync),
) -> Result<BucketFiles> {
    let mut all = files_by_resolution(ctx, bucket, keep, &[0]).await?;
    all.pop().ok_or_else(|| {
        Error::datafusion("listing the raw blocks", datafusion::error::DataFusionError::Internal("no table".into()))
    })
}

/// The per-file tables of each resolution of `resolutions` (ms; 0 is raw data) over the complete
/// Strata blocks `keep` accepts, from one listing of the bucket, in the order asked. For a
/// downsampled resolution (300000, 3600000) [`BucketFiles::samples`] is over `aggregates.parquet`
/// ([`format::aggregates_schema`] plus [`PARTITION_COLUMN`]) instead of `samples.parquet`.
pub async fn files_by_resolution(
    ctx: &SessionContext,
    bucket: &Bucket,
    keep: &(dyn Fn(&crate::meta::BlockMeta) -> bool + Send + Sync),
    resolutions: &[i64],
) -> Result<Vec<BucketFiles>> {
    let url_text = bucket.object_store_url();
    let url =
        ObjectStoreUrl::parse(&url_text).map_err(|e| Error::datafusion(format!("object store url {url_text}"), e))?;
    let store_url = url::Url::parse(&url_text)
        .map_err(|e| Error::BadObjstoreConfig { path: url_text.clone().into(), reason: e.to_string() })?;
    ctx.runtime_env().register_object_store(&store_url, Arc::clone(bucket.store()));

    let listed = bucket.list_blocks().await?;
    let mut metas_of: Vec<Vec<(String, crate::meta::BlockMeta)>> = vec![Vec::new(); resolutions.len()];
    for u in &listed {
        let meta = bucket.read_meta(u).await?;
        // Not a Strata block (e.g. a Prometheus block in the same bucket), or not asked for.
        if meta.strata.is_none() || !keep(&meta) {
            continue;
        }
        if let Some(i) = resolutions.iter().position(|r| *r == meta.thanos.downsample.resolution) {
            metas_of[i].push((u.clone(), meta));
        }
    }
    let mut out = Vec::with_capacity(resolutions.len());
    for (resolution, listed) in resolutions.iter().zip(metas_of) {
        let data_file = if *resolution == 0 { format::SAMPLES_FILE } else { format::AGGREGATES_FILE };
        let mut blocks = Vec::new();
        let mut metas = Vec::new();
        let mut samples_files = Vec::new();
        let mut series_files = Vec::new();
        let mut label_names: BTreeSet<String> = BTreeSet::new();
        for (u, meta) in listed {
            let index = u32::try_from(blocks.len()).map_err(|_| {
                Error::datafusion(
                    "listing the blocks",
                    datafusion::error::DataFusionError::Internal("more than 2^32 blocks".into()),
                )
            })?;
            let (_, size, time_range) = footer(bucket, &u, data_file).await?;
            let path = Bucket::block_path(&u, data_file).to_string();
            samples_files.push(BlockFile { ulid: u.clone(), path, size, index, time_range });
            let (schema, size, time_range) = footer(bucket, &u, format::SERIES_FILE).await?;
            for f in schema.fields() {
                if !format::RESERVED_SERIES_COLUMNS.contains(&f.name().as_str()) && f.name() != format::COL_METRIC_NAME
                {
                    label_names.insert(f.name().clone());
                }
            }
            let path = Bucket::block_path(&u, format::SERIES_FILE).to_string();
            series_files.push(BlockFile { ulid: u.clone(), path, size, index, time_range });
            blocks.push(u);
            metas.push(meta);
        }
        let mut cols = vec![format::COL_METRIC_NAME.to_string()];
        cols.extend(label_names);
        let series_schema = format::series_schema(&cols);
        let data_schema = if *resolution == 0 {
            // v2's columns, all value columns nullable: v1 files lack `value_int` and `value_scale` (NULL).
            let fields: Vec<arrow::datatypes::Field> = format::samples_schema(2)
                .fields()
                .iter()
                .map(|f| {
                    if f.name() == format::COL_VALUE_SCALE {
                        f.as_ref().clone().with_nullable(true)
                    } else {
                        f.as_ref().clone()
                    }
                })
                .collect();
            Arc::new(arrow::datatypes::Schema::new(fields))
        } else {
            format::aggregates_schema()
        };
        let samples = Arc::new(BlockFilesTable::new(url.clone(), data_schema, samples_files));
        let series = Arc::new(BlockFilesTable::new(url.clone(), series_schema, series_files));
        out.push(BucketFiles { blocks, metas, label_columns: cols, samples, series });
    }
    Ok(out)
}

/// Registers tables `samples` and `series` over every complete block of `bucket` (a snapshot; call
/// again to refresh) and registers the bucket's object store with the context's runtime.
///
/// Column order: `samples(block, series_id, timestamp, value)`; `series(block, series_id,
/// series_hash, __name__, <labels sorted>, labels, min_time, max_time, num_samples, first_row)`.
pub async fn register_bucket_tables(ctx: &SessionContext, bucket: &Bucket) -> Result<()> {
    let BucketFiles { samples, series, .. } = bucket_files(ctx, bucket).await?;
    let series_schema = Arc::clone(&series.file_schema);
    let df_err = |what: &'static str| move |e| Error::datafusion(what, e);

    let samples_view = ctx
        .read_table(samples)
        .map_err(df_err("reading samples table"))?
        .select(vec![
            col(PARTITION_COLUMN).alias(BLOCK_COLUMN),
            col(format::COL_SERIES_ID),
            col(format::COL_TIMESTAMP),
            coalesce(vec![
                col(format::COL_VALUE),
                cast(col(format::COL_VALUE_INT), DataType::Float64) / col(format::COL_VALUE_SCALE),
            ])
            .alias(format::COL_VALUE),
        ])
        .map_err(df_err("projecting samples table"))?;
    ctx.register_table("samples", samples_view.into_view()).map_err(df_err("registering samples"))?;

    let mut exprs = vec![col(PARTITION_COLUMN).alias(BLOCK_COLUMN)];
    for f in series_schema.fields() {
        let c = datafusion::common::Column::new_unqualified(f.name());
        let e = Expr::Column(c);
        exprs.push(if f.name() == BLOCK_COLUMN { e.alias("label_block") } else { e });
    }
    let series_view = ctx
        .read_table(series)
        .map_err(df_err("reading series table"))?
        .select(exprs)
        .map_err(df_err("projecting series table"))?;
    ctx.register_table("series", series_view.into_view()).map_err(df_err("registering series"))?;
    Ok(())
}

#[cfg(test)]
#[allow(clippy::unwrap_used, clippy::expect_used)]
mod tests {
    use super::*;
    use crate::labels::Labels;
    use crate::writer::tests::{synthetic, write_block};
    use arrow::array::AsArray;
    use arrow::datatypes::{Float64Type, Int64Type, UInt64Type};

    async fn query(ctx: &SessionContext, sql: &str) -> Vec<arrow::array::RecordBatch> {
        ctx.sql(sql).await.unwrap().collect().await.unwrap()
    }

    fn one_i64(b: &[arrow::array::RecordBatch]) -> i64 {
        b[0].column(0).as_primitive::<Int64Type>().value(0)
    }

    #[tokio::test]
    async fn sql_tables_over_blocks() {
        let dir = tempfile::tempdir().unwrap();
        let bucket = Bucket::local(dir.path()).unwrap();
        let d1 = synthetic(200, 0);
        let u1 = ulid::Ulid::from_parts(1, 1);
        write_block(&bucket, u1, &[], &d1).await;
        // Second block: other labels (a label named `block`, one named `extra`).
        let mut d2: Vec<(Labels, Vec<i64>, Vec<f64>)> = (0..10)
            .map(|i| {
                let l = Labels::from_pairs([("__name__", "other"), ("extra", &format!("e{i}")), ("block", "b")]);
                (l, vec![1000, 2000, 3000], vec![i as f64, 1.5, f64::NAN])
            })
            .collect();
        d2.sort_by(|a, b| a.0.cmp(&b.0));
        let u2 = ulid::Ulid::from_parts(2, 2);
        write_block(&bucket, u2, &[], &d2).await;

        let ctx = SessionContext::new();
        register_bucket_tables(&ctx, &bucket).await.unwrap();
        let total: usize = d1.iter().chain(&d2).map(|s| s.1.len()).sum();
        assert_eq!(one_i64(&query(&ctx, "SELECT count(*) FROM samples").await), total as i64);
        let b1: usize = d1.iter().map(|s| s.1.len()).sum();
        let q = format!("SELECT count(*) FROM samples WHERE block = '{u1}'");
        assert_eq!(one_i64(&query(&ctx, &q).await), b1 as i64);
        assert_eq!(one_i64(&query(&ctx, "SELECT count(*) FROM series").await), 210);

        // Join on (block, series_id): samples of metric_3 per job, checked against the input.
        let b = query(
            &ctx,
            "SELECT s.job, count(*) AS n, sum(x.timestamp) AS ts FROM samples x \
             JOIN series s ON x.block = s.block AND x.series_id = s.series_id \
             WHERE s.__name__ = 'metric_3' GROUP BY s.job ORDER BY s.job",
        )
        .await;
        let mut want: std::collections::BTreeMap<String, (i64, i64)> = Default::default();
        for (l, t, _) in d1.iter().filter(|s| s.0.metric_name() == Some("metric_3")) {
            let e = want.entry(l.get("job").unwrap().to_string()).or_default();
            e.0 += t.len() as i64;
            e.1 += t.iter().sum::<i64>();
        }
        let mut got: std::collections::BTreeMap<String, (i64, i64)> = Default::default();
        for batch in &b {
            let job = arrow::compute::cast(batch.column(0), &DataType::Utf8).unwrap();
            let job = job.as_string::<i32>();
            for i in 0..batch.num_rows() {
                got.insert(
                    job.value(i).to_string(),
                    (
                        batch.column(1).as_primitive::<Int64Type>().value(i),
                        batch.column(2).as_primitive::<Int64Type>().value(i),
                    ),
                );
            }
        }
        assert_eq!(got, want);

        // Union of label columns: `extra` is NULL in block 1; the `block` label is renamed.
        let b = query(&ctx, "SELECT count(extra), count(label_block), count(zone), sum(num_samples) FROM series").await;
        assert_eq!(b[0].column(0).as_primitive::<Int64Type>().value(0), 10);
        assert_eq!(b[0].column(1).as_primitive::<Int64Type>().value(0), 10);
        let zones = d1.iter().filter(|s| s.0.get("zone").is_some()).count() as i64;
        assert_eq!(b[0].column(2).as_primitive::<Int64Type>().value(0), zones);
        assert_eq!(b[0].column(3).as_primitive::<UInt64Type>().value(0), total as u64);
        // Overflow labels are in the map column.
        let q = "SELECT count(*) FROM series WHERE labels['min_time'] = 'odd'";
        let odd = d1.iter().filter(|s| s.0.get("min_time") == Some("odd")).count() as i64;
        assert_eq!(one_i64(&query(&ctx, q).await), odd);
        // NaNs read back as NaN.
        let q = "SELECT count(*) FROM samples WHERE isnan(value)";
        let nans = d1.iter().chain(&d2).flat_map(|s| s.2.iter()).filter(|v| v.is_nan()).count() as i64;
        assert_eq!(one_i64(&query(&ctx, q).await), nans);
        let b = query(&ctx, "SELECT block FROM series LIMIT 1").await;
        assert_eq!(b[0].column(0).data_type(), &DataType::Utf8);
        assert!(b[0].column(0).is_valid(0));
    }

    /// A filter on `timestamp` skips the blocks whose files' timestamps (their footers' statistics)
    /// cannot match, at planning; the blocks left are split into byte ranges when there are fewer
    /// of them than partitions.
    #[tokio::test]
    async fn time_filters_skip_blocks_and_split_the_rest() {
        let dir = tempfile::tempdir().unwrap();
        let bucket = Bucket::local(dir.path()).unwrap();
        let (early, late) = (synthetic(300, 0), synthetic(300, 10_000_000));
        let (u1, u2) = (ulid::Ulid::from_parts(1, 1), ulid::Ulid::from_parts(2, 2));
        write_block(&bucket, u1, &[], &early).await;
        let mut w = crate::BlockWriter::new(bucket.clone(), crate::BlockWriterOptions::new(u2, 10_000_000, 17_200_000))
            .unwrap();
        for (l, t, v) in &late {
            w.append_series(l, t, v).await.unwrap();
        }
        w.finish().await.unwrap();
        let ctx = SessionContext::new_with_config(datafusion::prelude::SessionConfig::new().with_target_partitions(2));
        register_bucket_tables(&ctx, &bucket).await.unwrap();
        let count = |pred: &dyn Fn(i64) -> bool| -> i64 {
            early.iter().chain(&late).flat_map(|s| s.1.iter()).filter(|t| pred(**t)).count() as i64
        };
        let late_min = *late.iter().flat_map(|s| s.1.iter()).min().unwrap();
        let early_max = *early.iter().flat_map(|s| s.1.iter()).max().unwrap();
        let cases: Vec<(String, i64, [bool; 2])> = vec![
            ("timestamp > 9000000".into(), count(&|t| t > 9_000_000), [false, true]),
            (format!("timestamp >= {late_min}"), count(&|t| t >= late_min), [false, true]),
            (format!("timestamp > {early_max}"), count(&|t| t > early_max), [false, true]),
            (format!("timestamp >= {early_max}"), count(&|t| t >= early_max), [true, true]),
            ("timestamp < 5000000".into(), count(&|t| t < 5_000_000), [true, false]),
            ("timestamp BETWEEN 7200000 AND 9000000".into(), 0, [false, false]),
            ("timestamp > 1000 AND timestamp < 12000000".into(), count(&|t| t > 1000 && t < 12_000_000), [true, true]),
        ];
        for (pred, want, read) in cases {
            let q = format!("SELECT count(*) FROM samples WHERE {pred}");
            assert_eq!(one_i64(&query(&ctx, &q).await), want, "{pred}");
            let plan = query(&ctx, &format!("EXPLAIN {q}")).await;
            let text: String = plan
                .iter()
                .flat_map(|b| {
                    let c = b.column(1).as_string::<i32>();
                    (0..b.num_rows()).map(|i| c.value(i).to_string()).collect::<Vec<_>>()
                })
                .collect();
            for (u, read) in [(u1, read[0]), (u2, read[1])] {
                assert_eq!(text.contains(&format!("{u}/samples.parquet")), read, "{pred}: {u} in\n{text}");
            }
            if read == [false, true] {
                // One block left for two partitions: two byte ranges of its file.
                assert!(text.contains("2 groups") && text.contains("samples.parquet:0.."), "{pred}:\n{text}");
            }
        }
    }

    /// `samples.value` is the sample's Float64, bit for bit, in v1 and v2 blocks of one bucket
    /// (v2 rows decoded by the view's `coalesce(value, value_int / value_scale)`).
    #[tokio::test]
    async fn sql_value_is_bit_exact_over_v1_and_v2_blocks() {
        let dir = tempfile::tempdir().unwrap();
        let bucket = Bucket::local(dir.path()).unwrap();
        let specials = [0.1 + 0.2, 36.55, -0.0, f64::INFINITY, f64::NEG_INFINITY, 4.9e-324, 1e22, 123456.789, 0.5];
        let data: Vec<(Labels, Vec<i64>, Vec<f64>)> = (0..40)
            .map(|i| {
                let l = Labels::from_pairs([("__name__", "m"), ("i", &format!("{i:03}"))]);
                let ts: Vec<i64> = (0..300).map(|k| k * 15_000).collect();
                let vs: Vec<f64> = (0..300)
                    .map(|k| match (i % 4, k % 37) {
                        (_, 36) => specials[(i + k / 37) % specials.len()],
                        (0, _) => (k * 7) as f64,
                        (1, _) => (k as f64) * 0.01 + 20.0,
                        (2, _) => (k as f64 + 1.0) / 3.0,
                        _ => f64::from_bits(crate::writer::tests::STALE),
                    })
                    .collect();
                (l, ts, vs)
            })
            .collect();
        let u1 = ulid::Ulid::from_parts(1, 1);
        let mut w = crate::writer::BlockWriter::with_encoding(
            bucket.clone(),
            crate::writer::BlockWriterOptions::new(u1, 0, 7_200_000),
            format::SamplesEncoding::V1,
        )
        .unwrap();
        for (l, t, v) in &data {
            w.append_series(l, t, v).await.unwrap();
        }
        assert_eq!(w.finish().await.unwrap().strata.unwrap().format_version, 1);
        let u2 = ulid::Ulid::from_parts(2, 2);
        assert_eq!(write_block(&bucket, u2, &[], &data).await.strata.unwrap().format_version, 2);

        let ctx = SessionContext::new();
        register_bucket_tables(&ctx, &bucket).await.unwrap();
        let batches = query(&ctx, "SELECT block, series_id, timestamp, value FROM samples").await;
        let mut seen = std::collections::BTreeMap::new();
        for b in &batches {
            assert_eq!(b.column(3).data_type(), &DataType::Float64);
            let block = arrow::compute::cast(b.column(0), &DataType::Utf8).unwrap();
            let (block, id) = (block.as_string::<i32>(), b.column(1).as_primitive::<arrow::datatypes::UInt32Type>());
            let (t, v) = (b.column(2).as_primitive::<Int64Type>(), b.column(3).as_primitive::<Float64Type>());
            for r in 0..b.num_rows() {
                assert!(v.is_valid(r), "NULL value in block {} row {r}", block.value(r));
                let (_, ts, vs) = &data[id.value(r) as usize];
                let k = ts.binary_search(&t.value(r)).unwrap();
                assert_eq!(
                    v.value(r).to_bits(),
                    vs[k].to_bits(),
                    "block {} series {} t {}",
                    block.value(r),
                    id.value(r),
                    ts[k]
                );
                *seen.entry(block.value(r).to_string()).or_insert(0usize) += 1;
            }
        }
        let n: usize = data.iter().map(|s| s.1.len()).sum();
        assert_eq!(seen, [(u1.to_string(), n), (u2.to_string(), n)].into_iter().collect());
    }
}
