//! Strata's compactor: keeps a bucket small and fast the way Thanos's compactor does, with every
//! rewrite a streaming Parquet merge.
//!
//! The rooms: [`plan`] decides which blocks belong together and what to compact next (Thanos's
//! grouping, consistency delay, level windows, overlap checks, covered blocks); [`merge`] merges
//! source blocks into one new block with bounded memory (vertical dedup through
//! [`engine::dedup`]); [`compactor`] runs iterations over a bucket (compaction, marking,
//! retention, deletion after the delay, partial-upload cleanup); [`metrics`] holds the
//! `thanos_compact_*` metrics; [`hooks`] is the test hook of the crash-safety tests.
//!
//! ```text
//!   bucket ──sync──► plan (groups, windows) ──► merge (k-way by series, time) ──► new block
//!                                                  └──► deletion-mark.json on the sources ──► deleted after --delete-delay
//! ```

pub mod compactor;
pub mod downsample;
pub mod error;
pub mod hooks;
pub mod merge;
pub mod metrics;
pub mod plan;
#[cfg(test)]
mod testutil;

pub use compactor::{Compactor, CompactorOptions, IterationReport, Retention};
pub use error::{Error, Result};
pub use merge::{MergeOptions, MergeOutcome, MergeSource, StopFlag, merge_blocks};
pub use metrics::Metrics;
