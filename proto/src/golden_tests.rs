//! Golden bytes of the Thanos StoreAPI, Info, WriteableStore and hints messages, written by hand
//! from the field numbers and wire types of `shared/spec/storeapi.md` (tag byte = field << 3 | wire
//! type; 0 = varint, 2 = length-delimited). Each test encodes a message with prost, compares the
//! bytes with the hand-made ones and decodes them back.
#![allow(clippy::unwrap_used)]

use prost::Message;

use crate::hintspb;
use crate::prometheus::{Label, LabelMatcher, Sample, TimeSeries, label_matcher};
use crate::thanos::info::{
    ExemplarsInfo, InfoRequest, InfoResponse, MetricMetadataInfo, QueryApiInfo, RulesInfo, StatusInfo, StoreInfo,
    TargetsInfo, TsdbInfo,
};
use crate::thanos::*;

/// A length-delimited field: `tag`, one length byte, `body`.
fn ld(tag: u8, body: &[u8]) -> Vec<u8> {
    assert!(body.len() < 128, "one-byte lengths only");
    let mut v = vec![tag, body.len() as u8];
    v.extend_from_slice(body);
    v
}

fn cat(parts: &[&[u8]]) -> Vec<u8> {
    parts.concat()
}

/// Encodes `m`, compares with `want`, and decodes `want` back into `m`.
fn golden<M: Message + Default + PartialEq + std::fmt::Debug>(m: &M, want: &[u8]) {
    assert_eq!(m.encode_to_vec(), want, "encoding of {m:?}");
    assert_eq!(&M::decode(want).unwrap(), m);
}

fn label(n: &str, v: &str) -> Label {
    Label { name: n.into(), value: v.into() }
}

/// `Label{name: "a", value: "b"}`: name = 1, value = 2.
const LABEL_AB: [u8; 6] = [0x0a, 0x01, b'a', 0x12, 0x01, b'b'];
/// int64 -1 as a varint (ten bytes: int64 fields are not zig-zag encoded).
const MINUS_ONE: [u8; 10] = [0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0x01];
/// i64::MAX as a varint.
const I64_MAX: [u8; 9] = [0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0x7f];

#[test]
fn chunk_encodings_are_the_storeapi_enum_not_remote_read() {
    // spec §1 Enums: XOR=0, HISTOGRAM=1, FLOAT_HISTOGRAM=2 (remote read's XOR is 1).
    assert_eq!(chunk::Encoding::Xor as i32, 0);
    assert_eq!(chunk::Encoding::Histogram as i32, 1);
    assert_eq!(chunk::Encoding::FloatHistogram as i32, 2);
    assert_eq!(crate::prometheus::chunk::Encoding::Xor as i32, 1);
    let aggrs = [Aggr::Raw, Aggr::Count, Aggr::Sum, Aggr::Min, Aggr::Max, Aggr::Counter];
    assert_eq!(aggrs.map(|a| a as i32), [0, 1, 2, 3, 4, 5]);
    assert_eq!([PartialResponseStrategy::Warn as i32, PartialResponseStrategy::Abort as i32], [0, 1]);
}

#[test]
fn series_with_every_aggr_chunk_field() {
    let s = Series {
        labels: vec![label("a", "b")],
        chunks: vec![AggrChunk {
            min_time: -1,
            max_time: 2,
            // XOR = 0 is proto3's default: the type field is left out.
            raw: Some(Chunk { r#type: chunk::Encoding::Xor as i32, data: vec![0x00, 0x01], hash: u64::MAX }),
            count: Some(Chunk { r#type: chunk::Encoding::Histogram as i32, data: vec![0x09], hash: 0 }),
            sum: Some(Chunk { r#type: chunk::Encoding::FloatHistogram as i32, ..Default::default() }),
            min: Some(Chunk::default()),
            max: Some(Chunk::default()),
            counter: Some(Chunk::default()),
        }],
    };
    // Chunk: type = 1 (varint), data = 2 (bytes), hash = 3 (uint64 varint).
    let raw = cat(&[&[0x12, 0x02, 0x00, 0x01], &[0x18], &MINUS_ONE]);
    let count = [0x08, 0x01, 0x12, 0x01, 0x09];
    let sum = [0x08, 0x02];
    // AggrChunk: min_time = 1, max_time = 2, raw = 3, count = 4, sum = 5, min = 6, max = 7, counter = 8.
    let aggr = cat(&[
        &[0x08],
        &MINUS_ONE,
        &[0x10, 0x02],
        &ld(0x1a, &raw),
        &ld(0x22, &count),
        &ld(0x2a, &sum),
        &[0x32, 0x00, 0x3a, 0x00, 0x42, 0x00],
    ]);
    // Series: labels = 1, chunks = 2.
    golden(&s, &cat(&[&ld(0x0a, &LABEL_AB), &ld(0x12, &aggr)]));
}

fn series_request_hints() -> (hintspb::SeriesRequestHints, Vec<u8>) {
    let h = hintspb::SeriesRequestHints {
        block_matchers: vec![LabelMatcher {
            r#type: label_matcher::Type::Re as i32,
            name: "b".into(),
            value: "x".into(),
        }],
        enable_query_stats: true,
    };
    // LabelMatcher: type = 1, name = 2, value = 3; hints: block_matchers = 1, enable_query_stats = 2.
    let m = [0x08, 0x02, 0x12, 0x01, b'b', 0x1a, 0x01, b'x'];
    (h, cat(&[&ld(0x0a, &m), &[0x10, 0x01]]))
}

/// `google.protobuf.Any`: type_url = 1, value = 2.
fn any_bytes(type_url: &str, value: &[u8]) -> Vec<u8> {
    cat(&[&ld(0x0a, type_url.as_bytes()), &ld(0x12, value)])
}

#[test]
fn series_request_every_field() {
    let (hints, hints_bytes) = series_request_hints();
    let req = SeriesRequest {
        min_time: 1,
        max_time: 2,
        matchers: vec![LabelMatcher { r#type: label_matcher::Type::Neq as i32, name: "n".into(), value: "v".into() }],
        max_resolution_window: 3,
        aggregates: vec![Aggr::Count as i32, Aggr::Sum as i32],
        partial_response_disabled: true,
        partial_response_strategy: PartialResponseStrategy::Abort as i32,
        skip_chunks: true,
        hints: Some(prost_types::Any::from_msg(&hints).unwrap()),
        step: 4,
        range: 5,
        query_hints: Some(QueryHints {
            step_millis: 6,
            func: Some(Func { name: "rate".into() }),
            grouping: Some(Grouping { by: true, labels: vec!["job".into()] }),
            range: Some(Range { millis: 7 }),
            projection_labels: vec!["p".into()],
            projection_include: true,
            series_hash_label_name: "h".into(),
        }),
        shard_info: Some(ShardInfo { shard_index: 1, total_shards: 3, by: true, labels: vec!["a".into()] }),
        without_replica_labels: vec!["replica".into()],
        limit: 8,
        response_batch_size: 9,
    };
    let matcher = [0x08, 0x01, 0x12, 0x01, b'n', 0x1a, 0x01, b'v'];
    let any = any_bytes("type.googleapis.com/hintspb.SeriesRequestHints", &hints_bytes);
    // QueryHints: step_millis = 1, func = 2 (Func.name = 1), grouping = 4 (by = 1, labels = 3),
    // range = 5 (millis = 1), projection_labels = 6, projection_include = 7, series_hash_label_name = 8.
    let qh = cat(&[
        &[0x08, 0x06],
        &ld(0x12, &ld(0x0a, b"rate")),
        &ld(0x22, &cat(&[&[0x08, 0x01], &ld(0x1a, b"job")])),
        &ld(0x2a, &[0x08, 0x07]),
        &ld(0x32, b"p"),
        &[0x38, 0x01],
        &ld(0x42, b"h"),
    ]);
    // ShardInfo: shard_index = 1, total_shards = 2, by = 3, labels = 4.
    let shard = cat(&[&[0x08, 0x01, 0x10, 0x03, 0x18, 0x01], &ld(0x22, b"a")]);
    let want = cat(&[
        &[0x08, 0x01, 0x10, 0x02], // min_time = 1, max_time = 2
        &ld(0x1a, &matcher),       // matchers = 3
        &[0x20, 0x03],             // max_resolution_window = 4
        &ld(0x2a, &[0x01, 0x02]),  // aggregates = 5, packed
        &[0x30, 0x01, 0x38, 0x01], // partial_response_disabled = 6, strategy = 7
        &[0x40, 0x01],             // skip_chunks = 8
        &ld(0x4a, &any),           // hints = 9
        &[0x50, 0x04, 0x58, 0x05], // step = 10, range = 11
        &ld(0x62, &qh),            // query_hints = 12
        &ld(0x6a, &shard),         // shard_info = 13
        &ld(0x72, b"replica"),     // without_replica_labels = 14
        &[0x78, 0x08],             // limit = 15
        &[0x80, 0x01, 0x09],       // response_batch_size = 16: the tag needs two bytes
    ]);
    golden(&req, &want);
    let back = SeriesRequest::decode(want.as_slice()).unwrap();
    assert_eq!(back.hints.unwrap().to_msg::<hintspb::SeriesRequestHints>().unwrap(), hints);
}

#[test]
fn series_response_oneof_arms() {
    let s = Series { labels: vec![label("a", "b")], chunks: vec![] };
    let series_bytes = ld(0x0a, &LABEL_AB);
    // series = 1
    golden(&SeriesResponse { result: Some(series_response::Result::Series(s.clone())) }, &ld(0x0a, &series_bytes));
    // warning = 2
    golden(&SeriesResponse { result: Some(series_response::Result::Warning("w".into())) }, &ld(0x12, b"w"));
    // hints = 3: SeriesResponseHints{queried_blocks = 1 (Block.id = 1), query_stats = 2}
    let hints = hintspb::SeriesResponseHints {
        queried_blocks: vec![hintspb::Block { id: "X".into() }],
        query_stats: Some(hintspb::QueryStats {
            blocks_queried: 1,
            data_downloaded_size_sum: 20,
            get_all_duration: Some(prost_types::Duration { seconds: 1, nanos: 2 }),
            merge_duration: Some(prost_types::Duration { seconds: 0, nanos: 3 }),
            ..Default::default()
        }),
    };
    // QueryStats: blocks_queried = 1, data_downloaded_size_sum = 20 (tag 0xa0 0x01),
    // get_all_duration = 21 (tag 0xaa 0x01), merge_duration = 22 (tag 0xb2 0x01);
    // Duration: seconds = 1, nanos = 2.
    let stats = cat(&[
        &[0x08, 0x01, 0xa0, 0x01, 0x14],
        &[0xaa, 0x01, 0x04, 0x08, 0x01, 0x10, 0x02],
        &[0xb2, 0x01, 0x02, 0x10, 0x03],
    ]);
    let hints_bytes = cat(&[&ld(0x0a, &ld(0x0a, b"X")), &ld(0x12, &stats)]);
    let any = prost_types::Any::from_msg(&hints).unwrap();
    golden(
        &SeriesResponse { result: Some(series_response::Result::Hints(any)) },
        &ld(0x1a, &any_bytes("type.googleapis.com/hintspb.SeriesResponseHints", &hints_bytes)),
    );
    // batch = 4: SeriesBatch{series = 1}
    golden(
        &SeriesResponse { result: Some(series_response::Result::Batch(SeriesBatch { series: vec![s.clone(), s] })) },
        &ld(0x22, &cat(&[&ld(0x0a, &series_bytes), &ld(0x0a, &series_bytes)])),
    );
}

#[test]
fn label_names_and_values_messages() {
    let eq = LabelMatcher { r#type: label_matcher::Type::Eq as i32, name: "a".into(), value: "b".into() };
    // EQ = 0 is left out of the matcher.
    let eq_bytes = [0x12, 0x01, b'a', 0x1a, 0x01, b'b'];
    let names_hints = hintspb::LabelNamesRequestHints { block_matchers: vec![eq.clone()] };
    let names_any = any_bytes("type.googleapis.com/hintspb.LabelNamesRequestHints", &ld(0x0a, &eq_bytes));
    let req = LabelNamesRequest {
        partial_response_disabled: true,
        partial_response_strategy: PartialResponseStrategy::Abort as i32,
        start: 1,
        end: 2,
        hints: Some(prost_types::Any::from_msg(&names_hints).unwrap()),
        matchers: vec![eq.clone()],
        without_replica_labels: vec!["r".into()],
        limit: 3,
    };
    golden(
        &req,
        &cat(&[
            &[0x08, 0x01, 0x10, 0x01, 0x18, 0x01, 0x20, 0x02],
            &ld(0x2a, &names_any),
            &ld(0x32, &eq_bytes),
            &ld(0x3a, b"r"),
            &[0x40, 0x03],
        ]),
    );
    let blocks = ld(0x0a, &ld(0x0a, b"X"));
    let resp = LabelNamesResponse {
        names: vec!["a".into(), "b".into()],
        warnings: vec!["w".into()],
        hints: Some(
            prost_types::Any::from_msg(&hintspb::LabelNamesResponseHints {
                queried_blocks: vec![hintspb::Block { id: "X".into() }],
            })
            .unwrap(),
        ),
    };
    golden(
        &resp,
        &cat(&[
            &ld(0x0a, b"a"),
            &ld(0x0a, b"b"),
            &ld(0x12, b"w"),
            &ld(0x1a, &any_bytes("type.googleapis.com/hintspb.LabelNamesResponseHints", &blocks)),
        ]),
    );

    let values_hints = hintspb::LabelValuesRequestHints { block_matchers: vec![eq.clone()] };
    let req = LabelValuesRequest {
        label: "l".into(),
        partial_response_disabled: true,
        partial_response_strategy: PartialResponseStrategy::Abort as i32,
        start: 1,
        end: 2,
        hints: Some(prost_types::Any::from_msg(&values_hints).unwrap()),
        matchers: vec![eq],
        without_replica_labels: vec!["r".into()],
        limit: 3,
    };
    golden(
        &req,
        &cat(&[
            &ld(0x0a, b"l"),
            &[0x10, 0x01, 0x18, 0x01, 0x20, 0x01, 0x28, 0x02],
            &ld(0x32, &any_bytes("type.googleapis.com/hintspb.LabelValuesRequestHints", &ld(0x0a, &eq_bytes))),
            &ld(0x3a, &eq_bytes),
            &ld(0x42, b"r"),
            &[0x48, 0x03],
        ]),
    );
    let resp = LabelValuesResponse {
        values: vec!["x".into()],
        warnings: vec!["w".into()],
        hints: Some(
            prost_types::Any::from_msg(&hintspb::LabelValuesResponseHints {
                queried_blocks: vec![hintspb::Block { id: "X".into() }],
            })
            .unwrap(),
        ),
    };
    golden(
        &resp,
        &cat(&[
            &ld(0x0a, b"x"),
            &ld(0x12, b"w"),
            &ld(0x1a, &any_bytes("type.googleapis.com/hintspb.LabelValuesResponseHints", &blocks)),
        ]),
    );
}

#[test]
fn info_response_with_store_and_tsdb_infos() {
    assert!(InfoRequest {}.encode_to_vec().is_empty());
    let set = ZLabelSet { labels: vec![label("a", "b")] };
    let resp = InfoResponse {
        label_sets: vec![set.clone()],
        component_type: "store".into(),
        store: Some(StoreInfo {
            min_time: -1,
            max_time: i64::MAX,
            supports_sharding: true,
            supports_without_replica_labels: true,
            tsdb_infos: vec![TsdbInfo { labels: Some(set), min_time: 1, max_time: 2 }],
            supports_projections: true,
        }),
        rules: Some(RulesInfo {}),
        metric_metadata: Some(MetricMetadataInfo {}),
        targets: Some(TargetsInfo {}),
        exemplars: Some(ExemplarsInfo { min_time: 1, max_time: 2 }),
        query: Some(QueryApiInfo {}),
        status: Some(StatusInfo {}),
    };
    let zset = ld(0x0a, &LABEL_AB); // ZLabelSet.labels = 1
    // TSDBInfo: labels = 1, min_time = 2, max_time = 3.
    let tsdb = cat(&[&ld(0x0a, &zset), &[0x10, 0x01, 0x18, 0x02]]);
    // StoreInfo: min_time = 1, max_time = 2, supports_sharding = 3, (4 reserved),
    // supports_without_replica_labels = 5, tsdb_infos = 6, supports_projections = 7.
    let store =
        cat(&[&[0x08], &MINUS_ONE, &[0x10], &I64_MAX, &[0x18, 0x01, 0x28, 0x01], &ld(0x32, &tsdb), &[0x38, 0x01]]);
    // InfoResponse: label_sets = 1, ComponentType = 2, store = 3, rules = 4, metric_metadata = 5,
    // targets = 6, exemplars = 7, query = 8, status = 9.
    let want = cat(&[
        &ld(0x0a, &zset),
        &ld(0x12, b"store"),
        &ld(0x1a, &store),
        &[0x22, 0x00, 0x2a, 0x00, 0x32, 0x00],
        &ld(0x3a, &[0x08, 0x01, 0x10, 0x02]),
        &[0x42, 0x00, 0x4a, 0x00],
    ]);
    golden(&resp, &want);
    // LabelSet (legacy) has ZLabelSet's wire.
    assert_eq!(LabelSet { labels: vec![label("a", "b")] }.encode_to_vec(), zset);
}

#[test]
fn writeable_store_request_with_tenant_and_replica() {
    let ts = TimeSeries {
        labels: vec![label("a", "b")],
        samples: vec![Sample { value: 1.0, timestamp: 5 }],
        ..Default::default()
    };
    let req = WriteRequest {
        timeseries: vec![ts.clone()],
        tenant: "t".into(),
        replica: 2,
        timeseries_tenant_data: vec![TimeSeriesTenantTuple { timeseries: vec![ts], tenant: "u".into() }],
    };
    // Sample: value = 1 (fixed64), timestamp = 2; TimeSeries: labels = 1, samples = 2.
    let sample = cat(&[&[0x09], &1.0f64.to_le_bytes(), &[0x10, 0x05]]);
    let ts_bytes = cat(&[&ld(0x0a, &LABEL_AB), &ld(0x12, &sample)]);
    // WriteRequest: timeseries = 1, tenant = 2, replica = 3, timeseriesTenantData = 4
    // (TimeSeriesTenantTuple: timeseries = 1, tenant = 2).
    let want = cat(&[
        &ld(0x0a, &ts_bytes),
        &ld(0x12, b"t"),
        &[0x18, 0x02],
        &ld(0x22, &cat(&[&ld(0x0a, &ts_bytes), &ld(0x12, b"u")])),
    ]);
    golden(&req, &want);
    assert!(WriteResponse {}.encode_to_vec().is_empty());
}

#[test]
fn hints_any_type_urls() {
    let (h, bytes) = series_request_hints();
    let any = prost_types::Any::from_msg(&h).unwrap();
    assert_eq!(any.type_url, "type.googleapis.com/hintspb.SeriesRequestHints");
    assert_eq!(any.value, bytes);
    golden(&h, &bytes);
    // Unpacking checks the type named in the URL.
    assert!(any.to_msg::<hintspb::LabelValuesRequestHints>().is_err());
    let urls = [
        prost_types::Any::from_msg(&hintspb::SeriesResponseHints::default()).unwrap().type_url,
        prost_types::Any::from_msg(&hintspb::LabelNamesRequestHints::default()).unwrap().type_url,
        prost_types::Any::from_msg(&hintspb::LabelNamesResponseHints::default()).unwrap().type_url,
        prost_types::Any::from_msg(&hintspb::LabelValuesRequestHints::default()).unwrap().type_url,
        prost_types::Any::from_msg(&hintspb::LabelValuesResponseHints::default()).unwrap().type_url,
    ];
    assert_eq!(
        urls,
        [
            "type.googleapis.com/hintspb.SeriesResponseHints",
            "type.googleapis.com/hintspb.LabelNamesRequestHints",
            "type.googleapis.com/hintspb.LabelNamesResponseHints",
            "type.googleapis.com/hintspb.LabelValuesRequestHints",
            "type.googleapis.com/hintspb.LabelValuesResponseHints",
        ]
    );
}
