//! Merging the querier's sorted streams: the per-endpoint (and local) streams of replica tracks
//! become one stream of whole series, each label set once.
//!
//! ```text
//!   endpoint 0: a  b  b'  d        (b, b': two tracks of one label set, e.g. two replicas'
//!   endpoint 1: a  c  d             overlapping chunks, or two series equal without replica labels)
//!        └─ group_merge ─► a{0 ∪ 1}  b{b ⊕ b'}  c  d{0 ⊕ 1}
//!           ⊕ = union by timestamp (no dedup, or chain) or Thanos's penalty merge (dedup)
//! ```
//!
//! Inside these streams a label set may repeat on consecutive entries (one entry per track); the
//! output keeps the [`engine::SeriesSource`] contract (each label set once, whole, in order).
//! Nothing buffers a whole stream except [`strip_and_sort`], which has to re-sort.

use std::sync::Arc;

use arrow::array::{Float64Array, Int64Array, RecordBatch};
use engine::merge::{BatchProducer, MERGE_BATCH_SAMPLES, MERGE_BATCH_SERIES, SeriesCursor, produce_stream};
use engine::source::sample_schema;
use engine::{Labels, SeriesBatch, SeriesStream};
use futures::StreamExt;

use engine::dedup::{DedupFunc, Replica, chain_merge, merge_replicas, without_labels};

/// Collects whole series into [`SeriesBatch`]es without copying the sample vectors at the end.
#[derive(Debug, Default)]
pub(crate) struct BatchBuilder {
    labels: Vec<Labels>,
    offsets: Vec<usize>,
    /// Timestamps of the batch; a series being built is the tail after its start.
    pub(crate) ts: Vec<i64>,
    /// Values, parallel to `ts`.
    pub(crate) vs: Vec<f64>,
}

impl BatchBuilder {
    /// Closes the series whose samples were appended since `start`; a series without samples is
    /// left out.
    pub(crate) fn close_series(&mut self, labels: Labels, start: usize) {
        if self.ts.len() > start {
            if self.offsets.is_empty() {
                self.offsets.push(0);
            }
            self.labels.push(labels);
            self.offsets.push(self.ts.len());
        }
    }

    /// True once the batch holds at least `samples` samples or `series` series.
    pub(crate) fn is_full(&self, samples: usize, series: usize) -> bool {
        self.ts.len() >= samples || self.labels.len() >= series
    }

    /// The batch so far (None when it holds no series); the builder starts over.
    pub(crate) fn take(&mut self) -> engine::Result<Option<SeriesBatch>> {
        if self.labels.is_empty() {
            self.ts.clear();
            self.vs.clear();
            return Ok(None);
        }
        let ts = std::mem::take(&mut self.ts);
        let vs = std::mem::take(&mut self.vs);
        let samples = RecordBatch::try_new(
            sample_schema(),
            vec![Arc::new(Int64Array::from(ts)), Arc::new(Float64Array::from(vs))],
        )
        .map_err(|e| engine::Error::arrow("building a merged series batch", e))?;
        Ok(Some(SeriesBatch {
            labels: std::mem::take(&mut self.labels),
            offsets: std::mem::take(&mut self.offsets),
            samples,
        }))
    }
}

/// How the tracks of one label set are combined.
#[derive(Debug, Clone, Copy)]
pub(crate) enum Combine {
    /// Every sample once by timestamp (the first stream's sample on equal timestamps).
    Union,
    /// Replica deduplication with the function; `counter` as in [`engine::dedup`].
    Dedup(DedupFunc, bool),
}

struct GroupMerge {
    cursors: Vec<SeriesCursor>,
    combine: Combine,
    out: BatchBuilder,
}

#[async_trait::async_trait]
impl BatchProducer for GroupMerge {
    async fn next_batch(&mut self) -> engine::Result<Option<SeriesBatch>> {
        let mut group: Vec<(Arc<SeriesBatch>, usize)> = Vec::new();
        loop {
            for c in &mut self.cursors {
                c.fill().await?;
            }
            let Some(min) = self.cursors.iter().filter_map(SeriesCursor::head).min().cloned() else { break };
            group.clear();
            for c in &mut self.cursors {
                while c.head() == Some(&min) {
                    if let Some((b, i)) = c.current() {
                        group.push((Arc::clone(b), i));
                    }
                    c.advance();
                    c.fill().await?;
                }
            }
            let start = self.out.ts.len();
            let replicas: Vec<Replica<'_>> = group
                .iter()
                .map(|(b, i)| {
                    let (_, t, v) = b.series(*i);
                    (t, v)
                })
                .collect();
            match self.combine {
                Combine::Union => chain_merge(&replicas, &mut self.out.ts, &mut self.out.vs),
                Combine::Dedup(func, counter) => {
                    merge_replicas(func, &replicas, counter, &mut self.out.ts, &mut self.out.vs)
                }
            }
            self.out.close_series(min, start);
            if self.out.is_full(MERGE_BATCH_SAMPLES, MERGE_BATCH_SERIES) {
                break;
            }
        }
        self.out.take()
    }
}

/// Merges streams of replica tracks (each sorted by label set; consecutive entries may share one)
/// into one stream of whole series, combining each label set's tracks with `combine`. Streams are
/// read as the output is consumed, never buffered whole.
pub(crate) fn group_merge(streams: Vec<SeriesStream>, combine: Combine) -> SeriesStream {
    produce_stream(GroupMerge {
        cursors: streams.into_iter().map(SeriesCursor::new).collect(),
        combine,
        out: BatchBuilder::default(),
    })
}

/// Removes the labels `names` from every series of `stream` and re-sorts it (stably, so tracks of
/// one series keep their order). Series that become equal follow each other as separate tracks.
/// This reads the whole stream first: it is the fallback for sources that cannot sort without the
/// replica labels themselves (Thanos's eager retrieval with re-sort).
pub(crate) fn strip_and_sort(stream: SeriesStream, names: Vec<String>) -> SeriesStream {
    let fut = async move {
        let batches: Vec<SeriesBatch> = match stream.collect::<Vec<_>>().await.into_iter().collect() {
            Ok(b) => b,
            Err(e) => return vec![Err(e)],
        };
        let mut order: Vec<(Labels, usize, usize)> = Vec::new();
        for (bi, b) in batches.iter().enumerate() {
            for i in 0..b.num_series() {
                order.push((without_labels(&b.labels[i], &names), bi, i));
            }
        }
        order.sort_by(|a, b| a.0.cmp(&b.0));
        let mut out = Vec::new();
        let mut builder = BatchBuilder::default();
        for (labels, bi, i) in order {
            let (_, t, v) = batches[bi].series(i);
            let start = builder.ts.len();
            builder.ts.extend_from_slice(t);
            builder.vs.extend_from_slice(v);
            builder.close_series(labels, start);
            if builder.is_full(MERGE_BATCH_SAMPLES, MERGE_BATCH_SERIES) {
                out.push(builder.take().transpose());
            }
        }
        out.push(builder.take().transpose());
        out.into_iter().flatten().collect()
    };
    Box::pin(futures::stream::once(fut).flat_map(futures::stream::iter))
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]
    use futures::TryStreamExt;

    use super::*;

    fn l(name: &str, replica: &str) -> Labels {
        Labels::from_pairs([("__name__", name), ("replica", replica)])
    }

    type Series = (Labels, Vec<i64>, Vec<f64>);

    fn stream(batches: Vec<Vec<Series>>) -> SeriesStream {
        Box::pin(futures::stream::iter(batches.into_iter().map(SeriesBatch::from_series)))
    }

    async fn collect(s: SeriesStream) -> Vec<(String, Vec<i64>, Vec<f64>)> {
        let bs: Vec<SeriesBatch> = s.try_collect().await.unwrap();
        let mut out = Vec::new();
        for b in &bs {
            for i in 0..b.num_series() {
                let (l, t, v) = b.series(i);
                out.push((l.to_string(), t.to_vec(), v.to_vec()));
            }
        }
        out
    }

    #[tokio::test]
    async fn union_joins_label_sets_across_streams_and_tracks() {
        let s0 = stream(vec![
            vec![(l("a", "1"), vec![1, 3], vec![1.0, 3.0]), (l("b", "1"), vec![5], vec![5.0])],
            // a second track of b in the next batch, overlapping the first
            vec![(l("b", "1"), vec![4, 5, 6], vec![40.0, 50.0, 60.0])],
        ]);
        let s1 = stream(vec![vec![(l("a", "1"), vec![2, 3], vec![2.0, 30.0]), (l("c", "1"), vec![], vec![])]]);
        let got = collect(group_merge(vec![s0, s1], Combine::Union)).await;
        assert_eq!(
            got,
            vec![
                (r#"a{replica="1"}"#.into(), vec![1, 2, 3], vec![1.0, 2.0, 3.0]),
                (r#"b{replica="1"}"#.into(), vec![4, 5, 6], vec![40.0, 5.0, 60.0]),
            ]
        );
    }

    #[tokio::test]
    async fn strip_sort_then_dedup() {
        // Without `replica`, x{zone="b"} of replica 1 sorts after x{zone="a"} of replica 2.
        let x =
            |replica: &str, zone: &str| Labels::from_pairs([("__name__", "x"), ("replica", replica), ("zone", zone)]);
        let s = stream(vec![vec![
            (x("1", "a"), vec![0, 10_000], vec![1.0, 2.0]),
            (x("1", "b"), vec![0], vec![7.0]),
            (x("2", "a"), vec![0, 10_000, 20_000, 30_000, 40_000], vec![1.5, 2.5, 3.5, 4.5, 5.5]),
        ]]);
        let stripped = strip_and_sort(s, vec!["replica".into()]);
        let got = collect(group_merge(vec![stripped], Combine::Dedup(DedupFunc::Penalty, false))).await;
        // x{zone="a"}: replica 1 at 0 and 10 s (replica 2 penalised by 2*10 s), then replica 2 from
        // 30.001 s on.
        assert_eq!(
            got,
            vec![
                (r#"x{zone="a"}"#.into(), vec![0, 10_000, 40_000], vec![1.0, 2.0, 5.5]),
                (r#"x{zone="b"}"#.into(), vec![0], vec![7.0]),
            ]
        );
    }

    #[tokio::test]
    async fn errors_end_the_merge() {
        let bad: SeriesStream = Box::pin(futures::stream::iter(vec![Err(engine::Error::Remote {
            endpoint: "e:1".into(),
            reason: "boom".into(),
        })]));
        let ok = stream(vec![vec![(l("a", "1"), vec![1], vec![1.0])]]);
        let r: engine::Result<Vec<SeriesBatch>> = group_merge(vec![ok, bad], Combine::Union).try_collect().await;
        assert_eq!(r.unwrap_err().to_string(), "e:1: boom");
        let r: engine::Result<Vec<SeriesBatch>> = strip_and_sort(
            Box::pin(futures::stream::iter(vec![Err(engine::Error::Remote {
                endpoint: "e:2".into(),
                reason: "down".into(),
            })])),
            vec![],
        )
        .try_collect()
        .await;
        assert!(r.is_err());
    }
}
