//! The ruler's metrics under Prometheus's names (`prometheus_rule_*`, `prometheus_notifications_*`),
//! registered in a registry without Strata's prefix.

use std::sync::atomic::AtomicU64;

use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::gauge::Gauge;
use prometheus_client::metrics::histogram::{Histogram, exponential_buckets};
use prometheus_client::registry::Registry;

type ByGroup = Family<[(&'static str, String); 1], Counter>;
type GaugeByGroup = Family<[(&'static str, String); 1], Gauge<f64, AtomicU64>>;

/// Rule evaluation and notification metrics. Cheap to clone (shared handles).
#[derive(Debug, Clone)]
pub struct RuleMetrics {
    pub(crate) evaluations: ByGroup,
    pub(crate) failures: ByGroup,
    pub(crate) iterations: ByGroup,
    pub(crate) iterations_missed: ByGroup,
    pub(crate) group_last_duration: GaugeByGroup,
    pub(crate) group_last_eval: GaugeByGroup,
    pub(crate) group_interval: GaugeByGroup,
    pub(crate) group_rules: GaugeByGroup,
    pub(crate) rule_duration: Histogram,
    pub(crate) group_duration: Histogram,
    pub(crate) notifications_sent: Family<[(&'static str, String); 1], Counter>,
    pub(crate) notification_errors: Family<[(&'static str, String); 1], Counter>,
    pub(crate) notifications_dropped: Counter,
    pub(crate) notification_queue_length: Gauge,
    pub(crate) notification_queue_capacity: Gauge,
    pub(crate) config_last_reload_success: Gauge,
    pub(crate) config_last_reload_seconds: Gauge<f64, AtomicU64>,
}

impl Default for RuleMetrics {
    fn default() -> Self {
        RuleMetrics {
            evaluations: Family::default(),
            failures: Family::default(),
            iterations: Family::default(),
            iterations_missed: Family::default(),
            group_last_duration: Family::default(),
            group_last_eval: Family::default(),
            group_interval: Family::default(),
            group_rules: Family::default(),
            rule_duration: Histogram::new(exponential_buckets(0.001, 4.0, 10)),
            group_duration: Histogram::new(exponential_buckets(0.001, 4.0, 10)),
            notifications_sent: Family::default(),
            notification_errors: Family::default(),
            notifications_dropped: Counter::default(),
            notification_queue_length: Gauge::default(),
            notification_queue_capacity: Gauge::default(),
            config_last_reload_success: Gauge::default(),
            config_last_reload_seconds: Gauge::default(),
        }
    }
}

impl RuleMetrics {
    /// Creates the metrics and registers them in `registry` (which should have no prefix).
    pub fn register(registry: &mut Registry) -> Self {
        let m = RuleMetrics::default();
        registry.register(
            "prometheus_rule_evaluations",
            "The total number of rule evaluations.",
            m.evaluations.clone(),
        );
        registry.register(
            "prometheus_rule_evaluation_failures",
            "The total number of rule evaluation failures.",
            m.failures.clone(),
        );
        registry.register(
            "prometheus_rule_group_iterations",
            "The total number of scheduled rule group evaluations, whether executed or missed.",
            m.iterations.clone(),
        );
        registry.register(
            "prometheus_rule_group_iterations_missed",
            "The total number of rule group evaluations missed due to slow rule group evaluation.",
            m.iterations_missed.clone(),
        );
        registry.register(
            "prometheus_rule_group_last_duration_seconds",
            "The duration of the last rule group evaluation.",
            m.group_last_duration.clone(),
        );
        registry.register(
            "prometheus_rule_group_last_evaluation_timestamp_seconds",
            "The timestamp of the last rule group evaluation in seconds.",
            m.group_last_eval.clone(),
        );
        registry.register(
            "prometheus_rule_group_interval_seconds",
            "The interval of a rule group.",
            m.group_interval.clone(),
        );
        registry.register("prometheus_rule_group_rules", "The number of rules.", m.group_rules.clone());
        registry.register(
            "prometheus_rule_evaluation_duration_seconds",
            "The duration for a rule to execute.",
            m.rule_duration.clone(),
        );
        registry.register(
            "prometheus_rule_group_duration_seconds",
            "The duration of rule group evaluations.",
            m.group_duration.clone(),
        );
        registry.register(
            "prometheus_notifications_sent",
            "Total number of alerts sent.",
            m.notifications_sent.clone(),
        );
        registry.register(
            "prometheus_notifications_errors",
            "Total number of sent alerts affected by errors.",
            m.notification_errors.clone(),
        );
        registry.register(
            "prometheus_notifications_dropped",
            "Total number of alerts dropped due to errors when sending to Alertmanager.",
            m.notifications_dropped.clone(),
        );
        registry.register(
            "prometheus_notifications_queue_length",
            "The number of alert notifications in the queue.",
            m.notification_queue_length.clone(),
        );
        registry.register(
            "prometheus_notifications_queue_capacity",
            "The capacity of the alert notifications queue.",
            m.notification_queue_capacity.clone(),
        );
        registry.register(
            "prometheus_rule_config_last_reload_successful",
            "Whether the last rule configuration reload attempt was successful.",
            m.config_last_reload_success.clone(),
        );
        registry.register(
            "prometheus_rule_config_last_reload_success_timestamp_seconds",
            "Timestamp of the last successful rule configuration reload.",
            m.config_last_reload_seconds.clone(),
        );
        m
    }
}
