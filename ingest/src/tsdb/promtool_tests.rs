//! Tests against real blocks written by `promtool tsdb create-blocks-from openmetrics`, checked
//! sample by sample against the OpenMetrics input and against `promtool tsdb dump`, plus
//! corruption of those blocks.
#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::process::Command;

use engine::Labels;

use super::*;

/// Go's `math.NaN()` bits, which promtool writes for a `NaN` sample.
const GO_NAN_BITS: u64 = 0x7FF8_0000_0000_0001;

type Expected = BTreeMap<Labels, Vec<(i64, u64)>>;

/// The promtool binary, or `None` (after a notice) when it is missing outside CI.
fn promtool() -> Option<PathBuf> {
    crate::testkit::peer("promtool")
}

/// OpenMetrics text with counters, gauges, NaN, infinities, a gap, irregular millisecond
/// timestamps and several label sets; and the samples it holds.
fn openmetrics() -> (String, Expected) {
    let t0 = 1_700_000_000_000i64;
    let mut text = String::new();
    let mut exp = Expected::new();
    let mut series = |text: &mut String, name: &str, labels: &[(&str, &str)], samples: Vec<(i64, f64)>| {
        let lbl: Vec<String> = labels.iter().map(|(n, v)| format!("{n}=\"{v}\"")).collect();
        for &(t, v) in &samples {
            text.push_str(&format!(
                "{name}{{{}}} {} {}.{:03}\n",
                lbl.join(","),
                engine::gofloat::format_sample_value(v),
                t / 1000,
                t % 1000
            ));
        }
        let key = Labels::from_pairs(labels.iter().copied().chain([("__name__", name)]));
        let bits = samples.iter().map(|&(t, v)| (t, if v.is_nan() { GO_NAN_BITS } else { v.to_bits() })).collect();
        assert!(exp.insert(key, bits).is_none());
    };
    text.push_str("# TYPE http_requests counter\n# HELP http_requests Requests.\n");
    for (k, lbls) in [
        [("job", "api"), ("code", "200"), ("path", "/")],
        [("job", "api"), ("code", "500"), ("path", "/")],
        [("job", "web"), ("code", "200"), ("path", "/a b ü")],
    ]
    .iter()
    .enumerate()
    {
        let mut c = 0.0f64;
        let s = (0..3000i64)
            .map(|i| {
                c = if i == 1500 { 0.0 } else { c + ((i * 31 + k as i64) % 17) as f64 * 0.5 };
                (t0 + i * 15_000 + (i * 7919 % 13), c)
            })
            .collect();
        series(&mut text, "http_requests_total", lbls, s);
    }
    text.push_str("# TYPE temperature_celsius gauge\n");
    for room in ["a", "b"] {
        let s = (0..3000i64)
            .filter(|i| room == "a" || !(500..540).contains(i))
            .map(|i| {
                let v = match i {
                    1000 => f64::INFINITY,
                    1001 => f64::NEG_INFINITY,
                    1002 => 1e300,
                    1003 => 5e-324,
                    1004 => -0.0,
                    _ if i % 250 == 7 => f64::NAN,
                    _ => ((i * 37) % 100) as f64 / 7.0 - 5.0,
                };
                (t0 + 5_000 + i * 15_000 + (i % 3) * 1_000, v)
            })
            .collect();
        series(&mut text, "temperature_celsius", &[("room", room)], s);
    }
    text.push_str("# TYPE up gauge\n");
    series(
        &mut text,
        "up",
        &[("instance", "x:9090"), ("job", "node")],
        (0..1500i64).map(|i| (t0 + i * 30_000, 1.0)).collect(),
    );
    text.push_str("# EOF\n");
    (text, exp)
}

/// Writes the OpenMetrics input and runs promtool on it; returns the temp dir and the data dir
/// holding the blocks, with the expected samples.
fn make_blocks(promtool: &Path) -> (tempfile::TempDir, PathBuf, Expected) {
    let (text, exp) = openmetrics();
    let dir = tempfile::tempdir().unwrap();
    let input = dir.path().join("input.om");
    std::fs::write(&input, text).unwrap();
    let data = dir.path().join("data");
    crate::testkit::promtool_blocks(promtool, &input, &data).unwrap();
    (dir, data, exp)
}

/// Reads every block of `data` and gathers each series' samples as (timestamp, value bits).
fn read_all(data: &Path) -> Expected {
    let mut got = Expected::new();
    for dir in list_blocks(data).unwrap() {
        let block = Block::open(&dir).unwrap();
        for s in block.series() {
            let s = s.unwrap();
            assert_eq!(s.timestamps.len(), s.values.len());
            got.entry(s.labels).or_default().extend(s.timestamps.iter().zip(&s.values).map(|(&t, v)| (t, v.to_bits())));
        }
    }
    for v in got.values_mut() {
        v.sort_by_key(|s| s.0);
    }
    got
}

#[test]
fn reads_promtool_blocks_exactly() {
    let Some(promtool) = promtool() else { return };
    let (_tmp, data, exp) = make_blocks(&promtool);
    let blocks = list_blocks(&data).unwrap();
    assert!(blocks.len() >= 6, "expected 2h blocks over 12.5h, got {}", blocks.len());

    let got = read_all(&data);
    assert_eq!(got.len(), exp.len());
    for (labels, want) in &exp {
        let have = &got[labels];
        assert_eq!(have.len(), want.len(), "{labels}");
        for (i, (h, w)) in have.iter().zip(want).enumerate() {
            assert_eq!(h, w, "{labels} sample {i}: got ({}, {:#x}) want ({}, {:#x})", h.0, h.1, w.0, w.1);
        }
    }
    let total: usize = exp.values().map(Vec::len).sum();

    let mut meta_total = 0u64;
    let mut max_chunks = 0usize;
    for dir in &blocks {
        let block = Block::open(dir).unwrap();
        let meta = block.meta().clone();
        assert_eq!(dir.file_name().unwrap().to_str().unwrap(), meta.ulid);
        let counts = block.decode_all().unwrap();
        assert_eq!(counts.samples, meta.stats.num_samples, "{}", dir.display());
        assert_eq!(counts.series, meta.stats.num_series);
        assert_eq!(counts.chunks, meta.stats.num_chunks);
        assert_eq!(block.num_series(), meta.stats.num_series);
        meta_total += meta.stats.num_samples;
        // Series come in label order, and each series' samples lie in the block's range.
        let series: Vec<TsdbSeries> = block.series().map(|s| s.unwrap()).collect();
        assert!(series.windows(2).all(|w| w[0].labels < w[1].labels));
        for s in &series {
            assert!(s.timestamps.iter().all(|&t| meta.min_time <= t && t < meta.max_time));
        }
        for e in block.index().series() {
            let e = e.unwrap();
            max_chunks = max_chunks.max(e.chunks.len());
            assert!(e.chunks.windows(2).all(|w| w[0].max_time < w[1].min_time && w[0].chunk_ref < w[1].chunk_ref));
        }
        let names = block.index().label_names().unwrap();
        assert_eq!(names, ["__name__", "code", "instance", "job", "path", "room"]);
    }
    assert_eq!(meta_total as usize, total);
    assert!(max_chunks >= 4, "a 2h block of 15s samples should hold 4 XOR chunks per series, saw {max_chunks}");

    // Special values survived bit-exactly.
    let room_a = &got[&Labels::from_pairs([("__name__", "temperature_celsius"), ("room", "a")])];
    assert_eq!(room_a[1000].1, f64::INFINITY.to_bits());
    assert_eq!(room_a[1003].1, 1u64); // 5e-324, the smallest subnormal
    assert_eq!(room_a[1004].1, (-0.0f64).to_bits());
    assert_eq!(room_a[7].1, GO_NAN_BITS);
    assert!(!is_stale_nan(f64::from_bits(room_a[7].1)));
}

/// Parses a label set printed by Go (`{a="b", c="d"}`, values quoted with Go escapes).
fn parse_go_labels(s: &str) -> Labels {
    let inner = s.strip_prefix('{').and_then(|s| s.strip_suffix('}')).unwrap();
    let mut pairs = Vec::new();
    let mut chars = inner.chars().peekable();
    loop {
        let name: String = chars.by_ref().take_while(|&c| c != '=').collect();
        assert_eq!(chars.next(), Some('"'));
        let mut value = String::new();
        while let Some(c) = chars.next() {
            match c {
                '"' => break,
                '\\' => match chars.next().unwrap() {
                    'n' => value.push('\n'),
                    c => value.push(c),
                },
                c => value.push(c),
            }
        }
        pairs.push((name.trim().to_string(), value));
        match chars.next() {
            Some(',') => assert_eq!(chars.next(), Some(' ')),
            None => break,
            Some(c) => panic!("unexpected {c:?} in {s}"),
        }
    }
    Labels::from_pairs(pairs)
}

#[test]
fn agrees_with_promtool_dump() {
    let Some(promtool) = promtool() else { return };
    let (tmp, data, _) = make_blocks(&promtool);
    std::fs::create_dir(data.join("wal")).unwrap();
    let out = Command::new(&promtool).args(["tsdb", "dump"]).arg(&data).output().unwrap();
    assert!(out.status.success(), "promtool dump failed: {}", String::from_utf8_lossy(&out.stderr));
    let text = String::from_utf8(out.stdout).unwrap();
    let mut dumped = Expected::new();
    for line in text.lines() {
        let mut parts = line.rsplitn(3, ' ');
        let t: i64 = parts.next().unwrap().parse().unwrap();
        let v: f64 = parts.next().unwrap().parse().unwrap();
        let labels = parse_go_labels(parts.next().unwrap());
        dumped.entry(labels).or_default().push((t, v.to_bits()));
    }
    for v in dumped.values_mut() {
        v.sort_by_key(|s| s.0);
    }
    // `wal/` is not a block and must not confuse the listing.
    let got = read_all(&data);
    assert_eq!(got.keys().collect::<Vec<_>>(), dumped.keys().collect::<Vec<_>>());
    let mut n = 0;
    for (labels, d) in &dumped {
        let g = &got[labels];
        assert_eq!(g.len(), d.len(), "{labels}");
        for ((gt, gv), (dt, dv)) in g.iter().zip(d) {
            assert_eq!(gt, dt, "{labels}");
            let (gv, dv) = (f64::from_bits(*gv), f64::from_bits(*dv));
            // The dump prints every NaN as "NaN"; other values print exactly.
            assert!(gv.to_bits() == dv.to_bits() || (gv.is_nan() && dv.is_nan()), "{labels} at {gt}: {gv} vs {dv}");
            n += 1;
        }
    }
    assert_eq!(n, 3 * 3000 + 3000 + 2960 + 1500);
    drop(tmp);
}

/// Copies a block directory (flat files and `chunks/`).
fn copy_block(from: &Path, to: &Path) {
    std::fs::create_dir_all(to.join("chunks")).unwrap();
    for sub in ["", "chunks"] {
        for ent in std::fs::read_dir(from.join(sub)).unwrap() {
            let ent = ent.unwrap();
            if ent.file_type().unwrap().is_file() {
                std::fs::copy(ent.path(), to.join(sub).join(ent.file_name())).unwrap();
            }
        }
    }
}

/// A fresh copy of the first promtool block, its first series entry and the path to its ULID dir.
fn scratch_block(promtool: &Path) -> (tempfile::TempDir, PathBuf, SeriesEntry) {
    let (tmp, data, _) = make_blocks(promtool);
    let first = list_blocks(&data).unwrap().remove(0);
    let dir = tmp.path().join("scratch").join(first.file_name().unwrap());
    copy_block(&first, &dir);
    let entry = Block::open(&dir).unwrap().index().series().next().unwrap().unwrap();
    (tmp, dir, entry)
}

fn first_error(dir: &Path) -> Error {
    let block = match Block::open(dir) {
        Ok(b) => b,
        Err(e) => return e,
    };
    let r: Result<Vec<TsdbSeries>> = block.series().collect();
    r.unwrap_err()
}

#[test]
fn tombstones_drop_samples_of_real_block() {
    let Some(promtool) = promtool() else { return };
    let (_tmp, dir, entry) = scratch_block(&promtool);
    let before: Vec<TsdbSeries> = Block::open(&dir).unwrap().series().map(|s| s.unwrap()).collect();
    let s0 = &before[0];
    assert_eq!(s0.series_ref, entry.series_ref);
    let (a, b) = (s0.timestamps[10], s0.timestamps[20]);
    let whole = &before[1];
    std::fs::write(
        dir.join("tombstones"),
        tombstones::encode_tombstones(&[(s0.series_ref, a, b), (whole.series_ref, i64::MIN, i64::MAX)]),
    )
    .unwrap();
    let block = Block::open(&dir).unwrap();
    assert_eq!(block.tombstones().num_series(), 2);
    let after: Vec<TsdbSeries> = block.series().map(|s| s.unwrap()).collect();
    // The fully deleted series is gone, the others are untouched except the deleted interval.
    assert_eq!(after.len(), before.len() - 1);
    assert!(after.iter().all(|s| s.labels != whole.labels));
    let s0a = &after[0];
    assert_eq!(s0a.labels, s0.labels);
    assert_eq!(s0a.timestamps.len(), s0.timestamps.len() - 11);
    assert_eq!(&s0a.timestamps[..10], &s0.timestamps[..10]);
    assert_eq!(&s0a.timestamps[10..], &s0.timestamps[21..]);
    assert_eq!(&s0a.values[10..], &s0.values[21..]);
    // NaN != NaN, so compare values by bits.
    let key = |s: &[TsdbSeries]| -> Vec<(u64, Labels, Vec<i64>, Vec<u64>)> {
        s.iter()
            .map(|s| {
                (s.series_ref, s.labels.clone(), s.timestamps.clone(), s.values.iter().map(|v| v.to_bits()).collect())
            })
            .collect()
    };
    assert!(key(&after[1..]) == key(&before[2..]), "series after the deleted ones changed");
    assert_eq!(after.len(), 5);
}

#[test]
fn corruption_gives_specific_errors() {
    let Some(promtool) = promtool() else { return };
    let (_tmp, dir, entry) = scratch_block(&promtool);
    let index = dir.join("index");
    let orig_index = std::fs::read(&index).unwrap();
    let seg = dir.join("chunks").join("000001");
    let orig_seg = std::fs::read(&seg).unwrap();
    let series = entry.labels.to_string();

    // Truncated index: the TOC is no longer the TOC.
    std::fs::write(&index, &orig_index[..orig_index.len() - 10]).unwrap();
    let e = first_error(&dir).to_string();
    let toc_at = orig_index.len() - 10 - 52;
    assert_eq!(
        e.split(" (stored").next().unwrap(),
        format!("corrupt {} at offset {toc_at}: CRC32C mismatch in TOC", index.display())
    );
    std::fs::write(&index, &orig_index[..40]).unwrap();
    let e = first_error(&dir).to_string();
    assert!(e.contains("index is 40 bytes, too short"), "{e}");

    // Index v1 and bad magic.
    let mut b = orig_index.clone();
    b[4] = 1;
    std::fs::write(&index, &b).unwrap();
    let e = first_error(&dir);
    assert!(matches!(e, Error::UnsupportedIndexVersion { version: 1, .. }), "{e}");
    assert!(e.to_string().contains("unsupported index format version 1"));
    b[4] = 2;
    b[0] = 0;
    std::fs::write(&index, &b).unwrap();
    assert!(first_error(&dir).to_string().contains("bad index magic 0x00aad700"));

    // A flipped byte inside the first series entry.
    let mut b = orig_index.clone();
    let off = entry.series_ref as usize * 16;
    b[off + 2] ^= 0x01;
    std::fs::write(&index, &b).unwrap();
    let e = first_error(&dir);
    assert!(matches!(e, Error::Checksum { what: "series entry", .. }), "{e}");
    assert!(
        e.to_string()
            .starts_with(&format!("corrupt {} at offset {off}: CRC32C mismatch in series entry", index.display())),
        "{e}"
    );
    std::fs::write(&index, &orig_index).unwrap();

    // A flipped byte inside the first chunk's data.
    let cref = entry.chunks[0].chunk_ref as usize;
    assert_eq!(cref >> 32, 0);
    let (len, k) = super::decbuf::uvarint(&orig_seg[cref..]).unwrap();
    let mut b = orig_seg.clone();
    b[cref + k + 1 + 3] ^= 0x10;
    std::fs::write(&seg, &b).unwrap();
    let e = first_error(&dir);
    let msg = e.to_string();
    assert!(
        matches!(&e, Error::InSeries { source, .. } if matches!(**source, Error::Checksum { what: "chunk", .. })),
        "{msg}"
    );
    assert!(
        msg.starts_with(&format!(
            "series {series} (ref {}): corrupt {} at offset {cref}: CRC32C mismatch in chunk",
            entry.series_ref,
            seg.display()
        )),
        "{msg}"
    );

    // Encoding byte changed to 2 (histogram), CRC fixed: unsupported, not corrupt.
    let mut b = orig_seg.clone();
    let body = cref + k;
    b[body] = 2;
    let crc = crc32c::crc32c(&b[body..body + 1 + len as usize]);
    b[body + 1 + len as usize..body + 5 + len as usize].copy_from_slice(&crc.to_be_bytes());
    std::fs::write(&seg, &b).unwrap();
    let e = first_error(&dir);
    assert!(e.is_unsupported_encoding());
    assert_eq!(
        e.to_string(),
        format!(
            "series {series} (ref {}): chunk at {} offset {cref} has unsupported encoding 2 (histogram)",
            entry.series_ref,
            seg.display()
        )
    );
    std::fs::write(&seg, &orig_seg).unwrap();

    // Bad segment header.
    let mut b = orig_seg.clone();
    b[1] = 0;
    std::fs::write(&seg, &b).unwrap();
    assert!(
        first_error(&dir)
            .to_string()
            .contains(&format!("corrupt {} at offset 0: bad chunk segment magic", seg.display()))
    );
    std::fs::write(&seg, &orig_seg).unwrap();

    // A chunk file cut short: the last series' last chunk runs past the end.
    std::fs::write(&seg, &orig_seg[..orig_seg.len() - 3]).unwrap();
    let e = first_error(&dir).to_string();
    assert!(e.contains("runs past the end of the file"), "{e}");
    std::fs::write(&seg, &orig_seg).unwrap();

    // Everything restored reads again.
    assert!(Block::open(&dir).unwrap().series().all(|s| s.is_ok()));

    // Missing files.
    std::fs::remove_file(dir.join("meta.json")).unwrap();
    let e = first_error(&dir);
    assert!(matches!(e, Error::MissingFile { what: "meta.json", .. }));
    assert_eq!(
        e.to_string(),
        format!("block {}: missing meta.json ({})", dir.display(), dir.join("meta.json").display())
    );
    std::fs::write(dir.join("meta.json"), b"{\"ulid\":").unwrap();
    let e = first_error(&dir).to_string();
    assert!(e.starts_with(&format!("bad meta.json at {}", dir.join("meta.json").display())), "{e}");
}

#[test]
fn missing_index_and_chunks_are_named() {
    let Some(promtool) = promtool() else { return };
    let (_tmp, dir, _) = scratch_block(&promtool);
    std::fs::rename(dir.join("index"), dir.join("index.bak")).unwrap();
    assert_eq!(
        first_error(&dir).to_string(),
        format!("block {}: missing index ({})", dir.display(), dir.join("index").display())
    );
    std::fs::rename(dir.join("index.bak"), dir.join("index")).unwrap();
    std::fs::rename(dir.join("chunks"), dir.join("chunks.bak")).unwrap();
    assert!(first_error(&dir).to_string().contains("missing chunks/ directory"));
    std::fs::create_dir(dir.join("chunks")).unwrap();
    // An empty chunks dir: the first chunk ref names a segment that does not exist.
    let e = first_error(&dir).to_string();
    assert!(e.contains("names segment index 0 but only 0 segment files exist"), "{e}");
}
