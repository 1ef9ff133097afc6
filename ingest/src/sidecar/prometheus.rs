//! The sidecar's client of the Prometheus it runs beside: readiness (`/-/ready`), external labels
//! (`/api/v1/status/config`, the YAML config inside JSON), the head's time range
//! (`/api/v1/status/tsdb`), series and label APIs (`/api/v1/series`, `/api/v1/labels`,
//! `/api/v1/label/<name>/values`) and remote read in STREAMED_XOR_CHUNKS mode (`/api/v1/read`).
//!
//! ```text
//!   ReadRequest{query, accepted: [STREAMED_XOR_CHUNKS]} ─snappy─► POST /api/v1/read
//!   frames: uvarint(len) | crc32c(data) BE | ChunkedReadResponse ◄── (or a sampled ReadResponse
//!   from a Prometheus that cannot stream) ─► [(labels, [remote-read chunk])]
//! ```

use std::collections::BTreeMap;
use std::time::Duration;

use engine::{Labels, Matcher};
use prost::Message;
use proto::prometheus::{ChunkedReadResponse, Query, ReadRequest, read_request};

use crate::remote_read::to_pb_matcher;

use crate::error::{Error, Result};
use crate::remote_write::compress;

/// Largest remote-read answer accepted (1 GiB), streamed or sampled.
const MAX_RESPONSE_BYTES: usize = 1 << 30;

/// Content type of a streamed remote-read answer (prefix; Prometheus appends the proto name).
const STREAMED_CONTENT_TYPE: &str = "application/x-streamed-protobuf";

/// Oldest and newest times passed to Prometheus's HTTP API: years 1 and 9999, as Thanos clamps
/// (Prometheus cannot parse times far beyond them).
const API_MIN_MS: i64 = -62_135_596_800_000;
const API_MAX_MS: i64 = 253_402_300_799_000;

/// One series of a streamed remote-read answer: its labels (sorted, as Prometheus sends them)
/// and its chunks in start-time order (remote read's encodings, see [`proto::prometheus::chunk`]).
#[derive(Debug, Clone, PartialEq)]
pub struct ChunkedSeries {
    /// The series' labels.
    pub labels: Labels,
    /// Its chunks.
    pub chunks: Vec<proto::prometheus::Chunk>,
}

/// A client of one Prometheus server's HTTP API.
#[derive(Debug, Clone)]
pub struct PromClient {
    base: String,
    http: reqwest::Client,
}

impl PromClient {
    /// A client of the Prometheus at `base` (e.g. `http://localhost:9090`); each call gives up
    /// after `timeout`.
    pub fn new(base: &str, timeout: Duration) -> Result<Self> {
        let http = reqwest::Client::builder().timeout(timeout).build().map_err(|e| Error::Prometheus {
            url: base.to_string(),
            reason: format!("cannot build an HTTP client: {e}"),
        })?;
        Ok(PromClient { base: base.trim_end_matches('/').to_string(), http })
    }

    /// The base URL.
    pub fn base(&self) -> &str {
        &self.base
    }

    fn url(&self, path: &str) -> String {
        format!("{}{path}", self.base)
    }

    fn fail(&self, path: &str, reason: impl Into<String>) -> Error {
        Error::Prometheus { url: self.url(path), reason: reason.into() }
    }

    /// Ok when Prometheus answers `/-/ready` with 200.
    pub async fn ready(&self) -> Result<()> {
        let path = "/-/ready";
        let resp = self.http.get(self.url(path)).send().await.map_err(|e| self.fail(path, e.to_string()))?;
        match resp.status().is_success() {
            true => Ok(()),
            false => Err(self.fail(path, format!("not ready: HTTP {}", resp.status()))),
        }
    }

    /// GETs a JSON API path and returns its `data`.
    async fn api(&self, path: &str, query: &[(&str, String)]) -> Result<serde_json::Value> {
        let resp =
            self.http.get(self.url(path)).query(query).send().await.map_err(|e| self.fail(path, e.to_string()))?;
        let status = resp.status();
        let body = resp.bytes().await.map_err(|e| self.fail(path, e.to_string()))?;
        let v: serde_json::Value = serde_json::from_slice(&body).map_err(|e| {
            self.fail(path, format!("HTTP {status}, not JSON ({e}): {}", String::from_utf8_lossy(&body).trim()))
        })?;
        if !status.is_success() || v["status"] != "success" {
            return Err(
                self.fail(path, format!("HTTP {status}: {}", v["error"].as_str().unwrap_or("no error message")))
            );
        }
        Ok(v["data"].clone())
    }

    /// The external labels of Prometheus's current configuration (`global.external_labels`).
    pub async fn external_labels(&self) -> Result<Labels> {
        let path = "/api/v1/status/config";
        let data = self.api(path, &[]).await?;
        let yaml = data["yaml"].as_str().ok_or_else(|| self.fail(path, "answer has no data.yaml string"))?;
        parse_external_labels(yaml).map_err(|e| self.fail(path, e))
    }

    /// The head block's oldest sample time (ms) from `/api/v1/status/tsdb`; None while the head is
    /// empty.
    pub async fn head_min_time(&self) -> Result<Option<i64>> {
        let path = "/api/v1/status/tsdb";
        let data = self.api(path, &[]).await?;
        let min = data["headStats"]["minTime"].as_i64();
        let max = data["headStats"]["maxTime"].as_i64();
        Ok(match (min, max) {
            (Some(lo), Some(hi)) if lo <= hi => Some(lo),
            _ => None,
        })
    }

    /// Label sets of the series matching `matchers` in `[min_t, max_t]` (`/api/v1/series`).
    pub async fn series(&self, matchers: &[Matcher], min_t: i64, max_t: i64) -> Result<Vec<Labels>> {
        let path = "/api/v1/series";
        let mut q = time_params(min_t, max_t);
        q.push(("match[]", selector(matchers)));
        let data = self.api(path, &q).await?;
        let list = data.as_array().ok_or_else(|| self.fail(path, "data is not a list"))?;
        let mut out = Vec::with_capacity(list.len());
        for s in list {
            let obj = s.as_object().ok_or_else(|| self.fail(path, "a series is not an object"))?;
            out.push(Labels::from_pairs(
                obj.iter().map(|(k, v)| (k.clone(), v.as_str().unwrap_or_default().to_string())),
            ));
        }
        Ok(out)
    }

    /// Label names of the series matching `matchers` (all series when empty) in `[min_t, max_t]`.
    pub async fn label_names(&self, matchers: &[Matcher], min_t: i64, max_t: i64) -> Result<Vec<String>> {
        let path = "/api/v1/labels";
        let mut q = time_params(min_t, max_t);
        if !matchers.is_empty() {
            q.push(("match[]", selector(matchers)));
        }
        self.strings(path, &q).await
    }

    /// Values of label `name` over the series matching `matchers` in `[min_t, max_t]`.
    pub async fn label_values(&self, name: &str, matchers: &[Matcher], min_t: i64, max_t: i64) -> Result<Vec<String>> {
        let path = format!("/api/v1/label/{name}/values");
        let mut q = time_params(min_t, max_t);
        if !matchers.is_empty() {
            q.push(("match[]", selector(matchers)));
        }
        self.strings(&path, &q).await
    }

    async fn strings(&self, path: &str, q: &[(&str, String)]) -> Result<Vec<String>> {
        let data = self.api(path, q).await?;
        let list = data.as_array().ok_or_else(|| self.fail(path, "data is not a list"))?;
        let mut out: Vec<String> = list.iter().filter_map(|v| v.as_str().map(str::to_string)).collect();
        out.sort();
        out.dedup();
        Ok(out)
    }

    /// Remote read of `[min_t, max_t]` for `matchers`, asking for STREAMED_XOR_CHUNKS: the series
    /// in Prometheus's order with their chunks as sent. A sampled answer (a Prometheus without
    /// streaming) comes back as one XOR chunk per 120 samples.
    pub async fn read_chunks(&self, matchers: &[Matcher], min_t: i64, max_t: i64) -> Result<Vec<ChunkedSeries>> {
        let path = "/api/v1/read";
        let url = self.url(path);
        let fail = |reason: String| Error::RemoteRead { url: url.clone(), reason };
        let req = ReadRequest {
            queries: vec![Query {
                start_timestamp_ms: min_t,
                end_timestamp_ms: max_t,
                matchers: matchers.iter().map(to_pb_matcher).collect(),
                hints: None,
            }],
            accepted_response_types: vec![read_request::ResponseType::StreamedXorChunks as i32],
        };
        let resp = crate::remote_read::post(&self.http, &url, compress(&req.encode_to_vec())?)
            .send()
            .await
            .map_err(|e| fail(e.to_string()))?;
        let status = resp.status();
        let ctype = resp.headers().get("content-type").and_then(|v| v.to_str().ok()).unwrap_or_default().to_string();
        let body = resp.bytes().await.map_err(|e| fail(e.to_string()))?;
        if !status.is_success() {
            return Err(fail(format!("HTTP {status}: {}", String::from_utf8_lossy(&body).trim())));
        }
        if body.len() > MAX_RESPONSE_BYTES {
            return Err(fail(format!("answer of {} bytes is over the limit of {MAX_RESPONSE_BYTES}", body.len())));
        }
        if ctype.starts_with(STREAMED_CONTENT_TYPE) {
            return decode_frames(&body).map_err(fail);
        }
        // A sampled answer: re-chunk it.
        let series = crate::remote_read::decode_response(&body).map_err(|e| fail(e.to_string()))?;
        let mut out = Vec::with_capacity(series.len());
        for (labels, samples) in series {
            let mut chunks = Vec::new();
            for part in samples.chunks(engine::chunkenc::SAMPLES_PER_CHUNK) {
                let (Some(first), Some(last)) = (part.first(), part.last()) else { continue };
                let data = engine::chunkenc::encode(part).map_err(|e| fail(e.to_string()))?;
                chunks.push(proto::prometheus::Chunk {
                    min_time_ms: first.0,
                    max_time_ms: last.0,
                    r#type: proto::prometheus::chunk::Encoding::Xor as i32,
                    data,
                });
            }
            out.push(ChunkedSeries { labels, chunks });
        }
        Ok(out)
    }
}

/// Parses the frames of a streamed remote-read answer: `uvarint(len) | crc32c(data) (big endian
/// u32) | data`, each data a `ChunkedReadResponse`. A series split over frames (consecutive,
/// same labels) is joined.
pub fn decode_frames(mut body: &[u8]) -> Result<Vec<ChunkedSeries>, String> {
    let mut out: Vec<ChunkedSeries> = Vec::new();
    let mut offset = 0usize;
    while !body.is_empty() {
        let (len, n) =
            engine::chunkenc::uvarint(body).ok_or_else(|| format!("frame at byte {offset}: bad length varint"))?;
        let len = usize::try_from(len).map_err(|_| format!("frame at byte {offset}: length {len} too large"))?;
        let Some(rest) = body.get(n..) else { return Err(format!("frame at byte {offset}: truncated")) };
        if rest.len() < 4 + len {
            return Err(format!(
                "frame at byte {offset}: {len} bytes announced, {} left",
                rest.len().saturating_sub(4)
            ));
        }
        let stored = u32::from_be_bytes([rest[0], rest[1], rest[2], rest[3]]);
        let data = &rest[4..4 + len];
        let computed = crc32c::crc32c(data);
        if stored != computed {
            return Err(format!(
                "frame at byte {offset}: CRC32C mismatch (stored {stored:#010x}, computed {computed:#010x})"
            ));
        }
        let frame = ChunkedReadResponse::decode(data)
            .map_err(|e| format!("frame at byte {offset}: not a prometheus.ChunkedReadResponse: {e}"))?;
        for s in frame.chunked_series {
            let labels = Labels::from_pairs(s.labels.into_iter().map(|l| (l.name, l.value)));
            match out.last_mut() {
                Some(last) if last.labels == labels => last.chunks.extend(s.chunks),
                _ => out.push(ChunkedSeries { labels, chunks: s.chunks }),
            }
        }
        offset += n + 4 + len;
        body = &rest[4 + len..];
    }
    Ok(out)
}

/// `global.external_labels` of a Prometheus YAML configuration (empty when absent).
pub fn parse_external_labels(yaml: &str) -> Result<Labels, String> {
    #[derive(serde::Deserialize, Default)]
    struct Global {
        #[serde(default)]
        external_labels: Option<BTreeMap<String, String>>,
    }
    #[derive(serde::Deserialize)]
    struct Config {
        #[serde(default)]
        global: Option<Global>,
    }
    let c: Config = serde_saphyr::from_str(yaml).map_err(|e| format!("config YAML: {e}"))?;
    let ext = c.global.unwrap_or_default().external_labels.unwrap_or_default();
    Ok(Labels::from_pairs(ext.into_iter().filter(|(_, v)| !v.is_empty())))
}

/// A PromQL series selector `{a="b",c=~"d"}` of the matchers (strings quoted as Go does).
pub fn selector(matchers: &[Matcher]) -> String {
    let mut s = String::from("{");
    for (i, m) in matchers.iter().enumerate() {
        if i > 0 {
            s.push(',');
        }
        s.push_str(&m.name);
        s.push_str(&m.op.to_string());
        s.push('"');
        for c in m.value.chars() {
            match c {
                '\\' => s.push_str("\\\\"),
                '"' => s.push_str("\\\""),
                '\n' => s.push_str("\\n"),
                '\r' => s.push_str("\\r"),
                '\t' => s.push_str("\\t"),
                c if (c as u32) < 0x20 => s.push_str(&format!("\\x{:02x}", c as u32)),
                c => s.push(c),
            }
        }
        s.push('"');
    }
    s.push('}');
    s
}

/// `start` and `end` in seconds with millisecond precision, clamped to what Prometheus parses.
fn time_params(min_t: i64, max_t: i64) -> Vec<(&'static str, String)> {
    let secs = |ms: i64| {
        let ms = ms.clamp(API_MIN_MS, API_MAX_MS);
        format!("{}.{:03}", ms.div_euclid(1000), ms.rem_euclid(1000))
    };
    vec![("start", secs(min_t)), ("end", secs(max_t))]
}

#[cfg(test)]
#[allow(clippy::unwrap_used, clippy::expect_used)]
mod tests {
    use proto::prometheus::{Chunk, Label, chunk};

    use super::*;

    fn frame(msg: &ChunkedReadResponse) -> Vec<u8> {
        let data = msg.encode_to_vec();
        let mut out = Vec::new();
        let mut len = data.len() as u64;
        while len >= 0x80 {
            out.push((len as u8) | 0x80);
            len >>= 7;
        }
        out.push(len as u8);
        out.extend_from_slice(&crc32c::crc32c(&data).to_be_bytes());
        out.extend_from_slice(&data);
        out
    }

    #[test]
    fn frames_decode_and_join_split_series() {
        let lab = |v: &str| vec![Label { name: "__name__".into(), value: v.into() }];
        let ch =
            |t: i64| Chunk { min_time_ms: t, max_time_ms: t, r#type: chunk::Encoding::Xor as i32, data: vec![0, 0] };
        let f1 = ChunkedReadResponse {
            chunked_series: vec![
                proto::prometheus::ChunkedSeries { labels: lab("a"), chunks: vec![ch(1)] },
                proto::prometheus::ChunkedSeries { labels: lab("b"), chunks: vec![ch(2)] },
            ],
            query_index: 0,
        };
        let f2 = ChunkedReadResponse {
            chunked_series: vec![proto::prometheus::ChunkedSeries { labels: lab("b"), chunks: vec![ch(3)] }],
            query_index: 0,
        };
        let mut body = frame(&f1);
        body.extend(frame(&f2));
        let got = decode_frames(&body).unwrap();
        assert_eq!(got.len(), 2);
        assert_eq!(got[1].labels.to_string(), "b");
        assert_eq!(got[1].chunks.iter().map(|c| c.min_time_ms).collect::<Vec<_>>(), vec![2, 3]);
        // A flipped data byte fails the CRC, a cut frame is truncated.
        let mut bad = body.clone();
        let last = bad.len() - 1;
        bad[last] ^= 1;
        assert!(decode_frames(&bad).unwrap_err().contains("CRC32C mismatch"));
        assert!(decode_frames(&body[..body.len() - 2]).unwrap_err().contains("announced"));
    }

    #[test]
    fn external_labels_from_config_yaml() {
        let yaml = "global:\n  scrape_interval: 1s\n  external_labels:\n    cluster: eu\n    replica: \"a\"\nscrape_configs: []\n";
        assert_eq!(parse_external_labels(yaml).unwrap().to_string(), r#"{cluster="eu", replica="a"}"#);
        assert!(parse_external_labels("global:\n  scrape_interval: 1s\n").unwrap().is_empty());
        assert!(parse_external_labels("scrape_configs: []\n").unwrap().is_empty());
        assert!(parse_external_labels("global: [").is_err());
    }

    #[test]
    fn selectors_quote_like_go() {
        let m = [
            Matcher::new(engine::MatchOp::RegexMatch, "__name__", "up|x").unwrap(),
            Matcher::equal("path", "a\"b\\c\n"),
        ];
        assert_eq!(selector(&m), r#"{__name__=~"up|x",path="a\"b\\c\n"}"#);
        assert_eq!(time_params(-1, i64::MAX), vec![("start", "-1.999".into()), ("end", "253402300799.000".into())]);
    }
}
