//! The flight crate's error type and its one mapping to gRPC statuses ([`Error::to_status`]).

use tonic::Status;

/// Errors of the Flight SQL service.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    /// Reading the bucket or its block files failed.
    #[error(transparent)]
    Engine(#[from] engine::Error),
    /// Planning or running a statement failed (bad SQL, unknown table, ...).
    #[error("{context}: {source}")]
    DataFusion {
        /// What was being done (e.g. the statement's first characters).
        context: String,
        /// DataFusion's complaint.
        #[source]
        source: Box<datafusion::error::DataFusionError>,
    },
    /// The statement is not allowed on this read-only server.
    #[error("statement not allowed (Strata's SQL is read-only): {0}")]
    Forbidden(String),
    /// The statement ran longer than `--sql.timeout`.
    #[error("statement exceeded --sql.timeout of {0:?} and was cancelled")]
    Timeout(std::time::Duration),
    /// A request is malformed (unknown prepared statement handle, bad parameters, ...).
    #[error("{0}")]
    BadRequest(String),
    /// Arrow encoding or decoding failed.
    #[error("{context}: {source}")]
    Arrow {
        /// What was being done.
        context: String,
        /// Arrow's complaint.
        #[source]
        source: Box<arrow::error::ArrowError>,
    },
    /// Building a Flight SQL message failed.
    #[error("{context}: {source}")]
    Flight {
        /// What was being done.
        context: String,
        /// arrow-flight's complaint.
        #[source]
        source: Box<arrow_flight::error::FlightError>,
    },
}

/// Result alias of the flight crate.
pub type Result<T, E = Error> = std::result::Result<T, E>;

impl Error {
    /// Wraps a DataFusion error with what was being done.
    pub fn datafusion(context: impl ToString, source: datafusion::error::DataFusionError) -> Self {
        Error::DataFusion { context: context.to_string(), source: Box::new(source) }
    }

    /// Wraps an Arrow error with what was being done.
    pub fn arrow(context: impl ToString, source: arrow::error::ArrowError) -> Self {
        Error::Arrow { context: context.to_string(), source: Box::new(source) }
    }

    /// Wraps an arrow-flight error with what was being done.
    pub fn flight(context: impl ToString, source: arrow_flight::error::FlightError) -> Self {
        Error::Flight { context: context.to_string(), source: Box::new(source) }
    }

    /// The gRPC status a client sees: the message names the statement and the cause.
    pub fn to_status(&self) -> Status {
        use datafusion::error::DataFusionError as D;
        match self {
            Error::Forbidden(_) => Status::permission_denied(self.to_string()),
            Error::Timeout(_) => Status::deadline_exceeded(self.to_string()),
            Error::BadRequest(_) => Status::invalid_argument(self.to_string()),
            Error::DataFusion { source, .. } => match source.find_root() {
                D::ResourcesExhausted(_) => Status::resource_exhausted(format!("{self} (--sql.memory-limit)")),
                D::SQL(..) | D::Plan(_) | D::SchemaError(..) | D::NotImplemented(_) => {
                    Status::invalid_argument(self.to_string())
                }
                _ => Status::internal(self.to_string()),
            },
            Error::Engine(_) | Error::Arrow { .. } | Error::Flight { .. } => Status::internal(self.to_string()),
        }
    }
}

impl From<Error> for Status {
    fn from(e: Error) -> Status {
        e.to_status()
    }
}
