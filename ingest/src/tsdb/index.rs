//! The block `index` file (format v2; v3 reads the same).
//!
//! Owns the header (magic `0xBAAAD700`, version), the TOC at the end of the file and its CRC32C,
//! the symbol table, the postings offset table (to find the all-postings list and label names),
//! and the series entries: labels resolved through symbol refs, chunk metas decoded from their
//! delta encoding, each entry's CRC32C checked. Series are visited in index order, which is
//! label-sorted order, via the all-postings list. Index v1 is rejected.

use std::fs::File;
use std::path::{Path, PathBuf};

use engine::Labels;
use memmap2::Mmap;

use super::decbuf::{Decbuf, be_u32_at, be_u64_at};
use crate::error::{Error, Result};

/// Magic number at the start of an index file.
pub const INDEX_MAGIC: u32 = 0xBAAA_D700;
/// Length of the TOC at the end of the index: six u64 offsets and a CRC32C.
pub const TOC_LEN: usize = 52;
const HEADER_LEN: usize = 5;

/// The index's table of contents: absolute offsets of its sections (0 = absent).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Toc {
    /// Symbol table.
    pub symbols: u64,
    /// Series section.
    pub series: u64,
    /// Label indices (legacy) or the end of the series section.
    pub label_indices: u64,
    /// Label offset table (legacy).
    pub label_offset_table: u64,
    /// Postings lists.
    pub postings: u64,
    /// Postings offset table.
    pub postings_offset_table: u64,
}

/// Where a chunk of a series lives and which time range it covers.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ChunkMeta {
    /// Timestamp of the chunk's first sample (ms).
    pub min_time: i64,
    /// Timestamp of the chunk's last sample (ms, inclusive).
    pub max_time: i64,
    /// Chunk ref: segment file index << 32 | byte offset in that file.
    pub chunk_ref: u64,
}

/// One series entry of the index.
#[derive(Debug, Clone, PartialEq)]
pub struct SeriesEntry {
    /// Series ref: file offset of the entry / 16.
    pub series_ref: u64,
    /// The series' labels.
    pub labels: Labels,
    /// Its chunks in index order.
    pub chunks: Vec<ChunkMeta>,
}

/// A read-only, memory-mapped index file.
#[derive(Debug)]
pub struct IndexReader {
    path: PathBuf,
    map: Mmap,
    version: u8,
    toc: Toc,
    symbols: Vec<Box<str>>,
    /// File offset of the all-postings list's first series ID, and how many IDs it holds.
    all_postings: (usize, u32),
}

impl IndexReader {
    /// Maps `path` and reads its header, TOC, symbol table and postings offset table.
    pub fn open(path: &Path) -> Result<Self> {
        let file = File::open(path).map_err(|e| Error::io(path, e))?;
        // SAFETY: the index belongs to a block, which is immutable once its directory has its final
        // name; nothing writes to or truncates it while we hold the mapping.
        let map = unsafe { Mmap::map(&file) }.map_err(|e| Error::io(path, e))?;
        let path = path.to_path_buf();
        let len = map.len();
        if len < HEADER_LEN + TOC_LEN {
            return Err(Error::corrupt(&path, 0, format!("index is {len} bytes, too short for header and TOC")));
        }
        let magic = be_u32_at(&map, 0).unwrap_or_default();
        if magic != INDEX_MAGIC {
            return Err(Error::corrupt(&path, 0, format!("bad index magic {magic:#010x}, want {INDEX_MAGIC:#010x}")));
        }
        let version = map[4];
        if version != 2 && version != 3 {
            return Err(Error::UnsupportedIndexVersion { path, version });
        }
        let toc = read_toc(&path, &map)?;
        let symbols = read_symbols(&path, &map, toc.symbols)?;
        let all_postings = read_all_postings(&path, &map, toc.postings_offset_table)?;
        Ok(IndexReader { path, map, version, toc, symbols, all_postings })
    }

    /// The index file's path.
    pub fn path(&self) -> &Path {
        &self.path
    }

    /// Format version (2 or 3).
    pub fn version(&self) -> u8 {
        self.version
    }

    /// The table of contents.
    pub fn toc(&self) -> &Toc {
        &self.toc
    }

    /// The symbol table, sorted; a v2 symbol ref is a position in it.
    pub fn symbols(&self) -> &[Box<str>] {
        &self.symbols
    }

    /// Number of series (length of the all-postings list).
    pub fn num_series(&self) -> u64 {
        u64::from(self.all_postings.1)
    }

    /// Size of the index file in bytes.
    pub fn size_bytes(&self) -> u64 {
        self.map.len() as u64
    }

    /// The distinct label names of the block, sorted, from the postings offset table.
    pub fn label_names(&self) -> Result<Vec<String>> {
        let mut names: Vec<String> = Vec::new();
        walk_postings_offsets(&self.path, &self.map, self.toc.postings_offset_table, |name, _value, _off| {
            if !name.is_empty() && names.last().map(String::as_str) != Some(name) {
                names.push(name.to_string());
            }
            true
        })?;
        Ok(names)
    }

    /// All series in index (label-sorted) order. The iterator stops after the first error.
    pub fn series(&self) -> SeriesEntries<'_> {
        SeriesEntries { index: self, next: 0, done: false }
    }

    /// Reads the series entry with ref `series_ref` (file offset / 16) and checks its CRC32C.
    pub fn series_entry(&self, series_ref: u64) -> Result<SeriesEntry> {
        let off = series_ref.checked_mul(16).filter(|&o| o >= self.toc.series && o < self.series_end());
        let Some(off) = off else {
            return Err(Error::corrupt(
                &self.path,
                series_ref.saturating_mul(16),
                format!(
                    "series ref {series_ref} points outside the series section [{}, {})",
                    self.toc.series,
                    self.series_end()
                ),
            ));
        };
        let data = self.map.get(off as usize..self.series_end() as usize).unwrap_or_default();
        let mut d = Decbuf::new(&self.path, data, off);
        let len = d.uvarint("series entry length")?;
        let len = usize::try_from(len).map_err(|_| d.err(format!("series entry length {len} too large")))?;
        let content_off = d.offset();
        let content = d.bytes(len, "series entry")?;
        let stored = d.be_u32("series entry CRC")?;
        let computed = crc32c::crc32c(content);
        if stored != computed {
            return Err(Error::Checksum {
                path: self.path.clone(),
                offset: off,
                what: "series entry",
                stored,
                computed,
            });
        }
        let mut c = Decbuf::new(&self.path, content, content_off);
        let nlabels = c.uvarint_u32("series label count")?;
        let mut pairs: Vec<(&str, &str)> = Vec::with_capacity((nlabels as usize).min(c.remaining() / 2));
        for _ in 0..nlabels {
            let name = self.symbol(&mut c, series_ref, "label name ref")?;
            let value = self.symbol(&mut c, series_ref, "label value ref")?;
            pairs.push((name, value));
        }
        let labels = Labels::try_from_pairs(pairs.iter().copied())
            .map_err(|e| Error::corrupt(&self.path, off, format!("series ref {series_ref}: {e}")))?;
        let nchunks = c.uvarint_u32("series chunk count")?;
        let mut chunks = Vec::with_capacity((nchunks as usize).min(c.remaining() / 3));
        let mut prev: Option<ChunkMeta> = None;
        for _ in 0..nchunks {
            let meta = match prev {
                None => {
                    let min_time = c.varint("chunk min time")?;
                    let span = c.uvarint("chunk time span")?;
                    let chunk_ref = c.uvarint("chunk ref")?;
                    ChunkMeta { min_time, max_time: min_time.wrapping_add(span as i64), chunk_ref }
                }
                Some(p) => {
                    let gap = c.uvarint("chunk min time delta")?;
                    let span = c.uvarint("chunk time span")?;
                    let dref = c.varint("chunk ref delta")?;
                    let min_time = p.max_time.wrapping_add(gap as i64);
                    ChunkMeta {
                        min_time,
                        max_time: min_time.wrapping_add(span as i64),
                        chunk_ref: p.chunk_ref.wrapping_add(dref as u64),
                    }
                }
            };
            chunks.push(meta);
            prev = Some(meta);
        }
        if c.remaining() != 0 {
            return Err(
                c.err(format!("series ref {series_ref}: {} unexpected bytes after the chunk metas", c.remaining()))
            );
        }
        Ok(SeriesEntry { series_ref, labels, chunks })
    }

    fn symbol<'a>(&'a self, c: &mut Decbuf<'_, '_>, series_ref: u64, what: &str) -> Result<&'a str> {
        let at = c.offset();
        let r = c.uvarint(what)?;
        usize::try_from(r).ok().and_then(|i| self.symbols.get(i)).map(|s| &**s).ok_or_else(|| {
            Error::corrupt(
                &self.path,
                at,
                format!(
                    "series ref {series_ref}: {what} {r} is past the symbol table ({} symbols)",
                    self.symbols.len()
                ),
            )
        })
    }

    /// End of the series section: the nearest later section start named by the TOC.
    fn series_end(&self) -> u64 {
        let t = &self.toc;
        let toc_start = (self.map.len() - TOC_LEN) as u64;
        [t.label_indices, t.postings, t.label_offset_table, t.postings_offset_table]
            .into_iter()
            .filter(|&o| o > t.series)
            .min()
            .unwrap_or(toc_start)
    }

    /// The `i`-th series ref of the all-postings list.
    fn posting(&self, i: u32) -> Option<u64> {
        let pos = self.all_postings.0.checked_add(4 * i as usize)?;
        be_u32_at(&self.map, pos).map(u64::from)
    }
}

/// Iterator over an index's series entries, in index order.
#[derive(Debug)]
pub struct SeriesEntries<'a> {
    index: &'a IndexReader,
    next: u32,
    done: bool,
}

impl Iterator for SeriesEntries<'_> {
    type Item = Result<SeriesEntry>;

    fn next(&mut self) -> Option<Self::Item> {
        if self.done || self.next >= self.index.all_postings.1 {
            return None;
        }
        let i = self.next;
        self.next += 1;
        let r = match self.index.posting(i) {
            Some(series_ref) => self.index.series_entry(series_ref),
            None => {
                Err(Error::corrupt(&self.index.path, self.index.all_postings.0 as u64, "all-postings list truncated"))
            }
        };
        if r.is_err() {
            self.done = true;
        }
        Some(r)
    }

    fn size_hint(&self) -> (usize, Option<usize>) {
        let left = if self.done { 0 } else { (self.index.all_postings.1 - self.next) as usize };
        (0, Some(left))
    }
}

fn read_toc(path: &Path, map: &[u8]) -> Result<Toc> {
    let start = map.len() - TOC_LEN;
    let toc = &map[start..];
    let stored = be_u32_at(toc, 48).unwrap_or_default();
    let computed = crc32c::crc32c(&toc[..48]);
    if stored != computed {
        return Err(Error::Checksum { path: path.to_path_buf(), offset: start as u64, what: "TOC", stored, computed });
    }
    let o = |i: usize| be_u64_at(toc, i * 8).unwrap_or_default();
    let t = Toc {
        symbols: o(0),
        series: o(1),
        label_indices: o(2),
        label_offset_table: o(3),
        postings: o(4),
        postings_offset_table: o(5),
    };
    for (name, off) in [
        ("symbols", t.symbols),
        ("series", t.series),
        ("label indices", t.label_indices),
        ("label offset table", t.label_offset_table),
        ("postings", t.postings),
        ("postings offset table", t.postings_offset_table),
    ] {
        if off > start as u64 {
            return Err(Error::corrupt(
                path,
                start as u64,
                format!("TOC offset of {name} ({off}) is past the start of the TOC ({start})"),
            ));
        }
    }
    if t.symbols == 0 || t.postings_offset_table == 0 {
        return Err(Error::corrupt(path, start as u64, "TOC lacks the symbol table or the postings offset table"));
    }
    Ok(t)
}

/// Returns the `len` bytes of a `len u32 | bytes | crc u32` section at `off` after checking the CRC.
fn crc_section<'a>(path: &Path, map: &'a [u8], off: u64, what: &'static str) -> Result<&'a [u8]> {
    let o = usize::try_from(off).map_err(|_| Error::corrupt(path, off, format!("{what} offset too large")))?;
    let mut d = Decbuf::new(path, map.get(o..).unwrap_or_default(), off);
    let len = d.be_u32(what)? as usize;
    let body = d.bytes(len, what)?;
    let stored = d.be_u32(what)?;
    let computed = crc32c::crc32c(body);
    if stored != computed {
        return Err(Error::Checksum { path: path.to_path_buf(), offset: off, what, stored, computed });
    }
    Ok(body)
}

fn read_symbols(path: &Path, map: &[u8], off: u64) -> Result<Vec<Box<str>>> {
    let body = crc_section(path, map, off, "symbol table")?;
    let mut d = Decbuf::new(path, body, off + 4);
    let count = d.be_u32("symbol count")? as usize;
    let mut syms = Vec::with_capacity(count.min(body.len()));
    for _ in 0..count {
        syms.push(Box::from(d.uvarint_str("symbol")?));
    }
    if d.remaining() != 0 {
        return Err(d.err(format!("{} unexpected bytes after {count} symbols", d.remaining())));
    }
    Ok(syms)
}

/// Calls `f(name, value, postings_offset)` for each entry of the postings offset table, in order,
/// until `f` returns false.
fn walk_postings_offsets(path: &Path, map: &[u8], off: u64, mut f: impl FnMut(&str, &str, u64) -> bool) -> Result<()> {
    let body = crc_section(path, map, off, "postings offset table")?;
    let mut d = Decbuf::new(path, body, off + 4);
    let count = d.be_u32("postings offset count")?;
    for _ in 0..count {
        let keys = d.uvarint("postings offset key count")?;
        if keys != 2 {
            return Err(d.err(format!("postings offset entry has {keys} keys, want 2")));
        }
        let name = d.uvarint_str("postings offset label name")?;
        let value = d.uvarint_str("postings offset label value")?;
        let at = d.uvarint("postings list offset")?;
        if !f(name, value, at) {
            break;
        }
    }
    Ok(())
}

/// Finds the all-postings list (key `""`, `""`), checks its CRC, and returns the file offset of its
/// first ID and the number of IDs.
fn read_all_postings(path: &Path, map: &[u8], table: u64) -> Result<(usize, u32)> {
    let mut found = None;
    walk_postings_offsets(path, map, table, |name, value, at| {
        if name.is_empty() && value.is_empty() {
            found = Some(at);
        }
        false
    })?;
    let Some(at) = found else {
        return Err(Error::corrupt(path, table, "postings offset table does not start with the all-postings key"));
    };
    let body = crc_section(path, map, at, "all-postings list")?;
    let n = be_u32_at(body, 0).ok_or_else(|| Error::corrupt(path, at, "all-postings list shorter than its count"))?;
    if body.len() as u64 != 4 + 4 * u64::from(n) {
        return Err(Error::corrupt(
            path,
            at,
            format!("all-postings list of {} bytes cannot hold {n} series IDs", body.len()),
        ));
    }
    Ok((at as usize + 8, n))
}
