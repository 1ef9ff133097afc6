//! Chunk segment files of a block (`chunks/000001`, `chunks/000002`, ...).
//!
//! Owns finding and mapping the segment files, checking their header (magic `0x85BD40DD`,
//! version 1), and resolving a chunk ref (segment index << 32 | byte offset) to the chunk's
//! encoding byte and data after checking the record's CRC32C. Decoding the data is not done here.

use std::fs::File;
use std::path::{Path, PathBuf};

use memmap2::Mmap;

use super::decbuf::{be_u32_at, uvarint};
use crate::error::{Error, Result};

/// Magic number at the start of every chunk segment file.
pub const CHUNKS_MAGIC: u32 = 0x85BD_40DD;
/// Size of a segment file's header (magic, version, 3 padding bytes).
pub const SEGMENT_HEADER_LEN: usize = 8;

/// Chunk encoding byte: XOR float chunk.
pub const ENC_XOR: u8 = 1;

/// A readable name for a chunk encoding byte.
pub fn encoding_name(encoding: u8) -> &'static str {
    match encoding {
        0 => "none",
        1 => "XOR",
        2 => "histogram",
        3 => "float histogram",
        4 => "XOR2",
        5 => "histogram with start timestamps",
        6 => "float histogram with start timestamps",
        _ => "unknown",
    }
}

/// One memory-mapped segment file.
#[derive(Debug)]
struct Segment {
    path: PathBuf,
    map: Mmap,
}

/// The segment files of one block, mapped read-only.
#[derive(Debug)]
pub struct ChunkReader {
    dir: PathBuf,
    segments: Vec<Segment>,
}

/// A chunk record as stored: its encoding byte and data, with where it was found.
#[derive(Debug, Clone, Copy)]
pub struct RawChunk<'a> {
    /// Encoding byte (1 = XOR, 2 = histogram, ...).
    pub encoding: u8,
    /// The chunk data (after the encoding byte, before the CRC).
    pub data: &'a [u8],
    /// The segment file.
    pub path: &'a Path,
    /// Offset of the record in the segment file.
    pub offset: u64,
}

impl ChunkReader {
    /// Maps every numerically named file in `dir` (a block's `chunks/` directory) in name order
    /// and checks each header. Segment index `i` of a chunk ref is the `i`-th file of that order.
    pub fn open(dir: &Path) -> Result<Self> {
        let rd = std::fs::read_dir(dir).map_err(|e| Error::io(dir, e))?;
        let mut names: Vec<(u64, PathBuf)> = Vec::new();
        for ent in rd {
            let ent = ent.map_err(|e| Error::io(dir, e))?;
            let name = ent.file_name();
            let Some(name) = name.to_str() else { continue };
            if name.is_empty() || !name.bytes().all(|b| b.is_ascii_digit()) {
                continue;
            }
            let Ok(seq) = name.parse::<u64>() else { continue };
            names.push((seq, ent.path()));
        }
        names.sort();
        let mut segments = Vec::with_capacity(names.len());
        for (_, path) in names {
            segments.push(open_segment(path)?);
        }
        Ok(ChunkReader { dir: dir.to_path_buf(), segments })
    }

    /// Number of segment files.
    pub fn num_segments(&self) -> usize {
        self.segments.len()
    }

    /// Total bytes of all segment files.
    pub fn size_bytes(&self) -> u64 {
        self.segments.iter().map(|s| s.map.len() as u64).sum()
    }

    /// Resolves `chunk_ref` and returns its record after checking the CRC32C over the encoding
    /// byte and data.
    pub fn chunk(&self, chunk_ref: u64) -> Result<RawChunk<'_>> {
        let seg_idx = chunk_ref >> 32;
        let offset = chunk_ref & 0xffff_ffff;
        let seg = usize::try_from(seg_idx).ok().and_then(|i| self.segments.get(i)).ok_or_else(|| {
            Error::corrupt(
                &self.dir,
                offset,
                format!(
                    "chunk ref {chunk_ref:#x} names segment index {seg_idx} but only {} segment files exist",
                    self.segments.len()
                ),
            )
        })?;
        let data: &[u8] = &seg.map;
        let off = offset as usize;
        let err = |reason: String| Error::corrupt(&seg.path, offset, reason);
        if off < SEGMENT_HEADER_LEN || off >= data.len() {
            return Err(err(format!(
                "chunk ref {chunk_ref:#x} points outside the chunk records of a {}-byte file",
                data.len()
            )));
        }
        let rest = &data[off..];
        let (len, k) = uvarint(rest.get(..rest.len().min(5)).unwrap_or_default())
            .ok_or_else(|| err("truncated or invalid chunk length".into()))?;
        let len = usize::try_from(len).map_err(|_| err(format!("chunk length {len} too large")))?;
        // encoding byte + data + crc
        let body = rest.get(k..).and_then(|r| r.get(..len.checked_add(5)?)).ok_or_else(|| {
            err(format!("chunk of {len} data bytes runs past the end of the file ({} bytes)", data.len()))
        })?;
        let (covered, crc_bytes) = body.split_at(len + 1);
        let stored = be_u32_at(crc_bytes, 0).unwrap_or_default();
        let computed = crc32c::crc32c(covered);
        if stored != computed {
            return Err(Error::Checksum { path: seg.path.clone(), offset, what: "chunk", stored, computed });
        }
        Ok(RawChunk { encoding: covered[0], data: &covered[1..], path: &seg.path, offset })
    }
}

fn open_segment(path: PathBuf) -> Result<Segment> {
    let file = File::open(&path).map_err(|e| Error::io(&path, e))?;
    let len = file.metadata().map_err(|e| Error::io(&path, e))?.len();
    if len < SEGMENT_HEADER_LEN as u64 {
        return Err(Error::corrupt(
            &path,
            0,
            format!("chunk segment file is {len} bytes, shorter than its 8-byte header"),
        ));
    }
    // SAFETY: the file belongs to a block, which is immutable once its directory has its final
    // name; nothing writes to or truncates it while we hold the mapping.
    let map = unsafe { Mmap::map(&file) }.map_err(|e| Error::io(&path, e))?;
    let magic = be_u32_at(&map, 0).unwrap_or_default();
    if magic != CHUNKS_MAGIC {
        return Err(Error::corrupt(
            &path,
            0,
            format!("bad chunk segment magic {magic:#010x}, want {CHUNKS_MAGIC:#010x}"),
        ));
    }
    let version = map.get(4).copied().unwrap_or_default();
    if version != 1 {
        return Err(Error::corrupt(&path, 4, format!("unsupported chunk segment version {version}, want 1")));
    }
    Ok(Segment { path, map })
}

#[cfg(test)]
#[allow(clippy::unwrap_used, clippy::expect_used)]
mod tests {
    use super::*;

    /// Writes a segment file with the given records (encoding, data) and returns their refs.
    fn write_segment(path: &Path, records: &[(u8, &[u8])]) -> Vec<u64> {
        let mut f = Vec::new();
        f.extend_from_slice(&CHUNKS_MAGIC.to_be_bytes());
        f.extend_from_slice(&[1, 0, 0, 0]);
        let mut refs = Vec::new();
        for (enc, data) in records {
            refs.push(f.len() as u64);
            let mut n = data.len() as u64;
            while n >= 0x80 {
                f.push((n as u8) | 0x80);
                n >>= 7;
            }
            f.push(n as u8);
            let start = f.len();
            f.push(*enc);
            f.extend_from_slice(data);
            let crc = crc32c::crc32c(&f[start..]);
            f.extend_from_slice(&crc.to_be_bytes());
        }
        std::fs::write(path, f).unwrap();
        refs
    }

    #[test]
    fn reads_records_and_checks_crc_and_bounds() {
        let dir = tempfile::tempdir().unwrap();
        let a = write_segment(&dir.path().join("000001"), &[(1, b"abc"), (2, &[9; 300])]);
        let b = write_segment(&dir.path().join("000002"), &[(1, b"xyz")]);
        std::fs::write(dir.path().join("notes.txt"), b"ignored").unwrap();
        let r = ChunkReader::open(dir.path()).unwrap();
        assert_eq!(r.num_segments(), 2);
        let c = r.chunk(a[0]).unwrap();
        assert_eq!((c.encoding, c.data, c.offset), (1, &b"abc"[..], 8));
        let c = r.chunk(a[1]).unwrap();
        assert_eq!((c.encoding, c.data.len()), (2, 300));
        let c = r.chunk((1 << 32) | b[0]).unwrap();
        assert_eq!(c.data, b"xyz");
        assert!(c.path.ends_with("000002"));

        let e = r.chunk(2 << 32 | 8).unwrap_err().to_string();
        assert!(e.contains("segment index 2 but only 2 segment files exist"), "{e}");
        let e = r.chunk(4).unwrap_err().to_string();
        assert!(e.contains("000001 at offset 4") && e.contains("outside the chunk records"), "{e}");
        let e = r.chunk(100_000).unwrap_err().to_string();
        assert!(e.contains("offset 100000"), "{e}");

        // flip a data byte of the first chunk
        let p = dir.path().join("000001");
        let mut bytes = std::fs::read(&p).unwrap();
        bytes[10] ^= 0x40;
        std::fs::write(&p, &bytes).unwrap();
        let r = ChunkReader::open(dir.path()).unwrap();
        let e = r.chunk(a[0]).unwrap_err().to_string();
        assert!(e.contains("000001 at offset 8: CRC32C mismatch in chunk"), "{e}");
        // chunk claiming more bytes than the file has
        bytes.truncate(bytes.len() - 2);
        std::fs::write(&p, &bytes).unwrap();
        let r = ChunkReader::open(dir.path()).unwrap();
        let e = r.chunk(a[1]).unwrap_err().to_string();
        assert!(e.contains("runs past the end of the file"), "{e}");
    }

    #[test]
    fn rejects_bad_headers() {
        let dir = tempfile::tempdir().unwrap();
        std::fs::write(dir.path().join("000001"), [0x85, 0xBD, 0x40]).unwrap();
        let e = ChunkReader::open(dir.path()).unwrap_err().to_string();
        assert!(e.contains("000001 at offset 0") && e.contains("shorter than its 8-byte header"), "{e}");
        std::fs::write(dir.path().join("000001"), [0xBA, 0xAA, 0xD7, 0x00, 1, 0, 0, 0]).unwrap();
        let e = ChunkReader::open(dir.path()).unwrap_err().to_string();
        assert!(e.contains("bad chunk segment magic 0xbaaad700"), "{e}");
        std::fs::write(dir.path().join("000001"), [0x85, 0xBD, 0x40, 0xDD, 2, 0, 0, 0]).unwrap();
        let e = ChunkReader::open(dir.path()).unwrap_err().to_string();
        assert!(e.contains("offset 4: unsupported chunk segment version 2"), "{e}");
    }
}
