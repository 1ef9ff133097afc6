//! The head: recent samples in memory, durable through the [`Wal`], served as a [`SeriesSource`] and
//! cut into Parquet blocks.
//!
//! ```text
//!   append(series, samples) ──validate──► per series: closed XOR chunks + open XOR chunk (+ OOO buffer)
//!        │                     └──────────► WAL record (group commit) ──► returns when fsynced
//!   select(matchers, range) ◄── decode chunks of matching series, in label order
//!   cut(bucket) ──► [aligned window] ──► BlockWriter ──► <ulid>/ in the bucket
//!                    then: persist the cut point, drop the samples, delete covered WAL segments
//! ```
//!
//! **Memory.** Each series keeps its samples in Prometheus XOR chunks of at most
//! [`SAMPLES_PER_CHUNK`] samples, cut at block boundaries so a block cut drops whole chunks. A series
//! scraped every 15 s for 2 h holds 4 chunks; [`HeadStats::bytes`] estimates the heap used.
//!
//! **Validation** (per series, like Prometheus's appender). With `max_t` the newest sample in the
//! head when the request starts, the *min valid time* is `max(max_t - block_duration / 2, cut point)`:
//! * older than the min valid time: *too old* (unless the out-of-order window accepts it);
//! * same timestamp as the series' last sample: a no-op when the value is bit-identical (counted as
//!   accepted), else a *duplicate*;
//! * older than the series' last sample: *out of order* (unless the out-of-order window accepts it).
//!
//! With `out_of_order_window_ms > 0`, a sample at or after `max_t - window` (and the cut point) that
//! fails the in-order rules is kept in a small sorted per-series buffer instead, unless a sample with
//! the same timestamp exists (then: no-op or duplicate as above).
//!
//! Valid samples of a request are kept even when others in it are rejected; the [`AppendReport`]
//! counts each kind and names the first rejected series. The call returns once the accepted samples
//! are durable in the WAL (even for a request that only repeated existing samples, it waits for
//! earlier records to be durable). If the WAL breaks, samples already applied in memory stay visible
//! but the append fails; every later append fails too.
//!
//! **Cutting.** Blocks are aligned to multiples of `block_duration_ms` from the epoch. A window
//! `[start, start + D)` is cut once the head's newest sample is more than `1.5 D` past `start` (as
//! Prometheus does), so no in-order sample can still land in it. The cut point is raised first (the
//! window is frozen), the WAL rotates, the block is written, the cut point is persisted in
//! `<dir>/head.json`, the samples are dropped and only then are WAL segments holding nothing at or
//! after the window end deleted. A crash after the upload but before `head.json` is written replays
//! those samples again (the next cut uploads an overlapping block with the same samples, which
//! queriers deduplicate); no acknowledged sample is lost.

use std::borrow::Cow;
use std::collections::{BTreeMap, BTreeSet, HashMap};
use std::hash::{BuildHasher, Hasher};
use std::ops::Bound;
use std::path::{Path, PathBuf};
use std::sync::{Arc, RwLock};

use async_trait::async_trait;
use hashbrown::{HashTable, hash_table};

use crate::bucket::Bucket;
use crate::chunkenc::{self, SAMPLES_PER_CHUNK, XorEncoder};
use crate::error::{Error, Result};
use crate::labels::{Labels, MatchOp, Matcher, matches_all};
use crate::meta::BlockMeta;
use crate::source::{SelectRequest, SeriesBatch, SeriesSource, SeriesStream};
use crate::wal::{PendingAppend, Wal, WalBatch, WalOptions};
use crate::writer::{BlockWriter, BlockWriterOptions};

/// One series with its timestamps and values.
type SeriesSamples = (Labels, Vec<i64>, Vec<f64>);

/// Default block duration: 2 hours.
pub const DEFAULT_BLOCK_DURATION_MS: i64 = 2 * 3600 * 1000;
/// Series per batch in [`Head::select`](SeriesSource::select) answers and per lock hold in cuts.
const BATCH_SERIES: usize = 1024;
const STATE_FILE: &str = "head.json";

/// Settings of a [`Head`].
#[derive(Debug, Clone, PartialEq)]
pub struct HeadOptions {
    /// Directory of the head: the WAL lives in `<dir>/wal`, the cut point in `<dir>/head.json`.
    pub dir: PathBuf,
    /// Block length and alignment in ms (default 2 h).
    pub block_duration_ms: i64,
    /// External labels written to cut blocks' `meta.json` (`thanos.labels`).
    pub external_labels: BTreeMap<String, String>,
    /// The `thanos.source` of cut blocks (e.g. `receive`).
    pub source: String,
    /// How far behind the newest sample out-of-order samples are accepted (ms); 0 disables.
    pub out_of_order_window_ms: i64,
}

impl HeadOptions {
    /// Defaults: 2 h blocks, no external labels, source `receive`, no out-of-order window.
    pub fn new(dir: impl Into<PathBuf>) -> Self {
        HeadOptions {
            dir: dir.into(),
            block_duration_ms: DEFAULT_BLOCK_DURATION_MS,
            external_labels: BTreeMap::new(),
            source: "receive".into(),
            out_of_order_window_ms: 0,
        }
    }
}

/// Outcome of one [`Head::append`].
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct AppendReport {
    /// Samples accepted (including bit-identical repeats, which are no-ops).
    pub accepted: usize,
    /// Samples older than their series' last sample.
    pub out_of_order: usize,
    /// Samples with an existing timestamp but a different value.
    pub duplicate: usize,
    /// Samples older than the head's min valid time.
    pub too_old: usize,
    /// The first rejection, naming the series, e.g. `out of order sample for series up{job="a"} ...`.
    pub first_error: Option<String>,
}

impl AppendReport {
    /// Samples rejected for any reason.
    pub fn rejected(&self) -> usize {
        self.out_of_order + self.duplicate + self.too_old
    }
}

/// One series of a [`Head::append_series`], borrowed from the caller (e.g. a decoded request).
///
/// `labels` must be a valid label set as a [`Labels`] holds it: sorted by name, names unique, no
/// empty values. The head looks the series up by these pairs and copies them only for a series it
/// has not seen; a set that is not in that form is refused (an error for the whole append).
#[derive(Debug, Clone, Copy)]
pub struct AppendSeries<'a> {
    /// The labels, sorted by name.
    pub labels: &'a [(&'a str, &'a str)],
    /// The samples `(timestamp ms, value)`, in the order they arrived.
    pub samples: &'a [(i64, f64)],
}

/// Samples of one point per series (rule results) in the borrowed form [`AppendSeries`] takes.
#[derive(Debug)]
pub struct SinglePoints<'a> {
    pairs: Vec<Vec<(&'a str, &'a str)>>,
    points: Vec<[(i64, f64); 1]>,
}

impl<'a> SinglePoints<'a> {
    /// Borrows the labels of `samples` `(labels, t ms, value)`.
    pub fn new(samples: &'a [(Labels, i64, f64)]) -> Self {
        SinglePoints {
            pairs: samples
                .iter()
                .map(|(l, _, _)| l.iter().map(|l| (l.name.as_str(), l.value.as_str())).collect())
                .collect(),
            points: samples.iter().map(|(_, t, v)| [(*t, *v)]).collect(),
        }
    }

    /// The series to append.
    pub fn series(&self) -> Vec<AppendSeries<'_>> {
        self.pairs.iter().zip(&self.points).map(|(labels, samples)| AppendSeries { labels, samples }).collect()
    }
}

/// Size and range of the head.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct HeadStats {
    /// Series held.
    pub series: usize,
    /// Samples held.
    pub samples: u64,
    /// XOR chunks held (closed and open).
    pub chunks: usize,
    /// Oldest sample timestamp, if any.
    pub min_t: Option<i64>,
    /// Newest sample timestamp, if any.
    pub max_t: Option<i64>,
    /// Bytes of chunk data (encoded samples).
    pub chunk_bytes: usize,
    /// Estimated heap bytes of the whole head: labels, series structs, index and chunks.
    pub bytes: usize,
    /// Samples below this timestamp are refused (already cut into blocks).
    pub cut_point: i64,
}

/// A closed chunk.
#[derive(Debug)]
struct Chunk {
    min_t: i64,
    max_t: i64,
    data: Box<[u8]>,
}

impl Chunk {
    fn num_samples(&self) -> usize {
        self.data.get(..2).map_or(0, |h| usize::from(u16::from_be_bytes([h[0], h[1]])))
    }
}

/// One series in memory.
#[derive(Debug)]
struct MemSeries {
    series_ref: u64,
    closed: Vec<Chunk>,
    open: XorEncoder,
    open_min_t: i64,
    /// End of the block window holding `open_min_t`: the open chunk is closed before a sample at or
    /// after it (computed once per chunk; it was a division per sample).
    open_end: i64,
    /// Out-of-order samples, sorted, no timestamp shared with each other or with the chunks.
    ooo: Vec<(i64, f64)>,
}

enum Outcome {
    Stored,
    Noop,
    OutOfOrder,
    Duplicate,
    TooOld,
}

/// Appends the samples of a head chunk to `ts` and `vs`.
/// End of the aligned block window holding `t`.
fn window_end(t: i64, block_ms: i64) -> i64 {
    (t.div_euclid(block_ms) + 1).saturating_mul(block_ms)
}

fn decode_chunk(data: &[u8], series: &Labels, ts: &mut Vec<i64>, vs: &mut Vec<f64>) -> Result<()> {
    chunkenc::decode_into(data, ts, vs)
        .map(|_| ())
        .map_err(|e| Error::BadChunk { chunk: format!("in head series {series}"), reason: e.to_string() })
}

/// The samples of a head chunk.
fn chunk_samples(data: &[u8], series: &Labels) -> Result<(Vec<i64>, Vec<f64>)> {
    let (mut ts, mut vs) = (Vec::new(), Vec::new());
    decode_chunk(data, series, &mut ts, &mut vs)?;
    Ok((ts, vs))
}

impl MemSeries {
    fn new(series_ref: u64) -> Self {
        MemSeries {
            series_ref,
            closed: Vec::new(),
            open: XorEncoder::new(),
            open_min_t: 0,
            open_end: i64::MAX,
            ooo: Vec::new(),
        }
    }

    /// Timestamp of the last in-order sample; `i64::MIN` when none. The open chunk always holds the
    /// newest in-order sample: it is only empty when the series has no in-order samples at all.
    fn last_t(&self) -> i64 {
        if self.open.num_samples() > 0 { self.open.last_t() } else { i64::MIN }
    }

    fn num_samples(&self) -> usize {
        self.closed.iter().map(Chunk::num_samples).sum::<usize>() + self.open.num_samples() + self.ooo.len()
    }

    fn is_empty(&self) -> bool {
        self.closed.is_empty() && self.open.num_samples() == 0 && self.ooo.is_empty()
    }

    fn min_t(&self) -> Option<i64> {
        let c = self.closed.first().map(|c| c.min_t).or((self.open.num_samples() > 0).then_some(self.open_min_t));
        match (c, self.ooo.first().map(|s| s.0)) {
            (Some(a), Some(b)) => Some(a.min(b)),
            (a, b) => a.or(b),
        }
    }

    fn max_t(&self) -> Option<i64> {
        let c = (self.open.num_samples() > 0).then_some(self.open.last_t());
        match (c, self.ooo.last().map(|s| s.0)) {
            (Some(a), Some(b)) => Some(a.max(b)),
            (a, b) => a.or(b),
        }
    }

    fn close_open(&mut self) {
        if self.open.num_samples() > 0 {
            let enc = std::mem::take(&mut self.open);
            let max_t = enc.last_t();
            self.closed.push(Chunk { min_t: self.open_min_t, max_t, data: enc.into_bytes() });
        }
    }

    fn append_in_order(&mut self, t: i64, v: f64, block_ms: i64) -> Result<(), String> {
        if self.open.num_samples() > 0 && (self.open.num_samples() >= SAMPLES_PER_CHUNK || t >= self.open_end) {
            self.close_open();
        }
        if self.open.num_samples() == 0 {
            self.open_min_t = t;
            self.open_end = window_end(t, block_ms);
            // Size the buffer like the previous chunk to avoid doubling growth.
            if let Some(prev) = self.closed.last() {
                self.open = XorEncoder::with_capacity(prev.data.len() + prev.data.len() / 8);
            }
        }
        self.open.append(t, v).map_err(|e| e.to_string())?;
        Ok(())
    }

    /// The value bits stored at exactly `t`, if any.
    fn lookup(&self, t: i64, labels: &Labels) -> Result<Option<u64>> {
        if let Ok(i) = self.ooo.binary_search_by_key(&t, |s| s.0) {
            return Ok(Some(self.ooo[i].1.to_bits()));
        }
        let open = (self.open.num_samples() > 0).then_some((self.open_min_t, self.open.last_t(), self.open.bytes()));
        for (lo, hi, data) in self.closed.iter().map(|c| (c.min_t, c.max_t, &c.data[..])).chain(open) {
            if lo <= t && t <= hi {
                let (ts, vs) = chunk_samples(data, labels)?;
                if let Ok(i) = ts.binary_search(&t) {
                    return Ok(Some(vs[i].to_bits()));
                }
            }
        }
        Ok(None)
    }

    /// Samples in `[min_t, max_t]`, merged with the out-of-order buffer.
    fn samples_in(&self, min_t: i64, max_t: i64, labels: &Labels) -> Result<(Vec<i64>, Vec<f64>)> {
        let (mut ts, mut vs) = (Vec::new(), Vec::new());
        let open = (self.open.num_samples() > 0).then_some((self.open_min_t, self.open.last_t(), self.open.bytes()));
        for (lo, hi, data) in self.closed.iter().map(|c| (c.min_t, c.max_t, &c.data[..])).chain(open) {
            if hi < min_t || lo > max_t {
                continue;
            }
            let start = ts.len();
            decode_chunk(data, labels, &mut ts, &mut vs)?;
            // keep [min_t, max_t] of what was appended (a chunk is sorted)
            let a = start + ts[start..].partition_point(|&t| t < min_t);
            let b = start + ts[start..].partition_point(|&t| t <= max_t);
            ts.truncate(b);
            vs.truncate(b);
            ts.drain(start..a);
            vs.drain(start..a);
        }
        let a = self.ooo.partition_point(|s| s.0 < min_t);
        let b = self.ooo.partition_point(|s| s.0 <= max_t);
        if a < b {
            let mut merged: Vec<(i64, f64)> = ts.into_iter().zip(vs).chain(self.ooo[a..b].iter().copied()).collect();
            merged.sort_by_key(|s| s.0);
            return Ok((merged.iter().map(|s| s.0).collect(), merged.iter().map(|s| s.1).collect()));
        }
        Ok((ts, vs))
    }

    fn has_data_in(&self, min_t: i64, max_t: i64, labels: &Labels) -> Result<bool> {
        if self.ooo.iter().any(|s| s.0 >= min_t && s.0 <= max_t) {
            return Ok(true);
        }
        let open = (self.open.num_samples() > 0).then_some((self.open_min_t, self.open.last_t(), self.open.bytes()));
        for (lo, hi, data) in self.closed.iter().map(|c| (c.min_t, c.max_t, &c.data[..])).chain(open) {
            if hi < min_t || lo > max_t {
                continue;
            }
            if lo >= min_t || hi <= max_t {
                return Ok(true);
            }
            if chunk_samples(data, labels)?.0.iter().any(|&t| t >= min_t && t <= max_t) {
                return Ok(true);
            }
        }
        Ok(false)
    }

    /// Drops every sample before `end`; returns how many were dropped.
    fn drop_before(&mut self, end: i64, labels: &Labels, block_ms: i64) -> Result<usize> {
        let before = self.num_samples();
        self.ooo.retain(|s| s.0 >= end);
        self.close_open();
        let mut kept = Vec::with_capacity(self.closed.len());
        for c in std::mem::take(&mut self.closed) {
            if c.max_t < end {
                continue;
            }
            if c.min_t >= end {
                kept.push(c);
                continue;
            }
            // Straddles `end` (only after a forced cut at an unaligned point): re-encode the rest.
            let mut enc = XorEncoder::new();
            let mut lo = None;
            let (ts, vs) = chunk_samples(&c.data, labels)?;
            for (t, v) in ts.into_iter().zip(vs) {
                if t >= end {
                    lo.get_or_insert(t);
                    enc.append(t, v)?;
                }
            }
            if let Some(lo) = lo {
                kept.push(Chunk { min_t: lo, max_t: c.max_t, data: enc.into_bytes() });
            }
        }
        self.closed = kept;
        if let Some(c) = self.closed.pop() {
            // Reopen the newest chunk so appends continue it.
            let mut enc = XorEncoder::new();
            let (ts, vs) = chunk_samples(&c.data, labels)?;
            for (t, v) in ts.into_iter().zip(vs) {
                enc.append(t, v)?;
            }
            self.open_min_t = c.min_t;
            self.open_end = window_end(c.min_t, block_ms);
            self.open = enc;
        }
        self.closed.shrink_to_fit();
        Ok(before - self.num_samples())
    }

    fn heap_bytes(&self) -> usize {
        self.closed.capacity() * std::mem::size_of::<Chunk>()
            + self.closed.iter().map(|c| c.data.len()).sum::<usize>()
            + self.open.heap_bytes()
            + self.ooo.capacity() * std::mem::size_of::<(i64, f64)>()
    }
}

/// A series in the head's hash table, with its hash (kept so the table grows without rehashing).
#[derive(Debug)]
struct Entry {
    hash: u64,
    labels: Arc<Labels>,
    series: MemSeries,
}

/// True when `pairs` are exactly the labels of `l`.
fn same_labels(l: &Labels, pairs: &[(&str, &str)]) -> bool {
    l.len() == pairs.len() && l.iter().zip(pairs).all(|(a, b)| a.name == b.0 && a.value == b.1)
}

/// The mutable state behind the head's lock.
#[derive(Debug)]
struct State {
    /// Series by a hash of their labels: appends find their series with one lookup over the
    /// borrowed label pairs of a request.
    series: HashTable<Entry>,
    /// Hashes the label pairs for `series` (fast, randomly seeded; in memory only: nothing stored
    /// depends on it).
    hasher: hashbrown::DefaultHashBuilder,
    /// The same series in label order, for selects and cuts.
    order: BTreeSet<Arc<Labels>>,
    /// Inverted index: label name -> value -> refs of the series with that pair, ascending
    /// (refs only grow, so appending keeps the order). Selects with `=` matchers start from the
    /// intersection of their lists instead of testing every series.
    postings: HashMap<String, HashMap<String, Vec<u64>>>,
    /// The series' labels by ref, for the postings.
    by_ref: HashMap<u64, Arc<Labels>>,
    next_ref: u64,
    min_t: i64,
    max_t: i64,
    samples: u64,
    cut_point: i64,
}

/// Adds series `r` with `labels` to the postings.
fn index(
    postings: &mut HashMap<String, HashMap<String, Vec<u64>>>,
    by_ref: &mut HashMap<u64, Arc<Labels>>,
    r: u64,
    labels: &Arc<Labels>,
) {
    for l in labels.iter() {
        let values = match postings.get_mut(l.name.as_str()) {
            Some(v) => v,
            None => postings.entry(l.name.clone()).or_default(),
        };
        match values.get_mut(l.value.as_str()) {
            Some(refs) => refs.push(r),
            None => {
                values.insert(l.value.clone(), vec![r]);
            }
        }
    }
    by_ref.insert(r, Arc::clone(labels));
}

impl State {
    fn new(cut_point: i64) -> Self {
        State {
            series: HashTable::new(),
            hasher: hashbrown::DefaultHashBuilder::default(),
            order: BTreeSet::new(),
            postings: HashMap::new(),
            by_ref: HashMap::new(),
            next_ref: 1,
            min_t: i64::MAX,
            max_t: i64::MIN,
            samples: 0,
            cut_point,
        }
    }

    fn hash_pairs<'a>(&self, pairs: impl Iterator<Item = (&'a str, &'a str)>) -> u64 {
        let mut h = self.hasher.build_hasher();
        for (n, v) in pairs {
            h.write(n.as_bytes());
            h.write_u8(0xff);
            h.write(v.as_bytes());
            h.write_u8(0xff);
        }
        h.finish()
    }

    fn hash_labels(&self, labels: &Labels) -> u64 {
        self.hash_pairs(labels.iter().map(|l| (l.name.as_str(), l.value.as_str())))
    }

    /// The series with these labels, if the head holds it.
    fn get(&self, labels: &Labels) -> Option<&MemSeries> {
        let hash = self.hash_labels(labels);
        self.series.find(hash, |e| e.hash == hash && *e.labels == *labels).map(|e| &e.series)
    }

    /// The series with these label pairs, created (labels copied) when new.
    fn entry_pairs(&mut self, pairs: &[(&str, &str)]) -> Result<(Arc<Labels>, &mut MemSeries)> {
        let hash = self.hash_pairs(pairs.iter().copied());
        let e = match self.series.entry(hash, |e| e.hash == hash && same_labels(&e.labels, pairs), |e| e.hash) {
            hash_table::Entry::Occupied(o) => o.into_mut(),
            hash_table::Entry::Vacant(v) => {
                let labels = Labels::from_pairs(pairs.iter().copied());
                if !same_labels(&labels, pairs) {
                    return Err(Error::BadLabels {
                        labels: labels.to_string(),
                        reason: "an appended label set must be sorted by name with unique names and no empty values"
                            .into(),
                    });
                }
                let labels = Arc::new(labels);
                self.order.insert(Arc::clone(&labels));
                let r = self.next_ref;
                self.next_ref += 1;
                index(&mut self.postings, &mut self.by_ref, r, &labels);
                v.insert(Entry { hash, labels, series: MemSeries::new(r) }).into_mut()
            }
        };
        Ok((Arc::clone(&e.labels), &mut e.series))
    }

    /// The series with these labels (replay), created when new.
    fn entry(&mut self, labels: &Arc<Labels>) -> (Arc<Labels>, &mut MemSeries) {
        let hash = self.hash_labels(labels);
        let e = match self.series.entry(hash, |e| e.hash == hash && e.labels == *labels, |e| e.hash) {
            hash_table::Entry::Occupied(o) => o.into_mut(),
            hash_table::Entry::Vacant(v) => {
                self.order.insert(Arc::clone(labels));
                let r = self.next_ref;
                self.next_ref += 1;
                index(&mut self.postings, &mut self.by_ref, r, labels);
                v.insert(Entry { hash, labels: Arc::clone(labels), series: MemSeries::new(r) }).into_mut()
            }
        };
        (Arc::clone(&e.labels), &mut e.series)
    }

    fn remove(&mut self, labels: &Labels) {
        let hash = self.hash_labels(labels);
        if let Ok(e) = self.series.find_entry(hash, |e| e.hash == hash && *e.labels == *labels) {
            let r = e.get().series.series_ref;
            e.remove();
            self.by_ref.remove(&r);
            for l in labels.iter() {
                let Some(values) = self.postings.get_mut(l.name.as_str()) else { continue };
                if let Some(refs) = values.get_mut(l.value.as_str()) {
                    if let Ok(i) = refs.binary_search(&r) {
                        refs.remove(i);
                    }
                    if refs.is_empty() {
                        values.remove(l.value.as_str());
                    }
                }
                if values.is_empty() {
                    self.postings.remove(l.name.as_str());
                }
            }
        }
        self.order.remove(labels);
    }

    /// The series that may match `matchers`, in label order, when an `=` matcher with a
    /// non-empty value, or a `=~` matcher whose regex is a set of non-empty strings
    /// ([`Matcher::literal_set`]), narrows them through the postings (every matcher is still to be
    /// tested); None when no matcher does (then every series is a candidate).
    fn candidates(&self, matchers: &[Matcher]) -> Option<Vec<&Arc<Labels>>> {
        let mut lists: Vec<Cow<'_, [u64]>> = Vec::new();
        for m in matchers {
            let values = self.postings.get(m.name.as_str());
            let list = |v: &str| values.and_then(|vs| vs.get(v)).map_or(&[][..], Vec::as_slice);
            match (m.op, m.literal_set()) {
                (MatchOp::Equal, _) if !m.value.is_empty() => lists.push(Cow::Borrowed(list(&m.value))),
                (MatchOp::RegexMatch, Some(set)) if !m.matches("") => {
                    let mut refs: Vec<u64> = set.iter().flat_map(|v| list(v)).copied().collect();
                    refs.sort_unstable();
                    refs.dedup();
                    lists.push(Cow::Owned(refs));
                }
                _ => continue,
            }
            if lists.last().is_some_and(|l| l.is_empty()) {
                return Some(Vec::new());
            }
        }
        lists.sort_by_key(|l| l.len());
        let (first, rest) = lists.split_first()?;
        let mut out: Vec<&Arc<Labels>> = first
            .iter()
            .filter(|r| rest.iter().all(|l| l.binary_search(r).is_ok()))
            .filter_map(|r| self.by_ref.get(r))
            .collect();
        out.sort_unstable();
        Some(out)
    }

    fn note_stored(&mut self, t: i64) {
        self.min_t = self.min_t.min(t);
        self.max_t = self.max_t.max(t);
        self.samples += 1;
    }

    fn recompute_range(&mut self) {
        self.min_t = self.series.iter().filter_map(|e| e.series.min_t()).min().unwrap_or(i64::MAX);
        self.max_t = self.series.iter().filter_map(|e| e.series.max_t()).max().unwrap_or(i64::MIN);
        self.samples = self.series.iter().map(|e| e.series.num_samples() as u64).sum();
    }

    /// Applies a replayed sample: in order when newer, into the OOO buffer when older and new.
    fn replay(&mut self, labels: &Arc<Labels>, samples: &[(i64, f64)], block_ms: i64) -> Result<()> {
        let cut = self.cut_point;
        let (key, s) = self.entry(labels);
        let mut stored = Vec::new();
        for &(t, v) in samples {
            if t < cut {
                continue;
            }
            if s.last_t() == i64::MIN || t > s.last_t() {
                s.append_in_order(t, v, block_ms)
                    .map_err(|reason| Error::BadChunk { chunk: format!("in head series {key}"), reason })?;
                stored.push(t);
            } else if s.lookup(t, &key)?.is_none() {
                let i = s.ooo.partition_point(|x| x.0 < t);
                s.ooo.insert(i, (t, v));
                stored.push(t);
            }
        }
        if s.is_empty() {
            self.remove(&key);
        }
        for t in stored {
            self.note_stored(t);
        }
        Ok(())
    }
}

/// The in-memory head. See the module docs. Cheap to share: [`Head::open`] returns an `Arc`.
pub struct Head {
    opts: HeadOptions,
    state: RwLock<State>,
    wal: Wal,
    /// One cut at a time.
    cut_lock: tokio::sync::Mutex<()>,
}

impl std::fmt::Debug for Head {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Head").field("dir", &self.opts.dir).field("stats", &self.stats()).finish()
    }
}

#[derive(serde::Serialize, serde::Deserialize)]
struct PersistedState {
    cut_point: i64,
}

fn io_err(path: &Path, e: std::io::Error) -> Error {
    Error::Io { path: path.to_path_buf(), source: e }
}

fn read_cut_point(dir: &Path) -> Result<i64> {
    let p = dir.join(STATE_FILE);
    match std::fs::read(&p) {
        Ok(b) => serde_json::from_slice::<PersistedState>(&b)
            .map(|s| s.cut_point)
            .map_err(|e| Error::Head { dir: dir.to_path_buf(), reason: format!("cannot parse {}: {e}", p.display()) }),
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(i64::MIN),
        Err(e) => Err(io_err(&p, e)),
    }
}

fn write_cut_point(dir: &Path, cut_point: i64) -> Result<()> {
    use std::io::Write;
    let p = dir.join(STATE_FILE);
    let tmp = dir.join(format!("{STATE_FILE}.tmp"));
    let body = serde_json::to_vec(&PersistedState { cut_point })
        .map_err(|e| Error::Head { dir: dir.to_path_buf(), reason: format!("encoding {STATE_FILE}: {e}") })?;
    let mut f = std::fs::File::create(&tmp).map_err(|e| io_err(&tmp, e))?;
    f.write_all(&body).and_then(|_| f.sync_all()).map_err(|e| io_err(&tmp, e))?;
    std::fs::rename(&tmp, &p).map_err(|e| io_err(&p, e))?;
    std::fs::File::open(dir).and_then(|d| d.sync_all()).map_err(|e| io_err(dir, e))
}

impl Head {
    /// Opens the head in `opts.dir` (created if missing) and replays its WAL.
    pub async fn open(opts: HeadOptions) -> Result<Arc<Head>> {
        if opts.block_duration_ms <= 0 || opts.out_of_order_window_ms < 0 {
            return Err(Error::Head {
                dir: opts.dir.clone(),
                reason: format!(
                    "block_duration_ms must be positive (got {}) and out_of_order_window_ms not negative (got {})",
                    opts.block_duration_ms, opts.out_of_order_window_ms
                ),
            });
        }
        let o = opts.clone();
        let (state, wal) = tokio::task::spawn_blocking(move || -> Result<(State, Wal)> {
            std::fs::create_dir_all(&o.dir).map_err(|e| io_err(&o.dir, e))?;
            let mut state = State::new(read_cut_point(&o.dir)?);
            let mut failed = None;
            let (wal, stats) = Wal::open(&WalOptions::new(o.dir.join("wal")), |l, s| {
                if failed.is_none()
                    && let Err(e) = state.replay(l, s, o.block_duration_ms)
                {
                    failed = Some(e);
                }
            })?;
            if let Some(e) = failed {
                return Err(e);
            }
            tracing::info!(
                dir = %o.dir.display(), segments = stats.segments, records = stats.records,
                samples = stats.samples, truncated_bytes = stats.truncated_bytes, series = state.series.len(),
                "head replayed its WAL"
            );
            Ok((state, wal))
        })
        .await
        .map_err(|e| Error::Head { dir: opts.dir.clone(), reason: format!("WAL replay task failed: {e}") })??;
        Ok(Arc::new(Head { opts, state: RwLock::new(state), wal, cut_lock: tokio::sync::Mutex::new(()) }))
    }

    /// The options the head was opened with.
    pub fn options(&self) -> &HeadOptions {
        &self.opts
    }

    /// Appends samples (per series, in any order); returns once the accepted ones are durable in
    /// the WAL. Validation and the handling of partly rejected requests are in the module docs.
    pub async fn append(&self, series: &[(Labels, Vec<(i64, f64)>)]) -> Result<AppendReport> {
        let pairs: Vec<Vec<(&str, &str)>> =
            series.iter().map(|(l, _)| l.iter().map(|l| (l.name.as_str(), l.value.as_str())).collect()).collect();
        let refs: Vec<AppendSeries<'_>> =
            pairs.iter().zip(series).map(|(p, (_, s))| AppendSeries { labels: p, samples: s }).collect();
        self.append_series(&refs).await
    }

    /// Like [`Head::append`], over borrowed series: labels are copied only for series the head has
    /// not seen yet.
    pub async fn append_series(&self, series: &[AppendSeries<'_>]) -> Result<AppendReport> {
        let (rep, pending) = self.submit_series(series)?;
        pending.wait().await?;
        Ok(rep)
    }

    /// Like [`Head::append_series`], but returns as soon as the samples are in memory (queryable)
    /// and their WAL record is queued; the record is durable once the returned handle resolves
    /// (or after any later [`Head::sync`]). For writers that, like Prometheus's rule manager,
    /// need the samples visible at once and durable only eventually.
    pub fn submit_series(&self, series: &[AppendSeries<'_>]) -> Result<(AppendReport, PendingAppend)> {
        let mut rep = AppendReport::default();
        let block_ms = self.opts.block_duration_ms;
        let pending = {
            let mut st = self.state.write().unwrap_or_else(|p| p.into_inner());
            let head_max = st.max_t;
            let min_valid = if head_max == i64::MIN {
                st.cut_point
            } else {
                st.cut_point.max(head_max.saturating_sub(block_ms / 2))
            };
            let ooo_min = if self.opts.out_of_order_window_ms > 0 && head_max != i64::MIN {
                st.cut_point.max(head_max.saturating_sub(self.opts.out_of_order_window_ms))
            } else if self.opts.out_of_order_window_ms > 0 {
                st.cut_point
            } else {
                i64::MAX
            };
            let mut batch = WalBatch::with_capacity(series.len(), series.iter().map(|s| s.samples.len()).sum());
            for one in series {
                if one.samples.is_empty() {
                    continue;
                }
                let (key, s) = st.entry_pairs(one.labels)?;
                for &(t, v) in one.samples {
                    let last = s.last_t();
                    let outcome = if t < min_valid && t < ooo_min {
                        Outcome::TooOld
                    } else if last != i64::MIN && t == last {
                        if s.open.last_v().to_bits() == v.to_bits() { Outcome::Noop } else { Outcome::Duplicate }
                    } else if (last != i64::MIN && t < last) || t < min_valid {
                        // Not appendable in order: only the out-of-order window can take it.
                        if t >= ooo_min {
                            match s.lookup(t, &key)? {
                                Some(bits) if bits == v.to_bits() => Outcome::Noop,
                                Some(_) => Outcome::Duplicate,
                                None => {
                                    let i = s.ooo.partition_point(|x| x.0 < t);
                                    s.ooo.insert(i, (t, v));
                                    Outcome::Stored
                                }
                            }
                        } else if t < min_valid {
                            Outcome::TooOld
                        } else {
                            Outcome::OutOfOrder
                        }
                    } else {
                        s.append_in_order(t, v, block_ms)
                            .map_err(|reason| Error::BadChunk { chunk: format!("in head series {key}"), reason })?;
                        Outcome::Stored
                    };
                    let err = match outcome {
                        Outcome::Stored => {
                            batch.push_sample(t, v);
                            rep.accepted += 1;
                            None
                        }
                        Outcome::Noop => {
                            rep.accepted += 1;
                            None
                        }
                        Outcome::OutOfOrder => {
                            rep.out_of_order += 1;
                            Some(format!(
                                "out of order sample for series {key} at timestamp {t} (its last sample is at {})",
                                s.last_t()
                            ))
                        }
                        Outcome::Duplicate => {
                            rep.duplicate += 1;
                            Some(format!("duplicate sample for series {key} at timestamp {t} with a different value"))
                        }
                        Outcome::TooOld => {
                            rep.too_old += 1;
                            Some(format!(
                                "too old sample for series {key} at timestamp {t}: the head accepts samples from {min_valid}"
                            ))
                        }
                    };
                    if rep.first_error.is_none() {
                        rep.first_error = err;
                    }
                }
                let series_ref = s.series_ref;
                if s.is_empty() {
                    st.remove(&key);
                }
                for &(t, _) in batch.open_samples() {
                    st.note_stored(t);
                }
                batch.finish_series(series_ref, key);
            }
            // Submitted under the lock so WAL order equals validation order.
            self.wal.submit(batch)?
        };
        Ok((rep, pending))
    }

    /// Waits until every sample appended before is durable (an empty WAL record resolves only
    /// after everything queued before it is on stable storage).
    pub async fn sync(&self) -> Result<()> {
        self.wal.submit(WalBatch::default())?.wait().await
    }

    /// Oldest and newest sample timestamps held (cheap: no walk over the series); `None` when empty.
    pub fn time_range(&self) -> Option<(i64, i64)> {
        let st = self.state.read().unwrap_or_else(|p| p.into_inner());
        (st.min_t <= st.max_t).then_some((st.min_t, st.max_t))
    }

    /// Counts, time range and memory of the head.
    pub fn stats(&self) -> HeadStats {
        let st = self.state.read().unwrap_or_else(|p| p.into_inner());
        let mut chunks = 0;
        let mut chunk_bytes = 0;
        let mut bytes = std::mem::size_of::<State>();
        // The hash map: its entries at 7/8 load plus a control byte; the ordered set's BTree nodes hold up
        // to 11 entries, about 1/3 slack for partly full nodes.
        let entry = (std::mem::size_of::<Entry>() + 1) * 8 / 7 + std::mem::size_of::<Arc<Labels>>() * 4 / 3;
        for Entry { labels: l, series: s, .. } in &st.series {
            chunks += s.closed.len() + usize::from(s.open.num_samples() > 0);
            chunk_bytes += s.closed.iter().map(|c| c.data.len()).sum::<usize>() + s.open.bytes().len();
            bytes += entry + s.heap_bytes();
            // The Arc's counters and the label vector with its strings.
            bytes += 16
                + std::mem::size_of::<Labels>()
                + l.iter().map(|x| std::mem::size_of_val(x) + x.name.capacity() + x.value.capacity()).sum::<usize>();
        }
        HeadStats {
            series: st.series.len(),
            samples: st.samples,
            chunks,
            min_t: (st.min_t != i64::MAX).then_some(st.min_t),
            max_t: (st.max_t != i64::MIN).then_some(st.max_t),
            chunk_bytes,
            bytes,
            cut_point: st.cut_point,
        }
    }

    /// Cuts completed block windows (see the module docs) into the bucket; with `force`, cuts
    /// everything up to the newest sample (shutdown). Returns the metas of the written blocks.
    /// Samples of a window are dropped and the WAL truncated only after its block is uploaded. If the
    /// upload fails the error is returned, the samples stay in memory and in the WAL, the window stays
    /// closed to new samples, and the next call retries it.
    pub async fn cut(&self, bucket: &Bucket, force: bool) -> Result<Vec<BlockMeta>> {
        self.cut_then(bucket, force, || async {}).await
    }

    /// [`Head::cut`], awaiting `uploaded()` after each block is in the bucket and before the head
    /// drops its samples: a reader of the bucket re-reads it there, so that the samples are never
    /// in neither the head nor the blocks it serves.
    pub async fn cut_then<F, Fut>(&self, bucket: &Bucket, force: bool, uploaded: F) -> Result<Vec<BlockMeta>>
    where
        F: Fn() -> Fut,
        Fut: std::future::Future<Output = ()>,
    {
        let _one = self.cut_lock.lock().await;
        let d = self.opts.block_duration_ms;
        let limit = {
            let st = self.state.read().unwrap_or_else(|p| p.into_inner());
            st.max_t.saturating_add(1)
        };
        let mut out = Vec::new();
        loop {
            // Pick the window and freeze it: raise the cut point, then rotate the WAL under the lock so
            // every record that can hold samples of the window is in an older segment.
            let (min_time, end, rotate) = {
                let mut st = self.state.write().unwrap_or_else(|p| p.into_inner());
                if st.series.is_empty() || st.min_t == i64::MAX {
                    break;
                }
                let start = st.min_t.div_euclid(d).saturating_mul(d);
                let aligned_end = start.saturating_add(d);
                let end = if force {
                    if st.min_t >= limit {
                        break;
                    }
                    aligned_end.min(limit)
                } else {
                    if st.max_t.saturating_sub(start) <= d / 2 * 3 {
                        break;
                    }
                    aligned_end
                };
                st.cut_point = st.cut_point.max(end);
                (st.min_t, end, self.wal.rotate()?)
            };
            let segment = rotate.wait().await?;
            let meta = self.write_block(bucket, min_time, end).await?;
            if meta.is_some() {
                uploaded().await;
            }
            let dir = self.opts.dir.clone();
            let cut_point = end;
            tokio::task::spawn_blocking(move || write_cut_point(&dir, cut_point)).await.map_err(|e| {
                Error::Head { dir: self.opts.dir.clone(), reason: format!("persisting cut point: {e}") }
            })??;
            {
                let mut st = self.state.write().unwrap_or_else(|p| p.into_inner());
                let mut empty = Vec::new();
                for Entry { labels: l, series: s, .. } in st.series.iter_mut() {
                    s.drop_before(end, l, d)?;
                    if s.is_empty() {
                        empty.push(Arc::clone(l));
                    }
                }
                for l in empty {
                    st.remove(&l);
                }
                st.recompute_range();
            }
            let deleted = self.wal.truncate(segment, end).await?;
            tracing::info!(
                block = meta.as_ref().map_or("", |m| m.ulid.as_str()),
                min_time,
                max_time = end,
                wal_segments_deleted = deleted,
                "head cut a block"
            );
            out.extend(meta);
        }
        Ok(out)
    }

    /// Writes the samples in `[min_time, end)` as one block; `None` when there are none.
    async fn write_block(&self, bucket: &Bucket, min_time: i64, end: i64) -> Result<Option<BlockMeta>> {
        let mut bo = BlockWriterOptions::new(ulid::Ulid::new(), min_time, end);
        bo.external_labels = self.opts.external_labels.clone();
        bo.source = self.opts.source.clone();
        let mut w = BlockWriter::new(bucket.clone(), bo)?;
        let mut after: Option<Arc<Labels>> = None;
        let mut any = false;
        loop {
            let piece = {
                let st = self.state.read().unwrap_or_else(|p| p.into_inner());
                let lower = match &after {
                    Some(l) => Bound::Excluded(&**l),
                    None => Bound::Unbounded,
                };
                let mut piece = Vec::new();
                let mut last = None;
                for l in st.order.range::<Labels, _>((lower, Bound::Unbounded)).take(BATCH_SERIES) {
                    last = Some(Arc::clone(l));
                    let Some(s) = st.get(l) else { continue };
                    let (ts, vs) = s.samples_in(min_time, end - 1, l)?;
                    if !ts.is_empty() {
                        piece.push((Arc::clone(l), ts, vs));
                    }
                }
                if last.is_none() {
                    break;
                }
                after = last;
                piece
            };
            for (l, ts, vs) in piece {
                if let Err(e) = w.append_series(&l, &ts, &vs).await {
                    w.abort().await;
                    return Err(e);
                }
                any = true;
            }
        }
        if !any {
            w.abort().await;
            return Ok(None);
        }
        w.finish().await.map(Some)
    }

    fn matching(
        &self,
        req_matchers: &[Matcher],
        min_t: i64,
        max_t: i64,
        with_samples: bool,
    ) -> Result<Vec<SeriesSamples>> {
        let st = self.state.read().unwrap_or_else(|p| p.into_inner());
        let mut out = Vec::new();
        let candidates = st.candidates(req_matchers);
        let all: Box<dyn Iterator<Item = &Arc<Labels>>> = match &candidates {
            Some(c) => Box::new(c.iter().copied()),
            None => Box::new(st.order.iter()),
        };
        for l in all {
            if !matches_all(req_matchers, l) {
                continue;
            }
            let Some(s) = st.get(l) else { continue };
            if with_samples {
                let (ts, vs) = s.samples_in(min_t, max_t, l)?;
                if !ts.is_empty() {
                    out.push(((**l).clone(), ts, vs));
                }
            } else if s.has_data_in(min_t, max_t, l)? {
                out.push(((**l).clone(), Vec::new(), Vec::new()));
            }
        }
        Ok(out)
    }
}

#[async_trait]
impl SeriesSource for Head {
    async fn select(&self, req: &SelectRequest) -> Result<SeriesStream> {
        let all = self.matching(&req.matchers, req.min_t, req.max_t, true)?;
        let mut batches = Vec::new();
        let mut it = all.into_iter().peekable();
        while it.peek().is_some() {
            batches.push(SeriesBatch::from_series(it.by_ref().take(BATCH_SERIES).collect()));
        }
        Ok(Box::pin(futures::stream::iter(batches)))
    }

    async fn series(&self, matchers: &[Matcher], min_t: i64, max_t: i64) -> Result<Vec<Labels>> {
        Ok(self.matching(matchers, min_t, max_t, false)?.into_iter().map(|s| s.0).collect())
    }

    /// Collected over the matching series' labels in place (no label set is cloned); a series
    /// whose names are all known already is not checked for data in range.
    async fn label_names(&self, matchers: &[Matcher], min_t: i64, max_t: i64) -> Result<Vec<String>> {
        let st = self.state.read().unwrap_or_else(|p| p.into_inner());
        let mut out: BTreeSet<&str> = BTreeSet::new();
        for l in &st.order {
            if l.iter().all(|x| out.contains(x.name.as_str())) || !matches_all(matchers, l) {
                continue;
            }
            if let Some(s) = st.get(l)
                && s.has_data_in(min_t, max_t, l)?
            {
                out.extend(l.iter().map(|x| x.name.as_str()));
            }
        }
        Ok(out.into_iter().map(str::to_string).collect())
    }

    /// Like [`Head::label_names`]: values are collected in place, and a series whose value is
    /// known already is not checked for data in range.
    async fn label_values(&self, name: &str, matchers: &[Matcher], min_t: i64, max_t: i64) -> Result<Vec<String>> {
        let st = self.state.read().unwrap_or_else(|p| p.into_inner());
        let mut out: BTreeSet<&str> = BTreeSet::new();
        for l in &st.order {
            let Some(v) = l.get(name) else { continue };
            if out.contains(v) || !matches_all(matchers, l) {
                continue;
            }
            if let Some(s) = st.get(l)
                && s.has_data_in(min_t, max_t, l)?
            {
                out.insert(v);
            }
        }
        Ok(out.into_iter().map(str::to_string).collect())
    }

    /// From the oldest sample to `i64::MAX` (the head keeps growing), without labels (the head's
    /// series do not carry its blocks' external labels); none while the head is empty.
    async fn data_ranges(&self) -> Vec<crate::DataRange> {
        self.time_range()
            .map(|(min_t, _)| crate::DataRange { labels: Labels::default(), min_t, max_t: i64::MAX })
            .into_iter()
            .collect()
    }
}

#[cfg(test)]
#[allow(clippy::unwrap_used, clippy::expect_used)]
mod tests {
    use super::*;
    use crate::bucket_source::BucketSource;
    use crate::chunkenc::STALE_NAN_BITS;
    use futures::TryStreamExt;

    const H: i64 = 3600 * 1000;

    fn lbl(name: &str, job: &str) -> Labels {
        Labels::from_pairs([("__name__", name), ("job", job)])
    }

    async fn all(src: &dyn SeriesSource, min_t: i64, max_t: i64) -> Vec<(String, Vec<i64>, Vec<u64>)> {
        let req = SelectRequest { min_t, max_t, ..Default::default() };
        let batches: Vec<SeriesBatch> = src.select(&req).await.unwrap().try_collect().await.unwrap();
        let mut out = Vec::new();
        for b in &batches {
            for i in 0..b.num_series() {
                let (l, t, v) = b.series(i);
                out.push((l.to_string(), t.to_vec(), v.iter().map(|x| x.to_bits()).collect()));
            }
        }
        out
    }

    fn bits(v: &[f64]) -> Vec<u64> {
        v.iter().map(|x| x.to_bits()).collect()
    }

    #[tokio::test]
    async fn append_then_select_in_label_order() {
        let dir = tempfile::tempdir().unwrap();
        let head = Head::open(HeadOptions::new(dir.path())).await.unwrap();
        assert!(head.data_ranges().await.is_empty() && head.time_range().is_none());
        let stale = f64::from_bits(STALE_NAN_BITS);
        let ts: Vec<i64> = (0..300).map(|i| 1_000_000 + i * 15_000).collect();
        let rep = head
            .append(&[
                (lbl("up", "b"), ts.iter().map(|&t| (t, 1.0)).collect()),
                (lbl("up", "a"), ts.iter().map(|&t| (t, (t / 1000) as f64 * 0.5)).collect()),
                (lbl("down", "a"), vec![(1_000_000, stale), (1_015_000, -0.0)]),
            ])
            .await
            .unwrap();
        assert_eq!(rep, AppendReport { accepted: 602, ..Default::default() });
        // A live head claims everything from its oldest sample on.
        let range = crate::DataRange { labels: Labels::default(), min_t: 1_000_000, max_t: i64::MAX };
        assert_eq!(head.data_ranges().await, vec![range]);
        assert_eq!(head.time_range(), Some((1_000_000, *ts.last().unwrap())));
        let got = all(&*head, 0, i64::MAX).await;
        let names: Vec<&str> = got.iter().map(|g| g.0.as_str()).collect();
        assert_eq!(names, vec![r#"down{job="a"}"#, r#"up{job="a"}"#, r#"up{job="b"}"#]);
        assert_eq!(got[0].2, bits(&[stale, -0.0]));
        assert_eq!(got[1].1, ts);
        assert_eq!(got[1].2, bits(&ts.iter().map(|&t| (t / 1000) as f64 * 0.5).collect::<Vec<_>>()));
        // Range and matcher filtering.
        let req = SelectRequest {
            matchers: vec![Matcher::equal("__name__", "up")],
            min_t: 1_015_000,
            max_t: 1_045_000,
            ..Default::default()
        };
        let b: Vec<SeriesBatch> = head.select(&req).await.unwrap().try_collect().await.unwrap();
        assert_eq!(b[0].num_series(), 2);
        assert_eq!(b[0].series(0).1, &[1_015_000, 1_030_000, 1_045_000]);
        assert_eq!(
            head.series(&[Matcher::equal("job", "a")], 1_016_000, 1_029_000).await.unwrap(),
            Vec::<Labels>::new(),
            "no sample strictly inside (1_015_000, 1_030_000)"
        );
        assert_eq!(head.series(&[Matcher::equal("job", "a")], 0, i64::MAX).await.unwrap().len(), 2);
        let st = head.stats();
        assert_eq!((st.series, st.samples, st.min_t, st.max_t), (3, 602, Some(1_000_000), Some(ts[299])));
        // 300 samples per series in chunks of 120: 3 chunks each for `up`, 1 for `down`.
        assert_eq!(st.chunks, 7);
    }

    /// The postings narrow a select to exactly the series a full scan finds, in label order, also
    /// after series were removed (a cut) and added again.
    #[test]
    fn postings_select_what_a_scan_selects() {
        let mut st = State::new(0);
        let series: Vec<Labels> = (0..200)
            .map(|i| {
                let mut pairs = vec![
                    ("__name__".to_string(), format!("m{}", i % 3)),
                    ("job".to_string(), format!("j{}", i % 4)),
                    ("i".to_string(), format!("{i}")),
                ];
                if i % 5 != 0 {
                    pairs.push(("zone".to_string(), format!("z{}", i % 2)));
                }
                Labels::from_pairs(pairs)
            })
            .collect();
        let add = |st: &mut State, l: &Labels| {
            let pairs: Vec<(&str, &str)> = l.iter().map(|x| (x.name.as_str(), x.value.as_str())).collect();
            st.entry_pairs(&pairs).unwrap();
        };
        for l in &series {
            add(&mut st, l);
        }
        let m = |op, n: &str, v: &str| Matcher::new(op, n, v).unwrap();
        let sets = vec![
            vec![m(MatchOp::Equal, "__name__", "m1")],
            vec![m(MatchOp::Equal, "__name__", "m1"), m(MatchOp::Equal, "job", "j2")],
            vec![m(MatchOp::Equal, "job", "j3"), m(MatchOp::Equal, "zone", "z1"), m(MatchOp::NotEqual, "i", "7")],
            vec![m(MatchOp::Equal, "zone", ""), m(MatchOp::Equal, "job", "j0")],
            vec![m(MatchOp::Equal, "job", "j1"), m(MatchOp::RegexMatch, "i", "1.*")],
            vec![m(MatchOp::Equal, "job", "nope")],
            vec![m(MatchOp::Equal, "nope", "x")],
            vec![m(MatchOp::RegexMatch, "job", "j1|j2")],
            vec![m(MatchOp::RegexMatch, "zone", "z1|")],
            vec![m(MatchOp::RegexMatch, "job", "j1.*")],
            vec![m(MatchOp::RegexMatch, "i", "1[67]|300"), m(MatchOp::RegexMatch, "job", "j(0|1)")],
            vec![m(MatchOp::RegexMatch, "i", "300|301")],
            vec![m(MatchOp::RegexMatch, "nope", "x|y"), m(MatchOp::Equal, "job", "j1")],
        ];
        let check = |st: &State| {
            for ms in &sets {
                let scan: Vec<&Arc<Labels>> = st.order.iter().filter(|l| matches_all(ms, l)).collect();
                let narrowed: Vec<&Arc<Labels>> = match st.candidates(ms) {
                    Some(c) => c.into_iter().filter(|l| matches_all(ms, l)).collect(),
                    None => st.order.iter().filter(|l| matches_all(ms, l)).collect(),
                };
                assert_eq!(narrowed, scan, "{ms:?}");
            }
        };
        check(&st);
        assert!(st.candidates(&sets[1]).unwrap().len() < 20, "narrowed by both = matchers");
        assert_eq!(st.candidates(&sets[7]).unwrap().len(), 100, "a literal set narrows too");
        assert!(st.candidates(&sets[8]).is_none(), "a set with \"\" in it does not narrow");
        assert!(st.candidates(&sets[9]).is_none(), "nor does a regex that is not a set");
        assert_eq!(st.candidates(&sets[10]).unwrap().len(), 2);
        for l in series.iter().step_by(3) {
            st.remove(l);
        }
        check(&st);
        for l in series.iter().step_by(6) {
            add(&mut st, l);
        }
        check(&st);
        for l in &series {
            st.remove(l);
        }
        assert!(st.postings.is_empty() && st.by_ref.is_empty());
    }

    /// Label names and values answered in place agree with the ones walked from `series`.
    #[tokio::test]
    async fn label_lookups_agree_with_the_series() {
        let dir = tempfile::tempdir().unwrap();
        let head = Head::open(HeadOptions::new(dir.path())).await.unwrap();
        let mut batch = Vec::new();
        for i in 0..60 {
            let l = Labels::from_pairs([
                ("__name__", format!("m{}", i % 3)),
                ("job", format!("j{}", i % 4)),
                ("zone", if i % 5 == 0 { String::new() } else { format!("z{}", i % 2) }),
                ("i", format!("{i}")),
            ]);
            // Series i has samples from i * 10 s for a minute.
            batch.push((l, (0..5).map(|k| (i * 10_000 + k * 15_000, 1.0)).collect()));
        }
        head.append(&batch).await.unwrap();
        let m = |op, n: &str, v: &str| Matcher::new(op, n, v).unwrap();
        let sets = vec![
            vec![],
            vec![m(crate::labels::MatchOp::Equal, "__name__", "m1")],
            vec![m(crate::labels::MatchOp::RegexMatch, "zone", "z1|")],
            vec![m(crate::labels::MatchOp::NotEqual, "job", "j2")],
        ];
        let mut nonempty = 0;
        for ms in &sets {
            for (a, b) in [(0, i64::MAX), (100_000, 200_000), (575_000, 700_000), (800_000, 900_000)] {
                let series = head.series(ms, a, b).await.unwrap();
                let names: BTreeSet<String> = series.iter().flat_map(|l| l.iter().map(|x| x.name.clone())).collect();
                assert_eq!(head.label_names(ms, a, b).await.unwrap(), names.into_iter().collect::<Vec<_>>());
                for name in ["job", "zone", "i", "nope"] {
                    let values: BTreeSet<String> =
                        series.iter().filter_map(|l| l.get(name).map(str::to_string)).collect();
                    let got = head.label_values(name, ms, a, b).await.unwrap();
                    nonempty += usize::from(!got.is_empty());
                    assert_eq!(got, values.into_iter().collect::<Vec<_>>(), "{name} {ms:?} [{a}, {b}]");
                }
            }
        }
        assert!(nonempty > 20, "{nonempty}");
    }

    #[tokio::test]
    async fn borrowed_appends_find_the_same_series_and_refuse_unsorted_labels() {
        let dir = tempfile::tempdir().unwrap();
        let head = Head::open(HeadOptions::new(dir.path())).await.unwrap();
        head.append(&[(lbl("up", "a"), vec![(1000, 1.0)])]).await.unwrap();
        let pairs = [("__name__", "up"), ("job", "a")];
        let rep = head.append_series(&[AppendSeries { labels: &pairs, samples: &[(2000, 2.0)] }]).await.unwrap();
        assert_eq!(rep.accepted, 1);
        // the same labels as owned Labels hit the series the borrowed append extended
        let rep = head.append(&[(lbl("up", "a"), vec![(1500, 9.0)])]).await.unwrap();
        assert_eq!(rep.out_of_order, 1);
        assert_eq!(head.stats().series, 1);
        for bad in [[("job", "a"), ("__name__", "up")], [("__name__", "up"), ("job", "")], [("a", "1"), ("a", "2")]] {
            let e = head.append_series(&[AppendSeries { labels: &bad, samples: &[(3000, 1.0)] }]).await.unwrap_err();
            assert!(e.to_string().contains("sorted by name with unique names and no empty values"), "{e}");
        }
        assert_eq!(head.stats().series, 1);
        assert_eq!(
            all(&*head, 0, i64::MAX).await,
            vec![(r#"up{job="a"}"#.to_string(), vec![1000, 2000], bits(&[1.0, 2.0]))]
        );
        // and after a replay
        drop(head);
        let head = Head::open(HeadOptions::new(dir.path())).await.unwrap();
        let rep = head.append_series(&[AppendSeries { labels: &pairs, samples: &[(3000, 3.0)] }]).await.unwrap();
        assert_eq!(rep.accepted, 1);
        assert_eq!(head.stats().series, 1);
        assert_eq!(all(&*head, 0, i64::MAX).await[0].1, vec![1000, 2000, 3000]);
    }

    #[tokio::test]
    async fn rejections_are_counted_and_named() {
        let dir = tempfile::tempdir().unwrap();
        let head = Head::open(HeadOptions::new(dir.path())).await.unwrap();
        let s = lbl("up", "a");
        head.append(&[(s.clone(), vec![(10 * H, 1.0), (10 * H + 100, 2.0)])]).await.unwrap();
        let rep = head
            .append(&[
                (s.clone(), vec![(10 * H + 50, 9.0), (10 * H + 100, 2.0), (10 * H + 100, 3.0), (10 * H + 200, 4.0)]),
                (lbl("up", "old"), vec![(9 * H - 1, 1.0), (10 * H - H / 2, 1.0)]),
            ])
            .await
            .unwrap();
        assert_eq!((rep.accepted, rep.out_of_order, rep.duplicate, rep.too_old), (3, 1, 1, 1));
        assert_eq!(
            rep.first_error.as_deref(),
            Some(
                r#"out of order sample for series up{job="a"} at timestamp 36000050 (its last sample is at 36000100)"#
            )
        );
        let got = all(&*head, 0, i64::MAX).await;
        assert_eq!(got[0].1, vec![10 * H, 10 * H + 100, 10 * H + 200]);
        assert_eq!(got[0].2, bits(&[1.0, 2.0, 4.0]));
        assert_eq!(got[1].1, vec![10 * H - H / 2], "the boundary of the appendable window is valid");
        // Without an out-of-order window, re-sending an older sample is out of order, as in Prometheus.
        let rep = head.append(&[(s.clone(), vec![(10 * H, 1.0)])]).await.unwrap();
        assert_eq!((rep.accepted, rep.out_of_order), (0, 1));
        // A request rejected entirely leaves no empty series behind.
        let rep = head.append(&[(lbl("never", "x"), vec![(0, 1.0)])]).await.unwrap();
        assert_eq!(rep.too_old, 1);
        assert!(rep.first_error.unwrap().contains(r#"never{job="x"}"#));
        assert_eq!(head.stats().series, 2);
    }

    #[tokio::test]
    async fn out_of_order_window_accepts_recent_late_samples() {
        let dir = tempfile::tempdir().unwrap();
        let mut o = HeadOptions::new(dir.path());
        o.out_of_order_window_ms = H;
        let head = Head::open(o.clone()).await.unwrap();
        let s = lbl("up", "a");
        head.append(&[(s.clone(), vec![(10 * H, 1.0), (10 * H + 1000, 2.0)])]).await.unwrap();
        let rep = head
            .append(&[(s.clone(), vec![(10 * H + 500, 1.5), (10 * H + 500, 1.5), (10 * H + 500, 7.0), (8 * H, 0.0)])])
            .await
            .unwrap();
        assert_eq!((rep.accepted, rep.duplicate, rep.too_old, rep.out_of_order), (2, 1, 1, 0));
        // Older than the in-order window but inside the OOO window.
        let rep = head.append(&[(lbl("late", "b"), vec![(10 * H - H / 2 - 1, 5.0)])]).await.unwrap();
        assert_eq!(rep.accepted, 1);
        let want = vec![10 * H, 10 * H + 500, 10 * H + 1000];
        assert_eq!(all(&*head, 0, i64::MAX).await[1].1, want);
        drop(head);
        let head = Head::open(o).await.unwrap();
        let got = all(&*head, 0, i64::MAX).await;
        assert_eq!(got[1].1, want);
        assert_eq!(got[1].2, bits(&[1.0, 1.5, 2.0]));
        assert_eq!(got[0].1, vec![10 * H - H / 2 - 1]);
    }

    #[tokio::test]
    async fn acknowledged_samples_survive_restart_and_torn_tail() {
        let dir = tempfile::tempdir().unwrap();
        let o = HeadOptions::new(dir.path());
        let mut want: BTreeMap<String, Vec<i64>> = BTreeMap::new();
        {
            let head = Head::open(o.clone()).await.unwrap();
            let mut tasks = Vec::new();
            for w in 0..4 {
                let head = Arc::clone(&head);
                tasks.push(tokio::spawn(async move {
                    for i in 0..100i64 {
                        let t = 5 * H + i * 15_000;
                        let rep = head
                            .append(&[
                                (lbl("m", &format!("w{w}")), vec![(t, i as f64)]),
                                (lbl("shared", &format!("{}", i % 3)), vec![(t + w, 1.0)]),
                            ])
                            .await
                            .unwrap();
                        // The shared series' sample is out of order when another writer got
                        // ahead (scheduling decides); what was acknowledged must replay.
                        assert_eq!((rep.accepted + rep.out_of_order, rep.accepted >= 1), (2, true), "{rep:?}");
                    }
                }));
            }
            for t in tasks {
                t.await.unwrap();
            }
            for (l, ts, _) in all(&*head, 0, i64::MAX).await {
                want.insert(l, ts);
            }
            // Dropped without a cut.
        }
        assert_eq!(want.len(), 7);
        let head = Head::open(o.clone()).await.unwrap();
        let got: BTreeMap<String, Vec<i64>> = all(&*head, 0, i64::MAX).await.into_iter().map(|g| (g.0, g.1)).collect();
        assert_eq!(got, want);
        // One more acknowledged append, then tear the last record of the newest segment.
        head.append(&[(lbl("m", "w0"), vec![(6 * H, 1.0)])]).await.unwrap();
        head.append(&[(lbl("m", "w0"), vec![(6 * H + 1, 2.0)])]).await.unwrap();
        drop(head);
        let wal = dir.path().join("wal");
        let mut segs: Vec<_> = std::fs::read_dir(&wal).unwrap().map(|e| e.unwrap().path()).collect();
        segs.sort();
        let last = segs.last().unwrap();
        let len = std::fs::metadata(last).unwrap().len();
        std::fs::OpenOptions::new().write(true).open(last).unwrap().set_len(len - 3).unwrap();
        let head = Head::open(o).await.unwrap();
        let got: BTreeMap<String, Vec<i64>> = all(&*head, 0, i64::MAX).await.into_iter().map(|g| (g.0, g.1)).collect();
        let mut want2 = want.clone();
        want2.get_mut(r#"m{job="w0"}"#).unwrap().push(6 * H);
        assert_eq!(got, want2, "everything but the torn record is back");
    }

    #[tokio::test]
    async fn cut_then_runs_while_the_head_still_holds_the_samples() {
        let dir = tempfile::tempdir().unwrap();
        let bdir = tempfile::tempdir().unwrap();
        let bucket = Bucket::local(bdir.path()).unwrap();
        let head = Head::open(HeadOptions::new(dir.path())).await.unwrap();
        // 9 h 45 min: the 2 h windows starting at 0, 2, 4 and 6 h are cut
        let ts: Vec<i64> = (0..40).map(|i| i * 15 * 60_000).collect();
        for &t in &ts {
            head.append(&[(lbl("c", "a"), vec![(t, 1.0)])]).await.unwrap();
        }
        // at each hook: the block is listed in the bucket and the head still holds its samples
        let seen = std::sync::Mutex::new(Vec::new());
        let (b, h, log) = (&bucket, &head, &seen);
        let metas = head
            .cut_then(&bucket, false, move || async move {
                let blocks = b.list_blocks().await.unwrap().len();
                log.lock().unwrap().push((blocks, h.stats().min_t));
            })
            .await
            .unwrap();
        assert_eq!(metas.len(), 4);
        let want = vec![(1, Some(0)), (2, Some(2 * H)), (3, Some(4 * H)), (4, Some(6 * H))];
        assert_eq!(*seen.lock().unwrap(), want);
        assert_eq!(head.stats().min_t, Some(8 * H), "dropped after the hook");
    }

    #[tokio::test]
    async fn cut_uploads_blocks_then_truncates_the_wal() {
        let dir = tempfile::tempdir().unwrap();
        let bdir = tempfile::tempdir().unwrap();
        let bucket = Bucket::local(bdir.path()).unwrap();
        let mut o = HeadOptions::new(dir.path());
        o.external_labels.insert("replica".into(), "r1".into());
        let head = Head::open(o.clone()).await.unwrap();
        // 3.75 h of 15 s scrapes for 3 series, starting at an aligned 2 h boundary + 10 min.
        let start = 100 * 2 * H + 600_000;
        let n = (3 * H + 45 * 60_000) / 15_000;
        let mut all_ts = Vec::new();
        for i in 0..n {
            let t = start + i * 15_000;
            all_ts.push(t);
            let batch: Vec<(Labels, Vec<(i64, f64)>)> =
                (0..3).map(|s| (lbl("c", &format!("s{s}")), vec![(t, (i * (s + 1)) as f64)])).collect();
            head.append(&batch).await.unwrap();
        }
        let segs_before = std::fs::read_dir(dir.path().join("wal")).unwrap().count();
        assert_eq!(segs_before, 1);
        let end = 101 * 2 * H;
        let metas = head.cut(&bucket, false).await.unwrap();
        assert_eq!(metas.len(), 1);
        assert_eq!((metas[0].min_time, metas[0].max_time), (start, end));
        assert_eq!(metas[0].thanos.source, "receive");
        assert_eq!(metas[0].thanos.labels.get("replica").map(String::as_str), Some("r1"));
        let in_block: Vec<i64> = all_ts.iter().copied().filter(|&t| t < end).collect();
        let rest: Vec<i64> = all_ts.iter().copied().filter(|&t| t >= end).collect();
        assert_eq!(metas[0].stats.num_samples, 3 * in_block.len() as u64);
        // Nothing more to cut yet.
        assert!(head.cut(&bucket, false).await.unwrap().is_empty());
        let bs = BucketSource::new(bucket.clone());
        bs.sync().await.unwrap();
        let got = all(&bs, 0, i64::MAX).await;
        assert_eq!(got.len(), 3);
        assert_eq!(got[1].0, r#"c{job="s1", replica="r1"}"#);
        assert_eq!(got[1].1, in_block);
        let idx: Vec<i64> = in_block.iter().map(|t| (t - start) / 15_000).collect();
        assert_eq!(got[1].2, bits(&idx.iter().map(|i| (i * 2) as f64).collect::<Vec<_>>()));
        // The head keeps only the rest.
        let h = all(&*head, 0, i64::MAX).await;
        assert_eq!(h[0].1, rest);
        assert_eq!(head.stats().min_t, Some(end));
        // The old segment still holds samples after `end`, so it stays until the next cut.
        let segs: Vec<_> = std::fs::read_dir(dir.path().join("wal")).unwrap().collect();
        assert_eq!(segs.len(), 2);
        // Too-old after the cut.
        let rep = head.append(&[(lbl("c", "s0"), vec![(end - 1, 1.0)])]).await.unwrap();
        assert_eq!(rep.too_old, 1);
        // Reopen: no sample of the block comes back, none of the rest is lost.
        drop(head);
        let head = Head::open(o.clone()).await.unwrap();
        let h = all(&*head, 0, i64::MAX).await;
        assert_eq!(h.len(), 3);
        assert!(h.iter().all(|s| s.1 == rest));
        // Forced cut at shutdown writes the rest and empties the WAL of samples.
        let metas = head.cut(&bucket, true).await.unwrap();
        assert_eq!(metas.len(), 1);
        assert_eq!((metas[0].min_time, metas[0].max_time), (end, *rest.last().unwrap() + 1));
        assert_eq!(head.stats().series, 0);
        let segs: Vec<_> = std::fs::read_dir(dir.path().join("wal")).unwrap().collect();
        assert_eq!(segs.len(), 1, "only the fresh segment is left");
        drop(head);
        let head = Head::open(o).await.unwrap();
        assert_eq!(head.stats().samples, 0);
        bs.sync().await.unwrap();
        let got = all(&bs, 0, i64::MAX).await;
        assert_eq!(got[2].1, all_ts, "both blocks together hold every sample exactly once");
    }

    #[tokio::test]
    async fn memory_per_series_is_small() {
        let dir = tempfile::tempdir().unwrap();
        let head = Head::open(HeadOptions::new(dir.path())).await.unwrap();
        let series: Vec<Labels> = (0..200)
            .map(|i| {
                Labels::from_pairs([
                    ("__name__", "http_requests_total".to_string()),
                    ("instance", format!("10.0.{}.{}:9100", i / 250, i % 250)),
                    ("job", "node".to_string()),
                ])
            })
            .collect();
        // 2 h of 15 s scrapes: counters growing by small steps.
        for i in 0..480i64 {
            let batch: Vec<(Labels, Vec<(i64, f64)>)> = series
                .iter()
                .enumerate()
                .map(|(s, l)| (l.clone(), vec![(i * 15_000, (i * (s as i64 % 7 + 1)) as f64)]))
                .collect();
            head.append(&batch).await.unwrap();
        }
        let st = head.stats();
        assert_eq!(st.samples, 200 * 480);
        assert_eq!(st.chunks, 200 * 4);
        let per_series = st.bytes / st.series;
        eprintln!("head: {} bytes/series, {} chunk bytes/series", per_series, st.chunk_bytes / st.series);
        // Measured: about 1300 bytes per series, 740 of them chunk data (1.54 bytes/sample for these
        // steadily growing counters); Prometheus needs about 1-3 KiB per series for the same.
        assert!(per_series < 1536, "{per_series} bytes per series");
        assert!(st.chunk_bytes / st.series < 800);
    }
}
