//! Strata's PromQL plan nodes and the machinery they share.
//!
//! Every PromQL operator is a DataFusion extension node: one logical node type ([`PromLogical`],
//! an `UserDefinedLogicalNodeCore`) holding the operator's parameters (a [`NodeSpec`], registered
//! as a [`PromNode`] variant), and an execution plan ([`PromExec`]) that runs the operator's
//! kernel. [`PromExtensionPlanner`] turns the one into the other inside a DataFusion
//! `SessionContext` with one exhaustive `match`. The leaf that reads a `SeriesSource`
//! ([`series_scan`]) has its own execution plan because it is asynchronous.
//!
//! Where things are:
//!
//! - [`batch`]: the batch layout all nodes exchange (read it first), [`SeriesData`], batch views
//!   and builders; [`encoded_labels`]: label sets as the batch dictionary holds them;
//! - [`node`]: the node framework ([`NodeSpec`], [`PromLogical`], [`PromExec`], [`EvalCtx`]);
//! - [`registry`]: the list of nodes ([`PromNode`]) and how the physical planner finds each
//!   node's execution plan (adding a node starts there);
//! - [`partitions`]: how a query uses several cores (a scan deals series out to partitions,
//!   streaming nodes run per partition, an in-order merge joins them);
//! - [`grid`]: evaluation steps and `offset`/`@`; [`name_dropping`]: metric-name removal,
//!   immediate or delayed; [`annotations`]: a query's warnings and infos;
//! - one file per PromQL operator (`series_scan`, `instant_select`, `range_func`, `aggregate`,
//!   `binary`, ...), each with its spec, kernel and a diagram of what goes in and out;
//!   [`functions`] holds the numeric helpers several of them share.

pub(crate) mod aggregate;
pub(crate) mod annotations;
pub(crate) mod batch;
pub(crate) mod binary;
pub(crate) mod encoded_labels;
pub(crate) mod functions;
pub(crate) mod grid;
pub(crate) mod histogram;
pub(crate) mod info;
pub(crate) mod instant_fn;
pub(crate) mod instant_select;
pub(crate) mod label_fn;
pub(crate) mod literal;
pub(crate) mod name_dropping;
pub(crate) mod node;
pub(crate) mod partitions;
pub(crate) mod range_func;
pub(crate) mod registry;
pub(crate) mod series_scan;
pub(crate) mod step_fn;
pub(crate) mod subquery;

pub(crate) use annotations::Annotations;
pub(crate) use batch::*;
pub(crate) use encoded_labels::*;
pub(crate) use grid::*;
pub(crate) use name_dropping::*;
pub(crate) use node::*;
pub(crate) use registry::*;
