//! The storage paths a script's data can be loaded into: the in-memory `MemSource`, or the real
//! storage the servers query through the same `SeriesSource` trait.
//!
//! ```text
//!   load block ──► memsource:    MemSource::add
//!              ──► head:         engine::Head (WAL in a temp dir; append = one WAL record)
//!              ──► bucket:       2h-aligned Parquet blocks (BlockWriter) in a FILESYSTEM bucket,
//!                                read through BucketSource (one block set per load)
//!              ──► head+bucket:  as `strata up`: MergedSource(bucket, head); the windows before the
//!                                load's last 2h window go to blocks, the last two windows to the
//!                                head (one window is in both, so the merge must deduplicate)
//! ```
//!
//! The head is opened with an out-of-order window wide enough for every script (a load block
//! starts again at t = 0, older than what the head already holds); everything else is default.

use std::collections::BTreeMap;
use std::sync::Arc;

use engine::bucket::Bucket;
use engine::{
    BlockWriter, BlockWriterOptions, BucketSource, Head, HeadOptions, Labels, MemSource, MergedSource, SeriesSource,
};

/// Block length and alignment of the bucket path (the head's default cut size).
const BLOCK_MS: i64 = 2 * 3600 * 1000;

/// Where a scope's data lives.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub(crate) enum StoragePath {
    Mem,
    Head,
    Bucket,
    HeadAndBucket,
}

impl StoragePath {
    pub(crate) const ALL: [StoragePath; 4] =
        [StoragePath::Mem, StoragePath::Head, StoragePath::Bucket, StoragePath::HeadAndBucket];

    /// The name used in reports, lists and `PROMQLTEST_PATHS`.
    pub(crate) fn name(self) -> &'static str {
        match self {
            StoragePath::Mem => "memsource",
            StoragePath::Head => "head",
            StoragePath::Bucket => "bucket",
            StoragePath::HeadAndBucket => "head+bucket",
        }
    }

    pub(crate) fn from_name(s: &str) -> Option<Self> {
        Self::ALL.into_iter().find(|p| p.name() == s)
    }
}

/// Series of a load as the real storage takes them: labels to samples by timestamp.
type Points = BTreeMap<Labels, BTreeMap<i64, f64>>;

/// One series of a load block: labels, timestamps, values, start timestamps (0 = none).
pub(crate) type LoadSeries = (Labels, Vec<i64>, Vec<f64>, Vec<i64>);

/// The data of one `clear` scope on one storage path.
pub(crate) struct Store {
    path: StoragePath,
    mem: Option<Arc<MemSource>>,
    head: Option<Arc<Head>>,
    bucket: Option<(Bucket, Arc<BucketSource>)>,
    source: Arc<dyn SeriesSource>,
    /// Holds the head's WAL and the bucket directory; removed with the scope.
    _dir: Option<tempfile::TempDir>,
    /// ULIDs of the blocks written so far (increasing, so later loads sort after earlier ones).
    next_block: u64,
}

impl Store {
    pub(crate) async fn new(path: StoragePath) -> Result<Self, String> {
        if path == StoragePath::Mem {
            let mem = Arc::new(MemSource::new());
            return Ok(Store {
                path,
                source: mem.clone(),
                mem: Some(mem),
                head: None,
                bucket: None,
                _dir: None,
                next_block: 0,
            });
        }
        let dir = tempfile::tempdir().map_err(|e| format!("temp dir: {e}"))?;
        let head = if matches!(path, StoragePath::Head | StoragePath::HeadAndBucket) {
            let mut opts = HeadOptions::new(dir.path().join("head"));
            // Every load block starts at t = 0 again: accept samples however far back.
            opts.out_of_order_window_ms = i64::MAX / 4;
            Some(Head::open(opts).await.map_err(|e| format!("opening the head: {e}"))?)
        } else {
            None
        };
        let bucket = if matches!(path, StoragePath::Bucket | StoragePath::HeadAndBucket) {
            let b = Bucket::local(dir.path().join("bucket")).map_err(|e| format!("bucket: {e}"))?;
            let src = Arc::new(BucketSource::new(b.clone()));
            Some((b, src))
        } else {
            None
        };
        let source: Arc<dyn SeriesSource> = match (&head, &bucket) {
            (Some(h), None) => h.clone(),
            (None, Some((_, b))) => b.clone(),
            (Some(h), Some((_, b))) => Arc::new(MergedSource::new(vec![b.clone(), h.clone()])),
            (None, None) => return Err("no storage".into()),
        };
        Ok(Store { path, mem: None, head, bucket, source, _dir: Some(dir), next_block: 0 })
    }

    /// What queries read.
    pub(crate) fn source(&self) -> Arc<dyn SeriesSource> {
        self.source.clone()
    }

    /// Loads one load block. `Err` describes samples the storage did not take as given.
    pub(crate) async fn load(&mut self, series: &[LoadSeries]) -> Result<(), String> {
        if let Some(mem) = &self.mem {
            for (l, ts, vs, sts) in series {
                mem.add_with_start_timestamps(l.clone(), ts, vs, sts);
            }
            return Ok(());
        }
        if series.iter().any(|s| s.3.iter().any(|&st| st != 0)) {
            return Err(format!("{} stores no start timestamps", self.path.name()));
        }
        // One load block may name a series twice; merge as the script language does (later wins).
        let mut merged: Points = BTreeMap::new();
        for (l, ts, vs, _) in series {
            let e = merged.entry(l.clone()).or_default();
            for (&t, &v) in ts.iter().zip(vs) {
                e.insert(t, v);
            }
        }
        let (for_blocks, for_head) = match self.path {
            StoragePath::Head => (BTreeMap::new(), merged),
            StoragePath::Bucket => (merged, BTreeMap::new()),
            _ => split_for_up(merged),
        };
        if let Some(head) = &self.head {
            let batch: Vec<(Labels, Vec<(i64, f64)>)> =
                for_head.into_iter().map(|(l, pts)| (l, pts.into_iter().collect())).collect();
            if !batch.is_empty() {
                let rep = head.append(&batch).await.map_err(|e| format!("head append: {e}"))?;
                if rep.rejected() > 0 {
                    return Err(format!(
                        "head rejected {} samples ({} out of order, {} duplicate, {} too old): {}",
                        rep.rejected(),
                        rep.out_of_order,
                        rep.duplicate,
                        rep.too_old,
                        rep.first_error.unwrap_or_default()
                    ));
                }
            }
        }
        if let Some((bucket, src)) = &self.bucket {
            self.next_block = write_blocks(bucket, &for_blocks, self.next_block).await?;
            src.sync().await.map_err(|e| format!("bucket sync: {e}"))?;
        }
        Ok(())
    }
}

/// Splits a load for the head+bucket path: windows before the last 2h window of the load go to
/// blocks; the last two windows to the head (the one before the last is in both).
fn split_for_up(all: Points) -> (Points, Points) {
    let max_t = all.values().filter_map(|p| p.keys().next_back()).max().copied().unwrap_or(0);
    let last_window = max_t.div_euclid(BLOCK_MS) * BLOCK_MS;
    let (mut blocks, mut head) = (BTreeMap::new(), BTreeMap::new());
    for (l, pts) in all {
        let b: BTreeMap<i64, f64> = pts.range(..last_window).map(|(&t, &v)| (t, v)).collect();
        let h: BTreeMap<i64, f64> = pts.range(last_window - BLOCK_MS..).map(|(&t, &v)| (t, v)).collect();
        if !b.is_empty() {
            blocks.insert(l.clone(), b);
        }
        if !h.is_empty() {
            head.insert(l, h);
        }
    }
    (blocks, head)
}

/// Writes `series` as 2h-aligned blocks (series in label order, as the writer requires); returns
/// the next block number.
async fn write_blocks(bucket: &Bucket, series: &Points, mut next: u64) -> Result<u64, String> {
    type Window<'a> = Vec<(&'a Labels, Vec<i64>, Vec<f64>)>;
    let mut windows: BTreeMap<i64, Window<'_>> = BTreeMap::new();
    for (l, pts) in series {
        for (&t, &v) in pts {
            let w = t.div_euclid(BLOCK_MS) * BLOCK_MS;
            let list = windows.entry(w).or_default();
            match list.last_mut() {
                Some((last, ts, vs)) if *last == l => {
                    ts.push(t);
                    vs.push(v);
                }
                _ => list.push((l, vec![t], vec![v])),
            }
        }
    }
    for (start, list) in windows {
        // Block ULIDs sort by write order: the timestamp part counts blocks.
        next += 1;
        let ulid = ulid::Ulid::from_parts(next, 0);
        let mut w = BlockWriter::new(bucket.clone(), BlockWriterOptions::new(ulid, start, start + BLOCK_MS))
            .map_err(|e| format!("block writer: {e}"))?;
        for (l, ts, vs) in list {
            w.append_series(l, &ts, &vs).await.map_err(|e| format!("block append {l}: {e}"))?;
        }
        w.finish().await.map_err(|e| format!("block finish: {e}"))?;
    }
    Ok(next)
}
