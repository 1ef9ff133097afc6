//! The ingest crate's error type.
//!
//! Every message names the input at fault: the file and byte offset for on-disk corruption, the
//! series (labels and index ref) when a chunk of that series cannot be read or decoded.

use std::path::PathBuf;

/// Errors of the ingest crate.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    /// Local I/O failed (open, read, mmap, list).
    #[error("i/o on {path}: {source}")]
    Io {
        /// The local path.
        path: PathBuf,
        /// The underlying error.
        #[source]
        source: std::io::Error,
    },
    /// A path handed to the reader is not what it must be (not a directory, ...).
    #[error("{path}: {reason}")]
    BadPath {
        /// The path.
        path: PathBuf,
        /// What is wrong with it.
        reason: String,
    },
    /// A file a block must have is missing.
    #[error("block {block}: missing {what} ({path})")]
    MissingFile {
        /// The block directory.
        block: PathBuf,
        /// Which file or directory (`meta.json`, `index`, `chunks/`).
        what: &'static str,
        /// The path that was looked for.
        path: PathBuf,
    },
    /// An engine operation failed: parsing a block's meta.json, writing or listing Strata blocks.
    /// The engine's message names the file or object at fault.
    #[error(transparent)]
    Engine(#[from] engine::Error),
    /// A file's bytes do not follow the TSDB format (bad magic, truncated, offset past the end,
    /// malformed varint, ...).
    #[error("corrupt {path} at offset {offset}: {reason}")]
    Corrupt {
        /// The file.
        path: PathBuf,
        /// Byte offset in the file where the problem was found.
        offset: u64,
        /// What is wrong.
        reason: String,
    },
    /// A stored CRC32C does not match the bytes it covers.
    #[error(
        "corrupt {path} at offset {offset}: CRC32C mismatch in {what} (stored {stored:#010x}, computed {computed:#010x})"
    )]
    Checksum {
        /// The file.
        path: PathBuf,
        /// Byte offset of the checksummed record.
        offset: u64,
        /// Which record (`symbol table`, `series entry`, `chunk`, ...).
        what: &'static str,
        /// CRC stored in the file.
        stored: u32,
        /// CRC computed over the bytes.
        computed: u32,
    },
    /// The index is in a format version this reader does not read (v1 blocks from Prometheus 2.0).
    #[error("index {path}: unsupported index format version {version} (only versions 2 and 3 are read)")]
    UnsupportedIndexVersion {
        /// The index file.
        path: PathBuf,
        /// The version byte found.
        version: u8,
    },
    /// A chunk uses an encoding this reader does not decode (native histograms, XOR2, ...).
    #[error(
        "series {series} (ref {series_ref}): chunk at {path} offset {offset} has unsupported encoding {encoding} ({name})"
    )]
    UnsupportedEncoding {
        /// The series, printed like Prometheus does.
        series: String,
        /// The series' index ref.
        series_ref: u64,
        /// The chunk segment file.
        path: PathBuf,
        /// Offset of the chunk in the segment file.
        offset: u64,
        /// The encoding byte.
        encoding: u8,
        /// A readable name of the encoding.
        name: &'static str,
    },
    /// Reading or decoding a chunk of a series failed; `source` names the file and offset.
    #[error("series {series} (ref {series_ref}): {source}")]
    InSeries {
        /// The series, printed like Prometheus does.
        series: String,
        /// The series' index ref.
        series_ref: u64,
        /// What went wrong.
        #[source]
        source: Box<Error>,
    },
    /// A remote-write body (compressed, or its decompressed message) is larger than allowed.
    #[error("remote write: {what} is {size} bytes, over the limit of {limit} bytes (--receive.max-body-size)")]
    BodyTooLarge {
        /// Which size: `request body` or `decompressed message`.
        what: &'static str,
        /// The size found (a lower bound when the body was cut off at the limit).
        size: u64,
        /// The limit.
        limit: u64,
    },
    /// A remote-write body is not valid snappy block format.
    #[error("remote write: body is not snappy block-compressed data: {reason}")]
    BadSnappy {
        /// The decoder's message.
        reason: String,
    },
    /// A Prometheus remote-read call failed: transport, HTTP status, or an undecodable answer.
    #[error("remote read from {url}: {reason}")]
    RemoteRead {
        /// The remote-read URL.
        url: String,
        /// What went wrong.
        reason: String,
    },
    /// A remote-write message is not a valid `prometheus.WriteRequest`.
    #[error("remote write: body is not a valid prometheus.WriteRequest protobuf: {reason}")]
    BadProtobuf {
        /// The decoder's message (names the field at fault).
        reason: String,
    },
    /// A series of a remote-write request is invalid (label names, order, metric name); the
    /// series is dropped, the others of the request are kept.
    #[error("remote write: series {series}: {reason}")]
    InvalidSeries {
        /// The series as received, printed like Prometheus does.
        series: String,
        /// What is wrong.
        reason: String,
    },
    /// The tenant named by the tenant header cannot be used.
    #[error("tenant {tenant:?}: {reason}")]
    BadTenant {
        /// The tenant as received.
        tenant: String,
        /// What is wrong.
        reason: String,
    },
    /// The hashrings file cannot be used.
    #[error("hashrings file {path}: {reason}")]
    Hashring {
        /// The file.
        path: String,
        /// What is wrong.
        reason: String,
    },
    /// No hashring serves a tenant (every ring lists tenants and none lists this one).
    #[error("tenant {tenant:?}: no hashring serves this tenant")]
    NoHashring {
        /// The tenant.
        tenant: String,
    },
    /// The hashring of a tenant has fewer endpoints than the replication factor.
    #[error(
        "tenant {tenant:?}: insufficient nodes in the hashring; have {have}, want {want} (--receive.replication-factor)"
    )]
    InsufficientNodes {
        /// The tenant.
        tenant: String,
        /// Endpoints in the ring.
        have: u64,
        /// Endpoints needed.
        want: u64,
    },
    /// The synthetic data generator was given a spec it cannot generate.
    #[error("data generator: {reason}")]
    BadGenSpec {
        /// What is wrong (names the flag).
        reason: String,
    },
    /// A helper process of the tests or benchmarks (a peer, promtool) failed to start, answer or
    /// stop.
    #[error("{what}: {reason}")]
    Process {
        /// The command or what was being done.
        what: String,
        /// What went wrong (with the process's log when there is one).
        reason: String,
    },
    /// A call to the Prometheus beside the sidecar failed: transport, HTTP status, or an answer
    /// that is not what the API documents.
    #[error("prometheus {url}: {reason}")]
    Prometheus {
        /// The URL called.
        url: String,
        /// What went wrong.
        reason: String,
    },
    /// The sidecar cannot run (no external labels, Prometheus not ready in time).
    #[error("sidecar: {reason}")]
    Sidecar {
        /// Why.
        reason: String,
    },
    /// The shipper cannot sync the TSDB directory.
    #[error("shipper of {dir}: {reason}")]
    Shipper {
        /// The TSDB directory.
        dir: PathBuf,
        /// Why.
        reason: String,
    },
    /// Forwarding a remote-write request to another receiver failed.
    #[error("forwarding to receiver {endpoint}: {reason}")]
    Forward {
        /// The endpoint (`host:port`).
        endpoint: String,
        /// What went wrong (network error or the peer's status and message).
        reason: String,
    },
}

/// Result alias of the ingest crate.
pub type Result<T, E = Error> = std::result::Result<T, E>;

impl Error {
    /// Builds a [`Error::Corrupt`].
    pub(crate) fn corrupt(path: impl Into<PathBuf>, offset: u64, reason: impl Into<String>) -> Self {
        Error::Corrupt { path: path.into(), offset, reason: reason.into() }
    }

    /// Builds an [`Error::Io`].
    pub(crate) fn io(path: impl Into<PathBuf>, source: std::io::Error) -> Self {
        Error::Io { path: path.into(), source }
    }

    /// True when this error (or the one it wraps) is an unsupported chunk encoding: the block holds
    /// data this reader cannot convert, as opposed to being corrupt.
    pub fn is_unsupported_encoding(&self) -> bool {
        match self {
            Error::UnsupportedEncoding { .. } => true,
            Error::InSeries { source, .. } => source.is_unsupported_encoding(),
            _ => false,
        }
    }
}
