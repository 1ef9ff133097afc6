//! Synthetic Prometheus-like data as OpenMetrics text, for `promtool tsdb create-blocks-from openmetrics`
//! (`strata tools gen` writes it to stdout; the benchmarks and end-to-end tests use it too).
//!
//! The mix imitates a scraped fleet: per target an `up` gauge, request counters by method and status
//! with uneven increments, memory and temperature gauges with decimals, a constant `build_info`, and a
//! classic histogram (`_bucket` with `le`, `_sum`, `_count`). Timestamps follow Prometheus's scrape
//! loop: each scrape starts up to [`GenSpec::jitter_ms`] late (timer jitter), and, as Prometheus
//! 2.42 does for intervals over 200 ms (`ScrapeTimestampTolerance`), a scrape within 2 ms of its grid
//! time is stamped with the grid time; later ones keep their real time. Everything is deterministic
//! for a given [`GenSpec::seed`].

use std::io::{self, Write};

use rand::rngs::StdRng;
use rand::{Rng, SeedableRng};

use crate::error::{Error, Result};

/// What to generate.
#[derive(Debug, Clone)]
pub struct GenSpec {
    /// Number of scrape targets (`instance` values). Each target has [`SERIES_PER_TARGET`] series.
    pub targets: usize,
    /// First scrape, in ms since the epoch.
    pub start_ms: i64,
    /// Length of the generated range in ms.
    pub duration_ms: i64,
    /// Scrape interval in ms.
    pub interval_ms: i64,
    /// Maximum lateness of a scrape in ms (0 for exact grid timestamps); scrapes at most
    /// [`SCRAPE_TIMESTAMP_TOLERANCE_MS`] late are stamped on the grid, as Prometheus does.
    pub jitter_ms: i64,
    /// Random seed.
    pub seed: u64,
}

impl Default for GenSpec {
    fn default() -> Self {
        GenSpec {
            targets: 10,
            start_ms: 1_700_000_000_000,
            duration_ms: 4 * 3_600_000,
            interval_ms: 15_000,
            jitter_ms: 3,
            seed: 42,
        }
    }
}

impl GenSpec {
    /// `targets` scrape targets over `hours` hours, one scrape every `interval_s` seconds, from the
    /// default start with the default jitter and `seed`. Refuses a spec that generates nothing
    /// sensible (no targets, no time, an interval under 1 ms or longer than the range).
    ///
    /// ```
    /// let s = ingest::datagen::GenSpec::fleet(3, 1.0, 15.0, 42).unwrap();
    /// assert_eq!(ingest::datagen::total_samples(&s), 3 * ingest::datagen::SERIES_PER_TARGET as u64 * 240);
    /// assert!(ingest::datagen::GenSpec::fleet(3, 1.0, 0.0, 42).is_err());
    /// ```
    pub fn fleet(targets: usize, hours: f64, interval_s: f64, seed: u64) -> Result<Self> {
        let bad = |reason: String| Err(Error::BadGenSpec { reason });
        if targets == 0 {
            return bad("--targets must be at least 1".into());
        }
        if !(hours.is_finite() && hours > 0.0 && hours <= 24.0 * 366.0 * 10.0) {
            return bad(format!("--hours {hours}: expected a number of hours above 0 (at most ten years)"));
        }
        if !(interval_s.is_finite() && interval_s >= 0.001 && interval_s <= hours * 3600.0) {
            return bad(format!("--interval {interval_s}: expected seconds between 0.001 and the --hours range"));
        }
        Ok(GenSpec {
            targets,
            duration_ms: (hours * 3_600_000.0) as i64,
            interval_ms: (interval_s * 1000.0).round() as i64,
            seed,
            ..Default::default()
        })
    }
}

/// Histogram bucket bounds of the generated classic histogram.
pub const BUCKETS: [&str; 8] = ["0.005", "0.01", "0.05", "0.1", "0.5", "1", "5", "+Inf"];
const METHODS: [&str; 2] = ["GET", "POST"];
const STATUSES: [&str; 3] = ["200", "404", "500"];

/// Series per target: up, 6 request counters, memory, temperature, build_info, and a histogram of
/// `BUCKETS.len()` buckets plus `_sum` and `_count`.
pub const SERIES_PER_TARGET: usize = 1 + METHODS.len() * STATUSES.len() + 3 + BUCKETS.len() + 2;

/// Number of scrapes per series for a spec.
pub fn scrapes(spec: &GenSpec) -> usize {
    (spec.duration_ms / spec.interval_ms.max(1)).max(0) as usize
}

/// Total samples the spec produces.
pub fn total_samples(spec: &GenSpec) -> u64 {
    (spec.targets * SERIES_PER_TARGET * scrapes(spec)) as u64
}

fn job_of(target: usize) -> &'static str {
    ["api", "web", "db", "cache"][target % 4]
}

/// Prometheus's `ScrapeTimestampTolerance`: a scrape this close to its grid time is stamped with it
/// (for scrape intervals over 100 times this).
pub const SCRAPE_TIMESTAMP_TOLERANCE_MS: i64 = 2;

/// Scrape times per target (late by timer jitter, aligned to the grid within Prometheus's
/// tolerance), shared by all series of the target as in a real scrape.
fn scrape_times(spec: &GenSpec, rng: &mut StdRng) -> Vec<Vec<i64>> {
    let aligns = spec.interval_ms > 100 * SCRAPE_TIMESTAMP_TOLERANCE_MS;
    (0..spec.targets)
        .map(|_| {
            (0..scrapes(spec))
                .map(|i| {
                    let late = if spec.jitter_ms > 0 { rng.random_range(0..=spec.jitter_ms) } else { 0 };
                    let j = if aligns && late <= SCRAPE_TIMESTAMP_TOLERANCE_MS { 0 } else { late };
                    spec.start_ms + i as i64 * spec.interval_ms + j
                })
                .collect()
        })
        .collect()
}

/// An OpenMetrics timestamp (seconds with milliseconds).
fn om_ts(ms: i64) -> String {
    format!("{}.{:03}", ms.div_euclid(1000), ms.rem_euclid(1000))
}

/// Writes the OpenMetrics text (ending in `# EOF`) for `spec` to `w`.
pub fn write_openmetrics(spec: &GenSpec, w: &mut impl Write) -> io::Result<()> {
    let n = scrapes(spec);
    let mut rng = StdRng::seed_from_u64(spec.seed);
    let times = scrape_times(spec, &mut rng);
    let lbl = |t: usize| format!("job=\"{}\",instance=\"host-{t:05}:9100\"", job_of(t));

    writeln!(w, "# TYPE up gauge")?;
    for (t, tt) in times.iter().enumerate() {
        for (i, &tm) in tt.iter().enumerate() {
            // an occasional failed scrape
            let v = if (i + t) % 997 == 5 { 0 } else { 1 };
            writeln!(w, "up{{{}}} {v} {}", lbl(t), om_ts(tm))?;
        }
    }
    writeln!(w, "# TYPE http_requests counter")?;
    for (t, tt) in times.iter().enumerate() {
        for m in METHODS {
            for s in STATUSES {
                let rate = match s {
                    "200" => 50.0,
                    "404" => 2.0,
                    _ => 0.3,
                } * if m == "GET" { 1.0 } else { 0.2 };
                let mut v: u64 = rng.random_range(0..10_000);
                for &tm in tt {
                    let inc = (rate * rng.random_range(0.5..1.5_f64)).round() as u64;
                    v += inc;
                    if rng.random_range(0..20_000) == 0 {
                        v = 0; // counter reset (process restart)
                    }
                    writeln!(w, "http_requests_total{{{},method=\"{m}\",status=\"{s}\"}} {v} {}", lbl(t), om_ts(tm))?;
                }
            }
        }
    }
    writeln!(w, "# TYPE process_resident_memory_bytes gauge")?;
    for (t, tt) in times.iter().enumerate() {
        let mut v: f64 = rng.random_range(50e6..500e6_f64).round();
        for &tm in tt {
            v = (v + rng.random_range(-1e6..1e6_f64)).max(1e6).round();
            writeln!(w, "process_resident_memory_bytes{{{}}} {v} {}", lbl(t), om_ts(tm))?;
        }
    }
    writeln!(w, "# TYPE node_temperature_celsius gauge")?;
    for (t, tt) in times.iter().enumerate() {
        let mut v: f64 = rng.random_range(30.0..70.0);
        for &tm in tt {
            v = (v + rng.random_range(-0.5..0.5)).clamp(20.0, 90.0);
            writeln!(w, "node_temperature_celsius{{{}}} {:.2} {}", lbl(t), v, om_ts(tm))?;
        }
    }
    writeln!(w, "# TYPE build_info gauge")?;
    for (t, tt) in times.iter().enumerate() {
        for &tm in tt {
            writeln!(w, "build_info{{{},version=\"1.{}.0\"}} 1 {}", lbl(t), t % 3, om_ts(tm))?;
        }
    }
    // Classic histogram: cumulative bucket counters, sum and count. Written as separate families of
    // type unknown so that each series can be emitted whole (promtool stores samples either way).
    let mut hist: Vec<Vec<(Vec<u64>, f64)>> = Vec::with_capacity(spec.targets);
    for _ in 0..spec.targets {
        let mut counts = vec![0u64; BUCKETS.len()];
        let mut sum = 0.0;
        let mut per = Vec::with_capacity(n);
        for _ in 0..n {
            let obs = rng.random_range(0..40);
            for _ in 0..obs {
                let x: f64 = rng.random_range(0.0..1.0_f64).powi(3) * 3.0;
                sum += x;
                for (b, bound) in BUCKETS.iter().enumerate() {
                    let le: f64 = bound.parse().unwrap_or(f64::INFINITY);
                    if x <= le {
                        counts[b] += 1;
                    }
                }
            }
            per.push((counts.clone(), (sum * 1000.0).round() / 1000.0));
        }
        hist.push(per);
    }
    writeln!(w, "# TYPE request_duration_seconds_bucket unknown")?;
    for (t, tt) in times.iter().enumerate() {
        for (b, bound) in BUCKETS.iter().enumerate() {
            for (i, &tm) in tt.iter().enumerate() {
                writeln!(
                    w,
                    "request_duration_seconds_bucket{{{},le=\"{bound}\"}} {} {}",
                    lbl(t),
                    hist[t][i].0[b],
                    om_ts(tm)
                )?;
            }
        }
    }
    writeln!(w, "# TYPE request_duration_seconds_sum unknown")?;
    for (t, tt) in times.iter().enumerate() {
        for (i, &tm) in tt.iter().enumerate() {
            writeln!(w, "request_duration_seconds_sum{{{}}} {} {}", lbl(t), hist[t][i].1, om_ts(tm))?;
        }
    }
    writeln!(w, "# TYPE request_duration_seconds_count unknown")?;
    for (t, tt) in times.iter().enumerate() {
        for (i, &tm) in tt.iter().enumerate() {
            let c = hist[t][i].0.last().copied().unwrap_or(0);
            writeln!(w, "request_duration_seconds_count{{{}}} {c} {}", lbl(t), om_ts(tm))?;
        }
    }
    writeln!(w, "# EOF")
}

/// Series per target of [`write_irregular_openmetrics`].
pub const IRREGULAR_SERIES_PER_TARGET: usize = 24;

/// Writes OpenMetrics text (ending in `# EOF`) of a data set with irregular values, as recording rules
/// and instrumented Go services produce them: 5-minute rates (counter deltas / 300), cache hit
/// ratios, duration sums accumulating random float observations, GC pause quantiles (nanoseconds
/// as seconds), load averages with two decimals, CPU seconds (ticks / 100) and integer gauges.
/// About 60% of the samples have 15-17 significant digits. Values are written in their shortest
/// round-trip form, so the TSDB block holds exactly the generated doubles.
pub fn write_irregular_openmetrics(spec: &GenSpec, w: &mut impl Write) -> io::Result<()> {
    let mut rng = StdRng::seed_from_u64(spec.seed ^ 0x1e66_u64);
    let times = scrape_times(spec, &mut rng);
    let lbl = |t: usize| format!("job=\"{}\",instance=\"svc-{t:05}:8080\"", job_of(t));
    // (family, label name, label values); each (target, value) is one series.
    let families: [(&str, &str, &[&str]); 8] = [
        ("path:http_requests:rate5m", "path", &["/api", "/login", "/search", "/static", "/upload", "/health"]),
        ("cache_hit_ratio", "cache", &["sessions", "pages", "objects", "users"]),
        ("rpc_duration_seconds_sum", "method", &["Get", "Put", "List", "Delete"]),
        ("go_gc_duration_seconds", "quantile", &["0", "0.25", "0.5", "0.75"]),
        ("node_load", "window", &["1", "5"]),
        ("process_cpu_seconds_total", "mode", &["user", "system"]),
        ("go_goroutines", "", &[""]),
        ("process_open_fds", "", &[""]),
    ];
    for (f, (name, key, members)) in families.iter().enumerate() {
        writeln!(w, "# TYPE {name} unknown")?;
        for (t, tt) in times.iter().enumerate() {
            for (k, member) in members.iter().enumerate() {
                let extra = if key.is_empty() { String::new() } else { format!(",{key}=\"{member}\"") };
                let base = [400.0, 20.0, 90.0, 1500.0, 3.0, 60.0][k % 6];
                let mut state: f64 = match f {
                    4 => rng.random_range(0.0..4.0),
                    5 => rng.random_range(0..100_000) as f64,
                    6 => rng.random_range(10.0..500.0_f64).round(),
                    _ => 0.0,
                };
                for &tm in tt {
                    let v: f64 = match f {
                        0 => (base * 300.0 * rng.random_range(0.7..1.3_f64)).round() / 300.0,
                        1 => {
                            let hits = rng.random_range(500..5000) as f64;
                            hits / (hits + rng.random_range(1..900) as f64)
                        }
                        2 => {
                            for _ in 0..rng.random_range(0..30) {
                                state += rng.random_range(0.0..1.0_f64).powi(3) * 2.0;
                            }
                            state
                        }
                        3 => rng.random_range(8_000..900_000) as f64 * 1e-9,
                        4 => {
                            state = (state + rng.random_range(-0.3..0.3_f64)).max(0.0);
                            (state * 100.0).round() / 100.0
                        }
                        5 => {
                            state += rng.random_range(0..400) as f64;
                            state / 100.0
                        }
                        6 => {
                            state = (state + rng.random_range(-5.0..5.0_f64).round()).max(1.0);
                            state
                        }
                        _ => rng.random_range(20..200) as f64,
                    };
                    writeln!(w, "{name}{{{}{extra}}} {v} {}", lbl(t), om_ts(tm))?;
                }
            }
        }
    }
    writeln!(w, "# EOF")
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]
    use super::*;

    #[test]
    fn deterministic_and_counted() {
        let spec = GenSpec { targets: 2, duration_ms: 600_000, ..Default::default() };
        let mut a = Vec::new();
        let mut b = Vec::new();
        write_openmetrics(&spec, &mut a).unwrap();
        write_openmetrics(&spec, &mut b).unwrap();
        assert_eq!(a, b);
        let text = String::from_utf8(a).unwrap();
        let samples = text.lines().filter(|l| !l.starts_with('#')).count() as u64;
        assert_eq!(samples, total_samples(&spec));
        assert_eq!(samples, 2 * SERIES_PER_TARGET as u64 * 40);
        assert!(text.ends_with("# EOF\n"));
    }

    #[test]
    fn scrape_times_align_within_prometheus_tolerance() {
        let spec = GenSpec { targets: 50, duration_ms: 3_600_000, jitter_ms: 3, ..Default::default() };
        let times = scrape_times(&spec, &mut StdRng::seed_from_u64(7));
        let offsets: Vec<i64> = times.iter().flatten().map(|t| (t - spec.start_ms) % spec.interval_ms).collect();
        // Late by 0..=3 ms: 0..=2 snap to the grid, 3 keeps its time (about a quarter of the scrapes).
        assert!(offsets.iter().all(|&o| o == 0 || o == 3), "{offsets:?}");
        let late = offsets.iter().filter(|&&o| o == 3).count() as f64 / offsets.len() as f64;
        assert!((0.2..0.3).contains(&late), "{late}");
        // Intervals of 200 ms or less are not aligned (Prometheus's 100 x tolerance rule).
        let fast = GenSpec { targets: 5, duration_ms: 60_000, interval_ms: 200, jitter_ms: 2, ..Default::default() };
        let times = scrape_times(&fast, &mut StdRng::seed_from_u64(7));
        assert!(times.iter().flatten().any(|t| (t - fast.start_ms) % 200 != 0));
    }

    #[test]
    fn irregular_is_deterministic_and_counted() {
        let spec = GenSpec { targets: 2, duration_ms: 600_000, ..Default::default() };
        let mut a = Vec::new();
        let mut b = Vec::new();
        write_irregular_openmetrics(&spec, &mut a).unwrap();
        write_irregular_openmetrics(&spec, &mut b).unwrap();
        assert_eq!(a, b);
        let text = String::from_utf8(a).unwrap();
        let lines: Vec<&str> = text.lines().filter(|l| !l.starts_with('#')).collect();
        assert_eq!(lines.len(), 2 * IRREGULAR_SERIES_PER_TARGET * 40);
        // Every value parses back to a double whose shortest form is the text written.
        for l in &lines {
            let v = l.split_whitespace().nth(1).unwrap();
            assert_eq!(v.parse::<f64>().unwrap().to_string(), v);
        }
    }
}
