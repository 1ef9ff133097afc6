//! The engine's error type. Every message names the input at fault (file, block, label, offset).

use std::path::PathBuf;

/// Errors of the storage engine.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    /// A label matcher's regular expression does not compile.
    #[error("invalid regular expression in matcher for label {label:?}: {source}")]
    BadRegex {
        /// Label the matcher applies to.
        label: String,
        /// The regex compiler's complaint.
        #[source]
        source: Box<regex::Error>,
    },
    /// A label set breaks the rules (empty name, duplicate name, ...).
    #[error("invalid label set {labels}: {reason}")]
    BadLabels {
        /// The label set, printed like Prometheus does.
        labels: String,
        /// What is wrong with it.
        reason: String,
    },
    /// A block's meta.json cannot be parsed or is inconsistent.
    #[error("bad meta.json at {path}: {reason}")]
    BadMeta {
        /// Object path of the meta.json.
        path: String,
        /// What is wrong with it.
        reason: String,
    },
    /// A block's data file is not what format v1 says it must be.
    #[error("bad block file {path}: {reason}")]
    BadBlockFile {
        /// Object path of the file.
        path: String,
        /// What is wrong with it.
        reason: String,
    },
    /// A configuration (relabel rules, ...) cannot be used.
    #[error("bad configuration in {origin}: {reason}")]
    BadConfig {
        /// The flag or file the configuration came from.
        origin: String,
        /// What is wrong with it.
        reason: String,
    },
    /// The objstore YAML cannot be used.
    #[error("bad object storage config {path}: {reason}")]
    BadObjstoreConfig {
        /// The config file (or `<inline>`).
        path: PathBuf,
        /// What is wrong with it.
        reason: String,
    },
    /// Input samples handed to a writer are out of order or otherwise unusable.
    #[error("bad input for block {block}: {reason}")]
    BadInput {
        /// ULID of the block being written.
        block: String,
        /// What is wrong with the input.
        reason: String,
    },
    /// An object storage operation failed.
    #[error("object storage {op} {path}: {source}")]
    ObjectStore {
        /// The operation (get, put, list, ...).
        op: &'static str,
        /// The object path.
        path: String,
        /// The underlying error.
        #[source]
        source: Box<object_store::Error>,
    },
    /// Reading or writing Parquet failed.
    #[error("parquet {path}: {source}")]
    Parquet {
        /// The file.
        path: String,
        /// The underlying error.
        #[source]
        source: Box<parquet::errors::ParquetError>,
    },
    /// An Arrow operation failed.
    #[error("arrow ({context}): {source}")]
    Arrow {
        /// What was being done.
        context: String,
        /// The underlying error.
        #[source]
        source: Box<arrow::error::ArrowError>,
    },
    /// DataFusion failed.
    #[error("datafusion ({context}): {source}")]
    DataFusion {
        /// What was being done.
        context: String,
        /// The underlying error.
        #[source]
        source: Box<datafusion::error::DataFusionError>,
    },
    /// A chunk's bytes are not a valid chunk of its encoding.
    #[error("bad chunk {chunk}: {reason}")]
    BadChunk {
        /// Which chunk (its size, sample count, or where it came from).
        chunk: String,
        /// What is wrong with it.
        reason: String,
    },
    /// The write-ahead log cannot be read, written or is closed.
    #[error("write-ahead log {path} at offset {offset}: {reason}")]
    Wal {
        /// The WAL segment file (or directory).
        path: PathBuf,
        /// Byte offset in the segment (0 when not applicable).
        offset: u64,
        /// What went wrong.
        reason: String,
    },
    /// The in-memory head cannot do what was asked (bad options, corrupt in-memory chunk, ...).
    #[error("head at {dir}: {reason}")]
    Head {
        /// The head's directory.
        dir: PathBuf,
        /// What went wrong.
        reason: String,
    },
    /// A remote series source (e.g. a StoreAPI endpoint) failed or answered something unusable.
    #[error("{endpoint}: {reason}")]
    Remote {
        /// The remote source (its address, or a description).
        endpoint: String,
        /// What went wrong, as the source or the transport reported it.
        reason: String,
    },
    /// Local I/O failed.
    #[error("i/o on {path}: {source}")]
    Io {
        /// The local path.
        path: PathBuf,
        /// The underlying error.
        #[source]
        source: std::io::Error,
    },
}

/// Result alias of the engine.
pub type Result<T, E = Error> = std::result::Result<T, E>;

impl Error {
    /// Wraps an object store error with the operation and path.
    pub fn object_store(op: &'static str, path: impl ToString, source: object_store::Error) -> Self {
        Error::ObjectStore { op, path: path.to_string(), source: Box::new(source) }
    }
    /// Wraps a Parquet error with the file it concerns.
    pub fn parquet(path: impl ToString, source: parquet::errors::ParquetError) -> Self {
        Error::Parquet { path: path.to_string(), source: Box::new(source) }
    }
    /// Wraps an Arrow error with a context string.
    pub fn arrow(context: impl ToString, source: arrow::error::ArrowError) -> Self {
        Error::Arrow { context: context.to_string(), source: Box::new(source) }
    }
    /// Wraps a DataFusion error with a context string.
    pub fn datafusion(context: impl ToString, source: datafusion::error::DataFusionError) -> Self {
        Error::DataFusion { context: context.to_string(), source: Box::new(source) }
    }
}
