//! [`SeriesIndex`]: a block's `series.parquet` decoded whole (label sets, hashes, per-series time
//! range, sample count and first row in `samples.parquet`), and matcher resolution over it.

use std::collections::HashMap;
use std::sync::Arc;

use arrow::array::{Array, ArrayRef, AsArray, MapArray, RecordBatch};
use arrow::datatypes::{DataType, Int32Type};
use parquet::arrow::arrow_reader::ParquetRecordBatchReaderBuilder;

use super::label_index::LabelIndex;
use super::postings::{LabelColumn, intersect_sorted};
use crate::bucket::Bucket;
use crate::error::{Error, Result};
use crate::format;
use crate::labels::{Label, Labels, MatchOp, Matcher};

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

impl SeriesIndex {
    /// Number of series.
    pub fn len(&self) -> usize {
        self.labels.len()
    }

    /// True when the block has no series.
    pub fn is_empty(&self) -> bool {
        self.labels.is_empty()
    }

    /// Samples of the series `ids` together.
    pub fn samples_of(&self, ids: &[u32]) -> u64 {
        ids.iter().map(|&id| self.num_samples[id as usize]).sum()
    }

    /// The block's label index (names and sorted values of the series with samples).
    pub fn label_index(&self) -> &LabelIndex {
        &self.label_index
    }

    /// Heap bytes of the block's label index: names and values ([`LabelIndex::heap_bytes`]) and
    /// the postings of every label column.
    pub fn label_index_bytes(&self) -> usize {
        self.label_index.heap_bytes() + self.columns.values().map(LabelColumn::heap_bytes).sum::<usize>()
    }

    /// Approximate heap footprint in bytes: the series table as read, the decoded label sets, the
    /// per-series bookkeeping, postings and the label index. What a loaded block costs in memory
    /// (the store gateway's `--index-cache-size` counts it).
    pub fn heap_bytes(&self) -> usize {
        let label = std::mem::size_of::<Label>();
        let labels: usize = self
            .labels
            .iter()
            .map(|l| {
                std::mem::size_of::<Labels>() + l.iter().map(|p| label + p.name.len() + p.value.len()).sum::<usize>()
            })
            .sum();
        let per_series = self.len() * 5 * std::mem::size_of::<u64>();
        let postings: usize = self.columns.iter().map(|(n, c)| n.len() + c.heap_bytes()).sum();
        self.batch.get_array_memory_size() + labels + per_series + postings + self.label_index.heap_bytes()
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
        let accepted = col.accepted(m);
        let empty = m.matches("");
        let keys = col.dict.keys();
        let (kv, nulls) = (keys.values(), keys.nulls());
        let ok = |i: usize| match nulls {
            Some(n) if n.is_null(i) => empty,
            _ => kv.get(i).is_some_and(|&k| u32::try_from(k).is_ok_and(|k| accepted.contains(k))),
        };
        if !empty {
            let lists: Vec<&[u32]> = accepted.keys().into_iter().map(|k| col.postings(k)).collect();
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
    /// run first, so the others only test the survivors: equalities on a non-empty value and
    /// regex matches of a literal set without `""`, the one with the shortest postings first (on a
    /// label without a column, a scan: last of them), then other regex matches, then the rest.
    pub fn resolve(&self, matchers: &[Matcher]) -> Vec<u32> {
        let count = |m: &Matcher, values: &[String]| match self.columns.get(&m.name) {
            Some(c) => values.iter().map(|v| c.count_of(v)).sum(),
            None => self.len(),
        };
        let mut order: Vec<&Matcher> = matchers.iter().collect();
        order.sort_by_cached_key(|m| match (m.op, m.literal_set()) {
            (MatchOp::Equal, _) if !m.value.is_empty() => (0, count(m, std::slice::from_ref(&m.value))),
            (MatchOp::RegexMatch, Some(set)) if !m.matches("") => (0, count(m, set)),
            (MatchOp::RegexMatch, _) => (1, 0),
            _ => (2, 0),
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

#[cfg(test)]
#[allow(clippy::unwrap_used, clippy::expect_used)]
mod tests {
    use crate::bucket::Bucket;
    use crate::labels::{MatchOp, Matcher};
    use crate::reader::BlockReader;
    use crate::writer::tests::synthetic;

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
        // Literal sets (values looked up, not matched one by one), alone, against each other by
        // postings length, with a value the block lacks, with "" among them, and negated.
        let hosts = check(vec![m(MatchOp::RegexMatch, "instance", "host-00(07|12|99)|host-0404")]);
        assert_eq!(hosts, 3);
        let n = check(vec![
            m(MatchOp::RegexMatch, "job", "job(0|1)"),
            m(MatchOp::RegexMatch, "instance", "host-00(07|12|13|99)"),
            m(MatchOp::Equal, "__name__", "metric_0"),
        ]);
        assert!(n < 3, "{n}");
        assert_eq!(check(vec![m(MatchOp::RegexMatch, "zone", "z1|")]), 90);
        assert_eq!(
            check(vec![m(MatchOp::RegexNoMatch, "job", "job0|job2"), m(MatchOp::RegexMatch, "zone", "z0|z1")]),
            6
        );
        assert_eq!(check(vec![m(MatchOp::RegexNoMatch, "zone", "z0|")]), 10);
        assert_eq!(check(vec![m(MatchOp::RegexMatch, "min_time", "odd|even")]), 10);
    }
}
