//! `bench series`: StoreAPI Series() throughput, samples/s streamed as XOR chunks, `strata store`
//! over converted blocks vs Prometheus 2.42 streaming the same promtool-made TSDB blocks as XOR
//! chunks over remote read (`STREAMED_XOR_CHUNKS`), measured in the same run over loopback.
//!
//! Both answer one request for every series over the whole range. Prometheus sends the chunks its
//! blocks hold; Strata reads Parquet and encodes chunks of at most 120 samples per request. The
//! clients count samples from each chunk's 2-byte header (neither decodes XOR), and read every
//! frame (gRPC messages / remote-read frames, protobuf-decoded). One warm-up per system, then
//! `--runs` timed runs alternating between them; medians are kept.

use std::process::Command;
use std::time::{Duration, Instant};

use proto::prometheus::{ChunkedReadResponse, LabelMatcher, Query, ReadRequest, label_matcher, read_request};
use proto::prost::Message;
use proto::thanos::store_client::StoreClient;
use proto::thanos::{SeriesRequest, series_response};

use ingest::testkit::{Daemon, free_port};

use crate::util::{FleetArgs, converted_bucket, grpc_channel, prometheus_over, promtool_blocks};

/// Arguments of `bench series`.
#[derive(Debug, clap::Args)]
pub(crate) struct Args {
    #[command(flatten)]
    fleet: FleetArgs,
    /// Timed runs per system after one warm-up (the median is kept).
    #[arg(long, default_value_t = 5)]
    runs: usize,
}

/// What one streamed answer held.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub(crate) struct Streamed {
    pub(crate) series: u64,
    chunks: u64,
    pub(crate) samples: u64,
    bytes: u64,
}

/// Samples of an XOR chunk: its big-endian 2-byte header.
fn chunk_samples(data: &[u8]) -> u64 {
    data.get(..2).map_or(0, |h| u64::from(u16::from_be_bytes([h[0], h[1]])))
}

pub(crate) async fn strata_series(addr: &str, min_t: i64, max_t: i64) -> Result<Streamed, String> {
    let channel = grpc_channel(addr).await?;
    let mut client = StoreClient::new(channel).max_decoding_message_size(usize::MAX);
    let req = SeriesRequest {
        min_time: min_t,
        max_time: max_t,
        matchers: vec![LabelMatcher {
            r#type: label_matcher::Type::Re as i32,
            name: "__name__".into(),
            value: ".+".into(),
        }],
        ..Default::default()
    };
    let mut stream = client.series(req).await.map_err(|e| format!("Series: {e}"))?.into_inner();
    let mut out = Streamed::default();
    while let Some(frame) = stream.message().await.map_err(|e| format!("Series stream: {e}"))? {
        out.bytes += frame.encoded_len() as u64;
        if let Some(series_response::Result::Series(s)) = frame.result {
            out.series += 1;
            for c in s.chunks {
                out.chunks += 1;
                out.samples += c.raw.map_or(0, |r| chunk_samples(&r.data));
            }
        }
    }
    Ok(out)
}

/// Parses the remote-read frames in `buf` (`uvarint length | CRC32C | ChunkedReadResponse`),
/// counting into `out`; returns the bytes consumed.
fn read_frames(buf: &[u8], out: &mut Streamed, last_series: &mut Vec<u8>) -> Result<usize, String> {
    let mut pos = 0;
    loop {
        let Some((len, n)) = engine::chunkenc::uvarint(&buf[pos..]) else { return Ok(pos) };
        let len = usize::try_from(len).map_err(|e| e.to_string())?;
        let (start, end) = (pos + n + 4, pos + n + 4 + len);
        if buf.len() < end {
            return Ok(pos);
        }
        let resp = ChunkedReadResponse::decode(&buf[start..end]).map_err(|e| format!("remote read frame: {e}"))?;
        for s in resp.chunked_series {
            // A series split over frames repeats its labels: count it once.
            let key: Vec<u8> =
                s.labels.iter().flat_map(|l| [l.name.as_bytes(), b"\xff", l.value.as_bytes()].concat()).collect();
            if key != *last_series {
                out.series += 1;
                *last_series = key;
            }
            for c in s.chunks {
                out.chunks += 1;
                out.samples += chunk_samples(&c.data);
            }
        }
        out.bytes += (end - pos) as u64;
        pos = end;
    }
}

pub(crate) async fn prometheus_read(
    client: &reqwest::Client,
    base: &str,
    min_t: i64,
    max_t: i64,
) -> Result<Streamed, String> {
    let req = ReadRequest {
        queries: vec![Query {
            start_timestamp_ms: min_t,
            end_timestamp_ms: max_t,
            matchers: vec![LabelMatcher {
                r#type: label_matcher::Type::Re as i32,
                name: "__name__".into(),
                value: ".+".into(),
            }],
            hints: None,
        }],
        accepted_response_types: vec![read_request::ResponseType::StreamedXorChunks as i32],
    };
    let body = ingest::remote_write::compress(&req.encode_to_vec()).map_err(|e| e.to_string())?;
    let mut resp = ingest::remote_read::post(client, &format!("{base}/api/v1/read"), body)
        .send()
        .await
        .map_err(|e| format!("remote read: {e}"))?;
    if !resp.status().is_success() {
        return Err(format!("remote read: HTTP {}", resp.status()));
    }
    let (mut out, mut buf, mut last) = (Streamed::default(), Vec::new(), Vec::new());
    while let Some(part) = resp.chunk().await.map_err(|e| format!("remote read body: {e}"))? {
        buf.extend_from_slice(&part);
        let used = read_frames(&buf, &mut out, &mut last)?;
        buf.drain(..used);
    }
    if !buf.is_empty() {
        return Err(format!("remote read: {} bytes of a partial frame at the end", buf.len()));
    }
    Ok(out)
}

fn median(v: &mut [f64]) -> f64 {
    v.sort_by(f64::total_cmp);
    v.get(v.len() / 2).copied().unwrap_or(0.0)
}

pub(crate) fn run(a: Args) -> Result<(), String> {
    let work = tempfile::tempdir().map_err(|e| e.to_string())?;
    let spec = a.fleet.spec()?;
    let blocks = promtool_blocks("series", &spec, work.path(), "blocks")?;
    let rt = crate::util::runtime()?;

    // Strata: the blocks converted into a bucket, served by strata store.
    let (bcfg, _) = converted_bucket(&rt, &blocks, work.path())?;
    let port = || free_port().map_err(|e| e.to_string());
    let (grpc, http) = (format!("127.0.0.1:{}", port()?), format!("127.0.0.1:{}", port()?));
    let strata_bin = std::env::current_exe().map_err(|e| e.to_string())?.with_file_name("strata");
    let strata_log = work.path().join("store.log");
    let mut strata = Daemon::spawn(
        Command::new(&strata_bin).args(["store", "--objstore.config-file"]).arg(&bcfg).args([
            "--grpc-address",
            &grpc,
            "--http-address",
            &http,
        ]),
        &strata_log,
    )
    .map_err(|e| format!("{e} (cargo build --release --workspace first)"))?;
    // Prometheus: the promtool blocks as its TSDB.
    let (mut prom, pbase, prom_log) = prometheus_over(&blocks, work.path())?;
    let client = reqwest::Client::new();
    let ready = Duration::from_secs(120);
    rt.block_on(prom.wait_http_ok(&format!("{pbase}/-/ready"), ready, &prom_log)).map_err(|e| e.to_string())?;
    rt.block_on(strata.wait_http_ok(&format!("http://{http}/-/ready"), ready, &strata_log))
        .map_err(|e| e.to_string())?;

    let (min_t, max_t) = (spec.start_ms, spec.start_ms + spec.duration_ms);
    let timed_strata = || {
        rt.block_on(async {
            let t = Instant::now();
            let s = strata_series(&grpc, min_t, max_t).await?;
            Ok::<_, String>((t.elapsed().as_secs_f64(), s))
        })
    };
    let timed_prom = || {
        rt.block_on(async {
            let t = Instant::now();
            let s = prometheus_read(&client, &pbase, min_t, max_t).await?;
            Ok::<_, String>((t.elapsed().as_secs_f64(), s))
        })
    };
    let (s_cold, s_what) = timed_strata()?;
    let (_, p_what) = timed_prom()?;
    if s_what.samples != p_what.samples || s_what.series != p_what.series {
        return Err(format!("the answers differ: strata {s_what:?}, prometheus {p_what:?}"));
    }
    let (mut st, mut pt) = (Vec::new(), Vec::new());
    for _ in 0..a.runs.max(1) {
        st.push(timed_strata()?.0);
        pt.push(timed_prom()?.0);
    }
    let (s, p) = (median(&mut st), median(&mut pt));
    let samples = s_what.samples as f64;
    println!(
        "bench series: {} series, {} samples, {} h at {} s; one request for every series over the whole range; \
         median of {} runs after 1 warm-up, systems alternating",
        s_what.series, s_what.samples, a.fleet.hours, a.fleet.interval, a.runs
    );
    println!("{:<34} {:>10} {:>12} {:>10} {:>12}", "system", "median ms", "samples/s", "chunks", "MB sent");
    println!(
        "{:<34} {:>10.0} {:>11.1}M {:>10} {:>12.1}",
        "strata store (Series, gRPC)",
        s * 1000.0,
        samples / s / 1e6,
        s_what.chunks,
        s_what.bytes as f64 / 1e6
    );
    println!(
        "{:<34} {:>10.0} {:>11.1}M {:>10} {:>12.1}",
        "prometheus 2.42 (remote read XOR)",
        p * 1000.0,
        samples / p / 1e6,
        p_what.chunks,
        p_what.bytes as f64 / 1e6
    );
    println!(
        "strata cold (first request): {:.0} ms; throughput ratio strata/prometheus: {:.2}",
        s_cold * 1000.0,
        p / s
    );
    Ok(())
}
