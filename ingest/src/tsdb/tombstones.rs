//! A block's `tombstones` file: deleted time intervals per series.
//!
//! Owns parsing the file (magic `0x0130BA30`, version 1, `{series ref uvarint, mint varint,
//! maxt varint}` entries, CRC32C over the entries only) and applying the intervals to a series'
//! samples: a sample at `t` is deleted when `mint <= t <= maxt` for one of its series' intervals.

use std::collections::HashMap;
use std::path::Path;

use super::decbuf::{Decbuf, be_u32_at};
use crate::error::{Error, Result};

/// Magic number at the start of a tombstones file.
pub const TOMBSTONES_MAGIC: u32 = 0x0130_BA30;

/// Deleted intervals, per series ref, sorted and merged.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Tombstones {
    by_series: HashMap<u64, Vec<(i64, i64)>>,
}

impl Tombstones {
    /// Reads a tombstones file; a missing file means no tombstones (as Prometheus reads it).
    pub fn read(path: &Path) -> Result<Self> {
        match std::fs::read(path) {
            Ok(b) => Self::parse(&b, path),
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(Self::default()),
            Err(e) => Err(Error::io(path, e)),
        }
    }

    /// Parses the bytes of a tombstones file; `path` names it in errors.
    pub fn parse(bytes: &[u8], path: &Path) -> Result<Self> {
        if bytes.len() < 9 {
            return Err(Error::corrupt(path, 0, format!("tombstones file is {} bytes, shorter than 9", bytes.len())));
        }
        let magic = be_u32_at(bytes, 0).unwrap_or_default();
        if magic != TOMBSTONES_MAGIC {
            return Err(Error::corrupt(
                path,
                0,
                format!("bad tombstones magic {magic:#010x}, want {TOMBSTONES_MAGIC:#010x}"),
            ));
        }
        if bytes[4] != 1 {
            return Err(Error::corrupt(path, 4, format!("unsupported tombstones version {}, want 1", bytes[4])));
        }
        let crc_at = bytes.len() - 4;
        let entries = &bytes[5..crc_at];
        let stored = be_u32_at(bytes, crc_at).unwrap_or_default();
        let computed = crc32c::crc32c(entries);
        if stored != computed {
            return Err(Error::Checksum { path: path.to_path_buf(), offset: 5, what: "tombstones", stored, computed });
        }
        let mut by_series: HashMap<u64, Vec<(i64, i64)>> = HashMap::new();
        let mut d = Decbuf::new(path, entries, 5);
        while d.remaining() > 0 {
            let series = d.uvarint("tombstone series ref")?;
            let mint = d.varint("tombstone min time")?;
            let maxt = d.varint("tombstone max time")?;
            by_series.entry(series).or_default().push((mint, maxt));
        }
        for iv in by_series.values_mut() {
            merge_intervals(iv);
        }
        Ok(Tombstones { by_series })
    }

    /// Number of series with deleted intervals.
    pub fn num_series(&self) -> usize {
        self.by_series.len()
    }

    /// True when nothing is deleted.
    pub fn is_empty(&self) -> bool {
        self.by_series.is_empty()
    }

    /// The deleted intervals of a series (inclusive, sorted, non-overlapping).
    pub fn intervals(&self, series_ref: u64) -> &[(i64, i64)] {
        self.by_series.get(&series_ref).map(Vec::as_slice).unwrap_or_default()
    }

    /// Removes the samples of `series_ref` that fall in a deleted interval. `ts` must be sorted.
    pub fn apply(&self, series_ref: u64, ts: &mut Vec<i64>, vs: &mut Vec<f64>) {
        let iv = self.intervals(series_ref);
        if !iv.is_empty() {
            drop_intervals(iv, ts, vs);
        }
    }
}

/// Sorts intervals and merges overlapping or adjacent ones.
fn merge_intervals(iv: &mut Vec<(i64, i64)>) {
    iv.retain(|&(a, b)| a <= b);
    iv.sort_unstable();
    let mut out: Vec<(i64, i64)> = Vec::with_capacity(iv.len());
    for &(a, b) in iv.iter() {
        match out.last_mut() {
            Some(last) if a <= last.1.saturating_add(1) => last.1 = last.1.max(b),
            _ => out.push((a, b)),
        }
    }
    *iv = out;
}

/// Keeps only samples outside the sorted, disjoint intervals `iv`; `ts` must be sorted.
fn drop_intervals(iv: &[(i64, i64)], ts: &mut Vec<i64>, vs: &mut Vec<f64>) {
    let mut k = 0usize;
    let mut w = 0usize;
    for r in 0..ts.len().min(vs.len()) {
        let t = ts[r];
        while k < iv.len() && iv[k].1 < t {
            k += 1;
        }
        let deleted = k < iv.len() && iv[k].0 <= t;
        if !deleted {
            ts[w] = t;
            vs[w] = vs[r];
            w += 1;
        }
    }
    ts.truncate(w);
    vs.truncate(w);
}

/// Builds the bytes of a tombstones file from (series ref, mint, maxt) entries (for tests and tools).
pub fn encode_tombstones(entries: &[(u64, i64, i64)]) -> Vec<u8> {
    let mut body = Vec::new();
    let uv = |b: &mut Vec<u8>, mut v: u64| {
        while v >= 0x80 {
            b.push((v as u8) | 0x80);
            v >>= 7;
        }
        b.push(v as u8);
    };
    for &(s, a, z) in entries {
        uv(&mut body, s);
        uv(&mut body, ((a << 1) ^ (a >> 63)) as u64);
        uv(&mut body, ((z << 1) ^ (z >> 63)) as u64);
    }
    let mut out = Vec::with_capacity(body.len() + 9);
    out.extend_from_slice(&TOMBSTONES_MAGIC.to_be_bytes());
    out.push(1);
    out.extend_from_slice(&body);
    out.extend_from_slice(&crc32c::crc32c(&body).to_be_bytes());
    out
}

#[cfg(test)]
#[allow(clippy::unwrap_used, clippy::expect_used)]
mod tests {
    use super::*;

    #[test]
    fn empty_file_is_nine_bytes() {
        let b = encode_tombstones(&[]);
        assert_eq!(b, vec![0x01, 0x30, 0xBA, 0x30, 0x01, 0, 0, 0, 0]);
        let t = Tombstones::parse(&b, Path::new("t")).unwrap();
        assert!(t.is_empty());
    }

    #[test]
    fn parses_and_applies_inclusive_intervals() {
        let b = encode_tombstones(&[(5, 100, 200), (7, -50, -10), (5, 150, 300), (5, 1000, 1000), (9, 10, 5)]);
        let t = Tombstones::parse(&b, Path::new("t")).unwrap();
        assert_eq!(t.intervals(5), &[(100, 300), (1000, 1000)]);
        assert_eq!(t.intervals(7), &[(-50, -10)]);
        assert_eq!(t.intervals(9), &[] as &[(i64, i64)]);
        assert_eq!(t.intervals(6), &[] as &[(i64, i64)]);
        let mut ts = vec![50, 99, 100, 200, 300, 301, 999, 1000, 1001];
        let mut vs: Vec<f64> = ts.iter().map(|&t| t as f64 / 10.0).collect();
        t.apply(5, &mut ts, &mut vs);
        assert_eq!(ts, vec![50, 99, 301, 999, 1001]);
        assert_eq!(vs, vec![5.0, 9.9, 30.1, 99.9, 100.1]);
        let mut ts2 = vec![-60, -50, -10, -9];
        let mut vs2 = vec![1.0, 2.0, 3.0, 4.0];
        t.apply(7, &mut ts2, &mut vs2);
        assert_eq!((ts2, vs2), (vec![-60, -9], vec![1.0, 4.0]));
    }

    #[test]
    fn rejects_corruption() {
        let p = Path::new("/b/tombstones");
        let mut b = encode_tombstones(&[(1, 2, 3)]);
        b[6] ^= 1;
        let e = Tombstones::parse(&b, p).unwrap_err().to_string();
        assert!(e.contains("/b/tombstones at offset 5: CRC32C mismatch in tombstones"), "{e}");
        let e = Tombstones::parse(&[1, 2, 3], p).unwrap_err().to_string();
        assert!(e.contains("shorter than 9"), "{e}");
        let mut b = encode_tombstones(&[]);
        b[0] = 0;
        let e = Tombstones::parse(&b, p).unwrap_err().to_string();
        assert!(e.contains("bad tombstones magic 0x0030ba30"), "{e}");
        // an entry cut short (CRC recomputed so only the truncation shows)
        let mut body = vec![0x01, 0x02];
        let mut b = vec![0x01, 0x30, 0xBA, 0x30, 0x01];
        b.append(&mut body.clone());
        b.extend_from_slice(&crc32c::crc32c(&body).to_be_bytes());
        body.clear();
        let e = Tombstones::parse(&b, p).unwrap_err().to_string();
        assert!(e.contains("offset 7: truncated while reading tombstone max time"), "{e}");
        assert!(Tombstones::read(Path::new("/nonexistent/tombstones")).unwrap().is_empty());
    }
}
