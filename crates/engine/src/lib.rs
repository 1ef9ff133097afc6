//! Strata's storage engine.
//!
//! Owns labels and matchers ([`labels`]), the block format (`meta.json` in [`meta`], Parquet files),
//! the bucket (object storage), and the read contract [`SeriesSource`] with its implementations.
//! It knows nothing of PromQL, HTTP or gRPC.

pub mod error;
pub mod labels;
pub mod meta;
pub mod source;

pub use error::{Error, Result};
pub use labels::{Label, Labels, MatchOp, Matcher};
pub use meta::BlockMeta;
pub use source::{MemSource, SelectHints, SelectRequest, SeriesBatch, SeriesSource, SeriesStream};
