//! Strata's Arrow Flight SQL service: SQL over the metrics of a bucket for notebooks (ADBC,
//! pyarrow, pandas, Polars) and BI tools.
//!
//! ```text
//!   bucket ──► SqlCatalog (tables: samples, series, one per metric; refreshed on new blocks)
//!                 └─► StrataFlightSql (arrow-flight's FlightSqlService) ──► server::routes ─► gRPC
//! ```
//!
//! [`tables`] shapes the tables (views over `engine::sql`'s block files, filters pushed down),
//! [`catalog`] holds them and runs statements read-only under limits, [`service`] speaks Flight
//! SQL, [`server`] adds authentication. Extra table functions (PromQL's `promql(...)`, which lives
//! in `query`) are handed in by the caller: this crate does not plan PromQL.

pub mod catalog;
pub mod error;
pub mod head;
mod labels_map;
pub mod metrics;
mod series_join;
pub mod server;
pub mod service;
pub mod tables;

pub use catalog::{SqlCatalog, StatementLimits, TableFunction};
pub use error::{Error, Result};
pub use head::{HeadPart, RecentHeads};
pub use metrics::FlightSqlMetrics;
pub use service::StrataFlightSql;
pub use tables::BlockFilter;
