//! Decoding and validation of Prometheus remote write 1.0 requests.
//!
//! ```text
//!   HTTP body ──snappy block decode──► prometheus.WriteRequest ──validate each series──► accepted
//!   (≤ max body)   (≤ max body, 400)       (prost, 400)              │                  (Labels, [(ts, v)])
//!                                                                     └─► rejected (400, names the series)
//! ```
//!
//! Validation follows Thanos receive: a series whose label names are not valid
//! (`[a-zA-Z_][a-zA-Z0-9_]*`), not strictly sorted by name (Prometheus sends them sorted; Thanos rejects
//! unsorted sets rather than sorting them), duplicated or empty, or that has no or an empty metric name,
//! is rejected; the other series of the same request are kept. Labels with an empty value are dropped
//! (an empty value means "no such label" in Prometheus). Invalid UTF-8 in a string fails the protobuf
//! decode as a whole. Native histograms, exemplars and metadata are decoded but not stored (yet):
//! their counts are reported so the caller can log them.

use engine::Labels;
use engine::labels::METRIC_NAME;
use prost::Message;
use proto::prometheus::{Label, WriteRequest};

use crate::error::{Error, Result};

/// Default `--receive.max-body-size`: 32 MiB, applied to the compressed body and to the decompressed
/// message alike.
pub const DEFAULT_MAX_BODY_BYTES: usize = 32 << 20;

/// One decoded series: its labels and its `(timestamp ms, value)` samples in request order.
pub type Series = (Labels, Vec<(i64, f64)>);

/// The valid content of a request and what was left out.
#[derive(Debug, Default)]
pub struct Decoded {
    /// Valid series with their samples (series without float samples are left out).
    pub series: Vec<Series>,
    /// Invalid series, each an [`Error::InvalidSeries`] naming it.
    pub rejected: Vec<Error>,
    /// Native histogram samples received and not stored.
    pub histograms_dropped: usize,
    /// Exemplars received and not stored.
    pub exemplars_dropped: usize,
}

impl Decoded {
    /// Number of float samples in [`Decoded::series`].
    pub fn num_samples(&self) -> usize {
        self.series.iter().map(|s| s.1.len()).sum()
    }
}

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

/// True when `name` is a valid Prometheus label name: `[a-zA-Z_][a-zA-Z0-9_]*`.
///
/// ```
/// assert!(ingest::remote_write::valid_label_name("__name__"));
/// assert!(!ingest::remote_write::valid_label_name("0x"));
/// assert!(!ingest::remote_write::valid_label_name("a-b"));
/// ```
pub fn valid_label_name(name: &str) -> bool {
    let mut bytes = name.bytes();
    match bytes.next() {
        Some(b) if b == b'_' || b.is_ascii_alphabetic() => {}
        _ => return false,
    }
    bytes.all(|b| b == b'_' || b.is_ascii_alphanumeric())
}

/// Prints received labels like Prometheus does, before validation (so unsorted or duplicate labels
/// show as sent).
fn show(labels: &[Label]) -> String {
    let name = labels.iter().find(|l| l.name == METRIC_NAME).map(|l| l.value.as_str()).unwrap_or("");
    let rest: Vec<String> =
        labels.iter().filter(|l| l.name != METRIC_NAME).map(|l| format!("{}={:?}", l.name, l.value)).collect();
    format!("{name}{{{}}}", rest.join(", "))
}

/// Checks the labels of one series; on success returns them as a [`Labels`].
pub fn validate_labels(labels: &[Label]) -> Result<Labels> {
    check_labels(labels)?;
    Ok(Labels::from_pairs(labels.iter().map(|l| (l.name.as_str(), l.value.as_str()))))
}

/// Checks the labels of one series and moves their strings into a [`Labels`] (no copies).
fn take_labels(labels: Vec<Label>) -> Result<Labels> {
    check_labels(&labels)?;
    Ok(Labels::from_pairs(labels.into_iter().map(|l| (l.name, l.value))))
}

/// The checks of [`validate_labels`].
fn check_labels(labels: &[Label]) -> Result<()> {
    let bad = |reason: String| Error::InvalidSeries { series: show(labels), reason };
    for (i, l) in labels.iter().enumerate() {
        if l.name.is_empty() {
            return Err(bad("empty label name".into()));
        }
        if !valid_label_name(&l.name) {
            return Err(bad(format!("invalid label name {:?}", l.name)));
        }
        if i > 0 {
            let prev = &labels[i - 1].name;
            if *prev == l.name {
                return Err(bad(format!("duplicate label name {:?}", l.name)));
            }
            if *prev > l.name {
                return Err(bad(format!("labels are not sorted by name ({:?} before {:?})", prev, l.name)));
            }
        }
    }
    match labels.iter().find(|l| l.name == METRIC_NAME) {
        None => return Err(bad("no metric name (__name__ label)".into())),
        Some(l) if l.value.is_empty() => return Err(bad("empty metric name".into())),
        Some(_) => {}
    }
    Ok(())
}

/// Validates every series of a request: valid ones are returned with their samples, invalid ones
/// as errors naming them.
pub fn validate(req: WriteRequest) -> Decoded {
    let mut out = Decoded::default();
    for ts in req.timeseries {
        out.histograms_dropped += ts.histograms.len();
        out.exemplars_dropped += ts.exemplars.len();
        match take_labels(ts.labels) {
            Ok(labels) => {
                if !ts.samples.is_empty() {
                    out.series.push((labels, ts.samples.iter().map(|s| (s.timestamp, s.value)).collect()));
                }
            }
            Err(e) => out.rejected.push(e),
        }
    }
    out
}

/// Decodes and validates a remote write 1.0 body in one step.
pub fn decode(body: &[u8], max_bytes: usize) -> Result<Decoded> {
    Ok(validate(decode_write_request(body, max_bytes)?))
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used, clippy::expect_used)]
    use proto::prometheus::{Sample, TimeSeries};

    use super::*;

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
}
