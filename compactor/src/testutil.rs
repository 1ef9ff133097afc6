//! Helpers of the compactor's tests: blocks written with the engine's writer, and every sample of
//! a bucket's visible blocks read back.
#![allow(clippy::unwrap_used)]

use std::collections::{BTreeMap, HashSet};

use engine::AggrSeries;

use engine::{BlockMeta, BlockReader, BlockWriter, BlockWriterOptions, Bucket, Labels};

/// Prometheus's stale marker.
pub(crate) const STALE: u64 = 0x7ff0_0000_0000_0002;

pub(crate) const H: i64 = 3_600_000;

/// One series: labels, timestamps, values.
pub(crate) type Series = (Labels, Vec<i64>, Vec<f64>);

/// `n` series over `[from, to)` every `step` ms (offset by the series number), with a stale
/// marker, a NaN and integer and fractional values; `seed` varies the values.
pub(crate) fn series(n: usize, from: i64, to: i64, step: i64, seed: u64) -> Vec<Series> {
    let mut out = Vec::new();
    for i in 0..n {
        let labels = Labels::from_pairs([
            ("__name__", format!("m{}", i % 3)),
            ("instance", format!("host-{i:03}")),
            ("job", if i % 2 == 0 { "a".to_string() } else { "b".to_string() }),
        ]);
        let mut ts = Vec::new();
        let mut vs = Vec::new();
        let mut t = from + (i as i64 % 7) * 1000;
        let mut k = 0u64;
        while t < to {
            ts.push(t);
            vs.push(match k % 40 {
                17 if i % 4 == 0 => f64::from_bits(STALE),
                23 if i % 5 == 0 => f64::NAN,
                _ => (k * (i as u64 + 1) + seed) as f64 * if i % 3 == 0 { 0.25 } else { 1.0 },
            });
            t += step;
            k += 1;
        }
        out.push((labels, ts, vs));
    }
    out.sort_by(|a, b| a.0.cmp(&b.0));
    out
}

/// An old ULID (time `ms`, random part `n`), so blocks pass the consistency delay.
pub(crate) fn old_ulid(ms: i64, n: u128) -> ulid::Ulid {
    ulid::Ulid::from_parts(ms as u64, n)
}

/// Writes a level-1 block of `data` over `[min, max)` with external labels `ext`.
pub(crate) async fn write_block(
    bucket: &Bucket,
    ulid: ulid::Ulid,
    min: i64,
    max: i64,
    ext: &[(&str, &str)],
    data: &[Series],
) -> BlockMeta {
    let mut o = BlockWriterOptions::new(ulid, min, max);
    o.external_labels = ext.iter().map(|(a, b)| (a.to_string(), b.to_string())).collect();
    o.source = "receive".into();
    let mut w = BlockWriter::new(bucket.clone(), o).unwrap();
    for (l, t, v) in data {
        let keep: Vec<usize> = (0..t.len()).filter(|&k| t[k] >= min && t[k] < max).collect();
        let t: Vec<i64> = keep.iter().map(|&k| t[k]).collect();
        let v: Vec<f64> = keep.iter().map(|&k| v[k]).collect();
        w.append_series(l, &t, &v).await.unwrap();
    }
    w.finish().await.unwrap()
}

/// Samples of every visible block, per (external labels + series labels, timestamp): the value
/// bits and how many blocks hold that sample.
pub(crate) async fn all_samples(bucket: &Bucket) -> BTreeMap<(String, i64), (u64, usize)> {
    let mut out: BTreeMap<(String, i64), (u64, usize)> = BTreeMap::new();
    for id in bucket.list_blocks().await.unwrap() {
        let r = BlockReader::open(bucket, &id).await.unwrap();
        let ext = r.meta().thanos.labels.clone();
        let ids: Vec<u32> = (0..r.index().len() as u32).collect();
        for s in r.read_samples(&ids, i64::MIN, i64::MAX).await.unwrap() {
            let key = format!("{ext:?}{}", r.index().labels[s.series_id as usize]);
            for (t, v) in s.timestamps.iter().zip(&s.values) {
                let e = out.entry((key.clone(), *t)).or_insert((v.to_bits(), 0));
                e.1 += 1;
            }
        }
    }
    out
}

/// ULIDs of the visible blocks.
pub(crate) async fn visible(bucket: &Bucket) -> HashSet<String> {
    bucket.list_blocks().await.unwrap().into_iter().collect()
}

/// Rows of a downsampled series as (timestamp, count, sum, min, max, counter).
pub(crate) type RefRow = (i64, u64, f64, f64, f64, f64);

/// A reference written from the definition, not from Thanos's loop: group the samples that are
/// not NaN (stale markers or other NaNs, which Thanos drops) by window end, then compute each
/// window's aggregates directly.
pub(crate) fn reference_raw(ts: &[i64], vs: &[f64], res: i64) -> Vec<RefRow> {
    let data: Vec<(i64, f64)> = ts.iter().copied().zip(vs.iter().copied()).filter(|(_, v)| !v.is_nan()).collect();
    let mut windows: BTreeMap<i64, Vec<(i64, f64)>> = BTreeMap::new();
    for &(t, v) in &data {
        windows.entry((t / res) * res + res - 1).or_default().push((t, v));
    }
    let last_t = data.last().unwrap().0;
    let mut out = Vec::new();
    for (w, samples) in windows {
        let vals: Vec<f64> = samples.iter().map(|s| s.1).collect();
        let non_nan: Vec<f64> = vals.iter().copied().filter(|v| !v.is_nan()).collect();
        let min = non_nan.iter().copied().fold(f64::MAX, f64::min);
        let max = non_nan.iter().copied().fold(-f64::MAX, f64::max);
        let sum: f64 = vals.iter().sum();
        // Counter: the reset-corrected value at the window's last sample, from the first sample.
        let upto: Vec<f64> = data.iter().filter(|s| s.0 <= samples.last().unwrap().0).map(|s| s.1).collect();
        let mut c = upto[0];
        for p in upto.windows(2) {
            c += if p[1] < p[0] { p[1] } else { p[1] - p[0] };
        }
        out.push((w.min(last_t), vals.len() as u64, sum, min, max, c));
    }
    out
}

/// The rows of `a` in the reference's shape (every row must have a counter).
pub(crate) fn rows(a: &AggrSeries) -> Vec<RefRow> {
    (0..a.len()).map(|i| (a.timestamps[i], a.count[i], a.sum[i], a.min[i], a.max[i], a.counter[i].unwrap())).collect()
}
