//! Series frames: `thanos.Store/Series` between two Strata components without HTTP/2. The request
//! and every answer message are the StoreAPI's own protobuf messages, length-prefixed on a plain
//! TCP connection that carries one call at a time; Thanos peers never see it.
//!
//! ```text
//!   querier                                   store (the same --grpc-address as its gRPC)
//!   Info over gRPC ──────────────────────────► answer headers carry `strata-series-frames: 1`
//!   dial (or an idle pooled connection) ─────► first byte 0, not an HTTP/2 preface: frames
//!   MAGIC, request ──────────────────────────► MAGIC back, then the Series answer:
//!   ◄── message | message | ... | end (OK) or error (gRPC code + message)
//!   the connection goes back to the pool once the answer ended
//! ```
//!
//! Wire format (integers big-endian). The client opens a connection with [`MAGIC`] (16 bytes) and
//! the server answers with the same 16 bytes before its first frame. Then frames, each
//! `length: u32` (of what follows), `kind: u8`, payload:
//!
//! | direction | kind | payload |
//! |---|---|---|
//! | client → server | 1 `request` | `tenant_length: u16`, the tenant (UTF-8, `thanos-tenant`; empty: none), a `thanos.SeriesRequest` |
//! | server → client | 1 `message` | a `thanos.SeriesResponse` |
//! | server → client | 2 `end` | nothing: the answer is complete (gRPC status OK) |
//! | server → client | 3 `error` | `code: u32` (a gRPC status code), the message (UTF-8): the answer ends with this status |
//!
//! After `end` or `error` the connection takes the next request. A client that abandons an answer
//! closes the connection; the server stops producing it. Why it exists: one gRPC round trip with
//! no data in it costs ~0.25 ms of CPU on a small machine (HTTP/2 framing, flow control and
//! tonic's layers on both sides), as much as a whole small query; the frames carry the same
//! messages without that (docs/benchmarks.md, "Series frames"). Everything else (Info,
//! LabelNames, LabelValues, and every call from or to a Thanos component) stays gRPC.
//!
//! The querier uses frames only with an endpoint whose latest Info answer carried
//! [`ADVERTISE_HEADER`]; a connection whose first 16 bytes back are not [`MAGIC`] (a gRPC-aware
//! proxy in between, a component replaced) turns frames off for the endpoint until its next Info
//! says otherwise, and the call goes over gRPC.

use std::pin::Pin;
use std::sync::Arc;
use std::sync::Mutex;
use std::sync::atomic::{AtomicBool, Ordering};

use futures::{FutureExt, Stream, StreamExt};
use proto::prost::Message;
use proto::thanos::store_server::Store;
use proto::thanos::{SeriesRequest, SeriesResponse};
use tokio::io::{AsyncBufReadExt, AsyncReadExt, AsyncWriteExt, BufReader};
use tokio::net::TcpStream;
use tokio::net::tcp::{OwnedReadHalf, OwnedWriteHalf};
use tokio::sync::watch;
use tonic::{Code, Status};
use tracing::Instrument;

/// The first bytes of a frames connection, both ways. Its first byte (0) can never begin the
/// HTTP/2 preface (`PRI * ...`), which is how the server tells the two apart.
pub const MAGIC: &[u8; 16] = b"\0strata-series/1";

/// Answer header of `thanos.info.Info/Info` on a port that serves frames; its value is `1`.
pub const ADVERTISE_HEADER: &str = "strata-series-frames";

const KIND_REQUEST: u8 = 1;
const KIND_MESSAGE: u8 = 1;
const KIND_END: u8 = 2;
const KIND_ERROR: u8 = 3;

/// Largest frame either side accepts: Thanos's gRPC message limit (`math.MaxInt32`).
const MAX_FRAME: u32 = i32::MAX as u32;
/// Answer bytes gathered before they are written while the answer is still coming at once.
const WRITE_CHUNK: usize = 64 << 10;
/// Idle connections kept per endpoint.
pub(crate) const MAX_IDLE: usize = 16;

/// An answer's message stream, as the StoreAPI server produces it.
pub type SeriesFrames = Pin<Box<dyn Stream<Item = Result<SeriesResponse, Status>> + Send>>;

/// The `thanos.Store` service whose `Series` a port serves over frames as well as over gRPC.
pub type FramedStore = Arc<dyn Store<SeriesStream = SeriesFrames>>;

// ---------------------------------------------------------------------------------------------
// Server side

/// Serves one frames connection (its first byte already seen to be [`MAGIC`]'s) until the client
/// closes it, breaks the protocol, or the server stops (`stop` true; a call in flight finishes).
pub(crate) async fn serve_connection(tcp: TcpStream, store: FramedStore, mut stop: watch::Receiver<bool>) {
    let (rd, mut wr) = tcp.into_split();
    let mut rd = BufReader::new(rd);
    let mut magic = [0u8; 16];
    let greeted = tokio::select! {
        r = rd.read_exact(&mut magic) => r.is_ok() && &magic == MAGIC,
        _ = stop.wait_for(|&s| s) => return,
    };
    if !greeted {
        tracing::debug!("Series frames connection: not Strata's greeting; closed");
        return;
    }
    // The greeting back leaves with the first answer.
    let mut out = MAGIC.to_vec();
    loop {
        let frame = tokio::select! {
            f = read_frame(&mut rd) => f,
            _ = stop.wait_for(|&s| s) => return,
        };
        let (kind, body) = match frame {
            Ok(Some(f)) => f,
            Ok(None) => return,
            Err(e) => {
                tracing::debug!(error = %e, "Series frames connection: bad request frame; closed");
                return;
            }
        };
        if kind != KIND_REQUEST {
            tracing::debug!(kind, "Series frames connection: unknown frame kind; closed");
            return;
        }
        let span = tracing::debug_span!("grpc", path = "/thanos.Store/Series", transport = "frames");
        let answered = answer(&store, &body, &mut rd, &mut wr, &mut out).instrument(span).await;
        if !answered {
            return;
        }
    }
}

/// Answers one request; false when the connection is no longer usable (the client went away or
/// broke the protocol).
async fn answer(
    store: &FramedStore,
    body: &[u8],
    rd: &mut BufReader<OwnedReadHalf>,
    wr: &mut OwnedWriteHalf,
    out: &mut Vec<u8>,
) -> bool {
    let frames = match decode_request(body) {
        Ok(request) => store.series(request).await.map(tonic::Response::into_inner),
        Err(s) => Err(s),
    };
    let mut frames = match frames {
        Ok(f) => f,
        Err(s) => {
            push_status(out, &s);
            return write_out(wr, out).await;
        }
    };
    loop {
        let item = match frames.next().now_or_never() {
            Some(item) => item,
            None => {
                // The next message is not ready: what is gathered leaves now, and a client that
                // closes the connection meanwhile stops the answer.
                if !write_out(wr, out).await {
                    return false;
                }
                let mut probe = [0u8; 1];
                tokio::select! {
                    item = frames.next() => item,
                    _ = rd.read(&mut probe) => return false,
                }
            }
        };
        match item {
            Some(Ok(msg)) => push_frame(out, KIND_MESSAGE, &[], &msg),
            Some(Err(s)) => {
                push_status(out, &s);
                return write_out(wr, out).await;
            }
            None => {
                push_head(out, KIND_END, 0);
                return write_out(wr, out).await;
            }
        }
        if out.len() >= WRITE_CHUNK && !write_out(wr, out).await {
            return false;
        }
    }
}

fn decode_request(body: &[u8]) -> Result<tonic::Request<SeriesRequest>, Status> {
    let bad = |what: &str| Status::internal(format!("Series frames: malformed request: {what}"));
    let (len, rest) = body.split_first_chunk::<2>().ok_or_else(|| bad("no tenant length"))?;
    let len = usize::from(u16::from_be_bytes(*len));
    if rest.len() < len {
        return Err(bad("tenant longer than the frame"));
    }
    let (tenant, msg) = rest.split_at(len);
    let tenant = std::str::from_utf8(tenant).map_err(|_| bad("tenant is not UTF-8"))?;
    let msg = SeriesRequest::decode(msg).map_err(|e| bad(&e.to_string()))?;
    let mut request = tonic::Request::new(msg);
    if !tenant.is_empty() {
        let v = tonic::metadata::MetadataValue::try_from(tenant).map_err(|_| bad("tenant is not a header value"))?;
        request.metadata_mut().insert(super::client::TENANT_METADATA, v);
    }
    Ok(request)
}

async fn write_out(wr: &mut OwnedWriteHalf, out: &mut Vec<u8>) -> bool {
    if out.is_empty() {
        return true;
    }
    let r = wr.write_all(out).await;
    out.clear();
    r.is_ok()
}

fn push_head(out: &mut Vec<u8>, kind: u8, payload: usize) {
    // Payloads are bounded by the message limit, far below u32::MAX.
    let len = u32::try_from(payload + 1).unwrap_or(u32::MAX);
    out.extend_from_slice(&len.to_be_bytes());
    out.push(kind);
}

/// A frame of `kind`: `prefix` then `msg` encoded.
fn push_frame(out: &mut Vec<u8>, kind: u8, prefix: &[u8], msg: &impl Message) {
    push_head(out, kind, prefix.len() + msg.encoded_len());
    out.extend_from_slice(prefix);
    // Encoding into a Vec cannot run out of room.
    let _ = msg.encode(out);
}

fn push_status(out: &mut Vec<u8>, s: &Status) {
    let message = s.message().as_bytes();
    push_head(out, KIND_ERROR, 4 + message.len());
    out.extend_from_slice(&(s.code() as u32).to_be_bytes());
    out.extend_from_slice(message);
}

/// The next frame (kind, payload); None at a clean end of the stream before a frame.
async fn read_frame(rd: &mut BufReader<OwnedReadHalf>) -> std::io::Result<Option<(u8, Vec<u8>)>> {
    let mut head = [0u8; 5];
    match rd.read(&mut head[..1]).await? {
        0 => return Ok(None),
        _ => rd.read_exact(&mut head[1..]).await?,
    };
    let len = u32::from_be_bytes([head[0], head[1], head[2], head[3]]);
    if len == 0 || len > MAX_FRAME {
        return Err(std::io::Error::new(std::io::ErrorKind::InvalidData, format!("frame length {len}")));
    }
    // Grown as the bytes arrive: a length alone does not make either side allocate it.
    let want = u64::from(len - 1);
    let mut body = Vec::with_capacity(usize::try_from(want.min(1 << 20)).unwrap_or(0));
    (&mut *rd).take(want).read_to_end(&mut body).await?;
    if body.len() as u64 != want {
        return Err(std::io::Error::new(std::io::ErrorKind::UnexpectedEof, "frame cut short"));
    }
    Ok(Some((head[4], body)))
}

// ---------------------------------------------------------------------------------------------
// Client side

/// Series over frames to one endpoint: whether its Info advertised them, and idle connections.
#[derive(Debug)]
pub struct FramesClient {
    addr: String,
    on: AtomicBool,
    idle: Mutex<Vec<Conn>>,
}

#[derive(Debug)]
struct Conn {
    rd: BufReader<OwnedReadHalf>,
    wr: OwnedWriteHalf,
}

/// One Series answer arriving over frames; its connection goes back to the pool when it ends.
#[derive(Debug)]
pub struct FramesCall {
    conn: Option<Conn>,
    client: Arc<FramesClient>,
}

impl FramesClient {
    /// A client of the endpoint at `addr` (`host:port`), off until [`FramesClient::advertised`]
    /// sees the endpoint's Info headers say it serves frames.
    pub fn new(addr: &str) -> Arc<Self> {
        Arc::new(FramesClient { addr: addr.to_string(), on: AtomicBool::new(false), idle: Mutex::new(Vec::new()) })
    }

    /// Connections waiting for the next call.
    #[cfg(test)]
    pub(crate) fn idle_connections(&self) -> usize {
        self.idle.lock().unwrap_or_else(|p| p.into_inner()).len()
    }

    /// Records what the endpoint's latest Info answer said (its headers).
    pub fn advertised(&self, headers: &tonic::metadata::MetadataMap) {
        let on = headers.get(ADVERTISE_HEADER).is_some_and(|v| v.as_bytes() == b"1");
        if !on {
            self.idle.lock().unwrap_or_else(|p| p.into_inner()).clear();
        }
        self.on.store(on, Ordering::Relaxed);
    }

    /// Sends a Series request over frames when the endpoint serves them: `Ok(None)` when it does
    /// not (the call is for gRPC then), an error status when the endpoint cannot be reached.
    pub async fn call(
        self: &Arc<Self>,
        req: &SeriesRequest,
        tenant: Option<&str>,
    ) -> Result<Option<FramesCall>, Status> {
        if !self.on.load(Ordering::Relaxed) {
            return Ok(None);
        }
        let tenant = tenant.unwrap_or("").as_bytes();
        let tenant_len = u16::try_from(tenant.len())
            .map_err(|_| Status::invalid_argument(format!("tenant of {} bytes is too long", tenant.len())))?;
        // length (4), kind (1), tenant length (2), tenant, message
        let mut request = Vec::with_capacity(7 + tenant.len() + req.encoded_len());
        let mut prefix = tenant_len.to_be_bytes().to_vec();
        prefix.extend_from_slice(tenant);
        push_frame(&mut request, KIND_REQUEST, &prefix, req);
        // A pooled connection the store closed meanwhile fails on first use: then a new one.
        loop {
            let pooled = self.idle.lock().unwrap_or_else(|p| p.into_inner()).pop();
            let Some(mut conn) = pooled else { break };
            if conn.wr.write_all(&request).await.is_ok() && conn.ready().await {
                return Ok(Some(FramesCall { conn: Some(conn), client: Arc::clone(self) }));
            }
        }
        let tcp =
            TcpStream::connect(&self.addr).await.map_err(|e| Status::unavailable(format!("tcp connect error: {e}")))?;
        tcp.set_nodelay(true).map_err(|e| Status::unavailable(format!("tcp connect error: {e}")))?;
        let (rd, wr) = tcp.into_split();
        let mut conn = Conn { rd: BufReader::new(rd), wr };
        let mut greeting = MAGIC.to_vec();
        greeting.extend_from_slice(&request);
        conn.wr.write_all(&greeting).await.map_err(|e| Status::unavailable(format!("send: {e}")))?;
        let mut back = [0u8; 16];
        if conn.rd.read_exact(&mut back).await.is_err() || &back != MAGIC {
            tracing::info!(
                endpoint = %self.addr,
                "endpoint advertised Series frames but did not answer with them; using gRPC until its next Info"
            );
            self.on.store(false, Ordering::Relaxed);
            return Ok(None);
        }
        Ok(Some(FramesCall { conn: Some(conn), client: Arc::clone(self) }))
    }
}

impl Conn {
    /// Whether the answer has begun to arrive (on a pooled connection: the store still serves it).
    async fn ready(&mut self) -> bool {
        matches!(self.rd.fill_buf().await, Ok(b) if !b.is_empty())
    }
}

impl FramesCall {
    /// The answer's next message; None once it ended with OK; its error status otherwise.
    pub async fn message(&mut self) -> Result<Option<SeriesResponse>, Status> {
        let Some(conn) = self.conn.as_mut() else { return Ok(None) };
        let lost = |e: std::io::Error| Status::unavailable(format!("Series frames connection lost: {e}"));
        let (kind, body) = match read_frame(&mut conn.rd).await {
            Ok(Some(f)) => f,
            Ok(None) => {
                self.conn = None;
                return Err(Status::unavailable("Series frames connection closed by the store"));
            }
            Err(e) => {
                self.conn = None;
                return Err(lost(e));
            }
        };
        match kind {
            KIND_MESSAGE => SeriesResponse::decode(body.as_slice())
                .map(Some)
                .map_err(|e| Status::internal(format!("Series frames: malformed message: {e}"))),
            KIND_END => {
                self.release();
                Ok(None)
            }
            KIND_ERROR => {
                let (code, message) = match body.split_first_chunk::<4>() {
                    Some((code, message)) => (
                        Code::from_i32(u32::from_be_bytes(*code) as i32),
                        String::from_utf8_lossy(message).into_owned(),
                    ),
                    None => (Code::Internal, "Series frames: malformed error frame".to_string()),
                };
                self.release();
                Err(Status::new(code, message))
            }
            other => {
                self.conn = None;
                Err(Status::internal(format!("Series frames: unknown frame kind {other}")))
            }
        }
    }

    /// The answer ended: its connection takes the next request.
    fn release(&mut self) {
        if let Some(conn) = self.conn.take() {
            let mut idle = self.client.idle.lock().unwrap_or_else(|p| p.into_inner());
            if idle.len() < MAX_IDLE {
                idle.push(conn);
            }
        }
    }
}
