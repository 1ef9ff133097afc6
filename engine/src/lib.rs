//! Strata's storage engine.
//!
//! Owns labels and matchers ([`labels`]), the block format (`meta.json` in [`meta`], Parquet files),
//! the bucket (object storage), and the read contract [`SeriesSource`] with its implementations.
//! It knows nothing of PromQL, HTTP or gRPC.

pub mod aggr;
pub mod bucket;
pub mod bucket_source;
pub mod chunkenc;
pub mod dedup;
pub mod disk_cache;
pub mod duration;
mod encode;
pub mod error;
pub mod exec;
pub mod format;
pub mod gofloat;
pub mod head;
pub mod labels;
pub mod merge;
pub mod meta;
mod objstore;
pub mod reader;
pub mod relabel;
pub mod rewrite;
pub mod source;
pub mod sql;
#[doc(hidden)]
pub mod testkit;
pub mod values;
pub mod verify;
pub mod wal;
pub mod writer;

pub use aggr::{AggrRow, AggrSeries, Aggregate};
pub use bucket::Bucket;
pub use bucket_source::BucketSource;
pub use error::{Error, Result};
pub use head::{AppendReport, Head, HeadOptions, HeadStats};
pub use labels::{Label, Labels, MatchOp, Matcher};
pub use merge::{MergedSource, interleave_series_streams, merge_series_streams};
pub use meta::BlockMeta;
pub use reader::BlockReader;
pub use source::{DataRange, MemSource, Relabel, SelectHints, SelectRequest, SeriesBatch, SeriesSource, SeriesStream};
pub use writer::{BlockWriter, BlockWriterOptions};
