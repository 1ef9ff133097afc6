//! Query results: the four PromQL value types, as the HTTP API and the test runner consume them.

use engine::Labels;

/// One float sample of an instant vector.
#[derive(Debug, Clone, PartialEq)]
pub struct Sample {
    /// Series labels (the metric name dropped where PromQL drops it).
    pub labels: Labels,
    /// Timestamp (ms).
    pub t: i64,
    /// Value.
    pub v: f64,
}

/// One series of a range vector / matrix.
#[derive(Debug, Clone, PartialEq)]
pub struct Series {
    /// Series labels.
    pub labels: Labels,
    /// (timestamp ms, value) points sorted by time.
    pub points: Vec<(i64, f64)>,
}

/// The value a query evaluates to.
#[derive(Debug, Clone, PartialEq)]
pub enum Value {
    /// A scalar at a time.
    Scalar {
        /// Timestamp (ms).
        t: i64,
        /// Value.
        v: f64,
    },
    /// A string at a time.
    String {
        /// Timestamp (ms).
        t: i64,
        /// Value.
        v: String,
    },
    /// An instant vector (instant queries).
    Vector(Vec<Sample>),
    /// A range vector (instant query of a range selector) or a range query's result.
    Matrix(Vec<Series>),
}

/// A finished query: its value plus Prometheus-style warnings and infos.
#[derive(Debug, Clone, PartialEq)]
pub struct QueryResult {
    /// The result value.
    pub value: Value,
    /// Warnings (e.g. partial data).
    pub warnings: Vec<String>,
    /// Infos (e.g. "metric might not be a counter").
    pub infos: Vec<String>,
}
