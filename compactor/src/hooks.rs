//! Test hook for the crash-safety tests: pause the compactor forever at a named point, so a test
//! can kill it there with SIGKILL and check what a rerun makes of the bucket.
//!
//! Enabled only by the environment variable `STRATA_COMPACT_TEST_PAUSE_AT=<point>` or
//! `<point>#<n>` (pause the n-th time the point is reached, 1-based); nothing else turns it on and
//! `strata compact` logs a warning when it is set. At the point, the process writes
//! `strata-compact-test-hook: paused at <point>` to stderr and waits forever. Points:
//!
//! | point | where |
//! |---|---|
//! | `merge` | half of a compaction's series written (the new block is an unfinished upload) |
//! | `uploaded` | the new block's `meta.json` uploaded, no source marked for deletion yet |
//! | `marked` | after a source block of a compaction was marked for deletion |
//! | `deleting` | a marked block's `meta.json` deleted, its other files not yet |
//! | `downsample` | half of a downsampled block's series written (`aggregates.parquet` unfinished) |
//! | `downsample-files` | every file of a downsampled block uploaded but its `meta.json` |
//! | `downsampled` | a downsampled block's `meta.json` uploaded |

use std::sync::atomic::{AtomicU64, Ordering};

/// The environment variable that names the pause point.
pub const PAUSE_ENV: &str = "STRATA_COMPACT_TEST_PAUSE_AT";
/// Half of a compaction's series written.
pub const POINT_MERGE: &str = "merge";
/// The new block's meta.json uploaded, sources not marked.
pub const POINT_UPLOADED: &str = "uploaded";
/// A source block marked for deletion.
pub const POINT_MARKED: &str = "marked";
/// A marked block's meta.json deleted, the rest not.
pub const POINT_DELETING: &str = "deleting";
/// Half of a downsampled block's series written.
pub const POINT_DOWNSAMPLE: &str = "downsample";
/// A downsampled block's files uploaded, its meta.json not.
pub const POINT_DOWNSAMPLE_FILES: &str = "downsample-files";
/// A downsampled block's meta.json uploaded.
pub const POINT_DOWNSAMPLED: &str = "downsampled";

/// Times each point was reached, in the order of [`POINTS`].
static REACHED: [AtomicU64; 7] = [const { AtomicU64::new(0) }; 7];
const POINTS: [&str; 7] = [
    POINT_MERGE,
    POINT_UPLOADED,
    POINT_MARKED,
    POINT_DELETING,
    POINT_DOWNSAMPLE,
    POINT_DOWNSAMPLE_FILES,
    POINT_DOWNSAMPLED,
];

/// The configured pause (point and occurrence), if the environment sets one.
pub fn configured() -> Option<(String, u64)> {
    let v = std::env::var(PAUSE_ENV).ok()?;
    let (point, n) = match v.split_once('#') {
        Some((p, n)) => (p.to_string(), n.parse().ok()?),
        None => (v, 1),
    };
    POINTS.contains(&point.as_str()).then_some((point, n))
}

/// Pauses forever if the environment asks for a pause at this occurrence of `point`.
pub(crate) async fn pause_at(point: &str) {
    let Some(i) = POINTS.iter().position(|p| *p == point) else { return };
    let n = REACHED[i].fetch_add(1, Ordering::SeqCst) + 1;
    if configured().is_some_and(|(p, want)| p == point && want == n) {
        eprintln!("strata-compact-test-hook: paused at {point}");
        std::future::pending::<()>().await;
    }
}
