//! Strata ingest: getting data into Strata from elsewhere.
//!
//! Today: the native reader of Prometheus TSDB blocks ([`tsdb`]) and the converter of those blocks
//! into Strata blocks ([`convert`]); remote write, receive and the sidecar come later. Errors of the whole crate are [`Error`].

pub mod convert;
pub mod error;
pub mod tsdb;

pub use error::{Error, Result};
pub use tsdb::{Block, BlockCounts, TsdbSeries, list_blocks};
