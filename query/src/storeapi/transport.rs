//! The StoreAPI client's transport: [`H2Channel`], gRPC calls to one endpoint over one HTTP/2
//! connection driven with `h2` directly, under tonic's generated clients (which still encode the
//! request, decode the `Streaming` answer and read `grpc-status`) in place of tonic's `Channel`.
//!
//! ```text
//!   StoreClient / InfoClient (tonic): request message encoded, gRPC headers set
//!        │  H2Channel::call, in the caller's task: the message collected, HEADERS and
//!        │  DATA(END_STREAM) queued on the connection together (one write when it next runs)
//!        ▼
//!   connection task (one per endpoint, spawned when dialled): the socket's reads and writes
//!        │  answer frames land in the stream's buffer and wake the caller
//!        ▼
//!   RecvBody, polled by tonic's `Streaming` in the caller's task: data (its flow-control
//!   capacity released as it is handed on), then the trailers
//! ```
//!
//! What tonic's `Channel` costs per call and this does not: a hop through `tower::buffer`'s worker
//! task and back; in hyper's HTTP/2 client, a task spawned per request to await the answer and
//! hand it over a oneshot; and with the adaptive window the client had, a BDP PING after received
//! data (one more write per call; the server's PONG arrives with the answer). The flow-control windows
//! are fixed instead ([`STREAM_WINDOW`], [`CONNECTION_WINDOW`]), large enough that a store streaming
//! a large answer seldom waits on a window update.
//!
//! The wire is tonic's: the same method paths, headers (`te: trailers`, `content-type:
//! application/grpc`, metadata such as `thanos-tenant`), message framing and status handling; the
//! `user-agent` names Strata. Errors keep tonic's gRPC codes: a failed dial is UNAVAILABLE, HTTP/2
//! errors (a reset stream, a lost connection) map as tonic maps them.
//!
//! The connection is dialled on the first call (as tonic's `connect_lazy`) and shared by all calls
//! (one HTTP/2 stream each). A call that finds it closed or failed dials a new one; calls that
//! find no connection at the same time wait for one dial. The connection task ends when `h2`
//! closes the connection: on a failure, or once no handle or stream refers to it.

use std::future::Future;
use std::pin::Pin;
use std::sync::{Arc, Mutex};
use std::task::{Context, Poll};

use bytes::Bytes;
use h2::client::SendRequest;
use http_body::{Body, Frame};
use http_body_util::BodyExt;
use tonic::codegen::{Service, http};

type BoxError = Box<dyn std::error::Error + Send + Sync>;

/// Flow-control window of one call's answer: what a store may send ahead of the querier's reading.
const STREAM_WINDOW: u32 = 4 << 20;
/// Flow-control window of the connection (all calls to the endpoint together).
const CONNECTION_WINDOW: u32 = 8 << 20;
/// Largest header list accepted from a store (hyper's client default).
const MAX_HEADER_LIST: u32 = 16 << 10;
/// Most bytes buffered for sending per stream (hyper's client default; requests are small).
const MAX_SEND_BUFFER: usize = 1 << 20;
/// The `user-agent` of every call.
const USER_AGENT: &str = concat!("strata/", env!("CARGO_PKG_VERSION"));

/// gRPC calls to one endpoint (`host:port`) over one lazily dialled HTTP/2 connection (module docs).
/// Cheap to clone; clones share the connection.
#[derive(Clone)]
pub(crate) struct H2Channel {
    shared: Arc<Shared>,
}

impl std::fmt::Debug for H2Channel {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("H2Channel").field("addr", &self.shared.addr).finish_non_exhaustive()
    }
}

struct Shared {
    /// Where to dial.
    addr: String,
    /// The current connection, if any, with its dial number.
    conn: Mutex<Option<(u64, SendRequest<Bytes>)>>,
    /// Held while dialling: one dial at a time. Holds the number of dials so far.
    dialling: tokio::sync::Mutex<u64>,
}

impl H2Channel {
    /// A channel to `addr` (`host:port`); nothing is dialled until the first call.
    pub(crate) fn new(addr: &str) -> Self {
        H2Channel {
            shared: Arc::new(Shared {
                addr: addr.to_string(),
                conn: Mutex::new(None),
                dialling: tokio::sync::Mutex::new(0),
            }),
        }
    }
}

impl Shared {
    fn current(&self) -> Option<(u64, SendRequest<Bytes>)> {
        self.conn.lock().unwrap_or_else(|p| p.into_inner()).clone()
    }

    /// The current connection ready for a new stream; a closed or failed one is dropped.
    async fn ready_current(&self) -> Option<SendRequest<Bytes>> {
        let (id, send) = self.current()?;
        match send.ready().await {
            Ok(s) => Some(s),
            Err(e) => {
                tracing::debug!(endpoint = %self.addr, error = %e, "StoreAPI connection closed; dialling again");
                let mut g = self.conn.lock().unwrap_or_else(|p| p.into_inner());
                if g.as_ref().is_some_and(|(cur, _)| *cur == id) {
                    *g = None;
                }
                None
            }
        }
    }

    /// A connection ready for a new stream: the current one, or a new dial.
    async fn sender(&self) -> Result<SendRequest<Bytes>, BoxError> {
        if let Some(s) = self.ready_current().await {
            return Ok(s);
        }
        let mut dials = self.dialling.lock().await;
        // Another call may have dialled while this one waited.
        if let Some(s) = self.ready_current().await {
            return Ok(s);
        }
        let send = dial(&self.addr).await?;
        *dials += 1;
        *self.conn.lock().unwrap_or_else(|p| p.into_inner()) = Some((*dials, send.clone()));
        send.ready().await.map_err(|e| connect_error(format!("HTTP/2 handshake: {e}")))
    }
}

/// An UNAVAILABLE status for a failed dial (tonic's [`tonic::ConnectError`] maps to it).
fn connect_error(msg: String) -> BoxError {
    Box::new(tonic::ConnectError(msg.into()))
}

/// Dials `addr` and starts the connection's task.
async fn dial(addr: &str) -> Result<SendRequest<Bytes>, BoxError> {
    let tcp =
        tokio::net::TcpStream::connect(addr).await.map_err(|e| connect_error(format!("tcp connect error: {e}")))?;
    // Requests and small answers are single short writes: no Nagle delay on them.
    tcp.set_nodelay(true).map_err(|e| connect_error(format!("tcp connect error: {e}")))?;
    let (send, conn) = h2::client::Builder::new()
        .initial_window_size(STREAM_WINDOW)
        .initial_connection_window_size(CONNECTION_WINDOW)
        .max_header_list_size(MAX_HEADER_LIST)
        .max_send_buffer_size(MAX_SEND_BUFFER)
        .enable_push(false)
        .handshake::<_, Bytes>(tcp)
        .await
        .map_err(|e| connect_error(format!("HTTP/2 handshake: {e}")))?;
    let endpoint = addr.to_string();
    tokio::spawn(async move {
        if let Err(e) = conn.await {
            tracing::debug!(endpoint, error = %e, "StoreAPI connection ended");
        }
    });
    Ok(send)
}

impl Service<http::Request<tonic::body::Body>> for H2Channel {
    type Response = http::Response<RecvBody>;
    type Error = BoxError;
    type Future = Pin<Box<dyn Future<Output = Result<Self::Response, BoxError>> + Send>>;

    fn poll_ready(&mut self, _cx: &mut Context<'_>) -> Poll<Result<(), BoxError>> {
        // Readiness (a live connection) is awaited in the call itself.
        Poll::Ready(Ok(()))
    }

    fn call(&mut self, req: http::Request<tonic::body::Body>) -> Self::Future {
        let shared = Arc::clone(&self.shared);
        Box::pin(async move {
            let (mut head, body) = req.into_parts();
            // The request message: tonic's encoder has it ready at once (unary and server
            // streaming calls send one message).
            let body = body.collect().await?.to_bytes();
            head.headers.entry(http::header::USER_AGENT).or_insert(http::HeaderValue::from_static(USER_AGENT));
            let mut send = shared.sender().await?;
            let (answer, mut stream) = send.send_request(http::Request::from_parts(head, ()), body.is_empty())?;
            if !body.is_empty() {
                stream.send_data(body, true)?;
            }
            let answer = answer.await?;
            Ok(answer.map(RecvBody::new))
        })
    }
}

/// A received body: the stream's data, then its trailers (where gRPC puts `grpc-status`). The
/// client reads answers with it, the server (`serve`) requests.
#[derive(Debug)]
pub(crate) struct RecvBody {
    recv: h2::RecvStream,
    data_done: bool,
}

impl RecvBody {
    pub(crate) fn new(recv: h2::RecvStream) -> Self {
        RecvBody { recv, data_done: false }
    }
}

impl Body for RecvBody {
    type Data = Bytes;
    type Error = h2::Error;

    fn poll_frame(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Option<Result<Frame<Bytes>, h2::Error>>> {
        let this = &mut *self;
        if !this.data_done {
            match std::task::ready!(this.recv.poll_data(cx)) {
                Some(Ok(data)) => {
                    // The bytes are the reader's now: let the peer send as much more.
                    let _ = this.recv.flow_control().release_capacity(data.len());
                    return Poll::Ready(Some(Ok(Frame::data(data))));
                }
                Some(Err(e)) => return Poll::Ready(Some(Err(e))),
                None => this.data_done = true,
            }
        }
        match std::task::ready!(this.recv.poll_trailers(cx)) {
            Ok(Some(t)) => Poll::Ready(Some(Ok(Frame::trailers(t)))),
            Ok(None) => Poll::Ready(None),
            Err(e) => Poll::Ready(Some(Err(e))),
        }
    }

    fn is_end_stream(&self) -> bool {
        self.recv.is_end_stream()
    }
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]
    use std::sync::atomic::AtomicBool;
    use std::time::Duration;

    use engine::{Labels, Matcher, MemSource, SelectRequest, SeriesBatch, SeriesSource};
    use futures::{StreamExt, TryStreamExt};
    use prometheus_client::registry::Registry;
    use tonic::metadata::MetadataMap;

    use super::*;
    use crate::storeapi::client::{Remote, RemoteSource};
    use crate::storeapi::server::{RequestLimits, StoreApi, StoreApiMetrics, StoreApiOptions};

    /// `n` series `up{i="k"}` of `samples` samples each, values that XOR-compress poorly
    /// (about 8 bytes a sample on the wire).
    fn source(n: usize, samples: usize) -> Arc<MemSource> {
        let m = MemSource::new();
        for k in 0..n {
            let ts: Vec<i64> = (0..samples as i64).map(|i| i * 1000).collect();
            let vs: Vec<f64> = (0..samples).map(|i| expected_value(k, i)).collect();
            m.add(Labels::from_pairs([("__name__", "up"), ("i", &format!("{k:03}"))]), &ts, &vs);
        }
        Arc::new(m)
    }

    /// Sample `i` of series `k`, computed apart from the source.
    fn expected_value(k: usize, i: usize) -> f64 {
        ((k * 7919 + i) as f64).sqrt() * 1.000_001_f64.powi(i as i32)
    }

    /// What a test server saw: the metadata of every call, and the connections it accepted.
    #[derive(Default)]
    struct Seen {
        calls: Mutex<Vec<MetadataMap>>,
        connections: std::sync::atomic::AtomicUsize,
    }

    impl Seen {
        fn connections(&self) -> usize {
            self.connections.load(std::sync::atomic::Ordering::SeqCst)
        }
    }

    /// A StoreAPI server on `listener` over `source` until the returned sender fires (or drops).
    fn serve(
        listener: tokio::net::TcpListener,
        source: Arc<MemSource>,
        limits: RequestLimits,
        seen: Arc<Seen>,
    ) -> (tokio::task::JoinHandle<()>, tokio::sync::oneshot::Sender<()>) {
        let opts = StoreApiOptions { component_type: "store".into(), limits, ..Default::default() };
        let api = StoreApi::new(
            source,
            opts,
            Arc::new(AtomicBool::new(true)),
            StoreApiMetrics::register(&mut Registry::default()),
        );
        let calls = Arc::clone(&seen);
        let record = move |req: tonic::Request<()>| {
            calls.calls.lock().unwrap().push(req.metadata().clone());
            Ok(req)
        };
        let store = tonic::service::interceptor::InterceptedService::new(api.store_server(), record.clone());
        let info = tonic::service::interceptor::InterceptedService::new(api.info_server(), record);
        let (stop, stopped) = tokio::sync::oneshot::channel::<()>();
        let incoming = futures::stream::unfold((listener, seen), |(listener, seen)| async move {
            let conn = listener.accept().await.map(|(tcp, _)| {
                seen.connections.fetch_add(1, std::sync::atomic::Ordering::SeqCst);
                tcp.set_nodelay(true).unwrap();
                tcp
            });
            Some((conn, (listener, seen)))
        });
        let task = tokio::spawn(async move {
            tonic::transport::Server::builder()
                .add_service(store)
                .add_service(info)
                .serve_with_incoming_shutdown(incoming, async {
                    let _ = stopped.await;
                })
                .await
                .unwrap();
        });
        (task, stop)
    }

    fn select_all() -> SelectRequest {
        SelectRequest {
            matchers: vec![Matcher::equal("__name__", "up")],
            min_t: 0,
            max_t: i64::MAX,
            ..Default::default()
        }
    }

    /// (labels, samples) of every series of `src`'s answer to [`select_all`] (a call that stalls,
    /// e.g. on flow control, fails after a minute).
    async fn read(src: &RemoteSource) -> engine::Result<Vec<(String, Vec<(i64, f64)>)>> {
        let call = async { src.select(&select_all()).await?.try_collect::<Vec<SeriesBatch>>().await };
        let batches = tokio::time::timeout(Duration::from_secs(60), call).await.unwrap()?;
        let mut out = Vec::new();
        for b in &batches {
            for i in 0..b.num_series() {
                let (l, t, v) = b.series(i);
                out.push((l.to_string(), t.iter().copied().zip(v.iter().copied()).collect()));
            }
        }
        Ok(out)
    }

    fn check(got: &[(String, Vec<(i64, f64)>)], n: usize, samples: usize) {
        assert_eq!(got.len(), n);
        for (k, (l, s)) in got.iter().enumerate() {
            assert_eq!(l, &format!("up{{i=\"{k:03}\"}}"));
            assert_eq!(s.len(), samples, "{l}");
            for (i, &(t, v)) in s.iter().enumerate() {
                assert_eq!((t, v.to_bits()), (i as i64 * 1000, expected_value(k, i).to_bits()), "{l} sample {i}");
            }
        }
    }

    /// Calls of every kind over one connection: the gRPC headers and metadata arrive, answers larger
    /// than both flow-control windows come whole, concurrent calls share the connection, a call
    /// dropped halfway leaves it usable, and a server status keeps its code and message.
    #[tokio::test]
    async fn calls_share_one_connection_and_arrive_whole() {
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap().to_string();
        // 24 series x 50,000 samples: about 10 MB of chunks, more than CONNECTION_WINDOW.
        let (n, samples) = (24, 50_000);
        let seen = Arc::new(Seen::default());
        let (_server, _stop) = serve(listener, source(n, samples), RequestLimits::default(), Arc::clone(&seen));
        let remote = Remote::connect_lazy(&addr).unwrap();
        tokio::time::sleep(Duration::from_millis(50)).await;
        assert_eq!(seen.connections(), 0, "nothing dialled before the first call");

        let info = remote.info(Duration::from_secs(10)).await.unwrap();
        assert_eq!(info.component_type, "store");
        let src = RemoteSource::new(remote.clone(), Some("team-a".into()));
        let got = read(&src).await.unwrap();
        check(&got, n, samples);
        {
            let seen = seen.calls.lock().unwrap();
            assert_eq!(seen.len(), 2);
            let h = seen[1].clone().into_headers();
            assert_eq!(h.get("content-type").unwrap(), "application/grpc");
            assert_eq!(h.get("te").unwrap(), "trailers");
            assert_eq!(h.get("user-agent").unwrap(), USER_AGENT);
            assert_eq!(h.get(crate::storeapi::client::TENANT_METADATA).unwrap(), "team-a");
            assert!(seen[0].get(crate::storeapi::client::TENANT_METADATA).is_none());
        }

        // Calls at once, each on its own task.
        let calls: Vec<_> = (0..3)
            .map(|_| {
                let src = src.clone();
                tokio::spawn(async move { read(&src).await })
            })
            .collect();
        for c in calls {
            check(&c.await.unwrap().unwrap(), n, samples);
        }

        // A call given up after its first batch: the stream is reset, the connection stays.
        let mut stream = src.select(&select_all()).await.unwrap();
        assert!(stream.next().await.unwrap().unwrap().num_series() > 0);
        drop(stream);
        check(&read(&src).await.unwrap(), n, samples);
        assert_eq!(seen.connections(), 1, "one connection for all calls");
    }

    /// A server that went away and came back on the same port is dialled again; a status from the
    /// server keeps its code and message; nothing listening is UNAVAILABLE.
    #[tokio::test]
    async fn a_closed_connection_is_dialled_again_and_statuses_pass_through() {
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        let seen = Arc::new(Seen::default());
        let (server, stop) = serve(listener, source(3, 100), RequestLimits::default(), Arc::clone(&seen));
        let remote = Remote::connect_lazy(&addr.to_string()).unwrap();
        let src = RemoteSource::new(remote.clone(), None);
        check(&read(&src).await.unwrap(), 3, 100);

        stop.send(()).unwrap();
        server.await.unwrap();
        let e = read(&src).await.unwrap_err().to_string();
        assert!(e.contains("fetch series: rpc error: code = Unavailable desc = tcp connect error"), "{e}");

        // Back, with a series limit the request exceeds.
        let listener = tokio::net::TcpListener::bind(addr).await.unwrap();
        let limits = RequestLimits { series: 2, samples: 0 };
        let (_server, _stop) = serve(listener, source(3, 100), limits, Arc::clone(&seen));
        let e = read(&src).await.unwrap_err().to_string();
        let want = format!("{addr}: receive series: rpc error: code = ResourceExhausted desc = exceeded series limit");
        assert!(e.starts_with(&want), "{e}");
        let mut two = select_all();
        two.matchers.push(Matcher::new(engine::MatchOp::NotEqual, "i", "002").unwrap());
        let batches: Vec<SeriesBatch> = src.select(&two).await.unwrap().try_collect().await.unwrap();
        assert_eq!(batches.iter().map(SeriesBatch::num_series).sum::<usize>(), 2);
        assert_eq!(seen.connections(), 2);
    }
}
