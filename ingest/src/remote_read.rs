//! A client of Prometheus remote read 1.0 (sampled responses): the raw samples of the series
//! matching some matchers, stale markers included, as the Prometheus's own TSDB holds them.
//!
//! ```text
//!   Query{start, end, matchers} ──snappy(ReadRequest)──► POST <prometheus>/api/v1/read
//!   [(Labels, [(t, v)])] ◄──decode── snappy(ReadResponse{results[0].timeseries})
//! ```
//!
//! Used by tests to compare what Strata stored with what a real Prometheus holds, and the start of
//! the sidecar's remote-read source.

use engine::{MatchOp, Matcher};
use prost::Message;
use proto::prometheus::{LabelMatcher, Query, ReadRequest, ReadResponse, label_matcher};

use crate::error::{Error, Result};
use crate::remote_write::{Series, compress, decompress};

/// Largest decompressed answer accepted (1 GiB).
const MAX_RESPONSE_BYTES: usize = 1 << 30;

/// Encodes a remote read request for one query over `[start_ms, end_ms]` (both inclusive, as
/// Prometheus reads them), asking for sampled (not streamed) results.
pub fn encode_request(start_ms: i64, end_ms: i64, matchers: &[Matcher]) -> Result<Vec<u8>> {
    let matchers = matchers.iter().map(to_pb_matcher).collect();
    let req = ReadRequest {
        queries: vec![Query { start_timestamp_ms: start_ms, end_timestamp_ms: end_ms, matchers, hints: None }],
        accepted_response_types: vec![],
    };
    compress(&req.encode_to_vec())
}

/// The remote read 0.1.0 POST of `body` (a snappy `ReadRequest`) to `url`, ready to send.
pub fn post(client: &reqwest::Client, url: &str, body: Vec<u8>) -> reqwest::RequestBuilder {
    client
        .post(url)
        .header("Content-Type", "application/x-protobuf")
        .header("Content-Encoding", "snappy")
        .header("X-Prometheus-Remote-Read-Version", "0.1.0")
        .body(body)
}

/// A matcher as remote read's `prometheus.LabelMatcher`.
pub(crate) fn to_pb_matcher(m: &Matcher) -> LabelMatcher {
    LabelMatcher {
        r#type: match m.op {
            MatchOp::Equal => label_matcher::Type::Eq,
            MatchOp::NotEqual => label_matcher::Type::Neq,
            MatchOp::RegexMatch => label_matcher::Type::Re,
            MatchOp::RegexNoMatch => label_matcher::Type::Nre,
        } as i32,
        name: m.name.clone(),
        value: m.value.clone(),
    }
}

/// Decodes a sampled remote read answer (snappy `ReadResponse`) of one query into its series, in
/// the order sent. Labels with empty values are dropped, as everywhere in Strata.
pub fn decode_response(body: &[u8]) -> Result<Vec<Series>> {
    let raw = decompress(body, MAX_RESPONSE_BYTES)?;
    let resp = ReadResponse::decode(raw.as_slice()).map_err(|e| Error::RemoteRead {
        url: "(response body)".into(),
        reason: format!("not a valid prometheus.ReadResponse protobuf: {e}"),
    })?;
    Ok(resp
        .results
        .into_iter()
        .flat_map(|r| r.timeseries)
        .map(|ts| {
            let labels = engine::Labels::from_pairs(ts.labels.into_iter().map(|l| (l.name, l.value)));
            (labels, ts.samples.iter().map(|s| (s.timestamp, s.value)).collect())
        })
        .collect())
}

/// Reads the raw samples in `[start_ms, end_ms]` of the series matching `matchers` from a
/// Prometheus remote-read endpoint (e.g. `http://host:9090/api/v1/read`).
pub async fn read(
    client: &reqwest::Client,
    url: &str,
    start_ms: i64,
    end_ms: i64,
    matchers: &[Matcher],
) -> Result<Vec<Series>> {
    let fail = |reason: String| Error::RemoteRead { url: url.to_string(), reason };
    let body = encode_request(start_ms, end_ms, matchers)?;
    let resp = post(client, url, body).send().await.map_err(|e| fail(e.to_string()))?;
    let status = resp.status();
    let bytes = resp.bytes().await.map_err(|e| fail(e.to_string()))?;
    if !status.is_success() {
        return Err(fail(format!("HTTP {status}: {}", String::from_utf8_lossy(&bytes).trim())));
    }
    decode_response(&bytes).map_err(|e| fail(e.to_string()))
}

#[cfg(test)]
#[allow(clippy::unwrap_used, clippy::expect_used)]
mod tests {
    use proto::prometheus::{Label, QueryResult, Sample, TimeSeries};

    use super::*;

    #[test]
    fn request_and_response_round_trip() {
        let m = [Matcher::new(MatchOp::RegexMatch, "__name__", "up|x").unwrap(), Matcher::equal("job", "a")];
        let body = encode_request(10, 20, &m).unwrap();
        let req = ReadRequest::decode(decompress(&body, 1 << 20).unwrap().as_slice()).unwrap();
        let q = &req.queries[0];
        assert_eq!((q.start_timestamp_ms, q.end_timestamp_ms), (10, 20));
        assert_eq!(q.matchers[0].r#type, label_matcher::Type::Re as i32);
        assert_eq!((q.matchers[0].name.as_str(), q.matchers[0].value.as_str()), ("__name__", "up|x"));
        assert_eq!(q.matchers[1].r#type, label_matcher::Type::Eq as i32);

        let stale = f64::from_bits(0x7ff0_0000_0000_0002);
        let resp = ReadResponse {
            results: vec![QueryResult {
                timeseries: vec![TimeSeries {
                    labels: vec![
                        Label { name: "__name__".into(), value: "up".into() },
                        Label { name: "empty".into(), value: String::new() },
                    ],
                    samples: vec![
                        Sample { value: stale, timestamp: 15 },
                        Sample { value: f64::NEG_INFINITY, timestamp: 16 },
                    ],
                    ..Default::default()
                }],
            }],
        };
        let got = decode_response(&compress(&resp.encode_to_vec()).unwrap()).unwrap();
        assert_eq!(got.len(), 1);
        assert_eq!(got[0].0.to_string(), "up");
        let bits: Vec<(i64, u64)> = got[0].1.iter().map(|s| (s.0, s.1.to_bits())).collect();
        assert_eq!(bits, vec![(15, stale.to_bits()), (16, f64::NEG_INFINITY.to_bits())]);
        assert!(decode_response(b"not snappy").is_err());
    }
}
