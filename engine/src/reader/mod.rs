//! [`BlockReader`]: one block of format v1 or v2, opened from a bucket.
//!
//! A downsampled block (resolution > 0) has `aggregates.parquet` instead of `samples.parquet`;
//! its rows are read with [`BlockReader::read_aggregates`] (`read_samples` refuses it).
//!
//! Opening reads `meta.json`, loads `series.parquet` whole into memory (Arrow, plus the decoded
//! label sets) and the footer and page index of `samples.parquet`. Matchers resolve on the cached
//! series table; samples of the chosen series are read with a Parquet `RowSelection` built from each
//! series' `first_row`/`num_samples`, so only the row groups and pages holding them are fetched.
//! Format v2 value columns are decoded into Float64 as they are read (`values::decode_columns`), so
//! everything above the reader (page cache, sources) sees the same values for both formats.
//!
//! ```text
//!   matchers ──► series table (cached) ──► series ids ──► row ranges ──► samples.parquet pages
//! ```
//!
//! The rooms: `series_index` decodes the series table and resolves matchers, with the
//! per-label postings in `postings` and the block's [`LabelIndex`] in `label_index`; `samples`
//! holds the sample reads (page pruning, row selection); [`PageCache`] keeps decoded pages;
//! `object_reader` adapts a bucket object to Parquet's async reader.

mod label_index;
mod object_reader;
mod page_cache;
mod postings;
mod samples;
mod series_index;

use std::sync::Arc;

use object_store::path::Path as ObjPath;
use parquet::arrow::arrow_reader::{ArrowReaderMetadata, ArrowReaderOptions};
use parquet::file::metadata::PageIndexPolicy;

pub use label_index::LabelIndex;
pub(crate) use object_reader::ObjectReader;
pub use page_cache::{DecodedPage, PageCache, PageCacheStats};
pub use samples::SeriesSamples;
pub use series_index::{SeriesIndex, read_series_index};

use crate::bucket::Bucket;
use crate::error::{Error, Result};
use crate::format;
use crate::meta::BlockMeta;
use page_cache::NEXT_CACHE_ID;
use samples::{TsPage, timestamp_pages};

/// One opened block. Cheap to share behind an `Arc`.
#[derive(Debug)]
pub struct BlockReader {
    bucket: Bucket,
    meta: BlockMeta,
    index: SeriesIndex,
    samples_path: ObjPath,
    samples_size: u64,
    samples_meta: ArrowReaderMetadata,
    /// `strata.format_version` of the block (1 or 2).
    format_version: u32,
    /// Pages of the timestamp column: global row range and min/max timestamp (when known).
    ts_pages: Vec<TsPage>,
    /// Shared cache of decoded pages, if any.
    cache: Option<Arc<PageCache>>,
    /// This open's key in the cache.
    cache_id: u64,
}

impl BlockReader {
    /// Opens block `ulid`: meta.json, series.parquet (loaded whole) and the samples footer.
    pub async fn open(bucket: &Bucket, ulid: &str) -> Result<Self> {
        let meta = bucket.read_meta(ulid).await?;
        Self::open_with_meta(bucket, ulid, meta).await
    }

    /// Like [`BlockReader::open`] for a block whose meta.json the caller has already read (a
    /// [`crate::bucket_source::BucketSource`] holds it from its sync).
    pub async fn open_with_meta(bucket: &Bucket, ulid: &str, meta: BlockMeta) -> Result<Self> {
        // A meta.json without a strata section is tried as v1 (its files then fail the schema check).
        let format_version = meta.strata.as_ref().map_or(1, |s| s.format_version);
        if !format::READABLE_FORMAT_VERSIONS.contains(&format_version) {
            return Err(Error::BadMeta {
                path: Bucket::block_path(ulid, crate::meta::META_FILE).to_string(),
                reason: format!(
                    "strata.format_version {format_version} is not supported (this build reads {:?})",
                    format::READABLE_FORMAT_VERSIONS
                ),
            });
        }
        let index = read_series_index(bucket, ulid).await?;

        let aggregated = meta.thanos.downsample.resolution > 0;
        let data_file = if aggregated { format::AGGREGATES_FILE } else { format::SAMPLES_FILE };
        let samples_path = Bucket::block_path(ulid, data_file);
        let samples_size = bucket.head(&samples_path).await?.size;
        let mut r = ObjectReader::new(bucket.store(), &samples_path, samples_size);
        let opts = ArrowReaderOptions::new().with_page_index_policy(PageIndexPolicy::Optional);
        let samples_meta =
            ArrowReaderMetadata::load_async(&mut r, opts).await.map_err(|e| Error::parquet(&samples_path, e))?;
        let want = if aggregated { format::aggregates_schema() } else { format::samples_schema(format_version) };
        for f in want.fields() {
            match samples_meta.schema().field_with_name(f.name()) {
                Ok(g) if g.data_type() == f.data_type() => {}
                _ => {
                    return Err(Error::BadBlockFile {
                        path: samples_path.to_string(),
                        reason: format!("missing column {} of type {}", f.name(), f.data_type()),
                    });
                }
            }
        }
        let ts_pages = timestamp_pages(samples_meta.metadata());
        let cache_id = NEXT_CACHE_ID.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
        Ok(BlockReader {
            bucket: bucket.clone(),
            meta,
            index,
            samples_path,
            samples_size,
            samples_meta,
            format_version,
            ts_pages,
            cache: None,
            cache_id,
        })
    }

    /// Serves sample reads through `cache` (shared with other blocks).
    pub fn with_page_cache(mut self, cache: Arc<PageCache>) -> Self {
        self.cache = Some(cache);
        self
    }

    /// The block's meta.json.
    pub fn meta(&self) -> &BlockMeta {
        &self.meta
    }

    /// Downsampling resolution of the block in ms (0 = raw; see [`BlockReader::read_aggregates`]).
    pub fn resolution(&self) -> i64 {
        self.meta.thanos.downsample.resolution
    }

    /// The block's storage format version (`strata.format_version`).
    pub fn format_version(&self) -> u32 {
        self.format_version
    }

    /// The block's ULID.
    pub fn ulid(&self) -> &str {
        &self.meta.ulid
    }

    /// The cached series table.
    pub fn index(&self) -> &SeriesIndex {
        &self.index
    }

    /// Approximate heap bytes the open block holds: its series table ([`SeriesIndex::heap_bytes`])
    /// and the footer and page index of samples.parquet (decoded pages are in the [`PageCache`]).
    pub fn heap_bytes(&self) -> usize {
        self.index.heap_bytes() + self.samples_meta.metadata().memory_size() + self.ts_pages.len() * 32
    }
}

/// An unloaded block takes its cached pages with it.
impl Drop for BlockReader {
    fn drop(&mut self) {
        if let Some(c) = &self.cache {
            c.remove_block(self.cache_id);
        }
    }
}
