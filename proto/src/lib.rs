//! Strata's wire types, generated at build time from the crate's own `.proto` files (written from
//! `shared/spec/storeapi.md`, field numbers exactly as Prometheus and Thanos use them).
//!
//! ```text
//!   proto/prometheus/types.proto   Label, Sample, Exemplar, Histogram, TimeSeries, MetricMetadata,
//!                                  LabelMatcher, ReadHints, Chunk, ChunkedSeries
//!   proto/prometheus/remote.proto  WriteRequest (remote write 1.0), ReadRequest, ReadResponse, Query,
//!                                  QueryResult, ChunkedReadResponse (remote read)
//!   proto/thanos/types.proto       LabelSet, ZLabelSet, Chunk, AggrChunk, Series, SeriesBatch, Aggr,
//!                                  PartialResponseStrategy                         (package thanos)
//!   proto/thanos/store.proto       service Store (Series, LabelNames, LabelValues), service
//!                                  WriteableStore (RemoteWrite), their messages    (package thanos)
//!   proto/thanos/info.proto        service Info, InfoResponse, StoreInfo, TSDBInfo (package thanos.info)
//!   proto/hintspb/hints.proto      Series/LabelNames/LabelValues hints, QueryStats (package hintspb)
//! ```
//!
//! Thanos's `thanos.Label` and `thanos.LabelMatcher` are wire-identical to Prometheus's `Label` and
//! `LabelMatcher` (same fields, numbers, enum values), so the Thanos messages use the latter.
//!
//! gRPC services come as tonic clients (`thanos::store_client::StoreClient`, ...) and servers
//! (`thanos::store_server::{Store, StoreServer}`, ...); this crate holds no transport, callers bring
//! a tonic `Channel` or server.
//!
//! Each protobuf package is one Rust module; messages are plain prost structs:
//!
//! ```
//! use prost::Message;
//! use proto::prometheus::{Label, Sample, TimeSeries, WriteRequest};
//!
//! let req = WriteRequest {
//!     timeseries: vec![TimeSeries {
//!         labels: vec![Label { name: "__name__".into(), value: "up".into() }],
//!         samples: vec![Sample { value: 1.0, timestamp: 1_700_000_000_000 }],
//!         ..Default::default()
//!     }],
//!     metadata: vec![],
//! };
//! let bytes = req.encode_to_vec();
//! assert_eq!(WriteRequest::decode(bytes.as_slice()).unwrap(), req);
//! ```

pub use prost;

/// Package `prometheus`: remote write 1.0 and remote read messages.
#[allow(clippy::all, clippy::pedantic, missing_docs, unreachable_pub)]
pub mod prometheus {
    include!(concat!(env!("OUT_DIR"), "/prometheus.rs"));
}

/// Package `thanos`: the StoreAPI (`thanos.Store`), receive replication (`thanos.WriteableStore`)
/// and their messages.
#[allow(clippy::all, clippy::pedantic, missing_docs, unreachable_pub, missing_debug_implementations)]
pub mod thanos {
    include!(concat!(env!("OUT_DIR"), "/thanos.rs"));

    /// Package `thanos.info`: the Info service a querier uses for discovery.
    #[allow(clippy::all, clippy::pedantic, missing_docs, unreachable_pub, missing_debug_implementations)]
    pub mod info {
        include!(concat!(env!("OUT_DIR"), "/thanos.info.rs"));
    }
}

/// Package `hintspb`: store gateway hints, carried in `google.protobuf.Any`.
///
/// Each hints message knows its `Any` type URL (`type.googleapis.com/hintspb.<Message>`, as Go's
/// `types.MarshalAny` writes it), so [`prost_types::Any::from_msg`] packs it and
/// [`prost_types::Any::to_msg`] unpacks it after checking the type:
///
/// ```
/// use proto::hintspb::SeriesRequestHints;
/// let any = prost_types::Any::from_msg(&SeriesRequestHints { enable_query_stats: true, ..Default::default() }).unwrap();
/// assert_eq!(any.type_url, "type.googleapis.com/hintspb.SeriesRequestHints");
/// assert!(any.to_msg::<SeriesRequestHints>().unwrap().enable_query_stats);
/// assert!(any.to_msg::<proto::hintspb::LabelNamesRequestHints>().is_err());
/// ```
#[allow(clippy::all, clippy::pedantic, missing_docs, unreachable_pub)]
pub mod hintspb {
    include!(concat!(env!("OUT_DIR"), "/hintspb.rs"));

    /// Prefix of the `Any` type URLs of the hints (Go's `types.MarshalAny` writes it).
    pub const TYPE_URL_PREFIX: &str = "type.googleapis.com/";

    macro_rules! any_name {
        ($($t:ident),*) => {$(
            impl prost::Name for $t {
                const NAME: &'static str = stringify!($t);
                const PACKAGE: &'static str = "hintspb";
                fn type_url() -> String {
                    format!("{TYPE_URL_PREFIX}hintspb.{}", stringify!($t))
                }
            }
        )*};
    }
    any_name!(
        SeriesRequestHints,
        SeriesResponseHints,
        LabelNamesRequestHints,
        LabelNamesResponseHints,
        LabelValuesRequestHints,
        LabelValuesResponseHints
    );
}

#[cfg(test)]
mod golden_tests;

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]
    use prost::Message;

    use super::prometheus::*;

    /// Hand-encoded bytes pin the field numbers and wire types of the spec.
    #[test]
    fn write_request_field_numbers() {
        let req = WriteRequest {
            timeseries: vec![TimeSeries {
                labels: vec![Label { name: "a".into(), value: "b".into() }],
                samples: vec![Sample { value: 1.0, timestamp: 5 }],
                ..Default::default()
            }],
            metadata: vec![MetricMetadata {
                r#type: metric_metadata::MetricType::Counter as i32,
                metric_family_name: "m".into(),
                help: "h".into(),
                unit: "u".into(),
            }],
        };
        let label = [0x0a, 0x01, b'a', 0x12, 0x01, b'b']; // name=1, value=2
        let mut sample = vec![0x09]; // value=1 (fixed64)
        sample.extend_from_slice(&1.0f64.to_le_bytes());
        sample.extend_from_slice(&[0x10, 0x05]); // timestamp=2 (varint)
        let mut ts = vec![0x0a, label.len() as u8];
        ts.extend_from_slice(&label);
        ts.push(0x12);
        ts.push(sample.len() as u8);
        ts.extend_from_slice(&sample);
        // type=1, metric_family_name=2, help=4, unit=5
        let md = [0x08, 0x01, 0x12, 0x01, b'm', 0x22, 0x01, b'h', 0x2a, 0x01, b'u'];
        let mut want = vec![0x0a, ts.len() as u8];
        want.extend_from_slice(&ts);
        want.push(0x1a);
        want.push(md.len() as u8);
        want.extend_from_slice(&md);
        assert_eq!(req.encode_to_vec(), want);
        assert_eq!(WriteRequest::decode(want.as_slice()).unwrap(), req);
    }

    #[test]
    fn read_messages_field_numbers() {
        let q = Query {
            start_timestamp_ms: 1,
            end_timestamp_ms: 2,
            matchers: vec![LabelMatcher {
                r#type: label_matcher::Type::Re as i32,
                name: "n".into(),
                value: "v".into(),
            }],
            hints: Some(ReadHints { step_ms: 3, range_ms: 7, by: true, ..Default::default() }),
        };
        let bytes = q.encode_to_vec();
        let m = [0x08, 0x02, 0x12, 0x01, b'n', 0x1a, 0x01, b'v'];
        let h = [0x08, 0x03, 0x30, 0x01, 0x38, 0x07];
        let mut want = vec![0x08, 0x01, 0x10, 0x02, 0x1a, m.len() as u8];
        want.extend_from_slice(&m);
        want.push(0x22);
        want.push(h.len() as u8);
        want.extend_from_slice(&h);
        assert_eq!(bytes, want);

        let r = ChunkedReadResponse {
            chunked_series: vec![ChunkedSeries {
                labels: vec![],
                chunks: vec![Chunk {
                    min_time_ms: 1,
                    max_time_ms: 2,
                    r#type: chunk::Encoding::Xor as i32,
                    data: vec![9],
                }],
            }],
            query_index: 4,
        };
        let c = [0x08, 0x01, 0x10, 0x02, 0x18, 0x01, 0x22, 0x01, 0x09];
        let mut s = vec![0x12, c.len() as u8];
        s.extend_from_slice(&c);
        let mut want = vec![0x0a, s.len() as u8];
        want.extend_from_slice(&s);
        want.extend_from_slice(&[0x10, 0x04]);
        assert_eq!(r.encode_to_vec(), want);
        let rr = ReadRequest {
            queries: vec![],
            accepted_response_types: vec![read_request::ResponseType::StreamedXorChunks as i32],
        };
        assert_eq!(rr.encode_to_vec(), vec![0x12, 0x01, 0x01]); // packed enum, field 2
    }

    #[test]
    fn histogram_oneofs_and_sint() {
        let h = Histogram {
            count: Some(histogram::Count::CountInt(3)),
            schema: -1,
            positive_deltas: vec![-1],
            ..Default::default()
        };
        // count_int=1 varint 3; schema=4 sint32 zigzag(-1)=1; positive_deltas=12 packed sint64 zigzag(-1)=1
        assert_eq!(h.encode_to_vec(), vec![0x08, 0x03, 0x20, 0x01, 0x62, 0x01, 0x01]);
    }
}
