//! Rule evaluation (Prometheus recording and alerting rules, as Thanos's ruler runs them) and the
//! Alertmanager client.
//!
//! ```text
//!   rule files ──load/validate──► Manager ──one task per group, at Prometheus's aligned times──┐
//!        ▲ reload (SIGHUP, POST /-/reload)        │                                            │
//!        │                                        ▼                                            ▼
//!        │                           RuleQuerier: --query endpoints (HTTP API v1)    ResultSink: the
//!        │                                        or the embedded Engine            ruler's head (WAL)
//!        │                                        │
//!   /api/v1/rules, /api/v1/alerts ◄── state ──────┴──► Notifier: Alertmanager v2 POST /api/v2/alerts
//! ```
//!
//! This crate never writes blocks: results go to a [`ResultSink`] the binary wires to a head.

mod api;
pub mod file;
mod group;
mod manager;
mod metrics;
mod notifier;
mod querier;
pub mod template;

use std::collections::BTreeMap;
use std::sync::Arc;

use async_trait::async_trait;
use engine::Labels;

pub use api::router;
pub use group::{ForStateLookup, Group, GroupState, Notification, RuleState};
pub use manager::{Manager, ManagerOptions};
pub use metrics::RuleMetrics;
pub use notifier::{Notifier, NotifierOptions};
pub use querier::{EngineQuerier, HttpMethod, HttpQuerier};

use crate::value::Sample;

/// Runs a rule's expression at a time: the embedded engine or remote query endpoints.
#[async_trait]
pub trait RuleQuerier: Send + Sync + std::fmt::Debug {
    /// The instant-vector result of `expr` at `t_ms` (a scalar becomes one sample without
    /// labels); the error names what failed.
    async fn query(&self, expr: &str, t_ms: i64) -> Result<Vec<Sample>, String>;
}

/// Where rule results are stored (the ruler's head).
#[async_trait]
pub trait ResultSink: Send + Sync + std::fmt::Debug {
    /// Appends samples `(labels, t ms, value)`: queryable by the next rule when it returns,
    /// durable after the next [`ResultSink::sync`].
    async fn append(&self, samples: Vec<(Labels, i64, f64)>) -> Result<(), String>;
    /// Waits until everything appended before is durable (once per group evaluation: as in
    /// Prometheus, a rule does not wait for the WAL).
    async fn sync(&self) -> Result<(), String>;
}

/// Rule health, as `/api/v1/rules` shows it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Health {
    /// Not evaluated yet.
    Unknown,
    /// The last evaluation succeeded.
    Ok,
    /// The last evaluation failed.
    Err,
}

impl Health {
    /// Prometheus's name: `unknown`, `ok`, `err`.
    pub fn as_str(self) -> &'static str {
        match self {
            Health::Unknown => "unknown",
            Health::Ok => "ok",
            Health::Err => "err",
        }
    }
}

/// State of an alert.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
pub enum AlertState {
    /// Resolved (kept a while to be sent as resolved).
    Inactive,
    /// Active for less than `for`.
    Pending,
    /// Active for at least `for`.
    Firing,
}

impl AlertState {
    /// Prometheus's name: `inactive`, `pending`, `firing`.
    pub fn as_str(self) -> &'static str {
        match self {
            AlertState::Inactive => "inactive",
            AlertState::Pending => "pending",
            AlertState::Firing => "firing",
        }
    }
}

/// One alert of an alerting rule.
#[derive(Debug, Clone)]
pub struct Alert {
    /// Labels: the series' without `__name__`, the rule's, and `alertname`.
    pub labels: Labels,
    /// Expanded annotations.
    pub annotations: BTreeMap<String, String>,
    /// State.
    pub state: AlertState,
    /// The last value of the expression.
    pub value: f64,
    /// Since when it is active (ms).
    pub active_at_ms: i64,
    /// When it started firing (ms).
    pub fired_at_ms: Option<i64>,
    /// When it resolved (ms).
    pub resolved_at_ms: Option<i64>,
    /// When it was last sent (ms).
    pub last_sent_ms: Option<i64>,
    /// Until when the last notification holds (ms).
    pub valid_until_ms: i64,
    /// Since when `keep_firing_for` keeps it firing (ms).
    pub keep_firing_since_ms: Option<i64>,
}

impl Alert {
    fn new(labels: Labels, annotations: BTreeMap<String, String>, ts: i64, value: f64) -> Self {
        Alert {
            labels,
            annotations,
            state: AlertState::Pending,
            value,
            active_at_ms: ts,
            fired_at_ms: None,
            resolved_at_ms: None,
            last_sent_ms: None,
            valid_until_ms: 0,
            keep_firing_since_ms: None,
        }
    }
}

/// What every group's evaluation uses.
#[derive(Debug, Clone)]
pub struct RuleEnv {
    /// Runs the expressions.
    pub querier: Arc<dyn RuleQuerier>,
    /// Stores the results.
    pub sink: Arc<dyn ResultSink>,
    /// `$externalLabels` of templates (the ruler's `--label`s).
    pub external_labels: BTreeMap<String, String>,
    /// `$externalURL` of templates.
    pub external_url: String,
    /// `--resend-delay` (ms).
    pub resend_delay_ms: i64,
    /// Metrics.
    pub metrics: RuleMetrics,
}
