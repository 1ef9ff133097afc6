//! Receive over gRPC, as Thanos receivers talk to each other: the `thanos.WriteableStore/RemoteWrite`
//! server, the client pool that forwards and replicates to hashring peers, and a decoder of
//! Thanos's `snappy` gRPC compression.
//!
//! ```text
//!   peer ──RemoteWrite(WriteRequest{timeseries, tenant, replica})──► [SnappyDecode] ─► WriteService
//!        (grpc-encoding: snappy → frames decoded here; none → as is)        │
//!                                                                           ▼
//!        replica > 0: already forwarded → written locally only;  replica = 0: placed on the hashring
//!        answer: OK │ AlreadyExists (conflict, too old, invalid series) │ InvalidArgument (bad
//!                message, tenant, replica) │ Unavailable (quorum) │ Internal (WAL or disk)
//!
//!   ReceiveState::write ──group by (endpoint, replica n)──► Peers::forward ──RemoteWrite(replica n+1)──► peer
//! ```
//!
//! **Error codes** are Thanos's (`pkg/receive/handler.go`): conflicts → `AlreadyExists`, a bad
//! replica → `InvalidArgument`, a quorum or readiness failure → `Unavailable`, anything else →
//! `Internal`. Thanos counts invalid labels and too-old samples as conflicts too, so they answer
//! `AlreadyExists` (a Thanos router then answers 409 and Prometheus does not retry).
//!
//! **Compression.** Thanos receivers forward with `--receive.grpc-compression=snappy` by default:
//! grpc-go's compressor registered as `snappy` writes the snappy *framing* format (stream identifier,
//! then compressed or uncompressed chunks with masked CRC-32C). tonic decodes only gzip, deflate and
//! zstd, so [`SnappyDecode`] sits in front of the service: a request with `grpc-encoding: snappy`
//! has each compressed gRPC message decoded (frame checksums verified) and is handed on
//! uncompressed. Answers go out uncompressed (allowed whatever the client accepts). Strata's own
//! forwards are uncompressed: on loopback and LANs the write path is bound by the WAL, not the
//! network, and snappy would save little on already small replication batches.

use std::collections::HashMap;
use std::fmt;
use std::sync::Mutex;
use std::task::{Context, Poll};
use std::time::Duration;

use axum::http::StatusCode;
use bytes::{Buf, BufMut, Bytes, BytesMut};
use engine::head::AppendSeries;
use http_body_util::BodyExt;
use prost::Message;
use proto::thanos::writeable_store_client::WriteableStoreClient;
use proto::thanos::writeable_store_server::{WriteableStore, WriteableStoreServer};
use proto::thanos::{WriteRequest, WriteResponse};
use tonic::server::NamedService;
use tonic::transport::Channel;
use tonic::{Code, Request, Response, Status};

use crate::receive::{ReceiveState, validate_tenant};
use crate::remote_write;

/// Largest gRPC message sent or accepted: 2^31 - 1 bytes, as Thanos.
pub const MAX_MESSAGE_BYTES: usize = i32::MAX as usize;

/// The `thanos.WriteableStore` service of a receiver (see the module docs).
#[derive(Debug, Clone)]
pub struct WriteService {
    state: ReceiveState,
}

/// `thanos.WriteableStore` over `state`, message limits at [`MAX_MESSAGE_BYTES`], accepting
/// snappy-compressed requests; add it to the gRPC server beside the StoreAPI.
pub fn writeable_store(state: ReceiveState) -> SnappyDecode<WriteableStoreServer<WriteService>> {
    SnappyDecode::new(
        WriteableStoreServer::new(WriteService { state })
            .max_decoding_message_size(MAX_MESSAGE_BYTES)
            .max_encoding_message_size(MAX_MESSAGE_BYTES),
    )
}

/// The gRPC status of a write answered with HTTP `status` (the one place mapping them).
fn grpc_status(status: StatusCode, msg: String) -> Result<(), Status> {
    let code = match status.as_u16() {
        200..=299 => return Ok(()),
        400 | 409 => Code::AlreadyExists,
        413 => Code::ResourceExhausted,
        503 => Code::Unavailable,
        _ => Code::Internal,
    };
    Err(Status::new(code, msg))
}

#[tonic::async_trait]
impl WriteableStore for WriteService {
    async fn remote_write(&self, request: Request<WriteRequest>) -> Result<Response<WriteResponse>, Status> {
        let r = request.into_inner();
        // as Thanos (errBadReplica): a replica number beyond the replication factor is a misconfigured ring
        let rf = self.state.options().replication_factor;
        if r.replica < 0 || r.replica as u64 > rf {
            return Err(Status::invalid_argument(format!(
                "replica {}: must be 0 (not yet replicated) or a replica number from 1 to the replication factor {rf}",
                r.replica
            )));
        }
        let forwarded = r.replica > 0;
        let mut parts = vec![(r.tenant, r.timeseries)];
        parts.extend(r.timeseries_tenant_data.into_iter().map(|t| (t.tenant, t.timeseries)));
        let mut first_err = None;
        for (tenant, timeseries) in parts {
            if timeseries.is_empty() {
                continue;
            }
            let tenant = if tenant.is_empty() { self.state.options().default_tenant.clone() } else { tenant };
            validate_tenant(&tenant).map_err(|e| Status::invalid_argument(e.to_string()))?;
            let raw = proto::prometheus::WriteRequest { timeseries, metadata: vec![] }.encode_to_vec();
            let res = match self.state.write_message(&tenant, &raw, forwarded).await {
                Ok((status, msg)) => grpc_status(status, msg),
                Err(e) => Err(Status::invalid_argument(e.to_string())),
            };
            let code = res.as_ref().map_or_else(Status::code, |_| Code::Ok);
            self.state.count_grpc_write(code);
            if let Err(s) = res {
                first_err.get_or_insert(s);
            }
        }
        match first_err {
            Some(s) => Err(s),
            None => Ok(Response::new(WriteResponse {})),
        }
    }
}

/// What a forward to a peer did, as the writer counts it toward the quorum.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) enum ForwardError {
    /// Written, some samples rejected (AlreadyExists).
    Conflict(String),
    /// Not written (unreachable, Unavailable, Internal, ...).
    Failed(String),
}

/// gRPC clients of the hashring peers, one lazily connected channel per endpoint.
pub(crate) struct Peers {
    clients: Mutex<HashMap<String, WriteableStoreClient<Channel>>>,
    timeout: Duration,
}

impl fmt::Debug for Peers {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Peers").field("timeout", &self.timeout).finish()
    }
}

impl Peers {
    /// Clients that give up on a forward after `timeout` (`--receive.forward-timeout`).
    pub(crate) fn new(timeout: Duration) -> Self {
        Peers { clients: Mutex::new(HashMap::new()), timeout }
    }

    fn client(&self, endpoint: &str) -> Result<WriteableStoreClient<Channel>, String> {
        let mut clients = self.clients.lock().unwrap_or_else(|p| p.into_inner());
        if let Some(c) = clients.get(endpoint) {
            return Ok(c.clone());
        }
        let channel = tonic::transport::Endpoint::from_shared(format!("http://{endpoint}"))
            .map_err(|e| format!("invalid endpoint address: {e}"))?
            .connect_timeout(self.timeout)
            .timeout(self.timeout)
            .tcp_nodelay(true)
            .connect_lazy();
        let c = WriteableStoreClient::new(channel)
            .max_decoding_message_size(MAX_MESSAGE_BYTES)
            .max_encoding_message_size(MAX_MESSAGE_BYTES);
        clients.insert(endpoint.to_string(), c.clone());
        Ok(c)
    }

    /// Sends `series` of `tenant` to `endpoint` as replica `replica` (1-based: the peer writes them
    /// locally and never forwards them again).
    pub(crate) async fn forward(
        &self,
        endpoint: &str,
        tenant: &str,
        replica: u64,
        series: &[AppendSeries<'_>],
    ) -> Result<(), ForwardError> {
        let mut client = self.client(endpoint).map_err(ForwardError::Failed)?;
        let req = WriteRequest {
            timeseries: remote_write::to_timeseries(series),
            tenant: tenant.to_string(),
            replica: i64::try_from(replica).unwrap_or(i64::MAX),
            timeseries_tenant_data: vec![],
        };
        match client.remote_write(Request::new(req)).await {
            Ok(_) => Ok(()),
            Err(s) => {
                let msg = format!("rpc error: code = {:?} desc = {}", s.code(), s.message());
                Err(match s.code() {
                    Code::AlreadyExists => ForwardError::Conflict(msg),
                    _ => ForwardError::Failed(msg),
                })
            }
        }
    }
}

/// The gRPC encoding name of Thanos's snappy compressor.
const SNAPPY: &str = "snappy";

/// A tower service in front of a gRPC service that decodes requests compressed with Thanos's
/// `snappy` gRPC compressor (snappy framing format) and passes every other request through.
#[derive(Debug, Clone)]
pub struct SnappyDecode<S> {
    inner: S,
}

impl<S> SnappyDecode<S> {
    /// Wraps `inner`.
    pub fn new(inner: S) -> Self {
        SnappyDecode { inner }
    }
}

impl<S: NamedService> NamedService for SnappyDecode<S> {
    const NAME: &'static str = S::NAME;
}

/// Rewrites a gRPC request body: every message with the compressed flag is decoded from the snappy
/// framing format and sent on with the flag cleared.
fn decode_snappy_messages(mut body: Bytes) -> Result<Bytes, String> {
    let mut out = BytesMut::with_capacity(body.len() * 2);
    while !body.is_empty() {
        if body.len() < 5 {
            return Err(format!("truncated gRPC message header ({} bytes)", body.len()));
        }
        let flag = body.get_u8();
        let len = body.get_u32() as usize;
        if body.len() < len {
            return Err(format!("gRPC message of {len} bytes truncated at {}", body.len()));
        }
        let msg = body.split_to(len);
        let plain = match flag {
            0 => msg.to_vec(),
            1 => {
                let mut d = snap::read::FrameDecoder::new(msg.as_ref());
                let mut v = Vec::with_capacity(len * 2);
                std::io::Read::read_to_end(&mut d, &mut v).map_err(|e| format!("bad snappy-framed message: {e}"))?;
                v
            }
            f => return Err(format!("unknown gRPC message flag {f}")),
        };
        let n = u32::try_from(plain.len()).map_err(|_| "decompressed gRPC message over 4 GiB".to_string())?;
        out.put_u8(0);
        out.put_u32(n);
        out.put_slice(&plain);
    }
    Ok(out.freeze())
}

type BoxFuture<T> = std::pin::Pin<Box<dyn std::future::Future<Output = T> + Send>>;

impl<S> tower::Service<http::Request<tonic::body::Body>> for SnappyDecode<S>
where
    S: tower::Service<http::Request<tonic::body::Body>, Response = http::Response<tonic::body::Body>>
        + Clone
        + Send
        + 'static,
    S::Future: Send + 'static,
    S::Error: Send + 'static,
{
    type Response = http::Response<tonic::body::Body>;
    type Error = S::Error;
    type Future = BoxFuture<Result<Self::Response, Self::Error>>;

    fn poll_ready(&mut self, cx: &mut Context<'_>) -> Poll<Result<(), Self::Error>> {
        self.inner.poll_ready(cx)
    }

    fn call(&mut self, req: http::Request<tonic::body::Body>) -> Self::Future {
        let snappy =
            req.headers().get("grpc-encoding").is_some_and(|v| v.as_bytes().eq_ignore_ascii_case(SNAPPY.as_bytes()));
        // take the service that was polled ready, leave a clone in its place
        let clone = self.inner.clone();
        let mut inner = std::mem::replace(&mut self.inner, clone);
        if !snappy {
            return Box::pin(inner.call(req));
        }
        Box::pin(async move {
            let (mut parts, body) = req.into_parts();
            parts.headers.remove("grpc-encoding");
            let decoded = match body.collect().await {
                Ok(c) => decode_snappy_messages(c.to_bytes()),
                Err(e) => Err(format!("reading the request: {e}")),
            };
            match decoded {
                Ok(b) => {
                    let body = tonic::body::Body::new(http_body_util::Full::new(b).map_err(|e| match e {}));
                    inner.call(http::Request::from_parts(parts, body)).await
                }
                Err(msg) => Ok(Status::invalid_argument(format!("snappy gRPC compression: {msg}")).into_http()),
            }
        })
    }
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used, clippy::expect_used)]
    use std::sync::Arc;

    use super::*;

    /// Masked CRC-32C of the snappy framing format, written from the format description.
    fn masked_crc(data: &[u8]) -> u32 {
        let c = crc32c::crc32c(data);
        c.rotate_right(15).wrapping_add(0xa282_ead8)
    }

    /// A snappy-framed stream built by hand: the stream identifier, then one *uncompressed* chunk
    /// (type 0x01) and one *compressed* chunk (type 0x00, snappy block of all-literal form).
    fn framed(a: &[u8], b: &[u8]) -> Vec<u8> {
        let mut v = vec![0xff, 0x06, 0x00, 0x00, b's', b'N', b'a', b'P', b'p', b'Y'];
        let chunk = |v: &mut Vec<u8>, kind: u8, crc_of: &[u8], payload: &[u8]| {
            let len = 4 + payload.len();
            v.extend_from_slice(&[kind, len as u8, (len >> 8) as u8, (len >> 16) as u8]);
            v.extend_from_slice(&masked_crc(crc_of).to_le_bytes());
            v.extend_from_slice(payload);
        };
        chunk(&mut v, 0x01, a, a);
        // snappy block: varint length, then one literal tag (len-1)<<2 (len <= 60)
        assert!(!b.is_empty() && b.len() <= 60);
        let mut block = vec![b.len() as u8, ((b.len() - 1) as u8) << 2];
        block.extend_from_slice(b);
        chunk(&mut v, 0x00, b, &block);
        v
    }

    fn grpc_frame(flag: u8, msg: &[u8]) -> Vec<u8> {
        let mut v = vec![flag];
        v.extend_from_slice(&(msg.len() as u32).to_be_bytes());
        v.extend_from_slice(msg);
        v
    }

    #[test]
    fn decodes_framed_snappy_messages() {
        let mut body = grpc_frame(1, &framed(b"hello ", b"thanos receive"));
        body.extend(grpc_frame(0, b"plain"));
        let out = decode_snappy_messages(Bytes::from(body)).unwrap();
        let mut want = grpc_frame(0, b"hello thanos receive");
        want.extend(grpc_frame(0, b"plain"));
        assert_eq!(out.as_ref(), want.as_slice());

        // a wrong checksum, a truncated header or message, a bad flag: errors naming the problem
        let mut bad = framed(b"x", b"y");
        bad[14] ^= 1;
        assert!(decode_snappy_messages(Bytes::from(grpc_frame(1, &bad))).unwrap_err().contains("snappy"));
        assert!(decode_snappy_messages(Bytes::from_static(&[0, 0, 0])).unwrap_err().contains("header"));
        assert!(decode_snappy_messages(Bytes::from_static(&[0, 0, 0, 0, 9, 1])).unwrap_err().contains("truncated"));
        assert!(decode_snappy_messages(Bytes::from(grpc_frame(7, b""))).unwrap_err().contains("flag 7"));
    }

    fn ts(name: &str, samples: &[(i64, f64)]) -> proto::prometheus::TimeSeries {
        proto::prometheus::TimeSeries {
            labels: vec![proto::prometheus::Label { name: "__name__".into(), value: name.into() }],
            samples: samples.iter().map(|&(timestamp, value)| proto::prometheus::Sample { value, timestamp }).collect(),
            ..Default::default()
        }
    }

    /// A receiver (no hashring, replication factor 1) with its heads and bucket under `dir`.
    fn receiver(dir: &std::path::Path) -> ReceiveState {
        use crate::receive::{EngineHeads, ReceiveOptions};
        let factory = Arc::new(EngineHeads {
            bucket: engine::bucket::Bucket::local(dir.join("bucket")).unwrap(),
            block_duration_ms: 7_200_000,
            out_of_order_window_ms: 0,
        });
        let opts = ReceiveOptions { tsdb_path: dir.join("tsdb"), ..Default::default() };
        ReceiveState::new(opts, factory).unwrap()
    }

    #[tokio::test]
    async fn remote_write_writes_per_tenant_and_answers_with_thanos_codes() {
        use engine::source::SelectRequest;
        use futures::TryStreamExt;

        let dir = tempfile::tempdir().unwrap();
        let state = receiver(dir.path());
        let svc = WriteService { state: state.clone() };
        let call = |req: WriteRequest| {
            let svc = svc.clone();
            async move {
                svc.remote_write(Request::new(req)).await.map(|_| ()).map_err(|s| (s.code(), s.message().to_string()))
            }
        };
        // the message's tenant, the default tenant when empty, and the multi-tenant tuples
        let req = WriteRequest {
            timeseries: vec![ts("a", &[(1000, 1.0)])],
            tenant: "t1".into(),
            replica: 1,
            timeseries_tenant_data: vec![proto::thanos::TimeSeriesTenantTuple {
                timeseries: vec![ts("b", &[(1000, 2.0)])],
                tenant: String::new(),
            }],
        };
        assert_eq!(call(req).await, Ok(()));
        let req = SelectRequest { min_t: i64::MIN, max_t: i64::MAX, ..Default::default() };
        let batches: Vec<engine::SeriesBatch> = state.source().select(&req).await.unwrap().try_collect().await.unwrap();
        let mut got: Vec<String> = Vec::new();
        for b in &batches {
            for i in 0..b.num_series() {
                got.push(b.series(i).0.to_string());
            }
        }
        assert_eq!(got, vec![r#"a{tenant_id="t1"}"#, r#"b{tenant_id="default-tenant"}"#]);

        // out of order: AlreadyExists (a conflict); an invalid series too, as Thanos counts it
        let conflict =
            WriteRequest { timeseries: vec![ts("a", &[(500, 1.0)])], tenant: "t1".into(), ..Default::default() };
        let (code, msg) = call(conflict).await.unwrap_err();
        assert_eq!(code, Code::AlreadyExists, "{msg}");
        assert!(msg.contains("out of order"), "{msg}");
        let nameless = proto::prometheus::TimeSeries {
            labels: vec![proto::prometheus::Label { name: "job".into(), value: "x".into() }],
            samples: vec![proto::prometheus::Sample { value: 1.0, timestamp: 2000 }],
            ..Default::default()
        };
        let invalid = WriteRequest { timeseries: vec![nameless], tenant: "t1".into(), ..Default::default() };
        assert_eq!(call(invalid).await.unwrap_err().0, Code::AlreadyExists);
        // a bad tenant or replica: InvalidArgument
        let bad =
            WriteRequest { timeseries: vec![ts("a", &[(3000, 1.0)])], tenant: "../x".into(), ..Default::default() };
        assert_eq!(call(bad).await.unwrap_err().0, Code::InvalidArgument);
        for replica in [-1, 2] {
            let bad = WriteRequest { timeseries: vec![ts("a", &[(3000, 1.0)])], replica, ..Default::default() };
            let (code, msg) = call(bad).await.unwrap_err();
            assert_eq!(code, Code::InvalidArgument, "{msg}");
            assert!(msg.contains("replication factor 1"), "{msg}");
        }
    }

    /// Over real HTTP/2: a tonic client whose requests a test layer compresses the way grpc-go's
    /// snappy compressor does (flag 1, snappy framing, `grpc-encoding: snappy`) writes through a
    /// tonic server hosting [`writeable_store`].
    #[tokio::test]
    async fn snappy_compressed_remote_write_over_http2() {
        let dir = tempfile::tempdir().unwrap();
        let state = receiver(dir.path());
        let l = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = l.local_addr().unwrap();
        let svc = writeable_store(state.clone());
        let incoming = tonic::transport::server::TcpIncoming::from(l);
        tokio::spawn(async move {
            tonic::transport::Server::builder().add_service(svc).serve_with_incoming(incoming).await
        });

        let channel = tonic::transport::Endpoint::from_shared(format!("http://{addr}")).unwrap().connect_lazy();
        let compressing = tower::service_fn(move |req: http::Request<tonic::body::Body>| {
            let channel = channel.clone();
            async move {
                let (mut parts, body) = req.into_parts();
                let mut plain = body.collect().await.unwrap().to_bytes();
                let mut out = Vec::new();
                while !plain.is_empty() {
                    assert_eq!(plain.get_u8(), 0);
                    let len = plain.get_u32() as usize;
                    let msg = plain.split_to(len);
                    let mut enc = snap::write::FrameEncoder::new(Vec::new());
                    std::io::Write::write_all(&mut enc, &msg).unwrap();
                    let framed = enc.into_inner().unwrap();
                    out.push(1);
                    out.extend_from_slice(&(framed.len() as u32).to_be_bytes());
                    out.extend_from_slice(&framed);
                }
                parts.headers.insert("grpc-encoding", "snappy".parse().unwrap());
                let body = tonic::body::Body::new(http_body_util::Full::new(Bytes::from(out)).map_err(|e| match e {}));
                tower::ServiceExt::oneshot(channel, http::Request::from_parts(parts, body)).await
            }
        });
        let mut client = WriteableStoreClient::new(compressing);
        let req =
            WriteRequest { timeseries: vec![ts("snappy_m", &[(1000, 4.5)])], tenant: "t".into(), ..Default::default() };
        client.remote_write(Request::new(req)).await.unwrap();
        let stats = state.heads().await;
        assert_eq!(stats.len(), 1);
        assert_eq!(stats[0].0, "t");
        let sel = engine::source::SelectRequest { min_t: 0, max_t: i64::MAX, ..Default::default() };
        let batches: Vec<engine::SeriesBatch> =
            futures::TryStreamExt::try_collect(state.source().select(&sel).await.unwrap()).await.unwrap();
        let (labels, t, v) = batches[0].series(0);
        assert_eq!((labels.to_string().as_str(), t, v), (r#"snappy_m{tenant_id="t"}"#, &[1000i64][..], &[4.5][..]));
    }

    #[tokio::test]
    async fn layer_decodes_snappy_requests_and_passes_others() {
        use tower::{Service, ServiceExt};
        // the inner service echoes what it received: body and whether grpc-encoding was left
        let echo = tower::service_fn(|req: http::Request<tonic::body::Body>| async move {
            let enc = req.headers().get("grpc-encoding").map(|v| v.to_str().unwrap().to_string());
            let body = req.into_body().collect().await.unwrap().to_bytes();
            let mut resp =
                http::Response::new(tonic::body::Body::new(http_body_util::Full::new(body).map_err(|e| match e {})));
            if let Some(e) = enc {
                resp.headers_mut().insert("x-seen-encoding", e.parse().unwrap());
            }
            Ok::<_, std::convert::Infallible>(resp)
        });
        let mut svc = SnappyDecode::new(echo);
        let call = |enc: Option<&str>, body: Vec<u8>| {
            let mut b = http::Request::post("/thanos.WriteableStore/RemoteWrite");
            if let Some(e) = enc {
                b = b.header("grpc-encoding", e);
            }
            b.body(tonic::body::Body::new(http_body_util::Full::new(Bytes::from(body)).map_err(|e| match e {})))
                .unwrap()
        };
        let resp = svc.ready().await.unwrap().call(call(Some("snappy"), grpc_frame(1, &framed(b"ab", b"cd")))).await;
        let resp = resp.unwrap();
        assert!(resp.headers().get("x-seen-encoding").is_none());
        assert_eq!(resp.into_body().collect().await.unwrap().to_bytes().as_ref(), grpc_frame(0, b"abcd").as_slice());

        let resp = svc.ready().await.unwrap().call(call(Some("gzip"), vec![1, 2, 3])).await.unwrap();
        assert_eq!(resp.headers().get("x-seen-encoding").unwrap(), "gzip");
        assert_eq!(resp.into_body().collect().await.unwrap().to_bytes().as_ref(), &[1, 2, 3]);

        let resp = svc.ready().await.unwrap().call(call(Some("snappy"), grpc_frame(1, b"junk"))).await.unwrap();
        assert_eq!(resp.headers().get("grpc-status").unwrap(), "3"); // InvalidArgument
    }
}
