//! The Thanos StoreAPI in Strata: conversions between the wire types of `proto` and the engine's
//! labels and matchers ([`convert`]), used by the StoreAPI server (any [`engine::SeriesSource`]
//! served as `thanos.Store` + `thanos.info.Info`) and by the querier's StoreAPI client.
//!
//! ```text
//!   SeriesSource ──► server ──gRPC (thanos.Store/Series, XOR chunks)──► client ──► SeriesSource
//!                                                                          (querier fan-out, dedup)
//! ```

pub mod convert;
pub mod server;
