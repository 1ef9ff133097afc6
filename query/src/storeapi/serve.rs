//! The gRPC server's transport: every service of a port (tonic's [`Routes`]: `thanos.Store`,
//! `thanos.info.Info`, `thanos.WriteableStore`, Flight SQL where it shares the port) served over
//! HTTP/2 connections driven with `h2` directly, the server side of what `transport` does for the
//! client. The services are tonic's, unchanged: they decode requests, encode answers and set
//! `grpc-status`; this module only moves HTTP/2 streams to and from them.
//!
//! ```text
//!   serve: accept (TCP_NODELAY) ─► one task per connection: h2 handshake, then
//!      the connection polled (socket reads and writes)
//!        │ a new stream: its call (Routes, a span "grpc" per call) polled at once in the
//!        │ connection's task, the answer's frames handed to h2 as the body yields them
//!        ├─► done in that poll (a small answer): its frames leave with the connection's write
//!        └─► not done (it waits on its request body, a read, a large answer, flow control):
//!            moved to a task of its own, as hyper runs every stream
//!   shutdown: the listener closed, GOAWAY on every connection, the calls in flight finish
//! ```
//!
//! A port given a `thanos.Store` service for Series frames ([`super::frames`]) looks at each new
//! connection's first byte: 0 starts a frames connection, anything else HTTP/2 as above; its Info
//! answers carry the header that advertises the frames.
//!
//! What tonic's `Server` (hyper's HTTP/2 server) costs per call and this does not: a task spawned
//! per stream and a wake-up of the connection's task by it; hyper's body and header wrappers
//! around every frame. A wake-up of the connection task by its own work while it is being polled
//! (h2 waking it when an inline call queues frames) is noted and looped over instead of going
//! through the scheduler, which would queue the task behind others and wake an idle worker thread
//! to steal it.
//!
//! The HTTP/2 settings are those tonic's server had (hyper's defaults: 1 MiB flow-control windows
//! per stream and connection, 16 KiB frames and header lists, 400 KiB send buffer per stream,
//! no limit on concurrent streams); HTTP/1 is refused (the handshake fails on its preface), as
//! tonic's server refused it. A client's `grpc-timeout` bounds the wait for the answer's headers,
//! as tonic's server did (`CANCELLED`, "Timeout expired"); a stream the client resets stops its
//! call.

use std::future::Future;
use std::pin::{Pin, pin};
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::task::{Context, Poll, Wake, Waker, ready};
use std::time::Duration;

use bytes::Bytes;
use futures::task::AtomicWaker;
use h2::server::SendResponse;
use http_body::Body;
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::watch;
use tonic::codegen::{Service, http};
use tonic::service::Routes;
use tracing::Instrument;

use super::frames::FramedStore;
use super::transport::RecvBody;

/// The method whose answers advertise Series frames.
const INFO_PATH: &str = "/thanos.info.Info/Info";

/// Flow-control window of one call's request (hyper's server default, which tonic's server used).
const STREAM_WINDOW: u32 = 1 << 20;
/// Flow-control window of a connection's requests together (idem).
const CONNECTION_WINDOW: u32 = 1 << 20;
/// Largest header list accepted (idem).
const MAX_HEADER_LIST: u32 = 16 << 10;
/// Most answer bytes buffered per stream before its body is polled for more (idem).
const MAX_SEND_BUFFER: usize = 400 << 10;
/// Polls of a connection in a row without a trip through the scheduler, when its own work keeps
/// waking it; then it yields to the other tasks of its thread.
const MAX_POLL_ROUNDS: usize = 8;

/// Serves `routes` on the connections `listener` accepts until `shutdown` resolves; then closes
/// the listener, asks every connection to finish (HTTP/2 GOAWAY: no new calls, the calls in flight
/// complete) and returns once all of them have closed.
///
/// With `frames`, the port serves that service's `Series` over Series frames as well
/// ([`super::frames`]: a connection whose first byte is not an HTTP/2 preface's) and says so in
/// every Info answer's headers.
pub async fn serve(
    listener: TcpListener,
    routes: Routes,
    frames: Option<FramedStore>,
    shutdown: impl Future<Output = ()>,
) {
    let routes = routes.prepare();
    let (stop_tx, stop_rx) = watch::channel(false);
    let mut shutdown = pin!(shutdown);
    loop {
        tokio::select! {
            () = &mut shutdown => break,
            accepted = listener.accept() => match accepted {
                Ok((tcp, peer)) => {
                    // Answers and their trailers are short writes: no Nagle delay on them.
                    if let Err(e) = tcp.set_nodelay(true) {
                        tracing::debug!(%peer, error = %e, "gRPC connection: cannot set TCP_NODELAY");
                    }
                    tokio::spawn(connection(tcp, routes.clone(), frames.clone(), stop_rx.clone()));
                }
                Err(e) => {
                    // e.g. out of file descriptors: try again shortly rather than spin.
                    tracing::warn!(error = %e, "gRPC server: accept failed");
                    tokio::time::sleep(Duration::from_millis(50)).await;
                }
            },
        }
    }
    drop(listener);
    let _ = stop_tx.send(true);
    drop(stop_rx);
    // Every connection task holds a receiver until its connection is closed.
    stop_tx.closed().await;
}

/// One connection: the HTTP/2 handshake, then its calls until it closes (the client's GOAWAY or
/// going away, an HTTP/2 error, or a finished shutdown).
async fn connection(tcp: TcpStream, routes: Routes, frames: Option<FramedStore>, stop: watch::Receiver<bool>) {
    let advertise = frames.is_some();
    if let Some(store) = frames {
        let mut first = [0u8; 1];
        let mut stopped = stop.clone();
        let peeked = tokio::select! {
            r = tcp.peek(&mut first) => r,
            _ = stopped.wait_for(|&s| s) => return,
        };
        if matches!(peeked, Ok(1)) && first[0] == super::frames::MAGIC[0] {
            super::frames::serve_connection(tcp, store, stop).await;
            return;
        }
    }
    let handshake = h2::server::Builder::new()
        .initial_window_size(STREAM_WINDOW)
        .initial_connection_window_size(CONNECTION_WINDOW)
        .max_header_list_size(MAX_HEADER_LIST)
        .max_send_buffer_size(MAX_SEND_BUFFER)
        .handshake::<_, Bytes>(tcp);
    let mut stopped = stop.clone();
    let h2 = tokio::select! {
        r = handshake => match r {
            Ok(h2) => h2,
            Err(e) => {
                tracing::debug!(error = %e, "gRPC connection: HTTP/2 handshake failed");
                return;
            }
        },
        _ = stopped.wait_for(|&s| s) => return,
    };
    let stopping = Box::pin(async move {
        // An error: the server is gone without asking, nothing to wait for.
        let _ = stopped.wait_for(|&s| s).await;
    });
    let serving =
        Serving { h2, routes, advertise, stopping: Some(stopping), wake: Arc::new(ConnWake::default()), _alive: stop };
    if let Err(e) = serving.await {
        tracing::debug!(error = %e, "gRPC connection ended");
    }
}

/// A connection being served (the future of its task; see the module docs).
struct Serving {
    h2: h2::server::Connection<TcpStream, Bytes>,
    routes: Routes,
    /// Info answers say the port serves Series frames.
    advertise: bool,
    /// Resolves when the server shuts down; `None` once GOAWAY was sent.
    stopping: Option<Pin<Box<dyn Future<Output = ()> + Send>>>,
    wake: Arc<ConnWake>,
    /// Counts this connection as open until it is dropped (see [`serve`]).
    _alive: watch::Receiver<bool>,
}

/// The waker the connection's task polls its connection with: a wake while the task is being
/// polled only asks for another round of the poll already running.
#[derive(Default)]
struct ConnWake {
    /// The task's own waker.
    task: AtomicWaker,
    /// The task is inside its poll.
    polling: AtomicBool,
    /// Woken during the poll: poll again before returning.
    again: AtomicBool,
}

impl Wake for ConnWake {
    fn wake(self: Arc<Self>) {
        self.wake_by_ref();
    }

    fn wake_by_ref(self: &Arc<Self>) {
        if self.polling.load(Ordering::SeqCst) {
            self.again.store(true, Ordering::SeqCst);
            // The poll may have ended between the load and the store: it then saw no `again`,
            // so the task is woken as any other would be.
            if self.polling.load(Ordering::SeqCst) {
                return;
            }
        }
        self.task.wake();
    }
}

impl Future for Serving {
    type Output = Result<(), h2::Error>;

    fn poll(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Self::Output> {
        let this = self.get_mut();
        this.wake.task.register(cx.waker());
        let waker = Waker::from(Arc::clone(&this.wake));
        let mut inner = Context::from_waker(&waker);
        for _ in 0..MAX_POLL_ROUNDS {
            this.wake.polling.store(true, Ordering::SeqCst);
            let r = this.poll_round(&mut inner);
            this.wake.polling.store(false, Ordering::SeqCst);
            if r.is_ready() {
                return r;
            }
            if !this.wake.again.swap(false, Ordering::SeqCst) {
                return Poll::Pending;
            }
        }
        // Still woken by its own work: let the thread's other tasks run first.
        cx.waker().wake_by_ref();
        Poll::Pending
    }
}

impl Serving {
    /// Drives the connection: sends GOAWAY once the server stops, starts every new call.
    fn poll_round(&mut self, cx: &mut Context<'_>) -> Poll<Result<(), h2::Error>> {
        if let Some(stop) = self.stopping.as_mut()
            && stop.as_mut().poll(cx).is_ready()
        {
            self.stopping = None;
            self.h2.graceful_shutdown();
        }
        loop {
            match ready!(self.h2.poll_accept(cx)) {
                Some(Ok((req, respond))) => self.start(req, respond, cx),
                Some(Err(e)) => return Poll::Ready(Err(e)),
                None => return Poll::Ready(Ok(())),
            }
        }
    }

    /// Starts a call: polled once here; if not done, moved to a task of its own (polling it there
    /// registers that task's waker with whatever it waits on).
    fn start(&self, req: http::Request<h2::RecvStream>, respond: SendResponse<Bytes>, cx: &mut Context<'_>) {
        let span = tracing::debug_span!("grpc", path = %req.uri().path());
        let mut call = Box::pin(answer(self.routes.clone(), self.advertise, req, respond).instrument(span));
        if call.as_mut().poll(cx).is_pending() {
            tokio::spawn(call);
        }
    }
}

/// One call: the request handed to `routes`, the answer's headers, data and trailers handed to h2.
async fn answer(
    mut routes: Routes,
    advertise: bool,
    req: http::Request<h2::RecvStream>,
    mut respond: SendResponse<Bytes>,
) {
    let timeout = grpc_timeout(req.headers());
    let advertise = advertise && req.uri().path() == INFO_PATH;
    // The router is always ready (it holds no queue or limit); the call is made as tower asks.
    if let Err(never) = std::future::poll_fn(|cx| Service::<http::Request<RecvBody>>::poll_ready(&mut routes, cx)).await
    {
        match never {}
    }
    let call = routes.call(req.map(RecvBody::new));
    let response = {
        let mut call = pin!(call);
        let mut deadline = pin!(async {
            match timeout {
                Some(t) => tokio::time::sleep(t).await,
                None => std::future::pending().await,
            }
        });
        std::future::poll_fn(|cx| {
            if let Poll::Ready(r) = call.as_mut().poll(cx) {
                return Poll::Ready(Some(r));
            }
            // The client gave up: the call is dropped.
            if respond.poll_reset(cx).is_ready() {
                return Poll::Ready(None);
            }
            if deadline.as_mut().poll(cx).is_ready() {
                let expired = tonic::Status::cancelled("Timeout expired").into_http::<tonic::body::Body>();
                return Poll::Ready(Some(Ok(expired)));
            }
            Poll::Pending
        })
        .await
    };
    let response: http::Response<tonic::body::Body> = match response {
        Some(Ok(r)) => r,
        Some(Err(never)) => match never {},
        None => return,
    };
    let (mut head, body) = response.into_parts();
    if advertise {
        head.headers.insert(super::frames::ADVERTISE_HEADER, http::HeaderValue::from_static("1"));
    }
    let end = body.is_end_stream();
    let send = match respond.send_response(http::Response::from_parts(head, ()), end) {
        Ok(send) => send,
        Err(e) => {
            tracing::debug!(error = %e, "gRPC answer not sent");
            return;
        }
    };
    if !end {
        let mut pipe = Pipe { body, send };
        std::future::poll_fn(|cx| pipe.poll(cx)).await;
    }
}

/// An answer's body on its way into its h2 stream.
struct Pipe {
    body: tonic::body::Body,
    send: h2::SendStream<Bytes>,
}

impl Pipe {
    /// Hands the body's frames to h2 until the body ends (data, then trailers), the client resets
    /// the stream or the connection fails. The body is polled only while the stream has room in
    /// its send buffer and flow-control window, so a large answer waits for the client.
    fn poll(&mut self, cx: &mut Context<'_>) -> Poll<()> {
        loop {
            if self.send.capacity() == 0 {
                self.send.reserve_capacity(1);
                match ready!(self.send.poll_capacity(cx)) {
                    Some(Ok(_)) => {}
                    Some(Err(e)) => {
                        tracing::debug!(error = %e, "gRPC answer stopped");
                        return Poll::Ready(());
                    }
                    // The stream is closed (reset by the client).
                    None => return Poll::Ready(()),
                }
            }
            if self.send.poll_reset(cx).is_ready() {
                return Poll::Ready(());
            }
            let frame = match ready!(Pin::new(&mut self.body).poll_frame(cx)) {
                Some(Ok(frame)) => frame,
                Some(Err(e)) => {
                    tracing::debug!(error = %e, "gRPC answer failed");
                    self.send.send_reset(h2::Reason::INTERNAL_ERROR);
                    return Poll::Ready(());
                }
                None => {
                    // Ended without trailers: the stream ends with an empty frame.
                    if let Err(e) = self.send.send_data(Bytes::new(), true) {
                        tracing::debug!(error = %e, "gRPC answer stopped");
                    }
                    return Poll::Ready(());
                }
            };
            let sent = match frame.into_data() {
                Ok(data) => {
                    let end = self.body.is_end_stream();
                    self.send.send_data(data, end).map(|()| end)
                }
                Err(frame) => match frame.into_trailers() {
                    Ok(trailers) => self.send.send_trailers(trailers).map(|()| true),
                    // Neither data nor trailers: nothing HTTP/2 carries.
                    Err(_) => Ok(false),
                },
            };
            match sent {
                Ok(false) => {}
                Ok(true) => return Poll::Ready(()),
                Err(e) => {
                    tracing::debug!(error = %e, "gRPC answer stopped");
                    return Poll::Ready(());
                }
            }
        }
    }
}

/// The client's deadline (`grpc-timeout`: up to 8 digits and a unit, `H` `M` `S` `m` `u` `n`);
/// `None` without one or when it does not parse (the call then runs without a deadline).
fn grpc_timeout(headers: &http::HeaderMap) -> Option<Duration> {
    let v = headers.get("grpc-timeout")?.to_str().ok()?;
    if v.len() < 2 || v.len() > 9 {
        return None;
    }
    let (digits, unit) = v.split_at(v.len() - 1);
    if !digits.bytes().all(|b| b.is_ascii_digit()) {
        return None;
    }
    let n: u64 = digits.parse().ok()?;
    Some(match unit {
        "H" => Duration::from_secs(n * 3600),
        "M" => Duration::from_secs(n * 60),
        "S" => Duration::from_secs(n),
        "m" => Duration::from_millis(n),
        "u" => Duration::from_micros(n),
        "n" => Duration::from_nanos(n),
        _ => return None,
    })
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]
    use std::sync::atomic::AtomicBool;

    use engine::{Labels, MemSource};
    use futures::StreamExt;
    use prometheus_client::registry::Registry;
    use proto::prometheus::{LabelMatcher, label_matcher};
    use proto::thanos::SeriesRequest;
    use proto::thanos::info::InfoRequest;
    use proto::thanos::info::info_client::InfoClient;
    use proto::thanos::store_client::StoreClient;

    use super::*;
    use crate::storeapi::frames::{FramesCall, FramesClient};
    use crate::storeapi::server::{RequestLimits, StoreApi, StoreApiMetrics, StoreApiOptions};

    /// `n` series `up{i="k"}` of `samples` samples each.
    fn api(n: usize, samples: usize, limits: RequestLimits) -> StoreApi {
        let m = MemSource::new();
        for k in 0..n {
            let ts: Vec<i64> = (0..samples as i64).map(|i| i * 1000).collect();
            let vs: Vec<f64> = (0..samples).map(|i| (k * 31 + i) as f64).collect();
            m.add(Labels::from_pairs([("__name__", "up"), ("i", &format!("{k:03}"))]), &ts, &vs);
        }
        let opts = StoreApiOptions { component_type: "store".into(), limits, ..Default::default() };
        StoreApi::new(
            Arc::new(m),
            opts,
            Arc::new(AtomicBool::new(true)),
            StoreApiMetrics::register(&mut Registry::default()),
        )
    }

    fn series_request() -> SeriesRequest {
        SeriesRequest {
            min_time: 0,
            max_time: i64::MAX,
            matchers: vec![LabelMatcher {
                r#type: label_matcher::Type::Eq as i32,
                name: "__name__".into(),
                value: "up".into(),
            }],
            ..Default::default()
        }
    }

    /// Series in the answer, and the status it ended with.
    async fn series(client: &mut StoreClient<tonic::transport::Channel>) -> (usize, tonic::Code) {
        let mut stream = match client.series(series_request()).await {
            Ok(r) => r.into_inner(),
            Err(s) => return (0, s.code()),
        };
        let mut n = 0;
        while let Some(frame) = stream.next().await {
            match frame {
                Ok(f) => {
                    n += match f.result {
                        Some(proto::thanos::series_response::Result::Series(_)) => 1,
                        Some(proto::thanos::series_response::Result::Batch(b)) => b.series.len(),
                        _ => 0,
                    }
                }
                Err(s) => return (n, s.code()),
            }
        }
        (n, tonic::Code::Ok)
    }

    /// tonic's own client (hyper's HTTP/2) gets small and large answers (larger than every
    /// flow-control window), concurrently over one connection, and a status error intact; the
    /// server stops on shutdown once its calls are done.
    #[tokio::test]
    async fn tonic_clients_get_whole_answers_and_statuses() {
        let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        // 20 series x 40,000 samples: several MB of chunks.
        let api = api(20, 40_000, RequestLimits { series: 0, samples: 0 });
        let routes = Routes::new(api.store_server()).add_service(api.info_server());
        let (stop, stopped) = tokio::sync::oneshot::channel::<()>();
        let server = tokio::spawn(serve(listener, routes, None, async {
            let _ = stopped.await;
        }));
        let channel =
            tonic::transport::Endpoint::from_shared(format!("http://{addr}")).unwrap().connect().await.unwrap();
        let mut store = StoreClient::new(channel.clone()).max_decoding_message_size(usize::MAX);
        let info = InfoClient::new(channel.clone()).info(InfoRequest {}).await.unwrap().into_inner();
        assert_eq!(info.component_type, "store");
        assert_eq!(series(&mut store).await, (20, tonic::Code::Ok));
        let calls: Vec<_> = (0..4)
            .map(|_| {
                let mut s = store.clone();
                tokio::spawn(async move { series(&mut s).await })
            })
            .collect();
        for c in calls {
            assert_eq!(c.await.unwrap(), (20, tonic::Code::Ok));
        }
        drop((store, channel));
        stop.send(()).unwrap();
        tokio::time::timeout(Duration::from_secs(10), server).await.unwrap().unwrap();
        assert!(TcpStream::connect(addr).await.is_err(), "the listener is closed");
    }

    /// A limit the request exceeds: the status reaches the client with its code; a service the port
    /// does not serve is UNIMPLEMENTED.
    #[tokio::test]
    async fn errors_arrive_as_their_statuses() {
        let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        let api = api(3, 10, RequestLimits { series: 2, samples: 0 });
        let routes = Routes::new(api.store_server());
        tokio::spawn(serve(listener, routes, None, std::future::pending()));
        let channel =
            tonic::transport::Endpoint::from_shared(format!("http://{addr}")).unwrap().connect().await.unwrap();
        let mut store = StoreClient::new(channel.clone());
        let (n, code) = series(&mut store).await;
        assert_eq!(code, tonic::Code::ResourceExhausted, "after {n} series");
        let e = InfoClient::new(channel).info(InfoRequest {}).await.unwrap_err();
        assert_eq!(e.code(), tonic::Code::Unimplemented);
    }

    /// Starts `api` on a free port, with Series frames or without.
    async fn start(api: &StoreApi, frames: bool) -> std::net::SocketAddr {
        let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        let routes = Routes::new(api.store_server()).add_service(api.info_server());
        let frames: Option<FramedStore> = if frames { Some(Arc::new(api.clone())) } else { None };
        tokio::spawn(serve(listener, routes, frames, std::future::pending()));
        addr
    }

    /// The messages of a Series answer over frames and its ending status.
    async fn framed_messages(call: &mut FramesCall) -> (Vec<proto::thanos::SeriesResponse>, tonic::Code) {
        let mut out = Vec::new();
        loop {
            match call.message().await {
                Ok(Some(m)) => out.push(m),
                Ok(None) => return (out, tonic::Code::Ok),
                Err(s) => return (out, s.code()),
            }
        }
    }

    /// Info over gRPC, then the client told what its headers said.
    async fn discover(addr: std::net::SocketAddr, client: &FramesClient) {
        let channel =
            tonic::transport::Endpoint::from_shared(format!("http://{addr}")).unwrap().connect().await.unwrap();
        let info = InfoClient::new(channel).info(InfoRequest {}).await.unwrap();
        client.advertised(info.metadata());
    }

    /// The messages of [`series_request`] over gRPC, from tonic's own client.
    async fn grpc_series(addr: std::net::SocketAddr) -> Vec<proto::thanos::SeriesResponse> {
        let channel =
            tonic::transport::Endpoint::from_shared(format!("http://{addr}")).unwrap().connect().await.unwrap();
        let mut store = StoreClient::new(channel).max_decoding_message_size(usize::MAX);
        store.series(series_request()).await.unwrap().into_inner().map(|m| m.unwrap()).collect().await
    }

    /// Over frames a Series call gets exactly the messages gRPC gets (several MB of chunks), the
    /// connection carries the next call, and a status ends an answer with its code.
    #[tokio::test]
    async fn frames_carry_what_grpc_carries() {
        let big = api(20, 40_000, RequestLimits { series: 0, samples: 0 });
        let addr = start(&big, true).await;
        let grpc = grpc_series(addr).await;
        assert!(grpc.len() >= 20, "{} messages", grpc.len());

        let client = FramesClient::new(&addr.to_string());
        discover(addr, &client).await;
        for _ in 0..2 {
            let mut call = client.call(&series_request(), Some("team-a")).await.unwrap().unwrap();
            assert_eq!(framed_messages(&mut call).await, (grpc.clone(), tonic::Code::Ok));
        }
        assert_eq!(client.idle_connections(), 1, "one connection served both calls");

        let limited = api(3, 10, RequestLimits { series: 2, samples: 0 });
        let addr = start(&limited, true).await;
        let client = FramesClient::new(&addr.to_string());
        discover(addr, &client).await;
        for _ in 0..2 {
            let mut call = client.call(&series_request(), None).await.unwrap().unwrap();
            let (_, code) = framed_messages(&mut call).await;
            assert_eq!(code, tonic::Code::ResourceExhausted);
        }
        assert_eq!(client.idle_connections(), 1);
    }

    /// Calls made at once each get a connection of their own and their whole answer; the pool
    /// keeps its bound of them afterwards, and they serve the next calls.
    #[tokio::test]
    async fn concurrent_frames_calls_get_whole_answers() {
        let big = api(20, 4_000, RequestLimits { series: 0, samples: 0 });
        let addr = start(&big, true).await;
        let grpc = grpc_series(addr).await;
        let client = FramesClient::new(&addr.to_string());
        discover(addr, &client).await;
        for round in 0..2 {
            let calls = (0..24).map(|_| {
                let client = Arc::clone(&client);
                tokio::spawn(async move {
                    let mut call = client.call(&series_request(), None).await.unwrap().unwrap();
                    framed_messages(&mut call).await
                })
            });
            for answer in futures::future::join_all(calls).await {
                assert_eq!(answer.unwrap(), (grpc.clone(), tonic::Code::Ok), "round {round}");
            }
            // 24 calls at once took 24 connections; the pool keeps its bound of them.
            assert_eq!(client.idle_connections(), super::super::frames::MAX_IDLE, "round {round}");
        }
    }

    /// A port without frames does not advertise them; a client told otherwise finds out on its
    /// first call, which then goes over gRPC (`None`), and stays off.
    #[tokio::test]
    async fn a_port_without_frames_is_asked_over_grpc() {
        let small = api(2, 10, RequestLimits { series: 0, samples: 0 });
        let addr = start(&small, false).await;
        let client = FramesClient::new(&addr.to_string());
        discover(addr, &client).await;
        assert!(client.call(&series_request(), None).await.unwrap().is_none(), "not advertised");
        let mut told = tonic::metadata::MetadataMap::new();
        told.insert(super::super::frames::ADVERTISE_HEADER, "1".parse().unwrap());
        client.advertised(&told);
        assert!(client.call(&series_request(), None).await.unwrap().is_none(), "HTTP/2 server refused");
        assert!(client.call(&series_request(), None).await.unwrap().is_none(), "off since");
        // The HTTP/2 server still serves gRPC after the stray connection.
        let channel =
            tonic::transport::Endpoint::from_shared(format!("http://{addr}")).unwrap().connect().await.unwrap();
        assert_eq!(series(&mut StoreClient::new(channel)).await, (2, tonic::Code::Ok));
    }

    /// Frames connections that break the protocol (a wrong greeting, a length the bytes never
    /// fill, an unknown kind) are closed without an answer, and the port serves on.
    #[tokio::test]
    async fn broken_frames_connections_are_closed() {
        use tokio::io::{AsyncReadExt, AsyncWriteExt};
        let small = api(2, 10, RequestLimits { series: 0, samples: 0 });
        let addr = start(&small, true).await;
        let mut bad_greeting = b"\0strata-series/9".to_vec();
        bad_greeting.extend_from_slice(&[0, 0, 0, 1, 1]);
        let mut lying_length = super::super::frames::MAGIC.to_vec();
        lying_length.extend_from_slice(&[0x40, 0, 0, 0, 1, 0, 0]);
        let mut unknown_kind = super::super::frames::MAGIC.to_vec();
        unknown_kind.extend_from_slice(&[0, 0, 0, 1, 9]);
        for sent in [bad_greeting, lying_length, unknown_kind] {
            let mut tcp = TcpStream::connect(addr).await.unwrap();
            tcp.write_all(&sent).await.unwrap();
            tcp.shutdown().await.unwrap();
            let mut back = Vec::new();
            tokio::time::timeout(Duration::from_secs(10), tcp.read_to_end(&mut back)).await.unwrap().unwrap();
            assert!(back.is_empty(), "{sent:?}: {back:?}");
        }
        let client = FramesClient::new(&addr.to_string());
        discover(addr, &client).await;
        let mut call = client.call(&series_request(), None).await.unwrap().unwrap();
        let (messages, code) = framed_messages(&mut call).await;
        assert_eq!((messages.len(), code), (2, tonic::Code::Ok));
    }

    /// A client that abandons an answer closes its connection; the store stops the call (counted
    /// as cancelled) and the next call dials a new connection.
    #[tokio::test]
    async fn an_abandoned_answer_is_cancelled() {
        let mut registry = Registry::default();
        let m = MemSource::new();
        for k in 0..200 {
            let ts: Vec<i64> = (0..20_000).map(|i| i * 1000).collect();
            let vs: Vec<f64> = (0..20_000).map(|i| f64::from(i + k)).collect();
            m.add(Labels::from_pairs([("__name__", "up"), ("i", &format!("{k:03}"))]), &ts, &vs);
        }
        let opts = StoreApiOptions { component_type: "store".into(), ..Default::default() };
        let api =
            StoreApi::new(Arc::new(m), opts, Arc::new(AtomicBool::new(true)), StoreApiMetrics::register(&mut registry));
        let addr = start(&api, true).await;
        let client = FramesClient::new(&addr.to_string());
        discover(addr, &client).await;
        let mut call = client.call(&series_request(), None).await.unwrap().unwrap();
        assert!(call.message().await.unwrap().is_some());
        drop(call);
        let cancelled = "grpc_method=\"Series\",grpc_code=\"Cancelled\"} 1";
        let mut text = String::new();
        for _ in 0..100 {
            text.clear();
            prometheus_client::encoding::text::encode(&mut text, &registry).unwrap();
            if text.contains(cancelled) {
                break;
            }
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
        assert!(text.contains(cancelled), "{text}");
        assert_eq!(client.idle_connections(), 0);
        let mut call = client.call(&series_request(), None).await.unwrap().unwrap();
        assert_eq!(framed_messages(&mut call).await.1, tonic::Code::Ok);
    }

    #[test]
    fn grpc_timeouts_parse() {
        let h = |v: &str| {
            let mut m = http::HeaderMap::new();
            m.insert("grpc-timeout", v.parse().unwrap());
            grpc_timeout(&m)
        };
        assert_eq!(h("5S"), Some(Duration::from_secs(5)));
        assert_eq!(h("120000m"), Some(Duration::from_secs(120)));
        assert_eq!(h("2H"), Some(Duration::from_secs(7200)));
        assert_eq!(h("7u"), Some(Duration::from_micros(7)));
        assert_eq!(h("S"), None);
        assert_eq!(h("123456789S"), None);
        assert_eq!(h("5x"), None);
        assert_eq!(grpc_timeout(&http::HeaderMap::new()), None);
    }
}
