//! `bench format`: bytes per sample of `samples.parquet` value layouts on real Prometheus blocks, the
//! measurement behind format v2 (docs/format.md §7).
//!
//! Data sets: the fleet generator and the irregular-value generator made into TSDB blocks by
//! promtool, any Prometheus data directory given with `--tsdb` (e.g. a real Prometheus's), and with
//! `--scrape-minutes` a fresh one: Prometheus 2.42 scraping itself and a node exporter for that long
//! with short block durations so that blocks get cut. Every variant is written from the same
//! decoded series with the same Parquet settings as the engine (page and row-group limits, page
//! statistics); sizes are per column from the Parquet footer. The last row of each table is the
//! engine's own `BlockWriter` (what `strata tsdb convert` writes), series.parquet included.

use std::path::{Path, PathBuf};
use std::process::Command;
use std::sync::Arc;
use std::time::{Duration, Instant};

use arrow::array::{ArrayRef, Float64Array, Int64Array, RecordBatch, UInt32Array};
use arrow::buffer::NullBuffer;
use arrow::datatypes::{DataType, Field, Schema};
use engine::format::{self, SAMPLES_PAGE_ROWS, SAMPLES_ROW_GROUP_ROWS};
use engine::values::{self, MAX_EXPONENT, exponent_histogram, min_exponent, pick_exponent, scale_of};
use engine::{BlockWriter, BlockWriterOptions, Bucket, Labels};
use parquet::arrow::ArrowWriter;
use parquet::basic::{Compression, Encoding, ZstdLevel};
use parquet::file::properties::{EnabledStatistics, WriterProperties, WriterVersion};
use parquet::file::reader::{FileReader, SerializedFileReader};
use parquet::schema::types::ColumnPath;

use ingest::testkit::{Daemon, free_port};

use crate::util::{irregular_blocks, promtool_blocks, spec, tsdb_bytes};

/// Arguments of `bench format`.
#[derive(Debug, clap::Args)]
pub(crate) struct Args {
    /// Fleet generator targets (20 series each).
    #[arg(long, default_value_t = 200)]
    targets: usize,
    /// Irregular generator targets (24 series each).
    #[arg(long, default_value_t = 20)]
    irregular_targets: usize,
    /// Hours of generated data.
    #[arg(long, default_value_t = 6.0)]
    hours: f64,
    /// Scrape interval of the generated data in seconds.
    #[arg(long, default_value_t = 15.0)]
    interval: f64,
    /// A Prometheus data directory (or block) to measure as well (repeatable).
    #[arg(long = "tsdb")]
    tsdb: Vec<PathBuf>,
    /// Run Prometheus 2.42 scraping itself and a node exporter for this many minutes (short block
    /// durations) and measure its blocks too. Needs `prometheus` and `prometheus-node-exporter`.
    #[arg(long)]
    scrape_minutes: Option<f64>,
    /// Scrape interval of that run, seconds.
    #[arg(long, default_value_t = 5.0)]
    scrape_interval: f64,
    /// Only the variants whose name contains this text (the engine row is always printed).
    #[arg(long)]
    only: Option<String>,
}

/// Which samples share one exponent.
#[derive(Debug, Clone, Copy)]
enum Granularity {
    /// One exponent per series and block.
    Series,
    /// One per run of this many samples of a series (a page-like unit).
    Chunk(usize),
    /// Each sample its smallest exponent.
    Sample,
}

#[derive(Debug, Clone, Copy)]
enum Layout {
    /// One non-null Float64 `value` column with this encoding (format v1 is PLAIN).
    Float(Encoding),
    /// Decimal-scaled integers where exact (`value_int`, DELTA_BINARY_PACKED), the rest in `value`.
    Split {
        cap: u8,
        quantile: f64,
        per: Granularity,
        float: Encoding,
        /// Where the scale is: a per-row `value_scale` column (dictionary) in samples.parquet, set
        /// on every row or only on integer rows, or per series in series.parquet (a few bytes per
        /// series there).
        scale: Scale,
        /// `value_int` non-null: float rows repeat the previous mantissa (other layout).
        fill_ints: bool,
    },
}

#[derive(Debug, Clone, Copy, PartialEq)]
enum Scale {
    EveryRow,
    IntegerRows,
    SeriesFile,
}

#[derive(Debug, Clone, Copy)]
struct Variant {
    name: &'static str,
    layout: Layout,
    zstd: i32,
}

const fn split(cap: u8, quantile: f64, per: Granularity, scale: Scale) -> Layout {
    Layout::Split { cap, quantile, per, float: Encoding::PLAIN, scale, fill_ints: false }
}

fn variants() -> Vec<Variant> {
    let (cap, q, per, every) = (values::EXPONENT_CAP, values::EXPONENT_QUANTILE, Granularity::Series, Scale::EveryRow);
    let v2 = split(cap, q, per, every);
    let with = |name, layout| Variant { name, layout, zstd: 3 };
    vec![
        with("v1: value PLAIN", Layout::Float(Encoding::PLAIN)),
        with("value BYTE_STREAM_SPLIT", Layout::Float(Encoding::BYTE_STREAM_SPLIT)),
        with("integers only (exponent 0)", split(0, 1.0, per, every)),
        with("v2: exponent per series (q 0.99, cap 9), floats PLAIN, value_scale every row", v2),
        with("value_scale only on integer rows", split(cap, q, per, Scale::IntegerRows)),
        with("scale in series.parquet instead of a column", split(cap, q, per, Scale::SeriesFile)),
        with("quantile 1.0 (every exact sample)", split(cap, 1.0, per, every)),
        with("quantile 0.9", split(cap, 0.9, per, every)),
        with("cap 6", split(6, q, per, every)),
        with("cap 12", split(12, q, per, every)),
        with("cap 18", split(MAX_EXPONENT, q, per, every)),
        with("exponent per 120 samples", split(cap, q, Granularity::Chunk(120), every)),
        with("exponent per 1024 samples", split(cap, q, Granularity::Chunk(1024), every)),
        with("exponent per sample", split(cap, q, Granularity::Sample, every)),
        with(
            "floats BYTE_STREAM_SPLIT",
            Layout::Split { cap, quantile: q, per, float: Encoding::BYTE_STREAM_SPLIT, scale: every, fill_ints: false },
        ),
        with(
            "value_int non-null (float rows repeat the mantissa)",
            Layout::Split { cap, quantile: q, per, float: Encoding::PLAIN, scale: every, fill_ints: true },
        ),
        Variant { name: "v2, zstd 1", layout: v2, zstd: 1 },
        Variant { name: "v2, zstd 6", layout: v2, zstd: 6 },
        Variant { name: "v2, zstd 9", layout: v2, zstd: 9 },
    ]
}

/// One decoded TSDB block: series in label order.
struct DecodedBlock {
    min_t: i64,
    max_t: i64,
    series: Vec<(Labels, Vec<i64>, Vec<f64>)>,
}

fn decode_blocks(dir: &Path) -> Result<Vec<DecodedBlock>, String> {
    let mut out = Vec::new();
    for b in ingest::tsdb::list_blocks(dir).map_err(|e| e.to_string())? {
        let blk = ingest::tsdb::Block::open(&b).map_err(|e| e.to_string())?;
        let (min_t, max_t) = (blk.meta().min_time, blk.meta().max_time);
        let mut series = Vec::new();
        for s in blk.series() {
            let s = s.map_err(|e| e.to_string())?;
            if !s.timestamps.is_empty() {
                series.push((s.labels, s.timestamps, s.values));
            }
        }
        series.sort_by(|a, b| a.0.cmp(&b.0));
        out.push(DecodedBlock { min_t, max_t, series });
    }
    Ok(out)
}

fn zstd(level: i32) -> Compression {
    Compression::ZSTD(ZstdLevel::try_new(level).unwrap_or_default())
}

/// The value columns of one block in `layout`.
fn value_columns(block: &DecodedBlock, layout: Layout) -> Vec<(Field, ArrayRef, Encoding, bool)> {
    match layout {
        Layout::Float(enc) => {
            let vs: Vec<f64> = block.series.iter().flat_map(|s| s.2.iter().copied()).collect();
            vec![(Field::new("value", DataType::Float64, false), Arc::new(Float64Array::from(vs)), enc, false)]
        }
        Layout::Split { cap, quantile, per, float, scale, fill_ints } => {
            let (mut ints, mut floats, mut is_int, mut scales) = (Vec::new(), Vec::new(), Vec::new(), Vec::new());
            for (_, _, vs) in &block.series {
                let chunk = match per {
                    Granularity::Series => vs.len().max(1),
                    Granularity::Chunk(n) => n,
                    Granularity::Sample => 1,
                };
                for c in vs.chunks(chunk) {
                    let e = match per {
                        Granularity::Sample => min_exponent(c[0]).unwrap_or(0).min(cap),
                        _ => pick_exponent(&exponent_histogram(c), quantile, cap),
                    };
                    let from = ints.len();
                    values::split(c, scale_of(e), &mut ints, &mut floats, &mut is_int);
                    scales.extend(std::iter::repeat_n(scale_of(e), c.len()));
                    if fill_ints {
                        let mut prev = ints[..from].last().copied().unwrap_or(0);
                        for i in from..ints.len() {
                            if is_int[i] {
                                prev = ints[i];
                            } else {
                                ints[i] = prev;
                            }
                        }
                    }
                }
            }
            let int_valid = NullBuffer::from(is_int.clone());
            let float_valid = NullBuffer::from(is_int.iter().map(|b| !b).collect::<Vec<bool>>());
            let mut cols = vec![
                (
                    Field::new("value", DataType::Float64, true),
                    Arc::new(Float64Array::new(floats.into(), Some(float_valid))) as ArrayRef,
                    float,
                    false,
                ),
                (
                    Field::new("value_int", DataType::Int64, !fill_ints),
                    Arc::new(Int64Array::new(ints.into(), (!fill_ints).then(|| int_valid.clone()))) as ArrayRef,
                    Encoding::DELTA_BINARY_PACKED,
                    false,
                ),
            ];
            let nulls = match scale {
                Scale::SeriesFile => return cols,
                Scale::EveryRow => None,
                Scale::IntegerRows => Some(int_valid),
            };
            cols.push((
                Field::new("value_scale", DataType::Float64, nulls.is_some()),
                Arc::new(Float64Array::new(scales.into(), nulls)),
                Encoding::PLAIN,
                true,
            ));
            cols
        }
    }
}

/// Bytes per column of `samples.parquet` for one block in `v`.
fn samples_bytes(block: &DecodedBlock, v: &Variant) -> Result<Vec<(String, u64)>, String> {
    let ids: Vec<u32> =
        block.series.iter().enumerate().flat_map(|(i, s)| std::iter::repeat_n(i as u32, s.1.len())).collect();
    let ts: Vec<i64> = block.series.iter().flat_map(|s| s.1.iter().copied()).collect();
    let mut fields =
        vec![Field::new("series_id", DataType::UInt32, false), Field::new("timestamp", DataType::Int64, false)];
    let mut arrays: Vec<ArrayRef> = vec![Arc::new(UInt32Array::from(ids)), Arc::new(Int64Array::from(ts))];
    let mut props = WriterProperties::builder()
        .set_writer_version(WriterVersion::PARQUET_2_0)
        .set_compression(zstd(v.zstd))
        .set_max_row_group_row_count(Some(SAMPLES_ROW_GROUP_ROWS))
        .set_data_page_row_count_limit(SAMPLES_PAGE_ROWS)
        .set_statistics_enabled(EnabledStatistics::Page);
    for c in ["series_id", "timestamp"] {
        props = props
            .set_column_dictionary_enabled(ColumnPath::from(c), false)
            .set_column_encoding(ColumnPath::from(c), Encoding::DELTA_BINARY_PACKED);
    }
    for (f, a, enc, dict) in value_columns(block, v.layout) {
        let p = ColumnPath::from(f.name().as_str());
        props = props.set_column_dictionary_enabled(p.clone(), dict);
        if !dict {
            props = props.set_column_encoding(p, enc);
        }
        fields.push(f);
        arrays.push(a);
    }
    let schema = Arc::new(Schema::new(fields));
    let batch = RecordBatch::try_new(Arc::clone(&schema), arrays).map_err(|e| e.to_string())?;
    let mut buf = Vec::new();
    let mut w = ArrowWriter::try_new(&mut buf, schema, Some(props.build())).map_err(|e| e.to_string())?;
    w.write(&batch).map_err(|e| e.to_string())?;
    w.close().map_err(|e| e.to_string())?;
    let total = buf.len() as u64;
    let r = SerializedFileReader::new(bytes::Bytes::from(buf)).map_err(|e| e.to_string())?;
    let md = r.metadata();
    let mut cols: Vec<(String, u64)> = Vec::new();
    for rg in md.row_groups() {
        for c in rg.columns() {
            let name = c.column_path().string();
            match cols.iter_mut().find(|x| x.0 == name) {
                Some(x) => x.1 += c.compressed_size() as u64,
                None => cols.push((name, c.compressed_size() as u64)),
            }
        }
    }
    cols.push(("total".into(), total));
    Ok(cols)
}

/// The engine's own block files (samples + series) for `blocks`: (samples bytes, series bytes,
/// seconds spent in the writer).
async fn engine_bytes(blocks: &[DecodedBlock]) -> Result<(u64, u64, f64), String> {
    let bucket = Bucket::from_store(Arc::new(object_store::memory::InMemory::new()), "memory");
    let (mut samples, mut series, mut secs) = (0u64, 0u64, 0f64);
    for b in blocks {
        let t = Instant::now();
        let mut w = BlockWriter::new(bucket.clone(), BlockWriterOptions::new(ulid::Ulid::new(), b.min_t, b.max_t))
            .map_err(|e| e.to_string())?;
        for (l, ts, vs) in &b.series {
            w.append_series(l, ts, vs).await.map_err(|e| e.to_string())?;
        }
        let meta = w.finish().await.map_err(|e| e.to_string())?;
        secs += t.elapsed().as_secs_f64();
        let size = |n: &str| meta.thanos.files.iter().find(|f| f.rel_path == n).and_then(|f| f.size_bytes);
        samples += size(format::SAMPLES_FILE).unwrap_or(0);
        series += size(format::SERIES_FILE).unwrap_or(0);
    }
    Ok((samples, series, secs))
}

fn measure(name: &str, dir: &Path, only: Option<&str>, rt: &tokio::runtime::Runtime) -> Result<(), String> {
    let blocks = decode_blocks(dir)?;
    let samples: u64 = blocks.iter().flat_map(|b| b.series.iter()).map(|s| s.1.len() as u64).sum();
    let series: usize = blocks.iter().map(|b| b.series.len()).sum();
    if samples == 0 {
        return Err(format!("{name}: no samples in {}", dir.display()));
    }
    let tsdb = tsdb_bytes(dir) as f64 / samples as f64;
    let (eng_samples, eng_series, eng_secs) = rt.block_on(engine_bytes(&blocks))?;
    let series_bps = eng_series as f64 / samples as f64;
    println!(
        "\n### {name}: {} blocks, {series} series (summed over blocks), {samples} samples; TSDB index+chunks {tsdb:.3} B/sample\n",
        blocks.len()
    );
    println!(
        "| variant | samples.parquet B/sample | value | value_int | value_scale | series_id + timestamp | + series.parquet | vs TSDB |"
    );
    println!("|---|---|---|---|---|---|---|---|");
    for v in variants().iter().filter(|v| only.is_none_or(|o| v.name.contains(o))) {
        let mut cols: Vec<(String, u64)> = Vec::new();
        for b in &blocks {
            for (c, n) in samples_bytes(b, v)? {
                match cols.iter_mut().find(|x| x.0 == c) {
                    Some(x) => x.1 += n,
                    None => cols.push((c, n)),
                }
            }
        }
        let get = |c: &str| cols.iter().find(|x| x.0 == c).map(|x| x.1 as f64 / samples as f64);
        let cell = |c: &str| get(c).map_or("-".to_string(), |x| format!("{x:.3}"));
        let total = get("total").unwrap_or(0.0);
        println!(
            "| {} (zstd {}) | {total:.3} | {} | {} | {} | {:.3} | {:.3} | {:.3}x |",
            v.name,
            v.zstd,
            cell("value"),
            cell("value_int"),
            cell("value_scale"),
            get("series_id").unwrap_or(0.0) + get("timestamp").unwrap_or(0.0),
            total + series_bps,
            (total + series_bps) / tsdb
        );
    }
    let eng = (eng_samples + eng_series) as f64 / samples as f64;
    println!(
        "| **engine BlockWriter (format v{})** | {:.3} | | | | | **{eng:.3}** | **{:.3}x** |",
        format::FORMAT_VERSION,
        eng_samples as f64 / samples as f64,
        eng / tsdb
    );
    println!("\n(engine writer: {:.0} samples/s in this build)", samples as f64 / eng_secs.max(1e-9));
    Ok(())
}

/// Runs Prometheus scraping itself and a node exporter for `minutes`; returns its data directory.
fn scrape_real(work: &Path, minutes: f64, interval: f64) -> Result<PathBuf, String> {
    let port = || free_port().map_err(|e| e.to_string());
    let (prom_port, ne_port) = (port()?, port()?);
    let data = work.join("prometheus-data");
    let cfg = work.join("prometheus.yml");
    std::fs::write(
        &cfg,
        format!(
            "global:\n  scrape_interval: {interval}s\nscrape_configs:\n  - job_name: prometheus\n    static_configs:\n      - targets: ['127.0.0.1:{prom_port}']\n  - job_name: node\n    static_configs:\n      - targets: ['127.0.0.1:{ne_port}']\n"
        ),
    )
    .map_err(|e| format!("{}: {e}", cfg.display()))?;
    // Blocks are cut once the head spans 1.5 block durations: a quarter of the run gives 2-3 blocks.
    let block_min = ((minutes / 4.0).floor() as u64).max(1);
    let _ne = Daemon::spawn(
        Command::new("prometheus-node-exporter").arg(format!("--web.listen-address=127.0.0.1:{ne_port}")),
        &work.join("node-exporter.log"),
    )
    .map_err(|e| format!("{e} (Debian package prometheus-node-exporter)"))?;
    let _prom = Daemon::spawn(
        Command::new("prometheus")
            .arg(format!("--config.file={}", cfg.display()))
            .arg(format!("--storage.tsdb.path={}", data.display()))
            .arg(format!("--web.listen-address=127.0.0.1:{prom_port}"))
            .arg(format!("--storage.tsdb.min-block-duration={block_min}m"))
            .arg(format!("--storage.tsdb.max-block-duration={block_min}m")),
        &work.join("prometheus.log"),
    )
    .map_err(|e| e.to_string())?;
    eprintln!(
        "bench format: Prometheus scraping itself and a node exporter for {minutes} min ({block_min}m blocks) ..."
    );
    std::thread::sleep(Duration::from_secs_f64(minutes * 60.0));
    Ok(data)
}

pub(crate) fn run(a: Args) -> Result<(), String> {
    let work = tempfile::tempdir().map_err(|e| format!("temp dir: {e}"))?;
    let rt = crate::util::runtime()?;
    let only = a.only.as_deref();
    let fleet = spec(a.targets, a.hours, a.interval)?;
    let dir = promtool_blocks("format", &fleet, work.path(), "fleet")?;
    measure("fleet (ingest::datagen, promtool)", &dir, only, &rt)?;
    let irregular = spec(a.irregular_targets, a.hours, a.interval)?;
    let dir = irregular_blocks("format", &irregular, work.path())?;
    measure("irregular values (ingest::datagen, promtool)", &dir, only, &rt)?;
    if let Some(m) = a.scrape_minutes {
        let dir = scrape_real(work.path(), m, a.scrape_interval)?;
        measure("real Prometheus 2.42 scraping itself + node exporter", &dir, only, &rt)?;
    }
    for d in &a.tsdb {
        measure(&format!("Prometheus data {}", d.display()), d, only, &rt)?;
    }
    Ok(())
}
