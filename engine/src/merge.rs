//! K-way merge of [`SeriesStream`]s into one stream with the same contract: series in label order,
//! each whole in one batch, samples sorted by timestamp without duplicates.
//!
//! ```text
//!   stream 0: a{..} c{..}        ─┐
//!   stream 1: a{..} b{..}        ─┼─► a{0 ∪ 1} b{1} c{0}   (same labels: samples merged by timestamp;
//!   stream 2: c{..}              ─┘                          on equal timestamps the lower stream wins)
//! ```
//!
//! Used by the bucket source across blocks and by the query layer across sources.

use std::sync::Arc;

use futures::StreamExt;

use crate::error::Result;
use crate::labels::Labels;
use crate::source::{SeriesBatch, SeriesStream};

/// Output batches close once they hold this many samples (a series is never split).
pub const MERGE_BATCH_SAMPLES: usize = 1 << 20;
/// Output batches close once they hold this many series.
pub const MERGE_BATCH_SERIES: usize = 16 * 1024;

/// A reading position in a [`SeriesStream`]: the batch holding the current series and its index.
/// Merges keep one per input stream; batches are shared (`Arc`), so a merge may hold on to series of
/// earlier batches while the cursor moves on.
pub struct SeriesCursor {
    stream: SeriesStream,
    batch: Option<Arc<SeriesBatch>>,
    pos: usize,
    done: bool,
}

impl std::fmt::Debug for SeriesCursor {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("SeriesCursor").field("pos", &self.pos).field("done", &self.done).finish_non_exhaustive()
    }
}

impl SeriesCursor {
    /// A cursor before the first series of `stream`; call [`SeriesCursor::fill`].
    pub fn new(stream: SeriesStream) -> Self {
        SeriesCursor { stream, batch: None, pos: 0, done: false }
    }

    /// Reads batches until the cursor is on a series, unless the stream is exhausted. After an
    /// error the cursor is exhausted.
    pub async fn fill(&mut self) -> Result<()> {
        loop {
            if self.done {
                return Ok(());
            }
            if let Some(b) = &self.batch
                && self.pos < b.num_series()
            {
                return Ok(());
            }
            match self.stream.next().await {
                None => {
                    self.done = true;
                    self.batch = None;
                }
                Some(Err(e)) => {
                    self.done = true;
                    self.batch = None;
                    return Err(e);
                }
                Some(Ok(b)) => {
                    self.batch = Some(Arc::new(b));
                    self.pos = 0;
                }
            }
        }
    }

    /// Labels of the current series (None when exhausted or not filled).
    pub fn head(&self) -> Option<&Labels> {
        if self.done {
            return None;
        }
        self.batch.as_ref().and_then(|b| b.labels.get(self.pos))
    }

    /// The batch of the current series and the series' index in it.
    pub fn current(&self) -> Option<(&Arc<SeriesBatch>, usize)> {
        self.batch.as_ref().filter(|b| !self.done && self.pos < b.num_series()).map(|b| (b, self.pos))
    }

    /// Moves past the current series (call [`SeriesCursor::fill`] before reading on).
    pub fn advance(&mut self) {
        self.pos += 1;
    }
}

/// Merges `a` (earlier, wins ties) with `b`, both sorted by timestamp.
fn merge_samples(a: (&[i64], &[f64]), b: (&[i64], &[f64]), out_t: &mut Vec<i64>, out_v: &mut Vec<f64>) {
    let (mut i, mut j) = (0, 0);
    while i < a.0.len() || j < b.0.len() {
        let take_a = j >= b.0.len() || (i < a.0.len() && a.0[i] <= b.0[j]);
        if take_a {
            if j < b.0.len() && a.0[i] == b.0[j] {
                j += 1;
            }
            out_t.push(a.0[i]);
            out_v.push(a.1[i]);
            i += 1;
        } else {
            out_t.push(b.0[j]);
            out_v.push(b.1[j]);
            j += 1;
        }
    }
}

/// Adds the samples `t`, `v` of a later stream to the series whose samples start at row `start`
/// of `ts`/`vs` (the rows before belong to earlier series): appended when they begin after its
/// last sample (blocks of one series usually follow each other in time), otherwise merged by
/// timestamp, the samples already there winning ties.
pub(crate) fn join_samples(ts: &mut Vec<i64>, vs: &mut Vec<f64>, start: usize, t: &[i64], v: &[f64]) {
    if ts.len() == start || t.first().is_none_or(|&first| ts.last().is_some_and(|&last| first > last)) {
        ts.extend_from_slice(t);
        vs.extend_from_slice(v);
        return;
    }
    let n = ts.len() - start + t.len();
    let (mut mt, mut mv) = (Vec::with_capacity(n), Vec::with_capacity(n));
    merge_samples((&ts[start..], &vs[start..]), (t, v), &mut mt, &mut mv);
    ts.truncate(start);
    vs.truncate(start);
    ts.extend_from_slice(&mt);
    vs.extend_from_slice(&mv);
}

/// One series as a list of [`merge_series_lists`] holds it: labels, timestamps, values.
pub type OwnedSeries = (Labels, Vec<i64>, Vec<f64>);

/// Merges lists of series, each in label order with samples sorted by timestamp, into one batch
/// as [`merge_series_streams`] merges streams: series with equal labels are joined, on equal
/// timestamps the sample of the list given first is kept, and series left without samples are
/// dropped. Unlike the streaming merge, the answer is one batch however large.
pub fn merge_series_lists(lists: Vec<Vec<OwnedSeries>>) -> Result<SeriesBatch> {
    let total: usize = lists.iter().flatten().map(|s| s.1.len()).sum();
    let mut heads: Vec<std::iter::Peekable<std::vec::IntoIter<OwnedSeries>>> =
        lists.into_iter().map(|l| l.into_iter().peekable()).collect();
    let (mut labels, mut offsets) = (Vec::new(), vec![0]);
    let (mut ts, mut vs) = (Vec::with_capacity(total), Vec::with_capacity(total));
    loop {
        // The first list holding the smallest head.
        let mut first: Option<(usize, &Labels)> = None;
        for (i, h) in heads.iter_mut().enumerate() {
            if let Some((l, ..)) = h.peek()
                && first.is_none_or(|(_, m)| l < m)
            {
                first = Some((i, l));
            }
        }
        let Some((i, _)) = first else { break };
        let Some((l, t, v)) = heads[i].next() else { break };
        let start = ts.len();
        join_samples(&mut ts, &mut vs, start, &t, &v);
        for h in &mut heads[i + 1..] {
            if let Some((_, t, v)) = h.next_if(|s| s.0 == l) {
                join_samples(&mut ts, &mut vs, start, &t, &v);
            }
        }
        if ts.len() > start {
            labels.push(l);
            offsets.push(ts.len());
        }
    }
    let samples = arrow::array::RecordBatch::try_new(
        crate::source::sample_schema(),
        vec![Arc::new(arrow::array::Int64Array::from(ts)), Arc::new(arrow::array::Float64Array::from(vs))],
    )
    .map_err(|e| crate::Error::arrow("building series batch", e))?;
    Ok(SeriesBatch { labels, offsets, samples })
}

struct State {
    cursors: Vec<SeriesCursor>,
}

#[async_trait::async_trait]
impl BatchProducer for State {
    async fn next_batch(&mut self) -> Result<Option<SeriesBatch>> {
        let mut out: Vec<(Labels, Vec<i64>, Vec<f64>)> = Vec::new();
        let mut samples = 0usize;
        loop {
            for c in &mut self.cursors {
                c.fill().await?;
            }
            let Some(min) = self.cursors.iter().filter_map(SeriesCursor::head).min().cloned() else { break };
            let mut ts: Vec<i64> = Vec::new();
            let mut vs: Vec<f64> = Vec::new();
            for c in &mut self.cursors {
                if c.head() != Some(&min) {
                    continue;
                }
                if let Some((b, i)) = c.current() {
                    let (_, t, v) = b.series(i);
                    join_samples(&mut ts, &mut vs, 0, t, v);
                }
                c.advance();
            }
            if ts.is_empty() {
                continue;
            }
            samples += ts.len();
            out.push((min, ts, vs));
            if samples >= MERGE_BATCH_SAMPLES || out.len() >= MERGE_BATCH_SERIES {
                break;
            }
        }
        if out.is_empty() { Ok(None) } else { SeriesBatch::from_series(out).map(Some) }
    }
}

/// The state of a stream built batch by batch (a merge's cursors and output), see
/// [`produce_stream`].
#[async_trait::async_trait]
pub trait BatchProducer: Send + 'static {
    /// The next batch; None when done.
    async fn next_batch(&mut self) -> Result<Option<SeriesBatch>>;
}

/// The stream of `producer`'s batches; it ends after the first error.
pub fn produce_stream<P: BatchProducer>(producer: P) -> SeriesStream {
    Box::pin(futures::stream::unfold(Some(producer), |state| async move {
        let mut p = state?;
        match p.next_batch().await {
            Ok(Some(b)) => Some((Ok(b), Some(p))),
            Ok(None) => None,
            Err(e) => Some((Err(e), None)),
        }
    }))
}

/// Merges streams that each satisfy the [`crate::SeriesSource`] contract into one that does too.
/// Series with equal labels are joined; on equal timestamps the sample of the stream listed first
/// is kept. Batches hold at most about [`MERGE_BATCH_SAMPLES`] samples (more only for one huge
/// series).
pub fn merge_series_streams(mut streams: Vec<SeriesStream>) -> SeriesStream {
    if streams.len() == 1
        && let Some(s) = streams.pop()
    {
        return s;
    }
    produce_stream(State { cursors: streams.into_iter().map(SeriesCursor::new).collect() })
}

/// Interleaves streams that each satisfy the [`crate::SeriesSource`] contract into one stream in
/// label order **without joining** equal series: entries with equal labels follow each other, those
/// of the stream listed first first. [`crate::SeriesSource::select_relabelled`] implementations use
/// it to keep replicas apart once their replica label is gone.
///
/// ```text
///   stream 0: a{..} c{..}   ─┐
///   stream 1: a{..} b{..}   ─┴─► a{0} a{1} b{1} c{0}
/// ```
///
/// Output batches are zero-copy slices of the input batches (runs of series one stream contributes
/// before another's turn).
pub fn interleave_series_streams(mut streams: Vec<SeriesStream>) -> SeriesStream {
    if streams.len() == 1
        && let Some(s) = streams.pop()
    {
        return s;
    }
    let cursors: Vec<SeriesCursor> = streams.into_iter().map(SeriesCursor::new).collect();
    Box::pin(futures::stream::unfold(Some(cursors), |state| async move {
        let mut cursors = state?;
        for c in &mut cursors {
            if let Err(e) = c.fill().await {
                return Some((Err(e), None));
            }
        }
        // The first stream holding the smallest head goes next.
        let mut best: Option<(usize, &Labels)> = None;
        for (i, c) in cursors.iter().enumerate() {
            if let Some(h) = c.head()
                && best.is_none_or(|(_, b)| h < b)
            {
                best = Some((i, h));
            }
        }
        let (i, _) = best?;
        // Its run ends before the first entry that another stream's head must precede: an equal
        // head of an earlier stream or a smaller head of any other.
        let bound = |l: &Labels| {
            cursors.iter().enumerate().any(|(j, c)| j != i && c.head().is_some_and(|h| h < l || (h == l && j < i)))
        };
        let (b, pos) = cursors[i].current()?;
        let mut end = pos + 1;
        while end < b.num_series() && !bound(&b.labels[end]) {
            end += 1;
        }
        let out = slice_batch(b, pos, end);
        cursors[i].pos = end;
        Some((Ok(out), Some(cursors)))
    }))
}

/// Series `from..to` of `b`, sharing its sample buffers.
fn slice_batch(b: &SeriesBatch, from: usize, to: usize) -> SeriesBatch {
    let (first, last) = (b.offsets[from], b.offsets[to]);
    SeriesBatch {
        labels: b.labels[from..to].to_vec(),
        offsets: b.offsets[from..=to].iter().map(|o| o - first).collect(),
        samples: b.samples.slice(first, last - first),
    }
}

/// Several sources seen as one: `select` merges their streams with [`merge_series_streams`]
/// (the source listed first wins on equal timestamps); `series`, `label_names` and `label_values`
/// are the sorted unions of the sources' answers.
///
/// `strata up` uses it to query the bucket and the receive heads together. The sources are asked
/// last to first: data that moves from a later source to an earlier one while a query starts (a
/// head's samples cut into a block: uploaded, the bucket re-synced, then dropped from the head) is
/// read from the head before the bucket's block list is taken, so it is found in one or both
/// (equal samples merge into one), never in neither.
#[derive(Debug, Clone)]
pub struct MergedSource {
    sources: Vec<std::sync::Arc<dyn crate::SeriesSource>>,
}

impl MergedSource {
    /// Merges `sources`, in priority order.
    pub fn new(sources: Vec<std::sync::Arc<dyn crate::SeriesSource>>) -> Self {
        MergedSource { sources }
    }
}

#[async_trait::async_trait]
impl crate::SeriesSource for MergedSource {
    async fn select(&self, req: &crate::SelectRequest) -> Result<SeriesStream> {
        let mut streams = Vec::with_capacity(self.sources.len());
        for s in self.sources.iter().rev() {
            streams.push(s.select(req).await?);
        }
        streams.reverse();
        Ok(merge_series_streams(streams))
    }

    /// Each source relabelled, interleaved: a series present in several sources comes once per
    /// source.
    async fn select_relabelled(
        &self,
        req: &crate::SelectRequest,
        relabel: &crate::source::Relabel,
    ) -> Result<SeriesStream> {
        if relabel.is_identity() {
            return self.select(req).await;
        }
        let mut streams = Vec::with_capacity(self.sources.len());
        for s in self.sources.iter().rev() {
            streams.push(s.select_relabelled(req, relabel).await?);
        }
        streams.reverse();
        Ok(interleave_series_streams(streams))
    }

    async fn series(&self, matchers: &[crate::Matcher], min_t: i64, max_t: i64) -> Result<Vec<Labels>> {
        let mut out = Vec::new();
        for s in &self.sources {
            out.push(s.series(matchers, min_t, max_t).await?);
        }
        Ok(sorted_union(out))
    }

    /// The sources' ranges, one list after the other.
    async fn data_ranges(&self) -> Vec<crate::DataRange> {
        let mut out = Vec::new();
        for s in &self.sources {
            out.extend(s.data_ranges().await);
        }
        out
    }

    async fn label_names(&self, matchers: &[crate::Matcher], min_t: i64, max_t: i64) -> Result<Vec<String>> {
        let mut out = Vec::new();
        for s in &self.sources {
            out.push(s.label_names(matchers, min_t, max_t).await?);
        }
        Ok(sorted_union(out))
    }

    async fn label_values(
        &self,
        name: &str,
        matchers: &[crate::Matcher],
        min_t: i64,
        max_t: i64,
    ) -> Result<Vec<String>> {
        let mut out = Vec::new();
        for s in &self.sources {
            out.push(s.label_values(name, matchers, min_t, max_t).await?);
        }
        Ok(sorted_union(out))
    }
}

/// The sorted, duplicate-free union of the sources' answers.
fn sorted_union<T: Ord>(parts: Vec<Vec<T>>) -> Vec<T> {
    let mut out: Vec<T> = parts.into_iter().flatten().collect();
    out.sort_unstable();
    out.dedup();
    out
}

#[cfg(test)]
#[allow(clippy::unwrap_used, clippy::expect_used)]
mod tests {
    use super::*;
    use futures::TryStreamExt;

    /// One sample that moves from the head to the bucket right after the first `select` of
    /// either (a cut racing a query).
    #[derive(Debug)]
    struct Handover {
        moved: std::sync::Arc<std::sync::atomic::AtomicBool>,
        bucket: bool,
    }

    #[async_trait::async_trait]
    impl crate::SeriesSource for Handover {
        async fn select(&self, _req: &crate::SelectRequest) -> Result<SeriesStream> {
            let moved = self.moved.swap(true, std::sync::atomic::Ordering::SeqCst);
            let here = if self.bucket { moved } else { !moved };
            let series = if here { vec![(l("m"), vec![1_000], vec![1.0])] } else { vec![] };
            Ok(stream(vec![series]))
        }

        async fn series(&self, _m: &[crate::Matcher], _min_t: i64, _max_t: i64) -> Result<Vec<Labels>> {
            Ok(vec![l("m")])
        }
    }

    #[tokio::test]
    async fn a_sample_moving_from_head_to_bucket_during_a_select_is_found_once() {
        let moved = std::sync::Arc::new(std::sync::atomic::AtomicBool::new(false));
        let bucket = std::sync::Arc::new(Handover { moved: moved.clone(), bucket: true });
        let head = std::sync::Arc::new(Handover { moved, bucket: false });
        let merged = MergedSource::new(vec![bucket, head]);
        let req = crate::SelectRequest { matchers: vec![], min_t: 0, max_t: 10_000, hints: Default::default() };
        let batches: Vec<SeriesBatch> =
            crate::SeriesSource::select(&merged, &req).await.unwrap().try_collect().await.unwrap();
        let samples: usize = batches.iter().map(|b| b.samples.num_rows()).sum();
        assert_eq!(samples, 1);
    }

    fn l(name: &str) -> Labels {
        Labels::from_pairs([("__name__", name)])
    }

    type Series = (Labels, Vec<i64>, Vec<f64>);

    fn stream(batches: Vec<Vec<Series>>) -> SeriesStream {
        let bs: Vec<Result<SeriesBatch>> = batches.into_iter().map(SeriesBatch::from_series).collect();
        Box::pin(futures::stream::iter(bs))
    }

    /// The merge of the inputs of `merges_series_and_samples` (and of its list form).
    fn merged_abcde() -> Vec<(String, Vec<i64>, Vec<f64>)> {
        vec![
            ("a".to_string(), vec![1, 2, 3, 4], vec![1.0, 2.0, 3.0, 4.0]),
            ("b".to_string(), vec![7], vec![7.0]),
            ("c".to_string(), vec![4, 5], vec![40.0, 5.0]),
            ("d".to_string(), vec![1, 2, 3, 4], vec![1.0, 2.0, 3.0, 4.0]),
            ("e".to_string(), vec![1, 2, 5], vec![1.0, 2.0, 5.0]),
        ]
    }

    #[tokio::test]
    async fn merges_series_and_samples() {
        let s0 = stream(vec![
            vec![(l("a"), vec![1, 3], vec![1.0, 3.0])],
            vec![],
            vec![
                (l("c"), vec![5], vec![5.0]),
                (l("d"), vec![1, 2], vec![1.0, 2.0]),
                (l("e"), vec![1, 2], vec![1.0, 2.0]),
            ],
        ]);
        let s1 = stream(vec![vec![
            (l("a"), vec![2, 3, 4], vec![2.0, 30.0, 4.0]),
            (l("b"), vec![7], vec![7.0]),
            (l("d"), vec![3, 4], vec![3.0, 4.0]),
            (l("e"), vec![2, 5], vec![20.0, 5.0]),
        ]]);
        let s2 = stream(vec![vec![(l("c"), vec![4, 5], vec![40.0, 50.0])]]);
        let out: Vec<SeriesBatch> = merge_series_streams(vec![s0, s1, s2]).try_collect().await.unwrap();
        let mut got = Vec::new();
        for b in &out {
            for i in 0..b.num_series() {
                let (lab, t, v) = b.series(i);
                got.push((lab.metric_name().unwrap().to_string(), t.to_vec(), v.to_vec()));
            }
        }
        assert_eq!(got, merged_abcde());
    }

    #[test]
    fn merged_lists_are_the_merged_streams_in_one_batch() {
        let lists = vec![
            vec![
                (l("a"), vec![1, 3], vec![1.0, 3.0]),
                (l("c"), vec![5], vec![5.0]),
                (l("d"), vec![1, 2], vec![1.0, 2.0]),
                (l("e"), vec![1, 2], vec![1.0, 2.0]),
                (l("g"), vec![], vec![]),
            ],
            vec![
                (l("a"), vec![2, 3, 4], vec![2.0, 30.0, 4.0]),
                (l("b"), vec![7], vec![7.0]),
                (l("d"), vec![3, 4], vec![3.0, 4.0]),
                (l("e"), vec![2, 5], vec![20.0, 5.0]),
            ],
            vec![(l("c"), vec![4, 5], vec![40.0, 50.0]), (l("f"), vec![], vec![])],
        ];
        let b = merge_series_lists(lists).unwrap();
        let got: Vec<(String, Vec<i64>, Vec<f64>)> = (0..b.num_series())
            .map(|i| {
                let (lab, t, v) = b.series(i);
                (lab.metric_name().unwrap().to_string(), t.to_vec(), v.to_vec())
            })
            .collect();
        // As `merges_series_and_samples`: the first list wins equal timestamps; series left
        // without samples are dropped.
        assert_eq!(got, merged_abcde());
        assert_eq!(merge_series_lists(vec![]).unwrap().num_series(), 0);
    }

    #[tokio::test]
    async fn propagates_errors_and_handles_empty() {
        let empty: Vec<SeriesBatch> = merge_series_streams(vec![]).try_collect().await.unwrap();
        assert!(empty.is_empty());
        let bad: SeriesStream = Box::pin(futures::stream::iter(vec![Err(crate::Error::BadInput {
            block: "b".into(),
            reason: "boom".into(),
        })]));
        let ok = stream(vec![vec![(l("a"), vec![1], vec![1.0])]]);
        let r: Result<Vec<SeriesBatch>> = merge_series_streams(vec![ok, bad]).try_collect().await;
        assert!(r.unwrap_err().to_string().contains("boom"));
    }

    #[tokio::test]
    async fn interleave_keeps_equal_series_apart_in_stream_order() {
        let s0 = stream(vec![
            vec![(l("a"), vec![1], vec![1.0]), (l("c"), vec![3], vec![3.0])],
            vec![(l("d"), vec![4], vec![4.0]), (l("e"), vec![5], vec![5.0])],
        ]);
        let s1 = stream(vec![vec![], vec![(l("a"), vec![10], vec![10.0]), (l("b"), vec![20], vec![20.0])]]);
        let s2 = stream(vec![vec![(l("c"), vec![30, 31], vec![30.0, 31.0])], vec![(l("f"), vec![6], vec![6.0])]]);
        let out: Vec<SeriesBatch> = interleave_series_streams(vec![s0, s1, s2]).try_collect().await.unwrap();
        let mut got = Vec::new();
        for b in &out {
            assert_eq!(b.offsets.len(), b.num_series() + 1);
            assert_eq!(b.offsets[0], 0);
            assert_eq!(*b.offsets.last().unwrap(), b.samples.num_rows());
            for i in 0..b.num_series() {
                let (lab, t, v) = b.series(i);
                got.push((lab.metric_name().unwrap().to_string(), t.to_vec(), v.to_vec()));
            }
        }
        let want: Vec<(String, Vec<i64>, Vec<f64>)> = vec![
            ("a".into(), vec![1], vec![1.0]),
            ("a".into(), vec![10], vec![10.0]),
            ("b".into(), vec![20], vec![20.0]),
            ("c".into(), vec![3], vec![3.0]),
            ("c".into(), vec![30, 31], vec![30.0, 31.0]),
            ("d".into(), vec![4], vec![4.0]),
            ("e".into(), vec![5], vec![5.0]),
            ("f".into(), vec![6], vec![6.0]),
        ];
        assert_eq!(got, want);
        // d and e come from one batch of stream 0 with nothing in between: one slice.
        assert!(out.iter().any(|b| b.num_series() == 2 && b.labels[0] == l("d")));
        let bad: SeriesStream = Box::pin(futures::stream::iter(vec![Err(crate::Error::BadInput {
            block: "b".into(),
            reason: "boom".into(),
        })]));
        let r: Result<Vec<SeriesBatch>> =
            interleave_series_streams(vec![stream(vec![vec![(l("a"), vec![1], vec![1.0])]]), bad]).try_collect().await;
        assert!(r.unwrap_err().to_string().contains("boom"));
    }

    #[tokio::test]
    async fn merged_source_unions_sources() {
        use crate::{MemSource, SelectRequest, SeriesSource};
        let a = MemSource::new();
        a.add(l("x"), &[1, 2], &[1.0, 2.0]);
        let b = MemSource::new();
        b.add(l("x"), &[2, 3], &[20.0, 3.0]);
        b.add(l("y"), &[5], &[5.0]);
        let m = MergedSource::new(vec![std::sync::Arc::new(a), std::sync::Arc::new(b)]);
        let req = SelectRequest { min_t: 0, max_t: 10, ..Default::default() };
        let out: Vec<SeriesBatch> = m.select(&req).await.unwrap().try_collect().await.unwrap();
        let (lab, t, v) = out[0].series(0);
        assert_eq!((lab.metric_name(), t, v), (Some("x"), &[1, 2, 3][..], &[1.0, 2.0, 3.0][..]));
        assert_eq!(m.series(&[], 0, 10).await.unwrap(), vec![l("x"), l("y")]);
        assert_eq!(m.label_values("__name__", &[], 4, 10).await.unwrap(), vec!["y".to_string()]);
    }
}
