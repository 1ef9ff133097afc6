//! Blocks written straight into a local bucket by the engine's writer, for the tests that run
//! `strata compact` (and then read, query or serve the result): the time constants they share, a
//! bucket directory with its objstore config, and a writer of 2h-style block runs.

use std::path::PathBuf;

use engine::{BlockWriter, BlockWriterOptions, Bucket, Labels};

use super::{fs_bucket_config, strata_ok};

/// One hour in ms.
pub const H: i64 = 3_600_000;
/// A multiple of 2 days (the compactor's 2d windows are aligned to the epoch).
pub const T0: i64 = 1_700_006_400_000;
/// The scrape interval of the generated data (ms).
pub const STEP: i64 = 15_000;

/// A series: labels, timestamps (ms, ascending), values.
pub type Series = (Labels, Vec<i64>, Vec<f64>);

/// A FILESYSTEM bucket in a temporary directory: `dir` holds the blocks, `cfg` is its objstore
/// config file (both removed with `tmp`).
pub struct LocalBucket {
    pub tmp: tempfile::TempDir,
    pub dir: PathBuf,
    pub cfg: PathBuf,
    pub bucket: Bucket,
}

impl LocalBucket {
    pub fn new() -> Self {
        let tmp = tempfile::tempdir().unwrap();
        let dir = tmp.path().join("bucket");
        std::fs::create_dir_all(&dir).unwrap();
        let cfg = fs_bucket_config(tmp.path(), &dir);
        let bucket = Bucket::local(&dir).unwrap();
        LocalBucket { tmp, dir, cfg, bucket }
    }

    /// The objstore config file's path, for `--objstore.config-file`.
    pub fn cfg_str(&self) -> &str {
        self.cfg.to_str().unwrap()
    }
}

/// Writes `data` as `n` blocks of `len` ms from `t0` at compaction level `level`, source
/// `receive`, with `external_labels` (old ULIDs: past any consistency delay).
pub async fn write_blocks(
    bucket: &Bucket,
    data: &[Series],
    t0: i64,
    (n, len): (i64, i64),
    level: u32,
    external_labels: &[(&str, &str)],
) {
    for b in 0..n {
        let (min, max) = (t0 + b * len, t0 + (b + 1) * len);
        let mut o = BlockWriterOptions::new(ulid::Ulid::from_parts(min as u64, b as u128 + 1), min, max);
        o.external_labels = external_labels.iter().map(|(k, v)| (k.to_string(), v.to_string())).collect();
        o.source = "receive".into();
        o.compaction_level = level;
        let mut w = BlockWriter::new(bucket.clone(), o).unwrap();
        for (l, t, v) in data {
            let (a, z) = (t.partition_point(|&x| x < min), t.partition_point(|&x| x < max));
            w.append_series(l, &t[a..z], &v[a..z]).await.unwrap();
        }
        w.finish().await.unwrap();
    }
}

/// Resolution and time range (in hours from `t0`) of every block of `bucket`, sorted.
pub async fn block_hours(bucket: &Bucket, t0: i64) -> Vec<(i64, i64, i64)> {
    let mut res = Vec::new();
    for id in bucket.list_blocks().await.unwrap() {
        let m = bucket.read_meta(&id).await.unwrap();
        res.push((m.thanos.downsample.resolution, (m.min_time - t0) / H, (m.max_time - t0) / H));
    }
    res.sort();
    res
}

/// Runs `strata compact` once over the bucket of objstore config `cfg`: no consistency or deletion
/// delay, its HTTP server on a free port (tests run side by side).
pub fn compact_now(cfg: &str) {
    compact_now_with(cfg, &[]);
}

/// [`compact_now`] with more flags of `strata compact`.
pub fn compact_now_with(cfg: &str, extra: &[&str]) {
    let mut args = vec![
        "compact",
        "--objstore.config-file",
        cfg,
        "--consistency-delay=0s",
        "--delete-delay=0s",
        "--http-address=127.0.0.1:0",
    ];
    args.extend_from_slice(extra);
    strata_ok(&args);
}
