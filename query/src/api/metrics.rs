//! The API's own health metrics (requests by handler and status code, request durations, queries
//! running and queued), registered into the process's `prometheus-client` registry.

use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::gauge::Gauge;
use prometheus_client::metrics::histogram::{Histogram, exponential_buckets};
use prometheus_client::registry::Registry;

type HandlerCode = [(&'static str, String); 2];
type Handler = [(&'static str, String); 1];

fn duration_histogram() -> Histogram {
    // 1 ms .. about 2 minutes.
    Histogram::new(exponential_buckets(0.001, 4.0, 10))
}

/// Metrics of the HTTP API. Cheap to clone (the metrics are shared).
#[derive(Debug, Clone)]
pub struct ApiMetrics {
    requests: Family<HandlerCode, Counter>,
    durations: Family<Handler, Histogram, fn() -> Histogram>,
    running: Gauge,
    queued: Gauge,
}

impl ApiMetrics {
    /// Creates the metrics and registers them in `registry` (names `http_requests`,
    /// `http_request_duration_seconds`, `queries_running`, `queries_queued`, under the
    /// registry's prefix).
    pub fn register(registry: &mut Registry) -> Self {
        let m = ApiMetrics {
            requests: Family::default(),
            durations: Family::new_with_constructor(duration_histogram),
            running: Gauge::default(),
            queued: Gauge::default(),
        };
        registry.register("http_requests", "HTTP API requests by handler and status code", m.requests.clone());
        registry.register(
            "http_request_duration_seconds",
            "HTTP API request durations by handler",
            m.durations.clone(),
        );
        registry.register("queries_running", "PromQL queries executing now", m.running.clone());
        registry.register(
            "queries_queued",
            "PromQL queries waiting for a slot (--query.max-concurrent)",
            m.queued.clone(),
        );
        m
    }

    /// Metrics that are registered nowhere (tests, embedding without `/metrics`).
    pub fn unregistered() -> Self {
        Self::register(&mut Registry::default())
    }

    /// Records one finished request.
    pub fn observe(&self, handler: &'static str, code: u16, seconds: f64) {
        self.requests.get_or_create(&[("handler", handler.to_string()), ("code", code.to_string())]).inc();
        self.durations.get_or_create(&[("handler", handler.to_string())]).observe(seconds);
    }

    /// Requests counted so far for `handler` with status `code`.
    pub fn requests(&self, handler: &'static str, code: u16) -> u64 {
        self.requests.get_or_create(&[("handler", handler.to_string()), ("code", code.to_string())]).get()
    }

    pub(crate) fn running(&self) -> &Gauge {
        &self.running
    }

    pub(crate) fn queued(&self) -> &Gauge {
        &self.queued
    }
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]
    use super::*;

    #[test]
    fn exposition() {
        let mut reg = Registry::with_prefix("strata");
        let m = ApiMetrics::register(&mut reg);
        m.observe("/api/v1/query", 200, 0.002);
        m.observe("/api/v1/query", 200, 0.5);
        m.observe("/api/v1/query", 400, 0.001);
        assert_eq!(m.requests("/api/v1/query", 200), 2);
        let mut text = String::new();
        prometheus_client::encoding::text::encode(&mut text, &reg).unwrap();
        assert!(text.contains(r#"strata_http_requests_total{handler="/api/v1/query",code="200"} 2"#), "{text}");
        assert!(text.contains(r#"strata_http_request_duration_seconds_count{handler="/api/v1/query"} 3"#), "{text}");
        assert!(text.contains("strata_queries_running 0"), "{text}");
    }
}
