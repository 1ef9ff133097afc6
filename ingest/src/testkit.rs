//! Test support shared by the end-to-end tests (`tests/`), the benchmarks (`bench`) and this crate's
//! own tests: peer programs on PATH, free loopback ports, child processes killed on drop that are
//! waited for over HTTP and stopped with SIGTERM, directory copies and sizes, TSDB blocks made by
//! promtool, query-string encoding.
//!
//! It lives here, not in `bench`, so that nothing has to depend on `bench`; `ingest` is the lowest
//! crate that already speaks HTTP (reqwest) and Prometheus's formats, which these helpers drive. Not
//! part of Strata's API (hidden from the docs).

use std::path::{Path, PathBuf};
use std::process::{Child, Command, ExitStatus, Stdio};
use std::time::{Duration, Instant};

use crate::error::{Error, Result};

/// A peer program (`promtool`, `prometheus`, `moto_server`, ...) on PATH. When it is missing, a
/// test skips with a notice, except under `CI=true`, where a missing peer must fail the run.
///
/// # Panics
/// When `name` is not on PATH and `CI=true` (the test fails, as the test rules ask).
pub fn peer(name: &str) -> Option<PathBuf> {
    let found = std::env::var_os("PATH")
        .and_then(|paths| std::env::split_paths(&paths).map(|d| d.join(name)).find(|p| p.is_file()));
    if found.is_none() {
        if std::env::var("CI").as_deref() == Ok("true") {
            panic!("required test peer {name:?} is not installed (run scripts/install-test-deps)");
        }
        eprintln!("NOTICE: {name} not found on PATH; skipping this test (it fails under CI=true)");
    }
    found
}

/// A free loopback TCP port, found by binding it and releasing it at once.
///
/// Ports come from below the kernel's ephemeral range (`net.ipv4.ip_local_port_range`), walked
/// from a start that depends on the process id, and no port is handed out twice in one process.
/// So the port a stopped test server leaves behind is not given to another test of the same
/// binary, nor to a client connection's or a `bind(:0)`'s ephemeral port, before that server is
/// started again on it. Falls back to a kernel-chosen port when the range below is too small.
pub fn free_port() -> Result<u16> {
    use std::sync::Mutex;
    use std::sync::atomic::{AtomicU32, Ordering};
    /// The lowest port handed out (well above the privileged and common service ports).
    const LOW: u32 = 10_000;
    static NEXT: AtomicU32 = AtomicU32::new(0);
    static GIVEN: Mutex<Vec<u16>> = Mutex::new(Vec::new());
    let high = std::fs::read_to_string("/proc/sys/net/ipv4/ip_local_port_range")
        .ok()
        .and_then(|s| s.split_whitespace().next().and_then(|p| p.parse::<u32>().ok()))
        .unwrap_or(32_768);
    let bind = |port: u32| std::net::TcpListener::bind(("127.0.0.1", port as u16)).and_then(|l| l.local_addr());
    if high > LOW + 1_000 {
        let span = high - LOW;
        if NEXT.load(Ordering::Relaxed) == 0 {
            let start = 1 + std::process::id().wrapping_mul(2_654_435_761) % span;
            let _ = NEXT.compare_exchange(0, start, Ordering::Relaxed, Ordering::Relaxed);
        }
        for _ in 0..span {
            let port = LOW + NEXT.fetch_add(1, Ordering::Relaxed) % span;
            let mut given = GIVEN.lock().unwrap_or_else(|e| e.into_inner());
            if given.contains(&(port as u16)) {
                continue;
            }
            if bind(port).is_ok() {
                given.push(port as u16);
                return Ok(port as u16);
            }
        }
    }
    bind(0).map(|a| a.port()).map_err(|e| Error::io("127.0.0.1:0", e))
}

/// Copies directory `from` into `to` recursively (creating `to`).
pub fn copy_dir(from: &Path, to: &Path) -> Result<()> {
    std::fs::create_dir_all(to).map_err(|e| Error::io(to, e))?;
    for e in std::fs::read_dir(from).map_err(|e| Error::io(from, e))? {
        let e = e.map_err(|e| Error::io(from, e))?;
        let (src, dst) = (e.path(), to.join(e.file_name()));
        if e.file_type().map_err(|err| Error::io(&src, err))?.is_dir() {
            copy_dir(&src, &dst)?;
        } else {
            std::fs::copy(&src, &dst).map_err(|err| Error::io(&src, err))?;
        }
    }
    Ok(())
}

/// Bytes of the files under `dir` (recursively) that `filter` accepts; unreadable entries count 0.
pub fn dir_bytes(dir: &Path, filter: &dyn Fn(&Path) -> bool) -> u64 {
    let Ok(rd) = std::fs::read_dir(dir) else { return 0 };
    rd.flatten()
        .map(|e| {
            let p = e.path();
            if p.is_dir() {
                dir_bytes(&p, filter)
            } else if filter(&p) {
                e.metadata().map(|m| m.len()).unwrap_or(0)
            } else {
                0
            }
        })
        .sum()
}

/// Runs `promtool tsdb create-blocks-from openmetrics <openmetrics> <out>`: real Prometheus TSDB
/// blocks of the samples in an OpenMetrics file (timestamps in seconds, ending with `# EOF`).
pub fn promtool_blocks(promtool: &Path, openmetrics: &Path, out: &Path) -> Result<()> {
    let what = format!("{} tsdb create-blocks-from openmetrics {}", promtool.display(), openmetrics.display());
    let o = Command::new(promtool)
        .args(["tsdb", "create-blocks-from", "openmetrics"])
        .arg(openmetrics)
        .arg(out)
        .output()
        .map_err(|e| Error::Process { what: what.clone(), reason: e.to_string() })?;
    if !o.status.success() {
        let reason = format!("{}: {}", o.status, String::from_utf8_lossy(&o.stderr).trim());
        return Err(Error::Process { what, reason });
    }
    Ok(())
}

/// `s` percent-encoded for a URL query string or a form body (`application/x-www-form-urlencoded`).
///
/// ```
/// assert_eq!(ingest::testkit::urlencode("sum(rate(x{a=\"b c\"}[5m]))"), "sum%28rate%28x%7Ba%3D%22b+c%22%7D%5B5m%5D%29%29");
/// ```
pub fn urlencode(s: &str) -> String {
    form_urlencoded::byte_serialize(s.as_bytes()).collect()
}

/// The text of a log file (empty when it cannot be read), for failure messages.
pub fn read_log(path: &Path) -> String {
    std::fs::read_to_string(path).unwrap_or_default()
}

/// A child process, killed and reaped on drop (also when a test panics).
#[derive(Debug)]
pub struct Daemon(pub Child);

impl Drop for Daemon {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

impl Daemon {
    /// Starts `cmd` with stdout discarded and stderr appended to `log` (created when missing), so
    /// that the log keeps every incarnation of a restarted process.
    pub fn spawn(cmd: &mut Command, log: &Path) -> Result<Daemon> {
        let f = std::fs::OpenOptions::new().create(true).append(true).open(log).map_err(|e| Error::io(log, e))?;
        let child = cmd
            .stdout(Stdio::null())
            .stderr(f)
            .spawn()
            .map_err(|e| Error::Process { what: format!("{cmd:?}"), reason: e.to_string() })?;
        Ok(Daemon(child))
    }

    /// Waits until a GET of `url` answers 2xx. Fails when the process exits first or `within`
    /// passes; the error holds the log at `log`.
    pub async fn wait_http_ok(&mut self, url: &str, within: Duration, log: &Path) -> Result<()> {
        let client = reqwest::Client::new();
        let deadline = Instant::now() + within;
        let fail = |reason: String| Error::Process { what: format!("waiting for {url}"), reason };
        loop {
            if let Ok(r) = client.get(url).send().await
                && r.status().is_success()
            {
                return Ok(());
            }
            if let Some(st) = self.0.try_wait().map_err(|e| fail(e.to_string()))? {
                return Err(fail(format!("the process exited with {st}; log:\n{}", read_log(log))));
            }
            if Instant::now() > deadline {
                return Err(fail(format!("no 2xx answer within {within:?}; log:\n{}", read_log(log))));
            }
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
    }

    /// Sends SIGTERM and waits up to `within` for the process to exit; returns its status.
    pub async fn terminate(&mut self, within: Duration) -> Result<ExitStatus> {
        let pid = self.0.id();
        let fail = |reason: String| Error::Process { what: format!("stopping process {pid}"), reason };
        let st = Command::new("kill").args(["-TERM", &pid.to_string()]).status().map_err(|e| fail(e.to_string()))?;
        if !st.success() {
            return Err(fail(format!("kill -TERM exited with {st}")));
        }
        let deadline = Instant::now() + within;
        loop {
            if let Some(st) = self.0.try_wait().map_err(|e| fail(e.to_string()))? {
                return Ok(st);
            }
            if Instant::now() > deadline {
                return Err(fail(format!("still running {within:?} after SIGTERM")));
            }
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    }

    /// SIGKILL (no shutdown path runs) and reap; returns the exit status.
    pub fn kill(&mut self) -> Result<ExitStatus> {
        let pid = self.0.id();
        let fail = |e: std::io::Error| Error::Process { what: format!("killing process {pid}"), reason: e.to_string() };
        self.0.kill().map_err(fail)?;
        self.0.wait().map_err(fail)
    }
}

#[cfg(test)]
#[allow(clippy::unwrap_used, clippy::expect_used)]
mod tests {
    use super::*;

    #[test]
    fn free_ports_are_distinct_bindable_and_below_the_ephemeral_range() {
        let ports: Vec<u16> = (0..200).map(|_| free_port().unwrap()).collect();
        let distinct: std::collections::BTreeSet<u16> = ports.iter().copied().collect();
        assert_eq!(distinct.len(), ports.len(), "a port was handed out twice: {ports:?}");
        let low = std::fs::read_to_string("/proc/sys/net/ipv4/ip_local_port_range").unwrap();
        let low: u16 = low.split_whitespace().next().unwrap().parse().unwrap();
        for p in &ports {
            assert!((10_000..low).contains(p), "port {p} is not in 10000..{low}");
        }
        // released: each can be bound again right away
        let held: Vec<_> = ports.iter().map(|p| std::net::TcpListener::bind(("127.0.0.1", *p)).unwrap()).collect();
        assert_eq!(held.len(), 200);
    }

    #[test]
    fn copy_and_measure_a_tree() {
        let tmp = tempfile::tempdir().unwrap();
        let src = tmp.path().join("src");
        std::fs::create_dir_all(src.join("a/b")).unwrap();
        std::fs::write(src.join("top.parquet"), vec![1u8; 10]).unwrap();
        std::fs::write(src.join("a/b/deep.parquet"), vec![2u8; 7]).unwrap();
        std::fs::write(src.join("a/other.json"), b"{}").unwrap();
        let dst = tmp.path().join("dst");
        copy_dir(&src, &dst).unwrap();
        assert_eq!(std::fs::read(dst.join("a/b/deep.parquet")).unwrap(), vec![2u8; 7]);
        let parquet = |p: &Path| p.extension().is_some_and(|e| e == "parquet");
        assert_eq!((dir_bytes(&dst, &parquet), dir_bytes(&dst, &|_| true)), (17, 19));
        assert!(copy_dir(&tmp.path().join("missing"), &dst).unwrap_err().to_string().contains("missing"));
    }

    #[tokio::test]
    async fn daemon_waits_stops_and_reports_an_early_exit() {
        let tmp = tempfile::tempdir().unwrap();
        let log = tmp.path().join("sleep.log");
        let mut d = Daemon::spawn(Command::new("sleep").arg("30"), &log).unwrap();
        let st = d.terminate(Duration::from_secs(10)).await.unwrap();
        assert!(!st.success(), "{st}");
        let log = tmp.path().join("sh.log");
        let mut d = Daemon::spawn(Command::new("sh").args(["-c", "echo broken config >&2; exit 3"]), &log).unwrap();
        let port = free_port().unwrap();
        let e = d.wait_http_ok(&format!("http://127.0.0.1:{port}/"), Duration::from_secs(30), &log).await.unwrap_err();
        assert!(e.to_string().contains("broken config"), "{e}");
    }
}
