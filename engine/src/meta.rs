//! A block's `meta.json`: the Prometheus/Thanos fields plus a `strata` section.
//!
//! Thanos and Prometheus tools read the common fields (`ulid`, `minTime`, `maxTime` exclusive,
//! `stats`, `compaction`, `version`, `thanos`); the `strata` section describes the Parquet files.

use std::collections::BTreeMap;

use serde::{Deserialize, Serialize};

use crate::error::{Error, Result};

/// Name of the metadata file; its presence makes a block visible.
pub const META_FILE: &str = "meta.json";
/// Name of the deletion mark; a block with it is being deleted.
pub const DELETION_MARK_FILE: &str = "deletion-mark.json";
/// Name of the no-compaction mark.
pub const NO_COMPACT_MARK_FILE: &str = "no-compact-mark.json";

/// A block's `deletion-mark.json`, as Thanos writes it: the block stops being served once the mark
/// exists; its files are deleted after a delay.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct DeletionMark {
    /// ULID of the marked block.
    pub id: String,
    /// Why the block is deleted.
    #[serde(default, skip_serializing_if = "String::is_empty")]
    pub details: String,
    /// When the mark was written, Unix seconds.
    pub deletion_time: i64,
    /// Mark format version, 1.
    pub version: u32,
}

/// The `meta.json` of a block.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct BlockMeta {
    /// Block ULID; equals the directory name.
    pub ulid: String,
    /// First timestamp covered (ms, inclusive).
    #[serde(rename = "minTime")]
    pub min_time: i64,
    /// End of the covered range (ms, exclusive).
    #[serde(rename = "maxTime")]
    pub max_time: i64,
    /// Counts.
    #[serde(default)]
    pub stats: BlockStats,
    /// Compaction lineage.
    #[serde(default)]
    pub compaction: Compaction,
    /// meta.json format version: always 1.
    pub version: u32,
    /// Thanos section.
    #[serde(default)]
    pub thanos: ThanosMeta,
    /// Strata section (absent in blocks Strata did not write).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub strata: Option<StrataMeta>,
}

/// Block statistics.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct BlockStats {
    /// Number of samples.
    #[serde(rename = "numSamples", default)]
    pub num_samples: u64,
    /// Number of float samples.
    #[serde(rename = "numFloatSamples", default, skip_serializing_if = "is_zero")]
    pub num_float_samples: u64,
    /// Number of series.
    #[serde(rename = "numSeries", default)]
    pub num_series: u64,
    /// Number of chunks (Prometheus blocks; 0 for Strata blocks).
    #[serde(rename = "numChunks", default, skip_serializing_if = "is_zero")]
    pub num_chunks: u64,
    /// Number of tombstones.
    #[serde(rename = "numTombstones", default, skip_serializing_if = "is_zero")]
    pub num_tombstones: u64,
}

fn is_zero(v: &u64) -> bool {
    *v == 0
}

/// Compaction lineage.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct Compaction {
    /// 1 for blocks straight from a head or a converted Prometheus block.
    #[serde(default)]
    pub level: u32,
    /// ULIDs of the level-1 blocks this one contains.
    #[serde(default)]
    pub sources: Vec<String>,
    /// Direct inputs of the compaction that produced the block.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub parents: Vec<BlockDesc>,
    /// Compaction hints.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub hints: Vec<String>,
}

/// A parent block reference.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct BlockDesc {
    /// ULID.
    pub ulid: String,
    /// Inclusive start (ms).
    #[serde(rename = "minTime")]
    pub min_time: i64,
    /// Exclusive end (ms).
    #[serde(rename = "maxTime")]
    pub max_time: i64,
}

/// Thanos's section.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct ThanosMeta {
    /// External labels of the block.
    #[serde(default)]
    pub labels: BTreeMap<String, String>,
    /// Downsampling resolution.
    #[serde(default)]
    pub downsample: Downsample,
    /// Which component wrote the block (`sidecar`, `receive`, `compactor`, ...).
    #[serde(default)]
    pub source: String,
    /// Files of the block with sizes.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub files: Vec<FileMeta>,
}

/// Downsampling resolution.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct Downsample {
    /// Resolution in ms; 0 is raw.
    #[serde(default)]
    pub resolution: i64,
}

/// A file of the block.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct FileMeta {
    /// Path relative to the block directory.
    pub rel_path: String,
    /// Size in bytes (absent for meta.json itself).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub size_bytes: Option<u64>,
}

/// Strata's section.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct StrataMeta {
    /// Storage format version (see docs/format.md); currently 1.
    pub format_version: u32,
    /// ULID of the Prometheus block this one was converted from, if any.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub source_ulid: Option<String>,
    /// Row counts of the Parquet files.
    #[serde(default)]
    pub files: Vec<StrataFile>,
}

/// One Parquet file of a Strata block.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct StrataFile {
    /// File name relative to the block directory.
    pub name: String,
    /// Rows in the file.
    pub rows: u64,
    /// Schema version of the file (format version it was written with).
    pub schema_version: u32,
}

/// A block's `no-compact-mark.json`, as Thanos writes it: the compactor leaves the block out of
/// every compaction (the block is still served).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct NoCompactMark {
    /// ULID of the marked block.
    pub id: String,
    /// Mark format version, 1.
    pub version: u32,
    /// Free text from the operator.
    #[serde(default, skip_serializing_if = "String::is_empty")]
    pub details: String,
    /// When the mark was written, Unix seconds.
    pub no_compact_time: i64,
    /// Why: `manual` for operator marks (Thanos also writes `index-size-exceeding`,
    /// `block-index-out-of-order-chunk`, `downsample-vertical-compaction`).
    pub reason: String,
}

impl BlockMeta {
    /// Parses a meta.json; `path` names it in errors.
    pub fn parse(bytes: &[u8], path: &str) -> Result<Self> {
        let m: BlockMeta = serde_json::from_slice(bytes)
            .map_err(|e| Error::BadMeta { path: path.to_string(), reason: e.to_string() })?;
        if m.version != 1 {
            return Err(Error::BadMeta { path: path.into(), reason: format!("unsupported version {}", m.version) });
        }
        if ulid::Ulid::from_string(&m.ulid).is_err() {
            return Err(Error::BadMeta { path: path.into(), reason: format!("ulid {:?} is not a ULID", m.ulid) });
        }
        Ok(m)
    }

    /// Serialises with indentation, as Thanos writes it.
    pub fn to_json(&self) -> Vec<u8> {
        // Serialising these plain structs cannot fail.
        serde_json::to_vec_pretty(self).unwrap_or_default()
    }

    /// Overlap test with a closed query range `[min_t, max_t]`.
    pub fn overlaps(&self, min_t: i64, max_t: i64) -> bool {
        self.min_time <= max_t && min_t < self.max_time
    }
}

#[cfg(test)]
#[allow(clippy::unwrap_used, clippy::expect_used)]
mod tests {
    use super::*;

    #[test]
    fn reads_a_prometheus_meta() {
        let j = br#"{"ulid":"01BKGV7JBM69T2G1BGBGM6KB12","minTime":0,"maxTime":7200000,
            "stats":{"numSamples":10,"numSeries":2,"numChunks":2},
            "compaction":{"level":1,"sources":["01BKGV7JBM69T2G1BGBGM6KB12"]},"version":1}"#;
        let m = BlockMeta::parse(j, "x/meta.json").unwrap();
        assert_eq!(m.stats.num_samples, 10);
        assert!(m.strata.is_none());
        assert!(m.overlaps(7_199_999, 8_000_000) && !m.overlaps(7_200_000, 8_000_000));
        let back = BlockMeta::parse(&m.to_json(), "x").unwrap();
        assert_eq!(back, m);
        assert!(BlockMeta::parse(br#"{"ulid":"x","minTime":0,"maxTime":1,"version":1}"#, "p").is_err());
    }
}
