//! The compactor's metrics, named as Thanos names them where the meaning is the same
//! (`thanos_compact_*`, `thanos_delete_delay_seconds`, `thanos_consistency_delay_seconds`), plus
//! Strata's own sample and byte counters (`strata_compact_*`).

use std::sync::atomic::AtomicU64;

use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::gauge::Gauge;
use prometheus_client::registry::Registry;

/// Label set of per-resolution metrics (`resolution="0"`, Thanos's resolution string).
pub type ResolutionLabel = [(&'static str, String); 1];
/// Label set of `thanos_compact_blocks_marked_total` (`marker`, `reason`).
pub type MarkLabel = [(&'static str, &'static str); 2];

/// The compactor's metrics. Cheap to clone (shared counters).
#[derive(Debug, Clone, Default)]
pub struct Metrics {
    /// `thanos_compact_halted`: 1 once the compactor halted.
    pub halted: Gauge,
    /// `thanos_compact_retries_total`: iterations that failed with a retriable error.
    pub retries: Counter,
    /// `thanos_compact_iterations_total`: iterations that finished.
    pub iterations: Counter,
    /// `thanos_compact_block_cleanup_loops_total`: cleanups of partial uploads and marked blocks.
    pub cleanup_loops: Counter,
    /// `thanos_compact_aborted_partial_uploads_deletion_attempts_total`.
    pub partial_upload_deletion_attempts: Counter,
    /// `thanos_compact_blocks_cleaned_total`: blocks deleted.
    pub blocks_cleaned: Counter,
    /// `thanos_compact_block_cleanup_failures_total`.
    pub block_cleanup_failures: Counter,
    /// `thanos_compact_blocks_marked_total{marker,reason}`.
    pub blocks_marked: Family<MarkLabel, Counter>,
    /// `thanos_compact_garbage_collected_blocks_total`: blocks marked for deletion because a
    /// compacted block holds their data.
    pub garbage_collected_blocks: Counter,
    /// `thanos_compact_group_compactions_total{resolution}`: compactions that wrote a block.
    pub group_compactions: Family<ResolutionLabel, Counter>,
    /// `thanos_compact_group_compaction_runs_started_total{resolution}`.
    pub group_runs_started: Family<ResolutionLabel, Counter>,
    /// `thanos_compact_group_compaction_runs_completed_total{resolution}`.
    pub group_runs_completed: Family<ResolutionLabel, Counter>,
    /// `thanos_compact_group_compactions_failures_total{resolution}`.
    pub group_failures: Family<ResolutionLabel, Counter>,
    /// `thanos_compact_group_vertical_compactions_total{resolution}`.
    pub group_vertical_compactions: Family<ResolutionLabel, Counter>,
    /// `thanos_delete_delay_seconds`.
    pub delete_delay_seconds: Gauge<f64, AtomicU64>,
    /// `thanos_consistency_delay_seconds`.
    pub consistency_delay_seconds: Gauge<f64, AtomicU64>,
    /// `strata_compact_samples_read_total`: samples read from source blocks.
    pub samples_read: Counter,
    /// `strata_compact_samples_written_total`: samples written to compacted blocks.
    pub samples_written: Counter,
    /// `thanos_compact_downsample_total{resolution}`: downsamplings done (by source resolution).
    pub downsamples: Family<ResolutionLabel, Counter>,
    /// `thanos_compact_downsample_failures_total{resolution}`: downsamplings that failed.
    pub downsample_failures: Family<ResolutionLabel, Counter>,
}

/// Marker file label values.
pub(crate) const DELETION_MARKER: MarkLabel = [("marker", "deletion-mark.json"), ("reason", "")];

impl Metrics {
    /// New metrics registered in `registry`, which must not add a prefix (the names carry
    /// theirs).
    pub fn register(registry: &mut Registry) -> Self {
        let m = Metrics::default();
        let _ = m.blocks_marked.get_or_create(&DELETION_MARKER);
        let r = registry;
        r.register(
            "thanos_compact_halted",
            "Set to 1 if the compactor halted due to an unexpected error",
            m.halted.clone(),
        );
        r.register(
            "thanos_compact_retries",
            "Total number of retries after retriable compactor error",
            m.retries.clone(),
        );
        r.register(
            "thanos_compact_iterations",
            "Total number of iterations that were executed successfully",
            m.iterations.clone(),
        );
        r.register(
            "thanos_compact_block_cleanup_loops",
            "Total number of cleanup loops of partially uploaded blocks and marked blocks that were executed successfully",
            m.cleanup_loops.clone(),
        );
        r.register(
            "thanos_compact_aborted_partial_uploads_deletion_attempts",
            "Total number of started deletions of blocks that are assumed aborted and only partially uploaded",
            m.partial_upload_deletion_attempts.clone(),
        );
        r.register(
            "thanos_compact_blocks_cleaned",
            "Total number of blocks deleted in compactor",
            m.blocks_cleaned.clone(),
        );
        r.register(
            "thanos_compact_block_cleanup_failures",
            "Failures encountered while deleting blocks in compactor",
            m.block_cleanup_failures.clone(),
        );
        r.register(
            "thanos_compact_blocks_marked",
            "Total number of blocks marked in compactor",
            m.blocks_marked.clone(),
        );
        r.register(
            "thanos_compact_garbage_collected_blocks",
            "Total number of blocks marked for deletion by compactor",
            m.garbage_collected_blocks.clone(),
        );
        r.register(
            "thanos_compact_group_compactions",
            "Total number of group compaction attempts that resulted in a new block",
            m.group_compactions.clone(),
        );
        r.register(
            "thanos_compact_group_compaction_runs_started",
            "Total number of group compaction attempts",
            m.group_runs_started.clone(),
        );
        r.register(
            "thanos_compact_group_compaction_runs_completed",
            "Total number of group completed compaction runs, including runs that compacted nothing",
            m.group_runs_completed.clone(),
        );
        r.register(
            "thanos_compact_group_compactions_failures",
            "Total number of failed group compactions",
            m.group_failures.clone(),
        );
        r.register(
            "thanos_compact_group_vertical_compactions",
            "Total number of group compaction attempts that resulted in a new block based on overlapping blocks",
            m.group_vertical_compactions.clone(),
        );
        r.register("thanos_delete_delay_seconds", "Configured delete delay in seconds", m.delete_delay_seconds.clone());
        r.register(
            "thanos_consistency_delay_seconds",
            "Configured consistency delay in seconds",
            m.consistency_delay_seconds.clone(),
        );
        r.register(
            "strata_compact_samples_read",
            "Samples read from the source blocks of compactions",
            m.samples_read.clone(),
        );
        r.register(
            "strata_compact_samples_written",
            "Samples written to blocks made by compactions",
            m.samples_written.clone(),
        );
        r.register("thanos_compact_downsample", "Total number of downsampling attempts", m.downsamples.clone());
        r.register(
            "thanos_compact_downsample_failures",
            "Total number of failed downsampling attempts",
            m.downsample_failures.clone(),
        );
        m
    }

    /// The per-resolution label set of `resolution` (ms).
    pub(crate) fn resolution(resolution: i64) -> ResolutionLabel {
        [("resolution", resolution.to_string())]
    }
}
