//! Native reader of Prometheus TSDB blocks (index v2, XOR chunks, tombstones).
//!
//! Owns finding blocks in a Prometheus data directory ([`list_blocks`]) and reading them
//! ([`Block`]): every series in label order with its samples decoded bit-exact, overlapping chunks
//! merged and tombstones applied. Submodules own one file format each: [`index`], [`chunks`],
//! [`xor`] (chunk data), [`tombstones`]; [`block`] ties them together.
//!
//! ```no_run
//! for dir in ingest::tsdb::list_blocks("/prometheus/data")? {
//!     let block = ingest::tsdb::Block::open(&dir)?;
//!     for s in block.series() {
//!         let s = s?;
//!         println!("{} has {} samples", s.labels, s.timestamps.len());
//!     }
//! }
//! # Ok::<(), ingest::Error>(())
//! ```

pub mod block;
pub mod chunks;
mod decbuf;
pub mod index;
pub mod tombstones;
#[cfg(test)]
mod xor;

#[cfg(test)]
mod promtool_tests;
#[cfg(test)]
mod synthetic_tests;
#[cfg(test)]
pub(crate) mod testblock;

use std::path::{Path, PathBuf};

pub use block::{Block, BlockCounts, BlockSeries, TsdbSeries};
pub use index::{ChunkMeta, IndexReader, SeriesEntry};
pub use tombstones::Tombstones;

use crate::error::{Error, Result};

/// The value bits of Prometheus's stale marker (a NaN).
pub const STALE_NAN_BITS: u64 = 0x7ff0_0000_0000_0002;

/// True when `v` is Prometheus's stale marker (compares bits, not values).
pub fn is_stale_nan(v: f64) -> bool {
    v.to_bits() == STALE_NAN_BITS
}

/// True when `name` is a block directory name: a strict 26-character ULID. Names with suffixes such
/// as `.tmp-for-creation`, `.tmp-for-deletion` or `.tmp` are not.
pub fn is_block_dir_name(name: &str) -> bool {
    name.len() == 26 && ulid::Ulid::from_string(name).is_ok()
}

/// The block directories at `path`, sorted by name (ULID order). `path` is either one block
/// directory (it has a `meta.json` or an `index`, or a ULID name) or a Prometheus data
/// directory, whose ULID-named subdirectories are its blocks (`wal`, `chunks_head`, temporary
/// directories and files are skipped).
pub fn list_blocks(path: impl AsRef<Path>) -> Result<Vec<PathBuf>> {
    let path = path.as_ref();
    let md = std::fs::metadata(path).map_err(|e| Error::io(path, e))?;
    if !md.is_dir() {
        return Err(Error::BadPath { path: path.to_path_buf(), reason: "not a directory".into() });
    }
    let named_like_block = path.file_name().and_then(|n| n.to_str()).is_some_and(is_block_dir_name);
    if named_like_block || path.join("meta.json").is_file() || path.join("index").is_file() {
        return Ok(vec![path.to_path_buf()]);
    }
    let mut out = Vec::new();
    for ent in std::fs::read_dir(path).map_err(|e| Error::io(path, e))? {
        let ent = ent.map_err(|e| Error::io(path, e))?;
        let name = ent.file_name();
        let Some(name) = name.to_str() else { continue };
        if !is_block_dir_name(name) {
            continue;
        }
        let ft = ent.file_type().map_err(|e| Error::io(ent.path(), e))?;
        if ft.is_dir() {
            out.push(ent.path());
        }
    }
    out.sort();
    Ok(out)
}

#[cfg(test)]
#[allow(clippy::unwrap_used, clippy::expect_used)]
mod tests {
    use super::*;

    #[test]
    fn lists_only_ulid_dirs() {
        let d = tempfile::tempdir().unwrap();
        let a = "01M89P3PNCFPXPQTR6BA6W1ZWE";
        let b = "01HZZZZZZZZZZZZZZZZZZZZZZZ";
        for n in [
            a,
            b,
            "wal",
            "chunks_head",
            "01M89P3PNCFPXPQTR6BA6W1ZWF.tmp-for-creation",
            "01M89P3PNCFPXPQTR6BA6W1ZWG.tmp-for-deletion",
            "01M89P3PNCFPXPQTR6BA6W1ZWH.tmp",
            "01M89P3PNCFPXPQTR6BA6W1ZW",
        ] {
            std::fs::create_dir(d.path().join(n)).unwrap();
        }
        std::fs::write(d.path().join("01M89P3PNCFPXPQTR6BA6W1ZWK"), b"a file").unwrap();
        std::fs::write(d.path().join("lock"), b"").unwrap();
        let got = list_blocks(d.path()).unwrap();
        assert_eq!(got, vec![d.path().join(b), d.path().join(a)]);
        // a block dir itself
        assert_eq!(list_blocks(d.path().join(a)).unwrap(), vec![d.path().join(a)]);
        let e = list_blocks(d.path().join("lock")).unwrap_err().to_string();
        assert!(e.ends_with("lock: not a directory"), "{e}");
        let e = list_blocks(d.path().join("missing")).unwrap_err().to_string();
        assert!(e.starts_with("i/o on ") && e.contains("missing"), "{e}");
        assert!(is_stale_nan(f64::from_bits(0x7ff0_0000_0000_0002)) && !is_stale_nan(f64::NAN));
    }
}
