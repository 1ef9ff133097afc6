//! Prometheus TSDB blocks → Strata blocks: `strata tsdb convert`.
//!
//! Each source block becomes one Strata block with the SAME ULID (as Thanos's sidecar uploads it),
//! its `minTime`/`maxTime` and compaction lineage, the operator's external labels in `thanos.labels`
//! and the source ULID in `strata.source_ulid`. Decoding runs on a blocking thread and hands series
//! in batches over a bounded channel to the block writer, which encodes each Parquet column in a
//! blocking task of its own while it builds the next batch, so every core works.
//!
//! ```text
//!  TSDB block dir ──(blocking: index + XOR decode)──► [series batches] ──► BlockWriter ──► bucket
//! ```
//!
//! Idempotence and crash safety: a block whose `meta.json` is already in the bucket is skipped; a
//! directory of that ULID without `meta.json` (an interrupted run) is deleted and written again. A
//! failing block is aborted (nothing visible remains) and the others still convert.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use futures::StreamExt;

use engine::BlockMeta;
use engine::bucket::Bucket;
use engine::writer::{BlockWriter, BlockWriterOptions};

use crate::error::{Error, Result};
use crate::tsdb::{self, Block};

/// How to convert.
#[derive(Debug, Clone)]
pub struct ConvertOptions {
    /// External labels written into every converted block's `thanos.labels`.
    pub external_labels: BTreeMap<String, String>,
    /// `thanos.source` of the converted blocks: `converter` (the default, `strata tsdb convert`)
    /// or `sidecar` (the sidecar's shipper), as Thanos names its block sources.
    pub source: String,
}

impl Default for ConvertOptions {
    fn default() -> Self {
        ConvertOptions { external_labels: BTreeMap::new(), source: "converter".to_string() }
    }
}

/// Progress notifications, for a progress bar or log lines.
#[derive(Debug, Clone)]
pub enum Progress {
    /// A block is about to be converted.
    BlockStarted {
        /// Block ULID.
        ulid: String,
        /// Series in the source block (from its meta.json).
        series: u64,
        /// Samples in the source block (from its meta.json).
        samples: u64,
    },
    /// More series of a block being converted were written.
    Advanced {
        /// Series written since the last notification.
        series: u64,
        /// Samples written since the last notification.
        samples: u64,
    },
    /// A block finished (converted or skipped) or failed.
    BlockFinished {
        /// Block ULID (or directory name when the block could not be opened).
        ulid: String,
        /// What happened.
        outcome: Result<Outcome, String>,
    },
}

/// What happened to one block.
#[derive(Debug, Clone, PartialEq)]
pub enum Outcome {
    /// Written to the bucket.
    Converted {
        /// Series written.
        series: u64,
        /// Samples written.
        samples: u64,
        /// Wall time of the conversion.
        elapsed: Duration,
    },
    /// Already in the bucket; left alone.
    Skipped,
}

/// Summary of a conversion run.
#[derive(Debug, Default)]
pub struct Report {
    /// Blocks converted now.
    pub converted: Vec<BlockMeta>,
    /// ULIDs of blocks that were already in the bucket.
    pub skipped: Vec<String>,
    /// Blocks that failed, with the reason.
    pub failed: Vec<(PathBuf, Error)>,
    /// Samples written in this run.
    pub samples: u64,
    /// Series written in this run.
    pub series: u64,
}

/// Series handed from the decoder thread to the writer in one message (about this many samples).
const BATCH_SAMPLES: usize = 256 * 1024;

/// Series decoded from a TSDB block, handed to the writer in one message: their samples one
/// series after another in two buffers that are sent back and filled again.
#[derive(Debug, Default)]
struct Batch {
    labels: Vec<engine::Labels>,
    /// Samples per series, in order.
    lens: Vec<usize>,
    timestamps: Vec<i64>,
    values: Vec<f64>,
}

impl Batch {
    fn with_capacity(samples: usize) -> Self {
        // A batch ends after the series that reaches `samples`: room for one series more.
        let cap = samples + samples / 4;
        Batch { timestamps: Vec::with_capacity(cap), values: Vec::with_capacity(cap), ..Batch::default() }
    }

    fn clear(&mut self) {
        self.labels.clear();
        self.lens.clear();
        self.timestamps.clear();
        self.values.clear();
    }
}

/// Blocks [`convert_path`] converts at the same time. Each block's conversion is a pipeline
/// (decoding thread, v2 split, column encoders) that leaves cores idle while it fills and drains
/// and while `series.parquet` and `meta.json` are written; a second block fills those gaps.
const PARALLEL_BLOCKS: usize = 2;

/// Converts every block under `path` (a Prometheus data dir or one block dir), two at a time;
/// the report lists them in directory (ULID) order.
pub async fn convert_path(
    path: &Path,
    bucket: &Bucket,
    opts: &ConvertOptions,
    progress: &(dyn Fn(Progress) + Send + Sync),
) -> Result<Report> {
    let dirs = tsdb::list_blocks(path)?;
    let mut report = Report::default();
    let mut done = futures::stream::iter(dirs)
        .map(|dir| async move {
            let r = convert_block(&dir, bucket, opts, progress).await;
            (dir, r)
        })
        .buffered(PARALLEL_BLOCKS);
    while let Some((dir, r)) = done.next().await {
        match r {
            Ok(Some(meta)) => {
                report.samples += meta.stats.num_samples;
                report.series += meta.stats.num_series;
                report.converted.push(meta);
            }
            Ok(None) => report.skipped.push(dir_name(&dir)),
            Err(e) => {
                progress(Progress::BlockFinished { ulid: dir_name(&dir), outcome: Err(e.to_string()) });
                report.failed.push((dir, e));
            }
        }
    }
    Ok(report)
}

fn dir_name(p: &Path) -> String {
    p.file_name().map(|s| s.to_string_lossy().into_owned()).unwrap_or_else(|| p.display().to_string())
}

/// Converts one block directory. Returns `Ok(None)` when the block is already in the bucket.
pub async fn convert_block(
    dir: &Path,
    bucket: &Bucket,
    opts: &ConvertOptions,
    progress: &(dyn Fn(Progress) + Send + Sync),
) -> Result<Option<BlockMeta>> {
    let started = Instant::now();
    let block = Block::open(dir)?;
    let src = block.meta().clone();
    let ulid = ulid::Ulid::from_string(&src.ulid).map_err(|e| {
        Error::Engine(engine::Error::BadMeta {
            path: dir.join("meta.json").display().to_string(),
            reason: format!("ulid {:?}: {e}", src.ulid),
        })
    })?;
    if bucket.exists(&Bucket::block_path(&src.ulid, engine::meta::META_FILE)).await? {
        progress(Progress::BlockFinished { ulid: src.ulid.clone(), outcome: Ok(Outcome::Skipped) });
        return Ok(None);
    }
    // Leftovers of an interrupted run have no meta.json: remove them before writing again.
    bucket.delete_block(&src.ulid).await?;
    progress(Progress::BlockStarted {
        ulid: src.ulid.clone(),
        series: src.stats.num_series,
        samples: src.stats.num_samples,
    });

    let mut sources = src.compaction.sources.clone();
    if sources.is_empty() {
        sources.push(src.ulid.clone());
    }
    let wopts = BlockWriterOptions {
        ulid,
        min_time: src.min_time,
        max_time: src.max_time,
        external_labels: opts.external_labels.clone(),
        source: opts.source.clone(),
        compaction_level: src.compaction.level.max(1),
        compaction_sources: sources,
        compaction_parents: src.compaction.parents.clone(),
        source_ulid: Some(src.ulid.clone()),
        resolution: 0,
    };
    let mut writer = BlockWriter::new(bucket.clone(), wopts)?;

    // Decode on a blocking thread; batches flow through a small bounded channel and come back
    // emptied, so the decoder fills the same buffers again instead of fresh ones.
    let (tx, mut rx) = tokio::sync::mpsc::channel::<Result<Batch>>(4);
    let (back, recycled) = std::sync::mpsc::channel::<Batch>();
    let decoder = tokio::task::spawn_blocking(move || {
        let next = || recycled.try_recv().unwrap_or_else(|_| Batch::with_capacity(BATCH_SAMPLES));
        let mut batch = next();
        for entry in block.index().series() {
            let decoded = entry.and_then(|e| {
                let at = batch.timestamps.len();
                block.append_samples(&e, &mut batch.timestamps, &mut batch.values)?;
                Ok((e.labels, batch.timestamps.len() - at))
            });
            match decoded {
                Ok((_, 0)) => {}
                Ok((labels, n)) => {
                    batch.labels.push(labels);
                    batch.lens.push(n);
                    if batch.timestamps.len() >= BATCH_SAMPLES
                        && tx.blocking_send(Ok(std::mem::replace(&mut batch, next()))).is_err()
                    {
                        return;
                    }
                }
                Err(e) => {
                    let _ = tx.blocking_send(Err(e));
                    return;
                }
            }
        }
        if !batch.lens.is_empty() {
            let _ = tx.blocking_send(Ok(batch));
        }
    });

    let mut failure: Option<Error> = None;
    while let Some(msg) = rx.recv().await {
        let mut batch = match msg {
            Ok(b) => b,
            Err(e) => {
                failure = Some(e);
                break;
            }
        };
        let mut at = 0;
        for (labels, &n) in batch.labels.iter().zip(&batch.lens) {
            let (ts, vs) = (&batch.timestamps[at..at + n], &batch.values[at..at + n]);
            if let Err(e) = writer.append_series(labels, ts, vs).await {
                failure = Some(Error::from(e));
                break;
            }
            at += n;
        }
        if failure.is_some() {
            break;
        }
        progress(Progress::Advanced { series: batch.lens.len() as u64, samples: at as u64 });
        batch.clear();
        // The decoder may have finished: then the batch is simply dropped.
        let _ = back.send(batch);
    }
    drop(rx);
    let _ = decoder.await;
    if let Some(e) = failure {
        writer.abort().await;
        return Err(e);
    }
    let meta = match writer.finish().await {
        Ok(m) => m,
        Err(e) => {
            // finish failed before meta.json was written: remove what was uploaded
            let _ = bucket.delete_block(&src.ulid).await;
            return Err(Error::from(e));
        }
    };
    progress(Progress::BlockFinished {
        ulid: meta.ulid.clone(),
        outcome: Ok(Outcome::Converted {
            series: meta.stats.num_series,
            samples: meta.stats.num_samples,
            elapsed: started.elapsed(),
        }),
    });
    Ok(Some(meta))
}
