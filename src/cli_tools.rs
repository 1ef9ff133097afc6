//! `strata tools bucket ls|inspect|verify|mark|rewrite`: operator views of a bucket, Thanos's block
//! marks and the format upgrade.

use std::path::PathBuf;

use clap::{Args, Subcommand, ValueEnum};
use engine::BlockMeta;
use engine::bucket::Bucket;

use crate::CliError;

/// Bucket subcommands.
#[derive(Debug, Subcommand)]
pub(crate) enum BucketCommand {
    /// List the blocks of the bucket.
    Ls(ListArgs),
    /// List blocks with their statistics, time ranges and external labels.
    Inspect(ListArgs),
    /// Check every block (or the ones given with --id) for format problems; exits non-zero on any.
    Verify(VerifyArgs),
    /// Mark blocks for deletion or no-compaction (Thanos's mark files), or remove a mark.
    Mark(MarkArgs),
    /// Rewrite blocks into another storage format version (new ULIDs; the old blocks get deletion
    /// marks once the new ones are uploaded). Resumable: run it again after an interruption.
    Rewrite(RewriteArgs),
}

/// Marks `strata tools bucket mark` writes.
#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
pub(crate) enum Marker {
    /// `deletion-mark.json`: readers stop serving the block, the compactor deletes it after its
    /// --delete-delay.
    #[value(name = "deletion-mark.json")]
    Deletion,
    /// `no-compact-mark.json`: the compactor leaves the block out of every compaction.
    #[value(name = "no-compact-mark.json")]
    NoCompact,
}

/// Arguments of mark.
#[derive(Debug, Args)]
pub(crate) struct MarkArgs {
    /// Object storage configuration file (Thanos objstore YAML).
    #[arg(long = "objstore.config-file")]
    objstore_config_file: PathBuf,
    /// ULID of a block to mark (repeatable).
    #[arg(long = "id", required = true)]
    ids: Vec<String>,
    /// Mark to put.
    #[arg(long = "marker", value_enum)]
    marker: Marker,
    /// Human-readable details put into the mark (required unless --remove).
    #[arg(long = "details", default_value = "")]
    details: String,
    /// Remove the mark instead.
    #[arg(long = "remove")]
    remove: bool,
}

/// Arguments of rewrite.
#[derive(Debug, Args)]
pub(crate) struct RewriteArgs {
    /// Object storage configuration file (Thanos objstore YAML).
    #[arg(long = "objstore.config-file")]
    objstore_config_file: PathBuf,
    /// Storage format version to write (1 or 2).
    #[arg(long = "to-format", value_parser = clap::value_parser!(u32).range(1..=2))]
    to_format: u32,
    /// Only rewrite these block ULIDs (repeatable); default: every block of another format.
    #[arg(long = "id")]
    ids: Vec<String>,
}

/// Output format of ls and inspect.
#[derive(Debug, Clone, Copy, ValueEnum)]
pub(crate) enum Output {
    /// Human-readable table.
    Table,
    /// One JSON document (array of meta.json objects).
    Json,
}

/// Arguments of ls and inspect.
#[derive(Debug, Args)]
pub(crate) struct ListArgs {
    /// Object storage configuration file (Thanos objstore YAML).
    #[arg(long = "objstore.config-file")]
    objstore_config_file: PathBuf,
    /// Output format.
    #[arg(short = 'o', long = "output", value_enum, default_value = "table")]
    output: Output,
}

/// Arguments of verify.
#[derive(Debug, Args)]
pub(crate) struct VerifyArgs {
    /// Object storage configuration file (Thanos objstore YAML).
    #[arg(long = "objstore.config-file")]
    objstore_config_file: PathBuf,
    /// Only verify these block ULIDs (repeatable).
    #[arg(long = "id")]
    ids: Vec<String>,
}

pub(crate) async fn run_bucket(cmd: BucketCommand) -> Result<(), CliError> {
    match cmd {
        BucketCommand::Ls(a) => list(a, false).await,
        BucketCommand::Inspect(a) => list(a, true).await,
        BucketCommand::Verify(a) => verify(a).await,
        BucketCommand::Mark(a) => mark(a).await,
        BucketCommand::Rewrite(a) => rewrite(a).await,
    }
}

async fn mark(a: MarkArgs) -> Result<(), CliError> {
    if !a.remove && a.details.is_empty() {
        return Err(CliError::Usage("mark: --details is required (unless --remove)".into()));
    }
    for id in &a.ids {
        if ulid::Ulid::from_string(id).is_err() {
            return Err(CliError::Usage(format!("mark: --id {id:?} is not a ULID")));
        }
    }
    let bucket = Bucket::from_config_file(&a.objstore_config_file)?;
    let file = match a.marker {
        Marker::Deletion => engine::meta::DELETION_MARK_FILE,
        Marker::NoCompact => engine::meta::NO_COMPACT_MARK_FILE,
    };
    for id in &a.ids {
        let path = Bucket::block_path(id, file);
        if a.remove {
            if !bucket.exists(&path).await? {
                return Err(CliError::Failed(format!("mark: block {id} has no {file}")));
            }
            bucket.delete(&path).await?;
            println!("{id}: {file} removed");
            continue;
        }
        if !bucket.exists(&Bucket::block_path(id, engine::meta::META_FILE)).await? {
            return Err(CliError::Failed(format!("mark: block {id} not found (no {})", engine::meta::META_FILE)));
        }
        match a.marker {
            Marker::Deletion => bucket.mark_for_deletion(id, &a.details).await?,
            Marker::NoCompact => bucket.mark_no_compact(id, "manual", &a.details).await?,
        }
        println!("{id}: {file} written");
    }
    Ok(())
}

fn time(ms: i64) -> String {
    chrono::DateTime::from_timestamp_millis(ms)
        .map(|t| t.format("%Y-%m-%dT%H:%M:%S%.3fZ").to_string())
        .unwrap_or_else(|| ms.to_string())
}

fn duration(ms: i64) -> String {
    let s = ms / 1000;
    let (h, m, sec) = (s / 3600, (s % 3600) / 60, s % 60);
    if h > 0 {
        format!("{h}h{m}m{sec}s")
    } else if m > 0 {
        format!("{m}m{sec}s")
    } else {
        format!("{sec}s")
    }
}

fn labels(m: &BlockMeta) -> String {
    let parts: Vec<String> = m.thanos.labels.iter().map(|(k, v)| format!("{k}={v:?}")).collect();
    parts.join(",")
}

fn bytes(m: &BlockMeta) -> u64 {
    m.thanos.files.iter().filter_map(|f| f.size_bytes).sum()
}

fn resolution(m: &BlockMeta) -> String {
    match m.thanos.downsample.resolution {
        0 => "raw".into(),
        r => duration(r),
    }
}

/// Renders rows as an aligned table.
fn table(header: &[&str], rows: &[Vec<String>]) -> String {
    let mut w: Vec<usize> = header.iter().map(|h| h.len()).collect();
    for r in rows {
        for (i, c) in r.iter().enumerate() {
            w[i] = w[i].max(c.len());
        }
    }
    let line = |cells: Vec<&str>| {
        let s: Vec<String> = cells.iter().enumerate().map(|(i, c)| format!("{c:<width$}", width = w[i])).collect();
        s.join("  ").trim_end().to_string()
    };
    let mut out = line(header.to_vec());
    out.push('\n');
    for r in rows {
        out.push_str(&line(r.iter().map(String::as_str).collect()));
        out.push('\n');
    }
    out
}

async fn list(a: ListArgs, detailed: bool) -> Result<(), CliError> {
    let bucket = Bucket::from_config_file(&a.objstore_config_file)?;
    let mut metas = Vec::new();
    for id in bucket.list_blocks().await? {
        metas.push(bucket.read_meta(&id).await?);
    }
    metas.sort_by(|x, y| (x.min_time, &x.ulid).cmp(&(y.min_time, &y.ulid)));
    match a.output {
        Output::Json => {
            let v: Vec<serde_json::Value> =
                metas.iter().map(|m| serde_json::to_value(m).unwrap_or(serde_json::Value::Null)).collect();
            println!("{}", serde_json::to_string_pretty(&v).unwrap_or_default());
        }
        Output::Table if detailed => {
            let rows: Vec<Vec<String>> = metas
                .iter()
                .map(|m| {
                    vec![
                        m.ulid.clone(),
                        time(m.min_time),
                        time(m.max_time),
                        duration(m.max_time - m.min_time),
                        m.stats.num_series.to_string(),
                        m.stats.num_samples.to_string(),
                        bytes(m).to_string(),
                        format!("{:.2}", bytes(m) as f64 / m.stats.num_samples.max(1) as f64),
                        m.compaction.level.to_string(),
                        resolution(m),
                        m.thanos.source.clone(),
                        labels(m),
                    ]
                })
                .collect();
            let h = [
                "ULID",
                "FROM",
                "UNTIL",
                "RANGE",
                "SERIES",
                "SAMPLES",
                "BYTES",
                "B/SAMPLE",
                "LEVEL",
                "RESOLUTION",
                "SOURCE",
                "LABELS",
            ];
            print!("{}", table(&h, &rows));
        }
        Output::Table => {
            let rows: Vec<Vec<String>> = metas
                .iter()
                .map(|m| vec![m.ulid.clone(), time(m.min_time), time(m.max_time), resolution(m), labels(m)])
                .collect();
            print!("{}", table(&["ULID", "FROM", "UNTIL", "RESOLUTION", "LABELS"], &rows));
        }
    }
    Ok(())
}

async fn rewrite(a: RewriteArgs) -> Result<(), CliError> {
    use engine::rewrite::{RewriteOutcome, rewrite_block};
    use std::io::IsTerminal;
    let bucket = Bucket::from_config_file(&a.objstore_config_file)?;
    let ids: Vec<String> = if a.ids.is_empty() { bucket.list_blocks().await? } else { a.ids };
    // The blocks still to rewrite, with their sample counts for the progress bar.
    let mut todo = Vec::new();
    for id in ids {
        let m = bucket.read_meta(&id).await?;
        if m.strata.as_ref().is_some_and(|s| s.format_version != a.to_format) {
            todo.push((id, m.stats.num_samples));
        }
    }
    let total: u64 = todo.iter().map(|t| t.1).sum();
    let bar = std::io::stderr().is_terminal().then(|| {
        let b = indicatif::ProgressBar::new(total);
        let style = indicatif::ProgressStyle::with_template(
            "{prefix} [{bar:30}] {pos}/{len} samples, {msg} ({per_sec}, eta {eta})",
        )
        .unwrap_or_else(|_| indicatif::ProgressStyle::default_bar());
        b.set_style(style.progress_chars("=> "));
        b
    });
    let say = |line: String| match &bar {
        Some(b) => b.suspend(|| eprintln!("{line}")),
        None => tracing::info!("{line}"),
    };
    let (mut rewritten, mut resumed) = (0usize, 0usize);
    for (n, (id, _)) in todo.iter().enumerate() {
        if let Some(b) = &bar {
            b.set_prefix(format!("block {}/{} {id}", n + 1, todo.len()));
        }
        let progress = |k: u64| {
            if let Some(b) = &bar {
                b.inc(k);
            }
        };
        match rewrite_block(&bucket, id, a.to_format, &progress).await {
            Ok(RewriteOutcome::Rewritten { new_ulid, series, samples }) => {
                rewritten += 1;
                say(format!(
                    "block {id}: rewritten to format {} as {new_ulid} ({series} series, {samples} samples); {id} marked for deletion",
                    a.to_format
                ));
            }
            Ok(RewriteOutcome::Resumed { new_ulid }) => {
                resumed += 1;
                say(format!("block {id}: {new_ulid} was already written; {id} marked for deletion"));
            }
            Ok(RewriteOutcome::AlreadyInFormat) => {}
            Ok(RewriteOutcome::Downsampled) => say(format!("block {id}: downsampled block, left as it is")),
            Err(e) => {
                if let Some(b) = &bar {
                    b.abandon();
                }
                return Err(CliError::Failed(format!("rewrite of block {id} failed: {e} (run again to resume)")));
            }
        }
    }
    if let Some(b) = &bar {
        b.finish_and_clear();
    }
    println!("rewrite: {rewritten} block(s) rewritten to format {}, {resumed} resumed", a.to_format);
    Ok(())
}

async fn verify(a: VerifyArgs) -> Result<(), CliError> {
    let bucket = Bucket::from_config_file(&a.objstore_config_file)?;
    let ids: Vec<String> = if a.ids.is_empty() { bucket.list_blocks().await? } else { a.ids };
    let mut problems = 0usize;
    for id in &ids {
        let found = engine::verify::verify_block(&bucket, id).await?;
        if found.is_empty() {
            println!("{id}: ok");
        }
        for p in &found {
            println!("{id}: {p}");
        }
        problems += found.len();
    }
    for p in bucket.list_partial_blocks().await? {
        println!("{p}: partial upload (no meta.json); it is ignored by readers");
    }
    if problems > 0 {
        return Err(CliError::Failed(format!("verify: {problems} problem(s) in {} block(s) checked", ids.len())));
    }
    println!("verify: {} block(s) ok", ids.len());
    Ok(())
}
