//! Tests on blocks built by the test-only writer: stale markers, overlapping chunks, several
//! segment files, empty blocks, and index corruption that needs a re-computed CRC.
#![allow(clippy::unwrap_used, clippy::expect_used)]

use engine::Labels;

use super::testblock::{TestSeries, write_block};
use super::*;

const ULID: &str = "01M89P3PNCFPXPQTR6BA6W1ZWE";

fn f(v: f64) -> u64 {
    v.to_bits()
}

fn fixture() -> Vec<TestSeries> {
    vec![
        TestSeries {
            labels: vec![("__name__", "up"), ("job", "a")],
            chunks: vec![vec![(1000, f(1.0)), (2000, STALE_NAN_BITS), (3000, f(2.0)), (4000, STALE_NAN_BITS)]],
        },
        TestSeries {
            labels: vec![("k", "b"), ("__name__", "m")],
            chunks: vec![
                vec![(0, f(1.0)), (10, f(2.0)), (20, f(3.0))],
                vec![(5, f(9.0)), (10, f(99.0)), (25, f(4.0))],
                vec![(30, f(5.0))],
            ],
        },
        TestSeries {
            labels: vec![("__name__", "m"), ("k", "a")],
            chunks: vec![vec![(-100, f(0.5)), (-50, f(0.25))], vec![(0, f(-1.0)), (7_200_000, f(-2.0))]],
        },
    ]
}

#[test]
fn stale_markers_overlaps_and_segments() {
    let tmp = tempfile::tempdir().unwrap();
    let dir = tmp.path().join(ULID);
    write_block(&dir, ULID, &fixture(), 2);
    let block = Block::open(&dir).unwrap();
    assert_eq!(block.chunks().num_segments(), 3);
    assert_eq!(block.num_series(), 3);
    assert_eq!(block.index().label_names().unwrap(), ["__name__", "job", "k"]);
    let series: Vec<TsdbSeries> = block.series().map(|s| s.unwrap()).collect();
    let labels: Vec<String> = series.iter().map(|s| s.labels.to_string()).collect();
    assert_eq!(labels, [r#"m{k="a"}"#, r#"m{k="b"}"#, r#"up{job="a"}"#]);

    assert_eq!(series[0].timestamps, [-100, -50, 0, 7_200_000]);
    assert_eq!(series[0].values, [0.5, 0.25, -1.0, -2.0]);
    // Overlapping chunks: merged by time, the first chunk's sample wins at t=10.
    assert_eq!(series[1].timestamps, [0, 5, 10, 20, 25, 30]);
    assert_eq!(series[1].values, [1.0, 9.0, 2.0, 3.0, 4.0, 5.0]);
    // Stale markers come through bit-exact.
    assert_eq!(series[2].timestamps, [1000, 2000, 3000, 4000]);
    let bits: Vec<u64> = series[2].values.iter().map(|v| v.to_bits()).collect();
    assert_eq!(bits, [f(1.0), STALE_NAN_BITS, f(2.0), STALE_NAN_BITS]);
    assert!(is_stale_nan(series[2].values[1]));

    // The index entry of the overlapping series holds the wrapped min-time delta.
    let e = block.index().series().nth(1).unwrap().unwrap();
    assert_eq!(e.labels, Labels::from_pairs([("__name__", "m"), ("k", "b")]));
    let spans: Vec<(i64, i64)> = e.chunks.iter().map(|c| (c.min_time, c.max_time)).collect();
    assert_eq!(spans, [(0, 20), (5, 25), (30, 30)]);
    assert_eq!(e.chunks[2].chunk_ref >> 32, 2, "third chunk of series 2 is in the third segment");

    let counts = block.decode_all().unwrap();
    assert_eq!(counts, BlockCounts { series: 3, chunks: 6, samples: 4 + 6 + 4 });
}

#[test]
fn empty_block_yields_nothing() {
    let tmp = tempfile::tempdir().unwrap();
    let dir = tmp.path().join(ULID);
    write_block(&dir, ULID, &[], 10);
    let block = Block::open(&dir).unwrap();
    assert_eq!(block.num_series(), 0);
    assert_eq!(block.series().count(), 0);
    assert_eq!(block.decode_all().unwrap(), BlockCounts::default());
    assert!(block.index().label_names().unwrap().is_empty());
    assert_eq!(list_blocks(tmp.path()).unwrap(), vec![dir]);
}

/// Rewrites the CRC32C that follows `content` at `crc_at`.
fn fix_crc(b: &mut [u8], content: std::ops::Range<usize>, crc_at: usize) {
    let crc = crc32c::crc32c(&b[content]);
    b[crc_at..crc_at + 4].copy_from_slice(&crc.to_be_bytes());
}

#[test]
fn index_corruption_with_valid_crcs_is_caught() {
    let tmp = tempfile::tempdir().unwrap();
    let dir = tmp.path().join(ULID);
    write_block(&dir, ULID, &fixture(), 2);
    let path = dir.join("index");
    let orig = std::fs::read(&path).unwrap();
    let first = Block::open(&dir).unwrap().index().series().next().unwrap().unwrap();
    let off = first.series_ref as usize * 16;
    let len = orig[off] as usize; // one-byte length for these small entries

    // A label name ref past the symbol table.
    let mut b = orig.clone();
    b[off + 2] = 0x7f;
    fix_crc(&mut b, off + 1..off + 1 + len, off + 1 + len);
    std::fs::write(&path, &b).unwrap();
    let e = Block::open(&dir).unwrap().series().next().unwrap().unwrap_err().to_string();
    assert_eq!(
        e,
        format!(
            "corrupt {} at offset {}: series ref {}: label name ref 127 is past the symbol table (7 symbols)",
            path.display(),
            off + 2,
            first.series_ref
        )
    );

    // A chunk ref naming a segment that does not exist.
    std::fs::write(&path, &orig).unwrap();
    std::fs::remove_file(dir.join("chunks").join("000003")).unwrap();
    let block = Block::open(&dir).unwrap();
    let r: Result<Vec<TsdbSeries>> = block.series().collect();
    let e = r.unwrap_err().to_string();
    assert!(e.starts_with(r#"series m{k="b"} (ref "#), "{e}");
    assert!(e.contains("names segment index 2 but only 2 segment files exist"), "{e}");

    // A TOC offset past the TOC itself, with a valid TOC CRC.
    let mut b = orig.clone();
    let toc = b.len() - 52;
    b[toc + 40..toc + 48].copy_from_slice(&u64::MAX.to_be_bytes());
    fix_crc(&mut b, toc..toc + 48, toc + 48);
    std::fs::write(&path, &b).unwrap();
    let e = Block::open(&dir).unwrap_err().to_string();
    assert!(
        e.contains(&format!("TOC offset of postings offset table ({}) is past the start of the TOC ({toc})", u64::MAX)),
        "{e}"
    );
}

#[test]
fn block_can_move_to_a_decoding_thread() {
    fn send_sync<T: Send + Sync + 'static>() {}
    send_sync::<Block>();
    let tmp = tempfile::tempdir().unwrap();
    let dir = tmp.path().join(ULID);
    write_block(&dir, ULID, &fixture(), 100);
    let block = Block::open(&dir).unwrap();
    let n =
        std::thread::spawn(move || block.series().map(|s| s.unwrap().timestamps.len()).sum::<usize>()).join().unwrap();
    assert_eq!(n, 14);
}
