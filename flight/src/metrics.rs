//! The Flight SQL server's metrics: statements by result, their duration and the rows streamed.

use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::histogram::{Histogram, exponential_buckets};
use prometheus_client::registry::Registry;

use crate::error::Error;

/// Counters of the Flight SQL service; clones share them.
#[derive(Debug, Clone)]
pub struct FlightSqlMetrics {
    statements: Family<[(&'static str, &'static str); 1], Counter>,
    rows: Counter,
    duration: Histogram,
}

impl Default for FlightSqlMetrics {
    fn default() -> Self {
        FlightSqlMetrics {
            statements: Family::default(),
            rows: Counter::default(),
            duration: Histogram::new(exponential_buckets(0.005, 4.0, 10)),
        }
    }
}

impl FlightSqlMetrics {
    /// Creates the metrics and registers them: `flight_sql_statements{result}` (`success`,
    /// `bad_request`, `forbidden`, `timeout`, `memory`, `error`), `flight_sql_rows_streamed`,
    /// `flight_sql_statement_duration_seconds` (successful statements, planning to last batch).
    pub fn register(registry: &mut Registry) -> Self {
        let m = FlightSqlMetrics::default();
        registry.register("flight_sql_statements", "Flight SQL statements by result", m.statements.clone());
        registry.register("flight_sql_rows_streamed", "Result rows streamed to Flight SQL clients", m.rows.clone());
        registry.register(
            "flight_sql_statement_duration_seconds",
            "Duration of successful Flight SQL statements, planning to last batch",
            m.duration.clone(),
        );
        m
    }

    pub(crate) fn rows_streamed(&self, n: usize) {
        self.rows.inc_by(n as u64);
    }

    pub(crate) fn statement_done(&self, seconds: f64) {
        self.statements.get_or_create(&[("result", "success")]).inc();
        self.duration.observe(seconds);
    }

    pub(crate) fn statement_failed(&self, e: &Error) {
        let result = match e.to_status().code() {
            tonic::Code::InvalidArgument => "bad_request",
            tonic::Code::PermissionDenied => "forbidden",
            tonic::Code::DeadlineExceeded => "timeout",
            tonic::Code::ResourceExhausted => "memory",
            _ => "error",
        };
        self.statements.get_or_create(&[("result", result)]).inc();
    }
}
