#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::sync::atomic::AtomicUsize;

use engine::bucket::Bucket;
use engine::bucket_source::BucketSource;
use engine::format::SamplesEncoding;
use engine::{MemSource, SeriesStream};
use proto::prometheus::label_matcher::Type as PbType;
use proto::thanos::{QueryHints, Range};

use super::*;

fn labels(pairs: &[(&str, &str)]) -> Labels {
    Labels::from_pairs(pairs.iter().copied())
}

fn m(t: PbType, name: &str, value: &str) -> PbMatcher {
    PbMatcher { r#type: t as i32, name: name.into(), value: value.into() }
}

fn api_with(source: Arc<dyn SeriesSource>, opts: StoreApiOptions) -> StoreApi {
    let metrics = StoreApiMetrics::register(&mut Registry::default());
    StoreApi::new(source, opts, Arc::new(AtomicBool::new(true)), metrics)
}

fn api(source: Arc<dyn SeriesSource>) -> StoreApi {
    api_with(source, StoreApiOptions { component_type: "store".into(), ..Default::default() })
}

/// A decoded series: labels as `name=value` pairs and (timestamp, value bits) per chunk.
#[derive(Debug, Clone, PartialEq)]
struct Got {
    labels: Vec<(String, String)>,
    chunks: Vec<Vec<(i64, u64)>>,
}

impl Got {
    fn samples(&self) -> Vec<(i64, u64)> {
        self.chunks.iter().flatten().copied().collect()
    }
    fn labels(&self) -> Labels {
        Labels::from_pairs(self.labels.clone())
    }
}

/// Runs a Series call; returns the frames' series (decoded and checked chunk by chunk) and the
/// number of frames, or the error status.
async fn series_frames(api: &StoreApi, req: SeriesRequest) -> Result<(Vec<Got>, usize), Status> {
    let mut stream = Store::series(api, Request::new(req)).await?.into_inner();
    let (mut out, mut frames) = (Vec::new(), 0);
    while let Some(frame) = stream.next().await {
        frames += 1;
        let series = match frame?.result.unwrap() {
            series_response::Result::Series(s) => vec![s],
            series_response::Result::Batch(b) => b.series,
            other => panic!("unexpected frame {other:?}"),
        };
        for s in series {
            let mut chunks = Vec::new();
            for c in &s.chunks {
                let raw = c.raw.as_ref().unwrap();
                assert_eq!(raw.r#type, 0, "StoreAPI XOR is 0");
                assert_eq!(raw.hash, xxhash_rust::xxh64::xxh64(&raw.data, 0));
                assert!(c.count.is_none() && c.sum.is_none() && c.counter.is_none());
                let samples = engine::chunkenc::decode(&raw.data).unwrap();
                assert!(!samples.is_empty() && samples.len() <= 120, "{} samples", samples.len());
                assert_eq!((c.min_time, c.max_time), (samples[0].0, samples[samples.len() - 1].0));
                chunks.push(samples.into_iter().map(|(t, v)| (t, v.to_bits())).collect::<Vec<_>>());
            }
            let mins: Vec<i64> = s.chunks.iter().map(|c| c.min_time).collect();
            assert!(mins.is_sorted(), "chunks sorted by min time: {mins:?}");
            let names: Vec<&str> = s.labels.iter().map(|l| l.name.as_str()).collect();
            assert!(names.is_sorted() && names.windows(2).all(|w| w[0] != w[1]), "{names:?}");
            out.push(Got { labels: s.labels.into_iter().map(|l| (l.name, l.value)).collect(), chunks });
        }
    }
    Ok((out, frames))
}

async fn series(api: &StoreApi, req: SeriesRequest) -> Vec<Got> {
    let (got, _) = series_frames(api, req).await.unwrap();
    let sets: Vec<Labels> = got.iter().map(Got::labels).collect();
    assert!(sets.windows(2).all(|w| w[0] < w[1]), "series sorted and distinct: {sets:?}");
    got
}

async fn names_of(api: &StoreApi, r: LabelNamesRequest) -> Vec<String> {
    Store::label_names(api, Request::new(r)).await.unwrap().into_inner().names
}

async fn values_of(api: &StoreApi, r: LabelValuesRequest) -> Vec<String> {
    Store::label_values(api, Request::new(r)).await.unwrap().into_inner().values
}

fn req(matchers: Vec<PbMatcher>, min_time: i64, max_time: i64) -> SeriesRequest {
    SeriesRequest { min_time, max_time, matchers, ..Default::default() }
}

/// 300 samples, 15 s apart, values with NaN, stale markers, infinities and -0.0 mixed in.
fn samples(seed: i64) -> (Vec<i64>, Vec<f64>) {
    let ts: Vec<i64> = (0..300).map(|i| 1_000_000 + i * 15_000 + seed).collect();
    let vs = ts
        .iter()
        .enumerate()
        .map(|(i, &t)| match i % 97 {
            5 => f64::NAN,
            6 => f64::from_bits(engine::chunkenc::STALE_NAN_BITS),
            7 => f64::INFINITY,
            8 => -0.0,
            _ => (t as f64) * 0.25 + seed as f64,
        })
        .collect();
    (ts, vs)
}

fn bits(ts: &[i64], vs: &[f64]) -> Vec<(i64, u64)> {
    ts.iter().zip(vs).map(|(&t, v)| (t, v.to_bits())).collect()
}

fn fleet() -> Arc<MemSource> {
    let src = MemSource::new();
    for (i, job) in ["api", "web", "db"].iter().enumerate() {
        for inst in 0..3 {
            let (ts, vs) = samples((i * 3 + inst) as i64);
            let inst = format!("host-{inst}");
            src.add(labels(&[("__name__", "up"), ("job", job), ("instance", &inst)]), &ts, &vs);
        }
    }
    let (ts, vs) = samples(100);
    src.add(labels(&[("__name__", "other")]), &ts[..10], &vs[..10]);
    Arc::new(src)
}

#[tokio::test]
async fn series_as_xor_chunks_with_all_matcher_types() {
    let src = fleet();
    let api = api(src.clone());
    let all = series(&api, req(vec![m(PbType::Re, "__name__", ".+")], i64::MIN, i64::MAX)).await;
    assert_eq!(all.len(), 10);
    // Every sample comes back bit for bit, in chunks of 120 + 120 + 60.
    let up = all.iter().find(|g| g.labels() == labels(&[("__name__", "up"), ("job", "db"), ("instance", "host-1")]));
    let up = up.unwrap();
    assert_eq!(up.chunks.iter().map(Vec::len).collect::<Vec<_>>(), vec![120, 120, 60]);
    let (ts, vs) = samples(7);
    assert_eq!(up.samples(), bits(&ts, &vs));
    // The four matcher types (anchored regexes) and the inclusive time range.
    let cases: Vec<(Vec<PbMatcher>, usize)> = vec![
        (vec![m(PbType::Eq, "job", "api")], 3),
        (vec![m(PbType::Neq, "job", "api")], 7),
        (vec![m(PbType::Re, "job", "ap")], 0),
        (vec![m(PbType::Re, "job", "api|web"), m(PbType::Nre, "instance", "host-[01]")], 2),
        (vec![m(PbType::Nre, "__name__", "u.")], 1),
    ];
    for (ms, n) in cases {
        assert_eq!(series(&api, req(ms.clone(), i64::MIN, i64::MAX)).await.len(), n, "{ms:?}");
    }
    let (ts, _) = samples(0);
    let got =
        series(&api, req(vec![m(PbType::Eq, "job", "api"), m(PbType::Eq, "instance", "host-0")], ts[10], ts[20])).await;
    assert_eq!(got[0].samples().iter().map(|s| s.0).collect::<Vec<_>>(), ts[10..=20].to_vec());
    // min > max: nothing.
    assert!(series(&api, req(vec![], 10, 5)).await.is_empty());
}

#[tokio::test]
async fn external_labels_override_sort_and_decide_their_matchers() {
    let src = MemSource::new();
    // Attaching `zone` changes the order of these two (DESIGN §9).
    src.add(labels(&[("__name__", "a"), ("x", "1")]), &[1], &[1.0]);
    src.add(labels(&[("__name__", "a"), ("x", "1"), ("c", "2")]), &[2], &[2.0]);
    src.add(labels(&[("__name__", "a"), ("zone", "series-own")]), &[3], &[3.0]);
    let opts = StoreApiOptions {
        component_type: "receive".into(),
        external_labels: labels(&[("zone", "eu"), ("y", "9")]),
        ..Default::default()
    };
    let api = api_with(Arc::new(src), opts);
    let got = series(&api, req(vec![m(PbType::Eq, "__name__", "a")], 0, 10)).await;
    let sets: Vec<String> = got.iter().map(|g| g.labels().to_string()).collect();
    assert_eq!(
        sets,
        vec![r#"a{c="2", x="1", y="9", zone="eu"}"#, r#"a{x="1", y="9", zone="eu"}"#, r#"a{y="9", zone="eu"}"#]
    );
    // A matcher on an external label is decided by it (and not passed on: no series has zone="eu").
    assert_eq!(series(&api, req(vec![m(PbType::Eq, "zone", "eu")], 0, 10)).await.len(), 3);
    assert_eq!(series(&api, req(vec![m(PbType::Re, "zone", "e.")], 0, 10)).await.len(), 3);
    assert!(series(&api, req(vec![m(PbType::Eq, "zone", "us")], 0, 10)).await.is_empty());
    assert!(series(&api, req(vec![m(PbType::Neq, "y", "9"), m(PbType::Eq, "__name__", "a")], 0, 10)).await.is_empty());
    // Label names and values include them; matchers on them decide.
    let names = |ms: Vec<PbMatcher>| names_of(&api, LabelNamesRequest { end: 10, matchers: ms, ..Default::default() });
    assert_eq!(names(vec![]).await, vec!["__name__", "c", "x", "y", "zone"]);
    assert!(names(vec![m(PbType::Eq, "zone", "us")]).await.is_empty());
    let values = |label: &str, ms: Vec<PbMatcher>| {
        values_of(&api, LabelValuesRequest { label: label.into(), end: 10, matchers: ms, ..Default::default() })
    };
    assert_eq!(values("zone", vec![]).await, vec!["eu"]);
    assert!(values("zone", vec![m(PbType::Eq, "x", "nope")]).await.is_empty());
    assert_eq!(values("x", vec![]).await, vec!["1"]);
    // Info advertises the external labels.
    let info = Info::info(&api, Request::new(InfoRequest {})).await.unwrap().into_inner();
    assert_eq!(info.component_type, "receive");
    let set =
        info.label_sets.iter().map(|s| super::super::convert::labels_from_proto(s.labels.clone())).collect::<Vec<_>>();
    assert_eq!(set, vec![labels(&[("zone", "eu"), ("y", "9")])]);
    let store = info.store.unwrap();
    assert_eq!((store.min_time, store.max_time), (1, 3));
}

/// Replicas `r=a`/`r=b` whose order changes once `r` is gone: `{p=1,r=a}` sorts after
/// `{p=1,q=1,r=a}` but `{p=1}` before `{p=1,q=1}`.
fn replicas() -> Vec<(Labels, Vec<i64>, Vec<f64>)> {
    let mut out = Vec::new();
    for (r, off) in [("a", 0), ("b", 7)] {
        let (ts, vs) = samples(off);
        out.push((labels(&[("__name__", "m"), ("p", "1"), ("r", r)]), ts.clone(), vs.clone()));
        out.push((
            labels(&[("__name__", "m"), ("p", "1"), ("q", "1"), ("r", r)]),
            ts[..130].to_vec(),
            vs[..130].to_vec(),
        ));
        out.push((labels(&[("__name__", "m"), ("p", "2"), ("r", r)]), ts[..5].to_vec(), vs[..5].to_vec()));
    }
    out
}

/// What the server must send for `replicas()` without `r`: per stripped label set, every chunk of
/// every replica, as sorted (min time, samples) lists.
/// Per label set, its chunks as (timestamp, value bits) lists.
type ChunkLists = Vec<(Labels, Vec<Vec<(i64, u64)>>)>;

fn without_r_expected() -> ChunkLists {
    let mut by: BTreeMap<Labels, Vec<Vec<(i64, u64)>>> = BTreeMap::new();
    for (mut l, ts, vs) in replicas() {
        l.remove("r");
        let e = by.entry(l).or_default();
        for (t, v) in ts.chunks(120).zip(vs.chunks(120)) {
            e.push(bits(t, v));
        }
    }
    by.into_iter()
        .map(|(l, mut cs)| {
            cs.sort();
            (l, cs)
        })
        .collect()
}

fn normalised(got: &[Got]) -> ChunkLists {
    got.iter()
        .map(|g| {
            let mut cs = g.chunks.clone();
            cs.sort();
            (g.labels(), cs)
        })
        .collect()
}

#[tokio::test]
async fn without_replica_labels_resorts_and_keeps_replica_chunks() {
    let src = MemSource::new();
    for (l, ts, vs) in replicas() {
        src.add(l, &ts, &vs);
    }
    let api = api(Arc::new(src));
    let mut r = req(vec![m(PbType::Eq, "__name__", "m")], i64::MIN, i64::MAX);
    r.without_replica_labels = vec!["r".into(), "not-there".into()];
    let got = series(&api, r.clone()).await;
    assert_eq!(normalised(&got), without_r_expected());
    let sets: Vec<String> = got.iter().map(|g| g.labels().to_string()).collect();
    assert_eq!(sets, vec![r#"m{p="1"}"#, r#"m{p="1", q="1"}"#, r#"m{p="2"}"#]);
    // Both replicas' chunks are there, overlapping: 3 + 3 for m{p="1"}.
    assert_eq!(got[0].chunks.len(), 6);
    // Label names drop the replica label; values of it are empty.
    let without = vec!["r".to_string()];
    let r_names = LabelNamesRequest { end: i64::MAX, without_replica_labels: without.clone(), ..Default::default() };
    assert_eq!(names_of(&api, r_names).await, vec!["__name__", "p", "q"]);
    let r_values =
        LabelValuesRequest { label: "r".into(), end: i64::MAX, without_replica_labels: without, ..Default::default() };
    assert!(values_of(&api, r_values).await.is_empty());
    // skip_chunks: the stripped label sets once each.
    r.skip_chunks = true;
    let got = series(&api, r).await;
    assert_eq!(
        got.iter().map(Got::labels).collect::<Vec<_>>(),
        without_r_expected().into_iter().map(|e| e.0).collect::<Vec<_>>()
    );
    assert!(got.iter().all(|g| g.chunks.is_empty()));
}

#[tokio::test]
async fn without_replica_labels_streams_bucket_blocks_per_replica() {
    let dir = tempfile::tempdir().unwrap();
    let bucket = Bucket::local(dir.path()).unwrap();
    // The replicas as external labels of their blocks, each replica's data in two blocks (v2 and v1).
    let half = 1_000_000 + 150 * 15_000;
    let mut n = 0;
    for r in ["a", "b"] {
        let data: Vec<(Labels, Vec<i64>, Vec<f64>)> = replicas()
            .into_iter()
            .filter(|(l, _, _)| l.get("r") == Some(r))
            .map(|(mut l, t, v)| {
                l.remove("r");
                (l, t, v)
            })
            .collect();
        for (lo, hi) in [(0, half), (half, i64::MAX)] {
            let part: Vec<(Labels, Vec<i64>, Vec<f64>)> = data
                .iter()
                .filter_map(|(l, t, v)| {
                    let (a, b) = (t.partition_point(|&x| x < lo), t.partition_point(|&x| x < hi));
                    (a < b).then(|| (l.clone(), t[a..b].to_vec(), v[a..b].to_vec()))
                })
                .collect();
            n += 1;
            let (min, max) =
                (part.iter().map(|p| p.1[0]).min().unwrap(), part.iter().map(|p| *p.1.last().unwrap()).max().unwrap());
            let mut o = engine::BlockWriterOptions::new(ulid::Ulid::from_parts(n, n as u128), min, max + 1);
            o.external_labels.insert("r".into(), r.into());
            // Replica b's second block in storage format v1: the store serves both formats alike.
            let enc = if (r, lo) == ("b", half) { SamplesEncoding::V1 } else { SamplesEncoding::V2 };
            let mut w = engine::BlockWriter::with_encoding(bucket.clone(), o, enc).unwrap();
            for (l, t, v) in part {
                w.append_series(&l, &t, &v).await.unwrap();
            }
            w.finish().await.unwrap();
        }
    }
    let src = BucketSource::new(bucket);
    src.sync().await.unwrap();
    let api = api(Arc::new(src));
    let mut r = req(vec![m(PbType::Eq, "__name__", "m")], i64::MIN, i64::MAX);
    r.without_replica_labels = vec!["r".into()];
    let got = series(&api, r.clone()).await;
    // Chunks are cut per block here, so compare the samples per replica instead of chunk lists.
    let per_label: Vec<(Labels, usize)> = got.iter().map(|g| (g.labels(), g.samples().len())).collect();
    let want: Vec<(Labels, usize)> =
        without_r_expected().into_iter().map(|(l, cs)| (l, cs.iter().map(Vec::len).sum())).collect();
    assert_eq!(per_label, want);
    let mut got_samples = got[0].samples();
    got_samples.sort();
    let mut want_samples: Vec<(i64, u64)> = without_r_expected()[0].1.concat();
    want_samples.sort();
    assert_eq!(got_samples, want_samples);
    // Info: one label set per replica, one TSDB info per block, from the block metas.
    let info = Info::info(&api, Request::new(InfoRequest {})).await.unwrap().into_inner();
    assert_eq!(info.label_sets.len(), 2);
    let store = info.store.unwrap();
    assert_eq!(store.tsdb_infos.len(), 4);
    let mut spans: Vec<(i64, i64)> = store.tsdb_infos.iter().map(|t| (t.min_time, t.max_time)).collect();
    spans.dedup();
    assert_eq!(spans.len(), 4, "two blocks per replica, sorted by labels then time: {spans:?}");
    assert!(store.supports_without_replica_labels && store.supports_sharding);
    let (ts_a, _) = samples(0);
    let (ts_b, _) = samples(7);
    assert_eq!((store.min_time, store.max_time), (ts_a[0], *ts_b.last().unwrap()));
}

#[tokio::test]
async fn shards_partition_the_series() {
    let api = api(fleet());
    let all = series(&api, req(vec![], i64::MIN, i64::MAX)).await;
    for (by, names) in [(false, vec![]), (true, vec!["job".to_string()]), (false, vec!["instance".to_string()])] {
        let mut seen = Vec::new();
        for index in 0..3 {
            let mut r = req(vec![], i64::MIN, i64::MAX);
            r.shard_info = Some(ShardInfo { shard_index: index, total_shards: 3, by, labels: names.clone() });
            for g in series(&api, r).await {
                // An independent hash: Labels::stable_hash over the labels the shard looks at.
                let mut l = g.labels();
                for x in g.labels().iter() {
                    if names.contains(&x.name) != by {
                        l.remove(&x.name);
                    }
                }
                assert_eq!(l.stable_hash() % 3, index as u64);
                seen.push(g);
            }
        }
        seen.sort_by_key(Got::labels);
        assert_eq!(seen, all, "by={by} {names:?}");
    }
    // total_shards < 1: no sharding.
    let mut r = req(vec![], i64::MIN, i64::MAX);
    r.shard_info = Some(ShardInfo { shard_index: 0, total_shards: 0, ..Default::default() });
    assert_eq!(series(&api, r).await.len(), all.len());
}

#[tokio::test]
async fn limit_skip_chunks_batches_and_request_limits() {
    let api = api(fleet());
    let mut r = req(vec![m(PbType::Eq, "__name__", "up")], i64::MIN, i64::MAX);
    let all = series(&api, r.clone()).await;
    r.limit = 4;
    assert_eq!(series(&api, r.clone()).await, all[..4].to_vec());
    r.skip_chunks = true;
    let labels_only = series(&api, r.clone()).await;
    assert_eq!(
        labels_only.iter().map(|g| &g.labels).collect::<Vec<_>>(),
        all[..4].iter().map(|g| &g.labels).collect::<Vec<_>>()
    );
    assert!(labels_only.iter().all(|g| g.chunks.is_empty()));
    // Batches of 4: 9 series in 3 frames; 0 and 1 mean one series per frame.
    r.limit = 0;
    r.skip_chunks = false;
    r.response_batch_size = 4;
    let (got, frames) = series_frames(&api, r.clone()).await.unwrap();
    assert_eq!((got, frames), (all.clone(), 3));
    r.response_batch_size = 1;
    assert_eq!(series_frames(&api, r.clone()).await.unwrap().1, 9);
    // Request limits: exactly at the limit passes, beyond fails with ResourceExhausted.
    let limited = |series: u64, samples: u64| {
        let opts = StoreApiOptions { limits: RequestLimits { series, samples }, ..Default::default() };
        api_with(fleet(), opts)
    };
    assert_eq!(series(&limited(9, 9 * 300), r.clone()).await.len(), 9);
    let e = series_frames(&limited(8, 0), r.clone()).await.unwrap_err();
    assert_eq!(e.code(), Code::ResourceExhausted, "{e:?}");
    assert!(e.message().contains("--store.limits.request-series"), "{e:?}");
    let e = series_frames(&limited(0, 9 * 300 - 1), r.clone()).await.unwrap_err();
    assert_eq!(e.code(), Code::ResourceExhausted, "{e:?}");
    assert!(e.message().contains("samples"), "{e:?}");
    // The `limit` field is applied before the request limit counts.
    r.limit = 2;
    assert_eq!(series(&limited(2, 0), r).await.len(), 2);
}

#[tokio::test]
async fn bad_requests_are_invalid_argument_and_hints_are_checked() {
    let api = api(fleet());
    let bad_re = req(vec![m(PbType::Re, "job", "(")], 0, 10);
    assert_eq!(series_frames(&api, bad_re).await.unwrap_err().code(), Code::InvalidArgument);
    let mut unknown = req(vec![], 0, 10);
    unknown.matchers = vec![PbMatcher { r#type: 9, name: "a".into(), value: "b".into() }];
    assert_eq!(series_frames(&api, unknown).await.unwrap_err().code(), Code::InvalidArgument);
    // Hints of the right type are accepted (block matchers not applied), others rejected.
    let hints = hintspb::SeriesRequestHints {
        block_matchers: vec![m(PbType::Eq, "__block_id", "X")],
        enable_query_stats: true,
    };
    let mut r = req(vec![m(PbType::Eq, "job", "api")], i64::MIN, i64::MAX);
    r.hints = Some(prost_types::Any::from_msg(&hints).unwrap());
    r.query_hints =
        Some(QueryHints { step_millis: 60_000, range: Some(Range { millis: 300_000 }), ..Default::default() });
    let (got, frames) = series_frames(&api, r.clone()).await.unwrap();
    assert_eq!((got.len(), frames), (3, 3), "no hints frame");
    r.hints = Some(prost_types::Any::from_msg(&hintspb::LabelNamesRequestHints::default()).unwrap());
    assert_eq!(series_frames(&api, r.clone()).await.unwrap_err().code(), Code::InvalidArgument);
    r.hints = Some(
        prost_types::Any::from_msg(&hintspb::SeriesRequestHints {
            block_matchers: vec![m(PbType::Re, "a", "(")],
            ..Default::default()
        })
        .unwrap(),
    );
    assert_eq!(series_frames(&api, r).await.unwrap_err().code(), Code::InvalidArgument);
    let e = Store::label_values(&api, Request::new(LabelValuesRequest::default())).await.unwrap_err();
    assert_eq!(e.code(), Code::InvalidArgument);
    let r = LabelNamesRequest { matchers: vec![m(PbType::Nre, "a", "[")], ..Default::default() };
    assert_eq!(Store::label_names(&api, Request::new(r)).await.unwrap_err().code(), Code::InvalidArgument);
}

#[tokio::test]
async fn label_names_and_values_sorted_with_matchers_range_and_limit() {
    let src = fleet();
    src.add(labels(&[("__name__", "late"), ("zzz", "1"), ("job", "batch")]), &[5_000_000_000], &[1.0]);
    let api = api(src);
    let names = |start, end, ms: Vec<PbMatcher>, limit| {
        names_of(&api, LabelNamesRequest { start, end, matchers: ms, limit, ..Default::default() })
    };
    assert_eq!(names(0, i64::MAX, vec![], 0).await, vec!["__name__", "instance", "job", "zzz"]);
    assert_eq!(names(0, 4_000_000_000, vec![], 0).await, vec!["__name__", "instance", "job"]);
    assert_eq!(names(0, i64::MAX, vec![m(PbType::Eq, "__name__", "other")], 0).await, vec!["__name__"]);
    assert_eq!(names(0, i64::MAX, vec![], 2).await, vec!["__name__", "instance"]);
    let values = |label: &str, start, end, ms: Vec<PbMatcher>, limit| {
        let r = LabelValuesRequest { label: label.into(), start, end, matchers: ms, limit, ..Default::default() };
        values_of(&api, r)
    };
    assert_eq!(values("job", 0, i64::MAX, vec![], 0).await, vec!["api", "batch", "db", "web"]);
    assert_eq!(values("job", 0, 4_000_000_000, vec![], 0).await, vec!["api", "db", "web"]);
    assert_eq!(values("job", 0, i64::MAX, vec![m(PbType::Re, "instance", "host-[12]")], 1).await, vec!["api"]);
    // `other` has no job: != matches it, as in Prometheus.
    assert_eq!(
        values("__name__", 0, i64::MAX, vec![m(PbType::Neq, "job", "api")], 0).await,
        vec!["late", "other", "up"]
    );
    assert_eq!(values("__name__", 0, i64::MAX, vec![m(PbType::Re, "job", ".+")], 0).await, vec!["late", "up"]);
}

#[tokio::test]
async fn info_fails_until_ready_and_reports_the_source() {
    let src = fleet();
    let ready = Arc::new(AtomicBool::new(false));
    let metrics = StoreApiMetrics::register(&mut Registry::default());
    let opts = StoreApiOptions { component_type: "store".into(), ..Default::default() };
    let api = StoreApi::new(src, opts, ready.clone(), metrics);
    let e = Info::info(&api, Request::new(InfoRequest {})).await.unwrap_err();
    assert_eq!(e.code(), Code::Unavailable);
    assert_eq!(series_frames(&api, req(vec![], 0, 1)).await.unwrap_err().code(), Code::Unavailable);
    ready.store(true, Ordering::Release);
    let info = Info::info(&api, Request::new(InfoRequest {})).await.unwrap().into_inner();
    assert_eq!(info.component_type, "store");
    let store = info.store.unwrap();
    let (first, _) = samples(0);
    let (last, _) = samples(8);
    assert_eq!((store.min_time, store.max_time), (first[0], *last.last().unwrap()));
    assert_eq!(store.tsdb_infos.len(), 1);
    assert!(!store.supports_projections);
    // An empty source: no label sets, an empty range.
    let empty = api_with(Arc::new(MemSource::new()), StoreApiOptions::default());
    let info = Info::info(&empty, Request::new(InfoRequest {})).await.unwrap().into_inner();
    let store = info.store.unwrap();
    assert!(info.label_sets.is_empty() && store.tsdb_infos.is_empty());
    assert!(store.min_time > store.max_time);
}

/// A source of endless batches that counts how many were asked for.
#[derive(Debug, Default)]
struct Endless {
    polled: Arc<AtomicUsize>,
}

#[async_trait::async_trait]
impl SeriesSource for Endless {
    async fn select(&self, _: &SelectRequest) -> engine::Result<SeriesStream> {
        let polled = self.polled.clone();
        Ok(Box::pin(futures::stream::unfold(0u64, move |i| {
            let polled = polled.clone();
            async move {
                polled.fetch_add(1, Ordering::SeqCst);
                let l = Labels::from_pairs([("__name__", format!("s{i:012}"))]);
                Some((engine::SeriesBatch::from_series(vec![(l, vec![1, 2], vec![1.0, 2.0])]), i + 1))
            }
        })))
    }
    async fn series(&self, _: &[Matcher], _: i64, _: i64) -> engine::Result<Vec<Labels>> {
        Ok(Vec::new())
    }
}

#[tokio::test]
async fn series_streams_a_few_frames_ahead_and_stops_when_the_client_goes() {
    let src = Arc::new(Endless::default());
    let polled = src.polled.clone();
    let api = api(src);
    let mut stream = Store::series(&api, Request::new(req(vec![], 0, 10))).await.unwrap().into_inner();
    for _ in 0..3 {
        assert!(stream.next().await.unwrap().is_ok());
    }
    tokio::time::sleep(std::time::Duration::from_millis(100)).await;
    // Three frames read, the channel holds FRAMES_AHEAD, one series pending, one in hand.
    let n = polled.load(Ordering::SeqCst);
    assert!(n <= 3 + FRAMES_AHEAD + 2, "{n} batches read for 3 frames");
    drop(stream);
    tokio::time::sleep(std::time::Duration::from_millis(100)).await;
    let after = polled.load(Ordering::SeqCst);
    tokio::time::sleep(std::time::Duration::from_millis(100)).await;
    assert_eq!(polled.load(Ordering::SeqCst), after, "the producer stopped");
}

#[test]
fn errors_map_to_grpc_codes() {
    let cases = [
        (Error::BadData("x".into()), Code::InvalidArgument),
        (Error::LimitExceeded("x".into()), Code::ResourceExhausted),
        (Error::TooManySamples("x".into()), Code::ResourceExhausted),
        (Error::Timeout("x".into()), Code::DeadlineExceeded),
        (Error::Canceled("x".into()), Code::Cancelled),
        (Error::Internal("x".into()), Code::Internal),
    ];
    for (e, code) in cases {
        assert_eq!(status_of(&e).code(), code, "{e:?}");
    }
}

/// A Series call whose client goes away before or during the answer is counted as `Cancelled`
/// (also while the answer is still produced in the response's own task); a finished one as `OK`.
#[tokio::test]
async fn a_dropped_series_call_counts_as_cancelled() {
    let mut registry = Registry::default();
    let metrics = StoreApiMetrics::register(&mut registry);
    let opts = StoreApiOptions { component_type: "store".into(), ..Default::default() };
    let api = StoreApi::new(fleet(), opts, Arc::new(AtomicBool::new(true)), metrics);
    // One series per frame: the answer does not fit the first poll.
    let one_per_frame =
        SeriesRequest { response_batch_size: 1, ..req(vec![m(PbType::Re, "__name__", ".+")], i64::MIN, i64::MAX) };
    // Gone before the answer was produced (never polled), and after its first frame.
    drop(Store::series(&api, Request::new(one_per_frame.clone())).await.unwrap());
    let mut stream = Store::series(&api, Request::new(one_per_frame.clone())).await.unwrap().into_inner();
    assert!(stream.next().await.unwrap().is_ok());
    drop(stream);
    assert_eq!(series(&api, one_per_frame).await.len(), 10);
    let mut text = String::new();
    prometheus_client::encoding::text::encode(&mut text, &registry).unwrap();
    let count = |code: &str| {
        let key = format!(
            r#"grpc_server_handled_total{{grpc_service="thanos.Store",grpc_method="Series",grpc_code="{code}"}} "#
        );
        text.lines().find_map(|l| l.strip_prefix(key.as_str())).map(|v| v.trim().to_string())
    };
    assert_eq!(count("Cancelled").as_deref(), Some("2"), "{text}");
    assert_eq!(count("OK").as_deref(), Some("1"), "{text}");
}
