//! Decoding and validation of Prometheus remote write 1.0 requests, and the sending side
//! ([`encode`], [`post`]) that receive's forwarding, the tests and the benchmarks use.
//!
//! ```text
//!   HTTP body ──snappy block decode──► message ──parse (borrowing strings)──► Request<'msg>
//!   (≤ max body)   (≤ max body, 400)                (400, names the offset)     │ valid series: label pairs + samples
//!                                                                                └ rejected: 400, names the series
//! ```
//!
//! [`parse`] is a small hand-written protobuf decoder for `prometheus.WriteRequest` that keeps label
//! names and values as `&str` slices of the decompressed message: nothing is allocated per label or
//! per series, only a few flat vectors per request. Field numbers and wire types are those of
//! Prometheus's `remote.proto`/`types.proto`; unknown fields of any wire type (groups included) are
//! skipped, repeated scalar fields keep the last value, fields may come in any order, as protobuf
//! specifies. Exemplars, native histograms and metadata are counted or skipped without looking inside.
//! A malformed message (a length running past its end, a bad varint, a known field with the wrong wire
//! type, invalid UTF-8 in a label) fails as a whole with an error naming the byte offset.
//!
//! Validation follows Thanos receive: a series whose label names are not valid
//! (`[a-zA-Z_][a-zA-Z0-9_]*`), not strictly sorted by name (Prometheus sends them sorted; Thanos rejects
//! unsorted sets rather than sorting them), duplicated or empty, or that has no or an empty metric name,
//! is rejected; the other series of the same request are kept. Labels with an empty value are dropped
//! (an empty value means "no such label" in Prometheus). Native histograms, exemplars and metadata are
//! not stored (yet): their counts are reported so the caller can log them.

use engine::Labels;
use engine::head::AppendSeries;
use engine::labels::METRIC_NAME;
use prost::Message;
use proto::prometheus::{Label, WriteRequest};

use crate::error::{Error, Result};

/// Default `--receive.max-body-size`: 32 MiB, applied to the compressed body and to the decompressed
/// message alike.
pub const DEFAULT_MAX_BODY_BYTES: usize = 32 << 20;

/// Decompresses a snappy block-format body, refusing a message that would decompress to more than
/// `max_bytes` (checked from the header before allocating).
pub fn decompress(body: &[u8], max_bytes: usize) -> Result<Vec<u8>> {
    if body.len() > max_bytes {
        return Err(Error::BodyTooLarge { what: "request body", size: body.len() as u64, limit: max_bytes as u64 });
    }
    let len = snap::raw::decompress_len(body).map_err(|e| Error::BadSnappy { reason: e.to_string() })?;
    if len > max_bytes {
        return Err(Error::BodyTooLarge { what: "decompressed message", size: len as u64, limit: max_bytes as u64 });
    }
    snap::raw::Decoder::new().decompress_vec(body).map_err(|e| Error::BadSnappy { reason: e.to_string() })
}

/// Decodes a remote write 1.0 body (snappy block format around a `prometheus.WriteRequest`).
pub fn decode_write_request(body: &[u8], max_bytes: usize) -> Result<WriteRequest> {
    let raw = decompress(body, max_bytes)?;
    WriteRequest::decode(raw.as_slice()).map_err(|e| Error::BadProtobuf { reason: e.to_string() })
}

/// Encodes a request as a remote write 1.0 body (protobuf, snappy block format).
pub fn encode_write_request(req: &WriteRequest) -> Result<Vec<u8>> {
    compress(&req.encode_to_vec())
}

/// Encodes owned series (labels in order, samples as given) as a remote write 1.0 body.
pub fn encode(series: &[Series]) -> Result<Vec<u8>> {
    encode_write_request(&to_write_request(series))
}

/// A remote write 1.0 POST of `body` (snappy-compressed `prometheus.WriteRequest`, as
/// [`encode`] makes it) to `url`, with the headers the protocol requires. The caller adds its own
/// (tenant, replica) and sends it.
pub fn post(client: &reqwest::Client, url: &str, body: Vec<u8>) -> reqwest::RequestBuilder {
    client
        .post(url)
        .header(reqwest::header::CONTENT_TYPE, "application/x-protobuf")
        .header(reqwest::header::CONTENT_ENCODING, "snappy")
        .header("X-Prometheus-Remote-Write-Version", "0.1.0")
        .body(body)
}

/// Compresses an encoded message in the snappy block format (the inverse of [`decompress`]).
pub fn compress(raw: &[u8]) -> Result<Vec<u8>> {
    snap::raw::Encoder::new()
        .compress_vec(raw)
        .map_err(|e| Error::BadSnappy { reason: format!("compressing a request: {e}") })
}

/// Builds a `WriteRequest` of the given series (labels in order, samples as given).
pub fn to_write_request(series: &[Series]) -> WriteRequest {
    WriteRequest {
        timeseries: series
            .iter()
            .map(|(l, s)| proto::prometheus::TimeSeries {
                labels: l.iter().map(|l| Label { name: l.name.clone(), value: l.value.clone() }).collect(),
                samples: s.iter().map(|&(timestamp, value)| proto::prometheus::Sample { value, timestamp }).collect(),
                ..Default::default()
            })
            .collect(),
        metadata: vec![],
    }
}

/// The label-name rule remote write validates with (`[a-zA-Z_][a-zA-Z0-9_]*`).
pub use engine::labels::valid_label_name;

/// Prints received labels like Prometheus does, before validation (so unsorted or duplicate labels
/// show as sent).
fn show(labels: &[(&str, &str)]) -> String {
    let name = labels.iter().find(|l| l.0 == METRIC_NAME).map(|l| l.1).unwrap_or("");
    let rest: Vec<String> =
        labels.iter().filter(|l| l.0 != METRIC_NAME).map(|l| format!("{}={:?}", l.0, l.1)).collect();
    format!("{name}{{{}}}", rest.join(", "))
}

/// Checks the labels of one series, as received: Prometheus's and Thanos's rules for names,
/// values, order and duplicates.
fn check_labels(labels: &[(&str, &str)]) -> Result<()> {
    let bad = |reason: String| Error::InvalidSeries { series: show(labels), reason };
    let mut name_seen = None;
    for (i, &(name, value)) in labels.iter().enumerate() {
        if name.is_empty() {
            return Err(bad("empty label name".into()));
        }
        if !valid_label_name(name) {
            return Err(bad(format!("invalid label name {name:?}")));
        }
        if i > 0 {
            let prev = labels[i - 1].0;
            if prev == name {
                return Err(bad(format!("duplicate label name {name:?}")));
            }
            if prev > name {
                return Err(bad(format!("labels are not sorted by name ({prev:?} before {name:?})")));
            }
        }
        if name_seen.is_none() && name == METRIC_NAME {
            name_seen = Some(value);
        }
    }
    match name_seen {
        None => return Err(bad("no metric name (__name__ label)".into())),
        Some("") => return Err(bad("empty metric name".into())),
        Some(_) => {}
    }
    Ok(())
}

/// A parsed and validated remote write request; label strings borrow from the decompressed message.
#[derive(Debug, Default)]
pub struct Request<'a> {
    /// Label pairs of the valid series, one run per series (empty values dropped).
    labels: Vec<(&'a str, &'a str)>,
    /// Samples of the valid series, one run per series.
    samples: Vec<(i64, f64)>,
    /// Per valid series: the end of its run in `labels` and in `samples`.
    ends: Vec<(usize, usize)>,
    /// Invalid series, each an [`Error::InvalidSeries`] naming it.
    pub rejected: Vec<Error>,
    /// Native histogram samples received and not stored.
    pub histograms_dropped: usize,
    /// Exemplars received and not stored.
    pub exemplars_dropped: usize,
}

impl<'a> Request<'a> {
    /// Number of valid series with float samples.
    pub fn len(&self) -> usize {
        self.ends.len()
    }

    /// True when no valid series has float samples.
    pub fn is_empty(&self) -> bool {
        self.ends.is_empty()
    }

    /// Number of float samples of the valid series.
    pub fn num_samples(&self) -> usize {
        self.samples.len()
    }

    /// The valid series (series without float samples are left out), in request order.
    pub fn series(&self) -> Vec<AppendSeries<'_>> {
        let mut out = Vec::with_capacity(self.ends.len());
        let (mut l0, mut s0) = (0, 0);
        for &(l1, s1) in &self.ends {
            out.push(AppendSeries { labels: &self.labels[l0..l1], samples: &self.samples[s0..s1] });
            (l0, s0) = (l1, s1);
        }
        out
    }
}

/// Parses and validates a decompressed `prometheus.WriteRequest` (see the module docs).
pub fn parse(msg: &[u8]) -> Result<Request<'_>> {
    Ok(parse_request(msg)?)
}

fn parse_request(msg: &[u8]) -> Pb<Request<'_>> {
    // Sized for typical requests (a sample takes about 17 bytes, a label 20 or more) so the vectors
    // rarely grow.
    let mut out = Request {
        labels: Vec::with_capacity(msg.len() / 64),
        samples: Vec::with_capacity(msg.len() / 20),
        ends: Vec::with_capacity(msg.len() / 256),
        ..Default::default()
    };
    let mut r = Reader { buf: msg, pos: 0, end: msg.len() };
    while let Some((field, wire)) = r.key()? {
        match field {
            1 => {
                let ts = r.message(field, wire, "WriteRequest.timeseries")?;
                parse_series(ts, &mut out)?;
            }
            3 => {
                r.message(field, wire, "WriteRequest.metadata")?;
            }
            _ => r.skip(field, wire, 0)?,
        }
    }
    Ok(out)
}

/// Parses one `TimeSeries`, appending it to `out` when valid.
fn parse_series<'a>(mut r: Reader<'a>, out: &mut Request<'a>) -> Pb<()> {
    let (l0, s0) = (out.labels.len(), out.samples.len());
    while let Some((field, wire)) = r.key()? {
        match field {
            1 => {
                let mut l = r.message(field, wire, "TimeSeries.labels")?;
                if let Some(pair) = l.label_fast() {
                    out.labels.push(pair);
                    continue;
                }
                let (mut name, mut value) = ("", "");
                while let Some((f, w)) = l.key()? {
                    match f {
                        1 => name = l.string(f, w, "Label.name")?,
                        2 => value = l.string(f, w, "Label.value")?,
                        _ => l.skip(f, w, 0)?,
                    }
                }
                out.labels.push((name, value));
            }
            2 => {
                let mut m = r.message(field, wire, "TimeSeries.samples")?;
                if let Some(s) = m.sample_fast() {
                    out.samples.push(s);
                    continue;
                }
                let (mut t, mut v) = (0i64, 0f64);
                while let Some((f, w)) = m.key()? {
                    match f {
                        1 => v = f64::from_bits(m.fixed64(f, w, "Sample.value")?),
                        2 => {
                            m.expect_wire(f, w, WIRE_VARINT, "Sample.timestamp")?;
                            t = m.varint()? as i64;
                        }
                        _ => m.skip(f, w, 0)?,
                    }
                }
                out.samples.push((t, v));
            }
            3 => {
                r.message(field, wire, "TimeSeries.exemplars")?;
                out.exemplars_dropped += 1;
            }
            4 => {
                r.message(field, wire, "TimeSeries.histograms")?;
                out.histograms_dropped += 1;
            }
            _ => r.skip(field, wire, 0)?,
        }
    }
    if let Err(e) = check_labels(&out.labels[l0..]) {
        out.labels.truncate(l0);
        out.samples.truncate(s0);
        out.rejected.push(e);
        return Ok(());
    }
    if out.samples.len() == s0 {
        out.labels.truncate(l0);
        return Ok(());
    }
    // drop empty-valued labels (never the metric name: it was checked non-empty)
    let mut w = l0;
    for i in l0..out.labels.len() {
        if !out.labels[i].1.is_empty() {
            out.labels[w] = out.labels[i];
            w += 1;
        }
    }
    out.labels.truncate(w);
    out.ends.push((out.labels.len(), out.samples.len()));
    Ok(())
}

const WIRE_VARINT: u8 = 0;
const WIRE_FIXED64: u8 = 1;
const WIRE_LEN: u8 = 2;
const WIRE_START_GROUP: u8 = 3;
const WIRE_END_GROUP: u8 = 4;
const WIRE_FIXED32: u8 = 5;
/// Nesting limit of skipped groups (prost uses 100 for messages).
const MAX_GROUP_DEPTH: usize = 100;

/// A parse failure: where and what (small, so the hot reader functions return it cheaply; it becomes
/// an [`Error::BadProtobuf`] once, at the top).
#[derive(Debug)]
struct PbError {
    at: usize,
    what: PbWhat,
}

#[derive(Debug)]
enum PbWhat {
    VarintPastEnd,
    VarintTooLong,
    BadKey(u64),
    BadWireType { field: u64, wire: u8 },
    WrongWireType { field: u32, wire: u8, want: u8, name: &'static str },
    PastEnd { field: u32, need: u64, left: u64 },
    NotUtf8 { field: u32, name: &'static str, valid_up_to: usize },
    GroupsTooDeep,
    GroupWithoutEnd(u32),
    UnexpectedEndGroup(u32),
}

impl From<PbError> for Error {
    fn from(e: PbError) -> Error {
        let what = match e.what {
            PbWhat::VarintPastEnd => "varint runs past the end of its message".to_string(),
            PbWhat::VarintTooLong => "varint is longer than 64 bits".to_string(),
            PbWhat::BadKey(k) => format!("invalid field key {k}"),
            PbWhat::BadWireType { field, wire } => format!("invalid wire type {wire} of field {field}"),
            PbWhat::WrongWireType { field, wire, want, name } => {
                format!("field {field} ({name}) has wire type {wire}, want {want}")
            }
            PbWhat::PastEnd { field, need, left } => format!("field {field} needs {need} bytes, {left} are left"),
            PbWhat::NotUtf8 { field, name, valid_up_to } => {
                format!("field {field} ({name}) is not valid UTF-8 (after {valid_up_to} bytes)")
            }
            PbWhat::GroupsTooDeep => "groups nested too deeply".to_string(),
            PbWhat::GroupWithoutEnd(f) => format!("group of field {f} has no end"),
            PbWhat::UnexpectedEndGroup(f) => format!("unexpected end of group (field {f})"),
        };
        Error::BadProtobuf { reason: format!("at byte offset {}: {what}", e.at) }
    }
}

type Pb<T> = std::result::Result<T, PbError>;

/// A varint at the start of `b`: its value and length; None when it runs past `b` or past 64 bits.
#[inline]
fn varint_at(b: &[u8]) -> Option<(u64, usize)> {
    // Up to 8 bytes at once: find the first byte without the continuation bit, then gather the
    // 7-bit groups below it.
    if let Some(w) = b.get(..8) {
        let mut a = [0u8; 8];
        a.copy_from_slice(w);
        let w = u64::from_le_bytes(a);
        let stops = !w & 0x8080_8080_8080_8080;
        if stops != 0 {
            let len = (stops.trailing_zeros() as usize + 1) / 8;
            let m = if len == 8 { w } else { w & ((1u64 << (8 * len)) - 1) };
            let mut x = 0u64;
            for i in 0..len {
                x |= ((m >> (8 * i)) & 0x7f) << (7 * i);
            }
            return Some((x, len));
        }
    }
    let mut x = 0u64;
    for (i, &byte) in b.iter().take(10).enumerate() {
        if i == 9 && byte > 1 {
            return None;
        }
        x |= u64::from(byte & 0x7f) << (7 * i);
        if byte < 0x80 {
            return Some((x, i + 1));
        }
    }
    None
}

/// A protobuf reader over `buf[pos..end]`; offsets in errors are from the start of the message.
#[derive(Debug, Clone, Copy)]
struct Reader<'a> {
    buf: &'a [u8],
    pos: usize,
    end: usize,
}

impl<'a> Reader<'a> {
    #[inline]
    fn varint(&mut self) -> Pb<u64> {
        if self.pos < self.end
            && let Some(&b) = self.buf.get(self.pos)
            && b < 0x80
        {
            self.pos += 1;
            return Ok(u64::from(b));
        }
        self.varint_slow()
    }

    fn varint_slow(&mut self) -> Pb<u64> {
        if let Some((x, n)) = self.buf.get(self.pos..self.end).and_then(varint_at) {
            self.pos += n;
            return Ok(x);
        }
        let start = self.pos;
        let mut x = 0u64;
        for i in 0..10 {
            let b = match self.buf.get(self.pos) {
                Some(&b) if self.pos < self.end => b,
                _ => return Err(PbError { at: start, what: PbWhat::VarintPastEnd }),
            };
            self.pos += 1;
            if i == 9 && b > 1 {
                return Err(PbError { at: start, what: PbWhat::VarintTooLong });
            }
            x |= u64::from(b & 0x7f) << (7 * i);
            if b < 0x80 {
                return Ok(x);
            }
        }
        Err(PbError { at: start, what: PbWhat::VarintTooLong })
    }

    /// The rest of this reader's bytes.
    #[inline]
    fn rest(&self) -> &'a [u8] {
        self.buf.get(self.pos..self.end).unwrap_or_default()
    }

    /// A `Label` message laid out as Prometheus sends it: name (field 1), then value (field 2), each
    /// shorter than 128 bytes, nothing else. None for any other layout (the caller then decodes the
    /// fields one by one, with the same result), for invalid UTF-8 too (the slow path reports it).
    #[inline]
    fn label_fast(&self) -> Option<(&'a str, &'a str)> {
        let b = self.rest();
        let nlen = usize::from(*b.get(1)?);
        let vlen = usize::from(*b.get(nlen + 3)?);
        if b[0] != 0x0a || nlen >= 0x80 || b[nlen + 2] != 0x12 || vlen >= 0x80 || nlen + vlen + 4 != b.len() {
            return None;
        }
        // one UTF-8 check for both strings: the key and length bytes between them are ASCII
        let s = std::str::from_utf8(b).ok()?;
        Some((s.get(2..2 + nlen)?, s.get(nlen + 4..)?))
    }

    /// A `Sample` message laid out as Prometheus sends it: value (field 1, fixed64), then timestamp
    /// (field 2, varint), nothing else. None for any other layout (zero values are left out by
    /// senders, fields may come in another order); the caller then decodes the fields one by one.
    #[inline]
    fn sample_fast(&self) -> Option<(i64, f64)> {
        let b = self.rest();
        if b.len() < 11 || b[0] != 0x09 || b[9] != 0x10 {
            return None;
        }
        let mut a = [0u8; 8];
        a.copy_from_slice(&b[1..9]);
        let (t, n) = varint_at(&b[10..])?;
        if 10 + n != b.len() {
            return None;
        }
        Some((t as i64, f64::from_bits(u64::from_le_bytes(a))))
    }

    /// The next field key, or None at the end of the message.
    #[inline]
    fn key(&mut self) -> Pb<Option<(u32, u8)>> {
        if self.pos >= self.end {
            return Ok(None);
        }
        let at = self.pos;
        let k = self.varint()?;
        let wire = (k & 7) as u8;
        let field = k >> 3;
        if k > u64::from(u32::MAX) || field == 0 {
            return Err(PbError { at, what: PbWhat::BadKey(k) });
        }
        if wire > WIRE_FIXED32 {
            return Err(PbError { at, what: PbWhat::BadWireType { field, wire } });
        }
        Ok(Some((field as u32, wire)))
    }

    #[inline]
    fn expect_wire(&self, field: u32, wire: u8, want: u8, name: &'static str) -> Pb<()> {
        if wire == want {
            return Ok(());
        }
        Err(PbError { at: self.pos, what: PbWhat::WrongWireType { field, wire, want, name } })
    }

    /// Skips the next `n` bytes; returns where they start.
    #[inline]
    fn take(&mut self, n: u64, field: u32) -> Pb<usize> {
        let left = (self.end - self.pos) as u64;
        if n > left {
            return Err(PbError { at: self.pos, what: PbWhat::PastEnd { field, need: n, left } });
        }
        let start = self.pos;
        self.pos += n as usize;
        Ok(start)
    }

    /// A length-delimited field as a reader of its own.
    #[inline]
    fn message(&mut self, field: u32, wire: u8, name: &'static str) -> Pb<Reader<'a>> {
        self.expect_wire(field, wire, WIRE_LEN, name)?;
        let n = self.varint()?;
        let start = self.take(n, field)?;
        Ok(Reader { buf: self.buf, pos: start, end: self.pos })
    }

    #[inline]
    fn string(&mut self, field: u32, wire: u8, name: &'static str) -> Pb<&'a str> {
        let at = self.pos;
        let m = self.message(field, wire, name)?;
        let b = self.buf.get(m.pos..m.end).unwrap_or_default();
        std::str::from_utf8(b)
            .map_err(|e| PbError { at, what: PbWhat::NotUtf8 { field, name, valid_up_to: e.valid_up_to() } })
    }

    #[inline]
    fn fixed64(&mut self, field: u32, wire: u8, name: &'static str) -> Pb<u64> {
        self.expect_wire(field, wire, WIRE_FIXED64, name)?;
        let start = self.take(8, field)?;
        let mut a = [0u8; 8];
        if let Some(b) = self.buf.get(start..start + 8) {
            a.copy_from_slice(b);
        }
        Ok(u64::from_le_bytes(a))
    }

    /// Skips a field of any wire type (a group up to its matching end).
    fn skip(&mut self, field: u32, wire: u8, depth: usize) -> Pb<()> {
        match wire {
            WIRE_VARINT => {
                self.varint()?;
            }
            WIRE_FIXED64 => {
                self.take(8, field)?;
            }
            WIRE_FIXED32 => {
                self.take(4, field)?;
            }
            WIRE_LEN => {
                let n = self.varint()?;
                self.take(n, field)?;
            }
            WIRE_START_GROUP => {
                if depth >= MAX_GROUP_DEPTH {
                    return Err(PbError { at: self.pos, what: PbWhat::GroupsTooDeep });
                }
                loop {
                    let at = self.pos;
                    match self.key()? {
                        None => return Err(PbError { at, what: PbWhat::GroupWithoutEnd(field) }),
                        Some((f, WIRE_END_GROUP)) if f == field => return Ok(()),
                        Some((f, w)) => self.skip(f, w, depth + 1)?,
                    }
                }
            }
            _ => return Err(PbError { at: self.pos, what: PbWhat::UnexpectedEndGroup(field) }),
        }
        Ok(())
    }
}

/// One series with owned labels and its samples (what [`to_write_request`] encodes).
pub type Series = (Labels, Vec<(i64, f64)>);

/// Borrowed series as the protobuf `TimeSeries` of a remote write (or `thanos.WriteRequest`).
pub fn to_timeseries(series: &[AppendSeries<'_>]) -> Vec<proto::prometheus::TimeSeries> {
    series
        .iter()
        .map(|s| proto::prometheus::TimeSeries {
            labels: s.labels.iter().map(|&(n, v)| Label { name: n.into(), value: v.into() }).collect(),
            samples: s
                .samples
                .iter()
                .map(|&(timestamp, value)| proto::prometheus::Sample { value, timestamp })
                .collect(),
            ..Default::default()
        })
        .collect()
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used, clippy::expect_used)]
    use proto::prometheus::{Sample, TimeSeries};

    use super::*;

    /// Checks the labels of one series; on success returns them as a [`Labels`].
    fn validate_labels(labels: &[Label]) -> Result<Labels> {
        let pairs: Vec<(&str, &str)> = labels.iter().map(|l| (l.name.as_str(), l.value.as_str())).collect();
        check_labels(&pairs)?;
        Ok(Labels::from_pairs(pairs))
    }

    /// The valid content of a request with owned labels and what was left out (see [`decode`]).
    #[derive(Debug, Default)]
    struct Decoded {
        /// Valid series with their samples (series without float samples are left out).
        series: Vec<Series>,
        /// Invalid series, each an [`Error::InvalidSeries`] naming it.
        rejected: Vec<Error>,
        /// Native histogram samples received and not stored.
        histograms_dropped: usize,
        /// Exemplars received and not stored.
        exemplars_dropped: usize,
    }

    impl Decoded {
        /// Number of float samples in [`Decoded::series`].
        fn num_samples(&self) -> usize {
            self.series.iter().map(|s| s.1.len()).sum()
        }
    }

    /// Decodes and validates a remote write 1.0 body in one step, into owned series (a test convenience
    /// over [`decompress`] and [`parse`], which the receive path uses without the copies).
    fn decode(body: &[u8], max_bytes: usize) -> Result<Decoded> {
        let raw = decompress(body, max_bytes)?;
        let r = parse(&raw)?;
        let series =
            r.series().iter().map(|s| (Labels::from_pairs(s.labels.iter().copied()), s.samples.to_vec())).collect();
        Ok(Decoded {
            series,
            rejected: r.rejected,
            histograms_dropped: r.histograms_dropped,
            exemplars_dropped: r.exemplars_dropped,
        })
    }

    fn lab(pairs: &[(&str, &str)]) -> Vec<Label> {
        pairs.iter().map(|(n, v)| Label { name: n.to_string(), value: v.to_string() }).collect()
    }

    fn ts(pairs: &[(&str, &str)], samples: &[(i64, f64)]) -> TimeSeries {
        TimeSeries {
            labels: lab(pairs),
            samples: samples.iter().map(|&(timestamp, value)| Sample { value, timestamp }).collect(),
            ..Default::default()
        }
    }

    fn body(req: &WriteRequest) -> Vec<u8> {
        snap::raw::Encoder::new().compress_vec(&req.encode_to_vec()).unwrap()
    }

    #[test]
    fn decodes_valid_request() {
        let req = WriteRequest {
            timeseries: vec![
                ts(
                    &[("__name__", "up"), ("instance", "localhost:9090"), ("job", "prometheus")],
                    &[(1000, 1.0), (2000, 0.0)],
                ),
                ts(&[("__name__", "x"), ("a", "")], &[(5, f64::NAN)]),
            ],
            metadata: vec![],
        };
        let d = decode(&body(&req), DEFAULT_MAX_BODY_BYTES).unwrap();
        assert!(d.rejected.is_empty(), "{:?}", d.rejected);
        assert_eq!(d.series.len(), 2);
        assert_eq!(d.series[0].0.to_string(), r#"up{instance="localhost:9090", job="prometheus"}"#);
        assert_eq!(d.series[0].1, vec![(1000, 1.0), (2000, 0.0)]);
        // empty-valued label dropped; NaN (e.g. a stale marker) kept bit for bit
        assert_eq!(d.series[1].0.to_string(), "x");
        assert!(d.series[1].1[0].1.is_nan());
        assert_eq!(d.num_samples(), 3);
        // round trip through our own encoder
        let again = decode(&encode_write_request(&to_write_request(&d.series[..1])).unwrap(), 1 << 20).unwrap();
        assert_eq!(again.series, d.series[..1].to_vec());
    }

    #[test]
    fn empty_and_metadata_only_requests_are_fine() {
        let d = decode(&body(&WriteRequest::default()), 1024).unwrap();
        assert!(d.series.is_empty() && d.rejected.is_empty());
        let req = WriteRequest {
            timeseries: vec![],
            metadata: vec![proto::prometheus::MetricMetadata { metric_family_name: "up".into(), ..Default::default() }],
        };
        assert!(decode(&body(&req), 1024).unwrap().series.is_empty());
    }

    #[test]
    fn rejects_invalid_series_and_keeps_the_rest() {
        let good = ts(&[("__name__", "ok"), ("a", "1")], &[(1, 1.0)]);
        let cases: Vec<(TimeSeries, &str)> = vec![
            (ts(&[("__name__", "m"), ("b", "1"), ("a", "2")], &[(1, 1.0)]), r#"not sorted by name ("b" before "a")"#),
            (ts(&[("__name__", "m"), ("a", "1"), ("a", "2")], &[(1, 1.0)]), r#"duplicate label name "a""#),
            (ts(&[("", "v"), ("__name__", "m")], &[(1, 1.0)]), "empty label name"),
            (ts(&[("__name__", "m"), ("a-b", "1")], &[(1, 1.0)]), r#"invalid label name "a-b""#),
            (ts(&[("__name__", "m"), ("1a", "1")], &[(1, 1.0)]), r#"invalid label name "1a""#),
            (ts(&[("job", "j")], &[(1, 1.0)]), "no metric name"),
            (ts(&[("__name__", ""), ("job", "j")], &[(1, 1.0)]), "empty metric name"),
        ];
        for (bad, want) in cases {
            let req = WriteRequest { timeseries: vec![good.clone(), bad.clone()], metadata: vec![] };
            let d = decode(&body(&req), 1 << 20).unwrap();
            assert_eq!(d.series.len(), 1, "{want}");
            assert_eq!(d.series[0].0.to_string(), r#"ok{a="1"}"#);
            assert_eq!(d.rejected.len(), 1, "{want}");
            let msg = d.rejected[0].to_string();
            assert!(msg.contains(want), "{msg} should contain {want}");
            assert!(msg.starts_with("remote write: series "), "{msg}");
        }
        // the series is named as sent
        let req = WriteRequest {
            timeseries: vec![ts(&[("__name__", "m"), ("b", "1"), ("a", "2")], &[(1, 1.0)])],
            metadata: vec![],
        };
        let msg = decode(&body(&req), 1 << 20).unwrap().rejected[0].to_string();
        assert!(msg.contains(r#"m{b="1", a="2"}"#), "{msg}");
    }

    #[test]
    fn histograms_and_exemplars_are_counted_not_stored() {
        let mut t = ts(&[("__name__", "h")], &[]);
        t.histograms.push(proto::prometheus::Histogram { timestamp: 5, ..Default::default() });
        t.exemplars.push(proto::prometheus::Exemplar { value: 1.0, timestamp: 5, labels: lab(&[("trace_id", "x")]) });
        let d = decode(&body(&WriteRequest { timeseries: vec![t], metadata: vec![] }), 1 << 20).unwrap();
        assert!(d.series.is_empty());
        assert_eq!((d.histograms_dropped, d.exemplars_dropped), (1, 1));
    }

    #[test]
    fn bad_snappy_bad_protobuf_and_size_limits() {
        let e = decode(b"\xff\xff\xff\xff\xff\xff", 1 << 20).unwrap_err();
        assert!(matches!(e, Error::BadSnappy { .. }), "{e}");
        // snappy framed format is not accepted (it is not block format)
        let framed = {
            let mut w = snap::write::FrameEncoder::new(Vec::new());
            std::io::Write::write_all(&mut w, &WriteRequest::default().encode_to_vec()).unwrap();
            w.into_inner().unwrap()
        };
        assert!(decode(&framed, 1 << 20).is_err());
        // valid snappy around bytes that are not a WriteRequest (field 1 length runs past the end)
        let junk = snap::raw::Encoder::new().compress_vec(&[0x0a, 0x10, 0x01]).unwrap();
        let e = decode(&junk, 1 << 20).unwrap_err();
        assert!(matches!(e, Error::BadProtobuf { .. }), "{e}");
        // invalid UTF-8 in a label value fails the decode
        let mut raw =
            WriteRequest { timeseries: vec![ts(&[("__name__", "ab")], &[(1, 1.0)])], metadata: vec![] }.encode_to_vec();
        let pos = raw.windows(2).position(|w| w == b"ab").unwrap();
        raw[pos] = 0xc3;
        raw[pos + 1] = 0x28;
        let e = decode(&snap::raw::Encoder::new().compress_vec(&raw).unwrap(), 1 << 20).unwrap_err();
        assert!(matches!(e, Error::BadProtobuf { .. }), "{e}");

        let big =
            WriteRequest { timeseries: vec![ts(&[("__name__", &"a".repeat(5000))], &[(1, 1.0)])], metadata: vec![] };
        let b = body(&big);
        assert!(b.len() < 1000, "compresses well: {}", b.len());
        let e = decode(&b, 1000).unwrap_err();
        assert!(matches!(e, Error::BodyTooLarge { what: "decompressed message", limit: 1000, .. }), "{e}");
        let e = decode(&b, 10).unwrap_err();
        assert!(matches!(e, Error::BodyTooLarge { what: "request body", limit: 10, .. }), "{e}");
    }

    /// What a parse yields, comparable: valid series (labels, samples as bits), rejection messages,
    /// histogram and exemplar counts.
    type Summary = (Vec<(Vec<(String, String)>, Vec<(i64, u64)>)>, Vec<String>, usize, usize);

    fn summary(r: &Request<'_>) -> Summary {
        let series = r
            .series()
            .iter()
            .map(|s| {
                (
                    s.labels.iter().map(|&(n, v)| (n.to_string(), v.to_string())).collect(),
                    s.samples.iter().map(|&(t, v)| (t, v.to_bits())).collect(),
                )
            })
            .collect();
        (series, r.rejected.iter().map(|e| e.to_string()).collect(), r.histograms_dropped, r.exemplars_dropped)
    }

    /// The same through prost and the owned validation: the reference.
    fn reference(raw: &[u8]) -> Option<Summary> {
        let req = WriteRequest::decode(raw).ok()?;
        let mut out: Summary = (vec![], vec![], 0, 0);
        for ts in req.timeseries {
            out.2 += ts.histograms.len();
            out.3 += ts.exemplars.len();
            match validate_labels(&ts.labels) {
                Ok(l) if !ts.samples.is_empty() => out.0.push((
                    l.iter().map(|l| (l.name.clone(), l.value.clone())).collect(),
                    ts.samples.iter().map(|s| (s.timestamp, s.value.to_bits())).collect(),
                )),
                Ok(_) => {}
                Err(e) => out.1.push(e.to_string()),
            }
        }
        Some(out)
    }

    fn key(b: &mut Vec<u8>, field: u64, wire: u64) {
        put_varint(b, (field << 3) | wire);
    }
    fn put_varint(b: &mut Vec<u8>, mut x: u64) {
        while x >= 0x80 {
            b.push((x as u8) | 0x80);
            x >>= 7;
        }
        b.push(x as u8);
    }
    fn len_field(b: &mut Vec<u8>, field: u64, body: &[u8]) {
        key(b, field, 2);
        put_varint(b, body.len() as u64);
        b.extend_from_slice(body);
    }
    /// Unknown fields of every wire type, a nested group included.
    fn unknown_fields(b: &mut Vec<u8>) {
        key(b, 15, 0);
        put_varint(b, 300);
        key(b, 16, 1);
        b.extend_from_slice(&[1; 8]);
        key(b, 17, 5);
        b.extend_from_slice(&[2; 4]);
        len_field(b, 18, b"skip me");
        key(b, 19, 3);
        key(b, 20, 0);
        put_varint(b, 7);
        key(b, 21, 3);
        len_field(b, 22, b"inner");
        key(b, 21, 4);
        key(b, 19, 4);
    }

    #[test]
    fn parse_matches_prost_on_prost_encoded_requests() {
        let mut t = ts(&[("__name__", "up"), ("empty", ""), ("job", "ünï")], &[(-5, f64::NAN), (i64::MAX, -2.0)]);
        t.exemplars.push(proto::prometheus::Exemplar { value: 1.0, timestamp: 5, labels: lab(&[("a", "b")]) });
        t.histograms.push(proto::prometheus::Histogram { timestamp: 5, ..Default::default() });
        let req = WriteRequest {
            timeseries: vec![
                t,
                ts(&[("__name__", "m"), ("b", "1"), ("a", "2")], &[(1, 1.0)]),
                ts(&[("__name__", "no_samples")], &[]),
                ts(&[("a", "x"), ("__name__", "sorted_wrong")], &[(1, 1.0)]),
                ts(&[("__name__", "x"), ("z", "9")], &[(0, 0.0), (1, f64::INFINITY), (2, f64::from_bits(1))]),
            ],
            metadata: vec![proto::prometheus::MetricMetadata { metric_family_name: "up".into(), ..Default::default() }],
        };
        let raw = req.encode_to_vec();
        let got = summary(&parse(&raw).unwrap());
        assert_eq!(Some(got.clone()), reference(&raw));
        assert_eq!(got.0.len(), 2);
        assert_eq!(got.0[0].0, vec![("__name__".to_string(), "up".to_string()), ("job".into(), "ünï".into())]);
        assert_eq!(got.0[0].1, vec![(-5, f64::NAN.to_bits()), (i64::MAX, (-2.0f64).to_bits())]);
        assert_eq!(got.1.len(), 2);
        assert_eq!((got.2, got.3), (1, 1));
    }

    #[test]
    fn parse_skips_unknown_fields_and_accepts_any_field_order() {
        let mut label_a = Vec::new();
        unknown_fields(&mut label_a);
        len_field(&mut label_a, 2, b"wrong"); // value given twice: the last wins
        len_field(&mut label_a, 1, b"__name__");
        len_field(&mut label_a, 2, b"metric");
        let mut label_b = Vec::new();
        len_field(&mut label_b, 2, b"v");
        len_field(&mut label_b, 1, b"k");
        let mut sample = Vec::new();
        key(&mut sample, 2, 0);
        put_varint(&mut sample, (-7i64) as u64); // negative int64: 10 bytes
        unknown_fields(&mut sample);
        key(&mut sample, 1, 1);
        sample.extend_from_slice(&2.5f64.to_le_bytes());
        let mut series = Vec::new();
        len_field(&mut series, 2, &sample); // a sample before the labels
        unknown_fields(&mut series);
        len_field(&mut series, 1, &label_a);
        len_field(&mut series, 2, &[]); // an empty sample: (0, 0.0)
        len_field(&mut series, 1, &label_b);
        let mut raw = Vec::new();
        unknown_fields(&mut raw);
        len_field(&mut raw, 1, &series);
        len_field(&mut raw, 3, b""); // empty metadata
        len_field(&mut raw, 1, &series);
        let got = summary(&parse(&raw).unwrap());
        assert_eq!(Some(got.clone()), reference(&raw));
        let want_labels = vec![("__name__".to_string(), "metric".to_string()), ("k".into(), "v".into())];
        assert_eq!(got.0.len(), 2);
        assert_eq!(got.0[1].0, want_labels);
        assert_eq!(got.0[1].1, vec![(-7, 2.5f64.to_bits()), (0, 0)]);
    }

    #[test]
    fn parse_agrees_with_prost_on_every_truncation_and_on_mutations() {
        let mut req = WriteRequest {
            timeseries: (0..6)
                .map(|i| {
                    ts(
                        &[("__name__", "metric"), ("i", &i.to_string()), ("job", if i == 3 { "" } else { "j" })],
                        &[(1_700_000_000_000 + i, i as f64 * 0.5), (1_700_000_015_000 + i, -1.0)],
                    )
                })
                .collect(),
            metadata: vec![],
        };
        req.timeseries[4].labels.swap(1, 2); // unsorted: rejected
        let raw = req.encode_to_vec();
        let mut ok = 0;
        for n in 0..=raw.len() {
            let mine = parse(&raw[..n]).map(|r| summary(&r));
            let theirs = reference(&raw[..n]);
            assert_eq!(mine.as_ref().ok(), theirs.as_ref(), "prefix of {n} bytes");
            if let Err(e) = mine {
                assert!(e.to_string().contains("at byte offset"), "{e}");
            } else {
                ok += 1;
            }
        }
        assert!(ok >= 7, "the empty message and the 6 series boundaries parse: {ok}");
        // Flipped bytes: whatever prost accepts parses the same; neither panics.
        let mut x = 0x9e37_79b9_7f4a_7c15u64;
        let (mut both_ok, mut both_err) = (0, 0);
        for _ in 0..3000 {
            x ^= x << 13;
            x ^= x >> 7;
            x ^= x << 17;
            let mut m = raw.clone();
            let i = (x % m.len() as u64) as usize;
            m[i] ^= (x >> 32) as u8 | 1;
            let mine = parse(&m).map(|r| summary(&r));
            match (reference(&m), mine) {
                (Some(t), Ok(g)) => {
                    assert_eq!(g, t, "byte {i} flipped");
                    both_ok += 1;
                }
                (Some(t), Err(e)) => panic!("byte {i} flipped: prost decodes {t:?}, parse fails: {e}"),
                (None, Err(_)) => both_err += 1,
                (None, Ok(_)) => {}
            }
        }
        assert!(both_ok > 100 && both_err > 100, "{both_ok} {both_err}");
    }

    #[test]
    fn varint_at_reads_every_length() {
        for x in [0u64, 1, 127, 128, 300, 1 << 35, (1 << 42) - 1, 1 << 49, 1 << 56, (1 << 63) + 5, u64::MAX] {
            let mut b = Vec::new();
            put_varint(&mut b, x);
            let n = b.len();
            assert_eq!(varint_at(&b), Some((x, n)), "{x}");
            b.extend_from_slice(&[0xff; 9]);
            assert_eq!(varint_at(&b), Some((x, n)), "{x} followed by more bytes");
            assert_eq!(varint_at(&b[..n - 1]), None, "{x} cut short");
        }
        assert_eq!(varint_at(&[0xff; 10]), None);
        assert_eq!(varint_at(&[0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0x02]), None);
    }

    #[test]
    fn parse_errors_name_the_offset_and_field() {
        // Sample.value sent as a varint
        let mut sample = Vec::new();
        key(&mut sample, 1, 0);
        put_varint(&mut sample, 1);
        let mut series = Vec::new();
        len_field(&mut series, 2, &sample);
        let mut raw = Vec::new();
        len_field(&mut raw, 1, &series);
        let e = parse(&raw).unwrap_err().to_string();
        assert!(
            e.contains("Sample.value") && e.contains("wire type 0, want 1") && e.contains("at byte offset 5"),
            "{e}"
        );
        assert!(WriteRequest::decode(raw.as_slice()).is_err());
        // an 11-byte varint (in an unknown field)
        let e =
            parse(&[0x78, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0x01]).unwrap_err().to_string();
        assert!(e.contains("at byte offset 1") && e.contains("varint"), "{e}");
        // field number 0, wire type 7
        assert!(parse(&[0x00]).unwrap_err().to_string().contains("invalid field key 0"));
        assert!(parse(&[0x0f]).unwrap_err().to_string().contains("invalid wire type 7"));
        // a group without its end, an end without a group
        assert!(parse(&[0x23, 0x08, 0x01]).unwrap_err().to_string().contains("has no end"));
        assert!(parse(&[0x24]).unwrap_err().to_string().contains("unexpected end of group"));
        // invalid UTF-8 in a label name
        let mut label = Vec::new();
        len_field(&mut label, 1, &[0x61, 0xff]);
        let mut series = Vec::new();
        len_field(&mut series, 1, &label);
        let mut raw = Vec::new();
        len_field(&mut raw, 1, &series);
        let e = parse(&raw).unwrap_err().to_string();
        assert!(e.contains("Label.name") && e.contains("UTF-8") && e.contains("at byte offset 5"), "{e}");
    }
}
