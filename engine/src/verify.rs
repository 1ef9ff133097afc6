//! Block verification: checks one block of the bucket against its format (v1 or v2) and reports
//! every [`Problem`] found (rather than stopping at the first).
//!
//! ```text
//!   meta.json parses ─► files exist with recorded sizes ─► Parquet footers: key-value metadata,
//!   schema, row counts vs meta ─► series: sorted, dense ids, hashes, first_row chain
//!   ─► samples (streamed): sorted by (series_id, timestamp), no duplicates, per-series counts and
//!      time ranges agree with series.parquet; v2 values: exactly one of value / value_int per row,
//!      value_scale = 10^e on every row (one per series), mantissas canonical (re-encoding the
//!      decoded value gives the stored integer back)
//! ```

use std::fmt;

use arrow::array::{Array, AsArray};
use arrow::array::{Float64Array, Int64Array};
use arrow::datatypes::{Float64Type, Int64Type, UInt32Type};
use futures::TryStreamExt;
use parquet::arrow::arrow_reader::{ArrowReaderMetadata, ArrowReaderOptions};
use parquet::arrow::async_reader::ParquetRecordBatchStreamBuilder;

use crate::bucket::Bucket;
use crate::error::Result;
use crate::format;
use crate::meta::{BlockMeta, META_FILE};
use crate::reader::{ObjectReader, SeriesIndex, read_series_index};

/// Problems of one kind reported at most this many times per file.
const MAX_REPORTS: usize = 10;

/// One thing wrong with a block.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Problem {
    /// Block ULID.
    pub block: String,
    /// File of the block (`meta.json`, `samples.parquet`, ...).
    pub file: String,
    /// What is wrong.
    pub what: String,
}

impl fmt::Display for Problem {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "block {} file {}: {}", self.block, self.file, self.what)
    }
}

struct Report {
    block: String,
    problems: Vec<Problem>,
}

impl Report {
    fn add(&mut self, file: &str, what: impl Into<String>) {
        self.problems.push(Problem { block: self.block.clone(), file: file.to_string(), what: what.into() });
    }
}

/// Verifies block `ulid`. Returns the problems found (empty when the block is sound); an `Err`
/// only for failures to talk to the bucket that are not about the block itself.
pub async fn verify_block(bucket: &Bucket, ulid: &str) -> Result<Vec<Problem>> {
    let mut r = Report { block: ulid.to_string(), problems: Vec::new() };
    let meta = match bucket.read_meta(ulid).await {
        Ok(m) => m,
        Err(e) => {
            r.add(META_FILE, format!("cannot be read: {e}"));
            return Ok(r.problems);
        }
    };
    let version = match &meta.strata {
        None => {
            r.add(META_FILE, "has no strata section (not a Strata block)");
            format::FORMAT_VERSION
        }
        Some(s) if !format::READABLE_FORMAT_VERSIONS.contains(&s.format_version) => {
            r.add(
                META_FILE,
                format!(
                    "strata.format_version is {}, expected one of {:?}",
                    s.format_version,
                    format::READABLE_FORMAT_VERSIONS
                ),
            );
            return Ok(r.problems);
        }
        Some(s) => s.format_version,
    };
    // Downsampled blocks hold aggregates.parquet instead of samples.parquet (docs/format.md §4a).
    let aggregated = meta.thanos.downsample.resolution > 0;
    let data_file = if aggregated { format::AGGREGATES_FILE } else { format::SAMPLES_FILE };
    let mut sizes = std::collections::HashMap::new();
    for f in &meta.thanos.files {
        let path = Bucket::block_path(ulid, &f.rel_path);
        match bucket.head(&path).await {
            Ok(o) => {
                sizes.insert(f.rel_path.clone(), o.size);
                if let Some(want) = f.size_bytes
                    && want != o.size
                {
                    r.add(&f.rel_path, format!("size is {} bytes, meta.json records {want}", o.size));
                }
            }
            Err(_) => r.add(&f.rel_path, "listed in meta.json but missing"),
        }
    }
    for name in [data_file, format::SERIES_FILE] {
        if !meta.thanos.files.iter().any(|f| f.rel_path == name) {
            r.add(META_FILE, format!("thanos.files does not list {name}"));
            if let Ok(o) = bucket.head(&Bucket::block_path(ulid, name)).await {
                sizes.insert(name.to_string(), o.size);
            }
        }
    }

    // Footers: metadata keys, schema, row counts.
    let mut samples_md = None;
    for name in [data_file, format::SERIES_FILE] {
        let Some(&size) = sizes.get(name) else {
            if !meta.thanos.files.iter().any(|f| f.rel_path == name) {
                r.add(name, "missing");
            }
            continue;
        };
        let path = Bucket::block_path(ulid, name);
        let mut rd = ObjectReader::new(bucket.store(), &path, size);
        let md = match ArrowReaderMetadata::load_async(&mut rd, ArrowReaderOptions::new()).await {
            Ok(m) => m,
            Err(e) => {
                r.add(name, format!("is not readable Parquet: {e}"));
                continue;
            }
        };
        check_footer(&mut r, name, &md, &meta, version);
        if name == data_file {
            samples_md = Some((md, size));
        }
    }

    // Series table.
    let index = match sizes.contains_key(format::SERIES_FILE) {
        true => match read_series_index(bucket, ulid).await {
            Ok(ix) => Some(ix),
            Err(e) => {
                r.add(format::SERIES_FILE, format!("cannot be decoded: {e}"));
                None
            }
        },
        false => None,
    };
    if let Some(ix) = &index {
        check_series(&mut r, ix, &meta);
    }
    if aggregated {
        if let (Some(ix), Some(_)) = (&index, samples_md) {
            check_aggregates(&mut r, bucket, &meta, ix).await;
        }
    } else if let Some((md, size)) = samples_md {
        check_samples(&mut r, bucket, ulid, md, size, index.as_ref(), version).await;
    }
    Ok(r.problems)
}

fn check_footer(r: &mut Report, name: &str, md: &ArrowReaderMetadata, meta: &BlockMeta, version: u32) {
    let fm = md.metadata().file_metadata();
    let kv =
        |k: &str| fm.key_value_metadata().and_then(|kvs| kvs.iter().find(|x| x.key == k)).and_then(|x| x.value.clone());
    match kv(format::KV_FORMAT_VERSION) {
        Some(v) if v == version.to_string() => {}
        other => r.add(
            name,
            format!(
                "key-value {} is {other:?}, expected \"{version}\" (meta.json strata.format_version)",
                format::KV_FORMAT_VERSION
            ),
        ),
    }
    match kv(format::KV_BLOCK_ULID) {
        Some(v) if v == meta.ulid => {}
        other => r.add(name, format!("key-value {} is {other:?}, expected {:?}", format::KV_BLOCK_ULID, meta.ulid)),
    }
    let rows = fm.num_rows() as u64;
    let (stat, stat_name) = if name != format::SERIES_FILE {
        (meta.stats.num_samples, "stats.numSamples")
    } else {
        (meta.stats.num_series, "stats.numSeries")
    };
    if rows != stat {
        r.add(name, format!("has {rows} rows but meta.json {stat_name} is {stat}"));
    }
    if let Some(want) = meta.strata.as_ref().and_then(|s| s.files.iter().find(|f| f.name == name)).map(|f| f.rows)
        && want != rows
    {
        r.add(name, format!("has {rows} rows but meta.json strata.files records {want}"));
    }
    if name != format::SERIES_FILE {
        let schema = md.schema();
        let want =
            if name == format::AGGREGATES_FILE { format::aggregates_schema() } else { format::samples_schema(version) };
        for f in want.fields() {
            match schema.field_with_name(f.name()) {
                Ok(g) if g.data_type() == f.data_type() => {}
                Ok(g) => {
                    r.add(name, format!("column {} has type {}, expected {}", f.name(), g.data_type(), f.data_type()))
                }
                Err(_) => r.add(name, format!("column {} is missing", f.name())),
            }
        }
    }
}

/// The rows of a downsampled block: per series sorted, well-formed batches, and the series
/// table's `min_time`/`max_time` what the rows say (the reader checks row counts and batches).
async fn check_aggregates(r: &mut Report, bucket: &Bucket, meta: &BlockMeta, ix: &SeriesIndex) {
    let f = format::AGGREGATES_FILE;
    let reader = match crate::reader::BlockReader::open_with_meta(bucket, &meta.ulid, meta.clone()).await {
        Ok(x) => x,
        Err(e) => return r.add(f, format!("cannot be opened: {e}")),
    };
    let ids: Vec<u32> = (0..ix.len() as u32).collect();
    let got = match reader.read_aggregates(&ids, i64::MIN, i64::MAX).await {
        Ok(g) => g,
        Err(e) => return r.add(f, format!("cannot be read: {e}")),
    };
    if got.len() != ix.len() {
        r.add(f, format!("{} of {} series have rows", got.len(), ix.len()));
    }
    let mut reports = 0;
    for (id, a) in &got {
        let i = *id as usize;
        let first = a.counter_start.iter().flatten().map(|s| s.0).chain(a.timestamps.first().copied()).min();
        let (min, max) = (first.unwrap_or(i64::MAX), a.timestamps.last().copied().unwrap_or(i64::MIN));
        if (min, max) != (ix.min_time[i], ix.max_time[i]) && reports < MAX_REPORTS {
            reports += 1;
            r.add(
                format::SERIES_FILE,
                format!(
                    "series_id {id}: min_time/max_time {}/{} but its rows span {min}/{max}",
                    ix.min_time[i], ix.max_time[i]
                ),
            );
        }
        if (min < meta.min_time || max >= meta.max_time) && reports < MAX_REPORTS {
            reports += 1;
            r.add(f, format!("series_id {id}: rows span [{min}, {max}] outside the block range"));
        }
    }
}

/// The v2 value checks across the batches of one file.
#[derive(Default)]
struct ValueChecks {
    reports: usize,
    /// Series of the last row and its scale: one scale per series.
    last: Option<(u32, f64)>,
}

impl ValueChecks {
    fn add(&mut self, r: &mut Report, what: String) {
        if self.reports < MAX_REPORTS {
            r.add(format::SAMPLES_FILE, what);
        }
        self.reports += 1;
    }

    fn check(
        &mut self,
        r: &mut Report,
        row0: u64,
        ids: &arrow::array::UInt32Array,
        vs: &Float64Array,
        ints: &Int64Array,
        scales: &Float64Array,
    ) {
        for i in 0..vs.len() {
            let row = row0 + i as u64;
            let id = ids.value(i);
            let (v, n, s) = (vs.is_valid(i), ints.is_valid(i), scales.is_valid(i));
            if v == n || !s {
                self.add(
                    r,
                    format!(
                        "row {row} (series_id {id}): value {}, value_int {}, value_scale {}; exactly one of value and value_int must be set, value_scale on every row",
                        set(v),
                        set(n),
                        set(s)
                    ),
                );
                continue;
            }
            let scale = scales.value(i);
            if crate::values::exponent_of_scale(scale).is_none() {
                self.add(r, format!("row {row} (series_id {id}): value_scale {scale:e} is not 10^e for 0 <= e <= 22"));
                continue;
            }
            match self.last {
                Some((sid, s)) if sid == id && s.to_bits() != scale.to_bits() => self.add(
                    r,
                    format!("row {row} (series_id {id}): value_scale {scale:e} differs from the series' {s:e}"),
                ),
                _ => {}
            }
            self.last = Some((id, scale));
            if v {
                continue;
            }
            let m = ints.value(i);
            if m.abs() > crate::values::MAX_MANTISSA {
                self.add(r, format!("row {row} (series_id {id}): value_int {m} exceeds 2^53"));
            } else if crate::values::encode(crate::values::decode(m, scale), scale) != Some(m) {
                self.add(
                    r,
                    format!(
                        "row {row} (series_id {id}): value_int {m} at scale {scale:e} does not round-trip (decodes to {}, which encodes to another integer)",
                        crate::values::decode(m, scale)
                    ),
                );
            }
        }
    }
}

fn set(b: bool) -> &'static str {
    if b { "set" } else { "null" }
}

fn check_series(r: &mut Report, ix: &SeriesIndex, meta: &BlockMeta) {
    let f = format::SERIES_FILE;
    let mut reported = 0;
    for (i, w) in ix.labels.windows(2).enumerate() {
        if w[0] >= w[1] && reported < MAX_REPORTS {
            r.add(f, format!("series {} (series_id {}) does not sort after {} (series_id {i})", w[1], i + 1, w[0]));
            reported += 1;
        }
    }
    let mut reported = 0;
    let mut next_row = 0u64;
    for i in 0..ix.len() {
        if reported >= MAX_REPORTS {
            break;
        }
        let l = &ix.labels[i];
        let mut bad = Vec::new();
        if ix.hashes[i] != l.stable_hash() {
            bad.push(format!("series_hash {:#x} differs from the label hash {:#x}", ix.hashes[i], l.stable_hash()));
        }
        if ix.first_row[i] != next_row {
            bad.push(format!("first_row is {}, expected {next_row}", ix.first_row[i]));
        }
        if ix.num_samples[i] == 0 {
            bad.push("has num_samples 0".to_string());
        }
        if ix.min_time[i] > ix.max_time[i] || ix.min_time[i] < meta.min_time || ix.max_time[i] >= meta.max_time {
            bad.push(format!(
                "time range [{}, {}] is not inside the block's [{}, {})",
                ix.min_time[i], ix.max_time[i], meta.min_time, meta.max_time
            ));
        }
        next_row = ix.first_row[i].max(next_row) + ix.num_samples[i];
        for b in bad {
            r.add(f, format!("series_id {i} {l}: {b}"));
            reported += 1;
        }
    }
}

async fn check_samples(
    r: &mut Report,
    bucket: &Bucket,
    ulid: &str,
    md: ArrowReaderMetadata,
    size: u64,
    index: Option<&SeriesIndex>,
    version: u32,
) {
    let f = format::SAMPLES_FILE;
    let path = Bucket::block_path(ulid, f);
    let rd = ObjectReader::new(bucket.store(), &path, size);
    let stream = match ParquetRecordBatchStreamBuilder::new_with_metadata(rd, md).with_batch_size(64 * 1024).build() {
        Ok(s) => s,
        Err(e) => {
            r.add(f, format!("cannot be read: {e}"));
            return;
        }
    };
    // Per series as found in the file: (series_id, first_row, count, min_t, max_t).
    let mut found: Vec<(u32, u64, u64, i64, i64)> = Vec::new();
    let mut prev: Option<(u32, i64)> = None;
    let mut row = 0u64;
    let mut order_reports = 0;
    let mut values = ValueChecks::default();
    let mut stream = std::pin::pin!(stream);
    loop {
        let batch = match stream.try_next().await {
            Ok(Some(b)) => b,
            Ok(None) => break,
            Err(e) => {
                r.add(f, format!("cannot be read at row {row}: {e}"));
                return;
            }
        };
        let (Some(ids), Some(ts), Some(vs)) = (
            batch.column_by_name(format::COL_SERIES_ID).and_then(|c| c.as_primitive_opt::<UInt32Type>()),
            batch.column_by_name(format::COL_TIMESTAMP).and_then(|c| c.as_primitive_opt::<Int64Type>()),
            batch.column_by_name(format::COL_VALUE).and_then(|c| c.as_primitive_opt::<Float64Type>()),
        ) else {
            return; // schema problems were reported from the footer
        };
        if ids.null_count() > 0 || ts.null_count() > 0 {
            r.add(f, format!("nulls in series_id or timestamp near row {row}"));
        }
        if version == 1 && vs.null_count() > 0 {
            r.add(f, format!("nulls in value near row {row} (format v1 has no value_int)"));
        }
        if version >= 2 {
            let (Some(ints), Some(scales)) = (
                batch.column_by_name(format::COL_VALUE_INT).and_then(|c| c.as_primitive_opt::<Int64Type>()),
                batch.column_by_name(format::COL_VALUE_SCALE).and_then(|c| c.as_primitive_opt::<Float64Type>()),
            ) else {
                return;
            };
            values.check(r, row, ids, vs, ints, scales);
        }
        for (id, t) in ids.values().iter().copied().zip(ts.values().iter().copied()) {
            if let Some((pid, pt)) = prev {
                let ok = id > pid || (id == pid && t > pt);
                if !ok && order_reports < MAX_REPORTS {
                    let what = if id == pid && t == pt { "duplicate" } else { "out of order" };
                    r.add(f, format!("row {row}: (series_id {id}, timestamp {t}) is {what} after (series_id {pid}, timestamp {pt})"));
                    order_reports += 1;
                }
            }
            match found.last_mut() {
                Some(s) if s.0 == id => {
                    s.2 += 1;
                    s.3 = s.3.min(t);
                    s.4 = s.4.max(t);
                }
                _ => found.push((id, row, 1, t, t)),
            }
            prev = Some((id, t));
            row += 1;
        }
    }
    let Some(ix) = index else { return };
    if order_reports > 0 {
        return; // per-series bookkeeping is meaningless on unsorted samples
    }
    let mut reported = 0;
    let mut expect = 0usize;
    for &(id, first, n, lo, hi) in &found {
        let i = id as usize;
        if i >= ix.len() {
            r.add(f, format!("series_id {id} at row {first} is not in {}", format::SERIES_FILE));
            return;
        }
        if i != expect && reported < MAX_REPORTS {
            r.add(f, format!("series_id {} ({}) has no samples", expect, ix.labels[expect]));
            reported += 1;
        }
        expect = i + 1;
        let got = (first, n, lo, hi);
        let want = (ix.first_row[i], ix.num_samples[i], ix.min_time[i], ix.max_time[i]);
        if got != want && reported < MAX_REPORTS {
            r.add(
                f,
                format!(
                    "series_id {id} ({}): samples have (first_row, num_samples, min_time, max_time) = {got:?}, {} says {want:?}",
                    ix.labels[i],
                    format::SERIES_FILE
                ),
            );
            reported += 1;
        }
    }
    if expect < ix.len() && reported < MAX_REPORTS {
        r.add(f, format!("series_id {expect} ({}) and later have no samples", ix.labels[expect]));
    }
}

#[cfg(test)]
#[allow(clippy::unwrap_used, clippy::expect_used)]
mod tests {
    use super::*;
    use crate::writer::tests::{synthetic, write_block};
    use arrow::array::{Float64Array, Int64Array, RecordBatch, UInt32Array};
    use std::sync::Arc;

    async fn setup() -> (tempfile::TempDir, Bucket, String, BlockMeta) {
        let dir = tempfile::tempdir().unwrap();
        let b = Bucket::local(dir.path()).unwrap();
        let u = ulid::Ulid::new();
        let meta = write_block(&b, u, &[("region", "eu")], &synthetic(120, 0)).await;
        (dir, b, u.to_string(), meta)
    }

    fn whats(p: &[Problem]) -> Vec<String> {
        p.iter().map(|p| format!("{}: {}", p.file, p.what)).collect()
    }

    #[tokio::test]
    async fn good_block_has_no_problems() {
        let (_d, b, u, _) = setup().await;
        assert_eq!(verify_block(&b, &u).await.unwrap(), vec![]);
    }

    #[tokio::test]
    async fn wrong_row_counts_in_meta() {
        let (_d, b, u, mut meta) = setup().await;
        meta.stats.num_samples += 1;
        meta.strata.as_mut().unwrap().files[1].rows = 7;
        b.put(&Bucket::block_path(&u, META_FILE), meta.to_json().into()).await.unwrap();
        let p = verify_block(&b, &u).await.unwrap();
        let n = meta.stats.num_samples - 1;
        assert_eq!(
            whats(&p),
            vec![
                format!("samples.parquet: has {n} rows but meta.json stats.numSamples is {}", n + 1),
                "series.parquet: has 120 rows but meta.json strata.files records 7".to_string(),
            ]
        );
        assert!(p[0].to_string().starts_with(&format!("block {u} file samples.parquet")));
    }

    #[tokio::test]
    async fn deleted_file_and_broken_meta() {
        let (_d, b, u, _) = setup().await;
        b.delete(&Bucket::block_path(&u, format::SERIES_FILE)).await.unwrap();
        let p = verify_block(&b, &u).await.unwrap();
        assert_eq!(whats(&p), vec!["series.parquet: listed in meta.json but missing".to_string()]);
        b.put(&Bucket::block_path(&u, META_FILE), "{not json".into()).await.unwrap();
        let p = verify_block(&b, &u).await.unwrap();
        assert_eq!(p.len(), 1);
        assert!(p[0].file == META_FILE && p[0].what.starts_with("cannot be read"), "{p:?}");
    }

    /// The columns of a v2 samples file (see [`format::samples_schema`]).
    fn v2_columns(
        ids: Vec<u32>,
        ts: Vec<i64>,
        value: Vec<Option<f64>>,
        int: Vec<Option<i64>>,
        scale: Vec<f64>,
    ) -> Vec<arrow::array::ArrayRef> {
        vec![
            Arc::new(UInt32Array::from(ids)),
            Arc::new(Int64Array::from(ts)),
            Arc::new(Float64Array::from(value)),
            Arc::new(Int64Array::from(int)),
            Arc::new(Float64Array::from(scale)),
        ]
    }

    /// Replaces the block's samples.parquet with `columns` (in the v2 schema) and fixes the size in
    /// meta.json.
    async fn replace_samples(b: &Bucket, u: &str, meta: &mut BlockMeta, columns: Vec<arrow::array::ArrayRef>) {
        let batch = RecordBatch::try_new(format::samples_schema(2), columns).unwrap();
        let props = format::samples_writer_properties(
            format::SamplesEncoding::V2,
            format::key_value_metadata(2, u, &meta.thanos.labels),
        );
        let mut buf = Vec::new();
        let mut w = parquet::arrow::ArrowWriter::try_new(&mut buf, batch.schema(), Some(props)).unwrap();
        w.write(&batch).unwrap();
        w.close().unwrap();
        let size = buf.len() as u64;
        b.put(&Bucket::block_path(u, format::SAMPLES_FILE), buf.into()).await.unwrap();
        for f in &mut meta.thanos.files {
            if f.rel_path == format::SAMPLES_FILE {
                f.size_bytes = Some(size);
            }
        }
        b.put(&Bucket::block_path(u, META_FILE), meta.to_json().into()).await.unwrap();
    }

    /// (ids, timestamps) matching the series table: num_samples rows per series, 10 ms apart.
    fn rows_of(ix: &SeriesIndex) -> (Vec<u32>, Vec<i64>) {
        let (mut ids, mut ts) = (Vec::new(), Vec::new());
        for i in 0..ix.len() {
            for k in 0..ix.num_samples[i] as i64 {
                ids.push(i as u32);
                ts.push(ix.min_time[i] + k * 10);
            }
        }
        (ids, ts)
    }

    #[tokio::test]
    async fn unsorted_and_duplicate_samples_written_by_hand() {
        let (_d, b, u, mut meta) = setup().await;
        // Replace samples.parquet with rows that keep the counts but break the order.
        let ix = read_series_index(&b, &u).await.unwrap();
        let (ids, mut ts) = rows_of(&ix);
        let s = (0..ix.len()).find(|&i| ix.num_samples[i] >= 11).unwrap();
        let r0 = ix.first_row[s] as usize;
        ts.swap(r0 + 3, r0 + 4); // out of order
        ts[r0 + 10] = ts[r0 + 9]; // a duplicate timestamp
        let n = ids.len();
        replace_samples(&b, &u, &mut meta, v2_columns(ids, ts, vec![None; n], vec![Some(1); n], vec![1.0; n])).await;
        let p = verify_block(&b, &u).await.unwrap();
        let t = |k: usize| ix.min_time[s] + k as i64 * 10;
        assert_eq!(
            whats(&p),
            vec![
                format!(
                    "samples.parquet: row {}: (series_id {s}, timestamp {}) is out of order after (series_id {s}, timestamp {})",
                    r0 + 4,
                    t(3),
                    t(4)
                ),
                format!(
                    "samples.parquet: row {}: (series_id {s}, timestamp {}) is duplicate after (series_id {s}, timestamp {})",
                    r0 + 10,
                    t(9),
                    t(9)
                ),
            ]
        );
    }

    #[tokio::test]
    async fn v2_value_columns_written_by_hand() {
        let (_d, b, u, mut meta) = setup().await;
        let ix = read_series_index(&b, &u).await.unwrap();
        let (ids, ts) = rows_of(&ix);
        let n = ids.len();
        let mut value: Vec<Option<f64>> = vec![None; n];
        let mut int: Vec<Option<i64>> = vec![Some(25); n];
        let mut scale = vec![10.0; n];
        // In a series with 4+ samples: row 0 has both columns, row 1 neither, row 3 another scale.
        let s = (0..ix.len()).find(|&i| ix.num_samples[i] >= 4).unwrap();
        let r0 = ix.first_row[s] as usize;
        value[r0] = Some(2.5);
        int[r0 + 1] = None;
        scale[r0 + 3] = 100.0;
        // A mantissa that is not canonical: near 2^53, m / 10 and its neighbour round to one double.
        let last = n - 1;
        let bad_m = (0..100)
            .map(|k| (1i64 << 53) - k)
            .find(|&m| crate::values::encode(crate::values::decode(m, 10.0), 10.0) != Some(m))
            .unwrap();
        int[last] = Some(bad_m);
        scale[last] = 10.0;
        let f = ix.first_row[ix.len() - 1] as usize;
        (f..n).for_each(|i| scale[i] = 10.0);
        scale[f] = 7.0; // not a power of ten
        replace_samples(&b, &u, &mut meta, v2_columns(ids, ts, value, int, scale)).await;
        let p = whats(&verify_block(&b, &u).await.unwrap());
        let has = |s: &str| p.iter().any(|x| x.contains(s));
        assert!(
            has(&format!("row {r0} (series_id {s}): value set, value_int set, value_scale set; exactly one")),
            "{p:?}"
        );
        assert!(has(&format!("row {} (series_id {s}): value null, value_int null", r0 + 1)), "{p:?}");
        assert!(has(&format!("row {} (series_id {s}): value_scale 1e2 differs from the series' 1e1", r0 + 3)), "{p:?}");
        assert!(has(&format!("row {f} (series_id {}): value_scale 7e0 is not 10^e", ix.len() - 1)), "{p:?}");
        assert!(
            has(&format!(
                "row {last} (series_id {}): value_int {bad_m} at scale 1e1 does not round-trip",
                ix.len() - 1
            )),
            "{p:?}"
        );
        // The reader refuses the rows that break the one-column rule.
        let r = crate::reader::BlockReader::open(&b, &u).await.unwrap();
        let e = r.read_samples(&[s as u32], i64::MIN, i64::MAX).await.unwrap_err().to_string();
        assert!(e.contains("exactly one of value and value_int"), "{e}");
    }

    #[tokio::test]
    async fn v1_blocks_verify_and_read() {
        let dir = tempfile::tempdir().unwrap();
        let b = Bucket::local(dir.path()).unwrap();
        let u = ulid::Ulid::new();
        let data = synthetic(50, 0);
        let mut w = crate::writer::BlockWriter::with_encoding(
            b.clone(),
            crate::writer::BlockWriterOptions::new(u, 0, 7_200_000),
            format::SamplesEncoding::V1,
        )
        .unwrap();
        for (l, t, v) in &data {
            w.append_series(l, t, v).await.unwrap();
        }
        let meta = w.finish().await.unwrap();
        assert_eq!(meta.strata.as_ref().unwrap().format_version, 1);
        assert_eq!(verify_block(&b, &u.to_string()).await.unwrap(), vec![]);
        let r = crate::reader::BlockReader::open(&b, &u.to_string()).await.unwrap();
        assert_eq!(r.format_version(), 1);
        let ids: Vec<u32> = (0..50).collect();
        let got = r.read_samples(&ids, i64::MIN, i64::MAX).await.unwrap();
        for (g, (_, t, v)) in got.iter().zip(&data) {
            assert_eq!(&g.timestamps, t);
            assert_eq!(
                g.values.iter().map(|x| x.to_bits()).collect::<Vec<_>>(),
                v.iter().map(|x| x.to_bits()).collect::<Vec<_>>()
            );
        }
    }

    #[tokio::test]
    async fn inconsistent_series_table() {
        let (_d, b, u, meta) = setup().await;
        // A series table whose first_row/num_samples disagree with samples: swap two rows' counts.
        let ix = read_series_index(&b, &u).await.unwrap();
        let mut cols = ix.batch.columns().to_vec();
        let schema = ix.batch.schema();
        let pos = schema.index_of(format::COL_NUM_SAMPLES).unwrap();
        let mut ns = ix.num_samples.clone();
        ns.swap(0, 1);
        cols[pos] = Arc::new(arrow::array::UInt64Array::from(ns));
        let batch = RecordBatch::try_new(schema.clone(), cols).unwrap();
        let mut buf = Vec::new();
        let props = format::series_writer_properties(format::key_value_metadata(2, &u, &meta.thanos.labels));
        let mut w = parquet::arrow::ArrowWriter::try_new(&mut buf, schema, Some(props)).unwrap();
        w.write(&batch).unwrap();
        w.close().unwrap();
        let size = buf.len() as u64;
        b.put(&Bucket::block_path(&u, format::SERIES_FILE), buf.into()).await.unwrap();
        let p = verify_block(&b, &u).await.unwrap();
        let w = whats(&p);
        assert!(w[0].starts_with(&format!("series.parquet: size is {size} bytes, meta.json records")), "{w:?}");
        assert!(w.iter().any(|x| x.starts_with("series.parquet: series_id 1 ") && x.contains("first_row is")), "{w:?}");
        assert!(w.iter().any(|x| x.starts_with("samples.parquet: series_id 0 ")), "{w:?}");
    }
}
