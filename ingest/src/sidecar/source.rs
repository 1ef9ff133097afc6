//! The sidecar's [`SeriesSource`]: the Prometheus's own data (head and local blocks) read through
//! remote read, with the Prometheus's external labels put on, for the StoreAPI server.
//!
//! ```text
//!   select(matchers, [min_t, max_t]) ─► matchers on external labels decided here (no match: empty)
//!     ─► the rest ─► POST /api/v1/read (STREAMED_XOR_CHUNKS, min_t clamped to --min-time)
//!     ─► per series: remote-read XOR chunks (encoding 1; others refused) decoded, trimmed to the
//!        range, overlaps dropped ─► external labels set ─► sorted by the final labels ─► batches
//! ```
//!
//! External labels can change the order of series (DESIGN.md §9), so the answer is sorted after
//! they are put on; the whole answer of one request is held in memory (the sidecar serves the
//! recent, not-yet-uploaded data). Through [`SeriesSource::select`] the StoreAPI server encodes the
//! samples into chunks of at most 120 samples again; [`RemoteReadSource::chunk_series`] instead
//! passes Prometheus's XOR chunks through unchanged (remote read's XOR = 1 becomes StoreAPI's
//! XOR = 0; whole chunks, so they may reach beyond the range and hold more than 120 samples, §9).

use std::sync::Arc;

use async_trait::async_trait;
use engine::{DataRange, Labels, Matcher, SelectRequest, SeriesBatch, SeriesSource, SeriesStream};
use proto::prometheus::chunk::Encoding as ReadEncoding;

use super::PromState;
use super::prometheus::{ChunkedSeries, PromClient};

/// Series per batch handed to the StoreAPI server.
const BATCH_SERIES: usize = 1024;

/// Remote read of one Prometheus as a [`SeriesSource`]; external labels and time limits come
/// from the shared [`PromState`] the sidecar keeps current.
#[derive(Debug, Clone)]
pub struct RemoteReadSource {
    prom: PromClient,
    state: Arc<PromState>,
}

fn remote(prom: &PromClient, reason: impl Into<String>) -> engine::Error {
    engine::Error::Remote { endpoint: prom.base().to_string(), reason: reason.into() }
}

impl RemoteReadSource {
    /// Reads from `prom`, labels and limits from `state`.
    pub fn new(prom: PromClient, state: Arc<PromState>) -> Self {
        RemoteReadSource { prom, state }
    }

    /// The request's matchers left for Prometheus and its time range clamped to `--min-time`;
    /// None when nothing can match.
    fn plan(&self, matchers: &[Matcher], min_t: i64, max_t: i64) -> Option<(Vec<Matcher>, Labels, i64, i64)> {
        let ext = self.state.external_labels();
        let rest = engine::labels::non_external(matchers, |n| ext.get(n))?;
        let min_t = min_t.max(self.state.min_time_limit());
        (min_t <= max_t).then_some((rest, ext, min_t, max_t))
    }
}

/// Decodes one series' remote-read chunks into samples in `[min_t, max_t]`, sorted, one per
/// timestamp (the first chunk's sample wins where chunks overlap).
fn decode_series(s: &ChunkedSeries, min_t: i64, max_t: i64) -> engine::Result<(Vec<i64>, Vec<f64>)> {
    let (mut ts, mut vs) = (Vec::new(), Vec::new());
    let mut sorted = true;
    for c in &s.chunks {
        check_xor(&s.labels, c)?;
        if c.max_time_ms < min_t || c.min_time_ms > max_t {
            continue;
        }
        let before = ts.last().copied();
        let start = ts.len();
        engine::chunkenc::decode_into(&c.data, &mut ts, &mut vs)?;
        if let (Some(b), Some(&first)) = (before, ts.get(start))
            && first <= b
        {
            sorted = false;
        }
    }
    if !sorted {
        let mut pairs: Vec<(i64, f64)> = ts.iter().copied().zip(vs.iter().copied()).collect();
        pairs.sort_by_key(|p| p.0);
        pairs.dedup_by_key(|p| p.0);
        (ts, vs) = pairs.into_iter().unzip();
    }
    let a = ts.partition_point(|&t| t < min_t);
    let b = ts.partition_point(|&t| t <= max_t);
    Ok((ts[a..b].to_vec(), vs[a..b].to_vec()))
}

impl RemoteReadSource {
    /// The series matching `matchers` with data in `[min_t, max_t]` as StoreAPI series holding
    /// Prometheus's own XOR chunks (those overlapping the range, whole), external labels put on,
    /// the labels named in `without` taken off, sorted by the final labels; series that become
    /// equal are joined, their chunks sorted by min time. At most `limit` series (0: all).
    pub async fn chunk_series(
        &self,
        matchers: &[Matcher],
        min_t: i64,
        max_t: i64,
        without: &[String],
        limit: usize,
    ) -> engine::Result<Vec<proto::thanos::Series>> {
        let Some((matchers, ext, min_t, max_t)) = self.plan(matchers, min_t, max_t) else { return Ok(Vec::new()) };
        let read =
            self.prom.read_chunks(&matchers, min_t, max_t).await.map_err(|e| remote(&self.prom, e.to_string()))?;
        let mut all: Vec<(Labels, Vec<proto::thanos::AggrChunk>)> = Vec::with_capacity(read.len());
        for s in read {
            let mut chunks = Vec::with_capacity(s.chunks.len());
            for c in s.chunks {
                check_xor(&s.labels, &c)?;
                if c.max_time_ms < min_t || c.min_time_ms > max_t {
                    continue;
                }
                let hash = xxhash_rust::xxh64::xxh64(&c.data, 0);
                chunks.push(proto::thanos::AggrChunk {
                    min_time: c.min_time_ms,
                    max_time: c.max_time_ms,
                    raw: Some(proto::thanos::Chunk {
                        r#type: proto::thanos::chunk::Encoding::Xor as i32,
                        data: c.data,
                        hash,
                    }),
                    ..Default::default()
                });
            }
            if chunks.is_empty() {
                continue;
            }
            let mut labels = s.labels;
            for l in ext.iter() {
                labels.set(&l.name, &l.value);
            }
            for n in without {
                labels.remove(n);
            }
            all.push((labels, chunks));
        }
        all.sort_by(|a, b| a.0.cmp(&b.0));
        let mut out: Vec<(Labels, Vec<proto::thanos::AggrChunk>)> = Vec::with_capacity(all.len());
        for (l, chunks) in all {
            match out.last_mut() {
                Some(last) if last.0 == l => last.1.extend(chunks),
                _ => out.push((l, chunks)),
            }
        }
        if limit > 0 {
            out.truncate(limit);
        }
        Ok(out
            .into_iter()
            .map(|(l, mut chunks)| {
                chunks.sort_by_key(|c| c.min_time);
                proto::thanos::Series {
                    labels: l
                        .iter()
                        .map(|x| proto::prometheus::Label { name: x.name.clone(), value: x.value.clone() })
                        .collect(),
                    chunks,
                }
            })
            .collect())
    }
}

/// Only remote read's XOR float chunks are served.
fn check_xor(labels: &Labels, c: &proto::prometheus::Chunk) -> engine::Result<()> {
    if c.r#type == ReadEncoding::Xor as i32 {
        return Ok(());
    }
    Err(engine::Error::BadChunk {
        chunk: format!("of series {labels} ({}..{})", c.min_time_ms, c.max_time_ms),
        reason: format!(
            "remote-read chunk encoding {} ({}) is not supported (only XOR float chunks)",
            c.r#type,
            ReadEncoding::try_from(c.r#type).map_or("unknown", |e| e.as_str_name())
        ),
    })
}

#[async_trait]
impl SeriesSource for RemoteReadSource {
    async fn select(&self, req: &SelectRequest) -> engine::Result<SeriesStream> {
        let Some((matchers, ext, min_t, max_t)) = self.plan(&req.matchers, req.min_t, req.max_t) else {
            return Ok(Box::pin(futures::stream::empty()));
        };
        let read =
            self.prom.read_chunks(&matchers, min_t, max_t).await.map_err(|e| remote(&self.prom, e.to_string()))?;
        let mut all: Vec<(Labels, Vec<i64>, Vec<f64>)> = Vec::with_capacity(read.len());
        for s in &read {
            let (ts, vs) = decode_series(s, min_t, max_t)?;
            if ts.is_empty() {
                continue;
            }
            let mut labels = s.labels.clone();
            for l in ext.iter() {
                labels.set(&l.name, &l.value);
            }
            all.push((labels, ts, vs));
        }
        all.sort_by(|a, b| a.0.cmp(&b.0));
        let mut batches = Vec::new();
        let mut it = all.into_iter().peekable();
        while it.peek().is_some() {
            batches.push(SeriesBatch::from_series(it.by_ref().take(BATCH_SERIES).collect()));
        }
        Ok(Box::pin(futures::stream::iter(batches)))
    }

    /// One range: the external labels, from the Prometheus's oldest data (or `--min-time`) to
    /// the end of time (the head keeps growing).
    async fn data_ranges(&self) -> Vec<DataRange> {
        vec![DataRange {
            labels: self.state.external_labels(),
            min_t: self.state.min_time().max(self.state.min_time_limit()),
            max_t: i64::MAX,
        }]
    }

    async fn series(&self, matchers: &[Matcher], min_t: i64, max_t: i64) -> engine::Result<Vec<Labels>> {
        let Some((matchers, ext, min_t, max_t)) = self.plan(matchers, min_t, max_t) else { return Ok(Vec::new()) };
        let mut out = self.prom.series(&matchers, min_t, max_t).await.map_err(|e| remote(&self.prom, e.to_string()))?;
        for l in &mut out {
            for x in ext.iter() {
                l.set(&x.name, &x.value);
            }
        }
        out.sort();
        out.dedup();
        Ok(out)
    }

    async fn label_names(&self, matchers: &[Matcher], min_t: i64, max_t: i64) -> engine::Result<Vec<String>> {
        let Some((matchers, ext, min_t, max_t)) = self.plan(matchers, min_t, max_t) else { return Ok(Vec::new()) };
        let mut names =
            self.prom.label_names(&matchers, min_t, max_t).await.map_err(|e| remote(&self.prom, e.to_string()))?;
        if !names.is_empty() {
            names.extend(ext.iter().map(|l| l.name.clone()));
            names.sort();
            names.dedup();
        }
        Ok(names)
    }

    async fn label_values(
        &self,
        name: &str,
        matchers: &[Matcher],
        min_t: i64,
        max_t: i64,
    ) -> engine::Result<Vec<String>> {
        let Some((matchers, ext, min_t, max_t)) = self.plan(matchers, min_t, max_t) else { return Ok(Vec::new()) };
        let prom = &self.prom;
        match ext.get(name) {
            // Every series carries the external value: it is the answer when any series matches.
            Some(v) => {
                let any = prom.label_names(&matchers, min_t, max_t).await.map_err(|e| remote(prom, e.to_string()))?;
                Ok(if any.is_empty() { Vec::new() } else { vec![v.to_string()] })
            }
            None => prom.label_values(name, &matchers, min_t, max_t).await.map_err(|e| remote(prom, e.to_string())),
        }
    }
}

#[cfg(test)]
#[allow(clippy::unwrap_used, clippy::expect_used)]
mod tests {
    use proto::prometheus::Chunk;

    use super::*;

    fn chunk(samples: &[(i64, f64)], enc: ReadEncoding) -> Chunk {
        Chunk {
            min_time_ms: samples[0].0,
            max_time_ms: samples[samples.len() - 1].0,
            r#type: enc as i32,
            data: engine::chunkenc::encode(samples).unwrap(),
        }
    }

    #[test]
    fn chunks_decode_trimmed_and_overlaps_dropped() {
        let s = ChunkedSeries {
            labels: Labels::from_pairs([("__name__", "m")]),
            chunks: vec![
                chunk(&[(10, 1.0), (20, 2.0), (30, 3.0)], ReadEncoding::Xor),
                chunk(&[(30, 30.0), (40, 4.0)], ReadEncoding::Xor),
                chunk(&[(50, 5.0)], ReadEncoding::Xor),
            ],
        };
        let (ts, vs) = decode_series(&s, 15, 45).unwrap();
        assert_eq!(ts, vec![20, 30, 40]);
        assert_eq!(vs, vec![2.0, 3.0, 4.0]);
        let h = ChunkedSeries { labels: s.labels.clone(), chunks: vec![chunk(&[(1, 1.0)], ReadEncoding::Histogram)] };
        let e = decode_series(&h, 0, 10).unwrap_err().to_string();
        assert!(e.contains("encoding 2 (HISTOGRAM)") && e.contains("series m"), "{e}");
    }
}
