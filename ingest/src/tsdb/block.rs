//! One Prometheus block directory opened for reading.
//!
//! Owns tying the parts together: `meta.json`, the index, the chunk segments and the tombstones,
//! and turning each index series into its samples: chunks decoded in index order, overlapping
//! chunks merged by timestamp with duplicate timestamps dropped (the first chunk's sample wins),
//! then tombstoned intervals removed.

use std::path::{Path, PathBuf};

use engine::{BlockMeta, Labels};

use super::chunks::{ChunkReader, ENC_XOR, encoding_name};
use super::index::{IndexReader, SeriesEntries, SeriesEntry};
use super::tombstones::Tombstones;
use crate::error::{Error, Result};

/// A series with all its samples in the block, sorted by timestamp, tombstones applied.
#[derive(Debug, Clone, PartialEq)]
pub struct TsdbSeries {
    /// The series' ref in the block's index.
    pub series_ref: u64,
    /// Its labels.
    pub labels: Labels,
    /// Sample timestamps (ms), strictly increasing.
    pub timestamps: Vec<i64>,
    /// Sample values, bit-exact (NaNs and stale markers kept).
    pub values: Vec<f64>,
}

/// What decoding a whole block found.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct BlockCounts {
    /// Series with at least one sample left after tombstones.
    pub series: u64,
    /// Chunks decoded.
    pub chunks: u64,
    /// Samples yielded (after merging and tombstones).
    pub samples: u64,
}

/// A Prometheus TSDB block opened read-only.
#[derive(Debug)]
pub struct Block {
    dir: PathBuf,
    meta: BlockMeta,
    index: IndexReader,
    chunks: ChunkReader,
    tombstones: Tombstones,
}

impl Block {
    /// Opens the block in `dir`: parses `meta.json`, maps `index` and `chunks/*`, reads
    /// `tombstones` (a missing tombstones file means none).
    pub fn open(dir: impl AsRef<Path>) -> Result<Self> {
        let dir = dir.as_ref().to_path_buf();
        if !dir.is_dir() {
            return Err(Error::BadPath { path: dir, reason: "not a block directory".into() });
        }
        let meta_path = dir.join("meta.json");
        let meta_bytes = match std::fs::read(&meta_path) {
            Ok(b) => b,
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => {
                return Err(Error::MissingFile { block: dir, what: "meta.json", path: meta_path });
            }
            Err(e) => return Err(Error::io(meta_path, e)),
        };
        let meta = BlockMeta::parse(&meta_bytes, &meta_path.to_string_lossy())?;
        let index_path = dir.join("index");
        if !index_path.is_file() {
            return Err(Error::MissingFile { block: dir, what: "index", path: index_path });
        }
        let index = IndexReader::open(&index_path)?;
        let chunks_dir = dir.join("chunks");
        if !chunks_dir.is_dir() {
            return Err(Error::MissingFile { block: dir, what: "chunks/ directory", path: chunks_dir });
        }
        let chunks = ChunkReader::open(&chunks_dir)?;
        let tombstones = Tombstones::read(&dir.join("tombstones"))?;
        Ok(Block { dir, meta, index, chunks, tombstones })
    }

    /// The block directory.
    pub fn dir(&self) -> &Path {
        &self.dir
    }

    /// The parsed `meta.json`.
    pub fn meta(&self) -> &BlockMeta {
        &self.meta
    }

    /// The index reader (symbols, label names, series entries).
    pub fn index(&self) -> &IndexReader {
        &self.index
    }

    /// The chunk segment reader.
    pub fn chunks(&self) -> &ChunkReader {
        &self.chunks
    }

    /// The tombstones.
    pub fn tombstones(&self) -> &Tombstones {
        &self.tombstones
    }

    /// Number of series in the index (including any whose samples are all deleted).
    pub fn num_series(&self) -> u64 {
        self.index.num_series()
    }

    /// Every series with samples, in index (label-sorted) order. Series whose samples are all
    /// deleted by tombstones (or that have no chunks) are skipped. The iterator stops after
    /// yielding its first error.
    pub fn series(&self) -> BlockSeries<'_> {
        BlockSeries { block: self, entries: self.index.series(), done: false }
    }

    /// Decodes the samples of one index series into `ts` and `vs` (cleared first): chunks in
    /// order, overlaps merged by timestamp without duplicates, tombstones applied.
    pub fn read_samples(&self, entry: &SeriesEntry, ts: &mut Vec<i64>, vs: &mut Vec<f64>) -> Result<()> {
        ts.clear();
        vs.clear();
        self.append_samples(entry, ts, vs)
    }

    /// [`Block::read_samples`] appending to `ts` and `vs` (of equal length) instead of replacing
    /// their contents, so that many series decode into one pair of buffers (the converter's
    /// batches). On error the buffers hold a partial series.
    pub fn append_samples(&self, entry: &SeriesEntry, ts: &mut Vec<i64>, vs: &mut Vec<f64>) -> Result<()> {
        let start = ts.len();
        let in_series = |e: Error| Error::InSeries {
            series: entry.labels.to_string(),
            series_ref: entry.series_ref,
            source: Box::new(e),
        };
        for cm in &entry.chunks {
            let raw = self.chunks.chunk(cm.chunk_ref).map_err(in_series)?;
            if raw.encoding != ENC_XOR {
                return Err(Error::UnsupportedEncoding {
                    series: entry.labels.to_string(),
                    series_ref: entry.series_ref,
                    path: raw.path.to_path_buf(),
                    offset: raw.offset,
                    encoding: raw.encoding,
                    name: encoding_name(raw.encoding),
                });
            }
            engine::chunkenc::decode_into(raw.data, ts, vs)
                .map_err(|e| in_series(Error::corrupt(raw.path, raw.offset, e.to_string())))?;
        }
        let sorted = ts.get(start..).unwrap_or_default().windows(2).all(|w| w[0] < w[1]);
        if !sorted || !self.tombstones.intervals(entry.series_ref).is_empty() {
            let (mut t, mut v) = (ts.split_off(start), vs.split_off(start));
            if !sorted {
                merge_by_time(&mut t, &mut v);
            }
            self.tombstones.apply(entry.series_ref, &mut t, &mut v);
            ts.extend_from_slice(&t);
            vs.extend_from_slice(&v);
        }
        Ok(())
    }

    /// Decodes every chunk of every series and returns the counts, reusing one pair of buffers
    /// (what a throughput benchmark of the reader measures).
    pub fn decode_all(&self) -> Result<BlockCounts> {
        let mut counts = BlockCounts::default();
        let (mut ts, mut vs) = (Vec::new(), Vec::new());
        for entry in self.index.series() {
            let entry = entry?;
            self.read_samples(&entry, &mut ts, &mut vs)?;
            counts.chunks += entry.chunks.len() as u64;
            if !ts.is_empty() {
                counts.series += 1;
                counts.samples += ts.len() as u64;
            }
        }
        Ok(counts)
    }
}

/// Sorts samples by timestamp (stable: for equal timestamps the earlier chunk's sample comes
/// first) and keeps only the first sample of each timestamp.
fn merge_by_time(ts: &mut Vec<i64>, vs: &mut Vec<f64>) {
    let n = ts.len().min(vs.len());
    let mut order: Vec<usize> = (0..n).collect();
    order.sort_by_key(|&i| ts[i]);
    let mut nt = Vec::with_capacity(n);
    let mut nv = Vec::with_capacity(n);
    for i in order {
        if nt.last() != Some(&ts[i]) {
            nt.push(ts[i]);
            nv.push(vs[i]);
        }
    }
    *ts = nt;
    *vs = nv;
}

/// Iterator over a block's series with their samples; see [`Block::series`].
#[derive(Debug)]
pub struct BlockSeries<'a> {
    block: &'a Block,
    entries: SeriesEntries<'a>,
    done: bool,
}

impl Iterator for BlockSeries<'_> {
    type Item = Result<TsdbSeries>;

    fn next(&mut self) -> Option<Self::Item> {
        while !self.done {
            let entry = match self.entries.next()? {
                Ok(e) => e,
                Err(e) => {
                    self.done = true;
                    return Some(Err(e));
                }
            };
            let (mut ts, mut vs) = (Vec::new(), Vec::new());
            if let Err(e) = self.block.read_samples(&entry, &mut ts, &mut vs) {
                self.done = true;
                return Some(Err(e));
            }
            if ts.is_empty() {
                continue;
            }
            return Some(Ok(TsdbSeries {
                series_ref: entry.series_ref,
                labels: entry.labels,
                timestamps: ts,
                values: vs,
            }));
        }
        None
    }
}

#[cfg(test)]
#[allow(clippy::unwrap_used, clippy::expect_used)]
mod tests {
    use super::*;

    #[test]
    fn merge_drops_duplicates_and_keeps_first() {
        let mut ts = vec![10, 20, 30, 15, 20, 40];
        let mut vs = vec![1.0, 2.0, 3.0, 1.5, 9.0, 4.0];
        merge_by_time(&mut ts, &mut vs);
        assert_eq!(ts, vec![10, 15, 20, 30, 40]);
        assert_eq!(vs, vec![1.0, 1.5, 2.0, 3.0, 4.0]);
    }
}
