//! The Thanos StoreAPI in Strata: conversions between the wire types of `proto` and the engine's
//! labels and matchers ([`convert`]), the StoreAPI client ([`client`]: one remote endpoint as a
//! [`engine::SeriesSource`], its calls over an HTTP/2 connection driven directly, `transport`),
//! and the querier built on it: the endpoint set with Info discovery ([`endpoints`]), the fan-out
//! with partial response ([`proxy`]) and replica deduplication (with [`engine::dedup`], the
//! algorithms the compactor uses too). Both sides read ahead only for large answers (`crate::ahead`).
//! [`serve`] hosts a port's gRPC services (the StoreAPI [`server`] and whatever shares the port)
//! over HTTP/2 driven with `h2` directly, as `transport` does for the client. Between two Strata
//! components `Series` goes over [`frames`] instead (the same messages without HTTP/2).
//!
//! ```text
//!   SeriesSource ──► server ──gRPC (thanos.Store/Series, XOR chunks)──► client ──► SeriesSource
//!                                                                          (querier fan-out, dedup)
//! ```

pub mod client;
pub mod convert;
pub mod endpoints;
pub mod frames;
mod label_cache;
mod merge;
pub mod proxy;
pub mod serve;
pub mod server;
mod transport;

pub use client::{Remote, RemoteSource};
pub use endpoints::{EndpointSet, EndpointStatus};
pub use engine::dedup::DedupFunc;
pub use proxy::{Proxy, ProxyOptions, ReadOptions, Warnings};
