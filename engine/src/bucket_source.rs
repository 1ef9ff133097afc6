//! [`BucketSource`]: the [`SeriesSource`] over all raw-resolution blocks of a bucket, as the Thanos
//! store gateway serves them.
//!
//! ```text
//!   sync(): list blocks ──► read meta.json of new ones (nothing else), drop deleted ones
//!   a request: blocks whose meta overlaps [min_t, max_t] and whose external labels the matchers
//!      accept ──► opened on first use (series.parquet + samples footer, concurrently), kept while the
//!      opened blocks fit the index budget, least recently used ones closed beyond it
//!   select(): per block: other matchers resolve on series.parquet; external labels added to every
//!                 series; re-sorted; samples read in chunks
//!      ──► merge_series_streams (same series across blocks = one series, duplicate timestamps dropped;
//!          each block read ahead on a task of its own unless the answer is one read's worth)
//!   select_relabelled(): the same per block with the labels changed before sorting; blocks joined per
//!      external label set, the sets interleaved (replicas stay apart)
//! ```
//!
//! Opening lazily makes a sync cost one small read per new block, so a store over thousands of
//! blocks is ready in seconds and holds only the series tables queries use (Thanos's lazy
//! index-header reader does the same). An optional [`TimeWindow`] (the store gateway's
//! `--min-time`/`--max-time`) keeps blocks outside it out and clamps every request to it.

use std::collections::{BTreeMap, BTreeSet, HashSet};
use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering};
use std::sync::{Arc, RwLock};

use async_trait::async_trait;
use futures::{StreamExt, TryStreamExt};

use crate::aggr;
use crate::bucket::Bucket;
use crate::chunkenc::SAMPLES_PER_CHUNK;
use crate::error::Result;
use crate::labels::{Labels, Matcher};
use crate::merge::{OwnedSeries, interleave_series_streams, join_samples, merge_series_lists, merge_series_streams};
use crate::meta::BlockMeta;
use crate::reader::{BlockReader, PageCache, PageCacheStats};
use crate::source::{ChunkSeriesStream, DataRange, Relabel, SelectRequest, SeriesBatch, SeriesSource, SeriesStream};

/// Samples read from a block per request (whole series; a bigger series goes alone).
pub const BLOCK_CHUNK_SAMPLES: u64 = 1 << 16;

/// Default bound of the decoded-page cache: 512 MiB, about 33M decoded samples.
pub const DEFAULT_PAGE_CACHE_BYTES: usize = 512 << 20;

/// Blocks opened at the same time by one request, and meta.json files read at once by a sync.
const OPEN_CONCURRENCY: usize = 16;

/// Most blocks a select streams each on its own (see [`joined`]); more are read by label ranges.
const READ_AHEAD_BLOCKS: usize = 16;

/// The inclusive `[min_t, max_t]` a source serves, asked at each use (a bound relative to the
/// current time moves with the clock).
pub type TimeWindow = Arc<dyn Fn() -> (i64, i64) + Send + Sync>;

/// Which blocks a source serves, decided on their `meta.json` (e.g. a receiver serves only the
/// blocks it cut itself, not the whole bucket).
pub type BlockFilter = Arc<dyn Fn(&crate::meta::BlockMeta) -> bool + Send + Sync>;

/// Serves the raw blocks of a bucket. Call [`BucketSource::sync`] to pick up block changes.
#[derive(Debug)]
pub struct BucketSource {
    bucket: Bucket,
    blocks: RwLock<BTreeMap<String, Arc<Block>>>,
    /// Blocks seen that are not served (not Strata blocks, filtered out).
    skipped: RwLock<HashSet<String>>,
    /// Blocks outside the time window, with their `[min_time, max_time)`, re-checked at each sync.
    outside: RwLock<BTreeMap<String, (i64, i64)>>,
    window: Window,
    filter: Filter,
    /// Decoded sample pages of the opened blocks (a block's pages leave with the block).
    cache: Arc<PageCache>,
    /// Most heap bytes the opened blocks may hold before least recently used ones are closed.
    index_budget: usize,
    /// Use counter: a block's `last_used` is the counter's value at its last use.
    clock: AtomicU64,
    stats: OpenCounters,
}

/// A block known from its meta.json; opened on first use, closed again beyond the index budget.
#[derive(Debug)]
struct Block {
    meta: BlockMeta,
    /// The open block; the async lock makes concurrent first uses wait for one open.
    reader: tokio::sync::Mutex<Option<Arc<BlockReader>>>,
    /// [`BucketSource::clock`] at the last use.
    last_used: AtomicU64,
    /// Heap bytes of the open block (0 while closed).
    bytes: AtomicUsize,
}

#[derive(Debug, Default)]
struct OpenCounters {
    opens: AtomicU64,
    open_failures: AtomicU64,
    closes: AtomicU64,
}

/// What a [`BucketSource`] holds and has done: for `/metrics`.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct BucketSourceStats {
    /// Blocks served (known from their meta.json).
    pub blocks: usize,
    /// Blocks currently open (series table and samples footer in memory).
    pub open_blocks: usize,
    /// Heap bytes of the open blocks.
    pub open_bytes: usize,
    /// Blocks opened on first use, since start.
    pub opens: u64,
    /// Opens that failed, since start.
    pub open_failures: u64,
    /// Open blocks closed to stay within the index budget, since start.
    pub closes: u64,
}

/// The optional [`TimeWindow`] (a closure, hence this wrapper's own `Debug`).
#[derive(Clone, Default)]
struct Window(Option<TimeWindow>);

impl std::fmt::Debug for Window {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match &self.0 {
            Some(w) => write!(f, "{:?}", w()),
            None => f.write_str("unbounded"),
        }
    }
}

/// The optional [`BlockFilter`].
#[derive(Clone, Default)]
struct Filter(Option<BlockFilter>);

impl std::fmt::Debug for Filter {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(if self.0.is_some() { "filtered" } else { "all blocks" })
    }
}

impl Window {
    fn get(&self) -> (i64, i64) {
        self.0.as_ref().map_or((i64::MIN, i64::MAX), |w| w())
    }
}

impl BucketSource {
    /// A source with no blocks known yet, a [`DEFAULT_PAGE_CACHE_BYTES`] page cache and no bound on
    /// open blocks; call [`BucketSource::sync`].
    pub fn new(bucket: Bucket) -> Self {
        Self::with_page_cache_bytes(bucket, DEFAULT_PAGE_CACHE_BYTES)
    }

    /// Like [`BucketSource::new`] with a page cache of at most `bytes` (0 turns caching off).
    pub fn with_page_cache_bytes(bucket: Bucket, bytes: usize) -> Self {
        BucketSource {
            bucket,
            blocks: RwLock::new(BTreeMap::new()),
            skipped: RwLock::new(HashSet::new()),
            outside: RwLock::new(BTreeMap::new()),
            window: Window::default(),
            filter: Filter::default(),
            cache: Arc::new(PageCache::new(bytes)),
            index_budget: usize::MAX,
            clock: AtomicU64::new(0),
            stats: OpenCounters::default(),
        }
    }

    /// Keeps the open blocks' heap bytes ([`BlockReader::heap_bytes`]) at most `bytes`: beyond it
    /// the least recently used blocks are closed (reopened on their next use). The block a request
    /// just opened stays open even when it alone is bigger.
    pub fn with_index_budget(mut self, bytes: usize) -> Self {
        self.index_budget = bytes;
        self
    }

    /// Serves only `window()`: blocks wholly outside it are not served (those that leave it are
    /// dropped and those that enter it picked up at the next sync) and every request is clamped to
    /// it, as Thanos's store gateway does with `--min-time`/`--max-time`.
    pub fn with_time_window(mut self, window: TimeWindow) -> Self {
        self.window = Window(Some(window));
        self
    }

    /// Serves only the blocks whose meta passes `filter` (checked once per block, when it is first
    /// listed); the others are skipped like blocks of another resolution.
    pub fn with_block_filter(mut self, filter: BlockFilter) -> Self {
        self.filter = Filter(Some(filter));
        self
    }

    /// `[min_t, max_t]` clamped to the time window.
    fn clamp(&self, min_t: i64, max_t: i64) -> (i64, i64) {
        let (lo, hi) = self.window.get();
        (min_t.max(lo), max_t.min(hi))
    }

    /// Usage of the decoded-page cache.
    pub fn page_cache_stats(&self) -> PageCacheStats {
        self.cache.stats()
    }

    /// Heap bytes of the open blocks' label indexes (names, values and postings per block, built
    /// when a block is opened and dropped when it is closed); a block being opened right now is
    /// not counted yet.
    pub fn label_index_bytes(&self) -> usize {
        self.known()
            .iter()
            .filter_map(|b| b.reader.try_lock().ok().and_then(|r| r.as_ref().map(|r| r.index().label_index_bytes())))
            .sum()
    }

    /// Most bytes the decoded-page cache may hold (0: off).
    pub fn page_cache_capacity(&self) -> usize {
        self.cache.capacity()
    }

    /// Blocks served and open, and the open/close counters.
    pub fn stats(&self) -> BucketSourceStats {
        let blocks = self.known();
        let open: Vec<usize> = blocks.iter().map(|b| b.bytes.load(Ordering::Relaxed)).filter(|&n| n > 0).collect();
        BucketSourceStats {
            blocks: blocks.len(),
            open_blocks: open.len(),
            open_bytes: open.iter().sum(),
            opens: self.stats.opens.load(Ordering::Relaxed),
            open_failures: self.stats.open_failures.load(Ordering::Relaxed),
            closes: self.stats.closes.load(Ordering::Relaxed),
        }
    }

    /// Re-reads the block list: reads the meta.json of new complete blocks (opening them is left to
    /// their first use), forgets deleted or deletion-marked ones. A block whose meta.json cannot be
    /// read is logged and retried at the next sync.
    pub async fn sync(&self) -> Result<()> {
        let listed = self.bucket.list_blocks().await?;
        let (lo, hi) = self.window.get();
        let in_window = |(min, max): (i64, i64)| min <= hi && lo < max;
        // Blocks that left the window are dropped (and remembered), those that entered it taken back.
        let mut outside = std::mem::take(&mut *self.outside.write().unwrap_or_else(|p| p.into_inner()));
        {
            let mut b = self.blocks.write().unwrap_or_else(|p| p.into_inner());
            b.retain(|u, blk| {
                let range = (blk.meta.min_time, blk.meta.max_time);
                if !in_window(range) {
                    outside.insert(u.clone(), range);
                }
                in_window(range)
            });
        }
        let entered: Vec<String> = outside.iter().filter(|(_, r)| in_window(**r)).map(|(u, _)| u.clone()).collect();
        for u in &entered {
            outside.remove(u);
        }
        let known: HashSet<String> = self.seen_blocks(&outside);
        let new: Vec<String> = listed.iter().filter(|u| !known.contains(*u)).cloned().collect();
        let bucket = &self.bucket;
        let metas: Vec<(String, Result<BlockMeta>)> = futures::stream::iter(new)
            .map(|u: String| async move {
                let m = bucket.read_meta(&u).await;
                (u, m)
            })
            .buffer_unordered(OPEN_CONCURRENCY)
            .collect()
            .await;
        let mut added = Vec::new();
        let mut skipped = Vec::new();
        for (u, m) in metas {
            match m {
                Ok(m)
                    if m.thanos.downsample.resolution < 0
                        || m.strata.is_none()
                        || self.filter.0.as_ref().is_some_and(|f| !f(&m)) =>
                {
                    skipped.push(u)
                }
                Ok(m) if !in_window((m.min_time, m.max_time)) => {
                    outside.insert(u, (m.min_time, m.max_time));
                }
                Ok(meta) => added.push((
                    u,
                    Arc::new(Block {
                        meta,
                        reader: tokio::sync::Mutex::new(None),
                        last_used: AtomicU64::new(0),
                        bytes: AtomicUsize::new(0),
                    }),
                )),
                Err(e) => tracing::warn!(block = %u, error = %e, "cannot read block meta; will retry"),
            }
        }
        let live: HashSet<&String> = listed.iter().collect();
        {
            let mut b = self.blocks.write().unwrap_or_else(|p| p.into_inner());
            b.retain(|u, _| live.contains(u));
            b.extend(added);
        }
        outside.retain(|u, _| live.contains(u));
        *self.outside.write().unwrap_or_else(|p| p.into_inner()) = outside;
        let mut s = self.skipped.write().unwrap_or_else(|p| p.into_inner());
        s.retain(|u| live.contains(u));
        s.extend(skipped);
        Ok(())
    }

    /// Every block the last sync saw in the bucket with a readable meta.json, served or not
    /// (filtered out, not Strata's, outside the time window), by ULID.
    pub fn listed_blocks(&self) -> HashSet<String> {
        self.seen_blocks(&self.outside.read().unwrap_or_else(|p| p.into_inner()))
    }

    fn seen_blocks(&self, outside: &BTreeMap<String, (i64, i64)>) -> HashSet<String> {
        let b = self.blocks.read().unwrap_or_else(|p| p.into_inner());
        let s = self.skipped.read().unwrap_or_else(|p| p.into_inner());
        b.keys().chain(s.iter()).chain(outside.keys()).cloned().collect()
    }

    /// The blocks served, by ULID.
    fn known(&self) -> Vec<Arc<Block>> {
        self.blocks.read().unwrap_or_else(|p| p.into_inner()).values().cloned().collect()
    }

    /// The meta.json of every block served, by ULID.
    pub fn block_metas(&self) -> Vec<BlockMeta> {
        self.known().iter().map(|b| b.meta.clone()).collect()
    }

    /// Every block served, opened (by ULID).
    pub async fn open_blocks(&self) -> Result<Vec<Arc<BlockReader>>> {
        self.open_all(self.known()).await
    }

    /// Opens `block` if it is not open, and marks it used.
    async fn open(&self, block: &Block) -> Result<Arc<BlockReader>> {
        block.last_used.store(self.clock.fetch_add(1, Ordering::Relaxed) + 1, Ordering::Relaxed);
        let mut slot = block.reader.lock().await;
        if let Some(r) = &*slot {
            return Ok(Arc::clone(r));
        }
        let r = match BlockReader::open_with_meta(&self.bucket, &block.meta.ulid, block.meta.clone()).await {
            Ok(r) => r,
            Err(e) => {
                self.stats.open_failures.fetch_add(1, Ordering::Relaxed);
                return Err(e);
            }
        };
        let r = Arc::new(if self.cache.capacity() > 0 { r.with_page_cache(Arc::clone(&self.cache)) } else { r });
        block.bytes.store(r.heap_bytes().max(1), Ordering::Relaxed);
        *slot = Some(Arc::clone(&r));
        drop(slot);
        self.stats.opens.fetch_add(1, Ordering::Relaxed);
        self.close_beyond_budget(block);
        Ok(r)
    }

    /// Closes least recently used open blocks (never `keep`) until the open ones fit the budget.
    /// A block a request still reads stays alive for that request (it holds an `Arc`).
    fn close_beyond_budget(&self, keep: &Block) {
        if self.index_budget == usize::MAX {
            return;
        }
        let blocks = self.known();
        let mut total: usize = blocks.iter().map(|b| b.bytes.load(Ordering::Relaxed)).sum();
        if total <= self.index_budget {
            return;
        }
        let mut open: Vec<&Arc<Block>> =
            blocks.iter().filter(|b| b.bytes.load(Ordering::Relaxed) > 0 && !std::ptr::eq(b.as_ref(), keep)).collect();
        open.sort_by_key(|b| b.last_used.load(Ordering::Relaxed));
        for b in open {
            if total <= self.index_budget {
                break;
            }
            // A block being opened right now is skipped: it is in use.
            if let Ok(mut slot) = b.reader.try_lock()
                && slot.take().is_some()
            {
                total = total.saturating_sub(b.bytes.swap(0, Ordering::Relaxed));
                self.stats.closes.fetch_add(1, Ordering::Relaxed);
            }
        }
    }

    /// Opens `blocks` (concurrently), keeping their order.
    async fn open_all(&self, blocks: Vec<Arc<Block>>) -> Result<Vec<Arc<BlockReader>>> {
        futures::stream::iter(blocks)
            .map(|b| async move { self.open(&b).await })
            .buffered(OPEN_CONCURRENCY)
            .try_collect()
            .await
    }

    /// The blocks overlapping `[min_t, max_t]` (already clamped to the window) whose external
    /// labels `matchers` accept, opened, by min time.
    async fn overlapping(&self, min_t: i64, max_t: i64, matchers: &[Matcher]) -> Result<Vec<Arc<BlockReader>>> {
        let mut v: Vec<Arc<Block>> = self
            .known()
            .into_iter()
            .filter(|b| {
                b.meta.thanos.downsample.resolution == 0
                    && b.meta.overlaps(min_t, max_t)
                    && non_external(&b.meta, matchers).is_some()
            })
            .collect();
        v.sort_by(|a, b| (a.meta.min_time, &a.meta.ulid).cmp(&(b.meta.min_time, &b.meta.ulid)));
        self.open_all(v).await
    }
}

impl BucketSource {
    /// The raw blocks overlapping `[min_t, max_t]` that hold series matching `matchers`, each
    /// with those series ([`block_series`]), by min time ([`BucketSource::overlapping`]).
    async fn matching_parts(&self, min_t: i64, max_t: i64, matchers: &[Matcher]) -> Result<Vec<BlockPart>> {
        let mut parts = Vec::new();
        for b in self.overlapping(min_t, max_t, matchers).await? {
            let series = block_series(&b, matchers, min_t, max_t, &Relabel::default());
            if !series.is_empty() {
                parts.push((b, series));
            }
        }
        Ok(parts)
    }

    /// [`SeriesSource::select_dealt`] with the chunk limits of [`label_range_chunks`].
    async fn dealt(
        &self,
        req: &SelectRequest,
        parts: usize,
        block_limit: u64,
        total_limit: u64,
    ) -> Result<Option<Vec<SeriesStream>>> {
        if parts < 2 || req.hints.max_resolution_ms > 0 {
            return Ok(None);
        }
        let (min_t, max_t) = self.clamp(req.min_t, req.max_t);
        let blocks = self.matching_parts(min_t, max_t, &req.matchers).await?;
        let mut dealt: Vec<Vec<_>> = (0..parts).map(|_| Vec::new()).collect();
        let chunks = label_range_chunks(blocks, block_limit, total_limit);
        for (k, chunk) in chunks.into_iter().enumerate() {
            dealt[k % parts].push(chunk);
        }
        let streams = dealt
            .into_iter()
            .map(|chunks| -> SeriesStream {
                Box::pin(futures::stream::iter(chunks).then(move |chunk| read_label_range(chunk, min_t, max_t, false)))
            })
            .collect();
        Ok(Some(streams))
    }

    /// The blocks a downsampled read of `[min_t, max_t]` uses, opened: per external label set,
    /// Thanos's `getFor` (the coarsest resolution <= `max_res` first, its gaps filled from finer
    /// resolutions), in time order.
    async fn for_resolution(
        &self,
        min_t: i64,
        max_t: i64,
        max_res: i64,
        matchers: &[Matcher],
    ) -> Result<Vec<Arc<BlockReader>>> {
        let mut sets: BTreeMap<BTreeMap<String, String>, Vec<Arc<Block>>> = BTreeMap::new();
        for b in self.known() {
            if b.meta.thanos.downsample.resolution <= max_res && non_external(&b.meta, matchers).is_some() {
                sets.entry(b.meta.thanos.labels.clone()).or_default().push(b);
            }
        }
        let mut chosen = Vec::new();
        for blocks in sets.into_values() {
            let mut by_res: BTreeMap<i64, Vec<Arc<Block>>> = BTreeMap::new();
            for b in blocks {
                by_res.entry(b.meta.thanos.downsample.resolution).or_default().push(b);
            }
            let levels: Vec<Vec<Arc<Block>>> = by_res
                .into_values()
                .rev()
                .map(|mut v| {
                    v.sort_by(|a, b| (a.meta.min_time, &a.meta.ulid).cmp(&(b.meta.min_time, &b.meta.ulid)));
                    v
                })
                .collect();
            get_for(&levels, 0, min_t, max_t, &mut chosen);
        }
        self.open_all(chosen).await
    }

    /// Downsampled read (see [`SelectHints::max_resolution_ms`](crate::SelectHints)): the series
    /// of the blocks [`BucketSource::for_resolution`] picks, each series' chunks from all of them
    /// in time order turned into the samples its function reads ([`aggr::chunks_to_samples`]).
    /// Series whose labels (after `relabel`) are equal but whose blocks' external labels differ
    /// stay separate entries, next to each other. `None` when every block chosen is raw (the
    /// ordinary read then answers).
    async fn select_downsampled(&self, req: &SelectRequest, relabel: &Relabel) -> Result<Option<SeriesStream>> {
        let Some((chunks, aggregates)) = self.downsampled_chunks(req, relabel).await? else { return Ok(None) };
        let (min_t, max_t) = self.clamp(req.min_t, req.max_t);
        // The next group is read and converted while the consumer works on this one.
        Ok(Some(read_ahead(Box::pin(chunks.map(move |group| {
            let mut out = Vec::new();
            for (labels, chunks) in group? {
                let (mut ts, mut vs) = (Vec::new(), Vec::new());
                aggr::chunks_to_samples(&chunks, &aggregates, &mut ts, &mut vs)
                    .map_err(|reason| crate::Error::BadInput { block: format!("series {labels}"), reason })?;
                let a = ts.partition_point(|&t| t < min_t);
                let b = ts.partition_point(|&t| t <= max_t);
                if a < b {
                    ts.truncate(b);
                    vs.truncate(b);
                    out.push((labels, ts.split_off(a), vs.split_off(a)));
                }
            }
            SeriesBatch::from_series(out)
        })))))
    }

    /// The chunks of a downsampled read ([`SeriesSource::select_downsampled_chunks`]) and the
    /// aggregates they hold; `None` when every block chosen is raw.
    async fn downsampled_chunks(
        &self,
        req: &SelectRequest,
        relabel: &Relabel,
    ) -> Result<Option<(ChunkSeriesStream, Vec<aggr::Aggregate>)>> {
        let (min_t, max_t) = self.clamp(req.min_t, req.max_t);
        let blocks = self.for_resolution(min_t, max_t, req.hints.max_resolution_ms, &req.matchers).await?;
        if blocks.iter().all(|b| b.resolution() == 0) {
            return Ok(None);
        }
        let aggregates = if req.hints.aggregates.is_empty() {
            aggr::aggregates_for_func(req.hints.func.as_deref())
        } else {
            req.hints.aggregates.clone()
        };
        // Every matching series: its blocks (index into `blocks`) and ids there.
        let mut series: BTreeMap<DownsampledKey, Vec<(usize, Vec<u32>)>> = BTreeMap::new();
        for (i, b) in blocks.iter().enumerate() {
            let ext = if relabel.is_identity() { BTreeMap::new() } else { b.meta().thanos.labels.clone() };
            for (l, ids) in block_series(b, &req.matchers, min_t, max_t, relabel) {
                series.entry((l, ext.clone())).or_default().push((i, ids));
            }
        }
        let mut groups: Vec<Vec<DownsampledSeries>> = Vec::new();
        let mut acc = 0u64;
        for (k, parts) in series {
            let n: u64 = parts.iter().map(|(b, ids)| blocks[*b].index().samples_of(ids)).sum();
            match groups.last_mut() {
                Some(g) if acc + n <= BLOCK_CHUNK_SAMPLES => {
                    g.push((k, parts));
                    acc += n;
                }
                _ => {
                    groups.push(vec![(k, parts)]);
                    acc = n;
                }
            }
        }
        let blocks = Arc::new(blocks);
        let aggrs = aggregates.clone();
        let stream: ChunkSeriesStream = Box::pin(futures::stream::unfold(groups.into_iter(), move |mut it| {
            let blocks = Arc::clone(&blocks);
            let aggregates = aggrs.clone();
            async move {
                let group = it.next()?;
                let res = downsampled_group(&blocks, group, &aggregates, min_t, max_t).await;
                Some((res, it))
            }
        }));
        Ok(Some((stream, aggregates)))
    }
}

/// A series of a downsampled read: its labels and (when relabelled) its blocks' external labels.
type DownsampledKey = (Labels, BTreeMap<String, String>);
/// A series of a downsampled read and where it is: (block index, series ids there).
type DownsampledSeries = (DownsampledKey, Vec<(usize, Vec<u32>)>);

/// Thanos's `bucketBlockSet.getFor`: `levels[i]` are the blocks of one resolution (coarsest first),
/// each sorted by min time; pushes onto `out` the blocks of level `i` overlapping `[min_t, max_t]`,
/// the gaps before, between and after them filled from level `i + 1` on.
fn get_for(levels: &[Vec<Arc<Block>>], i: usize, min_t: i64, max_t: i64, out: &mut Vec<Arc<Block>>) {
    if min_t > max_t || i >= levels.len() {
        return;
    }
    let mut start = min_t;
    for b in &levels[i] {
        if b.meta.max_time <= min_t {
            continue;
        }
        if b.meta.min_time > max_t {
            break;
        }
        get_for(levels, i + 1, start, b.meta.min_time - 1, out);
        out.push(Arc::clone(b));
        start = b.meta.max_time;
    }
    get_for(levels, i + 1, start, max_t, out);
}

/// Reads one group of series of a downsampled read: each series' chunks overlapping
/// `[min_t, max_t]`, in time order (raw chunks of at most [`SAMPLES_PER_CHUNK`] samples,
/// downsampled batches cut into chunks of at most [`aggr::ROWS_PER_CHUNK`] windows).
async fn downsampled_group(
    blocks: &[Arc<BlockReader>],
    group: Vec<DownsampledSeries>,
    aggregates: &[aggr::Aggregate],
    min_t: i64,
    max_t: i64,
) -> Result<Vec<(Labels, Vec<aggr::AggrChunkData>)>> {
    // Per block, the ids this group needs, read in one go.
    let mut wanted: BTreeMap<usize, Vec<u32>> = BTreeMap::new();
    for (_, parts) in &group {
        for (b, ids) in parts {
            wanted.entry(*b).or_default().extend(ids.iter().copied());
        }
    }
    let mut raw: BTreeMap<(usize, u32), (Vec<i64>, Vec<f64>)> = BTreeMap::new();
    let mut agg: BTreeMap<(usize, u32), aggr::AggrSeries> = BTreeMap::new();
    // The blocks of the group are read at the same time, each on its own task.
    let reads = wanted.into_iter().map(|(b, ids)| {
        let r = Arc::clone(&blocks[b]);
        let aggregates = aggregates.to_vec();
        let ulid = r.ulid().to_string();
        let task = tokio::spawn(async move {
            if r.resolution() == 0 {
                Ok::<_, crate::Error>((b, r.read_samples(&ids, min_t, max_t).await?, Vec::new()))
            } else {
                Ok((b, Vec::new(), r.read_aggregates_of(&ids, min_t, max_t, &aggregates).await?))
            }
        });
        (ulid, task)
    });
    let reads: Vec<_> = reads.collect();
    let mut done = Vec::with_capacity(reads.len());
    for (block, task) in reads {
        let read =
            task.await.map_err(|e| crate::Error::BadInput { block, reason: format!("read task failed: {e}") })?;
        done.push(read?);
    }
    for (b, samples, aggregated) in done {
        for s in samples {
            raw.insert((b, s.series_id), (s.timestamps, s.values));
        }
        for (id, a) in aggregated {
            agg.insert((b, id), a);
        }
    }
    let mut out = Vec::with_capacity(group.len());
    for ((labels, _), parts) in group {
        let mut chunks: Vec<aggr::AggrChunkData> = Vec::new();
        for (b, ids) in parts {
            for id in ids {
                if let Some((t, v)) = raw.remove(&(b, id)) {
                    for (t, v) in t.chunks(SAMPLES_PER_CHUNK).zip(v.chunks(SAMPLES_PER_CHUNK)) {
                        chunks.push(aggr::AggrChunkData::raw(t, v));
                    }
                }
                if let Some(a) = agg.remove(&(b, id)) {
                    for r in a.batches() {
                        aggr::AggrChunkData::pieces(&a, r, aggregates, aggr::ROWS_PER_CHUNK, &mut chunks);
                    }
                }
            }
        }
        chunks.retain(|c| c.overlaps(min_t, max_t));
        chunks.sort_by_key(|c| c.min_time);
        if !chunks.is_empty() {
            out.push((labels, chunks));
        }
    }
    Ok(out)
}

/// The matchers of `matchers` that the block's external labels do not decide; `None` when an
/// external label rejects the whole block.
fn non_external(meta: &BlockMeta, matchers: &[Matcher]) -> Option<Vec<Matcher>> {
    crate::labels::non_external(matchers, |n| meta.thanos.labels.get(n).map(String::as_str))
}

/// True when every sample of the block lies inside `[min_t, max_t]` (so is every series').
fn covered(block: &BlockReader, min_t: i64, max_t: i64) -> bool {
    let m = block.meta();
    m.min_time >= min_t && m.max_time.saturating_sub(1) <= max_t
}

/// What a block contributes to a label-name or label-value lookup: either all its series (the
/// cached [`crate::reader::LabelIndex`] answers) or the ids of the matching series in range.
enum Hits {
    None,
    All,
    Some(Vec<u32>),
}

fn block_hits(block: &BlockReader, matchers: &[Matcher], min_t: i64, max_t: i64) -> Hits {
    let Some(rest) = non_external(block.meta(), matchers) else { return Hits::None };
    let idx = block.index();
    if rest.is_empty() && covered(block, min_t, max_t) {
        return if idx.label_index().names().next().is_some() { Hits::All } else { Hits::None };
    }
    let ids = idx.resolve_in_range(&rest, min_t, max_t);
    if ids.is_empty() { Hits::None } else { Hits::Some(ids) }
}

/// The sorted, distinct union of `a` and `b` (both sorted and distinct), in one linear pass: blocks
/// mostly repeat each other's label values, so this beats sorting the concatenation.
fn merge_sorted<'a>(a: Vec<&'a str>, b: impl IntoIterator<Item = &'a str>) -> Vec<&'a str> {
    let mut b = b.into_iter().peekable();
    let mut out = Vec::with_capacity(a.len() + b.size_hint().0);
    for x in a {
        while let Some(&y) = b.peek()
            && y < x
        {
            out.push(y);
            b.next();
        }
        if b.peek() == Some(&x) {
            b.next();
        }
        out.push(x);
    }
    out.extend(b);
    out
}

/// Series of `block` matching `matchers` with data in range, with external labels added and then
/// `relabel` applied, sorted by the resulting labels. Series that become equal once external labels
/// override one of their labels (or once relabelled) are grouped (their samples are merged when
/// read).
fn block_series(
    block: &BlockReader,
    matchers: &[Matcher],
    min_t: i64,
    max_t: i64,
    relabel: &Relabel,
) -> Vec<(Labels, Vec<u32>)> {
    let ext = &block.meta().thanos.labels;
    let Some(rest) = non_external(block.meta(), matchers) else { return Vec::new() };
    let idx = block.index();
    let mut all: Vec<(Labels, u32)> = idx
        .resolve_in_range(&rest, min_t, max_t)
        .into_iter()
        .map(|id| {
            let mut l = idx.labels[id as usize].clone();
            for (n, v) in ext {
                l.set(n, v);
            }
            relabel.apply(&mut l);
            (l, id)
        })
        .collect();
    all.sort();
    let mut out: Vec<(Labels, Vec<u32>)> = Vec::with_capacity(all.len());
    for (l, id) in all {
        match out.last_mut() {
            Some(last) if last.0 == l => last.1.push(id),
            _ => out.push((l, vec![id])),
        }
    }
    out
}

fn block_stream(block: Arc<BlockReader>, series: Vec<(Labels, Vec<u32>)>, min_t: i64, max_t: i64) -> SeriesStream {
    let mut chunks: Vec<Vec<(Labels, Vec<u32>)>> = Vec::new();
    let mut acc = 0u64;
    for s in series {
        let n = block.index().samples_of(&s.1);
        match chunks.last_mut() {
            Some(c) if acc + n <= BLOCK_CHUNK_SAMPLES => {
                c.push(s);
                acc += n;
            }
            _ => {
                chunks.push(vec![s]);
                acc = n;
            }
        }
    }
    Box::pin(futures::stream::unfold(chunks.into_iter(), move |mut it| {
        let block = Arc::clone(&block);
        async move {
            let chunk = it.next()?;
            let res = match read_series(&block, chunk, min_t, max_t).await {
                Ok(series) => SeriesBatch::from_series(series),
                Err(e) => Err(e),
            };
            Some((res, it))
        }
    }))
}

/// Reads the samples of `series` (entries of [`block_series`]) from `block`: one entry per
/// series with samples in `[min_t, max_t]`, the samples of its ids merged (on equal timestamps
/// the lower id's kept).
async fn read_series(
    block: &BlockReader,
    series: Vec<(Labels, Vec<u32>)>,
    min_t: i64,
    max_t: i64,
) -> Result<Vec<OwnedSeries>> {
    let ids: Vec<u32> = series.iter().flat_map(|s| s.1.iter().copied()).collect();
    let read = block.read_samples(&ids, min_t, max_t).await?;
    let mut by_id: BTreeMap<u32, (Vec<i64>, Vec<f64>)> =
        read.into_iter().map(|s| (s.series_id, (s.timestamps, s.values))).collect();
    let mut out = Vec::with_capacity(series.len());
    for (l, ids) in series {
        let mut parts = ids.iter().filter_map(|id| by_id.remove(id));
        let Some((mut ts, mut vs)) = parts.next() else { continue };
        for (t, v) in parts {
            join_samples(&mut ts, &mut vs, 0, &t, &v);
        }
        out.push((l, ts, vs));
    }
    Ok(out)
}

/// A block and some of its series (entries of [`block_series`]).
type BlockPart = (Arc<BlockReader>, Vec<(Labels, Vec<u32>)>);

/// The series of a select per block (entries of [`block_series`]), cut into chunks of
/// consecutive label ranges ([`cut_points`]): chunk `k` holds, of every block, the series whose
/// labels lie between the chunk's bounds, so merging each chunk on its own and putting the
/// chunks one after the other gives the same series in the same order as merging the blocks
/// whole. Blocks keep their order inside every chunk (the earlier block wins ties in the merge).
fn label_range_chunks(parts: Vec<BlockPart>, block_limit: u64, total_limit: u64) -> Vec<Vec<BlockPart>> {
    let sizes: Vec<Vec<u64>> =
        parts.iter().map(|(b, series)| series.iter().map(|(_, ids)| b.index().samples_of(ids)).collect()).collect();
    let bounds = {
        let lists: Vec<&Vec<(Labels, Vec<u32>)>> = parts.iter().map(|p| &p.1).collect();
        cut_points(&lists, &sizes, block_limit, total_limit)
    };
    let mut its: Vec<_> = parts.into_iter().map(|(b, series)| (b, series.into_iter())).collect();
    let mut pos = vec![0usize; its.len()];
    let mut chunks = Vec::with_capacity(bounds.len());
    for end in bounds {
        let mut chunk = Vec::new();
        for ((b, it), (p, &e)) in its.iter_mut().zip(pos.iter_mut().zip(&end)) {
            if e > *p {
                chunk.push((Arc::clone(b), it.by_ref().take(e - *p).collect()));
                *p = e;
            }
        }
        chunks.push(chunk);
    }
    chunks
}

/// Where consecutive label-range chunks of `lists` (each sorted by labels; `sizes[b][i]` samples
/// in entry `i` of list `b`) end: per chunk, the end index in every list. A chunk takes at most
/// `block_limit` samples of any list and `total_limit` in all, as far as its labels reach; when
/// the smallest label's series alone is over a limit it forms a chunk of its own.
fn cut_points<T>(
    lists: &[&Vec<(Labels, T)>],
    sizes: &[Vec<u64>],
    block_limit: u64,
    total_limit: u64,
) -> Vec<Vec<usize>> {
    // Samples before each entry of each list.
    let prefix: Vec<Vec<u64>> = sizes
        .iter()
        .map(|s| {
            let mut p = Vec::with_capacity(s.len() + 1);
            p.push(0);
            let mut acc = 0u64;
            for &n in s {
                acc += n;
                p.push(acc);
            }
            p
        })
        .collect();
    // Where every list's part ends when the chunk ends before label `e` (None: at the end).
    let ends = |pos: &[usize], e: Option<&Labels>| -> Vec<usize> {
        lists
            .iter()
            .zip(pos)
            .map(|(l, &p)| match e {
                None => l.len(),
                Some(e) => p + l[p..].partition_point(|s| s.0 < *e),
            })
            .collect()
    };
    let samples = |pos: &[usize], end: &[usize]| -> u64 {
        prefix.iter().zip(pos.iter().zip(end)).map(|(p, (&a, &b))| p[b] - p[a]).sum()
    };
    let mut pos = vec![0usize; lists.len()];
    let mut bounds: Vec<Vec<usize>> = Vec::new();
    while lists.iter().zip(&pos).any(|(l, &p)| p < l.len()) {
        // The furthest each list may go alone; the chunk ends at the smallest label beyond.
        let mut e: Option<&Labels> = None;
        for ((l, &p), pre) in lists.iter().zip(&pos).zip(&prefix) {
            let f = pre.partition_point(|&x| x <= pre[p] + block_limit).saturating_sub(1).max(p);
            if let Some(s) = l.get(f)
                && e.is_none_or(|e| s.0 < *e)
            {
                e = Some(&s.0);
            }
        }
        let mut end = ends(&pos, e);
        if samples(&pos, &end) > total_limit {
            // Too many in all: end at the largest label of the longest part that keeps the
            // chunk within the total (by bisection).
            let r = (0..lists.len()).max_by_key(|&b| end[b] - pos[b]).unwrap_or(0);
            let (mut lo, mut hi) = (pos[r], end[r]);
            while lo + 1 < hi {
                let mid = lo + (hi - lo) / 2;
                if samples(&pos, &ends(&pos, Some(&lists[r][mid].0))) <= total_limit {
                    lo = mid;
                } else {
                    hi = mid;
                }
            }
            end = ends(&pos, lists[r].get(lo).map(|s| &s.0));
        }
        if end == pos {
            // The smallest series alone is over a limit: it goes alone.
            let min = lists.iter().zip(&pos).filter_map(|(l, &p)| l.get(p)).map(|s| &s.0).min();
            end = lists.iter().zip(&pos).map(|(l, &p)| p + usize::from(l.get(p).map(|s| &s.0) == min)).collect();
        }
        bounds.push(end.clone());
        pos = end;
    }
    bounds
}

/// The series of `parts` (blocks in the order in which ties between them resolve, entries of
/// [`block_series`]) joined into one stream, as [`merge_series_streams`] joins the blocks' streams.
/// With `ahead`, the reading runs on tasks ahead of the consumer.
///
/// Up to [`READ_AHEAD_BLOCKS`] blocks are streamed each on its own ([`block_stream`], read ahead
/// on a task per block with `ahead`); the merge then holds a chunk of up to [`BLOCK_CHUNK_SAMPLES`]
/// samples of every block. Beyond that, the blocks are read together one label range after the
/// other ([`label_range_chunks`] with [`crate::merge::MERGE_BATCH_SAMPLES`] samples in all, the
/// blocks of a range read concurrently with `ahead`), so the samples held stay within a few
/// ranges' worth however many blocks a request spans (a read of 200 series over 1,000 blocks held
/// every block's decoded samples at once: 105 of the 395 MB heap peak under heaptrack).
fn joined(parts: Vec<BlockPart>, min_t: i64, max_t: i64, ahead: bool) -> SeriesStream {
    if parts.len() > READ_AHEAD_BLOCKS {
        let ranges = label_range_chunks(parts, BLOCK_CHUNK_SAMPLES, crate::merge::MERGE_BATCH_SAMPLES as u64);
        let s: SeriesStream =
            Box::pin(futures::stream::iter(ranges).then(move |range| read_label_range(range, min_t, max_t, ahead)));
        return if ahead { read_ahead(s) } else { s };
    }
    let streams = parts.into_iter().map(|(b, series)| block_stream(b, series, min_t, max_t));
    merge_series_streams(if ahead { streams.map(read_ahead).collect() } else { streams.collect() })
}

/// Reads the blocks' parts of one label range ([`label_range_chunks`]) and merges them into one
/// batch; `concurrent`: up to [`READ_AHEAD_BLOCKS`] blocks at a time, each on a task of its own
/// (decoding is CPU work), otherwise one after the other in the caller's task.
async fn read_label_range(range: Vec<BlockPart>, min_t: i64, max_t: i64, concurrent: bool) -> Result<SeriesBatch> {
    let mut lists = Vec::with_capacity(range.len());
    if concurrent {
        let mut reads = futures::stream::iter(range)
            .map(|(block, series)| async move {
                let ulid = block.ulid().to_string();
                tokio::spawn(async move { read_series(&block, series, min_t, max_t).await })
                    .await
                    .map_err(|e| crate::Error::BadInput { block: ulid, reason: format!("read task failed: {e}") })?
            })
            .buffered(READ_AHEAD_BLOCKS);
        while let Some(list) = reads.next().await {
            lists.push(list?);
        }
    } else {
        for (block, series) in range {
            lists.push(read_series(&block, series, min_t, max_t).await?);
        }
    }
    merge_series_lists(lists)
}

/// Drives `s` on its own task, one batch ahead of the consumer, so that the blocks of a query are
/// read and decoded concurrently rather than one after another as the merge reaches them. The
/// task ends when the stream ends, fails, or the consumer goes away.
fn read_ahead(mut s: SeriesStream) -> SeriesStream {
    let (tx, rx) = tokio::sync::mpsc::channel(1);
    tokio::spawn(async move {
        while let Some(item) = s.next().await {
            let failed = item.is_err();
            if tx.send(item).await.is_err() || failed {
                break;
            }
        }
    });
    Box::pin(futures::stream::unfold(rx, |mut rx| async move { rx.recv().await.map(|item| (item, rx)) }))
}

#[async_trait]
impl SeriesSource for BucketSource {
    async fn select(&self, req: &SelectRequest) -> Result<SeriesStream> {
        if req.hints.max_resolution_ms > 0
            && let Some(s) = self.select_downsampled(req, &Relabel::default()).await?
        {
            return Ok(s);
        }
        let (min_t, max_t) = self.clamp(req.min_t, req.max_t);
        let parts = self.matching_parts(min_t, max_t, &req.matchers).await?;
        let samples: u64 =
            parts.iter().map(|(b, series)| series.iter().map(|(_, ids)| b.index().samples_of(ids)).sum::<u64>()).sum();
        // A small answer (the matching series hold one block read's worth of samples in all, in
        // every block together) is read block after block in the consumer's task: a task per
        // block would cost more than the reads.
        Ok(joined(parts, min_t, max_t, samples > BLOCK_CHUNK_SAMPLES))
    }

    /// The series cut into label ranges of at most [`BLOCK_CHUNK_SAMPLES`] samples per block and
    /// [`crate::merge::MERGE_BATCH_SAMPLES`] in all ([`label_range_chunks`]); range `k` goes to
    /// stream `k mod parts`, which reads its part of every block in turn and merges them into
    /// one batch, so each stream does its share of the reading and merging where it is polled.
    /// Downsampled reads are not dealt.
    async fn select_dealt(&self, req: &SelectRequest, parts: usize) -> Result<Option<Vec<SeriesStream>>> {
        self.dealt(req, parts, BLOCK_CHUNK_SAMPLES, crate::merge::MERGE_BATCH_SAMPLES as u64).await
    }

    /// Streams without collecting: every block is relabelled and sorted on its own (labels only),
    /// blocks of one external label set are joined like [`SeriesSource::select`] joins them, and
    /// the label sets are interleaved, so the replicas of a series (blocks whose external labels
    /// differ only in a removed label) stay separate entries.
    async fn select_relabelled(&self, req: &SelectRequest, relabel: &Relabel) -> Result<SeriesStream> {
        if relabel.is_identity() {
            return self.select(req).await;
        }
        if req.hints.max_resolution_ms > 0
            && let Some(s) = self.select_downsampled(req, relabel).await?
        {
            return Ok(s);
        }
        let (min_t, max_t) = self.clamp(req.min_t, req.max_t);
        let mut sets: BTreeMap<BTreeMap<String, String>, Vec<BlockPart>> = BTreeMap::new();
        for b in self.overlapping(min_t, max_t, &req.matchers).await? {
            let series = block_series(&b, &req.matchers, min_t, max_t, relabel);
            if !series.is_empty() {
                let ext = b.meta().thanos.labels.clone();
                sets.entry(ext).or_default().push((b, series));
            }
        }
        let many = sets.values().map(Vec::len).sum::<usize>() > 1;
        let streams = sets.into_values().map(|parts| joined(parts, min_t, max_t, many)).collect();
        Ok(interleave_series_streams(streams))
    }

    /// The chunks of Thanos's choice of blocks (coarsest resolution first, gaps filled from finer
    /// ones) when `req.hints.max_resolution_ms` > 0 and a downsampled block is among them.
    async fn select_downsampled_chunks(
        &self,
        req: &SelectRequest,
        relabel: &Relabel,
    ) -> Result<Option<ChunkSeriesStream>> {
        if req.hints.max_resolution_ms <= 0 {
            return Ok(None);
        }
        Ok(self.downsampled_chunks(req, relabel).await?.map(|(s, _)| s))
    }

    /// One range per external label set of the blocks served, clamped to the time window.
    /// One range per block (as Thanos's store gateway lists its blocks in Info's TSDB infos), sorted
    /// by external labels and time; a querier merges them per label set.
    async fn data_ranges(&self) -> Vec<DataRange> {
        let mut out: Vec<DataRange> = self
            .known()
            .iter()
            .filter_map(|b| {
                let m = &b.meta;
                // meta.json's maxTime is exclusive.
                let (min_t, max_t) = self.clamp(m.min_time, m.max_time.saturating_sub(1));
                (min_t <= max_t).then(|| DataRange {
                    labels: Labels::from_pairs(m.thanos.labels.clone()),
                    min_t,
                    max_t,
                })
            })
            .collect();
        out.sort_by(|a, b| (&a.labels, a.min_t, a.max_t).cmp(&(&b.labels, b.min_t, b.max_t)));
        out
    }

    /// The union over blocks is taken on references to the blocks' label sets; each distinct
    /// set is cloned once at the end (blocks with external labels add modified copies).
    async fn series(&self, matchers: &[Matcher], min_t: i64, max_t: i64) -> Result<Vec<Labels>> {
        let (min_t, max_t) = self.clamp(min_t, max_t);
        let blocks = self.overlapping(min_t, max_t, matchers).await?;
        let mut plain: BTreeSet<&Labels> = BTreeSet::new();
        let mut relabelled: BTreeSet<Labels> = BTreeSet::new();
        for b in &blocks {
            if b.meta().thanos.labels.is_empty() {
                let idx = b.index();
                let ids = idx.resolve_in_range(matchers, min_t, max_t);
                plain.extend(ids.into_iter().filter_map(|id| idx.labels.get(id as usize)));
            } else {
                relabelled
                    .extend(block_series(b, matchers, min_t, max_t, &Relabel::default()).into_iter().map(|s| s.0));
            }
        }
        if relabelled.is_empty() {
            return Ok(plain.into_iter().cloned().collect());
        }
        relabelled.extend(plain.into_iter().cloned());
        Ok(relabelled.into_iter().collect())
    }

    /// Answered from each block's cached label index when no matcher applies inside the block and
    /// the block lies wholly in range; otherwise from the matching series' labels (never cloned).
    async fn label_names(&self, matchers: &[Matcher], min_t: i64, max_t: i64) -> Result<Vec<String>> {
        let (min_t, max_t) = self.clamp(min_t, max_t);
        let blocks = self.overlapping(min_t, max_t, matchers).await?;
        let mut out: Vec<&str> = Vec::new();
        for b in &blocks {
            let ext = &b.meta().thanos.labels;
            let idx = b.index();
            let own = |n: &&str| !ext.contains_key(*n);
            match block_hits(b, matchers, min_t, max_t) {
                Hits::None => continue,
                Hits::All => out.extend(idx.label_index().names().filter(own)),
                Hits::Some(ids) => {
                    let mut names: Vec<&str> = Vec::new();
                    for id in ids {
                        names.extend(idx.labels[id as usize].iter().map(|l| l.name.as_str()).filter(own));
                        if names.len() > 4096 {
                            names.sort_unstable();
                            names.dedup();
                        }
                    }
                    out.extend(names);
                }
            }
            out.extend(ext.iter().filter(|(_, v)| !v.is_empty()).map(|(n, _)| n.as_str()));
        }
        out.sort_unstable();
        out.dedup();
        Ok(out.into_iter().map(str::to_string).collect())
    }

    /// Like [`BucketSource::label_names`]: the cached label index answers where it can.
    async fn label_values(&self, name: &str, matchers: &[Matcher], min_t: i64, max_t: i64) -> Result<Vec<String>> {
        let (min_t, max_t) = self.clamp(min_t, max_t);
        let blocks = self.overlapping(min_t, max_t, matchers).await?;
        let mut out: Vec<&str> = Vec::new();
        // The index list merged last: blocks in a row mostly repeat it, and checking that is
        // cheaper than merging it again.
        let mut last: Option<&[String]> = None;
        for b in &blocks {
            let idx = b.index();
            let hits = block_hits(b, matchers, min_t, max_t);
            if let Some(v) = b.meta().thanos.labels.get(name) {
                if !matches!(hits, Hits::None) && !v.is_empty() {
                    out = merge_sorted(out, [v.as_str()]);
                }
                continue;
            }
            match hits {
                Hits::None => {}
                Hits::All => {
                    let values = idx.label_index().values(name);
                    if last != Some(values) {
                        out = merge_sorted(out, values.iter().map(String::as_str));
                        last = Some(values);
                    }
                }
                Hits::Some(ids) => {
                    let mut vals: Vec<&str> = ids.iter().filter_map(|&id| idx.labels[id as usize].get(name)).collect();
                    vals.sort_unstable();
                    vals.dedup();
                    out = merge_sorted(out, vals);
                }
            }
        }
        Ok(out.into_iter().map(str::to_string).collect())
    }
}

#[cfg(test)]
#[allow(clippy::unwrap_used, clippy::expect_used)]
mod tests {
    use super::*;
    use crate::labels::MatchOp;
    use crate::source::MemSource;
    use crate::writer::tests::{STALE, synthetic, write_block};
    use futures::TryStreamExt;

    type Flat = Vec<(Labels, Vec<i64>, Vec<u64>)>;

    async fn flat(src: &dyn SeriesSource, req: &SelectRequest) -> Flat {
        let batches: Vec<SeriesBatch> = src.select(req).await.unwrap().try_collect().await.unwrap();
        let mut out = Vec::new();
        for b in &batches {
            assert_eq!(b.offsets.len(), b.num_series() + 1);
            for i in 0..b.num_series() {
                let (l, t, v) = b.series(i);
                out.push((l.clone(), t.to_vec(), v.iter().map(|x| x.to_bits()).collect()));
            }
        }
        out
    }

    fn with_ext(data: &[(Labels, Vec<i64>, Vec<f64>)], ext: &[(&str, &str)]) -> Vec<(Labels, Vec<i64>, Vec<f64>)> {
        data.iter()
            .map(|(l, t, v)| {
                let mut l = l.clone();
                for (n, x) in ext {
                    l.set(n, x);
                }
                (l, t.clone(), v.clone())
            })
            .collect()
    }

    fn requests() -> Vec<SelectRequest> {
        let m = |op, n: &str, v: &str| Matcher::new(op, n, v).unwrap();
        let req = |ms: Vec<Matcher>, a, b| SelectRequest { matchers: ms, min_t: a, max_t: b, ..Default::default() };
        vec![
            req(vec![m(MatchOp::Equal, "__name__", "metric_3")], 0, 7_200_000),
            req(vec![m(MatchOp::NotEqual, "job", "job1")], 1_000_000, 2_000_000),
            req(vec![m(MatchOp::RegexMatch, "instance", "host-00[0-4].")], 0, 7_200_000),
            req(vec![m(MatchOp::RegexNoMatch, "__name__", "metric_[0-5]")], 0, 7_200_000),
            // label absent in some series / in the block / in the overflow map / external
            req(vec![m(MatchOp::Equal, "zone", "")], 0, 500_000),
            req(vec![m(MatchOp::RegexMatch, "nope", "")], 0, 300_000),
            req(vec![m(MatchOp::Equal, "nope", "x")], 0, 7_200_000),
            req(vec![m(MatchOp::Equal, "min_time", "odd"), m(MatchOp::RegexMatch, "job", "job[02]")], 0, 7_200_000),
            req(vec![m(MatchOp::Equal, "region", "eu")], 3_000_000, 3_100_000),
            req(vec![m(MatchOp::NotEqual, "region", "eu")], 0, 7_200_000),
            req(vec![], 7_000_000, 7_200_000),
        ]
    }

    #[tokio::test]
    async fn round_trip_matches_an_in_memory_reference_bit_for_bit() {
        let dir = tempfile::tempdir().unwrap();
        let bucket = Bucket::local(dir.path()).unwrap();
        let data = synthetic(500, 0);
        let ext = [("region", "eu")];
        write_block(&bucket, ulid::Ulid::new(), &ext, &data).await;
        let src = BucketSource::new(bucket);
        src.sync().await.unwrap();
        let mem = MemSource::new();
        for (l, t, v) in with_ext(&data, &ext) {
            mem.add(l, &t, &v);
        }
        let mut nonempty = 0;
        for req in requests() {
            let got = flat(&src, &req).await;
            let want = flat(&mem, &req).await;
            assert_eq!(got.len(), want.len(), "{:?}", req.matchers);
            assert_eq!(got, want, "{:?}", req.matchers);
            nonempty += usize::from(!got.is_empty());
            let names: Vec<Labels> = got.iter().map(|s| s.0.clone()).collect();
            let series = src.series(&req.matchers, req.min_t, req.max_t).await.unwrap();
            assert_eq!(series, names, "{:?}", req.matchers);
        }
        assert_eq!(nonempty, 9);
        // NaN and stale markers survived bitwise.
        let all = flat(&src, &SelectRequest { min_t: 0, max_t: i64::MAX, ..Default::default() }).await;
        assert!(all.iter().any(|s| s.2.contains(&STALE)));
        assert!(all.iter().any(|s| s.2.contains(&f64::NAN.to_bits())));
        assert_eq!(all.len(), 500);
        assert_eq!(src.label_values("zone", &[], 0, i64::MAX).await.unwrap(), vec!["z0".to_string(), "z1".to_string()]);
        assert_eq!(
            src.label_names(&[Matcher::equal("__name__", "metric_0")], 0, i64::MAX).await.unwrap(),
            vec!["__name__", "instance", "job", "min_time", "region", "zone"]
        );
    }

    #[tokio::test]
    async fn block_filter_leaves_blocks_out() {
        let dir = tempfile::tempdir().unwrap();
        let bucket = Bucket::local(dir.path()).unwrap();
        let s = |v: &str| {
            vec![
                (Labels::from_pairs([("__name__", v)]), vec![20], vec![2.0]),
                (Labels::from_pairs([("__name__", "x")]), vec![10], vec![1.0]),
            ]
        };
        write_block(&bucket, ulid::Ulid::from_parts(1, 1), &[("replica", "a")], &s("a")).await;
        write_block(&bucket, ulid::Ulid::from_parts(2, 2), &[("replica", "b")], &s("b")).await;
        let only_a: BlockFilter = Arc::new(|m| m.thanos.labels.get("replica").is_some_and(|r| r == "a"));
        let src = BucketSource::new(bucket.clone()).with_block_filter(only_a);
        src.sync().await.unwrap();
        assert_eq!(src.block_metas().len(), 1);
        let got = flat(&src, &SelectRequest { min_t: 0, max_t: 100, ..Default::default() }).await;
        let names: Vec<String> = got.iter().map(|g| g.0.to_string()).collect();
        assert_eq!(names, vec![r#"a{replica="a"}"#, r#"x{replica="a"}"#]);
    }

    #[tokio::test]
    async fn merges_blocks_and_follows_sync() {
        let dir = tempfile::tempdir().unwrap();
        let bucket = Bucket::local(dir.path()).unwrap();
        let a = |n: &str, extra: &str| Labels::from_pairs([("__name__", n), ("b", extra)]);
        // Block 1: x{b="1"} and x{b="3"}; block 2: x{b="1"} overlapping, x{b="2"}; external label
        // "b" on block 3 overrides and re-sorts its series.
        let b1 = vec![(a("x", "1"), vec![10, 20, 30], vec![1.0, 2.0, 3.0]), (a("x", "3"), vec![5], vec![5.0])];
        let b2 = vec![(a("x", "1"), vec![20, 40], vec![99.0, 4.0]), (a("x", "2"), vec![7], vec![7.0])];
        let u1 = ulid::Ulid::from_parts(1, 1);
        let u2 = ulid::Ulid::from_parts(2, 2);
        write_block(&bucket, u1, &[], &b1).await;
        write_block(&bucket, u2, &[], &b2).await;
        let src = BucketSource::new(bucket.clone());
        src.sync().await.unwrap();
        let all = SelectRequest { min_t: 0, max_t: 100, ..Default::default() };
        let got = flat(&src, &all).await;
        let bits = |v: &[f64]| v.iter().map(|x| x.to_bits()).collect::<Vec<_>>();
        assert_eq!(
            got,
            vec![
                (a("x", "1"), vec![10, 20, 30, 40], bits(&[1.0, 2.0, 3.0, 4.0])),
                (a("x", "2"), vec![7], bits(&[7.0])),
                (a("x", "3"), vec![5], bits(&[5.0])),
            ]
        );
        // A block whose external labels change the order of its series.
        let b3 = vec![
            (Labels::from_pairs([("__name__", "x"), ("c", "1")]), vec![1], vec![1.0]),
            (Labels::from_pairs([("__name__", "x"), ("c", "2"), ("a", "0")]), vec![2], vec![2.0]),
        ];
        let mut b3s = b3.clone();
        b3s.sort_by(|p, q| p.0.cmp(&q.0));
        let u3 = ulid::Ulid::from_parts(3, 3);
        write_block(&bucket, u3, &[("b", "9")], &b3s).await;
        src.sync().await.unwrap();
        assert_eq!(src.block_metas().len(), 3);
        let got = flat(&src, &SelectRequest { matchers: vec![Matcher::equal("b", "9")], ..all.clone() }).await;
        let labels: Vec<String> = got.iter().map(|s| s.0.to_string()).collect();
        assert_eq!(labels, vec![r#"x{a="0", b="9", c="2"}"#, r#"x{b="9", c="1"}"#]);
        // `series` over blocks with and without external labels: the select's label sets.
        let selected: Vec<Labels> = flat(&src, &all).await.into_iter().map(|s| s.0).collect();
        assert_eq!(selected.len(), 5);
        assert_eq!(src.series(&[], 0, 100).await.unwrap(), selected);
        let b1_only = src.series(&[Matcher::equal("b", "1")], 0, 100).await.unwrap();
        assert_eq!(b1_only, vec![a("x", "1")]);
        // The label lookups see the new block (its external label overriding `b`).
        assert_eq!(src.label_values("c", &[], 0, 100).await.unwrap(), vec!["1", "2"]);
        assert_eq!(src.label_values("b", &[], 0, 100).await.unwrap(), vec!["1", "2", "3", "9"]);
        assert_eq!(src.label_names(&[], i64::MIN, i64::MAX).await.unwrap(), vec!["__name__", "a", "b", "c"]);
        // Series equal after overriding by external labels are merged into one.
        let b4 = vec![
            (Labels::from_pairs([("__name__", "y"), ("b", "1")]), vec![1, 3], vec![1.0, 3.0]),
            (Labels::from_pairs([("__name__", "y"), ("b", "2")]), vec![2, 3], vec![2.0, 30.0]),
        ];
        write_block(&bucket, ulid::Ulid::from_parts(4, 4), &[("b", "7")], &b4).await;
        src.sync().await.unwrap();
        let got = flat(&src, &SelectRequest { matchers: vec![Matcher::equal("__name__", "y")], ..all.clone() }).await;
        assert_eq!(
            got,
            vec![(Labels::from_pairs([("__name__", "y"), ("b", "7")]), vec![1, 2, 3], bits(&[1.0, 2.0, 3.0]))]
        );
        bucket.delete_block(&ulid::Ulid::from_parts(4, 4).to_string()).await.unwrap();
        // Deletion mark and deleted blocks disappear at the next sync.
        bucket.put(&Bucket::block_path(&u3.to_string(), "deletion-mark.json"), "{}".into()).await.unwrap();
        bucket.delete_block(&u2.to_string()).await.unwrap();
        let cached_before = src.page_cache_stats();
        assert!(cached_before.pages >= 3, "{cached_before:?}");
        src.sync().await.unwrap();
        assert_eq!(src.block_metas().iter().map(|m| m.ulid.clone()).collect::<Vec<_>>(), vec![u1.to_string()]);
        // The unloaded blocks' pages left the cache with them.
        let cached_after = src.page_cache_stats();
        assert!(cached_after.pages < cached_before.pages, "{cached_before:?} -> {cached_after:?}");
        let got = flat(&src, &all).await;
        assert_eq!(got.len(), 2);
        assert_eq!(got[0].1, vec![10, 20, 30]);
        // ... and so do the label lookups.
        assert!(src.label_values("c", &[], i64::MIN, i64::MAX).await.unwrap().is_empty());
        assert_eq!(src.label_values("b", &[], i64::MIN, i64::MAX).await.unwrap(), vec!["1", "3"]);
        assert_eq!(src.label_names(&[], 0, 100).await.unwrap(), vec!["__name__", "b"]);
    }

    #[tokio::test]
    async fn blocks_open_on_first_use_and_close_beyond_the_budget() {
        let dir = tempfile::tempdir().unwrap();
        let bucket = Bucket::local(dir.path()).unwrap();
        let x = |v: &str| Labels::from_pairs([("__name__", "x"), ("b", v)]);
        for k in 0..3i64 {
            let t = k * 1000;
            let mut o = crate::BlockWriterOptions::new(ulid::Ulid::from_parts(k as u64 + 1, 1), t, t + 1000);
            o.external_labels.insert("r".into(), k.to_string());
            let mut w = crate::BlockWriter::new(bucket.clone(), o).unwrap();
            w.append_series(&x("1"), &[t, t + 10], &[1.0, 2.0]).await.unwrap();
            w.append_series(&x("2"), &[t + 5], &[3.0]).await.unwrap();
            w.finish().await.unwrap();
        }
        let all = SelectRequest { min_t: i64::MIN, max_t: i64::MAX, ..Default::default() };
        let src = BucketSource::new(bucket.clone());
        src.sync().await.unwrap();
        let st = src.stats();
        assert_eq!((st.blocks, st.open_blocks, st.opens, st.open_bytes), (3, 0, 0, 0), "{st:?}");
        // Ranges and label sets come from meta.json alone.
        assert_eq!(src.data_ranges().await.len(), 3);
        assert_eq!(src.stats().opens, 0);
        // A request opens only the blocks its time range and external labels select.
        let one = SelectRequest { min_t: 1000, max_t: 1010, ..Default::default() };
        assert_eq!(flat(&src, &one).await.len(), 2);
        let ext = SelectRequest { matchers: vec![Matcher::equal("r", "2")], ..all.clone() };
        assert_eq!(flat(&src, &ext).await.len(), 2);
        let st = src.stats();
        assert_eq!((st.open_blocks, st.opens), (2, 2), "{st:?}");
        let want = flat(&src, &all).await;
        assert_eq!(want.len(), 6);
        let st = src.stats();
        assert_eq!((st.open_blocks, st.opens, st.closes), (3, 3, 0), "{st:?}");
        assert!(st.open_bytes > 3 * 1000, "{st:?}");
        let one_block = st.open_bytes / 3;

        // A budget of about one block: answers unchanged, blocks closed and reopened as needed.
        let small = BucketSource::new(bucket).with_index_budget(one_block + one_block / 2);
        small.sync().await.unwrap();
        for _ in 0..2 {
            assert_eq!(flat(&small, &all).await, want);
            assert_eq!(small.label_values("b", &[], i64::MIN, i64::MAX).await.unwrap(), vec!["1", "2"]);
        }
        let st = small.stats();
        assert!(st.open_blocks < 3 && st.closes >= 2 && st.opens >= 4, "{st:?}");
        assert!(st.open_bytes <= one_block * 2, "{st:?}");
    }

    #[tokio::test]
    async fn time_window_keeps_blocks_out_and_clamps_requests() {
        use std::sync::atomic::{AtomicI64, Ordering};
        const H2: i64 = 7_200_000;
        let dir = tempfile::tempdir().unwrap();
        let bucket = Bucket::local(dir.path()).unwrap();
        let x = Labels::from_pairs([("__name__", "x")]);
        // Three 2h blocks with 8 samples each, 15 min apart; the last one with an external label.
        for k in 0..3i64 {
            let ts: Vec<i64> = (0..8).map(|i| k * H2 + i * 900_000).collect();
            let vs: Vec<f64> = ts.iter().map(|&t| t as f64).collect();
            let mut o = crate::BlockWriterOptions::new(ulid::Ulid::from_parts(k as u64 + 1, 1), k * H2, (k + 1) * H2);
            if k == 2 {
                o.external_labels.insert("replica".into(), "b".into());
            }
            let mut w = crate::BlockWriter::new(bucket.clone(), o).unwrap();
            w.append_series(&x, &ts, &vs).await.unwrap();
            w.finish().await.unwrap();
        }
        let lo = Arc::new(AtomicI64::new(H2));
        let l = lo.clone();
        let src = BucketSource::new(bucket)
            .with_time_window(Arc::new(move || (l.load(Ordering::SeqCst), l.load(Ordering::SeqCst) + H2 + 1000)));
        src.sync().await.unwrap();
        let loaded = |src: &BucketSource| src.block_metas().iter().map(|m| m.min_time / H2).collect::<Vec<_>>();
        assert_eq!(loaded(&src), vec![1, 2]);
        let all = SelectRequest { min_t: i64::MIN, max_t: i64::MAX, ..Default::default() };
        let got = flat(&src, &all).await;
        // Block 1's samples and block 2's first (at 4h, inside the window's extra second).
        let ts: Vec<i64> = got.iter().flat_map(|s| s.1.clone()).collect();
        assert_eq!(ts, (0..9).map(|i| H2 + i * 900_000).collect::<Vec<_>>());
        let series = src.series(&[], i64::MIN, i64::MAX).await.unwrap();
        assert_eq!(series.len(), 2);
        assert_eq!(src.label_values("replica", &[], i64::MIN, H2 * 2 - 1).await.unwrap(), Vec::<String>::new());
        assert_eq!(src.label_names(&[], H2 * 3, i64::MAX).await.unwrap(), Vec::<String>::new());
        let ranges = src.data_ranges().await;
        assert_eq!(
            ranges,
            vec![
                DataRange { labels: Labels::default(), min_t: H2, max_t: 2 * H2 - 1 },
                DataRange { labels: Labels::from_pairs([("replica", "b")]), min_t: 2 * H2, max_t: 2 * H2 + 1000 },
            ]
        );
        // The window moves back: block 0 loads, block 2 leaves.
        lo.store(0, Ordering::SeqCst);
        src.sync().await.unwrap();
        assert_eq!(loaded(&src), vec![0, 1]);
        let got = flat(&src, &all).await;
        assert_eq!(got[0].1.len(), 9);
        // ... and forward again: block 2 comes back without a new listing.
        lo.store(2 * H2, Ordering::SeqCst);
        src.sync().await.unwrap();
        assert_eq!(loaded(&src), vec![2]);
        // select_relabelled over the window: the replica label removed, samples clamped.
        let r = Relabel { set: Labels::default(), remove: vec!["replica".into()] };
        let batches: Vec<SeriesBatch> = src.select_relabelled(&all, &r).await.unwrap().try_collect().await.unwrap();
        assert_eq!(batches[0].series(0).0, &x);
        assert_eq!(batches[0].series(0).1.len(), 8);
    }

    #[tokio::test]
    async fn select_relabelled_matches_the_collected_reference() {
        let dir = tempfile::tempdir().unwrap();
        let bucket = Bucket::local(dir.path()).unwrap();
        let data = synthetic(200, 0);
        // Two replicas of the same data and a third block with another replica and zone override.
        write_block(&bucket, ulid::Ulid::from_parts(1, 1), &[("replica", "a")], &data).await;
        write_block(&bucket, ulid::Ulid::from_parts(1, 2), &[("replica", "b")], &data[..120]).await;
        write_block(&bucket, ulid::Ulid::from_parts(1, 3), &[("replica", "c"), ("zone", "zz")], &data[50..]).await;
        let src = BucketSource::new(bucket);
        src.sync().await.unwrap();
        for relabel in [
            Relabel { set: Labels::default(), remove: vec!["replica".into()] },
            Relabel { set: Labels::default(), remove: vec!["replica".into(), "job".into()] },
            Relabel { set: Labels::from_pairs([("job", "j"), ("a", "1")]), remove: vec!["zone".into()] },
        ] {
            for req in requests() {
                let got: Vec<SeriesBatch> =
                    src.select_relabelled(&req, &relabel).await.unwrap().try_collect().await.unwrap();
                let want = crate::source::relabel_collected(src.select(&req).await.unwrap(), &relabel).await.unwrap();
                let want: Vec<SeriesBatch> = want.try_collect().await.unwrap();
                // Entries with equal labels may come in another order: compare sorted entries.
                let entries = |bs: &[SeriesBatch]| {
                    let mut v = Vec::new();
                    for b in bs {
                        for i in 0..b.num_series() {
                            let (l, t, x) = b.series(i);
                            v.push((l.clone(), t.to_vec(), x.iter().map(|f| f.to_bits()).collect::<Vec<_>>()));
                        }
                    }
                    v
                };
                let (g, mut w) = (entries(&got), entries(&want));
                let order: Vec<&Labels> = g.iter().map(|e| &e.0).collect();
                assert!(order.is_sorted(), "{relabel:?} {:?}", req.matchers);
                let mut g = g.clone();
                g.sort_by(|a, b| (&a.0, &a.1, &a.2).cmp(&(&b.0, &b.1, &b.2)));
                w.sort_by(|a, b| (&a.0, &a.1, &a.2).cmp(&(&b.0, &b.1, &b.2)));
                assert_eq!(g, w, "{relabel:?} {:?}", req.matchers);
            }
        }
    }

    /// The series of `streams` taken one batch from each in turn, checking the deal's contract:
    /// once the stream whose turn it is has ended, every other has ended too.
    async fn interleaved(streams: Vec<SeriesStream>) -> Flat {
        let mut all: Vec<Vec<SeriesBatch>> = Vec::new();
        for s in streams {
            all.push(s.try_collect().await.unwrap());
        }
        let lens: Vec<usize> = all.iter().map(Vec::len).collect();
        assert!(lens.windows(2).all(|w| w[0] >= w[1]) && lens[0] <= lens[lens.len() - 1] + 1, "{lens:?}");
        let mut out = Vec::new();
        for k in 0..lens[0] {
            for b in all.iter().filter_map(|s| s.get(k)) {
                assert_eq!(b.offsets.len(), b.num_series() + 1);
                assert_eq!(b.offsets.last().copied(), Some(b.samples.num_rows()));
                for i in 0..b.num_series() {
                    let (l, t, v) = b.series(i);
                    assert!(!t.is_empty(), "{l}");
                    out.push((l.clone(), t.to_vec(), v.iter().map(|x| x.to_bits()).collect()));
                }
            }
        }
        out
    }

    #[tokio::test]
    async fn many_blocks_are_read_by_label_ranges_as_the_reference_has_them() {
        const H2: i64 = 7_200_000;
        let dir = tempfile::tempdir().unwrap();
        let bucket = Bucket::local(dir.path()).unwrap();
        let mem = MemSource::new();
        // More 2h blocks than are streamed one by one, each missing some series, one with an
        // external label overriding a series label, and a copy of the first block with other
        // values (equal timestamps: the first block wins; MemSource keeps the last added).
        let blocks = READ_AHEAD_BLOCKS as i64 + 4;
        let first = synthetic(480, 0);
        let copy: Vec<(Labels, Vec<i64>, Vec<f64>)> =
            first.iter().map(|(l, t, v)| (l.clone(), t.clone(), v.iter().map(|x| x + 0.5).collect())).collect();
        for (l, t, v) in &copy {
            mem.add(l.clone(), t, v);
        }
        for k in 0..=blocks {
            let (t0, ulid) = match k {
                k if k == blocks => (0, ulid::Ulid::from_parts(1, 2)),
                k => (k * H2, ulid::Ulid::from_parts(k as u64 + 1, 1)),
            };
            let data: Vec<_> = match k {
                k if k == blocks => copy.clone(),
                _ => synthetic(480, t0)
                    .into_iter()
                    .enumerate()
                    .filter(|(i, _)| (*i as i64 + k) % 5 != 0)
                    .map(|p| p.1)
                    .collect(),
            };
            let ext: &[(&str, &str)] = if k == 3 { &[("zone", "z9")] } else { &[] };
            let mut o = crate::BlockWriterOptions::new(ulid, t0, t0 + H2);
            o.external_labels = ext.iter().map(|(a, b)| (a.to_string(), b.to_string())).collect();
            let mut w = crate::BlockWriter::new(bucket.clone(), o).unwrap();
            for (l, t, v) in &data {
                w.append_series(l, t, v).await.unwrap();
            }
            w.finish().await.unwrap();
            if k < blocks {
                for (l, t, v) in with_ext(&data, ext) {
                    mem.add(l, &t, &v);
                }
            }
        }
        let src = BucketSource::new(bucket);
        src.sync().await.unwrap();
        assert_eq!(src.block_metas().len(), blocks as usize + 1);
        let m = |op, n: &str, v: &str| Matcher::new(op, n, v).unwrap();
        let req = |ms: Vec<Matcher>, a, b| SelectRequest { matchers: ms, min_t: a, max_t: b, ..Default::default() };
        let reqs = [
            // Over 1M samples: two label ranges, read ahead; then smaller answers.
            req(vec![], 0, i64::MAX),
            req(vec![m(MatchOp::RegexMatch, "job", "job[12]")], H2 / 2, 9 * H2),
            req(vec![m(MatchOp::Equal, "zone", "z9")], 0, i64::MAX),
            req(vec![m(MatchOp::Equal, "instance", "host-0007")], 0, i64::MAX),
        ];
        let mut total = 0;
        for req in &reqs {
            let got = flat(&src, req).await;
            let want = flat(&mem, req).await;
            assert!(!got.is_empty(), "{:?}", req.matchers);
            assert_eq!(got.len(), want.len(), "{:?}", req.matchers);
            // (Not assert_eq: the answers are megabytes.)
            let first_difference = got.iter().zip(&want).position(|(g, w)| g != w);
            assert_eq!(first_difference, None, "{:?}", req.matchers);
            total = total.max(got.iter().map(|s| s.1.len()).sum::<usize>());
        }
        assert!(total > crate::merge::MERGE_BATCH_SAMPLES, "{total} samples");
    }

    #[tokio::test]
    async fn dealt_select_taken_in_turn_is_the_select() {
        let dir = tempfile::tempdir().unwrap();
        let bucket = Bucket::local(dir.path()).unwrap();
        // Blocks overlapping in time and series: a copy of part of the first (equal timestamps:
        // the earlier block wins), one shifted by an hour, one whose external label makes two
        // of its series one, and one with series of its own.
        let data = synthetic(300, 0);
        write_block(&bucket, ulid::Ulid::from_parts(1, 1), &[], &data).await;
        let copy: Vec<_> =
            data[40..160].iter().map(|(l, t, v)| (l.clone(), t.clone(), v.iter().map(|x| x + 0.5).collect())).collect();
        write_block(&bucket, ulid::Ulid::from_parts(1, 2), &[], &copy).await;
        let shifted: Vec<_> = synthetic(200, 0)
            .into_iter()
            .filter_map(|(l, t, v)| {
                let (t, v): (Vec<i64>, Vec<f64>) =
                    t.iter().map(|x| x + 1_800_003).zip(v.iter().map(|x| x * 3.0)).filter(|p| p.0 < 7_200_000).unzip();
                (!t.is_empty()).then_some((l, t, v))
            })
            .collect();
        write_block(&bucket, ulid::Ulid::from_parts(2, 1), &[], &shifted).await;
        let pair = vec![
            (Labels::from_pairs([("__name__", "metric_3"), ("b", "1")]), vec![1, 3], vec![1.0, 3.0]),
            (Labels::from_pairs([("__name__", "metric_3"), ("b", "2")]), vec![2, 3], vec![2.0, 30.0]),
        ];
        write_block(&bucket, ulid::Ulid::from_parts(3, 1), &[("b", "7")], &pair).await;
        let own: Vec<_> = synthetic(50, 0)
            .into_iter()
            .map(|(mut l, t, v)| {
                l.set("job", "zzz");
                (l, t, v)
            })
            .collect();
        let mut own = own;
        own.sort_by(|a, b| a.0.cmp(&b.0));
        write_block(&bucket, ulid::Ulid::from_parts(4, 1), &[], &own).await;
        let src = BucketSource::new(bucket);
        src.sync().await.unwrap();
        let mut reqs = requests();
        reqs.push(SelectRequest { min_t: 0, max_t: i64::MAX, ..Default::default() });
        reqs.push(SelectRequest { min_t: 3_000_000, max_t: 4_000_000, ..Default::default() });
        let mut chunked = 0;
        for req in &reqs {
            let want = flat(&src, req).await;
            for parts in [2, 3] {
                // Small limits (many chunks, series alone over them) and the real ones.
                for (block_limit, total_limit) in [(1, 1), (300, 700), (2_000, 3_000), (BLOCK_CHUNK_SAMPLES, 1 << 20)] {
                    let streams = src.dealt(req, parts, block_limit, total_limit).await.unwrap().unwrap();
                    assert_eq!(streams.len(), parts);
                    let got = interleaved(streams).await;
                    assert_eq!(got, want, "{:?} parts {parts} limits {block_limit}/{total_limit}", req.matchers);
                }
            }
            let n = src
                .dealt(req, 2, 2_000, 3_000)
                .await
                .unwrap()
                .unwrap()
                .remove(1)
                .try_collect::<Vec<_>>()
                .await
                .unwrap()
                .len();
            chunked += usize::from(n > 1);
        }
        assert!(chunked >= 3, "{chunked}");
        // One partition, or a downsampled read: not dealt.
        assert!(src.select_dealt(&reqs[0], 1).await.unwrap().is_none());
        let mut down = reqs[0].clone();
        down.hints.max_resolution_ms = 300_000;
        assert!(src.select_dealt(&down, 2).await.unwrap().is_none());
    }

    #[test]
    fn label_range_chunks_cut_every_block_at_the_same_labels_within_the_limits() {
        let idx = |n: &str| Labels::from_pairs([("__name__", n)]);
        let entries = |names: &[&str]| -> Vec<(Labels, Vec<u32>)> {
            names.iter().enumerate().map(|(i, n)| (idx(n), vec![i as u32])).collect()
        };
        // Chunks only use labels and sample counts: check them on the chunking of plain lists
        // through `cut_points`, which `label_range_chunks` applies to blocks.
        let a = entries(&["a", "b", "c", "d", "e", "f"]);
        let b = entries(&["b", "d", "f", "g"]);
        let sizes = [vec![3u64, 3, 3, 3, 3, 3], vec![4u64, 4, 4, 4]];
        let lists = [&a, &b];
        let bounds = cut_points(&lists, &sizes, 7, 12);
        // Every chunk: at most 7 of a block, 12 in all, one series alone when it is over.
        let mut pos = [0usize, 0];
        let mut seen: Vec<Vec<String>> = Vec::new();
        for end in &bounds {
            let mut total = 0;
            let mut names = Vec::new();
            for k in 0..2 {
                let n: u64 = sizes[k][pos[k]..end[k]].iter().sum();
                assert!(n <= 7 || end[k] - pos[k] == 1, "{bounds:?}");
                total += n;
                names.extend(lists[k][pos[k]..end[k]].iter().map(|s| s.0.metric_name().unwrap_or("").to_string()));
            }
            assert!(total <= 12, "{bounds:?}");
            names.sort();
            seen.push(names);
            pos = [end[0], end[1]];
        }
        assert_eq!(pos, [6, 4]);
        // The chunks follow each other in label order with no label in two chunks.
        let flat: Vec<&String> = seen.iter().flatten().collect();
        assert!(flat.windows(2).all(|w| w[0] <= w[1]), "{seen:?}");
        assert_eq!(seen.concat().len(), 10);
        assert!(seen.len() >= 3, "{seen:?}");
        // A series over both limits goes alone.
        let big = [vec![100u64, 1, 1, 1, 1, 1], vec![1u64, 1, 1, 1]];
        let bounds = cut_points(&lists, &big, 7, 12);
        assert_eq!(bounds[0], vec![1, 0]);
    }

    #[test]
    fn merge_sorted_is_the_sorted_distinct_union() {
        assert_eq!(merge_sorted(vec!["b", "d", "f"], ["a", "d", "e", "g"]), vec!["a", "b", "d", "e", "f", "g"]);
        assert_eq!(merge_sorted(vec![], ["a"]), vec!["a"]);
        assert_eq!(merge_sorted(vec!["a", "c"], []), vec!["a", "c"]);
        assert_eq!(merge_sorted(vec!["a", "c"], ["a", "c"]), vec!["a", "c"]);
    }

    /// Label names and values as the trait's default computes them: from the full label sets.
    async fn walked(src: &BucketSource, name: &str, ms: &[Matcher], a: i64, b: i64) -> (Vec<String>, Vec<String>) {
        let series = src.series(ms, a, b).await.unwrap();
        let names: BTreeSet<String> = series.iter().flat_map(|l| l.iter().map(|l| l.name.clone())).collect();
        let values: BTreeSet<String> = series.iter().filter_map(|l| l.get(name).map(str::to_string)).collect();
        (names.into_iter().collect(), values.into_iter().collect())
    }

    #[tokio::test]
    async fn label_lookups_from_the_index_agree_with_walking_the_series() {
        let dir = tempfile::tempdir().unwrap();
        let bucket = Bucket::local(dir.path()).unwrap();
        write_block(&bucket, ulid::Ulid::from_parts(1, 1), &[("region", "eu")], &synthetic(300, 0)).await;
        write_block(&bucket, ulid::Ulid::from_parts(2, 2), &[("zone", "ext")], &synthetic(200, 0)).await;
        // A copy of the first block right after it: its index lists repeat the first's.
        write_block(&bucket, ulid::Ulid::from_parts(1, 2), &[("region", "eu")], &synthetic(300, 0)).await;
        let src = BucketSource::new(bucket);
        src.sync().await.unwrap();
        let blocks = src.open_blocks().await.unwrap();
        // The whole range takes the index path for every block, a window inside a block does not.
        assert!(blocks.iter().all(|b| matches!(block_hits(b, &[], i64::MIN, i64::MAX), Hits::All)));
        assert!(matches!(block_hits(&blocks[0], &[], 1_000_000, 2_000_000), Hits::Some(_)));
        assert!(matches!(block_hits(&blocks[2], &[Matcher::equal("zone", "z1")], i64::MIN, i64::MAX), Hits::None));
        let idx = blocks[0].index().label_index();
        assert_eq!(idx.names().collect::<Vec<_>>(), vec!["__name__", "instance", "job", "min_time", "zone"]);
        assert_eq!(idx.values("job"), ["job0", "job1", "job2"]);
        assert_eq!(idx.values("instance").len(), 300);
        assert!(idx.values("nope").is_empty());
        // One String per distinct pair: 300 instances, 7 names, 3 jobs, 2 zones, 1 min_time value.
        let pairs: usize = 300 + 7 + 3 + 2 + 1;
        let bytes = idx.heap_bytes();
        assert!((pairs * 24..pairs * 48).contains(&bytes), "{bytes} bytes for {pairs} pairs");
        // What `/metrics` reports: per block the names and values plus 4 bytes per series and
        // label column in the postings (at least the metric name's), and a lookup per value.
        let least: usize = blocks.iter().map(|b| b.index().label_index().heap_bytes() + b.index().len() * 4).sum();
        let total = src.label_index_bytes();
        assert!(total > least && total < least * 10, "{total} vs {least}");

        let m = |op, n: &str, v: &str| Matcher::new(op, n, v).unwrap();
        let matcher_sets = vec![
            vec![],
            vec![m(MatchOp::Equal, "job", "job1")],
            vec![m(MatchOp::Equal, "region", "eu")],
            vec![m(MatchOp::NotEqual, "region", "eu")],
            vec![m(MatchOp::RegexMatch, "zone", "z1|ext")],
            vec![m(MatchOp::RegexMatch, "instance", "host-00[0-4].")],
            vec![m(MatchOp::Equal, "nope", "x")],
        ];
        let windows = [(i64::MIN, i64::MAX), (0, 7_200_000), (1_000_000, 2_000_000), (7_150_000, 20_000_000)];
        let names = ["__name__", "job", "instance", "zone", "region", "min_time", "nope"];
        let mut nonempty = 0;
        for ms in &matcher_sets {
            for &(a, b) in &windows {
                for name in names {
                    let (want_names, want_values) = walked(&src, name, ms, a, b).await;
                    assert_eq!(src.label_names(ms, a, b).await.unwrap(), want_names, "{ms:?} [{a}, {b}]");
                    let got = src.label_values(name, ms, a, b).await.unwrap();
                    assert_eq!(got, want_values, "{name} {ms:?} [{a}, {b}]");
                    nonempty += usize::from(!got.is_empty());
                }
            }
        }
        assert!(nonempty > 60, "{nonempty}");
        assert_eq!(src.label_values("zone", &[], i64::MIN, i64::MAX).await.unwrap(), vec!["ext", "z0", "z1"]);
    }

    #[tokio::test]
    async fn s3_round_trip_against_moto() {
        let Some(moto) = crate::bucket::tests::Moto::start("strata-source-test").await else { return };
        let bucket = Bucket::from_yaml(&moto.yaml("strata-source-test")).unwrap();
        let data = synthetic(200, 0);
        write_block(&bucket, ulid::Ulid::new(), &[], &data).await;
        let src = BucketSource::new(bucket);
        src.sync().await.unwrap();
        let mem = MemSource::new();
        for (l, t, v) in data {
            mem.add(l, &t, &v);
        }
        for req in requests() {
            assert_eq!(flat(&src, &req).await, flat(&mem, &req).await, "{:?}", req.matchers);
        }
    }
}
