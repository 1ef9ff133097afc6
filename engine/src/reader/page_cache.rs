//! [`PageCache`]: a byte-bounded LRU of decoded `samples.parquet` and `aggregates.parquet` pages
//! shared by the blocks of a source.

use std::collections::HashMap;
use std::sync::Arc;

use crate::aggr::AggrSeries;

/// One decoded page: the rows of one `timestamp` data page of `samples.parquet` (`ts`, `vs`) or,
/// in a downsampled block, of `aggregates.parquet` (`aggr`, every column).
#[derive(Debug, Default)]
pub struct DecodedPage {
    pub(super) ts: Vec<i64>,
    pub(super) vs: Vec<f64>,
    pub(super) aggr: AggrSeries,
}

impl DecodedPage {
    /// Heap bytes held (16 per raw row, [`AggrSeries::ROW_BYTES`] per aggregate row, plus
    /// bookkeeping).
    fn cost(&self) -> usize {
        self.ts.capacity() * 8 + self.vs.capacity() * 8 + self.aggr.timestamps.capacity() * AggrSeries::ROW_BYTES + 64
    }
}

/// A byte-bounded LRU cache of decoded `samples.parquet` pages, shared by the blocks of a source.
///
/// Blocks are immutable, so an entry never goes stale while its block is loaded; a block leaving
/// the source (deleted, marked for deletion) is dropped with [`PageCache::remove_block`]. Entries are
/// keyed by a per-open id, so a block opened again (even under the same ULID) never sees the pages
/// of an earlier open.
#[derive(Debug)]
pub struct PageCache {
    capacity: usize,
    inner: std::sync::Mutex<LruInner>,
}

#[derive(Debug, Default)]
struct LruInner {
    used: usize,
    tick: u64,
    entries: HashMap<(u64, usize), (Arc<DecodedPage>, u64)>,
    order: std::collections::BTreeMap<u64, (u64, usize)>,
    hits: u64,
    misses: u64,
}

/// Usage of a [`PageCache`].
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct PageCacheStats {
    /// Bytes held.
    pub bytes: usize,
    /// Pages held.
    pub pages: usize,
    /// Lookups answered from the cache.
    pub hits: u64,
    /// Lookups that had to read the page.
    pub misses: u64,
}

pub(super) static NEXT_CACHE_ID: std::sync::atomic::AtomicU64 = std::sync::atomic::AtomicU64::new(1);

impl PageCache {
    /// A cache holding at most `capacity` bytes of decoded pages (0 disables it).
    pub fn new(capacity: usize) -> Self {
        PageCache { capacity, inner: std::sync::Mutex::new(LruInner::default()) }
    }

    /// The bound in bytes.
    pub fn capacity(&self) -> usize {
        self.capacity
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, LruInner> {
        self.inner.lock().unwrap_or_else(|p| p.into_inner())
    }

    pub(super) fn get(&self, block: u64, page: usize) -> Option<Arc<DecodedPage>> {
        let mut g = self.lock();
        g.tick += 1;
        let tick = g.tick;
        let Some((d, old)) = g.entries.get_mut(&(block, page)).map(|e| {
            let old = e.1;
            e.1 = tick;
            (Arc::clone(&e.0), old)
        }) else {
            g.misses += 1;
            return None;
        };
        g.order.remove(&old);
        g.order.insert(tick, (block, page));
        g.hits += 1;
        Some(d)
    }

    pub(super) fn insert(&self, block: u64, page: usize, d: Arc<DecodedPage>) {
        let cost = d.cost();
        if cost > self.capacity {
            return;
        }
        let mut g = self.lock();
        g.tick += 1;
        let tick = g.tick;
        if let Some((old, t)) = g.entries.insert((block, page), (d, tick)) {
            g.used -= old.cost();
            g.order.remove(&t);
        }
        g.order.insert(tick, (block, page));
        g.used += cost;
        while g.used > self.capacity {
            let Some((_, key)) = g.order.pop_first() else { break };
            if let Some((old, _)) = g.entries.remove(&key) {
                g.used -= old.cost();
            }
        }
    }

    /// Drops every page of the block opened with cache id `block`.
    pub(super) fn remove_block(&self, block: u64) {
        let mut g = self.lock();
        let keys: Vec<((u64, usize), u64)> =
            g.entries.iter().filter(|(k, _)| k.0 == block).map(|(k, (_, t))| (*k, *t)).collect();
        for (k, t) in keys {
            if let Some((old, _)) = g.entries.remove(&k) {
                g.used -= old.cost();
            }
            g.order.remove(&t);
        }
    }

    /// Current usage.
    pub fn stats(&self) -> PageCacheStats {
        let g = self.lock();
        PageCacheStats { bytes: g.used, pages: g.entries.len(), hits: g.hits, misses: g.misses }
    }
}

#[cfg(test)]
#[allow(clippy::unwrap_used, clippy::expect_used)]
mod tests {
    use std::sync::Arc;

    use super::*;
    use crate::bucket::Bucket;
    use crate::format::SamplesEncoding;
    use crate::reader::BlockReader;
    use crate::writer::{BlockWriter, BlockWriterOptions};

    #[tokio::test]
    async fn page_cache_reads_equal_direct_reads_and_stay_bounded() {
        let bucket = Bucket::from_store(Arc::new(object_store::memory::InMemory::new()), "memory");
        let u = ulid::Ulid::new();
        let enc = SamplesEncoding { row_group_rows: 7_000, page_rows: 500, ..SamplesEncoding::V1 };
        let mut w =
            BlockWriter::with_encoding(bucket.clone(), BlockWriterOptions::new(u, 0, 1_000_000_000), enc).unwrap();
        for s in 0..40u32 {
            let l = crate::labels::Labels::from_pairs([("__name__", format!("s{s:02}"))]);
            let n = 100 + 37 * i64::from(s);
            let ts: Vec<i64> = (0..n).map(|k| k * 10_000 + i64::from(s)).collect();
            let vs: Vec<f64> = (0..n).map(|k| (k as f64) * 0.5 - f64::from(s)).collect();
            w.append_series(&l, &ts, &vs).await.unwrap();
        }
        w.finish().await.unwrap();
        let direct = BlockReader::open(&bucket, &u.to_string()).await.unwrap();
        let cache = Arc::new(PageCache::new(6 * (500 * 16 + 64)));
        let cached = BlockReader::open(&bucket, &u.to_string()).await.unwrap().with_page_cache(Arc::clone(&cache));
        assert!(cached.ts_pages.len() > 20, "{} pages", cached.ts_pages.len());
        let windows = [(i64::MIN, i64::MAX), (0, 1_000_000), (2_000_000, 9_000_000), (15_000_000, 15_000_005)];
        let id_sets: Vec<Vec<u32>> = vec![vec![0], vec![39], vec![3, 4, 5], (0..40).collect(), vec![38, 1, 20, 1]];
        for round in 0..2 {
            for ids in &id_sets {
                for &(a, b) in &windows {
                    let want = direct.read_samples(ids, a, b).await.unwrap();
                    let got = cached.read_samples(ids, a, b).await.unwrap();
                    assert_eq!(got, want, "round {round} ids {ids:?} [{a}, {b}]");
                }
            }
            let st = cache.stats();
            assert!(st.bytes <= cache.capacity() && st.pages <= 6, "{st:?}");
        }
        let st = cache.stats();
        assert!(st.hits > 0 && st.misses > 0, "{st:?}");
        // A repeated small read is answered from the cache alone.
        cached.read_samples(&[2], 0, 500_000).await.unwrap();
        let before = cache.stats();
        assert_eq!(
            cached.read_samples(&[2], 0, 500_000).await.unwrap(),
            direct.read_samples(&[2], 0, 500_000).await.unwrap()
        );
        let after = cache.stats();
        assert_eq!((after.misses, after.hits > before.hits), (before.misses, true));
        // Dropping the block drops its pages.
        drop(cached);
        assert_eq!(cache.stats().pages, 0);
        assert_eq!(cache.stats().bytes, 0);
    }
}
