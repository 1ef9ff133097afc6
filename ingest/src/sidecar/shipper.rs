//! The shipper: uploads each completed block of a Prometheus TSDB directory to the bucket once,
//! converted to a Strata block (same ULID, data files first, `meta.json` last, `thanos.source`
//! `sidecar`, the Prometheus's external labels in `thanos.labels`), and records what it shipped
//! in `thanos.shipper.json` in the TSDB directory, in Thanos's format:
//!
//! ```text
//!   {"version": 1, "uploaded": ["01H...", ...]}      (tab-indented; "uploaded": null when empty)
//!
//!   sync: blocks by min time ─► in the state file? keep ─► empty (0 samples)? skip
//!         ─► level > 1 without --shipper.upload-compacted? skip ─► meta.json in the bucket? keep
//!         ─► level > 1 overlapping a bucket block of the same external labels? refuse (as Thanos)
//!         ─► hard-link into <tsdb>/thanos/upload/<ULID> ─► convert + upload ─► state file
//! ```
//!
//! Crash and fault safety: the block is read from hard links, so Prometheus's retention deleting
//! it mid-upload changes nothing; a block whose upload fails stops the sync there (later blocks
//! wait, nothing is skipped) and is retried whole next time, after the converter removed its
//! partial files; a restart after SIGKILL finds no `meta.json` for the interrupted block in the
//! bucket, removes the leftovers and uploads it again, and never uploads a block twice because a
//! block with `meta.json` in the bucket counts as shipped. The state file only saves bucket
//! lookups, as in Thanos: losing it uploads nothing twice.
//!
//! Test hook (hidden, for the crash tests only): `STRATA_SIDECAR_TEST_PAUSE_AT=upload` stops the
//! first upload after its first series batch was handed to the writer (no `meta.json` yet),
//! writes `strata-sidecar-test-hook: paused at upload` to stderr and waits until the file named
//! by `STRATA_SIDECAR_TEST_RESUME_FILE` exists (forever when unset).

use std::collections::HashSet;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};

use engine::BlockMeta;
use engine::bucket::Bucket;
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::gauge::Gauge;
use prometheus_client::registry::Registry;
use serde::{Deserialize, Serialize};

use super::PromState;
use crate::convert::{ConvertOptions, Progress, convert_block};
use crate::error::{Error, Result};
use crate::tsdb::is_block_dir_name;

/// Name of the shipper's state file in the TSDB directory (Thanos's).
pub const STATE_FILE: &str = "thanos.shipper.json";
/// Version of the state file format.
pub const STATE_VERSION: u32 = 1;
/// The test hook's environment variable (see the module docs).
pub const PAUSE_ENV: &str = "STRATA_SIDECAR_TEST_PAUSE_AT";
/// The file whose existence ends the test hook's pause.
pub const RESUME_ENV: &str = "STRATA_SIDECAR_TEST_RESUME_FILE";
/// Thanos's message when the sidecar has no external labels to put on blocks.
pub const NO_LABELS: &str = "not uploading as no external labels are configured yet - is Prometheus healthy/reachable?";

/// The state file: which blocks were shipped (Thanos's `shipper.Meta`).
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct ShipperState {
    /// Always [`STATE_VERSION`].
    pub version: u32,
    /// ULIDs of the blocks shipped that still exist locally; `null` when none, as Go writes it.
    pub uploaded: Option<Vec<String>>,
}

impl ShipperState {
    /// Reads `<dir>/thanos.shipper.json`.
    pub fn read(dir: &Path) -> Result<Self> {
        let path = dir.join(STATE_FILE);
        let bytes = std::fs::read(&path).map_err(|e| Error::io(&path, e))?;
        let s: ShipperState = serde_json::from_slice(&bytes)
            .map_err(|e| Error::BadPath { path: path.clone(), reason: format!("not a shipper state file: {e}") })?;
        if s.version != STATE_VERSION {
            return Err(Error::BadPath { path, reason: format!("unexpected meta file version {}", s.version) });
        }
        Ok(s)
    }

    /// Writes `<dir>/thanos.shipper.json` atomically (a `.tmp` file renamed over it, then the
    /// directory synced), tab-indented with a final newline as Go's encoder writes it.
    pub fn write(&self, dir: &Path) -> Result<()> {
        let path = dir.join(STATE_FILE);
        let tmp = dir.join(format!("{STATE_FILE}.tmp"));
        let mut buf = Vec::new();
        let mut ser =
            serde_json::Serializer::with_formatter(&mut buf, serde_json::ser::PrettyFormatter::with_indent(b"\t"));
        self.serialize(&mut ser)
            .map_err(|e| Error::BadPath { path: path.clone(), reason: format!("cannot encode: {e}") })?;
        buf.push(b'\n');
        {
            use std::io::Write;
            let mut f = std::fs::File::create(&tmp).map_err(|e| Error::io(&tmp, e))?;
            f.write_all(&buf).map_err(|e| Error::io(&tmp, e))?;
            f.sync_all().map_err(|e| Error::io(&tmp, e))?;
        }
        std::fs::rename(&tmp, &path).map_err(|e| Error::io(&path, e))?;
        if let Ok(d) = std::fs::File::open(dir) {
            let _ = d.sync_all();
        }
        Ok(())
    }

    fn ulids(&self) -> HashSet<String> {
        self.uploaded.iter().flatten().cloned().collect()
    }
}

/// The shipper's metrics under Thanos's names: `thanos_shipper_dir_syncs_total`,
/// `thanos_shipper_dir_sync_failures_total`, `thanos_shipper_uploads_total`,
/// `thanos_shipper_upload_failures_total` and, with `--shipper.upload-compacted`,
/// `thanos_shipper_upload_compacted_done` (1 once a sync uploaded every compacted block).
#[derive(Debug, Clone, Default)]
pub struct ShipperMetrics {
    dir_syncs: Counter,
    dir_sync_failures: Counter,
    uploads: Counter,
    upload_failures: Counter,
    upload_compacted_done: Gauge,
}

impl ShipperMetrics {
    /// Creates the metrics and registers them in `registry` (one without a name prefix).
    pub fn register(registry: &mut Registry, upload_compacted: bool) -> Self {
        let m = ShipperMetrics::default();
        registry.register("thanos_shipper_dir_syncs", "Total number of dir syncs", m.dir_syncs.clone());
        registry.register(
            "thanos_shipper_dir_sync_failures",
            "Total number of failed dir syncs",
            m.dir_sync_failures.clone(),
        );
        registry.register("thanos_shipper_uploads", "Total number of uploaded blocks", m.uploads.clone());
        registry.register(
            "thanos_shipper_upload_failures",
            "Total number of block upload failures",
            m.upload_failures.clone(),
        );
        if upload_compacted {
            registry.register(
                "thanos_shipper_upload_compacted_done",
                "If 1 it means shipper uploaded all compacted blocks from the filesystem.",
                m.upload_compacted_done.clone(),
            );
        }
        m
    }
}

/// What one sync did.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct SyncReport {
    /// ULIDs uploaded by this sync.
    pub uploaded: Vec<String>,
    /// Blocks whose upload failed (the sync stopped at the first).
    pub failed: usize,
}

/// Uploads the completed blocks of one TSDB directory.
#[derive(Debug)]
pub struct Shipper {
    dir: PathBuf,
    bucket: Bucket,
    state: Arc<PromState>,
    upload_compacted: bool,
    metrics: ShipperMetrics,
}

impl Shipper {
    /// A shipper of the blocks in `dir` to `bucket`, labelled with `state`'s external labels.
    pub fn new(
        dir: impl Into<PathBuf>,
        bucket: Bucket,
        state: Arc<PromState>,
        upload_compacted: bool,
        metrics: ShipperMetrics,
    ) -> Self {
        Shipper { dir: dir.into(), bucket, state, upload_compacted, metrics }
    }

    /// The metas of the block directories, oldest (min time) first.
    pub fn local_blocks(&self) -> Result<Vec<BlockMeta>> {
        local_blocks(&self.dir)
    }

    /// Uploads the blocks not shipped yet (see the module docs); counts the sync in the metrics.
    pub async fn sync(&self) -> Result<SyncReport> {
        let res = self.sync_inner().await;
        self.metrics.dir_syncs.inc();
        match &res {
            Ok(r) if r.failed > 0 => {
                self.metrics.dir_sync_failures.inc();
                self.metrics.upload_failures.inc_by(r.failed as u64);
            }
            Ok(_) => {
                if self.upload_compacted {
                    self.metrics.upload_compacted_done.set(1);
                }
            }
            Err(_) => {
                self.metrics.dir_sync_failures.inc();
            }
        }
        res
    }

    async fn sync_inner(&self) -> Result<SyncReport> {
        let labels = self.state.external_labels();
        if labels.is_empty() {
            return Err(Error::Shipper { dir: self.dir.clone(), reason: NO_LABELS.to_string() });
        }
        let shipped = match ShipperState::read(&self.dir) {
            Ok(s) => s.ulids(),
            Err(Error::Io { source, .. }) if source.kind() == std::io::ErrorKind::NotFound => HashSet::new(),
            Err(e) => {
                tracing::warn!(error = %e, "reading the shipper state file failed, will override it");
                HashSet::new()
            }
        };
        let mut report = SyncReport::default();
        let mut uploaded: Vec<String> = Vec::new();
        let mut stopped = false;
        // Metas of the bucket's blocks with the same external labels, read once a compacted block
        // is about to go (Thanos's overlap check).
        let mut same_labels: Option<Vec<BlockMeta>> = None;
        for m in self.local_blocks()? {
            if shipped.contains(&m.ulid) {
                uploaded.push(m.ulid);
                continue;
            }
            if stopped || m.stats.num_samples == 0 || (m.compaction.level > 1 && !self.upload_compacted) {
                continue;
            }
            let in_bucket = self.bucket.exists(&Bucket::block_path(&m.ulid, engine::meta::META_FILE)).await;
            match in_bucket {
                Ok(true) => {
                    uploaded.push(m.ulid);
                    continue;
                }
                Ok(false) => {}
                Err(e) => {
                    tracing::warn!(block = %m.ulid, error = %e, "cannot check the bucket; retrying later");
                    report.failed += 1;
                    stopped = true;
                    continue;
                }
            }
            if m.compaction.level > 1 {
                if same_labels.is_none() {
                    match self.bucket_metas(&labels).await {
                        Ok(v) => same_labels = Some(v),
                        Err(e) => {
                            tracing::warn!(block = %m.ulid, error = %e, "cannot read the bucket's blocks; retrying later");
                            report.failed += 1;
                            stopped = true;
                            continue;
                        }
                    }
                }
                let overlap = same_labels.iter().flatten().find(|b| b.min_time < m.max_time && m.min_time < b.max_time);
                if let Some(o) = overlap {
                    tracing::error!(
                        block = %m.ulid,
                        overlaps = %o.ulid,
                        "found overlap or error during sync, cannot upload compacted block: shipping compacted block {} is blocked; overlap spotted with {} [{}, {})",
                        m.ulid, o.ulid, o.min_time, o.max_time
                    );
                    report.failed += 1;
                    stopped = true;
                    continue;
                }
            }
            match self.upload(&m, &labels).await {
                Ok(()) => {
                    tracing::info!(block = %m.ulid, min_time = m.min_time, max_time = m.max_time, "uploaded block");
                    self.metrics.uploads.inc();
                    report.uploaded.push(m.ulid.clone());
                    uploaded.push(m.ulid);
                }
                Err(e) => {
                    tracing::warn!(block = %m.ulid, error = %e, "shipping failed; retrying later");
                    report.failed += 1;
                    stopped = true;
                }
            }
        }
        let state = ShipperState { version: STATE_VERSION, uploaded: (!uploaded.is_empty()).then_some(uploaded) };
        if let Err(e) = state.write(&self.dir) {
            tracing::warn!(error = %e, "updating the shipper state file failed");
        }
        Ok(report)
    }

    /// Metas of the bucket's complete blocks whose external labels are `labels`.
    async fn bucket_metas(&self, labels: &engine::Labels) -> Result<Vec<BlockMeta>> {
        let want: std::collections::BTreeMap<String, String> =
            labels.iter().map(|l| (l.name.clone(), l.value.clone())).collect();
        let mut out = Vec::new();
        for id in self.bucket.list_blocks().await? {
            let m = self.bucket.read_meta(&id).await?;
            if m.thanos.labels == want {
                out.push(m);
            }
        }
        Ok(out)
    }

    /// Hard-links the block into `thanos/upload/<ULID>` and converts it from there.
    async fn upload(&self, m: &BlockMeta, labels: &engine::Labels) -> Result<()> {
        let updir = self.dir.join("thanos").join("upload").join(&m.ulid);
        remove_dir(&updir)?;
        hardlink_block(&self.dir.join(&m.ulid), &updir)?;
        let opts = ConvertOptions {
            external_labels: labels.iter().map(|l| (l.name.clone(), l.value.clone())).collect(),
            source: "sidecar".to_string(),
        };
        let paused = AtomicBool::new(false);
        let hook = |p: Progress| {
            if matches!(p, Progress::Advanced { .. }) && !paused.swap(true, Ordering::Relaxed) {
                test_pause();
            }
        };
        let res = convert_block(&updir, &self.bucket, &opts, &hook).await;
        if let Err(e) = remove_dir(&updir) {
            tracing::warn!(error = %e, "cannot clean the upload directory");
        }
        res.map(|_| ())
    }
}

/// Removes leftovers of interrupted uploads (`<dir>/thanos/upload`).
pub fn clean_upload_dir(dir: &Path) -> Result<()> {
    remove_dir(&dir.join("thanos").join("upload"))
}

fn remove_dir(p: &Path) -> Result<()> {
    match std::fs::remove_dir_all(p) {
        Err(e) if e.kind() != std::io::ErrorKind::NotFound => Err(Error::io(p, e)),
        _ => Ok(()),
    }
}

/// Links `meta.json`, `index`, `tombstones` (when present) and `chunks/*` of `src` into `dst`.
fn hardlink_block(src: &Path, dst: &Path) -> Result<()> {
    let chunks = dst.join("chunks");
    std::fs::create_dir_all(&chunks).map_err(|e| Error::io(&chunks, e))?;
    let src_chunks = src.join("chunks");
    let mut files = vec![PathBuf::from("meta.json"), PathBuf::from("index")];
    if src.join("tombstones").exists() {
        files.push(PathBuf::from("tombstones"));
    }
    for ent in std::fs::read_dir(&src_chunks).map_err(|e| Error::io(&src_chunks, e))? {
        let ent = ent.map_err(|e| Error::io(&src_chunks, e))?;
        files.push(Path::new("chunks").join(ent.file_name()));
    }
    for f in files {
        let (from, to) = (src.join(&f), dst.join(&f));
        std::fs::hard_link(&from, &to).map_err(|e| Error::io(&from, e))?;
    }
    Ok(())
}

/// The metas of the block directories in `dir` (ULID-named directories with a `meta.json`),
/// sorted by min time.
pub fn local_blocks(dir: &Path) -> Result<Vec<BlockMeta>> {
    let mut out = Vec::new();
    for ent in std::fs::read_dir(dir).map_err(|e| Error::io(dir, e))? {
        let ent = ent.map_err(|e| Error::io(dir, e))?;
        let name = ent.file_name();
        let Some(name) = name.to_str() else { continue };
        if !is_block_dir_name(name) || !ent.path().is_dir() {
            continue;
        }
        let path = ent.path().join("meta.json");
        let bytes = match std::fs::read(&path) {
            Ok(b) => b,
            // Deleted by retention or compaction since the listing.
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => continue,
            Err(e) => return Err(Error::io(&path, e)),
        };
        let m: BlockMeta = serde_json::from_slice(&bytes).map_err(|e| {
            Error::Engine(engine::Error::BadMeta { path: path.display().to_string(), reason: e.to_string() })
        })?;
        out.push(m);
    }
    out.sort_by(|a, b| (a.min_time, &a.ulid).cmp(&(b.min_time, &b.ulid)));
    Ok(out)
}

/// The test hook (see the module docs): blocks this thread until the resume file exists.
fn test_pause() {
    if std::env::var(PAUSE_ENV).ok().as_deref() != Some("upload") {
        return;
    }
    eprintln!("strata-sidecar-test-hook: paused at upload");
    let resume = std::env::var_os(RESUME_ENV).map(PathBuf::from);
    loop {
        if resume.as_ref().is_some_and(|p| p.exists()) {
            eprintln!("strata-sidecar-test-hook: resumed");
            return;
        }
        std::thread::sleep(std::time::Duration::from_millis(100));
    }
}

#[cfg(test)]
#[allow(clippy::unwrap_used, clippy::expect_used)]
mod tests {
    use super::*;

    #[test]
    fn state_file_is_thanos_format() {
        let dir = tempfile::tempdir().unwrap();
        let s = ShipperState {
            version: 1,
            uploaded: Some(vec!["01HZZZZZZZZZZZZZZZZZZZZZZ0".into(), "01HZZZZZZZZZZZZZZZZZZZZZZ1".into()]),
        };
        s.write(dir.path()).unwrap();
        let text = std::fs::read_to_string(dir.path().join(STATE_FILE)).unwrap();
        assert_eq!(
            text,
            "{\n\t\"version\": 1,\n\t\"uploaded\": [\n\t\t\"01HZZZZZZZZZZZZZZZZZZZZZZ0\",\n\t\t\"01HZZZZZZZZZZZZZZZZZZZZZZ1\"\n\t]\n}\n"
        );
        assert_eq!(ShipperState::read(dir.path()).unwrap(), s);
        ShipperState { version: 1, uploaded: None }.write(dir.path()).unwrap();
        let text = std::fs::read_to_string(dir.path().join(STATE_FILE)).unwrap();
        assert_eq!(text, "{\n\t\"version\": 1,\n\t\"uploaded\": null\n}\n");
        std::fs::write(dir.path().join(STATE_FILE), "{\"version\": 2, \"uploaded\": []}").unwrap();
        assert!(ShipperState::read(dir.path()).unwrap_err().to_string().contains("unexpected meta file version 2"));
    }

    /// Writes a one-series block with `n` samples at compaction `level`.
    fn block(tsdb: &Path, ulid: &str, t0: i64, n: i64, level: u32) {
        use crate::tsdb::testblock::{TestSeries, write_block};
        let dir = tsdb.join(ulid);
        let samples: Vec<(i64, u64)> = (0..n).map(|i| (t0 + i * 1000, (i as f64).to_bits())).collect();
        let chunks = if n == 0 { vec![] } else { vec![samples] };
        write_block(&dir, ulid, &[TestSeries { labels: vec![("__name__", "m"), ("job", "j")], chunks }], 10);
        let p = dir.join("meta.json");
        let mut meta: serde_json::Value = serde_json::from_slice(&std::fs::read(&p).unwrap()).unwrap();
        meta["compaction"]["level"] = level.into();
        meta["minTime"] = t0.into();
        meta["maxTime"] = (t0 + n.max(1) * 1000).into();
        std::fs::write(&p, serde_json::to_vec(&meta).unwrap()).unwrap();
    }

    #[tokio::test]
    async fn sync_uploads_level_one_blocks_once_and_compacted_only_when_asked() {
        let tmp = tempfile::tempdir().unwrap();
        let tsdb = tmp.path().join("tsdb");
        let (a, b, c, d) = (
            "01J00000000000000000000001",
            "01J00000000000000000000002",
            "01J00000000000000000000003",
            "01J00000000000000000000004",
        );
        block(&tsdb, a, 1_000_000, 50, 1);
        block(&tsdb, b, 2_000_000, 30, 2);
        block(&tsdb, c, 3_000_000, 0, 1);
        block(&tsdb, d, 4_000_000, 20, 1);
        let bucket = Bucket::local(tmp.path().join("bucket")).unwrap();
        let state = Arc::new(PromState::new(Arc::new(AtomicBool::new(false)), i64::MIN));
        let shipper = |compacted| {
            let m = ShipperMetrics::register(&mut Registry::default(), compacted);
            Shipper::new(&tsdb, bucket.clone(), state.clone(), compacted, m)
        };
        // No external labels yet: nothing is uploaded, with Thanos's reason.
        let e = shipper(false).sync().await.unwrap_err().to_string();
        assert!(e.contains(NO_LABELS), "{e}");
        assert!(bucket.list_blocks().await.unwrap().is_empty());

        state.set_external_labels(engine::Labels::from_pairs([("cluster", "eu")]));
        let s = shipper(false);
        assert_eq!(s.sync().await.unwrap(), SyncReport { uploaded: vec![a.into(), d.into()], failed: 0 });
        assert_eq!(bucket.list_blocks().await.unwrap(), vec![a.to_string(), d.to_string()]);
        let meta = bucket.read_meta(a).await.unwrap();
        assert_eq!((meta.thanos.source.as_str(), meta.stats.num_samples), ("sidecar", 50));
        assert_eq!(meta.thanos.labels.get("cluster").map(String::as_str), Some("eu"));
        assert_eq!(ShipperState::read(&tsdb).unwrap().uploaded, Some(vec![a.to_string(), d.to_string()]));
        // Again: nothing new.
        assert_eq!(s.sync().await.unwrap(), SyncReport::default());
        // With --shipper.upload-compacted the level-2 block goes too; the empty one never.
        assert_eq!(shipper(true).sync().await.unwrap().uploaded, vec![b.to_string()]);
        assert_eq!(
            ShipperState::read(&tsdb).unwrap().uploaded,
            Some(vec![a.to_string(), b.to_string(), d.to_string()])
        );
        assert!(!tsdb.join("thanos/upload").join(b).exists());

        // A compacted block overlapping a shipped block of the same labels is refused (and so
        // are the blocks after it, until the next sync); nothing of it reaches the bucket.
        let e = "01J00000000000000000000005";
        block(&tsdb, e, 1_020_000, 40, 2);
        let r = shipper(true).sync().await.unwrap();
        assert_eq!(r, SyncReport { uploaded: vec![], failed: 1 });
        assert!(!bucket.list_blocks().await.unwrap().contains(&e.to_string()));
        assert!(bucket.list_partial_blocks().await.unwrap().is_empty());
    }
}
