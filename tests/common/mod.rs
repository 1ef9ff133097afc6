//! Shared helpers of the end-to-end tests: real peers (promtool, moto), free ports, the strata binary.
#![allow(dead_code, unused_imports, unreachable_pub, clippy::unwrap_used, clippy::expect_used)]

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::process::{Command, Output, Stdio};
use std::time::{Duration, Instant};

pub use ingest::testkit::{Daemon, peer, read_log, urlencode};

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
