//! Strata's PromQL engine: promql-parser AST planned into DataFusion logical plans with Strata's
//! extension nodes, executed as DataFusion physical plans over an engine `SeriesSource`.

pub mod error;
pub mod value;

pub use error::{Error, Result};
pub use value::{QueryResult, Sample, Series, Value};
