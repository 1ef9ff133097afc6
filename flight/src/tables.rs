//! Strata's SQL tables over a bucket, as Flight SQL clients see them.
//!
//! ```text
//!   samples(metric, labels Map<Utf8,Utf8>, timestamp Timestamp(ms, UTC), value Float64)
//!   series(metric, labels, first_time, last_time, num_samples)     one row per series (all blocks)
//!   <metric>(<its label names>..., timestamp, value)                one table per metric name
//!
//!   series.parquet (every block) ──filter: metric, labels──► build side ─┐
//!                                                            join on (block, series_id): an array
//!   samples.parquet (every block) ─filter: timestamp (pages)─► probe ────┘  lookup (series_join.rs)
//!                  ▲ dynamic filter: the series ids the build side found (row-group/page pruning)
//! ```
//!
//! All are views over `engine::sql`'s per-file tables ([`engine::sql::bucket_files`]), so a filter
//! on a label goes to the series scan (series resolution on series.parquet), a filter on
//! `timestamp` goes to the samples scan as a Parquet predicate (row-group and page pruning), and the
//! join hands the series ids it found to the samples scan as a dynamic filter. `EXPLAIN` shows the
//! predicates; `EXPLAIN ANALYZE` the pruning counters.
//!
//! A per-metric table has one column per label name any series of the metric has in any block (NULL
//! where a series lacks it). A label named `timestamp`, `value` or `metric` is exposed as
//! `label_<name>`; labels kept in a block's overflow map are in `samples.labels` only. A metric named
//! like a fixed table (`samples`, `series`) has no table of its own.

use std::collections::{BTreeMap, BTreeSet};
use std::sync::Arc;

use arrow::array::{Array, AsArray};
use arrow::datatypes::{DataType, Int64Type, TimeUnit};
use datafusion::common::{JoinType, ScalarValue};
use datafusion::functions::expr_fn::coalesce;
use datafusion::functions_aggregate::expr_fn::{count, first_value, max, min, sum};
use datafusion::logical_expr::{Expr, cast, col, ident, lit};
use datafusion::prelude::{DataFrame, SessionContext};
use engine::bucket::Bucket;
use engine::format;
use engine::sql::{BLOCK_INDEX_COLUMN, BucketFiles};

use crate::error::{Error, Result};
use crate::head::{HeadTable, RecentHeads, head_label_names};
use crate::labels_map::labels_expr;
use crate::series_join::{SAMPLE_KEYS, SERIES_KEYS};

/// Names of the fixed tables.
pub const FIXED_TABLES: [&str; 4] = ["samples", "series", "samples_5m", "samples_1h"];
/// The tables of downsampled blocks and their resolution (ms).
pub const DOWNSAMPLED: [(&str, i64); 2] = [("samples_5m", 300_000), ("samples_1h", 3_600_000)];
/// Columns a per-metric table has after its labels.
const VALUE_COLUMNS: [&str; 3] = ["timestamp", "value", "metric"];

/// The timestamp type of every table: milliseconds, UTC.
pub fn timestamp_type() -> DataType {
    DataType::Timestamp(TimeUnit::Millisecond, Some("UTC".into()))
}

/// What [`register_tables`] registered.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct TableSet {
    /// ULIDs of the blocks the tables span, sorted.
    pub blocks: Vec<String>,
    /// Per-metric tables: metric name -> its label columns (SQL column names, sorted).
    pub metrics: BTreeMap<String, Vec<String>>,
}

fn df_err(what: impl ToString) -> impl FnOnce(datafusion::error::DataFusionError) -> Error {
    move |e| Error::datafusion(what.to_string(), e)
}

/// The SQL column name of label `name` in a per-metric table.
fn label_column_name(name: &str) -> String {
    if VALUE_COLUMNS.contains(&name) { format!("label_{name}") } else { name.to_string() }
}

/// The rows of one resolution's downsampled blocks: `metric`, `labels`, `timestamp`, `count`
/// (Int64), `sum`, `min`, `max`, `counter` (docs/format.md §4a), the aggregates file joined to the
/// series file of each block like the raw tables (label and time filters push down the same way).
fn downsampled_view(ctx: &SessionContext, files: BucketFiles) -> Result<DataFrame> {
    let BucketFiles { label_columns, samples, series, .. } = files;
    let labels: Vec<String> = label_columns.iter().filter(|c| *c != format::COL_METRIC_NAME).cloned().collect();
    let mut series_exprs = vec![
        col(BLOCK_INDEX_COLUMN).alias(SERIES_KEYS[0]),
        col(format::COL_SERIES_ID).alias(SERIES_KEYS[1]),
        cast(ident(format::COL_METRIC_NAME), DataType::Utf8).alias("metric"),
    ];
    for n in &labels {
        series_exprs.push(cast(ident(n.as_str()), DataType::Utf8).alias(format!("__l_{n}")));
    }
    series_exprs.push(col(format::COL_LABELS).alias("__overflow"));
    let series = ctx
        .read_table(series)
        .map_err(df_err("reading series files"))?
        .select(series_exprs)
        .map_err(df_err("projecting downsampled series"))?;
    let aggregates = ctx
        .read_table(samples)
        .map_err(df_err("reading aggregates files"))?
        .select(vec![
            col(BLOCK_INDEX_COLUMN).alias(SAMPLE_KEYS[0]),
            col(format::COL_SERIES_ID).alias(SAMPLE_KEYS[1]),
            cast(col(format::COL_TIMESTAMP), timestamp_type()).alias("timestamp"),
            cast(col(format::COL_COUNT), DataType::Int64).alias("count"),
            col(format::COL_SUM).alias("sum"),
            col(format::COL_MIN).alias("min"),
            col(format::COL_MAX).alias("max"),
            col(format::COL_COUNTER).alias("counter"),
        ])
        .map_err(df_err("projecting aggregates"))?;
    let l_cols: Vec<Expr> = labels.iter().map(|n| ident(format!("__l_{n}"))).collect();
    series
        .join(aggregates, JoinType::Inner, &SERIES_KEYS, &SAMPLE_KEYS, None)
        .map_err(df_err("joining aggregates to series"))?
        .select(vec![
            col("metric"),
            labels_expr(&labels, l_cols, col("__overflow")).alias("labels"),
            col("timestamp"),
            col("count"),
            col("sum"),
            col("min"),
            col("max"),
            col("counter"),
        ])
        .map_err(df_err("projecting a downsampled table"))
}

/// Which of a bucket's blocks the tables span (e.g. a receiver's own blocks); all without one.
pub type BlockFilter = Arc<dyn Fn(&engine::meta::BlockMeta) -> bool + Send + Sync>;

/// Recent samples the tables include beside the bucket's blocks: the heads and the label names
/// their series have (metric -> label names without `__name__`) when the tables are built.
#[derive(Debug, Clone)]
pub struct HeadInput {
    /// The heads.
    pub heads: Arc<dyn RecentHeads>,
    /// Label names of the heads' series per metric name (see [`HeadInput::read`]).
    pub names: BTreeMap<String, BTreeSet<String>>,
}

impl HeadInput {
    /// Reads the label names of the series `heads` hold now.
    pub async fn read(heads: Arc<dyn RecentHeads>) -> Result<Self> {
        let names = head_label_names(heads.as_ref()).await?;
        Ok(HeadInput { heads, names })
    }
}

/// Registers `samples`, `series` and one table per metric name over every complete block of
/// `bucket` and, with `head`, the heads' samples not in those blocks, in `ctx`'s default schema
/// (a snapshot of the block list and of the head's label names: register into a fresh context to
/// refresh; the head's samples are read at each statement).
pub async fn register_tables(
    ctx: &SessionContext,
    bucket: &Bucket,
    head: Option<&HeadInput>,
    blocks: Option<&BlockFilter>,
) -> Result<TableSet> {
    let keep: &(dyn Fn(&engine::meta::BlockMeta) -> bool + Send + Sync) = match blocks {
        Some(keep) => keep.as_ref(),
        None => &|_| true,
    };
    let resolutions: Vec<i64> = std::iter::once(0).chain(DOWNSAMPLED.iter().map(|(_, r)| *r)).collect();
    let mut all = engine::sql::files_by_resolution(ctx, bucket, keep, &resolutions).await?.into_iter();
    let files = all.next().ok_or_else(|| Error::BadRequest("no raw block tables".into()))?;
    for ((name, _), files) in DOWNSAMPLED.iter().zip(all) {
        let view = downsampled_view(ctx, files)?;
        ctx.register_table(*name, view.into_view()).map_err(df_err(format!("registering {name}")))?;
    }
    let BucketFiles { blocks, metas, label_columns, samples, series } = files;
    let in_files: BTreeSet<String> = label_columns.iter().filter(|c| *c != format::COL_METRIC_NAME).cloned().collect();
    let mut all_labels = in_files.clone();
    if let Some(h) = head {
        all_labels.extend(h.names.values().flatten().cloned());
    }
    let labels: Vec<String> = all_labels.into_iter().collect();

    // series rows with the block, the metric, the label columns as Utf8 and the labels map.
    let mut series_exprs = vec![
        col(BLOCK_INDEX_COLUMN).alias(SERIES_KEYS[0]),
        col(format::COL_SERIES_ID).alias(SERIES_KEYS[1]),
        col(format::COL_SERIES_HASH).alias("__series_hash"),
        cast(ident(format::COL_METRIC_NAME), DataType::Utf8).alias("metric"),
    ];
    for n in &labels {
        let value = if in_files.contains(n) { ident(n.as_str()) } else { lit(ScalarValue::Null) };
        series_exprs.push(cast(value, DataType::Utf8).alias(format!("__l_{n}")));
    }
    series_exprs.push(col(format::COL_LABELS).alias("__overflow"));
    series_exprs.push(col(format::COL_MIN_TIME).alias("__min_time"));
    series_exprs.push(col(format::COL_MAX_TIME).alias("__max_time"));
    series_exprs.push(col(format::COL_NUM_SAMPLES).alias("__num_samples"));
    let series_raw = ctx.read_table(series).map_err(df_err("reading series files"))?;
    let series_base = series_raw.clone().select(series_exprs).map_err(df_err("projecting series"))?;
    let l_cols: Vec<Expr> = labels.iter().map(|n| ident(format!("__l_{n}"))).collect();

    let samples_base = ctx
        .read_table(samples)
        .map_err(df_err("reading samples files"))?
        .select(vec![
            col(BLOCK_INDEX_COLUMN).alias(SAMPLE_KEYS[0]),
            col(format::COL_SERIES_ID).alias(SAMPLE_KEYS[1]),
            cast(col(format::COL_TIMESTAMP), timestamp_type()).alias("timestamp"),
            coalesce(vec![
                col(format::COL_VALUE),
                cast(col(format::COL_VALUE_INT), DataType::Float64) / col(format::COL_VALUE_SCALE),
            ])
            .alias("value"),
        ])
        .map_err(df_err("projecting samples"))?;
    let join = |series: DataFrame| -> Result<DataFrame> {
        series
            .join(samples_base.clone(), JoinType::Inner, &SERIES_KEYS, &SAMPLE_KEYS, None)
            .map_err(df_err("joining samples to series"))
    };
    // The heads' rows (same columns as a series row joined to its samples, without the block).
    let head_rows = match head {
        Some(h) => {
            let cut: Vec<_> = metas.iter().map(|m| (m.thanos.labels.clone(), m.min_time, m.max_time)).collect();
            let table = HeadTable::new(Arc::clone(&h.heads), labels.clone(), cut);
            Some(ctx.read_table(Arc::new(table)).map_err(df_err("reading the heads"))?)
        }
        None => None,
    };
    // `frame` with the heads' rows shaped by `shape` appended.
    let with_head = |frame: DataFrame, shape: &dyn Fn(DataFrame) -> Result<DataFrame>| -> Result<DataFrame> {
        match &head_rows {
            Some(h) => frame.union(shape(h.clone())?).map_err(df_err("adding the heads' samples")),
            None => Ok(frame),
        }
    };

    // samples
    let samples_cols = || {
        vec![
            col("metric"),
            labels_expr(&labels, l_cols.clone(), col("__overflow")).alias("labels"),
            col("timestamp"),
            col("value"),
        ]
    };
    let samples_view = join(series_base.clone())?.select(samples_cols()).map_err(df_err("projecting samples view"))?;
    let samples_view =
        with_head(samples_view, &|h| h.select(samples_cols()).map_err(df_err("projecting the heads' samples")))?;
    ctx.register_table("samples", samples_view.into_view()).map_err(df_err("registering samples"))?;

    // series: one row per series over all blocks (and the heads).
    let mut group = vec![col("__series_hash"), col("metric")];
    group.extend(l_cols.clone());
    let mut series_cols = group.clone();
    series_cols.extend([col("__overflow"), col("__min_time"), col("__max_time"), col("__num_samples")]);
    let series_rows = series_base.clone().select(series_cols.clone()).map_err(df_err("projecting series rows"))?;
    let series_rows = with_head(series_rows, &|h| {
        h.aggregate(
            group.clone(),
            vec![
                first_value(col("__overflow"), vec![]).alias("__overflow"),
                min(cast(col("timestamp"), DataType::Int64)).alias("__min_time"),
                max(cast(col("timestamp"), DataType::Int64)).alias("__max_time"),
                cast(count(lit(1)), DataType::UInt64).alias("__num_samples"),
            ],
        )
        .and_then(|f| f.select(series_cols.clone()))
        .map_err(df_err("series of the heads"))
    })?;
    let series_view = series_rows
        .aggregate(
            group,
            vec![
                first_value(col("__overflow"), vec![]).alias("__overflow"),
                min(col("__min_time")).alias("__min_time"),
                max(col("__max_time")).alias("__max_time"),
                sum(col("__num_samples")).alias("num_samples"),
            ],
        )
        .map_err(df_err("aggregating series over blocks"))?
        .select(vec![
            col("metric"),
            labels_expr(&labels, l_cols.clone(), col("__overflow")).alias("labels"),
            cast(col("__min_time"), timestamp_type()).alias("first_time"),
            cast(col("__max_time"), timestamp_type()).alias("last_time"),
            cast(col("num_samples"), DataType::Int64).alias("num_samples"),
        ])
        .map_err(df_err("projecting series view"))?;
    ctx.register_table("series", series_view.into_view()).map_err(df_err("registering series"))?;

    // One table per metric: which label columns each metric uses (blocks, then heads).
    let mut aggs: Vec<Expr> = l_cols.iter().enumerate().map(|(i, c)| count(c.clone()).alias(format!("n{i}"))).collect();
    aggs.push(count(lit(1)).alias("rows"));
    let per_metric = series_base
        .clone()
        .aggregate(vec![col("metric")], aggs)
        .map_err(df_err("label names per metric"))?
        .collect()
        .await
        .map_err(df_err("reading label names per metric"))?;
    let mut metrics: BTreeMap<String, Vec<String>> = BTreeMap::new();
    let mut used_by: BTreeMap<String, BTreeSet<String>> = BTreeMap::new();
    for b in &per_metric {
        let names = b.column(0).as_string::<i32>();
        for r in 0..b.num_rows() {
            if !names.is_valid(r) {
                continue;
            }
            let used = (0..labels.len())
                .filter(|&i| b.column(i + 1).as_primitive::<Int64Type>().value(r) > 0)
                .map(|i| labels[i].clone());
            used_by.entry(names.value(r).to_string()).or_default().extend(used);
        }
    }
    if let Some(h) = head {
        for (m, names) in &h.names {
            used_by.entry(m.clone()).or_default().extend(names.iter().cloned());
        }
    }
    for (metric, used) in used_by {
        if FIXED_TABLES.contains(&metric.as_str()) {
            continue;
        }
        let sel: Vec<Expr> = used
            .iter()
            .map(|n| ident(format!("__l_{n}")).alias(label_column_name(n)))
            .chain([col("timestamp"), col("value")])
            .collect();
        let only = series_base
            .clone()
            .filter(col("metric").eq(lit(metric.as_str())))
            .map_err(df_err(format!("filtering metric {metric}")))?;
        let view = join(only)?.select(sel.clone()).map_err(df_err(format!("projecting table {metric}")))?;
        let view = with_head(view, &|h| {
            h.filter(col("metric").eq(lit(metric.as_str())))
                .and_then(|f| f.select(sel.clone()))
                .map_err(df_err(format!("the heads' rows of {metric}")))
        })?;
        ctx.register_table(datafusion::common::TableReference::bare(metric.as_str()), view.into_view())
            .map_err(df_err(format!("registering table {metric}")))?;
        metrics.insert(metric, used.iter().map(|n| label_column_name(n)).collect());
    }
    Ok(TableSet { blocks, metrics })
}

#[cfg(test)]
pub(crate) mod tests {
    #![allow(clippy::unwrap_used)]
    use super::*;
    use arrow::array::RecordBatch;
    use arrow::datatypes::Float64Type;
    use engine::{BlockWriter, BlockWriterOptions, Labels};

    /// One test series: labels, timestamps, values.
    pub(crate) type Series = (Labels, Vec<i64>, Vec<f64>);

    /// `node_load1{instance, job}` (20 series) and `up{instance, job[, zone]}` (20 series), 15 s
    /// apart from t=0, `n` samples each; values a function of the series and the step.
    pub(crate) fn fleet(n: i64) -> Vec<Series> {
        let mut out = Vec::new();
        for i in 0..20 {
            let inst = format!("host-{i:02}:9100");
            let job = if i % 2 == 0 { "node" } else { "edge" };
            let l = Labels::from_pairs([("__name__", "node_load1"), ("instance", inst.as_str()), ("job", job)]);
            let ts: Vec<i64> = (0..n).map(|k| k * 15_000).collect();
            let vs: Vec<f64> = (0..n).map(|k| (i as f64) * 0.5 + ((k % 60) as f64) / 100.0).collect();
            out.push((l, ts, vs));
            let mut pairs = vec![("__name__", "up".to_string()), ("instance", inst.clone()), ("job", job.to_string())];
            if i % 4 == 0 {
                pairs.push(("zone", "eu".to_string()));
            }
            let l = Labels::from_pairs(pairs);
            let ts: Vec<i64> = (0..n).map(|k| k * 15_000).collect();
            let vs: Vec<f64> = (0..n).map(|k| if (k + i) % 50 == 0 { 0.0 } else { 1.0 }).collect();
            out.push((l, ts, vs));
        }
        out.sort_by(|a, b| a.0.cmp(&b.0));
        out
    }

    /// Writes `data` as one block (time range `[min, max)` of the data) into `bucket`.
    pub(crate) async fn write(bucket: &Bucket, ulid: ulid::Ulid, data: &[Series]) {
        let min = data.iter().filter_map(|s| s.1.first()).min().copied().unwrap();
        let max = data.iter().filter_map(|s| s.1.last()).max().copied().unwrap() + 1;
        let mut w = BlockWriter::new(bucket.clone(), BlockWriterOptions::new(ulid, min, max)).unwrap();
        for (l, t, v) in data {
            w.append_series(l, t, v).await.unwrap();
        }
        w.finish().await.unwrap();
    }

    async fn sql(ctx: &SessionContext, q: &str) -> Vec<RecordBatch> {
        ctx.sql(q).await.unwrap().collect().await.unwrap()
    }

    fn text(batches: &[RecordBatch]) -> String {
        arrow::util::pretty::pretty_format_batches(batches).unwrap().to_string()
    }

    /// Two blocks: [0, 2h) and [2h, 4h) of the same series.
    async fn two_blocks() -> (tempfile::TempDir, Bucket, Vec<Series>, Vec<Series>) {
        let dir = tempfile::tempdir().unwrap();
        let bucket = Bucket::local(dir.path()).unwrap();
        let a = fleet(480);
        let b: Vec<Series> =
            fleet(480).into_iter().map(|(l, t, v)| (l, t.iter().map(|t| t + 7_200_000).collect(), v)).collect();
        write(&bucket, ulid::Ulid::from_parts(1, 1), &a).await;
        write(&bucket, ulid::Ulid::from_parts(2, 2), &b).await;
        (dir, bucket, a, b)
    }

    #[tokio::test]
    async fn tables_answer_from_the_source_data() {
        let (_dir, bucket, a, b) = two_blocks().await;
        let ctx = crate::series_join::tests::session();
        let set = register_tables(&ctx, &bucket, None, None).await.unwrap();
        assert_eq!(set.blocks.len(), 2);
        assert_eq!(set.metrics["node_load1"], ["instance", "job"]);
        assert_eq!(set.metrics["up"], ["instance", "job", "zone"]);

        let all: Vec<&Series> = a.iter().chain(&b).collect();
        let n: usize = all.iter().map(|s| s.1.len()).sum();
        let got = sql(&ctx, "SELECT count(*) FROM samples").await;
        assert_eq!(got[0].column(0).as_primitive::<Int64Type>().value(0), n as i64);

        // avg per instance over the last hour of the data, per-metric table.
        let cut = 4 * 3_600_000 - 3_600_000;
        let q = format!(
            "SELECT instance, avg(value) AS v, count(*) AS n FROM node_load1 \
             WHERE timestamp > to_timestamp_millis({cut}) AND job = 'node' GROUP BY instance ORDER BY instance"
        );
        let got = sql(&ctx, &q).await;
        let mut want: BTreeMap<String, (f64, i64)> = BTreeMap::new();
        for (l, t, v) in &all {
            if l.metric_name() != Some("node_load1") || l.get("job") != Some("node") {
                continue;
            }
            let e = want.entry(l.get("instance").unwrap().to_string()).or_default();
            for (t, v) in t.iter().zip(v) {
                if *t > cut {
                    e.0 += v;
                    e.1 += 1;
                }
            }
        }
        let mut rows = BTreeMap::new();
        for batch in &got {
            for r in 0..batch.num_rows() {
                rows.insert(
                    batch.column(0).as_string::<i32>().value(r).to_string(),
                    (
                        batch.column(1).as_primitive::<Float64Type>().value(r),
                        batch.column(2).as_primitive::<Int64Type>().value(r),
                    ),
                );
            }
        }
        assert_eq!(rows.len(), want.len());
        for (k, (sum, cnt)) in &want {
            let (avg, n) = rows[k];
            assert_eq!(n, *cnt, "{k}");
            assert!((avg - sum / *cnt as f64).abs() < 1e-9, "{k}: {avg} vs {}", sum / *cnt as f64);
        }

        // samples: labels map and metric; series: one row per series over both blocks.
        let got = sql(&ctx, "SELECT count(*) FROM samples WHERE metric = 'up' AND labels['zone'] = 'eu'").await;
        let want: usize = all
            .iter()
            .filter(|s| s.0.metric_name() == Some("up") && s.0.get("zone") == Some("eu"))
            .map(|s| s.1.len())
            .sum();
        assert_eq!(got[0].column(0).as_primitive::<Int64Type>().value(0), want as i64);
        let got = sql(&ctx, "SELECT count(*), sum(num_samples), min(first_time), max(last_time) FROM series").await;
        assert_eq!(
            text(&got).lines().nth(3).unwrap().split('|').map(str::trim).collect::<Vec<_>>()[1..5],
            ["40", &n.to_string(), "1970-01-01T00:00:00Z", "1970-01-01T03:59:45Z"]
        );
        let got =
            sql(&ctx, "SELECT labels FROM series WHERE metric = 'up' AND labels['instance'] = 'host-04:9100'").await;
        assert!(text(&got).contains("{instance: host-04:9100, job: node, zone: eu}"), "{}", text(&got));
    }

    /// Label and time filters reach the scans: EXPLAIN shows the predicates, EXPLAIN ANALYZE the
    /// pages and row groups the samples scan skipped.
    #[tokio::test]
    async fn filters_push_down_to_the_scans() {
        let dir = tempfile::tempdir().unwrap();
        let bucket = Bucket::local(dir.path()).unwrap();
        // 40 series x 5000 samples: about 3 pages of samples.parquet per block, so pruning shows.
        write(&bucket, ulid::Ulid::from_parts(1, 1), &fleet(5000)).await;
        let ctx = crate::series_join::tests::session();
        register_tables(&ctx, &bucket, None, None).await.unwrap();
        let q = "SELECT instance, avg(value) FROM node_load1 WHERE instance = 'host-03:9100' \
                 AND timestamp >= to_timestamp_millis(60000000) GROUP BY instance";
        let plan = text(&sql(&ctx, &format!("EXPLAIN {q}")).await);
        let scans: Vec<&str> = plan.lines().filter(|l| l.contains("DataSourceExec")).collect();
        assert_eq!(scans.len(), 2, "{plan}");
        let series_scan = scans.iter().find(|l| l.contains("series.parquet")).unwrap();
        assert!(
            series_scan.contains("predicate=")
                && series_scan.contains("__name__")
                && series_scan.contains("host-03:9100"),
            "{plan}"
        );
        let samples_scan = scans.iter().find(|l| l.contains("samples.parquet")).unwrap();
        assert!(samples_scan.contains("predicate=") && samples_scan.contains("timestamp"), "{plan}");
        assert!(samples_scan.contains("DynamicFilter"), "{plan}");

        let analyzed = text(&sql(&ctx, &format!("EXPLAIN ANALYZE {q}")).await);
        let samples_scan = analyzed.lines().find(|l| l.contains("samples.parquet")).unwrap();
        // "page_index_pages_pruned=4 total → 1 matched": pages the scan skipped.
        let pruned = |name: &str| -> (u64, u64) {
            let at = samples_scan.find(&format!("{name}=")).unwrap_or_else(|| panic!("{name} in {samples_scan}"));
            let words: Vec<&str> = samples_scan[at + name.len() + 1..].split_whitespace().take(4).collect();
            (words[0].parse().unwrap(), words[3].parse().unwrap())
        };
        let (total, matched) = pruned("page_index_pages_pruned");
        assert!(total >= 3 && matched < total, "{samples_scan}");
        // And the answer: host-03 is in node_load1 with 5000 samples; timestamps >= 60000 s: 1000.
        let got = sql(&ctx, q).await;
        let avg = got[0].column(1).as_primitive::<Float64Type>().value(0);
        let vs: Vec<f64> = (4000..5000).map(|k| 1.5 + ((k % 60) as f64) / 100.0).collect();
        assert!((avg - vs.iter().sum::<f64>() / 1000.0).abs() < 1e-9);

        // A label filter alone: the series it selects bound the samples scan's series ids (the
        // join's dynamic filter), so the scan skips the pages of the other series.
        let q = "SELECT count(*) FROM node_load1 WHERE instance = 'host-03:9100'";
        let analyzed = text(&sql(&ctx, &format!("EXPLAIN ANALYZE {q}")).await);
        assert!(analyzed.contains("StrataSeriesJoinExec"), "{analyzed}");
        let samples_scan = analyzed.lines().find(|l| l.contains("samples.parquet")).unwrap();
        assert!(samples_scan.contains("series_id@0 >= 3 AND series_id@0 <= 3"), "{samples_scan}");
        let at = samples_scan.find("page_index_pages_pruned=").unwrap();
        let words: Vec<&str> = samples_scan[at + 24..].split_whitespace().take(4).collect();
        let (total, matched): (u64, u64) = (words[0].parse().unwrap(), words[3].parse().unwrap());
        assert!(total >= 3 && matched < total, "{samples_scan}");
        let got = sql(&ctx, q).await;
        assert_eq!(got[0].column(0).as_primitive::<arrow::datatypes::Int64Type>().value(0), 5000);
    }
}
