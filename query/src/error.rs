//! The query crate's error type, mapped onto Prometheus's `errorType`s.

/// Errors of PromQL parsing, planning and execution.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    /// The expression does not parse or does not type-check (Prometheus `bad_data`, HTTP 400).
    /// The message carries the parser's text including the position.
    #[error("{0}")]
    BadData(String),
    /// The query failed while running (Prometheus `execution`, HTTP 422), e.g.
    /// "vector cannot contain metrics with the same labelset" or many-to-many matching.
    #[error("{0}")]
    Execution(String),
    /// The query ran out of time (`timeout`, HTTP 503). Message: "query timed out in <phase>".
    #[error("{0}")]
    Timeout(String),
    /// The query was cancelled (`canceled`, HTTP 422/499 as Prometheus does).
    #[error("{0}")]
    Canceled(String),
    /// Too many samples loaded (Prometheus `execution` with its text
    /// "query processing would load too many samples into memory in <phase>").
    #[error("{0}")]
    TooManySamples(String),
    /// A request limit was exceeded (e.g. the StoreAPI's `--store.limits.request-series`; gRPC
    /// `ResourceExhausted`). The message names the limit and the flag setting it.
    #[error("{0}")]
    LimitExceeded(String),
    /// A storage error.
    #[error("storage: {0}")]
    Storage(#[from] engine::Error),
    /// Anything else (`internal`, HTTP 500).
    #[error("internal: {0}")]
    Internal(String),
}

impl Error {
    /// The Prometheus HTTP API `errorType` for this error.
    pub fn error_type(&self) -> &'static str {
        match self {
            Error::BadData(_) => "bad_data",
            Error::Execution(_) | Error::TooManySamples(_) | Error::LimitExceeded(_) => "execution",
            Error::Timeout(_) => "timeout",
            Error::Canceled(_) => "canceled",
            Error::Storage(_) | Error::Internal(_) => "internal",
        }
    }
}

impl From<datafusion::error::DataFusionError> for Error {
    fn from(e: datafusion::error::DataFusionError) -> Self {
        // Errors raised by our own operators travel through DataFusion as External errors.
        match e {
            datafusion::error::DataFusionError::External(inner) => match inner.downcast::<Error>() {
                Ok(q) => *q,
                Err(other) => Error::Internal(other.to_string()),
            },
            other => Error::Internal(other.to_string()),
        }
    }
}

/// Result alias of the query crate.
pub type Result<T, E = Error> = std::result::Result<T, E>;
