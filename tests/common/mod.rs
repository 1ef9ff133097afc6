//! Shared helpers of the end-to-end tests: real peers (promtool, moto), free ports, the strata binary.
#![allow(dead_code, unused_imports, unreachable_pub, clippy::unwrap_used, clippy::expect_used)]

use std::collections::BTreeMap;
use std::io::Write;
use std::path::{Path, PathBuf};
use std::process::{Command, Output, Stdio};
use std::time::{Duration, Instant};

pub use ingest::testkit::{Daemon, peer, read_log, urlencode};

mod blocks;
pub use blocks::*;

/// A free loopback TCP port.
pub fn free_port() -> u16 {
    ingest::testkit::free_port().unwrap()
}

/// Path of the strata binary under test.
pub fn strata_bin() -> PathBuf {
    PathBuf::from(env!("CARGO_BIN_EXE_strata"))
}

/// Runs strata with args; returns its output (does not assert success).
pub fn strata(args: &[&str]) -> Output {
    Command::new(strata_bin()).args(args).env("RUST_LOG", "info").output().unwrap()
}

/// Runs strata and asserts success; returns stdout.
pub fn strata_ok(args: &[&str]) -> String {
    let out = strata(args);
    assert!(
        out.status.success(),
        "strata {args:?} failed: {}\nstdout: {}\nstderr: {}",
        out.status,
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8(out.stdout).unwrap()
}

/// Writes a FILESYSTEM objstore config for `dir` and returns its path.
pub fn fs_bucket_config(dir: &Path, bucket_dir: &Path) -> PathBuf {
    let p = dir.join("bucket.yml");
    std::fs::write(&p, format!("type: FILESYSTEM\nconfig:\n  directory: {}\n", bucket_dir.display())).unwrap();
    p
}

/// Runs `promtool tsdb create-blocks-from openmetrics` on `om_text` (written to `work/input.om`)
/// into `out_dir`.
pub fn promtool_blocks(promtool: &Path, om_text: &str, work: &Path, out_dir: &Path) {
    let om = work.join("input.om");
    std::fs::write(&om, om_text).unwrap();
    ingest::testkit::promtool_blocks(promtool, &om, out_dir).unwrap();
}

/// One sample as promtool prints it: timestamp and value (compared bitwise, NaN equal to NaN).
pub type Dump = BTreeMap<String, Vec<(i64, f64)>>;

/// `promtool tsdb dump` of the blocks in `data` (copied to a scratch dir with a `wal/` folder).
pub fn promtool_dump(promtool: &Path, data: &Path, scratch: &Path) -> Dump {
    std::fs::create_dir_all(scratch.join("wal")).unwrap();
    for e in std::fs::read_dir(data).unwrap() {
        let e = e.unwrap();
        if e.path().join("meta.json").exists() {
            copy_dir(&e.path(), &scratch.join(e.file_name()));
        }
    }
    let out = Command::new(promtool).args(["tsdb", "dump"]).arg(scratch).output().unwrap();
    assert!(out.status.success(), "promtool dump failed: {}", String::from_utf8_lossy(&out.stderr));
    let mut m: Dump = BTreeMap::new();
    for line in String::from_utf8(out.stdout).unwrap().lines() {
        let close = line.rfind('}').unwrap();
        let (labels, rest) = line.split_at(close + 1);
        let mut it = rest.split_whitespace();
        let v = parse_go_float(it.next().unwrap());
        let t: i64 = it.next().unwrap().parse().unwrap();
        m.entry(labels.to_string()).or_default().push((t, v));
    }
    m
}

/// Parses a float as Go prints it (NaN, +Inf, -Inf, decimals, exponents).
pub fn parse_go_float(s: &str) -> f64 {
    match s {
        "NaN" => f64::NAN,
        "+Inf" => f64::INFINITY,
        "-Inf" => f64::NEG_INFINITY,
        _ => s.parse().unwrap(),
    }
}

/// Formats a label set the way promtool's dump does: `{__name__="x", a="b"}`.
pub fn dump_key(labels: &engine::Labels) -> String {
    let parts: Vec<String> = labels.iter().map(|l| format!("{}={:?}", l.name, l.value)).collect();
    format!("{{{}}}", parts.join(", "))
}

/// Recursively copies a directory.
pub fn copy_dir(from: &Path, to: &Path) {
    ingest::testkit::copy_dir(from, to).unwrap();
}

/// A running `strata` server: its process (killed on drop), HTTP base URL and log file.
pub struct Strata {
    pub daemon: Daemon,
    pub base: String,
    pub log: PathBuf,
}

impl Strata {
    /// Starts `strata <args> --http-address 127.0.0.1:<free port>` with `RUST_LOG=info` and stderr
    /// appended to `log`, and waits (60 s at most) until `/-/ready` answers 200.
    pub async fn start(args: &[&str], log: &Path) -> Strata {
        Self::start_at(args, &format!("127.0.0.1:{}", free_port()), log).await
    }

    /// Like [`Strata::start`] on the HTTP address `addr`.
    pub async fn start_at(args: &[&str], addr: &str, log: &Path) -> Strata {
        let mut cmd = Command::new(strata_bin());
        cmd.args(args).args(["--http-address", addr]).env("RUST_LOG", "info");
        let mut daemon = Daemon::spawn(&mut cmd, log).unwrap();
        let base = format!("http://{addr}");
        if let Err(e) = daemon.wait_http_ok(&format!("{base}/-/ready"), Duration::from_secs(60), log).await {
            panic!("strata {args:?} did not get ready: {e}");
        }
        Strata { daemon, base, log: log.to_path_buf() }
    }

    /// `base` + `path`.
    pub fn url(&self, path: &str) -> String {
        format!("{}{path}", self.base)
    }

    /// The log so far.
    pub fn log_text(&self) -> String {
        read_log(&self.log)
    }

    /// SIGTERM, then asserts a clean exit (status 0) within 60 s.
    pub async fn stop(mut self) {
        let st = self.daemon.terminate(Duration::from_secs(60)).await.unwrap();
        assert!(st.success(), "strata exited with {st}; log:\n{}", self.log_text());
    }

    /// SIGKILL: no shutdown path runs.
    pub fn kill9(mut self) {
        let st = self.daemon.kill().unwrap();
        assert!(!st.success(), "killed process reported success: {st}");
    }

    /// GET `path_and_query`: the status and the JSON body.
    pub async fn get(&self, path_and_query: &str) -> (u16, serde_json::Value) {
        let r = reqwest::Client::new().get(self.url(path_and_query)).send().await.unwrap();
        Self::decode(r).await
    }

    /// POST a form body to `path`: the status and the JSON body.
    pub async fn post(&self, path: &str, form: &str) -> (u16, serde_json::Value) {
        let r = reqwest::Client::new()
            .post(self.url(path))
            .header("content-type", "application/x-www-form-urlencoded")
            .body(form.to_string())
            .send()
            .await
            .unwrap();
        Self::decode(r).await
    }

    /// The status and JSON body of a response, asserting the JSON content type.
    pub async fn decode(r: reqwest::Response) -> (u16, serde_json::Value) {
        let status = r.status().as_u16();
        assert_eq!(r.headers()["content-type"], "application/json");
        let text = r.text().await.unwrap();
        (status, serde_json::from_str(&text).unwrap_or_else(|e| panic!("{e}: {text}")))
    }

    /// GET `path`: the status and the body as text.
    pub async fn text(&self, path: &str) -> (u16, String) {
        let r = reqwest::Client::new().get(self.url(path)).send().await.unwrap();
        (r.status().as_u16(), r.text().await.unwrap())
    }
}

/// Starts `moto_server` (S3) on a free loopback port and waits until it answers. None if missing.
pub fn start_moto() -> Option<(Daemon, u16)> {
    let bin = peer("moto_server")?;
    let port = free_port();
    let child = Command::new(bin)
        .args(["-H", "127.0.0.1", "-p", &port.to_string()])
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .unwrap();
    let d = Daemon(child);
    let deadline = Instant::now() + Duration::from_secs(30);
    while Instant::now() < deadline {
        if std::net::TcpStream::connect(("127.0.0.1", port)).is_ok() {
            return Some((d, port));
        }
        std::thread::sleep(Duration::from_millis(100));
    }
    panic!("moto_server did not start on port {port}");
}

/// Creates an S3 bucket on a moto server with a plain HTTP PUT.
pub fn create_s3_bucket(port: u16, name: &str) {
    use std::io::{Read, Write};
    let mut s = std::net::TcpStream::connect(("127.0.0.1", port)).unwrap();
    write!(s, "PUT /{name} HTTP/1.1\r\nHost: 127.0.0.1:{port}\r\nContent-Length: 0\r\nConnection: close\r\n\r\n")
        .unwrap();
    let mut resp = String::new();
    s.read_to_string(&mut resp).unwrap();
    assert!(resp.starts_with("HTTP/1.1 200"), "bucket creation failed: {resp}");
}

/// Reads every series of the bucket through the engine and renders it like promtool's dump,
/// dropping the external labels that the converter put into meta.json.
pub async fn bucket_dump(bucket: &engine::bucket::Bucket, drop_labels: &[&str]) -> Dump {
    let src = engine::bucket_source::BucketSource::new(bucket.clone());
    src.sync().await.unwrap();
    let req = engine::SelectRequest {
        matchers: vec![engine::Matcher::new(engine::MatchOp::RegexMatch, "__name__", ".+").unwrap()],
        min_t: i64::MIN,
        max_t: i64::MAX,
        ..Default::default()
    };
    let batches: Vec<engine::SeriesBatch> =
        futures::TryStreamExt::try_collect(engine::SeriesSource::select(&src, &req).await.unwrap()).await.unwrap();
    let mut out = Dump::new();
    for b in &batches {
        for i in 0..b.num_series() {
            let (l, t, v) = b.series(i);
            let mut l = l.clone();
            for d in drop_labels {
                l.remove(d);
            }
            let e = out.entry(dump_key(&l)).or_default();
            e.extend(t.iter().copied().zip(v.iter().copied()));
        }
    }
    out
}

pub fn assert_same(expected: &Dump, got: &Dump) {
    assert_eq!(expected.len(), got.len(), "series count differs");
    for (k, want) in expected {
        let have = got.get(k).unwrap_or_else(|| panic!("series {k} missing after conversion"));
        assert_eq!(want.len(), have.len(), "sample count differs for {k}");
        for (w, h) in want.iter().zip(have) {
            assert_eq!(w.0, h.0, "timestamp differs for {k}");
            assert!(
                w.1.to_bits() == h.1.to_bits() || (w.1.is_nan() && h.1.is_nan()) || w.1 == h.1,
                "value differs for {k} at {}: {} vs {}",
                w.0,
                w.1,
                h.1
            );
        }
    }
}

/// Starts `cmd` with stderr to `log` and waits (up to 60 s) until `base/-/ready` answers 200.
pub async fn start_daemon(cmd: &mut Command, base: &str, log: &Path) -> Daemon {
    let mut d = Daemon::spawn(cmd, log).unwrap();
    if let Err(e) = d.wait_http_ok(&format!("{base}/-/ready"), Duration::from_secs(60), log).await {
        panic!("{cmd:?} did not get ready: {e}");
    }
    d
}

/// The test venv's python (`$STRATA_VENV`, default /var/tmp/strata-venv) if it can import every
/// module of `modules`. Under CI=true a missing one panics (the test FAILS); otherwise None.
pub fn venv_python(modules: &[&str]) -> Option<PathBuf> {
    let venv = std::env::var("STRATA_VENV").unwrap_or_else(|_| "/var/tmp/strata-venv".into());
    let py = Path::new(&venv).join("bin/python");
    let import = format!("import {}", modules.join(", "));
    let ok = py.is_file() && Command::new(&py).args(["-c", &import]).status().is_ok_and(|s| s.success());
    if !ok {
        if std::env::var("CI").as_deref() == Ok("true") {
            panic!("python modules {modules:?} are not installed in {venv} (run scripts/install-test-deps)");
        }
        eprintln!("NOTICE: python modules {modules:?} not in {venv}; skipping this test (it fails under CI=true)");
        return None;
    }
    Some(py)
}

/// A plain HTTP/1.1 GET of `path` on a loopback port: the status (0 when nothing answers) and the
/// body.
pub fn http_get(port: u16, path: &str) -> (u16, String) {
    use std::io::{Read, Write};
    let Ok(mut s) = std::net::TcpStream::connect(("127.0.0.1", port)) else { return (0, String::new()) };
    let req = format!("GET {path} HTTP/1.1\r\nHost: 127.0.0.1:{port}\r\nConnection: close\r\n\r\n");
    if s.write_all(req.as_bytes()).is_err() {
        return (0, String::new());
    }
    let mut resp = String::new();
    if s.read_to_string(&mut resp).is_err() {
        return (0, String::new());
    }
    let status = resp.split_whitespace().nth(1).and_then(|c| c.parse().ok()).unwrap_or(0);
    let body = resp.split_once("\r\n\r\n").map(|(_, b)| b.to_string()).unwrap_or_default();
    (status, body)
}

/// `ingest::datagen` fleet data for `spec` as OpenMetrics text, plus a gauge family `special{kind="edge"}`
/// with NaN, infinities, signed zero and extreme values, one a minute from the spec's start.
pub fn openmetrics_with_specials(spec: &ingest::datagen::GenSpec) -> String {
    let mut buf = Vec::new();
    ingest::datagen::write_openmetrics(spec, &mut buf).unwrap();
    let mut text = String::from_utf8(buf).unwrap();
    text.truncate(text.len() - "# EOF\n".len());
    text.push_str("# TYPE special gauge\n");
    let t0 = spec.start_ms / 1000;
    for (i, v) in ["NaN", "+Inf", "-Inf", "0", "-0.0", "1e-300", "123456789.123456789", "NaN"].iter().enumerate() {
        text.push_str(&format!("special{{kind=\"edge\"}} {v} {}\n", t0 + 60 * i as i64));
    }
    text.push_str("# EOF\n");
    text
}

/// POSTs a snappy-compressed remote-write 1.0 body to `url`; the status and the response text.
pub async fn post_remote_write(url: &str, body: Vec<u8>) -> (u16, String) {
    let r = ingest::remote_write::post(&reqwest::Client::new(), url, body).send().await.unwrap();
    (r.status().as_u16(), r.text().await.unwrap())
}

/// Runs tests/python/storeapi_client.py against `grpc` with `requests`; its results by request
/// name, or its stderr.
pub fn python_client(py: &Path, grpc: &str, requests: &serde_json::Value) -> Result<serde_json::Value, String> {
    python_storeapi_script(py, "storeapi_client.py", grpc, requests)
}

/// Runs `tests/python/<script> PROTO_DIR grpc` with `input` as JSON on stdin; its JSON output, or
/// its stderr.
pub fn python_storeapi_script(
    py: &Path,
    script: &str,
    grpc: &str,
    input: &serde_json::Value,
) -> Result<serde_json::Value, String> {
    let script = Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/python").join(script);
    let requests = input;
    let protos = Path::new(env!("CARGO_MANIFEST_DIR")).join("proto/proto");
    let mut child = Command::new(py)
        .arg(&script)
        .arg(&protos)
        .arg(grpc)
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    child.stdin.take().unwrap().write_all(requests.to_string().as_bytes()).unwrap();
    let out = child.wait_with_output().unwrap();
    if !out.status.success() {
        return Err(format!("{} failed: {}", script.display(), String::from_utf8_lossy(&out.stderr)));
    }
    Ok(serde_json::from_slice(&out.stdout).unwrap())
}

/// The series of a matrix answer: labels (as `{name=value,...}` JSON text) and points (ms, value).
pub fn matrix(v: &serde_json::Value) -> Vec<(serde_json::Value, Vec<(i64, f64)>)> {
    assert_eq!(v["status"], "success", "{v}");
    v["data"]["result"]
        .as_array()
        .unwrap()
        .iter()
        .map(|r| {
            let pts = r["values"]
                .as_array()
                .unwrap()
                .iter()
                .map(|p| ((p[0].as_f64().unwrap() * 1000.0).round() as i64, parse_go_float(p[1].as_str().unwrap())))
                .collect();
            (r["metric"].clone(), pts)
        })
        .collect()
}

/// The series of a matrix answer with their values as sent (text): labels without `drop` (as JSON
/// text) and points (ms, value).
pub fn raw_series(v: &serde_json::Value, drop: &[&str]) -> Vec<(String, Vec<(i64, String)>)> {
    assert_eq!(v["status"], "success", "{v}");
    v["data"]["result"]
        .as_array()
        .unwrap()
        .iter()
        .map(|s| {
            let mut m = s["metric"].as_object().unwrap().clone();
            for d in drop {
                m.remove(*d);
            }
            let pts = s["values"]
                .as_array()
                .unwrap()
                .iter()
                .map(|p| ((p[0].as_f64().unwrap() * 1000.0).round() as i64, p[1].as_str().unwrap().to_string()))
                .collect();
            (serde_json::Value::Object(m).to_string(), pts)
        })
        .collect()
}

/// A `strata receive` with its addresses, tsdb dir and log; restartable on the same ports and dir.
pub struct Receiver {
    pub rw: String,
    pub grpc: String,
    pub http: String,
    pub args: Vec<String>,
    pub log: PathBuf,
    pub server: Option<Strata>,
}

impl Receiver {
    /// A receiver named `name` under `dir` (tsdb dir, log) on free ports, cutting every second;
    /// `extra` flags are appended (add more to `args` before [`Receiver::start`]).
    pub fn new(dir: &Path, name: &str, bucket_cfg: &Path, extra: &[&str]) -> Receiver {
        let rw = format!("127.0.0.1:{}", free_port());
        let grpc = format!("127.0.0.1:{}", free_port());
        let tsdb = dir.join(format!("tsdb-{name}"));
        let mut args: Vec<String> = ["receive", "--remote-write.address", &rw, "--grpc-address", &grpc, "--tsdb.path"]
            .iter()
            .map(|s| s.to_string())
            .collect();
        args.push(tsdb.to_str().unwrap().into());
        args.extend(["--objstore.config-file".into(), bucket_cfg.to_str().unwrap().into()]);
        args.extend(["--receive.cut-interval".into(), "1s".into()]);
        args.extend(extra.iter().map(|s| s.to_string()));
        let http = format!("127.0.0.1:{}", free_port());
        Receiver { rw, grpc, http, args, log: dir.join(format!("receive-{name}.log")), server: None }
    }

    /// Starts it and waits until ready.
    pub async fn start(&mut self) {
        let args: Vec<&str> = self.args.iter().map(String::as_str).collect();
        self.server = Some(Strata::start_at(&args, &self.http, &self.log).await);
    }

    /// SIGTERM, asserting a clean exit.
    pub async fn stop(&mut self) {
        self.server.take().unwrap().stop().await;
    }

    /// SIGKILL.
    pub fn kill9(&mut self) {
        self.server.take().unwrap().kill9();
    }

    /// Its log so far.
    pub fn log_text(&self) -> String {
        read_log(&self.log)
    }
}

/// Runs `cmd` (a `strata compact`) with the compactor's test hook pausing at `point`
/// (`STRATA_COMPACT_TEST_PAUSE_AT`, see compactor/src/hooks.rs), waits until it paused there (its
/// stderr goes to `log`), kills it with SIGKILL and reaps it.
pub async fn compact_killed_at(cmd: &mut Command, point: &str, log: &Path) {
    let mut d = Daemon::spawn(cmd.env("STRATA_COMPACT_TEST_PAUSE_AT", point), log).unwrap();
    let deadline = Instant::now() + Duration::from_secs(120);
    while !read_log(log).contains("strata-compact-test-hook: paused at") {
        assert!(d.0.try_wait().unwrap().is_none(), "{point}: exited before pausing:\n{}", read_log(log));
        assert!(Instant::now() < deadline, "{point}: never paused:\n{}", read_log(log));
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    d.0.kill().unwrap(); // SIGKILL
    d.0.wait().unwrap();
}
