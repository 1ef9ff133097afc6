//! Strata ingest: getting data into Strata from elsewhere.
//!
//! Today: the native reader of Prometheus TSDB blocks ([`tsdb`]) and the converter of those blocks
//! into Strata blocks ([`convert`]); Prometheus remote write 1.0 decoding ([`remote_write`]), a Prometheus remote read client
//! ([`remote_read`]) and the receive service ([`receive`]) with Thanos-style hashrings ([`hashring`]) and its gRPC side
//! ([`receive_grpc`]: `thanos.WriteableStore`, forwarding to peers); the [`sidecar`] beside a
//! Prometheus (shipper of its blocks, remote-read source of its recent data). Errors of the whole crate are [`Error`].
//!
//! Also the synthetic fleet data generator ([`datagen`]) behind `strata tools gen`, the benchmarks and
//! the end-to-end tests.

pub mod convert;
pub mod datagen;
pub mod error;
pub mod hashring;
pub mod own_head;
pub mod receive;
pub mod receive_grpc;
pub mod remote_read;
pub mod remote_write;
pub mod sidecar;
#[doc(hidden)]
pub mod testkit;
pub mod tsdb;

pub use error::{Error, Result};
pub use tsdb::{Block, BlockCounts, TsdbSeries, list_blocks};
