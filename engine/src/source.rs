//! The read contract every data holder implements: [`SeriesSource`].
//!
//! A source answers `select(matchers, [min_t, max_t])` with a stream of [`SeriesBatch`]es: series in
//! label order, each series whole inside one batch, its samples sorted by timestamp with no duplicate
//! timestamps. Implementations: bucket blocks (Parquet), the in-memory [`MemSource`], and later the
//! head, the StoreAPI client and remote read. Merging sources and replica dedup happen above, in `query`.
//!
//! ```text
//!   matchers, [min_t, max_t] ──► SeriesSource ──► SeriesBatch { labels[i], offsets, (timestamp, value
//!                                                                [, start_timestamp]) }
//!                                                   series i = rows offsets[i]..offsets[i+1]
//! ```
//!
//! The optional `start_timestamp` column (nullable) carries the samples' start times where the
//! source knows them; only [`MemSource`] does so far.

use std::collections::BTreeSet;
use std::fmt;
use std::pin::Pin;
use std::sync::{Arc, RwLock};

use arrow::array::{Array, Float64Array, Int64Array, RecordBatch};
use arrow::datatypes::{DataType, Field, Schema, SchemaRef};
use async_trait::async_trait;
use futures::Stream;

use crate::error::{Error, Result};
use crate::labels::{Labels, Matcher, matches_all};

/// Schema of [`SeriesBatch::samples`]: `timestamp` (Int64 ms), `value` (Float64). A source that
/// knows the samples' start timestamps (OpenTelemetry / remote-write 2.0 "created" times) adds a
/// third column, [`sample_schema_with_start_timestamps`].
pub fn sample_schema() -> SchemaRef {
    static S: std::sync::OnceLock<SchemaRef> = std::sync::OnceLock::new();
    S.get_or_init(|| {
        Arc::new(Schema::new(vec![
            Field::new("timestamp", DataType::Int64, false),
            Field::new("value", DataType::Float64, false),
        ]))
    })
    .clone()
}

/// [`sample_schema`] plus `start_timestamp` (Int64 ms, nullable): the start time of the counter
/// interval a sample covers; null where unknown. Only [`MemSource`] fills it so far (bucket blocks
/// and the head do not store start timestamps).
pub fn sample_schema_with_start_timestamps() -> SchemaRef {
    static S: std::sync::OnceLock<SchemaRef> = std::sync::OnceLock::new();
    S.get_or_init(|| {
        let mut fields: Vec<Field> = sample_schema().fields().iter().map(|f| f.as_ref().clone()).collect();
        fields.push(Field::new("start_timestamp", DataType::Int64, true));
        Arc::new(Schema::new(fields))
    })
    .clone()
}

/// One series' labels, timestamps, values and start timestamps (0 = unknown), as
/// [`SeriesBatch::from_series_with_start_timestamps`] takes them.
pub type SeriesWithStartTimestamps = (Labels, Vec<i64>, Vec<f64>, Vec<i64>);

/// A batch of whole series and their samples.
#[derive(Debug, Clone)]
pub struct SeriesBatch {
    /// Label sets, one per series, in label order.
    pub labels: Vec<Labels>,
    /// Row ranges into `samples`: series `i` owns rows `offsets[i]..offsets[i + 1]`.
    pub offsets: Vec<usize>,
    /// The samples, schema [`sample_schema`].
    pub samples: RecordBatch,
}

impl SeriesBatch {
    /// Builds a batch from per-series sample vectors.
    pub fn from_series(series: Vec<(Labels, Vec<i64>, Vec<f64>)>) -> Result<Self> {
        let mut labels = Vec::with_capacity(series.len());
        let mut offsets = Vec::with_capacity(series.len() + 1);
        offsets.push(0);
        // Sized once: grown by doubling, the columns held up to twice their samples' bytes.
        let n = series.iter().map(|s| s.1.len()).sum();
        let (mut ts, mut vs) = (Vec::with_capacity(n), Vec::with_capacity(n));
        for (l, t, v) in series {
            if t.len() != v.len() {
                return Err(Error::BadLabels {
                    labels: l.to_string(),
                    reason: "timestamps and values differ in length".into(),
                });
            }
            ts.extend_from_slice(&t);
            vs.extend_from_slice(&v);
            labels.push(l);
            offsets.push(ts.len());
        }
        let samples = RecordBatch::try_new(
            sample_schema(),
            vec![Arc::new(Int64Array::from(ts)), Arc::new(Float64Array::from(vs))],
        )
        .map_err(|e| Error::arrow("building series batch", e))?;
        Ok(SeriesBatch { labels, offsets, samples })
    }

    /// Builds a batch from per-series samples with start timestamps (0 = unknown, stored as
    /// null), schema [`sample_schema_with_start_timestamps`].
    pub fn from_series_with_start_timestamps(series: Vec<SeriesWithStartTimestamps>) -> Result<Self> {
        let mut sts = Vec::new();
        let mut plain = Vec::with_capacity(series.len());
        for (l, t, v, st) in series {
            if st.len() != t.len() {
                return Err(Error::BadLabels {
                    labels: l.to_string(),
                    reason: "start timestamps and timestamps differ in length".into(),
                });
            }
            sts.extend_from_slice(&st);
            plain.push((l, t, v));
        }
        let b = Self::from_series(plain)?;
        let valid = arrow::buffer::NullBuffer::from(sts.iter().map(|&t| t != 0).collect::<Vec<bool>>());
        let st = Int64Array::new(sts.into(), Some(valid));
        let mut cols = b.samples.columns().to_vec();
        cols.push(Arc::new(st));
        let samples = RecordBatch::try_new(sample_schema_with_start_timestamps(), cols)
            .map_err(|e| Error::arrow("building series batch", e))?;
        Ok(SeriesBatch { samples, ..b })
    }

    /// The start timestamps column, when the source has one (null = unknown; the values under
    /// nulls are 0).
    pub fn start_timestamps(&self) -> Option<&Int64Array> {
        self.samples.columns().get(2).and_then(|c| c.as_any().downcast_ref::<Int64Array>())
    }

    /// Number of series.
    pub fn num_series(&self) -> usize {
        self.labels.len()
    }

    /// Timestamps column.
    pub fn timestamps(&self) -> &[i64] {
        self.samples.column(0).as_any().downcast_ref::<Int64Array>().map(|a| a.values().as_ref()).unwrap_or(&[])
    }

    /// Values column.
    pub fn values(&self) -> &[f64] {
        self.samples.column(1).as_any().downcast_ref::<Float64Array>().map(|a| a.values().as_ref()).unwrap_or(&[])
    }

    /// Series `i`: its labels, timestamps and values.
    pub fn series(&self, i: usize) -> (&Labels, &[i64], &[f64]) {
        let (a, b) = (self.offsets[i], self.offsets[i + 1]);
        (&self.labels[i], &self.timestamps()[a..b], &self.values()[a..b])
    }
}

/// A stream of series batches.
pub type SeriesStream = Pin<Box<dyn Stream<Item = Result<SeriesBatch>> + Send>>;

/// Series with their chunks (labels, chunks in time order), as a downsampled read serves them
/// ([`SeriesSource::select_downsampled_chunks`]); equal labels may follow each other (replicas).
pub type ChunkSeriesStream = Pin<Box<dyn Stream<Item = Result<Vec<(Labels, Vec<crate::aggr::AggrChunkData>)>>> + Send>>;

/// Hints a query engine may pass to a source (sources may ignore them).
#[derive(Debug, Clone, Default, PartialEq)]
pub struct SelectHints {
    /// Query step in ms (0 for instant queries).
    pub step_ms: i64,
    /// Range of the range selector in ms (0 for instant selectors).
    pub range_ms: i64,
    /// The function around the selector, if any (e.g. `rate`).
    pub func: Option<String>,
    /// Coarsest downsampling resolution the query accepts (ms): 0 = raw data only (StoreAPI
    /// `max_resolution_window`). Sources without downsampled data ignore it.
    pub max_resolution_ms: i64,
    /// The aggregates of downsampled data to read (StoreAPI `aggregates`; see
    /// [`crate::aggr::aggregates_for_func`]); empty: as `func` asks.
    pub aggregates: Vec<crate::aggr::Aggregate>,
}

/// What to select.
#[derive(Debug, Clone, Default)]
pub struct SelectRequest {
    /// All must match.
    pub matchers: Vec<Matcher>,
    /// Inclusive start (ms).
    pub min_t: i64,
    /// Inclusive end (ms).
    pub max_t: i64,
    /// Optional hints.
    pub hints: SelectHints,
}

/// The data behind one external label set of a source, as a StoreAPI `Info` answer lists it
/// (`TSDBInfo`): the labels every one of its series carries and the inclusive time range of its
/// samples.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct DataRange {
    /// Labels all series of this part carry (a block's or a tenant's external labels; empty for
    /// data without any).
    pub labels: Labels,
    /// Oldest sample that may be present (ms, inclusive).
    pub min_t: i64,
    /// Newest sample that may be present (ms, inclusive); `i64::MAX` for data still growing.
    pub max_t: i64,
}

impl DataRange {
    /// A range that claims nothing: any series at any time may be present.
    pub fn unbounded() -> Self {
        DataRange { labels: Labels::default(), min_t: i64::MIN, max_t: i64::MAX }
    }
}

/// A change applied to the labels of every selected series by [`SeriesSource::select_relabelled`]:
/// first the `set` labels are put on (replacing same-named ones), then the `remove` names are taken
/// off. A StoreAPI server uses it for its external labels and `without_replica_labels`.
///
/// ```
/// use engine::{Labels, source::Relabel};
/// let r = Relabel { set: Labels::from_pairs([("zone", "eu")]), remove: vec!["replica".into()] };
/// let mut l = Labels::from_pairs([("__name__", "up"), ("replica", "a"), ("zone", "us")]);
/// r.apply(&mut l);
/// assert_eq!(l, Labels::from_pairs([("__name__", "up"), ("zone", "eu")]));
/// ```
#[derive(Debug, Clone, Default, PartialEq)]
pub struct Relabel {
    /// Labels put on every series, replacing a same-named label.
    pub set: Labels,
    /// Label names removed from every series after `set`.
    pub remove: Vec<String>,
}

impl Relabel {
    /// True when the relabelling changes nothing.
    pub fn is_identity(&self) -> bool {
        self.set.is_empty() && self.remove.is_empty()
    }

    /// Applies the change to `l`.
    pub fn apply(&self, l: &mut Labels) {
        for x in self.set.iter() {
            l.set(&x.name, &x.value);
        }
        for n in &self.remove {
            l.remove(n);
        }
    }
}

/// Anything that holds series and samples.
#[async_trait]
pub trait SeriesSource: Send + Sync + fmt::Debug {
    /// Series matching all matchers with their samples in `[min_t, max_t]`; series with no sample in
    /// range are left out. Series in label order, each whole in one batch.
    async fn select(&self, req: &SelectRequest) -> Result<SeriesStream>;

    /// [`SeriesSource::select`] dealt out to `parts` streams that can be read on as many tasks:
    /// `Some` holds exactly `parts` streams, and taking one batch from each in turn (stream 0,
    /// 1, ..., `parts - 1`, 0, ...) until the stream whose turn it is has ended gives `select`'s
    /// series in `select`'s order, each whole in one batch (the streams after it have ended
    /// too). The work of reading and merging is in the streams, so each runs where it is polled.
    /// `None` (the default): the source does not deal; read [`SeriesSource::select`].
    async fn select_dealt(&self, _req: &SelectRequest, _parts: usize) -> Result<Option<Vec<SeriesStream>>> {
        Ok(None)
    }

    /// [`SeriesSource::select`] with every series' labels changed by `relabel` (matchers apply to
    /// the labels before the change), in the order of the changed labels. Series that become
    /// equal are not joined: they follow each other as separate entries, each whole, so a
    /// consumer can tell the replicas of a series apart once the replica label is gone.
    ///
    /// The default collects the whole selection, relabels it and sorts it (fine for in-memory
    /// sources); sources that can produce the order while streaming override it.
    async fn select_relabelled(&self, req: &SelectRequest, relabel: &Relabel) -> Result<SeriesStream> {
        let stream = self.select(req).await?;
        if relabel.is_identity() {
            return Ok(stream);
        }
        relabel_collected(stream, relabel).await
    }

    /// A downsampled read (`req.hints.max_resolution_ms` > 0) as Thanos's store gateway serves
    /// it: every series with its chunks, not turned into samples: raw chunks of the raw blocks
    /// used, and of each downsampled batch the aggregates `req.hints.aggregates` asks for (empty:
    /// as `req.hints.func` asks, [`crate::aggr::aggregates_for_func`]), cut into chunks of at most
    /// [`crate::aggr::ROWS_PER_CHUNK`] windows; chunks outside `[min_t, max_t]` are left out.
    /// Labels changed by `relabel`, as [`SeriesSource::select_relabelled`]. `None` (the default)
    /// when the source has no downsampled data for the request: [`SeriesSource::select`] answers.
    async fn select_downsampled_chunks(
        &self,
        _req: &SelectRequest,
        _relabel: &Relabel,
    ) -> Result<Option<ChunkSeriesStream>> {
        Ok(None)
    }

    /// The external label sets of the data held and the time range of each, answered from
    /// metadata without reading samples (a StoreAPI server's `Info`). The default claims any
    /// series at any time ([`DataRange::unbounded`]).
    async fn data_ranges(&self) -> Vec<DataRange> {
        vec![DataRange::unbounded()]
    }

    /// Label sets of the series matching all matchers that have data in `[min_t, max_t]`, sorted.
    async fn series(&self, matchers: &[Matcher], min_t: i64, max_t: i64) -> Result<Vec<Labels>>;

    /// Sorted label names of the matching series (all series when `matchers` is empty).
    async fn label_names(&self, matchers: &[Matcher], min_t: i64, max_t: i64) -> Result<Vec<String>> {
        let mut out = BTreeSet::new();
        for l in self.series(matchers, min_t, max_t).await? {
            out.extend(l.iter().map(|l| l.name.clone()));
        }
        Ok(out.into_iter().collect())
    }

    /// Sorted values of label `name` over the matching series.
    async fn label_values(&self, name: &str, matchers: &[Matcher], min_t: i64, max_t: i64) -> Result<Vec<String>> {
        let mut out = BTreeSet::new();
        for l in self.series(matchers, min_t, max_t).await? {
            if let Some(v) = l.get(name) {
                out.insert(v.to_string());
            }
        }
        Ok(out.into_iter().collect())
    }
}

/// The default of [`SeriesSource::select_relabelled`]: collects `stream`, relabels every series
/// and sorts by the new labels (stable, so equal ones keep their order), in batches of at most
/// [`MEM_BATCH_SERIES`] series.
pub async fn relabel_collected(mut stream: SeriesStream, relabel: &Relabel) -> Result<SeriesStream> {
    use futures::StreamExt;
    let mut all: Vec<(Labels, Vec<i64>, Vec<f64>)> = Vec::new();
    while let Some(b) = stream.next().await {
        let b = b?;
        for i in 0..b.num_series() {
            let (l, t, v) = b.series(i);
            let mut l = l.clone();
            relabel.apply(&mut l);
            all.push((l, t.to_vec(), v.to_vec()));
        }
    }
    all.sort_by(|a, b| a.0.cmp(&b.0));
    let mut batches = Vec::new();
    let mut it = all.into_iter().peekable();
    while it.peek().is_some() {
        batches.push(SeriesBatch::from_series(it.by_ref().take(MEM_BATCH_SERIES).collect()));
    }
    Ok(Box::pin(futures::stream::iter(batches)))
}

/// An in-memory series source: a sorted map of series to samples. Used by tests, the PromQL test
/// runner and as a building block of the head.
#[derive(Debug, Default)]
pub struct MemSource {
    series: RwLock<std::collections::BTreeMap<Labels, MemSeries>>,
}

/// Timestamps, values and start timestamps (0 = unknown) of one in-memory series.
type MemSeries = (Vec<i64>, Vec<f64>, Vec<i64>);

/// Series per batch emitted by [`MemSource`].
const MEM_BATCH_SERIES: usize = 1024;

impl MemSource {
    /// An empty source.
    pub fn new() -> Self {
        Self::default()
    }

    /// Adds samples to a series; samples are kept sorted by timestamp and a later sample with an
    /// existing timestamp replaces the earlier one.
    pub fn add(&self, labels: Labels, ts: &[i64], vs: &[f64]) {
        self.add_with_start_timestamps(labels, ts, vs, &[]);
    }

    /// [`MemSource::add`] with a start timestamp per sample (ms; 0 = unknown; missing entries
    /// count as unknown). Batches of series that have any start timestamp carry the
    /// `start_timestamp` column ([`sample_schema_with_start_timestamps`]).
    pub fn add_with_start_timestamps(&self, labels: Labels, ts: &[i64], vs: &[f64], sts: &[i64]) {
        let mut g = match self.series.write() {
            Ok(g) => g,
            Err(p) => p.into_inner(),
        };
        let e = g.entry(labels).or_default();
        let mut pts: Vec<(i64, f64, i64)> = e.0.iter().zip(&e.1).zip(&e.2).map(|((&t, &v), &st)| (t, v, st)).collect();
        pts.extend(ts.iter().zip(vs).enumerate().map(|(i, (&t, &v))| (t, v, sts.get(i).copied().unwrap_or(0))));
        // stable sort keeps insertion order among equal timestamps; keep the last one
        pts.sort_by_key(|p| p.0);
        let mut out: Vec<(i64, f64, i64)> = Vec::with_capacity(pts.len());
        for p in pts {
            match out.last_mut() {
                Some(last) if last.0 == p.0 => *last = p,
                _ => out.push(p),
            }
        }
        *e = (out.iter().map(|p| p.0).collect(), out.iter().map(|p| p.1).collect(), out.iter().map(|p| p.2).collect());
    }

    fn matching(&self, matchers: &[Matcher], min_t: i64, max_t: i64) -> Vec<SeriesWithStartTimestamps> {
        let g = match self.series.read() {
            Ok(g) => g,
            Err(p) => p.into_inner(),
        };
        g.iter()
            .filter(|(l, _)| matches_all(matchers, l))
            .filter_map(|(l, (t, v, st))| {
                let a = t.partition_point(|&x| x < min_t);
                let b = t.partition_point(|&x| x <= max_t);
                (a < b).then(|| (l.clone(), t[a..b].to_vec(), v[a..b].to_vec(), st[a..b].to_vec()))
            })
            .collect()
    }
}

#[async_trait]
impl SeriesSource for MemSource {
    async fn select(&self, req: &SelectRequest) -> Result<SeriesStream> {
        let all = self.matching(&req.matchers, req.min_t, req.max_t);
        let mut batches = Vec::new();
        let mut it = all.into_iter().peekable();
        while it.peek().is_some() {
            let chunk: Vec<_> = it.by_ref().take(MEM_BATCH_SERIES).collect();
            if chunk.iter().any(|s| s.3.iter().any(|&st| st != 0)) {
                batches.push(SeriesBatch::from_series_with_start_timestamps(chunk));
            } else {
                batches.push(SeriesBatch::from_series(chunk.into_iter().map(|(l, t, v, _)| (l, t, v)).collect()));
            }
        }
        Ok(Box::pin(futures::stream::iter(batches)))
    }

    async fn series(&self, matchers: &[Matcher], min_t: i64, max_t: i64) -> Result<Vec<Labels>> {
        Ok(self.matching(matchers, min_t, max_t).into_iter().map(|s| s.0).collect())
    }

    /// One unlabelled range from the oldest to the newest sample held (none when empty).
    async fn data_ranges(&self) -> Vec<DataRange> {
        let g = match self.series.read() {
            Ok(g) => g,
            Err(p) => p.into_inner(),
        };
        let min_t = g.values().filter_map(|s| s.0.first()).min();
        let max_t = g.values().filter_map(|s| s.0.last()).max();
        match (min_t, max_t) {
            (Some(&min_t), Some(&max_t)) => vec![DataRange { labels: Labels::default(), min_t, max_t }],
            _ => Vec::new(),
        }
    }
}

#[cfg(test)]
#[allow(clippy::unwrap_used, clippy::expect_used)]
mod tests {
    use super::*;
    use futures::TryStreamExt;

    #[tokio::test]
    async fn mem_source_selects_in_order_and_range() {
        let s = MemSource::new();
        s.add(Labels::from_pairs([("__name__", "b")]), &[1, 2, 3], &[1.0, 2.0, 3.0]);
        s.add(Labels::from_pairs([("__name__", "a")]), &[5, 1], &[5.0, 1.0]);
        s.add(Labels::from_pairs([("__name__", "a")]), &[5], &[6.0]);
        let req = SelectRequest {
            matchers: vec![Matcher::new(crate::MatchOp::RegexMatch, "__name__", "a|b").unwrap()],
            min_t: 2,
            max_t: 5,
            ..Default::default()
        };
        let batches: Vec<SeriesBatch> = s.select(&req).await.unwrap().try_collect().await.unwrap();
        assert_eq!(batches.len(), 1);
        let b = &batches[0];
        assert_eq!(b.num_series(), 2);
        let (l, t, v) = b.series(0);
        assert_eq!((l.metric_name(), t, v), (Some("a"), &[5][..], &[6.0][..]));
        let (_, t, _) = b.series(1);
        assert_eq!(t, &[2, 3]);
        assert_eq!(s.label_values("__name__", &[], 0, 10).await.unwrap(), vec!["a".to_string(), "b".to_string()]);
        assert!(s.series(&[], 6, 10).await.unwrap().is_empty());
        // Without start timestamps the batch has no start_timestamp column.
        assert!(b.start_timestamps().is_none());
    }

    #[tokio::test]
    async fn default_select_relabelled_sorts_by_the_new_labels_and_keeps_equal_ones_apart() {
        let s = MemSource::new();
        let l = |pairs: &[(&str, &str)]| Labels::from_pairs(pairs.iter().copied());
        s.add(l(&[("__name__", "m"), ("p", "1"), ("r", "a")]), &[1], &[1.0]);
        s.add(l(&[("__name__", "m"), ("p", "1"), ("q", "1"), ("r", "a")]), &[2], &[2.0]);
        s.add(l(&[("__name__", "m"), ("p", "1"), ("r", "b")]), &[3], &[3.0]);
        let req = SelectRequest { min_t: 0, max_t: 10, ..Default::default() };
        let relabel = Relabel { set: l(&[("a", "1")]), remove: vec!["r".into()] };
        let batches: Vec<SeriesBatch> = s.select_relabelled(&req, &relabel).await.unwrap().try_collect().await.unwrap();
        let got: Vec<(String, Vec<i64>)> = batches
            .iter()
            .flat_map(|b| (0..b.num_series()).map(|i| (b.series(i).0.to_string(), b.series(i).1.to_vec())))
            .collect();
        assert_eq!(
            got,
            vec![
                (r#"m{a="1", p="1"}"#.to_string(), vec![1]),
                (r#"m{a="1", p="1"}"#.to_string(), vec![3]),
                (r#"m{a="1", p="1", q="1"}"#.to_string(), vec![2]),
            ]
        );
        // The identity leaves select alone; the ranges cover the samples.
        let plain: Vec<SeriesBatch> =
            s.select_relabelled(&req, &Relabel::default()).await.unwrap().try_collect().await.unwrap();
        assert_eq!(plain[0].labels[0], l(&[("__name__", "m"), ("p", "1"), ("q", "1"), ("r", "a")]));
        assert_eq!(s.data_ranges().await, vec![DataRange { labels: Labels::default(), min_t: 1, max_t: 3 }]);
        assert!(MemSource::new().data_ranges().await.is_empty());
    }

    #[tokio::test]
    async fn mem_source_yields_start_timestamps_as_a_nullable_column() {
        let s = MemSource::new();
        s.add_with_start_timestamps(
            Labels::from_pairs([("__name__", "c")]),
            &[10, 20, 30],
            &[1.0, 2.0, 3.0],
            &[5, 0, 25],
        );
        s.add(Labels::from_pairs([("__name__", "d")]), &[10], &[1.0]);
        // A later add of an existing timestamp replaces the sample and its start timestamp.
        s.add_with_start_timestamps(Labels::from_pairs([("__name__", "c")]), &[30], &[4.0], &[28]);
        let req = SelectRequest { min_t: 0, max_t: 100, ..Default::default() };
        let batches: Vec<SeriesBatch> = s.select(&req).await.unwrap().try_collect().await.unwrap();
        let b = &batches[0];
        assert_eq!(b.samples.schema(), sample_schema_with_start_timestamps());
        let st = b.start_timestamps().unwrap();
        // c: 5, unknown, 28; d (no start timestamps): unknown.
        assert_eq!(st.values().as_ref(), &[5, 0, 28, 0]);
        assert_eq!((0..4).map(|i| st.is_null(i)).collect::<Vec<_>>(), vec![false, true, false, true]);
        assert_eq!(b.series(0).2, &[1.0, 2.0, 4.0]);
    }
}
