//! The head's write-ahead log: append-only segment files of checksummed records.
//!
//! ```text
//!   <dir>/00000001, 00000002, ...        segment files (8-digit sequence numbers)
//!   segment  = header (magic u32 BE 0x57A1_0001, version u8 = 1, 3 zero bytes) + records
//!   record   = payload length u32 LE | CRC32C(payload) u32 LE | payload
//!   payload  = kind u8 (1 = samples) | uvarint #entries | entries
//!   entry    = uvarint series ref | u8 has_labels | [uvarint #labels, (uvarint len, name, uvarint len, value)*]
//!              | uvarint #samples | first t zigzag varint, later t deltas zigzag varint | value u64 LE bits each
//! ```
//!
//! A series' labels are written with the first record that mentions its ref in each segment, so every
//! segment is self-contained and whole segments can be deleted without losing the label definitions a
//! later segment needs.
//!
//! **Durability and fsync policy (group commit, pipelined).** One writer thread owns the open segment.
//! Appends are queued to it in submission order; it takes everything queued (a *group*), writes it
//! with one `write` and hands the group to a small pool of sync threads, which call `fdatasync` (a
//! sync thread that finds several groups queued syncs once for all of them). The writer goes on
//! writing the next group while earlier syncs are still running, so a group never waits for a sync
//! that started before its data was written, and the disk sees several flushes in flight (one flush
//! takes milliseconds here; serial group commit made every append wait 1.5 flushes on average). An
//! acknowledging thread answers the groups strictly in write order, and a group only once its own
//! sync *and every earlier group's* succeeded. So [`Wal::append`] returns only after its record and
//! every record before it are on stable storage. New segments are fsynced with their directory
//! before use. After a failed write or fsync the log is marked broken and every later append fails
//! (the state of the file is unknown; reopen to recover).
//!
//! **Replay** ([`Wal::open`]) reads the segments in order. A record that is cut short or fails its
//! checksum ends the segment: the file is truncated there and a warning is logged. Since a record is
//! acknowledged only after its fsync, a torn tail holds only unacknowledged records. Writing always
//! resumes in a fresh segment.
//!
//! **Truncation.** [`Wal::rotate`] starts a new segment (the head does it when it cuts a block);
//! [`Wal::truncate`] then deletes whole older segments whose newest sample is below the uploaded
//! block's end. Segments also rotate when they exceed [`WalOptions::segment_size`].

use std::collections::BTreeMap;
use std::fs::{File, OpenOptions};
use std::io::Write;
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex, mpsc};
use std::thread::JoinHandle;

use hashbrown::{HashMap, HashSet};
use tokio::sync::oneshot;

use crate::error::{Error, Result};
use crate::labels::{Label, Labels};

/// Replay callback: labels and samples of one WAL entry.
type ReplayFn<'a> = dyn FnMut(&Arc<Labels>, &[(i64, f64)]) + 'a;
/// Decoded entries of one record.
type Entries = Vec<(Arc<Labels>, Vec<(i64, f64)>)>;

const MAGIC: u32 = 0x57A1_0001;
const HEADER_LEN: u64 = 8;
const RECORD_HEADER_LEN: usize = 8;
const KIND_SAMPLES: u8 = 1;
/// Records above this size are treated as corruption on replay.
const MAX_RECORD_LEN: u32 = 1 << 30;

/// WAL settings.
#[derive(Debug, Clone)]
pub struct WalOptions {
    /// Directory of the segment files (created if missing).
    pub dir: PathBuf,
    /// A segment is closed once it grows beyond this many bytes (default 128 MiB).
    pub segment_size: u64,
}

impl WalOptions {
    /// Options with the default segment size.
    pub fn new(dir: impl Into<PathBuf>) -> Self {
        WalOptions { dir: dir.into(), segment_size: 128 << 20 }
    }
}

/// Samples of one series in a WAL record.
#[derive(Debug, Clone)]
pub struct WalSeries {
    /// The head's reference of the series (unique while the process runs).
    pub series_ref: u64,
    /// The series' labels (written once per segment).
    pub labels: Arc<Labels>,
    /// Samples, in the order they were accepted.
    pub samples: Vec<(i64, f64)>,
}

/// Samples of several series for one WAL record, kept flat (one vector for every sample) so the
/// head builds a record without an allocation per series. Push a series' samples, then
/// [`WalBatch::finish_series`] it.
#[derive(Debug, Clone, Default)]
pub struct WalBatch {
    /// Per series: its ref, labels, and the end of its samples in `samples`.
    series: Vec<(u64, Arc<Labels>, usize)>,
    samples: Vec<(i64, f64)>,
}

impl WalBatch {
    /// An empty batch with room for `series` series and `samples` samples.
    pub fn with_capacity(series: usize, samples: usize) -> Self {
        WalBatch { series: Vec::with_capacity(series), samples: Vec::with_capacity(samples) }
    }

    /// Adds a sample to the series being built.
    pub fn push_sample(&mut self, t: i64, v: f64) {
        self.samples.push((t, v));
    }

    /// The samples pushed since the last [`WalBatch::finish_series`].
    pub fn open_samples(&self) -> &[(i64, f64)] {
        let start = self.series.last().map_or(0, |s| s.2);
        self.samples.get(start..).unwrap_or_default()
    }

    /// Closes the series being built (nothing when no sample was pushed for it).
    pub fn finish_series(&mut self, series_ref: u64, labels: Arc<Labels>) {
        if !self.open_samples().is_empty() {
            self.series.push((series_ref, labels, self.samples.len()));
        }
    }

    /// True when the batch holds no series.
    pub fn is_empty(&self) -> bool {
        self.series.is_empty()
    }

    /// The series: ref, labels and samples.
    fn iter(&self) -> impl Iterator<Item = (u64, &Arc<Labels>, &[(i64, f64)])> {
        let mut start = 0;
        self.series.iter().map(move |(r, l, end)| {
            let s = self.samples.get(start..*end).unwrap_or_default();
            start = *end;
            (*r, l, s)
        })
    }
}

impl From<Vec<WalSeries>> for WalBatch {
    fn from(entries: Vec<WalSeries>) -> Self {
        let mut b = WalBatch::with_capacity(entries.len(), entries.iter().map(|e| e.samples.len()).sum());
        for e in entries {
            b.samples.extend_from_slice(&e.samples);
            b.finish_series(e.series_ref, e.labels);
        }
        b
    }
}

/// What replay found.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct ReplayStats {
    /// Segments read.
    pub segments: usize,
    /// Records read.
    pub records: usize,
    /// Samples handed to the callback.
    pub samples: u64,
    /// Bytes cut off torn or corrupt segment tails.
    pub truncated_bytes: u64,
}

/// A pending append: resolves once the record is durable.
#[derive(Debug)]
pub struct PendingAppend {
    rx: oneshot::Receiver<Result<(), String>>,
    dir: PathBuf,
}

impl PendingAppend {
    /// Waits until the record is on stable storage.
    pub async fn wait(self) -> Result<()> {
        match self.rx.await {
            Ok(Ok(())) => Ok(()),
            Ok(Err(reason)) => Err(Error::Wal { path: self.dir, offset: 0, reason }),
            Err(_) => Err(Error::Wal { path: self.dir, offset: 0, reason: "writer stopped".into() }),
        }
    }
}

enum Cmd {
    Append(WalBatch, oneshot::Sender<Result<(), String>>),
    Rotate(oneshot::Sender<Result<u64, String>>),
    Truncate { before_segment: u64, below_t: i64, reply: oneshot::Sender<Result<usize, String>> },
    Segments(oneshot::Sender<Vec<(u64, i64)>>),
}

/// The write-ahead log. See the module docs.
pub struct Wal {
    dir: PathBuf,
    tx: Mutex<Option<mpsc::Sender<Cmd>>>,
    thread: Mutex<Option<JoinHandle<()>>>,
}

impl std::fmt::Debug for Wal {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Wal").field("dir", &self.dir).finish()
    }
}

fn io_err(path: &Path, e: std::io::Error) -> Error {
    Error::Io { path: path.to_path_buf(), source: e }
}

fn segment_path(dir: &Path, seg: u64) -> PathBuf {
    dir.join(format!("{seg:08}"))
}

fn sync_dir(dir: &Path) -> Result<()> {
    File::open(dir).and_then(|d| d.sync_all()).map_err(|e| io_err(dir, e))
}

/// Segment numbers in `dir`, ascending.
fn list_segments(dir: &Path) -> Result<Vec<u64>> {
    let mut out = Vec::new();
    for e in std::fs::read_dir(dir).map_err(|e| io_err(dir, e))? {
        let e = e.map_err(|e| io_err(dir, e))?;
        let name = e.file_name();
        let Some(name) = name.to_str() else { continue };
        if name.len() == 8
            && let Ok(n) = name.parse::<u64>()
        {
            out.push(n);
        }
    }
    out.sort_unstable();
    Ok(out)
}

fn put_uvarint(buf: &mut Vec<u8>, mut x: u64) {
    while x >= 0x80 {
        buf.push((x as u8) | 0x80);
        x >>= 7;
    }
    buf.push(x as u8);
}

fn put_varint(buf: &mut Vec<u8>, x: i64) {
    put_uvarint(buf, ((x << 1) ^ (x >> 63)) as u64);
}

/// Reads fields of one record payload; errors carry the payload offset.
struct Cursor<'a> {
    b: &'a [u8],
    pos: usize,
}

impl Cursor<'_> {
    fn uvarint(&mut self) -> std::result::Result<u64, String> {
        let mut x = 0u64;
        let mut shift = 0;
        loop {
            let Some(&c) = self.b.get(self.pos) else { return Err(format!("truncated varint at {}", self.pos)) };
            self.pos += 1;
            if shift > 63 {
                return Err(format!("varint overflow at {}", self.pos));
            }
            x |= u64::from(c & 0x7f) << shift;
            if c < 0x80 {
                return Ok(x);
            }
            shift += 7;
        }
    }
    fn varint(&mut self) -> std::result::Result<i64, String> {
        let u = self.uvarint()?;
        Ok(((u >> 1) as i64) ^ -((u & 1) as i64))
    }
    fn bytes(&mut self, n: usize) -> std::result::Result<&[u8], String> {
        let end = self.pos.checked_add(n).filter(|&e| e <= self.b.len());
        let Some(end) = end else { return Err(format!("truncated field of {n} bytes at {}", self.pos)) };
        let s = &self.b[self.pos..end];
        self.pos = end;
        Ok(s)
    }
    fn string(&mut self) -> std::result::Result<String, String> {
        let n = self.uvarint()? as usize;
        let at = self.pos;
        let b = self.bytes(n)?;
        String::from_utf8(b.to_vec()).map_err(|_| format!("label string at {at} is not UTF-8"))
    }
}

/// The writer thread's state.
struct Writer {
    dir: PathBuf,
    segment_size: u64,
    file: File,
    seg: u64,
    size: u64,
    /// Refs whose labels are already in the current segment.
    written: HashSet<u64>,
    /// Newest sample timestamp per segment (i64::MIN when it holds none).
    seg_max_t: BTreeMap<u64, i64>,
    /// Set by the writer or a sync thread on the first failure; shared so every thread sees it.
    broken: Arc<Mutex<Option<String>>>,
    buf: Vec<u8>,
    pending: Vec<oneshot::Sender<Result<(), String>>>,
    /// The open segment, shared with the sync threads.
    shared_file: Arc<File>,
    /// Groups written and not yet synced, to the sync threads.
    sync_tx: Option<mpsc::Sender<SyncJob>>,
    /// Groups in write order, to the acknowledging thread.
    ack_tx: Option<mpsc::Sender<AckJob>>,
    helpers: Vec<JoinHandle<()>>,
}

/// Sync threads per WAL: enough to keep a few flushes in flight.
const SYNC_THREADS: usize = 3;

/// Replies of the appends of one group.
type Replies = Vec<oneshot::Sender<Result<(), String>>>;

/// One written group to fsync.
struct SyncJob {
    seg: u64,
    file: Arc<File>,
    path: PathBuf,
    done: mpsc::Sender<Result<(), String>>,
}

/// One group to acknowledge: its sync's outcome (none when the group wrote nothing) and its appends.
struct AckJob {
    synced: Option<mpsc::Receiver<Result<(), String>>>,
    replies: Replies,
}

fn broken_now(b: &Mutex<Option<String>>) -> Option<String> {
    b.lock().unwrap_or_else(|p| p.into_inner()).clone()
}

fn mark_broken(b: &Mutex<Option<String>>, msg: String) {
    let mut g = b.lock().unwrap_or_else(|p| p.into_inner());
    if g.is_none() {
        tracing::error!(error = %msg, "WAL is now broken");
        *g = Some(msg);
    }
}

/// A sync thread: takes every queued job, fsyncs each distinct segment once, reports per job.
fn sync_loop(jobs: Arc<Mutex<mpsc::Receiver<SyncJob>>>) {
    loop {
        let batch = {
            let rx = jobs.lock().unwrap_or_else(|p| p.into_inner());
            let Ok(first) = rx.recv() else { return };
            let mut batch = vec![first];
            while let Ok(j) = rx.try_recv() {
                batch.push(j);
            }
            batch
        };
        let mut results: Vec<(u64, Result<(), String>)> = Vec::new();
        for j in &batch {
            if !results.iter().any(|r| r.0 == j.seg) {
                let r = j.file.sync_data().map_err(|e| format!("fsync of {} failed: {e}", j.path.display()));
                results.push((j.seg, r));
            }
        }
        for j in batch {
            let r = results.iter().find(|r| r.0 == j.seg).map_or(Ok(()), |r| r.1.clone());
            let _ = j.done.send(r);
        }
    }
}

/// The acknowledging thread: answers groups in write order, each only after its sync and all
/// earlier ones succeeded.
fn ack_loop(jobs: mpsc::Receiver<AckJob>, broken: Arc<Mutex<Option<String>>>) {
    while let Ok(job) = jobs.recv() {
        if let Some(rx) = job.synced {
            match rx.recv() {
                Ok(Ok(())) => {}
                Ok(Err(m)) => mark_broken(&broken, m),
                Err(_) => mark_broken(&broken, "WAL sync thread stopped".into()),
            }
        }
        let state = broken_now(&broken);
        for r in job.replies {
            let _ = r.send(match &state {
                None => Ok(()),
                Some(m) => Err(m.clone()),
            });
        }
    }
}

fn create_segment(dir: &Path, seg: u64) -> Result<File> {
    let path = segment_path(dir, seg);
    let mut f = OpenOptions::new().create_new(true).write(true).open(&path).map_err(|e| io_err(&path, e))?;
    let mut h = MAGIC.to_be_bytes().to_vec();
    h.extend_from_slice(&[1, 0, 0, 0]);
    f.write_all(&h).and_then(|_| f.sync_all()).map_err(|e| io_err(&path, e))?;
    sync_dir(dir)?;
    Ok(f)
}

impl Writer {
    fn encode(&mut self, entries: &WalBatch) {
        let start = self.buf.len();
        self.buf.extend_from_slice(&[0; RECORD_HEADER_LEN]);
        self.buf.push(KIND_SAMPLES);
        put_uvarint(&mut self.buf, entries.series.len() as u64);
        let mut max_t = i64::MIN;
        for (series_ref, labels, samples) in entries.iter() {
            put_uvarint(&mut self.buf, series_ref);
            if self.written.insert(series_ref) {
                self.buf.push(1);
                put_uvarint(&mut self.buf, labels.len() as u64);
                for l in labels.iter() {
                    put_uvarint(&mut self.buf, l.name.len() as u64);
                    self.buf.extend_from_slice(l.name.as_bytes());
                    put_uvarint(&mut self.buf, l.value.len() as u64);
                    self.buf.extend_from_slice(l.value.as_bytes());
                }
            } else {
                self.buf.push(0);
            }
            put_uvarint(&mut self.buf, samples.len() as u64);
            let mut prev = 0i64;
            for &(t, v) in samples {
                put_varint(&mut self.buf, t.wrapping_sub(prev));
                prev = t;
                self.buf.extend_from_slice(&v.to_bits().to_le_bytes());
                max_t = max_t.max(t);
            }
        }
        let payload_len = (self.buf.len() - start - RECORD_HEADER_LEN) as u32;
        let crc = crc32c::crc32c(&self.buf[start + RECORD_HEADER_LEN..]);
        self.buf[start..start + 4].copy_from_slice(&payload_len.to_le_bytes());
        self.buf[start + 4..start + 8].copy_from_slice(&crc.to_le_bytes());
        let m = self.seg_max_t.entry(self.seg).or_insert(i64::MIN);
        *m = (*m).max(max_t);
    }

    /// Writes the buffer and hands the group to the sync threads; the acknowledging thread answers
    /// its appends once it (and everything before it) is durable.
    fn flush(&mut self) {
        let mut synced = None;
        if !self.buf.is_empty() && broken_now(&self.broken).is_none() {
            let path = segment_path(&self.dir, self.seg);
            match self.file.write_all(&self.buf) {
                Ok(()) => {
                    self.size += self.buf.len() as u64;
                    let (done, rx) = mpsc::channel();
                    let job = SyncJob { seg: self.seg, file: Arc::clone(&self.shared_file), path, done };
                    match self.sync_tx.as_ref().map(|tx| tx.send(job)) {
                        Some(Ok(())) => synced = Some(rx),
                        _ => mark_broken(&self.broken, "WAL sync threads stopped".into()),
                    }
                }
                Err(e) => {
                    let msg = format!("write of {} failed at offset {}: {e}", path.display(), self.size);
                    mark_broken(&self.broken, msg);
                }
            }
        }
        self.buf.clear();
        if self.pending.is_empty() && synced.is_none() {
            return;
        }
        let job = AckJob { synced, replies: std::mem::take(&mut self.pending) };
        if let Some(Err(mpsc::SendError(job))) = self.ack_tx.as_ref().map(|tx| tx.send(job)) {
            for r in job.replies {
                let _ = r.send(Err("WAL acknowledging thread stopped".into()));
            }
        }
    }

    /// Waits until every group written so far is synced and answered.
    fn drain(&mut self) {
        let (tx, rx) = oneshot::channel();
        self.pending.push(tx);
        self.flush();
        let _ = rx.blocking_recv();
    }

    fn rotate(&mut self) -> Result<u64, String> {
        self.flush();
        if let Some(m) = broken_now(&self.broken) {
            return Err(m);
        }
        let next = self.seg + 1;
        match create_segment(&self.dir, next).and_then(|f| {
            let shared = f.try_clone().map_err(|e| io_err(&segment_path(&self.dir, next), e))?;
            Ok((f, shared))
        }) {
            Ok((f, shared)) => {
                self.file = f;
                self.shared_file = Arc::new(shared);
                self.seg = next;
                self.size = HEADER_LEN;
                self.written.clear();
                self.seg_max_t.insert(next, i64::MIN);
                Ok(next)
            }
            Err(e) => {
                let m = e.to_string();
                mark_broken(&self.broken, m.clone());
                Err(m)
            }
        }
    }

    fn truncate(&mut self, before: u64, below_t: i64) -> Result<usize, String> {
        let victims: Vec<u64> = self
            .seg_max_t
            .iter()
            .filter(|&(&s, &t)| s < before && s < self.seg && t < below_t)
            .map(|(&s, _)| s)
            .collect();
        for s in &victims {
            let p = segment_path(&self.dir, *s);
            match std::fs::remove_file(&p) {
                Ok(()) => {}
                Err(e) if e.kind() == std::io::ErrorKind::NotFound => {}
                Err(e) => return Err(format!("removing {}: {e}", p.display())),
            }
            self.seg_max_t.remove(s);
        }
        sync_dir(&self.dir).map_err(|e| e.to_string())?;
        Ok(victims.len())
    }

    fn run(mut self, rx: mpsc::Receiver<Cmd>) {
        while let Ok(first) = rx.recv() {
            let mut batch = vec![first];
            while let Ok(c) = rx.try_recv() {
                batch.push(c);
            }
            for cmd in batch {
                match cmd {
                    Cmd::Append(entries, reply) => {
                        if let Some(m) = broken_now(&self.broken) {
                            let _ = reply.send(Err(m));
                            continue;
                        }
                        if !entries.is_empty() {
                            if self.size + self.buf.len() as u64 > self.segment_size
                                && self.size > HEADER_LEN
                                && let Err(m) = self.rotate()
                            {
                                let _ = reply.send(Err(m));
                                continue;
                            }
                            self.encode(&entries);
                        }
                        self.pending.push(reply);
                    }
                    Cmd::Rotate(reply) => {
                        let _ = reply.send(self.rotate());
                    }
                    Cmd::Truncate { before_segment, below_t, reply } => {
                        self.flush();
                        let _ = reply.send(self.truncate(before_segment, below_t));
                    }
                    Cmd::Segments(reply) => {
                        self.flush();
                        let _ = reply.send(self.seg_max_t.iter().map(|(&s, &t)| (s, t)).collect());
                    }
                }
            }
            self.flush();
        }
        self.drain();
        // Closing the channels ends the helper threads once they have answered everything.
        self.sync_tx.take();
        self.ack_tx.take();
        for h in self.helpers.drain(..) {
            let _ = h.join();
        }
    }
}

/// Reads one segment, calling `f` per entry; truncates a torn or corrupt tail. Returns the
/// newest sample timestamp in it.
fn replay_segment(path: &Path, stats: &mut ReplayStats, f: &mut ReplayFn<'_>) -> Result<i64> {
    let data = std::fs::read(path).map_err(|e| io_err(path, e))?;
    let mut max_t = i64::MIN;
    if data.len() < HEADER_LEN as usize {
        tracing::warn!(segment = %path.display(), len = data.len(), "WAL segment shorter than its header; rewriting it empty");
        stats.truncated_bytes += data.len() as u64;
        let mut h = MAGIC.to_be_bytes().to_vec();
        h.extend_from_slice(&[1, 0, 0, 0]);
        std::fs::write(path, &h).map_err(|e| io_err(path, e))?;
        return Ok(max_t);
    }
    if data[..4] != MAGIC.to_be_bytes() || data[4] != 1 {
        return Err(Error::Wal {
            path: path.to_path_buf(),
            offset: 0,
            reason: "not a Strata WAL segment (bad magic or version)".into(),
        });
    }
    let mut refs: HashMap<u64, Arc<Labels>> = HashMap::new();
    let mut off = HEADER_LEN as usize;
    let mut bad: Option<String> = None;
    let mut samples: Vec<(i64, f64)> = Vec::new();
    while off < data.len() {
        if data.len() - off < RECORD_HEADER_LEN {
            bad = Some("record header cut short".into());
            break;
        }
        let len = u32::from_le_bytes([data[off], data[off + 1], data[off + 2], data[off + 3]]);
        let crc = u32::from_le_bytes([data[off + 4], data[off + 5], data[off + 6], data[off + 7]]);
        let body_start = off + RECORD_HEADER_LEN;
        if len > MAX_RECORD_LEN || data.len() - body_start < len as usize {
            bad = Some(format!("record of {len} bytes cut short"));
            break;
        }
        let payload = &data[body_start..body_start + len as usize];
        if crc32c::crc32c(payload) != crc {
            bad = Some("record checksum mismatch".into());
            break;
        }
        // Parse fully before handing anything out, so a bad record contributes nothing.
        let mut cur = Cursor { b: payload, pos: 0 };
        let parsed = (|| -> std::result::Result<Entries, String> {
            let kind = cur.bytes(1)?[0];
            if kind != KIND_SAMPLES {
                return Err(format!("unknown record kind {kind}"));
            }
            let n = cur.uvarint()?;
            let mut out = Vec::new();
            for _ in 0..n {
                let r = cur.uvarint()?;
                let has = cur.bytes(1)?[0];
                if has == 1 {
                    let nl = cur.uvarint()?;
                    let mut ls = Vec::new();
                    for _ in 0..nl {
                        let name = cur.string()?;
                        let value = cur.string()?;
                        ls.push(Label { name, value });
                    }
                    let labels = Labels::from_pairs(ls.into_iter().map(|l| (l.name, l.value)));
                    refs.insert(r, Arc::new(labels));
                }
                let ns = cur.uvarint()?;
                samples.clear();
                let mut prev = 0i64;
                for _ in 0..ns {
                    let t = prev.wrapping_add(cur.varint()?);
                    prev = t;
                    let b = cur.bytes(8)?;
                    let v = f64::from_bits(u64::from_le_bytes([b[0], b[1], b[2], b[3], b[4], b[5], b[6], b[7]]));
                    samples.push((t, v));
                }
                match refs.get(&r) {
                    Some(l) => out.push((Arc::clone(l), samples.clone())),
                    None => return Err(format!("series ref {r} used before its labels")),
                }
            }
            Ok(out)
        })();
        match parsed {
            Ok(entries) => {
                for (l, s) in &entries {
                    for &(t, _) in s {
                        max_t = max_t.max(t);
                    }
                    stats.samples += s.len() as u64;
                    f(l, s);
                }
                stats.records += 1;
            }
            Err(reason) => {
                bad = Some(format!("undecodable record: {reason}"));
                break;
            }
        }
        off = body_start + len as usize;
    }
    if let Some(reason) = bad {
        let cut = (data.len() - off) as u64;
        tracing::warn!(segment = %path.display(), offset = off, bytes = cut, reason = %reason, "truncating torn WAL tail");
        stats.truncated_bytes += cut;
        let file = OpenOptions::new().write(true).open(path).map_err(|e| io_err(path, e))?;
        file.set_len(off as u64).and_then(|_| file.sync_all()).map_err(|e| io_err(path, e))?;
    }
    Ok(max_t)
}

impl Wal {
    /// Opens (creating if needed) the WAL in `opts.dir`, replays every record through `f` (labels,
    /// samples in append order), truncates torn tails, and starts a new segment for writing.
    pub fn open(opts: &WalOptions, mut f: impl FnMut(&Arc<Labels>, &[(i64, f64)])) -> Result<(Wal, ReplayStats)> {
        let dir = opts.dir.clone();
        std::fs::create_dir_all(&dir).map_err(|e| io_err(&dir, e))?;
        let mut stats = ReplayStats::default();
        let mut seg_max_t = BTreeMap::new();
        let segs = list_segments(&dir)?;
        for &s in &segs {
            let mt = replay_segment(&segment_path(&dir, s), &mut stats, &mut f)?;
            seg_max_t.insert(s, mt);
            stats.segments += 1;
        }
        let seg = segs.last().map_or(1, |s| s + 1);
        let file = create_segment(&dir, seg)?;
        let shared_file = Arc::new(file.try_clone().map_err(|e| io_err(&segment_path(&dir, seg), e))?);
        seg_max_t.insert(seg, i64::MIN);
        let broken = Arc::new(Mutex::new(None));
        let (sync_tx, sync_rx) = mpsc::channel::<SyncJob>();
        let sync_rx = Arc::new(Mutex::new(sync_rx));
        let (ack_tx, ack_rx) = mpsc::channel::<AckJob>();
        let mut helpers = Vec::new();
        for i in 0..SYNC_THREADS {
            let rx = Arc::clone(&sync_rx);
            helpers.push(
                std::thread::Builder::new()
                    .name(format!("strata-wal-sync{i}"))
                    .spawn(move || sync_loop(rx))
                    .map_err(|e| io_err(&dir, e))?,
            );
        }
        let b = Arc::clone(&broken);
        helpers.push(
            std::thread::Builder::new()
                .name("strata-wal-ack".into())
                .spawn(move || ack_loop(ack_rx, b))
                .map_err(|e| io_err(&dir, e))?,
        );
        let w = Writer {
            dir: dir.clone(),
            segment_size: opts.segment_size,
            file,
            seg,
            size: HEADER_LEN,
            written: HashSet::new(),
            seg_max_t,
            broken,
            buf: Vec::new(),
            pending: Vec::new(),
            shared_file,
            sync_tx: Some(sync_tx),
            ack_tx: Some(ack_tx),
            helpers,
        };
        let (tx, rx) = mpsc::channel();
        let thread = std::thread::Builder::new()
            .name("strata-wal".into())
            .spawn(move || w.run(rx))
            .map_err(|e| io_err(&dir, e))?;
        Ok((Wal { dir, tx: Mutex::new(Some(tx)), thread: Mutex::new(Some(thread)) }, stats))
    }

    fn send(&self, cmd: Cmd) -> Result<()> {
        let g = self.tx.lock().unwrap_or_else(|p| p.into_inner());
        match g.as_ref().map(|tx| tx.send(cmd)) {
            Some(Ok(())) => Ok(()),
            _ => Err(Error::Wal { path: self.dir.clone(), offset: 0, reason: "writer stopped".into() }),
        }
    }

    /// Queues a record without waiting; records are written in submission order. An empty
    /// `entries` queues nothing but still resolves only after everything queued before it is durable.
    pub fn submit(&self, entries: impl Into<WalBatch>) -> Result<PendingAppend> {
        let (reply, rx) = oneshot::channel();
        self.send(Cmd::Append(entries.into(), reply))?;
        Ok(PendingAppend { rx, dir: self.dir.clone() })
    }

    /// Appends a record and returns once it is durable (group commit, see the module docs).
    pub async fn append(&self, entries: Vec<WalSeries>) -> Result<()> {
        self.submit(entries)?.wait().await
    }

    /// Flushes, closes the current segment and starts a new one; returns the new segment's number.
    /// Records submitted before the call are in older segments.
    pub fn rotate(&self) -> Result<PendingRotate> {
        let (reply, rx) = oneshot::channel();
        self.send(Cmd::Rotate(reply))?;
        Ok(PendingRotate { rx, dir: self.dir.clone() })
    }

    /// Deletes segments numbered below `before_segment` whose newest sample is below `below_t`
    /// (the end of an uploaded block); the segment being written is never deleted. Returns how many.
    pub async fn truncate(&self, before_segment: u64, below_t: i64) -> Result<usize> {
        let (reply, rx) = oneshot::channel();
        self.send(Cmd::Truncate { before_segment, below_t, reply })?;
        match rx.await {
            Ok(Ok(n)) => Ok(n),
            Ok(Err(reason)) => Err(Error::Wal { path: self.dir.clone(), offset: 0, reason }),
            Err(_) => Err(Error::Wal { path: self.dir.clone(), offset: 0, reason: "writer stopped".into() }),
        }
    }

    /// The segments on disk with their newest sample timestamp (i64::MIN when empty), ascending.
    pub async fn segments(&self) -> Result<Vec<(u64, i64)>> {
        let (reply, rx) = oneshot::channel();
        self.send(Cmd::Segments(reply))?;
        rx.await.map_err(|_| Error::Wal { path: self.dir.clone(), offset: 0, reason: "writer stopped".into() })
    }

    /// The WAL directory.
    pub fn dir(&self) -> &Path {
        &self.dir
    }
}

/// A pending segment rotation.
#[derive(Debug)]
pub struct PendingRotate {
    rx: oneshot::Receiver<Result<u64, String>>,
    dir: PathBuf,
}

impl PendingRotate {
    /// Waits for the new segment; returns its number.
    pub async fn wait(self) -> Result<u64> {
        match self.rx.await {
            Ok(Ok(n)) => Ok(n),
            Ok(Err(reason)) => Err(Error::Wal { path: self.dir, offset: 0, reason }),
            Err(_) => Err(Error::Wal { path: self.dir, offset: 0, reason: "writer stopped".into() }),
        }
    }
}

impl Drop for Wal {
    /// Stops the writer after it has flushed everything queued.
    fn drop(&mut self) {
        self.tx.lock().unwrap_or_else(|p| p.into_inner()).take();
        if let Some(t) = self.thread.lock().unwrap_or_else(|p| p.into_inner()).take() {
            let _ = t.join();
        }
    }
}

#[cfg(test)]
#[allow(clippy::unwrap_used, clippy::expect_used)]
mod tests {
    use super::*;

    fn series(r: u64, name: &str, samples: Vec<(i64, f64)>) -> WalSeries {
        WalSeries { series_ref: r, labels: Arc::new(Labels::from_pairs([("__name__", name)])), samples }
    }

    fn replay(dir: &Path) -> (Vec<(String, i64, u64)>, ReplayStats, Wal) {
        let mut got = Vec::new();
        let (w, st) = Wal::open(&WalOptions::new(dir), |l, s| {
            for &(t, v) in s {
                got.push((l.to_string(), t, v.to_bits()));
            }
        })
        .unwrap();
        (got, st, w)
    }

    #[tokio::test]
    async fn flat_batches_replay_like_per_series_entries() {
        let dir = tempfile::tempdir().unwrap();
        {
            let (_, _, w) = replay(dir.path());
            let (a, b) =
                (Arc::new(Labels::from_pairs([("__name__", "a")])), Arc::new(Labels::from_pairs([("__name__", "b")])));
            let mut batch = WalBatch::with_capacity(3, 4);
            batch.push_sample(1, 1.0);
            batch.push_sample(2, 2.0);
            assert_eq!(batch.open_samples(), &[(1, 1.0), (2, 2.0)]);
            batch.finish_series(1, Arc::clone(&a));
            batch.finish_series(2, Arc::clone(&b)); // no samples: left out
            batch.push_sample(3, 3.0);
            batch.finish_series(2, b);
            assert_eq!(batch.series.len(), 2);
            w.submit(batch).unwrap().wait().await.unwrap();
            w.append(vec![series(1, "a", vec![(4, 4.0)])]).await.unwrap();
            assert!(WalBatch::default().is_empty());
        }
        let (got, st, _) = replay(dir.path());
        let want: Vec<(String, i64, u64)> = [("a", 1, 1.0), ("a", 2, 2.0), ("b", 3, 3.0), ("a", 4, 4.0)]
            .iter()
            .map(|&(n, t, v)| (n.to_string(), t, f64::to_bits(v)))
            .collect();
        assert_eq!(got, want);
        assert_eq!((st.records, st.samples), (2, 4));
    }

    #[tokio::test]
    async fn concurrent_appends_replay_in_full() {
        let dir = tempfile::tempdir().unwrap();
        {
            let (got, _, w) = replay(dir.path());
            assert!(got.is_empty());
            let w = Arc::new(w);
            let mut tasks = Vec::new();
            for i in 0..8u64 {
                let w = Arc::clone(&w);
                tasks.push(tokio::spawn(async move {
                    for j in 0..50i64 {
                        w.append(vec![series(i, &format!("m{i}"), vec![(j, f64::NAN), (j + 1000, -0.0)])])
                            .await
                            .unwrap();
                    }
                }));
            }
            for t in tasks {
                t.await.unwrap();
            }
        }
        let (got, st, _w) = replay(dir.path());
        assert_eq!(got.len(), 8 * 50 * 2);
        assert_eq!(st.records, 400);
        assert_eq!(st.truncated_bytes, 0);
        for i in 0..8 {
            let mine: Vec<_> = got.iter().filter(|g| g.0 == format!("m{i}")).collect();
            assert_eq!(mine.len(), 100);
            assert_eq!(mine[0].1, 0);
            assert_eq!(mine[0].2, f64::NAN.to_bits());
            assert_eq!(mine[99].1, 1049);
            assert_eq!(mine[99].2, (-0.0f64).to_bits());
        }
    }

    #[tokio::test]
    async fn torn_tail_is_truncated_and_rest_kept() {
        let dir = tempfile::tempdir().unwrap();
        {
            let (_, _, w) = replay(dir.path());
            for j in 0..10 {
                w.append(vec![series(1, "a", vec![(j, j as f64)])]).await.unwrap();
            }
        }
        let segs = list_segments(dir.path()).unwrap();
        assert_eq!(segs, vec![1]);
        let p = segment_path(dir.path(), 1);
        let len = std::fs::metadata(&p).unwrap().len();
        // Cut the last record in half.
        let f = OpenOptions::new().write(true).open(&p).unwrap();
        f.set_len(len - 5).unwrap();
        drop(f);
        let (got, st, w) = replay(dir.path());
        assert_eq!(got.iter().map(|g| g.1).collect::<Vec<_>>(), (0..9).collect::<Vec<i64>>());
        assert!(st.truncated_bytes > 0);
        // Writing continues in a new segment; the labels are written again there.
        w.append(vec![series(1, "a", vec![(100, 1.0)])]).await.unwrap();
        drop(w);
        let (got, st, _w) = replay(dir.path());
        assert_eq!(got.len(), 10);
        assert_eq!(got[9], ("a".to_string(), 100, 1.0f64.to_bits()));
        assert_eq!(st.truncated_bytes, 0);
        // A flipped bit in the middle is caught by the checksum.
        let mut b = std::fs::read(&p).unwrap();
        let mid = b.len() / 2;
        b[mid] ^= 0x10;
        std::fs::write(&p, b).unwrap();
        drop(_w);
        let (got, st, _w) = replay(dir.path());
        assert!(got.len() < 10 && st.truncated_bytes > 0);
        assert_eq!(got.last().unwrap().1, 100);
    }

    #[tokio::test]
    async fn rotate_and_truncate_whole_segments() {
        let dir = tempfile::tempdir().unwrap();
        let (_, _, w) = replay(dir.path());
        w.append(vec![series(1, "a", vec![(10, 1.0)])]).await.unwrap();
        let s2 = w.rotate().unwrap().wait().await.unwrap();
        assert_eq!(s2, 2);
        w.append(vec![series(1, "a", vec![(20, 2.0)])]).await.unwrap();
        let s3 = w.rotate().unwrap().wait().await.unwrap();
        w.append(vec![series(1, "a", vec![(30, 3.0)])]).await.unwrap();
        assert_eq!(w.segments().await.unwrap(), vec![(1, 10), (2, 20), (3, 30)]);
        // Only segment 1 holds nothing at or above 15.
        assert_eq!(w.truncate(s3, 15).await.unwrap(), 1);
        assert_eq!(w.truncate(s3, 25).await.unwrap(), 1);
        assert_eq!(w.truncate(s3 + 1, 1000).await.unwrap(), 0, "the open segment stays");
        drop(w);
        let (got, _, _w) = replay(dir.path());
        assert_eq!(got, vec![("a".to_string(), 30, 3.0f64.to_bits())]);
    }

    #[tokio::test]
    async fn size_rotation_repeats_labels() {
        let dir = tempfile::tempdir().unwrap();
        let opts = WalOptions { dir: dir.path().to_path_buf(), segment_size: 200 };
        {
            let (w, _) = Wal::open(&opts, |_, _| {}).unwrap();
            for j in 0..40 {
                w.append(vec![series(7, "rot", vec![(j, 0.5)])]).await.unwrap();
            }
        }
        assert!(list_segments(dir.path()).unwrap().len() > 2);
        let mut n = 0;
        let (_w, st) = Wal::open(&opts, |l, s| {
            assert_eq!(l.metric_name(), Some("rot"));
            n += s.len();
        })
        .unwrap();
        assert_eq!((n, st.truncated_bytes), (40, 0));
    }

    /// Closed-loop throughput of 8 writers appending 1000 samples each per call, like `bench
    /// receive`'s clients: shows how many appends per second the fsync policy allows on this disk.
    /// Run with `cargo test -p engine --lib wal_append_rate -- --ignored --nocapture`.
    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    #[ignore = "measurement, not a check"]
    async fn wal_append_rate() {
        let dir = tempfile::tempdir().unwrap();
        let (_, _, w) = replay(dir.path());
        let w = Arc::new(w);
        let stop = std::time::Instant::now() + std::time::Duration::from_secs(3);
        let mut tasks = Vec::new();
        for i in 0..8u64 {
            let w = Arc::clone(&w);
            tasks.push(tokio::spawn(async move {
                let mut n = 0u64;
                let mut lat = Vec::new();
                while std::time::Instant::now() < stop {
                    let batch: Vec<WalSeries> = (0..100)
                        .map(|s| series(i * 100 + s, "m", (0..10).map(|k| (n as i64 * 10 + k, k as f64)).collect()))
                        .collect();
                    let t0 = std::time::Instant::now();
                    w.append(batch).await.unwrap();
                    lat.push(t0.elapsed().as_secs_f64() * 1e3);
                    n += 1;
                }
                (n, lat)
            }));
        }
        let (mut total, mut lat) = (0, Vec::new());
        for t in tasks {
            let (n, l) = t.await.unwrap();
            total += n;
            lat.extend(l);
        }
        lat.sort_by(f64::total_cmp);
        eprintln!(
            "WAL: {:.0} appends/s of 1000 samples ({:.0} samples/s), latency p50 {:.2} ms, p99 {:.2} ms",
            total as f64 / 3.0,
            total as f64 * 1000.0 / 3.0,
            lat[lat.len() / 2],
            lat[lat.len() * 99 / 100]
        );
    }
}
