//! An on-disk cache of the small, immutable block files a store reads on every start: each block's
//! `meta.json` and `series.parquet` (Strata's index, the counterpart of Thanos's index header), kept
//! under a local directory (the store gateway's `--data-dir`) so that a restarted gateway opens its
//! blocks without downloading them again.
//!
//! ```text
//!   reader ─get─► DiskCachedStore ──meta.json / series.parquet──► <dir>/<ULID>/<file>  (hit)
//!                        │                  miss: whole object from the bucket, written to <dir>
//!                        │                  atomically (temp file + rename), then served from disk
//!                        └──every other path / every write──► the bucket
//! ```
//!
//! Blocks are immutable (a rewrite makes a new ULID), so a cached file never goes stale; a cached
//! block that left the bucket is removed by [`DiskCachedStore::prune`]. A cache file that cannot
//! be read or written only costs the download: the object is then served from the bucket.

use std::collections::HashSet;
use std::fmt;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};

use async_trait::async_trait;
use futures::stream::BoxStream;
use object_store::local::LocalFileSystem;
use object_store::path::Path as ObjPath;
use object_store::{
    CopyOptions, GetOptions, GetResult, ListResult, MultipartUpload, ObjectMeta, ObjectStore, ObjectStoreExt,
    PutMultipartOptions, PutOptions, PutPayload, PutResult,
};

use crate::error::{Error, Result};

/// File names cached on disk (the last path segment of a block file).
const CACHED_FILES: [&str; 2] = [crate::meta::META_FILE, crate::format::SERIES_FILE];

/// Hit and miss counts of a [`DiskCachedStore`].
#[derive(Debug, Default, Clone, Copy, PartialEq, Eq)]
pub struct DiskCacheStats {
    /// Reads answered from the local directory.
    pub hits: u64,
    /// Reads that downloaded the object from the bucket (and stored it).
    pub misses: u64,
}

/// An [`ObjectStore`] that keeps `meta.json` and `series.parquet` of every block it reads in a
/// local directory and forwards everything else to the bucket's store.
#[derive(Debug)]
pub struct DiskCachedStore {
    inner: Arc<dyn ObjectStore>,
    local: LocalFileSystem,
    dir: PathBuf,
    hits: AtomicU64,
    misses: AtomicU64,
}

impl fmt::Display for DiskCachedStore {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{} (index files cached in {})", self.inner, self.dir.display())
    }
}

impl DiskCachedStore {
    /// Caches the index files of `inner` under `dir` (created if missing).
    pub fn new(inner: Arc<dyn ObjectStore>, dir: &Path) -> Result<Self> {
        std::fs::create_dir_all(dir).map_err(|e| Error::Io { path: dir.to_path_buf(), source: e })?;
        let local = LocalFileSystem::new_with_prefix(dir).map_err(|e| Error::ObjectStore {
            op: "open cache dir",
            path: dir.display().to_string(),
            source: Box::new(e),
        })?;
        Ok(DiskCachedStore { inner, local, dir: dir.to_path_buf(), hits: AtomicU64::new(0), misses: AtomicU64::new(0) })
    }

    /// Hits and misses so far.
    pub fn stats(&self) -> DiskCacheStats {
        DiskCacheStats { hits: self.hits.load(Ordering::Relaxed), misses: self.misses.load(Ordering::Relaxed) }
    }

    /// Removes the cached files of every block not in `keep` (blocks deleted from the bucket);
    /// returns how many block directories were removed.
    pub fn prune(&self, keep: &HashSet<String>) -> Result<usize> {
        let entries = match std::fs::read_dir(&self.dir) {
            Ok(e) => e,
            Err(e) => return Err(Error::Io { path: self.dir.clone(), source: e }),
        };
        let mut removed = 0;
        for entry in entries.flatten() {
            let name = entry.file_name().to_string_lossy().into_owned();
            let is_block = ulid::Ulid::from_string(&name).is_ok();
            if is_block && !keep.contains(&name) && entry.path().is_dir() {
                std::fs::remove_dir_all(entry.path()).map_err(|e| Error::Io { path: entry.path(), source: e })?;
                removed += 1;
            }
        }
        Ok(removed)
    }

    fn cacheable(location: &ObjPath) -> bool {
        let mut parts = location.parts();
        let (Some(block), Some(file), None) = (parts.next(), parts.next(), parts.next()) else { return false };
        ulid::Ulid::from_string(block.as_ref()).is_ok() && CACHED_FILES.contains(&file.as_ref())
    }

    /// Fetches the whole object from the bucket into the cache; false when the cache could not take it.
    async fn fill(&self, location: &ObjPath) -> object_store::Result<bool> {
        let bytes = self.inner.get(location).await?.bytes().await?;
        match self.local.put(location, bytes.into()).await {
            Ok(_) => Ok(true),
            Err(e) => {
                tracing::warn!(path = %location, dir = %self.dir.display(), error = %e, "disk cache write failed; reading from the bucket");
                Ok(false)
            }
        }
    }
}

#[async_trait]
impl ObjectStore for DiskCachedStore {
    async fn put_opts(
        &self,
        location: &ObjPath,
        payload: PutPayload,
        opts: PutOptions,
    ) -> object_store::Result<PutResult> {
        self.inner.put_opts(location, payload, opts).await
    }

    async fn put_multipart_opts(
        &self,
        location: &ObjPath,
        opts: PutMultipartOptions,
    ) -> object_store::Result<Box<dyn MultipartUpload>> {
        self.inner.put_multipart_opts(location, opts).await
    }

    async fn get_opts(&self, location: &ObjPath, options: GetOptions) -> object_store::Result<GetResult> {
        let plain = options.if_match.is_none()
            && options.if_none_match.is_none()
            && options.if_modified_since.is_none()
            && options.if_unmodified_since.is_none()
            && options.version.is_none();
        if !plain || !Self::cacheable(location) {
            return self.inner.get_opts(location, options).await;
        }
        match self.local.get_opts(location, options.clone()).await {
            Ok(r) => {
                self.hits.fetch_add(1, Ordering::Relaxed);
                return Ok(r);
            }
            Err(object_store::Error::NotFound { .. }) => {}
            Err(e) => tracing::warn!(path = %location, error = %e, "disk cache read failed; reading from the bucket"),
        }
        self.misses.fetch_add(1, Ordering::Relaxed);
        if self.fill(location).await?
            && let Ok(r) = self.local.get_opts(location, options.clone()).await
        {
            return Ok(r);
        }
        self.inner.get_opts(location, options).await
    }

    fn delete_stream(
        &self,
        locations: BoxStream<'static, object_store::Result<ObjPath>>,
    ) -> BoxStream<'static, object_store::Result<ObjPath>> {
        // Cached copies of deleted blocks go at the next prune.
        self.inner.delete_stream(locations)
    }

    fn list(&self, prefix: Option<&ObjPath>) -> BoxStream<'static, object_store::Result<ObjectMeta>> {
        self.inner.list(prefix)
    }

    async fn list_with_delimiter(&self, prefix: Option<&ObjPath>) -> object_store::Result<ListResult> {
        self.inner.list_with_delimiter(prefix).await
    }

    async fn copy_opts(&self, from: &ObjPath, to: &ObjPath, options: CopyOptions) -> object_store::Result<()> {
        self.inner.copy_opts(from, to, options).await
    }
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]
    use super::*;
    use crate::bucket::Bucket;

    #[tokio::test]
    async fn caches_index_files_and_serves_ranges_from_disk() {
        let tmp = tempfile::tempdir().unwrap();
        let remote: Arc<dyn ObjectStore> = Arc::new(LocalFileSystem::new_with_prefix(tmp.path()).unwrap());
        let ulid = "01HZZZZZZZZZZZZZZZZZZZZZZZ";
        let series = ObjPath::from(format!("{ulid}/series.parquet"));
        let samples = ObjPath::from(format!("{ulid}/samples.parquet"));
        remote.put(&series, b"0123456789".to_vec().into()).await.unwrap();
        remote.put(&samples, b"abcdef".to_vec().into()).await.unwrap();
        let cache_dir = tmp.path().join("cache");
        let cached = DiskCachedStore::new(remote.clone(), &cache_dir).unwrap();

        assert_eq!(cached.get_range(&series, 2..5).await.unwrap().as_ref(), b"234");
        assert_eq!(cached.stats(), DiskCacheStats { hits: 0, misses: 1 });
        assert_eq!(std::fs::read(cache_dir.join(ulid).join("series.parquet")).unwrap(), b"0123456789");
        // Served from disk afterwards, even when the bucket loses the object.
        remote.delete(&series).await.unwrap();
        assert_eq!(cached.get(&series).await.unwrap().bytes().await.unwrap().as_ref(), b"0123456789");
        assert_eq!(cached.head(&series).await.unwrap().size, 10);
        assert_eq!(cached.stats(), DiskCacheStats { hits: 2, misses: 1 });
        // Other files are never cached.
        assert_eq!(cached.get(&samples).await.unwrap().bytes().await.unwrap().as_ref(), b"abcdef");
        assert!(!cache_dir.join(ulid).join("samples.parquet").exists());
        // A missing object stays an error (NotFound), not an empty cache file.
        let gone = ObjPath::from("01HZZZZZZZZZZZZZZZZZZZZZZY/meta.json");
        assert!(matches!(cached.get(&gone).await, Err(object_store::Error::NotFound { .. })));

        // Pruning drops blocks not kept.
        assert_eq!(cached.prune(&HashSet::from([ulid.to_string()])).unwrap(), 0);
        assert_eq!(cached.prune(&HashSet::new()).unwrap(), 1);
        assert!(!cache_dir.join(ulid).exists());

        // Works as a bucket's store.
        let bucket = Bucket::from_store(Arc::new(cached), "cached");
        assert_eq!(bucket.get(&samples).await.unwrap().as_ref(), b"abcdef");
    }
}
