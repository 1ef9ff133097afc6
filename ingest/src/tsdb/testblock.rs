//! Test-only writer of small Prometheus blocks (index v2, XOR chunks), for cases promtool cannot
//! produce: stale markers, overlapping chunks in one series, several segment files, empty blocks.
//! Written from the format description in `spec/tsdb-format.md`, independently of the reader.
#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::collections::{BTreeMap, BTreeSet};
use std::path::Path;

use super::chunks::CHUNKS_MAGIC;
use super::index::INDEX_MAGIC;
use super::xor::encoder::encode;

/// One series to write: labels (any order) and its chunks, each a list of (t, value bits).
#[derive(Debug, Clone)]
pub(crate) struct TestSeries {
    pub(crate) labels: Vec<(&'static str, &'static str)>,
    pub(crate) chunks: Vec<Vec<(i64, u64)>>,
}

fn put_uvarint(b: &mut Vec<u8>, mut v: u64) {
    while v >= 0x80 {
        b.push((v as u8) | 0x80);
        v >>= 7;
    }
    b.push(v as u8);
}

fn put_varint(b: &mut Vec<u8>, v: i64) {
    put_uvarint(b, ((v << 1) ^ (v >> 63)) as u64);
}

fn put_str(b: &mut Vec<u8>, s: &str) {
    put_uvarint(b, s.len() as u64);
    b.extend_from_slice(s.as_bytes());
}

/// Appends `len u32 | body | crc32c(body) u32`.
fn put_crc_section(out: &mut Vec<u8>, body: &[u8]) {
    out.extend_from_slice(&(body.len() as u32).to_be_bytes());
    out.extend_from_slice(body);
    out.extend_from_slice(&crc32c::crc32c(body).to_be_bytes());
}

/// Writes a block into `dir` (created): meta.json, index, chunks (a new segment file starts
/// every `chunks_per_segment` chunks), empty tombstones.
pub(crate) fn write_block(dir: &Path, ulid: &str, series: &[TestSeries], chunks_per_segment: usize) {
    std::fs::create_dir_all(dir.join("chunks")).unwrap();
    let mut sorted: Vec<(Vec<(&str, &str)>, &TestSeries)> = series
        .iter()
        .map(|s| {
            let mut l = s.labels.clone();
            l.sort();
            (l, s)
        })
        .collect();
    sorted.sort_by(|a, b| a.0.cmp(&b.0));

    // Chunk segments.
    let mut segments: Vec<Vec<u8>> = Vec::new();
    let mut refs: Vec<Vec<u64>> = Vec::new();
    let mut in_seg = usize::MAX;
    let (mut num_samples, mut num_chunks, mut min_t, mut max_t) = (0u64, 0u64, i64::MAX, i64::MIN);
    for (_, s) in &sorted {
        let mut r = Vec::new();
        for c in &s.chunks {
            if in_seg >= chunks_per_segment {
                let mut seg = CHUNKS_MAGIC.to_be_bytes().to_vec();
                seg.extend_from_slice(&[1, 0, 0, 0]);
                segments.push(seg);
                in_seg = 0;
            }
            let seg_idx = segments.len() - 1;
            let seg = segments.last_mut().unwrap();
            r.push(((seg_idx as u64) << 32) | seg.len() as u64);
            let data = encode(c);
            put_uvarint(seg, data.len() as u64);
            let start = seg.len();
            seg.push(1);
            seg.extend_from_slice(&data);
            let crc = crc32c::crc32c(&seg[start..]);
            seg.extend_from_slice(&crc.to_be_bytes());
            in_seg += 1;
            num_chunks += 1;
            num_samples += c.len() as u64;
            for &(t, _) in c {
                min_t = min_t.min(t);
                max_t = max_t.max(t);
            }
        }
        refs.push(r);
    }
    for (i, seg) in segments.iter().enumerate() {
        std::fs::write(dir.join("chunks").join(format!("{:06}", i + 1)), seg).unwrap();
    }

    // Index.
    let mut idx = INDEX_MAGIC.to_be_bytes().to_vec();
    idx.push(2);
    let symbols: BTreeSet<&str> = sorted.iter().flat_map(|(l, _)| l.iter().flat_map(|(n, v)| [*n, *v])).collect();
    let sym_pos: BTreeMap<&str, u64> = symbols.iter().enumerate().map(|(i, s)| (*s, i as u64)).collect();
    let toc_symbols = idx.len() as u64;
    let mut body = (symbols.len() as u32).to_be_bytes().to_vec();
    for s in &symbols {
        put_str(&mut body, s);
    }
    put_crc_section(&mut idx, &body);

    let toc_series = idx.len() as u64;
    let mut ids = Vec::new();
    for ((labels, s), r) in sorted.iter().zip(&refs) {
        while !idx.len().is_multiple_of(16) {
            idx.push(0);
        }
        ids.push((idx.len() / 16) as u32);
        let mut c = Vec::new();
        put_uvarint(&mut c, labels.len() as u64);
        for (n, v) in labels {
            put_uvarint(&mut c, sym_pos[n]);
            put_uvarint(&mut c, sym_pos[v]);
        }
        put_uvarint(&mut c, s.chunks.len() as u64);
        let (mut prev_max, mut prev_ref) = (0i64, 0u64);
        for (i, (ch, &cref)) in s.chunks.iter().zip(r).enumerate() {
            let (mint, maxt) = (ch.first().unwrap().0, ch.last().unwrap().0);
            if i == 0 {
                put_varint(&mut c, mint);
                put_uvarint(&mut c, (maxt - mint) as u64);
                put_uvarint(&mut c, cref);
            } else {
                // Overlapping chunks make this negative; Prometheus writes it wrapped to u64.
                put_uvarint(&mut c, mint.wrapping_sub(prev_max) as u64);
                put_uvarint(&mut c, (maxt - mint) as u64);
                put_varint(&mut c, cref.wrapping_sub(prev_ref) as i64);
            }
            prev_max = maxt;
            prev_ref = cref;
        }
        put_uvarint(&mut idx, c.len() as u64);
        idx.extend_from_slice(&c);
        idx.extend_from_slice(&crc32c::crc32c(&c).to_be_bytes());
    }
    let series_end = idx.len() as u64;
    while !idx.len().is_multiple_of(4) {
        idx.push(0);
    }
    // Postings: the all-postings list, then one per (name, value).
    let mut lists: BTreeMap<(&str, &str), Vec<u32>> = BTreeMap::new();
    lists.insert(("", ""), ids.clone());
    for ((labels, _), id) in sorted.iter().zip(&ids) {
        for (n, v) in labels {
            lists.entry((n, v)).or_default().push(*id);
        }
    }
    let mut offsets = Vec::new();
    for (key, list) in &lists {
        while !idx.len().is_multiple_of(4) {
            idx.push(0);
        }
        offsets.push((*key, idx.len() as u64));
        let mut b = (list.len() as u32).to_be_bytes().to_vec();
        for id in list {
            b.extend_from_slice(&id.to_be_bytes());
        }
        put_crc_section(&mut idx, &b);
    }
    let toc_pot = idx.len() as u64;
    let mut b = (offsets.len() as u32).to_be_bytes().to_vec();
    for ((n, v), off) in &offsets {
        put_uvarint(&mut b, 2);
        put_str(&mut b, n);
        put_str(&mut b, v);
        put_uvarint(&mut b, *off);
    }
    put_crc_section(&mut idx, &b);
    let mut toc = Vec::new();
    for o in [toc_symbols, toc_series, series_end, toc_pot, series_end, toc_pot] {
        toc.extend_from_slice(&o.to_be_bytes());
    }
    let crc = crc32c::crc32c(&toc);
    toc.extend_from_slice(&crc.to_be_bytes());
    idx.extend_from_slice(&toc);
    std::fs::write(dir.join("index"), idx).unwrap();

    std::fs::write(dir.join("tombstones"), super::tombstones::encode_tombstones(&[])).unwrap();
    let (min_t, max_t) = if num_samples == 0 { (0, 1) } else { (min_t, max_t + 1) };
    let meta = serde_json::json!({
        "ulid": ulid, "minTime": min_t, "maxTime": max_t,
        "stats": {"numSamples": num_samples, "numSeries": series.len(), "numChunks": num_chunks},
        "compaction": {"level": 1, "sources": [ulid]}, "version": 1
    });
    std::fs::write(dir.join("meta.json"), serde_json::to_vec_pretty(&meta).unwrap()).unwrap();
}
