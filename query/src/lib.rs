//! Strata's PromQL engine: promql-parser AST planned into DataFusion logical plans with Strata's
//! extension nodes, executed as DataFusion physical plans over an engine `SeriesSource`.

mod ahead;
pub mod api;
mod engine;
pub mod error;
mod plan;
mod planner;
pub mod rules;
pub mod sql;
pub mod storeapi;
pub mod value;

pub use engine::{Engine, EngineOptions};
pub use error::{Error, Result};
pub use value::{QueryResult, Sample, Series, Value};
