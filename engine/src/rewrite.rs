//! Rewriting a block into another storage format version (`strata tools bucket rewrite`).
//!
//! ```text
//!   old block (v1) ──read series in chunks──► BlockWriter (v2) ──► new block: data, then meta.json
//!                                                                   └─► then deletion-mark.json on the old
//! ```
//!
//! The new block's ULID is derived from the old one and the target format ([`rewritten_ulid`]), so a
//! run killed anywhere resumes without duplicates: a new block that already has its `meta.json` is
//! not written again (only the old block's deletion mark may be missing), a partial one (no
//! `meta.json`) is deleted and written again. The old block is marked for deletion only after the new
//! block's `meta.json` is uploaded; until then readers see both, and merge their identical samples.
//! The new block keeps the old one's time range, external labels, level and `compaction.sources`
//! (which holds the old ULID for a level-1 block) and names it in `compaction.parents`.

use crate::bucket::Bucket;
use crate::error::{Error, Result};
use crate::format::SamplesEncoding;
use crate::meta::{BlockDesc, META_FILE};
use crate::reader::BlockReader;
use crate::writer::{BlockWriter, BlockWriterOptions};

/// `thanos.source` of rewritten blocks.
pub const REWRITE_SOURCE: &str = "bucket.rewrite";

/// Series read from the old block at a time.
const SERIES_PER_READ: usize = 2048;

/// What [`rewrite_block`] did.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum RewriteOutcome {
    /// The block already has the target format.
    AlreadyInFormat,
    /// A downsampled block: its `aggregates.parquet` has one layout in every format version, so
    /// there is nothing to rewrite.
    Downsampled,
    /// The new block existed already (an earlier run was stopped after uploading it); the old one
    /// is now marked for deletion.
    Resumed {
        /// ULID of the new block.
        new_ulid: String,
    },
    /// The block was rewritten and the old one marked for deletion.
    Rewritten {
        /// ULID of the new block.
        new_ulid: String,
        /// Series written.
        series: u64,
        /// Samples written.
        samples: u64,
    },
}

/// The encoding that writes format `version`.
pub fn encoding_for(version: u32) -> Result<SamplesEncoding> {
    match version {
        1 => Ok(SamplesEncoding::V1),
        2 => Ok(SamplesEncoding::V2),
        v => Err(Error::BadInput { block: String::new(), reason: format!("format version {v} cannot be written") }),
    }
}

/// The ULID of the block that rewriting `old` into format `to_format` produces: the old timestamp
/// with the random part XORed with a constant of the target format, so it is never the old ULID and
/// always the same for the same pair.
pub fn rewritten_ulid(old: &str, to_format: u32) -> Result<ulid::Ulid> {
    let u = ulid::Ulid::from_string(old)
        .map_err(|e| Error::BadInput { block: old.to_string(), reason: format!("not a ULID: {e}") })?;
    let salt = (0x5f7a_u128 << 64) | u128::from(to_format);
    Ok(ulid::Ulid::from_parts(u.timestamp_ms(), u.random() ^ salt))
}

/// Rewrites block `ulid` into format `to_format` (see the module docs). `progress` is called with
/// the number of samples written after each chunk of series.
pub async fn rewrite_block(
    bucket: &Bucket,
    ulid: &str,
    to_format: u32,
    progress: &(dyn Fn(u64) + Sync),
) -> Result<RewriteOutcome> {
    let enc = encoding_for(to_format)?;
    let meta = bucket.read_meta(ulid).await?;
    let Some(strata) = &meta.strata else {
        return Err(Error::BadMeta {
            path: Bucket::block_path(ulid, META_FILE).to_string(),
            reason: "not a Strata block (no strata section)".into(),
        });
    };
    if strata.format_version == to_format {
        return Ok(RewriteOutcome::AlreadyInFormat);
    }
    if meta.thanos.downsample.resolution != 0 {
        return Ok(RewriteOutcome::Downsampled);
    }
    let new_ulid = rewritten_ulid(ulid, to_format)?;
    let new = new_ulid.to_string();
    let details = format!("rewritten to format {to_format} as block {new}");
    if bucket.exists(&Bucket::block_path(&new, META_FILE)).await? {
        bucket.mark_for_deletion(ulid, &details).await?;
        return Ok(RewriteOutcome::Resumed { new_ulid: new });
    }
    // Leftovers of a stopped run: files without meta.json.
    bucket.delete_block(&new).await?;

    let reader = BlockReader::open(bucket, ulid).await?;
    let opts = BlockWriterOptions {
        ulid: new_ulid,
        min_time: meta.min_time,
        max_time: meta.max_time,
        external_labels: meta.thanos.labels.clone(),
        source: REWRITE_SOURCE.into(),
        compaction_level: meta.compaction.level,
        compaction_sources: meta.compaction.sources.clone(),
        compaction_parents: vec![BlockDesc {
            ulid: ulid.to_string(),
            min_time: meta.min_time,
            max_time: meta.max_time,
        }],
        source_ulid: strata.source_ulid.clone(),
        resolution: meta.thanos.downsample.resolution,
    };
    let mut w = BlockWriter::with_encoding(bucket.clone(), opts, enc)?;
    let index = reader.index();
    let (mut series, mut samples) = (0u64, 0u64);
    let ids: Vec<u32> = (0..index.len() as u32).collect();
    for chunk in ids.chunks(SERIES_PER_READ) {
        let read = match reader.read_samples(chunk, i64::MIN, i64::MAX).await {
            Ok(r) => r,
            Err(e) => {
                w.abort().await;
                return Err(e);
            }
        };
        let mut n = 0u64;
        for s in &read {
            if let Err(e) = w.append_series(&index.labels[s.series_id as usize], &s.timestamps, &s.values).await {
                w.abort().await;
                return Err(e);
            }
            n += s.timestamps.len() as u64;
        }
        series += read.len() as u64;
        samples += n;
        progress(n);
    }
    let written = w.finish().await?;
    if written.stats.num_samples != meta.stats.num_samples || written.stats.num_series != meta.stats.num_series {
        return Err(Error::BadBlockFile {
            path: Bucket::block_path(&new, META_FILE).to_string(),
            reason: format!(
                "rewrite of {ulid} wrote {} series / {} samples, the old block has {} / {}; the old block is kept",
                written.stats.num_series, written.stats.num_samples, meta.stats.num_series, meta.stats.num_samples
            ),
        });
    }
    bucket.mark_for_deletion(ulid, &details).await?;
    Ok(RewriteOutcome::Rewritten { new_ulid: new, series, samples })
}

#[cfg(test)]
#[allow(clippy::unwrap_used, clippy::expect_used)]
mod tests {
    use super::*;
    use crate::meta::DELETION_MARK_FILE;
    use crate::writer::tests::synthetic;

    #[tokio::test]
    async fn rewrite_both_ways_keeps_every_sample_and_resumes() {
        let dir = tempfile::tempdir().unwrap();
        let b = Bucket::local(dir.path()).unwrap();
        let old = ulid::Ulid::new().to_string();
        let data = synthetic(300, 0);
        let mut o = BlockWriterOptions::new(old.parse().unwrap(), 0, 7_200_000);
        o.external_labels = [("region".to_string(), "eu".to_string())].into();
        let mut w = BlockWriter::with_encoding(b.clone(), o, SamplesEncoding::V1).unwrap();
        for (l, t, v) in &data {
            w.append_series(l, t, v).await.unwrap();
        }
        w.finish().await.unwrap();

        let total = std::sync::atomic::AtomicU64::new(0);
        let count = |n: u64| {
            total.fetch_add(n, std::sync::atomic::Ordering::Relaxed);
        };
        let out = rewrite_block(&b, &old, 2, &count).await.unwrap();
        let RewriteOutcome::Rewritten { new_ulid, series, samples } = out else { panic!("{out:?}") };
        let want: u64 = data.iter().map(|s| s.1.len() as u64).sum();
        assert_eq!((series, samples, total.load(std::sync::atomic::Ordering::Relaxed)), (300, want, want));
        assert_eq!(new_ulid, rewritten_ulid(&old, 2).unwrap().to_string());
        assert_ne!(new_ulid, old);
        assert_eq!(b.list_blocks().await.unwrap(), vec![new_ulid.clone()]);
        let mark: crate::meta::DeletionMark =
            serde_json::from_slice(&b.get(&Bucket::block_path(&old, DELETION_MARK_FILE)).await.unwrap()).unwrap();
        assert_eq!((mark.id.as_str(), mark.version), (old.as_str(), 1));
        let meta = b.read_meta(&new_ulid).await.unwrap();
        assert_eq!(meta.strata.as_ref().unwrap().format_version, 2);
        assert_eq!(meta.compaction.sources, vec![old.clone()]);
        assert_eq!(meta.compaction.parents[0].ulid, old);
        assert_eq!(meta.thanos.labels.get("region").map(String::as_str), Some("eu"));
        assert_eq!(crate::verify::verify_block(&b, &new_ulid).await.unwrap(), vec![]);
        let r = BlockReader::open(&b, &new_ulid).await.unwrap();
        let ids: Vec<u32> = (0..300).collect();
        for (g, (l, t, v)) in r.read_samples(&ids, i64::MIN, i64::MAX).await.unwrap().iter().zip(&data) {
            assert_eq!(&r.index().labels[g.series_id as usize], l);
            assert_eq!(&g.timestamps, t);
            let bits = |x: &[f64]| x.iter().map(|f| f.to_bits()).collect::<Vec<_>>();
            assert_eq!(bits(&g.values), bits(v));
        }

        // Again on the (marked) old block: the new one exists, nothing is written twice.
        assert_eq!(
            rewrite_block(&b, &old, 2, &|_| {}).await.unwrap(),
            RewriteOutcome::Resumed { new_ulid: new_ulid.clone() }
        );
        assert_eq!(rewrite_block(&b, &new_ulid, 2, &|_| {}).await.unwrap(), RewriteOutcome::AlreadyInFormat);
        // A partial leftover of the next rewrite is replaced.
        let back = rewritten_ulid(&new_ulid, 1).unwrap().to_string();
        b.put(&Bucket::block_path(&back, "samples.parquet"), "half".into()).await.unwrap();
        let out = rewrite_block(&b, &new_ulid, 1, &|_| {}).await.unwrap();
        assert!(matches!(out, RewriteOutcome::Rewritten { ref new_ulid, .. } if *new_ulid == back), "{out:?}");
        assert_eq!(b.list_blocks().await.unwrap(), vec![back.clone()]);
        assert_eq!(crate::verify::verify_block(&b, &back).await.unwrap(), vec![]);
        assert_eq!(b.read_meta(&back).await.unwrap().strata.unwrap().format_version, 1);
    }
}
